"""
Serving one port from several processes (C{server.workers}): the
listening sockets each worker opens with C{SO_REUSEPORT}
(L{notificator.workers.reuseport}), the supervisor that starts, restarts
and replaces the workers (L{notificator.workers.supervisor}), and the
private C{redis-server} that carries their fan-out when no
C{cluster.redis} is set (L{notificator.workers.redis}).
"""
