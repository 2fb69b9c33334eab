# -*- test-case-name: tests.test_limits -*-
"""
Limits on what one client can make the server hold (C{limits.*}).

 - L{Request}: twisted.web's request with a bound on the body it reads
   (C{limits.bodyBytes}).  A body announced larger (C{Content-Length}) is
   refused with 413 as soon as the head is read, and a body without a
   length (chunked, or HTTP/2 without C{content-length}) as soon as it
   passes the limit: over HTTP/1.x the answer is written and the
   connection closed, over HTTP/2 the stream is answered and then reset
   (C{RST_STREAM} with C{NO_ERROR}, as RFC 9113 8.1 has a server end a
   request it will not read).  A body is kept in memory (twisted.web puts
   one over 100 KB, or without a length, in a temporary file: a
   descriptor per request), which the limit bounds.  It only overrides the hooks twisted.web's
   channels call on every request (C{gotLength}, C{handleContentChunk},
   C{finish}; and, on a refused request, C{requestReceived}), so it serves
   with the stock C{HTTPChannel} and C{H2Connection} alike; L{notificator.web.Request}
   adds the fast write path on top.
 - L{HeadTimeout}: a connection that has not sent a whole request head
   within C{limits.headerTimeout} seconds of opening, or of its previous
   response being done, is closed, however it trickles its bytes
   (twisted.web's own idle timeout starts again on every byte).  Once a
   head is complete the clock stops, so an open event stream is never
   timed out; a slow body is left to twisted.web's idle timeout.  The
   clock starts in L{HeadClockProtocol}, which L{time_heads} puts around
   the site's protocol (ours or twisted.web's); the request stops it.
   An HTTP/2 connection is timed until its first frames arrive and then
   left to twisted.web's idle timeout (its streams' heads cannot be told
   from its connection here).
 - The stream buffer (C{limits.bufferBytes}) is the stream's
   (L{notificator.stream.RequestStream}), which reads it from
   L{Request.limits}.

Everything runs on the clock given in; no global state.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from io import BytesIO
from typing import TYPE_CHECKING, Any, cast

from twisted.application.service import Service
from twisted.internet.interfaces import (
    IDelayedCall,
    IProtocol,
    IReactorTime,
    ISSLTransport,
    ITCPTransport,
)
from twisted.logger import Logger
from twisted.web import server
from twisted.web.http_headers import Headers
from zope.interface import implementer

from notificator.config import LimitsConfig
from notificator.stats import Stats

if TYPE_CHECKING:
    from twisted.web._http2 import H2Stream

_default_log = Logger()


class Limits:
    """
    The configured limits, with what enforcing them needs: the clock, the
    counters and the log (C{sse.log}), and the request-head clock.

    @ivar head: the request-head clock (L{HeadTimeout}); L{None}: none.
    @ivar arm: C{arm(transport)}: start the head clock of a connection.
    @ivar disarm: C{disarm(transport, None)}: stop it (a dict's C{pop}:
        this runs for every request).
    """

    __slots__ = (
        "body_bytes",
        "buffer_bytes",
        "clock",
        "stats",
        "log",
        "head",
        "arm",
        "disarm",
    )

    def __init__(
        self,
        config: LimitsConfig,
        clock: IReactorTime,
        stats: Stats | None = None,
        log: Logger = _default_log,
        head: HeadTimeout | None = None,
    ) -> None:
        self.body_bytes = config.body_bytes
        self.buffer_bytes = config.buffer_bytes
        self.clock = clock
        self.stats = stats
        self.log = log
        self.head = head
        self.arm: Callable[[Any], None] = head.arm if head is not None else _nothing
        self.disarm: Callable[[Any, None], Any] = head.disarm_pop if head is not None else {}.pop

    def refused_body(self, request: Any, reason: str) -> None:
        """Log and count a request body refused with 413."""
        if self.stats is not None:
            self.stats.reject(413)
        self.log.warn(
            "refused a request from {peer}: 413 {reason}",
            peer=peer(request),
            reason=reason,
        )


def _nothing(*args: Any) -> None:
    pass


def peer(request: Any) -> str:
    """
    The client's address as text: the request's C{client_host} (L{web.Request}:
    behind a trusted proxy, from X-Forwarded-For), else the host of the
    connection's peer.
    """
    client = getattr(request, "client_host", None)
    if client is not None:
        return str(client)
    return peer_host(request)


def peer_host(request: Any) -> str:
    """The host of the connection's peer as text (the address for other transports)."""
    return _host(request.getClientAddress())


