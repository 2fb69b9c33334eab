# -*- test-case-name: tests.test_bench -*-
"""
Raw-socket fuzzer for Notificator: sends N random and mutated HTTP requests
to a real C{twistd -n notificator} over loopback and checks that the server
answers every one it can parse with a 2xx or 4xx (a bare C{400} from
twisted.web's parser is followed by a close), that no answer is HTML or a
5xx, that C{sse.log} and twistd's log hold no traceback, and that a
subscriber opened before the run keeps receiving: a probe notification is
published every K requests and must reach it.

What it sends (one connection each; L{Cases}): garbage request lines,
bad versions, duplicated, oversized and obs-folded headers, bad
Content-Length, chunked bodies broken in every way, pipelined requests,
half-closed connections, slow clients, binary junk, and valid requests
(publishes in every body form, content type and charset; streams with
cookies, Last-Event-ID, the polyfills' query parameters; the monitor)
mutated byte by byte.

Run (starts its own server from this checkout on a free loopback port,
in a temporary directory)::

    python bench/fuzz.py --n 2000
    python bench/fuzz.py --n 100000 --json bench/results/fuzz-100000.json

or against a server that is already running (loopback only), with its
logs to scan::

    python bench/fuzz.py --url http://127.0.0.1:3000 --log log/sse.log --n 2000

Exit status 0 when every check held, 1 otherwise; the summary names each
failure with its case number, which C{--seed S --only I} sends again.

Standard library only.  Every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.dirname(HERE)

#: The user id whose stream watches the run, and the probe's event name.
WATCH_USER = "fuzz-watch"
PROBE_EVENT = "fuzzprobe"

# What must never be in a log (twistd's or sse.log).
LOG_PROBLEMS = re.compile(
    r"Traceback \(most recent call last\)|Unhandled Error|Unhandled error|#critical\]|#error\]"
)


# -- reading answers ------------------------------------------------------------


@dataclass
class Response:
    """One HTTP response as read off the socket."""

    version: bytes
    code: int
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    complete: bool = True
    #: A status line and an empty head (twisted.web's parser refusals).
    bare: bool = False
    #: Read as having no body (an answer to HEAD), though its head gives a length.
    headless: bool = False

    def header(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None

    @property
    def stream(self) -> bool:
        """An event stream (200, text/event-stream): open by design."""
        kind = self.header(b"content-type") or b""
        return self.code == 200 and kind.startswith(b"text/event-stream")


class Unparsable(Exception):
    """Bytes from the server that are not an HTTP/1.x response."""


_STATUS = re.compile(rb"^HTTP/1\.[01] (\d{3})(?: [^\r\n]*)?$")


def parse_responses(data: bytes) -> tuple[list[Response], bool]:
    """
    The responses in C{data}, and whether the last one is cut short.  A
    response head followed at once by another response, or by nothing,
    has no body (an answer to HEAD).

    @raise Unparsable: bytes that are not an HTTP/1.0 or 1.1 response.
    """
    responses: list[Response] = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            if not b"HTTP/1.".startswith(data[pos : pos + 7]):
                raise Unparsable(data[pos : pos + 80])
            return responses, True
        lines = data[pos:end].split(b"\r\n")
        m = _STATUS.match(lines[0])
        if m is None:
            raise Unparsable(data[pos : pos + 80])
        headers = []
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon:
                raise Unparsable(line[:80])
            headers.append((name.strip().lower(), value.strip()))
        response = Response(lines[0][:8], int(m.group(1)), headers, bare=not headers)
        responses.append(response)
        pos = end + 4
        if response.code < 200 or response.code in (204, 304) or response.bare:
            continue
        if data.startswith(b"HTTP/1.", pos) or pos == len(data):
            response.headless = True  # an answer to HEAD (or no body yet)
            continue
        if (response.header(b"transfer-encoding") or b"").lower() == b"chunked":
            body, used, done = _dechunk(data[pos:])
            response.body, response.complete = body, done
            pos += used
            if not done:
                return responses, True
            continue
        length = response.header(b"content-length")
        if length is not None and length.isdigit():
            n = int(length)
            response.body = data[pos : pos + n]
            if len(response.body) < n:
                response.complete = False
                return responses, True
            pos += n
            continue
        # No length: the body runs to the close.
        response.body = data[pos:]
        pos = len(data)
    return responses, False


def _dechunk(data: bytes, partial: bool = True) -> tuple[bytes, int, bool]:
    """
    (body so far, bytes used, whether the last chunk was read); with
    C{partial}, the body includes what came of a chunk not yet complete
    (which is not counted as used).
    """
    out = []
    pos = 0
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return b"".join(out), pos, False
        size_text = data[pos:eol].split(b";")[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise Unparsable(b"bad chunk size " + data[pos : pos + 40])
        start = eol + 2
        if size == 0:
            # Trailers (none from us), then the blank line.
            end = data.find(b"\r\n", start)
            if end < 0:
                return b"".join(out), pos, False
            return b"".join(out), end + 2, True
        if len(data) < start + size + 2:
            if partial:
                out.append(data[start : start + size])
            return b"".join(out), pos, False
        out.append(data[start : start + size])
        pos = start + size + 2


def check_responses(responses: list[Response]) -> list[str]:
    """What is wrong with these answers (empty when nothing is)."""
    problems = []
    for r in responses:
        if r.code < 200:
            if r.code != 100:
                problems.append(f"interim {r.code}")
            continue
        if not (200 <= r.code < 300 or 400 <= r.code < 500 or r.code == 304):
            problems.append(f"status {r.code}")
        if r.code >= 400 and b"<html" in r.body.lower():
            problems.append(f"HTML body on {r.code}")
        if r.code >= 400 and not r.bare and not r.headless:
            kind = r.header(b"content-type") or b""
            if kind.startswith(b"application/json"):
                try:
                    error = json.loads(r.body).get("error") if r.complete else ""
                except ValueError:
                    error = None
                if r.complete and not isinstance(error, str):
                    problems.append(f"{r.code} JSON without an error: {r.body[:80]!r}")
            elif r.body and r.complete and not kind.startswith(b"text/plain"):
                problems.append(f"{r.code} body of type {kind[:40]!r}")
    return problems


# -- what to send -----------------------------------------------------------------


@dataclass
class Case:
    """One connection's worth of bytes to send, and how."""

    kind: str
    data: bytes
    #: How many requests C{data} holds, as far as we know (pipelining).
    requests: int = 1
    #: Shut the write side down after sending.
    half_close: bool = False
    #: Send in this many pieces with small pauses (a slow client).
    pieces: int = 1
    #: The server may not answer (an incomplete request): no failure.
    incomplete: bool = False


