"""
Tests for L{notificator.tls} (the C{https:} endpoint type: its ciphers and
session resumption), the endpoint strings of
L{notificator.config.Config.endpoints}, the start-up TLS checks and
listeners of L{notificator.tap}, and C{server.hsts}, without sockets:
handshakes run in memory and listeners on a C{MemoryReactorClock}.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import os
import shutil
from typing import Any

from OpenSSL import SSL
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import ISSLTransport, IStreamServerEndpointStringParser
from twisted.internet.ssl import CertificateOptions
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher
from twisted.plugin import getPlugins
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site
from zope.interface import directlyProvides

from notificator import config, tap, tickets, tls
from tests.support import config_with, write_config
from tests.tlssupport import Certs, HandshakeFailed, HandshakeResult, devcert, handshake


def https(certs: Certs, extra: str = "", key: str | None = None, cert: str | None = None) -> str:
    return (
        f"https:port=3443:interface=127.0.0.1:privateKey={key or certs.key}"
        f":certKey={cert or certs.cert}{extra}"
    )


class DevCertScriptTests(SynchronousTestCase):
    """The shipped C{cert/make_dev_cert.py}."""

    def test_writes_ca_key_and_certificate(self) -> None:
        """The script writes ca.crt, server.key (mode 0600) and server.crt, and no CA key."""
        directory = self.mktemp()
        with contextlib.redirect_stdout(io.StringIO()) as out:
            devcert().main(["--dir", directory])
        self.assertIn("server.key", out.getvalue())
        self.assertEqual(sorted(os.listdir(directory)), ["ca.crt", "server.crt", "server.key"])
        self.assertEqual(os.stat(os.path.join(directory, "server.key")).st_mode & 0o777, 0o600)

    def test_certificate_names(self) -> None:
        """The server certificate names localhost, 127.0.0.1, ::1 and any --name."""
        from cryptography import x509

        directory = self.mktemp()
        with contextlib.redirect_stdout(io.StringIO()):
            devcert().main(["--dir", directory, "--name", "notify.test"])
        with open(os.path.join(directory, "server.crt"), "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(san.get_values_for_type(x509.DNSName), ["localhost", "notify.test"])
        self.assertEqual(
            [str(a) for a in san.get_values_for_type(x509.IPAddress)], ["127.0.0.1", "::1"]
        )


class LoadTests(SynchronousTestCase):
    """L{tls.load} loads good files and names the bad one."""

    def setUp(self) -> None:
        self.certs = Certs(self)

    def assertFileError(self, path: str, role: str, reason: str, *args: Any) -> None:
        e = self.assertRaises(tls.TLSFileError, tls.load, *args)
        self.assertEqual((e.path, e.role), (path, role))
        self.assertIn(reason, str(e))
        self.assertTrue(str(e).startswith(path + ": "))
        self.assertNotIn("\n", str(e))

    def test_good_files(self) -> None:
        """A matching key and certificate plus the CA give settings whose options are Twisted's."""
        settings = tls.load(self.certs.key, self.certs.cert, self.certs.ca)
        self.assertIsInstance(settings.options(), CertificateOptions)
        self.assertEqual(len(settings.chain), 1)

    def test_missing_key(self) -> None:
        """A missing key file is named, with the system's reason."""
        missing = self.certs.path("nope.key")
        self.assertFileError(
            missing,
            "privateKey",
            "cannot read: No such file or directory",
            missing,
            self.certs.cert,
        )

    def test_unreadable_certificate(self) -> None:
        """A certificate path that cannot be read (a folder) is named."""
        self.assertFileError(
            self.certs.dir, "certKey", "cannot read: Is a directory", self.certs.key, self.certs.dir
        )

    def test_key_not_pem(self) -> None:
        """A key file without a PEM private key is named."""
        self.assertFileError(
            self.certs.garbage,
            "privateKey",
            "holds no PEM private key",
            self.certs.garbage,
            self.certs.cert,
        )

    def test_encrypted_key(self) -> None:
        """An encrypted key is refused (twistd cannot ask for a passphrase)."""
        self.assertFileError(
            self.certs.encrypted_key,
            "privateKey",
            "encrypted",
            self.certs.encrypted_key,
            self.certs.cert,
        )

    def test_certificate_not_pem(self) -> None:
        """A certificate file without a PEM certificate is named."""
        self.assertFileError(
            self.certs.garbage,
            "certKey",
            "holds no PEM certificate",
            self.certs.key,
            self.certs.garbage,
        )

    def test_key_does_not_match(self) -> None:
        """A key of another pair is named, with the certificate it fails to match."""
        self.assertFileError(
            self.certs.other_key,
            "privateKey",
            f"does not match the certificate in {self.certs.cert}",
            self.certs.other_key,
            self.certs.cert,
        )

    def test_chain_not_pem(self) -> None:
        """A CA file without certificates is named."""
        self.assertFileError(
            self.certs.garbage,
            "extraCertChain",
            "holds no PEM certificate",
            self.certs.key,
            self.certs.cert,
            self.certs.garbage,
        )

    def test_chain_without_issuer(self) -> None:
        """A CA file that did not issue the certificate is named."""
        self.assertFileError(
            self.certs.other_ca,
            "extraCertChain",
            "holds no certificate that issued",
            self.certs.key,
            self.certs.cert,
            self.certs.other_ca,
        )

    def test_expired_certificate_warns(self) -> None:
        """A certificate outside its validity period is logged as a warning, not refused."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=400)
        tls.load(self.certs.key, self.certs.cert, now=later)
        warnings = [e for e in events if "is not valid now" in e["log_format"]]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["path"], self.certs.cert)


class HandshakeTests(SynchronousTestCase):
    """Real TLS handshakes, in memory, against L{tls.ServerTLS}."""

    def setUp(self) -> None:
        self.certs = Certs(self)

    def server(self, protocols: list[bytes], cert: str | None = None, ca: str | None = None) -> Any:
        settings = tls.load(self.certs.key, cert or self.certs.cert, ca)
        return tls.ServerTLS(settings, protocols).serverConnectionForTLS(None)

    def test_h2_preferred(self) -> None:
        """Offering h2 and http/1.1, a client that offers both gets h2."""
        result = handshake(self.server([b"h2", b"http/1.1"]), self.certs.ca, [b"h2", b"http/1.1"])
        self.assertEqual(result.alpn, b"h2")

    def test_http11_fallback(self) -> None:
        """A client offering only http/1.1 gets http/1.1 from an h2 listener."""
        result = handshake(self.server([b"h2", b"http/1.1"]), self.certs.ca, [b"http/1.1"])
        self.assertEqual(result.alpn, b"http/1.1")

    def test_http11_only(self) -> None:
        """alpn=http/1.1 is honoured exactly: h2 is not chosen even though the Site could."""
        result = handshake(self.server([b"http/1.1"]), self.certs.ca, [b"h2", b"http/1.1"])
        self.assertEqual(result.alpn, b"http/1.1")

    def test_no_overlap(self) -> None:
        """A client offering only protocols we do not speak gets no ALPN protocol."""
        result = handshake(self.server([b"http/1.1"]), self.certs.ca, [b"h2"])
        self.assertIsNone(result.alpn)

    def test_chain_served(self) -> None:
        """The CA from extraCertChain is sent after the certificate."""
        result = handshake(self.server([], ca=self.certs.ca), self.certs.ca)
        self.assertEqual(result.chain, ["localhost", "Notificator development CA"])

    def test_fullchain_file(self) -> None:
        """Extra certificates in the certKey file are served as the chain."""
        result = handshake(self.server([], cert=self.certs.fullchain), self.certs.ca)
        self.assertEqual(result.chain, ["localhost", "Notificator development CA"])

    def test_verifies_against_dev_ca(self) -> None:
        """A client trusting another CA refuses the certificate (the check is real)."""
        failed = self.assertRaises(HandshakeFailed, handshake, self.server([]), self.certs.other_ca)
        self.assertEqual(failed.side, "client")

    def test_tls12_accepted(self) -> None:
        """A TLS 1.2 client is served."""
        result = handshake(self.server([]), self.certs.ca, max_version=SSL.TLS1_2_VERSION)
        self.assertEqual(result.version, "TLSv1.2")

    def test_tls11_refused(self) -> None:
        """The server refuses a client that speaks at most TLS 1.1."""
        failed = self.assertRaises(
            HandshakeFailed,
            handshake,
            self.server([]),
            self.certs.ca,
            max_version=SSL.TLS1_1_VERSION,
        )
        self.assertEqual(failed.side, "server")


class CipherTests(SynchronousTestCase):
    """Mozilla's intermediate profile: forward-secret AEAD suites only."""

    def setUp(self) -> None:
        self.certs = Certs(self)

    def server(self, ciphers: str = tls.INTERMEDIATE_CIPHERS) -> SSL.Connection:
        settings = tls.load(self.certs.key, self.certs.cert, ciphers=ciphers)
        return tls.ServerTLS(settings, []).serverConnectionForTLS(None)

    def test_only_aead_suites(self) -> None:
        """The listener's suites: ECDHE with AES-GCM or ChaCha20 (TLS 1.2), and TLS 1.3's three."""
        offered = self.server().get_cipher_list()
        tls12 = [c for c in offered if not c.startswith("TLS_")]
        self.assertEqual(
            sorted(c for c in offered if c.startswith("TLS_")),
            ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"],
        )
        self.assertEqual(tls12, tls.INTERMEDIATE_CIPHERS.split(":"))
        for name in tls12:
            self.assertTrue(name.startswith("ECDHE-"), name)
            self.assertRegex(name, r"-(AES\d+-GCM-SHA\d+|CHACHA20-POLY1305)$")

    def test_cbc_client_refused(self) -> None:
        """A TLS 1.2 client offering only CBC suites (with SHA-1 or SHA-2 MACs) is refused."""
        failed = self.assertRaises(
            HandshakeFailed,
            handshake,
            self.server(),
            self.certs.ca,
            max_version=SSL.TLS1_2_VERSION,
            ciphers=b"ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA",
        )
        self.assertEqual(failed.side, "server")

    def test_aead_clients_served(self) -> None:
        """A TLS 1.2 client offering one AEAD suite gets it; TLS 1.3 gets an AEAD suite."""
        for suite in ("ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305"):
            result = handshake(
                self.server(),
                self.certs.ca,
                max_version=SSL.TLS1_2_VERSION,
                ciphers=suite.encode(),
            )
            self.assertEqual((result.version, result.cipher), ("TLSv1.2", suite))
        self.assertIn(handshake(self.server(), self.certs.ca).cipher, tls.TLS13_SUITES)

    def test_ciphers_setting(self) -> None:
        """ciphers= replaces the TLS 1.2 list (an operator keeping old clients)."""
        result = handshake(
            self.server("ECDHE-ECDSA-AES128-SHA"),
            self.certs.ca,
            max_version=SSL.TLS1_2_VERSION,
            ciphers=b"ECDHE-ECDSA-AES128-SHA",
        )
        self.assertEqual(result.cipher, "ECDHE-ECDSA-AES128-SHA")

    def test_unknown_ciphers(self) -> None:
        """A cipher list that selects no TLS 1.2 suite is a ValueError naming ciphers."""
        for text in (
            "AES128-NONESUCH",
            "TLS_AES_128_GCM_SHA256",
            "ECDHE-ECDSA-AES128-GCM-SHA256\u00e9",
        ):
            e = self.assertRaises(
                ValueError, tls.load, self.certs.key, self.certs.cert, ciphers=text
            )
            self.assertIn("ciphers: ", str(e))
            self.assertIn("selects no TLS 1.2 cipher suite", str(e))

    def test_shipped_default_is_the_profile(self) -> None:
        """conf/default.json's server.tls.ciphers is the https: type's own default."""
        self.assertEqual(config.defaults().server.tls.ciphers, tls.INTERMEDIATE_CIPHERS)


