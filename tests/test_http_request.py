"""
Tests for L{notificator.http.request}: the request-body limit and the
request-head clock, each with the fast channel and with twisted.web's
stock one (C{server.fastChannel}), over real C{tcp.Server} transports
whose sockets are fakes (L{tests.support.InMemoryServer}), on a
L{MemoryReactorClock}; and the client behind untrusted proxies.  The
end-to-end tests are in L{tests.test_limits_e2e}; the stream's flow
control in L{tests.test_http_stream}.
"""

from __future__ import annotations

import errno
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from notificator import auth
from notificator.config import defaults
from notificator.http.request import LINGER_BODIES, Limits, Request
from notificator.http.site import Site
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
        c2.receive(b"x" * (LINGER_BODIES * 1000))
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

    def test_unlimited_site(self) -> None:
        """A site without limits (none configured) holds its requests to none; with them, to those."""
        clock = Clock()
        self.assertIsNone(_site(None).limits)
        bounded = _site(_limits(clock))
        self.assertEqual(bounded.limits.body_bytes, 1024 * 1024)
        self.assertIs(bounded.requestFactory, Request)


class BodyLimitStockTests(BodyLimitTests):
    fast = False


def _limits(clock: Any, **config: Any) -> Limits:
    return Limits(evolved(defaults().limits, config), clock)


def _site(limits: Limits | None) -> Site:
    """A site held to C{limits} (its requests read them from it)."""
    from twisted.web.static import Data

    return Site(Data(b"ok", "text/plain"), reactor=Clock(), limits=limits)


def _request(channel: Any, limits: Limits, factory: type[Request] = Request) -> Request:
    """A request on C{channel} (a stand-in for an H2Stream) of a site held to C{limits}."""
    channel.site = _site(limits)
    return factory(channel, queued=False)


class H2StreamDouble:
    """
    What a request sees of twisted.web's C{H2Stream}: its addresses, and
    what it is asked to write (C{calls}: the headers, the data, a reset).
    """

    transport = None  # as twisted.web's H2Stream

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def getPeer(self) -> Any:
        return StringTransport().getPeer()

    def getHost(self) -> Any:
        return StringTransport().getHost()

    def writeHeaders(self, *args: Any) -> None:
        self.calls.append(("headers", args))

    def write(self, data: bytes) -> None:
        self.calls.append(("data", data))

    def abortConnection(self) -> None:
        self.calls.append(("reset", None))


