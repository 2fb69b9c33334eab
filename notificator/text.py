# -*- test-case-name: tests.test_text -*-
"""
Text from requests made fit for a log line: L{safe} escapes what could
break the line and bounds it, and L{redact_uri} cuts a subscriber's
signature out of a request's path and query.
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


def safe(text: object, limit: int = 200) -> str:
    """
    Text from a request, made safe for one log line, bounded: characters
    that are not printable (CR, LF, tab, U+2028, controls) and the
    backslash are escaped (C{\\r}, C{\\u2028}, C{\\\\}); printable
    text such as Korean stays readable.
    """
    s = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    if not s.isprintable() or "\\" in s:
        s = "".join(_escape(c) for c in s)
    return s if len(s) <= limit else s[:limit] + "..."


def _escape(c: str) -> str:
    if c.isprintable() and c != "\\":
        return c
    return c.encode("unicode_escape").decode("ascii")
