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
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web import http
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from notificator import __version__, auth
from notificator.broker import Broker
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
    users: list[dict[str, Any]] = []
    for user_id, streams in hub.users():
        connections: list[_Connection] = sorted(
            (
                {
                    "id": s.connection_id,
                    "connectedAt": int(s.connected_at * 1000),
                    "peer": s.peer,
                }
                for s in streams
            ),
            key=lambda c: (c["connectedAt"], str(c["id"])),
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


class _Connection(TypedDict):
    """One stream in L{user_list}."""

    id: int
    connectedAt: int
    peer: str


class UsersResource(assets.Readable):
    """
    C{GET /users}: L{user_list} as JSON, with counts.  Its ETag is the
    hub's version, so the monitor's poll gets a bodiless 304 while nobody
    connects or leaves.
    """

    as_json = True

    def __init__(
        self, hub: Hub, stats: Stats, node: str | None = None, log: Logger | None = None
    ) -> None:
        super().__init__(log)
        self._hub = hub
        self._started_at = stats.started_at
        self._node = node

    def render_GET(self, request: IRequest) -> bytes:
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

    def render_GET(self, request: IRequest) -> bytes:
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
                "opened": stats.opened,
                "published": stats.published,
                "delivered": stats.delivered,
                "rejected": sum(dict(stats.rejected).values()),
                "heartbeats": stats.heartbeats,
            }
        )
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
    """

    isLeaf = True
    as_json = True

    def __init__(self, resource: IResource, log: Logger | None = None) -> None:
        super().__init__(log)
        self._resource = resource

    def render_GET(self, request: IRequest) -> Any:
        return self._resource.render(request)


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
    users = UsersResource(hub, stats, broker.node, log)
    root.putChild(b"users", Guarded(users, guard))
    root.putChild(b"health", HealthResource(hub, stats, broker, clock, guard, log))
    root.putChild(b"metrics", Guarded(Metrics(metrics_resource(registry), log), guard))
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