class HTTP2RefusalTests(SynchronousTestCase):
    """Over HTTP/2 a refused body gets its 413 on the stream, which is then reset."""

    def test_answer_then_reset(self) -> None:
        """After the stream's set-up: headers, the JSON body, then RST_STREAM; not before."""
        clock = Clock()
        stream = H2StreamDouble()
        calls = stream.calls

        request = _request(stream, _limits(clock, body_bytes=10))
        # As H2Stream's constructor: gotLength at content-length, parseCookies
        # once every header is in (notificator.http._twisted.RequestBase).
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

        stream = H2StreamDouble()
        request = _request(stream, _limits(clock, body_bytes=10))
        request.gotLength(None)
        request.parseCookies()
        request.handleContentChunk(b"x" * 11)
        request.connectionLost(Failure(ConnectionDone()))
        clock.advance(0)
        self.assertEqual(stream.calls, [])  # nothing is written
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
        self.assertEqual(s.stats.body_bytes, 10)  # counted in limits.bodyMemory too
        for _ in range(31):
            s.reactor.advance(1)
        c.send()
        self.assertEqual((c.status(slow), slow in c.reset), (408, True))
        ok = c.open("GET", "/health", [], end=True)
        self.assertEqual(c.status(ok), 200)
        self.assertEqual(s.stats.rejected, {413: 1, 408: 1})
        self.assertEqual(s.stats.body_bytes, 0)


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
        self.assertEqual(self.s.stats.dropped, {"headerTimeout": 1})

    def test_a_flood_of_silent_connections_is_not_a_flood_of_lines(self) -> None:
        """
        Each close is counted; the first ten of each 10 s have a line each,
        the rest one line at the end of those 10 s.  The next interval
        names its first ten again.
        """
        for _ in range(25):
            self.s.connect()
        self.advance(10.1)
        self.assertEqual(len(self.s.logged("no complete request head")), 10)
        self.assertEqual(self.s.logged("more connections"), [])
        self.assertEqual(self.s.stats.dropped, {"headerTimeout": 25})
        self.advance(10.1)
        [summary] = self.s.logged("more connections")
        self.assertEqual((summary["count"], summary["seconds"]), (15, 10))
        self.s.connect()
        self.advance(10.1)
        self.assertEqual(len(self.s.logged("no complete request head")), 11)
        self.assertEqual(len(self.s.logged("more connections")), 1)
        self.assertEqual(self.s.stats.dropped, {"headerTimeout": 26})

    def test_untold_closes_summed_up_at_stop(self) -> None:
        """Closes not yet summed up when the server stops are, then."""
        for _ in range(12):
            self.s.connect()
        self.advance(10.1)
        self.assertEqual(self.s.logged("more connections"), [])
        self.s.site.limits.connections.stopService()
        [summary] = self.s.logged("more connections")
        self.assertEqual(summary["count"], 2)

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
        from notificator.http.connections import Connections

        clock = Clock()
        stream = H2StreamDouble()
        calls = stream.calls

        conns = Connections(10, 30, 100, clock)
        bounds = Limits(evolved(defaults().limits, {"body_timeout": 30}), clock, connections=conns)
        processed: list[bytes] = []

        class Processed(Request):
            def process(self) -> None:
                processed.append(self.content.read())

        slow = _request(stream, bounds, Processed)
        slow.gotLength(None)
        slow.parseCookies()
        slow.handleContentChunk(b"id=")
        done = _request(stream, bounds, Processed)
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
        conn = s.connect(h2=True)
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


# --- limits.bodyMemory -----------------------------------------------------------------------


def form(size: int) -> bytes:
    """A form publish body to u1 of C{size} bytes (at least 18)."""
    return (b"id=notify_u1&data=" + b"x" * size)[:size]


def announced(size: int, path: bytes = b"/webNotification", method: bytes = b"POST") -> bytes:
    """A request head announcing a body of C{size} bytes."""
    return (
        method
        + b" "
        + path
        + b" HTTP/1.1\r\nHost: t\r\n"
        + FORM
        + b"Content-Length: %d\r\n\r\n" % size
    )


MEMORY_ERROR = {
    "error": "request bodies held in memory would pass limits.bodyMemory (3000 bytes); retry later"
}


