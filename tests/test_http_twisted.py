"""
Tests for L{notificator.http._twisted}: the private parts of Twisted the
server uses, checked against the real classes.
"""

from __future__ import annotations

import itertools
from typing import Any

import h2.events
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from twisted.web import http
from twisted.web.server import Site
from twisted.web.static import Data

from notificator.http import _twisted, fast


class RequestTargetTests(SynchronousTestCase):
    """
    L{notificator.http._twisted.request_target} and
    L{notificator.http._twisted.request_version} read the private attributes
    of twisted.web's real channels (C{HTTPChannel._command}, C{_path} and
    C{_version}; an C{H2Stream}'s C{command} and C{path}) while a request's
    body is not read yet: checked here on the real classes, so a Twisted
    that renames them fails here (the publish gate then decides after the
    body: its early 403 is lost; the access-log line of an early answer
    loses its request line).
    """

    def probe(self) -> tuple[type[http.Request], list[object]]:
        seen: list[object] = []

        class Probe(http.Request):
            def gotLength(self, length: int | None) -> None:
                seen.append((_twisted.request_target(self), _twisted.request_version(self)))
                super().gotLength(length)

            def process(self) -> None:
                self.finish()

        return Probe, seen

    def test_http1(self) -> None:
        """HTTPChannel, stock and the fast channel's subclass: the target before the body."""
        for make in (
            http.HTTPChannel,
            lambda: fast.Channel(fast.WriteBatch(MemoryReactorClock())),
        ):
            probe, seen = self.probe()
            ch = make()
            ch.requestFactory = probe
            ch.makeConnection(StringTransport())
            ch.dataReceived(
                b"POST /webNotification?x=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\n"
            )
            self.assertEqual(seen, [((b"POST", b"/webNotification?x=1"), b"HTTP/1.1")])
            ch.connectionLost(Failure(ConnectionDone()))

    def test_http2(self) -> None:
        """An HTTP/2 stream (twisted.web's H2Connection): the target before the body."""
        from h2.config import H2Configuration
        from h2.connection import H2Connection as Client
        from twisted.web._http2 import H2Connection

        probe, seen = self.probe()
        reactor = MemoryReactorClock()
        server = H2Connection(reactor)
        server.requestFactory = probe
        server.site = None
        server.makeConnection(StringTransport())
        client = Client(H2Configuration(client_side=True))
        client.initiate_connection()
        client.send_headers(
            1,
            [
                (":method", "POST"),
                (":path", "/webNotification"),
                (":scheme", "https"),
                (":authority", "t"),
                ("content-length", "3"),
            ],
        )
        server.dataReceived(client.data_to_send())
        self.assertEqual(seen, [((b"POST", b"/webNotification"), b"HTTP/2")])
        server.connectionLost(Failure(ConnectionDone()))
        reactor.advance(1)


class WholeHeadTests(SynchronousTestCase):
    """
    L{notificator.http._twisted.RequestBase} calls C{head_received} once
    per request, with every header on it and before any of its body: over
    HTTP/1.x at C{gotLength}, over HTTP/2 at the later of C{gotLength} and
    C{parseCookies}, as twisted.web's real C{H2Stream._convertHeaders} calls
    them (C{gotLength} the moment it meets C{content-length}, before the
    headers after it).  Checked on the real classes, so a Twisted that
    changes the order fails here first.
    """

    LATER = [
        ("authorization", "Bearer t0ken"),
        ("origin", "https://elsewhere.example"),
        ("x-forwarded-for", "203.0.113.9"),
    ]

    def probe(self) -> tuple[type[_twisted.RequestBase], list[tuple[str, Any]]]:
        seen: list[tuple[str, Any]] = []

        class Probe(_twisted.RequestBase):
            def gotLength(self, length: int | None) -> None:
                # What twisted.web's channel has put on the request by now.
                seen.append(("gotLength", self.requestHeaders.hasHeader(b"x-forwarded-for")))
                super().gotLength(length)

            def head_received(self, length: int | None) -> None:
                headers = {
                    name.decode().lower(): values[0].decode()
                    for name, values in self.requestHeaders.getAllRawHeaders()
                }
                seen.append(("head", (length, headers)))
                super().head_received(length)

            def handleContentChunk(self, data: bytes) -> None:
                seen.append(("body", data))
                super().handleContentChunk(data)

            def process(self) -> None:
                self.finish()

        return Probe, seen

    def h2(self, probe: type[_twisted.RequestBase], headers: list[tuple[str, str]]) -> None:
        """One HTTP/2 request with these headers after the pseudo-headers, and a body of 3 bytes in the same read."""
        from h2.config import H2Configuration
        from h2.connection import H2Connection as Client
        from twisted.web._http2 import H2Connection

        reactor = MemoryReactorClock()
        server = H2Connection(reactor)
        server.requestFactory = probe
        server.site = Site(Data(b"ok", "text/plain"), reactor=reactor)
        server.makeConnection(StringTransport())
        self.addCleanup(reactor.advance, 1)
        self.addCleanup(server.connectionLost, Failure(ConnectionDone()))
        client = Client(H2Configuration(client_side=True))
        client.initiate_connection()
        pseudo = [(":method", "POST"), (":path", "/p"), (":scheme", "https"), (":authority", "t")]
        client.send_headers(1, pseudo + headers)
        client.send_data(1, b"a=b", end_stream=True)
        server.dataReceived(client.data_to_send())

    def test_http2_content_length_first(self) -> None:
        """
        A content-length before the other headers: twisted.web calls
        gotLength before they are on the request (why the class exists);
        head_received comes once, with all of them, before the body.
        """
        probe, seen = self.probe()
        self.h2(probe, [("content-length", "3"), *self.LATER])
        self.assertEqual(seen[0], ("gotLength", False))  # twisted.web's order
        heads = [value for kind, value in seen if kind == "head"]
        self.assertEqual(len(heads), 1)
        length, headers = heads[0]
        self.assertEqual(length, 3)
        for name, value in self.LATER:
            self.assertEqual(headers[name], value)
        kinds = [kind for kind, _ in seen]
        self.assertLess(kinds.index("head"), kinds.index("body"))
        self.assertEqual(seen[-1], ("body", b"a=b"))

    def test_http2_other_orders(self) -> None:
        """Content-length last, twice, or not at all: head_received once, with every header, before the body."""
        for headers, length in (
            ([*self.LATER, ("content-length", "3")], 3),
            ([("content-length", "3"), *self.LATER, ("content-length", "3")], 3),
            (self.LATER, None),
        ):
            probe, seen = self.probe()
            self.h2(probe, headers)
            heads = [value for kind, value in seen if kind == "head"]
            self.assertEqual([h[0] for h in heads], [length], headers)
            self.assertEqual(heads[0][1]["x-forwarded-for"], "203.0.113.9")
            kinds = [kind for kind, _ in seen]
            self.assertLess(kinds.index("head"), kinds.index("body"))

    def test_http2_get_with_a_body(self) -> None:
        """
        A GET without content-length, whose length twisted.web takes for 0
        but whose DATA it hands in: no announced length (None).  With
        content-length: 0 (h2 allows no DATA then), 0.
        """
        from h2.config import H2Configuration
        from h2.connection import H2Connection as Client
        from twisted.web._http2 import H2Connection

        for headers, length, body in (
            ([], None, [("body", b"a=b")]),
            ([("content-length", "0")], 0, []),
        ):
            probe, seen = self.probe()
            reactor = MemoryReactorClock()
            server = H2Connection(reactor)
            server.requestFactory = probe
            server.site = Site(Data(b"ok", "text/plain"), reactor=reactor)
            server.makeConnection(StringTransport())
            client = Client(H2Configuration(client_side=True))
            client.initiate_connection()
            pseudo = [
                (":method", "GET"),
                (":path", "/p"),
                (":scheme", "https"),
                (":authority", "t"),
            ]
            client.send_headers(1, pseudo + headers, end_stream=not body)
            if body:
                client.send_data(1, b"a=b", end_stream=True)
            server.dataReceived(client.data_to_send())
            self.assertEqual([v[0] for k, v in seen if k == "head"], [length])
            self.assertEqual([e for e in seen if e[0] == "body"], body)
            server.connectionLost(Failure(ConnectionDone()))
            reactor.advance(1)

    def test_parse_cookies_first(self) -> None:
        """A Twisted that called parseCookies before gotLength (as HTTP/1.x does) is decided at gotLength."""
        probe, seen = self.probe()

        class Stream:
            transport = None  # as twisted.web's H2Stream
            site = Site(Data(b"ok", "text/plain"))

            def getPeer(self) -> Any:
                return StringTransport().getPeer()

            def getHost(self) -> Any:
                return StringTransport().getHost()

        request = probe(Stream(), queued=False)
        request.parseCookies()
        self.assertEqual(seen, [])
        request.gotLength(7)
        request.gotLength(7)  # a second content-length: decided once
        self.assertEqual([(k, v[0]) for k, v in seen if k == "head"], [("head", 7)])

    def test_http1(self) -> None:
        """HTTP/1.1, stock channel and the fast one: at gotLength, once, every header in."""
        for make in (
            http.HTTPChannel,
            lambda: fast.Channel(fast.WriteBatch(MemoryReactorClock())),
        ):
            probe, seen = self.probe()
            ch = make()
            ch.requestFactory = probe
            ch.site = Site(Data(b"ok", "text/plain"))
            ch.makeConnection(StringTransport())
            ch.dataReceived(
                b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
                b"X-Forwarded-For: 203.0.113.9\r\n\r\na=b"
            )
            self.assertEqual([kind for kind, _ in seen], ["gotLength", "head", "body"])
            self.assertEqual(seen[1][1][0], 3)
            self.assertEqual(seen[1][1][1]["x-forwarded-for"], "203.0.113.9")
            ch.connectionLost(Failure(ConnectionDone()))


