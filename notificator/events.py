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
_EVENT_ID = re.compile(r"^(\d{1,15})-(\d{1,9})$", re.ASCII)

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


#: Event ids order as the integer C{ms * SEQ_SPAN + seq} (L{event_key}).
SEQ_SPAN = 1 << 32


def event_key(text: str) -> int | None:
    """
    The sort key of an event id C{<ms>-<seq>} (ours, or a Redis stream
    id): later ids have larger keys.  L{None} if C{text} is not such an id.
    """
    m = _EVENT_ID.match(text.strip())
    return int(m.group(1)) * SEQ_SPAN + int(m.group(2)) if m else None


def event_id(key: int) -> str:
    """The event id whose L{event_key} is C{key}."""
    return f"{key // SEQ_SPAN}-{key % SEQ_SPAN}"


class EventIds:
    """
    Event ids of the form C{<milliseconds>-<sequence>}: unique and
    increasing within a process, and (because they start from the wall
    clock, or after the last id of the kept history) later than any id of
    an earlier run, so browsers' Last-Event-ID never goes backwards across
    a restart.  Only digits and C{-}, so a reconnect carrying it needs no
    CORS preflight.

    @param after: an id key the new ids must be later than (the last id
        given before a restart).
    @ivar last: the key of the last id given (or C{after}).
    """

    def __init__(self, clock: IReactorTime, after: int = 0) -> None:
        self._clock = clock
        self._ms = after // SEQ_SPAN
        self._seq = after % SEQ_SPAN
        self.last = after

    def next(self) -> str:
        ms = int(self._clock.seconds() * 1000)
        if ms > self._ms:
            self._ms, self._seq = ms, 0
        else:
            # Same millisecond, or the clock stepped back: stay monotonic.
            self._seq += 1
        self.last = self._ms * SEQ_SPAN + self._seq
        return f"{self._ms}-{self._seq}"
