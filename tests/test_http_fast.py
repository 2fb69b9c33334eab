"""
Tests for L{notificator.http.fast} and the write path of
L{notificator.http.request.Request} that goes through it
(C{server.fastChannel}): a frame sent straight to the socket is the same
chunk C{Request.write} would have queued, in the same order; a response's
head and body leave in one send at the end of the reactor pass
(L{notificator.http.fast.WriteBatch}), in order, with nothing left for the
reactor.  The Twisted internals the channel relies on are checked here
against the real classes.

These run a real twisted.web L{Site} and L{HTTPChannel} over a real
C{tcp.Server} transport whose socket is a fake that records what is sent
(no network; L{tests.support.FastChannelSite}).
"""

from __future__ import annotations

import errno
import random
import re
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import http
from twisted.web.http import combinedLogFormatter
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Site

from notificator import services, tap
from notificator.config import defaults
from notificator.http import fast
from notificator.http._twisted import GenericHTTPChannelProtocol
from notificator.http.request import Request
from tests.support import FastChannelSite, InMemoryServer, config_with, dechunk, parse_frames


class DirectWriteTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = FastChannelSite()
        self.h.request(b"GET /sse/u1 HTTP/1.1\r\nHost: t\r\n\r\n")
        self.h.flush()
        self.assertEqual(self.h.hub.stream_count, 1)
        self.addCleanup(self.h.lose)

    def events(self) -> list[dict[str, object]]:
        return [e for e in parse_frames(dechunk(self.h.body())) if "event" in e]

    def test_frame_is_sent_at_once(self) -> None:
        """With an empty send buffer a frame leaves in the publish call, not in a later write pass."""
        sends = self.h.sock.sends
        self.assertEqual(self.h.publish("u1", '{"a":1}'), 1)
        self.assertEqual(self.h.sock.sends, sends + 1)
        self.assertFalse(self.h.conn.dataBuffer or self.h.conn._tempDataLen)
        self.assertEqual([e["event"] for e in self.events()], ["connect", "notify"])
        self.assertEqual(self.events()[-1]["data"], '{"a":1}')

    def test_bytes_match_request_write(self) -> None:
        """A stream's chunk is byte for byte what twisted.web's Request.write sends, and sentLength counts it."""
        stream = next(iter(self.h.hub.streams_of("u1")))
        request = stream.request
        before = request.sentLength
        start = len(self.h.sock.sent)
        frame = b"event: notify\ndata: x\n\n"
        stream.send(frame)
        direct = bytes(self.h.sock.sent[start:])
        http.Request.write(request, frame)
        self.h.flush()
        queued = bytes(self.h.sock.sent[start + len(direct) :])
        self.assertEqual(direct, queued)
        self.assertEqual(request.sentLength, before + 2 * len(frame))

    def test_partial_send_keeps_the_rest_in_order(self) -> None:
        """When the socket takes only part of a frame, the rest is queued ahead of later frames."""
        self.h.sock.limit = 5
        self.h.publish("u1", '{"n":1}')
        self.assertTrue(self.h.conn._tempDataLen)
        self.h.publish("u1", '{"n":2}')  # buffer not empty: through Request.write
        self.h.sock.limit = None
        self.h.flush()
        self.assertEqual([e["data"] for e in self.events()[1:]], ['{"n":1}', '{"n":2}'])

    def test_would_block_queues_the_frame(self) -> None:
        """EWOULDBLOCK leaves the whole frame to the reactor's write pass."""
        self.h.sock.error = errno.EWOULDBLOCK
        self.assertEqual(self.h.publish("u1", '{"n":1}'), 1)
        self.h.sock.error = None
        self.h.flush()
        self.assertEqual([e["data"] for e in self.events()[1:]], ['{"n":1}'])

    def test_lost_connection_is_reported_by_twisted(self) -> None:
        """A send error queues the frame; the write pass then loses the connection and the hub detaches the stream."""
        self.h.sock.error = errno.EPIPE
        self.assertEqual(self.h.publish("u1", "1"), 1)
        self.assertEqual(self.h.hub.stream_count, 1)
        result = self.h.conn.doWrite()
        self.assertIsNotNone(result)
        self.h.lose(result)
        self.assertEqual(self.h.hub.stream_count, 0)
        self.assertEqual(self.h.publish("u1", "2"), 0)

    def test_heartbeat_uses_the_same_path(self) -> None:
        """A heartbeat broadcast goes out directly too."""
        sends = self.h.sock.sends
        self.assertEqual(self.h.hub.heartbeat(), 1)
        self.assertEqual(self.h.sock.sends, sends + 1)
        self.assertEqual(self.events()[-1]["event"], "heartbeat")

    def test_open_stream_drops_its_head_state(self) -> None:
        """An open stream keeps no response headers or body buffer, and still finishes and logs cleanly."""
        stream = next(iter(self.h.hub.streams_of("u1")))
        request = stream.request
        self.assertEqual(list(request.responseHeaders.getAllRawHeaders()), [])
        self.assertIsNone(request.content)
        logged = []
        self.h.site.log = logged.append  # type: ignore[method-assign]
        self.h.hub.close_all()
        self.h.flush()
        self.assertTrue(bytes(self.h.sock.sent).endswith(b"\r\n0\r\n\r\n"))
        self.assertEqual(logged, [request])
        self.assertEqual(self.h.hub.stream_count, 0)

    def test_open_stream_keeps_only_logged_headers(self) -> None:
        """An open stream keeps the Referer and User-Agent its access-log line shows, and no other request header."""
        h = FastChannelSite()
        self.addCleanup(h.lose)
        h.request(
            b"GET /sse HTTP/1.1\r\nHost: t\r\nCookie: userID=u3; JSESSIONID=abc\r\n"
            b"Referer: http://gw/main\r\nUser-Agent: Mozilla/5.0 test\r\n"
            b"Accept-Language: ko-KR\r\nAccept: text/event-stream\r\n\r\n"
        )
        stream = next(iter(h.hub.streams_of("u3")))
        request = stream.request
        self.assertEqual(
            sorted(name for name, _ in request.requestHeaders.getAllRawHeaders()),
            [b"Referer", b"User-Agent"],
        )
        self.assertEqual(request.received_cookies, {})
        logged: list[object] = []
        h.site.log = logged.append  # type: ignore[method-assign]
        h.hub.close_all()
        self.assertEqual(logged, [request])
        line = combinedLogFormatter("[24/Nov/2026:01:00:00 +0000]", request)
        self.assertTrue(line.endswith('"http://gw/main" "Mozilla/5.0 test"'), line)

    def test_http10_frame_is_unframed(self) -> None:
        """An HTTP/1.0 stream (not chunked) gets the bare frame, sent at once too."""
        h = FastChannelSite()
        self.addCleanup(h.lose)
        h.request(b"GET /sse/u2 HTTP/1.0\r\nHost: t\r\n\r\n")
        h.flush()
        h.publish("u2", '{"b":2}')
        self.assertFalse(h.conn._tempDataLen)
        self.assertEqual(parse_frames(h.body())[-1]["data"], '{"b":2}')


