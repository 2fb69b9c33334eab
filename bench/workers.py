# -*- test-case-name: tests.test_bench -*-
"""
What C{server.workers} gives on this machine: one worker (the plain single
process, no Redis) against two (a supervisor, two C{SO_REUSEPORT} workers
and their private C{redis-server}), and a graceful restart (SIGHUP) with
every stream open.

Every run starts its own C{twistd -n notificator} from this checkout's
C{conf/*.json} plus a C{local.json} (as C{bench/local.py}: history on disk
in the run's directory, log level C{info}, publishers from 127.0.0.0/8,
C{limits.streamsPerAddress} off, the generator's streams spread over
C{--src-ips} loopback addresses), on 127.0.0.1 and a free port, and stops
it by its PID.  The private Redis of two workers lives under the run's
C{var/redis} (the project root of the run's config).

Runs (C{--runs}, in order, comma-separated; C{w1,w2,w1,w2} alternates):

 - C{w1} / C{w2}: C{server.workers} 1 / 2.  Open C{--n} streams (one user
   each; C{bench/loadgen.py}'s C{connect} phase), then read how they spread
   over the workers (each worker's own count, from C{/health}'s
   C{workers} list); then C{latency} (C{--m} notifications at C{--rate}/s
   over C{--k} keep-alive clients) and C{burst} (C{--burst-c} clients as
   fast as the server answers for C{--burst-t} s).  Server CPU (utime +
   stime from C{/proc}, every process of the server: the supervisor, its
   workers, the private redis-server) per stream opened and per publish,
   and split by role; burst publishes/s; streams still open at the end
   (held); nothing lost or doubled (the generator counts every
   notification at its user's socket).
 - C{reload}: two workers; open C{--n} streams that behave as browsers do
   (a stream the server ends reconnects after its C{retry:} with the last
   event id it got, C{Last-Event-ID}), publish C{--seen} notification(s)
   to every user (so that every stream has an event id to come back
   with), then publish at C{--reload-rate}/s (one
   new connection per publish, as a back-end that does not keep
   connections alive; C{--reload-c} at once) and send SIGHUP to the
   supervisor.  The time from the signal to each of the supervisor's log
   lines (new worker ready, C{reload done}), the time until every stream
   is open again, reconnects per stream (at most one each is the
   contract), publishes refused or unanswered (none is), and every
   accepted notification delivered once (replayed after a reconnect when
   it was published in between).

The servers and the generator are not pinned: two workers on two cores
pinned to one would measure nothing.  The generator competes with the
server for the cores, so the rates depend on it; the CPU per operation
does not (C{--pin} pins all the server's processes to CPU 0 and the
generator to CPU 1 as the other scripts do).

Example (from the checkout)::

    python bench/workers.py --n 10000 --runs w1,w2,reload --json bench/results/workers.json

Exit status 1 if a run failed, a notification was lost or doubled, a
publish was refused, or a stream reconnected more than once in a reload.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import math
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import loadgen  # noqa: E402
import local  # noqa: E402

#: The supervisor's log lines a reload is timed by (notificator/workers/supervisor.py).
RELOAD_LINES = {
    "new_worker_ready": re.compile(r"reload: new worker (\d+) ready"),
    "worker_replaced": re.compile(r"reload: worker (\d+) replaced"),
    "done": re.compile(r"reload done: (\d+) workers replaced"),
    "stopped": re.compile(r"reload stopped|reload refused|reload failed"),
}


class WorkersServer(local.LocalServer):
    """C{bench/local.py}'s server with C{server.workers} C{workers}."""

    def __init__(self, opt: argparse.Namespace, workers: int, tag: str, workdir: str) -> None:
        extra: dict[str, Any] = {"server": {"workers": workers}, "sse": {}}
        if opt.stock:
            extra["server"]["fastChannel"] = False
        if opt.drain_seconds is not None:
            extra["sse"]["drainSeconds"] = opt.drain_seconds
        if opt.retry is not None:
            extra["sse"]["retry"] = opt.retry
        if opt.cap_streams is not None:
            extra["limits"] = {"streams": opt.cap_streams}
        super().__init__(opt, 0, tag, workdir, extra)
        self.workers = workers
        self.name = f"server ({workers} workers)"

    def start(self, timeout: float = 60.0) -> None:
        """Start, and with workers wait until the supervisor says all are ready."""
        super().start(timeout)
        if self.workers > 1:
            self.wait_for_line(f"all {self.workers} workers ready", timeout)

    def log_text(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def wait_for_line(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log_text():
                return
            if self.process is not None and self.process.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise SystemExit(f"workers: no {text!r} within {timeout} s; see {self.log_path}")


# -- what the server's processes use -----------------------------------------


def _stat(pid: int) -> tuple[str, list[bytes]] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    name = stat[stat.index(b"(") + 1 : stat.rindex(b")")].decode("latin-1")
    return name, stat[stat.rindex(b")") + 2 :].split()


def cpu_by_role(pid: int) -> dict[str, float]:
    """
    CPU seconds (utime + stime) of the server whose top process is C{pid},
    by role: C{supervisor} (C{pid} itself when it has workers; the one
    process otherwise: C{worker}), C{workers}, C{redis}; and C{reaped}: the
    CPU of children C{pid} has waited for (cutime + cstime: workers that
    ended, as the old ones of a reload do).
    """
    out = {"supervisor": 0.0, "workers": 0.0, "redis": 0.0, "reaped": 0.0}
    pids = loadgen._descendants(pid)
    for p in pids:
        got = _stat(p)
        if got is None:
            continue
        name, fields = got
        used = (int(fields[11]) + int(fields[12])) / loadgen.CLK_TCK
        if p == pid:
            out["supervisor" if len(pids) > 1 else "workers"] += used
            out["reaped"] = (int(fields[13]) + int(fields[14])) / loadgen.CLK_TCK
        elif name.startswith("redis"):
            out["redis"] += used
        else:
            out["workers"] += used
    return out


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """The CPU used between two L{cpu_by_role}, by role and C{total}."""
    out = {k: round(after[k] - before[k], 3) for k in before}
    out["total"] = round(sum(out.values()), 3)
    return out


def per_op(cpu: dict[str, float], count: int) -> dict[str, float]:
    """Microseconds of CPU per operation, by role (roles that used none left out)."""
    return {k: round(v * 1e6 / max(1, count), 1) for k, v in cpu.items() if v or k == "total"}


def health(port: int) -> dict[str, Any]:
    """C{/health} of whichever worker takes the connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/health")
        doc: dict[str, Any] = json.loads(conn.getresponse().read())
        return doc
    finally:
        conn.close()


async def split(port: int, expected: int, timeout: float = 10.0) -> dict[str, int]:
    """
    Streams per worker (node name -> count) from C{/health}'s C{workers}
    list (each worker's snapshot, written every second), once they add up
    to C{expected} or after C{timeout} s; one process: its own count.
    """
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + timeout
    counts: dict[str, int] = {}
    while True:
        doc = await loop.run_in_executor(None, health, port)
        workers = doc.get("workers")
        if workers:
            counts = {str(w["node"]): int(w["streams"]) for w in workers}
        else:
            counts = {str(doc.get("node", "server")): int(doc.get("streams", 0))}
        if sum(counts.values()) == expected or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(0.5)


def imbalance_pct(counts: dict[str, int]) -> float | None:
    """How much more the busiest worker holds than the least busy, in % of the least."""
    if len(counts) < 2 or min(counts.values()) <= 0:
        return None
    return round(100 * (max(counts.values()) - min(counts.values())) / min(counts.values()), 1)


# -- w1 / w2 -------------------------------------------------------------------


class MachineBench(loadgen.Bench):
    """
    loadgen's phases, waiting for every accepted publish: with workers a
    publish's C{"delivered"} counts the streams of the worker that took
    it only (the others get it through Redis), so a 0 there does not mean
    nobody was reached.
    """

    delivered_counts = False


async def measure(bench: loadgen.Bench, server: WorkersServer) -> dict[str, Any]:
    """Connect, the split, latency, burst; CPU by role over each phase."""
    out: dict[str, Any] = {}
    pid = server.pid
    try:
        before = cpu_by_role(pid)
        out["connect"] = connect = await bench.connect()
        cpu = cpu_delta(before, cpu_by_role(pid))
        if not connect["connected"]:
            raise RuntimeError("no stream connected")
        out["connect_cpu_s"] = cpu
        out["cpu_us_per_stream"] = per_op(cpu, connect["connected"])
        out["split"] = counts = await split(server.port, connect["connected"])
        out["imbalance_pct"] = imbalance_pct(counts)
        for name in ("latency", "burst"):
            await asyncio.sleep(1)
            before = cpu_by_role(pid)
            out[name] = phase = await getattr(bench, name)()
            cpu = cpu_delta(before, cpu_by_role(pid))
            out[f"{name}_cpu_s"] = cpu
            out[f"{name}_cpu_us_per_publish"] = per_op(cpu, phase["accepted"])
        out["held"] = sum(1 for s in bench.streams if s.connected and not s.closed)
        out["rss_kb"] = loadgen.server_rss_kb(pid)
    except Exception as e:  # reported in the result, not as a traceback
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        for s in bench.streams:
            s.close()
    return out


# -- reload ---------------------------------------------------------------------


class Browser(loadgen.SSEStream):
    """loadgen's stream that tells its owner when it ends (to reconnect as a browser does)."""

    def __init__(self, owner: ReloadBench, *args: Any) -> None:
        super().__init__(*args)
        self.owner = owner

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.owner.ended(self)


class ReloadBench(MachineBench):
    """
    Streams that come back after their C{retry:} with C{Last-Event-ID},
    each stream's reconnects counted; publishes on a new connection each.
    """

    def __init__(self, opt: argparse.Namespace) -> None:
        super().__init__(opt)
        self.current: dict[int, loadgen.SSEStream] = {}
        self.reconnects: dict[int, int] = {}
        self.failed_reconnects: dict[str, int] = {}
        self.replays: dict[str, int] = {}
        self.reopened_at: dict[int, float] = {}
        #: Streams that came back without a last event id (none seen before their end).
        self.without_id: set[int] = set()
        self.stopping = False

    def ended(self, stream: loadgen.SSEStream) -> None:
        if self.stopping or self.current.get(stream.index) is not stream:
            return
        if not stream.connected and not self.reconnects.get(stream.index):
            return  # never opened in the connect phase: counted there
        if getattr(stream, "rescheduled", False):
            return  # its end seen twice (a failed dial, then its close)
        stream.rescheduled = True  # type: ignore[attr-defined]
        delay = (stream.retry_ms or 3000) / 1000
        asyncio.get_running_loop().call_later(delay, self._reopen, stream)

    def _reopen(self, old: loadgen.SSEStream) -> None:
        if self.stopping:
            return
        i = old.index
        self.reconnects[i] = self.reconnects.get(i, 0) + 1
        last_id = old.last_id
        if last_id is None:
            self.without_id.add(i)
        stream = Browser(
            self,
            i,
            self.record,
            self._sse_request(f"{self.opt.user_prefix}{i}", last_id),
            self.ready_on_comment,
        )
        # A stream that never opened keeps the last id of the one before.
        stream.last_id = last_id
        self.current[i] = stream
        asyncio.ensure_future(self._dial_again(stream))

    async def _dial_again(self, stream: loadgen.SSEStream) -> None:
        try:
            await self._dial(stream, self._local(stream.index), 10)
            why = await asyncio.wait_for(stream.ready, timeout=30)
        except (OSError, asyncio.TimeoutError) as e:
            why = type(e).__name__
            stream.close()
            if self.current.get(stream.index) is stream:
                self.ended(stream)
        if why == "ok":
            self.reopened_at[stream.index] = time.perf_counter()
            m = re.search(rb'"replay": *"(\w+)"', stream.connect_data)
            kind = m.group(1).decode() if m else "no last id"
            self.replays[kind] = self.replays.get(kind, 0) + 1
        else:
            self.failed_reconnects[why] = self.failed_reconnects.get(why, 0) + 1

    async def connect(self) -> dict[str, Any]:
        out = await super().connect()
        streams = []
        for s in self.streams:
            # The connect phase's streams, as Browsers from now on.
            s.__class__ = Browser
            s.owner = self  # type: ignore[attr-defined]
            self.current[s.index] = s
            streams.append(s)
            if s.closed and s.connected:
                self.ended(s)
        return out

    def open_now(self) -> int:
        return sum(1 for s in self.current.values() if s.connected and not s.closed)

    async def publish_steady(
        self, rate: float, concurrency: int, stop: asyncio.Event, outcomes: dict[int, str]
    ) -> dict[str, Any]:
        """
        Publish at C{rate}/s to random open users, one new connection per
        publish, at most C{concurrency} at once, until C{stop} is set;
        C{outcomes[seq]}: C{"ok"}, C{"refused"} (no connection, or an
        answer other than 2xx) or C{"uncertain"} (sent, no answer).
        """
        rec = self.record
        kinds: dict[str, int] = {}
        slots = asyncio.Semaphore(concurrency)
        tasks: list[asyncio.Task[None]] = []
        t0 = time.perf_counter()

        async def one(seq: int) -> None:
            async with slots:
                client = loadgen.PostClient(
                    f"{self.base}/webNotification".encode(), self.host_header
                )
                why = "not sent"
                status = 0
                try:
                    await self._dial(client, self._local(seq), 10)
                    rec.sent[seq] = time.perf_counter()
                    status, _ = await asyncio.wait_for(client.post(self._body(seq)), timeout=10)
                    why = f"http {status}" if status else "no answer"
                except (OSError, asyncio.TimeoutError) as e:
                    why = "no answer" if rec.sent[seq] else type(e).__name__
                finally:
                    client.close()
                if 200 <= status < 300:
                    outcomes[seq] = "ok"
                else:
                    outcomes[seq] = "uncertain" if why == "no answer" else "refused"
                    kinds[why] = kinds.get(why, 0) + 1

        i = 0
        while not stop.is_set():
            due = t0 + i / rate
            wait = due - time.perf_counter()
            if wait > 0:
                try:
                    await asyncio.wait_for(stop.wait(), timeout=wait)
                    break
                except asyncio.TimeoutError:
                    pass
            i += 1
            open_ = [s.index for s in self.current.values() if s.connected and not s.closed]
            target = random.choice(open_) if open_ else random.randrange(len(self.streams))
            tasks.append(asyncio.ensure_future(one(rec.new(target))))
            tasks = [t for t in tasks if not t.done()] if len(tasks) > 1000 else tasks
        await asyncio.gather(*tasks)
        counts = {k: sum(1 for v in outcomes.values() if v == k) for k in ("ok", "refused")}
        return {
            "sent": len(outcomes),
            "seconds": round(time.perf_counter() - t0, 3),
            "accepted": counts["ok"],
            "refused": counts["refused"],
            "unanswered": len(outcomes) - counts["ok"] - counts["refused"],
            "not_accepted_kinds": kinds,
        }


async def reload_scenario(
    bench: ReloadBench, server: WorkersServer, opt: argparse.Namespace
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    pid = server.pid
    try:
        out["connect"] = connect = await bench.connect()
        if not connect["connected"]:
            raise RuntimeError("no stream connected")
        out["split_before"] = await split(server.port, connect["connected"])
        outcomes: dict[int, str] = {}
        if opt.seen:
            # Every stream gets an event id, which a browser sends back as
            # Last-Event-ID when it reconnects (as bench/storm.py's --seen).
            out["seen"] = seen_ = await bench.publish_each(opt.seen, outcomes)
            seen_["all_delivered"] = await bench.wait_delivered(seen_["accepted"], 60)
            outcomes.clear()
        bench.record.begin()
        stop = asyncio.Event()
        publishing = asyncio.ensure_future(
            bench.publish_steady(opt.reload_rate, opt.reload_c, stop, outcomes)
        )
        await asyncio.sleep(opt.reload_lead)
        log_from = len(server.log_text())
        cpu0 = cpu_by_role(pid)
        t0 = time.perf_counter()
        os.kill(pid, signal.SIGHUP)
        seen: dict[str, list[float]] = {k: [] for k in RELOAD_LINES}
        deadline = time.monotonic() + opt.reload_timeout
        while time.monotonic() < deadline and not publishing.done():
            text = server.log_text()[log_from:]
            now = round(time.perf_counter() - t0, 3)
            for name, pattern in RELOAD_LINES.items():
                for _ in range(len(pattern.findall(text)) - len(seen[name])):
                    seen[name].append(now)
            if seen["done"] or seen["stopped"]:
                break
            await asyncio.sleep(0.02)
        reload_s = seen["done"][0] if seen["done"] else None
        # Every stream open again (on a new worker), then a last second of publishes.
        while time.monotonic() < deadline and bench.open_now() < connect["connected"]:
            await asyncio.sleep(0.05)
        all_open_s = round(time.perf_counter() - t0, 3)
        await asyncio.sleep(opt.reload_tail)
        stop.set()
        out["publish"] = await publishing
        cpu = cpu_delta(cpu0, cpu_by_role(pid))
        # The old workers' CPU moved to "reaped" (their whole lives) when
        # they exited: together with "workers" it is the workers' over the reload.
        cpu["workers"] = round(cpu["workers"] + cpu.pop("reaped"), 3)
        accepted = [q for q, v in outcomes.items() if v == "ok"]
        rec = bench.record
        end = time.monotonic() + opt.drain_timeout
        while time.monotonic() < end and any(rec.got[q] is None for q in accepted):
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # anything doubled shows now
        bench.stopping = True
        uncertain = [q for q, v in outcomes.items() if v == "uncertain"]
        counts = list(bench.reconnects.values())
        reopened = [
            t - t0 for i, t in bench.reopened_at.items() if i in bench.reconnects and t >= t0
        ]
        lost = [q for q in accepted if rec.got[q] is None]
        without_id = [q for q in lost if rec.target[q] in bench.without_id]
        out["reload"] = {
            "seconds_to_done": reload_s,
            "log_lines_s": {k: v for k, v in seen.items() if v},
            "completed": bool(seen["done"]),
            "seconds_to_all_streams_open": all_open_s,
            "last_reopen_s": round(max(reopened), 3) if reopened else None,
            "streams": connect["connected"],
            "open_after": bench.open_now(),
            "streams_reconnected": len(counts),
            "reconnects": sum(counts),
            "reconnects_per_stream_max": max(counts, default=0),
            "streams_reconnected_more_than_once": sum(1 for c in counts if c > 1),
            "failed_reconnects": bench.failed_reconnects,
            "replays": bench.replays,
            "streams_back_without_id": len(bench.without_id),
            "lost": len(lost) - len(without_id),
            "lost_to_streams_back_without_id": len(without_id),
            "doubled": rec.dup,
            "misrouted": rec.misrouted,
            "uncertain_delivered": sum(1 for q in uncertain if rec.got[q] is not None),
            "cpu_s": cpu,
        }
        out["split_after"] = await split(server.port, bench.open_now())
    except Exception as e:  # reported in the result, not as a traceback
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        bench.stopping = True
        for s in bench.current.values():
            s.close()
        for s in bench.streams:
            s.close()
    return out


# -- runs -------------------------------------------------------------------------


def run_one(opt: argparse.Namespace, run: str, index: int, workdir: str) -> dict[str, Any]:
    workers = 1 if run == "w1" else 2
    server = WorkersServer(opt, workers, f"{index}-{run}", workdir)
    result: dict[str, Any] = {
        "run": run,
        "workers": workers,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    try:
        server.start()
        phases = "connect,latency,burst" if run != "reload" else "connect"
        gen = local.generator_options(opt, server.port, server.pid, phases, 0, f"{opt.label}-{run}")
        gen.src_ips = opt.src_ips
        gen.drain_timeout = opt.drain_timeout
        loop = loadgen.new_loop(opt.no_uvloop)
        try:
            if run == "reload":
                result.update(
                    loop.run_until_complete(reload_scenario(ReloadBench(gen), server, opt))
                )
            else:
                result.update(loop.run_until_complete(measure(MachineBench(gen), server)))
        finally:
            loop.run_until_complete(asyncio.sleep(0.2))
            loop.close()
    except SystemExit as e:
        result["error"] = str(e)
    finally:
        server.stop()
    return result


def problems(result: dict[str, Any]) -> list[str]:
    """What in one run breaks a contract (empty: nothing)."""
    out = []
    if "error" in result:
        out.append(result["error"])
    connect = result.get("connect", {})
    if connect and connect.get("failed"):
        out.append(f"{connect['failed']} streams not opened: {connect.get('failures')}")
    imbalance = result.get("imbalance_pct")
    # Below 2,000 streams chance alone can part two workers by 10 %.
    if imbalance is not None and imbalance > 10 and connect.get("connected", 0) >= 2000:
        out.append(f"streams per worker {result['split']}: {imbalance} % apart (> 10 %)")
    for name in ("latency", "burst"):
        phase = result.get(name)
        if phase:
            for what in ("lost", "duplicates", "misrouted"):
                if phase.get(what):
                    out.append(f"{name}: {phase[what]} {what}")
            errors = phase.get("post_errors", phase.get("errors"))
            if errors:
                out.append(f"{name}: {errors} publishes refused {phase.get('error_kinds', '')}")
    reload = result.get("reload")
    if reload:
        if not reload["completed"]:
            out.append("reload did not complete")
        if reload["reconnects_per_stream_max"] > 1:
            out.append(
                f"{reload['streams_reconnected_more_than_once']} streams reconnected more than once"
            )
        if reload["open_after"] < reload["streams"]:
            out.append(f"{reload['streams'] - reload['open_after']} streams not open again")
        for what in ("lost", "doubled", "misrouted"):
            if reload[what]:
                out.append(f"reload: {reload[what]} {what}")
    publish = result.get("publish")
    if publish and (publish["refused"] or publish["unanswered"]):
        out.append(
            f"reload: {publish['refused']} publishes refused, {publish['unanswered']} unanswered"
            f" {publish['not_accepted_kinds']}"
        )
    return out


def table(results: list[dict[str, Any]]) -> str:
    rows = [
        (
            "run",
            "streams (per worker)",
            "us/stream",
            "us/publish lat",
            "us/publish burst",
            "burst /s",
            "held",
            "lost/dup",
        )
    ]
    for r in results:
        if r["run"] == "reload":
            continue
        lat, burst = r.get("latency", {}), r.get("burst", {})
        counts = r.get("split", {})
        rows.append(
            (
                r["run"],
                f"{r.get('connect', {}).get('connected')} ({'/'.join(map(str, counts.values()))},"
                f" {r.get('imbalance_pct')} %)",
                str(r.get("cpu_us_per_stream", {}).get("total")),
                str(r.get("latency_cpu_us_per_publish", {}).get("total")),
                str(r.get("burst_cpu_us_per_publish", {}).get("total")),
                str(burst.get("accepted_per_s")),
                str(r.get("held")),
                f"{(lat.get('lost') or 0) + (burst.get('lost') or 0)}/"
                f"{(lat.get('duplicates') or 0) + (burst.get('duplicates') or 0)}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    for r in results:
        reload = r.get("reload")
        if reload:
            p = r["publish"]
            lines.append(
                f"reload: done {reload['seconds_to_done']} s, all streams open"
                f" {reload['seconds_to_all_streams_open']} s; {reload['streams_reconnected']}"
                f" of {reload['streams']} streams reconnected, at most"
                f" {reload['reconnects_per_stream_max']} each; publishes {p['accepted']} accepted,"
                f" {p['refused']} refused, {p['unanswered']} unanswered; lost {reload['lost']},"
                f" doubled {reload['doubled']}"
            )
            if reload["streams_back_without_id"]:
                lines.append(
                    f"  {reload['streams_back_without_id']} streams came back without a"
                    " Last-Event-ID (no notification before their end): the"
                    f" {reload['lost_to_streams_back_without_id']} notifications published to"
                    " them while they were away are not replayed (not counted as lost)"
                )
    for r in results:
        for problem in problems(r):
            lines.append(f"{r['run']}: {problem}")
    return "\n".join(lines)


def options(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="server.workers: 1 worker against 2, and a graceful restart.", prog="workers"
    )
    a = p.add_argument
    a("--runs", default="w1,w2,reload", help="of w1, w2, reload, in this order")
    a("--n", type=int, default=10000, help="streams (one user each)")
    a("--m", type=int, default=5000, help="latency: notifications")
    a("--rate", type=float, default=500, help="latency: notifications per second")
    a("--k", type=int, default=4, help="latency: keep-alive publishing clients")
    a("--burst-c", type=int, default=16, help="burst: keep-alive publishing clients")
    a("--burst-t", type=float, default=10, help="burst: seconds")
    a("--reload-rate", type=float, default=200, help="reload: publishes per second")
    a("--reload-c", type=int, default=16, help="reload: publishes in flight at most")
    a("--reload-lead", type=float, default=2, help="reload: s of publishing before SIGHUP")
    a("--reload-tail", type=float, default=2, help="reload: s of publishing after")
    a(
        "--seen",
        type=int,
        default=1,
        help="reload: notifications per user before SIGHUP, so that every stream has an event id",
    )
    a("--reload-timeout", type=float, default=120, help="reload: s, at most")
    a("--drain-seconds", type=float, default=None, help="sse.drainSeconds (default: shipped)")
    a("--retry", type=int, default=None, help="sse.retry, ms (default: shipped)")
    a("--cap-streams", type=int, default=None, help="limits.streams, the machine's (default: null)")
    a("--stock", action="store_true", help="server.fastChannel false (twisted.web's channel)")
    a("--drain-timeout", type=float, default=20, help="s to wait for deliveries")
    a(
        "--src-ips",
        type=int,
        default=0,
        help="client addresses 127.0.0.1..N (default: one per 2500 streams, at least 4)",
    )
    a("--project", default=local.PROJECT, help="checkout whose conf/ to use (default: this one)")
    a("--twistd", default="", help="twistd command (default: the one beside this Python)")
    a("--env", default="", help="config environment (--env of twistd notificator)")
    a("--log-level", default="info")
    a("--pin", action="store_true", help="servers on CPU 0, the generator on CPU 1")
    a("--no-uvloop", action="store_true")
    a("--max-total", type=float, default=600, help="s, hard limit per run")
    a("--label", default="", help="name of the runs in the JSON")
    a("--json", help="write the results here")
    a("--keep", action="store_true", help="keep the temporary config and log dirs")
    opt = p.parse_args(argv)
    runs = [r.strip() for r in opt.runs.split(",") if r.strip()]
    if not runs or set(runs) - {"w1", "w2", "reload"}:
        p.error("--runs: w1, w2, reload")
    if opt.n < 1:
        p.error("--n must be at least 1")
    if ("w2" in runs or "reload" in runs) and not shutil.which("redis-server"):
        p.error("two workers need redis-server (apt-get install redis-server)")
    opt.runs = runs
    opt.label = opt.label or f"workers-{opt.n}"
    opt.src_ips = opt.src_ips or max(4, math.ceil(opt.n / 2500))
    # What bench/local.py's server and generator options expect.
    opt.port, opt.idle_t = 0, 1
    opt.no_pin = not opt.pin
    local.pin(opt)
    return opt


def run(opt: argparse.Namespace) -> dict[str, Any]:
    """Every run of C{opt.runs}, one after the other; the results, as C{--json} writes them."""
    local.raise_fd_limit(opt.n)
    workdir = tempfile.mkdtemp(prefix="notificator-bench-workers-")
    results = []
    try:
        for index, run in enumerate(opt.runs):
            if index:
                time.sleep(1)
            results.append(run_one(opt, run, index, workdir))
    finally:
        if opt.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return {
        "label": opt.label,
        "machine": local.machine(),
        "pinned": opt.server_cpu is not None,
        "settings": {k: v for k, v in vars(opt).items() if k not in ("json", "server_cpu")},
        "runs": results,
    }


def main(argv: list[str] | None = None) -> int:
    opt = options(argv)
    result = run(opt)
    if opt.json:
        with open(opt.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    print(table(result["runs"]))
    return 1 if any(problems(r) for r in result["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
