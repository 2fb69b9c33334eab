# -*- test-case-name: tests.test_broker_view,tests.test_redis_scripts -*-
"""
One machine of C{server.workers} seen from any of its workers
(L{MachineViews}): every second each worker writes its snapshot
(L{notificator.broker.view.NodeView}) into Redis and reads its fellow
workers' back, from which it knows their streams per user (for
C{limits.streamsPerUser} over the machine, L{MachineViews.elsewhere});
C{/health}, C{/users} and C{/metrics} read them all when asked
(L{MachineViews.view}).

In Redis (C{<prefix>} is C{cluster.prefix}, C{<machine>} the machine's
name, L{notificator.broker.view.Machine})::

    <prefix>:view:<machine>          hash: worker -> its summary (JSON)
    <prefix>:view:<machine>:streams  hash: worker -> its open streams (JSON),
                                     written when they changed
    <prefix>:view:<machine>:alive    sorted set: worker -> until when (ms)

A worker that stops writing (killed, stuck) is out of the view
L{notificator.broker.view.TTL} seconds after its last snapshot; the keys
themselves expire when no worker of the machine is left.  Each worker
does this in one script call a second (L{VIEW_PUT}), over the broker's
link: no connection of its own, nothing in the link's module.  A worker
that stops takes its snapshot out (L{VIEW_DROP}).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from notificator.broker.redis.scripts import Script
from notificator.broker.view import (
    INTERVAL,
    TTL,
    Machine,
    MachineView,
    NodeView,
    encode_streams,
    snapshot,
    status_of,
    stream_list,
)
from notificator.hub import Hub
from notificator.stats import Stats
from notificator.timers import Ticker

#: Write this worker's snapshot, forget the workers whose time is up, and
#: read every worker's summary.
#: KEYS: the summaries, the streams, the deadlines (L{MachineViews.keys}).
#: ARGV: the worker, the ttl (ms), its summary, its streams (empty: unchanged).
#: Returns {whether its streams are there (0/1), worker, summary, ...}.
VIEW_PUT = Script.of(
    """
