"""
Tests for L{notificator.history.memory}: what is kept for reconnecting
clients, and the replay rules (complete, or everything kept and why not).
"""

from __future__ import annotations

import gc
import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from notificator.events import SEQ_SPAN, encode_frame, event_id
from notificator.history import (
    ENTRY_OVERHEAD,
    EXPIRED,
    LOST,
    MAX_MS,
    UNKNOWN,
    USER_OVERHEAD,
    History,
    encode_entry,
    user_cost,
)
from tests.replay_cases import HISTORY, HistoryImplementation, replay_cases
from tests.test_history_journal import MEMORY, T0, frame, key


class HistoryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.history = History(self.clock, size=3, ttl=60, max_bytes=MEMORY, known_since=key(1000))

    def add(self, user: str, *ns: int) -> None:
        for n in ns:
            self.history.append(user, key(1000 + n), frame(n))

    def test_complete_replay_after_an_id(self) -> None:
        """A client that saw n gets n+1.. in order, the very bytes appended."""
        self.add("u", 1, 2, 3)
        self.add("v", 4)
        replay = self.history.since("u", key(1001))
        self.assertTrue(replay.complete)
        self.assertEqual(replay.frames, (frame(2), frame(3)))
        self.assertEqual(replay.outcome, "complete")
        self.assertEqual(self.history.since("u", key(1003)).frames, ())
        self.assertTrue(self.history.since("u", key(1003)).complete)

    def test_an_id_of_another_user_between_counts(self) -> None:
        """Ids are global: a client's last id may fall between its user's frames."""
        self.add("u", 1)
        self.add("v", 2)
        self.add("u", 3)
        replay = self.history.since("u", key(1002))
        self.assertEqual((replay.complete, replay.frames), (True, (frame(3),)))

    def test_trimmed_by_size_is_a_gap(self) -> None:
        """More than size after the id: what is kept, and the reason."""
        self.add("u", 1, 2, 3, 4, 5)
        replay = self.history.since("u", key(1001))
        self.assertFalse(replay.complete)
        self.assertEqual(replay.reason, EXPIRED)
        self.assertEqual(replay.frames, (frame(3), frame(4), frame(5)))
        self.assertEqual(replay.oldest, event_id(key(1003)))
        self.assertEqual(replay.outcome, "truncated")
        # From the newest dropped on, nothing is missing.
        self.assertTrue(self.history.since("u", key(1002)).complete)

    def test_expired_by_ttl(self) -> None:
        """Frames older than the ttl are gone, and a client from before them gets the reset."""
        self.add("u", 1)
        self.clock.advance(30)
        self.add("u", 2)
        self.clock.advance(31)
        replay = self.history.since("u", key(1000))
        self.assertEqual((replay.complete, replay.reason), (False, EXPIRED))
        self.assertEqual(replay.frames, (frame(2),))
        self.clock.advance(60)
        replay = self.history.since("u", key(1001))
        self.assertEqual((replay.complete, replay.frames), (False, ()))
        self.assertEqual(self.history.user_count, 0)
        # Someone who saw the last one missed nothing.
        self.assertTrue(self.history.since("u", key(1002)).complete)

    def test_user_gone_uses_the_global_floor(self) -> None:
        """A user whose frames all expired: ids before the newest expired one get the reset."""
        self.add("u", 5)
        self.clock.advance(61)
        self.add("v", 9)
        self.assertFalse(self.history.since("w", key(1004)).complete)
        self.assertTrue(self.history.since("w", key(1005)).complete)
        self.assertTrue(self.history.since("w", key(1006)).complete)

    def test_memory_bound_drops_oldest_first(self) -> None:
        """Over max_bytes the oldest frames (of any user) go first."""
        each = len(frame(1)) + ENTRY_OVERHEAD
        bound = 3 * each + 3 * user_cost("a")
        history = History(self.clock, size=100, ttl=60, max_bytes=bound, known_since=0)
        for n, user in enumerate(["a", "b", "a", "c", "b"], 1):
            history.append(user, key(1000 + n), frame(n))
        self.assertEqual(history.bytes, bound)
        self.assertEqual(len(history), 3)
        self.assertEqual(history.since("a", key(1000)).frames, (frame(3),))
        self.assertFalse(history.since("a", key(1000)).complete)
        self.assertEqual(history.since("b", key(1002)).frames, (frame(5),))
        self.assertTrue(history.since("b", key(1002)).complete)

    def test_frames_trimmed_by_size_are_released(self) -> None:
        """
        A busy user's trimmed frames do not pile up until the ttl: each is
        let go when trimmed, and what is left of it (its slot in the queue
        and its time) in batches.
        """
        history = History(self.clock, size=3, ttl=3600, max_bytes=MEMORY)
        history.append("busy", key(1999), b"x" * 1000)
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for n in range(50_000):
                history.append("busy", key(2000 + n), b"%05d" % n + b"x" * 995)
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        self.assertEqual(len(history), 3)
        self.assertEqual(history.bytes, 3 * (1000 + ENTRY_OVERHEAD) + user_cost("busy"))
        # 50 MB appended; the 32 bytes left of each trimmed one are let go
        # once they are a quarter of the history's bytes plus 64 KiB.
        self.assertLess(grown, 256 * 1024)
        self.assertEqual(
            [f[:5] for f in history.since("busy", key(2000 + 49_996)).frames],
            [b"49997", b"49998", b"49999"],
        )

    def test_releases_keep_every_users_frames_and_times(self) -> None:
        """
        While a busy user's trimmed slots are released (many times), a
        quiet user's frames stay, and each frame leaves at its ttl: what is
        kept is, at every moment, each user's last 3 frames younger than
        the ttl, and a replay is complete from the newest one lost on.
        """
        history = History(self.clock, size=3, ttl=50, max_bytes=MEMORY)
        releases: list[None] = []
        release = history._release
        history._release = lambda: (releases.append(None), release())[1]  # type: ignore[method-assign]
        published: dict[str, list[tuple[int, bytes, float]]] = {"busy": [], "quiet": []}
        for n in range(15_000):
            user = "quiet" if n % 1000 == 0 else "busy"
            self.clock.advance(0.01)
            k, f = key(2000 + n), frame(n) + b"x" * 100
            history.append(user, k, f)
            published[user].append((k, f, self.clock.seconds()))
            if n % 997 == 0 or n == 14_999:
                deadline = self.clock.seconds() - 50
                for name, sent in published.items():
                    young = [(k, f) for k, f, t in sent if t > deadline][-3:]
                    lost = [k for k, _, _ in sent[: len(sent) - len(young)]]
                    replay = history.since(name, key(1000))
                    self.assertEqual(list(replay.frames), [f for _, f in young], (name, n))
                    if lost:
                        self.assertTrue(history.since(name, lost[-1]).complete, (name, n))
                        self.assertFalse(history.since(name, lost[-1] - 1).complete, (name, n))
        self.assertGreater(len(releases), 3)

    def test_a_held_notification_costs_at_most_twice_its_journal_record(self) -> None:
        """
        What the history holds in memory (tracemalloc) for 500 users with 24
        notifications each, as the benchmark publishes them, is at most
        twice what their records take in the journal.
        """
        users, each = 500, 24
        gc.collect()
        tracemalloc.start()
        try:
            history = History(self.clock, size=100, ttl=3600, max_bytes=MEMORY)
            journal = 0
            for n in range(users * each):
                user, ms = f"u{n % users}", 1_800_000_000_000 + n
                data = '{"s":%d,"t":%d.123,"pad":"benchmark notification"}' % (n, ms)
                f = encode_frame("notify", data, f"{ms}-0")
                when = T0 + n / 1000  # each its own time, as published
                history.append(user, key(ms), f, when)
                journal += len(encode_entry(user, key(ms), f, when))
            gc.collect()
            used = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        self.assertEqual(len(history), users * each)
        self.assertLessEqual(used, 2 * journal)
        # And what the bound counts is what it costs.
        self.assertLessEqual(used, history.bytes)
        self.assertGreater(used, 0.8 * history.bytes)

    def test_held_notifications_are_not_walked_by_the_gc(self) -> None:
        """
        The history holds a few objects per user that the cyclic garbage
        collector tracks, none per notification, so the full collections
        of a server holding 500,000 notifications do not walk 500,000
        objects.
        """
        gc.collect()
        before = len(gc.get_objects())
        history = History(self.clock, size=100, ttl=3600, max_bytes=MEMORY)
        for n in range(20_000):
            history.append(f"u{n % 200}", key(2000 + n), frame(n))
        gc.collect()
        self.assertEqual(len(history), 20_000)
        self.assertLessEqual(len(gc.get_objects()) - before, 3 * 200 + 10)

    def test_keys_a_float_cannot_hold_are_refused(self) -> None:
        """An id whose milliseconds are 2 ** 53 or more is refused, and nothing changes."""
        self.add("u", 1)
        self.assertRaises(ValueError, self.history.append, "v", MAX_MS * SEQ_SPAN, frame(2))
        self.assertEqual((len(self.history), self.history.user_count), (1, 1))
        self.history.append("v", (MAX_MS - 1) * SEQ_SPAN + SEQ_SPAN - 1, frame(3))
        self.assertEqual(self.history.since("v", key(1001)).frames, (frame(3),))

    def test_user_ids_are_counted(self) -> None:
        """
        Each user with kept frames counts its record and its id: a user id
        of 256 four-byte characters is more than its one small frame, and
        the count goes back to nothing when the frames do.
        """
        long_id = "\U0001f514" * 256
        self.history.append(long_id, key(1001), frame(1))
        self.assertEqual(self.history.bytes, len(frame(1)) + ENTRY_OVERHEAD + user_cost(long_id))
        self.assertGreater(user_cost(long_id), 1024 + USER_OVERHEAD)
        self.clock.advance(61)
        self.history.expire()
        self.assertEqual((self.history.bytes, self.history.user_count), (0, 0))

    def test_max_bytes_bounds_the_real_memory(self) -> None:
        """
        What the history holds, as allocated (tracemalloc), stays within
        1.25 times max_bytes, with one small frame per user and ids short,
        256 Korean or 256 four-byte characters long, or many frames per user.
        """
        bound = 1 << 20
        for name, user, per_user in [
            ("short", "u{}", 1),
            ("korean", "홍" * 250 + "{:06}", 1),
            ("wide", "\U0001f514" * 250 + "{:06}", 1),
            ("many per user", "\U0001f514" * 250 + "{:06}", 50),
        ]:
            gc.collect()
            tracemalloc.start()
            try:
                history = History(self.clock, size=100, ttl=3600, max_bytes=bound)
                for n in range(20_000):
                    history.append(user.format(n // per_user), key(2000 + n), frame(n))
                gc.collect()
                used = tracemalloc.get_traced_memory()[0]
            finally:
                tracemalloc.stop()
            self.assertLessEqual(history.bytes, bound, name)
            self.assertLessEqual(used, 1.25 * bound, name)
            del history

    def test_unknown_and_lost_ids(self) -> None:
        """An id that is not ours, or later than any given, is unknown; one from before the start, lost."""
        self.add("u", 1, 2)
        for last, reason in [(None, UNKNOWN), (key(1003), UNKNOWN), (key(999), LOST)]:
            replay = self.history.since("u", last)
            self.assertEqual((replay.complete, replay.reason), (False, reason))
            self.assertEqual(replay.frames, (frame(1), frame(2)))

    def test_frames_are_kept_as_given(self) -> None:
        """The replayed bytes are the very objects that went live."""
        f = frame(7)
        self.history.append("u", key(1007), f)
        self.assertIs(self.history.since("u", key(1001)).frames[0], f)

    def test_a_user_back_after_all_expired(self) -> None:
        """A user whose frames all expired and who gets new ones: the old loss still counts."""
        self.add("u", 1)
        self.clock.advance(61)
        self.add("u", 2)
        replay = self.history.since("u", key(1000))
        self.assertEqual((replay.complete, replay.frames), (False, (frame(2),)))
        self.assertTrue(self.history.since("u", key(1001)).complete)

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 40)), max_size=60),
        st.integers(1, 5),
        st.integers(0, 70),
    )
    def test_replay_never_lies(self, events: list[tuple[str, int]], size: int, last: int) -> None:
        """
        Whatever was published and whatever was dropped: a complete replay
        is exactly the user's frames after the id; a truncated one is what
        is kept, and something after the id really is missing.
        """
        clock = Clock()
        clock.advance(T0)
        history = History(clock, size=size, ttl=30, max_bytes=MEMORY, known_since=0)
        published: dict[str, list[tuple[int, bytes]]] = {}
        for n, (user, gap) in enumerate(events, 1):
            clock.advance(gap)
            k = key(1000 + n)
            history.append(user, k, frame(n))
            published.setdefault(user, []).append((k, frame(n)))
        for user in "abc":
            expected = [f for k, f in published.get(user, []) if k > key(1000 + last)]
            replay = history.since(user, key(1000 + last))
            if replay.reason == UNKNOWN:
                self.assertGreater(key(1000 + last), history.last)
                continue
            if replay.complete:
                self.assertEqual(list(replay.frames), expected)
            else:
                self.assertTrue(set(replay.frames) <= set(expected))
                # Something after the id is missing, or (erring on the safe
                # side) the id is older than the newest frame lost by any
                # user whose record is gone.
                self.assertTrue(list(replay.frames) != expected or key(1000 + last) < history.floor)


@replay_cases(HISTORY, lambda testcase, case: HistoryImplementation(case))
class ReplayCaseTests(SynchronousTestCase):
    """
    The table of replay and gap cases (tests/replay_cases.py), which the
    Redis scripts are tested with too, on the history.
    """
