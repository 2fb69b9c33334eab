"""
End-to-end tests of the limits (C{limits.*}, L{notificator.http.request},
L{notificator.http.stream}) against the real C{twistd -n notificator} on
loopback, with raw sockets: clients that never read (HTTP/1.1 and HTTP/2),
slowloris clients (a half-sent head, a trickled head, over TCP and TLS),
bodies over the limit while they are sent (HTTP/1.1, TLS, HTTP/2) and too
many form fields.  The HTTP/1.1 tests run with the fast channel and with
twisted.web's stock one (C{server.fastChannel}); the limits are small, so
every wait is short and bounded.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import ssl
import time
from typing import Any

import h2.errors
import h2.events
import h2.settings
from twisted.trial.unittest import SynchronousTestCase

from notificator.config import FD_MARGIN
from tests.support import Server, stock_channel, wait_until
from tests.tlssupport import Certs, H2Client, TLSServer, client_context, server_config

FORM = "application/x-www-form-urlencoded"
LIMITS = {
    "bodyBytes": 4096,
    "formFields": 10,
    "headerTimeout": 1.5,
    "bodyTimeout": 2,
    "bufferBytes": 65536,
}

#: Linux TCP states (tcp_states.h), as TCP_INFO reports them.
TCP_ESTABLISHED = 1


#: The slow-reader tests publish bigger notifications, to pass the buffer cap sooner.
BIG_BODIES = {**LIMITS, "bodyBytes": 65536}


def local(fast: bool | None, limits: dict[str, Any] = LIMITS, **sse: Any) -> dict[str, Any]:
    server: dict[str, Any] = {"log": {"level": "debug"}}
    if fast is not None:
        server["fastChannel"] = fast
    return {"server": server, "limits": limits, "sse": {"heartbeat": False, **sse}}


def tcp_state(sock: socket.socket) -> int:
    """The kernel's TCP state of C{sock} (without reading from it)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes (EOF or reset); fail after C{timeout}."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
        if time.monotonic() > deadline:
            raise AssertionError(f"still open after {timeout} s: {data!r}")


class Publisher:
    """A keep-alive publisher connection."""

    def __init__(self, server: Server) -> None:
        self.conn = server.connection()

    def post(self, user: str, data: Any) -> tuple[int, dict[str, Any]]:
        body = json.dumps({"id": f"notify_{user}", "data": data})
        self.conn.request("POST", "/webNotification", body, {"Content-Type": "application/json"})
        response = self.conn.getresponse()
        return response.status, json.loads(response.read())

    def close(self) -> None:
        self.conn.close()


class Both:
    """The HTTP/1.1 tests, with the fast channel; subclassed for the stock one."""

    fast = True

    def start(self, limits: dict[str, Any] = LIMITS) -> Server:
        return Server(self, local=local(self.fast, limits)).start()  # type: ignore[arg-type]


class ChannelModeTests(SynchronousTestCase):
    def test_mode_follows_the_run(self) -> None:
        """The servers of this run use the channel it asks for (tox -e stock: the stock one)."""
        server = Server(self, local=local(None)).start()
        expected = "twisted.web's stock channel" if stock_channel() else "the fast channel"
        server.wait_for_log(f"HTTP/1.1 served by {expected}")


class SlowReaderTests(Both, SynchronousTestCase):
    def test_client_that_never_reads(self) -> None:
        """
        A client that never reads while notifications flow is dropped as its
        backlog passes limits.bufferBytes, within a second; another user's
        stream gets every notification throughout.
        """
        server = self.start(BIG_BODIES)
        stuck = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        self.addCleanup(stuck.close)
        stuck.sendall(b"GET /sse/stuck HTTP/1.1\r\nHost: t\r\n\r\n")
        ok = server.subscribe("/sse/ok")
        self.assertEqual(ok.next_event()["event"], "connect")
        server.wait_for_log(r"opened for stuck", name="sse.log")
        publisher = Publisher(server)
        self.addCleanup(publisher.close)

        sent_ok = 0
        dropped_at = None
        for i in range(2000):
            status, answer = publisher.post("stuck", "x" * 16_000)
            self.assertEqual(status, 200)
            if answer["delivered"] == 0:
                dropped_at = time.monotonic()
                break
            if i % 10 == 0:
                self.assertEqual(publisher.post("ok", {"n": sent_ok})[1]["delivered"], 1)
                sent_ok += 1
        self.assertIsNotNone(dropped_at, "the stream was never dropped")
        wait_until(
            lambda: tcp_state(stuck) != TCP_ESTABLISHED, 1.0, "stuck connection closed", 0.01
        )
        match = server.wait_for_log(
            r"dropped stream \d+ of stuck from 127\.0\.0\.1: the client stopped reading and"
            r" (\d+) bytes are waiting \(limits.bufferBytes 65536\)",
            name="sse.log",
        )
        self.assertLessEqual(int(match.group(1)), 65536)
        server.wait_for_log(
            r"stream \d+ of stuck closed by the server \(it stopped reading\)", name="sse.log"
        )

        self.assertEqual(publisher.post("ok", {"n": sent_ok})[1]["delivered"], 1)
        received = [json.loads(ok.next_event()["data"])["n"] for _ in range(sent_ok + 1)]
        self.assertEqual(received, list(range(sent_ok + 1)))
        _, _, metrics = server.request("GET", "/metrics")
        self.assertIn(b'notificator_streams_refused_total{reason="slow"} 1.0', metrics)
        self.assertNotIn("Traceback", server.log("sse.log") + server.log())


