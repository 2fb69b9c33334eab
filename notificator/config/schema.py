# -*- test-case-name: tests.test_config_schema,tests.test_config_model -*-
"""
Each config key declared once, on the attrs field it lands in, and one
generic builder that fills the frozen classes from the files.

A field of a configuration class names its key in its metadata::

    port: int = attrs.field(metadata=setting("server.port", _integer(0, 65535)))

the dotted key as the files spell it, the check that turns what a file
gives into the value (L{notificator.config.checks}; it raises C{_Bad} with
the reason), and how the value lands in the field: as checked, resolved
against the project root (C{path=True}), or through a function of it
(C{land=}).  A field fed by a key another field declares says so with
L{derived}; a field whose type is another attrs class is a section, filled
from that class's own fields.  The default is not declared here: it is read
from the shipped C{default.json}, the one place a default is written.

L{declarations} walks the classes into the schema (dotted key ->
L{Setting}); L{check} checks a merged document against it, key by key in
the document's order, and L{build} fills the classes from the checked
values.  A new key is its line in C{default.json} and one field here.
"""

from __future__ import annotations

import functools
import os
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import attrs

from notificator.config.checks import _Bad
from notificator.config.files import ConfigError

#: Where a field's declaration is kept in its attrs metadata.
_SOURCE = "notificator.config"

#: How a checked value becomes a field's value: (value, L{Landing}) -> value.
Land = Callable[[Any, "Landing"], Any]

_T = TypeVar("_T")


@attrs.frozen
class Setting:
    """
    One config key: its dotted name, its check, and how its checked value
    lands in the field that declares it.

    @ivar key: the dotted key, as the files spell it (C{sse.history.size}).
    @ivar check: the validator of L{notificator.config.checks}: what a file
        gives -> the value; raises C{_Bad} with the reason.
    @ivar path: the value is a path (or L{None}), resolved against the
        project root (L{Landing.resolve}).
    @ivar land: the field's value from the checked one, when it is neither
        the value itself nor a path (C{limits.connections}: the open-file
        limit when null).
    """

    key: str
    check: Callable[[Any], Any]
    path: bool = False
    land: Land | None = None


@attrs.frozen
class Derived:
    """
    A field filled from a key another field declares (C{sse.header}'s CORS
    policy, next to its headers): the key is checked once, where it is
    declared.

    @ivar key: the declared key it is made from.
    @ivar land: the field's value from that key's checked value.
    """

    key: str
    land: Land


def setting(
    key: str, check: Callable[[Any], Any], *, path: bool = False, land: Land | None = None
) -> dict[str, Setting]:
    """
    The metadata of the field that declares C{key} (see L{Setting}):
    C{attrs.field(metadata=setting("server.port", _integer(0, 65535)))}.
    """
    return {_SOURCE: Setting(key, check, path, land)}


def derived(key: str, land: Land) -> dict[str, Derived]:
    """The metadata of a field made from the key another field declares (L{Derived})."""
    return {_SOURCE: Derived(key, land)}


@functools.cache
def sources(cls: type) -> tuple[tuple[str, Setting | Derived | type | None], ...]:
    """
    Each field of attrs class C{cls} and what fills it: its L{Setting} or
    L{Derived}, the class of a section, or L{None} (given by the caller of
    L{build}, or left to the field's own default).  Read once per class.
    """
    types = typing.get_type_hints(cls)
    plan: list[tuple[str, Setting | Derived | type | None]] = []
    for field in attrs.fields(cls):
        source = field.metadata.get(_SOURCE)
        kind = types.get(field.name)
        if isinstance(source, (Setting, Derived)):
            plan.append((field.name, source))
        elif isinstance(kind, type) and attrs.has(kind):
            plan.append((field.name, kind))
        else:
            plan.append((field.name, None))
    return tuple(plan)


