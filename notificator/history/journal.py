# -*- test-case-name: tests.test_history_journal -*-
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

L{HistoryFile} keeps a history on disk across restarts (the embedded
store): an append-only journal written by a thread of its own (never by
the reactor), compacted when it grows, and replaced by a full snapshot on
a graceful stop.  Pure Python and the standard library: no server to
install.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import time
import zlib
from collections import deque
from collections.abc import Iterator
from typing import Any

import attrs
from twisted.logger import Logger

from notificator.events import SEQ_SPAN, encode_frame, event_id

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


# -- the embedded store ---------------------------------------------------------

#: The journal's first line; the number is the format's version.
MAGIC = b"NOTIFICATOR-HISTORY 1\n"

_HEAD = struct.Struct(">cI")  # record type, payload length
_CRC = struct.Struct(">I")
# Keys (L{event_key}) are written as milliseconds (Q) and sequence (I).
_STATE = struct.Struct(">QIQIQIB")  # known_since, global floor, last key, clean
_ENTRY = struct.Struct(">QIdH")  # key, time, user id length
_FLOOR = struct.Struct(">QIH")  # floor key, user id length

#: A record larger than this is corruption, not a notification.
MAX_RECORD = 16 * 1024 * 1024


class CorruptHistory(Exception):
    """The file is not a history this version can read."""


def _record(kind: bytes, payload: bytes) -> bytes:
    head = _HEAD.pack(kind, len(payload))
    return head + payload + _CRC.pack(zlib.crc32(head + payload))


def encode_entry(user_id: str, key: int, frame: bytes, when: float) -> bytes:
    """One journal record: a frame kept for a user."""
    user = user_id.encode("utf-8", "surrogatepass")
    ms, seq = divmod(key, SEQ_SPAN)
    return _record(b"E", _ENTRY.pack(ms, seq, when, len(user)) + user + frame)


def encode_floor(user_id: str, floor: int) -> bytes:
    user = user_id.encode("utf-8", "surrogatepass")
    return _record(b"F", _FLOOR.pack(*divmod(floor, SEQ_SPAN), len(user)) + user)


def encode_state(known_since: int, floor: int, last: int, clean: bool) -> bytes:
    return _record(
        b"S",
        _STATE.pack(
            *divmod(known_since, SEQ_SPAN), *divmod(floor, SEQ_SPAN), *divmod(last, SEQ_SPAN), clean
        ),
    )


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


def read_journal(data: bytes) -> Loaded:
    """
    Parse a journal.  A record cut short or failing its checksum at the
    end (a write cut by a crash) ends the reading (C{torn}); anything else
    wrong raises L{CorruptHistory}.
    """
    if not data.startswith(MAGIC):
        raise CorruptHistory("not a Notificator history file of version 1")
    loaded = Loaded()
    pos = len(MAGIC)
    end = len(data)
    seen_state = False
    while pos < end:
        if end - pos < _HEAD.size + _CRC.size:
            loaded.torn = True
            break
        kind, length = _HEAD.unpack_from(data, pos)
        if length > MAX_RECORD:
            raise CorruptHistory(f"record of {length} bytes at offset {pos}")
        stop = pos + _HEAD.size + length
        if stop + _CRC.size > end:
            loaded.torn = True
            break
        (crc,) = _CRC.unpack_from(data, stop)
        if zlib.crc32(data[pos:stop]) != crc:
            if stop + _CRC.size == end:
                loaded.torn = True
                break
            raise CorruptHistory(f"bad checksum at offset {pos}")
        payload = data[pos + _HEAD.size : stop]
        pos = stop + _CRC.size
        try:
            if kind == b"E":
                ms, seq, when, n = _ENTRY.unpack_from(payload)
                key = ms * SEQ_SPAN + seq
                user = payload[_ENTRY.size : _ENTRY.size + n].decode("utf-8", "surrogatepass")
                frame = payload[_ENTRY.size + n :]
                floor, entries = loaded.users.get(user, (0, []))
                entries.append((key, frame, when))
                loaded.users[user] = (floor, entries)
                loaded.last = max(loaded.last, key)
                loaded.clean = False
            elif kind == b"F":
                ms, seq, n = _FLOOR.unpack_from(payload)
                floor = ms * SEQ_SPAN + seq
                user = payload[_FLOOR.size : _FLOOR.size + n].decode("utf-8", "surrogatepass")
                old, entries = loaded.users.get(user, (0, []))
                loaded.users[user] = (max(old, floor), entries)
            elif kind == b"S":
                k1, k2, f1, f2, l1, l2, clean = _STATE.unpack(payload)
                known, floor, last = k1 * SEQ_SPAN + k2, f1 * SEQ_SPAN + f2, l1 * SEQ_SPAN + l2
                if not seen_state:
                    loaded.known_since = known
                seen_state = True
                loaded.floor = max(loaded.floor, floor)
                loaded.last = max(loaded.last, last)
                loaded.clean = bool(clean)
            else:
                raise CorruptHistory(f"unknown record type {kind!r} at offset {pos}")
        except (struct.error, UnicodeDecodeError) as e:
            raise CorruptHistory(f"bad record at offset {pos}: {e}")
    if not seen_state:
        raise CorruptHistory("no state record")
    return loaded


@attrs.frozen
class State:
    """A L{History}'s contents at one moment (L{History.state})."""

    known_since: int
    floor: int
    last: int
    # user id, floor, [(key, frame, time, ...)] oldest first
    users: list[tuple[str, int, list[tuple[Any, ...]]]]


