"""
Tests for L{notificator.workers.redis}: finding C{redis-server} (and the
one line without it), its configuration, the pre-flight check of its
directory, and the real C{redis-server} run as the private Redis: on its
socket only, persistent across a stop and a start, started again after
C{kill -9} with nothing acknowledged lost; and with stand-in programs, a
Redis that never answers and one that ignores SIGTERM.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from notificator.workers import redis
from notificator.workers.redis import PrivateRedis, RedisUnavailable, own_session
from notificator.workers.supervisor import Backoff
from tests.support import _resp, _RESPReader, not_here, redis_server_path
from tests.test_workers_supervisor import wait_for

MISSING = (
    "server.workers 2 needs Redis: install the redis-server package"
    " (apt-get install redis-server) or set cluster.redis"
)


def program(testcase: SynchronousTestCase, name: str, script: str) -> str:
    """A shell script C{name} in a directory of its own; its path."""
    directory = os.path.abspath(testcase.mktemp())
    os.makedirs(directory)
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + script + "\n")
    os.chmod(path, 0o755)
    return path


def short_dir(testcase: SynchronousTestCase) -> str:
    """A directory with a short path (a Unix socket's path is at most 107 bytes)."""
    import shutil
    import tempfile

    directory = tempfile.mkdtemp(prefix="ntf-redis-", dir="/tmp")
    testcase.addCleanup(shutil.rmtree, directory, True)
    return directory


def command(path: str, *args: str) -> Any:
    """One command to the Redis on the Unix socket C{path}; its reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(_resp(*args))
        return _RESPReader(s.makefile("rb")).read()


class FindTests(SynchronousTestCase):
    """The program, or the one line that says what to do."""

    def test_missing(self) -> None:
        """A PATH without redis-server: the one line, naming server.workers."""
        empty = os.path.abspath(self.mktemp())
        os.makedirs(empty)
        e = self.assertRaises(RedisUnavailable, redis.find, 2, search=empty)
        self.assertEqual(str(e), MISSING)
        e = self.assertRaises(RedisUnavailable, redis.find, "auto", search=empty)
        self.assertEqual(str(e), MISSING.replace(" 2 ", ' "auto" '))

    def test_on_the_path(self) -> None:
        """The redis-server on the PATH given."""
        path = program(self, "redis-server", "exit 0")
        found = redis.find(2, search=os.pathsep.join(["/nonexistent", os.path.dirname(path)]))
        self.assertEqual(found, path)

    def test_given(self) -> None:
        """A given program is used as it is; a file that is not one is refused."""
        path = program(self, "my-redis", "exit 0")
        self.assertEqual(redis.find(2, given=path, search=""), path)
        os.chmod(path, 0o644)
        e = self.assertRaises(RedisUnavailable, redis.find, 2, given=path)
        self.assertEqual(str(e), f"{path}: not a program; {MISSING}")


class ConfigTests(SynchronousTestCase):
    """redis.conf and the URL."""

    def test_config(self) -> None:
        """Unix socket only, 0700, persistence on, in the foreground, its files where asked."""
        text = redis.config_text("/srv/ntf/var/redis", "/srv/ntf/log/redis.log")
        lines = [line for line in text.splitlines() if not line.startswith("#")]
        self.assertEqual(
            lines,
            [
                "port 0",
                'unixsocket "/srv/ntf/var/redis/redis.sock"',
                "unixsocketperm 700",
                'dir "/srv/ntf/var/redis"',
                'pidfile "/srv/ntf/var/redis/redis.pid"',
                'logfile "/srv/ntf/log/redis.log"',
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
            ],
        )

    def test_paths_quoted(self) -> None:
        """Spaces, quotes, backslashes and other bytes in a path are quoted for redis.conf."""
        text = redis.config_text('/srv/my "ntf"\\x\n/é', "/l")
        self.assertIn('dir "/srv/my \\"ntf\\"\\\\x\\x0a/\\xc3\\xa9"\n', text)

    def test_url(self) -> None:
        """The workers' cluster.redis: unix:// and the socket's absolute path."""
        self.assertEqual(redis.url("/srv/ntf/var/redis"), "unix:///srv/ntf/var/redis/redis.sock")


class CheckDirectoryTests(SynchronousTestCase):
    """The pre-flight check of the directory."""

    def test_free(self) -> None:
        """No socket, or a stale one (its Redis was killed): fine."""
        directory = short_dir(self)
        redis.check_directory(directory)
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(redis.socket_path(directory))
        stale.close()
        redis.check_directory(directory)

    def test_served_already(self) -> None:
        """Something answers on the socket (an earlier run's Redis): one line with its pid."""
        directory = short_dir(self)
        listener = socket.socket(socket.AF_UNIX)
        self.addCleanup(listener.close)
        listener.bind(redis.socket_path(directory))
        listener.listen(1)
        with open(os.path.join(directory, "redis.pid"), "w") as f:
            f.write("4321\n")
        e = self.assertRaises(RedisUnavailable, redis.check_directory, directory)
        self.assertEqual(
            str(e),
            f"{directory}/redis.sock: another redis-server (pid 4321) serves this directory"
            " already; stop it first (an earlier Notificator's, left running)",
        )

    def test_path_too_long(self) -> None:
        """A socket path longer than a Unix socket takes: one line."""
        directory = "/srv/" + "n" * 100
        e = self.assertRaises(RedisUnavailable, redis.check_directory, directory)
        self.assertEqual(
            str(e),
            f"{directory}/redis.sock: the private Redis's socket path is longer than 107 bytes;"
            " install the server in a shorter directory, or set cluster.redis",
        )


class PrivateRedisTests(TestCase):
    """The real redis-server as the private Redis."""

    timeout = 60

    def setUp(self) -> None:
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.root = short_dir(self)

    def logged(self, pattern: str) -> list[str]:
        return [line for line in map(formatEvent, self.events) if re.search(pattern, line)]

    def private(self, executable: str | None = None, **kw: Any) -> PrivateRedis:
        service = PrivateRedis(
            reactor,
            executable or redis_server_path(),
            os.path.join(self.root, "var dir", "redis"),
            os.path.join(self.root, "log", "redis.log"),
            **kw,
        )
        os.makedirs(os.path.join(self.root, "log"), exist_ok=True)
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        return service

    @inlineCallbacks
    def test_answers_on_its_socket_only(self) -> Any:
        """Started, it answers on its socket (0700, in a 0700 directory); no TCP port."""
        service = self.private()
        yield service.when_ready()
        self.assertEqual(command(service.socket, "PING"), "PONG")
        self.assertEqual(command(service.socket, "CONFIG", "GET", "port"), [b"port", b"0"])
        self.assertEqual(
            command(service.socket, "CONFIG", "GET", "appendonly"), [b"appendonly", b"yes"]
        )
        self.assertEqual(stat.S_IMODE(os.stat(service.socket).st_mode), 0o700)
        self.assertEqual(stat.S_IMODE(os.stat(service.directory).st_mode), 0o700)
        pid = service.pid
        self.assertEqual(
            self.logged("redis-server (started|ready)"),
            [
                f"redis-server started (pid {pid}) on {service.socket},"
                f" its log in {service.log_file}",
                f"redis-server ready (pid {pid})",
            ],
        )
        yield wait_for(lambda: os.path.getsize(service.log_file) > 0)

    @inlineCallbacks
    def test_in_a_session_of_its_own(self) -> Any:
        """
        Run by L{own_session}, Redis leads a session (and process group) of
        its own, so a terminal's Ctrl-C to ours does not reach it; its pid
        is Redis's own (C{setsid} execs in place).  Without a launcher it
        shares ours.
        """
        launcher = own_session()
        if not launcher:
            not_here("PRIVATE REDIS SESSION TEST NOT RUN: no setsid (util-linux) here")
        alone = self.private(launcher=launcher)
        yield alone.when_ready()
        pid = alone.pid or 0
        self.assertEqual((os.getsid(pid), os.getpgid(pid)), (pid, pid))
        with open(f"/proc/{pid}/comm", encoding="ascii") as f:
            self.assertEqual(f.read().strip(), "redis-server")
        yield alone.stopService()
        shared = self.private()
        yield shared.when_ready()
        self.assertEqual(os.getpgid(shared.pid or 0), os.getpgid(0))

    def test_own_session_without_setsid(self) -> None:
        """No setsid on the PATH: Redis is run directly."""
        self.assertEqual(own_session(search=self.mktemp()), ())

    @inlineCallbacks
    def test_survives_stop_and_start(self) -> Any:
        """What was written is there after a stop (SIGTERM) and a new start."""
        first = self.private()
        yield first.when_ready()
        command(first.socket, "SET", "history", "kept")
        pid = first.pid
        yield first.stopService()
        self.assertEqual(
            self.logged("stopped"), [f"redis-server (pid {pid}) stopped: exit status 0"]
        )
        second = self.private()
        yield second.when_ready()
        self.assertNotEqual(second.pid, pid)
        self.assertEqual(command(second.socket, "GET", "history"), b"kept")

    @inlineCallbacks
    def test_restarted_after_kill_9(self) -> Any:
        """kill -9: started again after the backoff, with what it had acknowledged."""
        service = self.private(backoff=Backoff(first=0.2))
        yield service.when_ready()
        command(service.socket, "SET", "history", "acknowledged")
        pid = service.pid
        os.kill(pid or 0, signal.SIGKILL)
        yield wait_for(lambda: service.ready and service.pid != pid)
        self.assertEqual(command(service.socket, "GET", "history"), b"acknowledged")
        self.assertEqual(
            self.logged("died"),
            [
                f"redis-server (pid {pid}) died: killed by signal 9 (SIGKILL); restarting it in 0.2 s"
            ],
        )

    @inlineCallbacks
    def test_not_answering(self) -> Any:
        """A Redis that does not answer in time is killed and started again."""
        silent = program(self, "redis-server", "exec sleep 60")
        service = self.private(silent, ready_timeout=0.5, backoff=Backoff(first=0.1))
        first = service.pid
        yield wait_for(lambda: service.pid not in (None, first))
        self.assertEqual(
            self.logged("not answering|died"),
            [
                f"redis-server (pid {first}) not answering within 0.5 s: killing it (SIGKILL)",
                f"redis-server (pid {first}) died: killed by signal 9 (SIGKILL);"
                " restarting it in 0.1 s",
            ],
        )

    @inlineCallbacks
    def test_stop_is_bounded(self) -> Any:
        """A Redis that does not stop on SIGTERM is killed after stop_timeout."""
        trapped = os.path.join(self.root, "trapped")
        stubborn = program(self, "redis-server", f"trap '' TERM\ntouch {trapped}\nexec sleep 60")
        service = self.private(stubborn, stop_timeout=0.5)
        pid = service.pid
        yield wait_for(lambda: os.path.exists(trapped))
        yield service.stopService()
        self.assertEqual(
            self.logged("still running|stopped"),
            [
                f"redis-server (pid {pid}) still running 0.5 s after SIGTERM: killing it (SIGKILL)",
                f"redis-server (pid {pid}) stopped: killed by signal 9 (SIGKILL)",
            ],
        )