class ChannelTests(SynchronousTestCase):
    """
    L{notificator.http.fast.Channel}: each response's head goes out with its
    body at the end of the reactor pass, straight to the socket, and nothing
    is left for the reactor.
    """

    def setUp(self) -> None:
        self.h = FastChannelSite()
        self.addCleanup(self.h.lose)

    def post(self, extra: bytes = b"") -> bytes:
        body = b"id=notify_u1&data=1"
        return (
            b"POST /webNotification HTTP/1.1\r\nHost: t\r\n"
            + extra
            + b"Content-Type: application/x-www-form-urlencoded\r\n"
            + b"Content-Length: %d\r\n\r\n" % len(body)
            + body
        )

    def assertNothingQueued(self) -> None:
        self.assertFalse(self.h.conn.dataBuffer or self.h.conn._tempDataLen)
        self.assertNotIn(self.h.conn, self.h.reactor.getWriters())

    def test_publish_answer_is_one_send(self) -> None:
        """A publish answer (head and body) is one send."""
        self.h.request(self.post())
        self.assertEqual(self.h.sock.sends, 1)
        self.assertNothingQueued()
        head, _, body = bytes(self.h.sock.sent).partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertIn(b"Content-Length: %d" % len(body), head)
        self.assertIn(b'"delivered": 0', body)

    def test_stream_start_is_one_send(self) -> None:
        """A stream's head, retry and connect event leave in one send."""
        self.h.request(b"GET /sse/u1 HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertEqual(self.h.sock.sends, 1)
        self.assertNothingQueued()
        self.assertEqual(
            [e.get("event") for e in parse_frames(dechunk(self.h.body()))], [None, "connect"]
        )

    def test_stream_socket_has_nodelay(self) -> None:
        """A stream's frames are not held by Nagle: TCP_NODELAY is set, once."""
        import socket

        self.h.request(b"GET /sse/u1 HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertEqual(
            [o for o in self.h.sock.options if o[:2] == (socket.IPPROTO_TCP, socket.TCP_NODELAY)],
            [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )

    def test_addresses_asked_once_per_connection(self) -> None:
        """Keep-alive requests reuse the connection's addresses."""
        self.h.request(self.post() + self.post() + self.post())
        self.assertEqual(self.h.sock.names, 1)
        self.assertEqual(self.h.parts.stats.published, 3)
        request = http.Request(self.h.protocol._channel)
        self.assertEqual((request.host.host, request.host.port), ("127.0.0.1", 3000))
        self.assertEqual((request.client.host, request.client.port), ("127.0.0.1", 40000))

    def test_pipelined_answers_in_order(self) -> None:
        """Two publishes in one read are answered in order."""
        self.h.request(self.post() + self.post())
        replies = bytes(self.h.sock.sent).count(b"HTTP/1.1 200 OK")
        self.assertEqual(replies, 2)
        self.assertEqual(self.h.parts.stats.published, 2)
        self.assertNothingQueued()

    def test_head_only_answer_is_sent(self) -> None:
        """A 204 preflight (a head and no body) is sent when the request is done."""
        self.h.request(b"OPTIONS /webNotification HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertTrue(bytes(self.h.sock.sent).startswith(b"HTTP/1.1 204 "))
        self.assertTrue(bytes(self.h.sock.sent).endswith(b"\r\n\r\n"))
        self.assertNothingQueued()

    def test_full_socket_queues_the_rest(self) -> None:
        """What the socket does not take is queued for the reactor, in order."""
        self.h.sock.limit = 10
        self.h.request(self.post())
        self.assertTrue(self.h.conn._tempDataLen)
        self.h.sock.limit = None
        self.h.flush()
        self.assertIn(b'"delivered": 0', self.h.body())

    def test_two_answers_in_one_pass_keep_their_order(self) -> None:
        """A head-only answer and a full one written in one pass go out in order, as one write."""
        writes: list[bytes] = []

        class Transport(StringTransport):
            def write(self, data: bytes) -> None:
                writes.append(data)

        ch = fast.Channel(self.h.writes)
        ch.makeConnection(Transport())
        self.h.writes.reading += 1  # as inside dataReceived
        ch.writeHeaders(b"HTTP/1.1", b"204", b"No Content", Headers())
        ch.writeHeaders(b"HTTP/1.1", b"200", b"OK", Headers({b"x": [b"1"]}))
        ch.write(b"body")
        self.h.writes.reading -= 1
        self.assertEqual(writes, [])
        self.h.reactor.advance(0)
        self.assertEqual(
            writes, [b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nX: 1\r\n\r\nbody"]
        )

    def test_tls_transport_gets_one_write(self) -> None:
        """Without a plain socket (TLS), the head and body are one transport write."""
        writes: list[bytes] = []
        ch = fast.Channel(self.h.writes)
        ch.site = self.h.site  # type: ignore[attr-defined]
        ch.requestFactory = Request

        class Transport(StringTransport):
            def write(self, data: bytes) -> None:
                writes.append(data)

        ch.makeConnection(Transport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000)))
        ch.dataReceived(self.post())
        self.h.reactor.advance(0)
        self.assertEqual(len(writes), 1)
        self.assertTrue(writes[0].startswith(b"HTTP/1.1 200 OK\r\n"))


class WriteBatchTests(SynchronousTestCase):
    """
    L{notificator.http.fast.WriteBatch}: what the channels are given during
    a reactor pass leaves at the end of the pass, one send per connection,
    in order.
    """

    def setUp(self) -> None:
        self.h = FastChannelSite()
        self.addCleanup(self.h.lose)

    post = ChannelTests.post

    def batchCalls(self) -> list[object]:
        """The batch's pending end-of-pass calls."""
        return [
            c
            for c in self.h.reactor.getDelayedCalls()
            if c.active() and c.func == self.h.writes.flush
        ]

    def test_pass_end_sends_frame_and_answer(self) -> None:
        """A publish's frame and its answer wait for the end of the pass, then one send each."""
        ssock, sproto, sconn = self.h.connect()
        sproto.dataReceived(b"GET /sse/u1 HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertEqual(ssock.sends, 0)
        self.h.reactor.advance(0)
        self.assertEqual(ssock.sends, 1)
        self.h.receive(self.post())
        self.assertEqual((ssock.sends, self.h.sock.sends), (1, 0))
        self.h.reactor.advance(0)
        self.assertEqual((ssock.sends, self.h.sock.sends), (2, 1))
        events = parse_frames(dechunk(bytes(ssock.sent).partition(b"\r\n\r\n")[2]))
        self.assertEqual([e.get("event") for e in events], [None, "connect", "notify"])
        self.assertIn(b'"delivered": 1', self.h.body())
        self.assertEqual(self.batchCalls(), [])
        sconn.connectionLost(Failure(ConnectionDone()))

    def test_timer_writes_go_at_once(self) -> None:
        """A heartbeat (a timer's call, not received data) is sent at once."""
        self.h.request(b"GET /sse/u1 HTTP/1.1\r\nHost: t\r\n\r\n")
        self.h.hub.heartbeat()
        self.assertEqual(self.h.sock.sends, 2)
        self.assertIn(b"event: heartbeat", bytes(self.h.sock.sent))
        self.assertEqual(self.batchCalls(), [])

    def test_one_send_per_connection_per_pass(self) -> None:
        """Two pipelined answers leave in one send, in order."""
        self.h.request(self.post() + self.post())
        self.assertEqual(self.h.sock.sends, 1)
        self.assertEqual(bytes(self.h.sock.sent).count(b"HTTP/1.1 200 OK"), 2)

    def test_a_full_batch_is_sent_at_once(self) -> None:
        """Once C{most} connections have bytes waiting, the next one sends them, each whole, without waiting for the pass."""
        self.h.writes.most = 4
        socks = []
        for i in range(5):
            sock, proto, conn = self.h.connect()
            self.addCleanup(conn.connectionLost, Failure(ConnectionDone()))
            socks.append(sock)
            proto.dataReceived(b"GET /sse/u%d HTTP/1.1\r\nHost: t\r\n\r\n" % i)
        self.assertEqual([s.sends for s in socks], [1, 1, 1, 1, 0])
        self.assertEqual(len(self.batchCalls()), 1)
        self.h.reactor.advance(0)
        self.assertEqual([s.sends for s in socks], [1, 1, 1, 1, 1])
        self.assertEqual(self.batchCalls(), [])

    def test_answer_before_close(self) -> None:
        """Closing the connection sends what is waiting first."""
        self.h.receive(self.post(b"Connection: close\r\n"))
        self.assertIn(b"200 OK", bytes(self.h.sock.sent))
        self.assertTrue(self.h.conn.disconnecting)

    def test_bad_request_after_an_answer(self) -> None:
        """A 400 for a bad pipelined request goes after the answer before it."""
        self.h.receive(self.post() + b"BAD\r\n\r\n")
        sent = bytes(self.h.sock.sent)
        self.assertTrue(sent.startswith(b"HTTP/1.1 200 OK"), sent)
        self.assertTrue(sent.endswith(b"HTTP/1.1 400 Bad Request\r\n\r\n"), sent)
        self.assertTrue(self.h.conn.disconnecting)

    def test_overlong_line_is_a_bad_request(self) -> None:
        """A request or header line over twisted.web's line limit gets the bare 400, after the answer before it, and the close."""
        too_long = b"a" * (http.HTTPChannel.MAX_LENGTH + 1)
        for request in (
            b"GET /" + too_long + b" HTTP/1.1\r\nHost: t\r\n\r\n",
            b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: " + too_long + b"\r\n\r\n",
            b"GET /" + too_long,  # no line end at all
        ):
            with self.subTest(request=request[:20]):
                sock, proto, conn = self.h.connect()
                self.addCleanup(conn.connectionLost, Failure(ConnectionDone()))
                proto.dataReceived(self.post() + request)
                self.h.reactor.advance(0)
                sent = bytes(sock.sent)
                self.assertTrue(sent.startswith(b"HTTP/1.1 200 OK"), sent[:40])
                self.assertTrue(sent.endswith(b"HTTP/1.1 400 Bad Request\r\n\r\n"), sent[-60:])
                self.assertTrue(conn.disconnecting)

    def test_continue_goes_in_line(self) -> None:
        """The 100 Continue of a pipelined request goes after the answer before it."""
        body = b"id=notify_u1&data=1"
        expect = (
            b"POST /webNotification HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        self.h.receive(self.post() + expect)
        self.h.receive(body)
        self.h.reactor.advance(0)
        sent = bytes(self.h.sock.sent)
        first = sent.index(b"HTTP/1.1 200 OK")
        self.assertLess(first, sent.index(b"HTTP/1.1 100 Continue"))
        self.assertEqual(sent.count(b"HTTP/1.1 200 OK"), 2)

    def test_lost_connection_drops_its_bytes_only(self) -> None:
        """A connection lost before the pass ends sends nothing; the others still send."""
        ssock, sproto, sconn = self.h.connect()
        sproto.dataReceived(b"GET /sse/u1 HTTP/1.1\r\nHost: t\r\n\r\n")
        self.h.receive(self.post())
        self.h.lose()
        self.h.reactor.advance(0)
        self.assertEqual(self.h.sock.sends, 0)
        self.assertIn(b"event: notify", bytes(ssock.sent))
        sconn.connectionLost(Failure(ConnectionDone()))

    def test_a_failing_connection_does_not_stop_the_rest(self) -> None:
        """An error sending to one connection is logged; the batch goes on."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        ssock, sproto, sconn = self.h.connect()
        sproto.dataReceived(b"GET /sse/u1 HTTP/1.1\r\nHost: t\r\n\r\n")

        def broken() -> None:
            raise RuntimeError("boom")

        self.h.receive(self.post())
        self.h.protocol._channel.sendPending = broken
        ssock2, sproto2, sconn2 = self.h.connect()
        sproto2.dataReceived(b"GET /sse/u2 HTTP/1.1\r\nHost: t\r\n\r\n")
        self.h.reactor.advance(0)
        self.assertIn(b"event: connect", bytes(ssock2.sent))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertTrue(any("sending to" in e.get("log_format", "") for e in events))
        sconn.connectionLost(Failure(ConnectionDone()))
        sconn2.connectionLost(Failure(ConnectionDone()))

    def test_stop_sends_what_is_left(self) -> None:
        """Stopping the batch (at shutdown, after the hub closed the streams) sends everything."""
        self.h.writes.startService()
        self.h.receive(b"GET /sse/u1 HTTP/1.1\r\nHost: t\r\n\r\n")
        self.h.hub.close_all()
        self.assertEqual(len(self.batchCalls()), 1)
        self.h.writes.stopService()
        self.assertTrue(bytes(self.h.sock.sent).endswith(b"\r\n0\r\n\r\n"))
        self.assertEqual(self.batchCalls(), [])

    def test_service_is_wired(self) -> None:
        """makeService gives the site's channels one batch, stopped after the drain and the listeners."""
        root = tap.makeService(
            {
                "loaded": config_with(sse={"history": {"directory": None}}),
                "listen": ["tcp:0"],
                "env": "x",
            },
            reactor=MemoryReactorClock(),
        )
        # The serving part, under the GC tuning.
        serving = list(list(list(root)[-1])[-1])
        batches = [c for c in serving if isinstance(c, fast.WriteBatch)]
        self.assertEqual(len(batches), 1)
        self.assertIs(serving[-1].__class__, services.DrainService)
        # Started before the listeners, so stopped after them.
        listeners = next(c for c in serving if isinstance(c, MultiService))
        self.assertLess(serving.index(batches[0]), serving.index(listeners))


class _Echo(Resource):
    """Answers every request with what twisted.web read of it."""

    isLeaf = True

    def render(self, request: Any) -> bytes:
        content = request.content.read() if request.content is not None else b""
        return repr(
            (
                request.method,
                request.uri,
                request.clientproto,
                list(request.requestHeaders.getAllRawHeaders()),
                content,
            )
        ).encode("ascii")


class _LineByLine(fast.Channel):
    """L{fast.Channel} without its whole-head path: twisted.web's lines only."""

    def read_whole_head(self, data: bytes) -> bool:
        return False


def _serve(channel: type[fast.Channel], data: bytes, reads: int = 1) -> tuple[bytes, Any]:
    """
    What a fresh connection of a site served by C{channel} (answering with
    L{_Echo}) sends for C{data} received in C{reads} reads, one reactor pass
    each, and its channel.
    """
    reactor = MemoryReactorClock()
    writes = fast.WriteBatch(reactor)
    site = Site(_Echo(), reactor=reactor)
    site.protocol = lambda: GenericHTTPChannelProtocol(channel(writes))  # type: ignore[assignment]
    protocol = site.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    size = -(-len(data) // reads) or 1
    for start in range(0, len(data), size):
        if transport.disconnecting:
            break
        protocol.dataReceived(data[start : start + size])
        reactor.advance(0)
    # twisted.web's Date comes from the wall clock: the same for both runs.
    return re.sub(
        rb"\r\nDate: [^\r]*\r\n", b"\r\nDate: -\r\n", transport.value()
    ), protocol._channel


#: Requests that exercise the head's every rule; L{WholeHeadTests} mutates them.
_HEADS = [
    b"GET /sse/u1 HTTP/1.1\r\nHost: 127.0.0.1:3000\r\nAccept: text/event-stream\r\n"
    b"Cache-Control: no-cache\r\n\r\n",
    b"POST /webNotification HTTP/1.1\r\nHost: t\r\n"
    b"Content-Type: application/x-www-form-urlencoded; charset=UTF-8\r\n"
    b"Content-Length: 19\r\n\r\nid=notify_u1&data=1",
    b"POST /webNotification HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nid=no\r\n0\r\n\r\n",
    b"GET /a HTTP/1.0\r\nhost: t\r\nX-Forwarded-For: 10.0.0.1\r\nx-forwarded-for: 10.0.0.2\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    b"GET /a?b=c&d HTTP/1.1\r\nHost: t\r\nCookie: userID=u1; other=2\r\nDNT: 1\r\n"
    b"Last-Event-ID: 1700000000000:1\r\nwww-authenticate: x\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
    b"\r\nGET /a HTTP/1.1\r\nHost: t\r\n\r\n",
]

#: Bytes a mutation inserts: every one the head's rules are about.
_INSERTS = [
    b"\r",
    b"\n",
    b"\r\n",
    b"\x00",
    b" ",
    b"\t",
    b":",
    b"\x7f",
    b"\xb0",
    b"\xff",
    b"\r\n ",
    b"\r\n\t",
    b"\r\nContent-Length: 2",
    b"\r\nTransfer-Encoding: chunked",
    b"\r\nTransfer-Encoding: identity",
    b"\r\nContent-Length: +1",
    b"A",
    b"-",
    b"(",
]


class WholeHeadTests(SynchronousTestCase):
    """
    L{fast.Channel} reads a head that came whole in one read with bytes
    operations, and reads it as twisted.web's C{HTTPChannel} reads it line by
    line: the same answers, byte for byte, and the same request state, for
    valid heads and for heads broken in every way its rules are about.
    """

    def assertSameAsLines(self, data: bytes, reads: int = 1) -> None:
        fast_sent, fast_channel = _serve(fast.Channel, data, reads)
        line_sent, line_channel = _serve(_LineByLine, data, reads)
        self.assertEqual(fast_sent, line_sent, data)
        for attribute in (
            "length",
            "persistent",
            "line_mode",
            "_buffer",
            "_receivedHeaderCount",
            "_receivedHeaderSize",
            "_handlingRequest",
        ):
            self.assertEqual(
                getattr(fast_channel, attribute),
                getattr(line_channel, attribute),
                (attribute, data),
            )
        self.assertEqual(len(fast_channel.requests), len(line_channel.requests), data)

    def test_heads_read_as_lines(self) -> None:
        """Each request of L{_HEADS}, whole or in three reads, is read as the lines would read it."""
        for data in _HEADS:
            self.assertSameAsLines(data)
            self.assertSameAsLines(data, reads=3)

    def test_mutated_heads_read_as_lines(self) -> None:
        """Heads with bytes inserted, dropped or doubled anywhere are answered as the lines answer them."""
        rng = random.Random(19)
        for _ in range(3000):
            data = bytearray(rng.choice(_HEADS))
            for _ in range(rng.randint(1, 3)):
                at = rng.randrange(len(data) + 1)
                kind = rng.random()
                if kind < 0.6:
                    data[at:at] = rng.choice(_INSERTS)
                elif kind < 0.8:
                    del data[at : at + rng.randint(1, 4)]
                else:
                    data[at:at] = data[at : at + rng.randint(1, 30)]
            self.assertSameAsLines(bytes(data))

    def test_limits_read_as_lines(self) -> None:
        """Heads at and past C{maxHeaders} and C{totalHeadersSize} are answered as the lines answer them."""
        many = b"".join(b"X-H%d: 1\r\n" % i for i in range(http.HTTPChannel.maxHeaders + 1))
        self.assertSameAsLines(b"GET / HTTP/1.1\r\n" + many + b"\r\n")
        self.assertSameAsLines(b"GET / HTTP/1.1\r\n" + many[9:] + b"\r\n")
        size = http.HTTPChannel.totalHeadersSize
        for value in (size - 40, size - 20, size - 16, size - 10, size):
            self.assertSameAsLines(b"GET / HTTP/1.1\r\nX: " + b"a" * value + b"\r\n\r\n")

    def test_whole_head_skips_the_lines(self) -> None:
        """A stream's GET and a publish, each in one read, are read without a call per line."""
        lines: list[bytes] = []

        class Counting(fast.Channel):
            def lineReceived(self, line: bytes) -> None:
                lines.append(line)
                super().lineReceived(line)

        for data in _HEADS[:2]:
            sent = _serve(fast.Channel, data)[0]
            self.assertTrue(sent.startswith(b"HTTP/1.1 200 OK\r\n"))
            self.assertEqual(_serve(Counting, data)[0], sent)
            self.assertEqual(lines, [])


class IdleTimerTests(SynchronousTestCase):
    """
    Under the connections' clocks the fast channel arms no idle timer of
    twisted.web's (it could never fire first): not when a connection
    opens, not for a stream, not for each publish on a keep-alive
    connection.  The stock channel keeps twisted.web's.
    """

    def idle_timers(self, server: InMemoryServer) -> list[Any]:
        return [
            call
            for call in server.reactor.getDelayedCalls()
            if getattr(call.func, "__name__", "").endswith("timedOut")
        ]

    def serve(self, fast_channel: bool) -> InMemoryServer:
        server = InMemoryServer(self, fast=fast_channel)
        stream = server.connect()
        stream.receive(b"GET /sse/u1 HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertEqual(server.hub.stream_count, 1)
        sender = server.connect()
        body = b"id=notify_u1&data=1"
        for _ in range(2):
            sender.receive(
                b"POST /webNotification HTTP/1.1\r\nHost: t\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
        self.assertEqual(server.stats.published, 2)
        return server

    def test_fast_channel_arms_none(self) -> None:
        """A stream and two publishes on the fast channel leave no idle timer armed."""
        self.assertEqual(self.idle_timers(self.serve(True)), [])

    def test_stock_channel_keeps_twisteds(self) -> None:
        """The stock channel's idle timer runs as twisted.web runs it (the keep-alive sender's)."""
        self.assertEqual(len(self.idle_timers(self.serve(False))), 1)

    def test_idle_keep_alive_still_closed(self) -> None:
        """An idle keep-alive connection is still closed, by the head clock, after limits.headerTimeout."""
        server = self.serve(True)
        sender = server.conns[-1]
        self.assertTrue(sender.transport.connected)
        server.reactor.advance(defaults().limits.header_timeout + 1)
        sender.pump()
        self.assertFalse(sender.transport.connected)
        self.assertEqual(server.hub.stream_count, 1)
