"""
Tests for L{notificator.logs}: the buffered, daily-rotated access log, the
access-log line of streams that end by disconnect, sse.log filtering and
rotation, CR/LF safety of both files, and the process title.
"""

from __future__ import annotations

import datetime
import gc
import os
import re
import tracemalloc
from collections.abc import Callable
from ipaddress import ip_network
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock, StringTransport
from twisted.logger import (
    Logger,
    LogLevel,
    LogPublisher,
    formatEventAsClassicLogText,
    globalLogPublisher,
)
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import HTTPChannel

from notificator import auth, config, logs, services, web
from notificator.logs.access import _ClassicFormat
from tests.support import Parts, config_with


class FakeDate:
    """
    A settable "today" for a L{DailyLogFile}: C{toDate()} answers the set
    date, C{toDate(t)} (the file's mtime, read on open) too.
    """

    def __init__(self, today: tuple[int, int, int]) -> None:
        self.today = today

    def __call__(self, *args: float) -> tuple[int, int, int]:
        return self.today


def lines(path: str) -> list[str]:
    with open(path, encoding="utf-8", newline="") as f:
        return f.read().splitlines(keepends=True)


def assert_one_line_each(testcase: SynchronousTestCase, text_lines: list[str]) -> None:
    """Every line ends in a single \\n and holds no other CR or LF."""
    for line in text_lines:
        testcase.assertTrue(line.endswith("\n"), repr(line))
        testcase.assertNotIn("\r", line)
        testcase.assertNotIn("\n", line[:-1])


class BufferedDailyLogFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "access.log")
        self.log = logs.BufferedDailyLogFile("access.log", self.dir)
        self.addCleanup(lambda: self.log.closed or self.log.close())
        self.date = FakeDate((2026, 11, 23))
        self.log.toDate = self.date  # type: ignore[method-assign]
        self.log.lastDate = self.date.today

    def test_writes_are_buffered_until_tick(self) -> None:
        """A written line reaches the file on the next tick, not before."""
        self.log.write("one\n")
        self.assertEqual(lines(self.path), [])
        self.log.tick()
        self.assertEqual(lines(self.path), ["one\n"])

    def test_tick_rotates_when_the_date_changes(self) -> None:
        """After midnight the next tick moves the day's lines to access.log.Y_M_D."""
        self.log.write("monday\n")
        self.log.tick()
        self.log.write("late monday\n")
        self.date.today = (2026, 11, 24)
        self.log.tick()
        self.log.write("tuesday\n")
        self.log.tick()
        self.assertEqual(lines(self.path + ".2026_11_23"), ["monday\n", "late monday\n"])
        self.assertEqual(lines(self.path), ["tuesday\n"])

    def test_no_rotation_within_a_day(self) -> None:
        """Ticks on the same day never rotate."""
        for i in range(3):
            self.log.write(f"{i}\n")
            self.log.tick()
        self.assertEqual(sorted(os.listdir(self.dir)), ["access.log"])

    def test_close_flushes(self) -> None:
        """Closing the file writes what is still buffered."""
        self.log.write("last\n")
        self.log.close()
        self.assertEqual(lines(self.path), ["last\n"])

    def test_appends_to_an_existing_file(self) -> None:
        """A restart keeps the day's earlier lines."""
        self.log.write("before restart\n")
        self.log.close()
        again = logs.BufferedDailyLogFile("access.log", self.dir)
        again.write("after restart\n")
        again.close()
        self.assertEqual(lines(self.path), ["before restart\n", "after restart\n"])


def touch(directory: str, *names: str) -> None:
    os.makedirs(directory, exist_ok=True)
    for name in names:
        with open(os.path.join(directory, name), "w") as f:
            f.write(name + "\n")


