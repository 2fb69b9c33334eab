"""
Shared helpers for the tests: an SSE frame parser, and a harness that runs
the real C{twistd -n notificator} on a loopback port for end-to-end tests.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from typing import Any

from twisted.application.service import MultiService
from twisted.internet import tcp
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.dirname(HERE)


def parse_frames(data: bytes) -> list[dict[str, Any]]:
    """
    Parse an event stream the way a browser does (WHATWG): fields per
    event, data lines joined with \\n.  Comments and retry-only blocks are
    returned too, as C{{"comment": ...}} / C{{"retry": ...}}.
    """
    events: list[dict[str, Any]] = []
    text = data.decode("utf-8")
    for block in re.split(r"\r\n\r\n|\n\n|\r\r", text):
        if not block:
            continue
        event: dict[str, Any] = {}
        data_lines: list[str] = []
        for line in re.split(r"\r\n|\r|\n", block):
            if line.startswith(":"):
                event.setdefault("comment", line[1:])
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                data_lines.append(value)
            else:
                event[name] = value
        if data_lines:
            event["data"] = "\n".join(data_lines)
        events.append(event)
    return events


def twistd_command() -> list[str]:
    """The twistd of the Python running the tests (the installed package)."""
    script = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.exists(script):
        return [sys.executable, script]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def write_config(directory: str, files: dict[str, Any]) -> str:
    """Write C{name -> JSON document} (or raw text) as DIR/<name>.json."""
    os.makedirs(directory, exist_ok=True)
    for name, doc in files.items():
        with open(os.path.join(directory, name + ".json"), "w", encoding="utf-8") as f:
            f.write(doc if isinstance(doc, str) else json.dumps(doc, ensure_ascii=False))
    return directory


#: C{tox -e stock} sets this: the end-to-end servers then serve with
#: twisted.web's stock channel (C{server.fastChannel} false).
STOCK_CHANNEL_VARIABLE = "NOTIFICATOR_TEST_CHANNEL"


def stock_channel() -> bool:
    """Whether this test run is on twisted.web's stock channel (C{tox -e stock})."""
    value = os.environ.get(STOCK_CHANNEL_VARIABLE, "fast").strip().lower()
    if value not in ("fast", "stock"):
        raise ValueError(f"{STOCK_CHANNEL_VARIABLE} must be fast or stock, not {value!r}")
    return value == "stock"


def base_config(**sse: Any) -> dict[str, Any]:
    """A test config: the shipped defaults plus these sse.* values."""
    return {"server": {"log": {"level": "debug"}}, "sse": sse}


