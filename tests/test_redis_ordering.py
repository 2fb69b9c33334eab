"""
Tests for L{notificator.broker.redis.ordering}, cluster mode's broker: its
pure helpers; its logic with fake connections and a L{Clock} (the merge
of a replay with what arrived live meanwhile, the fill after an outage,
the outage itself: health, fast failures; timeouts); and how
C{makeService} picks it.
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from notificator import services, tap
from notificator.broker import Published, Unavailable
from notificator.broker.redis import RedisBroker
from notificator.broker.redis.ordering import (
    Missed,
    frame_of,
    id_key,
    merge,
    parse_message,
    parse_since,
)
from notificator.broker.redis.scripts import PUBLISH, SINCE
from notificator.config import defaults
from notificator.events import SEQ_SPAN, Message, encode_frame, event_key
from notificator.history import Replay
from notificator.hub import Hub
from notificator.stats import Stats
from tests.support import FakeStream, evolved, write_config


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


# -- the broker with fake connections -------------------------------------------


class FakeConnection:
    """Records commands; the test fires their answers."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[Any, ...], Deferred[Any]]] = []
        self.transport = self
        self.connected = 1

    def execute_command(self, *args: Any, **kwargs: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.calls.append((args, d))
        return d

    def subscribe(self, channels: list[bytes]) -> Deferred[Any]:
        return self.execute_command(b"SUBSCRIBE", *channels)

    def loseConnection(self) -> None:
        pass

    def take(self, name: bytes) -> tuple[tuple[Any, ...], Deferred[Any]]:
        """The first pending call of command C{name}."""
        for i, (args, d) in enumerate(self.calls):
            if args[0] == name and not d.called:
                del self.calls[i]
                return args, d
        raise AssertionError(f"no pending {name!r} in {[a[0] for a, _ in self.calls]}")

    def answer_all(self, name: bytes, value: Any) -> int:
        n = 0
        for args, d in list(self.calls):
            if args[0] == name and not d.called:
                self.calls.remove((args, d))
                d.callback(value)
                n += 1
        return n


def message(eid: str, user_id: str = "u1", body: bytes = BODY) -> bytes:
    return eid.encode() + b"\n" + user_id.encode() + b"\n" + body


class Harness:
    """A RedisBroker whose two connections are fakes, on a Clock."""

    def __init__(self, testcase: SynchronousTestCase, size: int = 100) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.stats = Stats(started_at=1000)
        self.hub = Hub(clock=self.clock, stats=self.stats)
        cluster = cluster_config(
            redis=load_address("redis://127.0.0.1:1/0"), node="n1", timeout=2.0
        )
        self.broker = RedisBroker(
            self.hub, self.stats, self.clock, cluster, history(size=size, ttl=60), "n1"
        )
        self.broker._started = self.broker._down_since = self.clock.seconds()
        self.cmd = FakeConnection()
        self.sub = FakeConnection()
        self.factories = {"commands": object(), "subscription": object()}
        self.broker._factories = self.factories  # type: ignore[assignment]

    def connect(self, commands: bool = True, subscription: bool = True) -> None:
        b = self.broker
        if commands:
            b._connection_made("commands", self.factories["commands"], self.cmd)  # type: ignore[arg-type]
            self.cmd.answer_all(b"CLIENT", b"OK")
            self.cmd.answer_all(b"PING", b"PONG")
        if subscription:
            b._connection_made("subscription", self.factories["subscription"], self.sub)  # type: ignore[arg-type]
            self.sub.answer_all(b"CLIENT", b"OK")
            self.sub.take(b"SUBSCRIBE")[1].callback([b"subscribe", b.channel, 1])

    def lose_subscription(self) -> None:
        old = self.sub
        self.broker._connection_lost("subscription", self.factories["subscription"], old)  # type: ignore[arg-type]
        for _, d in old.calls:
            if not d.called:
                d.errback(ConnectionError("Lost connection"))
        self.sub = FakeConnection()

    def since_reply(self, last: str, *users: tuple[str, str, list[str]]) -> list[Any]:
        """A SINCE answer: per user (reason, oldest, ids of entries)."""
        reply: list[Any] = [1_000_000, last.encode()]
        for reason, oldest, ids in users:
            reply += [reason.encode(), oldest.encode(), len(ids)]
            for eid in ids:
                reply += [eid.encode(), BODY]
        return reply

    def answer_sync(self, last: str, *users: tuple[str, str, list[str]]) -> None:
        """Answer the pending fill read, then its barrier."""
        self.cmd.take(b"EVALSHA")[1].callback(self.since_reply(last, *users))
        for _ in range(3):  # the barrier may queue behind a keepalive PING
            if not self.sub.answer_all(b"PING", [b"pong", b""]):
                break

    def up(self) -> None:
        """Both connections, and the first (empty) catch-up done."""
        self.connect()
        self.answer_sync("")
        assert self.broker.health() is None


def load_address(url: str) -> Any:
    from notificator.config.checks import _redis_url

    return _redis_url(url)


class BrokerLogicTests(SynchronousTestCase):
    def test_unavailable_until_connected_and_subscribed(self) -> None:
        """Publishes and replays fail at once, and health says why, until both connections are up."""
        h = Harness(self)
        self.assertIn("unreachable", h.broker.health() or "")
        self.failureResultOf(h.broker.publish(Message("notify", "u1", "1")), Unavailable)
        self.failureResultOf(h.broker.replay("u1", "5-0"), Unavailable)
        h.connect(subscription=False)
        self.assertIn("subscription", h.broker.health() or "")
        h.connect(commands=False)
        self.assertIsNone(h.broker.health())
        self.assertEqual(h.broker.outages, 0)

    def test_publish_answers_with_the_scripts_id_and_nodes(self) -> None:
        """The publish runs the script; delivered counts this node's streams of the user."""
        h = Harness(self)
        h.up()
        h.hub.attach(FakeStream("u1"))
        d = h.broker.publish(Message("notify", "u1", '{"n": 1}'))
        args, answer = h.cmd.take(b"EVALSHA")
        self.assertEqual(args[1], PUBLISH.sha)
        self.assertEqual(args[2], 4)
        self.assertEqual(args[3:5], (b"notificator:h:u1", b"notificator:f:u1"))
        self.assertIn(BODY, args)
        answer.callback([b"7-0", 3])
        self.assertEqual(self.successResultOf(d), Published("7-0", 1, 3))
        self.assertEqual(h.stats.published, 1)

    def test_noscript_falls_back_to_eval(self) -> None:
        """A Redis without the script (restarted) gets it with EVAL."""
        import txredisapi

        h = Harness(self)
        h.up()
        d = h.broker.publish(Message("notify", "u1", "1"))
        h.cmd.take(b"EVALSHA")[1].errback(txredisapi.ResponseError("NOSCRIPT No matching script"))
        args, answer = h.cmd.take(b"EVAL")
        self.assertEqual(args[1], PUBLISH.source)
        answer.callback([b"8-0", 1])
        self.assertEqual(self.successResultOf(d).event_id, "8-0")

    def test_publish_timeout_is_unavailable(self) -> None:
        """No answer in time (txredisapi's replyTimeout) is a 503 that says it may be recorded."""
        import txredisapi

        h = Harness(self)
        h.up()
        d = h.broker.publish(Message("notify", "u1", "1"))
        h.cmd.take(b"EVALSHA")[1].errback(txredisapi.TimeoutError("late"))
        failure = self.failureResultOf(d, Unavailable)
        self.assertIn("may have been recorded", str(failure.value))
        # Lost while Redis may have run it: the same doubt.
        d = h.broker.publish(Message("notify", "u1", "1"))
        h.cmd.take(b"EVALSHA")[1].errback(txredisapi.ConnectionError("Lost connection"))
        self.assertIn("may have been recorded", str(self.failureResultOf(d, Unavailable).value))
        # A script error: not recorded, and said so.
        d = h.broker.publish(Message("notify", "u1", "1"))
        h.cmd.take(b"EVALSHA")[1].errback(txredisapi.ResponseError("OOM command not allowed"))
        self.assertEqual(
            str(self.failureResultOf(d, Unavailable).value), "Redis: OOM command not allowed"
        )

    def test_only_the_subscription_delivers(self) -> None:
        """Frames reach streams when the channel hands them over, with the id line first."""
        h = Harness(self)
        h.up()
        stream = FakeStream("u1")
        h.hub.attach(stream)
        h.broker._received(message("9-0"))
        h.broker._received(message("9-1", "someone else"))
        self.assertEqual(stream.frames, [frame("9-0")])

    def test_replay_merges_what_arrived_live_without_duplicates(self) -> None:
        """
        Live messages of the user that arrive while the replay is read are
        merged by id into its frames: those the history gave are not repeated.
        """
        h = Harness(self)
        h.up()
        other = FakeStream("u1")
        h.hub.attach(other)
        d = h.broker.replay("u1", "5-0")
        args, answer = h.cmd.take(b"EVALSHA")
        self.assertEqual(args[1], SINCE.sha)
        self.assertEqual(args[-1], "5-0")
        h.broker._received(message("6-0"))  # before the script ran: in its answer too
        answer.callback(h.since_reply("6-0", ("", "1-0", ["6-0"])))
        h.broker._received(message("7-0"))  # after the answer, before the barrier
        self.assertNoResult(d)
        h.sub.take(b"PING")[1].callback([b"pong", b""])
        replay = self.successResultOf(d)
        self.assertEqual(replay, Replay(True, (frame("6-0"), frame("7-0")), None, "1-0"))
        # The streams that were open got both live, once.
        self.assertEqual(other.frames, [frame("6-0"), frame("7-0")])
        self.assertEqual(h.broker._waiting, {})

    def test_truncated_replay_gives_everything_kept(self) -> None:
        """A gap (expired) gives all kept frames and the reason, then newer live ones."""
        h = Harness(self)
        h.up()
        d = h.broker.replay("u1", "1-0")
        h.cmd.take(b"EVALSHA")[1].callback(h.since_reply("4-0", ("expired", "3-0", ["3-0", "4-0"])))
        h.broker._received(message("5-0"))
        h.sub.take(b"PING")[1].callback([b"pong", b""])
        replay = self.successResultOf(d)
        self.assertEqual(
            (replay.complete, replay.reason, replay.frames),
            (False, "expired", (frame("3-0"), frame("4-0"), frame("5-0"))),
        )

    def test_replay_fails_when_the_subscription_is_lost(self) -> None:
        """Losing the subscription while a replay waits fails it (the web sends a reset)."""
        h = Harness(self)
        h.up()
        d = h.broker.replay("u1", "1-0")
        h.lose_subscription()
        self.failureResultOf(d, Unavailable)
        self.assertEqual(h.broker.outages, 1)

    def test_replay_times_out(self) -> None:
        """A replay Redis does not answer fails after three reply timeouts."""
        h = Harness(self)
        h.up()
        d = h.broker.replay("u1", "1-0")
        h.clock.advance(5.9)
        self.assertNoResult(d)
        h.clock.advance(0.2)
        self.failureResultOf(d, Unavailable)

    def test_gap_is_filled_in_order_then_live(self) -> None:
        """
        After the subscription comes back, a stream that stayed open gets
        what was recorded after the last id this node received, then what
        arrived live meanwhile: once each, in order.
        """
        h = Harness(self)
        h.up()
        stream = FakeStream("u1")
        h.hub.attach(stream)
        h.broker._received(message("10-0"))
        h.lose_subscription()
        self.assertIsNotNone(h.broker.health())
        h.connect(commands=False)
        # Live messages while the history is read wait for the fill.
        h.broker._received(message("12-0"))
        h.broker._received(message("13-0"))
        self.assertEqual(stream.frames, [frame("10-0")])
        args, answer = h.cmd.take(b"EVALSHA")
        self.assertEqual(args[1], SINCE.sha)
        self.assertEqual(args[-1], "10-0")  # after the last id received before the gap
        answer.callback(h.since_reply("12-0", ("", "1-0", ["11-0", "12-0"])))
        h.broker._received(message("14-0"))
        h.sub.take(b"PING")[1].callback([b"pong", b""])
        self.assertEqual(
            stream.frames, [frame(e) for e in ("10-0", "11-0", "12-0", "13-0", "14-0")]
        )
        h.broker._received(message("15-0"))
        self.assertEqual(stream.frames[-1], frame("15-0"))
        self.assertEqual(h.broker.filled, 2)

    def test_what_is_held_back_before_the_history_is_read_is_bounded(self) -> None:
        """
        While the command connection is down, live messages for the users
        being caught up are held back, at most sse.history.size of them: the
        older ones are read from the history anyway.
        """
        h = Harness(self, size=3)
        h.up()
        stream = FakeStream("u1")
        h.hub.attach(stream)
        h.broker._received(message("10-0"))
        h.lose_subscription()
        h.broker._connection_lost("commands", h.factories["commands"], h.cmd)  # type: ignore[arg-type]
        h.connect(commands=False)
        for n in range(11, 21):
            h.broker._received(message(f"{n}-0"))
        self.assertEqual(stream.frames, [frame("10-0")])
        self.assertEqual(
            [k for k, _ in h.broker._fill["u1"]], [id_key(b"%d-0" % n) for n in (18, 19, 20)]
        )  # type: ignore[index]
        h.cmd = FakeConnection()
        h.connect(subscription=False)
        h.answer_sync("20-0", ("expired", "18-0", ["18-0", "19-0", "20-0"]))
        self.assertIn(b"event: reset", stream.frames[1])
        self.assertEqual(stream.frames[2:], [frame(f"{n}-0") for n in (18, 19, 20)])

    def test_no_history_no_fill(self) -> None:
        """
        With sse.history.size 0 there is nothing to read back after a gap:
        no SINCE, no reset (as on one node); live messages go out as they
        come, also while the other connection is still down.
        """
        h = Harness(self, size=0)
        h.connect()
        self.assertEqual([a[0] for a, _ in h.cmd.calls if a[0] == b"EVALSHA"], [])
        self.assertIsNone(h.broker.health())
        stream = FakeStream("u1")
        h.hub.attach(stream)
        h.broker._received(message("10-0"))
        h.lose_subscription()
        h.cmd = FakeConnection()
        h.connect(commands=False)
        h.broker._received(message("12-0"))
        h.broker._received(message("13-0"))
        self.assertEqual([a[0] for a, _ in h.cmd.calls if a[0] == b"EVALSHA"], [])
        self.assertEqual(stream.frames, [frame(f"{n}-0") for n in (10, 12, 13)])
        self.assertIsNone(h.broker.health())

    def test_gap_beyond_the_history_sends_a_reset_first(self) -> None:
        """When the history no longer holds all of the gap, the stream gets a reset, then what is kept."""
        h = Harness(self)
        h.up()
        stream = FakeStream("u1")
        h.hub.attach(stream)
        h.broker._received(message("10-0"))
        h.lose_subscription()
        h.connect(commands=False)
        h.answer_sync("30-0", ("lost", "20-0", ["20-0", "30-0"]))
        self.assertEqual(stream.frames[:1], [frame("10-0")])
        reset = stream.frames[1].decode()
        self.assertIn("event: reset\n", reset)
        data = json.loads(reset.split("data: ", 1)[1])
        self.assertEqual(
            (data["reason"], data["lastEventId"], data["oldestEventId"]), ("lost", "10-0", "20-0")
        )
        self.assertEqual(stream.frames[2:], [frame("20-0"), frame("30-0")])

    def test_fill_interrupted_starts_again_from_the_same_point(self) -> None:
        """If the subscription drops again mid-fill, the next fill starts from the same id."""
        h = Harness(self)
        h.up()
        stream = FakeStream("u1")
        h.hub.attach(stream)
        h.broker._received(message("10-0"))
        h.lose_subscription()
        h.connect(commands=False)
        h.broker._received(message("12-0"))
        reply = h.cmd.take(b"EVALSHA")[1]
        h.lose_subscription()
        reply.callback(h.since_reply("12-0", ("", "1-0", ["11-0", "12-0"])))
        self.assertEqual(stream.frames, [frame("10-0")])
        h.connect(commands=False)
        args, answer = h.cmd.take(b"EVALSHA")
        self.assertEqual(args[-1], "10-0")
        answer.callback(h.since_reply("12-0", ("", "1-0", ["11-0", "12-0"])))
        h.sub.take(b"PING")[1].callback([b"pong", b""])
        self.assertEqual(stream.frames, [frame(e) for e in ("10-0", "11-0", "12-0")])

    def test_replay_waits_for_the_fill(self) -> None:
        """A replay answered while a gap is being filled is handed over after the fill."""
        h = Harness(self)
        h.up()
        h.hub.attach(FakeStream("u1"))
        h.broker._received(message("10-0"))
        h.lose_subscription()
        h.connect(commands=False)
        fill_args, fill = h.cmd.take(b"EVALSHA")
        d = h.broker.replay("u1", "11-0")
        h.cmd.take(b"EVALSHA")[1].callback(h.since_reply("12-0", ("", "1-0", ["12-0"])))
        h.sub.take(b"PING")[1].callback([b"pong", b""])
        self.assertNoResult(d)
        fill.callback(h.since_reply("12-0", ("", "1-0", ["11-0", "12-0"])))
        h.sub.take(b"PING")[1].callback([b"pong", b""])
        self.assertEqual(self.successResultOf(d).frames, (frame("12-0"),))

    def test_first_start_with_streams_fills_from_the_nodes_start(self) -> None:
        """Streams opened before Redis was ever reached get what was recorded since the node started."""
        h = Harness(self)
        stream = FakeStream("u1")
        h.hub.attach(stream)
        h.clock.advance(30)
        h.connect()
        _, time_reply = h.cmd.take(b"TIME")
        time_reply.callback([b"5000", b"250000"])  # Redis's clock: 5000.25 s
        args, answer = h.cmd.take(b"EVALSHA")
        start = event_key(args[-1])
        assert start is not None
        self.assertEqual(start // SEQ_SPAN, 5_000_250 - 30_000 - 1)
        answer.callback(h.since_reply("4999999-0", ("", "", ["4999999-0"])))
        h.sub.take(b"PING")[1].callback([b"pong", b""])
        self.assertEqual(stream.frames, [frame("4999999-0")])

    def test_stop_fails_waiting_replays(self) -> None:
        """Stopping fails what waits and says so in health."""
        h = Harness(self)
        h.up()
        d = h.broker.replay("u1", "1-0")
        h.broker.running = True
        h.broker._factories = {}
        self.successResultOf(h.broker.stopService())
        self.failureResultOf(d, Unavailable)
        self.assertEqual(h.broker.health(), "the node is stopping")


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