class BodyMemoryTests(BothChannels, SynchronousTestCase):
    """
    limits.bodyMemory bounds the request bodies held at once, all
    connections together: bytes are counted as they come and given back
    when the request ends; a body that would pass the bound gets 503 JSON
    with Retry-After and its connection closed, counted and logged.
    """

    def setUp(self) -> None:
        self.s = self.server(body_bytes=1000, body_memory=3000, body_timeout=30)

    def held(self) -> int:
        return int(self.s.stats.body_bytes)

    def assertRefused(self, c: Any) -> None:
        status, headers, body = split_response(c.text())
        self.assertEqual(status, b"HTTP/1.1 503 Service Unavailable")
        self.assertEqual(headers[b"content-type"], b"application/json; charset=utf-8")
        self.assertEqual(headers[b"retry-after"], b"30")  # limits.bodyTimeout
        self.assertEqual(headers[b"connection"], b"close")
        self.assertEqual(json.loads(body), MEMORY_ERROR)
        self.assertTrue(c.half_closed)  # plain TCP: the close lingers, as after a 413

    def test_the_body_that_would_pass_is_refused(self) -> None:
        """
        Three bodies of 900 bytes in flight hold 2700: a fourth body's 400
        bytes would pass 3000 and are refused; one announced at 400 is
        refused at its head; one of 300 still fits.  The refused held
        nothing.
        """
        slow = [self.s.connect() for _ in range(3)]
        for c in slow:
            c.receive(chunked_head() + chunk(form(900)))
        self.assertEqual(self.held(), 2700)
        late = self.s.connect()
        late.receive(chunked_head() + chunk(b"x" * 400))
        self.assertRefused(late)
        at_head = self.s.connect()
        at_head.receive(announced(400))  # no byte of body sent
        self.assertRefused(at_head)
        self.assertEqual(self.held(), 2700)
        fits = self.s.connect()
        fits.receive(announced(300) + form(300))
        self.assertIn(b"HTTP/1.1 200 OK", fits.text())
        self.assertEqual(self.held(), 2700)  # answered: given back
        self.assertEqual(self.s.stats.rejected, {503: 2})
        for c in slow:
            self.assertEqual(c.text(), b"")  # still being read
        # One ends, and the room is there again.
        slow[0].receive(b"0\r\n\r\n")
        self.assertIn(b"HTTP/1.1 200 OK", slow[0].text())
        self.assertEqual(self.held(), 1800)
        again = self.s.connect()
        again.receive(chunked_head() + chunk(form(400)) + b"0\r\n\r\n")
        self.assertIn(b"HTTP/1.1 200 OK", again.text())
        self.assertEqual(self.s.stats.published, 3)

    def test_only_bytes_that_came_count(self) -> None:
        """An announced length reserves nothing: three heads of 1000 and no body hold nothing; their bytes do."""
        heads = [self.s.connect() for _ in range(4)]
        for c in heads:
            c.receive(announced(1000))
        self.assertEqual(self.held(), 0)
        self.assertEqual([c.text() for c in heads], [b""] * 4)
        heads[0].receive(form(1000))
        heads[1].receive(b"x" * 1000)
        heads[2].receive(b"x" * 999)
        self.assertEqual(self.held(), 999)  # two answered, one in flight
        heads[3].receive(b"x" * 1000)
        self.assertEqual(self.held(), 999)
        self.assertEqual((self.s.stats.published, self.s.stats.rejected), (1, {400: 2}))

    def test_every_end_gives_back(self) -> None:
        """Answered, refused (413, 408, 503), lost: each body's bytes go back; the total ends at 0."""
        answered, too_large, lost, slow = (self.s.connect() for _ in range(4))
        lost.receive(chunked_head() + chunk(b"x" * 500))
        slow.receive(announced(1000) + b"x" * 900)
        too_large.receive(chunked_head() + chunk(b"x" * 800))
        self.assertEqual(self.held(), 2200)
        too_large.receive(chunk(b"x" * 300))  # 1100 > limits.bodyBytes
        self.assertIn(b" 413 ", too_large.text())
        self.assertEqual(self.held(), 1400)
        lost.close()
        self.assertEqual(self.held(), 900)
        answered.receive(announced(900) + form(900))
        self.assertIn(b" 200 ", answered.text())
        self.assertEqual(self.held(), 900)
        for _ in range(31):
            self.s.reactor.advance(1)
            self.s.pump()
        self.assertIn(b" 408 ", slow.text())
        self.assertEqual(self.held(), 0)

    def test_a_stream_gives_its_body_back(self) -> None:
        """A GET that came with a body opens its stream, and its body's bytes go back then."""
        c = self.s.connect()
        c.receive(announced(800, b"/sse/u1", b"GET") + b"x" * 800)
        self.assertEqual(self.s.hub.stream_count, 1)
        self.assertEqual(self.held(), 0)

    def test_one_line_per_interval(self) -> None:
        """A flood of refusals is one warn line every 10 s, with how many there were."""
        first = self.s.connect()
        first.receive(chunked_head() + chunk(b"x" * 1000))
        second = self.s.connect()
        second.receive(chunked_head() + chunk(b"x" * 1000))
        third = self.s.connect()
        third.receive(chunked_head() + chunk(b"x" * 1000))
        for _ in range(5):
            self.s.connect().receive(announced(10))
            self.s.reactor.advance(1)
        lines = self.s.logged("503")
        self.assertEqual(len(lines), 1)
        self.assertEqual(
            (lines[0]["peer"], lines[0]["refused"], lines[0]["held"]), ("127.0.0.1", 1, 3000)
        )
        self.assertIn("limits.bodyMemory (3000 bytes)", lines[0]["reason"])
        self.s.reactor.advance(5)
        self.s.connect().receive(announced(10))
        lines = self.s.logged("503")
        self.assertEqual([line["refused"] for line in lines], [1, 5])
        self.assertEqual(self.s.stats.rejected, {503: 6})

    def test_no_continue_before_the_refusal(self) -> None:
        """A client waiting for 100 Continue gets the 503 instead."""
        c = self.s.connect()
        c.receive(chunked_head() + chunk(b"x" * 1000))
        d = self.s.connect()
        d.receive(chunked_head() + chunk(b"x" * 1000))
        e = self.s.connect()
        e.receive(chunked_head() + chunk(b"x" * 1000))
        f = self.s.connect()
        f.receive(announced(10).replace(b"Host: t\r\n", b"Host: t\r\nExpect: 100-continue\r\n"))
        self.assertTrue(f.text().startswith(b"HTTP/1.1 503 "))
        self.assertNotIn(b"100 Continue", f.text())


