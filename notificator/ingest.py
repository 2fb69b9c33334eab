# -*- test-case-name: tests.test_ingest -*-
"""
Parse a C{POST /webNotification} body into a L{Message}.

The senders in the field use three forms:

 1. C{application/x-www-form-urlencoded}: C{id=appr_001003200&data={...}}
 2. C{application/x-www-form-urlencoded}, the whole JSON as the single form
    key with an empty value: C{{"id":"notify_001000210","data":{...}}=}
 3. C{application/json}: C{{"id": "...", "data": ...}}

We parse the raw body rather than C{request.args}: twisted.web's form parser
also splits on C{;} and drops items without C{=}, which cuts form 2 apart
whenever the JSON holds a C{;} (and form 1's data likewise).  Here the body
is split on C{&} only, and form 2 is read from the whole body.

A publish token (C{publish.token}, see L{notificator.auth}) may come as a
C{token} field in form 1, or as a C{"token"} key of the JSON object in
forms 2 and 3; L{parse_publish_token} returns it beside the message.  It
never becomes part of the message: in form 1 every C{token} field is taken
out of the body before anything else is read (so the raw-JSON rule below
cannot swallow it), and a C{"token"} key is not C{data}.

C{id} is C{<event>_<userId>}, split at the first underscore.  The event
name becomes the SSE C{event:} field, so it is restricted to letters,
digits, C{-} and C{.}.

Only the text charsets of L{CHARSETS} are read (415 for any other, before
a byte is decoded: Python's codecs include slow ones, such as punycode,
whose decoder takes time quadratic in the body).  When the caller passes
C{check_token}, the token is checked as soon as it is found: in form 1
before anything is decoded, in forms 2 and 3 once the JSON is parsed and
before its C{id} and C{data} are read.

What would break later is refused here (400), before anything is recorded:
a user id or data that is not valid Unicode (a lone surrogate, from a JSON
C{\\ud800} escape), and JSON numbers out of a double's range (C{1e999},
which browsers would read as C{Infinity}).

Pure: no Twisted, no I/O.
"""

from __future__ import annotations

import codecs
import encodings
import encodings.aliases
import functools
import json
import math
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_to_bytes

from notificator.events import Message

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"

MAX_EVENT_LENGTH = 64
MAX_USER_ID_LENGTH = 256
# Matched whole (fullmatch): "$" would also match before a final newline.
_EVENT_NAME = re.compile(r"[A-Za-z0-9.-]+")
# Control characters, and lone surrogates (text that is not Unicode).
_BAD_IN_USER_ID = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
# A surrogate, or a JSON escape of one: where data may hold a lone one.
_MAYBE_SURROGATE = re.compile(r"[\ud800-\udfff]|\\u[dD][89a-fA-F]")


class BadNotification(Exception):
    """
    The body cannot be turned into a notification.

    @ivar reason: a short text for the JSON C{error} field and the log.
    @ivar code: the HTTP status to answer with.
    @ivar ident: the C{id} the body named, as far as it could be read (for
        the log line), or L{None}.
    """

    code = 400
    ident: str | None = None

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnsupportedMediaType(BadNotification):
    """The body is in a content type or charset we do not read."""

    code = 415


class Forbidden(BadNotification):
    """The publish token check (C{check_token}) refused the body's token."""

    code = 403


#: A token check: given the body's token (L{None}: none), a reason to
#: refuse the publish, or L{None} to go on.
TokenCheck = Callable[[bytes | None], str | None]


def parse_content_type(value: bytes | None) -> tuple[str, dict[str, str]]:
    """
    Split a Content-Type header into its lower-cased media type and its
    parameters (names lower-cased, quotes removed).
    """
    if not value:
        return "", {}
    text = value.decode("latin-1")
    media, *params = text.split(";")
    parsed = {}
    for p in params:
        name, sep, v = p.partition("=")
        if sep:
            parsed[name.strip().lower()] = v.strip().strip('"')
    return media.strip().lower(), parsed


