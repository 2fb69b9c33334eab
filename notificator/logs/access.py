# -*- test-case-name: tests.test_logs_access -*-
"""
The server's own log files, both in C{server.log.dir} and rotated daily:

 - C{access.log}: one line per HTTP request in the combined log format,
   written by twisted.web's own formatter (L{AccessLogSite}).  Lines are
   buffered in memory and flushed once a second (and on rotation and
   stop), so a busy server does not pay one C{write(2)} per request.
 - C{sse.log}: the application's events (streams opened and closed,
   publishes, rejections) and the process's (start-up, warnings,
   errors) from twisted.logger, filtered by C{server.log.level}
   (L{AppLogService}).

Rotated files older than C{server.log.keepDays} are removed by the server
(L{OldLogRemover}), so no cron job or logrotate is needed.

twistd owns C{globalLogBeginner} (its C{--logfile}); we only add and
remove observers on the publisher, in C{startService}/C{stopService}.
"""

from __future__ import annotations

import datetime
import os
import re
from bisect import bisect_right
from collections.abc import Callable
from itertools import accumulate
from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import (
    FilteringLogObserver,
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
from twisted.python.logfile import DailyLogFile
from twisted.web import http
from twisted.web.iweb import IAccessLogFormatter
from twisted.web.server import Site
from zope.interface import implementer

from notificator import __version__
from notificator.auth import Guard
from notificator.http import _twisted
from notificator.text import redact_uri

if TYPE_CHECKING:
    from notificator.web import PublishGate

ACCESS_LOG = "access.log"
APP_LOG = "sse.log"

#: Seconds between flushes (and rotation checks) of buffered log files.
FLUSH_INTERVAL = 1.0

#: Bytes of access-log lines kept in memory between flushes.
ACCESS_LOG_BUFFER = 256 * 1024


def safe(text: object, limit: int = 200) -> str:
    """
    Text from a request, made safe for one log line, bounded: characters
    that are not printable (CR, LF, tab, U+2028, controls) and the
    backslash are escaped (C{\\r}, C{\\u2028}, C{\\\\}); printable
    text such as Korean stays readable.
    """
    s = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    if not s.isprintable() or "\\" in s:
        s = "".join(_escape(c) for c in s)
    return s if len(s) <= limit else s[:limit] + "..."


def _escape(c: str) -> str:
    if c.isprintable() and c != "\\":
        return c
    return c.encode("unicode_escape").decode("ascii")


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
        # Named as before the move to notificator.logs.access: the
        # namespace is part of every log line (issue 18 changes none).
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


class AccessLog:
    """
    C{access.log} as twisted.web's L{Site} uses it (C{write}, C{close}),
    opened at first use rather than when the port starts listening: by
    then twistd has dropped privileges (C{--uid}), so the file and its
    rotations belong to the server's user, like C{sse.log}.

    If the file cannot be opened, the error is logged once, lines are
    dropped and the opening is retried on each L{tick}; requests are
    served all the same.
    """

    def __init__(self, path: str, remover: OldLogRemover | None = None) -> None:
        # Named as before the move to notificator.logs.access: the
        # namespace is part of every log line (issue 18 changes none).
        self.log = Logger("notificator.logs.AccessLog", self)
        self.path = path
        self.file: BufferedDailyLogFile | None = None
        self._failed = False
        self._remover = remover

    def _open(self) -> BufferedDailyLogFile | None:
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self.file = BufferedDailyLogFile.fromFullPath(self.path)
        except OSError as e:
            if not self._failed:
                self.log.error("cannot open {path}: {error}", path=self.path, error=e)
            self._failed = True
            return None
        if self._remover is not None:
            self.file.on_rotate = self._remover.prune
            self._remover.prune(self.file.toDate())
        return self.file

    def write(self, line: str) -> None:
        f = self.file
        if f is None:
            if self._failed:
                return  # retried by tick, not on every request
            f = self._open()
            if f is None:
                return
        f.write(line)

    def tick(self) -> None:
        """Open if not yet open, then rotate if due and flush."""
        f = self.file or self._open()
        if f is not None:
            f.tick()

    def close(self) -> None:
        if self._remover is not None:
            self._remover.stop()
        if self.file is not None:
            self.file.close()
            self.file = None


#: The most characters each field of an C{access.log} line takes once
#: escaped; a longer field is cut there (on a whole escape) and marked with
#: L{CUT}.  So a line stays under about 4 KB whatever the request holds:
#: twisted.web lets a request line and headers reach 16 KB, and escaping
#: a byte can take four characters (C{\x7f}).
METHOD_LIMIT = 32
URI_LIMIT = 2048
PROTOCOL_LIMIT = 32
REFERER_LIMIT = 1024
USER_AGENT_LIMIT = 512
ADDRESS_LIMIT = 64

#: What ends a field that was cut.
CUT = "..."

#: The characters each byte takes once escaped as twisted.web escapes it
#: (L{http._escape}: C{\xNN}, C{\t}, C{\"}, C{\\} or itself).
_WIDTHS = bytes(len(http._escape(bytes([b]))) for b in range(256))


def escape_field(value: str | bytes, limit: int) -> str:
    """
    C{value} escaped as twisted.web's combined log escapes it, in at most
    C{limit} characters: a longer value is cut after the last byte whose
    escape fits (never inside an escape) and ends with L{CUT}.
    """
    raw = value.encode("ascii") if isinstance(value, str) else value
    head = raw[:limit]
    escaped: str = http._escape(head)
    if len(escaped) > limit:
        # Some bytes took more than one character: keep those that fit.
        head = head[: bisect_right(list(accumulate(head.translate(_WIDTHS))), limit)]
        escaped = http._escape(head)
    return escaped + CUT if len(head) < len(raw) else escaped


@implementer(IAccessLogFormatter)
class CombinedLogFormatter:
    """
    twisted.web's L{combinedLogFormatter}, the same line, with each field
    bounded (L{escape_field}: the method, the path, the protocol, the
    referer and the user agent are cut at L{METHOD_LIMIT}, L{URI_LIMIT} ...)
    and its escaping remembered: the sender's address, the method, the
    path, the protocol and the user agent repeat on nearly every line, and
    escaping them (a C{repr} each) was most of the cost of a line.

    What is remembered is bounded in bytes (L{MAX_REMEMBERED_BYTES}, each
    value counted with its escape and L{ENTRY_COST}); then the memory
    starts over.
    """

    MAX_REMEMBERED_BYTES = 4 * 1024 * 1024

    #: Bytes counted per remembered value besides its own and its escape's
    #: characters: the two objects' headers and the dictionary slot.
    ENTRY_COST = 200

    def __init__(self) -> None:
        # One memory per field, since each field has its own limit.
        self._addresses: dict[str | bytes, str] = {}
        self._methods: dict[str | bytes, str] = {}
        self._uris: dict[str | bytes, str] = {}
        self._protocols: dict[str | bytes, str] = {}
        self._referers: dict[str | bytes, str] = {}
        self._agents: dict[str | bytes, str] = {}
        self._memories = (
            self._addresses,
            self._methods,
            self._uris,
            self._protocols,
            self._referers,
            self._agents,
        )
        self.remembered = 0

    def _escape(self, memory: dict[str | bytes, str], value: str | bytes, limit: int) -> str:
        escaped = memory.get(value)
        if escaped is None:
            escaped = escape_field(value, limit)
            cost = len(value) + len(escaped) + self.ENTRY_COST
            if self.remembered + cost > self.MAX_REMEMBERED_BYTES:
                for each in self._memories:
                    each.clear()
                self.remembered = 0
            memory[value] = escaped
            self.remembered += cost
        return escaped

    def __call__(self, timestamp: str, request: http.Request) -> str:
        escape = self._escape
        # Behind a trusted proxy, the client it names (web.Request.client_host).
        ip = getattr(request, "client_host", None)
        if ip is None:
            address = request.getClientAddress()
            ip = address.host if isinstance(address, (IPv4Address, IPv6Address)) else b"-"
        return '"%s" - - %s "%s %s %s" %d %s "%s" "%s"' % (
            escape(self._addresses, ip, ADDRESS_LIMIT),
            timestamp,
            escape(self._methods, request.method, METHOD_LIMIT),
            # No subscriber signature in the log (cut after it is hidden).
            escape(self._uris, redact_uri(request.uri), URI_LIMIT),
            escape(self._protocols, request.clientproto, PROTOCOL_LIMIT),
            request.code,
            request.sentLength or "-",
            escape(self._referers, request.getHeader(b"referer") or b"-", REFERER_LIMIT),
            escape(self._agents, request.getHeader(b"user-agent") or b"-", USER_AGENT_LIMIT),
        )


#: The header the monitor page sends with its polls (C{monitor.js}).
MONITOR_POLL_HEADER = b"x-notificator-monitor"

#: The paths the monitor page polls.
MONITOR_POLLED = frozenset({b"/users", b"/health"})


class AccessLogSite(Site):
    """
    A L{Site} that writes its access log to C{<log_dir>/access.log} in the
    combined log format (twisted.web's default formatter), through a
    L{BufferedDailyLogFile} (see L{AccessLog}) that is flushed every
    C{flush_interval} seconds on the site's reactor.

    It also logs requests that never reach C{Request.finish()}: an event
    stream that ends because the client went away (see L{log_unfinished}).

    @param monitor_polls: write the monitor page's polls (L{is_monitor_poll}:
        C{GET /users} and C{/health} carrying L{MONITOR_POLL_HEADER} from an
        address of C{monitor.allow}, every 2 s per open tab) too;
        C{monitor.accessLog}, off by default.  A load balancer's or a
        script's C{/health}, and any request with the header from elsewhere,
        is logged either way.
    @param keep_days: remove rotated C{access.log} files older than this
        many days (L{OldLogRemover}); 0 keeps them all.
    """

    flush_interval = FLUSH_INTERVAL

    #: Read by L{notificator.web.StockRequest}, set by C{makeService}: who
    #: may publish and who is behind a trusted proxy (L{auth.Guard}), and
    #: the publish gate asked before a request's body is read.
    guard: Guard | None = None
    publish_gate: PublishGate | None = None

    def __init__(
        self,
        resource: Any,
        log_dir: str,
        reactor: IReactorTime,
        monitor_polls: bool = False,
        keep_days: int = 0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("logFormatter", CombinedLogFormatter())
        super().__init__(
            resource, logPath=os.path.join(log_dir, ACCESS_LOG), reactor=reactor, **kwargs
        )
        self.access_log: AccessLog | None = None
        self._ticker: LoopingCall | None = None
        self.monitor_polls = monitor_polls
        self.keep_days = keep_days

    def log(self, request: http.Request) -> None:
        # The path first: it is all a publish or a stream pays here.
        if (
            request.path in MONITOR_POLLED
            and not self.monitor_polls
            and self.is_monitor_poll(request)
        ):
            return
        super().log(request)

    def is_monitor_poll(self, request: http.Request) -> bool:
        """
        Whether C{request} is one of the monitor page's polls: C{GET} of a
        path it polls (L{MONITOR_POLLED}) with L{MONITOR_POLL_HEADER}, from
        an address of C{monitor.allow} (the site's L{guard}; without one,
        none is).  The header alone proves nothing: anyone can send it, and
        it must not keep their requests out of the log.
        """
        if (
            request.path not in MONITOR_POLLED
            or request.getHeader(MONITOR_POLL_HEADER) is None
            or request.method != b"GET"
        ):
            return False
        guard = self.guard
        if guard is None:
            return False
        # (Imported here: limits imports this module for its access-log lines.)
        from notificator.limits import client

        return guard.refuse_monitor(client(request)) is None

    def _openLogFile(self, path: str | bytes) -> AccessLog:
        name = os.fsdecode(path)
        remover = OldLogRemover(name, self.keep_days, self.reactor) if self.keep_days else None
        self.access_log = AccessLog(name, remover)
        self._ticker = LoopingCall(self.access_log.tick)
        self._ticker.clock = self.reactor
        self._ticker.start(self.flush_interval, now=False)
        return self.access_log

    def stopFactory(self) -> None:
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        self._ticker = None
        super().stopFactory()  # closes (and so flushes) the file
        self.access_log = None


def log_unfinished(request: http.Request) -> None:
    """
    Write the access-log line of a request that ended without
    C{finish()} (the client disconnected from an event stream): status
    and bytes are those sent until then.  Requests not served by a
    L{Site} (test doubles) are ignored.
    """
    site = getattr(request, "site", None)
    if isinstance(site, Site):
        site.log(request)


def log_answered_early(request: Any, site: object, code: int, sent: int) -> None:
    """
    Write the access-log line of a request answered before its body was
    read (L{notificator.limits.Request.answer_early}: the publish gate's
    403, every 413, any other early answer), which never reaches
    C{finish()}, where twisted.web writes the line: C{code} and the
    C{sent} bytes of body, and the method, path and protocol read from
    its channel (twisted.web sets them on the request only once the body
    is read).  C{site} is the request's channel's (a request answered
    early has none of its own); anything but a L{Site} (test doubles) logs
    nothing.
    """
    target = _twisted.request_target(request)
    if target is not None:
        request.method, request.uri = target
    version = _twisted.request_version(request)
    if version is not None:
        request.clientproto = version
    request.code = code
    request.sentLength = sent
    if isinstance(site, Site):
        site.log(request)


def level_filter(level: str) -> LogLevelFilterPredicate:
    """A predicate passing events at C{level} (a L{LogLevel} name) and above."""
    return LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level))


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
    @ivar activity: the publisher for per-request lines; give
        C{Logger(observer=service.activity)} to the resources.
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
    ) -> None:
        self.path = os.path.join(log_dir, APP_LOG)
        self.keep_days = keep_days
        self._remover: OldLogRemover | None = None
        self.level = level
        self.activity = LogPublisher()
        self._publisher = publisher
        self._open_file = open_file
        self._clock = clock
        self.log_file: BufferedDailyLogFile | None = None
        self._observer: ILogObserver | None = None
        self._ticker: LoopingCall | None = None

    def startService(self) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self.log_file = self._open_file(self.path)
        self._observer = FilteringLogObserver(
            _LineWriter(self.log_file, _ClassicFormat()), [level_filter(self.level)]
        )
        self._publisher.addObserver(self._observer)
        self.activity.addObserver(self._observer)
        self._ticker = LoopingCall(self.log_file.tick)
        if self._clock is not None:
            self._ticker.clock = self._clock
        self._ticker.start(FLUSH_INTERVAL, now=False)
        super().startService()
        # Named as before the move to notificator.logs.access: the namespace
        # is part of every log line (issue 18 changes none).
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
        if self._ticker is not None and self._ticker.running:
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
            level = event.get("log_level")
            if level is not None and level >= LogLevel.warn:
                self._file.flush()


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
