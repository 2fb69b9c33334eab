"""
End-to-end: the real C{twistd -n notificator}, installed as a user installs
it, on a loopback port, driven by a real HTTP client.
"""

from __future__ import annotations

import json
from urllib.parse import quote, urlencode

from twisted.trial.unittest import SynchronousTestCase

from tests.support import Server, base_config

KOREAN = {"title": "결재 요청", "body": "홍길동님; a&b=c"}
FORM_UTF8 = "application/x-www-form-urlencoded; charset=UTF-8"
FORM = "application/x-www-form-urlencoded"


class CoreEndToEndTests(SynchronousTestCase):
    """One server for the whole class would be faster, but each test gets a
    fresh one so that no test depends on another's streams."""

    def setUp(self) -> None:
        local = base_config(heartbeat=True, heartbeatInterval=1, keepalive=0)
        local["sse"]["header"] = {"Access-Control-Allow-Origin": ["http://127.0.0.2:8080"]}
        self.server = Server(self, local=local).start()

    def test_three_forms_with_korean(self) -> None:
        """Each of the three publish forms reaches a path subscriber byte-exact."""
        stream = self.server.subscribe("/sse/001000210")
        self.assertEqual(stream.status, 200)
        self.assertEqual(stream.headers["Content-Type"], "text/event-stream; charset=utf-8")
        self.assertEqual(stream.next_event()["event"], "connect")
        text = json.dumps(KOREAN, ensure_ascii=False)
        bodies = [
            (urlencode({"id": "notify_001000210", "data": text}), FORM_UTF8),
            (
                quote(json.dumps({"id": "appr_001000210", "data": KOREAN}, ensure_ascii=False))
                + "=",
                FORM,
            ),
            (
                json.dumps({"id": "notify_001000210", "data": KOREAN}, ensure_ascii=False).encode(),
                "application/json",
            ),
        ]
        for body, content_type in bodies:
            status, reply = self.server.post(body, content_type)
            self.assertEqual((status, reply["delivered"]), (200, 1))
            event = stream.next_event()
            self.assertEqual(event["id"], reply["eventId"])
            self.assertEqual(event["event"], reply["event"])
            self.assertEqual(json.loads(event["data"]), KOREAN)

    def test_cookie_tabs_and_other_user(self) -> None:
        """Three tabs (cookie and path) all receive; another user receives nothing."""
        tabs = [self.server.subscribe("/sse", {"Cookie": "userID=dept_001_a"}) for _ in range(2)]
        tabs.append(self.server.subscribe("/sse/dept_001_a"))
        other = self.server.subscribe("/sse/dept_001_b")
        for s in tabs + [other]:
            self.assertEqual(s.next_event()["event"], "connect")
        status, reply = self.server.post("id=notify_dept_001_a&data=%7B%22n%22%3A1%7D", FORM)
        self.assertEqual((reply["userId"], reply["delivered"]), ("dept_001_a", 3))
        for s in tabs:
            self.assertEqual(s.next_event()["data"], '{"n":1}')
        # The other user sees heartbeats only: wait past one, then nothing else.
        other.conn.sock.settimeout(2.5)
        self.assertEqual(other.next_event(skip=())["event"], "heartbeat")

    def test_heartbeat(self) -> None:
        """Heartbeats arrive every sse.heartbeatInterval with JSON data."""
        stream = self.server.subscribe("/sse/u1")
        stream.next_event()
        beats = [stream.next_event(skip=("connect",)) for _ in range(2)]
        for beat in beats:
            self.assertEqual(beat["event"], "heartbeat")
            self.assertIsInstance(json.loads(beat["data"])["time"], int)

    def test_cors(self) -> None:
        """An allowed origin is echoed with credentials; preflights are answered."""
        stream = self.server.subscribe("/sse/u1", {"Origin": "http://127.0.0.2:8080"})
        self.assertEqual(stream.headers["Access-Control-Allow-Origin"], "http://127.0.0.2:8080")
        self.assertEqual(stream.headers["Access-Control-Allow-Credentials"], "true")
        status, headers, _ = self.server.request(
            "OPTIONS",
            "/sse/u1",
            headers={
                "Origin": "http://127.0.0.2:8080",
                "Access-Control-Request-Headers": "last-event-id",
            },
        )
        self.assertEqual(status, 204)
        self.assertIn("Last-Event-ID", headers["Access-Control-Allow-Headers"])
        other = self.server.subscribe("/sse/u1", {"Origin": "http://evil.example"})
        self.assertIsNone(other.headers["Access-Control-Allow-Origin"])

    def test_refusals_then_still_serving(self) -> None:
        """401, 400s, 415 and 405 are answered cleanly and the server keeps serving."""
        status, _, body = self.server.request("GET", "/sse")
        self.assertEqual(status, 401)
        stream = self.server.subscribe("/sse/u1")
        stream.next_event()
        for body, content_type, code in [
            ("", FORM, 400),
            ("id=nounderscore", FORM, 400),
            ("id=bad%0Aevent_u1&data=1", FORM, 400),
            ("{not json", "application/json", 400),
            (b"id=a_u1&data=\xff", FORM, 400),
            ("id=a_u1", "text/plain", 415),
        ]:
            self.assertEqual(self.server.post(body, content_type)[0], code, body)
        self.assertEqual(self.server.request("GET", "/webNotification")[0], 405)
        status, reply = self.server.post("id=notify_u1&data=1", FORM)
        self.assertEqual((status, reply["delivered"]), (200, 1))
        self.assertEqual(stream.next_event()["data"], "1")
        self.assertNotIn("Traceback", self.server.log())
        # Warnings are written to sse.log at once; not to twistd's log.
        self.assertIn("rejected publish", self.server.log("sse.log"))
        self.assertNotIn("rejected publish", self.server.log())

    def test_disconnect_detaches(self) -> None:
        """A client that goes away is detached: publishes then reach nobody."""
        stream = self.server.subscribe("/sse/gone")
        stream.next_event()
        stream.close()
        self.server.wait_for_log(r"stream \d+ of gone closed", name="sse.log")
        status, reply = self.server.post("id=notify_gone&data=1", FORM)
        self.assertEqual(reply["delivered"], 0)


class StartupTests(SynchronousTestCase):
    def test_bad_config_one_line(self) -> None:
        """A wrong type stops start-up with one clear line naming the file and key."""
        server = Server(self, local={"server": {"port": "3443a"}})
        code, output = server.run_to_exit()
        self.assertNotEqual(code, 0)
        self.assertNotIn("Traceback", output)
        lines = [line for line in output.splitlines() if line.strip()]
        self.assertEqual(len(lines), 1, output)
        self.assertRegex(lines[0], r"local\.json: server\.port: expected an integer")

    def test_sigterm_closes_streams(self) -> None:
        """On SIGTERM the server ends open streams cleanly and exits 0."""
        server = Server(self, local=base_config()).start()
        stream = server.subscribe("/sse/u1")
        stream.next_event()
        server.stop()
        # twistd re-raises the signal it stopped on, so the exit status is SIGTERM's.
        self.assertIn(server.process.returncode, (0, -15))
        self.assertIn("Server Shut Down", server.log())
        # The response was finished (terminating chunk), not cut off mid-stream.
        e = self.assertRaises(ConnectionError, stream.next_event)
        self.assertEqual(str(e), "stream ended")
