"""
Tests for L{notificator.http.publish} over in-memory HTTP (treq's StubTreq):
the publish endpoint, and which pages and senders may publish.
"""

from __future__ import annotations

import json
from io import BytesIO
from ipaddress import ip_network
from typing import Any

from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import server
from twisted.web.resource import getChildForRequest
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyChannel

from notificator import auth
from notificator.cors import CORSPolicy
from notificator.http.tree import build_resource
from tests.support import (
    BothChannels,
    FastChannelSite,
    Parts,
    evolved,
    split_response,
)
from tests.test_http_sse import FORM, GW, LaterBroker, WebCase, make_config


class PublishOriginTests(WebCase):
    """Which web pages may publish (issue 17, item 5)."""

    def post(self, headers: dict[str, str]) -> tuple[int, Any, Any]:
        """A form publish to u1 with these headers: status, headers, JSON answer."""
        response = self.successResultOf(
            self.stub.post(
                "http://n.example/webNotification",
                data=b"id=notify_u1&data=1",
                headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
            )
        )
        body = json.loads(self.successResultOf(response.content()))
        self.stub.flush()
        return response.code, response.headers, body

    def test_other_origins_refused(self) -> None:
        """
        A form or script on another site (or null), also with '*'
        configured, is 403 JSON and logged with its origin; nothing is sent.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        pages = [
            {"Origin": "https://evil.example"},
            {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
            {"Origin": "null"},
            {"Origin": "http://n.example:8080"},
            {"Origin": "http://n.example", "Sec-Fetch-Site": "same-site"},
        ]
        for cors in (self.config.sse.cors, CORSPolicy.from_origins(["*"])):
            self.parts = Parts(self.clock, make_config(cors=cors))
            self.hub = self.parts.hub
            self.stub = StubTreq(self.parts.resource)
            _, chunks = self.open("/sse/u1")
            for headers in pages:
                code, response_headers, body = self.post(headers)
                self.assertEqual((code, body), (403, {"error": "origin not allowed"}), headers)
                self.assertIsNone(response_headers.getRawHeaders("access-control-allow-origin"))
            self.assertEqual(self.parts.stats.published, 0)
            self.assertEqual([e["event"] for e in self.events(chunks)], ["connect"])
        lines = [formatEvent(e) for e in observer if "refused publish" in e.get("log_format", "")]
        self.assertEqual(len(lines), 2 * len(pages))
        self.assertEqual(
            lines[0],
            "refused publish from 127.0.0.1: 403 origin not allowed: https://evil.example"
            " is not listed in sse.header Access-Control-Allow-Origin",
        )

    def test_senders_listed_and_own_pages_publish(self) -> None:
        """No Origin (a sender), a listed origin and the server's own pages publish."""
        _, chunks = self.open("/sse/u1")
        for headers in (
            {},
            {"Origin": GW},
            {"Origin": "http://n.example"},
            {"Origin": "http://n.example", "Sec-Fetch-Site": "same-origin"},
            {"Origin": "https://n.example:3443", "Sec-Fetch-Site": "same-origin"},
        ):
            code, response_headers, body = self.post(headers)
            self.assertEqual((code, body["delivered"]), (200, 1), headers)
            allowed = response_headers.getRawHeaders("access-control-allow-origin")
            self.assertEqual(allowed, [GW] if headers.get("Origin") == GW else None)
        self.assertEqual(len(self.events(chunks)), 6)

    def test_preflight_of_another_origin_refused(self) -> None:
        """A preflight from another origin is 403 JSON; from a listed one 204; without Origin 204."""
        for origin, code in [("https://evil.example", 403), (GW, 204), (None, 204), ("null", 403)]:
            headers = {} if origin is None else {"Origin": origin}
            response = self.successResultOf(
                self.stub.request("OPTIONS", "http://n.example/webNotification", headers=headers)
            )
            self.assertEqual(response.code, code, origin)
            allowed = response.headers.getRawHeaders("access-control-allow-origin")
            self.assertEqual(allowed, [GW] if origin == GW else None)
            self.successResultOf(response.content())
        self.assertEqual(self.parts.stats.rejected, {403: 2})


