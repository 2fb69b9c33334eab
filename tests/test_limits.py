"""
Tests for L{notificator.limits}: the request-body limit and the
request-head clock, each with the fast channel and with twisted.web's
stock one (C{server.fastChannel}), over real C{tcp.Server} transports
whose sockets are fakes (L{tests.support.InMemoryServer}), on a
L{MemoryReactorClock}.  The end-to-end tests are in
L{tests.test_limits_e2e}; the stream's flow control in L{tests.test_stream}.
"""

from __future__ import annotations

import errno
import json
from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from notificator import limits
from notificator.config import defaults
from tests.support import (
    BothChannels,
    InMemoryServer,
    dechunk,
    evolved,
    parse_frames,
    split_response,
)

FORM = b"Content-Type: application/x-www-form-urlencoded\r\n"


def post(body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"POST /webNotification HTTP/1.1\r\nHost: t\r\n"
        + FORM
        + extra
        + b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )


def chunked_head(path: bytes = b"/webNotification") -> bytes:
    return (
        b"POST " + path + b" HTTP/1.1\r\nHost: t\r\n" + FORM + b"Transfer-Encoding: chunked\r\n\r\n"
    )


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


# --- limits.bodyBytes ------------------------------------------------------------------------


class BodyLimitTests(BothChannels, SynchronousTestCase):
    """A body over limits.bodyBytes gets 413 while it is being read, and the connection closes."""

    def test_announced_length_refused_after_the_head(self) -> None:
        """Content-Length over the limit: 413 JSON and a close as soon as the head is read."""
        s = self.server(body_bytes=1000)
        c = s.connect()
        c.receive(
            b"POST /webNotification HTTP/1.1\r\nHost: t\r\n"
            + FORM
            + b"Content-Length: 67108864\r\n\r\n"
        )
        status, headers, body = split_response(c.text())
        self.assertEqual(status, b"HTTP/1.1 413 Content Too Large")
        self.assertEqual(headers[b"content-type"], b"application/json; charset=utf-8")
        self.assertEqual(headers[b"connection"], b"close")
        self.assertEqual(int(headers[b"content-length"]), len(body))
        self.assertEqual(
            json.loads(body),
            {"error": "request body of 67108864 bytes is larger than limits.bodyBytes (1000)"},
        )
        # Our side is closed after the answer (the client reads an end), and
        # what the client still sends is read and dropped until it closes.
        self.assertTrue(c.half_closed)
        self.assertEqual(s.stats.rejected, {413: 1})
        self.assertEqual(s.stats.published, 0)
        [event] = s.logged("refused a request")
        self.assertEqual(event["peer"], "127.0.0.1")
        c.receive(b"id=notify_u1&data=" + b"x" * 5000)
        self.assertTrue(c.half_closed)
        self.assertEqual(c.text().count(b"HTTP/1.1"), 1)
        c.close()
        self.assertEqual(s.stats.published, 0)

    def test_lingering_ends(self) -> None:
        """The dropped rest is bounded: the head clock ends it, or too much of it aborts."""
        s = self.server(body_bytes=1000, header_timeout=10)
        c = s.connect()
        c.receive(b"POST /webNotification HTTP/1.1\r\nHost: t\r\nContent-Length: 67108864\r\n\r\n")
        self.assertTrue(c.half_closed)
        for _ in range(10):
            s.reactor.advance(1.01)
            c.pump()
        self.assertFalse(c.transport.connected)  # closed by the head clock
        c2 = s.connect()
        c2.receive(b"POST /webNotification HTTP/1.1\r\nHost: t\r\nContent-Length: 67108864\r\n\r\n")
        c2.receive(b"x" * (limits.LINGER_BODIES * 1000))
        self.assertTrue(c2.half_closed)
        c2.receive(b"x")
        self.assertTrue(c2.transport._aborting)

    def test_body_in_the_same_read_is_ignored(self) -> None:
        """Body bytes that came with the head are not read into memory or parsed."""
        s = self.server(body_bytes=100)
        c = s.connect()
        body = b"id=notify_u1&data=" + b"1" * 200
        c.receive(post(body))
        self.assertEqual(c.text().count(b"HTTP/1.1"), 1)
        self.assertIn(b" 413 ", c.text())
        self.assertEqual(s.stats.published, 0)

    def test_no_continue_after_the_refusal(self) -> None:
        """A client waiting for 100 Continue gets the 413 instead, and nothing after it."""
        s = self.server(body_bytes=1000)
        c = s.connect()
        c.receive(
            b"POST /webNotification HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
            + FORM
            + b"Content-Length: 5000\r\n\r\n"
        )
        self.assertTrue(c.text().startswith(b"HTTP/1.1 413 "))
        self.assertNotIn(b"100 Continue", c.text())

    def test_chunked_refused_when_the_limit_is_passed(self) -> None:
        """A chunked body is read until it passes the limit, then answered 413 and closed."""
        s = self.server(body_bytes=1000)
        c = s.connect()
        c.receive(chunked_head())
        c.receive(chunk(b"id=notify_u1&data=" + b"1" * 500))
        c.receive(chunk(b"2" * 400))
        self.assertEqual(c.text(), b"")  # 918 bytes: still reading
        self.assertFalse(c.closing)
        c.receive(chunk(b"3" * 100))
        status, _, body = split_response(c.text())
        self.assertEqual(status, b"HTTP/1.1 413 Content Too Large")
        self.assertEqual(
            json.loads(body), {"error": "request body larger than limits.bodyBytes (1000)"}
        )
        self.assertTrue(c.half_closed)
        c.receive(chunk(b"4" * 100) + b"0\r\n\r\n")  # the client goes on: nothing happens
        self.assertEqual(c.text().count(b"HTTP/1.1"), 1)
        self.assertEqual(s.stats.published, 0)

    def test_chunked_refused_in_one_read(self) -> None:
        """A whole chunked body over the limit in one read gets one 413 and is not published."""
        s = self.server(body_bytes=100)
        c = s.connect()
        c.receive(chunked_head() + chunk(b"id=notify_u1&data=" + b"1" * 200) + b"0\r\n\r\n")
        self.assertEqual(c.text().count(b"HTTP/1.1"), 1)
        self.assertIn(b" 413 ", c.text())
        self.assertEqual(s.stats.published, 0)

    def test_at_the_limit_is_published(self) -> None:
        """Bodies of exactly the limit, announced or chunked, are read and published."""
        s = self.server(body_bytes=100)
        body = b"id=notify_u1&data=" + b"1" * 82
        self.assertEqual(len(body), 100)
        c = s.connect()
        c.receive(post(body))
        self.assertIn(b"HTTP/1.1 200 OK", c.text())
        c2 = s.connect()
        c2.receive(chunked_head() + chunk(body[:50]) + chunk(body[50:]) + b"0\r\n\r\n")
        self.assertIn(b"HTTP/1.1 200 OK", c2.text())
        self.assertEqual(s.stats.published, 2)
        self.assertEqual(s.stats.rejected, {})

    def test_other_connections_unaffected(self) -> None:
        """A refused body costs nobody else: an open stream keeps receiving."""
        s = self.server(body_bytes=100)
        sse = s.connect()
        sse.receive(b"GET /sse/u1 HTTP/1.1\r\nHost: t\r\n\r\n")
        bad = s.connect()
        bad.receive(post(b"x" * 500))
        good = s.connect()
        good.receive(post(b"id=notify_u1&data=7"))
        s.pump()
        self.assertIn(b'"delivered": 1', good.text())
        events = parse_frames(dechunk(split_response(sse.text())[2]))
        self.assertEqual(events[-1]["data"], "7")

    def test_unlimited_request_class(self) -> None:
        """The request class without limits (no configured site) reads bodies as twisted.web does."""
        self.assertIsNone(limits.Request.limits)
        bounded = limits.request_class(limits.Request, _limits(Clock()))
        self.assertTrue(issubclass(bounded, limits.Request))
        self.assertEqual(bounded.limits.body_bytes, 1024 * 1024)


