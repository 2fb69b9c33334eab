"""
Tests for L{notificator.auth}: allow lists, the client address behind
trusted proxies, the publish token (with L{notificator.ingest}'s token
field), subscriber signatures, their config keys, and the guide's signing
examples and test vector.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import textwrap
import unicodedata
from base64 import urlsafe_b64encode
from ipaddress import ip_address, ip_network
from typing import Any
from urllib.parse import quote, unquote, urlencode

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from notificator import auth, ingest
from notificator.auth import (
    ADDRESS_NOT_ALLOWED,
    BAD_SIGNATURE,
    EXPIRED_SIGNATURE,
    MALFORMED_SIGNATURE,
    MISSING_SIGNATURE,
    MISSING_TOKEN,
    UNKNOWN,
    WRONG_TOKEN,
    AddressList,
    Guard,
    sign_stream,
)
from notificator.config import ConfigError, defaults, load
from tests.support import PROJECT, require_tool, write_config

FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

SECRET = "a-test-secret-of-some-length-0123"
TOKEN = "publisher-token-0123456789"
EXPIRY = 1767225600
FORM = b"application/x-www-form-urlencoded; charset=UTF-8"
JSON = b"application/json"
STREAM_REASONS = {MISSING_SIGNATURE, MALFORMED_SIGNATURE, BAD_SIGNATURE, EXPIRED_SIGNATURE}


def nets(*specs: str) -> list[Any]:
    return [ip_network(s) for s in specs]


#: publish.allow's and monitor.allow's default.
LOOPBACK = (ip_network("127.0.0.1/32"), ip_network("::1/128"))


def guard(**kw: Any) -> Guard:
    kw.setdefault("publish_allow", LOOPBACK)
    kw.setdefault("monitor_allow", LOOPBACK)
    kw.setdefault("stream_cookie", defaults().sse.auth.cookie)
    return Guard(**kw)


class RecordingCompare:
    """Stands in for C{hmac.compare_digest}, recording its arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, bytes]] = []

    def __call__(self, a: bytes, b: bytes) -> bool:
        self.calls.append((a, b))
        import hmac

        return hmac.compare_digest(a, b)


# --- configuration ---------------------------------------------------------


