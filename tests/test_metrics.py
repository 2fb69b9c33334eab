"""
The server's counters (L{notificator.stats}) and their Prometheus exposition (L{notificator.metrics}).
"""

from __future__ import annotations

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from notificator import metrics
from notificator.broker.local import LocalBroker
from notificator.config import defaults
from notificator.events import Message
from notificator.hub import Hub
from notificator.stats import Stats
from tests.support import FakeStream


class FakeTimer:
    """A monotonic timer that steps by the given amounts."""

    def __init__(self, *readings: float) -> None:
        self.readings = list(readings)

    def __call__(self) -> float:
        return self.readings.pop(0)


def samples(registry: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a registry's exposition, keyed by name and labels."""
    text = generate_latest(registry).decode("utf-8")  # type: ignore[arg-type]
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def parts(clock: Clock | None = None, timer: object = None) -> tuple[Hub, Stats, LocalBroker]:
    """A hub and a local broker over one set of counters."""
    clock = clock or Clock()
    stats = Stats(started_at=clock.seconds())
    hub = Hub(clock=clock, stats=stats, **({"timer": timer} if timer else {}))
    return hub, stats, LocalBroker(hub, stats, clock, defaults().sse.history)


class CounterTests(SynchronousTestCase):
    def test_publish_counts_published_and_delivered(self) -> None:
        """Each publish counts once, and delivered counts the streams written."""
        hub, stats, broker = parts()
        hub.attach(FakeStream("u1"))
        hub.attach(FakeStream("u1"))
        hub.attach(FakeStream("u1", gone=True))
        broker.publish(Message("notify", "u1", "{}"))
        broker.publish(Message("notify", "nobody", "{}"))
        self.assertEqual((stats.published, stats.delivered, stats.opened), (2, 2, 3))

    def test_version_changes_on_attach_and_detach_only(self) -> None:
        """The version moves when a stream comes or goes, not on publish or a repeated attach."""
        hub, stats, broker = parts()
        stream = FakeStream("u1")
        hub.attach(stream)
        after_attach = hub.version
        hub.attach(stream)
        broker.publish(Message("notify", "u1", "{}"))
        self.assertEqual(hub.version, after_attach)
        hub.detach(stream)
        hub.detach(stream)
        self.assertEqual(hub.version, after_attach + 1)
        self.assertEqual(stats.opened, 1)

    def test_heartbeat_is_timed(self) -> None:
        """The heartbeat's duration is measured with the injected timer."""
        hub, stats, _ = parts(timer=FakeTimer(10.0, 10.25, 20.0, 20.5))
        hub.attach(FakeStream("u1"))
        hub.heartbeat()
        hub.heartbeat()
        self.assertEqual(
            (stats.heartbeats, stats.heartbeat_seconds, stats.heartbeat_last), (2, 0.75, 0.5)
        )

    def test_counts_by_status_reason_and_outcome(self) -> None:
        """Refused publishes count per HTTP status, refused streams per reason, replays per outcome."""
        stats = Stats(started_at=0)
        for code in (400, 415, 400):
            stats.reject(code)
        stats.refuse("draining")
        stats.replay("complete", 3)
        stats.replay("truncated", 2)
        stats.replay("complete", 0)
        self.assertEqual(stats.rejected, {400: 2, 415: 1})
        self.assertEqual(stats.refused, {"draining": 1})
        self.assertEqual((stats.replays, stats.replayed), ({"complete": 2, "truncated": 1}, 5))


class ExpositionTests(SynchronousTestCase):
    def test_registry_exposes_counters(self) -> None:
        """The registry's text exposition carries the server's gauges and counters."""
        clock = Clock()
        clock.advance(500)
        hub, stats, broker = parts(clock, timer=FakeTimer(1.0, 1.125))
        registry = metrics.build_registry(hub, stats, broker, clock)
        hub.attach(FakeStream("u1"))
        hub.attach(FakeStream("u1"))
        hub.attach(FakeStream("u2"))
        broker.publish(Message("notify", "u1", "{}"))
        stats.reject(400)
        stats.reject(413)
        stats.refuse("draining")
        stats.replay("truncated", 4)
        stats.body_bytes = 1234
        hub.heartbeat()
        clock.advance(60)
        found = samples(registry)
        expected = {
            ("notificator_streams", ()): 3,
            ("notificator_users", ()): 2,
            ("notificator_streams_opened_total", ()): 3,
            ("notificator_published_total", ()): 1,
            ("notificator_delivered_total", ()): 2,
            ("notificator_rejected_total", (("code", "400"),)): 1,
            ("notificator_rejected_total", (("code", "413"),)): 1,
            ("notificator_streams_refused_total", (("reason", "draining"),)): 1,
            ("notificator_replays_total", (("outcome", "truncated"),)): 1,
            ("notificator_replayed_total", ()): 4,
            ("notificator_heartbeat_duration_seconds_count", ()): 1,
            ("notificator_heartbeat_duration_seconds_sum", ()): 0.125,
            ("notificator_heartbeat_last_duration_seconds", ()): 0.125,
            ("notificator_uptime_seconds", ()): 60,
            ("notificator_start_time_seconds", ()): 500,
            ("notificator_draining", ()): 0,
            ("notificator_broker_up", ()): 1,
            ("notificator_request_body_bytes", ()): 1234,
        }
        self.assertEqual({k: found.get(k) for k in expected}, expected)
        self.assertIn(("process_resident_memory_bytes", ()), found)

    def test_scrape_sees_live_values(self) -> None:
        """Values are read at scrape time, so a later scrape shows later counts."""
        hub, stats, broker = parts()
        registry = metrics.build_registry(hub, stats, broker, Clock())
        stream = FakeStream("u1")
        hub.attach(stream)
        self.assertEqual(samples(registry)[("notificator_streams", ())], 1)
        hub.detach(stream)
        self.assertEqual(samples(registry)[("notificator_streams", ())], 0)

    def test_registries_are_per_server(self) -> None:
        """Each server gets its own registry; nothing lands in the library's global one."""
        one = metrics.build_registry(*parts(), Clock())
        two = metrics.build_registry(*parts(), Clock())
        self.assertIsNot(one, two)
        global_names = {name for name, _ in samples(REGISTRY)}
        self.assertNotIn("notificator_streams", global_names)
