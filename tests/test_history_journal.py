"""
Tests for L{notificator.history.journal}: the history's journal on disk,
and the writer that keeps it across restarts.
"""

from __future__ import annotations

import gc
import os
import tracemalloc
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from notificator.events import SEQ_SPAN, encode_frame, event_key
from notificator.history import (
    LOST,
    MAGIC,
    MAX_MS,
    CorruptHistory,
    History,
    HistoryFile,
    encode_entry,
    encode_state,
    read_journal,
    snapshot,
)
from notificator.history.journal import _ENTRY, _record
from tests.support import FailingDisk, parse_frames
from tests.test_broker_local import Node

T0 = 1_800_000_000.0

#: A memory bound that these tests do not reach.
MEMORY = 64 * 1024 * 1024


def key(ms: int, seq: int = 0) -> int:
    return ms * SEQ_SPAN + seq


def frame(n: int) -> bytes:
    return b"id: %d-0\nevent: notify\ndata: %d\n\n" % (n, n)


class JournalFormatTests(SynchronousTestCase):
    def history(self) -> History:
        clock = Clock()
        clock.advance(T0)
        history = History(clock, size=2, ttl=3600, max_bytes=MEMORY, known_since=key(900))
        for n, user in enumerate(["홍길동", "u", "홍길동", "홍길동", "\ud800x"], 1):
            history.append(user, key(1000 + n, n), frame(n))
        return history

    def test_snapshot_round_trip(self) -> None:
        """A snapshot read back gives the same replays, floors and ids."""
        history = self.history()
        loaded = read_journal(snapshot(history.state(), clean=True))
        self.assertTrue(loaded.clean)
        clock = Clock()
        clock.advance(T0 + 1)
        again = History(clock, size=2, ttl=3600, max_bytes=MEMORY)
        again.load(loaded)
        self.assertEqual((again.known_since, again.last, again.floor), (key(900), key(1005, 5), 0))
        for user in ["홍길동", "u", "\ud800x", "none"]:
            for last in [key(1000), key(1001, 1), key(1002, 2), key(1003, 3)]:
                self.assertEqual(again.since(user, last), history.since(user, last), (user, last))

    def test_appended_records_after_a_snapshot_are_not_clean(self) -> None:
        """Records appended after the last clean mark mean the server was killed."""
        history = self.history()
        data = snapshot(history.state(), clean=True) + encode_entry("u", key(1006), frame(6), T0)
        loaded = read_journal(data)
        self.assertFalse(loaded.clean)
        self.assertEqual(loaded.last, key(1006))

    def test_torn_tail_keeps_what_came_before(self) -> None:
        """A record cut short at the end (a kill mid-write) ends the reading, no error."""
        history = self.history()
        whole = snapshot(history.state(), clean=False) + encode_entry("u", key(1006), frame(6), T0)
        for cut in range(1, 20):
            loaded = read_journal(whole[:-cut])
            self.assertTrue(loaded.torn)
            self.assertEqual(loaded.last, key(1005, 5))

    def test_corruption_is_refused(self) -> None:
        """Another file, another version, or damage in the middle: CorruptHistory."""
        good = snapshot(self.history().state(), clean=True)
        middle = len(good) // 2
        damaged = good[:middle] + bytes([good[middle] ^ 0xFF]) + good[middle + 1 :]
        for data in [b"", b"hello", b"NOTIFICATOR-HISTORY 2\n", damaged, MAGIC]:
            self.assertRaises(CorruptHistory, read_journal, data)

    def test_keys_a_float_cannot_hold_are_corruption(self) -> None:
        """A record whose id's milliseconds are 2 ** 53 or more is refused as corrupt."""
        good = snapshot(self.history().state(), clean=False)
        self.assertRaises(
            CorruptHistory, read_journal, good + encode_entry("u", MAX_MS * SEQ_SPAN, frame(6), T0)
        )
        loaded = read_journal(good + encode_entry("u", (MAX_MS - 1) * SEQ_SPAN, frame(6), T0))
        self.assertEqual(loaded.last, (MAX_MS - 1) * SEQ_SPAN)

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(
            st.tuples(st.sampled_from(["a", "b", "홍"]), st.integers(0, 30)),
            max_size=40,
            unique_by=lambda e: e[1],
        ),
        st.integers(1, 4),
        st.integers(0, 31),
    )
    def test_a_journal_in_any_order_loads_as_appended_in_key_order(
        self, records: list[tuple[str, int]], size: int, last: int
    ) -> None:
        """
        Whatever order its records are in (a snapshot's runs of one user,
        then what was appended, or any other), a journal loads as if its
        frames were appended in key order: the same replays, floors and
        last id.
        """
        clock = Clock()
        clock.advance(T0)
        data = MAGIC + encode_state(key(900), 0, 0, False)
        data += b"".join(encode_entry(u, key(1000 + n), frame(n), T0 + n) for u, n in records)
        loaded = read_journal(data)
        loaded_history = History(clock, size=size, ttl=25, max_bytes=MEMORY)
        loaded_history.load(loaded)
        appended = History(clock, size=size, ttl=25, max_bytes=MEMORY)
        for u, n in sorted(records, key=lambda e: e[1]):
            appended.append(u, key(1000 + n), frame(n), T0 + n)
        appended.known_since = key(900)
        appended.expire()
        self.assertEqual(
            (len(loaded_history), loaded_history.floor, loaded_history.last),
            (len(appended), appended.floor, appended.last),
        )
        for user in ["a", "b", "홍", "none"]:
            self.assertEqual(
                loaded_history.since(user, key(1000 + last)), appended.since(user, key(1000 + last))
            )

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=300))
    def test_any_bytes_load_or_are_refused(self, tail: bytes) -> None:
        """Garbage after the magic either loads (torn) or raises CorruptHistory, nothing else."""
        try:
            read_journal(MAGIC + tail)
        except CorruptHistory:
            pass


