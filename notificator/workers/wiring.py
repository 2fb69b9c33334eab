# -*- test-case-name: tests.test_tap -*-
"""
How C{twistd notificator} runs C{server.workers}: what L{notificator.tap}
calls for it.  Its pre-flight (L{worker_slot}, L{with_workers_redis},
L{check_workers}, L{as_worker}, L{redis_fact}: the workers' Redis is
C{cluster.redis}, else the supervisor's private one, L{private_redis}),
the supervisor's service tree (L{supervisor_service}: the logs, the
private Redis, the L{Supervisor} of the workers it starts with
L{worker_command}), and a worker's listeners and link to its supervisor
(L{worker_listeners}).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import attrs
from twisted.application.service import IService
from twisted.logger import Logger

from notificator import config, listening, logs, services
from notificator.broker.view import Machine, share
from notificator.config.checks import MAX_WORKERS
from notificator.services import SequentialService
from notificator.workers import logs as worker_logs
from notificator.workers import redis as workers_redis
from notificator.workers import reuseport, worker
from notificator.workers.supervisor import Supervisor, WorkerLink, workers_for

# The namespace these lines had in tap.py: it is part of every log line.
log = Logger("notificator.tap")


def worker_slot(options: dict[str, Any]) -> int | None:
    """
    C{--worker-slot}: this process is that worker of a supervisor
    (L{supervisor_service}); L{None}: not a worker.

    @raise SystemExit: not a slot number.
    """
    given = options.get("worker-slot")
    if given is None:
        return None
    if not (isinstance(given, str) and given.isdigit() and int(given) < MAX_WORKERS):
        raise SystemExit(f"notificator: --worker-slot: expected a worker's number, got {given!r}")
    return int(given)


def worker_count(options: dict[str, Any], cfg: config.Config) -> int:
    """
    C{--worker-count}: how many workers this one's supervisor runs (it
    passes it, so that a worker started after a reload whose files changed
    C{server.workers} still counts its fellows right); else as
    C{server.workers} says.

    @raise SystemExit: not a count of workers.
    """
    given = options.get("worker-count")
    if given is None:
        return workers_for(cfg.server.workers)
    if not (isinstance(given, str) and given.isdigit() and 0 < int(given) <= MAX_WORKERS):
        raise SystemExit(
            f"notificator: --worker-count: expected a number of workers, got {given!r}"
        )
    return int(given)


def private_redis_dir(cfg: config.Config) -> str:
    """
    The directory of the supervisor's private C{redis-server}
    (L{notificator.workers.redis.PrivateRedis}): C{var/redis} under the
    project root, beside C{var/history}.  The workers find its socket
    there from the same configuration.
    """
    return os.path.join(cfg.root, "var", "redis")


def with_workers_redis(cfg: config.Config) -> config.Config:
    """
    C{cfg} with the workers' Redis: C{cluster.redis} when set, else the
    private Redis's socket (L{private_redis_dir}).
    """
    if cfg.cluster.redis is not None:
        return cfg
    path = workers_redis.socket_path(private_redis_dir(cfg))
    address = config.RedisAddress(host="", port=0, path=path)
    return attrs.evolve(cfg, cluster=attrs.evolve(cfg.cluster, redis=address))


def private_redis(options: dict[str, Any]) -> str | None:
    """The private Redis's directory when the supervisor runs one, else L{None}."""
    loaded: config.Config = options["loaded"]
    directory = private_redis_dir(loaded)
    redis = loaded.cluster.redis
    if options.get("workers", 1) > 1 and redis is not None:
        if redis.path == workers_redis.socket_path(directory):
            return directory
    return None