class BodyLimitStockTests(BodyLimitTests):
    fast = False


def _limits(clock: Any, **config: Any) -> limits.Limits:
    return limits.Limits(evolved(defaults().limits, config), clock)


class HTTP2RefusalTests(SynchronousTestCase):
    """Over HTTP/2 a refused body gets its 413 on the stream, which is then reset."""

    def test_answer_then_reset(self) -> None:
        """After the stream's set-up: headers, the JSON body, then RST_STREAM; not before."""
        clock = Clock()
        calls: list[tuple[str, Any]] = []

        class Stream:
            transport = None  # as twisted.web's H2Stream

            def getPeer(self) -> Any:
                return StringTransport().getPeer()

            def getHost(self) -> Any:
                return StringTransport().getHost()

            def writeHeaders(self, *args: Any) -> None:
                calls.append(("headers", args))

            def write(self, data: bytes) -> None:
                calls.append(("data", data))

            def abortConnection(self) -> None:
                calls.append(("reset", None))

        cls = limits.request_class(limits.Request, _limits(clock, body_bytes=10))
        request = cls(Stream(), queued=False)
        # As H2Stream's constructor: gotLength at content-length, parseCookies
        # once every header is in (channel.WholeHeadRequest).
        request.gotLength(11)
        request.parseCookies()
        self.assertEqual(calls, [])  # inside the stream's constructor: nothing yet
        clock.advance(0)
        self.assertEqual([c[0] for c in calls], ["headers", "data", "reset"])
        version, code, reason, headers = calls[0][1]
        self.assertEqual((code, reason), (b"413", b"Content Too Large"))
        self.assertEqual(headers.getRawHeaders(b"content-length"), [b"%d" % len(calls[1][1])])
        self.assertEqual(
            json.loads(calls[1][1]),
            {"error": "request body of 11 bytes is larger than limits.bodyBytes (10)"},
        )
        request.handleContentChunk(b"x" * 100)  # more data: ignored
        request.requestReceived(b"POST", b"/webNotification", b"HTTP/2")  # not processed
        self.assertIsNone(request.content)

    def test_client_reset_first(self) -> None:
        """A stream the client reset before the answer gets none."""
        clock = Clock()
        cls = limits.request_class(limits.Request, _limits(clock, body_bytes=10))

        class Stream:
            transport = None

            def getPeer(self) -> Any:
                return StringTransport().getPeer()

            def getHost(self) -> Any:
                return StringTransport().getHost()

        request = cls(Stream(), queued=False)
        request.gotLength(None)
        request.parseCookies()
        request.handleContentChunk(b"x" * 11)
        request.connectionLost(Failure(ConnectionDone()))
        clock.advance(0)  # no attribute error: nothing is written
        self.assertEqual(clock.getDelayedCalls(), [])


