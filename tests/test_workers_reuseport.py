"""
Tests for L{notificator.workers.reuseport}: descriptions read as Twisted
reads them, sockets with C{SO_REUSEPORT} that several listeners (in one
process and in several) share, adopted by the reactor for plain TCP and
for TLS with ALPN (HTTP/2 and HTTP/1.1, with a real TLS client), over IPv6,
under the fast channel, and a stop that serves what is queued instead of
resetting it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import ssl
import subprocess
import sys
from collections import Counter
from functools import partial
from typing import Any

from twisted.internet import reactor, tcp
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, connectProtocol
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import resource, server

from notificator import listening
from notificator.http import fast as http_fast
from notificator.tls import TLSFileError
from notificator.workers import reuseport
from notificator.workers.reuseport import ReusePortService
from tests.support import PROJECT, free_port, not_here
from tests.tlssupport import Certs, H2Client, client_context


class ParseTests(SynchronousTestCase):
    """Descriptions mean what they mean to Twisted's parsers and to the https: type."""

    def test_same_as_twisted(self) -> None:
        """Port, interface and backlog, by keyword and by position, as Twisted reads them."""
        from twisted.internet.endpoints import serverFromString

        for description in (
            "tcp:3000",
            "tcp:port=3000:interface=127.0.0.1:backlog=7",
            "tcp:3000:127.0.0.1:9",
            "tcp6:3000",
            "tcp6:3000:12",
            "tcp6:port=3000:interface=\\:\\:1",
            "tcp6:port=3000:interface=127.0.0.1",
        ):
            memory = MemoryReactor()
            serverFromString(memory, description).listen(server.Site(resource.Resource()))
            [(port, _, backlog, interface)] = memory.tcpServers
            address = reuseport.parse(description, memory)
            self.assertEqual(
                (address.port, address.interface, address.backlog),
                (port, interface, backlog),
                description,
            )
            self.assertIsNone(address.tls)

    def test_family_from_the_interface(self) -> None:
        """An IPv6 interface listens on AF_INET6, any other on AF_INET (as tcp.Port)."""
        cases = {
            "tcp:3000": socket.AF_INET,
            "tcp6:3000": socket.AF_INET6,
            "tcp:port=3000:interface=\\:\\:": socket.AF_INET6,
            "tcp6:port=3000:interface=127.0.0.1": socket.AF_INET,
        }
        for description, family in cases.items():
            self.assertEqual(reuseport.parse(description, reactor).family, family, description)

    def test_https(self) -> None:
        """An https: description gives the endpoint's TLS: files, ALPN, tickets."""
        certs = Certs(self)
        address = reuseport.parse(
            f"https:port=3443:interface=127.0.0.1:privateKey={certs.key}:certKey={certs.cert}"
            f":extraCertChain={certs.ca}:alpn=h2,http/1.1:tickets=off:backlog=9",
            reactor,
        )
        self.assertEqual((address.port, address.interface, address.backlog), (3443, "127.0.0.1", 9))
        assert address.tls is not None
        self.assertEqual(address.tls.creator.protocols, (b"h2", b"http/1.1"))
        self.assertFalse(address.tls.creator.settings.tickets)
        self.assertEqual(len(address.tls.creator.settings.chain), 1)

    def test_refused(self) -> None:
        """Other types, bad numbers and unknown arguments: one line, a ValueError."""
        cases = {
            "unix:/tmp/x.sock": "'unix:/tmp/x.sock': a worker listens on tcp:, tcp6: or https:"
            " descriptions, not unix:",
            "ssl:443": "'ssl:443': a worker listens on tcp:, tcp6: or https: descriptions, not ssl:",
            "tcp:port=x": "tcp: port and backlog must be integers, got 'x', '50'",
            "tcp:3000:bogus=1": "tcp: got an unexpected keyword argument 'bogus'",
            "tcp6:70000": "tcp6: port 70000 is not between 0 and 65535",
            "https:port=3443:privateKey=/nonexistent/key.pem": "/nonexistent/key.pem: cannot read:"
            " No such file or directory",
        }
        for description, message in cases.items():
            e = self.assertRaises(ValueError, reuseport.parse, description, reactor)
            self.assertEqual(str(e), message, description)
        e = self.assertRaises(
            ValueError, reuseport.parse, "https:port=1:privateKey=/nonexistent", reactor
        )
        self.assertIsInstance(e, TLSFileError)


