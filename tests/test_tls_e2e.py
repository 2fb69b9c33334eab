"""
End-to-end tests of https and http2 against the real C{twistd -n
notificator} on loopback: real TLS handshakes verified against a CA made
by C{cert/make_dev_cert.py}, SSE over HTTP/1.1 and over HTTP/2 (the h2
package as the client), start-up refusals for bad certificate files, the
TLS profile as C{testssl} sees it, session resumption with Python's
C{ssl} as the client (across a restart and across processes), and
C{Strict-Transport-Security}.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import subprocess
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.support import Server, SSEClient, free_port, require_tool
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


class HTTP2PublishGateTests(SynchronousTestCase):
    """
    server.protocol http2: the publish gate decides with every header of a
    request's HEADERS frame.  A browser (and any client) may send
    C{content-length} before C{authorization}, C{origin} or
    C{x-forwarded-for}: a publisher those refuse gets 403 before it sends
    its body, as when they come first.
    """

    TOKEN = "h2-gate-token-0123456789abcdef"
    GW = "https://gw.example.com"

    def setUp(self) -> None:
        self.certs = Certs(self)
        config = server_config("http2", self.certs, heartbeat=False)
        config["server"]["trustedProxies"] = ["127.0.0.1/32"]
        config["sse"]["header"] = {"Access-Control-Allow-Origin": [self.GW]}
        config["publish"] = {"token": self.TOKEN}
        self.server = TLSServer(self, self.certs.ca, local=config, listen=None).start()
        self.client = H2Client(self.server.port, self.certs.ca)
        self.addCleanup(self.client.close)
        self.assertEqual(self.client.alpn, "h2")

    def head_only(self, headers: list[tuple[str, str]]) -> int:
        """A publish's HEADERS frame, content-length first, and no body: its stream."""
        c = self.client
        sid = c.conn.get_next_available_stream_id()
        c.conn.send_headers(
            sid,
            [
                (":method", "POST"),
                (":scheme", "https"),
                (":authority", c.authority),
                (":path", "/webNotification"),
                ("content-length", str(len(BODY))),
                ("content-type", FORM),
                *headers,
            ],
        )
        c.data[sid] = b""
        c._flush()
        return sid

    def test_refused_before_the_body(self) -> None:
        """
        A wrong Bearer token, a page of another site, and (from a trusted
        proxy) a client outside publish.allow, each after content-length:
        403 JSON and a reset stream without a byte of body sent; then a
        right publish on the same connection is published.
        """
        c = self.client
        token = ("authorization", f"Bearer {self.TOKEN}")
        cases = [
            ([("authorization", "Bearer not-the-token")], "wrong publish token"),
            ([token, ("origin", "https://evil.example")], "origin not allowed"),
            ([token, ("x-forwarded-for", "203.0.113.9")], "address not allowed"),
        ]
        for headers, reason in cases:
            sid = self.head_only(headers)
            c.pump(lambda sid=sid: sid in c.reset, timeout=5)
            self.assertEqual(c.headers[sid][":status"], "403", headers)
            self.assertEqual(json.loads(c.data[sid]), {"error": reason})
        self.server.wait_for_log(
            r"refused publish from 203\.0\.113\.9: 403 address not allowed", name="sse.log"
        )
        ok = self.head_only([token, ("x-forwarded-for", "127.0.0.1")])
        c.conn.send_data(ok, BODY.encode(), end_stream=True)
        c._flush()
        c.pump(lambda: ok in c.ended, timeout=5)
        self.assertEqual(c.headers[ok][":status"], "200")
        self.assertEqual(json.loads(c.data[ok])["userId"], "u1")
        self.assertNotIn("Traceback", self.server.log() + self.server.log("sse.log"))


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


