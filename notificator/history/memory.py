# -*- test-case-name: tests.test_history_memory -*-
"""
The recent notifications of each user, for reconnecting clients.

L{History} keeps, per user, the last C{size} encoded frames (the very
bytes that went live, so a replay writes the same bytes), drops those
older than C{ttl} seconds, and bounds the memory of the whole history
(C{max_bytes}: oldest first when it is reached).  L{History.since}
answers a reconnect: every frame after the client's last event id, in
order, when nothing after that id was dropped; otherwise everything kept,
with the reason the replay is not complete (L{Replay}).

Whether a replay is complete is decided by I{floors}: for each user, the
key of the newest frame it ever lost (trimmed by size, expired, evicted
for memory).  A client whose last id is at or after its user's floor has
missed nothing that is not kept.  A user whose frames are all gone has no
record left; its floor is folded into one I{global floor}, so a client of
such a user whose last id is older than that gets the reset too (it has
been away longer than what is kept).  And nothing is known from before
C{known_since}: the start of the history (a first start, or one whose
kept history was lost).
"""

from __future__ import annotations

import json
import sys
from collections import deque
from typing import Any

import attrs

from notificator.events import encode_frame, event_id

#: Memory bytes counted per kept frame besides its own bytes: the frame's
#: object, the entry tuple, its key and time, and its slots in two
#: containers (measured with tracemalloc: about 185).
ENTRY_OVERHEAD = 200

#: Memory bytes counted per user with kept frames besides its id (counted
#: as the string's own size, C{sys.getsizeof}: a 256-character id of
#: Korean or emoji takes 0.5 to 1 KB): the user's record, its list of
#: frames and its slot in the dictionary of users (measured: about 180).
USER_OVERHEAD = 200


def user_cost(user_id: str) -> int:
    """The memory counted for one user's record in a L{History}, its id included."""
    return USER_OVERHEAD + sys.getsizeof(user_id)


#: Why a replay is not complete (the C{reason} of a L{Replay}).
EXPIRED = "expired"  # notifications after the id were dropped (size, ttl, memory)
UNKNOWN = "unknown"  # not an id this history gave
LOST = "lost"  # older than the history itself (kept history lost)
UNAVAILABLE = "unavailable"  # the history could not be read (cluster mode: Redis down)

#: What each reason says to the client, in the C{reset} event.
_RESET_MESSAGES = {
    EXPIRED: "notifications after lastEventId are no longer kept; what is kept follows",
    UNKNOWN: "lastEventId is not an id of this server; what is kept follows",
    LOST: "lastEventId is older than the kept history (it was lost); what is kept follows",
    UNAVAILABLE: "history unavailable",
}


@attrs.frozen
class Replay:
    """
    What a reconnecting stream gets before the live notifications.

    @ivar complete: every notification after the client's id is in
        C{frames}; if not, C{frames} is everything kept and C{reason} says
        why the rest is missing.
    @ivar frames: encoded frames, oldest first.
    @ivar reason: L{EXPIRED}, L{UNKNOWN}, L{LOST} or L{UNAVAILABLE} when
        not complete.
    @ivar oldest: the id of the oldest frame kept for the user, if any.
    """

    complete: bool
    frames: tuple[bytes, ...] = ()
    reason: str | None = None
    oldest: str | None = None

    @property
    def outcome(self) -> str:
        """C{"complete"} or C{"truncated"}, as the C{connect} event says."""
        return "complete" if self.complete else "truncated"


def reset_frame(replay: Replay, last_id: str) -> bytes:
    """
    The C{reset} event of an incomplete C{replay}: the client, whose last
    event id was C{last_id}, missed notifications that are not kept any
    more (or may have), so what follows is not all it missed and it
    should reload its list.
    """
    data = {
        "reason": replay.reason,
        "message": _RESET_MESSAGES[replay.reason or UNAVAILABLE],
        "lastEventId": last_id,
        "oldestEventId": replay.oldest,
    }
    return encode_frame("reset", json.dumps(data, ensure_ascii=False))


class _User:
    """One user's kept frames (oldest first), floor and memory (L{user_cost})."""

    __slots__ = ("user_id", "entries", "floor", "cost")

    def __init__(self, user_id: str, floor: int = 0) -> None:
        self.user_id = user_id
        # (key, frame, time, this record)
        self.entries: list[tuple[int, bytes, float, _User]] = []
        self.floor = floor
        self.cost = user_cost(user_id)


