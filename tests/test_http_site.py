"""
Tests for L{notificator.http.site}: the site's access log, the line of a
stream that ends by disconnect, and the monitor page's polls.
"""

from __future__ import annotations

import os
import re
from ipaddress import ip_network

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import HTTPChannel

from notificator import auth, config, logs
from notificator.http.site import Site
from tests.support import Parts, config_with
from tests.test_logs_files import FakeDate, assert_one_line_each, lines, touch


class AccessLogSiteTests(SynchronousTestCase):
    """The site as twistd runs it, over in-memory HTTP connections."""

    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())
        self.reactor = MemoryReactorClock()
        self.parts = Parts(self.reactor, config.defaults())
        self.hub = self.parts.hub
        self.site = self.make_site(self.parts.resource, os.path.join(self.dir, "log"))
        self.path = os.path.join(self.dir, "log", "access.log")

    def make_site(
        self, resource: object, log_dir: str, keep_days: int = 0, **kwargs: object
    ) -> Site:
        """A started site writing log_dir/access.log (stopped by the cleanup)."""
        access_log = logs.AccessLog(
            os.path.join(log_dir, "access.log"), self.reactor, keep_days=keep_days
        )
        site = Site(resource, reactor=self.reactor, access_log=access_log, **kwargs)
        site.doStart()
        self.addCleanup(site.doStop)
        return site

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
        self.site = self.make_site(resource, os.path.join(blocker, "log"))
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

    def test_flush_goes_on_after_a_failed_one(self) -> None:
        """A flush that fails (a full disk) is logged; the next tick flushes what came since."""
        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import globalLogPublisher

        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.reactor.advance(self.site.flush_interval)  # opens the file
        access_log = self.site.access_log
        assert access_log is not None and access_log.file is not None
        flush = access_log.file.flush
        failures = [OSError(28, "No space left on device")]

        def full_once() -> None:
            if failures:
                raise failures.pop()
            flush()

        access_log.file.flush = full_once  # type: ignore[method-assign]
        channel, _ = self.connect()
        channel.dataReceived(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
        self.reactor.advance(self.site.flush_interval)  # this flush fails
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        channel.dataReceived(b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
        self.disconnect(channel)
        logged = self.access_lines()
        self.assertEqual(len(logged), 2, logged)
        self.assertIn("/second", logged[1])
        [failed] = [e for e in events if "failed" in e.get("log_format", "")]
        self.assertEqual(formatEvent(failed), "flushing access.log failed; retrying every tick")

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
        self.site.doStop()
        # With its guard, as makeService makes it.
        self.site = self.make_site(
            self.parts.resource,
            os.path.join(self.dir, "log"),
            guard=auth.Guard.from_config(config.defaults()),
        )
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
        resource = Parts(self.reactor, cfg).resource
        log_dir = os.path.join(self.dir, "log")
        self.site = self.make_site(resource, log_dir, guard=auth.Guard.from_config(cfg))
        self.poll(b"/health?from=outside", client="127.0.0.1")
        self.poll(b"/users", client="127.0.0.1", status=b" 403 ")
        self.poll(b"/health?from=inside", client="10.1.2.3")
        self.poll(b"/users", client="10.1.2.3")
        self.poll(b"/users", client="10.1.2.3", method=b"POST", status=b" 405 ")
        self.site.doStop()
        self.site = self.make_site(resource, log_dir)  # no guard
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
        self.site.doStop()
        self.site = self.make_site(
            self.parts.resource,
            os.path.join(self.dir, "log"),
            guard=auth.Guard.from_config(config.defaults()),
            monitor_polls=True,
        )
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
        assert self.site.access_log is not None
        self.assertIsNone(self.site.access_log.file)  # closed
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
        self.site = self.make_site(self.site.resource, log_dir, keep_days=22)
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
