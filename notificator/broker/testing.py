# -*- test-case-name: tests.test_broker_testing,tests.test_redis_ordering -*-
"""
Test doubles of the brokers' seams, in memory and on a clock.

L{MemoryRedis} is the Redis of cluster mode as its Lua scripts see it:
L{notificator.broker.redis.scripts.PUBLISH} and
L{notificator.broker.redis.scripts.SINCE} done over again in Python (the
same keys, the same ids from its clock, trims, floors, expiry), and the
cluster channel, which it hands to the links subscribed to it.  The table
of replay and gap cases (tests/replay_cases.py) runs against it as it runs
against a real C{redis-server}, so it answers as the scripts do.

L{FakeLink} is a link to it (L{notificator.broker.redis.ordering.Link}) for
the tests of the broker's ordering: nothing happens until the test says
so, in the order it says, so a test can put a message, a reply and a
barrier in any order Redis may: requests run (L{FakeLink.execute}), their
replies come (L{FakeLink.reply}), messages arrive (L{FakeLink.deliver}),
barriers answer (L{FakeLink.pong}), and connections are lost and come back
(L{FakeLink.lose_subscription}, L{FakeLink.connect}...);
L{FakeLink.settle} does all until nothing is left.  Several links to one
L{MemoryRedis} are several nodes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed

from notificator.broker import Unavailable
from notificator.broker.redis.ordering import Link, Receiver
from notificator.broker.redis.scripts import MARK, PUBLISH, SINCE, Script
from notificator.broker.redis.view import VIEW_DROP, VIEW_GET, VIEW_PUT

#: The scripts' MAXSEQ and KEEP (L{notificator.broker.redis.scripts}).
MAXSEQ = 9007199254740991
KEEP = 86400000

_ID = re.compile(rb"([0-9]+)-([0-9]+)")
_PAIR = re.compile(rb"(\S+) (\S+)")

Id = tuple[int, int]


def _text(value: Any) -> bytes:
    """An argument as Redis receives it: a string."""
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


def _parse(value: bytes | None) -> Id | None:
    """The scripts' C{parse}: C{<ms>-<seq>} or nothing."""
    if value is None:
        return None
    m = _ID.fullmatch(value)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _id(key: Id) -> bytes:
    """The scripts' C{text}."""
    return b"%d-%d" % key


def _pair(value: bytes | None) -> tuple[Id | None, Id | None]:
    """The scripts' C{pair}: the two ids of a floor key."""
    if value is None:
        return None, None
    m = _PAIR.fullmatch(value)
    if not m:
        return None, None
    return _parse(m.group(1)), _parse(m.group(2))


class _Stream:
    """A Redis stream: its entries, oldest first, and the last id it ever took."""

    __slots__ = ("entries", "last")

    def __init__(self) -> None:
        self.entries: list[tuple[Id, bytes]] = []
        self.last: Id = (0, 0)


