"""
The layer rule of the package (C{docs/architecture.rst}, "The layer
rule"), checked by reading every module's imports with L{ast}, without
importing anything.

Every import counts for the layers: at module level, inside functions
(the late imports that keep txredisapi out until cluster mode), and under
C{if TYPE_CHECKING:} (an annotation that names another layer is a
dependency on it all the same, only a quieter one).  For the cycles, only
what runs when the module is imported counts: module-level imports,
outside C{if TYPE_CHECKING:}.

The layers, lowest first:

 - the core: L{notificator.events}, C{ingest}, C{hub}, C{stats}, C{auth},
   C{cors}, C{text}, C{timers}, C{config}, C{history} (and the package's
   C{__init__}, which holds the version): no C{twisted.web}, and nothing
   of the package outside the core;
 - the leaves: C{tls}, C{tickets}, C{listening}, C{pidlock}, C{runas}: the
   core and each other;
 - the brokers (C{notificator.broker.*}): the core and the broker package,
   and no C{twisted.web};
 - C{notificator.metrics}: the core and the broker protocol
   (C{notificator.broker} itself), and no C{twisted.web};
 - the logs (C{notificator.logs.*}): the core and the logs package;
 - the HTTP edge (C{notificator.http.*}): the core, the logs, the metrics,
   the broker protocol (never C{broker.local} nor C{broker.redis}) and the
   edge itself;
 - what composes: C{notificator.app}, C{tap}, C{services},
   C{notificator.workers.*}: anything; and no other module of the package
   imports them (tests and bench may).
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator

import attrs
from twisted.trial.unittest import SynchronousTestCase

from tests.support import PROJECT

PACKAGE = "notificator"

CORE = frozenset(
    f"{PACKAGE}.{name}"
    for name in (
        "events",
        "ingest",
        "hub",
        "stats",
        "auth",
        "cors",
        "text",
        "timers",
        "config",
        "history",
    )
)
LEAVES = frozenset(
    f"{PACKAGE}.{name}" for name in ("tls", "tickets", "listening", "pidlock", "runas")
)
BROKER = f"{PACKAGE}.broker"
METRICS = f"{PACKAGE}.metrics"
LOGS = f"{PACKAGE}.logs"
HTTP = f"{PACKAGE}.http"
COMPOSERS = frozenset(f"{PACKAGE}.{name}" for name in ("app", "tap", "services", "workers"))


@attrs.frozen
class Import:
    """One import of a module of the package, as written in C{importer}."""

    importer: str
    imported: str
    #: The importer's file, from the project's root.
    path: str
    line: int
    #: Runs when C{importer} is imported: module level, not under
    #: C{if TYPE_CHECKING:}.
    eager: bool

    def __str__(self) -> str:
        return f"{self.path}:{self.line} imports {self.imported}"


def within(module: str, top: str | frozenset[str]) -> bool:
    """Whether C{module} is C{top} (or one of them) or inside it."""
    tops = {top} if isinstance(top, str) else top
    return any(module == t or module.startswith(t + ".") for t in tops)


def core(module: str) -> bool:
    """Whether C{module} is of the core (the package itself: its version)."""
    return module == PACKAGE or within(module, CORE)


def modules(root: str) -> dict[str, str]:
    """Every module of the package under C{root}: dotted name -> file."""
    found: dict[str, str] = {}
    for directory, _, files in os.walk(os.path.join(root, PACKAGE)):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(directory, name)
            dotted = os.path.relpath(path, root)[: -len(".py")].replace(os.sep, ".")
            found[dotted.removesuffix(".__init__")] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(
    body: list[ast.stmt], eager: bool
) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement in C{body}, and whether it runs at import time."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, eager
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _statements(node.body, False)
            yield from _statements(node.orelse, eager)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    yield inner, False
        else:
            # Classes, try/except, with, other ifs: their direct statements
            # run as the module is imported; functions inside them do not.
            children = [c for c in ast.iter_child_nodes(node) if isinstance(c, ast.stmt)]
            yield from _statements(children, eager)


def imports(name: str, path: str, known: dict[str, str], root: str) -> list[Import]:
    """
    The package's modules and the twisted.web modules that module C{name}
    (in file C{path}, under C{root}) imports.
    """
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found = []
    for node, eager in _statements(tree.body, True):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                # "from notificator import auth" imports the module auth.
                sub = f"{base}.{alias.name}"
                targets.append(sub if sub in known else base)
        where = os.path.relpath(path, root).replace(os.sep, "/")
        for target in targets:
            if (within(target, PACKAGE) and target != name) or within(target, "twisted.web"):
                found.append(Import(name, target, where, node.lineno, eager))
    return found


def allowed(edge: Import) -> bool:
    """Whether the layer rule lets C{edge.importer} import C{edge.imported}."""
    importer, imported = edge.importer, edge.imported
    if within(imported, "twisted.web"):
        return not (core(importer) or within(importer, BROKER) or importer == METRICS)
    if within(importer, COMPOSERS):
        return True
    if within(imported, COMPOSERS):
        return False
    if core(importer):
        return core(imported)
    if within(importer, LEAVES):
        return core(imported) or within(imported, LEAVES)
    if within(importer, BROKER):
        return core(imported) or within(imported, BROKER)
    if importer == METRICS:
        return core(imported) or imported == BROKER
    if within(importer, LOGS):
        return core(imported) or within(imported, LOGS)
    if within(importer, HTTP):
        return (
            core(imported)
            or within(imported, LOGS)
            or within(imported, HTTP)
            or imported in (METRICS, BROKER)
        )
    raise AssertionError(f"{importer} is in no layer: add it to one in {__name__}")


def violations(edges: list[Import]) -> list[str]:
    """Each import the layer rule forbids, one line naming it."""
    return [str(edge) for edge in edges if not allowed(edge)]


def cycles(edges: list[Import]) -> list[list[str]]:
    """The import cycles among the eager imports (one per strongly connected group)."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        if edge.eager and within(edge.imported, PACKAGE):
            graph.setdefault(edge.importer, set()).add(edge.imported)
            graph.setdefault(edge.imported, set())
    # Tarjan's strongly connected components, iteratively.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        found.append(sorted(group))
    return found


