"""
Tests for L{notificator.http.stream}'s flow control: a stream is its request's
streaming producer, paused and resumed by the transport (with the fast
channel and with twisted.web's stock one), and a stream whose client stops
reading is dropped once what waits passes C{limits.bufferBytes}.  Over
real C{tcp.Server} transports with fake sockets
(L{tests.support.InMemoryServer}); end to end in L{tests.test_limits_e2e}.
"""

from __future__ import annotations

import errno
import gc
import json
import weakref
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from notificator.config import defaults
from notificator.http.request import Limits, Request
from notificator.http.site import Site
from notificator.http.stream import RequestStream
from tests.support import (
    BothChannels,
    InMemoryServer,
    Parts,
    dechunk,
    evolved,
    parse_frames,
    split_response,
)


def _limits(clock: Any, **config: Any) -> Limits:
    return Limits(evolved(defaults().limits, config), clock)


class SlowReaderTests(BothChannels, SynchronousTestCase):
    """
    A stream is a producer of its request: the transport pauses and
    resumes it; what is written while paused is capped.
    """

    def setUp(self) -> None:
        self.s = self.server(buffer_bytes=100_000)
        self.c = self.s.connect()
        self.c.receive(b"GET /sse/stuck HTTP/1.1\r\nHost: t\r\n\r\n")
        [self.stream] = self.s.hub.streams_of("stuck")

    def publish(self, user: str, size: int) -> int:
        return self.s.parts.publish(user, json.dumps("x" * size)).delivered

    def test_registered_as_producer(self) -> None:
        """The stream is its request's streaming producer."""
        self.assertIs(self.stream.request.producer, self.stream)
        self.assertTrue(self.stream.request.streamingProducer)

    def test_full_transport_pauses_the_stream(self) -> None:
        """A client that stops reading: once the transport holds 64 KiB the stream is paused; drained, resumed."""
        self.c.sock.error = errno.EWOULDBLOCK
        self.publish("stuck", 30_000)
        self.assertIsNone(self.stream._held)
        self.publish("stuck", 40_000)
        self.assertEqual(self.stream._held, 0)
        self.publish("stuck", 10_000)
        self.assertGreater(self.stream._held, 10_000)
        self.c.sock.error = None
        self.c.pump()
        self.assertIsNone(self.stream._held)
        self.assertEqual(self.publish("stuck", 10), 1)
        self.c.pump()
        self.assertEqual(len(self.events()), 5)  # connect and the four notifications, in order

    def events(self) -> list[dict[str, Any]]:
        return [e for e in parse_frames(dechunk(split_response(self.c.text())[2])) if "event" in e]

    def test_over_the_cap_dropped(self) -> None:
        """A frame that would take what waits past limits.bufferBytes drops the stream instead: aborted, detached, counted, logged."""
        other = self.s.connect()
        other.receive(b"GET /sse/ok HTTP/1.1\r\nHost: t\r\n\r\n")
        self.c.sock.error = errno.EWOULDBLOCK
        self.publish("stuck", 70_000)  # pauses
        for _ in range(9):
            self.assertEqual(self.publish("stuck", 10_000), 1)
        self.assertFalse(self.c.closing)
        self.assertEqual(self.publish("stuck", 10_000), 0)  # 100,000 + this one: over
        self.assertTrue(self.c.transport._aborting)
        self.assertEqual(self.publish("stuck", 10), 0)  # gone at once
        self.assertEqual(self.s.stats.refused, {"slow": 1})
        [event] = self.s.logged("dropped stream")
        self.assertEqual((event["user_id"], event["cap"]), ("stuck", 100_000))
        self.assertGreater(event["held"], 90_000)
        self.s.reactor.advance(0)  # the abort's connectionLost
        self.assertFalse(self.c.transport.connected)
        self.assertEqual(self.s.hub.stream_count, 1)
        self.assertEqual(self.publish("ok", 10), 1)  # the other user's stream goes on

    def test_paused_below_the_cap_goes_on(self) -> None:
        """A paused stream below the cap keeps its frames queued, in order, and catches up."""
        self.c.sock.error = errno.EWOULDBLOCK
        for i in range(8):
            self.s.parts.publish("stuck", json.dumps({"n": i, "pad": "x" * 10_000}))
        self.assertIsNotNone(self.stream._held)
        self.c.sock.error = None
        self.c.pump()
        notes = [json.loads(e["data"])["n"] for e in self.events()[1:]]
        self.assertEqual(notes, list(range(8)))

    def test_heartbeat_counts_too(self) -> None:
        """Heartbeats and keepalives written while paused count towards the cap."""
        self.c.sock.error = errno.EWOULDBLOCK
        self.publish("stuck", 99_000)
        held = self.stream._held
        self.s.hub.heartbeat()
        self.assertGreater(self.stream._held, held)

    def test_close_unregisters(self) -> None:
        """A stream the server ends unregisters first (twisted.web logs an error otherwise)."""
        self.s.hub.close_all()
        self.s.pump()
        self.assertIsNone(self.stream.request.producer)
        self.assertEqual(self.flushLoggedErrors(RuntimeError), [])
        self.assertTrue(self.c.text().endswith(b"0\r\n\r\n"))

    def test_lost_connection_stops(self) -> None:
        """A connection lost while paused ends the stream as any other loss."""
        self.c.sock.error = errno.EWOULDBLOCK
        self.publish("stuck", 70_000)
        self.c.close(Failure(ConnectionDone()))
        self.assertTrue(self.stream.gone)
        self.assertEqual(self.s.hub.stream_count, 0)
        self.assertEqual(self.s.stats.refused, {})


