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
import ssl
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
    split = server_cpu_split(pid)
    return None if split is None else split[0] + split[1]


def server_cpu_split(pid: int | None) -> tuple[float, float] | None:
    """utime and stime (user, system) of C{pid} and its descendants, in seconds."""
    if not pid:
        return None
    user = system = 0
    for p in _descendants(pid):
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        user += int(fields[11])
        system += int(fields[12])
    return user / CLK_TCK, system / CLK_TCK


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


def listen_drops() -> dict[str, int] | None:
    """
    The kernel's listen-queue counters (C{TcpExt: ListenOverflows,
    ListenDrops} of C{/proc/net/netstat}): connections a full accept queue
    dropped, which their clients retry only after 1 s, then 3 s, 7 s...
    They count for the whole machine, not one server.
    """
    try:
        with open("/proc/net/netstat", encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:") and values.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            try:
                return {
                    "overflows": int(table["ListenOverflows"]),
                    "drops": int(table["ListenDrops"]),
                }
            except (KeyError, ValueError):
                return None
    return None


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
    event, data, _, _, _ = parse_block(block)
    return event, data


def _value(line: bytes, name_length: int) -> bytes:
    # A field's value: after "name:", less one leading space.
    return (
        line[name_length + 2 :]
        if line[name_length + 1 : name_length + 2] == b" "
        else line[name_length + 1 :]
    )


def parse_block(block: bytes) -> tuple[bytes, bytes, bytes | None, int | None, bool]:
    """
    One SSE block as a browser reads it (WHATWG rules): the event name, the
    joined data, the C{id:} it sets (L{None} if it has none; an id holding
    NUL is ignored), the C{retry:} milliseconds it sets (L{None} if none or
    not digits), and whether it holds a comment line.
    """
    event = b"message"
    data: list[bytes] = []
    last_id: bytes | None = None
    retry: int | None = None
    comment = False
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            data.append(_value(line, 4))
        elif line.startswith(b"event:"):
            event = _value(line, 5)
        elif line.startswith(b"id:"):
            value = _value(line, 2)
            if b"\0" not in value:
                last_id = value
        elif line.startswith(b"retry:"):
            value = _value(line, 5)
            if value.isdigit():
                retry = int(value)
        elif line.startswith(b":"):
            comment = True
    return event, b"\n".join(data), last_id, retry, comment


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

    def on_event(self, index: int, event: bytes, data: bytes) -> int:
        """
        Count one event that stream C{index} received; for a notification,
        return its sequence number (-1 when it has none, or for other events).
        """
        seq = -1
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
        return seq


# -- protocols --------------------------------------------------------------


class SSEStream(asyncio.Protocol):
    """
    One EventSource-like client: reads the head, then SSE events.  Like a
    browser it keeps the last event id (C{id:}) and the C{retry:} it was
    given; for the reconnect storm it also keeps the sequence numbers of
    the notifications it got, in order, the C{connect} event's data, the
    C{reset} events, and when it got its last notification and was closed.

    @ivar ready_on_comment: take the first comment as "stream ready" (Nchan
        sends no C{connect} event: a C{: hi} comment once subscribed).
    @ivar tls: the L{TLSClient} under this stream, over https.
    """

    tls: TLSClient | None = None

    def __init__(
        self, index: int, record: Record, request: bytes, ready_on_comment: bool = False
    ) -> None:
        self.index = index
        self.record = record
        self.request = request
        self.ready_on_comment = ready_on_comment
        self.transport: asyncio.Transport | None = None
        self.head: bytes | None = b""
        self.chunks: Dechunker | None = None
        self.buf = b""
        self.connected = False
        self.closed = False
        self.status = 0
        self.t0 = time.perf_counter()
        self.connect_ms = 0.0
        self.connected_at = 0.0
        self.closed_at = 0.0
        self.last_at = 0.0
        self.last_id: bytes | None = None
        self.retry_ms: int | None = None
        self.connect_data = b""
        self.seqs: list[int] = []
        self.resets = 0
        self.ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.done_at = 0.0
        self._want = -1
        self._enough: asyncio.Future[None] | None = None

    def expect(self, count: int) -> asyncio.Future[None]:
        """
        A future that fires once the stream is open and C{count}
        notifications came on it (its replay, after a reconnect), or once it
        is closed; L{done_at} then says when.
        """
        self._want = count
        self._enough = asyncio.get_running_loop().create_future()
        self._check()
        return self._enough

    def _check(self) -> None:
        enough = self._enough
        if (
            enough is not None
            and not enough.done()
            and (self.closed or (self.connected and len(self.seqs) >= self._want))
        ):
            self.done_at = time.perf_counter()
            enough.set_result(None)

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
            event, payload, event_id, retry, comment = parse_block(buf[:end])
            buf = buf[end + 2 :]
            if event_id is not None:
                self.last_id = event_id
            if retry is not None:
                self.retry_ms = retry
            if event == b"connect" or (comment and self.ready_on_comment):
                if not self.connected:
                    self._connected(payload)
            elif payload or event != b"message":
                seq = self.record.on_event(self.index, event, payload)
                if seq >= 0:
                    self.seqs.append(seq)
                    self.last_at = time.perf_counter()
                    if self._enough is not None:
                        self._check()
                elif event == b"reset":
                    self.resets += 1
            end = buf.find(b"\n\n")
        self.buf = buf
        if self.chunks is not None and self.chunks.ended:
            # The response is over (a drain, a turned-away stream): a
            # browser reconnects now, whether the connection stays or not.
            self.closed_at = time.perf_counter()
            self._fail("closed")
        elif len(self.buf) > 1 << 20:
            self._fail("event larger than 1 MiB")

    def _connected(self, payload: bytes) -> None:
        self.connected = True
        self.connected_at = time.perf_counter()
        self.connect_ms = (self.connected_at - self.t0) * 1000
        self.connect_data = payload
        if not self.ready.done():
            self.ready.set_result("ok")
        self._check()

    def _fail(self, why: str) -> None:
        if not self.ready.done():
            self.ready.set_result(why)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.closed_at:
            self.closed_at = time.perf_counter()
        if not self.ready.done():
            self.ready.set_result("closed")
        self._check()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class TLSClient(asyncio.Protocol):
    """
    TLS under another protocol (an L{SSEStream} or a L{PostClient}), with
    memory BIOs: unlike the event loop's own TLS, it can resume a given
    session (C{session}), as a browser reconnecting after a restart does
    with the ticket it was given.  L{handshake} fires when the handshake is
    done (or failed); the inner protocol's transport is then this one.
    """

    def __init__(
        self,
        inner: Any,
        context: ssl.SSLContext,
        hostname: str,
        session: ssl.SSLSession | None = None,
    ) -> None:
        self.inner = inner
        inner.tls = self
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self._in, self._out, server_hostname=hostname, session=session)
        self.transport: asyncio.Transport | None = None
        self.done = False
        self.handshake: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    @property
    def session(self) -> ssl.SSLSession | None:
        """The session to resume next time (TLS 1.3: once a ticket came)."""
        return self.tls.session

    @property
    def session_reused(self) -> bool:
        return bool(self.tls.session_reused)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._shake()

    def _flush(self) -> None:
        data = self._out.read()
        if data and self.transport is not None:
            self.transport.write(data)

    def _shake(self) -> None:
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except (ssl.SSLError, OSError) as e:
            self._flush()
            if not self.handshake.done():
                self.handshake.set_result(f"TLS: {e}")
            if self.transport is not None:
                self.transport.abort()
            return
        self._flush()
        self.done = True
        if not self.handshake.done():
            self.handshake.set_result("ok")
        self.inner.connection_made(self)

    def data_received(self, data: bytes) -> None:
        self._in.write(data)
        if not self.done:
            self._shake()
            if not self.done:
                return
        chunks = []
        while True:
            try:
                chunk = self.tls.read(1 << 16)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                break
            except ssl.SSLError:
                if self.transport is not None:
                    self.transport.abort()
                break
            if not chunk:
                break
            chunks.append(chunk)
        self._flush()
        if chunks:
            self.inner.data_received(b"".join(chunks))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.handshake.done():
            self.handshake.set_result("closed")
        self.inner.connection_lost(exc)

    # The inner protocol's transport.

    def write(self, data: bytes) -> None:
        try:
            self.tls.write(data)
        except ssl.SSLError:
            if self.transport is not None:
                self.transport.abort()
            return
        self._flush()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class PostClient(asyncio.Protocol):
    """A keep-alive HTTP/1.1 client for C{POST /webNotification}, one request at a time."""

    tls: TLSClient | None = None

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

    def post(self, body: bytes, prefix: bytes | None = None) -> asyncio.Future[tuple[int, bytes]]:
        """
        POST C{body}; C{prefix} is the request up to C{Content-Length: }
        when it is not the client's own (another path or headers).
        """
        assert self.transport is not None and self.waiter is None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write((prefix or self.prefix) + b"%d\r\n\r\n" % len(body) + body)
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


