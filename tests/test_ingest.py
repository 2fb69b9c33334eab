"""Tests for L{notificator.ingest}: the three publish body forms."""

import json
from urllib.parse import quote, urlencode

from twisted.trial.unittest import SynchronousTestCase

from notificator.events import Message
from notificator.ingest import (
    BadNotification,
    UnsupportedMediaType,
    data_text,
    parse_content_type,
    parse_publish,
    split_id,
)

FORM_UTF8 = b"application/x-www-form-urlencoded; charset=UTF-8"
FORM = b"application/x-www-form-urlencoded"
JSON = b"application/json"
KOREAN = {"title": "결재 요청", "body": "안녕하세요; a&b=c"}
KOREAN_TEXT = json.dumps(KOREAN, ensure_ascii=False)


class FormOneTests(SynchronousTestCase):
    """Form 1: id=<event>_<user>&data=<json>."""

    def test_id_and_data(self) -> None:
        """The id splits into event and user; JSON data is kept as sent."""
        body = urlencode({"id": "appr_001003200", "data": '{"command":"refresh"}'}).encode()
        self.assertEqual(
            parse_publish(FORM_UTF8, body),
            Message(event="appr", user_id="001003200", data='{"command":"refresh"}'),
        )

    def test_korean_with_separators(self) -> None:
        """Korean text and &, =, ; inside the data come out byte-exact."""
        body = urlencode({"id": "notify_001000210", "data": KOREAN_TEXT}).encode()
        message = parse_publish(FORM_UTF8, body)
        self.assertEqual(message.data, KOREAN_TEXT)
        self.assertEqual(json.loads(message.data), KOREAN)

    def test_plus_is_space(self) -> None:
        """A '+' in a form value is a space; %2B is a plus."""
        message = parse_publish(FORM, b"id=notify_u1&data=%7B%22a%22%3A%22x+y%2Bz%22%7D")
        self.assertEqual(json.loads(message.data), {"a": "x y+z"})

    def test_encoded_field_names(self) -> None:
        """Field names may be percent-encoded or hold '+' (a space, stripped)."""
        message = parse_publish(FORM, b"%69d=notify_u1&+data+=%7B%7D")
        self.assertEqual(message, Message(event="notify", user_id="u1", data="{}"))

    def test_same_header_again(self) -> None:
        """A Content-Type seen before gives the same answer, including a refusal."""
        for _ in range(2):
            self.assertEqual(parse_publish(FORM_UTF8, b"id=notify_u1&data=1").data, "1")
            e = self.assertRaises(
                UnsupportedMediaType, parse_publish, FORM + b"; charset=klingon", b"id=a_b"
            )
            self.assertIn("klingon", e.reason)

    def test_codecs_that_are_not_text_encodings(self) -> None:
        """Python codecs that do not turn bytes into text (base64, rot13, zlib) are 415, not a crash."""
        for charset in (b"base64", b"rot13", b"zlib", b"hex", b"uu", b"quopri", b"bz2"):
            for content_type in (FORM, JSON):
                with self.subTest(charset=charset, content_type=content_type):
                    e = self.assertRaises(
                        UnsupportedMediaType,
                        parse_publish,
                        content_type + b"; charset=" + charset,
                        b'{"id":"a_b"}',
                    )
                    self.assertIn(charset.decode(), e.reason)

    def test_codecs_with_their_own_errors(self) -> None:
        """A codec that fails with a plain UnicodeError (punycode, undefined) is 400."""
        for charset in (b"punycode", b"undefined", b"idna"):
            with self.subTest(charset=charset):
                e = self.assertRaises(
                    BadNotification,
                    parse_publish,
                    FORM + b"; charset=" + charset,
                    b"id=notify_u1&data=" + b"x" * 70 + b".%FF{",
                )
                self.assertEqual(e.code, 400)
                self.assertEqual(e.reason, "body is not valid " + charset.decode())

    def test_long_charset_and_content_type_are_cut_in_the_reason(self) -> None:
        """The reason quotes at most 40 characters of a charset, 60 of a media type."""
        e = self.assertRaises(
            UnsupportedMediaType, parse_publish, FORM + b"; charset=" + b"k" * 5000, b"id=a_b"
        )
        self.assertLess(len(e.reason), 80)
        e = self.assertRaises(UnsupportedMediaType, parse_publish, b"t/" + b"x" * 5000, b"id=a_b")
        self.assertLess(len(e.reason), 150)

    def test_deep_json_is_400(self) -> None:
        """JSON nested deeper than Python can read or write is a 400, in every form."""
        deep = b"[" * 100_000
        cases = [
            (JSON, deep),
            (JSON, b'{"id":"a_b","data":' + deep + b"}"),
            (JSON, b"[" * 995 + b'{"id":"a_b"}' + b"]" * 995),
            (FORM, b"id=a_b&data=" + deep),
            (FORM, b"{" + b'"id":"a_b","data":' + deep + b"}="),
            (JSON, b'{"id":"a_b","data":"' + deep + b'"}'),
        ]
        cases += [
            (JSON, b'{"id":"a_b","data":' + b"[" * n + b"]" * n + b"}") for n in range(900, 1000, 7)
        ]
        for content_type, body in cases:
            with self.subTest(body=body[:40], size=len(body)):
                try:
                    message = parse_publish(content_type, body)
                except BadNotification as e:
                    self.assertEqual(e.code, 400)
                    self.assertIn("nested too deeply", e.reason)
                else:
                    self.assertEqual(message.user_id, "b")  # read and written back: fine

    def test_unencoded_json_with_ampersand(self) -> None:
        """A sender that does not encode its JSON still gets it through whole."""
        body = b'id=notify_u1&data={"url":"/a?b=1&c=2","t":"x;y"}'
        message = parse_publish(FORM, body)
        self.assertEqual(json.loads(message.data), {"url": "/a?b=1&c=2", "t": "x;y"})

    def test_euc_kr(self) -> None:
        """A legacy EUC-KR sender's Korean text is decoded by its charset."""
        body = b"id=notify_u1&data=" + quote(KOREAN_TEXT, encoding="euc-kr").encode()
        message = parse_publish(b"application/x-www-form-urlencoded; charset=EUC-KR", body)
        self.assertEqual(json.loads(message.data), KOREAN)

    def test_non_json_data_is_encoded_as_string(self) -> None:
        """Data that is not JSON is sent as a JSON string."""
        message = parse_publish(FORM, b"id=notify_u1&data=hello+world")
        self.assertEqual(message.data, '"hello world"')

    def test_missing_data_is_null(self) -> None:
        """An id without data sends JSON null."""
        self.assertEqual(parse_publish(FORM, b"id=refresh_u1").data, "null")

    def test_first_underscore(self) -> None:
        """The id splits at the first underscore: user ids may hold '_'."""
        message = parse_publish(FORM, b"id=notify_dept_001_a&data=1")
        self.assertEqual((message.event, message.user_id), ("notify", "dept_001_a"))