class Server:
    """
    The real C{twistd -n notificator} in a subprocess, listening on a free
    loopback port it reports in its log ("Site starting on N").
    """

    def __init__(
        self,
        testcase: SynchronousTestCase,
        local: dict[str, Any] | None = None,
        args: Iterable[str] = (),
        listen: str | None = "tcp:0:interface=127.0.0.1",
        env: dict[str, str] | None = None,
        conf_files: dict[str, Any] | None = None,
        cwd: str | None = None,
    ) -> None:
        self.testcase = testcase
        self.dir = os.path.abspath(testcase.mktemp())
        os.makedirs(self.dir)
        conf = os.path.join(self.dir, "conf")
        files = conf_files if conf_files is not None else {}
        if conf_files is None:
            with open(os.path.join(PROJECT, "conf", "default.json"), encoding="utf-8") as f:
                files["default"] = f.read()
        if local is not None:
            files["local"] = local
        if isinstance(files.get("local"), dict):
            # Tests stop their servers often: a short drain unless one is asked for.
            files["local"] = {
                **files["local"],
                "sse": {"drainSeconds": 0.2, **files["local"].get("sse", {})},
            }
        if stock_channel() and not isinstance(files.get("local"), str):
            # tox -e stock: every server on twisted.web's own channel,
            # unless the test chose one.
            local = files.get("local") or {}
            server = local.get("server", {})
            files["local"] = {**local, "server": {"fastChannel": False, **server}}
        write_config(conf, files)
        self.log_path = os.path.join(self.dir, "twistd.log")
        command = twistd_command() + ["-n", "--pidfile=", "notificator", "--config", conf]
        command += ["--env", "test"]
        if listen:
            command += ["--listen", listen]
        command += list(args)
        self.command = command
        self._env = dict(os.environ, **(env or {}))
        self._cwd = cwd or self.dir
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self, timeout: float = 30.0) -> Server:
        with open(self.log_path, "wb") as out:
            self.process = subprocess.Popen(
                self.command, stdout=out, stderr=subprocess.STDOUT, cwd=self._cwd, env=self._env
            )
        self.testcase.addCleanup(self.stop)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(r"starting on (\d+)", self.log())
            if m:
                self.port = int(m.group(1))
                return self
            if self.process.poll() is not None:
                raise AssertionError(f"twistd exited {self.process.returncode}:\n{self.log()}")
            time.sleep(0.05)
        raise AssertionError(f"twistd did not listen within {timeout} s:\n{self.log()}")

    def run_to_exit(self, timeout: float = 30.0) -> tuple[int, str]:
        """Run a server that is expected to stop by itself (bad config)."""
        with open(self.log_path, "wb") as out:
            result = subprocess.run(
                self.command,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self._cwd,
                env=self._env,
                timeout=timeout,
            )
        return result.returncode, self.log()

    def log(self, name: str | None = None) -> str:
        """
        twistd's output, or with C{name} (C{"access.log"}, C{"sse.log"}) that
        file of the default log dir.
        """
        path = self.log_path if name is None else os.path.join(self.dir, "log", name)
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def wait_for_log(
        self, pattern: str, timeout: float = 10.0, name: str | None = None
    ) -> re.Match[str]:
        """Wait for C{pattern} in L{log}(C{name}); access.log is written once a second."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.log(name))
            if m:
                return m
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not in the log within {timeout} s:\n{self.log(name)}")

    def stop(self) -> None:
        p = self.process
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)

    # -- clients --------------------------------------------------------

    def connection(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        conn = self.connection()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        finally:
            conn.close()

    def post(self, body: bytes | str, content_type: str) -> tuple[int, dict[str, Any]]:
        status, _, raw = self.request(
            "POST", "/webNotification", body, {"Content-Type": content_type}
        )
        return status, json.loads(raw)

    def subscribe(self, path: str, headers: dict[str, str] | None = None) -> SSEClient:
        client = SSEClient(self.connection(), path, headers or {})
        self.testcase.addCleanup(client.close)
        return client


class SSEClient:
    """A blocking EventSource-like reader with bounded waits."""

    def __init__(self, conn: http.client.HTTPConnection, path: str, headers: dict[str, str]):
        self.conn = conn
        conn.request("GET", path, headers={"Accept": "text/event-stream", **headers})
        self.response = conn.getresponse()
        self.status = self.response.status
        self.headers = self.response.headers

    def next_event(self, skip: Iterable[str] = ("heartbeat",)) -> dict[str, Any]:
        """
        The next event (not a comment or retry-only block), skipping the
        named event types.  Raises C{TimeoutError} (socket timeout) when
        nothing arrives in time.
        """
        skipped = set(skip)
        while True:
            block = self.next_block()
            events = parse_frames(block)
            for ev in events:
                if "event" in ev or "data" in ev:
                    if ev.get("event", "message") not in skipped:
                        return ev

    def next_block(self) -> bytes:
        """Raw bytes of the next frame, up to and including its blank line."""
        lines = []
        while True:
            line = self.response.readline()
            if not line:
                raise ConnectionError("stream ended")
            lines.append(line)
            if line in (b"\n", b"\r\n"):
                return b"".join(lines)

    def close(self) -> None:
        try:
            self.conn.sock and self.conn.sock.close()
        finally:
            self.conn.close()


class Parts:
    """
    The server's core objects as C{makeService} wires them, without
    services or sockets: counters, hub, a local broker (history in memory
    only) and the resource tree.
    """

    def __init__(self, clock: Any, config: Any = None, **resource_kwargs: Any) -> None:
        import attrs

        from notificator.broker import LocalBroker
        from notificator.config import Config
        from notificator.hub import Hub
        from notificator.stats import Stats
        from notificator.web import build_resource

        self.config = config if config is not None else Config()
        self.stats = Stats(started_at=clock.seconds())
        self.hub = Hub(clock=clock, stats=self.stats)
        history = attrs.evolve(self.config.sse.history, directory=None)
        self.broker = LocalBroker(self.hub, self.stats, clock, history)
        self.resource = build_resource(
            self.hub, self.broker, self.stats, self.config, clock, **resource_kwargs
        )

    def publish(self, user_id: str, data: str = "{}", event: str = "notify") -> Any:
        """Publish through the broker; the L{Published} outcome."""
        from notificator.events import Message

        results: list[Any] = []
        self.broker.publish(Message(event, user_id, data)).addCallback(results.append)
        return results[0]


class FakeSocket:
    """
    Enough of a socket for C{tcp.Server}: records sent bytes; C{limit}
    caps how much one C{send} takes, C{error} makes C{send} raise.
    """

    def __init__(self) -> None:
        self.sent = bytearray()
        self.sends = 0
        self.limit: int | None = None
        self.error: int | None = None
        self.options: list[tuple[object, ...]] = []
        self.names = 0

    def setblocking(self, flag: bool) -> None:
        pass

    def fileno(self) -> int:
        return 99

    def setsockopt(self, *args: object) -> None:
        self.options.append(args)

    def getsockname(self) -> tuple[str, int]:
        self.names += 1
        return ("127.0.0.1", 3000)

    def close(self) -> None:
        pass

    def shutdown(self, how: int) -> None:
        pass

    def send(self, data: bytes) -> int:
        self.sends += 1
        if self.error is not None:
            raise OSError(self.error, "fake")
        data = bytes(data)
        if self.limit is not None:
            data = data[: self.limit]
        self.sent += data
        return len(data)


def dechunk(body: bytes) -> bytes:
    """Decode a complete or partial chunked body (strict framing)."""
    out = bytearray()
    while body:
        size_line, sep, rest = body.partition(b"\r\n")
        assert sep, body
        size = int(size_line, 16)
        if size == 0:
            break
        assert rest[size : size + 2] == b"\r\n", rest[: size + 2]
        out += rest[:size]
        body = rest[size + 2 :]
    return bytes(out)


class Conn:
    """
    One connection to an L{InMemoryServer}: a L{FakeSocket} under a real
    C{tcp.Server}, with the reactor's part (reads, write passes, the close)
    done by hand.
    """

    def __init__(self, server: InMemoryServer, number: int) -> None:
        self.server = server
        self.sock = FakeSocket()
        self.protocol = server.site.buildProtocol(None)
        self.transport = tcp.Server(
            self.sock,
            self.protocol,
            ("127.0.0.1", 40000 + number),
            None,
            number,
            server.reactor,  # type: ignore[arg-type]
        )
        self.transport.repstr = "<fake>"
        self.protocol.makeConnection(self.transport)
        self.lost: Failure | None = None

    def receive(self, data: bytes) -> None:
        """One reactor pass that reads C{data}, with what the reactor then does."""
        if self.transport.connected and not self.transport.disconnecting:
            self.protocol.dataReceived(data)
        self.server.reactor.advance(0)
        self.pump()

    def pump(self) -> None:
        """The reactor's write passes: send what the socket takes; close when done."""
        t = self.transport
        while t.connected and (t.dataBuffer or t._tempDataLen or t.disconnecting):
            before = len(self.sock.sent)
            result = t.doWrite()
            if result is not None:
                self.close(Failure(result) if isinstance(result, Exception) else None)
                return
            if len(self.sock.sent) == before:
                return

    def close(self, reason: Failure | None = None) -> None:
        """The reactor's side of a closed connection."""
        if self.transport.connected:
            self.lost = reason or Failure(ConnectionDone())
            self.transport.connectionLost(self.lost)

    @property
    def closing(self) -> bool:
        t = self.transport
        return bool(t.disconnecting or t._aborting or not t.connected)

    def text(self) -> bytes:
        return bytes(self.sock.sent)


