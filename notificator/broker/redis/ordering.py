# -*- test-case-name: tests.test_redis_ordering,tests.test_redisbroker_e2e -*-
"""
Cluster mode: the broker of a node among several, joined by one Redis.

Every accepted notification goes through one Lua script (L{PUBLISH}) that,
atomically, gives it its event id, appends it to its user's history (a Redis
stream per user, trimmed exactly to C{sse.history.size}, entries older than
C{sse.history.ttl} dropped, the user's I{floor} kept) and publishes it on
the cluster channel.  Every node, the publishing one too, delivers only what
its subscription to that channel hands it, so all nodes deliver in the same
order, with the same ids and the same bytes.  The publishes a node accepts
in one reactor pass go to Redis as one run of the script, at the end of
the pass, in the order they came (one Redis command, reply and script
call for many under load; at a low rate each is alone in its pass); if
that run fails, exactly its publishes are answered L{Unavailable}.  A reconnecting stream is
answered from the history by another script (L{SINCE}), with the rules and
gap signal of L{notificator.history.History}.

Nothing but this package knows that Redis exists: the web layer sees the
L{notificator.broker.Broker} interface, the Hub sees frames.  Within it,
this module orders; it reaches Redis only through a L{Link} (the
connections, their health, running a script, the barrier), which
L{notificator.broker.redis.link.TxRedisLink} is over txredisapi and
L{notificator.broker.testing.FakeLink} in memory, for the tests.

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
messages from before it asks, and after the answer asks the link for a
barrier (L{Link.barrier}: a C{PING} on the subscription, whose reply comes
after every message published before the answer was made).  Then the
answer and the buffer are merged by id, without duplicates, and handed
over in one reactor turn.

Outage.  When Redis, or either connection to it, is lost, L{health} says why
(C{/health} answers 503), publishes and replays fail at once with
L{Unavailable}, and open streams stay open.  The link reconnects with
backoff and subscribes again (L{Receiver.subscription_lost}, then
L{Receiver.subscribed} and L{Receiver.available}); then the node reads,
for every user with open streams, what was recorded after the last
notification it received before the gap, delivers it in order (with a
C{reset} first when the history no longer holds all of it), and delivers
live again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import attrs
from prometheus_client.registry import Collector
from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, inlineCallbacks, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from notificator.broker import NO_REPLAY, NOBODY_ELSE, Published, Unavailable
from notificator.broker.redis.metrics import RedisCollector
from notificator.broker.redis.scripts import MARK, PUBLISH, SINCE, Script
from notificator.broker.redis.view import MachineViews
from notificator.broker.view import Machine, MachineView
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


# -- what the broker asks of its link to Redis ----------------------------------------


class Receiver(Protocol):
    """What a L{Link} tells the broker, in this order for each change."""

    def received(self, payload: bytes) -> None:
        """A message on the cluster channel (L{parse_message}), in Redis's order."""

    def subscribed(self) -> None:
        """The subscription is in place (again): messages arrive from now on."""

    def subscription_lost(self) -> None:
        """
        The subscription is lost: messages published from now until
        L{subscribed} never arrive, and replies of L{Link.barrier} pending
        fail.
        """

    def available(self) -> None:
        """The command connection and the subscription are both up (again)."""


class Link(Protocol):
    """
    What the broker asks of its link to Redis: a command connection, which
    runs the scripts, and a subscription to the cluster channel, which
    hands messages to the L{Receiver}.  Their answers are not ordered with
    each other; L{barrier} orders them.
    L{notificator.broker.redis.link.TxRedisLink} is the real one,
    L{notificator.broker.testing.FakeLink} one in memory.

    @ivar ping_interval: seconds between the round-trip measures.
    @ivar outages: times Redis became unavailable to this node.
    @ivar rtt_last: the round trip of the last measure, in seconds, if any.
    @ivar rtt_count: measures made.
    @ivar rtt_sum: their total, in seconds.
    """

    ping_interval: float
    outages: int
    rtt_last: float | None
    rtt_count: int
    rtt_sum: float

    def start(self, channel: bytes, receiver: Receiver) -> None:
        """Connect, subscribe to C{channel}, and keep both up until L{stop}."""

    def stop(self) -> Deferred[None]:
        """Close both connections; fires once closed (or after a bounded wait)."""

    def health(self) -> str | None:
        """L{None} while both connections are up, else why not."""

    def outage_seconds(self) -> float:
        """Seconds since Redis became unavailable (0 while it is available)."""

    def eval(self, script: Script, keys: Sequence[bytes], args: Sequence[Any]) -> Deferred[Any]:
        """
        Run C{script} with C{keys} and C{args} on the command connection:
        its reply, or L{Unavailable} (whose text the publisher is answered).
        """

    def time(self) -> Deferred[int]:
        """Redis's clock, in milliseconds."""

    def barrier(self) -> Deferred[None]:
        """
        Fires once every message published before now has been handed to
        the L{Receiver}; fails with L{Unavailable} when the subscription is
        lost first.
        """


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


