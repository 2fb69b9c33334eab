"""Tests for L{notificator.ingest}: the three publish body forms."""

import json
from typing import Any
from urllib.parse import quote, urlencode

from twisted.trial.unittest import SynchronousTestCase

from notificator import ingest
from notificator.events import Message
from notificator.ingest import (
    BadNotification,
    UnsupportedMediaType,
    data_text,
    parse_content_type,
    parse_publish,
    parse_publish_token,
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
        """Codecs that are text encodings but not on the list (punycode, undefined, idna) are 415."""
        for charset in (b"punycode", b"undefined", b"idna"):
            with self.subTest(charset=charset):
                e = self.assertRaises(
                    UnsupportedMediaType,
                    parse_publish,
                    FORM + b"; charset=" + charset,
                    b"id=notify_u1&data=" + b"x" * 70 + b".%FF{",
                )
                self.assertEqual(e.code, 415)
                self.assertIn(repr(charset.decode()), e.reason)

    def test_long_charset_and_content_type_are_cut_in_the_reason(self) -> None:
        """The reason quotes at most 40 characters of a charset, 60 of a media type."""
        e = self.assertRaises(
            UnsupportedMediaType, parse_publish, FORM + b"; charset=" + b"k" * 5000, b"id=a_b"
        )
        self.assertIn("k" * 40, e.reason)
        self.assertNotIn("k" * 41, e.reason)
        self.assertLess(len(e.reason), 150)
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
            (FORM, b"id=a_b&data=1e999", "a_b"),
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


class CharsetListTests(SynchronousTestCase):
    """Only the listed text charsets are read (issue 17, item 4)."""

    def test_listed_charsets_under_their_names(self) -> None:
        """UTF-8, EUC-KR, CP949, ISO-8859-1 and US-ASCII, as senders spell them, are read."""
        cases = [
            ("UTF-8", "utf-8"),
            ("utf8", "utf-8"),
            ('"utf-8"', "utf-8"),
            ("EUC-KR", "euc-kr"),
            ("euc_kr", "euc-kr"),
            ("CP949", "cp949"),
            ("ks_c_5601-1987", "cp949"),
            ("KS_C_5601-1987", "cp949"),
            ("windows-949", "cp949"),
            ("ISO-8859-1", "latin-1"),
            ("latin1", "latin-1"),
            ("US-ASCII", "ascii"),
            ("ascii", "ascii"),
        ]
        for label, codec in cases:
            text = (
                "한" if codec in ("utf-8", "euc-kr", "cp949") else "é" if codec != "ascii" else "a"
            )
            body = b"id=notify_u1&data=" + quote(json.dumps({"t": text}), encoding=codec).encode()
            with self.subTest(label=label):
                message = parse_publish(FORM + b"; charset=" + label.encode(), body)
                self.assertEqual(json.loads(message.data), {"t": text})

    def test_windows_korean_name_is_cp949(self) -> None:
        """
        ks_c_5601-1987 (what Windows senders write) is read as CP949, so the
        syllables EUC-KR lacks (똠, 펲) arrive; they were refused as EUC-KR.
        """
        text = json.dumps({"title": "똠방각하 펲 결재"}, ensure_ascii=False)
        body = b"id=notify_u1&data=" + quote(text, encoding="cp949").encode()
        for label in (b"ks_c_5601-1987", b"CP949", b"windows-949"):
            with self.subTest(label=label):
                message = parse_publish(FORM + b"; charset=" + label, body)
                self.assertEqual(message.data, text)
        # EUC-KR itself stays EUC-KR: those bytes are not in it.
        e = self.assertRaises(BadNotification, parse_publish, FORM + b"; charset=EUC-KR", body)
        self.assertEqual((e.code, e.reason), (400, "body is not valid EUC-KR"))

    def test_other_charsets_are_415(self) -> None:
        """Every other charset, text encoding or not, is 415 naming it, in both media types."""
        for charset in (
            "punycode",
            "idna",
            "undefined",
            "utf-16",
            "UTF-7",
            "utf-8-sig",
            "windows-1252",
            "shift_jis",
            "x-mac-korean-typo",
            "base64",
            "rot13",
            "mbcs",
        ):
            for content_type in (FORM, JSON):
                with self.subTest(charset=charset, content_type=content_type):
                    e = self.assertRaises(
                        UnsupportedMediaType,
                        parse_publish,
                        content_type + b"; charset=" + charset.encode(),
                        b'{"id":"a_b"}',
                    )
                    self.assertEqual(e.code, 415)
                    self.assertIn(repr(charset), e.reason)

    def test_a_refused_charset_is_not_decoded(self) -> None:
        """A megabyte in punycode (whose decoder is quadratic) is 415 before any of it is read."""
        body = b"id=notify_u1&data=" + b"a" * (1 << 20) + b"-" + b"9" * 1000
        e = self.assertRaises(
            UnsupportedMediaType, parse_publish, FORM + b"; charset=punycode", body
        )
        self.assertEqual(e.code, 415)

    def test_no_codec_is_looked_up_by_a_sent_name(self) -> None:
        """The table is made once: a charset a client sends is never handed to codecs.lookup."""
        looked_up: list[str] = []
        original = ingest.codecs.lookup

        def lookup(name: str) -> Any:
            looked_up.append(name)
            return original(name)

        self.patch(ingest.codecs, "lookup", lookup)
        for charset in (b"ks_c_5601-1987", b"punycode", b"klingon-2"):
            try:
                parse_publish(FORM + b"; charset=" + charset + b"; x=1", b"id=notify_u1&data=1")
            except UnsupportedMediaType:
                pass
        self.assertEqual(looked_up, [])


class TokenFirstTests(SynchronousTestCase):
    """The body's token is checked before the id and data are read (issue 17, item 4)."""

    def check(self, calls: list[bytes | None]) -> Any:
        def check_token(token: bytes | None) -> str | None:
            calls.append(token)
            return None if token == b"right" else "wrong publish token"

        return check_token

    def test_form_token_before_decoding(self) -> None:
        """Form 1: a wrong token is refused (403) even when id and data are not in the charset."""
        calls: list[bytes | None] = []
        for body, token in [
            (b"id=notify_%FF%FE&data=%FF&token=nope", b"nope"),
            (b"id=notify_u1&data=1e999", None),
            (b"token=nope&id=no%0Atify_u1", b"nope"),
        ]:
            with self.subTest(body=body):
                e = self.assertRaises(
                    ingest.Forbidden, parse_publish_token, FORM, body, None, self.check(calls)
                )
                self.assertEqual((e.code, e.reason), (403, "wrong publish token"))
                self.assertEqual(calls[-1], token)

    def test_json_token_before_id_and_data(self) -> None:
        """Forms 2 and 3: a wrong token is refused before the id and the data are read."""
        calls: list[bytes | None] = []
        for content_type, body in [
            (JSON, b'{"id": 5, "data": [1e999], "token": "nope"}'),
            (JSON, b'{"id": "no\\ntify_u1", "token": "nope"}'),
            (FORM, b'{"id":"notify_\\ud800","token":"nope"}='),
        ]:
            with self.subTest(body=body):
                e = self.assertRaises(
                    ingest.Forbidden,
                    parse_publish_token,
                    content_type,
                    body,
                    None,
                    self.check(calls),
                )
                self.assertEqual(e.code, 403)
                self.assertEqual(calls[-1], b"nope")

    def test_right_token_goes_on(self) -> None:
        """With the right token the body is read as usual, and the token is not in the message."""
        calls: list[bytes | None] = []
        for content_type, body in [
            (FORM, b"id=notify_u1&token=right&data=%7B%22n%22%3A1%7D"),
            (JSON, b'{"id": "notify_u1", "data": {"n": 1}, "token": "right"}'),
        ]:
            message, token = parse_publish_token(content_type, body, None, self.check(calls))
            self.assertEqual(
                (message.user_id, json.loads(message.data), token), ("u1", {"n": 1}, b"right")
            )

    def test_refused_charset_before_the_token(self) -> None:
        """A charset not on the list is 415 before the token is even looked for."""
        calls: list[bytes | None] = []
        e = self.assertRaises(
            UnsupportedMediaType,
            parse_publish_token,
            FORM + b"; charset=punycode",
            b"id=a_b&token=right",
            None,
            self.check(calls),
        )
        self.assertEqual((e.code, calls), (415, []))


class SlipTests(SynchronousTestCase):
    """What would end in a 500 or broken JSON is a 400 here (issue 17, item 8)."""

    def test_event_name_with_a_trailing_newline(self) -> None:
        """An event name ending in a line break is refused ($ would match before it)."""
        for ident in ("notify\n_u1", "notify\r\n_u1", "a.b-c\n_u1"):
            with self.subTest(ident=ident):
                e = self.assertRaises(BadNotification, split_id, ident)
                self.assertIn("event name", e.reason)
        body = b"id=" + quote("notify\n_u1").encode() + b"&data=1"
        self.assertRaises(BadNotification, parse_publish, FORM, body)
        self.assertRaises(
            BadNotification, parse_publish, JSON, b'{"id": "notify\\n_u1", "data": 1}'
        )

    def test_user_id_with_a_lone_surrogate(self) -> None:
        """A user id holding a lone surrogate (a JSON escape) is 400; a pair is one character."""
        for escaped in ("\\ud800", "a\\udfffb", "\\udc00\\ud800", "x\\ud83d"):
            body = ('{"id": "notify_%s", "data": 1}' % escaped).encode()
            with self.subTest(user=escaped):
                e = self.assertRaises(BadNotification, parse_publish, JSON, body)
                self.assertEqual(e.code, 400)
                self.assertIn("not valid Unicode", e.reason)
            form2 = quote('{"id":"notify_%s"}' % escaped).encode() + b"="
            self.assertRaises(BadNotification, parse_publish, FORM, form2)
        message = parse_publish(JSON, b'{"id": "notify_\\ud83d\\ude00u", "data": 1}')
        self.assertEqual(message.user_id, "\U0001f600u")

    def test_data_with_a_lone_surrogate(self) -> None:
        """Data holding a lone surrogate, as a character or a JSON escape, in any form, is 400."""
        cases = [
            (JSON, b'{"id": "notify_u1", "data": {"a": "\\ud800"}}'),
            (JSON, b'{"id": "notify_u1", "data": "\\udc00"}'),
            (JSON, b'{"id": "notify_u1", "data": ["ok", {"\\ud800": 1}]}'),
            (JSON, b'{"id": "notify_u1", "data": "[\\"\\\\ud800\\"]"}'),
            (FORM, b"id=notify_u1&data=" + quote('"\\ud800"').encode()),
            (FORM, b"id=notify_u1&data=" + quote('{"a":"x\\uDBFF"}').encode()),
            (FORM, quote('{"id":"notify_u1","data":{"a":"\\ud800"}}').encode() + b"="),
        ]
        for content_type, body in cases:
            with self.subTest(body=body):
                e = self.assertRaises(BadNotification, parse_publish, content_type, body)
                self.assertEqual(e.code, 400)
                self.assertIn("not valid Unicode", e.reason)

    def test_data_with_surrogate_pairs_or_escaped_backslashes(self) -> None:
        """A surrogate pair escape, or a backslash before 'ud800', is fine."""
        for data in ('"\\ud83d\\ude00"', '"\\\\ud800"', '{"k": "\\uD83D\\uDE00 \\\\udc00"}'):
            with self.subTest(data=data):
                message = parse_publish(FORM, b"id=notify_u1&data=" + quote(data).encode())
                self.assertEqual(message.data, data)
                message.data.encode("utf-8")

    def test_numbers_out_of_range(self) -> None:
        """A number a double cannot hold (browsers read Infinity) is 400 anywhere in the data."""
        big = "1" + "0" * 400
        cases = [
            (FORM, b"id=notify_u1&data=1e999"),
            (FORM, b"id=notify_u1&data=-1e999"),
            (FORM, b"id=notify_u1&data=" + quote('{"a":[1,2,1E400]}').encode()),
            (FORM, b"id=notify_u1&data=" + big.encode()),
            (FORM, b"id=notify_u1&data=-" + ("9" * 5000).encode()),
            (FORM, b'id=notify_u1&data={"url":"/a?b=1&c=2","n":1e999}'),
            (FORM, b'{"id":"notify_u1","data":{"n":-1e999}}='),
            (JSON, b'{"id": "notify_u1", "data": {"n": 1e999}}'),
            (JSON, b'{"id": "notify_u1", "data": "1e999"}'),
            (JSON, ('{"id": "notify_u1", "data": [%s]}' % big).encode()),
        ]
        for content_type, body in cases:
            with self.subTest(body=body[:60]):
                e = self.assertRaises(BadNotification, parse_publish, content_type, body)
                self.assertEqual(e.code, 400)
                self.assertIn("number out of range", e.reason)

    def test_numbers_in_range_and_text_that_is_not_json(self) -> None:
        """The largest doubles pass as sent; text that merely starts with 1e999 is a string."""
        for data in ("1e308", "-1.7976931348623157e308", "9" * 308, "[0, -0.0, 5e-324]"):
            with self.subTest(data=data):
                self.assertEqual(parse_publish(FORM, b"id=n_u&data=" + data.encode()).data, data)
        self.assertEqual(parse_publish(FORM, b"id=n_u&data=1e999+apples").data, '"1e999 apples"')


def _json_texts() -> Any:
    """JSON texts with what may go wrong in them: lone surrogate escapes, huge numbers."""
    from hypothesis import strategies as st

    numbers = st.one_of(
        st.integers().map(str),
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
        st.sampled_from(["1e999", "-1e999", "1E309", "1e308", "1" + "0" * 400, "-0.0"]),
    )
    any_text = st.text(st.characters(codec=None, categories=None), max_size=6)
    strings = any_text.map(json.dumps)  # ensure_ascii: surrogates become \udXXX escapes
    leaves = st.one_of(numbers, strings, st.sampled_from(["true", "false", "null"]))
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=3).map(lambda xs: "[" + ",".join(xs) + "]"),
            st.dictionaries(any_text, children, max_size=3).map(
                lambda d: "{" + ",".join(json.dumps(k) + ":" + v for k, v in d.items()) + "}"
            ),
        ),
        max_leaves=8,
    )


