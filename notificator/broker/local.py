# -*- test-case-name: tests.test_broker_local -*-
"""
The broker of a single node (L{LocalBroker}): ids from the clock, the
history in memory and, given a L{notificator.history.journal.Journal}, on
disk; publishing answers at once.
"""

from __future__ import annotations

import socket

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from notificator.broker import NO_REPLAY, NOBODY_ELSE, Published, Unavailable
from notificator.config import HistoryConfig
from notificator.events import SEQ_SPAN, EventIds, Message, encode_frame, event_key
from notificator.events import event_id as _event_id
from notificator.history import History, Journal, Replay
from notificator.hub import Hub
from notificator.stats import Stats


class LocalBroker(Service):
    """
    The broker of a single node: event ids from the clock (always after the
    kept history's last), a L{History} in memory, and, given a L{Journal}
    (C{makeService} makes one where L{notificator.app.history_directory}
    says), that history kept on disk across restarts.  Publishing answers at
    once.

    A C{history.size} of 0 keeps no history: reconnects get nothing, and
    L{position} is L{None} (the C{connect} event carries no id: there is
    nothing a reconnect could be given).
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
        # The namespace it had before the moves of issue 18: it is part of
        # every log line, and no log line changes.
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
        #: Where a stream that opens now stands, as an event id (L{Broker.position}):
        #: the last id given, kept as the notify frames carry it.
        self.position: str | None = None
        self._start_ids()
        # Set once the stop begins: the history's last snapshot is being
        # written, so a later publish could not be kept.
        self._stopping = False

    def startService(self) -> None:
        history = self.history
        if self.journal is not None and history is not None:
            self.journal.start(history)
        self._start_ids()
        super().startService()

    def _start_ids(self) -> None:
        """
        Give ids after the history's L{History.position} (its last key,
        or its start), so that a stream that opened before the first
        notification, whose C{connect} carried that position, is replayed
        that notification.
        """
        history = self.history
        if history is not None:
            self._ids = EventIds(self._clock, after=history.position)
            self.position = _event_id(history.position)

    def stopService(self) -> Deferred[None] | None:
        """
        Write the history to disk (a snapshot), when it is kept there.  From
        now on a publish is refused (L{Unavailable}, a 503 the sender
        retries), never answered and then lost: a sender's keep-alive
        connection can still bring one after the listeners have closed.
        """
        self._stopping = True
        super().stopService()
        if self.journal is not None:
            return self.journal.stop()
        return None

    def publish(self, message: Message) -> Published | Deferred[Published]:
        if self._stopping:
            return fail(Unavailable("the server is stopping"))
        ids = self._ids
        event_id = ids.next()
        frame = encode_frame(message.event, message.data, event_id)
        history = self.history
        if history is not None:
            user_id = message.user_id
            now = self._clock.seconds()
            history.append(user_id, ids.last, frame, now)
            self.position = event_id
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

    #: One process: no other worker.
    elsewhere = NOBODY_ELSE

    def view(self, streams: bool = False, metrics: bool = False) -> None:
        """One process: the monitor describes it from its own hub and counters."""
        return None


def _now_key(clock: IReactorTime) -> int:
    return int(clock.seconds() * 1000) * SEQ_SPAN
