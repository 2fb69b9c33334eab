"""
Tests for one machine of C{server.workers} seen from any of its workers:
L{notificator.broker.view} (the snapshots, their JSON, the shares of a
cap, the merged metrics), L{notificator.broker.redis.view} (each worker's
snapshot written and read back through the broker's link, here a
L{notificator.broker.testing.FakeLink} to one L{MemoryRedis}, on a
L{Clock}), and what C{/health}, C{/users}, C{/metrics} and the stream
caps make of it (L{notificator.http.monitor},
L{notificator.http.admission}).
"""

from __future__ import annotations

import json
import random
from typing import Any

from prometheus_client.core import CounterMetricFamily
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from notificator import auth, metrics
from notificator.broker.redis import RedisBroker
from notificator.broker.testing import FakeLink, MemoryRedis
from notificator.broker.view import (
    TTL,
    Machine,
    NodeView,
    encode_metrics,
    machine_metrics,
    share,
    snapshot,
)
from notificator.config import defaults
from notificator.http import monitor
from notificator.http.admission import Admission
from notificator.hub import Hub
from notificator.stats import Stats
from tests.support import FakeStream, evolved


class Worker:
    """A worker of machine C{m}: a hub and a Redis broker over a fake link, started."""

    def __init__(
        self, testcase: SynchronousTestCase, clock: Clock, redis: MemoryRedis, slot: int
    ) -> None:
        cfg = defaults()
        self.stats = Stats(clock.seconds())
        self.hub = Hub(clock, self.stats)
        self.link = FakeLink(clock, redis)
        self.node = f"m-w{slot}"
        self.broker = RedisBroker(
            self.hub,
            self.stats,
            clock,
            self.link,
            evolved(cfg.cluster, {"prefix": "t"}),
            cfg.sse.history,
            self.node,
        )
        self.views = self.broker.serve_machine(Machine("m", 2, slot))
        registry = metrics.build_registry(self.hub, self.stats, self.broker, clock)
        self.views.metrics = lambda: encode_metrics(registry.collect())
        self.broker.startService()
        testcase.addCleanup(self.broker.stopService)
        self.link.connect()
        self.link.settle()
        self._ids = 0

    def open(self, user_id: str, peer: str = "10.0.0.1") -> FakeStream:
        self._ids += 1
        stream = FakeStream(user_id, connection_id=self._ids, connected_at=1000.5, peer=peer)
        self.hub.attach(stream)
        return stream


class Machine2(SynchronousTestCase):
    """Two workers of one machine on one (memory) Redis."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.redis = MemoryRedis(self.clock)
        self.w0 = Worker(self, self.clock, self.redis, 0)
        self.w1 = Worker(self, self.clock, self.redis, 1)

    def tick(self, *workers: Worker) -> None:
        """One second: every worker given writes its snapshot and reads the others'."""
        self.clock.advance(1.0)
        for w in workers or (self.w0, self.w1):
            w.link.settle()

    def view(self, worker: Worker, **kw: Any) -> Any:
        d = worker.broker.view(**kw)
        worker.link.settle()
        return self.successResultOf(d)


class ShareTests(SynchronousTestCase):
    def test_shares_sum_to_the_cap(self) -> None:
        """The workers' parts of a cap differ by at most one and sum to it exactly."""
        for total in (1, 2, 7, 100, 1001):
            for workers in (1, 2, 3, 8):
                parts = [share(total, workers, k) for k in range(workers)]
                self.assertLessEqual(max(parts) - min(parts), 1)
                self.assertEqual(sum(parts), max(total, workers) if total < workers else total)

    def test_node_view_round_trip(self) -> None:
        """A snapshot read back is the snapshot; one that is not ours is a ValueError."""
        clock = Clock()
        hub = Hub(clock, Stats(0.0))
        hub.attach(FakeStream("u\ud64d", connection_id=3, connected_at=2.5, peer="::1"))
        own = snapshot("n", "ok", hub, hub.stats, 7.0, with_streams=True)
        from notificator.broker.view import encode_streams, stream_list

        back = NodeView.from_json(own.summary_json(), encode_streams(hub.version, stream_list(hub)))
        self.assertEqual(back, own)
        for bad in (b"[]", b"{}", b"null", b'{"node": 1}', b"\xff"):
            self.assertRaises(ValueError, NodeView.from_json, bad)


