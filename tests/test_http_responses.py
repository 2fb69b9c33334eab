"""Tests for L{notificator.http.responses}: the headers and bodies of responses."""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from notificator.cors import (
    ALLOW_HEADERS,
    CORSPolicy,
)
from notificator.http.responses import apply_cors, error_body, json_response
from tests.support import BothChannels, InMemoryServer, split_response
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


class JSONAnswerTests(BothChannels, SynchronousTestCase):
    """
    One JSON answer (L{notificator.http.responses.json_response} and what
    the early answers reuse of it): every refusal on the API paths, before
    or after its body is read, has the same C{Content-Type},
    C{Cache-Control: no-store} and C{Content-Length}, in that order, and
    C{{"error": reason}}; C{HEAD} gets the length and no body.
    """

    JSON_HEADERS = [b"content-type", b"cache-control", b"content-length"]

    def exchange(self, server: InMemoryServer, raw: bytes) -> tuple[bytes, list[bytes], bytes]:
        c = server.connect()
        c.receive(raw)
        status, _, body = split_response(c.text())
        head = c.text().partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]
        return status, head, body

    def json_part(self, head: list[bytes]) -> list[tuple[bytes, bytes]]:
        """The JSON answer's headers, in their order on the wire."""
        pairs = [tuple(line.split(b": ", 1)) for line in head]
        return [(k.lower(), v) for k, v in pairs if k.lower() in self.JSON_HEADERS]  # type: ignore[misc]

    def test_every_refusal_the_same_way(self) -> None:
        publish = b"POST /webNotification HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n%s\r\n%s"
        form = b"Content-Type: application/x-www-form-urlencoded\r\n"
        evil = b"Origin: https://evil.example\r\n"
        cases = [
            # Before the body: the limit's 413, and the gate's 403.
            (False, publish % (99999, form, b""), b"413"),
            (True, publish % (3, form + evil, b"id="), b"403"),
            # After it: the resource's own 403 (no gate), ingest's 400, a 405.
            (False, publish % (3, form + evil, b"id="), b"403"),
            (False, publish % (5, form, b"id=xx"), b"400"),
            (False, b"DELETE /users HTTP/1.1\r\nHost: t\r\n\r\n", b"405"),
        ]
        for gate, raw, code in cases:
            server = InMemoryServer(self, self.fast, body_bytes=1000)
            if not gate:
                server.site.gate = None  # asked after the body only
            status, head, body = self.exchange(server, raw)
            self.assertEqual(status.split(b" ")[1], code, raw[:40])
            self.assertEqual(set(json.loads(body)), {"error"})
            self.assertEqual(
                self.json_part(head),
                [
                    (b"content-type", b"application/json; charset=utf-8"),
                    (b"cache-control", b"no-store"),
                    (b"content-length", b"%d" % len(body)),
                ],
                raw[:40],
            )

    def test_head(self) -> None:
        """HEAD: GET's headers and length, no body (a refusal, and the monitor's data)."""
        server = InMemoryServer(self, self.fast)
        for path in (b"/health", b"/users", b"/nope/deeper"):
            get = self.exchange(server, b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path)
            head = self.exchange(server, b"HEAD %s HTTP/1.1\r\nHost: t\r\n\r\n" % path)
            self.assertEqual(head[2], b"", path)
            self.assertEqual(self.json_part(head[1]), self.json_part(get[1]), path)
            self.assertIn((b"content-length", b"%d" % len(get[2])), self.json_part(head[1]))


class JSONAnswerStockTests(JSONAnswerTests):
    fast = False


class JSONResponseTests(SynchronousTestCase):
    """L{notificator.http.responses.json_response} on its own."""

    def test_headers_and_body(self) -> None:
        request = DummyRequest([b""])
        body = json_response(request, 418, {"error": "ünï"})
        self.assertEqual(request.responseCode, 418)
        self.assertEqual(body, '{"error": "ünï"}'.encode())
        self.assertEqual(
            [(k, v) for k, [v] in request.responseHeaders.getAllRawHeaders()],
            [
                (b"Content-Type", b"application/json; charset=utf-8"),
                (b"Cache-Control", b"no-store"),
                (b"Content-Length", b"%d" % len(body)),
            ],
        )
        self.assertEqual(error_body("ünï"), body)

    def test_head_and_cache(self) -> None:
        request = DummyRequest([b""])
        request.method = b"HEAD"
        self.assertEqual(json_response(request, 200, {"a": 1}, cache=b"no-cache"), b"")
        self.assertEqual(request.responseHeaders.getRawHeaders(b"content-length"), [b"8"])
        self.assertEqual(request.responseHeaders.getRawHeaders(b"cache-control"), [b"no-cache"])
