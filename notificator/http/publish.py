# -*- test-case-name: tests.test_http_publish -*-
"""
C{POST /webNotification}: publish to a user's streams
(L{PublishResource}), and who may (L{PublishGate}, asked before the
body is read).
"""

from __future__ import annotations

from functools import partial

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.iweb import IRequest
from twisted.web.server import NOT_DONE_YET

from notificator import auth, ingest
from notificator.broker import Broker, Published, Unavailable
from notificator.cors import CORSPolicy
from notificator.events import Message
from notificator.http import _twisted, refusals
from notificator.http.request import Request
from notificator.http.request import client as _client
from notificator.http.request import peer as _peer
from notificator.http.request import peer_host as _peer_host
from notificator.http.responses import apply_cors, close_after, json_response
from notificator.hub import Hub
from notificator.stats import Stats
from notificator.text import safe

#: Where per-request lines go when no activity logger is given (tests).
#: (The namespace it had before the moves of issue 18: it is part of every
#: log line, and no log line changes.)
_default_log = Logger("notificator.web")


class PublishGate:
    """
    The publish policy: who may publish (L{auth.Guard}: C{publish.allow},
    C{publish.token}; and from which web pages,
    L{CORSPolicy.refuse_publish}), one method per moment a publish can be
    refused, each counting the refusal (C{stats.reject(403)}:
    C{notificator_publishes_rejected}) and logging it in one format
    (C{refused publish from <peer>: 403 <reason>}, never the token):

     - L{before_body}: when a publish's head is complete (over HTTP/1.x and
       HTTP/2, every header on the request: the site's requests ask it,
       L{notificator.http.request.Request.head_received}); a refused
       publisher gets its 403 before its body is read;
     - L{after_body}: in L{PublishResource}, the same for a request the
       gate did not see before its body (a request of another class);
     - L{body_token}: the token given in the body
       (L{notificator.ingest}: C{token=}), once the body is parsed;
     - L{preflight}: the page of an C{OPTIONS} preflight.
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

    def before_body(self, request: Request) -> None:
        """
        A request's head is complete, its body not read: a publish whose
        address, header token or page's origin is wrong is answered 403
        now (L{notificator.http.request.Request.answer_early}: HTTP/1.x
        and HTTP/2), and one that passes is marked C{publisher_checked}.
        """
        target = _twisted.request_target(request)
        if target is None or target[0] != b"POST" or not target[1].startswith(PUBLISH_PATH):
            return
        reason = self._refusal(request, request.client_host)
        if reason is None:
            request.publisher_checked = True
        else:
            request.answer_early(403, b"Forbidden", reason)

    def after_body(self, request: IRequest) -> str | None:
        """
        Why C{request}, a publish whose body is read, may not publish
        (counted and logged), unless L{before_body} let it through already;
        L{None} if it may go on.
        """
        if isinstance(request, Request) and request.publisher_checked:
            return None
        return self._refusal(request, _client(request))

    def body_token(self, request: IRequest, reason: str) -> None:
        """The token in C{request}'s body is refused for C{reason}: count and log it."""
        self._refused(request, reason)

    def preflight(self, request: IRequest) -> str | None:
        """
        Why the page that sent the C{OPTIONS} preflight C{request} may not
        publish (counted and logged); L{None} if it may (or it is no page).
        """
        return self._page(request)

    def _refusal(self, request: IRequest, client: str) -> str | None:
        """The address and header token from C{client}, then the page."""
        guard = self.guard
        authorization = request.getHeader(b"authorization") if guard.publish_token else None
        reason = guard.refuse_publisher(client, authorization, _unknown_via(request, client))
        if reason is None:
            return self._page(request)
        self._refused(request, reason)
        return reason

    def _page(self, request: IRequest) -> str | None:
        """
        L{notificator.cors.ORIGIN_NOT_ALLOWED} (counted and logged, with the
        origin) when a web page of an origin that may not publish sent
        C{request}: a form or script on another site, opened by a browser on
        an allowed host.
        """
        origin = _twisted.header(request.requestHeaders, _ORIGIN)
        if origin is None:
            return None  # not a browser: a server-to-server sender
        reason = self.cors.refuse_publish(
            origin,
            request.getHeader(b"sec-fetch-site"),
            request.getHeader(b"host"),
            request.isSecure(),
        )
        if reason is not None:
            self._refused(
                request,
                f"{reason}: {safe(origin, 100)} is not listed in"
                " sse.header Access-Control-Allow-Origin",
            )
        return reason

    def _refused(self, request: IRequest, reason: str) -> None:
        """Count and log a refused publisher (never its token): one format for every moment."""
        self._stats.reject(403)
        self._log.warn(
            "refused publish from {peer}: {code} {reason}",
            peer=_peer(request),
            code=403,
            reason=reason,
        )


