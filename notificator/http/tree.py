# -*- test-case-name: tests.test_http_tree -*-
"""
The twisted.web resource tree (L{build_resource}: its root and what is
not the operators').

 - C{GET /sse}, C{GET /sse/<userId>}: open an event stream
   (L{notificator.http.sse.SSEResource}).
 - C{POST /webNotification}: publish to a user's streams
   (L{notificator.http.publish.PublishResource}).
 - C{GET /javascripts/eventSourceClient.js}: the script the groupware's
   pages include (L{notificator.http.assets}).
 - C{/}, C{/users}, C{/health}, C{/metrics} and the monitor page's
   files: see L{notificator.http.monitor}.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.resource import Resource

from notificator import auth, metrics
from notificator.broker import Broker
from notificator.config import Config
from notificator.http import assets, monitor, refusals
from notificator.http.publish import PublishGate, PublishResource
from notificator.http.sse import SSEResource
from notificator.hub import Hub
from notificator.stats import Stats

#: Where per-request lines go when no activity logger is given (tests).
#: (The namespace it had before the moves of issue 18: it is part of every
#: log line, and no log line changes.)
_default_log = Logger("notificator.web")


def build_resource(
    hub: Hub,
    broker: Broker,
    stats: Stats,
    config: Config,
    clock: IReactorTime,
    registry: CollectorRegistry | None = None,
    activity: Logger = _default_log,
    guard: auth.Guard | None = None,
    gate: PublishGate | None = None,
) -> Resource:
    """
    Assemble the resource tree around one hub and broker.

    @param guard: who may publish, look and subscribe; made from the config
        when omitted.
    @param gate: the publish gate; give the same to the site
        (L{notificator.http.site.Site}), so refused publishers are answered
        before their body is read
        (L{notificator.http.request.Request.head_received}).

    @param registry: what C{/metrics} serves; C{makeService} builds it
        (L{metrics.build_registry}), and a fresh one is made when omitted.
    @param activity: where the per-request lines (streams opened, closed and
        refused; publishes and rejected publishes) go; C{makeService} gives
        one that only C{sse.log} reads
        (L{notificator.logs.app.AppLogService}).
    """
    if guard is None:
        guard = auth.Guard.from_config(config)
    if gate is None:
        gate = PublishGate(guard, stats, activity, config.sse.cors)
    root = refusals.Folder(activity)
    root.putChild(
        b"sse",
        SSEResource(
            hub, broker, config.sse, clock, stats, log=activity, guard=guard, limits=config.limits
        ),
    )
    debug = config.server.log_level == "debug"
    root.putChild(
        b"webNotification",
        PublishResource(
            broker,
            stats,
            config.sse.cors,
            gate,
            debug=debug,
            log=activity,
            max_bytes=config.limits.body_bytes,
            max_fields=config.limits.form_fields,
        ),
    )
    # The groupware's pages include it (README, "Groupware integration").
    scripts = refusals.Folder(activity)
    scripts.putChild(
        b"eventSourceClient.js", assets.Asset.from_package("eventSourceClient.js", activity)
    )
    root.putChild(b"javascripts", scripts)
    if registry is None:
        registry = metrics.build_registry(hub, stats, broker, clock)
    monitor.add_monitor(root, hub, stats, broker, clock, registry, guard, activity)
    return root