class Charset(str):
    """
    A codec name (what C{bytes.decode} takes, e.g. C{euc_kr}) that
    remembers the charset as the sender wrote it (C{EUC_KR}, C{ks_c_5601-1987}),
    so an error quotes the sender's own word.
    """

    label: str

    def __new__(cls, codec: str, label: str) -> Charset:
        self = super().__new__(cls, codec)
        self.label = label
        return self


#: The charsets a publish body may be in, by Python codec module: UTF-8,
#: the Korean EUC-KR and CP949 (Windows' superset of it), ISO-8859-1 and
#: US-ASCII; each under every name Python knows it by (C{latin1},
#: C{ks_c_5601}, C{uhc} ...).
CHARSETS = ("utf_8", "euc_kr", "cp949", "latin_1", "ascii")

#: Names that mean another codec than Python's alias table says:
#: C{ks_c_5601-1987} is what Windows (and Outlook, and .NET senders) call
#: code page 949, a superset of EUC-KR, so text in it holds syllables
#: EUC-KR has not (Python reads the name as EUC-KR); C{windows-949} is the
#: WHATWG name of the same code page.
_WINDOWS_NAMES = {"ks_c_5601_1987": "cp949", "windows_949": "cp949"}


def _charset_names() -> dict[str, str]:
    """
    Every name of the L{CHARSETS}, lower-cased and normalised as Python's
    codec search does, -> the codec's own name (what C{bytes.decode} takes).
    """
    codec = {module: codecs.lookup(module).name for module in CHARSETS}
    names: dict[str, str] = {}
    for alias, module in encodings.aliases.aliases.items():
        if module in codec:
            names[alias] = codec[module]
    for module, name in codec.items():
        names[module] = name
        names[encodings.normalize_encoding(name)] = name
    for alias, module in _WINDOWS_NAMES.items():
        names[alias] = codec[module]
    return names


_CHARSET_NAMES = _charset_names()


def _codec(params: dict[str, str]) -> Charset:
    """
    The codec of a C{charset} parameter (UTF-8 when there is none), from a
    fixed table: no codec is looked up by a name a client sent.

    @raise UnsupportedMediaType: not one of L{CHARSETS}.
    """
    charset = params.get("charset", "") or "utf-8"
    codec = _CHARSET_NAMES.get(encodings.normalize_encoding(charset[:64].lower()))
    if codec is None:
        raise UnsupportedMediaType(
            f"unsupported charset {charset[:40]!r} (use UTF-8, EUC-KR, CP949, ISO-8859-1"
            " or US-ASCII)"
        )
    return Charset(codec, charset)


def _decode(raw: bytes, codec: str) -> str:
    try:
        return raw.decode(codec)
    except UnicodeDecodeError:
        raise BadNotification(f"body is not valid {getattr(codec, 'label', codec)[:40]}")


def _lenient(raw: bytes, codec: str) -> str:
    """C{raw} as text for a log line, whatever it holds."""
    return raw.decode(codec, "replace")


def _unquote_plus(raw: bytes) -> bytes:
    return unquote_to_bytes(raw.replace(b"+", b" "))


def _reject_constant(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


class _OutOfRange(BadNotification):
    """A JSON number a double cannot hold: browsers would read C{Infinity}."""

    def __init__(self, number: str) -> None:
        super().__init__(f"JSON number out of range: {number[:40]}")


def _float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _OutOfRange(text)
    return value


def _int(text: str) -> int:
    if math.isinf(float(text)):
        raise _OutOfRange(text)
    return int(text)


#: Digits enough for an integer out of a double's range (10**308 has 309).
_LONG_NUMBER = re.compile(r"\d{310}")

# One decoder for every call: json.loads with a keyword builds a new one
# each time, a measurable part of a publish.  A float out of range raises
# BadNotification out of it, whatever the caller catches; integers are left
# to the C scanner (a hook would cost every integer a call), and the rare
# text with 310 digits in a row is read again by _RANGE, which checks them.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_float)
_RANGE = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_float, parse_int=_int)
# Without the range checks (and Python's limit on the digits of an int): is
# a text with a number out of range JSON at all?
_PLAIN = json.JSONDecoder(parse_constant=_reject_constant, parse_int=float)


