# -*- test-case-name: tests.test_http_site -*-
"""
The server's twisted.web L{Site} (L{AccessLogSite}): it writes
C{access.log} (L{notificator.logs.access}), with the lines of the
requests that never reach C{finish()}, and leaves the monitor page's polls
out; L{serve_http} gives it its request class and protocol, and the
connections' cap and clocks.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from twisted.application.service import MultiService
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web import http
from twisted.web.server import Site

from notificator import config
from notificator.auth import Guard
from notificator.http import connections, fast
from notificator.http.request import (
    Limits,
    Request,
    StockRequest,
    client,
    hsts_header,
    request_class,
)
from notificator.logs.access import ACCESS_LOG, AccessLog, CombinedLogFormatter
from notificator.logs.files import FLUSH_INTERVAL, OldLogRemover
from notificator.stats import Stats

if TYPE_CHECKING:
    from notificator.http.publish import PublishGate

# The namespace it had before the moves of issue 18 (serve_http's lines
# were tap.py's): it is part of every log line, and no log line changes.
log = Logger("notificator.tap")

#: The header the monitor page sends with its polls (C{monitor.js}).
MONITOR_POLL_HEADER = b"x-notificator-monitor"

#: The paths the monitor page polls.
MONITOR_POLLED = frozenset({b"/users", b"/health"})


class AccessLogSite(Site):
    """
    A L{Site} that writes its access log to C{<log_dir>/access.log} in the
    combined log format (twisted.web's default formatter), through a
    L{notificator.logs.files.BufferedDailyLogFile} (see L{AccessLog}) that
    is flushed every C{flush_interval} seconds on the site's reactor.

    It also logs requests that never reach C{Request.finish()}: an event
    stream that ends because the client went away (see
    L{notificator.logs.access.log_unfinished}).

    @param monitor_polls: write the monitor page's polls (L{is_monitor_poll}:
        C{GET /users} and C{/health} carrying L{MONITOR_POLL_HEADER} from an
        address of C{monitor.allow}, every 2 s per open tab) too;
        C{monitor.accessLog}, off by default.  A load balancer's or a
        script's C{/health}, and any request with the header from elsewhere,
        is logged either way.
    @param keep_days: remove rotated C{access.log} files older than this
        many days (L{OldLogRemover}); 0 keeps them all.
    @param open_file: opens the file (L{AccessLog}); another than a daily
        file: a worker's pipe to its supervisor (L{notificator.workers.logs}).
    """

    flush_interval = FLUSH_INTERVAL

    #: Read by L{notificator.http.request.StockRequest}, set by
    #: C{makeService}: who may publish and who is behind a trusted proxy
    #: (L{notificator.auth.Guard}), and the publish gate asked before a
    #: request's body is read.
    guard: Guard | None = None
    publish_gate: PublishGate | None = None

    def __init__(
        self,
        resource: Any,
        log_dir: str,
        reactor: IReactorTime,
        monitor_polls: bool = False,
        keep_days: int = 0,
        open_file: Callable[[str], Any] | None = None,
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
        self._open_file = open_file

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
        return guard.refuse_monitor(client(request)) is None

    def _openLogFile(self, path: str | bytes) -> AccessLog:
        name = os.fsdecode(path)
        remover = OldLogRemover(name, self.keep_days, self.reactor) if self.keep_days else None
        if self._open_file is not None:
            self.access_log = AccessLog(name, remover, self._open_file)
        else:
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


def serve_http(
    site: Any,
    cfg: config.Config,
    reactor: Any,
    stats: Stats,
    activity: Logger,
    parent: MultiService,
) -> None:
    """
    Give C{site} its request class and protocol: with C{server.fastChannel}
    L{notificator.http.request.Request} over
    L{notificator.http.fast.Channel} and its
    L{notificator.http.fast.WriteBatch} (a child of C{parent}, started
    before the listeners so that it stops after them: the streams' last
    chunks leave before shutdown); without, twisted.web's own channel.  Both
    with the request limits (L{notificator.http.request.LimitedRequest}) and
    the connections' cap and clocks
    (L{notificator.http.connections.Connections}, a child of C{parent});
    what they refuse and drop is logged to C{activity} (C{sse.log}).  Over
    TLS, every response carries C{server.hsts}
    (L{notificator.http.request.StockRequest}).
    """
    bounds = cfg.limits
    watched = connections.Connections(
        bounds.header_timeout,
        bounds.body_timeout,
        bounds.connections,
        reactor,
        activity,
        stats,
    )
    request_limits = Limits(bounds, reactor, stats, activity, watched)
    log.info(
        "HTTP/1.1 served by {channel} (server.fastChannel {fast})",
        channel="the fast channel" if cfg.server.fast_channel else "twisted.web's stock channel",
        fast="true" if cfg.server.fast_channel else "false",
    )
    hsts = hsts_header(cfg.server.hsts)
    if cfg.server.fast_channel:
        site.requestFactory = request_class(Request, request_limits, hsts=hsts)
        writes = fast.WriteBatch(reactor)
        site.protocol = partial(fast.protocol, writes)
        writes.setServiceParent(parent)
    else:
        site.requestFactory = request_class(StockRequest, request_limits, hsts=hsts)
    connections.watch(site, watched)
    watched.setServiceParent(parent)
    log.info(
        "limits: {connections} connections, {streams} streams (limits.connections, limits.streams)",
        connections=bounds.connections,
        streams=bounds.streams,
    )
