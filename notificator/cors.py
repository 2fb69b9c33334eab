# -*- test-case-name: tests.test_cors -*-
"""
Which browser origins may read the streams and publish from a page, and
the headers that say so (CORS).

The configuration (C{sse.header["Access-Control-Allow-Origin"]}, a string
or a list of strings) is checked by L{notificator.config}, which makes the
L{CORSPolicy} with L{CORSPolicy.from_origins}; the resources answer with
L{apply_cors}.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs
from hyperlink import URL, DecodedURL
from twisted.web.iweb import IRequest

# Headers a browser (or the IE EventSource polyfills) may send cross-origin.
ALLOW_HEADERS = b"Accept, Cache-Control, Content-Type, Last-Event-ID, X-Requested-With"


@attrs.frozen
class Origin:
    """
    A web origin, compared as scheme, host and port (default ports filled
    in), never as raw text: C{https://GW.example.com} and
    C{https://gw.example.com:443} are the same origin.
    """

    scheme: str
    host: str
    port: int | None

    @classmethod
    def parse(cls, text: str) -> Origin:
        try:
            url = DecodedURL(URL.from_text(text.strip()))
        except Exception as e:  # hyperlink raises several types
            raise ValueError(f"not an origin: {text!r} ({e})")
        if not url.scheme or not url.host:
            raise ValueError(f"not an origin: {text!r}")
        return cls(url.scheme.lower(), url.host.lower(), url.port)


@attrs.frozen
class CORSPolicy:
    """
    Which browser origins may read the streams with credentials.

    @ivar any_origin: C{"*"} was configured: every origin is echoed back.
    @ivar origins: the allowed origins otherwise.
    """

    any_origin: bool = False
    origins: frozenset[Origin] = frozenset()

    @classmethod
    def from_origins(cls, origins: Iterable[str]) -> CORSPolicy:
        """
        The policy of a configured list of origins: C{"*"} among them
        allows any origin.

        @raise ValueError: one is not an origin (L{Origin.parse}).
        """
        origins = list(origins)
        if "*" in origins:
            return cls(any_origin=True)
        return cls(origins=frozenset(Origin.parse(o) for o in origins))

    def allows(self, origin: str) -> bool:
        if self.any_origin:
            return True
        try:
            return Origin.parse(origin) in self.origins
        except ValueError:
            return False


def apply_cors(request: IRequest, policy: CORSPolicy, methods: bytes) -> None:
    """
    Allow a credentialed cross-origin read when the request's Origin is
    allowed: echo the origin (never C{*}, which browsers refuse with
    credentials), allow credentials, and answer preflights.
    """
    request.setHeader(b"vary", b"Origin")
    origin = request.getHeader(b"origin")
    if origin is None or not policy.allows(origin.decode("latin-1")):
        return
    request.setHeader(b"access-control-allow-origin", origin)
    request.setHeader(b"access-control-allow-credentials", b"true")
    if request.method == b"OPTIONS":
        request.setHeader(b"access-control-allow-methods", methods)
        request.setHeader(b"access-control-allow-headers", ALLOW_HEADERS)
        request.setHeader(b"access-control-max-age", b"86400")
