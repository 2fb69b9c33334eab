# -*- test-case-name: tests.test_app -*-
"""
The composition root: what the server is made of, built in one place.

 - L{build_core}: the counters, the hub, the broker (local, with the
   history in memory and on disk, or Redis), who may do what (the
   L{notificator.auth.Guard}) and the metrics registry, with the services
   they need to run;
 - L{build_site}: the twisted.web site over that core: the resource tree,
   the request limits, the channel, the access log.

L{notificator.tap.makeService} puts them in the service tree between the
logs and the listeners; the tests and C{bench/} call the same two
functions, so what they exercise is what runs.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from functools import partial
from typing import Any

import attrs
from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector
from twisted.application.service import IService, MultiService
from twisted.internet.defer import maybeDeferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from notificator import auth, config, metrics, pidlock
from notificator.broker import Broker
from notificator.broker.local import LocalBroker
from notificator.broker.view import Machine, encode_metrics
from notificator.history import HistoryFile, Journal
from notificator.http.site import Site, make_site
from notificator.hub import Hub
from notificator.services import ThreadPoolService
from notificator.stats import Stats


@attrs.frozen
class Core:
    """
    What serves the notifications, whatever speaks HTTP to whom.

    @ivar clock: the reactor the core was built on: its clock and, when it
        runs threads, the host of the history's file work.
    @ivar guard: who may publish, look and subscribe.
    @ivar journal: the history on disk (L{history_directory}); L{None} when
        it is kept in memory only, or not at all, or in Redis.
    @ivar registry: what C{/metrics} serves.
    @ivar services: what the core needs running, in start order (the
        history directory's lock, the history's thread, the broker): each
        stops only after those started after it, so their parent must be a
        L{notificator.services.SequentialService}.
    """

    clock: Any
    stats: Stats
    hub: Hub
    broker: Broker
    guard: auth.Guard
    registry: CollectorRegistry
    journal: Journal | None
    services: tuple[IService, ...]


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


def build_core(
    cfg: config.Config,
    reactor: Any,
    node: str | None = None,
    lock: pidlock.DirectoryLock | None = None,
    machine: Machine | None = None,
) -> Core:
    """
    Build the core from the configuration.

    @param reactor: the clock of everything, and the thread pool's host
        for the history's file work; a reactor without threads (tests:
        L{twisted.internet.testing.MemoryReactorClock}) does it in line.
    @param node: this node's name when C{cluster.node} is not set
        (L{notificator.tap.makeService}: from the listeners); L{None}: the
        host's name.
    @param lock: the lock on the history's directory, when the caller took
        it already (L{notificator.tap.makeService} on the real reactor);
        else one is made, taken when the services start.
    @param machine: this node is a worker of C{server.workers} on that
        machine: its broker writes its snapshot into Redis and answers for
        the whole machine (L{notificator.broker.redis.view}).
    @raise SystemExit: C{cluster.ca} cannot be read (one line).
    """
    stats = Stats(started_at=reactor.seconds())
    hub = Hub(clock=reactor, stats=stats)
    node = cfg.cluster.node or node or socket.gethostname()
    services: list[IService] = []
    journal = None
    directory = history_directory(cfg)
    if directory is not None:
        # First in, last out: released once the history is written.
        services.append(pidlock.DirectoryLockService(lock or pidlock.DirectoryLock(directory)))
        run: Any = maybeDeferred
        if IReactorFromThreads.providedBy(reactor):
            # The history's file work on a thread of its own, in order.
            pool = ThreadPool(minthreads=1, maxthreads=1, name="notificator-history")
            services.append(ThreadPoolService(pool))
            run = partial(deferToThreadPool, reactor, pool)
        journal = Journal(HistoryFile(directory), reactor, run)
    broker: Any
    collectors: list[Collector] = []
    if cfg.cluster.redis is None:
        broker = LocalBroker(hub, stats, reactor, cfg.sse.history, journal, node=node)
    else:
        # Imported only here: txredisapi imports the reactor.
        from notificator.broker.redis import build_broker

        try:
            broker = build_broker(hub, stats, reactor, cfg.cluster, cfg.sse.history, node)
        except ValueError as e:  # cluster.ca unreadable
            raise SystemExit(f"notificator: configuration error: {e}")
        collectors.append(broker.collector())
    services.append(broker)
    registry = metrics.build_registry(hub, stats, broker, reactor, collectors)
    if machine is not None:
        if cfg.cluster.redis is None:
            raise ValueError("a worker of server.workers needs cluster.redis")
        views = broker.serve_machine(machine)
        views.metrics = lambda: encode_metrics(registry.collect())
    return Core(
        clock=reactor,
        stats=stats,
        hub=hub,
        broker=broker,
        guard=auth.Guard.from_config(cfg),
        registry=registry,
        journal=journal,
        services=tuple(services),
    )


#: Where the per-request lines go when no activity logger is given (tests,
#: bench).  (The namespace of the per-request lines: C{makeService} gives
#: one of the same name that only C{sse.log} reads.)
_default_activity = Logger("notificator.web")


def build_site(
    core: Core,
    cfg: config.Config,
    reactor: Any,
    activity: Logger = _default_activity,
    parent: MultiService | None = None,
    access_file: Callable[[str], Any] | None = None,
) -> Site:
    """
    Build the site that serves C{core}: the resource tree, the publish
    gate and the guard asked before a request's body is read, the request
    class, the channel and the access log.

    @param activity: where the per-request lines go (streams opened,
        closed and refused; publishes; refusals); C{makeService} gives one
        that only C{sse.log} reads
        (L{notificator.logs.app.AppLogService.activity}).
    @param parent: where the services the site needs go (the write batch of
        the fast channel, the connections' watcher), started before the
        listeners so that they stop after them; L{None}: a L{MultiService}
        of their own, not started (tests that only render resources).
    @param access_file: opens what C{access.log}'s lines are written to
        instead of the daily file (a worker of C{server.workers}: its pipe
        to the supervisor, which writes, rotates and prunes the file,
        L{notificator.workers.logs}); L{None}: the file.
    """
    if parent is None:
        parent = MultiService()
    return make_site(
        cfg,
        reactor,
        activity,
        parent,
        hub=core.hub,
        broker=core.broker,
        stats=core.stats,
        guard=core.guard,
        registry=core.registry,
        access_file=access_file,
    )
