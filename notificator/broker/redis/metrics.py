# -*- test-case-name: tests.test_redis_metrics -*-
"""
Cluster mode's metrics for C{/metrics} (L{RedisCollector}), read from the
broker (L{notificator.broker.redis.ordering.RedisBroker}) and its link to
Redis (L{notificator.broker.redis.ordering.Link}) at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from notificator.broker.redis.ordering import RedisBroker


class RedisCollector(Collector):
    """Reads the broker's and its link's state at scrape time (plain attributes: thread safe)."""

    def __init__(self, broker: RedisBroker) -> None:
        self._broker = broker

    def collect(self) -> Iterable[Metric]:
        b = self._broker
        link = b.link
        info = GaugeMetricFamily(
            "notificator_cluster_node_info", "This node's name (cluster.node).", labels=["node"]
        )
        info.add_metric([b.node], 1)
        yield info
        yield GaugeMetricFamily(
            "notificator_redis_up",
            "1 while this node is connected and subscribed to Redis.",
            value=int(b.health() is None),
        )
        yield CounterMetricFamily(
            "notificator_redis_outages",
            "Times Redis became unavailable to this node.",
            value=link.outages,
        )
        yield GaugeMetricFamily(
            "notificator_redis_outage_seconds",
            "Seconds since Redis became unavailable (0 while it is available).",
            value=link.outage_seconds(),
        )
        if link.rtt_last is not None:
            yield GaugeMetricFamily(
                "notificator_redis_rtt_seconds",
                "Round-trip time of the last PING to Redis.",
                value=link.rtt_last,
            )
        yield SummaryMetricFamily(
            "notificator_redis_ping_seconds",
            f"Round-trip times of the PINGs to Redis (every {link.ping_interval:g} s).",
            count_value=link.rtt_count,
            sum_value=link.rtt_sum,
        )
        yield CounterMetricFamily(
            "notificator_redis_gap_filled",
            "Notifications delivered from the history after a gap in the subscription.",
            value=b.filled,
        )
