"""
One table of replay and gap cases (L{CASES}), which every implementation
of the replay rules is tested with:

- C{history}: the one node's history, L{notificator.history.History}
  (tests/test_history_memory.py), with event ids made as
  L{notificator.broker.local.LocalBroker} makes them;
- C{scripts}: cluster mode's Lua scripts C{PUBLISH} and C{SINCE}, run by a
  real C{redis-server} (tests/test_redis_scripts.py), and their copy in
  Python that the ordering's tests run on,
  L{notificator.broker.testing.MemoryRedis} (tests/test_broker_testing.py).

A case is a sequence of steps: notifications published (each named, for
one user), time passing (in ttls), the history lost (a restart without
it), and reconnects (L{Expect}: a user's client with a last event id, and
what it must get: complete, or truncated and why; the frames, by the names
of their notifications; the oldest kept).  The rules are the same for all
(see L{notificator.history.memory}); where the two differ on purpose, the
case says which implementation it is for (C{only}) and why.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any, Protocol

import attrs
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from notificator.broker.redis.ordering import parse_since
from notificator.broker.redis.scripts import MARK, PUBLISH, SINCE, Script
from notificator.events import SEQ_SPAN, EventIds, encode_frame, event_id, event_key
from notificator.history import EXPIRED, LOST, UNKNOWN, History

HISTORY = "history"
SCRIPTS = "scripts"

#: Last event ids that are no notification's.
NOT_AN_ID = "(not an id)"
EMPTY = "(empty)"
LATER = "(later than any id given)"
BEFORE_ALL = "(before the history began)"


@attrs.frozen
class Publish:
    """Notification C{name} of C{user} is published."""

    name: str
    user: str = "u"


@attrs.frozen
class Wait:
    """
    Time passes: C{ttls} times C{sse.history.ttl}.  On a real
    C{redis-server} the time is real: a frame a case expects gone is older
    than the ttl whatever the machine does (a sleep never ends early), and
    one it expects kept is at most 0.35 ttl old when asked, which leaves a
    slow machine most of the ttl to spare.
    """

    ttls: float


@attrs.frozen
class Restart:
    """The kept history is lost (a restart without it); later ids go on from the clock."""


@attrs.frozen
class Connect:
    """
    A stream opens: its C{connect} event carries the position of the
    implementation now (L{Implementation.position}), which later steps
    name C{name}, as the last event id of a browser that received nothing
    else.
    """

    name: str


@attrs.frozen
class Expect:
    """
    A client of C{user} reconnects with C{last} (a notification's name, or
    one of L{NOT_AN_ID}, L{EMPTY}, L{LATER}, L{BEFORE_ALL}), and gets
    C{frames} (names, in order): complete when C{reason} is L{None}, else
    truncated for C{reason}; C{oldest}: the name of the oldest kept.
    """

    user: str
    last: str
    frames: tuple[str, ...] = ()
    reason: str | None = None
    oldest: str | None = None


@attrs.frozen
class Case:
    """
    @ivar size: C{sse.history.size}.
    @ivar memory: C{sse.history.max_bytes} counted in frames (the history
        only); L{None}: not reached.
    @ivar only: the implementation the case is for, when they differ on
        purpose (and C{why}).
    """

    name: str
    steps: tuple[Publish | Wait | Restart | Connect | Expect, ...]
    size: int = 3
    memory: int | None = None
    only: str | None = None
    why: str = ""


def _steps(
    *steps: Publish | Wait | Restart | Connect | Expect,
) -> tuple[Publish | Wait | Restart | Connect | Expect, ...]:
    return steps


CASES = [
    Case(
        "the frames after the last id, in order",
        _steps(
            Publish("a1"),
            Publish("a2"),
            Publish("a3"),
            Expect("u", "a1", ("a2", "a3"), oldest="a1"),
            Expect("u", "a2", ("a3",), oldest="a1"),
        ),
    ),
    Case(
        "the last id is the newest: complete, nothing to send",
        _steps(Publish("a1"), Publish("a2"), Expect("u", "a2", (), oldest="a1")),
    ),
    Case(
        "the last id is another user's, between the user's frames",
        _steps(
            Publish("a1"),
            Publish("b2", "v"),
            Publish("a3"),
            Expect("u", "b2", ("a3",), oldest="a1"),
            Expect("v", "a1", ("b2",), oldest="b2"),
        ),
    ),
    Case(
        "trimmed by size: from before the kept range, what is kept and expired;"
        " from the newest trimmed on, complete",
        _steps(
            Publish("a1"),
            Publish("a2"),
            Publish("a3"),
            Publish("a4"),
            Publish("a5"),
            Expect("u", "a1", ("a3", "a4", "a5"), EXPIRED, "a3"),
            Expect("u", "a2", ("a3", "a4", "a5"), oldest="a3"),
            Expect("u", "a3", ("a4", "a5"), oldest="a3"),
        ),
    ),
    Case(
        "trimmed by size: another user's id older than the trimmed is expired, newer complete",
        _steps(
            Publish("b0", "v"),
            Publish("a1"),
            Publish("b2", "v"),
            Publish("a3"),
            Publish("a4"),
            Publish("a5"),
            Expect("u", "b0", ("a3", "a4", "a5"), EXPIRED, "a3"),
            Expect("u", "b2", ("a3", "a4", "a5"), oldest="a3"),
        ),
    ),
    Case(
        "not an id, or an empty one: unknown, everything kept",
        _steps(
            Publish("a1"),
            Publish("a2"),
            Expect("u", NOT_AN_ID, ("a1", "a2"), UNKNOWN, "a1"),
            Expect("u", EMPTY, ("a1", "a2"), UNKNOWN, "a1"),
            Expect("v", NOT_AN_ID, (), UNKNOWN),
        ),
    ),
    Case(
        "later than any id given: unknown, everything kept",
        _steps(
            Publish("a1"),
            Publish("b2", "v"),
            Expect("u", LATER, ("a1",), UNKNOWN, "a1"),
            Expect("w", LATER, (), UNKNOWN),
        ),
    ),
    Case(
        "older than the history itself: lost, everything kept",
        _steps(
            Publish("a1"),
            Publish("a2"),
            Expect("u", BEFORE_ALL, ("a1", "a2"), LOST, "a1"),
            Expect("w", BEFORE_ALL, (), LOST),
        ),
    ),
    Case(
        "an id from before a restart that lost the history: lost",
        _steps(
            Publish("a1"),
            Publish("a2"),
            Restart(),
            Expect("u", "a2", (), LOST),
            Publish("a3"),
            Expect("u", "a2", ("a3",), LOST, "a3"),
            Expect("u", "a1", ("a3",), LOST, "a3"),
            Expect("u", "a3", (), oldest="a3"),
        ),
    ),
    Case(
        "expired by ttl, none published since: from before it expired, from it on complete",
        _steps(
            Publish("z0", "z"),
            Publish("a1"),
            Wait(0.7),
            Publish("a2"),
            Wait(0.35),
            Expect("u", "z0", ("a2",), EXPIRED, "a2"),
            Expect("u", "a1", ("a2",), oldest="a2"),
            Expect("u", "a2", (), oldest="a2"),
        ),
    ),
    Case(
        "expired by ttl, then trimmed by a publish: the same",
        _steps(
            Publish("z0", "z"),
            Publish("a1"),
            Wait(0.7),
            Publish("a2"),
            Wait(0.35),
            Publish("a3"),
            Expect("u", "z0", ("a2", "a3"), EXPIRED, "a2"),
            Expect("u", "a1", ("a2", "a3"), oldest="a2"),
        ),
    ),
    Case(
        "everything of the user expired: nothing kept; from before its last, expired",
        _steps(
            Publish("z0", "z"),
            Publish("a1"),
            Publish("a2"),
            Wait(1.2),
            Expect("u", "a2", ()),
            Expect("u", "a1", (), EXPIRED),
            Expect("u", "z0", (), EXPIRED),
        ),
    ),
    Case(
        "back after everything expired: what it lost still counts",
        _steps(
            Publish("z0", "z"),
            Publish("a1"),
            Wait(1.2),
            Publish("a2"),
            Expect("u", "z0", ("a2",), EXPIRED, "a2"),
            Expect("u", "a1", ("a2",), oldest="a2"),
        ),
    ),
    Case(
        "a user with nothing kept, from an id newer than the ttl: complete",
        _steps(
            Publish("b1", "v"),
            Wait(1.2),
            Publish("b2", "v"),
            Expect("w", "b2", ()),
            Expect("w", LATER, (), UNKNOWN),
        ),
    ),
    Case(
        "a user with nothing kept, from before what a gone user lost: expired",
        _steps(
            Publish("b1", "v"),
            Publish("z1", "z"),
            Wait(1.2),
            Publish("b2", "v"),
            Expect("w", "b1", (), EXPIRED),
        ),
    ),
    Case(
        "a user with nothing kept, from the newest a gone user lost: complete (global floor)",
        _steps(
            Publish("b1", "v"),
            Publish("z1", "z"),
            Wait(1.2),
            Publish("b2", "v"),
            Expect("w", "z1", ()),
        ),
        only=HISTORY,
        why="the history keeps one global floor, the newest frame lost by any user whose"
        " record is gone; the scripts keep none, and take everything older than the ttl as"
        " lost for a user without a record",
    ),
    Case(
        "a user with nothing kept, from the newest a gone user lost: expired (older than the ttl)",
        _steps(
            Publish("b1", "v"),
            Publish("z1", "z"),
            Wait(1.2),
            Publish("b2", "v"),
            Expect("w", "z1", (), EXPIRED),
        ),
        only=SCRIPTS,
        why="see the case before",
    ),
    Case(
        "all the user's frames expired, and a later one of another user: expired (global floor)",
        _steps(
            Publish("a1"),
            Publish("b2", "v"),
            Wait(1.2),
            Expect("u", "a1", (), EXPIRED),
        ),
        only=HISTORY,
        why="the history folds a gone user's floor into the global floor, which another"
        " user's later loss raised; the scripts keep each user's last id a day longer than"
        " its frames",
    ),
    Case(
        "all the user's frames expired, and a later one of another user: complete (its own last)",
        _steps(
            Publish("a1"),
            Publish("b2", "v"),
            Wait(1.2),
            Expect("u", "a1", ()),
        ),
        only=SCRIPTS,
        why="see the case before",
    ),
    Case(
        "a stream's position at connect: complete, what was published after it",
        _steps(
            Publish("a1"),
            Connect("c"),
            Expect("u", "c", (), oldest="a1"),
            Expect("v", "c", ()),
            Publish("a2"),
            Publish("b3", "v"),
            Expect("u", "c", ("a2",), oldest="a1"),
            Expect("v", "c", ("b3",), oldest="b3"),
        ),
    ),
    Case(
        "a position given before any notification: complete, then the first one",
        _steps(
            Connect("c"),
            Expect("u", "c", ()),
            Publish("a1"),
            Expect("u", "c", ("a1",), oldest="a1"),
            Connect("d"),
            Expect("u", "d", (), oldest="a1"),
        ),
    ),
    Case(
        "a position from before a restart that lost the history: lost",
        _steps(
            Connect("c"),
            Publish("a1"),
            Connect("d"),
            Restart(),
            Expect("u", "c", (), LOST),
            Expect("u", "d", (), LOST),
            Publish("a2"),
            Expect("u", "d", ("a2",), LOST, "a2"),
            Connect("e"),
            Expect("u", "e", (), oldest="a2"),
        ),
    ),
    Case(
        "a position before what the user lost since: expired",
        _steps(
            Publish("z0", "z"),
            Connect("c"),
            Publish("a1"),
            Publish("a2"),
            Publish("a3"),
            Publish("a4"),
            Expect("u", "c", ("a2", "a3", "a4"), EXPIRED, "a2"),
            Expect("z", "c", (), oldest="z0"),
        ),
    ),
    Case(
        "over the memory bound, the oldest frames of any user go first",
        _steps(
            Publish("a1"),
            Publish("b2", "v"),
            Publish("a3"),
            Publish("c4", "w"),
            Publish("b5", "v"),
            Expect("u", "a1", ("a3",), oldest="a3"),
            Expect("u", BEFORE_ALL, ("a3",), LOST, "a3"),
            Expect("v", "b2", ("b5",), oldest="b5"),
            Expect("v", "a1", ("b5",), EXPIRED, "b5"),
        ),
        size=100,
        memory=3,
        only=HISTORY,
        why="only the history bounds its memory (sse.history.max_bytes)",
    ),
]


# -- running them ---------------------------------------------------------------------


def frame_of_case(name: str, event_id: str) -> bytes:
    """The frame of the notification C{name} with the id C{event_id}."""
    return encode_frame("notify", json.dumps({"name": name}), event_id)


class Implementation(Protocol):
    """An implementation of the replay rules, as a case drives it."""

    def publish(self, name: str, user: str) -> str:
        """Publish notification C{name} of C{user}; its event id."""

    def wait(self, ttls: float) -> None:
        """Let C{ttls} times the ttl pass."""

    def restart(self) -> None:
        """Lose the kept history."""

    def position(self) -> str:
        """The id a stream's C{connect} event carries now."""

    def since(self, user: str, last: str) -> tuple[str | None, tuple[bytes, ...], str | None]:
        """The reason (L{None}: complete), the frames and the oldest kept id."""


