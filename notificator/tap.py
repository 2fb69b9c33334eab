# -*- test-case-name: tests.test_tap -*-
"""
C{twistd notificator}: command-line options and the service tree.

Everything long-lived is in one service tree (L{makeService}), so twistd's
start and SIGTERM cover it: L{SequentialService}s, which stop their children
one after the other, the last started first: the logs around the serving
part, whose stop drains the streams (L{DrainService}), then stops the
timers and the listeners, sends what the write batch holds and writes the
history.
"""

from __future__ import annotations

import os
import re
import socket
from functools import partial
from typing import Any

from prometheus_client.registry import Collector
from twisted.application import strports
from twisted.application.internet import TimerService
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.python.threadpool import ThreadPool

from notificator import (
    auth,
    channel,
    config,
    connections,
    limits,
    listening,
    logs,
    metrics,
    process,
    web,
)
from notificator.broker import Journal, LocalBroker
from notificator.history import HistoryFile
from notificator.hub import Hub
from notificator.stats import Stats
from notificator.tls import TLSFileError

log = Logger()

#: Listen queue length for the endpoints.  When a restart or a network blip
#: makes every browser reconnect at once, Twisted's default of 50 overflows
#: and the kernel drops SYNs, which clients retry only after 1 s.  (Linux
#: caps it at net.core.somaxconn.)  A description that sets C{backlog=}
#: keeps its own.
LISTEN_BACKLOG = 4096

