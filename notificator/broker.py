# -*- test-case-name: tests.test_broker -*-
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

    log = Logger()

    def __init__(
        self,
        hub: Hub,
        stats: Stats,
        clock: IReactorTime,
        history: HistoryConfig,
        journal: Journal | None = None,
        node: str | None = None,
    ) -> None:
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

    What a C{SIGKILL} or a power loss can lose: the notifications of the
    last C{interval} seconds, not yet written; and since the journal then
    does not end clean, the next start cannot know what it lost, so every
    reconnecting client gets a reset (with everything kept).

    @param run: runs a callable with arguments on the writer thread and
        returns a Deferred of its result (C{deferToThreadPool}, curried).
    """

    log = Logger()

    #: Bytes appended beyond a snapshot's own size before the next one.
    COMPACT_MARGIN = 1 << 20

    def __init__(
        self,
        file: HistoryFile,
        clock: IReactorTime,
        run: Callable[..., Deferred[Any]],
        interval: float = 0.2,
    ) -> None:
        self.file = file
        self._clock = clock
        self._run = run
        self.interval = interval
        self._pending: list[tuple[str, int, bytes, float]] = []
        self._writing = False
        self._idle: list[Deferred[None]] = []
        self._timer: LoopingCall | None = None
        self._history: History | None = None

    def start(self, history: History) -> None:
        """
        Load what the file kept into C{history} (at start-up, before
        serving: blocking is fine), write a fresh snapshot, and start
        appending.
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
        self.file.write_snapshot(history.state())
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
        file = self.file
        if history is not None and file.size > 2 * file.snapshot_size + self.COMPACT_MARGIN:
            # Everything pending is in the snapshot.
            self._pending = []
            self._write(self.file.write_snapshot, history.state())
        elif self._pending:
            entries, self._pending = self._pending, []
            self._write(self.file.append_entries, entries)

    def _write(self, what: Callable[..., None], *args: Any) -> Deferred[None]:
        self._writing = True
        d = self._run(what, *args)

        def done(result: None | Failure) -> None:
            self._writing = False
            if isinstance(result, Failure):
                self.log.failure(
                    "writing the history to {path} failed", result, path=self.file.path
                )
            idle, self._idle = self._idle, []
            for waiter in idle:
                waiter.callback(None)

        d.addBoth(done)
        return d

    def stop(self) -> Deferred[None]:
        """Write the final, clean snapshot of the history; fires when it is on disk."""
        history = self._history
        assert history is not None, "stop() after start()"
        if self._timer is not None and self._timer.running:
            self._timer.stop()
        self._pending = []
        if self._writing:
            idle: Deferred[None] = Deferred()
            self._idle.append(idle)
        else:
            idle = succeed(None)
        idle.addCallback(lambda _: self._write(self.file.write_snapshot, history.state(), True))
        idle.addBoth(lambda _: self.file.close())
        return idle