def check_workers(
    options: dict[str, Any],
    cfg: config.Config,
    dry_run: bool,
    check_dir: Callable[..., None],
) -> None:
    """
    What C{server.workers} above 1 needs, checked before anything starts:
    every listener a worker can open with C{SO_REUSEPORT}
    (L{notificator.workers.reuseport}: C{tcp:}, C{tcp6:}, C{https:}) on a
    port of its own choosing (not 0: each worker would get another port),
    and one they may bind under twistd's C{--uid} (L{check_unprivileged});
    without C{cluster.redis}, C{redis-server} installed and the private
    Redis's directory usable, and free (L{workers_redis.check_directory}).

    @param check_dir: checks (and but for C{dry_run} makes) a directory the
        server writes, as the pre-flight does
        (L{notificator.tap.check_dir}).
    @raise SystemExit: the one line saying what to install or set.
    """
    shown = _workers_shown(cfg.server.workers)
    for description in options["endpoints"]:
        kind, named = listening.arguments(description)
        if kind not in reuseport.KINDS:
            raise SystemExit(
                f"notificator: configuration error: server.workers {shown}: the workers listen"
                f" on tcp:, tcp6: or https: descriptions, not {description!r}"
            )
        if named.get("port", "").strip() in ("0", ""):
            raise SystemExit(
                f"notificator: configuration error: server.workers {shown}: {description!r}"
                " listens on port 0 (a port of its own for each worker); give a port number"
            )
    user = options.get("user")
    if user is not None and user.switches:
        check_unprivileged(options["endpoints"], user, shown)
    directory = private_redis(options)
    if directory is None:
        return
    try:
        workers_redis.find(cfg.server.workers)
    except workers_redis.RedisUnavailable as e:
        raise SystemExit(f"notificator: {e}")
    check_dir(directory, "server.workers", not dry_run, mode=0o700, user=options.get("user"))
    if not dry_run:
        try:
            workers_redis.check_directory(directory)
        except workers_redis.RedisUnavailable as e:
            raise SystemExit(f"notificator: server.workers: {e}")


def check_unprivileged(endpoints: list[str], user: Any, shown: str) -> None:
    """
    Under twistd's C{--uid}, every listener on a port the workers can bind.

    The supervisor starts its workers once twistd has switched users
    (C{--uid}), and a worker opens its own sockets: it is that user, and
    the switch away from root took every capability (the kernel clears
    them, the ambient ones too), so a port below
    C{net.ipv4.ip_unprivileged_port_start} (1024) fails with "Permission
    denied", worker after worker.  (Without C{--uid}, the workers are who
    the supervisor is, with its capabilities: L{listening.check_free}
    binds as them.)

    @param user: who the workers run as (L{notificator.runas.RunAs}).
    @raise SystemExit: one line saying what to do instead.
    """
    first = listening.first_unprivileged_port()
    for description in endpoints:
        address = listening.tcp_address(description)
        if address is not None and 0 < address[1] < first:
            raise SystemExit(
                f"notificator: configuration error: server.workers {shown}: {description!r}"
                f" listens on port {address[1]}, which only a process with"
                f" CAP_NET_BIND_SERVICE may bind (below {first}), and the workers run as"
                f" {user} after twistd --uid, without it: start the server as that user with"
                ' the capability instead (docs/operations.rst, "Workers and ports below'
                f' 1024"), or listen on port {first} or above'
            )


def _workers_shown(workers: int | str) -> str:
    return f'"{workers}"' if isinstance(workers, str) else str(workers)


def machine_of(cfg: config.Config, slot: int, count: int, default_node: str) -> Machine:
    """
    The machine worker C{slot} of C{count} belongs to: named as the node
    (C{cluster.node}, else C{default_node}: L{notificator.tap.default_node}).
    """
    return Machine(cfg.cluster.node or default_node, count, slot)


def as_worker(cfg: config.Config, machine: Machine) -> config.Config:
    """
    C{cfg} for a worker of C{machine}: its node name is the machine's with
    C{-w<slot>}, and a C{limits.streams} given (not null) is the machine's:
    the worker takes its share (L{share}: the shares sum to it exactly, the
    kernel spreading connections evenly over the workers).  A null one, a
    bound from each process's own file limit, stays the worker's own.
    """
    node = f"{machine.name}-w{machine.slot}"
    limits = cfg.limits
    if limits.streams_given:
        limits = attrs.evolve(limits, streams=share(limits.streams, machine.workers, machine.slot))
    return attrs.evolve(cfg, cluster=attrs.evolve(cfg.cluster, node=node), limits=limits)


def redis_fact(options: dict[str, Any], redis: config.RedisAddress | None) -> str:
    """C{--check}'s word on Redis and the workers."""
    count = options.get("workers", 1)
    if count > 1:
        shown = _workers_shown(options["loaded"].server.workers)
        where = (
            f"a private redis-server on {redis.path if redis else None} (not started)"
            if private_redis(options) is not None
            else f"Redis {redis} (not contacted)"
        )
        return f"server.workers {shown}: {count} workers and {where}"
    return "Redis not used" if redis is None else f"Redis {redis} (not contacted)"


