# -*- test-case-name: tests.test_logs_e2e,tests.test_history_e2e -*-
"""
Attacks that make a real server spend memory or disk out of proportion to
what the attacker sends, and what they cost it.

Starts C{twistd -n notificator} from the checkout first on C{PYTHONPATH}
(else this one) on a loopback port, and runs:

 1. C{access}: C{--requests} requests, one connection each, whose path
    and user agent are C{--head-bytes} bytes each that the access log
    escapes to four characters (C{\\x7f}, C{\\xfe}), all different.  It
    reports C{access.log}'s bytes per request and per byte sent, and the
    server's resident memory (C{VmRSS}) before and after.
 2. C{history}: C{--publishes} publishes, pipelined on one connection,
    to C{--users} users whose ids are 256 characters (the longest the
    server takes) of a 4-byte UTF-8 character, with the history bounded to
    C{--max-bytes}.  It reports the server's resident memory before and
    after, over C{sse.history.maxBytes}, and how many times the history's
    journal was rewritten (a snapshot replaces the file: a new inode).

Every wait is bounded.  Example, comparing two checkouts::

    python bench/amplify.py
    PYTHONPATH=/path/to/other/checkout python bench/amplify.py
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any
from urllib.parse import quote

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.dirname(HERE)

#: The longest user id the server takes (C{ingest.MAX_USER_ID_LENGTH}), of a
#: character that is four bytes in UTF-8 and in memory.
LONG_ID_LENGTH = 256
WIDE = "\U0001f514"  # BELL


def checkout() -> str:
    """The checkout under test: the first PYTHONPATH entry, else this one."""
    given = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return os.path.abspath(given[0]) if given else PROJECT


def rss(pid: int) -> int:
    """The resident memory of a process, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        m = re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M)
    assert m is not None
    return int(m.group(1)) * 1024


# -- 1. access.log --------------------------------------------------------------


def hostile_head(n: int, head_bytes: int) -> bytes:
    """
    A request whose path and user agent are C{head_bytes} bytes each that
    escape to four characters, made different by C{n} (a GET of a path
    that does not exist: a 404).
    """
    tag = b"%d" % n
    path = b"/" + b"\x7f" * (head_bytes - len(tag) - 1) + tag
    agent = b"\xfe" * (head_bytes - len(tag)) + tag
    return (
        b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: " + agent + b"\r\n"
        b"Connection: close\r\n\r\n"
    )


def send_hostile_heads(port: int, count: int, head_bytes: int, timeout: float = 10.0) -> int:
    """Send C{count} L{hostile_head}s, one connection each, reading each answer; bytes sent."""
    sent = 0
    for n in range(count):
        data = hostile_head(n, head_bytes)
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(data)
            while sock.recv(65536):
                pass
        sent += len(data)
    return sent


# -- 2. history -------------------------------------------------------------------


def long_user_id(n: int, length: int = LONG_ID_LENGTH) -> str:
    """A user id of C{length} wide characters, different for each C{n}."""
    tag = str(n)
    return WIDE * (length - len(tag)) + tag


def publish_pipelined(
    port: int, bodies: list[bytes], batch: int = 100, timeout: float = 30.0
) -> list[int]:
    """
    POST each form body to C{/webNotification} over one keep-alive
    connection, C{batch} requests sent before their answers are read;
    the status of each.
    """
    statuses: list[int] = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        reader = sock.makefile("rb")
        for start in range(0, len(bodies), batch):
            chunk = bodies[start : start + batch]
            sock.sendall(
                b"".join(
                    b"POST /webNotification HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Content-Type: application/x-www-form-urlencoded\r\n"
                    b"Content-Length: %d\r\n\r\n%b" % (len(body), body)
                    for body in chunk
                )
            )
            for _ in chunk:
                response = http.client.HTTPResponse(_Shared(reader))  # type: ignore[arg-type]
                response.begin()
                response.read()
                statuses.append(response.status)
    return statuses


class _Shared:
    """
    A socket whose C{makefile} is one shared reader, which the answers do
    not close: pipelined answers are read in turn.
    """

    def __init__(self, reader: Any) -> None:
        self._reader = reader

    def makefile(self, mode: str) -> Any:
        return self

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)


def publish_bodies(users: int, publishes: int, start: int = 0) -> list[bytes]:
    """Form bodies of C{publishes} notifications, round robin over C{users} long ids."""
    ids = [quote(long_user_id(n)).encode() for n in range(users)]
    return [
        b"id=notify_%b&data=%%7B%%22n%%22%%3A%d%%7D" % (ids[n % users], n)
        for n in range(start, start + publishes)
    ]


