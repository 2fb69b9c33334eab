"""
Tests for L{notificator.broker.redis.ordering}, cluster mode's broker: its
pure helpers; its ordering over a L{notificator.broker.testing.FakeLink}
and a L{Clock} (the merge of a replay with what arrived live meanwhile,
the fill after an outage, the outage itself: fast failures; timeouts);
and how C{makeService} picks it.
"""

from __future__ import annotations

import gc
import json
import os
import tracemalloc
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from notificator import services, tap
from notificator.broker import Published, Unavailable
from notificator.broker.redis import RedisBroker
from notificator.broker.redis.ordering import (
    MAX_BATCH,
    Missed,
    frame_of,
    id_key,
    merge,
    parse_message,
    parse_since,
)
from notificator.broker.redis.scripts import MARK, PUBLISH, SINCE
from notificator.broker.testing import FakeLink, MemoryRedis
from notificator.config import defaults
from notificator.events import SEQ_SPAN, Message, encode_frame, event_key
from notificator.history import Replay
from notificator.hub import Hub
from notificator.stats import Stats
from tests.replay_cases import SCRIPTS, Case, replay_cases
from tests.support import FakeStream, evolved, parse_frames, write_config


def history(**changes: Any) -> Any:
    """C{sse.history}: the shipped defaults with these changes."""
    return evolved(defaults().sse.history, changes)


def cluster_config(**changes: Any) -> Any:
    """C{cluster}: the shipped defaults with these changes."""
    return evolved(defaults().cluster, changes)


BODY = encode_frame("notify", '{"n": 1}')


def frame(eid: str, body: bytes = BODY) -> bytes:
    return frame_of(eid.encode(), body)


def entries(*eids: str) -> list[tuple[int, bytes]]:
    return [(id_key(e.encode()), frame(e)) for e in eids]


class HelperTests(SynchronousTestCase):
    def test_message_round_trip(self) -> None:
        """A channel message is split into id, user id and body; the body may hold newlines."""
        body = b"event: notify\ndata: a\ndata: b\n\n"
        self.assertEqual(
            parse_message(b"17-3\n\xed\x99\x8d_1\n" + body), (b"17-3", "\ud64d_1", body)
        )
        self.assertRaises(ValueError, parse_message, b"17-3 no newline")

    def test_id_key_orders_like_event_key(self) -> None:
        """Redis ids order by (ms, seq), as the history's keys do."""
        self.assertEqual(id_key(b"1700000000000-5"), event_key("1700000000000-5"))
        self.assertLess(id_key(b"9-99"), id_key(b"10-0"))

    def test_frame_is_the_local_brokers(self) -> None:
        """id line + stored body is byte for byte what encode_frame makes with the id."""
        self.assertEqual(
            frame_of(b"5-1", encode_frame("notify", "x\ny")), encode_frame("notify", "x\ny", "5-1")
        )

    def test_merge_drops_what_the_history_already_gave(self) -> None:
        """Live frames up to the last history entry are duplicates; later ones follow in order."""
        got = merge(entries("5-0", "6-0"), entries("6-0", "7-0", "8-0"), after=0)
        self.assertEqual(got, [frame("5-0"), frame("6-0"), frame("7-0"), frame("8-0")])

    def test_merge_without_entries_keeps_live_after_the_clients_id(self) -> None:
        """With nothing in the history after the id, live frames after it are the replay."""
        got = merge([], entries("4-0", "6-0"), after=id_key(b"5-0"))
        self.assertEqual(got, [frame("6-0")])

    def test_parse_since(self) -> None:
        """A SINCE answer: Redis's time, the last id, and per user reason, oldest, entries."""
        reply = [1000, b"9-0", b"", b"3-0", 1, b"4-0", BODY, b"expired", b"", 0]
        now, last, missed = parse_since(reply, 2)
        self.assertEqual((now, last), (1000, b"9-0"))
        self.assertEqual(missed[0], Missed(None, "3-0", ((id_key(b"4-0"), frame("4-0")),)))
        self.assertEqual(missed[1], Missed("expired", None, ()))

    def test_default_node(self) -> None:
        """cluster.node's default: host name and port of the first listener, else the pid."""
        self.assertTrue(tap.default_node(["tcp:port=3000:interface=::"]).endswith(":3000"))
        self.assertTrue(tap.default_node(["https:port=3443:privateKey=k"]).endswith(":3443"))
        self.assertTrue(tap.default_node(["tcp:3001"]).endswith(":3001"))
        self.assertTrue(
            tap.default_node(["tcp:0:interface=127.0.0.1"]).endswith(f":pid{os.getpid()}")
        )


