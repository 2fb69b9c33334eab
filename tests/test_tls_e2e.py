"""
End-to-end tests of https and http2 against the real C{twistd -n
notificator} on loopback: real TLS handshakes verified against a CA made
by C{cert/make_dev_cert.py}, SSE over HTTP/1.1 and over HTTP/2 (the h2
package as the client), and start-up refusals for bad certificate files.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

import h2.config
import h2.connection
import h2.events
from twisted.trial.unittest import SynchronousTestCase

from tests.support import Server, SSEClient, parse_frames
from tests.tlssupport import Certs

BODY = "id=notify_u1&data=" + "%7B%22title%22%3A%22hi%22%7D"
FORM = "application/x-www-form-urlencoded; charset=UTF-8"


def client_context(cafile: str, alpn: list[str]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=cafile)
    context.set_alpn_protocols(alpn)
    return context


class TLSServer(Server):
    """L{Server} whose clients speak HTTPS to C{localhost}, trusting C{cafile}."""

    def __init__(self, testcase: SynchronousTestCase, cafile: str, **kw: Any) -> None:
        super().__init__(testcase, **kw)
        self.cafile = cafile

    def connection(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        return http.client.HTTPSConnection(
            "localhost",
            self.port,
            timeout=timeout,
            context=client_context(self.cafile, ["http/1.1"]),
        )


def server_config(protocol: str, certs: Certs, **sse: Any) -> dict[str, Any]:
    return {
        "server": {
            "protocol": protocol,
            "port": 0,
            "host": "127.0.0.1",
            "certificates": {"key": certs.key, "cert": certs.cert, "ca": certs.ca},
            "log": {"level": "debug"},
        },
        "sse": sse,
    }


class H2Client:
    """
    A blocking HTTP/2 client over one TLS connection (ALPN h2), with
    bounded waits: enough to open several streams and read them.
    """

    def __init__(self, port: int, cafile: str, timeout: float = 10.0) -> None:
        self.authority = f"localhost:{port}"
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock = client_context(cafile, ["h2", "http/1.1"]).wrap_socket(
            raw, server_hostname="localhost"
        )
        self.alpn = self.sock.selected_alpn_protocol()
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.conn.initiate_connection()
        self.headers: dict[int, dict[str, str]] = {}
        self.data: dict[int, bytes] = {}
        self.ended: set[int] = set()
        self.reset: set[int] = set()
        self._flush()

    def _flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        fields = [
            (":method", method),
            (":scheme", "https"),
            (":authority", self.authority),
            (":path", path),
            *(headers or {}).items(),
        ]
        self.conn.send_headers(stream_id, fields, end_stream=not body)
        if body:
            self.conn.send_data(stream_id, body, end_stream=True)
        self.data[stream_id] = b""
        self._flush()
        return stream_id

    def cancel(self, stream_id: int) -> None:
        """Reset a stream (what a browser does when an EventSource is closed)."""
        self.conn.reset_stream(stream_id)
        self._flush()

    def events(self, stream_id: int) -> list[dict[str, Any]]:
        """The complete SSE frames received so far on a stream."""
        data = self.data[stream_id]
        return parse_frames(data[: data.rfind(b"\n\n") + 2]) if b"\n\n" in data else []

    def named(self, stream_id: int, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events(stream_id) if e.get("event") == name]

    def pump(self, until: Callable[[], bool], timeout: float = 10.0) -> None:
        """Read and handle frames until C{until()} holds; fail after C{timeout}."""
        deadline = time.monotonic() + timeout
        while not until():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out; received {self.data!r}")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            for event in self.conn.receive_data(chunk):
                if isinstance(event, h2.events.ResponseReceived):
                    self.headers[event.stream_id] = dict(event.headers)
                elif isinstance(event, h2.events.DataReceived):
                    self.data[event.stream_id] += event.data
                    self.conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                elif isinstance(event, h2.events.StreamEnded):
                    self.ended.add(event.stream_id)
                elif isinstance(event, h2.events.StreamReset):
                    self.reset.add(event.stream_id)
            self._flush()

    def close(self) -> None:
        try:
            self.conn.close_connection()
            self._flush()
        except OSError:
            pass
        self.sock.close()


class HTTPSTests(SynchronousTestCase):
    """https: TLS with verification, HTTP/1.1 streams and publishes."""

    def setUp(self) -> None:
        self.certs = Certs(self)

    def test_subscribe_and_publish_over_verified_tls(self) -> None:
        """Over --listen https:, a stream verified against the dev CA gets a published notify."""
        listen = (
            f"https:port=0:interface=127.0.0.1:privateKey={self.certs.key}"
            f":certKey={self.certs.cert}:extraCertChain={self.certs.ca}:alpn=http/1.1"
        )
        server = TLSServer(self, self.certs.ca, listen=listen).start()
        stream = server.subscribe("/sse/u1")
        self.assertEqual(stream.status, 200)
        self.assertEqual(stream.next_event()["event"], "connect")
        status, body = server.post(BODY, FORM)
        self.assertEqual((status, body["delivered"]), (200, 1))
        event = stream.next_event()
        self.assertEqual((event["event"], json.loads(event["data"])), ("notify", {"title": "hi"}))
        self.assertEqual(stream.conn.sock.version(), "TLSv1.3")

    def test_untrusted_client_refuses(self) -> None:
        """A client that does not trust the dev CA fails verification (the check is real)."""
        server = TLSServer(
            self, self.certs.other_ca, local=server_config("https", self.certs), listen=None
        ).start()
        self.assertRaises(ssl.SSLCertVerificationError, server.request, "GET", "/sse/u1")

    def test_https_protocol_is_http11_only(self) -> None:
        """server.protocol https selects http/1.1 even for a client offering h2 first."""
        server = TLSServer(
            self, self.certs.ca, local=server_config("https", self.certs), listen=None
        ).start()
        conn = http.client.HTTPSConnection(
            "localhost",
            server.port,
            timeout=10,
            context=client_context(self.certs.ca, ["h2", "http/1.1"]),
        )
        self.addCleanup(conn.close)
        stream = SSEClient(conn, "/sse/u1", {})
        self.assertEqual(conn.sock.selected_alpn_protocol(), "http/1.1")
        self.assertEqual(stream.next_event()["event"], "connect")


class HTTP2Tests(SynchronousTestCase):
    """server.protocol http2: SSE over HTTP/2, many streams on one connection."""

    def setUp(self) -> None:
        self.certs = Certs(self)
        self.server = TLSServer(
            self,
            self.certs.ca,
            local=server_config("http2", self.certs, heartbeatInterval=1, keepalive=0),
            listen=None,
        ).start()
        self.client = H2Client(self.server.port, self.certs.ca)
        self.addCleanup(self.client.close)

    def test_two_streams_one_connection(self) -> None:
        """Two SSE streams on one HTTP/2 connection both get a notify published on it too."""
        c = self.client
        self.assertEqual(c.alpn, "h2")
        first = c.request("GET", "/sse/u1", headers={"accept": "text/event-stream"})
        second = c.request("GET", "/sse/u1", headers={"accept": "text/event-stream"})
        c.pump(lambda: bool(c.named(first, "connect") and c.named(second, "connect")))
        self.assertEqual(c.headers[first][":status"], "200")
        self.assertEqual(c.headers[second]["content-type"], "text/event-stream; charset=utf-8")
        self.assertNotIn("connection", c.headers[first])

        publish = c.request("POST", "/webNotification", BODY.encode(), {"content-type": FORM})
        c.pump(
            lambda: (
                publish in c.ended
                and bool(c.named(first, "notify"))
                and bool(c.named(second, "notify"))
            )
        )
        self.assertEqual(json.loads(c.data[publish])["delivered"], 2)
        for stream in (first, second):
            [notify] = c.named(stream, "notify")
            self.assertEqual(json.loads(notify["data"]), {"title": "hi"})
            self.assertNotIn(stream, c.ended)
        self.server.wait_for_log(r'"POST /webNotification HTTP/2" 200', name="access.log")

    def test_heartbeats_on_every_stream(self) -> None:
        """The heartbeat timer reaches every HTTP/2 stream."""
        c = self.client
        streams = [c.request("GET", f"/sse/u{i}") for i in (1, 2)]
        c.pump(lambda: all(c.named(s, "heartbeat") for s in streams))

    def test_stream_reset_detaches(self) -> None:
        """Resetting one stream closes it on the server; the other keeps receiving."""
        c = self.client
        first, second = c.request("GET", "/sse/u1"), c.request("GET", "/sse/u1")
        c.pump(lambda: bool(c.named(first, "connect") and c.named(second, "connect")))
        c.cancel(first)
        self.server.wait_for_log(r"stream \d+ of u1 closed .*\(1 open\)", name="sse.log")
        publish = c.request("POST", "/webNotification", BODY.encode(), {"content-type": FORM})
        c.pump(lambda: publish in c.ended and bool(c.named(second, "notify")))
        self.assertEqual(json.loads(c.data[publish])["delivered"], 1)
        self.assertEqual(c.named(first, "notify"), [])
        self.assertNotIn("Traceback", self.server.log())


class BadCertificateTests(SynchronousTestCase):
    """Each bad TLS file stops start-up with one line naming it."""

    def setUp(self) -> None:
        self.certs = Certs(self)

    def assertStops(self, certificates: dict[str, str], line: str) -> None:
        files = {"key": self.certs.key, "cert": self.certs.cert, "ca": self.certs.ca}
        files.update(certificates)
        local = server_config("http2", self.certs)
        local["server"]["certificates"] = files
        code, output = Server(self, local=local, listen=None).run_to_exit()
        self.assertNotEqual(code, 0)
        self.assertEqual(output.strip(), line)

    def test_missing_key(self) -> None:
        """A missing key file."""
        missing = self.certs.path("missing.key")
        self.assertStops(
            {"key": missing},
            f"notificator: TLS error: server.certificates.key: {missing}: "
            "cannot read: No such file or directory",
        )

    def test_unreadable_certificate(self) -> None:
        """A certificate path that cannot be read (tests may run as root, so a folder)."""
        self.assertStops(
            {"cert": self.certs.dir},
            f"notificator: TLS error: server.certificates.cert: {self.certs.dir}: "
            "cannot read: Is a directory",
        )

    def test_key_does_not_match(self) -> None:
        """A key that is not the certificate's."""
        self.assertStops(
            {"key": self.certs.other_key},
            f"notificator: TLS error: server.certificates.key: {self.certs.other_key}: "
            f"this private key does not match the certificate in {self.certs.cert}",
        )

    def test_bad_ca_file(self) -> None:
        """A CA file that holds no certificate."""
        self.assertStops(
            {"ca": self.certs.garbage},
            f"notificator: TLS error: server.certificates.ca: {self.certs.garbage}: "
            "holds no PEM certificate",
        )

    def test_wrong_ca_file(self) -> None:
        """A CA file that did not issue the certificate."""
        self.assertStops(
            {"ca": self.certs.other_ca},
            f"notificator: TLS error: server.certificates.ca: {self.certs.other_ca}: "
            f"holds no certificate that issued {self.certs.cert} or its chain",
        )
