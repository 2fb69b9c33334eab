"""
Tests for L{notificator.broker.local}: the local broker (ids, history,
fan-out through the hub).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from notificator.broker import Published, Unavailable
from notificator.broker.local import LocalBroker
from notificator.config import defaults
from notificator.events import Message, event_key
from notificator.history import HistoryFile, Journal
from notificator.hub import Hub
from notificator.stats import Stats
from tests.support import FakeStream, evolved, parse_frames

T0 = 1_800_000_000.0


class Node:
    """One broker over a hub, with its history journal in C{directory} (or none)."""

    def __init__(
        self, testcase: SynchronousTestCase, directory: str | None, clock: Clock, **history: Any
    ) -> None:
        self.clock = clock
        self.stats = Stats(clock.seconds())
        self.hub = Hub(clock, self.stats)
        journal = None
        if directory is not None:
            journal = Journal(HistoryFile(directory), clock, maybeDeferred)
        self.broker = LocalBroker(
            self.hub,
            self.stats,
            clock,
            evolved(defaults().sse.history, {"directory": directory, **history}),
            journal,
        )
        self.broker.startService()
        self.testcase = testcase

    def publish(self, user: str, data: str) -> Published:
        return self.broker.publish(Message("notify", user, data))

    def replay(self, user: str, last: str) -> Any:
        return self.testcase.successResultOf(self.broker.replay(user, last))

    def stop(self) -> None:
        self.testcase.successResultOf(self.broker.stopService() or maybeDeferred(lambda: None))


class LocalBrokerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.node = Node(self, None, self.clock)

    def test_publish_records_and_delivers_the_same_bytes(self) -> None:
        """One encoding: the frame streams get is the frame replayed."""
        tab = FakeStream("u")
        self.node.hub.attach(tab)
        published = self.node.publish("u", '{"a":1}')
        self.assertEqual((published.delivered, published.nodes), (1, None))
        (event,) = parse_frames(tab.frames[0])
        self.assertEqual(event, {"id": published.event_id, "event": "notify", "data": '{"a":1}'})
        replay = self.node.replay("u", "0-0")
        self.assertIs(replay.frames[0], tab.frames[0])
        self.assertEqual(self.node.stats.published, 1)

    def test_ids_increase_and_replay_follows_them(self) -> None:
        """Ids increase (also within one millisecond); a replay after one gives the rest."""
        ids = [self.node.publish("u", str(n)).event_id for n in range(5)]
        self.assertEqual(sorted(ids, key=event_key), ids)
        self.assertEqual(len(set(ids)), 5)
        replay = self.node.replay("u", ids[1])
        self.assertTrue(replay.complete)
        self.assertEqual([parse_frames(f)[0]["data"] for f in replay.frames], ["2", "3", "4"])

    def test_history_off(self) -> None:
        """sse.history.size 0: nothing is kept and a reconnect gets nothing, no reset."""
        node = Node(self, None, self.clock, size=0)
        node.publish("u", "1")
        replay = node.replay("u", "0-0")
        self.assertEqual((replay.complete, replay.frames), (True, ()))


class PositionTests(SynchronousTestCase):
    """
    L{LocalBroker.position}, the id a stream's C{connect} carries: a
    reconnect from it is replayed what was published after, across a
    restart that kept the history; a restart that lost it: lost, the reset.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.directory = self.mktemp()

    def test_before_any_notification_and_across_a_restart_that_kept_the_history(self) -> None:
        """
        Before any notification: the history's start; the first id is
        after it even in the same millisecond (so it is replayed); the
        position survives a clean restart, and then is the last id given.
        """
        node = Node(self, self.directory, self.clock)
        position = node.broker.position
        self.assertEqual(position, f"{int(T0 * 1000)}-0")
        assert position is not None
        replay = node.replay("u", position)
        self.assertEqual((replay.complete, replay.reason, replay.frames), (True, None, ()))
        first = node.publish("u", "1")  # the same millisecond
        self.assertGreater(event_key(first.event_id), event_key(position))
        self.assertEqual(node.broker.position, first.event_id)
        node.stop()
        self.clock.advance(5)
        again = Node(self, self.directory, self.clock)
        self.assertEqual(again.broker.position, first.event_id)
        missed = again.publish("u", "2")
        for last, data in [(position, ["1", "2"]), (first.event_id, ["2"])]:
            replay = again.replay("u", last)
            self.assertTrue(replay.complete, last)
            self.assertEqual([parse_frames(f)[0]["data"] for f in replay.frames], data)
        self.assertEqual(again.broker.position, missed.event_id)
        again.stop()

    def test_nothing_given_across_a_restart_that_kept_the_history(self) -> None:
        """No notification ever: the position (the start) is known after a clean restart."""
        node = Node(self, self.directory, self.clock)
        position = node.broker.position
        assert position is not None
        node.stop()
        self.clock.advance(5)
        again = Node(self, self.directory, self.clock)
        self.assertEqual(again.broker.position, position)
        missed = again.publish("u", "1")
        replay = again.replay("u", position)
        self.assertEqual((replay.complete, len(replay.frames)), (True, 1))
        self.assertEqual(parse_frames(replay.frames[0])[0]["id"], missed.event_id)
        again.stop()

    def test_across_a_restart_that_lost_the_history(self) -> None:
        """History in memory only: a position from before the restart is lost (the reset)."""
        node = Node(self, None, self.clock)
        position = node.broker.position
        assert position is not None
        self.clock.advance(5)
        again = Node(self, None, self.clock)
        replay = again.replay("u", position)
        self.assertEqual((replay.complete, replay.reason), (False, "lost"))

    def test_history_off_no_position(self) -> None:
        """sse.history.size 0: no position (the connect carries no id)."""
        node = Node(self, None, self.clock, size=0)
        node.publish("u", "1")
        self.assertIsNone(node.broker.position)


class StoppingTests(SynchronousTestCase):
    """A stopping broker refuses what it could no longer keep."""

    def test_a_publish_once_the_stop_has_begun_is_refused_not_lost(self) -> None:
        """
        Once the broker's stop has begun (its history's last snapshot), a
        publish (a sender's keep-alive connection outlives the listeners)
        fails with L{Unavailable}, a 503 the sender retries: it is never
        answered and then missing after the restart.
        """
        directory = self.mktemp()
        clock = Clock()
        clock.advance(T0)
        node = Node(self, directory, clock)
        kept = node.publish("u", "1")
        node.stop()
        late = node.broker.publish(Message("notify", "u", "2"))
        self.assertIsInstance(late, Deferred)
        failure = self.failureResultOf(late, Unavailable)
        self.assertEqual(failure.getErrorMessage(), "the server is stopping")
        self.assertEqual(node.stats.published, 1)

        restarted = Node(self, directory, clock)
        replay = restarted.replay("u", "0-0")
        self.assertEqual([f["data"] for f in parse_frames(b"".join(replay.frames))], ["1"])
        self.assertEqual(parse_frames(replay.frames[0])[0]["id"], kept.event_id)
        restarted.stop()
