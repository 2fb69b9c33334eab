# -*- test-case-name: tests.test_http_responses -*-
"""
What the resources put on a response: L{json_response}, the one writer
of a JSON answer (every refusal and error of the API paths, the publish
answer, the monitor's data), whose body (L{json_bytes}, L{error_body})
and headers (L{json_headers}) the answers written before a request's
body is read reuse (L{notificator.http.request.Request.answer_early});
L{answer}, the status, headers and body of a refusal (see
L{notificator.http.refusals}), and L{allowed_methods}, what its C{Allow}
header lists; L{close_after}, a keep-alive connection closed once
answered; and L{apply_cors}, the CORS headers the
L{notificator.cors.CORSPolicy} gives a request's origin.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.web.iweb import IRequest

from notificator.cors import ALLOW_HEADERS, CORSPolicy, parse_header
from notificator.http._twisted import canonical_name, header, header_block, set_headers


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
    set_headers(request.responseHeaders, _VARY)
    origin = header(request.requestHeaders, _ORIGIN)
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


_VARY = header_block([(b"vary", b"Origin")])
_ORIGIN = canonical_name(b"origin")


# One encoder for every response (json.dumps with a keyword builds one per call).
_JSON = json.JSONEncoder(ensure_ascii=False)


#: The content type of every JSON answer.
JSON_TYPE = b"application/json; charset=utf-8"
#: The C{Cache-Control} of every refusal and error, and of the publish
#: answer: nothing keeps them.
NO_STORE = b"no-store"


def json_bytes(value: Any) -> bytes:
    """C{value} as a JSON body: UTF-8, non-ASCII characters as they are."""
    return _JSON.encode(value).encode("utf-8")


def error_body(reason: str) -> bytes:
    """The body of a refusal or an error on the API paths: C{{"error": reason}}."""
    return _JSON.encode({"error": reason}).encode("utf-8")


def json_headers(body: bytes, cache: bytes = NO_STORE) -> tuple[tuple[bytes, bytes], ...]:
    """
    The headers of a JSON answer with C{body}, in the order they go on the
    wire: C{Content-Type} (L{JSON_TYPE}), C{Cache-Control} (C{cache}) and
    C{Content-Length}.
    """
    return (
        (b"Content-Type", JSON_TYPE),
        (b"Cache-Control", cache),
        (b"Content-Length", b"%d" % (len(body),)),
    )


def json_response(request: IRequest, code: int, value: Any, cache: bytes = NO_STORE) -> bytes:
    """
    Answer C{request} with C{code} and C{value} as JSON: set the status and
    the headers (L{json_headers}), and return the body to return from
    C{render}: empty for C{HEAD}, with the C{GET} answer's length.

    @param cache: the C{Cache-Control}: L{NO_STORE}, except the monitor's
        data (C{no-cache}: revalidated with its C{ETag}).
    """
    request.setResponseCode(code)
    body = _JSON.encode(value).encode("utf-8")
    # (json_headers' names are canonical, its values have no line break.)
    set_headers(request.responseHeaders, json_headers(body, cache))
    return b"" if request.method == b"HEAD" else body


def answer(request: IRequest, code: int, reason: str, as_json: bool) -> bytes:
    """
    Set a refusal's status and headers on C{request}; the body to return
    from C{render} (empty for HEAD, with the GET answer's length).  As JSON
    (the API paths): L{json_response} with L{error_body}'s body; else the
    reason as a line of text.
    """
    if as_json:
        return json_response(request, code, {"error": reason})
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    body = reason.encode("utf-8") + b"\n"
    request.setHeader(b"cache-control", NO_STORE)
    if request.method == b"HEAD":
        request.setHeader(b"content-length", b"%d" % (len(body),))
        return b""
    return body


def close_after(request: IRequest) -> None:
    """
    Close an HTTP/1.1 keep-alive connection once this answer is sent
    (C{Connection: close}): while the server drains, a sender's next publish
    then opens a new connection, which reaches a server that goes on (another
    worker, or the restarted server), instead of a connection the stopping
    one is about to drop.  HTTP/1.0 connections close anyway; HTTP/2 forbids
    the header (its connections end with a GOAWAY).
    """
    if request.clientproto != b"HTTP/1.1":  # type: ignore[attr-defined]
        return
    request.setHeader(b"connection", b"close")
    channel = getattr(request, "channel", None)
    if channel is not None:
        channel.persistent = False


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
