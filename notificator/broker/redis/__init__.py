"""
Cluster mode's broker, a node among several joined by one Redis (see
L{notificator.broker.redis.ordering}): its ordering of what Redis hands
it, its Lua scripts (L{notificator.broker.redis.scripts}), its
connections (L{notificator.broker.redis.link}) and its metrics
(L{notificator.broker.redis.metrics}).  Imported only when
C{cluster.redis} is set: txredisapi imports the reactor.
"""

from notificator.broker.redis.ordering import RedisBroker

__all__ = ["RedisBroker"]
