"""
Tests for L{notificator.tickets}: the ticket keys shared through a
directory, and the one private access (C{SSL_CTX_ctrl}) against the real
OpenSSL that pyOpenSSL uses here.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable

from OpenSSL import SSL
from twisted.trial.unittest import SynchronousTestCase

from notificator import tickets, tls
from tests.tlssupport import Certs, handshake


class TicketKeysTests(SynchronousTestCase):
    """L{tickets.TicketKeys}: one key per window, shared through files."""

    def setUp(self) -> None:
        self.dir = os.path.join(os.path.abspath(self.mktemp()), "keys")

    def test_written_once_and_shared(self) -> None:
        """The first key of a window is written (0600, in a 0700 folder); every reader gets it."""
        key = tickets.TicketKeys(self.dir).key(7)
        self.assertEqual(len(key), tickets.KEY_BYTES)
        path = os.path.join(self.dir, "window-7.key")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(self.dir).st_mode) & 0o077, 0)
        self.assertEqual(tickets.TicketKeys(self.dir).key(7), key)
        self.assertEqual(os.listdir(self.dir), ["window-7.key"])

    def test_next_window_new_key_old_one_removed(self) -> None:
        """A new window gets a new key, and the keys of earlier windows are removed."""
        keys = tickets.TicketKeys(self.dir)
        first = keys.key(7)
        second = keys.key(8)
        self.assertNotEqual(first, second)
        self.assertEqual(os.listdir(self.dir), ["window-8.key"])

    def test_first_writer_wins(self) -> None:
        """Of two processes making a window's key at once, both use the one written first."""
        theirs = tickets.TicketKeys(self.dir)

        def random_after_another_wrote(n: int) -> bytes:
            # Between our look (no file) and our write, the other writes.
            self.other = theirs.key(7)
            return os.urandom(n)

        ours = tickets.TicketKeys(self.dir, random=random_after_another_wrote).key(7)
        self.assertEqual(ours, self.other)
        self.assertEqual(os.listdir(self.dir), ["window-7.key"])

    def test_bad_file_replaced(self) -> None:
        """A file that is not a key (a wrong length) is replaced by a new key."""
        os.makedirs(self.dir)
        with open(os.path.join(self.dir, "window-7.key"), "wb") as f:
            f.write(b"short")
        key = tickets.TicketKeys(self.dir).key(7)
        self.assertEqual(len(key), tickets.KEY_BYTES)
        self.assertEqual(tickets.TicketKeys(self.dir).key(7), key)

    def test_unusable_directory(self) -> None:
        """A directory that cannot be made raises OSError."""
        blocker = os.path.abspath(self.mktemp())
        with open(blocker, "w"):
            pass
        self.assertRaises(OSError, tickets.TicketKeys(os.path.join(blocker, "keys")).key, 7)


class SetTicketKeyTests(SynchronousTestCase):
    """
    L{tickets.set_ticket_key} on the real library: the checks pass here,
    and a key set on two contexts resumes on one the sessions of the other.
    """

    def setUp(self) -> None:
        self.certs = Certs(self)

    def server(self, key: bytes | None) -> SSL.Connection:
        context = tls.load(self.certs.key, self.certs.cert).context()
        if key is not None:
            tickets.set_ticket_key(context, key)
        return SSL.Connection(context, None)

    def test_settable_here(self) -> None:
        """With this build of cryptography, ticket keys can be set (else tickets stay per process)."""
        self.assertEqual(tickets.ticket_keys_settable(), (True, ""))

    def test_same_key_resumes_across_contexts(self) -> None:
        """A ticket made by one context resumes on another given the same key, TLS 1.2 and 1.3."""
        key = os.urandom(tickets.KEY_BYTES)
        for version in (SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION):
            first = handshake(self.server(key), self.certs.ca, max_version=version)
            again = handshake(self.server(key), self.certs.ca, resume=first)
            self.assertTrue(again.reused, version)

    def test_other_key_does_not_resume(self) -> None:
        """A context with another key (or OpenSSL's own) does not resume it: a full handshake."""
        first = handshake(self.server(os.urandom(tickets.KEY_BYTES)), self.certs.ca)
        for key in (os.urandom(tickets.KEY_BYTES), None):
            again = handshake(self.server(key), self.certs.ca, resume=first)
            self.assertFalse(again.reused)

    def test_wrong_length_refused(self) -> None:
        """A key of the wrong length is refused, not half used."""
        context = tls.load(self.certs.key, self.certs.cert).context()
        e = self.assertRaises(
            RuntimeError, tickets.set_ticket_key, context, bytes(tickets.KEY_BYTES - 1)
        )
        self.assertIn("refused", str(e))


