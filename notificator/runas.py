# -*- test-case-name: tests.test_runas,tests.test_scripts -*-
"""
The user the server runs as, and what is made for that user before the
server becomes it.

Started as root with C{twistd --uid=sse --gid=sse} (README, "Running as
root"), the server reads its configuration, checks and makes its
directories (L{notificator.tap.check_dir}), takes the history's lock
(L{notificator.pidlock}) and may write a TLS ticket key
(L{notificator.tickets}) as root: twistd gives root up only once the
listeners are bound, and the daemon then writes everything else (logs,
history, later ticket keys) as C{sse}.  So:

 - the check of a directory answers for the user the server will run as
   (L{RunAs.can}: that user's ids in effect for the check only), not for
   root;
 - the directories made before then are that user's (L{RunAs.make_dirs});
 - a file root makes or opens in a directory of another user (the lock, a
   ticket key) is given to that user (L{open_in}).

Root writing in a directory that another user may write is how a link put
there sends root's writes elsewhere, so each step works on file
descriptors: a directory is opened without following a link before it is
given away, and a file is opened in its directory's descriptor without
following a link, and given away only if it is a plain file with one
name.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import attrs


@attrs.frozen
class RunAs:
    """
    A user to run as: the ids twistd switches to.

    @ivar uid: the user id.
    @ivar gid: the group id.
    @ivar groups: the supplementary groups (as C{initgroups} sets them).
    @ivar name: the user's name, if the user database has it.
    """

    uid: int
    gid: int
    groups: tuple[int, ...]
    name: str | None = None

    @classmethod
    def current(cls) -> RunAs:
        """The user this process runs as (its effective ids)."""
        uid = os.geteuid()
        return cls(uid, os.getegid(), tuple(os.getgroups()), _user_name(uid))

    def __str__(self) -> str:
        """C{user sse (uid 999)}, or C{uid 999} for an id without a name."""
        if self.name is None:
            return f"uid {self.uid}"
        return f"user {self.name} (uid {self.uid})"

    @property
    def switches(self) -> bool:
        """Whether this is not who the process is now (twistd switches to it)."""
        return (self.uid, self.gid) != (os.geteuid(), os.getegid())

    def can(self, path: str, mode: int) -> bool:
        """
        Whether this user may use C{path} as C{mode} (C{os.W_OK | os.X_OK}
        ...) says: C{access(2)} with this user's ids in effect for the
        call, so that what the kernel decides (modes, ACLs, read-only
        mounts, the directories on the way) is what this user will find.
        """
        if not self.switches:
            return os.access(path, mode)
        with self._in_effect():
            return os.access(path, mode, effective_ids=True)

    @contextmanager
    def _in_effect(self) -> Iterator[None]:
        """This user's ids as the effective ones (the process is root), then root's again."""
        egid, groups = os.getegid(), os.getgroups()
        os.setgroups(list(self.groups))
        try:
            os.setegid(self.gid)
            try:
                os.seteuid(self.uid)
                try:
                    yield
                finally:
                    os.seteuid(0)
            finally:
                os.setegid(egid)
        finally:
            os.setgroups(groups)

    def make_dirs(self, path: str, mode: int = 0o777) -> None:
        """
        C{os.makedirs(path, mode, exist_ok=True)}, and when the process is
        root and this is another user, the directories it makes are this
        user's.  They are made one by one, each opened without following a
        link (a directory that another process made meanwhile is left as
        it is), and given away once all are made, the deepest first: until
        then they are root's, so nobody else can put a link in them.

        @raise OSError: a directory cannot be made, or C{path} is not one.
        """
        if not (self.switches and os.geteuid() == 0):
            os.makedirs(path, mode, exist_ok=True)
            return
        missing: list[str] = []
        parent = os.path.abspath(path)
        while not os.path.lexists(parent):
            parent, name = os.path.split(parent)
            missing.insert(0, name)
        if not missing:
            if not os.path.isdir(parent):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path)
            return
        opened = [os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)]
        made: list[int] = []
        try:
            for i, name in enumerate(missing):
                try:
                    os.mkdir(name, mode if i == len(missing) - 1 else 0o777, dir_fd=opened[-1])
                    ours = True
                except FileExistsError:
                    ours = False
                flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
                opened.append(os.open(name, flags, dir_fd=opened[-1]))
                if ours:
                    made.append(opened[-1])
            for fd in reversed(made):
                os.fchown(fd, self.uid, self.gid)
        finally:
            for fd in opened:
                os.close(fd)


def from_twistd(options: Mapping[str, Any] | None) -> RunAs:
    """
    The user twistd will run the server as: its C{--uid} and C{--gid}
    (twistd's own options, the parent of the plugin's; names already made
    ids), as twistd takes them: the user's own group when only C{--uid} is
    given, the user's groups, and the process's user when neither is.

    @param options: twistd's options, or L{None} (not run by twistd).
    @raise ValueError: twistd could not switch to that user (a uid the
        user database does not know, or a process that is not root); the
        message says so in one line.
    """
    current = RunAs.current()
    if options is None:
        return current
    uid, gid = options.get("uid"), options.get("gid")
    if uid is None and gid is None:
        return current
    if uid is None:
        uid = current.uid
    try:
        entry: pwd.struct_passwd | None = pwd.getpwuid(uid)
    except KeyError:
        entry = None
    if gid is None:
        if entry is None:
            raise ValueError(f"cannot run as uid {uid} (twistd --uid): no such user")
        gid = entry.pw_gid
    if (uid, gid) == (current.uid, current.gid):
        return current
    if uid == current.uid:
        # twistd changes the group only (it sets the groups of a new user).
        user = RunAs(uid, gid, current.groups, current.name)
    elif entry is None:
        raise ValueError(f"cannot run as uid {uid} (twistd --uid): no such user")
    else:
        user = RunAs(uid, gid, tuple(os.getgrouplist(entry.pw_name, gid)), entry.pw_name)
    if os.geteuid() != 0:
        raise ValueError(
            f"cannot run as {user}, group {_group_name(gid)} (twistd --uid/--gid):"
            f" only root can switch to another user, and this is {current}"
        )
    return user


def open_in(directory: str, name: str, flags: int, mode: int = 0o600) -> int:
    """
    Open the file C{name} in C{directory} (C{os.open} with C{flags} and
    C{mode}), not following a symbolic link.  When the process is root and
    the directory is another user's, the file is given to the directory's
    owner and group, the user the server runs as (L{RunAs.make_dirs} made
    it theirs), so that they can use it once the server is them.  There it
    must be a plain file, and one with one name to be written or given
    away (a hard link to a file elsewhere is read, not given away).

    @return: the file descriptor.
    @raise OSError: it cannot be opened, or is a link that would be written.
    """
    directory_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        # O_NONBLOCK: a FIFO put there does not hang the open (nothing else
        # changes for a plain file).
        opening = flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        fd = os.open(name, opening, mode, dir_fd=directory_fd)
        try:
            owner = os.fstat(directory_fd)
            if os.geteuid() == 0 and owner.st_uid != 0:
                st = os.fstat(fd)
                plain = stat.S_ISREG(st.st_mode)
                single = plain and st.st_nlink == 1
                if not plain or (not single and flags & (os.O_WRONLY | os.O_RDWR)):
                    path = os.path.join(directory, name)
                    raise OSError(errno.EPERM, "not a plain file with one name (a link?)", path)
                if single and (st.st_uid, st.st_gid) != (owner.st_uid, owner.st_gid):
                    os.fchown(fd, owner.st_uid, owner.st_gid)
        except BaseException:
            os.close(fd)
            raise
    finally:
        os.close(directory_fd)
    return fd


def _user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
