"""
Tests for L{notificator.http.sse} over in-memory HTTP (treq's StubTreq): the
SSE stream, CORS, and the publish endpoint.
"""

from __future__ import annotations

import json
from io import BytesIO
from ipaddress import ip_network
from typing import Any

import attrs
from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import Logger, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import server
from twisted.web.resource import getChildForRequest
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyChannel, DummyRequest

from notificator import auth
from notificator.config import Config
from notificator.cors import CORSPolicy
from notificator.http import assets
from notificator.http.sse import (
    MAX_LAST_EVENT_ID,
    PublishGate,
    SSEResource,
    StockRequest,
    build_resource,
    connect_data,
)
from tests.support import (
    BothChannels,
    FastChannelSite,
    Parts,
    config_with,
    dechunk,
    evolved,
    parse_frames,
    split_response,
)

FORM = {b"content-type": [b"application/x-www-form-urlencoded; charset=UTF-8"]}
GW = "https://gw.example.com"


def make_config(**sse: Any) -> Config:
    """The shipped defaults with these sse.* fields, allowing the origin L{GW} only."""
    return config_with(sse={"cors": CORSPolicy.from_origins([GW]), **sse})


class WebCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.config = make_config(retry=5000, headers=(("X-Served-By", "gw1"),))
        self.parts = Parts(self.clock, self.config)
        self.hub = self.parts.hub
        self.stub = StubTreq(self.parts.resource)
        self.addCleanup(self.stub.flush)

    def open(self, path: str, **kwargs: Any) -> tuple[Any, list[bytes]]:
        response = self.successResultOf(self.stub.get("http://n.example" + path, **kwargs))
        chunks: list[bytes] = []
        done = self.stub.collect(response, chunks.append)
        self.stub.flush()
        self.assertNoResult(done)  # the stream stays open
        return response, chunks

    def events(self, chunks: list[bytes]) -> list[dict[str, Any]]:
        return [e for e in parse_frames(b"".join(chunks)) if "event" in e]

    def publish(self, body: bytes, headers: Any = FORM) -> tuple[int, dict[str, Any]]:
        response = self.successResultOf(
            self.stub.post("http://n.example/webNotification", data=body, headers=headers)
        )
        payload = json.loads(self.successResultOf(response.content()))
        self.stub.flush()
        return response.code, payload