class FormFieldLimitTests(SynchronousTestCase):
    """max_fields (limits.formFields) bounds the fields of form 1 only."""

    def test_at_the_limit(self) -> None:
        """Exactly max_fields fields parse."""
        body = b"id=notify_u1&data=1" + b"".join(b"&f%d=x" % i for i in range(998))
        self.assertEqual(parse_publish(FORM, body, max_fields=1000).user_id, "u1")

    def test_over_the_limit(self) -> None:
        """One more is a 400 naming the limit."""
        body = b"id=notify_u1&data=1" + b"".join(b"&f%d=x" % i for i in range(999))
        with self.assertRaises(BadNotification) as caught:
            parse_publish(FORM, body, max_fields=1000)
        self.assertEqual(
            (caught.exception.code, caught.exception.reason), (400, "more than 1000 form fields")
        )

    def test_empty_fields_count(self) -> None:
        """Empty items between '&'s are fields too (they cost the split)."""
        with self.assertRaises(BadNotification):
            parse_publish(FORM, b"id=notify_u1&data=1" + b"&" * 5, max_fields=5)

    def test_json_is_not_counted(self) -> None:
        """Form 2 and JSON bodies hold one JSON value, whatever '&' it has inside."""
        data = {"id": "notify_u1", "data": "a&" * 50}
        raw = json.dumps(data).encode()
        self.assertEqual(parse_publish(FORM, raw + b"=", max_fields=2).user_id, "u1")
        self.assertEqual(parse_publish(JSON, raw, max_fields=2).user_id, "u1")

    def test_no_limit_by_default(self) -> None:
        """Without max_fields any number of fields parses."""
        body = b"id=notify_u1&data=1" + b"&x" * 20_000
        self.assertEqual(parse_publish(FORM, body).user_id, "u1")


