"""
End-to-end tests of https and http2 against the real C{twistd -n
notificator} on loopback: real TLS handshakes verified against a CA made
by C{cert/make_dev_cert.py}, SSE over HTTP/1.1 and over HTTP/2 (the h2
package as the client), and start-up refusals for bad certificate files.
"""

from __future__ import annotations

import http.client
import json
import ssl

from twisted.trial.unittest import SynchronousTestCase

from tests.support import Server, SSEClient
from tests.tlssupport import Certs, H2Client, TLSServer, client_context, server_config

BODY = "id=notify_u1&data=" + "%7B%22title%22%3A%22hi%22%7D"
FORM = "application/x-www-form-urlencoded; charset=UTF-8"


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
