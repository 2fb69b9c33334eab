# -*- test-case-name: tests.test_tickets -*-
"""
TLS session tickets: the key a listener encrypts them with.

A ticket is the server's session state, encrypted with a key only the
server holds, that the client presents to resume the session without a
full handshake.  Whoever holds the key can read the sessions of the
tickets it made (TLS 1.2) or pose as the server to their holders (TLS
1.3), so the key is new every L{KEY_SECONDS}: the key of a window is
forgotten once the window is over.

 - L{TicketKeys}: the key of each window, random, kept in a directory that
   every process naming it shares (the workers of one machine, and the
   server after a restart: a restart's reconnecting browsers then resume
   their sessions).  The first process that needs a window's key writes it
   (exclusively: the others read that one), and the keys of past windows
   are removed.
 - L{set_ticket_key}: gives a key to an OpenSSL context.  No public API of
   pyOpenSSL or cryptography does (C{SSL_CTX_set_tlsext_ticket_keys} is a
   macro over C{SSL_CTX_ctrl}, which neither binds), so this is the one
   private access: C{SSL_CTX_ctrl} of the OpenSSL that pyOpenSSL uses,
   found by the dynamic linker where cryptography links OpenSSL as a shared
   library, else in the symbol table of cryptography's extension module,
   which carries OpenSSL inside it.  It is used only after checks that
   read nothing that may not be there: the module in memory is that file,
   the function is in its code and its code is the file's, and a test
   context takes a key and gives the same key back
   (L{ticket_keys_settable}).  Without it (another build of cryptography),
   each context keeps the random key OpenSSL made for it: tickets still
   resume sessions within one process.

Nothing here runs per connection: a listener asks for a key once per
window (L{notificator.tls.ServerTLS}).
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import os
import re
import struct
from collections.abc import Callable
from typing import Any

from OpenSSL import SSL

from notificator import runas

#: How long one ticket key is used, in seconds; a ticket made with it
#: resumes sessions until its window ends.
KEY_SECONDS = 6 * 3600

#: The bytes of OpenSSL's ticket keys: a 16-byte name (that tickets carry),
#: a 32-byte HMAC-SHA256 key and a 32-byte AES-256 key.
KEY_BYTES = 80

_KEY_FILE = re.compile(r"^window-(\d+)\.key$")


class TicketKeys:
    """
    The ticket key of each window of L{KEY_SECONDS} since the epoch,
    shared through C{directory}: C{window-<n>.key}, L{KEY_BYTES} random
    bytes, mode 0600.  Every process that names the directory uses the
    same key in the same window, whichever wrote it.  A key that root
    writes or reads (before C{twistd --uid} switches users) is the
    directory's owner's (L{runas.open_in}): the server that runs as that
    user reads it later.

    @ivar directory: the directory (created, mode 0700, when missing).
    """

    def __init__(
        self,
        directory: str,
        seconds: float = KEY_SECONDS,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.directory = directory
        self.seconds = seconds
        self._random = random

    def window(self, now: float) -> int:
        """The window C{now} (seconds since the epoch) falls in."""
        return int(now // self.seconds)

    def window_end(self, window: int) -> float:
        """When C{window} ends."""
        return (window + 1) * self.seconds

    def key(self, window: int) -> bytes:
        """
        The key of C{window}: read from its file, or made and written if no
        process has yet (exclusively: of two processes writing at once, one
        file wins and both use it).  The files of earlier windows are
        removed.  A few system calls on a local file, once per window.

        @raise OSError: the directory cannot be made, written or read.
        """
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        path = os.path.join(self.directory, f"window-{window}.key")
        key = self._read(path)
        if key is None:
            key = self._write(path)
        self._forget(window)
        return key

    def _read(self, path: str) -> bytes | None:
        try:
            fd = runas.open_in(self.directory, os.path.basename(path), os.O_RDONLY)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as f:
            key = f.read(KEY_BYTES + 1)
        if len(key) != KEY_BYTES:
            # Not one of ours (written by hand, or cut short by a full
            # disk): replaced, as if there were none.
            os.unlink(path)
            return None
        return key

    def _write(self, path: str) -> bytes:
        """Write a new key to a file of its own, then link it as C{path} unless one is there."""
        key = self._random(KEY_BYTES)
        name = f".new-{os.getpid()}-{os.urandom(4).hex()}"
        temporary = os.path.join(self.directory, name)
        fd = runas.open_in(self.directory, name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(key)
            try:
                os.link(temporary, path)
            except FileExistsError:
                # Another process was first: its key is the window's.
                theirs = self._read(path)
                if theirs is None:
                    raise OSError(f"{path}: not a ticket key")
                return theirs
        finally:
            os.unlink(temporary)
        return key

    def _forget(self, window: int) -> None:
        """Remove the keys of windows before C{window}."""
        for name in os.listdir(self.directory):
            m = _KEY_FILE.match(name)
            if m is not None and int(m.group(1)) < window:
                try:
                    os.unlink(os.path.join(self.directory, name))
                except FileNotFoundError:
                    pass  # another process removed it first


# --- the private access: SSL_CTX_ctrl -----------------------------------------

#: C{SSL_CTX_ctrl} commands (OpenSSL's ssl.h, the same since 1.0).
_GET_TICKET_KEYS = 58
_SET_TICKET_KEYS = 59

_Ctrl = Callable[[int, int, int, Any], int]


def set_ticket_key(context: SSL.Context, key: bytes) -> None:
    """
    Make C{context} encrypt and decrypt session tickets with C{key}
    (L{KEY_BYTES} bytes) from its next handshake on.

    @raise RuntimeError: the key cannot be set here
        (L{ticket_keys_settable} says why), or OpenSSL refused it.
    """
    ctrl, why = _ctrl()
    if ctrl is None:
        raise RuntimeError(why)
    if len(key) != KEY_BYTES or ctrl(_pointer(context), _SET_TICKET_KEYS, len(key), key) != 1:
        raise RuntimeError("OpenSSL refused the ticket key")


def ticket_keys_settable() -> tuple[bool, str]:
    """
    Whether L{set_ticket_key} works with this process's OpenSSL: C{(True,
    "")}, or C{(False, <why not>)}.  Found out once.
    """
    ctrl, why = _ctrl()
    return ctrl is not None, why


def _pointer(context: SSL.Context) -> int:
    """The address of C{context}'s C{SSL_CTX} (pyOpenSSL keeps it as C{_context})."""
    from OpenSSL._util import ffi

    return int(ffi.cast("uintptr_t", context._context))


