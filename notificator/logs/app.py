# -*- test-case-name: tests.test_logs_app -*-
"""
C{sse.log} (L{AppLogService}): the application's events (streams opened
and closed, publishes, rejections) and the process's (start-up, warnings,
errors) from twisted.logger, filtered by C{server.log.level}.

twistd owns C{globalLogBeginner} (its C{--logfile}); we only add and
remove observers on the publisher, in C{startService}/C{stopService}.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.logger import (
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    LogEvent,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    LogPublisher,
    formatEventAsClassicLogText,
    formatTime,
    globalLogPublisher,
)
from zope.interface import implementer

from notificator import __version__
from notificator.logs.files import FLUSH_INTERVAL, BufferedDailyLogFile, OldLogRemover
from notificator.timers import Ticker

APP_LOG = "sse.log"


def level_filter(level: str) -> LogLevelFilterPredicate:
    """A predicate passing events at C{level} (a L{LogLevel} name) and above."""
    return LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level))


#: Each level's rank, in L{LogLevel}'s order (debug lowest).
_RANK = {level: rank for rank, level in enumerate(LogLevel.iterconstants())}


@implementer(ILogObserver)
class _AtLevel:
    """
    Hands C{observer} the events at C{level} and above, as a
    L{FilteringLogObserver} with L{level_filter} does (an event without a
    level or a namespace is dropped; no namespace has a level of its own),
    with one dict lookup: this runs for every line of every stream and publish, and
    Twisted's predicate (namespaces, levels compared in Python) was a
    tenth of a line's cost.
    """

    def __init__(self, observer: ILogObserver, level: str) -> None:
        self._observer = observer
        self._rank = _RANK[LogLevel.levelWithName(level)]

    def __call__(self, event: LogEvent) -> None:
        rank = _RANK.get(event.get("log_level"))
        if rank is not None and rank >= self._rank and event.get("log_namespace"):
            if "log_trace" in event:
                event["log_trace"].append((self, self._observer))
            self._observer(event)


class ActivityLogger(Logger):
    """
    A L{Logger} for the per-request lines (L{AppLogService.activity}): the
    same events, without the check twisted.logger makes on every event
    that its level is one of L{LogLevel}'s by listing and sorting them
    (here one set lookup); and an event below C{level} (the level of the
    one file that reads them, C{sse.log}: L{AppLogService.logger}) is not
    built at all (a publish's debug line cost a twentieth of a publish
    at the default level, C{info}, which drops it).

    @param level: the lowest level passed on (a L{LogLevel} name);
        C{"debug"}: all.
    """

    def __init__(
        self,
        namespace: str | None = None,
        source: object | None = None,
        observer: ILogObserver | None = None,
        level: str = "debug",
    ) -> None:
        super().__init__(namespace, source, observer)
        self._rank = _RANK[LogLevel.levelWithName(level)]

    def emit(self, level: LogLevel, format: str | None = None, **kwargs: object) -> None:
        rank = _RANK.get(level)
        if rank is None:
            super().emit(level, format, **kwargs)  # Twisted's own complaint
            return
        if rank < self._rank:
            return
        kwargs.update(
            log_logger=self,
            log_level=level,
            log_namespace=self.namespace,
            log_source=self.source,
            log_format=format,
            log_time=time.time(),
        )
        if "log_trace" in kwargs:
            kwargs["log_trace"].append((self, self.observer))  # type: ignore[attr-defined]
        self.observer(kwargs)


class AppLogService(Service):
    """
    Writes log events at C{level} and above to C{<log_dir>/sse.log} (a
    L{BufferedDailyLogFile}, flushed and rotated every L{FLUSH_INTERVAL}
    seconds on C{clock}) while running: the process's own events (from
    C{publisher}, twistd's global one) and the per-request lines of the
    L{activity} publisher, which only this file reads.  So twistd's log
    (stdout with C{-n}, else C{twistd.log}) gets start-up, shutdown,
    warnings and errors, but not a line per stream or publish; at
    thousands of streams those lines, formatted twice, were a fifth of
    the cost of opening one.

    @param publisher: the process's publisher; the global one in the
        server, a private one in tests.
    @param keep_days: remove rotated C{sse.log} files older than this many
        days (L{OldLogRemover}), at start and after each rotation; 0 keeps
        them all.
    @param predicates: more filters of the events written (the
        supervisor of C{server.workers} keeps its workers' relayed output
        out, L{notificator.workers.logs.not_relayed}).
    @ivar activity: the publisher for per-request lines; give
        L{logger}C{(namespace)} (or C{Logger(observer=service.activity)})
        to the resources.
    """

    name = "sse.log"

    def __init__(
        self,
        log_dir: str,
        level: str,
        publisher: LogPublisher = globalLogPublisher,
        open_file: Callable[[str], BufferedDailyLogFile] = BufferedDailyLogFile.fromFullPath,
        clock: IReactorTime | None = None,
        keep_days: int = 0,
        predicates: Sequence[ILogFilterPredicate] = (),
    ) -> None:
        self.path = os.path.join(log_dir, APP_LOG)
        self._predicates = list(predicates)
        self.keep_days = keep_days
        self._remover: OldLogRemover | None = None
        self.level = level
        self.activity = LogPublisher()
        self._publisher = publisher
        self._open_file = open_file
        self._clock = clock
        self.log_file: BufferedDailyLogFile | None = None
        self._observer: ILogObserver | None = None
        self._ticker: Ticker | None = None

    def logger(self, namespace: str) -> ActivityLogger:
        """
        A logger for per-request lines in C{namespace}: its events go to
        L{activity}, and none below this service's level is built.
        """
        return ActivityLogger(namespace, observer=self.activity, level=self.level)

    def startService(self) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self.log_file = self._open_file(self.path)
        writer: ILogObserver = _LineWriter(self.log_file, _ClassicFormat())
        if self._predicates:
            # After the level, as FilteringLogObserver asks its predicates
            # in order (level_filter's answer is "no" or "maybe").
            writer = FilteringLogObserver(writer, self._predicates)
        self._observer = _AtLevel(writer, self.level)
        self._publisher.addObserver(self._observer)
        self.activity.addObserver(self._observer)
        self._ticker = Ticker(
            self.log_file.tick,
            f"flushing {APP_LOG}",
            self._clock,
            FLUSH_INTERVAL,
            namespace="notificator.logs",
        )
        self._ticker.start()
        super().startService()
        # The namespace it had before the moves of issue 18: it is part of
        # every log line, and no log line changes.
        Logger("notificator.logs", observer=self._publisher).info(
            "notificator {version} (pid {pid}) logging at level {threshold}",
            version=__version__,
            pid=os.getpid(),
            threshold=self.level,
        )
        if self.keep_days:
            self._remover = OldLogRemover(self.path, self.keep_days, self._ticker.clock)
            self.log_file.on_rotate = self._remover.prune
            self._remover.prune(self.log_file.toDate())

    def stopService(self) -> None:
        super().stopService()
        if self._remover is not None:
            self._remover.stop()
            self._remover = None
        if self._ticker is not None:
            self._ticker.stop()
        self._ticker = None
        if self._observer is not None:
            self._publisher.removeObserver(self._observer)
            self.activity.removeObserver(self._observer)
            self._observer = None
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None


@implementer(ILogObserver)
class _LineWriter:
    """
    Writes each event's line to C{log_file}.  Warnings and worse are
    flushed at once; other lines wait for the file's next C{tick} (at
    most L{FLUSH_INTERVAL} seconds), so a busy server does not pay one
    C{write(2)} per stream opened (L{FileLogObserver} flushes every line).
    """

    def __init__(self, log_file: Any, format_event: Callable[[LogEvent], str | None]) -> None:
        self._file = log_file
        self._format = format_event

    def __call__(self, event: LogEvent) -> None:
        text = self._format(event)
        if text:
            self._file.write(text)
            if _RANK.get(event.get("log_level"), 0) >= _WARN:
                self._file.flush()


_WARN = _RANK[LogLevel.warn]


class _ClassicFormat:
    """
    L{textFileLogObserver}'s line format (L{formatEventAsClassicLogText}),
    made cheaper: the timestamp is formatted once per second instead of
    once per line (it has no sub-second part), and the message with
    C{str.format_map} when the event needs nothing else (tracebacks,
    C{"{f()}"} calls, legacy systems go through Twisted's own formatter).
    Together they were most of the cost of a line.
    """

    def __init__(self) -> None:
        self._second: int | None = None
        self._stamp = ""

    def _time(self, when: float | None) -> str:
        if when is None:
            return formatTime(when)
        second = int(when)
        if second != self._second:
            self._second = second
            self._stamp = formatTime(second)
        return self._stamp

    def __call__(self, event: LogEvent) -> str | None:
        fmt = event.get("log_format")
        if (
            type(fmt) is str
            and "()" not in fmt
            and "log_failure" not in event
            and "log_flattened" not in event
            and "log_system" not in event
        ):
            # twisted.logger formats with string.Formatter over the event
            # (plus "{f()}" calls, excluded above); str.format_map is the
            # same format language in C, several times faster.
            try:
                text = fmt.format_map(event)
            except Exception:
                pass  # Twisted's formatter writes its "Unable to format" line
            else:
                if not text:
                    return None
                level = event.get("log_level")
                line = "{} [{}#{}] {}".format(
                    self._time(event.get("log_time")),
                    event.get("log_namespace", "-"),
                    "-" if level is None else level.name,
                    text,
                )
                return line.replace("\n", "\n\t") + "\n"
        return formatEventAsClassicLogText(event, formatTime=self._time)
