# -*- test-case-name: tests.test_perf_paths -*-
"""
The HTTP/1.1 channel: twisted.web's L{HTTPChannel}, with fewer system
calls per response.

twisted.web writes a response's head and each body chunk to the
transport, which queues them, asks the reactor to watch the socket for
writability (an C{epoll_ctl}), sends on the reactor's next pass and stops
watching (another C{epoll_ctl}).  For this server's traffic (a small
publish answer, a small SSE frame) that bookkeeping cost more than the
send itself.  L{Channel} instead:

 - keeps the head of a response produced while handling received data
   and sends it with the first body bytes, so a publish answer or the
   start of a stream is one C{send(2)};
 - writes straight to the socket when nothing is queued on it (a plain
   TCP or UNIX connection only).  Anything that cannot go at once (a
   full socket buffer, TLS, a closing connection) is handed to the
   transport as before, so ordering, flow control and disconnect
   handling stay Twisted's.

This uses two attributes of Twisted's C{tcp.Connection} (C{dataBuffer}
and C{_tempDataLen}, its queue); L{tests.test_perf_paths} checks the
behaviour against the real class.  HTTP/2 streams do not use this channel.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp
from twisted.web import http


class Channel(http.HTTPChannel):
    """L{HTTPChannel} that sends a response's writes with fewer system calls."""

    _head: bytes | None = None
    _receiving = 0
    _socket: tcp.Connection | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        # Only a plain socket: TLS transports encrypt and frame the bytes.
        if isinstance(self.transport, tcp.Connection):
            self._socket = self.transport

    def dataReceived(self, data: bytes) -> None:
        # Requests are usually answered inside this call: hold each head
        # until its first body bytes, and let nothing outlive the call.
        self._receiving += 1
        try:
            super().dataReceived(data)
        finally:
            self._receiving -= 1
            if not self._receiving:
                self._flush()

    def writeHeaders(
        self, version: bytes, code: bytes, reason: bytes, headers: Any
    ) -> None:
        # As HTTPChannel.writeHeaders (it gets Headers from Request.write).
        head = [version, b" ", code, b" ", reason, b"\r\n"]
        for name, values in headers.getAllRawHeaders():
            for value in values:
                head += (name, b": ", value, b"\r\n")
        head.append(b"\r\n")
        self._flush()
        self._head = b"".join(head)
        if not self._receiving:
            self._flush()

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            data = head + data
        self._send(data)

    def writeSequence(self, iovec: Any) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._send(b"".join((head, *iovec)))
        else:
            self._send(b"".join(iovec))

    def requestDone(self, request: Any) -> None:
        # A response without body bytes (204, HEAD) still has its head held.
        self._flush()
        super().requestDone(request)

    def loseConnection(self) -> None:
        self._flush()
        super().loseConnection()

    def connectionLost(self, reason: Any) -> None:
        self._head = None
        super().connectionLost(reason)

    def _flush(self) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._send(head)

    def _send(self, data: bytes) -> None:
        sock = self._socket
        if (
            sock is not None
            and sock.connected
            and not sock.disconnecting
            and not sock.dataBuffer
            and not sock._tempDataLen
        ):
            sent = sock.writeSomeData(data)
            if not isinstance(sent, int):
                # The connection is lost: queue the data, and let the
                # reactor's write pass find out and report it.
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        self.transport.write(data)


def protocol() -> http._GenericHTTPChannelProtocol:
    """
    A L{Site}'s C{protocol}: L{Channel} in the wrapper twisted.web uses to
    switch to HTTP/2 when TLS negotiates it.
    """
    return http._GenericHTTPChannelProtocol(Channel())
