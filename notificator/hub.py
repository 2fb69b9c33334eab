# -*- test-case-name: tests.test_hub -*-
"""
The Hub: who is connected (user id -> open streams), and fan-out.

It knows users and streams, not HTTP, and not where a notification came
from (that is the broker's, L{notificator.broker}): a stream is anything
with a C{user_id}, C{send(frame) -> bool} and C{close()} (L{Stream}).  A frame is
encoded once, by the broker, and the same bytes go to every stream of the
user (L{Hub.deliver}).  A stream is attached together with its backlog in
one call (L{Hub.attach}), so no notification can fall between the two.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from notificator.events import KEEPALIVE_FRAME, encode_frame, retry_frame
from notificator.stats import Stats


class Stream(Protocol):
    """
    One open event stream, as the Hub sees it, and as the monitor shows it
    (L{notificator.http.monitor.user_list}).

    @ivar user_id: whose notifications it receives.
    @ivar connection_id: its number, unique within the process.
    @ivar connected_at: when it opened (POSIX time).
    @ivar peer: its client's address, as the logs show it.
    """

    user_id: str
    connection_id: int
    connected_at: float
    peer: str

    def send(self, frame: bytes) -> bool:
        """Write one encoded frame; C{False} if the stream is already gone."""

    def close(self) -> None:
        """End the stream cleanly (server shutdown)."""


class Hub:
    """
    The registry of open streams and the fan-out of frames to them.

    @param clock: the time source for heartbeat data and the drain.
    @param stats: the server's counters (delivered, opened, heartbeats).
    @param timer: a monotonic clock in seconds, to time heartbeats.
    @ivar version: changes whenever a stream is attached or detached.
    @ivar draining: the server is stopping: new streams are turned away.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        stats: Stats,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._clock = clock
        self._timer = timer
        self.stats = stats
        self._users: dict[str, list[Stream]] = {}
        self._count = 0
        self.version = 0
        self.draining = False
        #: The next slice of a heartbeat or keepalive (L{_sweep}).
        self._sweeping: IDelayedCall | None = None

    # -- registry -----------------------------------------------------------

    def attach(self, stream: Stream, backlog: Sequence[bytes] = ()) -> None:
        """
        Write C{backlog} (frames the stream missed) to C{stream}, then
        register it for live frames: in one call, so that a frame
        delivered after this returns reaches it, and none before it twice.
        """
        for frame in backlog:
            if not stream.send(frame):
                return
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
        self.stats.opened += 1
        self.version += 1

    def detach(self, stream: Stream) -> bool:
        """Forget C{stream}; whether it was attached."""
        streams = self._users.get(stream.user_id)
        if streams is None or stream not in streams:
            return False
        streams.remove(stream)
        self._count -= 1
        self.version += 1
        if not streams:
            del self._users[stream.user_id]
        return True

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

    def has_streams(self, user_id: str) -> bool:
        return user_id in self._users

    def count_of(self, user_id: str) -> int:
        """How many streams C{user_id} has open."""
        streams = self._users.get(user_id)
        return len(streams) if streams else 0

    def _all(self) -> list[Stream]:
        return [s for streams in self._users.values() for s in streams]

    # -- fan-out ------------------------------------------------------------

    def deliver(self, user_id: str, frame: bytes) -> int:
        """
        Write one encoded frame to every open stream of C{user_id}; return
        how many took it.
        """
        streams = self._users.get(user_id)
        if not streams:
            return 0
        delivered = self._send_all(tuple(streams), frame)
        self.stats.delivered += delivered
        return delivered

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

    #: Streams a heartbeat or a keepalive writes per reactor turn.  At
    #: 10,000 streams one sweep of them all took 110 ms of a single turn
    #: here, and every publish that arrived meanwhile waited for it (and
    #: for 100,000 streams, a second); in slices, a publish waits for one
    #: slice at most, a few milliseconds.
    SWEEP_SLICE = 250

    def heartbeat(self) -> int:
        """
        Send C{event: heartbeat} with JSON data C{{"time": <ms>}} to every
        stream, L{SWEEP_SLICE} streams per reactor turn (L{sweeping}
        until the last slice is written; skipped, and not counted, while
        one still runs).  Runs from a LoopingCall, which
        would stop for good on an exception, so errors are logged here
        instead of raised.

        @return: how many streams took it in this call (the first slice).
        """
        if self._sweeping is not None:
            return 0  # (L{_sweep}: the running sweep ends its round)
        self.stats.heartbeats += 1
        try:
            data = json.dumps({"time": int(self._clock.seconds() * 1000)})
            return self._sweep(encode_frame("heartbeat", data), timed=True)
        except Exception:
            self.log.failure("heartbeat failed")
            return 0

    def keepalive(self) -> int:
        """
        Send an SSE comment to every stream, so idle reads never time out,
        in slices as L{heartbeat}; how many took it in this call.
        """
        try:
            return self._sweep(KEEPALIVE_FRAME, timed=False)
        except Exception:
            self.log.failure("keepalive failed")
            return 0

    @property
    def sweeping(self) -> bool:
        """A heartbeat or keepalive has slices still to write."""
        return self._sweeping is not None

    def _sweep(self, frame: bytes, timed: bool) -> int:
        """
        Write C{frame} to every stream open now, a slice per reactor turn.
        While a sweep still runs, a new one is skipped: the running one
        ends its round, so every stream gets its frame even when sweeps
        take longer than their interval (replacing it would starve the
        streams at the end of the list).
        """
        if self._sweeping is not None:
            return 0
        return self._slice(self._all(), 0, frame, timed, 0.0)

    def _slice(
        self, streams: list[Stream], at: int, frame: bytes, timed: bool, spent: float
    ) -> int:
        self._sweeping = None
        start = self._timer() if timed else 0.0
        end = at + self.SWEEP_SLICE
        try:
            written = self._send_all(streams[at:end], frame)
        finally:
            if timed:
                elapsed = self._timer() - start
                spent += elapsed
                self.stats.heartbeat_seconds += elapsed
        if end < len(streams):
            self._sweeping = self._clock.callLater(
                0, self._slice, streams, end, frame, timed, spent
            )
        elif timed:
            self.stats.heartbeat_last = spent
        return written

    # -- stopping -----------------------------------------------------------

    def drain(
        self,
        seconds: float,
        retry: int,
        rng: random.Random | None = None,
        tick: float = 0.1,
    ) -> Deferred[None]:
        """
        Turn new streams away (L{draining}) and end the open ones, in a
        random order spread evenly over C{seconds}; each gets a C{retry:}
        of C{retry} ms plus a random part of up to C{seconds}, so that
        thousands of browsers do not all come back in the same second.
        Streams of users that connect meanwhile are ended too.

        @return: fires when every stream has been ended.
        """
        self.draining = True
        rng = rng or random.Random()
        streams = self._all()
        if not streams:
            return succeed(None)
        rng.shuffle(streams)
        done: Deferred[None] = Deferred()
        ticks = max(1, int(seconds / tick)) if seconds > 0 else 1
        start = self._clock.seconds()
        jitter = int(seconds * 1000)

        def end(stream: Stream) -> None:
            try:
                stream.send(retry_frame(retry + rng.randint(0, jitter)))
                stream.close()
            except Exception:
                self.log.failure("ending a stream of {user_id} failed", user_id=stream.user_id)
            self.detach(stream)

        def step(n: int) -> None:
            # After tick n, the first (n + 1) / ticks of the streams are ended.
            upto = len(streams) * (n + 1) // ticks
            while ended[0] < upto:
                end(streams[ended[0]])
                ended[0] += 1
            if n + 1 < ticks:
                delay = start + (n + 1) * tick - self._clock.seconds()
                self._clock.callLater(max(0.0, delay), step, n + 1)
            else:
                # Anything attached since the drain began.
                for stream in self._all():
                    end(stream)
                done.callback(None)

        ended = [0]
        step(0)
        return done

    def close_all(self) -> None:
        """End every stream at once; browsers reconnect after their retry."""
        for stream in self._all():
            stream.close()
            self.detach(stream)