class HistoryFileTests(SynchronousTestCase):
    def test_corrupt_file_is_set_aside_with_one_warning(self) -> None:
        """A file that is not a history is renamed aside; load answers None."""
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, HistoryFile.NAME)
        with open(path, "wb") as f:
            f.write(b"not a history")
        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import globalLogPublisher

        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.assertIsNone(HistoryFile(directory).load())
        self.assertFalse(os.path.exists(path))
        aside = [n for n in os.listdir(directory) if n.startswith(HistoryFile.NAME + ".corrupt-")]
        self.assertEqual(len(aside), 1)
        warnings = [e for e in events if "set aside" in e.get("log_format", "")]
        self.assertEqual(len(warnings), 1)

    def test_a_snapshot_is_written_as_it_is_made(self) -> None:
        """
        Writing a snapshot of an 8 MB history takes about the file's buffer
        in memory (tracemalloc's peak), not the whole snapshot.
        """
        clock = Clock()
        clock.advance(T0)
        history = History(clock, size=100, ttl=3600, max_bytes=MEMORY, known_since=key(1))
        for n in range(8000):
            history.append(f"user{n % 100}", key(10 + n), b"x" * 1000)
        state = history.state()
        file = HistoryFile(os.path.join(self.mktemp(), "history"))
        gc.collect()
        tracemalloc.start()
        try:
            file.write_snapshot(state)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            file.close()
        self.assertGreater(file.size, 8_000_000)
        self.assertLess(peak, HistoryFile.WRITE_BUFFER + 512 * 1024)

    def test_a_loaded_history_keeps_only_what_it_holds(self) -> None:
        """
        Loading a journal of 300 users with 24 notifications each leaves in
        memory (tracemalloc) at most twice the journal's size, and only a
        few objects per user that the cyclic garbage collector tracks: what
        the reading made per record is gone.
        """
        directory = os.path.join(self.mktemp(), "history")
        clock = Clock()
        clock.advance(T0)
        source = History(clock, size=100, ttl=3600, max_bytes=MEMORY, known_since=key(1))
        for n in range(300 * 24):
            ms = 1_800_000_000_000 + n
            data = '{"s":%d,"t":%d.123,"pad":"benchmark notification"}' % (n, ms)
            source.append(f"u{n % 300}", key(ms), encode_frame("notify", data, f"{ms}-0"))
        file = HistoryFile(directory)
        file.write_snapshot(source.state(), clean=True)
        file.close()
        del source
        gc.collect()
        objects = len(gc.get_objects())
        tracemalloc.start()
        try:
            history = History(clock, size=100, ttl=3600, max_bytes=MEMORY)
            loaded = HistoryFile(directory).load()
            assert loaded is not None
            history.load(loaded)
            del loaded
            gc.collect()
            used = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        self.assertEqual(len(history), 300 * 24)
        self.assertLessEqual(used, 2 * file.size)
        self.assertLessEqual(len(gc.get_objects()) - objects, 3 * 300 + 10)

    def test_write_snapshot_then_append(self) -> None:
        """A snapshot replaces the file atomically; appends go after it."""
        directory = os.path.join(self.mktemp(), "var", "history")
        file = HistoryFile(directory)
        clock = Clock()
        clock.advance(T0)
        history = History(clock, size=100, ttl=3600, max_bytes=MEMORY, known_since=key(1))
        history.append("u", key(10), frame(10))
        file.write_snapshot(history.state())
        file.append(encode_entry("u", key(11), frame(11), T0))
        file.close()
        loaded = HistoryFile(directory).load()
        assert loaded is not None
        self.assertEqual([k for k, _, _ in loaded.users["u"][1]], [key(10), key(11)])
        self.assertFalse(os.path.exists(os.path.join(directory, HistoryFile.NAME + ".tmp")))

    @settings(max_examples=50, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.text(min_size=1, max_size=20),
                st.integers(0, 10**9),
                st.integers(0, SEQ_SPAN - 1),
                st.binary(max_size=300),
                st.floats(0, 4e9),
            ),
            max_size=8,
        )
    )
    def test_append_entries_writes_encode_entry(
        self, entries: list[tuple[str, int, int, bytes, float]]
    ) -> None:
        """append_entries writes, byte for byte, the records encode_entry makes."""
        import tempfile

        rows = [(u, ms * SEQ_SPAN + seq, f, when) for u, ms, seq, f, when in entries]
        with tempfile.TemporaryDirectory() as directory:
            file = HistoryFile(directory)
            file.write_snapshot(History(Clock(), size=10, ttl=60, max_bytes=MEMORY).state())
            with open(file.path, "rb") as f:
                before = f.read()
            file.append_entries(rows)
            file.close()
            with open(file.path, "rb") as f:
                written = f.read()
        self.assertEqual(written, before + b"".join(encode_entry(*r) for r in rows))
        # And encode_entry is the record layout read_journal reads: the
        # generic record (kind, length, payload, checksum) of an entry.
        for user_id, key, frame, when in rows:
            user = user_id.encode("utf-8", "surrogatepass")
            payload = _ENTRY.pack(*divmod(key, SEQ_SPAN), when, len(user)) + user + frame
            self.assertEqual(encode_entry(user_id, key, frame, when), _record(b"E", payload))

    def journal_with(self, directory: str, *ns: int) -> HistoryFile:
        """A journal in C{directory}: a snapshot holding frame 10 of u, then appended frames C{ns}."""
        file = HistoryFile(directory)
        clock = Clock()
        clock.advance(T0)
        history = History(clock, size=100, ttl=3600, max_bytes=MEMORY, known_since=key(1))
        history.append("u", key(10), frame(10))
        file.write_snapshot(history.state())
        for n in ns:
            file.append(encode_entry("u", key(n), frame(n), T0))
        return file

    def read_back(self, directory: str) -> tuple[list[int], bool]:
        """The keys of u's frames in the journal in C{directory}, and whether it ends torn."""
        loaded = HistoryFile(directory).load()
        assert loaded is not None, "the journal was set aside as corrupt"
        return [k for k, _, _ in loaded.users["u"][1]], loaded.torn

    def test_a_failed_append_leaves_no_record_cut_short(self) -> None:
        """
        An append that fails halfway (a full disk: half its bytes written)
        is cut back off: the next appends follow the last whole record, and
        the journal reads back whole, not set aside as corrupt.
        """
        disk = FailingDisk(self)
        directory = self.mktemp()
        file = self.journal_with(directory, 11)
        disk.failing = {"append"}
        self.assertRaises(OSError, file.append, encode_entry("u", key(12), frame(12), T0))
        disk.failing = set()
        file.append(encode_entry("u", key(12), frame(12), T0))
        file.append(encode_entry("u", key(13), frame(13), T0))
        file.close()
        self.assertEqual(self.read_back(directory), ([key(10), key(11), key(12), key(13)], False))

    def test_an_append_after_a_record_left_cut_short_cuts_it_first(self) -> None:
        """
        When the failed append cannot even be cut back off (the disk fails
        that too), the record cut short stays at the end, where a reader
        takes it for a crash and keeps what came before; no later append
        goes after it until it is cut off.
        """
        disk = FailingDisk(self)
        directory = self.mktemp()
        file = self.journal_with(directory, 11)
        disk.failing = {"append", "truncate"}
        self.assertRaises(OSError, file.append, encode_entry("u", key(12), frame(12), T0))
        disk.failing = {"truncate"}
        self.assertRaises(OSError, file.append, encode_entry("u", key(12), frame(12), T0))
        self.assertEqual(self.read_back(directory), ([key(10), key(11)], True))
        disk.failing = set()
        file.append(encode_entry("u", key(12), frame(12), T0))
        file.close()
        self.assertEqual(self.read_back(directory), ([key(10), key(11), key(12)], False))

    def test_a_failed_snapshot_keeps_the_journal(self) -> None:
        """
        A snapshot that fails (no room for the new copy) leaves the journal
        as it was, appendable, and no half-written C{.tmp} taking the room.
        """
        disk = FailingDisk(self)
        directory = self.mktemp()
        file = self.journal_with(directory, 11)
        clock = Clock()
        clock.advance(T0)
        history = History(clock, size=100, ttl=3600, max_bytes=MEMORY, known_since=key(1))
        history.append("u", key(10), frame(10))
        history.append("u", key(11), frame(11))
        disk.failing = {"snapshot"}
        self.assertRaises(OSError, file.write_snapshot, history.state())
        self.assertFalse(os.path.exists(os.path.join(directory, HistoryFile.NAME + ".tmp")))
        file.append(encode_entry("u", key(12), frame(12), T0))
        file.close()
        self.assertEqual(self.read_back(directory), ([key(10), key(11), key(12)], False))


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
