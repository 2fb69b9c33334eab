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
