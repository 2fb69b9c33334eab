# -*- test-case-name: tests.test_metrics -*-
"""
Prometheus metrics for C{GET /metrics}.

The counters are plain integers (L{notificator.stats.Stats}: one addition
per publish); the L{HubCollector} turns them into metric families only
when Prometheus scrapes.  That keeps the hot publish path free of
C{Counter.inc()} locks.

The registry is built per server in C{makeService} (never the library's
global C{REGISTRY}) and served by C{prometheus_client}'s own Twisted
resource (L{notificator.http.monitor.metrics_resource}), which renders in
the reactor's thread pool: the collectors therefore only read attributes
(integers, C{len()}s, the broker's C{health()}), which is safe from a
thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from twisted.internet.interfaces import IReactorTime

from notificator import __version__
from notificator.broker import Broker
from notificator.hub import Hub
from notificator.stats import Stats


class HubCollector(Collector):
    """
    Reads the server's counters and the hub's gauges at scrape time.

    @param hub: the server's hub.
    @param stats: the server's counters.
    @param broker: for its health.
    @param clock: for the uptime gauge.
    """

    def __init__(self, hub: Hub, stats: Stats, broker: Broker, clock: IReactorTime) -> None:
        self._hub = hub
        self._stats = stats
        self._broker = broker
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        hub = self._hub
        stats = self._stats
        info = GaugeMetricFamily(
            "notificator_build_info", "Notificator version.", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info
        yield GaugeMetricFamily(
            "notificator_start_time_seconds",
            "POSIX time the server started.",
            value=stats.started_at,
        )
        yield GaugeMetricFamily(
            "notificator_uptime_seconds",
            "Seconds since the server started.",
            value=max(0.0, self._clock.seconds() - stats.started_at),
        )
        yield GaugeMetricFamily(
            "notificator_streams", "Open event streams.", value=hub.stream_count
        )
        yield GaugeMetricFamily(
            "notificator_users", "Users with at least one open stream.", value=hub.user_count
        )
        yield CounterMetricFamily(
            "notificator_streams_opened", "Event streams opened.", value=stats.opened
        )
        yield CounterMetricFamily(
            "notificator_published", "Notifications published.", value=stats.published
        )
        yield CounterMetricFamily(
            "notificator_delivered",
            "Notification frames written to streams (one per open stream of the user).",
            value=stats.delivered,
        )
        yield _counts(
            "notificator_rejected", "Publishes refused, by HTTP status.", "code", stats.rejected
        )
        yield SummaryMetricFamily(
            "notificator_heartbeat_duration_seconds",
            "Time to write one heartbeat to every open stream.",
            count_value=stats.heartbeats,
            sum_value=stats.heartbeat_seconds,
        )
        yield GaugeMetricFamily(
            "notificator_heartbeat_last_duration_seconds",
            "Duration of the last heartbeat.",
            value=stats.heartbeat_last,
        )
        yield _counts(
            "notificator_streams_refused",
            "Streams refused or ended early by the server, by reason.",
            "reason",
            stats.refused,
        )
        yield GaugeMetricFamily(
            "notificator_connections",
            "Open client connections (HTTP/1.x, TLS, HTTP/2), counted against limits.connections.",
            value=stats.connections,
        )
        yield _counts(
            "notificator_connections_dropped",
            "Connections closed by the server, by reason: at limits.connections (limit: a new"
            " one closed at once; reclaimed: an idle or slow one closed to make room), or"
            " headerTimeout (no complete request head, or HTTP/2 no open stream, within"
            " limits.headerTimeout).",
            "reason",
            stats.dropped,
        )
        yield GaugeMetricFamily(
            "notificator_request_body_bytes",
            "Bytes of request bodies held in memory now, counted against limits.bodyMemory.",
            value=stats.body_bytes,
        )
        yield _counts(
            "notificator_replays",
            "Reconnects that asked for what they missed, by outcome.",
            "outcome",
            stats.replays,
        )
        yield CounterMetricFamily(
            "notificator_replayed",
            "Notifications written to reconnecting streams from the history.",
            value=stats.replayed,
        )
        yield GaugeMetricFamily(
            "notificator_draining", "1 while the server is stopping.", value=int(hub.draining)
        )
        yield GaugeMetricFamily(
            "notificator_broker_up",
            "1 when notifications can be recorded (cluster mode: Redis is reachable).",
            value=int(self._broker.health() is None),
        )


def _counts(name: str, documentation: str, label: str, counts: Mapping[Any, int]) -> Metric:
    """A counter with one sample per key of C{counts} (the label's value), in key order."""
    family = CounterMetricFamily(name, documentation, labels=[label])
    for key, count in sorted(dict(counts).items()):
        family.add_metric([str(key)], count)
    return family


def build_registry(
    hub: Hub,
    stats: Stats,
    broker: Broker,
    clock: IReactorTime,
    collectors: Iterable[Collector] = (),
) -> CollectorRegistry:
    """
    A registry of our own (not the global one) with the server's metrics,
    the process's (CPU, memory, open files) and C{collectors} (the Redis
    broker's, in cluster mode).
    """
    registry = CollectorRegistry(auto_describe=True)
    registry.register(HubCollector(hub, stats, broker, clock))
    for collector in collectors:
        registry.register(collector)
    ProcessCollector(registry=registry)
    return registry