# -- the broker over a fake link --------------------------------------------------


def body(n: int) -> bytes:
    """The frame body of notification C{n}."""
    return encode_frame("notify", f'{{"n": {n}}}')


def framed(eid: str, n: int) -> bytes:
    """The frame of notification C{n} with the id C{eid}."""
    return frame_of(eid.encode(), body(n))


class Node:
    """
    A started L{RedisBroker} named C{name} over a L{FakeLink} to C{redis},
    with its hub, on C{clock}.
    """

    def __init__(self, clock: Clock, redis: MemoryRedis, name: str = "n1", size: int = 100) -> None:
        self.stats = Stats(started_at=clock.seconds())
        self.hub = Hub(clock=clock, stats=self.stats)
        self.link = FakeLink(clock, redis)
        cluster = cluster_config(node=name, timeout=2.0)
        self.broker = RedisBroker(
            self.hub, self.stats, clock, self.link, cluster, history(size=size, ttl=60), name
        )
        self.broker.startService()

    def up(self) -> None:
        """Both connections, and the first catch-up done."""
        self.link.connect()
        self.link.settle()
        assert self.broker.health() is None

    def stream(self, user_id: str = "u1") -> FakeStream:
        """A stream of C{user_id} open on this node."""
        stream = FakeStream(user_id)
        self.hub.attach(stream)
        return stream


class Harness:
    """A node (L{Node}) and the Redis it talks to, on a L{Clock}."""

    def __init__(self, size: int = 100) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.redis = MemoryRedis(self.clock)
        self.size = size
        self.node = Node(self.clock, self.redis, size=size)
        self.broker = self.node.broker
        self.link = self.node.link
        self.hub = self.node.hub
        self.stats = self.node.stats

    def elsewhere(self, n: int, user_id: str = "u1", data: str | None = None) -> str:
        """
        Another node publishes notification C{n} of C{user_id} (or one with
        C{data}): recorded in Redis and on its way to the subscribed nodes;
        its id.
        """
        user = user_id.encode()
        keys = [b"notificator:last", b"notificator:since"]
        keys += [b"notificator:h:" + user, b"notificator:f:" + user]
        frame_body = body(n) if data is None else encode_frame("notify", data)
        args = [self.size, 60_000, b"notificator:events", frame_body, user]
        return bytes(self.redis.run(PUBLISH, keys, args)[0]).decode()


def since_calls(link: FakeLink) -> list[tuple[Any, ...]]:
    """The arguments of every SINCE asked of C{link}."""
    return [args for script, _, args in link.calls if script is SINCE]


def load_address(url: str) -> Any:
    from notificator.config.checks import _redis_url

    return _redis_url(url)


