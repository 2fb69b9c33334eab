"""Tests for L{notificator.hub.Hub}: registry, fan-out, heartbeat."""

from __future__ import annotations

import random
import typing

from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from notificator.events import KEEPALIVE_FRAME, encode_frame
from notificator.hub import Hub, Stream
from notificator.stats import Stats
from tests.support import FakeStream, parse_frames

FRAME = encode_frame("notify", '{"a":1}', "1-0")


class StreamTests(SynchronousTestCase):
    def test_declares_what_the_monitor_reads(self) -> None:
        """
        The Stream protocol declares what the hub and the monitor's
        C{/users} read of a stream (its user, number, start and peer), so
        the monitor reads them without C{getattr} defaults.
        """
        declared = typing.get_type_hints(Stream)
        self.assertEqual(
            declared,
            {"user_id": str, "connection_id": int, "connected_at": float, "peer": str},
        )


class HubTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.stats = Stats(started_at=self.clock.seconds())
        self.hub = Hub(clock=self.clock, stats=self.stats)

    def test_deliver_to_every_stream_of_the_user(self) -> None:
        """Three tabs of a user all get the very same bytes; another user gets nothing."""
        tabs = [FakeStream("u1") for _ in range(3)]
        other = FakeStream("u2")
        for s in tabs + [other]:
            self.hub.attach(s)
        self.assertTrue(self.hub.has_streams("u1"))
        self.assertEqual(self.hub.deliver("u1", FRAME), 3)
        self.assertEqual(other.frames, [])
        for tab in tabs:
            self.assertIs(tab.frames[0], FRAME)
        self.assertEqual(self.stats.delivered, 3)

    def test_deliver_to_nobody(self) -> None:
        """Delivering to a user with no stream reaches 0."""
        self.assertEqual(self.hub.deliver("nobody", FRAME), 0)
        self.assertFalse(self.hub.has_streams("nobody"))

    def test_attach_writes_the_backlog_first(self) -> None:
        """A stream attached with a backlog gets it, in order, before any live frame."""
        backlog = [encode_frame("notify", str(i), f"1-{i}") for i in range(3)]
        s = FakeStream("u")
        self.hub.attach(s, backlog)
        self.hub.deliver("u", FRAME)
        self.assertEqual(s.frames, backlog + [FRAME])
        self.assertEqual((self.stats.opened, self.hub.stream_count), (1, 1))

    def test_attach_of_a_stream_gone_during_its_backlog(self) -> None:
        """A stream that goes away while its backlog is written is not registered."""
        s = FakeStream("u", gone=True)
        self.hub.attach(s, [FRAME])
        self.assertEqual(self.hub.stream_count, 0)

    def test_gone_stream_not_counted(self) -> None:
        """A stream that is already gone is not counted as delivered."""
        self.hub.attach(FakeStream("u", gone=True))
        self.hub.attach(FakeStream("u"))
        self.assertEqual(self.hub.deliver("u", FRAME), 1)

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
        self.assertEqual(self.hub.deliver("u", FRAME), 0)
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
        self.assertEqual(hub.deliver("u", FRAME), 2)

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
        self.assertEqual(self.hub.deliver("u", FRAME), 2)
        self.assertEqual(self.hub.heartbeat(), 3)
        self.assertEqual([len(s.frames) for s in good], [2, 2, 1])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)

    def test_heartbeat_in_slices(self) -> None:
        """
        A heartbeat writes L{Hub.SWEEP_SLICE} streams per reactor turn, so a
        publish never waits for all of them; the last slice ends the sweep
        and times it whole.
        """
        self.hub.SWEEP_SLICE = 2
        streams = [FakeStream(f"u{i}") for i in range(5)]
        for s in streams:
            self.hub.attach(s)
        self.assertEqual(self.hub.heartbeat(), 2)
        self.assertEqual([len(s.frames) for s in streams], [1, 1, 0, 0, 0])
        self.assertTrue(self.hub.sweeping)
        # Between two slices a publish goes out at once.
        self.assertEqual(self.hub.deliver("u4", FRAME), 1)
        self.assertEqual(streams[4].frames, [FRAME])
        # The next slice is the next reactor turn's (Clock.advance runs
        # the slices it schedules, one after the other).
        (next_slice,) = self.clock.getDelayedCalls()
        self.assertEqual(next_slice.getTime(), self.clock.seconds())
        self.clock.advance(0)
        self.assertEqual([len(s.frames) for s in streams], [1, 1, 1, 1, 2])
        self.assertEqual(streams[4].frames[0], FRAME)
        self.assertFalse(self.hub.sweeping)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.stats.heartbeats, 1)

    def test_sweep_while_one_runs_is_skipped(self) -> None:
        """
        A keepalive or heartbeat while a sweep is unfinished is skipped: the
        running sweep reaches every stream, however often the timers fire.
        """
        self.hub.SWEEP_SLICE = 2
        streams = [FakeStream(f"u{i}") for i in range(4)]
        for s in streams:
            self.hub.attach(s)
        self.hub.heartbeat()
        self.assertEqual(self.hub.keepalive(), 0)
        self.assertEqual(self.hub.heartbeat(), 0)
        self.clock.advance(0)
        self.assertEqual([len(s.frames) for s in streams], [1, 1, 1, 1])
        self.assertNotIn(KEEPALIVE_FRAME, [f for s in streams for f in s.frames])
        self.assertFalse(self.hub.sweeping)
        self.assertEqual(self.stats.heartbeats, 1)
        self.assertEqual(self.hub.keepalive(), 2)

    def test_keepalive(self) -> None:
        """Keepalive writes an SSE comment to every stream."""
        s = FakeStream("u")
        self.hub.attach(s)
        self.hub.keepalive()
        self.assertEqual(s.frames, [KEEPALIVE_FRAME])

    def test_drain_spreads_the_ends_with_jittered_retry(self) -> None:
        """
        The drain turns new streams away and ends the open ones in random
        order, spread over the seconds given, each with retry plus jitter.
        """
        streams = [FakeStream(f"u{i % 7}") for i in range(100)]
        for s in streams:
            self.hub.attach(s)
        done = self.hub.drain(5.0, 3000, rng=random.Random(7))
        self.assertTrue(self.hub.draining)
        ended_at: dict[int, float] = {}
        for step in range(60):
            for i, s in enumerate(streams):
                if s.closed and i not in ended_at:
                    ended_at[i] = step * 0.1
            self.clock.advance(0.1)
        self.successResultOf(done)
        self.assertEqual(len(ended_at), 100)
        # About a fiftieth each tenth of a second, none bunched at the start.
        first_second = sum(1 for t in ended_at.values() if t < 1.0)
        self.assertTrue(15 <= first_second <= 25, first_second)
        self.assertLessEqual(max(ended_at.values()), 5.0)
        retries = [parse_frames(s.frames[-1])[0]["retry"] for s in streams]
        self.assertTrue(all(3000 <= int(r) <= 8000 for r in retries))
        self.assertGreater(len(set(retries)), 50)
        # Not in the order they were attached.
        order = sorted(range(100), key=lambda i: ended_at[i])
        self.assertNotEqual(order, sorted(order))
        self.assertEqual(self.hub.stream_count, 0)

    def test_drain_with_nothing_open_is_done(self) -> None:
        """No stream: the drain has nothing to wait for."""
        self.successResultOf(self.hub.drain(5.0, 3000))

    def test_close_all(self) -> None:
        """close_all closes and detaches every stream (the drain ends them over time)."""
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
