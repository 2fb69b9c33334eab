"""
End-to-end tests of C{server.workers}: the real C{twistd -n notificator}
as the supervisor of two real workers on one port, joined by the private
C{redis-server} it runs (skipped loudly outside CI when redis-server is
not installed, failed in CI), with real clients: streams spread over both
workers, publishes through either reaching every stream once, replay
across workers, a worker killed with SIGKILL under a publish load, a
graceful restart (SIGHUP) under a steady publish load, SIGTERM, and the
one line of a host without redis-server.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from notificator import listening
from tests.support import (
    PROJECT,
    Server,
    as_user,
    free_port,
    make_user,
    not_here,
    parse_frames,
    redis_server_path,
    wait_until,
)

FORM = "application/x-www-form-urlencoded"


def workers_config(
    count: int = 2, limits: dict[str, Any] | None = None, **server: Any
) -> dict[str, Any]:
    """Two workers (or C{count}), quick heartbeats and drains, no history on disk."""
    return {
        "server": {"workers": count, "log": {"level": "info"}, **server},
        "sse": {"heartbeatInterval": 1, "keepalive": 0, "retry": 100, "drainSeconds": 0.5},
        "limits": {"streamsPerUser": 100, **(limits or {})},
    }


class Follower:
    """
    A browser's EventSource on C{/sse/<user>}, in a thread: it reads every
    notification (id and data) and, when its stream ends or breaks,
    reconnects with the last id it saw (C{Last-Event-ID}), counting the
    reconnects.
    """

    def __init__(self, port: int, user: str, last_id: str | None = None) -> None:
        self.port = port
        self.user = user
        self.last_id = last_id
        self.got: list[tuple[str, Any]] = []
        self.reconnects = 0
        self.connected = threading.Event()
        self._stop = False
        self._conn: http.client.HTTPConnection | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        first = True
        while not self._stop:
            if not first:
                self.reconnects += 1
                time.sleep(0.05)
            first = False
            try:
                self._follow()
            except (OSError, http.client.HTTPException):
                pass

    def _follow(self) -> None:
        conn = self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            headers = {"Accept": "text/event-stream"}
            if self.last_id is not None:
                headers["Last-Event-ID"] = self.last_id
            conn.request("GET", f"/sse/{self.user}", headers=headers)
            response = conn.getresponse()
            if response.status != 200:
                return
            lines: list[bytes] = []
            while not self._stop:
                line = response.readline()
                if not line:
                    return
                lines.append(line)
                if line not in (b"\n", b"\r\n"):
                    continue
                for event in parse_frames(b"".join(lines)):
                    kind = event.get("event", "message")
                    if "id" in event:
                        # As EventSource: the last id of any event (connect's too).
                        self.last_id = event["id"]
                    if kind == "connect":
                        self.connected.set()
                    elif kind == "notify":
                        self.got.append((event["id"], json.loads(event["data"])["n"]))
                lines = []
        finally:
            conn.close()

    def numbers(self) -> list[int]:
        return [n for _, n in self.got]

    def stop(self) -> None:
        self._stop = True
        conn = self._conn
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(2)
            except OSError:
                pass
        self._thread.join(10)


class Publisher:
    """
    A back-end sender in a thread: publishes C{n} = 1, 2, ... to C{user},
    one connection each, C{pause} seconds apart, and records each answer:
    C{accepted} (n -> event id) and C{failed} (n -> why: a refused
    connection, a 5xx).
    """

    def __init__(self, port: int, user: str, pause: float = 0.01) -> None:
        self.port = port
        self.user = user
        self.pause = pause
        self.accepted: dict[int, str] = {}
        self.failed: dict[int, str] = {}
        self.nodes: Counter[str] = Counter()
        self.n = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            self.n += 1
            n = self.n
            body = f"id=notify_{self.user}&data=%7B%22n%22%3A{n}%7D"
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                conn.request("POST", "/webNotification", body, {"Content-Type": FORM})
                response = conn.getresponse()
                answer = response.read()
                if response.status == 200:
                    self.accepted[n] = json.loads(answer)["eventId"]
                else:
                    self.failed[n] = f"{response.status} {answer!r}"
            except (OSError, http.client.HTTPException) as e:
                self.failed[n] = repr(e)
            finally:
                conn.close()
            time.sleep(self.pause)

    def stop(self) -> None:
        self._stop = True
        self._thread.join(10)


def health(port: int) -> dict[str, Any]:
    """C{/health} of whichever worker the kernel hands this connection to."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/health")
        result: dict[str, Any] = json.loads(conn.getresponse().read())
        return result
    finally:
        conn.close()


