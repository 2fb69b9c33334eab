"""
Tests for L{notificator.runas}: the user twistd's C{--uid}/C{--gid} run the
server as, the checks made for that user, and what root makes for them
before twistd switches users.  Run as root (as CI runs), with a system user
made for each test; elsewhere they skip (in CI they fail).
"""

from __future__ import annotations

import errno
import io
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile

from twisted.scripts._twistd_unix import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from notificator import pidlock, runas, tap, tickets
from tests.support import PROJECT, as_user, make_user, owner, write_config

UNTESTED = "RUNAS TEST NOT RUN"


class UserTestCase(SynchronousTestCase):
    """A system user of the test's own (C{self.user}), and a root-owned folder under C{/tmp}."""

    def setUp(self) -> None:
        self.user = make_user(self, UNTESTED)
        entry = pwd.getpwnam(self.user)
        self.uid, self.gid = entry.pw_uid, entry.pw_gid
        # Under /tmp, which the user may enter (the test's own folder may be
        # under a home it may not).
        self.base = tempfile.mkdtemp(prefix="notificator-runas-")
        self.addCleanup(shutil.rmtree, self.base, True)
        os.chmod(self.base, 0o755)
        self.ids = (os.geteuid(), os.getegid(), sorted(os.getgroups()))
        self.addCleanup(self.assertRootAgain)

    def assertRootAgain(self) -> None:
        self.assertEqual((os.geteuid(), os.getegid(), sorted(os.getgroups())), self.ids)

    def path(self, *names: str) -> str:
        return os.path.join(self.base, *names)

    def theirs(self, *names: str) -> str:
        """A folder of the user's (0755)."""
        path = self.path(*names)
        os.makedirs(path)
        os.chown(path, self.uid, self.gid)
        return path


class FromTwistdTests(UserTestCase):
    def test_the_user_and_its_group(self) -> None:
        """--uid alone: the user, its own group and its groups, as twistd switches to them."""
        user = runas.from_twistd({"uid": self.uid, "gid": None})
        groups = tuple(os.getgrouplist(self.user, self.gid))
        self.assertEqual(user, runas.RunAs(self.uid, self.gid, groups, self.user))
        self.assertTrue(user.switches)
        self.assertEqual(str(user), f"user {self.user} (uid {self.uid})")
        self.assertEqual(runas.from_twistd({"uid": self.uid, "gid": self.gid}), user)

    def test_no_uid_no_gid_is_this_process(self) -> None:
        """Not run by twistd, or without --uid and --gid: the process's own user."""
        for options in (None, {}, {"uid": None, "gid": None}):
            user = runas.from_twistd(options)
            self.assertEqual(user, runas.RunAs.current())
            self.assertFalse(user.switches)
        self.assertEqual(str(runas.RunAs.current()), "user root (uid 0)")

    def test_an_unknown_uid_is_one_line(self) -> None:
        """A uid the user database does not know: twistd could not switch to it."""
        e = self.assertRaises(ValueError, runas.from_twistd, {"uid": 3_999_999, "gid": None})
        self.assertEqual(str(e), "cannot run as uid 3999999 (twistd --uid): no such user")

    def test_only_root_switches(self) -> None:
        """A process that is not root cannot become another user: one line says so."""
        code = "from notificator import runas; runas.from_twistd({'uid': 0, 'gid': 0})"
        result = subprocess.run(
            as_user(self.user, [sys.executable, "-c", code], UNTESTED),
            cwd=PROJECT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 1)
        self.assertEqual(
            result.stderr.strip().splitlines()[-1],
            "ValueError: cannot run as user root (uid 0), group root (twistd --uid/--gid):"
            f" only root can switch to another user, and this is user {self.user} (uid {self.uid})",
        )


