"""
Tests for L{notificator.services}: the ordered stop, the process title and
the GC tuning, and their place in the service tree.
"""

from __future__ import annotations

import gc
import os

import setproctitle
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from notificator import services, tap
from notificator.broker.local import LocalBroker
from notificator.events import SEQ_SPAN
from notificator.history import History, HistoryFile
from notificator.services import SequentialService
from tests.support import write_config


class ProcessTitleServiceTests(SynchronousTestCase):
    def test_sets_and_restores_the_title(self) -> None:
        """The title is shown while running and the old one is back after stop."""
        before = setproctitle.getproctitle()
        service = services.ProcessTitleService("notificator [test] /srv/notificator")
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        self.assertEqual(setproctitle.getproctitle(), "notificator [test] /srv/notificator")
        service.stopService()
        self.assertEqual(setproctitle.getproctitle(), before)


def tracked_ids() -> set[int]:
    """The ids of the objects the cyclic garbage collector tracks and does not hold frozen."""
    return {id(o) for o in gc.get_objects()}


class GCTuningTests(SynchronousTestCase):
    def test_start_and_stop(self) -> None:
        """Start freezes start-up objects and makes full collections rarer; stop restores both."""
        before = gc.get_threshold()
        service = services.GCTuningService()
        service.startService()
        try:
            self.assertEqual(
                gc.get_threshold()[2], services.GCTuningService.FULL_COLLECTION_THRESHOLD
            )
            self.assertGreater(gc.get_freeze_count(), 0)
        finally:
            service.stopService()
        self.assertEqual(gc.get_threshold(), before)
        self.assertEqual(gc.get_freeze_count(), 0)

    def test_what_its_children_built_is_frozen(self) -> None:
        """
        What the services under it build when they start (the history a
        broker loads from disk) is frozen out of the collector's sight once
        they have started, under the tuned thresholds; stop thaws it.
        """
        built: list[list[object]] = []
        thresholds: list[int] = []

        class Loader(Service):
            def startService(self) -> None:
                super().startService()
                thresholds.append(gc.get_threshold()[2])
                built.extend([[n] for n in range(1000)])

        tuning = services.GCTuningService()
        Loader().setServiceParent(tuning)
        tuning.startService()
        try:
            self.assertEqual(thresholds, [services.GCTuningService.FULL_COLLECTION_THRESHOLD])
            tracked = tracked_ids()
            self.assertEqual([o for o in built if id(o) in tracked], [])
        finally:
            self.successResultOf(tuning.stopService())
        self.assertEqual(len(built), sum(1 for o in built if id(o) in tracked_ids()))

    def test_the_tuning_lasts_until_its_children_have_stopped(self) -> None:
        """A child whose stop takes time (the drain) stops with the tuning still on."""
        before = gc.get_threshold()
        stopping: Deferred[None] = Deferred()

        class Slow(Service):
            def stopService(self) -> Deferred[None]:
                super().stopService()
                return stopping

        tuning = services.GCTuningService()
        Slow().setServiceParent(tuning)
        tuning.startService()
        stopped = tuning.stopService()
        self.assertNoResult(stopped)
        self.assertEqual(gc.get_threshold()[2], services.GCTuningService.FULL_COLLECTION_THRESHOLD)
        self.assertGreater(gc.get_freeze_count(), 0)
        stopping.callback(None)
        self.successResultOf(stopped)
        self.assertEqual((gc.get_threshold(), gc.get_freeze_count()), (before, 0))


class WiringTests(SynchronousTestCase):
    def test_part_of_the_service(self) -> None:
        """makeService includes both, titled with the environment and the project root."""
        conf = write_config(
            os.path.join(os.path.abspath(self.mktemp()), "conf"), {"default": {}, "x": {}}
        )
        options = tap.Options()
        options.parseOptions(["--config", conf, "--env", "x", "--listen", "tcp:0"])
        service = tap.makeService(options, reactor=MemoryReactorClock())
        self.assertTrue(any(isinstance(s, services.GCTuningService) for s in service))
        titles = [s.title for s in service if isinstance(s, services.ProcessTitleService)]
        self.assertEqual(titles, [f"notificator [x] {os.path.dirname(conf)}"])

    def test_the_history_loaded_at_start_is_frozen(self) -> None:
        """
        The history the server loads from its journal at start-up is frozen
        with what start-up built: the collector's full collections do not
        walk it.
        """
        root = os.path.abspath(self.mktemp())
        conf = write_config(os.path.join(root, "conf"), {"default": {}, "x": {}})
        clock = Clock()
        clock.advance(1_800_000_000)
        kept = History(clock, size=100, ttl=3600, max_bytes=1 << 30)
        for n in range(300):
            kept.append(f"u{n % 30}", (1_800_000_000_000 + n) * SEQ_SPAN, b"data: %d\n\n" % n)
        HistoryFile(os.path.join(root, "var", "history")).write_snapshot(kept.state(), clean=True)
        options = tap.Options()
        options.parseOptions(["--config", conf, "--env", "x", "--listen", "tcp:0"])
        reactor = MemoryReactorClock()
        reactor.advance(1_800_000_010)
        service = tap.makeService(options, reactor=reactor)
        service.startService()
        self.addCleanup(service.stopService)
        history = tap.find(service, LocalBroker).history
        self.assertEqual((len(history), history.user_count), (300, 30))
        tracked = tracked_ids()
        held = [history, *history._users.values()]
        self.assertEqual([o for o in held if id(o) in tracked], [])


class SequentialServiceTests(SynchronousTestCase):
    def test_children_stop_in_reverse_each_after_the_last(self) -> None:
        """Each child stops only once the one after it has finished stopping."""
        from twisted.application.service import Service
        from twisted.internet.defer import Deferred

        events: list[str] = []
        waits: dict[str, Deferred[None]] = {}

        class Child(Service):
            def __init__(self, name: str, slow: bool) -> None:
                self.name = name
                self.slow = slow

            def startService(self) -> None:
                super().startService()
                events.append(f"start {self.name}")

            def stopService(self) -> Deferred[None] | None:
                super().stopService()
                events.append(f"stop {self.name}")
                if self.slow:
                    waits[self.name] = Deferred()
                    return waits[self.name]
                return None

        root = SequentialService()
        for name, slow in [("logs", False), ("history", True), ("drain", True)]:
            Child(name, slow).setServiceParent(root)
        root.startService()
        stopped = root.stopService()
        self.assertEqual(events[-1], "stop drain")
        waits["drain"].callback(None)
        self.assertEqual(events[-1], "stop history")
        self.assertNoResult(stopped)
        waits["history"].callback(None)
        self.successResultOf(stopped)
        self.assertEqual(
            events,
            [
                "start logs",
                "start history",
                "start drain",
                "stop drain",
                "stop history",
                "stop logs",
            ],
        )

    def test_a_failing_stop_is_logged_and_the_rest_stop(self) -> None:
        """A child whose stop fails does not keep the others running."""
        from twisted.application.service import Service

        class Broken(Service):
            def stopService(self) -> None:
                super().stopService()
                raise RuntimeError("disk on fire")

        root = SequentialService()
        last = Service()
        last.setServiceParent(root)
        Broken().setServiceParent(root)
        root.startService()
        self.successResultOf(root.stopService())
        self.assertFalse(last.running)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
