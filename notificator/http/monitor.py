# -*- test-case-name: tests.test_http_monitor -*-
"""
The operators' side of the web tree (L{add_monitor} puts it under the
site's root, which L{notificator.http.tree.build_resource} builds).

 - C{GET /}: the monitor page (connected users, connection test), in
   Korean or English after the browser's C{Accept-Language} (or C{?lang=}).
 - C{GET /users}: the connected users as JSON (with an ETag that changes
   only when a stream opens or closes).
 - C{GET /health}: 200 or 503 JSON with the status, for everyone; the
   node, version, uptime and counts for C{monitor.allow} only.
 - C{GET /metrics}: Prometheus text (see L{notificator.metrics}).
 - C{GET /static/*}, C{GET /favicon.ico}: the page's script, style and
   icon, from C{notificator/static/} (L{notificator.http.assets}).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable
from typing import Any, TypedDict

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET

from notificator import __version__, auth
from notificator.broker import Broker, MachineView, machine_metrics
from notificator.http import assets, refusals
from notificator.http.request import client, peer_host
from notificator.http.responses import json_response
from notificator.hub import Hub
from notificator.stats import Stats

#: The C{Cache-Control} of the monitor's data (C{/users}, C{/health}): kept
#: only to be revalidated (C{/users} with its C{ETag}), never shown stale.
_REVALIDATE = b"no-cache"

#: Page languages; the first is the default.
LANGUAGES = ("en", "ko")

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_PAGE_POLICY = (
    b"default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    b"img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def negotiate_language(accept_language: bytes | None, choices: Iterable[str] = LANGUAGES) -> str:
    """
    The language to answer in: the supported one with the highest
    C{q} in an C{Accept-Language} header (ties go to the earlier entry),
    matched on the primary subtag (C{ko-KR} is C{ko}); else the first
    choice.
    """
    options = list(choices)
    best, best_q = options[0], 0.0
    if not accept_language:
        return best
    for item in accept_language.decode("latin-1").split(","):
        tag, *params = item.strip().split(";")
        q = 1.0
        for p in params:
            name, _, value = p.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in options and q > best_q:
            best, best_q = primary, q
    return best


def render_page(template: str, messages: dict[str, dict[str, str]], lang: str) -> bytes:
    """
    Fill the page template's C{{{key}}} placeholders with one language's
    messages (HTML-escaped); C{{{messages}}} becomes that language's table
    as JSON for the page's script.

    @raise KeyError: the template names a message the language lacks.
    """
    table = messages[lang]
    other = next(code for code in messages if code != lang)
    values = dict(table)
    values["lang"] = lang
    values["other_lang"] = other
    values["other_lang_name"] = messages[other]["lang_name"]

    def fill(m: re.Match[str]) -> str:
        key = m.group(1)
        if key == "messages":
            # Inside <script>: "<" escaped so no "</script>" can end it.
            return json.dumps(table, ensure_ascii=False).replace("<", "\\u003c")
        return html.escape(values[key])

    return _PLACEHOLDER.sub(fill, template).encode("utf-8")


class MonitorPage(assets.Readable):
    """
    C{GET /}: the monitor page, one pre-rendered copy per language, picked
    by C{?lang=} or else C{Accept-Language}.
    """

    def __init__(
        self, template: str, messages: dict[str, dict[str, str]], log: Logger | None = None
    ) -> None:
        super().__init__(log)
        self._pages = {lang: render_page(template, messages, lang) for lang in messages}
        self._etags = {lang: assets.etag(page) for lang, page in self._pages.items()}

    def render_GET(self, request: IRequest) -> bytes:
        asked = (request.args or {}).get(b"lang", [b""])[0].decode("ascii", "replace")
        lang = (
            asked
            if asked in self._pages
            else negotiate_language(request.getHeader(b"accept-language"), list(self._pages))
        )
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"content-language", lang.encode("ascii"))
        request.setHeader(b"vary", b"Accept-Language")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"content-security-policy", _PAGE_POLICY)
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"referrer-policy", b"same-origin")
        if request.setETag(self._etags[lang]) == http.CACHED:
            return b""
        return self._pages[lang]


def user_list(hub: Hub) -> list[dict[str, Any]]:
    """
    Each connected user, sorted by id: the number of open streams, when
    the oldest opened (ms since the epoch), the distinct remote addresses,
    and each connection.
    """
    return _listed(
        (
            user_id,
            [
                {
                    "id": s.connection_id,
                    "connectedAt": int(s.connected_at * 1000),
                    "peer": s.peer,
                }
                for s in streams
            ],
        )
        for user_id, streams in hub.users()
    )


def machine_user_list(view: MachineView) -> list[dict[str, Any]]:
    """
    L{user_list} for every worker of a machine: each connection also names
    its worker (C{"node"}; connection ids are a worker's own).
    """
    by_user: dict[str, list[_Connection]] = {}
    for n in view.nodes:
        for s in n.streams or ():
            by_user.setdefault(s.user_id, []).append(
                {
                    "id": s.connection_id,
                    "connectedAt": s.connected_at,
                    "peer": s.peer,
                    "node": s.node,
                }
            )
    return _listed(by_user.items())


def _listed(users_streams: Iterable[tuple[str, list[_Connection]]]) -> list[dict[str, Any]]:
    users: list[dict[str, Any]] = []
    for user_id, listed in users_streams:
        connections = sorted(
            listed, key=lambda c: (c["connectedAt"], c.get("node", ""), str(c["id"]))
        )
        users.append(
            {
                "userId": user_id,
                "streams": len(connections),
                "connectedSince": connections[0]["connectedAt"] if connections else 0,
                "remoteAddresses": sorted({c["peer"] for c in connections}),
                "connections": connections,
            }
        )
    users.sort(key=lambda u: u["userId"])
    return users


class _Connection(TypedDict, total=False):
    """One stream in L{user_list} (C{node}: in L{machine_user_list} only)."""

    id: int
    connectedAt: int
    peer: str
    node: str


def _answer_later(request: IRequest, body: bytes) -> None:
    """Finish a request whose render returned NOT_DONE_YET, unless its client left."""
    if getattr(request, "channel", True) is None or getattr(request, "finished", False):
        return
    if body:
        request.write(body)
    request.finish()


def _later(request: IRequest, d: Deferred[MachineView], answer: Any, log: Logger, what: str) -> int:
    """Answer C{request} with C{answer(view)} once the machine's view is read."""

    def failed(failure: Failure) -> bytes:
        log.failure("answering {what} failed", failure, what=what)
        return json_response(request, 500, {"error": "internal error"})

    d.addCallback(answer).addErrback(failed).addCallback(lambda body: _answer_later(request, body))
    return NOT_DONE_YET


def _workers(view: MachineView) -> list[dict[str, Any]]:
    """
    Each worker of a machine as C{/health} and C{/users} list them: its
    name, status, start and counts (C{/health}'s, its own).
    """
    return [
        {"node": n.node, "status": n.status, "startedAt": n.started_at, **n.counts}
        for n in view.nodes
    ]


class UsersResource(assets.Readable):
    """
    C{GET /users}: L{user_list} as JSON, with counts.  Its ETag is the
    hub's version, so the monitor's poll gets a bodiless 304 while nobody
    connects or leaves.

    On a worker of C{server.workers} (C{broker} answers L{Broker.view}):
    every worker's users and streams (L{machine_user_list}), the workers
    (C{"workers"}), and whether all could be read (C{"complete"}); the
    ETag changes when a stream opens or closes on any of them.
    """

    as_json = True

    def __init__(
        self,
        hub: Hub,
        stats: Stats,
        node: str | None = None,
        log: Logger | None = None,
        broker: Broker | None = None,
    ) -> None:
        super().__init__(log)
        self._hub = hub
        self._started_at = stats.started_at
        self._node = node
        self._broker = broker

    def render_GET(self, request: IRequest) -> bytes | int:
        if self._broker is not None:
            d = self._broker.view(streams=True)
            if d is not None:
                return _later(
                    request, d, lambda view: self._machine(request, view), self._log, "/users"
                )
        hub = self._hub
        etag = b'"%d-%d"' % (int(self._started_at * 1000), hub.version)
        request.setHeader(b"cache-control", b"no-cache")
        if request.setETag(etag) == http.CACHED:
            return b""
        users = user_list(hub)
        return json_response(
            request,
            200,
            {
                "node": self._node,
                "userCount": len(users),
                "streamCount": hub.stream_count,
                "users": users,
            },
            cache=_REVALIDATE,
        )

    def _machine(self, request: IRequest, view: MachineView) -> bytes:
        request.setHeader(b"cache-control", b"no-cache")
        if request.setETag(view.etag()) == http.CACHED:
            return b""
        users = machine_user_list(view)
        return json_response(
            request,
            200,
            {
                "node": self._node,
                "userCount": len(users),
                "streamCount": sum(u["streams"] for u in users),
                "users": users,
                "machine": view.machine,
                "workers": _workers(view),
                "complete": view.complete,
            },
            cache=_REVALIDATE,
        )


class HealthResource(assets.Readable):
    """
    C{GET /health}: for load balancers and uptime checks, open to every
    address.  200 C{{"status": "ok"}} while the server serves; 503, with
    the reason in C{"status"} and C{"reason"}, while it is stopping
    (C{"draining"}) or cannot record notifications (C{"unavailable"}:
    cluster mode without Redis), so a load balancer sends new clients
    elsewhere.

    The rest (the node's name, the version, uptime and counts, and why
    Redis cannot be reached: its address and the error) only for the
    addresses of C{monitor.allow} (C{guard}), as the monitor page shows
    it; others get the status, and for C{"unavailable"} a reason that
    names nothing (L{UNAVAILABLE}).

    On a worker of C{server.workers} (the broker answers L{Broker.view}),
    the status is the answering worker's (a load balancer's check on a new
    connection reaches a worker that listens), and the counts are the
    machine's: summed over its workers (C{"users"}: distinct users), with
    each worker listed (C{"workers"}: node, status, start, users, streams),
    C{"machine"} and C{"complete"} (whether every worker could be read).
    """

    as_json = True

    def __init__(
        self,
        hub: Hub,
        stats: Stats,
        broker: Broker,
        clock: IReactorTime,
        guard: auth.Guard,
        log: Logger | None = None,
    ) -> None:
        super().__init__(log)
        self._hub = hub
        self._stats = stats
        self._broker = broker
        self._clock = clock
        self._guard = guard

    def render_GET(self, request: IRequest) -> bytes | int:
        hub = self._hub
        stats = self._stats
        allowed = self._guard.refuse_monitor(client(request)) is None
        body: dict[str, Any] = {"status": "ok"}
        problem = self._broker.health()
        if hub.draining:
            body = {"status": "draining", "reason": DRAINING}
        elif problem is not None:
            body = {"status": "unavailable", "reason": problem if allowed else UNAVAILABLE}
        code = 503 if len(body) > 1 else 200
        if not allowed:
            return json_response(request, code, body, cache=_REVALIDATE)
        body.update(
            {
                "node": self._broker.node,
                "version": __version__,
                "startedAt": int(stats.started_at * 1000),
                "uptime": round(self._clock.seconds() - stats.started_at, 3),
                "users": hub.user_count,
                "streams": hub.stream_count,
                **stats.totals(),
            }
        )
        d = self._broker.view()
        if d is not None:

            def machine(view: MachineView) -> bytes:
                body.update(view.sums())
                body["machine"] = view.machine
                body["workers"] = _workers(view)
                body["complete"] = view.complete
                if view.reason is not None:
                    body["incomplete"] = view.reason
                return json_response(request, code, body, cache=_REVALIDATE)

            return _later(request, d, machine, self._log, "/health")
        return json_response(request, code, body, cache=_REVALIDATE)


#: C{/health}'s reason while the server stops.
DRAINING = "the server is stopping"

#: C{/health}'s reason, outside C{monitor.allow}, while notifications cannot
#: be recorded (the broker's own reason names Redis's address).
UNAVAILABLE = "notifications cannot be recorded"


class Guarded(Resource):
    """
    A monitor resource only the addresses of C{monitor.allow} may see
    (L{auth.Guard.refuse_monitor}); others, and clients that are unknown
    (through a proxy that is not trusted), get the inner resource's
    refusal: 403 (JSON for C{/users} and C{/metrics}, text for the page)
    and a log line.
    """

    def __init__(self, inner: refusals.Resource, guard: auth.Guard) -> None:
        super().__init__()
        self._inner = inner
        self._guard = guard
        self.isLeaf = inner.isLeaf

    def render(self, request: IRequest) -> bytes | int:
        address = client(request)
        reason = self._guard.refuse_monitor(
            address, peer_host(request) if address == auth.UNKNOWN else None
        )
        if reason is not None:
            return self._inner.refuse(request, 403, reason)
        body: bytes | int = self._inner.render(request)
        return body


class Metrics(refusals.Resource):
    """
    C{GET /metrics}: prometheus_client's resource (C{resource}), behind
    our refusals: its own answer to another method is a text 405, and it
    serves any path below it.

    On a worker of C{server.workers} (C{broker} answers L{Broker.view}):
    every worker's series, each sample labelled C{worker="<node>"}
    (L{notificator.broker.view.machine_metrics}); the machine's totals are
    their C{sum()}.
    """

    isLeaf = True
    as_json = True

    def __init__(
        self, resource: IResource, log: Logger | None = None, broker: Broker | None = None
    ) -> None:
        super().__init__(log)
        self._resource = resource
        self._broker = broker

    def render_GET(self, request: IRequest) -> Any:
        if self._broker is not None:
            d = self._broker.view(metrics=True)
            if d is not None:
                return _later(
                    request, d, lambda view: _exposition(request, view), self._log, "/metrics"
                )
        return self._resource.render(request)


class _Families(Collector):
    """Metric families already made, as a registry for C{generate_latest}."""

    def __init__(self, families: list[Any]) -> None:
        self._families = families

    def collect(self) -> Any:
        return iter(self._families)


def _exposition(request: IRequest, view: MachineView) -> bytes:
    """The machine's metrics in Prometheus's text format."""
    families = machine_metrics(((n.node, n.metrics) for n in view.nodes), "worker")
    body: bytes = generate_latest(_Families(families))
    request.setResponseCode(200)
    request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
    request.setHeader(b"content-length", b"%d" % (len(body),))
    return b"" if request.method == b"HEAD" else body


def add_monitor(
    root: Resource,
    hub: Hub,
    stats: Stats,
    broker: Broker,
    clock: IReactorTime,
    registry: CollectorRegistry,
    guard: auth.Guard,
    log: Logger | None = None,
) -> None:
    """
    Put the monitor's resources under the site root: C{/}, C{/users} and
    C{/metrics} for the addresses of C{monitor.allow} (C{guard}); C{/health}
    (its details for C{monitor.allow} only), the page's assets and the
    groupware's script for everyone.

    @param log: where refused requests are logged (the activity logger).
    """
    # The namespace it had before the moves of issue 18: it is part of
    # every log line, and no log line changes.
    log = log or Logger("notificator.monitor")
    messages = json.loads(assets.static_file("messages.json"))
    template = assets.static_file("index.html").decode("utf-8")
    root.putChild(b"", Guarded(MonitorPage(template, messages, log), guard))
    users = UsersResource(hub, stats, broker.node, log, broker)
    root.putChild(b"users", Guarded(users, guard))
    root.putChild(b"health", HealthResource(hub, stats, broker, clock, guard, log))
    root.putChild(b"metrics", Guarded(Metrics(metrics_resource(registry), log, broker), guard))
    # Every browser asks for it; a 404 in each console helps nobody.
    root.putChild(b"favicon.ico", assets.Asset.from_package("favicon.ico", log))
    page_files = refusals.Folder(log)
    for name in ("monitor.js", "monitor.css"):
        page_files.putChild(name.encode("ascii"), assets.Asset.from_package(name, log))
    root.putChild(b"static", page_files)


def metrics_resource(registry: CollectorRegistry) -> IResource:
    """
    C{prometheus_client}'s Twisted resource over this registry.  Imported
    here, not at module level: the library's module imports the global
    reactor, which must not happen before twistd has chosen one.
    """
    from prometheus_client.twisted import MetricsResource

    resource: IResource = MetricsResource(registry)
    return resource
