"""
Shared helpers for the tests: an SSE frame parser, and a harness that runs
the real C{twistd -n notificator} on a loopback port for end-to-end tests.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

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


def wait_until(
    check: Callable[[], Any],
    timeout: float = 10.0,
    what: str | Callable[[], str] = "the condition",
    interval: float = 0.05,
) -> Any:
    """
    Call C{check} every C{interval} seconds until it returns something
    true, and return that; after C{timeout} seconds fail naming C{what}
    (a callable is asked then: for a log as it is at that moment).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout} s: {what() if callable(what) else what}")
        time.sleep(interval)


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


class Client:
    """
    Real HTTP clients of the server on C{127.0.0.1:port}, each with bounded
    waits: requests, publishes and event streams (closed in the test's
    cleanup).
    """

    def __init__(self, testcase: SynchronousTestCase, port: int = 0) -> None:
        self.testcase = testcase
        self.port = port

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
        """A publish; its status and JSON answer."""
        status, _, raw = self.request(
            "POST", "/webNotification", body, {"Content-Type": content_type}
        )
        return status, json.loads(raw)

    def subscribe(self, path: str, headers: dict[str, str] | None = None) -> SSEClient:
        client = SSEClient(self.connection(), path, headers or {})
        self.testcase.addCleanup(client.close)
        return client


