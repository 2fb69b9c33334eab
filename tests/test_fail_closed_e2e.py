"""
End-to-end, with raw sockets against the real C{twistd -n notificator} on
loopback: what one client may hold and see when nothing is set for it.

 - An empty C{sse.auth.secret} or C{publish.token} stops start-up instead of
   silently turning the check off.
"""

from __future__ import annotations

import re

from twisted.trial.unittest import SynchronousTestCase

from tests.support import Server


class EmptySecretTests(SynchronousTestCase):
    def test_empty_secret_or_token_stops_start_up(self) -> None:
        """
        "secret": "" or "token": "" (or blank) does not turn the check off:
        the server does not start, with one line naming the file and the
        key and saying to write null.
        """
        for local, key in [
            ({"sse": {"auth": {"secret": ""}}}, "sse.auth.secret"),
            ({"publish": {"token": ""}}, "publish.token"),
            ({"publish": {"token": "   "}}, "publish.token"),
        ]:
            with self.subTest(key=key, local=local):
                code, output = Server(self, local=local).run_to_exit(timeout=20)
                self.assertNotEqual(code, 0, output)
                lines = [line for line in output.splitlines() if line.strip()]
                self.assertEqual(len(lines), 1, output)
                self.assertRegex(
                    lines[0],
                    rf"^notificator: configuration error: .*/local\.json: {re.escape(key)}:"
                    r" empty, .*write null",
                )
