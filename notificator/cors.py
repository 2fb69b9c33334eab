# -*- test-case-name: tests.test_cors -*-
"""
Which browser origins may read the streams and publish from a page, and
the headers that say so (CORS).

The configuration (C{sse.header["Access-Control-Allow-Origin"]}, a string
or a list of strings) is checked by L{notificator.config}, which makes the
L{CORSPolicy} with L{CORSPolicy.from_origins}:

 - a listed origin may read the streams with the user's cookies (its
   origin is echoed back with C{Access-Control-Allow-Credentials: true}),
   and its pages may publish;
 - C{"*"} lets any origin read without credentials (the literal C{*}, as
   the CORS standard means it: a browser then sends no cookie, and refuses
   a response to a request that asked for them), and publish nothing;
 - C{null}, and anything else that is not an origin, is never allowed (a
   sandboxed frame, a C{file:} page or a page that hides its referrer
   sends C{null}: any page can).

The resources answer with L{notificator.http.responses.apply_cors}; the
publish gate asks L{CORSPolicy.refuse_publish}.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable

import attrs
from hyperlink import URL

# Headers a browser (or the IE EventSource polyfills) may send cross-origin.
ALLOW_HEADERS = b"Accept, Cache-Control, Content-Type, Last-Event-ID, X-Requested-With"

#: The refusal of a publish from a page of an origin that may not publish.
ORIGIN_NOT_ALLOWED = "origin not allowed"

#: The schemes of the origins that may be listed.
SCHEMES = ("http", "https")
_DEFAULT_PORTS = {"http": 80, "https": 443}

# A Host header: a name or an IPv4 address, or an IPv6 one in brackets,
# and an optional port; nothing that could carry a path or a user.
_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::[0-9]{1,5})?")


@attrs.frozen(cache_hash=True)
class Origin:
    """
    A web origin, compared as scheme, host and port (default ports filled
    in, host names lower-cased and in their ASCII form), never as raw text:
    C{https://GW.example.com} and C{https://gw.example.com:443} are the same
    origin.
    """

    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Origin:
        """
        An origin as a browser sends it and as an operator writes it:
        C{http://} or C{https://}, a host, an optional port, and nothing
        else (a trailing C{/} is forgiven).

        @raise ValueError: C{null}, or not such an origin; the text says why.
        """
        text = text.strip()
        if text.lower() == "null":
            raise ValueError(
                "'null' is never an allowed origin: sandboxed frames, file: pages and"
                " pages that hide their address send it, so any page can"
            )
        try:
            url = URL.from_text(text)
            scheme = url.scheme.lower()
            host = url.host
            if ":" in host:  # an IPv6 address, in its one spelling
                host = str(ipaddress.IPv6Address(host))
            else:  # a name in its ASCII form (IDNA), or an IPv4 address
                host = url.to_uri().host
        except Exception as e:  # hyperlink and idna raise several types
            raise ValueError(f"not an origin: {text!r} ({e})")
        if scheme not in SCHEMES or not host:
            raise ValueError(
                f"not an origin: {text!r} (expected http:// or https://, a host and an"
                " optional port, e.g. https://gw.example.com)"
            )
        if url.userinfo or url.query or url.fragment or url.path not in ((), ("",)):
            raise ValueError(
                f"not an origin: {text!r} (an origin is scheme://host[:port], without a"
                " path, query or user)"
            )
        port = _DEFAULT_PORTS[scheme] if url.port is None else url.port
        if not 0 < port < 65536:
            raise ValueError(f"not an origin: {text!r} (port {port})")
        return cls(scheme, host.lower(), port)


@functools.lru_cache(maxsize=256)
def parse_header(value: bytes) -> Origin | None:
    """
    The origin of an C{Origin} request header, or L{None} (C{null}, or not
    an origin).  Cached: a browser sends the same few all day.
    """
    try:
        return Origin.parse(value.decode("latin-1"))
    except ValueError:
        return None


@functools.lru_cache(maxsize=256)
def own_origin(host: bytes, secure: bool) -> Origin | None:
    """
    The origin a request was sent to: its C{Host} header, with C{https}
    when it came over TLS; L{None} when the header is not a host.
    """
    text = host.decode("latin-1").strip()
    if not _HOST.fullmatch(text):
        return None
    try:
        return Origin.parse(("https://" if secure else "http://") + text)
    except ValueError:
        return None


@attrs.frozen
class CORSPolicy:
    """
    Which browser origins may read the streams, and publish.

    @ivar any_origin: C{"*"} was configured: any origin may read, without
        credentials.
    @ivar origins: the listed origins: they may read with credentials, and
        publish.
    """

    any_origin: bool = False
    origins: frozenset[Origin] = frozenset()

    @classmethod
    def from_origins(cls, origins: Iterable[str]) -> CORSPolicy:
        """
        The policy of a configured list of origins: C{"*"} among them lets
        every other origin read without credentials.

        @raise ValueError: one is not an origin, or is C{null}
            (L{Origin.parse}).
        """
        given = list(origins)
        listed = [o for o in given if o.strip() != "*"]
        return cls(
            any_origin=len(listed) < len(given),
            origins=frozenset(Origin.parse(o) for o in listed),
        )

    def listed(self, origin: bytes) -> bool:
        """Whether the C{Origin} header C{origin} names a listed origin."""
        parsed = parse_header(origin)
        return parsed is not None and parsed in self.origins

    def allows(self, origin: bytes) -> bool:
        """Whether the C{Origin} header C{origin} may read a stream (with or without credentials)."""
        parsed = parse_header(origin)
        return parsed is not None and (self.any_origin or parsed in self.origins)

    def refuse_publish(
        self, origin: bytes | None, fetch_site: bytes | None, host: bytes | None, secure: bool
    ) -> str | None:
        """
        Whether a publish may come from the page that sent it:
        L{ORIGIN_NOT_ALLOWED} unless it has no C{Origin} (a sender that is
        not a browser), its origin is listed (C{"*"} does not count: every
        site's forms would publish), or it comes from a page of the server
        itself (the monitor's connection test).  A page of the server
        itself: the browser says so (C{Sec-Fetch-Site: same-origin}, which
        no page can forge; browsers send it over https and to loopback),
        or, when the browser sends no C{Sec-Fetch-Site}, the origin is the
        one the request was sent to (L{own_origin}).

        @param origin: the C{Origin} header.
        @param fetch_site: the C{Sec-Fetch-Site} header.
        @param host: the C{Host} header.
        @param secure: the request came over TLS.
        @return: L{None} or L{ORIGIN_NOT_ALLOWED}.
        """
        if origin is None or self.listed(origin):
            return None
        if fetch_site is not None:
            return None if fetch_site.strip().lower() == b"same-origin" else ORIGIN_NOT_ALLOWED
        parsed = parse_header(origin)
        if parsed is not None and host is not None and parsed == own_origin(host, secure):
            return None
        return ORIGIN_NOT_ALLOWED
