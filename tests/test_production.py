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

from twisted.trial.unittest import SynchronousTestCase

import twisted
from notificator import __version__, config
from notificator.config import model
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


class CheckTests(SynchronousTestCase):
    """C{--check}: everything the server needs, checked like C{nginx -t}, without serving."""

    def setUp(self) -> None:
        from tests.tlssupport import Certs

        self.certs = Certs(self)

    def check(self, install: Install, *args: str) -> subprocess.CompletedProcess[str]:
        return run_twistd(
            self, "--config", install.conf, "--env", "production", "--check", *args,
            cwd=install.root,
        )  # fmt: skip

    def production(self, **server: Any) -> dict[str, Any]:
        """
        An http2 production.json on a fixed port with the test certificates
        and a subscriber secret (as production should: else it warns).
        """
        return {
            "server": {
                "protocol": "http2",
                "port": free_port(),
                "host": "127.0.0.1",
                "certificates": {
                    "key": self.certs.key,
                    "cert": self.certs.cert,
                    "ca": self.certs.ca,
                },
                **server,
            },
            "sse": {"auth": {"secret": "a-long-random-secret-for-the-check-tests-0123456789"}},
        }

    def test_ok_is_one_line_and_nothing_else_happens(self) -> None:
        """
        A good configuration: exit 0 and one line saying what it is; no
        port bound, no log or history directory created, no twistd start.
        """
        production = self.production()
        port = production["server"]["port"]
        install = Install(self, {"production": production})
        result = self.check(install)
        self.assertEqual((result.returncode, result.stderr), (0, ""), result.stdout)
        lines = result.stdout.splitlines()
        self.assertEqual(len(lines), 1, result.stdout)
        self.assertTrue(lines[0].startswith("notificator: configuration OK (env production: "))
        self.assertIn(f"{install.conf}/production.json", lines[0])
        self.assertIn(f"https:port={port}:interface=127.0.0.1:", lines[0])
        self.assertIn(f"logs in {install.root}/log", lines[0])
        self.assertIn(f"history in {install.root}/var/history", lines[0])
        self.assertIn("Redis not used", lines[0])
        self.assertEqual(sorted(os.listdir(install.root)), ["conf"])
        # The port was never bound: it is free for the real start.
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))

    def test_a_running_servers_history_lock_is_reported_not_refused(self) -> None:
        """
        Checked while the server runs (before restarting it): its lock on
        the history directory is named in the line, and the check passes;
        the lock is still the holder's afterwards.
        """
        from notificator import pidlock

        install = Install(self, {"production": self.production()})
        directory = os.path.join(install.root, "var", "history")
        os.makedirs(directory)
        lock = pidlock.DirectoryLock(directory)
        lock.acquire()
        self.addCleanup(lock.release)
        result = self.check(install)
        self.assertEqual((result.returncode, result.stderr), (0, ""), result.stdout)
        self.assertIn(
            f"history in {directory}, in use by the running server (pid {os.getpid()})",
            result.stdout,
        )
        self.assertTrue(lock.held)
        self.assertEqual(lock.holder(), os.getpid())

    def test_listen_does_not_skip_the_certificates(self) -> None:
        """
        With --listen (the migration dry run on a spare port), the
        configured listeners' certificates are checked all the same: a
        missing key is one line naming server.certificates.key, exit 1.
        """
        missing = os.path.join(self.certs.dir, "nothing.key")
        install = Install(self, {"production": self.production()})
        write_config(
            install.conf,
            {"local": {"server": {"certificates": {"key": missing}}}},
        )
        result = self.check(install, "--listen", "tcp:0:interface=127.0.0.1")
        self.assertEqual(
            (result.returncode, result.stdout, result.stderr),
            (
                1,
                "",
                f"notificator: TLS error: server.certificates.key: {missing}: cannot read:"
                " No such file or directory\n",
            ),
        )
        # Without --check such a run serves on the spare port: the
        # certificates are not needed there.
        server = Server(self, conf_files={"default": {}, "test": self.production()})
        write_config(
            os.path.join(server.dir, "conf"),
            {"local": {"server": {"certificates": {"key": missing}}}},
        )
        server.start()
        self.assertEqual(server.request("GET", "/health")[0], 200)

    def test_history_directory_that_cannot_be_written(self) -> None:
        """An sse.history.dir under a file: one line naming the key, exit 1, nothing created."""
        install = Install(self, {"production": self.production()})
        blocker = os.path.join(install.root, "file")
        with open(blocker, "w"):
            pass
        write_config(install.conf, {"local": {"sse": {"history": {"dir": "file/history"}}}})
        result = self.check(install)
        self.assertEqual(result.returncode, 1, result.stdout)
        self.assertEqual(
            result.stderr,
            f"notificator: configuration error: sse.history.dir: {blocker}/history:"
            f" {blocker} is not a directory\n",
        )
        self.assertEqual(sorted(os.listdir(install.root)), ["conf", "file"])

    def test_cluster_ca_is_read(self) -> None:
        """
        In cluster mode the Redis URL is checked with the config and
        cluster.ca is read (Redis is not contacted): an unreadable CA file
        is one line naming cluster.ca, a good one is OK.
        """
        install = Install(self, {"production": self.production()})
        missing = os.path.join(install.root, "redis-ca.pem")
        cluster = {"redis": "rediss://127.0.0.1:1/0", "ca": missing}
        write_config(install.conf, {"local": {"cluster": cluster}})
        result = self.check(install)
        self.assertEqual(
            (result.returncode, result.stderr),
            (
                1,
                f"notificator: configuration error: cluster.ca: {missing}: No such file or"
                " directory\n",
            ),
        )
        write_config(install.conf, {"local": {"cluster": {**cluster, "ca": self.certs.ca}}})
        result = self.check(install)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("Redis rediss://127.0.0.1:1/0 (not contacted)", result.stdout)

    def test_warnings_come_first(self) -> None:
        """Config warnings (an unknown key) are printed, one line each, before the OK line."""
        install = Install(self, {"production": self.production()})
        write_config(install.conf, {"local": {"sse": {"hearbeat": True}}})
        result = self.check(install)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(
            result.stdout.splitlines()[0],
            f"notificator: warning: config: {install.conf}/local.json: sse.hearbeat: unknown"
            " key, ignored",
        )
        self.assertRegex(result.stdout.splitlines()[1], r"configuration OK \(.*; 1 warning\)$")
        self.assertEqual(len(result.stdout.splitlines()), 2)

    def test_bad_config_is_exit_one(self) -> None:
        """A bad value: the configuration error line, exit 1."""
        install = Install(self, {"production": {"server": {"port": "3443a"}}})
        result = self.check(install)
        self.assertEqual(result.returncode, 1)
        self.assertEqual(
            result.stderr,
            f"notificator: configuration error: {install.conf}/production.json: server.port:"
            ' expected an integer, got "3443a"\n',
        )


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
        for answer, code in zip(answers, (b"403", b"413", b"413"), strict=True):
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
        for line, sid, code in zip(lines, streams, (403, 413), strict=True):
            self.assertRegex(
                line,
                rf'^"127\.0\.0\.1" - - \[[^]]+\] "POST /webNotification HTTP/2" {code}'
                rf' {len(c.data[sid])} "-" "h2-early"$',
            )
        self.assertNotIn("Traceback", server.log("sse.log") + server.log())


