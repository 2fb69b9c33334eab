"""
The shipped benchmark (C{bench/}): its HTTP and SSE parsing, its
bookkeeping of lost, duplicated and misrouted events, its table, and a
short end-to-end smoke run (200 streams) against the real
C{twistd -n notificator}; likewise C{cpu.py} (its "history full" mode
too), C{journal.py} (the full history it writes, loaded as the server
loads it), C{local.py}'s server started from such a journal, C{memory.py},
C{stuck.py}, C{fuzz.py} (its answer parser and checks, and 2000 raw
requests), C{storm.py} (the reconnect storm after a restart, 50
streams; Nchan's where nginx and its Nchan module are installed), and
C{workers.py} (one worker against two and a graceful restart, 60
streams).  No timing is asserted: only counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import sys
import tempfile
import time
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from notificator.events import SEQ_SPAN, encode_frame, event_id
from notificator.history import History, HistoryFile
from tests.support import (
    PROJECT,
    Server,
    not_here,
    redis_server_path,
    require_tool,
    stock_channel,
)

sys.path.insert(0, os.path.join(PROJECT, "bench"))

import cpu  # noqa: E402
import disconnect  # noqa: E402
import fuzz  # noqa: E402
import journal  # noqa: E402
import loadgen  # noqa: E402
import local  # noqa: E402
import memory  # noqa: E402
import report  # noqa: E402
import storm  # noqa: E402
import stuck  # noqa: E402
import workers  # noqa: E402


class DechunkerTests(SynchronousTestCase):
    BODY = b"5\r\nhello\r\n1a\r\n" + b"x" * 26 + b"\r\n3;ext=1\r\nabc\r\n0\r\n\r\n"

    def test_whole_body(self) -> None:
        """A chunked body fed at once decodes to its data and notes the end."""
        d = loadgen.Dechunker()
        self.assertEqual(d.feed(self.BODY), b"hello" + b"x" * 26 + b"abc")
        self.assertTrue(d.ended)

    def test_any_split(self) -> None:
        """Every split point, and byte-by-byte feeding, give the same data."""
        expected = b"hello" + b"x" * 26 + b"abc"
        for i in range(len(self.BODY) + 1):
            d = loadgen.Dechunker()
            self.assertEqual(d.feed(self.BODY[:i]) + d.feed(self.BODY[i:]), expected, i)
        d = loadgen.Dechunker()
        self.assertEqual(b"".join(d.feed(bytes([b])) for b in self.BODY), expected)


class ParseTests(SynchronousTestCase):
    def test_event_block(self) -> None:
        """Event name and multi-line data are read as a browser would."""
        self.assertEqual(
            loadgen.parse_event(b'id: 1-0\nevent: notify\ndata: {"a":\ndata:1}'),
            (b"notify", b'{"a":\n1}'),
        )
        self.assertEqual(loadgen.parse_event(b"data: x"), (b"message", b"x"))

    def test_block_fields(self) -> None:
        """The id and retry a block sets, and its comments, are read as a browser reads them."""
        self.assertEqual(
            loadgen.parse_block(b"id: 17-0\nretry:3000\nevent: notify\ndata: x"),
            (b"notify", b"x", b"17-0", 3000, False),
        )
        self.assertEqual(loadgen.parse_block(b": hi"), (b"message", b"", None, None, True))
        # An id holding NUL is ignored; a retry that is not digits too; id: alone empties it.
        self.assertEqual(
            loadgen.parse_block(b"id: a\0b\nretry: 1s"), (b"message", b"", None, None, False)
        )
        self.assertEqual(loadgen.parse_block(b"id:")[2], b"")

    def test_lost_by_phase(self) -> None:
        """Lost notifications are told apart by the phase that published them, with when they were answered."""
        lost = storm.lost_by_phase(
            [1, 5, 6],
            [("seen", 0), ("during", 4), ("missed", 8)],
            {1: 9.0, 5: 10.5, 6: 10.75},
            {"SIGTERM": 10.0, "exited": 11.0},
        )
        self.assertEqual(lost["count"], 3)
        self.assertEqual(lost["seen"], {"count": 1, "answered_s_after_sigterm": [-1.0, -1.0]})
        self.assertEqual(lost["during"], {"count": 2, "answered_s_after_sigterm": [0.5, 0.75]})
        self.assertNotIn("missed", lost)
        self.assertEqual(lost["moments_s_after_sigterm"], {"SIGTERM": 0.0, "exited": 1.0})

    def test_head(self) -> None:
        """Status and lower-cased headers come out of a response head."""
        status, headers = loadgen.parse_head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: b"
        )
        self.assertEqual(
            (status, headers[b"transfer-encoding"], headers[b"x-a"]), (200, b"chunked", b"b")
        )

    def test_summary(self) -> None:
        """Nearest-rank percentiles, as the shared load.js computes them."""
        s = loadgen.summary(range(1, 101))
        self.assertEqual(
            (s["count"], s["p50"], s["p90"], s["p99"], s["max"]), (100, 50, 90, 99, 100)
        )
        self.assertEqual(loadgen.summary([]), {"count": 0})

    def test_loopback(self) -> None:
        """Only loopback hosts are allowed without --allow-remote."""
        self.assertTrue(loadgen.is_loopback("127.0.0.2"))
        self.assertTrue(loadgen.is_loopback("::1"))
        self.assertTrue(loadgen.is_loopback("localhost"))
        self.assertFalse(loadgen.is_loopback("192.0.2.1"))
        with self.assertRaises(SystemExit):
            loadgen.Bench(loadgen.options(["--url", "http://192.0.2.1:3000"]))


class RecordTests(SynchronousTestCase):
    def test_routing(self) -> None:
        """Arrivals are sorted into delivered, duplicated, misrouted and unknown."""
        r = loadgen.Record(b"notify")
        a, b = r.new(0), r.new(1)
        r.on_event(0, b"notify", b'{"s":%d}' % a)
        r.on_event(0, b"notify", b'{"s":%d}' % a)
        r.on_event(0, b"notify", b'{"s":%d}' % b)
        r.on_event(0, b"notify", b'{"s":99}')
        r.on_event(0, b"heartbeat", b'{"time":1}')
        self.assertEqual((r.received, r.dup, r.misrouted, r.unknown, r.heartbeats), (1, 1, 1, 1, 1))
        self.assertIsNotNone(r.got[a])
        self.assertIsNone(r.got[b])


class TableTests(SynchronousTestCase):
    def test_partial_results(self) -> None:
        """A run that stopped early still renders, with dashes and its error."""
        text = report.table(
            [("x", {"connect": {"connected": 0, "requested": 5}, "error": "boom"}, None)]
        )
        self.assertIn("0/5", text)
        self.assertIn("boom", text)
        self.assertIn("target", text.splitlines()[0])


class SmokeTests(SynchronousTestCase):
    def test_short_run(self) -> None:
        """
        200 streams against the real server: every stream connects, and
        every notification (rate and burst) arrives once, at the right
        stream, with heartbeats flowing.
        """
        server = Server(
            self,
            local={
                "sse": {"heartbeat": True, "heartbeatInterval": 1},
                # loadgen publishes from 127.0.0.1-127.0.0.4
                "publish": {"allow": ["127.0.0.0/8"]},
            },
        ).start()
        opt = loadgen.options(
            [
                "--url",
                f"http://127.0.0.1:{server.port}",
                "--pid",
                str(server.process.pid),
                "--n",
                "200",
                "--m",
                "200",
                "--rate",
                "400",
                "--burst-c",
                "4",
                "--burst-t",
                "1",
                "--idle-t",
                "2.5",
                "--hb-interval",
                "1",
                "--max-total",
                "120",
                "--no-uvloop",
            ]
        )
        result = loadgen.run(opt)
        self.assertNotIn("error", result)
        self.assertEqual(result["connect"]["connected"], 200)
        for phase in ("latency", "burst"):
            p = result[phase]
            self.assertGreater(p["accepted"], 0, phase)
            self.assertEqual(p["received"], p["accepted"], phase)
            self.assertEqual(
                (
                    p["lost"],
                    p["duplicates"],
                    p["misrouted"],
                    p["post_errors" if phase == "latency" else "errors"],
                ),
                (0, 0, 0, 0),
                phase,
            )
        self.assertEqual(result["latency"]["accepted"], 200)
        self.assertGreater(result["idle"]["heartbeats_received"], 0)
        self.assertIsNotNone(result["connect"]["kb_per_conn"])
        self.assertIn("200/200", report.table([("smoke", result, None)]))


def storm_run(*args: str) -> dict[str, Any]:
    """
    C{bench/storm.py} with C{args}, small and quick: 50 streams, a short
    drain, unpinned, on the channel of this test run (C{--stock} under
    C{tox -e stock}).
    """
    argv = ["--n", "50", "--drain-seconds", "0.5", "--replay-wait", "2", "--no-pin"]
    argv += ["--no-uvloop", "--timeout", "60", "--max-total", "120"]
    if stock_channel():
        argv.append("--stock")
    return storm.run(storm.options(argv + list(args)))


class StormBenchTests(SynchronousTestCase):
    """
    C{bench/storm.py} against the real server: every stream comes back
    after a restart with a complete replay, and the checks see it when one
    does not.
    """

    def assertAllComplete(self, result: dict[str, Any], streams: int = 50) -> dict[str, Any]:
        self.assertEqual(result["problems"], [], result)
        s = result["storm"]
        self.assertEqual((s["reconnects"], s["complete"]), (streams, streams), s)
        self.assertEqual(
            (s["truncated"], s["wrong"], s["turned_away"], s["failures"]), (0, 0, {}, {})
        )
        self.assertEqual((s["lost"], s["doubled"], s["misrouted"], s["out_of_order"]), (0, 0, 0, 0))
        # Each missed a few (published during the drain and after the restart), all replayed.
        self.assertGreaterEqual(s["notifications_missed"], 2 * streams)
        self.assertEqual(s["notifications_replayed"], s["notifications_missed"])
        # The numbers are reported.
        self.assertEqual(s["per_stream_ms"]["count"], streams)
        self.assertIsNotNone(s["time_s"])
        self.assertIsNotNone(s["server_cpu_us_per_reconnect"])
        self.assertEqual(s["past_a_cap"], [])
        return s

    def test_restart_all_at_once(self) -> None:
        """After a drained restart, 50 streams all at once: each replayed exactly what it missed."""
        result = storm_run()
        self.assertAllComplete(result)
        # It stopped by itself (twistd exits by the signal it stopped on).
        self.assertIn(result["restart"]["exit_status"], (0, -signal.SIGTERM))
        self.assertEqual(result["during"]["accepted"], 50)
        metrics = result["server_metrics"]
        self.assertEqual(metrics.get("replays"), {"complete": 50})
        self.assertEqual(metrics.get("streams_refused", {}), {})
        self.assertEqual(metrics.get("streams_open"), 50)
        self.assertIn("every stream reopened with a complete replay", storm.table(result))

    def test_restart_as_told(self) -> None:
        """
        Each client comes back when the drain told it (its end plus its
        retry:), all complete; these streams saw no notification before the
        restart, so each comes back with the id its connect event gave it.
        """
        s = self.assertAllComplete(storm_run("--reconnect", "retry", "--seen", "0"))
        self.assertGreater(s["spread_s"], 0)

    def test_cap_refusals_counted(self) -> None:
        """
        With limits.streams 40 on the restarted server, 40 streams reopen
        complete and 10 are turned away with a cap's long retry:, which the
        server counts as server-limit; none is admitted past the cap.
        """
        result = storm_run("--cap-streams", "40")
        self.assertEqual(result["problems"], [], result)
        s = result["storm"]
        self.assertEqual((s["complete"], s["turned_away"]), (40, {"cap (retry >= 30 s)": 10}))
        self.assertEqual((s["open_at_end"], s["caps"]["streams"], s["past_a_cap"]), (40, 40, []))
        self.assertEqual(result["server_metrics"]["streams_refused"], {"server-limit": 10})

    def test_lost_history_detected(self) -> None:
        """
        The checks are not a formality: with the history in memory only
        (sse.history.dir null), a restart loses it, and no stream counts as
        complete.
        """
        result = storm_run("--no-journal")
        s = result["storm"]
        self.assertEqual(s["complete"], 0)
        self.assertGreater(s["truncated"] + s["wrong"], 0)
        self.assertNotEqual(result["problems"], [])
        self.assertEqual(result["server_metrics"]["replays"], {"truncated": 50})

    def test_publishes_answered_in_the_stop_are_kept(self) -> None:
        """
        A notification the stopping server answered 2xx is replayed after
        the restart, even when it came on a keep-alive connection as the
        server stopped (200 per user during a 0.5 s drain: the publishes
        outlast the server, so the last are refused).
        """
        result = storm_run("--during", "200")
        self.assertGreater(result["during"]["refused"], 0, result["during"])
        self.assertEqual(result["storm"]["lost"], 0, result.get("lost"))
        self.assertAllComplete(result)

    def test_failure_kinds(self) -> None:
        """A stream that never opened says where it was closed: TLS handshake, before or after an answer."""
        record = loadgen.Record(b"notify")

        class Handshake:
            done = False
            handshake: Any = None

        async def streams() -> list[str]:
            loop = asyncio.get_running_loop()
            out = []
            for status, tls in ((0, None), (503, None), (0, Handshake())):
                stream = loadgen.SSEStream(0, record, b"")
                stream.status = status
                if tls is not None:
                    tls.handshake = loop.create_future()
                    tls.handshake.set_result("TLS: boom")
                    stream.tls = tls
                out.append(loadgen._closed_when(stream))
            return out

        self.assertEqual(
            asyncio.run(streams()),
            [
                "closed before an answer",
                "closed after http 503",
                "closed in the TLS handshake (TLS: boom)",
            ],
        )

    def test_tls_sessions_resumed(self) -> None:
        """
        Over https, with the ticket keys kept on disk, every reconnect after
        the restart resumes its TLS session; with them in memory none does.
        """
        s = self.assertAllComplete(storm_run("--tls"))
        self.assertEqual((s["tls_streams"], s["tls_resumed"]), (50, 50))
        s = self.assertAllComplete(storm_run("--tls", "--tls-tickets", "lose"))
        self.assertEqual((s["tls_streams"], s["tls_resumed"]), (50, 0))

    def test_nchan(self) -> None:
        """Nchan's figure: the same storm after a mass disconnect, against nginx + Nchan."""
        require_tool("nginx", "nginx", "the reconnect storm against Nchan")
        module = storm.options(["--no-pin"]).nchan_module
        if not os.path.exists(module):
            not_here(
                f"the reconnect storm against Nchan: {module} is missing (apt-get install libnginx-mod-nchan)"
            )
        result = storm_run("--target", "nchan", "--restart", "none")
        self.assertEqual(result["problems"], [], result)
        s = result["storm"]
        self.assertEqual((s["complete"], s["notifications_missed"]), (50, 100))
        self.assertEqual(s["notifications_replayed"], 100)


