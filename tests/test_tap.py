"""Tests for L{notificator.tap} and the plugin: options and service wiring."""

from __future__ import annotations

import io
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator

from twisted.application import strports
from twisted.application.service import IServiceMaker, MultiService
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site

from notificator import app, listening, runas, services, tap
from notificator.http.request import Request
from notificator.hub import Hub
from notificator.timers import Ticker, TickerService
from notificator.workers import reuseport, worker
from notificator.workers.reuseport import ReusePortService
from notificator.workers.supervisor import WorkerLink
from tests.support import PROJECT, free_port, redis_server_path, write_config


class OptionsTests(SynchronousTestCase):
    def options(self, *args: str) -> tap.Options:
        opts = tap.Options()
        opts.parseOptions(list(args))
        return opts

    def test_defaults(self) -> None:
        """--config defaults to conf and --env to $NOTIFICATOR_ENV, else development."""
        self.patch(os, "environ", {})
        here = os.path.abspath(self.mktemp())
        write_config(
            os.path.join(here, "conf"),
            {"default": {}, "development": {}, "production": {"sse": {"retry": 1}}},
        )
        cwd = os.getcwd()
        os.chdir(here)
        self.addCleanup(os.chdir, cwd)
        opts = self.options()
        self.assertEqual((opts["config"], opts["env"], opts["listen"]), ("conf", "development", []))
        self.assertEqual(opts["loaded"].sse.retry, 3000)
        self.patch(os, "environ", {"NOTIFICATOR_ENV": "production"})
        opts = self.options()
        self.assertEqual((opts["env"], opts["loaded"].sse.retry), ("production", 1))

    def test_listen_repeatable(self) -> None:
        """--listen may be given several times."""
        conf = os.path.join(PROJECT, "conf")
        opts = self.options("--config", conf, "--listen", "tcp:1", "--listen", "tcp6:2")
        self.assertEqual(opts["listen"], ["tcp:1", "tcp6:2"])

    def test_config_error_is_one_line_exit(self) -> None:
        """A bad config exits with one line naming the file and key."""
        conf = write_config(
            os.path.join(self.mktemp(), "conf"), {"default": {"sse": {"retry": "soon"}}, "x": {}}
        )
        e = self.assertRaises(SystemExit, self.options, "--config", conf, "--env", "x")
        message = str(e.code)
        self.assertNotIn("\n", message)
        self.assertRegex(message, r"default\.json: sse\.retry: expected an integer")

    def test_unusable_log_dir_is_one_line_exit(self) -> None:
        """A server.log.dir that cannot be created stops start-up with one line."""
        here = os.path.abspath(self.mktemp())
        os.makedirs(here)
        blocker = os.path.join(here, "file")
        with open(blocker, "w"):
            pass
        conf = write_config(
            os.path.join(here, "conf"),
            {"default": {"server": {"log": {"dir": "file/log"}}}, "x": {}},
        )
        e = self.assertRaises(SystemExit, self.options, "--config", conf, "--env", "x")
        message = str(e.code)
        self.assertNotIn("\n", message)
        self.assertIn(f"server.log.dir: {blocker}/log: Not a directory", message)

    def test_history_dir_only_where_it_is_used(self) -> None:
        """
        sse.history.dir is checked (and stops start-up) only where the
        history is kept on disk: not in cluster mode, nor with size 0.
        """
        here = os.path.abspath(self.mktemp())
        os.makedirs(here)
        with open(os.path.join(here, "file"), "w"):
            pass
        history = {"dir": "file/history"}
        cases = [
            ({"sse": {"history": history}}, True),
            ({"sse": {"history": {**history, "size": 0}}}, False),
            ({"sse": {"history": history}, "cluster": {"redis": "redis://127.0.0.1:1/0"}}, False),
        ]
        for i, (doc, refused) in enumerate(cases):
            doc["server"] = {"log": {"dir": "log"}}
            conf = write_config(os.path.join(here, f"conf{i}"), {"default": doc, "x": {}})
            if refused:
                e = self.assertRaises(SystemExit, self.options, "--config", conf, "--env", "x")
                self.assertIn("sse.history.dir:", str(e.code))
            else:
                self.options("--config", conf, "--env", "x")