class SSETests(WebCase):
    def test_subscribe_by_path(self) -> None:
        """GET /sse/<id> answers an event stream: retry, then connect."""
        response, chunks = self.open("/sse/u1")
        self.assertEqual(response.code, 200)
        h = response.headers
        self.assertEqual(h.getRawHeaders("content-type"), ["text/event-stream; charset=utf-8"])
        self.assertEqual(h.getRawHeaders("cache-control"), ["no-cache"])
        self.assertEqual(h.getRawHeaders("x-accel-buffering"), ["no"])
        self.assertEqual(h.getRawHeaders("x-served-by"), ["gw1"])
        frames = parse_frames(b"".join(chunks))
        self.assertEqual(frames[0], {"retry": "5000"})
        self.assertEqual(frames[1]["event"], "connect")
        self.assertEqual(
            json.loads(frames[1]["data"]),
            {"userId": "u1", "connectionId": 1, "time": 1_700_000_000_000},
        )
        self.assertEqual(self.hub.stream_count, 1)

    def test_connect_data_is_what_json_writes(self) -> None:
        """The connect event's JSON is byte for byte json.dumps' for any user id."""
        for user_id in ["u1", "유저_1", 'a"b\\c', "tab\tnl\n\x01", "\u2028x", "😀"]:
            for now in [0.0, 1_700_000_000.9996, 1_800_000_000.123]:
                self.assertEqual(
                    connect_data(user_id, 7, now),
                    json.dumps(
                        {"userId": user_id, "connectionId": 7, "time": int(now * 1000)},
                        ensure_ascii=False,
                    ),
                )

    def test_subscribe_by_cookie(self) -> None:
        """GET /sse takes the user id from the userID cookie (percent-decoded)."""
        _, chunks = self.open("/sse", cookies={"userID": "%EC%9C%A0%EC%A0%80_1"})
        self.assertEqual(json.loads(self.events(chunks)[0]["data"])["userId"], "유저_1")
        self.assertEqual([u for u, _ in self.hub.users()], ["유저_1"])

    def test_configured_cookie_name(self) -> None:
        """sse.cookie names the cookie to read."""
        parts = Parts(self.clock, make_config(cookie="gwUser"))
        self.hub = parts.hub
        stub = StubTreq(parts.resource)
        d = stub.get("http://n.example/sse/", cookies={"gwUser": "u9"})
        stub.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 200)
        self.assertEqual(self.hub.stream_count, 1)
        self.hub.close_all()
        stub.flush()

    def test_path_wins_and_is_decoded(self) -> None:
        """A percent-encoded path id is decoded; the path beats the cookie."""
        self.open("/sse/%ED%99%8D%20%EA%B8%B8", cookies={"userID": "other"})
        self.assertEqual([u for u, _ in self.hub.users()], ["홍 길"])

    def test_no_user_is_401(self) -> None:
        """No path segment and no cookie: 401 with a short text body."""
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        response = self.successResultOf(self.stub.get("http://n.example/sse"))
        self.assertEqual(response.code, 401)
        self.assertIn(b"userID", self.successResultOf(response.content()))
        self.assertEqual(self.hub.stream_count, 0)
        self.assertEqual([e["code"] for e in observer if "code" in e], [401])

    def test_bad_user_ids(self) -> None:
        """Undecodable or control-character ids are 400; extra segments 404."""
        for path, code in [("/sse/%FF", 400), ("/sse/a%0Ab", 400), ("/sse/a/b", 404)]:
            response = self.successResultOf(self.stub.get("http://n.example" + path))
            self.assertEqual(response.code, code, path)
        self.assertEqual(self.hub.stream_count, 0)

    def test_three_tabs_and_another_user(self) -> None:
        """Every tab of the user receives a notification; another user does not."""
        tabs = [self.open("/sse/u1")[1] for _ in range(3)]
        _, other = self.open("/sse/u2")
        code, body = self.publish(b"id=notify_u1&data=%7B%22n%22%3A1%7D")
        self.assertEqual((code, body["delivered"]), (200, 3))
        for chunks in tabs:
            (ev,) = [e for e in self.events(chunks) if e["event"] == "notify"]
            self.assertEqual(ev, {"id": body["eventId"], "event": "notify", "data": '{"n":1}'})
        self.assertEqual([e["event"] for e in self.events(other)], ["connect"])

    def test_disconnect_detaches(self) -> None:
        """A client that goes away is detached at once; later publishes are fine."""
        request = DummyRequest([b"u1"])
        resource = SSEResource(
            self.hub,
            self.parts.broker,
            self.config.sse,
            self.clock,
            self.parts.stats,
            guard=auth.Guard.from_config(self.config),
            limits=self.config.limits,
        )
        resource.render_GET(request)
        self.assertEqual(self.hub.stream_count, 1)

        request.processingFailed(Failure(ConnectionDone()))
        self.assertEqual(self.hub.stream_count, 0)
        code, body = self.publish(b"id=notify_u1&data=1")
        self.assertEqual(body["delivered"], 0)
        self.assertEqual(request.finished, 0)

    def test_shutdown_finishes_streams(self) -> None:
        """close_all finishes open responses, so browsers reconnect elsewhere."""
        response = self.successResultOf(self.stub.get("http://n.example/sse/u1"))
        done = self.stub.collect(response, lambda _: None)
        self.hub.close_all()
        self.stub.flush()
        self.successResultOf(done)

    def test_head(self) -> None:
        """HEAD answers the headers and does not open a stream."""
        response = self.successResultOf(self.stub.head("http://n.example/sse/u1"))
        self.assertEqual(response.code, 200)
        self.assertEqual(self.hub.stream_count, 0)


class CORSTests(WebCase):
    def test_allowed_origin_echoed(self) -> None:
        """An allowed Origin is echoed with credentials allowed and Vary: Origin."""
        response, _ = self.open("/sse/u1", headers={"Origin": GW})
        h = response.headers
        self.assertEqual(h.getRawHeaders("access-control-allow-origin"), [GW])
        self.assertEqual(h.getRawHeaders("access-control-allow-credentials"), ["true"])
        self.assertEqual(h.getRawHeaders("vary"), ["Origin"])

    def test_other_origin_not_allowed(self) -> None:
        """Another origin gets no CORS headers (the browser then refuses)."""
        response, _ = self.open("/sse/u1", headers={"Origin": "https://evil.example"})
        self.assertIsNone(response.headers.getRawHeaders("access-control-allow-origin"))
        self.assertEqual(response.headers.getRawHeaders("vary"), ["Origin"])

    def test_preflight(self) -> None:
        """OPTIONS answers 204 allowing the headers the IE polyfills send."""
        response = self.successResultOf(
            self.stub.request(
                "OPTIONS",
                "http://n.example/sse/u1",
                headers={
                    "Origin": GW,
                    "Access-Control-Request-Headers": "last-event-id, x-requested-with",
                },
            )
        )
        self.assertEqual(response.code, 204)
        allowed = response.headers.getRawHeaders("access-control-allow-headers")[0]
        for name in ("Accept", "Cache-Control", "X-Requested-With", "Last-Event-ID"):
            self.assertIn(name, allowed)
        self.assertEqual(response.headers.getRawHeaders("access-control-allow-origin"), [GW])
        self.assertIn("GET", response.headers.getRawHeaders("access-control-allow-methods")[0])
        self.assertEqual(self.hub.stream_count, 0)

    def test_publish_preflight(self) -> None:
        """/webNotification answers preflights too."""
        response = self.successResultOf(
            self.stub.request("OPTIONS", "http://n.example/webNotification", headers={"Origin": GW})
        )
        self.assertEqual(response.code, 204)
        self.assertIn("POST", response.headers.getRawHeaders("access-control-allow-methods")[0])

    def test_star_is_read_without_credentials(self) -> None:
        """With '*', another origin may read a stream without credentials: '*', never echoed."""
        self.parts = Parts(self.clock, make_config(cors=CORSPolicy.from_origins(["*"])))
        self.stub = StubTreq(self.parts.resource)
        response, _ = self.open("/sse/u1", headers={"Origin": "https://evil.example"})
        h = response.headers
        self.assertEqual(h.getRawHeaders("access-control-allow-origin"), ["*"])
        self.assertIsNone(h.getRawHeaders("access-control-allow-credentials"))
        response, _ = self.open("/sse/u1", headers={"Origin": "null"})
        self.assertIsNone(response.headers.getRawHeaders("access-control-allow-origin"))


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


