"""
Tests for L{notificator.workers.supervisor}: the supervisor's rules on a
fake process reactor and clock (start, ready, restart with backoff, stop,
reload, SIGHUP), the worker's side of the pipe protocol, and end to end
with real processes (tests/standin_worker.py): in this process, and under
the real twistd (tests/standin_supervisor.tac), foreground and daemonized,
with SIGTERM, SIGHUP under a stream of new connections, and SIGKILL.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.task import deferLater
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from notificator.workers import supervisor
from notificator.workers.supervisor import Backoff, Lines, Supervisor, WorkerLink, workers_for
from tests.support import PROJECT, free_port, twistd_command, wait_until


class FakeProcess:
    """What C{spawnProcess} returns here: records signals; the test ends it."""

    def __init__(
        self, protocol: Any, argv: list[str], env: dict[str, str], kw: dict[str, Any], pid: int
    ) -> None:
        self.protocol = protocol
        self.argv = argv
        self.env = env
        self.path = kw.get("path")
        self.child_fds = kw.get("childFDs")
        self.pid = pid
        self.signals: list[str] = []
        self.ended = False

    def signalProcess(self, name: str) -> None:
        if self.ended:
            raise ProcessExitedAlready()
        self.signals.append(name)

    def say(self, data: bytes, fd: int = supervisor.STATUS_FD) -> None:
        self.protocol.childDataReceived(fd, data)

    def exit(self, code: int = 0, signal_number: int | None = None) -> None:
        """The process ends (its pipes close, then it is reaped)."""
        self.ended = True
        for fd in (1, 2, supervisor.STATUS_FD):
            self.protocol.childConnectionLost(fd)
        if code == 0 and signal_number is None:
            reason: Exception = ProcessDone(0)
        else:
            reason = ProcessTerminated(None if signal_number else code, signal_number)
        self.protocol.processEnded(Failure(reason))


class ProcessReactor(MemoryReactorClock):
    """A memory reactor and clock that "spawns" L{FakeProcess}es."""

    def __init__(self) -> None:
        super().__init__()
        self.processes: list[FakeProcess] = []
        self.refuse: OSError | None = None

    def spawnProcess(
        self, protocol: Any, executable: str, args: Any = (), env: Any = None, **kw: Any
    ) -> FakeProcess:
        if self.refuse is not None:
            raise self.refuse
        assert executable == args[0]
        process = FakeProcess(protocol, list(args), env, kw, 1000 + len(self.processes))
        protocol.makeConnection(process)
        self.processes.append(process)
        return process

    def callFromThread(self, f: Callable[..., object], *args: Any, **kw: Any) -> None:
        self.callLater(0, f, *args, **kw)


class PureTests(SynchronousTestCase):
    """workers_for, describe_exit, Backoff, Lines."""

    def test_workers_for(self) -> None:
        """A number as it is; "auto" the CPUs this process may use; anything else refused."""
        self.assertEqual(workers_for(1), 1)
        self.assertEqual(workers_for(6), 6)
        self.assertEqual(workers_for("auto", lambda: 8), 8)
        self.assertEqual(workers_for("auto", lambda: 0), 1)
        self.assertEqual(workers_for("auto"), len(os.sched_getaffinity(0)))
        for bad in (0, -1, True, "2", 2.5, None, "AUTO"):
            e = self.assertRaises(ValueError, workers_for, bad)
            self.assertEqual(
                str(e), f'server.workers: expected a number of at least 1 or "auto", got {bad!r}'
            )

    def test_auto_follows_the_affinity(self) -> None:
        """ "auto" counts the CPUs of the affinity (taskset), not the machine's."""
        command = [
            sys.executable,
            "-c",
            "from notificator.workers.supervisor import workers_for; print(workers_for('auto'))",
        ]
        taskset = "/usr/bin/taskset"
        if not os.access(taskset, os.X_OK):
            from tests.support import not_here

            not_here("AFFINITY TEST NOT RUN: taskset is missing (apt-get install util-linux)")
        out = subprocess.run(
            [taskset, "-c", "0", *command],
            env={**os.environ, "PYTHONPATH": PROJECT},
            capture_output=True,
            check=True,
            timeout=60,
        )
        self.assertEqual(out.stdout, b"1\n")

    def test_describe_exit(self) -> None:
        """Exit status or signal, with the signal's name."""
        self.assertEqual(supervisor.describe_exit(Failure(ProcessDone(0))), "exit status 0")
        self.assertEqual(supervisor.describe_exit(Failure(ProcessTerminated(3))), "exit status 3")
        self.assertEqual(
            supervisor.describe_exit(Failure(ProcessTerminated(None, 9))),
            "killed by signal 9 (SIGKILL)",
        )

    def test_backoff(self) -> None:
        """1 s, doubling to 30 s while deaths come soon; 1 s again after a minute of life."""
        backoff = Backoff()
        waits = []
        previous = None
        for _ in range(7):
            previous = backoff.after(previous, lived=2.0)
            waits.append(previous)
        self.assertEqual(waits, [1, 2, 4, 8, 16, 30, 30])
        self.assertEqual(backoff.after(30, lived=60.0), 1)
        self.assertEqual(backoff.after(30, lived=59.9), 30)

    def test_lines(self) -> None:
        """Lines however the bytes come; a long one cut; the rest at the end."""
        got: list[bytes] = []
        lines = Lines(got.append, limit=8)
        lines.feed(b"rea")
        lines.feed(b"dy\nstop")
        self.assertEqual(got, [b"ready"])
        lines.feed(b"ping\n\n0123456789abcdefXY")
        self.assertEqual(got, [b"ready", b"stopping", b"", b"01234567", b"89abcdef"])
        lines.close()
        self.assertEqual(got[-1], b"XY")


