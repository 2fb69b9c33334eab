"""
End-to-end: the real C{twistd -n notificator}, installed as a user installs
it, on a loopback port, driven by a real HTTP client.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from urllib.parse import quote, urlencode

from twisted.trial.unittest import SynchronousTestCase

from notificator.auth import sign_stream
from notificator.config import FD_MARGIN, stream_limit
from notificator.events import event_key
from notificator.history import read_journal
from tests.support import (
    Server,
    base_config,
    free_port,
    parse_frames,
    raw_request,
    wait_until,
)

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
        other.nothing_more(1.2)

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

    def test_config_without_default_json(self) -> None:
        """
        A config directory with only local.json: the installed package's
        shipped defaults give the rest (retry 3000, no other origin, log/).
        """
        server = Server(self, conf_files={"local": {"sse": {"cookie": "uid"}}}).start()
        stream = server.subscribe("/sse/u1", {"Origin": "https://gw.example.com"})
        self.assertEqual(stream.status, 200)
        self.assertIsNone(stream.headers["Access-Control-Allow-Origin"])
        self.assertEqual(parse_frames(stream.next_block()), [{"retry": "3000"}])
        self.assertEqual(stream.next_event()["event"], "connect")
        by_cookie = server.subscribe("/sse", {"Cookie": "uid=u2"})
        self.assertEqual(json.loads(by_cookie.next_event()["data"])["userId"], "u2")
        server.wait_for_log(r"stream \d+ opened for u1", name="sse.log")

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


class ReplayEndToEndTests(SynchronousTestCase):
    """A real client dropped and reconnecting: it gets what it missed, once, in order."""

    def setUp(self) -> None:
        self.server = Server(self, local=base_config(heartbeat=False, keepalive=0)).start()

    def publish(self, user: str, n: int) -> str:
        status, reply = self.server.post(f"id=notify_{user}&data={n}", FORM)
        self.assertEqual(status, 200)
        return reply["eventId"]

    def test_reconnect_with_each_spelling(self) -> None:
        """Header, lastEventId, last_event_id, evs_last_event_id: the missed ones, then live."""
        stream = self.server.subscribe("/sse/u5")
        self.assertEqual(stream.next_event()["event"], "connect")
        seen = self.publish("u5", 0)
        self.assertEqual(stream.next_event()["id"], seen)
        stream.close()
        for how in ["header", "lastEventId", "last_event_id", "evs_last_event_id"]:
            missed = [self.publish("u5", n) for n in range(1, 4)]
            headers = {"Last-Event-ID": seen} if how == "header" else {}
            path = "/sse/u5" if how == "header" else f"/sse/u5?{how}={seen}"
            again = self.server.subscribe(path, headers)
            connect = again.next_event()
            self.assertEqual(json.loads(connect["data"])["replay"], "complete", how)
            got = [again.next_event()["id"] for _ in missed]
            self.assertEqual(got, missed, how)
            live = self.publish("u5", 9)
            self.assertEqual(again.next_event()["id"], live, how)
            again.close()
            seen = live


class GapSignalEndToEndTests(SynchronousTestCase):
    def test_gap_signal(self) -> None:
        """Away for more than is kept: connect says truncated, then reset, then what is kept."""
        server = Server(self, local=base_config(history={"size": 2})).start()
        first = server.post("id=notify_u6&data=0", FORM)[1]["eventId"]
        ids = [server.post(f"id=notify_u6&data={n}", FORM)[1]["eventId"] for n in range(1, 5)]
        stream = server.subscribe("/sse/u6", {"Last-Event-ID": first})
        self.assertEqual(json.loads(stream.next_event()["data"])["replay"], "truncated")
        reset = stream.next_event()
        self.assertEqual(reset["event"], "reset")
        self.assertEqual(json.loads(reset["data"])["reason"], "expired")
        self.assertEqual([stream.next_event()["id"] for _ in range(2)], ids[2:])


class OldIEEndToEndTests(SynchronousTestCase):
    def test_preamble_and_buffer_limit(self) -> None:
        """The 2 KB preamble on request; evs_buffer_size_limit ends the response (chunked end)."""
        server = Server(self, local=base_config(heartbeat=False, keepalive=0)).start()
        stream = server.subscribe("/sse/ie?evs_preamble=1&evs_buffer_size_limit=4096")
        first = stream.next_block()
        self.assertEqual(first, b":" + b" " * 2048 + b"\n\n")
        self.assertEqual(stream.next_event()["event"], "connect")
        ids = [
            server.post('id=notify_ie&data="' + "x" * 300 + '"', FORM)[1]["eventId"]
            for _ in range(20)
        ]
        got = []
        while True:
            try:
                got.append(stream.next_event()["id"])
            except ConnectionError:
                break
        self.assertTrue(0 < len(got) < 20, got)
        again = server.subscribe(f"/sse/ie?evs_last_event_id={got[-1]}")
        again.next_event()  # connect
        rest = [again.next_event()["id"] for _ in range(20 - len(got))]
        self.assertEqual(got + rest, ids)


class StopEndToEndTests(SynchronousTestCase):
    def test_sigterm_drains_with_jittered_retry_and_keeps_the_history(self) -> None:
        """
        SIGTERM: /health says 503, each open stream gets a retry: within
        sse.retry + sse.drainSeconds and ends, the process exits in time, and
        the history is on disk for the next start.
        """
        local = base_config(heartbeat=False, keepalive=0, retry=1000, drainSeconds=2)
        server = Server(self, local=local).start()
        streams = [server.subscribe(f"/sse/d{n}") for n in range(12)]
        for s in streams:
            s.next_event()
        for n in range(12):
            server.post(f"id=notify_d{n}&data={n}", FORM)
            streams[n].next_event()
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        # Once the signal is handled (the drain lasts 2 s): 503, draining.
        status, _, body = wait_until(
            lambda: (answer := server.request("GET", "/health"))[0] == 503 and answer, 1.5
        )
        self.assertEqual(json.loads(body)["status"], "draining")
        # A stream that comes now is told to come back, and ended.
        late = server.subscribe("/sse/late")
        late.conn.sock.settimeout(5)
        self.assertIn("retry", parse_frames(late.next_block())[0])
        self.assertRaises(ConnectionError, late.next_block)
        retries = []
        for s in streams:
            s.conn.sock.settimeout(10)
            block = parse_frames(s.next_block())
            retries.append(int(block[0]["retry"]))
            self.assertRaises(ConnectionError, s.next_block)
        self.assertTrue(all(1000 <= r <= 3000 for r in retries), retries)
        self.assertGreater(len(set(retries)), 6)
        server.process.wait(15)
        self.assertLess(time.monotonic() - started, 10)
        with open(os.path.join(server.dir, "var", "history", "history.log"), "rb") as f:
            loaded = read_journal(f.read())
        self.assertTrue(loaded.clean)
        self.assertEqual(sorted(loaded.users), sorted(f"d{n}" for n in range(12)))

    def test_history_survives_a_restart(self) -> None:
        """SIGTERM and start again on the same port: a client with its last id gets the rest."""
        port = free_port()
        listen = f"tcp:{port}:interface=127.0.0.1"
        server = Server(self, local=base_config(), listen=listen).start()
        first = server.post("id=notify_r&data=1", FORM)[1]["eventId"]
        later = [server.post(f"id=notify_r&data={n}", FORM)[1]["eventId"] for n in (2, 3)]
        again = server.restart()
        stream = again.subscribe("/sse/r", {"Last-Event-ID": first})
        self.assertEqual(json.loads(stream.next_event()["data"])["replay"], "complete")
        self.assertEqual([stream.next_event()["id"] for _ in later], later)
        newer = again.post("id=notify_r&data=4", FORM)[1]["eventId"]
        self.assertGreater(event_key(newer), event_key(later[-1]))

    def test_a_stream_that_got_nothing_misses_nothing_across_a_restart(self) -> None:
        """
        A stream that received only its connect: the server restarts
        (SIGTERM, the history kept), a notification for its user is
        accepted while it is away, and the client reconnects with the id
        its connect carried (as EventSource does): it gets that
        notification, once.
        """
        port = free_port()
        listen = f"tcp:{port}:interface=127.0.0.1"
        server = Server(self, local=base_config(heartbeat=False), listen=listen).start()
        stream = server.subscribe("/sse/q")
        connect = stream.next_event()
        self.assertEqual(connect["event"], "connect")
        self.assertIsNotNone(stream.last_event_id)
        again = server.restart()
        self.assertRaises(ConnectionError, lambda: [stream.next_block() for _ in range(9)])
        stream.close()
        status, reply = again.post("id=notify_q&data=1", FORM)
        self.assertEqual((status, reply["delivered"]), (200, 0))
        again.post("id=notify_other&data=2", FORM)
        back = again.subscribe("/sse/q", stream.resume_headers())
        connect = back.next_event()
        self.assertEqual(json.loads(connect["data"])["replay"], "complete")
        event = back.next_event()
        self.assertEqual((event["event"], event["id"]), ("notify", reply["eventId"]))
        back.nothing_more(1.0)

    def test_corrupt_history_is_set_aside(self) -> None:
        """A damaged history file: one warning, the server starts, clients get a reset."""
        server = Server(self, local=base_config())
        directory = os.path.join(server.dir, "var", "history")
        os.makedirs(directory)
        with open(os.path.join(directory, "history.log"), "wb") as f:
            f.write(b"NOTIFICATOR-HISTORY 1\n" + os.urandom(300))
        server.start()
        server.wait_for_log("set aside as")
        self.assertNotIn("Traceback", server.log())
        self.assertEqual(len(re.findall("set aside", server.log())), 1)
        stream = server.subscribe("/sse/x", {"Last-Event-ID": "1700000000000-0"})
        self.assertEqual(json.loads(stream.next_event()["data"])["replay"], "truncated")
        self.assertEqual(json.loads(stream.next_event()["data"])["reason"], "lost")


class GuardEndToEndTests(SynchronousTestCase):
    def test_publish_refused_before_the_body_is_read(self) -> None:
        """Outside publish.allow, a 64 MiB announcement is answered 403 at once, and nothing is delivered."""
        server = Server(self, local={**base_config(), "publish": {"allow": ["10.0.0.0/8"]}}).start()
        head = (
            b"POST /webNotification HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 67108864\r\n\r\nid=notify_u1&data=1"
        )
        started = time.monotonic()
        reply = raw_request(server.port, head, timeout=5)
        self.assertLess(time.monotonic() - started, 3)
        self.assertTrue(reply.startswith(b"HTTP/1.1 403 "), reply[:200])
        self.assertTrue(reply.endswith(b'{"error": "address not allowed"}'), reply)
        server.wait_for_log(
            r"refused publish from 127\.0\.0\.1: 403 address not allowed", name="sse.log"
        )

    def test_trusted_proxy_names_the_client(self) -> None:
        """X-Forwarded-For is believed from a trusted proxy only, rightmost untrusted hop first."""
        local = {
            **base_config(),
            "server": {"trustedProxies": ["127.0.0.1/32"], "log": {"level": "debug"}},
            "publish": {"allow": ["10.0.0.0/8"]},
        }
        server = Server(self, local=local).start()
        stream = server.subscribe("/sse/p1", {"X-Forwarded-For": "10.9.9.9"})
        stream.next_event()

        def post(xff: str) -> int:
            return server.request(
                "POST",
                "/webNotification",
                "id=notify_p1&data=1",
                {"Content-Type": FORM, "X-Forwarded-For": xff},
            )[0]

        self.assertEqual(post("10.1.2.3"), 200)
        self.assertEqual(post("10.1.2.3, 192.168.0.9"), 403)
        self.assertEqual(post("192.168.0.9, 10.1.2.3"), 200)  # the client wrote the left one
        server.wait_for_log(r"stream 1 opened for p1 from 10\.9\.9\.9", name="sse.log")
        server.wait_for_log(r'"10\.1\.2\.3" - - .*"POST /webNotification', name="access.log")
        untrusted = Server(
            self, local={**base_config(), "publish": {"allow": ["10.0.0.0/8"]}}
        ).start()
        status = untrusted.request(
            "POST",
            "/webNotification",
            "id=notify_p1&data=1",
            {"Content-Type": FORM, "X-Forwarded-For": "10.1.2.3"},
        )[0]
        self.assertEqual(status, 403)

    def test_spoofed_forwarding_from_an_untrusted_peer(self) -> None:
        """
        With the shipped config (no server.trustedProxies), a client on
        loopback (in publish.allow and monitor.allow) that sends
        X-Forwarded-For: 127.0.0.1 or Forwarded: for=127.0.0.1 is unknown,
        as anyone behind a proxy that is not trusted: its publish and its
        /users get 403 naming server.trustedProxies, and sse.log names the
        peer; /health and the scripts answer; a stream opens, marked
        unknown.  Raw sockets, as an attacker would send.
        """
        server = Server(self, local=base_config()).start()
        stream = server.subscribe("/sse/u1", {})
        self.assertEqual(stream.next_event()["event"], "connect")
        body = b"id=notify_u1&data=%7B%22n%22%3A1%7D"
        for spoof in (
            b"X-Forwarded-For: 127.0.0.1",
            b"Forwarded: for=127.0.0.1",
            b"X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 127.0.0.1",
        ):
            reply = raw_request(
                server.port,
                b"POST /webNotification HTTP/1.1\r\nHost: x\r\n%s\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (spoof, len(body), body),
            )
            self.assertTrue(reply.startswith(b"HTTP/1.1 403 "), reply[:300])
            _, _, answer = reply.partition(b"\r\n\r\n")
            self.assertEqual(
                json.loads(answer),
                {"error": "unknown client: forwarded by a proxy not in server.trustedProxies"},
            )
            for path in (b"/users", b"/metrics"):
                reply = raw_request(
                    server.port,
                    b"GET %s HTTP/1.1\r\nHost: x\r\n%s\r\nConnection: close\r\n\r\n"
                    % (path, spoof),
                )
                self.assertTrue(reply.startswith(b"HTTP/1.1 403 "), (path, reply[:300]))
                self.assertIn(b"server.trustedProxies", reply)
            for path in (b"/health", b"/javascripts/eventSourceClient.js"):
                reply = raw_request(
                    server.port,
                    b"GET %s HTTP/1.1\r\nHost: x\r\n%s\r\nConnection: close\r\n\r\n"
                    % (path, spoof),
                )
                self.assertTrue(reply.startswith(b"HTTP/1.1 200 "), (path, reply[:300]))
        server.wait_for_log(
            r"refused publish from unknown via 127\.0\.0\.1: 403 unknown client: forwarded"
            r" by a proxy not in server\.trustedProxies",
            name="sse.log",
        )
        server.wait_for_log(
            r"refused GET /users from unknown via 127\.0\.0\.1: 403 unknown client",
            name="sse.log",
        )
        # Nothing was published: the next event is that of the same client
        # without the header.
        self.assertEqual(server.post(body, FORM)[0], 200)
        self.assertEqual(stream.next_event()["data"], '{"n":1}')
        # A stream through the "proxy" opens, and is shown unknown.
        spoofed = server.subscribe("/sse/u2", {"X-Forwarded-For": "127.0.0.1"})
        self.assertEqual(spoofed.next_event()["event"], "connect")
        server.wait_for_log(
            r"stream \d+ opened for u2 from unknown via 127\.0\.0\.1", name="sse.log"
        )
        users = json.loads(server.request("GET", "/users")[2])["users"]
        self.assertEqual(
            {u["userId"]: u["remoteAddresses"] for u in users},
            {"u1": ["127.0.0.1"], "u2": ["unknown via 127.0.0.1"]},
        )

    def test_monitor_allow_through_a_trusted_proxy(self) -> None:
        """
        monitor.allow guards /, /users and /metrics by the client's address
        (behind a trusted proxy, the one X-Forwarded-For names); /health
        and the groupware's script stay open.
        """
        local = {
            **base_config(),
            "server": {"trustedProxies": ["127.0.0.1/32"]},
            "monitor": {"allow": ["10.0.0.0/8"]},
        }
        server = Server(self, local=local).start()
        for path in ("/", "/users", "/metrics"):
            status, _, _ = server.request("GET", path)
            self.assertEqual(status, 403, path)
            status, _, _ = server.request("GET", path, headers={"X-Forwarded-For": "10.1.2.3"})
            self.assertEqual(status, 200, path)
            status, _, _ = server.request("GET", path, headers={"X-Forwarded-For": "192.0.2.1"})
            self.assertEqual(status, 403, path)
        for path in ("/health", "/javascripts/eventSourceClient.js"):
            self.assertEqual(server.request("GET", path)[0], 200, path)
        server.wait_for_log(r"refused GET /users from 192\.0\.2\.1: 403", name="sse.log")

    def test_token_and_signatures(self) -> None:
        """The publish token and subscriber signatures on the real server."""
        secret = "k8Vq2-notificator-example-secret"
        token = "a-publish-token-0123456789"
        local = {
            **base_config(auth={"secret": secret}),
            "publish": {"allow": ["127.0.0.1/32"], "token": token},
        }
        server = Server(self, local=local).start()
        now = int(time.time())
        status, _, body = server.request("GET", "/sse/u1")
        self.assertEqual((status, json.loads(body)), (401, {"error": "missing signature"}))
        status, _, _ = server.request("GET", f"/sse/u1?auth={sign_stream(secret, 'u2', now + 60)}")
        self.assertEqual(status, 401)
        status, _, body = server.request(
            "GET", f"/sse/u1?auth={sign_stream(secret, 'u1', now - 1)}"
        )
        self.assertEqual((status, json.loads(body)), (401, {"error": "expired signature"}))
        stream = server.subscribe(f"/sse/u1?auth={sign_stream(secret, 'u1', now + 60)}")
        self.assertEqual(stream.next_event()["event"], "connect")
        self.assertEqual(server.post("id=notify_u1&data=1", FORM)[0], 403)
        self.assertEqual(server.post("id=notify_u1&data=1&token=wrong-token", FORM)[0], 403)
        self.assertEqual(server.post(f"id=notify_u1&data=2&token={token}", FORM)[0], 200)
        self.assertEqual(stream.next_event()["data"], "2")
        # As a Bearer header; a wrong one is refused before the body is read.
        bearer = {"Content-Type": FORM, "Authorization": f"Bearer {token}"}
        self.assertEqual(
            server.request("POST", "/webNotification", "id=notify_u1&data=3", bearer)[0], 200
        )
        self.assertEqual(stream.next_event()["data"], "3")
        reply = raw_request(
            server.port,
            b"POST /webNotification HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 67108864\r\n\r\nid=notify_u1&data=4",
            timeout=5,
        )
        self.assertTrue(reply.startswith(b"HTTP/1.1 403 "), reply[:200])
        server.wait_for_log("expired signature", name="sse.log")
        for name in ("sse.log", "access.log"):
            self.assertNotIn(token, server.log(name))
        self.assertNotIn(token, server.log())

    def test_stream_caps(self) -> None:
        """limits.streamsPerUser: the extra tab gets 200, a long retry, and the end."""
        server = Server(self, local={**base_config(), "limits": {"streamsPerUser": 2}}).start()
        tabs = [server.subscribe("/sse/c1") for _ in range(2)]
        for tab in tabs:
            tab.next_event()
        extra = server.subscribe("/sse/c1")
        self.assertEqual(extra.status, 200)
        self.assertGreaterEqual(int(parse_frames(extra.next_block())[0]["retry"]), 30000)
        self.assertRaises(ConnectionError, extra.next_block)
        status, _, body = server.request("GET", "/metrics")
        self.assertIn(b'notificator_streams_refused_total{reason="user-limit"} 1.0', body)

    def test_total_cap_from_the_open_file_limit(self) -> None:
        """
        limits.streams null (the default): limits.connections (null: the
        process's open-file limit less the margin) less a reserve for
        publishes and /health; the stream past it gets 200, a long retry and
        the end, a publish still goes through, and nothing fails for lack of
        file descriptors.
        """
        nofile = FD_MARGIN + 24
        cap = stream_limit(None, 24)
        self.assertEqual(cap, 12)
        server = Server(self, local={**base_config(), "limits": {"streamsPerUser": 100}})
        server.command = ["sh", "-c", f'ulimit -n {nofile} && exec "$@"', "sh", *server.command]
        server.start()
        streams = [server.subscribe(f"/sse/t{n}") for n in range(cap)]
        for stream in streams:
            stream.next_event()
        extra = server.subscribe("/sse/t-extra")
        self.assertEqual(extra.status, 200)
        self.assertGreaterEqual(int(parse_frames(extra.next_block())[0]["retry"]), 30000)
        self.assertRaises(ConnectionError, extra.next_block)
        status, _, body = server.request("GET", "/metrics")
        self.assertIn(b'notificator_streams_refused_total{reason="server-limit"} 1.0', body)
        self.assertIn(b"notificator_streams 12.0", body)
        self.assertEqual(server.post("id=notify_t0&data=1", FORM)[0], 200)
        self.assertEqual(streams[0].next_event()["data"], "1")
        for log in (server.log(), server.log("sse.log")):
            self.assertNotIn("Too many open files", log)
            self.assertNotIn("Traceback", log)
