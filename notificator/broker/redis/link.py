# -*- test-case-name: tests.test_redis_link -*-
"""
Cluster mode's link to Redis (L{TxRedisLink}), the one module that talks
to txredisapi: two connections (commands, and the subscription to the
cluster channel), their health, reconnecting, the PINGs that measure the
round trip and find a dead connection, the barrier on the subscription,
and running the Lua scripts.  The broker's ordering
(L{notificator.broker.redis.ordering.RedisBroker}) sees only the small
interface it declares (L{notificator.broker.redis.ordering.Link}).

What txredisapi is made to do beyond its API is here and nowhere else
(tests/test_redis_link.py checks it against txredisapi's real classes):
its protocols take the link's clock for their reply timeouts (the class
attribute C{callLater} is the global reactor's), tell the link when their
connection is lost and why, and hand the subscription's messages over
(L{_Subscriber}); its pool of one connection tells the link when that
connection is ready, lost or refused (L{_Factory}, through the pool's
C{addConnection}, C{delConnection} and C{connectionError}).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import txredisapi
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    fail,
    maybeDeferred,
)
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectError, ConnectionClosed, ConnectionDone
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.ssl import Certificate, optionsForClientTLS, trustRootFromCertificates
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from notificator.broker import Unavailable
from notificator.broker.redis.scripts import Script
from notificator.config import ClusterConfig, RedisAddress
from notificator.timers import Ticker

if TYPE_CHECKING:
    from notificator.broker.redis.ordering import Receiver

#: Seconds between the PINGs that measure Redis's round-trip time and find
#: a connection that died without a word.
PING_INTERVAL = 5.0


@implementer(IStreamClientEndpoint)
class _Endpoint:
    """
    Redis's address as a client endpoint (a Unix socket for C{unix://},
    TLS for C{rediss://}), which remembers why the last attempt to connect
    failed, for L{TxRedisLink.health}.

    @param endpoint: what to connect with instead of the address (tests:
        connections in memory).
    """

    def __init__(
        self,
        reactor: Any,
        address: RedisAddress,
        timeout: float,
        failed: Callable[[str], None],
        trust: Any = None,
        endpoint: IStreamClientEndpoint | None = None,
    ) -> None:
        if endpoint is None and address.path is not None:
            # unix:///path/redis.sock: the private Redis of server.workers.
            endpoint = UNIXClientEndpoint(reactor, address.path, timeout=timeout)
        elif endpoint is None:
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


def _build_command(self: Any, *args: Any, **kwargs: Any) -> bytes:
    """
    A command in Redis's protocol, as txredisapi's C{_build_command} makes
    it, with less work per argument (bytes, as the broker passes, are taken
    as they are).
    """
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if type(arg) is not bytes:
            arg = self._encode_value(arg)
        parts += (b"$%d\r\n" % len(arg), arg, b"\r\n")
    return b"".join(parts)


class _Commands(txredisapi.BaseRedisProtocol):  # type: ignore[misc]  # txredisapi is untyped
    """The command connection's protocol, its replies read by txredisapi's parser."""

    _build_command = _build_command


class _HiredisCommands(txredisapi.HiredisProtocol):  # type: ignore[misc]  # txredisapi is untyped
    """
    The command connection's protocol, its replies read by C{hiredis}.
    Reads as txredisapi's C{HiredisProtocol} does without what the link
    never uses (C{charset} and C{convertNumbers} off, no C{MULTI}).
    """

    _build_command = _build_command

    def dataReceived(self, data: bytes, unpause: bool = False) -> None:
        reader = self._reader
        reader.feed(data)
        reply = reader.gets()
        while reply is not False:
            self.replyReceived(reply)
            reply = reader.gets()


class _Subscriber(txredisapi.SubscriberProtocol):  # type: ignore[misc]  # txredisapi is untyped
    """
    The subscription's protocol: hands each message to the link's receiver,
    its replies read by txredisapi's parser (whatever C{SubscriberProtocol}
    was built on: L{_HiredisSubscriber} reads with C{hiredis}).
    """

    on_message: Callable[[bytes], None] = staticmethod(lambda payload: None)

    # txredisapi's SubscriberProtocol is built on HiredisProtocol when
    # hiredis is installed: this one reads with txredisapi's own parser.
    __init__ = txredisapi.BaseRedisProtocol.__init__
    dataReceived = txredisapi.LineReceiver.dataReceived
    _build_command = _build_command

    def messageReceived(self, pattern: Any, channel: Any, message: bytes) -> None:
        self.on_message(message)


class _HiredisSubscriber(_Subscriber):
    """
    The subscription's protocol, its replies read by C{hiredis}: a message
    goes to the receiver straight from the reader, other replies through
    txredisapi's C{SubscriberProtocol.replyReceived}.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reader = txredisapi.hiredis.Reader(
            protocolError=txredisapi.InvalidData, replyError=txredisapi.ResponseError
        )

    def dataReceived(self, data: bytes, unpause: bool = False) -> None:
        reader = self._reader
        reader.feed(data)
        on_message = self.on_message
        reply = reader.gets()
        while reply is not False:
            if type(reply) is list and len(reply) == 3 and reply[0] == b"message":
                on_message(reply[2])
            else:
                self.replyReceived(reply)
            reply = reader.gets()


