# -*- test-case-name: tests.test_http_assets -*-
"""
Files of the package's C{notificator/static/} served from memory: read
once when the tree is built, each with an ETag, so nothing is fetched
from elsewhere (the monitor page works on a closed network) and a
browser revalidates with a bodiless 304.

 - L{Readable}: the base of leaves that serve C{GET}, and C{HEAD} with
   the same headers and no body (the monitor's resources too);
 - L{Asset}: one file (the monitor page's script, style and icon; the
   groupware's C{eventSourceClient.js}).
"""

from __future__ import annotations

import hashlib
from importlib import resources

from twisted.logger import Logger
from twisted.web import http
from twisted.web.iweb import IRequest

from notificator.http import refusals

#: Content types by file name suffix.
TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".json": b"application/json; charset=utf-8",
    ".ico": b"image/x-icon",
}


def static_file(name: str) -> bytes:
    """The bytes of C{notificator/static/<name>} (package data)."""
    return (resources.files("notificator") / "static" / name).read_bytes()


def etag(body: bytes) -> bytes:
    """A strong ETag for C{body}: part of its SHA-256, quoted."""
    return b'"' + hashlib.sha256(body).hexdigest()[:20].encode("ascii") + b'"'


class Readable(refusals.Resource):
    """
    A leaf that answers C{HEAD} with C{GET}'s headers and no body (other
    methods, and paths below it, are refused:
    L{notificator.http.refusals.Resource}).
    """

    isLeaf = True

    def render_GET(self, request: IRequest) -> bytes | int:
        raise NotImplementedError

    def render_HEAD(self, request: IRequest) -> bytes | int:
        body = self.render_GET(request)
        if isinstance(body, int):
            # Answered later (NOT_DONE_YET), with no body for HEAD.
            return body
        if not request.responseHeaders.hasHeader(b"content-length"):
            # (A JSON answer has its length already and no body for HEAD:
            # notificator.http.responses.json_response.)
            request.setHeader(b"content-length", b"%d" % (len(body),))
        return b""


class Asset(Readable):
    """
    One static file held in memory, with an ETag so browsers revalidate
    cheaply (C{no-cache}: a new version is picked up at once after an
    upgrade, which matters for the groupware script).
    """

    def __init__(self, body: bytes, content_type: bytes, log: Logger | None = None) -> None:
        super().__init__(log)
        self._body = body
        self._type = content_type
        self._etag = etag(body)

    @classmethod
    def from_package(cls, name: str, log: Logger | None = None) -> Asset:
        suffix = name[name.rfind(".") :]
        return cls(static_file(name), TYPES.get(suffix, b"application/octet-stream"), log)

    def render_GET(self, request: IRequest) -> bytes:
        request.setHeader(b"content-type", self._type)
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-content-type-options", b"nosniff")
        if request.setETag(self._etag) == http.CACHED:
            return b""
        return self._body
