# -*- test-case-name: tests.test_broker_local -*-
"""
Brokers: what gives a notification its event id, records it in the
history and hands its frame to the L{Hub}, and what answers a
reconnecting stream with what it missed.

The web layer sees only the L{Broker} interface, whose answers are
Deferreds, so a broker may answer at once (L{LocalBroker}: one process,
ids from the clock, history in memory and in an embedded journal) or
after a round trip (the Redis broker of cluster mode).  Nothing but a
broker knows whether there is one node or many.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any, Protocol

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from notificator.config import HistoryConfig
from notificator.events import SEQ_SPAN, EventIds, Message, encode_frame, event_key
from notificator.history import History, HistoryFile, Replay
from notificator.hub import Hub
from notificator.stats import Stats


@attrs.frozen
class Published:
    """
    The outcome of a publish.

    @ivar event_id: the id the notification was given.
    @ivar delivered: the open streams of the user it was written to (on
        this node).
    @ivar nodes: in cluster mode, how many nodes received it; else L{None}.
    """

    event_id: str
    delivered: int
    nodes: int | None = None


class Unavailable(Exception):
    """
    The broker cannot record a notification now (cluster mode: Redis is
    down).  The publisher gets a 503 with C{str()} as the reason.
    """


#: The replay where no history is kept (C{sse.history.size} 0): nothing, and
#: nothing to say about it.
NO_REPLAY = Replay(True)


class Broker(Protocol):
    """What the web layer asks of a broker."""

    def publish(self, message: Message) -> Published | Deferred[Published]:
        """
        Give C{message} its event id, record it, and deliver its frame to
        every open stream of its user.  The outcome at once when the
        broker knows it (one node: the web layer then answers in the same
        call, without a Deferred's cost on the busiest path), else a
        Deferred that fires once recorded and fails with L{Unavailable}
        when it cannot be recorded.
        """

    def replay(self, user_id: str, last_event_id: str) -> Deferred[Replay]:
        """
        What a stream of C{user_id} that last saw C{last_event_id} missed.
        The caller attaches the stream with these frames in the callback
        (L{Hub.attach}), synchronously: the broker guarantees that no
        notification of the user is delivered between the answer and that
        callback, and that those delivered while it was waiting are in
        the frames.
        """

    def health(self) -> str | None:
        """L{None} when the broker can record notifications, else why not."""

    #: The name of this node (C{cluster.node}), which C{/health} and
    #: C{/users} show, so that one can tell which node answered.
    node: str


class LocalBroker(Service):
    """
    The broker of a single node: event ids from the clock (always after
    the kept history's last), a L{History} in memory, and, given a
    L{Journal} (C{makeService} makes one where L{tap.history_directory}
    says), that history kept on disk across restarts.  Publishing
    answers at once.

    A C{history.size} of 0 keeps no history: reconnects get nothing.
    """

    def __init__(
        self,
        hub: Hub,
        stats: Stats,
        clock: IReactorTime,
        history: HistoryConfig,
        journal: Journal | None = None,
        node: str | None = None,
    ) -> None:
        # Named as before the move to notificator.broker.local: the
        # namespace is part of every log line (issue 18 changes none).
        self.log = Logger("notificator.broker.LocalBroker", self)
        self.node = node if node is not None else socket.gethostname()
        self._hub = hub
        self._stats = stats
        self._clock = clock
        self.history: History | None = None
        if history.size > 0:
            self.history = History(
                clock,
                size=history.size,
                ttl=history.ttl,
                max_bytes=history.max_bytes,
                known_since=_now_key(clock),
            )
        self.journal = journal if self.history is not None else None
        self._ids = EventIds(clock)

    def startService(self) -> None:
        history = self.history
        if self.journal is not None and history is not None:
            self.journal.start(history)
        if history is not None:
            self._ids = EventIds(self._clock, after=history.last)
        super().startService()

    def stopService(self) -> Deferred[None] | None:
        """Write the history to disk (a snapshot), when it is kept there."""
        super().stopService()
        if self.journal is not None:
            return self.journal.stop()
        return None

    def publish(self, message: Message) -> Published:
        ids = self._ids
        event_id = ids.next()
        frame = encode_frame(message.event, message.data, event_id)
        history = self.history
        if history is not None:
            user_id = message.user_id
            now = self._clock.seconds()
            history.append(user_id, ids.last, frame, now)
            journal = self.journal
            if journal is not None:
                journal.record(user_id, ids.last, frame, now)
        delivered = self._hub.deliver(message.user_id, frame)
        self._stats.published += 1
        return Published(event_id, delivered)

    def replay(self, user_id: str, last_event_id: str) -> Deferred[Replay]:
        if self.history is None:
            return succeed(NO_REPLAY)
        return succeed(self.history.since(user_id, event_key(last_event_id)))

    def health(self) -> str | None:
        return None


def _now_key(clock: IReactorTime) -> int:
    return int(clock.seconds() * 1000) * SEQ_SPAN


class Journal:
    """
    Keeps a L{History} on disk (a L{HistoryFile}) without blocking the
    reactor: what is published is collected and handed, every
    C{interval} seconds, to the file's writer thread (C{run}: a function
    that runs a callable there and returns a Deferred), which appends and
    fsyncs it.  When what was appended since the last snapshot is more
    than that snapshot's size plus L{COMPACT_MARGIN} (the file is more
    than twice its size after the snapshot, plus the margin), the writer
    replaces it with a new snapshot (encoded on the writer thread too).
    So the file stays within about twice its last snapshot (the history
    as it was on disk) plus the margin, each snapshot is paid for by at
    least as many bytes appended before it, and a history that sits at its
    memory bound is not rewritten again and again, whatever its memory is
    to its size on disk (the file repeats the user id in each record).  On
    stop, a last snapshot is written, marked clean.

    When the disk fails (full, read-only, I/O errors), what was to be
    written waits in memory until a write that holds it succeeds, and
    nothing published meanwhile is missing once the disk works again:
     - a failed append is tried again, after L{RETRY_FIRST} seconds, then
       twice as long after each failure in a row, up to L{RETRY_MAX};
     - a compaction whose snapshot fails (a disk with room for appends but
       not for a new copy) appends instead, and is tried again on the same
       schedule of its own, so a failing disk is not rewritten every tick;
     - what waits is bounded by the history's own memory bound
       (C{maxBytes}); past it, it is let go and the next write is a
       snapshot, which holds everything the history keeps (as does one
       after a start whose first snapshot failed).
    Each change (failing, working again, compaction failing, compacting
    again) is one log line, not one per try.

    What a C{SIGKILL} or a power loss can lose: the notifications of the
    last C{interval} seconds, not yet written (while the disk fails, all
    those since it failed); and since the journal then does not end clean,
    the next start cannot know what it lost, so every reconnecting client
    gets a reset (with everything kept).

    @param run: runs a callable with arguments on the writer thread and
        returns a Deferred of its result (C{deferToThreadPool}, curried).
    """

    #: Bytes appended beyond a snapshot's own size before the next one.
    COMPACT_MARGIN = 1 << 20

    #: Seconds to wait after a failed write before the next try; the wait
    #: doubles after each failure in a row, up to L{RETRY_MAX}.
    RETRY_FIRST = 1.0
    RETRY_MAX = 60.0

    def __init__(
        self,
        file: HistoryFile,
        clock: IReactorTime,
        run: Callable[..., Deferred[Any]],
        interval: float = 0.2,
    ) -> None:
        # Named as before the move to notificator.broker.local: the
        # namespace is part of every log line (issue 18 changes none).
        self.log = Logger("notificator.broker.Journal", self)
        self.file = file
        self._clock = clock
        self._run = run
        self.interval = interval
        self._pending: list[tuple[str, int, bytes, float]] = []
        self._writing = False
        self._idle: list[Deferred[None]] = []
        self._timer: LoopingCall | None = None
        self._history: History | None = None
        #: Failed writes in a row, and when the next may be tried.
        self._failures = 0
        self._retry_at = 0.0
        #: Failed compactions in a row, and when the next may be tried.
        self._compact_failures = 0
        self._compact_at = 0.0
        #: What waited was let go: only a snapshot makes the journal whole.
        self._let_go = False
        #: Frame bytes of the first C{_counted} entries of C{_pending}
        #: (counted only while the disk fails).
        self._counted = 0
        self._pending_bytes = 0

    @property
    def waiting(self) -> int:
        """How many recorded notifications wait to be written."""
        return len(self._pending)

    def start(self, history: History) -> None:
        """
        Load what the file kept into C{history} (at start-up, before
        serving: blocking is fine), write a fresh snapshot, and start
        appending.  If that snapshot fails, the server serves all the
        same (from memory) and the snapshot is tried again as a failed
        write is.
        """
        self._history = history
        now_key = history.known_since
        loaded = self.file.load()
        if loaded is not None:
            history.load(loaded)
            if not loaded.clean:
                # Killed: what it lost is unknown, so nothing before now is known.
                history.known_since = max(now_key, history.known_since)
                self.log.warn(
                    "history in {path} was not closed cleanly (killed?): reconnecting"
                    " clients get a reset with everything kept",
                    path=self.file.path,
                )
            self.log.info(
                "history loaded from {path}: {frames} notifications of {users} users",
                path=self.file.path,
                frames=len(history),
                users=history.user_count,
            )
        try:
            self.file.write_snapshot(history.state())
        except Exception:
            self._failed(Failure())
        self._timer = LoopingCall(self.flush)
        self._timer.clock = self._clock
        self._timer.start(self.interval, now=False)

    def record(self, user_id: str, key: int, frame: bytes, when: float) -> None:
        # Encoded by the writer thread, in the next flush.
        self._pending.append((user_id, key, frame, when))

    def flush(self) -> None:
        """Hand what was recorded to the writer; compact when it has grown."""
        if self._writing:
            return  # the next tick takes what came meanwhile
        history = self._history
        if history is None:
            return
        file = self.file
        if self._let_go or not file.appendable:
            # The next write is a snapshot: it holds everything waiting.
            self._take()
        if self._failures:
            self._bound(history.max_bytes)
            if self._clock.seconds() < self._retry_at:
                return
        if self._let_go or not file.appendable:
            self._snapshot(history)
        elif (
            file.size > 2 * file.snapshot_size + self.COMPACT_MARGIN
            and self._clock.seconds() >= self._compact_at
        ):
            self._compact(history)
        elif self._pending:
            self._append()

    def _bound(self, max_bytes: int) -> None:
        """While the disk fails: let what waits go once its frames are over C{max_bytes}."""
        pending = self._pending
        total = self._pending_bytes
        for entry in pending[self._counted :]:
            total += len(entry[2])
        self._counted, self._pending_bytes = len(pending), total
        if total > max_bytes:
            self._pending = []
            self._counted = self._pending_bytes = 0
            if not self._let_go:
                self._let_go = True
                self.log.warn(
                    "history: more than {bytes} bytes wait to be written to {path};"
                    " it will be written whole (a snapshot) once the disk works",
                    bytes=max_bytes,
                    path=self.file.path,
                )

    def _take(self) -> list[tuple[str, int, bytes, float]]:
        taken, self._pending = self._pending, []
        self._counted = self._pending_bytes = 0
        return taken

    def _give_back(self, taken: list[tuple[str, int, bytes, float]]) -> None:
        """What a failed write held waits again, first (it was recorded first)."""
        if not self._let_go:
            self._pending[:0] = taken
            self._counted = self._pending_bytes = 0

    def _append(self) -> None:
        entries = self._take()

        def done(failure: Failure | None) -> None:
            if failure is None:
                self._succeeded()
            else:
                self._give_back(entries)
                self._failed(failure)

        self._write(done, self.file.append_entries, entries)

    def _snapshot(self, history: History) -> None:
        """A snapshot that must be written (it is all that can be): its failure is a write's."""
        taken = self._take()  # all in the snapshot

        def done(failure: Failure | None) -> None:
            if failure is None:
                self._let_go = False
                self._compacted()
                self._succeeded()
            else:
                self._give_back(taken)
                self._failed(failure)

        self._write(done, self.file.write_snapshot, history.state())

    def _compact(self, history: History) -> None:
        """A snapshot in place of appending; if it fails, what it held is appended instead."""
        taken = self._take()

        def done(failure: Failure | None) -> None:
            if failure is None:
                self._compacted()
                self._succeeded()
                return
            self._give_back(taken)
            self._compact_failed(failure)
            if self._pending:
                self._append()

        self._write(done, self.file.write_snapshot, history.state())

    def _last(self, history: History) -> None:
        """
        The clean snapshot of a stop; if it fails, what waited is appended
        (when it can be), so the next start has it, not closed cleanly.
        """
        whole = self._let_go or not self.file.appendable
        taken = self._take()

        def done(failure: Failure | None) -> None:
            if failure is None:
                self._succeeded()
                return
            self._give_back(taken)
            self._failures = 0  # one line for this failure, whatever came before
            self._failed(failure, "the last snapshot of the history")
            if self._pending and not whole:
                self._append()

        self._write(done, self.file.write_snapshot, history.state(), True)

    def _write(
        self, done: Callable[[Failure | None], None], what: Callable[..., None], *args: Any
    ) -> None:
        """Run C{what} on the writer, then C{done} with its failure or L{None}."""
        self._writing = True

        def finished(result: object) -> None:
            self._writing = False
            done(result if isinstance(result, Failure) else None)
            if not self._writing:
                idle, self._idle = self._idle, []
                for waiter in idle:
                    waiter.callback(None)

        self._run(what, *args).addBoth(finished).addErrback(
            lambda f: self.log.failure("the history's writer failed", f)
        )

    def _retry_delay(self, failures: int) -> float:
        return min(self.RETRY_MAX, self.RETRY_FIRST * 2.0 ** min(failures - 1, 32))

    def _failed(self, failure: Failure, what: str | None = None) -> None:
        """
        A write failed: the next waits (L{RETRY_FIRST}, doubling).  The
        first failure in a row is logged: an C{OSError} (the disk) as one
        line with its reason, anything else with its traceback.

        @param what: the write, if it was the last one (of a stop).
        """
        self._failures += 1
        delay = self._retry_delay(self._failures)
        self._retry_at = self._clock.seconds() + delay
        if self._failures > 1:
            return
        path = self.file.path
        if what is not None and failure.check(OSError):
            self.log.error(
                "writing {what} to {path} failed: {reason}; what waited is appended"
                " instead if it can be (the next start finds the history not closed cleanly)",
                what=what,
                path=path,
                reason=_reason(failure),
            )
        elif failure.check(OSError):
            self.log.error(
                "writing the history to {path} failed: {reason}; what is published waits"
                " in memory and is written once the disk works (next try in {delay:g} s)",
                path=path,
                reason=_reason(failure),
                delay=delay,
            )
        else:
            self.log.failure("writing the history to {path} failed", failure, path=path)

    def _succeeded(self) -> None:
        if self._failures:
            self._failures = 0
            self.log.info("the history is written to {path} again", path=self.file.path)

    def _compact_failed(self, failure: Failure) -> None:
        self._compact_failures += 1
        delay = self._retry_delay(self._compact_failures)
        self._compact_at = self._clock.seconds() + delay
        if self._compact_failures > 1:
            return
        if failure.check(OSError):
            self.log.warn(
                "compacting the history in {path} failed: {reason}; appending to it"
                " instead (next try in {delay:g} s)",
                path=self.file.path,
                reason=_reason(failure),
                delay=delay,
            )
        else:
            self.log.failure(
                "compacting the history in {path} failed", failure, path=self.file.path
            )

    def _compacted(self) -> None:
        if self._compact_failures:
            self._compact_failures = 0
            self._compact_at = 0.0
            self.log.info("the history in {path} is compacted again", path=self.file.path)

    def _when_idle(self) -> Deferred[None]:
        if not self._writing:
            return succeed(None)
        idle: Deferred[None] = Deferred()
        self._idle.append(idle)
        return idle

    def stop(self) -> Deferred[None]:
        """
        Write the final, clean snapshot of the history; fires when it is on
        disk (or, if it fails, once what waited is appended, if it can be).
        """
        history = self._history
        assert history is not None, "stop() after start()"
        if self._timer is not None and self._timer.running:
            self._timer.stop()

        def last(_: object) -> Deferred[None]:
            self._last(history)
            return self._when_idle()

        d = self._when_idle()
        d.addCallback(last)
        d.addBoth(lambda _: self.file.close())
        return d


def _reason(failure: Failure) -> str:
    """An C{OSError}'s reason, as C{strerror} says it (C{No space left on device})."""
    error = failure.value
    return str(getattr(error, "strerror", None) or error)
