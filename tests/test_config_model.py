"""Tests for L{notificator.config.model}: loading, merging, validation, endpoints."""

import ast
import json
import os
import re
from importlib import resources
from typing import Any

import attrs
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from notificator import config
from notificator.config import ConfigError, load, model
from notificator.cors import CORSPolicy
from tests.support import PROJECT, write_config


class LoadTests(SynchronousTestCase):
    def conf(self, **files: object) -> FilePath:
        """A config directory of these files and the environment C{x} (C{x.json}, empty)."""
        return FilePath(write_config(os.path.join(self.mktemp(), "conf"), {"x": {}, **files}))

    def test_shipped_config_loads(self) -> None:
        """
        conf/ as shipped loads for every environment, with no warnings but,
        in production, the one that asks for a subscriber secret; no shipped
        file allows another origin.
        """
        for env in ("development", "production"):
            cfg = load(FilePath(os.path.join(PROJECT, "conf")), env)
            self.assertEqual(len(cfg.sources), 2)
            self.assertEqual(cfg.sse.cors, CORSPolicy(), env)
            if env == "development":
                self.assertEqual(cfg.warnings, ())
            else:
                (warning,) = cfg.warnings
                self.assertIn("default.json: sse.auth.secret: null", warning)
        dev = load(FilePath(os.path.join(PROJECT, "conf")), "development")
        self.assertEqual(dev.endpoints(), ["tcp:port=3000:interface=127.0.0.1"])

    def test_defaults(self) -> None:
        """Unset keys take their documented defaults."""
        cfg = load(self.conf(default={}), "x")
        self.assertEqual(cfg.server.port, 3000)
        self.assertEqual(cfg.server.protocol, "http")
        self.assertTrue(cfg.sse.heartbeat)
        self.assertEqual(cfg.sse.heartbeat_interval, 55.0)
        self.assertEqual(cfg.sse.keepalive, 20.0)
        self.assertEqual(cfg.sse.cookie, "userID")
        self.assertFalse(cfg.monitor.access_log)
        self.assertEqual(cfg.server.log_keep_days, 30)
        self.assertEqual(cfg.limits.streams_per_address, 1000)
        self.assertIsNone(
            load(
                self.conf(default={"limits": {"streamsPerAddress": None}}), "x"
            ).limits.streams_per_address
        )
        self.assertEqual(
            load(self.conf(default={"server": {"log": {"keepDays": 0}}}), "x").server.log_keep_days,
            0,
        )
        self.assertTrue(
            load(self.conf(default={"monitor": {"accessLog": True}}), "x").monitor.access_log
        )
        # server.host "": every interface; by default one IPv6 socket on ::
        # that takes IPv4 too (see notificator.listening).
        self.assertEqual(cfg.endpoints(), ["tcp:port=3000:interface=\\:\\:"])
        self.assertEqual(
            cfg.endpoints(["0.0.0.0", "::"]),
            ["tcp:port=3000:interface=0.0.0.0", "tcp:port=3000:interface=\\:\\:"],
        )
        self.assertEqual(cfg.endpoints(["0.0.0.0"]), ["tcp:port=3000:interface=0.0.0.0"])

    def test_connection_and_stream_caps(self) -> None:
        """
        limits.connections null is the open-file limit less the margin, and
        limits.streams null that less a reserve for publishes and /health;
        streams that may take every connection are a warning.
        """
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        cfg = load(self.conf(default={}), "x")
        self.assertEqual(cfg.limits.connections, config.connection_limit(None))
        if soft != resource.RLIM_INFINITY and soft > config.FD_MARGIN:
            self.assertEqual(cfg.limits.connections, soft - config.FD_MARGIN)
        self.assertEqual(
            cfg.limits.streams, cfg.limits.connections - min(50, cfg.limits.connections // 2)
        )
        self.assertEqual(cfg.limits.body_timeout, 30.0)
        self.assertEqual(cfg.warnings, ())
        cases = {1000: 950, 100: 50, 60: 30, 3: 2, 1: 1}
        for connections, streams in cases.items():
            cfg = load(self.conf(default={"limits": {"connections": connections}}), "x")
            self.assertEqual((cfg.limits.connections, cfg.limits.streams), (connections, streams))
        cfg = load(self.conf(default={"limits": {"connections": 100, "streams": 99}}), "x")
        self.assertEqual(cfg.limits.streams, 99)
        self.assertEqual(cfg.warnings, ())
        cfg = load(self.conf(default={"limits": {"connections": 100, "streams": 100}}), "x")
        [warning] = cfg.warnings
        self.assertIn("limits.streams: 100 streams may take every connection", warning)

    def test_merge_order(self) -> None:
        """default, then <env>, then local; objects merge key by key."""
        cfg = load(
            self.conf(
                default={"server": {"port": 1, "log": {"level": "info", "dir": "a"}}},
                prod={"server": {"port": 2, "log": {"level": "error"}}},
                local={"server": {"port": 3}},
            ),
            "prod",
        )
        self.assertEqual(cfg.server.port, 3)
        self.assertEqual(cfg.server.log_level, "error")
        self.assertTrue(cfg.server.log_dir.endswith("/a"))
        self.assertEqual(
            [os.path.basename(s) for s in cfg.sources], ["default.json", "prod.json", "local.json"]
        )

    def test_old_server_config_loads(self) -> None:
        """A commented node-server config with Connection and a CORS list loads."""
        text = """{
          // 서버 설정
          "server": {"protocol": "http", "port": "3000"},
          /* SSE */
          "sse": {"header": {"Content-Type": "text/event-stream", "Connection": "keep-alive",
                             "Access-Control-Allow-Origin": ["https://gw.example.com", "http://gw.example.com:8080"]},
                  "heartbeat": true, "heartbeatInterval": 55}
        }"""
        cfg = load(self.conf(default=text), "x")
        self.assertEqual(cfg.server.port, 3000)
        self.assertEqual(cfg.sse.headers, ())
        self.assertTrue(cfg.sse.cors.listed(b"https://GW.example.com:443"))
        self.assertTrue(cfg.sse.cors.listed(b"http://gw.example.com:8080"))
        self.assertFalse(cfg.sse.cors.allows(b"http://gw.example.com"))
        self.assertFalse(cfg.sse.cors.allows(b"https://evil.example.com"))
        self.assertEqual(len(cfg.warnings), 2)  # Content-Type and Connection ignored

    def test_every_key_has_a_default_and_a_line_in_both_guides(self) -> None:
        """
        Each config key is in conf/default.json, in README.rst's and
        README.ko.rst's tables, and in the configuration guide.
        """
        from notificator.config import merge, read_json
        from notificator.config.model import SCHEMA

        doc: dict = {}
        origin: dict[str, str] = {}
        merge(doc, origin, read_json(FilePath(os.path.join(PROJECT, "conf", "default.json"))), "d")
        guides = {}
        for name in ("README.rst", "README.ko.rst", os.path.join("docs", "configuration.rst")):
            with open(os.path.join(PROJECT, name), encoding="utf-8") as f:
                guides[name] = f.read()
        for key in SCHEMA:
            self.assertIn(key, origin, f"{key} has no default in conf/default.json")
            # A key, or for some (server.certificates.key ...) the object holding it.
            parent = key.rsplit(".", 1)[0]
            for name, text in guides.items():
                self.assertTrue(
                    f"``{key}``" in text or (key.count(".") > 1 and f"``{parent}``" in text),
                    f"{key} is not in {name}",
                )

    def test_header_warning_names_the_file_that_set_it(self) -> None:
        """An ignored header is blamed on the file that set it, not on the first sse.header."""
        conf = self.conf(
            default={"sse": {"header": {"Access-Control-Allow-Origin": "*"}}},
            local={"sse": {"header": {"Connection": "keep-alive"}}},
        )
        cfg = load(conf, "x")
        self.assertEqual(
            cfg.warnings,
            (
                f"{conf.child('local.json').path}: sse.header: header Connection is set by the"
                " server itself; the configured value is ignored",
            ),
        )

    def test_any_origin(self) -> None:
        """'*' lets every origin read (without credentials) and lists none."""
        cfg = load(
            self.conf(default={"sse": {"header": {"Access-Control-Allow-Origin": "*"}}}), "x"
        )
        self.assertEqual(cfg.sse.cors, CORSPolicy(any_origin=True))
        self.assertTrue(cfg.sse.cors.allows(b"http://anything.example"))
        self.assertFalse(cfg.sse.cors.listed(b"http://anything.example"))

    def test_null_or_not_an_origin_stops_start_up(self) -> None:
        """null, or a URL with a path, among the origins: one line naming the file, key and entry."""
        for listed, why in [
            (["https://gw.example.com", "null"], "'null' is never an allowed origin"),
            ("https://gw.example.com/groupware", "without a path"),
            (["file:///srv/gw"], "expected http:// or https://"),
        ]:
            with self.subTest(listed=listed):
                conf = self.conf(local={"sse": {"header": {"Access-Control-Allow-Origin": listed}}})
                e = self.assertRaises(ConfigError, load, conf, "x")
                self.assertEqual((e.source, e.key), (conf.child("local.json").path, "sse.header"))
                self.assertIn(why, str(e))
                self.assertNotIn("\n", str(e))

    def test_credentials_header_is_the_servers(self) -> None:
        """A configured Access-Control-Allow-Credentials is ignored with a warning."""
        conf = self.conf(
            local={"sse": {"header": {"Access-Control-Allow-Credentials": "true"}}},
        )
        (warning,) = load(conf, "x").warnings
        self.assertIn("Access-Control-Allow-Credentials is set by the server itself", warning)

    def test_production_warns_of_open_doors(self) -> None:
        """
        In production, "*" among the origins and a null sse.auth.secret are
        one warning line each, naming the file, the key and what to set.
        """
        star = {"sse": {"header": {"Access-Control-Allow-Origin": ["*"]}}}
        conf = self.conf(default={}, production=star, staging={})
        cfg = load(conf, "production")
        source = conf.child("production.json").path
        self.assertEqual(len(cfg.warnings), 2, cfg.warnings)
        cors, secret = cfg.warnings
        self.assertTrue(cors.startswith(f"{source}: sse.header.Access-Control-Allow-Origin: "))
        self.assertIn("any web site read any user's stream", cors)
        self.assertIn("list the groupware's origins", cors)
        self.assertRegex(secret, r"default\.json: sse\.auth\.secret: null, so anyone")
        self.assertIn("set a long random secret", secret)
        for warning in cfg.warnings:
            self.assertNotIn("\n", warning)
        # Another environment: no such warning.
        self.assertEqual(load(conf, "staging").warnings, ())
        # Closed doors: none either.
        closed = {
            "sse": {
                "header": {"access-control-allow-origin": ["https://gw.example.com"]},
                "auth": {"secret": "a-long-random-secret-0123456789"},
            }
        }
        self.assertEqual(load(self.conf(default={}, production=closed), "production").warnings, ())

    def test_production_warning_names_the_header_as_written(self) -> None:
        """The "*" warning names the file that set it and the header as spelled there."""
        conf = self.conf(
            default={},
            production={},
            local={
                "sse": {
                    "header": {"access-control-allow-origin": "*"},
                    "auth": {"secret": "a-long-random-secret-0123456789"},
                }
            },
        )
        (warning,) = load(conf, "production").warnings
        self.assertTrue(
            warning.startswith(
                f"{conf.child('local.json').path}: sse.header.access-control-allow-origin: "
            ),
            warning,
        )

    def test_unknown_key_warns(self) -> None:
        """An unknown key is a warning naming the file and key, not an error."""
        conf = self.conf(default={"sse": {"hearbeat": True}})
        cfg = load(conf, "x")
        self.assertEqual(len(cfg.warnings), 1)
        self.assertIn("default.json: sse.hearbeat: unknown key", cfg.warnings[0])

    def test_milliseconds_interval_warns(self) -> None:
        """A heartbeat interval that looks like milliseconds is warned about."""
        cfg = load(self.conf(default={"sse": {"heartbeatInterval": 55000}}), "x")
        self.assertIn("in seconds, not milliseconds", cfg.warnings[0])

    def test_relative_paths_resolve_against_project_root(self) -> None:
        """Certificate and log paths are relative to the config dir's parent."""
        conf = self.conf(default={"server": {"certificates": {"key": "cert/k.pem"}}})
        cfg = load(conf, "x")
        self.assertEqual(
            cfg.server.certificates.key, conf.parent().child("cert").child("k.pem").path
        )
        self.assertEqual(cfg.root, conf.parent().path)

    def test_extra_headers(self) -> None:
        """Other configured headers are kept for the SSE responses."""
        cfg = load(self.conf(default={"sse": {"header": {"X-Served-By": "gw1"}}}), "x")
        self.assertEqual(cfg.sse.headers, (("X-Served-By", "gw1"),))

    def test_https_endpoint(self) -> None:
        """https becomes an https: strports string (notificator.tls) with the key, cert, CA chain and ALPN http/1.1."""
        cfg = load(
            self.conf(
                default={
                    "server": {
                        "protocol": "https",
                        "port": 3443,
                        "host": "::1",
                        "certificates": {"key": "k", "cert": "c", "ca": "a"},
                    }
                }
            ),
            "x",
        )
        (endpoint,) = cfg.endpoints()
        self.assertTrue(endpoint.startswith("https:port=3443:interface=\\:\\:1:privateKey="))
        self.assertIn(":extraCertChain=", endpoint)
        self.assertTrue(endpoint.endswith(":alpn=http/1.1"))

    def test_endpoints_replace_protocol(self) -> None:
        """server.endpoints, when set, are used as they are."""
        cfg = load(self.conf(default={"server": {"endpoints": ["tcp:1", "tcp6:2"]}}), "x")
        self.assertEqual(cfg.endpoints(), ["tcp:1", "tcp6:2"])


class ErrorTests(SynchronousTestCase):
    def conf(self, **files: object) -> FilePath:
        """A config directory of these files and the environment C{x} (C{x.json}, empty)."""
        return FilePath(write_config(os.path.join(self.mktemp(), "conf"), {"x": {}, **files}))

    def error(self, env: str = "x", **files: object) -> ConfigError:
        return self.assertRaises(ConfigError, load, self.conf(**files), env)

    def test_wrong_type_names_file_and_key(self) -> None:
        """A wrong type is one line naming the file that set it and the key."""
        e = self.error(
            default={"server": {"port": 3000}},
            production={"server": {"port": "3443a"}},
            env="production",
        )
        self.assertEqual(e.key, "server.port")
        self.assertTrue(e.source.endswith("production.json"))
        self.assertEqual(str(e).count("\n"), 0)
        self.assertRegex(
            str(e), r"production\.json: server\.port: expected an integer, got \"3443a\"$"
        )

    def test_unknown_protocol(self) -> None:
        """An unknown protocol is refused, naming the choices."""
        e = self.error(default={"server": {"protocol": "spdy"}})
        self.assertIn("server.protocol: expected one of http, https, http2", str(e))

    def test_bad_values(self) -> None:
        """Each mistyped or out-of-range value names its key."""
        cases = [
            ({"server": {"port": 70000}}, "server.port"),
            ({"server": {"port": True}}, "server.port"),
            ({"server": {"log": {"level": "loud"}}}, "server.log.level"),
            ({"server": {"endpoints": "tcp:1"}}, None),
            ({"server": {"endpoints": [1]}}, "server.endpoints"),
            ({"sse": {"heartbeat": "yes"}}, "sse.heartbeat"),
            ({"sse": {"heartbeatInterval": 0}}, "sse.heartbeatInterval"),
            ({"sse": {"heartbeatInterval": "55"}}, "sse.heartbeatInterval"),
            ({"sse": {"keepalive": -1}}, "sse.keepalive"),
            ({"sse": {"retry": 1.5}}, "sse.retry"),
            ({"sse": {"cookie": "a b"}}, "sse.cookie"),
            ({"sse": {"header": []}}, "sse.header"),
            ({"sse": {"header": {"X-A": "a\r\nb"}}}, "sse.header"),
            ({"sse": {"header": {"Access-Control-Allow-Origin": ["not an origin"]}}}, "sse.header"),
            ({"monitor": {"accessLog": "yes"}}, "monitor.accessLog"),
            ({"server": {"log": {"keepDays": -1}}}, "server.log.keepDays"),
            ({"server": {"log": {"keepDays": 1.5}}}, "server.log.keepDays"),
            ({"limits": {"streamsPerAddress": 0}}, "limits.streamsPerAddress"),
            ({"limits": {"streamsPerAddress": "many"}}, "limits.streamsPerAddress"),
            ({"limits": {"bodyTimeout": 0}}, "limits.bodyTimeout"),
            ({"limits": {"bodyTimeout": "30"}}, "limits.bodyTimeout"),
            ({"limits": {"connections": 0}}, "limits.connections"),
            ({"limits": {"connections": 1.5}}, "limits.connections"),
            ({"limits": {"bodyMemory": 0}}, "limits.bodyMemory"),
            ({"limits": {"bodyMemory": "64M"}}, "limits.bodyMemory"),
        ]
        for doc, key in cases:
            with self.subTest(doc=doc):
                conf = self.conf(default=doc)
                if key is None:
                    load(conf, "x")  # a single string is accepted as a one-item list
                    continue
                e = self.assertRaises(ConfigError, load, conf, "x")
                self.assertEqual(e.key, key)

    def test_body_memory_below_body_bytes(self) -> None:
        """
        limits.bodyMemory under limits.bodyBytes would refuse every
        body between the two: one line naming the file and the key that was
        changed (bodyMemory lowered, or bodyBytes raised past it).
        """
        e = self.error(default={}, local={"limits": {"bodyMemory": 65536}})
        self.assertEqual(e.key, "limits.bodyMemory")
        self.assertTrue(e.source.endswith("local.json"), e.source)
        self.assertIn("smaller than limits.bodyBytes (1048576)", str(e))
        self.assertEqual(str(e).count("\n"), 0)
        e = self.error(default={}, local={"limits": {"bodyBytes": 100 << 20}})
        self.assertEqual(e.key, "limits.bodyBytes")
        self.assertTrue(e.source.endswith("local.json"), e.source)
        cfg = load(
            self.conf(default={}, local={"limits": {"bodyMemory": 4096, "bodyBytes": 4096}}), "x"
        )
        self.assertEqual((cfg.limits.body_memory, cfg.limits.body_bytes), (4096, 4096))
        self.assertEqual(load(self.conf(default={}), "x").limits.body_memory, 64 << 20)

    def test_https_needs_key_and_cert(self) -> None:
        """https without certificate paths is refused at load time."""
        e = self.error(
            default={"server": {"protocol": "https", "certificates": {"key": "", "cert": ""}}}
        )
        self.assertIn("server.certificates.key: required when server.protocol is https", str(e))

    def test_bad_json(self) -> None:
        """Invalid JSON names the file."""
        e = self.error(default="{ nope }")
        self.assertIn("default.json: not valid JSON", str(e))

    def test_not_an_object(self) -> None:
        """The top level must be an object."""
        self.assertIn("JSON object", str(self.error(default="[1]")))

    def test_no_files(self) -> None:
        """A config directory with none of the files is an error: no such environment."""
        conf = FilePath(self.mktemp())
        conf.makedirs()
        e = self.assertRaises(ConfigError, load, conf, "x")
        self.assertEqual(
            str(e),
            f"{conf.path}: no environment 'x' (no x.json); the environments here are:"
            " none (add a <env>.json)",
        )

    def test_environment_without_a_file(self) -> None:
        """
        An environment with no <env>.json (a typo) is an error naming the
        environments there are, even when default.json and local.json
        would make a configuration (plain http on every interface).
        """
        conf = FilePath(
            write_config(
                os.path.join(self.mktemp(), "conf"),
                {"default": {}, "local": {}, "development": {}, "production": {}, "x.y": {}},
            )
        )
        conf.child("notes.txt").setContent(b"not an environment")
        e = self.assertRaises(ConfigError, load, conf, "prodution")
        self.assertEqual(
            str(e),
            f"{conf.path}: no environment 'prodution' (no prodution.json); the environments"
            " here are: development, production, x.y",
        )
        self.assertEqual(load(conf, "production").sources[1], conf.child("production.json").path)

    def test_missing_directory(self) -> None:
        """A missing config directory is an error."""
        self.assertRaises(ConfigError, load, FilePath(self.mktemp()), "x")

    def test_bad_env_name(self) -> None:
        """The environment name cannot walk out of the directory."""
        conf = FilePath(write_config(os.path.join(self.mktemp(), "conf"), {"default": {}}))
        self.assertRaises(ConfigError, load, conf, "../etc")


class DefaultsInOnePlaceTests(SynchronousTestCase):
    """
    Every default is written once, in conf/default.json: the code takes
    them from there (config.shipped_defaults), and the guides' tables
    repeat them for operators, checked here.
    """

    def shipped(self) -> dict[str, Any]:
        """The shipped defaults by dotted key (leaves as config.validate sees them)."""
        doc, _ = config.shipped_defaults()
        return dict(model.leaves(doc))

    def test_package_carries_conf_default_json(self) -> None:
        """The package's default.json is conf/default.json, byte for byte."""
        packaged = (resources.files("notificator") / config.DEFAULTS).read_bytes()
        with open(os.path.join(PROJECT, "conf", "default.json"), "rb") as f:
            self.assertEqual(packaged, f.read())

    def test_every_key_once_and_nothing_else(self) -> None:
        """The shipped defaults hold each key exactly, and load without a warning."""
        self.assertEqual(sorted(self.shipped()), sorted(model.SCHEMA))
        self.assertEqual(config.defaults().warnings, ())

    def test_classes_hold_no_defaults(self) -> None:
        """No field of the validated classes has a default of its own (it would be a second one)."""
        seen: set[type] = set()
        todo: list[type] = [config.Config]
        while todo:
            kind = todo.pop()
            if kind in seen:
                continue
            seen.add(kind)
            for field in attrs.fields(kind):
                if kind is config.Config and field.name in ("sources", "warnings"):
                    continue  # what was read and what was wrong: no config keys
                self.assertIs(
                    field.default, attrs.NOTHING, f"{kind.__name__}.{field.name} has a default"
                )
                # The field's classes of this module (types are strings here).
                for name in re.findall(r"\w+", str(field.type)):
                    found = getattr(config, name, None)
                    if (
                        isinstance(found, type)
                        and attrs.has(found)
                        and found.__module__ == model.__name__
                        # A parsed cluster.redis URL: its port and db default
                        # as Redis's URLs do, not as a config key.
                        and found is not config.RedisAddress
                    ):
                        todo.append(found)
        self.assertEqual(len(seen), 11, seen)

    def test_validate_gives_no_default(self) -> None:
        """notificator/config/ reads validated values with values[key], never values.get(key, default)."""
        package = os.path.dirname(model.__file__)
        for name in sorted(os.listdir(package)):
            if not name.endswith(".py"):
                continue
            with open(os.path.join(package, name), encoding="utf-8") as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("get", "pop", "setdefault")
                    and isinstance(node.func.value, (ast.Name, ast.Attribute))
                    and (
                        node.func.value.id
                        if isinstance(node.func.value, ast.Name)
                        else node.func.value.attr
                    )
                    in ("values", "_values")
                    and len(node.args) > 1
                ):
                    self.fail(f"config/{name} line {node.lineno}: values.{node.func.attr}(...)")

    def test_a_second_default_is_found(self) -> None:
        """The checks above fail on the mistakes they are for."""

        @attrs.frozen
        class Twice:
            port: int = 3000

        self.assertIsNot(attrs.fields(Twice).port.default, attrs.NOTHING)
        code = 'x = values.get("server.port", 3000)'
        (call,) = [n for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Call)]
        self.assertEqual((call.func.value.id, call.func.attr), ("values", "get"))

    def test_guides_agree(self) -> None:
        """Each default in README.rst's and README.ko.rst's tables is the shipped one."""
        shipped = self.shipped()
        # Cells that describe rather than quote: what each must say.
        described = {
            "README.rst": {
                "server.certificates": "see file",
                "sse.header": "``{ACAO: []}``",
                "publish.allow": "loopback",
                "monitor.allow": "loopback",
                "sse.auth.cookie": "see meaning",
                "server.tls.ciphers": "see meaning",
                "server.tls.ticketKeyDir": "see meaning",
            },
            "README.ko.rst": {
                "server.certificates": "파일 참고",
                "server.tls.ciphers": "뜻 참고",
                "sse.header": "``{ACAO: []}``",
            },
        }
        for name, rows in (
            ("README.rst", _simple_table_defaults()),
            ("README.ko.rst", _list_table_defaults()),
        ):
            compared = 0
            for key, cell in rows.items():
                if key in described[name]:
                    self.assertEqual(cell, described[name][key], f"{name}: {key}")
                    continue
                self.assertIn(key, shipped, f"{name}: {key} is not a key")
                self.assertIn(key, model.SCHEMA, f"{name}: {key} is not declared")
                m = re.fullmatch(r"``(.*)``", cell)
                self.assertIsNotNone(m, f"{name}: {key}: default {cell!r} is not a literal")
                assert m is not None
                self.assertEqual(json.loads(m.group(1)), shipped[key], f"{name}: {key}")
                compared += 1
            self.assertGreaterEqual(compared, len(shipped) - 9, name)

    def test_directory_without_default_json(self) -> None:
        """A config directory with only local.json gets every default, merged under it."""
        conf = write_config(
            os.path.join(self.mktemp(), "conf"),
            {"x": {}, "local": {"sse": {"header": {"X-Served-By": "n1"}, "retry": 1000}}},
        )
        cfg = load(FilePath(conf), "x")
        root = os.path.dirname(os.path.abspath(conf))
        self.assertEqual(cfg.sse.retry, 1000)
        self.assertEqual(cfg.sse.headers, (("X-Served-By", "n1"),))
        # conf/default.json's [] is merged under local.json's header object.
        self.assertEqual(cfg.sse.cors, CORSPolicy())
        expected = config.defaults(root)
        self.assertEqual(attrs.evolve(cfg.sse, retry=3000, headers=()), expected.sse)
        for section in ("server", "monitor", "publish", "limits", "cluster"):
            self.assertEqual(getattr(cfg, section), getattr(expected, section), section)
        self.assertEqual(cfg.sse.history.directory, os.path.join(root, "var", "history"))


def _simple_table_defaults() -> dict[str, str]:
    """README.rst's configuration table ("key  default  meaning"): key -> default cell."""
    with open(os.path.join(PROJECT, "README.rst"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"^key\s+default\s+meaning", line))
    rows = {}
    for line in lines[start + 2 :]:
        if line.startswith("="):
            break
        m = re.match(r"^``([\w.]+)``\s{2,}(\S.*?)(?:\s{2,}|$)", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def _list_table_defaults() -> dict[str, str]:
    """README.ko.rst's configuration list-table ("키", "기본값"): key -> default cell."""
    with open(os.path.join(PROJECT, "README.ko.rst"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    start = next(
        i for i, line in enumerate(lines) if line == "   * - 키" and lines[i + 1] == "     - 기본값"
    )
    rows = {}
    for i in range(start, len(lines) - 1):
        if lines[i] and not lines[i].startswith(" "):
            break
        m = re.match(r"^   \* - ``([\w.]+)``$", lines[i])
        if m and lines[i + 1].startswith("     - "):
            rows[m.group(1)] = lines[i + 1][len("     - ") :].strip()
    return rows
