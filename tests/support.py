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

    def restart(self, local: dict[str, Any] | None = None) -> Server:
        """
        Stop (SIGTERM, as an operator would) and start again in the same
        install (same config dir, logs and var/history, same listen
        string: give a fixed port to keep it), with C{local} as the new
        local.json when given.
        """
        self.stop()
        if local is not None:
            local = {**local, "sse": {"drainSeconds": 0.2, **local.get("sse", {})}}
            write_config(os.path.join(self.dir, "conf"), {"local": local})
        return self.start()

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

        return self.broker.publish(Message(event, user_id, data))


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a server that must keep its port across a restart)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raw_request(
    port: int, data: bytes, timeout: float = 10.0, read_until_close: bool = True
) -> bytes:
    """Send raw bytes to 127.0.0.1:port; what comes back until the server closes (bounded)."""
    import socket

    chunks = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
            if not read_until_close:
                break
    return b"".join(chunks)