def _host(addr: Any) -> str:
    host = getattr(addr, "host", None)
    return str(host) if host is not None else str(addr)


#: After a refused body, this many times C{limits.bodyBytes} more are read
#: and dropped at most (L{Request._linger}).
LINGER_BODIES = 8

#: The reason phrase of 413 (RFC 9110 15.5.14).
_TOO_LARGE = b"Content Too Large"


def _error_body(reason: str) -> bytes:
    return json.dumps({"error": reason}).encode("utf-8")


class Request(server.Request):
    """
    A twisted.web request that reads at most C{limits.bodyBytes} of body
    and does not parse form bodies into C{request.args} (the publish
    endpoint reads the raw body: see L{notificator.ingest}).  Query
    strings are still parsed.

    L{limits} is a class attribute: L{request_class} makes the subclass a
    server uses as its C{requestFactory}, so a request costs no memory
    for it.  With L{limits} L{None} (this class itself) nothing is
    limited.  A request with an announced length (the usual publish) pays
    one test per chunk: only a body without one is counted.
    """

    limits: Limits | None = None
    # Count the body as it arrives (no announced length, or refused).
    _count = False
    #: The request was answered before its body was read (L{ignore_body}).
    refused = False
    _lingering = False
    _body_received = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["parsePOSTFormSubmission"] = False
        super().__init__(*args, **kwargs)
        # What an event stream's request gets later (its first write, its
        # producer), set now to the same values, so that every request of
        # the class starts with the same attributes in the same order:
        # Python then keeps a stream's attributes in the class's shared
        # dict (about 300 bytes).  A request that adds attributes in
        # another order, or more than about 30, gets a dict of its own
        # (about 1.6 KB); which request came first would otherwise decide.
        self.startedWriting = 0
        self.chunked = 0
        self.sentLength = 0
        self.streamingProducer = False
        self.producer = None

    def gotLength(self, length: int | None) -> None:
        """
        The head is complete: stop its clock; refuse an announced body over
        the limit.  The body is kept in memory (the limit bounds it), not in
        twisted.web's temporary file for one over 100 KB or without a length.
        """
        limits = self.limits
        if limits is None:
            server.Request.gotLength(self, length)
            return
        if length is None:
            self._count = True
        elif length > limits.body_bytes:
            self._refuse(
                f"request body of {length} bytes is larger than limits.bodyBytes"
                f" ({limits.body_bytes})"
            )
            return
        limits.disarm(self.transport, None)
        self.content = BytesIO()

    def handleContentChunk(self, data: bytes) -> None:
        # (HTTPChannel's decoders hold this bound method from before
        # gotLength: it cannot be swapped per request.)
        if self._count:
            self._counted_chunk(data)
        else:
            server.Request.handleContentChunk(self, data)

    def _counted_chunk(self, data: bytes) -> None:
        """A chunk of a body without an announced length, or of a refused one."""
        limits = self.limits
        if self.refused:
            if self._lingering:
                assert limits is not None  # lingers only with limits (_linger)
                self._body_received += len(data)
                if self._body_received > LINGER_BODIES * limits.body_bytes:
                    # Lingering is plain TCP only (answer_early).
                    cast(ITCPTransport, self.transport).abortConnection()
            return
        assert limits is not None
        received = self._body_received + len(data)
        if received > limits.body_bytes:
            self._refuse(f"request body larger than limits.bodyBytes ({limits.body_bytes})")
            return
        self._body_received = received
        server.Request.handleContentChunk(self, data)

    def finish(self) -> None:
        """
        As twisted.web's; the connection's head clock starts again first, so
        that a next request already received (pipelined), which the
        channel reads in C{finish}, stops it.
        """
        limits = self.limits
        if limits is not None:
            transport = self.transport
            if transport is not None and getattr(self, "channel", None) is not None:
                limits.arm(transport)
        server.Request.finish(self)

    def _refuse(self, reason: str) -> None:
        """Refuse the body with 413 (logged and counted), now."""
        limits = self.limits
        assert limits is not None
        limits.refused_body(self, reason)
        self.answer_early(413, _TOO_LARGE, _error_body(reason))

    def answer_early(self, code: int, phrase: bytes, body: bytes) -> None:
        """
        Answer C{code} with the JSON C{body} now, before the body is read,
        and stop reading this request: over HTTP/1.x write the answer and
        close the connection (lingering, L{_linger}, over plain TCP); over
        HTTP/2 answer the stream once it is set up (after this reactor turn)
        and reset it.  What else arrives for it is read past, and it is
        never processed.  (The 413 of a body over the limit; the publish
        gate's 403.)
        """
        self.ignore_body()
        limits = self.limits
        channel = self.channel
        if self.transport is not None:
            # HTTP/1.x, in the middle of reading the head or the body: the
            # request was not read, so the answer is written as it goes on
            # the wire.  No "100 Continue" after it.
            self.requestHeaders.removeHeader(b"expect")
            channel.write(
                b"HTTP/1.1 %d %s\r\nContent-Type: application/json; charset=utf-8\r\n"
                b"Cache-Control: no-store\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                % (code, phrase, len(body), body)
            )
            transport = self.transport
            if (
                limits is not None
                and limits.head is not None
                and ITCPTransport.providedBy(transport)
                and not ISSLTransport.providedBy(transport)
            ):
                self._linger(channel, transport, limits)
            else:
                channel.loseConnection()
        elif limits is not None:
            # An HTTP/2 stream (its channel has no transport): called from
            # inside the stream's constructor, it cannot write yet.
            limits.clock.callLater(0, self._answer_stream, code, phrase, body)

    def _linger(self, channel: Any, transport: Any, limits: Limits) -> None:
        """
        Close as RFC 9112 (9.6) advises a server that answers before the
        body is read: the answer, then our half of the connection (a FIN),
        while what the client still sends is read and dropped, until it
        closes, the head clock ends it (C{limits.headerTimeout}), or
        L{LINGER_BODIES} times C{limits.bodyBytes} more came (then it is
        aborted).  A client that sends its whole body before it reads
        then gets the answer, not a reset that loses it.  Plain TCP only:
        a TLS connection is closed at once.
        """
        # The fast channel keeps a reactor pass's writes until its end.
        flush = getattr(channel, "sendPending", None)
        if flush is not None:
            flush()
        self._lingering = True
        transport.loseWriteConnection()
        limits.arm(transport)

    def ignore_body(self) -> None:
        """
        This request was answered before its body was read: what the channel
        still hands it of the body is dropped, and it is never processed.
        """
        self._count = self.refused = True
        # Swapped on this instance only (mypy forbids assigning to a method).
        self.requestReceived = _ignore  # type: ignore[method-assign]
        if self.content is not None:
            self.content.close()
            self.content = None

    def _answer_stream(self, code: int, phrase: bytes, body: bytes) -> None:
        channel = self.channel
        if channel is None:  # the client reset the stream meanwhile
            return
        headers = Headers(
            {
                b"content-type": [b"application/json; charset=utf-8"],
                b"cache-control": [b"no-store"],
                b"content-length": [b"%d" % len(body)],
            }
        )
        channel.writeHeaders(b"HTTP/2", b"%d" % code, phrase, headers)
        channel.write(body)
        assert self.limits is not None
        # The data frame leaves in this turn when the connection is idle,
        # else in the next; the reset follows it.
        self.limits.clock.callLater(0, self._reset_stream)

    def _reset_stream(self) -> None:
        # An HTTP/2 request's channel is its H2Stream (twisted.web's Request
        # declares an HTTPChannel), set to None when the stream is gone.
        stream = cast("H2Stream | None", self.channel)
        if stream is not None:
            stream.abortConnection()


