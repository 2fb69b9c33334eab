"""
Tests for L{notificator.services}: the ordered stop, the process title and
the GC tuning, and their place in the service tree.
"""

from __future__ import annotations

import gc
import os

import setproctitle
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from notificator import services, tap
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
