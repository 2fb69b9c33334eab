"""
Tests for L{notificator.logs.access}: the access-log line, its bounded
and escaped fields, and the line of a request that never finished.
"""

from __future__ import annotations

import gc
import re
import tracemalloc
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.trial.unittest import SynchronousTestCase

from notificator import logs


class CombinedLogFormatterTests(SynchronousTestCase):
    def request(self, **kw: Any) -> Any:
        from twisted.web.test.requesthelper import DummyRequest

        r = DummyRequest([b""])
        r.method = kw.get("method", b"POST")
        r.uri = kw.get("uri", b"/webNotification")
        r.clientproto = kw.get("proto", b"HTTP/1.1")
        r.code = kw.get("code", 200)
        r.sentLength = kw.get("length", 96)
        r.client = kw.get("client", IPv4Address("TCP", "10.0.0.7", 5123))
        for name, value in kw.get("headers", {}).items():
            r.requestHeaders.setRawHeaders(name, [value])
        return r

    def test_same_line_as_twisted(self) -> None:
        """Every line is the one twisted.web's combinedLogFormatter writes, on first use and remembered."""
        from twisted.internet.address import IPv6Address, UNIXAddress
        from twisted.web.http import combinedLogFormatter

        cases = [
            {},
            {"headers": {b"user-agent": b"Alert/1.0", b"referer": b"http://gw/main"}},
            {"method": b"GET", "uri": b'/sse/\xea\xb9\x80"x\\y', "length": 0},
            {"uri": b"/a\r\nb\t'c'", "code": 413},
            {"headers": {b"user-agent": b'Mozilla "quoted" \x00\x7f', b"referer": b"'"}},
            {"client": IPv6Address("TCP", "::1", 80), "proto": b"HTTP/1.0"},
            {"client": UNIXAddress(b"/tmp/s"), "length": None},
        ]
        formatter = logs.CombinedLogFormatter()
        for _ in range(2):
            for kw in cases:
                request = self.request(**kw)
                stamp = "[24/Nov/2026:01:00:00 +0000]"
                self.assertEqual(
                    formatter(stamp, request), combinedLogFormatter(stamp, request), kw
                )

    def test_memory_is_bounded_in_bytes(self) -> None:
        """
        Requests with long, distinct paths and user agents (escaping each
        byte to four characters) keep at most MAX_REMEMBERED_BYTES of
        remembered escapes, as counted and as allocated.
        """
        formatter = logs.CombinedLogFormatter()
        formatter.MAX_REMEMBERED_BYTES = 1 << 20
        gc.collect()
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        before = tracemalloc.get_traced_memory()[0]
        for i in range(300):
            hostile = b"\x7f" * 8000 + b"%d" % i
            request = self.request(
                uri=b"/" + hostile, headers={b"user-agent": hostile, b"referer": hostile}
            )
            formatter("[t]", request)
        del request
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
        self.assertLessEqual(kept, 2 * formatter.MAX_REMEMBERED_BYTES)
        self.assertLessEqual(formatter.remembered, formatter.MAX_REMEMBERED_BYTES)

    def test_a_line_is_bounded_whatever_the_request_holds(self) -> None:
        """
        The longest request head twisted.web takes, every byte escaped to
        four characters: each field is cut at its limit on a whole escape
        and ends with "...", the line keeps its combined format and stays
        under 4 KB.
        """
        formatter = logs.CombinedLogFormatter()
        request = self.request(
            method=b"\x01" * 100,
            uri=b"/\x7f" * 8000,
            proto=b"HTTP/\x01" * 10,
            headers={b"user-agent": b"\xfe" * 8000, b"referer": b'"' * 3000},
        )
        line = formatter("[24/Nov/2026:01:00:00 +0000]", request)
        self.assertLess(len(line), 4096)
        m = re.match(
            r'^"10\.0\.0\.7" - - \[[^]]+\] "(\S+) (\S+) (\S+)" 200 96 "(.*)" "(.*)"$', line
        )
        assert m is not None, line
        fields = dict(
            zip(["method", "uri", "protocol", "referer", "agent"], m.groups(), strict=True)
        )
        limits = {
            "method": logs.METHOD_LIMIT,
            "uri": logs.URI_LIMIT,
            "protocol": logs.PROTOCOL_LIMIT,
            "referer": logs.REFERER_LIMIT,
            "agent": logs.USER_AGENT_LIMIT,
        }
        for name, text in fields.items():
            self.assertTrue(text.endswith(logs.CUT), (name, text[-20:]))
            self.assertLessEqual(len(text), limits[name] + len(logs.CUT), name)
        self.assertTrue(fields["uri"].startswith("/\\x7f/\\x7f"))
        self.assertEqual(fields["agent"], "\\xfe" * (logs.USER_AGENT_LIMIT // 4) + "...")
        self.assertEqual(fields["referer"], '\\"' * (logs.REFERER_LIMIT // 2) + "...")

    def test_signature_hidden_before_the_cut(self) -> None:
        """A long path is cut after its auth signature was hidden, never through it."""
        uri = b"/sse/u?auth=1767225600.c2lnbmF0dXJl&x=" + b"y" * 5000
        line = logs.CombinedLogFormatter()("[t]", self.request(uri=uri))
        self.assertIn("auth=1767225600.*&x=yyy", line)
        self.assertNotIn("c2ln", line)


class EscapeFieldTests(SynchronousTestCase):
    @settings(max_examples=500, deadline=None)
    @given(st.binary(max_size=80), st.integers(0, 100))
    def test_whole_escapes_as_many_as_fit(self, raw: bytes, limit: int) -> None:
        """
        A field is twisted.web's escape of the longest start of the value
        whose escape fits in the limit, with "..." when that is not all of it.
        """
        from twisted.web.http import _escape

        text = logs.escape_field(raw, limit)
        n = max(i for i in range(len(raw) + 1) if len(_escape(raw[:i])) <= limit)
        if n == len(raw):
            self.assertEqual(text, _escape(raw))
        else:
            self.assertEqual(text, _escape(raw[:n]) + logs.CUT)

    def test_text_values(self) -> None:
        """Addresses come as text; they are escaped and bounded alike."""
        self.assertEqual(logs.escape_field("10.0.0.7", 64), "10.0.0.7")
        self.assertEqual(logs.escape_field("1" * 70, 64), "1" * 64 + "...")


class LogUnfinishedTests(SynchronousTestCase):
    def test_ignores_requests_without_a_site(self) -> None:
        """A request double with no Site is ignored, not an error."""

        class NoSite:
            pass

        logs.log_unfinished(NoSite())  # type: ignore[arg-type]
