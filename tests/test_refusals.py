"""
Tests for L{notificator.refusals}: every request the resource tree cannot
serve gets a 4xx with a short reason (JSON on the API paths, text
elsewhere), never twisted.web's HTML pages, and one log line with the peer
and the reason.
"""

from __future__ import annotations

import json
from typing import Any

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import Logger, LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from notificator import refusals
from notificator.config import defaults
from tests.support import Parts

API = "application/json; charset=utf-8"
TEXT = "text/plain; charset=utf-8"

# (method, path, code, content type, Allow header or None)
CASES = [
    ("PUT", "/webNotification", 405, API, "OPTIONS, POST"),
    ("GET", "/webNotification", 405, API, "OPTIONS, POST"),
    ("DELETE", "/webNotification", 405, API, "OPTIONS, POST"),
    ("POST", "/webNotification/x", 404, API, None),
    ("DELETE", "/sse/u1", 405, API, "GET, HEAD, OPTIONS"),
    ("POST", "/sse", 405, API, "GET, HEAD, OPTIONS"),
    ("GET", "/sse/a/b", 404, API, None),
    ("GET", "/sse/%FF", 400, API, None),
    ("GET", "/sse", 401, API, None),
    ("POST", "/users", 405, API, "GET, HEAD"),
    ("GET", "/users/x", 404, API, None),
    ("PATCH", "/health", 405, API, "GET, HEAD"),
    ("GET", "/health/x/y", 404, API, None),
    ("DELETE", "/metrics", 405, API, "GET"),
    ("GET", "/metrics/x", 404, API, None),
    ("GET", "/nowhere", 404, TEXT, None),
    ("TRACE", "/", 405, TEXT, "GET, HEAD"),
    ("FOO", "/", 405, TEXT, "GET, HEAD"),
    ("GET", "/x/", 404, TEXT, None),
    ("GET", "/static", 404, TEXT, None),
    ("GET", "/static/", 404, TEXT, None),
    ("GET", "/static/nope.js", 404, TEXT, None),
    ("POST", "/static/monitor.js", 405, TEXT, "GET, HEAD"),
    ("GET", "/static/monitor.js/x", 404, TEXT, None),
    ("PUT", "/javascripts/eventSourceClient.js", 405, TEXT, "GET, HEAD"),
    ("GET", "/javascripts", 404, TEXT, None),
    ("DELETE", "/favicon.ico", 405, TEXT, "GET, HEAD"),
    ("GET", "/?x=1/..", 200, None, None),
]


class RefusalTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.activity: list[dict[str, Any]] = []
        self.parts = Parts(self.clock, defaults(), activity=Logger(observer=self.activity.append))
        self.stub = StubTreq(self.parts.resource)
        self.global_events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def request(self, method: str, path: str) -> tuple[Any, bytes]:
        response = self.successResultOf(self.stub.request(method, "http://127.0.0.1" + path))
        body = self.successResultOf(response.content())
        return response, body

    def test_each_refusal(self) -> None:
        """Each request the tree cannot serve: a 4xx, JSON or text, and one log line."""
        for method, path, code, content_type, allow in CASES:
            with self.subTest(method=method, path=path):
                del self.activity[:]
                response, body = self.request(method, path)
                self.assertEqual(response.code, code)
                if code == 200:
                    self.assertEqual(self.activity, [])
                    continue
                headers = response.headers
                self.assertEqual(headers.getRawHeaders("content-type"), [content_type])
                self.assertEqual(headers.getRawHeaders("allow"), None if allow is None else [allow])
                self.assertNotIn(b"<html", body.lower())
                if content_type == API:
                    reason = json.loads(body)["error"]
                else:
                    self.assertTrue(body.endswith(b"\n") and body.count(b"\n") == 1, body)
                    reason = body.decode("utf-8").strip()
                self.assertLess(len(reason), 100)
                (line,) = self.activity
                self.assertEqual(line["log_level"], LogLevel.warn)
                self.assertEqual((line["peer"], line["code"]), ("127.0.0.1", code))
                self.assertEqual(line["reason"], reason)
        # Nothing in twistd's log: no "Huh?", no "I think I'll eat it".
        self.assertEqual(list(self.global_events), [])

    def test_head_refusals_have_no_body(self) -> None:
        """A HEAD refusal has the GET answer's headers and length, and no body."""
        for path, code in [("/nowhere", 404), ("/users/x", 404), ("/webNotification", 405)]:
            with self.subTest(path=path):
                response, body = self.request("HEAD", path)
                self.assertEqual(response.code, code)
                self.assertEqual(body, b"")
                length = int(response.headers.getRawHeaders("content-length")[0])
                self.assertGreater(length, 0)
        self.assertEqual(list(self.global_events), [])

    def test_head_on_a_folder_is_404(self) -> None:
        """HEAD on a folder (no render_GET) is a 404, not twisted.web's AttributeError 500."""
        for path in ("/static", "/javascripts"):
            response, _ = self.request("HEAD", path)
            self.assertEqual(response.code, 404)
        self.assertEqual(list(self.global_events), [])

    def test_publish_refusals_are_counted(self) -> None:
        """Refused methods and paths of /webNotification count as rejected publishes."""
        self.request("PUT", "/webNotification")
        self.request("POST", "/webNotification/x")
        self.assertEqual(dict(self.parts.stats.rejected), {405: 1, 404: 1})
        self.assertEqual(
            [e["log_format"].split(" from")[0] for e in self.activity], ["rejected publish"] * 2
        )

    def test_stream_refusal_logs_no_signature(self) -> None:
        """A refused stream's log line cuts an auth query parameter to its expiry."""
        self.request("DELETE", "/sse/u1?auth=1767225600.secretsignature")
        (line,) = self.activity
        self.assertEqual(line["path"], "/sse/u1?auth=1767225600.*")

    def test_log_line_is_one_line(self) -> None:
        """A method with a line break (possible over HTTP/2) stays escaped in the log line."""
        from twisted.web.test.requesthelper import DummyRequest

        request = DummyRequest([b"x"])
        request.method = b"G\nET"
        resource = refusals.NotFound(Logger(observer=self.activity.append), as_json=True)
        self.assertEqual(request.method, b"G\nET")
        body = refusals.Resource.render(resource, request)
        self.assertEqual(request.responseCode, 405)
        self.assertIn("G\nET", json.loads(body)["error"])
        (line,) = self.activity
        self.assertNotIn("\n", line["reason"] + line["method"])

    def test_trailing_slash_is_served(self) -> None:
        """A trailing slash on a leaf is the leaf itself."""
        for path in ("/users/", "/health/"):
            response, _ = self.request("GET", path)
            self.assertEqual(response.code, 200, path)

    def test_allowed_methods(self) -> None:
        """Allow lists the render_ methods the resource has; HEAD only where defined."""

        class Thing(refusals.Resource):
            def render_GET(self, request: object) -> bytes:
                return b""

            def render_POST(self, request: object) -> bytes:
                return b""

        self.assertEqual(refusals.allowed_methods(Thing()), [b"GET", b"POST"])
        self.assertEqual(refusals.allowed_methods(refusals.NotFound()), [])
