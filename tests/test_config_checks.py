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

    def test_bad_url_is_one_line_naming_file_and_key(self) -> None:
        """A bad URL is a ConfigError naming the file and cluster.redis, password masked."""
        for url, words in [
            ("http://h:1", "redis:// or rediss://"),
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