def run_case(testcase: SynchronousTestCase, case: Case, implementation: Implementation) -> None:
    """Run C{case} on C{implementation}, failing C{testcase} where it differs."""
    ids: dict[str, str] = {}
    positions: dict[str, str] = {}
    last_given = "0-0"
    for step in case.steps:
        if isinstance(step, Publish):
            ids[step.name] = last_given = implementation.publish(step.name, step.user)
        elif isinstance(step, Wait):
            implementation.wait(step.ttls)
        elif isinstance(step, Restart):
            implementation.restart()
        elif isinstance(step, Connect):
            positions[step.name] = implementation.position()
        else:
            special = {
                NOT_AN_ID: "not-an-id",
                EMPTY: "",
                LATER: f"{int(last_given.split('-')[0]) + 10_000_000}-0",
                BEFORE_ALL: "1-0",
            }
            last = {**ids, **positions, **special}[step.last]
            reason, frames, oldest = implementation.since(step.user, last)
            names = {event_id: name for name, event_id in ids.items()}
            got = (
                reason,
                [names.get(_id_of(f), f) for f in frames],
                names.get(oldest or "", oldest),
            )
            testcase.assertEqual(
                got,
                (step.reason, list(step.frames), step.oldest),
                f"{case.name}: {step}",
            )
            testcase.assertEqual(
                frames,
                tuple(frame_of_case(name, ids[name]) for name in step.frames),
                f"{case.name}: {step}: the frames' bytes",
            )