def section(text: str, title: str) -> str:
    """The text of the README section titled C{title} (up to the next title of its level or above)."""
    lines = text.splitlines()
    start = lines.index(title)
    underline = lines[start + 1][0]
    levels = "=-~"
    end = len(lines)
    for i in range(start + 2, len(lines) - 1):
        mark = lines[i + 1][:1]
        if (
            lines[i]
            and mark in levels
            and set(lines[i + 1]) == {mark}
            and len(lines[i + 1]) >= len(lines[i]) - 2
            and levels.index(mark) <= levels.index(underline)
        ):
            end = i
            break
    return "\n".join(lines[start:end])


def leaves(doc: dict[str, Any]) -> set[str]:
    """The dotted config keys of a config document (L{config.model.SCHEMA}'s leaves)."""
    return {key for key, _ in model.leaves(doc)}


#: The keys of the node server's configuration (its conf/production.json,
#: which Notificator's first conf/production.json copied): what an operator
#: migrating already has, so not "new".
OLD_SERVER_KEYS = frozenset(
    {
        "server.protocol",
        "server.port",
        "server.host",
        "server.certificates.ca",
        "server.certificates.key",
        "server.certificates.cert",
        "server.log.level",
        "server.log.dir",
        "sse.header",
        "sse.heartbeat",
        "sse.heartbeatInterval",
    }
)


