# -*- test-case-name: tests.test_workers_redis -*-
"""
The private C{redis-server} of C{server.workers}.

Workers are cluster nodes: a notification published to one reaches the
streams of the others through Redis, and a reconnect finds what it missed
there whichever worker it lands on.  Without C{cluster.redis} the
supervisor runs a Redis of its own (L{PrivateRedis}):

 - reachable on a Unix socket only (C{port 0}: no TCP at all), in a
   directory under C{var/} that only the server's user can enter (the
   directory C{0700}, the socket C{unixsocketperm 700}): no password to
   keep, no port another local user could reach;
 - persistent as one process's history is: an append-only file
   (C{appendonly yes}, C{appendfsync everysec}: every acknowledged write
   is in the file before Redis answers, so a crash of Redis or of the
   server loses nothing, a crash of the machine at most the last second)
   and RDB snapshots (Redis's default save points), so the history
   survives a restart;
 - its configuration (L{config_text}) written at every start, so an
   upgrade of the server brings its settings along;
 - started with C{spawnProcess} (C{daemonize no}, C{supervised no}),
   ready once it answers C{PING} on its socket, started again if it dies
   (with a backoff, L{notificator.workers.supervisor.Backoff}; the
   workers' Redis broker reconnects by itself), and stopped with SIGTERM,
   on which Redis writes its snapshot and closes the append-only file.
   Make it stop after the workers (before it in a sequential service), so
   that the last publishes of their drain are recorded.

Its log goes to a file of its own (C{logfile}) in the server's log
directory, and its standard output and error to this process's log.

L{find} finds the program, L{check_directory} checks the directory before
start-up (the socket's path length, another C{redis-server} already
serving it), and each raises L{RedisUnavailable} with one line for the
start-up path to stop on.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall, IProcessTransport
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from notificator.workers.supervisor import (
    BACKOFF,
    Backoff,
    Lines,
    describe_exit,
    fire_all,
    printable,
)

log = Logger()

#: The names of Redis's files in its directory (the log file is elsewhere).
SOCKET = "redis.sock"
CONFIG = "redis.conf"
PIDFILE = "redis.pid"

#: The longest path of a Unix socket (C{sun_path} holds 108 bytes with the NUL).
MAX_SOCKET_PATH = 107


class RedisUnavailable(Exception):
    """Redis cannot be run here; C{str()} is one line saying what to do."""


def missing(workers: int | str) -> str:
    """The line for a host without C{redis-server}."""
    shown = f'"{workers}"' if isinstance(workers, str) else str(workers)
    return (
        f"server.workers {shown} needs Redis: install the redis-server package"
        " (apt-get install redis-server) or set cluster.redis"
    )


def find(workers: int | str, given: str | None = None, search: str | None = None) -> str:
    """
    The C{redis-server} to run: C{given}, else the one on the C{PATH}.

    @param workers: C{server.workers}, for the message.
    @param search: the C{PATH} to look on; L{None}: this process's.
    @raise RedisUnavailable: it is not there (L{missing}), or C{given} is
        not a program.
    """
    if given is not None:
        if os.path.isfile(given) and os.access(given, os.X_OK):
            return os.path.abspath(given)
        raise RedisUnavailable(f"{given}: not a program; {missing(workers)}")
    found = shutil.which("redis-server", path=search)
    if found is None:
        raise RedisUnavailable(missing(workers))
    return os.path.abspath(found)


def own_session(search: str | None = None) -> tuple[str, ...]:
    """
    The start of a command line that runs what follows in a session (and
    process group) of its own: util-linux's C{setsid}, or nothing where it
    is missing.  Ctrl-C in a terminal signals the whole foreground process
    group; the private Redis must not stop before the workers whose drain
    it records, so the supervisor alone stops it (SIGTERM, in order).
    (Twisted's C{spawnProcess} neither starts a session nor lets a child
    keep an ignored SIGINT; a spawned child is no group leader, so
    C{setsid} execs in place: the pid is Redis's own.)
    """
    found = shutil.which("setsid", path=search)
    return () if found is None else (found,)


def socket_path(directory: str) -> str:
    """Where the private Redis of C{directory} listens."""
    return os.path.join(os.path.abspath(directory), SOCKET)


def url(directory: str) -> str:
    """
    The private Redis of C{directory} as a C{cluster.redis} URL for the
    workers: C{unix:///abs/path/redis.sock} (the form redis-py reads;
    database 0).
    """
    return "unix://" + socket_path(directory)


def _quote(value: str) -> str:
    """A string argument of a redis.conf line, double-quoted and escaped."""
    out = []
    for c in value:
        if c in '"\\':
            out.append("\\" + c)
        elif " " <= c <= "~":
            out.append(c)
        else:
            out.extend(f"\\x{b:02x}" for b in c.encode("utf-8", "surrogateescape"))
    return '"' + "".join(out) + '"'


def config_text(directory: str, log_file: str) -> str:
    """The redis.conf of the private Redis of C{directory}, logging to C{log_file}."""
    directory = os.path.abspath(directory)
    lines = [
        "# Written by Notificator (notificator.workers.redis) at every start:",
        "# what is changed here is lost.  The private Redis of server.workers.",
        "port 0",
        f"unixsocket {_quote(socket_path(directory))}",
        "unixsocketperm 700",
        f"dir {_quote(directory)}",
        f"pidfile {_quote(os.path.join(directory, PIDFILE))}",
        f"logfile {_quote(os.path.abspath(log_file))}",
        "loglevel notice",
        "daemonize no",
        "supervised no",
        "always-show-logo no",
        "appendonly yes",
        'appendfilename "appendonly.aof"',
        "appendfsync everysec",
        'dbfilename "dump.rdb"',
        "save 3600 1",
        "save 300 100",
        "save 60 10000",
    ]
    return "\n".join(lines) + "\n"


def check_directory(directory: str) -> None:
    """
    Check, before start-up, that a private Redis can run in C{directory}:
    its socket's path is short enough, and no other C{redis-server} (of an
    earlier run whose supervisor was killed) serves it: two writing one
    append-only file would corrupt it.  Blocks briefly (a connect to a
    local socket): for the pre-flight, not for the reactor.

    @raise RedisUnavailable: one line naming the path.
    """
    path = socket_path(directory)
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise RedisUnavailable(
            f"{path}: the private Redis's socket path is longer than {MAX_SOCKET_PATH} bytes;"
            " install the server in a shorter directory, or set cluster.redis"
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2)
    try:
        probe.connect(path)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ECONNREFUSED):
            return
        raise RedisUnavailable(f"{path}: {e.strerror or e}")
    finally:
        probe.close()
    pid = _read_pid(os.path.join(os.path.abspath(directory), PIDFILE))
    holder = f"pid {pid}" if pid is not None else "pid unknown"
    raise RedisUnavailable(
        f"{path}: another redis-server ({holder}) serves this directory already;"
        " stop it first (an earlier Notificator's, left running)"
    )


def _read_pid(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


class _Ping(Protocol):
    """Sends C{PING}; C{answer} fires with the first line that comes back."""

    def __init__(self) -> None:
        self.answer: Deferred[bytes] = Deferred()
        self._data = b""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(b"PING\r\n")

    def dataReceived(self, data: bytes) -> None:
        self._data += data
        if b"\r\n" in self._data:
            assert self.transport is not None
            self.transport.loseConnection()
            self._fire()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._fire()

    def _fire(self) -> None:
        if not self.answer.called:
            self.answer.callback(self._data.partition(b"\r\n")[0])


class _Process(ProcessProtocol):
    def __init__(self, owner: PrivateRedis) -> None:
        self._owner = owner
        self.started = 0.0
        self.ended = False
        self._lines = {fd: Lines(self._line) for fd in (1, 2)}

    def _line(self, line: bytes) -> None:
        log.info("redis-server: {line}", line=printable(line))

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        lines = self._lines.get(childFD)
        if lines is not None:
            lines.feed(data)

    def childConnectionLost(self, childFD: int) -> None:
        lines = self._lines.get(childFD)
        if lines is not None:
            lines.close()

    def processEnded(self, reason: Failure) -> None:
        self.ended = True
        self._owner._ended(self, reason)


class PrivateRedis(Service):
    """
    Runs the private C{redis-server} (see the module docstring).

    @ivar pid: its process id while it runs.
    """

    def __init__(
        self,
        reactor: Any,
        executable: str,
        directory: str,
        log_file: str,
        ready_timeout: float = 60.0,
        stop_timeout: float = 60.0,
        backoff: Backoff = BACKOFF,
        ping_interval: float = 0.1,
        launcher: tuple[str, ...] = (),
    ) -> None:
        """
        @param reactor: an C{IReactorProcess}, C{IReactorUNIX} and C{IReactorTime}.
        @param executable: the program (L{find}).
        @param launcher: what runs it (L{own_session}); empty: run directly.
        @param directory: its directory (created C{0700}; under C{var/}).
        @param log_file: its log file (in the server's log directory).
        @param ready_timeout: a Redis not answering C{PING} this many
            seconds after it started (loading a large append-only file
            takes a while) is killed and started again.
        @param stop_timeout: a Redis still running this many seconds after
            SIGTERM (writing its snapshot) is killed.
        @param backoff: the waits before a Redis that died starts again.
        @param ping_interval: how often to try C{PING} until it answers.
        """
        self._reactor = reactor
        self.executable = executable
        self.directory = os.path.abspath(directory)
        self.log_file = os.path.abspath(log_file)
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.backoff = backoff
        self.ping_interval = ping_interval
        self.launcher = launcher
        self.pid: int | None = None
        self.ready = False
        self._process: _Process | None = None
        self._transport: IProcessTransport | None = None
        self._delay: float | None = None
        self._call: IDelayedCall | None = None
        self._waiting: list[Deferred[None]] = []
        self._ends: list[Deferred[None]] = []

    @property
    def socket(self) -> str:
        """Its Unix socket."""
        return socket_path(self.directory)

    def url(self) -> str:
        """Its C{cluster.redis} URL (L{url})."""
        return url(self.directory)

    def when_ready(self) -> Deferred[None]:
        """
        Fires once it answers C{PING} (after a restart: the next time it
        does); never if it stops before.
        """
        if self.ready:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiting.append(d)
        return d

    def startService(self) -> None:
        super().startService()
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        os.chmod(self.directory, 0o700)
        config = os.path.join(self.directory, CONFIG)
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(config_text(self.directory, self.log_file))
        self._start()

    def _start(self) -> None:
        self._call = None
        if not self.running:
            return
        process = _Process(self)
        process.started = self._reactor.seconds()
        argv = [*self.launcher, self.executable, os.path.join(self.directory, CONFIG)]
        try:
            transport = self._reactor.spawnProcess(
                process,
                argv[0],
                argv,
                env=dict(os.environ),
                # No working directory (redis.conf's dir is absolute):
                # Twisted then uses posix_spawn, where a fork would leave a
                # moment in which a SIGTERM is lost.
                childFDs={0: "w", 1: "r", 2: "r"},
            )
        except OSError as e:
            delay = self._next_delay(0.0)
            log.error(
                "redis-server could not be started: {reason}; trying again in {delay:g} s",
                reason=e.strerror or str(e),
                delay=delay,
            )
            self._call = self._reactor.callLater(delay, self._start)
            return
        self._process, self._transport = process, transport
        self.pid = transport.pid
        log.info(
            "redis-server started (pid {pid}) on {socket}, its log in {log_file}",
            pid=self.pid,
            socket=self.socket,
            log_file=self.log_file,
        )
        self._ping(process)

    def _next_delay(self, lived: float) -> float:
        self._delay = self.backoff.after(self._delay, lived)
        return self._delay

    def _ping(self, process: _Process) -> None:
        """Try C{PING}; again after C{ping_interval} until it answers or time is up."""
        self._call = None
        if process is not self._process or process.ended:
            return
        if self._reactor.seconds() - process.started >= self.ready_timeout:
            log.warn(
                "redis-server (pid {pid}) not answering within {seconds:g} s: killing it (SIGKILL)",
                pid=self.pid,
                seconds=self.ready_timeout,
            )
            self._signal("KILL")
            return
        ping = _Ping()
        endpoint = UNIXClientEndpoint(self._reactor, self.socket, timeout=self.ping_interval * 10)
        factory = Factory.forProtocol(lambda: ping)
        factory.noisy = False  # no "Starting factory" line for each PING
        d = endpoint.connect(factory)
        d.addCallback(lambda _: ping.answer.addTimeout(self.ping_interval * 10, self._reactor))
        # Not there yet, refused, or no answer in time: not ready.
        d.addErrback(lambda _: b"")
        d.addCallback(self._pinged, process)

    def _pinged(self, answer: bytes, process: _Process) -> None:
        if process is not self._process or process.ended or not self.running:
            return
        if answer == b"+PONG":
            self.ready = True
            log.info("redis-server ready (pid {pid})", pid=self.pid)
            waiting, self._waiting = self._waiting, []
            fire_all(waiting, None)
            return
        self._call = self._reactor.callLater(self.ping_interval, self._ping, process)

    def _signal(self, name: str) -> None:
        transport = self._transport
        if transport is None:
            return
        try:
            transport.signalProcess(name)
        except (ProcessExitedAlready, OSError):
            pass

    def _ended(self, process: _Process, reason: Failure) -> None:
        if process is not self._process:
            return
        how = describe_exit(reason)
        pid, self.pid = self.pid, None
        self._process = self._transport = None
        self.ready = False
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self.running:
            delay = self._next_delay(self._reactor.seconds() - process.started)
            log.warn(
                "redis-server (pid {pid}) died: {how}; restarting it in {delay:g} s",
                pid=pid,
                how=how,
                delay=delay,
            )
            self._call = self._reactor.callLater(delay, self._start)
        else:
            log.info("redis-server (pid {pid}) stopped: {how}", pid=pid, how=how)
        ends, self._ends = self._ends, []
        fire_all(ends, None)

    def stopService(self) -> Deferred[None]:
        """
        SIGTERM (Redis writes its snapshot and closes its append-only
        file), SIGKILL after C{stop_timeout}; fires once it has exited.
        """
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._process is None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._ends.append(d)
        self._signal("TERM")
        killer = self._reactor.callLater(self.stop_timeout, self._kill)

        def done(_: None) -> None:
            if killer.active():
                killer.cancel()

        return d.addCallback(done)

    def _kill(self) -> None:
        if self._process is not None:
            log.warn(
                "redis-server (pid {pid}) still running {seconds:g} s after SIGTERM:"
                " killing it (SIGKILL)",
                pid=self.pid,
                seconds=self.stop_timeout,
            )
            self._signal("KILL")
