# -*- test-case-name: tests.test_tls -*-
"""
TLS listeners with exact ALPN: the C{https:} server endpoint type.

With the h2 package installed, a twisted.web C{Site} offers C{h2} by ALPN
on every TLS listener, even Twisted's stock C{ssl:} (the C{Site} is an
C{IProtocolNegotiationFactory}, and Twisted puts its protocols ahead of
any C{acceptableProtocols} given to C{CertificateOptions}).  So the
C{CertificateOptions} knob alone cannot make a listener HTTP/1.1 only,
and C{ssl:} reads its files without telling which one is wrong.  This
module adds one strports type, registered by the
C{twisted/plugins/notificator_endpoints.py} drop-in, so every listener
still comes from a strports string::

    https:port=3443:privateKey=cert/server.key:certKey=cert/server.crt
         [:extraCertChain=cert/ca.crt][:alpn=h2,http/1.1]
         [:ciphers=<OpenSSL cipher list>][:tickets=on|off][:ticketKeys=var/tls-tickets]
         [:interface=::][:backlog=50]

 - C{privateKey}: PEM private key (unencrypted).  C{certKey}: the PEM
   certificate; when it holds more than one certificate (a "fullchain"
   file) the rest are served as the chain.  Without C{certKey} the
   certificate is read from the C{privateKey} file.
 - C{extraCertChain}: PEM file of CA certificates served after the
   certificate; it must hold the certificate's issuer.
 - C{alpn}: exactly the protocols offered by ALPN, preferred first, from
   C{h2} and C{http/1.1} (the two twisted.web speaks); default
   C{h2,http/1.1}.  C{alpn=http/1.1} keeps the listener on HTTP/1.1; an
   empty value selects none (clients then speak HTTP/1.1).
 - C{ciphers}: the TLS 1.2 cipher suites (an OpenSSL cipher list; escape
   its colons as C{\\:}); default L{INTERMEDIATE_CIPHERS}.
 - C{tickets}: C{on} (the default): sessions resume with session tickets
   as well as from the process's session cache; C{off}: from the cache
   only.
 - C{ticketKeys}: a directory the ticket keys are kept in and shared
   through (L{notificator.tickets.TicketKeys}); without it each process
   keeps its own keys in memory.

L{https_listener} reads the same description without making an
endpoint: its address and the connection creator, for a listening socket
opened elsewhere (L{notificator.workers.reuseport}).

The TLS settings follow Mozilla's "intermediate" profile (Server Side TLS
5.7): TLS 1.2 or newer (stated here with C{raiseMinimumTo}), forward-secret
AEAD suites only (L{INTERMEDIATE_CIPHERS}, L{TLS13_SUITES}; no CBC, no
SHA-1 MACs), and OpenSSL's key-exchange groups (X25519 first).  Sessions
resume (L{ServerTLS}): by session ID from the process's cache, and by
ticket, with a key that is new every
L{notificator.tickets.KEY_SECONDS}.

"""

from __future__ import annotations

import datetime
import hashlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from OpenSSL import SSL, crypto
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.internet.interfaces import (
    IListeningPort,
    IOpenSSLServerConnectionCreator,
    IReactorCore,
    IReactorTime,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
)
from twisted.internet.protocol import Factory
from twisted.internet.ssl import AcceptableCiphers, CertificateOptions, TLSVersion
from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from notificator.config.checks import check_ciphers
from notificator.tickets import KEY_SECONDS, TicketKeys, set_ticket_key, ticket_keys_settable

log = Logger()

#: The ALPN protocol ids twisted.web can serve.
ALPN_PROTOCOLS = ("h2", "http/1.1")

#: What the C{https:} type offers when C{alpn} is not given: what a
#: twisted.web C{Site} can speak, as Twisted's own C{ssl:} offers it.
DEFAULT_ALPN = "h2,http/1.1"

#: The TLS 1.2 cipher suites of Mozilla's "intermediate" profile, without
#: its optional DHE ones (they need DH parameters, and every client of TLS
#: 1.2 has ECDHE): ECDHE with AES-GCM or ChaCha20-Poly1305, for ECDSA and
#: RSA certificates.  No CBC suite (the LUCKY13 kind) and no SHA-1 MAC.
INTERMEDIATE_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)

#: The TLS 1.3 suites: Mozilla's, which are OpenSSL's default.
TLS13_SUITES = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"


