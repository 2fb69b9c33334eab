"""
End-to-end: what a client can make the real C{twistd -n notificator}
spend in memory and on disk stays bounded by the config, not by what the
client sends (C{bench/amplify.py}'s attacks, scaled down): hostile request
heads and C{access.log}, long user ids and the history's memory and
journal.
"""

from __future__ import annotations

import os
import re
import sys
from urllib.parse import quote

from twisted.trial.unittest import SynchronousTestCase

from tests.support import PROJECT, Server, base_config

sys.path.insert(0, os.path.join(PROJECT, "bench"))

import amplify  # noqa: E402

MiB = 1 << 20


class AccessLogAmplificationTests(SynchronousTestCase):
    def test_hostile_heads_cost_bounded_lines_and_memory(self) -> None:
        """
        800 requests with 8 KB paths and user agents of bytes the log
        escapes to four characters, all different: each access.log line
        stays under 4 KB (the fields cut, marked "...") and the server's
        memory grows by far less than what was sent; a plain request is
        still logged whole.
        """
        server = Server(self, local=base_config()).start()
        assert server.process is not None
        before = amplify.rss(server.process.pid)
        amplify.send_hostile_heads(server.port, 800, 8000)
        after = amplify.rss(server.process.pid)
        status, _, _ = server.request("GET", "/nowhere", headers={"User-Agent": "Mozilla/5.0"})
        self.assertEqual(status, 404)
        server.wait_for_log(
            r'"GET /nowhere HTTP/1\.1" 404 \d+ "-" "Mozilla/5\.0"\n', name="access.log"
        )
        lines = server.log("access.log").splitlines()
        hostile = [line for line in lines if "\\x7f" in line]
        self.assertEqual(len(hostile), 800)
        self.assertLess(max(len(line.encode()) for line in hostile), 4096)
        for line in hostile[:10]:
            self.assertRegex(line, r'"GET /(\\x7f)+\.\.\. HTTP/1\.1" 404 \d+ "-" "(\\xfe)+\.\.\."$')
        self.assertLess(after - before, 24 * MiB, (before, after))


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
        # 12000 records of about 1.1 KB: 13 MB appended, 4 MB a snapshot.
        self.assertLessEqual(count, 4)
        self.assertLess(size, 2 * 5 * MiB + 2 * MiB)
        server.stop()
        self.assertNotIn("Traceback", server.log())
        self.assertFalse(re.search("history .* failed", server.log()))
