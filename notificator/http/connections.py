# -*- test-case-name: tests.test_http_connections -*-
"""
The site's connections and what each may hold (C{limits.connections},
C{limits.headerTimeout}, C{limits.bodyTimeout}).

 - L{Connections}, a service: counts the open connections (HTTP/1.x, TLS,
   HTTP/2, whatever they carry) against C{limits.connections}, and runs
   two clocks on one call of the reactor's:
    - the I{head clock}: a connection must send a whole request head within
      C{limits.headerTimeout} seconds of opening (the TLS handshake
      included) and of its previous response being done, however it
      trickles its bytes (twisted.web's own idle timeout starts again on
      every byte); an HTTP/2 connection must have a stream open, and is
      timed whenever it has none, whatever PING, SETTINGS or WINDOW_UPDATE
      frames it sends (a GOAWAY, then the close).  An open event stream is
      never timed;
    - the I{body clock}: a request must send its whole body within
      C{limits.bodyTimeout} seconds of the end of its head; after that it is
      answered 408
      (L{notificator.http.request.Request.body_timed_out}).
 - L{ConnectionProtocol}: sits between each transport and the site's
   protocol (ours or twisted.web's), to count and time it; the site
   (L{notificator.http.site.Site.buildProtocol}) puts it around each.

At C{limits.connections} a new connection takes the place of one that does
the least with its descriptor, as nginx reuses idle connections when it runs
out of C{worker_connections}: one being closed, else the one that has waited
longest for a request head (an idle keep-alive connection, or one that never
sent a head), else the HTTP/1.x request that has been sending its body
longest.  Only when none of those exists (every connection carries an event
stream or a request being answered) is the new connection closed instead.
Either way the closed connection is aborted and its descriptor freed at once
(L{notificator.http._twisted.close_now}), before the accept loop takes the
next one, so the process never holds more than C{limits.connections} client
connections.  Each is counted (L{notificator.stats.Stats.drop}) and logged,
at most once every L{CAP_LOG_INTERVAL} seconds.  The connections the head
clock closes are counted too (C{"headerTimeout"}), and logged one line each
up to L{TIMEOUT_LOG_LINES} per interval, the rest in one line at its end.

Everything runs on the clock given in; no global state.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IProtocol, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from notificator.http import _twisted
from notificator.stats import Stats

# The namespace it had before the moves of issue 18: it is part of
# every log line, and no log line changes.
_default_log = Logger("notificator.connections")

#: Seconds between two log lines about C{limits.connections} being reached.
CAP_LOG_INTERVAL = 10.0

#: The lines of a connection the head clock closes: over HTTP/2, over HTTP/1.x.
_H2_IDLE = (
    "closed the HTTP/2 connection from {peer}: no open stream for"
    " {seconds:g} s (limits.headerTimeout)"
)
_NO_HEAD = (
    "closed the connection from {peer}: no complete request head within"
    " {seconds:g} s (limits.headerTimeout)"
)

#: Connections the head clock closes are logged one line each, this many
#: in each L{CAP_LOG_INTERVAL}; the rest of the interval's are summed up in
#: one line at its end (a flood of silent connections is not a flood of
#: lines).  Every one is counted (C{Stats.drop("headerTimeout")}).
TIMEOUT_LOG_LINES = 10


class Connections(Service):
    """
    Counts and times the site's connections (see the module's docstring).

    Every deadline of one kind is the same length after it is armed, so
    each kind's dict (transport or request -> deadline, in arming order)
    expires in order; one call on the clock is set for the earliest first
    deadline of them all.  A connection the head clock closes
    (C{loseConnection}) and that is still there C{header_timeout} seconds
    later (a client that reads nothing, or a TLS client that never
    answers the close) is aborted.

    @param header_timeout: C{limits.headerTimeout}.
    @param body_timeout: C{limits.bodyTimeout}.
    @param cap: C{limits.connections}.
    @param stats: where the open connections and the ones closed at the
        cap are counted.
    @ivar open: the connections open now.
    """

    def __init__(
        self,
        header_timeout: float,
        body_timeout: float,
        cap: int,
        clock: IReactorTime,
        log: Logger = _default_log,
        stats: Stats | None = None,
    ) -> None:
        self.seconds = header_timeout
        self.body_seconds = body_timeout
        self.cap = cap
        self.open = 0
        self._clock = clock
        self._log = log
        self._stats = stats if stats is not None else Stats(started_at=clock.seconds())
        # transport -> deadline: connections waiting for a request head (HTTP/2:
        # with no open stream), in arming order.
        self._heads: dict[Any, float] = {}
        # request -> deadline: HTTP/1.x requests reading their body.
        self._bodies: dict[Any, float] = {}
        # request -> deadline: HTTP/2 requests reading their body.
        self._streams: dict[Any, float] = {}
        # transport -> when to abort it
        self._closing: dict[Any, float] = {}
        # transport -> its H2Connection
        self._h2: dict[Any, Any] = {}
        self._call: IDelayedCall | None = None
        self._call_at = 0.0
        self._reclaimed = 0
        self._refused = 0
        self._cap_logged_at: float | None = None
        # The head clock's lines: when this interval began, its lines, the
        # closes left out of them, and the call that sums those up.
        self._timeouts_since: float | None = None
        self._timeout_lines = 0
        self._timeouts_untold = 0
        self._timeouts_told: IDelayedCall | None = None
        #: C{disarm_pop(transport, None)}: a request head is complete on
        #: C{transport} (the dict's own method: it runs for every request).
        self.disarm_pop = self._heads.pop

    # --- the head clock ------------------------------------------------------------------------

    def arm(self, transport: Any) -> None:
        """Start the head clock of C{transport}'s connection (again)."""
        heads = self._heads
        heads.pop(transport, None)
        deadline = heads[transport] = self._clock.seconds() + self.seconds
        if self._call is None or deadline < self._call_at:
            self._wake(deadline)

    def abort_later(self, transport: Any) -> None:
        """
        C{transport} is being closed (C{loseConnection}): abort it if it is
        still there C{header_timeout} seconds from now.
        """
        deadline = self._closing[transport] = self._clock.seconds() + self.seconds
        if self._call is None or deadline < self._call_at:
            self._wake(deadline)

    # --- the body clock ------------------------------------------------------------------------

    def arm_body(self, request: Any) -> None:
        """C{request}'s head is complete and its body is to come: start its body clock."""
        deadline = self._clock.seconds() + self.body_seconds
        if request.transport is None:  # an HTTP/2 stream
            self._streams[request] = deadline
        else:
            self._bodies[request] = deadline
        if self._call is None or deadline < self._call_at:
            self._wake(deadline)

    def body_done(self, request: Any) -> None:
        """C{request}'s body is complete, refused, or its client left: stop its body clock."""
        if self._bodies.pop(request, None) is None:
            self._streams.pop(request, None)

    # --- the connections -----------------------------------------------------------------------

    def admit(self) -> bool:
        """
        Whether a new connection may open: under the cap, or at it once
        another has been made room of (see the module's docstring).
        """
        if self.open < self.cap:
            return True
        made_room = self._reclaim()
        if made_room:
            self._reclaimed += 1
            self._stats.drop("reclaimed")
        else:
            self._refused += 1
            self._stats.drop("limit")
        now = self._clock.seconds()
        logged = self._cap_logged_at
        if logged is None or now >= logged + CAP_LOG_INTERVAL:
            self._cap_logged_at = now
            self._log.warn(
                "limits.connections ({cap}) reached: closed {reclaimed} idle or slow"
                " connections to make room for new ones, and {refused} new ones at once"
                " (this line comes at most every {interval:g} s)",
                cap=self.cap,
                reclaimed=self._reclaimed,
                refused=self._refused,
                interval=CAP_LOG_INTERVAL,
            )
            self._reclaimed = self._refused = 0
        return made_room

    def _reclaim(self) -> bool:
        """Abort the connection that holds a descriptor for the least, if there is one."""
        for waiting in (self._closing, self._heads):
            transport = next(iter(waiting), None)
            if transport is not None:
                del waiting[transport]
                self._doom(transport)
                return True
        request = next(iter(self._bodies), None)
        if request is not None:
            del self._bodies[request]
            self._doom(request.transport)
            return True
        return False

    def _doom(self, transport: Any) -> None:
        self._log.debug(
            "closed the connection from {peer} to make room (limits.connections)",
            peer=_transport_peer(transport),
        )
        # Its descriptor is free when this returns (closed() has run).
        _twisted.close_now(transport)

    def opened(self, transport: Any) -> None:
        """A connection opened: count it and start its head clock."""
        self.open += 1
        self._stats.connections = self.open
        self.arm(transport)

    def serve_h2(self, transport: Any, protocol: Any) -> Any:
        """
        C{transport}'s connection speaks HTTP/2 (served by C{protocol}, which
        has had its first bytes): from now on its head clock runs while it
        has no open stream.  Its C{H2Connection}, or L{None} when it cannot
        be found (another Twisted): the connection is then left to
        twisted.web's HTTP/2 idle timeout, as before.
        """
        conn = _twisted.h2_connection(protocol)
        if conn is None:
            self._heads.pop(transport, None)
            return None
        self._h2[transport] = conn

        def idle() -> None:
            if transport in self._h2:
                self.arm(transport)

        _twisted.when_h2_idle(conn, idle)
        if _twisted.h2_open_streams(conn):
            self._heads.pop(transport, None)
        return conn

    def closed(self, transport: Any) -> None:
        """C{transport}'s connection closed: forget it."""
        self.open -= 1
        self._stats.connections = self.open
        self._heads.pop(transport, None)
        self._closing.pop(transport, None)
        self._h2.pop(transport, None)

    # --- the clock -----------------------------------------------------------------------------

    def _wake(self, deadline: float) -> None:
        """Make the one call on the clock come at C{deadline} (it was later, or none)."""
        call = self._call
        if call is not None and call.active():
            call.cancel()
        delay = max(0.0, deadline - self._clock.seconds())
        self._call = self._clock.callLater(delay, self._sweep)
        self._call_at = deadline

    def _sweep(self) -> None:
        self._call = None
        now = self._clock.seconds()
        for transport in _expired(self._heads, now):
            del self._heads[transport]
            self._closing[transport] = now + self.seconds
            conn = self._h2.get(transport)
            self._stats.drop("headerTimeout")
            if self._tell_timeout(now):
                self._log.info(
                    _H2_IDLE if conn is not None else _NO_HEAD,
                    peer=_transport_peer(transport),
                    seconds=self.seconds,
                )
            if conn is not None:
                _twisted.h2_go_away(conn)
            else:
                transport.loseConnection()
        for transport in _expired(self._closing, now):
            del self._closing[transport]
            transport.abortConnection()
        for bodies in (self._bodies, self._streams):
            for request in _expired(bodies, now):
                del bodies[request]
                try:
                    request.body_timed_out()
                except Exception:
                    # One broken request must not keep the others from their end.
                    self._log.failure("answering a request body's timeout failed")
        first = [
            d
            for d in map(_first, (self._heads, self._closing, self._bodies, self._streams))
            if d is not None
        ]
        if first:
            earliest = min(first)
            if self._call is None or earliest < self._call_at:
                self._wake(earliest)

    def _tell_timeout(self, now: float) -> bool:
        """
        Whether a close by the head clock gets its own line: one of the
        first L{TIMEOUT_LOG_LINES} of its interval.  The others are summed
        up when the interval ends (L{_sum_up_timeouts}).
        """
        since = self._timeouts_since
        if since is None or now >= since + CAP_LOG_INTERVAL:
            self._sum_up_timeouts()
            self._timeouts_since = since = now
            self._timeout_lines = 0
        if self._timeout_lines < TIMEOUT_LOG_LINES:
            self._timeout_lines += 1
            return True
        self._timeouts_untold += 1
        if self._timeouts_told is None:
            self._timeouts_told = self._clock.callLater(
                since + CAP_LOG_INTERVAL - now, self._sum_up_timeouts
            )
        return False

    def _sum_up_timeouts(self) -> None:
        """One line for the closes by the head clock that had none of their own."""
        call, self._timeouts_told = self._timeouts_told, None
        if call is not None and call.active():
            call.cancel()
        untold, self._timeouts_untold = self._timeouts_untold, 0
        if untold:
            self._log.info(
                "closed {count} more connections with no request head (HTTP/2: no open"
                " stream) for {seconds:g} s (limits.headerTimeout) in {interval:g} s; at most"
                " {lines} lines each {interval:g} s name them one by one",
                count=untold,
                seconds=self.seconds,
                interval=CAP_LOG_INTERVAL,
                lines=TIMEOUT_LOG_LINES,
            )

    def stopService(self) -> None:
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._sum_up_timeouts()