class MakeServiceTests(SynchronousTestCase):
    def service(self, doc: dict, *args: str) -> tuple[MemoryReactorClock, object]:
        conf = write_config(os.path.join(self.mktemp(), "conf"), {"default": doc, "x": {}})
        opts = tap.Options()
        opts.parseOptions(["--config", conf, "--env", "x", *args])
        reactor = MemoryReactorClock()
        svc = tap.makeService(opts, reactor=reactor)
        svc.startService()
        self.addCleanup(svc.stopService)
        return reactor, svc

    def test_config_warnings_logged_one_line_each(self) -> None:
        """
        Each config warning is one warn event, "config: <warning>", with no
        field named "warning" (which twisted's legacy observers, trial's
        among them, take for a Python warning and fail on).
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.service({"sse": {"hearbeat": True, "header": {"Access-Control-Allow-Origin": "*"}}})
        config_events = [e for e in observer if e.get("log_format", "").startswith("config: ")]
        self.assertEqual(len(config_events), 1)
        (event,) = config_events
        self.assertEqual(event["log_level"], LogLevel.warn)
        self.assertNotIn("warning", event)
        self.assertRegex(
            formatEvent(event), r"^config: \S+default\.json: sse\.hearbeat: unknown key"
        )

    def test_serving_part_in_stop_order(self) -> None:
        """
        The serving part starts the history's lock, the broker, the site's
        services, the listeners, the timers and the drain in that order, so
        that its ordered stop drains first and releases the lock last.
        """
        from notificator import pidlock
        from notificator.broker.local import LocalBroker
        from notificator.http import connections, fast

        _, root = self.service({"sse": {"heartbeatInterval": 30, "keepalive": 20}})
        # Under the GC tuning, which freezes what it loaded once it has started.
        tuning = list(root)[-1]
        self.assertIsInstance(tuning, services.GCTuningService)
        (serving,) = tuning
        self.assertIsInstance(serving, services.SequentialService)
        kinds = [
            pidlock.DirectoryLockService,
            LocalBroker,
            fast.WriteBatch,
            fast.Polling,
            connections.Connections,
            MultiService,
            TickerService,
            TickerService,
            services.DrainService,
        ]
        children = list(serving)
        self.assertEqual(len(children), len(kinds), children)
        for child, kind in zip(children, kinds, strict=True):
            self.assertIsInstance(child, kind)
        self.assertEqual(len(list(children[5])), 1)  # the one listener
        hub = children[-1].hub
        self.assertEqual([c.ticker.tick for c in children[6:8]], [hub.heartbeat, hub.keepalive])

    def test_listens_on_configured_port(self) -> None:
        """server.port/host become a TCP listener for our Site."""
        reactor, _ = self.service({"server": {"port": 3123, "host": "127.0.0.1"}})
        ((port, factory, _, interface),) = reactor.tcpServers
        self.assertEqual((port, interface), (3123, "127.0.0.1"))
        self.assertIsInstance(factory, Site)
        self.assertFalse(factory.displayTracebacks)

    def test_listeners_accept_with_the_fast_channel_loop(self) -> None:
        """
        With server.fastChannel the listeners' endpoints make Twisted's TCP
        port a FastPort (fast.Accepting); with it off they are Twisted's own.
        """
        from twisted.application.internet import StreamServerEndpointService

        from notificator.http import fast

        for on in (True, False):
            _, svc = self.service({"server": {"port": 3123, "fastChannel": on}})
            (listener,) = [s for s in _walk(svc) if isinstance(s, StreamServerEndpointService)]
            self.assertEqual(isinstance(listener.endpoint, fast.Accepting), on)

    def test_listen_overrides(self) -> None:
        """--listen replaces the configured endpoints."""
        reactor, _ = self.service(
            {"server": {"port": 3123}}, "--listen", "tcp:4001", "--listen", "tcp:4002"
        )
        self.assertEqual([s[0] for s in reactor.tcpServers], [4001, 4002])

    def test_one_heartbeat_timer(self) -> None:
        """One heartbeat timer serves all streams, at sse.heartbeatInterval."""
        reactor, svc = self.service({"sse": {"heartbeatInterval": 30, "keepalive": 20}})
        hub = tap.find(svc, services.DrainService).hub
        streams = []

        class S:
            user_id = "u"

            def send(self, frame: bytes) -> bool:
                streams.append(frame)
                return True

            def close(self) -> None:
                pass

        hub.attach(S())
        reactor.advance(30)
        beats = [f for f in streams if b"event: heartbeat" in f]
        self.assertEqual(len(beats), 1)
        self.assertEqual(streams.count(b":\n\n"), 1)  # keepalive at 20 s
        reactor.advance(30)
        self.assertEqual(len([f for f in streams if b"event: heartbeat" in f]), 2)

    def test_heartbeat_off(self) -> None:
        """sse.heartbeat false starts no heartbeat timer (keepalive only)."""
        reactor, _ = self.service({"sse": {"heartbeat": False, "keepalive": 0}})
        self.assertEqual(_timers(reactor), [])

    def test_keepalive_skipped_when_heartbeat_is_more_frequent(self) -> None:
        """A heartbeat more frequent than the keepalive makes the keepalive moot."""
        reactor, _ = self.service({"sse": {"heartbeatInterval": 1, "keepalive": 20}})
        self.assertEqual(len(_timers(reactor)), 1)

    def test_stop_drains_streams_with_jittered_retry(self) -> None:
        """
        Stopping ends the open streams spread over sse.drainSeconds, each
        with a retry: of sse.retry plus up to drainSeconds of jitter, and
        /health says 503 meanwhile; the stop fires when all have ended.
        """
        reactor, svc = self.service({"sse": {"drainSeconds": 2, "retry": 1000}})
        drain = tap.find(svc, services.DrainService)
        hub = drain.hub
        ended: list[tuple[float, int]] = []

        class S:
            user_id = "u"

            def __init__(self) -> None:
                self.retry = 0

            def send(self, frame: bytes) -> bool:
                if frame.startswith(b"retry: "):
                    self.retry = int(frame.split()[1])
                return True

            def close(self) -> None:
                ended.append((reactor.seconds(), self.retry))

        for _ in range(40):
            hub.attach(S())
        stopped = svc.stopService()
        self.assertTrue(hub.draining)
        self.assertNoResult(stopped)
        self.assertLess(len(ended), 40)
        reactor.advance(1.0)
        self.assertNoResult(stopped)
        self.assertTrue(10 <= len(ended) < 40, len(ended))
        for _ in range(30):
            reactor.advance(0.1)
        self.successResultOf(stopped)
        self.assertEqual((len(ended), hub.stream_count), (40, 0))
        times = [t for t, _ in ended]
        self.assertLessEqual(max(times) - min(times), 2.0)
        retries = [r for _, r in ended]
        self.assertTrue(all(1000 <= r <= 3000 for r in retries), retries)
        self.assertGreater(len(set(retries)), 20)  # jittered, not one value

    def test_stop_without_streams_is_immediate(self) -> None:
        """With no stream open, the drain does not wait."""
        _, svc = self.service({"sse": {"drainSeconds": 30}})
        self.successResultOf(svc.stopService())


class PluginTests(SynchronousTestCase):
    def test_plugin_found(self) -> None:
        """twistd finds exactly one service maker named notificator."""
        makers = [p for p in getPlugins(IServiceMaker) if p.tapname == "notificator"]
        self.assertEqual(len(makers), 1)
        self.assertIs(makers[0].options, tap.Options)


def _timers(reactor: MemoryReactorClock) -> list[object]:
    """The reactor's pending ticks of the hub (the heartbeat, the keepalive)."""
    return [
        c
        for c in reactor.getDelayedCalls()
        if isinstance(ticker := getattr(getattr(c.func, "f", None), "__self__", None), Ticker)
        and isinstance(getattr(ticker.tick, "__self__", None), Hub)
    ]


