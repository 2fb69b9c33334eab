# -*- test-case-name: tests.test_config_model -*-
"""
The configuration: C{DIR/default.json}, then C{DIR/<env>.json}, then
C{DIR/local.json}, deep-merged (objects merge key by key, everything else
replaces), with C{//} and C{/* */} comments allowed so the old node server's
C{config/*.json} files load unchanged.

The merged document is validated once, at start-up, into frozen attrs
classes (L{validate}, with the checks of L{notificator.config.checks}).
A bad value raises L{ConfigError}, whose text is one line naming the
file and the dotted key; an unknown key becomes a warning in
L{Config.warnings}.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
from twisted.internet.endpoints import quoteStringArgument
from twisted.python.filepath import FilePath

from notificator.config.checks import (
    _LOG_LEVEL_ALIASES,
    LOG_LEVELS,
    MIN_SECRET_LENGTH,
    PROTOCOLS,
    IPNetwork,
    RedisAddress,
    _Bad,
    _bool,
    _choice,
    _ciphers,
    _cookie_name,
    _headers,
    _int,
    _key_prefix,
    _networks,
    _opt_str,
    _publish_token,
    _redis_url,
    _seconds,
    _str,
    _str_list,
    _stream_secret,
)
from notificator.config.files import (
    _ENV_NAME,
    ConfigError,
    environments,
    merge,
    read_json,
    shipped_defaults,
)
from notificator.cors import CORSPolicy


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

    redis: RedisAddress | None
    node: str | None
    prefix: str
    timeout: float
    reconnect_max_delay: float
    ca: str | None


@attrs.frozen
class Certificates:
    """TLS files, already resolved against the project root."""

    ca: str | None
    key: str | None
    cert: str | None


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

    ciphers: str
    session_tickets: bool
    ticket_key_dir: str | None


@attrs.frozen
class PublishConfig:
    """Who may C{POST /webNotification}: C{publish.allow}, C{publish.token}."""

    allow: tuple[IPNetwork, ...]
    token: str | None = attrs.field(repr=False)


@attrs.frozen
class MonitorConfig:
    """
    @ivar allow: who may see C{/}, C{/users} and C{/metrics}
        (C{monitor.allow}).
    @ivar access_log: write the monitor page's polls (C{/users} and
        C{/health}, every 2 s per open tab) to C{access.log}.
    """

    allow: tuple[IPNetwork, ...]
    access_log: bool


@attrs.frozen
class SSEAuthConfig:
    """Subscriber signatures: C{sse.auth.secret} (None: off), C{sse.auth.cookie}."""

    secret: str | None = attrs.field(repr=False)
    cookie: str


@attrs.frozen
class ServerConfig:
    """
    C{server.*}.

    @ivar hsts: C{server.hsts}: the C{max-age} of the
        C{Strict-Transport-Security} header sent over TLS; L{None}: none.
    """

    protocol: str
    port: int
    host: str | None
    endpoints: tuple[str, ...]
    certificates: Certificates
    hsts: int | None
    tls: TLSConfig
    log_level: str
    log_dir: str
    log_keep_days: int
    trusted_proxies: tuple[IPNetwork, ...]
    fast_channel: bool


@attrs.frozen
class HistoryConfig:
    """C{sse.history.*}: what is kept for reconnecting clients."""

    size: int
    ttl: float
    max_bytes: int
    directory: str | None


@attrs.frozen
class SSEConfig:
    headers: tuple[tuple[str, str], ...]
    cors: CORSPolicy
    heartbeat: bool
    heartbeat_interval: float
    keepalive: float
    retry: int
    cookie: str
    drain_seconds: float
    history: HistoryConfig
    auth: SSEAuthConfig


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
    """

    streams_per_user: int
    streams: int
    streams_per_address: int | None
    body_bytes: int
    body_memory: int
    form_fields: int
    header_timeout: float
    body_timeout: float
    buffer_bytes: int
    connections: int


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


