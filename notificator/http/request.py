# -*- test-case-name: tests.test_http_request -*-
"""
The server's request (L{Request}: one class, for both channels), and the
limits on what one client can make the server hold (C{limits.*}).

L{Request} is twisted.web's request as the server's L{notificator.http.site.Site}
builds it (its C{requestFactory}); what it is held to, it reads from that
site (L{RequestSite}): the limits (L{Limits}), who may publish (the publish
policy, asked before the body is read), who is behind a trusted proxy (the
guard), HSTS, and whether the fast channel serves it.

 - The body: at most C{limits.bodyBytes} (C{Content-Length} larger: 413 as
   soon as the head is complete; a body without a length, chunked or
   HTTP/2 without C{content-length}: 413 as soon as it passes the limit),
   within C{limits.bodyTimeout} of the head (408; the clock is
   L{notificator.http.connections.Connections}'), and the bodies held in
   memory by all requests at once within C{limits.bodyMemory} (503).  Over
   HTTP/1.x the answer is written and the connection closed, over HTTP/2
   the stream is answered and then reset (C{RST_STREAM} with C{NO_ERROR},
   as RFC 9113 8.1 has a server end a request it will not read).  A body
   is kept in memory (twisted.web puts one over 100 KB, or without a
   length, in a temporary file: a descriptor per request), which the
   limits bound.  Only the hooks twisted.web's channels call on every
   request are overridden (C{gotLength} and C{parseCookies}, through
   L{notificator.http._twisted.RequestBase}, which says when the head is
   complete; C{handleContentChunk}, C{requestReceived}, C{connectionLost},
   C{finish}), so it serves with the stock C{HTTPChannel} and
   C{H2Connection} alike.
 - The client behind trusted proxies (L{Request.client_host}), the
   publish policy's answer before the body is read, and over TLS the
   C{Strict-Transport-Security} header on every response.
 - With the fast channel, an open event stream writes its frames through
   L{notificator.http._twisted.RequestBase.write_chunk} (L{frame_writer}).
 - The connections' clocks and cap (C{limits.headerTimeout},
   C{limits.bodyTimeout}, C{limits.connections}) are
   L{notificator.http.connections}'; the request starts and stops them.
 - The stream buffer (C{limits.bufferBytes}) is the stream's
   (L{notificator.http.stream.RequestStream}), which reads it from
   L{Limits}.

Everything runs on the clock given in; no global state.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from io import BytesIO
from typing import TYPE_CHECKING, Any, Protocol, cast

from twisted.internet.interfaces import IReactorTime, ISSLTransport, ITCPTransport
from twisted.logger import Logger
from twisted.web import server
from twisted.web.http import datetimeToString

from notificator import auth
from notificator.auth import UNKNOWN
from notificator.config import LimitsConfig
from notificator.http import _twisted, fast
from notificator.http.responses import error_body, json_headers
from notificator.stats import Stats

if TYPE_CHECKING:
    from notificator.http.connections import Connections

# The namespace it had before the moves of issue 18: it is part of
# every log line, and no log line changes.
_default_log = Logger("notificator.limits")


class Limits:
    """
    The configured limits, with what enforcing them needs: the clock, the
    counters and the log (C{sse.log}), and the connections' clocks.

    @ivar connections: the connections' clocks and cap
        (L{notificator.http.connections.Connections}); L{None}: none.
    @ivar arm: C{arm(transport)}: start the head clock of a connection.
    @ivar disarm: C{disarm(transport, None)}: stop it (a dict's C{pop}:
        this runs for every request).
    @ivar arm_body: C{arm_body(request)}: start the body clock of a request.
    @ivar body_done: C{body_done(request)}: stop it.
    @ivar abort_later: C{abort_later(transport)}: a connection being closed
        is aborted if it is still there C{limits.headerTimeout} later.
    @ivar body_memory: C{limits.bodyMemory}, the bound on the bytes of
        request bodies held in memory at once by every request of the site:
        L{Request} counts them in C{stats.body_bytes} as they arrive and
        gives them back when it ends, whichever way.
    @ivar stats: the server's counters (one of its own when none is given).
    @ivar retry_after: the C{Retry-After} of a 503 at C{limits.bodyMemory}:
        C{limits.bodyTimeout} in whole seconds, by when every body held at
        the refusal has ended.
    """

    __slots__ = (
        "body_bytes",
        "body_timeout",
        "buffer_bytes",
        "body_memory",
        "retry_after",
        "clock",
        "stats",
        "log",
        "connections",
        "arm",
        "disarm",
        "arm_body",
        "body_done",
        "abort_later",
        "_memory_refused",
        "_memory_logged_at",
    )

    def __init__(
        self,
        config: LimitsConfig,
        clock: IReactorTime,
        stats: Stats | None = None,
        log: Logger = _default_log,
        connections: Connections | None = None,
    ) -> None:
        self.body_bytes = config.body_bytes
        self.body_timeout = config.body_timeout
        self.buffer_bytes = config.buffer_bytes
        self.body_memory = config.body_memory
        self.retry_after = b"%d" % math.ceil(config.body_timeout)
        self._memory_refused = 0
        self._memory_logged_at: float | None = None
        self.clock = clock
        self.stats = stats if stats is not None else Stats(started_at=clock.seconds())
        self.log = log
        self.connections = connections
        self.arm: Callable[[Any], None]
        self.disarm: Callable[[Any, None], Any]
        self.arm_body: Callable[[Any], None]
        self.body_done: Callable[[Any], None]
        self.abort_later: Callable[[Any], None]
        if connections is not None:
            self.arm = connections.arm
            self.disarm = connections.disarm_pop
            self.arm_body = connections.arm_body
            self.body_done = connections.body_done
            self.abort_later = connections.abort_later
        else:
            self.arm = self.arm_body = self.body_done = self.abort_later = _nothing
            self.disarm = {}.pop

    def refused_body(self, request: Any, reason: str, code: int = 413) -> None:
        """Log and count a request body refused with C{code} (413; 408: too slow)."""
        self.stats.reject(code)
        self.log.warn(
            "refused a request from {peer}: {code} {reason}",
            peer=peer(request),
            code=code,
            reason=reason,
        )

    def refused_memory(self, request: Any, reason: str) -> None:
        """
        Count a request body refused at C{limits.bodyMemory} (503), and log
        it: a flood of them is one line every L{MEMORY_LOG_INTERVAL}
        seconds at most, with how many were refused since the last.
        """
        self.stats.reject(503)
        self._memory_refused += 1
        now = self.clock.seconds()
        logged = self._memory_logged_at
        if logged is None or now >= logged + MEMORY_LOG_INTERVAL:
            self._memory_logged_at = now
            self.log.warn(
                "refused a request from {peer}: 503 {reason}; {held} bytes of request bodies"
                " held; {refused} bodies refused for it since the previous such line (one"
                " every {interval:g} s at most)",
                peer=peer(request),
                reason=reason,
                held=self.stats.body_bytes,
                refused=self._memory_refused,
                interval=MEMORY_LOG_INTERVAL,
            )
            self._memory_refused = 0


#: Seconds between two log lines about C{limits.bodyMemory} being reached.
MEMORY_LOG_INTERVAL = 10.0


def _nothing(*args: Any) -> None:
    pass


def peer(request: Any) -> str:
    """
    The client's address as text, for the logs and the monitor: the
    request's C{client_host} (L{Request.client_host}: behind a trusted
    proxy, from X-Forwarded-For), else the host of the connection's peer.  An unknown
    client (L{UNKNOWN}: it came through a proxy that is not trusted, or its
    proxy named no address) is shown with the peer it came from: C{unknown
    via 127.0.0.1}.
    """
    if not isinstance(request, Request):
        return peer_host(request)
    client = request.client_host
    if client == UNKNOWN:
        return f"{UNKNOWN} via {peer_host(request)}"
    return str(client)


def client(request: Any) -> str:
    """
    The client's address for the allow lists: the request's C{client_host}
    (L{Request.client_host}: an address or L{UNKNOWN}), else (a request of
    another class: test doubles) the host of the connection's peer.
    """
    return request.client_host if isinstance(request, Request) else peer_host(request)


def peer_host(request: Any) -> str:
    """The host of the connection's peer as text (the address for other transports)."""
    return _host(request.getClientAddress())