class MigrationGuideTests(SynchronousTestCase):
    """
    The migration guide (docs/migration.rst and docs/ko/migration.rst,
    "Migrating from the node server") against what ships: publishing is
    loopback only, said first, with the line to add; every new key listed.
    """

    GUIDES = {
        os.path.join("docs", "migration.rst"): (
            "Migrating from the node server",
            "New keys",
            "A key Notificator",
        ),
        os.path.join("docs", "ko", "migration.rst"): (
            "node 서버에서 옮기기",
            "새로 생긴 키",
            "Notificator가 모르는",
        ),
    }

    def guide(self, name: str) -> str:
        with open(os.path.join(PROJECT, name), encoding="utf-8") as f:
            return section(f.read(), self.GUIDES[name][0])

    def test_publish_allow_comes_first(self) -> None:
        """
        Before anything else the guide says publishing is loopback only by
        default, with a publish.allow line that, added to local.json,
        loads and lets a sender's network publish.
        """
        default_allow = config.defaults().publish.allow
        self.assertEqual([str(n) for n in default_allow], ["127.0.0.1/32", "::1/128"])
        for name in self.GUIDES:
            with self.subTest(guide=name):
                text = self.guide(name)
                first = text.split("\n\n")[1] + text.split("\n\n")[2]
                self.assertIn("``publish.allow``", first)
                line = re.search(r"\n    (\{ \"publish\": .*\})\n", text)
                assert line is not None, text[:2000]
                self.assertLess(line.start(), text.index("\n----"))
                conf = write_config(
                    os.path.join(self.mktemp(), "conf"), {"production": {}, "local": line.group(1)}
                )
                from twisted.python.filepath import FilePath

                allowed = config.load(FilePath(conf), "production").publish.allow
                self.assertEqual(allowed[:2], default_allow)
                self.assertGreater(len(allowed), 2)

    def test_new_keys_are_all_listed(self) -> None:
        """
        The "new keys" list names every key of conf/default.json that the
        old server's configuration did not have (L{OLD_SERVER_KEYS}), and
        nothing else.
        """
        shipped, _ = config.shipped_defaults()
        expected = leaves(shipped) - OLD_SERVER_KEYS
        for name, (_, start, end) in self.GUIDES.items():
            with self.subTest(guide=name):
                text = self.guide(name)
                listed = text[text.index(start) : text.index(end)]
                keys = set(re.findall(r"``([A-Za-z]+(?:\.[A-Za-z]+)+)``", listed))
                self.assertEqual(
                    (sorted(expected - keys), sorted(keys - expected)),
                    ([], []),
                    f"{name}, 'Migrating from the node server': the new keys listed differ"
                    " from conf/default.json's (missing, unknown)",
                )


