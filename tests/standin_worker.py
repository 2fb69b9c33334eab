"""
A stand-in for a worker of C{server.workers}, for the tests of
L{notificator.workers}: it listens on each C{--listen} description with
L{notificator.workers.reuseport} and answers every HTTP request with its
process id and slot (C{pid 1234 slot 0}); stopped (SIGTERM, SIGINT), it
stops listening, waits C{--drain} seconds, and exits 0.

    python -m tests.standin_worker --listen tcp:port=3000:interface=127.0.0.1
        [--slot 0] [--drain 0.2] [--say LINE]
        [--supervised] [--hold-if PATH] [--fail-if PATH]

C{--say}: it prints this line on its standard output once it listens;
C{--supervised}: it speaks to its supervisor (L{WorkerLink}: C{ready} on
file descriptor 3 once it listens, C{stopping} when it stops, and it stops
when its standard input ends); C{--hold-if}: when C{PATH} exists as it
starts, it listens but never says C{ready} (a new version that hangs);
C{--fail-if}: when C{PATH} exists as it starts, it exits with status 3 at
once (a new version that cannot start).
"""

from __future__ import annotations

import argparse
import os
import sys

from twisted.application.service import MultiService, Service
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.web import resource, server

from notificator.workers.reuseport import ReusePortService
from notificator.workers.supervisor import WorkerLink


class Who(resource.Resource):
    """Answers C{pid <pid> slot <slot>} (and the protocol it was asked in)."""

    isLeaf = True

    def __init__(self, slot: str) -> None:
        super().__init__()
        self.slot = slot

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain")
        proto = request.clientproto.decode("ascii")
        return f"pid {os.getpid()} slot {self.slot} {proto}\n".encode("ascii")


class Drain(Service):
    """Waits C{seconds} when stopped (a worker's drain)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return deferLater(reactor, self.seconds, lambda: None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", action="append", default=[])
    parser.add_argument("--slot", default="0")
    parser.add_argument("--drain", type=float, default=0.2)
    parser.add_argument("--supervised", action="store_true")
    parser.add_argument("--say")
    parser.add_argument("--hold-if")
    parser.add_argument("--fail-if")
    options = parser.parse_args()
    if options.fail_if and os.path.exists(options.fail_if):
        print(f"stand-in worker: {options.fail_if} exists: exit 3", file=sys.stderr, flush=True)
        sys.exit(3)
    hold = bool(options.hold_if and os.path.exists(options.hold_if))

    root = MultiService()
    Drain(options.drain).setServiceParent(root)
    site = server.Site(Who(options.slot))
    for description in options.listen:
        ReusePortService(reactor, description, site).setServiceParent(root)
    if options.supervised and not hold:
        WorkerLink(reactor).setServiceParent(root)
    root.privilegedStartService()
    root.startService()
    if options.say:
        # Once running: the reactor has its signal handlers then.
        reactor.callWhenRunning(print, options.say, flush=True)
    reactor.addSystemEventTrigger("before", "shutdown", root.stopService)
    reactor.run()


if __name__ == "__main__":
    main()
