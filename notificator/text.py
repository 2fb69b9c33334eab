# -*- test-case-name: tests.test_text -*-
"""
Text from requests made fit for a log line: L{redact_uri} cuts a
subscriber's signature out of a request's path and query.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from notificator.auth import QUERY_PARAMETER


def redact_uri(uri: bytes) -> bytes:
    """
    C{uri} for a log line: the value of an C{auth} query parameter (a
    subscriber's signature) cut to its expiry, C{auth=1767225600.*}.
    """
    q = uri.find(b"?")
    if q < 0 or (uri.find(b"auth", q) < 0 and uri.find(b"%", q) < 0):
        return uri
    path, sep, query = uri.partition(b"?")
    # Split as twisted.web's parse_qs does: on "&" and ";".
    items = _QUERY_SEPARATORS.split(query)
    changed = False
    for i in range(0, len(items), 2):
        item = items[i]
        name, eq, value = item.partition(b"=")
        if b"%" in name or b"+" in name:
            name = unquote_to_bytes(name.replace(b"+", b" "))
        if name == QUERY_PARAMETER and eq:
            expiry, dot, _ = value.partition(b".")
            kept = expiry + dot if dot and expiry.isdigit() and len(expiry) <= 20 else b""
            items[i] = item[: len(item) - len(value)] + kept + b"*"
            changed = True
    return path + sep + b"".join(items) if changed else uri


_QUERY_SEPARATORS = re.compile(rb"([&;])")
