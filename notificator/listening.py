# -*- test-case-name: tests.test_listening -*-
"""
What the listeners bind, decided and checked before twistd daemonizes.

 - L{ipv6_mode}: how C{server.host ""} ("every interface") listens on this
   host: one IPv6 socket on C{::} that takes IPv4 too (dual-stack, Linux's
   default), an IPv4 and an IPv6 socket side by side (where IPv6 sockets
   are IPv6-only), or IPv4 only (no IPv6 on this host).
 - L{check_free}: binds (without listening) and closes a socket as the
   listener will, so a port that is in use, a privileged port or an
   address this host does not have stops start-up with one line naming the
   endpoint, the port and the reason, in the foreground and daemonized
   alike (once twistd has forked, only the first 100 bytes of an error
   reach the terminal).

Strports descriptions are read here, and only here, with a small parser of
their public syntax (C{type:positional:key=value}, C{\\} escaping the next
character), not with Twisted's private one: L{split_description} splits
one, L{arguments} names its arguments as the type's parser would, and
L{tcp_address} reads where it binds.  Whoever else needs to know what a
description says (C{tap}'s backlog and TLS settings, the cluster node's
default name, the workers' listeners) asks these.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable

#: L{ipv6_mode} answers.
DUAL = "dual"
SEPARATE = "separate"
IPV4_ONLY = "ipv4"

# Endpoint types that bind a TCP port, with their default interface.
_TCP_TYPES = {"tcp": "", "tcp6": "::", "ssl": "", "https": ""}

#: The arguments of the endpoint types read here, in the order their parsers
#: take them positionally: Twisted's C{tcp:}, C{tcp6:}, C{ssl:} and C{unix:}
#: parsers, and L{notificator.tls.https_listener} for C{https:}.
_POSITIONAL = {
    "tcp": ("port", "interface", "backlog"),
    "tcp6": ("port", "backlog", "interface"),
    "ssl": (
        "port",
        "privateKey",
        "certKey",
        "sslmethod",
        "interface",
        "backlog",
        "extraCertChain",
        "dhParameters",
    ),
    "unix": ("address", "mode", "backlog", "lockfile"),
    "https": (
        "port",
        "privateKey",
        "certKey",
        "extraCertChain",
        "alpn",
        "interface",
        "backlog",
        "ciphers",
        "tickets",
        "ticketKeys",
    ),
}


def ipv6_mode(make_socket: Callable[..., socket.socket] = socket.socket) -> str:
    """
    How to listen on every interface here: L{DUAL} when a new IPv6 socket
    also accepts IPv4 (C{IPV6_V6ONLY} off, C{net.ipv6.bindv6only=0}),
    L{SEPARATE} when IPv6 sockets are IPv6-only, L{IPV4_ONLY} when this
    host cannot make an IPv6 socket at all.  Nothing is bound.
    """
    try:
        probe = make_socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        return IPV4_ONLY
    try:
        v6only = probe.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
    except OSError:
        return IPV4_ONLY
    finally:
        probe.close()
    return SEPARATE if v6only else DUAL


def all_interfaces(mode: str) -> list[str]:
    """
    The interfaces to bind for "every interface" in L{ipv6_mode} C{mode}:
    C{["::"]}, C{["0.0.0.0", "::"]} or C{["0.0.0.0"]}.
    """
    return {DUAL: ["::"], SEPARATE: ["0.0.0.0", "::"], IPV4_ONLY: ["0.0.0.0"]}[mode]


def split_description(description: str) -> tuple[str, list[str], dict[str, str]]:
    """
    C{"tcp:port=3000:interface=\\:\\:1"} -> C{("tcp", [], {"port": "3000",
    "interface": "::1"})}: the type (lower-cased), positional and keyword
    arguments of a strports description.
    """
    fields: list[str] = []
    current: list[str] = []
    keyed: list[bool] = []
    has_equals = False
    i = 0
    while i < len(description):
        c = description[i]
        if c == "\\" and i + 1 < len(description):
            current.append("\0" if description[i + 1] == "=" else description[i + 1])
            i += 2
            continue
        if c == ":":
            fields.append("".join(current))
            keyed.append(has_equals)
            current, has_equals = [], False
        else:
            has_equals = has_equals or c == "="
            current.append(c)
        i += 1
    fields.append("".join(current))
    keyed.append(has_equals)
    args: list[str] = []
    kwargs: dict[str, str] = {}
    for field, is_keyed in zip(fields[1:], keyed[1:], strict=True):
        if is_keyed:
            key, _, value = field.partition("=")
            kwargs[key] = value.replace("\0", "=")
        else:
            args.append(field.replace("\0", "="))
    return fields[0].strip().lower(), args, kwargs


def arguments(description: str) -> tuple[str, dict[str, str]]:
    """
    C{"tcp:3000:127.0.0.1:backlog=5"} -> C{("tcp", {"port": "3000",
    "interface": "127.0.0.1", "backlog": "5"})}: the type (lower-cased) and
    the arguments of a strports description by name, its positional ones
    named as the type's parser names them (for C{tcp}, C{tcp6}, C{ssl},
    C{unix} and C{https}; other types: their keyword arguments only).  What
    the parser would refuse (too many positional arguments, one given twice)
    is left to it.
    """
    kind, args, kwargs = split_description(description)
    # (strict=False: more positional arguments than names is the parser's error)
    named = dict(zip(_POSITIONAL.get(kind, ()), args, strict=False))
    named.update(kwargs)
    return kind, named


def tcp_address(description: str) -> tuple[str, int] | None:
    """
    The (interface, port) a C{tcp:}, C{tcp6:}, C{ssl:} or C{https:}
    description binds (interface C{""} is every IPv4 interface); L{None}
    for other types and for descriptions that do not say (a parse error is
    left to the endpoint parser).
    """
    kind, named = arguments(description)
    if kind not in _TCP_TYPES:
        return None
    port_text = named.get("port")
    try:
        port = int(port_text) if port_text is not None else -1
    except ValueError:
        return None
    if not 0 <= port <= 65535:
        return None
    return named.get("interface", _TCP_TYPES[kind]), port


#: Where Linux says the lowest port a process may bind without
#: C{CAP_NET_BIND_SERVICE} (C{net.ipv4.ip_unprivileged_port_start}).
UNPRIVILEGED_PORT_START = "/proc/sys/net/ipv4/ip_unprivileged_port_start"


def first_unprivileged_port(path: str = UNPRIVILEGED_PORT_START) -> int:
    """
    The lowest port a process without C{CAP_NET_BIND_SERVICE} may bind:
    C{net.ipv4.ip_unprivileged_port_start}, else 1024 (the rule of every
    Unix).
    """
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 1024


def describe(interface: str, port: int) -> str:
    """C{"127.0.0.1 port 3000"}, C{"every interface (::) port 3000"} ..."""
    if interface in ("", "0.0.0.0"):
        where = "every IPv4 interface (0.0.0.0)"
    elif interface == "::":
        where = "every interface (::)"
    else:
        where = interface
    return f"{where} port {port}"


class PortUnavailable(Exception):
    """
    A listener cannot bind.  C{str()} is one line: where, the endpoint and
    the reason.
    """

    def __init__(self, description: str, interface: str, port: int, reason: str) -> None:
        super().__init__(description, interface, port, reason)
        self.description = description
        self.interface = interface
        self.port = port
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot listen on {describe(self.interface, self.port)} ({self.description}): {self.reason}"


_HINTS = {
    errno.EADDRINUSE: "another program is listening there (stop it, or choose another port)",
    errno.EACCES: "ports below 1024 need root (start as root with --uid, or use a higher port)",
    errno.EADDRNOTAVAIL: "this host has no such address",
}

#: With C{server.workers} above 1, C{--uid} is no way to a privileged port
#: (the workers bind after the switch, without capabilities).
_WORKERS_EACCES = (
    "ports below 1024 need CAP_NET_BIND_SERVICE with server.workers (start as the"
    ' service user with it, docs/operations.rst "Workers and ports below 1024",'
    " or use a higher port)"
)


def check_free(
    description: str,
    make_socket: Callable[..., socket.socket] = socket.socket,
    workers: bool = False,
) -> None:
    """
    Bind and close a socket where C{description} will listen (with
    C{SO_REUSEADDR}, as Twisted's listeners do, so connections of an
    earlier run in TIME_WAIT do not count; no C{listen()}, so no client can
    connect to it).  Port 0 and non-TCP types are not checked.

    @param workers: the port is for C{server.workers} above 1, whose
        answer to a privileged port is the capability, not C{--uid}.
    @raise PortUnavailable: the port is in use, privileged, or the address
        is not this host's.
    """
    address = tcp_address(description)
    if address is None or address[1] == 0:
        return
    interface, port = address
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    try:
        sock = make_socket(family, socket.SOCK_STREAM)
    except OSError as e:
        raise PortUnavailable(description, interface, port, e.strerror or str(e))
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((interface, port))
    except OSError as e:
        reason = e.strerror or str(e)
        hint = _WORKERS_EACCES if workers and e.errno == errno.EACCES else _HINTS.get(e.errno or 0)
        raise PortUnavailable(description, interface, port, f"{reason}: {hint}" if hint else reason)
    finally:
        sock.close()