class SupervisorTests(SynchronousTestCase):
    """The supervisor's rules, on a fake process reactor and clock."""

    def setUp(self) -> None:
        self.reactor = ProcessReactor()
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def supervisor(self, count: int = 2, **kw: Any) -> Supervisor:
        kw.setdefault("hangup", False)
        commands = [["/usr/bin/worker", "--slot", str(k)] for k in range(count)]
        s = Supervisor(self.reactor, commands, {"A": "1"}, "/srv", **kw)
        s.startService()
        self.addCleanup(self.stop, s)
        return s

    def stop(self, s: Supervisor) -> None:
        if s.running:
            d = s.stopService()
            for p in self.reactor.processes:
                if not p.ended:
                    p.exit()
            self.successResultOf(d)

    def logged(self, pattern: str = "") -> list[str]:
        lines = [formatEvent(e) for e in self.events]
        return [line for line in lines if re.search(pattern, line)]

    def ready_all(self) -> None:
        for p in self.reactor.processes:
            if not p.ended:
                p.say(b"ready\n")

    def test_start(self) -> None:
        """One process per slot, its argv, env, directory and pipes; each logged."""
        s = self.supervisor(3)
        processes = self.reactor.processes
        self.assertEqual([p.argv[-1] for p in processes], ["0", "1", "2"])
        for p in processes:
            self.assertEqual(p.env, {"A": "1"})
            self.assertEqual(p.path, "/srv")
            self.assertEqual(p.child_fds, {0: "w", 1: "r", 2: "r", 3: "r"})
        self.assertEqual([w.pid for w in s.workers if w], [1000, 1001, 1002])
        self.assertEqual(
            self.logged("start"),
            [
                "starting 3 workers",
                "worker 0 started (pid 1000)",
                "worker 1 started (pid 1001)",
                "worker 2 started (pid 1002)",
            ],
        )

    def test_ready(self) -> None:
        """Each worker's ready is logged; once all are, that is said once, and waiters fire."""
        s = self.supervisor(2)
        all_ready = s.when_all_ready()
        first, second = self.reactor.processes
        first.say(b"rea")
        first.say(b"dy\n")
        self.assertNoResult(all_ready)
        second.say(b"ready\nready\n")
        self.successResultOf(all_ready)
        self.successResultOf(s.when_all_ready())
        self.assertEqual(
            self.logged("ready"),
            ["worker 0 ready (pid 1000)", "worker 1 ready (pid 1001)", "all 2 workers ready"],
        )

    def test_status_and_output_lines(self) -> None:
        """Unknown status lines are logged and ignored; stdout and stderr lines carry the slot."""
        s = self.supervisor(1)
        [p] = self.reactor.processes
        p.say(b"bogus \x1b[31m\n")
        p.say(b"Site starting on 3000\n", fd=1)
        p.say(b"Traceback (most recent call last):\r\n", fd=2)
        self.assertFalse(s.workers[0] and s.workers[0].ready)
        self.assertEqual(
            self.logged("said|worker 0:"),
            [
                r'worker 0 (pid 1000) said "bogus \x1b[31m" on its status pipe: ignored',
                "worker 0: Site starting on 3000",
                "worker 0: Traceback (most recent call last):",
            ],
        )
        levels = [e["log_level"].name for e in self.events if e.get("line")]
        self.assertEqual(levels, ["warn", "info", "warn"])

    def test_outputs(self) -> None:
        """More pipes from each worker: each line read goes to its function, with the slot."""
        got: list[tuple[str, int, bytes]] = []
        s = self.supervisor(
            2,
            outputs={
                4: lambda slot, line: got.append(("four", slot, line)),
                5: lambda slot, line: got.append(("five", slot, line)),
            },
        )
        p0, p1 = self.reactor.processes
        self.assertEqual(p0.child_fds, {0: "w", 1: "r", 2: "r", 3: "r", 4: "r", 5: "r"})
        p0.say(b"a whole line\nhalf", fd=4)
        p1.say(b"other\n", fd=4)
        p0.say(b" a line\n", fd=4)
        p1.say(b"GET / 200\n", fd=5)
        p0.protocol.childConnectionLost(4)  # (a last line without its end)
        self.assertEqual(
            got,
            [
                ("four", 0, b"a whole line"),
                ("four", 1, b"other"),
                ("four", 0, b"half a line"),
                ("five", 1, b"GET / 200"),
            ],
        )
        self.assertEqual(s.outputs.keys(), {4, 5})

    def test_died_restarted_with_backoff(self) -> None:
        """
        A worker that dies is started again into its slot after 1 s, then
        2, 4 ... 30 s while it keeps dying, and after 1 s again once one
        lived a minute; the other workers are left alone.
        """
        s = self.supervisor(2)
        self.ready_all()
        other = self.reactor.processes[0]
        waits = []
        for _ in range(7):
            dying = self.reactor.processes[-1]
            self.assertEqual(dying.argv[-1], "1")
            self.reactor.advance(2)
            dying.exit(signal_number=9)
            self.assertIsNone(s.workers[1])
            count = len(self.reactor.processes)
            wait = [c.getTime() - self.reactor.seconds() for c in self.reactor.getDelayedCalls()]
            waits.append(round(max(wait), 6))
            self.reactor.advance(waits[-1] - 0.01)
            self.assertEqual(len(self.reactor.processes), count)
            self.reactor.advance(0.01)
            self.assertEqual(len(self.reactor.processes), count + 1)
        self.assertEqual(waits, [1, 2, 4, 8, 16, 30, 30])
        self.assertEqual(
            self.logged("died")[0],
            "worker 1 (pid 1001) died: killed by signal 9 (SIGKILL); restarting it in 1 s",
        )
        living = self.reactor.processes[-1]
        living.say(b"ready\n")
        self.reactor.advance(60)
        living.exit(3)
        self.assertEqual(
            self.logged("died")[-1],
            "worker 1 (pid 1008) died: exit status 3; restarting it in 1 s",
        )
        self.assertEqual(other.signals, [])
        self.assertIs(s.workers[0] and s.workers[0].process, other)

    def test_not_ready_in_time(self) -> None:
        """A worker not ready within ready_timeout is killed, and started again."""
        s = self.supervisor(1, ready_timeout=10)
        [p] = self.reactor.processes
        self.reactor.advance(9.9)
        self.assertEqual(p.signals, [])
        self.reactor.advance(0.1)
        self.assertEqual(p.signals, ["KILL"])
        p.say(b"ready\n")  # too late
        self.assertFalse(s.workers[0] and s.workers[0].ready)
        p.exit(signal_number=9)
        self.reactor.advance(1)
        self.assertEqual(len(self.reactor.processes), 2)
        self.assertEqual(
            self.logged("not ready"),
            ["worker 0 (pid 1000) not ready within 10 s: killing it (SIGKILL)"],
        )

    def test_cannot_spawn(self) -> None:
        """A worker that cannot be started at all is tried again after the backoff."""
        self.reactor.refuse = OSError(errno.EAGAIN, "Resource temporarily unavailable")
        s = self.supervisor(1)
        self.assertEqual(s.workers, [None])
        self.assertEqual(
            self.logged("could not"),
            [
                "worker 0 could not be started: Resource temporarily unavailable;"
                " trying again in 1 s"
            ],
        )
        self.reactor.refuse = None
        self.reactor.advance(1)
        self.assertEqual(len(self.reactor.processes), 1)

    def test_stop(self) -> None:
        """
        Stop: SIGTERM to every worker at once (not to one already
        stopping); fires once all have exited; SIGKILL to those still
        running after stop_timeout; no restart after.
        """
        s = self.supervisor(3, stop_timeout=7)
        self.ready_all()
        a, b, c = self.reactor.processes
        c.say(b"stopping\n")
        # A restart pending when the stop comes is not made.
        b.exit(1)
        self.assertEqual(len(self.reactor.getDelayedCalls()), 1)
        d = s.stopService()
        self.assertEqual((a.signals, b.signals, c.signals), (["TERM"], [], []))
        self.assertEqual(self.reactor.getDelayedCalls()[0].getTime(), 7)
        a.exit()
        self.assertNoResult(d)
        self.reactor.advance(7)
        self.assertEqual(c.signals, ["KILL"])
        self.assertNoResult(d)
        c.exit(signal_number=9)
        self.successResultOf(d)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.reactor.advance(60)
        self.assertEqual(len(self.reactor.processes), 3)
        self.assertEqual(
            self.logged("stop|killing"),
            [
                "worker 2 (pid 1002) stopping",
                "stopping 2 workers",
                "worker 0 (pid 1000) stopped: exit status 0",
                "worker 2 (pid 1002) still running 7 s after SIGTERM: killing it (SIGKILL)",
                "worker 2 (pid 1002) stopped: killed by signal 9 (SIGKILL)",
            ],
        )

    def test_reload(self) -> None:
        """
        Reload: the new workers start one at a time, each once the one
        before is ready; once all are ready, every old one gets SIGTERM at
        once (so a drained stream reconnects only to new workers).
        """
        s = self.supervisor(2)
        self.ready_all()
        old0, old1 = self.reactor.processes
        done = s.reload()
        new0 = self.reactor.processes[2]
        self.assertEqual(new0.argv, old0.argv)
        self.assertEqual(len(self.reactor.processes), 3)
        self.assertIs(s.workers[0] and s.workers[0].process, old0)
        new0.say(b"ready\n")
        self.assertIs(s.workers[0] and s.workers[0].process, new0)
        self.assertEqual(old0.signals, [])
        new1 = self.reactor.processes[3]
        self.assertEqual(new1.argv[-1], "1")
        new1.say(b"ready\n")
        self.assertEqual((old0.signals, old1.signals), (["TERM"], ["TERM"]))
        old0.say(b"stopping\n")
        old0.exit()
        self.assertNoResult(done)
        old1.exit()
        self.assertTrue(self.successResultOf(done))
        self.assertEqual([w and w.process for w in s.workers], [new0, new1])
        self.assertEqual(new0.signals + new1.signals, [])
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(
            self.logged("reload"),
            [
                "reload: starting 2 new workers one at a time",
                "reload: new worker 0 ready (pid 1002)",
                "reload: new worker 1 ready (pid 1003)",
                "reload: worker 0 replaced (pid 1000 -> 1002)",
                "reload: worker 1 replaced (pid 1001 -> 1003)",
                "reload done: 2 workers replaced",
            ],
        )

    def test_reload_old_worker_dies_before_retired(self) -> None:
        """An old worker that dies once its new one took the slot is not restarted."""
        s = self.supervisor(2)
        self.ready_all()
        old0, old1 = self.reactor.processes
        done = s.reload()
        self.reactor.processes[2].say(b"ready\n")
        old0.exit(signal_number=11)
        self.assertEqual(len(self.reactor.processes), 4)
        self.reactor.processes[3].say(b"ready\n")
        self.assertEqual((old0.signals, old1.signals), ([], ["TERM"]))
        old1.exit()
        self.assertTrue(self.successResultOf(done))
        self.reactor.advance(60)
        self.assertEqual(len(self.reactor.processes), 4)

    def test_reload_kills_an_old_worker_that_does_not_stop(self) -> None:
        """An old worker still running stop_timeout after its SIGTERM is killed."""
        s = self.supervisor(1, stop_timeout=5)
        self.ready_all()
        [old] = self.reactor.processes
        done = s.reload()
        self.reactor.processes[1].say(b"ready\n")
        self.reactor.advance(5)
        self.assertEqual(old.signals, ["TERM", "KILL"])
        old.exit(signal_number=9)
        self.assertTrue(self.successResultOf(done))

    def test_reload_new_worker_never_ready(self) -> None:
        """A new worker not ready in time is killed, the old one kept, and the reload ends."""
        s = self.supervisor(2, ready_timeout=20)
        self.ready_all()
        old0, old1 = self.reactor.processes
        done = s.reload()
        new0 = self.reactor.processes[2]
        self.reactor.advance(20)
        self.assertEqual(new0.signals, ["KILL"])
        self.assertNoResult(done)
        new0.exit(signal_number=9)
        self.assertFalse(self.successResultOf(done))
        self.assertEqual(old0.signals + old1.signals, [])
        self.assertEqual([w and w.process for w in s.workers], [old0, old1])
        self.assertEqual(len(self.reactor.processes), 3)
        self.reactor.advance(120)
        self.assertEqual(len(self.reactor.processes), 3)
        self.assertEqual(
            self.logged("reload: the new"),
            [
                "reload: the new worker 0 (pid 1002) not ready within 20 s; worker 0 stays pid"
                " 1000; reload stopped with 2 of 2 workers not replaced"
            ],
        )

    def test_reload_new_worker_dies(self) -> None:
        """A new worker that exits before it is ready: the old one kept, the reload ends."""
        s = self.supervisor(2)
        self.ready_all()
        old0, old1 = self.reactor.processes
        done = s.reload()
        self.reactor.processes[2].say(b"ready\n")
        old0.exit()
        new1 = self.reactor.processes[3]
        new1.exit(3)
        self.assertFalse(self.successResultOf(done))
        self.assertEqual(old1.signals, [])
        self.assertIs(s.workers[1] and s.workers[1].process, old1)
        self.assertEqual(
            self.logged("reload: the new"),
            [
                "reload: the new worker 1 (pid 1003) ended before it was ready (exit status 3);"
                " worker 1 stays pid 1001; reload stopped with 1 of 2 workers not replaced"
            ],
        )
        # No restart for the failed new worker, and the next reload starts again.
        self.reactor.advance(60)
        self.assertEqual(len(self.reactor.processes), 4)

    def test_reload_during_reload_is_queued(self) -> None:
        """A reload asked during one runs after it (once, however often it was asked)."""
        s = self.supervisor(1)
        self.ready_all()
        first = s.reload()
        second = s.reload()
        third = s.reload()
        self.assertEqual(len(self.reactor.processes), 2)
        self.reactor.processes[1].say(b"ready\n")
        self.reactor.processes[0].exit()
        self.assertTrue(self.successResultOf(first))
        self.assertEqual(len(self.reactor.processes), 3)
        self.assertNoResult(second)
        self.reactor.processes[2].say(b"ready\n")
        self.reactor.processes[1].exit()
        self.assertTrue(self.successResultOf(second))
        self.assertTrue(self.successResultOf(third))
        self.assertEqual(len(self.reactor.processes), 3)
        self.assertEqual(
            self.logged("asked during"),
            [
                "reload asked during a reload: it starts when this one ends",
                "reload asked during a reload: one is queued already",
            ],
        )

    def test_reload_refused_when_stopped(self) -> None:
        """A reload of a supervisor that is not running does nothing."""
        s = Supervisor(self.reactor, [["w"]], hangup=False)
        self.assertFalse(self.successResultOf(s.reload()))
        self.assertEqual(self.reactor.processes, [])

    def test_stop_during_reload(self) -> None:
        """Stopping during a reload stops every worker, the new ones too; the reload ends."""
        s = self.supervisor(2)
        self.ready_all()
        done = s.reload()
        queued = s.reload()
        processes = list(self.reactor.processes)
        stopped = s.stopService()
        self.assertEqual([p.signals for p in processes], [["TERM"]] * 3)
        for p in processes:
            p.exit()
        self.successResultOf(stopped)
        self.assertFalse(self.successResultOf(done))
        self.assertFalse(self.successResultOf(queued))
        self.assertEqual(len(self.reactor.processes), 3)
        self.assertEqual(self.logged("reload: the new"), [])

    def test_stop_while_an_old_worker_drains(self) -> None:
        """A stop during a reload does not signal again the old workers already told to stop."""
        s = self.supervisor(2)
        self.ready_all()
        s.reload()
        self.reactor.processes[2].say(b"ready\n")
        self.reactor.processes[3].say(b"ready\n")
        stopped = s.stopService()
        self.assertEqual([p.signals for p in self.reactor.processes], [["TERM"]] * 4)
        for p in self.reactor.processes:
            p.exit()
        self.successResultOf(stopped)

    def test_old_worker_dies_during_reload(self) -> None:
        """An old worker that dies while its slot is being replaced is not restarted too."""
        s = self.supervisor(1)
        self.ready_all()
        [old] = self.reactor.processes
        done = s.reload()
        old.exit(signal_number=11)
        self.assertEqual(len(self.reactor.getDelayedCalls()), 2)  # restart, new one's timer
        self.reactor.processes[1].say(b"ready\n")
        self.assertTrue(self.successResultOf(done))
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.reactor.advance(60)
        self.assertEqual(len(self.reactor.processes), 2)
        self.assertIs(s.workers[0] and s.workers[0].process, self.reactor.processes[1])

    def test_cancelled_waiters(self) -> None:
        """A caller that cancelled its wait for a worker does not stop the others' being told."""
        s = self.supervisor(1)
        [p] = self.reactor.processes
        worker = s.workers[0]
        assert worker is not None
        cancelled, kept = worker.when_ended(), worker.when_ended()
        cancelled.cancel()
        self.failureResultOf(cancelled)
        p.exit(1)
        self.assertEqual(self.successResultOf(kept), "exit status 1")

    def test_sighup(self) -> None:
        """SIGHUP reloads while the service runs; its stop puts the old handler back."""
        before = signal.getsignal(signal.SIGHUP)
        s = self.supervisor(1, hangup=True)
        self.ready_all()
        self.assertNotEqual(signal.getsignal(signal.SIGHUP), before)
        os.kill(os.getpid(), signal.SIGHUP)
        self.reactor.advance(0)
        self.assertEqual(len(self.reactor.processes), 2)
        self.assertEqual(self.logged("SIGHUP"), ["SIGHUP: replacing the workers"])
        self.stop(s)
        self.assertEqual(signal.getsignal(signal.SIGHUP), before)


