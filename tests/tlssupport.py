"""
TLS helpers for the tests: certificates made by the shipped
C{cert/make_dev_cert.py} (so the script is tested too), a socket-free
TLS handshake between a server context and a pyOpenSSL client, and for
the end-to-end tests a server whose clients speak HTTPS (L{TLSServer}), its
configuration, and a blocking HTTP/2 client (L{H2Client}).
"""

from __future__ import annotations

import datetime
import http.client
import importlib.util
import os
import socket
import ssl
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import h2.config
import h2.connection
import h2.events
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL
from OpenSSL._util import lib as _lib
from twisted.trial.unittest import SynchronousTestCase

from tests.support import PROJECT, Server, parse_frames

SCRIPT = os.path.join(PROJECT, "cert", "make_dev_cert.py")


def devcert() -> ModuleType:
    """The C{cert/make_dev_cert.py} script, imported as a module."""
    spec = importlib.util.spec_from_file_location("make_dev_cert", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Certs:
    """
    A fresh development CA and server certificate in a temporary folder,
    plus files for the failure cases: another CA, a key of another pair,
    garbage, and an encrypted key.
    """

    def __init__(self, testcase: SynchronousTestCase) -> None:
        self.dir = os.path.abspath(testcase.mktemp())
        script = devcert()
        script.make_dev_cert(self.dir)
        self.ca = self.path("ca.crt")
        self.key = self.path("server.key")
        self.cert = self.path("server.crt")

        now = datetime.datetime.now(datetime.timezone.utc)
        _, other_ca = script.make_ca(["localhost"], now, 30)
        self.other_ca = self.write(
            "other-ca.crt", other_ca.public_bytes(serialization.Encoding.PEM)
        )
        other_key = ec.generate_private_key(ec.SECP256R1())
        self.other_key = self.write("other.key", _pkcs8(other_key, serialization.NoEncryption()))
        self.encrypted_key = self.write(
            "encrypted.key",
            _pkcs8(other_key, serialization.BestAvailableEncryption(b"secret")),
        )
        self.garbage = self.write("garbage.pem", b"not a PEM file\n")
        with open(self.cert, "rb") as c, open(self.ca, "rb") as a:
            self.fullchain = self.write("fullchain.crt", c.read() + a.read())

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def write(self, name: str, data: bytes) -> str:
        with open(self.path(name), "wb") as f:
            f.write(data)
        return self.path(name)


def _pkcs8(key: Any, encryption: serialization.KeySerializationEncryption) -> bytes:
    return bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )


class HandshakeFailed(Exception):
    """C{side} (C{"client"} or C{"server"}) refused the handshake."""

    def __init__(self, side: str, error: SSL.Error) -> None:
        super().__init__(side, error)
        self.side = side
        self.error = error


class HandshakeResult:
    """
    What the client of L{handshake} saw: the ALPN protocol, the TLS version
    and cipher, the certificate chain's names, whether it resumed the
    session it offered (C{reused}), and the session it can offer next time
    (C{session}; with TLS 1.3, from the ticket sent after the handshake).
    """

    def __init__(self, client: SSL.Connection, context: SSL.Context) -> None:
        self.context = context
        self.alpn = client.get_alpn_proto_negotiated() or None
        self.version = client.get_protocol_version_name()
        self.cipher = client.get_cipher_name()
        self.chain = [c.get_subject().CN for c in client.get_peer_cert_chain() or []]
        # pyOpenSSL has no session_reused(); its binding of OpenSSL's has.
        self.reused = bool(_lib.SSL_session_reused(client._ssl))
        self.session = client.get_session()


def handshake(
    server: SSL.Connection,
    cafile: str,
    alpn: list[bytes] | None = None,
    max_version: int | None = None,
    ciphers: bytes | None = None,
    resume: HandshakeResult | None = None,
    tickets: bool = True,
) -> HandshakeResult:
    """
    Run a TLS handshake in memory between C{server} (a server-side
    connection, e.g. from C{serverConnectionForTLS}) and a client that verifies the server against
    C{cafile} for C{localhost}.

    @param ciphers: the TLS 1.2 suites the client offers (an OpenSSL list).
    @param resume: an earlier handshake whose client (its context and
        session) asks to resume its session.
    @param tickets: the client takes session tickets; without, TLS 1.2
        resumes by session ID only.
    @raise HandshakeFailed: when either side refuses.
    """
    if resume is not None:
        client = SSL.Connection(resume.context, None)
        client.set_tlsext_host_name(b"localhost")
        client.set_session(resume.session)
        return _run(client, server, resume.context)
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.load_verify_locations(cafile)
    ctx.set_verify(SSL.VERIFY_PEER, lambda conn, cert, errno, depth, ok: bool(ok))
    if alpn:
        ctx.set_alpn_protos(alpn)
    if max_version is not None:
        # Let the client offer old versions at all, so the refusal seen is
        # the server's.
        ctx.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
        ctx.set_min_proto_version(SSL.TLS1_VERSION)
        ctx.set_max_proto_version(max_version)
    if ciphers is not None:
        ctx.set_cipher_list(ciphers)
    if not tickets:
        ctx.set_options(SSL.OP_NO_TICKET)
    client = SSL.Connection(ctx, None)
    client.set_tlsext_host_name(b"localhost")
    return _run(client, server, ctx)


def _run(client: SSL.Connection, server: SSL.Connection, ctx: SSL.Context) -> HandshakeResult:
    """Pass the bytes of a handshake between C{client} and C{server}, in memory."""
    client.set_connect_state()
    server.set_accept_state()

    done = {"client": False, "server": False}
    for _ in range(20):
        for name, me, peer in (("client", client, server), ("server", server, client)):
            if not done[name]:
                try:
                    me.do_handshake()
                    done[name] = True
                except SSL.WantReadError:
                    pass
                except SSL.Error as e:
                    raise HandshakeFailed(name, e)
            try:
                data = me.bio_read(65536)
            except SSL.WantReadError:
                continue
            peer.bio_write(data)
        if all(done.values()):
            # What the server sent after its part (TLS 1.3's session
            # tickets) reaches the client as it reads.
            try:
                client.bio_write(server.bio_read(65536))
            except SSL.WantReadError:
                pass
            try:
                client.recv(1)
            except SSL.WantReadError:
                pass
            result = HandshakeResult(client, ctx)
            # Both close cleanly (close_notify): OpenSSL forgets the session
            # of a connection freed without it.
            client.shutdown()
            server.shutdown()
            return result
    raise AssertionError("TLS handshake did not finish in 20 rounds")


# -- end to end ----------------------------------------------------------------


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