class HeartbeatTests(WebCase):
    def test_heartbeat_reaches_streams(self) -> None:
        """A hub heartbeat arrives on open streams as JSON data."""
        _, chunks = self.open("/sse/u1")
        self.hub.heartbeat()
        self.stub.flush()
        beat = self.events(chunks)[-1]
        self.assertEqual(beat["event"], "heartbeat")
        self.assertEqual(json.loads(beat["data"]), {"time": 1_700_000_000_000})


class ReplayTests(WebCase):
    """A reconnect with the last id it saw gets what it missed, before anything live."""

    def missed(self, user: str, count: int) -> list[str]:
        return [
            self.publish(b"id=notify_%s&data=%d" % (user.encode(), n))[1]["eventId"]
            for n in range(count)
        ]

    def test_every_spelling_of_the_last_id(self) -> None:
        """The header and the three query spellings the polyfills use are all read."""
        ids = self.missed("u5", 4)
        for how in ["header", "lastEventId", "last_event_id", "evs_last_event_id"]:
            path, headers = "/sse/u5", {}
            if how == "header":
                headers = {"Last-Event-ID": ids[1]}
            else:
                path += f"?{how}={ids[1]}"
            _, chunks = self.open(path, headers=headers)
            events = self.events(chunks)
            self.assertEqual(json.loads(events[0]["data"])["replay"], "complete", how)
            self.assertEqual([e.get("id") for e in events[1:]], ids[2:], how)

    def test_header_wins_over_the_query(self) -> None:
        """With both, the Last-Event-ID header decides."""
        ids = self.missed("u5", 3)
        _, chunks = self.open(f"/sse/u5?lastEventId={ids[0]}", headers={"Last-Event-ID": ids[1]})
        self.assertEqual([e.get("id") for e in self.events(chunks)[1:]], ids[2:])

    def test_no_id_no_replay(self) -> None:
        """A fresh page load (no id) gets connect only, without a replay field."""
        self.missed("u5", 2)
        _, chunks = self.open("/sse/u5")
        events = self.events(chunks)
        self.assertEqual([e["event"] for e in events], ["connect"])
        self.assertNotIn("replay", json.loads(events[0]["data"]))

    def test_backlog_then_live_without_gap_or_duplicate(self) -> None:
        """What is published after the reconnect comes after the backlog, once."""
        ids = self.missed("u5", 3)
        _, chunks = self.open("/sse/u5", headers={"Last-Event-ID": ids[0]})
        live = self.publish(b"id=notify_u5&data=9")[1]["eventId"]
        self.stub.flush()
        self.assertEqual([e.get("id") for e in self.events(chunks)[1:]], ids[1:] + [live])

    def test_gap_gets_a_reset_then_everything_kept(self) -> None:
        """An id older than what is kept: connect says truncated, a reset, then what is kept."""
        parts = Parts(
            self.clock,
            evolved(self.config, {"sse": {"history": {"size": 2}}}),
        )
        self.stub = StubTreq(parts.resource)
        self.hub = parts.hub
        ids = self.missed("u5", 5)
        _, chunks = self.open("/sse/u5", headers={"Last-Event-ID": ids[0]})
        events = self.events(chunks)
        self.assertEqual(json.loads(events[0]["data"])["replay"], "truncated")
        self.assertEqual(events[1]["event"], "reset")
        reset = json.loads(events[1]["data"])
        self.assertEqual(
            (reset["reason"], reset["lastEventId"], reset["oldestEventId"]),
            ("expired", ids[0], ids[3]),
        )
        self.assertNotIn("id", events[1])  # the browser's last id stays the client's
        self.assertEqual([e.get("id") for e in events[2:]], ids[3:])
        self.assertEqual(parts.stats.replays, {"truncated": 1})

    def test_unknown_id_gets_a_reset(self) -> None:
        """An id that is not ours (another server, garbage, the future): reset, everything kept."""
        ids = self.missed("u5", 2)
        for bad in ["abc", "99999999999999-0", "1-2-3", "x" * 500]:
            _, chunks = self.open("/sse/u5", headers={"Last-Event-ID": bad})
            events = self.events(chunks)
            reset = json.loads(events[1]["data"])
            self.assertEqual(reset["reason"], "unknown", bad)
            self.assertLessEqual(len(reset["lastEventId"]), MAX_LAST_EVENT_ID)
            self.assertEqual([e.get("id") for e in events[2:]], ids, bad)


