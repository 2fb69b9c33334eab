# -*- test-case-name: tests.test_tap -*-
"""
C{twistd notificator}: the command line (L{Options}), the pre-flight
check (L{preflight}, also behind C{--check}) and the service tree
(L{makeService}).

What the server is made of is built by L{notificator.app} (L{build_core},
L{build_site}); this module puts it in one service tree, so twistd's
start and SIGTERM cover it: L{notificator.services.SequentialService}s,
which stop their children one after the other, the last started first:
the logs around the serving part, whose stop drains the streams
(L{notificator.services.DrainService}), then stops the timers and the
listeners, sends what the write batch holds and writes the history.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from typing import Any, NoReturn

from twisted.application import strports
from twisted.application.service import IService, MultiService
from twisted.internet.endpoints import quoteStringArgument, serverFromString
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.filepath import FilePath

from notificator import (
    __version__,
    config,
    listening,
    logs,
    pidlock,
    runas,
    services,
)
from notificator.app import build_core, build_site, history_directory
from notificator.http import fast
from notificator.services import DrainService, SequentialService, _timer
from notificator.tls import TLSFileError
from notificator.workers import logs as worker_logs
from notificator.workers import wiring, worker
from notificator.workers.supervisor import workers_for

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
        [
            "worker-slot",
            None,
            None,
            "Internal, not for operators: run as worker K of the supervisor of"
            " server.workers, which starts the workers with it.",
        ],
        [
            "worker-count",
            None,
            None,
            "Internal, not for operators: the number of workers of that supervisor.",
        ],
    ]
    optFlags = [
        [
            "check",
            None,
            "Check the whole configuration (files, every listener's certificates, log and"
            " history directories, cluster.ca) without serving or binding a port; print"
            " one line and exit 0 (OK) or 1.",
        ],
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

    def opt_version(self) -> NoReturn:
        """Print Notificator's version (and Twisted's and Python's) and exit."""
        sys.stdout.write(version_line() + "\n")
        raise SystemExit(0)

    def postOptions(self) -> None:
        """Run the L{preflight} check; with C{--check}, print its line and exit 0."""
        line = preflight(self)
        if line is not None:
            sys.stdout.write(line + "\n")
            raise SystemExit(0)


def version_line() -> str:
    """C{Notificator <version> (Twisted <version>, Python <version>)}."""
    from twisted import __version__ as twisted_version

    python = ".".join(map(str, sys.version_info[:3]))
    return f"Notificator {__version__} (Twisted {twisted_version}, Python {python})"


