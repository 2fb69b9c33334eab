"""
End-to-end attacks on the publish body (issue 17, items 4 and 8): the real
C{twistd -n notificator} on a loopback port, driven over raw sockets and
C{http.client}.

 - a charset whose decoder is slow (punycode) or is no text encoding is
   refused 415 before a byte is decoded, and the server answers at once;
 - the Windows name of the Korean code page (C{ks_c_5601-1987}) publishes
   what EUC-KR cannot hold;
 - the publish token is checked before the id and data are decoded;
 - an event name with a trailing newline, a user id or data with a lone
   surrogate, a number out of a double's range: each a 400 JSON, nothing
   recorded, nothing on any stream.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote

from twisted.trial.unittest import SynchronousTestCase

from tests.support import Server, base_config, raw_request, split_response

FORM = "application/x-www-form-urlencoded"


def published(server: Server) -> float:
    """C{notificator_published_total} from C{/metrics}."""
    status, _, body = server.request("GET", "/metrics")
    assert status == 200, body
    m = re.search(rb"^notificator_published_total (\S+)$", body, re.M)
    assert m is not None, body
    return float(m.group(1))


def publish(server: Server, body: bytes, content_type: str) -> tuple[int, dict[str, Any]]:
    status, headers, raw = server.request(
        "POST", "/webNotification", body, {"Content-Type": content_type}
    )
    assert headers["Content-Type"] == "application/json; charset=utf-8", (status, raw[:300])
    return status, json.loads(raw)


class CharsetEndToEndTests(SynchronousTestCase):
    def setUp(self) -> None:
        local = base_config(heartbeat=False, keepalive=0)
        self.server = Server(self, local=local).start()

    def test_punycode_megabyte_is_415_and_the_server_answers_at_once(self) -> None:
        """
        A megabyte in charset=punycode (whose decoder held the reactor for
        seconds) is 415 before it is decoded; /health answers right after,
        nothing is published and the open stream gets nothing.
        """
        stream = self.server.subscribe("/sse/u1")
        self.assertEqual(stream.next_event()["event"], "connect")
        # Valid punycode: "notify_u1-" is notify_u1, and "-" then "a"s is one
        # insertion per byte (quadratic: seconds of decoding).
        body = b"id=notify_u1-&data=-" + b"a" * 1_000_000
        status, reply = publish(self.server, body, FORM + "; charset=punycode")
        self.assertEqual(status, 415)
        self.assertEqual(
            reply,
            {
                "error": "unsupported charset 'punycode' (use UTF-8, EUC-KR, CP949,"
                " ISO-8859-1 or US-ASCII)"
            },
        )
        self.assertEqual(self.server.request("GET", "/health")[0], 200)
        for charset in ("idna", "undefined", "utf-16", "base64_codec"):
            self.assertEqual(
                publish(self.server, b"id=notify_u1&data=1", f"{FORM}; charset={charset}")[0], 415
            )
        self.assertEqual(published(self.server), 0)
        stream.nothing_more(0.3)
        self.server.wait_for_log(
            r"rejected publish from 127\.0\.0\.1: 415 unsupported charset 'punycode'",
            name="sse.log",
        )
        self.assertNotIn("Traceback", self.server.log() + self.server.log("sse.log"))

    def test_windows_korean_name_publishes(self) -> None:
        """
        ks_c_5601-1987, as Windows senders label CP949, publishes Korean that
        EUC-KR has not (똠, 펲), byte-exact to the stream.
        """
        stream = self.server.subscribe("/sse/001000210")
        self.assertEqual(stream.next_event()["event"], "connect")
        data = {"title": "똠방각하 펲 결재 요청"}
        text = json.dumps(data, ensure_ascii=False)
        body = b"id=notify_001000210&data=" + quote(text, encoding="cp949").encode("ascii")
        status, reply = publish(self.server, body, FORM + "; charset=ks_c_5601-1987")
        self.assertEqual((status, reply["delivered"]), (200, 1))
        event = stream.next_event()
        self.assertEqual((event["event"], event["data"]), ("notify", text))


class TokenFirstEndToEndTests(SynchronousTestCase):
    def test_token_before_the_body_is_decoded(self) -> None:
        """
        With publish.token set, a wrong or missing token is 403 even when the
        id and data are not text at all (they are never decoded); the right
        one publishes.
        """
        token = "publisher-token-0123456789"
        local = base_config(heartbeat=False, keepalive=0)
        local["publish"] = {"token": token}
        server = Server(self, local=local).start()
        cases = [
            (b"id=notify_%FF%FE&data=%FF&token=wrong", FORM, "wrong publish token"),
            (b"id=notify_%FF%FE&data=%FF", FORM, "missing publish token"),
            (
                b'{"id": 5, "data": [1e999], "token": "wrong"}',
                "application/json",
                "wrong publish token",
            ),
            (b'{"id":"no\\ntify_\\ud800","token":"x"}=', FORM, "wrong publish token"),
        ]
        for body, content_type, reason in cases:
            self.assertEqual(publish(server, body, content_type), (403, {"error": reason}), body)
        self.assertEqual(published(server), 0)
        stream = server.subscribe("/sse/u1")
        stream.next_event()
        ok = f"id=notify_u1&data=1&token={token}".encode()
        self.assertEqual(publish(server, ok, FORM)[0], 200)
        self.assertEqual(stream.next_event()["data"], "1")
        log = server.log("sse.log")
        self.assertIn("refused publish from 127.0.0.1: 403 wrong publish token", log)
        self.assertNotIn(token, log)


class SlipsEndToEndTests(SynchronousTestCase):
    """What ended in a 500 or broken JSON is a 400 JSON, before anything is recorded."""

    def setUp(self) -> None:
        local = base_config(heartbeat=False, keepalive=0)
        self.server = Server(self, local=local).start()

    def test_event_name_with_a_trailing_newline(self) -> None:
        """id=notify%0A_u1 was a 500 HTML page; it is a 400 JSON and nothing is sent."""
        stream = self.server.subscribe("/sse/u1")
        stream.next_event()
        body = b"id=notify%0A_u1&data=1"
        raw = raw_request(
            self.server.port,
            b"POST /webNotification HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body),
        )
        status, headers, answer = split_response(raw)
        self.assertEqual(status, b"HTTP/1.1 400 Bad Request", raw[:300])
        self.assertEqual(headers[b"content-type"], b"application/json; charset=utf-8")
        self.assertIn("event name", json.loads(answer)["error"])
        self.assertEqual(published(self.server), 0)
        stream.nothing_more(0.3)

    def test_user_id_with_a_lone_surrogate(self) -> None:
        """
        A user id with a lone surrogate (a JSON escape) was recorded and then
        answered 500, so a retrying sender doubled it: a 400 each time, and
        nothing is recorded.
        """
        for body in (
            b'{"id": "notify_\\ud800", "data": 1}',
            b'{"id": "notify_a\\udc00b", "data": 1}',
        ):
            for _ in range(2):  # as a retrying sender sends it
                status, reply = publish(self.server, body, "application/json")
                self.assertEqual(status, 400, reply)
                self.assertIn("not valid Unicode", reply["error"])
        self.assertEqual(published(self.server), 0)
        self.assertNotIn("Traceback", self.server.log() + self.server.log("sse.log"))

    def test_data_that_would_break_the_browser(self) -> None:
        """
        1e999 (sent as Infinity, or read as Infinity by JSON.parse) and data
        with a lone surrogate: 400 JSON, the stream gets nothing, and the next
        good publish arrives intact.
        """
        stream = self.server.subscribe("/sse/u1")
        stream.next_event()
        cases = [
            (
                b'{"id": "notify_u1", "data": {"n": 1e999}}',
                "application/json",
                "number out of range",
            ),
            (b"id=notify_u1&data=-1e999", FORM, "number out of range"),
            (b"id=notify_u1&data=%5B1" + b"0" * 400 + b"%5D", FORM, "number out of range"),
            (
                b'{"id": "notify_u1", "data": {"t": "\\ud800"}}',
                "application/json",
                "not valid Unicode",
            ),
            (b"id=notify_u1&data=%22%5Cudc00%22", FORM, "not valid Unicode"),
        ]
        for body, content_type, reason in cases:
            status, reply = publish(self.server, body, content_type)
            self.assertEqual(status, 400, body)
            self.assertIn(reason, reply["error"])
        self.assertEqual(published(self.server), 0)
        good = '{"n":1e308,"t":"\\ud83d\\ude00"}'
        status, reply = publish(self.server, b"id=notify_u1&data=" + quote(good).encode(), FORM)
        self.assertEqual((status, reply["delivered"]), (200, 1))
        event = stream.next_event()
        self.assertEqual(event["data"], good)
        self.assertEqual(json.loads(event["data"]), {"n": 1e308, "t": "\U0001f600"})
