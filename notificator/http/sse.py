# -*- test-case-name: tests.test_http_sse -*-
"""
C{GET /sse} and C{GET /sse/<userId>}: open an event stream
(L{SSEResource}), with what a reconnecting client missed (its last event
id: L{last_event_id}) and what the IE polyfills ask for
(L{notificator.http.admission.PREAMBLE},
C{evs_buffer_size_limit}).

Whether a stream may open now (the caps, the drain, the turned-away
answer) is L{notificator.http.admission.Admission}'s, asked when the
request comes and again when a replay is ready.  This module knows HTTP,
not who is connected: that is the L{Hub}'s.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from json.encoder import encode_basestring
from typing import cast
from urllib.parse import unquote_to_bytes

from twisted.internet.error import ConnectionAborted
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest
from twisted.web.server import NOT_DONE_YET

from notificator import auth, ingest
from notificator.broker import Broker
from notificator.config import LimitsConfig, SSEConfig
from notificator.events import encode_frame, event_key, retry_frame
from notificator.history import UNAVAILABLE, Replay, reset_frame
from notificator.http import refusals
from notificator.http._twisted import (
    canonical_name,
    header,
    header_block,
    kept_headers,
    set_headers,
)
from notificator.http.admission import Admission
from notificator.http.admission import preamble as _preamble
from notificator.http.request import Request
from notificator.http.request import peer as _peer
from notificator.http.responses import apply_cors
from notificator.http.stream import LimitedRequestStream, RequestStream
from notificator.hub import Hub
from notificator.stats import Stats
from notificator.text import redact_uri, safe

#: Where per-request lines go when no activity logger is given (tests).
#: (The namespace it had before the moves of issue 18: it is part of every
#: log line, and no log line changes.)
_default_log = Logger("notificator.web")


def connect_data(user_id: str, connection_id: int, now: float, replay: str | None = None) -> str:
    """
    The C{connect} event's JSON, C{{"userId", "connectionId", "time"}}
    (milliseconds), and C{"replay"} (C{"complete"} or C{"truncated"}) for
    a reconnect that asked for one, as C{json.dumps} writes it, without
    its generic encoder.
    """
    data = _CONNECT % (encode_basestring(user_id), connection_id, int(now * 1000))
    return data if replay is None else f'{data[:-1]}, "replay": "{replay}"}}'


_CONNECT = '{"userId": %s, "connectionId": %d, "time": %d}'

#: Names of the query parameter that carries the last event id, by the
#: polyfills that send it instead of the C{Last-Event-ID} header: Yaffle's,
#: Mercure's and Nchan's, and amvtek's (IE 8/9).
LAST_EVENT_ID_PARAMETERS = (b"lastEventId", b"last_event_id", b"evs_last_event_id")

_LAST_EVENT_ID = canonical_name(b"last-event-id")

#: Longest last event id read; ours are at most 25 characters.
MAX_LAST_EVENT_ID = 64


def last_event_id(request: IRequest) -> str | None:
    """
    The id of the last event a reconnecting client saw: the
    C{Last-Event-ID} header, else one of L{LAST_EVENT_ID_PARAMETERS} in
    the query; L{None} when it sent none (or an empty one).
    """
    value = header(request.requestHeaders, _LAST_EVENT_ID)
    if not value:
        args = request.args
        if args:
            for name in LAST_EVENT_ID_PARAMETERS:
                values = args.get(name)
                if values and values[0]:
                    value = values[0]
                    break
    if not value:
        return None
    text = value.decode("utf-8", "replace").strip() if isinstance(value, bytes) else value
    return text[:MAX_LAST_EVENT_ID] or None


class _Refused(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


def _moved_to(replay: Replay, last_id: str, position: str | None) -> str | None:
    """
    The id a reconnect's C{connect} carries (L{Broker.position}), if any.
    It moves the client's last event id only when no frame follows (a frame
    not yet received must not be skipped), the history was read (not
    unavailable), and, when the replay was complete, only forward: a
    cluster node's position can lag the id another node gave the client
    (its channel a moment behind), and moving back would replay a
    notification the client has.
    """
    if position is None or replay.frames or replay.reason == UNAVAILABLE:
        return None
    if replay.complete:
        at, seen = event_key(position), event_key(last_id)
        if at is None or seen is None or at <= seen:
            return None
    return position


class SSEResource(refusals.Resource):
    """
    C{/sse} and C{/sse/<userId>}: keeps the request open and attaches it to
    the hub as a L{RequestStream}.  The user id comes from the path segment
    (percent-decoded), else from the cookie named by C{sse.cookie}.

    A reconnect that names the last event it saw (L{last_event_id}) gets
    what it missed from the broker before the live notifications; when
    that is not everything it missed, a C{reset} event first.  For the IE
    polyfill: C{evs_preamble=N} or C{padding=true} asks for a 2 KB comment
    before the first event, and C{evs_buffer_size_limit=N} for the response
    to end after about N bytes (the polyfill then reconnects with
    C{evs_last_event_id} and is replayed what follows).

    A stream that cannot open gets a 4xx with JSON C{{"error"}}
    (L{refusals}) and a line in the log.  One over a cap
    (C{limits.streamsPerUser}, C{limits.streamsPerAddress},
    C{limits.streams}) is answered 200 with a long C{retry:} and ended, and
    one that comes while the server stops likewise with a shorter retry
    (L{admission}).

    @ivar admission: the caps, the drain and the open streams per address
        (L{notificator.http.admission.Admission}).
    """

    isLeaf = True
    as_json = True
    leaf_paths = None  # _user_id reads the path

    def __init__(
        self,
        hub: Hub,
        broker: Broker,
        sse: SSEConfig,
        clock: IReactorTime,
        stats: Stats,
        log: Logger = _default_log,
        rng: random.Random | None = None,
        *,
        guard: auth.Guard,
        limits: LimitsConfig,
    ) -> None:
        super().__init__()
        self._guard = guard
        self.admission = Admission(hub, sse, limits, stats, log, rng, broker)
        self._hub = hub
        self._broker = broker
        self._stats = stats
        self._log = log
        self._sse = sse
        self._clock = clock
        self._connection_ids = itertools.count(1)
        self._cookie = sse.cookie.encode("ascii")
        self._retry = retry_frame(sse.retry)
        # The stream's headers, as setHeader would set them one by one
        # (sse.header's, then ours), ready to set on each stream at once.
        self._head_block = header_block(
            [(k.encode("latin-1"), v.encode("latin-1")) for k, v in sse.headers]
            + [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no"),
            ]
        )

    def _user_id(self, request: IRequest) -> str:
        """The user id the request names, if it may open a stream for it."""
        user_id = self._named_user_id(request)
        guard = self._guard
        if guard.signatures:
            given = request.args.get(auth.QUERY_PARAMETER) if request.args else None
            reason = guard.refuse_stream(
                user_id,
                given[0] if given else None,
                request.getCookie(guard.signature_cookie),
                self._clock.seconds(),
            )
            if reason is not None:
                raise _Refused(401, reason)
        return user_id

    def _named_user_id(self, request: IRequest) -> str:
        segments = request.postpath
        if len(segments) > 1:
            raise _Refused(404, "not found: use /sse or /sse/<userId>")
        raw = segments[0] if segments else b""
        source = "path"
        if not raw:
            cookie = request.getCookie(self._cookie)
            if not cookie:
                raise _Refused(
                    401, f"no user id: use /sse/<userId> or send the {self._sse.cookie} cookie"
                )
            raw = unquote_to_bytes(cookie)
            source = "cookie"
        try:
            user_id = raw.decode("utf-8")
            return ingest.check_user_id(user_id)
        except UnicodeDecodeError:
            raise _Refused(400, f"user id in the {source} is not UTF-8")
        except ingest.BadNotification as e:
            raise _Refused(400, e.reason)

    def render_GET(self, request: IRequest) -> bytes | int:
        apply_cors(request, self._sse.cors, b"GET, OPTIONS")
        try:
            user_id = self._user_id(request)
        except _Refused as e:
            return self.refuse(request, e.code, e.message)
        set_headers(request.responseHeaders, self._head_block)
        # Frames are small and must leave at once, not after a delayed ACK:
        # twisted.web's HTTPChannel already set TCP_NODELAY on the
        # connection (plain or TLS), and H2Connection does for HTTP/2.
        head = self._retry
        args = request.args
        limit = 0
        if args:
            head = _preamble(args) + head
            limit = _buffer_limit(args)
        admission = self.admission
        address = _peer(request)
        refusal = admission.refusal(user_id, address)
        if refusal is not None:
            return admission.turn_away(request, user_id, *refusal)
        last_id = last_event_id(request)
        now = self._clock.seconds()
        ids = self._connection_ids
        # The site's requests are notificator.http.request.Request.
        stream_request = cast(Request, request)
        if limit:
            stream: RequestStream = LimitedRequestStream(
                stream_request,
                user_id,
                next(ids),
                now,
                on_gone=self._gone,
                address=address,
                limit=limit,
            )
        else:
            stream = RequestStream(
                stream_request, user_id, next(ids), now, on_gone=self._gone, address=address
            )
        if last_id is None:
            # Its id: where the stream stands, its Last-Event-ID if it
            # comes back before any notification (Broker.position).
            stream.send(
                head
                + encode_frame(
                    "connect",
                    connect_data(user_id, stream.connection_id, now),
                    self._broker.position,
                )
            )
            _slim(stream_request)
            self._attach(stream)
            self._opened(stream)
        else:
            self._broker.replay(user_id, last_id).addCallbacks(
                self._replayed,
                self._unreplayed,
                callbackArgs=(stream, head, last_id),
                errbackArgs=(stream, head, last_id),
            )
        return NOT_DONE_YET

    def _attach(self, stream: RequestStream, backlog: Sequence[bytes] = ()) -> None:
        """
        Attach C{stream} to the hub with C{backlog}, and count it against its
        address (L{Admission.attached}; L{_gone} takes it off the count).
        """
        self._hub.attach(stream, backlog)
        self.admission.attached(stream)

    def _replayed(self, replay: Replay, stream: RequestStream, head: bytes, last_id: str) -> None:
        """Write the head, connect, a reset if needed, and attach with the backlog."""
        if stream.gone:
            return
        admission = self.admission
        refusal = admission.refusal(stream.user_id, stream.peer)
        if refusal is not None:
            request = stream.request
            if request.producer is not None:
                request.unregisterProducer()
            admission.turn_away(request, stream.user_id, *refusal)
            return
        outcome = replay.outcome
        connect = encode_frame(
            "connect",
            connect_data(stream.user_id, stream.connection_id, stream.connected_at, outcome),
            _moved_to(replay, last_id, self._broker.position),
        )
        if replay.complete:
            stream.send(head + connect)
        else:
            stream.send(head + connect + reset_frame(replay, last_id))
        _slim(stream.request)
        self._stats.replay(outcome, len(replay.frames))
        self._attach(stream, replay.frames)
        self._opened(stream, outcome, len(replay.frames))

    def _unreplayed(
        self, failure: Failure, stream: RequestStream, head: bytes, last_id: str
    ) -> None:
        """The broker could not say what was missed: a reset, and live from now."""
        self._log.warn(
            "no replay for stream {connection_id} of {user_id}: {reason}",
            connection_id=stream.connection_id,
            user_id=safe(stream.user_id),
            reason=safe(failure.getErrorMessage()),
        )
        self._replayed(Replay(False, reason=UNAVAILABLE), stream, head, last_id)

    def _opened(self, stream: RequestStream, replay: str | None = None, frames: int = 0) -> None:
        count = self._hub.stream_count
        if replay is None:
            self._log.info(
                "stream {connection_id} opened for {user_id} from {peer} ({streams} open)",
                connection_id=stream.connection_id,
                user_id=safe(stream.user_id),
                peer=stream.peer,
                streams=count,
            )
        else:
            self._log.info(
                "stream {connection_id} opened for {user_id} from {peer} ({streams} open);"
                " replay {replay}: {frames} notifications",
                connection_id=stream.connection_id,
                user_id=safe(stream.user_id),
                peer=stream.peer,
                streams=count,
                replay=replay,
                frames=frames,
            )

    def render_HEAD(self, request: IRequest) -> bytes:
        apply_cors(request, self._sse.cors, b"GET, OPTIONS")
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        return b""

    def render_OPTIONS(self, request: IRequest) -> bytes:
        apply_cors(request, self._sse.cors, b"GET, OPTIONS")
        request.setResponseCode(204)
        return b""

    def log_refusal(self, request: IRequest, code: int, reason: str) -> None:
        self._log.warn(
            "refused stream from {peer} for {path}: {code} {reason}",
            peer=_peer(request),
            path=safe(redact_uri(request.uri)),
            code=code,
            reason=safe(reason),
        )

    def _gone(self, stream: RequestStream, reason: Failure | None) -> None:
        self.admission.detached(stream)
        if not self._hub.detach(stream):
            return  # never opened (gone or turned away before its replay)
        self._log.info(
            "stream {connection_id} of {user_id} closed by the {by}"
            " after {seconds:.0f} s ({streams} open)",
            connection_id=stream.connection_id,
            user_id=safe(stream.user_id),
            by=(
                "server"
                if reason is None
                else "server (it stopped reading)"
                if reason.check(ConnectionAborted)
                else "client"
            ),
            seconds=self._clock.seconds() - stream.connected_at,
            streams=self._hub.stream_count,
        )


def _buffer_limit(args: dict[bytes, list[bytes]]) -> int:
    """C{evs_buffer_size_limit} (bytes), or 0; at least 4 KiB."""
    value = args.get(b"evs_buffer_size_limit")
    if not value:
        return 0
    text = value[0].strip()
    if not text.isdigit() or len(text) > 12:
        return 0
    return max(4096, int(text))


def _slim(request: server.Request) -> None:
    """
    Drop what an open stream no longer needs, as it may stay open for hours:
    the head is on the wire, and the body (a GET sent with one) is not read,
    its bytes given back to C{limits.bodyMemory}
    (L{notificator.http.request.Request.drop_body}).  Of the request
    headers only those of its access-log line stay (a browser sends a dozen,
    1-2 KB of memory per stream).
    """
    request.responseHeaders = Headers()
    if isinstance(request, Request):
        request.drop_body()
    else:
        request.content = None
    request.requestHeaders = kept_headers(request.requestHeaders, _LOGGED_HEADERS)
    request.received_cookies = {}


# The request headers twisted.web's combined log format reads.
_LOGGED_HEADERS = (canonical_name(b"referer"), canonical_name(b"user-agent"))