class FormTwoTests(SynchronousTestCase):
    """Form 2: the whole JSON is the single form key with an empty value."""

    def test_encoded_json_key(self) -> None:
        """The key is percent-decoded and parsed as the notification."""
        doc = {"id": "notify_001000210", "data": KOREAN}
        body = quote(json.dumps(doc, ensure_ascii=False)).encode() + b"="
        message = parse_publish(FORM, body)
        self.assertEqual((message.event, message.user_id), ("notify", "001000210"))
        self.assertEqual(json.loads(message.data), KOREAN)

    def test_raw_json_key_with_separators(self) -> None:
        """A raw JSON key holding &, = and ; is not cut apart."""
        body = b'{"id":"notify_u1","data":{"q":"a=1&b=2;c"}}='
        self.assertEqual(json.loads(parse_publish(FORM, body).data), {"q": "a=1&b=2;c"})

    def test_raw_json_key_holding_an_id_field(self) -> None:
        """A raw JSON key whose data holds '&id=' is still read as one JSON."""
        body = b'{"id":"notify_u1","data":{"q":"x&id=5"}}='
        message = parse_publish(FORM, body)
        self.assertEqual((message.user_id, json.loads(message.data)), ("u1", {"q": "x&id=5"}))

    def test_plus_in_key(self) -> None:
        """Form encoding applies to the key too: '+' is a space."""
        body = quote('{"id":"notify_u1","data":{"t":"a b"}}').replace("%20", "+").encode() + b"="
        self.assertEqual(json.loads(parse_publish(FORM, body).data), {"t": "a b"})

    def test_without_trailing_equals(self) -> None:
        """The key alone (no '=') is read the same way."""
        self.assertEqual(parse_publish(FORM, b'{"id":"a_b","data":1}').data, "1")

    def test_string_data(self) -> None:
        """String data that holds JSON is kept as sent."""
        body = b'{"id":"notify_u1","data":"{\\"a\\":1}"}='
        self.assertEqual(parse_publish(FORM, body).data, '{"a":1}')


class JSONBodyTests(SynchronousTestCase):
    """Form 3: application/json."""

    def test_json_body(self) -> None:
        """A JSON object body with id and object data."""
        body = json.dumps({"id": "notify_u1", "data": KOREAN}, ensure_ascii=False).encode()
        message = parse_publish(b"application/json; charset=utf-8", body)
        self.assertEqual(json.loads(message.data), KOREAN)
        self.assertIn("결재", message.data)

    def test_bom(self) -> None:
        """A UTF-8 byte order mark is ignored."""
        body = "\ufeff" + '{"id":"n_u","data":1}'
        self.assertEqual(parse_publish(JSON, body.encode("utf-8")).user_id, "u")