FORM = "application/x-www-form-urlencoded"
JSON_TYPE = "application/json"

KOREAN = {"title": "결재 요청", "body": "안녕하세요; a&b=c", "n": 1}

CHARSETS = [
    "UTF-8",
    "utf-8",
    "EUC-KR",
    "euc_kr",
    "ks_c_5601-1987",
    "windows-949",
    "cp949",
    "UTF-16",
    "utf-16le",
    "utf-32",
    "latin-1",
    "iso-2022-kr",
    "utf-7",
    "ascii",
    "klingon",
    "base64",
    "rot13",
    "zlib",
    "undefined",
    "punycode",
    "idna",
    "",
    '"utf-8"',
    "utf-8; charset=euc-kr",
    "x" * 300,
    "utf\\-8",
    "utf-8\t",
    "%75tf-8",
    "'utf-8'",
]

MEDIA = [
    FORM,
    FORM,
    JSON_TYPE,
    "application/x-www-form-urlencoded ",
    "APPLICATION/JSON",
    "application/ld+json",
    "text/plain",
    "multipart/form-data; boundary=x",
    "",
    "application/json;;;",
    "application/json; charset",
    "*/*",
]

USER_IDS = [
    "u1",
    "001000210",
    "홍길동_01",
    WATCH_USER,
    "a" * 300,
    "a" * 5000,
    "..",
    "../../etc/passwd",
    "a b",
    "😀",
    "\u2028",
    "x\ty",
]

RAW_USER_PATHS = [
    "%ED%99%8D",
    "%C0%AF",
    "%C0%AE%C0%AE",
    "%E0%80%AF",
    "%F0%80%80%AF",
    "%00",
    "%0D%0Aevent:%20x",
    "%FF%FE",
    "%",
    "%G1",
    "%2F",
    "..%2F..",
    "a/b",
    "a//b",
    "",
    "%20",
    "%E2%80%A8",
]

QUERY_NAMES = [
    "lastEventId",
    "last_event_id",
    "evs_last_event_id",
    "evs_preamble",
    "padding",
    "evs_buffer_size_limit",
    "auth",
    "lang",
    "x",
    "",
]

QUERY_VALUES = [
    "",
    "1",
    "0",
    "-1",
    "true",
    "TRUE",
    "1795476813293-0",
    "1795476813293-99999999999",
    "99999999999999999999999999999999-0",
    "١٢٣-٤",
    "4096",
    "1" * 30,
    "%FF",
    "%00",
    "%0D%0A",
    "a+b",
    "x" * 3000,
    "1767225600.svDw-nOzU0-VvZt4Fi4EZbI5gXe3jTbmimhaGds-UDA",
]

FORWARDED = [
    b"10.0.0.1",
    b"127.0.0.1",
    b"unknown, 1.2.3.4",
    b"::1",
    b"127.0.0.1, 10.0.0.1",
    b"",
    b",,,",
    b"::ffff:127.0.0.1",
    b"[::1]:80",
    b"x" * 300,
    b"1.2.3.4, " * 40,
]

EVENT_IDS = [
    "1795476813293-0",
    "0-0",
    "-1",
    "",
    "abc",
    "9" * 60,
    "1795476813293-0-0",
    "١٢٣-٤",
    "\xff\xfe",
    " 1-1 ",
]


