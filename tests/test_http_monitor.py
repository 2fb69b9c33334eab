"""
Tests for L{notificator.http.monitor}, the operators' resources in memory: the
monitor page and its language, its files, C{/users}, C{/health}; and one
end-to-end pass over the real C{twistd -n notificator}.
"""

from __future__ import annotations

import json
import re
import socket
from ipaddress import ip_network
from typing import Any

from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from notificator import auth
from notificator.config import defaults
from notificator.http import assets, monitor
from tests.support import Parts, Server, config_with

FORM_TYPE = "application/x-www-form-urlencoded"
FORM = {b"content-type": [b"application/x-www-form-urlencoded; charset=UTF-8"]}


class _Site:
    """A hub and the whole resource tree over it, in memory."""

    def __init__(self, testcase: SynchronousTestCase, start: float = 1000.0) -> None:
        self.testcase = testcase
        self.clock = Clock()
        self.clock.advance(start)
        self.parts = Parts(self.clock, defaults())
        self.hub = self.parts.hub
        self.stub = StubTreq(self.parts.resource)

    def get(self, path: str, headers: dict[bytes, list[bytes]] | None = None) -> Any:
        return self.testcase.successResultOf(
            self.stub.get("http://127.0.0.1" + path, headers=headers)
        )

    def body(self, response: Any) -> bytes:
        return self.testcase.successResultOf(self.stub.content(response))

    def json(self, path: str) -> Any:
        response = self.get(path)
        self.testcase.assertEqual(response.code, 200)
        return json.loads(self.body(response))

    def open_stream(self, user_id: str) -> None:
        response = self.get("/sse/" + user_id)
        self.testcase.assertEqual(response.code, 200)
        self.stub.collect(response, lambda chunk: None)
        self.stub.flush()

    def publish(self, body: bytes) -> Any:
        return self.testcase.successResultOf(
            self.stub.post("http://127.0.0.1/webNotification", data=body, headers=FORM)
        )


class MonitorPageTests(SynchronousTestCase):
    def test_page_follows_accept_language(self) -> None:
        """A browser asking for Korean first gets the Korean page."""
        site = _Site(self)
        response = site.get("/", {b"accept-language": [b"ko-KR,ko;q=0.9,en-US;q=0.8"]})
        body = site.body(response).decode("utf-8")
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders(b"content-type"), [b"text/html; charset=utf-8"]
        )
        self.assertEqual(response.headers.getRawHeaders(b"content-language"), [b"ko"])
        self.assertIn(b"Accept-Language", response.headers.getRawHeaders(b"vary")[0])
        self.assertIn('<html lang="ko">', body)
        self.assertIn("<h1>Notificator 모니터</h1>", body)
        self.assertIn("접속 사용자", body)

    def test_page_defaults_to_english(self) -> None:
        """Without a supported language the page is in English."""
        site = _Site(self)
        for header in (None, {b"accept-language": [b"fr-FR,de;q=0.5"]}):
            body = site.body(site.get("/", header)).decode("utf-8")
            self.assertIn('<html lang="en">', body)
            self.assertIn("<h1>Notificator monitor</h1>", body)

    def test_lang_query_overrides_the_header(self) -> None:
        """C{?lang=en} wins over a Korean Accept-Language (the page's switch link)."""
        site = _Site(self)
        body = site.body(site.get("/?lang=en", {b"accept-language": [b"ko"]})).decode()
        self.assertIn('<html lang="en">', body)
        self.assertIn('href="?lang=ko"', body)

    def test_page_has_no_external_resources(self) -> None:
        """The page loads nothing from another host (closed networks), and says so in its CSP."""
        site = _Site(self)
        response = site.get("/")
        body = site.body(response).decode("utf-8")
        self.assertNotRegex(body, r"(src|href)=\"(https?:)?//")
        policy = response.headers.getRawHeaders(b"content-security-policy")[0]
        self.assertIn(b"default-src 'self'", policy)

    def test_page_revalidates_with_etag(self) -> None:
        """A repeated page load with the ETag gets a bodiless 304."""
        site = _Site(self)
        etag = site.get("/").headers.getRawHeaders(b"etag")[0]
        again = site.get("/", {b"if-none-match": [etag]})
        self.assertEqual(again.code, 304)
        self.assertEqual(site.body(again), b"")

    def test_unknown_path_under_root_is_404(self) -> None:
        """Paths that are not ours are a plain 404, not the page."""
        site = _Site(self)
        for path in ("/nope", "/static/nope.js", "/javascripts/other.js", "/static/"):
            self.assertEqual(site.get(path).code, 404, path)