class PublishTests(WebCase):
    def test_reply(self) -> None:
        """A publish answers 200 JSON with id, event, userId, eventId, delivered."""
        self.open("/sse/001003200")
        code, body = self.publish(b"id=appr_001003200&data=%7B%22command%22%3A%22refresh%22%7D")
        self.assertEqual(code, 200)
        self.assertEqual(
            body,
            {
                "id": "appr_001003200",
                "event": "appr",
                "userId": "001003200",
                "eventId": body["eventId"],
                "delivered": 1,
            },
        )

    def test_json_body(self) -> None:
        """application/json bodies publish too."""
        _, chunks = self.open("/sse/u1")
        code, body = self.publish(
            json.dumps({"id": "notify_u1", "data": {"t": "한글"}}).encode(),
            {b"content-type": [b"application/json"]},
        )
        self.assertEqual((code, body["delivered"]), (200, 1))
        self.assertEqual(json.loads(self.events(chunks)[-1]["data"]), {"t": "한글"})

    def test_bad_body_400_and_logged(self) -> None:
        """A malformed body is 400 JSON with a reason, and one log line."""
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        code, body = self.publish(b"id=oops&data=1")
        self.assertEqual(code, 400)
        self.assertIn("<event>_<userId>", body["error"])
        self.assertEqual([e["code"] for e in observer if e.get("code")], [400])

    def test_debug_line_counts_streams_in_english(self) -> None:
        """The debug line of a publish says "1 stream", "2 streams", "0 streams"."""
        from twisted.logger import formatEvent

        debug = evolved(self.config, {"server": {"log_level": "debug"}})
        parts = Parts(self.clock, debug)
        self.hub = parts.hub
        self.stub = StubTreq(parts.resource)
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.open("/sse/u1")
        self.publish(b"id=notify_u1&data=1")
        self.open("/sse/u1")
        self.publish(b"id=notify_u1&data=2")
        self.publish(b"id=notify_nobody&data=3")
        ends = [formatEvent(e).rsplit(": ", 1)[1] for e in observer if "delivered" in e]
        self.assertEqual(ends, ["1 stream", "2 streams", "0 streams"])

    def test_forged_event_name(self) -> None:
        """An event name with CR/LF is a 400 and no frame reaches the stream."""
        _, chunks = self.open("/sse/u1")
        code, _ = self.publish(b"id=notify%0Aevent%3A+x_u1&data=1")
        self.assertEqual(code, 400)
        self.assertEqual([e["event"] for e in self.events(chunks)], ["connect"])

    def test_rejected_publish_log_names_the_id(self) -> None:
        """A rejected publish's log line has the peer, the reason and the id it named, on one line."""
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        cases = [
            (b"id=bad%0Aevent_u1&data=1", FORM, "bad\\nevent_u1"),
            (b"id=nounderscore", FORM, "nounderscore"),
            (b"id=notify_u1&data=%FF", FORM, "notify_u1"),
            (b'{"id": "x y_u1", "data": 1}', {b"content-type": [b"application/json"]}, "x y_u1"),
            (b'{"id": 5}', {b"content-type": [b"application/json"]}, "5"),
            (b'{"id": "notify_u1"', {b"content-type": [b"application/json"]}, "-"),
            (b"id=notify_u1", {b"content-type": [b"text/plain"]}, "-"),
        ]
        for body, headers, _ in cases:
            self.assertIn(self.publish(body, headers)[0], (400, 415))
        lines = [formatEvent(e) for e in observer if e.get("log_format", "").startswith("rejected")]
        self.assertEqual([line.rsplit("; id ", 1)[1] for line in lines], [c[2] for c in cases])
        for line in lines:
            self.assertRegex(line, r"^rejected publish from 127\.0\.0\.1: 4\d\d \S")
            self.assertNotIn("\n", line)

    def test_slips_are_400_before_anything_is_recorded(self) -> None:
        """
        An event name with a trailing newline, a user id or data with a lone
        surrogate, a number out of range: 400 JSON, nothing published.
        """
        _, chunks = self.open("/sse/u1")
        json_body = {b"content-type": [b"application/json"]}
        for body, headers in [
            (b"id=notify%0A_u1&data=1", FORM),
            (b'{"id": "notify_\\ud800", "data": 1}', json_body),
            (b'{"id": "notify_u1", "data": {"n": 1e999}}', json_body),
            (b'{"id": "notify_u1", "data": "\\udc00"}', json_body),
        ]:
            code, reply = self.publish(body, headers)
            self.assertEqual(code, 400, body)
            self.assertIsInstance(reply["error"], str)
        self.assertEqual(self.parts.stats.published, 0)
        self.assertEqual(self.parts.stats.rejected, {400: 4})
        self.assertEqual([e["event"] for e in self.events(chunks)], ["connect"])

    def test_unsupported_media_type(self) -> None:
        """A body in another content type is 415."""
        code, body = self.publish(b"id=a_b", {b"content-type": [b"text/plain"]})
        self.assertEqual(code, 415)
        self.assertIn("content type", body["error"])

    def test_too_large(self) -> None:
        """A body over limits.bodyBytes that reached the resource is 413 (the backstop)."""
        limited = evolved(self.config, {"limits": {"body_bytes": 1000}})
        self.stub = StubTreq(Parts(self.clock, limited).resource)
        code, body = self.publish(b"id=a_b&data=" + b"x" * 1000)
        self.assertEqual(code, 413)
        self.assertEqual(body, {"error": "body larger than 1000 bytes (limits.bodyBytes)"})
        self.assertEqual(self.publish(b"id=a_b&data=" + b"x" * 980)[0], 200)

    def test_too_many_form_fields(self) -> None:
        """A form body with more than limits.formFields fields is 400."""
        limited = evolved(self.config, {"limits": {"form_fields": 3}})
        self.stub = StubTreq(Parts(self.clock, limited).resource)
        code, body = self.publish(b"id=a_b&data=1&x=2&y=3")
        self.assertEqual((code, body), (400, {"error": "more than 3 form fields"}))
        self.assertEqual(self.publish(b"id=a_b&data=1&x=2")[0], 200)

    def test_get_is_405(self) -> None:
        """GET /webNotification is 405 with an Allow header."""
        response = self.successResultOf(self.stub.get("http://n.example/webNotification"))
        self.assertEqual(response.code, 405)
        self.assertEqual(response.headers.getRawHeaders("allow"), ["OPTIONS, POST"])

    def test_still_serving_after_bad_input(self) -> None:
        """After a run of bad bodies, a good one is still delivered."""
        _, chunks = self.open("/sse/u1")
        for bad in (b"", b"%%%", b"id=_", b'{"id":', b"id=a_b&data=%FF"):
            self.assertEqual(self.publish(bad)[0], 400)
        self.assertEqual(self.publish(b"id=notify_u1&data=1")[1]["delivered"], 1)

    def test_unknown_path_404(self) -> None:
        """Unknown paths are 404."""
        response = self.successResultOf(self.stub.get("http://n.example/nope"))
        self.assertEqual(response.code, 404)