def _loads(text: str) -> Any:
    """
    Strict JSON: no NaN or Infinity, which browsers' JSON.parse rejects.

    @raise ValueError: not JSON, or nested too deeply to read.
    @raise BadNotification: JSON with a number out of a double's range.
    """
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise _TooDeep("nested too deeply")
    except _OutOfRange:
        # Refused only if the text is JSON (else it is no number at all).
        _is_json(text)
        raise
    except ValueError:
        # Python reads no integer of more than 4300 digits: out of range
        # too, if the text is JSON otherwise.
        if len(text) > 4300 and _LONG_NUMBER.search(text) is not None:
            _is_json(text)
            _RANGE.decode(text)  # raises _OutOfRange
        raise
    if len(text) > 309 and _LONG_NUMBER.search(text) is not None:
        try:
            _RANGE.decode(text)
        except RecursionError:
            raise _TooDeep("nested too deeply")
    return value


def _is_json(text: str) -> None:
    """
    @raise ValueError: C{text} is not JSON, whatever its numbers (or is
        nested too deeply to read).
    """
    try:
        _PLAIN.decode(text)
    except RecursionError:
        raise _TooDeep("nested too deeply")


class _TooDeep(ValueError):
    """JSON nested deeper than Python's recursion limit lets it be read or written."""


def data_text(value: Any, parsed: bool = True) -> str:
    """
    The JSON text to send for a notification's C{data}: a string that is
    valid JSON is kept as sent, any other string is JSON-encoded, and other
    values are serialised (missing data is C{null}).  The browser side
    C{JSON.parse}s it.

    @param parsed: C{value} may hold lone surrogates (it was parsed from
        JSON with C{\\u} escapes); false for text decoded from bytes by a
        codec, which never makes one (then only its own escapes are looked
        at).
    @raise BadNotification: JSON nested too deeply to read or write, a
        number out of range, or a lone surrogate (text that is not Unicode,
        as it is or as a JSON escape).
    """
    if isinstance(value, str):
        try:
            _loads(value)
        except _TooDeep:
            raise BadNotification("data is JSON nested too deeply")
        except ValueError:
            text = json.dumps(value, ensure_ascii=False)
        else:
            text = value
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        except RecursionError:
            raise BadNotification("data is JSON nested too deeply")
    if (parsed or "\\u" in text) and _MAYBE_SURROGATE.search(text) is not None:
        _check_unicode(text)
    return text