class HiddenFunctionTests(SynchronousTestCase):
    """The checks before a hidden function is called refuse what they are for."""

    def setUp(self) -> None:
        from cryptography.hazmat.bindings import _rust

        self.path = str(_rust.__file__)
        import ctypes

        self.library = ctypes.CDLL(self.path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
        try:
            tickets._address(self.library, "SSL_CTX_ctrl")
        except AttributeError:
            pass
        else:  # pragma: no cover - a cryptography linked to a shared libssl
            self.skipTest("SSL_CTX_ctrl is exported here: nothing is hidden to find")

    def copy(self, change: Callable[[bytearray, int], None] | None = None) -> str:
        """The module's file, copied, with C{change(data, offset of SSL_CTX_ctrl)} applied."""
        data = bytearray(open(self.path, "rb").read())
        if change is not None:
            import mmap

            with open(self.path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                value, _ = tickets._symbols(m, {b"SSL_CTX_ctrl"})[b"SSL_CTX_ctrl"]
                offset = tickets._file_offset(m, value)
            change(data, offset)
        path = os.path.abspath(self.mktemp())
        with open(path, "wb") as f:
            f.write(data)
        return path

    def find(self, path: str, anchor: str = "PyInit__rust") -> int:
        """Find SSL_CTX_ctrl with C{path} as the file of the module in memory."""
        return tickets._hidden_function(
            self.library, path, "SSL_CTX_ctrl", anchor, loaded=self.path
        )

    def test_found_in_the_loaded_file(self) -> None:
        """The file as loaded: found, and its code in memory is the file's."""
        self.assertEqual(self.find(self.copy()), self.find(self.path))

    def test_other_code_refused(self) -> None:
        """A file whose function differs from what is in memory is refused."""

        def flip(data: bytearray, offset: int) -> None:
            data[offset + 8] ^= 0xFF

        e = self.assertRaises(ValueError, self.find, self.copy(flip))
        self.assertIn("not the file's", str(e))

    def test_other_file_refused(self) -> None:
        """A file that is not the module in memory (its anchor differs) is refused first."""

        def flip_anchor(data: bytearray, offset: int) -> None:
            import mmap

            with open(self.path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                value, _ = tickets._symbols(m, {b"PyInit__rust"})[b"PyInit__rust"]
                data[tickets._file_offset(m, value) + 4] ^= 0xFF

        e = self.assertRaises(ValueError, self.find, self.copy(flip_anchor))
        self.assertIn("not this file", str(e))

    def test_only_mapped_code_read(self) -> None:
        """An address outside the module's code in memory is never read; a copy is not it."""
        self.assertRaises(
            ValueError,
            tickets._hidden_function,
            self.library,
            self.copy(),
            "SSL_CTX_ctrl",
            "PyInit__rust",
        )
        self.assertTrue(tickets._mapped_code(self.path, self.find(self.path), 64))
        self.assertFalse(tickets._mapped_code(self.path, 4096, 64))
        self.assertFalse(tickets._mapped_code(__file__, self.find(self.path), 64))

    def test_missing_symbol_refused(self) -> None:
        """A symbol the file does not have is refused."""
        self.assertRaises(ValueError, self.find, self.path, anchor="PyInit_nonesuch")

    def test_not_elf_refused(self) -> None:
        """A file that is not 64-bit ELF is refused."""
        path = os.path.abspath(self.mktemp())
        shutil.copy(__file__, path)
        self.assertRaises(ValueError, self.find, path)
