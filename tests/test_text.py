"""Tests for L{notificator.text}: what request text becomes in a log line."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.trial.unittest import SynchronousTestCase

from notificator import logs
from notificator.auth import sign_stream
from notificator.text import redact_uri, safe
from tests.test_auth import EXPIRY, FUZZ, SECRET


class RedactTests(SynchronousTestCase):
    def test_redact(self) -> None:
        """The auth query value is cut to its expiry; everything else is kept."""
        sig = sign_stream(SECRET, "u1", EXPIRY).split(".")[1]
        for uri, expected in [
            (b"/sse/u1", b"/sse/u1"),
            (b"/sse/u1?lang=ko", b"/sse/u1?lang=ko"),
            (b"/sse/u1?auth=1767225600." + sig.encode(), b"/sse/u1?auth=1767225600.*"),
            (
                b"/sse?x=1&auth=1767225600." + sig.encode() + b"&y=2",
                b"/sse?x=1&auth=1767225600.*&y=2",
            ),
            (b"/sse?x=1;auth=17.abc", b"/sse?x=1;auth=17.*"),
            (b"/sse?%61uth=17.abc", b"/sse?%61uth=17.*"),
            (b"/sse?auth=nodot&auth=1.a", b"/sse?auth=*&auth=1.*"),
            (b"/sse?authority=1.a&oauth=2.b", b"/sse?authority=1.a&oauth=2.b"),
            (b"/sse?auth", b"/sse?auth"),
        ]:
            self.assertEqual(redact_uri(uri), expected, uri)

    def test_access_log(self) -> None:
        """access.log lines never hold a subscriber's signature."""
        from twisted.web.test.requesthelper import DummyRequest

        token = sign_stream(SECRET, "u1", EXPIRY)
        request: Any = DummyRequest([b""])
        request.method = b"GET"
        request.uri = b"/sse/u1?auth=" + token.encode()
        request.clientproto = b"HTTP/1.1"
        request.code = 200
        request.sentLength = 0
        request.client = IPv4Address("TCP", "10.0.0.7", 5123)
        line = logs.CombinedLogFormatter()("[t]", request)
        self.assertIn("/sse/u1?auth=1767225600.*", line)
        self.assertNotIn(token.split(".")[1], line)

    @FUZZ
    @given(st.binary(max_size=80), st.binary(max_size=40))
    def test_fuzz(self, query: bytes, sig: bytes) -> None:
        """Any URI is returned whole or redacted, never with an auth value's tail."""
        secret = b"S1GNATURExx" + sig.replace(b"&", b"").replace(b";", b"")
        uri = b"/sse/u?" + query.replace(b"#", b"") + b"&auth=1." + secret
        redacted = redact_uri(uri)
        self.assertNotIn(b"auth=1." + secret, redacted)
        self.assertEqual(
            redact_uri(b"/sse/u?" + query).count(b"?"), (b"/sse/u?" + query).count(b"?")
        )


class SafeTests(SynchronousTestCase):
    def test_line_breaks_and_controls_escaped(self) -> None:
        """Line breaks of every kind, tabs, controls and backslashes are escaped."""
        cases = [
            ("a\r\nb", "a\\r\\nb"),
            ("a\u2028b\u2029c\x85d", "a\\u2028b\\u2029c\\x85d"),
            ("a\tb\x00c\x1bd", "a\\tb\\x00c\\x1bd"),
            ("a\\nb", "a\\\\nb"),
            (b"a\r\xffb", "a\\r\ufffdb"),
        ]
        for raw, expected in cases:
            self.assertEqual(safe(raw), expected, raw)

    def test_printable_text_stays_readable(self) -> None:
        """Korean and other printable text is logged as is."""
        self.assertEqual(safe("홍길동 001000210"), "홍길동 001000210")
        self.assertEqual(safe("홍길동".encode()), "홍길동")

    def test_bounded(self) -> None:
        """Long values are cut with an ellipsis."""
        self.assertEqual(safe("x" * 300, limit=10), "x" * 10 + "...")