class PublishGuardTests(WebCase):
    def configure(self, **publish: Any) -> Parts:
        config = evolved(self.config, {"publish": publish})
        parts = Parts(self.clock, config)
        self.hub = parts.hub
        self.stub = StubTreq(parts.resource)
        return parts

    def test_address_not_allowed(self) -> None:
        """A publisher outside publish.allow gets 403 JSON; nothing is delivered."""
        parts = self.configure(allow=(ip_network("10.0.0.0/8"),))
        _, chunks = self.open("/sse/u1")
        code, body = self.publish(b"id=notify_u1&data=1")
        self.assertEqual((code, body), (403, {"error": "address not allowed"}))
        self.assertEqual(self.events(chunks)[1:], [])
        self.assertEqual((parts.stats.published, parts.stats.rejected), (0, {403: 1}))

    def test_token(self) -> None:
        """With publish.token: missing or wrong is 403; the header or the form field passes; never in data."""
        token = "s3cret-token-0123456789"
        self.configure(token=token)
        _, chunks = self.open("/sse/u1")
        self.assertEqual(
            self.publish(b"id=notify_u1&data=1"), (403, {"error": "missing publish token"})
        )
        self.assertEqual(
            self.publish(b"id=notify_u1&data=1&token=nope"), (403, {"error": "wrong publish token"})
        )
        bearer = {**FORM, b"authorization": [b"Bearer " + token.encode()]}
        self.assertEqual(self.publish(b"id=notify_u1&data=1", bearer)[0], 200)
        self.assertEqual(self.publish(b"id=notify_u1&data=2&token=" + token.encode())[0], 200)
        code, _ = self.publish(
            json.dumps({"id": "notify_u1", "data": {"n": 3}, "token": token}).encode(),
            {b"content-type": [b"application/json"]},
        )
        self.assertEqual(code, 200)
        events = self.events(chunks)[1:]
        self.assertEqual([e["data"] for e in events], ["1", "2", '{"n":3}'])
        self.assertNotIn(token, repr(events))

    def test_token_before_the_body_is_decoded(self) -> None:
        """A wrong or missing token is 403, not the 400 its undecodable id and data would get."""
        parts = self.configure(token="s3cret-token-0123456789")
        for body, reason in [
            (b"id=notify_%FF&data=%FF&token=nope", "wrong publish token"),
            (b"id=notify%0A_%FF&data=1e999", "missing publish token"),
        ]:
            self.assertEqual(self.publish(body), (403, {"error": reason}))
        self.assertEqual((parts.stats.published, parts.stats.rejected), (0, {403: 2}))


