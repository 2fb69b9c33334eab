# -*- test-case-name: tests.test_web,tests.test_web_monitor -*-
"""
The twisted.web resource tree.

 - C{GET /sse}, C{GET /sse/<userId>}: open an event stream
   (L{SSEResource}).
 - C{POST /webNotification}: publish to a user's streams
   (L{PublishResource}).
 - C{/}, C{/users}, C{/health}, C{/metrics} and the static scripts: see
   L{notificator.monitor}.

This module knows HTTP, not who is connected: that is the L{Hub}'s.
"""

from __future__ import annotations

import itertools
import json
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any
from urllib.parse import unquote_to_bytes

from prometheus_client import CollectorRegistry
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.server import Request as _WebRequest

from notificator import ingest, metrics, monitor
from notificator.config import Config, CORSPolicy, SSEConfig
from notificator.events import encode_frame, retry_frame
from notificator.hub import Hub
from notificator.stream import RequestStream
from notificator.stream import peer as _peer

#: Where per-request lines go when no activity logger is given (tests).
_default_log = Logger()

#: Larger publish bodies are refused with 413.
MAX_PUBLISH_BYTES = 256 * 1024

# One encoder for every response (json.dumps with a keyword builds one per call).
_JSON = json.JSONEncoder(ensure_ascii=False)

# Headers a browser (or the IE EventSource polyfills) may send cross-origin.
_ALLOW_HEADERS = b"Accept, Cache-Control, Content-Type, Last-Event-ID, X-Requested-With"


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


def apply_cors(request: IRequest, policy: CORSPolicy, methods: bytes) -> None:
    """
    Allow a credentialed cross-origin read when the request's Origin is
    allowed: echo the origin (never C{*}, which browsers refuse with
    credentials), allow credentials, and answer preflights.
    """
    request.setHeader(b"vary", b"Origin")
    origin = request.getHeader(b"origin")
    if origin is None or not policy.allows(origin.decode("latin-1")):
        return
    request.setHeader(b"access-control-allow-origin", origin)
    request.setHeader(b"access-control-allow-credentials", b"true")
    if request.method == b"OPTIONS":
        request.setHeader(b"access-control-allow-methods", methods)
        request.setHeader(b"access-control-allow-headers", _ALLOW_HEADERS)
        request.setHeader(b"access-control-max-age", b"86400")