if redis.replicate_commands then redis.replicate_commands() end
local now = now_ms()
local ttl = tonumber(ARGV[2])
local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
for _, n in ipairs(gone) do
  if n ~= ARGV[1] then
    redis.call('HDEL', KEYS[1], n)
    redis.call('HDEL', KEYS[2], n)
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
redis.call('ZADD', KEYS[3], now + ttl, ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[2], ARGV[1], ARGV[4]) end
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ttl * 2) end
local out = {redis.call('HEXISTS', KEYS[2], ARGV[1])}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all do out[#out + 1] = all[i] end
return out
"""
)

#: Read the snapshots of the workers whose time is not up.
#: KEYS: as L{VIEW_PUT}.  ARGV: "1" to read their streams too, else "0".
#: Returns {worker, summary, streams (nil when not read), ...}.
VIEW_GET = Script.of(
    """
local now = now_ms()
local alive = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. now, '+inf')
local out = {}
for _, n in ipairs(alive) do
  local s = redis.call('HGET', KEYS[1], n)
  if s then
    out[#out + 1] = n
    out[#out + 1] = s
    if ARGV[1] == '1' then
      out[#out + 1] = redis.call('HGET', KEYS[2], n)
    else
      out[#out + 1] = false
    end
  end
end
return out
"""
)


#: Take a worker that stops out of the view at once.
#: KEYS: as L{VIEW_PUT}.  ARGV: the worker.  Returns 1.
VIEW_DROP = Script.of(
    """
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""
)


class MachineViews:
    """
    This worker's part of its machine's view (see the module docstring):
    its snapshot written every L{INTERVAL} seconds (while Redis is
    available), its fellow workers' read back.

    @param link: the broker's link to Redis
        (L{notificator.broker.redis.ordering.Link}).
    @param clock: the time, and the ticks.
    @param health: the broker's health (L{None}: available).
    @param prefix: C{cluster.prefix}.
    @param machine: the machine and this worker's place in it.
    @param node: this worker's name.
    @ivar elsewhere: the open streams per user on the other workers, as
        their last snapshots said (at most L{INTERVAL} seconds old, plus a
        round trip); empty while they cannot be read.
    @ivar metrics: this worker's metric families, encoded
        (L{notificator.broker.view.encode_metrics}); set by the composition
        root once the registry exists.
    """

    def __init__(
        self,
        link: Any,
        clock: Any,
        hub: Hub,
        stats: Stats,
        health: Callable[[], str | None],
        prefix: bytes,
        machine: Machine,
        node: str,
        log: Logger,
    ) -> None:
        self._link = link
        self._clock = clock
        self._hub = hub
        self._stats = stats
        self._health = health
        self.machine = machine
        self.node = node
        self._node = node.encode("utf-8")
        self._log = log
        base = prefix + b":view:" + machine.name.encode("utf-8")
        self.keys = [base, base + b":streams", base + b":alive"]
        self._ttl_ms = int(TTL * 1000)
        self.elsewhere: dict[str, int] = {}
        self.metrics: Callable[[], list[Any]] = list
        self._written: int | None = None  # the hub's version last written
        self._pending = False
        self._read_at: float | None = None
        self._bad: set[bytes] = set()
        self._ticker = Ticker(
            self.tick, "writing this worker's view", clock, INTERVAL, log.namespace
        )

    def start(self) -> None:
        self._ticker.start()

    def stop(self) -> None:
        """No more snapshots (what was written expires after L{TTL} seconds)."""
        self._ticker.stop()

    def leave(self) -> Deferred[None]:
        """
        Take this stopping worker's snapshot out of Redis (L{VIEW_DROP}), so
        that the others stop counting its streams now rather than after
        L{TTL} seconds; after L{stop}.  Fires within L{TTL} seconds, never
        with a failure: a snapshot that cannot be taken out expires.
        """
        if self._health() is not None:
            return succeed(None)
        d = self._link.eval(VIEW_DROP, self.keys, [self._node])
        d.addTimeout(TTL, self._clock)
        left: Deferred[None] = d.addBoth(lambda _: None)
        return left

    def _own(self, with_streams: bool = False, metrics: bool = True) -> NodeView:
        return snapshot(
            self.node,
            status_of(self._hub, self._health()),
            self._hub,
            self._stats,
            self._clock.seconds(),
            self.metrics() if metrics else (),
            with_streams,
        )

    # -- writing ----------------------------------------------------------------

    def tick(self) -> Deferred[None] | None:
        """Write this worker's snapshot and read the others' (one script call)."""
        if self._health() is not None:
            self._stale()
            return None
        if self._pending:
            return None  # the last one has not been answered yet
        own = self._own()
        version = self._hub.version
        streams = b""
        if version != self._written:
            streams = encode_streams(version, stream_list(self._hub))
        self._pending = True
        d = self._link.eval(
            VIEW_PUT, self.keys, [self._node, self._ttl_ms, own.summary_json(), streams]
        )
        done: Deferred[None] = d.addCallbacks(
            self._put, self._put_failed, callbackArgs=(version if streams else None,)
        )
        return done

    def _put(self, reply: Sequence[Any], version: int | None) -> None:
        self._pending = False
        if version is not None:
            self._written = version
        if not int(reply[0]):
            self._written = None  # gone (this worker was late): write them again
        elsewhere: dict[str, int] = {}
        for i in range(1, len(reply) - 1, 2):
            name = bytes(reply[i])
            if name == self._node:
                continue
            other = self._parse(name, bytes(reply[i + 1]))
            if other is None:
                continue
            for user_id, count in other.users.items():
                elsewhere[user_id] = elsewhere.get(user_id, 0) + count
        self.elsewhere = elsewhere
        self._read_at = self._clock.seconds()

    def _put_failed(self, failure: Failure) -> None:
        self._pending = False
        self._stale()

    def _stale(self) -> None:
        """Forget the others' counts once they are older than their own time to live."""
        at = self._read_at
        if at is None or self._clock.seconds() - at > TTL:
            self.elsewhere = {}

    def _parse(self, name: bytes, summary: bytes, streams: bytes | None = None) -> NodeView | None:
        try:
            return NodeView.from_json(summary, streams)
        except ValueError as e:
            if name not in self._bad:
                self._bad.add(name)
                self._log.warn(
                    "ignored the view of {node} in Redis: {reason}",
                    node=name.decode("utf-8", "replace"),
                    reason=str(e),
                )
            return None

    # -- reading ----------------------------------------------------------------

    def view(self, streams: bool = False, metrics: bool = False) -> Deferred[MachineView]:
        """
        Every live worker of the machine: this one now, the others as their
        last snapshots said; this one alone (not C{complete}) when Redis
        cannot be read.
        """
        own = self._own(streams, metrics)
        problem = self._health()
        if problem is not None:
            return succeed(MachineView((own,), self.machine.name, False, problem))
        d = self._link.eval(VIEW_GET, self.keys, [b"1" if streams else b"0"])

        def read(reply: Sequence[Any]) -> MachineView:
            nodes = [own]
            for i in range(0, len(reply) - 2, 3):
                name = bytes(reply[i])
                if name == self._node:
                    continue
                listed = reply[i + 2]
                other = self._parse(
                    name, bytes(reply[i + 1]), bytes(listed) if listed is not None else None
                )
                if other is not None:
                    nodes.append(other)
            nodes.sort(key=lambda n: n.node)
            return MachineView(tuple(nodes), self.machine.name)

        def failed(failure: Failure) -> MachineView:
            return MachineView((own,), self.machine.name, False, failure.getErrorMessage())

        answered: Deferred[MachineView] = d.addCallbacks(read, failed)
        return answered
