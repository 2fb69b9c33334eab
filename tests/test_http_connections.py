"""
Tests for L{notificator.http.connections}: the connection cap
(C{limits.connections}) and the HTTP/2 idle clock (C{limits.headerTimeout}
while an HTTP/2 connection has no open stream), with the fast channel and
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
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from notificator import tap
from notificator.config import defaults
from notificator.http import connections
from notificator.http.fast import WriteBatch
from notificator.http.request import Limits, Request
from notificator.http.site import Site
from tests.support import BothChannels, Conn, Parts, config_with

STREAM = b"GET /sse/u1 HTTP/1.1\r\nHost: t\r\n\r\n"
HEALTH = b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n"


def chunked_publish_head() -> bytes:
    return (
        b"POST /webNotification HTTP/1.1\r\nHost: t\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )


def gone(conn: Conn) -> bool:
    """The server closed C{conn} (or is aborting it)."""
    t = conn.transport
    return bool(t._aborting or not t.connected)


# --- limits.connections ----------------------------------------------------------------------


class ConnectionCapTests(BothChannels, SynchronousTestCase):
    """At limits.connections a new connection takes an idle or slow one's place, else is closed."""

    def setUp(self) -> None:
        self.s = self.server(connections=3, header_timeout=10, body_timeout=30)

    def connect(self) -> Conn:
        conn = self.s.connect()
        self.s.reactor.advance(0)  # an abort takes effect on the next pass
        return conn

    def advance(self, seconds: float) -> None:
        self.s.reactor.advance(seconds)
        self.s.pump()

    def test_counts_open_connections(self) -> None:
        """Every open connection counts, whatever it does; a closed one no longer."""
        a = self.connect()
        b = self.connect()
        b.receive(STREAM)
        self.assertEqual(self.s.stats.connections, 2)
        a.close()
        self.assertEqual(self.s.stats.connections, 1)
        self.assertEqual(self.s.stats.dropped, {})

    def test_counted_once(self) -> None:
        """A connection whose transport reports its end twice is uncounted once."""
        a = self.connect()
        self.connect()
        a.close()
        a.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.s.stats.connections, 1)

    def test_idle_connection_makes_room(self) -> None:
        """The connection that has waited longest for a head is closed for the new one."""
        idle = self.connect()
        self.advance(1)
        keep_alive = self.connect()
        keep_alive.receive(HEALTH)
        self.assertIn(b"200 OK", keep_alive.text())
        self.advance(1)
        stream = self.connect()
        stream.receive(STREAM)
        new = self.connect()
        self.assertTrue(gone(idle))
        self.assertFalse(gone(keep_alive) or gone(stream) or gone(new))
        newer = self.connect()  # the keep-alive connection is the next to wait longest
        self.assertTrue(gone(keep_alive))
        self.assertFalse(gone(stream) or gone(new) or gone(newer))
        new.receive(HEALTH)
        self.assertIn(b"HTTP/1.1 200 OK", new.text())
        self.assertEqual(self.s.stats.dropped, {"reclaimed": 2})
        self.assertEqual(self.s.stats.connections, 3)
        [event] = self.s.logged("limits.connections ({cap}) reached")
        self.assertEqual((event["cap"], event["reclaimed"], event["refused"]), (3, 1, 0))

    def test_slow_body_makes_room_when_nothing_waits(self) -> None:
        """With no connection waiting for a head, the oldest unfinished body is closed."""
        slow = self.connect()
        slow.receive(chunked_publish_head())
        self.advance(1)
        slower = self.connect()
        slower.receive(chunked_publish_head())
        stream = self.connect()
        stream.receive(STREAM)
        new = self.connect()
        self.assertTrue(gone(slow))
        self.assertFalse(gone(slower) or gone(stream) or gone(new))
        self.assertEqual(self.s.stats.dropped, {"reclaimed": 1})

    def test_new_connection_closed_when_all_are_busy(self) -> None:
        """Three open streams: a fourth connection is closed at once, and the streams go on."""
        streams = [self.connect() for _ in range(3)]
        for stream in streams:
            stream.receive(STREAM)
        new = self.connect()
        self.assertTrue(gone(new))
        self.assertEqual(new.text(), b"")
        self.assertEqual(self.s.stats.dropped, {"limit": 1})
        self.assertEqual(self.s.stats.connections, 3)
        self.assertEqual(self.s.parts.publish("u1", "7").delivered, 3)
        self.s.pump()
        for stream in streams:
            self.assertFalse(gone(stream))
            self.assertIn(b"data: 7", stream.text())
        [event] = self.s.logged("limits.connections ({cap}) reached")
        self.assertEqual((event["reclaimed"], event["refused"]), (0, 1))

    def test_log_line_at_most_every_ten_seconds(self) -> None:
        """Closes at the cap are logged once, then summed up at most every 10 s."""
        for stream in [self.connect() for _ in range(3)]:
            stream.receive(STREAM)
        for _ in range(5):
            self.connect()
        self.assertEqual(len(self.s.logged("limits.connections ({cap}) reached")), 1)
        self.advance(10)
        self.connect()
        first, second = self.s.logged("limits.connections ({cap}) reached")
        self.assertEqual((first["refused"], second["refused"]), (1, 5))
        self.assertEqual(self.s.stats.dropped, {"limit": 6})

    def test_room_again_once_one_closes(self) -> None:
        """A connection that closes makes room: the next one is not counted as closed."""
        conns = [self.connect() for _ in range(3)]
        for conn in conns:
            conn.receive(STREAM)
        conns[0].close()
        new = self.connect()
        new.receive(HEALTH)
        self.assertIn(b"HTTP/1.1 200 OK", new.text())
        self.assertEqual(self.s.stats.dropped, {})


class ConnectionCapStockTests(ConnectionCapTests):
    fast = False


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
        conn = self.s.connect(h2=True)
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
        self.assertEqual(self.s.stats.dropped, {"headerTimeout": 1})

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
        clock = Clock()
        watched = connections.Connections(10, 30, 100, clock)
        limits = Limits(defaults().limits, clock, connections=watched)
        site = Site(Parts(clock).resource, reactor=clock, limits=limits)
        proxy = site.buildProtocol(None)
        self.assertIsInstance(proxy, connections.ConnectionProtocol)
        inner = proxy.wrappedProtocol
        self.assertIs(inner.site, site)
        self.assertIs(inner.requestFactory, Request)
        self.assertEqual(inner.timeOut, site.timeOut)

    def test_service_wiring(self) -> None:
        """makeService's site builds counted, timed connections, in both modes, with one service."""
        for fast in (True, False):
            reactor = MemoryReactorClock()
            cfg = config_with(
                server={"fast_channel": fast},
                limits={"connections": 7, "header_timeout": 3, "body_timeout": 4},
                sse={"history": {"directory": None}},  # memory only: nothing on disk
            )
            root = tap.makeService(
                {"loaded": cfg, "listen": ["tcp:0"], "env": "x"}, reactor=reactor
            )
            root.startService()
            self.addCleanup(root.stopService)
            site = reactor.tcpServers[0][1]
            self.assertIsInstance(site.buildProtocol(None), connections.ConnectionProtocol)
            watched = tap.find(root, connections.Connections)
            self.assertEqual((watched.cap, watched.seconds, watched.body_seconds), (7, 3, 4))
            self.assertEqual(tap.find(root, WriteBatch) is not None, fast)
            self.assertIs(site.requestFactory, Request)
            self.assertEqual(site.fast_channel, fast)
            self.assertIs(site.limits.connections, watched)
