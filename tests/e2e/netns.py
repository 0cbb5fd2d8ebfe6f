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
import time

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


@contextlib.contextmanager
def entered(path: str):
    """This thread in the network namespace at `path` (`/proc/PID/ns/net`) for the
    `with` block, then back where it was: what it starts meanwhile lives there."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(path, os.O_RDONLY)
    try:
        _check(_libc.setns(target, CLONE_NEWNET), f"setns into {path}")
        try:
            yield
        finally:
            _check(_libc.setns(home, CLONE_NEWNET), "setns back")
    finally:
        os.close(target)
        os.close(home)


class Peer:
    """A second network namespace next to the test's, kept alive by a `sleep`
    process (`unshare --net`, root), joined to the test's namespace by a veth pair:
    `here` (this side) and `there`. Start peers inside it with `with
    netns.entered(ns.path):`. `stop()` (by pid) ends it."""

    def __init__(self, here: str = "veth0", there: str = "veth1", seconds: int = 900):
        self.here, self.there = here, there
        self.proc = subprocess.Popen(["unshare", "--net", "sleep", str(seconds)],
                                     start_new_session=True)
        self.path = f"/proc/{self.proc.pid}/ns/net"
        for _ in range(100):  # bounded: until unshare has exec'd sleep
            if os.path.exists(self.path) and os.readlink(self.path) != current():
                break
            time.sleep(0.02)
        else:
            raise OSError("the peer namespace did not appear")
        self.run_here("ip", "link", "add", here, "type", "veth", "peer", "name", there,
                      "netns", str(self.proc.pid))
        self.run_there("ip", "link", "set", "lo", "up")
        self.run_there("ip", "link", "set", there, "up")
        self.run_here("ip", "link", "set", here, "up")

    @staticmethod
    def run_here(*cmd: str) -> None:
        subprocess.run(list(cmd), check=True, capture_output=True, timeout=10)

    def run_there(self, *cmd: str) -> None:
        subprocess.run(["nsenter", f"--net={self.path}", *cmd], check=True,
                       capture_output=True, timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
