"""
Tests for L{notificator.http.refusals}: every request the resource tree cannot
serve gets a 4xx with a short reason (JSON on the API paths, text
elsewhere), never twisted.web's HTML pages, and one log line with the peer
and the reason: case by case, and fuzzed (L{FuzzTests}).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any
from urllib.parse import quote, unquote_to_bytes

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock, StringTransport
from twisted.logger import Logger, LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from notificator import tap
from notificator.app import build_core, build_site
from notificator.config import defaults
from notificator.http import refusals
from notificator.http.responses import allowed_methods
from notificator.hub import Hub
from notificator.services import SequentialService
from tests.support import PROJECT, Parts, write_config

sys.path.insert(0, os.path.join(PROJECT, "bench"))

import fuzz  # noqa: E402  (bench/fuzz.py: its answer parser and checks)

API = "application/json; charset=utf-8"
TEXT = "text/plain; charset=utf-8"

# (method, path, code, content type, Allow header or None)
CASES = [
    ("PUT", "/webNotification", 405, API, "OPTIONS, POST"),
    ("GET", "/webNotification", 405, API, "OPTIONS, POST"),
    ("DELETE", "/webNotification", 405, API, "OPTIONS, POST"),
    ("POST", "/webNotification/x", 404, API, None),
    ("DELETE", "/sse/u1", 405, API, "GET, HEAD, OPTIONS"),
    ("POST", "/sse", 405, API, "GET, HEAD, OPTIONS"),
    ("GET", "/sse/a/b", 404, API, None),
    ("GET", "/sse/%FF", 400, API, None),
    ("GET", "/sse", 401, API, None),
    ("POST", "/users", 405, API, "GET, HEAD"),
    ("GET", "/users/x", 404, API, None),
    ("PATCH", "/health", 405, API, "GET, HEAD"),
    ("GET", "/health/x/y", 404, API, None),
    ("DELETE", "/metrics", 405, API, "GET"),
    ("GET", "/metrics/x", 404, API, None),
    ("GET", "/nowhere", 404, TEXT, None),
    ("TRACE", "/", 405, TEXT, "GET, HEAD"),
    ("FOO", "/", 405, TEXT, "GET, HEAD"),
    ("GET", "/x/", 404, TEXT, None),
    ("GET", "/static", 404, TEXT, None),
    ("GET", "/static/", 404, TEXT, None),
    ("GET", "/static/nope.js", 404, TEXT, None),
    ("POST", "/static/monitor.js", 405, TEXT, "GET, HEAD"),
    ("GET", "/static/monitor.js/x", 404, TEXT, None),
    ("PUT", "/javascripts/eventSourceClient.js", 405, TEXT, "GET, HEAD"),
    ("GET", "/javascripts", 404, TEXT, None),
    ("DELETE", "/favicon.ico", 405, TEXT, "GET, HEAD"),
    ("GET", "/?x=1/..", 200, None, None),
]


class RefusalTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.activity: list[dict[str, Any]] = []
        self.parts = Parts(self.clock, defaults(), activity=Logger(observer=self.activity.append))
        self.stub = StubTreq(self.parts.resource)
        self.global_events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def request(self, method: str, path: str) -> tuple[Any, bytes]:
        response = self.successResultOf(self.stub.request(method, "http://127.0.0.1" + path))
        body = self.successResultOf(response.content())
        return response, body

    def test_each_refusal(self) -> None:
        """Each request the tree cannot serve: a 4xx, JSON or text, and one log line."""
        for method, path, code, content_type, allow in CASES:
            with self.subTest(method=method, path=path):
                del self.activity[:]
                response, body = self.request(method, path)
                self.assertEqual(response.code, code)
                if code == 200:
                    self.assertEqual(self.activity, [])
                    continue
                headers = response.headers
                self.assertEqual(headers.getRawHeaders("content-type"), [content_type])
                self.assertEqual(headers.getRawHeaders("allow"), None if allow is None else [allow])
                self.assertNotIn(b"<html", body.lower())
                if content_type == API:
                    reason = json.loads(body)["error"]
                else:
                    self.assertTrue(body.endswith(b"\n") and body.count(b"\n") == 1, body)
                    reason = body.decode("utf-8").strip()
                self.assertLess(len(reason), 100)
                (line,) = self.activity
                self.assertEqual(line["log_level"], LogLevel.warn)
                self.assertEqual((line["peer"], line["code"]), ("127.0.0.1", code))
                self.assertEqual(line["reason"], reason)
        # Nothing in twistd's log: no "Huh?", no "I think I'll eat it".
        self.assertEqual(list(self.global_events), [])

    def test_head_refusals_have_no_body(self) -> None:
        """A HEAD refusal has the GET answer's headers and length, and no body."""
        for path, code in [("/nowhere", 404), ("/users/x", 404), ("/webNotification", 405)]:
            with self.subTest(path=path):
                response, body = self.request("HEAD", path)
                self.assertEqual(response.code, code)
                self.assertEqual(body, b"")
                length = int(response.headers.getRawHeaders("content-length")[0])
                self.assertGreater(length, 0)
        self.assertEqual(list(self.global_events), [])

    def test_head_on_a_folder_is_404(self) -> None:
        """HEAD on a folder (no render_GET) is a 404, not twisted.web's AttributeError 500."""
        for path in ("/static", "/javascripts"):
            response, _ = self.request("HEAD", path)
            self.assertEqual(response.code, 404)
        self.assertEqual(list(self.global_events), [])

    def test_publish_refusals_are_counted(self) -> None:
        """Refused methods and paths of /webNotification count as rejected publishes."""
        self.request("PUT", "/webNotification")
        self.request("POST", "/webNotification/x")
        self.assertEqual(dict(self.parts.stats.rejected), {405: 1, 404: 1})
        self.assertEqual(
            [e["log_format"].split(" from")[0] for e in self.activity], ["rejected publish"] * 2
        )

    def test_stream_refusal_logs_no_signature(self) -> None:
        """A refused stream's log line cuts an auth query parameter to its expiry."""
        self.request("DELETE", "/sse/u1?auth=1767225600.secretsignature")
        (line,) = self.activity
        self.assertEqual(line["path"], "/sse/u1?auth=1767225600.*")

    def test_log_line_is_one_line(self) -> None:
        """A method with a line break (possible over HTTP/2) stays escaped in the log line."""
        from twisted.web.test.requesthelper import DummyRequest

        request = DummyRequest([b"x"])
        request.method = b"G\nET"
        resource = refusals.NotFound(Logger(observer=self.activity.append), as_json=True)
        self.assertEqual(request.method, b"G\nET")
        body = refusals.Resource.render(resource, request)
        self.assertEqual(request.responseCode, 405)
        self.assertIn("G\nET", json.loads(body)["error"])
        (line,) = self.activity
        self.assertNotIn("\n", line["reason"] + line["method"])

    def test_trailing_slash_is_served(self) -> None:
        """A trailing slash on a leaf is the leaf itself."""
        for path in ("/users/", "/health/"):
            response, _ = self.request("GET", path)
            self.assertEqual(response.code, 200, path)

    def test_allowed_methods(self) -> None:
        """Allow lists the render_ methods the resource has; HEAD only where defined."""

        class Thing(refusals.Resource):
            def render_GET(self, request: object) -> bytes:
                return b""

            def render_POST(self, request: object) -> bytes:
                return b""

        self.assertEqual(allowed_methods(Thing()), [b"GET", b"POST"])
        self.assertEqual(allowed_methods(refusals.NotFound()), [])


