"""
Tests for L{notificator.app}: the core and the site as the server, the
tests and the benchmark build them.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from notificator import app, pidlock, services
from notificator.broker.local import LocalBroker
from notificator.events import Message
from notificator.http import connections, fast
from notificator.http.request import Request
from notificator.http.site import Site
from tests.support import config_with, parse_frames, write_config


def _loaded(testcase: SynchronousTestCase, doc: dict[str, Any]) -> Any:
    """The configuration of a C{default.json} holding C{doc}, as twistd loads it."""
    from twisted.python.filepath import FilePath

    from notificator import config

    conf = write_config(
        os.path.join(os.path.abspath(testcase.mktemp()), "conf"), {"default": doc, "x": {}}
    )
    return config.load(FilePath(conf), "x")


def _in(testcase: SynchronousTestCase, **sections: Any) -> Any:
    """The shipped configuration with C{sections}, its history kept in a new directory."""
    directory = os.path.abspath(testcase.mktemp())
    sse = {"history": {"directory": directory}, **sections.pop("sse", {})}
    return config_with(sse=sse, **sections)


class BuildCoreTests(SynchronousTestCase):
    def test_one_node_with_history_on_disk(self) -> None:
        """
        One node, the history on disk: a local broker with the journal, and
        the services in the order they must stop in reverse (the broker
        writes the history, then the directory's lock is released).
        """
        cfg = _in(self)
        core = app.build_core(cfg, MemoryReactorClock())
        self.assertIsInstance(core.broker, LocalBroker)
        self.assertIsNotNone(core.journal)
        self.assertIs(core.broker.journal, core.journal)
        lock, broker = core.services
        self.assertIsInstance(lock, pidlock.DirectoryLockService)
        self.assertEqual(lock.lock.directory, cfg.sse.history.directory)
        self.assertIs(broker, core.broker)

    def test_the_history_on_its_own_thread(self) -> None:
        """On a reactor that runs threads, the history's file work has a thread of its own."""
        from twisted.internet import reactor

        core = app.build_core(_in(self), reactor)
        lock, pool, broker = core.services
        self.assertIsInstance(pool, services.ThreadPoolService)
        self.assertEqual((pool.pool.min, pool.pool.max), (1, 1))
        self.assertIs(broker, core.broker)

    def test_lock_taken_by_the_caller(self) -> None:
        """A lock the caller took (makeService, before twistd daemonizes) is the one held."""
        cfg = _in(self)
        taken = pidlock.DirectoryLock(cfg.sse.history.directory)
        core = app.build_core(cfg, MemoryReactorClock(), lock=taken)
        self.assertIs(core.services[0].lock, taken)

    def test_no_history_on_disk(self) -> None:
        """In memory only, or without history: no journal, no lock, only the broker runs."""
        for sse in ({"history": {"directory": None}}, {"history": {"size": 0}}):
            core = app.build_core(config_with(sse=sse), MemoryReactorClock())
            self.assertIsNone(core.journal, sse)
            self.assertEqual(core.services, (core.broker,), sse)

    def test_cluster_mode(self) -> None:
        """cluster.redis: the Redis broker, its metrics in the registry, no journal nor lock."""
        from notificator.broker.redis import RedisBroker

        cfg = _loaded(self, {"cluster": {"redis": "redis://127.0.0.1:1/0", "node": "n1:3000"}})
        core = app.build_core(cfg, MemoryReactorClock())
        self.assertIsInstance(core.broker, RedisBroker)
        self.assertEqual(core.broker.node, "n1:3000")
        self.assertIsNone(core.journal)
        self.assertEqual(core.services, (core.broker,))
        names = {m.name for m in core.registry.collect()}
        self.assertIn("notificator_redis_up", names)
        self.assertIn("notificator_streams", names)

    def test_unreadable_cluster_ca_is_one_line(self) -> None:
        """A cluster.ca that cannot be read stops start-up with one line."""
        missing = os.path.abspath(self.mktemp())
        cfg = _loaded(self, {"cluster": {"redis": "rediss://127.0.0.1:1/0", "ca": missing}})
        e = self.assertRaises(SystemExit, app.build_core, cfg, MemoryReactorClock())
        self.assertTrue(str(e.code).startswith("notificator: configuration error: "), e.code)
        self.assertIn(missing, str(e.code))
        self.assertNotIn("\n", str(e.code))

    def test_node_name(self) -> None:
        """cluster.node names the node; else the name given (from the listeners); else the host's."""
        reactor = MemoryReactorClock()
        memory = {"history": {"directory": None}}
        named = config_with(sse=memory, cluster={"node": "sse-2:3000"})
        unnamed = config_with(sse=memory)
        self.assertEqual(app.build_core(named, reactor, node="h:1").broker.node, "sse-2:3000")
        self.assertEqual(app.build_core(unnamed, reactor, node="h:1").broker.node, "h:1")
        self.assertEqual(app.build_core(unnamed, reactor).broker.node, socket.gethostname())

    def test_one_set_of_counters(self) -> None:
        """The hub, the broker and the registry share the core's counters and clock."""
        reactor = MemoryReactorClock()
        reactor.advance(1_700_000_000)
        core = app.build_core(config_with(sse={"history": {"directory": None}}), reactor)
        self.assertIs(core.clock, reactor)
        self.assertIs(core.hub.stats, core.stats)
        self.assertEqual(core.stats.started_at, 1_700_000_000)
        core.broker.publish(Message("notify", "u1", "{}"))
        self.assertEqual(core.stats.published, 1)
        [published] = [m for m in core.registry.collect() if m.name == "notificator_published"]
        self.assertEqual([s.value for s in published.samples if s.name.endswith("_total")], [1.0])


class BuildSiteTests(SynchronousTestCase):
    def build(self, **sections: Any) -> tuple[Any, Site, MultiService, list[Any]]:
        """Core, site, the site's services (started) and its per-request lines."""
        reactor = MemoryReactorClock()
        self.reactor = reactor
        cfg = config_with(sse={"history": {"directory": None}}, **sections)
        core = app.build_core(cfg, reactor)
        lines: list[Any] = []
        parent = MultiService()
        site = app.build_site(
            core, cfg, reactor, Logger("notificator.web", observer=lines.append), parent
        )
        parent.startService()
        self.addCleanup(parent.stopService)
        return core, site, parent, lines

    def exchange(self, site: Site, raw: bytes, peer: str = "127.0.0.1") -> bytes:
        """C{raw} on a new connection from C{peer}; what was answered."""
        from twisted.internet.address import IPv4Address

        address = IPv4Address("TCP", peer, 40000)
        protocol = site.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        protocol.makeConnection(transport)
        self.addCleanup(protocol.connectionLost, Failure(ConnectionDone()))
        protocol.dataReceived(raw)
        self.reactor.advance(0)
        return bytes(transport.value())

    def test_serves_the_core(self) -> None:
        """A stream opened through the site gets what is published through the core's broker."""
        core, site, _, lines = self.build()
        opened = self.exchange(site, b"GET /sse/u1 HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertIn(b"event: connect", opened)
        self.assertEqual(core.hub.stream_count, 1)
        body = b"id=notify_u1&data=%7B%22n%22%3A1%7D"
        answer = self.exchange(
            site,
            b"POST /webNotification HTTP/1.1\r\nHost: t\r\nContent-Type:"
            b" application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body),
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer)
        self.assertEqual(json.loads(answer.partition(b"\r\n\r\n")[2])["delivered"], 1)
        self.assertEqual(core.stats.published, 1)
        self.assertTrue(any("opened for" in e.get("log_format", "") for e in lines))

    def test_the_site_as_twistd_serves_it(self) -> None:
        """No tracebacks; access.log in server.log.dir; monitor.accessLog and keepDays."""
        cfg_dir = os.path.abspath(self.mktemp())
        _, site, _, _ = self.build(
            server={"log_dir": cfg_dir, "log_keep_days": 7}, monitor={"access_log": True}
        )
        self.assertFalse(site.displayTracebacks)
        self.assertEqual(site.logPath, os.path.join(cfg_dir, "access.log"))
        assert site.access_log is not None
        self.assertEqual((site.monitor_polls, site.access_log.keep_days), (True, 7))

    def test_guard_and_gate_asked_before_the_body(self) -> None:
        """A publisher the guard refuses is answered before its body is read, and logged."""
        core, site, _, lines = self.build()
        answer = self.exchange(
            site,
            b"POST /webNotification HTTP/1.1\r\nHost: t\r\nContent-Type:"
            b" application/x-www-form-urlencoded\r\nContent-Length: 67108864\r\n\r\n",
            peer="10.9.9.9",
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 403 "), answer)
        self.assertEqual(core.stats.published, 0)
        self.assertTrue(any("refused publish" in e.get("log_format", "") for e in lines))

    def test_channels_and_their_services(self) -> None:
        """
        server.fastChannel: the fast request over the fast channel with its
        write batch; else the stock channel; both with the connections'
        watcher, its services in the parent given.
        """
        for fast_channel in (True, False):
            _, site, parent, _ = self.build(
                server={"fast_channel": fast_channel}, limits={"connections": 7}
            )
            children = list(parent)
            batches = [c for c in children if isinstance(c, fast.WriteBatch)]
            [watcher] = [c for c in children if isinstance(c, connections.Connections)]
            self.assertEqual(watcher.cap, 7)
            self.assertEqual(len(batches), 1 if fast_channel else 0)
            self.assertIs(site.requestFactory, Request)
            self.assertEqual(site.fast_channel, fast_channel)
            self.assertIsInstance(site.buildProtocol(None), connections.ConnectionProtocol)

    def test_without_a_parent(self) -> None:
        """Without a parent, the site's services are made all the same, unstarted: its resources serve."""
        from treq.testing import StubTreq

        reactor = MemoryReactorClock()
        cfg = config_with(sse={"history": {"directory": None}})
        core = app.build_core(cfg, reactor)
        stub = StubTreq(app.build_site(core, cfg, reactor).resource)
        response = self.successResultOf(stub.get("http://127.0.0.1/sse/u1"))
        chunks: list[bytes] = []
        stub.collect(response, chunks.append)
        stub.flush()
        self.assertEqual(parse_frames(b"".join(chunks))[1]["event"], "connect")
        self.assertEqual(core.hub.stream_count, 1)
        core.hub.close_all()
        stub.flush()