class SlowReaderStockTests(SlowReaderTests):
    fast = False


class HeaderTimeoutTests(Both, SynchronousTestCase):
    def test_slowloris(self) -> None:
        """
        A half-sent head and a head trickled a byte at a time are closed
        after limits.headerTimeout; a stream opened at the same time stays
        open and keeps receiving.
        """
        server = self.start()
        half = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        self.addCleanup(half.close)
        trickle = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        self.addCleanup(trickle.close)
        start = time.monotonic()
        stream = server.subscribe("/sse/ok")
        half.sendall(b"GET /sse/half HTTP/1.1\r\nHost: t\r\n")
        head = b"GET /sse/trickle HTTP/1.1\r\nHost: t\r\nUser-Agent: slow\r\n\r\n"
        closed_at = None
        for byte in head:
            try:
                trickle.sendall(bytes([byte]))
            except OSError:
                break
            trickle.settimeout(0.25)  # a byte every quarter second, and look for the close
            try:
                if trickle.recv(1) == b"":
                    closed_at = time.monotonic() - start
                    break
            except TimeoutError:
                pass
        self.assertIsNotNone(closed_at, "the trickling client was not closed")
        self.assertGreater(closed_at, 1.4)
        self.assertLess(closed_at, 3.0)
        self.assertEqual(read_until_closed(half, 2.0), b"")
        self.assertLess(time.monotonic() - start, 3.5)

        self.assertEqual(stream.next_event()["event"], "connect")
        time.sleep(max(0.0, 2.0 - (time.monotonic() - start)))
        status, answer = server.post("id=notify_ok&data=1", FORM)
        self.assertEqual(answer["delivered"], 1)
        self.assertEqual(stream.next_event()["data"], "1")
        server.wait_for_log(r"no complete request head within 1\.5 s", name="sse.log")
        self.assertNotIn("opened for trickle", server.log("sse.log"))

    def test_keep_alive_needs_a_next_head(self) -> None:
        """After an answer, an idle keep-alive connection is closed after the timeout."""
        server = self.start()
        conn = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        self.addCleanup(conn.close)
        conn.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        answered = conn.recv(65536)
        self.assertTrue(answered.startswith(b"HTTP/1.1 200 OK"), answered)
        start = time.monotonic()
        self.assertEqual(read_until_closed(conn, 3.0), b"")
        self.assertGreater(time.monotonic() - start, 1.3)


class HeaderTimeoutStockTests(HeaderTimeoutTests):
    fast = False


class BodyLimitTests(Both, SynchronousTestCase):
    def test_announced_body_refused_at_once(self) -> None:
        """Content-Length: 64 MiB is answered 413 and closed as soon as the head is read."""
        server = self.start()
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        self.addCleanup(sock.close)
        start = time.monotonic()
        sock.sendall(
            b"POST /webNotification HTTP/1.1\r\nHost: t\r\nContent-Type: "
            + FORM.encode()
            + b"\r\nContent-Length: 67108864\r\n\r\nid=notify_u1&data="
        )
        answer = read_until_closed(sock, 2.0)
        self.assertLess(time.monotonic() - start, 1.0)
        head, _, body = answer.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 413 Content Too Large"), head)
        self.assertEqual(
            json.loads(body),
            {"error": "request body of 67108864 bytes is larger than limits.bodyBytes (4096)"},
        )
        server.wait_for_log(r"refused a request from 127\.0\.0\.1: 413", name="sse.log")

    def test_chunked_body_refused_when_it_passes(self) -> None:
        """A chunked body is answered 413 once it passes the limit, while the client still sends."""
        server = self.start()
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        self.addCleanup(sock.close)
        sock.sendall(
            b"POST /webNotification HTTP/1.1\r\nHost: t\r\nContent-Type: "
            + FORM.encode()
            + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        sent = 0
        answer = b""
        sock.settimeout(0.1)
        while sent < 100_000:
            sock.sendall(b"400\r\n" + b"x" * 1024 + b"\r\n")
            sent += 1024
            try:
                answer = sock.recv(65536)
            except TimeoutError:
                continue
            break
        self.assertGreater(sent, 4096)
        self.assertLessEqual(sent, 8192)
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer)
        self.assertEqual(answer + read_until_closed(sock, 2.0), answer + b"")

    def test_form_fields(self) -> None:
        """A form body with more than limits.formFields fields is 400; at the limit it is published."""
        server = self.start()
        fields = "".join(f"&f{i}=x" for i in range(9))
        status, answer = server.post("id=notify_u1&data=1" + fields, FORM)
        self.assertEqual((status, answer), (400, {"error": "more than 10 form fields"}))
        status, answer = server.post("id=notify_u1&data=1" + fields[: fields.rindex("&")], FORM)
        self.assertEqual(status, 200)