def _host(addr: Any) -> str:
    host = getattr(addr, "host", None)
    return str(host) if host is not None else str(addr)


_X_FORWARDED_FOR = _twisted.canonical_name(b"x-forwarded-for")
_FORWARDED = _twisted.canonical_name(b"forwarded")

#: After a refused body, this many times C{limits.bodyBytes} more are read
#: and dropped at most (L{Request._linger}).
LINGER_BODIES = 8

#: The reason phrase of 413 (RFC 9110 15.5.14).
_TOO_LARGE = b"Content Too Large"

#: The reason phrase of 408 (RFC 9110 15.5.9).
_TIMEOUT = b"Request Timeout"

#: The reason phrase of 503 (RFC 9110 15.6.4).
_UNAVAILABLE = b"Service Unavailable"


class HTTPDate:
    """
    The value of the C{Date} header now, as twisted.web's
    C{datetimeToString()} gives it (it reads C{time.time}), formatted once
    a second rather than for every response
    (L{notificator.http._twisted.RequestBase.process} asks the site's).
    """

    __slots__ = ("_clock", "_second", "_value")

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._second: int | None = None
        self._value = b""

    def __call__(self) -> bytes:
        second = int(self._clock())
        if second != self._second:
            # (gmtime, which twisted.web's formats, drops the fraction too.)
            self._value = datetimeToString(second)
            self._second = second
        return self._value