class InMemoryServer:
    """
    The site as C{makeService} wires it (C{tap.serve_http}: request class,
    channel, head clock), over the core L{Parts}, on a
    L{MemoryReactorClock}, with C{limits.*} from C{limit}.

    @param fast: C{server.fastChannel}.
    """

    def __init__(self, testcase: SynchronousTestCase, fast: bool, **limit: Any) -> None:
        from twisted.web.server import Site

        from notificator import tap
        from notificator.config import Config, LimitsConfig, ServerConfig

        self.reactor = MemoryReactorClock()
        self.reactor.advance(1_700_000_000)
        self.config = Config(server=ServerConfig(fast_channel=fast), limits=LimitsConfig(**limit))
        self.parts = Parts(self.reactor, self.config)
        self.hub = self.parts.hub
        self.stats = self.parts.stats
        self.site = Site(self.parts.resource, reactor=self.reactor)
        self.events: list[dict[str, Any]] = []
        self.services = MultiService()
        tap.serve_http(
            self.site,
            self.config,
            self.reactor,
            self.stats,
            Logger(observer=self.events.append),
            self.services,
        )
        self.services.startService()
        testcase.addCleanup(self.services.stopService)
        self.conns: list[Conn] = []
        testcase.addCleanup(self.close_all)

    def connect(self) -> Conn:
        conn = Conn(self, len(self.conns))
        self.conns.append(conn)
        return conn

    def pump(self) -> None:
        """The reactor's write passes on every connection."""
        for conn in self.conns:
            conn.pump()

    def close_all(self) -> None:
        for conn in self.conns:
            conn.close()
        self.reactor.advance(0)

    def logged(self, text: str) -> list[dict[str, Any]]:
        return [e for e in self.events if text in e.get("log_format", "")]


class BothChannels:
    """
    A test case mixin: C{server()} builds an L{InMemoryServer} with the
    fast channel; subclass with C{fast = False} to run the same tests on
    twisted.web's stock channel.
    """

    fast = True

    def server(self, **limit: Any) -> InMemoryServer:
        return InMemoryServer(self, self.fast, **limit)  # type: ignore[arg-type]


def split_response(raw: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """Status line, lower-cased headers and the rest of one HTTP/1.1 response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {k.lower(): v for k, _, v in (line.partition(b": ") for line in lines)}
    return status, headers, body