# dotted key -> validator.  Objects below these keys are leaves.
_SCHEMA: dict[str, Callable[[Any], Any]] = {
    "server.protocol": _choice(*PROTOCOLS),
    "server.port": lambda v: _int(v, 0, 65535),
    "server.host": _opt_str,
    "server.endpoints": _str_list,
    "server.certificates.ca": _opt_str,
    "server.certificates.key": _opt_str,
    "server.certificates.cert": _opt_str,
    "server.hsts": lambda v: None if v is None else _int(v, 0, 2**31 - 1),
    "server.tls.ciphers": _ciphers,
    "server.tls.sessionTickets": _bool,
    "server.tls.ticketKeyDir": _opt_str,
    "server.log.level": _choice(*LOG_LEVELS, aliases=_LOG_LEVEL_ALIASES),
    "server.log.dir": _str,
    "server.log.keepDays": lambda v: _int(v, 0, 100 * 366),
    "sse.header": _headers,
    "sse.heartbeat": _bool,
    "sse.heartbeatInterval": lambda v: _seconds(v, allow_zero=False),
    "sse.keepalive": lambda v: _seconds(v, allow_zero=True),
    "sse.retry": lambda v: _int(v, 0, 24 * 3600 * 1000),
    "sse.cookie": _cookie_name,
    "sse.drainSeconds": lambda v: _seconds(v, allow_zero=True),
    "sse.history.size": lambda v: _int(v, 0, 100_000),
    "sse.history.ttl": lambda v: _seconds(v, allow_zero=False),
    "sse.history.maxBytes": lambda v: _int(v, 0, 1 << 40),
    "sse.history.dir": _opt_str,
    "monitor.accessLog": _bool,
    "limits.streamsPerUser": lambda v: _int(v, 1, 1 << 30),
    "limits.streams": lambda v: None if v is None else _int(v, 1, 1 << 30),
    "limits.streamsPerAddress": lambda v: None if v is None else _int(v, 1, 1 << 30),
    "limits.connections": lambda v: None if v is None else _int(v, 1, 1 << 30),
    "server.trustedProxies": _networks,
    "publish.allow": _networks,
    "publish.token": _publish_token,
    "monitor.allow": _networks,
    "sse.auth.secret": _stream_secret,
    "sse.auth.cookie": _cookie_name,
    "cluster.redis": _redis_url,
    "cluster.node": _opt_str,
    "cluster.prefix": _key_prefix,
    "cluster.timeout": lambda v: _seconds(v, allow_zero=False),
    "cluster.reconnectMaxDelay": lambda v: _seconds(v, allow_zero=False),
    "cluster.ca": _opt_str,
    "server.fastChannel": _bool,
    "limits.bodyBytes": lambda v: _int(v, 1, 1 << 40),
    "limits.bodyMemory": lambda v: _int(v, 1, 1 << 50),
    "limits.formFields": lambda v: _int(v, 1, 10_000_000),
    "limits.headerTimeout": lambda v: _seconds(v, allow_zero=False),
    "limits.bodyTimeout": lambda v: _seconds(v, allow_zero=False),
    "limits.bufferBytes": lambda v: _int(v, 1, 1 << 40),
}