def _ignore(*args: Any) -> None:
    """What a refused request does at its end: nothing."""


def request_class(base: type[Request], limits: Limits) -> type[Request]:
    """A subclass of C{base} with these L{Limits}: a site's C{requestFactory}."""
    return type(base.__name__, (base,), {"limits": limits, "__module__": base.__module__})


class HeadTimeout(Service):
    """
    Closes connections that do not finish a request head in time.

    A connection is I{armed} when it opens and when a response on it is
    done, and I{disarmed} when a request head is complete or it closes.
    One call on the clock serves them all: every timeout is the same
    length, so the connections expire in the order they were armed (a
    dict keeps it), and the call is set for the first of them.  An
    expired connection is closed (C{loseConnection}) and, if it is still
    there C{seconds} later (a client that does not read), aborted.

    @param seconds: C{limits.headerTimeout}.
    """

    def __init__(self, seconds: float, clock: IReactorTime, log: Logger = _default_log) -> None:
        self.seconds = seconds
        self._clock = clock
        self._log = log
        # transport -> deadline, in arming order
        self._armed: dict[Any, float] = {}
        # transport -> when to abort it
        self._closing: dict[Any, float] = {}
        self._call: IDelayedCall | None = None
        #: C{disarm_pop(transport, None)}: a request head is complete on
        #: C{transport} (the dict's own method: it runs for every request).
        self.disarm_pop = self._armed.pop

    def arm(self, transport: Any) -> None:
        """Start the clock of C{transport}'s connection (again)."""
        armed = self._armed
        armed.pop(transport, None)
        armed[transport] = self._clock.seconds() + self.seconds
        if self._call is None:
            self._call = self._clock.callLater(self.seconds, self._sweep)

    def lost(self, transport: Any) -> None:
        """C{transport}'s connection closed."""
        self._armed.pop(transport, None)
        self._closing.pop(transport, None)

    def _sweep(self) -> None:
        self._call = None
        now = self._clock.seconds()
        expired = []
        for transport, deadline in self._armed.items():
            if deadline > now:
                break
            expired.append(transport)
        for transport in expired:
            del self._armed[transport]
            self._closing[transport] = now + self.seconds
            self._log.info(
                "closed the connection from {peer}: no complete request head within"
                " {seconds:g} s (limits.headerTimeout)",
                peer=_transport_peer(transport),
                seconds=self.seconds,
            )
            transport.loseConnection()
        stuck = []
        for transport, deadline in self._closing.items():
            if deadline > now:
                break
            stuck.append(transport)
        for transport in stuck:
            del self._closing[transport]
            transport.abortConnection()
        self._schedule(now)

    def _schedule(self, now: float) -> None:
        first = [d for d in (_first(self._armed), _first(self._closing)) if d is not None]
        if first and self._call is None:
            self._call = self._clock.callLater(max(0.0, min(first) - now), self._sweep)

    def stopService(self) -> None:
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


