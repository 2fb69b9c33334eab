"""
Cluster mode's broker (see L{notificator.broker.redis.ordering}).
"""

from notificator.broker.redis.ordering import RedisBroker

__all__ = ["RedisBroker"]
