"""
The server's own log files, both in C{server.log.dir} and rotated daily:

 - C{access.log}: one line per HTTP request in the combined log format
   (L{notificator.logs.access}), written by the site
   (L{notificator.http.site.Site}).  Lines are buffered in
   memory and flushed once a second (and on rotation and stop), so a busy
   server does not pay one C{write(2)} per request.
 - C{sse.log}: the application's events (streams opened and closed,
   publishes, rejections) and the process's (start-up, warnings,
   errors) from twisted.logger, filtered by C{server.log.level}
   (L{notificator.logs.app.AppLogService}).

Rotated files older than C{server.log.keepDays} are removed by the server
(L{notificator.logs.files.OldLogRemover}), so no cron job or logrotate is
needed.

The names the rest of the server uses are re-exported here.
"""

from notificator.logs.access import (
    ACCESS_LOG,
    ADDRESS_LIMIT,
    CUT,
    METHOD_LIMIT,
    PROTOCOL_LIMIT,
    REFERER_LIMIT,
    URI_LIMIT,
    USER_AGENT_LIMIT,
    AccessLog,
    CombinedLogFormatter,
    escape_field,
    log_unfinished,
)
from notificator.logs.app import (
    APP_LOG,
    ActivityLogger,
    AppLogService,
    level_filter,
)
from notificator.logs.files import (
    ACCESS_LOG_BUFFER,
    FLUSH_INTERVAL,
    BufferedDailyLogFile,
    OldLogRemover,
)

__all__ = [
    "ACCESS_LOG",
    "ACCESS_LOG_BUFFER",
    "AccessLog",
    "ADDRESS_LIMIT",
    "APP_LOG",
    "ActivityLogger",
    "AppLogService",
    "BufferedDailyLogFile",
    "CombinedLogFormatter",
    "CUT",
    "escape_field",
    "FLUSH_INTERVAL",
    "level_filter",
    "log_unfinished",
    "METHOD_LIMIT",
    "OldLogRemover",
    "PROTOCOL_LIMIT",
    "REFERER_LIMIT",
    "URI_LIMIT",
    "USER_AGENT_LIMIT",
]
