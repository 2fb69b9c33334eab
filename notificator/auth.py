# -*- test-case-name: tests.test_auth -*-
"""
Who may publish, subscribe and look, and who the client is behind a
reverse proxy.

 - L{Guard.client_address}: the peer when the request names no other
   client; when it does (C{X-Forwarded-For} or C{Forwarded}, any value),
   the rightmost hop of C{X-Forwarded-For} that is not a trusted proxy if
   the peer is one of C{server.trustedProxies}, else L{UNKNOWN}: a proxy
   that is not trusted cannot be believed, and its own address is not the
   client's either.  This address is what the allow lists, the logs and
   the monitor use.
 - L{Guard.refuse_publisher} and L{Guard.refuse_publish_token}: the
   C{publish.allow} list and the optional C{publish.token}, given as
   C{Authorization: Bearer <token>} or as a C{token} form field (see
   L{notificator.ingest.parse_publish_token}).
 - L{Guard.refuse_monitor}: the C{monitor.allow} list.
 - L{Guard.refuse_stream}: the optional subscriber signature
   (C{sse.auth.secret}): C{<expiry>.<signature>}, where the signature is
   HMAC-SHA256(secret, C{"<expiry>:<userId>"}) in base64url without
   padding (L{sign_stream}), from the C{auth} query parameter or the
   cookie named by C{sse.auth.cookie}.

Every check answers L{None} (go on) or a short constant reason, the text
for the refusal and the log line; none of them raises on any input, and
none of the reasons holds a token or a signature.  The checks run on every
publish and every stream open, so the work is done once, here: networks
become integer masks, the answer for each address seen is remembered (a
bounded memory), and the HMAC key is set up once.  With no token, no
secret and no trusted proxy, each check is a dictionary lookup or less.

Pure: no Twisted, no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
from base64 import urlsafe_b64encode
from collections.abc import Iterable, Sequence
from hmac import compare_digest
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from notificator.config import Config

IPNetwork = IPv4Network | IPv6Network

# Reasons: the text of the refusal (403 JSON for publish and the monitor,
# 401 text for streams) and of its log line.
ADDRESS_NOT_ALLOWED = "address not allowed"
#: The refusal of a client that is unknown because the request came through
#: a proxy (it carries X-Forwarded-For or Forwarded) that is not trusted.
UNTRUSTED_PROXY = "unknown client: forwarded by a proxy not in server.trustedProxies"
MISSING_TOKEN = "missing publish token"
WRONG_TOKEN = "wrong publish token"
MISSING_SIGNATURE = "missing signature"
MALFORMED_SIGNATURE = "malformed signature"
BAD_SIGNATURE = "bad signature"
EXPIRED_SIGNATURE = "expired signature"

#: What L{Guard.client_address} answers when the client cannot be known:
#: the request came through a proxy that is not trusted, or the hop that
#: would be the client is not an address.  It matches no allow list but
#: "everyone".
UNKNOWN = "unknown"

#: The query parameter that carries a subscriber's signature.
QUERY_PARAMETER = b"auth"

#: At most this many hops of X-Forwarded-For are walked.
MAX_HOPS = 32

# A signature: <expiry>.<43 characters of base64url>; the expiry is 1-12
# decimal digits (12 digits reach the year 33658) without a leading zero.
MAX_EXPIRY_DIGITS = 12
_SIGNATURE_LENGTH = 43
_B64URL = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_MAX_TOKEN = MAX_EXPIRY_DIGITS + 1 + _SIGNATURE_LENGTH


def sign_stream(secret: str, user_id: str, expiry: int) -> str:
    """
    The signature that opens C{user_id}'s streams until C{expiry} (POSIX
    seconds): C{"<expiry>.<base64url(HMAC-SHA256(secret, "<expiry>:<userId>"))>"}
    without padding, secret and message as UTF-8.  What the groupware
    computes (README.rst, "Security", has it in Java and Python).
    """
    mac = hmac.new(secret.encode("utf-8"), f"{expiry}:{user_id}".encode(), hashlib.sha256)
    return f"{expiry}." + urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")


def _ip(text: str) -> IPv4Address | IPv6Address | None:
    """An address, IPv4-mapped IPv6 (C{::ffff:1.2.3.4}) as IPv4; else None."""
    try:
        ip = ip_address(text)
    except ValueError:
        return None
    if ip.version == 6:
        mapped = ip.ipv4_mapped
        if mapped is not None:
            return mapped
    return ip


class AddressList:
    """
    A list of networks (CIDRs) that answers whether an address is in it.

    IPv4-mapped IPv6 addresses (C{::ffff:127.0.0.1}, what a dual-stack
    listener reports for an IPv4 client) match IPv4 networks.  A text that
    is not an address matches nothing, unless the list holds both
    C{0.0.0.0/0} and C{::/0} (L{everyone}).  The answer for each text is
    remembered, up to L{MAX_REMEMBERED} texts; then the memory starts over.
    """

    MAX_REMEMBERED = 4096

    __slots__ = ("networks", "everyone", "_v4", "_v6", "_seen")

    def __init__(self, networks: Iterable[IPNetwork]) -> None:
        self.networks = tuple(networks)
        self._v4 = tuple(
            (int(n.network_address), int(n.netmask)) for n in self.networks if n.version == 4
        )
        self._v6 = tuple(
            (int(n.network_address), int(n.netmask)) for n in self.networks if n.version == 6
        )
        self.everyone = (0, 0) in self._v4 and (0, 0) in self._v6
        self._seen: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return bool(self.networks)

    def allows(self, host: str) -> bool:
        """Whether C{host} (an address as text) is in one of the networks."""
        if self.everyone:
            return True
        seen = self._seen.get(host)
        if seen is None:
            ip = _ip(host)
            seen = ip is not None and self.holds(ip)
            if len(self._seen) >= self.MAX_REMEMBERED:
                self._seen.clear()
            self._seen[host] = seen
        return seen

    def holds(self, ip: IPv4Address | IPv6Address) -> bool:
        """Whether C{ip} (IPv4-mapped already made IPv4) is in one of the networks."""
        n = int(ip)
        for network, mask in self._v4 if ip.version == 4 else self._v6:
            if n & mask == network:
                return True
        return False


def _hop(text: str) -> IPv4Address | IPv6Address | None:
    """
    One hop of X-Forwarded-For: an address, optionally with a port
    (C{1.2.3.4:5678}, C{[2001:db8::1]:443}) or in brackets; None if it is
    anything else (C{unknown}, a name, an obfuscated id, a zone id).
    """
    if len(text) > 64 or "%" in text:
        return None
    if text[0] == "[":
        end = text.find("]")
        port = text[end + 1 :]
        if end < 0 or (port and not (port[0] == ":" and port[1:].isdigit() and port.isascii())):
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        text, _, port = text.partition(":")
        if not (port.isdigit() and port.isascii()):
            return None
    return _ip(text)


class Guard:
    """
    The access rules of one server, built once (L{from_config}) and asked
    on every request.  Each C{refuse_*} method answers L{None} to let the
    request through, else a reason (one of this module's constants).

    @ivar behind_proxies: C{server.trustedProxies} is set; without it
        L{client_address} is the peer or L{UNKNOWN}, and X-Forwarded-For
        need not be read.
    @ivar signatures: C{sse.auth.secret} is set: streams need a signature.
    @ivar signature_cookie: the name of the cookie that may carry it.
    """

    MAX_REMEMBERED = 4096

    def __init__(
        self,
        publish_allow: Iterable[IPNetwork],
        monitor_allow: Iterable[IPNetwork],
        trusted_proxies: Iterable[IPNetwork] = (),
        publish_token: str | None = None,
        stream_secret: str | None = None,
        *,
        stream_cookie: str,
    ) -> None:
        self.publish_allow = AddressList(publish_allow)
        self.monitor_allow = AddressList(monitor_allow)
        self.trusted_proxies = AddressList(trusted_proxies)
        self.behind_proxies = bool(self.trusted_proxies)
        self._token = publish_token.encode("utf-8") if publish_token else None
        self._mac = (
            hmac.new(stream_secret.encode("utf-8"), digestmod=hashlib.sha256)
            if stream_secret
            else None
        )
        self.signatures = self._mac is not None
        #: C{publish.token} is set: publishers must send it.
        self.publish_token = self._token is not None
        self.signature_cookie = stream_cookie.encode("ascii")
        # X-Forwarded-For hop text -> (address as text or None, trusted)
        self._hops: dict[str, tuple[str | None, bool]] = {}

    @classmethod
    def from_config(cls, config: Config) -> Guard:
        return cls(
            publish_allow=config.publish.allow,
            monitor_allow=config.monitor.allow,
            trusted_proxies=config.server.trusted_proxies,
            publish_token=config.publish.token,
            stream_secret=config.sse.auth.secret,
            stream_cookie=config.sse.auth.cookie,
        )

    # --- the client's address ---------------------------------------------

    def client_address(
        self,
        peer: str,
        x_forwarded_for: Sequence[bytes | str] | None,
        forwarded: Sequence[bytes | str] | None = None,
    ) -> str:
        """
        The client's address.

        @param peer: the TCP peer's host (C{request.getClientAddress().host}).
        @param x_forwarded_for: the raw C{X-Forwarded-For} header values, in
            order (C{requestHeaders.getRawHeaders(b"x-forwarded-for")}), or
            L{None}.  Several lines are one list.
        @param forwarded: the raw C{Forwarded} (RFC 7239) header values, or
            L{None}.  Only whether there are any counts: they are not read
            (a proxy that writes X-Forwarded-For, as nginx does, passes a
            client's own C{Forwarded} on untouched).
        @return: C{peer} when the request has neither header.  When it has
            either (any value, an empty one too) and the peer is not a
            trusted proxy, L{UNKNOWN}: whoever the header names, the peer
            is a proxy we do not trust, and not the client.  From a trusted
            proxy: L{UNKNOWN} without X-Forwarded-For (C{Forwarded} alone);
            else the rightmost hop that is not a trusted proxy, walking from
            the right (the leftmost if all are trusted; C{peer} if the
            header is empty).  Empty list items are skipped; if the hop that
            would be the client is not an address, or is more than
            L{MAX_HOPS} hops from the right (the client's own hop counted),
            L{UNKNOWN}.  Addresses from the header come back in their plain
            form (IPv4-mapped as IPv4, no port).
        """
        if not x_forwarded_for:
            return UNKNOWN if forwarded else peer
        if not self.behind_proxies or not self.trusted_proxies.allows(peer):
            return UNKNOWN
        client = peer
        hops = 0
        for value in reversed(x_forwarded_for):
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            end = len(text)
            while True:
                start = text.rfind(",", 0, end)
                item = text[start + 1 : end].strip(" \t")
                if item:
                    address, trusted = self._hop(item)
                    hops += 1
                    if address is None or hops > MAX_HOPS:
                        return UNKNOWN
                    client = address
                    if not trusted:
                        return client
                if start < 0:
                    break
                end = start
        return client

    def address_refusal(self, client: str, peer: str | None = None) -> str:
        """
        Why C{client} is refused by an allow list: L{UNTRUSTED_PROXY} when it
        is L{UNKNOWN} because the request came through C{peer}, a proxy that
        is not trusted; else L{ADDRESS_NOT_ALLOWED}.
        """
        if client == UNKNOWN and peer is not None and not self.trusted_proxies.allows(peer):
            return UNTRUSTED_PROXY
        return ADDRESS_NOT_ALLOWED

    def _hop(self, item: str) -> tuple[str | None, bool]:
        known = self._hops.get(item)
        if known is None:
            ip = _hop(item)
            known = (None, False) if ip is None else (str(ip), self.trusted_proxies.holds(ip))
            if len(self._hops) >= self.MAX_REMEMBERED:
                self._hops.clear()
            self._hops[item] = known
        return known

    # --- publishers -------------------------------------------------------

    def refuse_publisher(
        self, client: str, authorization: bytes | None, peer: str | None = None
    ) -> str | None:
        """
        Before the body is read: L{ADDRESS_NOT_ALLOWED} (or
        L{UNTRUSTED_PROXY}, see L{address_refusal}) when C{client} is not in
        C{publish.allow}; L{WRONG_TOKEN} when a token is configured and the
        C{Authorization} header is C{Bearer} with another one.  L{None}
        otherwise, also when the token is still to come in the body (then
        ask L{refuse_publish_token} once the body is parsed).

        @param peer: the TCP peer, when C{client} is L{UNKNOWN}.
        """
        if not self.publish_allow.allows(client):
            return self.address_refusal(client, peer)
        expected = self._token
        if expected is None or authorization is None:
            return None
        given = _bearer(authorization)
        if given is None or compare_digest(given, expected):
            return None
        return WRONG_TOKEN

    def refuse_publish_token(
        self, authorization: bytes | None, form_token: bytes | None
    ) -> str | None:
        """
        After the body is parsed: whether the publish token (if one is
        configured) was given.  A C{Bearer} header decides alone; without
        one, the C{token} field of the body (C{form_token}, as
        L{notificator.ingest.parse_publish_token} returns it) does.

        @return: L{None}, L{MISSING_TOKEN} or L{WRONG_TOKEN}.
        """
        expected = self._token
        if expected is None:
            return None
        if authorization is not None:
            given = _bearer(authorization)
            if given is not None:
                return None if compare_digest(given, expected) else WRONG_TOKEN
        if form_token is None:
            return MISSING_TOKEN
        return None if compare_digest(form_token, expected) else WRONG_TOKEN

    # --- the monitor ------------------------------------------------------

    def refuse_monitor(self, client: str, peer: str | None = None) -> str | None:
        """
        L{ADDRESS_NOT_ALLOWED} (or L{UNTRUSTED_PROXY}, see
        L{address_refusal}) unless C{client} is in C{monitor.allow}.

        @param peer: the TCP peer, when C{client} is L{UNKNOWN}.
        """
        if self.monitor_allow.allows(client):
            return None
        return self.address_refusal(client, peer)

    # --- subscribers ------------------------------------------------------

    def refuse_stream(
        self,
        user_id: str,
        query: bytes | str | None,
        cookie: bytes | str | None,
        now: float,
    ) -> str | None:
        """
        Whether a stream for C{user_id} may open: always, without
        C{sse.auth.secret}; else only with a valid signature for that user
        id that has not expired at C{now} (POSIX seconds; no allowance for
        clock skew).

        @param query: the C{auth} query parameter (percent-decoded), or None.
        @param cookie: the value of the C{sse.auth.cookie} cookie, or None.
            The query wins; an empty value counts as absent.
        @return: L{None}, L{MISSING_SIGNATURE}, L{MALFORMED_SIGNATURE},
            L{BAD_SIGNATURE} (forged, or made for another user id) or
            L{EXPIRED_SIGNATURE}.
        """
        mac = self._mac
        if mac is None:
            return None
        token = query or cookie
        if not token:
            return MISSING_SIGNATURE
        if isinstance(token, str):
            if not token.isascii():
                return MALFORMED_SIGNATURE
            token = token.encode("ascii")
        if len(token) > _MAX_TOKEN:
            return MALFORMED_SIGNATURE
        expiry, dot, signature = token.partition(b".")
        if (
            not dot
            or not expiry.isdigit()  # bytes: ASCII digits only
            or len(expiry) > MAX_EXPIRY_DIGITS
            or expiry[0] == 0x30  # "0": one spelling per expiry
            or len(signature) != _SIGNATURE_LENGTH
            or signature.translate(None, _B64URL)
        ):
            return MALFORMED_SIGNATURE
        try:
            user = user_id.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: no groupware signs that
            return BAD_SIGNATURE
        h = mac.copy()
        h.update(expiry + b":" + user)
        # Compare against the canonical encoding: one spelling per signature.
        if not compare_digest(urlsafe_b64encode(h.digest())[:_SIGNATURE_LENGTH], signature):
            return BAD_SIGNATURE
        if int(expiry) <= now:
            return EXPIRED_SIGNATURE
        return None


def _bearer(authorization: bytes) -> bytes | None:
    """
    The credentials of an C{Authorization: Bearer <token>} header (C{b""}
    when it has none); None for another scheme.
    """
    scheme, _, credentials = authorization.strip(b" \t").partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    return credentials.strip(b" \t")