class Cases:
    """A seeded source of L{Case}s, weighted across the kinds listed in the module docstring."""

    def __init__(self, rng: random.Random, host: str = "127.0.0.1") -> None:
        self.rng = rng
        self.host = host.encode("ascii")
        self._kinds: list[tuple[Callable[[], Case], int]] = [
            (self.valid, 14),
            (self.mutated, 30),
            (self.request_line, 6),
            (self.version, 3),
            (self.headers, 10),
            (self.content_length, 7),
            (self.chunked, 8),
            (self.pipelined, 6),
            (self.half_closed, 4),
            (self.slow, 1),
            (self.junk, 6),
            (self.big, 1),
            (self.fuzzed_publish, 10),
            (self.fuzzed_stream, 8),
        ]
        self._weights = [w for _, w in self._kinds]

    def next(self) -> Case:
        make = self.rng.choices([k for k, _ in self._kinds], self._weights)[0]
        return make()

    # -- building blocks --------------------------------------------------------

    def _request(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes = b"",
        length: bool = True,
        version: bytes = b"HTTP/1.1",
    ) -> bytes:
        head = [method + b" " + target + b" " + version, b"Host: " + self.host]
        for name, value in headers or ():
            head.append(name + b": " + value)
        if length and (body or method in (b"POST", b"PUT")):
            head.append(b"Content-Length: %d" % len(body))
        return b"\r\n".join(head) + b"\r\n\r\n" + body

    def _charset(self) -> str:
        return self.rng.choice(CHARSETS)

    def _content_type(self) -> bytes:
        media = self.rng.choice(MEDIA)
        if self.rng.random() < 0.6:
            media += "; charset=" + self._charset()
        return media.encode("latin-1", "replace")

    def _encoding_of(self, content_type: bytes) -> str:
        m = re.search(rb"charset=([A-Za-z0-9_-]+)", content_type)
        name = m.group(1).decode() if m else "utf-8"
        try:
            "x".encode(name)
            return name
        except (LookupError, UnicodeError):
            return "utf-8"

    def _publish_body(self, content_type: bytes) -> bytes:
        rng = self.rng
        enc = self._encoding_of(content_type)
        user = rng.choice(USER_IDS)
        event = rng.choice(
            ["notify", "appr", "mail.new-2", "bad event", "x" * 70, "", "a\nb", "notify\n"]
        )
        data: Any = rng.choice(
            [KOREAN, "plain text", 1, None, [1, 2], '{"a":', "[" * rng.randint(1, 3000)]
            # Out of a double's range; a lone surrogate escape (both 400).
            + ['{"n":1e999}', "-1" + "0" * 400, '"\\ud800"']
        )
        ident = f"{event}_{user}" if rng.random() < 0.9 else rng.choice(["", "nounderscore", "_"])
        data_text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
        form = rng.choice([1, 2, 3])

        def enc_text(text: str) -> bytes:
            try:
                return text.encode(enc)
            except (UnicodeError, LookupError):
                return text.encode("utf-8")

        if form == 1:
            parts = [
                b"id=" + quote(enc_text(ident)).encode(),
                b"data=" + quote(enc_text(data_text)).encode(),
            ]
            if rng.random() < 0.2:
                parts.append(b"token=" + quote("x" * rng.randint(0, 40)).encode())
            if rng.random() < 0.2:
                parts.append(b"=&&==&id=")
            rng.shuffle(parts)
            return b"&".join(parts)
        obj: dict[str, Any] = {"id": ident, "data": data}
        if rng.random() < 0.1:
            obj = {"id": 5}
        text = json.dumps(obj, ensure_ascii=False)
        if form == 2:
            return enc_text(text) + b"="
        return enc_text(text)

    def _sse_target(self) -> bytes:
        rng = self.rng
        r = rng.random()
        if r < 0.15:
            path = "/sse"
        elif r < 0.5:
            path = "/sse/" + quote(rng.choice(USER_IDS), safe="")
        else:
            path = "/sse/" + rng.choice(RAW_USER_PATHS)
        if rng.random() < 0.1:
            path = rng.choice(
                ["/sse/", "/%73se/u1", "/sse/u1/", "/SSE/u1", "//sse/u1", "/sse/./u1"]
            )
        if rng.random() < 0.5:
            items = []
            for _ in range(rng.randint(1, 4)):
                items.append(rng.choice(QUERY_NAMES) + "=" + rng.choice(QUERY_VALUES))
            path += "?" + rng.choice(["&", ";", "&&"]).join(items)
        return path.encode("latin-1", "replace")

    def _sse_headers(self) -> list[tuple[bytes, bytes]]:
        rng = self.rng
        headers = [(b"Accept", b"text/event-stream")]
        if rng.random() < 0.4:
            value = rng.choice(
                [
                    "userID=u1",
                    "userID=%ED%99%8D",
                    "userID=",
                    "userID=%FF",
                    "userID=a%0Ab",
                    'userID="u1"',
                    "userID=u1; userID=u2",
                    "a=b; userID=u1; notificatorAuth=1.x",
                    "userID=" + "a" * 4000,
                    ";;;==",
                    "userID=%C0%AF",
                ]
            )
            headers.append((b"Cookie", value.encode()))
        if rng.random() < 0.4:
            headers.append((b"Last-Event-ID", rng.choice(EVENT_IDS).encode("latin-1", "replace")))
        if rng.random() < 0.2:
            headers.append((b"Origin", rng.choice([b"https://gw.example.com", b"null", b"x", b""])))
        if rng.random() < 0.1:
            headers.append((b"X-Forwarded-For", rng.choice(FORWARDED)))
        return headers

    # -- kinds --------------------------------------------------------------------

    def _valid_bytes(self) -> tuple[bytes, bool]:
        """A valid request; and whether it opens a stream."""
        rng = self.rng
        r = rng.random()
        if r < 0.45:
            content_type = self._content_type()
            body = self._publish_body(content_type)
            return self._request(
                b"POST", b"/webNotification", [(b"Content-Type", content_type)], body
            ), False
        if r < 0.8:
            return self._request(b"GET", self._sse_target(), self._sse_headers()), True
        target = rng.choice(
            [
                b"/",
                b"/health",
                b"/users",
                b"/metrics",
                b"/javascripts/eventSourceClient.js",
                b"/static/monitor.js",
                b"/favicon.ico",
                b"/nowhere",
                b"/?lang=ko",
                b"*",
            ]
        )
        method = rng.choice([b"GET", b"HEAD", b"OPTIONS", b"POST", b"PUT", b"DELETE", b"TRACE"])
        return self._request(method, target), False

    def valid(self) -> Case:
        data, _ = self._valid_bytes()
        return Case("valid", data)

    def mutated(self) -> Case:
        rng = self.rng
        data = bytearray(self._valid_bytes()[0])
        for _ in range(rng.randint(1, 8)):
            if not data:
                break
            i = rng.randrange(len(data))
            op = rng.randrange(7)
            if op == 0:
                data[i] = rng.randrange(256)
            elif op == 1:
                data[i:i] = bytes([rng.randrange(256)])
            elif op == 2:
                del data[i : i + rng.randint(1, 8)]
            elif op == 3:
                j = min(len(data), i + rng.randint(1, 16))
                data[i:i] = data[i:j]
            elif op == 4:
                data[i:i] = rng.choice([b"\r\n", b"\n", b"\r", b"\x00", b" ", b"%", b"\t", b"\xff"])
            elif op == 5:
                data[i] ^= 1 << rng.randrange(8)
            else:
                del data[i:]
        return Case("mutated", bytes(data), incomplete=True)

    def request_line(self) -> Case:
        rng = self.rng
        line = rng.choice(
            [
                b"GET",
                b"GET /",
                b"GET / HTTP/1.1 extra",
                b"GET  / HTTP/1.1",
                b" GET / HTTP/1.1",
                b"GET /\x00 HTTP/1.1",
                b"G\xc3\x89T / HTTP/1.1",
                b"get /sse/u1 HTTP/1.1",
                b"GET http://127.0.0.1/sse/u1 HTTP/1.1",
                b"CONNECT 127.0.0.1:443 HTTP/1.1",
                b"OPTIONS * HTTP/1.1",
                b"GET * HTTP/1.1",
                b"PRI * HTTP/2.0",
                b"GET /" + b"a" * 20000 + b" HTTP/1.1",
                b"GET /" + b"a" * 8000 + b" HTTP/1.1",
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
                b"GET /sse/u1\tHTTP/1.1",
                b"GET /sse/\xed\x99\x8d HTTP/1.1",
                b"M-SEARCH * HTTP/1.1",
                b"GET /sse/u1 HTTP/1.1 ",
                b"",
            ]
        )
        tail = rng.choice([b"\r\nHost: x\r\n\r\n", b"\r\n\r\n", b"\n\n", b"\r\n", b""])
        if line.startswith(b"PRI"):
            tail = b"\r\n\r\nSM\r\n\r\n" + bytes(rng.randrange(256) for _ in range(30))
        return Case("request-line", line + tail, incomplete=True)

    def version(self) -> Case:
        v = self.rng.choice(
            [
                b"HTTP/1.0",
                b"HTTP/1.2",
                b"HTTP/2.0",
                b"HTTP/0.9",
                b"HTTP/1.1.1",
                b"http/1.1",
                b"HTTP/11",
                b"HTTP/",
                b"HTTP/1.x",
                b"HTTPS/1.1",
                b"HTTP/1.1\x00",
            ]
        )
        target = self.rng.choice([b"/sse/u1", b"/health", b"/webNotification"])
        return Case("version", self._request(b"GET", target, version=v), incomplete=True)

    def headers(self) -> Case:
        rng = self.rng
        extra: list[tuple[bytes, bytes]] = []
        choice = rng.randrange(12)
        if choice == 0:
            extra = [(b"X-Big", b"a" * rng.choice([8000, 16000, 17000, 40000]))]
        elif choice == 1:
            extra = [(b"X-H%d" % i, b"v") for i in range(rng.choice([100, 499, 501, 2000]))]
        elif choice == 2:
            extra = [(b"X-A", b"a\r\n b\r\n\tc")]  # obs-fold
        elif choice == 3:
            extra = [(b"Cookie", b"userID=u1"), (b"Cookie", b"userID=u2")]
        elif choice == 4:
            extra = [(b"Host", b"other"), (b"Host", b"")]
        elif choice == 5:
            extra = [(b"Bad Name", b"x")]
        elif choice == 6:
            extra = [(b"", b"x")]
        elif choice == 7:
            extra = [(b"X-\xff", b"\xff\xfe")]
        elif choice == 8:
            extra = [(b"X-Nul", b"a\x00b")]
        elif choice == 9:
            extra = [(b"Content-Type", b"application/json"), (b"Content-Type", b"text/plain")]
        elif choice == 10:
            extra = [(b"X-Long", b"b" * 4000) for _ in range(5)]
        else:
            extra = [(b"Expect", b"100-continue")]
        data, _ = self._valid_bytes()
        head, sep, body = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        at = rng.randint(1, len(lines))
        for name, value in extra:
            lines.insert(at, name + b": " + value)
        return Case("headers", b"\r\n".join(lines) + sep + body, incomplete=True)

    def content_length(self) -> Case:
        rng = self.rng
        body = b"id=notify_u1&data=%7B%7D"
        value = rng.choice(
            [
                b"-1",
                b"+24",
                b"0x18",
                b" 24",
                b"24 24",
                b"24, 24",
                b"99999999999999999999",
                b"",
                b"abc",
                b"2.4e1",
                b"\xd9\xa2\xd9\xa4",
                b"24\x0b",
            ]
        )
        lines = [b"POST /webNotification HTTP/1.1", b"Host: x", b"Content-Type: " + FORM.encode()]
        r = rng.random()
        if r < 0.3:
            lines += [
                b"Content-Length: 24",
                b"Content-Length: " + rng.choice([b"24", b"5", b"100"]),
            ]
        elif r < 0.5:
            lines += [b"Content-Length: 1000"]  # more than will come
            return Case(
                "content-length",
                b"\r\n".join(lines) + b"\r\n\r\n" + body,
                half_close=rng.random() < 0.8,
                incomplete=True,
            )
        elif r < 0.6:
            lines += [b"Content-Length: 5"]  # less than comes: the rest is a next "request"
        else:
            lines += [b"Content-Length: " + value]
        return Case("content-length", b"\r\n".join(lines) + b"\r\n\r\n" + body, incomplete=True)

    def chunked(self) -> Case:
        rng = self.rng
        body = b"id=notify_u1&data=%7B%7D"
        good = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        broken = rng.choice(
            [
                good,
                b"zz\r\n" + body + b"\r\n0\r\n\r\n",
                b"%x\r\n%s0\r\n\r\n" % (len(body), body),  # no CRLF after data
                b"%x;ext=\x00\r\n%s\r\n0\r\n\r\n" % (len(body), body),
                b"-1\r\n" + body + b"\r\n0\r\n\r\n",
                b"ffffffffffffffffffff\r\n" + body,
                b"%x\r\n%s\r\n" % (len(body), body),  # no last chunk
                b"%x\r\n%s\r\n0\r\nX-Trailer: \xff\r\n\r\n" % (len(body), body),
                b"%x\r\n%s\r\n0\r\n" % (len(body), body),  # no final CRLF
                b"%x\n%s\n0\n\n" % (len(body), body),  # LF only
                b"100\r\n" + body + b"\r\n0\r\n\r\n",  # size larger than the data
                b"0x18\r\n" + body + b"\r\n0\r\n\r\n",
                b" 18\r\n" + body + b"\r\n0\r\n\r\n",
                b"18 \r\n" + body + b"\r\n0\r\n\r\n",
                b"1\r\na\r\n" * 200 + b"0\r\n\r\n",
                b"",
            ]
        )
        te = rng.choice(
            [
                b"chunked",
                b"Chunked",
                b"chunked, gzip",
                b"gzip, chunked",
                b"xchunked",
                b"chunked\x0b",
                b"identity",
                b" chunked",
            ]
        )
        lines = [
            b"POST /webNotification HTTP/1.1",
            b"Host: x",
            b"Content-Type: " + FORM.encode(),
            b"Transfer-Encoding: " + te,
        ]
        r = rng.random()
        if r < 0.2:
            lines.append(b"Content-Length: %d" % len(body))
        elif r < 0.3:
            lines.append(b"Transfer-Encoding: chunked")
        return Case(
            "chunked",
            b"\r\n".join(lines) + b"\r\n\r\n" + broken,
            half_close=rng.random() < 0.3,
            incomplete=True,
        )

    def pipelined(self) -> Case:
        rng = self.rng
        parts = []
        count = rng.randint(2, 5)
        for _ in range(count):
            r = rng.random()
            if r < 0.6:
                content_type = self._content_type()
                parts.append(
                    self._request(
                        b"POST",
                        b"/webNotification",
                        [(b"Content-Type", content_type)],
                        self._publish_body(content_type),
                    )
                )
            elif r < 0.8:
                parts.append(
                    self._request(
                        rng.choice([b"GET", b"HEAD", b"PUT"]),
                        rng.choice([b"/health", b"/nowhere", b"/webNotification"]),
                    )
                )
            elif r < 0.9:
                parts.append(self._request(b"GET", self._sse_target(), self._sse_headers()))
            else:
                parts.append(bytes(rng.randrange(256) for _ in range(rng.randint(1, 60))))
        return Case("pipelined", b"".join(parts), requests=count, incomplete=True)

    def half_closed(self) -> Case:
        data, _ = self._valid_bytes()
        if self.rng.random() < 0.5:
            data = data[: self.rng.randrange(len(data) + 1)]
        return Case("half-closed", data, half_close=True, incomplete=True)

    def slow(self) -> Case:
        data, _ = self._valid_bytes()
        return Case("slow", data, pieces=self.rng.randint(2, 6), incomplete=True)

    def junk(self) -> Case:
        rng = self.rng
        n = rng.choice([1, 2, 10, 100, 1000, 5000])
        data = bytes(rng.randrange(256) for _ in range(n))
        if rng.random() < 0.5:
            data += b"\r\n\r\n"
        return Case("junk", data, half_close=rng.random() < 0.5, incomplete=True)

    def big(self) -> Case:
        rng = self.rng
        size = rng.choice([300_000, 1_100_000, 2_000_000])
        body = b"id=notify_u1&data=" + b"x" * size
        if rng.random() < 0.5:
            # Announced, not sent: the server must not wait for it forever
            # once we go (half close).
            head = self._request(
                b"POST",
                b"/webNotification",
                [(b"Content-Type", FORM.encode()), (b"Content-Length", b"%d" % (64 * 1024 * 1024))],
                length=False,
            )
            return Case("big", head + body[:65536], half_close=True, incomplete=True)
        return Case(
            "big",
            self._request(b"POST", b"/webNotification", [(b"Content-Type", FORM.encode())], body),
            incomplete=True,
        )

    def fuzzed_publish(self) -> Case:
        rng = self.rng
        content_type = self._content_type()
        body = self._publish_body(content_type)
        headers = [(b"Content-Type", content_type)]
        if rng.random() < 0.2:
            headers.append(
                (b"Authorization", rng.choice([b"Bearer x", b"Bearer", b"Basic Zm9v", b"\xff"]))
            )
        if rng.random() < 0.2:
            headers.append((b"X-Forwarded-For", rng.choice(FORWARDED)))
        target = rng.choice(
            [b"/webNotification"] * 8
            + [
                b"/webNotification/",
                b"/webNotification/x",
                b"/webNotification?x=1",
                b"/%77ebNotification",
            ]
        )
        return Case("publish", self._request(b"POST", target, headers, body))

    def fuzzed_stream(self) -> Case:
        return Case("stream", self._request(b"GET", self._sse_target(), self._sse_headers()))