class ConfigTests(SynchronousTestCase):
    def conf(self, **files: object) -> FilePath[str]:
        """A config directory of these files and the environment C{x} (C{x.json}, empty)."""
        return FilePath(write_config(os.path.join(self.mktemp(), "conf"), {"x": {}, **files}))

    def load_local(self, doc: object) -> Any:
        return load(self.conf(default={}, local=doc), "x")

    def error(self, doc: object) -> ConfigError:
        return self.assertRaises(ConfigError, self.load_local, doc)

    def test_defaults(self) -> None:
        """Loopback for publish and the monitor, no proxies, no token, no secret."""
        cfg = load(self.conf(default={}), "x")
        self.assertEqual(cfg.publish.allow, LOOPBACK)
        self.assertEqual(cfg.monitor.allow, LOOPBACK)
        self.assertEqual(cfg.server.trusted_proxies, ())
        self.assertIsNone(cfg.publish.token)
        self.assertIsNone(cfg.sse.auth.secret)
        self.assertEqual(cfg.sse.auth.cookie, "notificatorAuth")

    def test_shipped_defaults_match(self) -> None:
        """The shipped config loads with these keys at their documented defaults."""
        cfg = load(FilePath(os.path.join(PROJECT, "conf")), "development")
        self.assertEqual(cfg.warnings, ())
        self.assertEqual(cfg.publish.allow, LOOPBACK)
        self.assertEqual(cfg.monitor.allow, LOOPBACK)
        self.assertEqual(cfg.server.trusted_proxies, ())
        self.assertIsNone(cfg.publish.token)
        self.assertIsNone(cfg.sse.auth.secret)
        self.assertEqual(cfg.sse.auth.cookie, "notificatorAuth")
        text = FilePath(os.path.join(PROJECT, "conf", "default.json")).getContent().decode()
        for key in ('"trustedProxies"', '"publish"', '"monitor"', '"auth"', '"secret"'):
            self.assertIn(key, text)

    def test_networks(self) -> None:
        """CIDRs, bare addresses, one string, an empty list; mapped networks become IPv4."""
        cfg = self.load_local(
            {
                "publish": {
                    "allow": ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7", "::ffff:10.1.0.0/112"]
                },
                "monitor": {"allow": "172.16.0.0/12"},
                "server": {"trustedProxies": []},
            }
        )
        self.assertEqual(
            cfg.publish.allow,
            tuple(nets("10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32", "10.1.0.0/16")),
        )
        self.assertEqual(cfg.monitor.allow, tuple(nets("172.16.0.0/12")))
        self.assertEqual(cfg.server.trusted_proxies, ())

    def test_trusting_everyone_is_a_warning(self) -> None:
        """A /0 in server.trustedProxies loads, with a warning naming the key."""
        cfg = self.load_local({"server": {"trustedProxies": ["10.0.0.0/8", "::/0"]}})
        self.assertEqual(len(cfg.warnings), 1)
        self.assertIn("server.trustedProxies: holds a /0 network", cfg.warnings[0])

    def test_bad_cidr_names_file_and_key(self) -> None:
        """A bad CIDR stops start-up with one line naming the file and the key."""
        e = self.error({"publish": {"allow": ["127.0.0.1/32", "10.0.0.300/8"]}})
        self.assertEqual(e.key, "publish.allow")
        self.assertTrue(e.source.endswith("local.json"))
        self.assertEqual(
            str(e), f'{e.source}: publish.allow: not an address or CIDR: "10.0.0.300/8"'
        )
        self.assertNotIn("\n", str(e))
        for key, doc in [
            ("monitor.allow", {"monitor": {"allow": ["nope"]}}),
            ("server.trustedProxies", {"server": {"trustedProxies": ["10.0.0.0/33"]}}),
            ("publish.allow", {"publish": {"allow": [10]}}),
            ("publish.allow", {"publish": {"allow": {"a": 1}}}),
            ("publish.allow", {"publish": {"allow": ["fe80::%eth0/64"]}}),
        ]:
            self.assertEqual(self.error(doc).key, key, doc)

    def test_host_bits_set(self) -> None:
        """A CIDR with host bits set is refused with the network it probably meant."""
        e = self.error({"monitor": {"allow": ["10.0.0.1/8"]}})
        self.assertIn('"10.0.0.1/8" has host bits set (did you mean "10.0.0.0/8"?)', str(e))

    def test_token_and_secret(self) -> None:
        """A token and a secret load; null is off."""
        cfg = self.load_local({"publish": {"token": TOKEN}, "sse": {"auth": {"secret": SECRET}}})
        self.assertEqual(cfg.publish.token, TOKEN)
        self.assertEqual(cfg.sse.auth.secret, SECRET)
        off = self.load_local({"publish": {"token": None}, "sse": {"auth": {"secret": None}}})
        self.assertIsNone(off.publish.token)
        self.assertIsNone(off.sse.auth.secret)

    def test_empty_token_or_secret_stops_start_up(self) -> None:
        """
        An empty (or blank) token or secret does not turn it off: one line
        naming the file and the key, saying to write null for that.
        """
        for doc, key in [
            ({"publish": {"token": ""}}, "publish.token"),
            ({"publish": {"token": "  \t"}}, "publish.token"),
            ({"sse": {"auth": {"secret": ""}}}, "sse.auth.secret"),
            ({"sse": {"auth": {"secret": " " * 20}}}, "sse.auth.secret"),
        ]:
            e = self.error(doc)
            self.assertEqual(e.key, key, doc)
            self.assertTrue(e.source.endswith("local.json"), e.source)
            self.assertRegex(
                str(e), rf"local\.json: {re.escape(key)}: empty, .*write null (to|for)"
            )
            self.assertNotIn("\n", str(e))

    def test_secrets_never_shown(self) -> None:
        """Errors, warnings and the config's repr never hold the token or the secret."""
        for doc, key in [
            ({"publish": {"token": "has space-SECRETVALUE"}}, "publish.token"),
            ({"publish": {"token": 12345678901234567}}, "publish.token"),
            ({"sse": {"auth": {"secret": "SECRETVALUE"}}}, "sse.auth.secret"),
            ({"sse": {"auth": {"secret": ["SECRETVALUE-long-enough-0123"]}}}, "sse.auth.secret"),
        ]:
            e = self.error(doc)
            self.assertEqual(e.key, key)
            self.assertNotIn("SECRETVALUE", str(e))
            self.assertNotIn("12345678901234567", str(e))
            self.assertIn("not shown", str(e))
        cfg = self.load_local(
            {"publish": {"token": "SHORTTOK"}, "sse": {"auth": {"secret": SECRET}}}
        )
        self.assertEqual(len(cfg.warnings), 1)
        self.assertIn("publish.token: shorter than 16 characters", cfg.warnings[0])
        self.assertNotIn("SHORTTOK", cfg.warnings[0])
        self.assertNotIn("SHORTTOK", repr(cfg))
        self.assertNotIn(SECRET, repr(cfg))

    def test_secret_minimum_length(self) -> None:
        """A secret shorter than 16 characters stops start-up."""
        e = self.error({"sse": {"auth": {"secret": "x" * 15}}})
        self.assertIn("shorter than 16 characters", str(e))
        self.assertEqual(
            self.load_local({"sse": {"auth": {"secret": "x" * 16}}}).sse.auth.secret, "x" * 16
        )

    def test_signature_cookie(self) -> None:
        """sse.auth.cookie must be a cookie name, and not the user id's cookie."""
        cfg = self.load_local({"sse": {"auth": {"cookie": "gwAuth"}}})
        self.assertEqual(cfg.sse.auth.cookie, "gwAuth")
        self.assertEqual(self.error({"sse": {"auth": {"cookie": "a b"}}}).key, "sse.auth.cookie")
        e = self.error({"sse": {"cookie": "uid", "auth": {"cookie": "uid"}}})
        self.assertEqual(e.key, "sse.auth.cookie")
        self.assertIn("must differ from sse.cookie", str(e))

    def test_guard_from_config(self) -> None:
        """Guard.from_config takes every key."""
        cfg = self.load_local(
            {
                "server": {"trustedProxies": ["10.9.0.0/16"]},
                "publish": {"allow": ["10.1.0.0/16"], "token": TOKEN},
                "monitor": {"allow": ["10.2.0.0/16"]},
                "sse": {"auth": {"secret": SECRET, "cookie": "gwAuth"}},
            }
        )
        g = Guard.from_config(cfg)
        self.assertTrue(g.behind_proxies)
        self.assertTrue(g.signatures)
        self.assertEqual(g.signature_cookie, b"gwAuth")
        self.assertEqual(g.client_address("10.9.0.1", [b"10.1.0.5"]), "10.1.0.5")
        self.assertIsNone(g.refuse_publisher("10.1.0.5", b"Bearer " + TOKEN.encode()))
        self.assertEqual(g.refuse_publish_token(None, None), MISSING_TOKEN)
        self.assertIsNone(g.refuse_monitor("10.2.3.4"))
        self.assertEqual(g.refuse_monitor("10.1.0.5"), ADDRESS_NOT_ALLOWED)
        self.assertEqual(g.refuse_stream("u1", None, None, 0), MISSING_SIGNATURE)
        self.assertIsNone(g.refuse_stream("u1", sign_stream(SECRET, "u1", EXPIRY), None, 0))

    def test_defaults_cost_nothing(self) -> None:
        """With the defaults, no proxy, token or signature work is set up."""
        g = Guard.from_config(load(self.conf(default={}), "x"))
        self.assertFalse(g.behind_proxies)
        self.assertFalse(g.signatures)
        self.assertEqual(g.client_address("127.0.0.1", None), "127.0.0.1")
        self.assertEqual(g.client_address("127.0.0.1", [b"203.0.113.9"]), UNKNOWN)
        self.assertIsNone(g.refuse_publisher("127.0.0.1", b"Bearer whatever"))
        self.assertIsNone(g.refuse_publish_token(b"Bearer whatever", b"x"))
        self.assertIsNone(g.refuse_stream("u1", None, None, 0))
        self.assertEqual(g.refuse_publisher("192.0.2.1", None), ADDRESS_NOT_ALLOWED)


# --- allow lists -------------------------------------------------------------


