# -*- test-case-name: tests.test_pidlock,tests.test_pidlock_e2e -*-
"""
One server per history directory: an advisory lock on C{<dir>/lock},
held while the server runs, with the holder's process id in the file.

Two servers appending to one journal corrupt each other's history (each
also takes the other's live journal for one that was not closed
cleanly), so a second server started in the same directory, or with the
same C{sse.history.dir}, must stop at start-up instead.

The lock is C{flock(2)}: it belongs to the open file, not to the process,
so the daemon that twistd forks keeps the lock its parent took before
forking (a POSIX C{lockf} lock would be dropped by the fork).  The kernel
releases it when the holder exits, however it exits: a server killed with
C{SIGKILL} leaves no stale lock behind, only its pid in the file, which
nothing reads while the lock is free.

Taken by root before C{twistd --uid} switches users, the file is the
directory's owner's (L{runas.open_in}): the server that later runs as that
user, or its C{--check}, can open it.
"""

from __future__ import annotations

import fcntl
import os

from twisted.application.service import Service

from notificator import runas


class Locked(Exception):
    """
    Another process holds the lock.

    @ivar directory: the locked directory.
    @ivar pid: the holder's process id, as its lock file says; L{None} when
        the file says none.
    """

    def __init__(self, directory: str, pid: int | None) -> None:
        super().__init__(directory, pid)
        self.directory = directory
        self.pid = pid


class DirectoryLock:
    """
    The lock on one directory (C{<directory>/lock}).

    @ivar path: the lock file.
    """

    NAME = "lock"

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, self.NAME)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """
        Take the lock without waiting and write this process's id in the
        file.

        @raise Locked: another process (or another L{DirectoryLock} of this
            one) holds it.
        @raise OSError: the file cannot be opened or locked.
        """
        if self._fd is not None:
            return
        os.makedirs(self.directory, exist_ok=True)
        # Taken as root before twistd --uid switches users: a file of the
        # directory's owner (the user the server runs as), never a link.
        fd = runas.open_in(self.directory, self.NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise Locked(self.directory, pid) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self.write_pid()

    def write_pid(self) -> None:
        """
        Write this process's id in the held lock's file (after twistd forked
        the daemon, the daemon's).  Written over the old one, then cut to
        length, so a reader never finds the file empty.
        """
        fd = self._fd
        if fd is None:
            return
        data = b"%d\n" % os.getpid()
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))

    def holder(self) -> int | None:
        """The process id the lock file names (whoever holds the lock, if anyone)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            return _read_pid(fd)
        finally:
            os.close(fd)

    def release(self) -> None:
        """Empty the file and let go of the lock (the file stays: see the module docstring)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass  # the lock goes with the file descriptor all the same
        finally:
            os.close(fd)


def _read_pid(fd: int) -> int | None:
    line = os.pread(fd, 32, 0).split(b"\n", 1)[0].strip()
    return int(line) if line.isdigit() else None


class DirectoryLockService(Service):
    """
    Holds a L{DirectoryLock} while the server runs: taken at start unless
    L{tap.makeService} took it already (before twistd daemonizes, so that a
    second server's refusal reaches the terminal), the running process's id
    written in its file, released at stop.  Put it before the services that
    write in the directory, so that it is released after them.
    """

    def __init__(self, lock: DirectoryLock) -> None:
        self.lock = lock

    def startService(self) -> None:
        if self.lock.held:
            self.lock.write_pid()
        else:
            self.lock.acquire()
        super().startService()

    def stopService(self) -> None:
        super().stopService()
        self.lock.release()
