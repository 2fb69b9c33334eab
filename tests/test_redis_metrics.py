"""Tests for L{notificator.broker.redis.metrics}: cluster mode's metrics."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.test_redis_ordering import Harness


class CollectorTests(SynchronousTestCase):
    def test_metrics(self) -> None:
        """The collector reports up, outages, round trip and the node's name."""
        from prometheus_client import CollectorRegistry, generate_latest

        h = Harness(self)
        h.up()
        h.broker.rtt_last, h.broker.rtt_count, h.broker.rtt_sum = 0.002, 3, 0.005
        registry = CollectorRegistry()
        registry.register(h.broker.collector())
        text = generate_latest(registry).decode()
        self.assertIn('notificator_cluster_node_info{node="n1"} 1.0', text)
        self.assertIn("notificator_redis_up 1.0", text)
        self.assertIn("notificator_redis_rtt_seconds 0.002", text)
        self.assertIn("notificator_redis_ping_seconds_count 3.0", text)
        h.lose_subscription()
        text = generate_latest(registry).decode()
        self.assertIn("notificator_redis_up 0.0", text)
        self.assertIn("notificator_redis_outages_total 1.0", text)