def worker_listeners(
    endpoints: list[str],
    site: Any,
    core: Any,
    reactor: Any,
    with_backlog: Callable[[str], str],
) -> IService:
    """
    A worker's listeners and its link to the supervisor, last in its tree
    (L{worker.WorkerListeners}, then the L{WorkerLink}: C{ready} once they
    listen, C{stopping} first when the worker stops).

    Last in, first out: on SIGTERM the worker closes its listeners before
    it drains its streams, so that the kernel hands new connections, and
    the drained streams' reconnects, to the other workers (during a
    reload, the new ones already listen).

    @param with_backlog: a description with the listen queue's length
        (L{notificator.tap.with_backlog}).
    """
    tail = SequentialService()
    listeners = worker.WorkerListeners(core.broker, reactor)
    listeners.setServiceParent(tail)
    for description in endpoints:
        try:
            service = reuseport.ReusePortService(
                reactor, with_backlog(description), site, fast_accept=site.fast_channel
            )
        except ValueError as e:
            raise SystemExit(f"notificator: cannot listen on {description!r}: {e}")
        service.setServiceParent(listeners)
    WorkerLink(reactor, until=listeners.when_listening).setServiceParent(tail)
    return tail


def supervisor_service(
    options: dict[str, Any], cfg: config.Config, reactor: Any, endpoints: list[str]
) -> IService:
    """
    The service of C{server.workers} above 1: the process twistd runs (the
    pidfile, the signals) starts the workers and serves no streams.

    One L{SequentialService}, stopped in reverse: the logs (C{sse.log},
    C{access.log}: the supervisor writes its workers' lines,
    L{notificator.workers.logs}), the private C{redis-server} when no
    C{cluster.redis} is set (L{workers_redis.PrivateRedis}, stopped after
    the workers, so their last publishes are recorded), then the
    L{Supervisor} of the workers (L{worker_command}), whose C{SIGHUP}
    replaces them (L{Supervisor.reload}).

    @param endpoints: the workers' listeners (L{notificator.tap.descriptions}).
    """
    server = cfg.server
    count = options["workers"]
    root = SequentialService()
    app_log = logs.AppLogService(
        server.log_dir,
        server.log_level,
        clock=reactor,
        keep_days=server.log_keep_days,
        predicates=[worker_logs.not_relayed],
    )
    app_log.setServiceParent(root)
    access_log = worker_logs.AccessLogService(server.log_dir, reactor, server.log_keep_days)
    access_log.setServiceParent(root)
    services.ProcessTitleService(
        f"notificator [{options['env']}] {cfg.root} supervisor of {count} workers"
    ).setServiceParent(root)
    directory = private_redis(options)
    if directory is not None:
        workers_redis.PrivateRedis(
            reactor,
            workers_redis.find(server.workers),
            directory,
            os.path.join(server.log_dir, "redis.log"),
            launcher=workers_redis.own_session(),
        ).setServiceParent(root)
    log.info(
        "server.workers {shown}: {count} workers on {endpoints}, joined by {redis}",
        shown=_workers_shown(server.workers),
        count=count,
        endpoints=", ".join(endpoints),
        redis="a private redis-server" if directory is not None else str(cfg.cluster.redis),
    )
    if reuseport.requests_migrate() is False:
        log.info(
            "net.ipv4.tcp_migrate_req is 0: in a graceful restart, a connection that"
            " completes its handshake in the microseconds an old worker closes its socket is"
            ' reset; set it to 1 (docs/operations.rst, "Workers: graceful restarts and'
            ' the kernel")'
        )
    Supervisor(
        reactor,
        [worker_command(options, slot) for slot in range(count)],
        # The drain, and time to spare (under the unit's TimeoutStopSec, 30 s).
        stop_timeout=cfg.sse.drain_seconds + 10,
        outputs=worker_logs.LogSinks(app_log, access_log).outputs,
    ).setServiceParent(root)
    return root


def worker_command(options: dict[str, Any], slot: int) -> list[str]:
    """
    The argv of worker C{slot}: this twistd (the Python and the script
    that run the supervisor) with the same configuration and listeners,
    C{-n} (the supervisor is the daemon), no pidfile, C{--worker-count}
    and C{--worker-slot}.
    """
    command = [*twistd_argv(), "-n", "--pidfile=", "notificator"]
    command += ["--config", os.path.abspath(options["config"]), "--env", options["env"]]
    for description in options["listen"]:
        command += ["--listen", description]
    return [*command, "--worker-count", str(options["workers"]), "--worker-slot", str(slot)]


def twistd_argv() -> list[str]:
    """How to run twistd again: the script that runs this process, else its module."""
    script = sys.argv[0] if sys.argv else ""
    if os.path.basename(script).startswith("twistd") and os.path.isfile(script):
        return [sys.executable, os.path.abspath(script)]
    beside = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.isfile(beside):
        return [sys.executable, beside]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
