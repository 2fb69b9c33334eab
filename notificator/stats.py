# -*- test-case-name: tests.test_metrics -*-
"""
The server's counters, in one object that the service maker builds and
hands to the parts that count (web, hub, broker) and to the parts that
show them (the monitor's C{/health}, C{/metrics}).

Plain integers and dicts: the hot paths pay one addition each, and
L{notificator.metrics} turns them into metric families only when
Prometheus scrapes.
"""

from __future__ import annotations


class Stats:
    """
    Counters since the server started.

    @ivar started_at: POSIX time the server started.
    @ivar published: notifications accepted and recorded.
    @ivar delivered: frames of notifications written to open streams (a
        notification to a user with two tabs open counts two).
    @ivar opened: streams ever opened.
    @ivar rejected: refused publishes, by HTTP status (see L{reject}).
    @ivar refused: refused or cut-short streams, by reason (see L{refuse}).
    @ivar replayed: notifications written to reconnecting streams from
        the history.
    @ivar replays: reconnects that asked for a replay, by outcome
        (C{"complete"}, C{"truncated"}).
    @ivar heartbeats: heartbeat ticks run.
    @ivar heartbeat_seconds: total time spent in them.
    @ivar heartbeat_last: the duration of the last one.
    @ivar connections: client connections open now (HTTP/1.x, TLS,
        HTTP/2), counted against C{limits.connections}.
    @ivar dropped: connections the server closed at C{limits.connections},
        by reason (see L{drop}).
    @ivar body_bytes: bytes of request bodies held in memory now, counted
        against C{limits.bodyMemory}
        (L{notificator.http.request.Request}).
    """

    __slots__ = (
        "started_at",
        "published",
        "delivered",
        "opened",
        "rejected",
        "refused",
        "replayed",
        "replays",
        "heartbeats",
        "heartbeat_seconds",
        "heartbeat_last",
        "connections",
        "dropped",
        "body_bytes",
    )

    def __init__(self, started_at: float) -> None:
        self.started_at = started_at
        self.published = 0
        self.delivered = 0
        self.opened = 0
        self.rejected: dict[int, int] = {}
        self.refused: dict[str, int] = {}
        self.replayed = 0
        self.replays: dict[str, int] = {}
        self.heartbeats = 0
        self.heartbeat_seconds = 0.0
        self.heartbeat_last = 0.0
        self.connections = 0
        self.dropped: dict[str, int] = {}
        self.body_bytes = 0

    def totals(self) -> dict[str, int]:
        """
        The counts C{/health} shows, and a worker's snapshot carries, in
        that order: C{opened}, C{published}, C{delivered}, C{rejected} (all
        statuses) and C{heartbeats}.
        """
        return {
            "opened": self.opened,
            "published": self.published,
            "delivered": self.delivered,
            "rejected": sum(dict(self.rejected).values()),
            "heartbeats": self.heartbeats,
        }

    def reject(self, code: int) -> None:
        """Count a publish refused with this HTTP status."""
        self.rejected[code] = self.rejected.get(code, 0) + 1

    def refuse(self, reason: str) -> None:
        """Count a stream refused (or ended early) for this reason."""
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def drop(self, reason: str) -> None:
        """
        Count a connection the server closed before a request: at
        C{limits.connections}, C{"limit"} (a new one closed at once) or
        C{"reclaimed"} (an idle or slow one closed to make room for a new
        one); C{"headerTimeout"}, one with no complete request head (over
        HTTP/2: no open stream) within C{limits.headerTimeout}.
        """
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def replay(self, outcome: str, frames: int) -> None:
        """Count a reconnect's replay: its outcome and the frames it wrote."""
        self.replays[outcome] = self.replays.get(outcome, 0) + 1
        self.replayed += frames