class HTTP2HelpersTests(SynchronousTestCase):
    """
    The HTTP/2 helpers of the connection clock
    (L{notificator.http._twisted.h2_connection},
    L{notificator.http._twisted.h2_open_streams},
    L{notificator.http._twisted.when_h2_idle},
    L{notificator.http._twisted.h2_go_away}) read and wrap private parts of
    twisted.web's real classes (C{_GenericHTTPChannelProtocol._channel},
    C{H2Connection.streams} and C{_requestDone}), and
    L{notificator.http._twisted.h2_reset} resets a request's C{H2Stream}:
    checked here on them, so a Twisted that changes them fails here first.
    """

    def setUp(self) -> None:
        import twisted.internet
        from h2.config import H2Configuration
        from h2.connection import H2Connection as Client

        self.reactor = MemoryReactorClock()
        # H2Connection's send loop runs on the global reactor.
        self.patch(twisted.internet, "reactor", self.reactor)
        site = Site(Data(b"ok", "text/plain"), reactor=self.reactor)
        self.protocol = site.buildProtocol(None)
        self.transport = StringTransport()
        self.transport.negotiatedProtocol = b"h2"  # type: ignore[attr-defined]
        self.protocol.makeConnection(self.transport)
        self.client = Client(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.client.initiate_connection()
        self.protocol.dataReceived(self.client.data_to_send())
        self.addCleanup(self.protocol.connectionLost, Failure(ConnectionDone()))

    def events(self) -> list[Any]:
        return list(self.client.receive_data(self.transport.value()))

    def test_the_connection_and_its_streams(self) -> None:
        """The H2Connection is found; a stream is open until it is done, then idle() is called once."""
        from twisted.web._http2 import H2Connection

        conn = _twisted.h2_connection(self.protocol)
        self.assertIsInstance(conn, H2Connection)
        self.assertFalse(_twisted.h2_open_streams(conn))
        idle: list[None] = []
        _twisted.when_h2_idle(conn, lambda: idle.append(None))
        self.client.send_headers(
            1,
            [(":method", "GET"), (":scheme", "https"), (":authority", "t"), (":path", "/")],
            end_stream=True,
        )
        self.protocol.dataReceived(self.client.data_to_send())
        self.assertTrue(_twisted.h2_open_streams(conn))
        self.assertEqual(idle, [])
        for _ in range(5):
            self.reactor.advance(0)
        self.assertTrue(any(isinstance(e, h2.events.StreamEnded) for e in self.events()))
        self.assertFalse(_twisted.h2_open_streams(conn))
        self.assertEqual(idle, [None])

    def test_reset_stream_is_done(self) -> None:
        """A stream the client resets is done too."""
        conn = _twisted.h2_connection(self.protocol)
        idle: list[None] = []
        _twisted.when_h2_idle(conn, lambda: idle.append(None))
        self.client.send_headers(
            1,
            [(":method", "POST"), (":scheme", "https"), (":authority", "t"), (":path", "/")],
        )
        self.protocol.dataReceived(self.client.data_to_send())
        self.assertTrue(_twisted.h2_open_streams(conn))
        self.client.reset_stream(1)
        self.protocol.dataReceived(self.client.data_to_send())
        self.assertFalse(_twisted.h2_open_streams(conn))
        self.assertEqual(idle, [None])

    def test_go_away(self) -> None:
        """h2_go_away sends GOAWAY (no error) and closes."""
        _twisted.h2_go_away(_twisted.h2_connection(self.protocol))
        [goaway] = [e for e in self.events() if isinstance(e, h2.events.ConnectionTerminated)]
        self.assertEqual(goaway.error_code, 0)
        self.assertTrue(self.transport.disconnecting)

    def test_reset(self) -> None:
        """h2_reset: the stream gets RST_STREAM; the connection stays open; a gone stream: nothing."""
        requests: list[Any] = []
        conn = _twisted.h2_connection(self.protocol)
        factory = conn.requestFactory

        def record(*args: Any, **kwargs: Any) -> Any:
            request = factory(*args, **kwargs)
            requests.append(request)
            return request

        conn.requestFactory = record
        self.client.send_headers(
            1,
            [(":method", "POST"), (":scheme", "https"), (":authority", "t"), (":path", "/")],
        )
        self.protocol.dataReceived(self.client.data_to_send())
        [request] = requests
        _twisted.h2_reset(request)
        [reset] = [e for e in self.events() if isinstance(e, h2.events.StreamReset)]
        self.assertEqual(reset.stream_id, 1)
        self.assertFalse(self.transport.disconnecting)
        self.assertFalse(_twisted.h2_open_streams(conn))
        request.channel = None  # as twisted.web leaves it once the stream is gone
        _twisted.h2_reset(request)

    def test_http1_has_none(self) -> None:
        """A connection that speaks HTTP/1.1 has no H2Connection."""
        protocol = Site(Data(b"ok", "text/plain"), reactor=self.reactor).buildProtocol(None)
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertIsNone(_twisted.h2_connection(protocol))
        self.assertIsNone(_twisted.h2_connection(object()))


class CloseNowTests(SynchronousTestCase):
    """
    L{notificator.http._twisted.close_now} calls Twisted's
    C{tcp.Connection.connectionLost} itself, ahead of the reactor: checked
    on the real classes (a C{tcp.Server} over a real socket, plain and under
    C{TLSMemoryBIOProtocol}), so a Twisted that changes them fails here.
    """

    def connection(self, factory: Any) -> tuple[Any, Any, Any]:
        """A real socket pair: a C{tcp.Server} with C{factory}'s protocol, and the client's socket."""
        import socket

        from twisted.internet import tcp

        ours, theirs = socket.socketpair()
        self.addCleanup(theirs.close)
        reactor = MemoryReactorClock()
        protocol = factory.buildProtocol(None)
        port = type("Port", (), {"_realPortNumber": 3000})()
        transport = tcp.Server(ours, protocol, ("127.0.0.1", 40000), port, 1, reactor)
        protocol.makeConnection(transport)
        return transport, theirs, reactor

    def test_plain_tcp(self) -> None:
        """The socket is closed and the protocol told at once, once, with ConnectionAborted."""
        from twisted.internet.error import ConnectionAborted
        from twisted.internet.protocol import Factory, Protocol, connectionDone

        lost: list[Failure] = []

        class Recorder(Protocol):
            def connectionLost(self, reason: Failure = connectionDone) -> None:
                lost.append(reason)

        transport, theirs, reactor = self.connection(Factory.forProtocol(Recorder))
        socket_ = transport.socket
        _twisted.close_now(transport)
        self.assertEqual(socket_.fileno(), -1)
        self.assertEqual(len(lost), 1)
        self.assertTrue(lost[0].check(ConnectionAborted))
        reactor.advance(0)  # the reactor's own call, from abortConnection: ignored
        self.assertEqual(len(lost), 1)
        theirs.settimeout(5)
        try:
            self.assertEqual(theirs.recv(10), b"")
        except ConnectionResetError:
            pass  # an abort: RST

    def test_tls_and_as_it_opens(self) -> None:
        """Under TLS, also from the wrapped protocol's makeConnection (a refused connection)."""
        from twisted.internet.protocol import Factory
        from twisted.internet.ssl import CertificateOptions, PrivateCertificate
        from twisted.protocols.tls import TLSMemoryBIOFactory

        from notificator.http import connections
        from tests.tlssupport import Certs

        certs = Certs(self)
        with open(certs.key) as k, open(certs.cert) as c:
            pem = k.read() + c.read()
        cert = PrivateCertificate.loadPEM(pem)
        options = CertificateOptions(privateKey=cert.privateKey.original, certificate=cert.original)
        refusing = TLSMemoryBIOFactory(options, False, Factory.forProtocol(connections.Refused))
        transport, theirs, reactor = self.connection(refusing)
        self.assertFalse(hasattr(transport, "socket"))  # closed while it opened
        reactor.advance(0)
        theirs.settimeout(5)
        try:
            self.assertEqual(theirs.recv(10), b"")
        except ConnectionResetError:
            pass


class ChannelBaseTests(SynchronousTestCase):
    """
    L{notificator.http._twisted.ChannelBase} overrides two private methods
    of twisted.web's real C{HTTPChannel} (C{_send100Continue},
    C{_respondToBadRequestAndDisconnect}): checked here that the real
    channel still calls them, and that what they hand to C{send_raw} is
    what the stock channel writes, byte for byte.  (A Twisted that renames
    them would send its 100 Continue and 400 past the fast channel's held
    writes, out of order.)
    """

    HEADS = [
        # Expect: 100-continue: the 100 before the body.
        b"POST /webNotification HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
        b"Expect: 100-continue\r\n\r\n",
        # A malformed head: 400 and the close.
        b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n",
    ]

    def served(self, channel: http.HTTPChannel, head: bytes) -> tuple[bytes, bool]:
        """What C{channel} writes for C{head}, and whether it closed."""
        transport = StringTransport()
        channel.requestFactory = http.Request
        channel.makeConnection(transport)
        channel.dataReceived(head)
        written = transport.value()
        channel.connectionLost(Failure(ConnectionDone()))
        return written, transport.disconnecting

    def test_same_bytes_through_send_raw(self) -> None:
        """Each head: the same bytes as the stock channel, all of them through send_raw."""

        class Recorder(_twisted.ChannelBase):
            raw: list[bytes] = []

            def send_raw(self, data: bytes) -> None:
                self.raw.append(data)
                super().send_raw(data)

        for head in self.HEADS:
            stock, stock_closed = self.served(http.HTTPChannel(), head)
            Recorder.raw = []
            ours, closed = self.served(Recorder(), head)
            self.assertIn(stock[:12], (b"HTTP/1.1 100", b"HTTP/1.1 400"), head[:40])
            self.assertEqual((ours, closed), (stock, stock_closed), head[:40])
            self.assertEqual(b"".join(Recorder.raw), stock, head[:40])

    def test_bad_request(self) -> None:
        """bad_request: twisted.web's 400, and the close."""
        channel = _twisted.ChannelBase()
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.bad_request()
        self.assertEqual(transport.value(), b"HTTP/1.1 400 Bad Request\r\n\r\n")
        self.assertTrue(transport.disconnecting)
        channel.connectionLost(Failure(ConnectionDone()))


class SendNowTests(SynchronousTestCase):
    """
    L{notificator.http._twisted.ChannelBase.send_now} reads Twisted's real
    C{tcp.Connection} queue (C{dataBuffer}, C{_tempDataLen}) and sends on
    its C{socket}: checked on a real C{tcp.Server} over a real socket pair,
    so a Twisted that renames them fails here (the fast channel would
    then send past queued bytes, out of order).
    """

    def setUp(self) -> None:
        import socket

        from twisted.internet import tcp

        # A TCP pair on the loopback (the channel sets TCP_NODELAY).
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        self.theirs = socket.create_connection(listener.getsockname(), timeout=5)
        ours, _ = listener.accept()
        ours.setblocking(False)
        self.addCleanup(self.theirs.close)
        self.addCleanup(ours.close)
        self.reactor = MemoryReactorClock()
        port = type("Port", (), {"_realPortNumber": 3000})()
        self.channel = _twisted.ChannelBase()
        self.transport = tcp.Server(ours, self.channel, ("127.0.0.1", 40000), port, 1, self.reactor)
        self.channel.makeConnection(self.transport)
        self.addCleanup(self.channel.connectionLost, Failure(ConnectionDone()))

    def received(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            data += self.theirs.recv(size - len(data))
        return data

    def queued(self) -> int:
        """What the transport holds for its write pass (its private queue)."""
        return len(self.transport.dataBuffer) + self.transport._tempDataLen

    def test_nothing_queued(self) -> None:
        """Nothing queued: the bytes go to the socket at once, nothing is queued."""
        self.channel.send_now(b"abc")
        self.assertEqual(self.queued(), 0)
        self.assertEqual(self.received(3), b"abc")

    def test_queue_first(self) -> None:
        """Bytes the transport queued (not yet sent): none go past them."""
        self.transport.write(b"first")  # queued for the reactor's write pass
        self.channel.send_now(b"second")
        self.assertEqual(self.queued(), 11)
        self.transport.doWrite()  # the write pass: the queue is sent, in order
        self.assertEqual(self.received(11), b"firstsecond")
        self.channel.send_now(b"third")
        self.assertEqual(self.queued(), 0)
        self.assertEqual(self.received(5), b"third")

    def test_closing(self) -> None:
        """A connection closing: through the transport, not the socket."""
        self.transport.loseConnection()
        self.channel.send_now(b"x")
        self.assertEqual(self.queued(), 1)

    def test_socket_error(self) -> None:
        """A send the socket refuses (here: the peer is gone) is handed to the transport."""
        import socket

        self.theirs.shutdown(socket.SHUT_RDWR)
        self.theirs.close()
        # The first sends may still be taken by the kernel; one soon fails.
        for _ in range(50):
            self.channel.send_now(b"x" * 65536)
            if self.queued():
                break
        self.assertGreater(self.queued(), 0)


class CombinedEscapeTests(SynchronousTestCase):
    """
    L{notificator.logs.access.combined_escape} is twisted.web's private
    C{http._escape} (the combined log format's escape), byte for byte: a
    Twisted that changes its escape fails here, and C{access.log} lines
    would then differ from twisted.web's format.
    """

    def test_every_byte(self) -> None:
        from notificator.logs.access import combined_escape

        for b in range(256):
            self.assertEqual(combined_escape(bytes([b])), http._escape(bytes([b])), b)

    @given(st.binary(max_size=64))
    def test_any_bytes(self, value: bytes) -> None:
        from notificator.logs.access import combined_escape

        self.assertEqual(combined_escape(value), http._escape(value))

    def test_quotes(self) -> None:
        from notificator.logs.access import combined_escape

        for value in (b"it's", b'say "hi"', b"both ' and \"", b"\\", b"\t\x7f\xff"):
            self.assertEqual(combined_escape(value), http._escape(value), value)


class RequestLineTests(SynchronousTestCase):
    """
    L{_twisted.request_line}, which L{_twisted.ChannelBase.read_whole_head}
    reads a request line with, against twisted.web's own parser.
    """

    def test_request_line_as_twisted(self) -> None:
        """L{_twisted.request_line} accepts and splits exactly the request lines twisted.web's parser does."""
        methods = [b"GET", b"POST", b"G(T", b"", b"~!", b"G\xffT", b"GET "]
        gaps = [b" ", b"  ", b"\t", b""]
        targets = [
            b"/sse/u1",
            b"/a?b=c%20",
            b"",
            b"/\x7f",
            b"/\xb0",
            b"/\xb1",
            b"/\x00",
            b"/ a",
            b"*",
            b"/\x20",
            b"/\x21",
        ]
        versions = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"http/1.1", b"HTTP/1.1 ", b""]
        accepted = 0
        for line in map(b"".join, itertools.product(methods, gaps, targets, gaps, versions)):
            try:
                expected: Any = http._parseRequestLine(line)
            except ValueError:
                expected = None
            self.assertEqual(_twisted.request_line(line), expected, line)
            accepted += expected is not None
        self.assertGreater(accepted, 20)

    def test_parsing_state_read_whole_head_sets(self) -> None:
        """
        The parts of C{HTTPChannel}, C{LineReceiver} and C{Headers} that
        L{_twisted.ChannelBase.read_whole_head} reads and sets are there, with
        the meaning it gives them: a fresh channel waits for a request line,
        a head read line by line leaves the request's method, path and
        version and the header count, and the header-name encoder gives the
        names C{Headers} keeps.
        """
        channel = http.HTTPChannel()
        channel.makeConnection(StringTransport())
        self.assertEqual(channel._HTTPChannel__first_line, 1)  # type: ignore[attr-defined]
        self.assertEqual(
            (channel.line_mode, channel._buffer, channel._busyReceiving), (1, b"", False)
        )
        self.assertEqual((channel._receivedHeaderCount, channel._receivedHeaderSize), (0, 0))
        channel.dataReceived(b"POST /p HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n\r\n")
        self.assertEqual(channel._HTTPChannel__first_line, 0)  # type: ignore[attr-defined]
        self.assertEqual(
            (channel._command, channel._path, channel._version), (b"POST", b"/p", b"HTTP/1.1")
        )
        self.assertEqual((channel._receivedHeaderCount, channel._receivedHeaderSize), (2, 40))
        self.assertEqual(channel.length, 5)
        self.assertFalse(channel.line_mode)
        request = channel.requests[-1]
        self.assertEqual(
            request.requestHeaders._rawHeaders, {b"Host": [b"t"], b"Content-Length": [b"5"]}
        )
        self.assertEqual(_twisted._names.encode(b"x-FORWARDED-for"), b"X-Forwarded-For")
        self.assertEqual(_twisted._names.encode(b"dnt"), b"DNT")
        with self.assertRaises(_twisted.InvalidHeaderName):
            _twisted._names.encode(b"a b")


class WhenFinishedTests(SynchronousTestCase):
    """
    L{_twisted.when_finished} tells a listener how a real twisted.web
    request ends, once, as C{notifyFinish} would, without a Deferred.
    """

    class Listener:
        def __init__(self) -> None:
            self.results: list[object] = []

        def callback(self, result: None) -> None:
            self.results.append(result)

        def errback(self, failure: Failure) -> None:
            self.results.append(failure)

    def request(self) -> http.Request:
        class Held(http.Request):
            def process(self) -> None:
                pass  # kept open, as a stream's is

        channel = http.HTTPChannel()
        channel.requestFactory = Held  # type: ignore[assignment]
        channel.makeConnection(StringTransport())
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        request: http.Request = channel.requests[-1]
        return request

    def test_finished(self) -> None:
        """A finished response: callback(None), once, and no Deferred on the request."""
        request = self.request()
        listener = self.Listener()
        _twisted.when_finished(request, listener)
        request.finish()
        self.assertEqual(listener.results, [None])
        request.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(listener.results, [None])

    def test_lost(self) -> None:
        """A connection lost first: errback(the failure), once."""
        request = self.request()
        listener = self.Listener()
        _twisted.when_finished(request, listener)
        reason = Failure(ConnectionDone())
        request.connectionLost(reason)
        self.assertEqual(listener.results, [reason])
        request.notifyFinish()  # still twisted.web's own for others
        self.assertEqual(len(request.notifications), 1)

    def test_same_as_notify_finish(self) -> None:
        """Where notifyFinish's Deferreds are told, the listener is told the same, in order."""
        request = self.request()
        told: list[object] = []
        request.notifyFinish().addBoth(lambda r: told.append(("deferred", r)))
        listener = self.Listener()
        listener.callback = lambda r: told.append(("listener", r))  # type: ignore[method-assign]
        _twisted.when_finished(request, listener)
        request.finish()
        self.assertEqual(told, [("deferred", None), ("listener", None)])


# Header names as clients and the code spell them (any case), values with
# and without the line breaks twisted.web sanitises.
_NAMES = st.sampled_from(
    [b"vary", b"Vary", b"VARY", b"content-type", b"Content-Type", b"x-extra", b"X-Extra",
     b"etag", b"www-authenticate", b"cache-control", "cache-control", "X-Str"]
)  # fmt: skip
_VALUES = st.one_of(
    st.binary(max_size=20),
    st.sampled_from([b"a\r\nb", b"a\nb", b"a\rb", b"", b" x "]),
    st.text(max_size=10),
)


class HeaderTests(SynchronousTestCase):
    """
    L{_twisted.header_block}, L{_twisted.set_headers}, L{_twisted.header},
    L{_twisted.header_values} and L{_twisted.kept_headers} read and write
    C{Headers._rawHeaders} as twisted.web's own C{Headers} methods do:
    checked against the real C{Headers}, so a Twisted that stores headers
    otherwise fails here (and the responses would lose or garble headers).
    """

    @given(
        st.lists(st.tuples(_NAMES, _VALUES), max_size=6),
        st.lists(st.tuples(_NAMES, _VALUES), max_size=8),
    )
    def test_set_headers_as_set_raw_headers(
        self, before: list[tuple[Any, Any]], pairs: list[tuple[Any, Any]]
    ) -> None:
        """The block set at once gives the headers, in the order, setRawHeaders one by one gives."""
        expected = http.Headers()
        got = http.Headers()
        for name, value in before:
            expected.setRawHeaders(name, [value])
            got.setRawHeaders(name, [value])
        for name, value in pairs:
            expected.setRawHeaders(name, [value])
        _twisted.set_headers(got, _twisted.header_block(pairs))
        self.assertEqual(list(got.getAllRawHeaders()), list(expected.getAllRawHeaders()))

    def test_blocks_are_not_shared(self) -> None:
        """Each response gets its own value lists: adding to one leaves the block and others alone."""
        block = _twisted.header_block([(b"vary", b"Origin")])
        one, two = http.Headers(), http.Headers()
        _twisted.set_headers(one, block)
        _twisted.set_headers(two, block)
        one.addRawHeader(b"vary", b"Cookie")
        self.assertEqual(two.getRawHeaders(b"vary"), [b"Origin"])
        self.assertEqual(block, ((b"Vary", b"Origin"),))

    @given(st.lists(st.tuples(_NAMES, _VALUES), max_size=8), _NAMES)
    def test_header_as_get_header(self, pairs: list[tuple[Any, Any]], name: Any) -> None:
        """header() and header_values() read what a request's getHeader and getRawHeaders do."""
        channel = http.HTTPChannel()
        channel.makeConnection(StringTransport())
        request = http.Request(channel)
        for each, value in pairs:
            request.requestHeaders.addRawHeader(each, value)
        canonical = _twisted.canonical_name(name)
        raw_name = name.encode("latin-1") if isinstance(name, str) else name
        self.assertEqual(
            _twisted.header(request.requestHeaders, canonical), request.getHeader(raw_name)
        )
        self.assertEqual(
            _twisted.header_values(request.requestHeaders, canonical),
            request.requestHeaders.getRawHeaders(raw_name),
        )

    def test_an_empty_header(self) -> None:
        """A header set to no value is none, as getRawHeaders has it."""
        headers = http.Headers()
        headers.setRawHeaders(b"origin", [])
        self.assertIsNone(_twisted.header(headers, b"Origin"))
        self.assertIsNone(_twisted.header_values(headers, b"Origin"))

    @given(st.lists(st.tuples(_NAMES, _VALUES), max_size=8))
    def test_kept_headers(self, pairs: list[tuple[Any, Any]]) -> None:
        """kept_headers copies the named headers as getRawHeaders and setRawHeaders would."""
        headers = http.Headers()
        for name, value in pairs:
            headers.addRawHeader(name, value)
        names = tuple(_twisted.canonical_name(n) for n in (b"vary", b"x-extra", b"etag"))
        expected = http.Headers()
        for name in names:
            values = headers.getRawHeaders(name)
            if values is not None:
                expected.setRawHeaders(name, values)
        kept = _twisted.kept_headers(headers, names)
        self.assertEqual(list(kept.getAllRawHeaders()), list(expected.getAllRawHeaders()))
        kept.addRawHeader(b"vary", b"more")
        self.assertNotIn(b"more", headers.getRawHeaders(b"vary", []))

    def test_canonical_name(self) -> None:
        """The spelling Headers stores a name under."""
        self.assertEqual(_twisted.canonical_name(b"last-event-id"), b"Last-Event-Id")
        self.assertEqual(_twisted.canonical_name("www-authenticate"), b"WWW-Authenticate")
        self.assertEqual(_twisted.canonical_name(b"ETAG"), b"ETag")


class ProcessTests(SynchronousTestCase):
    """
    L{_twisted.RequestBase.process} is twisted.web's C{server.Request.process}
    (with its private C{_handleStar}, C{_encoder} and
    C{resource._IEncodingResource}) but for how it sets C{Server} and
    C{Date}: the same answer, byte for byte (the date aside), from the same
    resource, for every kind of request that method tells apart.
    """

    def site(self) -> Site:
        from twisted.web.resource import EncodingResourceWrapper, Resource
        from twisted.web.server import GzipEncoderFactory

        class Boom(Resource):
            isLeaf = True

            def render_GET(self, request: Any) -> bytes:
                raise RuntimeError("boom")

        class Echo(Resource):
            isLeaf = True

            def render_GET(self, request: Any) -> bytes:
                return repr((request.prepath, request.postpath)).encode("ascii")

        root = Resource()
        root.putChild(b"data", Data(b"hello", "text/plain"))
        root.putChild(b"echo", Echo())
        root.putChild(b"boom", Boom())
        root.putChild(
            b"gz", EncodingResourceWrapper(Data(b"z" * 200, "text/plain"), [GzipEncoderFactory()])
        )
        # On a clock of its own: the channels' idle timers must not be left
        # on the global reactor for a later test that runs it.
        site = Site(root, reactor=MemoryReactorClock())
        site.displayTracebacks = False
        return site

    def answer(self, factory: Any, raw: bytes, mask: bool = True) -> bytes:
        import re

        site = self.site()
        site.requestFactory = factory
        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(raw)
        sent: bytes = transport.value()
        return re.sub(rb"Date: [^\r]*", b"Date: -", sent) if mask else sent

    def test_same_answers(self) -> None:
        from twisted.web import server

        class Ours(_twisted.RequestBase):
            pass

        requests = [
            b"GET /data HTTP/1.1\r\nHost: t\r\n\r\n",
            b"GET /echo/a%20b/%2F/c?x=1 HTTP/1.1\r\nHost: t\r\n\r\n",
            b"GET /nothing HTTP/1.1\r\nHost: t\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n",
            b"GET /gz HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n",
            b"GET /gz HTTP/1.1\r\nHost: t\r\n\r\n",
            b"GET /boom HTTP/1.1\r\nHost: t\r\n\r\n",
            b"HEAD /data HTTP/1.0\r\n\r\n",
        ]
        for raw in requests:
            theirs = self.answer(server.Request, raw)
            self.assertIn(b"Server: " + server.version, theirs)
            self.assertEqual(self.answer(Ours, raw), theirs, raw)
        # The failing resource's error, logged once by each.
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)

    def test_date(self) -> None:
        """Date: the site's http_date when it has one, else twisted.web's for now."""
        from notificator.http.request import HTTPDate

        class Ours(_twisted.RequestBase):
            pass

        site = self.site()
        site.requestFactory = Ours
        site.http_date = HTTPDate(lambda: 784111777.5)  # type: ignore[attr-defined]
        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(b"GET /data HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertIn(b"\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n", transport.value())
        before = http.datetimeToString()
        raw = self.answer(Ours, b"GET /data HTTP/1.1\r\nHost: t\r\n\r\n", mask=False)
        after = http.datetimeToString()
        self.assertTrue(
            b"\r\nDate: %s\r\n" % before in raw or b"\r\nDate: %s\r\n" % after in raw, raw
        )


class HTTPDateTests(SynchronousTestCase):
    """L{notificator.http.request.HTTPDate} gives twisted.web's C{datetimeToString()}."""

    def test_each_second(self) -> None:
        from notificator.http.request import HTTPDate

        now = [1_700_000_000.0]
        date = HTTPDate(lambda: now[0])
        for step in (0.0, 0.25, 0.74, 1.0, 1.999, 59.5, 3600.01, 86400.9):
            now[0] = 1_700_000_000.0 + step
            self.assertEqual(date(), http.datetimeToString(now[0]), step)

    def test_wall_clock(self) -> None:
        """By default the wall clock, as twisted.web's."""
        from notificator.http.request import HTTPDate

        date = HTTPDate()
        before = http.datetimeToString()
        value = date()
        after = http.datetimeToString()
        self.assertIn(value, (before, after))


class WriteChunkTests(SynchronousTestCase):
    """
    L{_twisted.RequestBase.write_chunk} writes what twisted.web's
    C{Request.write} writes, byte for byte, and leaves the request in the
    same state (C{startedWriting}, C{chunked}, C{sentLength}, the response
    headers), for a stream's first chunk (its head with it) and the chunks
    after it, and for every kind of response it hands to twisted.web's own.
    """

    def request(self, channel_kind: str, raw: bytes) -> tuple[Any, StringTransport]:
        held: list[Any] = []

        class Held(_twisted.RequestBase):
            def process(self) -> None:
                held.append(self)  # kept open, as a stream's is

        channel = (
            http.HTTPChannel()
            if channel_kind == "stock"
            else fast.Channel(fast.WriteBatch(MemoryReactorClock()))
        )
        channel.site = Site(Data(b"", "text/plain"))  # type: ignore[attr-defined]
        channel.requestFactory = Held  # type: ignore[assignment]
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(raw)
        return held[0], transport

    def state(self, request: Any) -> tuple[Any, ...]:
        return (
            request.startedWriting,
            request.chunked,
            request.sentLength,
            list(request.responseHeaders.getAllRawHeaders()),
        )

    def check(self, raw: bytes, prepare: Any) -> None:
        for kind in ("stock", "fast"):
            sent = []
            for write in ("write", "write_chunk"):
                request, transport = self.request(kind, raw)
                prepare(request)
                for data in (b"retry: 3000\n\n", b"", b"event: x\ndata: 1\n\n"):
                    getattr(request, write)(data)
                sent.append((transport.value(), self.state(request)))
            self.assertEqual(sent[1], sent[0], (kind, raw))

    def stream_head(self, request: Any) -> None:
        request.setHeader(b"vary", b"Origin")
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")

    GET = b"GET /sse/u1 HTTP/1.1\r\nHost: t\r\n\r\n"

    def test_stream(self) -> None:
        """A stream's response: its head, then its chunks."""
        self.check(self.GET, self.stream_head)

    def test_others(self) -> None:
        """Responses write_chunk leaves to twisted.web: the same bytes."""

        def but(change: Any) -> Any:
            def prepare(request: Any) -> None:
                self.stream_head(request)
                change(request)

            return prepare

        cases = [
            (self.GET, lambda r: None),  # no Content-Type: twisted.web's default
            (self.GET, but(lambda r: r.setHeader(b"content-length", b"40"))),
            (self.GET, but(lambda r: r.setResponseCode(204))),
            (self.GET, but(lambda r: r.setResponseCode(404))),
            (self.GET, but(lambda r: r.addCookie(b"a", b"b"))),
            (self.GET, but(lambda r: r.setETag(b"x"))),
            (self.GET, but(lambda r: r.setLastModified(1_700_000_000))),
            (b"GET /sse/u1 HTTP/1.0\r\nHost: t\r\n\r\n", self.stream_head),
            (b"HEAD /sse/u1 HTTP/1.1\r\nHost: t\r\n\r\n", self.stream_head),
            (b"POST /sse/u1 HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", self.stream_head),
        ]
        for raw, prepare in cases:
            self.check(raw, prepare)

    def test_encoder(self) -> None:
        """A response with an encoder (gzip): twisted.web's write, which encodes."""
        from twisted.web.server import GzipEncoderFactory

        def prepare(request: Any) -> None:
            self.stream_head(request)
            request.requestHeaders.setRawHeaders(b"accept-encoding", [b"gzip"])
            request._encoder = GzipEncoderFactory().encoderForRequest(request)

        for kind in ("stock", "fast"):
            request, transport = self.request(kind, self.GET)
            prepare(request)
            request.write_chunk(b"data: 1\n\n")
            request.finish()
            self.assertIn(b"Content-Encoding: gzip", transport.value())

    def test_finished_and_lost(self) -> None:
        """After finish(): twisted.web's error; after the connection is lost: nothing written."""
        request, transport = self.request("fast", self.GET)
        self.stream_head(request)
        request.write_chunk(b"data: 1\n\n")
        request.finish()
        self.assertRaises(RuntimeError, request.write_chunk, b"data: 2\n\n")
        request, transport = self.request("fast", self.GET)
        self.stream_head(request)
        request.connectionLost(Failure(ConnectionDone()))
        request.write_chunk(b"data: 1\n\n")
        self.assertEqual(transport.value(), b"")


class RespondTests(SynchronousTestCase):
    """
    L{_twisted.RequestBase.respond} answers as twisted.web's
    C{server.Request.render} answers the bytes a resource returns: the same
    bytes, the same request state, the same access-log line, for the
    answers it writes itself and those it leaves to twisted.web's C{write}.
    """

    def answer(self, raw: bytes, prepare: Any, respond: bool) -> tuple[bytes, tuple[Any, ...]]:
        import re

        from twisted.web.resource import Resource
        from twisted.web.server import NOT_DONE_YET

        seen: list[Any] = []

        class Answer(Resource):
            isLeaf = True

            def render(self, request: Any) -> Any:
                seen.append(request)
                body = prepare(request)
                if respond:
                    request.respond(body)
                    return NOT_DONE_YET
                return body

        logged: list[Any] = []
        site = Site(Answer(), reactor=MemoryReactorClock())
        site.requestFactory = _twisted.RequestBase
        site.log = lambda request: logged.append(  # type: ignore[method-assign]
            (request.code, request.sentLength, request.method)
        )
        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(raw)
        request = seen[0]
        state = (
            request.startedWriting,
            request.finished,
            request.chunked,
            request.sentLength,
            # The Date each answer was given: the two may straddle a second.
            [
                (name, [b"-"] if name == b"Date" else values)
                for name, values in request.responseHeaders.getAllRawHeaders()
            ],
            logged,
            transport.disconnecting,
        )
        return re.sub(rb"Date: [^\r]*", b"Date: -", transport.value()), state

    def json(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        request.setHeader(b"content-length", b"11")
        return b'{"a": true}'

    def check(self, raw: bytes, prepare: Any) -> None:
        self.assertEqual(self.answer(raw, prepare, True), self.answer(raw, prepare, False), raw)

    POST = b"POST /webNotification HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nx=1"

    def test_json_answer(self) -> None:
        """A publish's answer, and with the next request on the connection."""
        self.check(self.POST, self.json)
        self.check(self.POST + self.POST, self.json)

    def test_others(self) -> None:
        """Answers left to twisted.web's write: the same bytes."""

        def but(change: Any, body: bytes | None = None) -> Any:
            def prepare(request: Any) -> bytes:
                sent = self.json(request)
                change(request)
                return sent if body is None else body

            return prepare

        cases = [
            (self.POST, lambda r: b"no content type"),
            (self.POST, but(lambda r: r.setResponseCode(204), b"")),
            (self.POST, but(lambda r: r.setResponseCode(403))),
            (self.POST, but(lambda r: r.addCookie(b"a", b"b"))),
            (self.POST, but(lambda r: r.setETag(b"x"))),
            (self.POST, but(lambda r: r.setLastModified(1_700_000_000))),
            (self.POST, but(lambda r: r.setHeader(b"connection", b"close"))),
            (self.POST, but(lambda r: None, b"")),
            (b"POST /x HTTP/1.0\r\nContent-Length: 0\r\n\r\n", self.json),
            (b"HEAD /x HTTP/1.1\r\nHost: t\r\n\r\n", but(lambda r: None, b"")),
            (b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n", self.json),
        ]
        for raw, prepare in cases:
            self.check(raw, prepare)


class InitTests(SynchronousTestCase):
    """
    L{_twisted.RequestBase.__init__} builds the request twisted.web's
    C{server.Request.__init__} builds: the same attributes (its private
    C{_parsePOSTFormSubmission} and C{_adapterCache} among them), in the
    same order, with the same values.  A Twisted that adds one fails here.
    """

    def check(self, channel: Any, *args: Any, **kwargs: Any) -> None:
        from twisted.web import server

        theirs = server.Request(channel, *args, **kwargs)
        ours = _twisted.RequestBase(channel, *args, **kwargs)
        self.assertEqual(list(vars(ours)), list(vars(theirs)))
        for name, value in vars(theirs).items():
            self.assertEqual(getattr(ours, name), value, name)
        self.assertIsNot(ours.requestHeaders, theirs.requestHeaders)

    def test_same_request(self) -> None:
        for make in (
            http.HTTPChannel,
            lambda: fast.Channel(fast.WriteBatch(MemoryReactorClock())),
        ):
            channel = make()
            channel.site = Site(Data(b"", "text/plain"))  # type: ignore[attr-defined]
            channel.makeConnection(StringTransport())
            self.check(channel, parsePOSTFormSubmission=True)
            self.check(channel, parsePOSTFormSubmission=False)
            self.check(channel, 0, parsePOSTFormSubmission=True)
            self.check(channel, 1, parsePOSTFormSubmission=False)

    def test_server_request(self) -> None:
        """The server's request: twisted.web's with parsePOSTFormSubmission false."""
        from twisted.web import server

        from notificator.http.request import Request
        from notificator.http.site import Site as OurSite

        channel = http.HTTPChannel()
        channel.site = OurSite(Data(b"", "text/plain"), reactor=MemoryReactorClock())  # type: ignore[attr-defined]
        channel.makeConnection(StringTransport())
        theirs = server.Request(channel, 0, parsePOSTFormSubmission=False)
        ours = Request(channel, 0)
        self.assertEqual(list(vars(ours))[: len(vars(theirs))], list(vars(theirs)))
        self.assertFalse(ours._parsePOSTFormSubmission)


class HeadHooksTests(SynchronousTestCase):
    """
    What C{HTTPChannel} and twisted.web's C{Request} do when a head is
    read, as L{_twisted.ChannelBase} (C{allHeadersReceived},
    C{checkPersistence}) and L{_twisted.RequestBase} (C{parseCookies},
    C{requestReceived}) do it, reading headers from C{Headers._rawHeaders}
    by name: checked against twisted.web's own methods.
    """

    @given(
        st.lists(
            st.one_of(
                st.sampled_from([b"close", b"keep-alive", b"Close", b"Upgrade, close", b""]),
                st.binary(max_size=12),
            ),
            max_size=2,
        ),
        st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]),
    )
    def test_check_persistence(self, values: list[bytes], version: bytes) -> None:
        results = []
        for channel in (http.HTTPChannel(), fast.Channel(fast.WriteBatch(MemoryReactorClock()))):
            channel.makeConnection(StringTransport())
            request = http.Request(channel)
            for value in values:
                request.requestHeaders.addRawHeader(b"connection", value)
            persistent = channel.checkPersistence(request, version)
            results.append((persistent, list(request.responseHeaders.getAllRawHeaders())))
        self.assertEqual(results[1], results[0])

    def test_expect_continue(self) -> None:
        """100 Continue, and persistence, as HTTPChannel decides them."""
        heads = [
            b"POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: t\r\nExpect: nothing\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 2\r\n\r\n",
        ]
        for head in heads:
            seen = []
            writes = fast.WriteBatch(MemoryReactorClock())
            for channel in (http.HTTPChannel(), fast.Channel(writes)):
                channel.site = Site(Data(b"", "text/plain"))  # type: ignore[attr-defined]
                channel.requestFactory = _twisted.RequestBase  # type: ignore[assignment]
                transport = StringTransport()
                channel.makeConnection(transport)
                # Line by line for one, in one read for the other.
                channel.dataReceived(head)
                writes.flush()  # the end of the reactor pass
                seen.append((transport.value(), channel.persistent))
            self.assertEqual(seen[1], seen[0], head)

    @given(st.lists(st.one_of(st.binary(max_size=30), st.sampled_from(
        [b"a=b; c=d", b"a=b;c=d;", b"x", b"=y", b"a==b", b" sp = v ;k=v2", b""]
    )), max_size=3))  # fmt: skip
    def test_parse_cookies(self, values: list[bytes]) -> None:
        channel = http.HTTPChannel()
        channel.makeConnection(StringTransport())
        theirs = http.Request(channel)
        ours = _twisted.RequestBase(channel)
        for request in (theirs, ours):
            for value in values:
                request.requestHeaders.addRawHeader(b"cookie", value)
        theirs.parseCookies()
        ours.parseCookies()
        self.assertEqual(list(ours.received_cookies.items()), list(theirs.received_cookies.items()))

    @given(
        st.sampled_from([b"GET", b"POST", b"HEAD"]),
        st.one_of(
            st.sampled_from([b"/", b"/sse/u1", b"/x?a=1&b=2&a=3", b"/x?", b"/?a", b"/x?a=%41+b"]),
            st.binary(min_size=1, max_size=30).map(lambda b: b"/" + b),
        ),
        st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]),
        st.booleans(),
    )
    def test_request_received(self, method: bytes, path: bytes, version: bytes, form: bool) -> None:
        """The same request state; twisted.web's own when it parses forms."""
        from io import BytesIO

        processed = []

        class Theirs(http.Request):
            def process(self) -> None:
                processed.append(self)

        class Ours(_twisted.RequestBase):
            def process(self) -> None:
                processed.append(self)

        channel = http.HTTPChannel()
        channel.makeConnection(StringTransport())
        states = []
        for kind in (Theirs, Ours):
            request = kind(channel, parsePOSTFormSubmission=form)
            request.requestHeaders.setRawHeaders(
                b"content-type", [b"application/x-www-form-urlencoded"]
            )
            request.content = BytesIO(b"f=1&g=2")
            request.content.seek(0, 2)
            request.requestReceived(method, path, version)
            states.append(
                (
                    request.method,
                    request.uri,
                    request.path,
                    request.clientproto,
                    request.args,
                    request.content.tell(),
                )
            )
        self.assertEqual(len(processed), 2)
        self.assertEqual(states[1], states[0])