class SlowReaderStockTests(SlowReaderTests):
    fast = False


class PartialSendTests(SynchronousTestCase):
    """
    The fast channel's direct socket send (L{notificator.http.fast.Channel})
    leaves what the socket did not take to the transport, so the transport's
    pause and resume still reach the stream.
    """

    def test_partial_sends_reach_the_transport(self) -> None:
        """A socket that takes a little of each send: the rest queues, pauses the stream, and resumes it when drained."""
        s = InMemoryServer(self, True, buffer_bytes=1_000_000)
        c = s.connect()
        c.receive(b"GET /sse/u1 HTTP/1.1\r\nHost: t\r\n\r\n")
        [stream] = s.hub.streams_of("u1")
        c.sock.limit = 1000
        s.parts.publish("u1", json.dumps("x" * 70_000))
        self.assertEqual(stream._held, 0)  # queued 69 KB: paused
        c.sock.limit = None
        c.pump()
        self.assertIsNone(stream._held)
        self.assertEqual(parse_frames(dechunk(split_response(c.text())[2]))[-1]["event"], "notify")


class StreamProducerTests(SynchronousTestCase):
    """The stream without a server: requests without limits, and HTTP/2's drop."""

    def test_dummy_request_not_registered(self) -> None:
        """A request without limits (a test double) gets no producer and no cap."""
        registered: list[object] = []

        class Recording(DummyRequest):
            def registerProducer(self, producer: object, streaming: bool) -> None:
                registered.append(producer)

        request = Recording([b"sse"])
        stream = RequestStream(request, "u1", 1, 0.0, on_gone=lambda s, r: None)
        self.assertEqual(registered, [])
        self.assertTrue(stream.send(b"x" * 10))
        stream.close()

    def test_http2_drop_resets_and_ends(self) -> None:
        """Over HTTP/2 (no transport) a drop resets the stream and ends the request, which twisted.web does not."""
        clock = Clock()
        aborted: list[bool] = []

        class H2Stream:
            transport = None

            def getPeer(self) -> Any:
                return StringTransport().getPeer()

            def getHost(self) -> Any:
                return StringTransport().getHost()

            def registerProducer(self, producer: Any, streaming: bool) -> None:
                self.producer = producer

            def write(self, data: bytes) -> None:
                pass

            def writeHeaders(self, *args: Any) -> None:
                pass

            def abortConnection(self) -> None:
                aborted.append(True)

        stats = Parts(clock).stats
        bounds = Limits(evolved(defaults().limits, {"buffer_bytes": 100}), clock, stats)
        channel = H2Stream()
        channel.site = Site(Parts(clock).resource, reactor=clock, limits=bounds)
        request = Request(channel, queued=False)
        request.method, request.clientproto = b"GET", b"HTTP/2"
        gone: list[Any] = []
        stream = RequestStream(request, "u1", 1, 0.0, on_gone=lambda s, r: gone.append(r))
        stream.pauseProducing()
        self.assertTrue(stream.send(b"x" * 100))
        self.assertFalse(stream.send(b"x"))
        self.assertEqual(aborted, [True])
        [reason] = gone
        self.assertIsInstance(reason.value, ConnectionAborted)
        self.assertEqual(stats.refused, {"slow": 1})


