"""Tests for L{notificator.hub.Hub}: registry, fan-out, heartbeat."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from notificator.events import KEEPALIVE_FRAME, Message
from notificator.hub import Hub
from tests.support import parse_frames


class FakeStream:
    """Records frames; can be made to look gone or to fail."""

    def __init__(self, user_id: str, gone: bool = False, fail: bool = False) -> None:
        self.user_id = user_id
        self.frames: list[bytes] = []
        self.gone = gone
        self.fail = fail
        self.closed = False

    def send(self, frame: bytes) -> bool:
        if self.fail:
            raise RuntimeError("broken stream")
        if self.gone:
            return False
        self.frames.append(frame)
        return True

    def close(self) -> None:
        self.closed = True


class HubTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.hub = Hub(clock=self.clock)

    def test_publish_to_every_stream_of_the_user(self) -> None:
        """Three tabs of a user all get the frame; another user gets nothing."""
        tabs = [FakeStream("u1") for _ in range(3)]
        other = FakeStream("u2")
        for s in tabs + [other]:
            self.hub.attach(s)
        published = self.hub.publish(Message("notify", "u1", '{"a":1}'))
        self.assertEqual(published.delivered, 3)
        self.assertEqual(other.frames, [])
        frames = [s.frames for s in tabs]
        self.assertEqual(frames[0], frames[1])
        self.assertEqual(
            parse_frames(frames[0][0]),
            [{"id": published.event_id, "event": "notify", "data": '{"a":1}'}],
        )

    def test_frame_encoded_once(self) -> None:
        """Every stream receives the very same bytes object."""
        a, b = FakeStream("u"), FakeStream("u")
        self.hub.attach(a)
        self.hub.attach(b)
        self.hub.publish(Message("notify", "u", "1"))
        self.assertIs(a.frames[0], b.frames[0])

    def test_publish_to_nobody(self) -> None:
        """Publishing to a user with no stream delivers to 0 and still gets an id."""
        published = self.hub.publish(Message("notify", "nobody", "1"))
        self.assertEqual(published.delivered, 0)
        self.assertRegex(published.event_id, r"^\d+-\d+$")

    def test_ids_increase(self) -> None:
        """Event ids of successive publishes increase."""
        from notificator.events import parse_event_id

        ids = [self.hub.publish(Message("n", "u", "1")).event_id for _ in range(5)]
        self.assertEqual(sorted(ids, key=parse_event_id), ids)
        self.assertEqual(len(set(ids)), 5)

    def test_gone_stream_not_counted(self) -> None:
        """A stream that is already gone is not counted as delivered."""
        self.hub.attach(FakeStream("u", gone=True))
        self.hub.attach(FakeStream("u"))
        self.assertEqual(self.hub.publish(Message("n", "u", "1")).delivered, 1)

    def test_detach(self) -> None:
        """Detached streams get nothing; the user disappears with its last stream."""
        a, b = FakeStream("u"), FakeStream("u")
        self.hub.attach(a)
        self.hub.attach(b)
        self.hub.detach(a)
        self.assertEqual((self.hub.user_count, self.hub.stream_count), (1, 1))
        self.hub.detach(b)
        self.hub.detach(b)  # twice is harmless
        self.assertEqual((self.hub.user_count, self.hub.stream_count), (0, 0))
        self.assertEqual(self.hub.publish(Message("n", "u", "1")).delivered, 0)
        self.assertEqual(a.frames + b.frames, [])

    def test_send_that_detaches_during_publish(self) -> None:
        """A stream detached by another's write does not break the fan-out."""
        hub = self.hub

        class Detacher(FakeStream):
            def send(self, frame: bytes) -> bool:
                for s in hub.streams_of("u"):
                    hub.detach(s)
                return super().send(frame)

        hub.attach(Detacher("u"))
        hub.attach(FakeStream("u"))
        self.assertEqual(hub.publish(Message("n", "u", "1")).delivered, 2)

    def test_heartbeat_to_all(self) -> None:
        """A heartbeat goes to every stream of every user, with JSON time data."""
        streams = [FakeStream("u1"), FakeStream("u1"), FakeStream("u2")]
        for s in streams:
            self.hub.attach(s)
        self.assertEqual(self.hub.heartbeat(), 3)
        (event,) = parse_frames(streams[2].frames[0])
        self.assertEqual(event["event"], "heartbeat")
        self.assertEqual(event["data"], '{"time": 1700000000000}')
        self.assertNotIn("id", event)  # Last-Event-ID stays the last notification

    def test_heartbeat_logs_errors(self) -> None:
        """A failing heartbeat is logged and returns, so the LoopingCall goes on."""
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.hub.attach(FakeStream("u", fail=True))
        self.assertEqual(self.hub.heartbeat(), 0)
        self.assertEqual(self.hub.keepalive(), 0)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        self.assertEqual(len(observer), 2)

    def test_failing_stream_costs_nobody_else(self) -> None:
        """A stream whose write raises is logged; the others still get the frame."""
        good = [FakeStream("u"), FakeStream("u"), FakeStream("v")]
        self.hub.attach(FakeStream("u", fail=True))
        for s in good:
            self.hub.attach(s)
        self.assertEqual(self.hub.publish(Message("notify", "u", "1")).delivered, 2)
        self.assertEqual(self.hub.heartbeat(), 3)
        self.assertEqual([len(s.frames) for s in good], [2, 2, 1])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)

    def test_keepalive(self) -> None:
        """Keepalive writes an SSE comment to every stream."""
        s = FakeStream("u")
        self.hub.attach(s)
        self.hub.keepalive()
        self.assertEqual(s.frames, [KEEPALIVE_FRAME])

    def test_close_all(self) -> None:
        """Shutdown closes and detaches every stream."""
        streams = [FakeStream("a"), FakeStream("b")]
        for s in streams:
            self.hub.attach(s)
        self.hub.close_all()
        self.assertTrue(all(s.closed for s in streams))
        self.assertEqual(self.hub.stream_count, 0)

    def test_users(self) -> None:
        """users() lists each user with its streams."""
        a, b = FakeStream("a"), FakeStream("a")
        self.hub.attach(a)
        self.hub.attach(b)
        self.assertEqual(dict(self.hub.users()), {"a": frozenset({a, b})})