class BacklogTests(SynchronousTestCase):
    def test_adds_backlog(self) -> None:
        """tcp, tcp6, ssl and unix descriptions without one get the listen backlog."""
        self.assertEqual(tap.with_backlog("tcp:3000"), f"tcp:3000:backlog={tap.LISTEN_BACKLOG}")
        self.assertEqual(
            tap.with_backlog("ssl:3443:privateKey=k.pem:certKey=c.pem", 10),
            "ssl:3443:privateKey=k.pem:certKey=c.pem:backlog=10",
        )
        self.assertEqual(
            tap.with_backlog("tcp6:3000:interface=\\:\\:1", 7),
            "tcp6:3000:interface=\\:\\:1:backlog=7",
        )
        self.assertEqual(
            tap.with_backlog("https:port=3443:alpn=h2", 9), "https:port=3443:alpn=h2:backlog=9"
        )

    def test_keeps_given_backlog_and_other_types(self) -> None:
        """A description with its own backlog, or of another type, is unchanged."""
        self.assertEqual(tap.with_backlog("tcp:3000:backlog=5"), "tcp:3000:backlog=5")
        self.assertEqual(
            tap.with_backlog("systemd:domain=INET:index=0"), "systemd:domain=INET:index=0"
        )

    def test_service_listens_with_backlog(self) -> None:
        """makeService listens with the backlog (seen on the reactor's listenTCP call)."""
        reactor = MemoryReactorClock()
        options = tap.Options()
        conf = write_config(
            os.path.join(os.path.abspath(self.mktemp()), "conf"), {"default": {}, "x": {}}
        )
        options.parseOptions(
            ["--config", conf, "--env", "x", "--listen", "tcp:0:interface=127.0.0.1"]
        )
        service = tap.makeService(options, reactor=reactor)
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual(reactor.tcpServers[0][2], tap.LISTEN_BACKLOG)
        site = reactor.tcpServers[0][1]
        self.assertIs(site.requestFactory, Request)
        self.assertIsNotNone(site.limits)


