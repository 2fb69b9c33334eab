"""
Tests for L{notificator.workers.logs}: a worker's log lines over a real
pipe to its supervisor (L{PipeLog}), and the supervisor's one C{sse.log}
and C{access.log} (L{LogSinks}, L{AccessLogService}, L{not_relayed}).
"""

from __future__ import annotations

import fcntl
import os
import threading
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import LogLevel, PredicateResult
from twisted.trial.unittest import SynchronousTestCase

from notificator.logs.app import AppLogService
from notificator.workers import logs
from notificator.workers.supervisor import RELAYED

#: Linux's F_SETPIPE_SZ (not in Python's fcntl before 3.10 on every build).
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class PipeLogTests(SynchronousTestCase):
    def pipe(self, size: int | None = None) -> tuple[int, int]:
        r, w = os.pipe()
        for fd in (r, w):
            self.addCleanup(_close, fd)
        if size is not None:
            fcntl.fcntl(w, F_SETPIPE_SZ, size)
        os.set_blocking(r, False)
        return r, w

    def test_lines_go_at_flush(self) -> None:
        """Written lines wait in memory; tick and flush send them, in order, in one write."""
        r, w = self.pipe()
        clock = Clock()
        f = logs.PipeLog(w, clock)
        f.write("one\n")
        f.write(b"two\n")
        self.assertRaises(BlockingIOError, os.read, r, 100)
        f.tick()
        self.assertEqual(os.read(r, 100), b"one\ntwo\n")
        f.write("three\n")
        f.flush()
        self.assertEqual(os.read(r, 100), b"three\n")
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_full_pipe_does_not_block(self) -> None:
        """What a full pipe does not take waits and is sent again later; close sends the rest."""
        r, w = self.pipe(4096)
        clock = Clock()
        f = logs.PipeLog(w, clock)
        lines = [b"line %05d %s\n" % (n, b"x" * 80) for n in range(200)]
        for line in lines:
            f.write(line)
        f.flush()  # returns: the pipe took what it could
        first = _drain(r)
        self.assertTrue(0 < len(first) < len(b"".join(lines)))
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(logs.RETRY)
        got = first + _drain(r)
        # The rest, once the pipe is read, at close (which may wait for the pipe).
        os.set_blocking(r, True)
        reader = threading.Thread(target=lambda: got_rest.append(_read_all(r)))
        got_rest: list[bytes] = []
        reader.start()
        f.close()
        os.close(w)
        reader.join(10)
        self.assertEqual(got + got_rest[0], b"".join(lines))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_supervisor_gone(self) -> None:
        """A pipe whose reader is gone: lines are dropped, nothing raises."""
        r, w = self.pipe()
        os.close(r)
        f = logs.PipeLog(w, Clock())
        f.write("lost\n")
        f.flush()
        f.write("lost too\n")
        f.close()

    def test_too_much_pending_is_dropped_and_said(self) -> None:
        """Beyond MAX_PENDING bytes held, lines are dropped; a line says how many bytes."""
        self.patch(logs, "MAX_PENDING", 8192)
        r, w = self.pipe(4096)
        clock = Clock()
        f = logs.PipeLog(w, clock)
        f.write(b"a" * 8000 + b"\n")
        f.flush()
        f.write(b"b" * 9000 + b"\n")
        f.flush()  # dropped: too much held already
        got = _drain(r)
        clock.advance(logs.RETRY)
        got += _drain(r)
        clock.advance(logs.RETRY)
        got += _drain(r)
        self.assertTrue(got.startswith(b"a" * 8000 + b"\n"), got[:100])
        self.assertNotIn(b"bbbb", got)
        self.assertIn(b"9001 bytes of log lines dropped: the supervisor did not read them\n", got)


class SinkTests(SynchronousTestCase):
    def test_app_lines_carry_the_slot(self) -> None:
        """A worker's sse.log line is written with its slot after its time and namespace."""
        written: list[bytes] = []

        class File:
            def write(self, data: bytes) -> None:
                written.append(data)

        app_log = AppLogService(self.mktemp(), "info")
        app_log.log_file = File()  # type: ignore[assignment]
        sinks = logs.LogSinks(app_log, logs.AccessLogService(self.mktemp(), Clock()))
        sinks.outputs[logs.SSE_LOG_FD](1, b"2026-01-02T03:04:05+0000 [notificator.tap#info] hello")
        sinks.outputs[logs.SSE_LOG_FD](0, b"\tTraceback (most recent call last):")
        sinks.outputs[logs.SSE_LOG_FD](0, b"no brackets")
        self.assertEqual(
            written,
            [
                b"2026-01-02T03:04:05+0000 [notificator.tap#info] worker 1: hello\n",
                b"\tTraceback (most recent call last):\n",
                b"no brackets\n",
            ],
        )
        app_log.log_file = None
        sinks.outputs[logs.SSE_LOG_FD](1, b"dropped: the log is closed")
        self.assertEqual(len(written), 3)

    def test_access_log(self) -> None:
        """The workers' access.log lines, as they are, in the supervisor's one file."""
        directory = self.mktemp()
        clock = Clock()
        service = logs.AccessLogService(directory, clock, keep_days=30)
        app_log = AppLogService(self.mktemp(), "info")
        sinks = logs.LogSinks(app_log, service)
        sinks.outputs[logs.ACCESS_LOG_FD](0, b"dropped: not started")
        service.startService()
        sinks.outputs[logs.ACCESS_LOG_FD](0, b'127.0.0.1 - - [x] "GET /sse/a HTTP/1.1" 200 -')
        sinks.outputs[logs.ACCESS_LOG_FD](1, b'127.0.0.1 - - [x] "GET /sse/b HTTP/1.1" 200 -')
        clock.advance(1)
        with open(os.path.join(directory, "access.log"), "rb") as f:
            self.assertEqual(
                f.read(),
                b'127.0.0.1 - - [x] "GET /sse/a HTTP/1.1" 200 -\n'
                b'127.0.0.1 - - [x] "GET /sse/b HTTP/1.1" 200 -\n',
            )
        service.stopService()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_not_relayed(self) -> None:
        """The workers' relayed standard output stays out of sse.log; the rest is let through."""
        event: dict[str, Any] = {"log_namespace": RELAYED, "log_level": LogLevel.info}
        self.assertIs(logs.not_relayed(event), PredicateResult.no)
        event["log_namespace"] = "notificator.tap"
        self.assertIs(logs.not_relayed(event), PredicateResult.maybe)


def _drain(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