class LanguageTests(SynchronousTestCase):
    def test_negotiate_language(self) -> None:
        """The highest-q supported language wins; region subtags and bad q values are handled."""
        cases = [
            (None, "en"),
            (b"", "en"),
            (b"ko", "ko"),
            (b"ko-KR", "ko"),
            (b"KO-kr,en;q=0.5", "ko"),
            (b"en-US,en;q=0.9,ko;q=0.8", "en"),
            (b"fr,ko;q=0.3,en;q=0.2", "ko"),
            (b"ko;q=0,en;q=0.1", "en"),
            (b"ko;q=abc,en;q=0.1", "en"),
            (b"ja,zh", "en"),
            (b"en,ko", "en"),
            (b"*", "en"),
        ]
        for header, expected in cases:
            self.assertEqual(monitor.negotiate_language(header), expected, header)

    def test_every_message_in_both_languages(self) -> None:
        """Korean and English have the same message keys, and the page names only known keys."""
        messages = json.loads(assets.static_file("messages.json"))
        self.assertEqual(sorted(messages), ["en", "ko"])
        self.assertEqual(sorted(messages["en"]), sorted(messages["ko"]))
        template = assets.static_file("index.html").decode("utf-8")
        for lang in messages:
            page = monitor.render_page(template, messages, lang).decode("utf-8")
            self.assertNotIn("{{", page)
            embedded = re.search(r'id="messages">(.*?)</script>', page, re.S)
            assert embedded is not None
            self.assertEqual(json.loads(embedded.group(1)), messages[lang])

    def test_messages_cannot_break_out_of_the_page(self) -> None:
        """Message text is HTML-escaped in the page and cannot close the embedded script."""
        messages = {
            "en": {"lang_name": "English", "title": "<b>&</b></script>"},
            "ko": {"lang_name": "한국어", "title": "x"},
        }
        template = '<title>{{title}}</title><script id="messages">{{messages}}</script>'
        page = monitor.render_page(template, messages, "en").decode("utf-8")
        self.assertIn("<title>&lt;b&gt;&amp;&lt;/b&gt;&lt;/script&gt;</title>", page)
        self.assertEqual(page.count("</script>"), 1)


class UsersTests(SynchronousTestCase):
    def test_users_lists_connected_users(self) -> None:
        """/users shows each user's stream count, first connect time and addresses."""
        site = _Site(self, start=1000.0)
        site.open_stream("u2")
        site.clock.advance(5)
        site.open_stream("u1")
        site.clock.advance(5)
        site.open_stream("u1")
        doc = site.json("/users")
        self.assertEqual(doc["userCount"], 2)
        self.assertEqual(doc["streamCount"], 3)
        self.assertEqual([u["userId"] for u in doc["users"]], ["u1", "u2"])
        u1 = doc["users"][0]
        self.assertEqual(u1["streams"], 2)
        self.assertEqual(u1["connectedSince"], 1005000)
        self.assertEqual([c["connectedAt"] for c in u1["connections"]], [1005000, 1010000])
        self.assertEqual(len(u1["remoteAddresses"]), 1)
        self.assertEqual(u1["remoteAddresses"], [u1["connections"][0]["peer"]])
        self.assertEqual(doc["users"][1]["streams"], 1)

    def test_user_list_reads_the_stream_protocol(self) -> None:
        """
        user_list shows what the hub's Stream protocol declares of each
        stream (its number, start and peer), for any stream the hub holds.
        """
        from notificator.hub import Hub
        from notificator.stats import Stats
        from tests.support import FakeStream

        hub = Hub(clock=Clock(), stats=Stats(started_at=0.0))
        hub.attach(FakeStream("u1", connection_id=7, connected_at=12.5, peer="10.0.0.2"))
        hub.attach(FakeStream("u1", connection_id=3, connected_at=11.0, peer="10.0.0.1"))
        [user] = monitor.user_list(hub)
        self.assertEqual(
            user["connections"],
            [
                {"id": 3, "connectedAt": 11000, "peer": "10.0.0.1"},
                {"id": 7, "connectedAt": 12500, "peer": "10.0.0.2"},
            ],
        )
        self.assertEqual(user["remoteAddresses"], ["10.0.0.1", "10.0.0.2"])

    def test_users_empty(self) -> None:
        """With nobody connected /users is an empty list."""
        site = _Site(self)
        self.assertEqual(
            site.json("/users"),
            {"node": site.parts.broker.node, "userCount": 0, "streamCount": 0, "users": []},
        )

    def test_users_and_health_name_the_node(self) -> None:
        """/users and /health say which node answered: the broker's (cluster.node)."""
        site = _Site(self)
        self.assertEqual(site.parts.broker.node, socket.gethostname())
        parts = Parts(site.clock, config_with(cluster={"node": "sse-2:3000"}))
        stub = StubTreq(parts.resource)
        for path in ("/users", "/health"):
            response = self.successResultOf(stub.get("http://127.0.0.1" + path))
            doc = json.loads(self.successResultOf(stub.content(response)))
            self.assertEqual(doc["node"], "sse-2:3000", path)

    def test_users_etag_changes_only_when_streams_change(self) -> None:
        """A poll with the last ETag is a 304 until a stream opens."""
        site = _Site(self)
        first = site.get("/users")
        etag = first.headers.getRawHeaders(b"etag")[0]
        site.body(first)
        self.assertEqual(site.get("/users", {b"if-none-match": [etag]}).code, 304)
        site.publish(b"id=notify_u9&data=%7B%7D")
        self.assertEqual(site.get("/users", {b"if-none-match": [etag]}).code, 304)
        site.open_stream("u9")
        changed = site.get("/users", {b"if-none-match": [etag]})
        self.assertEqual(changed.code, 200)
        self.assertNotEqual(changed.headers.getRawHeaders(b"etag")[0], etag)
        self.assertEqual(json.loads(site.body(changed))["users"][0]["userId"], "u9")