class OldIETests(WebCase):
    def test_preamble_when_asked(self) -> None:
        """evs_preamble or padding=true: a 2 KB comment before the first event."""
        for query in ["?evs_preamble=2056", "?padding=true"]:
            _, chunks = self.open("/sse/u1" + query)
            body = b"".join(chunks)
            self.assertTrue(body.startswith(b":" + b" " * 2048 + b"\n\n"), query)
            self.assertEqual(self.events(chunks)[0]["event"], "connect")
        _, chunks = self.open("/sse/u1")
        self.assertTrue(b"".join(chunks).startswith(b"retry: "))

    def test_buffer_limit_ends_the_response_and_replay_goes_on(self) -> None:
        """evs_buffer_size_limit: the response ends after about N bytes; reconnecting with evs_last_event_id gets the rest."""
        response = self.successResultOf(
            self.stub.get("http://n.example/sse/ie1?evs_buffer_size_limit=5000")
        )
        chunks: list[bytes] = []
        done = self.stub.collect(response, chunks.append)
        self.stub.flush()
        ids = []
        for _ in range(40):
            ids.append(self.publish(b'id=notify_ie1&data="%s"' % (b"x" * 200))[1]["eventId"])
        self.stub.flush()
        self.successResultOf(done)  # ended by the server
        got = [e.get("id") for e in self.events(chunks)[1:]]
        self.assertLess(len(got), 40)
        self.assertGreaterEqual(len(b"".join(chunks)), 5000)
        _, more = self.open(f"/sse/ie1?evs_last_event_id={got[-1]}&evs_buffer_size_limit=100000")
        again = [e.get("id") for e in self.events(more)[1:]]
        self.assertEqual(got + again, ids)


class DrainTests(WebCase):
    def test_new_streams_are_turned_away_while_draining(self) -> None:
        """While stopping: 200, a retry: with jitter, and the end (no connect)."""
        self.hub.drain(5.0, 3000)
        response = self.successResultOf(self.stub.get("http://n.example/sse/u1"))
        self.assertEqual(response.code, 200)
        body = self.successResultOf(response.content())
        (frame,) = parse_frames(body)
        # sse.retry (5000 here) plus up to sse.drainSeconds (5 s) of jitter.
        self.assertTrue(5000 <= int(frame["retry"]) <= 10000, frame)
        self.assertEqual(self.hub.stream_count, 0)


class StreamCapTests(WebCase):
    def setUp(self) -> None:
        super().setUp()
        config = evolved(self.config, {"limits": {"streams_per_user": 2, "streams": 3}})
        self.parts = Parts(self.clock, config)
        self.hub = self.parts.hub
        self.stub = StubTreq(self.parts.resource)

    def turned_away(self, path: str) -> int:
        response = self.successResultOf(self.stub.get("http://n.example" + path))
        self.assertEqual(response.code, 200)
        (frame,) = parse_frames(self.successResultOf(response.content()))
        return int(frame["retry"])

    def test_per_user_and_total(self) -> None:
        """Over streamsPerUser or streams: 200, a long retry, ended, counted and logged."""
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.open("/sse/u1")
        self.open("/sse/u1")
        self.assertTrue(30_000 <= self.turned_away("/sse/u1") <= 60_000)
        self.open("/sse/u2")
        self.assertTrue(30_000 <= self.turned_away("/sse/u3") <= 60_000)
        self.assertEqual(self.hub.stream_count, 3)
        self.assertEqual(self.parts.stats.refused, {"user-limit": 1, "server-limit": 1})
        self.assertEqual(len([e for e in observer if "turned away" in e["log_format"]]), 2)


