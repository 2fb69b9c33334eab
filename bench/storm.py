# -*- test-case-name: tests.test_bench -*-
"""
The reconnect storm after a restart: N event streams, each having seen
notifications (so each has a last event id), all come back at once with
their C{Last-Event-ID}, and each must get exactly what it missed.

Against a freshly started local C{twistd -n notificator} (as
C{bench/local.py} starts it: this checkout's C{conf/}, C{--env benchmark},
the history on disk in the run's directory):

 1. open C{--n} streams (one user each), the client addresses spread over
    enough loopback addresses (127.0.0.1, .2, ...) that
    C{limits.streamsPerAddress} does not refuse them;
 2. publish C{--seen} notifications to every user, all received live: each
    stream's last event id is the last of them (with C{--seen 0}, the one
    its C{connect} event gave it);
 3. C{--restart restart}: SIGTERM (the server drains: the streams are ended
    over C{sse.drainSeconds}, each with a jittered C{retry:}), and while it
    drains publish C{--during} notifications per user to it; wait for it to
    exit, and start it again in the same directory (the history comes back
    from the journal).  C{--restart none}: the clients drop every stream at
    once (a mass disconnect: a network blip, a proxy restart) and the server
    keeps running;
 4. publish C{--missed} notifications per user, to the server the clients
    will come back to, before they do;
 5. the storm: every client reconnects with the last id it got, all at once
    (C{--reconnect all}, the worst case) or each when its browser would
    (C{--reconnect retry}: its stream's end plus the C{retry:} the drain
    gave it; after a mass disconnect, spread over C{--window} s).

It checks that every stream reopened with a complete replay (C{connect}
says C{"replay": "complete"}, no C{reset}, then exactly the notifications
it missed, in order: nothing lost, doubled or misrouted), counts refusals
(clients the server turned away with a C{retry:}, and the server's own
C{notificator_streams_refused_total} by reason), and that no stream was
admitted past C{limits.streamsPerAddress} or C{limits.streams}.  It
reports the time from the first reconnect to the last stream replayed,
per stream p50/p99/max, and the server's CPU per reconnect (utime+stime
from C{/proc}).

C{--tls}: the same over https (a development certificate made for the run;
session tickets on, their keys in the run's C{tls-tickets/}, which the
restarted server reads back, so reconnecting clients resume their TLS
sessions; C{--tls-tickets lose} keeps the keys in memory, so they do not).

C{--target nchan}: nginx + Nchan (the shared harness's peer, its config
copied in C{bench/nchan-peer.conf.in}), for Nchan's figure of the same
storm where it applies: Nchan keeps its messages in shared memory, which
neither a restart nor a reload (SIGHUP) of nginx keeps, so its comparable
figure is the mass disconnect (C{--restart none}).

Examples (from the checkout)::

    python bench/storm.py --n 1000
    python bench/storm.py --n 10000 --json bench/results/storm-10000.json
    python bench/storm.py --n 10000 --reconnect retry
    python bench/storm.py --n 10000 --restart none --target nchan

Exit status 1 if any stream did not reopen with a complete replay, a
notification was lost, doubled or misrouted, or a stream was admitted past
a cap; turned-away clients are counted, not failures, when a documented
cap turned them away (C{--cap-streams} makes one do so).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import math
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import loadgen  # noqa: E402
import local  # noqa: E402

PROJECT = local.PROJECT

NCHAN_TEMPLATE = os.path.join(HERE, "nchan-peer.conf.in")


class NchanServer(local.ServerProcess):
    """
    nginx + Nchan as the shared harness runs it (C{run.sh nchan-peer}): one
    master and one worker, pinned like our server, the template's
    placeholders filled for a prefix in the run's directory.
    """

    def __init__(self, opt: argparse.Namespace, workdir: str) -> None:
        self.port = opt.port or local.free_port()
        self.dir = os.path.join(workdir, "nchan")
        os.makedirs(self.dir)
        os.chmod(workdir, 0o755)  # the worker runs as nobody when started as root
        os.chmod(self.dir, 0o755)
        nofile = opt.n + 2000
        with open(NCHAN_TEMPLATE, encoding="utf-8") as f:
            text = f.read()
        for name, value in (
            ("PREFIX", self.dir),
            ("PORT", str(self.port)),
            ("NOFILE", str(nofile)),
            ("ACCESS_LOG", os.path.join(self.dir, "access.log") + " combined"),
            ("HB", "0"),
            ("NCHAN_MODULE", opt.nchan_module),
        ):
            text = text.replace(f"@{name}@", value)
        self.conf_path = os.path.join(self.dir, "nginx.conf")
        with open(self.conf_path, "w", encoding="utf-8") as f:
            f.write(text)
        self.command = [opt.nginx, "-p", self.dir + "/", "-c", self.conf_path]
        self.log_path = os.path.join(self.dir, "nginx.log")
        self.cpu = opt.server_cpu
        self.name = "nginx"

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        workers = loadgen._descendants(self.pid)[1:]
        local.stop_process(self.process)
        for pid in workers:  # the master stops its worker; this is in case it did not
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def project_server(opt: argparse.Namespace, workdir: str) -> local.LocalServer:
    """
    Our server as C{bench/local.py} starts it, with the shipped stream caps
    (C{bench/local.py} lifts them for its own load) unless C{--streams-per-address}
    sets one, and over https with C{--tls}.
    """
    extra: dict[str, Any] = {"sse": {}}
    if opt.drain_seconds is not None:
        extra["sse"]["drainSeconds"] = opt.drain_seconds
    if opt.no_journal:
        extra["sse"]["history"] = {"dir": None}
    if opt.stock:
        extra["server"] = {"fastChannel": False}
    listen = None
    if opt.tls:
        certs = os.path.join(workdir, "cert")
        _make_cert(certs)
        tickets = os.path.join(workdir, "tls-tickets") if opt.tls_tickets == "keep" else None
        extra.setdefault("server", {})["tls"] = {"ticketKeyDir": tickets}
        listen = (
            f"https:port={opt.port}:interface=127.0.0.1"
            f":privateKey={os.path.join(certs, 'server.key')}"
            f":certKey={os.path.join(certs, 'server.crt')}:alpn=http/1.1"
        )
    server = local.LocalServer(opt, 0, "storm", workdir, extra, listen)
    del server.local["limits"]
    server.configure({"limits": {"streamsPerAddress": opt.streams_per_address}})
    return server


def _make_cert(directory: str) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_dev_cert", os.path.join(PROJECT, "cert", "make_dev_cert.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.make_dev_cert(directory)


def caps_of(server: local.LocalServer, env: str) -> dict[str, int | None]:
    """The stream caps the server runs with (its config, read as it reads it)."""
    from twisted.python.filepath import FilePath

    if PROJECT not in sys.path:
        sys.path.append(PROJECT)  # after PYTHONPATH's, as the server imports it
    from notificator import config

    limits = config.load(FilePath(server.conf), env or "development").limits
    return {
        "streamsPerUser": limits.streams_per_user,
        "streamsPerAddress": limits.streams_per_address,
        "streams": limits.streams,
        "connections": limits.connections,
    }


def metrics(port: int, tls: bool) -> dict[str, Any]:
    """What the server counted: refusals by reason, connections dropped, replays."""
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            "127.0.0.1", port, timeout=10, context=context
        )
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode("utf-8", "replace")
    except OSError as e:
        return {"error": f"{type(e).__name__}: {e}"}
    finally:
        conn.close()
    out: dict[str, Any] = {}
    wanted = {
        "notificator_streams_refused_total": "streams_refused",
        "notificator_connections_dropped_total": "connections_dropped",
        "notificator_replays_total": "replays",
        "notificator_replayed_total": "replayed",
        "notificator_streams": "streams_open",
    }
    for m in re.finditer(r'^(\w+)(?:\{\w+="([^"]*)"\})? (\S+)$', text, re.M):
        name, label, value = m.groups()
        if name in wanted:
            key = wanted[name]
            number = int(float(value))
            if label is None:
                out[key] = number
            else:
                out.setdefault(key, {})[label] = number
    return out


class Profiler:
    """C{py-spy record} on the server for the storm's duration (raw stacks)."""

    def __init__(self, path: str | None, pid: int) -> None:
        self.path = path
        self.process: subprocess.Popen[bytes] | None = None
        if path:
            spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
            self.process = subprocess.Popen(
                [spy, "record", "--pid", str(pid), "--rate", "1000", "--gil", "--format", "raw"]
                + ["--output", path, "--nonblocking"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)  # it attaches

    def stop(self) -> dict[str, Any] | None:
        if self.process is None or self.path is None:
            return None
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return None
        return top_frames(self.path)


_LINE = re.compile(r":\d+\)$")


def top_frames(path: str, count: int = 15) -> dict[str, Any]:
    """
    The functions that held the CPU most in a raw py-spy file, by function
    (their lines added up), in % of the C{"samples"}: C{"self"}, in the
    function itself; C{"ours"}, the project's functions (C{notificator/})
    with what they called.
    """
    own: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    total = 0
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                stack, _, samples = line.rstrip("\n").rpartition(" ")
                if not samples.isdigit():
                    continue
                n = int(samples)
                total += n
                frames = [_LINE.sub(")", frame) for frame in stack.split(";")]
                own[frames[-1]] += n
                for frame in set(frames):
                    if "(notificator/" in frame:
                        ours[frame] += n
    except OSError:
        return {"samples": 0, "self": [], "ours": []}

    def top(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(frame, round(100 * n / total, 1)) for frame, n in counter.most_common(count)]

    return {"samples": total, "self": top(own), "ours": top(ours)}


async def scenario(opt: argparse.Namespace, server: Any, workdir: str) -> dict[str, Any]:
    """Steps 1-5 of the module docstring, with the numbers of each."""
    nchan = opt.target == "nchan"
    scheme = "https" if opt.tls else "http"
    args = [
        "--url",
        f"{scheme}://127.0.0.1:{server.port}",
        "--pid",
        str(server.pid),
        "--n",
        str(opt.n),
        "--k",
        str(opt.k),
        "--src-ips",
        str(opt.src_ips),
        "--connect-concurrency",
        str(opt.connect_concurrency),
        "--max-total",
        str(opt.max_total),
        "--settle",
        "0",
    ]
    if nchan:
        args += ["--publish-style", "nchan", "--ready", "comment"]
    if opt.no_uvloop:
        args.append("--no-uvloop")
    bench = loadgen.Bench(loadgen.options(args))
    out: dict[str, Any] = {}
    out["connect"] = await bench.connect()
    if out["connect"]["connected"] != opt.n:
        raise RuntimeError(f"only {out['connect']['connected']} of {opt.n} streams opened")
    outcomes: dict[int, str] = {}
    phases: list[tuple[str, int]] = []  # each phase's first sequence number
    bench.record.begin()
    phases.append(("seen", len(bench.record.target)))
    out["seen"] = await bench.publish_each(opt.seen, outcomes)
    out["seen"]["all_delivered"] = await bench.wait_delivered(out["seen"]["accepted"], 60)
    drained = False
    t = time.perf_counter()
    moments: dict[str, float] = {}
    if opt.restart == "restart":
        server.terminate()
        drained = not nchan
        phases.append(("during", len(bench.record.target)))
        during = asyncio.ensure_future(bench.publish_each(opt.during, outcomes, timeout=60))
        still_open = await bench.wait_closed(60)
        out["during"] = await during
        ended = time.perf_counter()
        status = server.wait(30)
        stopped = time.perf_counter()
        moments = {"SIGTERM": t, "streams ended": ended, "exited": stopped}
        server.start()
        bench.pid = server.pid
        out["restart"] = {
            "streams_ended_s": round(ended - t, 3),
            "stopped_s": round(stopped - t, 3),
            "exit_status": status,
            "down_s": round(time.perf_counter() - stopped, 3),
            "streams_not_ended": still_open,
        }
    else:
        for stream in bench.streams:
            stream.close()
        out["disconnect"] = {"streams_not_closed": await bench.wait_closed(10)}
    phases.append(("missed", len(bench.record.target)))
    out["missed"] = await bench.publish_each(opt.missed, outcomes)
    # The server is done with what came before (streams dropped, publishes
    # written, garbage collected): the storm's CPU is the storm's own.
    out["quiet_s"] = await bench.wait_quiet()
    profiler = Profiler(opt.profile, server.pid)
    try:
        out["storm"] = await bench.storm(
            outcomes,
            mode=opt.reconnect,
            window=opt.window,
            drained=drained,
            caps=opt.caps,
            timeout=opt.timeout,
            replay_wait=opt.replay_wait,
        )
    finally:
        top = profiler.stop()
    lost = out["storm"].pop("lost_seqs")
    if lost:
        out["lost"] = lost_by_phase(lost, phases, bench.answered, moments)
    if top is not None:
        out["profile"] = {"file": opt.profile, **top}
    if not nchan:
        out["server_metrics"] = metrics(server.port, opt.tls)
    for stream in bench.streams:
        stream.close()
    return out


def lost_by_phase(
    lost: list[int],
    phases: list[tuple[str, int]],
    answered: dict[int, float],
    moments: dict[str, float],
) -> dict[str, Any]:
    """
    Where the lost notifications come from: how many of each phase's, when
    they were answered 2xx (s after C{moments["SIGTERM"]}, beside the
    other moments of the restart), and the first few sequence numbers.
    """
    out: dict[str, Any] = {"count": len(lost), "first": lost[:10]}
    zero = moments.get("SIGTERM")
    for name, first in reversed(phases):
        mine = [q for q in lost if q >= first]
        lost = [q for q in lost if q < first]
        if not mine:
            continue
        entry: dict[str, Any] = {"count": len(mine)}
        if zero is not None:
            times = sorted(answered[q] - zero for q in mine if q in answered)
            if times:
                entry["answered_s_after_sigterm"] = [round(times[0], 3), round(times[-1], 3)]
        out[name] = entry
    if zero is not None:
        out["moments_s_after_sigterm"] = {k: round(v - zero, 3) for k, v in moments.items()}
    return out


def problems(result: dict[str, Any]) -> list[str]:
    """What makes the run a failure (exit status 1)."""
    storm = result.get("storm")
    if "error" in result or storm is None:
        return [result.get("error", "no storm")]
    out = []
    for key in ("wrong", "truncated", "lost", "doubled", "misrouted", "out_of_order"):
        if storm[key]:
            out.append(f"{storm[key]} {key}")
    if storm["failures"]:
        out.append(f"failed: {storm['failures']}")
    if storm["past_a_cap"]:
        out.append(f"past a cap: {storm['past_a_cap']}")
    other = {k: v for k, v in storm["turned_away"].items() if not k.startswith("cap")}
    if other:
        out.append(f"turned away, not by a cap: {other}")
    refused = result.get("server_metrics", {}).get("streams_refused", {})
    caps = ("user-limit", "address-limit", "server-limit")
    if any(reason not in caps for reason in refused):
        out.append(f"refused for a reason that is not a cap: {refused}")
    return out


def table(result: dict[str, Any]) -> str:
    """The figures, one per line."""
    s = result.get("storm") or {}
    settings = result["settings"]
    lines = [
        f"reconnect storm: {settings['target']}, {settings['n']} streams,"
        f" {settings['restart']}, reconnect {settings['reconnect']}"
        + (f", https (tickets {settings['tls_tickets']})" if settings["tls"] else ""),
        f"  at {result['started']} (load average {result['load_average']})",
    ]
    if not s:
        lines.append(f"  error: {result.get('error')}")
        return "\n".join(lines)
    per = s["per_stream_ms"]
    lines += [
        f"  client addresses        {s['addresses']} (most streams from one: {s['most_from_one_address']};"
        f" caps {s['caps'] or 'none'})",
        f"  reconnects              {s['reconnects']}: {s['complete']} complete replays,"
        f" {s['truncated']} truncated, {s['wrong']} wrong",
        f"  turned away / failed    {s['turned_away'] or 0} / {s['failures'] or 0}",
        f"  notifications missed    {s['notifications_missed']}, replayed {s['notifications_replayed']}"
        f" (lost {s['lost']}, doubled {s['doubled']}, misrouted {s['misrouted']},"
        f" out of order {s['out_of_order']})",
        f"  first reconnect -> last replayed   {s['time_s']} s"
        + (f" (reconnects spread over {s['spread_s']} s)" if s["spread_s"] else ""),
        f"  per stream ms           p50 {per.get('p50')}  p99 {per.get('p99')}  max {per.get('max')}",
        f"  server CPU              {s['server_cpu_s']} s (user {s.get('server_user_s')}, system"
        f" {s.get('server_system_s')}), {s['server_cpu_us_per_reconnect']} us per reconnect"
        f" ({s['server_cpu_pct']} % of a core)",
        f"  load generator CPU      {s['loadgen_cpu_pct']} % of a core, loop lag p99 {s['loadgen_loop_lag_p99_ms']} ms",
    ]
    queue = s.get("listen_queue")
    if queue is not None:
        lines.append(
            f"  listen queue (machine)  {queue['overflows']} overflows, {queue['drops']} drops"
            " (a dropped connect is retried after 1 s, 3 s, ...)"
        )
    if s.get("tls_streams"):
        lines.append(f"  TLS sessions resumed    {s['tls_resumed']} of {s['tls_streams']}")
    if "restart" in result:
        r = result["restart"]
        lines.append(
            f"  restart                 streams ended in {r['streams_ended_s']} s, stopped in"
            f" {r['stopped_s']} s, started again in {r['down_s']} s"
        )
    for phase in ("seen", "during", "missed"):
        if phase in result:
            p = result[phase]
            lines.append(
                f"  {'published (' + phase + ')':<24}{p['per_user']} per user: {p['accepted']} accepted,"
                f" {p['refused']} not, {p['uncertain']} unanswered"
            )
    if "server_metrics" in result:
        m = result["server_metrics"]
        lines.append(
            f"  server counted          refused {m.get('streams_refused', {})},"
            f" dropped {m.get('connections_dropped', {})}, replays {m.get('replays', {})}"
        )
    if "profile" in result:
        profile = result["profile"]
        lines.append(f"  profile ({profile.get('samples')} samples), self time, %:")
        lines += [f"    {pct:5.1f}  {frame}" for frame, pct in profile["self"]]
        lines.append("  profile, notificator's functions with what they called, %:")
        lines += [f"    {pct:5.1f}  {frame}" for frame, pct in profile["ours"]]
    if "lost" in result:
        lines.append(f"  lost, by phase          {result['lost']}")
    bad = problems(result)
    lines.append(
        "  result: " + ("; ".join(bad) if bad else "every stream reopened with a complete replay")
    )
    return "\n".join(lines)


def options(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="The reconnect storm after a restart (bench/README.rst).", prog="storm"
    )
    a = p.add_argument
    a("--n", type=int, default=1000, help="streams (one user each)")
    a(
        "--seen",
        type=int,
        default=2,
        help="notifications per user seen live before the restart (0: the id connect gave)",
    )
    a("--during", type=int, default=1, help="per user, published while the server drains")
    a("--missed", type=int, default=2, help="per user, published before the clients return")
    a("--restart", choices=["restart", "none"], default="restart")
    a("--reconnect", choices=["all", "retry"], default="all")
    a("--window", type=float, default=5.0, help="s, --reconnect retry after a mass disconnect")
    a("--target", choices=["project", "nchan"], default="project")
    a("--tls", action="store_true", help="https, session tickets on")
    a("--tls-tickets", choices=["keep", "lose"], default="keep")
    a(
        "--src-ips",
        type=int,
        default=0,
        help="client addresses 127.0.0.1..N (default: enough for at most 500 streams each)",
    )
    a(
        "--streams-per-address",
        type=int,
        default=1000,
        help="limits.streamsPerAddress for the run (the shipped 1000)",
    )
    a("--cap-streams", type=int, default=None, help="limits.streams of the restarted server")
    a("--drain-seconds", type=float, default=None, help="sse.drainSeconds (default: shipped)")
    a("--stock", action="store_true", help="server.fastChannel false (twisted.web's channel)")
    a(
        "--no-journal",
        action="store_true",
        help="sse.history.dir null: the history in memory only, lost by a restart",
    )
    a("--k", type=int, default=8, help="keep-alive publishing clients")
    a("--connect-concurrency", type=int, default=200, help="step 1 only")
    a("--timeout", type=float, default=180, help="s, the storm")
    a(
        "--replay-wait",
        type=float,
        default=10,
        help="s after its connect event that a stream short of notifications is waited for",
    )
    a("--max-total", type=float, default=900, help="s, the whole run")
    a("--profile", help="py-spy the server during the storm into this file (raw stacks)")
    a("--project", default=PROJECT, help="checkout whose conf/ to use (default: this one)")
    a("--twistd", default="", help="twistd command (default: the one beside this Python)")
    a("--env", default="benchmark", help="config environment")
    a("--log-level", default="info")
    a("--port", type=int, default=0)
    a("--nginx", default="nginx")
    a("--nchan-module", default="/usr/lib/nginx/modules/ngx_nchan_module.so")
    a("--no-pin", action="store_true")
    a("--no-uvloop", action="store_true")
    a("--json", help="write the result here")
    a("--keep", action="store_true", help="keep the run's directory (config, logs, history)")
    opt = p.parse_args(argv)
    if opt.n < 1 or opt.seen < 0:
        p.error("--n must be at least 1, --seen at least 0")
    if opt.target == "nchan" and opt.seen < 1:
        # Ours gives a stream its id with connect; Nchan's first comes with a message.
        p.error("--target nchan needs --seen 1 or more (a stream needs a last event id)")
    if opt.target == "nchan" and (opt.tls or opt.cap_streams is not None):
        p.error("--tls and --cap-streams are for our server only")
    if opt.cap_streams is not None and opt.restart != "restart":
        p.error(
            "--cap-streams is the restarted server's limits.streams: it needs --restart restart"
        )
    if not opt.src_ips:
        opt.src_ips = max(4, math.ceil(opt.n / 500))
    opt.port = opt.port or local.free_port()
    local.pin(opt)
    return opt


def run(opt: argparse.Namespace) -> dict[str, Any]:
    """Start the server, run the scenario, stop it; the result."""
    local.raise_fd_limit(opt.n)
    workdir = tempfile.mkdtemp(prefix="notificator-storm-")
    result: dict[str, Any] = {
        "settings": {k: v for k, v in vars(opt).items() if k not in ("json", "server_cpu")},
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "machine": local.machine(),
        "pinned": opt.server_cpu is not None,
    }
    server: Any = None
    try:
        if opt.target == "nchan":
            server = NchanServer(opt, workdir)
            opt.caps = {}
        else:
            server = project_server(opt, workdir)
            opt.caps = caps_of(server, opt.env)
        result["caps"] = opt.caps
        server.start()
        if opt.cap_streams is not None and opt.target == "project":
            # Only the server the clients come back to has the lower cap.
            server.configure({"limits": {"streams": opt.cap_streams}})
            opt.caps = caps_of(server, opt.env)
            result["caps"] = opt.caps
        loop = loadgen.new_loop(opt.no_uvloop)
        try:
            result.update(loop.run_until_complete(scenario(opt, server, workdir)))
        except (RuntimeError, OSError) as e:
            result["error"] = f"{type(e).__name__}: {e}"
        finally:
            loop.run_until_complete(asyncio.sleep(0.2))
            loop.close()
    finally:
        if server is not None:
            server.stop()
        if opt.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    result["settings"]["caps"] = result.get("caps")
    result["problems"] = problems(result)
    return result


def main(argv: list[str] | None = None) -> int:
    opt = options(argv)
    result = run(opt)
    if opt.json:
        with open(opt.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2, default=str)
            f.write("\n")
    print(table(result))
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