class Visit:
    """What one HTTPS request (L{visit}) saw of its TLS session."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.session = sock.session
        self.session_reused = sock.session_reused
        self.version = sock.version()


def visit(port: int, context: ssl.SSLContext, session: ssl.SSLSession | None = None) -> Visit:
    """
    One HTTPS request (C{GET /health}, the connection then closed by the
    server) with C{context}, offering C{session}.
    """
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with context.wrap_socket(raw, server_hostname="localhost", session=session) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        answer = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ssl.SSLZeroReturnError:
                break
            if not chunk:
                break
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
        # Read to the end first: a TLS 1.3 session comes after the handshake.
        return Visit(sock)


def tls_context(cafile: str, version: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = context.maximum_version = version
    return context


VERSIONS = (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)


class SessionResumptionTests(SynchronousTestCase):
    """
    Reconnecting clients resume their TLS sessions (Python's C{ssl}, the
    system's OpenSSL, as the client): TLS 1.2 and 1.3, after a restart,
    and on another server process that shares the ticket keys
    (C{server.tls.ticketKeyDir}), as the workers of one machine will.
    """

    def setUp(self) -> None:
        self.certs = Certs(self)

    def server(self, port: int = 0, **tls: Any) -> TLSServer:
        local = server_config("https", self.certs)
        local["server"]["port"] = port
        if tls:
            local["server"]["tls"] = tls
        return TLSServer(self, self.certs.ca, local=local, listen=None).start()

    def resumes(self, first: TLSServer, then: TLSServer, version: ssl.TLSVersion) -> bool:
        """A client of C{first} comes back to C{then}: was its session resumed?"""
        context = tls_context(self.certs.ca, version)
        initial = visit(first.port, context)
        self.assertEqual(initial.version, version.name.replace("_", "."))
        self.assertFalse(initial.session_reused)
        return bool(visit(then.port, context, initial.session).session_reused)

    def test_tls12_and_tls13(self) -> None:
        """A client that comes back resumes its session, over TLS 1.2 and TLS 1.3."""
        server = self.server()
        for version in VERSIONS:
            self.assertTrue(self.resumes(server, server, version), version)

    def test_after_a_restart(self) -> None:
        """After a restart (a reconnect storm), the clients' sessions still resume."""
        server = self.server(port=free_port())
        contexts = {v: tls_context(self.certs.ca, v) for v in VERSIONS}
        sessions = {v: visit(server.port, contexts[v]).session for v in VERSIONS}
        server.restart()
        for version in VERSIONS:
            again = visit(server.port, contexts[version], sessions[version])
            self.assertTrue(again.session_reused, version)

    def test_processes_sharing_the_keys(self) -> None:
        """Two server processes with one key directory resume each other's clients."""
        keys = os.path.join(os.path.abspath(self.mktemp()), "tickets")
        first, second = self.server(ticketKeyDir=keys), self.server(ticketKeyDir=keys)
        for version in VERSIONS:
            self.assertTrue(self.resumes(first, second, version), version)
            self.assertTrue(self.resumes(second, first, version), version)
        self.assertEqual(len(os.listdir(keys)), 1)

    def test_processes_with_their_own_keys(self) -> None:
        """Two processes with their own key directories do not (the tests above can fail)."""
        first, second = self.server(), self.server()
        for version in VERSIONS:
            self.assertFalse(self.resumes(first, second, version), version)


class HSTSTests(SynchronousTestCase):
    """server.hsts: C{Strict-Transport-Security} over TLS, on every response."""

    HEADER = "max-age=31536000"

    def setUp(self) -> None:
        self.certs = Certs(self)

    def start(self, protocol: str) -> TLSServer:
        local = server_config(protocol, self.certs)
        local["server"]["hsts"] = 31536000
        return TLSServer(self, self.certs.ca, local=local, listen=None).start()

    def test_https(self) -> None:
        """A stream, a refusal, and a 413 answered before the body carry it."""
        server = self.start("https")
        stream = server.subscribe("/sse/u1")
        self.assertEqual(stream.next_event()["event"], "connect")
        self.assertEqual(stream.headers["Strict-Transport-Security"], self.HEADER)
        status, headers, _ = server.request("GET", "/nowhere")
        self.assertEqual((status, headers["Strict-Transport-Security"]), (404, self.HEADER))
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        with client_context(self.certs.ca, ["http/1.1"]).wrap_socket(
            raw, server_hostname="localhost"
        ) as sock:
            sock.sendall(
                b"POST /webNotification HTTP/1.1\r\nHost: localhost\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: 99999999\r\n\r\n"
            )
            answer = sock.makefile("rb").read()
        head = answer.split(b"\r\n\r\n")[0]
        self.assertTrue(head.startswith(b"HTTP/1.1 413 "), answer)
        self.assertIn(b"\r\nStrict-Transport-Security: max-age=31536000\r\n", head)

    def test_http2(self) -> None:
        """Over HTTP/2 too: a stream, a refusal and a 413."""
        server = self.start("http2")
        c = H2Client(server.port, self.certs.ca)
        self.addCleanup(c.close)
        self.assertEqual(c.alpn, "h2")
        stream = c.request("GET", "/sse/u1")
        missing = c.request("GET", "/nowhere")
        large = c.conn.get_next_available_stream_id()
        c.conn.send_headers(
            large,
            [
                (":method", "POST"),
                (":scheme", "https"),
                (":authority", c.authority),
                (":path", "/webNotification"),
                ("content-length", "99999999"),
            ],
        )
        c.data[large] = b""
        c._flush()
        c.pump(lambda: all(s in c.headers for s in (stream, missing, large)))
        for s, status in ((stream, "200"), (missing, "404"), (large, "413")):
            self.assertEqual(c.headers[s][":status"], status)
            self.assertEqual(c.headers[s]["strict-transport-security"], self.HEADER)

    def test_not_over_plain_http(self) -> None:
        """Over plain http it is not sent, even when set."""
        server = Server(self, local={"server": {"hsts": 31536000}}).start()
        status, headers, _ = server.request("GET", "/health")
        self.assertEqual(status, 200)
        self.assertNotIn("Strict-Transport-Security", headers)


#: The C{openssl} C{testssl} runs, for its session resumption checks: those
#: run C{openssl s_client -sess_out} with C{/dev/null} as input, which
#: quits as soon as its handshake is done, and over TLS 1.3 the session
#: ticket comes after the handshake (1 RTT later, and later from Python
#: than from nginx): about half the runs saved no session and reported "check
#: failed because of connect problem".  Its input stays open a moment, as a
#: browser's connection does (any client that sends a request reads the
#: ticket before the response).  Every other call is the real openssl's.
OPENSSL_WRAPPER = """#!/bin/sh
case " $* " in
*" -sess_out "*) { sleep 1; } | exec {openssl} "$@" ;;
*) exec {openssl} "$@" ;;
esac
"""


class TestsslTests(SynchronousTestCase):
    """
    C{testssl} (Debian's C{testssl.sh}) against the real https and http2
    listeners, both at once: TLS 1.2 and 1.3 only, AEAD suites only (no
    CBC), sessions resumed by ticket and by session ID, and h2 offered by
    ALPN on the http2 listener only.  About 30 s.
    """

    def test_https_and_http2_listeners(self) -> None:
        testssl = require_tool("testssl", "testssl.sh", "TLS TEST NOT RUN")
        openssl = require_tool("openssl", "openssl", "TLS TEST NOT RUN")
        certs = Certs(self)
        out = os.path.abspath(self.mktemp())
        os.makedirs(out)
        wrapper = os.path.join(out, "openssl")
        with open(wrapper, "w") as f:
            f.write(OPENSSL_WRAPPER.replace("{openssl}", openssl))
        os.chmod(wrapper, 0o755)
        runs = {}
        for protocol in ("https", "http2"):
            server = TLSServer(
                self, certs.ca, local=server_config(protocol, certs), listen=None
            ).start()
            report = os.path.join(out, f"{protocol}.json")
            command = [testssl, "--quiet", "--color", "0", "--warnings", "off", "--nodns"]
            command += ["none", "--openssl", wrapper, "--protocols", "-E", "--server-defaults"]
            command += ["--jsonfile", report]
            command += [f"127.0.0.1:{server.port}"]
            process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=out
            )
            self.addCleanup(_kill, process)
            runs[protocol] = (process, report)
        for protocol, (process, report) in runs.items():
            _, errors = process.communicate(timeout=300)
            self.assertTrue(os.path.exists(report), f"testssl wrote no report: {errors!r}")
            with open(report, encoding="utf-8") as f:
                found = {e["id"]: e["finding"] for e in json.load(f)}
            with self.subTest(protocol=protocol):
                self.check(protocol, found)

    def check(self, protocol: str, found: dict[str, str]) -> None:
        for old in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
            self.assertEqual(found[old], "not offered", old)
        self.assertEqual(found["TLS1_2"], "offered")
        self.assertTrue(found["TLS1_3"].startswith("offered"), found["TLS1_3"])
        suites = {k: v for k, v in found.items() if k.startswith("cipher-tls")}
        tls12 = [v for k, v in suites.items() if k.startswith("cipher-tls1_2_")]
        tls13 = [v for k, v in suites.items() if k.startswith("cipher-tls1_3_")]
        self.assertEqual(len(tls12) + len(tls13), len(suites), suites)
        self.assertGreaterEqual(len(tls12), 3, suites)
        self.assertEqual(len(tls13), 3, suites)
        for suite in tls12:
            self.assertRegex(suite, r"\bECDHE-\S+-(GCM-SHA\d+|CHACHA20-POLY1305)\b")
            self.assertNotIn("_CBC_", suite)
        self.assertEqual(found["sessionresumption_ticket"], "supported")
        self.assertEqual(found["sessionresumption_ID"], "supported")
        if protocol == "http2":
            self.assertEqual(found["ALPN_HTTP2"], "h2")
        else:
            self.assertNotIn("h2", found.get("ALPN_HTTP2", "not offered").split())
        self.assertEqual(found["ALPN"], "http/1.1")


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(10)
