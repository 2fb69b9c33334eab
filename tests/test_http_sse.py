"""
Tests for L{notificator.http.sse} over in-memory HTTP (treq's StubTreq): the
SSE stream, its CORS headers, replays and caps.
"""

from __future__ import annotations

import json
from ipaddress import ip_network
from typing import Any

import attrs
from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import getChildForRequest
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from notificator import auth
from notificator.broker import Unavailable
from notificator.config import Config
from notificator.cors import CORSPolicy
from notificator.http.site import Site
from notificator.http.sse import MAX_LAST_EVENT_ID, SSEResource, connect_data
from notificator.http.tree import build_resource
from tests.support import (
    Parts,
    config_with,
    evolved,
    parse_frames,
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


class ConnectIdTests(WebCase):
    """
    The C{connect} event carries an C{id:}, where the stream stands in the
    server's event ids, so that a browser that has received nothing else
    sends it back as C{Last-Event-ID} and is replayed what it missed.
    """

    def test_head_and_connect_bytes(self) -> None:
        """
        Before any notification the id is the history's start; after one,
        its id.  The retry, the connect's data and the frame's shape are as
        before: only the id line is new.
        """
        _, chunks = self.open("/sse/u1")
        self.assertEqual(
            b"".join(chunks),
            b"retry: 5000\n\n"
            b"id: 1700000000000-0\nevent: connect\n"
            b'data: {"userId": "u1", "connectionId": 1, "time": 1700000000000}\n\n',
        )
        given = self.publish(b"id=notify_u2&data=1")[1]["eventId"]
        self.assertEqual(given, "1700000000000-1")  # after the position given before
        _, chunks = self.open("/sse/%ED%99%8D")
        self.assertEqual(
            b"".join(chunks),
            b"retry: 5000\n\n"
            b"id: 1700000000000-1\nevent: connect\n"
            + 'data: {"userId": "홍", "connectionId": 2, "time": 1700000000000}\n\n'.encode(),
        )

    def test_a_stream_that_got_nothing_is_replayed_what_it_missed_once(self) -> None:
        """
        A stream that received only its connect reconnects with the connect's
        id: it gets what was published for its user while it was away, once,
        and not what was published before it opened.
        """
        self.publish(b"id=notify_u1&data=0")
        response, chunks = self.open("/sse/u1")
        (connect,) = self.events(chunks)
        self.hub.close_all()
        self.stub.flush()
        missed = self.publish(b"id=notify_u1&data=1")[1]["eventId"]
        self.publish(b"id=notify_u2&data=2")
        _, chunks = self.open("/sse/u1", headers={"Last-Event-ID": connect["id"]})
        events = self.events(chunks)
        self.assertEqual(json.loads(events[0]["data"])["replay"], "complete")
        # Frames follow: the connect leaves the browser's last id alone.
        self.assertNotIn("id", events[0])
        self.assertEqual([(e["event"], e.get("id")) for e in events[1:]], [("notify", missed)])

    def test_a_reconnect_with_nothing_to_replay_moves_the_id_on(self) -> None:
        """A replay with no frame: the reconnect's connect carries the position now."""
        _, chunks = self.open("/sse/u1")
        (first,) = self.events(chunks)
        other = self.publish(b"id=notify_u2&data=1")[1]["eventId"]
        _, chunks = self.open("/sse/u1", headers={"Last-Event-ID": first["id"]})
        (connect,) = self.events(chunks)
        self.assertEqual(json.loads(connect["data"])["replay"], "complete")
        self.assertEqual(connect["id"], other)
        # Nor after a reset with nothing kept for the user (an id not ours).
        _, chunks = self.open("/sse/u1", headers={"Last-Event-ID": "abc"})
        connect, reset = self.events(chunks)
        self.assertEqual((reset["event"], connect["id"]), ("reset", other))

    def test_a_lagging_position_never_moves_the_id_back(self) -> None:
        """
        A complete replay with nothing to give, where the broker's position
        is behind the client's id (a cluster node whose channel is a moment
        behind the node that gave it): no id, the client's stays.  The
        same position ahead of the id moves it.
        """
        given = self.publish(b"id=notify_u1&data=1")[1]["eventId"]
        self.parts.broker.position = "1699999999999-0"
        _, chunks = self.open("/sse/u1", headers={"Last-Event-ID": given})
        (connect,) = self.events(chunks)
        self.assertEqual(json.loads(connect["data"])["replay"], "complete")
        self.assertNotIn("id", connect)
        self.parts.broker.position = "1700000000001-0"
        _, chunks = self.open("/sse/u1", headers={"Last-Event-ID": given})
        (connect,) = self.events(chunks)
        self.assertEqual(connect["id"], "1700000000001-0")

    def test_no_id_when_the_broker_has_no_position(self) -> None:
        """sse.history.size 0 (nothing to replay): the connect is as before, no id."""
        parts = Parts(self.clock, evolved(self.config, {"sse": {"history": {"size": 0}}}))
        self.stub = StubTreq(parts.resource)
        self.hub = parts.hub
        _, chunks = self.open("/sse/u1")
        self.assertEqual(
            b"".join(chunks),
            b"retry: 5000\n\nevent: connect\n"
            b'data: {"userId": "u1", "connectionId": 1, "time": 1700000000000}\n\n',
        )


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
        return sse.admission.streams_by_address

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
        parts = Parts(self.clock, config)
        guard = parts.core.guard
        site = Site(parts.resource, reactor=self.clock, guard=guard)

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

    def test_no_replay_leaves_the_last_id_alone(self) -> None:
        """
        The broker could not say what was missed (Redis down): the reset,
        and a connect without id, so the browser keeps its own and is
        replayed from it next time.
        """
        response = self.reconnect("u1")
        _, d = self.broker.replays.pop()
        d.errback(Unavailable("Redis unreachable"))
        self.stub.flush()
        _, chunks = self.read(response)
        connect, reset = self.events(chunks)
        self.assertEqual((connect["event"], reset["event"]), ("connect", "reset"))
        self.assertEqual(json.loads(reset["data"])["reason"], "unavailable")
        self.assertNotIn("id", connect)

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
        self.assertEqual(self.sse.admission.streams_by_address, {"127.0.0.1": 2})
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