class Rewrites(threading.Thread):
    """
    Counts how many times a file is replaced (its inode changes), watching
    it every C{interval} seconds until L{stop}.

    @ivar sizes: the size of each new file when first seen (a snapshot, and
        what was appended to it within C{interval}).
    """

    def __init__(self, path: str, interval: float = 0.01) -> None:
        super().__init__(name="rewrites", daemon=True)
        self.path = path
        self.interval = interval
        self.count = 0
        self.sizes: list[int] = []
        self._stopping = threading.Event()

    def _inode(self) -> int | None:
        try:
            return os.stat(self.path).st_ino
        except FileNotFoundError:
            return None

    def run(self) -> None:
        last = self._inode()
        while not self._stopping.wait(self.interval):
            inode = self._inode()
            if inode is not None and inode != last:
                if last is not None:
                    self.count += 1
                    try:
                        self.sizes.append(os.path.getsize(self.path))
                    except FileNotFoundError:
                        pass
                last = inode

    def stop(self) -> int:
        self._stopping.set()
        self.join(5)
        return self.count


# -- running both ---------------------------------------------------------------


def start_server(work: str, source: str, local: dict[str, Any]) -> tuple[Any, int]:
    """C{twistd -n notificator} from C{source} in C{work}; its process and port."""
    conf = os.path.join(work, "conf")
    os.makedirs(conf)
    shutil.copy(os.path.join(source, "conf", "default.json"), conf)
    with open(os.path.join(conf, "local.json"), "w") as f:
        json.dump(local, f)
    log = open(os.path.join(work, "twistd.log"), "wb")
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    process = subprocess.Popen(
        [sys.executable, twistd, "-n", "--pidfile=", "notificator", "--config", conf]
        + ["--listen", "tcp:0:interface=127.0.0.1"],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=work,
        env=dict(os.environ, PYTHONPATH=source),
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with open(os.path.join(work, "twistd.log"), errors="replace") as f:
            m = re.search(r"starting on (\d+)", f.read())
        if m:
            return process, int(m.group(1))
        if process.poll() is not None:
            raise SystemExit("twistd exited; see " + os.path.join(work, "twistd.log"))
        time.sleep(0.05)
    process.kill()
    raise SystemExit("twistd did not start")


def stop(process: Any) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def access(work: str, source: str, requests: int, head_bytes: int) -> dict[str, Any]:
    process, port = start_server(work, source, {"sse": {"drainSeconds": 0.2}})
    try:
        before = rss(process.pid)
        sent = send_hostile_heads(port, requests, head_bytes)
        time.sleep(1.5)  # access.log is written once a second
        after = rss(process.pid)
        logged = os.path.getsize(os.path.join(work, "log", "access.log"))
    finally:
        stop(process)
    return {
        "requests": requests,
        "sent_bytes": sent,
        "access_log_bytes": logged,
        "access_log_bytes_per_request": round(logged / requests),
        "access_log_per_byte_sent": round(logged / sent, 3),
        "rss_before_mib": round(before / 2**20, 1),
        "rss_after_mib": round(after / 2**20, 1),
    }


def history(work: str, source: str, users: int, publishes: int, max_bytes: int) -> dict[str, Any]:
    local = {"sse": {"drainSeconds": 0.2, "history": {"maxBytes": max_bytes}}}
    process, port = start_server(work, source, local)
    journal = os.path.join(work, "var", "history", "history.log")
    try:
        before = rss(process.pid)
        rewrites = Rewrites(journal)
        rewrites.start()
        statuses = publish_pipelined(port, publish_bodies(users, publishes))
        time.sleep(1.0)  # the last flushes
        count = rewrites.stop()
        after = rss(process.pid)
    finally:
        stop(process)
    return {
        "publishes": publishes,
        "accepted": statuses.count(200),
        "users": users,
        "max_bytes_mib": round(max_bytes / 2**20, 1),
        "rss_before_mib": round(before / 2**20, 1),
        "rss_after_mib": round(after / 2**20, 1),
        "growth_over_max_bytes": round((after - before) / max_bytes, 2),
        "journal_rewrites": count,
        "journal_bytes": os.path.getsize(journal),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--requests", type=int, default=1000, help="hostile requests (1000)")
    parser.add_argument(
        "--head-bytes", type=int, default=8000, help="bytes of path and of user agent (8000)"
    )
    parser.add_argument("--publishes", type=int, default=30000, help="publishes (30000)")
    parser.add_argument("--users", type=int, default=30000, help="users with long ids (30000)")
    parser.add_argument(
        "--max-bytes", type=int, default=4 << 20, help="sse.history.maxBytes (4 MiB)"
    )
    parser.add_argument("--only", choices=["access", "history"], help="run one attack")
    args = parser.parse_args(argv)
    source = checkout()
    result: dict[str, Any] = {"checkout": source}
    work = tempfile.mkdtemp(prefix="notificator-amplify-")
    try:
        if args.only in (None, "access"):
            result["access"] = access(
                os.path.join(work, "access"), source, args.requests, args.head_bytes
            )
        if args.only in (None, "history"):
            result["history"] = history(
                os.path.join(work, "history"), source, args.users, args.publishes, args.max_bytes
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