class History:
    """
    Recent frames per user, bounded by count, age and memory.

    @param clock: the time source (seconds).
    @param size: frames kept per user.
    @param ttl: seconds a frame is kept.
    @param max_bytes: bound on the memory of the history: every kept
        frame (L{ENTRY_OVERHEAD} besides its bytes) and every user with
        kept frames (L{user_cost}).
    @param known_since: the key before which nothing is known.
    @ivar floor: the global floor (see the module docstring).
    @ivar last: the key of the newest frame appended.
    @ivar bytes: memory counted for the kept frames and their users (the
        frames trimmed by size and not yet released are counted apart, and
        released in batches: the whole stays within about 1.25 times
        C{max_bytes}).
    """

    def __init__(
        self,
        clock: Any,
        size: int,
        ttl: float,
        max_bytes: int,
        known_since: int = 0,
    ) -> None:
        self._clock = clock
        self.size = size
        self.ttl = ttl
        self.max_bytes = max_bytes
        self.known_since = known_since
        self.floor = 0
        self.last = 0
        self.bytes = 0
        self._users: dict[str, _User] = {}
        # Every appended entry in key order, also those trimmed since by
        # size (released when they leave this queue, or when they are a
        # fifth of it: L{_release}).
        self._fifo: deque[tuple[int, bytes, float, _User]] = deque()
        self._trimmed = 0

    def __len__(self) -> int:
        return sum(len(u.entries) for u in self._users.values())

    @property
    def user_count(self) -> int:
        return len(self._users)

    def append(self, user_id: str, key: int, frame: bytes, when: float | None = None) -> None:
        """
        Keep C{frame} (whose event id has key C{key}, later than any
        before) as the newest of C{user_id}'s.
        """
        now = self._clock.seconds() if when is None else when
        user = self._users.get(user_id)
        if user is None:
            # What this user lost before, if anything, is in the global floor.
            user = self._users[user_id] = _User(user_id, self.floor)
            self.bytes += user.cost
        entry = (key, frame, now, user)
        entries = user.entries
        entries.append(entry)
        self._fifo.append(entry)
        self.bytes += len(frame) + ENTRY_OVERHEAD
        if len(entries) > self.size:
            old = entries.pop(0)
            user.floor = old[0]
            size = len(old[1]) + ENTRY_OVERHEAD
            self.bytes -= size
            self._trimmed += size
            if self._trimmed > (self.bytes >> 2) + 65536:
                self._release()
        self.last = key
        self.expire(now)

    def _release(self) -> None:
        """Let go of the entries trimmed by size (a pass over the queue)."""
        self._fifo = deque(e for e in self._fifo if _kept(e))
        self._trimmed = 0

    def expire(self, now: float | None = None) -> None:
        """Drop what is older than the ttl, then the oldest over the memory bound."""
        fifo = self._fifo
        if not fifo:
            return
        deadline = (self._clock.seconds() if now is None else now) - self.ttl
        while fifo and (fifo[0][2] <= deadline or self.bytes > self.max_bytes):
            self._drop(fifo.popleft())

    def _drop(self, entry: tuple[int, bytes, float, _User]) -> None:
        key, frame, _, user = entry
        entries = user.entries
        if entries and entries[0] is entry:
            # Still kept (not trimmed by size since): it is the user's oldest.
            self.bytes -= len(frame) + ENTRY_OVERHEAD
            del entries[0]
            if key > user.floor:
                user.floor = key
        else:
            self._trimmed -= len(frame) + ENTRY_OVERHEAD
        if not entries and self._users.get(user.user_id) is user:
            # Nothing left of this user: fold its floor into the global one.
            del self._users[user.user_id]
            self.bytes -= user.cost
            if user.floor > self.floor:
                self.floor = user.floor

    def since(self, user_id: str, last: int | None) -> Replay:
        """
        What a client of C{user_id} that last saw the event with key
        C{last} (L{None}: an id that is not ours) gets: the frames after
        it, or everything kept and why that is not complete.
        """
        self.expire()
        user = self._users.get(user_id)
        entries = user.entries if user is not None else []
        oldest = event_id(entries[0][0]) if entries else None
        if last is None:
            reason: str | None = UNKNOWN
        elif last < self.known_since:
            reason = LOST
        elif last > max(self.last, self.known_since):
            reason = UNKNOWN  # later than any id given
        elif last < (user.floor if user is not None else self.floor):
            reason = EXPIRED
        else:
            # Complete: the frames after the id (few, at the end).
            i = len(entries)
            while i and entries[i - 1][0] > last:
                i -= 1
            return Replay(True, tuple(e[1] for e in entries[i:]), oldest=oldest)
        return Replay(False, tuple(e[1] for e in entries), reason, oldest)

    # -- persistence ----------------------------------------------------------

    def state(self) -> State:
        """
        What a snapshot needs, copied cheaply (lists of the same entry
        tuples), so that the snapshot can be encoded on another thread
        while this history goes on changing.
        """
        return State(
            self.known_since,
            self.floor,
            self.last,
            [(u.user_id, u.floor, u.entries[:]) for u in self._users.values()],
        )

    def load(self, loaded: Loaded) -> None:
        """
        Take back what a journal held (into an empty history): its frames in
        key order, as if appended again, so size, age and memory bounds apply
        as they would have; then its floors.
        """
        merged = [
            (key, user_id, frame, when)
            for user_id, (_, entries) in loaded.users.items()
            for key, frame, when in entries
        ]
        merged.sort(key=lambda e: e[0])
        for key, user_id, frame, when in merged:
            self.append(user_id, key, frame, when)
        for user_id, (floor, _) in loaded.users.items():
            user = self._users.get(user_id)
            if user is not None:
                user.floor = max(user.floor, floor)
            elif floor > self.floor:
                self.floor = floor
        self.floor = max(self.floor, loaded.floor)
        self.last = max(self.last, loaded.last)
        self.known_since = loaded.known_since
        self.expire()


def _kept(entry: tuple[int, bytes, float, _User]) -> bool:
    """Whether an entry of the queue is still one of its user's kept frames."""
    entries = entry[3].entries
    return bool(entries) and entry[0] >= entries[0][0]


@attrs.define
class Loaded:
    """What a journal held."""

    known_since: int = 0
    floor: int = 0
    last: int = 0
    clean: bool = False
    torn: bool = False
    # user id -> (floor, [(key, frame, time)])
    users: dict[str, tuple[int, list[tuple[int, bytes, float]]]] = attrs.Factory(dict)


@attrs.frozen
class State:
    """A L{History}'s contents at one moment (L{History.state})."""

    known_since: int
    floor: int
    last: int
    # user id, floor, [(key, frame, time, ...)] oldest first
    users: list[tuple[str, int, list[tuple[Any, ...]]]]
