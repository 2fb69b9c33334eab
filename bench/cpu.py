# -*- test-case-name: tests.test_bench -*-
"""
Python CPU per operation of the real server, without the network.

Builds the server's core and site as C{twistd notificator} does
(L{notificator.app.build_core} and L{notificator.app.build_site}, which
C{tap.makeService} calls, with this checkout's C{conf/*.json} read as
C{--env production} reads it), with what C{makeService} runs around them
that costs CPU per request: C{sse.log} (in a temporary directory) and the
garbage collector's tuning.  It does so on a L{MemoryReactorClock}, where
no listener starts the site, so C{access.log} is not written, and drives
the site over real C{tcp.Server} transports whose sockets only count
bytes.  It reports, in microseconds of process CPU:

 - C{connect}: a new connection sending C{GET /sse/<user>} until the
   stream is open (the request line and three headers, as C{load.js});
 - C{publish}: one form C{POST /webNotification} on a keep-alive connection,
   delivered to one stream and answered;
 - C{heartbeat}: one heartbeat frame to one stream.

Each figure is the best of many short rounds, so a busy or throttled
machine (which slows some rounds) moves it much less than the wall-clock
figures of C{local.py} or C{../shared/bench}.  Beside it is the mean over
all rounds, which includes what the best hides: the cyclic garbage
collector (the rounds are not preceded by a collection, as in a running
server; the time its collections took in each phase is reported too).
System calls, the kernel and the reactor's polling are not in it: compare
two builds with it, and use the load benchmarks for absolute figures.

C{--history full} starts the service from a full history, as a server that
has run for a while restarts with: a journal (C{bench/journal.py}) of
C{--held-users} users with C{sse.history.size} notifications each, loaded
at start-up within C{sse.history.maxBytes} (C{--max-bytes} to raise it).

Example, comparing two checkouts (each script measures its own
checkout's package)::

    python bench/cpu.py
    python /path/to/other/checkout/bench/cpu.py
    python bench/cpu.py --history full --max-bytes 1073741824   # 500,000 held
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any, NamedTuple

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.dirname(HERE)


class CountingSocket:
    """Enough of a socket for C{tcp.Server}: C{send} takes everything."""

    def __init__(self) -> None:
        self.sent = 0

    def setblocking(self, flag: bool) -> None:
        pass

    def fileno(self) -> int:
        return -1

    def setsockopt(self, *args: object) -> None:
        pass

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", 3000)

    def close(self) -> None:
        pass

    def shutdown(self, how: int) -> None:
        pass

    def send(self, data: bytes) -> int:
        self.sent += len(data)
        return len(data)


class InMemoryServer(NamedTuple):
    """What L{in_memory_server} built and started."""

    #: The temporary directory (config and logs).
    work: str
    reactor: Any
    #: The started services (L{stop_in_memory_server} stops them).
    service: Any
    #: L{notificator.app.Core}.
    core: Any
    site: Any
    #: The fast channel's write batch (L{None} on the stock channel).
    writes: Any

    def connect(self, number: int, host: str | None = None, repstr: str = "<bench>") -> Any:
        """
        The C{number}th connection to the site, over a real C{tcp.Server}
        whose socket only counts (L{CountingSocket}), from C{host}, by
        default an address of its own (a browser per address, as on a
        company network, and under C{limits.streamsPerAddress}).
        """
        from twisted.internet import tcp

        if host is None:
            host = "10.0.%d.%d" % divmod(number % 65536, 256)
        protocol = self.site.buildProtocol(None)
        conn = tcp.Server(
            CountingSocket(), protocol, (host, 1024 + number % 60000), None, number, self.reactor
        )
        conn.repstr = repstr
        protocol.makeConnection(conn)
        return conn


def in_memory_server(
    sse: dict[str, Any], stock: bool, held: tuple[int, int] | None = None
) -> InMemoryServer:
    """
    The server's core and site as C{twistd notificator --env production}
    builds them (L{notificator.app.build_core},
    L{notificator.app.build_site}) from this checkout's C{conf/}, with
    these C{sse} keys, with C{sse.log} and the GC tuning of
    C{tap.makeService} (the parent of the core's services, as there) and
    the logs in a new temporary directory, started on a
    L{MemoryReactorClock} set to the wall clock.

    @param stock: serve with twisted.web's stock channel.
    @param held: (users, notifications each): start from a journal holding
        them, in the history's directory (C{var/history}).
    """
    from twisted.internet.testing import MemoryReactorClock

    from notificator import logs, services, tap
    from notificator.app import build_core, build_site
    from notificator.http import fast

    work = tempfile.mkdtemp(prefix="notificator-bench-")
    conf = os.path.join(work, "conf")
    os.makedirs(conf)
    for name in os.listdir(os.path.join(PROJECT, "conf")):
        if name.endswith(".json") and name != "local.json":
            shutil.copy(os.path.join(PROJECT, "conf", name), conf)
    server: dict[str, Any] = {"log": {"dir": os.path.join(work, "log")}}
    if stock:
        server["fastChannel"] = False
    with open(os.path.join(conf, "local.json"), "w") as f:
        json.dump({"sse": sse, "server": server}, f)
    if held is not None:
        import journal

        journal.write(os.path.join(work, "var", "history"), *held)
    # The configuration as twistd reads and checks it (tap.preflight).
    options = tap.Options()
    options.parseOptions(["--config", conf, "--env", "production", "--listen", "tcp:3000"])
    cfg = options["loaded"]
    reactor = MemoryReactorClock()
    reactor.advance(time.time())
    root = services.SequentialService()
    app_log = logs.AppLogService(
        cfg.server.log_dir, cfg.server.log_level, clock=reactor, keep_days=cfg.server.log_keep_days
    )
    app_log.setServiceParent(root)
    # As in tap.makeService: the tuning freezes what its children loaded.
    serving: Any = services.GCTuningService()
    serving.setServiceParent(root)
    core = build_core(cfg, reactor)
    for service in core.services:
        service.setServiceParent(serving)
    activity = app_log.logger("notificator.web")
    site = build_site(core, cfg, reactor, activity, serving)
    # The batch build_site gave the fast channel: the bench ends each
    # reactor pass by hand.
    writes = next((s for s in serving if isinstance(s, fast.WriteBatch)), None)
    root.startService()
    return InMemoryServer(work, reactor, root, core, site, writes)


class GCTimes:
    """The cyclic garbage collector's collections and their CPU, per generation and phase."""

    def __init__(self) -> None:
        self.phase = ""
        self.collections: dict[str, list[int]] = {}
        self.seconds: dict[str, list[float]] = {}
        self._start = 0.0

    def __call__(self, step: str, info: dict[str, int]) -> None:
        if step == "start":
            self._start = time.process_time()
            return
        if not self.phase:
            return
        generation = info["generation"]
        self.collections.setdefault(self.phase, [0, 0, 0])[generation] += 1
        self.seconds.setdefault(self.phase, [0.0, 0.0, 0.0])[generation] += (
            time.process_time() - self._start
        )

    def report(self) -> dict[str, Any]:
        return {
            phase: {
                "collections": self.collections[phase],
                "ms": [round(s * 1000, 1) for s in self.seconds[phase]],
            }
            for phase in self.collections
        }


def measure(
    rounds: int,
    per_round: int,
    publishes: int,
    history: str = "disk",
    stock: bool = False,
    held_users: int = 5000,
    max_bytes: int | None = None,
) -> dict[str, Any]:

    import notificator

    sse: dict[str, Any] = {"heartbeat": False}
    held = None
    if history == "off":
        sse["history"] = {"size": 0}
    elif history == "memory":
        sse["history"] = {"dir": None}
    elif history == "full":
        held = (held_users, 100)
    if max_bytes is not None:
        sse.setdefault("history", {})["maxBytes"] = max_bytes
    served = in_memory_server(sse, stock, held)
    reactor, hub, writes = served.reactor, served.core.hub, served.writes
    stats = served.core.stats
    kept = getattr(served.core.broker, "history", None)
    held_count = len(kept) if kept is not None else 0
    connections: list[Any] = []

    def connection(number: int, host: str = "127.0.0.1") -> Any:
        conn = served.connect(number, host)
        connections.append(conn)
        return conn

    def flush(conn: Any) -> None:
        # The end of the reactor pass: the write batch sends, then the
        # reactor's write pass sends anything queued.
        if writes is not None:
            writes.flush()
        if conn.dataBuffer or conn._tempDataLen:
            conn.doWrite()

    best = {"connect": float("inf"), "publish": float("inf"), "heartbeat": float("inf")}
    total = {"connect": 0.0, "publish": 0.0, "heartbeat": 0.0}
    gc_times = GCTimes()
    gc.callbacks.append(gc_times)
    try:
        users = 0
        for _ in range(rounds):
            gc_times.phase = "connect"
            start = time.process_time()
            for _ in range(per_round):
                # A browser per address, as on a company network (and under
                # limits.streamsPerAddress); the publisher is on loopback.
                conn = connection(users, "10.0.%d.%d" % divmod(users % 65536, 256))
                conn.protocol.dataReceived(
                    b"GET /sse/u%d HTTP/1.1\r\nHost: 127.0.0.1:3000\r\n"
                    b"Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n" % users
                )
                flush(conn)
                users += 1
            spent = time.process_time() - start
            gc_times.phase = ""
            best["connect"] = min(best["connect"], spent / per_round)
            total["connect"] += spent

            sender = connection(10**6 + users)
            posts = []
            for i in range(publishes):
                body = (
                    b"id=notify_u%d&data=%%7B%%22s%%22%%3A%d%%2C%%22t%%22%%3A1700000000000%%7D"
                    % (
                        i % users,
                        i,
                    )
                )
                posts.append(
                    b"POST /webNotification HTTP/1.1\r\nHost: 127.0.0.1:3000\r\n"
                    b"Content-Type: application/x-www-form-urlencoded; charset=UTF-8\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
            gc_times.phase = "publish"
            start = time.process_time()
            for post in posts:
                sender.protocol.dataReceived(post)
                flush(sender)
            spent = time.process_time() - start
            gc_times.phase = ""
            best["publish"] = min(best["publish"], spent / publishes)
            total["publish"] += spent

            gc_times.phase = "heartbeat"
            start = time.process_time()
            hub.heartbeat()
            while hub.sweeping:  # the next slices, as the next reactor turns
                reactor.advance(0)
            if writes is not None:
                writes.flush()
            spent = time.process_time() - start
            gc_times.phase = ""
            best["heartbeat"] = min(best["heartbeat"], spent / hub.stream_count)
            total["heartbeat"] += spent / hub.stream_count
        if stats.published != rounds * publishes or stats.delivered != stats.published:
            raise RuntimeError(f"published {stats.published}, delivered {stats.delivered}")
        if hub.stream_count != users:
            raise RuntimeError(f"{hub.stream_count} streams open of {users}")
        result = {k: round(v * 1e6, 2) for k, v in best.items()}
        result.update(
            connect_mean=round(total["connect"] / users * 1e6, 2),
            publish_mean=round(total["publish"] / stats.published * 1e6, 2),
            heartbeat_mean=round(total["heartbeat"] / rounds * 1e6, 2),
            gc=gc_times.report(),
            held=held_count,
            streams=users,
            publishes=stats.published,
            notificator=os.path.dirname(notificator.__file__),
            python=sys.version.split()[0],
        )
        return result
    finally:
        gc.callbacks.remove(gc_times)
        stop_in_memory_server(served, connections)


def stop_in_memory_server(served: InMemoryServer, connections: list[Any]) -> None:
    """Close C{connections}, stop what L{in_memory_server} started and remove its directory."""
    from twisted.internet.error import ConnectionDone
    from twisted.python.failure import Failure

    for conn in connections:
        if conn.connected:
            conn.connectionLost(Failure(ConnectionDone()))
    served.service.stopService()
    shutil.rmtree(served.work, ignore_errors=True)


def checkout_first() -> None:
    """Import this checkout's notificator unless PYTHONPATH names another."""
    given = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path.insert(1 + len(given), PROJECT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--rounds", type=int, default=30, help="rounds; the best is kept (30)")
    parser.add_argument("--streams", type=int, default=200, help="streams opened per round (200)")
    parser.add_argument("--publishes", type=int, default=300, help="publishes per round (300)")
    parser.add_argument(
        "--history",
        choices=("disk", "memory", "off", "full"),
        default="disk",
        help="sse.history: kept on disk (the default config), in memory only, off (size 0),"
        " or on disk and full at start (--held-users users at sse.history.size)",
    )
    parser.add_argument("--held-users", type=int, default=5000, help="--history full: users (5000)")
    parser.add_argument(
        "--max-bytes", type=int, default=None, help="sse.history.maxBytes (default: as shipped)"
    )
    parser.add_argument(
        "--stock",
        action="store_true",
        help="serve with twisted.web's stock HTTP channel (server.fastChannel false)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a line")
    args = parser.parse_args(argv)
    result = measure(
        args.rounds,
        args.streams,
        args.publishes,
        args.history,
        args.stock,
        args.held_users,
        args.max_bytes,
    )
    if args.json:
        print(json.dumps(result))
    else:
        gc_ms = {phase: sum(g["ms"]) for phase, g in result["gc"].items()}
        print(
            f"python CPU, best of {args.rounds} rounds (mean): connect {result['connect']} us"
            f" ({result['connect_mean']}), publish {result['publish']} us"
            f" ({result['publish_mean']}), heartbeat {result['heartbeat']} us"
            f" ({result['heartbeat_mean']}) per stream ({result['streams']} streams,"
            f" {result['publishes']} publishes, {result['held']} notifications held;"
            f" GC ms per phase {gc_ms}; {result['notificator']})"
        )
    return 0


if __name__ == "__main__":
    checkout_first()
    sys.exit(main())
