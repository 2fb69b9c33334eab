"""
Tests for the production install files in C{contrib/}: the nginx server
block (C{nginx -t} with Debian's nginx, and a real nginx in front of the
real C{twistd -n notificator}: event frames arrive unbuffered) and the
systemd unit (C{systemd-analyze verify}, and its command started and
stopped by SIGTERM as systemd would).

The tools come from Debian packages (C{nginx}, C{systemd}); C{.ci/run}
installs them.  In CI (C{CI} set) a missing tool fails the test; elsewhere
it skips with the reason.
"""

from __future__ import annotations

import configparser
import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    PROJECT,
    Client,
    Server,
    SSEClient,
    free_port,
    require_tool,
    wait_until,
    write_config,
)

CONTRIB = os.path.join(PROJECT, "contrib")
NGINX_BLOCK = os.path.join(CONTRIB, "nginx-notificator.conf")
UNIT = os.path.join(CONTRIB, "notificator.service")


def default_seconds(key: str) -> float:
    """A number of seconds from conf/default.json's sse section."""
    from notificator import config

    return float(getattr(config.defaults().sse, key))


class NginxBlock:
    """
    The shipped server block made runnable in a scratch prefix: the
    upstream pointed at a loopback port, the listeners at a loopback port,
    and the certificate at a test one.  Everything else is as shipped.
    """

    def __init__(self, testcase: SynchronousTestCase, upstream: int, certs: object) -> None:
        self.nginx = require_tool("nginx", "nginx", "CONTRIB TEST NOT RUN")
        self.prefix = os.path.abspath(testcase.mktemp())
        os.makedirs(self.prefix)
        self.port = free_port()
        with open(NGINX_BLOCK, encoding="utf-8") as f:
            block = f.read()
        replacements = [
            ("server 127.0.0.1:3000;", f"server 127.0.0.1:{upstream};"),
            ("listen 443 ssl http2;", f"listen 127.0.0.1:{self.port} ssl http2;"),
            ("listen [::]:443 ssl http2;", f"listen [::1]:{self.port} ssl http2;"),
            ("/etc/ssl/certs/sse.example.com.pem", certs.cert),  # type: ignore[attr-defined]
            ("/etc/ssl/private/sse.example.com.key", certs.key),  # type: ignore[attr-defined]
        ]
        for old, new in replacements:
            testcase.assertIn(old, block, "the shipped block changed; update this test")
            block = block.replace(old, new)
        self.block = os.path.join(self.prefix, "notificator.conf")
        with open(self.block, "w", encoding="utf-8") as f:
            f.write(block)
        p = self.prefix
        temp = " ".join(
            f"{kind}_temp_path {p}/{kind};" for kind in ("proxy", "fastcgi", "uwsgi", "scgi")
        )
        user = "user root;\n" if os.geteuid() == 0 else ""
        self.conf = os.path.join(p, "nginx.conf")
        with open(self.conf, "w", encoding="utf-8") as f:
            f.write(
                f"{user}daemon off;\nworker_processes 1;\npid {p}/nginx.pid;\n"
                f"error_log {p}/error.log info;\nevents {{ worker_connections 256; }}\n"
                f"http {{\n  access_log {p}/access.log;\n"
                f"  client_body_temp_path {p}/body;\n  {temp}\n  include {self.block};\n}}\n"
            )

    def command(self, *args: str) -> list[str]:
        return [
            self.nginx,
            "-p",
            self.prefix,
            "-c",
            self.conf,
            "-e",
            f"{self.prefix}/error.log",
            *args,
        ]

    def check(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command("-t"), capture_output=True, text=True, timeout=30, check=False
        )