class WorkersBenchTests(SynchronousTestCase):
    """
    C{bench/workers.py} against the real server with one worker and with
    two (and their private redis-server), and a graceful restart of two.
    """

    def test_short_run(self) -> None:
        """
        60 streams: with one worker and with two, every stream opens (over
        both workers with two, as their own /health counts say), every
        publish is delivered once, and CPU per operation is reported; a
        SIGHUP replaces both workers while publishes flow, and every
        stream reconnects once, no publish is refused, nothing is lost or
        doubled.
        """
        redis_server_path()
        argv = ["--n", "60", "--m", "60", "--rate", "200", "--burst-c", "4", "--burst-t", "1"]
        argv += ["--reload-rate", "50", "--reload-lead", "0.5", "--reload-tail", "0.5"]
        argv += ["--drain-seconds", "0.5", "--retry", "100", "--no-uvloop", "--max-total", "120"]
        if stock_channel():
            argv.append("--stock")
        result = workers.run(workers.options(argv))
        w1, w2, reload = result["runs"]
        for run in result["runs"]:
            self.assertEqual(workers.problems(run), [], run)
            self.assertEqual(run["connect"]["connected"], 60, run)
        for run, count in ((w1, 1), (w2, 2)):
            self.assertEqual((run["run"], run["workers"]), (f"w{count}", count))
            self.assertEqual(len(run["split"]), count, run["split"])
            self.assertEqual(sum(run["split"].values()), 60, run["split"])
            self.assertEqual(run["held"], 60)
            for phase in ("latency", "burst"):
                p = run[phase]
                self.assertGreater(p["accepted"], 0, phase)
                self.assertEqual((p["received"], p["lost"], p["duplicates"]), (p["accepted"], 0, 0))
                self.assertIn("total", run[f"{phase}_cpu_us_per_publish"])
            self.assertIn("total", run["cpu_us_per_stream"])
        # Two workers: a supervisor and a Redis beside them (w1 has neither).
        self.assertLessEqual({"workers", "redis", "supervisor"}, set(w1["burst_cpu_s"]))
        self.assertEqual((w1["burst_cpu_s"]["redis"], w1["burst_cpu_s"]["supervisor"]), (0, 0))
        r = reload["reload"]
        self.assertTrue(r["completed"], r)
        self.assertEqual(len(r["log_lines_s"]["new_worker_ready"]), 2, r)
        self.assertEqual((r["streams_reconnected"], r["reconnects"]), (60, 60), r)
        self.assertEqual((r["reconnects_per_stream_max"], r["open_after"]), (1, 60), r)
        self.assertEqual((r["lost"], r["doubled"], r["misrouted"]), (0, 0, 0), r)
        p = reload["publish"]
        self.assertGreater(p["accepted"], 0)
        self.assertEqual((p["refused"], p["unanswered"]), (0, 0), p)
        self.assertEqual(sum(reload["split_after"].values()), 60)
        self.assertIn("at most 1 each", workers.table(result["runs"]))

    def test_problems(self) -> None:
        """The checks are not a formality: each broken contract is named."""
        run = {
            "run": "reload",
            "connect": {"connected": 10000, "failed": 0},
            "imbalance_pct": 12.5,
            "split": {"a": 5300, "b": 4700},
            "burst": {"lost": 1, "duplicates": 0, "errors": 2, "error_kinds": {"http 503": 2}},
            "reload": {
                "completed": True,
                "streams": 10000,
                "open_after": 10000,
                "reconnects_per_stream_max": 2,
                "streams_reconnected_more_than_once": 3,
                "lost": 0,
                "doubled": 1,
                "misrouted": 0,
            },
            "publish": {"refused": 1, "unanswered": 0, "not_accepted_kinds": {"http 503": 1}},
        }
        found = "\n".join(workers.problems(run))
        for text in (
            "12.5 % apart",
            "burst: 1 lost",
            "burst: 2 publishes refused",
            "3 streams reconnected more than once",
            "reload: 1 doubled",
            "1 publishes refused",
        ):
            self.assertIn(text, found)
        # Few streams: chance alone parts them, not a problem.
        run["connect"]["connected"] = 200
        self.assertNotIn("apart", "\n".join(workers.problems(run)))