def snapshot_records(state: State, clean: bool) -> Iterator[bytes]:
    """
    A whole journal holding exactly C{state}, record by record, to be
    written as it is made (a snapshot is not held in memory whole); safe
    to run on any thread.
    """
    yield MAGIC
    yield encode_state(state.known_since, state.floor, state.last, False)
    for user_id, floor, entries in state.users:
        if floor:
            yield encode_floor(user_id, floor)
        for entry in entries:
            yield encode_entry(user_id, entry[0], entry[1], entry[2])
    if clean:
        yield encode_state(state.known_since, state.floor, state.last, True)


def snapshot(state: State, clean: bool) -> bytes:
    """A whole journal holding exactly C{state} (L{snapshot_records}, joined)."""
    return b"".join(snapshot_records(state, clean))


class HistoryFile:
    """
    The journal of a L{History} in C{directory}/C{history.log}.

    All file work (appends, fsyncs, snapshots) runs in the order it was
    asked, on one thread of its own, handed over by C{run} (a function
    taking a callable and returning a Deferred: Twisted's
    C{deferToThreadPool} with a pool of one thread, or a direct call in
    tests).  The reactor only joins bytes.

    A write that fails (a full disk, an I/O error) raises, and leaves the
    journal as it was before it: a snapshot is written beside the journal
    and replaces it only once whole, and an append that fails halfway is
    cut back off, so that no record cut short ends up in the middle of the
    journal, where a reader would take the whole file for corrupt (at the
    end, it takes it for a crash and keeps what came before).

    @ivar size: the journal's size in bytes.
    @ivar snapshot_size: its size right after the last snapshot.
    @ivar appendable: a snapshot written by this object is the journal, so
        records may be appended to it (before the first one, the file is
        one this process did not write, or none).
    """

    NAME = "history.log"

    #: Bytes a snapshot is written in, at most (the file's buffer).
    WRITE_BUFFER = 1 << 20

    def __init__(self, directory: str) -> None:
        # Named as before the move to notificator.history.journal: the
        # namespace is part of every log line (issue 18 changes none).
        self.log = Logger("notificator.history.HistoryFile", self)
        self.directory = directory
        self.path = os.path.join(directory, self.NAME)
        self._file: Any = None
        self.size = 0
        self.snapshot_size = 0
        self.appendable = False
        #: The journal may end with a record cut short (an append that
        #: failed and could not be cut back off).
        self._torn = False

    # These run on the writer thread (or at start-up, before serving).

    def load(self) -> Loaded | None:
        """
        Read the journal, or L{None} when there is none.  A file that
        cannot be read as a history is set aside (renamed with a
        C{.corrupt-<time>} suffix) with one warning, and L{None} returned.
        """
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        try:
            loaded = read_journal(data)
        except CorruptHistory as e:
            aside = f"{self.path}.corrupt-{int(time.time())}"
            os.replace(self.path, aside)
            self.log.warn(
                "history file {path} set aside as {aside}: {reason}; starting with an empty history",
                path=self.path,
                aside=aside,
                reason=str(e),
            )
            return None
        if loaded.torn:
            self.log.warn(
                "history file {path} ends with a record cut short (the server was killed);"
                " the records before it are kept",
                path=self.path,
            )
        return loaded

    def write_snapshot(self, state: State, clean: bool = False) -> None:
        """
        Replace the journal with a snapshot of C{state} atomically, and keep
        appending to it.  The records are written as they are encoded,
        through a buffer of L{WRITE_BUFFER} bytes: the memory a snapshot
        takes does not grow with the history.

        @raise OSError: the snapshot could not be written; the journal is
            as it was (and the partial copy removed, to give its room back).
        """
        os.makedirs(self.directory, exist_ok=True)
        tmp = self.path + ".tmp"
        size = 0
        try:
            with open(tmp, "wb", self.WRITE_BUFFER) as f:
                for record in snapshot_records(state, clean):
                    f.write(record)
                    size += len(record)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        self.close()
        self.size = self.snapshot_size = size
        self.appendable = True
        self._torn = False
        _fsync_dir(self.directory)

    def append_entries(self, entries: list[tuple[str, int, bytes, float]]) -> None:
        """Append (user id, key, frame, time) entries and make them durable."""
        self.append(b"".join([encode_entry(*e) for e in entries]))

    def append(self, data: bytes) -> None:
        """
        Append records and make them durable (written and C{fsync}ed).

        @raise OSError: they could not be; the journal ends where it did
            before (or, if even cutting it back failed, with a record cut
            short, which the next append cuts off first).
        @raise ValueError: there is no snapshot of this object's to append
            to (L{appendable}).
        """
        if not self.appendable:
            raise ValueError(f"{self.path}: no snapshot written to append to")
        f = self._file
        if f is None:
            # Unbuffered: what a failed write left is in the file, not in a
            # buffer that a later write would send after other records.
            f = self._file = open(self.path, "ab", buffering=0)
        if self._torn:
            f.truncate(self.size)
            self._torn = False
        try:
            view = memoryview(data)
            while view:
                view = view[f.write(view) :]
            os.fsync(f.fileno())
        except BaseException:
            self._torn = True
            try:
                f.truncate(self.size)
                self._torn = False
            except OSError:
                pass
            raise
        self.size += len(data)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
