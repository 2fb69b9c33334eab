"""
Tests for L{notificator.broker.redis.scripts}: the Lua scripts, run by a
real C{redis-server} of the test's own (skipped loudly outside CI when it
is not installed, failed in CI).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from notificator.broker.redis.ordering import (
    Missed,
    parse_message,
    parse_since,
)
from notificator.broker.redis.scripts import PUBLISH, SINCE, Script
from notificator.broker.redis.view import VIEW_DROP, VIEW_GET, VIEW_PUT
from notificator.broker.testing import MemoryRedis
from notificator.events import event_key
from tests.replay_cases import SCRIPTS, Case, ScriptsImplementation, real_sleep, replay_cases
from tests.support import RedisServer
from tests.test_redis_ordering import BODY, frame


class ScriptTests(SynchronousTestCase):
    """The Lua scripts, run by a real redis-server."""

    def setUp(self) -> None:
        self.redis = RedisServer(self).start()

    def publish(self, user: str, size: int = 3, ttl_ms: int = 60_000, body: bytes = BODY) -> str:
        reply = self.redis.command(
            "EVAL",
            PUBLISH.source,
            "4",
            "t:last",
            "t:since",
            f"t:h:{user}",
            f"t:f:{user}",
            str(size),
            str(ttl_ms),
            "t:events",
            body,
            user,
        )
        return reply[0].decode()

    def since(self, seen: dict[str, str], ttl_ms: int = 60_000) -> tuple[Any, list[Missed]]:
        keys = ["t:last", "t:since"]
        for user in seen:
            keys += [f"t:h:{user}", f"t:f:{user}"]
        reply = self.redis.command(
            "EVALSHA", SINCE.sha, str(len(keys)), *keys, str(ttl_ms), *seen.values()
        )
        _, last, missed = parse_since(reply, len(seen))
        return last, missed

    def test_ids_increase_across_users(self) -> None:
        """Ids come from Redis's clock and the last id given: increasing over all users."""
        ids = [self.publish(user) for user in ("a", "b", "a", "c") * 5]
        keys = [event_key(i) for i in ids]
        self.assertEqual(keys, sorted(set(keys)))  # type: ignore[type-var]
        ms = int(ids[-1].split("-")[0])
        self.assertLess(abs(ms - time.time() * 1000), 60_000)

    def test_history_is_trimmed_exactly_and_floors_say_what_was_dropped(self) -> None:
        """size 3: the fourth publish drops the first; replaying from it is expired, from the next complete."""
        self.redis.command("SCRIPT", "LOAD", SINCE.source)
        ids = [self.publish("a") for _ in range(5)]
        self.assertEqual(self.redis.command("XLEN", "t:h:a"), 3)
        self.assertEqual(self.redis.command("GET", "t:f:a").decode(), f"{ids[1]} {ids[4]}")
        _, [expired] = self.since({"a": ids[0]})
        self.assertEqual((expired.reason, expired.oldest), ("expired", ids[2]))
        self.assertEqual([f for _, f in expired.entries], [frame(i) for i in ids[2:]])
        _, [complete] = self.since({"a": ids[1]})
        self.assertIsNone(complete.reason)
        self.assertEqual([f for _, f in complete.entries], [frame(i) for i in ids[2:]])
        _, [latest] = self.since({"a": ids[4]})
        self.assertEqual((latest.reason, latest.entries), (None, ()))

    def test_ttl_drops_old_entries(self) -> None:
        """Entries older than the ttl are not replayed and make an older id expired."""
        self.redis.command("SCRIPT", "LOAD", SINCE.source)
        TTL = 500  # ms: room for a slow machine between a publish and the next read
        first = self.publish("a", ttl_ms=TTL)
        time.sleep(TTL / 1000 + 0.1)
        _, [m] = self.since({"a": first}, ttl_ms=TTL)
        self.assertEqual((m.reason, m.entries), (None, ()))  # saw the last one: nothing missed
        second = self.publish("a", ttl_ms=TTL)
        self.assertEqual(self.redis.command("XLEN", "t:h:a"), 1)
        _, [m] = self.since({"a": "1-0"}, ttl_ms=TTL)
        self.assertEqual(m.reason, "lost")  # before the history began
        _, [m] = self.since({"a": first}, ttl_ms=TTL)
        self.assertIsNone(m.reason)
        self.assertEqual([f for _, f in m.entries], [frame(second)])
        time.sleep(TTL / 1000 + 0.1)
        # The user's record expired with its last entry: it had nothing newer.
        self.assertEqual(self.redis.command("EXISTS", "t:h:a"), 0)
        _, [m] = self.since({"a": second}, ttl_ms=TTL)
        self.assertEqual((m.reason, m.entries), (None, ()))
        _, [m] = self.since({"a": first}, ttl_ms=TTL)
        self.assertEqual(m.reason, "expired")

    def test_unknown_and_lost(self) -> None:
        """An id later than any given, or not an id, is unknown; after FLUSHALL every id is lost."""
        self.redis.command("SCRIPT", "LOAD", SINCE.source)
        ids = [self.publish("a") for _ in range(2)]
        ms = int(ids[-1].split("-")[0])
        _, [m] = self.since({"a": f"{ms + 100000}-0"})
        self.assertEqual((m.reason, len(m.entries)), ("unknown", 2))
        _, [m] = self.since({"a": ""})
        self.assertEqual(m.reason, "unknown")
        self.redis.command("FLUSHALL")
        self.redis.command("SCRIPT", "LOAD", SINCE.source)
        _, [m] = self.since({"a": ids[1]})
        self.assertEqual(m.reason, "lost")
        for _ in range(20):
            # Even an id of this very millisecond is from before the loss.
            sec, usec = self.redis.command("TIME")
            _, [m] = self.since({"a": "%d-0" % (int(sec) * 1000 + int(usec) // 1000)})
            self.assertEqual(m.reason, "lost")
        again = self.publish("a")
        _, [m] = self.since({"a": ids[1]})
        self.assertEqual((m.reason, [f for _, f in m.entries]), ("lost", [frame(again)]))
        _, [m] = self.since({"a": again})
        self.assertIsNone(m.reason)

    def test_a_new_record_after_expiry_knows_what_it_lost(self) -> None:
        """A user whose record expired and comes back: an id from before its last is expired."""
        self.redis.command("SCRIPT", "LOAD", SINCE.source)
        before = self.publish("z", ttl_ms=150)
        first = self.publish("a", ttl_ms=150)
        time.sleep(0.2)
        self.assertEqual(self.redis.command("EXISTS", "t:h:a"), 0)
        self.publish("a", ttl_ms=150)
        _, [m] = self.since({"a": before}, ttl_ms=150)
        self.assertEqual(m.reason, "expired")
        _, [m] = self.since({"a": first}, ttl_ms=150)
        self.assertIsNone(m.reason)

    def test_publish_announces_on_the_channel(self) -> None:
        """The script's PUBLISH carries id, user id and body; its count is the subscribers."""
        import socket

        from tests.support import _RESPReader

        with socket.create_connection(("127.0.0.1", self.redis.port), timeout=5) as sub:
            sub.sendall(b"*2\r\n$9\r\nSUBSCRIBE\r\n$8\r\nt:events\r\n")
            reader = _RESPReader(sub.makefile("rb"))
            self.assertEqual(reader.read()[0], b"subscribe")
            reply = self.redis.command(
                "EVAL", PUBLISH.source, "4", "t:last", "t:since", "t:h:u", "t:f:u",
                "3", "60000", "t:events", BODY, "u",
            )  # fmt: skip
            self.assertEqual(reply[1], 1)
            kind, channel, payload = reader.read()
        self.assertEqual((kind, channel), (b"message", b"t:events"))
        self.assertEqual(parse_message(payload), (reply[0], "u", BODY))

    def test_size_zero_keeps_nothing(self) -> None:
        """sse.history.size 0: ids and announcements, no history."""
        self.publish("a", size=0)
        self.assertEqual(self.redis.command("EXISTS", "t:h:a"), 0)


#: A batch of notifications: (user, body) in order, for a history of 3.
BATCH = [("a", b"1"), ("b", b"2"), ("a", b"3"), ("a", b"4"), ("a", b"5")]


def batch_outcome(
    run: Callable[[Script, list[bytes], list[Any]], Any],
    get: Callable[[bytes], bytes | None],
    prefix: bytes,
    one_by_one: bool,
) -> Any:
    """
    Publish L{BATCH} through C{run} (one run of the script, or one per
    notification) and read back what it left, each id as its place in the
    batch: the ids given, the keys, what a replay of each user answers.
    """
    keys = {
        user: [prefix + b":h:" + user.encode(), prefix + b":f:" + user.encode()]
        for user, _ in BATCH
    }
    head, top = [prefix + b":last", prefix + b":since"], [b"3", b"60000", prefix + b":events"]
    ids: list[bytes] = []
    parts = [(keys[user], [body, user.encode()]) for user, body in BATCH]
    for group in [[p] for p in parts] if one_by_one else [parts]:
        reply = run(
            PUBLISH,
            head + [k for ks, _ in group for k in ks],
            top + [a for _, az in group for a in az],
        )
        ids += [bytes(i) for i in reply[0::2]]
        assert reply[1::2] == [0] * len(group), reply
    place = {i: str(n) for n, i in enumerate(ids)}
    assert sorted(ids, key=lambda i: event_key(i.decode()) or 0) == ids and len(place) == len(ids)

    def named(value: bytes | None) -> str | None:
        return None if value is None else " ".join(place.get(i, "?") for i in value.split())

    replays = []
    for user, seen in [("a", ids[0]), ("a", ids[2]), ("b", ids[1]), ("b", b"")]:
        reply = run(SINCE, head + keys[user], [b"60000", seen])
        [m] = parse_since(reply, 1)[2]
        replays.append(
            (
                m.reason,
                named(m.oldest.encode() if m.oldest else None),
                [named(f.split(b"\n")[0][4:]) for _, f in m.entries],
            )
        )
    return (
        named(get(prefix + b":last")),
        named(get(prefix + b":since")),
        named(get(prefix + b":f:a")),
        named(get(prefix + b":f:b")),
        replays,
    )


class BatchTests(SynchronousTestCase):
    """
    A run of L{PUBLISH} with many notifications leaves what a run per
    notification leaves, on a real redis-server as in memory.
    """

    def test_a_batch_is_its_publishes_one_by_one(self) -> None:
        redis = RedisServer(self).start()

        def run(script: Script, keys: list[bytes], args: list[Any]) -> Any:
            return redis.command("EVAL", script.source, str(len(keys)), *keys, *args)

        def get(key: bytes) -> bytes | None:
            value: bytes | None = redis.command("GET", key)
            return value

        clock = Clock()
        clock.advance(time.time())
        memory = MemoryRedis(clock)
        expected = (
            "4",
            "0",
            "0 4",  # a's floor: its first, trimmed (size 3); its last
            "? 1",  # b's floor: older than the ttl (it had nothing before); its last
            [
                (None, "2", ["2", "3", "4"]),
                (None, "2", ["3", "4"]),
                (None, "1", []),
                ("unknown", "1", ["1"]),
            ],
        )
        self.assertEqual(batch_outcome(run, get, b"one", True), expected)
        self.assertEqual(batch_outcome(run, get, b"batch", False), expected)
        self.assertEqual(
            batch_outcome(memory.run, lambda k: memory._get(k, memory.time_ms()), b"m", False),
            expected,
        )


def on_redis_server(testcase: SynchronousTestCase, case: Case) -> ScriptsImplementation:
    """The scripts, run by a real redis-server of the test's own (ttl: 1 s, real time)."""
    redis = RedisServer(testcase).start()

    def run(script: Script, keys: list[bytes], args: list[Any]) -> Any:
        words = [a if isinstance(a, bytes) else str(a) for a in args]
        return redis.command("EVAL", script.source, str(len(keys)), *keys, *words)

    return ScriptsImplementation(case, run, real_sleep, lambda: redis.command("FLUSHALL"), 1.0)


@replay_cases(SCRIPTS, on_redis_server)
class ReplayCaseTests(SynchronousTestCase):
    """
    The table of replay and gap cases (tests/replay_cases.py), which the
    history is tested with too, on the scripts run by a real redis-server.
    """


class ViewScriptTests(SynchronousTestCase):
    """The machine's view (L{VIEW_PUT}, L{VIEW_GET}, L{VIEW_DROP}) on a real redis-server, as in memory."""

    KEYS = ["t:view:m", "t:view:m:streams", "t:view:m:alive"]

    def setUp(self) -> None:
        self.redis = RedisServer(self).start()

    def put(self, node: str, ttl_ms: int, summary: str, streams: str = "") -> Any:
        return self.redis.command(
            "EVAL", VIEW_PUT.source, "3", *self.KEYS, node, str(ttl_ms), summary, streams
        )

    def get(self, streams: bool) -> Any:
        return self.redis.command("EVAL", VIEW_GET.source, "3", *self.KEYS, "1" if streams else "0")

    def test_drop(self) -> None:
        """A worker that leaves is out at once, its streams too; the others stay; no key is left."""
        self.put("a", 60_000, "A", "SA")
        self.put("b", 60_000, "B", "SB")
        drop = ["EVAL", VIEW_DROP.source, "3", *self.KEYS]
        self.assertEqual(self.redis.command(*drop, "a"), 1)
        self.assertEqual(self.get(True), [b"b", b"B", b"SB"])
        self.assertIsNone(self.redis.command("ZSCORE", "t:view:m:alive", "a"))
        self.assertEqual(self.redis.command(*drop, "b"), 1)
        self.assertEqual(self.redis.command("EXISTS", *self.KEYS), 0)

    def test_put_get_and_expiry(self) -> None:
        """Each worker's entry is read back while its time lasts, then dropped with its streams."""
        self.assertEqual(self.put("a", 200, "A", "SA"), [1, b"a", b"A"])
        reply = self.put("b", 60_000, "B")
        self.assertEqual(reply[0], 0)  # b wrote no streams yet
        self.assertEqual(
            sorted(zip(reply[1::2], reply[2::2], strict=True)), [(b"a", b"A"), (b"b", b"B")]
        )
        self.assertEqual(
            sorted(self.get(True), key=repr),
            sorted([b"a", b"A", b"SA", b"b", b"B", None], key=repr),
        )
        time.sleep(0.3)
        self.assertEqual(self.get(False), [b"b", b"B", None])
        self.assertEqual(self.put("b", 60_000, "B2"), [0, b"b", b"B2"])
        self.assertEqual(self.redis.command("HEXISTS", "t:view:m:streams", "a"), 0)
        self.assertGreater(self.redis.command("PTTL", "t:view:m"), 0)
