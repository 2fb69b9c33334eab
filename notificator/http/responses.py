# -*- test-case-name: tests.test_http_responses -*-
"""
What the resources put on a response: L{apply_cors}, the CORS headers the
L{notificator.cors.CORSPolicy} gives a request's origin.
"""

from __future__ import annotations

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
