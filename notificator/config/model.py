# -*- test-case-name: tests.test_config_model,tests.test_config_schema -*-
"""
The configuration: C{DIR/default.json}, then C{DIR/<env>.json}, then
C{DIR/local.json}, deep-merged (objects merge key by key, everything else
replaces), with C{//} and C{/* */} comments allowed so the old node server's
C{config/*.json} files load unchanged.

The merged document is validated once, at start-up, into the frozen
attrs classes here (L{validate}).  Each key is declared once, on the field
it lands in: its dotted name, its check (L{notificator.config.checks}) and,
where the value is not used as it is, how it lands (a path resolved
against the project root, a cap derived from the open-file limit); its
default is read from the shipped C{default.json}
(L{notificator.config.schema}).  The rules between keys (L{RULES}) follow,
one function each.  A bad value raises L{ConfigError}, whose text is one
line naming the file and the dotted key; an unknown key becomes a warning
in L{Config.warnings}.

A new key: its line in C{conf/default.json} and one declared field here,
plus its lines in the guides (C{tests/test_config_model.py} checks both).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
from twisted.internet.endpoints import quoteStringArgument
from twisted.python.filepath import FilePath

from notificator.config import schema
from notificator.config.checks import (
    _LOG_LEVEL_ALIASES,
    LOG_LEVELS,
    MIN_SECRET_LENGTH,
    PROTOCOLS,
    IPNetwork,
    RedisAddress,
    _bool,
    _choice,
    _ciphers,
    _cookie_name,
    _duration,
    _headers,
    _integer,
    _key_prefix,
    _networks,
    _nullable,
    _opt_str,
    _publish_token,
    _redis_url,
    _str,
    _str_list,
    _stream_secret,
    _workers,
)
from notificator.config.files import (
    _ENV_NAME,
    ConfigError,
    environments,
    merge,
    read_json,
    shipped_defaults,
)
from notificator.config.schema import Landing, Setting, build, check, declarations, derived, setting
from notificator.cors import CORSPolicy

#: A number of seconds above 0, and one from 0 (0: off).
_POSITIVE_SECONDS = _duration(allow_zero=False)
_SECONDS_OR_OFF = _duration(allow_zero=True)
#: A count of things the server holds (streams, connections).
_COUNT = _integer(1, 1 << 30)


@attrs.frozen
class ClusterConfig:
    """
    C{cluster.*}: several nodes joined by one Redis.

    @ivar redis: where Redis is; L{None}: a single node, no Redis.
    @ivar node: this node's name (C{/health}, C{/users}, C{/metrics});
        L{None}: the host name and port, chosen when the service is built.
    @ivar prefix: the prefix of every Redis key and channel name.
    @ivar timeout: seconds to wait for Redis's answer.
    @ivar reconnect_max_delay: the longest wait between reconnect attempts.
    @ivar ca: for C{rediss://}, the CA file (PEM) Redis's certificate must
        chain to; L{None}: the system's trust store.
    """

    redis: RedisAddress | None = attrs.field(metadata=setting("cluster.redis", _redis_url))
    node: str | None = attrs.field(metadata=setting("cluster.node", _opt_str))
    prefix: str = attrs.field(metadata=setting("cluster.prefix", _key_prefix))
    timeout: float = attrs.field(metadata=setting("cluster.timeout", _POSITIVE_SECONDS))
    reconnect_max_delay: float = attrs.field(
        metadata=setting("cluster.reconnectMaxDelay", _POSITIVE_SECONDS)
    )
    ca: str | None = attrs.field(metadata=setting("cluster.ca", _opt_str, path=True))


@attrs.frozen
class Certificates:
    """TLS files, already resolved against the project root."""

    ca: str | None = attrs.field(metadata=setting("server.certificates.ca", _opt_str, path=True))
    key: str | None = attrs.field(metadata=setting("server.certificates.key", _opt_str, path=True))
    cert: str | None = attrs.field(
        metadata=setting("server.certificates.cert", _opt_str, path=True)
    )


@attrs.frozen
class TLSConfig:
    """
    C{server.tls.*}: how the TLS listeners (C{https:}, L{notificator.tls})
    serve, added to every C{https:} description that does not say.

    @ivar ciphers: the TLS 1.2 cipher suites, an OpenSSL cipher list.
    @ivar session_tickets: resume sessions by ticket too (C{tickets=}).
    @ivar ticket_key_dir: where the ticket keys are shared between
        processes (C{ticketKeys=}); L{None}: each keeps its own in memory.
    """

    ciphers: str = attrs.field(metadata=setting("server.tls.ciphers", _ciphers))
    session_tickets: bool = attrs.field(metadata=setting("server.tls.sessionTickets", _bool))
    ticket_key_dir: str | None = attrs.field(
        metadata=setting("server.tls.ticketKeyDir", _opt_str, path=True)
    )


@attrs.frozen
class PublishConfig:
    """Who may C{POST /webNotification}: C{publish.allow}, C{publish.token}."""

    allow: tuple[IPNetwork, ...] = attrs.field(metadata=setting("publish.allow", _networks))
    token: str | None = attrs.field(repr=False, metadata=setting("publish.token", _publish_token))


@attrs.frozen
class MonitorConfig:
    """
    @ivar allow: who may see C{/}, C{/users} and C{/metrics}
        (C{monitor.allow}).
    @ivar access_log: write the monitor page's polls (C{/users} and
        C{/health}, every 2 s per open tab) to C{access.log}.
    """

    allow: tuple[IPNetwork, ...] = attrs.field(metadata=setting("monitor.allow", _networks))
    access_log: bool = attrs.field(metadata=setting("monitor.accessLog", _bool))


@attrs.frozen
class SSEAuthConfig:
    """Subscriber signatures: C{sse.auth.secret} (None: off), C{sse.auth.cookie}."""

    secret: str | None = attrs.field(
        repr=False, metadata=setting("sse.auth.secret", _stream_secret)
    )
    cookie: str = attrs.field(metadata=setting("sse.auth.cookie", _cookie_name))


@attrs.frozen
class ServerConfig:
    """
    C{server.*}.

    @ivar hsts: C{server.hsts}: the C{max-age} of the
        C{Strict-Transport-Security} header sent over TLS; L{None}: none.
    @ivar workers: C{server.workers}: how many processes serve (1: this
        one alone), or C{"auto"}: one per CPU
        (L{notificator.workers.supervisor.workers_for}).
    """

    protocol: str = attrs.field(metadata=setting("server.protocol", _choice(*PROTOCOLS)))
    port: int = attrs.field(metadata=setting("server.port", _integer(0, 65535)))
    host: str | None = attrs.field(metadata=setting("server.host", _opt_str))
    endpoints: tuple[str, ...] = attrs.field(metadata=setting("server.endpoints", _str_list))
    certificates: Certificates
    hsts: int | None = attrs.field(
        metadata=setting("server.hsts", _nullable(_integer(0, 2**31 - 1)))
    )
    tls: TLSConfig
    log_level: str = attrs.field(
        metadata=setting("server.log.level", _choice(*LOG_LEVELS, aliases=_LOG_LEVEL_ALIASES))
    )
    log_dir: str = attrs.field(metadata=setting("server.log.dir", _str, path=True))
    log_keep_days: int = attrs.field(
        metadata=setting("server.log.keepDays", _integer(0, 100 * 366))
    )
    trusted_proxies: tuple[IPNetwork, ...] = attrs.field(
        metadata=setting("server.trustedProxies", _networks)
    )
    fast_channel: bool = attrs.field(metadata=setting("server.fastChannel", _bool))
    workers: int | str = attrs.field(metadata=setting("server.workers", _workers))


@attrs.frozen
class HistoryConfig:
    """C{sse.history.*}: what is kept for reconnecting clients."""

    size: int = attrs.field(metadata=setting("sse.history.size", _integer(0, 100_000)))
    ttl: float = attrs.field(metadata=setting("sse.history.ttl", _POSITIVE_SECONDS))
    max_bytes: int = attrs.field(metadata=setting("sse.history.maxBytes", _integer(0, 1 << 40)))
    directory: str | None = attrs.field(metadata=setting("sse.history.dir", _opt_str, path=True))


@attrs.frozen
class SSEConfig:
    """
    C{sse.*}.

    @ivar headers: C{sse.header} but C{Access-Control-Allow-Origin}: the
        extra headers of the SSE responses.
    @ivar cors: C{sse.header}'s C{Access-Control-Allow-Origin}: which other
        origins may read streams and publish.
    """

    headers: tuple[tuple[str, str], ...] = attrs.field(
        metadata=setting("sse.header", _headers, land=lambda header, _: header.headers)
    )
    cors: CORSPolicy = attrs.field(metadata=derived("sse.header", lambda header, _: header.cors))
    heartbeat: bool = attrs.field(metadata=setting("sse.heartbeat", _bool))
    heartbeat_interval: float = attrs.field(
        metadata=setting("sse.heartbeatInterval", _POSITIVE_SECONDS)
    )
    keepalive: float = attrs.field(metadata=setting("sse.keepalive", _SECONDS_OR_OFF))
    retry: int = attrs.field(metadata=setting("sse.retry", _integer(0, 24 * 3600 * 1000)))
    cookie: str = attrs.field(metadata=setting("sse.cookie", _cookie_name))
    drain_seconds: float = attrs.field(metadata=setting("sse.drainSeconds", _SECONDS_OR_OFF))
    history: HistoryConfig
    auth: SSEAuthConfig


def connection_limit(configured: int | None) -> int:
    """
    C{limits.connections}: as configured, or (null) the process's open-file
    limit less L{FD_MARGIN} for the listeners, logs, history and Redis, so
    the server closes connections it cannot keep before C{accept} starts
    failing.
    """
    if configured is not None:
        return configured
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(1, soft - FD_MARGIN)


def stream_limit(configured: int | None, connections: int) -> int:
    """
    C{limits.streams}: as configured, or (null) C{connections} (the
    connection cap) less L{STREAM_RESERVE} (less half of it when it is
    under twice that), so that streams never take the connections
    publishers and C{/health} need.
    """
    if configured is not None:
        return configured
    return max(1, connections - min(STREAM_RESERVE, connections // 2))


#: File descriptors kept free of connections when C{limits.connections} is null.
FD_MARGIN = 100

#: Connections kept free of streams when C{limits.streams} is null.
STREAM_RESERVE = 50


@attrs.frozen
class LimitsConfig:
    """
    C{limits.*}: bounds on what clients can make the server hold.

    @ivar streams_per_user: C{limits.streamsPerUser}; a user's streams
        over it are answered with a long C{retry:} and ended.
    @ivar streams: C{limits.streams}, likewise for all streams (see
        L{stream_limit}).
    @ivar streams_per_address: C{limits.streamsPerAddress}, likewise for
        the streams of one client address (behind trusted proxies, the
        client's); L{None}: no such cap.
    @ivar body_bytes: largest request body read; larger ones get 413 as
        soon as that is known (C{limits.bodyBytes}).
    @ivar body_memory: most bytes of request bodies held in memory at once,
        all connections and streams together (C{limits.bodyMemory}, at
        least C{body_bytes}); a body that would take the total past it gets
        503.
    @ivar form_fields: most fields in a form publish body; more get 400.
    @ivar header_timeout: seconds a connection may take to send a request
        head, from when it opens or its previous response is done (over
        HTTP/2: seconds it may have no open stream).
    @ivar body_timeout: seconds a request may take to send its body, from
        the end of its head (C{limits.bodyTimeout}); later: 408.
    @ivar buffer_bytes: bytes written to a stream whose client stopped
        reading (the transport paused it) before the stream is dropped.
    @ivar connections: open connections in all (C{limits.connections}; see
        L{connection_limit}).
    @ivar streams_given: C{limits.streams} is a number, not null.
    """

    streams_per_user: int = attrs.field(metadata=setting("limits.streamsPerUser", _COUNT))
    streams: int = attrs.field(
        metadata=setting(
            "limits.streams",
            _nullable(_COUNT),
            land=lambda streams, landing: stream_limit(
                streams, landing.landed("limits.connections")
            ),
        )
    )
    streams_per_address: int | None = attrs.field(
        metadata=setting("limits.streamsPerAddress", _nullable(_COUNT))
    )
    body_bytes: int = attrs.field(metadata=setting("limits.bodyBytes", _integer(1, 1 << 40)))
    body_memory: int = attrs.field(metadata=setting("limits.bodyMemory", _integer(1, 1 << 50)))
    form_fields: int = attrs.field(metadata=setting("limits.formFields", _integer(1, 10_000_000)))
    header_timeout: float = attrs.field(metadata=setting("limits.headerTimeout", _POSITIVE_SECONDS))
    body_timeout: float = attrs.field(metadata=setting("limits.bodyTimeout", _POSITIVE_SECONDS))
    buffer_bytes: int = attrs.field(metadata=setting("limits.bufferBytes", _integer(1, 1 << 40)))
    connections: int = attrs.field(
        metadata=setting(
            "limits.connections",
            _nullable(_COUNT),
            land=lambda connections, _: connection_limit(connections),
        )
    )
    #: Whether C{limits.streams} was given (not null): then it holds for a
    #: machine of C{server.workers}, each worker taking its share; null
    #: (a bound from each process's own file limit) holds per process.
    streams_given: bool = attrs.field(
        metadata=derived("limits.streams", lambda streams, _: streams is not None)
    )


@attrs.frozen
class Config:
    """
    The validated configuration.  The classes hold no defaults of their
    own: L{validate} takes every value a file does not give from the
    shipped C{default.json} (L{shipped_defaults}); L{defaults} is that
    configuration alone.

    @ivar root: the directory relative paths are resolved against (the
        parent of the config directory: the project root in a checkout).
    @ivar sources: the files that were read, in merge order.
    @ivar warnings: unknown keys and ignored values, to be logged.
    """

    server: ServerConfig
    sse: SSEConfig
    monitor: MonitorConfig
    publish: PublishConfig
    limits: LimitsConfig
    cluster: ClusterConfig
    root: str
    sources: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    def endpoints(self, every_interface: Iterable[str] = ("::",)) -> list[str]:
        """
        The strports descriptions to listen on: C{server.endpoints} when
        given, else one per interface built from protocol, port, host and
        certificates: C{tcp:} for http, and our C{https:} type
        (L{notificator.tls}) for https (ALPN C{http/1.1}) and http2 (ALPN
        C{h2}, then C{http/1.1}).

        @param every_interface: the interfaces that C{server.host} C{""}
            (every interface) stands for on this host
            (L{notificator.listening.all_interfaces}): C{::} alone where an
            IPv6 socket takes IPv4 too (dual-stack, the default here).
        """
        if self.server.endpoints:
            return list(self.server.endpoints)
        s = self.server
        hosts = [s.host] if s.host else list(every_interface)
        if s.protocol == "http":
            return [f"tcp:port={s.port}{_interface(h)}" for h in hosts]
        certs = s.certificates
        tls = (
            f":privateKey={quoteStringArgument(certs.key or '')}"
            f":certKey={quoteStringArgument(certs.cert or '')}"
        )
        if certs.ca:
            tls += f":extraCertChain={quoteStringArgument(certs.ca)}"
        alpn = _ALPN[s.protocol]
        return [f"https:port={s.port}{_interface(h)}{tls}:alpn={alpn}" for h in hosts]


def _interface(host: str) -> str:
    return f":interface={quoteStringArgument(host)}"


#: ALPN offered per server.protocol (see L{notificator.tls}).
_ALPN = {"https": "http/1.1", "http2": "h2,http/1.1"}


#: Every config key: dotted key -> its declaration (L{Setting}), read from
#: the classes' fields (L{declarations}).
SCHEMA: Mapping[str, Setting] = declarations(Config)


def leaves(doc: Mapping[str, Any]) -> Iterable[tuple[str, Any]]:
    """The dotted keys of a config document and their values, as L{validate} reads them."""
    return schema.leaves(doc, SCHEMA)


def validate(
    doc: Mapping[str, Any], origin: Mapping[str, str], root: str, env: str | None = None
) -> Config:
    """
    Turn a merged document into a L{Config}.  What C{doc} does not give is
    taken from the shipped defaults (L{shipped_defaults}: the one place a
    default is written), merged under it as the files are merged.  Each
    key is checked as declared (L{SCHEMA}), the classes are built from the
    values (L{notificator.config.schema.build}), then the rules between
    keys (L{RULES}) run, in order.

    @param origin: dotted key -> file that set it, for error messages.
    @param env: the environment (C{--env}); in C{production} a door left
        open (L{production_warnings}) is a warning.
    @raise ConfigError: a value of the wrong type or out of range, or
        values that cannot go together.
    """
    shipped, shipped_source = shipped_defaults()
    full: dict[str, Any] = {}
    where: dict[str, str] = {}
    # (merge shares the shipped objects with full, and merges doc into them)
    merge(full, where, copy.deepcopy(shipped), shipped_source)
    merge(full, where, doc, "config")
    where.update(origin)
    values, warnings = check(SCHEMA, full, where, shipped_source)
    cfg = build(Config, Landing(SCHEMA, values, root), root=root)
    read = Read(values, where, shipped, env)
    for rule in RULES:
        warnings.extend(rule(cfg, read))
    return attrs.evolve(cfg, warnings=tuple(warnings))


@attrs.frozen
class Read:
    """
    What the rules between keys (L{RULES}) read besides the L{Config}.

    @ivar values: the checked values by dotted key (before they landed:
        C{limits.streams} is L{None} when the file says null).
    @ivar where: dotted key -> the file that set it.
    @ivar shipped: the shipped defaults (C{default.json}) as read.
    @ivar env: the environment, or L{None}.
    """

    values: Mapping[str, Any]
    where: Mapping[str, str]
    shipped: Mapping[str, Any]
    env: str | None

    def source(self, key: str) -> str:
        """The file that set C{key}."""
        return self.where.get(key, "config")


def _seconds_not_milliseconds(cfg: Config, read: Read) -> list[str]:
    """A warning: a heartbeat interval of 1000 s or more was meant in milliseconds."""
    interval = cfg.sse.heartbeat_interval
    if interval < 1000:
        return []
    return [
        f"{read.source('sse.heartbeatInterval')}: sse.heartbeatInterval: {interval:g} seconds;"
        " the value is in seconds, not milliseconds"
    ]


def _ignored_headers(cfg: Config, read: Read) -> list[str]:
    """
    A warning for each C{sse.header} the server sets itself, naming the
    file that set that header (C{local.json}, say), not the first file
    that had an C{sse.header}.
    """
    section = read.source("sse.header")
    return [
        f"{read.where.get(f'sse.header.{name}', section)}: sse.header: {note}"
        for name, note in read.values["sse.header"].notes
    ]


def _certificates_for_tls(cfg: Config, read: Read) -> list[str]:
    """An error: https and http2 built from C{server.*} need a key and a certificate."""
    server = cfg.server
    if server.protocol != "http" and not server.endpoints:
        for name in ("key", "cert"):
            if getattr(server.certificates, name) is None:
                raise ConfigError(
                    read.source("server.protocol"),
                    f"server.certificates.{name}",
                    f"required when server.protocol is {server.protocol}",
                )
    return []


def _proxies_not_everyone(cfg: Config, read: Read) -> list[str]:
    """A warning: a /0 among the trusted proxies lets any client name any address."""
    if any(n.prefixlen == 0 for n in cfg.server.trusted_proxies):
        return [
            f"{read.source('server.trustedProxies')}: server.trustedProxies: holds a /0"
            " network: every client may then name any address in X-Forwarded-For"
        ]
    return []


def _cookies_apart(cfg: Config, read: Read) -> list[str]:
    """An error: the signature's cookie cannot be the one holding the user id."""
    sse = cfg.sse
    if sse.auth.cookie == sse.cookie:
        raise ConfigError(
            read.source("sse.auth.cookie"),
            "sse.auth.cookie",
            f"must differ from sse.cookie ({sse.cookie!r}), which holds the user id",
        )
    return []


def _long_publish_token(cfg: Config, read: Read) -> list[str]:
    """A warning: a short publish token is easier to guess."""
    token = cfg.publish.token
    if token is not None and len(token) < MIN_SECRET_LENGTH:
        return [
            f"{read.source('publish.token')}: publish.token: shorter than"
            f" {MIN_SECRET_LENGTH} characters; a long random token is harder to guess"
        ]
    return []


def _body_memory_holds_a_body(cfg: Config, read: Read) -> list[str]:
    """
    An error: with C{limits.bodyMemory} under C{limits.bodyBytes}, each
    body between the two would be refused, whoever sends it.  The key
    named is the one changed from its shipped value.
    """
    limits = cfg.limits
    if limits.body_memory >= limits.body_bytes:
        return []
    key = "limits.bodyMemory"
    if limits.body_memory == read.shipped.get("limits", {}).get("bodyMemory"):
        key = "limits.bodyBytes"
    raise ConfigError(
        read.source(key),
        key,
        f"limits.bodyMemory ({limits.body_memory}) is smaller than limits.bodyBytes"
        f" ({limits.body_bytes}): no body larger than it could be read; raise"
        " limits.bodyMemory or lower limits.bodyBytes",
    )


def _streams_leave_connections(cfg: Config, read: Read) -> list[str]:
    """A warning: configured streams that may take every connection."""
    limits = cfg.limits
    if read.values["limits.streams"] is not None and limits.streams >= limits.connections:
        return [
            f"{read.source('limits.streams')}: limits.streams: {limits.streams} streams"
            f" may take every connection (limits.connections {limits.connections}): publishes"
            " and /health are then refused while streams hold them all; null leaves room"
        ]
    return []


def _production_doors(cfg: Config, read: Read) -> list[str]:
    """In production, the doors left open (L{production_warnings})."""
    if read.env != PRODUCTION:
        return []
    cors_key = f"sse.header.{read.values['sse.header'].cors_name}"
    return production_warnings(cfg.sse, read.where, cors_key)


#: The rules between keys, run in this order after the classes are built:
#: each returns its warnings or raises L{ConfigError} naming the file and key.
RULES: tuple[Callable[[Config, Read], list[str]], ...] = (
    _seconds_not_milliseconds,
    _ignored_headers,
    _certificates_for_tls,
    _proxies_not_everyone,
    _cookies_apart,
    _long_publish_token,
    _body_memory_holds_a_body,
    _streams_leave_connections,
    _production_doors,
)


#: The environment whose start-up warns of doors left open.
PRODUCTION = "production"


def production_warnings(sse: SSEConfig, where: Mapping[str, str], cors_key: str) -> list[str]:
    """
    One line for each door a production server should not leave open,
    naming the file and key and what to set: C{"*"} among the allowed
    origins (any web page may read any user's stream, without cookies), and
    no C{sse.auth.secret} (anyone who reaches the port may open any user's
    stream, and read an hour of it back).

    @param where: dotted key -> file that set it.
    @param cors_key: the dotted key of the allowed origins, as spelled.
    """
    lines = []
    if sse.cors.any_origin:
        lines.append(
            f'{where.get(cors_key, where.get("sse.header", "config"))}: {cors_key}: "*" lets'
            " a page on any web site read any user's stream (without cookies); list the"
            ' groupware\'s origins instead, e.g. ["https://gw.example.com"]'
        )
    if sse.auth.secret is None:
        lines.append(
            f"{where.get('sse.auth.secret', 'config')}: sse.auth.secret: null, so anyone who"
            " reaches the server can open any user's stream; set a long random secret and"
            ' have the groupware sign the stream URLs (README.rst, "Subscriber signatures")'
        )
    return lines


def defaults(root: str = ".") -> Config:
    """The configuration of the shipped defaults alone (relative paths under C{root})."""
    return validate({}, {}, root)


def load(directory: FilePath[str], env: str) -> Config:
    """
    Read C{default.json} (optional: the shipped defaults stand in),
    C{<env>.json} and C{local.json} (optional) from C{directory}, merge and
    validate them.  The environment's file must exist: a misspelt
    C{--env} would otherwise run on the defaults alone (plain http on
    every interface).

    @raise ConfigError: on any problem, naming the file and key; for an
        environment without a file, naming those there are.
    """
    if not _ENV_NAME.match(env):
        raise ConfigError(directory.path, "", f"bad environment name {env!r}")
    if not directory.isdir():
        raise ConfigError(directory.path, "", "config directory not found")
    if not directory.child(env + ".json").exists():
        known = environments(directory)
        raise ConfigError(
            directory.path,
            "",
            f"no environment {env!r} (no {env}.json); the environments here are: "
            + (", ".join(known) if known else "none (add a <env>.json)"),
        )
    doc: dict[str, Any] = {}
    origin: dict[str, str] = {}
    sources: list[str] = []
    for name in ("default", env, "local"):
        path = directory.child(name + ".json")
        if not path.exists():
            continue
        merge(doc, origin, read_json(path), path.path)
        sources.append(path.path)
    root = directory.parent().path
    return attrs.evolve(validate(doc, origin, root, env), sources=tuple(sources))
