"""
Tests for L{notificator.http.tree}: what the resource tree serves whom
(the monitor's paths, the groupware's script).
"""

from __future__ import annotations

import json
from ipaddress import ip_network

from treq.testing import StubTreq

from notificator.http import assets
from tests.support import (
    Parts,
    evolved,
)
from tests.test_http_sse import WebCase


class MonitorGuardTests(WebCase):
    def test_monitor_allow(self) -> None:
        """/, /users and /metrics answer monitor.allow only; /health and the script stay open."""
        config = evolved(self.config, {"monitor": {"allow": (ip_network("10.0.0.0/8"),)}})
        self.stub = StubTreq(Parts(self.clock, config).resource)
        for path in ["/users", "/metrics"]:
            response = self.successResultOf(self.stub.get("http://n.example" + path))
            self.assertEqual(response.code, 403, path)
            body = json.loads(self.successResultOf(response.content()))
            self.assertEqual(body, {"error": "address not allowed"})
        # The page is not an API path: its refusal is text.
        response = self.successResultOf(self.stub.get("http://n.example/"))
        self.assertEqual(response.code, 403)
        self.assertEqual(self.successResultOf(response.content()), b"address not allowed\n")
        response = self.successResultOf(self.stub.head("http://n.example/users"))
        self.assertEqual((response.code, self.successResultOf(response.content())), (403, b""))
        for path in ["/health", "/javascripts/eventSourceClient.js"]:
            response = self.successResultOf(self.stub.get("http://n.example" + path))
            self.assertEqual(response.code, 200, path)
            self.successResultOf(response.content())


class ClientScriptTests(WebCase):
    def test_client_script_is_served(self) -> None:
        """The groupware script is served as UTF-8 JavaScript, revalidated on every load."""
        url = "http://n.example/javascripts/eventSourceClient.js"
        response = self.successResultOf(self.stub.get(url))
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders(b"content-type"), [b"text/javascript; charset=utf-8"]
        )
        self.assertEqual(response.headers.getRawHeaders(b"cache-control"), [b"no-cache"])
        body = self.successResultOf(self.stub.content(response))
        self.assertEqual(body, assets.static_file("eventSourceClient.js"))
        etag = response.headers.getRawHeaders(b"etag")[0]
        again = self.successResultOf(self.stub.get(url, headers={b"if-none-match": [etag]}))
        self.assertEqual(again.code, 304)

    def test_client_script_is_ascii(self) -> None:
        """The groupware script is pure ASCII, so a page in any charset loads it unchanged."""
        assets.static_file("eventSourceClient.js").decode("ascii")
