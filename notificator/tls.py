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

TLS settings are Twisted's C{CertificateOptions} defaults: TLS 1.2 or
newer (stated here with C{raiseMinimumTo}), Twisted's cipher list
(forward-secret AEAD ciphers, no RC4/3DES/export/anonymous), and ECDHE.

All files are read and checked when the string is parsed (at start-up,
before anything listens).  A problem raises L{TLSFileError}, whose text is
one line naming the file: unreadable, not PEM, a key that does not match
the certificate, a chain file without certificates or without the issuer.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from OpenSSL import SSL, crypto
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.internet.interfaces import (
    IOpenSSLServerConnectionCreator,
    IReactorCore,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
)
from twisted.internet.ssl import CertificateOptions, TLSVersion
from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

log = Logger()

#: The ALPN protocol ids twisted.web can serve.
ALPN_PROTOCOLS = ("h2", "http/1.1")

#: What the C{https:} type offers when C{alpn} is not given: what a
#: twisted.web C{Site} can speak, as Twisted's own C{ssl:} offers it.
DEFAULT_ALPN = "h2,http/1.1"


class TLSFileError(ValueError):
    """
    A TLS file cannot be used.  C{str()} is one line: C{<path>: <reason>}.

    @ivar path: the file.
    @ivar role: C{"privateKey"}, C{"certKey"} or C{"extraCertChain"}.
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


def certificate_options(
    private_key: str,
    cert: str | None = None,
    chain: str | None = None,
    now: datetime.datetime | None = None,
) -> CertificateOptions:
    """
    Load and check the files and build Twisted's C{CertificateOptions}.

    @param private_key: path of the PEM private key.
    @param cert: path of the PEM certificate (plus optional chain); the key
        file when L{None}.
    @param chain: path of a PEM file of CA certificates to serve.
    @param now: the time to check the validity period against (a warning,
        not an error: the operator may be replacing the file right now).
    @raise TLSFileError: naming the file that is wrong.
    """
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
    options = CertificateOptions(
        privateKey=pkey,
        certificate=crypto.X509.from_cryptography(leaf),
        extraCertChain=[crypto.X509.from_cryptography(c) for c in extra],
        raiseMinimumTo=TLSVersion.TLSv1_2,
    )
    # Build the OpenSSL context now, so anything OpenSSL itself refuses
    # stops start-up instead of failing the first handshake.
    try:
        options.getContext()
    except (SSL.Error, crypto.Error) as e:  # pragma: no cover - the checks above come first
        raise TLSFileError(cert_path, "certKey", f"OpenSSL refused it: {e}")
    return options


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """
    Makes the server side of each TLS connection from one
    C{CertificateOptions} context, choosing the ALPN protocol from
    C{protocols} only (Twisted's own callback would add the C{Site}'s).

    @ivar options: the certificate, key, chain and TLS settings.
    @ivar protocols: ALPN ids, preferred first; empty selects none.
    """

    def __init__(self, options: CertificateOptions, protocols: Sequence[bytes]) -> None:
        self.options = options
        self.protocols = tuple(protocols)
        # getContext() builds the context once and caches it; it is ours
        # alone, so replacing its ALPN callback affects only this listener.
        self._context = options.getContext()
        self._context.set_alpn_select_callback(self._select)

    def _select(self, connection: SSL.Connection, offered: list[bytes]) -> Any:
        for protocol in self.protocols:
            if protocol in offered:
                return protocol
        # No ALPN in the handshake; the client then speaks HTTP/1.1.
        return SSL.NO_OVERLAPPING_PROTOCOLS

    def serverConnectionForTLS(self, protocol: Any) -> SSL.Connection:
        return SSL.Connection(self._context, None)


def https_endpoint(
    reactor: Any,
    port: str = "443",
    privateKey: str = "server.pem",
    certKey: str | None = None,
    extraCertChain: str | None = None,
    alpn: str = DEFAULT_ALPN,
    interface: str = "",
    backlog: str = "50",
) -> IStreamServerEndpoint:
    """
    The endpoint for an C{https:} description (keyword names as in
    Twisted's C{ssl:} type, plus C{alpn}).
    """
    try:
        port_number, backlog_number = int(port), int(backlog)
    except ValueError:
        raise ValueError(f"https: port and backlog must be integers, got {port!r}, {backlog!r}")
    protocols = parse_alpn(alpn)
    creator = ServerTLS(certificate_options(privateKey, certKey, extraCertChain), protocols)
    return SSL4ServerEndpoint(
        reactor, port_number, creator, backlog=backlog_number, interface=interface
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
            raise ValueError(f"https: {e}".replace("https_endpoint() ", ""))
