"""
Tests for L{notificator.logs.files}: the buffered, daily-rotated log files
and the removal of old rotations.
"""

from __future__ import annotations

import datetime
import os

from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from notificator import logs


class FakeDate:
    """
    A settable "today" for a L{DailyLogFile}: C{toDate()} answers the set
    date, C{toDate(t)} (the file's mtime, read on open) too.
    """

    def __init__(self, today: tuple[int, int, int]) -> None:
        self.today = today

    def __call__(self, *args: float) -> tuple[int, int, int]:
        return self.today


def lines(path: str) -> list[str]:
    with open(path, encoding="utf-8", newline="") as f:
        return f.read().splitlines(keepends=True)


def assert_one_line_each(testcase: SynchronousTestCase, text_lines: list[str]) -> None:
    """Every line ends in a single \\n and holds no other CR or LF."""
    for line in text_lines:
        testcase.assertTrue(line.endswith("\n"), repr(line))
        testcase.assertNotIn("\r", line)
        testcase.assertNotIn("\n", line[:-1])


class BufferedDailyLogFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "access.log")
        self.log = logs.BufferedDailyLogFile("access.log", self.dir)
        self.addCleanup(lambda: self.log.closed or self.log.close())
        self.date = FakeDate((2026, 11, 23))
        self.log.toDate = self.date  # type: ignore[method-assign]
        self.log.lastDate = self.date.today

    def test_writes_are_buffered_until_tick(self) -> None:
        """A written line reaches the file on the next tick, not before."""
        self.log.write("one\n")
        self.assertEqual(lines(self.path), [])
        self.log.tick()
        self.assertEqual(lines(self.path), ["one\n"])

    def test_tick_rotates_when_the_date_changes(self) -> None:
        """After midnight the next tick moves the day's lines to access.log.Y_M_D."""
        self.log.write("monday\n")
        self.log.tick()
        self.log.write("late monday\n")
        self.date.today = (2026, 11, 24)
        self.log.tick()
        self.log.write("tuesday\n")
        self.log.tick()
        self.assertEqual(lines(self.path + ".2026_11_23"), ["monday\n", "late monday\n"])
        self.assertEqual(lines(self.path), ["tuesday\n"])

    def test_no_rotation_within_a_day(self) -> None:
        """Ticks on the same day never rotate."""
        for i in range(3):
            self.log.write(f"{i}\n")
            self.log.tick()
        self.assertEqual(sorted(os.listdir(self.dir)), ["access.log"])

    def test_close_flushes(self) -> None:
        """Closing the file writes what is still buffered."""
        self.log.write("last\n")
        self.log.close()
        self.assertEqual(lines(self.path), ["last\n"])

    def test_appends_to_an_existing_file(self) -> None:
        """A restart keeps the day's earlier lines."""
        self.log.write("before restart\n")
        self.log.close()
        again = logs.BufferedDailyLogFile("access.log", self.dir)
        again.write("after restart\n")
        again.close()
        self.assertEqual(lines(self.path), ["before restart\n", "after restart\n"])


def touch(directory: str, *names: str) -> None:
    os.makedirs(directory, exist_ok=True)
    for name in names:
        with open(os.path.join(directory, name), "w") as f:
            f.write(name + "\n")


class OldLogRemoverTests(SynchronousTestCase):
    """server.log.keepDays: real files, removed in batches on a Clock."""

    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())
        self.clock = Clock()
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        # access.log of 2026-09-01 .. 2026-11-23 (84 rotated files).
        start = datetime.date(2026, 9, 1)
        self.days = [start + datetime.timedelta(days=i) for i in range(84)]
        touch(
            self.dir, "access.log", *(f"access.log.{d.year}_{d.month}_{d.day}" for d in self.days)
        )
        # Not this log's rotations: kept whatever their age.
        self.others = [
            "sse.log.2020_1_1",
            "access.log.2020_1_1.gz",
            "access.log.2026_2_30",
            "access.log.old",
            "xaccess.log.2020_1_1",
        ]
        touch(self.dir, *self.others)

    def remaining(self) -> list[str]:
        return sorted(os.listdir(self.dir))

    def test_keeps_the_last_days_and_nothing_else_is_touched(self) -> None:
        """keepDays 30 on 2026-11-24: files of 2026-10-25 and later stay, the 54 older go."""
        remover = logs.OldLogRemover(os.path.join(self.dir, "access.log"), 30, self.clock)
        remover.prune((2026, 11, 24))
        self.assertEqual(len(os.listdir(self.dir)), 1 + 84 + 5, "nothing removed in prune itself")
        turns = 0
        while self.clock.getDelayedCalls():
            before = len(os.listdir(self.dir))
            self.clock.advance(logs.OldLogRemover.PAUSE)
            self.assertLessEqual(before - len(os.listdir(self.dir)), logs.OldLogRemover.BATCH)
            turns += 1
        self.assertEqual(turns, 3)  # 54 files, 20 per turn
        kept = [d for d in self.days if d >= datetime.date(2026, 10, 25)]
        self.assertEqual(
            self.remaining(),
            sorted(
                [
                    "access.log",
                    *self.others,
                    *(f"access.log.{d.year}_{d.month}_{d.day}" for d in kept),
                ]
            ),
        )
        self.assertEqual(len(kept), 30)
        [done] = [e for e in self.events if "count" in e]
        self.assertEqual((done["count"], done["name"], done["days"]), (54, "access.log", 30))

    def test_zero_keeps_everything(self) -> None:
        """keepDays 0: nothing is listed or removed."""
        remover = logs.OldLogRemover(os.path.join(self.dir, "access.log"), 0, self.clock)
        remover.prune((2030, 1, 1))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(os.listdir(self.dir)), 1 + 84 + 5)

    def test_stop_leaves_the_rest(self) -> None:
        """Stopping mid-way cancels the next batch; the rest waits for the next prune."""
        remover = logs.OldLogRemover(os.path.join(self.dir, "access.log"), 30, self.clock)
        remover.prune((2026, 11, 24))
        self.clock.advance(logs.OldLogRemover.PAUSE)
        remover.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(os.listdir(self.dir)), 1 + 84 + 5 - 20)
        remover.prune((2026, 11, 24))
        while self.clock.getDelayedCalls():
            self.clock.advance(logs.OldLogRemover.PAUSE)
        self.assertEqual(len(os.listdir(self.dir)), 1 + 30 + 5)

    def test_rotation_prunes(self) -> None:
        """A BufferedDailyLogFile calls its on_rotate with the new date after rotating."""
        log = logs.BufferedDailyLogFile("access.log", self.dir)
        self.addCleanup(log.close)
        date = FakeDate((2026, 11, 23))
        log.toDate = date  # type: ignore[method-assign]
        log.lastDate = date.today
        remover = logs.OldLogRemover(log.path, 1, self.clock)
        log.on_rotate = remover.prune
        log.tick()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # The 2026_11_23 file exists already (touched above), so DailyLogFile
        # does not rotate onto it; remove it to let the rotation happen.
        os.unlink(os.path.join(self.dir, "access.log.2026_11_23"))
        date.today = (2026, 11, 24)
        log.tick()
        while self.clock.getDelayedCalls():
            self.clock.advance(logs.OldLogRemover.PAUSE)
        self.assertEqual(
            self.remaining(),
            sorted(["access.log", "access.log.2026_11_23", *self.others]),
        )
