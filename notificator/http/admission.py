# -*- test-case-name: tests.test_http_admission -*-
"""
Whether an event stream may open now (L{Admission}): the caps
(C{limits.streamsPerUser}, C{limits.streamsPerAddress}, C{limits.streams}),
the drain while the server stops, the answer of a stream turned away (200
with a long C{retry:}, ended), and the open streams per client address.

The SSE resource (L{notificator.http.sse.SSEResource}) asks at both
moments a stream can be turned away: when its request comes, and again
when a replay the broker answered later is ready (meanwhile the server
may have begun to stop, or other streams filled a cap).
"""

from __future__ import annotations

import random

from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.server import NOT_DONE_YET

from notificator.broker import Broker
from notificator.config import LimitsConfig, SSEConfig
from notificator.events import retry_frame
from notificator.http.request import peer as _peer
from notificator.http.stream import RequestStream
from notificator.hub import Hub
from notificator.stats import Stats
from notificator.text import safe

#: What the log says of each reason a stream is turned away (the reason
#: itself is the C{notificator_streams_refused} label).
TURNED_AWAY = {
    "draining": "the server is stopping",
    "user-limit": "the user has limits.streamsPerUser streams open",
    "server-limit": "the server has limits.streams streams open",
    "address-limit": "the address has limits.streamsPerAddress streams open",
}

#: The comment before the first event that IE's XDomainRequest needs
#: before it hands any data to the polyfill.
PREAMBLE = b":" + b" " * 2048 + b"\n\n"


def preamble(args: dict[bytes, list[bytes]]) -> bytes:
    """L{PREAMBLE} when the query asks for it (C{evs_preamble}, C{padding=true})."""
    if args.get(b"evs_preamble") or args.get(b"padding", [b""])[0].lower() == b"true":
        return PREAMBLE
    return b""


class Admission:
    """
    The caps on open streams and the drain, asked before a stream is
    attached (L{refusal}); the answer of one that may not open
    (L{turn_away}); and the count of open streams per client address,
    kept while C{limits.streamsPerAddress} is set (L{attached},
    L{detached}).

    @param rng: the jitter of the retries (a seeded one in tests).
    @param broker: a worker of C{server.workers}: its broker knows the
        user's streams on the other workers (L{Broker.elsewhere}), which
        count against C{limits.streamsPerUser} too.
    @ivar streams_by_address: open streams per client address
        (L{RequestStream.peer}); an address whose streams are all gone has
        no entry.
    """

    def __init__(
        self,
        hub: Hub,
        sse: SSEConfig,
        limits: LimitsConfig,
        stats: Stats,
        log: Logger,
        rng: random.Random | None = None,
        broker: Broker | None = None,
    ) -> None:
        self._hub = hub
        self._broker = broker
        self._retry = sse.retry
        self._drain_ms = int(sse.drain_seconds * 1000)
        self._per_user = limits.streams_per_user
        self._total = limits.streams
        self._per_address = limits.streams_per_address
        self._stats = stats
        self._log = log
        self._rng = rng or random.Random()
        self.streams_by_address: dict[str, int] = {}

    def refusal(self, user_id: str, address: str) -> tuple[str, int] | None:
        """
        Why a stream of C{user_id} from the client C{address} cannot be
        attached now (a reason of L{TURNED_AWAY}), and the retry to give it
        in milliseconds; L{None} if it can.
        """
        hub = self._hub
        if hub.draining:
            # Stopping: come back later (to another node, or after the
            # restart), at a random moment of the drain.
            return "draining", self._retry + self._rng.randint(0, self._drain_ms)
        count = hub.count_of(user_id)
        broker = self._broker
        if broker is not None:
            # Its streams on the other workers, as of their last snapshots.
            count += broker.elsewhere.get(user_id, 0)
        if count >= self._per_user:
            return "user-limit", self._cap_retry()
        per_address = self._per_address
        if per_address is not None and self.streams_by_address.get(address, 0) >= per_address:
            return "address-limit", self._cap_retry()
        if hub.stream_count >= self._total:
            return "server-limit", self._cap_retry()
        return None

    def _cap_retry(self) -> int:
        """A long retry, jittered, for a stream over a cap: 30 to 60 s."""
        return self._rng.randint(30_000, 60_000)

    def turn_away(self, request: IRequest, user_id: str, reason: str, retry: int) -> int:
        """
        Answer 200 with a C{retry:} of C{retry} ms and end the response: a
        browser's EventSource gives up for good on any other status, so
        this is how it is told to come back later.  Counted and logged.
        """
        self._stats.refuse(reason)
        self._log.warn(
            "turned away a stream for {user_id} from {peer}: {reason}; retry in {retry} ms",
            user_id=safe(user_id),
            peer=_peer(request),
            reason=TURNED_AWAY[reason],
            retry=retry,
        )
        request.write(preamble(request.args or {}) + retry_frame(retry))
        request.finish()
        return NOT_DONE_YET

    def attached(self, stream: RequestStream) -> None:
        """
        C{stream} was attached to the hub: count it against its address
        (C{limits.streamsPerAddress}) if it is still there (a stream whose
        client left while its backlog was written is not attached).
        """
        if self._per_address is not None and not stream.gone:
            counts = self.streams_by_address
            counts[stream.peer] = counts.get(stream.peer, 0) + 1
            stream.counted = True

    def detached(self, stream: RequestStream) -> None:
        """C{stream} is gone: take it off its address's count."""
        if stream.counted:
            stream.counted = False
            counts = self.streams_by_address
            left = counts[stream.peer] - 1
            if left:
                counts[stream.peer] = left
            else:
                del counts[stream.peer]
