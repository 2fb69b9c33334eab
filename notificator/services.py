# -*- test-case-name: tests.test_services -*-
"""
What the server does to its own process while it runs, each a service of
the tree C{makeService} builds, undone when it stops (so tests leave no
trace):

 - the process title (L{ProcessTitleService}), so that C{ps}, C{top} and
   C{ps -ef | grep notificator} show the daemon by name;
 - the garbage collector's tuning (L{GCTuningService}), so that full
   collections do not pause a server holding many streams.
"""

from __future__ import annotations

import gc

import setproctitle
from twisted.application.service import Service


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


class GCTuningService(Service):
    """
    Keep the cyclic garbage collector from pausing the server.

    An open stream is a few dozen long-lived objects; with 10,000 of them a
    full collection takes 100-150 ms here, and the default thresholds run
    one each time the population grows by a quarter (several while streams
    connect) and then now and again under load: a latency spike each time.
    On start we freeze what start-up built (modules, the resource tree) out
    of the collector's sight and make full collections ten times rarer;
    young collections, which free per-request garbage, are unchanged.  Stop
    restores the previous state.
    """

    FULL_COLLECTION_THRESHOLD = 100

    def __init__(self) -> None:
        self._saved: tuple[int, ...] | None = None

    def startService(self) -> None:
        super().startService()
        self._saved = gc.get_threshold()
        gc.collect()
        gc.freeze()
        young, middle, _ = self._saved
        gc.set_threshold(young, middle, self.FULL_COLLECTION_THRESHOLD)

    def stopService(self) -> None:
        super().stopService()
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            gc.unfreeze()
            self._saved = None