class WorkersTests(SynchronousTestCase):
    """server.workers: the supervisor's tree, a worker's, and the pre-flight's lines."""

    def options(self, doc: dict, *args: str) -> tap.Options:
        # Not under trial's directory: the private Redis's socket path
        # (var/redis/redis.sock) must hold in 107 bytes wherever CI runs.
        root = tempfile.mkdtemp(prefix="ntf-")
        self.addCleanup(shutil.rmtree, root, True)
        self.conf = write_config(os.path.join(root, "conf"), {"default": doc, "x": {}})
        opts = tap.Options()
        opts.parseOptions(["--config", self.conf, "--env", "x", *args])
        return opts

    def test_worker(self) -> None:
        """
        --worker-slot: node name with -w<slot>, the private Redis's socket as
        cluster.redis (no history on disk), its listeners SO_REUSEPORT ones
        after the drain, the link to the supervisor last.
        """
        opts = self.options(
            {"server": {"workers": 2}},
            "--listen",
            "tcp:port=3999:interface=127.0.0.1",
            "--worker-slot",
            "1",
        )
        cfg = opts["loaded"]
        root = os.path.dirname(self.conf)
        self.assertRegex(cfg.cluster.node, r"^.+:3999-w1$")
        self.assertEqual(cfg.cluster.redis.path, os.path.join(root, "var", "redis", "redis.sock"))
        self.assertIsNone(app.history_directory(cfg))
        svc = tap.makeService(opts, reactor=MemoryReactorClock())
        [serving] = list(list(svc)[-1])  # under the GC tuning
        kinds = [type(s).__name__ for s in serving]
        self.assertEqual(
            kinds[-4:], ["TickerService", "FactoryHold", "DrainService", "SequentialService"]
        )
        listeners, link = list(list(serving)[-1])
        self.assertIsInstance(listeners, worker.WorkerListeners)
        self.assertIsInstance(link, WorkerLink)
        [listener] = list(listeners)
        self.assertIsInstance(listener, ReusePortService)
        self.assertEqual((listener.address.port, listener.address.backlog), (3999, 4096))
        self.assertEqual(tap.find(svc, strports.StreamServerEndpointService), None)

    def test_cluster_node_named(self) -> None:
        """A cluster.node given is the workers' base name."""
        opts = self.options(
            {"server": {"workers": 2}, "cluster": {"node": "sse-a", "redis": "redis://r:6379/1"}},
            "--listen",
            "tcp:port=3999",
            "--worker-slot",
            "0",
        )
        self.assertEqual(opts["loaded"].cluster.node, "sse-a-w0")
        self.assertEqual(str(opts["loaded"].cluster.redis), "redis://r:6379/1")

    def test_bad_slot(self) -> None:
        """--worker-slot takes a worker's number."""
        e = self.assertRaises(
            SystemExit, self.options, {}, "--listen", "tcp:port=3999", "--worker-slot", "x"
        )
        self.assertEqual(
            str(e.code), "notificator: --worker-slot: expected a worker's number, got 'x'"
        )

    def test_listens_once_the_broker_is_available(self) -> None:
        """A worker's listeners listen once its broker reaches Redis; then it is ready."""

        class Broker:
            problem: str | None = "Redis unreachable"

            def health(self) -> str | None:
                return self.problem

        broker, reactor = Broker(), MemoryReactorClock()
        listeners = worker.WorkerListeners(broker, reactor)
        ReusePortService(
            reactor, f"tcp:port={free_port()}:interface=127.0.0.1", Site(None)
        ).setServiceParent(listeners)
        listeners.privilegedStartService()
        listeners.startService()
        self.addCleanup(listeners.stopService)
        ready = listeners.when_listening()
        reactor.advance(1)
        self.assertEqual(reactor.adoptedPorts, [])
        self.assertNoResult(ready)
        broker.problem = None
        reactor.advance(0.05)
        self.assertEqual(len(reactor.adoptedPorts), 1)
        self.successResultOf(ready)
        self.successResultOf(listeners.when_listening())

    def test_waits_on_when_the_broker_raises(self) -> None:
        """A broker's health that raises is asked again, not the end of the wait."""

        class Broker:
            answers = [RuntimeError("not yet"), RuntimeError("not yet"), None]

            def health(self) -> str | None:
                answer = self.answers.pop(0)
                if isinstance(answer, Exception):
                    raise answer
                return answer

        reactor = MemoryReactorClock()
        ready = worker.until_available(Broker(), reactor, interval=0.05)
        reactor.advance(0.05)
        self.assertNoResult(ready)
        reactor.advance(0.05)
        self.successResultOf(ready)
        self.assertEqual(reactor.getDelayedCalls(), [])
        self.flushLoggedErrors(RuntimeError)

    def test_supervisor(self) -> None:
        """
        Above 1: the supervisor's tree: the logs, the private Redis, the
        Supervisor with each worker's command; no listener, no history lock.
        """
        redis_server_path()
        opts = self.options(
            {"server": {"workers": 3}}, "--listen", "tcp:port=3999:interface=127.0.0.1"
        )
        svc = tap.makeService(opts, reactor=MemoryReactorClock())
        kinds = [type(s).__name__ for s in svc]
        self.assertEqual(
            kinds,
            [
                "AppLogService",
                "AccessLogService",
                "ProcessTitleService",
                "PrivateRedis",
                "Supervisor",
            ],
        )
        supervisor = list(svc)[-1]
        commands = supervisor._commands
        self.assertEqual(len(commands), 3)
        for slot, argv in enumerate(commands):
            self.assertEqual(argv[0], sys.executable)
            self.assertEqual(argv[-4:], ["--worker-count", "3", "--worker-slot", str(slot)])
            at = argv.index("notificator")
            self.assertEqual(argv[at - 2 : at], ["-n", "--pidfile="])
            self.assertEqual(
                argv[at + 1 : -4],
                [
                    "--config",
                    self.conf,
                    "--env",
                    "x",
                    "--listen",
                    "tcp:port=3999:interface=127.0.0.1",
                ],
            )
        self.assertEqual(set(supervisor.outputs), {4, 5})
        private = list(svc)[3]
        self.assertEqual(
            private.directory, os.path.join(os.path.dirname(self.conf), "var", "redis")
        )

    def test_migrate_req_hint(self) -> None:
        """
        Where net.ipv4.tcp_migrate_req is 0, the supervisor's start says
        what a graceful restart may reset and what to set; not where it is
        1 or missing.
        """
        doc = {"server": {"workers": 2}, "cluster": {"redis": "redis://127.0.0.1:6390/0"}}
        for value, lines in [(False, 1), (True, 0), (None, 0)]:
            observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
            self.patch(reuseport, "requests_migrate", lambda value=value: value)
            opts = self.options(doc, "--listen", "tcp:port=3999")
            tap.makeService(opts, reactor=MemoryReactorClock())
            said = [e for e in observer if "tcp_migrate_req" in e.get("log_format", "")]
            self.assertEqual(len(said), lines, value)

    def test_requests_migrate(self) -> None:
        """The sysctl read: 1 is true, 0 false, no such file None."""
        path = self.mktemp()
        for text, expected in [("1\n", True), ("0\n", False)]:
            with open(path, "w", encoding="ascii") as f:
                f.write(text)
            self.assertIs(reuseport.requests_migrate(path), expected)
        self.assertIsNone(reuseport.requests_migrate(path + ".missing"))

    def test_no_private_redis_with_cluster_redis(self) -> None:
        """With cluster.redis, the workers use it: no private Redis, no redis-server needed."""
        self.patch(os, "environ", {**os.environ, "PATH": "/nonexistent"})
        opts = self.options(
            {"server": {"workers": 2}, "cluster": {"redis": "redis://127.0.0.1:6390/0"}},
            "--listen",
            "tcp:port=3999",
        )
        svc = tap.makeService(opts, reactor=MemoryReactorClock())
        self.assertNotIn("PrivateRedis", [type(s).__name__ for s in svc])

    def test_one_line_errors(self) -> None:
        """Port 0, a listener a worker cannot share, no redis-server: one line each."""
        self.patch(os, "environ", {**os.environ, "PATH": "/nonexistent"})
        for doc, listen, line in [
            (
                {"server": {"workers": 2}},
                "tcp:0:interface=127.0.0.1",
                "notificator: configuration error: server.workers 2: 'tcp:0:interface=127.0.0.1'"
                " listens on port 0 (a port of its own for each worker); give a port number",
            ),
            (
                {"server": {"workers": "auto"}, "cluster": {"redis": "redis://h/0"}},
                "unix:/tmp/n.sock",
                'notificator: configuration error: server.workers "auto": the workers listen on'
                " tcp:, tcp6: or https: descriptions, not 'unix:/tmp/n.sock'",
            ),
            (
                {"server": {"workers": 2}},
                "tcp:port=3999",
                "notificator: server.workers 2 needs Redis: install the redis-server package"
                " (apt-get install redis-server) or set cluster.redis",
            ),
        ]:
            self.patch(tap, "workers_for", lambda setting: 2)
            e = self.assertRaises(SystemExit, self.options, doc, "--listen", listen)
            self.assertEqual(str(e.code), line)

    def test_uid_and_a_port_below_1024(self) -> None:
        """
        twistd --uid with a port below net.ipv4.ip_unprivileged_port_start:
        the workers, started after the switch, could not bind it; one line
        says so and what to do.  Without --uid, or at a higher port, no line.
        """
        self.patch(listening, "first_unprivileged_port", lambda: 1024)
        doc = {"server": {"workers": 2}, "cluster": {"redis": "redis://127.0.0.1:6390/0"}}
        self.options(doc, "--listen", "tcp:port=981:interface=127.0.0.1")  # no --uid
        self.patch(runas.RunAs, "switches", True)  # as twistd --uid would
        self.options(doc, "--listen", "tcp:port=1024:interface=127.0.0.1")
        e = self.assertRaises(
            SystemExit, self.options, doc, "--listen", "tcp:port=443:interface=127.0.0.1"
        )
        self.assertEqual(
            str(e.code),
            "notificator: configuration error: server.workers 2:"
            " 'tcp:port=443:interface=127.0.0.1' listens on port 443, which only a process"
            " with CAP_NET_BIND_SERVICE may bind (below 1024), and the workers run as"
            f" {runas.RunAs.current()} after twistd --uid, without it: start the server as"
            ' that user with the capability instead (docs/operations.rst, "Workers and'
            ' ports below 1024"), or listen on port 1024 or above',
        )

    def test_check(self) -> None:
        """--check says how many workers and which Redis."""
        redis_server_path()
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        self.assertRaises(
            SystemExit,
            self.options,
            {"server": {"workers": 2}},
            "--listen",
            "tcp:port=3999",
            "--check",
        )
        socket = os.path.join(os.path.dirname(self.conf), "var", "redis", "redis.sock")
        self.assertIn(
            f"; server.workers 2: 2 workers and a private redis-server on {socket} (not started)",
            out.getvalue(),
        )
        self.assertIn("; no history on disk;", out.getvalue())


class IgnoreInterruptTests(SynchronousTestCase):
    def test_ignores_sigint_while_running(self) -> None:
        """A worker ignores SIGINT while it runs (its supervisor stops it); then as before."""
        import signal

        before = signal.getsignal(signal.SIGINT)
        service = worker.IgnoreInterrupt()
        service.startService()
        self.addCleanup(signal.signal, signal.SIGINT, before)
        self.assertIs(signal.getsignal(signal.SIGINT), signal.SIG_IGN)
        service.stopService()
        self.assertIs(signal.getsignal(signal.SIGINT), before)


def _walk(service: object) -> Iterator[object]:
    """C{service} and every service under it."""
    yield service
    for child in getattr(service, "services", ()):
        yield from _walk(child)
