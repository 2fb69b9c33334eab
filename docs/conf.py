"""
Sphinx configuration of Notificator's documentation: C{tox -e docs} builds
it with warnings as errors (C{sphinx-build -W --keep-going}).

The pages for each reader are in this folder.  README.rst, README.ko.rst,
CONTRIBUTING.rst, CHANGELOG.rst, bench/README.rst and cert/README.rst stay
where a git forge shows them and are included here, not copied: their
relative links (C{`text <docs/operations.rst#limits>`__}, written for the
forge) become cross-references of this build as they are read (L{_links}),
so a link to a page or a label that does not exist fails the build.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

project = "Notificator"
author = "the Notificator maintainers"
copyright = "the Notificator maintainers"
root_doc = "index"
language = "en"
exclude_patterns = ["_build"]
# Literal blocks are shell commands, JSON, log lines and HTTP more than
# Python: no highlighting unless a page asks for a language.
highlight_language = "none"
html_theme = "alabaster"
html_title = "Notificator"
html_show_sourcelink = False

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent

#: Files of the repository that this build includes (repository path ->
#: the document that includes it).
INCLUDED = {
    "README.rst": "readme",
    "README.ko.rst": "ko/index",
    "CONTRIBUTING.rst": "contributing",
    "CHANGELOG.rst": "changelog",
    "bench/README.rst": "bench",
    "cert/README.rst": "certificates",
}

#: A hyperlink with an embedded relative target: `text <target>`_ or __.
_LINK = re.compile(r"`([^`<]*?)\s*<([^`<>:]+?)>`__?", re.S)


def _document(path: str) -> str | None:
    """The document of this build for a repository path, or C{None}."""
    if path in INCLUDED:
        return INCLUDED[path]
    if path.startswith("docs/") and path.endswith(".rst"):
        name = path[len("docs/") : -len(".rst")]
        if (HERE / (name + ".rst")).is_file():
            return name
    return None


def _links(relative: Path, text: str) -> str:
    """
    The links of an included file (at C{relative}, a repository path)
    made cross-references: to a page (C{:doc:}) or, with a C{#label}, to
    that label (C{:ref:}); a link to anything else (a folder, a script)
    keeps its text only.
    """
    base = posixpath.dirname(relative.as_posix())

    def replace(match: re.Match[str]) -> str:
        label, target = match.group(1), match.group(2)
        path, _, anchor = target.partition("#")
        document = _document(posixpath.normpath(posixpath.join(base, path))) if path else None
        if document is None:
            return label
        if anchor:
            return f":ref:`{label} <{anchor}>`"
        return f":doc:`{label} </{document}>`"

    return _LINK.sub(replace, text)


def _include_read(app: Any, relative_path: Path, parent_docname: str, content: list[str]) -> None:
    """Sphinx's C{include-read}: C{relative_path} is relative to this folder."""
    repository_path = (HERE / relative_path).resolve().relative_to(PROJECT)
    if repository_path.as_posix() in INCLUDED:
        content[0] = _links(repository_path, content[0])


def setup(app: Any) -> dict[str, Any]:
    app.connect("include-read", _include_read)
    return {"parallel_read_safe": True}