class HTTP2GetBodyTests(SynchronousTestCase):
    """
    Over HTTP/2 (twisted.web's real H2Connection, in memory) a GET's DATA
    frames without content-length, whose length twisted.web takes for 0
    but which it hands in, are a body without an announced length: over
    limits.bodyBytes 413, too slow 408, and a GET that comes whole is served.
    """

    def test_get_with_a_body(self) -> None:
        """50 KB of DATA on a GET (limits.bodyBytes 1000): 413; a few bytes never ended: 408."""
        from tests.support import MemoryH2

        s = InMemoryServer(self, True, body_bytes=1000, body_timeout=30)
        c = MemoryH2(self, s)
        big = c.open("GET", "/health", [])
        for _ in range(50):
            if big in c.reset:
                break
            c.body(big, b"x" * 1000)
        self.assertEqual((c.status(big), big in c.reset), (413, True))
        slow = c.open("GET", "/health", [])
        c.body(slow, b"x" * 10)
        for _ in range(31):
            s.reactor.advance(1)
        c.send()
        self.assertEqual((c.status(slow), slow in c.reset), (408, True))
        ok = c.open("GET", "/health", [], end=True)
        self.assertEqual(c.status(ok), 200)
        self.assertEqual(s.stats.rejected, {413: 1, 408: 1})