class HealthTests(SynchronousTestCase):
    def test_health_reports_uptime_and_counts(self) -> None:
        """/health is 200 JSON with uptime from the clock and the hub's counts."""
        site = _Site(self, start=1000.0)
        site.open_stream("u1")
        site.open_stream("u1")
        site.clock.advance(90)
        self.assertEqual(site.publish(b"id=notify_u1&data=%7B%7D").code, 200)
        self.assertEqual(site.publish(b"id=notify_nobody&data=1").code, 200)
        self.assertEqual(site.publish(b"id=bad").code, 400)
        site.hub.heartbeat()
        doc = site.json("/health")
        self.assertEqual(doc["status"], "ok")
        self.assertEqual(doc["uptime"], 90)
        self.assertEqual(doc["startedAt"], 1000000)
        self.assertEqual(
            {k: doc[k] for k in ("users", "streams", "opened", "published", "delivered")},
            {"users": 1, "streams": 2, "opened": 2, "published": 2, "delivered": 2},
        )
        self.assertEqual(doc["rejected"], 1)
        self.assertEqual(doc["heartbeats"], 1)

    def test_head_has_headers_and_no_body(self) -> None:
        """HEAD /health answers 200 with a content length and no body."""
        site = _Site(self)
        request = DummyRequest([b"health"])
        request.method = b"HEAD"
        request.client = IPv4Address("TCP", "127.0.0.1", 40000)
        resource = monitor.HealthResource(
            site.hub,
            site.parts.stats,
            site.parts.broker,
            site.clock,
            auth.Guard.from_config(defaults()),
        )
        self.assertEqual(resource.render(request), b"")
        length = int(request.responseHeaders.getRawHeaders(b"content-length")[0])
        self.assertGreater(length, 10)

    def health(self, monitor_allow: str, problem: str | None = None) -> tuple[int, Any]:
        """C{GET /health} from 127.0.0.1 with this C{monitor.allow}: status and JSON."""
        config = config_with(monitor={"allow": (ip_network(monitor_allow),)})
        parts = Parts(Clock(), config)
        if problem is not None:
            parts.broker.health = lambda: problem  # as a cluster node without Redis says
        stub = StubTreq(parts.resource)
        response = self.successResultOf(stub.get("http://127.0.0.1/health"))
        return response.code, json.loads(self.successResultOf(stub.content(response)))

    def test_details_for_monitor_allow_only(self) -> None:
        """
        Outside monitor.allow, /health is the status alone (same codes); the
        node, version and counts are for monitor.allow, as the page shows them.
        """
        code, doc = self.health("10.0.0.0/8")
        self.assertEqual((code, doc), (200, {"status": "ok"}))
        code, doc = self.health("127.0.0.1/32")
        self.assertEqual(code, 200)
        self.assertLessEqual(
            {"node", "version", "uptime", "users", "streams", "published", "delivered"},
            set(doc),
        )

    def test_503_says_why_without_naming_anything_outside(self) -> None:
        """
        Unavailable: 503 everywhere; the broker's reason (Redis's address)
        only for monitor.allow, a plain one for others.  Draining likewise.
        """
        problem = "Redis at redis://10.9.8.7:6379/0 is unreachable (Connection refused)"
        code, doc = self.health("10.0.0.0/8", problem)
        self.assertEqual(
            (code, doc),
            (503, {"status": "unavailable", "reason": "notifications cannot be recorded"}),
        )
        code, doc = self.health("127.0.0.1/32", problem)
        self.assertEqual((code, doc["status"], doc["reason"]), (503, "unavailable", problem))
        self.assertIn("node", doc)
        config = config_with(monitor={"allow": (ip_network("10.0.0.0/8"),)})
        parts = Parts(Clock(), config)
        parts.hub.drain(0, 3000)
        stub = StubTreq(parts.resource)
        response = self.successResultOf(stub.get("http://127.0.0.1/health"))
        self.assertEqual(response.code, 503)
        self.assertEqual(
            json.loads(self.successResultOf(stub.content(response))),
            {"status": "draining", "reason": "the server is stopping"},
        )


