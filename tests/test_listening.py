"""
Tests for L{notificator.listening}: every interface means IPv4 and IPv6,
and a port that cannot be bound stops start-up with one line, in the
foreground and daemonized.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
from typing import Any

from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import ServerFactory
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from notificator import listening, tap
from tests.support import (
    PROJECT,
    FakeSocket,
    Server,
    free_port,
    not_here,
    taken_port,
    twistd_command,
    write_config,
)


class IPv6ModeTests(SynchronousTestCase):
    def test_dual_stack(self) -> None:
        """An IPv6 socket that takes IPv4 too: one listener on ::."""
        probe = FakeSocket(v6only=0)
        mode = listening.ipv6_mode(lambda *a: probe)
        self.assertEqual(mode, listening.DUAL)
        self.assertEqual(listening.all_interfaces(mode), ["::"])
        self.assertTrue(probe.closed)

    def test_v6only_hosts_get_two_listeners(self) -> None:
        """Where IPv6 sockets are IPv6-only, 0.0.0.0 and :: side by side."""
        mode = listening.ipv6_mode(lambda *a: FakeSocket(v6only=1))
        self.assertEqual(mode, listening.SEPARATE)
        self.assertEqual(listening.all_interfaces(mode), ["0.0.0.0", "::"])

    def test_no_ipv6_falls_back_to_ipv4(self) -> None:
        """A host without IPv6 listens on 0.0.0.0."""

        def no_ipv6(*args: Any) -> Any:
            raise OSError(97, "Address family not supported by protocol")

        mode = listening.ipv6_mode(no_ipv6)
        self.assertEqual(mode, listening.IPV4_ONLY)
        self.assertEqual(listening.all_interfaces(mode), ["0.0.0.0"])

    def test_this_host(self) -> None:
        """The real probe answers one of the three."""
        self.assertIn(listening.ipv6_mode(), (listening.DUAL, listening.SEPARATE, "ipv4"))


class DescriptionTests(SynchronousTestCase):
    def test_split(self) -> None:
        """Type, positional and keyword arguments, with backslash escapes."""
        self.assertEqual(
            listening.split_description("TCP:3000:interface=\\:\\:1:backlog=5"),
            ("tcp", ["3000"], {"interface": "::1", "backlog": "5"}),
        )
        self.assertEqual(
            listening.split_description("unix:/tmp/a\\=b:mode=660"),
            ("unix", ["/tmp/a=b"], {"mode": "660"}),
        )

    def test_arguments(self) -> None:
        """Arguments by name: positional ones named as the type's parser names them."""
        cases = {
            "tcp:3000:127.0.0.1:7": (
                "tcp",
                {"port": "3000", "interface": "127.0.0.1", "backlog": "7"},
            ),
            "TCP:3000:backlog=5": ("tcp", {"port": "3000", "backlog": "5"}),
            "tcp6:3000:7:\\:\\:1": ("tcp6", {"port": "3000", "backlog": "7", "interface": "::1"}),
            "unix:/run/a\\:b:660": ("unix", {"address": "/run/a:b", "mode": "660"}),
            "ssl:3443:k.pem:c.pem": (
                "ssl",
                {"port": "3443", "privateKey": "k.pem", "certKey": "c.pem"},
            ),
            "https:3443:k:c:a:h2:\\:\\:1:9:tickets=off": (
                "https",
                {
                    "port": "3443",
                    "privateKey": "k",
                    "certKey": "c",
                    "extraCertChain": "a",
                    "alpn": "h2",
                    "interface": "::1",
                    "backlog": "9",
                    "tickets": "off",
                },
            ),
            "systemd:domain=INET:index=0": ("systemd", {"domain": "INET", "index": "0"}),
            "systemd:INET:0": ("systemd", {}),
        }
        for description, expected in cases.items():
            self.assertEqual(listening.arguments(description), expected, description)

    def test_https_arguments_are_https_listeners(self) -> None:
        """https:'s arguments in their places are those of the endpoint's parser (notificator.tls)."""
        import inspect

        from notificator import tls

        # (tls.https_endpoint hands its arguments to https_listener as given.)
        names = list(inspect.signature(tls.https_listener).parameters)
        self.assertEqual(names[0], "reactor")
        values = [f"v{i}" for i in range(1, len(names))]
        kind, named = listening.arguments(":".join(["https", *values]))
        self.assertEqual(named, dict(zip(names[1:], values, strict=True)))

    def test_twisted_parsers_agree(self) -> None:
        """
        What arguments() names a positional argument is what Twisted's own
        parser makes of it: each description listens on a MemoryReactor
        with the port, interface, backlog (and unix mode) read here.
        """
        from tests.tlssupport import Certs

        certs = Certs(self)
        key, cert = (c.replace(":", "\\:") for c in (certs.key, certs.cert))
        factory = ServerFactory()
        for description, recorded in [
            ("tcp:3001:127.0.0.1:7", lambda r: r.tcpServers[-1]),
            ("tcp6:3002:8:\\:\\:1", lambda r: r.tcpServers[-1]),
            (f"ssl:3003:{key}:{cert}:TLS_METHOD:127.0.0.1:9", lambda r: r.sslServers[-1]),
        ]:
            reactor = MemoryReactor()
            serverFromString(reactor, description).listen(factory)
            kind, named = listening.arguments(description)
            port, _, *rest = recorded(reactor)
            self.assertEqual(port, int(named["port"]), description)
            self.assertEqual((rest[-2], rest[-1]), (int(named["backlog"]), named["interface"]))
            self.assertEqual(listening.tcp_address(description), (named["interface"], port))
        reactor = MemoryReactor()
        path = os.path.abspath(self.mktemp())
        serverFromString(reactor, f"unix:{path}:600:11").listen(factory)
        kind, named = listening.arguments(f"unix:{path}:600:11")
        address, _, backlog, mode, _ = reactor.unixServers[-1]
        self.assertEqual((address, backlog, mode), (named["address"], 11, 0o600))

    def test_tcp_address(self) -> None:
        """The interface and port a TCP-based description binds."""
        cases = {
            "tcp:3000": ("", 3000),
            "tcp:port=3000:interface=127.0.0.1": ("127.0.0.1", 3000),
            "tcp:3000:127.0.0.1": ("127.0.0.1", 3000),
            "tcp6:3001": ("::", 3001),
            "tcp6:port=3001:interface=\\:\\:1": ("::1", 3001),
            "tcp6:3001:50:\\:\\:1": ("::1", 3001),
            "ssl:3443:privateKey=k": ("", 3443),
            "https:port=3443:interface=\\:\\::privateKey=k:alpn=h2": ("::", 3443),
            "unix:/tmp/s": None,
            "tcp:notaport": None,
            "tcp:99999": None,
            "tcp": None,
        }
        for description, expected in cases.items():
            self.assertEqual(listening.tcp_address(description), expected, description)


