"""
End-to-end: the history of the real C{twistd -n notificator} against
long user ids (C{bench/amplify.py}'s second attack, scaled down): its
memory stays within C{sse.history.maxBytes}, and its journal is not
rewritten at every flush once full.
"""

from __future__ import annotations

import os
import re
import sys
from urllib.parse import quote

from twisted.trial.unittest import SynchronousTestCase

from notificator.history import Journal
from tests.support import PROJECT, Server, base_config

sys.path.insert(0, os.path.join(PROJECT, "bench"))

import amplify  # noqa: E402

MiB = 1 << 20


class HistoryAmplificationTests(SynchronousTestCase):
    def test_long_user_ids_stay_within_max_bytes(self) -> None:
        """
        12000 publishes, each to another user whose id is 256 four-byte
        characters, with sse.history.maxBytes 2 MiB: the server's memory
        grows by less than 4 times maxBytes (each user's record and id is
        counted, not only the small frame; the rest is the allocator's and
        the requests' own).
        """
        local = base_config(history={"maxBytes": 2 * MiB})
        local["server"]["log"]["level"] = "info"
        server = Server(self, local=local).start()
        assert server.process is not None
        before = amplify.rss(server.process.pid)
        statuses = amplify.publish_pipelined(server.port, amplify.publish_bodies(12000, 12000))
        self.assertEqual(statuses, [200] * 12000)
        after = amplify.rss(server.process.pid)
        self.assertLess(after - before, 4 * 2 * MiB, (before, after))
        # The newest users are kept, the oldest were dropped for memory.
        last = amplify.long_user_id(11999)
        stream = server.subscribe("/sse/" + quote(last), {"Last-Event-ID": "0-0"})
        self.assertEqual(stream.status, 200)
        events = [stream.next_event() for _ in range(3)]
        self.assertEqual([e["event"] for e in events], ["connect", "reset", "notify"])
        self.assertEqual(events[2]["data"], '{"n":11999}')

    def test_a_full_history_is_not_rewritten_every_flush(self) -> None:
        """
        A history at its memory bound whose journal is four times its memory
        (100 users with 256-character ids, repeated in each record): while
        12000 more notifications are published, the journal is rewritten
        (a snapshot replaces the file) only after as much again was
        appended, a few times, not at every flush (0.2 s).
        """
        local = base_config(history={"maxBytes": 1 * MiB})
        local["server"]["log"]["level"] = "info"
        server = Server(self, local=local).start()
        journal = os.path.join(server.dir, "var", "history", "history.log")
        bodies = amplify.publish_bodies(100, 16000)
        # Fill the history to its bound first.
        self.assertEqual(set(amplify.publish_pipelined(server.port, bodies[:4000])), {200})
        rewrites = amplify.Rewrites(journal)
        rewrites.start()
        self.addCleanup(rewrites.stop)
        self.assertEqual(set(amplify.publish_pipelined(server.port, bodies[4000:])), {200})
        size = os.path.getsize(journal)
        count = rewrites.stop()
        # 12000 records of about 1.1 KB: 13 MB appended, a few MB a snapshot
        # (a record repeats its user id, which the memory counts once).
        self.assertLessEqual(count, 4)
        self.assertGreater(count, 0)
        snapshot = max(rewrites.sizes)
        self.assertLess(snapshot, 8 * MiB)
        # Compacted once it passes twice its snapshot and a margin: never
        # more than that, and one flush's appends.
        self.assertLess(size, 2 * snapshot + Journal.COMPACT_MARGIN + 1 * MiB)
        server.stop()
        self.assertNotIn("Traceback", server.log())
        self.assertFalse(re.search("history .* failed", server.log()))
