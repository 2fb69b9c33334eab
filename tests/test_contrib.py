"""
Tests for the production install files in C{contrib/}: the nginx server
block (C{nginx -t} with Debian's nginx, and a real nginx in front of the
real C{twistd -n notificator}: event frames arrive unbuffered; without
C{server.trustedProxies} its clients are unknown and refused; with the
operations guide's production C{local.json} each client is judged by its
own address; the guides include the shipped block and show no other) and
the systemd unit
(C{systemd-analyze verify}, and its command started and stopped by
SIGTERM as systemd would).

The tools come from Debian packages (C{nginx}, C{systemd}); C{.ci/run}
installs them.  In CI (C{CI} set) a missing tool fails the test; elsewhere
it skips with the reason.
"""

from __future__ import annotations

import configparser
import glob
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    PROJECT,
    UNMEASURED,
    Client,
    Server,
    SSEClient,
    free_port,
    not_here,
    require_tool,
    wait_until,
    write_config,
)

CONTRIB = os.path.join(PROJECT, "contrib")
#: Every guide, in both languages: none shows nginx directives of its own.
GUIDES = (
    "README.rst",
    "README.ko.rst",
    "CONTRIBUTING.rst",
    *sorted(
        os.path.relpath(path, PROJECT)
        for path in glob.glob(os.path.join(PROJECT, "docs", "**", "*.rst"), recursive=True)
    ),
)
#: The operations guides: the production install (the install steps, the
#: production local.json, the shipped block and unit included).
OPERATIONS = (os.path.join("docs", "operations.rst"), os.path.join("docs", "ko", "operations.rst"))
#: The cluster guides: the one upstream block, with every node.
CLUSTER = (os.path.join("docs", "cluster.rst"), os.path.join("docs", "ko", "cluster.rst"))
NGINX_BLOCK = os.path.join(CONTRIB, "nginx-notificator.conf")
UNIT = os.path.join(CONTRIB, "notificator.service")


def default_seconds(key: str) -> float:
    """A number of seconds from conf/default.json's sse section."""
    from notificator import config

    return float(getattr(config.defaults().sse, key))


def readme_literal(name: str, readme: str = OPERATIONS[0]) -> str:
    """
    The literal block (after C{::}) between C{.. BEGIN <name>} and
    C{.. END <name>} in C{readme}, dedented.
    """
    with open(os.path.join(PROJECT, readme), encoding="utf-8") as f:
        text = f.read()
    match = re.search(
        rf"^\.\. BEGIN {re.escape(name)}\n(.*?)^\.\. END {re.escape(name)}\n", text, re.S | re.M
    )
    if match is None:
        raise AssertionError(f"{readme} has no block {name!r}")
    _, sep, code = match.group(1).partition("::\n")
    if not sep:
        raise AssertionError(f"{readme} block {name!r} has no literal block")
    return textwrap.dedent(code).strip() + "\n"