def answers(port: int, path: str, count: int = 2) -> list[Any]:
    """C{path}'s JSON as each worker answers it (new connections until all did)."""
    seen: dict[str, Any] = {}
    for _ in range(400):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", path)
            doc = json.loads(conn.getresponse().read())
        finally:
            conn.close()
        seen[doc["node"]] = doc
        if len(seen) == count:
            break
    return list(seen.values())


def metrics_text(port: int) -> str:
    """C{/metrics} of whichever worker takes the connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def turned_away(port: int, path: str, within: float = 10.0) -> bytes:
    """
    The body of a stream the server ends at once (a stream turned away),
    read until the server closes: a stream it admits instead fails the
    test after C{within} seconds rather than hanging it (its heartbeats
    would keep a plain read going forever).
    """
    deadline = time.monotonic() + within
    with socket.create_connection(("127.0.0.1", port), timeout=within) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        chunks: list[bytes] = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{path} was admitted: {b''.join(chunks)!r}")
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200 "):
        raise AssertionError(f"{path}: {head!r}")
    return body


def per_worker(port: int, count: int = 2, tries: int = 400) -> dict[str, dict[str, Any]]:
    """
    Each worker's own counts (by node name), from its own C{/health}
    (its entry in C{"workers"}, made when it answered), asked on new
    connections until all answered.
    """
    seen: dict[str, dict[str, Any]] = {}
    for _ in range(tries):
        answer = health(port)
        [own] = [w for w in answer["workers"] if w["node"] == answer["node"]]
        seen[answer["node"]] = own
        if len(seen) == count:
            break
    return seen


class WorkersTests(SynchronousTestCase):
    #: Seconds a test may run.  A SynchronousTestCase has no timeout of
    #: its own: past it, the watchdog stops the test's server (SIGTERM),
    #: which ends every wait (each is bounded anyway), and the test fails.
    timeout = 120

    def setUp(self) -> None:
        redis_server_path()  # skip (or fail in CI) before anything starts
        self.overdue = False
        self.nodes: list[Server] = []
        watchdog = threading.Timer(self.timeout, self._overdue)
        watchdog.daemon = True
        watchdog.start()
        self.addCleanup(watchdog.cancel)
        self.addCleanup(lambda: self.assertFalse(self.overdue, f"over {self.timeout} s"))

    def _overdue(self) -> None:
        self.overdue = True
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.send_signal(signal.SIGTERM)

    def start(
        self,
        count: int = 2,
        limits: dict[str, Any] | None = None,
        session: bool = False,
        **server: Any,
    ) -> Server:
        """
        The supervisor of C{count} workers on a fixed loopback port, every
        worker ready (with C{session}: L{Server.launch}'s).
        """
        self.port = free_port()
        node = Server(
            self,
            local=workers_config(count, limits, **server),
            listen=f"tcp:port={self.port}:interface=127.0.0.1",
            short_dir=True,
        )
        node.launch(session)
        self.nodes.append(node)
        node.port = self.port
        node.wait_for_log(f"all {count} workers ready", 60)
        return node

    def followers(self, user: str, count: int, **kw: Any) -> list[Follower]:
        followers = [Follower(self.port, user, **kw) for _ in range(count)]
        for follower in followers:
            self.addCleanup(follower.stop)
            self.assertTrue(follower.connected.wait(10), "a stream did not open")
        return followers

    def publish(self, user: str, n: int) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            body = f"id=notify_{user}&data=%7B%22n%22%3A{n}%7D"
            conn.request("POST", "/webNotification", body, {"Content-Type": FORM})
            response = conn.getresponse()
            answer = json.loads(response.read())
            self.assertEqual(response.status, 200, answer)
            event_id: str = answer["eventId"]
            return event_id
        finally:
            conn.close()

    def worker_pids(self, node: Server) -> dict[int, int]:
        """Each slot's newest worker pid, from the supervisor's log."""
        found = re.findall(r"worker (\d+) started \(pid (\d+)\)", node.log())
        return {int(slot): int(pid) for slot, pid in found}

    def test_streams_spread_and_publishes_reach_every_worker_once(self) -> None:
        """
        Two workers on one port: 40 streams of one user spread over both
        (each worker's /health counts some); publishes, taken by either
        worker, reach every stream once each, in order, with the id the
        publish answered.
        """
        node = self.start()
        followers = self.followers("alice", 40)
        workers = per_worker(self.port)
        self.assertEqual(len(workers), 2, workers)
        names = sorted(workers)
        self.assertTrue(all(re.fullmatch(r".+:\d+-w[01]", name) for name in names), names)
        self.assertEqual({name[-3:] for name in names}, {"-w0", "-w1"})
        wait_until(
            lambda: sum(w["streams"] for w in per_worker(self.port).values()) == 40,
            what="40 streams counted",
        )
        counts = [w["streams"] for w in per_worker(self.port).values()]
        self.assertTrue(all(c > 0 for c in counts), counts)
        ids = [self.publish("alice", n) for n in range(1, 21)]
        # Both workers took publishes.
        published = [w["published"] for w in per_worker(self.port).values()]
        self.assertTrue(all(p > 0 for p in published), published)
        wait_until(lambda: all(len(f.got) >= 20 for f in followers), what="20 notifications each")
        time.sleep(0.3)  # (a duplicate would have arrived by now)
        for follower in followers:
            self.assertEqual(follower.got, list(zip(ids, range(1, 21), strict=True)))
            self.assertEqual(follower.reconnects, 0)
        self.assertNotIn("Traceback", node.log())

    def test_one_server_from_outside(self) -> None:
        """
        /health, /users and /metrics from either worker describe both; once
        the snapshots are out (a second), a user at limits.streamsPerUser
        over the two workers is turned away by either: 200, a long
        C{retry:}, the stream ended.
        """
        node = self.start(limits={"streamsPerUser": 10})
        self.followers("carol", 10)
        for k in (0, 1):  # (all ten on one worker: one run in 512)
            node.wait_for_log(rf"worker {k}: stream \d+ opened for carol", 10, "sse.log")

        def machine_wide(path: str, key: str) -> bool:
            seen = answers(self.port, path)
            return len(seen) == 2 and all(a[key] == 10 for a in seen)

        wait_until(lambda: machine_wide("/health", "streams"), what="/health: 10 on either")
        for answer in answers(self.port, "/health"):
            self.assertEqual(answer["users"], 1)
            self.assertEqual(sum(w["streams"] for w in answer["workers"]), 10)
        wait_until(lambda: machine_wide("/users", "streamCount"), what="/users: 10 on either")
        for answer in answers(self.port, "/users"):
            [carol] = answer["users"]
            nodes = {c["node"] for c in carol["connections"]}
            self.assertEqual(len(carol["connections"]), 10)
            self.assertEqual(nodes, {w["node"] for w in answer["workers"]}, answer)
        for _ in range(4):
            series = re.findall(
                r'^notificator_streams\{worker="[^"]+-w([01])"\} (\S+)$',
                metrics_text(self.port),
                re.M,
            )
            self.assertEqual(sorted(w for w, _ in series), ["0", "1"])
            self.assertEqual(sum(float(n) for _, n in series), 10)
        time.sleep(1.5)  # every worker has read the other's snapshot since
        for _ in range(20):
            body = turned_away(self.port, "/sse/carol")
            retry = re.findall(rb"^retry: (\d+)$", body, re.M)
            self.assertEqual(len(retry), 1, body)
            self.assertGreaterEqual(int(retry[0]), 30_000)
        # Both workers turned some away (20 connections, spread by the kernel).
        for k in (0, 1):
            node.wait_for_log(rf"worker {k}: turned away a stream for carol", 10, "sse.log")
        self.assertEqual(health(self.port)["streams"], 10)
        self.assertNotIn("Traceback", node.log())

    def test_replay_across_workers(self) -> None:
        """
        Streams that come back with Last-Event-ID get what they missed,
        whichever worker they land on (both serve some).
        """
        self.start()
        ids = [self.publish("bob", n) for n in range(1, 6)]
        followers = self.followers("bob", 16, last_id=ids[1])
        wait_until(lambda: all(len(f.got) >= 3 for f in followers), what="the replays")
        counts = [w["streams"] for w in per_worker(self.port).values()]
        self.assertEqual(len(counts), 2)
        self.assertTrue(all(c > 0 for c in counts), counts)
        for follower in followers:
            self.assertEqual(follower.got, list(zip(ids[2:], range(3, 6), strict=True)))

    def test_killed_worker_comes_back_and_nothing_is_lost(self) -> None:
        """
        kill -9 one worker under a publish load: the supervisor starts it
        again; its streams reconnect (Last-Event-ID) to a worker and every
        accepted notification arrives once, in order, on every stream.
        """
        node = self.start()
        followers = self.followers("carol", 20)
        publisher = Publisher(self.port, "carol")
        self.addCleanup(publisher.stop)
        wait_until(lambda: len(publisher.accepted) >= 30, what="publishes before the kill")
        victim = self.worker_pids(node)[0]
        os.kill(victim, signal.SIGKILL)
        node.wait_for_log(rf"worker 0 \(pid {victim}\) died: killed by signal 9", 20)
        wait_until(lambda: self.worker_pids(node)[0] != victim, 20, what="worker 0 restarted")
        node.wait_for_log(rf"worker 0 ready \(pid {self.worker_pids(node)[0]}\)", 30)
        wait_until(lambda: len(publisher.accepted) >= 120, 30, what="publishes after the restart")
        publisher.stop()
        last = max(publisher.accepted)
        wait_until(
            lambda: all(f.numbers() and f.numbers()[-1] >= last for f in followers),
            20,
            what="every stream caught up",
        )
        time.sleep(0.3)
        accepted = sorted(publisher.accepted)
        for follower in followers:
            numbers = follower.numbers()
            self.assertEqual(len(numbers), len(set(numbers)), "a notification arrived twice")
            self.assertEqual(numbers, sorted(numbers), "out of order")
            # Every accepted one arrived; one whose answer the kill cut may too.
            self.assertEqual(sorted(set(numbers) - set(publisher.failed)), accepted)
            self.assertEqual(
                [i for i, n in follower.got if n in publisher.accepted],
                [publisher.accepted[n] for n in accepted],
            )
        self.assertTrue(any(f.reconnects for f in followers), "no stream was on the killed worker")
        self.assertTrue(all(f.reconnects <= 2 for f in followers))
        self.assertLessEqual(len(publisher.failed), 5, publisher.failed)

    def test_graceful_restart_under_load(self) -> None:
        """
        SIGHUP under a steady publish load: the new workers listen before
        the old ones drain; no publish is refused (no refused connection,
        no 5xx), each stream reconnects at most once, and every stream gets
        every notification once, in order.
        """
        node = self.start()
        old = self.worker_pids(node)
        followers = self.followers("dave", 20)
        publisher = Publisher(self.port, "dave")
        self.addCleanup(publisher.stop)
        wait_until(lambda: len(publisher.accepted) >= 20, what="publishes before the reload")
        assert node.process is not None
        node.process.send_signal(signal.SIGHUP)
        node.wait_for_log("reload done: 2 workers replaced", 60)
        new = self.worker_pids(node)
        self.assertTrue(set(old.values()).isdisjoint(new.values()), (old, new))
        count = len(publisher.accepted)
        wait_until(lambda: len(publisher.accepted) >= count + 30, what="publishes after")
        publisher.stop()
        self.assertEqual(publisher.failed, {}, node.log() + node.log("sse.log"))
        last = max(publisher.accepted)
        wait_until(
            lambda: all(f.numbers() and f.numbers()[-1] >= last for f in followers),
            20,
            what="every stream caught up",
        )
        time.sleep(0.3)
        every = list(range(1, last + 1))
        for follower in followers:
            self.assertEqual(follower.numbers(), every)
            self.assertEqual([i for i, _ in follower.got], [publisher.accepted[n] for n in every])
        reconnects = [f.reconnects for f in followers]
        self.assertTrue(all(r <= 1 for r in reconnects), reconnects)
        self.assertEqual(reconnects, [1] * 20)  # every old worker was drained
        # Only the new workers run; the old ones exited.
        for pid in old.values():
            wait_until(lambda pid=pid: not _alive(pid), what=f"old worker {pid} gone")

    def test_a_stream_that_got_nothing_misses_nothing_across_a_reload(self) -> None:
        """
        A stream that received only its connect is drained by a graceful
        restart (SIGHUP); a notification for its user is accepted while it
        is away; it reconnects with the id its connect carried and gets
        that notification, once (cluster mode's position: the last id the
        worker received from Redis, or the one it read there at start).
        """
        node = self.start()
        stream = node.subscribe("/sse/erin")
        self.assertEqual(stream.next_event()["event"], "connect")
        self.assertIsNotNone(stream.last_event_id)
        assert node.process is not None
        node.process.send_signal(signal.SIGHUP)
        assert stream.conn.sock is not None
        stream.conn.sock.settimeout(20)
        self.assertRaises(ConnectionError, lambda: [stream.next_block() for _ in range(99)])
        stream.close()
        node.wait_for_log("reload done: 2 workers replaced", 60)
        missed = self.publish("erin", 1)
        self.publish("frank", 2)
        back = node.subscribe("/sse/erin", stream.resume_headers())
        self.assertEqual(json.loads(back.next_event()["data"])["replay"], "complete")
        event = back.next_event()
        self.assertEqual((event["event"], event["id"]), ("notify", missed))
        back.nothing_more(1.0)
        back.close()

    def test_sigterm_stops_everything(self) -> None:
        """SIGTERM to the supervisor: the workers drain and exit, Redis stops, twistd exits."""
        node = self.start()
        follower = self.followers("erin", 1)[0]
        pids = list(self.worker_pids(node).values())
        redis_pid = int(re.search(r"redis-server started \(pid (\d+)\)", node.log()).group(1))  # type: ignore[union-attr]
        assert node.process is not None
        node.process.send_signal(signal.SIGTERM)
        self.assertIn(node.process.wait(60), (0, -signal.SIGTERM))
        for pid in [*pids, redis_pid]:
            wait_until(lambda pid=pid: not _alive(pid), what=f"pid {pid} gone")
        self.assertIn("redis-server (pid", node.log())
        self.assertRegex(node.log(), r"worker 0 \(pid \d+\) stopped")
        self.assertRegex(node.log(), r"worker 1 \(pid \d+\) stopped")
        follower.stop()
        # One sse.log and one access.log, written by the supervisor, each
        # worker's lines in them.
        sse = node.log("sse.log")
        self.assertRegex(sse, r"\] worker 0: cluster node .+-w0: connecting to Redis")
        self.assertRegex(sse, r"\] worker 1: cluster node .+-w1: connecting to Redis")
        self.assertIn("GET /sse/erin", node.log("access.log"))
        self.assertEqual(
            sorted(os.listdir(os.path.join(node.dir, "log"))),
            ["access.log", "redis.log", "sse.log"],
        )

    def test_ctrl_c_stops_everything_in_order(self) -> None:
        """
        Ctrl-C in the terminal signals the whole foreground process group:
        the supervisor stops as on SIGTERM, and the private redis-server,
        in a session of its own, is stopped by it after the workers, not by
        the terminal before them.
        """
        node = self.start(session=True)
        follower = self.followers("erin", 1)[0]
        redis_pid = int(re.search(r"redis-server started \(pid (\d+)\)", node.log()).group(1))  # type: ignore[union-attr]
        assert node.process is not None
        os.killpg(node.process.pid, signal.SIGINT)
        # (twistd ends by its signal, as a shell expects of Ctrl-C.)
        self.assertIn(node.process.wait(60), (0, -signal.SIGINT), node.log())
        wait_until(lambda: not _alive(redis_pid), what=f"redis-server {redis_pid} gone")
        log = node.log()
        stopped = [m.start() for m in re.finditer(r"worker \d \(pid \d+\) stopped", log)]
        self.assertEqual(len(stopped), 2, log)
        redis_stopped = log.index("redis-server (pid")
        self.assertGreater(redis_stopped, max(stopped), log)
        self.assertNotIn("restart", log[log.index("Received SIGINT") :], log)
        follower.stop()

    def test_without_redis_server_one_line(self) -> None:
        """server.workers 2, no cluster.redis, no redis-server on PATH: one line, exit 1."""
        empty = self.mktemp()
        os.makedirs(empty)
        node = Server(
            self,
            local=workers_config(2),
            listen=f"tcp:port={free_port()}:interface=127.0.0.1",
            env={"PATH": os.path.abspath(empty)},
        )
        status, text = node.run_to_exit()
        self.assertEqual(status, 1, text)
        self.assertEqual(
            text.strip(),
            "notificator: server.workers 2 needs Redis: install the redis-server package"
            " (apt-get install redis-server) or set cluster.redis",
        )

    def test_port_zero_one_line(self) -> None:
        """server.workers 2 on port 0: one line naming the key and the listener."""
        node = Server(self, local=workers_config(2))
        status, text = node.run_to_exit()
        self.assertEqual(status, 1, text)
        self.assertEqual(
            text.strip(),
            "notificator: configuration error: server.workers 2:"
            " 'tcp:0:interface=127.0.0.1' listens on port 0 (a port of its own for each"
            " worker); give a port number",
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie of an exited child is not running.
    try:
        state = subprocess.run(
            ["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except OSError:
        return True
    return bool(state) and not state.startswith("Z")


class PrivilegedPortTests(SynchronousTestCase):
    """
    Started as the service user without C{CAP_NET_BIND_SERVICE}, workers on
    a port below 1024 stop the start with one line whose advice is the
    capability: C{--uid}, the answer without workers, cannot serve them
    (docs/operations.rst, "Workers and ports below 1024").
    """

    UNTESTED = "WORKERS PRIVILEGED PORT TEST NOT RUN"

    def test_the_hint_is_the_capability(self) -> None:
        import sys
        import tempfile

        if listening.first_unprivileged_port() <= 443:
            not_here(f"{self.UNTESTED}: every port is unprivileged on this host")
        user = make_user(self, self.UNTESTED)
        base = tempfile.mkdtemp(prefix="ntf-priv-")
        self.addCleanup(shutil.rmtree, base, True)
        conf = os.path.join(base, "conf")
        data = os.path.join(base, "data")
        os.makedirs(conf)
        os.makedirs(data)
        shutil.chown(data, user, user)
        shutil.copy(os.path.join(PROJECT, "conf", "default.json"), conf)
        with open(os.path.join(conf, "production.json"), "w", encoding="utf-8") as f:
            json.dump(
                {
                    "server": {
                        "protocol": "http",
                        "workers": 2,
                        "log": {"dir": os.path.join(data, "log")},
                    },
                    "sse": {"history": {"dir": os.path.join(data, "history")}},
                    "cluster": {"redis": "redis://127.0.0.1:1/0"},
                },
                f,
            )
        for directory in (base, conf):
            os.chmod(directory, 0o755)
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        argv = [sys.executable, twistd, "--pidfile=", "-n", "notificator", "--config", conf]
        argv += ["--env", "production", "--listen", "tcp:port=443:interface=127.0.0.1"]
        result = subprocess.run(
            as_user(user, argv, self.UNTESTED),
            cwd=base,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertEqual(
            (result.stdout + result.stderr).strip(),
            "notificator: cannot listen on 127.0.0.1 port 443"
            " (tcp:port=443:interface=127.0.0.1): Permission denied: ports below 1024 need"
            " CAP_NET_BIND_SERVICE with server.workers (start as the service user with it,"
            ' docs/operations.rst "Workers and ports below 1024", or use a higher port)',
        )
