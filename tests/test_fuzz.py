"""
Fuzzing C{/webNotification} and C{/sse} (issue #11, "Bad input,
everywhere").

 - L{InMemoryFuzzTests}: hypothesis-driven, with a bounded budget, over
   the server as C{makeService} builds it (site, channel, request class,
   resource tree, logs) on a memory reactor, fed raw bytes through
   in-memory connections: random and mutated bodies, headers, content
   types and charsets, query strings, paths, cookies, Last-Event-ID and
   the polyfills' query parameters.  Every answer is a 2xx or a 4xx (or
   an open stream, or twisted.web's bare 400 and a close), a 4xx on the
   API paths is JSON with an C{error}, each refusal is one log line, no
   exception is logged, no stream is left behind, and a subscriber opened
   before keeps receiving a probe published after each request.
 - L{RawSocketFuzzTests}: C{bench/fuzz.py} against the real
   C{twistd -n notificator}: 2000 random and mutated raw requests.
 - L{FuzzScriptTests}: the script's own parts (answer parsing, checks).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
from typing import Any
from urllib.parse import quote, unquote_to_bytes

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from notificator import logs, tap
from notificator.hub import Hub
from tests.support import PROJECT, write_config

sys.path.insert(0, os.path.join(PROJECT, "bench"))

import fuzz  # noqa: E402

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


class InMemoryServer:
    """
    The whole server from C{makeService} on a L{MemoryReactorClock}, with a
    stream for L{WATCH} open, and every log event it emits collected.
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
                }
            },
        )
        opts = tap.Options()
        opts.parseOptions(["--config", conf, "--env", "fuzz", "--listen", "tcp:0"])
        self.reactor = MemoryReactorClock()
        self.reactor.advance(1_800_000_000)
        self.root = tap.makeService(opts, reactor=self.reactor)
        self.root.startService()
        testcase.addCleanup(self.stop)
        self.site = self.reactor.tcpServers[0][1]
        self.hub: Hub = self.site.resource.children[b"sse"]._hub
        self.events: list[dict[str, Any]] = []
        self.activity: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        testcase.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        app_log = tap.find(self.root, logs.AppLogService)
        app_log.activity.addObserver(self.activity.append)
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


def check(testcase: SynchronousTestCase, server: InMemoryServer, raw: bytes) -> None:
    """
    Send C{raw} and check everything issue #11 asks of the answer, the
    logs and the other clients.
    """
    del server.events[:], server.activity[:]
    streams_before = server.hub.stream_count
    responses, closing = server.exchange(raw)
    why = f"request {raw[:400]!r}"
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
    problems = [
        e
        for e in server.events + server.activity
        if "log_failure" in e or e["log_level"] >= LogLevel.error
    ]
    testcase.assertEqual(problems, [], why)
    # Nothing left open; the watcher still receives.
    testcase.assertEqual(server.hub.stream_count, streams_before, why)
    server.probe()


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


class InMemoryFuzzTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.server = InMemoryServer(self)

    @FUZZ
    @given(publish_request())
    def test_publish(self, raw: bytes) -> None:
        """Random publishes: 2xx or a clean 4xx, one log line each refusal, the watcher still served."""
        check(self, self.server, raw)

    @FUZZ
    @given(stream_request())
    def test_stream(self, raw: bytes) -> None:
        """Random stream requests: an open 200 stream or a clean 4xx, nothing left open."""
        check(self, self.server, raw)

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


