"""
The history kept for reconnecting clients: in memory
(L{notificator.history.memory}) and on disk, the embedded store
(L{notificator.history.journal}).  The names the rest of the server uses
are re-exported here.
"""

from notificator.history.journal import (
    MAGIC,
    MAX_RECORD,
    CorruptHistory,
    HistoryFile,
    Journal,
    encode_entry,
    encode_floor,
    encode_state,
    read_journal,
    snapshot,
    snapshot_records,
)
from notificator.history.memory import (
    ENTRY_OVERHEAD,
    EXPIRED,
    LOST,
    MAX_MS,
    UNAVAILABLE,
    UNKNOWN,
    USER_OVERHEAD,
    Entries,
    History,
    Loaded,
    Replay,
    State,
    reset_frame,
    user_cost,
)

__all__ = [
    "CorruptHistory",
    "encode_entry",
    "encode_floor",
    "encode_state",
    "Entries",
    "ENTRY_OVERHEAD",
    "EXPIRED",
    "History",
    "HistoryFile",
    "Journal",
    "Loaded",
    "LOST",
    "MAGIC",
    "MAX_MS",
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
