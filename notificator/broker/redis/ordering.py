# -*- test-case-name: tests.test_redis_ordering,tests.test_redisbroker_e2e -*-
"""
Cluster mode: the broker of a node among several, joined by one Redis.

Every accepted notification goes through one Lua script (L{PUBLISH}) that,
atomically, gives it its event id, appends it to its user's history (a Redis
stream per user, trimmed exactly to C{sse.history.size}, entries older than
C{sse.history.ttl} dropped, the user's I{floor} kept) and publishes it on
the cluster channel.  Every node, the publishing one too, delivers only what
its subscription to that channel hands it, so all nodes deliver in the same
order, with the same ids and the same bytes.  A reconnecting stream is
answered from the history by another script (L{SINCE}), with the rules and
gap signal of L{notificator.history.History}.

Nothing but this module knows that Redis exists: the web layer sees the
L{notificator.broker.Broker} interface, the Hub sees frames.

Ids.  Event ids are Redis stream ids C{<ms>-<seq>}, made by the script from
Redis's clock (C{TIME}) and the last id given (a global key), so they
increase across all users without the nodes' clocks being synchronised.
(C{XADD *} gives ids per stream: two users' notifications in the same
millisecond would share an id, and a step back of Redis's clock would
order them backwards; the catch-up after an outage compares ids across
users, so the script makes them itself.)

The history in Redis (C{<prefix>} is C{cluster.prefix})::

    <prefix>:h:<user>   stream of the user's recent frames (field "b":
                        the frame without its "id:" line)
    <prefix>:f:<user>   "<floor> <last>": the newest id the user ever
                        lost, and its last id
    <prefix>:last       the last id given
    <prefix>:since      the first id given after the history was created:
                        set with NX, so a Redis that lost its data (a
                        restart without persistence) is detected ("lost")
    <prefix>:events     the channel (id, user id and frame body)

A user's stream expires C{ttl} after its last notification, when all it
had has expired: its floor is then its last id, which the second key keeps
a day longer.  A user with no record at all has as floor "everything older
than the ttl" (a notification it had would still be kept otherwise).

Catching up.  Redis hands a node its messages on the subscription and its
answers on another connection, which are not ordered with each other.  So
when an answer from the history must be joined with the live messages (a
replay, or the fill after an outage), the broker buffers the user's live
messages from before it asks, and after the answer sends a C{PING} on the
subscription: its reply comes after every message published before the
answer was made.  Then the answer and the buffer are merged by id, without
duplicates, and handed over in one reactor turn.

Outage.  When Redis, or either connection to it, is lost, L{health} says why
(C{/health} answers 503), publishes and replays fail at once with
L{Unavailable}, and open streams stay open.  txredisapi reconnects with
backoff (it does not subscribe again by itself: this module does); then the
node reads, for every user with open streams, what was recorded after the
last notification it received before the gap, delivers it in order (with a
C{reset} first when the history no longer holds all of it), and delivers
live again.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs
import txredisapi
from prometheus_client.registry import Collector
from twisted.application.service import Service
from twisted.internet.defer import (
    Deferred,
    DeferredList,
    fail,
    inlineCallbacks,
    maybeDeferred,
    succeed,
)
from twisted.internet.error import ConnectError, ConnectionClosed, ConnectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from notificator.broker import NO_REPLAY, Published, Unavailable
from notificator.broker.redis.link import (
    PING_INTERVAL,
    _Endpoint,
    _Factory,
    _Subscriber,
    load_trust,
)
from notificator.broker.redis.metrics import RedisCollector
from notificator.broker.redis.scripts import PUBLISH, SINCE, Script
from notificator.config import ClusterConfig, HistoryConfig
from notificator.events import SEQ_SPAN, Message, encode_frame, event_id, event_key
from notificator.history import Replay, reset_frame
from notificator.hub import Hub
from notificator.stats import Stats

#: Users whose history one call of L{SINCE} reads when catching up.
FILL_BATCH = 100


# -- pure helpers -----------------------------------------------------------------


def frame_of(event_id: bytes, body: bytes) -> bytes:
    """The frame every node writes: the id line, then the body kept in Redis."""
    return b"id: " + event_id + b"\n" + body


def id_key(event_id: bytes) -> int:
    """The L{event_key} of an id as Redis gives it (bytes, always well formed)."""
    ms, _, seq = event_id.partition(b"-")
    return int(ms) * SEQ_SPAN + int(seq)


def parse_message(payload: bytes) -> tuple[bytes, str, bytes]:
    """
    The event id, user id and frame body of a message on the cluster
    channel (C{<id>\\n<user id>\\n<body>}: user ids hold no line break).

    @raise ValueError: not such a message.
    """
    i = payload.index(b"\n")
    j = payload.index(b"\n", i + 1)
    return payload[:i], payload[i + 1 : j].decode("utf-8", "surrogatepass"), payload[j + 1 :]


@attrs.frozen
class Missed:
    """
    One user's part of a L{SINCE} answer.

    @ivar reason: L{None} when complete, else as L{Replay.reason}.
    @ivar oldest: the oldest kept id of the user, if any.
    @ivar entries: (key, frame) after the id asked about (all kept ones
        when not complete), oldest first.
    """

    reason: str | None
    oldest: str | None
    entries: tuple[tuple[int, bytes], ...]


def parse_since(reply: Sequence[Any], users: int) -> tuple[int, bytes | None, list[Missed]]:
    """
    Split a L{SINCE} answer: Redis's time (ms), the last id given, and one
    L{Missed} per user asked about.
    """
    now = int(reply[0])
    last = bytes(reply[1]) or None
    out = []
    pos = 2
    for _ in range(users):
        reason, oldest, n = reply[pos], reply[pos + 1], int(reply[pos + 2])
        pos += 3
        entries = []
        for _ in range(n):
            eid, body = bytes(reply[pos]), bytes(reply[pos + 1])
            entries.append((id_key(eid), frame_of(eid, body)))
            pos += 2
        out.append(
            Missed(
                reason.decode("ascii") if reason else None,
                oldest.decode("ascii") if oldest else None,
                tuple(entries),
            )
        )
    return now, last, out


def merge(
    entries: Sequence[tuple[int, bytes]], live: Iterable[tuple[int, bytes]], after: int
) -> list[bytes]:
    """
    The frames of C{entries} (read from the history), then those of
    C{live} (received on the subscription meanwhile, in order) that are
    later than both C{after} and the last entry: nothing twice, in order.
    """
    frames = [frame for _, frame in entries]
    if entries:
        after = max(after, entries[-1][0])
    frames.extend(frame for key, frame in live if key > after)
    return frames


# -- the broker -------------------------------------------------------------------


class _Waiter:
    """A replay being answered: what arrived live for its user meanwhile."""

    __slots__ = ("user_id", "seen", "deferred", "live", "missed", "caught_up", "timeout")

    def __init__(self, user_id: str, seen: int | None) -> None:
        self.user_id = user_id
        self.seen = seen
        self.deferred: Deferred[Replay] = Deferred()
        self.live: list[tuple[int, bytes]] = []
        self.missed: Missed | None = None
        self.caught_up = False
        self.timeout: Any = None


class _Stale(Exception):
    """The subscription was lost while catching up: start again."""


class RedisBroker(Service):
    """
    The broker of cluster mode (see the module docstring).

    @param hub: delivers frames to this node's streams.
    @param stats: the server's counters (C{published} on this node).
    @param clock: the reactor: time, and connecting to Redis.
    @param cluster: C{cluster.*} (C{redis} must be set).
    @param history: C{sse.history.*} (C{size} and C{ttl}; the others
        are the single node's).
    @param node: this node's name.
    @param timer: a monotonic clock in seconds, for round-trip times.
    @ivar outages: times Redis became unavailable to this node.
    @ivar filled: notifications delivered from the history after a gap.
    """

    def __init__(
        self,
        hub: Hub,
        stats: Stats,
        clock: Any,
        cluster: ClusterConfig,
        history: HistoryConfig,
        node: str,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        # The namespace it had before the moves of issue 18: it is part of
        # every log line, and no log line changes.
        self.log = Logger("notificator.redisbroker.RedisBroker", self)
        if cluster.redis is None:
            raise ValueError("cluster.redis is not set")
        self._hub = hub
        self._stats = stats
        self._clock = clock
        self._address = cluster.redis
        self._timeout = cluster.timeout
        self._max_delay = cluster.reconnect_max_delay
        self._timer = timer
        self.node = node
        self._size = history.size
        self._ttl_ms = max(1, int(history.ttl * 1000))
        prefix = cluster.prefix.encode("utf-8")
        self._prefix = prefix
        self._last_key = prefix + b":last"
        self._since_key = prefix + b":since"
        self.channel = prefix + b":events"
        self._client_name = re.sub(r"[^\w.:-]", "_", f"notificator-{node}")[:100].encode()
        self._trust = load_trust(cluster.ca) if cluster.ca and cluster.redis.tls else None

        self._factories: dict[str, _Factory] = {}
        self._cmd: Any = None  # the command connection, when ready
        self._sub: Any = None  # the subscription's connection, when ready
        self._subscribed = False
        self._generation = 0  # changes when the subscription is lost
        self._started = 0.0
        self._stopping = False
        self._up = False
        self._down_since = 0.0
        self._last_error: str | None = None
        self._refused: dict[str, Any] = {}  # role -> pending rebuild (AUTH refused)

        # The last event id received on the subscription.
        self._cursor: bytes | None = None
        # A gap to fill: from the cursor at the time the subscription was
        # lost (None: from this node's start).
        self._gap_pending = True
        self._gap_from: int | None = None
        # While a gap is pending and the subscription is up: what arrived
        # live for users with open streams, held back until the gap is
        # filled (so that they get it in order).
        self._fill: dict[str, list[tuple[int, bytes]]] | None = None
        self._syncing = False
        self._retry: Any = None

        self._waiting: dict[str, list[_Waiter]] = {}
        self._barrier_next: list[Deferred[None]] = []
        self._barrier_busy = False
        self._pinger: LoopingCall | None = None

        self.outages = 0
        self.filled = 0
        self.rtt_last: float | None = None
        self.rtt_count = 0
        self.rtt_sum = 0.0

    # -- keys -------------------------------------------------------------------

    def _user_keys(self, user_id: str) -> list[bytes]:
        user = user_id.encode("utf-8", "surrogatepass")
        return [self._prefix + b":h:" + user, self._prefix + b":f:" + user]

    # -- service ----------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        self._started = self._down_since = self._clock.seconds()
        for role in ("commands", "subscription"):
            self._connect(role)
        self._pinger = LoopingCall(self._ping)
        self._pinger.clock = self._clock
        self._pinger.start(PING_INTERVAL, now=False)
        self.log.info(
            "cluster node {node}: connecting to Redis at {address}",
            node=self.node,
            address=str(self._address),
        )

    def _connect(self, role: str) -> None:
        protocol = _Subscriber if role == "subscription" else txredisapi.BaseRedisProtocol
        factory = _Factory(self, role, protocol, self._address, self._timeout, self._max_delay)
        self._factories[role] = factory
        factory.startConnecting(
            _Endpoint(self._clock, self._address, self._timeout, self._connect_failed, self._trust)
        )

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self._stopping = True
        self._up = False
        if self._pinger is not None and self._pinger.running:
            self._pinger.stop()
        for call in [self._retry, *self._refused.values()]:
            if call is not None and call.active():
                call.cancel()
        self._retry = None
        self._refused.clear()
        self._fail_waiters("the node is stopping")
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
            conn.subscribe([self.channel]).addCallbacks(
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
        self._maybe_sync()

    def _lost_because(self, reason: Failure) -> None:
        if not reason.check(ConnectionDone) and not self._stopping:
            self._last_error = reason.getErrorMessage()

    def _subscribed_to(self, reply: Any, conn: Any) -> None:
        if conn is not self._sub:
            return
        self._subscribed = True
        self._last_error = None
        if self._gap_pending and self._fill is None:
            # From now on messages arrive: hold them back until the gap is filled.
            self._fill = {}
        self._update()
        self._maybe_sync()

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
            self._generation += 1
            # What arrived live for the users being caught up was never
            # delivered: the next fill reads it from the history.
            self._fill = None
            if not self._gap_pending:
                self._gap_pending = True
                self._gap_from = id_key(self._cursor) if self._cursor is not None else None
            self._fail_waiters("the subscription to Redis was lost")
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
        """Note a change of availability: log it, count outages."""
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
        else:
            self.outages += 1
            self._down_since = now
            if not self._stopping:
                self.log.warn("Redis unavailable: {reason}", reason=self._problem())

    def health(self) -> str | None:
        if self._up:
            return None
        return self._problem()

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

    def _eval(self, script: Script, keys: Sequence[bytes], args: Sequence[Any]) -> Deferred[Any]:
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
            self._barrier().addErrback(lambda _: None)

    def _barrier(self) -> Deferred[None]:
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

    # -- publishing ---------------------------------------------------------------

    def publish(self, message: Message) -> Deferred[Published]:
        if not self._up:
            return fail(Unavailable(self._problem()))
        user_id = message.user_id
        body = encode_frame(message.event, message.data)
        keys = self._user_keys(user_id)
        keys += [self._last_key, self._since_key]
        args = [
            body,
            self._size,
            self._ttl_ms,
            self.channel,
            user_id.encode("utf-8", "surrogatepass"),
        ]
        return self._eval(PUBLISH, keys, args).addCallback(self._published, user_id)

    def _published(self, reply: Sequence[Any], user_id: str) -> Published:
        self._stats.published += 1
        # Delivered by the subscription, as on every node: the streams of
        # the user on this node now.
        delivered = self._hub.count_of(user_id)
        return Published(bytes(reply[0]).decode("ascii"), delivered, int(reply[1]))

    # -- live messages ------------------------------------------------------------

    def _received(self, payload: bytes) -> None:
        """A message on the cluster channel: deliver it, or keep it for a merge."""
        try:
            eid, user_id, body = parse_message(payload)
        except (ValueError, UnicodeDecodeError):
            self.log.warn("ignored a message on {channel} that is not ours", channel=self.channel)
            return
        self._cursor = eid
        waiting = self._waiting.get(user_id) if self._waiting else None
        fill = self._fill
        if waiting is None and fill is None:
            # The common case.
            if self._hub.has_streams(user_id):
                self._hub.deliver(user_id, frame_of(eid, body))
            return
        key = id_key(eid)
        frame = frame_of(eid, body)
        if waiting is not None:
            for waiter in waiting:
                waiter.live.append((key, frame))
        if fill is None or self._size <= 0:
            # No fill pending, or no history to fill from: live, in order.
            if self._hub.has_streams(user_id):
                self._hub.deliver(user_id, frame)
        elif user_id in fill or self._hub.has_streams(user_id):
            held = fill.setdefault(user_id, [])
            held.append((key, frame))
            if len(held) > self._size and not self._syncing:
                # Recorded before the history is read: the fill reads it
                # there (or says it is gone), so a long wait holds no more.
                del held[0]

    # -- replay -------------------------------------------------------------------

    def replay(self, user_id: str, last_event_id: str) -> Deferred[Replay]:
        if self._size <= 0:
            return succeed(NO_REPLAY)
        if not self._up:
            return fail(Unavailable(self._problem()))
        seen = event_key(last_event_id)
        waiter = _Waiter(user_id, seen)
        self._waiting.setdefault(user_id, []).append(waiter)
        waiter.timeout = self._clock.callLater(
            3 * self._timeout, self._give_up, waiter, "no answer from Redis in time"
        )
        keys = [self._last_key, self._since_key, *self._user_keys(user_id)]
        d = self._eval(SINCE, keys, [self._ttl_ms, b"" if seen is None else event_id(seen)])
        d.addCallback(self._answered, waiter)
        d.addErrback(lambda f: self._give_up(waiter, f.getErrorMessage()))
        return waiter.deferred

    def _answered(self, reply: Sequence[Any], waiter: _Waiter) -> Deferred[None] | None:
        if waiter.deferred.called:
            return None
        waiter.missed = parse_since(reply, 1)[2][0]
        d = self._barrier()

        def caught_up(_: None) -> None:
            waiter.caught_up = True
            self._resolve()

        d.addCallback(caught_up)
        return d

    def _resolve(self) -> None:
        """Answer the replays that have caught up, unless a fill is pending."""
        if self._fill is not None:
            return
        for waiters in list(self._waiting.values()):
            for waiter in list(waiters):
                if waiter.caught_up and not waiter.deferred.called:
                    self._forget(waiter)
                    missed = waiter.missed
                    assert missed is not None
                    complete = missed.reason is None
                    frames = merge(
                        missed.entries,
                        waiter.live,
                        (waiter.seen or 0) if complete else 0,
                    )
                    waiter.deferred.callback(
                        Replay(complete, tuple(frames), missed.reason, missed.oldest)
                    )

    def _forget(self, waiter: _Waiter) -> None:
        waiters = self._waiting.get(waiter.user_id)
        if waiters is not None and waiter in waiters:
            waiters.remove(waiter)
            if not waiters:
                del self._waiting[waiter.user_id]
        if waiter.timeout is not None and waiter.timeout.active():
            waiter.timeout.cancel()

    def _give_up(self, waiter: _Waiter, reason: str) -> None:
        self._forget(waiter)
        if not waiter.deferred.called:
            waiter.deferred.errback(Unavailable(reason))

    def _fail_waiters(self, reason: str) -> None:
        for waiters in list(self._waiting.values()):
            for waiter in list(waiters):
                self._give_up(waiter, reason)

    # -- catching up after a gap --------------------------------------------------

    def _maybe_sync(self) -> None:
        if (
            self._syncing
            or not self._gap_pending
            or self._cmd is None
            or not self._subscribed
            or self._stopping
        ):
            return
        if self._size <= 0:
            # No history (sse.history.size 0): nothing to read back, as on
            # one node; what arrived meanwhile was delivered as it came.
            self._fill = None
            self._gap_pending = False
            return
        self._syncing = True
        generation = self._generation
        self._sync(generation).addBoth(self._synced, generation)

    @inlineCallbacks
    def _sync(self, generation: int) -> Any:
        """
        Read what the users with open streams missed since the gap began;
        returns [(user id, its start, L{Missed})] and the last id given.
        """
        fill = self._fill
        if fill is None:
            raise _Stale()
        for user_id, _ in self._hub.users():
            fill.setdefault(user_id, [])
        users = list(fill)
        start = self._gap_from
        if start is None and users:
            # From this node's start, on Redis's clock.
            now = yield self._command(self._cmd, b"TIME")
            redis_ms = int(now[0]) * 1000 + int(now[1]) // 1000
            elapsed = int((self._clock.seconds() - self._started) * 1000)
            start = max(0, redis_ms - elapsed - 1) * SEQ_SPAN
            self._gap_from = start
        results: list[tuple[str, int, Missed]] = []
        last: bytes | None = None
        for i in range(0, max(1, len(users)), FILL_BATCH):
            batch = users[i : i + FILL_BATCH]
            starts = [start or 0] * len(batch)
            keys = [self._last_key, self._since_key]
            for user_id in batch:
                keys += self._user_keys(user_id)
            reply = yield self._eval(SINCE, keys, [self._ttl_ms, *map(event_id, starts)])
            _, last, missed = parse_since(reply, len(batch))
            results.extend(zip(batch, starts, missed, strict=True))
        yield self._barrier()
        if generation != self._generation:
            raise _Stale()
        return results, last

    def _synced(self, result: Any, generation: int) -> None:
        self._syncing = False
        if isinstance(result, Failure):
            if generation == self._generation and not self._stopping:
                self.log.warn(
                    "catching up with Redis failed: {reason}; trying again",
                    reason=result.getErrorMessage(),
                )
                self._retry = self._clock.callLater(min(1.0, self._max_delay), self._retry_sync)
            else:
                self._maybe_sync()
            return
        results, last = result
        fill = self._fill or {}
        delivered = users = 0
        resets: dict[str, int] = {}
        hub = self._hub
        for user_id, start, missed in results:
            live = fill.pop(user_id, [])
            frames = []
            if missed.reason is not None:
                resets[missed.reason] = resets.get(missed.reason, 0) + 1
                frames.append(
                    reset_frame(
                        Replay(False, reason=missed.reason, oldest=missed.oldest),
                        event_id(start),
                    )
                )
            frames += merge(missed.entries, live, start)
            if missed.entries:
                users += 1
                delivered += len(missed.entries)
            for frame in frames:
                hub.deliver(user_id, frame)
        # Users whose first stream opened after the history was read: what
        # arrived live for them, in order.
        for user_id, live in fill.items():
            for _, frame in live:
                hub.deliver(user_id, frame)
        self._fill = None
        self._gap_pending = False
        if last is not None and (self._cursor is None or id_key(last) > id_key(self._cursor)):
            self._cursor = last
        self.filled += delivered
        for reason, count in sorted(resets.items()):
            self.log.warn(
                "the history does not hold all that {count} users missed during the gap"
                " ({reason}): their streams got a reset",
                count=count,
                reason=reason,
            )
        if delivered:
            self.log.info(
                "caught up with Redis: {count} notifications missed during the gap"
                " delivered to {users} users",
                count=delivered,
                users=users,
            )
        self._resolve()

    def _retry_sync(self) -> None:
        self._retry = None
        self._maybe_sync()

    # -- metrics ------------------------------------------------------------------

    def collector(self) -> Collector:
        """The metrics of cluster mode, for the server's registry."""
        return RedisCollector(self)