class BodyLimitStockTests(BodyLimitTests):
    fast = False


def trickle_until_answered(sock: socket.socket, timeout: float) -> bytes:
    """
    Send C{sock} one byte of body a quarter second (four a second: never
    idle long) until the server answers; the answer, read until it closes
    (EOF or reset); fail after C{timeout}.
    """
    deadline = time.monotonic() + timeout
    sock.settimeout(0.25)
    while True:
        if time.monotonic() > deadline:
            raise AssertionError(f"no answer within {timeout} s")
        try:
            sock.sendall(b"x")
        except OSError:
            pass  # the server closed its side: what it sent is still to read
        try:
            answer = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return b""
        return answer + read_until_closed(sock, max(0.1, deadline - time.monotonic()))


def temporary_files(pid: int) -> list[str]:
    """The deleted files process C{pid} holds open (what C{tempfile.TemporaryFile} makes)."""
    held = []
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue  # closed meanwhile
        if target.endswith("(deleted)"):
            held.append(target)
    return held


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class BodyTimeoutTests(Both, SynchronousTestCase):
    def test_trickled_body_answered_408(self) -> None:
        """
        A body sent one byte at a time is answered 408 JSON (naming
        limits.bodyTimeout) and the connection closes, with a line in
        sse.log; a stream open meanwhile goes on.
        """
        server = self.start()
        stream = server.subscribe("/sse/ok")
        self.assertEqual(stream.next_event()["event"], "connect")
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        self.addCleanup(sock.close)
        sock.sendall(
            b"POST /webNotification HTTP/1.1\r\nHost: t\r\nContent-Type: "
            + FORM.encode()
            + b"\r\nContent-Length: 1000\r\n\r\nid=notify_ok&data="
        )
        answer = trickle_until_answered(sock, 10.0)
        head, _, body = answer.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 408 Request Timeout"), answer)
        self.assertIn(b"Connection: close", head)
        self.assertEqual(
            json.loads(body),
            {"error": "request body not complete within limits.bodyTimeout (2 s)"},
        )
        server.wait_for_log(
            r"refused a request from 127\.0\.0\.1: 408 request body not complete within"
            r" limits\.bodyTimeout \(2 s\)",
            name="sse.log",
        )
        self.assertEqual(server.post("id=notify_ok&data=2", FORM)[1]["delivered"], 1)
        self.assertEqual(stream.next_event()["data"], "2")
        _, _, metrics = server.request("GET", "/metrics")
        self.assertIn(b'notificator_rejected_total{code="408"} 1.0', metrics)

    def test_chunked_body_answered_408(self) -> None:
        """A chunked body whose last chunk never comes is answered 408 as well."""
        server = self.start()
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        self.addCleanup(sock.close)
        sock.sendall(
            b"POST /webNotification HTTP/1.1\r\nHost: t\r\nContent-Type: "
            + FORM.encode()
            + b"\r\nTransfer-Encoding: chunked\r\n\r\n12\r\nid=notify_ok&data=\r\n400\r\n"
        )
        answer = trickle_until_answered(sock, 10.0)
        self.assertTrue(answer.startswith(b"HTTP/1.1 408 Request Timeout"), answer)


class BodyTimeoutStockTests(BodyTimeoutTests):
    fast = False