class AddressListTests(SynchronousTestCase):
    def test_ipv4(self) -> None:
        """IPv4 addresses match IPv4 networks, by prefix."""
        allow = AddressList(nets("10.0.0.0/8", "192.0.2.7/32"))
        for host in ("10.0.0.0", "10.255.255.255", "192.0.2.7"):
            self.assertTrue(allow.allows(host), host)
        for host in ("11.0.0.0", "9.255.255.255", "192.0.2.8", "::a00:1", "2001:db8::1"):
            self.assertFalse(allow.allows(host), host)

    def test_ipv6(self) -> None:
        """IPv6 addresses match IPv6 networks; zone ids do not stop a match."""
        allow = AddressList(nets("2001:db8::/32", "::1/128", "fe80::/10"))
        for host in ("2001:db8::1", "2001:DB8:ffff::", "::1", "fe80::1%eth0"):
            self.assertTrue(allow.allows(host), host)
        for host in ("2001:db9::1", "::2", "127.0.0.1", "::ffff:127.0.0.1"):
            self.assertFalse(allow.allows(host), host)

    def test_ipv4_mapped(self) -> None:
        """::ffff:a.b.c.d (a dual-stack listener's IPv4 client) matches IPv4 networks."""
        allow = AddressList(LOOPBACK)
        for host in ("127.0.0.1", "::ffff:127.0.0.1", "::FFFF:7f00:1", "::1"):
            self.assertTrue(allow.allows(host), host)
        for host in ("::ffff:127.0.0.2", "::ffff:10.0.0.1", "::127.0.0.1", "127.0.0.2"):
            self.assertFalse(allow.allows(host), host)

    def test_empty_is_nobody(self) -> None:
        """An empty list allows nobody."""
        allow = AddressList(())
        self.assertFalse(allow)
        for host in ("127.0.0.1", "::1", "::ffff:127.0.0.1", UNKNOWN, ""):
            self.assertFalse(allow.allows(host), host)

    def test_everyone(self) -> None:
        """0.0.0.0/0 and ::/0 together allow every client, even one whose address is unknown."""
        allow = AddressList(nets("0.0.0.0/0", "::/0"))
        self.assertTrue(allow.everyone)
        for host in ("203.0.113.1", "2001:db8::1", "::ffff:1.2.3.4", UNKNOWN, "UNIXAddress('/s')"):
            self.assertTrue(allow.allows(host), host)
        v4 = AddressList(nets("0.0.0.0/0"))
        self.assertFalse(v4.everyone)
        self.assertTrue(v4.allows("203.0.113.1"))
        self.assertTrue(v4.allows("::ffff:203.0.113.1"))
        self.assertFalse(v4.allows("2001:db8::1"))
        self.assertFalse(v4.allows(UNKNOWN))

    def test_not_an_address(self) -> None:
        """Text that is not an address matches nothing and raises nothing."""
        allow = AddressList(nets("0.0.0.0/0"))
        for host in (
            "",
            "unknown",
            "localhost",
            "127.0.0.1 ",
            "127.0.0.01",
            "1.2.3.4:80",
            "\x00",
            "١.٢.٣.٤",
        ):
            self.assertFalse(allow.allows(host), repr(host))

    def test_memory_is_bounded(self) -> None:
        """At most MAX_REMEMBERED answers are kept, and answers stay right after it starts over."""
        self.patch(AddressList, "MAX_REMEMBERED", 10)
        allow = AddressList(nets("10.0.0.0/24"))
        for i in range(300):
            self.assertEqual(allow.allows(f"10.0.{i // 256}.{i % 256}"), i < 256)
            self.assertLessEqual(len(allow._seen), 10)


# --- the client's address ----------------------------------------------------


class ClientAddressTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.guard = guard(trusted_proxies=nets("127.0.0.1/32", "10.0.0.0/8", "fd00::/8"))

    def client(self, peer: str, *values: bytes | str) -> str:
        return self.guard.client_address(peer, list(values) if values else None)

    def test_no_trusted_proxies(self) -> None:
        """
        Without server.trustedProxies the client is the peer when the
        request names no other, and unknown when it carries X-Forwarded-For
        or Forwarded: the peer is then a proxy, and not a trusted one.
        """
        g = guard()
        self.assertEqual(g.client_address("127.0.0.1", None), "127.0.0.1")
        self.assertEqual(g.client_address("127.0.0.1", None, None), "127.0.0.1")
        self.assertEqual(g.client_address("127.0.0.1", [b"203.0.113.7"]), UNKNOWN)
        self.assertEqual(g.client_address("192.0.2.1", [b"127.0.0.1"]), UNKNOWN)
        self.assertEqual(g.client_address("127.0.0.1", None, [b"for=127.0.0.1"]), UNKNOWN)

    def test_spoofed_from_untrusted_peer(self) -> None:
        """
        X-Forwarded-For or Forwarded, any value (an empty one, several
        lines), from a peer that is not a trusted proxy makes the client
        unknown, and the allow lists refuse it, naming server.trustedProxies,
        even when the peer itself is in them.
        """
        for values in [
            ([b"127.0.0.1"], None),
            ([b""], None),
            ([b"10.0.0.1", b"127.0.0.1"], None),
            (["127.0.0.1"], None),
            ([b"unknown"], None),
            (None, [b"for=127.0.0.1"]),
            (None, [b""]),
            (None, [b'for="[::1]"', b"for=127.0.0.1;proto=http"]),
            ([b"127.0.0.1"], [b"for=127.0.0.1"]),
        ]:
            for peer in ("203.0.113.66", "::ffff:203.0.113.66", "192.0.2.1"):
                client = self.guard.client_address(peer, *values)
                self.assertEqual(client, UNKNOWN, (peer, values))
                self.assertEqual(
                    self.guard.refuse_publisher(client, None, peer), auth.UNTRUSTED_PROXY
                )
                self.assertEqual(self.guard.refuse_monitor(client, peer), auth.UNTRUSTED_PROXY)
        # The loopback peer, in both allow lists, is refused too.
        g = guard()
        client = g.client_address("127.0.0.1", [b"127.0.0.1"])
        self.assertEqual(g.refuse_publisher(client, None, "127.0.0.1"), auth.UNTRUSTED_PROXY)
        self.assertEqual(g.refuse_monitor(client, "127.0.0.1"), auth.UNTRUSTED_PROXY)
        self.assertIn("server.trustedProxies", auth.UNTRUSTED_PROXY)
        # Allowing everyone allows the unknown client too (as documented).
        everyone = guard(publish_allow=nets("0.0.0.0/0", "::/0"))
        self.assertIsNone(everyone.refuse_publisher(client, None, "127.0.0.1"))

    def test_forwarded_is_not_read(self) -> None:
        """
        From a trusted proxy, Forwarded (RFC 7239) is not read: beside
        X-Forwarded-For it changes nothing (nginx passes a client's own
        Forwarded on); alone, the client is unknown (never the proxy).
        """
        self.assertEqual(
            self.client_forwarded("127.0.0.1", [b"203.0.113.7"], [b"for=10.0.0.1"]),
            "203.0.113.7",
        )
        self.assertEqual(self.client_forwarded("127.0.0.1", [b""], [b"for=10.0.0.1"]), "127.0.0.1")
        for forwarded in ([b"for=203.0.113.7"], [b"for=10.0.0.1"], [b""]):
            client = self.client_forwarded("127.0.0.1", None, forwarded)
            self.assertEqual(client, UNKNOWN)
            # Refused as any unknown client behind a trusted proxy.
            self.assertEqual(
                self.guard.refuse_publisher(client, None, "127.0.0.1"), ADDRESS_NOT_ALLOWED
            )

    def client_forwarded(
        self, peer: str, forwarded_for: list[bytes] | None, forwarded: list[bytes] | None
    ) -> str:
        return self.guard.client_address(peer, forwarded_for, forwarded)

    def test_refusal_reason(self) -> None:
        """Only an unknown client from an untrusted peer gets the trustedProxies reason."""
        g = self.guard
        self.assertEqual(g.address_refusal("192.0.2.1", "192.0.2.1"), ADDRESS_NOT_ALLOWED)
        self.assertEqual(g.address_refusal(UNKNOWN, "127.0.0.1"), ADDRESS_NOT_ALLOWED)
        self.assertEqual(g.address_refusal(UNKNOWN, None), ADDRESS_NOT_ALLOWED)
        self.assertEqual(g.address_refusal(UNKNOWN, "192.0.2.1"), auth.UNTRUSTED_PROXY)
        self.assertEqual(g.refuse_publisher("192.0.2.1", None, "192.0.2.1"), ADDRESS_NOT_ALLOWED)
        self.assertIsNone(g.refuse_publisher("127.0.0.1", None, "127.0.0.1"))
        self.assertIsNone(g.refuse_monitor("::1", "::1"))

    def test_one_proxy(self) -> None:
        """From a trusted proxy, the client is the hop it appended."""
        self.assertEqual(self.client("127.0.0.1", b"203.0.113.7"), "203.0.113.7")
        self.assertEqual(self.client("::ffff:127.0.0.1", b"203.0.113.7"), "203.0.113.7")
        self.assertEqual(self.client("127.0.0.1", b" 2001:db8::7 "), "2001:db8::7")

    def test_client_cannot_spoof_through_a_proxy(self) -> None:
        """What the client wrote left of its real address is not believed."""
        self.assertEqual(self.client("127.0.0.1", b"127.0.0.1, 203.0.113.7"), "203.0.113.7")
        self.assertEqual(self.client("127.0.0.1", b"10.0.0.1,203.0.113.7"), "203.0.113.7")
        client = self.client("127.0.0.1", b"127.0.0.1, 203.0.113.7")
        self.assertEqual(self.guard.refuse_publisher(client, None), ADDRESS_NOT_ALLOWED)

    def test_chain_of_proxies(self) -> None:
        """Trusted hops are skipped from the right; the first untrusted one is the client."""
        self.assertEqual(
            self.client("10.0.0.3", b"198.51.100.1, 203.0.113.7, 10.0.0.1, fd00::2"),
            "203.0.113.7",
        )

    def test_several_header_lines(self) -> None:
        """Several X-Forwarded-For lines are one list, in order."""
        self.assertEqual(self.client("127.0.0.1", b"203.0.113.7", b"10.0.0.2"), "203.0.113.7")
        self.assertEqual(
            self.client("127.0.0.1", b"198.51.100.1, 203.0.113.7", b"10.0.0.2, 10.0.0.3"),
            "203.0.113.7",
        )
        self.assertEqual(self.client("127.0.0.1", b"203.0.113.7", b""), "203.0.113.7")
        self.assertEqual(self.client("127.0.0.1", "203.0.113.7", "10.0.0.2"), "203.0.113.7")

    def test_all_trusted(self) -> None:
        """When every hop is trusted, the leftmost one is the client; an empty header means the peer."""
        self.assertEqual(self.client("127.0.0.1", b"10.0.0.5, 10.0.0.2"), "10.0.0.5")
        self.assertEqual(self.client("127.0.0.1", b""), "127.0.0.1")
        self.assertEqual(self.client("127.0.0.1", b" , ,, "), "127.0.0.1")
        self.assertEqual(self.client("127.0.0.1"), "127.0.0.1")

    def test_empty_items_skipped(self) -> None:
        """Empty list items (allowed by HTTP's list syntax) are not hops."""
        self.assertEqual(self.client("127.0.0.1", b"203.0.113.7, ,"), "203.0.113.7")
        self.assertEqual(self.client("127.0.0.1", b",203.0.113.7,,10.0.0.1,"), "203.0.113.7")

    def test_garbage(self) -> None:
        """A hop that is not an address where the client should be makes the client unknown."""
        for value in [
            b"unknown",
            b"203.0.113.7, unknown",
            b"gw.example.com",
            b"_hidden",
            b"[2001:db8::7",
            b"2001:db8::7]",
            b"203.0.113.7:http",
            b"203.0.113.7:",
            b"[2001:db8::7]x",
            b"fe80::1%eth0",
            b"203.0.113.7\x00",
            b"203.0.113.07",
            "\u0661.\u0662.\u0663.\u0664".encode(),
            "203.0.113.7\u00a0".encode("latin-1"),
            b"1" * 100,
        ]:
            self.assertEqual(self.client("127.0.0.1", value), UNKNOWN, value)
        self.assertEqual(self.guard.refuse_publisher(UNKNOWN, None), ADDRESS_NOT_ALLOWED)

    def test_garbage_left_of_the_client_ignored(self) -> None:
        """Garbage the client wrote left of its real address is never looked at."""
        self.assertEqual(self.client("127.0.0.1", b"\xff\x00garbage, 203.0.113.7"), "203.0.113.7")

    def test_ports_and_brackets(self) -> None:
        """Hops with a port or in brackets give the plain address; mapped ones the IPv4."""
        for value, expected in [
            (b"203.0.113.7:4711", "203.0.113.7"),
            (b"[2001:db8::7]:443", "2001:db8::7"),
            (b"[2001:db8::7]", "2001:db8::7"),
            (b"2001:DB8:0::7", "2001:db8::7"),
            (b"::ffff:203.0.113.7", "203.0.113.7"),
            (b"[::ffff:10.0.0.9]:1, 203.0.113.7:80", "203.0.113.7"),
        ]:
            self.assertEqual(self.client("127.0.0.1", value), expected, value)

    def test_trusted_hops_written_with_ports(self) -> None:
        """A trusted proxy written with a port or mapped is still a trusted hop."""
        self.assertEqual(
            self.client("127.0.0.1", b"203.0.113.7, 10.0.0.2:8080, [::ffff:10.0.0.3]:1"),
            "203.0.113.7",
        )

    def test_too_many_hops(self) -> None:
        """A client more than MAX_HOPS hops from the right (its own counted) is unknown."""
        many = ", ".join(["10.0.0.1"] * (auth.MAX_HOPS + 1)).encode()
        self.assertEqual(self.client("127.0.0.1", many), UNKNOWN)
        enough = ", ".join(["203.0.113.7"] + ["10.0.0.1"] * (auth.MAX_HOPS - 1)).encode()
        self.assertEqual(self.client("127.0.0.1", enough), "203.0.113.7")

    def test_memory_is_bounded(self) -> None:
        """At most MAX_REMEMBERED hops are remembered."""
        self.guard.MAX_REMEMBERED = 10
        for i in range(100):
            self.assertEqual(self.client("127.0.0.1", b"203.0.113.%d" % i), "203.0.113.%d" % i)
            self.assertLessEqual(len(self.guard._hops), 10)

    @FUZZ
    @given(
        peer=st.one_of(
            st.sampled_from(["127.0.0.1", "::ffff:127.0.0.1", "10.1.2.3", "203.0.113.9", "::1"]),
            st.text(max_size=40),
        ),
        forwarded=st.one_of(st.none(), st.lists(st.binary(max_size=30), min_size=1, max_size=2)),
        values=st.lists(
            st.one_of(
                st.binary(max_size=60),
                st.lists(
                    st.sampled_from(
                        [
                            "10.0.0.1",
                            "203.0.113.7",
                            "[fd00::1]:80",
                            "unknown",
                            "",
                            " ",
                            "::ffff:10.0.0.2",
                            "1.2.3.4:5",
                            "x",
                        ]
                    ),
                    max_size=6,
                ).map(lambda hops: ",".join(hops).encode()),
            ),
            max_size=4,
        ),
    )
    def test_fuzz(self, peer: str, values: list[bytes], forwarded: list[bytes] | None) -> None:
        """Any peer and any headers give the peer, unknown, or an address; never an exception."""
        client = self.guard.client_address(peer, values, forwarded)
        self.assertIsInstance(client, str)
        if not values and not forwarded:
            self.assertEqual(client, peer)
        elif not self.guard.trusted_proxies.allows(peer) or not values:
            self.assertEqual(client, UNKNOWN)
        elif client not in (peer, UNKNOWN):
            # An address from the header, in its plain form; a trusted one
            # only when every hop is a trusted proxy.
            self.assertEqual(str(ip_address(client)), client)
            hops = [
                auth._hop(h.strip(" \t"))
                for v in values
                for h in v.decode("latin-1").split(",")
                if h.strip(" \t")
            ]
            self.assertIn(client, [str(h) for h in hops])
            if self.guard.trusted_proxies.allows(client):
                self.assertTrue(
                    all(h is not None and self.guard.trusted_proxies.holds(h) for h in hops)
                )