def _text(request: IRequest, code: int, message: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    return message.encode("utf-8") + b"\n"


def json_response(request: IRequest, code: int, body: dict[str, Any]) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    return _JSON.encode(body).encode("utf-8")


def connect_data(user_id: str, connection_id: int, now: float) -> str:
    """
    The C{connect} event's JSON, C{{"userId", "connectionId", "time"}}
    (milliseconds), as C{json.dumps} writes it, without its generic encoder.
    """
    return _CONNECT % (encode_basestring(user_id), connection_id, int(now * 1000))


_CONNECT = '{"userId": %s, "connectionId": %d, "time": %d}'


class Request(_WebRequest):
    """
    A twisted.web request that does not parse form bodies into
    C{request.args}: L{ingest} reads the raw body (see its docstring for
    why), and twisted.web's form parsing (an C{email} Content-Type parse
    plus C{parse_qs}) cost about a fifth of a publish.  Query strings are
    still parsed.  Use it as the L{Site}'s C{requestFactory}.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["parsePOSTFormSubmission"] = False
        super().__init__(*args, **kwargs)

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


class SSEResource(Resource):
    """
    C{/sse} and C{/sse/<userId>}: keeps the request open and attaches it to
    the hub as a L{RequestStream}.  The user id comes from the path segment
    (percent-decoded), else from the cookie named by C{sse.cookie}.
    """

    isLeaf = True

    def __init__(
        self, hub: Hub, sse: SSEConfig, clock: IReactorTime, log: Logger = _default_log
    ) -> None:
        super().__init__()
        self._hub = hub
        self._log = log
        self._sse = sse
        self._clock = clock
        self._connection_ids = itertools.count(1)
        self._cookie = sse.cookie.encode("ascii")
        self._retry = retry_frame(sse.retry)
        self._headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in sse.headers]

    def _user_id(self, request: IRequest) -> str:
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
            self._log.warn(
                "refused stream from {peer} for {path}: {code} {reason}",
                peer=_peer(request),
                path=safe(request.uri),
                code=e.code,
                reason=safe(e.message),
            )
            return _text(request, e.code, e.message)
        for name, value in self._headers:
            request.setHeader(name, value)
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-accel-buffering", b"no")
        # Frames are small and must leave at once, not after a delayed ACK:
        # twisted.web's HTTPChannel already set TCP_NODELAY on the
        # connection (plain or TLS), and H2Connection does for HTTP/2.
        now = self._clock.seconds()
        stream = RequestStream(
            request, user_id, next(self._connection_ids), now, on_gone=self._gone
        )
        connect = connect_data(user_id, stream.connection_id, now)
        stream.send(self._retry + encode_frame("connect", connect))
        _slim(request)
        self._hub.attach(stream)
        self._log.info(
            "stream {connection_id} opened for {user_id} from {peer} ({streams} open)",
            connection_id=stream.connection_id,
            user_id=safe(user_id),
            peer=stream.peer,
            streams=self._hub.stream_count,
        )
        return NOT_DONE_YET

    def render_HEAD(self, request: IRequest) -> bytes:
        apply_cors(request, self._sse.cors, b"GET, OPTIONS")
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        return b""

    def render_OPTIONS(self, request: IRequest) -> bytes:
        apply_cors(request, self._sse.cors, b"GET, OPTIONS")
        request.setResponseCode(204)
        return b""

    def _gone(self, stream: RequestStream, reason: Failure | None) -> None:
        self._hub.detach(stream)
        self._log.info(
            "stream {connection_id} of {user_id} closed by the {by}"
            " after {seconds:.0f} s ({streams} open)",
            connection_id=stream.connection_id,
            user_id=safe(stream.user_id),
            by="client" if reason is not None else "server",
            seconds=self._clock.seconds() - stream.connected_at,
            streams=self._hub.stream_count,
        )


def _slim(request: IRequest) -> None:
    """
    Drop what an open stream no longer needs, as it may stay open for
    hours: the head is on the wire and a GET has no body.  Of the request
    headers only those of its access-log line stay (a browser sends a
    dozen, 1-2 KB of memory per stream).
    """
    request.responseHeaders = Headers()
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


class PublishResource(Resource):
    """
    C{POST /webNotification}: parse the body (see L{notificator.ingest}),
    publish, and answer with JSON C{{"id", "event", "userId", "eventId",
    "delivered"}}.  Bad bodies get 400/413/415 with JSON C{{"error"}} and a
    log line.
    """

    isLeaf = True

    def __init__(
        self, hub: Hub, cors: CORSPolicy, debug: bool = True, log: Logger = _default_log
    ) -> None:
        super().__init__()
        self._hub = hub
        self._log = log
        self._cors = cors
        # One log event per publish is a large part of its cost even when
        # an observer filters it out: build it only when debug is on.
        self._debug = debug

    def render_POST(self, request: IRequest) -> bytes:
        apply_cors(request, self._cors, b"POST, OPTIONS")
        content = request.content
        body = content.read(MAX_PUBLISH_BYTES + 1) if content is not None else b""
        try:
            if len(body) > MAX_PUBLISH_BYTES:
                raise _TooLarge(f"body larger than {MAX_PUBLISH_BYTES} bytes")
            message = ingest.parse_publish(request.getHeader(b"content-type"), body)
        except ingest.BadNotification as e:
            self._hub.reject(e.code)
            self._log.warn(
                "rejected publish from {peer}: {code} {reason}",
                peer=_peer(request),
                code=e.code,
                reason=safe(e.reason),
            )
            return json_response(request, e.code, {"error": e.reason})
        published = self._hub.publish(message)
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
        return json_response(
            request,
            200,
            {
                "id": f"{message.event}_{message.user_id}",
                "event": message.event,
                "userId": message.user_id,
                "eventId": published.event_id,
                "delivered": published.delivered,
            },
        )

    def render_OPTIONS(self, request: IRequest) -> bytes:
        apply_cors(request, self._cors, b"POST, OPTIONS")
        request.setResponseCode(204)
        return b""

    def render_GET(self, request: IRequest) -> bytes:
        request.setHeader(b"allow", b"POST, OPTIONS")
        return json_response(request, 405, {"error": "use POST"})


class _TooLarge(ingest.BadNotification):
    code = 413


def build_resource(
    hub: Hub,
    config: Config,
    clock: IReactorTime,
    registry: CollectorRegistry | None = None,
    activity: Logger = _default_log,
) -> Resource:
    """
    Assemble the resource tree around one hub.

    @param registry: what C{/metrics} serves; C{makeService} builds it
        (L{metrics.build_registry}), and a fresh one is made when omitted.
    @param activity: where the per-request lines (streams opened, closed
        and refused; publishes and rejected publishes) go; C{makeService}
        gives one that only C{sse.log} reads (L{logs.AppLogService}).
    """
    root = monitor.Folder()
    root.putChild(b"sse", SSEResource(hub, config.sse, clock, log=activity))
    debug = config.server.log_level == "debug"
    root.putChild(
        b"webNotification", PublishResource(hub, config.sse.cors, debug=debug, log=activity)
    )
    if registry is None:
        registry = metrics.build_registry(hub, clock)
    monitor.add_monitor(root, hub, clock, registry)
    return root