class MemoryRedis:
    """
    The Redis of cluster mode, as the scripts use it, on a clock.

    @param clock: its time (C{TIME}, and when keys expire).
    @param offset: seconds its clock is ahead of C{clock}.
    """

    def __init__(self, clock: Any, offset: float = 0.0) -> None:
        self._clock = clock
        self.offset = offset
        self._strings: dict[bytes, bytes] = {}
        self._streams: dict[bytes, _Stream] = {}
        # Hashes and sorted sets (the machine's view): field -> value, member -> score.
        self._hashes: dict[bytes, dict[bytes, bytes]] = {}
        self._zsets: dict[bytes, dict[bytes, int]] = {}
        self._expires: dict[bytes, int] = {}
        self._subscribers: list[tuple[bytes, Callable[[bytes], None]]] = []

    # -- the server -------------------------------------------------------------

    def time_ms(self) -> int:
        """C{TIME}, in milliseconds."""
        return int((self._clock.seconds() + self.offset) * 1000)

    def flushall(self) -> None:
        """C{FLUSHALL}: every key is gone (a restart without persistence)."""
        self._strings.clear()
        self._streams.clear()
        self._hashes.clear()
        self._zsets.clear()
        self._expires.clear()

    def subscribe(self, channel: bytes, deliver: Callable[[bytes], None]) -> None:
        """A subscription to C{channel}: C{deliver} gets its messages."""
        self._subscribers.append((channel, deliver))

    def unsubscribe(self, deliver: Callable[[bytes], None]) -> None:
        self._subscribers = [s for s in self._subscribers if s[1] != deliver]

    def publish(self, channel: bytes, payload: bytes) -> int:
        """C{PUBLISH}: hand C{payload} to the subscribers of C{channel}; how many."""
        n = 0
        for subscribed, deliver in list(self._subscribers):
            if subscribed == channel:
                deliver(payload)
                n += 1
        return n

    def exists(self, key: bytes) -> bool:
        """C{EXISTS}, now."""
        return self._alive(key, self.time_ms())

    def run(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """C{EVALSHA}: run C{script} (one of ours) atomically; its reply."""
        keys = [_text(k) for k in keys]
        args = [_text(a) for a in args]
        if script.sha == PUBLISH.sha:
            return self._publish(keys, args)
        if script.sha == SINCE.sha:
            return self._since(keys, args)
        if script.sha == MARK.sha:
            return self._mark(keys)
        if script.sha == VIEW_PUT.sha:
            return self._view_put(keys, args)
        if script.sha == VIEW_GET.sha:
            return self._view_get(keys, args)
        if script.sha == VIEW_DROP.sha:
            return self._view_drop(keys, args)
        raise ValueError(f"not a script of ours: {script.sha!r}")

    # -- keys -------------------------------------------------------------------

    def _alive(self, key: bytes, now: int) -> bool:
        """Whether C{key} exists at C{now}; drops it when expired (Redis: now > expiry)."""
        at = self._expires.get(key)
        if at is not None and now > at:
            self._strings.pop(key, None)
            self._streams.pop(key, None)
            self._hashes.pop(key, None)
            self._zsets.pop(key, None)
            del self._expires[key]
        return (
            key in self._strings
            or key in self._streams
            or key in self._hashes
            or key in self._zsets
        )

    def _get(self, key: bytes, now: int) -> bytes | None:
        return self._strings.get(key) if self._alive(key, now) else None

    def _set(self, key: bytes, value: bytes, now: int, px: int | None = None) -> None:
        self._alive(key, now)
        self._streams.pop(key, None)
        self._strings[key] = value
        if px is None:
            self._expires.pop(key, None)
        else:
            self._expires[key] = now + px

    def _stream(self, key: bytes, now: int) -> _Stream | None:
        return self._streams.get(key) if self._alive(key, now) else None

    def _hash(self, key: bytes, now: int) -> dict[bytes, bytes]:
        self._alive(key, now)
        return self._hashes.setdefault(key, {})

    def _zset(self, key: bytes, now: int) -> dict[bytes, int]:
        self._alive(key, now)
        return self._zsets.setdefault(key, {})

    def _drop_empty(self) -> None:
        """Redis has no empty hash or sorted set: they are gone (with their expiry)."""
        for table in (self._hashes, self._zsets):
            for key in [k for k, v in table.items() if not v]:
                del table[key]
                self._expires.pop(key, None)

    # -- the scripts --------------------------------------------------------------

    def _view_put(self, keys: list[bytes], args: list[bytes]) -> list[Any]:
        """L{VIEW_PUT} (see its source, which this follows line by line)."""
        now = self.time_ms()
        node, ttl, summary, streams = args[0], int(args[1]), args[2], args[3]
        summaries, listed, alive = (
            self._hash(keys[0], now),
            self._hash(keys[1], now),
            self._zset(keys[2], now),
        )
        for n in [n for n, until in alive.items() if until <= now]:
            if n != node:
                summaries.pop(n, None)
                listed.pop(n, None)
            del alive[n]
        alive[node] = now + ttl
        summaries[node] = summary
        if streams:
            listed[node] = streams
        self._drop_empty()
        for key in keys:
            if self._alive(key, now):
                self._expires[key] = now + ttl * 2
        out: list[Any] = [1 if node in self._hashes.get(keys[1], {}) else 0]
        for n, value in self._hashes.get(keys[0], {}).items():
            out += [n, value]
        return out

    def _view_get(self, keys: list[bytes], args: list[bytes]) -> list[Any]:
        """L{VIEW_GET} (see its source, which this follows line by line)."""
        now = self.time_ms()
        summaries = self._hashes.get(keys[0], {}) if self._alive(keys[0], now) else {}
        listed = self._hashes.get(keys[1], {}) if self._alive(keys[1], now) else {}
        alive = self._zsets.get(keys[2], {}) if self._alive(keys[2], now) else {}
        out: list[Any] = []
        for n, until in sorted(alive.items(), key=lambda item: (item[1], item[0])):
            if until > now and n in summaries:
                out += [n, summaries[n], listed.get(n) if args[0] == b"1" else None]
        return out

    def _view_drop(self, keys: list[bytes], args: list[bytes]) -> int:
        """L{VIEW_DROP} (see its source, which this follows line by line)."""
        now = self.time_ms()
        self._hash(keys[0], now).pop(args[0], None)
        self._hash(keys[1], now).pop(args[0], None)
        self._zset(keys[2], now).pop(args[0], None)
        self._drop_empty()
        return 1

    def _publish(self, keys: list[bytes], args: list[bytes]) -> list[Any]:
        """L{PUBLISH} (see its source, which this follows line by line)."""
        last_key, since_key = keys[0], keys[1]
        size, ttl, channel = int(args[0]), int(args[1]), args[2]
        now = self.time_ms()
        dead = now - ttl
        last = _parse(self._get(last_key, now))
        given = False
        out: list[Any] = []
        for i in range(2, len(keys), 2):
            h, f = keys[i], keys[i + 1]
            body, user = args[i + 1], args[i + 2]
            key: Id = (now, 0)
            if last and not key > last:
                key = (last[0], last[1] + 1)
            if size > 0:
                floor, top = _pair(self._get(f, now))
                stream = self._stream(h, now)
                if stream is None:
                    # A new record: all the user had was dropped, the newest
                    # being its last; and without even that, all it had expired.
                    floor = top or (dead, MAXSEQ)
                    stream = self._streams[h] = _Stream()
                    self._expires.pop(h, None)
                elif not floor:
                    floor = (dead, MAXSEQ)
                if not key > stream.last:
                    # XADD refuses it: XADD * (the stream's clock).
                    ms, seq = stream.last
                    key = (now, 0) if now > ms else (ms, seq + 1)
                stream.entries.append((key, body))
                stream.last = key
                n = len(stream.entries)
                if n > size:
                    gone = stream.entries[n - size - 1][0]
                    if gone > floor:
                        floor = gone
                    del stream.entries[: n - size]
                old = [k for k, _ in stream.entries if k[0] <= dead]
                if old:
                    if old[-1] > floor:
                        floor = old[-1]
                    stream.entries = [e for e in stream.entries if e[0][0] > dead]
                self._set(f, _id(floor) + b" " + _id(key), now, ttl + KEEP)
                self._expires[h] = now + ttl
            if last is None or key > last:
                last = key
                given = True
            if i == 2 and self._get(since_key, now) is None:
                self._set(since_key, _id(key), now)
            out.append(_id(key))
            out.append(self.publish(channel, _id(key) + b"\n" + user + b"\n" + body))
        if given:
            assert last is not None
            self._set(last_key, _id(last), now)
        return out

    def _mark(self, keys: list[bytes]) -> bytes:
        """L{MARK} (see its source, which this follows line by line)."""
        now = self.time_ms()
        last = self._get(keys[0], now)
        if last is not None:
            return last
        made = _id((now, 0))
        self._set(keys[0], made, now)
        if self._get(keys[1], now) is None:
            self._set(keys[1], made, now)
        return made

    def _since(self, keys: list[bytes], args: list[bytes]) -> list[Any]:
        """L{SINCE} (see its source, which this follows line by line)."""
        now = self.time_ms()
        dead = now - int(args[0])
        since = _parse(self._get(keys[1], now)) or (now, MAXSEQ)
        given = _parse(self._get(keys[0], now))
        out: list[Any] = [now, _id(given) if given else b""]
        if not given or since > given:
            given = since
        for i in range(2, len(keys), 2):
            kept: list[tuple[Id, bytes]] = []
            floor, top = _pair(self._get(keys[i + 1], now))
            stream = self._stream(keys[i], now)
            if stream is None:
                # No record: all was dropped, its last the newest; or all expired.
                floor = top or (dead, MAXSEQ)
            else:
                kept = [e for e in stream.entries if e[0][0] > dead]
                floor = floor or (dead, MAXSEQ)
                # Expired but not trimmed yet (no publish since): lost all the same.
                old = [k for k, _ in stream.entries if k[0] <= dead]
                if old and old[-1] > floor:
                    floor = old[-1]
            seen = _parse(args[i // 2])
            reason = b""
            if not seen or seen > given:
                reason = b"unknown"
            elif since > seen:
                reason = b"lost"
            elif floor > seen:
                reason = b"expired"
            out += [reason, _id(kept[0][0]) if kept else b""]
            entries = kept if seen is None or reason else [e for e in kept if e[0] > seen]
            out.append(len(entries))
            for k, b in entries:
                out += [_id(k), b]
        return out


class FakeLink:
    """
    A L{notificator.broker.redis.ordering.Link} to a L{MemoryRedis}, driven
    by the test (see the module docstring).  Both connections start down:
    L{connect} brings them up.

    @ivar redis: the L{MemoryRedis} it talks to.
    @ivar calls: every script it was asked to run: (script, keys, args).
    """

    ping_interval = 5.0

    def __init__(self, clock: Any, redis: MemoryRedis | None = None) -> None:
        self._clock = clock
        self.redis = redis if redis is not None else MemoryRedis(clock)
        self.calls: list[tuple[Script, tuple[Any, ...], tuple[Any, ...]]] = []
        self.commands = False
        self.subscription = False
        self._stopping = False
        self._up = False
        self._channel = b""
        self._receiver: Receiver | None = None
        # Sent on the command connection, not run yet; run, not answered yet.
        self._requests: list[tuple[Callable[[], Any], Deferred[Any]]] = []
        self._replies: list[tuple[Deferred[Any], Any]] = []
        # Published to the subscription, not handed over yet; and the
        # barriers, each with how many messages were sent before it.
        self._messages: list[bytes] = []
        self._sent = 0
        self._handed = 0
        self._barriers: list[tuple[int, Deferred[None]]] = []
        self._down_since = float(clock.seconds())
        self.outages = 0
        self.rtt_last: float | None = None
        self.rtt_count = 0
        self.rtt_sum = 0.0

    # -- the Link interface -----------------------------------------------------

    def start(self, channel: bytes, receiver: Receiver) -> None:
        self._channel = channel
        self._receiver = receiver
        self._stopping = False
        self._down_since = float(self._clock.seconds())

    def stop(self) -> Deferred[None]:
        # Not an outage: the node is stopping.
        self._stopping = True
        self._up = False
        self.lose_commands()
        self.lose_subscription()
        self._update()
        return succeed(None)

    def health(self) -> str | None:
        if self._up:
            return None
        if self._stopping:
            return "the node is stopping"
        if not self.commands and not self.subscription:
            return "Redis (in memory) is unreachable"
        if not self.commands:
            return "the command connection to Redis (in memory) is lost"
        return "the subscription to Redis (in memory) is lost"

    def outage_seconds(self) -> float:
        if self._up:
            return 0.0
        return max(0.0, float(self._clock.seconds()) - self._down_since)

    def eval(self, script: Script, keys: Sequence[bytes], args: Sequence[Any]) -> Deferred[Any]:
        self.calls.append((script, tuple(keys), tuple(args)))
        return self._request(lambda: self.redis.run(script, keys, args))

    def time(self) -> Deferred[int]:
        return self._request(self.redis.time_ms)

    def barrier(self) -> Deferred[None]:
        if not self.subscription:
            return fail(Unavailable("the subscription to Redis is lost"))
        d: Deferred[None] = Deferred()
        self._barriers.append((self._sent, d))
        return d

    def _request(self, run: Callable[[], Any]) -> Deferred[Any]:
        if not self.commands:
            return fail(Unavailable(self.health() or "not connected"))
        d: Deferred[Any] = Deferred()
        self._requests.append((run, d))
        return d

    def _message(self, payload: bytes) -> None:
        self._messages.append(payload)
        self._sent += 1

    # -- what the test does -------------------------------------------------------

    def connect(self, commands: bool = True, subscription: bool = True) -> None:
        """Bring up the command connection and the subscription (those asked)."""
        if commands and not self.commands:
            self.commands = True
            self._update()
        if subscription and not self.subscription:
            self.subscription = True
            self.redis.subscribe(self._channel, self._message)
            if self._receiver is not None:
                self._receiver.subscribed()
            self._update()

    def lose_subscription(self) -> None:
        """
        The subscription's connection is lost: what was on its way is
        lost with it, and the barriers waiting on it fail.
        """
        if not self.subscription:
            return
        self.subscription = False
        self.redis.unsubscribe(self._message)
        self._messages.clear()
        self._handed = self._sent
        if self._receiver is not None:
            self._receiver.subscription_lost()
        self._update()
        barriers, self._barriers = self._barriers, []
        for _, d in barriers:
            d.errback(Unavailable("Redis: Lost connection"))

    def lose_commands(self) -> None:
        """
        The command connection is lost: the requests not answered fail
        (those not run yet are not run).
        """
        if not self.commands:
            return
        self.commands = False
        self._update()
        pending = [d for _, d in self._requests] + [d for d, _ in self._replies]
        self._requests.clear()
        self._replies.clear()
        for d in pending:
            d.errback(
                Unavailable(
                    "the connection to Redis was lost before it answered"
                    " (it may have been recorded)"
                )
            )

    def execute(self, count: int | None = None) -> int:
        """Redis runs the oldest C{count} requests sent (all); how many it ran."""
        n = 0
        while self._requests and (count is None or n < count):
            run, d = self._requests.pop(0)
            self._replies.append((d, run()))
            n += 1
        return n

    def reply(self, count: int | None = None) -> int:
        """The replies of the oldest C{count} requests run (all) arrive; how many."""
        n = 0
        while self._replies and (count is None or n < count):
            d, result = self._replies.pop(0)
            d.callback(result)
            n += 1
        return n

    def deliver(self, count: int | None = None) -> int:
        """The oldest C{count} messages on their way (all) arrive; how many."""
        n = 0
        while self._messages and (count is None or n < count):
            payload = self._messages.pop(0)
            self._handed += 1
            if self._receiver is not None:
                self._receiver.received(payload)
            n += 1
        return n

    def pong(self) -> int:
        """
        The barriers answer, each after the messages sent before it; how
        many answered.
        """
        n = 0
        while self._barriers:
            position, d = self._barriers[0]
            while self._handed < position and self._messages:
                self.deliver(1)
            self._barriers.pop(0)
            d.callback(None)
            n += 1
        return n

    def settle(self) -> None:
        """Run, deliver, reply and answer everything, until nothing is left."""
        for _ in range(1000):
            if not (self.execute() + self.deliver() + self.reply() + self.pong()):
                return
        raise AssertionError("the fake link does not settle")

    def _update(self) -> None:
        up = self.commands and self.subscription and not self._stopping
        if up == self._up:
            return
        self._up = up
        if up:
            if self._receiver is not None:
                self._receiver.available()
        else:
            self.outages += 1
            self._down_since = float(self._clock.seconds())


class RecordingReceiver:
    """
    A L{Receiver} that records what a link tells it, in order: the
    payloads received, and C{"subscribed"}, C{"lost"}, C{"available"}.
    """

    def __init__(self) -> None:
        self.events: list[Any] = []

    def received(self, payload: bytes) -> None:
        self.events.append(payload)

    def subscribed(self) -> None:
        self.events.append("subscribed")

    def subscription_lost(self) -> None:
        self.events.append("lost")

    def available(self) -> None:
        self.events.append("available")


def _is_a_link(link: FakeLink) -> Link:
    """
    Where mypy checks that a L{FakeLink} is a L{Link} (as
    L{notificator.broker.redis.build_broker} checks the real one): the
    ordering's tests drive the broker through what the real link offers.
    """
    return link


def _is_a_receiver(receiver: RecordingReceiver) -> Receiver:
    """Where mypy checks that a L{RecordingReceiver} is a L{Receiver}."""
    return receiver
