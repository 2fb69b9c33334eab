"""
Tests for L{notificator.connections}: the HTTP/2 idle clock
(C{limits.headerTimeout} while an HTTP/2 connection has no open stream),
with the fast channel and
with twisted.web's stock one, over real C{tcp.Server} transports whose
sockets are fakes (L{tests.support.InMemoryServer}) and, for HTTP/2,
twisted.web's real C{H2Connection} driven by the C{h2} package's client, on
a L{MemoryReactorClock}.  The head and body clocks of HTTP/1.x are in
L{tests.test_limits}; the end-to-end tests in L{tests.test_limits_e2e}.
"""

from __future__ import annotations

from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import twisted.internet
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site

from notificator import channel, connections, limits, tap, web
from tests.support import BothChannels, Conn, Parts, config_with


def gone(conn: Conn) -> bool:
    """The server closed C{conn} (or is aborting it)."""
    t = conn.transport
    return bool(t._aborting or not t.connected)


# --- HTTP/2: no open stream for limits.headerTimeout -----------------------------------------


class HTTP2IdleTests(BothChannels, SynchronousTestCase):
    """
    An HTTP/2 connection is closed (GOAWAY) when it has had no open stream
    for limits.headerTimeout, whatever frames it sends; never while a
    stream is open.
    """

    def setUp(self) -> None:
        self.s = self.server(header_timeout=10)
        # twisted.web's HTTP/2 channel, built when ALPN said h2, takes the
        # global reactor for its send loop: the memory reactor instead.
        self.patch(twisted.internet, "reactor", self.s.reactor)
        self.received: list[Any] = []
        self.read = 0

    def h2(self) -> tuple[Conn, Any]:
        conn = self.s.connect()
        conn.transport.negotiatedProtocol = b"h2"  # type: ignore[attr-defined]
        client = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        client.initiate_connection()
        conn.receive(client.data_to_send())
        return conn, client

    def advance(self, seconds: float, conn: Conn, client: Any | None = None) -> None:
        """Let C{seconds} pass in steps of one; C{client}: PING, SETTINGS and WINDOW_UPDATE each step."""
        for _ in range(int(seconds)):
            self.s.reactor.advance(1)
            if client is not None and not gone(conn):
                client.ping(b"12345678")
                client.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 50})
                client.increment_flow_control_window(1)
                conn.receive(client.data_to_send())
            conn.pump()
        rest = seconds - int(seconds)
        if rest:
            self.s.reactor.advance(rest)
            conn.pump()

    def events(self, conn: Conn, client: Any) -> list[Any]:
        """What the server sent so far, as C{client} reads it (every event since the start)."""
        sent = conn.text()
        self.received += client.receive_data(sent[self.read :])
        self.read = len(sent)
        return self.received

    def assert_went_away(self, conn: Conn, client: Any) -> None:
        events = self.events(conn, client)
        [goaway] = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
        self.assertEqual(goaway.error_code, h2.errors.ErrorCodes.NO_ERROR)
        self.assertTrue(conn.transport.disconnecting or not conn.transport.connected)
        [event] = self.s.logged("closed the HTTP/2 connection")
        self.assertEqual((event["peer"], event["seconds"]), ("127.0.0.1", 10))

    def test_pings_do_not_keep_it_open(self) -> None:
        """A connection that only sends PING, SETTINGS and WINDOW_UPDATE is closed after 10 s."""
        conn, client = self.h2()
        self.advance(9, conn, client)
        self.s.reactor.advance(0.9)
        self.assertFalse(gone(conn) or conn.transport.disconnecting)
        self.advance(0.2, conn)
        self.assert_went_away(conn, client)

    def test_never_a_request(self) -> None:
        """A connection that sends its preface and nothing else is closed after 10 s."""
        conn, client = self.h2()
        self.advance(9.9, conn)
        self.assertFalse(conn.transport.disconnecting)
        self.advance(0.2, conn)
        self.assert_went_away(conn, client)

    def test_open_stream_keeps_it_open(self) -> None:
        """A connection with an event stream stays; 10 s after the stream ends, it goes."""
        conn, client = self.h2()
        client.send_headers(
            1,
            [(":method", "GET"), (":scheme", "https"), (":authority", "t"), (":path", "/sse/u1")],
            end_stream=True,
        )
        conn.receive(client.data_to_send())
        self.assertEqual(self.s.hub.stream_count, 1)
        self.advance(120, conn, client)
        self.assertFalse(conn.transport.disconnecting)
        self.assertEqual(self.s.parts.publish("u1", "7").delivered, 1)
        client.reset_stream(1)
        conn.receive(client.data_to_send())
        self.assertEqual(self.s.hub.stream_count, 0)
        self.advance(9.9, conn, client)
        self.assertFalse(conn.transport.disconnecting)
        self.advance(0.2, conn)
        self.assert_went_away(conn, client)

    def test_clock_starts_when_the_last_stream_is_done(self) -> None:
        """A publish over HTTP/2: the connection goes 10 s after the answer, not after it opened."""
        conn, client = self.h2()
        self.advance(8, conn)
        client.send_headers(
            1,
            [
                (":method", "POST"),
                (":scheme", "https"),
                (":authority", "t"),
                (":path", "/webNotification"),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
        )
        conn.receive(client.data_to_send())
        self.advance(5, conn)
        client.send_data(1, b"id=notify_u1&data=1", end_stream=True)
        conn.receive(client.data_to_send())
        for _ in range(5):
            self.s.reactor.advance(0)
        [answer] = [
            e for e in self.events(conn, client) if isinstance(e, h2.events.ResponseReceived)
        ]
        self.assertEqual(dict(answer.headers)[":status"], "200")
        self.advance(9.8, conn)
        self.assertFalse(conn.transport.disconnecting)
        self.advance(0.3, conn)
        self.assert_went_away(conn, client)


class HTTP2IdleStockTests(HTTP2IdleTests):
    fast = False


# --- the wiring ------------------------------------------------------------------------------


class WiringTests(SynchronousTestCase):
    def test_wraps_the_set_up_protocol(self) -> None:
        """The wrapped protocol is the one the site built and set up."""
        site = Site(Parts(Clock()).resource)
        site.requestFactory = limits.Request
        watched = connections.Connections(10, 30, Clock())
        connections.watch(site, watched)
        proxy = site.buildProtocol(None)
        self.assertIsInstance(proxy, connections.ConnectionProtocol)
        inner = proxy.wrappedProtocol
        self.assertIs(inner.site, site)
        self.assertIs(inner.requestFactory, limits.Request)
        self.assertEqual(inner.timeOut, site.timeOut)

    def test_service_wiring(self) -> None:
        """makeService's site builds timed connections, in both modes, with one service."""
        for fast in (True, False):
            reactor = MemoryReactorClock()
            cfg = config_with(
                server={"fast_channel": fast},
                limits={"header_timeout": 3, "body_timeout": 4},
            )
            root = tap.makeService(
                {"loaded": cfg, "listen": ["tcp:0"], "env": "x"}, reactor=reactor
            )
            root.startService()
            self.addCleanup(root.stopService)
            site = reactor.tcpServers[0][1]
            self.assertIsInstance(site.buildProtocol(None), connections.ConnectionProtocol)
            watched = tap.find(root, connections.Connections)
            self.assertEqual((watched.seconds, watched.body_seconds), (3, 4))
            self.assertEqual(tap.find(root, channel.WriteBatch) is not None, fast)
            base = web.Request if fast else web.StockRequest
            self.assertTrue(issubclass(site.requestFactory, base))
            self.assertEqual(issubclass(site.requestFactory, web.Request), fast)
            self.assertIs(site.requestFactory.limits.connections, watched)