class MachineViewTests(Machine2):
    def test_each_worker_knows_the_others_streams_per_user(self) -> None:
        """After a tick, each worker knows the others' streams per user (not its own)."""
        self.w0.open("alice")
        self.w1.open("alice")
        self.w1.open("alice")
        self.w1.open("bob")
        self.assertEqual(dict(self.w0.broker.elsewhere), {})
        self.tick()
        self.tick()
        self.assertEqual(dict(self.w0.broker.elsewhere), {"alice": 2, "bob": 1})
        self.assertEqual(dict(self.w1.broker.elsewhere), {"alice": 1})

    def test_view_lists_every_worker_and_sums(self) -> None:
        """The view from either worker holds both, with the machine's sums."""
        self.w0.open("alice")
        self.w1.open("alice")
        self.w1.open("bob")
        self.stats_published(self.w0, 3)
        self.stats_published(self.w1, 4)
        self.tick()
        for w in (self.w0, self.w1):
            view = self.view(w)
            self.assertTrue(view.complete)
            self.assertEqual([n.node for n in view.nodes], ["m-w0", "m-w1"])
            sums = view.sums()
            self.assertEqual((sums["users"], sums["streams"], sums["published"]), (2, 3, 7))

    def stats_published(self, worker: Worker, n: int) -> None:
        worker.stats.published += n

    def test_streams_with_their_worker(self) -> None:
        """Asked for streams, the view lists each with its worker."""
        self.w0.open("alice", peer="10.0.0.1")
        self.w1.open("alice", peer="10.0.0.2")
        self.tick()
        view = self.view(self.w0, streams=True)
        listed = sorted((s.user_id, s.node, s.peer) for n in view.nodes for s in n.streams or ())
        self.assertEqual(listed, [("alice", "m-w0", "10.0.0.1"), ("alice", "m-w1", "10.0.0.2")])

    def test_a_silent_worker_drops_out(self) -> None:
        """A worker that stops writing is out of the view, and of the counts, after the TTL."""
        self.w1.open("alice")
        self.tick()
        self.tick()
        self.assertEqual(dict(self.w0.broker.elsewhere), {"alice": 1})
        self.w1.views.stop()  # as if killed
        for _ in range(int(TTL) + 1):
            self.tick(self.w0)
        self.assertEqual([n.node for n in self.view(self.w0).nodes], ["m-w0"])
        self.assertEqual(dict(self.w0.broker.elsewhere), {})

    def test_a_stopping_worker_leaves_at_once(self) -> None:
        """
        A worker that stops takes its snapshot out: the others stop counting
        its streams at their next tick, not after the TTL.
        """
        self.w1.open("alice")
        self.tick()
        self.tick()
        self.assertEqual(dict(self.w0.broker.elsewhere), {"alice": 1})
        stopped = self.w1.broker.stopService()
        self.w1.link.settle()
        self.successResultOf(stopped)
        self.tick(self.w0)
        self.assertEqual(dict(self.w0.broker.elsewhere), {})
        self.assertEqual([n.node for n in self.view(self.w0).nodes], ["m-w0"])

    def test_leaving_never_holds_the_stop(self) -> None:
        """Unanswered for the TTL, or without Redis, the stop goes on (the snapshot expires)."""
        stopped = self.w1.broker.stopService()  # its request is never answered
        self.assertNoResult(stopped)
        self.clock.advance(TTL)
        self.successResultOf(stopped)
        self.w0.link.lose_commands()
        self.successResultOf(self.w0.broker.stopService())

    def test_redis_lost_this_worker_alone(self) -> None:
        """Without Redis, the view is this worker's alone, and says why."""
        self.w1.open("alice")
        self.tick()
        self.w0.link.lose_commands()
        view = self.view(self.w0)
        self.assertFalse(view.complete)
        self.assertEqual([n.node for n in view.nodes], ["m-w0"])
        self.assertIn("lost", view.reason)

    def test_another_machine_is_not_seen(self) -> None:
        """Workers of another machine on the same Redis are not part of this one's view."""
        other = Worker(self, self.clock, self.redis, 0)
        other.views = other.broker.serve_machine(Machine("other", 2, 0))
        other.views.start()
        other.open("alice")
        self.tick(self.w0, self.w1, other)
        self.tick(self.w0, self.w1, other)
        self.assertEqual(dict(self.w0.broker.elsewhere), {})
        self.assertEqual([n.node for n in self.view(self.w0).nodes], ["m-w0", "m-w1"])

    def test_a_foreign_entry_is_skipped_and_logged_once(self) -> None:
        """A summary that is not ours is skipped, with one log line, never a traceback."""
        self.tick()
        self.redis._hashes[b"t:view:m"][b"m-w1"] = b"not json"
        events: list[dict[str, Any]] = []
        self.w0.views._log = Logger(observer=events.append)
        self.tick(self.w0)
        self.tick(self.w0)
        self.assertEqual([n.node for n in self.view(self.w0).nodes], ["m-w0"])
        self.assertEqual(len(events), 1)