class Reactor:
    """The real reactor, but for C{stop}, which is only recorded."""

    def __init__(self) -> None:
        self.stopped = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(reactor, name)

    def stop(self) -> None:
        self.stopped += 1


class WorkerLinkTests(TestCase):
    """The worker's side: ready and stopping on its pipe; it stops when the supervisor is gone."""

    def pipe(self) -> tuple[int, int]:
        r, w = os.pipe()
        for fd in (r, w):
            self.addCleanup(lambda fd=fd: _close(fd))
        return r, w

    @inlineCallbacks
    def test_ready_and_stopping(self) -> Any:
        """'ready' once the reactor runs, 'stopping' when stopped; each a line."""
        status_r, status_w = self.pipe()
        stdin_r, stdin_w = self.pipe()
        link = WorkerLink(Reactor(), status_w, stdin_r)
        link.startService()
        yield deferLater(reactor, 0, lambda: None)
        self.assertEqual(os.read(status_r, 100), b"ready\n")
        link.stopService()
        self.assertEqual(os.read(status_r, 100), b"stopping\n")

    @inlineCallbacks
    def test_ready_once_until_fires(self) -> Any:
        """With until, 'ready' waits for its Deferred (the broker reaching Redis)."""
        status_r, status_w = self.pipe()
        waited: Deferred[None] = Deferred()
        link = WorkerLink(Reactor(), status_w, None, until=lambda: waited)
        os.set_blocking(status_r, False)
        link.startService()
        self.addCleanup(link.stopService)
        yield deferLater(reactor, 0, lambda: None)
        self.assertRaises(BlockingIOError, os.read, status_r, 100)
        waited.callback(None)
        self.assertEqual(os.read(status_r, 100), b"ready\n")

    @inlineCallbacks
    def test_supervisor_gone(self) -> Any:
        """When the supervisor's end of its pipe closes, the worker stops its reactor."""
        status_r, status_w = self.pipe()
        stdin_r, stdin_w = self.pipe()
        fake = Reactor()
        link = WorkerLink(fake, status_w, stdin_r)
        link.startService()
        self.addCleanup(link.stopService)
        yield deferLater(reactor, 0, lambda: None)
        os.write(stdin_w, b"anything\n")
        yield deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(fake.stopped, 0)
        os.close(stdin_w)
        yield wait_for(lambda: fake.stopped)
        self.assertEqual(fake.stopped, 1)

    @inlineCallbacks
    def test_no_supervisor(self) -> Any:
        """Without the pipe (not started by a supervisor): one warning, no error."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        unused = 1000
        self.assertRaises(OSError, os.fstat, unused)
        link = WorkerLink(Reactor(), unused, None)
        link.startService()
        yield deferLater(reactor, 0, lambda: None)
        link.stopService()
        self.assertEqual(
            [formatEvent(e) for e in events],
            [f"cannot tell the supervisor 'ready' (file descriptor {unused}): Bad file descriptor"],
        )


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


@inlineCallbacks
def wait_for(check: Callable[[], object], timeout: float = 10.0) -> Any:
    """Let the reactor run until C{check()} is true (bounded)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("not within the time")
        yield deferLater(reactor, 0.02, lambda: None)