class AddressCapTests(WebCase):
    """
    C{limits.streamsPerAddress}: one client address cannot take every
    stream; the streams of other addresses still open.
    """

    def setUp(self) -> None:
        super().setUp()
        self.configure(streams_per_address=2)
        self.observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def configure(self, **limits: Any) -> None:
        config = evolved(self.config, {"limits": {"streams": 10, **limits}})
        self.parts = Parts(self.clock, config)
        self.hub = self.parts.hub
        self.stub = StubTreq(self.parts.resource)

    @property
    def counts(self) -> dict[str, int]:
        sse = getChildForRequest(self.parts.resource, DummyRequest([b"sse", b"x"]))
        assert isinstance(sse, SSEResource)
        return sse.streams_by_address

    def request_from(self, address: str, user_id: str) -> DummyRequest:
        """A stream request for C{user_id} from the client C{address}, rendered."""
        request = DummyRequest([b"sse", user_id.encode()])
        request.client = IPv4Address("TCP", address, 40000)
        sse = getChildForRequest(self.parts.resource, request)
        self.assertIs(sse.render(request), NOT_DONE_YET)
        return request

    def open_from(self, address: str, user_id: str) -> DummyRequest:
        request = self.request_from(address, user_id)
        self.assertFalse(request.finished)
        self.assertEqual(self.events([b"".join(request.written)])[0]["event"], "connect")
        return request

    def turned_away_from(self, address: str, user_id: str) -> int:
        """The request ends at once with only a retry: (ms, returned)."""
        request = self.request_from(address, user_id)
        self.assertTrue(request.finished)
        (frame,) = parse_frames(b"".join(request.written))
        return int(frame["retry"])

    def test_one_address_cannot_take_every_stream(self) -> None:
        """
        Past streamsPerAddress, a stream from that address (for any user)
        gets 200, a long retry and the end, counted and logged naming the
        key; another address still opens.
        """
        self.open_from("10.0.0.1", "u1")
        self.open_from("10.0.0.1", "u2")
        self.assertTrue(30_000 <= self.turned_away_from("10.0.0.1", "u3") <= 60_000)
        self.open_from("10.0.0.2", "u3")
        self.assertEqual(self.hub.stream_count, 3)
        self.assertEqual(self.counts, {"10.0.0.1": 2, "10.0.0.2": 1})
        self.assertEqual(self.parts.stats.refused, {"address-limit": 1})
        [line] = [formatEvent(e) for e in self.observer if "turned away" in e["log_format"]]
        self.assertIn("for u3 from 10.0.0.1: the address has limits.streamsPerAddress", line)

    def test_the_count_follows_the_streams(self) -> None:
        """A stream that goes frees its place; an address with none left has no entry."""
        first = self.open_from("10.0.0.1", "u1")
        self.open_from("10.0.0.1", "u2")
        first.processingFailed(Failure(ConnectionDone()))  # the client left
        self.assertEqual(self.counts, {"10.0.0.1": 1})
        self.open_from("10.0.0.1", "u3")
        self.turned_away_from("10.0.0.1", "u4")
        self.hub.close_all()  # the server ends them
        self.assertEqual(self.counts, {})
        self.open_from("10.0.0.1", "u5")
        self.hub.drain(0, 3000)
        self.assertEqual(self.counts, {})
        self.assertEqual(self.hub.stream_count, 0)

    def test_null_is_no_cap(self) -> None:
        """streamsPerAddress null: one address may open up to the other caps, uncounted."""
        self.configure(streams_per_address=None)
        for n in range(5):
            self.open_from("10.0.0.1", f"u{n}")
        self.assertEqual(self.hub.stream_count, 5)
        self.assertEqual(self.counts, {})

    def test_behind_a_trusted_proxy_the_client_counts(self) -> None:
        """Behind a trusted proxy each client X-Forwarded-For names has its own count."""
        config = evolved(
            self.config,
            {
                "limits": {"streams": 10, "streams_per_address": 1},
                "server": {"trusted_proxies": (ip_network("127.0.0.1/32"),)},
            },
        )
        guard = auth.Guard.from_config(config)
        parts = Parts(self.clock, config, guard=guard)
        site = server.Site(parts.resource, reactor=self.clock)
        site.requestFactory = StockRequest
        site.guard = guard  # type: ignore[attr-defined]

        def get(user_id: str, client: str) -> bytes:
            """A stream request through the proxy on 127.0.0.1 for C{client}."""
            proxy = IPv4Address("TCP", "127.0.0.1", 40000)
            channel = site.buildProtocol(proxy)
            transport = StringTransport(peerAddress=proxy)
            channel.makeConnection(transport)
            self.addCleanup(channel.connectionLost, Failure(ConnectionDone()))
            channel.dataReceived(
                b"GET /sse/%s HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: %s\r\n\r\n"
                % (user_id.encode(), client.encode())
            )
            return bytes(transport.value())

        self.assertIn(b"event: connect", get("u1", "10.1.0.1"))
        self.assertIn(b"event: connect", get("u2", "10.1.0.2"))
        refused = get("u3", "10.1.0.1")
        self.assertNotIn(b"event: connect", refused)
        self.assertIn(b"retry: ", refused)
        self.assertEqual(parts.hub.stream_count, 2)
        self.assertEqual(parts.stats.refused, {"address-limit": 1})