class Server(Client):
    """
    The real C{twistd -n notificator} in a subprocess, listening on a free
    loopback port it reports in its log ("Site starting on N"), and its
    clients (L{Client}).
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
        short_dir: bool = False,
    ) -> None:
        super().__init__(testcase)
        if short_dir:
            # A Unix socket's path under it (var/redis/redis.sock of
            # server.workers) must hold in 107 bytes: not under trial's.
            self.dir = tempfile.mkdtemp(prefix="ntf-")
            testcase.addCleanup(shutil.rmtree, self.dir, True)
        else:
            self.dir = os.path.abspath(testcase.mktemp())
            os.makedirs(self.dir)
        conf = os.path.join(self.dir, "conf")
        files = conf_files if conf_files is not None else {}
        if conf_files is None:
            with open(os.path.join(PROJECT, "conf", "default.json"), encoding="utf-8") as f:
                files["default"] = f.read()
        # The environment the server runs (--env test) must have its file.
        files.setdefault("test", "// tests.support.Server: the environment --env test\n{}\n")
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

    def start(self, timeout: float = 30.0) -> Server:
        return self.launch().wait_listening(timeout)

    def launch(self, session: bool = False) -> Server:
        """
        Start the process without waiting (several servers start side by
        side); with C{session}, as a shell starts a job: in a process group
        of its own, which a terminal's Ctrl-C signals as a whole.
        """
        with open(self.log_path, "wb") as out:
            self.process = subprocess.Popen(
                self.command,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self._cwd,
                env=self._env,
                start_new_session=session,
            )
        self.testcase.addCleanup(self.stop)
        return self

    def wait_listening(self, timeout: float = 30.0) -> Server:
        """Wait until the launched server listens; note its port."""
        process = self.process
        assert process is not None

        def listening() -> re.Match[str] | None:
            m = re.search(r"starting on (\d+)", self.log())
            if m is None and process.poll() is not None:
                raise AssertionError(f"twistd exited {process.returncode}:\n{self.log()}")
            return m

        m = wait_until(listening, timeout, lambda: f"twistd listening:\n{self.log()}")
        self.port = int(m.group(1))
        return self

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
        """
        Wait for C{pattern} in L{log}(C{name}); access.log is written once
        a second.  Fails at once if the server exits first.
        """

        def found() -> re.Match[str] | None:
            m = re.search(pattern, self.log(name))
            p = self.process
            if m is None and p is not None and p.poll() is not None:
                raise AssertionError(f"twistd exited {p.returncode}:\n{self.log()}")
            return m

        return wait_until(found, timeout, lambda: f"{pattern!r} in the log:\n{self.log(name)}")

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


class SSEClient:
    """
    A blocking EventSource-like reader with bounded waits.

    @ivar last_event_id: the last C{id:} it read, on any event (as
        EventSource keeps it: the C{Last-Event-ID} its reconnect sends,
        L{resume_headers}); L{None} before any.
    """

    def __init__(self, conn: http.client.HTTPConnection, path: str, headers: dict[str, str]):
        self.conn = conn
        self.last_event_id: str | None = None
        conn.request("GET", path, headers={"Accept": "text/event-stream", **headers})
        self.response = conn.getresponse()
        self.status = self.response.status
        self.headers = self.response.headers

    def next_event(
        self, skip: Iterable[str] = ("heartbeat",), timeout: float = 30.0
    ) -> dict[str, Any]:
        """
        The next event (not a comment or retry-only block), skipping the
        named event types.  Raises C{TimeoutError} (socket timeout) when
        nothing arrives in time, and fails when only skipped events came
        for C{timeout} seconds.
        """
        skipped = set(skip)
        deadline = time.monotonic() + timeout
        while True:
            block = self.next_block()
            events = parse_frames(block)
            for ev in events:
                if "id" in ev:
                    self.last_event_id = ev["id"]
                if "event" in ev or "data" in ev:
                    if ev.get("event", "message") not in skipped:
                        return ev
            if time.monotonic() > deadline:
                raise AssertionError(f"no event but {sorted(skipped)} within {timeout} s")

    def events(self, count: int, skip: Iterable[str] = ("heartbeat",)) -> list[dict[str, Any]]:
        """The next C{count} events not in C{skip} (L{next_event})."""
        return [self.next_event(skip) for _ in range(count)]

    def nothing_more(self, seconds: float, allowed: Iterable[str] = ("heartbeat",)) -> None:
        """For C{seconds}, only events in C{allowed} (and comments) arrive."""
        sock = self.conn.sock
        assert sock is not None
        before = sock.gettimeout()
        sock.settimeout(seconds)
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                event = self.next_event(skip=(), timeout=seconds)
                if event.get("event", "message") not in set(allowed):
                    raise AssertionError(f"unexpected event {event}")
        except TimeoutError:
            pass
        finally:
            sock.settimeout(before)

    def resume_headers(self) -> dict[str, str]:
        """What an EventSource sends when it reconnects: its L{last_event_id}, if any."""
        return {} if self.last_event_id is None else {"Last-Event-ID": self.last_event_id}

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


class FakeStream:
    """
    A stream as the hub sees it (L{notificator.hub.Stream}) that records
    the frames sent to it.  C{gone}: it takes none (C{send} is C{False}),
    as after its client left or it was closed; C{fail}: C{send} raises.
    """

    def __init__(
        self,
        user_id: str,
        gone: bool = False,
        fail: bool = False,
        connection_id: int = 1,
        connected_at: float = 0.0,
        peer: str = "127.0.0.1",
    ) -> None:
        self.user_id = user_id
        self.connection_id = connection_id
        self.connected_at = connected_at
        self.peer = peer
        self.frames: list[bytes] = []
        self.gone = gone
        self.fail = fail
        self.closed = False

    def send(self, frame: bytes) -> bool:
        if self.fail:
            raise RuntimeError("broken stream")
        if self.gone:
            return False
        self.frames.append(frame)
        return True

    def close(self) -> None:
        self.closed = self.gone = True


def config_with(**sections: Any) -> Any:
    """
    The shipped defaults (L{notificator.config.defaults}) with fields
    replaced, by section, nested where a field is itself a section:
    C{config_with(limits={"body_bytes": 1000}, sse={"history": {"size": 2}})}.
    """
    from notificator.config import defaults

    return evolved(defaults(), sections)


def evolved(value: Any, changes: dict[str, Any]) -> Any:
    """C{attrs.evolve} of C{value}, into nested attrs values for dict changes."""
    import attrs

    fields = {}
    for name, change in changes.items():
        current = getattr(value, name)
        if isinstance(change, dict) and attrs.has(type(current)):
            change = evolved(current, change)
        fields[name] = change
    return attrs.evolve(value, **fields)


class FailingDisk:
    """
    The disk under L{notificator.history.journal}'s files, failing on demand
    as a full or broken one does: while C{failing} holds C{"append"} (writes
    to the journal itself) or C{"snapshot"} (writes to its C{.tmp}
    snapshot), each such write puts the first half of its bytes in the file
    and then raises C{OSError(errno)}, leaving the record cut short; with
    C{"truncate"}, cutting a file back fails too.  Reading is untouched.  It
    replaces the C{open} that module's code calls (for the test only), so
    the real L{notificator.history.journal.HistoryFile} runs over real
    files.

    @ivar attempts: how many appends and snapshots were tried, failed or not.
    """

    def __init__(self, testcase: SynchronousTestCase, errno: int = 28) -> None:
        from notificator.history import journal

        self.failing: set[str] = set()
        self.errno = errno
        self.attempts = {"append": 0, "snapshot": 0}
        # A module-level name comes before the builtin for the module's code.
        journal.open = self._open  # type: ignore[attr-defined]
        testcase.addCleanup(delattr, journal, "open")

    def _open(self, path: str, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        import builtins

        f = builtins.open(path, mode, *args, **kwargs)
        if set(mode) <= {"r", "b", "t"}:
            return f
        kind = "snapshot" if path.endswith(".tmp") else "append"
        if kind == "snapshot":
            self.attempts[kind] += 1
        return _FailingFile(self, kind, f)

    def error(self) -> OSError:
        return OSError(self.errno, os.strerror(self.errno))


class _FailingFile:
    """A file written through L{FailingDisk} (the rest is the real file's)."""

    def __init__(self, disk: FailingDisk, kind: str, f: Any) -> None:
        self._disk = disk
        self._kind = kind
        self._f = f

    def write(self, data: bytes) -> int:
        disk = self._disk
        if self._kind == "append":
            disk.attempts["append"] += 1
        if self._kind in disk.failing:
            half = bytes(data[: len(data) // 2])
            if half:
                self._f.write(half)
                self._f.flush()
            raise disk.error()
        written: int = self._f.write(data)
        return written

    def truncate(self, size: int | None = None) -> int:
        if "truncate" in self._disk.failing:
            raise self._disk.error()
        done: int = self._f.truncate(size)
        return done

    def __enter__(self) -> _FailingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


class Parts:
    """
    The server's core and site as C{makeService} builds them
    (L{notificator.app.build_core}, L{notificator.app.build_site}), with
    the history in memory only, and nothing started: counters, hub, broker
    and the resource tree, whose site's services (the write batch, the
    connections' watcher) are in L{services}.

    @param activity: where the per-request lines go (the site's); by
        default twisted's global log publisher, as C{notificator.web}.
    """

    def __init__(self, clock: Any, config: Any = None, activity: Any = None) -> None:
        import attrs

        from notificator.app import build_core, build_site
        from notificator.config import defaults

        self.config = config if config is not None else defaults()
        sse = self.config.sse
        in_memory = attrs.evolve(
            self.config,
            sse=attrs.evolve(sse, history=attrs.evolve(sse.history, directory=None)),
        )
        self.core = build_core(in_memory, clock)
        self.stats = self.core.stats
        self.hub = self.core.hub
        self.broker = self.core.broker
        self.services = MultiService()
        extra = {"activity": activity} if activity is not None else {}
        self.site = build_site(self.core, self.config, clock, parent=self.services, **extra)
        self.resource = self.site.resource

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


def taken_port(testcase: SynchronousTestCase) -> int:
    """A port on 127.0.0.1 another socket listens on until the test's cleanup."""
    import socket

    taken = socket.socket()
    testcase.addCleanup(taken.close)
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    return int(taken.getsockname()[1])


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


# -- real tools -------------------------------------------------------------------


def not_here(reason: str) -> NoReturn:
    """
    A real tool a test needs is missing: fail in CI (C{CI} set: C{.ci/run}
    installs every Debian package the tests use), skip loudly elsewhere.
    """
    from twisted.trial.unittest import SkipTest

    if os.environ.get("CI"):
        raise AssertionError(f"CI: {reason}")
    raise SkipTest(reason)


def require_tool(tool: str, package: str, untested: str) -> str:
    """
    The path of the program C{tool} (on C{PATH}, or in /usr/sbin or
    /usr/bin), else L{not_here}: "C{untested}: ... (apt-get install
    C{package})".
    """
    import shutil

    path = shutil.which(tool) or next(
        (p for p in (f"/usr/sbin/{tool}", f"/usr/bin/{tool}") if os.access(p, os.X_OK)), None
    )
    if path is None:
        not_here(f"{untested}: {tool} is missing (apt-get install {package})")
    return path


# -- users ---------------------------------------------------------------------

_users = iter(range(1, 1_000_000))


def make_user(testcase: SynchronousTestCase, untested: str) -> str:
    """
    A system user (and its group) of its own for this test, removed in
    its cleanup, as the operations guide's C{useradd} makes one.  Needs root and
    C{useradd} (else L{not_here}: "C{untested}: ...").
    """
    if os.geteuid() != 0:
        not_here(f"{untested}: it makes a system user (run as root)")
    useradd = require_tool("useradd", "passwd", untested)
    userdel = require_tool("userdel", "passwd", untested)
    name = f"ntf-{os.getpid()}-{next(_users)}"
    subprocess.run(
        [
            useradd,
            "--system",
            "--user-group",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )

    def remove() -> None:
        # userdel says 8 while a process of the user (a daemon being
        # killed) is still there.
        wait_until(
            lambda: (
                subprocess.run([userdel, name], capture_output=True, timeout=60).returncode != 8
            ),
            what=f"userdel {name}",
        )

    testcase.addCleanup(remove)
    return name


def as_user(user: str, argv: list[str], untested: str) -> list[str]:
    """
    C{argv} run as C{user} (its user and group, no other group), with no
    capability but C{CAP_DAC_READ_SEARCH}: only so that it can read this
    test run's Python wherever it is installed (under root's home, say);
    it lets the user read and search any file, not write one.

    Such a process runs outside coverage (L{UNMEASURED}): it could not
    write its data where the test run's is kept.
    """
    return [
        require_tool("setpriv", "util-linux", untested),
        f"--reuid={user}",
        f"--regid={user}",
        "--clear-groups",
        "--inh-caps=-all,+dac_read_search",
        "--ambient-caps=-all,+dac_read_search",
        "--bounding-set=-all,+dac_read_search",
        "--no-new-privs",
        "--",
        *UNMEASURED,
        *argv,
    ]


#: The start of a command line that runs what follows without coverage's
#: measurement of subprocesses (C{patch = subprocess} in .coveragerc): for a
#: process that runs as another user, who cannot write the run's data files.
UNMEASURED = ("env", "-u", "COVERAGE_PROCESS_CONFIG", "-u", "COVERAGE_PROCESS_START")


def owner(path: str) -> int:
    """The uid owning C{path} (not following a link)."""
    return os.lstat(path).st_uid


# -- cluster mode ---------------------------------------------------------------


def redis_server_path() -> str:
    """The C{redis-server} to run (L{require_tool})."""
    return require_tool("redis-server", "redis-server", "SKIPPED, cluster mode not tested")


class RedisServer:
    """
    A C{redis-server} of the test's own on a free loopback port, without
    persistence, in the test's temporary directory; killed in cleanup.
    L{stop} and L{start} again keep the port (a restart that lost its data).

    @param password: asked of clients (C{--requirepass}).
    @param tls: C{(cert, key, ca)} files: TLS only, on the port.
    @param unix: on a Unix socket in its directory only (no TCP port);
        L{url} is then C{unix:///.../redis.sock?db=<db>}.
    @param db: the database of L{url}.
    """

    def __init__(
        self,
        testcase: SynchronousTestCase,
        port: int | None = None,
        password: str | None = None,
        tls: tuple[str, str, str] | None = None,
        unix: bool = False,
        db: int = 0,
    ) -> None:
        self.testcase = testcase
        self.path = redis_server_path()
        # (A short directory: a socket's path holds at most 107 bytes.)
        self.dir = tempfile.mkdtemp(prefix="redis-") if unix else os.path.abspath(testcase.mktemp())
        if unix:
            testcase.addCleanup(shutil.rmtree, self.dir, True)
        os.makedirs(self.dir, exist_ok=True)
        self.port = 0 if unix else (port or free_port())
        self.socket = os.path.join(self.dir, "redis.sock") if unix else None
        self.db = db
        self.password = password
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None
        testcase.addCleanup(self.stop)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.socket is not None:
            return f"unix://{auth}{self.socket}?db={self.db}"
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{auth}127.0.0.1:{self.port}/{self.db}"

    def start(self, timeout: float = 10.0) -> RedisServer:
        command = [self.path, "--bind", "127.0.0.1"]
        if self.tls:
            cert, key, ca = self.tls
            command += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", cert]
            command += ["--tls-key-file", key, "--tls-ca-cert-file", ca]
            command += ["--tls-auth-clients", "no"]
        elif self.socket is not None:
            command += ["--port", "0", "--unixsocket", self.socket, "--unixsocketperm", "700"]
        else:
            command += ["--port", str(self.port)]
        if self.password:
            command += ["--requirepass", self.password]
        command += ["--save", "", "--appendonly", "no", "--dir", self.dir]
        log = open(os.path.join(self.dir, "redis.log"), "ab")
        process = self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()

        def answers() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"redis-server exited {process.returncode}")
            try:
                return bool(self.command("PING") == "PONG")
            except OSError:
                return False

        wait_until(answers, timeout, "redis-server answering", interval=0.02)
        return self

    def stop(self) -> None:
        """Kill it (SIGKILL: as a crash; nothing is saved)."""
        p = self.process
        if p is None or p.poll() is not None:
            return
        p.kill()
        p.wait(10)

    def command(self, *args: str | bytes, timeout: float = 5.0) -> Any:
        """Send one command (RESP over a socket of its own) and return the reply."""
        import socket

        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg.encode("utf-8") if isinstance(arg, str) else arg
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        if self.password:
            parts.insert(0, _resp("AUTH", self.password))
        if self.socket is not None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.connect(self.socket)
        else:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        with s:
            if self.tls:
                import ssl

                s = ssl.create_default_context(cafile=self.tls[2]).wrap_socket(
                    s, server_hostname="127.0.0.1"
                )
            s.sendall(b"".join(parts))
            reader = _RESPReader(s.makefile("rb"))
            if self.password:
                reader.read()
            return reader.read()


def _resp(*args: str) -> bytes:
    data = [a.encode("utf-8") for a in args]
    return b"*%d\r\n" % len(data) + b"".join(b"$%d\r\n%s\r\n" % (len(d), d) for d in data)


class _RESPReader:
    """Reads one RESP2 reply: str for simple strings, bytes for bulk strings."""

    def __init__(self, f: Any) -> None:
        self.f = f

    def read(self) -> Any:
        line = self.f.readline()
        if not line:
            raise ConnectionError("redis-server closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisReplyError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise ValueError(f"not a RESP reply: {line!r}")


class RedisReplyError(Exception):
    """An error reply from redis-server."""


def cluster_config(redis_url: str, node: str, **cluster: Any) -> dict[str, Any]:
    """A test config of one node of a cluster: fast heartbeats and reconnects."""
    local = base_config(heartbeat=True, heartbeatInterval=0.5, keepalive=0)
    local["cluster"] = {
        "redis": redis_url,
        "node": node,
        "timeout": 1,
        "reconnectMaxDelay": 0.3,
        **cluster,
    }
    return local


class TCPProxy:
    """
    A TCP forwarder on a free loopback port to C{127.0.0.1:target}, run by
    a thread of its own, that a test can L{cut} (its connections closed and
    new ones refused: the network between one node and Redis is down) and
    L{restore} (on the same port).
    """

    def __init__(self, testcase: SynchronousTestCase, target: int) -> None:
        import threading

        self.target = target
        self.port = free_port()
        self._pairs: dict[Any, Any] = {}
        self._listener: Any = None
        self._asked: str | None = None
        self._done = threading.Event()
        self._stopped = False
        self._listen()
        self._thread = threading.Thread(target=self._run, name="test-proxy", daemon=True)
        self._thread.start()
        testcase.addCleanup(self.close)

    def _listen(self) -> None:
        import socket

        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(16)
        self._listener = s

    def _drop_all(self) -> None:
        for sock in list(self._pairs):
            sock.close()
        self._pairs.clear()

    def _run(self) -> None:
        import select
        import socket

        while not self._stopped:
            asked, self._asked = self._asked, None
            if asked == "cut":
                self._listener.close()
                self._listener = None
                self._drop_all()
            elif asked == "restore":
                self._listen()
            if asked:
                self._done.set()
            socks = list(self._pairs) + ([self._listener] if self._listener else [])
            try:
                readable, _, _ = select.select(socks, [], [], 0.02)
            except (OSError, ValueError):
                continue
            for sock in readable:
                if sock is self._listener:
                    client, _ = sock.accept()
                    try:
                        upstream = socket.create_connection(("127.0.0.1", self.target), timeout=2)
                    except OSError:
                        client.close()
                        continue
                    self._pairs[client] = upstream
                    self._pairs[upstream] = client
                    continue
                peer = self._pairs.get(sock)
                if peer is None:
                    continue
                try:
                    data = sock.recv(65536)
                    if data:
                        peer.sendall(data)
                        continue
                except OSError:
                    pass
                for s in (sock, peer):
                    self._pairs.pop(s, None)
                    s.close()
        self._drop_all()
        if self._listener is not None:
            self._listener.close()

    def _ask(self, what: str) -> None:
        self._done.clear()
        self._asked = what
        if not self._done.wait(5):
            raise AssertionError(f"the test proxy did not {what} in time")

    def cut(self) -> None:
        """Close every connection and refuse new ones."""
        self._ask("cut")

    def restore(self) -> None:
        """Accept connections again, on the same port."""
        self._ask("restore")

    def close(self) -> None:
        self._stopped = True
        self._thread.join(5)


class FakeSocket:
    """
    Enough of a socket for C{tcp.Server} and for L{notificator.listening}'s
    probes.  It records sent bytes (C{limit} caps how much one C{send}
    takes, C{error} makes C{send} raise), options set, the address bound
    (C{bind_error} makes C{bind} raise) and its close; C{IPV6_V6ONLY}
    reads C{v6only}.
    """

    def __init__(self, v6only: int = 0, bind_error: OSError | None = None) -> None:
        self.sent = bytearray()
        self.sends = 0
        self.limit: int | None = None
        self.error: int | None = None
        self.options: list[tuple[object, ...]] = []
        self.names = 0
        self.v6only = v6only
        self.bind_error = bind_error
        self.bound: Any = None
        self.closed = False

    def setblocking(self, flag: bool) -> None:
        pass

    def fileno(self) -> int:
        return 99

    def setsockopt(self, *args: object) -> None:
        self.options.append(args)

    def getsockopt(self, level: int, name: int) -> int:
        import socket

        assert (level, name) == (socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
        return self.v6only

    def getsockname(self) -> tuple[str, int]:
        self.names += 1
        return ("127.0.0.1", 3000)

    def bind(self, address: Any) -> None:
        if self.bind_error is not None:
            raise self.bind_error
        self.bound = address

    def close(self) -> None:
        self.closed = True

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


class NegotiatedH2(tcp.Server):
    """
    A C{tcp.Server} that says ALPN chose HTTP/2, as a TLS transport says
    it: the stand-in for one in the in-memory tests.  (A plain
    C{tcp.Server} never negotiates, and the fast channel's connections
    skip twisted.web's HTTP/2 switch on one.)
    """

    negotiatedProtocol = b"h2"


class Conn:
    """
    One connection to an L{InMemoryServer}: a L{FakeSocket} under a real
    C{tcp.Server}, with the reactor's part (reads, write passes, the close)
    done by hand.

    @param h2: the connection negotiated HTTP/2 (L{NegotiatedH2}).
    """

    def __init__(
        self, server: InMemoryServer | FastChannelSite, number: int, h2: bool = False
    ) -> None:
        self.server = server
        self.sock = FakeSocket()
        self.protocol = server.site.buildProtocol(None)
        self.transport = (NegotiatedH2 if h2 else tcp.Server)(
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
        while t.connected and (
            t.dataBuffer
            or t._tempDataLen
            or t.disconnecting
            or (t._writeDisconnecting and not t._writeDisconnected)
        ):
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

    @property
    def half_closed(self) -> bool:
        """The server shut its side (a FIN after what it sent) and still reads."""
        t = self.transport
        return bool(t.connected and t._writeDisconnected and not t.disconnecting)

    def text(self) -> bytes:
        return bytes(self.sock.sent)


class InMemoryServer:
    """
    The site as C{makeService} builds it (L{notificator.app.build_site}:
    request class, channel, head clock, the guard and the publish gate
    asked before a request's body is read), over its core (L{Parts}), on a
    L{MemoryReactorClock}, with C{limits.*} from C{limit}; its per-request
    lines in L{events}.

    @param fast: C{server.fastChannel}.
    @param config: the configuration's other sections
        (L{config_with}: C{{"publish": {"token": "..."}}}).
    """

    def __init__(
        self,
        testcase: SynchronousTestCase,
        fast: bool,
        config: dict[str, Any] | None = None,
        **limit: Any,
    ) -> None:
        self.reactor = MemoryReactorClock()
        self.reactor.advance(1_700_000_000)
        sections = dict(config or {})
        sections["server"] = {"fast_channel": fast, **sections.get("server", {})}
        self.config = config_with(limits=limit, **sections)
        self.events: list[dict[str, Any]] = []
        activity = Logger("notificator.web", observer=self.events.append)
        self.parts = Parts(self.reactor, self.config, activity=activity)
        self.hub = self.parts.hub
        self.stats = self.parts.stats
        self.site = self.parts.site
        self.services = self.parts.services
        self.services.startService()
        testcase.addCleanup(self.services.stopService)
        self.conns: list[Conn] = []
        testcase.addCleanup(self.close_all)

    def connect(self, h2: bool = False) -> Conn:
        """A new connection (C{h2}: one that negotiated HTTP/2)."""
        conn = Conn(self, len(self.conns), h2)
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


class MemoryH2:
    """
    An HTTP/2 client (the C{h2} package) on a new connection to an
    L{InMemoryServer} that negotiated C{h2} (as ALPN does over TLS), with
    what it received by stream: C{headers}, C{informational} (the status of
    each 1xx), C{data}, C{ended}, C{reset}.
    twisted.web's HTTP/2 channel takes the global reactor for its send
    loop: the server's memory reactor is patched in for the test.
    """

    def __init__(self, testcase: SynchronousTestCase, server: InMemoryServer) -> None:
        import h2.config
        import h2.connection
        import twisted.internet

        testcase.patch(twisted.internet, "reactor", server.reactor)
        self.server = server
        self.conn = server.connect(h2=True)
        self.client = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.client.initiate_connection()
        self.headers: dict[int, dict[str, str]] = {}
        self.informational: dict[int, list[str]] = {}  # "100": a 100 Continue
        self.data: dict[int, bytes] = {}
        self.ended: set[int] = set()
        self.reset: set[int] = set()
        self._read = 0
        self.send()

    def open(
        self, method: str, path: str, headers: list[tuple[str, str]], end: bool = False
    ) -> int:
        """Send a HEADERS frame (these headers, in this order, after the pseudo-headers); its stream."""
        sid = int(self.client.get_next_available_stream_id())
        pseudo = [(":method", method), (":scheme", "https"), (":authority", "t"), (":path", path)]
        self.client.send_headers(sid, pseudo + headers, end_stream=end)
        self.data[sid] = b""
        self.send()
        return sid

    def body(self, sid: int, data: bytes, end: bool = False) -> None:
        """Send C{data} on stream C{sid} (within the flow-control window)."""
        self.client.send_data(sid, data, end_stream=end)
        self.send()

    def cancel(self, sid: int) -> None:
        """Reset stream C{sid}."""
        self.client.reset_stream(sid)
        self.send()

    def send(self) -> None:
        """What the client has to send reaches the server; then the server's passes, and its answer is read."""
        import h2.events

        self.conn.receive(self.client.data_to_send())
        for _ in range(3):
            self.server.reactor.advance(0)
            self.conn.pump()
        sent = self.conn.text()
        events = self.client.receive_data(sent[self._read :])
        self._read = len(sent)
        for event in events:
            if isinstance(event, h2.events.ResponseReceived):
                self.headers[event.stream_id] = dict(event.headers)
            elif isinstance(event, h2.events.InformationalResponseReceived):
                self.informational.setdefault(event.stream_id, []).append(
                    dict(event.headers)[":status"]
                )
            elif isinstance(event, h2.events.DataReceived):
                self.data[event.stream_id] = self.data.get(event.stream_id, b"") + event.data
                self.client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self.ended.add(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self.reset.add(event.stream_id)
        acknowledged = self.client.data_to_send()
        if acknowledged:
            self.conn.receive(acknowledged)

    def status(self, sid: int) -> int | None:
        headers = self.headers.get(sid)
        return None if headers is None else int(headers[":status"])


class FastChannelSite:
    """
    A site served as with C{server.fastChannel} but without the limits:
    L{notificator.http.request.Request} over
    L{notificator.http.fast.Channel} and its
    L{notificator.http.fast.WriteBatch}, over the core L{Parts}, on a
    L{MemoryReactorClock}, with one connection open (C{sock}, C{protocol},
    C{conn}; more with L{connect}), a real C{tcp.Server} over a
    L{FakeSocket}.
    """

    def __init__(self, debug: bool = False) -> None:
        from notificator.http.fast import WriteBatch
        from notificator.http.site import Site

        self.reactor = MemoryReactorClock()
        self.writes = WriteBatch(self.reactor)
        cfg = config_with(server={"log_level": "debug" if debug else "info"})
        self.parts = Parts(self.reactor, cfg)
        self.hub = self.parts.hub
        self.site = Site(self.parts.resource, reactor=self.reactor, writes=self.writes)
        self._connections = 0
        self.sock, self.protocol, self.conn = self.connect()

    def connect(self) -> tuple[FakeSocket, Any, tcp.Server]:
        """Another connection to the same site: its socket, protocol and transport."""
        conn = Conn(self, self._connections)
        self._connections += 1
        return conn.sock, conn.protocol, conn.transport

    def lose(self, reason: Exception | None = None) -> None:
        """The reactor's side of a closed connection (once)."""
        if self.conn.connected:
            self.conn.connectionLost(Failure(reason or ConnectionDone()))

    def receive(self, raw: bytes) -> None:
        """The reactor hands the connection C{raw} (the pass is not over)."""
        self.protocol.dataReceived(raw)

    def request(self, raw: bytes) -> None:
        """One reactor pass: C{raw} is received, then the write batch sends."""
        self.receive(raw)
        self.reactor.advance(0)

    def flush(self) -> None:
        """What the reactor's write pass would do."""
        while self.conn.dataBuffer or self.conn._tempDataLen:
            before = len(self.sock.sent)
            self.conn.doWrite()
            if len(self.sock.sent) == before:
                break

    def body(self) -> bytes:
        head, _, body = bytes(self.sock.sent).partition(b"\r\n\r\n")
        return body

    def publish(self, user: str, data: str) -> int:
        return int(self.parts.publish(user, data).delivered)


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