class BodyInMemoryTests(Both, SynchronousTestCase):
    def test_no_temporary_file(self) -> None:
        """
        Bodies over 100 KB with a length, and chunked ones, being sent: the
        server holds no temporary file (a descriptor each) for them; once
        complete they are published.
        """
        server = self.start(
            {**LIMITS, "bodyBytes": 1024 * 1024, "bodyTimeout": 30, "bufferBytes": 8 << 20}
        )
        assert server.process is not None
        pid = server.process.pid
        self.assertEqual(temporary_files(pid), [])
        stream = server.subscribe("/sse/big")
        self.assertEqual(stream.next_event()["event"], "connect")
        data = "x" * 500_000
        body = f"id=notify_big&data={data}".encode()
        head = b"POST /webNotification HTTP/1.1\r\nHost: t\r\nContent-Type: " + FORM.encode()
        socks = []
        for n in range(10):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            self.addCleanup(sock.close)
            if n % 2:
                sock.sendall(head + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:1000])
            else:
                sock.sendall(head + b"\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n" + body[:1000])
            socks.append(sock)
        # The server has read those bodies' first parts once it answers this.
        self.assertEqual(server.request("GET", "/health")[0], 200)
        self.assertEqual(temporary_files(pid), [])
        for n, sock in enumerate(socks):
            if n % 2:
                sock.sendall(body[1000:])
            else:
                rest = body[1000:]
                sock.sendall(b"\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(rest), rest))
            sock.settimeout(10)
            answer = sock.recv(65536)
            self.assertTrue(answer.startswith(b"HTTP/1.1 200 OK"), answer[:300])
            self.assertEqual(json.loads(stream.next_event()["data"]), data)
        self.assertEqual(temporary_files(pid), [])


class BodyInMemoryStockTests(BodyInMemoryTests):
    fast = False


def resident_bytes(pid: int) -> int:
    """The resident memory of process C{pid} (C{VmRSS})."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def gauge(server: Server, name: str) -> float:
    """A sample of C{/metrics}."""
    _, _, text = server.request("GET", "/metrics")
    m = re.search(rb"^%s (\S+)$" % name.encode(), text, re.M)
    assert m is not None, text
    return float(m.group(1))


class BodyMemoryTests(Both, SynchronousTestCase):
    def test_slow_large_bodies_over_the_bound(self) -> None:
        """
        96 slow senders of 960 KiB bodies (limits.bodyBytes 1 MiB; half with
        a Content-Length of 1 MiB, half chunked, none ever complete), 64 KiB
        in turn, against limits.bodyMemory 8 MiB: once the bodies in memory
        reach it the others get 503 JSON with Retry-After, and at most 8
        bodies (7.5 MiB) stay held; /health and a small publish still answer
        200, the server's resident memory grows by less than 32 MiB (the 96
        bodies are 90 MiB), and nothing logs a traceback.
        """
        server = self.start(
            {"bodyBytes": 1 << 20, "bodyMemory": 8 << 20, "bodyTimeout": 120, "headerTimeout": 10}
        )
        assert server.process is not None
        pid = server.process.pid
        self.assertEqual(server.post("id=notify_u1&data=1", FORM)[0], 200)
        before = resident_bytes(pid)
        head = b"POST /webNotification HTTP/1.1\r\nHost: t\r\nContent-Type: " + FORM.encode()
        piece = b"x" * 65536
        senders: list[socket.socket] = []
        for n in range(96):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            self.addCleanup(sock.close)
            if n % 2:
                sock.sendall(head + b"\r\nContent-Length: %d\r\n\r\n" % (1 << 20))
            else:
                sock.sendall(head + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
            senders.append(sock)
        answers = [b""] * len(senders)

        def read_answers() -> None:
            for i, sock in enumerate(senders):
                sock.setblocking(False)
                try:
                    while True:
                        chunk = sock.recv(65536)
                        if not chunk:
                            break
                        answers[i] += chunk
                except (BlockingIOError, ConnectionResetError):
                    pass
                finally:
                    sock.settimeout(10)

        for _ in range(15):  # 15 pieces of 64 KiB each: 960 KiB
            for n, sock in enumerate(senders):
                if answers[n]:
                    continue  # answered: it stops sending
                data = piece if n % 2 else b"%x\r\n%s\r\n" % (len(piece), piece)
                try:
                    sock.sendall(data)
                except OSError:
                    pass  # the server closed it
            read_answers()

        def settled() -> bool:
            read_answers()
            held = gauge(server, "notificator_request_body_bytes")
            return held == 15 * 65536 * sum(1 for a in answers if not a)

        wait_until(settled, 20, lambda: f"the server read every body: {answers!r:.300}")
        refused = [a for a in answers if a]
        held_bodies = len(answers) - len(refused)
        self.assertLessEqual(held_bodies, 8)
        self.assertGreaterEqual(held_bodies, 1)
        for answer in refused:
            head_, _, body = answer.partition(b"\r\n\r\n")
            self.assertTrue(head_.startswith(b"HTTP/1.1 503 Service Unavailable"), answer[:200])
            self.assertIn(b"\r\nRetry-After: 120\r\n", head_)
            self.assertEqual(
                json.loads(body),
                {
                    "error": "request bodies held in memory would pass limits.bodyMemory"
                    " (8388608 bytes); retry later"
                },
            )
        self.assertLessEqual(gauge(server, "notificator_request_body_bytes"), 8 << 20)
        grown = resident_bytes(pid) - before
        # 90 MiB of bodies were sent: without the bound it grows by over 120 MiB.
        self.assertLess(grown, 32 << 20, f"resident memory grew by {grown} bytes")
        self.assertEqual(server.request("GET", "/health")[0], 200)
        self.assertEqual(server.post("id=notify_u1&data=2", FORM)[0], 200)
        self.assertEqual(
            gauge(server, 'notificator_rejected_total{code="503"}'), float(len(refused))
        )
        server.wait_for_log(
            r"refused a request from 127\.0\.0\.1: 503 request bodies held in memory would pass"
            r" limits\.bodyMemory \(8388608 bytes\)",
            name="sse.log",
        )
        self.assertNotIn("Traceback", server.log() + server.log("sse.log"))


class BodyMemoryStockTests(BodyMemoryTests):
    fast = False


class ConnectionCapTests(Both, SynchronousTestCase):
    def test_health_answers_under_a_flood(self) -> None:
        """
        Under a lowered open-file limit (limits.connections and limits.streams
        from it, as by default): the streams fill their cap, then a few
        hundred idle connections and trickling bodies come; /health still
        answers 200 each time, publishes go through, every stream receives,
        the open connections stay under the cap, and nothing runs out of
        descriptors.
        """
        nofile = FD_MARGIN + 60  # limits.connections 60, limits.streams 30
        server = Server(
            self,
            local={
                **local(self.fast, limits={"streamsPerUser": 100}),
                "server": {"log": {"level": "info"}, "fastChannel": self.fast},
            },
        )
        server.command = ["sh", "-c", f'ulimit -n {nofile} && exec "$@"', "sh", *server.command]
        server.start()
        assert server.process is not None
        pid = server.process.pid
        streams = [server.subscribe(f"/sse/s{n}") for n in range(30)]
        for stream in streams:
            self.assertEqual(stream.next_event()["event"], "connect")
        head = (
            b"POST /webNotification HTTP/1.1\r\nHost: t\r\nContent-Type: "
            + FORM.encode()
            + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        flood: list[socket.socket] = []

        def send(sock: socket.socket, data: bytes) -> None:
            try:
                sock.sendall(data)
            except OSError:
                pass  # closed to make room

        for n in range(300):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            self.addCleanup(sock.close)
            flood.append(sock)
            if n % 2:
                send(sock, head + b"1\r\nx\r\n")
        for _ in range(3):
            for sock in flood[1::2]:
                send(sock, b"1\r\nx\r\n")
            status, _, body = server.request("GET", "/health")
            self.assertEqual(status, 200, body)
            self.assertLessEqual(open_files(pid), nofile)
        status, answer = server.post("id=notify_s7&data=1", FORM)
        self.assertEqual((status, answer["delivered"]), (200, 1))
        self.assertEqual(streams[7].next_event()["data"], "1")
        _, _, metrics = server.request("GET", "/metrics")
        text = metrics.decode()
        self.assertIn("notificator_streams 30.0", text)
        connections = float(re.search(r"^notificator_connections (\S+)$", text, re.M).group(1))
        self.assertLessEqual(connections, 60)
        reclaimed = re.search(
            r'^notificator_connections_dropped_total\{reason="reclaimed"\} (\S+)$', text, re.M
        )
        self.assertIsNotNone(reclaimed, text)
        server.wait_for_log(r"limits.connections \(60\) reached", name="sse.log")
        server.wait_for_log(r"limits: 60 connections, 30 streams")
        for stream in streams:
            stream.nothing_more(0.01)  # still open (it would raise at the end of the stream)
        for log in (server.log(), server.log("sse.log")):
            self.assertNotIn("Too many open files", log)
            self.assertNotIn("Could not accept", log)
            self.assertNotIn("Traceback", log)


class ConnectionCapStockTests(ConnectionCapTests):
    fast = False


class TLSTests(SynchronousTestCase):
    """The limits over TLS and HTTP/2 (server.protocol http2: ALPN h2 and http/1.1)."""

    def setUp(self) -> None:
        self.certs = Certs(self)
        config = server_config("http2", self.certs, heartbeat=False)
        config["limits"] = BIG_BODIES if "never_reads" in self._testMethodName else LIMITS
        self.server = TLSServer(self, self.certs.ca, local=config, listen=None).start()

    def tls(self, alpn: list[str] | None = None) -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", self.server.port), timeout=5)
        sock = client_context(self.certs.ca, alpn or ["http/1.1"]).wrap_socket(
            raw, server_hostname="localhost"
        )
        self.addCleanup(sock.close)
        return sock

    def h2(self) -> H2Client:
        client = H2Client(self.server.port, self.certs.ca)
        self.addCleanup(client.close)
        self.assertEqual(client.alpn, "h2")
        return client

    def test_tls_slowloris(self) -> None:
        """A half-sent head over TLS, and a TCP client that never starts TLS, are closed after the timeout."""
        half = self.tls()
        start = time.monotonic()
        half.sendall(b"GET /sse/half HTTP/1.1\r\nHost: t\r\n")
        silent = socket.create_connection(("127.0.0.1", self.server.port), timeout=5)
        self.addCleanup(silent.close)
        stream = self.h2()
        sid = stream.request("GET", "/sse/ok")
        stream.pump(lambda: bool(stream.named(sid, "connect")))
        self.assertEqual(read_until_closed(half, 3.0), b"")
        self.assertGreater(time.monotonic() - start, 1.4)
        self.assertEqual(read_until_closed(silent, 3.0), b"")
        self.assertLess(time.monotonic() - start, 3.5)
        time.sleep(max(0.0, 2.0 - (time.monotonic() - start)))
        publish = stream.request(
            "POST", "/webNotification", b"id=notify_ok&data=1", {"content-type": FORM}
        )
        stream.pump(lambda: publish in stream.ended and bool(stream.named(sid, "notify")))

    def test_tls_body_refused_at_once(self) -> None:
        """Over TLS (HTTP/1.1) an announced 64 MiB body is answered 413 at once."""
        sock = self.tls()
        sock.sendall(
            b"POST /webNotification HTTP/1.1\r\nHost: t\r\nContent-Length: 67108864\r\n\r\n"
        )
        answer = read_until_closed(sock, 2.0)
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer)

    def test_http2_body_refused(self) -> None:
        """
        Over HTTP/2 an announced 64 MiB body, and a body without a length
        that passes the limit, get 413 JSON and a reset stream; the
        connection goes on.
        """
        c = self.h2()
        announced = c.conn.get_next_available_stream_id()
        c.conn.send_headers(
            announced,
            [
                (":method", "POST"),
                (":scheme", "https"),
                (":authority", c.authority),
                (":path", "/webNotification"),
                ("content-type", FORM),
                ("content-length", "67108864"),
            ],
        )
        c.data[announced] = b""
        c._flush()
        c.pump(lambda: announced in c.reset)
        self.assertEqual(c.headers[announced][":status"], "413")
        self.assertEqual(
            json.loads(c.data[announced]),
            {"error": "request body of 67108864 bytes is larger than limits.bodyBytes (4096)"},
        )

        unannounced = c.conn.get_next_available_stream_id()
        c.conn.send_headers(
            unannounced,
            [
                (":method", "POST"),
                (":scheme", "https"),
                (":authority", c.authority),
                (":path", "/webNotification"),
                ("content-type", FORM),
            ],
        )
        c.data[unannounced] = b""
        c.conn.send_data(unannounced, b"id=notify_u1&data=" + b"x" * 5000)
        c._flush()
        c.pump(lambda: unannounced in c.reset)
        self.assertEqual(c.headers[unannounced][":status"], "413")

        ok = c.request("POST", "/webNotification", b"id=notify_u1&data=1", {"content-type": FORM})
        c.pump(lambda: ok in c.ended)
        self.assertEqual(c.headers[ok][":status"], "200")
        self.assertNotIn("Traceback", self.server.log("sse.log") + self.server.log())

    def test_http2_client_that_never_reads(self) -> None:
        """
        An HTTP/2 client that stops reading: its stream is reset as its
        backlog passes limits.bufferBytes; another user's stream gets every
        notification.
        """
        stuck = self.h2()
        sid = stuck.request("GET", "/sse/stuck")
        stuck.pump(lambda: bool(stuck.named(sid, "connect")))
        ok = self.h2()
        oid = ok.request("GET", "/sse/ok")
        ok.pump(lambda: bool(ok.named(oid, "connect")))
        publisher = http.client.HTTPSConnection(
            "localhost",
            self.server.port,
            timeout=10,
            context=client_context(self.certs.ca, ["http/1.1"]),
        )
        self.addCleanup(publisher.close)

        def post(user: str, data: Any) -> dict[str, Any]:
            body = json.dumps({"id": f"notify_{user}", "data": data})
            publisher.request(
                "POST", "/webNotification", body, {"Content-Type": "application/json"}
            )
            response = publisher.getresponse()
            self.assertEqual(response.status, 200)
            return json.loads(response.read())

        sent_ok = 0
        for i in range(500):
            if post("stuck", "x" * 16_000)["delivered"] == 0:
                break
            if i % 5 == 0:
                self.assertEqual(post("ok", {"n": sent_ok})["delivered"], 1)
                sent_ok += 1
        else:
            self.fail("the HTTP/2 stream was never dropped")
        self.server.wait_for_log(r"dropped stream \d+ of stuck", name="sse.log")
        self.assertEqual(post("ok", {"n": sent_ok})["delivered"], 1)
        ok.pump(lambda: len(ok.named(oid, "notify")) == sent_ok + 1)
        notes = [json.loads(e["data"])["n"] for e in ok.named(oid, "notify")]
        self.assertEqual(notes, list(range(sent_ok + 1)))
        # Reading now, the stuck client finds its stream reset after what was sent.
        stuck.pump(lambda: sid in stuck.reset)
        self.assertNotIn(sid, stuck.ended)
        self.assertNotIn("Traceback", self.server.log("sse.log") + self.server.log())

    def test_http2_client_that_never_reads_with_a_browsers_window(self) -> None:
        """
        A stuck HTTP/2 client with a browser's flow-control windows (Chrome
        opens 6 MiB per stream, 15 MiB per connection): the server sends
        until the stream's window is used up (those bytes wait in the
        socket buffers, or the transport's), then counts what it holds, and drops the stream once that
        passes limits.bufferBytes: within the window and the cap, not later.
        """
        window = 6 * 1024 * 1024
        stuck = self.h2()
        stuck.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        stuck.conn.increment_flow_control_window(15 * 1024 * 1024)
        sid = stuck.request("GET", "/sse/stuck")
        stuck.pump(lambda: bool(stuck.named(sid, "connect")))
        publisher = http.client.HTTPSConnection(
            "localhost",
            self.server.port,
            timeout=10,
            context=client_context(self.certs.ca, ["http/1.1"]),
        )
        self.addCleanup(publisher.close)
        frame = 16_000
        sent = 0
        while sent < 2 * window:
            body = json.dumps({"id": "notify_stuck", "data": "x" * frame})
            publisher.request(
                "POST", "/webNotification", body, {"Content-Type": "application/json"}
            )
            response = publisher.getresponse()
            self.assertEqual(response.status, 200)
            if json.loads(response.read())["delivered"] == 0:
                break
            sent += frame
        else:
            self.fail(f"the HTTP/2 stream was not dropped after {sent} bytes")
        self.assertGreater(sent, window)
        self.assertLess(sent, window + BIG_BODIES["bufferBytes"] + 4 * frame)
        self.server.wait_for_log(r"dropped stream \d+ of stuck", name="sse.log")

    def read_to_the_end(self, client: H2Client, timeout: float) -> list[Any]:
        """
        Read C{client}'s connection until the server closes it; its HTTP/2
        events.  Fail after C{timeout}.
        """
        events: list[Any] = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"still open after {timeout} s: {events}")
            client.sock.settimeout(remaining)
            try:
                data = client.sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                return events
            if not data:
                return events
            events += client.conn.receive_data(data)

    def assert_went_away(self, events: list[Any]) -> None:
        [goaway] = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
        self.assertEqual(goaway.error_code, h2.errors.ErrorCodes.NO_ERROR)

    def test_http2_pings_do_not_keep_a_connection(self) -> None:
        """
        An HTTP/2 connection that only sends PINGs (and SETTINGS, WINDOW_UPDATE)
        is sent GOAWAY and closed after limits.headerTimeout; so is one that
        never sends a request; one with an open event stream stays, and
        receives.
        """
        pinger = self.h2()
        silent = self.h2()
        stream = self.h2()
        sid = stream.request("GET", "/sse/ok")
        stream.pump(lambda: bool(stream.named(sid, "connect")))
        events: list[Any] = []
        closed = False
        deadline = time.monotonic() + 10
        n = 0
        while not closed and time.monotonic() < deadline:
            n += 1
            try:
                pinger.conn.ping(b"%08d" % n)
                pinger.conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 50})
                pinger.conn.increment_flow_control_window(1)
                pinger._flush()
                stream.conn.ping(b"%08d" % n)
                stream._flush()
            except OSError:
                closed = True
                break
            # What comes back in the next fifth of a second.
            until = time.monotonic() + 0.2
            while (remaining := until - time.monotonic()) > 0:
                pinger.sock.settimeout(remaining)
                try:
                    data = pinger.sock.recv(65536)
                except TimeoutError:
                    break
                except (ConnectionResetError, ssl.SSLError):
                    closed = True
                    break
                if not data:
                    closed = True
                    break
                events += pinger.conn.receive_data(data)
            if any(isinstance(e, h2.events.ConnectionTerminated) for e in events):
                events += self.read_to_the_end(pinger, 5.0)
                closed = True
        self.assertTrue(closed, "the pinging connection was not closed")
        self.assert_went_away(events)
        self.assert_went_away(self.read_to_the_end(silent, 5.0))
        self.server.wait_for_log(
            r"closed the HTTP/2 connection from 127\.0\.0\.1: no open stream for 1\.5 s"
            r" \(limits\.headerTimeout\)",
            name="sse.log",
        )
        # The stream's connection, as busy with PINGs, stays: it has a stream.
        publish = http.client.HTTPSConnection(
            "localhost", self.server.port, timeout=10, context=client_context(self.certs.ca, [])
        )
        self.addCleanup(publish.close)
        publish.request("POST", "/webNotification", "id=notify_ok&data=1", {"Content-Type": FORM})
        self.assertEqual(publish.getresponse().status, 200)
        stream.pump(lambda: bool(stream.named(sid, "notify")))
        self.assertNotIn(sid, stream.reset)

    def test_http2_body_answered_408(self) -> None:
        """
        Over HTTP/2 a body too slow gets 408 JSON and a reset stream, and
        the connection goes on.
        """
        c = self.h2()
        slow = c.conn.get_next_available_stream_id()
        c.conn.send_headers(
            slow,
            [
                (":method", "POST"),
                (":scheme", "https"),
                (":authority", c.authority),
                (":path", "/webNotification"),
                ("content-type", FORM),
            ],
        )
        c.data[slow] = b""
        c.conn.send_data(slow, b"id=notify_u1&data=")
        c._flush()
        c.pump(lambda: slow in c.reset, timeout=10)
        self.assertEqual(c.headers[slow][":status"], "408")
        self.assertEqual(
            json.loads(c.data[slow]),
            {"error": "request body not complete within limits.bodyTimeout (2 s)"},
        )
        ok = c.request("POST", "/webNotification", b"id=notify_u1&data=1", {"content-type": FORM})
        c.pump(lambda: ok in c.ended)
        self.assertEqual(c.headers[ok][":status"], "200")

    def test_tls_body_answered_408(self) -> None:
        """Over TLS (HTTP/1.1) a body too slow gets 408, and the connection closes."""
        sock = self.tls()
        sock.sendall(b"POST /webNotification HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n")
        answer = trickle_until_answered(sock, 10.0)
        self.assertTrue(answer.startswith(b"HTTP/1.1 408 "), answer)


class TLSConnectionCapTests(SynchronousTestCase):
    """limits.connections over TLS and HTTP/2 (server.protocol http2)."""

    def test_cap_over_tls(self) -> None:
        """
        TLS connections count: with 6 HTTP/2 streams and 6 TLS streams open
        (limits.connections 16), a flood of silent TCP connections and of
        half-sent TLS heads takes the 4 other places in turn, while /health
        over TLS still answers; once the 16 places hold streams, a new TLS
        connection is closed at once; nothing logs a traceback.
        """
        certs = Certs(self)
        config = server_config("http2", certs, heartbeat=False)
        config["limits"] = {"connections": 16, "streams": 16, "streamsPerUser": 100}
        server = TLSServer(self, certs.ca, local=config, listen=None).start()
        h2_streams = []
        for n in range(6):
            client = H2Client(server.port, certs.ca)
            self.addCleanup(client.close)
            sid = client.request("GET", f"/sse/h{n}")
            client.pump(lambda c=client, s=sid: bool(c.named(s, "connect")))
            h2_streams.append((client, sid))
        tls_streams = [server.subscribe(f"/sse/t{n}") for n in range(6)]
        for stream in tls_streams:
            self.assertEqual(stream.next_event()["event"], "connect")
        flood = []
        for n in range(40):
            raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            self.addCleanup(raw.close)
            if n % 4 == 0:
                try:
                    sock = client_context(certs.ca, ["http/1.1"]).wrap_socket(
                        raw, server_hostname="localhost"
                    )
                    sock.sendall(b"GET /sse/half HTTP/1.1\r\nHost: t\r\n")
                    flood.append(sock)
                except OSError:
                    pass  # closed to make room meanwhile
            else:
                flood.append(raw)
        for _ in range(3):
            status, _, body = server.request("GET", "/health")
            self.assertEqual(status, 200, body)
        self.assertEqual(server.post("id=notify_h0&data=1", FORM)[0], 200)
        client, sid = h2_streams[0]
        client.pump(lambda: bool(client.named(sid, "notify")))
        _, _, metrics = server.request("GET", "/metrics")
        connections = re.search(rb"^notificator_connections (\S+)$", metrics, re.M)
        assert connections is not None
        self.assertLessEqual(float(connections.group(1)), 16)
        # The last four places to streams too: then a new connection is closed at once.
        more = [server.subscribe(f"/sse/m{n}") for n in range(4)]
        for stream in more:
            self.assertEqual(stream.next_event()["event"], "connect")
        with self.assertRaises(OSError):  # reset (even before connect returns), or EOF
            raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            self.addCleanup(raw.close)
            client_context(certs.ca, ["http/1.1"]).wrap_socket(raw, server_hostname="localhost")
        server.wait_for_log(r"limits.connections \(16\) reached", name="sse.log")
        for stream in tls_streams + more:
            stream.nothing_more(0.01)  # still open (it would raise at the end of the stream)
        for log in (server.log(), server.log("sse.log")):
            self.assertNotIn("Traceback", log)
            self.assertNotIn("Too many open files", log)