class BodyMemoryStockTests(BodyMemoryTests):
    fast = False


class HTTP2BodyMemoryTests(SynchronousTestCase):
    """limits.bodyMemory over HTTP/2 (twisted.web's real H2Connection, in memory)."""

    def setUp(self) -> None:
        self.s = InMemoryServer(self, True, body_bytes=1000, body_memory=3000, body_timeout=30)

    def stream(
        self,
        c: Any,
        data: bytes,
        length: int | None = None,
        path: str = "/webNotification",
        method: str = "POST",
    ) -> int:
        headers = [("content-type", "application/x-www-form-urlencoded")]
        if length is not None:
            headers.append(("content-length", str(length)))
        sid = c.open(method, path, headers)
        if data:
            c.body(sid, data)
        return sid

    def test_refused_stream_answered_and_reset(self) -> None:
        """
        On one connection, three bodies of 900 in flight: a fourth stream's
        400 bytes get 503 JSON with Retry-After and a reset; the connection
        goes on, and streams that end give their bytes back.
        """
        from tests.support import MemoryH2

        c = MemoryH2(self, self.s)
        slow = [self.stream(c, form(900)) for _ in range(3)]
        self.assertEqual(self.s.stats.body_bytes, 2700)
        late = self.stream(c, b"x" * 400)
        self.assertEqual(c.status(late), 503)
        self.assertIn(late, c.reset)
        self.assertEqual(c.headers[late]["retry-after"], "30")
        self.assertEqual(json.loads(c.data[late]), MEMORY_ERROR)
        at_head = self.stream(c, b"", length=400)
        self.assertEqual((c.status(at_head), at_head in c.reset), (503, True))
        c.body(slow[0], b"", end=True)
        self.assertEqual(c.status(slow[0]), 200)
        c.cancel(slow[1])
        self.assertEqual(self.s.stats.body_bytes, 900)
        ok = self.stream(c, b"", length=300)
        c.body(ok, form(300), end=True)
        self.assertEqual(c.status(ok), 200)
        self.assertEqual(self.s.stats.rejected, {503: 2})
        c.conn.close()
        self.assertEqual(self.s.stats.body_bytes, 0)


# --- limits.bodyMemory, fuzzed ---------------------------------------------------------------

#: Examples per fuzz test: a second or two each.
FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: What a connection (HTTP/1.1) or a stream (HTTP/2) can do: open a
#: request (a body with a length, or chunked / without one; to the publish
#: path, a path that takes no body, or a GET that opens a stream), send
#: some of its body or the rest of it, close (HTTP/2: reset the stream, or
#: close the connection); or time passes (the body clock answers 408).
#: Each sequence opens a few requests first, so that bodies overlap; sends
#: are the most frequent event after that.
_OPEN = st.tuples(
    st.just("open"),
    st.sampled_from(["length", "chunked"]),
    st.sampled_from([b"POST /webNotification", b"POST /health", b"GET /sse/u1"]),
    st.sampled_from([20, 300, 600, 900, 1000, 1100]),
)
_LATER = st.tuples(
    st.sampled_from(["send"] * 6 + ["end", "close", "time", "open"]),
    st.integers(0, 7),
    st.sampled_from([1, 100, 300, 500]),
)
EVENTS = st.builds(
    lambda first, then: first + then,
    st.lists(_OPEN, min_size=2, max_size=4),
    st.lists(
        _LATER.flatmap(lambda e: _OPEN if e[0] == "open" else st.just(_later(e))),
        max_size=25,
    ),
)