def preflight(options: Options) -> str | None:
    """
    The pre-flight check: everything that can stop start-up, checked before
    anything is built, each problem one line naming the file or the key (a
    L{SystemExit}: twistd prints it and exits 1, where a
    L{usage.UsageError} would print the whole help text and exit 0):

     - the configuration files (L{config.load}, C{--config} and C{--env},
       else C{$NOTIFICATOR_ENV}, else C{development});
     - the user the server runs as (C{twistd --uid}, L{runas.from_twistd});
     - the directories it writes (L{check_dir}): C{server.log.dir},
       C{sse.history.dir} where the history is on disk
       (L{history_directory}), and C{server.tls.ticketKeyDir} where a
       listener keeps its ticket keys there;
     - every listener's description with its TLS files (L{check_listen}).

    With C{--check}, it creates nothing, and also checks the rest of what
    L{makeService} needs: the configured listeners' TLS files when
    C{--listen} replaces them for this run, and C{cluster.ca} (Redis itself
    is not contacted: its URL was checked with the config); it prints the
    config warnings, one line each, and says whether a running server
    holds the history (L{history_fact}: not an error, the check is made
    before restarting it).  A start takes that lock and checks that its
    ports are free in L{makeService}, twistd's next step, which a parse of
    the options alone (the tests) must not do.

    Run by L{Options.postOptions}; it sets the options' C{env}, C{loaded}
    (the L{config.Config}), C{user} and C{endpoints} (L{descriptions}).

    @return: with C{--check}, the one line saying the configuration is OK,
        and what it is; else L{None}.
    @raise SystemExit: with the one line of the first problem.
    """
    env = options["env"] or os.environ.get("NOTIFICATOR_ENV") or "development"
    options["env"] = env
    try:
        options["loaded"] = config.load(FilePath(options["config"]), env)
    except config.ConfigError as e:
        raise SystemExit(f"notificator: configuration error: {e}")
    cfg: config.Config = options["loaded"]
    dry_run = bool(options["check"])
    try:
        user = runas.from_twistd(getattr(options, "parent", None))
    except ValueError as e:
        raise SystemExit(f"notificator: {e}")
    options["user"] = user
    slot = options["slot"] = wiring.worker_slot(options)
    count = options["workers"] = 1 if slot is not None else workers_for(cfg.server.workers)
    if slot is not None or count > 1:
        # The workers' Redis: cluster.redis, else the supervisor's private
        # one, at a path both find from the config (wiring.private_redis_dir);
        # so the history is in Redis, not in sse.history.dir, as in cluster mode.
        cfg = options["loaded"] = wiring.with_workers_redis(cfg)
    check_dir(cfg.server.log_dir, "server.log.dir", not dry_run, user=user)
    directory = history_directory(cfg)
    if directory is not None:
        check_dir(directory, "sse.history.dir", not dry_run, user=user)
    from_config = not options["listen"] and not cfg.server.endpoints
    options["endpoints"] = descriptions(options)
    keys = ticket_key_dir(cfg, options["endpoints"])
    if keys is not None:
        check_dir(keys, "server.tls.ticketKeyDir", not dry_run, mode=0o700, user=user)
    for description in options["endpoints"]:
        # --check makes no ticket key (the directory was checked above).
        check_listen(without_tickets(description) if dry_run else description, from_config)
    if count > 1:
        wiring.check_workers(options, cfg, dry_run, check_dir)
    if slot is not None:
        machine = options["machine"] = wiring.machine_of(
            cfg, slot, wiring.worker_count(options, cfg), default_node(options["endpoints"])
        )
        options["loaded"] = wiring.as_worker(cfg, machine)
    if not dry_run:
        return None
    if options["listen"]:
        every_interface = listening.all_interfaces(listening.ipv6_mode())
        for description in cfg.endpoints(every_interface):
            check_listen(description, not cfg.server.endpoints)
    cluster = cfg.cluster
    if cluster.redis is not None and cluster.ca is not None:
        from notificator.broker.redis.link import load_trust

        try:
            load_trust(cluster.ca)
        except ValueError as e:
            raise SystemExit(f"notificator: configuration error: {e}")
    for warning in cfg.warnings:
        sys.stdout.write(f"notificator: warning: config: {warning}\n")
    facts = [
        f"env {env}: " + ", ".join(cfg.sources),
        "listening on " + ", ".join(options["endpoints"]),
        f"logs in {cfg.server.log_dir}",
        history_fact(directory),
        wiring.redis_fact(options, cluster.redis),
    ]
    if cfg.warnings:
        facts.append(f"{len(cfg.warnings)} warning{'s' if len(cfg.warnings) > 1 else ''}")
    return f"notificator: configuration OK ({'; '.join(facts)})"


def history_fact(directory: str | None) -> str:
    """
    C{--check}'s word on the history directory: where it is, and whether a
    running server holds it (L{pidlock}).  A held lock is not an error: the
    check is made before restarting the server that holds it.

    @raise SystemExit: the lock file cannot be used.
    """
    if directory is None:
        return "no history on disk"
    lock = pidlock.DirectoryLock(directory)
    if not os.path.exists(lock.path):
        return f"history in {directory}"  # never held: nothing to create here
    try:
        lock.acquire()
    except pidlock.Locked as e:
        holder = f"pid {e.pid}" if e.pid is not None else "another process"
        return f"history in {directory}, in use by the running server ({holder})"
    except OSError as e:
        raise SystemExit(
            f"notificator: configuration error: sse.history.dir: {lock.path}: {e.strerror or e}"
        )
    lock.release()
    return f"history in {directory}"


def descriptions(options: dict[str, Any]) -> list[str]:
    """
    The strports descriptions to listen on: C{--listen}'s, else the
    config's, where C{server.host ""} means every interface, IPv4 and IPv6
    (L{listening.ipv6_mode}); C{https:} ones with C{server.tls.*}
    (L{with_tls}).
    """
    if "endpoints" in options:
        return list(options["endpoints"])
    every_interface = listening.all_interfaces(listening.ipv6_mode())
    loaded: config.Config = options["loaded"]
    chosen = list(options["listen"]) or loaded.endpoints(every_interface)
    return [with_tls(d, loaded.server.tls) for d in chosen]


def with_tls(description: str, tls: config.TLSConfig) -> str:
    """
    Add C{server.tls.*} to an C{https:} description (L{notificator.tls}) as
    the C{ciphers}, C{tickets} and C{ticketKeys} it does not set itself;
    return other descriptions unchanged.
    """
    kind, given = listening.arguments(description)
    if kind != "https":
        return description
    if "ciphers" not in given:
        description += f":ciphers={quoteStringArgument(tls.ciphers)}"
    if "tickets" not in given:
        description += f":tickets={'on' if tls.session_tickets else 'off'}"
    if "ticketKeys" not in given and tls.ticket_key_dir is not None:
        description += f":ticketKeys={quoteStringArgument(tls.ticket_key_dir)}"
    return description