class LaterReplayTests(WebCase):
    """
    Streams whose replay the broker answers later (cluster mode) are
    admitted when it does: the caps and the drain count then, not only
    when the request came.
    """

    def setUp(self) -> None:
        super().setUp()
        self.build(streams_per_user=2, streams=3)
        self.addCleanup(self.stub.flush)
        self.observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def build(self, **limits: Any) -> None:
        config = evolved(self.config, {"limits": limits})
        self.parts = Parts(self.clock, config)
        self.hub = self.parts.hub
        self.broker = LaterBroker(self.parts.broker)
        self.sse = SSEResource(
            self.hub,
            self.broker,
            config.sse,
            self.clock,
            self.parts.stats,
            guard=auth.Guard.from_config(config),
            limits=config.limits,
        )
        resource = build_resource(self.hub, self.broker, self.parts.stats, config, self.clock)
        resource.putChild(b"sse", self.sse)
        self.stub = StubTreq(resource)

    def reconnect(self, user_id: str) -> Deferred[Any]:
        """A stream request with a last event id; its response once the replay is answered."""
        d = self.stub.get(f"http://n.example/sse/{user_id}", headers={"Last-Event-ID": "1-0"})
        self.stub.flush()
        return d

    def read(self, response: Deferred[Any]) -> tuple[bool, list[bytes]]:
        """Whether the response has ended, and what it has sent."""
        chunks: list[bytes] = []
        done = self.stub.collect(self.successResultOf(response), chunks.append)
        self.stub.flush()
        return done.called, chunks

    def test_caps_count_when_the_replay_is_ready(self) -> None:
        """Three reconnects of one user waiting for their replay: two attach, one is turned away."""
        waiting = [self.reconnect("u1") for _ in range(3)]
        self.assertEqual(self.hub.stream_count, 0)
        self.broker.answer_replays()
        self.stub.flush()
        self.assertEqual(self.hub.count_of("u1"), 2)
        read = [self.read(response) for response in waiting]
        ended = [chunks for done, chunks in read if done]
        self.assertEqual(len(ended), 1)
        [frame] = parse_frames(b"".join(ended[0]))
        self.assertTrue(30_000 <= int(frame["retry"]) <= 60_000)
        self.assertEqual(self.parts.stats.refused, {"user-limit": 1})
        closed = [e for e in self.observer if "closed by" in e.get("log_format", "")]
        self.assertEqual(closed, [])  # it never opened

    def test_address_cap_counts_when_the_replay_is_ready(self) -> None:
        """
        Three reconnects from one address waiting for their replay, with
        streamsPerAddress 2: two attach, one is turned away; a stream that
        left before its replay is not counted.
        """
        self.build(streams_per_user=20, streams=100, streams_per_address=2)
        left = DummyRequest([b"u-left"])
        left.client = IPv4Address("TCP", "127.0.0.1", 40000)
        left.requestHeaders.setRawHeaders(b"last-event-id", [b"1-0"])
        self.assertIs(self.sse.render(left), NOT_DONE_YET)
        self.assertEqual((len(self.broker.replays), left.written), (1, []))  # waiting
        left.processingFailed(Failure(ConnectionDone()))  # before its replay
        waiting = [self.reconnect(f"u{n}") for n in range(3)]
        self.broker.answer_replays()
        self.stub.flush()
        self.assertEqual(self.hub.stream_count, 2)
        self.assertEqual(self.sse.streams_by_address, {"127.0.0.1": 2})
        ended = [chunks for done, chunks in map(self.read, waiting) if done]
        self.assertEqual(len(ended), 1)
        [frame] = parse_frames(b"".join(ended[0]))
        self.assertTrue(30_000 <= int(frame["retry"]) <= 60_000)
        self.assertEqual(self.parts.stats.refused, {"address-limit": 1})

    def test_drain_counts_when_the_replay_is_ready(self) -> None:
        """A reconnect whose replay is ready after the drain began is turned away with a retry."""
        response = self.reconnect("u1")
        self.hub.drain(0, 3000)
        self.broker.answer_replays()
        self.stub.flush()
        done, chunks = self.read(response)
        self.assertTrue(done)
        [frame] = parse_frames(b"".join(chunks))
        self.assertIn("retry", frame)
        self.assertEqual(self.hub.stream_count, 0)
        self.assertEqual(self.parts.stats.refused, {"draining": 1})


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


class MonitorGuardTests(WebCase):
    def test_monitor_allow(self) -> None:
        """/, /users and /metrics answer monitor.allow only; /health and the script stay open."""
        config = evolved(self.config, {"monitor": {"allow": (ip_network("10.0.0.0/8"),)}})
        self.stub = StubTreq(Parts(self.clock, config).resource)
        for path in ["/users", "/metrics"]:
            response = self.successResultOf(self.stub.get("http://n.example" + path))
            self.assertEqual(response.code, 403, path)
            body = json.loads(self.successResultOf(response.content()))
            self.assertEqual(body, {"error": "address not allowed"})
        # The page is not an API path: its refusal is text.
        response = self.successResultOf(self.stub.get("http://n.example/"))
        self.assertEqual(response.code, 403)
        self.assertEqual(self.successResultOf(response.content()), b"address not allowed\n")
        response = self.successResultOf(self.stub.head("http://n.example/users"))
        self.assertEqual((response.code, self.successResultOf(response.content())), (403, b""))
        for path in ["/health", "/javascripts/eventSourceClient.js"]:
            response = self.successResultOf(self.stub.get("http://n.example" + path))
            self.assertEqual(response.code, 200, path)
            self.successResultOf(response.content())


