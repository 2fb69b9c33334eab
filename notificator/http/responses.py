# -*- test-case-name: tests.test_http_responses -*-
"""
What the resources put on a response: L{answer}, the status, headers
and body of a refusal (see L{notificator.http.refusals}), and
L{allowed_methods}, what its C{Allow} header lists; and L{apply_cors},
the CORS headers the L{notificator.cors.CORSPolicy} gives a request's
origin.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.web.iweb import IRequest

from notificator.cors import ALLOW_HEADERS, CORSPolicy, parse_header


def apply_cors(
    request: IRequest, policy: CORSPolicy, methods: bytes, wildcard: bool = True
) -> None:
    """
    Let the request's origin read the response, as the policy says: a
    listed origin is echoed with C{Access-Control-Allow-Credentials: true}
    (browsers refuse C{*} for a request with credentials); another valid
    origin, when C{"*"} is configured and C{wildcard} is true, gets C{*}
    without credentials; C{null} and anything else get nothing.  Preflights
    (C{OPTIONS}) get the methods and headers too.

    @param wildcard: honour C{"*"} (false for the publish resource: a
        wildcard lets no page publish).
    """
    request.setHeader(b"vary", b"Origin")
    origin = request.getHeader(b"origin")
    if origin is None:
        return
    parsed = parse_header(origin)
    if parsed is None:
        return
    if parsed in policy.origins:
        request.setHeader(b"access-control-allow-origin", origin)
        request.setHeader(b"access-control-allow-credentials", b"true")
    elif wildcard and policy.any_origin:
        request.setHeader(b"access-control-allow-origin", b"*")
    else:
        return
    if request.method == b"OPTIONS":
        request.setHeader(b"access-control-allow-methods", methods)
        request.setHeader(b"access-control-allow-headers", ALLOW_HEADERS)
        request.setHeader(b"access-control-max-age", b"86400")


# One encoder for every response (json.dumps with a keyword builds one per call).
_JSON = json.JSONEncoder(ensure_ascii=False)


def answer(request: IRequest, code: int, reason: str, as_json: bool) -> bytes:
    """
    Set a refusal's status and headers on C{request}; the body to return
    from C{render} (empty for HEAD, with the GET answer's length).
    """
    request.setResponseCode(code)
    if as_json:
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        body = _JSON.encode({"error": reason}).encode("utf-8")
    else:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        body = reason.encode("utf-8") + b"\n"
    request.setHeader(b"cache-control", b"no-store")
    if request.method == b"HEAD":
        request.setHeader(b"content-length", b"%d" % (len(body),))
        return b""
    return body


def allowed_methods(target: object) -> list[bytes]:
    """The methods C{target} has a C{render_<METHOD>} for, sorted."""
    kind = type(target)
    return sorted(
        name[7:].encode("ascii")
        for name in dir(kind)
        if name.startswith("render_")
        and name[7:].isupper()
        and name[7:].isascii()
        and callable(getattr(kind, name))
    )


def json_response(request: IRequest, code: int, body: dict[str, Any]) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    return _JSON.encode(body).encode("utf-8")