class _Recorded:
    """A protocol factory that records what the accept loop hands it."""

    def __init__(self, fail: BaseException | None = None, refuse: bool = False) -> None:
        from twisted.internet.protocol import Protocol

        self.built: list[tuple[Any, Any]] = []
        self.fail = fail
        self.refuse = refuse
        self.protocol = Protocol

    def doStart(self) -> None:
        pass

    def doStop(self) -> None:
        pass

    def buildProtocol(self, addr: Any) -> Any:
        if self.fail is not None:
            fail, self.fail = self.fail, None
            raise fail
        if self.refuse:
            return None
        protocol = self.protocol()
        self.built.append((addr, protocol))
        return protocol


class FastPortTests(SynchronousTestCase):
    """
    L{notificator.http._twisted.FastPort} accepts as Twisted's C{tcp.Port}
    does: checked side by side with the real class, on real sockets (the
    port's reactor a memory one, its C{doRead} called by hand, as the
    reactor calls it when the listening socket is readable).
    """

    def listen(self, fast: bool, factory: Any, interface: str = "127.0.0.1") -> Any:
        from twisted.internet import tcp

        port = tcp.Port(0, factory, interface=interface, reactor=MemoryReactorClock())
        port.startListening()
        self.addCleanup(port.socket.close)
        if fast:
            _twisted.fast_accept(port)
        return port

    def clients(self, port: Any, n: int, family: int | None = None) -> list[Any]:
        import socket

        host = port.getHost()
        made = []
        for _ in range(n):
            sock = socket.socket(family or socket.AF_INET, socket.SOCK_STREAM)
            self.addCleanup(sock.close)
            sock.settimeout(5)
            sock.connect((host.host, host.port))
            made.append(sock)
        return made

    def accepted(self, factory: _Recorded) -> list[tuple[Any, ...]]:
        """What each accepted connection looks like: address, transport, socket."""
        import os

        seen = []
        for addr, protocol in factory.built:
            transport = protocol.transport
            self.addCleanup(transport.socket.close)
            seen.append(
                (
                    type(addr),
                    addr.host,
                    type(transport),
                    transport.sessionno,
                    transport.client[0],
                    transport.logstr.split(",", 1)[1],
                    transport.connected,
                    transport.socket.family,
                    transport.socket.type,
                    transport.socket.getblocking(),
                    os.get_inheritable(transport.socket.fileno()),
                )
            )
        return seen

    def test_fast_accept_only_twisteds_port(self) -> None:
        """Twisted's tcp.Port becomes a FastPort; any other port is left as it is."""
        from twisted.internet import tcp

        port = self.listen(True, _Recorded())
        self.assertIs(type(port), _twisted.FastPort)

        class Other(tcp.Port):
            pass

        other = Other(0, _Recorded(), interface="127.0.0.1", reactor=MemoryReactorClock())
        _twisted.fast_accept(other)
        self.assertIs(type(other), Other)
        sentinel = object()
        _twisted.fast_accept(sentinel)

    def test_accepts_as_twisted(self) -> None:
        """The same protocols, addresses, transports and sockets, in the same order."""
        results = []
        for leaner in (False, True):
            factory = _Recorded()
            port = self.listen(leaner, factory)
            socks = self.clients(port, 3)
            port.doRead()
            seen = self.accepted(factory)
            self.assertEqual(len(seen), 3)
            ports = sorted(addr.port for addr, _ in factory.built)
            self.assertEqual(ports, sorted(s.getsockname()[1] for s in socks))
            results.append((seen, port.numberAccepts, port.sessionno))
        self.assertEqual(results[1], results[0])
        self.assertEqual(results[0][0][0][3], 0)  # session numbers from 0
        self.assertEqual(results[0][1:], (3, 3))

    def test_ipv6_as_twisted(self) -> None:
        """Over IPv6 the address is the one Twisted makes (getnameinfo's host)."""
        import socket

        from twisted.internet.address import IPv6Address

        if not socket.has_ipv6:
            raise SkipTest("no IPv6")
        results = []
        for leaner in (False, True):
            factory = _Recorded()
            try:
                port = self.listen(leaner, factory, interface="::1")
            except Exception as e:
                raise SkipTest(f"no ::1 here: {e}")
            self.clients(port, 2, socket.AF_INET6)
            port.doRead()
            seen = self.accepted(factory)
            self.assertEqual([s[:2] for s in seen], [(IPv6Address, "::1")] * 2)
            results.append(seen)
        self.assertEqual(results[1], results[0])

    def test_grows_and_shrinks_numberAccepts(self) -> None:
        """A pass that takes numberAccepts connections grows it by 20; a shorter one sets it."""
        for leaner in (False, True):
            factory = _Recorded()
            port = self.listen(leaner, factory)
            port.numberAccepts = 2
            self.clients(port, 3)
            port.doRead()
            self.assertEqual((len(factory.built), port.numberAccepts), (2, 22))
            port.doRead()
            self.assertEqual((len(factory.built), port.numberAccepts), (3, 1))
            port.doRead()  # nothing waiting
            self.assertEqual((len(factory.built), port.numberAccepts), (3, 1))
            self.accepted(factory)

    def test_refused_connection_is_closed(self) -> None:
        """A factory that returns None: the connection is closed, the loop goes on."""
        factory = _Recorded(refuse=True)
        port = self.listen(True, factory)
        (sock,) = self.clients(port, 1)
        port.doRead()
        self.assertEqual(factory.built, [])
        self.assertEqual(sock.recv(10), b"")
        self.assertEqual(port.sessionno, 0)

    def test_protocol_error_logged_port_listens(self) -> None:
        """An exception from the factory is logged as Twisted logs it; the next connection is served."""
        factory = _Recorded(fail=ZeroDivisionError())
        port = self.listen(True, factory)
        self.clients(port, 1)
        port.doRead()
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.clients(port, 1)
        port.doRead()
        self.assertEqual(len(self.accepted(factory)), 1)
        self.assertTrue(port.connected)

    def test_accept_error_goes_to_twisted(self) -> None:
        """An accept that fails other than 'none waiting' hands the pass to tcp.Port.doRead."""
        import errno

        from twisted.internet import tcp

        port = self.listen(True, _Recorded())
        real = port.socket

        class Failing:
            family = real.family
            type = real.type

            def _accept(self) -> Any:
                raise OSError(errno.ENOBUFS, "no buffers")

        port.socket = Failing()
        self.addCleanup(setattr, port, "socket", real)
        handed: list[Any] = []
        self.patch(tcp.Port, "doRead", lambda self: handed.append(self))
        port.doRead()
        self.assertEqual(handed, [port])


