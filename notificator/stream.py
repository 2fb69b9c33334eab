# -*- test-case-name: tests.test_stream -*-
"""
One open SSE response.

A L{RequestStream} wraps a twisted.web request kept open with
C{NOT_DONE_YET}.  It learns that the client went away from
C{request.notifyFinish()} and from then on drops writes and never calls
C{finish()} (which would raise after a disconnect).

Writes go through C{request.write}; over plain TCP the channel
(L{notificator.channel}) sends them straight to the socket.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

from notificator.logs import log_unfinished


class RequestStream:
    """
    An event stream on an open request.

    @ivar user_id: whose notifications this stream receives.
    @ivar connection_id: unique within the process, for logs and the monitor.
    @ivar connected_at: POSIX time the stream opened.
    @ivar peer: the client's address, for logs and the monitor.
    """

    __slots__ = (
        "request",
        "_write",
        "user_id",
        "connection_id",
        "connected_at",
        "peer",
        "gone",
        "_on_gone",
    )

    def __init__(
        self,
        request: IRequest,
        user_id: str,
        connection_id: int,
        connected_at: float,
        on_gone: Callable[[RequestStream, Failure | None], None],
    ) -> None:
        self.request = request
        self._write = request.write
        self.user_id = user_id
        self.connection_id = connection_id
        self.connected_at = connected_at
        self.peer = peer(request)
        self.gone = False
        self._on_gone = on_gone
        request.notifyFinish().addBoth(self._finished)

    def send(self, frame: bytes) -> bool:
        """
        Write one frame (a chunk of the HTTP/1.1 response).  C{False} if
        the client has gone.
        """
        if self.gone:
            return False
        self._write(frame)
        return True

    def close(self) -> None:
        """Finish the response (server side), unless the client already left."""
        if not self.gone:
            self.request.finish()

    def _finished(self, result: None | Failure) -> None:
        # Fires on finish() (result None) or on disconnect (a Failure).
        self.gone = True
        if isinstance(result, Failure):
            # finish() never ran, so twisted.web wrote no access-log line.
            log_unfinished(self.request)
        self._on_gone(self, result if isinstance(result, Failure) else None)
        return None


def peer(request: IRequest) -> str:
    """
    The client's address as text: the request's C{client_host} (L{web.Request}:
    behind a trusted proxy, from X-Forwarded-For), else the host of the
    connection's peer.
    """
    client = getattr(request, "client_host", None)
    if client is not None:
        return str(client)
    return peer_host(request)


def peer_host(request: IRequest) -> str:
    """The host of the connection's peer as text (the address for other transports)."""
    addr = request.getClientAddress()
    host = getattr(addr, "host", None)
    return str(host) if host is not None else str(addr)


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
