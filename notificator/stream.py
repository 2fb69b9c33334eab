# -*- test-case-name: tests.test_stream -*-
"""
One open SSE response.

A L{RequestStream} wraps a twisted.web request kept open with
C{NOT_DONE_YET}.  It learns that the client went away from
C{request.notifyFinish()} and from then on drops writes and never calls
C{finish()} (which would raise after a disconnect).

Frames after the first go straight to the socket when they can
(L{RequestStream.send}): on a plain TCP connection whose send buffer is
empty, the chunk is sent at once instead of being queued for the reactor's
next write pass.  That skips two C{epoll_ctl} calls and a reactor dispatch
per frame, which is most of the cost of a heartbeat to thousands of
streams, and gets notifications out without waiting for the loop.
Anything else (TLS, HTTP/2, a backlog in the buffer, a closing
connection) goes through C{request.write} as before, so ordering, flow
control and disconnect handling stay Twisted's.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet import tcp
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
        "_request",
        "_transport",
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
        on_gone: Callable[["RequestStream", Failure | None], None],
    ) -> None:
        self._request = request
        self.user_id = user_id
        self.connection_id = connection_id
        self.connected_at = connected_at
        self.peer = peer(request)
        self.gone = False
        self._on_gone = on_gone
        transport = getattr(getattr(request, "channel", None), "transport", None)
        # Only a plain TCP (or UNIX) connection: TLS and HTTP/2 transports
        # frame the bytes themselves.
        self._transport = transport if isinstance(transport, tcp.Connection) else None
        request.notifyFinish().addBoth(self._finished)

    def send(self, frame: bytes) -> bool:
        """
        Write one frame (a chunk of the HTTP/1.1 response).  C{False} if
        the client has gone.
        """
        if self.gone:
            return False
        request = self._request
        transport = self._transport
        if (
            transport is not None
            and request.startedWriting  # type: ignore[attr-defined]
            and request.chunked  # type: ignore[attr-defined]
            and not request.finished  # type: ignore[attr-defined]
            and transport.connected
            and not transport.disconnecting
            and not transport.dataBuffer
            and not transport._tempDataLen
        ):
            # Exactly what Request.write would queue, sent now.
            data = b"%x\r\n%b\r\n" % (len(frame), frame)
            request.sentLength += len(frame)  # type: ignore[attr-defined]
            sent = transport.writeSomeData(data)
            if not isinstance(sent, int):
                # Lost: queue it, and let the reactor's write pass report it.
                sent = 0
            if sent < len(data):
                transport.write(data[sent:])
            return True
        request.write(frame)
        return True

    def close(self) -> None:
        """Finish the response (server side), unless the client already left."""
        if not self.gone:
            self._request.finish()

    def _finished(self, result: None | Failure) -> None:
        # Fires on finish() (result None) or on disconnect (a Failure).
        self.gone = True
        if isinstance(result, Failure):
            # finish() never ran, so twisted.web wrote no access-log line.
            log_unfinished(self._request)
        self._on_gone(self, result if isinstance(result, Failure) else None)
        return None


def peer(request: IRequest) -> str:
    """The client's address as text (the host, for IP connections)."""
    addr = request.getClientAddress()
    host = getattr(addr, "host", None)
    return str(host) if host is not None else str(addr)
