"""Tests for L{notificator.cors}: origins, the policy, and its headers."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from notificator.cors import ALLOW_HEADERS, CORSPolicy, Origin, apply_cors

GW = "https://gw.example.com"


class OriginTests(SynchronousTestCase):
    def test_default_ports(self) -> None:
        """Origins compare by scheme, host and port with defaults filled in."""
        self.assertEqual(Origin.parse("https://A.example"), Origin.parse("https://a.example:443"))
        self.assertNotEqual(Origin.parse("http://a.example"), Origin.parse("https://a.example"))

    def test_bad_origin(self) -> None:
        """Text that is not an origin is refused."""
        self.assertRaises(ValueError, Origin.parse, "gw.example.com")
        self.assertFalse(CORSPolicy().allows("null"))


class PolicyTests(SynchronousTestCase):
    def test_listed_origins(self) -> None:
        """A list allows its origins, however they are spelled, and no other."""
        policy = CORSPolicy.from_origins([GW, "http://gw.example.com:8080"])
        self.assertTrue(policy.allows("https://GW.example.com:443"))
        self.assertTrue(policy.allows("http://gw.example.com:8080"))
        self.assertFalse(policy.allows("http://gw.example.com"))
        self.assertFalse(policy.allows("https://evil.example.com"))

    def test_star_allows_any(self) -> None:
        """ "*" among the origins allows every origin."""
        policy = CORSPolicy.from_origins([GW, "*"])
        self.assertEqual(policy, CORSPolicy(any_origin=True))
        self.assertTrue(policy.allows("http://anything.example"))

    def test_bad_origin_in_the_list(self) -> None:
        """One entry that is not an origin refuses the whole list, naming it."""
        e = self.assertRaises(ValueError, CORSPolicy.from_origins, [GW, "gw.example.com"])
        self.assertIn("'gw.example.com'", str(e))

    def test_nobody(self) -> None:
        """No origins: none is allowed."""
        self.assertFalse(CORSPolicy.from_origins([]).allows(GW))


class ApplyTests(SynchronousTestCase):
    policy = CORSPolicy.from_origins([GW])

    def request(self, method: bytes, origin: str | None) -> DummyRequest:
        request = DummyRequest([b""])
        request.method = method
        if origin is not None:
            request.requestHeaders.setRawHeaders(b"origin", [origin.encode()])
        apply_cors(request, self.policy, b"GET, OPTIONS")
        return request

    def test_allowed_origin_echoed(self) -> None:
        """An allowed origin is echoed, with credentials, and Vary says so."""
        headers = self.request(b"GET", GW).responseHeaders
        self.assertEqual(headers.getRawHeaders(b"access-control-allow-origin"), [GW.encode()])
        self.assertEqual(headers.getRawHeaders(b"access-control-allow-credentials"), [b"true"])
        self.assertEqual(headers.getRawHeaders(b"vary"), [b"Origin"])
        self.assertFalse(headers.hasHeader(b"access-control-allow-methods"))

    def test_other_or_no_origin(self) -> None:
        """Another origin, or none, gets only Vary."""
        for origin in ("https://evil.example.com", None):
            headers = self.request(b"GET", origin).responseHeaders
            self.assertEqual(list(headers.getAllRawHeaders()), [(b"Vary", [b"Origin"])])

    def test_preflight(self) -> None:
        """OPTIONS from an allowed origin gets the methods, headers and max age."""
        headers = self.request(b"OPTIONS", GW).responseHeaders
        self.assertEqual(headers.getRawHeaders(b"access-control-allow-methods"), [b"GET, OPTIONS"])
        self.assertEqual(headers.getRawHeaders(b"access-control-allow-headers"), [ALLOW_HEADERS])
        self.assertEqual(headers.getRawHeaders(b"access-control-max-age"), [b"86400"])
