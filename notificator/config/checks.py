# -*- test-case-name: tests.test_config_checks,tests.test_config_model -*-
"""
The checks of single config values: each validator takes what a file
gives for one key and returns it converted, or raises L{_Bad} with the
reason, which L{notificator.config.schema.check} turns into a
L{notificator.config.files.ConfigError} naming the file and the key.
Each key's check is declared with the key, on the field it lands in
(L{notificator.config.model}), made where needed with L{_integer},
L{_duration} (ranges) and L{_nullable} (null allowed).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

import attrs
from OpenSSL import SSL
from twisted.internet.ssl import AcceptableCiphers

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


class _Bad(Exception):
    pass


#: A check: what a file gives for one key -> the value, or L{_Bad}.
Check = Callable[[Any], Any]


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


def _integer(low: int, high: int) -> Check:
    """The check of an integer from C{low} to C{high} (L{_int})."""
    return lambda value: _int(value, low, high)


def _duration(*, allow_zero: bool) -> Check:
    """The check of a number of seconds, above 0 or (C{allow_zero}) from 0 (L{_seconds})."""
    return lambda value: _seconds(value, allow_zero)


def _nullable(check: Check) -> Check:
    """C{check}, with JSON null (L{None}) let through as L{None}."""
    return lambda value: None if value is None else check(value)


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


#: The most workers C{server.workers} may ask for.
MAX_WORKERS = 1024


def _workers(value: object) -> int | str:
    """
    C{server.workers}: a number of worker processes (1: one process, no
    workers) or C{"auto"} (one per CPU, counted when the server starts).
    """
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f'expected a number of workers or "auto", got {_show(value)}')
    if not 1 <= value <= MAX_WORKERS:
        raise _Bad(f'expected a number of workers from 1 to {MAX_WORKERS} or "auto", got {value}')
    return value


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
    C{redis://[[user]:password@]host[:port][/db]}, C{rediss://} for TLS,
    or C{unix:///path/to/redis.sock[?db=N]} (as redis-py reads it; the
    private Redis of C{server.workers}).  C{str()} leaves the password out,
    so it can go into logs and C{/health}.

    @ivar path: the Unix socket's path; L{None} over TCP (C{host} and
        C{port} are then Redis's address).
    """

    host: str
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    tls: bool = False
    path: str | None = None

    def __str__(self) -> str:
        if self.path is not None:
            return f"unix://{self.path}?db={self.db}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{host}:{self.port}/{self.db}"


def _redis_url(value: object) -> RedisAddress | None:
    """
    C{cluster.redis}: L{None} (single node) or a Redis URL (L{RedisAddress});
    never shows a password.
    """
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
    if url.scheme == "unix":
        return _redis_socket(url, shown)
    if url.scheme not in ("redis", "rediss"):
        raise _Bad(f"expected a redis://, rediss:// or unix:// URL, got {shown}")
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


def _redis_socket(url: SplitResult, shown: str) -> RedisAddress:
    """
    C{unix:///path/to/redis.sock[?db=N]}: an absolute socket path, the
    database (C{db}, else 0) as the only query argument; a password as in
    redis-py (C{unix://:password@/path}).
    """
    if url.hostname or url.port is not None:
        raise _Bad(f"a unix:// URL names no host (unix:///path/to/redis.sock): {shown}")
    path = unquote(url.path)
    if not path.startswith("/") or path.endswith("/"):
        raise _Bad(f"expected the absolute path of Redis's socket, got {shown}")
    if url.fragment:
        raise _Bad(f"a fragment is not supported: {shown}")
    try:
        query = parse_qs(url.query, keep_blank_values=True, strict_parsing=bool(url.query))
    except ValueError:
        raise _Bad(f"the query must be db=<number>, got {shown}")
    db = query.pop("db", ["0"])
    if query or len(db) != 1 or not (db[0].isdigit() and int(db[0]) < 1 << 16):
        raise _Bad(f"the query must be db=<number>, got {shown}")
    return RedisAddress(
        host="",
        port=0,
        db=int(db[0]),
        username=unquote(url.username) if url.username else None,
        password=unquote(url.password) if url.password is not None else None,
        path=path,
    )


def _masked(url: str) -> str:
    """C{url} with its password, if any, replaced by C{***}."""
    return re.sub(r"^(\w+://[^:/@]*:).*@", r"\1***@", url.strip())


def _ciphers(value: object) -> str:
    """An OpenSSL cipher list that selects TLS 1.2 suites here."""
    text = _str(value)
    try:
        check_ciphers(text)
    except ValueError as e:
        raise _Bad(str(e))
    return text


def check_ciphers(ciphers: str) -> AcceptableCiphers:
    """
    The TLS 1.2 cipher suites an OpenSSL cipher list selects here, for
    C{CertificateOptions} (L{notificator.tls}; here, where C{server.tls.ciphers}
    is checked, so that the config needs no module above it).

    @raise ValueError: it selects none (a typo, or only TLS 1.3 names).
    """
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    try:
        context.set_cipher_list(ciphers.encode("ascii"))
    except (UnicodeEncodeError, SSL.Error):
        selected = []
    else:
        selected = [
            c for c in SSL.Connection(context, None).get_cipher_list() if not c.startswith("TLS_")
        ]
    if not selected:
        raise ValueError(f"{ciphers!r} selects no TLS 1.2 cipher suite of this OpenSSL")
    suites: AcceptableCiphers = AcceptableCiphers.fromOpenSSLCipherString(":".join(selected))
    return suites


def _key_prefix(value: object) -> str:
    prefix = _str(value)
    if any(c.isspace() for c in prefix) or len(prefix) > 64:
        raise _Bad(f"expected up to 64 characters without spaces, got {_show(value)}")
    return prefix


@attrs.frozen
class Headers:
    """
    C{sse.header} checked: the extra headers of the SSE responses, the CORS
    policy, notes on ignored headers and the name that set the policy.

    @ivar headers: (name, value) of each header sent as configured.
    @ivar cors: the policy C{Access-Control-Allow-Origin} sets.
    @ivar notes: (header name as spelled, note) for each header ignored.
    @ivar cors_name: C{Access-Control-Allow-Origin} as spelled in the file
        (the last one wins).
    """

    headers: tuple[tuple[str, str], ...]
    cors: CORSPolicy
    notes: tuple[tuple[str, str], ...]
    cors_name: str


def _headers(value: object) -> Headers:
    """C{sse.header}: an object of header names to values (L{Headers})."""
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
    return Headers(tuple(headers), policy, tuple(notes), policy_name)
