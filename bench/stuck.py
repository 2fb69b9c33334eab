# -*- test-case-name: tests.test_bench -*-
"""
Clients that never read, against a real server.

Starts C{twistd -n notificator} from the checkout first on C{PYTHONPATH}
(else this one) on a loopback port, opens one healthy stream (user
C{ok}, read by a thread that times each notification), and runs two
phases of the same publishing (notifications of C{--size} bytes, at
C{--rate} a second, round robin over the stuck users, every tenth to
C{ok} with its send time):

 1. C{--seconds} without stuck clients;
 2. C{--seconds} with C{--clients} raw connections that open
    C{GET /sse/stuck<n>} and never read.

It reports the server's resident memory (C{VmRSS}) before the stuck
clients and at the end, and its peak (C{VmHWM}); the healthy stream's
latency (publish sent to frame read) in each phase; and, where the
server drops slow streams (C{limits.bufferBytes}), how many were dropped
and how long each drop took: from the publish whose answer says
C{"delivered": 0} (the one that would have passed the cap) to the
kernel seeing the connection closed (C{TCP_INFO}, without reading).

Example, comparing two checkouts (keep runs short on a shared machine)::

    python bench/stuck.py
    PYTHONPATH=/path/to/other/checkout python bench/stuck.py
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.dirname(HERE)

TCP_ESTABLISHED = 1


def checkout() -> str:
    """The checkout under test: the first PYTHONPATH entry, else this one."""
    given = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return os.path.abspath(given[0]) if given else PROJECT


def start_server(
    work: str, source: str, stock: bool = False
) -> tuple[subprocess.Popen[bytes], int]:
    conf = os.path.join(work, "conf")
    os.makedirs(conf)
    shutil.copy(os.path.join(source, "conf", "default.json"), conf)
    # The environment it runs (--env stuck): its file must exist.
    with open(os.path.join(conf, "stuck.json"), "w") as f:
        f.write("{}\n")
    with open(os.path.join(conf, "local.json"), "w") as f:
        json.dump(
            {
                "server": {
                    "log": {"dir": os.path.join(work, "log"), "level": "info"},
                    **({"fastChannel": False} if stock else {}),
                },
                # No history: what it keeps (up to sse.history.maxBytes) is
                # not what the stuck streams hold.
                "sse": {"heartbeat": False, "keepalive": 0, "history": {"size": 0}},
            },
            f,
        )
    log = open(os.path.join(work, "twistd.log"), "wb")
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    env = dict(os.environ, PYTHONPATH=source)
    process = subprocess.Popen(
        [sys.executable, twistd, "-n", "--pidfile=", "notificator", "--config", conf]
        + ["--env", "stuck", "--listen", "tcp:0:interface=127.0.0.1"],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=work,
        env=env,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with open(os.path.join(work, "twistd.log"), errors="replace") as f:
            m = re.search(r"starting on (\d+)", f.read())
        if m:
            return process, int(m.group(1))
        if process.poll() is not None:
            raise SystemExit("twistd exited; see " + os.path.join(work, "twistd.log"))
        time.sleep(0.05)
    process.kill()
    raise SystemExit("twistd did not start")


def memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process, in MiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = round(int(value.split()[0]) / 1024, 1)
    return out


class Healthy(threading.Thread):
    """Reads the healthy stream; records each notification's latency."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.sendall(b"GET /sse/ok HTTP/1.1\r\nHost: bench\r\n\r\n")
        self.latencies: list[float] = []
        self.stop = False

    def run(self) -> None:
        buffer = b""
        self.sock.settimeout(0.5)
        while not self.stop:
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            now = time.monotonic()
            for sent in re.findall(rb'"sent": ?([0-9.]+)', buffer):
                self.latencies.append((now - float(sent)) * 1000)
            buffer = buffer[buffer.rfind(b"\n") + 1 :]


def summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 2)

    return {"count": len(values), "p50_ms": rank(0.5), "p99_ms": rank(0.99), "max_ms": rank(1.0)}


class DropWatch(threading.Thread):
    """Times each drop: from its publish's answer to the kernel seeing the connection closed."""

    def __init__(self, sockets: dict[str, socket.socket]) -> None:
        super().__init__(daemon=True)
        self.sockets = sockets
        self.pending: dict[str, float] = {}
        self.took_ms: list[float] = []
        self.lock = threading.Lock()
        self.stop = False

    def dropped(self, user: str, at: float) -> None:
        with self.lock:
            self.pending.setdefault(user, at)

    def run(self) -> None:
        while not self.stop or self.pending:
            with self.lock:
                pending = list(self.pending.items())
            for user, at in pending:
                state = self.sockets[user].getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
                now = time.monotonic()
                if state != TCP_ESTABLISHED or now - at > 10:
                    self.took_ms.append((now - at) * 1000)
                    with self.lock:
                        del self.pending[user]
            time.sleep(0.0005)