class BadBodyTests(SynchronousTestCase):
    """Everything malformed is a BadNotification with a reason (400)."""

    cases = [
        (FORM, b"", "empty body"),
        (FORM, b"   ", "empty body"),
        (FORM, b"data=1", "missing id"),
        (FORM, b"id=&data=1", "missing id"),
        (FORM, b"id=nounderscore&data=1", "<event>_<userId>"),
        (FORM, b"id=_u1&data=1", "<event>_<userId>"),
        (FORM, b"id=notify_&data=1", "<event>_<userId>"),
        (FORM, b"id=no%0Atify_u1&data=1", "event name"),
        (FORM, b"id=no%0Dtify_u1&data=1", "event name"),
        (FORM, b"id=no%00tify_u1&data=1", "event name"),
        (FORM, b"id=%EC%95%88_u1&data=1", "event name"),
        (FORM, b"id=" + b"e" * 65 + b"_u1", "event name"),
        (FORM, b"id=notify_u%0A1", "control characters"),
        (FORM, b"id=notify_" + b"u" * 257, "longer than"),
        (FORM, b"id=notify_u1&data=%FF%FE", "not valid utf-8"),
        (FORM, b'{"id":"notify_u1","data":}=', "not valid JSON"),
        (FORM, b'{"data":1}=', "missing id"),
        (JSON, b"{not json", "not valid JSON"),
        (JSON, b"[1,2]", "JSON object"),
        (JSON, b'{"id":5}', "missing id"),
        (JSON, b'{"id":"notify_u1","data":NaN}', "not valid JSON"),
        (JSON, b"\xff\xfe", "not valid utf-8"),
    ]

    def test_bad_bodies(self) -> None:
        """Each malformed body raises with a reason naming the problem."""
        for content_type, body, reason in self.cases:
            with self.subTest(body=body):
                e = self.assertRaises(BadNotification, parse_publish, content_type, body)
                self.assertEqual(e.code, 400)
                self.assertIn(reason, e.reason)

    def test_bad_bodies_keep_the_id_they_named(self) -> None:
        """A rejection carries the id as far as it was read, for the log line."""
        cases = [
            (FORM, b"id=bad%0Aevent_u1&data=1", "bad\nevent_u1"),
            (FORM + b"; charset=EUC-KR", b"id=a_%FF%FF&data=1", "a_\ufffd\ufffd"),
            (FORM, b"id=notify_u1&data=%FF", "notify_u1"),
            (FORM + b"; charset=undefined", b"id=a_b", "a_b"),
            (FORM, b'{"id":"nounderscore"}=', "nounderscore"),
            (JSON, b'{"id": 5}', "5"),
            (JSON, b'{"id": "x"}', "x"),
            (JSON, b'{"data": 1}', None),
            (JSON, b"{", None),
            (FORM, b"data=1", None),
        ]
        for content_type, body, ident in cases:
            with self.subTest(body=body):
                e = self.assertRaises(BadNotification, parse_publish, content_type, body)
                self.assertEqual(e.ident, ident)

    def test_unsupported_content_type(self) -> None:
        """Other content types (or none) are 415."""
        for content_type in (b"text/plain", b"multipart/form-data; boundary=x", None):
            e = self.assertRaises(UnsupportedMediaType, parse_publish, content_type, b"id=a_b")
            self.assertEqual(e.code, 415)

    def test_bad_bytes_name_the_charset_as_sent(self) -> None:
        """Bytes not in the charset: the reason quotes the sender's charset, not the codec's name."""
        for written in ("EUC_KR", "ks_c_5601-1987", "UTF-8"):
            e = self.assertRaises(
                BadNotification,
                parse_publish,
                FORM + b"; charset=" + written.encode(),
                b"id=notify_u1&data=%FF%FF%FF",
            )
            self.assertEqual(e.reason, f"body is not valid {written}")

    def test_unknown_charset(self) -> None:
        """An unknown charset is 415."""
        e = self.assertRaises(
            UnsupportedMediaType, parse_publish, FORM + b"; charset=klingon", b"id=a_b"
        )
        self.assertIn("klingon", e.reason)


class HelperTests(SynchronousTestCase):
    def test_parse_content_type(self) -> None:
        """Media type lower-cased, parameters parsed, quotes removed."""
        self.assertEqual(
            parse_content_type(b'Application/X-WWW-Form-URLEncoded; Charset="EUC-KR"'),
            ("application/x-www-form-urlencoded", {"charset": "EUC-KR"}),
        )
        self.assertEqual(parse_content_type(None), ("", {}))

    def test_data_text(self) -> None:
        """Valid JSON strings are kept, other strings encoded, values serialised."""
        self.assertEqual(data_text('{"a": 1}'), '{"a": 1}')
        self.assertEqual(data_text("true"), "true")
        self.assertEqual(data_text("안녕"), '"안녕"')
        self.assertEqual(data_text(""), '""')
        self.assertEqual(data_text({"k": "값"}), '{"k":"값"}')
        self.assertEqual(data_text(None), "null")

    def test_split_id(self) -> None:
        """Event names may use letters, digits, '-' and '.'."""
        self.assertEqual(split_id("mail.new-2_u"), ("mail.new-2", "u"))
