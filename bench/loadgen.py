# -*- test-case-name: tests.test_bench -*-
"""
Load generator for a running Notificator (or any server speaking its
protocol): opens N event streams for N users, publishes through
C{POST /webNotification} at a fixed rate and in a burst, and measures what a
user choosing a notification server asks about.

Phases (C{--phases}, in this order; C{connect} is required):

 - C{connect}: open N streams (C{GET /sse/<user>}, or C{GET /sse} with the
   user cookie) with at most C{--connect-concurrency} waiting for their
   C{connect} event at once.  Time to open all, streams per second, and the
   server's RSS before and after (C{--pid}) -> KB per stream.
 - C{latency}: C{--m} notifications at C{--rate}/s to random connected users
   over C{--k} keep-alive clients.  Publish->deliver latency is measured in
   this one process from writing the POST to parsing the event at that
   user's socket; lost, duplicated and misrouted events are counted.
 - C{burst}: C{--burst-c} keep-alive clients POST back to back for
   C{--burst-t} s: accepted and delivered POST/s, errors, latency under
   saturation.
 - C{idle}: server CPU over C{--idle-t} s with the streams open; heartbeat
   events received against the number expected, and how late they arrived
   (their C{time} field against this machine's clock).

Every phase reports its wall time, the server's CPU (utime+stime of
C{--pid} and its children, from C{/proc}), and this generator's own CPU and
event-loop lag, so a saturated generator is never mistaken for a slow
server.  Every loop is bounded in count and time.

Run: C{python bench/loadgen.py --url http://127.0.0.1:3000 --pid PID --n 1000}
(C{--json FILE} writes the full result).  Only loopback targets are allowed
unless C{--allow-remote} is given for a host of your own.

Standard library only (uses uvloop when it is installed).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import math
import os
import random
import re
import resource
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote, urlsplit

# -- statistics -------------------------------------------------------------


def percentile(ordered: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an ascending list (as load.js does)."""
    if not ordered:
        return None
    i = min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))
    return ordered[i]


def summary(values: Iterable[float], digits: int = 3) -> dict[str, Any]:
    """Count, mean, p50, p90, p99 and max of C{values}."""
    s = sorted(values)
    if not s:
        return {"count": 0}
    r = lambda x: None if x is None else round(x, digits)  # noqa: E731
    return {
        "count": len(s),
        "mean": r(sum(s) / len(s)),
        "p50": r(percentile(s, 50)),
        "p90": r(percentile(s, 90)),
        "p99": r(percentile(s, 99)),
        "max": r(s[-1]),
    }


# -- the server process, from /proc -----------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(name))
    out = [pid]
    for p in out:
        out.extend(children.get(p, ()))
        if len(out) > 10000:
            break
    return out


def server_rss_kb(pid: int | None) -> int | None:
    """VmRSS of C{pid} and its descendants, in KiB (L{None} without a pid)."""
    if not pid:
        return None
    total = 0
    for p in _descendants(pid):
        try:
            with open(f"/proc/{p}/status", "rb") as f:
                m = re.search(rb"VmRSS:\s+(\d+)\s+kB", f.read())
        except OSError:
            continue
        if m:
            total += int(m.group(1))
    return total


def server_cpu_s(pid: int | None) -> float | None:
    """utime+stime of C{pid} and its descendants, in seconds."""
    if not pid:
        return None
    ticks = 0
    for p in _descendants(pid):
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / CLK_TCK