class ReadersTests(SynchronousTestCase):
    """tap's readers of descriptions go through the one parser (listening.arguments)."""

    def test_backlog_given_by_place_is_kept(self) -> None:
        """
        A backlog set by keyword or by place is kept, and one is added
        where none is set (an escaped C{\\:backlog=} in a path sets none):
        the real parsers take each result.
        """
        factory = ServerFactory()
        path = os.path.abspath(self.mktemp())
        for description, backlog in [
            ("tcp:3001:127.0.0.1:10", 10),
            ("tcp6:3002:11", 11),
            ("tcp:3003:backlog=12", 12),
            ("tcp:3004", tap.LISTEN_BACKLOG),
        ]:
            reactor = MemoryReactor()
            serverFromString(reactor, tap.with_backlog(description)).listen(factory)
            self.assertEqual(reactor.tcpServers[-1][2], backlog, description)
        escaped = f"unix:{path}\\:backlog=5"
        self.assertEqual(tap.with_backlog(escaped), f"{escaped}:backlog={tap.LISTEN_BACKLOG}")
        reactor = MemoryReactor()
        serverFromString(reactor, tap.with_backlog(f"unix:{path}:600:13")).listen(factory)
        self.assertEqual(reactor.unixServers[-1][2], 13)

    def test_default_node_port(self) -> None:
        """The node's default name takes the port a TCP listener binds, not digits elsewhere."""
        self.assertTrue(tap.default_node(["unix:/run/n\\:port=99", "tcp:3001"]).endswith(":3001"))
        self.assertTrue(tap.default_node(["tcp:3002:127.0.0.1:5"]).endswith(":3002"))
        self.assertTrue(tap.default_node(["unix:1234"]).endswith(f":pid{os.getpid()}"))


