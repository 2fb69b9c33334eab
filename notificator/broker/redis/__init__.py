"""
Cluster mode's broker, a node among several joined by one Redis, one file
per job: the ordering of what Redis hands it, which is the broker itself
(L{notificator.broker.redis.ordering}), its Lua scripts
(L{notificator.broker.redis.scripts}), its link to Redis over txredisapi
(L{notificator.broker.redis.link}) and its metrics
(L{notificator.broker.redis.metrics}).  L{build_broker} puts them
together.  Imported only when C{cluster.redis} is set: txredisapi imports
the reactor.
"""

from __future__ import annotations

from typing import Any

from notificator.broker.redis.link import TxRedisLink
from notificator.broker.redis.ordering import Link, Receiver, RedisBroker
from notificator.config import ClusterConfig, HistoryConfig
from notificator.hub import Hub
from notificator.stats import Stats

__all__ = ["build_broker", "Link", "Receiver", "RedisBroker", "TxRedisLink"]


def build_broker(
    hub: Hub,
    stats: Stats,
    reactor: Any,
    cluster: ClusterConfig,
    history: HistoryConfig,
    node: str,
) -> RedisBroker:
    """
    The broker of cluster mode over its link to C{cluster.redis}.

    @param hub: delivers frames to this node's streams.
    @param stats: the server's counters.
    @param reactor: time, and connecting to Redis.
    @param cluster: C{cluster.*} (C{redis} must be set).
    @param history: C{sse.history.*}.
    @param node: this node's name.
    @raise ValueError: C{cluster.redis} is not set, or C{cluster.ca} is
        not a CA file (one line).
    """
    link = TxRedisLink(reactor, cluster, node)
    return RedisBroker(hub, stats, reactor, link, cluster, history, node)