class RepositoryTests(SynchronousTestCase):
    def test_no_stray_files_at_the_root(self) -> None:
        """The files tracked at the repository's root are the known ones (a stray '0' was there)."""
        if not os.path.exists(os.path.join(PROJECT, ".git")):
            not_here(f"not a git checkout: {PROJECT}")
        result = subprocess.run(
            ["git", "-C", PROJECT, "ls-files"], capture_output=True, text=True, timeout=60
        )
        if result.returncode != 0:
            not_here(f"git ls-files failed: {result.stderr.strip()}")
        root = sorted(
            {path.split("/")[0] for path in result.stdout.splitlines() if "/" not in path}
        )
        self.assertEqual(
            root,
            [
                ".coveragerc",
                ".gitignore",
                "CHANGELOG.rst",
                "CONTRIBUTING.rst",
                "README.ko.rst",
                "README.rst",
                "daemon-lib.sh",
                "pyproject.toml",
                "shutdown.sh",
                "startup.sh",
                "tox.ini",
            ],
        )


#: A row of the "before production" checklist: the key, first in its row
#: (a simple table's first column, or a list table's first item), and the
#: shipped value, the next literal of the row.
_CHECKLIST_ROW = re.compile(
    r"(?m)^(?:\s*\* - )?``([A-Za-z][\w-]*(?:\.[\w-]+)+)``[ \t]*\n?[ \t]*(?:- )?``([^`]+)``"
)


class ChecklistTests(SynchronousTestCase):
    """
    The "before production" checklist at the top of README.rst and
    README.ko.rst: its "shipped" column is what --env production runs with
    when nothing is set (conf/default.json under conf/production.json), in
    both guides, and it names the settings production warns about.
    """

    GUIDES = {"README.rst": "Before production", "README.ko.rst": "운영 전에"}

    def rows(self, name: str) -> dict[str, Any]:
        with open(os.path.join(PROJECT, name), encoding="utf-8") as f:
            text = section(f.read(), self.GUIDES[name])
        rows = {key: json.loads(value) for key, value in _CHECKLIST_ROW.findall(text)}
        self.assertGreater(len(rows), 5, f"{name}: no checklist found")
        return rows

    def shipped(self) -> dict[str, Any]:
        """conf/default.json merged under conf/production.json, as the files are merged."""
        from twisted.python.filepath import FilePath

        doc: dict[str, Any] = {}
        for name in ("default", "production"):
            config.merge(
                doc,
                {},
                config.read_json(FilePath(os.path.join(PROJECT, "conf", name + ".json"))),
                name,
            )
        return doc

    def test_shipped_column_is_what_ships(self) -> None:
        """Each key's "shipped" value is the value production runs with, in both guides."""
        shipped = self.shipped()
        for name in self.GUIDES:
            for key, value in self.rows(name).items():
                with self.subTest(guide=name, key=key):
                    if key.startswith("sse.header."):
                        actual = shipped["sse"]["header"][key[len("sse.header.") :]]
                    else:
                        actual = shipped
                        for part in key.split("."):
                            actual = actual[part]
                    self.assertEqual(value, actual)

    def test_both_guides_list_the_same_keys(self) -> None:
        """The Korean checklist has the English one's rows."""
        self.assertEqual(list(self.rows("README.ko.rst")), list(self.rows("README.rst")))

    def test_what_production_warns_about_is_listed(self) -> None:
        """
        Every key production warns about when left as shipped or opened
        ("*" among the origins, no subscriber secret) has a row.
        """
        from twisted.python.filepath import FilePath

        conf = write_config(
            os.path.join(self.mktemp(), "conf"),
            {"production": {"sse": {"header": {"Access-Control-Allow-Origin": "*"}}}},
        )
        warnings = config.load(FilePath(conf), "production").warnings
        warned = {w.split(": ")[1] for w in warnings}
        self.assertEqual(warned, {"sse.header.Access-Control-Allow-Origin", "sse.auth.secret"})
        for name in self.GUIDES:
            self.assertLessEqual(warned, set(self.rows(name)), name)