def _id_of(frame: bytes) -> str:
    m = re.match(rb"id: (\S+)\n", frame)
    return m.group(1).decode() if m else repr(frame)


def replay_cases(
    implementation: str, make: Callable[[Any, Case], Implementation]
) -> Callable[[type], type]:
    """
    A class decorator that adds to a test case class a test method per
    case that applies to C{implementation} (named after the case, its name
    as docstring), each running its case on C{make(testcase, case)}.
    """

    def add(cls: type) -> type:
        for case in CASES:
            if case.only not in (None, implementation):
                continue

            def test(self: Any, case: Case = case) -> None:
                run_case(self, case, make(self, case))

            test.__name__ = "test_" + re.sub(r"\W+", "_", case.name).strip("_")
            test.__doc__ = case.name[0].upper() + case.name[1:] + "."
            assert not hasattr(cls, test.__name__), case.name
            setattr(cls, test.__name__, test)
        return cls

    return add


class HistoryImplementation:
    """
    The one node's L{History}, its ids made as
    L{notificator.broker.local.LocalBroker} makes them, on a L{Clock}.
    """

    TTL = 60.0

    def __init__(self, case: Case) -> None:
        from notificator.history import ENTRY_OVERHEAD, user_cost

        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.size = case.size
        self.max_bytes = 64 << 20
        if case.memory is not None:
            each = len(frame_of_case("a1", "1800000000000-0")) + ENTRY_OVERHEAD
            self.max_bytes = case.memory * each + case.memory * user_cost("u")
        self.restart()

    def restart(self) -> None:
        self.clock.advance(0.002)
        self.history = History(
            self.clock,
            size=self.size,
            ttl=self.TTL,
            max_bytes=self.max_bytes,
            known_since=int(self.clock.seconds() * 1000) * SEQ_SPAN,
        )
        self.ids = EventIds(self.clock, after=self.history.position)

    def position(self) -> str:
        return event_id(self.history.position)

    def publish(self, name: str, user: str) -> str:
        event_id = self.ids.next()
        self.history.append(user, self.ids.last, frame_of_case(name, event_id))
        return event_id

    def wait(self, ttls: float) -> None:
        self.clock.advance(ttls * self.TTL)

    def since(self, user: str, last: str) -> tuple[str | None, tuple[bytes, ...], str | None]:
        replay = self.history.since(user, event_key(last))
        return replay.reason, replay.frames, replay.oldest


