# -*- test-case-name: tests.test_http_sse -*-
"""
The twisted.web resource tree (L{build_resource}: its root and what is
not the operators').

 - C{GET /sse}, C{GET /sse/<userId>}: open an event stream
   (L{SSEResource}).
 - C{POST /webNotification}: publish to a user's streams
   (L{PublishResource}).
 - C{GET /javascripts/eventSourceClient.js}: the script the groupware's
   pages include (L{notificator.http.assets}).
 - C{/}, C{/users}, C{/health}, C{/metrics} and the monitor page's
   files: see L{notificator.http.monitor}.

This module knows HTTP, not who is connected: that is the L{Hub}'s.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Sequence
from functools import partial
from json.encoder import encode_basestring
from typing import Any, cast
from urllib.parse import unquote_to_bytes

from prometheus_client import CollectorRegistry
from twisted.internet.error import ConnectionAborted
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from notificator import auth, ingest, metrics
from notificator.broker import Broker, Published, Unavailable
from notificator.config import Config, LimitsConfig, SSEConfig
from notificator.cors import CORSPolicy
from notificator.events import Message, encode_frame, retry_frame
from notificator.history import UNAVAILABLE, Replay, reset_frame
from notificator.http import _twisted, assets, monitor, refusals
from notificator.http.request import LimitedRequest
from notificator.http.request import client as _client
from notificator.http.request import peer as _peer
from notificator.http.request import peer_host as _peer_host
from notificator.http.responses import apply_cors
from notificator.http.stream import LimitedRequestStream, RequestStream
from notificator.hub import Hub
from notificator.stats import Stats
from notificator.text import redact_uri, safe

#: Where per-request lines go when no activity logger is given (tests).
#: (The namespace it had before the moves of issue 18: it is part of every
#: log line, and no log line changes.)
_default_log = Logger("notificator.web")


# One encoder for every response (json.dumps with a keyword builds one per call).
_JSON = json.JSONEncoder(ensure_ascii=False)


def json_response(request: IRequest, code: int, body: dict[str, Any]) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    return _JSON.encode(body).encode("utf-8")


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

#: Longest last event id read; ours are at most 25 characters.
MAX_LAST_EVENT_ID = 64


def last_event_id(request: IRequest) -> str | None:
    """
    The id of the last event a reconnecting client saw: the
    C{Last-Event-ID} header, else one of L{LAST_EVENT_ID_PARAMETERS} in
    the query; L{None} when it sent none (or an empty one).
    """
    value = request.getHeader(b"last-event-id")
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


def hsts_header(seconds: int | None) -> bytes | None:
    """
    The C{Strict-Transport-Security} value for C{server.hsts}: L{None} for
    L{None} (none is sent); for 0, C{max-age=0}, which tells browsers to
    forget one they were sent before.
    """
    return None if seconds is None else b"max-age=%d" % (seconds,)


class StockRequest(LimitedRequest):
    """
    The request of both modes (C{server.fastChannel}), and all of it with
    twisted.web's stock channel: L{notificator.http.request.LimitedRequest} (twisted.web's request
    with the body limit and the head clock, and no form parsing into
    C{request.args}, since L{ingest} reads the raw body and twisted.web's
    form parsing cost about a fifth of a publish), the client's address
    behind trusted proxies (L{client_host}), the publish gate asked
    before the body is read, and over TLS the C{Strict-Transport-Security}
    header on every response (L{hsts}).  L{Request} adds the fast write.
    Make the site's C{requestFactory} with L{notificator.http.request.request_class}, which
    sets L{hsts}.

    @cvar hsts: the C{Strict-Transport-Security} value (L{hsts_header});
        L{None}: none is sent.
    """

    hsts: bytes | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # In the order every request then has (see LimitedRequest).
        self._client_host = None
        hsts = self.hsts
        if hsts is not None and self.isSecure():
            # Set first, so every answer has it: refusals, streams, and
            # what is answered before the body is read (LimitedRequest).
            self.responseHeaders.setRawHeaders(b"strict-transport-security", [hsts])

    _client_host: str | None = None

    @property
    def client_host(self) -> str:
        """
        The client's address (L{auth.Guard.client_address}), for the allow
        lists, the logs and the monitor: the connection's peer, unless the
        request carries C{X-Forwarded-For} or C{Forwarded}; then, from a
        trusted proxy (C{server.trustedProxies}), the client its
        X-Forwarded-For names, and from any other peer L{auth.UNKNOWN}.
        Neither header: two dictionary lookups, nothing parsed.
        """
        client = self._client_host
        if client is None:
            client = _peer_host(self)
            headers = self.requestHeaders
            forwarded_for = headers.getRawHeaders(b"x-forwarded-for")
            forwarded = headers.getRawHeaders(b"forwarded")
            if forwarded_for is not None or forwarded is not None:
                guard = getattr(getattr(self.channel, "site", None), "guard", None)
                client = (
                    auth.UNKNOWN
                    if guard is None
                    else guard.client_address(client, forwarded_for, forwarded)
                )
            self._client_host = client
        return client

    # Set when the publish gate let it through before its body was read.
    publisher_checked = False

    def head_received(self, length: int | None) -> None:
        """
        The head is complete, the body not read yet (over HTTP/2 too, every
        header of the request is on it:
        L{notificator.http._twisted.WholeHeadRequest}): a publisher that may not
        publish is answered now (L{PublishGate.early}: 403, whatever its
        length), and then a body over a limit (L{notificator.http.request.LimitedRequest}: 413, 503);
        none of those bodies is read.
        """
        gate = getattr(getattr(self.channel, "site", None), "publish_gate", None)
        if gate is not None:
            gate.early(self)
            if self.refused:
                return
        super().head_received(length)


class Request(StockRequest):
    """
    The request of the fast mode (C{server.fastChannel}, the default):
    L{StockRequest} with a shorter write for open event streams, which
    uses twisted.web's C{Request} state (C{chunked}, C{startedWriting},
    C{_disconnected}).
    """

    def write(self, data: bytes) -> None:
        """
        As twisted.web's C{write}, with a shorter path for what an open
        event stream writes all day: a chunk of a started HTTP/1.1
        response, built as one string and handed to the channel.
        """
        if (
            self.chunked
            and self.startedWriting
            and data
            and not self.finished
            and not self._disconnected
        ):
            self.sentLength += len(data)
            self.channel.write(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            super().write(data)


class _Refused(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


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
    (L{_refusal}, L{_turn_away}).
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
        self._per_user = limits.streams_per_user
        self._total = limits.streams
        self._per_address = limits.streams_per_address
        #: Open streams per client address (L{RequestStream.peer}), kept
        #: while C{limits.streamsPerAddress} is set; an address whose
        #: streams are all gone has no entry.
        self.streams_by_address: dict[str, int] = {}
        self._rng = rng or random.Random()
        self._hub = hub
        self._broker = broker
        self._stats = stats
        self._log = log
        self._sse = sse
        self._clock = clock
        self._connection_ids = itertools.count(1)
        self._cookie = sse.cookie.encode("ascii")
        self._retry = retry_frame(sse.retry)
        self._headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in sse.headers]

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
        for name, value in self._headers:
            request.setHeader(name, value)
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-accel-buffering", b"no")
        # Frames are small and must leave at once, not after a delayed ACK:
        # twisted.web's HTTPChannel already set TCP_NODELAY on the
        # connection (plain or TLS), and H2Connection does for HTTP/2.
        head = self._retry
        args = request.args
        limit = 0
        if args:
            head = _preamble(args) + head
            limit = _buffer_limit(args)
        refusal = self._refusal(user_id, _peer(request))
        if refusal is not None:
            return self._turn_away(request, user_id, *refusal)
        last_id = last_event_id(request)
        now = self._clock.seconds()
        ids = self._connection_ids
        # The site's requests are request_class(StockRequest or Request).
        stream_request = cast(LimitedRequest, request)
        if limit:
            stream: RequestStream = LimitedRequestStream(
                stream_request, user_id, next(ids), now, on_gone=self._gone, limit=limit
            )
        else:
            stream = RequestStream(stream_request, user_id, next(ids), now, on_gone=self._gone)
        if last_id is None:
            stream.send(
                head + encode_frame("connect", connect_data(user_id, stream.connection_id, now))
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

    def _turn_away(self, request: IRequest, user_id: str, reason: str, retry: int) -> int:
        """
        Answer 200 with a C{retry:} of C{retry} ms and end the response: a
        browser's EventSource gives up for good on any other status, so this
        is how it is told to come back later.
        """
        self._stats.refuse(reason)
        self._log.warn(
            "turned away a stream for {user_id} from {peer}: {reason}; retry in {retry} ms",
            user_id=safe(user_id),
            peer=_peer(request),
            reason=_TURNED_AWAY[reason],
            retry=retry,
        )
        request.write(_preamble(request.args or {}) + retry_frame(retry))
        request.finish()
        return NOT_DONE_YET

    def _refusal(self, user_id: str, address: str) -> tuple[str, int] | None:
        """
        Why a stream of C{user_id} from the client C{address} cannot be
        attached now, and the retry to give it; L{None} if it can.  Asked
        when the request comes, and again when a replay the broker answered
        later is ready (meanwhile the server may have begun to stop, or
        other streams filled a cap).
        """
        hub = self._hub
        if hub.draining:
            # Stopping: come back later (to another node, or after the
            # restart), at a random moment of the drain.
            jitter = self._rng.randint(0, int(self._sse.drain_seconds * 1000))
            return "draining", self._sse.retry + jitter
        if hub.count_of(user_id) >= self._per_user:
            return "user-limit", self._cap_retry()
        per_address = self._per_address
        if per_address is not None and self.streams_by_address.get(address, 0) >= per_address:
            return "address-limit", self._cap_retry()
        if hub.stream_count >= self._total:
            return "server-limit", self._cap_retry()
        return None

    def _attach(self, stream: RequestStream, backlog: Sequence[bytes] = ()) -> None:
        """
        Attach C{stream} to the hub with C{backlog}, and count it against its
        address (C{limits.streamsPerAddress}) if it is still there: a stream
        whose client left while the backlog was written is not attached.
        L{_gone} takes it off the count.
        """
        self._hub.attach(stream, backlog)
        if self._per_address is not None and not stream.gone:
            counts = self.streams_by_address
            counts[stream.peer] = counts.get(stream.peer, 0) + 1
            stream.counted = True

    def _cap_retry(self) -> int:
        """A long retry, jittered, for a stream over a cap: 30 to 60 s."""
        return self._rng.randint(30_000, 60_000)

    def _replayed(self, replay: Replay, stream: RequestStream, head: bytes, last_id: str) -> None:
        """Write the head, connect, a reset if needed, and attach with the backlog."""
        if stream.gone:
            return
        refusal = self._refusal(stream.user_id, stream.peer)
        if refusal is not None:
            request = stream.request
            if request.producer is not None:
                request.unregisterProducer()
            self._turn_away(request, stream.user_id, *refusal)
            return
        outcome = replay.outcome
        connect = encode_frame(
            "connect",
            connect_data(stream.user_id, stream.connection_id, stream.connected_at, outcome),
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
        if stream.counted:
            stream.counted = False
            counts = self.streams_by_address
            left = counts[stream.peer] - 1
            if left:
                counts[stream.peer] = left
            else:
                del counts[stream.peer]
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


_TURNED_AWAY = {
    "draining": "the server is stopping",
    "user-limit": "the user has limits.streamsPerUser streams open",
    "server-limit": "the server has limits.streams streams open",
    "address-limit": "the address has limits.streamsPerAddress streams open",
}

#: The comment before the first event that IE's XDomainRequest needs
#: before it hands any data to the polyfill.
PREAMBLE = b":" + b" " * 2048 + b"\n\n"


def _preamble(args: dict[bytes, list[bytes]]) -> bytes:
    """L{PREAMBLE} when the query asks for it (C{evs_preamble}, C{padding=true})."""
    if args.get(b"evs_preamble") or args.get(b"padding", [b""])[0].lower() == b"true":
        return PREAMBLE
    return b""


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
    Drop what an open stream no longer needs, as it may stay open for
    hours: the head is on the wire, and the body (a GET sent with one) is
    not read, its bytes given back to C{limits.bodyMemory}
    (L{notificator.http.request.LimitedRequest.drop_body}).  Of the request headers only those of
    its access-log line stay (a browser sends a dozen, 1-2 KB of memory
    per stream).
    """
    request.responseHeaders = Headers()
    if isinstance(request, LimitedRequest):
        request.drop_body()
    else:
        request.content = None
    kept = Headers()
    for name in _LOGGED_HEADERS:
        value = request.requestHeaders.getRawHeaders(name)
        if value is not None:
            kept.setRawHeaders(name, value)
    request.requestHeaders = kept
    request.received_cookies = {}


