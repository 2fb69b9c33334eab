"""
End-to-end, with raw sockets against the real C{twistd -n notificator} on
loopback: what one client may hold and see when nothing is set for it.

 - C{limits.streamsPerAddress}: one address opening streams for any user
   ids cannot take every stream; other addresses (and, behind a trusted
   proxy, other clients) still open.
 - An empty C{sse.auth.secret} or C{publish.token} stops start-up instead of
   silently turning the check off.
 - C{X-Notificator-Monitor} keeps only the monitor page's own polls from an
   address of C{monitor.allow} out of C{access.log}.
 - C{/health} tells others the status alone, not the host name and counters.

Loopback is all of 127.0.0.0/8 on Linux: clients bind 127.0.0.2 and
127.0.0.3 as their source address to be other clients than 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import socket
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.support import Server, dechunk, parse_frames, split_response

#: The end of a chunked response (a turned-away stream ends with it).
LAST_CHUNK = b"\r\n0\r\n\r\n"


def connect(server: Server, source: str) -> socket.socket:
    """A connection to the server from the loopback address C{source}."""
    return socket.create_connection(
        ("127.0.0.1", server.port), timeout=10, source_address=(source, 0)
    )


def read_until(sock: socket.socket, ends: tuple[bytes, ...], timeout: float = 10.0) -> bytes:
    """What the server sends until it has sent one of C{ends} or closed; bounded."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while not any(end in data for end in ends):
        if time.monotonic() > deadline:
            raise AssertionError(f"none of {ends} within {timeout} s: {data!r}")
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def request(
    server: Server, source: str, head: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """One request (C{"GET /health"}) from C{source}; its status and (dechunked) body."""
    lines = [f"{head} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    with connect(server, source) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        raw = read_until(sock, ())
    status, fields, body = split_response(raw)
    if fields.get(b"transfer-encoding") == b"chunked":
        body = dechunk(body)
    return int(status.split()[1]), body


class StreamsPerAddressTests(SynchronousTestCase):
    def setUp(self) -> None:
        local = {
            "server": {"log": {"level": "debug"}, "trustedProxies": ["127.0.0.1/32"]},
            "sse": {"heartbeat": False},
            "limits": {"streamsPerAddress": 3},
        }
        self.server = Server(self, local=local).start()

    def stream(self, source: str, user_id: str, forwarded: str | None = None) -> socket.socket:
        """A stream request; the open socket, once the head and the first frames came."""
        sock = connect(self.server, source)
        self.addCleanup(sock.close)
        header = f"X-Forwarded-For: {forwarded}\r\n" if forwarded else ""
        sock.sendall(
            f"GET /sse/{user_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n{header}"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        self.sent = read_until(sock, (b"event: connect", LAST_CHUNK))
        return sock

    def opens(self, source: str, user_id: str, forwarded: str | None = None) -> socket.socket:
        sock = self.stream(source, user_id, forwarded)
        self.assertIn(b"event: connect", self.sent, (source, user_id))
        return sock

    def turned_away(self, source: str, user_id: str) -> None:
        """200, a long retry: and the end of the response; no connect."""
        self.stream(source, user_id)
        status, _, body = split_response(self.sent)
        self.assertEqual(status, b"HTTP/1.1 200 OK")
        self.assertTrue(body.endswith(LAST_CHUNK), body)
        (frame,) = parse_frames(dechunk(body))
        self.assertGreaterEqual(int(frame["retry"]), 30_000)

    def test_one_address_cannot_take_every_stream(self) -> None:
        """
        One address opening streams for many user ids stops at
        limits.streamsPerAddress (200, a long retry, a log line naming the
        key, a count in /metrics); another address, and another client
        behind the trusted proxy, still open; a stream that ends frees
        its place.
        """
        hog = [self.opens("127.0.0.2", f"hog{n}") for n in range(3)]
        self.turned_away("127.0.0.2", "hog3")
        self.opens("127.0.0.3", "other")
        self.opens("127.0.0.1", "proxied", forwarded="10.1.2.3")
        self.opens("127.0.0.1", "proxy-itself")
        self.server.wait_for_log(
            r"turned away a stream for hog3 from 127\.0\.0\.2: the address has"
            r" limits\.streamsPerAddress streams open; retry in \d+ ms",
            name="sse.log",
        )
        self.server.wait_for_log(r"opened for proxied from 10\.1\.2\.3 ", name="sse.log")
        _, _, metrics = self.server.request("GET", "/metrics")
        self.assertIn(b'notificator_streams_refused_total{reason="address-limit"} 1.0', metrics)
        self.assertIn(b"notificator_streams 6.0", metrics)
        hog[0].close()
        self.server.wait_for_log(r"stream \d+ of hog0 closed by the client", name="sse.log")
        self.opens("127.0.0.2", "hog4")


class EmptySecretTests(SynchronousTestCase):
    def test_empty_secret_or_token_stops_start_up(self) -> None:
        """
        "secret": "" or "token": "" (or blank) does not turn the check off:
        the server does not start, with one line naming the file and the
        key and saying to write null.
        """
        for local, key in [
            ({"sse": {"auth": {"secret": ""}}}, "sse.auth.secret"),
            ({"publish": {"token": ""}}, "publish.token"),
            ({"publish": {"token": "   "}}, "publish.token"),
        ]:
            with self.subTest(key=key, local=local):
                code, output = Server(self, local=local).run_to_exit(timeout=20)
                self.assertNotEqual(code, 0, output)
                lines = [line for line in output.splitlines() if line.strip()]
                self.assertEqual(len(lines), 1, output)
                self.assertRegex(
                    lines[0],
                    rf"^notificator: configuration error: .*/local\.json: {re.escape(key)}:"
                    r" empty, .*write null",
                )


class MonitorHeaderTests(SynchronousTestCase):
    def test_the_header_keeps_only_the_monitors_polls_out_of_access_log(self) -> None:
        """
        With monitor.allow loopback 127.0.0.1 (the default), a request from
        127.0.0.2 with X-Notificator-Monitor is in access.log like any other;
        the page's own polls from 127.0.0.1 are not, nor are they when they
        are not a GET.
        """
        server = Server(self).start()
        poll = {"X-Notificator-Monitor": "poll"}
        self.assertEqual(request(server, "127.0.0.2", "GET /health?who=outside", poll)[0], 200)
        self.assertEqual(request(server, "127.0.0.2", "GET /users?who=outside", poll)[0], 403)
        self.assertEqual(request(server, "127.0.0.1", "GET /health?who=monitor", poll)[0], 200)
        self.assertEqual(request(server, "127.0.0.1", "GET /users?who=monitor", poll)[0], 200)
        self.assertEqual(request(server, "127.0.0.1", "POST /users?who=post", poll)[0], 405)
        self.assertEqual(request(server, "127.0.0.1", "GET /health?who=last")[0], 200)
        server.wait_for_log(r"GET /health\?who=last ", name="access.log")
        access = server.log("access.log")
        self.assertRegex(access, r'"127\.0\.0\.2" - - .*"GET /health\?who=outside HTTP/1\.1" 200 ')
        self.assertRegex(access, r'"127\.0\.0\.2" - - .*"GET /users\?who=outside HTTP/1\.1" 403 ')
        self.assertRegex(access, r'"POST /users\?who=post HTTP/1\.1" 405 ')
        self.assertNotIn("who=monitor", access)


class HealthDetailsTests(SynchronousTestCase):
    def test_health_outside_monitor_allow_is_the_status_alone(self) -> None:
        """
        /health from an address outside monitor.allow: 200 {"status": "ok"},
        no host name, version or counters; from monitor.allow, all of them.
        """
        server = Server(self).start()
        status, body = request(server, "127.0.0.2", "GET /health")
        self.assertEqual((status, json.loads(body)), (200, {"status": "ok"}))
        self.assertNotIn(socket.gethostname().encode(), body)
        status, body = request(server, "127.0.0.1", "GET /health")
        doc = json.loads(body)
        self.assertEqual((status, doc["status"]), (200, "ok"))
        self.assertTrue(doc["node"].startswith(socket.gethostname()), doc)
        for key in ("version", "uptime", "users", "streams", "published", "delivered"):
            self.assertIn(key, doc)
