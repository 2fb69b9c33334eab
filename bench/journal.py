# -*- test-case-name: tests.test_bench -*-
"""
A full history, for the benchmarks' "history full" mode.

Writes a history journal (C{history.log}, the format of
L{notificator.history.journal}) holding C{--users} users with
C{--per-user} notifications each, as a server that has run for a while
would hold them: published round-robin over the last C{--span} seconds,
ids as the server gives them, each frame what C{load.js} publishes
(C{{"s":..,"t":..,"pad":"benchmark notification"}} to C{u<i>}), closed
cleanly as a stopped server leaves it.  A server started with
C{sse.history.dir} holding it loads it as its own::

    python bench/journal.py --users 5000 --per-user 100 --out /tmp/full
    # -> /tmp/full/history.log: 500,000 notifications

C{--measure} then loads it as the server does (L{HistoryFile.load} and
L{History.load}, with C{--size}, C{--ttl} and C{--max-bytes} as in
C{sse.history}) in two fresh processes, and reports per held notification
the memory Python allocated for the history (C{tracemalloc}, after a full
collection), the process's resident memory (RSS) it added, and the objects
the cyclic garbage collector tracks, beside the journal's bytes per
notification::

    python bench/journal.py --users 5000 --per-user 24 --out /tmp/h --measure

The times are taken from the wall clock when the file is written: use it
within C{sse.history.ttl} seconds, or the server drops what expired.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.dirname(HERE)

#: The journal's name in C{sse.history.dir} (L{HistoryFile.NAME}).
NAME = "history.log"


def records(users: int, per_user: int, end: float, span: float) -> Iterator[bytes]:
    """
    The records of a clean journal of C{users} x C{per_user} notifications
    published round-robin over the C{span} seconds before C{end}, user by
    user as a snapshot lists them.
    """
    from notificator.events import SEQ_SPAN, encode_frame
    from notificator.history import MAGIC, encode_entry, encode_state

    total = users * per_user
    first_ms = int((end - span) * 1000)
    step = span * 1000 / max(total, 1)
    # Publish number i is at first_ms + i * step; several in one
    # millisecond take the next sequence numbers, as EventIds gives them.
    ms_of = [first_ms + int(i * step) for i in range(total)] if total else []
    seq_of = [0] * total
    for i in range(1, total):
        if ms_of[i] == ms_of[i - 1]:
            seq_of[i] = seq_of[i - 1] + 1
    known = (first_ms - 1) * SEQ_SPAN
    last = ms_of[-1] * SEQ_SPAN + seq_of[-1] if total else known
    yield MAGIC
    yield encode_state(known, 0, last, False)
    for user in range(users):
        user_id = f"u{user}"
        for n in range(per_user):
            i = n * users + user
            ms, seq = ms_of[i], seq_of[i]
            data = '{"s":%d,"t":%d.%03d,"pad":"benchmark notification"}' % (
                i,
                ms,
                i % 1000,
            )
            frame = encode_frame("notify", data, f"{ms}-{seq}")
            yield encode_entry(user_id, ms * SEQ_SPAN + seq, frame, ms / 1000)
    yield encode_state(known, 0, last, True)


def write(directory: str, users: int, per_user: int, span: float = 600.0) -> dict[str, Any]:
    """
    Write C{directory}/C{history.log} (replaced whole); return what it
    holds: C{notifications}, C{users}, C{bytes} and C{bytes_per_notification}.
    """
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, NAME)
    tmp = path + ".tmp"
    size = 0
    with open(tmp, "wb", 1 << 20) as f:
        for record in records(users, per_user, time.time(), span):
            f.write(record)
            size += len(record)
    os.replace(tmp, path)
    total = users * per_user
    return {
        "path": path,
        "notifications": total,
        "users": users,
        "bytes": size,
        "bytes_per_notification": round(size / total, 1) if total else None,
    }


def rss() -> int:
    """Resident bytes of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def load(directory: str, size: int, ttl: float, max_bytes: int, trace: bool) -> dict[str, Any]:
    """
    Load the journal in C{directory} as the server does at start-up, and
    measure what the loaded history holds (in this process: call it in a
    fresh one).

    @param trace: measure with C{tracemalloc} (Python's allocations, exact);
        otherwise the resident memory (RSS, what the machine pays, allocator
        slack included), and the load's time.
    """
    import tracemalloc

    from twisted.internet.task import Clock

    from notificator.events import SEQ_SPAN
    from notificator.history import History, HistoryFile

    clock = Clock()
    clock.advance(time.time())
    gc.collect()
    tracked = len(gc.get_objects())
    before = rss()
    if trace:
        tracemalloc.start()
    start = time.process_time()
    loaded = HistoryFile(directory).load()
    if loaded is None:
        raise SystemExit(f"journal: no history in {directory}")
    history = History(
        clock,
        size=size,
        ttl=ttl,
        max_bytes=max_bytes,
        known_since=int(clock.seconds() * 1000) * SEQ_SPAN,
    )
    history.load(loaded)
    del loaded
    seconds = time.process_time() - start
    gc.collect()
    held = len(history)
    result: dict[str, Any] = {
        "held": held,
        "users": history.user_count,
        "counted_bytes": history.bytes,
        "gc_tracked_per_held": round((len(gc.get_objects()) - tracked) / max(held, 1), 3),
    }
    if trace:
        result["traced_bytes"] = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    else:
        result["rss_bytes"] = rss() - before
        result["load_s"] = round(seconds, 2)
    return result