#: The protocols of each parser of Redis's replies: (commands, subscription).
PROTOCOLS: dict[str, tuple[type, type]] = {
    "hiredis": (_HiredisCommands, _HiredisSubscriber),
    "python": (_Commands, _Subscriber),
}


def default_parser() -> str:
    """C{hiredis} (C, much less CPU per reply) when installed, else txredisapi's own."""
    return "python" if txredisapi.hiredis is None else "hiredis"


def parser_name(parser: str) -> str:
    """How the start-up line names C{parser}."""
    if parser == "hiredis":
        return f"hiredis {getattr(txredisapi.hiredis, '__version__', '')}".rstrip()
    return "txredisapi's pure-Python parser (hiredis is not installed)"


class _Factory(txredisapi.RedisFactory):  # type: ignore[misc]  # txredisapi is untyped
    """
    A txredisapi pool of one connection that tells the link when its
    connection is ready (after AUTH and SELECT) and when it is lost, and
    uses the link's clock for reply timeouts.
    """

    noisy = False

    def __init__(
        self,
        link: TxRedisLink,
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
        self._link = link
        self._role = role

    def buildProtocol(self, addr: Any) -> Any:
        p = super().buildProtocol(addr)
        p.callLater = self._link._clock.callLater
        if isinstance(p, _Subscriber):
            p.on_message = self._link._on_message
        lost = p.connectionLost

        def connection_lost(reason: Failure) -> None:
            self._link._lost_because(reason)
            lost(reason)

        p.connectionLost = connection_lost
        return p

    def addConnection(self, conn: Any) -> None:
        super().addConnection(conn)
        if conn in self.pool:
            self._link._connection_made(self._role, self, conn)

    def delConnection(self, conn: Any) -> None:
        super().delConnection(conn)
        self._link._connection_lost(self._role, self, conn)

    def connectionError(self, why: str) -> None:
        # AUTH or SELECT refused: txredisapi stops trying for good.
        self._link._connection_refused(self._role, self, why)


def _ignore(message: bytes) -> None:
    """Where the subscription's messages go before L{TxRedisLink.start}."""


class TxRedisLink:
    """
    The link to Redis over txredisapi
    (L{notificator.broker.redis.ordering.Link}): a connection for commands
    and one subscribed to the cluster channel, each reconnected with
    backoff (txredisapi does not subscribe again by itself: this does).
    Available (L{health} is L{None}) while both are up and subscribed.

    @param clock: the reactor: time, and connecting to Redis.
    @param cluster: C{cluster.*} (C{redis} must be set).
    @param node: this node's name (the connections' client name).
    @param timer: a monotonic clock in seconds, for round-trip times.
    @param endpoint: what to connect with instead of C{cluster.redis}'s
        address (tests: connections in memory).
    @param parser: what reads Redis's replies, a key of L{PROTOCOLS}
        (default: L{default_parser}).
    @ivar outages: times Redis became unavailable to this node.
    @ivar rtt_last: the round trip of the last PING, in seconds.
    @raise ValueError: C{cluster.redis} is not set, or C{cluster.ca} is
        not a CA file (one line).
    """

    ping_interval = PING_INTERVAL

    def __init__(
        self,
        clock: Any,
        cluster: ClusterConfig,
        node: str,
        timer: Callable[[], float] = time.perf_counter,
        endpoint: IStreamClientEndpoint | None = None,
        parser: str | None = None,
    ) -> None:
        # The namespace of the broker's log lines before issue 18 split it:
        # it is part of every log line, and no log line changes.
        self.log = Logger("notificator.redisbroker.RedisBroker", self)
        if cluster.redis is None:
            raise ValueError("cluster.redis is not set")
        self._clock = clock
        self._address = cluster.redis
        self._timeout = cluster.timeout
        self._max_delay = cluster.reconnect_max_delay
        self._timer = timer
        self._node = node
        self.parser = default_parser() if parser is None else parser
        if self.parser == "hiredis" and txredisapi.hiredis is None:
            raise ValueError("hiredis is not installed")
        self._client_name = re.sub(r"[^\w.:-]", "_", f"notificator-{node}")[:100].encode()
        trust = load_trust(cluster.ca) if cluster.ca and cluster.redis.tls else None
        self._endpoint = _Endpoint(
            clock, self._address, self._timeout, self._connect_failed, trust, endpoint
        )
        self._channel = b""
        self._receiver: Receiver | None = None
        self._on_message: Callable[[bytes], None] = _ignore

        self._factories: dict[str, _Factory] = {}
        self._cmd: Any = None  # the command connection, when ready
        self._sub: Any = None  # the subscription's connection, when ready
        self._subscribed = False
        self._stopping = False
        self._up = False
        self._down_since = 0.0
        self._last_error: str | None = None
        self._refused: dict[str, Any] = {}  # role -> pending rebuild (AUTH refused)
        self._barrier_next: list[Deferred[None]] = []
        self._barrier_busy = False
        self._pinger: Ticker | None = None

        self.outages = 0
        self.rtt_last: float | None = None
        self.rtt_count = 0
        self.rtt_sum = 0.0

    # -- starting and stopping --------------------------------------------------

    def start(self, channel: bytes, receiver: Receiver) -> None:
        self._channel = channel
        self._receiver = receiver
        self._on_message = receiver.received
        self._stopping = False
        self._down_since = self._clock.seconds()
        for role in ("commands", "subscription"):
            self._connect(role)
        self._pinger = Ticker(
            self._ping, "pinging Redis", self._clock, self.ping_interval, self.log.namespace
        )
        self._pinger.start()
        self.log.info(
            "cluster node {node}: connecting to Redis at {address}",
            node=self._node,
            address=str(self._address),
        )
        self.log.info("Redis replies read by {parser}", parser=parser_name(self.parser))

    def _connect(self, role: str) -> None:
        commands, subscriber = PROTOCOLS[self.parser]
        protocol = subscriber if role == "subscription" else commands
        factory = _Factory(self, role, protocol, self._address, self._timeout, self._max_delay)
        self._factories[role] = factory
        factory.startConnecting(self._endpoint)

    def stop(self) -> Deferred[None]:
        self._stopping = True
        self._up = False
        if self._pinger is not None:
            self._pinger.stop()
        for call in self._refused.values():
            if call.active():
                call.cancel()
        self._refused.clear()
        stops = [maybeDeferred(f.disconnect) for f in self._factories.values()]
        self._factories.clear()
        done: Deferred[None] = Deferred()

        def stopped(_: Any = None) -> None:
            if guard.active():
                guard.cancel()
            if not done.called:
                done.callback(None)

        # Waits at most the timeout for the connections to close.
        guard = self._clock.callLater(self._timeout, stopped)

        DeferredList(stops, consumeErrors=True).addBoth(stopped)
        return done

    # -- connection events --------------------------------------------------------

    def _connect_failed(self, reason: str) -> None:
        if self._last_error != reason:
            self.log.warn(
                "cannot reach Redis at {address}: {reason} (trying again)",
                address=str(self._address),
                reason=reason,
            )
        self._last_error = reason

    def _connection_made(self, role: str, factory: _Factory, conn: Any) -> None:
        if self._factories.get(role) is not factory or self._stopping:
            conn.transport.loseConnection()
            return
        named = self._command(conn, b"CLIENT", b"SETNAME", self._client_name)
        if role == "commands":
            # Usable once Redis has answered (over TLS: after the handshake).
            named.addBoth(self._commands_ready, factory, conn)
        else:
            named.addErrback(lambda _: None)
            self._sub = conn
            conn.subscribe([self._channel]).addCallbacks(
                self._subscribed_to,
                self._not_subscribed,
                callbackArgs=(conn,),
                errbackArgs=(conn,),
            )

    def _commands_ready(self, reply: Any, factory: _Factory, conn: Any) -> None:
        if isinstance(reply, Failure) and not reply.check(txredisapi.ResponseError):
            return  # lost before it answered
        if self._factories.get("commands") is not factory or self._stopping or not conn.connected:
            return
        self._cmd = conn
        self._last_error = None
        self._ping()
        self._update()

    def _lost_because(self, reason: Failure) -> None:
        if not reason.check(ConnectionDone) and not self._stopping:
            self._last_error = reason.getErrorMessage()

    def _subscribed_to(self, reply: Any, conn: Any) -> None:
        if conn is not self._sub:
            return
        self._subscribed = True
        self._last_error = None
        if self._receiver is not None:
            self._receiver.subscribed()
        self._update()

    def _not_subscribed(self, failure: Failure, conn: Any) -> None:
        if conn is self._sub and not self._stopping:
            reason = failure.getErrorMessage()
            self.log.warn("subscribing to Redis failed: {reason}", reason=reason)
            self._last_error = f"SUBSCRIBE: {reason}"
            conn.transport.loseConnection()

    def _connection_lost(self, role: str, factory: _Factory, conn: Any) -> None:
        if role == "commands":
            if conn is self._cmd:
                self._cmd = None
        elif conn is self._sub:
            self._sub = None
            self._subscribed = False
            if self._receiver is not None:
                self._receiver.subscription_lost()
        self._update()

    def _connection_refused(self, role: str, factory: _Factory, why: str) -> None:
        """AUTH or SELECT refused: txredisapi gave up; start afresh later."""
        if self._last_error != why:
            self.log.error(
                "{reason}; trying again every {delay:g} s", reason=why, delay=self._max_delay
            )
        self._last_error = why
        if self._stopping or self._factories.get(role) is not factory or role in self._refused:
            return

        def again() -> None:
            self._refused.pop(role, None)
            if self._stopping or self._factories.get(role) is not factory:
                return
            factory.disconnect()
            self._connect(role)

        self._refused[role] = self._clock.callLater(self._max_delay, again)

    def _update(self) -> None:
        """Note a change of availability: log it, count outages, tell the receiver."""
        up = self._cmd is not None and self._subscribed and not self._stopping
        if up == self._up:
            return
        self._up = up
        now = self._clock.seconds()
        if up:
            self.log.info(
                "Redis at {address} available (after {seconds:.1f} s)",
                address=str(self._address),
                seconds=now - self._down_since,
            )
            if self._receiver is not None:
                self._receiver.available()
        else:
            self.outages += 1
            self._down_since = now
            if not self._stopping:
                self.log.warn("Redis unavailable: {reason}", reason=self._problem())

    # -- state --------------------------------------------------------------------

    def health(self) -> str | None:
        if self._up:
            return None
        return self._problem()

    def outage_seconds(self) -> float:
        if self._up:
            return 0.0
        return max(0.0, float(self._clock.seconds()) - self._down_since)

    def _problem(self) -> str:
        if self._stopping:
            return "the node is stopping"
        where = f"Redis at {self._address}"
        seconds = self._clock.seconds() - self._down_since
        if self._cmd is None and self._sub is None:
            what = f"{where} is unreachable"
        elif self._cmd is None:
            what = f"the command connection to {where} is lost"
        elif self._sub is None:
            what = f"the subscription to {where} is lost"
        else:
            what = f"subscribing to {where}"
        if self._last_error:
            what += f" ({self._last_error})"
        return f"{what}, for {seconds:.0f} s; reconnecting"

    # -- Redis calls --------------------------------------------------------------

    def _command(self, conn: Any, *args: Any) -> Deferred[Any]:
        return maybeDeferred(conn.execute_command, *args)

    def eval(self, script: Script, keys: Sequence[bytes], args: Sequence[Any]) -> Deferred[Any]:
        """Run C{script} on the command connection; errors become L{Unavailable}."""
        conn = self._cmd
        if conn is None:
            return fail(Unavailable(self._problem()))
        d = self._command(conn, b"EVALSHA", script.sha, len(keys), *keys, *args)

        def noscript(failure: Failure) -> Any:
            failure.trap(txredisapi.ResponseError)
            if not str(failure.value).startswith("NOSCRIPT") or self._cmd is None:
                return failure
            return self._command(self._cmd, b"EVAL", script.source, len(keys), *keys, *args)

        d.addErrback(noscript)
        d.addErrback(self._unavailable)
        return d

    def time(self) -> Deferred[int]:
        """Redis's clock (C{TIME}), in milliseconds."""
        conn = self._cmd
        if conn is None:
            return fail(Unavailable(self._problem()))

        def ms(reply: Sequence[Any]) -> int:
            return int(reply[0]) * 1000 + int(reply[1]) // 1000

        return self._command(conn, b"TIME").addCallback(ms)

    def _unavailable(self, failure: Failure) -> Failure:
        """A failed call to Redis, as the L{Unavailable} the web layer answers 503 to."""
        if failure.check(Unavailable):
            return failure
        if failure.check(txredisapi.TimeoutError):
            raise Unavailable(
                f"no answer from Redis within {self._timeout:g} s (it may have been recorded)"
            )
        if failure.check(txredisapi.ConnectionError, ConnectionClosed) and (
            failure.getErrorMessage() != "Not connected"
        ):
            raise Unavailable(
                "the connection to Redis was lost before it answered (it may have been recorded)"
            )
        if failure.check(txredisapi.RedisError, ConnectError):
            raise Unavailable(f"Redis: {failure.getErrorMessage()}")
        return failure

    def _ping(self) -> None:
        """Measure the round trip on the command connection; check the subscription."""
        conn = self._cmd
        if conn is not None:
            start = self._timer()

            def measured(_: Any) -> None:
                rtt = self._timer() - start
                self.rtt_last = rtt
                self.rtt_count += 1
                self.rtt_sum += rtt

            # A timeout drops the connection (txredisapi), which reconnects.
            self._command(conn, b"PING").addCallbacks(measured, lambda _: None)
        if self._subscribed:
            self.barrier().addErrback(lambda _: None)

    def barrier(self) -> Deferred[None]:
        """
        Fires once every message published before now has been received
        on the subscription: a C{PING} there, whose reply comes after them.
        """
        d: Deferred[None] = Deferred()
        self._barrier_next.append(d)
        if not self._barrier_busy:
            self._send_barrier()
        return d

    def _send_barrier(self) -> None:
        waiting, self._barrier_next = self._barrier_next, []
        conn = self._sub
        if conn is None or not self._subscribed:
            for d in waiting:
                d.errback(Unavailable("the subscription to Redis is lost"))
            return
        self._barrier_busy = True

        def done(result: Any) -> None:
            self._barrier_busy = False
            for d in waiting:
                if isinstance(result, Failure):
                    d.errback(Unavailable(f"Redis: {result.getErrorMessage()}"))
                else:
                    d.callback(None)
            if self._barrier_next:
                self._send_barrier()

        self._command(conn, b"PING").addBoth(done)