class LaterPublishTests(WebCase):
    """
    A publish whose broker answers with a Deferred (cluster mode): the
    answer waits for it, a broker that cannot record gives 503, a failure
    500, and a publisher that left gets nothing written.
    """

    def setUp(self) -> None:
        super().setUp()
        self.broker = LaterBroker(self.parts.broker)
        resource = build_resource(self.hub, self.broker, self.parts.stats, self.config, self.clock)
        self.stub = StubTreq(resource)
        self.addCleanup(self.stub.flush)

    def post(self, body: bytes) -> Deferred[Any]:
        return self.stub.post("http://n.example/webNotification", data=body, headers=FORM)

    def test_answers_once_recorded(self) -> None:
        """The 200 comes when the broker's Deferred fires, with its event id and node count."""
        _, chunks = self.open("/sse/u1")
        answered = self.post(b"id=notify_u1&data=1")
        self.stub.flush()
        self.assertNoResult(answered)
        self.assertEqual(len(self.broker.pending), 1)
        self.broker.record()
        self.stub.flush()
        response = self.successResultOf(answered)
        body = json.loads(self.successResultOf(response.content()))
        self.assertEqual(response.code, 200)
        self.assertEqual((body["delivered"], body["nodes"]), (1, 2))
        self.assertEqual([e["id"] for e in self.events(chunks)[1:]], [body["eventId"]])

    def test_unavailable_is_503(self) -> None:
        """A broker that cannot record answers 503 JSON with the reason, logged and counted."""
        from notificator.broker import Unavailable

        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        answered = self.post(b"id=notify_u1&data=1")
        self.stub.flush()
        self.broker.pending.pop()[1].errback(Unavailable("redis is down"))
        self.stub.flush()
        response = self.successResultOf(answered)
        self.assertEqual(response.code, 503)
        self.assertEqual(
            json.loads(self.successResultOf(response.content())),
            {"error": "not recorded: redis is down"},
        )
        self.assertEqual(self.parts.stats.rejected.get(503), 1)
        [line] = [formatEvent(e) for e in observer if e.get("code") == 503]
        self.assertIn("notify to u1", line)

    def test_failure_is_500_and_logged(self) -> None:
        """Any other failure answers 500 without the details, and logs the traceback."""
        answered = self.post(b"id=notify_u1&data=1")
        self.stub.flush()
        self.broker.pending.pop()[1].errback(ZeroDivisionError("boom"))
        self.stub.flush()
        response = self.successResultOf(answered)
        self.assertEqual(response.code, 500)
        self.assertEqual(
            json.loads(self.successResultOf(response.content())), {"error": "internal error"}
        )
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_publisher_gone(self) -> None:
        """A publisher that left before the broker answered gets nothing written; none fails."""
        channel = DummyChannel()
        request = server.Request(channel)
        request.method = b"POST"
        request.requestHeaders.setRawHeaders(b"content-type", FORM[b"content-type"])
        request.content = BytesIO(b"id=notify_u1&data=1")
        request.client = IPv4Address("TCP", "127.0.0.1", 50000)
        resource = build_resource(self.hub, self.broker, self.parts.stats, self.config, self.clock)
        request.prepath, request.postpath = [], [b"webNotification"]
        publish = getChildForRequest(resource, request)
        self.assertIs(publish.render(request), NOT_DONE_YET)
        request.connectionLost(Failure(ConnectionDone()))
        self.assertIsNone(self.successResultOf(self.broker.record()))
        self.assertEqual(channel.transport.written.getvalue(), b"")
        self.assertFalse(request.finished)


