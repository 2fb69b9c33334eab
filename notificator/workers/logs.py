# -*- test-case-name: tests.test_workers_logs -*-
"""
One C{sse.log} and one C{access.log} for all the workers of
C{server.workers}, written by their supervisor.

Several processes cannot share a daily log file: each would rotate it at
midnight on its own (the second finds the day's name taken and goes on
writing into yesterday's file), and each would remove old files.  So a
worker writes no log file: the lines it would write go, formatted as one
process formats them, to a pipe to its supervisor (L{PipeLog}: C{sse.log}'s
on file descriptor L{SSE_LOG_FD}, C{access.log}'s on L{ACCESS_LOG_FD},
buffered and sent once a second as the files are flushed, warnings at
once), and the supervisor writes each whole line into the one file it
rotates and prunes (L{LogSinks}).  Lines of different workers interleave
whole; each worker's stay in its order.

A worker's twistd log (its standard output) goes to the supervisor's
twistd log, each line prefixed with its slot
(L{notificator.workers.supervisor}); L{not_relayed} keeps those lines out
of C{sse.log}, which has the worker's events already.
"""

from __future__ import annotations

import errno
import os
import time
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import ILogFilterPredicate, LogEvent, PredicateResult
from zope.interface import implementer

from notificator.logs.access import ACCESS_LOG, AccessLog
from notificator.logs.app import AppLogService
from notificator.logs.files import FLUSH_INTERVAL
from notificator.timers import Ticker
from notificator.workers.supervisor import RELAYED

#: The worker's file descriptor on which it sends its C{sse.log} lines.
SSE_LOG_FD = 4
#: The worker's file descriptor on which it sends its C{access.log} lines.
ACCESS_LOG_FD = 5

#: Bytes a worker holds for a supervisor that does not read; more are dropped.
MAX_PENDING = 16 * 1024 * 1024

#: Seconds between attempts to send what the pipe did not take.
RETRY = 0.05


class PipeLog:
    """
    A worker's log "file": what L{notificator.logs.app.AppLogService} and
    L{notificator.logs.access.AccessLog} write to instead of a daily file
    (their C{write}, C{flush}, C{tick}, C{close}).  Lines wait in memory
    until C{flush} or C{tick}, then go to the pipe C{fd} without blocking:
    what the pipe does not take is sent again every L{RETRY} seconds, up to
    L{MAX_PENDING} bytes held (beyond, lines are dropped and a line says
    how many bytes).  L{close} sends the rest, waiting for the pipe.
    """

    on_rotate: Any = None

    def __init__(self, fd: int, clock: Any) -> None:
        self._fd = fd
        self._clock = clock
        self._lines: list[bytes] = []
        self._pending = b""
        self._dropped = 0
        self._retry: IDelayedCall | None = None
        self._broken = False
        try:
            os.set_blocking(fd, False)
        except OSError:
            self._broken = True

    def write(self, data: str | bytes) -> None:
        self._lines.append(data.encode("utf-8") if isinstance(data, str) else data)

    def tick(self) -> None:
        self.flush()

    def flush(self) -> None:
        """Send what was written (what the pipe does not take waits)."""
        if self._lines:
            data, self._lines = b"".join(self._lines), []
            if len(self._pending) + len(data) > MAX_PENDING:
                self._dropped += len(data)
            else:
                self._pending += data
        self._send()

    def _send(self) -> None:
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._dropped and len(self._pending) < MAX_PENDING // 2:
            note = time.strftime("%Y-%m-%dT%H:%M:%S%z") + (
                f" [{__name__}#warn] {self._dropped} bytes of log lines dropped:"
                " the supervisor did not read them\n"
            )
            self._pending += note.encode()
            self._dropped = 0
        while self._pending and not self._broken:
            try:
                sent = os.write(self._fd, self._pending)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                self._broken = True  # the supervisor is gone: nowhere to write
                self._pending = b""
                return
            self._pending = self._pending[sent:]
        if self._pending and not self._broken:
            self._retry = self._clock.callLater(RETRY, self._send)

    def close(self) -> None:
        """Send everything, waiting for the pipe if need be."""
        self.flush()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._pending and not self._broken:
            try:
                os.set_blocking(self._fd, True)
                while self._pending:
                    sent = os.write(self._fd, self._pending)
                    self._pending = self._pending[sent:]
            except OSError:
                pass
        self._pending = b""

    def toDate(self, *args: Any) -> tuple[int, int, int]:
        """Today (the interface of a daily file; the supervisor rotates)."""
        return time.localtime(*args)[:3]


def pipe_opener(fd: int, clock: Any) -> Any:
    """A C{open_file} for C{AppLogService} and C{AccessLog}: the path is ignored."""
    return lambda path: PipeLog(fd, clock)


class AccessLogService(Service):
    """
    The supervisor's C{access.log} (L{AccessLog}, rotated and pruned as a
    site's is), flushed every L{FLUSH_INTERVAL} seconds while it runs: it
    holds the lines of every worker.
    """

    def __init__(self, log_dir: str, clock: Any, keep_days: int = 0) -> None:
        self.path = os.path.join(log_dir, ACCESS_LOG)
        self._clock = clock
        self.keep_days = keep_days
        self.log: AccessLog | None = None
        self._ticker: Ticker | None = None

    def startService(self) -> None:
        super().startService()
        self.log = AccessLog(self.path, self._clock, keep_days=self.keep_days)
        self._ticker = Ticker(
            self.log.tick,
            f"flushing {ACCESS_LOG}",
            self._clock,
            FLUSH_INTERVAL,
            namespace="notificator.logs",
        )
        self._ticker.start()

    def stopService(self) -> None:
        super().stopService()
        if self._ticker is not None:
            self._ticker.stop()
        self._ticker = None
        if self.log is not None:
            self.log.close()
            self.log = None


class LogSinks:
    """
    Where the supervisor writes its workers' log lines: C{sse.log} of its
    L{AppLogService}, C{access.log} of its L{AccessLogService}
    (L{outputs}: the supervisor's C{outputs}).
    """

    def __init__(self, app_log: AppLogService, access_log: AccessLogService) -> None:
        self._app_log = app_log
        self._access_log = access_log

    @property
    def outputs(self) -> dict[int, Any]:
        """File descriptor in the worker -> what to do with each line read on it."""
        return {SSE_LOG_FD: self.app_line, ACCESS_LOG_FD: self.access_line}

    def app_line(self, slot: int, line: bytes) -> None:
        """
        A line of a worker's C{sse.log}, written with its slot after its
        time and namespace (C{... [notificator.tap#info] worker 1: ...});
        a traceback's lines (a tab first) as they are.
        """
        f = self._app_log.log_file
        if f is None:
            return
        if not line.startswith(b"\t"):
            end = line.find(b"] ")
            if end > 0:
                line = b"%s] worker %d: %s" % (line[:end], slot, line[end + 2 :])
        f.write(line + b"\n")

    def access_line(self, slot: int, line: bytes) -> None:
        """A line of a worker's C{access.log}."""
        log = self._access_log.log
        if log is not None:
            log.write(line + b"\n")


@implementer(ILogFilterPredicate)
class _NotRelayed:
    def __call__(self, event: LogEvent) -> Any:
        if event.get("log_namespace") == RELAYED:
            return PredicateResult.no
        return PredicateResult.maybe


#: Keeps the workers' standard output and error, relayed by the supervisor
#: (L{RELAYED}), out of C{sse.log}: their events are there already, from
#: the worker's C{sse.log} pipe.
not_relayed = _NotRelayed()