class RunAsTests(UserTestCase):
    def test_can_answers_for_that_user(self) -> None:
        """
        What the user may do, not what root may: a folder of root's (0755)
        is not the user's to write; one of the user's is.  Root's ids are
        back afterwards.
        """
        user = runas.from_twistd({"uid": self.uid, "gid": None})
        os.makedirs(self.path("roots"))
        self.assertFalse(user.can(self.path("roots"), os.W_OK | os.X_OK))
        self.assertTrue(user.can(self.path("roots"), os.R_OK | os.X_OK))
        self.assertTrue(user.can(self.theirs("theirs"), os.W_OK | os.X_OK))
        self.assertTrue(runas.RunAs.current().can(self.path("roots"), os.W_OK))

    def test_make_dirs_makes_them_that_users(self) -> None:
        """
        What is made is the user's (the last one with the mode given, less
        the umask); what was there is left as it is.
        """
        user = runas.from_twistd({"uid": self.uid, "gid": None})
        os.makedirs(self.path("a"))
        user.make_dirs(self.path("a", "b", "c", "d"), 0o700)
        self.assertEqual(owner(self.path("a")), 0)
        for made in (("a", "b"), ("a", "b", "c"), ("a", "b", "c", "d")):
            st = os.stat(self.path(*made))
            self.assertEqual((st.st_uid, st.st_gid), (self.uid, self.gid), made)
        self.assertEqual(stat.S_IMODE(os.stat(self.path("a", "b", "c", "d")).st_mode) & 0o077, 0)
        user.make_dirs(self.path("a", "b"))  # there already: nothing happens
        self.assertEqual(owner(self.path("a", "b")), self.uid)

    def test_make_dirs_refuses_what_is_not_a_directory(self) -> None:
        """A file, or a link to nowhere, where the folder should be: as os.makedirs does."""
        user = runas.from_twistd({"uid": self.uid, "gid": None})
        with open(self.path("file"), "w"):
            pass
        os.symlink(self.path("nowhere"), self.path("dangling"))
        for name in ("file", "dangling"):
            self.assertRaises(FileExistsError, user.make_dirs, self.path(name))


class OpenInTests(UserTestCase):
    def test_a_file_made_by_root_is_the_directory_owners(self) -> None:
        """In a folder of the user's, a file root makes or opens becomes theirs; in root's, not."""
        theirs = self.theirs("theirs")
        os.close(runas.open_in(theirs, "made", os.O_RDWR | os.O_CREAT, 0o644))
        self.assertEqual(owner(os.path.join(theirs, "made")), self.uid)
        with open(os.path.join(theirs, "roots"), "w"):
            pass
        os.close(runas.open_in(theirs, "roots", os.O_RDONLY))
        self.assertEqual(owner(os.path.join(theirs, "roots")), self.uid)
        os.makedirs(self.path("root"))
        os.close(runas.open_in(self.path("root"), "made", os.O_RDWR | os.O_CREAT, 0o644))
        self.assertEqual(owner(self.path("root", "made")), 0)

    def test_links_are_not_followed_or_given_away(self) -> None:
        """
        A symbolic link put in the user's folder is not opened; a hard link
        to root's file is not written nor given away (it is read: a key
        being linked into place has two names for a moment); a FIFO is not
        waited on.
        """
        theirs = self.theirs("theirs")
        secret = self.path("secret")
        with open(secret, "w") as f:
            f.write("root's")
        os.symlink(secret, os.path.join(theirs, "symbolic"))
        e = self.assertRaises(OSError, runas.open_in, theirs, "symbolic", os.O_RDWR | os.O_CREAT)
        self.assertEqual(e.errno, errno.ELOOP)
        os.link(secret, os.path.join(theirs, "hard"))
        e = self.assertRaises(OSError, runas.open_in, theirs, "hard", os.O_RDWR | os.O_CREAT)
        self.assertEqual(e.errno, errno.EPERM)
        os.close(runas.open_in(theirs, "hard", os.O_RDONLY))
        self.assertEqual(owner(secret), 0)
        with open(secret) as f:
            self.assertEqual(f.read(), "root's")
        os.mkfifo(os.path.join(theirs, "fifo"))
        e = self.assertRaises(OSError, runas.open_in, theirs, "fifo", os.O_RDONLY)
        self.assertEqual(e.errno, errno.EPERM)