def without_tickets(description: str) -> str:
    """
    An C{https:} description with session tickets off (a later keyword
    wins), so that parsing it makes and reads no ticket key; others as
    they are.
    """
    kind, _, _ = listening.split_description(description)
    return f"{description}:tickets=off" if kind == "https" else description


def ticket_key_dir(cfg: config.Config, descriptions: list[str]) -> str | None:
    """
    C{server.tls.ticketKeyDir} when a listener keeps its ticket keys there
    (an C{https:} description with tickets on and that C{ticketKeys}).
    """
    directory = cfg.server.tls.ticket_key_dir
    if directory is None:
        return None
    for description in descriptions:
        kind, given = listening.arguments(description)
        if (
            kind == "https"
            and given.get("tickets") != "off"
            and given.get("ticketKeys") == directory
        ):
            return directory
    return None


def check_dir(
    path: str,
    key: str,
    create: bool = True,
    mode: int = 0o777,
    user: runas.RunAs | None = None,
) -> None:
    """
    Create a directory the server writes to (C{server.log.dir},
    C{sse.history.dir}, C{server.tls.ticketKeyDir}) if needed and check
    that the user the server runs as can write it, so a bad one stops
    start-up with one line, not with a traceback from the service that
    uses it.

    Started as root with C{twistd --uid}, the server is that user by the
    time it writes there: the directories made here are that user's
    (L{runas.RunAs.make_dirs}), and the check is that user's, not root's.

    @param create: L{False} (C{--check}): create nothing; a missing
        directory is fine if the first of its parents that exists can be
        written by whoever will create it (this process) and entered by
        C{user}.
    @param mode: of the directory when it is made (less the umask).
    @param user: who the server runs as (L{runas.from_twistd}); L{None}:
        this process's user.
    @raise SystemExit: with that line.
    """
    if user is None:
        user = runas.RunAs.current()
    try:
        target = path
        if create:
            user.make_dirs(path, mode)
            writable = user.can(path, os.W_OK | os.X_OK)
        else:
            while not os.path.lexists(target) and os.path.dirname(target) != target:
                target = os.path.dirname(target)
            if not os.path.isdir(target):
                raise NotADirectoryError(errno.ENOTDIR, f"{target} is not a directory")
            if target == path:
                writable = user.can(path, os.W_OK | os.X_OK)
            else:
                # This process makes it, then gives it to the user.
                writable = os.access(target, os.W_OK | os.X_OK) and user.can(target, os.X_OK)
        if not writable:
            raise PermissionError(f"no write permission for {user}")
    except OSError as e:
        reason = e.strerror or str(e)
        raise SystemExit(f"notificator: configuration error: {key}: {path}: {reason}")


