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

`nat_world(homes=N)` builds a small internet with home networks behind NAT routers,
out of named namespaces made for the test (unique names, deleted at the end):

    home k (10.0.k.2/24, default via 10.0.k.1)
      └─ veth ─ router k: lan 10.0.k.1/24, wan 203.0.113.(10+k)/24,
                ip_forward=1, `iptables -t nat -A POSTROUTING -o wan -j MASQUERADE`,
                unsolicited packets on wan dropped (`INPUT -i wan --ctstate NEW`)
                  └─ veth ─ internet: bridge 203.0.113.1/24 (the servers' address)

The test's own thread moves into the "internet" namespace for the block (like
`isolated()`), so Kamailio, baresip and a STUN server started there with no prefix
listen on 203.0.113.1 (and on 127.0.0.1 of that namespace for their control); a
program in a home runs under `home.prefix` (`ip netns exec NAME`). The internet has
no route to 10.0.0.0/8: as on the real one, a private address is unreachable from
it, and traffic from a home reaches it only as the router's public address.
203.0.113.0/24 is TEST-NET-3 and 10.0.0.0/8 private; neither leaves this machine
(the namespaces have no link to the host's).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, field

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


# -- NAT topology -------------------------------------------------------------

INTERNET_IP = "203.0.113.1"


def _run(*args: str) -> None:
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=20)
    if r.returncode != 0:
        raise OSError(f"`{' '.join(args)}` failed ({r.returncode}): {r.stderr.strip()}")


def nat_available() -> str | None:
    """None when `nat_world` can be built here; else why not."""
    why = available()
    if why:
        return why
    if not shutil.which("iptables"):
        return "iptables is missing (scripts/install-test-deps.sh installs it)"
    return None


@dataclass
class Home:
    """A home network behind its NAT router."""
    index: int
    name: str           # the home namespace
    router: str         # the router namespace
    ip: str             # the host's private address in the home (10.0.k.2)
    public_ip: str      # the router's address on the internet (203.0.113.(10+k))

    @property
    def prefix(self) -> list[str]:
        """The command prefix that runs a program in this home."""
        return ["ip", "netns", "exec", self.name]

    def run(self, *args: str, timeout: float = 20) -> subprocess.CompletedProcess:
        """Runs a command in the home (for checks), returns its result."""
        return subprocess.run([*self.prefix, *args], capture_output=True, text=True,
                              timeout=timeout)

    def conntrack_rules(self) -> str:
        """The router's NAT table as iptables lists it (for diagnostics)."""
        r = subprocess.run(["ip", "netns", "exec", self.router, "iptables", "-t", "nat",
                            "-L", "-n", "-v"], capture_output=True, text=True, timeout=20)
        return r.stdout + r.stderr


@dataclass
class NatWorld:
    """What `nat_world` built: the internet namespace and the homes."""
    internet: str
    internet_ip: str = INTERNET_IP
    homes: list[Home] = field(default_factory=list)


def _setns_named(name: str) -> None:
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        _check(_libc.setns(fd, CLONE_NEWNET), f"setns into {name}")
    finally:
        os.close(fd)


@contextlib.contextmanager
def nat_world(homes: int = 1):
    """The internet + `homes` NATed homes for the `with` block (see the module);
    this thread lives in the internet namespace meanwhile. Everything is deleted at
    the end, also when building it failed half way."""
    why = nat_available()
    if why:
        raise OSError(why)
    tag = secrets.token_hex(3)
    inet = f"ms{tag}-inet"
    made: list[str] = []
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _run("ip", "netns", "add", inet)
        made.append(inet)
        _run("ip", "-n", inet, "link", "set", "lo", "up")
        _run("ip", "-n", inet, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", inet, "addr", "add", f"{INTERNET_IP}/24", "dev", "br0")
        _run("ip", "-n", inet, "link", "set", "br0", "up")
        world = NatWorld(internet=inet)
        for k in range(1, homes + 1):
            router, home = f"ms{tag}-r{k}", f"ms{tag}-h{k}"
            for ns in (router, home):
                _run("ip", "netns", "add", ns)
                made.append(ns)
                _run("ip", "-n", ns, "link", "set", "lo", "up")
            public_ip, lan_ip, host_ip = f"203.0.113.{10 + k}", f"10.0.{k}.1", f"10.0.{k}.2"
            # router <-> internet
            _run("ip", "-n", router, "link", "add", "wan", "type", "veth",
                 "peer", "name", f"up{k}", "netns", inet)
            _run("ip", "-n", inet, "link", "set", f"up{k}", "master", "br0", "up")
            _run("ip", "-n", router, "addr", "add", f"{public_ip}/24", "dev", "wan")
            _run("ip", "-n", router, "link", "set", "wan", "up")
            # home <-> router
            _run("ip", "-n", home, "link", "add", "eth0", "type", "veth",
                 "peer", "name", "lan", "netns", router)
            _run("ip", "-n", router, "addr", "add", f"{lan_ip}/24", "dev", "lan")
            _run("ip", "-n", router, "link", "set", "lan", "up")
            _run("ip", "-n", home, "addr", "add", f"{host_ip}/24", "dev", "eth0")
            _run("ip", "-n", home, "link", "set", "eth0", "up")
            _run("ip", "-n", home, "route", "add", "default", "via", lan_ip)
            _run("ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            _run("ip", "netns", "exec", router, "iptables", "-t", "nat", "-A",
                 "POSTROUTING", "-o", "wan", "-j", "MASQUERADE")
            # A home router's firewall: unsolicited packets from the internet are
            # dropped. Dropped before conntrack confirms them, they leave no entry
            # behind (without it, an RTP packet arriving before our first one
            # leaves an entry that makes MASQUERADE move our mapping to another
            # port).
            _run("ip", "netns", "exec", router, "iptables", "-A", "INPUT", "-i", "wan",
                 "-m", "conntrack", "--ctstate", "NEW,INVALID", "-j", "DROP")
            world.homes.append(Home(k, home, router, host_ip, public_ip))
        _setns_named(inet)
        try:
            yield world
        finally:
            _check(_libc.setns(here, CLONE_NEWNET), "setns back to the first namespace")
    finally:
        os.close(here)
        for ns in reversed(made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