def _check_unicode(text: str) -> None:
    """
    @raise BadNotification: C{text} (valid JSON) holds a lone surrogate,
        or its JSON escape; a pair of escapes is one character and passes.
    """
    try:
        text.encode("utf-8")
        json.dumps(_loads(text), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BadNotification("data is not valid Unicode (it holds a lone surrogate)")


def split_id(ident: object) -> tuple[str, str]:
    """
    Split C{<event>_<userId>} at the first underscore and check both parts.

    @raise BadNotification: missing, malformed, or unsafe parts.
    """
    if not isinstance(ident, str) or not ident:
        raise BadNotification("missing id (expected <event>_<userId>)")
    event, sep, user_id = ident.partition("_")
    if not sep or not event or not user_id:
        raise BadNotification("id must be <event>_<userId>")
    if len(event) > MAX_EVENT_LENGTH or not _EVENT_NAME.fullmatch(event):
        raise BadNotification(
            f"event name must be 1-{MAX_EVENT_LENGTH} letters, digits, '-' or '.'"
        )
    check_user_id(user_id)
    return event, user_id


def check_user_id(user_id: str) -> str:
    """
    @raise BadNotification: empty, too long, holding control characters,
        or not valid Unicode (a lone surrogate, from a JSON escape).
    """
    if not user_id:
        raise BadNotification("empty user id")
    if len(user_id) > MAX_USER_ID_LENGTH:
        raise BadNotification(f"user id longer than {MAX_USER_ID_LENGTH} characters")
    bad = _BAD_IN_USER_ID.search(user_id)
    if bad is not None:
        if bad.group() >= "\ud800":
            raise BadNotification("user id is not valid Unicode (it holds a lone surrogate)")
        raise BadNotification("user id must not contain control characters")
    return user_id


def _message(obj: Any, escapes: bool = True) -> Message:
    """
    The message of a parsed JSON body.

    @param escapes: the JSON had C{\\u} escapes (its strings may hold lone
        surrogates).
    """
    if not isinstance(obj, dict):
        raise BadNotification("expected a JSON object with id and data")
    ident = obj.get("id")
    try:
        event, user_id = split_id(ident)
        return Message(event=event, user_id=user_id, data=data_text(obj.get("data"), escapes))
    except BadNotification as e:
        if ident is not None:
            e.ident = ident if isinstance(ident, str) else repr(ident)[:100]
        raise


def _json_token(obj: dict[str, Any]) -> bytes | None:
    """The C{"token"} of a JSON body."""
    token = obj.get("token")
    if token is None:
        return None
    if not isinstance(token, str):
        raise BadNotification("token must be a string")
    return token.encode("utf-8", "surrogatepass")


def _check(check_token: TokenCheck | None, token: bytes | None) -> None:
    """
    @raise Forbidden: C{check_token} refuses C{token}.
    """
    if check_token is not None:
        reason = check_token(token)
        if reason is not None:
            raise Forbidden(reason)


def _parse_form(
    body: bytes, codec: str, max_fields: int | None = None, check_token: TokenCheck | None = None
) -> tuple[Message, bytes | None]:
    raw = body.strip()
    if raw[:1] == b"{" or raw[:3].upper() == b"%7B":
        return _parse_json_key(raw, codec, check_token)
    if max_fields is not None and body.count(b"&") >= max_fields:
        raise BadNotification(f"more than {max_fields} form fields")
    fields: dict[bytes, bytes] = {}
    token: bytes | None = None
    kept: list[bytes] | None = None
    items = body.split(b"&")
    for i, item in enumerate(items):
        name, _, value = item.partition(b"=")
        if b"%" in name or b"+" in name:
            name = _unquote_plus(name)
        name = name.strip()
        if name == b"token":
            if token is None:
                token = _unquote_plus(value)
            if kept is None:
                kept = items[:i]
            continue
        if kept is not None:
            kept.append(item)
        if name and name not in fields:
            fields[name] = value
    if kept is not None:
        body = b"&".join(kept)
    # The token before anything is decoded.
    _check(check_token, token)
    if b"id" in fields:
        raw_id = _unquote_plus(fields[b"id"])
        try:
            ident = _decode(raw_id, codec)
            if b"data" not in fields:
                data = None
            else:
                data = _decode(_unquote_plus(fields[b"data"]), codec)
                data = _raw_tail_json(body, codec) or data
            event, user_id = split_id(ident.strip())
            message = Message(event=event, user_id=user_id, data=data_text(data, parsed=False))
            return message, token
        except BadNotification as e:
            e.ident = _lenient(raw_id, codec)
            raise
    raise BadNotification("missing id (expected id=<event>_<userId>&data=<json>)")


def _parse_json_key(
    raw: bytes, codec: str, check_token: TokenCheck | None = None
) -> tuple[Message, bytes | None]:
    """
    Form 2: the whole body is the JSON, as a form key with an empty value.
    Read from the whole body, so a raw JSON holding C{&}, C{=} or C{;} is
    not cut apart.
    """
    if raw.endswith(b"="):
        raw = raw[:-1]
    text = _decode(_unquote_plus(raw), codec).strip()
    return _json_body(text, "form body", check_token)


def _json_body(
    text: str, what: str, check_token: TokenCheck | None
) -> tuple[Message, bytes | None]:
    """The message and token of a JSON body (forms 2 and 3); the token checked first."""
    try:
        obj = _loads(text)
    except _OutOfRange:
        # JSON with a number out of range: still the token first.
        whole = _PLAIN.decode(text)
        if isinstance(whole, dict):
            _check(check_token, _json_token(whole))
        raise
    except ValueError as e:
        raise BadNotification(f"{what} is not valid JSON: {e}")
    if not isinstance(obj, dict):
        raise BadNotification("expected a JSON object with id and data")
    token = _json_token(obj)
    _check(check_token, token)
    return _message(obj, "\\u" in text), token


def _raw_tail_json(body: bytes, codec: str) -> str | None:
    """
    For senders that put unencoded JSON holding C{&} in C{data}: when
    C{data} is the last field and its value, cut at C{&}, is not valid JSON,
    take everything after C{data=} as the value if that is valid JSON.
    """
    start = body.rfind(b"&data=")
    start = start + 6 if start >= 0 else (5 if body.startswith(b"data=") else -1)
    tail = body[start:] if start >= 0 else b""
    if b"&" not in tail:
        return None
    cut = _decode(_unquote_plus(tail.split(b"&", 1)[0]), codec)
    try:
        _loads(cut)
        return None
    except ValueError:
        pass
    whole = _decode(_unquote_plus(tail), codec)
    try:
        _loads(whole)
    except ValueError:
        return None
    return whole


@functools.lru_cache(maxsize=64)
def _media_and_codec(content_type: bytes | None) -> tuple[str, Charset]:
    """
    The media type and codec of a publish's Content-Type.  Cached: a
    sender sends the same header every time.

    @raise UnsupportedMediaType: not a form or JSON, or an unknown charset.
    """
    media, params = parse_content_type(content_type)
    if media not in (FORM, JSON) and not media.endswith("+json"):
        raise UnsupportedMediaType(
            f"content type must be {FORM} or {JSON}, got {media[:60] or 'none'!r}"
        )
    return media, _codec(params)


def parse_publish(
    content_type: bytes | None, body: bytes, max_fields: int | None = None
) -> Message:
    """
    Parse a publish request body (a token in it is dropped).

    @param content_type: the raw Content-Type header, or L{None}.
    @param body: the raw request body.
    @param max_fields: most fields a form body (form 1) may have
        (C{limits.formFields}); L{None}: any number.
    @raise UnsupportedMediaType: not a form or JSON body, or unknown charset.
    @raise BadNotification: anything else wrong with it.
    """
    return parse_publish_token(content_type, body, max_fields)[0]


def parse_publish_token(
    content_type: bytes | None,
    body: bytes,
    max_fields: int | None = None,
    check_token: TokenCheck | None = None,
) -> tuple[Message, bytes | None]:
    """
    As L{parse_publish}, and the publish token the body carries, as sent
    (percent-decoded bytes of the first C{token} form field, or the UTF-8
    of the JSON C{"token"} string), or L{None}.  The token is never part
    of the message.

    @param check_token: asked with the token (or L{None}) as soon as it is
        found: in form 1 before any text is decoded, in forms 2 and 3 once
        the body's JSON is parsed, before its id and data are read.
    @raise Forbidden: C{check_token} gave a reason.
    @raise BadNotification: also when the JSON C{"token"} is not a string.
    """
    media, codec = _media_and_codec(content_type)
    if not body.strip():
        raise BadNotification("empty body")
    if media == FORM:
        return _parse_form(body, codec, max_fields, check_token)
    return _json_body(_decode(body, codec).lstrip("\ufeff"), "body", check_token)
