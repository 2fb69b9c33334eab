# -*- test-case-name: tests.test_bench -*-
"""
Memory per open stream of the real server, without the network.

Builds the server's core and site as C{bench/cpu.py} does
(L{notificator.app.build_core} and L{notificator.app.build_site} with this
checkout's C{conf/*.json}, C{--env production}, on a
L{MemoryReactorClock}), opens C{--streams} event streams over real
C{tcp.Server} transports whose sockets only count bytes, and reports the
process's resident memory (RSS, from C{/proc/self/statm}) before and
after, per stream, and Python's own allocations per stream
(C{tracemalloc}, which RSS figures include but do not separate).

Compare two builds with it, alternating::

    python bench/memory.py
    PYTHONPATH=/path/to/other/checkout python bench/memory.py
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tracemalloc
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import cpu  # noqa: E402  (its in-memory server, shared)


def rss() -> int:
    """Resident bytes of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(
    streams: int, stock: bool = False, trace: bool = True, publish_first: bool = False
) -> dict[str, Any]:

    import notificator

    served = cpu.in_memory_server({"heartbeat": False, "history": {"dir": None}}, stock)
    reactor, hub = served.reactor, served.core.hub
    connections: list[Any] = []

    def open_stream(number: int) -> None:
        conn = served.connect(number, repstr="<memory>")
        conn.protocol.dataReceived(
            b"GET /sse/u%d HTTP/1.1\r\nHost: 127.0.0.1:3000\r\nAccept: text/event-stream\r\n"
            b"Cache-Control: no-cache\r\nUser-Agent: Mozilla/5.0 (bench)\r\n\r\n" % number
        )
        connections.append(conn)

    try:
        if publish_first:
            # As a server whose first request is a publish (or a load
            # balancer's /health): Python's shared attribute dicts of the
            # request class follow the first request's order.
            body = b"id=notify_u0&data=1"
            conn = served.connect(0, "127.0.0.1", "<memory>")
            conn.protocol.dataReceived(
                b"POST /webNotification HTTP/1.1\r\nHost: 127.0.0.1:3000\r\nContent-Type:"
                b" application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body)
            )
            connections.append(conn)
        # Warm up: the first streams build caches and grow the reactor's
        # structures; then measure the rest.
        warm = min(500, streams // 10)
        for i in range(warm):
            open_stream(i)
        reactor.advance(0)
        gc.collect()
        if trace:
            tracemalloc.start()
        before = rss()
        traced_before = tracemalloc.get_traced_memory()[0] if trace else 0
        for i in range(warm, warm + streams):
            open_stream(i)
            if i % 1000 == 0:
                reactor.advance(0)
        reactor.advance(0)
        gc.collect()
        after = rss()
        traced = (tracemalloc.get_traced_memory()[0] - traced_before) if trace else 0
        if trace:
            tracemalloc.stop()
        if hub.stream_count != warm + streams:
            raise RuntimeError(f"{hub.stream_count} streams open of {warm + streams}")
        return {
            "streams": streams,
            "rss_before_mib": round(before / 2**20, 1),
            "rss_after_mib": round(after / 2**20, 1),
            "kb_rss_per_stream": round((after - before) / streams / 1024, 3),
            "kb_python_per_stream": round(traced / streams / 1024, 3) if trace else None,
            "channel": "stock" if stock else "fast",
            "publish_first": publish_first,
            "notificator": os.path.dirname(notificator.__file__),
        }
    finally:
        cpu.stop_in_memory_server(served, connections)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--streams", type=int, default=10_000, help="streams measured (10000)")
    parser.add_argument(
        "--stock",
        action="store_true",
        help="serve with twisted.web's stock HTTP channel (server.fastChannel false)",
    )
    parser.add_argument(
        "--no-trace", action="store_true", help="RSS only (tracemalloc slows it down)"
    )
    parser.add_argument(
        "--publish-first",
        action="store_true",
        help="answer one publish before the streams open (as most servers' first request)",
    )
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.streams, args.stock, not args.no_trace, args.publish_first)))
    return 0


if __name__ == "__main__":
    cpu.checkout_first()
    sys.exit(main())
