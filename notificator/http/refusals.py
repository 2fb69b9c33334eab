# -*- test-case-name: tests.test_http_refusals -*-
"""
What a client gets for a request the server cannot serve: a 4xx with a
short reason, never one of twisted.web's HTML pages ("Huh?", "No Such
Resource", "Method Not Allowed"), and one line in C{sse.log} with the peer
and the reason.

 - L{notificator.http.responses.answer}: the status, headers and body of
   a refusal: JSON C{{"error": "<reason>"}} on the API paths
   (C{/webNotification}, C{/sse}, C{/users}, C{/health}, C{/metrics}), a
   line of text elsewhere.
 - L{Resource}: the base of the server's resources.  A method it has no
   C{render_<METHOD>} for is answered C{405} with an C{Allow} header
   (twisted.web answers C{501} "Huh?" or an HTML C{405}); extra path
   segments under a leaf that takes none are C{404}.
 - L{NotFound}: what a L{Folder} answers for a child it does not hold
   (twisted.web's C{pages.notFound} is HTML).
 - L{Folder}: a path segment with known children (the site's root,
   C{/static}, C{/javascripts}).

A HEAD refusal has the headers of the GET one and no body.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.logger import Logger
from twisted.web import resource
from twisted.web.iweb import IRequest

from notificator.http.request import peer
from notificator.http.responses import allowed_methods, answer
from notificator.text import redact_uri, safe

#: Where refusals are logged when no activity logger is given (tests).
_default_log = Logger("notificator.web")


class Resource(resource.Resource):
    """
    A twisted.web resource that answers what it cannot serve itself:
    a method without a C{render_<METHOD>} gets C{405} and C{Allow}
    (twisted.web would raise C{UnsupportedMethod} and write HTML), and
    L{refuse} answers with L{answer} and logs one line.  HEAD is not
    faked from GET: a resource that serves GET defines C{render_HEAD}.

    @cvar as_json: refusals are JSON (the API paths) or text.
    @cvar leaf_paths: for a leaf, the C{postpath}s it serves (the default:
        none or a trailing slash); any other is C{404}.  L{None}: the
        resource reads C{postpath} itself.
    """

    as_json = False
    # twisted.web's Resource answers HEAD by calling render_GET, which
    # raises AttributeError (a 500 and a traceback) where there is none.
    # (A method made None: the stubs cannot say that; subclasses that serve
    # HEAD define it again.)
    render_HEAD: Callable[[IRequest], bytes | int] | None = None  # type: ignore[assignment]
    leaf_paths: tuple[list[bytes], ...] | None = ([], [b""])
    _log: Logger = _default_log

    def __init__(self, log: Logger | None = None) -> None:
        super().__init__()
        if log is not None:
            self._log = log

    def render(self, request: IRequest) -> Any:
        method = request.method
        handler = getattr(self, "render_" + method.decode("latin-1"), None)
        if handler is None:
            allowed = b", ".join(allowed_methods(self))
            request.setHeader(b"allow", allowed)
            name = method.decode("latin-1")
            return self.refuse(
                request,
                405,
                f"method {name[:20]} not allowed (allowed: {allowed.decode('ascii')})",
            )
        paths = self.leaf_paths
        if self.isLeaf and paths is not None and request.postpath not in paths:
            return self.refuse(request, 404, "not found")
        return handler(request)

    def refuse(self, request: IRequest, code: int, reason: str) -> bytes:
        """Log the refusal (L{log_refusal}) and answer it (L{answer})."""
        self.log_refusal(request, code, reason)
        return answer(request, code, reason, self.as_json)

    def log_refusal(self, request: IRequest, code: int, reason: str) -> None:
        """One line: the method, the path (signatures cut), the peer and the reason."""
        self._log.warn(
            "refused {method} {path} from {peer}: {code} {reason}",
            method=safe(request.method, 20),
            path=safe(redact_uri(request.uri)),
            peer=peer(request),
            code=code,
            reason=safe(reason),
        )


class NotFound(Resource):
    """A leaf that answers every request C{404} (in JSON or text) and logs it."""

    isLeaf = True

    def __init__(self, log: Logger | None = None, as_json: bool = False) -> None:
        super().__init__(log)
        self.as_json = as_json

    def render(self, request: IRequest) -> bytes:
        return self.refuse(request, 404, "not found")


class Folder(Resource):
    """
    A path segment holding known children; anything else, and the folder
    itself, is a 404 in text (L{NotFound}).
    """

    def __init__(self, log: Logger | None = None) -> None:
        super().__init__(log)
        self._missing = NotFound(log)

    def getChild(self, path: bytes, request: IRequest) -> resource.IResource:
        return self._missing

    def render(self, request: IRequest) -> bytes:
        return self._missing.render(request)