class SignatureTests(WebCase):
    SECRET = "k8Vq2-notificator-example-secret"

    def setUp(self) -> None:
        super().setUp()
        config = evolved(self.config, {"sse": {"auth": {"secret": self.SECRET}}})
        self.parts = Parts(self.clock, config)
        self.hub = self.parts.hub
        self.stub = StubTreq(self.parts.resource)

    def refused(self, path: str, **kwargs: Any) -> tuple[int, bytes]:
        response = self.successResultOf(self.stub.get("http://n.example" + path, **kwargs))
        return response.code, self.successResultOf(response.content())

    def test_valid_forged_expired(self) -> None:
        """A signature for the user opens it; another user's, a forged or an expired one: 401 with why."""
        now = int(self.clock.seconds())
        good = auth.sign_stream(self.SECRET, "홍길동_01", now + 3600)
        path = "/sse/%ED%99%8D%EA%B8%B8%EB%8F%99_01"
        for query, reason in [
            ("", "missing signature"),
            ("?auth=abc", "malformed signature"),
            (
                f"?auth={auth.sign_stream('another-secret-0123456789', '홍길동_01', now + 60)}",
                "bad signature",
            ),
            (f"?auth={auth.sign_stream(self.SECRET, '홍길동_02', now + 60)}", "bad signature"),
            (f"?auth={auth.sign_stream(self.SECRET, '홍길동_01', now - 1)}", "expired signature"),
        ]:
            code, body = self.refused(path + query)
            self.assertEqual((code, json.loads(body)), (401, {"error": reason}), query)
        self.assertEqual(self.hub.stream_count, 0)
        self.open(f"{path}?auth={good}")
        self.open(path, cookies={"notificatorAuth": good})
        self.assertEqual(self.hub.stream_count, 2)


class LaterBroker:
    """
    A broker that answers later, as the cluster's does: each publish gives
    a Deferred that the test fires with the local broker's outcome, or
    fails.
    """

    def __init__(self, local: Any) -> None:
        self.local = local
        self.pending: list[tuple[Any, Deferred[Any]]] = []
        self.replays: list[tuple[Deferred[Any], Deferred[Any]]] = []

    def replay(self, user_id: str, last_event_id: str) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.replays.append((self.local.replay(user_id, last_event_id), d))
        return d

    def answer_replays(self) -> None:
        """Answer every pending replay with the local broker's answer."""
        replays, self.replays = self.replays, []
        for local, d in replays:
            local.chainDeferred(d)

    def publish(self, message: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.pending.append((message, d))
        return d

    def __getattr__(self, name: str) -> Any:
        return getattr(self.local, name)

    def record(self) -> Deferred[Any]:
        """Record and deliver the oldest pending publish through the local broker."""
        message, d = self.pending.pop(0)
        published = self.local.publish(message)
        d.callback(attrs.evolve(published, nodes=2))
        return d


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


class ClientScriptTests(WebCase):
    def test_client_script_is_served(self) -> None:
        """The groupware script is served as UTF-8 JavaScript, revalidated on every load."""
        url = "http://n.example/javascripts/eventSourceClient.js"
        response = self.successResultOf(self.stub.get(url))
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders(b"content-type"), [b"text/javascript; charset=utf-8"]
        )
        self.assertEqual(response.headers.getRawHeaders(b"cache-control"), [b"no-cache"])
        body = self.successResultOf(self.stub.content(response))
        self.assertEqual(body, assets.static_file("eventSourceClient.js"))
        etag = response.headers.getRawHeaders(b"etag")[0]
        again = self.successResultOf(self.stub.get(url, headers={b"if-none-match": [etag]}))
        self.assertEqual(again.code, 304)

    def test_client_script_is_ascii(self) -> None:
        """The groupware script is pure ASCII, so a page in any charset loads it unchanged."""
        assets.static_file("eventSourceClient.js").decode("ascii")


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