class OldLogRemoverTests(SynchronousTestCase):
    """server.log.keepDays: real files, removed in batches on a Clock."""

    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())
        self.clock = Clock()
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        # access.log of 2026-09-01 .. 2026-11-23 (84 rotated files).
        start = datetime.date(2026, 9, 1)
        self.days = [start + datetime.timedelta(days=i) for i in range(84)]
        touch(
            self.dir, "access.log", *(f"access.log.{d.year}_{d.month}_{d.day}" for d in self.days)
        )
        # Not this log's rotations: kept whatever their age.
        self.others = [
            "sse.log.2020_1_1",
            "access.log.2020_1_1.gz",
            "access.log.2026_2_30",
            "access.log.old",
            "xaccess.log.2020_1_1",
        ]
        touch(self.dir, *self.others)

    def remaining(self) -> list[str]:
        return sorted(os.listdir(self.dir))

    def test_keeps_the_last_days_and_nothing_else_is_touched(self) -> None:
        """keepDays 30 on 2026-11-24: files of 2026-10-25 and later stay, the 54 older go."""
        remover = logs.OldLogRemover(os.path.join(self.dir, "access.log"), 30, self.clock)
        remover.prune((2026, 11, 24))
        self.assertEqual(len(os.listdir(self.dir)), 1 + 84 + 5, "nothing removed in prune itself")
        turns = 0
        while self.clock.getDelayedCalls():
            before = len(os.listdir(self.dir))
            self.clock.advance(logs.OldLogRemover.PAUSE)
            self.assertLessEqual(before - len(os.listdir(self.dir)), logs.OldLogRemover.BATCH)
            turns += 1
        self.assertEqual(turns, 3)  # 54 files, 20 per turn
        kept = [d for d in self.days if d >= datetime.date(2026, 10, 25)]
        self.assertEqual(
            self.remaining(),
            sorted(
                [
                    "access.log",
                    *self.others,
                    *(f"access.log.{d.year}_{d.month}_{d.day}" for d in kept),
                ]
            ),
        )
        self.assertEqual(len(kept), 30)
        [done] = [e for e in self.events if "count" in e]
        self.assertEqual((done["count"], done["name"], done["days"]), (54, "access.log", 30))

    def test_zero_keeps_everything(self) -> None:
        """keepDays 0: nothing is listed or removed."""
        remover = logs.OldLogRemover(os.path.join(self.dir, "access.log"), 0, self.clock)
        remover.prune((2030, 1, 1))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(os.listdir(self.dir)), 1 + 84 + 5)

    def test_stop_leaves_the_rest(self) -> None:
        """Stopping mid-way cancels the next batch; the rest waits for the next prune."""
        remover = logs.OldLogRemover(os.path.join(self.dir, "access.log"), 30, self.clock)
        remover.prune((2026, 11, 24))
        self.clock.advance(logs.OldLogRemover.PAUSE)
        remover.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(os.listdir(self.dir)), 1 + 84 + 5 - 20)
        remover.prune((2026, 11, 24))
        while self.clock.getDelayedCalls():
            self.clock.advance(logs.OldLogRemover.PAUSE)
        self.assertEqual(len(os.listdir(self.dir)), 1 + 30 + 5)

    def test_rotation_prunes(self) -> None:
        """A BufferedDailyLogFile calls its on_rotate with the new date after rotating."""
        log = logs.BufferedDailyLogFile("access.log", self.dir)
        self.addCleanup(log.close)
        date = FakeDate((2026, 11, 23))
        log.toDate = date  # type: ignore[method-assign]
        log.lastDate = date.today
        remover = logs.OldLogRemover(log.path, 1, self.clock)
        log.on_rotate = remover.prune
        log.tick()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # The 2026_11_23 file exists already (touched above), so DailyLogFile
        # does not rotate onto it; remove it to let the rotation happen.
        os.unlink(os.path.join(self.dir, "access.log.2026_11_23"))
        date.today = (2026, 11, 24)
        log.tick()
        while self.clock.getDelayedCalls():
            self.clock.advance(logs.OldLogRemover.PAUSE)
        self.assertEqual(
            self.remaining(),
            sorted(["access.log", "access.log.2026_11_23", *self.others]),
        )