def _leaves(doc: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in doc.items():
        dotted = prefix + key
        if dotted in _SCHEMA or not isinstance(value, dict):
            yield dotted, value
        else:
            yield from _leaves(value, dotted + ".")


def validate(
    doc: Mapping[str, Any], origin: Mapping[str, str], root: str, env: str | None = None
) -> Config:
    """
    Turn a merged document into a L{Config}.  What C{doc} does not give is
    taken from the shipped defaults (L{shipped_defaults}: the one place a
    default is written), merged under it as the files are merged.

    @param origin: dotted key -> file that set it, for error messages.
    @param env: the environment (C{--env}); in C{production} a door left
        open (L{production_warnings}) is a warning.
    @raise ConfigError: a value of the wrong type or out of range.
    """
    shipped, shipped_source = shipped_defaults()
    shipped_body_memory = shipped.get("limits", {}).get("bodyMemory")
    full: dict[str, Any] = {}
    where: dict[str, str] = {}
    merge(full, where, shipped, shipped_source)
    merge(full, where, doc, "config")
    where.update(origin)
    values: dict[str, Any] = {}
    warnings: list[str] = []
    for dotted, raw in _leaves(full):
        source = where.get(dotted, "config")
        check = _SCHEMA.get(dotted)
        if check is None:
            warnings.append(f"{source}: {dotted}: unknown key, ignored")
            continue
        try:
            values[dotted] = check(raw)
        except _Bad as e:
            raise ConfigError(source, dotted, str(e))
    for key in _SCHEMA:
        if key not in values:
            raise ConfigError(shipped_source, key, "no default: the shipped default.json lacks it")

    interval = values["sse.heartbeatInterval"]
    if interval >= 1000:
        warnings.append(
            f"{where.get('sse.heartbeatInterval')}: sse.heartbeatInterval: {interval:g} seconds;"
            " the value is in seconds, not milliseconds"
        )
    headers, cors, notes, cors_name = values.pop("sse.header")
    # Each note names the file that set that header (local.json, say), not
    # the first file that had an sse.header.
    section = where.get("sse.header", "config")
    warnings.extend(
        f"{where.get(f'sse.header.{name}', section)}: sse.header: {note}" for name, note in notes
    )

    def path(p: str) -> str:
        return os.path.normpath(os.path.join(root, os.path.expanduser(p)))

    def resolve(p: str | None) -> str | None:
        return None if p is None else path(p)

    server = ServerConfig(
        protocol=values["server.protocol"],
        port=values["server.port"],
        host=values["server.host"],
        endpoints=values["server.endpoints"],
        certificates=Certificates(
            ca=resolve(values["server.certificates.ca"]),
            key=resolve(values["server.certificates.key"]),
            cert=resolve(values["server.certificates.cert"]),
        ),
        hsts=values["server.hsts"],
        tls=TLSConfig(
            ciphers=values["server.tls.ciphers"],
            session_tickets=values["server.tls.sessionTickets"],
            ticket_key_dir=resolve(values["server.tls.ticketKeyDir"]),
        ),
        log_level=values["server.log.level"],
        log_dir=path(values["server.log.dir"]),
        log_keep_days=values["server.log.keepDays"],
        trusted_proxies=values["server.trustedProxies"],
        fast_channel=values["server.fastChannel"],
    )
    if server.protocol != "http" and not server.endpoints:
        for name in ("key", "cert"):
            if getattr(server.certificates, name) is None:
                key = f"server.certificates.{name}"
                raise ConfigError(
                    where.get("server.protocol", "config"),
                    key,
                    f"required when server.protocol is {server.protocol}",
                )
    sse = SSEConfig(
        headers=headers,
        cors=cors,
        heartbeat=values["sse.heartbeat"],
        heartbeat_interval=values["sse.heartbeatInterval"],
        keepalive=values["sse.keepalive"],
        retry=values["sse.retry"],
        cookie=values["sse.cookie"],
        drain_seconds=values["sse.drainSeconds"],
        history=HistoryConfig(
            size=values["sse.history.size"],
            ttl=values["sse.history.ttl"],
            max_bytes=values["sse.history.maxBytes"],
            directory=resolve(values["sse.history.dir"]),
        ),
        auth=SSEAuthConfig(
            secret=values["sse.auth.secret"],
            cookie=values["sse.auth.cookie"],
        ),
    )
    if any(n.prefixlen == 0 for n in server.trusted_proxies):
        warnings.append(
            f"{where.get('server.trustedProxies', 'config')}: server.trustedProxies: holds a /0"
            " network: every client may then name any address in X-Forwarded-For"
        )
    if sse.auth.cookie == sse.cookie:
        raise ConfigError(
            where.get("sse.auth.cookie", "config"),
            "sse.auth.cookie",
            f"must differ from sse.cookie ({sse.cookie!r}), which holds the user id",
        )
    publish = PublishConfig(allow=values["publish.allow"], token=values["publish.token"])
    if publish.token is not None and len(publish.token) < MIN_SECRET_LENGTH:
        warnings.append(
            f"{where.get('publish.token', 'config')}: publish.token: shorter than"
            f" {MIN_SECRET_LENGTH} characters; a long random token is harder to guess"
        )
    monitor = MonitorConfig(allow=values["monitor.allow"], access_log=values["monitor.accessLog"])
    connections = connection_limit(values["limits.connections"])
    limits = LimitsConfig(
        streams_per_user=values["limits.streamsPerUser"],
        streams=stream_limit(values["limits.streams"], connections),
        streams_per_address=values["limits.streamsPerAddress"],
        body_bytes=values["limits.bodyBytes"],
        body_memory=values["limits.bodyMemory"],
        form_fields=values["limits.formFields"],
        header_timeout=values["limits.headerTimeout"],
        body_timeout=values["limits.bodyTimeout"],
        buffer_bytes=values["limits.bufferBytes"],
        connections=connections,
    )
    if limits.body_memory < limits.body_bytes:
        # Each body between the two would be refused, whoever sends it.  The
        # key named is the one changed from its shipped value.
        key = "limits.bodyMemory"
        if limits.body_memory == shipped_body_memory:
            key = "limits.bodyBytes"
        raise ConfigError(
            where.get(key, "config"),
            key,
            f"limits.bodyMemory ({limits.body_memory}) is smaller than limits.bodyBytes"
            f" ({limits.body_bytes}): no body larger than it could be read; raise"
            " limits.bodyMemory or lower limits.bodyBytes",
        )
    if values["limits.streams"] is not None and limits.streams >= connections:
        warnings.append(
            f"{where.get('limits.streams', 'config')}: limits.streams: {limits.streams} streams"
            f" may take every connection (limits.connections {connections}): publishes and"
            " /health are then refused while streams hold them all; null leaves room"
        )
    cluster = ClusterConfig(
        redis=values["cluster.redis"],
        node=values["cluster.node"],
        prefix=values["cluster.prefix"],
        timeout=values["cluster.timeout"],
        reconnect_max_delay=values["cluster.reconnectMaxDelay"],
        ca=resolve(values["cluster.ca"]),
    )
    if env == PRODUCTION:
        warnings.extend(production_warnings(sse, where, f"sse.header.{cors_name}"))
    return Config(
        server=server,
        sse=sse,
        monitor=monitor,
        publish=publish,
        limits=limits,
        cluster=cluster,
        root=root,
        warnings=tuple(warnings),
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
