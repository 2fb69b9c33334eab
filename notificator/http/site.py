# -*- test-case-name: tests.test_http_site -*-
"""
The server's twisted.web site (L{Site}), and how the server makes it
(L{make_site}).

The site is given everything its requests are held to when it is made
(L{Site}'s arguments, as twisted.web's takes C{resource} and
C{requestFactory}), and its requests read it from there
(L{notificator.http.request.RequestSite}): the limits and the
connections' cap and clocks, who may publish before the body is read,
who is behind a trusted proxy, HSTS, the channel (C{server.fastChannel})
and C{access.log}.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.application.service import MultiService
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web import http
from twisted.web.resource import IResource

from notificator import config
from notificator.auth import Guard
from notificator.broker import Broker
from notificator.http import _twisted, connections, fast
from notificator.http.publish import PublishGate
from notificator.http.request import HTTPDate, Limits, Request, RequestSite, client, hsts_header
from notificator.http.tree import build_resource
from notificator.hub import Hub
from notificator.logs.access import ACCESS_LOG, AccessLog, CombinedLogFormatter
from notificator.logs.files import FLUSH_INTERVAL
from notificator.stats import Stats
from notificator.timers import Ticker

# The namespace it had before the moves of issue 18 (serve_http's lines
# were tap.py's): it is part of every log line, and no log line changes.
log = Logger("notificator.tap")

#: The header the monitor page sends with its polls (C{monitor.js}).
MONITOR_POLL_HEADER = b"x-notificator-monitor"

#: The paths the monitor page polls.
MONITOR_POLLED = frozenset({b"/users", b"/health"})


class Site(RequestSite):
    """
    The server's twisted.web L{server.Site}: it builds one request class
    (L{notificator.http.request.Request}), which reads what it is held to
    from here, and writes C{access.log}.

    Its connections (L{buildProtocol}) are counted and timed by the
    limits' L{notificator.http.connections.Connections}: each is wrapped
    in a L{notificator.http.connections.ConnectionProtocol}, and one over
    C{limits.connections} gets L{notificator.http.connections.Refused}.
    With the fast channel, HTTP/1.1 is served by
    L{notificator.http.fast.Channel} (in the wrapper twisted.web switches
    to HTTP/2 with), whose writes C{writes} sends.

    C{access.log} (L{notificator.logs.access.AccessLog}) gets a line per
    request in the combined log format, flushed every L{flush_interval}
    seconds on the site's reactor while the site runs, with the lines of
    the requests that never reach C{Request.finish()} (an event stream
    that ends because the client went away:
    L{notificator.logs.access.log_unfinished}; a request answered before
    its body was read:
    L{notificator.http.request.RequestSite.log_answered_early}).

    @param resource: the root of the resource tree
        (L{notificator.http.tree.build_resource}).
    @param reactor: the clock of its connections and its log.
    @param access_log: where its C{access.log} lines go; L{None}: nowhere.
    @param monitor_polls: write the monitor page's polls (L{is_monitor_poll}:
        C{GET /users} and C{/health} carrying L{MONITOR_POLL_HEADER} from an
        address of C{monitor.allow}, every 2 s per open tab) too;
        C{monitor.accessLog}, off by default.  A load balancer's or a
        script's C{/health}, and any request with the header from elsewhere,
        is logged either way.
    @param guard: who may publish and look, and who is behind a trusted
        proxy (L{notificator.auth.Guard}); L{None}: no client behind a
        proxy is known, and no request is a monitor poll.
    @param gate: the publish gate, asked when a request's head is complete
        (L{notificator.http.publish.PublishGate}); L{None}: none.
    @param limits: the limits of its requests and connections
        (L{notificator.http.request.Limits}, with the connections' cap and
        clocks); L{None}: nothing is limited.
    @param hsts: the C{Strict-Transport-Security} value of every response
        over TLS (L{notificator.http.request.hsts_header}); L{None}: none.
    @param writes: the fast channel's write batch
        (L{notificator.http.fast.WriteBatch}): HTTP/1.1 is served by
        L{notificator.http.fast.Channel}; L{None}: by twisted.web's own.
    """

    requestFactory = Request
    flush_interval = FLUSH_INTERVAL

    def __init__(
        self,
        resource: IResource,
        *,
        reactor: IReactorTime,
        access_log: AccessLog | None = None,
        monitor_polls: bool = False,
        guard: Guard | None = None,
        gate: PublishGate | None = None,
        limits: Limits | None = None,
        hsts: bytes | None = None,
        writes: fast.WriteBatch | None = None,
    ) -> None:
        super().__init__(
            resource,
            logPath=None if access_log is None else access_log.path,
            reactor=reactor,
            logFormatter=CombinedLogFormatter(),
        )
        # No traceback in an answer: the log has it.
        self.displayTracebacks = False
        self.access_log = access_log
        self.monitor_polls = monitor_polls
        self.guard = guard
        self.gate = gate
        self.limits = limits
        self.hsts = hsts
        self.fast_channel = writes is not None
        self.http_date = HTTPDate()
        self._connections = None if limits is None else limits.connections
        self._channel: Callable[[], fast.Channel] | None = None
        if writes is not None:
            # (twisted.web's Site.protocol is a function: typed as a method.)
            self.protocol = partial(  # type: ignore[method-assign]
                fast.protocol, writes, head_clock=self._connections is not None
            )
            self._channel = partial(fast.Channel, writes, self._connections is not None)
        self._ticker: Ticker | None = None

    def buildProtocol(self, addr: Any) -> Any:
        """
        The protocol of a new connection, counted and timed (see the
        class's docstring): twisted.web's, set up for this site, inside a
        L{notificator.http.connections.ConnectionProtocol}; over
        C{limits.connections} (L{notificator.http.connections.Connections.admit}),
        L{notificator.http.connections.Refused} instead.
        """
        watched = self._connections
        if watched is None:
            return super().buildProtocol(addr)
        if not watched.admit():
            return connections.Refused()
        channel = self._channel
        if channel is None:
            protocol = super().buildProtocol(addr)
            return None if protocol is None else connections.ConnectionProtocol(protocol, watched)
        # What super().buildProtocol builds from self.protocol, built directly.
        protocol = _twisted.generic_channel(channel(), self)
        return connections.FastConnectionProtocol(protocol, watched)

    def log(self, request: http.Request) -> None:
        if self.access_log is None:
            return
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
        an address of C{monitor.allow} (the site's guard; without one,
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
        access_log = self.access_log
        assert access_log is not None  # a logPath only with an access log
        self._ticker = Ticker(
            access_log.tick,
            f"flushing {ACCESS_LOG}",
            self.reactor,
            self.flush_interval,
            namespace="notificator.logs",
        )
        self._ticker.start()
        return access_log

    def stopFactory(self) -> None:
        if self._ticker is not None:
            self._ticker.stop()
        self._ticker = None
        super().stopFactory()  # closes (and so flushes) the file


def make_site(
    cfg: config.Config,
    reactor: Any,
    activity: Logger,
    parent: MultiService,
    *,
    hub: Hub,
    broker: Broker,
    stats: Stats,
    guard: Guard,
    registry: CollectorRegistry,
    access_file: Callable[[str], Any] | None = None,
) -> Site:
    """
    The server's site, as C{twistd notificator} serves it: the resource
    tree (L{notificator.http.tree.build_resource}) around C{hub} and
    C{broker}, the publish gate (L{notificator.http.publish.PublishGate},
    asked before the body is read), C{access.log} in C{server.log.dir}, and
    the limits and channel of L{serve_http}, whose services are children
    of C{parent}.

    @param activity: where the per-request lines go (C{sse.log} only:
        L{notificator.logs.app.AppLogService.activity}).
    @param guard: who may publish, look and subscribe.
    @param registry: what C{/metrics} serves
        (L{notificator.metrics.build_registry}).
    @param access_file: opens what C{access.log}'s lines are written to
        instead of the daily file (a worker of C{server.workers}: its pipe
        to the supervisor, which writes, rotates and prunes the file,
        L{notificator.workers.logs}); L{None}: the file.
    """
    gate = PublishGate(guard, stats, activity, cfg.sse.cors)
    resource = build_resource(
        hub, broker, stats, cfg, reactor, registry, activity=activity, guard=guard, gate=gate
    )
    server = cfg.server
    path = os.path.join(server.log_dir, ACCESS_LOG)
    if access_file is None:
        access_log = AccessLog(path, reactor, keep_days=server.log_keep_days)
    else:
        # (Through a worker's pipe: the supervisor removes old files.)
        access_log = AccessLog(path, reactor, open_file=access_file)
    return serve_http(
        resource,
        cfg,
        reactor,
        stats,
        activity,
        parent,
        guard=guard,
        gate=gate,
        access_log=access_log,
        monitor_polls=cfg.monitor.access_log,
    )


def serve_http(
    resource: IResource,
    cfg: config.Config,
    reactor: Any,
    stats: Stats,
    activity: Logger,
    parent: MultiService,
    *,
    guard: Guard | None = None,
    gate: PublishGate | None = None,
    access_log: AccessLog | None = None,
    monitor_polls: bool = False,
) -> Site:
    """
    A L{Site} for C{resource} with the request limits (C{limits.*}:
    L{notificator.http.request.Limits}) and the connections' cap and
    clocks (L{notificator.http.connections.Connections}, a child of
    C{parent}); with C{server.fastChannel},
    L{notificator.http.fast.Channel} and its
    L{notificator.http.fast.WriteBatch} (a child of C{parent}, started
    before the listeners so that it stops after them: the streams' last
    chunks leave before shutdown), else twisted.web's own channel.  What
    they refuse and drop is logged to C{activity} (C{sse.log}).  Over TLS,
    every response carries C{server.hsts}.  The other arguments are the
    L{Site}'s.
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
    limits = Limits(bounds, reactor, stats, activity, watched)
    log.info(
        "HTTP/1.1 served by {channel} (server.fastChannel {fast})",
        channel="the fast channel" if cfg.server.fast_channel else "twisted.web's stock channel",
        fast="true" if cfg.server.fast_channel else "false",
    )
    writes = None
    if cfg.server.fast_channel:
        writes = fast.WriteBatch(reactor)
        writes.setServiceParent(parent)
        fast.Polling(reactor).setServiceParent(parent)
    site = Site(
        resource,
        reactor=reactor,
        access_log=access_log,
        monitor_polls=monitor_polls,
        guard=guard,
        gate=gate,
        limits=limits,
        hsts=hsts_header(cfg.server.hsts),
        writes=writes,
    )
    watched.setServiceParent(parent)
    log.info(
        "limits: {connections} connections, {streams} streams (limits.connections, limits.streams)",
        connections=bounds.connections,
        streams=bounds.streams,
    )
    return site
