"""
End-to-end: one real C{twistd -n notificator} per history directory (the
lock of L{notificator.pidlock}): a second server on the same
C{sse.history.dir} stops at start-up with one line and leaves the first
one's journal alone, in the foreground and daemonized by C{startup.sh}; a
killed server leaves no stale lock.
"""

from __future__ import annotations

import os
import re
import signal

from twisted.trial.unittest import SynchronousTestCase

from notificator.history import HistoryFile, Loaded, read_journal
from tests.support import Server, base_config, wait_until

FORM = "application/x-www-form-urlencoded"


def read(path: str) -> str:
    with open(path, encoding="ascii") as f:
        return f.read()


def journal(directory: str) -> Loaded:
    """What the history journal in C{directory} holds now (L{Loaded}; empty without one)."""
    try:
        with open(os.path.join(directory, HistoryFile.NAME), "rb") as f:
            return read_journal(f.read())
    except FileNotFoundError:
        return Loaded()


class TwoServersEndToEndTests(SynchronousTestCase):
    def test_second_server_on_the_same_history_stops_with_one_line(self) -> None:
        """
        A second real server given the first one's sse.history.dir (another
        port) stops at start-up with one line naming the directory and the
        first one's pid, and touches nothing: the first serves on, and its
        journal, after a clean stop, holds what was published, marked clean.
        """
        first = Server(self, local=base_config()).start()
        assert first.process is not None
        directory = os.path.join(first.dir, "var", "history")
        for n in range(3):
            self.assertEqual(first.post(f"id=notify_u&data={n}", FORM)[0], 200)
        local = base_config()
        local["sse"]["history"] = {"dir": directory}
        second = Server(self, local=local)
        code, output = second.run_to_exit(timeout=30)
        self.assertEqual(code, 1, output)
        self.assertEqual(
            output,
            f"notificator: sse.history.dir: {directory} is in use by another running"
            f" Notificator (pid {first.process.pid}); stop it first, or give this server"
            " its own sse.history.dir\n",
        )
        self.assertEqual(first.post("id=notify_u&data=3", FORM)[0], 200)
        first.stop()
        with open(os.path.join(directory, HistoryFile.NAME), "rb") as f:
            loaded = read_journal(f.read())
        self.assertTrue(loaded.clean)
        self.assertEqual(len(loaded.users["u"][1]), 4)
        self.assertNotIn("not closed cleanly", first.log())
        self.assertEqual(os.path.getsize(os.path.join(directory, "lock")), 0)

    def test_after_a_kill_the_next_server_starts(self) -> None:
        """
        SIGKILL leaves no stale lock: the next server on the directory
        starts, and says the history was not closed cleanly (it was not).
        """
        first = Server(self, local=base_config()).start()
        assert first.process is not None
        self.assertEqual(first.post("id=notify_u&data=1", FORM)[0], 200)
        directory = os.path.join(first.dir, "var", "history")
        wait_until(lambda: "u" in journal(directory).users, 10, "the publish in the journal")
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
        local = base_config()
        local["sse"]["history"] = {"dir": directory}
        second = Server(self, local=local).start()
        assert second.process is not None
        second.wait_for_log("not closed cleanly")
        self.assertEqual(read(os.path.join(directory, "lock")), f"{second.process.pid}\n")


class DaemonizedEndToEndTests(SynchronousTestCase):
    def test_startup_sh_daemon_holds_the_lock(self) -> None:
        """
        Started by startup.sh (twistd forks a daemon after makeService took
        the lock): the daemon holds the lock with its own pid; a second
        startup.sh with another pid file fails with the line naming the
        daemon's pid; shutdown.sh releases the lock.
        """
        from tests.test_scripts import Project

        project = Project(self)
        pid = project.start()
        lock = os.path.join(project.root, "var", "history", "lock")
        wait_until(lambda: read(lock) == f"{pid}\n", 10, "the daemon's pid in the lock")
        other = project.run(
            "startup.sh",
            "--listen",
            "tcp:0:interface=127.0.0.1",
            env={"NOTIFICATOR_PIDFILE": os.path.join(project.root, "other.pid")},
        )
        self.assertNotEqual(other.returncode, 0, other.stdout)
        directory = os.path.join(project.root, "var", "history")
        self.assertIn(
            f"notificator: sse.history.dir: {directory} is in use by another running"
            f" Notificator (pid {pid}); stop it first",
            other.stdout,
        )
        self.assertEqual(
            len(re.findall("is in use by another running Notificator", other.stdout)), 1
        )
        stopped = project.run("shutdown.sh")
        self.assertEqual(stopped.returncode, 0, stopped.stdout)
        self.assertEqual(os.path.getsize(lock), 0)