def standin_argv(port: int, *extra: str, drain: float = 0.3) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tests.standin_worker",
        "--supervised",
        "--drain",
        str(drain),
        "--listen",
        f"tcp:port={port}:interface=127.0.0.1",
        *extra,
    ]


def ask(port: int) -> int:
    """The pid of the worker that answers a new connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return int(data.partition(b"\r\n\r\n")[2].split()[1])


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie (not reaped yet) is gone too.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


class InProcessTests(TestCase):
    """The supervisor in this process, real stand-in workers."""

    timeout = 120

    def start(self, count: int, *extra: str, **kw: Any) -> tuple[Supervisor, int]:
        port = free_port()
        argv = standin_argv(port, *extra)
        env = {**os.environ, "PYTHONPATH": PROJECT}
        kw.setdefault("hangup", False)
        kw.setdefault("stop_timeout", 20)
        s = Supervisor(reactor, [[*argv, "--slot", str(k)] for k in range(count)], env, **kw)
        s.startService()
        self.addCleanup(lambda: s.running and s.stopService())
        return s, port

    @inlineCallbacks
    def test_start_ready_and_serve(self) -> Any:
        """N workers start, say ready, and all serve the port; their output reaches the log."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        s, port = self.start(2, "--say", "hello from a stand-in")
        yield s.when_all_ready()
        pids = {w.pid for w in s.workers if w}
        self.assertEqual(len(pids), 2)
        seen: set[int] = set()
        for _ in range(60):
            pid = yield deferToThreadCall(ask, port)
            seen.add(pid)
        self.assertEqual(seen, pids)
        lines = [formatEvent(e) for e in events]
        yield wait_for(
            lambda: "worker 1: hello from a stand-in" in [formatEvent(e) for e in events]
        )
        self.assertIn("worker 0: hello from a stand-in", [formatEvent(e) for e in events])
        self.assertIn("all 2 workers ready", lines)

    @inlineCallbacks
    def test_killed_worker_restarted(self) -> Any:
        """kill -9 of one worker: it is started again in its slot; the other goes on."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        s, port = self.start(2, backoff=Backoff(first=0.5))
        yield s.when_all_ready()
        first, second = s.workers
        assert first is not None and second is not None
        os.kill(second.pid or 0, signal.SIGKILL)
        yield wait_for(lambda: s.workers[1] not in (None, second) and s.workers[1].ready)
        third = s.workers[1]
        assert third is not None
        self.assertNotEqual(third.pid, second.pid)
        self.assertIs(s.workers[0], first)
        self.assertTrue(gone(second.pid or 0))
        self.assertIn(
            f"worker 1 (pid {second.pid}) died: killed by signal 9 (SIGKILL);"
            " restarting it in 0.5 s",
            [formatEvent(e) for e in events],
        )
        pids = set()
        for _ in range(40):
            pid = yield deferToThreadCall(ask, port)
            pids.add(pid)
        self.assertEqual(pids, {first.pid, third.pid})

    @inlineCallbacks
    def test_reload_keeps_old_when_new_hangs(self) -> Any:
        """A new version that never gets ready: killed, the old workers kept and serving."""
        flag = os.path.abspath(self.mktemp())
        s, port = self.start(2, "--hold-if", flag, ready_timeout=3)
        yield s.when_all_ready()
        old = [w.pid for w in s.workers if w]
        with open(flag, "w"):
            pass
        done = yield s.reload()
        self.assertFalse(done)
        self.assertEqual([w.pid for w in s.workers if w], old)
        pids = set()
        for _ in range(40):
            pid = yield deferToThreadCall(ask, port)
            pids.add(pid)
        self.assertEqual(pids, set(old))

    @inlineCallbacks
    def test_reload_keeps_old_when_new_fails(self) -> Any:
        """A new version that exits at start: the old workers kept."""
        flag = os.path.abspath(self.mktemp())
        s, port = self.start(2, "--fail-if", flag)
        yield s.when_all_ready()
        old = [w.pid for w in s.workers if w]
        with open(flag, "w"):
            pass
        done = yield s.reload()
        self.assertFalse(done)
        self.assertEqual([w.pid for w in s.workers if w], old)


def deferToThreadCall(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
    from twisted.internet.threads import deferToThread

    return deferToThread(f, *args)


class Hammer:
    """
    Opens a connection every few milliseconds from two threads, sends a
    request and reads the answer, until stopped; records every failure
    (refused, reset, no answer).
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.answers: list[int] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(2)]
        for t in self._threads:
            t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.answers.append(ask(self.port))
            except (OSError, ValueError, IndexError) as e:
                self.failures.append(repr(e))
            self._stop.wait(0.003)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)