# -- one exchange -----------------------------------------------------------------


@dataclass
class Outcome:
    responses: list[Response] = field(default_factory=list)
    closed: bool = False  # by the server (EOF or reset)
    timed_out: bool = False
    problems: list[str] = field(default_factory=list)


#: twisted.web's longest request line or header line (LineReceiver.MAX_LENGTH).
MAX_LINE = 16384


def expects_answer(data: bytes) -> bool:
    """
    Whether C{data} holds all of a first request, or enough to tell it is
    malformed, so that the server must answer it: a head that ends in a
    blank line and announces no body, or a line longer than L{MAX_LINE}.
    """
    if data.startswith(b"\r\n"):
        data = data[2:]  # twisted.web skips one empty line before a request
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return any(len(line) > MAX_LINE for line in data.split(b"\r\n"))
    head = data[:end].lower()
    return b"content-length" not in head and b"transfer-encoding" not in head


def exchange(address: tuple[str, int], case: Case, idle: float, limit: float) -> Outcome:
    """
    Send C{case} on a new connection and read what comes back: until the
    server closes, or every request is answered, or a stream opened.  A
    case that must be answered (L{Case.incomplete} false, or
    L{expects_answer}) gets up to C{limit} s; any other, once nothing
    came for C{idle} s, has our side shut (its request may be incomplete)
    and a moment for the server to answer or close.
    """
    must_answer = not case.half_close and (not case.incomplete or expects_answer(case.data))
    if must_answer:
        idle = limit
    out = Outcome()
    received = bytearray()
    sock = socket.create_connection(address, timeout=limit)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # Close with a reset: no TIME_WAIT per case (100,000 cases would use up
    # the ephemeral ports).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    deadline = time.monotonic() + limit
    shut = False
    try:
        try:
            if case.pieces > 1:
                step = max(1, len(case.data) // case.pieces)
                for i in range(0, len(case.data), step):
                    sock.sendall(case.data[i : i + step])
                    time.sleep(0.02)
            else:
                sock.sendall(case.data)
            if case.half_close:
                sock.shutdown(socket.SHUT_WR)
                shut = True
        except (BrokenPipeError, ConnectionResetError):
            out.closed = True
        except TimeoutError:
            out.problems.append("send stalled")
        last = time.monotonic()
        while not out.closed:
            try:
                responses, cut = parse_responses(bytes(received))
            except Unparsable as e:
                out.problems.append(f"unparsable answer {e.args[0]!r}")
                break
            out.responses = responses
            final = [r for r in responses if r.code >= 200]
            if any(r.stream for r in final):
                break  # a stream opened: that is its answer
            bare = any(r.bare for r in final)
            if not bare and not cut and len(final) >= case.requests and final:
                break
            now = time.monotonic()
            if now >= deadline:
                out.timed_out = True
                if bare:
                    out.problems.append("bare 400 but the connection stayed open")
                break
            wait = min(deadline, (last + idle) if not shut else deadline) - now
            ready, _, _ = select.select([sock], [], [], max(0.0, wait))
            if not ready:
                if not shut:
                    try:
                        sock.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    shut = True
                    # After our FIN the server has a moment to answer or close.
                    deadline = min(deadline, time.monotonic() + max(1.0, idle * 20))
                continue
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                chunk = b""
            if not chunk:
                out.closed = True
                break
            received += chunk
            last = time.monotonic()
        if out.closed:
            try:
                out.responses, _ = parse_responses(bytes(received))
            except Unparsable as e:
                out.problems.append(f"unparsable answer {e.args[0]!r}")
    finally:
        sock.close()
    out.problems += check_responses(out.responses)
    if must_answer and not out.responses and not out.problems:
        out.problems.append("closed without an answer" if out.closed else "no answer")
    return out


# -- the watching subscriber --------------------------------------------------------


class Watcher(threading.Thread):
    """
    One open stream for L{WATCH_USER}, read on a thread: the C{data} of
    each probe event it receives is kept for L{wait_for}.
    """

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(daemon=True, name="fuzz-watcher")
        self.address = address
        self.seen: set[str] = set()
        self.ended: str | None = None
        self.frames = 0
        self._cond = threading.Condition()
        self.sock = socket.create_connection(address, timeout=10)
        self.sock.sendall(
            b"GET /sse/" + WATCH_USER.encode() + b" HTTP/1.1\r\nHost: fuzz\r\n"
            b"Accept: text/event-stream\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise SystemExit("fuzz: the watching stream was refused")
            head += chunk
        head, _, self._rest = head.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200") or b"text/event-stream" not in head:
            raise SystemExit(f"fuzz: the watching stream did not open: {head[:200]!r}")
        self.sock.settimeout(1.0)
        self._stopping = False

    def run(self) -> None:
        raw = bytearray(self._rest)
        text = b""
        try:
            while not self._stopping:
                try:
                    chunk = self.sock.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    self._end("the server ended the stream")
                    return
                raw += chunk
                body, used, done = _dechunk(bytes(raw), partial=False)
                del raw[:used]
                text += body
                if done:
                    self._end("the server finished the stream")
                    return
                *blocks, text = re.split(rb"\r\n\r\n|\n\n|\r\r", text)
                self._blocks(blocks)
        except OSError as e:
            if not self._stopping:
                self._end(f"stream error: {e}")

    def _blocks(self, blocks: list[bytes]) -> None:
        found = []
        for block in blocks:
            self.frames += 1
            if b"event: " + PROBE_EVENT.encode() not in block:
                continue
            for line in block.split(b"\n"):
                if line.startswith(b"data: "):
                    found.append(line[6:].decode("utf-8", "replace").strip())
        if found:
            with self._cond:
                self.seen.update(found)
                self._cond.notify_all()

    def _end(self, reason: str) -> None:
        with self._cond:
            self.ended = reason
            self._cond.notify_all()

    def wait_for(self, data: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while data not in self.seen and self.ended is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return data in self.seen

    def stop(self) -> None:
        self._stopping = True
        try:
            self.sock.close()
        except OSError:
            pass
        self.join(5)


def probe(address: tuple[str, int], watcher: Watcher, n: int, timeout: float) -> str | None:
    """Publish probe C{n} to the watcher; L{None} if it arrived, else what went wrong."""
    data = json.dumps({"probe": n})
    body = f"id={PROBE_EVENT}_{WATCH_USER}&data={quote(data)}".encode()
    request = (
        b"POST /webNotification HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n"
        b"Content-Type: application/x-www-form-urlencoded; charset=UTF-8\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    try:
        out = exchange(address, Case("probe", request), idle=timeout, limit=timeout)
    except OSError as e:
        return f"probe {n}: {e}"
    if not out.responses or out.responses[0].code != 200:
        return f"probe {n}: answer {[r.code for r in out.responses]} {out.problems}"
    if not watcher.wait_for(data, timeout):
        return f"probe {n} not received ({watcher.ended or 'timeout'})"
    return None


def scan_logs(paths: list[str]) -> list[str]:
    """Lines of these files that show a traceback or an error (at most 20)."""
    found = []
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                for number, line in enumerate(f, 1):
                    if LOG_PROBLEMS.search(line):
                        found.append(f"{path}:{number}: {line.rstrip()[:300]}")
                        if len(found) >= 20:
                            return found
        except FileNotFoundError:
            found.append(f"{path}: missing")
    return found


# -- a server of our own ---------------------------------------------------------------


def twistd_command() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.exists(script):
        return [sys.executable, script]
    return [sys.executable, "-m", "twisted"]


class OwnServer:
    """
    C{twistd -n notificator} from this checkout on a free loopback port,
    with the shipped C{conf/} plus a C{local.json} (log dir, history in
    memory), in a temporary directory.
    """

    def __init__(self, workdir: str, local: dict[str, Any] | None = None) -> None:
        self.dir = workdir
        conf = os.path.join(workdir, "conf")
        self.log_dir = os.path.join(workdir, "log")
        os.makedirs(conf, exist_ok=True)
        os.makedirs(self.log_dir, exist_ok=True)
        for name in os.listdir(os.path.join(PROJECT, "conf")):
            if name.endswith(".json"):
                shutil.copy(os.path.join(PROJECT, "conf", name), conf)
        settings: dict[str, Any] = {
            # Behind a "proxy" on loopback, so that the X-Forwarded-For the
            # cases send decides who publishes (403 before the body).
            "server": {
                "log": {"dir": self.log_dir, "level": "info"},
                "trustedProxies": ["127.0.0.1/32"],
            },
            "sse": {"history": {"dir": None}, "drainSeconds": 0.5},
        }
        for key, value in (local or {}).items():
            settings[key] = {**settings.get(key, {}), **value}
        with open(os.path.join(conf, "local.json"), "w", encoding="utf-8") as f:
            json.dump(settings, f)
        self.twistd_log = os.path.join(workdir, "twistd.log")
        self.command = twistd_command() + [
            "-n",
            "--pidfile=",
            "notificator",
            "--config",
            conf,
            "--listen",
            "tcp:0:interface=127.0.0.1",
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def logs(self) -> list[str]:
        return [self.twistd_log, os.path.join(self.log_dir, "sse.log")]

    def start(self, timeout: float = 30.0) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (PROJECT, env.get("PYTHONPATH")) if p)
        with open(self.twistd_log, "wb") as out:
            self.process = subprocess.Popen(
                self.command, stdout=out, stderr=subprocess.STDOUT, cwd=self.dir, env=env
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.twistd_log, encoding="utf-8", errors="replace") as f:
                m = re.search(r"starting on (\d+)", f.read())
            if m:
                self.port = int(m.group(1))
                return
            if self.process.poll() is not None:
                raise SystemExit(
                    f"fuzz: twistd exited {self.process.returncode}; see {self.twistd_log}"
                )
            time.sleep(0.05)
        self.stop()
        raise SystemExit(f"fuzz: twistd did not listen within {timeout} s; see {self.twistd_log}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> int | None:
        p = self.process
        if p is None:
            return None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        return p.returncode


# -- the run ---------------------------------------------------------------------------


@dataclass
class Result:
    n: int = 0
    requests: int = 0
    seconds: float = 0.0
    statuses: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    probes: int = 0
    probes_received: int = 0
    failures: list[str] = field(default_factory=list)
    log_problems: list[str] = field(default_factory=list)
    seed: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures and not self.log_problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "n": self.n,
            "requests": self.requests,
            "seconds": round(self.seconds, 1),
            "seed": self.seed,
            "statuses": dict(sorted(self.statuses.items())),
            "kinds": dict(sorted(self.kinds.items())),
            "outcomes": dict(sorted(self.outcomes.items())),
            "probes": self.probes,
            "probesReceived": self.probes_received,
            "failures": self.failures[:50],
            "failureCount": len(self.failures),
            "logProblems": self.log_problems,
        }


def cases(seed: int) -> Iterator[Case]:
    source = Cases(random.Random(seed))
    while True:
        yield source.next()


def run(
    address: tuple[str, int],
    n: int,
    seed: int,
    probe_every: int = 50,
    idle: float = 0.02,
    limit: float = 10.0,
    alive: Callable[[], bool] = lambda: True,
    only: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> Result:
    """
    Send C{n} cases (seeded) to C{address} with a watching stream open;
    a probe every C{probe_every} cases and one at the end.
    """
    result = Result(n=n, seed=seed)
    watcher = Watcher(address)
    watcher.start()
    started = time.monotonic()
    try:
        for i, case in enumerate(cases(seed)):
            if i >= n:
                break
            if only is not None and i != only:
                continue
            result.kinds[case.kind] += 1
            result.requests += case.requests
            try:
                out = exchange(address, case, idle, limit)
            except OSError as e:
                out = Outcome(problems=[f"connection: {e}"])
            for r in out.responses:
                result.statuses["bare 400" if r.bare else str(r.code)] += 1
            if out.responses and any(r.stream for r in out.responses):
                result.outcomes["stream opened"] += 1
            elif out.responses:
                result.outcomes["answered"] += 1
            elif out.closed:
                result.outcomes["closed without an answer"] += 1
            else:
                result.outcomes["no answer (incomplete request)"] += 1
            for problem in out.problems:
                result.failures.append(f"case {i} ({case.kind}): {problem}: {case.data[:200]!r}")
            if (i + 1) % probe_every == 0 or i == n - 1:
                result.probes += 1
                missed = probe(address, watcher, i, limit)
                if missed is None:
                    result.probes_received += 1
                else:
                    result.failures.append(f"after case {i}: {missed}")
                if not alive():
                    result.failures.append(f"after case {i}: the server is gone")
                    break
                if watcher.ended is not None:
                    result.failures.append(f"after case {i}: watching stream: {watcher.ended}")
                    break
            if progress is not None and (i + 1) % 10000 == 0:
                progress(
                    f"{i + 1} cases, {time.monotonic() - started:.0f} s, "
                    f"{len(result.failures)} failures"
                )
    finally:
        result.seconds = time.monotonic() - started
        watcher.stop()
    return result


def summary(result: Result) -> str:
    lines = [
        f"fuzz: {result.n} cases ({result.requests} requests) in {result.seconds:.1f} s, seed {result.seed}",
        "  kinds:    " + ", ".join(f"{k} {v}" for k, v in sorted(result.kinds.items())),
        "  answers:  " + ", ".join(f"{k} {v}" for k, v in sorted(result.statuses.items())),
        "  outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(result.outcomes.items())),
        f"  probes:   {result.probes_received}/{result.probes} received by the watching stream",
    ]
    if result.log_problems:
        lines.append("  logs:")
        lines += ["    " + p for p in result.log_problems]
    if result.failures:
        lines.append(f"  FAILURES ({len(result.failures)}):")
        lines += ["    " + f for f in result.failures[:30]]
    lines.append("  result:   " + ("OK" if result.ok else "FAILED"))
    return "\n".join(lines)


def options(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Send random and mutated raw HTTP requests to Notificator and check every answer."
    )
    p.add_argument("--n", type=int, default=2000, help="cases (connections) to send (default 2000)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    p.add_argument("--only", type=int, default=None, help="send only case number I of the seed")
    p.add_argument("--probe-every", type=int, default=50, help="publish a probe every K cases")
    p.add_argument(
        "--idle",
        type=float,
        default=0.02,
        help="seconds of silence after which a request counts as unanswered (then half-closed)",
    )
    p.add_argument("--timeout", type=float, default=10.0, help="longest wait for one case or probe")
    p.add_argument("--url", default="", help="a running server (loopback only); default: start one")
    p.add_argument(
        "--log",
        action="append",
        default=[],
        help="with --url: a log file of that server to scan (repeatable)",
    )
    p.add_argument(
        "--workdir", default="", help="directory for the started server (default: a temporary one)"
    )
    p.add_argument("--keep", action="store_true", help="keep the started server's directory")
    p.add_argument("--json", default="", help="write the result as JSON to this file")
    opt = p.parse_args(argv)
    if opt.n < 1 or opt.probe_every < 1:
        p.error("--n and --probe-every must be positive")
    return opt


def _always() -> bool:
    return True


def main(argv: list[str] | None = None) -> int:
    opt = options(argv)
    seed = opt.seed if opt.seed is not None else random.randrange(2**32)
    server = None
    ok = False
    try:
        if opt.url:
            parts = urlsplit(opt.url)
            host = parts.hostname or "127.0.0.1"
            if host not in ("127.0.0.1", "::1", "localhost"):
                raise SystemExit("fuzz: loopback targets only")
            address = (host, parts.port or 80)
            logs = list(opt.log)
            alive: Callable[[], bool] = _always
        else:
            server = OwnServer(opt.workdir or tempfile.mkdtemp(prefix="notificator-fuzz-"))
            server.start()
            address = ("127.0.0.1", server.port)
            logs = server.logs
            alive = server.alive
        print(f"fuzz: {opt.n} cases against {address[0]}:{address[1]}, seed {seed}", flush=True)
        result = run(
            address,
            opt.n,
            seed,
            opt.probe_every,
            opt.idle,
            opt.timeout,
            alive,
            opt.only,
            progress=lambda s: print("fuzz: " + s, flush=True),
        )
        if server is not None:
            if not server.alive():
                result.failures.append("the server exited during the run")
            code = server.stop()
            # twistd ends itself with the signal it stopped for (-15).
            if code not in (0, -signal.SIGTERM, None):
                result.failures.append(f"twistd exited {code} on SIGTERM")
        if logs:
            result.log_problems = scan_logs(logs)
        else:
            print("fuzz: no log files to scan (give --log with --url)")
        print(summary(result))
        if opt.json:
            with open(opt.json, "w", encoding="utf-8") as f:
                json.dump(result.as_dict(), f, indent=1)
        ok = result.ok
        return 0 if ok else 1
    finally:
        if server is not None:
            server.stop()
            if ok and not opt.keep and not opt.workdir:
                shutil.rmtree(server.dir, ignore_errors=True)
            else:
                print(f"fuzz: the server's files are in {server.dir}")


if __name__ == "__main__":
    sys.exit(main())
