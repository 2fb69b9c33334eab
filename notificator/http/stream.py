# -*- test-case-name: tests.test_http_stream -*-
"""
One open SSE response.

A L{RequestStream} wraps a twisted.web request kept open with
C{NOT_DONE_YET}.  It learns that the client went away as
C{request.notifyFinish()} would tell (L{_twisted.when_finished}, without a
Deferred) and from then on drops writes and never calls
C{finish()} (which would raise after a disconnect).

Writes go through C{request.write}; over plain TCP the channel
(L{notificator.http.fast}) sends them straight to the socket.

A client that stops reading: a stream on a request whose site has
L{notificator.http.request.Limits} registers with it as a streaming producer,
so twisted.web pauses it when the transport holds more than its own
bound (64 KiB for TCP and TLS; for HTTP/2, when the stream's flow-control
window, which the client sets, is used up) and resumes it when that has
drained.  While paused, frames are still written, and counted; one that
would take the count past C{limits.bufferBytes} drops the stream instead:
the connection is aborted (over HTTP/2 the stream is reset), the client
reconnects with the last id it saw and the history replays what it
missed.  So a client that never reads costs at most about
C{limits.bufferBytes} plus the transport's bound.  The drop is logged and
counted (C{notificator_streams_refused{reason="slow"}}).  Pausing swaps
the write function, so the send of a running stream does no more work
(the write that drops a stream raises, which costs nothing until then).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from twisted.internet.error import ConnectionAborted
from twisted.internet.interfaces import IPushProducer, ITCPTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from notificator.http import _twisted
from notificator.http.request import Limits, Request, frame_writer, peer
from notificator.logs import log_unfinished
from notificator.text import safe

# The namespace of the web layer's lines before the moves of issue 18.
_log = Logger("notificator.web")


class _Dropped(Exception):
    """A paused write dropped its stream (what L{RequestStream.send} returns False for)."""


@implementer(IPushProducer)
class RequestStream:
    """
    An event stream on an open request.

    @ivar user_id: whose notifications this stream receives.
    @ivar connection_id: unique within the process, for logs and the monitor.
    @ivar connected_at: POSIX time the stream opened.
    @ivar peer: the client's address, for logs, the monitor and
        C{limits.streamsPerAddress} (C{address} when given: the resource
        that opens the stream asked for it already).
    @ivar counted: the stream counts against its address's
        C{limits.streamsPerAddress} (set and cleared by the resource that
        opened it, L{notificator.http.sse.SSEResource}).
    """

    __slots__ = (
        "request",
        "_write",
        "user_id",
        "connection_id",
        "connected_at",
        "peer",
        "gone",
        "counted",
        "_on_gone",
        "_held",
    )

    def __init__(
        self,
        request: Request,
        user_id: str,
        connection_id: int,
        connected_at: float,
        on_gone: Callable[[RequestStream, Failure | None], None],
        address: str | None = None,
    ) -> None:
        self.request = request
        self._write = frame_writer(request)
        self.user_id = user_id
        self.connection_id = connection_id
        self.connected_at = connected_at
        # (The resource asked for it already, for its caps: given then.)
        self.peer = peer(request) if address is None else address
        self.gone = False
        self.counted = False
        self._on_gone = on_gone
        # Bytes written while paused; None while not paused.
        self._held: int | None = None
        # (request.notifyFinish().addBoth(self._finished), without a
        # Deferred: callback and errback below.)
        _twisted.when_finished(request, self)
        if isinstance(request, Request) and request.site.limits is not None:
            request.registerProducer(self, True)

    def send(self, frame: bytes) -> bool:
        """
        Write one frame (a chunk of the HTTP/1.1 response).  C{False} if
        the client has gone (or this write dropped a stream whose client
        stopped reading).
        """
        if self.gone:
            return False
        try:
            self._write(frame)
        except _Dropped:
            return False
        return True

    def close(self) -> None:
        """Finish the response (server side), unless the client already left."""
        if not self.gone:
            request = self.request
            if isinstance(request, Request) and request.producer is not None:
                request.unregisterProducer()  # registered in __init__
            request.finish()

    # -- IPushProducer: the transport's flow control ------------------------

    def pauseProducing(self) -> None:
        """The transport is full: count what is written from now on."""
        if self._held is None and not self.gone:
            self._held = 0
            self._write = self._write_held

    def resumeProducing(self) -> None:
        """The transport has drained."""
        if self._held is not None and not self.gone:
            self._held = None
            self._write = frame_writer(self.request)

    def stopProducing(self) -> None:
        """The connection is gone; C{notifyFinish} tells the rest."""

    def _write_held(self, frame: bytes) -> None:
        held = (self._held or 0) + len(frame)
        limits = self.request.site.limits
        assert limits is not None  # a producer only with limits (__init__)
        if held > limits.buffer_bytes:
            self._drop(held - len(frame), limits)
            raise _Dropped()
        self._held = held
        self.request.write(frame)

    def _drop(self, held: int, limits: Limits) -> None:
        """Drop the stream of a client that does not read (see the module docstring)."""
        self.gone = True
        if limits.stats is not None:
            limits.stats.refuse("slow")
        limits.log.warn(
            "dropped stream {connection_id} of {user_id} from {peer}: the client stopped"
            " reading and {held} bytes are waiting (limits.bufferBytes {cap})",
            connection_id=self.connection_id,
            user_id=safe(self.user_id),
            peer=self.peer,
            held=held,
            cap=limits.buffer_bytes,
        )
        request = self.request
        transport = request.transport
        if transport is not None:
            # HTTP/1.x (TCP or TLS): drop the connection and what it holds;
            # the channel then tells the request, and notifyFinish us.
            # (ITransport has no abortConnection; TCP's and TLS's have.)
            cast(ITCPTransport, transport).abortConnection()
        else:
            # An HTTP/2 stream: reset it; the connection and its other
            # streams go on.  twisted.web does not tell the request.
            _twisted.h2_reset(request)
            request.connectionLost(Failure(ConnectionAborted("slow reader")))

    def callback(self, result: None) -> None:
        """The response was finished (L{_twisted.when_finished})."""
        self._finished(None)

    def errback(self, failure: Failure) -> None:
        """The connection was lost before the response was finished (L{_twisted.when_finished})."""
        self._finished(failure)

    def _finished(self, result: None | Failure) -> None:
        # On finish() (result None) or on disconnect (a Failure), once.  It
        # runs inside twisted.web's request cleanup, which must go on: an
        # error is logged, as a Deferred's would have been.
        self.gone = True
        try:
            if result is not None:
                # finish() never ran, so twisted.web wrote no access-log line.
                log_unfinished(self.request)
            self._on_gone(self, result)
        except Exception:
            _log.failure("ending stream {connection_id} failed", connection_id=self.connection_id)
        finally:
            # A lost connection leaves this stream registered as its
            # request's producer (twisted.web unregisters only on finish):
            # request and stream would hold each other, and with them the
            # transport and buffers, until the cyclic collector ran, a
            # full collection of every dropped stream at once after a mass
            # disconnect.  Let go, so reference counting frees them.
            request = self.request
            if getattr(request, "producer", None) is self:
                request.producer = None


class LimitedRequestStream(RequestStream):
    """
    A stream that ends its response once about C{limit} bytes were written
    (the IE polyfill's C{evs_buffer_size_limit}: XDomainRequest keeps all
    it received in memory).  The polyfill then reconnects with the last id
    it saw, and the history replays what follows.
    """

    __slots__ = ("limit", "sent")

    def __init__(self, *args: Any, limit: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limit = limit
        self.sent = 0

    def send(self, frame: bytes) -> bool:
        if not super().send(frame):
            return False
        self.sent += len(frame)
        if self.sent >= self.limit:
            self.close()
        return True
