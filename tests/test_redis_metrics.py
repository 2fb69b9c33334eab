"""Tests for L{notificator.broker.redis.metrics}: cluster mode's metrics."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.test_redis_ordering import Harness


class CollectorTests(SynchronousTestCase):
    def test_metrics(self) -> None:
        """
        The collector reports up, outages and their length, round trip, the
        gap fill and the node's name, read from the broker and its link.
        """
        from prometheus_client import CollectorRegistry, generate_latest

        h = Harness()
        h.node.up()
        h.link.rtt_last, h.link.rtt_count, h.link.rtt_sum = 0.002, 3, 0.005
        registry = CollectorRegistry()
        registry.register(h.broker.collector())
        text = generate_latest(registry).decode()
        self.assertIn('notificator_cluster_node_info{node="n1"} 1.0', text)
        self.assertIn("notificator_redis_up 1.0", text)
        self.assertIn("notificator_redis_outage_seconds 0.0", text)
        self.assertIn("notificator_redis_rtt_seconds 0.002", text)
        self.assertIn("notificator_redis_ping_seconds_count 3.0", text)
        self.assertIn("notificator_redis_ping_seconds_sum 0.005", text)
        self.assertIn("(every 5 s)", text)
        h.node.stream()
        h.link.lose_subscription()
        h.elsewhere(1)
        h.clock.advance(7)
        text = generate_latest(registry).decode()
        self.assertIn("notificator_redis_up 0.0", text)
        self.assertIn("notificator_redis_outages_total 1.0", text)
        self.assertIn("notificator_redis_outage_seconds 7.0", text)
        h.link.connect()
        h.link.settle()
        text = generate_latest(registry).decode()
        self.assertIn("notificator_redis_gap_filled_total 1.0", text)