# --- publish token -------------------------------------------------------------


class PublishTokenTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.guard = guard(publish_token=TOKEN)
        self.bearer = b"Bearer " + TOKEN.encode()

    def test_no_token_configured(self) -> None:
        """Without publish.token, only the address counts."""
        g = guard()
        self.assertIsNone(g.refuse_publisher("127.0.0.1", None))
        self.assertIsNone(g.refuse_publisher("127.0.0.1", b"Bearer nonsense"))
        self.assertIsNone(g.refuse_publish_token(None, None))
        self.assertIsNone(g.refuse_publish_token(b"Bearer nonsense", b"nonsense"))

    def test_address_first(self) -> None:
        """An address not allowed is refused even with the right token."""
        self.assertEqual(self.guard.refuse_publisher("192.0.2.1", self.bearer), ADDRESS_NOT_ALLOWED)

    def test_header(self) -> None:
        """A right Bearer header passes before and after the body; a wrong one is refused before it."""
        self.assertIsNone(self.guard.refuse_publisher("127.0.0.1", self.bearer))
        self.assertIsNone(self.guard.refuse_publish_token(self.bearer, None))
        for value in (
            b"bearer " + TOKEN.encode(),
            b"BEARER   " + TOKEN.encode() + b" ",
            b" Bearer " + TOKEN.encode(),
        ):
            self.assertIsNone(self.guard.refuse_publisher("127.0.0.1", value), value)
            self.assertIsNone(self.guard.refuse_publish_token(value, None), value)
        for value in (b"Bearer wrong", b"Bearer", b"Bearer ", self.bearer + b"x", self.bearer[:-1]):
            self.assertEqual(self.guard.refuse_publisher("127.0.0.1", value), WRONG_TOKEN, value)
            self.assertEqual(self.guard.refuse_publish_token(value, None), WRONG_TOKEN, value)

    def test_header_decides_alone(self) -> None:
        """With a Bearer header, the form token does not matter."""
        self.assertEqual(
            self.guard.refuse_publish_token(b"Bearer wrong", TOKEN.encode()), WRONG_TOKEN
        )
        self.assertIsNone(self.guard.refuse_publish_token(self.bearer, b"wrong"))

    def test_form(self) -> None:
        """Without a Bearer header, the form token decides after the body."""
        self.assertIsNone(self.guard.refuse_publisher("127.0.0.1", None))
        self.assertIsNone(self.guard.refuse_publish_token(None, TOKEN.encode()))
        self.assertEqual(self.guard.refuse_publish_token(None, b"wrong"), WRONG_TOKEN)
        self.assertEqual(self.guard.refuse_publish_token(None, b""), WRONG_TOKEN)
        self.assertEqual(self.guard.refuse_publish_token(None, None), MISSING_TOKEN)

    def test_other_scheme(self) -> None:
        """An Authorization header of another scheme is not the token: the form decides."""
        basic = b"Basic dXNlcjpwYXNz"
        self.assertIsNone(self.guard.refuse_publisher("127.0.0.1", basic))
        self.assertEqual(self.guard.refuse_publish_token(basic, None), MISSING_TOKEN)
        self.assertIsNone(self.guard.refuse_publish_token(basic, TOKEN.encode()))

    def test_constant_time(self) -> None:
        """Both the header and the form token go through hmac.compare_digest, as bytes."""
        compare = RecordingCompare()
        self.patch(auth, "compare_digest", compare)
        self.guard.refuse_publisher("127.0.0.1", b"Bearer abc")
        self.guard.refuse_publish_token(None, b"def")
        self.assertEqual(compare.calls, [(b"abc", TOKEN.encode()), (b"def", TOKEN.encode())])

    def test_with_ingest(self) -> None:
        """The token a body carries, as ingest returns it, is what the check takes."""
        for content_type, body in [
            (FORM, urlencode({"id": "notify_u1", "data": "{}", "token": TOKEN}).encode()),
            (
                FORM,
                urlencode(
                    {json.dumps({"id": "notify_u1", "data": {}, "token": TOKEN}): ""}
                ).encode(),
            ),
            (JSON, json.dumps({"id": "notify_u1", "data": {}, "token": TOKEN}).encode()),
        ]:
            message, token = ingest.parse_publish_token(content_type, body)
            self.assertIsNone(self.guard.refuse_publish_token(None, token), body)
            self.assertNotIn(TOKEN, message.data)

    @FUZZ
    @given(
        st.one_of(
            st.binary(max_size=80), st.text(max_size=40).map(lambda t: b"Bearer " + t.encode())
        )
    )
    def test_fuzz_header(self, value: bytes) -> None:
        """Any Authorization header passes only when it carries the token, and never raises."""
        before = self.guard.refuse_publisher("127.0.0.1", value)
        after = self.guard.refuse_publish_token(value, None)
        self.assertIn(before, (None, WRONG_TOKEN))
        self.assertIn(after, (None, WRONG_TOKEN, MISSING_TOKEN))
        self.assertNotEqual(after, None)  # the fuzz never finds the token


