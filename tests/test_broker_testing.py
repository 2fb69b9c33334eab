"""
Tests for L{notificator.broker.testing}: L{MemoryRedis} answers the table
of replay and gap cases as the scripts do on a real redis-server, and
L{FakeLink} does what it is told in the order it is told.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from notificator.broker import Unavailable
from notificator.broker.redis.scripts import PUBLISH, Script
from notificator.broker.testing import FakeLink, MemoryRedis, RecordingReceiver
from tests.replay_cases import SCRIPTS, Case, ScriptsImplementation, replay_cases


def in_memory(testcase: SynchronousTestCase, case: Case) -> ScriptsImplementation:
    """The scripts as L{MemoryRedis} runs them, on a L{Clock} (ttl: 60 s)."""
    clock = Clock()
    clock.advance(1_800_000_000)
    redis = MemoryRedis(clock)
    return ScriptsImplementation(case, redis.run, clock.advance, redis.flushall, 60.0)


@replay_cases(SCRIPTS, in_memory)
class ReplayCaseTests(SynchronousTestCase):
    """
    The table of replay and gap cases (tests/replay_cases.py), which the
    scripts on a real redis-server and the history are tested with too.
    """


def publish(link: FakeLink, user: bytes = b"u") -> Any:
    keys = [b"p:last", b"p:since", b"p:h:" + user, b"p:f:" + user]
    return link.eval(PUBLISH, keys, [3, 60_000, b"p:events", b"event: notify\ndata: x\n\n", user])


class FakeLinkTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.link = FakeLink(self.clock)
        self.receiver = RecordingReceiver()
        self.link.start(b"p:events", self.receiver)

    def test_down_until_connected(self) -> None:
        """Requests and barriers fail at once until connected; then it tells the receiver."""
        self.assertIsNotNone(self.link.health())
        self.failureResultOf(publish(self.link), Unavailable)
        self.failureResultOf(self.link.barrier(), Unavailable)
        self.link.connect()
        self.assertIsNone(self.link.health())
        self.assertEqual(self.receiver.events, ["subscribed", "available"])

    def test_nothing_happens_until_told(self) -> None:
        """A request runs, its reply comes, its message arrives, each when the test says."""
        self.link.connect()
        d = publish(self.link)
        self.assertEqual(self.link.redis.exists(b"p:h:u"), False)
        self.assertEqual(self.link.execute(), 1)
        self.assertTrue(self.link.redis.exists(b"p:h:u"))
        self.assertNoResult(d)
        self.assertEqual(self.link.reply(), 1)
        event_id, nodes = self.successResultOf(d)
        self.assertEqual(nodes, 1)
        self.assertEqual(self.receiver.events[2:], [])
        self.assertEqual(self.link.deliver(), 1)
        self.assertEqual(self.receiver.events[2:], [event_id + b"\nu\nevent: notify\ndata: x\n\n"])

    def test_a_barrier_answers_after_the_messages_sent_before_it(self) -> None:
        """pong hands over what was sent before each barrier first; what came after waits."""
        self.link.connect()
        publish(self.link)
        self.link.execute()
        barrier = self.link.barrier()
        publish(self.link)
        self.link.execute()
        self.link.barrier().addCallback(lambda _: self.receiver.events.append("second"))
        barrier.addCallback(lambda _: self.receiver.events.append("first"))
        self.assertEqual(self.link.pong(), 2)
        kinds = [e if isinstance(e, str) else "message" for e in self.receiver.events[2:]]
        self.assertEqual(kinds, ["message", "first", "message", "second"])

    def test_lost_connections(self) -> None:
        """
        A lost subscription loses what was on its way and fails its barriers;
        a lost command connection fails what it did not answer; both tell.
        """
        self.link.connect()
        first = publish(self.link)
        self.link.execute()
        barrier = self.link.barrier()
        self.link.lose_subscription()
        self.failureResultOf(barrier, Unavailable)
        self.assertEqual(self.receiver.events[2:], ["lost"])
        self.assertEqual(self.link.outages, 1)
        self.assertEqual(self.link.deliver(), 0)
        d = publish(self.link)
        self.link.lose_commands()
        self.failureResultOf(first, Unavailable)
        self.failureResultOf(d, Unavailable)
        self.link.connect()
        self.assertEqual(self.receiver.events[-2:], ["subscribed", "available"])
        self.assertEqual(self.link.outages, 1)

    def test_nodes_share_one_redis(self) -> None:
        """Links to one MemoryRedis are nodes: each subscribed one gets every message."""
        other = FakeLink(self.clock, self.link.redis)
        other_receiver = RecordingReceiver()
        other.start(b"p:events", other_receiver)
        other.connect()
        self.link.connect()
        d = publish(self.link)
        self.link.settle()
        self.assertEqual(self.successResultOf(d)[1], 2)
        other.deliver()
        self.assertEqual(other_receiver.events[2:], self.receiver.events[2:])

    def test_only_our_scripts(self) -> None:
        """Another script is a mistake of the test, said at once."""
        self.assertRaises(ValueError, self.link.redis.run, Script.of("return 1"), [], [])

    def test_settle_does_everything(self) -> None:
        """settle runs, replies, delivers and answers until nothing is left."""
        self.link.connect()
        d = publish(self.link)
        self.link.barrier()
        self.link.settle()
        self.successResultOf(d)
        self.assertEqual(len(self.receiver.events), 3)
