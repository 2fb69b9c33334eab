# -*- test-case-name: tests.test_config_files,tests.test_config_model -*-
"""
The configuration's files: JSON objects with C{//} and C{/* */} comments
allowed (L{strip_comments}, L{read_json}) so the old node server's
C{config/*.json} files load unchanged, deep-merged (L{merge}: objects
merge key by key, everything else replaces); the shipped defaults the
package carries (L{shipped_defaults}); and the environments a config
directory has (L{environments}).  A file that cannot be used raises
L{ConfigError}, one line naming the file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from importlib import resources
from typing import Any

from twisted.python.filepath import FilePath


class ConfigError(Exception):
    """
    The configuration cannot be used.  C{str()} is one line: file, key and
    reason, e.g. C{conf/production.json: server.port: expected an integer,
    got "3443a"}.
    """

    def __init__(self, source: str, key: str, reason: str) -> None:
        super().__init__(source, key, reason)
        self.source = source
        self.key = key
        self.reason = reason

    def __str__(self) -> str:
        where = f"{self.key}: " if self.key else ""
        return f"{self.source}: {where}{self.reason}"


def strip_comments(text: str) -> str:
    """
    Remove C{//} line comments and C{/* */} block comments from JSON text,
    leaving string literals (such as C{"https://example.com"}) untouched.
    """
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                raise ValueError("unterminated /* comment")
            # Keep line breaks so json's line numbers stay right.
            out.append("\n" * text.count("\n", i, j))
            i = j + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def read_json(path: FilePath[str]) -> dict[str, Any]:
    """
    Read one commented JSON object file.

    @raise ConfigError: unreadable, not UTF-8, not JSON, or not an object.
    """
    source = path.path
    try:
        text = path.getContent().decode("utf-8-sig")
    except OSError as e:
        raise ConfigError(source, "", f"cannot read: {e.strerror or e}")
    except UnicodeDecodeError:
        raise ConfigError(source, "", "not UTF-8 text")
    return parse_json(text, source)


def parse_json(text: str, source: str) -> dict[str, Any]:
    """
    Parse commented JSON text holding one object.

    @param source: the file it came from, for the error.
    @raise ConfigError: not JSON, or not an object.
    """
    try:
        value = json.loads(strip_comments(text))
    except ValueError as e:
        raise ConfigError(source, "", f"not valid JSON: {e}")
    if not isinstance(value, dict):
        raise ConfigError(source, "", "expected a JSON object at the top level")
    return value


def merge(
    base: dict[str, Any],
    base_origin: dict[str, str],
    over: Mapping[str, Any],
    source: str,
    prefix: str = "",
) -> None:
    """
    Deep-merge C{over} into C{base} in place, recording in C{base_origin}
    which file set each dotted key (so errors can name it).
    """
    for key, value in over.items():
        dotted = prefix + key
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], base_origin, value, source, dotted + ".")
        else:
            base[key] = value
            for old in [k for k in base_origin if k.startswith(dotted + ".")]:
                del base_origin[old]
            base_origin[dotted] = source
            if isinstance(value, dict):
                _mark(value, base_origin, source, dotted + ".")


def _mark(value: dict[str, Any], origin: dict[str, str], source: str, prefix: str) -> None:
    for key, sub in value.items():
        origin[prefix + key] = source
        if isinstance(sub, dict):
            _mark(sub, origin, source, prefix + key + ".")


def shipped_defaults() -> tuple[dict[str, Any], str]:
    """
    The shipped defaults, C{conf/default.json}, and where they were read:
    the package carries that file as C{notificator/default.json} (in a
    checkout a link to it, in an installed package a copy), so a config
    directory without a C{default.json} of its own still gets every
    default, installed or not.
    """
    path = resources.files("notificator") / DEFAULTS
    return parse_json(path.read_text("utf-8"), str(path)), str(path)


#: The package file holding the shipped defaults (see L{shipped_defaults}).
DEFAULTS = "default.json"


#: Files of a config directory that are not environments (L{environments}).
_NOT_ENVIRONMENTS = ("default", "local")

_ENV_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")


def environments(directory: FilePath[str]) -> list[str]:
    """
    The environments C{directory} has: the names of its C{<env>.json}
    files other than C{default.json} and C{local.json}, sorted.
    """
    try:
        names = directory.listdir()
    except OSError:
        return []
    found = []
    for name in names:
        env, dot, ext = name.rpartition(".")
        if dot and ext == "json" and _ENV_NAME.match(env) and env not in _NOT_ENVIRONMENTS:
            found.append(env)
    return sorted(found)
