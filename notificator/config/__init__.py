"""
The configuration, read from a config directory and validated once at
start-up: its files (L{notificator.config.files}), the checks of single
values (L{notificator.config.checks}) and the validated classes
(L{notificator.config.model}).  The names the rest of the server uses are
re-exported here.
"""

from notificator.config.checks import (
    LOG_LEVELS,
    MIN_SECRET_LENGTH,
    PROTOCOLS,
    IPNetwork,
    RedisAddress,
)
from notificator.config.files import (
    DEFAULTS,
    ConfigError,
    environments,
    merge,
    parse_json,
    read_json,
    shipped_defaults,
    strip_comments,
)
from notificator.config.model import (
    FD_MARGIN,
    PRODUCTION,
    STREAM_RESERVE,
    Certificates,
    ClusterConfig,
    Config,
    HistoryConfig,
    LimitsConfig,
    MonitorConfig,
    PublishConfig,
    ServerConfig,
    SSEAuthConfig,
    SSEConfig,
    TLSConfig,
    connection_limit,
    defaults,
    load,
    production_warnings,
    stream_limit,
    validate,
)

__all__ = [
    "Certificates",
    "ClusterConfig",
    "Config",
    "ConfigError",
    "connection_limit",
    "DEFAULTS",
    "defaults",
    "environments",
    "FD_MARGIN",
    "HistoryConfig",
    "IPNetwork",
    "LimitsConfig",
    "load",
    "LOG_LEVELS",
    "merge",
    "MIN_SECRET_LENGTH",
    "MonitorConfig",
    "parse_json",
    "PRODUCTION",
    "production_warnings",
    "PROTOCOLS",
    "PublishConfig",
    "read_json",
    "RedisAddress",
    "ServerConfig",
    "shipped_defaults",
    "SSEAuthConfig",
    "SSEConfig",
    "stream_limit",
    "STREAM_RESERVE",
    "strip_comments",
    "TLSConfig",
    "validate",
]
