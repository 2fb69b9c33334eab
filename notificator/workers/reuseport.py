# -*- test-case-name: tests.test_workers_reuseport -*-
"""
Listening sockets that several processes share: C{SO_REUSEPORT}.

With C{server.workers} above 1 every worker opens its own listening socket
on the configured port with C{SO_REUSEPORT}, and the kernel (Linux) spreads
the new connections of that port over the sockets by a hash of each
connection's addresses: no process accepts for the others, and a worker
that stops takes only its own socket away.  Linux lets only processes of
the same user join a port's group, so another user's program cannot take
a share of it.

This module opens such a socket for a strports description of the kinds the
server listens on, and hands it to the reactor with
C{IReactorSocket.adoptStreamPort}, whose connections are the reactor's usual
ones (C{tcp.Server}: the fast channel's direct writes,
L{notificator.http.fast}, work on them as on a C{tcp:} endpoint's):

 - C{tcp:port=3000[:interface=...][:backlog=50]} and C{tcp6:...}: the
   syntax and defaults of Twisted's own types (C{tcp:} every IPv4
   interface, C{tcp6:} C{::}; positional arguments in their order);
 - C{https:...} (L{notificator.tls}): the same description gives the same
   OpenSSL connection creator as the endpoint (L{tls.https_listener}),
   certificate, ALPN, ciphers and session tickets; the factory is wrapped
   in a C{TLSMemoryBIOFactory} with it, as Twisted's C{listenSSL} wraps
   it, so a twisted.web C{Site} switches to HTTP/2 when ALPN chose C{h2}.

The socket is bound as Twisted binds its own: C{SO_REUSEADDR} (connections
of an earlier run in TIME_WAIT do not block the port), the address family
from the interface (an IPv6 address: C{AF_INET6}), and C{IPV6_V6ONLY} left
as the host has it, as Twisted leaves it, so C{::} takes IPv4 too exactly
where L{notificator.listening.ipv6_mode} says so and a description means
what it means for one process.

Stopping (L{ReusePortService.stopService}): a listening socket that is
closed resets the connections the kernel had already queued on it (Linux
moves them to another socket of the group only with the
C{net.ipv4.tcp_migrate_req} sysctl), so a worker that stops during a
rolling restart would refuse a few clients while the port stays open.
The service therefore keeps its own copy of the socket after the reactor
has adopted it: when the reactor has stopped listening, it accepts what
is still queued, hands those connections to the reactor
(C{adoptStreamConnection}, served like any other), and only then closes
the socket, taking it out of the group.  Only a connection whose
handshake ends in the few microseconds between that last C{accept} and
the C{close} can still be reset.
"""

from __future__ import annotations

import errno
import socket
import sys
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.abstract import isIPv6Address
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from notificator.http import fast
from notificator.listening import split_description
from notificator.tls import HTTPSListener, https_listener

log = Logger()

#: The description types a socket of this module can be opened for.
KINDS = ("tcp", "tcp6", "https")

#: Whether the kernel spreads a port's connections over its sockets
#: (Linux; elsewhere C{SO_REUSEPORT} lets the sockets bind, but does not
#: share the connections out).
BALANCED = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


@attrs.frozen
class Address:
    """
    Where a description listens, and the TLS it serves.

    @ivar description: the strports description it was read from.
    @ivar interface: the address to bind (C{""}: every IPv4 interface).
    @ivar tls: for C{https:}, the description's TLS (L{HTTPSListener});
        L{None} for plain TCP.
    """

    description: str
    interface: str
    port: int
    backlog: int
    tls: HTTPSListener | None = None

    @property
    def family(self) -> socket.AddressFamily:
        """C{AF_INET6} for an IPv6 interface, else C{AF_INET} (as Twisted's C{tcp.Port})."""
        return socket.AF_INET6 if isIPv6Address(self.interface) else socket.AF_INET


def _tcp(port: str, interface: str = "", backlog: str = "50") -> tuple[str, str, str]:
    # Twisted's tcp: parser's arguments, in its order.
    return interface, port, backlog


def _tcp6(port: str, backlog: str = "50", interface: str = "::") -> tuple[str, str, str]:
    # Twisted's tcp6: parser's arguments, in its order.
    return interface, port, backlog


def parse(description: str, reactor: Any) -> Address:
    """
    Read a C{tcp:}, C{tcp6:} or C{https:} description (for C{https:},
    load and check its files, as its endpoint parser does).

    @param reactor: the clock of the TLS session-ticket windows.
    @raise ValueError: one line: another type, an unknown or repeated
        argument, a port or backlog that is not a number, a TLS file that
        cannot be used (L{notificator.tls.TLSFileError}).
    """
    kind, args, kwargs = split_description(description)
    if kind not in KINDS:
        raise ValueError(
            f"{description!r}: a worker listens on tcp:, tcp6: or https: descriptions, not {kind}:"
        )
    tls = None
    try:
        if kind == "https":
            tls = https_listener(reactor, *args, **kwargs)
            interface, port, backlog = tls.interface, tls.port, tls.backlog
        else:
            interface, port_text, backlog_text = (_tcp if kind == "tcp" else _tcp6)(*args, **kwargs)
            try:
                port, backlog = int(port_text), int(backlog_text)
            except ValueError:
                raise ValueError(
                    f"{kind}: port and backlog must be integers, got {port_text!r}, {backlog_text!r}"
                )
    except TypeError as e:
        # An unknown or repeated argument, said as serverFromString says it.
        message = str(e).replace("https_listener() ", "").replace(f"_{kind}() ", "")
        raise ValueError(f"{kind}: {message}")
    if not 0 <= port <= 65535:
        raise ValueError(f"{kind}: port {port} is not between 0 and 65535")
    return Address(description, interface, port, backlog, tls)


