"""
Tests for L{notificator.config.schema}: each key declared once, on its
field, and the one builder that checks and fills the classes.
"""

from __future__ import annotations

import os
from typing import Any

import attrs
from twisted.trial.unittest import SynchronousTestCase

from notificator import config
from notificator.config import ConfigError, model, schema
from notificator.config.checks import _integer, _opt_str, _str
from notificator.config.schema import Derived, Landing, Setting, derived, setting


@attrs.frozen
class Inner:
    size: int = attrs.field(metadata=setting("a.inner.size", _integer(0, 10)))
    directory: str | None = attrs.field(metadata=setting("a.inner.dir", _opt_str, path=True))


@attrs.frozen
class Outer:
    port: int = attrs.field(metadata=setting("a.port", _integer(0, 65535)))
    word: str = attrs.field(metadata=setting("a.word", _str, land=lambda w, _: w.upper()))
    length: int = attrs.field(metadata=derived("a.word", lambda w, _: len(w)))
    inner: Inner
    root: str
    notes: tuple[str, ...] = ()


@attrs.frozen
class Twice:
    a: int = attrs.field(metadata=setting("x.a", _integer(0, 1)))
    b: int = attrs.field(metadata=setting("x.a", _integer(0, 1)))


@attrs.frozen
class Orphan:
    a: int = attrs.field(metadata=derived("x.nowhere", lambda v, _: v))


@attrs.frozen
class Headerish:
    header: dict[str, str] = attrs.field(metadata=setting("h.header", lambda v: dict(v)))
    on: bool = attrs.field(metadata=setting("h.on", lambda v: bool(v)))


DOC = {"a": {"port": 80, "word": "hi", "inner": {"size": 3, "dir": "var/x"}}}
WHERE = {"a.port": "d.json", "a.word": "d.json", "a.inner.size": "d.json", "a.inner.dir": "d.json"}


class DeclarationTests(SynchronousTestCase):
    def test_walks_the_sections_in_field_order(self) -> None:
        """The schema is every key the fields declare, sections included, in field order."""
        found = schema.declarations(Outer)
        self.assertEqual(list(found), ["a.port", "a.word", "a.inner.size", "a.inner.dir"])
        self.assertTrue(all(isinstance(s, Setting) for s in found.values()))
        self.assertTrue(found["a.inner.dir"].path)

    def test_a_key_declared_twice_is_refused(self) -> None:
        """Two fields declaring one key: an error naming the second field and the key."""
        e = self.assertRaises(ValueError, schema.declarations, Twice)
        self.assertEqual(str(e), "Twice.b: x.a is declared twice")

    def test_derived_from_nothing_is_refused(self) -> None:
        """A derived field needs a field that declares its key."""
        e = self.assertRaises(ValueError, schema.declarations, Orphan)
        self.assertEqual(str(e), "Orphan.a: derived from x.nowhere, which no field declares")