class TLSFileError(ValueError):
    """
    A TLS file cannot be used.  C{str()} is one line: C{<path>: <reason>}.

    @ivar path: the file (or directory).
    @ivar role: C{"privateKey"}, C{"certKey"}, C{"extraCertChain"} or
        C{"ticketKeys"}: the C{https:} parameter that names it.
    @ivar reason: what is wrong with it.
    """

    def __init__(self, path: str, role: str, reason: str) -> None:
        super().__init__(path, role, reason)
        self.path = path
        self.role = role
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def _read(path: str, role: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise TLSFileError(path, role, f"cannot read: {e.strerror or e}")


def _certificates(path: str, role: str, data: bytes) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise TLSFileError(path, role, "holds no PEM certificate")
    return certs


def _private_key(path: str, data: bytes) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise TLSFileError(
            path, "privateKey", "the private key is encrypted; give an unencrypted one"
        )
    except ValueError:
        raise TLSFileError(path, "privateKey", "holds no PEM private key")


def _spki(key: Any) -> bytes:
    return bytes(
        key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def parse_alpn(value: str) -> list[bytes]:
    """
    C{"h2,http/1.1"} -> C{[b"h2", b"http/1.1"]}.

    @raise ValueError: a protocol twisted.web cannot serve, or C{h2}
        without the h2 package.
    """
    from twisted.web.http import H2_ENABLED

    protocols = [p.strip() for p in value.split(",") if p.strip()]
    for p in protocols:
        if p not in ALPN_PROTOCOLS:
            raise ValueError(f"alpn: {p!r} is not one of {', '.join(ALPN_PROTOCOLS)}")
    if "h2" in protocols and not H2_ENABLED:
        raise ValueError("alpn: h2 needs the h2 package (pip install 'Twisted[http2]')")
    return [p.encode("ascii") for p in dict.fromkeys(protocols)]


@attrs.frozen(eq=False)
class TLSSettings:
    """
    What one TLS listener serves: the checked key, certificate and chain
    (L{load}), and its TLS settings.  Each L{context} is a new OpenSSL
    context with them.

    @ivar session_context: the session ID context, the same in every
        process serving this certificate (Twisted's is random per
        context), so that a session resumes in another process or after a
        restart, and never on a listener with another certificate.
    @ivar ciphers: the TLS 1.2 suites (L{check_ciphers}).
    @ivar tickets: sessions resume by ticket too, not only from the cache.
    """

    key: crypto.PKey
    certificate: crypto.X509
    chain: tuple[crypto.X509, ...]
    session_context: bytes
    ciphers: AcceptableCiphers
    tickets: bool = True

    def options(self) -> CertificateOptions:
        """A new C{CertificateOptions} with these settings."""
        return CertificateOptions(
            privateKey=self.key,
            certificate=self.certificate,
            extraCertChain=list(self.chain),
            raiseMinimumTo=TLSVersion.TLSv1_2,
            acceptableCiphers=self.ciphers,
            enableSessions=True,
            enableSessionTickets=self.tickets,
        )

    def context(self) -> SSL.Context:
        """
        A new OpenSSL context: Twisted's from L{options}, with the TLS 1.3
        suites, the session ID context, and sessions (cached and
        ticketed) that last one ticket-key window.  It holds a new random
        ticket key (L{ServerTLS} may replace it).
        """
        context = self.options().getContext()
        context.set_tls13_ciphersuites(TLS13_SUITES.encode("ascii"))
        context.set_session_id(self.session_context)
        context.set_timeout(KEY_SECONDS)
        return context


def load(
    private_key: str,
    cert: str | None = None,
    chain: str | None = None,
    now: datetime.datetime | None = None,
    ciphers: str = INTERMEDIATE_CIPHERS,
    tickets: bool = True,
) -> TLSSettings:
    """
    Load and check the files; the L{TLSSettings} of a listener serving them.

    @param private_key: path of the PEM private key.
    @param cert: path of the PEM certificate (plus optional chain); the key
        file when L{None}.
    @param chain: path of a PEM file of CA certificates to serve.
    @param now: the time to check the validity period against (a warning,
        not an error: the operator may be replacing the file right now).
    @param ciphers: the TLS 1.2 suites, an OpenSSL cipher list.
    @param tickets: resume sessions by ticket too.
    @raise TLSFileError: naming the file that is wrong.
    @raise ValueError: C{ciphers} selects no suite.
    """
    try:
        suites = check_ciphers(ciphers)
    except ValueError as e:
        raise ValueError(f"ciphers: {e}")
    cert_path = cert or private_key
    key = _private_key(private_key, _read(private_key, "privateKey"))
    leaf, *extra = _certificates(cert_path, "certKey", _read(cert_path, "certKey"))
    if _spki(leaf.public_key()) != _spki(key.public_key()):
        raise TLSFileError(
            private_key,
            "privateKey",
            f"this private key does not match the certificate in {cert_path}",
        )
    if chain is not None:
        from_ca = _certificates(chain, "extraCertChain", _read(chain, "extraCertChain"))
        if not any(_issued_by(c, ca) for c in [leaf, *extra] for ca in from_ca):
            raise TLSFileError(
                chain,
                "extraCertChain",
                f"holds no certificate that issued {cert_path} or its chain",
            )
        extra += [ca for ca in from_ca if ca not in extra]

    moment = now or datetime.datetime.now(datetime.timezone.utc)
    if not leaf.not_valid_before_utc <= moment <= leaf.not_valid_after_utc:
        log.warn(
            "TLS certificate {path} is not valid now: valid from {start} to {end}",
            path=cert_path,
            start=leaf.not_valid_before_utc.isoformat(),
            end=leaf.not_valid_after_utc.isoformat(),
        )

    try:
        # Any key cryptography loads; pyOpenSSL raises TypeError for the kinds
        # it does not take (its stub lists only those).
        pkey = crypto.PKey.from_cryptography_key(key)  # type: ignore[arg-type]
    except TypeError:
        raise TLSFileError(private_key, "privateKey", "this kind of private key is not supported")
    settings = TLSSettings(
        key=pkey,
        certificate=crypto.X509.from_cryptography(leaf),
        chain=tuple(crypto.X509.from_cryptography(c) for c in extra),
        session_context=hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).digest(),
        ciphers=suites,
        tickets=tickets,
    )
    # Build an OpenSSL context now, so anything OpenSSL itself refuses
    # stops start-up instead of failing the first handshake.
    try:
        settings.context()
    except (SSL.Error, crypto.Error) as e:  # pragma: no cover - the checks above come first
        raise TLSFileError(cert_path, "certKey", f"OpenSSL refused it: {e}")
    return settings


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """
    Makes the server side of each TLS connection from one OpenSSL context
    (L{TLSSettings.context}), choosing the ALPN protocol from C{protocols}
    only (Twisted's own callback would add the C{Site}'s).

    With session tickets on and a clock, the context is replaced when a
    ticket-key window (L{KEY_SECONDS}) ends, checked as connections come:
    the new one has a new ticket key, from C{keys} (shared with the other
    processes that use that directory) or else OpenSSL's own random one.
    Tickets of the window before then get a full handshake.  (OpenSSL's
    public interface takes one ticket key only, and a context cannot be
    told which tickets to decrypt with another.)

    @ivar settings: the certificate, key, chain and TLS settings.
    @ivar protocols: ALPN ids, preferred first; empty selects none.
    @ivar keys: the shared ticket keys; L{None}: OpenSSL's.
    """

    def __init__(
        self,
        settings: TLSSettings,
        protocols: Sequence[bytes],
        clock: IReactorTime | None = None,
        keys: TicketKeys | None = None,
    ) -> None:
        self.settings = settings
        self.protocols = tuple(protocols)
        self.keys = keys
        self._clock = clock
        self._until = math.inf
        self._context = self._new_context(starting=True)

    def _new_context(self, starting: bool = False) -> SSL.Context:
        """
        A context for the window of now, and when it ends.

        @param starting: a shared key that cannot be had is an error
            (L{TLSFileError}), not a warning in the log.
        """
        context = self.settings.context()
        context.set_alpn_select_callback(self._select)
        clock = self._clock
        if not self.settings.tickets or clock is None:
            return context
        window = int(clock.seconds() // KEY_SECONDS)
        self._until = (window + 1) * KEY_SECONDS
        keys = self.keys
        if keys is not None:
            try:
                set_ticket_key(context, keys.key(window))
            except (OSError, RuntimeError) as e:
                reason = str(e) if isinstance(e, RuntimeError) else e.strerror or str(e)
                if starting:
                    raise TLSFileError(keys.directory, "ticketKeys", f"ticket key: {reason}")
                log.warn(
                    "TLS session tickets: no shared key for the next {hours:g} h from"
                    " {directory} ({reason}); this process uses a key of its own",
                    hours=KEY_SECONDS / 3600,
                    directory=keys.directory,
                    reason=reason,
                )
        return context

    def _select(self, connection: SSL.Connection, offered: list[bytes]) -> Any:
        for protocol in self.protocols:
            if protocol in offered:
                return protocol
        # No ALPN in the handshake; the client then speaks HTTP/1.1.
        return SSL.NO_OVERLAPPING_PROTOCOLS

    def serverConnectionForTLS(self, protocol: Any) -> SSL.Connection:
        clock = self._clock
        if clock is not None and clock.seconds() >= self._until:
            self._context = self._new_context()
        return SSL.Connection(self._context, None)


class _Endpoint(SSL4ServerEndpoint):
    """C{SSL4ServerEndpoint} that says how its sessions resume when it starts listening."""

    def __init__(self, note: Callable[[], None], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._note = note

    def listen(self, protocolFactory: Factory) -> Deferred[IListeningPort]:
        self._note()
        listening: Deferred[IListeningPort] = super().listen(protocolFactory)
        return listening


def _note_tickets(tickets: bool, directory: str | None, why_not: str) -> None:
    if not tickets:
        return
    if directory is None:
        log.info(
            "TLS session tickets: keys of this process only, a new one every {hours:g} h",
            hours=KEY_SECONDS / 3600,
        )
    elif why_not:
        log.warn(
            "TLS session tickets: keys of this process only, not shared through {directory}:"
            " {why}; sessions do not resume after a restart or in another process",
            directory=directory,
            why=why_not,
        )
    else:
        log.info(
            "TLS session tickets: keys shared through {directory}, a new one every {hours:g} h",
            directory=directory,
            hours=KEY_SECONDS / 3600,
        )


@attrs.frozen(eq=False)
class HTTPSListener:
    """
    An C{https:} description, checked and its files loaded: where it
    listens and the TLS it serves, for an endpoint (L{https_endpoint}) or
    a socket of one's own (L{notificator.workers.reuseport}).

    @ivar creator: makes each connection's server side; wrap the protocol
        factory in a C{TLSMemoryBIOFactory} with it.
    """

    port: int
    interface: str
    backlog: int
    creator: ServerTLS
    ticket_keys: str | None
    why_not_shared: str

    def note(self) -> None:
        """Log how this listener's sessions resume (once, when it starts listening)."""
        _note_tickets(self.creator.settings.tickets, self.ticket_keys, self.why_not_shared)


def https_listener(
    reactor: Any,
    port: str = "443",
    privateKey: str = "server.pem",
    certKey: str | None = None,
    extraCertChain: str | None = None,
    alpn: str = DEFAULT_ALPN,
    interface: str = "",
    backlog: str = "50",
    ciphers: str = INTERMEDIATE_CIPHERS,
    tickets: str = "on",
    ticketKeys: str | None = None,
) -> HTTPSListener:
    """
    Check an C{https:} description's arguments (keyword names as in
    Twisted's C{ssl:} type, plus C{alpn}, C{ciphers}, C{tickets} and
    C{ticketKeys}) and load its files.

    @raise ValueError: a bad argument (L{TLSFileError}: a file that cannot
        be used).
    """
    try:
        port_number, backlog_number = int(port), int(backlog)
    except ValueError:
        raise ValueError(f"https: port and backlog must be integers, got {port!r}, {backlog!r}")
    if tickets not in ("on", "off"):
        raise ValueError(f"https: tickets must be on or off, got {tickets!r}")
    protocols = parse_alpn(alpn)
    settings = load(privateKey, certKey, extraCertChain, ciphers=ciphers, tickets=tickets == "on")
    keys = None
    why_not = ""
    if settings.tickets and ticketKeys:
        settable, why_not = ticket_keys_settable()
        if settable:
            keys = TicketKeys(ticketKeys)
    return HTTPSListener(
        port=port_number,
        interface=interface,
        backlog=backlog_number,
        creator=ServerTLS(settings, protocols, reactor, keys),
        ticket_keys=ticketKeys or None,
        why_not_shared=why_not,
    )


def https_endpoint(reactor: Any, *args: str, **kwargs: str) -> IStreamServerEndpoint:
    """
    The endpoint for an C{https:} description: L{https_listener}'s
    arguments, the same names in the same places.
    """
    listener = https_listener(reactor, *args, **kwargs)
    return _Endpoint(
        listener.note,
        reactor,
        listener.port,
        listener.creator,
        backlog=listener.backlog,
        interface=listener.interface,
    )


@implementer(IPlugin, IStreamServerEndpointStringParser)
class HTTPSServerParser:
    """The strports parser plugin for C{https:} (see the module docstring)."""

    prefix = "https"

    def parseStreamServer(
        self, reactor: IReactorCore, *args: object, **kwargs: object
    ) -> IStreamServerEndpoint:
        try:
            # strports hands over strings; str() only satisfies the types.
            return https_endpoint(
                reactor, *map(str, args), **{k: str(v) for k, v in kwargs.items()}
            )
        except TypeError as e:
            # An unknown or repeated parameter: serverFromString promises
            # ValueError for a bad description.
            raise ValueError(f"https: {e}".replace("https_listener() ", ""))
