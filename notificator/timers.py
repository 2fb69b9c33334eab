# -*- test-case-name: tests.test_timers -*-
"""
The one shape of the server's periodic work: a L{Ticker} calls a function
every interval between its C{start} and C{stop}, and goes on when a call
raises; a L{TickerService} is a ticker in the service tree, started and
stopped with it.

Every timer is one of these: the flushes of C{access.log} and C{sse.log}
(L{notificator.logs.files}), the history's journal flush
(L{notificator.history.journal.Journal}), the Redis link's pings
(L{notificator.broker.redis.link}), and the heartbeat and keepalive
(L{notificator.tap.makeService}).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger


class Ticker:
    """
    Calls C{tick} every C{interval} seconds on C{clock}, the first one
    interval after L{start}, until L{stop}.

    A tick that raises (a full disk, a file removed under the server) is
    logged, once until a tick succeeds again, and the next tick still
    comes: a bare C{LoopingCall} whose function raises stops for good.  A
    tick's result is not waited for: a tick that starts work and returns
    its L{Deferred} does not hold back the next one.

    @ivar tick: what it calls.
    @param what: what a tick does, for the log lines of a failed tick
        (C{"flushing access.log"}).
    @param clock: L{None}: the global reactor (C{LoopingCall}'s default).
    @param namespace: the namespace of those log lines: the owner's.
    """

    def __init__(
        self,
        tick: Callable[[], object],
        what: str,
        clock: IReactorTime | None,
        interval: float,
        namespace: str = "notificator.timers",
    ) -> None:
        self.tick = tick
        self._what = what
        self.interval = interval
        self._loop = LoopingCall(self._step)
        if clock is not None:
            self._loop.clock = clock
        self._failing = False
        self.log = Logger(namespace, self)

    @property
    def clock(self) -> IReactorTime:
        """The clock it ticks on."""
        clock: IReactorTime = self._loop.clock
        return clock

    @property
    def running(self) -> bool:
        return bool(self._loop.running)

    def start(self) -> None:
        """Tick every interval from now on (the first after one interval)."""
        if not self._loop.running:
            self._loop.start(self.interval, now=False)

    def stop(self) -> None:
        """No more ticks."""
        if self._loop.running:
            self._loop.stop()

    def _step(self) -> None:
        try:
            self.tick()
        except Exception:
            if not self._failing:
                self._failing = True
                self.log.failure("{what} failed; retrying every tick", what=self._what)
        else:
            if self._failing:
                self._failing = False
                self.log.info("{what} works again", what=self._what)


class TickerService(Service):
    """A L{Ticker} in the service tree: it ticks while the service runs."""

    def __init__(self, ticker: Ticker) -> None:
        self.ticker = ticker

    def startService(self) -> None:
        super().startService()
        self.ticker.start()

    def stopService(self) -> None:
        self.ticker.stop()
        super().stopService()