#: The config key behind each file argument of an C{https:} description.
_CERT_KEYS = {
    "privateKey": "server.certificates.key",
    "certKey": "server.certificates.cert",
    "extraCertChain": "server.certificates.ca",
    "ticketKeys": "server.tls.ticketKeyDir",
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


def makeService(options: dict[str, Any], reactor: Any = None) -> IService:
    """
    Build the whole server from parsed L{Options}.

    One L{SequentialService}: the logs first in and last out, so they see
    everything; then the serving part: the core and the site
    (L{notificator.app.build_core}, L{notificator.app.build_site}) with the
    services they need, the listeners, the timers and the drain, whose
    stop runs in order: drain the streams (the listeners still answer,
    C{/health} with 503), stop the timers and the listeners, send what the
    write batch holds, write the history, release its directory.

    Where the history is kept on disk, its directory is locked while the
    server runs (L{pidlock.DirectoryLockService}), so that no second server
    appends to the same journal.

    On the real reactor (twistd's call), it first takes that lock
    (L{take_lock}) and checks that every listener can bind
    (L{listening.check_free}): twistd calls this before it daemonizes, so
    another server on the history or a port in use is one line on the
    terminal in both modes.
    """
    cfg: config.Config = options["loaded"]
    endpoints = descriptions(options)
    slot: int | None = options.get("slot")
    directory = history_directory(cfg)
    lock = pidlock.DirectoryLock(directory) if directory is not None else None
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor
        if lock is not None:
            take_lock(lock)
        # (A worker's port is its fellow workers' too: its own bind says.)
        for description in endpoints if slot is None else ():
            try:
                listening.check_free(description, workers=options.get("workers", 1) > 1)
            except listening.PortUnavailable as e:
                raise SystemExit(f"notificator: {e}")
    if options.get("workers", 1) > 1:
        return wiring.supervisor_service(options, cfg, reactor, endpoints)
    for warning in cfg.warnings:
        # Not a field named "warning": twisted's legacy log observers (trial's
        # among them) take an event holding one for a Python warning.
        log.warn("config: {note}", note=warning)
    log.info(
        "notificator configured from {sources}",
        sources=", ".join(cfg.sources),
    )

    root = SequentialService()
    server = cfg.server
    title = f"notificator [{options['env']}] {cfg.root}"
    if slot is None:
        app_log = logs.AppLogService(
            server.log_dir, server.log_level, clock=reactor, keep_days=server.log_keep_days
        )
    else:
        # Its lines go to the supervisor, which writes the one sse.log.
        app_log = logs.AppLogService(
            server.log_dir,
            server.log_level,
            clock=reactor,
            open_file=worker_logs.pipe_opener(worker_logs.SSE_LOG_FD, reactor),
        )
        title += f" worker {slot}"
        worker.IgnoreInterrupt().setServiceParent(root)
    app_log.setServiceParent(root)
    services.ProcessTitleService(title).setServiceParent(root)
    gc_tuning = services.GCTuningService()  # freezes once the history is loaded
    gc_tuning.setServiceParent(root)

    serving = SequentialService()
    serving.setServiceParent(gc_tuning)
    core = build_core(
        cfg, reactor, node=default_node(endpoints), lock=lock, machine=options.get("machine")
    )
    for service in core.services:
        service.setServiceParent(serving)
    activity = app_log.logger("notificator.web")
    access_file = None
    if slot is not None:
        access_file = worker_logs.pipe_opener(worker_logs.ACCESS_LOG_FD, reactor)
    site = build_site(core, cfg, reactor, activity, serving, access_file)
    listeners = MultiService()
    if slot is None:
        listeners.setServiceParent(serving)
        for description in endpoints:
            description = with_backlog(description)
            listener = strports.service(description, site, reactor=reactor)
            if site.fast_channel:
                listener.endpoint = fast.Accepting(listener.endpoint)
            listener.setServiceParent(listeners)
    sse = cfg.sse
    hub = core.hub
    if sse.heartbeat:
        _timer(sse.heartbeat_interval, hub.heartbeat, reactor).setServiceParent(serving)
    # The comment keepalive only matters when heartbeats are rarer than it.
    if sse.keepalive and not (sse.heartbeat and sse.heartbeat_interval <= sse.keepalive):
        _timer(sse.keepalive, hub.keepalive, reactor).setServiceParent(serving)
    if slot is not None:
        # A worker's listeners stop before its drain: the site (its
        # access.log) stays open until the drained streams are logged.
        worker.FactoryHold(site).setServiceParent(serving)
    # Last in, first out: the streams are drained while the listeners
    # still answer (C{/health} says 503, late publishes are recorded).
    DrainService(hub, sse.drain_seconds, sse.retry).setServiceParent(serving)
    if slot is not None:
        wiring.worker_listeners(endpoints, site, core, reactor, with_backlog).setServiceParent(
            serving
        )
    return root


def take_lock(lock: pidlock.DirectoryLock) -> None:
    """
    Take the lock on the history's directory for this server.

    @raise SystemExit: with one line naming the directory and the pid of
        the server that holds it, or why the lock file cannot be used.
    """
    try:
        lock.acquire()
    except pidlock.Locked as e:
        holder = f"pid {e.pid}" if e.pid is not None else "pid unknown"
        raise SystemExit(
            f"notificator: sse.history.dir: {lock.directory} is in use by another running"
            f" Notificator ({holder}); stop it first, or give this server its own"
            " sse.history.dir"
        )
    except OSError as e:
        reason = e.strerror or str(e)
        raise SystemExit(
            f"notificator: configuration error: sse.history.dir: {lock.path}: {reason}"
        )


def default_node(descriptions: list[str]) -> str:
    """
    C{cluster.node}'s default: the host name and the port of the first
    TCP listener that binds one other than 0 (C{tcp:3000},
    C{https:port=3443:...}; L{listening.tcp_address}); when none does
    (C{--listen tcp:0}), the host name and the process id.
    """
    host = socket.gethostname()
    for description in descriptions:
        address = listening.tcp_address(description)
        if address is not None and address[1]:
            return f"{host}:{address[1]}"
    return f"{host}:pid{os.getpid()}"


def find(service: IService, kind: type[Any]) -> Any:
    """The first service of type C{kind} in the tree under C{service} (tests of the tree)."""
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
    unix strports description that sets none (by name or by place,
    L{listening.arguments}); return others unchanged.
    """
    kind, given = listening.arguments(description)
    if kind in _BACKLOG_TYPES and "backlog" not in given:
        return f"{description}:backlog={backlog}"
    return description
