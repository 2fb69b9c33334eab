"""
The hub's counters and their Prometheus exposition (L{notificator.metrics}).
"""

from __future__ import annotations

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from notificator import metrics
from notificator.events import Message
from notificator.hub import Hub


class FakeStream:
    """A stream that records frames; C{alive=False} makes sends fail."""

    def __init__(self, user_id: str, alive: bool = True) -> None:
        self.user_id = user_id
        self.alive = alive
        self.frames: list[bytes] = []

    def send(self, frame: bytes) -> bool:
        if self.alive:
            self.frames.append(frame)
        return self.alive

    def close(self) -> None:
        self.alive = False


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


class HubCounterTests(SynchronousTestCase):
    def test_publish_counts_published_and_delivered(self) -> None:
        """Each publish counts once, and delivered counts the streams written."""
        hub = Hub(clock=Clock())
        hub.attach(FakeStream("u1"))
        hub.attach(FakeStream("u1"))
        hub.attach(FakeStream("u1", alive=False))
        hub.publish(Message("notify", "u1", "{}"))
        hub.publish(Message("notify", "nobody", "{}"))
        self.assertEqual((hub.published, hub.delivered, hub.opened), (2, 2, 3))

    def test_version_changes_on_attach_and_detach_only(self) -> None:
        """The version moves when a stream comes or goes, not on publish or a repeated attach."""
        hub = Hub(clock=Clock())
        stream = FakeStream("u1")
        hub.attach(stream)
        after_attach = hub.version
        hub.attach(stream)
        hub.publish(Message("notify", "u1", "{}"))
        self.assertEqual(hub.version, after_attach)
        hub.detach(stream)
        hub.detach(stream)
        self.assertEqual(hub.version, after_attach + 1)
        self.assertEqual(hub.opened, 1)

    def test_heartbeat_is_timed(self) -> None:
        """The heartbeat's duration is measured with the injected timer."""
        hub = Hub(clock=Clock(), timer=FakeTimer(10.0, 10.25, 20.0, 20.5))
        hub.attach(FakeStream("u1"))
        hub.heartbeat()
        hub.heartbeat()
        self.assertEqual(
            (hub.heartbeats, hub.heartbeat_seconds, hub.heartbeat_last), (2, 0.75, 0.5)
        )

    def test_reject_counts_by_status(self) -> None:
        """Refused publishes are counted per HTTP status."""
        hub = Hub(clock=Clock())
        for code in (400, 415, 400):
            hub.reject(code)
        self.assertEqual(hub.rejected, {400: 2, 415: 1})


class ExpositionTests(SynchronousTestCase):
    def test_registry_exposes_hub_counters(self) -> None:
        """The registry's text exposition carries the hub's gauges and counters."""
        clock = Clock()
        clock.advance(500)
        hub = Hub(clock=clock, timer=FakeTimer(1.0, 1.125))
        registry = metrics.build_registry(hub, clock)
        hub.attach(FakeStream("u1"))
        hub.attach(FakeStream("u1"))
        hub.attach(FakeStream("u2"))
        hub.publish(Message("notify", "u1", "{}"))
        hub.reject(400)
        hub.reject(413)
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
            ("notificator_heartbeat_duration_seconds_count", ()): 1,
            ("notificator_heartbeat_duration_seconds_sum", ()): 0.125,
            ("notificator_heartbeat_last_duration_seconds", ()): 0.125,
            ("notificator_uptime_seconds", ()): 60,
            ("notificator_start_time_seconds", ()): 500,
        }
        self.assertEqual({k: found.get(k) for k in expected}, expected)
        self.assertIn(("process_resident_memory_bytes", ()), found)

    def test_scrape_sees_live_values(self) -> None:
        """Values are read at scrape time, so a later scrape shows later counts."""
        hub = Hub(clock=Clock())
        registry = metrics.build_registry(hub, Clock())
        stream = FakeStream("u1")
        hub.attach(stream)
        self.assertEqual(samples(registry)[("notificator_streams", ())], 1)
        hub.detach(stream)
        self.assertEqual(samples(registry)[("notificator_streams", ())], 0)

    def test_registries_are_per_server(self) -> None:
        """Each server gets its own registry; nothing lands in the library's global one."""
        one = metrics.build_registry(Hub(clock=Clock()), Clock())
        two = metrics.build_registry(Hub(clock=Clock()), Clock())
        self.assertIsNot(one, two)
        global_names = {name for name, _ in samples(REGISTRY)}
        self.assertNotIn("notificator_streams", global_names)