def _later(event: tuple[str, int, int]) -> tuple[Any, ...]:
    kind, i, n = event
    if kind == "time":
        return ("time", {1: 1, 100: 10}.get(n, 31), 0)  # seconds
    return (kind, i, n)


def _in_memory(request: Any) -> int:
    """The bytes of body C{request} keeps (its C{content})."""
    content = request.content
    if content is None or content.closed:
        return 0
    return len(content.getvalue())


def _check_held(testcase: SynchronousTestCase, s: InMemoryServer, requests: list[Any]) -> None:
    """The total counted is what the open requests keep, and within the bound."""
    testcase.assertEqual(s.stats.body_bytes, sum(map(_in_memory, requests)))
    testcase.assertLessEqual(s.stats.body_bytes, 1200)


def _requests(protocol: Any) -> list[Any]:
    """The requests a connection's channel holds (twisted.web's HTTPChannel or H2Connection)."""
    channel = protocol.wrappedProtocol
    # twisted.web's HTTP/2 switch, when the connection is not plain TCP.
    channel = getattr(channel, "_channel", channel)
    streams = getattr(channel, "streams", None)
    if streams is not None:
        return [stream._request for stream in streams.values()]
    return list(channel.requests)


def follow_bodies(testcase: SynchronousTestCase, fast: bool, events: list[tuple[Any, ...]]) -> None:
    """
    Play C{events} (L{EVENTS}) over HTTP/1.1 connections to a new server
    (C{server.fastChannel} C{fast}): after each, the total held is the sum
    of what the open requests hold, and within limits.bodyMemory; once
    every connection is closed, it is 0.
    """
    s = InMemoryServer(testcase, fast, body_bytes=1000, body_memory=1200, body_timeout=30)
    conns: list[Any] = []
    state: list[dict[str, Any]] = []
    for event in events:
        kind = event[0]
        if kind == "open":
            _, how, line, size = event
            c = s.connect()
            head = line + b" HTTP/1.1\r\nHost: t\r\n" + FORM
            if how == "length":
                head += b"Content-Length: %d\r\n\r\n" % size
            else:
                head += b"Transfer-Encoding: chunked\r\n\r\n"
            c.receive(head)
            conns.append(c)
            state.append({"how": how, "size": size, "sent": 0})
        elif kind in ("send", "end", "close") and conns:
            i = event[1] % len(conns)
            c, sent = conns[i], state[i]
            if kind == "close":
                c.close()
            elif sent["how"] == "length":
                left = sent["size"] - sent["sent"]
                n = left if kind == "end" else min(event[2], left)
                c.receive(form(sent["size"])[sent["sent"] : sent["sent"] + n])
                sent["sent"] += n
            elif kind == "end":
                c.receive(b"0\r\n\r\n")
            else:
                c.receive(chunk(b"x" * event[2]))
        elif kind == "time":
            for _ in range(event[1]):
                s.reactor.advance(1)
                s.pump()
        _check_held(
            testcase, s, [r for c in conns if c.transport.connected for r in _requests(c.protocol)]
        )
    s.close_all()
    testcase.assertEqual(s.stats.body_bytes, 0)


class BodyMemoryFuzzTests(SynchronousTestCase):
    """
    Random sequences of requests with bodies, bytes, ends, closes and time
    over HTTP/1.1 (L{follow_bodies}), with the fast channel and with
    twisted.web's stock one.
    """

    @FUZZ
    @given(EVENTS)
    def test_the_count_follows_the_bodies(self, events: list[tuple[Any, ...]]) -> None:
        """The fast channel: the total follows the bodies, and ends at 0."""
        follow_bodies(self, True, events)

    @FUZZ
    @given(EVENTS)
    def test_the_count_follows_the_bodies_stock(self, events: list[tuple[Any, ...]]) -> None:
        """twisted.web's stock channel: the same."""
        follow_bodies(self, False, events)