def _expired(deadlines: dict[Any, float], now: float) -> list[Any]:
    """The keys of C{deadlines} (in deadline order) whose deadline has come."""
    expired = []
    for key, deadline in deadlines.items():
        if deadline > now:
            break
        expired.append(key)
    return expired


def _first(deadlines: dict[Any, float]) -> float | None:
    for deadline in deadlines.values():
        return deadline
    return None


def _transport_peer(transport: Any) -> str:
    try:
        addr = transport.getPeer()
    except Exception:
        return "?"
    host = getattr(addr, "host", None)
    return str(host) if host is not None else str(addr)


@implementer(IProtocol)
class ConnectionProtocol:
    """
    Sits between a transport and the site's protocol (twisted.web's, or
    L{notificator.http.fast}'s), passing what the transport calls through,
    to count the connection and start its head clock when it opens, and
    forget it when it closes; over HTTP/2, to stop the head clock while
    a stream is open.  The wrapped protocol (L{wrappedProtocol}, as
    Twisted's own wrappers name it) sees the real transport, so writes do
    not pass through here.  No attribute lookup is forwarded: Twisted's
    transports only call the four methods of C{IProtocol}.
    """

    __slots__ = ("wrappedProtocol", "_connections", "_transport", "_first", "_h2")

    def __init__(self, protocol: Any, connections: Connections) -> None:
        self.wrappedProtocol = protocol
        self._connections = connections
        self._first = True
        self._h2: Any = None

    def makeConnection(self, transport: Any) -> None:
        self._transport = transport
        self._connections.opened(transport)
        self.wrappedProtocol.makeConnection(transport)

    def connectionMade(self) -> None:
        self.wrappedProtocol.connectionMade()

    def dataReceived(self, data: bytes) -> None:
        h2 = self._h2
        if self._first:
            self._first = False
            if getattr(self._transport, "negotiatedProtocol", None) == b"h2":
                self.wrappedProtocol.dataReceived(data)
                self._h2 = self._connections.serve_h2(self._transport, self.wrappedProtocol)
                return
        self.wrappedProtocol.dataReceived(data)
        if h2 is not None and _twisted.h2_open_streams(h2):
            # A stream opened: the connection is not idle.
            self._connections.disarm_pop(self._transport, None)

    def connectionLost(self, reason: Any) -> None:
        try:
            self.wrappedProtocol.connectionLost(reason)
        finally:
            # Counted once, should a transport tell twice.
            transport, self._transport = self._transport, None
            if transport is not None:
                self._connections.closed(transport)


class FastConnectionProtocol(ConnectionProtocol):
    """
    L{ConnectionProtocol} for the fast channel's connections: over plain
    TCP, which never switches to HTTP/2, the data goes to the channel
    itself, not through twisted.web's HTTP/2-switching wrapper around it
    (L{notificator.http._twisted.plain_channel}).
    """

    __slots__ = ()

    def makeConnection(self, transport: Any) -> None:
        protocol = self.wrappedProtocol
        channel = _twisted.plain_channel(protocol, transport)
        if channel is not protocol:
            self.wrappedProtocol = channel
            self._first = False
        super().makeConnection(transport)


@implementer(IProtocol)
class Refused:
    """
    What a connection over C{limits.connections} gets: closed as it opens,
    its descriptor freed at once (L{notificator.http._twisted.close_now}).
    (A C{buildProtocol} that returns L{None} would do that over plain TCP,
    but Twisted's TLS factory cannot take it.)
    """

    def makeConnection(self, transport: Any) -> None:
        _twisted.close_now(transport)

    def connectionMade(self) -> None:
        pass

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Any) -> None:
        pass
