# -*- test-case-name: tests.test_services,tests.test_tap -*-
"""
The services of the tree C{makeService} builds (L{notificator.tap}) that
are the tree's own:

 - L{SequentialService}, whose children stop one after the other, the
   last started first; L{DrainService}, whose stop drains the streams;
   L{ThreadPoolService}, which runs a thread pool while it runs;
 - what the server does to its own process while it runs, undone when it
   stops (so tests leave no trace): the process title
   (L{ProcessTitleService}), so that C{ps}, C{top} and C{ps -ef | grep
   notificator} show the daemon by name, and the garbage collector's
   tuning (L{GCTuningService}, the parent of the serving part), so that
   full collections do not pause a server holding many streams.
"""

from __future__ import annotations

import gc
from typing import Any

import setproctitle
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from notificator.hub import Hub
from notificator.timers import Ticker, TickerService

# The namespace it had before the moves of issue 18 (the lines of the
# services that were tap.py's): it is part of every log line, and no log
# line changes.
log = Logger("notificator.tap")


class ProcessTitleService(Service):
    """
    Shows C{title} as the process title (C{ps}, C{top}) while running, and
    puts the previous title back when stopped (so tests leave no trace).
    """

    def __init__(self, title: str) -> None:
        self.title = title
        self._previous: str | None = None

    def startService(self) -> None:
        self._previous = setproctitle.getproctitle()
        setproctitle.setproctitle(self.title)
        super().startService()

    def stopService(self) -> None:
        super().stopService()
        if self._previous is not None:
            setproctitle.setproctitle(self._previous)
            self._previous = None


class SequentialService(MultiService):
    """
    A L{MultiService} whose children start in order and stop in reverse
    order, each only after the one before has finished stopping (its
    C{stopService} Deferred fired): twistd's L{MultiService} stops them
    all at once, so the logs could close before the streams are drained,
    or the history be written before the last publishes.  A child whose
    stop fails is logged and the next one stops all the same.
    """

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        d: Deferred[object] = succeed(None)
        for child in reversed(list(self)):
            d.addCallback(_stop_child, child)
            d.addErrback(_stop_failed, child)
        return d.addCallback(lambda _: None)


def _stop_child(_: object, child: IService) -> Deferred[object] | None:
    stopped: Deferred[object] | None = child.stopService()  # (IService is unannotated)
    return stopped


def _stop_failed(failure: Failure, child: IService) -> None:
    log.failure("stopping {service} failed", failure, service=child)


class GCTuningService(SequentialService):
    """
    Keep the cyclic garbage collector from pausing the server while the
    services under it (the serving part of the tree) run.

    An open stream is a few dozen long-lived objects; with 10,000 of them a
    full collection takes 100-150 ms here, and the default thresholds run
    one each time the population grows by a quarter (several while streams
    connect) and then now and again under load: a latency spike each time.
    So full collections are made ten times rarer from the start (young
    collections, which free per-request garbage, are unchanged), and once
    the services under it have started, what start-up built is frozen out
    of the collector's sight: the modules, the resource tree, and the
    history the broker loaded from disk (what it keeps for hundreds of
    thousands of notifications is a few objects per user, but those, the
    objects start-up left, and the young objects loading made would
    otherwise be walked by every full collection).  Its children stop as a
    L{SequentialService}'s do, and then the previous state is restored.
    """

    FULL_COLLECTION_THRESHOLD = 100

    def __init__(self) -> None:
        super().__init__()
        self._saved: tuple[int, ...] | None = None

    def startService(self) -> None:
        self._saved = gc.get_threshold()
        young, middle, _ = self._saved
        gc.set_threshold(young, middle, self.FULL_COLLECTION_THRESHOLD)
        super().startService()
        gc.collect()
        gc.freeze()

    def stopService(self) -> Deferred[None]:
        return super().stopService().addBoth(self._restore)

    def _restore(self, result: Any) -> Any:
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            gc.unfreeze()
            self._saved = None
        return result


class DrainService(Service):
    """
    On stop, drain the hub (L{Hub.drain}): new streams are turned away and
    the open ones ended spread over C{seconds}, each with a C{retry:} of
    C{retry} ms plus jitter.  The stop fires when every stream has ended.
    """

    def __init__(self, hub: Hub, seconds: float, retry: int) -> None:
        self.hub = hub
        self.seconds = seconds
        self.retry = retry

    def stopService(self) -> Deferred[None]:
        super().stopService()
        streams = self.hub.stream_count
        if streams:
            log.info(
                "stopping: ending {streams} {noun} over {seconds:g} s",
                streams=streams,
                noun="stream" if streams == 1 else "streams",
                seconds=self.seconds,
            )
        return self.hub.drain(self.seconds, self.retry)


class ThreadPoolService(Service):
    """Runs a L{ThreadPool} while the service runs."""

    def __init__(self, pool: ThreadPool) -> None:
        self.pool = pool

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> None:
        super().stopService()
        self.pool.stop()


def _timer(interval: float, call: Any, clock: IReactorTime) -> TickerService:
    return TickerService(Ticker(call, call.__name__, clock, interval, "notificator.services"))
