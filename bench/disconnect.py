# -*- test-case-name: tests.test_bench -*-
"""
The pause a mass disconnect leaves behind: open N streams on the real
server, drop them all, and measure what the cyclic garbage collector
then has to do.

The server is built as L{cpu} builds it (L{cpu.in_memory_server}: the
production config, C{sse.log}, the garbage collector's tuning, on a
memory reactor; the connections are real C{tcp.Server} transports over
sockets that only count bytes).  N streams open (C{GET /sse/<user>}), a
collection clears what opening left, and then every connection is lost
at once (C{connectionLost}, as the reactor calls it when clients go),
with the collector disabled.  It reports:

 - C{left}: the tracked objects the drop did not free by reference
   counting (what only the cyclic collector can free);
 - C{collected} and C{full_ms}: what the next full collection then
   found unreachable, and how long it took: the pause the server takes
   at its next full collection after the drop;
 - C{drop_ms}: the CPU time of the drop itself (the server's own work
   for N disconnects).

It measures the package first on C{PYTHONPATH} (else this checkout), so
one script compares two builds::

    python bench/disconnect.py --n 10000
    PYTHONPATH=/path/to/other/checkout python bench/disconnect.py --n 10000
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from typing import Any


def measure(n: int, stock: bool = False) -> dict[str, Any]:
    """Open C{n} streams, drop them all, and measure what is left for the collector."""
    import cpu
    from twisted.internet.error import ConnectionDone
    from twisted.python.failure import Failure

    import notificator

    served = cpu.in_memory_server({"heartbeat": False}, stock)
    reactor, writes, hub = served.reactor, served.writes, served.core.hub
    connections: list[Any] = []
    enabled = gc.isenabled()
    gc.collect()
    baseline = len(gc.get_objects())
    try:
        for number in range(n):
            conn = served.connect(number)
            conn.protocol.dataReceived(
                b"GET /sse/u%d HTTP/1.1\r\nHost: 127.0.0.1:3000\r\n"
                b"Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n" % number
            )
            if writes is not None:
                writes.flush()
            connections.append(conn)
        if hub.stream_count != n:
            raise RuntimeError(f"{hub.stream_count} streams open of {n}")
        gc.collect()
        gc.disable()
        tracked = len(gc.get_objects())
        start = time.process_time()
        lost = Failure(ConnectionDone())
        for conn in connections:
            conn.connectionLost(lost)
        del conn
        connections.clear()
        reactor.advance(0)
        drop = time.process_time() - start
        # What the drop did not free (the start-up objects are frozen, out
        # of gc.get_objects()).
        left = len(gc.get_objects()) - baseline
        if hub.stream_count:
            raise RuntimeError(f"{hub.stream_count} streams still open")
        start = time.perf_counter()
        collected = gc.collect()
        full = time.perf_counter() - start
    finally:
        if enabled:
            gc.enable()
        cpu.stop_in_memory_server(served, connections)
    return {
        "streams": n,
        "tracked_with_streams": tracked - baseline,
        "left": max(0, left),
        "collected": collected,
        "full_ms": round(full * 1000, 1),
        "drop_ms": round(drop * 1000, 1),
        "notificator": os.path.dirname(notificator.__file__),
        "python": sys.version.split()[0],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10000, help="streams (default 10000)")
    parser.add_argument("--stock", action="store_true", help="twisted.web's stock channel")
    parser.add_argument("--json", help="write the result to this file too")
    args = parser.parse_args(argv)
    result = measure(args.n, args.stock)
    print(
        "{streams} streams dropped at once: {left} tracked objects left for the cyclic"
        " collector; the next full collection freed {collected} in {full_ms} ms"
        " (drop itself {drop_ms} ms CPU; {notificator})".format(**result)
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    import cpu  # (this script's folder is first on sys.path)

    cpu.checkout_first()
    sys.exit(main())