class TakenAsRootTests(UserTestCase):
    """What root takes and writes before twistd switches users, in the user's folders."""

    def test_the_history_lock_is_the_directory_owners(self) -> None:
        """The lock file root takes is the user's: the user's server (or its --check) can open it."""
        directory = self.theirs("history")
        lock = pidlock.DirectoryLock(directory)
        lock.acquire()
        self.addCleanup(lock.release)
        self.assertEqual(owner(lock.path), self.uid)
        code = (
            "import sys; from notificator import pidlock\n"
            "try: pidlock.DirectoryLock(sys.argv[1]).acquire()\n"
            "except pidlock.Locked as e: print('locked by', e.pid)\n"
        )
        result = subprocess.run(
            as_user(self.user, [sys.executable, "-c", code, directory], UNTESTED),
            cwd=PROJECT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual((result.stdout, result.stderr), (f"locked by {os.getpid()}\n", ""))

    def test_a_ticket_key_is_the_directory_owners(self) -> None:
        """A ticket key root writes, or one root wrote before, is the user's to read."""
        directory = self.theirs("keys")
        os.chmod(directory, 0o700)
        tickets.TicketKeys(directory).key(7)
        self.assertEqual(owner(os.path.join(directory, "window-7.key")), self.uid)
        self.assertEqual(sorted(os.listdir(directory)), ["window-7.key"])
        earlier = os.path.join(directory, "window-8.key")
        with open(earlier, "wb") as f:
            f.write(os.urandom(tickets.KEY_BYTES))
        tickets.TicketKeys(directory).key(8)
        self.assertEqual(owner(earlier), self.uid)


class CheckDirTests(UserTestCase):
    """L{tap.Options} under twistd: its checks are for twistd's --uid."""

    def options(self, uid: int, *args: str) -> tap.Options:
        conf = write_config(
            self.path("conf"),
            {
                "default": {
                    "server": {"log": {"dir": "logs"}},
                    "sse": {"history": {"dir": "var/history"}},
                },
                "x": {},
            },
        )
        self.out = io.StringIO()
        self.patch(sys, "stdout", self.out)  # --check's line
        # twistd's own options, the plugin's parent, as twistd parses them.
        twistd = ServerOptions()
        twistd.parseOptions(
            ["--uid", str(uid), "-n", "notificator", "--config", conf, "--env", "x", *args]
        )
        opts: tap.Options = twistd.subOptions
        return opts

    def test_directories_are_made_for_that_user(self) -> None:
        """The missing directories are made the user's."""
        options = self.options(self.uid)
        for made in ("logs", "var", "var/history"):
            self.assertEqual(owner(self.path(made)), self.uid, made)
        self.assertEqual(options["user"].uid, self.uid)

    def test_a_directory_that_user_cannot_write_is_one_line(self) -> None:
        """An existing one root's (0755): one line naming the key, the directory and the user."""
        os.makedirs(self.path("var", "history"))
        e = self.assertRaises(SystemExit, self.options, self.uid)
        self.assertEqual(
            e.code,
            f"notificator: configuration error: sse.history.dir: {self.path('var', 'history')}:"
            f" no write permission for user {self.user} (uid {self.uid})",
        )
        # --check creates nothing, and says the same.
        e = self.assertRaises(SystemExit, self.options, self.uid, "--check")
        self.assertIn(f"no write permission for user {self.user}", str(e.code))

    def test_check_of_a_missing_directory_the_user_could_not_enter(self) -> None:
        """
        --check: a missing directory is fine when root can make it and the
        user can enter where it goes; not where the user cannot enter.
        """
        os.makedirs(self.path("var"))
        e = self.assertRaises(SystemExit, self.options, self.uid, "--check")
        self.assertEqual(e.code, 0)
        self.assertIn("notificator: configuration OK (", self.out.getvalue())
        self.assertFalse(os.path.exists(self.path("logs")))
        os.chmod(self.path("var"), 0o700)
        e = self.assertRaises(SystemExit, self.options, self.uid, "--check")
        self.assertIn(
            f"sse.history.dir: {self.path('var', 'history')}: no write permission for user"
            f" {self.user}",
            str(e.code),
        )