def publish_phase(
    port: int,
    seconds: float,
    rate: float,
    size: int,
    users: list[str],
    healthy: Healthy,
    watch: DropWatch | None = None,
) -> dict[str, Any]:
    """Publish for C{seconds}; return the dropped users and when each drop's publish came back."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    pad = "x" * size
    dropped: dict[str, float] = {}
    start = time.monotonic()
    n = 0
    mark = len(healthy.latencies)
    while time.monotonic() - start < seconds:
        due = start + n / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if n % 10 == 0 or not users:
            user, data = "ok", {"sent": time.monotonic()}
        else:
            user, data = users[n % len(users)], pad
        body = json.dumps({"id": f"notify_{user}", "data": data})
        conn.request("POST", "/webNotification", body, {"Content-Type": "application/json"})
        answer = json.loads(conn.getresponse().read())
        if user != "ok" and answer["delivered"] == 0 and user not in dropped:
            dropped[user] = time.monotonic()
            if watch is not None:
                watch.dropped(user, dropped[user])
        n += 1
    conn.close()
    time.sleep(0.5)
    return {
        "published": n,
        "dropped_at": dropped,
        "latency": summary(healthy.latencies[mark:]),
    }


def run(
    clients: int, seconds: float, rate: float, size: int, rcvbuf: int, stock: bool = False
) -> dict[str, Any]:
    source = checkout()
    work = tempfile.mkdtemp(prefix="notificator-stuck-")
    process, port = start_server(work, source, stock)
    stuck: dict[str, socket.socket] = {}
    try:
        healthy = Healthy(port)
        healthy.start()
        time.sleep(0.5)
        quiet = publish_phase(port, seconds, rate, size, [], healthy)
        before = memory(process.pid)
        for i in range(clients):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if rcvbuf:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            s.settimeout(10)
            s.connect(("127.0.0.1", port))
            s.sendall(b"GET /sse/stuck%d HTTP/1.1\r\nHost: bench\r\n\r\n" % i)
            stuck[f"stuck{i}"] = s
        time.sleep(0.5)
        watch = DropWatch(stuck)
        watch.start()
        loaded = publish_phase(port, seconds, rate, size, list(stuck), healthy, watch)
        after = memory(process.pid)
        watch.stop = True
        watch.join(15)
        drops = watch.took_ms
        healthy.stop = True
        closed = sum(
            1
            for s in stuck.values()
            if s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] != TCP_ESTABLISHED
        )
        return {
            "notificator": source,
            "clients": clients,
            "rcvbuf": rcvbuf,
            "channel": "stock" if stock else "fast",
            "published_per_phase": [quiet["published"], loaded["published"]],
            "rss_mib_before_stuck": before["VmRSS"],
            "rss_mib_end": after["VmRSS"],
            "rss_mib_peak": after["VmHWM"],
            "rss_mib_added": round(after["VmRSS"] - before["VmRSS"], 1),
            "stuck_closed_by_server": closed,
            "drop_ms": summary(drops) if drops else None,
            "healthy_latency_quiet": quiet["latency"],
            "healthy_latency_with_stuck": loaded["latency"],
        }
    finally:
        for s in stuck.values():
            s.close()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--clients", type=int, default=100, help="clients that never read (100)")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per phase (8)")
    parser.add_argument("--rate", type=float, default=400.0, help="publishes a second (400)")
    parser.add_argument("--size", type=int, default=32768, help="notification data bytes (32768)")
    parser.add_argument(
        "--rcvbuf",
        type=int,
        default=4096,
        help="SO_RCVBUF of the stuck clients (4096; 0: the system's): a small one keeps"
        " the kernels' buffers, which are not the server's memory, from taking the"
        " notifications first",
    )
    parser.add_argument(
        "--stock",
        action="store_true",
        help="serve with twisted.web's stock HTTP channel (server.fastChannel false)",
    )
    args = parser.parse_args(argv)
    result = run(args.clients, args.seconds, args.rate, args.size, args.rcvbuf, args.stock)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