def alive(pid: int | None) -> bool:
    if not pid:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def own_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class Meter:
    """
    Per-phase resources: wall time, server CPU, this generator's CPU, and
    its event-loop lag (how late a 5 ms ticker wakes up).
    """

    TICK = 0.005

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.t0 = time.perf_counter()
        self.server0 = server_cpu_s(pid)
        self.own0 = own_cpu_s()
        self.lags: list[float] = []
        self._task = asyncio.ensure_future(self._tick())

    async def _tick(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(self.TICK)
            if len(self.lags) < 1_000_000:
                self.lags.append((time.perf_counter() - t - self.TICK) * 1000)

    def stop(self) -> dict[str, Any]:
        self._task.cancel()
        wall = time.perf_counter() - self.t0
        own = own_cpu_s() - self.own0
        server = server_cpu_s(self.pid)
        lag = sorted(self.lags)
        out: dict[str, Any] = {
            "wall_s": round(wall, 3),
            "server_cpu_s": None,
            "server_cpu_pct": None,
            "loadgen_cpu_s": round(own, 3),
            "loadgen_cpu_pct": round(100 * own / wall, 1) if wall > 0 else None,
            "loadgen_loop_lag_p99_ms": round(percentile(lag, 99) or 0.0, 3),
        }
        if server is not None and self.server0 is not None:
            out["server_cpu_s"] = round(server - self.server0, 3)
            out["server_cpu_pct"] = round(100 * (server - self.server0) / wall, 1)
        return out


# -- HTTP/1.1 framing -------------------------------------------------------


def parse_head(head: bytes) -> tuple[int, dict[bytes, bytes]]:
    """Status code and lower-cased headers of a response head."""
    lines = head.split(b"\r\n")
    m = re.match(rb"HTTP/1\.[01] (\d{3})", lines[0])
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return (int(m.group(1)) if m else 0), headers


class Dechunker:
    """Incremental decoder of a chunked HTTP/1.1 body."""

    def __init__(self) -> None:
        self._raw = b""
        self._left = -1  # -1: expecting a size line
        self.ended = False

    def feed(self, data: bytes) -> bytes:
        raw = self._raw + data if self._raw else data
        out = []
        pos, n = 0, len(raw)
        while pos < n and not self.ended:
            if self._left < 0:
                e = raw.find(b"\r\n", pos)
                if e < 0:
                    break
                size = int(raw[pos:e].split(b";", 1)[0], 16)
                pos = e + 2
                if size == 0:
                    self.ended = True
                    break
                self._left = size
            if self._left > 0:
                take = min(self._left, n - pos)
                out.append(raw[pos : pos + take])
                pos += take
                self._left -= take
                if self._left > 0:
                    break
            if n - pos < 2:
                break
            pos += 2  # the CRLF after the chunk data
            self._left = -1
        self._raw = raw[pos:]
        return b"".join(out)


def parse_event(block: bytes) -> tuple[bytes, bytes]:
    """The event name and joined data of one SSE block (WHATWG rules)."""
    event = b"message"
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            data.append(line[6:] if line[5:6] == b" " else line[5:])
        elif line.startswith(b"event:"):
            event = line[7:] if line[6:7] == b" " else line[6:]
    return event, b"\n".join(data)


# -- bookkeeping ------------------------------------------------------------

_SEQ = re.compile(rb'"s"\s*:\s*(\d+)')
_TIME = re.compile(rb'"time"\s*:\s*(\d+)')
_DELIVERED = re.compile(rb'"delivered"\s*:\s*(\d+)')


class Record:
    """Who each notification was for, when it left and when it arrived."""

    def __init__(self, event: bytes) -> None:
        self.event = event
        self.target: list[int] = []  # seq -> stream index
        self.sent: list[float] = []  # seq -> perf_counter at write
        self.got: list[float | None] = []
        self.latency: list[float] = []  # ms, of the current phase
        self.received = self.dup = self.misrouted = self.unknown = 0
        self.last = 0.0
        self.heartbeats = 0
        self.hb_lag: list[float] = []
        self.other_events = 0

    def new(self, index: int) -> int:
        seq = len(self.target)
        self.target.append(index)
        self.sent.append(0.0)
        self.got.append(None)
        return seq

    def begin(self) -> None:
        self.latency = []
        self.received = self.dup = self.misrouted = self.unknown = 0
        self.last = 0.0

    def on_event(self, index: int, event: bytes, data: bytes) -> None:
        if event == self.event:
            now = time.perf_counter()
            m = _SEQ.search(data)
            seq = int(m.group(1)) if m else -1
            if not 0 <= seq < len(self.target):
                self.unknown += 1
            elif self.target[seq] != index:
                self.misrouted += 1
            elif self.got[seq] is not None:
                self.dup += 1
            else:
                self.got[seq] = now
                self.received += 1
                self.last = now
                self.latency.append((now - self.sent[seq]) * 1000)
        elif event == b"heartbeat":
            self.heartbeats += 1
            m = _TIME.search(data)
            if m and len(self.hb_lag) < 2_000_000:
                self.hb_lag.append(time.time() * 1000 - int(m.group(1)))
        else:
            self.other_events += 1


# -- protocols --------------------------------------------------------------


class SSEStream(asyncio.Protocol):
    """One EventSource-like client: reads the head, then SSE events."""

    def __init__(self, index: int, record: Record, request: bytes) -> None:
        self.index = index
        self.record = record
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.head: bytes | None = b""
        self.chunks: Dechunker | None = None
        self.buf = b""
        self.connected = False
        self.closed = False
        self.status = 0
        self.t0 = time.perf_counter()
        self.connect_ms = 0.0
        self.ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self.head is not None:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > 65536:
                    self._fail("response head too long")
                return
            self.status, headers = parse_head(self.head[:end])
            data, self.head = self.head[end + 4 :], None
            if self.status != 200:
                self._fail(f"status {self.status}")
                return
            if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
                self.chunks = Dechunker()
        if self.chunks is not None:
            data = self.chunks.feed(data)
        buf = self.buf + data if self.buf else data
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        end = buf.find(b"\n\n")
        while end >= 0:
            event, payload = parse_event(buf[:end])
            buf = buf[end + 2 :]
            if event == b"connect":
                if not self.connected:
                    self.connected = True
                    self.connect_ms = (time.perf_counter() - self.t0) * 1000
                    if not self.ready.done():
                        self.ready.set_result("ok")
            else:
                self.record.on_event(self.index, event, payload)
            end = buf.find(b"\n\n")
        self.buf = buf
        if len(self.buf) > 1 << 20:
            self._fail("event larger than 1 MiB")

    def _fail(self, why: str) -> None:
        if not self.ready.done():
            self.ready.set_result(why)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_result("closed")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class PostClient(asyncio.Protocol):
    """A keep-alive HTTP/1.1 client for C{POST /webNotification}, one request at a time."""

    def __init__(self, path: bytes, host: bytes) -> None:
        self.prefix = (
            b"POST " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\n"
            b"Content-Type: application/x-www-form-urlencoded; charset=UTF-8\r\n"
            b"Content-Length: "
        )
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.length = -1
        self.head: tuple[int, dict[bytes, bytes]] | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def post(self, body: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None and self.waiter is None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(self.prefix + b"%d\r\n\r\n" % len(body) + body)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            if self.head is None:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                status, headers = parse_head(self.buf[:end])
                self.buf = self.buf[end + 4 :]
                self.head = (status, headers)
                self.length = int(headers.get(b"content-length", b"-1"))
                if self.length < 0 and b"chunked" in headers.get(b"transfer-encoding", b""):
                    self.length = -2
            if self.length == -2:
                end = self.buf.find(b"\r\n0\r\n\r\n")
                if end < 0:
                    return
                body, self.buf = self.buf[: end + 2], self.buf[end + 7 :]
            elif self.length >= 0:
                if len(self.buf) < self.length:
                    return
                body, self.buf = self.buf[: self.length], self.buf[self.length :]
            else:
                return  # body until close: finished by connection_lost
            status, headers = self.head
            self.head = None
            if b"close" in headers.get(b"connection", b"").lower() and self.transport:
                self.transport.close()
                self.lost = True
            waiter, self.waiter = self.waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_result((status, body))
            if not self.buf:
                return

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((0, b"connection lost"))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


# -- the benchmark ----------------------------------------------------------

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Bench:
    """
    The phases, sharing the open streams and the record.

    @cvar delivered_counts: a publish answered with C{"delivered": 0} has no
        stream to reach (not waited for); false when the publishes go to
        another node than the streams (cluster mode: C{bench/cluster.py}).
    """

    delivered_counts = True

    def __init__(self, opt: argparse.Namespace) -> None:
        self.opt = opt
        url = urlsplit(opt.url)
        if url.scheme != "http":
            raise SystemExit("loadgen: only http:// URLs are supported")
        self.host = url.hostname or "127.0.0.1"
        if not is_loopback(self.host) and not opt.allow_remote:
            raise SystemExit(
                f"loadgen: refusing non-loopback target {self.host} (use --allow-remote for a host of your own)"
            )
        self.connect_host = "127.0.0.1" if self.host == "localhost" else self.host
        self.port = url.port or 80
        self.base = url.path.rstrip("/")
        self.host_header = url.netloc.encode("idna")
        self.record = Record(opt.event.encode())
        self.streams: list[SSEStream] = []
        self.pid = opt.pid or None
        src = opt.src_ips
        v4_loopback = re.match(r"^127\.\d+\.\d+\.\d+$", self.connect_host) is not None
        self.sources = (
            [f"127.0.0.{1 + i}" for i in range(max(1, min(254, src)))]
            if v4_loopback and src > 1
            else []
        )
        self.deadline = time.monotonic() + opt.max_total

    def _local(self, i: int) -> tuple[str, int] | None:
        return (self.sources[i % len(self.sources)], 0) if self.sources else None

    def _sse_request(self, user: str) -> bytes:
        if self.opt.mode == "cookie":
            path = f"{self.base}/sse"
            cookie = f"Cookie: {self.opt.cookie}={quote(user, safe='')}\r\n"
        else:
            path = f"{self.base}/sse/{quote(user, safe='')}"
            cookie = ""
        return (
            f"GET {path} HTTP/1.1\r\nHost: {self.host_header.decode()}\r\n"
            f"Accept: text/event-stream\r\nCache-Control: no-cache\r\n{cookie}\r\n"
        ).encode()

    def _time_left(self, limit: float) -> float:
        return max(0.0, min(limit, self.deadline - time.monotonic()))

    # -- connect ------------------------------------------------------------

    async def connect(self) -> dict[str, Any]:
        opt, loop = self.opt, asyncio.get_running_loop()
        rss_before = server_rss_kb(self.pid)
        meter = Meter(self.pid)
        failures: dict[str, int] = {}
        indices = iter(range(opt.n))
        t0 = time.perf_counter()
        phase_end = time.monotonic() + self._time_left(opt.connect_timeout)

        async def worker() -> None:
            for i in indices:
                if time.monotonic() > phase_end or not alive(self.pid):
                    return
                stream = SSEStream(i, self.record, self._sse_request(f"{opt.user_prefix}{i}"))
                self.streams.append(stream)
                try:
                    await asyncio.wait_for(
                        loop.create_connection(
                            lambda: stream,  # noqa: B023 (awaited in this iteration)
                            self.connect_host,
                            self.port,
                            local_addr=self._local(i),
                        ),
                        timeout=max(0.1, phase_end - time.monotonic()),
                    )
                    why = await asyncio.wait_for(
                        stream.ready, timeout=max(0.1, phase_end - time.monotonic())
                    )
                except (OSError, asyncio.TimeoutError) as e:
                    why = type(e).__name__
                    stream.close()
                if why != "ok":
                    failures[why] = failures.get(why, 0) + 1

        await asyncio.gather(
            *(worker() for _ in range(max(1, min(opt.connect_concurrency, opt.n))))
        )
        elapsed = time.perf_counter() - t0
        resources = meter.stop()
        await asyncio.sleep(self._time_left(opt.settle))
        rss_after = server_rss_kb(self.pid)
        connected = [s for s in self.streams if s.connected]
        return {
            "requested": opt.n,
            "connected": len(connected),
            "failed": sum(failures.values()),
            "failures": failures,
            "time_all_s": round(elapsed, 3),
            "rate_per_s": round(len(connected) / elapsed, 1) if elapsed > 0 else None,
            "connect_ms": summary(s.connect_ms for s in connected),
            "rss_before_kb": rss_before,
            "rss_after_kb": rss_after,
            "kb_per_conn": (
                round((rss_after - rss_before) / len(connected), 2)
                if rss_before is not None and rss_after is not None and connected
                else None
            ),
            **resources,
        }

    # -- publishing -----------------------------------------------------------

    def _pick(self) -> int:
        n = len(self.streams)
        for _ in range(20):
            i = random.randrange(n)
            s = self.streams[i]
            if s.connected and not s.closed:
                return i
        for s in self.streams:
            if s.connected and not s.closed:
                return s.index
        raise RuntimeError("no open stream to publish to")

    def _body(self, seq: int) -> bytes:
        user = f"{self.opt.user_prefix}{self.record.target[seq]}"
        data = '{"s":%d,"t":%.3f,"pad":"benchmark notification"}' % (seq, time.time() * 1000)
        return (
            "id=" + quote(f"{self.opt.event}_{user}", safe="") + "&data=" + quote(data, safe="")
        ).encode()

    async def _client(self, i: int) -> PostClient:
        loop = asyncio.get_running_loop()
        _, client = await asyncio.wait_for(
            loop.create_connection(
                lambda: PostClient(f"{self.base}/webNotification".encode(), self.host_header),
                self.connect_host,
                self.port,
                local_addr=self._local(i + 7),
            ),
            timeout=10,
        )
        return client

    async def _drain(self, expected: Callable[[], int], timeout: float) -> bool:
        end = time.monotonic() + self._time_left(timeout)
        while time.monotonic() < end:
            if self.record.received >= expected():
                return True
            await asyncio.sleep(0.02)
        return self.record.received >= expected()

    async def _publish_loop(
        self,
        client_index: int,
        take: Callable[[], Any],
        stats: dict[str, Any],
        seqs: list[int],
        end: float,
    ) -> None:
        """One keep-alive client: POST what C{take} yields until it yields None or time is up."""
        rec = self.record
        client: PostClient | None = None
        while time.monotonic() < end:
            item = await take()
            if item is None:
                return
            seq, due = item
            if client is None or client.lost:
                if client is not None:
                    stats["reconnects"] += 1
                client = await self._client(client_index)
            body = self._body(seq)
            seqs.append(seq)
            t = time.perf_counter()
            if due is not None:
                stats["lag"].append((t - due) * 1000)
            rec.sent[seq] = t
            try:
                status, reply = await asyncio.wait_for(
                    client.post(body), timeout=max(0.1, end - time.monotonic())
                )
            except asyncio.TimeoutError:
                status, reply = 0, b"timeout"
                client.close()
                client.lost = True
                client.waiter = None
            stats["rtt"].append((time.perf_counter() - t) * 1000)
            if 200 <= status < 300:
                stats["accepted"] += 1
                m = _DELIVERED.search(reply)
                if m and int(m.group(1)) == 0 and self.delivered_counts:
                    stats["undelivered"] += 1
            else:
                stats["errors"] += 1
                kind = f"http {status}" if status else reply.decode("latin-1")
                stats["error_kinds"][kind] = stats["error_kinds"].get(kind, 0) + 1
                if not status:
                    await asyncio.sleep(0.01)
        if client is not None:
            client.close()

    @staticmethod
    def _stats() -> dict[str, Any]:
        return {
            "accepted": 0,
            "errors": 0,
            "error_kinds": {},
            "undelivered": 0,
            "reconnects": 0,
            "lag": [],
            "rtt": [],
        }

    def _outcome(self, seqs: list[int]) -> dict[str, Any]:
        rec = self.record
        return {
            "received": rec.received,
            "lost": sum(1 for s in seqs if rec.got[s] is None),
            "duplicates": rec.dup,
            "misrouted": rec.misrouted,
            "unknown": rec.unknown,
            "latency_ms": summary(rec.latency),
        }

    async def latency(self) -> dict[str, Any]:
        opt, rec = self.opt, self.record
        rec.begin()
        stats, seqs = self._stats(), []
        queue: asyncio.Queue[Any] = asyncio.Queue()
        meter = Meter(self.pid)
        t0 = time.perf_counter()
        end = time.monotonic() + self._time_left(opt.m / opt.rate * 3 + 30)

        async def schedule() -> None:
            for i in range(opt.m):
                due = t0 + i / opt.rate
                wait = due - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                if time.monotonic() > end or not alive(self.pid):
                    break
                queue.put_nowait((rec.new(self._pick()), due))
            for _ in range(opt.k):
                queue.put_nowait(None)

        await asyncio.gather(
            schedule(), *(self._publish_loop(i, queue.get, stats, seqs, end) for i in range(opt.k))
        )
        send_s = time.perf_counter() - t0
        await self._drain(lambda: stats["accepted"] - stats["undelivered"], opt.drain_timeout)
        resources = meter.stop()
        return {
            "notifications": opt.m,
            "rate_per_s": opt.rate,
            "clients": opt.k,
            "send_duration_s": round(send_s, 3),
            "achieved_rate_per_s": round(len(seqs) / send_s, 1),
            "accepted": stats["accepted"],
            "post_errors": stats["errors"],
            "post_error_kinds": stats["error_kinds"],
            "server_reported_undelivered": stats["undelivered"],
            **self._outcome(seqs),
            "post_rtt_ms": summary(stats["rtt"]),
            "schedule_lag_ms": summary(stats["lag"]),
            "post_reconnects": stats["reconnects"],
            **resources,
            "server_cpu_us_per_notification": _per(resources["server_cpu_s"], stats["accepted"]),
        }

    async def burst(self) -> dict[str, Any]:
        opt, rec = self.opt, self.record
        rec.begin()
        stats, seqs = self._stats(), []
        meter = Meter(self.pid)
        t0 = time.perf_counter()
        end = time.monotonic() + self._time_left(opt.burst_t)
        guard = end + 30

        async def take() -> Any:
            if time.monotonic() >= end or not alive(self.pid):
                return None
            return rec.new(self._pick()), None

        await asyncio.wait_for(
            asyncio.gather(
                *(self._publish_loop(100 + i, take, stats, seqs, guard) for i in range(opt.burst_c))
            ),
            timeout=max(1.0, guard - time.monotonic()),
        )
        post_end = time.perf_counter()
        drained = await self._drain(
            lambda: stats["accepted"] - stats["undelivered"], opt.drain_timeout
        )
        resources = meter.stop()
        post_s = post_end - t0
        deliver_s = max(post_s, (rec.last or post_end) - t0)
        in_window = sum(1 for s in seqs if rec.got[s] is not None and rec.got[s] <= post_end)  # type: ignore[operator]
        return {
            "clients": opt.burst_c,
            "duration_s": round(post_s, 3),
            "posts_sent": len(seqs),
            "accepted": stats["accepted"],
            "accepted_per_s": round(stats["accepted"] / post_s, 1),
            "delivered": rec.received,
            "delivered_per_s": round(rec.received / deliver_s, 1),
            "delivered_in_window_per_s": round(in_window / post_s, 1),
            "drain_after_last_post_s": round(max(0.0, (rec.last or post_end) - post_end), 3),
            "all_drained": drained,
            "errors": stats["errors"],
            "error_kinds": stats["error_kinds"],
            "server_reported_undelivered": stats["undelivered"],
            **self._outcome(seqs),
            "post_rtt_ms": summary(stats["rtt"]),
            "post_reconnects": stats["reconnects"],
            **resources,
            "server_cpu_us_per_notification": _per(resources["server_cpu_s"], stats["accepted"]),
        }

    async def idle(self) -> dict[str, Any]:
        opt, rec = self.opt, self.record
        hb0 = rec.heartbeats
        rec.hb_lag = []
        meter = Meter(self.pid)
        await asyncio.sleep(self._time_left(opt.idle_t))
        resources = meter.stop()
        open_ = sum(1 for s in self.streams if s.connected and not s.closed)
        expected = round(open_ * opt.idle_t / opt.hb_interval) if opt.hb_interval > 0 else 0
        return {
            "seconds": opt.idle_t,
            "connected": open_,
            "heartbeat_interval_s": opt.hb_interval or None,
            "heartbeats_received": rec.heartbeats - hb0,
            "heartbeats_expected": expected,
            "heartbeat_lag_ms": summary(rec.hb_lag, 1),
            **resources,
            "rss_kb": server_rss_kb(self.pid),
        }

    async def run(self) -> dict[str, Any]:
        opt = self.opt
        phases = [p.strip() for p in opt.phases.split(",") if p.strip()]
        unknown = set(phases) - {"connect", "latency", "burst", "idle"}
        if unknown or "connect" not in phases:
            raise SystemExit(
                f"loadgen: phases must include connect, from connect,latency,burst,idle; got {opt.phases}"
            )
        out: dict[str, Any] = {
            "label": opt.label,
            "url": opt.url,
            "pid": self.pid,
            "n": opt.n,
            "phases": phases,
            "options": {k: v for k, v in vars(opt).items() if k != "json"},
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "loop": type(asyncio.get_running_loop()).__module__,
        }
        try:
            out["connect"] = await self.connect()
            if not out["connect"]["connected"]:
                raise RuntimeError("no stream connected")
            for name in ("latency", "burst", "idle"):
                if name in phases:
                    if time.monotonic() > self.deadline:
                        raise RuntimeError(
                            f"global time limit {opt.max_total} s reached before {name}"
                        )
                    out[name] = await getattr(self, name)()
        except Exception as e:  # reported in the result, not as a traceback
            out["error"] = f"{type(e).__name__}: {e}"
        finally:
            out["sse"] = {
                "open_at_end": sum(1 for s in self.streams if s.connected and not s.closed),
                "closed_by_server": sum(1 for s in self.streams if s.connected and s.closed),
                "heartbeats_total": self.record.heartbeats,
                "other_events": self.record.other_events,
            }
            out["server_alive_at_end"] = alive(self.pid)
            out["server_rss_end_kb"] = server_rss_kb(self.pid)
            out["loadgen_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            for s in self.streams:
                s.close()
            out["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return out


def _per(cpu_s: float | None, count: int) -> float | None:
    return None if cpu_s is None else round(cpu_s * 1e6 / max(1, count), 1)


def options(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(), prog="loadgen")
    a = p.add_argument
    a("--url", default="http://127.0.0.1:3000", help="base URL of the server (http only)")
    a("--pid", type=int, default=0, help="server PID, for RSS and CPU from /proc")
    a("--n", type=int, default=1000, help="streams (one user each)")
    a("--phases", default="connect,latency,burst,idle")
    a("--m", type=int, default=5000, help="latency: notifications")
    a("--rate", type=float, default=500, help="latency: notifications per second")
    a("--k", type=int, default=4, help="latency: keep-alive POST clients")
    a("--burst-c", type=int, default=16, help="burst: concurrent keep-alive POST clients")
    a("--burst-t", type=float, default=10, help="burst: seconds")
    a("--idle-t", type=float, default=10, help="idle: seconds")
    a(
        "--hb-interval",
        type=float,
        default=0,
        help="the server's heartbeat interval (s), for the expected count",
    )
    a("--src-ips", type=int, default=4, help="spread client addresses over 127.0.0.1..127.0.0.N")
    a(
        "--connect-concurrency",
        type=int,
        default=200,
        help="streams waiting for their connect event at once",
    )
    a("--connect-timeout", type=float, default=180, help="s, the whole connect phase")
    a(
        "--drain-timeout",
        type=float,
        default=10,
        help="s to wait for deliveries after the last POST",
    )
    a("--settle", type=float, default=1, help="s to wait after connecting before reading the RSS")
    a(
        "--mode",
        choices=["path", "cookie"],
        default="path",
        help="GET /sse/<user> or GET /sse with the cookie",
    )
    a("--cookie", default="userID", help="cookie name for --mode cookie")
    a("--user-prefix", default="u")
    a("--event", default="notify")
    a("--max-total", type=float, default=900, help="s, hard limit for the whole run")
    a("--allow-remote", action="store_true", help="allow a non-loopback host (your own)")
    a("--label", default="")
    a("--json", help="write the full result here ('-': stdout)")
    a(
        "--no-uvloop",
        action="store_true",
        help="use the standard asyncio loop even if uvloop is installed",
    )
    opt = p.parse_args(argv)
    for name in ("n", "m", "k", "burst_c"):
        if getattr(opt, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if opt.rate <= 0:
        p.error("--rate must be positive")
    return opt


def new_loop(no_uvloop: bool = False) -> asyncio.AbstractEventLoop:
    """A uvloop event loop when available (a faster generator), else asyncio's."""
    if not no_uvloop:
        try:
            import uvloop  # type: ignore[import-not-found]

            return uvloop.new_event_loop()  # type: ignore[no-any-return]
        except ImportError:
            pass
    return asyncio.new_event_loop()


def run(opt: argparse.Namespace) -> dict[str, Any]:
    """Run the phases and return the result dict."""
    loop = new_loop(opt.no_uvloop)
    try:
        return loop.run_until_complete(Bench(opt).run())
    finally:
        loop.run_until_complete(asyncio.sleep(0.2))  # let aborted transports close
        loop.close()


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from report import table  # noqa: E402  (bench/report.py, beside this file)

    opt = options(argv)
    result = run(opt)
    if opt.json == "-":
        print(json.dumps(result, indent=2))
    else:
        if opt.json:
            with open(opt.json, "w", encoding="utf-8") as f:
                json.dump(result, f, indent=2)
                f.write("\n")
        print(table([(opt.label or "run", result, None)]))
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
