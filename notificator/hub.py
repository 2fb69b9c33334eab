# -*- test-case-name: tests.test_hub -*-
"""
The Hub: who is connected (user id -> open streams), and fan-out.

It knows users and streams, not HTTP: a stream is anything with a
C{user_id}, C{send(frame) -> bool} and C{close()}.  Each notification is
encoded once and the same bytes go to every stream of the user.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from notificator.events import KEEPALIVE_FRAME, EventIds, Message, encode_frame


class Stream(Protocol):
    """One open event stream, as the Hub sees it."""

    user_id: str

    def send(self, frame: bytes) -> bool:
        """Write one encoded frame; C{False} if the stream is already gone."""

    def close(self) -> None:
        """End the stream cleanly (server shutdown)."""


@attrs.frozen
class Published:
    """The outcome of a publish: the event id given and the streams written."""

    event_id: str
    delivered: int


class Hub:
    """
    The registry of open streams and the fan-out of notifications.

    It also keeps plain integer counters for the monitor and C{/metrics}
    (read at scrape time, so the publish path pays one addition each).

    @param clock: the time source for event ids and heartbeat data.
    @param timer: a monotonic clock in seconds, to time heartbeats.
    @ivar started_at: POSIX time the hub was made (the server's start).
    @ivar version: changes whenever a stream is attached or detached.
    @ivar published: notifications published.
    @ivar delivered: frames of published notifications written to streams.
    @ivar opened: streams ever attached.
    @ivar rejected: refused publishes, by HTTP status (see L{reject}).
    @ivar heartbeats: heartbeat ticks run.
    @ivar heartbeat_seconds: total time spent in them.
    @ivar heartbeat_last: the duration of the last one.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, timer: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._timer = timer
        self._ids = EventIds(clock)
        self._users: dict[str, list[Stream]] = {}
        self._count = 0
        self.started_at = clock.seconds()
        self.version = 0
        self.published = 0
        self.delivered = 0
        self.opened = 0
        self.rejected: dict[int, int] = {}
        self.heartbeats = 0
        self.heartbeat_seconds = 0.0
        self.heartbeat_last = 0.0

    # -- registry -----------------------------------------------------------

    def attach(self, stream: Stream) -> None:
        streams = self._users.get(stream.user_id)
        if streams is None:
            # A list, not a set: most users have one or two streams, and a
            # set of one is 216 bytes against a list's 64.
            self._users[stream.user_id] = [stream]
        elif stream in streams:
            return
        else:
            streams.append(stream)
        self._count += 1
        self.opened += 1
        self.version += 1

    def detach(self, stream: Stream) -> None:
        streams = self._users.get(stream.user_id)
        if streams is None or stream not in streams:
            return
        streams.remove(stream)
        self._count -= 1
        self.version += 1
        if not streams:
            del self._users[stream.user_id]

    @property
    def stream_count(self) -> int:
        return self._count

    @property
    def user_count(self) -> int:
        return len(self._users)

    def streams_of(self, user_id: str) -> frozenset[Stream]:
        return frozenset(self._users.get(user_id, ()))

    def users(self) -> Iterator[tuple[str, frozenset[Stream]]]:
        """Each connected user id with its open streams."""
        for user_id, streams in list(self._users.items()):
            yield user_id, frozenset(streams)

    def _all(self) -> list[Stream]:
        return [s for streams in self._users.values() for s in streams]

    # -- fan-out ------------------------------------------------------------

    def publish(self, message: Message) -> Published:
        """
        Give the message an event id, encode it once and write it to every
        open stream of its user.
        """
        event_id = self._ids.next()
        frame = encode_frame(message.event, message.data, event_id)
        streams = self._users.get(message.user_id)
        delivered = self._send_all(tuple(streams), frame) if streams else 0
        self.published += 1
        self.delivered += delivered
        return Published(event_id=event_id, delivered=delivered)

    def reject(self, code: int) -> None:
        """Count a publish refused with this HTTP status."""
        self.rejected[code] = self.rejected.get(code, 0) + 1

    def broadcast(self, frame: bytes) -> int:
        """Write the same frame to every open stream; return how many."""
        return self._send_all(self._all(), frame)

    def _send_all(self, streams: Iterable[Stream], frame: bytes) -> int:
        """
        Write C{frame} to each of C{streams} (a copy: a write can detach a
        stream); return how many took it.  A stream whose write raises is
        logged and skipped, so it costs nobody else their frame.
        """
        delivered = 0
        for stream in streams:
            try:
                if stream.send(frame):
                    delivered += 1
            except Exception:
                self.log.failure("write to a stream of {user_id} failed", user_id=stream.user_id)
        return delivered

    def heartbeat(self) -> int:
        """
        Send C{event: heartbeat} with JSON data C{{"time": <ms>}} to every
        stream.  Runs from a LoopingCall, which would stop for good on an
        exception, so errors are logged here instead of raised.
        """
        start = self._timer()
        try:
            data = json.dumps({"time": int(self._clock.seconds() * 1000)})
            return self.broadcast(encode_frame("heartbeat", data))
        except Exception:
            self.log.failure("heartbeat failed")
            return 0
        finally:
            elapsed = self._timer() - start
            self.heartbeats += 1
            self.heartbeat_seconds += elapsed
            self.heartbeat_last = elapsed

    def keepalive(self) -> int:
        """Send an SSE comment to every stream, so idle reads never time out."""
        try:
            return self.broadcast(KEEPALIVE_FRAME)
        except Exception:
            self.log.failure("keepalive failed")
            return 0

    def close_all(self) -> None:
        """End every stream cleanly (server shutdown); browsers reconnect."""
        for stream in self._all():
            stream.close()
            self.detach(stream)
