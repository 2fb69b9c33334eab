# -*- test-case-name: tests.test_http_fast -*-
"""
The HTTP/1.1 channel: twisted.web's L{HTTPChannel}, with fewer system
calls per response, and L{WriteBatch}, which sends what a reactor pass
wrote at the end of that pass.

twisted.web writes a response's head and each body chunk to the
transport, which queues them, asks the reactor to watch the socket for
writability (an C{epoll_ctl}), sends on the reactor's next pass and stops
watching (another C{epoll_ctl}).  For this server's traffic (a small
publish answer, a small SSE frame) that bookkeeping cost more than the
send itself.  L{Channel} instead:

 - collects what it is given while the reactor hands received data to
   channels (with L{WriteBatch}) and sends it when that reactor pass is
   over, one C{send(2)} per connection: a publish answer or the start of
   a stream, head and body, is one send.  A pass that reads sixteen
   publishes sends sixteen frames and sixteen answers back to back.
   Each send that wakes a sleeping receiver costs the sender a cross-CPU
   wake-up (dear on a virtual machine); back to back, most sends find
   their receiver already awake.  In the burst benchmark this cut the
   server's CPU per publish by about a seventh, and the reply leaves no
   later than the end of the pass that produced it (or sooner: see
   L{WriteBatch.most}).  Timer-driven writes (heartbeats to every
   stream, back to back already) are not held;
 - writes straight to the socket when nothing is queued on it (a plain
   TCP or UNIX connection only).  Anything that cannot go at once (a
   full socket buffer, TLS, a closing connection) is handed to the
   transport as before, so ordering, flow control and disconnect
   handling stay Twisted's;
 - reads a request whose whole head came in one read (a browser's
   C{GET /sse}, a sender's publish) with a few C{bytes} operations
   instead of C{HTTPChannel}'s calls per line, per header and per header
   name (L{notificator.http._twisted.ChannelBase.read_whole_head}): the
   same request state, the same checks, and anything unusual left to
   C{HTTPChannel}, which answers it as it always did.

The direct send uses three attributes of Twisted's C{tcp.Connection}
(C{dataBuffer} and C{_tempDataLen}, its queue, and C{socket}), to which
it sends as C{Connection.writeSomeData} would, without its wrapping (a
third of a heartbeat frame's Python): that is
L{notificator.http._twisted.ChannelBase.send_now}, with the other private parts of
Twisted the server uses, each tested against the real class.
L{tests.test_http_fast} checks the behaviour.  HTTP/2 streams do not use
this channel.

Flow control is Twisted's as well.  A direct send happens only while the
transport's queue is empty; what the socket does not take then, and
everything written while the queue is not empty, goes through
C{transport.write}, which pauses the channel (and through it the
request's producer: an event stream, L{notificator.http.stream}) once more
than its buffer size waits, and its write pass resumes them when the
queue has drained.  C{server.fastChannel: false} serves without this
module (L{notificator.http.site.serve_http}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IProtocolFactory,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from notificator.http import _twisted
from notificator.http._twisted import ChannelBase, GenericHTTPChannelProtocol

# The namespace it had before the moves of issue 18: it is part of
# every log line, and no log line changes.
_log = Logger("notificator.channel")


class Channel(ChannelBase):
    """
    L{HTTPChannel} that sends what it is given during a reactor pass with
    one system call (see L{WriteBatch}).
    """

    # Bytes given during this reactor pass, sent by the batch at its end.
    _pending: list[bytes] | None = None

    def __init__(self, writes: WriteBatch, head_clock: bool = False) -> None:
        super().__init__()
        self._writes = writes
        self._head_clock = head_clock

    # twisted.web's idle timeout (the site's timeOut, 12 hours): a timer
    # armed when a connection opens, pushed back on every read, cancelled
    # when a request's body is complete and armed again when its answer is
    # done.  Under the connections' clocks
    # (notificator.http.connections), which close a connection that takes
    # limits.headerTimeout to send a head (from its opening or its last
    # answer) or limits.bodyTimeout to send a body, that timer can never
    # fire first; it cost a stream and a publish each a timer armed and
    # cancelled.  With head_clock the channel keeps none (HTTP/2, which
    # twisted.web's wrapper hands the site's value itself, keeps it).
    _timeout: float | None = None

    @property  # type: ignore[override]
    def timeOut(self) -> float | None:
        return None if self._head_clock else self._timeout

    @timeOut.setter
    def timeOut(self, value: float | None) -> None:
        self._timeout = value

    # Each request asks for both addresses (twisted.web's Request keeps
    # them); a connection's do not change, so ask the socket once.
    _peer: Any = None
    _host: Any = None

    def getPeer(self) -> Any:
        peer = self._peer
        if peer is None:
            peer = self._peer = super().getPeer()
        return peer

    def getHost(self) -> Any:
        host = self._host
        if host is None:
            host = self._host = super().getHost()
        return host

    def dataReceived(self, data: bytes) -> None:
        # What this call writes (to any connection: a publish writes its
        # frames to others) waits for the end of the reactor pass, so a
        # response's head and body leave together.
        writes = self._writes
        writes.reading += 1
        try:
            if not self.read_whole_head(data):
                super().dataReceived(data)
        finally:
            writes.reading -= 1

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Any) -> None:
        # As HTTPChannel.writeHeaders (it gets Headers from Request.write).
        head = [version, b" ", code, b" ", reason, b"\r\n"]
        for name, values in headers.getAllRawHeaders():
            for value in values:
                head += (name, b": ", value, b"\r\n")
        head.append(b"\r\n")
        self._send(b"".join(head))

    def write(self, data: bytes) -> None:
        self._send(data)

    def writeSequence(self, iovec: Any) -> None:
        self._send(b"".join(iovec))

    def loseConnection(self) -> None:
        self.sendPending()
        super().loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._pending = None
        super().connectionLost(reason)

    def send_raw(self, data: bytes) -> None:
        # The 100 Continue and the 400 HTTPChannel writes itself
        # (ChannelBase): in line with the responses before them.
        self._send(data)

    def lineLengthExceeded(self, line: bytes) -> None:
        # A request line or header line longer than MAX_LENGTH: the
        # LineReceiver default drops the connection without a word (and
        # past this channel's batch); answer it as twisted.web answers
        # every other malformed head.
        self.bad_request()

    def sendPending(self) -> None:
        """Send what this pass gave (the L{WriteBatch} calls this)."""
        pending = self._pending
        if pending is not None:
            self._pending = None
            self.send_now(pending[0] if len(pending) == 1 else b"".join(pending))

    def _send(self, data: bytes) -> None:
        pending = self._pending
        if pending is not None:
            pending.append(data)
        elif self._writes.reading and self.connected:
            self._pending = [data]
            self._writes.add(self)
        else:
            self.send_now(data)


class WriteBatch(Service):
    """
    Sends, at the end of a reactor pass, what L{Channel}s were given
    while handling received data during it: the pass's first such write
    schedules a call for right after the pass (C{callLater(0)}), which
    sends each channel's bytes as one write; when a connection would join
    C{most} others already waiting, those are sent at once.  Stopping the service sends
    what is left, so the last frames of a shutdown leave before the
    reactor closes the connections.
    """

    # How many received-data calls are running: writes made outside them
    # (heartbeats, keepalives: one timer call writing to every stream,
    # back to back already) go out at once.
    reading = 0
    # Send the waiting connections' bytes once this many are waiting.
    most = 16

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._channels: list[Channel] = []
        self._call: IDelayedCall | None = None

    def add(self, channel: Channel) -> None:
        """C{channel} has bytes to send at the end of this pass."""
        if len(self._channels) >= self.most:
            # A long pass (many requests read at once) sends as it goes,
            # so its first answers do not wait for its last requests, and
            # clients answered early can send their next request while
            # this server is still busy: neither side waits for the other.
            # Sent before the newcomer joins: the others are between
            # responses, while its own response may be half written.
            self.flush()
        self._channels.append(channel)
        if self._call is None:
            self._call = self._clock.callLater(0, self.flush)

    def flush(self) -> None:
        """Send everything given so far."""
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()
        channels, self._channels = self._channels, []
        for channel in channels:
            try:
                channel.sendPending()
            except Exception:
                # One broken connection must not keep the others' bytes.
                _log.failure("sending to {channel} failed", channel=channel)

    def stopService(self) -> None:
        super().stopService()
        self.flush()


def protocol(writes: WriteBatch, head_clock: bool = False) -> GenericHTTPChannelProtocol:
    """
    A L{Site}'s C{protocol}: L{Channel} in the wrapper twisted.web uses to
    switch to HTTP/2 when TLS negotiates it.  Give it the server's
    L{WriteBatch} with C{functools.partial}:
    C{site.protocol = partial(protocol, writes)}.

    @param head_clock: the site's connections are timed by
        L{notificator.http.connections.Connections}: the channel runs no
        idle timer of its own over HTTP/1.x (see L{Channel.timeOut}).
    """
    return GenericHTTPChannelProtocol(Channel(writes, head_clock))


class Polling(Service):
    """
    While it runs, the reactor hands each ready connection to Twisted's
    read and write code without a legacy log context around each one
    (L{notificator.http._twisted.fast_poll}: about 4 % of a stream
    opened's instructions, 3 % of a publish's); stopped, Twisted's own loop is back.  On
    any reactor but the epoll one it does nothing.
    """

    def __init__(self, reactor: object) -> None:
        self._reactor = reactor
        self._undo: Callable[[], None] | None = None

    def startService(self) -> None:
        super().startService()
        self._undo = _twisted.fast_poll(self._reactor)

    def stopService(self) -> None:
        super().stopService()
        undo, self._undo = self._undo, None
        if undo is not None:
            undo()


@implementer(IStreamServerEndpoint)
class Accepting:
    """
    An endpoint that listens as C{endpoint} does, with Twisted's TCP port
    made a L{notificator.http._twisted.FastPort} (a leaner accept loop);
    any other kind of port is left as it is.
    """

    def __init__(self, endpoint: IStreamServerEndpoint) -> None:
        self.endpoint = endpoint

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        listening: Deferred[IListeningPort] = self.endpoint.listen(protocolFactory)
        return listening.addCallback(fast_port)


def fast_port(port: IListeningPort) -> IListeningPort:
    """
    Make C{port}, when it is Twisted's TCP port, accept with the leaner
    loop (L{notificator.http._twisted.FastPort}); return it.
    """
    _twisted.fast_accept(port)
    return port
