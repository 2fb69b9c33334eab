# -*- test-case-name: tests.test_http_twisted -*-
"""
The private parts of Twisted the server uses, in both modes
(C{server.fastChannel}), each tested against the real class:
L{request_target} and L{request_version} (a request's method, path and
protocol before its body), L{RequestBase} (when a request's head is
complete: over HTTP/2 not at C{gotLength}; the fast write of an event
stream's frames), the HTTP/2 helpers of the
connection clock (L{h2_connection}, L{h2_open_streams}, L{when_h2_idle},
L{h2_go_away}), L{h2_reset} (a refused or slow request's stream), L{close_now}, which frees a closed connection's
descriptor before the reactor's next pass (L{notificator.http.connections}),
twisted.web's protocol wrapper that switches to HTTP/2
(L{GenericHTTPChannelProtocol}, which L{notificator.http.fast.protocol}
wraps its channel in), and what the fast channel
(L{notificator.http.fast.Channel}) needs: L{ChannelBase} (the two answers
C{HTTPChannel} writes to its transport itself, and the direct send to a
TCP connection's socket when its queue is empty); and the headers of the
hot requests read and set by their canonical names, in twisted.web's
C{Headers._rawHeaders} (L{header_block} and L{set_headers}: a response's
fixed headers built once and set at once; L{header}, L{header_values},
L{kept_headers}).

Every access to a private part of Twisted (an attribute or method whose
name starts with C{_}, or one Twisted does not document) is in this
module, and C{tests.test_http_twisted} checks each against the real
classes: C{tox -e twisted-latest} runs it first, so a Twisted that changes
one fails there before anywhere else.
"""

from __future__ import annotations

import errno
import functools
import socket
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote_to_bytes

from twisted.internet import tcp
from twisted.internet.error import ConnectionAborted
from twisted.protocols import basic
from twisted.python import log as legacy_log
from twisted.python.failure import Failure
from twisted.web import http, resource, server
from twisted.web.http import datetimeToString, parse_qs
from twisted.web.http_headers import Headers, InvalidHeaderName
from twisted.web.http_headers import _nameEncoder as _names
from twisted.web.iweb import INonQueuedRequestFactory

#: twisted.web's wrapper of a site's channel, which switches the connection
#: to HTTP/2 when TLS negotiates C{h2}.
GenericHTTPChannelProtocol = http._GenericHTTPChannelProtocol