def tls_context(ca: str | None) -> ssl.SSLContext:
    """
    The client side of an https benchmark: certificates checked against
    C{ca} (a file) when given, else not checked at all (a loopback server
    with a development certificate; its cost is the same).
    """
    context = ssl.create_default_context(cafile=ca)
    if not ca:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


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
        if url.scheme not in ("http", "https"):
            raise SystemExit("loadgen: only http:// and https:// URLs are supported")
        self.host = url.hostname or "127.0.0.1"
        if not is_loopback(self.host) and not opt.allow_remote:
            raise SystemExit(
                f"loadgen: refusing non-loopback target {self.host} (use --allow-remote for a host of your own)"
            )
        self.connect_host = "127.0.0.1" if self.host == "localhost" else self.host
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.tls_context: ssl.SSLContext | None = None
        if url.scheme == "https":
            self.tls_context = tls_context(getattr(opt, "ca", None))
        self.nchan = getattr(opt, "publish_style", "form") == "nchan"
        self.ready_on_comment = getattr(opt, "ready", "event") == "comment"
        self.base = url.path.rstrip("/")
        self.host_header = url.netloc.encode("idna")
        self.record = Record(opt.event.encode())
        self.streams: list[SSEStream] = []
        #: When each notification published by L{publish_each} was answered 2xx.
        self.answered: dict[int, float] = {}
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

    async def _dial(
        self,
        protocol: Any,
        local: tuple[str, int] | None,
        timeout: float,
        session: ssl.SSLSession | None = None,
    ) -> None:
        """
        Connect C{protocol} to the server from C{local}, over TLS (resuming
        C{session} when given) for an https URL.
        """
        loop = asyncio.get_running_loop()
        context = self.tls_context
        factory: Callable[[], asyncio.Protocol] = lambda: protocol  # noqa: E731
        if context is not None:
            wrapped = TLSClient(protocol, context, self.connect_host, session)
            factory = lambda: wrapped  # noqa: E731
        await asyncio.wait_for(
            loop.create_connection(factory, self.connect_host, self.port, local_addr=local),
            timeout=timeout,
        )

    def _sse_request(self, user: str, last_id: bytes | None = None) -> bytes:
        if self.opt.mode == "cookie":
            path = f"{self.base}/sse"
            cookie = f"Cookie: {self.opt.cookie}={quote(user, safe='')}\r\n"
        else:
            path = f"{self.base}/sse/{quote(user, safe='')}"
            cookie = ""
        resume = f"Last-Event-ID: {last_id.decode('latin-1')}\r\n" if last_id else ""
        return (
            f"GET {path} HTTP/1.1\r\nHost: {self.host_header.decode()}\r\n"
            f"Accept: text/event-stream\r\nCache-Control: no-cache\r\n{cookie}{resume}\r\n"
        ).encode()

    def _time_left(self, limit: float) -> float:
        return max(0.0, min(limit, self.deadline - time.monotonic()))

    # -- connect ------------------------------------------------------------

    async def connect(self) -> dict[str, Any]:
        opt = self.opt
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
                stream = SSEStream(
                    i,
                    self.record,
                    self._sse_request(f"{opt.user_prefix}{i}"),
                    self.ready_on_comment,
                )
                self.streams.append(stream)
                try:
                    await self._dial(stream, self._local(i), max(0.1, phase_end - time.monotonic()))
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
        if self.nchan:
            return data.encode()
        return (
            "id=" + quote(f"{self.opt.event}_{user}", safe="") + "&data=" + quote(data, safe="")
        ).encode()

    def _prefix(self, seq: int) -> bytes | None:
        """
        The request up to C{Content-Length: } for an Nchan-style publish
        (C{POST /pub/<user>}, the JSON data as the body, the event name in
        C{X-EventSource-Event}, as the shared harness's C{load.js} sends
        it); L{None} for our own form publish.
        """
        if not self.nchan:
            return None
        user = quote(f"{self.opt.user_prefix}{self.record.target[seq]}", safe="")
        return (
            f"POST {self.base}/pub/{user} HTTP/1.1\r\nHost: {self.host_header.decode()}\r\n"
            f"X-EventSource-Event: {self.opt.event}\r\nAccept: application/json\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()

    async def _client(self, i: int) -> PostClient:
        client = PostClient(f"{self.base}/webNotification".encode(), self.host_header)
        await self._dial(client, self._local(i + 7), 10)
        if client.tls is not None:
            why = await asyncio.wait_for(client.tls.handshake, timeout=10)
            if why != "ok":
                raise ConnectionError(why)
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
            body, prefix = self._body(seq), self._prefix(seq)
            seqs.append(seq)
            t = time.perf_counter()
            if due is not None:
                stats["lag"].append((t - due) * 1000)
            rec.sent[seq] = t
            try:
                status, reply = await asyncio.wait_for(
                    client.post(body, prefix), timeout=max(0.1, end - time.monotonic())
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
                if self.delivered_counts and (
                    (m and int(m.group(1)) == 0) or (self.nchan and status == 202)
                ):
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

    # -- the reconnect storm (bench/storm.py) --------------------------------

    async def publish_each(
        self, per_user: int, outcomes: dict[int, str], timeout: float = 300
    ) -> dict[str, Any]:
        """
        Publish C{per_user} notifications to the user of every stream, in
        rounds, each user's on the same keep-alive client (C{--k} of them)
        so that they are recorded in the order they were sent.  Sets
        C{outcomes[seq]}: C{"ok"} (answered 2xx), C{"refused"} (answered
        otherwise, or not sent: no connection), C{"uncertain"} (sent, no
        answer: it may or may not have been recorded).
        """
        opt, rec = self.opt, self.record
        meter = Meter(self.pid)
        end = time.monotonic() + self._time_left(timeout)
        users = [s.index for s in self.streams]
        counts = {"ok": 0, "refused": 0, "uncertain": 0}
        kinds: dict[str, int] = {}
        k = max(1, min(opt.k, len(users)))

        async def client(c: int) -> None:
            mine = users[c::k]
            post: PostClient | None = None
            for _ in range(per_user):
                for user in mine:
                    seq = rec.new(user)
                    status, why = 0, "not sent"
                    if time.monotonic() < end:
                        if post is None or post.lost:
                            try:
                                post = await self._client(100 + c)
                            except (OSError, asyncio.TimeoutError) as e:
                                post, why = None, type(e).__name__
                        if post is not None:
                            rec.sent[seq] = time.perf_counter()
                            try:
                                status, reply = await asyncio.wait_for(
                                    post.post(self._body(seq), self._prefix(seq)), timeout=10
                                )
                                why = f"http {status}" if status else "no answer"
                            except asyncio.TimeoutError:
                                post.close()
                                post.lost, post.waiter, why = True, None, "no answer"
                    if 200 <= status < 300:
                        outcome = "ok"
                        self.answered[seq] = time.perf_counter()
                    else:
                        outcome = "uncertain" if why == "no answer" else "refused"
                        kinds[why] = kinds.get(why, 0) + 1
                    outcomes[seq] = outcome
                    counts[outcome] += 1
            if post is not None:
                post.close()

        await asyncio.gather(*(client(c) for c in range(k)))
        return {
            "per_user": per_user,
            "users": len(users),
            "accepted": counts["ok"],
            "refused": counts["refused"],
            "uncertain": counts["uncertain"],
            "not_accepted_kinds": kinds,
            **meter.stop(),
        }

    async def wait_delivered(self, count: int, timeout: float) -> bool:
        """Wait until C{count} notifications arrived since L{Record.begin}."""
        return await self._drain(lambda: count, timeout)

    async def wait_quiet(self, timeout: float = 10, window: float = 0.5) -> float:
        """
        Wait until the server (C{--pid}) used no CPU for C{window} s (it has
        seen the streams dropped, its garbage collected), at most
        C{timeout} s; how long it took.
        """
        t0 = time.monotonic()
        end = t0 + self._time_left(timeout)
        before = server_cpu_s(self.pid)
        while before is not None and time.monotonic() < end:
            await asyncio.sleep(window)
            now = server_cpu_s(self.pid)
            if now is None or now == before:
                break
            before = now
        return round(time.monotonic() - t0, 3)

    async def wait_closed(self, timeout: float) -> int:
        """Wait until every stream is closed (a drain); how many are still open."""
        end = time.monotonic() + self._time_left(timeout)
        while time.monotonic() < end and any(not s.closed for s in self.streams):
            await asyncio.sleep(0.05)
        return sum(1 for s in self.streams if not s.closed)

    async def storm(
        self,
        outcomes: dict[int, str],
        mode: str = "all",
        window: float = 0.0,
        drained: bool = False,
        caps: dict[str, int | None] | None = None,
        timeout: float = 180,
        settle: float = 0.5,
        replay_wait: float = 10,
    ) -> dict[str, Any]:
        """
        Reconnect every stream with the last event id it got, as browsers
        do after their C{retry:}, and check each replay.

        C{mode} C{"all"}: every client at once (the worst case).  C{"retry"}:
        each when its browser would, relative to the first: after a drain
        (C{drained}), at the moment its stream was ended plus the C{retry:}
        the drain gave it; otherwise spread evenly at random over
        C{window} seconds.

        A stream has reopened with a complete replay when its C{connect}
        event says C{"replay": "complete"} (unless the server sends no
        C{connect}: Nchan), no C{reset} came, and the notifications that
        followed are exactly those published to its user and answered 2xx
        that it had not seen, in the order published: nothing lost, doubled
        or misrouted.  (One sent without an answer, C{"uncertain"} in
        C{outcomes}, may be there or not.)  Clients the server ends without
        a C{connect} event (200, a C{retry:}, the end: turned away) are
        counted by that C{retry:}: 30 s or more is a cap
        (C{limits.streamsPerUser}, C{streamsPerAddress}, C{streams}).  After
        the storm, the open streams per client address and in all are
        checked against C{caps} (C{"streamsPerAddress"}, C{"streams"}).

        The time runs from the first reconnect to the last stream replayed;
        the server's CPU (C{--pid}) over the same time, per reconnect.  A
        replay is written with the C{connect} event: a stream still short of
        notifications C{replay_wait} seconds after its C{connect} is not
        waited for longer.
        """
        rec = self.record
        sent_to: dict[int, list[int]] = {}
        for seq, outcome in sorted(outcomes.items()):
            if outcome != "refused":
                sent_to.setdefault(rec.target[seq], []).append(seq)
        plans = []
        skipped = 0
        for old in self.streams:
            if not old.connected or not old.last_id:
                skipped += 1
                continue
            seen = set(old.seqs)
            pubs = sent_to.get(old.index, [])
            plans.append(
                {
                    "old": old,
                    "live_in_order": old.seqs == [q for q in pubs if q in seen],
                    "expected": [q for q in pubs if q not in seen and outcomes[q] == "ok"],
                    "uncertain": {q for q in pubs if q not in seen and outcomes[q] != "ok"},
                    "offset": 0.0,
                }
            )
        if mode == "retry":
            if drained and all(p["old"].closed_at and p["old"].retry_ms for p in plans):
                moments = [p["old"].closed_at + p["old"].retry_ms / 1000 for p in plans]
                first = min(moments, default=0.0)
                for p, moment in zip(plans, moments, strict=True):
                    p["offset"] = moment - first
            else:
                for p in plans:
                    p["offset"] = random.uniform(0, window)
        new: dict[int, SSEStream] = {}
        failures: dict[str, int] = {}
        turned_away: dict[str, int] = {}
        end = time.monotonic() + self._time_left(timeout)
        split0 = server_cpu_split(self.pid)
        drops0 = listen_drops()
        meter = Meter(self.pid)
        t0 = time.perf_counter()

        async def reconnect(plan: dict[str, Any]) -> None:
            if plan["offset"]:
                await asyncio.sleep(plan["offset"])
            old: SSEStream = plan["old"]
            i = old.index
            stream = SSEStream(
                i,
                rec,
                self._sse_request(f"{self.opt.user_prefix}{i}", old.last_id),
                self.ready_on_comment,
            )
            new[i] = stream
            replayed = stream.expect(len(plan["expected"]))
            session = old.tls.session if old.tls is not None else None
            try:
                await self._dial(stream, self._local(i), max(0.1, end - time.monotonic()), session)
                why = await asyncio.wait_for(stream.ready, timeout=max(0.1, end - time.monotonic()))
            except (OSError, asyncio.TimeoutError) as e:
                why = type(e).__name__
                stream.close()
            if why == "closed" and stream.status == 200:
                retry = stream.retry_ms or 0
                kind = "cap (retry >= 30 s)" if retry >= 30_000 else f"retry {retry} ms"
                turned_away[kind] = turned_away.get(kind, 0) + 1
            elif why != "ok":
                if why == "closed":
                    why = _closed_when(stream)
                failures[why] = failures.get(why, 0) + 1
            else:
                left = min(replay_wait, end - time.monotonic())
                try:
                    await asyncio.wait_for(replayed, timeout=max(0.1, left))
                except asyncio.TimeoutError:
                    why = f"replay short {replay_wait:g} s after connect"
                    failures[why] = failures.get(why, 0) + 1

        await asyncio.gather(*(reconnect(p) for p in plans))
        resources = meter.stop()
        split1 = server_cpu_split(self.pid)
        drops1 = listen_drops()
        if split0 is not None and split1 is not None:
            resources["server_user_s"] = round(split1[0] - split0[0], 3)
            resources["server_system_s"] = round(split1[1] - split0[1], 3)
        if drops0 is not None and drops1 is not None:
            resources["listen_queue"] = {k: drops1[k] - drops0[k] for k in drops0}
        await asyncio.sleep(self._time_left(settle))  # anything more (doubled) shows now

        counts = {"complete": 0, "truncated": 0, "wrong": 0}
        wrong = {"lost": 0, "doubled": 0, "misrouted": 0, "out_of_order": 0, "unexpected": 0}
        replayed_total = uncertain_replayed = live_gaps = resumed = tls_streams = 0
        times: list[float] = []
        done: list[float] = []
        per_source: dict[str, int] = {}
        lost_seqs: list[int] = []
        for p in plans:
            old = p["old"]
            stream = new[old.index]
            if not p["live_in_order"]:
                live_gaps += 1
            if not stream.connected:
                continue
            if stream.tls is not None:
                tls_streams += 1
                resumed += stream.tls.session_reused
            if not stream.closed:
                local = self._local(old.index)
                source = local[0] if local else self.connect_host
                per_source[source] = per_source.get(source, 0) + 1
            got = stream.seqs
            replayed_total += len(got)
            seen = set(old.seqs)
            expected = p["expected"]
            uncertain = p["uncertain"]
            doubled = sum(1 for q in got if q in seen) + len(got) - len(set(got))
            misrouted = sum(1 for q in got if rec.target[q] != old.index)
            unexpected = sum(
                1 for q in set(got) if q not in seen and q not in uncertain and q not in expected
            )
            lost = len(set(expected) - set(got))
            if lost:
                lost_seqs.extend(sorted(set(expected) - set(got)))
            certain = [q for q in got if q not in uncertain]
            uncertain_replayed += len(got) - len(certain)
            out_of_order = int(
                not (lost or doubled or misrouted or unexpected) and certain != expected
            )
            flagged = self.ready_on_comment or b'"replay": "complete"' in stream.connect_data
            if doubled or misrouted or unexpected or lost or out_of_order:
                counts["wrong"] += 1
                for name, value in (
                    ("lost", lost),
                    ("doubled", doubled),
                    ("misrouted", misrouted),
                    ("out_of_order", out_of_order),
                    ("unexpected", unexpected),
                ):
                    wrong[name] += value
            elif not flagged or stream.resets:
                counts["truncated"] += 1
            else:
                counts["complete"] += 1
            if stream.done_at:
                times.append((stream.done_at - stream.t0) * 1000)
                done.append(stream.done_at)
        attempts = len(plans)
        reopened = sum(1 for p in plans if new[p["old"].index].connected)
        caps = caps or {}
        past = []
        per_address = caps.get("streamsPerAddress")
        if per_address is not None and per_source and max(per_source.values()) > per_address:
            past.append(f"{max(per_source.values())} streams from one address > {per_address}")
        total_cap = caps.get("streams")
        open_now = sum(per_source.values())
        if total_cap is not None and open_now > total_cap:
            past.append(f"{open_now} streams open > {total_cap}")
        return {
            "mode": mode,
            "reconnects": attempts,
            "without_last_id": skipped,
            "reopened": reopened,
            "complete": counts["complete"],
            "truncated": counts["truncated"],
            "wrong": counts["wrong"],
            **wrong,
            "turned_away": turned_away,
            "failures": failures,
            "notifications_missed": sum(len(p["expected"]) for p in plans),
            "notifications_replayed": replayed_total,
            "uncertain_replayed": uncertain_replayed,
            "live_out_of_order": live_gaps,
            "time_s": round(max(done) - t0, 3) if done else None,
            "spread_s": round(max((p["offset"] for p in plans), default=0.0), 3),
            "per_stream_ms": summary(times, 1),
            "open_at_end": open_now,
            "most_from_one_address": max(per_source.values(), default=0),
            "addresses": len(per_source),
            "caps": caps,
            "past_a_cap": past,
            "lost_seqs": sorted(lost_seqs),
            "tls_resumed": resumed if tls_streams else None,
            "tls_streams": tls_streams or None,
            **resources,
            "server_cpu_us_per_reconnect": _per(resources["server_cpu_s"], attempts),
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


def _closed_when(stream: SSEStream) -> str:
    """When a stream that never opened was closed: in its TLS handshake, before an answer, or after."""
    if stream.tls is not None and not stream.tls.done:
        result = stream.tls.handshake.result() if stream.tls.handshake.done() else "closed"
        return f"closed in the TLS handshake ({result})"
    if not stream.status:
        return "closed before an answer"
    return f"closed after http {stream.status}"


def _per(cpu_s: float | None, count: int) -> float | None:
    return None if cpu_s is None else round(cpu_s * 1e6 / max(1, count), 1)


def options(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(), prog="loadgen")
    a = p.add_argument
    a("--url", default="http://127.0.0.1:3000", help="base URL of the server (http or https)")
    a("--ca", help="https: CA file to check the server's certificate (default: not checked)")
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
    a(
        "--publish-style",
        choices=["form", "nchan"],
        default="form",
        help="POST /webNotification (form), or POST /pub/<user> with the JSON body (Nchan)",
    )
    a(
        "--ready",
        choices=["event", "comment"],
        default="event",
        help="a stream is ready at its connect event, or at its first comment (Nchan)",
    )
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