def declarations(cls: type) -> dict[str, Setting]:
    """
    The schema of configuration class C{cls}: every key its fields and its
    sections' fields declare, dotted key -> L{Setting}, in field order.

    @raise ValueError: a key declared twice, or a L{derived} field whose
        key no field declares: mistakes in the classes, found at import.
    """
    found: dict[str, Setting] = {}
    wanted: list[tuple[str, str]] = []

    def walk(kind: type) -> None:
        for name, source in sources(kind):
            where = f"{kind.__name__}.{name}"
            if isinstance(source, Setting):
                if source.key in found:
                    raise ValueError(f"{where}: {source.key} is declared twice")
                found[source.key] = source
            elif isinstance(source, Derived):
                wanted.append((where, source.key))
            elif source is not None:
                walk(source)

    walk(cls)
    for where, key in wanted:
        if key not in found:
            raise ValueError(f"{where}: derived from {key}, which no field declares")
    return found


def leaves(
    doc: Mapping[str, Any], schema: Mapping[str, Setting], prefix: str = ""
) -> Iterable[tuple[str, Any]]:
    """
    The dotted keys of a document and their values, in the document's
    order: an object is walked into unless the schema declares it as one
    key (C{sse.header}).
    """
    for key, value in doc.items():
        dotted = prefix + key
        if dotted in schema or not isinstance(value, dict):
            yield dotted, value
        else:
            yield from leaves(value, schema, dotted + ".")


def check(
    schema: Mapping[str, Setting],
    doc: Mapping[str, Any],
    where: Mapping[str, str],
    defaults_source: str,
) -> tuple[dict[str, Any], list[str]]:
    """
    Check each key of a merged document (the shipped defaults under the
    files) with its declared check.

    @param where: dotted key -> the file that set it.
    @param defaults_source: the shipped C{default.json}, named when a
        declared key has no value at all.
    @return: the checked values by dotted key, and a warning for each
        unknown key (naming the file), in the document's order.
    @raise ConfigError: the first value (in the document's order) its
        check refuses, naming the file that set it and the key; or a
        declared key without a default.
    """
    values: dict[str, Any] = {}
    warnings: list[str] = []
    for dotted, raw in leaves(doc, schema):
        source = where.get(dotted, "config")
        declared = schema.get(dotted)
        if declared is None:
            warnings.append(f"{source}: {dotted}: unknown key, ignored")
            continue
        try:
            values[dotted] = declared.check(raw)
        except _Bad as e:
            raise ConfigError(source, dotted, str(e))
    for key in schema:
        if key not in values:
            raise ConfigError(defaults_source, key, "no default: the shipped default.json lacks it")
    return values, warnings


class Landing:
    """
    The checked values of one configuration on their way into the classes
    (L{build}): each key lands once, through its declaration, even when
    another key's landing asks for it (L{landed}).

    @ivar root: the directory relative paths are resolved against.
    """

    def __init__(self, schema: Mapping[str, Setting], values: Mapping[str, Any], root: str) -> None:
        self._schema = schema
        self._values = values
        self._landed: dict[str, Any] = {}
        self.root = root

    def resolve(self, path: str | None) -> str | None:
        """C{path} (C{~} expanded) relative to L{root}, normalised; L{None} stays L{None}."""
        if path is None:
            return None
        return os.path.normpath(os.path.join(self.root, os.path.expanduser(path)))

    def checked(self, key: str) -> Any:
        """The checked value of declared key C{key}, before it lands."""
        return self._values[key]

    def landed(self, key: str) -> Any:
        """The value declared key C{key} lands as (its field's value), made once."""
        if key not in self._landed:
            declared = self._schema[key]
            value = self._values[key]
            if declared.path:
                value = self.resolve(value)
            if declared.land is not None:
                value = declared.land(value, self)
            self._landed[key] = value
        return self._landed[key]


def build(cls: type[_T], landing: Landing, **given: Any) -> _T:
    """
    An instance of configuration class C{cls}, its sections built likewise:
    each declared field from its key's landed value, each derived one from
    its key's checked value, the others from C{given} (or their defaults).
    """
    fields: dict[str, Any] = {}
    kind: type = cls  # (functools.cache wants it hashable)
    for name, source in sources(kind):
        if isinstance(source, Setting):
            fields[name] = landing.landed(source.key)
        elif isinstance(source, Derived):
            fields[name] = source.land(landing.checked(source.key), landing)
        elif source is not None:
            fields[name] = build(source, landing)
        elif name in given:
            fields[name] = given[name]
    return cls(**fields)
