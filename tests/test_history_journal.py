"""Tests for L{notificator.history.journal}: the history's journal on disk."""

from __future__ import annotations

import gc
import os
import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from notificator.events import SEQ_SPAN
from notificator.history import (
    MAGIC,
    CorruptHistory,
    History,
    HistoryFile,
    encode_entry,
    read_journal,
    snapshot,
)
from tests.support import FailingDisk

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