# The request headers twisted.web's combined log format reads.
_LOGGED_HEADERS = (b"referer", b"user-agent")


class PublishGate:
    """
    Who may publish (L{auth.Guard}: C{publish.allow}, C{publish.token}; and
    from which web pages, L{CORSPolicy.refuse_publish}): asked when a
    publish's head is complete (L{early}, over HTTP/1.x and HTTP/2, with
    every header on the request: a refused publisher gets its 403 before
    its body is read, and one that passes is marked
    C{publisher_checked}), and by L{PublishResource}: the same again
    for a request the gate did not see, the page of a preflight, and the
    token given in the body.
    """

    def __init__(
        self,
        guard: auth.Guard,
        stats: Stats,
        log: Logger = _default_log,
        cors: CORSPolicy | None = None,
    ) -> None:
        self.guard = guard
        # No policy: no page of another origin may publish.
        self.cors = CORSPolicy() if cors is None else cors
        self._stats = stats
        self._log = log

    def early(self, request: Request) -> None:
        """
        In L{StockRequest.head_received}: answer 403 now, before the body is
        read (L{notificator.http.request.LimitedRequest.answer_early}: HTTP/1.x and HTTP/2), when the
        address, the header token or the page's origin is wrong.
        """
        target = _twisted.request_target(request)
        if target is None or target[0] != b"POST" or not target[1].startswith(PUBLISH_PATH):
            return
        reason = self.refusal(request, request.client_host)
        if reason is None:
            request.publisher_checked = True
        else:
            request.answer_early(403, b"Forbidden", _JSON.encode({"error": reason}).encode("utf-8"))

    def refusal(self, request: IRequest, client: str) -> str | None:
        """
        Why C{request}, from C{client}, may not publish (counted and logged
        here), before its body is read; L{None} if it may go on.
        """
        guard = self.guard
        authorization = request.getHeader(b"authorization") if guard.publish_token else None
        reason = guard.refuse_publisher(client, authorization, _unknown_via(request, client))
        if reason is None:
            reason = self.refuse_page(request)
        else:
            self.refused(request, 403, reason)
        return reason

    def refuse_page(self, request: IRequest) -> str | None:
        """
        L{ORIGIN_NOT_ALLOWED} (counted and logged, with the origin) when a
        web page of an origin that may not publish sent C{request}: a form
        or script on another site, opened by a browser on an allowed host.
        """
        origin = request.getHeader(b"origin")
        if origin is None:
            return None  # not a browser: a server-to-server sender
        reason = self.cors.refuse_publish(
            origin,
            request.getHeader(b"sec-fetch-site"),
            request.getHeader(b"host"),
            request.isSecure(),
        )
        if reason is not None:
            self.refused(
                request,
                403,
                f"{reason}: {safe(origin, 100)} is not listed in"
                " sse.header Access-Control-Allow-Origin",
            )
        return reason

    def refused(
        self, request: IRequest, code: int, reason: str, user_id: str | None = None
    ) -> None:
        """Count and log a refused publish (never its token)."""
        self._stats.reject(code)
        if user_id is None:
            self._log.warn(
                "refused publish from {peer}: {code} {reason}",
                peer=_peer(request),
                code=code,
                reason=reason,
            )
        else:
            self._log.warn(
                "refused publish to {user_id} from {peer}: {code} {reason}",
                user_id=safe(user_id),
                peer=_peer(request),
                code=code,
                reason=reason,
            )


