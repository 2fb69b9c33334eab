"""
Tests for L{notificator.broker.redis.link}, the link to Redis over
txredisapi: over connections in memory, with txredisapi's real protocol
and factory classes answered byte for byte as Redis answers (what the
link makes txredisapi do is checked against those classes); and the
broker over real connections to a real C{redis-server} of the test's own
(skipped loudly outside CI when it is not installed, failed in CI).
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

import attrs
import txredisapi
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import EventLoggingObserver, StringTransportWithDisconnection
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from notificator.broker import Unavailable
from notificator.broker.redis import RedisBroker, TxRedisLink, build_broker
from notificator.broker.redis.scripts import PUBLISH
from notificator.broker.testing import RecordingReceiver
from notificator.events import Message, encode_frame
from notificator.hub import Hub
from notificator.stats import Stats
from tests.support import FakeStream, RedisServer, _RESPReader, not_here
from tests.test_redis_ordering import cluster_config, frame, history, load_address

# -- Redis's side of a connection in memory -----------------------------------------


def bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


def array(*items: bytes) -> bytes:
    return b"*%d\r\n" % len(items) + b"".join(items)


OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
CHANNEL = b"notificator:events"
SUBSCRIBED = array(bulk(b"subscribe"), bulk(CHANNEL), b":1\r\n")
#: A PING's reply on a subscribed connection.
SUBSCRIBED_PONG = array(bulk(b"pong"), bulk(b""))
SETNAME = [b"CLIENT", b"SETNAME", b"notificator-n1"]


def message(payload: bytes) -> bytes:
    """A message on the channel, as Redis pushes it to a subscriber."""
    return array(bulk(b"message"), bulk(CHANNEL), bulk(payload))


class Wire:
    """
    One connection in memory: what the client sent, and Redis's answers
    (txredisapi reads what follows a bulk string a C{callLater(0)} later:
    on the link's clock).
    """

    def __init__(self, protocol: Any, clock: Clock) -> None:
        self.protocol = protocol
        self.clock = clock
        self.transport = StringTransportWithDisconnection()
        self.transport.protocol = protocol
        self._read = 0

    @property
    def subscriber(self) -> bool:
        # The protocol comes wrapped (ClientService's proxy), which forwards.
        return hasattr(self.protocol, "subscribe")

    def sent(self) -> list[Any]:
        """The commands sent since the last call."""
        data = self.transport.value()[self._read :]
        self._read += len(data)
        f = io.BytesIO(data)
        reader = _RESPReader(f)
        commands = []
        while f.tell() < len(data):
            commands.append(reader.read())
        return commands

    def answer(self, *replies: bytes) -> None:
        self.protocol.dataReceived(b"".join(replies))
        self.clock.advance(0)

    def drop(self) -> None:
        """The connection is lost."""
        self.transport.loseConnection()


@implementer(IStreamClientEndpoint)
class MemoryEndpoint:
    """Connects each factory to a L{Wire} at once."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.wires: list[Wire] = []

    def connect(self, factory: Any) -> Deferred[Any]:
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 6379))
        wire = Wire(protocol, self.clock)
        self.wires.append(wire)
        protocol.makeConnection(wire.transport)
        return succeed(protocol)


def require_hiredis() -> None:
    """hiredis is a dependency (pyproject.toml): fail in CI without it, skip loudly elsewhere."""
    if txredisapi.hiredis is None:
        not_here("Redis replies read by hiredis untested: hiredis is missing (pip install hiredis)")


class LinkHarness:
    """
    A started L{TxRedisLink} over a L{MemoryEndpoint}, its timers on a
    L{Clock}, reading Redis's replies with C{parser}.
    """

    def __init__(
        self,
        testcase: TestCase,
        url: str = "redis://127.0.0.1:6379/0",
        parser: str | None = "python",
    ) -> None:
        self.clock = Clock()
        self.endpoint = MemoryEndpoint(self.clock)
        self.receiver = RecordingReceiver()
        cluster = cluster_config(
            redis=load_address(url), node="n1", timeout=2.0, reconnect_max_delay=0.05
        )
        times = iter(range(1000))
        self.link = TxRedisLink(
            self.clock,
            cluster,
            "n1",
            timer=lambda: next(times) / 1000,
            endpoint=self.endpoint,
            parser=parser,
        )
        self.link.start(CHANNEL, self.receiver)
        testcase.addCleanup(self.link.stop)

    def wires(self, subscriber: bool) -> list[Wire]:
        return [w for w in self.endpoint.wires if w.subscriber == subscriber]

    @property
    def commands(self) -> Wire:
        """The latest command connection."""
        return self.wires(False)[-1]

    @property
    def subscription(self) -> Wire:
        """The latest subscription's connection."""
        return self.wires(True)[-1]

    @inlineCallbacks
    def handed_over(self) -> Any:
        """txredisapi hands a ready connection to its pool a reactor turn later."""
        yield deferLater(reactor, 0, lambda: None)

    @inlineCallbacks
    def up(self) -> Any:
        """Both connections ready and subscribed."""
        yield self.handed_over()
        self.commands.answer(OK, PONG)
        self.subscription.answer(OK, SUBSCRIBED)
        self.commands.sent()
        self.subscription.sent()
        assert self.link.health() is None