class NginxTests(SynchronousTestCase):
    def setUp(self) -> None:
        from tests.tlssupport import Certs

        self.certs = Certs(self)

    def test_shipped_block_passes_nginx_t(self) -> None:
        """nginx -t accepts the shipped block (and rejects a broken copy: the check is real)."""
        nginx = NginxBlock(self, free_port(), self.certs)
        result = nginx.check()
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("test is successful", result.stderr)
        with open(nginx.block, encoding="utf-8") as f:
            text = f.read()
        with open(nginx.block, "w", encoding="utf-8") as f:
            f.write(text.replace("proxy_buffering off;", "proxy_buffering nope;"))
        self.assertNotEqual(nginx.check().returncode, 0)

    def test_block_says_what_sse_needs(self) -> None:
        """No buffering for /sse, HTTP/1.1 with Connection cleared, a long read timeout, XFF."""
        with open(NGINX_BLOCK, encoding="utf-8") as f:
            text = re.sub(r"#.*", "", f.read())
        sse = re.search(r"location /sse \{(.*?)\}", text, re.S)
        assert sse is not None
        self.assertIn("proxy_buffering off;", sse.group(1))
        self.assertIn("proxy_http_version 1.1;", text)
        self.assertIn('proxy_set_header Connection "";', text)
        self.assertIn("proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;", text)
        timeout = re.search(r"proxy_read_timeout (\d+)s;", sse.group(1))
        assert timeout is not None
        self.assertGreater(int(timeout.group(1)), default_seconds("keepalive"))
        self.assertGreater(int(timeout.group(1)), default_seconds("heartbeat_interval"))

    def test_frames_pass_unbuffered(self) -> None:
        """
        Through a real nginx with the shipped block, over TLS: a published
        notification reaches the stream within the second, and the stream
        stays open past nginx's buffer.
        """
        server = Server(self, local={"sse": {"heartbeat": False}}).start()
        nginx = NginxBlock(self, server.port, self.certs)
        process = subprocess.Popen(
            nginx.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.addCleanup(process.wait, 10)
        self.addCleanup(process.send_signal, signal.SIGTERM)
        context = ssl.create_default_context(cafile=self.certs.ca)

        def connection() -> http.client.HTTPSConnection:
            return http.client.HTTPSConnection("localhost", nginx.port, timeout=10, context=context)

        def error_log() -> str:
            try:
                with open(f"{nginx.prefix}/error.log", encoding="utf-8") as f:
                    return f.read()
            except FileNotFoundError:
                return "(no error.log)"

        def accepts() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", nginx.port), timeout=1):
                    return True
            except OSError:
                if process.poll() is not None:
                    raise AssertionError("nginx exited:\n" + error_log())
                return False

        wait_until(accepts, 10, lambda: "nginx listening:\n" + error_log())

        stream = SSEClient(connection(), "/sse/u1", {})
        self.addCleanup(stream.close)
        self.assertEqual(stream.status, 200)
        self.assertEqual(stream.headers["Content-Type"], "text/event-stream; charset=utf-8")
        self.assertEqual(stream.next_event()["event"], "connect")
        for n in range(3):
            post = connection()
            started = time.monotonic()
            post.request(
                "POST",
                "/webNotification",
                f"id=notify_u1&data=%7B%22n%22%3A{n}%7D",
                {"Content-Type": "application/x-www-form-urlencoded"},
            )
            reply = json.loads(post.getresponse().read())
            post.close()
            self.assertEqual(reply["delivered"], 1)
            event = stream.next_event()
            elapsed = time.monotonic() - started
            self.assertEqual((event["event"], event["data"]), ("notify", f'{{"n":{n}}}'))
            self.assertLess(elapsed, 1.0, "the frame waited in a buffer")
        # nginx's access log shows the requests went through it.
        with open(f"{nginx.prefix}/access.log", encoding="utf-8") as f:
            self.assertIn("POST /webNotification", f.read())


class SystemdTests(SynchronousTestCase):
    def unit(self) -> configparser.ConfigParser:
        parser = configparser.ConfigParser(interpolation=None, strict=True)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read(UNIT, encoding="utf-8")
        return parser

    def install(self) -> tuple[str, str]:
        """A scratch install whose venv/bin/twistd is the tests' twistd; (root, unit path)."""
        root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(root, "venv", "bin"))
        os.symlink(
            os.path.join(os.path.dirname(sys.executable), "twistd"),
            os.path.join(root, "venv", "bin", "twistd"),
        )
        with open(UNIT, encoding="utf-8") as f:
            text = f.read().replace("/srv/notificator", root)
        path = os.path.join(root, "notificator.service")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return root, path

    def test_unit_verifies(self) -> None:
        """systemd-analyze verify finds nothing to say (and does find a typo)."""
        analyze = require_tool("systemd-analyze", "systemd", "CONTRIB TEST NOT RUN")
        root, path = self.install()

        def verify() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [analyze, "verify", path], capture_output=True, text=True, timeout=30, cwd=root
            )

        result = verify()
        self.assertEqual((result.returncode, result.stdout + result.stderr), (0, ""))
        with open(path, encoding="utf-8") as f:
            text = f.read()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text.replace("Type=simple", "Type=simpel"))
        self.assertIn("Failed to parse service type", verify().stderr)

    def test_unit_says_what_production_needs(self) -> None:
        """Foreground twistd, restart on failure, a user, room for the streams, SIGTERM with time to drain."""
        service = self.unit()["Service"]
        self.assertEqual(service["Type"], "simple")
        self.assertRegex(service["ExecStart"], r"/twistd (--nodaemon|-n) .*notificator")
        self.assertEqual(service["Restart"], "on-failure")
        self.assertTrue(service["User"])
        self.assertEqual(service["Environment"], "NOTIFICATOR_ENV=production")
        self.assertGreaterEqual(int(service["LimitNOFILE"]), 20000)
        self.assertEqual(service["KillSignal"], "SIGTERM")
        self.assertGreater(
            int(service["TimeoutStopSec"].rstrip("s")), default_seconds("drain_seconds")
        )

    def test_exec_start_runs_and_stops_on_sigterm(self) -> None:
        """The unit's ExecStart, in its WorkingDirectory, serves; its KillSignal stops it in time."""
        root, _ = self.install()
        service = self.unit()["Service"]
        argv = service["ExecStart"].replace("/srv/notificator", root).split()
        write_config(
            os.path.join(root, "conf"),
            {
                "default": {},
                "production": {"server": {"protocol": "http", "host": "127.0.0.1", "port": 0}},
            },
        )
        env = dict(os.environ)
        key, _, value = service["Environment"].partition("=")
        env[key] = value
        log = os.path.join(root, "journal")
        with open(log, "wb") as out:
            process = subprocess.Popen(argv, cwd=root, env=env, stdout=out, stderr=out)
        self.addCleanup(lambda: process.poll() is None and process.kill())

        def journal() -> str:
            with open(log, encoding="utf-8", errors="replace") as f:
                return f.read()

        def listening() -> re.Match[str] | None:
            self.assertIsNone(process.poll(), journal())
            return re.search(r"starting on (\d+)", journal())

        m = wait_until(listening, 30, journal)
        self.assertEqual(Client(self, int(m.group(1))).request("GET", "/health")[0], 200)
        self.assertIn(
            "notificator [production]",
            open(f"/proc/{process.pid}/cmdline").read().replace("\0", " "),
        )
        self.assertFalse(os.path.exists(os.path.join(root, "twistd.pid")))
        process.send_signal(getattr(signal, service["KillSignal"]))
        # twistd shuts down cleanly, then ends by the same signal (so the
        # status says why): systemd counts SIGTERM as a clean exit.
        status = process.wait(int(service["TimeoutStopSec"].rstrip("s")))
        self.assertIn(status, (0, -signal.SIGTERM))
        self.assertIn("Server Shut Down", journal())