class UntrustedProxyTests(BothChannels, SynchronousTestCase):
    """
    A request that carries X-Forwarded-For or Forwarded from a peer that is
    not in server.trustedProxies (none, by default) has an unknown client:
    the loopback peer, in publish.allow and monitor.allow, cannot publish or
    look through such a proxy; streams still open, marked unknown.  Over the
    site as makeService wires it (its guard, the publish gate), on both
    channels.
    """

    SPOOFS = [
        b"X-Forwarded-For: 127.0.0.1\r\n",
        b"X-Forwarded-For: \r\n",
        b"X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 127.0.0.1\r\n",
        b"Forwarded: for=127.0.0.1\r\n",
        b'Forwarded: for="[::1]";proto=http\r\n',
    ]

    def setUp(self) -> None:
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.s = s = self.server()
        guard = auth.Guard.from_config(s.config)
        s.site.guard = guard  # type: ignore[attr-defined]
        s.site.publish_gate = PublishGate(  # type: ignore[attr-defined]
            guard, s.stats, Logger(observer=s.events.append)
        )

    def exchange(self, raw: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
        c = self.s.connect()
        c.receive(raw)
        self.s.reactor.advance(0)
        c.pump()
        return split_response(c.text())

    def test_publish_refused_before_the_body(self) -> None:
        """403 JSON naming server.trustedProxies, before the body is read; a log line with the peer."""
        for spoof in self.SPOOFS:
            status, _, body = self.exchange(
                b"POST /webNotification HTTP/1.1\r\nHost: t\r\n" + spoof + b"Content-Type:"
                b" application/x-www-form-urlencoded\r\nContent-Length: 67108864\r\n\r\n"
            )
            self.assertEqual(status, b"HTTP/1.1 403 Forbidden", spoof)
            self.assertEqual(json.loads(body), {"error": auth.UNTRUSTED_PROXY})
        refused = self.s.logged("refused publish from")
        self.assertEqual(len(refused), len(self.SPOOFS))
        for event in refused:
            self.assertEqual(event["peer"], "unknown via 127.0.0.1")
            self.assertEqual(event["reason"], auth.UNTRUSTED_PROXY)
            self.assertIn("server.trustedProxies", formatEvent(event))
        self.assertEqual((self.s.stats.published, self.s.stats.rejected), (0, {403: 5}))
        # Without the headers, the same peer publishes.
        body = b"id=notify_u1&data=1"
        status, _, _ = self.exchange(
            b"POST /webNotification HTTP/1.1\r\nHost: t\r\nContent-Type:"
            b" application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        self.assertEqual(status, b"HTTP/1.1 200 OK")

    def test_monitor_refused_health_open(self) -> None:
        """/, /users and /metrics: 403; /health and the scripts: 200."""
        for spoof in self.SPOOFS:
            for path in (b"/users", b"/metrics", b"/"):
                status, _, body = self.exchange(
                    b"GET " + path + b" HTTP/1.1\r\nHost: t\r\n" + spoof + b"\r\n"
                )
                self.assertEqual(status, b"HTTP/1.1 403 Forbidden", (path, spoof))
                self.assertIn(auth.UNTRUSTED_PROXY.encode(), body)
            for path in (
                b"/health",
                b"/javascripts/eventSourceClient.js",
                b"/static/monitor.js",
            ):
                status, _, _ = self.exchange(
                    b"GET " + path + b" HTTP/1.1\r\nHost: t\r\n" + spoof + b"\r\n"
                )
                self.assertEqual(status, b"HTTP/1.1 200 OK", (path, spoof))
        refused = [e for e in self.events if e.get("log_format", "").startswith("refused {method}")]
        self.assertEqual(len(refused), 3 * len(self.SPOOFS))
        self.assertEqual({e["peer"] for e in refused}, {"unknown via 127.0.0.1"})
        self.assertIn("server.trustedProxies", formatEvent(refused[0]))
        status, _, _ = self.exchange(b"GET /users HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertEqual(status, b"HTTP/1.1 200 OK")

    def test_stream_opens_marked_unknown(self) -> None:
        """A stream through an untrusted proxy opens; the log and the monitor show its client unknown, with the peer."""
        c = self.s.connect()
        c.receive(b"GET /sse/u1 HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 10.1.2.3\r\n\r\n")
        self.s.reactor.advance(0)
        c.pump()
        status, _, body = split_response(c.text())
        self.assertEqual(status, b"HTTP/1.1 200 OK")
        self.assertEqual(parse_frames(dechunk(body))[1]["event"], "connect")
        [opened] = [e for e in self.events if "opened for" in e.get("log_format", "")]
        self.assertEqual(opened["peer"], "unknown via 127.0.0.1")
        status, _, body = self.exchange(b"GET /users HTTP/1.1\r\nHost: t\r\n\r\n")
        [user] = json.loads(body)["users"]
        self.assertEqual(user["remoteAddresses"], ["unknown via 127.0.0.1"])

    def test_no_header_work_without_headers(self) -> None:
        """A request with neither header has the peer as its client, and no guard is asked."""
        asked: list[object] = []

        class Spy(auth.Guard):
            def client_address(self, *args: Any) -> str:
                asked.append(args)
                return auth.Guard.client_address(self, *args)

        spy = Spy((), (), stream_cookie="a")
        self.s.site.guard = spy  # type: ignore[attr-defined]
        self.assertEqual(self.exchange(b"GET /users HTTP/1.1\r\nHost: t\r\n\r\n")[0][9:12], b"200")
        self.assertEqual(asked, [])
        status = self.exchange(b"GET /users HTTP/1.1\r\nHost: t\r\nForwarded: for=x\r\n\r\n")[0]
        self.assertEqual(status[9:12], b"403")
        self.assertEqual(asked, [("127.0.0.1", None, [b"for=x"])])


class UntrustedProxyStockTests(UntrustedProxyTests):
    fast = False


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

        return InMemoryServer(self, self.fast, config=config, gate=True)

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