def _breaks_a_browser(value: Any) -> bool:
    """Whether a parsed JSON value holds a lone surrogate or a number out of a double's range."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, float):
        return value in (float("inf"), float("-inf"))
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) > 1.7976931348623157e308
    if isinstance(value, list):
        return any(_breaks_a_browser(v) for v in value)
    if isinstance(value, dict):
        return any(_breaks_a_browser(k) or _breaks_a_browser(v) for k, v in value.items())
    return False


class SlipFuzzTests(SynchronousTestCase):
    """Random ids and JSON data in every body form: refused exactly when a browser would break."""

    def test_fuzzed_publishes(self) -> None:
        """
        Each body is either a 400 or a message whose frame is strict UTF-8 and
        whose data any browser's JSON.parse reads to finite numbers; the
        refusals are exactly the data with a lone surrogate or an
        out-of-range number, and the user ids that are not Unicode.
        """
        from hypothesis import HealthCheck, given, settings
        from hypothesis import strategies as st

        from notificator.events import encode_frame

        events = st.sampled_from(["notify", "appr", "a.b-c", "notify\n", "no\ntify", "x\r"])
        users = st.text(st.characters(codec=None, categories=None), min_size=1, max_size=8)

        @settings(
            max_examples=400,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(events, users, _json_texts(), st.sampled_from([0, 1, 2, 3]))
        def check(event: str, user: str, data: str, form: int) -> None:
            ident = f"{event}_{user}"
            if form == 0:
                body = b"id=" + quote(ident, errors="surrogatepass").encode() + b"&data="
                body += quote(data).encode()
                content_type = FORM_UTF8
            elif form == 1:
                body = json.dumps({"id": ident, "data": 0})[:-2].encode() + data.encode() + b"}"
                content_type = JSON
            elif form == 2:
                text = json.dumps({"id": ident, "data": 0})[:-2] + data + "}"
                body, content_type = quote(text).encode() + b"=", FORM
            else:
                body = json.dumps({"id": ident, "data": data}).encode()
                content_type = JSON
            parsed = json.loads(data)
            user_ok = _breaks_a_browser(user) is False
            event_ok = event in ("notify", "appr", "a.b-c")
            expected_ok = user_ok and event_ok and not _breaks_a_browser(parsed)
            if not user_ok and form == 0:
                # Percent-encoded surrogates are not UTF-8: refused as such.
                expected_ok = False
            if "_" in user or not user.strip() or any(c < " " or c == "\x7f" for c in user):
                return  # other rules (split, strip, control characters): tested elsewhere
            try:
                message = parse_publish(content_type, body)
            except BadNotification as e:
                self.assertEqual(e.code, 400)
                self.assertFalse(expected_ok, (body[:200], e.reason))
                return
            self.assertTrue(expected_ok, body[:200])
            frame = encode_frame(message.event, message.data, "1-0")
            frame.decode("utf-8")  # strict: no surrogate bytes on the wire
            message.user_id.encode("utf-8")
            reread = json.loads(message.data, parse_constant=lambda c: self.fail(c))
            self.assertFalse(_breaks_a_browser(reread), message.data[:200])

        check()