def _unknown_via(request: IRequest, client: str) -> str | None:
    """The peer an unknown client came through (to say why it is refused), else None."""
    return _peer_host(request) if client == auth.UNKNOWN else None


#: The path of the publish resource (what L{PublishGate.early} looks at).
PUBLISH_PATH = b"/webNotification"


class PublishResource(refusals.Resource):
    """
    C{POST /webNotification}: parse the body (see L{notificator.ingest}),
    hand the notification to the broker, and answer, once it is recorded,
    with JSON C{{"id", "event", "userId", "eventId", "delivered"}} (and
    C{"nodes"} in cluster mode).  A page of another origin may publish only
    when that origin is listed (L{PublishGate.refuse_page}).  Bad bodies
    get 400/413/415 with JSON C{{"error"}} and a log line; a broker that
    cannot record gets 503.
    Other methods get 405 and paths below it 404 (L{refusals}), counted
    and logged as rejected publishes.

    @param max_bytes: larger bodies get 413 (C{limits.bodyBytes}; the
        request refuses them while reading, L{notificator.http.request.LimitedRequest}: this is the
        backstop).
    @param max_fields: form bodies with more fields get 400
        (C{limits.formFields}).
    """

    isLeaf = True
    as_json = True

    def __init__(
        self,
        broker: Broker,
        stats: Stats,
        cors: CORSPolicy,
        gate: PublishGate,
        debug: bool = True,
        log: Logger = _default_log,
        *,
        max_bytes: int,
        max_fields: int | None,
    ) -> None:
        super().__init__()
        self._max_bytes = max_bytes
        self._max_fields = max_fields
        self._gate = gate
        self._broker = broker
        self._stats = stats
        self._log = log
        self._cors = cors
        # One log event per publish is a large part of its cost even when
        # an observer filters it out: build it only when debug is on.
        self._debug = debug

    def render_POST(self, request: IRequest) -> bytes | int:
        apply_cors(request, self._cors, b"POST, OPTIONS", wildcard=False)
        guard = self._gate.guard
        authorization = request.getHeader(b"authorization") if guard.publish_token else None
        if not getattr(request, "publisher_checked", False):
            # Not asked before the body (a request class without the gate).
            reason = self._gate.refusal(request, _client(request))
            if reason is not None:
                return json_response(request, 403, {"error": reason})
        content = request.content
        body = content.read(self._max_bytes + 1) if content is not None else b""
        # With a token configured, the body's token is checked as soon as
        # ingest finds it, before the id and data are decoded.
        check = partial(guard.refuse_publish_token, authorization) if guard.publish_token else None
        try:
            if len(body) > self._max_bytes:
                raise _TooLarge(f"body larger than {self._max_bytes} bytes (limits.bodyBytes)")
            message, _ = ingest.parse_publish_token(
                request.getHeader(b"content-type"), body, self._max_fields, check
            )
        except ingest.Forbidden as e:
            self._gate.refused(request, 403, e.reason)
            return json_response(request, 403, {"error": e.reason})
        except ingest.BadNotification as e:
            self._rejected(request, e.code, e.reason, e.ident)
            return json_response(request, e.code, {"error": e.reason})
        published = self._broker.publish(message)
        if isinstance(published, Published):
            return self._answer(published, request, message)
        published.addCallbacks(
            self._published,
            self._failed,
            callbackArgs=(request, message),
            errbackArgs=(request, message),
        )
        return NOT_DONE_YET

    def _published(self, published: Published, request: server.Request, message: Message) -> None:
        _finish(request, self._answer(published, request, message))

    def _answer(self, published: Published, request: IRequest, message: Message) -> bytes:
        if self._debug:
            self._log.debug(
                "published {event} {event_id} to {user_id} from {peer}: {delivered} {streams}",
                event=message.event,
                event_id=published.event_id,
                user_id=safe(message.user_id),
                peer=_peer(request),
                delivered=published.delivered,
                streams="stream" if published.delivered == 1 else "streams",
            )
        answer = {
            "id": f"{message.event}_{message.user_id}",
            "event": message.event,
            "userId": message.user_id,
            "eventId": published.event_id,
            "delivered": published.delivered,
        }
        if published.nodes is not None:
            answer["nodes"] = published.nodes
        return json_response(request, 200, answer)

    def _failed(self, failure: Failure, request: server.Request, message: Message) -> None:
        if failure.check(Unavailable):
            code, reason = 503, f"not recorded: {failure.getErrorMessage()}"
            self._log.warn(
                "refused publish of {event} to {user_id} from {peer}: {code} {reason}",
                event=message.event,
                user_id=safe(message.user_id),
                peer=_peer(request),
                code=code,
                reason=safe(reason),
            )
        else:
            code, reason = 500, "internal error"
            self._log.failure(
                "publish of {event} to {user_id} failed",
                failure,
                event=message.event,
                user_id=safe(message.user_id),
            )
        self._stats.reject(code)
        _finish(request, json_response(request, code, {"error": reason}))

    def render_OPTIONS(self, request: IRequest) -> bytes:
        """
        A preflight: a page of an origin that may not publish is refused
        (403, as its publish would be); a listed one is told what it may send.
        """
        reason = self._gate.refuse_page(request)
        if reason is not None:
            return json_response(request, 403, {"error": reason})
        apply_cors(request, self._cors, b"POST, OPTIONS", wildcard=False)
        request.setResponseCode(204)
        return b""

    def log_refusal(self, request: IRequest, code: int, reason: str) -> None:
        self._rejected(request, code, reason, None)

    def _rejected(self, request: IRequest, code: int, reason: str, ident: str | None) -> None:
        """Count and log a refused publish, with the id it named (C{-}: none read)."""
        self._stats.reject(code)
        self._log.warn(
            "rejected publish from {peer}: {code} {reason}; id {id}",
            peer=_peer(request),
            code=code,
            reason=safe(reason),
            id="-" if ident is None else safe(ident, 100),
        )


