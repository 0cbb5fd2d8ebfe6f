"""Network namespaces made by the tests (Linux, root or CAP_SYS_ADMIN).

`isolated()` moves this test process into a fresh network namespace of its own, with
only a loopback interface (127.0.0.1 and ::1), for the length of a `with` block:
everything the test starts inside it (the phone, Kamailio, baresip, SIPp, captures)
lives there, sees no other program's ports and can reach nothing outside. On leaving,
the process goes back to the namespace it came from; the fresh one disappears with
the last process in it.

Only the calling thread moves (namespaces belong to threads), so enter it from the
test's own thread before starting anything; threads and processes started inside
inherit it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import subprocess

CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def available() -> str | None:
    """None when namespaces can be made here; else why not (for a skip or a failure)."""
    if not os.path.exists("/proc/self/ns/net"):
        return "no /proc/self/ns/net"
    if os.geteuid() != 0:
        return "making a network namespace needs root"
    return None


@contextlib.contextmanager
def isolated():
    """A fresh network namespace (loopback up) for the `with` block; see the module."""
    why = available()
    if why:
        raise OSError(why)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        try:
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True,
                           capture_output=True, timeout=10)
            yield
        finally:
            _check(_libc.setns(home, CLONE_NEWNET), "setns back to the first namespace")
    finally:
        os.close(home)


def current() -> str:
    """The identity of this thread's network namespace (`net:[inode]`)."""
    return os.readlink("/proc/thread-self/ns/net")
