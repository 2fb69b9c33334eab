# -*- test-case-name: tests.test_bench -*-
"""
Benchmark a freshly started local Notificator and print a table.

Two server runs, both on 127.0.0.1 and a free port, each a new
C{twistd -n notificator} from this checkout's config (C{conf/*.json}) plus a
C{local.json} written for the run (heartbeat, log dir, log level C{info}
as in production; the access log stays on):

 1. main (heartbeat off): phases connect, latency, burst, idle;
 2. hb (heartbeat every C{--heartbeat} s): phases connect, idle - the
    server's CPU with heartbeats flowing.

With two or more CPUs the server is pinned to CPU 0 and the load generator
to CPU 1 (C{--no-pin} to turn that off), as in the issue's targets.  The
server is stopped by its own PID (SIGTERM, then SIGKILL after 10 s).

Example (from the checkout)::

    python bench/local.py --n 1000 --json bench/results/local-1000.json

C{--held N} starts each server from a full history instead of an empty
one: a journal of N notifications of C{--held-users} users written by
C{bench/journal.py} into its C{sse.history.dir}, loaded at start-up as a
restarted server loads its own (the "history full" mode)::

    python bench/local.py --n 5000 --phases connect --heartbeat 0 --held 500000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import journal  # noqa: E402
import loadgen  # noqa: E402
from report import table  # noqa: E402

PROJECT = os.path.dirname(HERE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def default_twistd() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.exists(script):
        return [sys.executable, script]
    return [sys.executable, "-m", "twisted"]


def raise_fd_limit(n: int) -> int:
    """Raise the soft RLIMIT_NOFILE to C{n + 2000} (bounded by the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 2000
    if hard != resource.RLIM_INFINITY:
        if hard < want:
            raise SystemExit(f"local: fd hard limit {hard} < {want} needed for --n {n}")
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


def stop_process(p: subprocess.Popen[bytes] | None, grace: float = 10.0) -> None:
    """SIGTERM C{p} if it still runs, and SIGKILL it after C{grace} seconds."""
    if p is None or p.poll() is not None:
        return
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(grace)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(10)


def answers(port: int, tls: bool = False) -> bool:
    """
    Whether the server on C{port} answers HTTP (C{GET /health}; over TLS,
    unverified, with C{tls}): it is ready.  Its port accepts connections
    before that, while it still loads its history (twistd binds the
    listeners first), and the phases must not count that load as the cost
    of opening streams.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as plain:
            s = plain
            if tls:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                s = context.wrap_socket(plain)
            s.settimeout(1)
            s.sendall(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            head = b""
            while len(head) < 5:
                more = s.recv(5 - len(head))
                if not more:
                    break
                head += more
            return head == b"HTTP/"
    except OSError:
        return False


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """C{over} merged into C{base} key by key (as the config files merge)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


class ServerProcess:
    """
    A server in a subprocess, pinned to C{cpu}, its output appended to
    C{log_path}, ready once it answers HTTP on C{port} (L{answers}; over
    TLS with C{tls}). Subclasses set the attributes in their constructor.
    """

    name = "server"
    command: list[str]
    log_path: str
    port: int
    cpu: int | None = None
    tls = False
    cwd: str | None = None
    process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        cpu = self.cpu

        def pin() -> None:
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})

        # Appended to: a restarted server's output follows the first one's.
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                self.command,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                preexec_fn=pin,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(
                    f"local: {self.name} exited {self.process.returncode}; see {self.log_path}"
                )
            if answers(self.port, self.tls):
                return
            time.sleep(0.1)
        self.stop()
        raise SystemExit(f"local: {self.name} did not answer on {self.port} within {timeout} s")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        stop_process(self.process)

    def terminate(self) -> None:
        """SIGTERM, as an operator stops it (it drains), without waiting."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int | None:
        """Wait up to C{timeout} s for it to exit; its exit status, or None."""
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


class LocalServer(ServerProcess):
    """
    One C{twistd -n notificator} on a free loopback port, in a temporary
    config dir, with its history on disk in that dir (C{history/}: it
    survives L{restart}, as in production) and its logs there too.

    @param extra: more C{local.json} keys, merged over the run's own.
    @param listen: the C{--listen} description (default: plain TCP on
        127.0.0.1 and the port).
    @param held: start from a journal of that many notifications
        (C{--held}), spread over at most C{held_users} users.
    @param history_max_bytes: C{sse.history.maxBytes} (L{None}: as shipped).
    """

    def __init__(
        self,
        opt: argparse.Namespace,
        heartbeat: float,
        tag: str,
        workdir: str,
        extra: dict[str, Any] | None = None,
        listen: str | None = None,
        *,
        held: int = 0,
        held_users: int = 5000,
        history_max_bytes: int | None = None,
    ) -> None:
        self.port = opt.port or free_port()
        self.dir = os.path.join(workdir, tag)
        self.conf = conf = os.path.join(self.dir, "conf")
        logdir = os.path.join(self.dir, "log")
        os.makedirs(conf)
        os.makedirs(logdir)
        for name in os.listdir(os.path.join(opt.project, "conf")):
            if name.endswith(".json"):
                shutil.copy(os.path.join(opt.project, "conf", name), conf)
        self.held: dict[str, Any] | None = None
        # Not the checkout's var/history: each run its own, from empty (or
        # from the journal --held writes), surviving restart() as in production.
        history_dir = os.path.join(self.dir, "history")
        history: dict[str, Any] = {"dir": history_dir}
        if history_max_bytes is not None:
            history["maxBytes"] = history_max_bytes
        if held:
            users = min(held_users, held)
            self.held = journal.write(history_dir, users, -(-held // users))
        self.local: dict[str, Any] = {
            "sse": {
                "heartbeat": heartbeat > 0,
                "heartbeatInterval": heartbeat or 55,
                "history": history,
            },
            "server": {"log": {"dir": logdir, "level": opt.log_level}},
            # The load generator publishes from 127.0.0.1-127.0.0.4.
            "publish": {"allow": ["127.0.0.0/8"]},
            # Every stream comes from one of those few addresses.
            "limits": {"streamsPerUser": 1000, "streamsPerAddress": None},
        }
        self.configure(extra or {})
        self.log_path = os.path.join(self.dir, "twistd.log")
        self.command = (opt.twistd.split() if opt.twistd else default_twistd()) + [
            "-n",
            "--pidfile=",
            "notificator",
            "--config",
            conf,
            "--listen",
            listen or f"tcp:{self.port}:interface=127.0.0.1",
        ]
        if opt.env:
            self.command += ["--env", opt.env]
        self.cpu = opt.server_cpu
        self.cwd = PROJECT
        self.tls = bool(listen) and listen.split(":", 1)[0] in ("https", "ssl")

    def configure(self, extra: dict[str, Any]) -> None:
        """Merge C{extra} into C{local.json}, for the next start."""
        self.local = merged(self.local, extra)
        with open(os.path.join(self.conf, "local.json"), "w", encoding="utf-8") as f:
            json.dump(self.local, f)

    def log_lines(self, pattern: str) -> int:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return sum(1 for line in f if re.search(pattern, line))
        except OSError:
            return 0


def generator_options(
    opt: argparse.Namespace, port: int, pid: int, phases: str, hb: float, label: str
) -> argparse.Namespace:
    args = [
        "--url",
        f"http://127.0.0.1:{port}",
        "--pid",
        str(pid),
        "--n",
        str(opt.n),
        "--phases",
        phases,
        "--m",
        str(opt.m),
        "--rate",
        str(opt.rate),
        "--k",
        str(opt.k),
        "--burst-c",
        str(opt.burst_c),
        "--burst-t",
        str(opt.burst_t),
        "--idle-t",
        str(opt.idle_t),
        "--hb-interval",
        str(hb),
        "--label",
        label,
        "--max-total",
        str(opt.max_total),
    ]
    if opt.no_uvloop:
        args.append("--no-uvloop")
    return loadgen.options(args)


def run_one(
    opt: argparse.Namespace, heartbeat: float, phases: str, tag: str, workdir: str
) -> dict[str, Any]:
    server = LocalServer(
        opt,
        heartbeat,
        tag,
        workdir,
        held=opt.held,
        held_users=opt.held_users,
        history_max_bytes=opt.history_max_bytes,
    )
    server.start()
    try:
        label = f"{opt.label}-{tag}"
        result = loadgen.run(
            generator_options(opt, server.port, server.pid, phases, heartbeat, label)
        )
    finally:
        server.stop()
    result["server_command"] = server.command
    if opt.held:
        result["held_journal"] = server.held
    result["server_log_lines"] = server.log_lines(r".")
    return result


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            m = re.search(r"model name\s*:\s*(.*)", f.read())
            model = m.group(1) if m else ""
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpus": os.cpu_count(),
        "cpu": model,
        "mem_gb": round(mem),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def options(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Benchmark a freshly started local Notificator.")
    a = p.add_argument
    a("--n", type=int, default=1000, help="streams")
    a("--m", type=int, default=5000, help="latency: notifications")
    a("--rate", type=float, default=500, help="latency: notifications per second")
    a("--k", type=int, default=4, help="latency: keep-alive POST clients")
    a("--burst-c", type=int, default=16)
    a("--burst-t", type=float, default=10)
    a("--idle-t", type=float, default=10)
    a(
        "--heartbeat",
        type=float,
        default=1,
        help="heartbeat interval (s) of the hb run; 0 skips that run",
    )
    a("--phases", default="connect,latency,burst,idle", help="phases of the main run")
    a(
        "--held",
        type=int,
        default=0,
        help="start each server from a journal of this many notifications (0: an empty history)",
    )
    a("--held-users", type=int, default=5000, help="users the --held notifications are for (5000)")
    a(
        "--history-max-bytes",
        type=int,
        default=None,
        help="sse.history.maxBytes for the run (default: as shipped)",
    )
    a("--project", default=PROJECT, help="checkout whose conf/ to use (default: this one)")
    a("--twistd", default="", help="twistd command (default: the one beside this Python)")
    a("--env", default="", help="config environment (--env of twistd notificator)")
    a("--log-level", default="info", help="server.log.level for the run (a deployment's: info)")
    a("--port", type=int, default=0, help="port (default: a free one)")
    a("--no-pin", action="store_true", help="do not pin server and generator to CPUs 0 and 1")
    a("--no-uvloop", action="store_true")
    a("--max-total", type=float, default=900, help="s, hard limit per server run")
    a("--label", default="", help="name of the run in the table and JSON")
    a("--json", help="write the results (both runs) to this file")
    a("--keep", action="store_true", help="keep the temporary config and log dir")
    opt = p.parse_args(argv)
    opt.label = opt.label or f"notificator-{opt.n}"
    pin(opt)
    return opt


def pin(opt: argparse.Namespace) -> None:
    """
    Unless C{--no-pin} (or on one CPU): this process (the generator) on CPU 1
    from now on, and C{opt.server_cpu} 0 for the servers it starts.
    """
    opt.server_cpu = None
    if not opt.no_pin and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        opt.server_cpu = 0
        os.sched_setaffinity(0, {1})


def main(argv: list[str] | None = None) -> int:
    opt = options(argv)
    journal.checkout_first()
    raise_fd_limit(opt.n)
    workdir = tempfile.mkdtemp(prefix="notificator-bench-")
    try:
        main_run = run_one(opt, 0, opt.phases, "main", workdir)
        hb_run = None
        if opt.heartbeat > 0:
            time.sleep(1)
            hb_run = run_one(opt, opt.heartbeat, "connect,idle", "hb", workdir)
    finally:
        if opt.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    result = {
        "label": opt.label,
        "machine": machine(),
        "pinned": opt.server_cpu is not None,
        "settings": {k: v for k, v in vars(opt).items() if k not in ("json", "server_cpu")},
        "main": main_run,
        "heartbeat_run": hb_run,
    }
    if opt.json:
        with open(opt.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    print(table([(opt.label, main_run, hb_run)]))
    return 1 if "error" in main_run or (hb_run and "error" in hb_run) else 0


if __name__ == "__main__":
    sys.exit(main())