# -- fuzzing ---------------------------------------------------------------------

#: Examples per hypothesis test: a few seconds each.
FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
API_SEGMENTS = {b"webNotification", b"sse", b"users", b"health", b"metrics"}
PEER = IPv4Address("TCP", "127.0.0.1", 40000)
WATCH = fuzz.WATCH_USER.encode()


class WholeServer:
    """
    The server's core and site as C{makeService} builds them
    (L{notificator.app.build_core}, L{notificator.app.build_site}, from a
    configuration read as twistd reads it) on a L{MemoryReactorClock},
    with a stream for L{WATCH} open, and every log event it emits
    collected: the global ones in C{events}, the per-request lines (what
    C{sse.log} reads) in C{activity}.
    """

    def __init__(self, testcase: SynchronousTestCase) -> None:
        self.testcase = testcase
        base = os.path.abspath(testcase.mktemp())
        conf = write_config(
            os.path.join(base, "conf"),
            {
                "default": {
                    "server": {
                        "log": {"dir": os.path.join(base, "log"), "level": "debug"},
                        # X-Forwarded-For decides who publishes (403 early).
                        "trustedProxies": ["127.0.0.1/32"],
                    },
                    "sse": {"history": {"dir": None}, "drainSeconds": 0.1},
                },
                "fuzz": {},
            },
        )
        opts = tap.Options()
        opts.parseOptions(["--config", conf, "--env", "fuzz", "--listen", "tcp:0"])
        cfg = opts["loaded"]
        self.reactor = MemoryReactorClock()
        self.reactor.advance(1_800_000_000)
        self.events: list[dict[str, Any]] = []
        self.activity: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        testcase.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        core = build_core(cfg, self.reactor)
        self.hub: Hub = core.hub
        self.root = SequentialService()
        for service in core.services:
            service.setServiceParent(self.root)
        activity = Logger("notificator.web", observer=self.activity.append)
        self.site = build_site(core, cfg, self.reactor, activity, self.root)
        self.root.startService()
        testcase.addCleanup(self.stop)
        self.watcher, self.watching = self.connect()
        self.watcher.dataReceived(b"GET /sse/" + WATCH + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        self.reactor.advance(0)
        assert b"event: connect" in self.watching.value()
        self.probes = 0

    def connect(self) -> tuple[Any, StringTransport]:
        protocol = self.site.buildProtocol(PEER)
        transport = StringTransport(
            peerAddress=PEER, hostAddress=IPv4Address("TCP", "127.0.0.1", 3000)
        )
        protocol.makeConnection(transport)
        return protocol, transport

    def exchange(self, raw: bytes) -> tuple[list[fuzz.Response], bool]:
        """Send C{raw} on a new connection; the answers and whether the server closed."""
        protocol, transport = self.connect()
        protocol.dataReceived(raw)
        self.reactor.advance(0)
        sent = transport.value()
        closing = bool(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.reactor.advance(0)
        try:
            responses, _ = fuzz.parse_responses(sent)
        except fuzz.Unparsable as e:
            self.testcase.fail(f"unparsable answer {e.args[0]!r} to {raw[:300]!r}")
        return responses, closing

    def probe(self) -> None:
        """A notification for the watcher reaches it."""
        self.probes += 1
        data = b'{"probe": %d}' % self.probes
        body = b"id=" + fuzz.PROBE_EVENT.encode() + b"_" + WATCH + b"&data=" + quote(data).encode()
        responses, _ = self.exchange(
            b"POST /webNotification HTTP/1.1\r\nHost: t\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        self.testcase.assertEqual([r.code for r in responses], [200])
        self.testcase.assertIn(b"data: " + data + b"\n", self.watching.value())

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.connectionLost(Failure(ConnectionDone()))
            self.watcher = None
        self.root.stopService()
        self.reactor.advance(1)


def _no_problems(
    testcase: SynchronousTestCase, server: WholeServer, streams_before: int, why: str
) -> None:
    """No exception or error logged, nothing left open, and the watcher still receives."""
    problems = [
        e
        for e in server.events + server.activity
        if "log_failure" in e or e["log_level"] >= LogLevel.error
    ]
    testcase.assertEqual(problems, [], why)
    testcase.assertEqual(server.hub.stream_count, streams_before, why)
    server.probe()


def check(
    testcase: SynchronousTestCase, server: WholeServer, raw: bytes, complete: bool = False
) -> None:
    """
    Send C{raw} and check everything issue #11 asks of the answer, the
    logs and the other clients.

    @param complete: C{raw} is a whole request, which must be answered;
        else it must be when L{fuzz.expects_answer} says so.
    """
    del server.events[:], server.activity[:]
    streams_before = server.hub.stream_count
    responses, closing = server.exchange(raw)
    why = f"request {raw[:400]!r}"
    if complete or fuzz.expects_answer(raw):
        testcase.assertTrue(responses, "no answer to " + why)
    testcase.assertEqual(fuzz.check_responses(responses), [], why)
    refusals = 0
    for r in responses:
        if r.bare:
            testcase.assertEqual(r.code, 400, why)
            testcase.assertTrue(closing, "a bare 400 without a close: " + why)
        elif r.code >= 400:
            refusals += 1
            if _api(raw) and not r.headless:
                testcase.assertTrue(
                    (r.header(b"content-type") or b"").startswith(b"application/json"), why
                )
                testcase.assertIsInstance(json.loads(r.body)["error"], str, why)
    # One log line per refusal, none of them an error, and no traceback.
    warnings = [e for e in server.activity if e["log_level"] >= LogLevel.warn]
    testcase.assertEqual(len(warnings), refusals, f"{why}: {warnings}")
    _no_problems(testcase, server, streams_before, why)


def _api(raw: bytes) -> bool:
    """Whether the first request in C{raw} is for an API path (first path segment)."""
    line = raw.split(b"\r\n", 1)[0].split(b" ")
    if len(line) < 2 or not line[1].startswith(b"/"):
        return False
    first = line[1].split(b"?", 1)[0].split(b"/")[1]
    return unquote_to_bytes(first) in API_SEGMENTS


# -- strategies --------------------------------------------------------------------

_text = st.text(max_size=40)
_printable = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)


def _pct(data: bytes | str) -> str:
    return quote(data, safe="")


def _clean(value: bytes) -> bytes:
    return value.replace(b"\r", b"").replace(b"\n", b"").replace(b"\0", b"")


#: A header value twisted.web accepts (no CR, LF or NUL), now and then one it refuses.
header_value = st.one_of(
    st.binary(max_size=80).map(_clean),
    _text.map(lambda t: _clean(t.encode("utf-8"))),
    _printable.map(str.encode),
    st.sampled_from([b"", b" ", b"x" * 9000, b"\xff\xfe", b"a\x00b"]),
)

charset = st.one_of(
    st.sampled_from(fuzz.CHARSETS),
    st.sampled_from(["UTF-8", "EUC-KR", "UTF-16", "utf-16-be", "cp949", "johab", "iso2022_kr"]),
    # Python codecs that are not text encodings, or fail in their own way.
    st.sampled_from(["base64", "rot13", "zlib", "hex", "bz2", "quopri", "uu", "punycode", "idna"]),
    _printable,
)

good_content_type = st.sampled_from(
    [
        "application/x-www-form-urlencoded; charset=UTF-8",
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded; charset=EUC-KR",
        "application/json",
        "application/json; charset=utf-16",
    ]
)

content_type = st.one_of(
    *[good_content_type] * 5,
    *[st.tuples(st.sampled_from([FORM, JSON]), charset).map("; charset=".join)] * 3,
    st.none(),
    st.tuples(st.sampled_from(fuzz.MEDIA), st.one_of(st.none(), charset)).map(
        lambda mc: mc[0] + ("" if mc[1] is None else "; charset=" + mc[1])
    ),
    st.sampled_from(
        [
            "application/x-www-form-urlencoded; charset=utf-8; charset=euc-kr",
            'application/json; charset="utf-16"',
            "application/json; charset=",
            "application/json; charset*=utf-8''x",
            "application/x-www-form-urlencoded;charset=EUC-KR;boundary=x",
            "application/x-www-form-urlencoded; CHARSET=EUC-KR",
        ]
    ),
    _printable,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

good_user = st.text(st.characters(blacklist_categories=["Cc", "Cs"]), min_size=1, max_size=30)
good_ident = st.tuples(st.sampled_from(["notify", "appr", "mail.new-2", "a"]), good_user).map(
    "_".join
)
ident = st.one_of(
    good_ident,
    good_ident,
    st.tuples(st.sampled_from(["x" * 65, "bad event", "", "a\nb"]), _text).map("_".join),
    _text,
    st.just(fuzz.PROBE_EVENT + "_" + fuzz.WATCH_USER),
)


def _encode(text: str, name: str | None) -> bytes:
    try:
        return text.encode(name or "utf-8")
    except (LookupError, UnicodeError, ValueError):
        return text.encode("utf-8", "surrogatepass")


@st.composite
def publish_body(draw: Any, content_type_value: str | None) -> bytes:
    """A body in one of the three forms (or junk), in the content type's charset where it has one."""
    name = None
    if content_type_value and "charset=" in content_type_value:
        name = content_type_value.split("charset=", 1)[1].split(";")[0].strip().strip('"')
    form = draw(st.sampled_from([0, 1, 1, 1, 2, 3, 3, 4]))
    the_id = draw(ident)
    data = draw(json_values)
    if form == 0:
        return draw(st.binary(max_size=400))
    if form == 1:
        data_text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
        fields = [
            "id=" + _pct(_encode(the_id, name)),
            "data=" + draw(st.sampled_from([_pct(_encode(data_text, name)), data_text])),
        ]
        fields += draw(
            st.lists(
                st.sampled_from(["token=x", "=", "&", "id=", "data", "%", "a=%ZZ"]), max_size=3
            )
        )
        return "&".join(draw(st.permutations(fields))).encode("utf-8", "surrogatepass")
    obj: Any = {"id": the_id, "data": data}
    if draw(st.booleans()):
        obj = draw(st.one_of(json_values, st.just({"id": the_id, "token": 5})))
    text = json.dumps(obj, ensure_ascii=draw(st.booleans()))
    if form == 2:
        return _encode(text, name) + b"="
    if form == 3:
        return _encode(text, name)
    return draw(
        st.sampled_from(
            [b"[" * 5000, b'{"id":"a_b","data":' + b"[" * 3000 + b"}", b"\xef\xbb\xbf{}"]
        )
    )


def _head(
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    length: bool = True,
) -> bytes:
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: t"]
    lines += [name + b": " + value for name, value in headers]
    if length:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


extra_headers = st.lists(
    st.tuples(
        st.sampled_from(
            [
                b"Authorization",
                b"X-Forwarded-For",
                b"Origin",
                b"Accept",
                b"Cookie",
                b"Expect",
                b"X-Any",
                b"Connection",
            ]
        ),
        header_value,
    )
    | st.tuples(st.just(b"X-Forwarded-For"), st.sampled_from(fuzz.FORWARDED)),
    max_size=3,
)


@st.composite
def publish_request(draw: Any) -> bytes:
    method = draw(
        st.sampled_from([b"POST"] * 12 + [b"GET", b"HEAD", b"PUT", b"OPTIONS", b"DELETE", b"PATCH"])
    )
    target = draw(
        st.sampled_from(
            [b"/webNotification"] * 12
            + [
                b"/webNotification/",
                b"/webNotification/x",
                b"/%77ebNotification",
                b"/webNotification?id=a_b",
                b"/webNotification/..",
                b"/webNotification;x",
            ]
        )
    )
    ctype = draw(content_type)
    body = draw(publish_body(ctype))
    headers = [] if ctype is None else [(b"Content-Type", ctype.encode("utf-8", "surrogatepass"))]
    headers += draw(extra_headers)
    return _head(method, target, headers, body)


user_path = st.one_of(
    _text.map(_pct),
    st.binary(max_size=40).map(_pct),
    st.sampled_from(fuzz.RAW_USER_PATHS),
    st.integers(0, 6000).map(lambda n: "a" * n),
    st.sampled_from(["..", "%2E%2E", "a/..", "../sse/x", "%C0%AE%C0%AE/x", "a%00b", "a%0D%0Ab"]),
)

query = st.lists(
    st.tuples(
        st.one_of(st.sampled_from(fuzz.QUERY_NAMES), _text.map(_pct)),
        st.one_of(st.sampled_from(fuzz.QUERY_VALUES), _text.map(_pct), st.integers().map(str)),
    ),
    max_size=5,
).map(lambda items: "&".join(f"{k}={v}" for k, v in items))

cookie = st.one_of(
    st.tuples(st.sampled_from(["userID", "notificatorAuth", "x", ""]), header_value).map(
        lambda nv: nv[0].encode() + b"=" + nv[1]
    ),
    st.sampled_from(
        [b"userID=u1; userID=u2", b'userID="%ED%99%8D"', b";;", b"userID", b"userID=%"]
    ),
)

last_event_id = st.one_of(
    st.sampled_from(fuzz.EVENT_IDS).map(lambda s: s.encode("utf-8")), header_value
)


@st.composite
def stream_request(draw: Any) -> bytes:
    method = draw(
        st.sampled_from([b"GET"] * 8 + [b"HEAD", b"OPTIONS", b"POST", b"DELETE", b"TRACE"])
    )
    path = draw(st.sampled_from(["/sse", "/sse/", "/sse/", "/sse/", "/%73se/", "/sse/a/"]))
    if path.endswith("/"):
        path += draw(user_path)
    q = draw(query)
    if q:
        path += "?" + q
    headers = [(b"Accept", b"text/event-stream")]
    if draw(st.booleans()):
        headers.append((b"Cookie", draw(cookie)))
    if draw(st.booleans()):
        headers.append((b"Last-Event-ID", draw(last_event_id)))
    headers += draw(extra_headers)
    return _head(method, path.encode("utf-8", "surrogatepass"), headers, b"", length=False)


@st.composite
def mutated(draw: Any) -> bytes:
    """A request from either strategy, changed byte by byte."""
    data = bytearray(draw(st.one_of(publish_request(), stream_request())))
    for _ in range(draw(st.integers(1, 3))):
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        op = draw(st.integers(0, 4))
        if op == 0:
            data[i] = draw(st.integers(0, 255))
        elif op == 1:
            data[i:i] = draw(
                st.sampled_from([b"\r\n", b"\n", b"\r", b"\x00", b" ", b"%", b"\xc0\xaf", b":"])
            )
        elif op == 2:
            del data[i : i + draw(st.integers(1, 8))]
        elif op == 3:
            data[i:i] = data[i : i + draw(st.integers(1, 16))]
        else:
            data[i] ^= 1 << draw(st.integers(0, 7))
    return bytes(data)


class FuzzTests(SynchronousTestCase):
    """
    Fuzzing C{/webNotification} and C{/sse}, hypothesis-driven with a
    bounded budget, over the server as C{makeService} builds it (site,
    channel, request class, resource tree, logs) on a memory reactor, fed
    raw bytes through in-memory connections: random and mutated bodies,
    headers, content types and charsets, query strings, paths, cookies,
    Last-Event-ID and the polyfills' query parameters.  Every answer is a
    2xx or a 4xx (or an open stream, or twisted.web's bare 400 and a
    close), a 4xx on the API paths is JSON with an C{error}, each refusal
    is one log line, no exception is logged, no stream is left behind, and
    a subscriber opened before keeps receiving a probe published after
    each request.  The answers are read and checked by C{bench/fuzz.py}'s
    own parser (L{tests.test_bench} tests it, and runs it over sockets).
    """

    def setUp(self) -> None:
        self.server = WholeServer(self)

    @FUZZ
    @given(publish_request())
    def test_publish(self, raw: bytes) -> None:
        """Random publishes: 2xx or a clean 4xx, one log line each refusal, the watcher still served."""
        check(self, self.server, raw, complete=True)

    @FUZZ
    @given(stream_request())
    def test_stream(self, raw: bytes) -> None:
        """Random stream requests: an open 200 stream or a clean 4xx, nothing left open."""
        check(self, self.server, raw, complete=True)

    @FUZZ
    @given(mutated())
    def test_mutated(self, raw: bytes) -> None:
        """Valid requests mutated byte by byte: 2xx, 4xx or the parser's bare 400 and a close."""
        check(self, self.server, raw)

    def test_examples(self) -> None:
        """The cases the fuzzing found, kept as plain examples."""
        for raw in [
            _head(
                b"POST",
                b"/webNotification",
                [(b"Content-Type", b"application/json; charset=base64")],
                b"{}",
            ),
            _head(
                b"POST",
                b"/webNotification",
                [(b"Content-Type", b"application/json")],
                b"[" * 100_000,
            ),
            _head(b"HEAD", b"/static", [], b"", length=False),
            b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: t\r\n\r\n",
            _head(b"PUT", b"/webNotification", [], b""),
        ]:
            check(self, self.server, raw)


def _split_http1(raw: bytes) -> tuple[bytes, bytes, list[tuple[bytes, bytes]], bytes]:
    """The method, target, headers and body of a request that L{_head} wrote."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    method, target, _ = lines[0].split(b" ", 2)
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b": ")
        if name.lower() not in (b"host", b"connection", b"content-length"):
            headers.append((name.lower(), value))
    return method, target, headers, body


def h2_client() -> Any:
    """An C{h2} client connection that sends what it is given without validating it."""
    from h2.config import H2Configuration
    from h2.connection import H2Connection

    client = H2Connection(
        H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            validate_inbound_headers=False,
        )
    )
    client.initiate_connection()
    return client


def h2_request(raw: bytes) -> tuple[Any, bytes]:
    """An HTTP/1.1 request from the strategies above as an HTTP/2 client's bytes, and that client."""
    method, target, headers, body = _split_http1(raw)
    client = h2_client()
    pseudo = [(b":method", method), (b":path", target), (b":scheme", b"https")]
    pseudo.append((b":authority", b"t"))
    client.send_headers(1, pseudo + headers, end_stream=not body)
    if body:
        # Within the initial flow-control window; the body limit has its own tests.
        client.send_data(1, body[:60_000], end_stream=True)
    return client, client.data_to_send()


class H2Exchange:
    """
    HTTP/2 over L{WholeServer}'s in-memory connections: a connection that
    negotiated C{h2} (as ALPN does over TLS), an C{h2} client that sends
    what the test gives it without validating, and the events of the
    server's answer.  An answer the server ends with C{GOAWAY} (a
    request the C{h2} library refuses: a header value with a control
    character or surrounding spaces, a path that is not ASCII) has no
    status: HTTP/2's own answer to a broken request, as the bare 400 is
    HTTP/1.1's.
    """

    def __init__(self, testcase: SynchronousTestCase, server: WholeServer) -> None:
        import twisted.internet

        self.testcase = testcase
        self.server = server
        # twisted.web's HTTP/2 channel, built when ALPN said h2, takes the
        # global reactor for its send loop: the memory reactor instead.
        testcase.patch(twisted.internet, "reactor", server.reactor)

    def exchange(self, client: Any, sent: bytes) -> tuple[list[Any], bytes]:
        """Send C{sent} on a new h2 connection; the client's events of the answer, and its bytes."""
        import h2.exceptions

        protocol, transport = self.server.connect()
        transport.negotiatedProtocol = b"h2"  # type: ignore[attr-defined]
        protocol.dataReceived(sent)
        for _ in range(5):
            self.server.reactor.advance(0)
        answer = transport.value()
        protocol.connectionLost(Failure(ConnectionDone()))
        self.server.reactor.advance(0)
        try:
            events = client.receive_data(answer) if client is not None else []
        except h2.exceptions.ProtocolError as e:
            self.testcase.fail(f"the server's HTTP/2 answer is not valid ({e!r}): {answer[:300]!r}")
        return events, answer


def check_h2(testcase: SynchronousTestCase, server: WholeServer, raw: bytes) -> None:
    """
    L{check} over HTTP/2: every answer is a 2xx or a 4xx, a 4xx on an API
    path is JSON with an C{error}, nothing is logged as an error or a
    traceback, no stream is left open, and the watcher still receives.
    """
    import h2.events

    del server.events[:], server.activity[:]
    streams_before = server.hub.stream_count
    h2x = H2Exchange(testcase, server)
    client, sent = h2_request(raw)
    events, _ = h2x.exchange(client, sent)
    why = f"HTTP/2 request {raw[:400]!r}"
    status: int | None = None
    headers: dict[bytes, bytes] = {}
    body = b""
    ended = False
    for event in events:
        if isinstance(event, h2.events.ResponseReceived):
            headers = dict(event.headers)
            status = int(headers[b":status"])
        elif isinstance(event, h2.events.DataReceived):
            body += event.data
        elif isinstance(event, h2.events.StreamEnded):
            ended = True
    # An answer, or HTTP/2's own refusal of the request (a reset or GOAWAY).
    refused = (h2.events.StreamReset, h2.events.ConnectionTerminated)
    testcase.assertTrue(
        status is not None or any(isinstance(e, refused) for e in events), "no answer: " + why
    )
    if status is not None:
        testcase.assertTrue(200 <= status < 300 or 400 <= status < 500, f"{status}: {why}")
        method = raw.split(b" ", 1)[0]
        if status >= 400 and ended and method != b"HEAD" and _api(raw) and body:
            testcase.assertTrue(headers.get(b"content-type", b"").startswith(API.encode()), why)
            testcase.assertIsInstance(json.loads(body)["error"], str, why)
    _no_problems(testcase, server, streams_before, why)


@st.composite
def mutated_h2(draw: Any) -> bytes:
    """An HTTP/2 client's bytes for a request from the strategies above, changed byte by byte after the preface."""
    raw = draw(st.one_of(publish_request(), stream_request()))
    data = bytearray(h2_request(raw)[1])
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(24, len(data) - 1))
        op = draw(st.integers(0, 3))
        if op == 0:
            data[i] = draw(st.integers(0, 255))
        elif op == 1:
            del data[i : i + draw(st.integers(1, 8))]
        elif op == 2:
            data[i:i] = draw(st.binary(min_size=1, max_size=12))
        else:
            data[i] ^= 1 << draw(st.integers(0, 7))
    return bytes(data)


class H2FuzzTests(SynchronousTestCase):
    """
    L{FuzzTests} over HTTP/2 (the channel twisted.web switches to when ALPN
    says C{h2}, as with C{server.protocol: http2}): the same random
    publishes and stream requests as HTTP/2 requests, and HTTP/2 frames
    mutated byte by byte.  Every answer is a 2xx or a 4xx (JSON on the API
    paths) or the connection's own C{GOAWAY}, nothing is logged as an
    error, no stream is left open, and a subscriber keeps receiving.
    """

    def setUp(self) -> None:
        self.server = WholeServer(self)

    @FUZZ
    @given(publish_request())
    def test_publish(self, raw: bytes) -> None:
        """Random publishes over HTTP/2."""
        check_h2(self, self.server, raw)

    @FUZZ
    @given(stream_request())
    def test_stream(self, raw: bytes) -> None:
        """Random stream requests over HTTP/2."""
        check_h2(self, self.server, raw)

    @FUZZ
    @given(mutated_h2())
    def test_mutated_frames(self, sent: bytes) -> None:
        """An HTTP/2 client's frames mutated byte by byte: no error, no stream left, the watcher served."""
        del self.server.events[:], self.server.activity[:]
        streams_before = self.server.hub.stream_count
        H2Exchange(self, self.server).exchange(None, sent)
        _no_problems(self, self.server, streams_before, f"HTTP/2 bytes {sent[:400]!r}")

    def test_publish_answered(self) -> None:
        """The harness itself: an HTTP/2 publish reaches the watcher and is answered 200 JSON."""
        import h2.events

        body = b"id=notify_" + WATCH + b"&data=%7B%22h2%22%3A1%7D"
        raw = _head(b"POST", b"/webNotification", [(b"Content-Type", FORM.encode())], body)
        client, sent = h2_request(raw)
        events, _ = H2Exchange(self, self.server).exchange(client, sent)
        [response] = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
        self.assertEqual(dict(response.headers)[b":status"], b"200")
        data = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
        self.assertEqual(json.loads(data)["delivered"], 1)
        self.assertIn(b'data: {"h2":1}\n', self.server.watching.value())