class PageFilesTests(SynchronousTestCase):
    def test_page_assets_are_served(self) -> None:
        """The page's own script and style come from this server."""
        site = _Site(self)
        for path, kind in (
            ("/static/monitor.js", b"text/javascript"),
            ("/static/monitor.css", b"text/css"),
        ):
            response = site.get(path)
            self.assertEqual(response.code, 200, path)
            self.assertTrue(response.headers.getRawHeaders(b"content-type")[0].startswith(kind))
            self.assertGreater(len(site.body(response)), 100)

    def test_favicon_is_served(self) -> None:
        """/favicon.ico is a real icon (the page links it; browsers ask for it anyway)."""
        site = _Site(self)
        response = site.get("/favicon.ico")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"image/x-icon"])
        icon = site.body(response)
        # An ICO directory with one image, which is a PNG.
        self.assertEqual(icon[:6], b"\x00\x00\x01\x00\x01\x00")
        self.assertEqual(icon[22:30], b"\x89PNG\r\n\x1a\n")
        self.assertIn('<link rel="icon" href="favicon.ico">', site.body(site.get("/")).decode())


class EndToEndTests(SynchronousTestCase):
    def test_operator_endpoints_on_the_real_server(self) -> None:
        """The installed server serves the page, /users, /health, /metrics and the script."""
        server = Server(self).start()
        status, headers, body = server.request("GET", "/", headers={"Accept-Language": "ko"})
        self.assertEqual(status, 200)
        self.assertIn("Notificator 모니터", body.decode("utf-8"))
        status, _, body = server.request("GET", "/javascripts/eventSourceClient.js")
        self.assertEqual(status, 200)
        self.assertIn(b"webNotifyProcess", body)

        client = server.subscribe("/sse/e2e-u1")
        self.assertEqual(client.next_event()["event"], "connect")
        status, doc = server.post("id=notify_e2e-u1&data=%7B%7D", FORM_TYPE)
        self.assertEqual((status, doc["delivered"]), (200, 1))
        self.assertEqual(client.next_event()["event"], "notify")
        server.post("id=", FORM_TYPE)

        status, _, body = server.request("GET", "/users")
        users = json.loads(body)
        self.assertEqual(status, 200)
        self.assertEqual([u["userId"] for u in users["users"]], ["e2e-u1"])
        self.assertEqual(users["users"][0]["remoteAddresses"], ["127.0.0.1"])

        status, _, body = server.request("GET", "/health")
        health = json.loads(body)
        self.assertEqual(status, 200)
        self.assertEqual((health["streams"], health["published"], health["rejected"]), (1, 1, 1))

        status, headers, body = server.request("GET", "/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(headers["content-type"].startswith("text/plain"))
        text = body.decode("utf-8")
        for line in (
            "notificator_streams 1.0",
            "notificator_users 1.0",
            "notificator_published_total 1.0",
            "notificator_delivered_total 1.0",
            'notificator_rejected_total{code="400"} 1.0',
        ):
            self.assertIn("\n" + line + "\n", text)
        self.assertIn("notificator_heartbeat_duration_seconds_count", text)
        self.assertIn("process_resident_memory_bytes", text)