#: At most this many publishes in one run of L{PUBLISH}: a pass that
#: accepts more sends them in runs of this size, so that one run never
#: holds Redis (or one failure refuses) more than this many.
MAX_BATCH = 64


class _Batch:
    """
    The publishes of one reactor pass, run as one L{PUBLISH}: their keys
    and arguments, and who waits for each answer (with its user).
    """

    __slots__ = ("keys", "args", "waiting")

    def __init__(self) -> None:
        self.keys: list[bytes] = []
        self.args: list[bytes] = []
        self.waiting: list[tuple[Deferred[Published], str]] = []


class _Stale(Exception):
    """The subscription was lost while catching up: start again."""


class RedisBroker(Service):
    """
    The broker of cluster mode (see the module docstring), over a L{Link}
    to Redis; its own job is the ordering: event ids, the merge of what
    the history says with what arrives live, and the catch-up after a gap.

    @param hub: delivers frames to this node's streams.
    @param stats: the server's counters (C{published} on this node).
    @param clock: the time (the node's start, the replays' deadline).
    @param link: the connections to Redis (L{Link}).
    @param cluster: C{cluster.*}: the keys' prefix, the timeout, the
        longest wait between attempts.
    @param history: C{sse.history.*} (C{size} and C{ttl}; the others
        are the single node's).
    @param node: this node's name.
    @ivar link: the L{Link}, which also holds the figures of L{collector}.
    @ivar filled: notifications delivered from the history after a gap.
    """

    def __init__(
        self,
        hub: Hub,
        stats: Stats,
        clock: Any,
        link: Link,
        cluster: ClusterConfig,
        history: HistoryConfig,
        node: str,
    ) -> None:
        # The namespace it had before the moves of issue 18: it is part of
        # every log line, and no log line changes.
        self.log = Logger("notificator.redisbroker.RedisBroker", self)
        self._hub = hub
        self._stats = stats
        self._clock = clock
        self.link = link
        self._timeout = cluster.timeout
        self._max_delay = cluster.reconnect_max_delay
        self.node = node
        self._size = history.size
        self._ttl_ms = max(1, int(history.ttl * 1000))
        prefix = cluster.prefix.encode("utf-8")
        self._prefix = prefix
        self._last_key = prefix + b":last"
        self._since_key = prefix + b":since"
        self.channel = prefix + b":events"
        self._generation = 0  # changes when the subscription is lost
        self._started = 0.0
        self._stopping = False

        # The last event id received on the subscription (or read when
        # catching up): where a stream opened now stands (position).
        self._cursor: bytes | None = None
        self._position_of: bytes | None = None
        self._position: str | None = None
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
        # The publishes of this reactor pass, run at its end (L{_flush}).
        self._batch: _Batch | None = None
        self._flush_call: Any = None

        self.filled = 0
        #: A worker's part of its machine's view (L{serve_machine}).
        self.views: MachineViews | None = None

    def serve_machine(self, machine: Machine) -> MachineViews:
        """
        This node is a worker of C{server.workers}: write its snapshot into
        Redis every second while it runs, and answer L{view} and
        L{elsewhere} for the whole machine
        (L{notificator.broker.redis.view}).
        """
        self.views = MachineViews(
            self.link,
            self._clock,
            self._hub,
            self._stats,
            self.health,
            self._prefix,
            machine,
            self.node,
            self.log,
        )
        return self.views

    def view(self, streams: bool = False, metrics: bool = False) -> Deferred[MachineView] | None:
        views = self.views
        return None if views is None else views.view(streams, metrics)

    @property
    def elsewhere(self) -> Mapping[str, int]:
        views = self.views
        return NOBODY_ELSE if views is None else views.elsewhere

    @property
    def position(self) -> str | None:
        """
        The last event id this node received on the cluster channel, or
        read from Redis when it caught up (L{MARK} makes one in a Redis
        where none was given yet): every notification with a later id
        reaches a stream that opens now live (the channel hands them in
        id order), and a reconnect from it is replayed the others
        (L{SINCE}).  L{None} until the node has heard from Redis.
        """
        if self._size <= 0:
            return None  # no history: nothing a reconnect could be given
        cursor = self._cursor
        if cursor is not self._position_of:
            self._position_of = cursor
            text = cursor.decode("ascii", "replace") if cursor is not None else None
            self._position = text if text is not None and event_key(text) is not None else None
        return self._position

    # -- keys -------------------------------------------------------------------

    def _user_keys(self, user_id: str) -> list[bytes]:
        user = user_id.encode("utf-8", "surrogatepass")
        return [self._prefix + b":h:" + user, self._prefix + b":f:" + user]

    # -- service ----------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        self._started = self._clock.seconds()
        self.link.start(self.channel, self)
        if self.views is not None:
            self.views.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        # Accepted publishes go out before the link closes.
        self._flush()
        self._stopping = True
        left: Deferred[None] = succeed(None)
        if self.views is not None:
            self.views.stop()
            left = self.views.leave()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        self._fail_waiters("the node is stopping")
        stopped: Deferred[None] = left.addCallback(lambda _: self.link.stop())
        return stopped

    # -- what the link tells (Receiver) -----------------------------------------

    def subscribed(self) -> None:
        if self._gap_pending and self._fill is None:
            # From now on messages arrive: hold them back until the gap is filled.
            self._fill = {}

    def subscription_lost(self) -> None:
        self._generation += 1
        # What arrived live for the users being caught up was never
        # delivered: the next fill reads it from the history.
        self._fill = None
        if not self._gap_pending:
            self._gap_pending = True
            self._gap_from = id_key(self._cursor) if self._cursor is not None else None
        self._fail_waiters("the subscription to Redis was lost")

    def available(self) -> None:
        self._maybe_sync()

    def health(self) -> str | None:
        return self.link.health()

    # -- publishing ---------------------------------------------------------------

    def publish(self, message: Message) -> Deferred[Published]:
        """
        Record and announce C{message}: with the other publishes of this
        reactor pass, in one run of L{PUBLISH} at its end (L{_flush}), in
        the order they came.
        """
        problem = self.link.health()
        if problem is not None:
            return fail(Unavailable(problem))
        user_id = message.user_id
        batch = self._batch
        if batch is None:
            batch = self._batch = _Batch()
            self._flush_call = self._clock.callLater(0, self._flush)
        user = user_id.encode("utf-8", "surrogatepass")
        prefix = self._prefix
        batch.keys += (prefix + b":h:" + user, prefix + b":f:" + user)
        batch.args += (encode_frame(message.event, message.data), user)
        d: Deferred[Published] = Deferred()
        batch.waiting.append((d, user_id))
        if len(batch.waiting) >= MAX_BATCH:
            self._flush()
        return d

    def _flush(self) -> None:
        """Run the publishes of this pass (L{publish}) as one L{PUBLISH}."""
        batch, self._batch = self._batch, None
        call, self._flush_call = self._flush_call, None
        if call is not None and call.active():
            call.cancel()
        if batch is None:
            return
        keys = [self._last_key, self._since_key, *batch.keys]
        args = [self._size, self._ttl_ms, self.channel, *batch.args]
        self.link.eval(PUBLISH, keys, args).addCallbacks(
            self._published,
            self._not_published,
            callbackArgs=(batch.waiting,),
            errbackArgs=(batch.waiting,),
        )

    def _published(
        self, reply: Sequence[Any], waiting: list[tuple[Deferred[Published], str]]
    ) -> None:
        stats, hub = self._stats, self._hub
        for i, (d, user_id) in enumerate(waiting):
            stats.published += 1
            # Delivered by the subscription, as on every node: the streams of
            # the user on this node now.
            d.callback(
                Published(
                    bytes(reply[2 * i]).decode("ascii"),
                    hub.count_of(user_id),
                    int(reply[2 * i + 1]),
                )
            )

    def _not_published(
        self, failure: Failure, waiting: list[tuple[Deferred[Published], str]]
    ) -> None:
        # Exactly the publishes of this run fail, each with the reason.
        for d, _ in waiting:
            d.errback(Failure(failure.value, failure.type, failure.tb))

    # -- live messages ------------------------------------------------------------

    def received(self, payload: bytes) -> None:
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
        problem = self.link.health()
        if problem is not None:
            return fail(Unavailable(problem))
        seen = event_key(last_event_id)
        waiter = _Waiter(user_id, seen)
        self._waiting.setdefault(user_id, []).append(waiter)
        waiter.timeout = self._clock.callLater(
            3 * self._timeout, self._give_up, waiter, "no answer from Redis in time"
        )
        keys = [self._last_key, self._since_key, *self._user_keys(user_id)]
        d = self.link.eval(SINCE, keys, [self._ttl_ms, b"" if seen is None else event_id(seen)])
        d.addCallback(self._answered, waiter)
        d.addErrback(lambda f: self._give_up(waiter, f.getErrorMessage()))
        return waiter.deferred

    def _answered(self, reply: Sequence[Any], waiter: _Waiter) -> Deferred[None] | None:
        if waiter.deferred.called:
            return None
        waiter.missed = parse_since(reply, 1)[2][0]
        d = self.link.barrier()

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
            or self._stopping
            or self.link.health() is not None
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
            redis_ms = yield self.link.time()
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
            reply = yield self.link.eval(SINCE, keys, [self._ttl_ms, *map(event_id, starts)])
            _, last, missed = parse_since(reply, len(batch))
            results.extend(zip(batch, starts, missed, strict=True))
        if last is None:
            # No id given yet: make the history's start, a position for the
            # streams that open before the first notification.
            last = bytes((yield self.link.eval(MARK, [self._last_key, self._since_key], [])))
        yield self.link.barrier()
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
