"""
Serving one port from several processes (C{server.workers}): the
listening sockets each worker opens with C{SO_REUSEPORT}
(L{notificator.workers.reuseport}), the supervisor that starts, restarts
and replaces the workers (L{notificator.workers.supervisor}), the private
C{redis-server} that carries their fan-out when no C{cluster.redis} is
set (L{notificator.workers.redis}), the one C{sse.log} and C{access.log}
the supervisor writes for them (L{notificator.workers.logs}), and what a
worker runs besides the single-process server
(L{notificator.workers.worker}).  L{notificator.workers.wiring} puts
them in L{notificator.tap}'s pre-flight and service tree.
"""