class FastPollTests(SynchronousTestCase):
    """
    L{notificator.http._twisted.fast_poll} on a real (not running)
    C{EPollReactor}: a ready descriptor is read, written and lost as
    Twisted's loop does it, without its log context.
    """

    def reactor(self) -> Any:
        from twisted.internet.epollreactor import EPollReactor

        reactor = EPollReactor()

        def close() -> None:
            reactor.waker.connectionLost(None)
            reactor._poller.close()

        self.addCleanup(close)
        return reactor

    def reader(self, reactor: Any, fail: BaseException | None = None) -> tuple[Any, Any, Any]:
        """A FileDescriptor over one end of a socket pair, recording its reads and loss."""
        import socket

        from twisted.internet.abstract import FileDescriptor

        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        ours.setblocking(False)
        record: dict[str, list[Any]] = {"read": [], "lost": []}

        class Reader(FileDescriptor):
            def fileno(self) -> int:
                return ours.fileno()

            def logPrefix(self) -> str:
                return "Reader,7,peer"

            def doRead(self) -> Any:
                data = ours.recv(100)
                record["read"].append(data)
                return None if data else ConnectionDone()

            def connectionLost(self, reason: Failure) -> None:
                record["lost"].append(reason)
                FileDescriptor.connectionLost(self, reason)
                if fail is not None:
                    raise fail

        reader = Reader(reactor)
        reader.startReading()
        return reader, theirs, record

    def test_only_twisteds_epoll_loop(self) -> None:
        """Another reactor, or an epoll reactor with a loop of its own: nothing done."""
        from twisted.internet.epollreactor import EPollReactor

        self.assertIsNone(_twisted.fast_poll(MemoryReactorClock()))

        class Own(EPollReactor):
            def doPoll(self, timeout: float | None) -> None:
                pass

        own = Own()
        self.addCleanup(own._poller.close)
        self.addCleanup(own.waker.connectionLost, None)
        self.assertIsNone(_twisted.fast_poll(own))
        self.assertNotIn("doIteration", vars(own))

    def test_reads_as_twisted_and_undoes(self) -> None:
        """Data and the close reach the descriptor as on Twisted's loop; undo puts that loop back."""
        from twisted.internet.epollreactor import EPollReactor

        reactor = self.reactor()
        undo = _twisted.fast_poll(reactor)
        assert undo is not None
        self.assertIn("doIteration", vars(reactor))
        self.assertIsNone(_twisted.fast_poll(reactor))  # once
        reader, theirs, record = self.reader(reactor)
        theirs.sendall(b"hello")
        reactor.doIteration(1)
        self.assertEqual(record["read"], [b"hello"])
        theirs.close()
        reactor.doIteration(1)
        self.assertEqual(len(record["lost"]), 1)
        self.assertTrue(record["lost"][0].check(ConnectionDone))
        self.assertNotIn(reader, reactor.getReaders())
        undo()
        self.assertNotIn("doIteration", vars(reactor))
        self.assertEqual(reactor.doIteration.__func__, EPollReactor.doPoll)

    def test_escaping_error_logged_with_prefix(self) -> None:
        """What _doReadOrWrite lets out is logged with the connection's prefix; the pass goes on."""
        from twisted.logger import globalLogPublisher

        reactor = self.reactor()
        _twisted.fast_poll(reactor)
        _, bad, _ = self.reader(reactor, fail=ZeroDivisionError())
        _, good, record = self.reader(reactor)
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        bad.close()
        good.sendall(b"x")
        for _ in range(3):
            reactor.doIteration(0.1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(record["read"], [b"x"])
        self.assertIn("Reader,7,peer", [e.get("log_system") for e in events])

    def test_interrupted_poll_returns(self) -> None:
        """EINTR ends the pass quietly; another error is raised, as Twisted's loop does."""
        import errno

        reactor = self.reactor()
        _twisted.fast_poll(reactor)
        real = reactor._poller

        class Poller:
            def __init__(self, error: int) -> None:
                self.error = error

            def poll(self, timeout: float, most: int) -> Any:
                raise OSError(self.error, "poll")

        self.addCleanup(setattr, reactor, "_poller", real)
        reactor._poller = Poller(errno.EINTR)
        reactor.doIteration(0)
        reactor._poller = Poller(errno.EBADF)
        self.assertRaises(OSError, reactor.doIteration, 0)


class GenericChannelTests(SynchronousTestCase):
    """
    L{notificator.http._twisted.generic_channel} sets up a channel and its
    HTTP/2 switch as C{Site.buildProtocol} does, and
    L{notificator.http._twisted.plain_channel} unwraps it only on plain TCP.
    """

    def site(self) -> Site:
        site = Site(Data(b"ok", "text/plain"), reactor=MemoryReactorClock())
        site.timeOut = 123
        return site

    def test_same_as_build_protocol(self) -> None:
        """Channel and wrapper answer the same as those Site.buildProtocol makes."""
        site = self.site()
        stock = site.buildProtocol(None)
        ours = _twisted.generic_channel(http.HTTPChannel(), site)
        names = ("factory", "requestFactory", "site", "callLater", "timeOut")
        for name in names:
            self.assertEqual(getattr(ours, name), getattr(stock, name), name)
            self.assertEqual(getattr(ours._channel, name), getattr(stock._channel, name), name)
            self.assertEqual(getattr(ours, "_" + name), getattr(stock, "_" + name), name)

    def test_switches_to_h2_set_up(self) -> None:
        """Over a transport that negotiated h2, the HTTP/2 channel gets the site's settings."""
        import twisted.internet
        from h2.config import H2Configuration
        from h2.connection import H2Connection as Client
        from twisted.internet import reactor as installed

        site = self.site()
        self.assertIsNotNone(installed)
        # H2Connection's send loop runs on the global reactor.
        self.patch(twisted.internet, "reactor", site.reactor)
        protocol = _twisted.generic_channel(http.HTTPChannel(), site)
        transport = StringTransport()
        transport.negotiatedProtocol = b"h2"  # type: ignore[attr-defined]
        protocol.makeConnection(transport)
        client = Client(H2Configuration(client_side=True))
        client.initiate_connection()
        protocol.dataReceived(client.data_to_send())
        from twisted.web._http2 import H2Connection

        conn = protocol._channel
        self.assertIsInstance(conn, H2Connection)
        self.assertIs(conn.site, site)
        self.assertIs(conn.factory, site)
        self.assertIs(conn.requestFactory, site.requestFactory)
        self.assertEqual(conn.timeOut, 123)
        self.assertEqual(conn.callLater, site.reactor.callLater)
        protocol.connectionLost(Failure(ConnectionDone()))
        site.reactor.advance(0)

    def test_plain_channel(self) -> None:
        """The channel on a plain tcp.Server; the wrapper on anything else."""
        import socket

        from twisted.internet import tcp

        from tests.support import NegotiatedH2

        site = self.site()
        protocol = _twisted.generic_channel(http.HTTPChannel(), site)
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        reactor = MemoryReactorClock()
        port = type("Port", (), {"_realPortNumber": 3000})()
        plain = tcp.Server(ours, protocol, ("127.0.0.1", 1), port, 1, reactor)
        self.assertIs(_twisted.plain_channel(protocol, plain), protocol._channel)
        h2 = NegotiatedH2(ours, protocol, ("127.0.0.1", 1), port, 2, reactor)
        self.assertIs(_twisted.plain_channel(protocol, h2), protocol)
        self.assertIs(_twisted.plain_channel(protocol, StringTransport()), protocol)
        channel = http.HTTPChannel()
        self.assertIs(_twisted.plain_channel(channel, plain), channel)
