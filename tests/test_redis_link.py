"""
Tests for L{notificator.broker.redis.link}: the broker over its real
txredisapi connections to a real C{redis-server} of the test's own
(skipped loudly outside CI when it is not installed, failed in CI).
"""

from __future__ import annotations

import time
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from notificator.broker.redis import RedisBroker
from notificator.events import Message, encode_frame
from notificator.hub import Hub
from notificator.stats import Stats
from tests.support import FakeStream, RedisServer
from tests.test_redis_ordering import cluster_config, frame, history, load_address


class LiveBrokerTests(TestCase):
    """The broker over its real txredisapi connections to a real redis-server."""

    timeout = 30

    def broker(self, url: str, ca: str | None = None) -> tuple[Hub, RedisBroker]:
        stats = Stats(started_at=reactor.seconds())
        hub = Hub(clock=reactor, stats=stats)
        cluster = cluster_config(
            redis=load_address(url), node="live", timeout=2, reconnect_max_delay=0.3, ca=ca
        )
        broker = RedisBroker(hub, stats, reactor, cluster, history(size=10, ttl=60), "live")
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
        yield self.until(lambda: wrong._refused)

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
                RedisBroker(
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
        self.assertIsNotNone(broker.rtt_last)
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