@inlineCallbacks
def until(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Wait (bounded) for C{condition}, a reactor turn at a time."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        yield deferLater(reactor, 0.01, lambda: None)


class LinkTests(TestCase):
    """
    The link over txredisapi's real classes, connected in memory, reading
    Redis's replies with txredisapi's pure-Python parser (as where hiredis
    is not installed).
    """

    timeout = 30
    parser = "python"

    def harness(self, url: str = "redis://127.0.0.1:6379/0") -> LinkHarness:
        return LinkHarness(self, url, self.parser)

    @inlineCallbacks
    def test_available_once_both_connections_are_up(self) -> Any:
        """
        Each connection names itself; the subscription subscribes; the
        link is available, and tells so, once both are up; health says
        what is missing until then, and a first PING measures the round trip.
        """
        h = self.harness()
        where = "Redis at redis://127.0.0.1:6379/0"
        self.assertTrue((h.link.health() or "").startswith(f"{where} is unreachable"))
        self.failureResultOf(h.link.eval(PUBLISH, [], []), Unavailable)
        yield h.handed_over()
        self.assertEqual(h.commands.sent(), [SETNAME])
        self.assertEqual(h.subscription.sent(), [SETNAME, [b"SUBSCRIBE", CHANNEL]])
        self.assertIn(f"the command connection to {where} is lost", h.link.health() or "")
        h.commands.answer(OK)
        self.assertEqual(h.commands.sent(), [[b"PING"]])
        h.commands.answer(PONG)
        self.assertEqual((h.link.rtt_count, h.link.rtt_last), (1, 0.001))
        h.subscription.answer(OK)
        self.assertIn(f"subscribing to {where}", h.link.health() or "")
        self.assertEqual(h.receiver.events, [])
        h.subscription.answer(SUBSCRIBED)
        self.assertIsNone(h.link.health())
        self.assertEqual(h.receiver.events, ["subscribed", "available"])
        self.assertEqual((h.link.outages, h.link.outage_seconds()), (0, 0.0))

    @inlineCallbacks
    def test_a_lost_subscription_is_made_again(self) -> Any:
        """
        A lost subscription is an outage, said in health and told to the
        receiver; the link connects and subscribes again by itself.
        """
        h = self.harness()
        yield h.up()
        h.subscription.answer(message(b"1-0\nu1\nbody"))
        h.subscription.drop()
        self.assertIn("the subscription to Redis at", h.link.health() or "")
        self.assertEqual(h.link.outages, 1)
        self.assertEqual(h.receiver.events, ["subscribed", "available", b"1-0\nu1\nbody", "lost"])
        h.clock.advance(3)
        self.assertEqual(h.link.outage_seconds(), 3)
        yield until(lambda: len(h.wires(True)) == 2)
        yield h.handed_over()
        self.assertEqual(h.subscription.sent(), [SETNAME, [b"SUBSCRIBE", CHANNEL]])
        h.subscription.answer(OK, SUBSCRIBED)
        self.assertIsNone(h.link.health())
        self.assertEqual(h.receiver.events[-2:], ["subscribed", "available"])
        h.commands.drop()
        self.assertIn("the command connection to Redis at", h.link.health() or "")
        self.assertEqual(h.link.outages, 2)

    @inlineCallbacks
    def test_scripts_run_by_sha_then_by_source(self) -> Any:
        """A script runs with EVALSHA; a Redis without it (restarted) gets it with EVAL."""
        h = self.harness()
        yield h.up()
        d = h.link.eval(PUBLISH, [b"k1", b"k2"], [b"body", 3])
        self.assertEqual(
            h.commands.sent(), [[b"EVALSHA", PUBLISH.sha, b"2", b"k1", b"k2", b"body", b"3"]]
        )
        h.commands.answer(b"-NOSCRIPT No matching script. Please use EVAL.\r\n")
        self.assertEqual(
            h.commands.sent(), [[b"EVAL", PUBLISH.source, b"2", b"k1", b"k2", b"body", b"3"]]
        )
        h.commands.answer(array(bulk(b"8-0"), b":1\r\n"))
        self.assertEqual(self.successResultOf(d), [b"8-0", 1])

    @inlineCallbacks
    def test_no_answer_in_time_is_unavailable(self) -> Any:
        """
        No answer within cluster.timeout (on the link's clock) is a 503 that
        says it may be recorded; txredisapi drops the connection.
        """
        h = self.harness()
        yield h.up()
        d = h.link.eval(PUBLISH, [], [])
        h.clock.advance(1.9)
        self.assertNoResult(d)
        h.clock.advance(0.1)
        self.assertEqual(
            str(self.failureResultOf(d, Unavailable).value),
            "no answer from Redis within 2 s (it may have been recorded)",
        )
        self.assertIn("the command connection to Redis at", h.link.health() or "")

    @inlineCallbacks
    def test_lost_before_the_answer_is_unavailable(self) -> Any:
        """Lost while Redis may have run it: a 503 that says so."""
        h = self.harness()
        yield h.up()
        d = h.link.eval(PUBLISH, [], [])
        h.commands.drop()
        self.assertEqual(
            str(self.failureResultOf(d, Unavailable).value),
            "the connection to Redis was lost before it answered (it may have been recorded)",
        )

    @inlineCallbacks
    def test_an_error_reply_is_unavailable(self) -> Any:
        """A script error: not recorded, and said so."""
        h = self.harness()
        yield h.up()
        d = h.link.eval(PUBLISH, [], [])
        h.commands.answer(b"-OOM command not allowed\r\n")
        self.assertEqual(
            str(self.failureResultOf(d, Unavailable).value), "Redis: OOM command not allowed"
        )

    @inlineCallbacks
    def test_time(self) -> Any:
        """Redis's clock, in milliseconds."""
        h = self.harness()
        yield h.up()
        d = h.link.time()
        self.assertEqual(h.commands.sent(), [[b"TIME"]])
        h.commands.answer(array(bulk(b"5000"), bulk(b"250999")))
        self.assertEqual(self.successResultOf(d), 5_000_250)

    @inlineCallbacks
    def test_barrier_comes_after_the_messages_before_it(self) -> Any:
        """
        A barrier is a PING on the subscription, answered after the
        messages before it; those asked while one is on its way share the
        next; a lost subscription fails them.
        """
        h = self.harness()
        yield h.up()
        order: list[Any] = []
        first = h.link.barrier()
        first.addCallback(lambda _: order.append("first"))
        self.assertEqual(h.subscription.sent(), [[b"PING"]])
        second = h.link.barrier()
        third = h.link.barrier()
        self.assertEqual(h.subscription.sent(), [])
        h.subscription.answer(message(b"m1"))
        self.assertNoResult(first)
        h.receiver.events.append("m1 handed")
        h.subscription.answer(SUBSCRIBED_PONG)
        self.assertEqual(order, ["first"])
        self.assertEqual(h.receiver.events[-2:], [b"m1", "m1 handed"])
        self.assertEqual(h.subscription.sent(), [[b"PING"]])
        self.assertNoResult(second)
        h.subscription.drop()
        self.failureResultOf(second, Unavailable)
        self.failureResultOf(third, Unavailable)
        self.failureResultOf(h.link.barrier(), Unavailable)

    def test_refused_password_is_said_and_tried_again(self) -> None:
        """
        AUTH refused: txredisapi gives up; the link says why (one error
        line, not the password) and starts afresh every reconnect_max_delay.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        h = self.harness(url="redis://:wrong-pass@127.0.0.1:6379/0")
        for wire in h.endpoint.wires:
            self.assertEqual(wire.sent(), [[b"AUTH", b"wrong-pass"]])
            wire.answer(b"-WRONGPASS invalid username-password pair\r\n")
        health = h.link.health() or ""
        self.assertIn("could not auth", health)
        self.assertNotIn("wrong-pass", health)
        errors = [e for e in events if e["log_level"] == LogLevel.error]
        self.assertEqual(len(errors), 1)
        self.assertEqual(errors[0]["log_namespace"], "notificator.redisbroker.RedisBroker")
        self.assertEqual(
            errors[0]["reason"],
            "Redis error: could not auth: WRONGPASS invalid username-password pair",
        )
        self.assertEqual(len(h.endpoint.wires), 2)
        h.clock.advance(0.05)
        self.assertEqual(len(h.endpoint.wires), 4)
        for wire in h.endpoint.wires[2:]:
            self.assertEqual(wire.sent(), [[b"AUTH", b"wrong-pass"]])

    @inlineCallbacks
    def test_stop(self) -> Any:
        """Stopping closes both connections; health says the node is stopping; no outage."""
        h = self.harness()
        yield h.up()
        yield h.link.stop()
        self.assertEqual(h.link.health(), "the node is stopping")
        self.assertEqual([w.transport.connected for w in h.endpoint.wires], [False, False])
        self.assertEqual(h.link.outages, 0)
        self.assertEqual(h.receiver.events[-1], "lost")


class HiredisLinkTests(LinkTests):
    """The same, reading Redis's replies with hiredis (the default when installed)."""

    parser = "hiredis"

    def setUp(self) -> None:
        require_hiredis()

    @inlineCallbacks
    def test_messages_of_one_read_are_handed_over_in_it(self) -> Any:
        """
        What Redis sends in one read is handed over in that read, messages
        and replies alike: no reactor turn per bulk string (txredisapi's
        own parser reads what follows one a C{callLater(0)} later, which
        cost most of a publish's CPU in cluster mode).
        """
        h = self.harness()
        yield h.up()
        barrier = h.link.barrier()
        h.subscription.sent()
        h.subscription.protocol.dataReceived(
            message(b"1-0\nu1\na") + message(b"1-1\nu2\nb") + SUBSCRIBED_PONG
        )
        self.assertEqual(h.receiver.events[-2:], [b"1-0\nu1\na", b"1-1\nu2\nb"])
        self.successResultOf(barrier)
        d = h.link.eval(PUBLISH, [b"k"], [b"body"])
        h.commands.sent()
        h.commands.protocol.dataReceived(array(bulk(b"8-0"), b":2\r\n"))
        self.assertEqual(self.successResultOf(d), [b"8-0", 2])


class ParserTests(TestCase):
    """Which parser reads Redis's replies, and the line that says so."""

    def test_hiredis_when_installed(self) -> None:
        """
        hiredis reads Redis's replies when it is installed, txredisapi's
        own parser otherwise; one line at start-up says which.
        """
        require_hiredis()
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        h = LinkHarness(self, parser=None)
        self.assertEqual(h.link.parser, "hiredis")
        said = [e["parser"] for e in events if "parser" in e]
        self.assertEqual(said, [f"hiredis {txredisapi.hiredis.__version__}"])
        self.assertEqual(events[-1]["log_format"], "Redis replies read by {parser}")

    def test_pure_python_without_hiredis(self) -> None:
        """Without hiredis, txredisapi's own parser, said at start-up."""
        self.patch(txredisapi, "hiredis", None)
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        h = LinkHarness(self, parser=None)
        self.assertEqual(h.link.parser, "python")
        self.assertEqual(
            [e["parser"] for e in events if "parser" in e],
            ["txredisapi's pure-Python parser (hiredis is not installed)"],
        )
        cluster = cluster_config(redis=load_address("redis://127.0.0.1:6379/0"))
        with self.assertRaises(ValueError):
            TxRedisLink(reactor, cluster, "n", parser="hiredis")


class LiveBrokerTests(TestCase):
    """
    The broker over its real txredisapi connections to a real redis-server,
    reading Redis's replies with hiredis when installed.
    """

    timeout = 30

    def broker(self, url: str, ca: str | None = None) -> tuple[Hub, RedisBroker]:
        stats = Stats(started_at=reactor.seconds())
        hub = Hub(clock=reactor, stats=stats)
        cluster = cluster_config(
            redis=load_address(url), node="live", timeout=2, reconnect_max_delay=0.3, ca=ca
        )
        broker = build_broker(hub, stats, reactor, cluster, history(size=10, ttl=60), "live")
        broker.startService()
        self.addCleanup(broker.stopService)
        return hub, broker

    @inlineCallbacks
    def delivers(self, hub: Hub, broker: RedisBroker) -> Any:
        """Once available, a publish comes back through the subscription."""
        yield self.until(lambda: broker.health() is None)
        stream = FakeStream("u9")
        hub.attach(stream)
        published = yield broker.publish(Message("notify", "u9", '{"n": 1}'))
        yield self.until(lambda: stream.frames)
        self.assertEqual(stream.frames, [frame(published.event_id)])

    @inlineCallbacks
    def test_password(self) -> Any:
        """A password in the URL is sent (AUTH); a wrong one is reported and tried again later."""
        redis = RedisServer(self, password="s3cret-pass").start()
        yield self.delivers(*self.broker(redis.url))
        _, wrong = self.broker(redis.url.replace("s3cret", "wrong"))
        yield self.until(lambda: "could not auth" in (wrong.health() or ""))
        self.assertNotIn("wrong-pass", wrong.health() or "")
        connections = redis_stat(redis, "total_connections_received")
        yield self.until(lambda: redis_stat(redis, "total_connections_received") >= connections + 2)

    @inlineCallbacks
    def test_tls(self) -> Any:
        """rediss:// with cluster.ca works; a certificate of another CA is refused, and said so."""
        from tests.tlssupport import Certs

        certs = Certs(self)
        redis = RedisServer(self, tls=(certs.cert, certs.key, certs.ca)).start()
        yield self.delivers(*self.broker(redis.url, ca=certs.ca))
        _, untrusted = self.broker(redis.url, ca=certs.other_ca)
        yield self.until(lambda: "certificate verify failed" in (untrusted.health() or ""))
        yield deferLater(reactor, 0.5, lambda: None)
        self.assertIsNotNone(untrusted.health())

    def test_unreadable_ca(self) -> None:
        """A cluster.ca that is not a CA file is one line at start-up."""
        bad = self.mktemp()
        with open(bad, "w") as f:
            f.write("not a certificate")
        cluster = cluster_config(redis=load_address("rediss://h"), ca=bad)
        stats = Stats(started_at=0)
        for path, words in [(bad, "no PEM certificate"), (bad + "-missing", "No such file")]:
            with self.assertRaises(ValueError) as e:
                build_broker(
                    Hub(clock=reactor, stats=stats),
                    stats,
                    reactor,
                    attrs.evolve(cluster, ca=path),
                    history(),
                    "n",
                )
            self.assertIn(f"cluster.ca: {path}: ", str(e.exception))
            self.assertIn(words, str(e.exception))

    @inlineCallbacks
    def test_publish_deliver_replay_and_script_flush(self) -> Any:
        """Publish, receive through the subscription, replay; a SCRIPT FLUSH costs nothing."""
        redis = RedisServer(self).start()
        hub, broker = self.broker(redis.url)
        yield self.until(lambda: broker.health() is None)
        stream = FakeStream("u1")
        hub.attach(stream)
        published = yield broker.publish(Message("notify", "u1", '{"n": 1}'))
        self.assertEqual((published.delivered, published.nodes), (1, 1))
        yield self.until(lambda: stream.frames)
        self.assertEqual(stream.frames, [frame(published.event_id)])
        redis.command("SCRIPT", "FLUSH")
        second = yield broker.publish(Message("notify", "u1", '{"n": 2}'))
        replay = yield broker.replay("u1", published.event_id)
        self.assertEqual(
            replay.frames, (frame(second.event_id, encode_frame("notify", '{"n": 2}')),)
        )
        self.assertIsNotNone(broker.link.rtt_last)
        clients = redis.command("CLIENT", "LIST").decode()
        self.assertEqual(clients.count("name=notificator-live "), 2)

    @inlineCallbacks
    def test_unix_socket(self) -> Any:
        """unix:///path?db=N: the broker reaches Redis on its Unix socket, in that database."""
        redis = RedisServer(self, unix=True, db=3, password="s3cret-pass").start()
        self.assertTrue(redis.url.startswith("unix://:s3cret-pass@/"), redis.url)
        hub, broker = self.broker(redis.url)
        yield self.delivers(hub, broker)
        self.assertIn(b"db3:keys=", redis.command("INFO", "keyspace"))
        self.assertNotIn(b"db0:", redis.command("INFO", "keyspace"))
        clients = redis.command("CLIENT", "LIST").decode()
        self.assertEqual(clients.count("name=notificator-live "), 2)

    @inlineCallbacks
    def until(self, condition: Any, timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError("condition not met in time")
            yield deferLater(reactor, 0.02, lambda: None)


class LivePurePythonBrokerTests(LiveBrokerTests):
    """The same where hiredis is not installed: txredisapi's own parser."""

    def setUp(self) -> None:
        self.patch(txredisapi, "hiredis", None)


def redis_stat(redis: RedisServer, name: str) -> int:
    """A figure of redis-server's C{INFO stats}."""
    info = redis.command("INFO", "stats").decode()
    return int(info.split(f"{name}:", 1)[1].split()[0])