class RequestSite(server.Site):
    """
    What a L{Request} reads of the site that made it (twisted.web gives it
    as C{channel.site}): L{notificator.http.site.Site} sets these in its
    constructor.

    @ivar limits: the limits its requests are held to; L{None}: none.
    @ivar guard: who is behind a trusted proxy (L{Request.client_host});
        L{None}: no client behind a proxy is known.
    @ivar gate: asked when a request's head is complete (L{EarlyGate});
        L{None}: nobody is answered before the body is read.
    @ivar hsts: the C{Strict-Transport-Security} value of its responses
        over TLS (L{hsts_header}); L{None}: none.
    @ivar fast_channel: it serves HTTP/1.1 with
        L{notificator.http.fast.Channel} (C{server.fastChannel}).
    @ivar http_date: the C{Date} of its responses (L{HTTPDate});
        L{None}: twisted.web's, formatted for each.
    """

    limits: Limits | None = None
    guard: auth.Guard | None = None
    gate: EarlyGate | None = None
    hsts: bytes | None = None
    fast_channel = False
    http_date: HTTPDate | None = None

    def log_answered_early(self, request: Request, code: int, sent: int) -> None:
        """
        Write the access-log line of a request answered before its body was
        read (L{Request.answer_early}: the publish gate's 403, every 413,
        any other early answer), which never reaches C{finish()}, where
        twisted.web writes the line: C{code} and the C{sent} bytes of body,
        and the method, path and protocol read from its channel
        (twisted.web sets them on the request only once the body is read:
        L{notificator.http._twisted.request_target}).
        """
        target = _twisted.request_target(request)
        if target is not None:
            request.method, request.uri = target
        version = _twisted.request_version(request)
        if version is not None:
            request.clientproto = version
        request.code = code
        request.sentLength = sent
        self.log(request)


class EarlyGate(Protocol):
    """What answers a request when its head is complete, before its body is read."""

    def before_body(self, request: Request) -> None:
        """Answer C{request} now (L{Request.answer_early}) if it is refused."""


