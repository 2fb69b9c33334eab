# -*- test-case-name: tests.test_redis_link -*-
"""
Cluster mode's connections to Redis, through txredisapi: Redis's address
as a client endpoint (L{_Endpoint}; a Unix socket for C{unix://}, TLS for
C{rediss://} with the CA of L{load_trust}), and txredisapi's factory and
subscriber protocol adapted
to tell the broker (L{notificator.broker.redis.ordering.RedisBroker}) when
a connection is ready, lost or refused (L{_Factory}, L{_Subscriber}).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import txredisapi
from twisted.internet.defer import (
    CancelledError,
    Deferred,
)
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.ssl import Certificate, optionsForClientTLS, trustRootFromCertificates
from twisted.python.failure import Failure
from zope.interface import implementer

from notificator.config import RedisAddress

if TYPE_CHECKING:
    from notificator.broker.redis.ordering import RedisBroker

#: Seconds between the PINGs that measure Redis's round-trip time and find
#: a connection that died without a word.
PING_INTERVAL = 5.0


@implementer(IStreamClientEndpoint)
class _Endpoint:
    """
    Redis's address as a client endpoint (TLS for C{rediss://}), which
    remembers why the last attempt to connect failed, for
    L{notificator.broker.redis.ordering.RedisBroker.health}.
    """

    def __init__(
        self,
        reactor: Any,
        address: RedisAddress,
        timeout: float,
        failed: Callable[[str], None],
        trust: Any = None,
    ) -> None:
        endpoint: IStreamClientEndpoint
        if address.path is not None:
            # unix:///path/redis.sock: the private Redis of server.workers.
            endpoint = UNIXClientEndpoint(reactor, address.path, timeout=timeout)
        else:
            endpoint = HostnameEndpoint(reactor, address.host, address.port, timeout=timeout)
        if address.tls:
            # Hands back the protocol inside the TLS wrapper, as txredisapi wants.
            options = optionsForClientTLS(address.host, trustRoot=trust)
            endpoint = wrapClientTLS(options, endpoint)
        self._endpoint = endpoint
        self._failed = failed
        self._address = address

    def __repr__(self) -> str:
        # In twisted's "Scheduling retry ... to connect <...>" lines.
        return f"<Redis at {self._address}>"

    def connect(self, factory: Any) -> Deferred[Any]:
        d = self._endpoint.connect(factory)
        d.addErrback(self._connect_failed)
        return d

    def _connect_failed(self, failure: Failure) -> Failure:
        if not failure.check(CancelledError):
            self._failed(failure.getErrorMessage())
        return failure


def load_trust(path: str) -> Any:
    """
    The trust root made of the certificates in the PEM file C{path}
    (C{cluster.ca}).

    @raise ValueError: one line: the file cannot be read or holds no
        certificate.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError(f"cluster.ca: {path}: {e.strerror or e}")
    blocks = re.findall(
        rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", data, re.DOTALL
    )
    try:
        if not blocks:
            raise ValueError("no PEM certificate in it")
        return trustRootFromCertificates([Certificate.loadPEM(block) for block in blocks])
    except Exception as e:  # OpenSSL's errors are of several types
        raise ValueError(f"cluster.ca: {path}: not a CA certificate file ({e})")


class _Subscriber(txredisapi.SubscriberProtocol):  # type: ignore[misc]  # txredisapi is untyped
    """The subscription's protocol: hands each message to the broker."""

    on_message: Callable[[bytes], None] = staticmethod(lambda payload: None)

    def messageReceived(self, pattern: Any, channel: Any, message: bytes) -> None:
        self.on_message(message)


class _Factory(txredisapi.RedisFactory):  # type: ignore[misc]  # txredisapi is untyped
    """
    A txredisapi pool of one connection that tells the broker when its
    connection is ready (after AUTH and SELECT) and when it is lost, and
    uses the broker's clock for reply timeouts.
    """

    noisy = False

    def __init__(
        self,
        broker: RedisBroker,
        role: str,
        protocol: type,
        address: RedisAddress,
        timeout: float,
        max_delay: float,
    ) -> None:
        super().__init__(
            address.path or f"{address.host}:{address.port}",
            address.db or None,
            1,
            isLazy=True,
            charset=None,
            password=address.password,
            replyTimeout=timeout,
            convertNumbers=False,
            username=address.username,
        )
        self.protocol = protocol
        self.initialDelay = min(1.0, max_delay)
        self.maxDelay = max_delay
        self._broker = broker
        self._role = role

    def buildProtocol(self, addr: Any) -> Any:
        p = super().buildProtocol(addr)
        p.callLater = self._broker._clock.callLater
        if isinstance(p, _Subscriber):
            p.on_message = self._broker._received
        lost = p.connectionLost

        def connection_lost(reason: Failure) -> None:
            self._broker._lost_because(reason)
            lost(reason)

        p.connectionLost = connection_lost
        return p

    def addConnection(self, conn: Any) -> None:
        super().addConnection(conn)
        if conn in self.pool:
            self._broker._connection_made(self._role, self, conn)

    def delConnection(self, conn: Any) -> None:
        super().delConnection(conn)
        self._broker._connection_lost(self._role, self, conn)

    def connectionError(self, why: str) -> None:
        # AUTH or SELECT refused: txredisapi stops trying for good.
        self._broker._connection_refused(self._role, self, why)
