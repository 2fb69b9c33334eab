"""
Cluster mode end to end: two real C{twistd -n notificator} nodes and a real
C{redis-server} of the test's own (tests/support.py L{RedisServer}), driven
by real HTTP clients.  Every wait is bounded.

Without redis-server these tests skip with a loud reason outside CI and
fail in CI.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    RedisServer,
    Server,
    TCPProxy,
    cluster_config,
    redis_server_path,
    wait_until,
)

FORM = "application/x-www-form-urlencoded"


def health(server: Server) -> tuple[int, dict[str, Any]]:
    status, _, body = server.request("GET", "/health")
    return status, json.loads(body)


def publish(server: Server, user_id: str, n: int) -> tuple[int, dict[str, Any]]:
    return server.post(f"id=notify_{user_id}&data=%7B%22n%22%3A{n}%7D", FORM)


class ClusterTests(SynchronousTestCase):
    def setUp(self) -> None:
        redis_server_path()  # skip (or fail in CI) before anything starts
        self.redis = RedisServer(self).start()

    def node(self, name: str, redis_url: str | None = None, **cluster: Any) -> Server:
        return Server(self, local=cluster_config(redis_url or self.redis.url, name, **cluster))

    def start(self, *nodes: Server) -> None:
        """Start side by side; wait until each listens and has reached Redis."""
        for node in nodes:
            node.launch()
        for node in nodes:
            node.wait_listening()
        for node in nodes:
            self.healthy(node)

    def healthy(self, node: Server) -> dict[str, Any]:
        def ok() -> Any:
            status, body = health(node)
            return body if status == 200 else None

        return wait_until(ok, what=f"{node.dir} healthy")

    def subscribe(self, node: Server, path: str, headers: dict[str, str] | None = None) -> Any:
        stream = node.subscribe(path, headers)
        self.assertEqual(stream.status, 200)
        connect = stream.next_event()
        self.assertEqual(connect["event"], "connect")
        return stream, json.loads(connect["data"])

    def test_publish_on_one_node_reaches_every_stream_once(self) -> None:
        """
        Subscribe on A, publish on B, receive on A; the same user on both
        nodes gets each notification once per stream, the same bytes with
        the same id everywhere, in the same order.
        """
        a, b = self.node("a"), self.node("b")
        self.start(a, b)
        a1, _ = self.subscribe(a, "/sse/u1")
        a2, _ = self.subscribe(a, "/sse", {"Cookie": "userID=u1"})
        b1, _ = self.subscribe(b, "/sse/u1")
        other, _ = self.subscribe(a, "/sse/u2")

        status, reply = publish(b, "u1", 1)
        self.assertEqual((status, reply["delivered"], reply["nodes"]), (200, 1, 2))
        status, reply2 = publish(a, "u1", 2)
        self.assertEqual((status, reply2["delivered"], reply2["nodes"]), (200, 2, 2))
        status, reply3 = publish(b, "u1", 3)
        self.assertEqual((status, reply3["delivered"], reply3["nodes"]), (200, 1, 2))
        ids = [reply["eventId"], reply2["eventId"], reply3["eventId"]]
        self.assertEqual(sorted(ids, key=lambda i: tuple(map(int, i.split("-")))), ids)
        blocks = []
        for stream in (a1, a2, b1):
            got = []
            deadline = time.monotonic() + 10
            while len(got) < 3 and time.monotonic() < deadline:
                block = stream.next_block()
                if b"event: heartbeat" not in block:
                    got.append(block)
            blocks.append(got)
        self.assertEqual(blocks[0], blocks[1])
        self.assertEqual(blocks[0], blocks[2])
        self.assertEqual(
            [re.search(rb"id: (\S+)", blk).group(1).decode() for blk in blocks[0]],  # type: ignore[union-attr]
            ids,
        )
        self.assertEqual(
            [json.loads(blk.split(b"data: ")[1]) for blk in blocks[0]],
            [{"n": 1}, {"n": 2}, {"n": 3}],
        )
        for stream in (a1, a2, b1, other):
            stream.nothing_more(0.6)
        # Each node says which it is.
        self.assertEqual(health(a)[1]["node"], "a")
        status, _, users = b.request("GET", "/users")
        self.assertEqual((status, json.loads(users)["node"]), (200, "b"))

    def test_replay_across_nodes_with_every_spelling(self) -> None:
        """
        A client that saw notifications on A reconnects to B with its last
        id, in each spelling the polyfills use, and gets what it missed,
        then live ones, each once.
        """
        a, b = self.node("a"), self.node("b")
        self.start(a, b)
        ids = [publish(a, "u3", n)[1]["eventId"] for n in range(1, 4)]
        spellings = [
            ("/sse/u3", {"Last-Event-ID": ids[0]}),
            (f"/sse/u3?lastEventId={ids[0]}", {}),
            (f"/sse/u3?last_event_id={ids[0]}", {}),
            (f"/sse/u3?evs_last_event_id={ids[0]}", {}),
        ]
        streams = []
        for path, headers in spellings:
            stream, connect = self.subscribe(b, path, headers)
            self.assertEqual(connect["replay"], "complete", path)
            got = stream.events(2)
            self.assertEqual([e["id"] for e in got], ids[1:], path)
            self.assertEqual([json.loads(e["data"]) for e in got], [{"n": 2}, {"n": 3}])
            streams.append(stream)
        status, reply = publish(a, "u3", 4)
        self.assertEqual((status, reply["delivered"], reply["nodes"]), (200, 0, 2))
        for stream in streams:
            self.assertEqual(stream.next_event()["id"], reply["eventId"])
            stream.nothing_more(0.6)

    def test_redis_outage(self) -> None:
        """
        Redis killed: publishes get 503, /health says why, streams stay open
        with heartbeats.  Redis back on the same port (its data lost):
        delivery resumes without a restart, the open streams are told the
        history was lost, and /metrics counted the outage.
        """
        a, b = self.node("a"), self.node("b")
        self.start(a, b)
        stream, _ = self.subscribe(a, "/sse/u4")
        first = publish(b, "u4", 1)[1]["eventId"]
        self.assertEqual(stream.next_event()["id"], first)

        self.redis.stop()
        for node in (a, b):
            status, body = wait_until(
                lambda node=node: (lambda r: r[0] == 503 and r)(health(node)), what="503"
            )
            self.assertEqual(body["status"], "unavailable")
            self.assertIn(f"Redis at redis://127.0.0.1:{self.redis.port}/0", body["reason"])
            status, reply = publish(node, "u4", 2)
            self.assertEqual(status, 503)
            self.assertTrue(reply["error"].startswith("not recorded: "), reply)
        for _ in range(2):
            self.assertEqual(stream.next_event(skip=())["event"], "heartbeat")
        _, _, metrics = a.request("GET", "/metrics")
        self.assertIn("notificator_redis_up 0.0", metrics.decode())
        self.assertIn("notificator_broker_up 0.0", metrics.decode())
        # A reconnect now cannot be replayed: it is told so, and stays open.
        late, connect = self.subscribe(a, "/sse/u4", {"Last-Event-ID": first})
        self.assertEqual(connect["replay"], "truncated")
        self.assertEqual(json.loads(late.next_event()["data"])["reason"], "unavailable")

        self.redis.start()
        self.healthy(a)
        self.healthy(b)
        # The history went with Redis: the open streams are told, then live again.
        for s in (stream, late):
            reset = s.next_event()
            self.assertEqual(
                (reset["event"], json.loads(reset["data"])["reason"]), ("reset", "lost")
            )
        status, reply = publish(b, "u4", 3)
        self.assertEqual((status, reply["nodes"]), (200, 2))
        for s in (stream, late):
            event = s.next_event()
            self.assertEqual((event["id"], json.loads(event["data"])), (reply["eventId"], {"n": 3}))
        for s in (stream, late):
            s.nothing_more(0.5)  # once each: no duplicate
        _, after = self.subscribe(a, "/sse/u4", {"Last-Event-ID": first})
        self.assertEqual(after["replay"], "truncated")
        _, _, metrics = a.request("GET", "/metrics")
        text = metrics.decode()
        self.assertIn("notificator_redis_up 1.0", text)
        self.assertIn("notificator_redis_outages_total 1.0", text)
        self.assertIn('notificator_cluster_node_info{node="a"} 1.0', text)
        self.assertRegex(text, r"notificator_redis_rtt_seconds \d")
        self.assertIn("notificator_broker_up 1.0", text)
        self.assertNotIn("Traceback", a.log() + b.log())

    def test_a_node_cut_off_fills_its_streams_from_the_history(self) -> None:
        """
        Node A loses Redis while B keeps it; what B records meanwhile
        reaches A's open stream once and in order when A is back, then
        live notifications follow.
        """
        proxy = TCPProxy(self, self.redis.port)
        a = self.node("a", f"redis://127.0.0.1:{proxy.port}/0")
        b = self.node("b")
        self.start(a, b)
        stream, _ = self.subscribe(a, "/sse/u5")
        e1 = publish(b, "u5", 1)[1]["eventId"]
        self.assertEqual(stream.next_event()["id"], e1)

        proxy.cut()
        wait_until(lambda: health(a)[0] == 503, what="A unavailable")
        self.assertEqual(publish(a, "u5", 0)[0], 503)
        missed = []
        for n in (2, 3):
            status, reply = publish(b, "u5", n)
            self.assertEqual((status, reply["nodes"]), (200, 1))
            missed.append(reply["eventId"])
        self.assertEqual(stream.next_event(skip=())["event"], "heartbeat")

        proxy.restore()
        self.healthy(a)
        got = stream.events(2)
        self.assertEqual([e["id"] for e in got], missed)
        self.assertEqual([json.loads(e["data"]) for e in got], [{"n": 2}, {"n": 3}])
        status, reply = publish(b, "u5", 4)
        self.assertEqual((status, reply["nodes"]), (200, 2))
        self.assertEqual(stream.next_event()["id"], reply["eventId"])
        stream.nothing_more(0.6)
        a.wait_for_log(r"caught up with Redis: 2 notifications", name="sse.log")

    def test_node_restart_clients_reconnect_to_the_other_node(self) -> None:
        """
        A stops (its streams are ended with a retry); its clients reconnect
        to B with their last id and get what was published meanwhile; A
        comes back and serves again.
        """
        a, b = self.node("a"), self.node("b")
        self.start(a, b)
        stream, _ = self.subscribe(a, "/sse/u6")
        e1 = publish(b, "u6", 1)[1]["eventId"]
        self.assertEqual(stream.next_event()["id"], e1)
        a.stop()
        self.assertRaises(ConnectionError, stream.events, 1)
        published = [publish(b, "u6", n)[1]["eventId"] for n in (2, 3)]

        moved, connect = self.subscribe(b, "/sse/u6", {"Last-Event-ID": e1})
        self.assertEqual(connect["replay"], "complete")
        self.assertEqual([e["id"] for e in moved.events(2)], published)

        a2 = a.start()  # the same node, started again (on another port)
        self.healthy(a2)
        back, connect = self.subscribe(a2, "/sse/u6", {"Last-Event-ID": published[0]})
        self.assertEqual(connect["replay"], "complete")
        self.assertEqual(back.next_event()["id"], published[1])
        status, reply = publish(a2, "u6", 4)
        self.assertEqual((status, reply["delivered"], reply["nodes"]), (200, 1, 2))
        for s in (moved, back):
            self.assertEqual(s.next_event()["id"], reply["eventId"])


class StartUpTests(SynchronousTestCase):
    def test_bad_redis_url_is_one_line(self) -> None:
        """A bad cluster.redis stops start-up with one line naming the file and key, no password."""
        server = Server(self, local={"cluster": {"redis": "redis://:hunter2@cache:6379/x"}})
        code, output = server.run_to_exit()
        self.assertNotEqual(code, 0)
        lines = [line for line in output.splitlines() if line.strip()]
        self.assertEqual(len(lines), 1, output)
        self.assertRegex(lines[0], r"local\.json: cluster\.redis: the path must be a database")
        self.assertNotIn("hunter2", output)


class BenchSmokeTests(SynchronousTestCase):
    def test_bench_cluster_runs(self) -> None:
        """bench/cluster.py, briefly: two nodes and Redis, nothing lost or doubled, CPU per process."""
        import os
        import subprocess
        import sys

        from tests.support import PROJECT

        redis_server_path()
        out = os.path.abspath(self.mktemp())
        env = dict(os.environ, PYTHONPATH=PROJECT)
        command = [sys.executable, os.path.join(PROJECT, "bench", "cluster.py")]
        command += ["--n", "40", "--m", "100", "--rate", "200", "--modes", "cluster"]
        command += ["--no-pin", "--json", out]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        with open(out, encoding="utf-8") as f:
            (run,) = json.load(f)["runs"]
        latency = run["latency"]
        self.assertEqual(
            (run["connect"]["connected"], latency["accepted"], latency["received"]), (40, 100, 100)
        )
        self.assertEqual((latency["lost"], latency["duplicates"], latency["misrouted"]), (0, 0, 0))
        self.assertEqual(set(run["cpu_us_per_publish"]), {"node A", "node B", "redis", "total"})
        self.assertIn("cluster", done.stdout)