@functools.cache
def _ctrl() -> tuple[_Ctrl | None, str]:
    """C{SSL_CTX_ctrl}, checked; or L{None} and why not."""
    try:
        from cryptography.hazmat.bindings import _rust
    except ImportError as e:  # pragma: no cover - cryptography is a dependency
        return None, f"cryptography's bindings cannot be imported: {e}"
    path = str(getattr(_rust, "__file__", "") or "")
    try:
        # The module as loaded (RTLD_NOLOAD: never a second copy).
        library = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    except (OSError, AttributeError) as e:
        return None, f"{path or 'cryptography'} cannot be opened: {e}"
    try:
        address = _address(library, "SSL_CTX_ctrl")
    except AttributeError:
        # Not exported: OpenSSL is inside the module, its symbols hidden.
        try:
            address = _hidden_function(library, path, "SSL_CTX_ctrl", anchor="PyInit__rust")
        except (OSError, ValueError, AttributeError) as e:
            return None, f"SSL_CTX_ctrl not found in {path}: {e}"
    prototype = ctypes.CFUNCTYPE(
        ctypes.c_long, ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_char_p
    )
    ctrl: _Ctrl = prototype(address)
    if not _works(ctrl):
        return None, f"SSL_CTX_ctrl of {path} does not set ticket keys"
    return ctrl, ""


def _address(library: ctypes.CDLL, name: str) -> int:
    """The address of an exported function (C{AttributeError} if it is not)."""
    address = ctypes.cast(getattr(library, name), ctypes.c_void_p).value
    if not address:
        raise AttributeError(name)
    return address


