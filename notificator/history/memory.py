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
from array import array
from collections import deque
from collections.abc import Iterator
from heapq import heapify, heappop, heapreplace
from typing import Any

import attrs

from notificator.events import SEQ_SPAN, encode_frame, event_id

#: Memory bytes counted per kept frame besides its own bytes: the frame's
#: object header (33) and the allocator's rounding, its slot in its user's
#: list of frames (8), its key and time in its user's array (24), its slot
#: in the history's queue (8), and the room those containers keep to grow
#: (measured with tracemalloc: 74 to 89).
ENTRY_OVERHEAD = 88

#: Memory bytes counted per user with kept frames besides its id (counted
#: as the string's own size, C{sys.getsizeof}: a 256-character id of
#: Korean or emoji takes 0.5 to 1 KB): the user's record, its list and its
#: array, its slot in the dictionary of users, and its floor once it has
#: lost a frame (measured: 240 to 310, and 48 for the floor).
USER_OVERHEAD = 360

#: Memory bytes counted per slot of the queue whose frame was trimmed by
#: size (the slot and the frame's time, in its user's array, wait for the
#: next release).
TRIMMED_SLOT = 32


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


#: Keys and times are kept as C{float}s (L{Entries}): exact for keys whose
#: milliseconds are below this (2 ** 53: the year 287,000).
MAX_MS = 1 << 53


class Entries:
    """
    Frames with their keys and times, oldest first, kept in columns: the
    frames in one list, and each one's key (milliseconds, sequence) and
    time in one array of floats, three to a frame.  So a frame costs its
    bytes and 32 bytes more, no object of its own, and nothing the cyclic
    garbage collector has to walk (a list of bytes and an array are two
    objects however many frames they hold).

    Iterating gives C{(key, frame, time)}, oldest first.

    @ivar frames: the frames, the very bytes that went live.
    @ivar data: milliseconds, sequence and time of each frame; in a
        L{History}'s user record it may start with those of frames trimmed
        by size whose slots wait in the history's queue (L{dead}).
    """

    __slots__ = ("frames", "data")

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.data = array("d")

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def dead(self) -> int:
        """How many triples of L{data} belong to no frame (trimmed by size)."""
        return len(self.data) // 3 - len(self.frames)

    def key(self, i: int) -> int:
        """The key of the frame at C{i} (negative: from the newest)."""
        if i < 0:
            i += len(self.frames)
        at = 3 * (self.dead + i)
        data = self.data
        return int(data[at]) * SEQ_SPAN + int(data[at + 1])

    def add(self, ms: int, seq: int, frame: bytes, when: float) -> None:
        """
        Add the frame whose key is C{ms}, C{seq} as the newest (C{ms} below
        L{MAX_MS}).
        """
        self.frames.append(frame)
        data = self.data
        data.append(ms)
        data.append(seq)
        data.append(when)

    def __iter__(self) -> Iterator[tuple[int, bytes, float]]:
        data = self.data
        at = 3 * self.dead
        for frame in self.frames:
            yield int(data[at]) * SEQ_SPAN + int(data[at + 1]), frame, data[at + 2]
            at += 3

    def copy(self) -> Entries:
        """A copy of the kept frames (cheap: the lists of the same bytes)."""
        copy = Entries()
        copy.frames = self.frames[:]
        copy.data = self.data[3 * self.dead :]
        return copy


class _User(Entries):
    """
    One user's kept frames (oldest first), with the times of those trimmed
    by size whose slots are still in the history's queue before them
    (L{Entries.dead}), and its floor.
    """

    __slots__ = ("user_id", "floor")

    def __init__(self, user_id: str, floor: int = 0) -> None:
        super().__init__()
        self.user_id = user_id
        self.floor = floor