class ChannelBase(http.HTTPChannel):
    """
    twisted.web's HTTP/1.x channel, with what the fast channel
    (L{notificator.http.fast.Channel}) needs of Twisted's private parts:

     - the two answers C{HTTPChannel} writes to its transport itself
       (private methods: C{_send100Continue} and
       C{_respondToBadRequestAndDisconnect}) are handed to L{send_raw}, so
       that a channel that holds its writes keeps them in line with the
       responses before them;
     - L{send_now} writes straight to the socket of a plain TCP
       connection when nothing is queued on it, as
       C{tcp.Connection.writeSomeData} would without its wrapping: it
       reads the connection's queue (C{dataBuffer} and C{_tempDataLen},
       what C{transport.write} queued and the reactor's write pass has not
       sent) and sends on its C{socket};
     - L{read_whole_head} reads a request whose whole head came in one
       read with a few C{bytes} operations, and sets the state
       C{HTTPChannel} and C{LineReceiver} keep while they read one line by
       line (C{line_mode}, C{_buffer}, C{_busyReceiving},
       C{_HTTPChannel__first_line}, C{_command}, C{_path}, C{_version},
       the header count and size), through twisted.web's header-name
       encoder (C{http_headers._nameEncoder}) into the dict
       C{Headers._rawHeaders}.
    """

    # The transport, when it is a plain TCP connection (TLS transports
    # encrypt and frame the bytes): what send_now writes to directly.
    _socket: tcp.Connection | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        if isinstance(self.transport, tcp.Connection):
            self._socket = self.transport

    def send_now(self, data: bytes) -> None:
        """
        Send C{data} now: straight to the socket when nothing is queued on
        it; what the socket does not take then (would block, out of
        buffers, the connection lost), and everything while the queue is
        not empty (or over TLS, or the connection closing), through
        C{transport.write}, which keeps the order, the flow control and
        the loss handling Twisted's.
        """
        sock = self._socket
        if (
            sock is not None
            and sock.connected
            and not sock.disconnecting
            and not sock.dataBuffer
            and not sock._tempDataLen
        ):
            # (Python retries an interrupted send.)
            try:
                sent = sock.socket.send(data)
            except OSError:
                # Queue it all; the reactor's write pass carries on (or
                # finds out and reports the loss).
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        transport = self.transport
        assert transport is not None  # set in makeConnection, never unset
        transport.write(data)

    def send_raw(self, data: bytes) -> None:
        """Send C{data}, bytes of the HTTP/1.x stream, as they are (L{send_now})."""
        self.send_now(data)

    def bad_request(self) -> None:
        """Answer 400 and close, as twisted.web answers a malformed head."""
        self._respondToBadRequestAndDisconnect()

    def allHeadersReceived(self) -> None:
        """
        As C{HTTPChannel.allHeadersReceived}, line for line, with its
        C{Expect} header read by name from C{Headers._rawHeaders}.
        """
        request = self.requests[-1]
        request.parseCookies()
        self.persistent = self.checkPersistence(request, self._version)
        request.gotLength(self.length)
        expect = request.requestHeaders._rawHeaders.get(b"Expect")
        if expect and expect[0].lower() == b"100-continue" and self._version == b"HTTP/1.1":
            self._send100Continue()

    def checkPersistence(self, request: Any, version: bytes) -> bool:
        """
        As C{HTTPChannel.checkPersistence}, line for line, with its
        C{Connection} header read by name from C{Headers._rawHeaders}.
        """
        connection = request.requestHeaders._rawHeaders.get(b"Connection")
        tokens = [t.lower() for t in connection[0].split(b" ")] if connection else []
        if version == b"HTTP/1.1":
            if b"close" in tokens:
                request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
                return False
            return True
        return False

    def _send100Continue(self) -> None:
        self.send_raw(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _respondToBadRequestAndDisconnect(self) -> None:
        self.send_raw(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        self.loseConnection()

    def read_whole_head(self, data: bytes) -> bool:
        """
        Read a request whose whole head came in C{data} (as a browser's
        C{GET /sse} and a sender's publish come: in one read), as
        C{HTTPChannel} reads it line by line, with a few C{bytes}
        operations: the same request, with the same headers in the same
        order, the same checks, the same calls after the head.  Anything
        unusual is left to C{HTTPChannel} untouched (return L{False}): a
        head in several reads, or the channel in the middle of anything
        (a body, a request being handled, a partial line); a head past
        C{totalHeadersSize}, more than C{maxHeaders} headers; a request
        line C{HTTPChannel} refuses; a header line without a colon, with
        a name that is not a token, continued on the next line
        (obs-fold), with a NUL, a bare CR or LF; more than one
        C{Content-Length} or C{Transfer-Encoding}, a length that is not
        digits, a coding other than C{chunked}: each of those is answered
        (400) or read by twisted.web's own code.

        @return: whether the data was read (L{False}: nothing was done).
        """
        if (
            not self.line_mode
            or self._buffer
            or self._busyReceiving
            or self.paused
            or not self.persistent
            or self._HTTPChannel__first_line != 1  # type: ignore[has-type]
        ):
            return False
        end = data.find(b"\r\n\r\n")
        if end < 0 or end > self.totalHeadersSize or end > self.MAX_LENGTH:
            return False
        head = data[:end]
        lines = head.split(b"\r\n")
        breaks = len(lines) - 1
        if (
            head.count(b"\r") != breaks
            or head.count(b"\n") != breaks
            or b"\x00" in head
            or b"\r\n " in head
            or b"\r\n\t" in head
            or breaks > self.maxHeaders
        ):
            return False
        parsed = request_line(lines[0])
        if parsed is None:
            return False
        headers = []
        framing = False
        canonical = _names.encode
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon:
                return False
            try:
                known = canonical(name)
            except InvalidHeaderName:
                return False
            value = value.strip(b" \t")
            if known in _FRAMING:
                if framing:
                    return False
                framing = True
                if known == b"Content-Length":
                    if not value.isdigit():
                        return False
                elif value.lower() != b"chunked":
                    return False
            headers.append((known, value))
        # The head is one twisted.web reads as it is: as lineReceived does.
        self.resetTimeout()
        self._buffer = data[end + 4 :]
        self._busyReceiving = True
        try:
            factory = self.requestFactory
            if _non_queued(factory):
                request = factory(self)
            else:
                request = factory(self, len(self.requests))
            self.requests.append(request)
            self._HTTPChannel__first_line = 0
            self._command, self._path, self._version = parsed
            # Stored as Headers.addRawHeader stores them (a value holds no
            # CR or LF: nothing to sanitise), without naming each again.
            raw = request.requestHeaders._rawHeaders
            for known, value in headers:
                if known in _FRAMING:
                    # Checked above: one, and one it accepts.
                    self._maybeChooseTransferDecoder(known, value)
                values = raw.get(known)
                if values is None:
                    raw[known] = [value]
                else:
                    values.append(value)
            self._receivedHeaderCount = breaks
            self._receivedHeaderSize = end - 2 * breaks
            self.allHeadersReceived()
            if self.length == 0:
                self.allContentReceived()
            else:
                self.setRawMode()
        finally:
            self._busyReceiving = False
        # What came after the head waited in the buffer, as it does while
        # lineReceived runs; LineReceiver reads it on.
        transport: Any = self.transport
        if transport is None or transport.disconnecting:
            return True
        rest, self._buffer = self._buffer, b""
        if rest:
            basic.LineReceiver.dataReceived(self, rest)
        return True


#: The headers that frame a request's body.
_FRAMING = frozenset((b"Content-Length", b"Transfer-Encoding"))

#: A token (RFC 9110 5.6.2): what a method and a header name are made of.
_TCHAR = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~"

#: What twisted.web's C{HTTPChannel} lets through in a request-target.
_TARGET = bytes(range(33, 177))


@functools.lru_cache(maxsize=16)
def _non_queued(factory: Any) -> bool:
    """
    Whether twisted.web builds C{factory}'s requests without their place
    in the queue (as C{HTTPChannel.lineReceived} asks, for every request:
    a site has one factory, and the answer does not change).
    """
    return INonQueuedRequestFactory.providedBy(factory)


#: twisted.web's request class.  (twisted.web.http is a deprecation proxy
#: of the module, through which each attribute read costs about a
#: microsecond: read once here.)
_Request = http.Request


def when_finished(request: Any, listener: Any) -> None:
    """
    Tell C{listener} once how C{request} ends, as
    C{request.notifyFinish().addBoth(...)} would, without a L{Deferred}
    per request (an open event stream holds it for its whole life):
    C{listener.callback(None)} when its response is finished,
    C{listener.errback(failure)} when its connection is lost first.
    twisted.web's C{Request} keeps the L{Deferred}s C{notifyFinish} gives
    in its C{notifications} list and calls exactly those two methods on
    each, once, in C{_cleanup} and C{connectionLost}; C{listener} must not
    raise (a L{Deferred} would have kept the error).  Any other request
    (test doubles: twisted.web's C{DummyRequest}) is asked with
    C{notifyFinish}.
    """
    if isinstance(request, _Request):
        request.notifications.append(listener)
    else:
        request.notifyFinish().addCallbacks(listener.callback, listener.errback)


def request_line(line: bytes) -> tuple[bytes, bytes, bytes] | None:
    """
    The method, request-target and version of a request line, checked as
    twisted.web's C{HTTPChannel} checks them (a token, a target of
    printable bytes, C{HTTP/1.1} or C{HTTP/1.0}) with C{bytes} operations
    instead of a loop over its bytes; L{None} for a line it refuses.
    """
    parts = line.split(b" ")
    if len(parts) != 3:
        return None
    method, target, version = parts
    if (
        (version != b"HTTP/1.1" and version != b"HTTP/1.0")
        or not method
        or method.translate(None, _TCHAR)
        or not target
        or target.translate(None, _TARGET)
    ):
        return None
    return method, target, version


class RequestBase(server.Request):
    """
    twisted.web's request, with what the server's
    (L{notificator.http.request.Request}) needs of its private parts:

     - it is told once when its head is complete: every header is on it
       and none of its body has been handed in yet.  Subclasses decide
       there (L{head_received}) what twisted.web decides in C{gotLength}:
       whether the body is to be read, and into what;
     - L{write_chunk}, a shorter C{write} for an open event stream's frames
       and its head (with the fast channel), and L{respond}, a whole answer
       written as twisted.web writes what C{render} returns, both of which
       read twisted.web's request state (C{chunked}, C{startedWriting},
       C{finished}, C{_disconnected}, C{_encoder}, C{_inFakeHead});
     - L{process}, twisted.web's with its C{Server} and C{Date} headers set
       as one block; its constructor, twisted.web's three in one call.

    Over HTTP/1.x that is C{gotLength}: C{HTTPChannel} calls it from
    C{allHeadersReceived}, once every header line is read (after
    C{parseCookies}).  Over HTTP/2 C{gotLength} comes too early:
    twisted.web's C{H2Stream._convertHeaders} adds the headers of the
    HEADERS frame one by one and calls C{gotLength} (in
    C{_addHeaderToRequest}) the moment it meets C{content-length}, before
    the headers after it are on the request; C{parseCookies} it calls once
    they all are.  A decision in C{gotLength} would then miss an
    C{Authorization}, an C{Origin} or an C{X-Forwarded-For} that a client
    (a browser does) sends after C{content-length}.  So over HTTP/2 (a
    request whose C{transport} is L{None}: an C{H2Stream} has none) the
    head is complete at the later of the two calls, in whichever order a
    Twisted makes them.  Both come from the stream's constructor, before
    any DATA frame of the stream is handed in.  And a C{GET} or C{HEAD}
    without C{content-length}, whose length twisted.web takes for 0, yet
    whose DATA frames it hands in all the same, has a body of no announced
    length (L{None}).  L{tests.test_http_twisted} checks this on the real
    C{H2Connection} and C{H2Stream}.
    """

    # Over HTTP/2: the length gotLength gave while parseCookies had not come
    # (a one-item tuple), _PARSED once parseCookies came first, _DONE once
    # head_received ran.  HTTP/1.x requests never set it.
    _head: Any = None

    def __init__(
        self, channel: Any, queued: object = False, parsePOSTFormSubmission: bool = True
    ) -> None:
        """
        As twisted.web's C{server.Request.__init__} (with
        C{http.Request.__init__} and C{Componentized.__init__}, which it
        calls), in one call: the same attributes, in the same order, with
        the same values, among them the private C{_parsePOSTFormSubmission}
        and C{_adapterCache}; C{parsePOSTFormSubmission} is as given (not
        read from the site when L{None}).
        """
        self.notifications = []
        self.channel = channel
        self.client = channel.getPeer()
        self.host = channel.getHost()
        self.requestHeaders = Headers()
        self.received_cookies = {}
        self.responseHeaders = Headers()
        self.cookies = []
        self.transport = channel.transport
        self.queued = queued
        self._parsePOSTFormSubmission = parsePOSTFormSubmission
        self._adapterCache = {}

    def gotLength(self, length: int | None) -> None:
        """The channel has the body's length: over HTTP/1.x the head is complete."""
        if self.transport is None:  # an HTTP/2 stream's request
            head = self._head
            if head is _DONE:
                return  # a second content-length, once decided
            if head is not _PARSED:
                self._head = (length,)
                return
            self._head = _DONE
            length = self._h2_length(length)
        self.head_received(length)

    def parseCookies(self) -> None:
        """
        As twisted.web's (line for line, its C{Cookie} headers read by name
        from C{Headers._rawHeaders}); over HTTP/2 every header is in now.
        """
        cookies = self.requestHeaders._rawHeaders.get(b"Cookie")
        if cookies:
            received = self.received_cookies
            for text in cookies:
                if text:
                    for cookie in text.split(b";"):
                        cookie = cookie.lstrip()
                        try:
                            k, v = cookie.split(b"=", 1)
                            received[k] = v
                        except ValueError:
                            pass
        if self.transport is None:
            head = self._head
            if head is None:
                self._head = _PARSED
            elif head is not _PARSED and head is not _DONE:
                self._head = _DONE
                self.head_received(self._h2_length(head[0]))

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        """
        As twisted.web's C{http.Request.requestReceived}, line for line,
        for a request that does not parse form bodies into C{args}
        (C{parsePOSTFormSubmission} false: the C{Content-Type} it reads only
        for them is not read); otherwise twisted.web's.
        """
        if self._parsePOSTFormSubmission:
            _Request.requestReceived(self, command, path, version)
            return
        self.content.seek(0, 0)  # type: ignore[union-attr]
        self.args = {}
        self.method, self.uri = command, path
        self.clientproto = version
        x = path.split(b"?", 1)
        if len(x) == 1:
            self.path = path
        else:
            self.path, argstring = x
            self.args = parse_qs(argstring, 1)
        self.process()

    def _h2_length(self, length: int | None) -> int | None:
        """The announced length of an HTTP/2 request: none without C{content-length}."""
        if length == 0 and not self.requestHeaders.hasHeader(b"content-length"):
            return None
        return length

    def head_received(self, length: int | None) -> None:
        """
        The head is complete, the body (of C{length} bytes, L{None}: not
        announced) not read: as twisted.web's C{gotLength}.  (Over HTTP/2 a
        request without C{content-length} may have a body of any length,
        whatever its method.)
        """
        server.Request.gotLength(self, length)

    def process(self) -> None:
        """
        As twisted.web's C{server.Request.process}, line for line, but for
        its C{Server} and C{Date} headers: set as one block
        (L{set_headers}), the date from the site's C{http_date} when it has
        one (L{notificator.http.request.HTTPDate}: formatted once a second),
        else twisted.web's C{datetimeToString()}.  (It reads twisted.web's
        private C{_handleStar}, C{_encoder} and
        C{resource._IEncodingResource}.)
        """
        # (A site's channel: twisted.web's stubs do not say it has one.)
        site = self.site = self.channel.site  # type: ignore[attr-defined]
        dates = getattr(site, "http_date", None)
        set_headers(
            self.responseHeaders,
            (
                (b"Server", _SERVER),
                (b"Date", datetimeToString() if dates is None else dates()),
            ),
        )
        self.prepath = []
        self.postpath = list(map(unquote_to_bytes, self.path[1:].split(b"/")))
        if self.path == b"*":
            self._handleStar()
            return
        try:
            resrc = site.getResourceFor(self)
            if _IEncodingResource.providedBy(resrc):
                encoder = resrc.getEncoder(self)
                if encoder is not None:
                    self._encoder = encoder
            self.render(resrc)
        except BaseException:
            self.processingFailed(Failure())

    def write_chunk(self, data: bytes) -> None:
        """
        As twisted.web's C{write}, with a shorter path for what an open
        event stream writes: a chunk of a started HTTP/1.1 response, built
        as one string and handed to the channel (as C{Request.write} would,
        as three: the length, the data, the end); and its first chunk, with
        the response's head, when the response is the stream's (C{200} to
        an HTTP/1.1 C{GET}, its C{Content-Type} set, no C{Content-Length},
        no cookie, C{ETag}, C{Last-Modified} or encoder): the head
        twisted.web's C{server.Request.write} and C{http.Request.write}
        would write (C{Transfer-Encoding: chunked} last), by the same
        C{channel.writeHeaders}.  Anything else is twisted.web's C{write}.
        """
        if (
            self.chunked
            and self.startedWriting
            and data
            and not self.finished
            and not self._disconnected
        ):
            self.sentLength += len(data)
            self.channel.write(b"%x\r\n%b\r\n" % (len(data), data))
        elif (
            not self.startedWriting
            and data
            and not self.finished
            and not self._disconnected
            and self.code == 200
            and self.clientproto == b"HTTP/1.1"
            and self.method == b"GET"
            and self._encoder is None
            and not self._inFakeHead
            and self.lastModified is None
            and self.etag is None
            and not self.cookies
            and self.responseHeaders._rawHeaders.get(b"Content-Type")
            and not self.responseHeaders._rawHeaders.get(b"Content-Length")
        ):
            headers = self.responseHeaders
            self.startedWriting = 1
            headers._rawHeaders[b"Transfer-Encoding"] = [b"chunked"]
            self.chunked = 1
            self.channel.writeHeaders(b"HTTP/1.1", b"200", self.code_message, headers)
            self.sentLength += len(data)
            self.channel.write(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self.write(data)

    def respond(self, body: bytes) -> None:
        """
        Answer with C{body}, whole, and finish: what twisted.web's
        C{server.Request.render} does with the bytes a resource's C{render}
        returns (C{Content-Length}, C{write}, C{finish}), for a resource
        that answers itself and returns C{NOT_DONE_YET}.  When twisted.web's
        C{write} would only write the head and C{body} (not started, its
        C{Content-Type} set, no cookie, C{ETag}, C{Last-Modified}, encoder
        or faked HEAD, not C{HEAD}, a status with a body), they are written
        here, by the same C{channel.writeHeaders} and C{channel.write};
        else by twisted.web's C{write}.  (A C{HEAD} is answered without
        the line twisted.web logs for one answered with a body.)
        """
        headers = self.responseHeaders
        raw = headers._rawHeaders
        if self.method == b"HEAD":
            # (twisted.web also logs a line for a HEAD answered with a body:
            # answer a HEAD by returning from render.)
            if body:
                raw[b"Content-Length"] = [b"%d" % (len(body),)]
            self.write(b"")
            self.finish()
            return
        raw[b"Content-Length"] = [b"%d" % (len(body),)]
        if (
            self.startedWriting
            or self.finished
            or self._disconnected
            or self._encoder is not None
            or self._inFakeHead
            or self.lastModified is not None
            or self.etag is not None
            or self.cookies
            or self.code in _NO_BODY_CODES
            or not raw.get(b"Content-Type")
        ):
            self.write(body)
        else:
            self.startedWriting = 1
            channel = self.channel
            channel.writeHeaders(self.clientproto, b"%d" % (self.code,), self.code_message, headers)
            self.sentLength += len(body)
            if body:
                channel.write(body)
        self.finish()


#: twisted.web's C{Server} header (C{server.version}).
_SERVER = server.version
_IEncodingResource = resource._IEncodingResource
_NO_BODY_CODES = http.NO_BODY_CODES

_PARSED = object()
_DONE = object()


def request_target(request: Any) -> tuple[bytes, bytes] | None:
    """
    The method and path of a request whose head is read and whose body is
    not (in C{Request.gotLength}, before twisted.web sets C{method} and
    C{path}): an HTTP/1.1 channel keeps them as C{_command} and C{_path},
    an HTTP/2 stream as C{command} and C{path}.  L{None} when neither is
    there (another Twisted, another channel): the caller then decides
    after the body, as it always does too.
    """
    ch = request.channel
    try:
        return ch._command, ch._path
    except AttributeError:
        command = getattr(ch, "command", None)
        path = getattr(ch, "path", None)
    if isinstance(command, bytes) and isinstance(path, bytes):
        return command, path
    return None


def request_version(request: Any) -> bytes | None:
    """
    The protocol of a request whose head is read and whose body is not
    (as L{request_target}): an HTTP/1.x channel keeps it as C{_version};
    an HTTP/2 stream is C{HTTP/2}.  L{None} when neither is known.
    """
    ch = request.channel
    version = getattr(ch, "_version", None)
    if isinstance(version, bytes):
        return version
    if isinstance(getattr(ch, "command", None), bytes):
        return b"HTTP/2"
    return None


# --- Headers, by their canonical names ----------------------------------------------------


#: Headers as L{header_block} gives them: canonical name and value, in order.
HeaderBlock = tuple[tuple[bytes, bytes], ...]


def header_block(pairs: Iterable[tuple[bytes | str, bytes | str]]) -> HeaderBlock:
    """
    The headers C{pairs} as twisted.web stores them once
    C{Headers.setRawHeaders(name, [value])} has set each, in order: each
    name in its canonical spelling, each value sanitised (line breaks
    made spaces), a name given twice once, at its first place, with its
    last value.  Built once (at start-up) with twisted.web's own
    C{Headers}; L{set_headers} then sets the block on every response.
    """
    headers = Headers()
    for name, value in pairs:
        headers.setRawHeaders(name, [value])
    return tuple((name, values[0]) for name, values in headers.getAllRawHeaders())


def canonical_name(name: bytes | str) -> bytes:
    """The canonical spelling of header C{name}, as C{Headers} stores it (what L{header} reads)."""
    return header_block([(name, b"")])[0][0]


def set_headers(headers: Headers, block: HeaderBlock) -> None:
    """
    Set each header of C{block} (L{header_block}) on C{headers}, as
    C{headers.setRawHeaders(name, [value])} would, one after the other (a
    name already there keeps its place and takes the new value), without
    twisted.web's work per call: the name looked up in its encoder's cache,
    the value sanitised again.  C{Headers} keeps them in the dict
    C{_rawHeaders}, of canonical names to lists of values.
    """
    raw = headers._rawHeaders
    for name, value in block:
        raw[name] = [value]


def header(headers: Headers, name: bytes) -> bytes | None:
    """
    The last value of header C{name} (its canonical spelling:
    L{canonical_name}) in C{headers}, as a request's C{getHeader(name)}
    gives it; L{None} when there is none.  One dict lookup
    (C{Headers._rawHeaders}) instead of three calls.
    """
    values = headers._rawHeaders.get(name)
    return values[-1] if values else None


def header_values(headers: Headers, name: bytes) -> list[bytes] | None:
    """
    The values of header C{name} (its canonical spelling) in C{headers},
    as C{headers.getRawHeaders(name)} gives them; L{None} when there are
    none.
    """
    return headers._rawHeaders.get(name) or None


def kept_headers(headers: Headers, names: Iterable[bytes]) -> Headers:
    """
    New C{Headers} with only the headers C{names} (canonical spellings) of
    C{headers}, with their values, as C{getRawHeaders} and C{setRawHeaders}
    would copy them (the values are sanitised already).
    """
    raw = headers._rawHeaders
    kept = Headers()
    for name in names:
        values = raw.get(name)
        if values:
            kept._rawHeaders[name] = list(values)
    return kept


# --- HTTP/2 (twisted.web's H2Connection), for the connection clock --------------------------


def h2_connection(protocol: Any) -> Any:
    """
    The C{H2Connection} serving a connection, once TLS negotiated C{h2} and
    its first bytes arrived: twisted.web's C{_GenericHTTPChannelProtocol}
    (the site's protocol, with either channel) keeps the channel it
    switched to as C{_channel}.  L{None} when there is none (another
    Twisted, another protocol, or no h2 package).
    """
    try:
        from twisted.web._http2 import H2Connection
    except ImportError:  # no h2 package: no HTTP/2
        return None
    conn = getattr(protocol, "_channel", None)
    return conn if isinstance(conn, H2Connection) else None


def h2_open_streams(conn: Any) -> bool:
    """Whether C{H2Connection} C{conn} has a stream open (its C{streams}: one per open stream)."""
    return bool(conn.streams)


def when_h2_idle(conn: Any, idle: Callable[[], object]) -> None:
    """
    Call C{idle()} each time the last open stream of C{H2Connection}
    C{conn} is done: C{_requestDone} removes a stream that is over (both
    sides ended, or reset) whichever way it ended, so it is wrapped on this
    instance.
    """
    done = conn._requestDone

    def _requestDone(stream_id: int) -> None:
        done(stream_id)
        if not conn.streams:
            idle()

    conn._requestDone = _requestDone


def h2_reset(request: server.Request) -> None:
    """
    Reset the HTTP/2 stream C{request} is on (C{RST_STREAM}); the
    connection and its other streams go on.  An HTTP/2 request's channel
    is its C{H2Stream} (of the private C{twisted.web._http2}; twisted.web's
    C{Request} declares an C{HTTPChannel}), which resets on
    C{abortConnection}, and is L{None} once the stream is gone: then
    nothing.
    """
    stream: Any = request.channel
    if stream is not None:
        stream.abortConnection()


def h2_go_away(conn: Any) -> None:
    """
    Close C{H2Connection} C{conn} as its own idle timeout does
    (C{timeoutConnection}): a GOAWAY, then the close, and an abort if the
    client has not let it close C{abortTimeout} seconds later.
    """
    conn.timeoutConnection()


def close_now(transport: Any) -> None:
    """
    Abort C{transport}'s connection and free its descriptor now.
    C{abortConnection} leaves the socket open until the reactor's next
    pass; a pass that closes many (an accept loop at
    C{limits.connections}, which takes a hundred connections or more at a
    time) could run the process out of descriptors before then.  So the
    TCP transport at the bottom (a TLS transport's C{transport}) is also
    told at once that its connection is lost, as the reactor would tell
    it on that pass (Twisted's C{tcp.Connection.connectionLost}, which
    closes the socket; it ignores the reactor's call that follows).
    Another kind of transport is only aborted.
    """
    transport.abortConnection()
    bottom = transport
    while not isinstance(bottom, tcp.Connection):
        bottom = getattr(bottom, "transport", None)
        if bottom is None:
            return
    bottom.connectionLost(Failure(ConnectionAborted("closed to make room")))


class FastPort(tcp.Port):
    """
    A listening C{tcp.Port} whose accept loop (C{doRead}) is Twisted's
    with less around each connection: the socket's C{_accept} (C{accept4}
    with C{SOCK_CLOEXEC}) and a C{socket.socket} made from its descriptor
    with the listening socket's family and type as numbers, where
    C{socket.accept} converts both to enums for every connection; no log
    buffer set up for each pass.  Everything else is Twisted's, in its
    order: the same address (an IPv6 one with its scope, as
    C{getnameinfo} writes it), C{buildProtocol}, the session number, the
    transport (C{tcp.Server}, which makes the socket non-blocking),
    C{makeConnection}, and the same growth of C{numberAccepts}.  An
    accept that fails other than by having no connection waiting
    (C{EMFILE}, C{ENOBUFS}, C{EPERM}...) is handed, as the pass's rest, to
    C{tcp.Port.doRead}, which reports it and recovers as Twisted does; an
    exception from a protocol is logged as Twisted logs it, and the port
    listens on.  L{fast_accept} makes a listening port one.
    """

    def doRead(self) -> None:
        accepted = 0
        try:
            sock = self.socket
            # Once per pass, not per connection as socket.accept does.
            family, type_ = int(sock.family), int(sock.type)
            accept = sock._accept  # type: ignore[union-attr]
            factory: Any = self.factory
            limit = self.numberAccepts
            while accepted < limit:
                try:
                    fd, addr = accept()
                except BlockingIOError:
                    break
                except OSError:
                    # Twisted's loop reports and recovers (EMFILE...).
                    tcp.Port.doRead(self)
                    return
                accepted += 1
                skt = socket.socket(family, type_, 0, fd)
                if len(addr) == 4:
                    host = socket.getnameinfo(addr, socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
                    addr = (host[0], *addr[1:])
                protocol = factory.buildProtocol(self._buildAddr(addr))
                if protocol is None:
                    skt.close()
                    continue
                session = self.sessionno
                self.sessionno = session + 1
                transport = self.transport(skt, protocol, addr, self, session, self.reactor)
                protocol.makeConnection(transport)
            if accepted == self.numberAccepts:
                self.numberAccepts += 20
            else:
                self.numberAccepts = max(1, accepted)
        except BaseException:
            # As tcp.Port.doRead: the port listens on.
            legacy_log.deferr()


def fast_accept(port: object) -> None:
    """
    Make C{port} a L{FastPort} when it is Twisted's C{tcp.Port} exactly
    (a plain or TLS listener from C{listenTCP}, C{adoptStreamPort} or an
    endpoint); any other port is left as it is.
    """
    if type(port) is tcp.Port:
        port.__class__ = FastPort


def fast_poll(reactor: object) -> Callable[[], None] | None:
    """
    Have C{reactor}, when it is Twisted's epoll reactor, hand each ready
    descriptor to C{_doReadOrWrite} directly instead of through
    C{twisted.python.log.callWithLogger}.  That wrapper builds a legacy
    log context (the connection's C{logPrefix}) around every read and
    write, for what the legacy C{twisted.python.log} API alone reads: a
    line it writes while a connection is being served says the
    connection's C{system} instead of C{-}.  The server logs through
    C{twisted.logger}, which does not read it; a traceback from a
    connection (which C{_doReadOrWrite} logs itself) says C{-}.  Anything
    C{_doReadOrWrite} lets out is logged, with the connection's prefix,
    as C{callWithLogger} logs it, and the pass goes on.

    @return: a call that puts Twisted's own loop back; L{None} (nothing
        done) for another reactor or one whose C{doPoll} is not Twisted's.
    """
    from twisted.internet import epollreactor

    if not isinstance(reactor, epollreactor.EPollReactor) or (
        type(reactor).doPoll is not epollreactor.EPollReactor.doPoll
        or type(reactor).doIteration is not epollreactor.EPollReactor.doIteration
        or "doIteration" in vars(reactor)
    ):
        return None
    epoll: Any = reactor  # (its private parts are untyped)
    selectables: dict[int, Any] = epoll._selectables

    def doPoll(timeout: float | None) -> None:
        # EPollReactor.doPoll, line for line, without callWithLogger.
        if timeout is None:
            timeout = -1
        try:
            events = epoll._poller.poll(timeout, len(selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        dispatch = epoll._doReadOrWrite
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            try:
                dispatch(selectable, fd, event)
            except KeyboardInterrupt:
                raise
            except BaseException:
                legacy_log.err(system=_log_prefix(selectable))

    epoll.doIteration = doPoll

    def undo() -> None:
        if vars(epoll).get("doIteration") is doPoll:
            del epoll.doIteration

    return undo


def _log_prefix(selectable: Any) -> str:
    try:
        return str(selectable.logPrefix())
    except Exception:
        return "(buggy logPrefix method)"


def generic_channel(channel: Any, site: server.Site) -> GenericHTTPChannelProtocol:
    """
    C{channel} in twisted.web's HTTP/2-switching wrapper, set up for
    C{site} as C{Site.buildProtocol} sets up C{site.protocol()} (through
    C{HTTPFactory.buildProtocol} and C{Factory.buildProtocol}): the
    channel's C{factory}, C{requestFactory}, C{site}, C{callLater} and
    C{timeOut}, and the wrapper's own copies of them (C{_factory}...),
    which it gives the C{H2Connection} it switches to; set directly, where
    that path sets each through one of the wrapper's properties.
    """
    channel.factory = site
    channel.requestFactory = site.requestFactory
    channel.site = site
    call_later = site.reactor.callLater
    channel.callLater = call_later
    channel.timeOut = site.timeOut
    wrapper = GenericHTTPChannelProtocol(channel)
    wrapper._factory = site
    wrapper._requestFactory = site.requestFactory
    wrapper._site = site
    wrapper._callLater = call_later
    wrapper._timeOut = site.timeOut
    return wrapper


def plain_channel(protocol: Any, transport: object) -> Any:
    """
    The channel inside C{protocol}, a L{GenericHTTPChannelProtocol}, when
    C{transport} is a plain TCP connection, which never negotiates
    HTTP/2 (the wrapper only switches when TLS's ALPN says C{h2}): what
    the connection's data can go to without passing through the wrapper.
    Else C{protocol}.
    """
    if type(protocol) is GenericHTTPChannelProtocol and type(transport) is tcp.Server:
        return protocol._channel
    return protocol