def _unknown_via(request: IRequest, client: str) -> str | None:
    """The peer an unknown client came through (to say why it is refused), else None."""
    return _peer_host(request) if client == auth.UNKNOWN else None


_ORIGIN = _twisted.canonical_name(b"origin")
_CONTENT_TYPE = _twisted.canonical_name(b"content-type")


#: The path of the publish resource (what L{PublishGate.before_body} looks at).
PUBLISH_PATH = b"/webNotification"


class PublishResource(refusals.Resource):
    """
    C{POST /webNotification}: parse the body (see L{notificator.ingest}),
    hand the notification to the broker, and answer, once it is recorded,
    with JSON C{{"id", "event", "userId", "eventId", "delivered"}} (and
    C{"nodes"} in cluster mode).  A page of another origin may publish only
    when that origin is listed (L{PublishGate}: its four moments).  Bad bodies
    get 400/413/415 with JSON C{{"error"}} and a log line; a broker that
    cannot record gets 503.
    Other methods get 405 and paths below it 404 (L{refusals}), counted
    and logged as rejected publishes.

    @param max_bytes: larger bodies get 413 (C{limits.bodyBytes}; the
        request refuses them while reading,
        L{notificator.http.request.Request}: this is the backstop).
    @param max_fields: form bodies with more fields get 400
        (C{limits.formFields}).
    @param hub: once it drains (the server is stopping), each answer closes
        its keep-alive connection (L{close_after}), so the sender's next
        publish goes to a server that goes on.
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
        hub: Hub | None = None,
    ) -> None:
        super().__init__()
        self._hub = hub
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
        hub = self._hub
        if hub is not None and hub.draining:
            close_after(request)
        gate = self._gate
        reason = gate.after_body(request)
        if reason is not None:
            return json_response(request, 403, {"error": reason})
        guard = gate.guard
        authorization = request.getHeader(b"authorization") if guard.publish_token else None
        content = request.content
        body = content.read(self._max_bytes + 1) if content is not None else b""
        # With a token configured, the body's token is checked as soon as
        # ingest finds it, before the id and data are decoded.
        check = partial(guard.refuse_publish_token, authorization) if guard.publish_token else None
        try:
            if len(body) > self._max_bytes:
                raise _TooLarge(f"body larger than {self._max_bytes} bytes (limits.bodyBytes)")
            message, _ = ingest.parse_publish_token(
                _twisted.header(request.requestHeaders, _CONTENT_TYPE),
                body,
                self._max_fields,
                check,
            )
        except ingest.Forbidden as e:
            gate.body_token(request, e.reason)
            return json_response(request, 403, {"error": e.reason})
        except ingest.BadNotification as e:
            self._rejected(request, e.code, e.reason, e.ident)
            return json_response(request, e.code, {"error": e.reason})
        published = self._broker.publish(message)
        if isinstance(published, Published):
            body = self._answer(published, request, message)
            if isinstance(request, Request):
                # Written and finished here, as twisted.web would once
                # this returned (RequestBase.respond: the same bytes).
                request.respond(body)
                return NOT_DONE_YET
            return body
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
        reason = self._gate.preflight(request)
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