def open_socket(address: Address) -> socket.socket:
    """
    A non-blocking listening socket for C{address}, with C{SO_REUSEPORT}
    and C{SO_REUSEADDR}, bound and listening with its backlog (and, as
    every socket Python makes, closed on C{exec}).

    @raise CannotListenError: as Twisted's C{listenTCP} raises it.
    """
    family = address.family
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        where: Any = (address.interface, address.port)
        if family == socket.AF_INET6:
            # As Twisted's _resolveIPv6: numeric only, with a scope id kept.
            flags = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
            where = socket.getaddrinfo(address.interface, address.port, 0, 0, 0, flags)[0][4]
        sock.bind(where)
        sock.listen(address.backlog)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise CannotListenError(address.interface, address.port, e)
    return sock


#: Whether Linux moves the connections queued on a closing socket of a
#: C{SO_REUSEPORT} group to another socket of the group (Linux 5.14 and later).
MIGRATE_REQ = "/proc/sys/net/ipv4/tcp_migrate_req"


def requests_migrate(path: str = MIGRATE_REQ) -> bool | None:
    """
    C{net.ipv4.tcp_migrate_req}: whether a connection that completes its
    handshake as an old worker closes its socket goes to another worker
    (true) or is reset (false); L{None} where the kernel has no such
    setting.
    """
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip() != "0"
    except (OSError, ValueError):
        return None


def _stop_listening(port: IListeningPort) -> object:
    stopped: object = port.stopListening()  # (IListeningPort is unannotated)
    return stopped


class ReusePortService(Service):
    """
    Listens on one description with a socket of its own (L{open_socket})
    while it runs, as C{strports.service} does with an endpoint: it
    listens when started (in C{privilegedStartService}, before twistd's
    C{--uid} takes root away), and stops listening when stopped; its stop
    fires when the socket is closed, after the connections still queued
    on it were handed to the reactor (see the module docstring).

    @ivar address: what the description asks for (L{parse}).
    @ivar port: the reactor's listening port while listening, else L{None}.
    """

    port: IListeningPort | None = None

    def __init__(
        self,
        reactor: Any,
        description: str,
        factory: IProtocolFactory,
        fast_accept: bool = False,
    ) -> None:
        """
        @param reactor: an C{IReactorSocket} (and the TLS clock).
        @param fast_accept: accept with the fast channel's leaner loop
            (L{notificator.http.fast.fast_port}).
        @raise ValueError: a description this module cannot listen on (L{parse}).
        """
        self._reactor = reactor
        self._fast_accept = fast_accept
        self.address = parse(description, reactor)
        self.factory = factory
        self._socket: socket.socket | None = None
        self._factory: IProtocolFactory = factory

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        super().startService()
        if self.port is None:
            self._listen()

    def _listen(self) -> None:
        address = self.address
        sock = open_socket(address)
        factory = self.factory
        if address.tls is not None:
            factory = TLSMemoryBIOFactory(address.tls.creator, False, factory)
            address.tls.note()
        try:
            port = self._reactor.adoptStreamPort(sock.fileno(), sock.family, factory)
        except BaseException:
            sock.close()
            raise
        if self._fast_accept:
            fast.fast_port(port)
        # Our copy of the socket stays open until the stop (see the module docstring).
        self._socket = sock
        self._factory = factory
        self.port = port
        log.info(
            "listening with SO_REUSEPORT on {interface} port {port} ({description})",
            interface=address.interface or "0.0.0.0",
            port=port.getHost().port,
            description=address.description,
        )

    def stopService(self) -> Deferred[None]:
        super().stopService()
        port, sock = self.port, self._socket
        self.port = self._socket = None
        if port is None or sock is None:
            return succeed(None)
        stopping: Deferred[object] = maybeDeferred(_stop_listening, port)
        return stopping.addBoth(self._close, sock)

    def _close(self, result: object, sock: socket.socket) -> None:
        try:
            served = self._serve_queued(sock)
        finally:
            sock.close()
        if served:
            log.info(
                "{count} {noun} queued on the closing listener {description} served",
                count=served,
                noun="connection" if served == 1 else "connections",
                description=self.address.description,
            )
        if isinstance(result, Failure):
            log.failure(
                "stopping {description} failed", result, description=self.address.description
            )

    def _serve_queued(self, sock: socket.socket) -> int:
        """Hand every connection queued on C{sock} to the reactor; how many."""
        served = 0
        while True:
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return served
            except OSError as e:
                if e.errno == errno.ECONNABORTED:
                    continue  # reset by its client while it waited: the next one
                # Out of descriptors: the rest are reset at the close.
                log.warn(
                    "could not take the connections queued on {description}: {reason}",
                    description=self.address.description,
                    reason=e.strerror or str(e),
                )
                return served
            with conn:
                conn.setblocking(False)
                try:
                    self._reactor.adoptStreamConnection(conn.fileno(), conn.family, self._factory)
                except Exception:
                    log.failure(
                        "a connection queued on {description} could not be served",
                        description=self.address.description,
                    )
                    # The reactor's copy of it may be left open: end the
                    # connection itself.
                    try:
                        conn.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    continue
            served += 1