class UnprivilegedPortTests(SynchronousTestCase):
    def test_read_from_the_kernel(self) -> None:
        """net.ipv4.ip_unprivileged_port_start as the kernel says it; 1024 where unreadable."""
        path = self.mktemp()
        with open(path, "w", encoding="ascii") as f:
            f.write("443\n")
        self.assertEqual(listening.first_unprivileged_port(path), 443)
        self.assertEqual(listening.first_unprivileged_port(path + ".missing"), 1024)
        with open(path, "w", encoding="ascii") as f:
            f.write("x\n")
        self.assertEqual(listening.first_unprivileged_port(path), 1024)
        if os.path.exists(listening.UNPRIVILEGED_PORT_START):
            with open(listening.UNPRIVILEGED_PORT_START, encoding="ascii") as f:
                expected = int(f.read())
            self.assertEqual(listening.first_unprivileged_port(), expected)


class CheckFreeTests(SynchronousTestCase):
    def listener(self, family: int = socket.AF_INET, host: str = "127.0.0.1") -> int:
        sock = socket.socket(family, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        sock.bind((host, 0))
        sock.listen(1)
        return int(sock.getsockname()[1])

    def test_port_in_use(self) -> None:
        """A port another socket listens on: one line with where, the endpoint and why."""
        port = self.listener()
        description = f"tcp:port={port}:interface=127.0.0.1"
        e = self.assertRaises(listening.PortUnavailable, listening.check_free, description)
        self.assertEqual(
            str(e),
            f"cannot listen on 127.0.0.1 port {port} ({description}): Address already in use:"
            " another program is listening there (stop it, or choose another port)",
        )

    def test_free_port_passes_and_stays_free(self) -> None:
        """A free port passes, and is free again afterwards (the probe is closed)."""
        port = self.listener()
        # Free a port we know, then check it twice.
        free = free_port()
        for _ in range(2):
            listening.check_free(f"tcp:{free}:interface=127.0.0.1")
        self.assertNotEqual(port, free)

    def test_dual_stack_sees_an_ipv4_listener(self) -> None:
        """Where :: takes IPv4 too, a listener on 127.0.0.1 makes :: unavailable."""
        if listening.ipv6_mode() != listening.DUAL:
            raise SkipTest("this host's IPv6 sockets are not dual-stack")
        port = self.listener()
        e = self.assertRaises(listening.PortUnavailable, listening.check_free, f"tcp6:port={port}")
        self.assertIn(f"every interface (::) port {port}", str(e))

    def test_reasons(self) -> None:
        """Privileged ports (with workers: the capability, not C{--uid}) and foreign addresses are named as such."""
        denied = OSError(13, "Permission denied")
        e = self.assertRaises(
            listening.PortUnavailable,
            listening.check_free,
            "tcp:443",
            lambda *a: FakeSocket(bind_error=denied),
        )
        self.assertEqual(
            str(e),
            "cannot listen on every IPv4 interface (0.0.0.0) port 443 (tcp:443):"
            " Permission denied: ports below 1024 need root (start as root with --uid,"
            " or use a higher port)",
        )
        e = self.assertRaises(
            listening.PortUnavailable,
            listening.check_free,
            "tcp:443",
            lambda *a: FakeSocket(bind_error=denied),
            workers=True,
        )
        self.assertEqual(
            str(e),
            "cannot listen on every IPv4 interface (0.0.0.0) port 443 (tcp:443):"
            " Permission denied: ports below 1024 need CAP_NET_BIND_SERVICE with"
            " server.workers (start as the service user with it, docs/operations.rst"
            ' "Workers and ports below 1024", or use a higher port)',
        )
        e = self.assertRaises(
            listening.PortUnavailable,
            listening.check_free,
            "tcp:3000:interface=10.9.9.9",
            lambda *a: FakeSocket(bind_error=OSError(99, "Cannot assign requested address")),
        )
        self.assertIn("10.9.9.9 port 3000", str(e))
        self.assertIn("this host has no such address", str(e))

    def test_probe_binds_like_twisted(self) -> None:
        """SO_REUSEADDR (as Twisted's ports), the right family, and closed after."""
        made: list[tuple[Any, FakeSocket]] = []

        def make(family: int, kind: int) -> FakeSocket:
            s = FakeSocket()
            made.append((family, s))
            return s

        listening.check_free("tcp6:port=3001:interface=\\:\\:1", make)
        [(family, sock)] = made
        self.assertEqual(family, socket.AF_INET6)
        self.assertEqual(sock.bound, ("::1", 3001))
        self.assertEqual(sock.options, [(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)])
        self.assertTrue(sock.closed)

    def test_port_zero_and_other_types_are_not_checked(self) -> None:
        """Port 0 (any free port) and non-TCP descriptions make no socket."""

        def make(*args: Any) -> Any:
            raise AssertionError("no socket expected")

        for description in ("tcp:0", "unix:/tmp/x", "tcp:port=0:interface=127.0.0.1"):
            listening.check_free(description, make)


class MakeServiceTests(SynchronousTestCase):
    def test_descriptions(self) -> None:
        """--listen wins; else server.host "" is every interface of this host."""
        conf = os.path.join(PROJECT, "conf")
        options = tap.Options()
        options.parseOptions(["--config", conf, "--env", "production", "--listen", "tcp:1"])
        self.assertEqual(tap.descriptions(options), ["tcp:1"])
        options = tap.Options()
        conf = write_config(self.mktemp(), {"default": {}, "x": {}})
        options.parseOptions(["--config", conf, "--env", "x"])
        interfaces = listening.all_interfaces(listening.ipv6_mode())
        self.assertEqual(
            tap.descriptions(options),
            [f"tcp:port=3000{tap_interface(i)}" for i in interfaces],
        )


def tap_interface(host: str) -> str:
    return ":interface=" + host.replace(":", "\\:")


class EndToEndTests(SynchronousTestCase):
    def test_port_in_use_foreground(self) -> None:
        """twistd -n with a port in use: one line and exit status 1, no traceback."""
        port = taken_port(self)
        server = Server(self, local={}, listen=f"tcp:port={port}:interface=127.0.0.1")
        code, output = server.run_to_exit()
        self.assertEqual(code, 1, output)
        self.assertEqual(
            output,
            f"notificator: cannot listen on 127.0.0.1 port {port}"
            f" (tcp:port={port}:interface=127.0.0.1): Address already in use:"
            " another program is listening there (stop it, or choose another port)\n",
        )

    def test_port_in_use_daemonized(self) -> None:
        """twistd daemonizing with a port in use: the same line, whole."""
        port = taken_port(self)
        base = os.path.abspath(self.mktemp())
        conf = write_config(os.path.join(base, "conf"), {"default": {}, "x": {}})
        pidfile = os.path.join(base, "twistd.pid")
        result = subprocess.run(
            [
                *twistd_command(),
                "--pidfile",
                pidfile,
                "--logfile",
                os.path.join(base, "twistd.log"),
                "notificator",
                "--config",
                conf,
                "--env",
                "x",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 1, result.stdout)
        self.assertEqual(
            result.stdout,
            f"notificator: cannot listen on 127.0.0.1 port {port}"
            f" (tcp:{port}:interface=127.0.0.1): Address already in use:"
            " another program is listening there (stop it, or choose another port)\n",
        )
        self.assertFalse(os.path.exists(pidfile))

    def test_empty_host_accepts_ipv4_and_ipv6(self) -> None:
        """server.host "" listens on every interface: 127.0.0.1 and ::1 both reach it."""
        if not socket.has_ipv6 or listening.ipv6_mode() == listening.IPV4_ONLY:
            not_here('IPV6 TEST NOT RUN: this host has no IPv6 (server.host "" untested)')
        server = Server(self, local={"server": {"host": "", "port": 0}}, listen=None).start()
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.settimeout(10)
                sock.connect((host, server.port))
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                reply = b""
                while chunk := sock.recv(4096):
                    reply += chunk
            self.assertTrue(reply.startswith(b"HTTP/1.1 200 "), (host, reply[:100]))
            self.assertIn(b'"status": "ok"', reply)

    def test_empty_host_over_http2(self) -> None:
        """With TLS too (http2): "" takes verified handshakes on 127.0.0.1 and ::1, h2 by ALPN."""
        if not socket.has_ipv6 or listening.ipv6_mode() == listening.IPV4_ONLY:
            not_here('IPV6 TEST NOT RUN: this host has no IPv6 (server.host "" untested)')
        from tests.tlssupport import Certs

        certs = Certs(self)
        local = {
            "server": {
                "protocol": "http2",
                "host": "",
                "port": 0,
                "certificates": {"key": certs.key, "cert": certs.cert, "ca": certs.ca},
            }
        }
        server = Server(self, local=local, listen=None).start()
        context = ssl.create_default_context(cafile=certs.ca)
        context.set_alpn_protocols(["h2", "http/1.1"])
        for host in ("127.0.0.1", "::1"):
            with socket.create_connection((host, server.port), timeout=10) as raw:
                with context.wrap_socket(raw, server_hostname="localhost") as tls:
                    self.assertEqual(tls.selected_alpn_protocol(), "h2", host)
