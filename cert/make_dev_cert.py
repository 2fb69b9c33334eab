#!/usr/bin/env python3
"""
Make a development CA and a server certificate signed by it, for running
Notificator with https or http2 on this machine.

Writes, next to this script unless C{--dir} says otherwise::

    ca.crt        the development CA (trust it in a browser, or pass it to
                  curl --cacert / an ssl.SSLContext)
    server.key    the server's private key (mode 0600; never commit it)
    server.crt    the server certificate for localhost, 127.0.0.1 and ::1

The CA's private key is never written: run the script again for a new CA
and certificate.  The CA carries a critical name constraint, so even when
a browser trusts it, it can vouch only for the names it was made for
(localhost, 127.0.0.0/8, ::1 and any C{--name}), never for a real site.

Needs only the C{cryptography} package (pyOpenSSL, which Notificator
depends on, already installs it)::

    python3 cert/make_dev_cert.py [--dir DIR] [--days N] [--name HOST ...]
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1")

GeneralNames = list[x509.GeneralName]


def general_names(names: Sequence[str]) -> GeneralNames:
    """C{DNSName}s and C{IPAddress}es for host names and IP literals."""
    out: GeneralNames = []
    for name in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def _constraint(name: x509.GeneralName) -> x509.GeneralName:
    """The name-constraint subtree covering one subject alternative name."""
    if isinstance(name, x509.IPAddress):
        address = name.value
        if address in ipaddress.ip_network("127.0.0.0/8"):
            return x509.IPAddress(ipaddress.ip_network("127.0.0.0/8"))
        return x509.IPAddress(ipaddress.ip_network(f"{address}/{address.max_prefixlen}"))
    return name


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Notificator development"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def make_ca(
    names: Sequence[str], now: datetime.datetime, days: int
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA that may only sign certificates for C{names}."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name("Notificator development CA")
    permitted = list(dict.fromkeys(_constraint(n) for n in general_names(names)))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_server(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    names: Sequence[str],
    now: datetime.datetime,
    days: int,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A server (TLS web server) certificate for C{names}, signed by the CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(general_names(names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _write(path: str, data: bytes, mode: int) -> None:
    # Create with the final mode so a key is never readable by others,
    # not even for a moment.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def make_dev_cert(directory: str, names: Sequence[str] = DEFAULT_NAMES, days: int = 365) -> None:
    """Write C{ca.crt}, C{server.key} and C{server.crt} into C{directory}."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, ca_cert = make_ca(names, now, days)
    key, cert = make_server(ca_key, ca_cert, names, now, days)
    os.makedirs(directory, exist_ok=True)
    pem = serialization.Encoding.PEM
    _write(
        os.path.join(directory, "server.key"),
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        0o600,
    )
    _write(os.path.join(directory, "server.crt"), cert.public_bytes(pem), 0o644)
    _write(os.path.join(directory, "ca.crt"), ca_cert.public_bytes(pem), 0o644)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Make a development CA and a localhost server certificate."
    )
    parser.add_argument(
        "--dir",
        default=os.path.dirname(os.path.abspath(__file__)),
        help="where to write ca.crt, server.key, server.crt (default: this script's folder)",
    )
    parser.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    parser.add_argument(
        "--name",
        action="append",
        default=[],
        help="another host name or IP address for the certificate (repeatable)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.days <= 825:
        parser.error("--days must be from 1 to 825")
    names = list(dict.fromkeys([*DEFAULT_NAMES, *args.name]))
    make_dev_cert(args.dir, names, args.days)
    for name in ("ca.crt", "server.key", "server.crt"):
        print(os.path.join(args.dir, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
