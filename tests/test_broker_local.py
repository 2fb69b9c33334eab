"""
Tests for L{notificator.broker.local}: the local broker (ids, history, fan-out
through the hub) and the journal that keeps the history across restarts.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import maybeDeferred
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from notificator.broker.local import Journal, LocalBroker, Published
from notificator.config import defaults
from notificator.events import Message, event_key
from notificator.history import LOST, HistoryFile, read_journal
from notificator.hub import Hub
from notificator.stats import Stats
from tests.support import FailingDisk, FakeStream, evolved, parse_frames

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
        """A disk error is one error line (no traceback); publishing keeps working from memory."""
        disk = FailingDisk(self)
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        node = Node(self, self.dir, self.clock)
        disk.failing = {"append"}
        node.publish("u", "1")
        self.clock.advance(0.5)
        (error,) = [e for e in events if e["log_level"] == LogLevel.error]
        self.assertNotIn("log_failure", error)
        self.assertIn("No space left on device", formatEvent(error))
        self.assertEqual(node.publish("u", "2").delivered, 0)
        self.assertEqual(len(node.replay("u", "0-0").frames), 2)


class FailingDiskTests(SynchronousTestCase):
    """
    The journal over a disk that fails for a while (full, or broken) and
    then works again (L{FailingDisk}): nothing published meanwhile is
    missing from it afterwards, and it is not rewritten at every tick.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.dir = os.path.join(os.path.abspath(self.mktemp()), "var", "history")
        self.disk = FailingDisk(self)
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def ticks(self, node: Node, seconds: float, publish: list[str] | None = None) -> None:
        """Let C{seconds} pass in flush intervals, publishing one of C{publish} (if any) in each."""
        journal = node.broker.journal
        for _ in range(round(seconds / journal.interval)):
            if publish is not None:
                publish.append(f"{len(publish)}")
                node.publish("u", publish[-1])
            self.clock.advance(journal.interval)

    def on_disk(self, node: Node) -> list[str]:
        """What a server killed now would read back of u's notifications (their data)."""
        node.broker.journal.file.close()
        loaded = HistoryFile(self.dir).load()
        assert loaded is not None
        return [parse_frames(frame)[0]["data"] for _, frame, _ in loaded.users["u"][1]]

    def logged(self, level: LogLevel) -> list[str]:
        return [formatEvent(e) for e in self.events if e["log_level"] == level]

    def test_nothing_published_while_appends_failed_is_lost(self) -> None:
        """
        Appends that fail keep what they were to write: once the disk works
        again it is written, so a server killed then reads back every
        notification published while the disk failed.  Meanwhile the tries
        back off (not one per 0.2 s tick), and each change of state is one
        log line: an error when the disk fails, an info when it works again.
        """
        node = Node(self, self.dir, self.clock)
        published: list[str] = []
        self.ticks(node, 1, published)
        self.disk.failing = {"append", "snapshot"}
        tries = self.disk.attempts["append"]
        self.ticks(node, 20, published)  # 100 ticks
        self.assertLessEqual(self.disk.attempts["append"] - tries, 6)
        self.disk.failing = set()
        self.ticks(node, 60)
        self.assertEqual(self.on_disk(node), published)
        self.assertEqual(len(self.logged(LogLevel.error)), 1, self.logged(LogLevel.error))
        self.assertEqual(
            [line for line in self.logged(LogLevel.info) if "again" in line],
            [f"the history is written to {node.broker.journal.file.path} again"],
        )

    def test_a_failing_snapshot_falls_back_to_appending(self) -> None:
        """
        A compaction whose snapshot fails (room for appends, none for a new
        copy) leaves what was pending to an append, so it is on disk at
        once; the snapshot is tried again less and less often, not at every
        tick, with one warning; once it succeeds, one line says so.
        """
        node = Node(self, self.dir, self.clock)
        journal = node.broker.journal
        journal.COMPACT_MARGIN = 0  # a compaction as soon as the journal doubles
        published: list[str] = []
        self.disk.failing = {"snapshot"}
        tries = self.disk.attempts["snapshot"]
        self.ticks(node, 10, published)  # 50 ticks, each due for a compaction
        self.assertLessEqual(self.disk.attempts["snapshot"] - tries, 5)
        self.assertEqual(self.on_disk(node), published)
        (warning,) = self.logged(LogLevel.warn)
        self.assertIn("compacting the history", warning)
        self.assertEqual(self.logged(LogLevel.error), [])
        self.disk.failing = set()
        self.ticks(node, 60)
        self.assertIn(
            f"the history in {journal.file.path} is compacted again", self.logged(LogLevel.info)
        )
        self.assertEqual(journal.file.size, journal.file.snapshot_size)
        self.assertEqual(self.on_disk(node), published)

    def test_what_waits_is_bounded_and_a_snapshot_catches_up(self) -> None:
        """
        While the disk fails, what waits to be written is bounded by the
        history's own memory bound (C{maxBytes}): past it, it is let go and
        the journal is written whole (a snapshot) once the disk works, with
        everything the history keeps.
        """
        node = Node(self, self.dir, self.clock, max_bytes=64 * 1024)
        journal = node.broker.journal
        self.disk.failing = {"append", "snapshot"}
        big = "x" * 1000
        for n in range(400):  # 400 KB published, 64 KiB kept
            node.publish("u", f'"{big}{n}"')
            self.clock.advance(journal.interval)
            self.assertLessEqual(journal.waiting, 64 * 1024 // 1000 + 2)
        self.disk.failing = set()
        self.ticks(node, 60)
        kept = [parse_frames(f)[0]["data"] for f in node.replay("u", "0-0").frames]
        self.assertGreater(len(kept), 10)
        self.assertEqual(self.on_disk(node), kept)

    def test_a_start_whose_snapshot_fails_serves_and_catches_up(self) -> None:
        """
        A start whose first snapshot fails serves from memory (one error
        line, no traceback, no refusal to start) and writes the whole
        history, the one it loaded and what came since, once the disk works.
        """
        first = Node(self, self.dir, self.clock)
        published: list[str] = []
        self.ticks(first, 1, published)
        first.stop()
        self.disk.failing = {"snapshot"}
        second = Node(self, self.dir, self.clock)
        self.ticks(second, 5, published)
        self.assertEqual(len(self.logged(LogLevel.error)), 1, self.logged(LogLevel.error))
        self.disk.failing = set()
        self.ticks(second, 60)
        self.assertEqual(self.on_disk(second), published)

    def test_a_stop_whose_snapshot_fails_appends(self) -> None:
        """
        When the last snapshot of a stop fails, what was pending is appended
        instead: the next start has it (the journal does not end clean).
        """
        node = Node(self, self.dir, self.clock)
        published: list[str] = []
        self.ticks(node, 1, published)
        published.append("last")
        node.publish("u", "last")  # not flushed yet
        self.disk.failing = {"snapshot"}
        node.stop()
        self.disk.failing = set()
        loaded = HistoryFile(self.dir).load()
        assert loaded is not None
        self.assertFalse(loaded.clean)
        data = [parse_frames(frame)[0]["data"] for _, frame, _ in loaded.users["u"][1]]
        self.assertEqual(data, published)
