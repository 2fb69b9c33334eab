"""
End-to-end tests for C{startup.sh} and C{shutdown.sh}: real daemons
(twistd of the Python running the tests) on a loopback port, in a copy of
the project layout in a temporary directory, run from another directory.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    PROJECT,
    Client,
    SSEClient,
    as_user,
    free_port,
    make_user,
    owner,
    taken_port,
    wait_until,
    write_config,
)

LISTEN = "tcp:0:interface=127.0.0.1"
FORM = "application/x-www-form-urlencoded"


def alive(pid: int) -> bool:
    """Is C{pid} a live process (not a zombie)?"""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def process_title(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()


class Project:
    """
    A throwaway install: the two scripts and a conf/ directory, as in a
    checkout.  Relative paths (pid file, log/) land in it.
    """

    def __init__(
        self,
        testcase: SynchronousTestCase,
        production: dict[str, Any] | None = None,
        base: str | None = None,
    ):
        self.testcase = testcase
        base = base or os.path.abspath(testcase.mktemp())
        self.root = os.path.join(base, "notificator-install")
        self.elsewhere = os.path.join(base, "elsewhere")
        os.makedirs(self.root)
        os.makedirs(self.elsewhere)
        for script in ("startup.sh", "shutdown.sh", "daemon-lib.sh"):
            shutil.copy2(os.path.join(PROJECT, script), self.root)
        with open(os.path.join(PROJECT, "conf", "default.json"), encoding="utf-8") as f:
            default = f.read()
        write_config(
            os.path.join(self.root, "conf"),
            {
                "default": default,
                # The environments the tests start (an environment needs its
                # file); the shipped production.json wants certificates, and
                # the tests listen on plain loopback TCP (--listen) anyway.
                "development": {},
                "production": production or {"server": {"protocol": "http"}},
            },
        )
        self.pidfile = os.path.join(self.root, "notificator.pid")
        self.log_dir = os.path.join(self.root, "log")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFICATOR_")}
        self.env["NOTIFICATOR_TWISTD"] = os.path.join(os.path.dirname(sys.executable), "twistd")
        self.pids: list[int] = []
        testcase.addCleanup(self.kill_all)

    def run(
        self, script: str, *args: str, env: dict[str, str] | None = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [os.path.join(self.root, script), *args],
            cwd=self.elsewhere,
            env={**self.env, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
        for m in re.finditer(r"running pid=(\d+)", result.stdout):
            self.pids.append(int(m.group(1)))
        return result

    def start(self, *args: str, env: dict[str, str] | None = None) -> int:
        result = self.run("startup.sh", *args, "--listen", LISTEN, env=env)
        self.testcase.assertEqual(result.returncode, 0, result.stdout + self.twistd_log())
        m = re.search(r"^Notificator SSE Server is running pid=(\d+)", result.stdout, re.M)
        self.testcase.assertTrue(m, result.stdout)
        assert m is not None
        return int(m.group(1))

    def read_pidfile(self) -> int:
        with open(self.pidfile, encoding="ascii") as f:
            return int(f.read().strip())

    def read(self, name: str) -> str:
        try:
            with open(os.path.join(self.log_dir, name), encoding="utf-8", newline="") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def twistd_log(self) -> str:
        return self.read("twistd.log")

    def port(self) -> int:
        m = wait_until(lambda: re.search(r"starting on (\d+)", self.twistd_log()), what="listening")
        return int(m.group(1))

    def kill_all(self) -> None:
        """Cleanup: whatever a failed test left running is killed."""
        for pid in self.pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
                wait_until(
                    lambda: not alive(pid),  # noqa: B023 (called at once)
                    what=f"pid {pid} gone",
                )


class StartupShutdownTests(SynchronousTestCase):
    def test_start_serve_log_and_stop(self) -> None:
        """
        startup.sh starts a daemon in the development env (as twistd -n
        notificator would) that serves, logs and is named notificator;
        shutdown.sh stops it and removes the pid file.
        """
        project = Project(self)
        link = os.path.join(project.elsewhere, "start-notificator")
        os.symlink(os.path.join(project.root, "startup.sh"), link)
        result = subprocess.run(
            [link, "--listen", LISTEN],
            cwd=project.elsewhere,
            env=project.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stdout)
        m = re.search(r"running pid=(\d+)", result.stdout)
        assert m is not None, result.stdout
        pid = int(m.group(1))
        project.pids.append(pid)
        self.assertEqual(project.read_pidfile(), pid)
        self.assertTrue(alive(pid))
        self.assertTrue(
            process_title(pid).startswith(f"notificator [development] {project.root}"),
            process_title(pid),
        )
        self.assertIn("(env development, log ", result.stdout)
        # Created for the daemon with its umask (077), before twistd opens it.
        self.assertEqual(
            os.stat(os.path.join(project.log_dir, "twistd.log")).st_mode & 0o777, 0o600
        )

        port = project.port()
        api = Client(self, port)
        client = api.subscribe("/sse/u1", {"User-Agent": "ops-test"})
        self.assertEqual(client.next_event()["event"], "connect")
        self.assertEqual(api.post("id=notify_u1&data=%7B%22n%22%3A1%7D", FORM)[1]["delivered"], 1)
        self.assertEqual(client.next_event()["data"], '{"n":1}')
        client.close()

        # CR/LF from requests: percent-encoded in a user id (refused, 400),
        # and a raw CR in the request line (refused by twisted.web).
        for raw in (
            b"GET /sse/a%0D%0Ainjected HTTP/1.1\r\nHost: x\r\nUser-Agent: u\xe2\x80\xa8v\r\n\r\n",
            b"GET /sse/a\rinjected HTTP/1.1\r\nHost: x\r\n\r\n",
        ):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(raw)
                self.assertTrue(sock.recv(100).startswith(b"HTTP/1.1 400 "))

        access = wait_until(
            lambda: "GET /sse/u1" in (t := project.read("access.log")) and "injected" in t and t,
            what="the disconnected stream and the refused request in access.log",
        )
        self.assertIn('"POST /webNotification HTTP/1.1" 200 ', access)
        self.assertRegex(access, r'"GET /sse/u1 HTTP/1\.1" 200 \d+ "-" "ops-test"\n')
        sse = wait_until(
            lambda: "closed by the client" in (t := project.read("sse.log")) and t,
            what="stream closed in sse.log",
        )
        self.assertIn("stream 1 opened for u1 from 127.0.0.1 (1 open)", sse)
        self.assertRegex(sse, r"stream 1 of u1 closed by the client after \d+ s")
        self.assertIn("logging at level info", sse)
        self.assertIn("refused stream from 127.0.0.1 for /sse/a%0D%0Ainjected: 400", sse)
        self.assertIn('"GET /sse/a%0D%0Ainjected HTTP/1.1" 400 ', access)
        self.assertIn('"u\\xe2\\x80\\xa8v"', access)
        for text in (access, sse):
            self.assertNotIn("\r", text)
            self.assertFalse(any(line.startswith("injected") for line in text.split("\n")))

        # A stream still open at shutdown is finished, and logged, by the server.
        open_at_stop = api.subscribe("/sse/u2")
        self.assertEqual(open_at_stop.next_event()["event"], "connect")

        again = project.run("startup.sh", "--listen", LISTEN)
        self.assertEqual(again.returncode, 1, again.stdout)
        self.assertIn(f"already running pid={pid}", again.stdout)
        self.assertEqual(project.read_pidfile(), pid)

        stop = project.run("shutdown.sh")
        self.assertEqual(stop.returncode, 0, stop.stdout)
        self.assertIn(f"Sent SIGTERM to Notificator SSE Server pid={pid}", stop.stdout)
        self.assertIn(f"Notificator SSE Server stopped pid={pid}", stop.stdout)
        self.assertFalse(alive(pid))
        self.assertFalse(os.path.exists(project.pidfile))
        self.assertIn("Server Shut Down", project.twistd_log())
        self.assertRegex(project.read("access.log"), r'"GET /sse/u2 HTTP/1\.1" 200 \d+ ')
        self.assertIn("stream 2 of u2 closed by the server", project.read("sse.log"))

    def test_environment_choice(self) -> None:
        """NOTIFICATOR_ENV overrides the development default; an argument overrides both."""
        project = Project(self)
        write_config(os.path.join(project.root, "conf"), {"staging": {}})
        pid = project.start(env={"NOTIFICATOR_ENV": "production"})
        self.assertTrue(process_title(pid).startswith("notificator [production] "))
        self.assertEqual(project.run("shutdown.sh").returncode, 0)
        pid = project.start("staging", env={"NOTIFICATOR_ENV": "production"})
        self.assertTrue(process_title(pid).startswith("notificator [staging] "))
        self.assertEqual(project.run("shutdown.sh").returncode, 0)
        self.assertFalse(alive(pid))

    def test_stale_pidfile_is_cleaned(self) -> None:
        """A pid file naming a dead process, or a process that is not ours, is removed at start."""
        project = Project(self)
        other = subprocess.Popen(["sleep", "30"])
        self.addCleanup(other.wait)
        self.addCleanup(other.kill)
        for stale in (dead_pid(), other.pid):
            with open(project.pidfile, "w") as f:
                f.write(f"{stale}\n")
            result = project.run("startup.sh", "--listen", LISTEN)
            self.assertEqual(result.returncode, 0, result.stdout)
            self.assertIn(f"Removing stale pid file {project.pidfile} (pid {stale}", result.stdout)
            # No shell noise for the pid that is gone (/proc/N/cmdline).
            self.assertNotIn("No such file", result.stdout)
            pid = project.read_pidfile()
            self.assertNotEqual(pid, stale)
            self.assertTrue(alive(pid))
            self.assertEqual(project.run("shutdown.sh").returncode, 0)
        self.assertIsNone(other.poll(), "the unrelated process was left alone")

    def test_garbage_pidfile_is_named(self) -> None:
        """A pid file holding no number is removed by either script, saying what it held."""
        project = Project(self)
        with open(project.pidfile, "w") as f:
            f.write("12abc\n")
        result = project.run("shutdown.sh")
        self.assertEqual(result.returncode, 0, result.stdout)
        self.assertIn(
            f'removed stale pid file {project.pidfile} (it holds "12abc", not a pid)',
            result.stdout,
        )
        self.assertFalse(os.path.exists(project.pidfile))
        with open(project.pidfile, "w") as f:
            f.write(" garbage \x01\n")
        result = project.run("startup.sh", "--listen", LISTEN)
        self.assertEqual(result.returncode, 0, result.stdout)
        self.assertIn(
            f'Removing stale pid file {project.pidfile} (it holds "garbage", not a pid)',
            result.stdout,
        )
        pid = project.read_pidfile()
        self.assertTrue(alive(pid))
        self.assertEqual(project.run("shutdown.sh").returncode, 0)

    def test_shutdown_when_not_running(self) -> None:
        """shutdown.sh without a server says so; with a stale pid file it removes it."""
        project = Project(self)
        result = project.run("shutdown.sh")
        self.assertEqual(result.returncode, 0)
        self.assertIn("is not running (no pid file", result.stdout)
        stale = dead_pid()
        with open(project.pidfile, "w") as f:
            f.write(f"{stale}\n")
        result = project.run("shutdown.sh")
        self.assertEqual(result.returncode, 0)
        self.assertIn(f"removed stale pid file {project.pidfile} (pid {stale})", result.stdout)
        self.assertNotIn("No such file", result.stdout)
        self.assertFalse(os.path.exists(project.pidfile))

    def test_shutdown_kills_a_server_ignoring_sigterm(self) -> None:
        """A process that ignores SIGTERM is killed with SIGKILL after the timeout."""
        project = Project(self)
        stubborn = subprocess.Popen(
            ["bash", "-c", 'trap "" TERM; exec -a notificator-stuck sleep 30']
        )
        self.addCleanup(lambda: stubborn.poll() is None and stubborn.kill())
        self.addCleanup(stubborn.wait)
        wait_until(
            lambda: process_title(stubborn.pid).startswith("notificator-stuck"),
            what="exec -a",
        )
        with open(project.pidfile, "w") as f:
            f.write(f"{stubborn.pid}\n")
        started = time.monotonic()
        result = project.run("shutdown.sh", env={"NOTIFICATOR_STOP_TIMEOUT": "0.5"})
        # Not a success: the server did not stop cleanly (nothing drained,
        # the history not closed), and a script chaining a start after it
        # must be told.
        self.assertEqual(result.returncode, 2, result.stdout)
        self.assertIn("still running after 0.5s; sending SIGKILL", result.stdout)
        self.assertIn(f"killed pid={stubborn.pid} (SIGKILL)", result.stdout)
        self.assertIn("did not stop cleanly", result.stdout)
        self.assertEqual(stubborn.wait(10), -signal.SIGKILL)
        self.assertFalse(os.path.exists(project.pidfile))
        self.assertLess(time.monotonic() - started, 30)

    def test_failed_start_reports_and_leaves_no_pidfile(self) -> None:
        """
        A port in use makes startup.sh fail with one whole line (not
        twistd's cut-off one), on the terminal and in twistd.log.
        """
        project = Project(self)
        port = taken_port(self)
        result = project.run("startup.sh", "--listen", f"tcp:{port}:interface=127.0.0.1")
        self.assertNotEqual(result.returncode, 0, result.stdout)
        error = (
            f"notificator: cannot listen on 127.0.0.1 port {port}"
            f" (tcp:{port}:interface=127.0.0.1): Address already in use:"
            " another program is listening there (stop it, or choose another port)"
        )
        self.assertEqual(
            result.stdout,
            f"{error}\nNotificator SSE Server failed to start (twistd exit 1);"
            f" see {project.log_dir}/twistd.log\n",
        )
        self.assertIn(f"[startup.sh] {error}\n", project.twistd_log())
        self.assertFalse(os.path.exists(project.pidfile))

    def test_config_error_is_one_line(self) -> None:
        """
        A bad config stops startup.sh with the config error on the terminal
        and in twistd.log, and a non-zero exit.
        """
        project = Project(self, production={"server": {"port": "3443a"}})
        result = project.run("startup.sh", "production")
        self.assertNotEqual(result.returncode, 0, result.stdout)
        error = "production.json: server.port: expected an integer"
        self.assertIn(error, result.stdout)
        self.assertIn(f"see {project.log_dir}/twistd.log", result.stdout)
        self.assertRegex(
            project.twistd_log(), r"\[startup\.sh\] notificator: configuration error: .*" + error
        )
        self.assertFalse(os.path.exists(project.pidfile))

    def test_misspelt_environment_is_refused(self) -> None:
        """
        startup.sh prodution (a typo) does not start on the defaults alone
        (plain http on every interface): one line names the environments
        there are, on the terminal and in twistd.log.
        """
        project = Project(self)
        result = project.run("startup.sh", "prodution")
        self.assertEqual(result.returncode, 1, result.stdout)
        error = (
            f"notificator: configuration error: {project.root}/conf: no environment 'prodution'"
            " (no prodution.json); the environments here are: development, production"
        )
        self.assertIn(error + "\n", result.stdout)
        self.assertIn(f"[startup.sh] {error}", project.twistd_log())
        self.assertFalse(os.path.exists(project.pidfile))

    def test_missing_certificate_is_reported(self) -> None:
        """A missing TLS key stops startup.sh with one line, on the terminal and in twistd.log."""
        project = Project(self, production={"server": {"protocol": "https", "port": 0}})
        result = project.run("startup.sh", "production")
        self.assertNotEqual(result.returncode, 0, result.stdout)
        error = (
            f"notificator: TLS error: server.certificates.key: {project.root}/cert/server.key:"
            " cannot read: No such file or directory"
        )
        self.assertIn(error, result.stdout)
        self.assertIn(f"[startup.sh] {error}", project.twistd_log())
        self.assertFalse(os.path.exists(project.pidfile))

    def test_twistd_log_follows_a_given_umask(self) -> None:
        """With --umask=022 in NOTIFICATOR_TWISTD_ARGS the new twistd.log is readable by others."""
        project = Project(self)
        project.start(env={"NOTIFICATOR_TWISTD_ARGS": "--umask=022"})
        self.assertEqual(
            os.stat(os.path.join(project.log_dir, "twistd.log")).st_mode & 0o777, 0o644
        )
        self.assertEqual(project.run("shutdown.sh").returncode, 0)


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


class RestartWithoutLossTests(SynchronousTestCase):
    def test_every_acknowledged_notification_arrives_once_in_order(self) -> None:
        """
        shutdown.sh then startup.sh, on the same port: clients that reconnect
        with their last event id get every notification whose POST got 200,
        exactly once and in order, whether they were connected or away.
        """
        project = Project(
            self, production={"server": {"protocol": "http"}, "sse": {"drainSeconds": 0.5}}
        )
        listen = f"tcp:{free_port()}:interface=127.0.0.1"

        def start() -> int:
            result = project.run("startup.sh", "production", "--listen", listen)
            self.assertEqual(result.returncode, 0, result.stdout + project.twistd_log())
            return int(listen.split(":")[1])

        api = Client(self, start())
        acked: dict[str, list[str]] = {"a": [], "b": []}
        received: dict[str, list[str]] = {"a": [], "b": []}

        def publish(user: str, n: int) -> None:
            status, body = api.post(f"id=notify_{user}&data={n}", FORM)
            self.assertEqual(status, 200, body)
            acked[user].append(body["eventId"])

        def connect(user: str) -> SSEClient:
            headers = {"Last-Event-ID": received[user][-1]} if received[user] else {}
            client = api.subscribe(f"/sse/{user}", headers)
            event = client.next_event()
            self.assertEqual(event["event"], "connect")
            replay = json.loads(event["data"]).get("replay")
            self.assertEqual(replay, "complete" if headers else None)
            return client

        def take(client: SSEClient, user: str, count: int) -> None:
            for _ in range(count):
                received[user].append(client.next_event()["id"])

        a, b = connect("a"), connect("b")
        publish("a", 1)
        publish("b", 1)
        take(a, "a", 1)
        take(b, "b", 1)
        b.close()  # b is away from here on
        for n in (2, 3, 4):
            publish("a", n)
            publish("b", n)
        take(a, "a", 3)
        stop = project.run("shutdown.sh")
        self.assertEqual(stop.returncode, 0, stop.stdout)
        self.assertRaises(ConnectionError, a.next_event)  # ended by the drain
        start()
        a, b = connect("a"), connect("b")
        take(b, "b", 3)  # what b missed, from the history kept on disk
        publish("a", 5)
        publish("b", 5)
        take(a, "a", 1)
        take(b, "b", 1)
        a.nothing_more(1)  # exactly once: no duplicate after the last
        b.nothing_more(0.2)
        self.assertEqual(received, acked)
        self.assertEqual(project.run("shutdown.sh").returncode, 0)


class StartedAsRootTests(SynchronousTestCase):
    """
    C{startup.sh} run as root with C{NOTIFICATOR_TWISTD_ARGS="--uid=<user>
    --gid=<user>"} (docs/operations.rst, "Daemon scripts"): twistd binds the port and
    reads the certificates as root, then runs as a system user made for
    the test.  The installation is root's, under C{/tmp} (the user can
    enter it), with none of the directories the server writes made yet.
    """

    UNTESTED = "SCRIPTS TEST NOT RUN"

    def setUp(self) -> None:
        import pwd
        import tempfile

        from tests.tlssupport import Certs

        self.user = make_user(self, self.UNTESTED)
        self.uid = pwd.getpwnam(self.user).pw_uid
        self.certs = Certs(self)  # root's, read before twistd switches users
        self.port = free_port()
        base = tempfile.mkdtemp(prefix="notificator-root-")
        self.addCleanup(shutil.rmtree, base, True)
        os.chmod(base, 0o755)
        production = {
            "server": {
                "protocol": "https",
                "host": "127.0.0.1",
                "port": self.port,
                "certificates": {
                    "key": self.certs.key,
                    "cert": self.certs.cert,
                    "ca": self.certs.ca,
                },
            },
            "sse": {"heartbeat": False, "drainSeconds": 0.2},
        }
        self.project = Project(self, production, base=base)
        os.chmod(self.project.root, 0o755)
        self.env = {"NOTIFICATOR_TWISTD_ARGS": f"--uid={self.user} --gid={self.user}"}

    def path(self, *names: str) -> str:
        return os.path.join(self.project.root, *names)

    def test_the_daemon_writes_everything_as_that_user(self) -> None:
        """
        The directories the server writes (log/, var/history,
        var/tls-tickets), made before twistd switches users, are the user's,
        and so are the lock and the ticket key taken and written then: the
        daemon, running as the user, serves TLS, logs, keeps its history
        and stops cleanly; afterwards the C{--check} of the guides, run as
        that user, passes (the lock and the key are theirs to open).
        """
        from notificator import tickets
        from notificator.history import read_journal
        from tests.tlssupport import client_context

        project = self.project
        result = project.run("startup.sh", "production", env=self.env)
        self.assertEqual(result.returncode, 0, result.stdout + project.twistd_log())
        m = re.search(r"running pid=(\d+)", result.stdout)
        assert m is not None, result.stdout
        pid = int(m.group(1))
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            uids = re.search(r"^Uid:\s+(.*)$", f.read(), re.M)
        assert uids is not None
        self.assertEqual(set(uids.group(1).split()), {str(self.uid)})

        class HTTPS(Client):
            def connection(inner, timeout: float = 10.0) -> http.client.HTTPConnection:  # noqa: N805
                return http.client.HTTPSConnection(
                    "localhost",
                    self.port,
                    timeout=timeout,
                    context=client_context(self.certs.ca, ["http/1.1"]),
                )

        api = HTTPS(self, self.port)
        stream = api.subscribe("/sse/u1")
        self.assertEqual(stream.next_event()["event"], "connect")
        self.assertEqual(api.post("id=notify_u1&data=1", FORM)[1]["delivered"], 1)
        self.assertEqual(stream.next_event()["data"], "1")
        stream.close()
        made = ["log", "log/sse.log", "log/access.log", "var", "var/history", "var/history/lock"]
        made += ["var/tls-tickets"]
        if tickets.ticket_keys_settable()[0]:
            keys = os.listdir(self.path("var", "tls-tickets"))
            self.assertEqual(len(keys), 1, keys)
            made.append(f"var/tls-tickets/{keys[0]}")
        wait_until(lambda: os.path.exists(self.path("log", "access.log")), what="access.log")
        for name in made:
            self.assertEqual(owner(self.path(name)), self.uid, name)

        stop = project.run("shutdown.sh")
        self.assertEqual(stop.returncode, 0, stop.stdout)
        log = project.twistd_log()
        self.assertIn("Server Shut Down", log)
        self.assertNotIn("Traceback", log)
        self.assertEqual(owner(self.path("var", "history", "history.log")), self.uid)
        with open(self.path("var", "history", "history.log"), "rb") as f:
            loaded = read_journal(f.read())
        self.assertTrue(loaded.clean)
        self.assertEqual(len(loaded.users["u1"][1]), 1)

        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        check = subprocess.run(
            as_user(self.user, [sys.executable, twistd, "-n", "notificator", "--env",
                                "production", "--check"], self.UNTESTED),
            cwd=project.root,
            env=project.env,
            capture_output=True,
            text=True,
            timeout=60,
        )  # fmt: skip
        self.assertEqual((check.returncode, check.stderr), (0, ""), check.stdout)
        self.assertIn("notificator: configuration OK (", check.stdout)

    def test_a_directory_that_user_cannot_write_stops_start_up(self) -> None:
        """
        A directory the server writes that exists and is root's (0755)
        stops start-up with one line naming the key, the directory and the
        user, on the terminal; no daemon is left, no traceback.
        """
        os.makedirs(self.path("var", "history"))
        result = self.project.run("startup.sh", "production", env=self.env)
        self.assertEqual(result.returncode, 1, result.stdout)
        line = (
            f"notificator: configuration error: sse.history.dir: {self.path('var', 'history')}:"
            f" no write permission for user {self.user} (uid {self.uid})"
        )
        self.assertEqual(result.stdout.splitlines()[0], line, result.stdout)
        self.assertNotIn("Traceback", result.stdout + self.project.twistd_log())
        self.assertNotIn("running pid=", result.stdout)
        self.assertFalse(os.path.exists(self.project.pidfile))

    def test_a_twistd_log_that_is_a_link_is_not_written_as_root(self) -> None:
        """
        In a log directory the user may write, a twistd.log that is a
        symbolic link (to a file of root's) stops startup.sh before root
        writes through it.
        """
        os.makedirs(self.path("log"))
        shutil.chown(self.path("log"), self.user, self.user)
        target = os.path.join(self.project.elsewhere, "roots-file")
        with open(target, "w", encoding="ascii") as f:
            f.write("root's\n")
        os.symlink(target, self.path("log", "twistd.log"))
        result = self.project.run("startup.sh", "production", env=self.env)
        self.assertEqual(result.returncode, 1, result.stdout)
        self.assertIn(
            "twistd.log is not a plain file (a link?); as root, not writing it", result.stdout
        )
        with open(target, encoding="ascii") as f:
            self.assertEqual(f.read(), "root's\n")


class WorkersScriptTests(SynchronousTestCase):
    """startup.sh restart: a graceful restart of a server with workers; a plain one otherwise."""

    def project(self, **server: Any) -> Project:
        import tempfile

        from tests.support import redis_server_path

        if server.get("workers", 1) > 1:
            redis_server_path()  # skip (or fail in CI) before anything starts
        # (The private Redis's socket path must hold in 107 bytes.)
        base = tempfile.mkdtemp(prefix="ntf-")
        self.addCleanup(shutil.rmtree, base, True)
        self.listen = f"tcp:port={free_port()}:interface=127.0.0.1"
        return Project(self, {"server": {"protocol": "http", **server}}, base=base)

    def started(self, project: Project) -> int:
        result = project.run("startup.sh", "production", "--listen", self.listen)
        self.assertEqual(result.returncode, 0, result.stdout + project.twistd_log())
        return int(re.search(r"running pid=(\d+)", result.stdout).group(1))  # type: ignore[union-attr]

    def workers(self, project: Project) -> dict[int, int]:
        found = re.findall(r"worker (\d+) started \(pid (\d+)\)", project.twistd_log())
        return {int(slot): int(pid) for slot, pid in found}

    def test_restart_replaces_the_workers_gracefully(self) -> None:
        """
        With workers, restart sends SIGHUP and waits for "reload done": the
        same supervisor (pid file), new workers, the port open throughout;
        shutdown.sh then stops everything.
        """
        project = self.project(workers=2)
        pid = self.started(project)
        wait_until(lambda: "all 2 workers ready" in project.twistd_log(), 60, project.twistd_log)
        self.assertIn(" supervisor of 2 workers", process_title(pid))
        before = self.workers(project)
        result = project.run("startup.sh", "restart", "production", "--listen", self.listen)
        self.assertEqual(result.returncode, 0, result.stdout + project.twistd_log())
        self.assertIn(f"Sent SIGHUP to Notificator SSE Server pid={pid}", result.stdout)
        self.assertIn(
            f"Notificator SSE Server restarted pid={pid}: reload done: 2 workers replaced",
            result.stdout,
        )
        self.assertEqual(project.read_pidfile(), pid)
        after = self.workers(project)
        self.assertTrue(set(before.values()).isdisjoint(after.values()), (before, after))
        port = int(self.listen.split("port=")[1].split(":")[0])
        self.assertEqual(Client(self, port).request("GET", "/health")[0], 200)
        stopped = project.run("shutdown.sh")
        self.assertEqual(stopped.returncode, 0, stopped.stdout)
        for each in [pid, *after.values()]:
            wait_until(lambda each=each: not alive(each), what=f"pid {each} gone")

    def test_restart_of_one_process_stops_and_starts(self) -> None:
        """Without workers, restart is shutdown.sh then a start (a new pid); when stopped, a start."""
        project = self.project()
        first = self.started(project)
        result = project.run("startup.sh", "restart", "production", "--listen", self.listen)
        self.assertEqual(result.returncode, 0, result.stdout + project.twistd_log())
        self.assertIn(f"Notificator SSE Server stopped pid={first}", result.stdout)
        second = int(re.search(r"running pid=(\d+)", result.stdout).group(1))  # type: ignore[union-attr]
        self.assertNotEqual(first, second)
        self.assertFalse(alive(first))
        self.assertEqual(project.run("shutdown.sh").returncode, 0)
        result = project.run("startup.sh", "restart", "production", "--listen", self.listen)
        self.assertEqual(result.returncode, 0, result.stdout)
        self.assertIn("is running pid=", result.stdout)
        self.assertEqual(project.run("shutdown.sh").returncode, 0)