# --- limits.headerTimeout --------------------------------------------------------------------


class HeadTimeoutTests(BothChannels, SynchronousTestCase):
    """A connection gets limits.headerTimeout seconds for each request head."""

    def setUp(self) -> None:
        self.s = self.server(header_timeout=10)

    def advance(self, seconds: float) -> None:
        for _ in range(int(seconds * 10)):
            self.s.reactor.advance(0.1)
            for conn in self.s.conns:
                conn.pump()

    def test_silent_connection_closed(self) -> None:
        """A connection that sends nothing is closed after 10 s, not before, with a log line."""
        c = self.s.connect()
        self.advance(9.9)
        self.assertFalse(c.closing)
        self.advance(0.2)
        self.assertIsNotNone(c.lost)
        [event] = self.s.logged("no complete request head")
        self.assertEqual((event["peer"], event["seconds"]), ("127.0.0.1", 10))

    def test_trickled_head_closed(self) -> None:
        """One byte a second keeps twisted.web's idle timeout away, not this one."""
        c = self.s.connect()
        head = b"GET /sse/u1 HTTP/1.1\r\nHost: t\r\n\r\n"
        for i in range(10):
            c.receive(head[i : i + 1])
            self.advance(1)
        self.assertFalse(c.closing)  # 9.9 s
        self.advance(0.2)
        self.assertIsNotNone(c.lost)
        self.assertEqual(self.s.hub.stream_count, 0)

    def test_stuck_client_aborted(self) -> None:
        """A connection whose close cannot complete (a client that reads nothing) is aborted 10 s later."""
        c = self.s.connect()
        c.sock.error = errno.EWOULDBLOCK
        c.receive(b"GET /sse/u1 HTTP/1.1\r\nHost: t\r\n\r\n")  # the head of the stream is stuck
        self.s.hub.close_all()  # its response is done: the clock starts again
        self.advance(10.1)
        self.assertTrue(c.transport.disconnecting)
        self.assertFalse(c.transport._aborting)
        self.advance(10.1)
        self.assertTrue(c.transport._aborting)
        self.s.reactor.advance(0)
        self.assertFalse(c.transport.connected)

    def test_open_stream_never_timed_out(self) -> None:
        """Once a stream's head is complete, its connection stays open however long."""
        c = self.s.connect()
        self.advance(5)
        c.receive(b"GET /sse/u1 HTTP/1.1\r\nHost: t\r\n\r\n")
        self.advance(120)
        self.assertFalse(c.closing)
        self.assertEqual(self.s.hub.stream_count, 1)
        self.assertEqual(self.s.reactor.getDelayedCalls(), [])  # no timer left for it

    def test_keep_alive_clock_starts_after_the_response(self) -> None:
        """After an answer the next head must come within 10 s of that answer."""
        c = self.s.connect()
        self.advance(8)
        c.receive(post(b"id=notify_u1&data=1"))
        self.assertIn(b"200 OK", c.text())
        self.advance(9)
        c.receive(post(b"id=notify_u1&data=2"))
        self.assertEqual(c.text().count(b"200 OK"), 2)
        self.advance(9.9)
        self.assertFalse(c.closing)
        self.advance(0.2)
        self.assertIsNotNone(c.lost)

    def test_pipelined_head_stops_the_clock(self) -> None:
        """A stream head that came with the answer before it is not timed out."""
        c = self.s.connect()
        c.receive(post(b"id=notify_u1&data=1") + b"GET /sse/u1 HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertEqual(self.s.hub.stream_count, 1)
        self.advance(30)
        self.assertFalse(c.closing)

    def test_stream_end_starts_the_clock(self) -> None:
        """A stream the server ends (drain) leaves a keep-alive connection that must send its next head in time."""
        c = self.s.connect()
        c.receive(b"GET /sse/u1 HTTP/1.1\r\nHost: t\r\n\r\n")
        self.advance(30)
        self.s.hub.close_all()
        self.advance(9.9)
        self.assertFalse(c.closing)
        self.advance(0.2)
        self.assertIsNotNone(c.lost)

    def test_closed_connection_forgotten(self) -> None:
        """A connection that closes on its own leaves no timer behind."""
        c = self.s.connect()
        c.close()
        self.advance(10.1)
        self.assertEqual(self.s.logged("no complete request head"), [])
        self.assertEqual(self.s.reactor.getDelayedCalls(), [])


class HeadTimeoutStockTests(HeadTimeoutTests):
    fast = False


# --- limits.bodyTimeout ----------------------------------------------------------------------


class BodyTimeoutTests(BothChannels, SynchronousTestCase):
    """A request gets limits.bodyTimeout seconds, from the end of its head, for its body."""

    def setUp(self) -> None:
        self.s = self.server(header_timeout=10, body_timeout=30)

    def advance(self, seconds: float, trickle: Any = None) -> None:
        """Let C{seconds} pass in tenths; C{trickle}: a connection that sends a byte each second."""
        for i in range(round(seconds * 10)):
            self.s.reactor.advance(0.1)
            if trickle is not None and i % 10 == 9:
                trickle.receive(b"x")
            for conn in self.s.conns:
                conn.pump()

    def test_trickled_body_answered_408(self) -> None:
        """A body sent a byte a second gets 408 JSON 30 s after its head, logged and counted."""
        c = self.s.connect()
        c.receive(
            b"POST /webNotification HTTP/1.1\r\nHost: t\r\n"
            + FORM
            + b"Content-Length: 1000\r\n\r\nid=notify_u1&data="
        )
        self.advance(29.9, trickle=c)
        self.assertEqual(c.text(), b"")
        self.assertFalse(c.closing)
        self.advance(0.2)
        status, headers, body = split_response(c.text())
        self.assertEqual(status, b"HTTP/1.1 408 Request Timeout")
        self.assertEqual(headers[b"content-type"], b"application/json; charset=utf-8")
        self.assertEqual(headers[b"connection"], b"close")
        self.assertEqual(
            json.loads(body),
            {"error": "request body not complete within limits.bodyTimeout (30 s)"},
        )
        self.assertTrue(c.half_closed)  # plain TCP: the close lingers, as after a 413
        self.assertEqual(self.s.stats.rejected, {408: 1})
        [event] = self.s.logged("refused a request")
        self.assertEqual((event["peer"], event["code"]), ("127.0.0.1", 408))
        self.assertIn("limits.bodyTimeout", event["reason"])
        c.receive(b"x" * 900)  # the rest, late: dropped
        self.advance(10.1)
        self.assertFalse(c.transport.connected)  # the lingering close ends on the head clock
        self.assertEqual(c.text().count(b"HTTP/1.1"), 1)
        self.assertEqual(self.s.stats.published, 0)

    def test_chunked_body_answered_408(self) -> None:
        """A chunked body that never ends gets the 408 as well."""
        c = self.s.connect()
        c.receive(chunked_head())
        for _ in range(30):
            c.receive(chunk(b"x"))
            self.advance(1)
        self.advance(0.2)
        self.assertIn(b"HTTP/1.1 408 Request Timeout", c.text())
        self.assertEqual(self.s.stats.rejected, {408: 1})

    def test_clock_starts_at_the_end_of_the_head(self) -> None:
        """A head that took 9 s leaves the body its whole 30 s; one sent in time is published."""
        c = self.s.connect()
        head = post(b"id=notify_u1&data=1").partition(b"\r\n\r\n")[0] + b"\r\n\r\n"
        for i in range(0, len(head), len(head) // 9 + 1):
            c.receive(head[i : i + len(head) // 9 + 1])
            self.advance(1)
        self.advance(28.9)
        c.receive(b"id=notify_u1&data=1")
        self.assertIn(b"HTTP/1.1 200 OK", c.text())
        self.advance(30)
        self.assertEqual(self.s.stats.rejected, {})
        self.assertEqual(self.s.stats.published, 1)

    def test_body_with_its_head_leaves_no_clock(self) -> None:
        """A publish whose body came with its head is never timed: only the keep-alive head clock runs."""
        c = self.s.connect()
        c.receive(post(b"id=notify_u1&data=1"))
        self.assertIn(b"HTTP/1.1 200 OK", c.text())
        self.advance(9.9)
        self.assertFalse(c.closing)
        self.advance(25)
        self.assertEqual(self.s.logged("refused a request"), [])
        self.assertEqual(len(self.s.logged("no complete request head")), 1)
        self.assertEqual(self.s.reactor.getDelayedCalls(), [])

    def test_client_that_leaves_is_forgotten(self) -> None:
        """A client that closes in the middle of its body leaves no clock and gets no 408."""
        c = self.s.connect()
        c.receive(chunked_head() + chunk(b"id=notify_u1"))
        c.close()
        self.advance(30.1)
        self.assertEqual(self.s.logged("refused a request"), [])
        self.assertEqual(self.s.stats.rejected, {})
        self.assertEqual(self.s.reactor.getDelayedCalls(), [])

    def test_other_connections_unaffected(self) -> None:
        """While a body trickles, a stream receives and other publishes go through."""
        sse = self.s.connect()
        sse.receive(b"GET /sse/u1 HTTP/1.1\r\nHost: t\r\n\r\n")
        slow = self.s.connect()
        slow.receive(chunked_head())
        self.advance(15)
        fast = self.s.connect()
        fast.receive(post(b"id=notify_u1&data=7"))
        self.assertIn(b'"delivered": 1', fast.text())
        self.advance(15.1)
        self.assertIn(b" 408 ", slow.text())
        self.assertFalse(sse.closing)
        events = parse_frames(dechunk(split_response(sse.text())[2]))
        self.assertEqual(events[-1]["data"], "7")


class BodyTimeoutStockTests(BodyTimeoutTests):
    fast = False


class HTTP2BodyTimeoutTests(SynchronousTestCase):
    """Over HTTP/2 a body too slow gets its 408 on the stream, which is then reset."""

    def test_answer_then_reset(self) -> None:
        """The stream's 408: headers, the JSON body, then RST_STREAM; only that stream."""
        from notificator.connections import Connections

        clock = Clock()
        calls: list[tuple[str, Any]] = []

        class Stream:
            transport = None  # as twisted.web's H2Stream

            def getPeer(self) -> Any:
                return StringTransport().getPeer()

            def getHost(self) -> Any:
                return StringTransport().getHost()

            def writeHeaders(self, *args: Any) -> None:
                calls.append(("headers", args))

            def write(self, data: bytes) -> None:
                calls.append(("data", data))

            def abortConnection(self) -> None:
                calls.append(("reset", None))

        conns = Connections(10, 30, 100, clock)
        bounds = limits.Limits(
            evolved(defaults().limits, {"body_timeout": 30}), clock, connections=conns
        )
        cls = limits.request_class(limits.Request, bounds)
        processed: list[bytes] = []

        class Processed(cls):  # type: ignore[valid-type, misc]
            def process(self) -> None:
                processed.append(self.content.read())

        slow = Processed(Stream(), queued=False)
        slow.gotLength(None)
        slow.parseCookies()
        slow.handleContentChunk(b"id=")
        done = Processed(Stream(), queued=False)
        done.gotLength(3)
        done.parseCookies()
        done.handleContentChunk(b"a=b")
        done.requestReceived(b"POST", b"/webNotification", b"HTTP/2")
        self.assertEqual(processed, [b"a=b"])
        clock.advance(29.9)
        self.assertEqual(calls, [])
        clock.advance(0.2)
        clock.advance(0)
        clock.advance(0)
        self.assertEqual([c[0] for c in calls], ["headers", "data", "reset"])
        self.assertEqual(calls[0][1][1:3], (b"408", b"Request Timeout"))
        self.assertEqual(
            json.loads(calls[1][1]),
            {"error": "request body not complete within limits.bodyTimeout (30 s)"},
        )
        self.assertEqual(clock.getDelayedCalls(), [])
        slow.requestReceived(b"POST", b"/webNotification", b"HTTP/2")  # too late: not processed
        self.assertEqual(processed, [b"a=b"])


# --- bodies in memory ------------------------------------------------------------------------


class BodyInMemoryTests(BothChannels, SynchronousTestCase):
    """Bodies up to limits.bodyBytes are read into memory: no temporary file, whatever their form."""

    def setUp(self) -> None:
        import tempfile

        def no_file(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("a temporary file was made for a request body")

        self.patch(tempfile, "TemporaryFile", no_file)
        self.s = self.server(body_bytes=1024 * 1024)

    def test_large_announced_body(self) -> None:
        """A 500 KB body with its length is read into memory and published."""
        c = self.s.connect()
        body = b"id=notify_u1&data=" + b"x" * 500_000
        c.receive(post(body)[:1000])
        c.receive(post(body)[1000:])
        self.assertIn(b"HTTP/1.1 200 OK", c.text())
        self.assertEqual(self.s.stats.published, 1)

    def test_chunked_body(self) -> None:
        """A chunked body is read into memory and published."""
        c = self.s.connect()
        c.receive(chunked_head() + chunk(b"id=notify_u1&data=") + chunk(b"y" * 200_000))
        c.receive(b"0\r\n\r\n")
        self.assertIn(b"HTTP/1.1 200 OK", c.text())
        self.assertEqual(self.s.stats.published, 1)


class BodyInMemoryStockTests(BodyInMemoryTests):
    fast = False


class HTTP2BodyInMemoryTests(SynchronousTestCase):
    """Over HTTP/2 (twisted.web's H2Stream) too, a body is read into memory."""

    def test_large_bodies(self) -> None:
        """A 200 KB body with a content-length, and one without, are published without a file."""
        import tempfile

        import h2.config
        import h2.connection
        import h2.events
        import twisted.internet

        def no_file(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("a temporary file was made for a request body")

        self.patch(tempfile, "TemporaryFile", no_file)
        s = InMemoryServer(self, True, body_bytes=1024 * 1024)
        # twisted.web's HTTP/2 channel takes the global reactor for its send loop.
        self.patch(twisted.internet, "reactor", s.reactor)
        conn = s.connect()
        conn.transport.negotiatedProtocol = b"h2"  # type: ignore[attr-defined]
        client = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        client.initiate_connection()
        conn.receive(client.data_to_send())
        read = 0
        events: list[Any] = []
        body = b"id=notify_u1&data=" + b"x" * 200_000
        for sid, length in ((1, [("content-length", str(len(body)))]), (3, [])):
            client.send_headers(
                sid,
                [
                    (":method", "POST"),
                    (":scheme", "https"),
                    (":authority", "t"),
                    (":path", "/webNotification"),
                    ("content-type", "application/x-www-form-urlencoded"),
                    *length,
                ],
            )
            sent = 0
            while sent < len(body):
                window = min(client.local_flow_control_window(sid), client.max_outbound_frame_size)
                if window:
                    piece = body[sent : sent + window]
                    sent += len(piece)
                    client.send_data(sid, piece, end_stream=sent == len(body))
                conn.receive(client.data_to_send())
                for _ in range(3):
                    s.reactor.advance(0)
                events += client.receive_data(conn.text()[read:])
                read = len(conn.text())
        statuses = [
            dict(e.headers)[":status"] for e in events if isinstance(e, h2.events.ResponseReceived)
        ]
        self.assertEqual(statuses, ["200", "200"])
        self.assertEqual(s.stats.published, 2)