def _finish(request: server.Request, body: bytes) -> None:
    """Answer a request whose render returned NOT_DONE_YET, unless its client left."""
    if request.channel is None or request.finished:
        return
    request.setHeader(b"content-length", b"%d" % (len(body),))
    request.write(body)
    request.finish()


class _TooLarge(ingest.BadNotification):
    code = 413


def build_resource(
    hub: Hub,
    broker: Broker,
    stats: Stats,
    config: Config,
    clock: IReactorTime,
    registry: CollectorRegistry | None = None,
    activity: Logger = _default_log,
    guard: auth.Guard | None = None,
    gate: PublishGate | None = None,
) -> Resource:
    """
    Assemble the resource tree around one hub and broker.

    @param guard: who may publish, look and subscribe; made from the config
        when omitted.
    @param gate: the publish gate; give the same to the L{Site} as
        C{publish_gate}, so refused publishers are answered before their
        body is read (L{StockRequest.head_received}).

    @param registry: what C{/metrics} serves; C{makeService} builds it
        (L{metrics.build_registry}), and a fresh one is made when omitted.
    @param activity: where the per-request lines (streams opened, closed
        and refused; publishes and rejected publishes) go; C{makeService}
        gives one that only C{sse.log} reads (L{logs.AppLogService}).
    """
    if guard is None:
        guard = auth.Guard.from_config(config)
    if gate is None:
        gate = PublishGate(guard, stats, activity, config.sse.cors)
    root = refusals.Folder(activity)
    root.putChild(
        b"sse",
        SSEResource(
            hub, broker, config.sse, clock, stats, log=activity, guard=guard, limits=config.limits
        ),
    )
    debug = config.server.log_level == "debug"
    root.putChild(
        b"webNotification",
        PublishResource(
            broker,
            stats,
            config.sse.cors,
            gate,
            debug=debug,
            log=activity,
            max_bytes=config.limits.body_bytes,
            max_fields=config.limits.form_fields,
        ),
    )
    # The groupware's pages include it (README, "Groupware integration").
    scripts = refusals.Folder(activity)
    scripts.putChild(
        b"eventSourceClient.js", assets.Asset.from_package("eventSourceClient.js", activity)
    )
    root.putChild(b"javascripts", scripts)
    if registry is None:
        registry = metrics.build_registry(hub, stats, broker, clock)
    monitor.add_monitor(root, hub, stats, broker, clock, registry, guard, activity)
    return root