class PublishBodyTests(SynchronousTestCase):
    """
    A publish over twisted.web's Site and the fast channel: ingest reads the
    raw body (twisted.web's form parser is skipped), and the per-publish
    debug line is built only when debug is on.
    """

    def post(self, h: FastChannelSite, body: bytes, ctype: bytes) -> bytes:
        start = len(h.sock.sent)
        h.request(
            b"POST /webNotification HTTP/1.1\r\nHost: t\r\nContent-Type: "
            + ctype
            + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body
        )
        h.flush()
        return bytes(h.sock.sent[start:])

    def test_form_body_with_semicolon_is_published(self) -> None:
        """A form body is parsed by ingest from the raw bytes (no request.args), semicolons and all."""
        h = FastChannelSite()
        self.addCleanup(h.lose)
        reply = self.post(h, b'id=notify_u9&data={"t":"a;b"}', b"application/x-www-form-urlencoded")
        self.assertIn(b"200 OK", reply.split(b"\r\n", 1)[0])
        self.assertIn(b'"userId": "u9"', reply)

    def test_request_args_not_filled_from_form(self) -> None:
        """The request factory skips twisted.web's form parsing but keeps query arguments."""
        h = FastChannelSite()
        self.addCleanup(h.lose)
        seen = []
        original = h.site.resource.children[b"webNotification"].render_POST

        def spy(request):  # type: ignore[no-untyped-def]
            seen.append(dict(request.args))
            return original(request)

        h.site.resource.children[b"webNotification"].render_POST = spy
        h.request(
            b"POST /webNotification?q=1 HTTP/1.1\r\nHost: t\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 26\r\n\r\n"
            b"id=notify_u1&data=%7B%7D&x"
        )
        self.assertEqual(seen, [{b"q": [b"1"]}])

    def test_debug_line_only_when_debug(self) -> None:
        """The per-publish debug event is emitted at debug level and not built at info."""
        for debug, expected in ((True, 1), (False, 0)):
            events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
            h = FastChannelSite(debug=debug)
            self.addCleanup(h.lose)
            self.post(h, b"id=notify_u1&data=1", b"application/x-www-form-urlencoded")
            published = [e for e in events if e.get("log_format", "").startswith("published")]
            self.assertEqual(len(published), expected, debug)


