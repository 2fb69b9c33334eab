"""Tests for L{notificator.config.checks}: the checks of the cluster.* keys."""

from __future__ import annotations

from typing import Any

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from notificator.config import ConfigError, load
from tests.support import write_config


class ClusterConfigTests(SynchronousTestCase):
    def load(self, cluster: Any) -> Any:
        conf = FilePath(self.mktemp())
        conf.makedirs()
        write_config(conf.path, {"default": {"cluster": cluster}, "test": {}})
        return load(conf, "test")

    def test_default_is_one_node(self) -> None:
        """No cluster.redis: one node, no Redis (the README's first command)."""
        self.assertIsNone(self.load({}).cluster.redis)
        self.assertIsNone(self.load({"redis": None}).cluster.redis)

    def test_url(self) -> None:
        """A Redis URL: host, port, db, password (never in its str), TLS for rediss."""
        redis = self.load({"redis": "rediss://:s%40cret@[::1]:6380/2"}).cluster.redis
        self.assertEqual(
            (redis.host, redis.port, redis.db, redis.password, redis.tls),
            ("::1", 6380, 2, "s@cret", True),
        )
        self.assertEqual(str(redis), "rediss://[::1]:6380/2")
        self.assertNotIn("cret", repr(redis))
        plain = self.load({"redis": "redis://cache.local"}).cluster.redis
        self.assertEqual((plain.port, plain.db, plain.tls), (6379, 0, False))

    def test_unix_socket_url(self) -> None:
        """unix:///path/redis.sock[?db=N], as redis-py reads it: the path, the db, a password."""
        redis = self.load({"redis": "unix:///srv/n/var/redis/redis.sock"}).cluster.redis
        self.assertEqual(
            (redis.path, redis.db, redis.tls), ("/srv/n/var/redis/redis.sock", 0, False)
        )
        self.assertEqual(str(redis), "unix:///srv/n/var/redis/redis.sock?db=0")
        other = self.load({"redis": "unix://:s%40cret@/tmp/r%20s.sock?db=7"}).cluster.redis
        self.assertEqual((other.path, other.db, other.password), ("/tmp/r s.sock", 7, "s@cret"))
        self.assertNotIn("cret", str(other) + repr(other))
        tcp = self.load({"redis": "redis://cache.local"}).cluster.redis
        self.assertIsNone(tcp.path)

    def test_bad_unix_socket_url(self) -> None:
        """A unix:// URL with a host, a relative path, another query: one line, password masked."""
        for url, words in [
            ("unix://host/tmp/r.sock", "names no host"),
            ("unix://relative.sock", "names no host"),
            ("unix:///tmp/", "absolute path"),
            ("unix://", "absolute path"),
            ("unix://:topsecret@/tmp/r.sock?db=x", "db=<number>"),
            ("unix:///tmp/r.sock?db=1&timeout=3", "db=<number>"),
            ("unix:///tmp/r.sock?db=1&db=2", "db=<number>"),
            ("unix:///tmp/r.sock?db=99999", "db=<number>"),
            ("unix:///tmp/r.sock#x", "fragment"),
        ]:
            with self.assertRaises(ConfigError, msg=url) as e:
                self.load({"redis": url})
            text = str(e.exception)
            self.assertIn("default.json: cluster.redis: ", text)
            self.assertIn(words, text, url)
            self.assertNotIn("topsecret", text)

    def test_bad_url_is_one_line_naming_file_and_key(self) -> None:
        """A bad URL is a ConfigError naming the file and cluster.redis, password masked."""
        for url, words in [
            ("http://h:1", "redis://, rediss:// or unix://"),
            ("redis://h:99999/0", "Port out of range"),
            ("redis://:topsecret@h/x", "database number"),
            ("redis://", "no host"),
            (6379, "expected null or a URL"),
        ]:
            with self.assertRaises(ConfigError) as e:
                self.load({"redis": url})
            text = str(e.exception)
            self.assertIn("default.json: cluster.redis: ", text)
            self.assertIn(words, text)
            self.assertNotIn("topsecret", text)
            self.assertNotIn("\n", text)

    def test_other_keys(self) -> None:
        """node, prefix, timeout and reconnectMaxDelay are read and checked."""
        cluster = self.load(
            {"node": "sse-1", "prefix": "gw", "timeout": 0.5, "reconnectMaxDelay": 3}
        ).cluster
        self.assertEqual(
            (cluster.node, cluster.prefix, cluster.timeout, cluster.reconnect_max_delay),
            ("sse-1", "gw", 0.5, 3.0),
        )
        self.assertRaises(ConfigError, self.load, {"prefix": "a b"})
        self.assertRaises(ConfigError, self.load, {"timeout": 0})


class WorkersConfigTests(SynchronousTestCase):
    def load(self, workers: Any) -> Any:
        conf = FilePath(self.mktemp())
        conf.makedirs()
        write_config(conf.path, {"default": {"server": {"workers": workers}}, "test": {}})
        return load(conf, "test")

    def test_default_is_one_process(self) -> None:
        """server.workers is 1 unless set: the single process of before."""
        conf = FilePath(self.mktemp())
        conf.makedirs()
        write_config(conf.path, {"test": {}})
        self.assertEqual(load(conf, "test").server.workers, 1)

    def test_number_or_auto(self) -> None:
        """A number of workers, or "auto" (any case), counted when the server starts."""
        self.assertEqual(self.load(4).server.workers, 4)
        self.assertEqual(self.load("auto").server.workers, "auto")
        self.assertEqual(self.load("AUTO").server.workers, "auto")

    def test_bad_workers(self) -> None:
        """0, a negative or huge number, a boolean, another word: one line naming the key."""
        for value, words in [
            (0, "from 1 to 1024"),
            (-2, "from 1 to 1024"),
            (5000, "from 1 to 1024"),
            (True, 'a number of workers or "auto"'),
            ("many", 'a number of workers or "auto"'),
            (2.5, 'a number of workers or "auto"'),
        ]:
            with self.assertRaises(ConfigError, msg=repr(value)) as e:
                self.load(value)
            self.assertIn("default.json: server.workers: ", str(e.exception))
            self.assertIn(words, str(e.exception))