class Request(_twisted.RequestBase):
    """
    The server's twisted.web request, with either channel: it reads at most
    C{limits.bodyBytes} of body, holds what it reads against
    C{limits.bodyMemory}, and does not parse form bodies into
    C{request.args} (the publish endpoint reads the raw body, see
    L{notificator.ingest}: twisted.web's form parsing cost about a fifth of
    a publish); query strings are still parsed.  It knows its client
    behind trusted proxies (L{client_host}), asks its site's publish gate
    before the body is read (L{head_received}), and over TLS carries the
    site's C{Strict-Transport-Security} on every response.

    What it is held to is its site's (L{RequestSite}, the channel's
    C{site}, kept as L{site} from the start: twisted.web sets it only when
    the request is processed); a site without limits (C{limits} L{None})
    limits nothing.  Each chunk of body is counted as it arrives into the
    server's total (C{stats.body_bytes}), and what the request's
    C{content} holds is given back when the request ends, whichever way:
    answered (L{finish}), refused (L{ignore_body}), reset or lost
    (L{connectionLost}), or its body let go early (L{drop_body}, for an
    event stream that stays open).  Every request keeps the attributes of
    an event stream's (see C{__init__}).

    @ivar site: the site that made it.
    """

    site: RequestSite
    #: The request was answered before its body was read (L{ignore_body}).
    refused = False
    _lingering = False
    # Bytes read and dropped after a refusal (L{_linger}).
    _dropped = 0
    # Set when the publish gate let it through before its body was read.
    publisher_checked = False
    _client_host: str | None = None

    def __init__(self, channel: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["parsePOSTFormSubmission"] = False
        super().__init__(channel, *args, **kwargs)
        # What an event stream's request gets later (its first write, its
        # producer, its site), set now to the same values, so that every
        # request starts with the same attributes in the same order:
        # Python then keeps a stream's attributes in the class's shared
        # dict (about 300 bytes).  A request that adds attributes in
        # another order, or more than about 30, gets a dict of its own
        # (about 1.6 KB); which request came first would otherwise decide.
        self.startedWriting = 0
        self.chunked = 0
        self.sentLength = 0
        self.streamingProducer = False
        self.producer = None
        site = self.site = channel.site
        self._client_host = None
        hsts = site.hsts
        if hsts is not None and self.isSecure():
            # Set first, so every answer has it: refusals, streams, and
            # what is answered before the body is read.
            self.responseHeaders.setRawHeaders(b"strict-transport-security", [hsts])

    @property
    def client_host(self) -> str:
        """
        The client's address (L{auth.Guard.client_address}), for the allow
        lists, the logs and the monitor: the connection's peer, unless the
        request carries C{X-Forwarded-For} or C{Forwarded}; then, from a
        trusted proxy (C{server.trustedProxies}), the client its
        X-Forwarded-For names, and from any other peer L{auth.UNKNOWN}
        (also on a site without a guard).  Neither header: two dictionary
        lookups, nothing parsed.
        """
        client = self._client_host
        if client is None:
            client = peer_host(self)
            headers = self.requestHeaders
            forwarded_for = _twisted.header_values(headers, _X_FORWARDED_FOR)
            forwarded = _twisted.header_values(headers, _FORWARDED)
            if forwarded_for is not None or forwarded is not None:
                guard = self.site.guard
                client = (
                    auth.UNKNOWN
                    if guard is None
                    else guard.client_address(client, forwarded_for, forwarded)
                )
            self._client_host = client
        return client

    def head_received(self, length: int | None) -> None:
        """
        The head is complete (L{notificator.http._twisted.RequestBase}:
        over HTTP/2 not before every header is on the request), the body not
        read: a publisher that may not publish is answered now (the site's
        gate: 403, whatever its length); then stop the head's clock, and
        start the body's if a body is to come; refuse an announced body over
        C{limits.bodyBytes} (413), or larger than the room
        C{limits.bodyMemory} has left (503).  None of those bodies is read.
        The body is kept in memory (the limits bound it), not in
        twisted.web's temporary file for one over 100 KB or without a
        length.
        """
        site = self.site
        gate = site.gate
        if gate is not None:
            gate.before_body(self)
            if self.refused:
                return
        limits = site.limits
        if limits is None:
            server.Request.gotLength(self, length)
            return
        if length:  # None: counted against both limits as it comes; 0: no body
            if length > limits.body_bytes:
                self._refuse(
                    f"request body of {length} bytes is larger than limits.bodyBytes"
                    f" ({limits.body_bytes})"
                )
                return
            if length > limits.body_memory - limits.stats.body_bytes:
                # Not reserved: only bytes that come are held.  One that
                # cannot fit now is told so before it sends them.
                self._refuse_memory()
                return
        limits.disarm(self.transport, None)
        if length != 0:
            limits.arm_body(self)
        self.content = BytesIO()

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        """
        The body is complete: stop its clock; then as twisted.web's.  A
        request answered before its body was read (L{ignore_body}) is
        never processed.
        """
        if self.refused:
            return
        limits = self.site.limits
        if limits is not None:
            limits.body_done(self)
        _twisted.RequestBase.requestReceived(self, command, path, version)

    def connectionLost(self, reason: Any) -> None:
        """
        The client left (or reset its HTTP/2 stream): stop the body clock and
        give the body's bytes back; then as twisted.web's.
        """
        limits = self.site.limits
        if limits is not None:
            limits.body_done(self)
            self._give_back(limits)
        server.Request.connectionLost(self, reason)

    def body_timed_out(self) -> None:
        """
        The body is not complete C{limits.bodyTimeout} seconds after the head
        (the connections' body clock calls this): 408 (logged and counted),
        now, as L{answer_early} answers.
        """
        limits = self.site.limits
        assert limits is not None
        reason = f"request body not complete within limits.bodyTimeout ({limits.body_timeout:g} s)"
        limits.refused_body(self, reason, 408)
        self.answer_early(408, _TIMEOUT, reason)

    def handleContentChunk(self, data: bytes) -> None:
        """
        A chunk of the body: kept, and counted against C{limits.bodyBytes}
        and C{limits.bodyMemory}; one that would pass either refuses the
        body (413, 503).  (A body with an announced length cannot pass the
        first: the channel hands in no more than it.)
        """
        # (HTTPChannel's decoders hold this bound method from before
        # gotLength: it cannot be swapped per request.)
        if self.refused:
            self._refused_chunk(data)
            return
        limits = self.site.limits
        if limits is None:
            server.Request.handleContentChunk(self, data)
            return
        # What is in content is what was counted: written in order, and
        # read only once the body is complete.
        content: BytesIO = self.content  # type: ignore[assignment]
        size = len(data)
        if content.tell() + size > limits.body_bytes:
            self._refuse(f"request body larger than limits.bodyBytes ({limits.body_bytes})")
            return
        stats = limits.stats
        total = stats.body_bytes + size
        if total > limits.body_memory:
            self._refuse_memory()
            return
        stats.body_bytes = total
        content.write(data)

    def _refused_chunk(self, data: bytes) -> None:
        """A chunk of a refused body: dropped (and, lingering, counted: L{_linger})."""
        if self._lingering:
            limits = self.site.limits
            assert limits is not None  # lingers only with limits (_linger)
            self._dropped += len(data)
            if self._dropped > LINGER_BODIES * limits.body_bytes:
                # Lingering is plain TCP only (answer_early).
                cast(ITCPTransport, self.transport).abortConnection()

    def finish(self) -> None:
        """
        As twisted.web's; the connection's head clock starts again first, so
        that a next request already received (pipelined), which the
        channel reads in C{finish}, stops it.
        """
        limits = self.site.limits
        if limits is not None:
            # Answered: its body goes with it (_give_back, inline: this runs
            # for every request).
            content = self.content
            if content is not None and not content.closed:
                limits.stats.body_bytes -= content.seek(0, 2)
                content.close()
            transport = self.transport
            if transport is not None and self.channel is not None:
                limits.arm(transport)
        server.Request.finish(self)

    def _refuse(self, reason: str) -> None:
        """Refuse the body with 413 (logged and counted), now."""
        limits = self.site.limits
        assert limits is not None
        limits.refused_body(self, reason)
        self.answer_early(413, _TOO_LARGE, reason)

    def _refuse_memory(self) -> None:
        """
        Refuse the body with 503 and a C{Retry-After} (counted, and logged at
        most every L{MEMORY_LOG_INTERVAL} seconds), now: it would take the
        bodies held in memory past C{limits.bodyMemory}.
        """
        limits = self.site.limits
        assert limits is not None
        reason = (
            f"request bodies held in memory would pass limits.bodyMemory"
            f" ({limits.body_memory} bytes); retry later"
        )
        limits.refused_memory(self, reason)
        self.responseHeaders.setRawHeaders(b"retry-after", [limits.retry_after])
        self.answer_early(503, _UNAVAILABLE, reason)

    def answer_early(self, code: int, phrase: bytes, reason: str) -> None:
        """
        Answer C{code} with C{reason} now (the JSON answer of every refusal:
        L{notificator.http.responses.error_body} and
        L{notificator.http.responses.json_headers}, after the headers the
        request was given, with C{Connection: close} over HTTP/1.x), before
        the body is read,
        and stop reading this request: over HTTP/1.x write the answer and
        close the connection (lingering, L{_linger}, over plain TCP); over
        HTTP/2 answer the stream once it is set up (after this reactor turn)
        and reset it.  What else arrives for it is read past, and it is
        never processed.  (The 413 of a body over the limit, the 408 of a
        body too slow, the 503 at C{limits.bodyMemory}; the publish gate's
        403.)  No C{100 Continue} goes after it.  Its C{access.log} line is
        written with the answer (the site's C{log_answered_early}); over
        HTTP/2, a stream the client reset before the answer was written got
        none and gets no line.
        """
        self.ignore_body()
        body = error_body(reason)
        site = self.site
        limits = site.limits
        channel = self.channel
        # The channel sends "100 Continue" after the head when asked: not
        # after this answer (over HTTP/1.x and HTTP/2 alike).
        self.requestHeaders.removeHeader(b"expect")
        if self.transport is not None:
            # HTTP/1.x, in the middle of reading the head or the body: the
            # request was not read, so the answer is written as it goes on
            # the wire.
            channel.write(
                b"HTTP/1.1 %d %s\r\n%s%sConnection: close\r\n\r\n%s"
                % (
                    code,
                    phrase,
                    self._headers_so_far(),
                    b"".join(b"%s: %s\r\n" % header for header in json_headers(body)),
                    body,
                )
            )
            site.log_answered_early(self, code, len(body))
            transport = self.transport
            if (
                limits is not None
                and limits.connections is not None
                and ITCPTransport.providedBy(transport)
                and not ISSLTransport.providedBy(transport)
            ):
                self._linger(channel, transport, limits)
            else:
                channel.loseConnection()
                if limits is not None:
                    # A TLS close waits for the client's close_notify.
                    limits.abort_later(transport)
        elif limits is not None:
            # An HTTP/2 stream (its channel has no transport): called from
            # inside the stream's constructor, it cannot write yet.
            limits.clock.callLater(0, self._answer_stream, code, phrase, body)

    def _headers_so_far(self) -> bytes:
        """
        The response headers the request was given before it was read
        (C{Strict-Transport-Security} over TLS), as header lines.
        """
        return b"".join(
            b"%s: %s\r\n" % (name, value)
            for name, values in self.responseHeaders.getAllRawHeaders()
            for value in values
        )

    def _linger(self, channel: Any, transport: Any, limits: Limits) -> None:
        """
        Close as RFC 9112 (9.6) advises a server that answers before the
        body is read: the answer, then our half of the connection (a FIN),
        while what the client still sends is read and dropped, until it
        closes, the head clock ends it (C{limits.headerTimeout}), or
        L{LINGER_BODIES} times C{limits.bodyBytes} more came (then it is
        aborted).  A client that sends its whole body before it reads
        then gets the answer, not a reset that loses it.  Plain TCP only:
        a TLS connection is closed at once.
        """
        if isinstance(channel, fast.Channel):
            # The fast channel keeps a reactor pass's writes until its end.
            channel.sendPending()
        self._lingering = True
        transport.loseWriteConnection()
        limits.arm(transport)

    def ignore_body(self) -> None:
        """
        This request was answered before its body was read: what the channel
        still hands it of the body is dropped, and it is never processed
        (L{requestReceived}).
        """
        self.refused = True
        limits = self.site.limits
        if limits is not None:
            limits.body_done(self)
        self.drop_body()

    def drop_body(self) -> None:
        """
        Let go of the body read so far (it is not needed, or no longer: an
        event stream that stays open) and give its bytes back to
        C{limits.bodyMemory}.
        """
        content = self.content
        if content is not None:
            # Freed with the last reference to it (this one).
            self.content = None
            limits = self.site.limits
            if limits is not None and not content.closed:
                limits.stats.body_bytes -= content.seek(0, 2)

    def _give_back(self, limits: Limits) -> None:
        """
        Take what the request's body holds (its C{content}) off
        C{stats.body_bytes}, and close it: it is not read again (and
        twisted.web closes it too, when the request ends).  Once only.
        """
        content = self.content
        if content is not None and not content.closed:
            limits.stats.body_bytes -= content.seek(0, 2)
            content.close()

    def _answer_stream(self, code: int, phrase: bytes, body: bytes) -> None:
        channel = self.channel
        if channel is None:  # the client reset the stream meanwhile
            return
        # With the headers it was given before it was read (HSTS).
        headers = self.responseHeaders.copy()
        for name, value in json_headers(body):
            headers.setRawHeaders(name, [value])
        channel.writeHeaders(b"HTTP/2", b"%d" % code, phrase, headers)
        channel.write(body)
        self.site.log_answered_early(self, code, len(body))
        limits = self.site.limits
        assert limits is not None
        # The data frame leaves in this turn when the connection is idle,
        # else in the next; the reset follows it.
        limits.clock.callLater(0, self._reset_stream)

    def _reset_stream(self) -> None:
        _twisted.h2_reset(self)


def frame_writer(request: server.Request) -> Callable[[bytes], None]:
    """
    What an open event stream on C{request} writes its frames with, chosen
    once per stream: with the fast channel
    (C{server.fastChannel}) the shorter write of
    L{notificator.http._twisted.RequestBase.write_chunk}; else (the stock
    channel, or a request of another class: test doubles) twisted.web's
    C{write}.
    """
    if isinstance(request, Request) and request.site.fast_channel:
        return request.write_chunk
    return request.write


def hsts_header(seconds: int | None) -> bytes | None:
    """
    The C{Strict-Transport-Security} value for C{server.hsts}: L{None} for
    L{None} (none is sent); for 0, C{max-age=0}, which tells browsers to
    forget one they were sent before.
    """
    return None if seconds is None else b"max-age=%d" % (seconds,)
