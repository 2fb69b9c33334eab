# -*- test-case-name: tests.test_config_model -*-
"""
Configuration: C{DIR/default.json}, then C{DIR/<env>.json}, then
C{DIR/local.json}, deep-merged (objects merge key by key, everything else
replaces), with C{//} and C{/* */} comments allowed so the old node server's
C{config/*.json} files load unchanged.

The merged document is validated once, at start-up, into frozen attrs
classes.  A bad value raises L{ConfigError}, whose text is one line naming
the file and the dotted key; an unknown key becomes a warning in
L{Config.warnings}.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from typing import Any
from urllib.parse import unquote, urlsplit

import attrs
from twisted.internet.endpoints import quoteStringArgument
from twisted.python.filepath import FilePath

from notificator.cors import CORSPolicy

PROTOCOLS = ("http", "https", "http2")
LOG_LEVELS = ("debug", "info", "warn", "error", "critical")
_LOG_LEVEL_ALIASES = {"warning": "warn", "fatal": "critical", "trace": "debug"}

# Hop-by-hop headers are forbidden over HTTP/2 and meaningless to set by
# hand over HTTP/1.1; the old server's config carried "Connection".
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}
)
# Set by the SSE resource itself; a configured value would break the stream.
_OWNED_HEADERS = frozenset({"content-type", "content-length"})
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_ACAO = "access-control-allow-origin"


class ConfigError(Exception):
    """
    The configuration cannot be used.  C{str()} is one line: file, key and
    reason, e.g. C{conf/production.json: server.port: expected an integer,
    got "3443a"}.
    """

    def __init__(self, source: str, key: str, reason: str) -> None:
        super().__init__(source, key, reason)
        self.source = source
        self.key = key
        self.reason = reason

    def __str__(self) -> str:
        where = f"{self.key}: " if self.key else ""
        return f"{self.source}: {where}{self.reason}"


def strip_comments(text: str) -> str:
    """
    Remove C{//} line comments and C{/* */} block comments from JSON text,
    leaving string literals (such as C{"https://example.com"}) untouched.
    """
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                raise ValueError("unterminated /* comment")
            # Keep line breaks so json's line numbers stay right.
            out.append("\n" * text.count("\n", i, j))
            i = j + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def read_json(path: FilePath[str]) -> dict[str, Any]:
    """
    Read one commented JSON object file.

    @raise ConfigError: unreadable, not UTF-8, not JSON, or not an object.
    """
    source = path.path
    try:
        text = path.getContent().decode("utf-8-sig")
    except OSError as e:
        raise ConfigError(source, "", f"cannot read: {e.strerror or e}")
    except UnicodeDecodeError:
        raise ConfigError(source, "", "not UTF-8 text")
    return parse_json(text, source)


def parse_json(text: str, source: str) -> dict[str, Any]:
    """
    Parse commented JSON text holding one object.

    @param source: the file it came from, for the error.
    @raise ConfigError: not JSON, or not an object.
    """
    try:
        value = json.loads(strip_comments(text))
    except ValueError as e:
        raise ConfigError(source, "", f"not valid JSON: {e}")
    if not isinstance(value, dict):
        raise ConfigError(source, "", "expected a JSON object at the top level")
    return value


def merge(
    base: dict[str, Any],
    base_origin: dict[str, str],
    over: Mapping[str, Any],
    source: str,
    prefix: str = "",
) -> None:
    """
    Deep-merge C{over} into C{base} in place, recording in C{base_origin}
    which file set each dotted key (so errors can name it).
    """
    for key, value in over.items():
        dotted = prefix + key
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], base_origin, value, source, dotted + ".")
        else:
            base[key] = value
            for old in [k for k in base_origin if k.startswith(dotted + ".")]:
                del base_origin[old]
            base_origin[dotted] = source
            if isinstance(value, dict):
                _mark(value, base_origin, source, dotted + ".")


def _mark(value: dict[str, Any], origin: dict[str, str], source: str, prefix: str) -> None:
    for key, sub in value.items():
        origin[prefix + key] = source
        if isinstance(sub, dict):
            _mark(sub, origin, source, prefix + key + ".")


# --- validators: (value) -> converted value, or raise _Bad(reason) -----------


class _Bad(Exception):
    pass


def _show(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise _Bad(f"expected true or false, got {_show(value)}")
    return value


def _int(value: object, low: int, high: int) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"expected an integer, got {_show(value)}")
    if not low <= value <= high:
        raise _Bad(f"expected an integer from {low} to {high}, got {value}")
    return value


def _seconds(value: object, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Bad(f"expected a number of seconds, got {_show(value)}")
    if value < 0 or (value == 0 and not allow_zero):
        raise _Bad(f"expected a positive number of seconds, got {value}")
    return float(value)


def _str(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise _Bad(f"expected a non-empty string, got {_show(value)}")
    return value


def _opt_str(value: object) -> str | None:
    return None if value is None or value == "" else _str(value)


def _str_list(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _Bad(f"expected a list of strings, got {_show(value)}")
    return tuple(value)


def _choice(*choices: str, aliases: Mapping[str, str] = {}) -> Callable[[object], str]:
    def check(value: object) -> str:
        if isinstance(value, str):
            v = aliases.get(value.lower(), value.lower())
            if v in choices:
                return v
        raise _Bad(f"expected one of {', '.join(choices)}, got {_show(value)}")

    return check


def _cookie_name(value: object) -> str:
    name = _str(value)
    if not _TOKEN.match(name):
        raise _Bad(f"not a valid cookie name: {_show(value)}")
    return name


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_V4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def _network(text: str) -> IPNetwork:
    """
    One CIDR (a bare address is a /32 or /128); an IPv4-mapped IPv6
    network (C{::ffff:10.0.0.0/104}) becomes the IPv4 one it maps.
    """
    spec = text.strip()
    if "%" in spec:
        raise _Bad(f"zone ids are not allowed in a network: {_show(text)}")
    try:
        network = ipaddress.ip_network(spec, strict=True)
    except ValueError as e:
        if "host bits set" in str(e):
            loose = ipaddress.ip_network(spec, strict=False)
            raise _Bad(f"{_show(text)} has host bits set (did you mean {_show(str(loose))}?)")
        raise _Bad(f"not an address or CIDR: {_show(text)}")
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_V4_MAPPED):
        mapped = network.network_address.ipv4_mapped
        return ipaddress.IPv4Network((int(mapped or 0), network.prefixlen - 96))
    return network


def _networks(value: object) -> tuple[IPNetwork, ...]:
    """A list of CIDRs (or one as a string); C{[]} is an empty list."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Bad(f'expected a list of CIDRs such as "10.0.0.0/8", got {_show(value)}')
    return tuple(_network(v) for v in value)


#: A Bearer token's characters (RFC 6750 b64token).
_B64TOKEN = re.compile(r"^[A-Za-z0-9._~+/-]+=*$")
#: Shorter publish tokens are a warning; shorter stream secrets an error.
MIN_SECRET_LENGTH = 16


def _empty(value: object) -> bool:
    """An empty or whitespace-only string: a secret left blank."""
    return isinstance(value, str) and not value.strip()


def _publish_token(value: object) -> str | None:
    """
    Never shows the value: it is a secret.  L{None} (JSON null) is no token;
    an empty string is an error, not "off": a blank left to be filled in
    must not open publishing to every allowed address without a word.
    """
    if value is None:
        return None
    if _empty(value):
        raise _Bad(
            "empty, which would let every allowed address publish without a token:"
            " write null for no token, or set a long random token"
        )
    if not isinstance(value, str) or not _B64TOKEN.match(value):
        raise _Bad(
            "expected null or a string of letters, digits and -._~+/ (optionally"
            " ending in =), usable as a Bearer token (the value is not shown)"
        )
    return value


def _stream_secret(value: object) -> str | None:
    """
    Never shows the value: it is a secret.  L{None} (JSON null) turns
    subscriber signatures off; an empty string is an error (see
    L{_publish_token}).
    """
    if value is None:
        return None
    if _empty(value):
        raise _Bad(
            "empty, which would open every user's streams without a signature:"
            " write null to turn subscriber signatures off, or set a long random secret"
        )
    if not isinstance(value, str):
        raise _Bad("expected null or a string (the value is not shown)")
    if len(value) < MIN_SECRET_LENGTH:
        raise _Bad(
            f"shorter than {MIN_SECRET_LENGTH} characters: a short secret can be guessed"
            " from one signed URL; use a long random string (the value is not shown)"
        )
    return value


@attrs.frozen
class RedisAddress:
    """
    Where cluster mode's Redis is (C{cluster.redis}):
    C{redis://[[user]:password@]host[:port][/db]}, or C{rediss://} for TLS.
    C{str()} leaves the password out, so it can go into logs and C{/health}.
    """

    host: str
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    tls: bool = False

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{host}:{self.port}/{self.db}"


def _redis_url(value: object) -> RedisAddress | None:
    """C{cluster.redis}: L{None} (single node) or a Redis URL; never shows a password."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _Bad(f'expected null or a URL such as "redis://127.0.0.1:6379/0", got {_show(value)}')
    try:
        url = urlsplit(value.strip())
        port = url.port
    except ValueError as e:
        raise _Bad(f"not a Redis URL ({e}): {_show(_masked(value))}")
    shown = _show(_masked(value))
    if url.scheme not in ("redis", "rediss"):
        raise _Bad(f"expected a redis:// or rediss:// URL, got {shown}")
    if not url.hostname:
        raise _Bad(f"no host in {shown}")
    if port == 0:
        raise _Bad(f"port 0 in {shown}")
    if url.query or url.fragment:
        raise _Bad(f"query and fragment are not supported: {shown}")
    path = url.path.strip("/")
    if path and not (path.isdigit() and int(path) < 1 << 16):
        raise _Bad(f"the path must be a database number such as /0, got {shown}")
    return RedisAddress(
        host=url.hostname,
        port=port if port is not None else 6379,
        db=int(path) if path else 0,
        username=unquote(url.username) if url.username else None,
        password=unquote(url.password) if url.password is not None else None,
        tls=url.scheme == "rediss",
    )


def _masked(url: str) -> str:
    """C{url} with its password, if any, replaced by C{***}."""
    return re.sub(r"^(\w+://[^:/@]*:).*@", r"\1***@", url.strip())


def _ciphers(value: object) -> str:
    """An OpenSSL cipher list that selects TLS 1.2 suites here."""
    from notificator.tls import check_ciphers

    text = _str(value)
    try:
        check_ciphers(text)
    except ValueError as e:
        raise _Bad(str(e))
    return text


def _key_prefix(value: object) -> str:
    prefix = _str(value)
    if any(c.isspace() for c in prefix) or len(prefix) > 64:
        raise _Bad(f"expected up to 64 characters without spaces, got {_show(value)}")
    return prefix


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


def _headers(
    value: object,
) -> tuple[tuple[tuple[str, str], ...], CORSPolicy, list[tuple[str, str]], str]:
    """
    C{sse.header}: the extra headers, the CORS policy, notes on ignored
    headers (header name, note), and the name that set the policy (as
    spelled in the file; the last one wins).
    """
    if not isinstance(value, dict):
        raise _Bad(f"expected an object of header names to values, got {_show(value)}")
    headers: list[tuple[str, str]] = []
    policy = CORSPolicy()
    policy_name = "Access-Control-Allow-Origin"
    notes: list[tuple[str, str]] = []  # (header name, note)
    for name, v in value.items():
        lname = name.lower()
        if not _TOKEN.match(name):
            raise _Bad(f"not a valid header name: {_show(name)}")
        if lname == _ACAO:
            policy_name = name
            origins = [v] if isinstance(v, str) else v
            if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
                raise _Bad(f"{name}: expected a string or a list of strings, got {_show(v)}")
            try:
                policy = CORSPolicy.from_origins(origins)
            except ValueError as e:
                raise _Bad(f"{name}: {e}")
            continue
        if lname in _HOP_BY_HOP or lname in _OWNED_HEADERS:
            notes.append(
                (
                    name,
                    f"header {name} is set by the server itself; the configured value is ignored",
                )
            )
            continue
        if lname == "access-control-allow-credentials":
            notes.append(
                (
                    name,
                    f"header {name} is set by the server itself (with a listed origin only,"
                    ' never with "*"); the configured value is ignored',
                )
            )
            continue
        if not isinstance(v, (str, int)) or isinstance(v, bool):
            raise _Bad(f"{name}: expected a string, got {_show(v)}")
        text = str(v)
        if any(c in text for c in "\r\n\0"):
            raise _Bad(f"{name}: value must not contain line breaks")
        headers.append((name, text))
    return tuple(headers), policy, notes, policy_name


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


def shipped_defaults() -> tuple[dict[str, Any], str]:
    """
    The shipped defaults, C{conf/default.json}, and where they were read:
    the package carries that file as C{notificator/default.json} (in a
    checkout a link to it, in an installed package a copy), so a config
    directory without a C{default.json} of its own still gets every
    default, installed or not.
    """
    path = resources.files("notificator") / DEFAULTS
    return parse_json(path.read_text("utf-8"), str(path)), str(path)


#: The package file holding the shipped defaults (see L{shipped_defaults}).
DEFAULTS = "default.json"


def defaults(root: str = ".") -> Config:
    """The configuration of the shipped defaults alone (relative paths under C{root})."""
    return validate({}, {}, root)


#: Files of a config directory that are not environments (L{environments}).
_NOT_ENVIRONMENTS = ("default", "local")

_ENV_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")


def environments(directory: FilePath[str]) -> list[str]:
    """
    The environments C{directory} has: the names of its C{<env>.json}
    files other than C{default.json} and C{local.json}, sorted.
    """
    try:
        names = directory.listdir()
    except OSError:
        return []
    found = []
    for name in names:
        env, dot, ext = name.rpartition(".")
        if dot and ext == "json" and _ENV_NAME.match(env) and env not in _NOT_ENVIRONMENTS:
            found.append(env)
    return sorted(found)


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