class CPUBenchTests(SynchronousTestCase):
    def test_short_run(self) -> None:
        """bench/cpu.py opens, publishes to and heartbeats every stream of the real service (counts only)."""
        result = cpu.measure(rounds=2, per_round=10, publishes=15)
        self.assertEqual((result["streams"], result["publishes"]), (20, 30))
        for figure in ("connect", "publish", "heartbeat"):
            self.assertGreater(result[figure], 0)

    def test_short_run_stock(self) -> None:
        """bench/cpu.py --stock measures the same on twisted.web's stock channel."""
        result = cpu.measure(rounds=2, per_round=10, publishes=15, stock=True)
        self.assertEqual((result["streams"], result["publishes"]), (20, 30))
        for figure in ("connect", "publish", "heartbeat"):
            self.assertGreater(result[figure], 0)

    def test_history_full(self) -> None:
        """
        bench/cpu.py --history full starts the service from a journal of
        C{held_users} users with 100 notifications each (sse.history.size),
        all of them held, and reports the mean and the GC's collections
        beside the best.
        """
        result = cpu.measure(rounds=2, per_round=10, publishes=15, history="full", held_users=30)
        self.assertEqual((result["held"], result["streams"], result["publishes"]), (3000, 20, 30))
        for figure in ("connect", "publish", "heartbeat"):
            self.assertGreater(result[f"{figure}_mean"], 0)
            self.assertGreaterEqual(result[f"{figure}_mean"], result[figure])
        for phase in result["gc"].values():
            self.assertEqual(len(phase["collections"]), 3)