def production_local() -> dict[str, Any]:
    """The operations guide's production C{conf/local.json} (for the shipped nginx block)."""
    loaded: dict[str, Any] = json.loads(readme_literal("production local.json"))
    return loaded


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """C{base} with C{extra} merged in, objects key by key (as the config files merge)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            value = merged(out[key], value)
        out[key] = value
    return out


class NginxBlock:
    """
    The shipped server block made runnable in a scratch prefix: the
    upstream pointed at a loopback port, the listeners at a loopback port,
    and the certificate at a test one.  Everything else is as shipped.
    """

    def __init__(
        self,
        testcase: SynchronousTestCase,
        upstream: int,
        certs: object,
        upstream_block: str | None = None,
    ) -> None:
        self.testcase = testcase
        self.certs = certs
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
        if upstream_block is not None:
            block, count = re.subn(
                r"^upstream notificator \{.*?^\}\n", upstream_block, block, flags=re.S | re.M
            )
            testcase.assertEqual(count, 1, "the shipped block has one upstream")
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

    def error_log(self) -> str:
        try:
            with open(f"{self.prefix}/error.log", encoding="utf-8") as f:
                return f.read()
        except FileNotFoundError:
            return "(no error.log)"

    def start(self) -> NginxBlock:
        """Run nginx (stopped in the test's cleanup) and wait until it accepts connections."""
        process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.testcase.addCleanup(process.wait, 10)
        self.testcase.addCleanup(process.send_signal, signal.SIGTERM)

        def accepts() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except OSError:
                if process.poll() is not None:
                    raise AssertionError("nginx exited:\n" + self.error_log())
                return False

        wait_until(accepts, 10, lambda: "nginx listening:\n" + self.error_log())
        return self

    def connection(self, source: str = "127.0.0.1") -> http.client.HTTPSConnection:
        """An HTTPS connection to nginx from the loopback address C{source}."""
        context = ssl.create_default_context(cafile=self.certs.ca)  # type: ignore[attr-defined]
        return http.client.HTTPSConnection(
            "127.0.0.1", self.port, timeout=10, context=context, source_address=(source, 0)
        )

    def request(
        self,
        method: str,
        path: str,
        body: str | None = None,
        headers: dict[str, str] | None = None,
        source: str = "127.0.0.1",
    ) -> tuple[int, bytes]:
        conn = self.connection(source)
        try:
            conn.request(method, path, body, headers or {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def publish(
        self, user: str, data: str, source: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        status, body = self.request(
            "POST",
            "/webNotification",
            f"id=notify_{user}&data={data}",
            {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})},
            source,
        )
        return status, json.loads(body)


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
        """
        No buffering for /sse, a read timeout longer than the keepalive and
        the heartbeat, HTTP/1.1 with Connection cleared and X-Forwarded-For
        for both locations (set once, at server level: a location with a
        proxy_set_header of its own would drop them all), and
        client_max_body_size as limits.bodyBytes.
        """
        from notificator.config import defaults

        with open(NGINX_BLOCK, encoding="utf-8") as f:
            text = re.sub(r"#.*", "", f.read())
        sse = re.search(r"location /sse \{(.*?)\}", text, re.S)
        assert sse is not None
        self.assertIn("proxy_buffering off;", sse.group(1))
        locations = re.findall(r"location [^{]*\{(.*?)\}", text, re.S)
        self.assertEqual(len(locations), 2)
        server_level = re.sub(r"location [^{]*\{.*?\}", "", text, flags=re.S)
        for directive in (
            "proxy_http_version 1.1;",
            'proxy_set_header Connection "";',
            "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        ):
            self.assertIn(directive, server_level)
        for location in locations:
            self.assertNotIn("proxy_set_header", location)
            self.assertNotIn("proxy_http_version", location)
            self.assertIn("proxy_pass http://notificator;", location)
        timeout = re.search(r"proxy_read_timeout (\d+)s;", sse.group(1))
        assert timeout is not None
        self.assertGreater(int(timeout.group(1)), default_seconds("keepalive"))
        self.assertGreater(int(timeout.group(1)), default_seconds("heartbeat_interval"))
        self.assertEqual(re.findall(r"client_max_body_size", text), ["client_max_body_size"])
        size = re.search(r"client_max_body_size (\d+)m;", server_level)
        assert size is not None
        self.assertEqual(int(size.group(1)) * 1024 * 1024, defaults().limits.body_bytes)

    def test_guides_show_no_other_block(self) -> None:
        """
        The guides refer to the shipped block instead of showing their own:
        no location or proxy_ directive in them, and the operations guides
        include the shipped file; the cluster upstream the cluster guides
        show (one each, and no other guide shows one), put in the shipped
        block, passes nginx -t.
        """
        self.assertGreater(len(GUIDES), len(OPERATIONS) + len(CLUSTER) + 2, GUIDES)
        for guide in GUIDES:
            with open(os.path.join(PROJECT, guide), encoding="utf-8") as f:
                text = f.read()
            for directive in ("location /", "proxy_pass", "proxy_read_timeout", "proxy_buffering"):
                self.assertNotIn(directive, text, guide)
            if guide not in CLUSTER:
                self.assertNotIn("upstream notificator {", text, guide)
        for guide in ("README.rst", "README.ko.rst", *OPERATIONS, *CLUSTER):
            with open(os.path.join(PROJECT, guide), encoding="utf-8") as f:
                self.assertIn("contrib/nginx-notificator.conf", f.read(), guide)
        for guide in OPERATIONS:
            self.assertEqual(included(guide), [UNIT, NGINX_BLOCK], guide)
        for guide in CLUSTER:
            with open(os.path.join(PROJECT, guide), encoding="utf-8") as f:
                text = f.read()
            upstreams = re.findall(r"^( +)upstream notificator \{\n.*?^\1\}\n", text, re.S | re.M)
            self.assertEqual(len(upstreams), 1, guide)
            block = re.search(r"^ +upstream notificator \{\n.*?^ +\}\n", text, re.S | re.M)
            assert block is not None
            upstream = textwrap.dedent(block.group(0))
            self.assertIn("least_conn;", upstream)
            nginx = NginxBlock(self, free_port(), self.certs, upstream_block=upstream)
            result = nginx.check()
            self.assertEqual(result.returncode, 0, result.stderr)
            with open(nginx.block, encoding="utf-8") as f:
                self.assertIn("server 10.0.0.12:3000;", f.read())

    def test_production_local_json(self) -> None:
        """
        The production local.json (the same in both operations guides) loads,
        listens on plain http on the loopback at the block's upstream port,
        and trusts nginx there.
        """
        from ipaddress import ip_network

        from twisted.python.filepath import FilePath

        from notificator import config

        text = readme_literal("production local.json")
        self.assertEqual(readme_literal("production local.json", OPERATIONS[1]), text)
        directory = write_config(os.path.abspath(self.mktemp()), {"local": text, "test": {}})
        shutil.copy(os.path.join(PROJECT, "conf", "default.json"), directory)
        cfg = config.load(FilePath(directory), "test")
        self.assertEqual(cfg.warnings, ())
        self.assertEqual(
            (cfg.server.protocol, cfg.server.host, cfg.server.port), ("http", "127.0.0.1", 3000)
        )
        with open(NGINX_BLOCK, encoding="utf-8") as f:
            self.assertIn(f"server 127.0.0.1:{cfg.server.port};", f.read())
        self.assertEqual(
            cfg.server.trusted_proxies, (ip_network("127.0.0.1/32"), ip_network("::1/128"))
        )

    def test_frames_pass_unbuffered(self) -> None:
        """
        Through a real nginx with the shipped block, over TLS, with the
        operations guide's production local.json: a published notification reaches
        the stream within the second, and the stream stays open past
        nginx's buffer.
        """
        local = merged(production_local(), {"sse": {"heartbeat": False}})
        server = Server(self, local=local).start()
        nginx = NginxBlock(self, server.port, self.certs).start()

        stream = SSEClient(nginx.connection(), "/sse/u1", {})
        self.addCleanup(stream.close)
        self.assertEqual(stream.status, 200)
        self.assertEqual(stream.headers["Content-Type"], "text/event-stream; charset=utf-8")
        self.assertEqual(stream.next_event()["event"], "connect")
        for n in range(3):
            started = time.monotonic()
            status, reply = nginx.publish("u1", f"%7B%22n%22%3A{n}%7D", "127.0.0.1")
            self.assertEqual((status, reply["delivered"]), (200, 1))
            event = stream.next_event()
            elapsed = time.monotonic() - started
            self.assertEqual((event["event"], event["data"]), ("notify", f'{{"n":{n}}}'))
            self.assertLess(elapsed, 1.0, "the frame waited in a buffer")
        # nginx's access log shows the requests went through it.
        with open(f"{nginx.prefix}/access.log", encoding="utf-8") as f:
            self.assertIn("POST /webNotification", f.read())

    def test_untrusted_nginx_shuts_the_doors(self) -> None:
        """
        The shipped block in front of a server without server.trustedProxies
        (the default): nginx connects from loopback, which publish.allow and
        monitor.allow hold, yet a publish and /users through it get 403
        naming server.trustedProxies, with the line in sse.log; /health
        answers; a stream opens, shown unknown via nginx.
        """
        server = Server(self, local={"sse": {"heartbeat": False}}).start()
        nginx = NginxBlock(self, server.port, self.certs).start()
        stream = SSEClient(nginx.connection(), "/sse/u1", {})
        self.addCleanup(stream.close)
        self.assertEqual(stream.next_event()["event"], "connect")
        for source in ("127.0.0.1", "127.0.0.5"):
            status, reply = nginx.publish("u1", "1", source)
            self.assertEqual(
                (status, reply),
                (
                    403,
                    {"error": "unknown client: forwarded by a proxy not in server.trustedProxies"},
                ),
            )
            status, body = nginx.request("GET", "/users", source=source)
            self.assertEqual(status, 403)
            self.assertIn(b"server.trustedProxies", body)
            self.assertEqual(nginx.request("GET", "/health", source=source)[0], 200)
        server.wait_for_log(
            r"refused publish from unknown via 127\.0\.0\.1: 403 unknown client: forwarded by a"
            r" proxy not in server\.trustedProxies",
            name="sse.log",
        )
        server.wait_for_log(
            r"refused GET /users from unknown via 127\.0\.0\.1: 403", name="sse.log"
        )
        server.wait_for_log(r"stream 1 opened for u1 from unknown via 127\.0\.0\.1", name="sse.log")
        # Straight to the server, without nginx, loopback still publishes.
        status, reply = server.post("id=notify_u1&data=2", "application/x-www-form-urlencoded")
        self.assertEqual((status, reply["delivered"]), (200, 1))
        self.assertEqual(stream.next_event()["data"], "2")

    def test_production_config_judges_each_client(self) -> None:
        """
        The shipped block with the operations guide's production local.json: nginx
        connects from 127.0.0.1, and each client is judged by its own
        address: 127.0.0.5 (added to publish.allow) publishes, 127.0.0.6
        does not, also when it names 127.0.0.5 or 127.0.0.1 in
        X-Forwarded-For or Forwarded; 127.0.0.6 is not in monitor.allow;
        its stream opens and gets what 127.0.0.5 publishes.
        """
        local = production_local()
        allow = local["publish"]["allow"] + ["127.0.0.5/32"]
        local = merged(local, {"publish": {"allow": allow}, "sse": {"heartbeat": False}})
        server = Server(self, local=local).start()
        nginx = NginxBlock(self, server.port, self.certs).start()
        stream = SSEClient(nginx.connection("127.0.0.6"), "/sse/u6", {})
        self.addCleanup(stream.close)
        self.assertEqual(stream.next_event()["event"], "connect")
        server.wait_for_log(r"stream 1 opened for u6 from 127\.0\.0\.6 ", name="sse.log")
        for headers in (
            {},
            {"X-Forwarded-For": "127.0.0.5"},
            {"X-Forwarded-For": "127.0.0.1"},
            {"Forwarded": "for=127.0.0.5"},
        ):
            status, reply = nginx.publish("u6", "0", "127.0.0.6", headers)
            self.assertEqual((status, reply), (403, {"error": "address not allowed"}), headers)
        server.wait_for_log(
            r"refused publish from 127\.0\.0\.6: 403 address not allowed", name="sse.log"
        )
        status, reply = nginx.publish("u6", "%7B%22n%22%3A5%7D", "127.0.0.5")
        self.assertEqual((status, reply["delivered"]), (200, 1))
        self.assertEqual(stream.next_event()["data"], '{"n":5}')
        self.assertEqual(nginx.request("GET", "/users", source="127.0.0.6")[0], 403)
        status, body = nginx.request("GET", "/users", source="127.0.0.1")
        self.assertEqual(status, 200)
        [user] = json.loads(body)["users"]
        self.assertEqual(user["remoteAddresses"], ["127.0.0.6"])
        server.wait_for_log(
            r'"127\.0\.0\.5" - - .*"POST /webNotification HTTP/1\.1" 200', name="access.log"
        )


class SystemdTests(SynchronousTestCase):
    def unit(self) -> dict[str, dict[str, str]]:
        """The unit's sections, each key's last value (systemd repeats some keys)."""
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read(UNIT, encoding="utf-8")
        return {name: dict(parser[name]) for name in parser.sections()}

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
        self.assertEqual(service["KillMode"], "mixed")
        self.assertEqual(service["ExecReload"], "/bin/kill -HUP $MAINPID")
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


#: Every option of the unit's [Service] section, and how the tests check it
#: does not break TLS, HTTP/2 or Redis: "emulated" options are applied to the
#: real server by tests.unitsandbox (HardenedUnitTests runs it under them);
#: the others say why they cannot break the server.  A new option must be
#: added here (test_every_option_is_accounted_for).
UNIT_OPTIONS = {
    "Type": "run: the ExecStart tests",
    "User": "run: setpriv as a user made by the documented steps",
    "Group": "run: setpriv as a user made by the documented steps",
    "WorkingDirectory": "run: the ExecStart tests",
    "Environment": "run: the ExecStart tests",
    "ExecStart": "run: the ExecStart tests",
    "Restart": "systemd only: restarts a failed server",
    "RestartSec": "systemd only",
    "LimitNOFILE": "a limit the server reads (limits.streams); tested in test_limits",
    "KillSignal": "run: test_exec_start_runs_and_stops_on_sigterm",
    "KillMode": "run: test_workers_under_the_sandbox (SIGTERM to the supervisor alone stops"
    " its workers and its redis-server)",
    "ExecReload": "run: test_workers_under_the_sandbox (its signal to the supervisor: the"
    " workers replaced)",
    "TimeoutStopSec": "checked against sse.drainSeconds",
    "UMask": "emulated",
    "CapabilityBoundingSet": "the server runs as its user and never asks for a capability"
    " (no port below 1024 by default; the unit's comment says what to change)",
    "AmbientCapabilities": "as CapabilityBoundingSet",
    "NoNewPrivileges": "emulated (setpriv --no-new-privs)",
    "PrivateUsers": "a user namespace: the server's own user and root stay mapped, so"
    " files it reads and writes keep their owners; no low port (the unit's comment)",
    "ProtectSystem": "read-only /: the server writes only server.log.dir and sse.history.dir"
    " (both ReadWritePaths; tap.check_dir stops start-up on any other) and twistd, with"
    " --pidfile= and --nodaemon, nothing; Twisted's plugin cache it cannot write is only"
    " logged",
    "ReadWritePaths": "run: the documented install -d makes them; the server writes there",
    "ProtectHome": "the install is under /srv",
    "PrivateTmp": "the server uses no temporary files",
    "PrivateDevices": "no device but /dev/null, /dev/urandom... (Python and OpenSSL seed from"
    " getrandom(2))",
    "PrivateMounts": "the server mounts nothing",
    "ProtectKernelTunables": "read-only /proc/sys and /sys: the server reads neither (IPv6"
    " dual-stack is probed with a socket, listening.ipv6_mode)",
    "ProtectKernelModules": "the server loads no module",
    "ProtectKernelLogs": "the server reads no kernel log",
    "ProtectControlGroups": "the server touches no cgroup",
    "ProtectClock": "the server sets no clock",
    "ProtectHostname": "the server only reads the host name (cluster.node's default)",
    "ProtectProc": "hides other users' processes; /proc/self (the process_* metrics) stays",
    "RestrictAddressFamilies": "emulated",
    "RestrictNamespaces": "emulated",
    "RestrictRealtime": "the server asks for no real-time scheduling",
    "RestrictSUIDSGID": "the server makes no set-user-id file",
    "LockPersonality": "the server never calls personality(2)",
    "RemoveIPC": "the server uses no System V or POSIX IPC objects",
    "SystemCallArchitectures": "emulated (libseccomp: native only)",
    "SystemCallFilter": "emulated",
    "SystemCallErrorNumber": "emulated (the run uses a stricter kill instead: see write_policy)",
}

#: Tries what the sandbox must refuse, and what it must not (a thread).
PROBE = r"""
import ctypes, errno, mmap, os, socket, threading
libc = ctypes.CDLL(None, use_errno=True)
def attempt(f):
    try:
        f()
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    return "ok"
def unshare():
    if libc.unshare(0x04000000) != 0:
        raise OSError(ctypes.get_errno(), "unshare")
thread = threading.Thread(target=lambda: None)
thread.start()
thread.join()
print(" ".join([
    attempt(lambda: os.nice(1)),
    attempt(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).close()),
    attempt(lambda: socket.socket(socket.AF_INET6).close()),
    attempt(lambda: socket.socket(socket.AF_UNIX).close()),
    attempt(lambda: mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)),
    attempt(unshare),
]))
"""


class HardenedUnitTests(SynchronousTestCase):
    """
    The unit's hardening: its systemd-analyze security score, and the real
    server run as a user made by the documented install steps, under the
    unit's seccomp filters and process settings (tests.unitsandbox: CI has
    no systemd as PID 1), serving TLS and HTTP/2 with its history and logs
    on disk, and in cluster mode with Redis.
    """

    def setUp(self) -> None:
        self.analyze = require_tool("systemd-analyze", "systemd", "CONTRIB TEST NOT RUN")

    def score(self, path: str) -> float:
        result = subprocess.run(
            [self.analyze, "security", "--offline=true", path],
            capture_output=True,
            text=True,
            timeout=60,
        )
        from tests.unitsandbox import EXPOSURE

        m = EXPOSURE.search(result.stdout + result.stderr)
        assert m is not None, result.stdout + result.stderr
        return float(m.group(1))

    def test_security_score(self) -> None:
        """systemd-analyze security rates the unit 2.0 or below (without its hardening: above)."""
        self.assertLessEqual(self.score(UNIT), 2.0)
        from tests.unitsandbox import read_unit

        hardening = set(read_unit(UNIT)) - {
            "Type",
            "User",
            "Group",
            "WorkingDirectory",
            "Environment",
            "ExecStart",
            "Restart",
            "RestartSec",
            "LimitNOFILE",
            "KillSignal",
            "TimeoutStopSec",
        }
        bare = os.path.join(os.path.abspath(self.mktemp()) + ".service")
        with open(UNIT, encoding="utf-8") as f:
            lines = [line for line in f if line.partition("=")[0].strip() not in hardening]
        with open(bare, "w", encoding="utf-8") as f:
            f.writelines(lines)
        self.assertGreater(self.score(bare), 8.0)

    def test_low_port_variant_stays_hardened(self) -> None:
        """The unit's comment for a port below 1024 keeps the score at 2.0 or below."""
        with open(UNIT, encoding="utf-8") as f:
            text = f.read()
        for line in (
            "#   CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
            "#   AmbientCapabilities=CAP_NET_BIND_SERVICE",
            "#   PrivateUsers=no",
        ):
            self.assertIn(line, text)
        text = (
            text.replace(
                "\nCapabilityBoundingSet=\n", "\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE\n"
            )
            .replace("\nAmbientCapabilities=\n", "\nAmbientCapabilities=CAP_NET_BIND_SERVICE\n")
            .replace("\nPrivateUsers=yes\n", "\nPrivateUsers=no\n")
        )
        low = os.path.abspath(self.mktemp()) + ".service"
        with open(low, "w", encoding="utf-8") as f:
            f.write(text)
        self.assertLessEqual(self.score(low), 2.0)

    def test_every_option_is_accounted_for(self) -> None:
        """Each option of [Service] is emulated for the tests or its harmlessness is stated."""
        from tests.unitsandbox import read_unit

        self.assertEqual(sorted(read_unit(UNIT)), sorted(UNIT_OPTIONS))

    def policy(self, strict: bool = True) -> str:
        return write_policy(self, self.analyze, strict)

    def sandboxed(self, policy: str, argv: list[str]) -> list[str]:
        return [
            sys.executable,
            os.path.join(PROJECT, "tests", "unitsandbox.py"),
            policy,
            "--",
            *argv,
        ]

    def test_sandbox_is_real(self) -> None:
        """
        The emulated sandbox refuses what the unit refuses (nice, a netlink
        socket, writable and executable memory, a namespace) and allows
        IPv6 and Unix sockets and threads; without it all succeed.
        """
        require_tool("setpriv", "util-linux", "CONTRIB TEST NOT RUN")
        plain = subprocess.run(
            [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60
        )
        self.assertEqual(plain.stdout.split(), ["ok"] * 6, plain.stderr)
        boxed = subprocess.run(
            self.sandboxed(self.policy(strict=False), [sys.executable, "-c", PROBE]),
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(
            boxed.stdout.split(),
            ["EPERM", "EAFNOSUPPORT", "ok", "ok", "ok", "EPERM"],
            boxed.stderr,
        )

    def test_memory_deny_write_execute_would_break_tls(self) -> None:
        """
        Why the unit has no MemoryDenyWriteExecute=yes: under it pyOpenSSL
        cannot make the callbacks every TLS listener sets (cffi needs
        writable and executable memory), so the server could not serve
        https or http2.
        """
        import json as json_module

        from tests.unitsandbox import Policy

        policy = Policy.from_unit(UNIT, self.analyze)
        self.assertFalse(policy["mdwe"])
        policy["mdwe"] = True
        path = os.path.abspath(self.mktemp()) + ".json"
        with open(path, "w", encoding="utf-8") as f:
            json_module.dump(policy, f)
        code = (
            "from OpenSSL import SSL\n"
            "SSL.Context(SSL.TLS_METHOD).set_alpn_select_callback(lambda c, p: p[0])\n"
            "print('ok')\n"
        )
        plain = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
        self.assertEqual(plain.stdout, "ok\n", plain.stderr)
        boxed = subprocess.run(
            self.sandboxed(path, [sys.executable, "-c", code]),
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertNotEqual(boxed.returncode, 0)
        self.assertIn("Cannot allocate write+execute memory for ffi.callback()", boxed.stderr)


def write_policy(testcase: SynchronousTestCase, analyze: str, strict: bool = True) -> str:
    """
    The unit's sandbox (L{tests.unitsandbox.Policy}) as a policy file;
    C{strict}: the system call filter made stricter than the unit's (a
    call outside it kills the process instead of failing with EPERM, so no
    denied call can go unseen).
    """
    from tests.unitsandbox import Policy

    policy = Policy.from_unit(UNIT, analyze)
    if strict:
        policy["errno"] = None
    path = os.path.abspath(testcase.mktemp()) + ".json"
    with open(path, "w", encoding="utf-8") as f:
        json.dump(policy, f)
    os.chmod(path, 0o644)
    return path


def included(guide: str) -> list[str]:
    """The files C{guide} includes with C{.. literalinclude::}, as absolute paths, in order."""
    with open(os.path.join(PROJECT, guide), encoding="utf-8") as f:
        names = re.findall(r"^\.\. literalinclude:: (\S+)$", f.read(), re.M)
    base = os.path.dirname(os.path.join(PROJECT, guide))
    return [os.path.normpath(os.path.join(base, name)) for name in names]


def documented_steps() -> list[str]:
    """The install commands of the unit's header comment, in order."""
    steps = []
    with open(UNIT, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"^#   (\S.*)$", line.rstrip("\n"))
            if m:
                steps.append(m.group(1))
            elif steps and not line.startswith("#"):
                break
    return steps


class InstallStepsTests(SynchronousTestCase):
    """
    The install steps as the operations guides and the unit's header
    give them, run on this machine as far as it allows (no systemd as PID
    1): a system user made by useradd, log/ and var/ made by install -d,
    the --check as that user, then the unit's ExecStart as that user
    (setpriv) under the unit's sandbox (tests.unitsandbox), serving TLS and
    HTTP/2 and writing its history and logs; and in cluster mode, Redis.

    The user is given CAP_DAC_READ_SEARCH and nothing else, only so that it
    can read this test run's Python (under root's home here): it lets the
    user read and search any file, not write one, so what the server may
    write is still decided by the steps.
    """

    def setUp(self) -> None:
        if os.geteuid() != 0:
            not_here("CONTRIB TEST NOT RUN: the install steps make a system user (run as root)")
        for tool, package in (("useradd", "passwd"), ("setpriv", "util-linux")):
            require_tool(tool, package, "CONTRIB TEST NOT RUN")
        self.analyze = require_tool("systemd-analyze", "systemd", "CONTRIB TEST NOT RUN")
        from tests.tlssupport import Certs

        self.certs = Certs(self)
        # Under /tmp, not the test's temporary directory, whose parents the
        # user may not search (access(2) ignores the capability below).
        import tempfile

        self.base = tempfile.mkdtemp(prefix="notificator-install-")
        self.addCleanup(shutil.rmtree, self.base, True)
        os.chmod(self.base, 0o755)
        self.root = os.path.join(self.base, "srv-notificator")
        # A checkout as root makes it: conf/, cert/ and venv/, root's, readable.
        os.makedirs(os.path.join(self.root, "venv", "bin"))
        os.symlink(
            os.path.join(os.path.dirname(sys.executable), "twistd"),
            os.path.join(self.root, "venv", "bin", "twistd"),
        )
        self.user = f"ntf-test-{os.getpid()}"
        self.steps = documented_steps()

    def substituted(self, step: str) -> str:
        return step.replace("/srv/notificator", self.root)

    def as_user(self, argv: list[str], **kw: Any) -> list[str]:
        """C{argv} run as the service user (as systemd's User=, Group=), no capability kept but one."""
        return [
            require_tool("setpriv", "util-linux", "CONTRIB TEST NOT RUN"),
            f"--reuid={self.user}",
            f"--regid={self.user}",
            "--clear-groups",
            "--inh-caps=-all,+dac_read_search",
            "--ambient-caps=-all,+dac_read_search",
            "--bounding-set=-all,+dac_read_search",
            "--no-new-privs",
            "--",
            *UNMEASURED,
            *argv,
        ]

    def run_step(self, step: str) -> subprocess.CompletedProcess[str]:
        """One documented command, with the install at this test's root and the user its own."""
        words = self.substituted(step).split()
        if words[:2] == ["sudo", "useradd"]:
            self.assertEqual(words[-1], "notificator")
            argv = words[1:-1] + [self.user]
            self.addCleanup(subprocess.run, ["userdel", self.user], capture_output=True, timeout=60)
            return subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if words[:3] == ["sudo", "install", "-d"]:
            argv = " ".join(words[1:]).replace(
                "-o notificator -g notificator", f"-o {self.user} -g {self.user}"
            )
            self.assertIn(self.user, argv)
            return subprocess.run(argv.split(), capture_output=True, text=True, timeout=60)
        m = re.match(rf"^cd ({re.escape(self.root)}) && sudo -u notificator (.*)$", " ".join(words))
        assert m is not None, step
        return subprocess.run(
            self.as_user(m.group(2).split()),
            cwd=m.group(1),
            capture_output=True,
            text=True,
            timeout=60,
            env={k: v for k, v in os.environ.items() if k != "NOTIFICATOR_ENV"},
        )

    def install_config(self, production: dict[str, Any]) -> None:
        """The operator's conf/ (production.json) and cert/ (the key readable by the user's group)."""
        conf = write_config(os.path.join(self.root, "conf"), {"production": production})
        os.chmod(conf, 0o755)
        for name in os.listdir(conf):
            os.chmod(os.path.join(conf, name), 0o644)

    def production(self, **more: Any) -> dict[str, Any]:
        return {
            "server": {
                "protocol": "http2",
                "host": "127.0.0.1",
                "port": free_port(),
                "certificates": {
                    "key": self.certs.key,
                    "cert": self.certs.cert,
                    "ca": self.certs.ca,
                },
                "log": {"level": "debug"},
            },
            "sse": {"heartbeat": False, "drainSeconds": 0.2},
            **more,
        }

    def start(self) -> tuple[subprocess.Popen[bytes], str, int]:
        """The unit's ExecStart in its WorkingDirectory, as the user, under the unit's sandbox."""
        service = read_service()
        argv = self.substituted(service["ExecStart"]).split()
        policy = write_policy(self, self.analyze)
        command = self.as_user(
            [sys.executable, os.path.join(PROJECT, "tests", "unitsandbox.py"), policy, "--", *argv]
        )
        env = {k: v for k, v in os.environ.items() if k != "NOTIFICATOR_ENV"}
        key, _, value = service["Environment"].partition("=")
        env[key] = value
        journal = os.path.join(self.base, "journal")
        with open(journal, "wb") as out:
            process = subprocess.Popen(
                command,
                cwd=self.substituted(service["WorkingDirectory"]),
                env=env,
                stdout=out,
                stderr=out,
            )
        self.addCleanup(lambda: process.poll() is None and process.kill())

        def read() -> str:
            with open(journal, encoding="utf-8", errors="replace") as f:
                return f.read()

        def listening() -> re.Match[str] | None:
            self.assertIsNone(process.poll(), read())
            return re.search(r"starting on (\d+)", read())

        m = wait_until(listening, 30, read)
        return process, journal, int(m.group(1))

    def stop(self, process: subprocess.Popen[bytes], journal: str) -> str:
        process.send_signal(signal.SIGTERM)
        status = process.wait(30)
        with open(journal, encoding="utf-8", errors="replace") as f:
            text = f.read()
        self.assertIn(status, (0, -signal.SIGTERM), text)
        self.assertIn("Server Shut Down", text)
        self.assertNotIn("Traceback", text)
        return text

    def test_documented_steps_are_the_same_everywhere(self) -> None:
        """Both operations guides give the unit header's commands, word for word."""
        self.assertEqual(len(self.steps), 6, self.steps)
        for guide in OPERATIONS:
            with open(os.path.join(PROJECT, guide), encoding="utf-8") as f:
                text = f.read()
            for step in self.steps:
                self.assertIn("    " + step + "\n", text, guide)

    def test_steps_then_the_hardened_service(self) -> None:
        """
        Without the install -d step the service user cannot start (one
        line naming the directory); with the steps the --check passes as
        that user, and the unit's ExecStart, under the unit's sandbox,
        serves HTTP/2 over TLS, keeps its history in var/ and its logs in
        log/, the user's, none readable by others, and stops on SIGTERM.
        """
        from tests.tlssupport import H2Client, client_context

        useradd, install, check = self.steps[:3]
        self.assertEqual(self.run_step(useradd).returncode, 0)
        self.install_config(self.production())
        # The certificates, as the operations guide asks: readable by the user.
        for path in (self.certs.key, self.certs.cert, self.certs.ca):
            shutil.chown(path, group=self.user)
            os.chmod(path, 0o640)
        os.chmod(os.path.dirname(self.certs.key), 0o755)
        os.chmod(self.root, 0o755)

        refused = self.run_step(check)
        self.assertEqual(refused.returncode, 1, refused.stdout)
        self.assertEqual(
            refused.stderr,
            f"notificator: configuration error: server.log.dir: {self.root}/log:"
            f" no write permission for user {self.user} (uid {pwd_uid(self.user)})\n",
        )
        self.assertEqual(self.run_step(install).returncode, 0)
        ok = self.run_step(check)
        self.assertEqual((ok.returncode, ok.stderr), (0, ""))
        # The last line says it is OK; before it, production's warnings (the
        # shipped config has no subscriber secret: the operator is told).
        *warnings, last = ok.stdout.splitlines()
        self.assertTrue(last.startswith("notificator: configuration OK (env production: "), last)
        for warning in warnings:
            self.assertTrue(warning.startswith("notificator: warning: config: "), warning)

        process, journal, port = self.start()
        h2 = H2Client(port, self.certs.ca)
        self.addCleanup(h2.close)
        self.assertEqual(h2.alpn, "h2")
        stream = h2.request("GET", "/sse/u1")
        h2.pump(lambda: bool(h2.named(stream, "connect")))
        https = http.client.HTTPSConnection(
            "localhost", port, timeout=10, context=client_context(self.certs.ca, ["http/1.1"])
        )
        https.request(
            "POST",
            "/webNotification",
            "id=notify_u1&data=1",
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        self.assertEqual(json.loads(https.getresponse().read())["delivered"], 1)
        https.close()
        h2.pump(lambda: bool(h2.named(stream, "notify")))
        h2.close()
        self.stop(process, journal)

        uid = pwd_uid(self.user)
        for path in ("log/access.log", "log/sse.log", "var/history/history.log"):
            st = os.stat(os.path.join(self.root, path))
            self.assertEqual((st.st_uid, st.st_mode & 0o007), (uid, 0), path)
        with open(os.path.join(self.root, "log", "access.log"), encoding="utf-8") as f:
            self.assertIn('"POST /webNotification HTTP/1.1" 200 ', f.read())

    def test_cluster_mode_under_the_sandbox(self) -> None:
        """In cluster mode the sandboxed server reaches Redis over TCP and delivers through it."""
        from tests.support import RedisServer
        from tests.tlssupport import H2Client

        redis = RedisServer(self).start()
        useradd, install, check = self.steps[:3]
        self.assertEqual(self.run_step(useradd).returncode, 0)
        self.assertEqual(self.run_step(install).returncode, 0)
        production = self.production(cluster={"redis": redis.url, "node": "n1"})
        self.install_config(production)
        for path in (self.certs.key, self.certs.cert, self.certs.ca):
            shutil.chown(path, group=self.user)
            os.chmod(path, 0o640)
        process, journal, port = self.start()
        h2 = H2Client(port, self.certs.ca)
        self.addCleanup(h2.close)
        wait_until(lambda: json.loads(_health(h2))["status"] == "ok", 10, "/health ok (Redis up)")
        stream = h2.request("GET", "/sse/u1")
        h2.pump(lambda: bool(h2.named(stream, "connect")))
        publish = h2.request(
            "POST", "/webNotification", b"id=notify_u1&data=2",
            {"content-type": "application/x-www-form-urlencoded"},
        )  # fmt: skip
        h2.pump(lambda: publish in h2.ended and bool(h2.named(stream, "notify")))
        self.assertEqual(h2.headers[publish][":status"], "200")
        self.assertEqual(h2.named(stream, "notify")[0]["data"], "2")
        self.assertGreater(int(redis.command("DBSIZE")), 0)
        h2.close()
        self.stop(process, journal)

    def test_workers_under_the_sandbox(self) -> None:
        """
        server.workers 2 under the unit's sandbox: the supervisor runs its
        private redis-server in var/redis and two workers; a stream and a
        publish work across them; the unit's ExecReload signal replaces the
        workers; its KillSignal to the supervisor alone (KillMode=mixed)
        stops the workers and Redis, and nothing is left.
        """
        from tests.support import redis_server_path
        from tests.tlssupport import H2Client

        redis_server_path()
        useradd, install, check = self.steps[:3]
        self.assertEqual(self.run_step(useradd).returncode, 0)
        self.assertEqual(self.run_step(install).returncode, 0)
        production = self.production()
        production["server"]["workers"] = 2
        self.install_config(production)
        for path in (self.certs.key, self.certs.cert, self.certs.ca):
            shutil.chown(path, group=self.user)
            os.chmod(path, 0o640)
        checked = self.run_step(check)
        self.assertEqual(checked.returncode, 0, checked.stdout + checked.stderr)
        self.assertIn("server.workers 2: 2 workers and a private redis-server", checked.stdout)
        process, journal, port = self.start()

        def read() -> str:
            with open(journal, encoding="utf-8", errors="replace") as f:
                return f.read()

        wait_until(lambda: "all 2 workers ready" in read(), 60, read)
        h2 = H2Client(port, self.certs.ca)
        self.addCleanup(h2.close)
        stream = h2.request("GET", "/sse/u1")
        h2.pump(lambda: bool(h2.named(stream, "connect")))
        for n in (1, 2, 3):
            sid = h2.request(
                "POST", "/webNotification", f"id=notify_u1&data={n}".encode(),
                {"content-type": "application/x-www-form-urlencoded"},
            )  # fmt: skip
            h2.pump(lambda sid=sid: sid in h2.ended)
            self.assertEqual(h2.headers[sid][":status"], "200")
        h2.pump(lambda: len(h2.named(stream, "notify")) == 3)
        self.assertEqual([e["data"] for e in h2.named(stream, "notify")], ["1", "2", "3"])
        h2.close()
        service = read_service()
        self.assertEqual(service["ExecReload"].split()[:2], ["/bin/kill", "-HUP"])
        process.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload done: 2 workers replaced" in read(), 60, read)
        pids = [
            int(p) for p in re.findall(r"(?:worker \d+|redis-server) started \(pid (\d+)", read())
        ]
        text = self.stop(process, journal)
        self.assertRegex(text, r"redis-server \(pid \d+\) stopped: exit status 0")
        for pid in pids:
            wait_until(lambda pid=pid: not os.path.exists(f"/proc/{pid}"), 10, f"pid {pid} gone")
        self.assertTrue(os.path.exists(os.path.join(self.root, "var", "redis", "appendonlydir")))
        with open(os.path.join(self.root, "log", "access.log"), encoding="utf-8") as f:
            self.assertIn('"POST /webNotification HTTP/2" 200 ', f.read())


def _health(h2: Any) -> bytes:
    sid = h2.request("GET", "/health")
    h2.pump(lambda: sid in h2.ended)
    return bytes(h2.data[sid])


def pwd_uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid


def read_service() -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT, encoding="utf-8")
    return dict(parser["Service"])
