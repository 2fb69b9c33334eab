# -*- test-case-name: tests.test_bench -*-
"""
What cluster mode costs: publish->deliver latency and server CPU per
publish with two nodes and a local Redis, against one node without Redis.

Every run starts its own servers on 127.0.0.1 and free ports, from this
checkout's C{conf/*.json} plus a C{local.json} (as C{bench/local.py}), and
stops them by their PIDs:

 - C{single}: one node, no Redis (the shipped single-node mode, history on
   disk); the streams and the publishes on it.
 - C{cluster}: a C{redis-server} (no persistence) and two nodes A and B in
   cluster mode; the streams on A, the publishes to B, so every
   notification crosses Redis to the other node.
 - C{cluster-same} (not by default): the streams and the publishes on A.

Each run opens C{--n} streams (one user each), then publishes C{--m}
notifications at C{--rate}/s from C{--k} keep-alive clients (the C{latency}
phase of C{bench/loadgen.py}: latency from writing the POST to parsing the
event at the user's socket; lost and duplicated events counted), and reads
the CPU (utime+stime) of every server process over that phase: per publish,
for each process and in all.

With two or more CPUs the servers (nodes and Redis) are pinned to CPU 0
and the generator to CPU 1 (C{--no-pin} to turn that off).

Example (from the checkout)::

    python bench/cluster.py --n 1000 --m 5000 --json bench/results/cluster-1000.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import loadgen  # noqa: E402
import local  # noqa: E402


class RedisServer:
    """
    A C{redis-server} without persistence on a free loopback port, and
    on a Unix socket (which L{url} gives with C{--unix}: how the private
    Redis of C{server.workers} is reached).
    """

    def __init__(self, opt: argparse.Namespace, workdir: str) -> None:
        self.port = local.free_port()
        self.dir = os.path.join(workdir, "redis")
        os.makedirs(self.dir)
        self.command = [opt.redis_server, "--port", str(self.port), "--bind", "127.0.0.1"]
        self.command += ["--save", "", "--appendonly", "no", "--dir", self.dir]
        self.socket = os.path.join(self.dir, "redis.sock")
        self.command += ["--unixsocket", self.socket, "--unixsocketperm", "700"]
        self.unix = opt.unix
        self.cpu = opt.server_cpu
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.unix:
            return f"unix://{self.socket}"
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 10.0) -> None:
        cpu = self.cpu

        def pin() -> None:
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})

        with open(os.path.join(self.dir, "redis.log"), "wb") as out:
            self.process = subprocess.Popen(
                self.command, stdout=out, stderr=subprocess.STDOUT, preexec_fn=pin
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"cluster: redis-server exited {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise SystemExit(f"cluster: redis-server did not answer within {timeout} s")

    def stop(self) -> None:
        local.stop_process(self.process)

    def commandstats(self) -> dict[str, dict[str, float]]:
        """
        C{INFO commandstats}: per command, its calls and the CPU Redis
        spent in them (us), e.g. how many runs of the publish script.
        """
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(b"INFO commandstats\r\n")
            data = b""
            while not data.endswith(b"\r\n") or data.count(b"\r\n") < 2:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        out: dict[str, dict[str, float]] = {}
        for line in data.decode().splitlines():
            name, _, fields = line.partition(":")
            if name.startswith("cmdstat_"):
                values = dict(f.split("=", 1) for f in fields.split(","))
                out[name[8:]] = {k: float(values[k]) for k in ("calls", "usec") if k in values}
        return out


class Node(local.LocalServer):
    """A node: C{bench/local.py}'s server, in cluster mode when C{redis_url} is given."""

    def __init__(
        self, opt: argparse.Namespace, tag: str, workdir: str, redis_url: str | None
    ) -> None:
        super().__init__(opt, 0, tag, workdir)
        path = os.path.join(self.dir, "conf", "local.json")
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        if redis_url is not None:
            doc["cluster"] = {"redis": redis_url, "node": tag}
        with open(path, "w", encoding="utf-8") as f:
            json.dump(doc, f)

    def wait_healthy(self, timeout: float = 20.0) -> None:
        """Wait until C{/health} says 200 (in cluster mode: Redis reached)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    s.sendall(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                    if s.recv(64).split(b"\r\n")[0].endswith(b" 200 OK"):
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"cluster: {self.dir} not healthy within {timeout} s")


class CrossBench(loadgen.Bench):
    """loadgen's phases, with the publishes sent to another node than the streams."""

    delivered_counts = False

    def __init__(self, opt: argparse.Namespace, publish_port: int) -> None:
        super().__init__(opt)
        self.publish_port = publish_port

    async def _client(self, i: int) -> loadgen.PostClient:
        loop = asyncio.get_running_loop()
        _, client = await asyncio.wait_for(
            loop.create_connection(
                lambda: loadgen.PostClient(
                    f"{self.base}/webNotification".encode(), self.host_header
                ),
                self.connect_host,
                self.publish_port,
                local_addr=self._local(i + 7),
            ),
            timeout=10,
        )
        return client