class HTTP2BodyMemoryFuzzTests(SynchronousTestCase):
    """
    The same over HTTP/2: streams of up to two connections open, send, end,
    are reset by the client, and connections close; the total follows.
    """

    @FUZZ
    @given(EVENTS)
    def test_the_count_follows_the_bodies(self, events: list[tuple[Any, ...]]) -> None:
        """After each event the total held is what the open streams hold; at the end 0."""
        import h2.exceptions

        from tests.support import MemoryH2

        s = InMemoryServer(self, True, body_bytes=1000, body_memory=1200, body_timeout=30)
        clients = [MemoryH2(self, s), MemoryH2(self, s)]
        streams: list[tuple[Any, int, dict[str, Any]]] = []
        for n, event in enumerate(events):
            kind = event[0]
            try:
                if kind == "open":
                    _, how, line, size = event
                    c = clients[n % 2]
                    method, path = line.decode().split(" ")
                    headers = [("content-type", "application/x-www-form-urlencoded")]
                    if how == "length":
                        headers.append(("content-length", str(size)))
                    sid = c.open(method, path, headers)
                    streams.append((c, sid, {"how": how, "size": size, "sent": 0}))
                elif kind in ("send", "end", "close") and streams:
                    c, sid, st_ = streams[event[1] % len(streams)]
                    if kind == "close":
                        if event[2] == 0 and event[1] % 3 == 0:
                            c.conn.close()  # the whole connection
                        else:
                            c.cancel(sid)
                    elif st_["how"] == "length":
                        left = st_["size"] - st_["sent"]
                        n_ = left if kind == "end" else min(event[2], left)
                        c.body(
                            sid,
                            form(st_["size"])[st_["sent"] : st_["sent"] + n_],
                            end=kind == "end",
                        )
                        st_["sent"] += n_
                    else:
                        c.body(sid, b"" if kind == "end" else b"x" * event[2], end=kind == "end")
                elif kind == "time":
                    for _ in range(event[1]):
                        s.reactor.advance(1)
                        for c in clients:
                            c.send()
            except (h2.exceptions.ProtocolError, KeyError):
                # A stream (or connection) the server already ended (the h2
                # client raises KeyError for a stream it has forgotten).
                pass
            _check_held(
                self,
                s,
                [
                    r
                    for c in clients
                    if c.conn.transport.connected
                    for r in _requests(c.conn.protocol)
                ],
            )
        s.close_all()
        self.assertEqual(s.stats.body_bytes, 0)


