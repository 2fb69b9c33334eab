"""
The production path an operator follows, tried as a new user would, on the
real C{twistd notificator}: C{--version}, an environment that does not
exist (a typo), the C{--check} dry run, the C{access.log} line of the
requests answered before their body is read (HTTP/1.1 on the run's
channel, and HTTP/2), the migration guide's promises against the shipped
defaults, and the files at the repository's root.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from typing import Any

import twisted
from twisted.trial.unittest import SynchronousTestCase

from notificator import __version__, config
from tests.support import (
    PROJECT,
    Server,
    base_config,
    free_port,
    not_here,
    twistd_command,
    write_config,
)

FORM = "application/x-www-form-urlencoded"


def run_twistd(
    testcase: SynchronousTestCase, *args: str, cwd: str | None = None, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """C{twistd -n --pidfile= notificator ARGS} to its exit (bounded); its output."""
    return subprocess.run(
        twistd_command() + ["-n", "--pidfile=", "notificator", *args],
        cwd=cwd or os.path.abspath(testcase.mktemp() + ".cwd"),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={k: v for k, v in os.environ.items() if k != "NOTIFICATOR_ENV"},
    )


class VersionTests(SynchronousTestCase):
    def test_version_names_notificator(self) -> None:
        """twistd notificator --version prints Notificator's version, with Twisted's and Python's."""
        cwd = os.path.abspath(self.mktemp())
        os.makedirs(cwd)
        result = subprocess.run(
            twistd_command() + ["notificator", "--version"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=30,
        )
        python = ".".join(map(str, sys.version_info[:3]))
        self.assertEqual(
            (result.returncode, result.stdout, result.stderr),
            (
                0,
                f"Notificator {__version__} (Twisted {twisted.__version__}, Python {python})\n",
                "",
            ),
        )


class Install:
    """A scratch install: conf/ with these files; the log and history under it."""

    def __init__(self, testcase: SynchronousTestCase, files: dict[str, Any]) -> None:
        self.root = os.path.abspath(testcase.mktemp())
        self.conf = write_config(os.path.join(self.root, "conf"), files)


class EnvironmentTests(SynchronousTestCase):
    def test_misspelt_environment_stops_start_up(self) -> None:
        """
        --env prodution (a typo) stops start-up with one line naming the
        environments there are; nothing listens, nothing is written.
        """
        install = Install(self, {"default": {}, "development": {}, "production": {}})
        result = run_twistd(
            self,
            "--config",
            install.conf,
            "--env",
            "prodution",
            "--listen",
            "tcp:0:interface=127.0.0.1",
            cwd=install.root,
        )
        self.assertEqual(
            (result.returncode, result.stdout, result.stderr),
            (
                1,
                "",
                f"notificator: configuration error: {install.conf}: no environment 'prodution'"
                " (no prodution.json); the environments here are: development, production\n",
            ),
        )
        self.assertEqual(sorted(os.listdir(install.root)), ["conf"])

    def test_environment_from_the_variable_is_checked_too(self) -> None:
        """NOTIFICATOR_ENV naming no file is refused the same way."""
        install = Install(self, {"default": {}, "production": {}})
        result = subprocess.run(
            twistd_command()
            + ["-n", "--pidfile=", "notificator", "--config", install.conf, "--check"],
            cwd=install.root,
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "NOTIFICATOR_ENV": "staging"},
        )
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertIn("no environment 'staging' (no staging.json)", result.stderr)
        self.assertIn("the environments here are: production", result.stderr)