def _first(deadlines: dict[Any, float]) -> float | None:
    for deadline in deadlines.values():
        return deadline
    return None


def _transport_peer(transport: Any) -> str:
    try:
        return _host(transport.getPeer())
    except Exception:
        return "?"


@implementer(IProtocol)
class HeadClockProtocol:
    """
    Sits between a transport and the site's protocol (twisted.web's, or
    L{notificator.channel}'s), passing what the transport calls through,
    to start the connection's head clock when it opens and drop it when
    it closes.  The wrapped protocol (L{wrappedProtocol}, as Twisted's own
    wrappers name it) sees the real transport, so writes do not pass
    through here.  No attribute lookup is forwarded: Twisted's transports
    only call the four methods of C{IProtocol}.
    """

    __slots__ = ("wrappedProtocol", "_head", "_transport", "_first")

    def __init__(self, protocol: Any, head: HeadTimeout) -> None:
        self.wrappedProtocol = protocol
        self._head = head
        self._first = True

    def makeConnection(self, transport: Any) -> None:
        self._transport = transport
        self._head.arm(transport)
        self.wrappedProtocol.makeConnection(transport)

    def connectionMade(self) -> None:
        self.wrappedProtocol.connectionMade()

    def dataReceived(self, data: bytes) -> None:
        if self._first:
            self._first = False
            if getattr(self._transport, "negotiatedProtocol", None) == b"h2":
                self._head.lost(self._transport)
        self.wrappedProtocol.dataReceived(data)

    def connectionLost(self, reason: Any) -> None:
        self._head.lost(self._transport)
        self.wrappedProtocol.connectionLost(reason)


def time_heads(site: Any, head: HeadTimeout) -> None:
    """
    Make C{site}'s connections run the head clock: what its
    C{buildProtocol} builds (and has set up: C{site}, C{timeOut} ...) is
    wrapped in a L{HeadClockProtocol}.  Any factory will do (twisted.web's
    L{server.Site} or a subclass, with either channel), which is why this
    wraps the instance's method rather than subclassing.
    """
    build = site.buildProtocol

    def buildProtocol(addr: Any) -> HeadClockProtocol | None:
        protocol = build(addr)
        return None if protocol is None else HeadClockProtocol(protocol, head)

    site.buildProtocol = buildProtocol