# --- the token field in publish bodies (notificator.ingest) ------------------


class IngestTokenTests(SynchronousTestCase):
    SECRET_TOKEN = "tok-SEEKRIT_42"

    def test_form_field(self) -> None:
        """Form 1: the token field comes back, percent-decoded, and is not data."""
        body = b"id=notify_u1&data=%7B%22a%22%3A1%7D&token=a%2Bb%2Fc"
        message, token = ingest.parse_publish_token(FORM, body)
        self.assertEqual(token, b"a+b/c")
        self.assertEqual(message.data, '{"a":1}')
        self.assertEqual(ingest.parse_publish(FORM, body), message)

    def test_form_without_token(self) -> None:
        """No token field: None, and the message as before."""
        message, token = ingest.parse_publish_token(FORM, b"id=notify_u1&data=1")
        self.assertIsNone(token)
        self.assertEqual(message.data, "1")

    def test_token_never_swallowed_by_raw_json(self) -> None:
        """Unencoded JSON with '&' in data still parses, and a token after it is not taken as data."""
        data = '{"t":"a&b=c"}'
        for body in [
            f"id=notify_u1&data={data}&token={self.SECRET_TOKEN}",
            f"id=notify_u1&token={self.SECRET_TOKEN}&data={data}",
            f"token={self.SECRET_TOKEN}&id=notify_u1&data={data}",
        ]:
            message, token = ingest.parse_publish_token(FORM, body.encode())
            self.assertEqual(token, self.SECRET_TOKEN.encode(), body)
            self.assertEqual(message.data, data, body)

    def test_first_of_several(self) -> None:
        """Of several token fields the first is the token; none of them is data."""
        message, token = ingest.parse_publish_token(
            FORM, b"id=notify_u1&token=one&data=%7B%7D&token=two"
        )
        self.assertEqual(token, b"one")
        self.assertEqual(message.data, "{}")

    def test_encoded_field_name(self) -> None:
        """A percent-encoded field name 'token' is the token field."""
        message, token = ingest.parse_publish_token(FORM, b"id=notify_u1&%74oken=x&data=1")
        self.assertEqual(token, b"x")
        self.assertEqual(message.data, "1")

    def test_json_forms(self) -> None:
        """Forms 2 and 3: a "token" key beside id and data; it is never data."""
        obj = {"id": "notify_u1", "data": {"x": 1}, "token": self.SECRET_TOKEN}
        for content_type, body in [
            (FORM, quote(json.dumps(obj)).encode() + b"="),
            (FORM, json.dumps(obj).encode()),
            (JSON, json.dumps(obj).encode()),
        ]:
            message, token = ingest.parse_publish_token(content_type, body)
            self.assertEqual(token, self.SECRET_TOKEN.encode(), body)
            self.assertEqual(message.data, '{"x":1}')

    def test_json_token_inside_data_is_data(self) -> None:
        """A "token" inside data belongs to the data, not to the publisher."""
        body = json.dumps({"id": "notify_u1", "data": {"token": "x"}}).encode()
        message, token = ingest.parse_publish_token(JSON, body)
        self.assertIsNone(token)
        self.assertEqual(json.loads(message.data), {"token": "x"})

    def test_json_token_types(self) -> None:
        """A null token is no token; a token that is not a string is a bad body (the value not shown)."""
        body = json.dumps({"id": "notify_u1", "data": 1, "token": None}).encode()
        self.assertIsNone(ingest.parse_publish_token(JSON, body)[1])
        for bad in (12345, ["x"], {"t": 1}, True):
            body = json.dumps({"id": "notify_u1", "data": 1, "token": bad}).encode()
            e = self.assertRaises(ingest.BadNotification, ingest.parse_publish_token, JSON, body)
            self.assertEqual(e.reason, "token must be a string")

    @FUZZ
    @given(
        fields=st.permutations(["id", "data", "token"]),
        data=st.text(max_size=30),
        token=st.text(alphabet="abcXYZ019-._~+/=&%;", min_size=1, max_size=20),
    )
    def test_fuzz_form_field(self, fields: list[str], data: str, token: str) -> None:
        """In any order, with any data, a form's token field comes back whole and is never data."""
        values = {"id": "notify_u1", "data": data, "token": "TOKEN:" + token}
        body = urlencode([(f, values[f]) for f in fields]).encode()
        message, got = ingest.parse_publish_token(FORM, body)
        self.assertEqual(got, ("TOKEN:" + token).encode())
        self.assertEqual(message.data, ingest.data_text(data))

    @FUZZ
    @given(
        st.binary(max_size=200), st.sampled_from([FORM, JSON, b"application/x-www-form-urlencoded"])
    )
    def test_fuzz_bodies(self, body: bytes, content_type: bytes) -> None:
        """Any body gives a message and a token or None, or BadNotification; nothing else."""
        try:
            message, token = ingest.parse_publish_token(content_type, body)
        except ingest.BadNotification:
            return
        self.assertTrue(token is None or isinstance(token, bytes))
        self.assertIsInstance(message, ingest.Message)


# --- subscriber signatures ------------------------------------------------------


class SignatureTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.guard = guard(stream_secret=SECRET)
        self.token = sign_stream(SECRET, "001000210", EXPIRY)

    def refuse(
        self, token: bytes | str | None, user: str = "001000210", now: float = EXPIRY - 1
    ) -> str | None:
        return self.guard.refuse_stream(user, token, None, now)

    def test_off(self) -> None:
        """Without sse.auth.secret every stream opens, signed or not."""
        g = guard()
        self.assertFalse(g.signatures)
        for token in (None, b"", b"garbage", self.token):
            self.assertIsNone(g.refuse_stream("001000210", token, token, EXPIRY + 10))

    def test_valid(self) -> None:
        """A signature made for the user opens its stream before expiry, as bytes or text."""
        self.assertIsNone(self.refuse(self.token))
        self.assertIsNone(self.refuse(self.token.encode()))
        self.assertIsNone(self.refuse(self.token, now=0))

    def test_expired(self) -> None:
        """At or after the expiry the signature is expired (no allowance for skew)."""
        self.assertEqual(self.refuse(self.token, now=EXPIRY), EXPIRED_SIGNATURE)
        self.assertEqual(self.refuse(self.token, now=EXPIRY + 0.001), EXPIRED_SIGNATURE)
        self.assertEqual(self.refuse(self.token, now=EXPIRY + 86400 * 365), EXPIRED_SIGNATURE)
        self.assertIsNone(self.refuse(self.token, now=EXPIRY - 0.001))

    def test_forged(self) -> None:
        """A changed signature, a changed expiry or another secret is a bad signature."""
        expiry, sig = self.token.split(".")
        other = "A" if sig[0] != "A" else "B"
        self.assertEqual(self.refuse(f"{expiry}.{other}{sig[1:]}"), BAD_SIGNATURE)
        self.assertEqual(self.refuse(f"{int(expiry) + 3600}.{sig}"), BAD_SIGNATURE)
        self.assertEqual(self.refuse(sign_stream(SECRET + "x", "001000210", EXPIRY)), BAD_SIGNATURE)
        self.assertEqual(self.refuse(sign_stream("", "001000210", EXPIRY)), BAD_SIGNATURE)

    def test_forged_and_expired(self) -> None:
        """A forged signature is called bad even when its expiry has passed."""
        self.assertEqual(
            self.refuse(sign_stream("wrong-secret-0123456", "001000210", EXPIRY), now=EXPIRY + 1),
            BAD_SIGNATURE,
        )

    def test_other_user(self) -> None:
        """A signature made for another user id is a bad signature."""
        for user in ("001000211", "00100021", "001000210 ", " 001000210", "001000210\u200b"):
            self.assertEqual(self.refuse(self.token, user=user), BAD_SIGNATURE, repr(user))

    def test_unicode_user_ids(self) -> None:
        """Korean ids sign as UTF-8, exactly: another normal form or a lone surrogate is refused."""
        nfc = "홍길동_01"
        nfd = unicodedata.normalize("NFD", nfc)
        self.assertNotEqual(nfc, nfd)
        token = sign_stream(SECRET, nfc, EXPIRY)
        self.assertIsNone(self.refuse(token, user=nfc))
        self.assertEqual(self.refuse(token, user=nfd), BAD_SIGNATURE)
        self.assertEqual(self.refuse(token, user="홍길동_0１"), BAD_SIGNATURE)  # fullwidth one
        self.assertEqual(self.refuse(token, user="\udcff"), BAD_SIGNATURE)

    def test_user_id_with_colon(self) -> None:
        """The expiry has no ':', so "<expiry>:<user>" names one pair: no id can borrow another's."""
        token = sign_stream(SECRET, "1:u", EXPIRY)
        self.assertIsNone(self.refuse(token, user="1:u"))
        self.assertEqual(self.refuse(token, user="u"), BAD_SIGNATURE)
        self.assertEqual(self.refuse(token, user=":u"), BAD_SIGNATURE)

    def test_missing(self) -> None:
        """Neither a query parameter nor a cookie (or only empty ones) is a missing signature."""
        for query, cookie in [(None, None), (b"", None), (None, b""), (b"", b""), ("", "")]:
            self.assertEqual(
                self.guard.refuse_stream("001000210", query, cookie, 0), MISSING_SIGNATURE
            )

    def test_query_wins(self) -> None:
        """The query parameter wins over the cookie; an empty one counts as absent."""
        good, bad = self.token.encode(), b"garbage"
        refuse = self.guard.refuse_stream
        self.assertIsNone(refuse("001000210", good, bad, 0))
        self.assertEqual(refuse("001000210", bad, good, 0), MALFORMED_SIGNATURE)
        self.assertIsNone(refuse("001000210", b"", good, 0))
        self.assertIsNone(refuse("001000210", None, good, 0))

    def test_malformed(self) -> None:
        """Anything not <1-12 digits>.<43 base64url characters> is malformed."""
        expiry, sig = self.token.split(".")
        for token in [
            "abc",
            expiry,
            expiry + sig,
            "." + sig,
            expiry + ".",
            "12a." + sig,
            "-1." + sig,
            "+1767225600." + sig,
            " 1767225600." + sig,
            "0" + expiry + "." + sig,
            "0." + sig,
            "9" * 13 + "." + sig,
            "9" * 400 + "." + sig,
            expiry + "." + sig + "=",
            expiry + "." + sig[:-1],
            expiry + "." + sig + "A",
            expiry + "." + sig[:-1] + "!",
            expiry + "." + sig[:-1] + "+",
            expiry + "." + sig[:-1] + "/",
            expiry + "." + sig + " ",
            expiry + ".." + sig,
            expiry + "." + sig[:20] + "." + sig[20:],
            "\u0661\u0667\u0666\u0667\u0662\u0662\u0665\u0666\u0660\u0660."
            + sig,  # Arabic-Indic digits
            "１７６７２２５６００." + sig,  # fullwidth digits
            expiry + "." + sig[:-1] + "\u0410",  # Cyrillic A
            expiry + "\u2024" + sig,  # one dot leader
            "x" * 10_000,
        ]:
            self.assertEqual(self.refuse(token), MALFORMED_SIGNATURE, token)
            self.assertEqual(self.refuse(token.encode("utf-8")), MALFORMED_SIGNATURE, token)
        self.assertEqual(self.refuse(b"\xff\xfe." + sig.encode()), MALFORMED_SIGNATURE)

    def test_non_canonical_base64(self) -> None:
        """Only the canonical spelling of a signature is accepted (the last character's spare bits are zero)."""
        expiry, sig = self.token.split(".")
        alphabet = auth._B64URL.decode()
        last = alphabet.index(sig[-1])
        for spare in (1, 2, 3):
            other = alphabet[last ^ spare]
            self.assertEqual(self.refuse(f"{expiry}.{sig[:-1]}{other}"), BAD_SIGNATURE)

    def test_huge_expiry(self) -> None:
        """A 12-digit expiry the groupware signed is valid; 13 digits are malformed, not an overflow."""
        self.assertIsNone(self.refuse(sign_stream(SECRET, "001000210", 999_999_999_999)))
        self.assertEqual(self.refuse(sign_stream(SECRET, "001000210", 10**12)), MALFORMED_SIGNATURE)

    def test_constant_time(self) -> None:
        """The signature is compared with hmac.compare_digest, as canonical base64url bytes."""
        compare = RecordingCompare()
        self.patch(auth, "compare_digest", compare)
        self.assertIsNone(self.refuse(self.token))
        sig = self.token.split(".")[1].encode()
        self.assertEqual(compare.calls, [(sig, sig)])

    def test_reasons_hold_no_token(self) -> None:
        """The reasons are fixed texts: nothing of the token goes to the 401 or the log."""
        self.assertEqual(
            STREAM_REASONS,
            {"missing signature", "malformed signature", "bad signature", "expired signature"},
        )

    @FUZZ
    @given(
        user=st.text(max_size=20),
        query=st.one_of(st.none(), st.binary(max_size=70), st.text(max_size=70)),
        cookie=st.one_of(st.none(), st.binary(max_size=70), st.text(max_size=70)),
        now=st.one_of(st.integers(0, 10**13), st.floats(allow_nan=False, allow_infinity=False)),
    )
    def test_fuzz(self, user: str, query: Any, cookie: Any, now: float) -> None:
        """Random signatures are refused with one of the four reasons; never an exception."""
        self.assertIn(self.guard.refuse_stream(user, query, cookie, now), STREAM_REASONS)

    @FUZZ
    @given(
        position=st.integers(0, 60),
        change=st.sampled_from(["delete", "insert", "replace"]),
        char=st.sampled_from(list("0123456789.-_Aa=+/ \x00é홍")),
    )
    def test_fuzz_mutations(self, position: int, change: str, char: str) -> None:
        """A valid signature changed in one place is refused, with a reason."""
        token = self.token
        i = position % (len(token) + 1)
        if change == "delete":
            mutated = token[:i] + token[i + 1 :]
        elif change == "insert":
            mutated = token[:i] + char + token[i:]
        else:
            mutated = token[:i] + char + token[i + 1 :]
        result = self.refuse(mutated)
        if mutated == token:
            self.assertIsNone(result)
        else:
            self.assertIn(result, STREAM_REASONS, mutated)


