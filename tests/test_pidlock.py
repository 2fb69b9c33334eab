"""
Tests for L{notificator.pidlock}: one server per history directory.  The
lock itself (held, refused with the holder's pid, released, gone with a
killed holder), its service, the one-line refusals of C{tap.take_lock} and
the wiring in C{makeService}; end to end in L{tests.test_pidlock_e2e}.
"""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from notificator import pidlock, tap
from notificator.history import HistoryFile, read_journal
from tests.support import write_config


def holder_process(testcase: SynchronousTestCase, directory: str) -> subprocess.Popen[bytes]:
    """Another process that takes the lock on C{directory} and waits (killed in cleanup)."""
    code = (
        "import sys, time\n"
        "from notificator.pidlock import DirectoryLock\n"
        "DirectoryLock(sys.argv[1]).acquire()\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, directory], stdout=subprocess.PIPE, env=os.environ
    )

    def kill() -> None:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        assert process.stdout is not None
        process.stdout.close()

    testcase.addCleanup(kill)
    assert process.stdout is not None
    testcase.assertEqual(process.stdout.readline(), b"locked\n")
    return process


class DirectoryLockTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)

    def test_held_with_the_pid_and_refused_to_another(self) -> None:
        """The holder's pid is in <dir>/lock; another lock on the directory is refused with it."""
        lock = pidlock.DirectoryLock(self.dir)
        lock.acquire()
        self.addCleanup(lock.release)
        self.assertTrue(lock.held)
        with open(os.path.join(self.dir, "lock")) as f:
            self.assertEqual(f.read(), f"{os.getpid()}\n")
        e = self.assertRaises(pidlock.Locked, pidlock.DirectoryLock(self.dir).acquire)
        self.assertEqual((e.directory, e.pid), (self.dir, os.getpid()))

    def test_released_then_taken_again(self) -> None:
        """After release the file is empty and the next one takes the lock."""
        first = pidlock.DirectoryLock(self.dir)
        first.acquire()
        first.release()
        self.assertFalse(first.held)
        self.assertEqual(os.path.getsize(first.path), 0)
        self.assertIsNone(first.holder())
        second = pidlock.DirectoryLock(self.dir)
        second.acquire()
        self.addCleanup(second.release)
        self.assertEqual(second.holder(), os.getpid())

    def test_another_process_holds_it_until_killed(self) -> None:
        """
        A lock held by another process is refused with that process's pid;
        once it is killed (SIGKILL: no clean-up), the lock is free again.
        """
        other = holder_process(self, self.dir)
        e = self.assertRaises(pidlock.Locked, pidlock.DirectoryLock(self.dir).acquire)
        self.assertEqual(e.pid, other.pid)
        other.kill()
        other.wait(10)
        lock = pidlock.DirectoryLock(self.dir)
        lock.acquire()
        self.addCleanup(lock.release)
        self.assertEqual(lock.holder(), os.getpid())

    def test_a_longer_old_pid_is_overwritten_whole(self) -> None:
        """A pid left by a killed holder, longer than ours, leaves no digits behind."""
        with open(os.path.join(self.dir, "lock"), "w") as f:
            f.write("99999999999\n")
        lock = pidlock.DirectoryLock(self.dir)
        lock.acquire()
        self.addCleanup(lock.release)
        with open(lock.path) as f:
            self.assertEqual(f.read(), f"{os.getpid()}\n")

    def test_no_pid_in_the_file(self) -> None:
        """A holder whose file names no pid is reported as such (None)."""
        lock = pidlock.DirectoryLock(self.dir)
        lock.acquire()
        self.addCleanup(lock.release)
        with open(lock.path, "w") as f:
            f.write("garbage")
        e = self.assertRaises(pidlock.Locked, pidlock.DirectoryLock(self.dir).acquire)
        self.assertIsNone(e.pid)

    def test_service_takes_or_keeps_and_releases(self) -> None:
        """
        The service takes the lock at start unless it is held (then it
        writes the running process's pid again), and releases it at stop.
        """
        lock = pidlock.DirectoryLock(self.dir)
        service = pidlock.DirectoryLockService(lock)
        service.startService()
        self.assertTrue(lock.held)
        service.stopService()
        self.assertFalse(lock.held)
        lock.acquire()
        with open(lock.path, "w") as f:
            f.write("1\n")  # the pid of twistd's parent, before the fork
        service.startService()
        self.assertEqual(lock.holder(), os.getpid())
        service.stopService()
        self.assertFalse(lock.held)


class TakeLockTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)

    def test_held_elsewhere_is_one_line(self) -> None:
        """The line names the directory and the holder's pid."""
        other = holder_process(self, self.dir)
        e = self.assertRaises(SystemExit, tap.take_lock, pidlock.DirectoryLock(self.dir))
        self.assertEqual(
            e.code,
            f"notificator: sse.history.dir: {self.dir} is in use by another running"
            f" Notificator (pid {other.pid}); stop it first, or give this server its own"
            " sse.history.dir",
        )

    def test_unusable_lock_file_is_one_line(self) -> None:
        """A lock file that cannot be opened: one line naming the key and the file."""
        os.makedirs(os.path.join(self.dir, "lock"))
        e = self.assertRaises(SystemExit, tap.take_lock, pidlock.DirectoryLock(self.dir))
        self.assertEqual(
            e.code,
            f"notificator: configuration error: sse.history.dir: {self.dir}/lock: Is a directory",
        )


class MakeServiceLockTests(SynchronousTestCase):
    def service(self, doc: dict[str, object]) -> tuple[str, object]:
        here = os.path.abspath(self.mktemp())
        conf = write_config(os.path.join(here, "conf"), {"default": doc, "x": {}})
        options = tap.Options()
        options.parseOptions(["--config", conf, "--env", "x", "--listen", "tcp:0"])
        return os.path.join(here, "var", "history"), tap.makeService(
            options, reactor=MemoryReactorClock()
        )

    def test_held_while_running_released_after_the_history_is_written(self) -> None:
        """
        A running service holds the lock on sse.history.dir; its stop
        writes the clean history first and then releases the lock.
        """
        directory, service = self.service({})
        service.startService()
        e = self.assertRaises(pidlock.Locked, pidlock.DirectoryLock(directory).acquire)
        self.assertEqual(e.pid, os.getpid())
        stopped: list[bool] = []

        def check(_: object) -> None:
            with open(os.path.join(directory, HistoryFile.NAME), "rb") as f:
                stopped.append(read_journal(f.read()).clean)
            lock = pidlock.DirectoryLock(directory)
            lock.acquire()
            lock.release()

        self.successResultOf(service.stopService().addCallback(check))
        self.assertEqual(stopped, [True])

    def test_no_lock_without_a_journal(self) -> None:
        """In memory only, without history, or in cluster mode: no lock service, no lock file."""
        for doc in [
            {"sse": {"history": {"dir": None}}},
            {"sse": {"history": {"size": 0}}},
            {"cluster": {"redis": "redis://127.0.0.1:1/0"}},
        ]:
            directory, service = self.service(doc)
            self.assertIsNone(tap.find(service, pidlock.DirectoryLockService), doc)
            self.assertFalse(os.path.exists(os.path.join(directory, "lock")), doc)