class History:
    """
    Recent frames per user, bounded by count, age and memory.

    Each user's frames are kept in columns (L{Entries}), and the order in
    which frames leave (oldest first, for the ttl and the memory bound) is
    a queue holding, for each frame appended, its user's record: the
    user's oldest slot in the queue is its oldest frame, or, when the user
    has more slots than frames, one trimmed by size (its time is kept
    until the queue lets go of it, L{_release}).  Nothing is kept per
    frame but its bytes, 24 bytes of key and time, and two slots.

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
        slots of frames trimmed by size and not yet released are counted
        apart, L{TRIMMED_SLOT} each, and released in batches: the whole
        stays within about 1.25 times C{max_bytes}).
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
        # The user of every frame appended, in key order, also of those
        # trimmed since by size (released when they leave this queue, or
        # in a batch when they are a fifth of the memory: L{_release}).
        self._queue: deque[_User] = deque()
        self._trimmed = 0

    def __len__(self) -> int:
        return sum(len(u.frames) for u in self._users.values())

    @property
    def user_count(self) -> int:
        return len(self._users)

    @property
    def position(self) -> int:
        """
        The key of where a stream that opens now stands: the last key given,
        or, before any, L{known_since}.  L{since} with it is complete with
        what is appended after (ids given next must be later than it, see
        L{notificator.broker.local.LocalBroker}), and, like any other key,
        L{LOST} once the history it belongs to is lost.
        """
        return max(self.last, self.known_since)

    def append(self, user_id: str, key: int, frame: bytes, when: float | None = None) -> None:
        """
        Keep C{frame} (whose event id has key C{key}, later than any
        before) as the newest of C{user_id}'s.
        """
        now = self._clock.seconds() if when is None else when
        ms, seq = divmod(key, SEQ_SPAN)
        if ms >= MAX_MS:
            raise ValueError(f"event id key out of range: {ms}-{seq}")
        user = self._users.get(user_id)
        if user is None:
            # What this user lost before, if anything, is in the global floor.
            user = self._users[user_id] = _User(user_id, self.floor)
            self.bytes += user_cost(user_id)
        frames = user.frames
        frames.append(frame)
        data = user.data
        data.append(ms)
        data.append(seq)
        data.append(now)
        self._queue.append(user)
        self.bytes += len(frame) + ENTRY_OVERHEAD
        if len(frames) > self.size:
            # Trimmed by size: its slot in the queue (and its time) stay.
            at = len(data) - 3 * len(frames)
            user.floor = int(data[at]) * SEQ_SPAN + int(data[at + 1])
            self.bytes -= len(frames.pop(0)) + ENTRY_OVERHEAD
            self._trimmed += TRIMMED_SLOT
            if self._trimmed > (self.bytes >> 2) + 65536:
                self._release()
        self.last = key
        self.expire(now)

    def _release(self) -> None:
        """Let go of the slots of the frames trimmed by size (a pass over the queue)."""
        dead: dict[_User, int] = {}
        for user in self._users.values():
            n = user.dead
            if n:
                del user.data[: 3 * n]
                dead[user] = n
        queue: deque[_User] = deque()
        keep = queue.append
        left = dead.get
        for user in self._queue:
            skip = left(user)
            if skip:
                dead[user] = skip - 1
            else:
                keep(user)
        self._queue = queue
        self._trimmed = 0

    def expire(self, now: float | None = None) -> None:
        """Drop what is older than the ttl, then the oldest over the memory bound."""
        queue = self._queue
        if not queue:
            return
        deadline = (self._clock.seconds() if now is None else now) - self.ttl
        while queue and (queue[0].data[2] <= deadline or self.bytes > self.max_bytes):
            self._drop(queue.popleft())

    def _drop(self, user: _User) -> None:
        """The oldest slot of C{user} left the queue."""
        frames = user.frames
        if user.dead:
            # The slot of a frame trimmed by size since.
            self._trimmed -= TRIMMED_SLOT
        else:
            # Still kept: it is the user's oldest.
            key = user.key(0)
            self.bytes -= len(frames.pop(0)) + ENTRY_OVERHEAD
            if key > user.floor:
                user.floor = key
        del user.data[:3]
        if not frames and self._users.get(user.user_id) is user:
            # Nothing left of this user: fold its floor into the global one.
            del self._users[user.user_id]
            self.bytes -= user_cost(user.user_id)
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
        frames = user.frames if user is not None else []
        oldest = event_id(user.key(0)) if user is not None and frames else None
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
            i = len(frames)
            while i and user is not None and user.key(i - 1) > last:
                i -= 1
            return Replay(True, tuple(frames[i:]), oldest=oldest)
        return Replay(False, tuple(frames), reason, oldest)

    # -- persistence ----------------------------------------------------------

    def state(self) -> State:
        """
        What a snapshot needs, copied cheaply (each user's list of the same
        frames and a copy of its array), so that the snapshot can be
        encoded on another thread while this history goes on changing.
        """
        return State(
            self.known_since,
            self.floor,
            self.last,
            [(u.user_id, u.floor, u.copy()) for u in self._users.values()],
        )

    def load(self, loaded: Loaded) -> None:
        """
        Take back what a journal held (into an empty history): its frames in
        key order, as if appended again, so size, age and memory bounds apply
        as they would have; then its floors.

        The journal is a few runs of frames in key order (a snapshot's, one
        per user, then what was appended after it, in the order published):
        they are merged, which holds one object per run, not per frame.
        """
        entries = loaded.entries
        frames, data = entries.frames, entries.data
        owners, user_ids = loaded.owners, loaded.user_ids
        # Where each run in key order ends.
        ends = array("Q")
        before = (-1.0, -1.0)
        for i in range(len(frames)):
            at = 3 * i
            pair = (data[at], data[at + 1])
            if pair < before:
                ends.append(i)
            before = pair
        ends.append(len(frames))

        def key_of(i: int) -> int:
            at = 3 * i
            return int(data[at]) * SEQ_SPAN + int(data[at + 1])

        # (key, place, end of its run): ties in the journal's order.
        heap = []
        start = 0
        for end in ends:
            if end > start:
                heap.append((key_of(start), start, end))
            start = end
        heapify(heap)
        append = self.append
        while heap:
            key, i, end = heap[0]
            append(user_ids[owners[i]], key, frames[i], data[3 * i + 2])
            i += 1
            if i < end:
                heapreplace(heap, (key_of(i), i, end))
            else:
                heappop(heap)
        for user_id, floor in loaded.floors.items():
            user = self._users.get(user_id)
            if user is not None:
                user.floor = max(user.floor, floor)
            elif floor > self.floor:
                self.floor = floor
        self.floor = max(self.floor, loaded.floor)
        self.last = max(self.last, loaded.last)
        self.known_since = loaded.known_since
        self.expire()


@attrs.define
class Loaded:
    """
    What a journal held: its frames in the journal's order, in columns
    (L{entries}, with C{owners} the user of each as an index into
    C{user_ids}), and the floors of its users.  Columns, not objects per
    frame: a history loaded from its journal is left with nothing but what
    it keeps (L{History.load}).
    """

    known_since: int = 0
    floor: int = 0
    last: int = 0
    clean: bool = False
    torn: bool = False
    entries: Entries = attrs.Factory(Entries)
    owners: array[int] = attrs.Factory(lambda: array("I"))
    user_ids: list[str] = attrs.Factory(list)
    # user id -> the key of its newest frame dropped
    floors: dict[str, int] = attrs.Factory(dict)

    def add(self, user_id: int, ms: int, seq: int, frame: bytes, when: float) -> None:
        """Add a frame of the user at C{user_id} in L{user_ids}."""
        self.entries.add(ms, seq, frame, when)
        self.owners.append(user_id)

    @property
    def users(self) -> dict[str, tuple[int, Entries]]:
        """Each user's floor and frames (in the journal's order), gathered (tests, tools)."""
        users: dict[str, tuple[int, Entries]] = {}
        for owner, (key, frame, when) in zip(self.owners, self.entries, strict=True):
            user_id = self.user_ids[owner]
            if user_id not in users:
                users[user_id] = (0, Entries())
            ms, seq = divmod(key, SEQ_SPAN)
            users[user_id][1].add(ms, seq, frame, when)
        for user_id, floor in self.floors.items():
            users[user_id] = (floor, users.get(user_id, (0, Entries()))[1])
        return users


@attrs.frozen
class State:
    """A L{History}'s contents at one moment (L{History.state})."""

    known_since: int
    floor: int
    last: int
    # user id, floor, its frames (oldest first)
    users: list[tuple[str, int, Entries]]