class AccessLogSiteTests(SynchronousTestCase):
    """The site as twistd runs it, over in-memory HTTP connections."""

    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())
        self.reactor = MemoryReactorClock()
        self.parts = Parts(self.reactor, config.defaults())
        self.hub = self.parts.hub
        self.site = logs.AccessLogSite(
            self.parts.resource, os.path.join(self.dir, "log"), self.reactor
        )
        self.site.doStart()
        self.addCleanup(self.site.doStop)
        self.path = os.path.join(self.dir, "log", "access.log")

    def connect(self, client: str = "127.0.0.1") -> tuple[HTTPChannel, StringTransport]:
        channel = self.site.buildProtocol(IPv4Address("TCP", client, 40000))
        transport = StringTransport(peerAddress=IPv4Address("TCP", client, 40000))
        channel.makeConnection(transport)
        return channel, transport

    def disconnect(self, channel: HTTPChannel) -> None:
        channel.connectionLost(Failure(ConnectionDone()))

    def access_lines(self) -> list[str]:
        self.reactor.advance(self.site.flush_interval)
        return lines(self.path)

    def test_opens_at_first_use(self) -> None:
        """log/access.log is created at the first tick after start, not when listening."""
        self.assertFalse(os.path.exists(self.path))
        self.reactor.advance(self.site.flush_interval)
        self.assertTrue(os.path.isfile(self.path))

    def test_unwritable_log_dir(self) -> None:
        """A log dir that cannot be made is logged once; requests are still served."""
        from twisted.logger import globalLogPublisher

        events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        os.makedirs(self.dir, exist_ok=True)
        blocker = os.path.join(self.dir, "a-file")
        with open(blocker, "w"):
            pass
        self.site.doStop()
        resource = self.site.resource
        self.site = logs.AccessLogSite(resource, os.path.join(blocker, "log"), self.reactor)
        self.site.doStart()
        self.addCleanup(self.site.doStop)
        for _ in range(2):
            channel, transport = self.connect()
            channel.dataReceived(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertIn(b" 404 ", transport.value())
            self.disconnect(channel)
            self.reactor.advance(self.site.flush_interval)
        errors = [e for e in events if e.get("log_namespace") == "notificator.logs.AccessLog"]
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("a-file/log/access.log", str(errors[0]["path"]))
        assert self.site.access_log is not None
        self.assertIsNone(self.site.access_log.file)

    def test_finished_request_in_combined_format(self) -> None:
        """A finished request is one combined-format line, flushed by the timer."""
        channel, _ = self.connect()
        channel.dataReceived(
            b"GET /nowhere HTTP/1.1\r\nHost: x\r\nReferer: http://gw/\r\n"
            b"User-Agent: Mozilla/5.0\r\n\r\n"
        )
        self.disconnect(channel)
        self.assertEqual(lines(self.path), [], "flushed before the timer")
        (line,) = self.access_lines()
        self.assertRegex(
            line,
            r'^"127\.0\.0\.1" - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] '
            r'"GET /nowhere HTTP/1\.1" 404 \d+ "http://gw/" "Mozilla/5\.0"\n$',
        )

    def poll(
        self,
        path: bytes,
        marked: bool = True,
        client: str = "127.0.0.1",
        method: bytes = b"GET",
        status: bytes = b" 200 ",
    ) -> None:
        channel, transport = self.connect(client)
        header = b"X-Notificator-Monitor: poll\r\n" if marked else b""
        channel.dataReceived(method + b" " + path + b" HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n")
        self.assertIn(status, transport.value().split(b"\r\n")[0])
        self.disconnect(channel)

    def test_monitor_polls_left_out_by_default(self) -> None:
        """The monitor page's polls are not logged; the same paths without its header are."""
        self.site.guard = auth.Guard.from_config(config.defaults())  # as makeService sets it
        self.poll(b"/users")
        self.poll(b"/health?x=1")
        self.assertEqual(self.access_lines(), [])
        self.poll(b"/health", marked=False)
        self.poll(b"/", marked=True)  # only the polled paths are left out
        logged = self.access_lines()
        self.assertEqual(len(logged), 2, logged)
        self.assertIn('"GET /health HTTP/1.1" 200 ', logged[0])
        self.assertIn('"GET / HTTP/1.1" 200 ', logged[1])

    def test_the_header_alone_keeps_nothing_out(self) -> None:
        """
        X-Notificator-Monitor keeps a request out of access.log only if it is
        a GET of /users or /health from an address of monitor.allow: from
        elsewhere, with another method, or on a site without a guard, it is
        logged.
        """
        # monitor.allow 10.0.0.0/8: 127.0.0.1 is not in it; 10.1.2.3 is.
        cfg = config_with(monitor={"allow": (ip_network("10.0.0.0/8"),)})
        self.site.doStop()
        self.site = logs.AccessLogSite(
            Parts(self.reactor, cfg).resource, os.path.join(self.dir, "log"), self.reactor
        )
        self.site.guard = auth.Guard.from_config(cfg)
        self.site.doStart()
        self.addCleanup(self.site.doStop)
        self.poll(b"/health?from=outside", client="127.0.0.1")
        self.poll(b"/users", client="127.0.0.1", status=b" 403 ")
        self.poll(b"/health?from=inside", client="10.1.2.3")
        self.poll(b"/users", client="10.1.2.3")
        self.poll(b"/users", client="10.1.2.3", method=b"POST", status=b" 405 ")
        self.site.guard = None
        self.poll(b"/health?guard=none", client="10.1.2.3")
        logged = self.access_lines()
        self.assertEqual(len(logged), 4, logged)
        self.assertIn('"127.0.0.1" - - ', logged[0])
        self.assertIn('"GET /health?from=outside HTTP/1.1" 200 ', logged[0])
        self.assertIn('"GET /users HTTP/1.1" 403 ', logged[1])
        self.assertIn('"POST /users HTTP/1.1" 405 ', logged[2])
        self.assertIn('"GET /health?guard=none HTTP/1.1" 200 ', logged[3])

    def test_monitor_polls_logged_when_asked(self) -> None:
        """monitor.accessLog true: the polls are logged like any request."""
        self.site.monitor_polls = True
        self.poll(b"/users")
        self.poll(b"/health")
        self.assertEqual(len(self.access_lines()), 2)

    def test_disconnected_stream_is_logged(self) -> None:
        """An event stream that ends by client disconnect gets its access-log line."""
        channel, transport = self.connect()
        channel.dataReceived(b"GET /sse/u1 HTTP/1.1\r\nHost: x\r\nUser-Agent: ua\r\n\r\n")
        self.assertEqual(self.hub.stream_count, 1)
        self.parts.publish("u1", '{"a":1}')
        self.assertEqual(self.access_lines(), [])
        sent = len(transport.value())
        self.disconnect(channel)
        self.assertEqual(self.hub.stream_count, 0)
        (line,) = self.access_lines()
        self.assertIn('"GET /sse/u1 HTTP/1.1" 200 ', line)
        # The bytes sent so far (body only), as with a finished request.
        length = int(re.search(r'" 200 (\d+) ', line).group(1))  # type: ignore[union-attr]
        self.assertTrue(0 < length < sent, (length, sent))

    def test_stream_closed_by_server_is_logged_once(self) -> None:
        """A stream the server finishes (shutdown) is logged once, by finish()."""
        channel, _ = self.connect()
        channel.dataReceived(b"GET /sse/u1 HTTP/1.1\r\nHost: x\r\n\r\n")
        self.hub.close_all()
        self.disconnect(channel)
        self.assertEqual(len(self.access_lines()), 1)

    def test_cr_lf_in_request_data_is_escaped(self) -> None:
        """CR or LF sent by a client never starts a new access-log line."""
        requests = [
            # Percent-encoded CR/LF, and Unicode line breaks (U+2028, NEL) as
            # raw bytes in a header: logged, escaped.
            b"GET /sse/a%0D%0Ab HTTP/1.1\r\nHost: x\r\n"
            b'User-Agent: e\xe2\x80\xa8v\x85il\t"q\r\n\r\n',
            # A raw CR in the request line or a header: twisted.web refuses
            # the request (400) before it reaches a resource or the log.
            b"GET /sse/a\rinjected HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /sse/u1 HTTP/1.1\r\nHost: x\r\nUser-Agent: a\rinjected\r\n\r\n",
            # An event stream that ends by disconnect.
            b"GET /sse/u1 HTTP/1.1\r\nHost: x\r\nUser-Agent: ok\r\n\r\n",
        ]
        for raw in requests:
            channel, _ = self.connect()
            channel.dataReceived(raw)
            self.disconnect(channel)
        found = self.access_lines()
        self.assertEqual(len(found), 2, found)
        assert_one_line_each(self, found)
        self.assertIn('"GET /sse/a%0D%0Ab HTTP/1.1" 400 ', found[0])
        self.assertIn('"e\\xe2\\x80\\xa8v\\x85il\\t\\"q"', found[0])
        self.assertNotIn("injected", "".join(found))

    def test_stop_flushes_and_closes(self) -> None:
        """Stopping the site writes buffered lines and stops the flush timer."""
        channel, _ = self.connect()
        channel.dataReceived(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        self.disconnect(channel)
        self.site.doStop()
        self.assertEqual(len(lines(self.path)), 1)
        self.assertIsNone(self.site.access_log)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.site.doStart()  # for the cleanup's doStop

    def test_rotates_daily_on_the_timer(self) -> None:
        """The flush timer rotates access.log when the date changes."""
        self.reactor.advance(self.site.flush_interval)
        assert self.site.access_log is not None
        access_log = self.site.access_log.file
        assert access_log is not None
        date = FakeDate((2026, 11, 23))
        access_log.toDate = date  # type: ignore[method-assign]
        access_log.lastDate = date.today
        channel, _ = self.connect()
        channel.dataReceived(b"GET /day1 HTTP/1.1\r\nHost: x\r\n\r\n")
        self.reactor.advance(self.site.flush_interval)
        date.today = (2026, 11, 24)
        channel.dataReceived(b"GET /day2 HTTP/1.1\r\nHost: x\r\n\r\n")
        self.reactor.advance(self.site.flush_interval)
        old = lines(self.path + ".2026_11_23")
        self.assertEqual(len(old), 2, old)
        self.assertEqual(lines(self.path), [])
        channel.dataReceived(b"GET /day2-again HTTP/1.1\r\nHost: x\r\n\r\n")
        new = self.access_lines()
        self.assertEqual(len(new), 1)
        self.assertIn("/day2-again", new[0])

    def test_old_rotations_removed_at_open_and_after_rotation(self) -> None:
        """keep_days: access.log's old rotations go when it opens and after each rotation."""
        date = FakeDate((2026, 11, 24))
        self.patch(logs.BufferedDailyLogFile, "toDate", date)
        log_dir = os.path.join(self.dir, "log")
        touch(log_dir, "access.log.2026_11_1", "access.log.2026_11_2", "access.log.2026_11_23")
        self.site.doStop()
        self.site = logs.AccessLogSite(self.site.resource, log_dir, self.reactor, keep_days=22)
        self.site.doStart()
        self.addCleanup(self.site.doStop)
        self.reactor.advance(self.site.flush_interval)  # opens the file
        self.reactor.advance(logs.OldLogRemover.PAUSE)
        self.assertEqual(
            sorted(os.listdir(log_dir)),
            ["access.log", "access.log.2026_11_2", "access.log.2026_11_23"],
        )
        date.today = (2026, 11, 25)  # 2026_11_2 is now 23 days old
        self.reactor.advance(self.site.flush_interval)  # rotates to access.log.2026_11_24
        self.reactor.advance(logs.OldLogRemover.PAUSE)
        self.assertEqual(
            sorted(os.listdir(log_dir)),
            ["access.log", "access.log.2026_11_23", "access.log.2026_11_24"],
        )


class CombinedLogFormatterTests(SynchronousTestCase):
    def request(self, **kw: Any) -> Any:
        from twisted.web.test.requesthelper import DummyRequest

        r = DummyRequest([b""])
        r.method = kw.get("method", b"POST")
        r.uri = kw.get("uri", b"/webNotification")
        r.clientproto = kw.get("proto", b"HTTP/1.1")
        r.code = kw.get("code", 200)
        r.sentLength = kw.get("length", 96)
        r.client = kw.get("client", IPv4Address("TCP", "10.0.0.7", 5123))
        for name, value in kw.get("headers", {}).items():
            r.requestHeaders.setRawHeaders(name, [value])
        return r

    def test_same_line_as_twisted(self) -> None:
        """Every line is the one twisted.web's combinedLogFormatter writes, on first use and remembered."""
        from twisted.internet.address import IPv6Address, UNIXAddress
        from twisted.web.http import combinedLogFormatter

        cases = [
            {},
            {"headers": {b"user-agent": b"Alert/1.0", b"referer": b"http://gw/main"}},
            {"method": b"GET", "uri": b'/sse/\xea\xb9\x80"x\\y', "length": 0},
            {"uri": b"/a\r\nb\t'c'", "code": 413},
            {"headers": {b"user-agent": b'Mozilla "quoted" \x00\x7f', b"referer": b"'"}},
            {"client": IPv6Address("TCP", "::1", 80), "proto": b"HTTP/1.0"},
            {"client": UNIXAddress(b"/tmp/s"), "length": None},
        ]
        formatter = logs.CombinedLogFormatter()
        for _ in range(2):
            for kw in cases:
                request = self.request(**kw)
                stamp = "[24/Nov/2026:01:00:00 +0000]"
                self.assertEqual(
                    formatter(stamp, request), combinedLogFormatter(stamp, request), kw
                )

    def test_memory_is_bounded_in_bytes(self) -> None:
        """
        Requests with long, distinct paths and user agents (escaping each
        byte to four characters) keep at most MAX_REMEMBERED_BYTES of
        remembered escapes, as counted and as allocated.
        """
        formatter = logs.CombinedLogFormatter()
        formatter.MAX_REMEMBERED_BYTES = 1 << 20
        gc.collect()
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        before = tracemalloc.get_traced_memory()[0]
        for i in range(300):
            hostile = b"\x7f" * 8000 + b"%d" % i
            request = self.request(
                uri=b"/" + hostile, headers={b"user-agent": hostile, b"referer": hostile}
            )
            formatter("[t]", request)
        del request
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
        self.assertLessEqual(kept, 2 * formatter.MAX_REMEMBERED_BYTES)
        self.assertLessEqual(formatter.remembered, formatter.MAX_REMEMBERED_BYTES)

    def test_a_line_is_bounded_whatever_the_request_holds(self) -> None:
        """
        The longest request head twisted.web takes, every byte escaped to
        four characters: each field is cut at its limit on a whole escape
        and ends with "...", the line keeps its combined format and stays
        under 4 KB.
        """
        formatter = logs.CombinedLogFormatter()
        request = self.request(
            method=b"\x01" * 100,
            uri=b"/\x7f" * 8000,
            proto=b"HTTP/\x01" * 10,
            headers={b"user-agent": b"\xfe" * 8000, b"referer": b'"' * 3000},
        )
        line = formatter("[24/Nov/2026:01:00:00 +0000]", request)
        self.assertLess(len(line), 4096)
        m = re.match(
            r'^"10\.0\.0\.7" - - \[[^]]+\] "(\S+) (\S+) (\S+)" 200 96 "(.*)" "(.*)"$', line
        )
        assert m is not None, line
        fields = dict(
            zip(["method", "uri", "protocol", "referer", "agent"], m.groups(), strict=True)
        )
        limits = {
            "method": logs.METHOD_LIMIT,
            "uri": logs.URI_LIMIT,
            "protocol": logs.PROTOCOL_LIMIT,
            "referer": logs.REFERER_LIMIT,
            "agent": logs.USER_AGENT_LIMIT,
        }
        for name, text in fields.items():
            self.assertTrue(text.endswith(logs.CUT), (name, text[-20:]))
            self.assertLessEqual(len(text), limits[name] + len(logs.CUT), name)
        self.assertTrue(fields["uri"].startswith("/\\x7f/\\x7f"))
        self.assertEqual(fields["agent"], "\\xfe" * (logs.USER_AGENT_LIMIT // 4) + "...")
        self.assertEqual(fields["referer"], '\\"' * (logs.REFERER_LIMIT // 2) + "...")

    def test_signature_hidden_before_the_cut(self) -> None:
        """A long path is cut after its auth signature was hidden, never through it."""
        uri = b"/sse/u?auth=1767225600.c2lnbmF0dXJl&x=" + b"y" * 5000
        line = logs.CombinedLogFormatter()("[t]", self.request(uri=uri))
        self.assertIn("auth=1767225600.*&x=yyy", line)
        self.assertNotIn("c2ln", line)


class EscapeFieldTests(SynchronousTestCase):
    @settings(max_examples=500, deadline=None)
    @given(st.binary(max_size=80), st.integers(0, 100))
    def test_whole_escapes_as_many_as_fit(self, raw: bytes, limit: int) -> None:
        """
        A field is twisted.web's escape of the longest start of the value
        whose escape fits in the limit, with "..." when that is not all of it.
        """
        from twisted.web.http import _escape

        text = logs.escape_field(raw, limit)
        n = max(i for i in range(len(raw) + 1) if len(_escape(raw[:i])) <= limit)
        if n == len(raw):
            self.assertEqual(text, _escape(raw))
        else:
            self.assertEqual(text, _escape(raw[:n]) + logs.CUT)

    def test_text_values(self) -> None:
        """Addresses come as text; they are escaped and bounded alike."""
        self.assertEqual(logs.escape_field("10.0.0.7", 64), "10.0.0.7")
        self.assertEqual(logs.escape_field("1" * 70, 64), "1" * 64 + "...")


class LogUnfinishedTests(SynchronousTestCase):
    def test_ignores_requests_without_a_site(self) -> None:
        """A request double with no Site is ignored, not an error."""

        class NoSite:
            pass

        logs.log_unfinished(NoSite())  # type: ignore[arg-type]


class AppLogServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())
        self.publisher = LogPublisher()
        self.log = Logger(namespace="notificator.test", observer=self.publisher)
        self.path = os.path.join(self.dir, "sse.log")
        self.clock = Clock()

    def start(
        self,
        level: str,
        open_file: Callable[
            [str], logs.BufferedDailyLogFile
        ] = logs.BufferedDailyLogFile.fromFullPath,
    ) -> logs.AppLogService:
        service = logs.AppLogService(self.dir, level, self.publisher, open_file, self.clock)
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        return service

    def test_filters_by_level(self) -> None:
        """Events below server.log.level are left out of sse.log."""
        service = self.start("info")
        self.log.debug("hidden {n}", n=1)
        self.log.info("shown {n}", n=2)
        self.log.warn("also shown {n}", n=3)
        service.stopService()
        text = "".join(lines(self.path))
        self.assertNotIn("hidden", text)
        self.assertIn("[notificator.test#info] shown 2", text)
        self.assertIn("[notificator.test#warn] also shown 3", text)
        self.assertIn("logging at level info", text)

    def test_debug_level_keeps_debug_events(self) -> None:
        """At level debug, debug events are written."""
        service = self.start("debug")
        self.log.debug("detail {n}", n=1)
        service.stopService()
        self.assertIn("#debug] detail 1", "".join(lines(self.path)))

    def test_stop_removes_the_observer(self) -> None:
        """After stopService nothing more is written and the file is closed."""
        service = self.start("info")
        service.stopService()
        before = lines(self.path)
        self.log.info("after stop")
        self.assertEqual(lines(self.path), before)
        self.assertIsNone(service.log_file)

    def test_info_lines_wait_for_the_tick_warnings_do_not(self) -> None:
        """Info lines reach the file within a second; a warning is flushed at once, with the lines before it."""
        self.start("info")
        self.log.info("opened {n}", n=1)
        self.assertNotIn("opened 1", "".join(lines(self.path)))
        self.clock.advance(logs.FLUSH_INTERVAL)
        self.assertIn("opened 1", "".join(lines(self.path)))
        self.log.info("opened {n}", n=2)
        self.log.warn("refused {n}", n=3)
        text = "".join(lines(self.path))
        self.assertIn("opened 2", text)
        self.assertIn("refused 3", text)

    def test_activity_lines_only_in_sse_log(self) -> None:
        """Per-request lines (the activity publisher) reach sse.log and not the process log."""
        service = self.start("info")
        process_log: list[dict[str, Any]] = []
        self.publisher.addObserver(process_log.append)
        activity = Logger(namespace="notificator.web", observer=service.activity)
        activity.info("stream {n} opened", n=7)
        activity.debug("below the level {n}", n=8)
        self.log.warn("process warning {n}", n=9)
        service.stopService()
        text = "".join(lines(self.path))
        self.assertIn("[notificator.web#info] stream 7 opened", text)
        self.assertNotIn("below the level", text)
        self.assertIn("process warning 9", text)
        self.assertEqual([e["log_format"] for e in process_log], ["process warning {n}"])
        # Stopped: the activity publisher has no observer left.
        activity.info("after stop")
        self.assertNotIn("after stop", "".join(lines(self.path)))

    def test_line_format_is_twisteds(self) -> None:
        """Lines are exactly what textFileLogObserver writes, for every kind of event."""

        class Thing:
            size = 3

            def __repr__(self) -> str:
                return "<thing>"

        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            failure = Failure()
        base = {
            "log_namespace": "notificator.web",
            "log_level": LogLevel.info,
            "log_time": 1700000000.25,
        }
        events = [
            {"log_format": "stream {n} opened for {user}", "n": 3, "user": "김철수"},
            {"log_format": "same second {n}", "n": 1, "log_time": 1700000000.75},
            {"log_format": "next second", "log_time": 1700000001.0},
            {"log_format": "an hour on", "log_time": 1700003600.5},
            {"log_format": "back in time", "log_time": 1700000000.1},
            {"log_format": "no time", "log_time": None},
            {"log_format": "{a.size} {a!r} {n:>5} {d[k]}", "a": Thing(), "n": 7, "d": {"k": "v"}},
            {"log_format": "called {f()}", "f": lambda: "yes"},
            {"log_format": "missing {nothing}"},
            {"log_format": "positional {0}"},
            {"log_format": "bad {", "n": 1},
            {"log_format": "two\nlines {x}", "x": "a\nb"},
            {"log_format": ""},
            {"log_format": None},
            {"log_format": b"bytes {n}", "n": 2},
            {"log_format": "legacy", "log_system": "HTTPChannel,0,127.0.0.1"},
            {"log_format": "failed {n}", "n": 1, "log_failure": failure},
            {"log_format": "no level", "log_level": None},
            {"log_format": "no namespace", "log_namespace": None},
            {"log_format": "{{braces}} {n}", "n": 1},
        ]
        fmt = _ClassicFormat()
        for extra in events:
            event = {**base, **extra}
            self.assertEqual(fmt(event), formatEventAsClassicLogText(event), extra)

    def test_rotates_daily(self) -> None:
        """sse.log moves to sse.log.Y_M_D when the date changes."""
        date = FakeDate((2026, 11, 23))

        def open_file(path: str) -> logs.BufferedDailyLogFile:
            f = logs.BufferedDailyLogFile.fromFullPath(path)
            f.toDate = date  # type: ignore[method-assign]
            f.lastDate = date.today
            return f

        service = self.start("info", open_file)
        self.log.info("monday")
        date.today = (2026, 11, 24)
        self.clock.advance(logs.FLUSH_INTERVAL)
        self.log.info("tuesday")
        service.stopService()
        old = "".join(lines(self.path + ".2026_11_23"))
        new = "".join(lines(self.path))
        self.assertIn("monday", old)
        self.assertNotIn("tuesday", old)
        self.assertIn("tuesday", new)
        self.assertNotIn("monday", new)

    def test_old_rotations_removed(self) -> None:
        """keep_days: sse.log's old rotations go at start and after each rotation; stop cancels."""
        date = FakeDate((2026, 11, 24))
        self.patch(logs.BufferedDailyLogFile, "toDate", date)
        touch(self.dir, "sse.log.2026_10_1", "sse.log.2026_11_20", "access.log.2026_10_1")
        service = logs.AppLogService(
            self.dir, "info", self.publisher, clock=self.clock, keep_days=7
        )
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        self.clock.advance(logs.OldLogRemover.PAUSE)
        self.assertEqual(
            sorted(os.listdir(self.dir)), ["access.log.2026_10_1", "sse.log", "sse.log.2026_11_20"]
        )
        date.today = (2026, 11, 28)
        self.clock.advance(logs.FLUSH_INTERVAL)  # rotates to sse.log.2026_11_24
        self.assertNotEqual(self.clock.getDelayedCalls(), [])
        service.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [], "stop cancels the pending removal")
        self.assertIn("sse.log.2026_11_20", os.listdir(self.dir))
        service.startService()
        self.clock.advance(logs.OldLogRemover.PAUSE)
        self.assertEqual(
            sorted(os.listdir(self.dir)), ["access.log.2026_10_1", "sse.log", "sse.log.2026_11_24"]
        )

    def test_request_data_never_breaks_lines(self) -> None:
        """User ids and paths with CR/LF from requests stay on one sse.log line."""
        from twisted.logger import globalLogPublisher

        service = logs.AppLogService(self.dir, "debug", globalLogPublisher)
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        reactor = MemoryReactorClock()
        site = logs.AccessLogSite(Parts(reactor, config.defaults()).resource, self.dir, reactor)
        site.doStart()
        self.addCleanup(site.doStop)
        requests = [
            # refused: control characters in the path's user id, and a lone CR
            b"GET /sse/a%0D%0Ainjected HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /sse/a\rinjected HTTP/1.1\r\nHost: x\r\n\r\n",
            # refused: in the cookie
            b"GET /sse HTTP/1.1\r\nHost: x\r\nCookie: userID=a%0Ainjected\r\n\r\n",
            # accepted: a user id with a Unicode line separator
            b"GET /sse/a%E2%80%A8injected HTTP/1.1\r\nHost: x\r\n\r\n",
        ]
        for raw in requests:
            channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
            channel.makeConnection(StringTransport())
            channel.dataReceived(raw)
            channel.connectionLost(Failure(ConnectionDone()))
        body = "id=notify_a%0D%0Ainjected&data=%7B%7D"
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        channel.makeConnection(StringTransport())
        channel.dataReceived(
            b"POST /webNotification HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n{body}".encode()
        )
        service.stopService()
        found = lines(self.path)
        app_lines = [line for line in found if "notificator.web" in line]
        # 2 refused streams, opened + closed, 1 rejected publish; the raw CR
        # never gets past twisted.web's parser.
        self.assertEqual(len(app_lines), 5, found)
        for line in found:
            self.assertNotIn("\r", line)
            self.assertNotIn("\u2028", line)
            self.assertFalse(line.startswith("injected"), line)
        reactor.advance(site.flush_interval)
        access = lines(os.path.join(self.dir, "access.log"))
        self.assertTrue(access)
        assert_one_line_each(self, access)


class SafeTests(SynchronousTestCase):
    def test_line_breaks_and_controls_escaped(self) -> None:
        """Line breaks of every kind, tabs, controls and backslashes are escaped."""
        cases = [
            ("a\r\nb", "a\\r\\nb"),
            ("a\u2028b\u2029c\x85d", "a\\u2028b\\u2029c\\x85d"),
            ("a\tb\x00c\x1bd", "a\\tb\\x00c\\x1bd"),
            ("a\\nb", "a\\\\nb"),
            (b"a\r\xffb", "a\\r\ufffdb"),
        ]
        for raw, expected in cases:
            self.assertEqual(web.safe(raw), expected, raw)

    def test_printable_text_stays_readable(self) -> None:
        """Korean and other printable text is logged as is."""
        self.assertEqual(web.safe("홍길동 001000210"), "홍길동 001000210")
        self.assertEqual(web.safe("홍길동".encode()), "홍길동")

    def test_bounded(self) -> None:
        """Long values are cut with an ellipsis."""
        self.assertEqual(web.safe("x" * 300, limit=10), "x" * 10 + "...")


class WiringTests(SynchronousTestCase):
    def make_service(self, level: str) -> tuple[str, str, MemoryReactorClock, Any]:
        """makeService on a memory reactor: (log dir, config dir, reactor, root service)."""
        from notificator import tap
        from tests.support import write_config

        log_dir = os.path.abspath(self.mktemp())
        conf = write_config(
            os.path.join(os.path.abspath(self.mktemp()), "conf"),
            {"default": {"server": {"log": {"dir": log_dir, "level": level}}}, "x": {}},
        )
        opts = tap.Options()
        opts.parseOptions(["--config", conf, "--env", "x", "--listen", "tcp:0"])
        reactor = MemoryReactorClock()
        return log_dir, conf, reactor, tap.makeService(opts, reactor=reactor)

    def test_make_service_wires_the_logs(self) -> None:
        """makeService puts sse.log first, the access-log site on the listeners, the drain last."""
        from notificator import tap

        log_dir, conf, reactor, root = self.make_service("warn")
        children = list(root)
        first = children[0]
        assert isinstance(first, logs.AppLogService)
        self.assertEqual((first.path, first.level), (os.path.join(log_dir, "sse.log"), "warn"))
        self.assertIsInstance(list(children[-1])[-1], tap.DrainService)
        titles = [c for c in children if isinstance(c, services.ProcessTitleService)]
        self.assertEqual([t.title for t in titles], [f"notificator [x] {os.path.dirname(conf)}"])
        root.startService()
        self.addCleanup(root.stopService)
        site = reactor.tcpServers[0][1]
        self.assertIsInstance(site, logs.AccessLogSite)
        self.assertEqual(site.logPath, os.path.join(log_dir, "access.log"))
        self.assertFalse(site.monitor_polls)  # monitor.accessLog, default false
        self.assertEqual((site.keep_days, first.keep_days), (30, 30))  # server.log.keepDays
        self.assertTrue(os.path.isfile(os.path.join(log_dir, "sse.log")))

    def test_stream_lines_reach_sse_log_only(self) -> None:
        """With makeService's wiring, a stream's lines are in sse.log and not in twistd's (global) log."""
        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import globalLogPublisher

        log_dir, _, reactor, root = self.make_service("info")
        root.startService()
        global_events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        site = reactor.tcpServers[0][1]
        protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"GET /sse/u1 HTTP/1.1\r\nHost: t\r\n\r\n")
        reactor.advance(0)  # the end of the reactor pass: the WriteBatch sends
        self.assertIn(b"event: connect", transport.value())
        protocol.connectionLost(Failure(ConnectionDone()))
        root.stopService()
        text = "".join(lines(os.path.join(log_dir, "sse.log")))
        self.assertIn("[notificator.web#info] stream 1 opened for u1", text)
        self.assertIn("stream 1 of u1 closed by the client", text)
        self.assertEqual([e for e in global_events if "stream" in e.get("log_format", "")], [])