class MachineCapTests(Machine2):
    def admission(self, worker: Worker, per_user: int) -> Admission:
        cfg = defaults()
        limits = evolved(cfg.limits, {"streams_per_user": per_user})
        return Admission(
            worker.hub, cfg.sse, limits, worker.stats, Logger(), random.Random(1), worker.broker
        )

    def test_streams_per_user_holds_over_the_machine(self) -> None:
        """A user with streams on the other worker reaches limits.streamsPerUser sooner here."""
        self.w1.open("alice")
        self.w1.open("alice")
        self.w0.open("alice")
        admission = self.admission(self.w0, 3)
        self.assertIsNone(admission.refusal("alice", "10.0.0.9"))  # w1's not seen yet
        self.tick()
        self.tick()
        refused = admission.refusal("alice", "10.0.0.9")
        assert refused is not None
        self.assertEqual(refused[0], "user-limit")
        self.assertIsNone(admission.refusal("bob", "10.0.0.9"))


class MachineMonitorTests(Machine2):
    def site(self, worker: Worker) -> StubTreq:
        root = Resource()
        registry = metrics.build_registry(worker.hub, worker.stats, worker.broker, self.clock)
        guard = auth.Guard.from_config(defaults())
        monitor.add_monitor(
            root, worker.hub, worker.stats, worker.broker, self.clock, registry, guard
        )
        return StubTreq(root)

    def get(self, worker: Worker, path: str, headers: Any = None) -> tuple[Any, bytes]:
        stub = self.site(worker)
        d = stub.get("http://127.0.0.1" + path, headers=headers)
        worker.link.settle()
        stub.flush()
        response = self.successResultOf(d)
        return response, self.successResultOf(stub.content(response))

    def test_health_sums_the_workers(self) -> None:
        """/health from either worker: the machine's counts, each worker listed."""
        self.w0.open("alice")
        self.w1.open("alice")
        self.w1.open("bob")
        self.w1.stats.published += 5
        self.tick()
        for w in (self.w0, self.w1):
            response, body = self.get(w, "/health")
            doc = json.loads(body)
            self.assertEqual(response.code, 200)
            self.assertEqual(doc["node"], w.node)
            self.assertEqual((doc["users"], doc["streams"], doc["published"]), (2, 3, 5))
            self.assertEqual(
                [(x["node"], x["streams"], x["status"]) for x in doc["workers"]],
                [("m-w0", 1, "ok"), ("m-w1", 2, "ok")],
            )
            self.assertEqual((doc["machine"], doc["complete"]), ("m", True))

    def test_users_lists_every_stream_with_its_worker(self) -> None:
        """/users: every user with all their streams, each naming its worker; ETag kept."""
        self.w0.open("alice")
        self.w1.open("alice")
        self.w1.open("bob")
        self.tick()
        response, body = self.get(self.w0, "/users")
        doc = json.loads(body)
        self.assertEqual((doc["userCount"], doc["streamCount"]), (2, 3))
        alice = doc["users"][0]
        self.assertEqual((alice["userId"], alice["streams"]), ("alice", 2))
        self.assertEqual(sorted(c["node"] for c in alice["connections"]), ["m-w0", "m-w1"])
        etag = response.headers.getRawHeaders(b"etag")[0]
        again, _ = self.get(self.w0, "/users", {b"if-none-match": [etag]})
        self.assertEqual(again.code, 304)
        self.w1.open("carol")
        self.tick()
        changed, body = self.get(self.w0, "/users", {b"if-none-match": [etag]})
        self.assertEqual(changed.code, 200)
        self.assertEqual(json.loads(body)["userCount"], 3)

    def test_metrics_have_every_workers_series(self) -> None:
        """/metrics: each sample labelled with its worker; the machine's total is their sum."""
        self.w0.open("alice")
        self.w1.open("alice")
        self.w1.open("bob")
        self.tick()
        response, body = self.get(self.w0, "/metrics")
        self.assertEqual(response.code, 200)
        text = body.decode()
        self.assertIn('notificator_streams{worker="m-w0"} 1.0', text)
        self.assertIn('notificator_streams{worker="m-w1"} 2.0', text)
        self.assertIn('process_cpu_seconds_total{worker="m-w1"}', text)

    def test_merged_metrics(self) -> None:
        """Families merge by name; a sample keeps its labels and gains the worker's."""
        a = CounterMetricFamily("x", "X.", labels=["code"])
        a.add_metric(["400"], 2)
        merged = machine_metrics(
            [("w0", encode_metrics([a])), ("w1", encode_metrics([a])), ("w2", [["bad"]])],
            "worker",
        )
        [family] = merged
        self.assertEqual(
            [(s.name, s.labels, s.value) for s in family.samples],
            [
                ("x_total", {"code": "400", "worker": "w0"}, 2.0),
                ("x_total", {"code": "400", "worker": "w1"}, 2.0),
            ],
        )