class FuzzScriptTests(SynchronousTestCase):
    """The parts of C{bench/fuzz.py} the checks rely on."""

    def test_parse_pipelined_answers(self) -> None:
        """Answers by length, chunked, to HEAD (no body) and the bare 400 are read apart."""
        data = (
            b'HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 9\r\n\r\n{"e": 1}\n'
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 22\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            b"HTTP/1.1 400 Bad Request\r\n\r\n"
        )
        responses, cut = fuzz.parse_responses(data)
        self.assertEqual([r.code for r in responses], [405, 404, 200, 400])
        self.assertEqual([r.body for r in responses], [b'{"e": 1}\n', b"", b"abc", b""])
        self.assertEqual([r.headless for r in responses], [False, True, False, False])
        self.assertTrue(responses[3].bare)
        self.assertFalse(cut)

    def test_open_stream_is_cut(self) -> None:
        """An event stream's answer is read as far as it goes."""
        responses, cut = fuzz.parse_responses(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nretry\r\n"
        )
        self.assertTrue(cut)
        self.assertTrue(responses[0].stream)
        self.assertEqual(responses[0].body, b"retry")

    def test_dechunk_whole_chunks_only(self) -> None:
        """The watcher's reading (partial=False) never takes a chunk twice, however the bytes are split."""
        stream = b"5\r\nhello\r\n3\r\nabc\r\n"
        for cut in range(len(stream) + 1):
            raw = stream[:cut]
            body, used, _ = fuzz._dechunk(raw, partial=False)
            rest, _, _ = fuzz._dechunk(raw[used:] + stream[cut:], partial=False)
            self.assertEqual(body + rest, b"helloabc", cut)

    def test_not_http(self) -> None:
        """Bytes that are not an HTTP/1.x answer are refused."""
        for data in (b"<html>", b"HTTP/2 200\r\n\r\n", b"HTTP/1.1 2000 x\r\n\r\n"):
            self.assertRaises(fuzz.Unparsable, fuzz.parse_responses, data)

    def test_checks(self) -> None:
        """5xx, 3xx, HTML pages and JSON refusals without an error are problems."""
        cases = [
            (b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n", ["status 500"]),
            (b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n", ["status 302"]),
            (b"HTTP/1.1 304 Not Modified\r\n\r\n", []),
            (
                b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: 13\r\n\r\n<html></html>",
                ["HTML body on 404", "404 body of type b'text/html'"],
            ),
            (
                b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
                ["400 JSON without an error: b'{}'"],
            ),
            (b"HTTP/1.1 400 Bad Request\r\n\r\n", []),
        ]
        for data, problems in cases:
            self.assertEqual(fuzz.check_responses(fuzz.parse_responses(data)[0]), problems, data)

    def test_expects_answer(self) -> None:
        """A complete head without a body must be answered; one announcing a body may wait."""
        self.assertTrue(fuzz.expects_answer(b"GET / HTTP/1.1\r\n\r\n"))
        self.assertTrue(fuzz.expects_answer(b"\r\nJUNK\r\n\r\n"))
        self.assertTrue(fuzz.expects_answer(b"GET /" + b"a" * 20000))
        self.assertFalse(fuzz.expects_answer(b"GET / HTTP/1.1\r\n"))
        self.assertFalse(fuzz.expects_answer(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n"))

    def test_cases_are_seeded(self) -> None:
        """The same seed gives the same cases (so a failure can be sent again with --only)."""
        import random

        a = fuzz.Cases(random.Random(7))
        b = fuzz.Cases(random.Random(7))
        self.assertEqual([a.next().data for _ in range(200)], [b.next().data for _ in range(200)])


class RawSocketFuzzTests(SynchronousTestCase):
    def test_short_run(self) -> None:
        """2000 raw random and mutated requests to the real server: every check of bench/fuzz.py holds."""
        out = os.path.abspath(self.mktemp())
        workdir = tempfile.mkdtemp(prefix="fuzz-", dir=os.path.dirname(out) or ".")
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            code = fuzz.main(["--n", "2000", "--seed", "11", "--workdir", workdir, "--json", out])
        with open(out, encoding="utf-8") as f:
            result = json.load(f)
        self.assertEqual(
            (code, result["failures"], result["logProblems"]), (0, [], []), printed.getvalue()
        )
        self.assertEqual(result["probesReceived"], result["probes"])
        self.assertGreaterEqual(result["probes"], 40)
        # Every kind of case was sent, and the server answered many ways.
        self.assertEqual(len(result["kinds"]), 14)
        for status in ("200", "400", "404", "405", "415", "bare 400"):
            self.assertIn(status, result["statuses"])
