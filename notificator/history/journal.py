# -*- test-case-name: tests.test_history_journal -*-
"""
The embedded store: L{HistoryFile} keeps a history
(L{notificator.history.memory.History}) on disk across restarts, as an
append-only journal written by a thread of its own (never by the
reactor), compacted when it grows, and replaced by a full snapshot on a
graceful stop.  Pure Python and the standard library: no server to
install.  L{Journal} is its writer: it collects what is published and
hands it to the file's thread, without blocking the reactor.
"""

from __future__ import annotations

import os
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from notificator.events import SEQ_SPAN
from notificator.history.memory import MAX_MS, History, Loaded, State
from notificator.timers import Ticker

#: The journal's first line; the number is the format's version.
MAGIC = b"NOTIFICATOR-HISTORY 1\n"

_HEAD = struct.Struct(">cI")  # record type, payload length
_CRC = struct.Struct(">I")
# Keys (L{notificator.events.event_key}) are written as milliseconds (Q)
# and sequence (I).
_STATE = struct.Struct(">QIQIQIB")  # known_since, global floor, last key, clean
_ENTRY = struct.Struct(">QIdH")  # key, time, user id length
_FLOOR = struct.Struct(">QIH")  # floor key, user id length
# An entry record's head and fixed fields, packed at once (append_entries).
_ENTRY_RECORD = struct.Struct(">cIQIdH")

#: A record larger than this is corruption, not a notification.
MAX_RECORD = 16 * 1024 * 1024


class CorruptHistory(Exception):
    """The file is not a history this version can read."""


def _record(kind: bytes, payload: bytes) -> bytes:
    head = _HEAD.pack(kind, len(payload))
    return head + payload + _CRC.pack(zlib.crc32(head + payload))


