# -*- test-case-name: tests.test_logs_access -*-
"""
C{access.log}: its file (L{AccessLog}, opened at first use), its line
(L{CombinedLogFormatter}: twisted.web's combined log format, each field
bounded by L{escape_field}), and the lines of the requests that never
reach C{finish()}, where twisted.web writes them (L{log_unfinished}; a
request answered before its body was read:
L{notificator.http.site.Site.log_answered_early}).
"""

from __future__ import annotations

import os
from bisect import bisect_right
from collections.abc import Callable
from itertools import accumulate

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web import http
from twisted.web.iweb import IAccessLogFormatter
from twisted.web.server import Site
from zope.interface import implementer

from notificator.logs.files import BufferedDailyLogFile, OldLogRemover
from notificator.text import redact_uri

ACCESS_LOG = "access.log"


class AccessLog:
    """
    C{access.log} as twisted.web's L{Site} uses it (C{write}, C{close}),
    opened at first use rather than when the port starts listening: by
    then twistd has dropped privileges (C{--uid}), so the file and its
    rotations belong to the server's user, like C{sse.log}.

    If the file cannot be opened, the error is logged once, lines are
    dropped and the opening is retried on each L{tick}; requests are
    served all the same.

    @param clock: where L{OldLogRemover} pauses.
    @param keep_days: remove rotated C{access.log} files older than this
        many days (L{OldLogRemover}), when the file opens and after each
        rotation; 0 keeps them all.
    @param open_file: opens the file; another than a daily file: a
        worker's pipe to its supervisor (L{notificator.workers.logs}).
    """

    def __init__(
        self,
        path: str,
        clock: IReactorTime,
        keep_days: int = 0,
        open_file: Callable[[str], BufferedDailyLogFile] = BufferedDailyLogFile.fromFullPath,
    ) -> None:
        # The namespace it had before the moves of issue 18: it is part of
        # every log line, and no log line changes.
        self.log = Logger("notificator.logs.AccessLog", self)
        self.path = path
        self.keep_days = keep_days
        self.file: BufferedDailyLogFile | None = None
        self._failed = False
        self._remover = OldLogRemover(path, keep_days, clock) if keep_days else None
        self._open_file = open_file

    def _open(self) -> BufferedDailyLogFile | None:
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self.file = self._open_file(self.path)
        except OSError as e:
            if not self._failed:
                self.log.error("cannot open {path}: {error}", path=self.path, error=e)
            self._failed = True
            return None
        if self._remover is not None:
            self.file.on_rotate = self._remover.prune
            self._remover.prune(self.file.toDate())
        return self.file

    def write(self, line: str | bytes) -> None:
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


def combined_escape(value: bytes) -> str:
    """
    C{value} escaped as twisted.web's combined log format escapes a field
    (its private C{twisted.web.http._escape}, not imported: it is private,
    and the logs import nothing of the HTTP edge, where the server's
    accesses to Twisted's private parts are kept): Python's C{repr} of the
    bytes without the quotes, always escaped as if they were double quotes.
    C{tests.test_http_twisted} checks that it is twisted.web's, byte for
    byte.
    """
    r = repr(value)[1:]
    if r.startswith("'"):
        return r[1:-1].replace('"', '\\"').replace("\\'", "'")
    return r[1:-1]


#: The characters each byte takes once escaped as twisted.web escapes it
#: (L{combined_escape}: C{\xNN}, C{\t}, C{\"}, C{\\} or itself).
_WIDTHS = bytes(len(combined_escape(bytes([b]))) for b in range(256))


def escape_field(value: str | bytes, limit: int) -> str:
    """
    C{value} escaped as twisted.web's combined log escapes it, in at most
    C{limit} characters: a longer value is cut after the last byte whose
    escape fits (never inside an escape) and ends with L{CUT}.
    """
    raw = value.encode("ascii") if isinstance(value, str) else value
    head = raw[:limit]
    escaped = combined_escape(head)
    if len(escaped) > limit:
        # Some bytes took more than one character: keep those that fit.
        head = head[: bisect_right(list(accumulate(head.translate(_WIDTHS))), limit)]
        escaped = combined_escape(head)
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
        # Behind a trusted proxy, the client it names
        # (notificator.http.request.Request.client_host).
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
