"""Tests for L{notificator.cors}: origins, the policy, and its headers."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from notificator.cors import (
    ORIGIN_NOT_ALLOWED,
    CORSPolicy,
    Origin,
    own_origin,
    parse_header,
)

GW = "https://gw.example.com"


class OriginTests(SynchronousTestCase):
    def test_default_ports(self) -> None:
        """Origins compare by scheme, host and port with defaults filled in."""
        self.assertEqual(Origin.parse("https://A.example"), Origin.parse("https://a.example:443"))
        self.assertEqual(Origin.parse("HTTP://A.example"), Origin.parse("http://a.example:80"))
        self.assertNotEqual(Origin.parse("http://a.example"), Origin.parse("https://a.example"))

    def test_one_spelling_per_host(self) -> None:
        """A name in Unicode or IDNA, an IPv6 address however written: one origin."""
        self.assertEqual(
            Origin.parse("https://한국.example"), Origin.parse("https://xn--3e0b707e.example")
        )
        self.assertEqual(
            Origin.parse("http://[2001:0DB8::0001]:8080"), Origin.parse("http://[2001:db8::1]:8080")
        )
        self.assertEqual(Origin.parse("http://[::1]:3000").host, "::1")
        self.assertEqual(Origin.parse(GW + "/"), Origin.parse(GW))

    def test_bad_origin(self) -> None:
        """Text that is not an origin is refused."""
        self.assertRaises(ValueError, Origin.parse, "gw.example.com")
        self.assertFalse(CORSPolicy().allows(b"null"))

    def test_null_and_what_is_not_an_origin(self) -> None:
        """
        null, other schemes, paths, queries, fragments, users and bad ports
        are never origins, each refused with a reason.
        """
        e = self.assertRaises(ValueError, Origin.parse, " NULL ")
        self.assertIn("'null' is never an allowed origin", str(e))
        for text, why in [
            ("file:///etc", "expected http:// or https://"),
            ("chrome-extension://abcdef", "expected http:// or https://"),
            ("ftp://gw.example.com", "expected http:// or https://"),
            ("https://", "expected http:// or https://"),
            ("https://gw.example.com/groupware", "without a path"),
            ("https://gw.example.com?x=1", "without a path"),
            ("https://gw.example.com#top", "without a path"),
            ("https://user@gw.example.com", "without a path"),
            ("https://gw.example.com:0", "port 0"),
            ("https://gw.example.com:65536", "port 65536"),
            ("https://gw.example.com:x", "not an origin"),
            ("https://gw example.com", "not an origin"),
            ("*", "not an origin"),
        ]:
            with self.subTest(text=text):
                e = self.assertRaises(ValueError, Origin.parse, text)
                self.assertIn(why, str(e))
                self.assertIn(repr(text), str(e))

    def test_header_values(self) -> None:
        """An Origin header parses to its origin, or to None (null, garbage, Latin-1 junk)."""
        self.assertEqual(parse_header(b"http://127.0.0.1:3000"), Origin("http", "127.0.0.1", 3000))
        for value in (b"null", b"", b"x", b"\xff\xfe", b"http://a.example/x", b"javascript:1"):
            self.assertIsNone(parse_header(value), value)

    def test_own_origin(self) -> None:
        """The origin a request was sent to: its Host, with https over TLS; None for a bad Host."""
        self.assertEqual(own_origin(b"127.0.0.1:3000", False), Origin("http", "127.0.0.1", 3000))
        self.assertEqual(own_origin(b"[::1]:3000", False), Origin("http", "::1", 3000))
        self.assertEqual(
            own_origin(b"SSE.example.com", True), Origin("https", "sse.example.com", 443)
        )
        for host in (b"", b"evil.example@sse", b"sse/x", b"a b", b"sse:3000:1", b"\xff"):
            self.assertIsNone(own_origin(host, False), host)


class PolicyTests(SynchronousTestCase):
    def test_listed_origins(self) -> None:
        """A list allows its origins, however they are spelled, and no other."""
        policy = CORSPolicy.from_origins([GW, "http://gw.example.com:8080"])
        self.assertTrue(policy.allows(b"https://GW.example.com:443"))
        self.assertTrue(policy.listed(b"https://GW.example.com:443"))
        self.assertTrue(policy.allows(b"http://gw.example.com:8080"))
        self.assertFalse(policy.allows(b"http://gw.example.com"))
        self.assertFalse(policy.allows(b"https://evil.example.com"))

    def test_star_allows_any_without_listing_it(self) -> None:
        """'*' lets any valid origin read (not null), lists none, and keeps the listed ones."""
        policy = CORSPolicy.from_origins([GW, "*"])
        self.assertEqual(policy, CORSPolicy(any_origin=True, origins=frozenset([Origin.parse(GW)])))
        self.assertTrue(policy.allows(b"http://anything.example"))
        self.assertFalse(policy.listed(b"http://anything.example"))
        self.assertTrue(policy.listed(GW.encode()))
        self.assertFalse(policy.allows(b"null"))
        self.assertEqual(CORSPolicy.from_origins(["*"]), CORSPolicy(any_origin=True))

    def test_bad_origin_in_the_list(self) -> None:
        """One entry that is not an origin refuses the whole list, naming it; null too."""
        e = self.assertRaises(ValueError, CORSPolicy.from_origins, [GW, "gw.example.com"])
        self.assertIn("'gw.example.com'", str(e))
        e = self.assertRaises(ValueError, CORSPolicy.from_origins, [GW, "null"])
        self.assertIn("'null' is never an allowed origin", str(e))

    def test_nobody(self) -> None:
        """No origins: none is allowed."""
        self.assertFalse(CORSPolicy.from_origins([]).allows(GW.encode()))


class PublishPageTests(SynchronousTestCase):
    """Which web pages may publish (CORSPolicy.refuse_publish)."""

    def test_no_origin_is_a_sender(self) -> None:
        """A request without Origin (a server-to-server sender) is never refused here."""
        for policy in (CORSPolicy(), CORSPolicy.from_origins(["*"])):
            self.assertIsNone(policy.refuse_publish(None, None, None, False))

    def test_listed_origin_publishes(self) -> None:
        """A listed origin may publish, whatever the Host and Sec-Fetch-Site."""
        policy = CORSPolicy.from_origins([GW])
        self.assertIsNone(
            policy.refuse_publish(GW.encode(), b"cross-site", b"sse.example.com", True)
        )
        self.assertIsNone(policy.refuse_publish(GW.encode() + b":443", None, None, False))

    def test_other_origins_do_not(self) -> None:
        """Another origin, null or garbage is refused, with '*' configured too."""
        for policy in (CORSPolicy.from_origins([GW]), CORSPolicy.from_origins(["*"])):
            for origin in (b"https://evil.example", b"null", b"", b"x"):
                for site in (b"cross-site", b"same-site", b"none", None):
                    with self.subTest(origin=origin, site=site, policy=policy):
                        self.assertEqual(
                            policy.refuse_publish(origin, site, b"sse.example.com", True),
                            ORIGIN_NOT_ALLOWED,
                        )

    def test_same_origin_by_the_browsers_word(self) -> None:
        """Sec-Fetch-Site: same-origin (no page can forge it) lets the server's own pages publish."""
        policy = CORSPolicy()
        self.assertIsNone(
            policy.refuse_publish(b"https://sse.example.com", b"same-origin", b"x", False)
        )
        self.assertIsNone(policy.refuse_publish(b"null", b"Same-Origin", None, False))
        # When the browser says cross-site, a matching Host does not help.
        self.assertEqual(
            policy.refuse_publish(
                b"http://sse.example.com", b"cross-site", b"sse.example.com", False
            ),
            ORIGIN_NOT_ALLOWED,
        )

    def test_same_origin_by_the_host(self) -> None:
        """
        Without Sec-Fetch-Site (plain http to a name), the origin must be the
        one the request was sent to: scheme, host and port.
        """
        policy = CORSPolicy()
        allowed = [
            (b"http://sse.example.com:3000", b"sse.example.com:3000", False),
            (b"http://SSE.example.com:3000", b"sse.example.com:3000", False),
            (b"http://sse.example.com", b"sse.example.com", False),
            (b"https://sse.example.com", b"sse.example.com:443", True),
            (b"http://[::1]:3000", b"[::1]:3000", False),
        ]
        for origin, host, secure in allowed:
            with self.subTest(origin=origin, host=host):
                self.assertIsNone(policy.refuse_publish(origin, None, host, secure))
        refused = [
            (b"http://sse.example.com:8000", b"sse.example.com:3000", False),  # another port
            (b"http://sse.example.com", b"sse.example.com", True),  # another scheme
            (b"https://sse.example.com", b"sse.example.com", False),
            (b"http://gw.example.com:3000", b"sse.example.com:3000", False),
            (b"http://sse.example.com:3000", None, False),
            (b"http://sse.example.com:3000", b"sse.example.com:3000/x", False),
        ]
        for origin, host, secure in refused:
            with self.subTest(origin=origin, host=host):
                self.assertEqual(
                    policy.refuse_publish(origin, None, host, secure), ORIGIN_NOT_ALLOWED
                )
