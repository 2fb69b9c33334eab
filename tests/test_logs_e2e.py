"""
End-to-end: C{access.log} of the real C{twistd -n notificator} against
hostile request heads (C{bench/amplify.py}'s first attack, scaled down):
each line and the server's memory stay bounded whatever a client sends.
"""

from __future__ import annotations

import os
import sys

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