class UntrustedProxyTests(BothChannels, SynchronousTestCase):
    """
    A request that carries X-Forwarded-For or Forwarded from a peer that is
    not in server.trustedProxies (none, by default) has an unknown client:
    the loopback peer, in publish.allow and monitor.allow, cannot publish or
    look through such a proxy; streams still open, marked unknown.  Over the
    site as makeService wires it (its guard, the publish gate), on both
    channels.
    """

    SPOOFS = [
        b"X-Forwarded-For: 127.0.0.1\r\n",
        b"X-Forwarded-For: \r\n",
        b"X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 127.0.0.1\r\n",
        b"Forwarded: for=127.0.0.1\r\n",
        b'Forwarded: for="[::1]";proto=http\r\n',
    ]

    def setUp(self) -> None:
        self.s = self.server()

    def exchange(self, raw: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
        c = self.s.connect()
        c.receive(raw)
        self.s.reactor.advance(0)
        c.pump()
        return split_response(c.text())

    def test_publish_refused_before_the_body(self) -> None:
        """403 JSON naming server.trustedProxies, before the body is read; a log line with the peer."""
        for spoof in self.SPOOFS:
            status, _, body = self.exchange(
                b"POST /webNotification HTTP/1.1\r\nHost: t\r\n" + spoof + b"Content-Type:"
                b" application/x-www-form-urlencoded\r\nContent-Length: 67108864\r\n\r\n"
            )
            self.assertEqual(status, b"HTTP/1.1 403 Forbidden", spoof)
            self.assertEqual(json.loads(body), {"error": auth.UNTRUSTED_PROXY})
        refused = self.s.logged("refused publish from")
        self.assertEqual(len(refused), len(self.SPOOFS))
        for event in refused:
            self.assertEqual(event["peer"], "unknown via 127.0.0.1")
            self.assertEqual(event["reason"], auth.UNTRUSTED_PROXY)
            self.assertIn("server.trustedProxies", formatEvent(event))
        self.assertEqual((self.s.stats.published, self.s.stats.rejected), (0, {403: 5}))
        # Without the headers, the same peer publishes.
        body = b"id=notify_u1&data=1"
        status, _, _ = self.exchange(
            b"POST /webNotification HTTP/1.1\r\nHost: t\r\nContent-Type:"
            b" application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        self.assertEqual(status, b"HTTP/1.1 200 OK")

    def test_monitor_refused_health_open(self) -> None:
        """/, /users and /metrics: 403; /health and the scripts: 200."""
        for spoof in self.SPOOFS:
            for path in (b"/users", b"/metrics", b"/"):
                status, _, body = self.exchange(
                    b"GET " + path + b" HTTP/1.1\r\nHost: t\r\n" + spoof + b"\r\n"
                )
                self.assertEqual(status, b"HTTP/1.1 403 Forbidden", (path, spoof))
                self.assertIn(auth.UNTRUSTED_PROXY.encode(), body)
            for path in (
                b"/health",
                b"/javascripts/eventSourceClient.js",
                b"/static/monitor.js",
            ):
                status, _, _ = self.exchange(
                    b"GET " + path + b" HTTP/1.1\r\nHost: t\r\n" + spoof + b"\r\n"
                )
                self.assertEqual(status, b"HTTP/1.1 200 OK", (path, spoof))
        refused = [
            e for e in self.s.events if e.get("log_format", "").startswith("refused {method}")
        ]
        self.assertEqual(len(refused), 3 * len(self.SPOOFS))
        self.assertEqual({e["peer"] for e in refused}, {"unknown via 127.0.0.1"})
        self.assertIn("server.trustedProxies", formatEvent(refused[0]))
        status, _, _ = self.exchange(b"GET /users HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertEqual(status, b"HTTP/1.1 200 OK")

    def test_stream_opens_marked_unknown(self) -> None:
        """A stream through an untrusted proxy opens; the log and the monitor show its client unknown, with the peer."""
        c = self.s.connect()
        c.receive(b"GET /sse/u1 HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 10.1.2.3\r\n\r\n")
        self.s.reactor.advance(0)
        c.pump()
        status, _, body = split_response(c.text())
        self.assertEqual(status, b"HTTP/1.1 200 OK")
        self.assertEqual(parse_frames(dechunk(body))[1]["event"], "connect")
        [opened] = [e for e in self.s.events if "opened for" in e.get("log_format", "")]
        self.assertEqual(opened["peer"], "unknown via 127.0.0.1")
        status, _, body = self.exchange(b"GET /users HTTP/1.1\r\nHost: t\r\n\r\n")
        [user] = json.loads(body)["users"]
        self.assertEqual(user["remoteAddresses"], ["unknown via 127.0.0.1"])

    def test_no_header_work_without_headers(self) -> None:
        """A request with neither header has the peer as its client, and no guard is asked."""
        asked: list[object] = []

        class Spy(auth.Guard):
            def client_address(self, *args: Any) -> str:
                asked.append(args)
                return auth.Guard.client_address(self, *args)

        spy = Spy((), (), stream_cookie="a")
        self.s.site.guard = spy
        self.assertEqual(self.exchange(b"GET /users HTTP/1.1\r\nHost: t\r\n\r\n")[0][9:12], b"200")
        self.assertEqual(asked, [])
        status = self.exchange(b"GET /users HTTP/1.1\r\nHost: t\r\nForwarded: for=x\r\n\r\n")[0]
        self.assertEqual(status[9:12], b"403")
        self.assertEqual(asked, [("127.0.0.1", None, [b"for=x"])])


class UntrustedProxyStockTests(UntrustedProxyTests):
    fast = False
