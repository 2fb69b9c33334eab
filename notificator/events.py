# -*- test-case-name: tests.test_events -*-
"""
SSE events and their wire format.

A frame is encoded once per notification (L{encode_frame}) and the same
bytes are written to every stream.  Framing follows the WHATWG
"event stream" rules: data with line breaks becomes several C{data:} lines
(the browser joins them with C{\\n}); event names and ids can never carry a
CR, LF or NUL into the frame.

Pure: no Twisted, no I/O.
"""

from __future__ import annotations

import re

import attrs
from twisted.internet.interfaces import IReactorTime

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_FORBIDDEN = re.compile(r"[\r\n\0]")
_EVENT_ID = re.compile(r"^(\d{1,15})-(\d{1,9})$")

#: An SSE comment: keeps proxies and polyfills from timing out an idle stream.
KEEPALIVE_FRAME = b":\n\n"


@attrs.frozen
class Message:
    """
    What a publisher asked for: send C{event} with JSON text C{data} to
    every stream of C{user_id}.
    """

    event: str
    user_id: str
    data: str


def encode_frame(event: str | None, data: str, event_id: str | None = None) -> bytes:
    """
    Encode one event as UTF-8 bytes: C{id:}, C{event:}, one C{data:} line per
    line of C{data}, then a blank line.

    @raise ValueError: C{event} or C{event_id} contains CR, LF or NUL.
    """
    parts = []
    if event_id is not None:
        if _FORBIDDEN.search(event_id):
            raise ValueError("event id must not contain CR, LF or NUL")
        parts.append(f"id: {event_id}\n")
    if event is not None:
        if _FORBIDDEN.search(event):
            raise ValueError("event name must not contain CR, LF or NUL")
        parts.append(f"event: {event}\n")
    for line in _LINE_BREAK.split(data):
        parts.append(f"data: {line}\n")
    parts.append("\n")
    return "".join(parts).encode("utf-8", "surrogatepass")


def retry_frame(milliseconds: int) -> bytes:
    """The C{retry:} field: how long the browser waits before reconnecting."""
    return b"retry: %d\n\n" % (milliseconds,)


def parse_event_id(text: str) -> tuple[int, int] | None:
    """
    Parse an event id made by L{EventIds} into a sortable key, or L{None}
    if it is not one of ours.
    """
    m = _EVENT_ID.match(text.strip())
    return (int(m.group(1)), int(m.group(2))) if m else None


class EventIds:
    """
    Event ids of the form C{<milliseconds>-<sequence>}: unique and
    increasing within a process, and (because they start from the wall
    clock) later than any id of an earlier run, so browsers' Last-Event-ID
    never goes backwards across a restart.  Only digits and C{-}, so a
    reconnect carrying it needs no CORS preflight.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._ms = 0
        self._seq = 0

    def next(self) -> str:
        ms = int(self._clock.seconds() * 1000)
        if ms > self._ms:
            self._ms, self._seq = ms, 0
        else:
            # Same millisecond, or the clock stepped back: stay monotonic.
            self._seq += 1
        return f"{self._ms}-{self._seq}"