def cycle_lines(edges: list[Import]) -> list[str]:
    """Each cycle, with the imports that close it."""
    lines = []
    for group in cycles(edges):
        members = set(group)
        closing = [
            str(e) for e in edges if e.eager and e.importer in members and e.imported in members
        ]
        lines.append(" -> ".join(group) + ": " + "; ".join(closing))
    return lines


def package_imports(root: str = PROJECT) -> list[Import]:
    known = modules(root)
    edges: list[Import] = []
    for name, path in sorted(known.items()):
        edges.extend(imports(name, path, known, root))
    return edges


class LayerRuleTests(SynchronousTestCase):
    def test_every_import_keeps_to_its_layer(self) -> None:
        """No module imports a layer above its own, nor a broker implementation from the edge."""
        found = violations(package_imports())
        if found:
            self.fail("imports against the layer rule (tests/test_layers.py):\n" + "\n".join(found))

    def test_no_import_cycle(self) -> None:
        """No module imports, through others, a module that imports it."""
        found = cycle_lines(package_imports())
        if found:
            self.fail("import cycles:\n" + "\n".join(found))


class WalkerTests(SynchronousTestCase):
    """The walker finds what the rule forbids, wherever the import is written."""

    def package(self, files: dict[str, str]) -> list[Import]:
        """The imports of a package made of C{files} (path under C{notificator/} -> source)."""
        root = os.path.abspath(self.mktemp())
        for name, source in {"__init__.py": "", **files}.items():
            path = os.path.join(root, PACKAGE, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(source)
        return package_imports(root)

    def test_core_importing_twisted_web_anywhere(self) -> None:
        """twisted.web in the core is found at module level, in a function, a method and under TYPE_CHECKING."""
        edges = self.package(
            {
                "hub.py": (
                    "from typing import TYPE_CHECKING\n"
                    "import twisted.web.http\n"
                    "if TYPE_CHECKING:\n"
                    "    from twisted.web.server import Request\n"
                    "def f():\n"
                    "    from twisted.web import resource\n"
                    "class C:\n"
                    "    def m(self):\n"
                    "        import twisted.web.iweb\n"
                ),
            }
        )
        self.assertEqual(
            violations(edges),
            [
                "notificator/hub.py:2 imports twisted.web.http",
                "notificator/hub.py:4 imports twisted.web.server",
                "notificator/hub.py:6 imports twisted.web",
                "notificator/hub.py:9 imports twisted.web.iweb",
            ],
        )

    def test_layers_above(self) -> None:
        """Each layer's forbidden imports are named, whatever form the import takes."""
        edges = self.package(
            {
                "auth.py": "from notificator import tls\n",
                "tls.py": "from . import hub\nfrom .http import site\n",
                "hub.py": "",
                "metrics.py": (
                    "import notificator.broker\nfrom notificator.broker.local import B\n"
                    "from twisted.web.resource import Resource\n"
                ),
                "broker/__init__.py": "",
                "broker/local.py": (
                    "from ..hub import Hub\nfrom notificator.logs import log\n"
                    "from twisted.web import http\n"
                ),
                "broker/redis/__init__.py": "",
                "logs/__init__.py": "from notificator.http import site\n",
                "http/__init__.py": "",
                "http/site.py": (
                    "from notificator import broker, metrics, logs, hub\n"
                    "def f():\n"
                    "    from notificator.broker.redis import RedisBroker\n"
                ),
                "http/tree.py": "from notificator.services import Drain\nimport notificator.app\n",
                "services.py": "from notificator.broker.local import B\n",
                "app.py": "from notificator import tap\n",
                "tap.py": "",
            }
        )
        self.assertEqual(
            violations(edges),
            [
                "notificator/auth.py:1 imports notificator.tls",
                "notificator/broker/local.py:2 imports notificator.logs",
                "notificator/broker/local.py:3 imports twisted.web",
                "notificator/http/site.py:3 imports notificator.broker.redis",
                "notificator/http/tree.py:1 imports notificator.services",
                "notificator/http/tree.py:2 imports notificator.app",
                "notificator/logs/__init__.py:1 imports notificator.http.site",
                "notificator/metrics.py:2 imports notificator.broker.local",
                "notificator/metrics.py:3 imports twisted.web.resource",
                "notificator/tls.py:2 imports notificator.http.site",
            ],
        )

    def test_a_module_in_no_layer(self) -> None:
        """A new top-level module must be given a layer before the rule passes."""
        edges = self.package({"newthing.py": "from notificator import hub\n", "hub.py": ""})
        e = self.assertRaises(AssertionError, violations, edges)
        self.assertIn("notificator.newthing is in no layer", str(e))

    def test_cycles_of_what_runs_at_import(self) -> None:
        """A cycle of module-level imports is found; one closed in a function or for types only is not."""
        edges = self.package(
            {
                "events.py": "from notificator import ingest\n",
                "ingest.py": "import notificator.stats\n",
                "stats.py": "from notificator.events import X\n",
                "hub.py": "from notificator import auth\n",
                "auth.py": (
                    "from typing import TYPE_CHECKING\n"
                    "if TYPE_CHECKING:\n"
                    "    from notificator import hub\n"
                    "def f():\n"
                    "    from notificator import hub\n"
                ),
            }
        )
        self.assertEqual(
            cycle_lines(edges),
            [
                "notificator.events -> notificator.ingest -> notificator.stats:"
                " notificator/events.py:1 imports notificator.ingest;"
                " notificator/ingest.py:1 imports notificator.stats;"
                " notificator/stats.py:1 imports notificator.events"
            ],
        )