def measure(directory: str, size: int, ttl: float, max_bytes: int) -> dict[str, Any]:
    """L{load} in two fresh processes (RSS, then tracemalloc), per held notification."""
    journal_bytes = os.path.getsize(os.path.join(directory, NAME))
    runs = {}
    for mode in ("rss", "trace"):
        out = subprocess.run(
            [
                sys.executable,
                os.path.abspath(__file__),
                "--load",
                mode,
                "--out",
                directory,
                "--size",
                str(size),
                "--ttl",
                str(ttl),
                "--max-bytes",
                str(max_bytes),
            ],
            check=True,
            stdout=subprocess.PIPE,
            env=dict(os.environ, PYTHONPATH=_path()),
        ).stdout
        runs[mode] = json.loads(out)
    held = runs["trace"]["held"]
    per = max(held, 1)
    return {
        "held": held,
        "users": runs["trace"]["users"],
        "journal_bytes_per_held": round(journal_bytes / per, 1),
        "traced_bytes_per_held": round(runs["trace"]["traced_bytes"] / per, 1),
        "rss_bytes_per_held": round(runs["rss"]["rss_bytes"] / per, 1),
        "counted_bytes_per_held": round(runs["trace"]["counted_bytes"] / per, 1),
        "gc_tracked_per_held": runs["trace"]["gc_tracked_per_held"],
        "load_s": runs["rss"]["load_s"],
    }


def _path() -> str:
    """This process's PYTHONPATH, or this checkout: the same notificator in the child."""
    return os.environ.get("PYTHONPATH") or PROJECT


def checkout_first() -> None:
    """Import this checkout's notificator unless PYTHONPATH names another."""
    given = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path.insert(1 + len(given), PROJECT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    a = parser.add_argument
    a("--out", required=True, help="directory to write history.log in (sse.history.dir)")
    a("--users", type=int, default=5000, help="users u0.. (5000)")
    a("--per-user", type=int, default=100, help="notifications per user (100: sse.history.size)")
    a("--span", type=float, default=600.0, help="seconds they were published over (600)")
    a("--measure", action="store_true", help="then load it and report memory per notification")
    a("--size", type=int, default=100, help="sse.history.size to load it with (100)")
    a("--ttl", type=float, default=3600.0, help="sse.history.ttl to load it with (3600)")
    a("--max-bytes", type=int, default=1 << 40, help="sse.history.maxBytes to load it with")
    a("--load", choices=("rss", "trace"), help=argparse.SUPPRESS)
    a("--json", action="store_true", help="print JSON instead of lines")
    args = parser.parse_args(argv)
    if args.load:
        result = load(args.out, args.size, args.ttl, args.max_bytes, args.load == "trace")
        print(json.dumps(result))
        return 0
    written = write(args.out, args.users, args.per_user, args.span)
    result = {"written": written}
    if args.measure:
        result["loaded"] = measure(args.out, args.size, args.ttl, args.max_bytes)
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"{written['path']}: {written['notifications']} notifications of {written['users']}"
        f" users, {written['bytes']} bytes ({written['bytes_per_notification']} per notification)"
    )
    if args.measure:
        m = result["loaded"]
        print(
            f"loaded: {m['held']} held; per held notification: journal {m['journal_bytes_per_held']}"
            f" B, Python {m['traced_bytes_per_held']} B (tracemalloc), RSS {m['rss_bytes_per_held']}"
            f" B, counted {m['counted_bytes_per_held']} B, {m['gc_tracked_per_held']} objects"
            f" tracked by the GC; load {m['load_s']} s"
        )
    return 0


if __name__ == "__main__":
    checkout_first()
    sys.exit(main())
