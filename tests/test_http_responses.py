"""Tests for L{notificator.http.responses}: the headers and bodies of responses."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from notificator.cors import (
    ALLOW_HEADERS,
    CORSPolicy,
)
from notificator.http.responses import apply_cors
from tests.test_cors import GW


class ApplyTests(SynchronousTestCase):
    policy = CORSPolicy.from_origins([GW])

    def request(
        self, method: bytes, origin: str | None, policy: CORSPolicy | None = None, **kw: bool
    ) -> DummyRequest:
        request = DummyRequest([b""])
        request.method = method
        if origin is not None:
            request.requestHeaders.setRawHeaders(b"origin", [origin.encode()])
        apply_cors(request, policy or self.policy, b"GET, OPTIONS", **kw)
        return request

    def test_allowed_origin_echoed(self) -> None:
        """An allowed origin is echoed, with credentials, and Vary says so."""
        headers = self.request(b"GET", GW).responseHeaders
        self.assertEqual(headers.getRawHeaders(b"access-control-allow-origin"), [GW.encode()])
        self.assertEqual(headers.getRawHeaders(b"access-control-allow-credentials"), [b"true"])
        self.assertEqual(headers.getRawHeaders(b"vary"), [b"Origin"])
        self.assertFalse(headers.hasHeader(b"access-control-allow-methods"))

    def test_other_or_no_origin(self) -> None:
        """Another origin, or none, gets only Vary."""
        for origin in ("https://evil.example.com", None):
            headers = self.request(b"GET", origin).responseHeaders
            self.assertEqual(list(headers.getAllRawHeaders()), [(b"Vary", [b"Origin"])])

    def test_star_is_the_literal_star_without_credentials(self) -> None:
        """
        With '*', another origin gets the literal * and no credentials (a
        browser then refuses a credentialed read); a listed one is still
        echoed with credentials; null gets nothing.
        """
        policy = CORSPolicy.from_origins(["*", GW])
        headers = self.request(b"GET", "https://evil.example", policy).responseHeaders
        self.assertEqual(headers.getRawHeaders(b"access-control-allow-origin"), [b"*"])
        self.assertFalse(headers.hasHeader(b"access-control-allow-credentials"))
        headers = self.request(b"OPTIONS", "https://evil.example", policy).responseHeaders
        self.assertEqual(headers.getRawHeaders(b"access-control-allow-origin"), [b"*"])
        self.assertEqual(headers.getRawHeaders(b"access-control-allow-methods"), [b"GET, OPTIONS"])
        headers = self.request(b"GET", GW, policy).responseHeaders
        self.assertEqual(headers.getRawHeaders(b"access-control-allow-origin"), [GW.encode()])
        self.assertEqual(headers.getRawHeaders(b"access-control-allow-credentials"), [b"true"])
        for origin in ("null", "x"):
            headers = self.request(b"GET", origin, policy).responseHeaders
            self.assertEqual(list(headers.getAllRawHeaders()), [(b"Vary", [b"Origin"])])

    def test_star_not_honoured_where_it_must_not_be(self) -> None:
        """wildcard=False (the publish resource): '*' lets no other origin in."""
        policy = CORSPolicy.from_origins(["*"])
        headers = self.request(b"POST", "https://evil.example", policy, wildcard=False)
        self.assertEqual(list(headers.responseHeaders.getAllRawHeaders()), [(b"Vary", [b"Origin"])])

    def test_preflight(self) -> None:
        """OPTIONS from an allowed origin gets the methods, headers and max age."""
        headers = self.request(b"OPTIONS", GW).responseHeaders
        self.assertEqual(headers.getRawHeaders(b"access-control-allow-methods"), [b"GET, OPTIONS"])
        self.assertEqual(headers.getRawHeaders(b"access-control-allow-headers"), [ALLOW_HEADERS])
        self.assertEqual(headers.getRawHeaders(b"access-control-max-age"), [b"86400"])
