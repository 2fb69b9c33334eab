# -*- test-case-name: tests.test_broker_local -*-
"""
Brokers: what gives a notification its event id, records it in the
history and hands its frame to the L{notificator.hub.Hub}, and what
answers a reconnecting stream with what it missed.

The web layer sees only the L{Broker} interface, whose answers are
Deferreds, so a broker may answer at once
(L{notificator.broker.local.LocalBroker}: one process, ids from the
clock, history in memory and in an embedded journal) or after a round
trip (the Redis broker of cluster mode).  Nothing but a broker knows
whether there is one node or many.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Protocol

import attrs
from twisted.internet.defer import Deferred

from notificator.broker.view import MachineView, machine_metrics
from notificator.events import Message
from notificator.history import Replay

__all__ = [
    "Broker",
    "MachineView",
    "NO_REPLAY",
    "NOBODY_ELSE",
    "Published",
    "Unavailable",
    "machine_metrics",
]


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

#: L{Broker.elsewhere} of a node alone on its machine: nobody else.
NOBODY_ELSE: Mapping[str, int] = MappingProxyType({})


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
        (L{notificator.hub.Hub.attach}), synchronously: the broker
        guarantees that no notification of the user is delivered between
        the answer and that callback, and that those delivered while it
        was waiting are in the frames.
        """

    def health(self) -> str | None:
        """L{None} when the broker can record notifications, else why not."""

    def view(self, streams: bool = False, metrics: bool = False) -> Deferred[MachineView] | None:
        """
        What every worker of this machine serves (C{server.workers} above
        1: L{notificator.broker.view.MachineView}, this worker's part made
        now, the others' as their last snapshots said, with their streams
        and metric families when asked); L{None} when this node serves
        alone (one process, or a node of a cluster without workers): the
        monitor then describes it from its own hub and counters.
        """

    @property
    def position(self) -> str | None:
        """
        Where a stream that opens now stands, as an event id: the
        C{connect} event carries it (C{id:}), so that a browser that has
        received no notification yet reconnects with it as its
        C{Last-Event-ID}, and L{replay} gives it what was published after
        the stream opened (or the reset, when that cannot be complete).
        L{None} when there is none (no history kept; cluster mode before
        the node has heard from Redis): the C{connect} then carries no
        id.  Read on every stream open: an attribute, no round trip.
        """

    #: The name of this node (C{cluster.node}), which C{/health} and
    #: C{/users} show, so that one can tell which node answered.
    node: str

    @property
    def elsewhere(self) -> Mapping[str, int]:
        """
        Open streams per user on the other workers of this machine, as
        their last snapshots said (at most about a second old), for
        C{limits.streamsPerUser} over the machine; L{NOBODY_ELSE} alone.
        """