def read_answer(sock: socket.socket) -> bytes:
    """What the server sends until it closes (bounded by the socket's timeout)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return data
        if not chunk:
            return data
        data += chunk


class EarlyAnswerAccessLogTests(SynchronousTestCase):
    """
    access.log promises one line per request: also for those answered
    before their body is read (the publish gate's 403, every 413), on the
    run's HTTP/1.1 channel (C{NOTIFICATOR_TEST_CHANNEL}).
    """

    def test_refused_publishers_and_bodies_are_logged(self) -> None:
        """The 403s of publish.allow and the 413s, announced and chunked, each get their line."""
        local = {
            **base_config(),
            "server": {"trustedProxies": ["127.0.0.1/32"]},
            "publish": {"allow": ["10.0.0.0/8"]},
            "limits": {"bodyBytes": 4096},
        }
        server = Server(self, local=local).start()
        answers = []
        for xff in ("192.0.2.7", "10.1.2.3"):
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                sock.sendall(
                    b"POST /webNotification HTTP/1.1\r\nHost: t\r\nUser-Agent: early-test\r\n"
                    b"X-Forwarded-For: "
                    + xff.encode()
                    + b"\r\nContent-Type: "
                    + FORM.encode()
                    # 403 for the first, 413 for the second: neither body is read.
                    + b"\r\nContent-Length: 67108864\r\n\r\nid=notify_u1&data="
                )
                answers.append(read_answer(sock))
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(
                b"POST /webNotification?chunked HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 10.1.2.3"
                b"\r\nTransfer-Encoding: chunked\r\nContent-Type: " + FORM.encode() + b"\r\n\r\n"
            )
            sock.sendall((b"400\r\n" + b"x" * 1024 + b"\r\n") * 5)
            answers.append(read_answer(sock))
        bodies = []
        for answer, code in zip(answers, (b"403", b"413", b"413")):
            head, _, body = answer.partition(b"\r\n\r\n")
            self.assertTrue(head.startswith(b"HTTP/1.1 " + code), answer)
            bodies.append(body)
        self.assertEqual(json.loads(bodies[0]), {"error": "address not allowed"})

        server.wait_for_log(r"\?chunked HTTP/1\.1", name="access.log")
        access = server.log("access.log")
        self.assertRegex(
            access,
            rf'"192\.0\.2\.7" - - \[[^]]+\] "POST /webNotification HTTP/1\.1" 403'
            rf' {len(bodies[0])} "-" "early-test"\n',
        )
        self.assertRegex(
            access,
            rf'"10\.1\.2\.3" - - \[[^]]+\] "POST /webNotification HTTP/1\.1" 413'
            rf' {len(bodies[1])} "-" "early-test"\n',
        )
        self.assertRegex(
            access,
            rf'"10\.1\.2\.3" - - \[[^]]+\] "POST /webNotification\?chunked HTTP/1\.1" 413'
            rf' {len(bodies[2])} "-" "-"\n',
        )
        self.assertEqual(len(access.splitlines()), 3, access)
        self.assertNotIn("Traceback", server.log("sse.log") + server.log())

    def test_http2_early_answers_are_logged(self) -> None:
        """
        Over HTTP/2 the 403 of a wrong token header and the 413 of an
        announced body, both answered before the body, get their line too.
        """
        from tests.tlssupport import Certs, H2Client, TLSServer, server_config

        certs = Certs(self)
        local = server_config("http2", certs)
        token = "t" * 20
        local["publish"] = {"token": token}
        local["limits"] = {"bodyBytes": 4096}
        server = TLSServer(self, certs.ca, local=local, listen=None).start()
        c = H2Client(server.port, certs.ca)
        self.addCleanup(c.close)
        streams = []
        for bearer, length in (("wrong" * 4, "10"), (token, "67108864")):
            sid = c.conn.get_next_available_stream_id()
            c.conn.send_headers(
                sid,
                [
                    (":method", "POST"),
                    (":scheme", "https"),
                    (":authority", c.authority),
                    (":path", "/webNotification"),
                    ("content-type", FORM),
                    ("authorization", f"Bearer {bearer}"),
                    ("user-agent", "h2-early"),
                    # Last: twisted.web's HTTP/2 stream asks gotLength as it
                    # reads content-length, before the headers after it.
                    ("content-length", length),
                ],
            )
            c.data[sid] = b""
            c._flush()
            c.pump(lambda: sid in c.reset or sid in c.ended)  # noqa: B023 (called at once)
            streams.append(sid)
        self.assertEqual([c.headers[sid][":status"] for sid in streams], ["403", "413"])
        server.wait_for_log(r'HTTP/2" 413 ', name="access.log")
        lines = server.log("access.log").splitlines()
        self.assertEqual(len(lines), 2, lines)
        for line, sid, code in zip(lines, streams, (403, 413)):
            self.assertRegex(
                line,
                rf'^"127\.0\.0\.1" - - \[[^]]+\] "POST /webNotification HTTP/2" {code}'
                rf' {len(c.data[sid])} "-" "h2-early"$',
            )
        self.assertNotIn("Traceback", server.log("sse.log") + server.log())
