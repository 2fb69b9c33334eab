"""
TLS helpers for the tests: certificates made by the shipped
C{cert/make_dev_cert.py} (so the script is tested too), and a socket-free
TLS handshake between a server context and a pyOpenSSL client.
"""

from __future__ import annotations

import datetime
import importlib.util
import os
from types import ModuleType
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL
from twisted.trial.unittest import SynchronousTestCase

from tests.support import PROJECT

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
    def __init__(self, client: SSL.Connection) -> None:
        self.alpn = client.get_alpn_proto_negotiated() or None
        self.version = client.get_protocol_version_name()
        self.chain = [c.get_subject().CN for c in client.get_peer_cert_chain() or []]


def handshake(
    server: SSL.Connection,
    cafile: str,
    alpn: list[bytes] | None = None,
    max_version: int | None = None,
) -> HandshakeResult:
    """
    Run a TLS handshake in memory between C{server} (a server-side
    connection, e.g. from C{serverConnectionForTLS}) and a client that verifies the server against
    C{cafile} for C{localhost}.

    @raise HandshakeFailed: when either side refuses.
    """
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
    client = SSL.Connection(ctx, None)
    client.set_tlsext_host_name(b"localhost")
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
            return HandshakeResult(client)
    raise AssertionError("TLS handshake did not finish in 20 rounds")
