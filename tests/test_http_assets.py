"""Tests for L{notificator.http.assets}: package files served from memory, with ETags and HEAD."""

from __future__ import annotations

from typing import Any

from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase

from notificator.http import assets, refusals

URL = "http://n.example/f"


class AssetTests(SynchronousTestCase):
    def serve(self, asset: assets.Asset) -> StubTreq:
        root = refusals.Folder()
        root.putChild(b"f", asset)
        return StubTreq(root)

    def get(self, stub: StubTreq, method: str = "GET", **headers: bytes) -> tuple[Any, bytes]:
        raw = {name.replace("_", "-").encode(): [value] for name, value in headers.items()}
        response = self.successResultOf(stub.request(method, URL, headers=raw))
        return response, self.successResultOf(stub.content(response))

    def test_package_file_with_its_type(self) -> None:
        """A package file is served whole, typed by its suffix, not sniffable, revalidated."""
        response, body = self.get(self.serve(assets.Asset.from_package("monitor.css")))
        self.assertEqual(body, assets.static_file("monitor.css"))
        headers = response.headers
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"text/css; charset=utf-8"])
        self.assertEqual(headers.getRawHeaders(b"x-content-type-options"), [b"nosniff"])
        self.assertEqual(headers.getRawHeaders(b"cache-control"), [b"no-cache"])
        self.assertEqual(headers.getRawHeaders(b"etag"), [assets.etag(body)])

    def test_not_modified(self) -> None:
        """The ETag the browser has gets a bodiless 304; another one the file."""
        stub = self.serve(assets.Asset(b"body", b"text/plain"))
        response, body = self.get(stub, if_none_match=assets.etag(b"body"))
        self.assertEqual((response.code, body), (304, b""))
        response, body = self.get(stub, if_none_match=assets.etag(b"older"))
        self.assertEqual((response.code, body), (200, b"body"))

    def test_head(self) -> None:
        """HEAD has GET's headers and length, and no body."""
        stub = self.serve(assets.Asset(b"twelve bytes", b"text/plain"))
        response, body = self.get(stub, "HEAD")
        self.assertEqual((response.code, body), (200, b""))
        self.assertEqual(response.headers.getRawHeaders(b"content-length"), [b"12"])
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"text/plain"])

    def test_etag_follows_the_content(self) -> None:
        """Equal bodies have equal ETags, different ones different, each quoted."""
        self.assertEqual(assets.etag(b"a"), assets.etag(b"a"))
        self.assertNotEqual(assets.etag(b"a"), assets.etag(b"b"))
        self.assertTrue(assets.etag(b"a").startswith(b'"') and assets.etag(b"a").endswith(b'"'))