# --- the integration guide's test vector and examples ---------------------------------

#: Where the test vector and the signing examples are ("Signing a stream URL in the
#: groupware").
GUIDE = os.path.join("docs", "integration.rst")


def readme_block(name: str) -> str:
    """The text of L{GUIDE} between C{.. BEGIN <name>} and C{.. END <name>}."""
    text = FilePath(os.path.join(PROJECT, GUIDE)).getContent().decode("utf-8")
    match = re.search(
        rf"^\.\. BEGIN {re.escape(name)}\n(.*?)^\.\. END {re.escape(name)}\n", text, re.S | re.M
    )
    if match is None:
        raise AssertionError(f"{GUIDE} has no block {name!r}")
    return match.group(1)


def readme_code(name: str) -> str:
    """The literal block (after C{::}) between the markers, dedented."""
    block = readme_block(name)
    _, sep, code = block.partition("::\n")
    if not sep:
        raise AssertionError(f"{GUIDE} block {name!r} has no literal block")
    return textwrap.dedent(code).strip() + "\n"


def readme_vector() -> dict[str, str]:
    rows = {}
    for line in readme_block("signing test vector").splitlines():
        m = re.match(r"^(secret|user id|expiry|token)\s+``([^`]+)``", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


class ReadmeVectorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.vector = readme_vector()

    def test_vector(self) -> None:
        """The guide's test vector is what the server computes and accepts."""
        v = self.vector
        self.assertEqual(set(v), {"secret", "user id", "expiry", "token"})
        self.assertEqual(v["user id"], "홍길동_01")
        expiry = int(v["expiry"])
        self.assertEqual(sign_stream(v["secret"], v["user id"], expiry), v["token"])
        g = guard(stream_secret=v["secret"])
        self.assertIsNone(g.refuse_stream(v["user id"], None, v["token"].encode(), expiry - 1))
        self.assertEqual(g.refuse_stream(v["user id"], v["token"], None, expiry), EXPIRED_SIGNATURE)
        self.assertEqual(g.refuse_stream("홍길동_02", v["token"], None, 0), BAD_SIGNATURE)
        # The hand-built HMAC agrees with the guide's description of the scheme.
        import hashlib
        import hmac

        digest = hmac.new(
            v["secret"].encode(), f"{expiry}:{v['user id']}".encode(), hashlib.sha256
        ).digest()
        self.assertEqual(v["token"], f"{expiry}." + urlsafe_b64encode(digest).decode().rstrip("="))

    def test_stream_url(self) -> None:
        """The guide's example stream URL names the vector's user and token."""
        text = FilePath(os.path.join(PROJECT, GUIDE)).getContent().decode("utf-8")
        url = re.search(r"``(/sse/%[^`?]*\?auth=[^`]*)``", text).group(1)  # type: ignore[union-attr]
        path, _, query = url.partition("?auth=")
        self.assertEqual(unquote(path[len("/sse/") :]), self.vector["user id"])
        self.assertEqual(query, self.vector["token"])

    def test_python_example(self) -> None:
        """The guide's Python example computes the test vector."""
        code = readme_code("signing example: Python")
        namespace: dict[str, Any] = {}
        exec(compile(code, f"{GUIDE} (Python example)", "exec"), namespace)
        v = self.vector
        self.assertEqual(namespace["sign"](v["secret"], v["user id"], int(v["expiry"])), v["token"])
        self.assertIn(v["token"], code)
        self.assertEqual(
            namespace["sign"]("another-secret-here", "u", 5),
            sign_stream("another-secret-here", "u", 5),
        )

    def test_java_example(self) -> None:
        """The guide's Java example compiles, and prints the test vector's token."""
        untested = "JAVA EXAMPLE NOT CHECKED"
        javac = require_tool("javac", "default-jdk-headless", untested)
        java = require_tool("java", "default-jdk-headless", untested)
        work = os.path.abspath(self.mktemp())
        os.makedirs(work)
        source = os.path.join(work, "NotificatorAuth.java")
        with open(source, "w", encoding="utf-8") as f:
            f.write(readme_code("signing example: Java"))
        env = dict(os.environ, LC_ALL="C")
        subprocess.run(
            [javac, "-encoding", "UTF-8", "-d", work, source],
            check=True,
            capture_output=True,
            timeout=180,
            env=env,
        )
        out = subprocess.run(
            [java, "-cp", work, "NotificatorAuth"],
            check=True,
            capture_output=True,
            timeout=120,
            env=env,
        )
        self.assertEqual(out.stdout.decode("ascii").strip(), self.vector["token"])
        # And for another input, Java and Python agree (the example's sign(), not only main).
        harness = os.path.join(work, "Other.java")
        with open(harness, "w", encoding="utf-8") as f:
            f.write(
                "public class Other { public static void main(String[] a) throws Exception {"
                ' System.out.println(NotificatorAuth.sign("\\uc2dc\\ud06c\\ub9bf-secret-0123456",'
                ' "\\uae40\\ucca0\\uc218 x/y?", 1700000000L)); } }'
            )
        subprocess.run(
            [javac, "-encoding", "UTF-8", "-cp", work, "-d", work, harness],
            check=True,
            capture_output=True,
            timeout=180,
            env=env,
        )
        out = subprocess.run(
            [java, "-cp", work, "Other"], check=True, capture_output=True, timeout=120, env=env
        )
        self.assertEqual(
            out.stdout.decode("ascii").strip(),
            sign_stream("시크릿-secret-0123456", "김철수 x/y?", 1700000000),
        )