class BrokerOrderingTests(SynchronousTestCase):
    """The broker's ordering, driven through a L{FakeLink}."""

    def test_unavailable_until_the_link_is(self) -> None:
        """
        Publishes and replays fail at once, with the link's reason and
        without a script, until the link is available; then they go through.
        """
        h = Harness()
        for subscription in (False, True):
            problem = h.link.health()
            self.assertIsNotNone(problem)
            failure = self.failureResultOf(
                h.broker.publish(Message("notify", "u1", "1")), Unavailable
            )
            self.assertEqual(str(failure.value), problem)
            failure = self.failureResultOf(h.broker.replay("u1", "5-0"), Unavailable)
            self.assertEqual(str(failure.value), problem)
            self.assertEqual(h.broker.health(), problem)
            self.assertEqual(h.link.calls, [])
            h.link.connect(subscription=subscription)
        h.link.settle()
        self.assertIsNone(h.broker.health())
        d = h.broker.publish(Message("notify", "u1", "1"))
        h.clock.advance(0)
        h.link.settle()
        self.successResultOf(d)

    def test_publish_answers_with_the_scripts_id_and_nodes(self) -> None:
        """
        The publish runs the script with the user's keys; its answer is the
        script's id, this node's streams of the user, and the nodes that
        received it.
        """
        h = Harness()
        h.node.up()
        other = Node(h.clock, h.redis, "n2")
        other.up()
        stream = h.node.stream()
        d = h.broker.publish(Message("notify", "u1", '{"n": 1}'))
        h.clock.advance(0)
        script, keys, args = h.link.calls[-1]
        self.assertIs(script, PUBLISH)
        self.assertEqual(
            keys,
            (b"notificator:last", b"notificator:since", b"notificator:h:u1", b"notificator:f:u1"),
        )
        self.assertEqual(args, (100, 60_000, b"notificator:events", body(1), b"u1"))
        self.assertEqual(h.stats.published, 0)
        h.link.settle()
        published = self.successResultOf(d)
        self.assertEqual(published, Published(published.event_id, 1, 2))
        self.assertEqual(stream.frames, [framed(published.event_id, 1)])
        self.assertEqual(h.stats.published, 1)

    def test_only_the_subscription_delivers(self) -> None:
        """
        Frames reach streams when the channel hands them over (the answer to
        the publish does not), with the id line first, to the user's streams only.
        """
        h = Harness()
        h.node.up()
        stream = h.node.stream()
        d = h.broker.publish(Message("notify", "u1", '{"n": 1}'))
        h.clock.advance(0)
        h.link.execute()
        h.link.reply()
        eid = self.successResultOf(d).event_id
        self.assertEqual(stream.frames, [])
        h.elsewhere(2, "someone else")
        h.link.deliver()
        self.assertEqual(stream.frames, [framed(eid, 1)])

    def test_the_publishes_of_one_pass_are_one_script_run(self) -> None:
        """
        The publishes of one reactor pass go to Redis at its end as one run
        of the script, in the order they came; each is answered with its
        own id, and every node's streams get them in that order.
        """
        h = Harness()
        h.node.up()
        other = Node(h.clock, h.redis, "n2")
        other.up()
        here, there = h.node.stream("u1"), other.stream("u1")
        there2 = other.stream("u2")
        calls = len(h.link.calls)
        users = ["u1", "u2", "u1", "u1"]
        ds = [h.broker.publish(Message("notify", u, f'{{"n": {n}}}')) for n, u in enumerate(users)]
        self.assertEqual(len(h.link.calls), calls)  # not before the pass ends
        h.clock.advance(0)
        [(script, keys, args)] = h.link.calls[calls:]
        self.assertIs(script, PUBLISH)
        self.assertEqual(
            keys[2:],
            tuple(b"notificator:%s:%s" % (k, u.encode()) for u in users for k in (b"h", b"f")),
        )
        self.assertEqual(
            args[3:], tuple(x for n, u in enumerate(users) for x in (body(n), u.encode()))
        )
        for d in ds:
            self.assertNoResult(d)
        h.link.settle()
        other.link.settle()
        published = [self.successResultOf(d) for d in ds]
        ids = [p.event_id for p in published]
        self.assertEqual(sorted(ids, key=event_key), ids)
        self.assertEqual(len(set(ids)), 4)
        self.assertEqual(
            [(p.delivered, p.nodes) for p in published], [(1, 2), (0, 2), (1, 2), (1, 2)]
        )
        u1 = [framed(ids[n], n) for n in (0, 2, 3)]
        self.assertEqual(here.frames, u1)
        self.assertEqual(there.frames, u1)
        self.assertEqual(there2.frames, [framed(ids[1], 1)])
        self.assertEqual(h.stats.published, 4)
        # The next pass is a run of its own.
        d = h.broker.publish(Message("notify", "u1", '{"n": 9}'))
        h.clock.advance(0)
        self.assertEqual(len(h.link.calls), calls + 2)
        h.link.settle()
        self.assertGreater(event_key(self.successResultOf(d).event_id), event_key(ids[-1]))

    def test_a_pass_of_many_publishes_runs_in_batches(self) -> None:
        """
        More than MAX_BATCH publishes in one pass go in runs of MAX_BATCH
        (the last one at the end of the pass), in order.
        """
        h = Harness()
        h.node.up()
        stream = h.node.stream("u1")
        calls = len(h.link.calls)
        count = MAX_BATCH * 2 + 3
        ds = [h.broker.publish(Message("notify", "u1", f'{{"n": {n}}}')) for n in range(count)]
        self.assertEqual(len(h.link.calls), calls + 2)  # two full runs at once
        h.clock.advance(0)
        runs = h.link.calls[calls:]
        self.assertEqual([len(keys) - 2 for _, keys, _ in runs], [2 * MAX_BATCH] * 2 + [6])
        h.link.settle()
        ids = [self.successResultOf(d).event_id for d in ds]
        self.assertEqual(sorted(ids, key=event_key), ids)
        self.assertEqual(stream.frames, [framed(ids[n], n) for n in range(count)])

    def test_a_failed_run_fails_exactly_its_publishes(self) -> None:
        """
        When a run of the script fails, each of its publishes is answered
        L{Unavailable}; those of the run before it are answered as usual,
        and the node publishes again once Redis is back.
        """
        h = Harness()
        h.node.up()
        first = [h.broker.publish(Message("notify", "u1", str(n))) for n in range(2)]
        h.clock.advance(0)
        second = [h.broker.publish(Message("notify", "u2", str(n))) for n in range(3)]
        h.clock.advance(0)
        h.link.execute(1)
        h.link.reply(1)
        h.link.lose_commands()
        for d in first:
            self.successResultOf(d)
        for d in second:
            failure = self.failureResultOf(d, Unavailable)
            self.assertIn("lost before it answered", str(failure.value))
        self.assertEqual(h.stats.published, 2)
        h.link.connect()
        h.link.settle()
        d = h.broker.publish(Message("notify", "u1", "3"))
        h.clock.advance(0)
        h.link.settle()
        self.successResultOf(d)

    def test_stopping_sends_the_publishes_of_the_pass(self) -> None:
        """
        A node that stops sends the publishes it accepted in this pass
        before its link closes: each is answered at once, none waits.
        """
        h = Harness()
        h.node.up()
        ds = [h.broker.publish(Message("notify", "u1", str(n))) for n in range(2)]
        stopped = h.broker.stopService()
        [(script, keys, _)] = [c for c in h.link.calls if c[0] is PUBLISH]
        self.assertEqual(len(keys), 6)
        for d in ds:
            self.failureResultOf(d, Unavailable)
        self.successResultOf(stopped)

    def test_a_message_that_is_not_ours_is_ignored(self) -> None:
        """Something else published on the channel is logged and skipped."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        h = Harness()
        h.node.up()
        stream = h.node.stream()
        h.redis.publish(b"notificator:events", b"no line breaks")
        eid = h.elsewhere(1)
        h.link.deliver()
        self.assertEqual(stream.frames, [framed(eid, 1)])
        [event] = [e for e in events if "not ours" in e["log_format"]]
        self.assertEqual(event["log_namespace"], "notificator.redisbroker.RedisBroker")

    def test_replay_merges_what_arrived_live_without_duplicates(self) -> None:
        """
        Live messages of the user that arrive while the replay is read are
        merged by id into its frames: those the history gave are not repeated.
        """
        h = Harness()
        h.node.up()
        other = h.node.stream()
        first = h.elsewhere(5)
        h.link.deliver()
        d = h.broker.replay("u1", first)
        self.assertEqual(since_calls(h.link)[-1][-1], first)
        six = h.elsewhere(6)  # before the script ran: in its answer too
        h.link.deliver()
        h.link.execute()
        h.link.reply()
        seven = h.elsewhere(7)  # after the answer, before the barrier
        h.link.deliver()
        self.assertNoResult(d)
        h.link.pong()
        replay = self.successResultOf(d)
        self.assertEqual(replay, Replay(True, (framed(six, 6), framed(seven, 7)), None, first))
        # The streams that were open got both live, once.
        self.assertEqual(other.frames, [framed(first, 5), framed(six, 6), framed(seven, 7)])

    def test_truncated_replay_gives_everything_kept(self) -> None:
        """A gap (expired) gives all kept frames and the reason, then newer live ones."""
        h = Harness(size=2)
        h.node.up()
        ids = [h.elsewhere(n) for n in range(1, 5)]
        h.link.deliver()
        d = h.broker.replay("u1", ids[0])
        h.link.execute()
        h.link.reply()
        five = h.elsewhere(5)
        h.link.deliver()
        h.link.pong()
        replay = self.successResultOf(d)
        self.assertEqual(
            (replay.complete, replay.reason, replay.oldest, replay.frames),
            (False, "expired", ids[2], (framed(ids[2], 3), framed(ids[3], 4), framed(five, 5))),
        )

    def test_replay_fails_when_the_subscription_is_lost(self) -> None:
        """Losing the subscription while a replay waits fails it (the web sends a reset)."""
        h = Harness()
        h.node.up()
        d = h.broker.replay("u1", "1-0")
        h.link.lose_subscription()
        failure = self.failureResultOf(d, Unavailable)
        self.assertEqual(str(failure.value), "the subscription to Redis was lost")

    def test_replay_times_out(self) -> None:
        """A replay Redis does not answer fails after three reply timeouts."""
        h = Harness()
        h.node.up()
        d = h.broker.replay("u1", "1-0")
        h.clock.advance(5.9)
        self.assertNoResult(d)
        h.clock.advance(0.2)
        failure = self.failureResultOf(d, Unavailable)
        self.assertEqual(str(failure.value), "no answer from Redis in time")

    def test_gap_is_filled_in_order_then_live(self) -> None:
        """
        After the subscription comes back, a stream that stayed open gets
        what was recorded after the last id this node received, then what
        arrived live meanwhile: once each, in order.
        """
        h = Harness()
        h.node.up()
        stream = h.node.stream()
        ten = h.elsewhere(10)
        h.link.deliver()
        h.link.lose_subscription()
        self.assertIsNotNone(h.broker.health())
        eleven = h.elsewhere(11)  # lost with the subscription
        h.link.connect(subscription=True)
        self.assertEqual(since_calls(h.link)[-1][-1], ten)  # after the last id received
        # Live messages while the history is read wait for the fill.
        twelve = h.elsewhere(12)
        h.link.deliver()
        h.link.execute()
        thirteen = h.elsewhere(13)
        h.link.deliver()
        self.assertEqual(stream.frames, [framed(ten, 10)])
        h.link.reply()
        fourteen = h.elsewhere(14)
        h.link.deliver()
        h.link.pong()
        self.assertEqual(
            stream.frames,
            [
                framed(ten, 10),
                framed(eleven, 11),
                framed(twelve, 12),
                framed(thirteen, 13),
                framed(fourteen, 14),
            ],
        )
        fifteen = h.elsewhere(15)
        h.link.deliver()
        self.assertEqual(stream.frames[-1], framed(fifteen, 15))
        self.assertEqual(h.broker.filled, 2)

    def test_what_is_held_back_before_the_history_is_read_is_bounded(self) -> None:
        """
        While the command connection is down, live messages for the users
        being caught up are held back, at most sse.history.size of them: the
        older ones are read from the history anyway (2 MB arrive; far less
        stays).
        """
        h = Harness(size=3)
        h.node.up()
        stream = h.node.stream()
        ten = h.elsewhere(10)
        h.link.deliver()
        h.link.lose_subscription()
        h.link.lose_commands()
        h.link.connect(commands=False)
        big = "x" * 20_000
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for n in range(100):
                h.elsewhere(n, data=f"{big}{n:02}")
                h.link.deliver()
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        self.assertEqual(stream.frames, [framed(ten, 10)])
        # The history's 3 and the 3 held back, not the 100.
        self.assertLess(held, 20 * 20_000)
        h.link.connect(subscription=False)
        h.link.settle()
        self.assertIn(b"event: reset", stream.frames[1])
        self.assertEqual(len(stream.frames), 5)
        self.assertEqual([f[-4:] for f in stream.frames[2:]], [b"97\n\n", b"98\n\n", b"99\n\n"])

    def test_no_history_no_fill(self) -> None:
        """
        With sse.history.size 0 there is nothing to read back after a gap:
        no SINCE, no reset (as on one node); live messages go out as they
        come, also while the other connection is still down.
        """
        h = Harness(size=0)
        h.node.up()
        self.assertEqual(since_calls(h.link), [])
        self.assertIsNone(h.broker.health())
        stream = h.node.stream()
        ten = h.elsewhere(10)
        h.link.deliver()
        h.link.lose_subscription()
        h.link.lose_commands()
        h.elsewhere(11)
        h.link.connect(commands=False)
        twelve, thirteen = h.elsewhere(12), h.elsewhere(13)
        h.link.deliver()
        self.assertEqual(stream.frames, [framed(ten, 10), framed(twelve, 12), framed(thirteen, 13)])
        h.link.connect()
        h.link.settle()
        self.assertEqual(since_calls(h.link), [])
        self.assertIsNone(h.broker.health())

    def test_gap_beyond_the_history_sends_a_reset_first(self) -> None:
        """
        When the history no longer holds all of the gap, the stream gets a
        reset, then what is kept.
        """
        h = Harness()
        h.node.up()
        stream = h.node.stream()
        ten = h.elsewhere(10)
        h.link.deliver()
        h.link.lose_subscription()
        h.redis.flushall()  # Redis restarted without its data
        h.clock.advance(1)
        twenty, thirty = h.elsewhere(20), h.elsewhere(30)
        h.link.connect()
        h.link.settle()
        self.assertEqual(stream.frames[:1], [framed(ten, 10)])
        reset = stream.frames[1].decode()
        self.assertIn("event: reset\n", reset)
        data = json.loads(reset.split("data: ", 1)[1])
        self.assertEqual(
            (data["reason"], data["lastEventId"], data["oldestEventId"]), ("lost", ten, twenty)
        )
        self.assertEqual(stream.frames[2:], [framed(twenty, 20), framed(thirty, 30)])

    def test_fill_interrupted_starts_again_from_the_same_point(self) -> None:
        """If the subscription drops again mid-fill, the next fill starts from the same id."""
        h = Harness()
        h.node.up()
        stream = h.node.stream()
        ten = h.elsewhere(10)
        h.link.deliver()
        h.link.lose_subscription()
        eleven = h.elsewhere(11)
        h.link.connect()
        twelve = h.elsewhere(12)
        h.link.deliver()
        h.link.execute()
        h.link.lose_subscription()
        h.link.reply()
        self.assertEqual(stream.frames, [framed(ten, 10)])
        h.link.connect()
        self.assertEqual([args[-1] for args in since_calls(h.link)[-2:]], [ten, ten])
        h.link.settle()
        self.assertEqual(stream.frames, [framed(ten, 10), framed(eleven, 11), framed(twelve, 12)])

    def test_replay_waits_for_the_fill(self) -> None:
        """A replay answered while a gap is being filled is handed over after the fill."""
        h = Harness()
        h.elsewhere(0, "someone else")  # the history began before the node
        h.clock.advance(1)
        node = Node(h.clock, h.redis, "n2")
        stream = node.stream()
        eleven, twelve = h.elsewhere(11), h.elsewhere(12)
        node.link.connect()
        # The fill asks Redis's clock first: the replay's read comes before its own.
        d = node.broker.replay("u1", eleven)
        node.link.execute(1)
        node.link.reply(1)
        self.assertEqual(len(since_calls(node.link)), 2)
        node.link.execute(1)
        node.link.reply(1)
        node.link.pong()
        self.assertNoResult(d)
        self.assertEqual(stream.frames, [])
        node.link.settle()
        self.assertEqual(self.successResultOf(d).frames, (framed(twelve, 12),))
        self.assertEqual(stream.frames, [framed(eleven, 11), framed(twelve, 12)])

    def test_first_start_with_streams_fills_from_the_nodes_start(self) -> None:
        """
        Streams opened before Redis was ever reached get what was recorded
        since the node started (on Redis's clock, which need not be the
        node's), not what was recorded before.
        """
        h = Harness()
        h.redis.offset = 5000.25 - 1040  # Redis's clock: 5000.25 s when the node's is 1040
        before = h.elsewhere(1)
        h.clock.advance(10)
        node = Node(h.clock, h.redis, "n2")  # starts at 1010
        stream = node.stream()
        h.clock.advance(10)
        after = h.elsewhere(2)
        h.clock.advance(20)
        node.link.connect()
        node.link.settle()
        start = event_key(since_calls(node.link)[-1][-1])
        assert start is not None
        self.assertEqual(start // SEQ_SPAN, 5_000_250 - 30_000 - 1)
        self.assertLess(event_key(before), start)  # type: ignore[operator]
        self.assertEqual(stream.frames, [framed(after, 2)])

    def test_position_is_the_last_id_received(self) -> None:
        """
        L{RedisBroker.position} (the id a C{connect} event carries): None
        before the node has heard from Redis; after its catch-up, the last
        id given (made by MARK in a Redis where none was, once); then the
        last id received on the channel, not one published but not yet
        received.
        """
        h = Harness()
        self.assertIsNone(h.broker.position)
        h.node.up()
        mark = h.broker.position
        assert mark is not None
        self.assertEqual([s for s, _, _ in h.link.calls], [SINCE, MARK])
        keys = [b"notificator:last", b"notificator:since"]
        self.assertEqual(h.redis.run(SINCE, keys, [1])[1], mark.encode())
        one = h.elsewhere(1)
        self.assertEqual(h.broker.position, mark)
        h.link.deliver()
        self.assertEqual(h.broker.position, one)
        # A node that starts later reads it, and makes nothing.
        late = Node(h.clock, h.redis, "n2")
        late.up()
        self.assertEqual(late.broker.position, one)
        self.assertEqual([s for s, _, _ in late.link.calls], [SINCE])
        # No history kept: no position (nothing a reconnect could be given).
        self.assertIsNone(Node(h.clock, h.redis, "n3", size=0).broker.position)

    def test_a_stream_that_got_nothing_reconnects_from_its_position(self) -> None:
        """
        A stream opened at the position: a notification published before it
        opened but received after it attached reaches it live and is not
        replayed again (the browser's last id moved with its frame); one
        published while it was away is replayed, once.  And from the
        position alone, only what was published after it.
        """
        h = Harness()
        h.node.up()
        before = h.elsewhere(1)
        h.link.deliver()
        raced = h.elsewhere(2)  # recorded in Redis, not yet received
        stream = h.node.stream()
        position = h.broker.position
        self.assertEqual(position, before)
        h.link.deliver()
        self.assertEqual(stream.frames, [framed(raced, 2)])
        last_seen = parse_frames(b"".join(stream.frames))[-1]["id"]  # as EventSource keeps it
        h.hub.detach(stream)
        away = h.elsewhere(3)
        h.link.deliver()
        for last, expected in [
            (last_seen, [framed(away, 3)]),
            (position, [framed(raced, 2), framed(away, 3)]),
        ]:
            d = h.broker.replay("u1", last)
            h.link.settle()
            replay = self.successResultOf(d)
            self.assertEqual((replay.complete, list(replay.frames)), (True, expected), last)

    def test_stop_fails_waiting_replays(self) -> None:
        """Stopping fails what waits, says so, and stops the link."""
        h = Harness()
        h.node.up()
        d = h.broker.replay("u1", "1-0")
        self.successResultOf(h.broker.stopService())
        failure = self.failureResultOf(d, Unavailable)
        self.assertEqual(str(failure.value), "the node is stopping")
        self.assertEqual(h.broker.health(), "the node is stopping")
        self.assertFalse(h.link.commands or h.link.subscription)


def result(d: Deferred[Any]) -> Any:
    """What C{d} has fired with (it must have)."""
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "no result"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


class BrokerImplementation:
    """
    The broker's publish and replay over a L{FakeLink} to a L{MemoryRedis}
    (ttl: 60 s, on a L{Clock}), for the table of replay cases.
    """

    def __init__(self, case: Case) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.redis = MemoryRedis(self.clock)
        self.node = Node(self.clock, self.redis, size=case.size)
        self.node.up()

    def publish(self, name: str, user: str) -> str:
        d = self.node.broker.publish(Message("notify", user, json.dumps({"name": name})))
        self.clock.advance(0)
        self.node.link.settle()
        return str(result(d).event_id)

    def wait(self, ttls: float) -> None:
        self.clock.advance(ttls * 60)

    def restart(self) -> None:
        self.redis.flushall()
        self.clock.advance(0.002)

    def position(self) -> str:
        position = self.node.broker.position
        assert position is not None
        return position

    def since(self, user: str, last: str) -> tuple[str | None, tuple[bytes, ...], str | None]:
        d = self.node.broker.replay(user, last)
        self.node.link.settle()
        replay = result(d)
        return replay.reason, replay.frames, replay.oldest


@replay_cases(SCRIPTS, lambda testcase, case: BrokerImplementation(case))
class ReplayCaseTests(SynchronousTestCase):
    """
    The table of replay and gap cases (tests/replay_cases.py), which the
    scripts and the history are tested with too, on the broker's replay.
    """


class WiringTests(SynchronousTestCase):
    """C{makeService} picks the broker from C{cluster.redis}."""

    def options(self, doc: dict[str, Any]) -> tap.Options:
        conf = write_config(os.path.join(self.mktemp(), "conf"), {"default": doc, "x": {}})
        opts = tap.Options()
        opts.parseOptions(["--config", conf, "--env", "x", "--listen", "tcp:4100"])
        return opts

    def test_cluster_mode_builds_the_redis_broker(self) -> None:
        """With cluster.redis, the RedisBroker, named, its metrics registered; no history file."""
        from twisted.internet.testing import MemoryReactorClock

        from notificator.broker.local import LocalBroker

        opts = self.options(
            {
                "server": {"log": {"dir": self.mktemp()}},
                "cluster": {"redis": "redis://127.0.0.1:1/0", "node": "sse-9"},
            }
        )
        svc = tap.makeService(opts, reactor=MemoryReactorClock())
        broker = tap.find(svc, RedisBroker)
        self.assertIsNotNone(broker)
        self.assertIsNone(tap.find(svc, LocalBroker))
        self.assertIsNone(tap.find(svc, services.ThreadPoolService))
        self.assertEqual(broker.node, "sse-9")

    def test_one_node_is_as_before(self) -> None:
        """Without cluster.redis: the LocalBroker, named after host and port, and no txredisapi."""
        import subprocess
        import sys

        conf = write_config(os.path.join(self.mktemp(), "conf"), {"default": {}, "x": {}})
        code = (
            "import sys, socket\n"
            "from twisted.internet.testing import MemoryReactorClock\n"
            "from notificator import tap\n"
            "from notificator.broker.local import LocalBroker\n"
            "o = tap.Options()\n"
            f"o.parseOptions(['--config', {conf!r}, '--env', 'x', '--listen', 'tcp:4100'])\n"
            "svc = tap.makeService(o, reactor=MemoryReactorClock())\n"
            "b = tap.find(svc, LocalBroker)\n"
            "assert b is not None and b.node == socket.gethostname() + ':4100', b.node\n"
            "assert 'txredisapi' not in sys.modules\n"
            "assert 'notificator.broker.redis' not in sys.modules\n"
            "print('ok')\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
        self.assertEqual((out.returncode, out.stdout.strip()), (0, "ok"), out.stderr)