class H2PublishGateTests(BothChannels, SynchronousTestCase):
    """
    Over HTTP/2 (twisted.web's real H2Connection and H2Stream, in memory) the
    publish gate decides with every header of the HEADERS frame: a
    C{content-length} before the C{authorization}, C{origin} or
    C{x-forwarded-for} that refuses the publisher (twisted.web tells the
    request its length the moment it meets that header) is refused 403
    before any body is read, exactly as when those headers come first.
    """

    TOKEN = "h2-gate-token-0123456789abcdef"
    FORM = ("content-type", "application/x-www-form-urlencoded")
    BODY = b"id=notify_u1&data=1"

    def start(self, **server: Any) -> Any:
        config = {
            "publish": {"token": self.TOKEN},
            "sse": {"cors": CORSPolicy.from_origins([GW])},
        }
        if server:
            config["server"] = server
        return self.server_with(config)

    def server_with(self, config: dict[str, Any]) -> Any:
        from tests.support import InMemoryServer

        return InMemoryServer(self, self.fast, config=config)

    def exchange(
        self, s: Any, refusing: list[tuple[str, str]], first: bool
    ) -> tuple[int | None, Any, bool]:
        """
        A publish whose head carries C{refusing}, before the content-length
        (C{first}) or after it, and no body yet: its status, JSON answer and
        whether the stream was reset, before any body is sent.
        """
        from tests.support import MemoryH2

        c = MemoryH2(self, s)
        length = ("content-length", str(len(self.BODY)))
        headers = [*refusing, length] if first else [length, *refusing]
        sid = c.open("POST", "/webNotification", [self.FORM, *headers])
        status = c.status(sid)
        answer = json.loads(c.data[sid]) if c.data[sid] else None
        reset = sid in c.reset
        # The body, late: never read, never published.
        if not reset:
            c.body(sid, self.BODY, end=True)
        return status, answer, reset

    def assertRefusedEarly(self, s: Any, refusing: list[tuple[str, str]], reason: str) -> None:
        for first in (True, False):
            status, answer, reset = self.exchange(s, refusing, first)
            self.assertEqual(
                (status, answer, reset), (403, {"error": reason}, True), (refusing, first)
            )
        self.assertEqual(s.stats.published, 0)
        self.assertEqual(s.stats.rejected, {403: 2})

    def test_wrong_token_after_content_length(self) -> None:
        """Authorization: Bearer with another token, after content-length: 403 before the body."""
        s = self.start()
        self.assertRefusedEarly(s, [("authorization", "Bearer not-the-token")], auth.WRONG_TOKEN)

    def test_other_origin_after_content_length(self) -> None:
        """A page of another site (origin), after content-length: 403 before the body."""
        s = self.start()
        self.assertRefusedEarly(
            s,
            [("authorization", f"Bearer {self.TOKEN}"), ("origin", "https://evil.example")],
            "origin not allowed",
        )
        [line, _] = s.logged("refused publish from")
        self.assertIn("https://evil.example", line["reason"])

    def test_untrusted_proxy_after_content_length(self) -> None:
        """X-Forwarded-For from a peer not in server.trustedProxies, after content-length: 403 before the body."""
        s = self.start()
        self.assertRefusedEarly(
            s,
            [("authorization", f"Bearer {self.TOKEN}"), ("x-forwarded-for", "127.0.0.1")],
            auth.UNTRUSTED_PROXY,
        )
        self.assertEqual(
            [e["peer"] for e in s.logged("refused publish from")], ["unknown via 127.0.0.1"] * 2
        )

    def test_trusted_proxy_names_the_client(self) -> None:
        """
        Behind a trusted proxy, the client its X-Forwarded-For names (after
        content-length) is the one the allow list is asked about: 403, and
        the log line names it.
        """
        s = self.start(trusted_proxies=(ip_network("127.0.0.1/32"),))
        self.assertRefusedEarly(
            s,
            [("authorization", f"Bearer {self.TOKEN}"), ("x-forwarded-for", "203.0.113.9")],
            auth.ADDRESS_NOT_ALLOWED,
        )
        self.assertEqual([e["peer"] for e in s.logged("refused publish from")], ["203.0.113.9"] * 2)

    def test_too_large_names_the_forwarded_client(self) -> None:
        """
        Behind a trusted proxy, a body over limits.bodyBytes announced before
        the X-Forwarded-For (a path the gate does not ask about): the 413's
        log line names the client the header names, not the proxy.
        """
        from tests.support import MemoryH2

        s = self.start(trusted_proxies=(ip_network("127.0.0.1/32"),))
        c = MemoryH2(self, s)
        sid = c.open(
            "POST",
            "/health",
            [("content-length", str(64 << 20)), ("x-forwarded-for", "203.0.113.9")],
        )
        self.assertEqual((c.status(sid), sid in c.reset), (413, True))
        [line] = s.logged("refused a request")
        self.assertEqual(line["peer"], "203.0.113.9")

    def test_no_continue_for_a_refused_publisher(self) -> None:
        """A refused publisher that asked for 100 Continue gets the 403 alone: no invitation to send its body."""
        from tests.support import MemoryH2

        s = self.start()
        c = MemoryH2(self, s)
        sid = c.open(
            "POST",
            "/webNotification",
            [
                self.FORM,
                ("content-length", str(len(self.BODY))),
                ("expect", "100-continue"),
                ("authorization", "Bearer not-the-token"),
            ],
        )
        self.assertEqual((c.status(sid), sid in c.reset), (403, True))
        self.assertEqual(c.informational, {})

    def test_allowed_publisher_published(self) -> None:
        """The right token, no origin, no forwarding: published, in either order."""
        from tests.support import MemoryH2

        s = self.start()
        for first in (True, False):
            c = MemoryH2(self, s)
            token = ("authorization", f"Bearer {self.TOKEN}")
            length = ("content-length", str(len(self.BODY)))
            sid = c.open(
                "POST",
                "/webNotification",
                [self.FORM, *([token, length] if first else [length, token])],
            )
            self.assertIsNone(c.status(sid))
            c.body(sid, self.BODY, end=True)
            self.assertEqual(c.status(sid), 200)
            self.assertEqual(json.loads(c.data[sid])["userId"], "u1")
        self.assertEqual((s.stats.published, s.stats.rejected), (2, {}))