def _hidden_function(
    library: ctypes.CDLL, path: str, name: str, anchor: str, loaded: str | None = None
) -> int:
    """
    The address in memory of C{name}, a function in the symbol table of the
    ELF file C{path} (64-bit little-endian) but not exported: where the
    exported C{anchor} is, less its offset in the file's symbol table, is
    where the module was loaded.  Nothing is read from memory that is not
    known to be there: the anchor's code (at the address the dynamic linker
    gives) must be the file's, the function's address must be in code
    mapped from that file (C{/proc/self/maps}), and its code there must be
    the file's too.

    @param loaded: the path the module was loaded from (C{path} itself
        unless a test passes a copy).
    @raise ValueError: not such a file, either symbol missing, or the
        module in memory is not this file (it was replaced since it was
        loaded).
    @raise OSError: the file or C{/proc/self/maps} cannot be read.
    """
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as elf:
        if elf[:6] != b"\x7fELF\x02\x01":
            raise ValueError("not a 64-bit little-endian ELF file")
        symbols = _symbols(elf, {name.encode(), anchor.encode()})
        if name.encode() not in symbols or anchor.encode() not in symbols:
            raise ValueError("no symbol table entry")
        anchored = _address(library, anchor)
        anchor_value, anchor_size = symbols[anchor.encode()]
        if not _same_code(elf, anchored, anchor_value, anchor_size):
            raise ValueError("the module in memory is not this file")
        base = anchored - anchor_value
        value, size = symbols[name.encode()]
        if not _mapped_code(loaded or path, base + value, size):
            raise ValueError(f"{name} is not in the module's code in memory")
        if not _same_code(elf, base + value, value, size):
            raise ValueError("the code in memory is not the file's")
    return base + value


def _same_code(elf: mmap.mmap, address: int, value: int, size: int) -> bool:
    """The first bytes (up to 32) of the function at C{address} are the file's at C{value}."""
    offset = _file_offset(elf, value)
    length = min(32, size)
    return length >= 8 and ctypes.string_at(address, length) == elf[offset : offset + length]


def _mapped_code(path: str, address: int, size: int) -> bool:
    """C{address} to C{address + size} is in a readable, executable mapping of C{path}."""
    real = os.path.realpath(path)
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) < 6 or fields[5].rstrip("\n") != real or "r-x" not in fields[1]:
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if start <= address and address + size <= end:
                return True
    return False


def _symbols(elf: mmap.mmap, names: set[bytes]) -> dict[bytes, tuple[int, int]]:
    """C{name -> (value, size)} of the functions among C{names} in C{.symtab}."""
    shoff = struct.unpack_from("<Q", elf, 0x28)[0]
    shentsize, shnum = struct.unpack_from("<HH", elf, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", elf, shoff + i * shentsize) for i in range(shnum)]
    found: dict[bytes, tuple[int, int]] = {}
    for _, kind, _, _, offset, size, link, _, _, entsize in sections:
        if kind != 2 or not entsize:  # SHT_SYMTAB
            continue
        strings = sections[link][4]
        # Where each name is in the string table, to compare numbers below.
        wanted = {}
        for name in names:
            at = elf.find(b"\0" + name + b"\0", strings, strings + sections[link][5])
            if at >= 0:
                wanted[at + 1 - strings] = name
        for i in range(size // entsize):
            st_name, st_info, _, _, st_value, st_size = struct.unpack_from(
                "<IBBHQQ", elf, offset + i * entsize
            )
            if st_name in wanted and st_info & 0xF == 2 and st_value:  # STT_FUNC
                found[wanted[st_name]] = (st_value, st_size)
    return found


def _file_offset(elf: mmap.mmap, address: int) -> int:
    """Where the loaded address C{address} is in the file (its PT_LOAD segment)."""
    phoff = struct.unpack_from("<Q", elf, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        kind, _, offset, vaddr, _, filesz, _, _ = struct.unpack_from(
            "<IIQQQQQQ", elf, phoff + i * phentsize
        )
        if kind == 1 and vaddr <= address < vaddr + filesz:  # PT_LOAD
            return int(address - vaddr + offset)
    raise ValueError("the symbol is in no loaded segment")


def _works(ctrl: _Ctrl) -> bool:
    """A test context takes a key, gives the same key back, and refuses a short one."""
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    pointer = _pointer(context)
    key = os.urandom(KEY_BYTES)
    back = ctypes.create_string_buffer(KEY_BYTES)
    return (
        ctrl(pointer, _GET_TICKET_KEYS, KEY_BYTES, back) == 1
        and ctrl(pointer, _SET_TICKET_KEYS, KEY_BYTES, key) == 1
        and ctrl(pointer, _GET_TICKET_KEYS, KEY_BYTES, back) == 1
        and back.raw == key
        and ctrl(pointer, _SET_TICKET_KEYS, KEY_BYTES - 1, key) == 0
    )
