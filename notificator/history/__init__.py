"""
The history kept for reconnecting clients (see L{notificator.history.journal}):
the names the rest of the server uses, re-exported.
"""

from notificator.history.journal import (
    ENTRY_OVERHEAD,
    EXPIRED,
    LOST,
    MAGIC,
    MAX_RECORD,
    UNAVAILABLE,
    UNKNOWN,
    USER_OVERHEAD,
    CorruptHistory,
    History,
    HistoryFile,
    Loaded,
    Replay,
    State,
    encode_entry,
    encode_floor,
    encode_state,
    read_journal,
    reset_frame,
    snapshot,
    snapshot_records,
    user_cost,
)

__all__ = [
    "CorruptHistory",
    "encode_entry",
    "encode_floor",
    "encode_state",
    "ENTRY_OVERHEAD",
    "EXPIRED",
    "History",
    "HistoryFile",
    "Loaded",
    "LOST",
    "MAGIC",
    "MAX_RECORD",
    "read_journal",
    "Replay",
    "reset_frame",
    "snapshot",
    "snapshot_records",
    "State",
    "UNAVAILABLE",
    "UNKNOWN",
    "user_cost",
    "USER_OVERHEAD",
]