class H2PublishGateStockTests(H2PublishGateTests):
    fast = False


class PublishPolicyTests(BothChannels, SynchronousTestCase):
    """
    L{notificator.http.publish.PublishGate} is the one publish policy: at
    each of the four moments a publisher can be refused (before its body,
    after it for a request the gate did not see, the body's token, the
    preflight's page) the refusal is a 403 with JSON C{{"error"}}, counted
    once (C{rejected[403]}) and logged once in the one format.
    """

    TOKEN = "policy-token-0123456789abcdef"
    FORM = b"Content-Type: application/x-www-form-urlencoded\r\n"

    def refused(self, gate: bool, raw: bytes) -> tuple[bytes, dict[str, Any], list[Any]]:
        """C{raw} to a new server: its status, JSON answer, and the refusal lines logged."""
        from tests.support import InMemoryServer

        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        config = {"publish": {"token": self.TOKEN}, "sse": {"cors": CORSPolicy.from_origins([GW])}}
        s = InMemoryServer(self, self.fast, config=config)
        if not gate:
            s.site.gate = None  # a request the gate did not see before its body
        c = s.connect()
        c.receive(raw)
        status, _, body = split_response(c.text())
        lines = [
            e
            for e in [*observer, *s.events]
            if e.get("log_format") == "refused publish from {peer}: {code} {reason}"
        ]
        self.assertEqual(dict(s.stats.rejected), {403: 1}, raw[:60])
        return status, json.loads(body), lines

    def publish(self, headers: bytes, body: bytes) -> bytes:
        return b"POST /webNotification HTTP/1.1\r\nHost: t\r\n%sContent-Length: %d\r\n\r\n%s" % (
            headers,
            len(body),
            body,
        )

    def test_one_answer_one_count_one_line(self) -> None:
        wrong = b"Authorization: Bearer wrong-token-0123456789abcdef\r\n"
        cases = [
            # before_body: the header token, answered before the body.
            (True, self.publish(wrong + self.FORM, b"id=notify_u1&data=1"), auth.WRONG_TOKEN),
            # after_body: the same, on a site without the gate.
            (False, self.publish(wrong + self.FORM, b"id=notify_u1&data=1"), auth.WRONG_TOKEN),
            # body_token: the token of the body.
            (True, self.publish(self.FORM, b"id=notify_u1&data=1&token=x"), auth.WRONG_TOKEN),
            # preflight: a page of another origin.
            (
                True,
                b"OPTIONS /webNotification HTTP/1.1\r\nHost: t\r\nOrigin: https://evil.example\r\n\r\n",
                "origin not allowed",
            ),
        ]
        for gate, raw, reason in cases:
            status, answer, lines = self.refused(gate, raw)
            self.assertEqual(status.split(b" ")[1], b"403", raw[:60])
            self.assertEqual(answer, {"error": reason})
            self.assertEqual(len(lines), 1, raw[:60])
            self.assertEqual((lines[0]["code"], lines[0]["reason"][: len(reason)]), (403, reason))
            self.assertNotIn(self.TOKEN, formatEvent(lines[0]))


