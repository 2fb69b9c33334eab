# -*- test-case-name: tests.test_tap -*-
"""
What a worker of C{server.workers} runs besides the single-process server
(L{notificator.tap.makeService} with C{--worker-slot}): its listeners,
which listen once its broker reaches Redis (L{WorkerListeners},
L{until_available}), the site held open until its drained streams are
logged (L{FactoryHold}), and SIGINT left to its supervisor
(L{IgnoreInterrupt}).
"""

from __future__ import annotations

import signal
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from notificator.timers import Ticker

log = Logger()


class IgnoreInterrupt(Service):
    """
    A worker ignores SIGINT while it runs: Ctrl-C in a terminal signals the
    whole foreground process group, the workers too, and their supervisor
    stops them itself (SIGTERM), once.  (Started before the reactor runs,
    so twistd installs no SIGINT handler of its own over it.)
    """

    _previous: Any = None

    def startService(self) -> None:
        super().startService()
        self._previous = signal.signal(signal.SIGINT, signal.SIG_IGN)

    def stopService(self) -> None:
        super().stopService()
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


class FactoryHold(Service):
    """
    Keeps a factory started while it runs (C{doStart}, C{doStop}): a
    twisted.web site closes its access log when its last listener stops
    (C{stopFactory}), and a worker's listeners stop before its streams
    are drained and logged.
    """

    def __init__(self, factory: Any) -> None:
        self.factory = factory

    def startService(self) -> None:
        super().startService()
        self.factory.doStart()

    def stopService(self) -> None:
        super().stopService()
        self.factory.doStop()


class WorkerListeners(MultiService):
    """
    A worker's listeners (L{reuseport.ReusePortService}s: its own socket on
    the port its fellow workers share, C{SO_REUSEPORT}), which start
    listening only once the broker reaches Redis (L{until_available}): a
    worker that listened before would take connections the kernel hands
    it and refuse their publishes (503) until then.  (A worker has no
    privileges to listen with: its supervisor started it after twistd's
    C{--uid}.)  A listener that cannot listen stops the worker, which its
    supervisor starts again.
    """

    def __init__(self, broker: Any, reactor: Any) -> None:
        super().__init__()
        self._broker = broker
        self._reactor = reactor
        self._listening = False
        self._waiting: list[Deferred[None]] = []

    def privilegedStartService(self) -> None:
        Service.privilegedStartService(self)

    def startService(self) -> None:
        Service.startService(self)
        until_available(self._broker, self._reactor).addCallback(self._listen)

    def _listen(self, _: object) -> None:
        if not self.running:
            return
        try:
            for listener in self:
                listener.startService()
        except Exception:
            log.failure("a worker cannot listen: stopping")
            self._reactor.stop()
            return
        self._listening = True
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    def when_listening(self) -> Deferred[None]:
        """Fires once every listener listens."""
        d: Deferred[None] = Deferred()
        if self._listening:
            d.callback(None)
        else:
            self._waiting.append(d)
        return d


def until_available(broker: Any, clock: Any, interval: float = 0.05) -> Deferred[None]:
    """
    Fires once C{broker.health()} says it is available (L{None}): asked
    now, then every C{interval} s on a L{Ticker} (an answer that raises is
    logged and asked again, not the end of the wait).
    """
    done: Deferred[None] = Deferred()

    def ask() -> None:
        if broker.health() is None:
            poll.stop()
            if not done.called:
                done.callback(None)

    poll = Ticker(ask, "asking the broker whether Redis is reachable", clock, interval, __name__)
    try:
        ask()
    except Exception:
        log.failure("asking the broker whether Redis is reachable failed; asking again")
    if not done.called:
        poll.start()
    return done