async def measure(bench: loadgen.Bench, pids: dict[str, int]) -> dict[str, Any]:
    """Connect, then the latency phase with each server process's CPU over it."""
    out: dict[str, Any] = {}
    try:
        out["connect"] = await bench.connect()
        if not out["connect"]["connected"]:
            raise RuntimeError("no stream connected")
        await asyncio.sleep(1)
        before = {name: loadgen.server_cpu_s(pid) or 0.0 for name, pid in pids.items()}
        out["latency"] = latency = await bench.latency()
        after = {name: loadgen.server_cpu_s(pid) or 0.0 for name, pid in pids.items()}
        accepted = max(1, latency["accepted"])
        cpu = {name: after[name] - before[name] for name in pids}
        out["cpu_s"] = {name: round(v, 3) for name, v in cpu.items()}
        out["cpu_us_per_publish"] = {
            **{name: round(v * 1e6 / accepted, 1) for name, v in cpu.items()},
            "total": round(sum(cpu.values()) * 1e6 / accepted, 1),
        }
    except Exception as e:  # reported in the result, not as a traceback
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        for s in bench.streams:
            s.close()
    return out


def run_mode(opt: argparse.Namespace, mode: str, workdir: str) -> dict[str, Any]:
    redis = None
    nodes: list[Node] = []
    try:
        if mode == "single":
            nodes.append(Node(opt, "single", workdir, None))
        else:
            redis = RedisServer(opt, os.path.join(workdir, mode))
            redis.start()
            nodes += [Node(opt, f"{mode}-{tag}", workdir, redis.url) for tag in ("a", "b")]
        for node in nodes:
            node.start()
        for node in nodes:
            node.wait_healthy()
        stream_node = nodes[0]
        publish_node = nodes[1] if mode == "cluster" else nodes[0]
        gen = local.generator_options(
            opt, stream_node.port, stream_node.pid, "connect,latency", 0, f"{opt.label}-{mode}"
        )
        bench = (
            CrossBench(gen, publish_node.port)
            if publish_node is not stream_node
            else loadgen.Bench(gen)
        )
        if redis is None:
            pids = {"node": nodes[0].pid}
        else:
            pids = {"node A": nodes[0].pid, "node B": nodes[1].pid, "redis": redis.pid}
        loop = loadgen.new_loop(opt.no_uvloop)
        try:
            result = loop.run_until_complete(measure(bench, pids))
        finally:
            loop.run_until_complete(asyncio.sleep(0.2))
            loop.close()
        result["mode"] = mode
        if redis is not None:
            # Counted since Redis started: the streams opened, then the publishes.
            stats = redis.commandstats()
            result["redis_commandstats"] = stats
            runs = sum(stats.get(c, {}).get("calls", 0) for c in ("evalsha", "eval"))
            if runs:
                result["publishes_per_script_run"] = round(opt.m / runs, 2)
        return result
    finally:
        for node in nodes:
            node.stop()
        if redis is not None:
            redis.stop()