class TwistdTests(SynchronousTestCase):
    """The supervisor under the real twistd (tests/standin_supervisor.tac)."""

    def run_twistd(
        self,
        count: int,
        extra: list[str] | None = None,
        daemon: bool = False,
        drain: float = 0.3,
        **settings: Any,
    ) -> tuple[subprocess.Popen[bytes] | None, str, int]:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        port = free_port()
        log = os.path.join(directory, "twistd.log")
        env = {
            **os.environ,
            "PYTHONPATH": PROJECT,
            "STANDIN_SUPERVISOR": json.dumps(
                {
                    "workers": count,
                    "argv": standin_argv(port, *(extra or []), drain=drain),
                    **settings,
                }
            ),
        }
        tac = os.path.join(PROJECT, "tests", "standin_supervisor.tac")
        if daemon:
            pidfile = os.path.join(directory, "twistd.pid")
            command = [*twistd_command(), f"--pidfile={pidfile}", f"--logfile={log}", "-y", tac]
            subprocess.run(command, env=env, cwd=directory, check=True, timeout=60)
            self.pidfile = pidfile
            pid = int(wait_until(lambda: _read(pidfile), what="the pid file"))
            self.addCleanup(_kill_and_wait, pid, None)
            process = None
        else:
            command = [*twistd_command(), "-n", "--pidfile=", f"--logfile={log}", "-y", tac]
            process = subprocess.Popen(command, env=env, cwd=directory)
            self.addCleanup(_kill_and_wait, process.pid, process)
        self.log_path = log
        wait_until(lambda: f"all {count} workers ready" in self.log(), 60, self.log)
        return process, log, port

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def pids(self, pattern: str = r"worker \d+ started \(pid (\d+)\)") -> list[int]:
        return [int(p) for p in re.findall(pattern, self.log())]

    def test_sigterm_stops_every_worker(self) -> None:
        """SIGTERM to the supervisor: every worker drains and exits 0, then twistd stops."""
        process, _, port = self.run_twistd(3, stop_timeout=30)
        assert process is not None
        workers = self.pids()
        self.assertEqual(len(workers), 3)
        process.send_signal(signal.SIGTERM)
        # twistd stops cleanly, then re-raises the signal it stopped on.
        self.assertIn(process.wait(60), (0, -signal.SIGTERM))
        self.assertIn("Server Shut Down.", self.log())
        for pid in workers:
            self.assertTrue(gone(pid), pid)
        log = self.log()
        for k, pid in enumerate(workers):
            self.assertIn(f"worker {k} (pid {pid}) stopping", log)
            self.assertIn(f"worker {k} (pid {pid}) stopped: exit status 0", log)
        self.assertNotIn("SIGKILL", log)
        with socket.socket() as probe:
            self.assertEqual(probe.connect_ex(("127.0.0.1", port)), errno.ECONNREFUSED)

    def test_sighup_replaces_without_refusing(self) -> None:
        """
        SIGHUP under a stream of new connections (one every few ms): each
        of two workers replaced once, the old ones gone, and not one
        connection refused, reset or left unanswered during the whole
        reload.
        """
        self.reload_under_load(2)

    def test_sighup_one_worker(self) -> None:
        """With one worker too: the new one listens before the old one stops."""
        self.reload_under_load(1)

    def reload_under_load(self, count: int) -> None:
        process, _, port = self.run_twistd(count, drain=0.5)
        assert process is not None
        old = self.pids()
        hammer = Hammer(port)
        try:
            wait_until(lambda: len(hammer.answers) > 20, what="answers before the reload")
            process.send_signal(signal.SIGHUP)
            wait_until(lambda: "reload done" in self.log(), 60, self.log)
            during = len(hammer.answers)
            wait_until(lambda: len(hammer.answers) > during + 20, what="answers after")
        finally:
            hammer.stop()
        self.assertEqual(hammer.failures, [])
        new = self.pids()[count:]
        self.assertEqual(len(new), count)
        self.assertEqual(set(hammer.answers), set(old) | set(new))
        for pid in old:
            self.assertTrue(gone(pid), pid)
        self.assertEqual(self.log().count("replaced (pid"), count)
        process.send_signal(signal.SIGTERM)
        self.assertIn(process.wait(60), (0, -signal.SIGTERM))

    def test_daemonized_sighup_and_sigusr1(self) -> None:
        """
        Daemonized, twistd leaves SIGHUP to the supervisor (a reload, the
        daemon goes on) and keeps SIGUSR1 for itself (its log file is
        rotated; no reload).
        """
        _, log, port = self.run_twistd(1, daemon=True)
        pid = int(_read(self.pidfile) or 0)
        [old] = self.pids()
        os.kill(pid, signal.SIGUSR1)
        wait_until(lambda: os.path.exists(log + ".1"), what="twistd.log.1")
        os.kill(pid, signal.SIGHUP)
        wait_until(lambda: "reload done" in self.log(), 60, self.log)
        self.assertNotEqual(ask(port), old)
        self.assertEqual(self.log().count("SIGHUP: replacing the workers"), 1)
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: gone(pid), 60, "the daemon's exit")
        self.assertTrue(gone(old))

    def test_supervisor_killed(self) -> None:
        """SIGKILL to the supervisor: its workers see their pipe close and stop by themselves."""
        process, _, port = self.run_twistd(2)
        assert process is not None
        workers = self.pids()
        process.kill()
        process.wait(30)
        wait_until(lambda: all(gone(pid) for pid in workers), 30, "the workers' exit")
        with socket.socket() as probe:
            self.assertEqual(probe.connect_ex(("127.0.0.1", port)), errno.ECONNREFUSED)


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip() or None
    except FileNotFoundError:
        return None


def _kill_and_wait(pid: int, process: subprocess.Popen[bytes] | None) -> None:
    """Cleanup: SIGTERM (the workers stop with it), then wait (SIGKILL if it does not end)."""
    if process is not None and process.poll() is not None:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if process is not None:
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        return
    try:
        wait_until(lambda: gone(pid), 60, "the daemon's exit")
    except AssertionError:
        os.kill(pid, signal.SIGKILL)