class ResumptionTests(SynchronousTestCase):
    """
    Sessions resume, by ticket and by session ID, for TLS 1.2 and 1.3; the
    ticket key is new every window, and shared through a directory.
    """

    def setUp(self) -> None:
        self.certs = Certs(self)
        self.clock = Clock()
        # The start of a ticket-key window.
        self.clock.advance(1000 * tickets.KEY_SECONDS)
        self.keys = os.path.join(os.path.abspath(self.mktemp()), "tickets")

    def server(
        self,
        shared: bool = True,
        tickets_on: bool = True,
        certs: Certs | None = None,
    ) -> tls.ServerTLS:
        """A listener (in a process of its own, as far as TLS goes)."""
        certs = certs or self.certs
        settings = tls.load(certs.key, certs.cert, tickets=tickets_on)
        keys = tickets.TicketKeys(self.keys) if shared else None
        return tls.ServerTLS(settings, [], self.clock, keys)

    def resumes(
        self, first: tls.ServerTLS, then: tls.ServerTLS, version: int, by_ticket: bool = True
    ) -> bool:
        """A client of C{first} comes back to C{then}: is its session resumed?"""
        initial = handshake(
            first.serverConnectionForTLS(None),
            self.certs.ca,
            max_version=version,
            tickets=by_ticket,
        )
        self.assertFalse(initial.reused)
        return self.again(then, initial).reused

    def again(self, server: tls.ServerTLS, initial: HandshakeResult) -> HandshakeResult:
        return handshake(server.serverConnectionForTLS(None), self.certs.ca, resume=initial)

    def test_same_process(self) -> None:
        """A client coming back resumes, by ticket (TLS 1.2 and 1.3) or by session ID (1.2)."""
        server = self.server(shared=False)
        for version in (SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION):
            self.assertTrue(self.resumes(server, server, version), version)
        self.assertTrue(self.resumes(server, server, SSL.TLS1_2_VERSION, by_ticket=False))

    def test_another_process_sharing_the_keys(self) -> None:
        """Two processes with the same key directory resume each other's sessions."""
        for version in (SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION):
            self.assertTrue(self.resumes(self.server(), self.server(), version), version)

    def test_another_process_with_its_own_keys(self) -> None:
        """Without a shared directory, another process does not (a full handshake)."""
        for version in (SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION):
            first, then = self.server(shared=False), self.server(shared=False)
            self.assertFalse(self.resumes(first, then, version), version)

    def test_tickets_off(self) -> None:
        """With tickets off, sessions resume from the process's cache only."""
        first = self.server(tickets_on=False)
        self.assertTrue(self.resumes(first, first, SSL.TLS1_2_VERSION))
        self.assertFalse(self.resumes(first, self.server(tickets_on=False), SSL.TLS1_2_VERSION))
        self.assertEqual(os.path.exists(self.keys), False)

    def test_other_certificate_does_not_resume(self) -> None:
        """A listener with another certificate and the same keys does not resume the session."""
        other = Certs(self)
        # A client that trusts both.
        both = self.certs.path("both.crt")
        shutil.copy(other.ca, both)
        with open(both, "ab") as f, open(self.certs.ca, "rb") as ca:
            f.write(ca.read())
        initial = handshake(self.server().serverConnectionForTLS(None), both)
        self.assertTrue(self.again(self.server(), initial).reused)
        self.assertFalse(self.again(self.server(certs=other), initial).reused)

    def test_rotation(self) -> None:
        """
        When the window ends the key is new, in every process: sessions of
        the window before get a full handshake (the old key is gone, from
        memory and disk), and the new tickets resume again, everywhere.
        """
        first, second = self.server(), self.server()
        before = handshake(first.serverConnectionForTLS(None), self.certs.ca)
        self.clock.advance(tickets.KEY_SECONDS)
        after = self.again(first, before)
        self.assertFalse(after.reused)
        window = int(self.clock.seconds() // tickets.KEY_SECONDS)
        self.assertEqual(os.listdir(self.keys), [f"window-{window}.key"])
        self.assertTrue(self.again(first, after).reused)
        self.assertTrue(self.again(second, after).reused)
        self.assertFalse(self.again(second, before).reused)

    def test_rotation_within_the_window_keeps_the_key(self) -> None:
        """Until the window ends, a process keeps its context (and its session cache)."""
        server = self.server(shared=False)
        initial = handshake(server.serverConnectionForTLS(None), self.certs.ca)
        self.clock.advance(tickets.KEY_SECONDS - 1)
        self.assertTrue(self.again(server, initial).reused)

    def test_keys_unusable_later(self) -> None:
        """A key directory gone bad after start-up is a warning; connections are still served."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        server = self.server()
        initial = handshake(server.serverConnectionForTLS(None), self.certs.ca)
        shutil.rmtree(self.keys)
        with open(self.keys, "w"):
            pass
        self.clock.advance(tickets.KEY_SECONDS)
        after = self.again(server, initial)
        self.assertFalse(after.reused)
        self.assertTrue(self.again(server, after).reused)
        [warning] = [e for e in events if "no shared key" in e["log_format"]]
        self.assertEqual(warning["directory"], self.keys)

    def test_keys_unusable_at_start(self) -> None:
        """A key directory that cannot be used stops start-up, naming it (TLSFileError)."""
        with open(os.path.abspath(self.mktemp()), "w") as f:
            self.keys = os.path.join(f.name, "tickets")
        e = self.assertRaises(tls.TLSFileError, self.server)
        self.assertEqual((e.path, e.role), (self.keys, "ticketKeys"))
        self.assertIn("ticket key: Not a directory", str(e))


class ParserTests(SynchronousTestCase):
    """The C{https:} strports type, found as a plugin by serverFromString."""

    def setUp(self) -> None:
        self.certs = Certs(self)
        self.reactor = MemoryReactorClock()

    def test_plugin_registered(self) -> None:
        """The twisted/plugins drop-in provides a parser for the https prefix."""
        prefixes = [p.prefix for p in getPlugins(IStreamServerEndpointStringParser)]
        self.assertIn("https", prefixes)

    def test_listens_with_tls(self) -> None:
        """An https: string listens with listenSSL on its port, interface and backlog."""
        site = Site(None)
        endpoint = serverFromString(self.reactor, https(self.certs, ":backlog=7:alpn=h2,http/1.1"))
        endpoint.listen(site)
        [(port, factory, creator, backlog, interface)] = self.reactor.sslServers
        self.assertEqual((port, factory, backlog, interface), (3443, site, 7, "127.0.0.1"))
        self.assertIsInstance(creator, tls.ServerTLS)
        self.assertEqual(creator.protocols, (b"h2", b"http/1.1"))

    def test_default_alpn(self) -> None:
        """Without alpn=, h2 then http/1.1 are offered (what a Site speaks)."""
        serverFromString(self.reactor, https(self.certs)).listen(Site(None))
        self.assertEqual(self.reactor.sslServers[0][2].protocols, (b"h2", b"http/1.1"))

    def test_alpn_values(self) -> None:
        """alpn= takes h2 and http/1.1 in any order, deduplicated, or nothing."""
        self.assertEqual(tls.parse_alpn("http/1.1, h2,h2"), [b"http/1.1", b"h2"])
        self.assertEqual(tls.parse_alpn(""), [])

    def test_bad_alpn(self) -> None:
        """An ALPN id twisted.web cannot serve is a ValueError."""
        e = self.assertRaises(
            ValueError, serverFromString, self.reactor, https(self.certs, ":alpn=spdy/3")
        )
        self.assertIn("'spdy/3' is not one of h2, http/1.1", str(e))

    def test_unknown_parameter(self) -> None:
        """An unknown parameter is a ValueError naming it."""
        e = self.assertRaises(
            ValueError, serverFromString, self.reactor, https(self.certs, ":sslmethod=TLSv1")
        )
        self.assertIn("sslmethod", str(e))

    def test_bad_port(self) -> None:
        """A port that is not a number is a ValueError."""
        self.assertRaises(
            ValueError, serverFromString, self.reactor, f"https:port=x:privateKey={self.certs.key}"
        )

    def test_session_parameters(self) -> None:
        """tickets= (on by default) and ticketKeys= (none by default) reach the listener."""
        keys = os.path.abspath(self.mktemp())
        for extra, on, directory in (
            ("", True, None),
            (":tickets=off", False, None),
            (f":ticketKeys={keys}", True, keys),
            (f":tickets=off:ticketKeys={keys}", False, None),
        ):
            creator = serverFromString(self.reactor, https(self.certs, extra))._sslContextFactory
            self.assertEqual(creator.settings.tickets, on, extra)
            self.assertEqual(creator.keys and creator.keys.directory, directory, extra)

    def test_bad_session_parameters(self) -> None:
        """tickets= other than on or off, and ciphers= that select nothing, are ValueErrors."""
        e = self.assertRaises(
            ValueError, serverFromString, self.reactor, https(self.certs, ":tickets=yes")
        )
        self.assertIn("tickets must be on or off", str(e))
        e = self.assertRaises(
            ValueError, serverFromString, self.reactor, https(self.certs, ":ciphers=NONE")
        )
        self.assertIn("ciphers: 'NONE' selects no TLS 1.2 cipher suite", str(e))

    def test_says_how_sessions_resume(self) -> None:
        """When it listens, the endpoint logs where its ticket keys are (once)."""
        keys = os.path.abspath(self.mktemp())
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        endpoint = serverFromString(self.reactor, https(self.certs, f":ticketKeys={keys}"))
        self.assertEqual([e for e in events if "session tickets" in e["log_format"]], [])
        endpoint.listen(Site(None))
        [line] = [e for e in events if "session tickets" in e["log_format"]]
        self.assertEqual(line["directory"], keys)

    def test_bad_file(self) -> None:
        """A bad file surfaces as TLSFileError (a ValueError) from serverFromString."""
        e = self.assertRaises(
            tls.TLSFileError,
            serverFromString,
            self.reactor,
            https(self.certs, key=self.certs.other_key),
        )
        self.assertEqual(e.path, self.certs.other_key)


def load(local: dict[str, Any], directory: str) -> config.Config:
    conf = write_config(os.path.join(directory, "conf"), {"test": {}, "local": local})
    return config.load(FilePath(conf), "test")


class EndpointStringTests(SynchronousTestCase):
    """L{config.Config.endpoints} turns server.* into strports strings."""

    def endpoints(self, **server: Any) -> list[str]:
        return load({"server": server}, os.path.abspath(self.mktemp())).endpoints()

    def test_http(self) -> None:
        """http becomes tcp: with the host as interface."""
        self.assertEqual(
            self.endpoints(protocol="http", port=3000, host="127.0.0.1"),
            ["tcp:port=3000:interface=127.0.0.1"],
        )

    def test_https(self) -> None:
        """https becomes https: with root-relative files and ALPN http/1.1 only."""
        root = os.path.abspath(self.mktemp())
        cfg = load(
            {
                "server": {
                    "protocol": "https",
                    "port": 3443,
                    "certificates": {"key": "cert/server.key", "cert": "cert/server.crt"},
                }
            },
            root,
        )
        self.assertEqual(
            cfg.endpoints(),
            [
                f"https:port=3443:interface=\\:\\::privateKey={root}/cert/server.key"
                f":certKey={root}/cert/server.crt:alpn=http/1.1"
            ],
        )

    def test_http2_with_ca_and_ipv6_host(self) -> None:
        """http2 offers h2 then http/1.1, serves the CA, and quotes the colons of ::1."""
        [description] = self.endpoints(
            protocol="http2",
            port=3443,
            host="::1",
            certificates={"key": "/k.pem", "cert": "/c.pem", "ca": "/ca.pem"},
        )
        self.assertEqual(
            description,
            "https:port=3443:interface=\\:\\:1:privateKey=/k.pem:certKey=/c.pem"
            ":extraCertChain=/ca.pem:alpn=h2,http/1.1",
        )

    def test_explicit_endpoints(self) -> None:
        """server.endpoints replaces the built string."""
        self.assertEqual(
            self.endpoints(protocol="http2", endpoints=["tcp:3000", "unix:/tmp/n.sock"]),
            ["tcp:3000", "unix:/tmp/n.sock"],
        )

    def test_paths_with_colons_round_trip(self) -> None:
        """A certificate path with a colon survives strports parsing."""
        certs = Certs(self)
        odd = os.path.join(certs.dir, "a:b")
        os.makedirs(odd)
        key, cert = os.path.join(odd, "k.pem"), os.path.join(odd, "c.pem")
        os.rename(certs.key, key)
        os.rename(certs.cert, cert)
        [description] = self.endpoints(
            protocol="http2", port=3443, certificates={"key": key, "cert": cert}
        )
        reactor = MemoryReactorClock()
        serverFromString(reactor, description).listen(Site(None))
        self.assertEqual(reactor.sslServers[0][0], 3443)


class StartupTests(SynchronousTestCase):
    """C{twistd notificator} options: TLS problems stop start-up with one line."""

    def setUp(self) -> None:
        self.certs = Certs(self)
        self.root = os.path.abspath(self.mktemp())

    def options(self, server: dict[str, Any], *args: str) -> tap.Options:
        conf = write_config(
            os.path.join(self.root, "conf"), {"test": {}, "local": {"server": server}}
        )
        options = tap.Options()
        options.parseOptions(["--config", conf, "--env", "test", *args])
        return options

    def http2(self, **certificates: str) -> dict[str, Any]:
        files = {"key": self.certs.key, "cert": self.certs.cert, "ca": self.certs.ca}
        files.update(certificates)
        return {"protocol": "http2", "port": 3443, "host": "127.0.0.1", "certificates": files}

    def test_config_key_and_file_named(self) -> None:
        """A bad file from server.certificates names the config key and the file."""
        e = self.assertRaises(SystemExit, self.options, self.http2(key=self.certs.other_key))
        self.assertEqual(
            str(e),
            f"notificator: TLS error: server.certificates.key: {self.certs.other_key}: "
            f"this private key does not match the certificate in {self.certs.cert}",
        )

    def test_bad_ca(self) -> None:
        """A bad CA file names server.certificates.ca."""
        e = self.assertRaises(SystemExit, self.options, self.http2(ca=self.certs.garbage))
        self.assertIn(f"server.certificates.ca: {self.certs.garbage}: holds no PEM", str(e))

    def test_listen_checked(self) -> None:
        """A bad --listen https: string stops start-up naming the file only."""
        missing = self.certs.path("missing.crt")
        e = self.assertRaises(
            SystemExit, self.options, {}, "--listen", https(self.certs, cert=missing)
        )
        self.assertEqual(
            str(e), f"notificator: TLS error: {missing}: cannot read: No such file or directory"
        )

    def test_other_endpoint_errors(self) -> None:
        """Any other bad description (Twisted's ssl: included) is one line too."""
        missing = self.certs.path("missing.pem")
        e = self.assertRaises(
            SystemExit, self.options, {}, "--listen", f"ssl:3443:privateKey={missing}"
        )
        self.assertTrue(str(e).startswith("notificator: cannot listen on 'ssl:3443:"))
        self.assertIn(missing, str(e))
        e = self.assertRaises(SystemExit, self.options, {}, "--listen", "nonesuch:1")
        self.assertIn("Unknown endpoint type", str(e))

    def test_http2_listener(self) -> None:
        """protocol http2 listens with TLS on the configured port, serving the Site with h2."""
        options = self.options(self.http2())
        reactor = MemoryReactorClock()
        service = tap.makeService(options, reactor=reactor)
        service.startService()
        self.addCleanup(service.stopService)
        [(port, factory, creator, _, interface)] = reactor.sslServers
        self.assertEqual((port, interface), (3443, "127.0.0.1"))
        self.assertIsInstance(factory, Site)
        self.assertEqual(creator.protocols, (b"h2", b"http/1.1"))
        self.assertEqual(reactor.tcpServers, [])

    def test_tls_settings_on_every_https_listener(self) -> None:
        """server.tls.* reaches https: listeners from the config and from --listen alike."""
        keys = os.path.join(self.root, "keys")
        server = self.http2()
        server["tls"] = {"ciphers": "ECDHE-ECDSA-AES128-GCM-SHA256", "ticketKeyDir": keys}
        for args in ((), ("--listen", https(self.certs).replace("3443", "3444"))):
            options = self.options(server, *args)
            reactor = MemoryReactorClock()
            service = tap.makeService(options, reactor=reactor)
            service.startService()
            try:
                [(_, _, creator, _, _)] = reactor.sslServers
                self.assertEqual(creator.keys.directory, keys)
                self.assertEqual(
                    [c for c in creator.serverConnectionForTLS(None).get_cipher_list() if "-" in c],
                    ["ECDHE-ECDSA-AES128-GCM-SHA256"],
                )
            finally:
                # Stopped before the next: one server per history directory.
                service.stopService()

    def test_unusable_ticket_key_dir(self) -> None:
        """A server.tls.ticketKeyDir that cannot be made stops start-up naming the key."""
        blocker = os.path.join(self.root, "file")
        os.makedirs(self.root, exist_ok=True)
        with open(blocker, "w"):
            pass
        server = self.http2()
        server["tls"] = {"ticketKeyDir": os.path.join(blocker, "keys")}
        e = self.assertRaises(SystemExit, self.options, server)
        self.assertEqual(
            str(e),
            f"notificator: configuration error: server.tls.ticketKeyDir: {blocker}/keys:"
            " Not a directory",
        )

    def test_ticket_key_dir_only_when_used(self) -> None:
        """Over plain http, or with tickets off, the key directory is not made."""
        keys = os.path.join(self.root, "keys")
        self.options({"protocol": "http", "tls": {"ticketKeyDir": keys}})
        server = self.http2()
        server["tls"] = {"ticketKeyDir": keys, "sessionTickets": False}
        self.options(server)
        self.assertFalse(os.path.exists(keys))

    def test_bad_ciphers_in_config(self) -> None:
        """A server.tls.ciphers that selects nothing stops start-up naming the file and key."""
        e = self.assertRaises(SystemExit, self.options, {"tls": {"ciphers": "ECDHE-NONESUCH"}})
        self.assertRegex(
            str(e),
            r"^notificator: configuration error: .*local\.json: server\.tls\.ciphers:"
            r" 'ECDHE-NONESUCH' selects no TLS 1\.2 cipher suite",
        )


class WithTLSTests(SynchronousTestCase):
    """L{tap.with_tls}: server.tls.* as parameters of https: descriptions."""

    def test_added(self) -> None:
        """Ciphers (colons escaped), tickets and the key directory are added to https: strings."""
        settings = config.TLSConfig(ciphers="A:B", session_tickets=True, ticket_key_dir="/v/t:k")
        self.assertEqual(
            tap.with_tls("https:port=1", settings),
            "https:port=1:ciphers=A\\:B:tickets=on:ticketKeys=/v/t\\:k",
        )
        off = config.TLSConfig(ciphers="A", session_tickets=False, ticket_key_dir=None)
        self.assertEqual(tap.with_tls("https:port=1", off), "https:port=1:ciphers=A:tickets=off")

    def test_own_values_kept(self) -> None:
        """A description's own values win; other types are left alone."""
        settings = config.TLSConfig(ciphers="A", session_tickets=True, ticket_key_dir="/k")
        own = "https:port=1:ciphers=B:tickets=off:ticketKeys=/j"
        self.assertEqual(tap.with_tls(own, settings), own)
        for other in ("tcp:3000", "ssl:3443:privateKey=k.pem"):
            self.assertEqual(tap.with_tls(other, settings), other)


class _TCPTransport(StringTransport):
    """What twisted.web's channel asks of a TCP transport, in memory."""

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass


class HSTSTests(SynchronousTestCase):
    """
    server.hsts: C{Strict-Transport-Security} on every response over TLS
    (the site as makeService builds it, L{notificator.app.build_site}, on
    a connection whose transport is TLS), none over plain TCP.
    """

    def site(self, hsts: int | None, fast: bool = True) -> Site:
        from twisted.application.service import MultiService

        from notificator.app import build_core, build_site

        reactor = MemoryReactorClock()
        # The history in memory: several sites start in one test.
        cfg = config_with(
            server={"hsts": hsts, "fast_channel": fast}, sse={"history": {"directory": None}}
        )
        services = MultiService()
        site = build_site(build_core(cfg, reactor), cfg, reactor, parent=services)
        services.startService()
        self.addCleanup(services.stopService)
        self.reactor = reactor
        return site

    def answer(self, site: Site, request: bytes, secure: bool = True) -> bytes:
        transport = _TCPTransport()
        if secure:
            directlyProvides(transport, ISSLTransport)
        protocol = site.buildProtocol(None)
        protocol.makeConnection(transport)
        protocol.dataReceived(request)
        self.reactor.advance(0)
        self.reactor.advance(0)
        return bytes(transport.value())

    def test_every_response_over_tls(self) -> None:
        """A stream, a refusal and a 413 answered before the body all carry the header."""
        for fast in (True, False):
            site = self.site(31536000, fast)
            for request in (
                b"GET /sse/u1 HTTP/1.1\r\nHost: n\r\n\r\n",
                b"GET /nowhere HTTP/1.1\r\nHost: n\r\n\r\n",
                b"POST /webNotification HTTP/1.1\r\nHost: n\r\nContent-Length: 99999999\r\n\r\n",
            ):
                answer = self.answer(site, request)
                head = answer.split(b"\r\n\r\n")[0]
                self.assertIn(b"\r\nStrict-Transport-Security: max-age=31536000\r\n", head)
                self.assertEqual(head.lower().count(b"strict-transport-security"), 1)

    def test_not_over_plain_tcp(self) -> None:
        """Over plain TCP it is never sent."""
        site = self.site(31536000)
        answer = self.answer(site, b"GET /nowhere HTTP/1.1\r\nHost: n\r\n\r\n", secure=False)
        self.assertIn(b"404", answer)
        self.assertNotIn(b"strict-transport-security", answer.lower())

    def test_off_by_default(self) -> None:
        """The shipped default (null) sends none, over TLS too."""
        self.assertIsNone(config.defaults().server.hsts)
        answer = self.answer(self.site(None), b"GET /nowhere HTTP/1.1\r\nHost: n\r\n\r\n")
        self.assertNotIn(b"strict-transport-security", answer.lower())

    def test_zero_clears(self) -> None:
        """0 sends max-age=0, which tells browsers to forget an earlier one."""
        answer = self.answer(self.site(0), b"GET /nowhere HTTP/1.1\r\nHost: n\r\n\r\n")
        self.assertIn(b"Strict-Transport-Security: max-age=0\r\n", answer)

    def test_config_values(self) -> None:
        """server.hsts: null or whole seconds from 0; anything else stops start-up."""
        root = os.path.abspath(self.mktemp())
        self.assertEqual(load({"server": {"hsts": 63072000}}, root).server.hsts, 63072000)
        for bad in (-1, 1.5, "soon", True, [1]):
            e = self.assertRaises(config.ConfigError, load, {"server": {"hsts": bad}}, root)
            self.assertEqual(e.key, "server.hsts")