def encode_entry(user_id: str, key: int, frame: bytes, when: float) -> bytes:
    """One journal record: a frame kept for a user (as L{HistoryFile.append_entries} writes it)."""
    user = user_id.encode("utf-8", "surrogatepass")
    ms, seq = divmod(key, SEQ_SPAN)
    head = _ENTRY_RECORD.pack(b"E", _ENTRY.size + len(user) + len(frame), ms, seq, when, len(user))
    return head + user + frame + _CRC.pack(zlib.crc32(frame, zlib.crc32(user, zlib.crc32(head))))


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

    Each frame is copied out of C{data} once, into the object the history
    keeps, and nothing else is made per record: what the history does not
    keep leaves nothing behind.
    """
    if not data.startswith(MAGIC):
        raise CorruptHistory("not a Notificator history file of version 1")
    loaded = Loaded()
    user_ids: dict[str, int] = {}
    floors = loaded.floors
    view = memoryview(data)
    pos = len(MAGIC)
    end = len(data)
    seen_state = False
    last = 0
    while pos < end:
        if end - pos < _HEAD.size + _CRC.size:
            loaded.torn = True
            break
        kind, length = _HEAD.unpack_from(data, pos)
        if length > MAX_RECORD:
            raise CorruptHistory(f"record of {length} bytes at offset {pos}")
        start = pos + _HEAD.size
        stop = start + length
        if stop + _CRC.size > end:
            loaded.torn = True
            break
        (crc,) = _CRC.unpack_from(data, stop)
        if zlib.crc32(view[pos:stop]) != crc:
            if stop + _CRC.size == end:
                loaded.torn = True
                break
            raise CorruptHistory(f"bad checksum at offset {pos}")
        pos = stop + _CRC.size
        try:
            if kind == b"E":
                if length < _ENTRY.size:
                    raise struct.error("entry record too short")
                ms, seq, when, n = _ENTRY.unpack_from(data, start)
                at = start + _ENTRY.size
                if at + n > stop:
                    raise struct.error("user id past the record")
                if ms >= MAX_MS:
                    raise struct.error("event id out of range")
                user = str(view[at : at + n], "utf-8", "surrogatepass")
                owner = user_ids.get(user)
                if owner is None:
                    owner = user_ids[user] = len(user_ids)
                    loaded.user_ids.append(user)
                loaded.add(owner, ms, seq, data[at + n : stop], when)
                key = ms * SEQ_SPAN + seq
                if key > last:
                    last = key
                loaded.clean = False
            elif kind == b"F":
                if length < _FLOOR.size:
                    raise struct.error("floor record too short")
                ms, seq, n = _FLOOR.unpack_from(data, start)
                floor = ms * SEQ_SPAN + seq
                at = start + _FLOOR.size
                if at + n > stop:
                    raise struct.error("user id past the record")
                user = str(view[at : at + n], "utf-8", "surrogatepass")
                floors[user] = max(floors.get(user, 0), floor)
            elif kind == b"S":
                k1, k2, f1, f2, l1, l2, clean = _STATE.unpack(view[start:stop])
                known, floor, last_key = k1 * SEQ_SPAN + k2, f1 * SEQ_SPAN + f2, l1 * SEQ_SPAN + l2
                if not seen_state:
                    loaded.known_since = known
                seen_state = True
                loaded.floor = max(loaded.floor, floor)
                last = max(last, last_key)
                loaded.clean = bool(clean)
            else:
                raise CorruptHistory(f"unknown record type {kind!r} at offset {pos}")
        except (struct.error, UnicodeDecodeError) as e:
            raise CorruptHistory(f"bad record at offset {pos}: {e}")
    if not seen_state:
        raise CorruptHistory("no state record")
    loaded.last = last
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
        # The namespace it had before the moves of issue 18: it is part of
        # every log line, and no log line changes.
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
        """
        Append (user id, key, frame, time) entries and make them durable:
        L{encode_entry}'s records, its lines inlined (this runs for every
        notification) and the parts joined once.
        """
        pack = _ENTRY_RECORD.pack
        crc = _CRC.pack
        crc32 = zlib.crc32
        fixed = _ENTRY.size
        parts: list[bytes] = []
        add = parts.append
        for user_id, key, frame, when in entries:
            user = user_id.encode("utf-8", "surrogatepass")
            ms, seq = divmod(key, SEQ_SPAN)
            head = pack(b"E", fixed + len(user) + len(frame), ms, seq, when, len(user))
            add(head)
            add(user)
            add(frame)
            add(crc(crc32(frame, crc32(user, crc32(head)))))
        self.append(b"".join(parts))

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


class Journal:
    """
    Keeps a L{History} on disk (a L{HistoryFile}) without blocking the
    reactor: what is published is collected and handed, every
    C{interval} seconds, to the file's writer thread (C{run}: a function
    that runs a callable there and returns a Deferred), which appends and
    fsyncs it.  When what was appended since the last snapshot is more
    than that snapshot's size plus L{COMPACT_MARGIN} (the file is more
    than twice its size after the snapshot, plus the margin), the writer
    replaces it with a new snapshot (encoded on the writer thread too).
    So the file stays within about twice its last snapshot (the history
    as it was on disk) plus the margin, each snapshot is paid for by at
    least as many bytes appended before it, and a history that sits at its
    memory bound is not rewritten again and again, whatever its memory is
    to its size on disk (the file repeats the user id in each record).  On
    stop, a last snapshot is written, marked clean.

    When the disk fails (full, read-only, I/O errors), what was to be
    written waits in memory until a write that holds it succeeds, and
    nothing published meanwhile is missing once the disk works again:
     - a failed append is tried again, after L{RETRY_FIRST} seconds, then
       twice as long after each failure in a row, up to L{RETRY_MAX};
     - a compaction whose snapshot fails (a disk with room for appends but
       not for a new copy) appends instead, and is tried again on the same
       schedule of its own, so a failing disk is not rewritten every tick;
     - what waits is bounded by the history's own memory bound
       (C{maxBytes}); past it, it is let go and the next write is a
       snapshot, which holds everything the history keeps (as does one
       after a start whose first snapshot failed).
    Each change (failing, working again, compaction failing, compacting
    again) is one log line, not one per try.

    What a C{SIGKILL} or a power loss can lose: the notifications of the
    last C{interval} seconds, not yet written (while the disk fails, all
    those since it failed); and since the journal then does not end clean,
    the next start cannot know what it lost, so every reconnecting client
    gets a reset (with everything kept).

    @param run: runs a callable with arguments on the writer thread and
        returns a Deferred of its result (C{deferToThreadPool}, curried).
    """

    #: Bytes appended beyond a snapshot's own size before the next one.
    COMPACT_MARGIN = 1 << 20

    #: Seconds to wait after a failed write before the next try; the wait
    #: doubles after each failure in a row, up to L{RETRY_MAX}.
    RETRY_FIRST = 1.0
    RETRY_MAX = 60.0

    def __init__(
        self,
        file: HistoryFile,
        clock: IReactorTime,
        run: Callable[..., Deferred[Any]],
        interval: float = 0.2,
    ) -> None:
        # The namespace it had before the moves of issue 18: it is part of
        # every log line, and no log line changes.
        self.log = Logger("notificator.broker.Journal", self)
        self.file = file
        self._clock = clock
        self._run = run
        self.interval = interval
        self._pending: list[tuple[str, int, bytes, float]] = []
        self._writing = False
        self._idle: list[Deferred[None]] = []
        self._timer: Ticker | None = None
        self._history: History | None = None
        #: Failed writes in a row, and when the next may be tried.
        self._failures = 0
        self._retry_at = 0.0
        #: Failed compactions in a row, and when the next may be tried.
        self._compact_failures = 0
        self._compact_at = 0.0
        #: What waited was let go: only a snapshot makes the journal whole.
        self._let_go = False
        #: Frame bytes of the first C{_counted} entries of C{_pending}
        #: (counted only while the disk fails).
        self._counted = 0
        self._pending_bytes = 0

    @property
    def waiting(self) -> int:
        """How many recorded notifications wait to be written."""
        return len(self._pending)

    def start(self, history: History) -> None:
        """
        Load what the file kept into C{history} (at start-up, before
        serving: blocking is fine), write a fresh snapshot, and start
        appending.  If that snapshot fails, the server serves all the
        same (from memory) and the snapshot is tried again as a failed
        write is.
        """
        self._history = history
        now_key = history.known_since
        loaded = self.file.load()
        if loaded is not None:
            history.load(loaded)
            if not loaded.clean:
                # Killed: what it lost is unknown, so nothing before now is known.
                history.known_since = max(now_key, history.known_since)
                self.log.warn(
                    "history in {path} was not closed cleanly (killed?): reconnecting"
                    " clients get a reset with everything kept",
                    path=self.file.path,
                )
            self.log.info(
                "history loaded from {path}: {frames} notifications of {users} users",
                path=self.file.path,
                frames=len(history),
                users=history.user_count,
            )
        try:
            self.file.write_snapshot(history.state())
        except Exception:
            self._failed(Failure())
        self._timer = Ticker(
            self.flush, "writing the history", self._clock, self.interval, self.log.namespace
        )
        self._timer.start()

    def record(self, user_id: str, key: int, frame: bytes, when: float) -> None:
        # Encoded by the writer thread, in the next flush.
        self._pending.append((user_id, key, frame, when))

    def flush(self) -> None:
        """Hand what was recorded to the writer; compact when it has grown."""
        if self._writing:
            return  # the next tick takes what came meanwhile
        history = self._history
        if history is None:
            return
        file = self.file
        if self._let_go or not file.appendable:
            # The next write is a snapshot: it holds everything waiting.
            self._take()
        if self._failures:
            self._bound(history.max_bytes)
            if self._clock.seconds() < self._retry_at:
                return
        if self._let_go or not file.appendable:
            self._snapshot(history)
        elif (
            file.size > 2 * file.snapshot_size + self.COMPACT_MARGIN
            and self._clock.seconds() >= self._compact_at
        ):
            self._compact(history)
        elif self._pending:
            self._append()

    def _bound(self, max_bytes: int) -> None:
        """While the disk fails: let what waits go once its frames are over C{max_bytes}."""
        pending = self._pending
        total = self._pending_bytes
        for entry in pending[self._counted :]:
            total += len(entry[2])
        self._counted, self._pending_bytes = len(pending), total
        if total > max_bytes:
            self._pending = []
            self._counted = self._pending_bytes = 0
            if not self._let_go:
                self._let_go = True
                self.log.warn(
                    "history: more than {bytes} bytes wait to be written to {path};"
                    " it will be written whole (a snapshot) once the disk works",
                    bytes=max_bytes,
                    path=self.file.path,
                )

    def _take(self) -> list[tuple[str, int, bytes, float]]:
        taken, self._pending = self._pending, []
        self._counted = self._pending_bytes = 0
        return taken

    def _give_back(self, taken: list[tuple[str, int, bytes, float]]) -> None:
        """What a failed write held waits again, first (it was recorded first)."""
        if not self._let_go:
            self._pending[:0] = taken
            self._counted = self._pending_bytes = 0

    def _append(self) -> None:
        entries = self._take()

        def done(failure: Failure | None) -> None:
            if failure is None:
                self._succeeded()
            else:
                self._give_back(entries)
                self._failed(failure)

        self._write(done, self.file.append_entries, entries)

    def _snapshot(self, history: History) -> None:
        """A snapshot that must be written (it is all that can be): its failure is a write's."""
        taken = self._take()  # all in the snapshot

        def done(failure: Failure | None) -> None:
            if failure is None:
                self._let_go = False
                self._compacted()
                self._succeeded()
            else:
                self._give_back(taken)
                self._failed(failure)

        self._write(done, self.file.write_snapshot, history.state())

    def _compact(self, history: History) -> None:
        """A snapshot in place of appending; if it fails, what it held is appended instead."""
        taken = self._take()

        def done(failure: Failure | None) -> None:
            if failure is None:
                self._compacted()
                self._succeeded()
                return
            self._give_back(taken)
            self._compact_failed(failure)
            if self._pending:
                self._append()

        self._write(done, self.file.write_snapshot, history.state())

    def _last(self, history: History) -> None:
        """
        The clean snapshot of a stop; if it fails, what waited is appended
        (when it can be), so the next start has it, not closed cleanly.
        """
        whole = self._let_go or not self.file.appendable
        taken = self._take()

        def done(failure: Failure | None) -> None:
            if failure is None:
                self._succeeded()
                return
            self._give_back(taken)
            self._failures = 0  # one line for this failure, whatever came before
            self._failed(failure, "the last snapshot of the history")
            if self._pending and not whole:
                self._append()

        self._write(done, self.file.write_snapshot, history.state(), True)

    def _write(
        self, done: Callable[[Failure | None], None], what: Callable[..., None], *args: Any
    ) -> None:
        """Run C{what} on the writer, then C{done} with its failure or L{None}."""
        self._writing = True

        def finished(result: object) -> None:
            self._writing = False
            done(result if isinstance(result, Failure) else None)
            if not self._writing:
                idle, self._idle = self._idle, []
                for waiter in idle:
                    waiter.callback(None)

        self._run(what, *args).addBoth(finished).addErrback(
            lambda f: self.log.failure("the history's writer failed", f)
        )

    def _retry_delay(self, failures: int) -> float:
        return min(self.RETRY_MAX, self.RETRY_FIRST * 2.0 ** min(failures - 1, 32))

    def _failed(self, failure: Failure, what: str | None = None) -> None:
        """
        A write failed: the next waits (L{RETRY_FIRST}, doubling).  The
        first failure in a row is logged: an C{OSError} (the disk) as one
        line with its reason, anything else with its traceback.

        @param what: the write, if it was the last one (of a stop).
        """
        self._failures += 1
        delay = self._retry_delay(self._failures)
        self._retry_at = self._clock.seconds() + delay
        if self._failures > 1:
            return
        path = self.file.path
        if what is not None and failure.check(OSError):
            self.log.error(
                "writing {what} to {path} failed: {reason}; what waited is appended"
                " instead if it can be (the next start finds the history not closed cleanly)",
                what=what,
                path=path,
                reason=_reason(failure),
            )
        elif failure.check(OSError):
            self.log.error(
                "writing the history to {path} failed: {reason}; what is published waits"
                " in memory and is written once the disk works (next try in {delay:g} s)",
                path=path,
                reason=_reason(failure),
                delay=delay,
            )
        else:
            self.log.failure("writing the history to {path} failed", failure, path=path)

    def _succeeded(self) -> None:
        if self._failures:
            self._failures = 0
            self.log.info("the history is written to {path} again", path=self.file.path)

    def _compact_failed(self, failure: Failure) -> None:
        self._compact_failures += 1
        delay = self._retry_delay(self._compact_failures)
        self._compact_at = self._clock.seconds() + delay
        if self._compact_failures > 1:
            return
        if failure.check(OSError):
            self.log.warn(
                "compacting the history in {path} failed: {reason}; appending to it"
                " instead (next try in {delay:g} s)",
                path=self.file.path,
                reason=_reason(failure),
                delay=delay,
            )
        else:
            self.log.failure(
                "compacting the history in {path} failed", failure, path=self.file.path
            )

    def _compacted(self) -> None:
        if self._compact_failures:
            self._compact_failures = 0
            self._compact_at = 0.0
            self.log.info("the history in {path} is compacted again", path=self.file.path)

    def _when_idle(self) -> Deferred[None]:
        if not self._writing:
            return succeed(None)
        idle: Deferred[None] = Deferred()
        self._idle.append(idle)
        return idle

    def stop(self) -> Deferred[None]:
        """
        Write the final, clean snapshot of the history; fires when it is on
        disk (or, if it fails, once what waited is appended, if it can be).
        """
        history = self._history
        assert history is not None, "stop() after start()"
        if self._timer is not None:
            self._timer.stop()

        def last(_: object) -> Deferred[None]:
            self._last(history)
            return self._when_idle()

        d = self._when_idle()
        d.addCallback(last)
        d.addBoth(lambda _: self.file.close())
        return d


def _reason(failure: Failure) -> str:
    """An C{OSError}'s reason, as C{strerror} says it (C{No space left on device})."""
    error = failure.value
    return str(getattr(error, "strerror", None) or error)
