# -*- test-case-name: tests.test_workers_supervisor -*-
"""
The supervisor of C{server.workers}: the process twistd runs starts one
worker process per slot and serves no streams itself.

L{Supervisor} (a service) starts the workers with C{spawnProcess}, learns
from each when it listens, restarts one that dies into its slot (with a
backoff, L{Backoff}), stops them all on SIGTERM, and on C{SIGHUP}
(L{Supervisor.reload}) replaces them: the new workers start one at a
time and listen (C{SO_REUSEPORT}, L{notificator.workers.reuseport}) before
the old ones are told to stop, so the port never closes.  New workers run the
code installed at that moment: the same path upgrades the server.

What a worker and its supervisor say to each other (L{WorkerLink} is the
worker's side):

 - the worker's file descriptor 3 (L{STATUS_FD}) is a pipe to the
   supervisor, on which it writes lines of ASCII: C{ready} once every
   listener of it listens, and C{stopping} when it begins to stop (its
   listeners close, its streams drain).  Anything else is logged and
   ignored;
 - its standard input is a pipe from the supervisor that stays silent:
   when it reads end-of-file the supervisor is gone (killed: a SIGKILL
   leaves it no chance to stop its workers), and the worker stops as on
   SIGTERM, so that no orphan keeps the port or the history;
 - its standard output and error are pipes to the supervisor, which logs
   each line with the slot (C{worker 2: ...}).  Through the supervisor's
   log they reach the one place an operator looks (twistd's log file, or
   the journal), also when twistd has daemonized it (its own standard
   output is then /dev/null), each line saying which worker wrote it.

One log line per event: a worker started, ready, stopping, stopped, died
(with its exit status or signal) and when it restarts.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from types import FrameType
from typing import Any, TypeVar

import attrs
from twisted.application.service import Service
from twisted.internet import abstract, fdesc
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall, IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()
#: The namespace of the lines of the workers' standard output and error,
#: as the supervisor logs them.
RELAYED = "notificator.workers.output"
_relayed = Logger(RELAYED)

#: The worker's file descriptor on which it tells its supervisor how it is.
STATUS_FD = 3
#: Said once every listener of the worker listens.
READY = "ready"
#: Said when the worker begins to stop.
STOPPING = "stopping"
#: The longest line read from a worker (a longer one is cut into pieces).
MAX_LINE = 16384


def workers_for(setting: int | str, cpus: Callable[[], int] | None = None) -> int:
    """
    How many workers C{server.workers} asks for: a number as it is, and
    C{"auto"} one per CPU this process may run on (its CPU affinity, which
    C{taskset} or systemd's C{CPUAffinity=} narrow).

    @param cpus: counts the CPUs (tests); by default
        C{len(os.sched_getaffinity(0))}, or C{os.cpu_count()} where there
        is no affinity.
    @raise ValueError: neither a number of at least 1 nor C{"auto"}.
    """
    if setting == "auto":
        if cpus is not None:
            return max(1, cpus())
        affinity = getattr(os, "sched_getaffinity", None)
        count = len(affinity(0)) if affinity is not None else os.cpu_count()
        return max(1, count or 1)
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
        raise ValueError(
            f'server.workers: expected a number of at least 1 or "auto", got {setting!r}'
        )
    return setting


def describe_exit(reason: Failure) -> str:
    """C{"exit status 0"}, C{"killed by signal 9 (SIGKILL)"}: how a process ended."""
    number = getattr(reason.value, "signal", None)
    if number:
        try:
            name = signal.Signals(number).name
        except ValueError:
            return f"killed by signal {number}"
        return f"killed by signal {number} ({name})"
    return f"exit status {getattr(reason.value, 'exitCode', None)}"


@attrs.frozen
class Backoff:
    """
    How long to wait before starting again a process that died: C{first}
    seconds, twice as long after each death that comes soon after the
    last start, at most C{most}; C{first} again after a process that lived
    C{reset_after} seconds.
    """

    first: float = 1.0
    most: float = 30.0
    reset_after: float = 60.0

    def after(self, previous: float | None, lived: float) -> float:
        """The wait after a death, given the one before (L{None}: none) and how long it lived."""
        if previous is None or lived >= self.reset_after:
            return self.first
        return min(previous * 2, self.most)


_T = TypeVar("_T")


def fire_all(waiting: Sequence[Deferred[_T]], result: _T) -> None:
    """Fire each of C{waiting} with C{result}, but one its caller cancelled already."""
    for d in waiting:
        if not d.called:
            d.callback(result)


#: The waits of L{Supervisor} and of the private Redis by default.
BACKOFF = Backoff()


def printable(data: bytes) -> str:
    """A line of a child's output for the log: UTF-8, control characters escaped."""
    text = data.decode("utf-8", "replace").rstrip("\r")
    return "".join(c if c >= " " or c == "\t" else f"\\x{ord(c):02x}" for c in text)


class Lines:
    """Cuts a byte stream into lines (without their end), none longer than C{limit}."""

    def __init__(self, deliver: Callable[[bytes], None], limit: int = MAX_LINE) -> None:
        self._deliver = deliver
        self._limit = limit
        self._buffer = b""

    def feed(self, data: bytes) -> None:
        """More of the stream: deliver each line it completes."""
        buffer = self._buffer + data
        while True:
            end = buffer.find(b"\n", 0, self._limit + 1)
            if end < 0:
                if len(buffer) <= self._limit:
                    break
                end = self._limit
                line, buffer = buffer[:end], buffer[end:]
            else:
                line, buffer = buffer[:end], buffer[end + 1 :]
            self._deliver(line)
        self._buffer = buffer

    def close(self) -> None:
        """The stream ended: deliver what is left of a last line."""
        if self._buffer:
            line, self._buffer = self._buffer, b""
            self._deliver(line)


class Worker:
    """
    One worker process, in its slot.

    @ivar slot: its slot (0 ... workers - 1).
    @ivar pid: its process id.
    @ivar started: when it was started (the reactor's clock).
    @ivar ready: it said L{READY}.
    @ivar stopping: it said L{STOPPING}.
    @ivar asked_to_stop: the supervisor stopped it (SIGTERM): its end is no death.
    @ivar how: how it ended (L{describe_exit}); L{None} while it runs.
    """

    def __init__(self, slot: int, started: float) -> None:
        self.slot = slot
        self.started = started
        self.pid: int | None = None
        self.process: IProcessTransport | None = None
        self.ready = False
        self.stopping = False
        self.asked_to_stop = False
        self.timed_out = False
        self.how: str | None = None
        self.timer: IDelayedCall | None = None
        self._readiness: list[Deferred[bool]] = []
        self._ends: list[Deferred[str]] = []

    def __repr__(self) -> str:
        return f"<Worker {self.slot} pid {self.pid}>"

    @property
    def ended(self) -> bool:
        """It has exited (and the supervisor has seen it)."""
        return self.how is not None

    def when_ready(self) -> Deferred[bool]:
        """Fires with C{True} once it is ready, C{False} if it ends before."""
        if self.ready or self.ended:
            return succeed(self.ready)
        d: Deferred[bool] = Deferred()
        self._readiness.append(d)
        return d

    def when_ended(self) -> Deferred[str]:
        """Fires with how it ended (L{describe_exit}) once it has."""
        if self.how is not None:
            return succeed(self.how)
        d: Deferred[str] = Deferred()
        self._ends.append(d)
        return d

    def signal(self, name: str) -> bool:
        """Send it a signal (C{"TERM"}, C{"KILL"}); C{False} if it has exited already."""
        if self.process is None or self.ended:
            return False
        try:
            self.process.signalProcess(name)
        except (ProcessExitedAlready, OSError):
            return False
        return True

    def _is_ready(self) -> None:
        self.ready = True
        waiting, self._readiness = self._readiness, []
        fire_all(waiting, True)

    def _has_ended(self, how: str) -> None:
        self.how = how
        waiting, self._readiness = self._readiness, []
        fire_all(waiting, False)
        ends, self._ends = self._ends, []
        fire_all(ends, how)


class _WorkerProtocol(ProcessProtocol):
    """Hands what a worker says and its end to its supervisor."""

    def __init__(self, supervisor: Supervisor, worker: Worker) -> None:
        self._supervisor = supervisor
        self._worker = worker
        self._lines = {
            1: Lines(lambda line: supervisor._output(worker, line, error=False)),
            2: Lines(lambda line: supervisor._output(worker, line, error=True)),
            STATUS_FD: Lines(lambda line: supervisor._status(worker, line), limit=64),
        }
        for fd, write in supervisor.outputs.items():
            self._lines[fd] = Lines(partial(write, worker.slot))

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        lines = self._lines.get(childFD)
        if lines is not None:
            lines.feed(data)

    def childConnectionLost(self, childFD: int) -> None:
        lines = self._lines.get(childFD)
        if lines is not None:
            lines.close()

    def processEnded(self, reason: Failure) -> None:
        self._supervisor._ended(self._worker, reason)


class Supervisor(Service):
    """
    Runs one worker process per slot (see the module docstring).

    @ivar workers: per slot, the worker that serves it (L{None} while it
        is being restarted).
    """

    def __init__(
        self,
        reactor: Any,
        commands: Sequence[Sequence[str]],
        env: Mapping[str, str] | None = None,
        path: str | None = None,
        ready_timeout: float = 60.0,
        stop_timeout: float = 30.0,
        backoff: Backoff = BACKOFF,
        hangup: bool = True,
        outputs: Mapping[int, Callable[[int, bytes], None]] | None = None,
    ) -> None:
        """
        @param reactor: an C{IReactorProcess} and C{IReactorTime}.
        @param commands: per slot, the worker's argv (its first item the
            program, looked up on the C{PATH} of C{env}).
        @param env: the workers' environment; L{None}: this process's.
        @param path: the workers' working directory; L{None}: this one's.
            Leave it L{None} where it can be: Twisted then starts them with
            C{posix_spawn}; for another directory it forks first, and a
            signal that reaches a worker between the fork and the C{exec}
            is lost (a stop then waits C{stop_timeout} for it).
        @param ready_timeout: a worker not ready this many seconds after
            it started is killed (and started again; during a reload, the
            old one is kept).
        @param stop_timeout: a worker still running this many seconds after
            SIGTERM is killed (SIGKILL): give its drain
            (C{sse.drainSeconds}) and a margin.
        @param backoff: the waits before a worker that died starts again.
        @param hangup: install a C{SIGHUP} handler that calls L{reload}
            while the service runs.
        @param outputs: more pipes from each worker, by its file descriptor
            there (above L{STATUS_FD}): each line read on one (without its
            end) is handed to its function with the worker's slot (the
            lines of the worker's log files,
            L{notificator.workers.logs}).
        """
        if not commands:
            raise ValueError("no worker to supervise")
        self._reactor = reactor
        self._commands = [list(argv) for argv in commands]
        self._env = env
        self._path = path
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.backoff = backoff
        self._hangup = hangup
        self.outputs: Mapping[int, Callable[[int, bytes], None]] = dict(outputs or {})
        self._previous_hangup: Any = None
        self._hangup_installed = False
        self.workers: list[Worker | None] = [None] * len(self._commands)
        self._alive: set[Worker] = set()
        self._restarts: dict[int, IDelayedCall] = {}
        self._delays: dict[int, float] = {}
        self._all_ready: list[Deferred[None]] | None = []
        self._reloading: Deferred[bool] | None = None
        self._queued: list[Deferred[bool]] | None = None

    # -- start and stop ---------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        if self._hangup:
            self._previous_hangup = signal.signal(signal.SIGHUP, self._on_hangup)
            self._hangup_installed = True
        log.info("starting {count} workers", count=len(self.workers))
        for slot in range(len(self.workers)):
            self.workers[slot] = self._spawn(slot)

    def when_all_ready(self) -> Deferred[None]:
        """Fires once every slot's first worker is ready."""
        waiting = self._all_ready
        if waiting is None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        waiting.append(d)
        return d

    def stopService(self) -> Deferred[None]:
        """
        SIGTERM to every worker at once (but one that said L{STOPPING} or
        was told to stop already), SIGKILL to those still running after C{stop_timeout}
        seconds; fires when every worker has exited.
        """
        super().stopService()
        if self._hangup_installed:
            self._hangup_installed = False
            previous = self._previous_hangup
            signal.signal(signal.SIGHUP, signal.SIG_DFL if previous is None else previous)
        for call in self._restarts.values():
            call.cancel()
        self._restarts.clear()
        queued, self._queued = self._queued, None
        fire_all(queued or [], False)
        alive = sorted(self._alive, key=lambda w: (w.slot, w.started))
        if not alive:
            return succeed(None)
        log.info("stopping {count} workers", count=len(alive))
        for worker in alive:
            # Once is enough (a second SIGTERM makes twistd log an error).
            if not (worker.stopping or worker.asked_to_stop):
                worker.signal("TERM")
            worker.asked_to_stop = True
        killer = self._reactor.callLater(self.stop_timeout, self._kill, alive)
        ends = gatherResults([w.when_ended() for w in alive])

        def done(_: object) -> None:
            if killer.active():
                killer.cancel()

        return ends.addCallback(done)

    def _kill(self, workers: Sequence[Worker]) -> None:
        for worker in workers:
            if not worker.ended:
                log.warn(
                    "worker {slot} (pid {pid}) still running {seconds:g} s after SIGTERM:"
                    " killing it (SIGKILL)",
                    slot=worker.slot,
                    pid=worker.pid,
                    seconds=self.stop_timeout,
                )
                worker.signal("KILL")

    # -- one worker -------------------------------------------------------------

    def _spawn(self, slot: int, again: bool = True) -> Worker | None:
        """
        Start a worker for C{slot}; L{None} if it could not be (and, with
        C{again}, try again after a backoff).
        """
        worker = Worker(slot, self._reactor.seconds())
        argv = self._commands[slot]
        env = dict(os.environ if self._env is None else self._env)
        try:
            process = self._reactor.spawnProcess(
                _WorkerProtocol(self, worker),
                argv[0],
                argv,
                env=env,
                path=self._path,
                childFDs={
                    0: "w",
                    1: "r",
                    2: "r",
                    STATUS_FD: "r",
                    **dict.fromkeys(self.outputs, "r"),
                },
            )
        except OSError as e:
            if not again:
                log.error(
                    "worker {slot} could not be started: {reason}",
                    slot=slot,
                    reason=e.strerror or str(e),
                )
                return None
            delay = self._next_delay(slot, 0.0)
            log.error(
                "worker {slot} could not be started: {reason}; trying again in {delay:g} s",
                slot=slot,
                reason=e.strerror or str(e),
                delay=delay,
            )
            self._restarts[slot] = self._reactor.callLater(delay, self._restart, slot)
            return None
        worker.process = process
        worker.pid = process.pid
        self._alive.add(worker)
        worker.timer = self._reactor.callLater(self.ready_timeout, self._not_ready, worker)
        log.info("worker {slot} started (pid {pid})", slot=slot, pid=worker.pid)
        return worker

    def _next_delay(self, slot: int, lived: float) -> float:
        delay = self.backoff.after(self._delays.get(slot), lived)
        self._delays[slot] = delay
        return delay

    def _restart(self, slot: int) -> None:
        self._restarts.pop(slot, None)
        if self.running and self.workers[slot] is None:
            self.workers[slot] = self._spawn(slot)

    def _not_ready(self, worker: Worker) -> None:
        worker.timer = None
        if worker.ready or worker.ended:
            return
        worker.timed_out = True
        log.warn(
            "worker {slot} (pid {pid}) not ready within {seconds:g} s: killing it (SIGKILL)",
            slot=worker.slot,
            pid=worker.pid,
            seconds=self.ready_timeout,
        )
        worker.signal("KILL")

    def _status(self, worker: Worker, line: bytes) -> None:
        word = line.strip().decode("ascii", "replace")
        if word == READY and not worker.ready and not worker.timed_out:
            if worker.timer is not None:
                worker.timer.cancel()
                worker.timer = None
            log.info("worker {slot} ready (pid {pid})", slot=worker.slot, pid=worker.pid)
            worker._is_ready()
            self._check_all_ready()
        elif word == STOPPING and not worker.stopping:
            worker.stopping = True
            log.info("worker {slot} (pid {pid}) stopping", slot=worker.slot, pid=worker.pid)
        elif word not in (READY, STOPPING) and word:
            log.warn(
                'worker {slot} (pid {pid}) said "{line}" on its status pipe: ignored',
                slot=worker.slot,
                pid=worker.pid,
                line=printable(line),
            )

    def _check_all_ready(self) -> None:
        waiting = self._all_ready
        if waiting is None or not all(w is not None and w.ready for w in self.workers):
            return
        self._all_ready = None
        log.info("all {count} workers ready", count=len(self.workers))
        fire_all(waiting, None)

    def _output(self, worker: Worker, line: bytes, error: bool) -> None:
        emit = _relayed.warn if error else _relayed.info
        emit("worker {slot}: {line}", slot=worker.slot, line=printable(line), pid=worker.pid)

    def _ended(self, worker: Worker, reason: Failure) -> None:
        how = describe_exit(reason)
        self._alive.discard(worker)
        if worker.timer is not None:
            worker.timer.cancel()
            worker.timer = None
        slot = worker.slot
        current = self.workers[slot] is worker
        if current:
            self.workers[slot] = None
        if worker.asked_to_stop or not self.running:
            log.info("worker {slot} (pid {pid}) stopped: {how}", slot=slot, pid=worker.pid, how=how)
        elif current:
            delay = self._next_delay(slot, self._reactor.seconds() - worker.started)
            log.warn(
                "worker {slot} (pid {pid}) died: {how}; restarting it in {delay:g} s",
                slot=slot,
                pid=worker.pid,
                how=how,
                delay=delay,
            )
            self._restarts[slot] = self._reactor.callLater(delay, self._restart, slot)
        # (A replacement that ends during a reload: the reload says so.)
        worker._has_ended(how)

    # -- reload -----------------------------------------------------------------

    def _on_hangup(self, number: int, frame: FrameType | None) -> None:
        # A signal handler: hand over to the reactor's thread and loop.
        self._reactor.callFromThread(self._hung_up)

    def _hung_up(self) -> None:
        if self.running:
            log.info("SIGHUP: replacing the workers")
            self.reload()

    def reload(self) -> Deferred[bool]:
        """
        Replace the workers: start the new worker of each slot, one at a
        time, each once the one before is ready (it listens), so a new
        version that cannot start stops the reload at its first worker;
        then SIGTERM every old worker that was replaced, at once (SIGKILL
        after C{stop_timeout}), and wait until they have exited.

        The old workers stop only once every new one listens: an old one
        stops listening first (its connections go to the others), then
        ends its streams, whose browsers reconnect to the new workers
        only, so each stream reconnects once.  (Replacing the slots one
        after the other would send some streams of the first old worker to
        an old worker that is replaced later, and they would reconnect
        twice.)  For the moment between, the host runs both generations.

        A new worker that is not ready within C{ready_timeout} (or ends
        before) is killed, the old one of its slot and of the slots after
        kept, those before it replaced, and the reload ends there.  A
        reload asked for during one starts when it ends (one is queued;
        more are the same one).

        @return: fires with C{True} once every slot was replaced, C{False}
            when the reload ended early or was refused.
        """
        if not self.running:
            log.warn("reload refused: the workers are not running")
            return succeed(False)
        if self._reloading is not None:
            if self._queued is None:
                self._queued = []
                log.info("reload asked during a reload: it starts when this one ends")
            else:
                log.info("reload asked during a reload: one is queued already")
            d: Deferred[bool] = Deferred()
            self._queued.append(d)
            return d
        reloading = self._reloading = Deferred.fromCoroutine(self._replace_all())
        result: Deferred[bool] = Deferred()
        reloading.addBoth(self._reloaded, result)
        return result

    def _reloaded(self, outcome: bool | Failure, result: Deferred[bool]) -> None:
        self._reloading = None
        if isinstance(outcome, Failure):
            log.failure("reload failed", outcome)
            outcome = False
        fire_all([result], outcome)
        queued, self._queued = self._queued, None
        if queued and self.running:
            self.reload().addCallback(lambda done: fire_all(queued, done))

    async def _replace_all(self) -> bool:
        count = len(self.workers)
        log.info("reload: starting {count} new workers one at a time", count=count)
        replaced: list[tuple[int, Worker | None, Worker]] = []
        for slot in range(count):
            if not self.running:
                return False
            old = self.workers[slot]
            new = await self._start_new(slot, count)
            if new is None:
                break
            replaced.append((slot, old, new))
        if not self.running:
            return False
        await self._retire(replaced)
        if len(replaced) < count:
            return False
        log.info("reload done: {count} workers replaced", count=count)
        return True

    async def _start_new(self, slot: int, count: int) -> Worker | None:
        """
        Start the new worker of C{slot} and wait until it is ready; then it
        takes the slot.  L{None} (and the reason logged) if it could not be
        started or was not ready.
        """
        old = self.workers[slot]
        new = self._spawn(slot, again=False)
        if new is None:
            log.warn(
                "reload stopped with {left} of {count} workers not replaced",
                left=count - slot,
                count=count,
            )
            return None
        ready = await new.when_ready()
        if not self.running:
            return None
        if not ready:
            reason = (
                f"not ready within {self.ready_timeout:g} s"
                if new.timed_out
                else f"ended before it was ready ({new.how})"
            )
            log.warn(
                "reload: the new worker {slot} (pid {pid}) {reason}; worker {slot} stays pid"
                " {old}; reload stopped with {left} of {count} workers not replaced",
                slot=slot,
                pid=new.pid,
                reason=reason,
                old=old.pid if old is not None else None,
                left=count - slot,
                count=count,
            )
            if not new.ended:
                new.asked_to_stop = True
                new.signal("KILL")
                await new.when_ended()
            return None
        # The new worker listens: it takes the slot (the old one, still
        # serving until it is retired, is no longer restarted if it dies).
        restart = self._restarts.pop(slot, None)
        if restart is not None:
            restart.cancel()
        self._delays.pop(slot, None)
        self.workers[slot] = new
        log.info("reload: new worker {slot} ready (pid {pid})", slot=slot, pid=new.pid)
        return new

    async def _retire(self, replaced: Sequence[tuple[int, Worker | None, Worker]]) -> None:
        """SIGTERM the old workers of C{replaced} at once; wait until each has exited."""
        old = [w for _, w, _ in replaced if w is not None and not w.ended]
        for worker in old:
            if not (worker.stopping or worker.asked_to_stop):
                worker.signal("TERM")
            worker.asked_to_stop = True
        killer = self._reactor.callLater(self.stop_timeout, self._kill, old)
        await gatherResults([w.when_ended() for w in old])
        if killer.active():
            killer.cancel()
        for slot, before, new in replaced:
            log.info(
                "reload: worker {slot} replaced (pid {old} -> {new})",
                slot=slot,
                old=before.pid if before is not None else None,
                new=new.pid,
            )


class _Pipe(abstract.FileDescriptor):
    """Reads (and drops) what comes on a pipe; calls C{gone} at its end."""

    def __init__(self, reactor: Any, fd: int, gone: Callable[[], None]) -> None:
        super().__init__(reactor)
        self._fd = fd
        self._gone = gone
        fdesc.setNonBlocking(fd)

    def fileno(self) -> int:
        return self._fd

    def doRead(self) -> Any:
        return fdesc.readFromFD(self._fd, lambda data: None)

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self._gone()

    def logPrefix(self) -> str:
        return "supervisor pipe"


class WorkerLink(Service):
    """
    The worker's side of the supervisor's protocol (see the module
    docstring): make it the last child of the worker's service tree, so
    that its start comes after every listener's, and its stop (L{STOPPING})
    before any other.  It says L{READY} once the reactor runs.

    @param status_fd: the pipe to tell on (L{STATUS_FD}).
    @param watch_fd: the pipe from the supervisor whose end means it is
        gone (standard input); L{None}: none is watched.
    @param until: called once the reactor runs: L{READY} is said when the
        Deferred it returns fires (the worker's broker reaches Redis, so a
        publish it takes is not refused); L{None}: at once.
    """

    def __init__(
        self,
        reactor: Any,
        status_fd: int = STATUS_FD,
        watch_fd: int | None = 0,
        until: Callable[[], Deferred[None]] | None = None,
    ) -> None:
        self._reactor = reactor
        self._status_fd = status_fd
        self._watch_fd = watch_fd
        self._until = until
        self._pipe: _Pipe | None = None
        self._warned = False

    def startService(self) -> None:
        super().startService()
        # Once the reactor runs (twistd starts the services before): it has
        # its SIGTERM handler then, so a worker that said it is ready drains
        # when told to stop.
        self._reactor.callWhenRunning(self._started)

    def _started(self) -> None:
        if not self.running:
            return
        if self._watch_fd is not None:
            self._pipe = _Pipe(self._reactor, self._watch_fd, self._supervisor_gone)
            self._pipe.startReading()
        if self._until is None:
            self._tell(READY)
        else:
            self._until().addCallback(self._ready)

    def _ready(self, _: object) -> None:
        if self.running:
            self._tell(READY)

    def stopService(self) -> None:
        super().stopService()
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            pipe.stopReading()
        self._tell(STOPPING)

    def _tell(self, word: str) -> None:
        try:
            os.write(self._status_fd, word.encode("ascii") + b"\n")
        except OSError as e:
            if not self._warned:
                self._warned = True
                log.warn(
                    "cannot tell the supervisor {word!r} (file descriptor {fd}): {reason}",
                    word=word,
                    fd=self._status_fd,
                    reason=e.strerror or str(e),
                )

    def _supervisor_gone(self) -> None:
        if self._pipe is None or not self.running:
            return
        self._pipe = None
        log.warn("the supervisor is gone (its pipe closed): stopping")
        self._reactor.stop()