class CheckTests(SynchronousTestCase):
    schema = schema.declarations(Outer)

    def test_values_checked(self) -> None:
        """Each key's value as its check returns it; no warning."""
        values, warnings = schema.check(self.schema, DOC, WHERE, "shipped.json")
        self.assertEqual(
            values, {"a.port": 80, "a.word": "hi", "a.inner.size": 3, "a.inner.dir": "var/x"}
        )
        self.assertEqual(warnings, [])

    def test_a_bad_value_names_its_file_and_key(self) -> None:
        """The first value refused, in the document's order: one line, its file and its key."""
        doc = {"a": {"word": "", "port": 70000, "inner": {"size": 3, "dir": None}}}
        where = {**WHERE, "a.word": "local.json"}
        e = self.assertRaises(ConfigError, schema.check, self.schema, doc, where, "shipped.json")
        self.assertEqual(
            (e.source, e.key, str(e)),
            ("local.json", "a.word", 'local.json: a.word: expected a non-empty string, got ""'),
        )
        e = self.assertRaises(
            ConfigError, schema.check, self.schema, {"a": {"port": 70000}}, {}, "shipped.json"
        )
        self.assertEqual(str(e), "config: a.port: expected an integer from 0 to 65535, got 70000")

    def test_unknown_keys_warn(self) -> None:
        """An undeclared key is a warning naming its file, in the document's order."""
        doc = {"a": {**DOC["a"], "prot": 1, "extra": {"deep": 2}}}
        where = {**WHERE, "a.prot": "local.json", "a.extra.deep": "x.json"}
        _, warnings = schema.check(self.schema, doc, where, "shipped.json")
        self.assertEqual(
            warnings,
            [
                "local.json: a.prot: unknown key, ignored",
                "x.json: a.extra.deep: unknown key, ignored",
            ],
        )

    def test_a_declared_object_is_one_key(self) -> None:
        """An object declared as one key (sse.header) is checked whole, not walked into."""
        declared = schema.declarations(Headerish)
        doc = {"h": {"header": {"X-A": "1", "X-B": "2"}, "on": 1}}
        self.assertEqual(
            list(schema.leaves(doc, declared)),
            [("h.header", {"X-A": "1", "X-B": "2"}), ("h.on", 1)],
        )
        values, warnings = schema.check(declared, doc, {}, "shipped.json")
        self.assertEqual(values, {"h.header": {"X-A": "1", "X-B": "2"}, "h.on": True})
        self.assertEqual(warnings, [])

    def test_a_key_without_default(self) -> None:
        """A declared key nothing gives a value: an error naming the shipped defaults."""
        doc = {"a": {"port": 80, "word": "hi", "inner": {"size": 3}}}
        e = self.assertRaises(ConfigError, schema.check, self.schema, doc, WHERE, "shipped.json")
        self.assertEqual(
            str(e), "shipped.json: a.inner.dir: no default: the shipped default.json lacks it"
        )


class BuildTests(SynchronousTestCase):
    schema = schema.declarations(Outer)

    def built(self, doc: dict[str, Any] = DOC, root: str = "/srv/n") -> Outer:
        values, _ = schema.check(self.schema, doc, WHERE, "shipped.json")
        return schema.build(Outer, Landing(self.schema, values, root), root=root)

    def test_fields_sections_and_given(self) -> None:
        """Declared fields land, derived ones are made from their key, sections are built, the rest given."""
        self.assertEqual(
            self.built(),
            Outer(
                port=80,
                word="HI",
                length=2,
                inner=Inner(size=3, directory="/srv/n/var/x"),
                root="/srv/n",
            ),
        )

    def test_paths(self) -> None:
        """Paths resolve against the root, normalised; absolute ones stay; null stays null."""
        for given, expected in [
            ("var/x", "/srv/n/var/x"),
            ("./var/../log", "/srv/n/log"),
            ("/abs/p", "/abs/p"),
            (None, None),
        ]:
            doc = {"a": {**DOC["a"], "inner": {"size": 1, "dir": given}}}
            self.assertEqual(self.built(doc).inner.directory, expected, given)
        home = {"a": {**DOC["a"], "inner": {"size": 1, "dir": "~/h"}}}
        self.assertEqual(self.built(home).inner.directory, os.path.expanduser("~/h"))

    def test_each_key_lands_once(self) -> None:
        """A key another key's landing asks for (limits.connections) lands once, the same value for both."""
        calls: list[int] = []

        def count(value: int, _: Landing) -> int:
            calls.append(value)
            return value * 10

        declared = {"k.one": Setting("k.one", int, land=count)}
        landing = Landing(declared, {"k.one": 4}, "/")
        self.assertEqual((landing.landed("k.one"), landing.landed("k.one")), (40, 40))
        self.assertEqual(calls, [4])

    def test_the_configuration(self) -> None:
        """
        Every field of the configuration's classes is a declared key, made
        from one (derived), or a section, but C{Config.root}, C{sources}
        and C{warnings}, which L{config.validate} gives.
        """
        seen: set[type] = set()
        given: list[str] = []
        todo: list[type] = [config.Config]
        while todo:
            kind = todo.pop()
            seen.add(kind)
            for name, source in schema.sources(kind):
                if isinstance(source, (Setting, Derived)):
                    continue
                if isinstance(source, type):
                    todo.append(source)
                    continue
                given.append(f"{kind.__name__}.{name}")
        self.assertEqual(sorted(given), ["Config.root", "Config.sources", "Config.warnings"])
        self.assertEqual(len(seen), 11, seen)
        self.assertEqual(model.SCHEMA, schema.declarations(config.Config))