_BACKLOG_TYPES = ("tcp", "tcp6", "ssl", "https", "unix")


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run the Notificator SSE server. Configuration is read from "
        "DIR/default.json, DIR/<env>.json and DIR/local.json, merged in that order."
    )
    optParameters = [
        ["config", "c", "conf", "Directory holding default.json, <env>.json, local.json."],
        ["env", "e", None, "Config environment (default: $NOTIFICATOR_ENV, else development)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, description: str) -> None:
        """
        Listen on this strports description, e.g. tcp:3000 (repeatable);
        overrides the configured endpoints.
        """
        self["listen"].append(description)

    def postOptions(self) -> None:
        env = self["env"] or os.environ.get("NOTIFICATOR_ENV") or "development"
        self["env"] = env
        try:
            self["loaded"] = config.load(FilePath(self["config"]), env)
        except config.ConfigError as e:
            # One clear line and a non-zero exit; a UsageError would make
            # twistd print the whole help text and exit 0.
            raise SystemExit(f"notificator: configuration error: {e}")
        loaded: config.Config = self["loaded"]
        check_dir(loaded.server.log_dir, "server.log.dir")
        directory = history_directory(loaded)
        if directory is not None:
            check_dir(directory, "sse.history.dir")
        from_config = not self["listen"] and not loaded.server.endpoints
        self["endpoints"] = descriptions(self)
        for description in self["endpoints"]:
            check_listen(description, from_config)


def history_directory(cfg: config.Config) -> str | None:
    """
    Where the history is kept on disk: C{sse.history.dir} on one node with
    a history at all; L{None} in memory only, without history, and in
    cluster mode (the history is in Redis).
    """
    history = cfg.sse.history
    if cfg.cluster.redis is None and history.size > 0:
        return history.directory
    return None


def descriptions(options: dict[str, Any]) -> list[str]:
    """
    The strports descriptions to listen on: C{--listen}'s, else the
    config's, where C{server.host ""} means every interface, IPv4 and IPv6
    (L{listening.ipv6_mode}).
    """
    if "endpoints" in options:
        return list(options["endpoints"])
    every_interface = listening.all_interfaces(listening.ipv6_mode())
    return list(options["listen"]) or options["loaded"].endpoints(every_interface)


def check_dir(path: str, key: str) -> None:
    """
    Create a directory the server writes to (C{server.log.dir},
    C{sse.history.dir}) if needed and check that it can be written, so a
    bad one stops start-up with one line, not with a traceback from the
    service that uses it.

    @raise SystemExit: with that line.
    """
    try:
        os.makedirs(path, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(f"no write permission for uid {os.getuid()}")
    except OSError as e:
        reason = e.strerror or str(e)
        raise SystemExit(f"notificator: configuration error: {key}: {path}: {reason}")


#: The config key behind each file argument of an C{https:} description.
_CERT_KEYS = {
    "privateKey": "server.certificates.key",
    "certKey": "server.certificates.cert",
    "extraCertChain": "server.certificates.ca",
}


def check_listen(description: str, from_config: bool = False, reactor: Any = None) -> None:
    """
    Parse a strports description as L{makeService} will (for C{https:},
    reading and checking the key, certificate and chain), without
    listening, so a bad one stops start-up with one line instead of a
    traceback from inside twistd.

    @param from_config: the description was built from C{server.*}, so
        name the config key of a bad TLS file.
    @raise SystemExit: with that line.
    """
    if reactor is None:
        # Only handed to the endpoint's constructor; nothing listens here.
        from twisted.internet import reactor as _reactor

        reactor = _reactor
    try:
        serverFromString(reactor, description)
    except TLSFileError as e:
        where = f"{_CERT_KEYS[e.role]}: " if from_config else ""
        raise SystemExit(f"notificator: TLS error: {where}{e}")
    except Exception as e:
        # Whatever the endpoint type raises (Twisted's ssl: raises OSError,
        # OpenSSL errors or ValueError) becomes the one line.
        raise SystemExit(f"notificator: cannot listen on {description!r}: {e}")


class SequentialService(MultiService):
    """
    A L{MultiService} whose children start in order and stop in reverse
    order, each only after the one before has finished stopping (its
    C{stopService} Deferred fired): twistd's L{MultiService} stops them
    all at once, so the logs could close before the streams are drained,
    or the history be written before the last publishes.  A child whose
    stop fails is logged and the next one stops all the same.
    """

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        d: Deferred[object] = succeed(None)
        for child in reversed(list(self)):
            d.addCallback(_stop_child, child)
            d.addErrback(_stop_failed, child)
        return d.addCallback(lambda _: None)


def _stop_child(_: object, child: IService) -> Deferred[object] | None:
    stopped: Deferred[object] | None = child.stopService()  # (IService is unannotated)
    return stopped


def _stop_failed(failure: Failure, child: IService) -> None:
    log.failure("stopping {service} failed", failure, service=child)


class DrainService(Service):
    """
    On stop, drain the hub (L{Hub.drain}): new streams are turned away and
    the open ones ended spread over C{seconds}, each with a C{retry:} of
    C{retry} ms plus jitter.  The stop fires when every stream has ended.
    """

    def __init__(self, hub: Hub, seconds: float, retry: int) -> None:
        self.hub = hub
        self.seconds = seconds
        self.retry = retry

    def stopService(self) -> Deferred[None]:
        super().stopService()
        streams = self.hub.stream_count
        if streams:
            log.info(
                "stopping: ending {streams} {noun} over {seconds:g} s",
                streams=streams,
                noun="stream" if streams == 1 else "streams",
                seconds=self.seconds,
            )
        return self.hub.drain(self.seconds, self.retry)


class ThreadPoolService(Service):
    """Runs a L{ThreadPool} while the service runs."""

    def __init__(self, pool: ThreadPool) -> None:
        self.pool = pool

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> None:
        super().stopService()
        self.pool.stop()


def makeService(options: dict[str, Any], reactor: Any = None) -> IService:
    """
    Build the whole server from parsed L{Options}.

    One L{SequentialService}: the logs first in and last out, so they see
    everything; then the serving part, whose stop runs in order: drain
    the streams (the listeners still answer, C{/health} with 503), stop
    the timers and the listeners, send what the write batch holds, write
    the history to disk.

    On the real reactor (twistd's call), it first checks that every
    listener can bind (L{listening.check_free}): twistd calls this before it
    daemonizes, so a port in use is one line on the terminal in both modes.
    """
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor
        for description in descriptions(options):
            try:
                listening.check_free(description)
            except listening.PortUnavailable as e:
                raise SystemExit(f"notificator: {e}")
    cfg: config.Config = options["loaded"]
    for warning in cfg.warnings:
        log.warn("config: {warning}", warning=warning)
    log.info(
        "notificator configured from {sources}",
        sources=", ".join(cfg.sources),
    )

    root = SequentialService()
    server = cfg.server
    app_log = logs.AppLogService(
        server.log_dir, server.log_level, clock=reactor, keep_days=server.log_keep_days
    )
    app_log.setServiceParent(root)
    process.ProcessTitleService(f"notificator [{options['env']}] {cfg.root}").setServiceParent(root)
    process.GCTuningService().setServiceParent(root)

    serving = SequentialService()
    serving.setServiceParent(root)
    sse = cfg.sse
    stats = Stats(started_at=reactor.seconds())
    hub = Hub(clock=reactor, stats=stats)
    journal = None
    cluster = cfg.cluster
    node = cluster.node or default_node(descriptions(options))
    directory = history_directory(cfg)
    if directory is not None:
        run: Any = maybeDeferred
        if IReactorFromThreads.providedBy(reactor):
            # The history's file work on a thread of its own, in order.
            pool = ThreadPool(minthreads=1, maxthreads=1, name="notificator-history")
            ThreadPoolService(pool).setServiceParent(serving)
            run = partial(deferToThreadPool, reactor, pool)
        # else a reactor without threads (tests): the file work runs in line.
        journal = Journal(HistoryFile(directory), reactor, run)
    broker: Any
    collectors: list[Collector] = []
    if cluster.redis is None:
        broker = LocalBroker(hub, stats, reactor, sse.history, journal, node=node)
    else:
        # Imported only here: txredisapi imports the reactor.
        from notificator.redisbroker import RedisBroker

        try:
            broker = RedisBroker(hub, stats, reactor, cluster, sse.history, node)
        except ValueError as e:  # cluster.ca unreadable
            raise SystemExit(f"notificator: configuration error: {e}")
        collectors.append(broker.collector())
    broker.setServiceParent(serving)

    registry = metrics.build_registry(hub, stats, broker, reactor, collectors)
    activity = Logger("notificator.web", observer=app_log.activity)
    guard = auth.Guard.from_config(cfg)
    gate = web.PublishGate(guard, stats, activity)
    site = logs.AccessLogSite(
        web.build_resource(
            hub, broker, stats, cfg, reactor, registry, activity=activity, guard=guard, gate=gate
        ),
        server.log_dir,
        reactor,
        monitor_polls=cfg.monitor.access_log,
        keep_days=server.log_keep_days,
    )
    site.displayTracebacks = False
    # Read by web.Request: the client behind trusted proxies, and refused
    # publishers answered before their body is read.
    site.guard = guard
    site.publish_gate = gate
    serve_http(site, cfg, reactor, stats, activity, serving)
    listeners = MultiService()
    listeners.setServiceParent(serving)
    for description in descriptions(options):
        description = with_backlog(description)
        strports.service(description, site, reactor=reactor).setServiceParent(listeners)
    if sse.heartbeat:
        _timer(sse.heartbeat_interval, hub.heartbeat, reactor).setServiceParent(serving)
    # The comment keepalive only matters when heartbeats are rarer than it.
    if sse.keepalive and not (sse.heartbeat and sse.heartbeat_interval <= sse.keepalive):
        _timer(sse.keepalive, hub.keepalive, reactor).setServiceParent(serving)
    # Last in, first out: the streams are drained while the listeners
    # still answer (C{/health} says 503, late publishes are recorded).
    DrainService(hub, sse.drain_seconds, sse.retry).setServiceParent(serving)
    return root


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
    L{web.Request} over L{channel.Channel} and its L{channel.WriteBatch}
    (a child of C{parent}, started before the listeners so that it stops
    after them: the streams' last chunks leave before shutdown); without,
    twisted.web's own channel.  Both with the request limits
    (L{limits.Request}) and the connections' cap and clocks
    (L{connections.Connections}, a child of C{parent}); what they refuse
    and drop is logged to C{activity} (C{sse.log}).
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
    request_limits = limits.Limits(bounds, reactor, stats, activity, watched)
    log.info(
        "HTTP/1.1 served by {channel} (server.fastChannel {fast})",
        channel="the fast channel" if cfg.server.fast_channel else "twisted.web's stock channel",
        fast="true" if cfg.server.fast_channel else "false",
    )
    if cfg.server.fast_channel:
        site.requestFactory = limits.request_class(web.Request, request_limits)
        writes = channel.WriteBatch(reactor)
        site.protocol = partial(channel.protocol, writes)
        writes.setServiceParent(parent)
    else:
        site.requestFactory = limits.request_class(web.StockRequest, request_limits)
    connections.watch(site, watched)
    watched.setServiceParent(parent)
    log.info(
        "limits: {connections} connections, {streams} streams (limits.connections, limits.streams)",
        connections=bounds.connections,
        streams=bounds.streams,
    )


def default_node(descriptions: list[str]) -> str:
    """
    C{cluster.node}'s default: the host name and the port of the first
    listener that names one (C{tcp:3000}, C{https:port=3443:...}); when
    none does (C{--listen tcp:0}), the host name and the process id.
    """
    host = socket.gethostname()
    for description in descriptions:
        m = re.search(r"(?:^\w+:|:port=)(\d+)(?::|$)", description)
        if m and int(m.group(1)):
            return f"{host}:{m.group(1)}"
    return f"{host}:pid{os.getpid()}"


def find(service: IService, kind: type[Any]) -> Any:
    """The first service of type C{kind} in the tree under C{service} (tests, bench)."""
    if isinstance(service, kind):
        return service
    for child in service if isinstance(service, MultiService) else ():
        found = find(child, kind)
        if found is not None:
            return found
    return None


def with_backlog(description: str, backlog: int = LISTEN_BACKLOG) -> str:
    """
    Add C{backlog=} to a tcp, tcp6, ssl, https (L{notificator.tls}) or
    unix strports description that has none; return others unchanged.
    """
    kind = description.split(":", 1)[0].strip().lower()
    if kind in _BACKLOG_TYPES and not re.search(r"(^|:)backlog=", description):
        return f"{description}:backlog={backlog}"
    return description


def _timer(interval: float, call: Any, clock: IReactorTime) -> TimerService:
    timer = TimerService(interval, call)
    timer.clock = clock
    return timer