class PublishPolicyStockTests(PublishPolicyTests):
    fast = False


class DrainingPublishTests(BothChannels, SynchronousTestCase):
    """
    While the server drains, a publish is still recorded and answered, and
    its HTTP/1.1 keep-alive connection is closed once answered, so that the
    sender's next publish opens a connection to a server that goes on.
    """

    BODY = b"id=notify_u1&data=1"
    HEAD = (
        b"POST /webNotification HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 19\r\n\r\n"
    )

    def test_keep_alive_until_the_drain(self) -> None:
        s = self.server()
        conn = s.connect()
        conn.receive(self.HEAD + self.BODY)
        self.assertIn(b"HTTP/1.1 200 ", conn.text())
        self.assertNotIn(b"onnection: close", conn.text())
        self.assertFalse(conn.closing)

        s.hub.draining = True
        sent = len(conn.text())
        conn.receive(self.HEAD + self.BODY)
        answer = conn.text()[sent:]
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer)
        self.assertIn(b"\r\nConnection: close\r\n", answer)
        self.assertTrue(conn.closing)
        self.assertEqual(s.stats.published, 2)

    def test_http2_gets_no_connection_header(self) -> None:
        """
        Over HTTP/2 (which forbids C{Connection}; its connections end with
        a GOAWAY) a publish while draining is answered as usual, with no
        C{Connection} header.
        """
        from tests.support import MemoryH2

        s = self.server()
        s.hub.draining = True
        c = MemoryH2(self, s)
        sid = c.open(
            "POST",
            "/webNotification",
            [
                ("content-type", "application/x-www-form-urlencoded"),
                ("content-length", str(len(self.BODY))),
            ],
        )
        c.body(sid, self.BODY, end=True)
        self.assertEqual(c.status(sid), 200)
        self.assertNotIn("connection", {k.lower() for k in c.headers[sid]})
        self.assertEqual(s.stats.published, 1)


class DrainingPublishStockTests(DrainingPublishTests):
    fast = False
