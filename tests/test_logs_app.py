"""
Tests for L{notificator.logs.app}: sse.log, its filtering and rotation,
CR/LF safety, and its place in the service tree.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import (
    Logger,
    LogLevel,
    LogPublisher,
    formatEventAsClassicLogText,
)
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from notificator import config, logs, services
from notificator.http.site import Site
from notificator.logs.app import _ClassicFormat
from tests.support import Parts
from tests.test_logs_files import FakeDate, assert_one_line_each, lines, touch


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
        site = Site(
            Parts(reactor, config.defaults()).resource,
            reactor=reactor,
            access_log=logs.AccessLog(os.path.join(self.dir, logs.ACCESS_LOG), reactor),
        )
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
        from notificator.services import DrainService

        log_dir, conf, reactor, root = self.make_service("warn")
        children = list(root)
        first = children[0]
        assert isinstance(first, logs.AppLogService)
        self.assertEqual((first.path, first.level), (os.path.join(log_dir, "sse.log"), "warn"))
        # The drain last, in the serving part under the GC tuning.
        serving = list(children[-1])[-1]
        self.assertIsInstance(list(serving)[-1], DrainService)
        titles = [c for c in children if isinstance(c, services.ProcessTitleService)]
        self.assertEqual([t.title for t in titles], [f"notificator [x] {os.path.dirname(conf)}"])
        root.startService()
        self.addCleanup(root.stopService)
        site = reactor.tcpServers[0][1]
        self.assertIsInstance(site, Site)
        self.assertEqual(site.logPath, os.path.join(log_dir, "access.log"))
        self.assertFalse(site.monitor_polls)  # monitor.accessLog, default false
        self.assertEqual(
            (site.access_log.keep_days, first.keep_days), (30, 30)
        )  # server.log.keepDays
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


class CheaperLineTests(SynchronousTestCase):
    """
    The per-request lines' path is cheaper than twisted.logger's and lets
    through, and builds, the same events: L{logs.ActivityLogger} and the
    level filter of L{logs.AppLogService}.
    """

    def test_filter_as_twisteds(self) -> None:
        """The level filter passes exactly what Twisted's FilteringLogObserver with level_filter does."""
        from twisted.logger import FilteringLogObserver

        from notificator.logs.app import _AtLevel

        events: list[dict[str, Any]] = [{"log_namespace": "notificator.web"}, {"log_level": None}]
        for level in LogLevel.iterconstants():
            for namespace in ("notificator.web", "", "a.b.c"):
                events.append({"log_level": level, "log_namespace": namespace})
        for threshold in ("debug", "info", "warn", "error", "critical"):
            ours: list[Any] = []
            twisteds: list[Any] = []
            ours_filter = _AtLevel(ours.append, threshold)
            twisted_filter = FilteringLogObserver(twisteds.append, [logs.level_filter(threshold)])
            for event in events:
                ours_filter(event)
                twisted_filter(event)
            self.assertEqual(ours, twisteds, threshold)

    def test_activity_logger_event_as_twisteds(self) -> None:
        """ActivityLogger emits the event twisted.logger's Logger emits, for every level."""
        ours: list[dict[str, Any]] = []
        twisteds: list[dict[str, Any]] = []
        ours_log = logs.ActivityLogger(namespace="notificator.web", observer=ours.append)
        twisted_log = Logger(namespace="notificator.web", observer=twisteds.append)
        for level in LogLevel.iterconstants():
            ours_log.emit(level, "stream {n} opened for {user}", n=1, user="u1")
            twisted_log.emit(level, "stream {n} opened for {user}", n=1, user="u1")
        self.assertEqual(len(ours), 5)
        for mine, theirs in zip(ours, twisteds, strict=True):
            self.assertLess(abs(mine.pop("log_time") - theirs.pop("log_time")), 60)
            mine.pop("log_logger")
            theirs.pop("log_logger")
            self.assertEqual(mine, theirs)
        # Not a level: Twisted's complaint, not an event at that level.
        ours_log.emit("info", "bad")  # type: ignore[arg-type]
        self.assertEqual(ours[-1]["log_level"], LogLevel.critical)

    def test_line_lists_no_levels(self) -> None:
        """
        A stream's line through sse.log's path does not list and sort
        LogLevel's constants (twisted.logger's Logger.emit and its level
        predicate did, for every line).
        """
        calls: list[object] = []
        original = LogLevel.iterconstants

        def counting() -> Any:
            calls.append(None)
            return original()

        service = logs.AppLogService(os.path.abspath(self.mktemp()), "info", clock=Clock())
        service.startService()
        self.addCleanup(service.stopService)
        activity = logs.ActivityLogger(namespace="notificator.web", observer=service.activity)
        self.patch(LogLevel, "iterconstants", counting)
        activity.info("stream {n} opened", n=7)
        activity.debug("below the level {n}", n=8)
        self.assertEqual(calls, [])
        service.log_file.flush()  # type: ignore[union-attr]
        self.assertIn("stream 7 opened", "".join(lines(service.path)))

    def test_below_the_level_not_built(self) -> None:
        """
        AppLogService.logger drops a line below sse.log's level before it is
        built (a publish's debug line at the default level, info), and
        passes the others as sse.log's filter would.
        """
        service = logs.AppLogService(os.path.abspath(self.mktemp()), "info", clock=Clock())
        seen: list[dict[str, Any]] = []
        service.activity.addObserver(seen.append)
        activity = service.logger("notificator.web")
        self.assertIsInstance(activity, logs.ActivityLogger)
        activity.debug("published {n}", n=1)
        activity.info("opened {n}", n=2)
        activity.warn("refused {n}", n=3)
        self.assertEqual([e["log_format"] for e in seen], ["opened {n}", "refused {n}"])
        self.assertEqual(seen[0]["log_namespace"], "notificator.web")
        debug = logs.AppLogService(os.path.abspath(self.mktemp()), "debug", clock=Clock())
        debug.activity.addObserver(seen.append)
        debug.logger("notificator.web").debug("published {n}", n=4)
        self.assertEqual(seen[-1]["log_format"], "published {n}")