class MemoryViewScriptTests(SynchronousTestCase):
    """
    The memory Redis answers L{VIEW_PUT}, L{VIEW_GET} and L{VIEW_DROP} as
    the real one does (test_redis_scripts).
    """

    KEYS = [b"t:view:m", b"t:view:m:streams", b"t:view:m:alive"]

    def test_put_get_and_expiry(self) -> None:
        """Each worker's entry is read back while its time lasts, then dropped with its streams."""
        from notificator.broker.redis.view import VIEW_DROP, VIEW_GET, VIEW_PUT

        clock = Clock()
        clock.advance(1000)
        redis = MemoryRedis(clock)

        def put(node: str, ttl: int, summary: str, streams: str = "") -> Any:
            return redis.run(VIEW_PUT, self.KEYS, [node, ttl, summary, streams])

        def get(streams: bool) -> Any:
            return redis.run(VIEW_GET, self.KEYS, [b"1" if streams else b"0"])

        self.assertEqual(put("a", 200, "A", "SA"), [1, b"a", b"A"])
        reply = put("b", 60_000, "B")
        self.assertEqual(reply[0], 0)
        self.assertEqual(
            sorted(zip(reply[1::2], reply[2::2], strict=True)), [(b"a", b"A"), (b"b", b"B")]
        )
        self.assertEqual(
            sorted(get(True), key=repr), sorted([b"a", b"A", b"SA", b"b", b"B", None], key=repr)
        )
        clock.advance(0.3)
        self.assertEqual(get(False), [b"b", b"B", None])
        self.assertEqual(put("b", 60_000, "B2"), [0, b"b", b"B2"])
        self.assertNotIn(b"a", redis._hashes.get(b"t:view:m:streams", {}))
        put("c", 60_000, "C", "SC")
        self.assertEqual(redis.run(VIEW_DROP, self.KEYS, [b"b"]), 1)
        self.assertEqual(get(True), [b"c", b"C", b"SC"])
        self.assertEqual(redis.run(VIEW_DROP, self.KEYS, [b"c"]), 1)
        self.assertEqual(get(True), [])
        self.assertEqual(redis._zsets, {})
