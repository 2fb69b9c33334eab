# -*- test-case-name: tests.test_history_journal -*-
"""
The embedded store: L{HistoryFile} keeps a history
(L{notificator.history.memory.History}) on disk across restarts, as an
append-only journal written by a thread of its own (never by the
reactor), compacted when it grows, and replaced by a full snapshot on a
graceful stop.  Pure Python and the standard library: no server to
install.
"""

from __future__ import annotations

import os
import struct
import time
import zlib
from collections.abc import Iterator
from typing import Any

from twisted.logger import Logger

from notificator.events import SEQ_SPAN
from notificator.history.memory import Loaded, State

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
