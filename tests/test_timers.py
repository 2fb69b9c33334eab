"""Tests for L{notificator.timers}: the one shape of the server's periodic work."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from notificator.timers import Ticker, TickerService


class TickerTests(SynchronousTestCase):
    """L{Ticker}: a call every interval that a failing call does not stop."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.calls: list[float] = []
        self.fail = 0
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def tick(self) -> None:
        self.calls.append(self.clock.seconds())
        if self.fail:
            self.fail -= 1
            raise OSError(28, "No space left on device")

    def test_every_interval_between_start_and_stop(self) -> None:
        ticker = Ticker(self.tick, "flushing x.log", self.clock, 2.0)
        self.clock.advance(5)
        self.assertEqual(self.calls, [])  # not started
        ticker.start()
        ticker.start()  # twice: fine
        self.assertTrue(ticker.running)
        self.assertEqual(self.calls, [])  # the first after one interval
        self.clock.advance(2)
        self.clock.advance(2)
        self.assertEqual(self.calls, [7.0, 9.0])
        ticker.stop()
        ticker.stop()  # twice: fine
        self.assertFalse(ticker.running)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIs(ticker.clock, self.clock)
        self.assertEqual(ticker.tick, self.tick)

    def test_a_failing_tick_does_not_stop_it(self) -> None:
        """Failures are logged once per streak; the ticks go on, and recovery is logged."""
        ticker = Ticker(self.tick, "flushing access.log", self.clock, 1.0, "notificator.logs")
        ticker.start()
        self.addCleanup(ticker.stop)
        self.fail = 3
        for _ in range(5):
            self.clock.advance(1.0)
        self.assertEqual(len(self.calls), 5)
        self.assertTrue(ticker.running)
        failed = [e for e in self.events if "failed" in e.get("log_format", "")]
        self.assertEqual(len(failed), 1)
        self.assertEqual(formatEvent(failed[0]), "flushing access.log failed; retrying every tick")
        self.assertEqual(failed[0]["log_namespace"], "notificator.logs")
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        again = [e for e in self.events if "works again" in e.get("log_format", "")]
        self.assertEqual([formatEvent(e) for e in again], ["flushing access.log works again"])

    def test_a_tick_that_returns_a_deferred_does_not_hold_the_next(self) -> None:
        """A tick that starts work (a PING to Redis) is not waited for."""
        waiting: list[Deferred[None]] = []

        def tick() -> Deferred[None]:
            d: Deferred[None] = Deferred()
            waiting.append(d)
            return d

        ticker = Ticker(tick, "pinging", self.clock, 1.0)
        ticker.start()
        self.addCleanup(ticker.stop)
        for _ in range(3):
            self.clock.advance(1.0)
        self.assertEqual(len(waiting), 3)


class TickerServiceTests(SynchronousTestCase):
    """L{TickerService}: a ticker that runs while its service runs."""

    def test_ticks_while_running(self) -> None:
        clock = Clock()
        calls: list[float] = []
        service = TickerService(Ticker(lambda: calls.append(clock.seconds()), "x", clock, 3.0))
        clock.advance(10)
        self.assertEqual(calls, [])
        service.startService()
        self.assertTrue(service.running)
        clock.advance(3)
        self.assertEqual(calls, [13.0])
        service.stopService()
        self.assertFalse(service.running)
        clock.advance(30)
        self.assertEqual(calls, [13.0])
        self.assertEqual(clock.getDelayedCalls(), [])