class ScriptsImplementation:
    """
    Cluster mode's scripts, run by C{run(script, keys, args)} (a real
    C{redis-server}, or L{notificator.broker.testing.MemoryRedis}).

    @param wait: lets seconds pass (real ones for a real server).
    @param flush: C{FLUSHALL}.
    @param ttl: seconds.
    """

    def __init__(
        self,
        case: Case,
        run: Callable[[Script, list[bytes], list[Any]], Any],
        wait: Callable[[float], None],
        flush: Callable[[], None],
        ttl: float,
    ) -> None:
        self._run = run
        self._wait = wait
        self._flush = flush
        self.size = case.size
        self.ttl = ttl
        self.ttl_ms = int(ttl * 1000)

    def _keys(self, user: str) -> list[bytes]:
        return [b"t:h:" + user.encode(), b"t:f:" + user.encode()]

    def publish(self, name: str, user: str) -> str:
        body = frame_of_case(name, "0-0").split(b"\n", 1)[1]
        keys = [b"t:last", b"t:since", *self._keys(user)]
        args = [self.size, self.ttl_ms, b"t:events", body, user.encode()]
        return bytes(self._run(PUBLISH, keys, args)[0]).decode()

    def wait(self, ttls: float) -> None:
        self._wait(ttls * self.ttl)

    def restart(self) -> None:
        self._flush()
        self._wait(0.002)

    def position(self) -> str:
        # A node's: the last id it received on the channel, which is the
        # last id given; made by MARK when none was given yet.
        return bytes(self._run(MARK, [b"t:last", b"t:since"], [])).decode()

    def since(self, user: str, last: str) -> tuple[str | None, tuple[bytes, ...], str | None]:
        # Asked second, after another user, as the fill after a gap asks
        # for many users in one call.
        keys = [b"t:last", b"t:since", *self._keys("nobody"), *self._keys(user)]
        reply = self._run(SINCE, keys, [self.ttl_ms, "1-0", last])
        nobody, missed = parse_since(reply, 2)[2]
        assert (nobody.reason, nobody.entries) == (LOST, ()), nobody
        return missed.reason, tuple(f for _, f in missed.entries), missed.oldest


def real_sleep(seconds: float) -> None:
    """Lets C{seconds} pass for a real C{redis-server}."""
    time.sleep(seconds)
