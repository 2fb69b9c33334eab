"""
Tests for L{notificator.http.admission}: the stream caps, the drain, the
turned-away answer and the open streams per address, on their own (the
SSE resource's use of them, at the request and after a replay, is in
L{tests.test_http_sse}).
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from notificator.http.admission import PREAMBLE, Admission
from notificator.http.stream import RequestStream
from notificator.hub import Hub
from notificator.stats import Stats
from tests.support import config_with


class AdmissionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.stats = Stats(started_at=0.0)
        self.hub = Hub(self.clock, self.stats)
        self.events: list[dict[str, Any]] = []
        self.ids = 0

    def admission(self, **limits: Any) -> Admission:
        cfg = config_with(limits={"streams": 10, **limits}, sse={"drain_seconds": 2.0})
        return Admission(
            self.hub,
            cfg.sse,
            cfg.limits,
            self.stats,
            Logger(observer=self.events.append),
            random.Random(1),
        )

    def stream(self, user_id: str, address: str = "10.0.0.1") -> RequestStream:
        request = DummyRequest([user_id.encode()])
        request.client = IPv4Address("TCP", address, 40000)
        self.ids += 1
        return RequestStream(request, user_id, self.ids, 0.0, on_gone=lambda s, r: None)

    def open(self, admission: Admission, user_id: str, address: str = "10.0.0.1") -> RequestStream:
        """Admit, attach and count a stream, as the SSE resource does."""
        self.assertIsNone(admission.refusal(user_id, address))
        stream = self.stream(user_id, address)
        self.hub.attach(stream)
        admission.attached(stream)
        return stream

    def test_caps_in_order(self) -> None:
        """The user's cap, then the address's, then the server's; a long jittered retry."""
        admission = self.admission(streams_per_user=1, streams_per_address=2, streams=3)
        self.open(admission, "a")
        reason, retry = admission.refusal("a", "10.0.0.9") or ("", 0)
        self.assertEqual(reason, "user-limit")
        self.assertTrue(30_000 <= retry <= 60_000)
        self.open(admission, "b")
        self.assertEqual((admission.refusal("c", "10.0.0.1") or ("",))[0], "address-limit")
        self.open(admission, "c", "10.0.0.2")
        self.assertEqual((admission.refusal("d", "10.0.0.3") or ("",))[0], "server-limit")

    def test_draining(self) -> None:
        """While the server stops: sse.retry plus up to sse.drainSeconds of jitter."""
        admission = self.admission()
        self.hub.draining = True
        retries = set()
        for _ in range(50):
            reason, retry = admission.refusal("a", "10.0.0.1") or ("", 0)
            self.assertEqual(reason, "draining")
            retries.add(retry)
        retry_ms = config_with().sse.retry
        self.assertTrue(all(retry_ms <= r <= retry_ms + 2000 for r in retries))
        self.assertGreater(len(retries), 1)

    def test_counts_per_address(self) -> None:
        """Attached streams are counted per address; a gone one is taken off, an empty address dropped."""
        admission = self.admission(streams_per_address=5)
        one = self.open(admission, "a")
        two = self.open(admission, "b")
        self.open(admission, "c", "10.0.0.2")
        self.assertEqual(admission.streams_by_address, {"10.0.0.1": 2, "10.0.0.2": 1})
        admission.detached(one)
        admission.detached(one)  # once only
        self.assertEqual(admission.streams_by_address, {"10.0.0.1": 1, "10.0.0.2": 1})
        admission.detached(two)
        self.assertEqual(admission.streams_by_address, {"10.0.0.2": 1})

    def test_not_counted(self) -> None:
        """Without limits.streamsPerAddress nothing is counted; a stream gone before it was attached is not."""
        self.open(self.admission(), "a")
        admission = self.admission(streams_per_address=5)
        gone = self.stream("a")
        gone.gone = True
        admission.attached(gone)
        self.assertEqual(admission.streams_by_address, {})
        admission.detached(gone)

    def test_turn_away(self) -> None:
        """200, the preamble if asked, a retry frame, ended; counted and logged with the reason."""
        admission = self.admission()
        request = DummyRequest([b"a"])
        request.args = {b"padding": [b"true"]}
        admission.turn_away(request, "a", "user-limit", 45_000)
        self.assertEqual(request.responseCode, None)  # 200: EventSource gives up on others
        self.assertEqual(b"".join(request.written), PREAMBLE + b"retry: 45000\n\n")
        self.assertEqual(request.finished, 1)
        self.assertEqual(self.stats.refused, {"user-limit": 1})
        [event] = self.events
        self.assertEqual(event["reason"], "the user has limits.streamsPerUser streams open")
        self.assertEqual(event["retry"], 45_000)