def table(results: list[dict[str, Any]]) -> str:
    rows = [("mode", "latency p50/p99 ms", "POST rtt p50 ms", "lost/dup", "CPU us per publish")]
    for r in results:
        lat = r.get("latency", {})
        ms = lat.get("latency_ms", {})
        rtt = lat.get("post_rtt_ms", {})
        cpu = r.get("cpu_us_per_publish", {})
        cpu_text = ", ".join(f"{k} {v:g}" for k, v in cpu.items() if k != "total")
        rows.append(
            (
                r["mode"],
                f"{ms.get('p50')} / {ms.get('p99')}",
                str(rtt.get("p50")),
                f"{lat.get('lost')}/{lat.get('duplicates')}",
                f"{cpu.get('total')} ({cpu_text})" if cpu else r.get("error", "-"),
            )
        )
        if "publishes_per_script_run" in r:
            rows[-1] = rows[-1][:-1] + (
                f"{rows[-1][-1]}; {r['publishes_per_script_run']} publishes per script run",
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows
    )


def options(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="What cluster mode costs, on loopback.")
    a = p.add_argument
    a("--modes", default="single,cluster", help="of single, cluster, cluster-same")
    a("--n", type=int, default=1000, help="streams")
    a("--m", type=int, default=5000, help="notifications")
    a("--rate", type=float, default=500, help="notifications per second")
    a("--k", type=int, default=4, help="keep-alive POST clients")
    a("--unix", action="store_true", help="nodes reach Redis on its Unix socket, not TCP")
    a("--redis-server", default=shutil.which("redis-server") or "/usr/bin/redis-server")
    a("--project", default=local.PROJECT, help="checkout whose conf/ to use (default: this one)")
    a("--twistd", default="", help="twistd command (default: the one beside this Python)")
    a("--env", default="", help="config environment (--env of twistd notificator)")
    a("--log-level", default="info")
    a("--no-pin", action="store_true", help="do not pin servers and generator to CPUs 0 and 1")
    a("--no-uvloop", action="store_true")
    a("--max-total", type=float, default=600, help="s, hard limit per run")
    a("--label", default="", help="name of the runs in the JSON")
    a("--json", help="write the results here")
    a("--keep", action="store_true", help="keep the temporary config and log dirs")
    opt = p.parse_args(argv)
    modes = [m.strip() for m in opt.modes.split(",") if m.strip()]
    if not modes or set(modes) - {"single", "cluster", "cluster-same"}:
        p.error("--modes: single, cluster, cluster-same")
    if not os.path.exists(opt.redis_server) and any(m != "single" for m in modes):
        p.error(f"no redis-server at {opt.redis_server} (apt-get install redis-server)")
    opt.modes = modes
    opt.label = opt.label or f"cluster-{opt.n}"
    # What bench/local.py's server and generator options expect.
    opt.port, opt.burst_c, opt.burst_t, opt.idle_t = 0, 1, 1, 1
    local.pin(opt)
    return opt


def main(argv: list[str] | None = None) -> int:
    opt = options(argv)
    local.raise_fd_limit(opt.n)
    workdir = tempfile.mkdtemp(prefix="notificator-bench-cluster-")
    results = []
    try:
        for mode in opt.modes:
            results.append(run_mode(opt, mode, workdir))
            time.sleep(1)
    finally:
        if opt.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if opt.json:
        with open(opt.json, "w", encoding="utf-8") as f:
            json.dump(
                {
                    "label": opt.label,
                    "machine": local.machine(),
                    "pinned": opt.server_cpu is not None,
                    "settings": {
                        k: v for k, v in vars(opt).items() if k not in ("json", "server_cpu")
                    },
                    "runs": results,
                },
                f,
                indent=2,
            )
            f.write("\n")
    print(table(results))
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
