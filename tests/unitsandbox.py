"""
The systemd unit's process sandbox without systemd (CI runs in a container
without systemd as PID 1, where C{systemd-run} cannot start a unit): the
options of C{contrib/notificator.service} that are seccomp filters or
process attributes, applied the way systemd applies them, so that the
tests can run the unit's C{ExecStart} under them and see TLS, HTTP/2 and
Redis still work.

 - L{Policy.from_unit} reads the unit's C{[Service]} section (repeated
   keys kept, as systemd reads them) and turns the syscall groups into
   system call names with the real C{systemd-analyze syscall-filter}, so
   the list is systemd's own.
 - Run as a script (C{python unitsandbox.py POLICY.json -- ARGV...}), it
   loads the filters with libseccomp (C{libseccomp.so.2}, through ctypes;
   the library systemd itself uses, installed with it) and executes ARGV
   under them.  One filter per option, as systemd loads them; the kernel
   applies the strictest answer of all.

What is emulated here: C{SystemCallFilter=} (an allow list, then C{~}
lists taken out of it), C{SystemCallErrorNumber=},
C{SystemCallArchitectures=native}, C{RestrictAddressFamilies=},
C{MemoryDenyWriteExecute=}, C{RestrictNamespaces=yes} (with C{clone3}
answering C{ENOSYS}, as systemd does, so glibc falls back to C{clone}),
C{UMask=} and C{NoNewPrivileges=}.  C{User=}/C{Group=} are the caller's
(C{setpriv}).  The mount, user and device namespaces are not.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import re
import subprocess
import sys
from typing import Any

# libseccomp's ABI (seccomp.h).
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ = 4
SCMP_CMP_MASKED_EQ = 7


def SCMP_ACT_ERRNO(number: int) -> int:  # noqa: N802 (libseccomp's name)
    return 0x00050000 | (number & 0xFFFF)


class ArgCmp(ctypes.Structure):
    """C{struct scmp_arg_cmp}."""

    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def read_unit(path: str) -> dict[str, list[str]]:
    """The C{[Service]} section of a unit file: key -> every value, in order."""
    section = None
    values: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                section = line
                continue
            if section == "[Service]":
                key, _, value = line.partition("=")
                values.setdefault(key.strip(), []).append(value.strip())
    return values


def syscall_group(name: str, analyze: str, seen: set[str] | None = None) -> set[str]:
    """The system calls of C{@name} (or C{name} itself), nested groups expanded."""
    if not name.startswith("@"):
        return {name}
    seen = set() if seen is None else seen
    if name in seen:
        return set()
    seen.add(name)
    out = subprocess.run(
        [analyze, "syscall-filter", name], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    calls: set[str] = set()
    for line in out.splitlines()[1:]:
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        calls |= syscall_group(item, analyze, seen)
    return calls


#: Address families by name (those RestrictAddressFamilies= may name here).
FAMILIES = {"AF_UNIX": 1, "AF_INET": 2, "AF_INET6": 10, "AF_NETLINK": 16, "AF_PACKET": 17}
#: The kernel's number of address families (AF_MAX, linux/socket.h).
AF_MAX = 46


class Policy(dict[str, Any]):
    """What L{apply} loads: a JSON-able dict built from a unit file."""

    @classmethod
    def from_unit(cls, path: str, analyze: str) -> Policy:
        unit = read_unit(path)
        policy = cls()
        allowed: set[str] | None = None
        for value in unit.get("SystemCallFilter", []):
            deny = value.startswith("~")
            names = value.lstrip("~").split()
            calls: set[str] = set()
            for name in names:
                calls |= syscall_group(name, analyze)
            if allowed is None:
                if deny:
                    raise ValueError("a deny list first is not emulated")
                allowed = calls
            elif deny:
                allowed -= calls
            else:
                allowed |= calls
        policy["allow"] = sorted(allowed) if allowed is not None else None
        policy["errno"] = (unit.get("SystemCallErrorNumber") or [None])[-1]
        families = (unit.get("RestrictAddressFamilies") or [""])[-1].split()
        policy["families"] = [FAMILIES[f] for f in families] or None
        policy["mdwe"] = (unit.get("MemoryDenyWriteExecute") or ["no"])[-1] == "yes"
        policy["namespaces"] = (unit.get("RestrictNamespaces") or ["no"])[-1] == "yes"
        policy["native"] = (unit.get("SystemCallArchitectures") or [""])[-1] == "native"
        umask = (unit.get("UMask") or [None])[-1]
        policy["umask"] = int(umask, 8) if umask else None
        return policy


def _lib() -> Any:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    lib = ctypes.CDLL(name, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(ArgCmp),
    ]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    return lib


class _Filter:
    def __init__(self, lib: Any, default: int) -> None:
        self.lib = lib
        self.ctx = lib.seccomp_init(default)
        if not self.ctx:
            raise OSError("seccomp_init failed")

    def rule(self, action: int, name: str, *cmps: tuple[int, int, int, int]) -> bool:
        nr = self.lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:
            return False  # not a system call of this architecture
        args = (ArgCmp * max(1, len(cmps)))(*[ArgCmp(*c) for c in cmps])
        rc = self.lib.seccomp_rule_add_array(self.ctx, action, nr, len(cmps), args)
        if rc < 0 and rc != -errno.EEXIST:
            raise OSError(-rc, f"seccomp_rule_add {name}")
        return True

    def load(self) -> None:
        rc = self.lib.seccomp_load(self.ctx)
        self.lib.seccomp_release(self.ctx)
        if rc < 0:
            raise OSError(-rc, "seccomp_load")


PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000
CLONE_NEW = (0x20000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000, 0x80)


def apply(policy: dict[str, Any]) -> None:
    """Load the policy's filters into this process (inherited by what it executes)."""
    lib = _lib()
    if policy.get("umask") is not None:
        os.umask(policy["umask"])
    if policy.get("families"):
        f = _Filter(lib, SCMP_ACT_ALLOW)
        for family in range(AF_MAX):
            if family not in policy["families"]:
                f.rule(SCMP_ACT_ERRNO(errno.EAFNOSUPPORT), "socket", (0, SCMP_CMP_EQ, family, 0))
        f.load()
    if policy.get("mdwe"):
        f = _Filter(lib, SCMP_ACT_ALLOW)
        both = PROT_WRITE | PROT_EXEC
        f.rule(SCMP_ACT_ERRNO(errno.EPERM), "mmap", (2, SCMP_CMP_MASKED_EQ, both, both))
        for call in ("mprotect", "pkey_mprotect"):
            f.rule(SCMP_ACT_ERRNO(errno.EPERM), call, (2, SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC))
        f.rule(SCMP_ACT_ERRNO(errno.EPERM), "shmat", (2, SCMP_CMP_MASKED_EQ, SHM_EXEC, SHM_EXEC))
        f.load()
    if policy.get("namespaces"):
        f = _Filter(lib, SCMP_ACT_ALLOW)
        f.rule(SCMP_ACT_ERRNO(errno.ENOSYS), "clone3")
        f.rule(SCMP_ACT_ERRNO(errno.EPERM), "setns")
        for flag in CLONE_NEW:
            for call in ("unshare", "clone"):
                f.rule(SCMP_ACT_ERRNO(errno.EPERM), call, (0, SCMP_CMP_MASKED_EQ, flag, flag))
        f.load()
    # Last, as systemd does: it denies seccomp(2) itself.
    if policy.get("allow") is not None:
        failing = getattr(errno, policy.get("errno") or "", None)
        # Without SystemCallErrorNumber= systemd kills the process.
        default = SCMP_ACT_ERRNO(failing) if failing else 0x80000000
        f = _Filter(lib, default)
        for name in policy["allow"]:
            f.rule(SCMP_ACT_ALLOW, name)
        f.load()


def main(argv: list[str]) -> None:
    """C{unitsandbox.py POLICY.json -- ARGV...}: apply the policy, execute ARGV."""
    path, dashes, *command = argv
    if dashes != "--" or not command:
        raise SystemExit("usage: unitsandbox.py POLICY.json -- ARGV...")
    with open(path, encoding="utf-8") as f:
        apply(json.load(f))
    os.execv(command[0], command)


#: Matches the overall score line of C{systemd-analyze security}.
EXPOSURE = re.compile(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)")

if __name__ == "__main__":
    main(sys.argv[1:])
