"""Tests for L{notificator.events}: SSE framing and event ids."""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from notificator.events import (
    KEEPALIVE_FRAME,
    EventIds,
    encode_frame,
    event_id,
    event_key,
    retry_frame,
)
from tests.support import parse_frames


class EncodeFrameTests(SynchronousTestCase):
    def test_fields_in_order(self) -> None:
        """A frame is id, event, data, then a blank line."""
        self.assertEqual(
            encode_frame("notify", '{"a":1}', "1-0"),
            b'id: 1-0\nevent: notify\ndata: {"a":1}\n\n',
        )

    def test_without_id_or_event(self) -> None:
        """The id and event fields are optional."""
        self.assertEqual(encode_frame(None, "x"), b"data: x\n\n")

    def test_line_breaks_become_data_lines(self) -> None:
        """CRLF, lone CR and LF each start a new data: line (WHATWG)."""
        frame = encode_frame("e", "a\r\nb\rc\nd")
        self.assertEqual(frame, b"event: e\ndata: a\ndata: b\ndata: c\ndata: d\n\n")
        self.assertEqual(parse_frames(frame)[0]["data"], "a\nb\nc\nd")

    def test_empty_data(self) -> None:
        """Empty data is one empty data: line, which browsers deliver as ''."""
        self.assertEqual(encode_frame("e", ""), b"event: e\ndata: \n\n")

    def test_unicode_is_utf8(self) -> None:
        """Korean text is encoded as UTF-8 bytes."""
        frame = encode_frame("notify", '"안녕"')
        self.assertIn('"안녕"'.encode(), frame)

    def test_event_with_line_break_refused(self) -> None:
        """An event name with CR, LF or NUL cannot forge a frame."""
        for bad in ("a\nb", "a\rb", "a\0b"):
            self.assertRaises(ValueError, encode_frame, bad, "x")

    def test_id_with_line_break_refused(self) -> None:
        """An event id with CR, LF or NUL cannot forge a frame."""
        for bad in ("1\n2", "1\r2", "1\x002"):
            self.assertRaises(ValueError, encode_frame, "e", "x", bad)

    def test_retry_and_keepalive(self) -> None:
        """The retry field and the comment keepalive are fixed small frames."""
        self.assertEqual(retry_frame(3000), b"retry: 3000\n\n")
        self.assertEqual(parse_frames(KEEPALIVE_FRAME), [{"comment": ""}])


class EventIdsTests(SynchronousTestCase):
    def test_increasing_within_a_millisecond(self) -> None:
        """Ids made in the same millisecond get increasing sequence numbers."""
        clock = Clock()
        clock.advance(1000.0004)
        ids = EventIds(clock)
        self.assertEqual(
            [ids.next(), ids.next(), ids.next()], ["1000000-0", "1000000-1", "1000000-2"]
        )

    def test_new_millisecond_resets_sequence(self) -> None:
        """A later millisecond starts again at sequence 0."""
        clock = Clock()
        ids = EventIds(clock)
        ids.next()
        clock.advance(0.002)
        self.assertEqual(ids.next(), "2-0")

    def test_clock_going_back_stays_monotonic(self) -> None:
        """If the clock steps back, ids keep increasing."""
        clock = Clock()
        clock.advance(10)
        ids = EventIds(clock)
        first = ids.next()
        clock.rightNow = 5.0
        second = ids.next()
        self.assertGreater(event_key(second), event_key(first))

    def test_restart_never_goes_backwards(self) -> None:
        """A new generator (a restarted server) starts after the old one's ids."""
        clock = Clock()
        clock.advance(100)
        old = EventIds(clock)
        last = [old.next() for _ in range(50)][-1]
        clock.advance(0.001)
        self.assertGreater(event_key(EventIds(clock).next()), event_key(last))

    def test_only_digits_and_dash(self) -> None:
        """Ids use only digits and '-', so Last-Event-ID needs no CORS preflight."""
        clock = Clock()
        clock.advance(1795476813.293)
        self.assertRegex(EventIds(clock).next(), r"^\d+-\d+$")

    def test_event_key(self) -> None:
        """Our ids (and Redis stream ids) parse to sortable keys and back; anything else to None."""
        self.assertEqual(event_id(event_key("12-3")), "12-3")
        self.assertLess(event_key("12-9"), event_key("12-10"))
        self.assertLess(event_key("12-999999999"), event_key("13-0"))
        self.assertEqual(event_key(" 1796056716559-0\n"), event_key("1796056716559-0"))
        for bad in ("", "abc", "1-", "-1", "1-2-3", "1.5-2", "١٢-٣", "1-2\x00", "9" * 16 + "-1"):
            self.assertIsNone(event_key(bad), bad)

    def test_after(self) -> None:
        """Ids continue after a given key, even when the clock is behind it."""
        clock = Clock()
        clock.advance(1000)
        ids = EventIds(clock, after=event_key("2000000-5"))
        self.assertEqual(ids.next(), "2000000-6")
        self.assertEqual(ids.last, event_key("2000000-6"))