class FinishedTests(BothChannels, SynchronousTestCase):
    """An open stream learns how its request ends without a Deferred of its own."""

    def test_stream_holds_no_deferred(self) -> None:
        """An open stream's request holds no Deferred; the client leaving detaches the stream."""
        from twisted.internet.defer import Deferred

        server = self.server()
        conn = server.connect()
        conn.receive(b"GET /sse/u1 HTTP/1.1\r\nHost: t\r\n\r\n")
        (stream,) = server.hub.streams_of("u1")
        self.assertEqual([n for n in stream.request.notifications if isinstance(n, Deferred)], [])
        conn.transport.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(server.hub.stream_count, 0)
        self.assertTrue(stream.gone)

    def test_an_error_at_the_end_is_logged(self) -> None:
        """An error while ending a stream is logged; twisted.web's cleanup of the request goes on."""
        server = self.server()
        conn = server.connect()
        conn.receive(b"GET /sse/u1 HTTP/1.1\r\nHost: t\r\n\r\n")
        (stream,) = server.hub.streams_of("u1")

        def broken(stream: Any, reason: Any) -> None:
            raise RuntimeError("boom")

        stream._on_gone = broken
        conn.transport.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(stream.request.notifications, [])
        self.assertTrue(stream.gone)

    def test_lost_stream_freed_without_the_collector(self) -> None:
        """
        A stream whose client left is freed by reference counting, with its
        request, channel and transport: no reference cycle waits for the
        cyclic garbage collector (10,000 streams dropped at once were a
        full collection of 150,000 objects, a pause of the server).
        """
        server = self.server()
        conn = server.connect()
        conn.receive(b"GET /sse/u1 HTTP/1.1\r\nHost: t\r\n\r\n")
        (stream,) = server.hub.streams_of("u1")
        # (A stream and the protocol have no __weakref__ slot; the stream
        # holds its request, so a freed request is a freed stream.)
        kept = [weakref.ref(o) for o in (stream.request, conn.transport)]
        del stream
        self.addCleanup(gc.enable)
        gc.disable()
        conn.close(Failure(ConnectionDone()))
        server.reactor.advance(0)
        server.conns.remove(conn)
        del conn
        self.assertEqual(server.hub.stream_count, 0)
        self.assertEqual([ref() for ref in kept], [None, None])


class FinishedStockTests(FinishedTests):
    fast = False


class AddressTests(SynchronousTestCase):
    def test_address_given_is_kept(self) -> None:
        """The address the opening resource asked for is the stream's peer; without one, the request's."""
        request = DummyRequest([b"sse"])
        given = RequestStream(request, "u1", 1, 0.0, on_gone=lambda s, r: None, address="10.0.0.9")
        self.assertEqual(given.peer, "10.0.0.9")
        other = DummyRequest([b"sse"])
        other.client = IPv4Address("TCP", "10.0.0.7", 40000)
        asked = RequestStream(other, "u1", 2, 0.0, on_gone=lambda s, r: None)
        self.assertEqual(asked.peer, "10.0.0.7")