class SocketTests(SynchronousTestCase):
    """The socket: SO_REUSEPORT shared by its own kind only, bound as Twisted binds."""

    def open(self, description: str) -> socket.socket:
        sock = reuseport.open_socket(reuseport.parse(description, reactor))
        self.addCleanup(sock.close)
        return sock

    def test_options(self) -> None:
        """SO_REUSEPORT and SO_REUSEADDR, listening, non-blocking, closed on exec."""
        sock = self.open("tcp:port=0:interface=127.0.0.1:backlog=5")
        self.assertTrue(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT))
        self.assertTrue(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR))
        self.assertTrue(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
        self.assertFalse(sock.getblocking())
        self.assertTrue(fcntl.fcntl(sock.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC)
        self.assertEqual(sock.getsockname()[0], "127.0.0.1")

    def test_shared_with_its_own_kind_only(self) -> None:
        """
        Two such sockets share a port; a socket without SO_REUSEPORT (another
        program, or the pre-flight's probe) finds it in use, and a port that
        another program holds cannot be shared.
        """
        port = free_port()
        description = f"tcp:port={port}:interface=127.0.0.1"
        self.open(description)
        self.open(description)
        e = self.assertRaises(listening.PortUnavailable, listening.check_free, description)
        self.assertIn("Address already in use", str(e))

        other = socket.socket()
        self.addCleanup(other.close)
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        taken = f"tcp:port={other.getsockname()[1]}:interface=127.0.0.1"
        e = self.assertRaises(CannotListenError, self.open, taken)
        self.assertEqual(e.socketError.errno, errno.EADDRINUSE)

    def test_ipv6_only_as_the_host_has_it(self) -> None:
        """IPV6_V6ONLY is left as a new socket has it here, as Twisted leaves it."""
        if not socket.has_ipv6 or listening.ipv6_mode() == listening.IPV4_ONLY:
            not_here("IPV6 TEST NOT RUN: this host has no IPv6 (reuseport's tcp6: untested)")
        with socket.socket(socket.AF_INET6) as fresh:
            default = fresh.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
        sock = self.open("tcp6:port=0")
        self.assertEqual(sock.family, socket.AF_INET6)
        self.assertEqual(sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY), default)


class _Fetch(Protocol):
    """Sends one HTTP/1.0 GET, fires C{done} with everything the server sent."""

    def __init__(self) -> None:
        self.done: Deferred[bytes] = Deferred()
        self.data = b""

    def connectionMade(self) -> None:
        self.transport.write(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure) -> None:
        self.done.callback(self.data)


@inlineCallbacks
def fetch(port: int, host: str = "127.0.0.1") -> Any:
    """The body of C{GET /} from C{host:port}, over a connection of its own."""
    kind = TCP6ClientEndpoint if ":" in host else TCP4ClientEndpoint
    protocol = _Fetch()
    yield connectProtocol(kind(reactor, host, port, timeout=10), protocol)
    data = yield protocol.done
    return data.partition(b"\r\n\r\n")[2]


class Named(resource.Resource):
    """Answers with its name, and how it was asked (protocol, channel)."""

    isLeaf = True

    def __init__(self, name: bytes) -> None:
        super().__init__()
        self.name = name

    def render_GET(self, request: server.Request) -> bytes:
        ch = request.channel
        direct = (
            isinstance(ch.transport, tcp.Server) and getattr(ch, "_socket", None) is ch.transport
        )
        return b"%s %s %s" % (self.name, request.clientproto, b"direct" if direct else b"-")


class FailingOnce(server.Site):
    """A Site whose next protocol, once armed, cannot be built."""

    armed = False

    def buildProtocol(self, addr: Any) -> Any:
        if self.armed:
            self.armed = False
            raise RuntimeError("no protocol for you")
        return super().buildProtocol(addr)


def site(name: bytes) -> server.Site:
    return server.Site(Named(name))


class AdoptedTests(TestCase):
    """Listeners adopted by the real reactor, with real clients."""

    timeout = 60

    def listen(self, description: str, factory: Any) -> ReusePortService:
        service = ReusePortService(reactor, description, factory)
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        return service

    @inlineCallbacks
    def test_two_listeners_in_one_process_both_accept(self) -> Any:
        """Two sockets on one port in one process: the kernel gives each connections."""
        port = free_port()
        description = f"tcp:port={port}:interface=127.0.0.1"
        self.listen(description, site(b"A"))
        self.listen(description, site(b"B"))
        answers = []
        for _ in range(40):
            body = yield fetch(port)
            answers.append(body.split()[0])
        counts = Counter(answers)
        self.assertEqual(set(counts), {b"A", b"B"}, counts)

    @inlineCallbacks
    def test_stop_serves_what_is_queued(self) -> Any:
        """
        Connections the kernel had queued on a listener that stops are
        served (the socket leaves the port's group only after they were
        taken), not reset; the other listener goes on.
        """
        port = free_port()
        description = f"tcp:port={port}:interface=127.0.0.1"
        a = self.listen(description, site(b"A"))
        self.listen(description, site(b"B"))
        # The reactor stops accepting on A: what comes for A waits in its queue.
        assert a.port is not None
        a.port.stopReading()  # type: ignore[attr-defined]
        clients = []
        for _ in range(24):
            client = socket.create_connection(("127.0.0.1", port), timeout=10)
            self.addCleanup(client.close)
            client.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            clients.append(client)
        yield a.stopService()
        self.assertIsNone(a.port)

        def read_all() -> list[bytes]:
            answers = []
            for client in clients:
                data = b""
                while chunk := client.recv(4096):
                    data += chunk
                answers.append(data.partition(b"\r\n\r\n")[2].split()[0])
            return answers

        answers = yield deferToThread(read_all)
        counts = Counter(answers)
        self.assertEqual(sum(counts.values()), 24)
        self.assertTrue(counts[b"A"] and counts[b"B"], counts)
        # And B alone serves the port now.
        body = yield fetch(port)
        self.assertTrue(body.startswith(b"B "), body)

    @inlineCallbacks
    def test_stop_serves_the_rest_when_one_fails(self) -> Any:
        """A queued connection whose protocol cannot be built is logged; the rest are served."""
        port = free_port()
        description = f"tcp:port={port}:interface=127.0.0.1"
        failing = FailingOnce(Named(b"A"))
        a = self.listen(description, failing)
        self.listen(description, site(b"B"))
        assert a.port is not None
        a.port.stopReading()  # type: ignore[attr-defined]
        clients = []
        for _ in range(24):
            client = socket.create_connection(("127.0.0.1", port), timeout=10)
            self.addCleanup(client.close)
            client.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            clients.append(client)
        failing.armed = True
        yield a.stopService()

        def read_all() -> list[bytes]:
            answers = []
            for client in clients:
                data = b""
                try:
                    while chunk := client.recv(4096):
                        data += chunk
                except ConnectionResetError:
                    pass
                answers.append((data.partition(b"\r\n\r\n")[2].split() or [b"none"])[0])
            return answers

        counts = Counter((yield deferToThread(read_all)))
        self.assertEqual(counts[b"none"], 1, counts)
        self.assertTrue(counts[b"A"] and counts[b"B"], counts)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    @inlineCallbacks
    def test_stopped_listener_closes_the_port(self) -> Any:
        """The last listener stopped: the port is closed (connections refused)."""
        service = self.listen("tcp:port=0:interface=127.0.0.1", site(b"A"))
        assert service.port is not None
        port = service.port.getHost().port
        body = yield fetch(port)
        self.assertTrue(body.startswith(b"A HTTP/1.0"), body)
        yield service.stopService()
        with socket.socket() as probe:
            self.assertEqual(probe.connect_ex(("127.0.0.1", port)), errno.ECONNREFUSED)

    def test_privileged_start_listens(self) -> None:
        """It listens in privilegedStartService (before --uid), once."""
        service = ReusePortService(reactor, "tcp:port=0:interface=127.0.0.1", site(b"A"))
        service.privilegedStartService()
        self.addCleanup(service.stopService)
        port = service.port
        self.assertIsNotNone(port)
        service.startService()
        self.assertIs(service.port, port)

    @inlineCallbacks
    def test_https_alpn(self) -> Any:
        """
        TLS through an adopted port with a real client (Python's ssl): ALPN
        h2 makes the Site speak HTTP/2, http/1.1 (or no ALPN) HTTP/1.1.
        """
        certs = Certs(self)
        port = free_port()
        description = (
            f"https:port={port}:interface=127.0.0.1:privateKey={certs.key}"
            f":certKey={certs.cert}:extraCertChain={certs.ca}:alpn=h2,http/1.1"
        )
        self.listen(description, site(b"A"))
        self.listen(description, site(b"B"))

        def h2() -> tuple[str | None, bytes]:
            client = H2Client(port, certs.ca)
            try:
                stream = client.request("GET", "/")
                client.pump(lambda: stream in client.ended)
                return client.alpn, client.data[stream]
            finally:
                client.close()

        def http11(offer: list[str]) -> tuple[str | None, bytes]:
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            with client_context(certs.ca, offer).wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
                return s.selected_alpn_protocol(), data.partition(b"\r\n\r\n")[2]

        alpn, body = yield deferToThread(h2)
        self.assertEqual(alpn, "h2")
        self.assertRegex(body, rb"^[AB] HTTP/2 -$")
        alpn, body = yield deferToThread(http11, ["http/1.1"])
        self.assertEqual(alpn, "http/1.1")
        self.assertRegex(body, rb"^[AB] HTTP/1.1 -$")
        alpn, body = yield deferToThread(http11, [])
        self.assertIsNone(alpn)
        self.assertRegex(body, rb"^[AB] HTTP/1.1 -$")

        def untrusted() -> None:
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            context = ssl.create_default_context(cafile=certs.other_ca)
            with context.wrap_socket(raw, server_hostname="localhost"):
                pass

        yield self.assertFailure(deferToThread(untrusted), ssl.SSLCertVerificationError)

    @inlineCallbacks
    def test_ipv6(self) -> Any:
        """tcp6: on ::1, two listeners on one port, both reached over IPv6."""
        if not socket.has_ipv6 or listening.ipv6_mode() == listening.IPV4_ONLY:
            not_here("IPV6 TEST NOT RUN: this host has no IPv6 (reuseport's tcp6: untested)")
        first = self.listen("tcp6:port=0:interface=\\:\\:1", site(b"A"))
        assert first.port is not None
        port = first.port.getHost().port
        self.listen(f"tcp6:port={port}:interface=\\:\\:1", site(b"B"))
        answers = set()
        for _ in range(40):
            body = yield fetch(port, "::1")
            answers.add(body.split()[0])
        self.assertEqual(answers, {b"A", b"B"})

    @inlineCallbacks
    def test_dual_stack(self) -> Any:
        """Where :: takes IPv4 too (listening.DUAL), an adopted :: socket does as well."""
        if listening.ipv6_mode() != listening.DUAL:
            not_here("DUAL-STACK TEST NOT RUN: this host's IPv6 sockets do not take IPv4")
        service = self.listen("tcp6:port=0", site(b"A"))
        assert service.port is not None
        port = service.port.getHost().port
        for host in ("127.0.0.1", "::1"):
            body = yield fetch(port, host)
            self.assertTrue(body.startswith(b"A "), (host, body))

    @inlineCallbacks
    def test_fast_channel_writes_directly(self) -> Any:
        """
        The adopted port's connections are tcp.Server, so the fast channel
        (notificator.http.fast) sends on their socket directly, as on a tcp:
        endpoint's.
        """
        writes = http_fast.WriteBatch(reactor)
        fast = site(b"A")
        fast.protocol = partial(http_fast.protocol, writes)
        service = self.listen("tcp:port=0:interface=127.0.0.1", fast)
        assert service.port is not None
        body = yield fetch(service.port.getHost().port)
        self.assertEqual(body, b"A HTTP/1.0 direct")


class ProcessesTests(SynchronousTestCase):
    """Two processes (tests/standin_worker.py) on one port."""

    def start_worker(self, port: int, slot: int) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "tests.standin_worker", "--slot", str(slot)]
        command += ["--listen", f"tcp:port={port}:interface=127.0.0.1", "--say", "listening"]
        env = {**os.environ, "PYTHONPATH": PROJECT}
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, cwd=PROJECT)
        self.addCleanup(process.wait, 30)
        self.addCleanup(lambda: process.poll() is None and process.terminate())
        assert process.stdout is not None
        self.assertEqual(process.stdout.readline(), b"listening\n")
        process.stdout.close()
        return process

    def ask(self, port: int) -> int:
        """The process id of the worker that answers a new connection."""
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        return int(data.partition(b"\r\n\r\n")[2].split()[1])

    def test_the_kernel_spreads_connections(self) -> None:
        """
        Two worker processes on one port: each gets a share of 200
        connections (under a binomial spread, fewer than 40 of 200 for
        either has a chance below 1e-17).
        """
        port = free_port()
        workers = {self.start_worker(port, 0).pid, self.start_worker(port, 1).pid}
        counts = Counter(self.ask(port) for _ in range(200))
        self.assertEqual(set(counts), workers, counts)
        self.assertGreaterEqual(min(counts.values()), 40, counts)

    def test_one_stops_the_other_serves(self) -> None:
        """A worker that stops leaves the port to the other."""
        port = free_port()
        staying = self.start_worker(port, 0)
        leaving = self.start_worker(port, 1)
        leaving.terminate()
        self.assertEqual(leaving.wait(30), 0)
        self.assertEqual({self.ask(port) for _ in range(20)}, {staying.pid})