class DisconnectBenchTests(SynchronousTestCase):
    """C{bench/disconnect.py}: what a mass disconnect leaves for the cyclic collector."""

    def test_dropped_streams_leave_no_cycle(self) -> None:
        """Streams dropped at once are all freed by reference counting, on both channels."""
        for stock in (False, True):
            result = disconnect.measure(60, stock)
            self.assertEqual((result["streams"], result["collected"]), (60, 0), result)


class JournalScriptTests(SynchronousTestCase):
    """C{bench/journal.py}: the full history the benchmarks start from."""

    def test_written_journal_loads_as_a_servers_own(self) -> None:
        """
        The journal written for 7 users with 3 notifications each is a
        clean one the server loads whole: ids in publishing order
        (round-robin), each user's frames the benchmark's notifications,
        and a reconnect from a user's first id replays the other two.
        """
        directory = os.path.join(self.mktemp(), "history")
        written = journal.write(directory, 7, 3)
        self.assertEqual(
            (written["notifications"], written["users"], written["bytes"]),
            (21, 7, os.path.getsize(os.path.join(directory, journal.NAME))),
        )
        loaded = HistoryFile(directory).load()
        assert loaded is not None
        self.assertTrue(loaded.clean)
        users = loaded.users
        self.assertEqual(sorted(users), sorted(f"u{n}" for n in range(7)))
        keys = [k for n in range(3) for u in range(7) for k in [list(users[f"u{u}"][1])[n][0]]]
        self.assertEqual(keys, sorted(set(keys)))
        self.assertEqual(loaded.last, keys[-1])
        key, frame, _ = list(users["u3"][1])[1]
        self.assertEqual(
            frame,
            encode_frame(
                "notify",
                '{"s":10,"t":%d.010,"pad":"benchmark notification"}' % (key // SEQ_SPAN),
                event_id(key),
            ),
        )
        clock = Clock()
        clock.advance(time.time())  # the journal's times are the wall clock's
        history = History(clock, size=100, ttl=3600, max_bytes=1 << 30, known_since=1)
        history.load(loaded)
        self.assertEqual((len(history), history.user_count), (21, 7))
        first = list(users["u3"][1])[0][0]
        replay = history.since("u3", first)
        self.assertTrue(replay.complete)
        self.assertEqual(replay.frames, tuple(f for _, f, _ in list(users["u3"][1])[1:]))

    def test_measure(self) -> None:
        """
        --measure loads the journal in fresh processes as the server does
        and reports per held notification what it takes, beside the
        journal's bytes.
        """
        directory = os.path.join(self.mktemp(), "history")
        written = journal.write(directory, 20, 5)
        result = journal.measure(directory, size=100, ttl=3600, max_bytes=1 << 30)
        self.assertEqual((result["held"], result["users"]), (100, 20))
        self.assertEqual(result["journal_bytes_per_held"], round(written["bytes"] / 100, 1))
        for figure in ("traced_bytes_per_held", "counted_bytes_per_held"):
            self.assertGreater(result[figure], 0)


class LocalBenchTests(SynchronousTestCase):
    def test_server_started_from_a_full_history(self) -> None:
        """
        bench/local.py --held starts its server from a journal of that many
        notifications in the history directory of the server's config,
        which the server loads, and is ready only once it answers HTTP.
        """
        opt = local.options(["--n", "10", "--held", "200", "--held-users", "20", "--no-pin"])
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        server = local.LocalServer(
            opt, 0, "full", workdir, held=opt.held, held_users=opt.held_users
        )
        self.assertEqual(server.held and server.held["notifications"], 200)
        server.start()
        try:
            self.assertTrue(local.answers(server.port))
        finally:
            server.stop()
        with open(os.path.join(server.dir, "log", "sse.log"), encoding="utf-8") as f:
            log = f.read()
        self.assertIn(": 200 notifications of 20 users", log)


class MemoryBenchTests(SynchronousTestCase):
    def test_short_run(self) -> None:
        """bench/memory.py opens the streams it is asked for and reports memory per stream."""
        result = memory.measure(streams=200, trace=True)
        self.assertEqual(result["streams"], 200)
        self.assertGreater(result["kb_python_per_stream"], 0)


class StuckBenchTests(SynchronousTestCase):
    def test_short_run(self) -> None:
        """bench/stuck.py runs both phases against the real server and times the healthy stream."""
        result = stuck.run(clients=2, seconds=0.5, rate=100, size=1024, rcvbuf=4096)
        self.assertEqual(result["clients"], 2)
        self.assertGreater(result["healthy_latency_quiet"]["count"], 10)
        self.assertGreater(result["healthy_latency_with_stuck"]["count"], 0)
        self.assertGreater(result["rss_mib_end"], 0)


class FuzzScriptTests(SynchronousTestCase):
    """The parts of C{bench/fuzz.py} the checks rely on."""

    def test_parse_pipelined_answers(self) -> None:
        """Answers by length, chunked, to HEAD (no body) and the bare 400 are read apart."""
        data = (
            b'HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 9\r\n\r\n{"e": 1}\n'
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 22\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            b"HTTP/1.1 400 Bad Request\r\n\r\n"
        )
        responses, cut = fuzz.parse_responses(data)
        self.assertEqual([r.code for r in responses], [405, 404, 200, 400])
        self.assertEqual([r.body for r in responses], [b'{"e": 1}\n', b"", b"abc", b""])
        self.assertEqual([r.headless for r in responses], [False, True, False, False])
        self.assertTrue(responses[3].bare)
        self.assertFalse(cut)

    def test_open_stream_is_cut(self) -> None:
        """An event stream's answer is read as far as it goes."""
        responses, cut = fuzz.parse_responses(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nretry\r\n"
        )
        self.assertTrue(cut)
        self.assertTrue(responses[0].stream)
        self.assertEqual(responses[0].body, b"retry")

    def test_dechunk_whole_chunks_only(self) -> None:
        """The watcher's reading (partial=False) never takes a chunk twice, however the bytes are split."""
        stream = b"5\r\nhello\r\n3\r\nabc\r\n"
        for cut in range(len(stream) + 1):
            raw = stream[:cut]
            body, used, _ = fuzz._dechunk(raw, partial=False)
            rest, _, _ = fuzz._dechunk(raw[used:] + stream[cut:], partial=False)
            self.assertEqual(body + rest, b"helloabc", cut)

    def test_not_http(self) -> None:
        """Bytes that are not an HTTP/1.x answer are refused."""
        for data in (b"<html>", b"HTTP/2 200\r\n\r\n", b"HTTP/1.1 2000 x\r\n\r\n"):
            self.assertRaises(fuzz.Unparsable, fuzz.parse_responses, data)

    def test_checks(self) -> None:
        """5xx, 3xx, HTML pages and JSON refusals without an error are problems."""
        cases = [
            (b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n", ["status 500"]),
            (b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n", ["status 302"]),
            (b"HTTP/1.1 304 Not Modified\r\n\r\n", []),
            (
                b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: 13\r\n\r\n<html></html>",
                ["HTML body on 404", "404 body of type b'text/html'"],
            ),
            (
                b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
                ["400 JSON without an error: b'{}'"],
            ),
            (b"HTTP/1.1 400 Bad Request\r\n\r\n", []),
        ]
        for data, problems in cases:
            self.assertEqual(fuzz.check_responses(fuzz.parse_responses(data)[0]), problems, data)

    def test_expects_answer(self) -> None:
        """A complete head without a body must be answered; one announcing a body may wait."""
        self.assertTrue(fuzz.expects_answer(b"GET / HTTP/1.1\r\n\r\n"))
        self.assertTrue(fuzz.expects_answer(b"\r\nJUNK\r\n\r\n"))
        self.assertTrue(fuzz.expects_answer(b"GET /" + b"a" * 20000))
        self.assertFalse(fuzz.expects_answer(b"GET / HTTP/1.1\r\n"))
        self.assertFalse(fuzz.expects_answer(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n"))

    def test_cases_are_seeded(self) -> None:
        """The same seed gives the same cases (so a failure can be sent again with --only)."""
        import random

        a = fuzz.Cases(random.Random(7))
        b = fuzz.Cases(random.Random(7))
        self.assertEqual([a.next().data for _ in range(200)], [b.next().data for _ in range(200)])


class FuzzBenchTests(SynchronousTestCase):
    def test_short_run(self) -> None:
        """2000 raw random and mutated requests to the real server: every check of bench/fuzz.py holds."""
        out = os.path.abspath(self.mktemp())
        workdir = tempfile.mkdtemp(prefix="fuzz-", dir=os.path.dirname(out) or ".")
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            code = fuzz.main(["--n", "2000", "--seed", "11", "--workdir", workdir, "--json", out])
        with open(out, encoding="utf-8") as f:
            result = json.load(f)
        self.assertEqual(
            (code, result["failures"], result["logProblems"]), (0, [], []), printed.getvalue()
        )
        self.assertEqual(result["probesReceived"], result["probes"])
        self.assertGreaterEqual(result["probes"], 40)
        # Every kind of case was sent, and the server answered many ways.
        self.assertEqual(len(result["kinds"]), 14)
        for status in ("200", "400", "404", "405", "415", "bare 400"):
            self.assertIn(status, result["statuses"])
