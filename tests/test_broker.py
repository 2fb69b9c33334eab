"""
Tests for L{notificator.broker}: the local broker (ids, history, fan-out
through the hub) and the journal that keeps the history across restarts.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import maybeDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from notificator.broker import Journal, LocalBroker, Published
from notificator.config import defaults
from notificator.events import Message, event_key
from notificator.history import LOST, HistoryFile, read_journal
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


class JournalTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.dir = os.path.join(os.path.abspath(self.mktemp()), "var", "history")

    def test_restart_keeps_the_history_and_the_ids(self) -> None:
        """After a graceful stop and start, a reconnect gets what it missed; ids go on increasing."""
        first = Node(self, self.dir, self.clock)
        ids = [first.publish("u", str(n)).event_id for n in range(3)]
        self.clock.advance(0.5)  # a flush
        first.stop()
        # The clock went back across the restart: ids still increase.
        clock = Clock()
        clock.advance(T0 - 60)
        second = Node(self, self.dir, clock)
        replay = second.replay("u", ids[0])
        self.assertTrue(replay.complete)
        self.assertEqual([parse_frames(f)[0]["id"] for f in replay.frames], ids[1:])
        later = second.publish("u", "3").event_id
        self.assertGreater(event_key(later), event_key(ids[-1]))

    def test_stop_writes_a_clean_snapshot(self) -> None:
        """What is on disk after a stop is one clean snapshot."""
        node = Node(self, self.dir, self.clock)
        node.publish("u", "1")
        node.stop()
        with open(os.path.join(self.dir, HistoryFile.NAME), "rb") as f:
            loaded = read_journal(f.read())
        self.assertTrue(loaded.clean)
        self.assertEqual(len(loaded.users["u"][1]), 1)

    def test_killed_means_every_reconnect_gets_a_reset(self) -> None:
        """Without the clean mark, what was lost is unknown: reconnects get everything kept and 'lost'."""
        node = Node(self, self.dir, self.clock)
        first = node.publish("u", "1").event_id
        node.publish("u", "2")
        self.clock.advance(0.5)  # written, but never stopped: killed
        node.broker.journal.file.close()
        self.clock.advance(10)
        again = Node(self, self.dir, self.clock)
        replay = again.replay("u", first)
        self.assertEqual((replay.complete, replay.reason), (False, LOST))
        self.assertEqual([parse_frames(f)[0]["data"] for f in replay.frames], ["1", "2"])
        # Ids from now on are known again.
        third = again.publish("u", "3").event_id
        self.assertTrue(again.replay("u", third).complete)

    def test_journal_is_compacted_when_it_grows(self) -> None:
        """Appends past twice what is kept (plus 1 MiB) are replaced by a snapshot."""
        node = Node(self, self.dir, self.clock, size=2)
        big = "x" * 20_000
        for n in range(120):
            node.publish("u", f'"{big}{n}"')
            self.clock.advance(0.25)
        path = os.path.join(self.dir, HistoryFile.NAME)
        self.assertLess(os.path.getsize(path), 2 * 2 * 20_100 + (1 << 20) + 50_000)
        node.stop()
        with open(path, "rb") as f:
            loaded = read_journal(f.read())
        self.assertEqual(len(loaded.users["u"][1]), 2)

    def test_a_full_history_is_not_rewritten_every_tick(self) -> None:
        """
        A history at its memory bound whose journal is much larger than its
        memory (long user ids, repeated in every record): once compacted, the
        journal is not compacted again until as much again plus the margin
        was appended, not at every flush; the file stays within twice its
        snapshot plus the margin.
        """
        node = Node(self, self.dir, self.clock, max_bytes=1 << 20)
        journal = node.broker.journal
        history = node.broker.history
        file = journal.file
        snapshots: list[int] = []
        write_snapshot = file.write_snapshot

        def counted(*args: Any) -> None:
            write_snapshot(*args)
            snapshots.append(file.size)

        file.write_snapshot = counted  # type: ignore[method-assign]
        users = ["\U0001f514" * 250 + f"{n:06}" for n in range(100)]
        n = 0

        def tick() -> None:
            nonlocal n
            for _ in range(20):
                node.publish(users[n % len(users)], str(n))
                n += 1
            self.clock.advance(journal.interval)

        while history.bytes < 0.9 * history.max_bytes:
            tick()
        tick()  # the first compactions are behind
        before = len(snapshots)
        for _ in range(200):  # 4000 publishes, about 4.4 MB appended
            tick()
            self.assertLessEqual(file.size, 2 * snapshots[-1] + (1 << 20) + 100_000)
            if len(snapshots) - before > 3:
                break  # rewritten again and again
        # A snapshot is about 4 MB (a full history on disk): at most one more.
        self.assertGreater(snapshots[-1], 3 * history.max_bytes)
        self.assertLessEqual(len(snapshots) - before, 1, snapshots[before:])
        node.stop()

    def test_write_failure_is_logged_and_serving_goes_on(self) -> None:
        """A disk error is logged; publishing keeps working from memory."""
        node = Node(self, self.dir, self.clock)
        journal = node.broker.journal

        def broken(data: bytes) -> None:
            raise OSError(28, "No space left on device")

        journal.file.append = broken  # type: ignore[method-assign]
        node.publish("u", "1")
        self.clock.advance(0.5)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(node.publish("u", "2").delivered, 0)
        self.assertEqual(len(node.replay("u", "0-0").frames), 2)
