# A supervisor of stand-in workers (tests/standin_worker.py) for
# tests/test_workers_supervisor.py, run by the real twistd:
#
#   STANDIN_SUPERVISOR='{"workers": 2, "argv": [...], ...}' twistd -n --pidfile= -y standin_supervisor.tac
#
# "argv": the worker's command (each slot's gets --slot <k>); "env": added
# to this process's environment for the workers; "ready_timeout",
# "stop_timeout", "backoff" ([first, most, reset_after]): the supervisor's.
import json
import os

from twisted.application import service
from twisted.internet import reactor

from notificator.workers.supervisor import Backoff, Supervisor

settings = json.loads(os.environ["STANDIN_SUPERVISOR"])
commands = [
    [*settings["argv"], "--slot", str(slot)] for slot in range(settings["workers"])
]
application = service.Application("standin-supervisor")
Supervisor(
    reactor,
    commands,
    env={**os.environ, **settings.get("env", {})},
    ready_timeout=settings.get("ready_timeout", 20),
    stop_timeout=settings.get("stop_timeout", 20),
    backoff=Backoff(*settings.get("backoff", (1.0, 30.0, 60.0))),
).setServiceParent(application)
