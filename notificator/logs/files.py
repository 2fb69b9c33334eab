# -*- test-case-name: tests.test_logs_files -*-
"""
The log files of C{server.log.dir}, rotated daily: L{BufferedDailyLogFile}
keeps lines in memory and writes them once a second (L{FLUSH_INTERVAL},
on a L{notificator.timers.Ticker}), and L{OldLogRemover} removes rotated files older than
C{server.log.keepDays}, so no cron job or logrotate is needed.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.logfile import DailyLogFile

#: Seconds between flushes (and rotation checks) of buffered log files.
FLUSH_INTERVAL = 1.0

#: Bytes of access-log lines kept in memory between flushes.
ACCESS_LOG_BUFFER = 256 * 1024


class OldLogRemover:
    """
    Deletes the rotated files of one daily log (C{<name>.<Y>_<M>_<D>}, as
    L{DailyLogFile} names them; nothing else in the directory is touched)
    whose date is more than C{keep_days} days before today:
    C{server.log.keepDays}, 0 keeps every file.

    L{prune} lists the directory once and unlinks at most L{BATCH} files
    at a time, L{PAUSE} seconds apart (on C{clock}), so a directory of
    years of files does not stall the server.  Call L{stop} when the log
    closes.
    """

    BATCH = 20
    PAUSE = 0.01

    def __init__(self, path: str, keep_days: int, clock: IReactorTime) -> None:
        # The namespace it had before the moves of issue 18: it is part of
        # every log line, and no log line changes.
        self.log = Logger("notificator.logs.OldLogRemover", self)
        self.directory, name = os.path.split(os.path.abspath(path))
        self.name = name
        self._pattern = re.compile(re.escape(name) + r"\.(\d{4})_(\d{1,2})_(\d{1,2})$")
        self.keep_days = keep_days
        self._clock = clock
        self._pending: list[str] = []
        self._removed = 0
        self._call: Any = None

    def old_files(self, today: tuple[int, int, int]) -> list[str]:
        """The rotated files dated before C{today - keep_days}, oldest first."""
        cutoff = datetime.date(*today) - datetime.timedelta(days=self.keep_days)
        found = []
        try:
            names = os.listdir(self.directory)
        except OSError:
            return []
        for entry in names:
            m = self._pattern.match(entry)
            if m is None:
                continue
            try:
                day = datetime.date(*map(int, m.groups()))
            except ValueError:
                continue  # not a date: not ours
            if day < cutoff:
                found.append((day, entry))
        return [os.path.join(self.directory, entry) for _, entry in sorted(found)]

    def prune(self, today: tuple[int, int, int]) -> None:
        """Start removing what is too old (no-op when keeping forever or already at it)."""
        if not self.keep_days or self._call is not None:
            return
        self._pending = self.old_files(today)
        self._removed = 0
        if self._pending:
            self._call = self._clock.callLater(self.PAUSE, self._batch)

    def _batch(self) -> None:
        self._call = None
        batch, self._pending = self._pending[: self.BATCH], self._pending[self.BATCH :]
        for path in batch:
            try:
                os.unlink(path)
                self._removed += 1
            except FileNotFoundError:
                pass
            except OSError as e:
                self.log.warn("cannot remove old log file {path}: {error}", path=path, error=e)
        if self._pending:
            self._call = self._clock.callLater(self.PAUSE, self._batch)
        else:
            self.log.info(
                "removed {count} {name} files older than {days} days",
                count=self._removed,
                name=self.name,
                days=self.keep_days,
            )

    def stop(self) -> None:
        """Leave the rest for the next start (nothing runs after the log closes)."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._pending = []


class BufferedDailyLogFile(DailyLogFile):
    """
    A L{DailyLogFile} whose writes go to an in-memory buffer.

    L{DailyLogFile} writes unbuffered and looks at the date twice per
    line; here C{write} only appends to the buffer, and the owner calls
    L{tick} on a timer to flush and, when the local date has changed,
    rotate (to C{<name>.<Y>_<M>_<D>}, as L{DailyLogFile} does).  Lines
    written in the second after midnight may land in the previous day's
    file.

    Not thread-safe: use it from the reactor thread only.

    @ivar on_rotate: called with today's date after each rotation
        (L{OldLogRemover.prune}), or L{None}.
    """

    on_rotate: Callable[[tuple[int, int, int]], None] | None = None

    def _openFile(self) -> None:
        self.closed = False
        self._file = open(self.path, "ab", ACCESS_LOG_BUFFER)
        if self.defaultMode is not None:
            os.chmod(self.path, self.defaultMode)
        self.lastDate = self.toDate(os.stat(self.path).st_mtime)

    def write(self, data: str | bytes) -> None:
        self._file.write(data.encode("utf-8") if isinstance(data, str) else data)

    def tick(self) -> None:
        """Rotate if the date has changed since the last tick, then flush."""
        if self.shouldRotate():
            self.rotate()  # closing the old file flushes it
            if self.on_rotate is not None:
                self.on_rotate(self.toDate())
        self.lastDate = max(self.lastDate, self.toDate())
        self.flush()
