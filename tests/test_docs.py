"""
Tests for the guides themselves: README.rst stays the operator's short
first page with the two commands CI runs, README.ko.rst mirrors it, the
links between the guides lead somewhere (on a git forge, and in the Sphinx
build of C{docs/}: L{docs/conf.py}'s rewriting), and the performance page
cites only files that are in the repository.

The Sphinx build itself, with warnings as errors, is C{tox -e docs}.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import re
from types import ModuleType

from twisted.trial.unittest import SynchronousTestCase

from tests.support import PROJECT

#: The two commands near the top of README.rst: install and run the server
#: on the shipped config, and install and run every test (what .ci/run runs).
RUN_COMMAND = "python3 -m venv venv && venv/bin/pip install . && venv/bin/twistd -n notificator"
TEST_COMMAND = "python3 -m venv venv && venv/bin/pip install tox && venv/bin/tox"

#: The files a git forge shows whose links must lead somewhere (the ones the
#: Sphinx build includes as they are).
LINKED = ("README.rst", "README.ko.rst", "CONTRIBUTING.rst", "bench/README.rst")

#: A hyperlink with an embedded target: `text <target>`_ or `text <target>`__.
LINK = re.compile(r"`[^`<]*?<([^`<>]+?)>`__?", re.S)


def read(path: str) -> str:
    with open(os.path.join(PROJECT, path), encoding="utf-8") as f:
        return f.read()


def titles(text: str, mark: str) -> list[str]:
    """The titles underlined with C{mark} (C{=} for a README's sections)."""
    lines = text.splitlines()
    return [
        lines[i]
        for i in range(1, len(lines) - 1)
        if lines[i].strip()
        and set(lines[i + 1]) == {mark}
        and len(lines[i + 1]) >= len(lines[i]) - 2
        and not (i > 0 and set(lines[i - 1]) == {mark})
    ]


def docs_conf() -> ModuleType:
    """docs/conf.py, loaded as a module (it needs nothing but the standard library)."""
    spec = importlib.util.spec_from_file_location(
        "notificator_docs_conf", os.path.join(PROJECT, "docs", "conf.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def expand(word: str) -> list[str]:
    """A shell brace pattern (C{a-{1,2}-{x,y}.json}) as the names it stands for."""
    parts = re.split(r"\{([^{}]*)\}", word)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*choices)]


class ReadmeTests(SynchronousTestCase):
    """README.rst: short, for the operator, with the two commands CI runs."""

    def test_short(self) -> None:
        """README.rst is at most 400 lines: the rest is in docs/."""
        lines = read("README.rst").splitlines()
        self.assertLessEqual(len(lines), 400, "README.rst: move the details into docs/")

    def test_two_commands_near_the_top(self) -> None:
        """
        Both READMEs give the run command and the test command, as literal
        blocks of their own, before their first section after the quick
        start; .ci/run runs the very test command.
        """
        for name in ("README.rst", "README.ko.rst"):
            text = read(name)
            quick_start = text[: text.index("\n.. contents::")]
            for command in (RUN_COMMAND, TEST_COMMAND):
                self.assertIn(f"::\n\n    {command}\n\n", quick_start, name)
        ci = read(".ci/run")
        self.assertIn("{ " + TEST_COMMAND + "; }", ci)

    def test_korean_mirrors(self) -> None:
        """README.ko.rst has README.rst's sections, and points to every Korean guide."""
        english, korean = read("README.rst"), read("README.ko.rst")
        self.assertEqual(len(titles(korean, "=")), len(titles(english, "=")))
        self.assertEqual(len(titles(korean, "-")), len(titles(english, "-")))
        pages = sorted(
            name for name in os.listdir(os.path.join(PROJECT, "docs", "ko")) if name != "index.rst"
        )
        self.assertGreater(len(pages), 0)
        for page in pages:
            self.assertIn(f"<docs/ko/{page}>", korean, page)


class LinkTests(SynchronousTestCase):
    """The links of the files a git forge shows, and what the Sphinx build makes of them."""

    def test_links_lead_somewhere(self) -> None:
        """
        Each relative link names a file or folder of the repository, and a
        C{#label} after it a label that file defines.
        """
        checked = 0
        for name in LINKED:
            base = os.path.dirname(name)
            for target in LINK.findall(read(name)):
                target = " ".join(target.split())
                if re.match(r"^[a-z]+:", target):
                    continue
                path, _, label = target.partition("#")
                full = os.path.normpath(os.path.join(PROJECT, base, path))
                self.assertTrue(os.path.exists(full), f"{name}: {target}: no such file")
                if label:
                    with open(full, encoding="utf-8") as f:
                        self.assertIn(f"\n.. _{label}:\n", f.read(), f"{name}: {target}")
                checked += 1
        self.assertGreater(checked, 20)

    def test_readme_links_become_cross_references(self) -> None:
        """
        In the Sphinx build, a link to a guide becomes a C{:doc:}, one with
        a label a C{:ref:}, one to an included file the document that
        includes it, and one to anything else its text.
        """
        conf = docs_conf()
        from pathlib import Path

        text = (
            "`Limits <docs/operations.rst#limits>`__, `api <docs/api.rst>`_,"
            " `ko <docs/ko/operations.rst>`__, `Korean <README.ko.rst>`__,"
            " `bench <bench/README.rst>`__, `contrib/ <contrib>`__"
        )
        self.assertEqual(
            conf._links(Path("README.rst"), text),
            ":ref:`Limits <limits>`, :doc:`api </api>`,"
            " :doc:`ko </ko/operations>`, :doc:`Korean </ko/index>`,"
            " :doc:`bench </bench>`, contrib/",
        )
        # Relative to the including file's folder.
        self.assertEqual(
            conf._links(Path("bench/README.rst"), "`page <../docs/performance.rst>`__"),
            ":doc:`page </performance>`",
        )
        for name, document in conf.INCLUDED.items():
            self.assertTrue(os.path.exists(os.path.join(PROJECT, name)), name)
            wrapper = read(os.path.join("docs", document + ".rst"))
            self.assertIn(".. include:: ", wrapper, document)
            target = os.path.relpath(name, os.path.dirname(os.path.join("docs", document)))
            self.assertIn(f".. include:: {target}\n", wrapper, document)


class PerformancePageTests(SynchronousTestCase):
    """docs/performance.rst cites only what is in the repository."""

    def test_cited_files_exist(self) -> None:
        """
        Every path the page cites (C{bench/...}, and the result files, by
        name or by brace pattern, in C{bench/results/}) exists.
        """
        text = read(os.path.join("docs", "performance.rst"))
        self.assertNotIn("shared/bench", text)
        cited = 0
        for literal in re.findall(r"``([^`]+)``", text):
            for word in literal.split():
                if word.startswith("bench/") or word.endswith(".json"):
                    for name in expand(word.rstrip(",;")):
                        if "/" not in name:
                            name = os.path.join("bench", "results", name)
                        self.assertTrue(
                            os.path.exists(os.path.join(PROJECT, name)),
                            f"docs/performance.rst cites {name}, not in the repository",
                        )
                        cited += 1
        self.assertGreater(cited, 10)

    def test_expand(self) -> None:
        """The brace patterns the page uses stand for the names they should."""
        self.assertEqual(
            expand("a-{1,2}-{x,y}.json"), ["a-1-x.json", "a-1-y.json", "a-2-x.json", "a-2-y.json"]
        )
        self.assertEqual(expand("plain.json"), ["plain.json"])


class MetricNamesTests(SynchronousTestCase):
    """The guides name the metrics the server exposes, and only those."""

    def table(self) -> set[str]:
        """The metric names of docs/operations.rst's table ("Users, health and metrics")."""
        operations = read(os.path.join("docs", "operations.rst"))
        names = set(re.findall(r"(?m)^``(notificator_[a-z_]+)(?:\{\w+\})?``\s", operations))
        self.assertGreater(len(names), 20)
        return names

    def test_table_is_the_code(self) -> None:
        """
        The table names every metric family the package defines (a counter
        with the C{_total} its exposition adds), and nothing else.
        """
        defined = set()
        for folder, _, names in os.walk(os.path.join(PROJECT, "notificator")):
            for name in names:
                if name.endswith(".py"):
                    with open(os.path.join(folder, name), encoding="utf-8") as f:
                        defined |= set(re.findall(r'"(notificator_[a-z_]+)"', f.read()))
        table = self.table()
        self.assertEqual(
            sorted(d for d in defined if d not in table and d + "_total" not in table), []
        )
        self.assertEqual(
            sorted(
                t for t in table if t not in defined and t.removesuffix("_total") not in defined
            ),
            [],
        )

    def test_only_listed_metrics(self) -> None:
        """Every C{notificator_*} metric a guide names, in either language, is in the table."""
        table = self.table()
        guides = ["README.rst", "README.ko.rst", "CONTRIBUTING.rst"] + [
            os.path.relpath(os.path.join(folder, name), PROJECT)
            for folder, _, names in os.walk(os.path.join(PROJECT, "docs"))
            for name in names
            if name.endswith(".rst")
        ]
        named = 0
        for guide in guides:
            for name in re.findall(r"\bnotificator_[a-z_]+", read(guide)):
                self.assertIn(name, table, f"{guide} names {name}, which is no metric")
                named += 1
        self.assertGreater(named, 30)
