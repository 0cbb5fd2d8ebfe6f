"""Peers and the phone under test, for the end-to-end tests.

Everything here runs on 127.0.0.1 with ports found free at run time, starts
each process in its own process group, and stops it by that pid / group only.
Every wait is bounded in time.

- free_port(kind)         a port free for UDP and TCP ("sip"), or one of them
- Kamailio                registrar + proxy with digest auth (kamailio/kamailio.cfg)
- Phone / EventStream     the phone under test ($MICROSIP_BIN) and its events
- parse_trace             the phone's --debug SIP trace as TracedMessage records
- Sipp                    a SIPp scenario from sipp/ (UAS, or UAC with remote=),
                          or a built-in one, run in the background
- Baresip                 baresip 1.0 as the other phone (ctrl_tcp, recordings)
- SipUac                  a tiny SIP registration client (harness self-tests)
- SessionBus / BusMonitor a private D-Bus session bus (dbus-daemon) with busctl
                          calls, and the signals on it (busctl monitor)
- FakeNotifications       a fake org.freedesktop.Notifications on such a bus
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import struct
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
KAMAILIO_CFG = HERE / "kamailio" / "kamailio.cfg"
KAMAILIO_DBTEXT = Path("/usr/share/kamailio/dbtext/kamailio")  # db_text schemas (presence tables)
SIPP_DIR = HERE / "sipp"
LOOPBACK = "127.0.0.1"
LOOPBACK6 = "::1"


def host_port(ip: str, port: int) -> str:
    """`ip:port`, with an IPv6 literal in brackets (`[::1]:5060`)."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def uri_host(ip: str) -> str:
    """An IP as the host part of a SIP URI (IPv6 in brackets)."""
    return f"[{ip}]" if ":" in ip else ip


def ip_family(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET

# Objects created during the current test; conftest prints their diagnostics
# when the test fails.
LIVE: list = []


def _register(obj) -> None:
    LIVE.append(obj)


def tail(path: Path | str, lines: int = 60) -> str:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def which(name: str) -> str | None:
    for d in os.environ.get("PATH", "").split(os.pathsep) + ["/usr/sbin", "/sbin"]:
        p = Path(d) / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


def wait_until(pred: Callable[[], object], timeout: float, interval: float = 0.1,
               what: str = "condition"):
    """Polls pred() until it returns something truthy; bounded in time and count."""
    deadline = time.monotonic() + timeout
    tries = int(timeout / interval) + 2
    last = None
    for _ in range(tries):
        last = pred()
        if last:
            return last
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def _kill_group(proc: subprocess.Popen, grace: float = 10.0) -> int | None:
    """SIGTERM then SIGKILL to the process group we created (pgid == pid)."""
    if proc is None:
        return None
    pgid = proc.pid
    if proc.poll() is None:
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # Whatever is left in the group (children) goes too.
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    return proc.returncode


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


# --------------------------------------------------------------------------
# Control connections held open (the socket's connection bounds)
# --------------------------------------------------------------------------

def control_line(path: Path | str, line: bytes = b"STATUS\n",
                 timeout: float = 10.0) -> tuple[socket.socket, bytes]:
    """A connection to a phone's control socket that sent `line`, and the reply line
    it got (b"" when none came). The socket stays open. A listen backlog filled by
    many clients at once (EAGAIN) is waited out, bounded."""
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(str(path))
            break
        except BlockingIOError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)
    s.settimeout(timeout)
    try:
        s.sendall(line)
    except OSError:
        pass  # refused and closed already: its line is still to be read
    reply = b""
    try:
        while not reply.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    except OSError:
        pass
    return s, reply


def hold_connections(path: str, n: int) -> None:
    """For a helper process (see `connection_holder`): opens n connections with
    `control_line`, prints their replies as one JSON list, holds them until stdin
    closes."""
    import sys
    held = [control_line(path) for _ in range(n)]
    print(json.dumps([r.decode(errors="replace").strip() for _, r in held]), flush=True)
    sys.stdin.read()


def connection_holder(path: Path | str, n: int) -> subprocess.Popen:
    """A separate process (its own pid: the phone bounds connections per process)
    holding n control connections; read its replies with `holder_replies`, end it
    by closing its stdin."""
    import sys
    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import peers; "
            "peers.hold_connections(sys.argv[1], int(sys.argv[2]))")
    return subprocess.Popen([sys.executable, "-c", code, str(path), str(n)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def holder_replies(holder: subprocess.Popen) -> list[str]:
    """The reply lines of a `connection_holder`, once it has opened them all."""
    return json.loads(holder.stdout.readline() or "[]")


# --------------------------------------------------------------------------
# Ports
# --------------------------------------------------------------------------

_handed_out: set[int] = set()


def free_port(kind: str = "sip", span: int = 1) -> int:
    """A port on 127.0.0.1 free right now.

    kind "sip" (default): free for both UDP and TCP. "udp" / "tcp": just that.
    span N: the N-1 ports after it are free for TCP too and are kept back as well
    (baresip listens for TLS on its SIP port + 1).
    Ports already handed out in this session are not given twice.
    """
    if kind not in ("sip", "udp", "tcp"):
        raise ValueError(kind)

    def tcp_free(port: int) -> bool:
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            probe.bind((LOOPBACK, port))
            return True
        except OSError:
            return False
        finally:
            probe.close()

    for _ in range(200):
        first = socket.socket(socket.AF_INET,
                              socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM)
        try:
            first.bind((LOOPBACK, 0))
            port = first.getsockname()[1]
            ports = range(port, port + span)
            if port + span > 65536 or any(p in _handed_out for p in ports):
                continue
            if kind == "sip" and not tcp_free(port):
                continue
            if not all(tcp_free(p) for p in ports[1:]):
                continue
            _handed_out.update(ports)
            return port
        finally:
            first.close()
    raise RuntimeError("no free port found")


# --------------------------------------------------------------------------
# kamcmd output
# --------------------------------------------------------------------------

def parse_kamcmd(text: str) -> list:
    """Parses kamcmd's structured output into nested lists of (key, value);
    a value is a string, or a list for a `Key: {` block."""
    root: list = []
    stack = [root]
    for raw in text.splitlines():
        s = raw.strip()
        if not s:
            continue
        if s == "}":
            if len(stack) > 1:
                stack.pop()
            continue
        if s.endswith("{"):
            key = s[:-1].strip()
            if key.endswith(":"):
                key = key[:-1].strip()
            block: list = []
            stack[-1].append((key, block))
            stack.append(block)
            continue
        if ":" in s:
            k, v = s.split(":", 1)
            stack[-1].append((k.strip(), v.strip()))
        else:
            stack[-1].append((s, ""))
    return root


def _walk(node: list, key: str):
    for k, v in node:
        if k == key:
            yield v
        if isinstance(v, list):
            yield from _walk(v, key)


def parse_ul_dump(text: str) -> dict[str, list[dict]]:
    """{aor: [contact, ...]} from `kamcmd ul.dump`. Each contact is a dict of the
    fields Kamailio prints (Address, Expires, User-Agent, Socket, Call-ID, CSeq,
    Received, ...) plus normalised keys: address, expires (int or None),
    user_agent, socket, call_id, cseq (int or None), received."""
    out: dict[str, list[dict]] = {}
    for info in _walk(parse_kamcmd(text), "Info"):
        if not isinstance(info, list):
            continue
        aor = next((v for k, v in info if k == "AoR" and isinstance(v, str)), None)
        if aor is None:
            continue
        contacts = []
        for block in _walk(info, "Contact"):
            if not isinstance(block, list):
                continue
            c = {k: v for k, v in block if isinstance(v, str)}
            exp = c.get("Expires", "")
            cseq = c.get("CSeq", "")
            c.update(
                address=c.get("Address", ""),
                expires=int(exp) if exp.lstrip("-").isdigit() else None,
                user_agent=c.get("User-Agent", ""),
                socket=c.get("Socket", ""),
                call_id=c.get("Call-ID", ""),
                cseq=int(cseq) if cseq.isdigit() else None,
                received=c.get("Received", ""),
            )
            contacts.append(c)
        out.setdefault(aor, []).extend(contacts)
    return out


# --------------------------------------------------------------------------
# Kamailio
# --------------------------------------------------------------------------

def _kam_quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Kamailio:
    """Kamailio from Debian as registrar + proxy, on 127.0.0.1:port (UDP+TCP).

    users: {"1001": "p;w#1005", ...}. The port is kept across stop()/start().
    tls_cert / tls_key (PEM files): also listen for TLS on tls_port (free one picked
    when not given), with that server certificate; off by default.
    """

    def __init__(self, workdir: Path, users: dict[str, str] | None = None,
                 port: int | None = None, min_expires: int = 5,
                 max_expires: int = 3600, algorithm: str = "MD5",
                 presence_server: str | None = None, presence_module: bool = False,
                 tls_cert: Path | None = None, tls_key: Path | None = None,
                 tls_port: int | None = None, ip: str = LOOPBACK,
                 host: str | None = None, prefix: Iterable[str] = (),
                 nat_helper: bool = False):
        # ip (or host, the same): the address it listens on (UDP and TCP) and is known
        # as: 127.0.0.1, "::1" for IPv6, another inside a test's namespaces
        # (netns.nat_world). prefix: a command it runs under (e.g. `ip netns exec
        # NAME`); none by default. nat_helper: Kamailio's nathelper for UAs behind a
        # NAT that do not know it (their private Contact is replaced by the source
        # address; see kamailio.cfg WITH_NATHELPER); off by default.
        self.nat_helper = nat_helper
        self.ip = host or ip
        self.prefix = list(prefix)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        # The ctl socket path must stay short (sun_path is 108 bytes).
        self.rundir = Path(tempfile.mkdtemp(prefix="kam", dir="/tmp"))
        self.users = dict(users if users is not None else {"1001": "p;w#1005", "1002": "secret2"})
        for u in self.users:
            if not re.fullmatch(r"[A-Za-z0-9_.+-]+", u):
                raise ValueError(f"user name {u!r} not supported by the harness")
        self.port = port or free_port("sip")
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.algorithm = algorithm
        # "sip:127.0.0.1:PORT": SUBSCRIBE and PUBLISH go there (htable pres, see
        # kamailio.cfg); None: they are routed like other requests.
        self.presence_server = presence_server
        # Kamailio's own presence server (presence + presence_xml, db_text in dbdir).
        self.presence_module = presence_module
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        self.tls_cert = Path(tls_cert) if tls_cert else None
        self.tls_key = Path(tls_key) if tls_key else None
        self.tls_port = (tls_port or free_port("tcp")) if tls_cert else None
        self.tls_cfg = self.workdir / "tls.cfg"
        self.dbdir = self.workdir / "db"
        self.cfg = self.workdir / "kamailio.cfg"
        self.log = self.workdir / "kamailio.log"
        self.pidfile = self.rundir / "kamailio.pid"
        self.ctl = self.rundir / "ctl"
        self.proc: subprocess.Popen | None = None
        self.kamailio = which("kamailio") or "/usr/sbin/kamailio"
        self.kamcmd = which("kamcmd") or "/usr/sbin/kamcmd"
        self._render()
        _register(self)

    def _render(self) -> None:
        users = "\n".join(f"\t$sht(users=>{u}) = {_kam_quote(p)};" for u, p in self.users.items())
        if self.presence_server:
            users += f"\n\t$sht(pres=>server) = {_kam_quote(self.presence_server)};"
        text = KAMAILIO_CFG.read_text()
        for key, val in {
            "PORT": str(self.port),
            "LISTEN": uri_host(self.ip),
            # Kamailio compares aliases with the bare address (no brackets).
            "ALIAS": self.ip,
            "RUNDIR": str(self.rundir),
            "MIN_EXPIRES": str(self.min_expires),
            "MAX_EXPIRES": str(self.max_expires),
            "ALGORITHM": self.algorithm,
            "USERS": users,
            "DBDIR": str(self.dbdir),
            "TLS_PORT": str(self.tls_port or 0),
            "TLS_CFG": str(self.tls_cfg),
        }.items():
            text = text.replace(f"@@{key}@@", val)
        if "@@" in text:
            raise AssertionError("unrendered marker in kamailio.cfg")
        if self.ip != LOOPBACK and ":" not in self.ip:
            # An IPv4 address inside a test's namespaces: every 127.0.0.1 is it.
            text = text.replace(LOOPBACK, self.ip)
        self.cfg.write_text(text)
        if self.tls_cert:
            self.tls_cfg.write_text(
                "[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\n"
                "require_certificate = no\n"
                f"private_key = {self.tls_key}\ncertificate = {self.tls_cert}\n\n"
                "[client:default]\nmethod = TLSv1.2+\nverify_certificate = no\n"
                "require_certificate = no\n")
        if self.presence_module:
            self.dbdir.mkdir(exist_ok=True)
            for table in ("version", "presentity", "active_watchers", "watchers", "xcap"):
                shutil.copy(KAMAILIO_DBTEXT / table, self.dbdir / table)

    @property
    def address(self) -> str:
        return host_port(self.ip, self.port)

    @property
    def tls_address(self) -> str:
        """127.0.0.1:TLS_PORT (only with tls_cert)."""
        if self.tls_port is None:
            raise AssertionError("this Kamailio has no TLS listener (no tls_cert)")
        return f"{LOOPBACK}:{self.tls_port}"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 30.0) -> "Kamailio":
        if self.running():
            return self
        with open(self.log, "ab") as log:
            log.write(f"\n==== start {time.strftime('%H:%M:%S')} port {self.port}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [*self.prefix, self.kamailio, "-f", str(self.cfg), "-P", str(self.pidfile),
                 "-Y", str(self.rundir), "-m", "64", "-M", "8", "-DD", "-E",
                 *(["-A", "WITH_PRESENCE"] if self.presence_module else []),
                 *(["-A", "WITH_NATHELPER"] if self.nat_helper else []),
                 *(["-A", "WITH_TLS"] if self.tls_cert else [])],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True, cwd=str(self.workdir),
            )
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.2) + 2):
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"kamailio exited with {self.proc.returncode}:\n{tail(self.log, 40)}")
            if self.ctl.exists() and self._options_ok():
                return self
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        raise AssertionError(f"kamailio did not answer on {self.address}:\n{tail(self.log, 40)}")

    def _options_ok(self) -> bool:
        """Sends one OPTIONS over UDP and expects a 200 (Kamailio is serving SIP)."""
        s = socket.socket(ip_family(self.ip), socket.SOCK_DGRAM)
        try:
            s.bind((self.ip, 0))
            s.settimeout(0.5)
            lport = s.getsockname()[1]
            branch = "z9hG4bK" + secrets.token_hex(8)
            here = host_port(self.ip, lport)
            msg = (
                f"OPTIONS sip:{self.address} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {here};branch={branch};rport\r\n"
                f"Max-Forwards: 5\r\n"
                f"From: <sip:probe@{uri_host(self.ip)}>;tag={secrets.token_hex(4)}\r\n"
                f"To: <sip:{self.address}>\r\n"
                f"Call-ID: {secrets.token_hex(8)}@probe\r\n"
                f"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            )
            s.sendto(msg.encode(), (self.ip, self.port))
            data, _ = s.recvfrom(65535)
            return data.startswith(b"SIP/2.0 200")
        except OSError:
            return False
        finally:
            s.close()

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None:
            return
        _kill_group(self.proc, grace=timeout)
        wait_until(lambda: not _group_alive(self.proc.pid), 10, what="kamailio processes to end")
        with open(self.log, "ab") as log:
            log.write(f"==== stopped {time.strftime('%H:%M:%S')} rc={self.proc.returncode}\n".encode())

    def rpc(self, *args: str, timeout: float = 10.0) -> str:
        r = subprocess.run([self.kamcmd, "-s", f"unix:{self.ctl}", *args],
                           capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise AssertionError(f"kamcmd {' '.join(args)} failed ({r.returncode}): {r.stderr}{r.stdout}")
        return r.stdout

    def ul_dump(self) -> dict[str, list[dict]]:
        """The location table: {aor: [contact dict, ...]} (see parse_ul_dump)."""
        return parse_ul_dump(self.rpc("ul.dump"))

    def contacts(self, aor: str) -> list[dict]:
        return self.ul_dump().get(aor, [])

    def wait_contacts(self, aor: str, present: bool = True, timeout: float = 15.0,
                      pred: Callable[[dict], bool] | None = None) -> list[dict]:
        """Waits until aor has (present=True) or has no (False) contact matching pred."""
        def check():
            cs = [c for c in self.contacts(aor) if pred is None or pred(c)]
            if present:
                return cs or None
            return True if not cs else None
        what = f"AOR {aor} to {'hold' if present else 'lose'} its contact in ul.dump"
        try:
            res = wait_until(check, timeout, 0.2, what)
        except AssertionError as e:
            raise AssertionError(f"{e}\nul.dump: {self.ul_dump()}") from None
        return res if present else []

    def diagnostics(self) -> list[tuple[str, str]]:
        out = [(f"kamailio {self.address} log (tail)", tail(self.log, 60))]
        if self.running():
            try:
                out.append(("kamailio ul.dump", self.rpc("ul.dump", timeout=5)))
            except Exception as e:  # noqa: BLE001 - diagnostics only
                out.append(("kamailio ul.dump", f"<failed: {e}>"))
        return out

    def cleanup(self) -> None:
        self.stop()
        if not self.running():
            shutil.rmtree(self.rundir, ignore_errors=True)


# --------------------------------------------------------------------------
# The phone under test
# --------------------------------------------------------------------------

def microsip_bin() -> str:
    b = os.environ.get("MICROSIP_BIN") or str(REPO / "target" / "debug" / "microsip")
    p = Path(b)
    if not p.is_absolute():
        p = (REPO / p) if (REPO / p).exists() else p.resolve()
    if not (p.is_file() and os.access(p, os.X_OK)):
        raise AssertionError(
            f"the phone binary {p} does not exist: run `cargo build -p microsip` "
            "or set MICROSIP_BIN")
    return str(p)


def render_ini(sections: dict[str, dict[str, object]]) -> str:
    lines = []
    for name, keys in sections.items():
        lines.append(f"[{name}]")
        for k, v in keys.items():
            lines.append(f"{k}={v}")
        lines.append("")
    return "\n".join(lines)


def account(server: str, username: str, password: str = "", domain: str = LOOPBACK,
            **extra) -> dict[str, object]:
    """An [AccountN] section for a registrar at `server` ("127.0.0.1:PORT")."""
    sec: dict[str, object] = {
        "label": username,
        "server": server,
        "proxy": "",
        "domain": domain,
        "username": username,
        "password": password,
        "authID": "",
        "displayName": "",
        "transport": "udp",
        "publicAddr": "",
        "registerRefresh": 300,
        "keepAlive": 15,
    }
    sec.update(extra)
    return sec


def ini(*accounts: dict, **settings) -> dict:
    """{Settings: {...}, Account1: accounts[0], ...} for Phone(ini=...)."""
    d: dict[str, dict] = {"Settings": {"accountId": 1, "sourcePort": 0, **settings}}
    for i, a in enumerate(accounts, 1):
        d[f"Account{i}"] = a
    return d


class TracedMessage:
    """One record of the phone's SIP trace:
    `---- 2026-11-23T17:07:53.059Z SENT UDP 127.0.0.1:5060 -> 127.0.0.1:5080 (736 bytes)`
    followed by the message."""

    def __init__(self, when: str, direction: str, transport: str, src: str, dst: str, text: str):
        self.when, self.direction, self.transport = when, direction, transport
        self.src, self.dst, self.text = src, dst, text
        self.first_line = text.split("\n", 1)[0].strip()
        self.is_response = self.first_line.startswith("SIP/2.0 ")
        self.code = int(self.first_line.split()[1]) if self.is_response else None
        self.method = None if self.is_response else self.first_line.split(" ", 1)[0]
        head, _, self.body = text.replace("\r\n", "\n").partition("\n\n")
        self.headers: list[tuple[str, str]] = []
        for line in head.split("\n")[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                self.headers.append((k.strip().lower(), v.strip()))

    @property
    def t(self) -> float:
        """Seconds since the epoch (the trace has millisecond UTC times)."""
        import datetime
        return datetime.datetime.strptime(self.when, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()

    _COMPACT = {"i": "call-id", "f": "from", "t": "to", "v": "via", "m": "contact",
                "l": "content-length", "c": "content-type"}

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k == name or self._COMPACT.get(k) == name:
                return v
        return None

    @property
    def call_id(self) -> str | None:
        return self.header("call-id")

    @property
    def cseq_method(self) -> str | None:
        c = self.header("cseq")
        return c.split()[-1] if c else None

    @property
    def to_tag(self) -> str | None:
        m = re.search(r";\s*tag=([^;>\s]+)", self.header("to") or "")
        return m.group(1) if m else None

    @property
    def sent(self) -> bool:
        return self.direction == "SENT"

    def __repr__(self) -> str:
        return f"<{self.direction} {self.first_line}>"


def parse_trace(text: str) -> list[TracedMessage]:
    """The phone's --debug trace as TracedMessage records, in order."""
    out = []
    parts = re.split(r"(?m)^---- (\S+) (SENT|RECV) (\S+) (\S+) -> (\S+) \(\d+ bytes\)\n", text)
    # parts: [before, when, dir, transport, src, dst, body, when, ...]
    for i in range(1, len(parts) - 5, 6):
        out.append(TracedMessage(parts[i], parts[i + 1], parts[i + 2], parts[i + 3],
                                 parts[i + 4], parts[i + 5].rstrip("\n")))
    return out


class EventStream:
    """`microsip --profile P events`: JSON lines read by a thread."""

    def __init__(self, phone: "Phone"):
        self.phone = phone
        self.items: list[dict] = []
        # time.time() when each item was read (same index as items): for latency.
        self.arrived: list[float] = []
        self.cursor = 0
        self._cond = threading.Condition()
        self.stderr_path = phone.workdir / f"events-{phone.profile}-{secrets.token_hex(3)}.stderr"
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [phone.bin, "--profile", phone.profile, "events"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._err,
            env=phone.env, start_new_session=True,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", errors="replace").strip()
            if not line:
                continue
            try:
                ev = json.loads(line)
                if not isinstance(ev, dict):
                    ev = {"type": "_unparsed", "line": line}
            except ValueError:
                ev = {"type": "_unparsed", "line": line}
            with self._cond:
                self.items.append(ev)
                self.arrived.append(time.time())
                self._cond.notify_all()
        with self._cond:
            self.items.append({"type": "_eof"})
            self.arrived.append(time.time())
            self._cond.notify_all()

    def __iter__(self):
        """Yields events as they come (blocks; ends at EOF)."""
        i = 0
        while True:
            with self._cond:
                while i >= len(self.items):
                    self._cond.wait(1.0)
                ev = self.items[i]
            i += 1
            if ev.get("type") == "_eof":
                return
            yield ev

    def _describe(self) -> str:
        return "\n".join(json.dumps(e) for e in self.items[-40:]) or "<no events>"

    def wait_for(self, type_: str, pred: Callable[[dict], bool] | None = None,
                 timeout: float = 30.0) -> dict:
        """The next event (after the previous wait_for's match) of that type
        matching pred; moves the cursor past it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                while self.cursor < len(self.items):
                    ev = self.items[self.cursor]
                    self.cursor += 1
                    if ev.get("type") == type_ and (pred is None or pred(ev)):
                        return ev
                    if ev.get("type") == "_eof":
                        self.cursor -= 1
                        raise AssertionError(
                            f"event stream ended while waiting for {type_}; events:\n{self._describe()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no {type_} event within {timeout:.0f}s; events:\n{self._describe()}")
                self._cond.wait(min(left, 1.0))

    def mark(self) -> int:
        """Moves the cursor to the end: the next wait_for sees only newer events."""
        with self._cond:
            self.cursor = len(self.items)
            return self.cursor

    def count(self, type_: str, pred: Callable[[dict], bool] | None = None) -> int:
        with self._cond:
            return sum(1 for e in self.items
                       if e.get("type") == type_ and (pred is None or pred(e)))

    def snapshot(self, timeout: float = 15.0) -> dict:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for e in self.items:
                    if e.get("type") == "snapshot":
                        return e
                    if e.get("type") == "_eof":
                        break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no snapshot event; events:\n{self._describe()}")
                self._cond.wait(min(left, 1.0))

    _STATE_OF = {
        "account.registered": "registered",
        "account.failed": "failed",
        "account.unregistered": "unregistered",
        "account.registering": "registering",
    }

    def account_state(self, account_no: int = 1) -> tuple[str | None, dict | None]:
        """The account's current state from the snapshot and the events after it:
        (state, the snapshot entry or event that set it)."""
        state, rec = None, None
        with self._cond:
            items = list(self.items)
        for e in items:
            t = e.get("type")
            if t == "snapshot":
                for a in e.get("accounts", []) or []:
                    if a.get("account") == account_no:
                        state, rec = a.get("state"), a
            elif t in self._STATE_OF and e.get("account") == account_no:
                state, rec = self._STATE_OF[t], e
        return state, rec

    def wait_state(self, account_no: int, state: str, timeout: float = 30.0,
                   codes: Iterable[int] | None = None) -> dict:
        """Waits until the account's current state is `state` (and its code is in
        codes, when given). Returns the snapshot entry or event that set it."""
        codes = set(codes) if codes is not None else None
        deadline = time.monotonic() + timeout
        while True:
            st, rec = self.account_state(account_no)
            if st == state and (codes is None or (rec or {}).get("code") in codes):
                return rec or {}
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"account {account_no} not {state}"
                    f"{'' if codes is None else f' with code in {sorted(codes)}'}"
                    f" within {timeout:.0f}s (now {st}: {rec}); events:\n{self._describe()}")
            with self._cond:
                self._cond.wait(min(left, 0.5))

    def close(self) -> None:
        _kill_group(self.proc, grace=3)
        try:
            self._err.close()
        except OSError:
            pass


class Phone:
    """The phone under test: `$MICROSIP_BIN --ini INI --profile NAME --debug TRACE --headless`.

    ini: {section: {key: value}} (written as UTF-8 key=value lines), or a str
    (written as is), or bytes (written as is, e.g. UTF-16LE with BOM).
    """

    def __init__(self, workdir: Path, profile: str | None = None,
                 ini: dict | str | bytes | None = None, extra_args: Iterable[str] = (),
                 runtime_dir: Path | None = None, run_as: tuple[int, int] | None = None,
                 env: dict[str, str] | None = None, prefix: Iterable[str] = ()):
        self.bin = microsip_bin()
        # A command the phone runs under, e.g. `ip netns exec NAME` (netns.nat_world);
        # none by default. Its control socket is a file: `cmd` reaches it from any
        # namespace.
        self.prefix = list(prefix)
        # (uid, gid) the phone and `cmd` run as (root only); None: as the test.
        self.run_as = run_as
        self.profile = profile or ("p" + secrets.token_hex(3))
        self.workdir = Path(workdir) / f"phone-{self.profile}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        # XDG_RUNTIME_DIR is kept short: the socket path must fit in 108 bytes.
        self._own_runtime_dir = runtime_dir is None
        self.runtime_dir = Path(runtime_dir) if runtime_dir else Path(
            tempfile.mkdtemp(prefix="ms", dir="/tmp"))
        os.chmod(self.runtime_dir, 0o700)
        self.config_home = self.workdir / "config"
        self.config_home.mkdir(exist_ok=True)
        self.ini_path = self.workdir / "microsip.ini"
        self.trace_path = self.workdir / "sip-trace.log"
        self.stdout_path = self.workdir / "phone.stdout"
        self.stderr_path = self.workdir / "phone.stderr"
        self.extra_args = list(extra_args)
        self.env = dict(os.environ)
        self.env.update(XDG_RUNTIME_DIR=str(self.runtime_dir),
                        XDG_CONFIG_HOME=str(self.config_home),
                        RUST_BACKTRACE="1")
        self.env.pop("DISPLAY", None)
        self.env.pop("WAYLAND_DISPLAY", None)
        # No session bus unless the test gives its own (SessionBus.env).
        self.env.pop("DBUS_SESSION_BUS_ADDRESS", None)
        self.env.update(env or {})
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None
        self._events: EventStream | None = None
        self._streams: list[EventStream] = []
        self.commands: list[str] = []
        if ini is not None:
            self.write_ini(ini)
        _register(self)

    # -- files ------------------------------------------------------------
    def write_ini(self, ini: dict | str | bytes) -> None:
        if isinstance(ini, dict):
            ini = render_ini(ini)
        if isinstance(ini, str):
            ini = ini.encode("utf-8")
        self.ini_path.write_bytes(ini)
        os.chmod(self.ini_path, 0o600)

    @property
    def socket_path(self) -> Path:
        return self.runtime_dir / "microsip" / f"{self.profile}.sock"

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def trace_text(self) -> str:
        try:
            return self.trace_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- process ----------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, wait_ready: bool = True, timeout: float = 30.0) -> "Phone":
        assert self.proc is None, "phone already started"
        args = [*self.prefix, self.bin, "--ini", str(self.ini_path), "--profile", self.profile,
                "--debug", str(self.trace_path), "--headless", *self.extra_args]
        self.commands.append(" ".join(args))
        self._out = open(self.stdout_path, "wb")
        self._errf = open(self.stderr_path, "wb")
        if self.run_as:
            for path in (self.runtime_dir, self.workdir, *self.workdir.rglob("*")):
                os.chown(path, *self.run_as)
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=self._errf, env=self.env,
                                     start_new_session=True, cwd=str(self.workdir),
                                     **self._identity())
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the control socket answers `status` with exit 0."""
        deadline = time.monotonic() + timeout
        last = None
        for _ in range(int(timeout / 0.1) + 2):
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"phone exited with {self.proc.returncode} before it was ready\n"
                    f"stderr:\n{tail(self.stderr_path, 40)}")
            if self.socket_path.exists():
                last = self.cmd("status", check=False, timeout=10)
                if last[0] == 0:
                    return
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        raise AssertionError(f"phone not ready within {timeout:.0f}s (socket "
                             f"{self.socket_path}, last status: {last})\n"
                             f"stderr:\n{tail(self.stderr_path, 40)}")

    def cmd(self, *words: str, check: bool = True, timeout: float = 60.0,
            profile: str | None = None) -> tuple[int, str, str]:
        """`$MICROSIP_BIN --profile NAME WORDS...` -> (exit code, stdout, stderr)."""
        args = [self.bin, "--profile", profile or self.profile, *words]
        self.commands.append(" ".join(args))
        try:
            r = subprocess.run(args, capture_output=True, env=self.env, timeout=timeout,
                               stdin=subprocess.DEVNULL, **self._identity())
        except subprocess.TimeoutExpired as e:
            raise AssertionError(f"`microsip {' '.join(words)}` did not end within {timeout:.0f}s "
                                 f"(stdout {e.stdout!r}, stderr {e.stderr!r})") from None
        out = r.stdout.decode("utf-8", errors="replace")
        err = r.stderr.decode("utf-8", errors="replace")
        if check and r.returncode != 0:
            raise AssertionError(f"`microsip {' '.join(words)}` exited {r.returncode}\n"
                                 f"stdout: {out}\nstderr: {err}")
        return r.returncode, out, err

    def _identity(self) -> dict:
        """Popen's arguments to run as `run_as` (nothing when it is None)."""
        if not self.run_as:
            return {}
        return {"user": self.run_as[0], "group": self.run_as[1], "extra_groups": []}

    def cmd_json(self, *words: str, timeout: float = 60.0) -> tuple[int, dict]:
        """`$MICROSIP_BIN --json --profile NAME WORDS...` -> (exit code, reply dict:
        {"ok": true, "text": ..., "data": ...} or {"ok": false, "code": ..., "error": ...})."""
        rc, out, err = self.cmd("--json", *words, check=False, timeout=timeout)
        line = (out.strip() or err.strip()).splitlines()[-1:] or [""]
        try:
            reply = json.loads(line[0])
        except ValueError:
            raise AssertionError(f"`microsip --json {' '.join(words)}` printed no JSON "
                                 f"(exit {rc}): stdout {out!r} stderr {err!r}") from None
        return rc, reply

    def request(self, *argv: str, timeout: float = 10.0) -> dict:
        """One JSON request straight on the control socket (no process spawned:
        fast enough to poll STATUS every few ms). Returns the reply dict."""
        return self.requests([list(argv)], timeout=timeout, tokens=False)[0]

    def requests(self, argvs: list[list[str]], timeout: float = 10.0,
                 tokens: bool = True) -> list[dict]:
        """Every request at once on one control connection (JSON lines, with a
        token `r0`, `r1`... each unless `tokens` is false; no waiting in between),
        then one reply per request, in order."""
        lines = [json.dumps({"argv": argv, "token": f"r{i}"} if tokens else {"argv": argv})
                 for i, argv in enumerate(argvs)]
        buf = self._exchange(("\n".join(lines) + "\n").encode(), len(argvs), timeout)
        try:
            replies = [json.loads(ln) for ln in buf.split(b"\n")[:len(argvs)] if ln.strip()]
        except ValueError:
            raise AssertionError(f"no JSON reply to {argvs} on the socket: {buf!r}") from None
        if len(replies) != len(argvs):
            raise AssertionError(f"{len(replies)} replies to {argvs} on the socket: {buf!r}")
        return replies

    def plain(self, line: str, replies: int = 1, timeout: float = 30.0) -> list[str]:
        """One plain request line on the control socket -> its first `replies`
        reply lines (a DDE string of several commands gets one line each), waiting
        (bounded) until that many came or the phone closed."""
        buf = self._exchange(line.encode() + b"\n", replies, timeout)
        lines = buf.decode(errors="replace").splitlines()
        if len(lines) != replies:
            raise AssertionError(f"{line!r}: wanted {replies} reply lines, got {lines}")
        return lines

    def _exchange(self, data: bytes, lines: int, timeout: float) -> bytes:
        """Sends data on one control connection; what came back until `lines`
        lines arrived, the phone closed, or the timeout."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        buf = b""
        try:
            s.connect(str(self.socket_path))
            s.sendall(data)
            deadline = time.monotonic() + timeout
            while buf.count(b"\n") < lines and time.monotonic() < deadline:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        finally:
            s.close()
        return buf

    def trace_messages(self) -> list["TracedMessage"]:
        """The SIP trace (--debug) as a list of messages (see parse_trace)."""
        return parse_trace(self.trace_text())

    def events(self) -> EventStream:
        """The phone's event stream (started on first use, then the same one)."""
        if self._events is None:
            self._events = self.new_event_stream()
        return self._events

    def new_event_stream(self) -> EventStream:
        es = EventStream(self)
        self._streams.append(es)
        return es

    def wait_exit(self, timeout: float = 30.0) -> int:
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"phone (pid {self.pid}) still running after {timeout:.0f}s\n"
                                 f"stderr:\n{tail(self.stderr_path, 40)}") from None
        return self.returncode

    def stop(self, timeout: float = 30.0) -> int | None:
        """`/exit`, then wait (bounded); else SIGTERM / SIGKILL by process group."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.cmd("/exit", check=False, timeout=timeout)
            except AssertionError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        rc = self.proc.poll()
        if rc is None:
            _kill_group(self.proc, grace=5)
            rc = self.proc.returncode
        self.returncode = rc
        return rc

    def kill(self) -> None:
        if self.proc is not None:
            _kill_group(self.proc, grace=5)

    def rss_kb(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def cleanup(self) -> None:
        try:
            self.stop(timeout=15)
        finally:
            for es in self._streams:
                es.close()
            for f in (getattr(self, "_out", None), getattr(self, "_errf", None)):
                if f:
                    f.close()
            if self._own_runtime_dir and not self.running():
                shutil.rmtree(self.runtime_dir, ignore_errors=True)

    def diagnostics(self) -> list[tuple[str, str]]:
        state = "not started" if self.proc is None else (
            "running" if self.proc.poll() is None else f"exited {self.proc.returncode}")
        out = [
            (f"phone {self.profile} ({state}) commands", "\n".join(self.commands[-20:])),
            (f"phone {self.profile} stderr (tail)", tail(self.stderr_path, 60)),
            (f"phone {self.profile} SIP trace (tail)", tail(self.trace_path, 80)),
        ]
        for es in self._streams:
            out.append((f"phone {self.profile} events", es._describe()))
        return out


# --------------------------------------------------------------------------
# SIPp
# --------------------------------------------------------------------------

class Sipp:
    """A SIPp scenario from tests/e2e/sipp/ run in the background (UAS by default).

    remote: "127.0.0.1:PORT" makes SIPp a UAC calling there (the scenario's
    [remote_ip]:[remote_port]). builtin: a scenario built into SIPp ("uac",
    "uas") instead of a file. files: {name: bytes or Path} copied into SIPp's
    working folder before it starts (e.g. the raw mu-law file an
    `rtp_stream` plays). media: SIPp's media IP/port (-mi 127.0.0.1 -mp FREE)
    is set whenever the scenario mentions media (auto), or always (True).
    trace=False drops the message log (load runs).
    """

    def __init__(self, workdir: Path, scenario: str | None = None, port: int | None = None,
                 calls: int = 1, timeout_s: int = 120, extra: Iterable[str] = (),
                 remote: str | None = None, builtin: str | None = None,
                 files: dict | None = None, media: bool | None = None, trace: bool = True,
                 ip: str = LOOPBACK):
        # ip: SIPp's local address for SIP and media (-i, -mi): "::1" for IPv6.
        self.ip = ip
        if (scenario is None) == (builtin is None):
            raise ValueError("give a scenario file or a builtin scenario name")
        if builtin is not None:
            self.scenario = Path(f"builtin-{builtin}")
        else:
            self.scenario = SIPP_DIR / scenario if not Path(scenario).is_absolute() \
                else Path(scenario)
        self.builtin = builtin
        self.remote = remote
        self.trace = trace
        self.port = port or free_port("sip")
        self.workdir = Path(workdir) / f"sipp-{self.scenario.stem}-{self.port}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        for name, content in (files or {}).items():
            data = Path(content).read_bytes() if isinstance(content, Path) else content
            (self.workdir / name).write_bytes(data)
        if media is None:
            text = "" if builtin else self.scenario.read_text(errors="replace")
            media = builtin is not None or "media_port" in text or "rtp_stream" in text
        self.media_port = free_port("udp") if media else None
        self.calls = calls
        self.timeout_s = timeout_s
        self.extra = list(extra)
        self.message_log = self.workdir / "messages.log"
        self.error_log = self.workdir / "errors.log"
        self.screen_log = self.workdir / "screen.log"
        self.stdout_path = self.workdir / "sipp.stdout"
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None
        _register(self)

    @property
    def address(self) -> str:
        return host_port(self.ip, self.port)

    def start(self) -> "Sipp":
        scen = ["-sn", self.builtin] if self.builtin else ["-sf", str(self.scenario)]
        args = [which("sipp") or "sipp", *scen, "-i", self.ip,
                "-p", str(self.port), "-m", str(self.calls), "-timeout", f"{self.timeout_s}s",
                "-nostdin", "-trace_err", "-error_file", str(self.error_log)]
        if self.trace:
            args += ["-trace_msg", "-message_file", str(self.message_log)]
        args += ["-trace_screen", "-screen_file", str(self.screen_log)]
        if self.media_port:
            args += ["-mi", self.ip, "-mp", str(self.media_port)]
        args += self.extra
        if self.remote:
            args.append(self.remote)
        self.args = args
        self._out = open(self.stdout_path, "wb")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=subprocess.STDOUT, cwd=str(self.workdir),
                                     start_new_session=True)
        # Bounded wait until SIPp has bound its port (or died).
        def bound():
            if self.proc.poll() is not None:
                return "exited"
            s = socket.socket(ip_family(self.ip), socket.SOCK_DGRAM)
            try:
                s.bind((self.ip, self.port))
                return None
            except OSError:
                return "bound"
            finally:
                s.close()
        state = wait_until(bound, 15, 0.05, f"sipp to bind {self.address}")
        # A short scenario can be over before its port is seen (over TCP the UDP
        # probe never sees it): an exit with 0 is its success, not a failure.
        if state == "exited" and self.proc.returncode != 0:
            raise AssertionError(f"sipp exited at once with {self.proc.returncode}:\n"
                                 f"{tail(self.stdout_path, 30)}\n{tail(self.error_log, 30)}")
        return self

    def wait(self, timeout: float | None = None) -> int:
        """Waits for SIPp to end by itself; returns its exit code."""
        timeout = timeout if timeout is not None else self.timeout_s + 30
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"sipp still running after {timeout:.0f}s") from None
        return self.returncode

    def stop(self) -> int | None:
        if self.proc is not None:
            _kill_group(self.proc, grace=5)
            self.returncode = self.proc.returncode
        return self.returncode

    def messages(self) -> str:
        try:
            return self.message_log.read_text(errors="replace")
        except OSError:
            return ""

    def received(self, method: str | None = None) -> list[str]:
        """Messages SIPp received (full text), optionally only requests of `method`."""
        out = []
        for block in re.split(r"\n-{20,}[^\n]*\n", "\n" + self.messages()):
            m = re.match(r"\s*(UDP|TCP|TLS|SCTP) message received \[\d+\] bytes :\s*\n+(.*)",
                         block, re.S)
            if not m:
                continue
            text = m.group(2)
            if method is None or text.startswith(method + " "):
                out.append(text)
        return out

    def sent(self) -> list[str]:
        out = []
        for block in re.split(r"\n-{20,}[^\n]*\n", "\n" + self.messages()):
            m = re.match(r"\s*(UDP|TCP|TLS|SCTP) message sent \(\d+ bytes\):\s*\n+(.*)",
                         block, re.S)
            if m:
                out.append(m.group(2))
        return out

    def diagnostics(self) -> list[tuple[str, str]]:
        state = "not started" if self.proc is None else (
            "running" if self.proc.poll() is None else f"exited {self.proc.returncode}")
        return [
            (f"sipp {self.scenario.name} ({state}) errors", tail(self.error_log, 40)),
            (f"sipp {self.scenario.name} messages (tail)", tail(self.message_log, 80)),
        ]

    def cleanup(self) -> None:
        self.stop()
        f = getattr(self, "_out", None)
        if f:
            f.close()


# --------------------------------------------------------------------------
# baresip: the other phone
# --------------------------------------------------------------------------

BARESIP_MODULE_DIR = "/usr/lib/baresip/modules"


def _netstring(data: bytes) -> bytes:
    return str(len(data)).encode() + b":" + data + b","


class Baresip:
    """baresip 1.0 as the other phone, with its own config folder.

    - SIP on 127.0.0.1:sip_port (UDP), registered at the registrar
      127.0.0.1:registrar_port (or kamailio.port) as `user`, with the registrar
      as outbound proxy for every request (account line
      `<sip:USER@127.0.0.1;transport=udp>;auth_pass=..;answermode=auto|manual;
      audio_codecs=pcmu,pcma;regint=600;outbound="sip:127.0.0.1:REGPORT;transport=udp"`).
      register=False / outbound=False: no REGISTER / requests go straight to
      the Request-URI (baresip reached directly, e.g. by SIPp).
    - Audio source: `aufile` playing `source` (a WAV, 8 kHz mono 16-bit), or a
      tone file made here (`tone=FREQ`, `source_seconds` long; baresip hangs up
      when its source file ends, so keep it longer than any call). tone=0 is
      silence. Player and alert: `aubridge` (no CPU).
    - `sndfile` records every call into `recdir`: dump-*-enc.wav (what it
      sent), dump-*-dec.wav (what it received; only the RTP that came, and
      nothing more after a direction-changing re-INVITE: a baresip 1.0 quirk).
    - `ctrl_tcp` on 127.0.0.1:ctrl_port: one client (this object) keeps the
      connection and one reader thread collects every event (each with `_t`,
      time.monotonic() when read).
    - `-s`: baresip's SIP trace goes to `log` (sip_trace=False for load).
    - message_peer: a URI to exchange text messages with: it is baresip's one
      contact (module `contact`), so `message(text)` sends it a MESSAGE; and
      the `stdio` UI is loaded (stdin a pipe kept open), so the MESSAGEs baresip
      receives are printed to the log as `PEER: "TEXT"` (`messages_received()`).
    - Runs with `-t quit_after` so it ends by itself even if a test leaks it.
    - modules: codec modules to load ("g711"; "g722", "opus" are installed).
      baresip's aufile source must be at the call codec's own rate, or the call
      fails ("must have sample-rate 16000 Hz"): 8 kHz mono for G.711, 16 kHz
      mono for G.722, 48 kHz STEREO for Opus (its recordings are then 48 kHz
      stereo too). codecs takes name/rate/channels entries ("G722/16000/1",
      "opus/48000/2"); a bare "g722" is read as g722/8000 and not found.
    - mediaenc: the account's media encryption (`;mediaenc=`, module `srtp`
      loaded): "srtp" (best effort: offers RTP/AVP with a=crypto, answers
      RTP/AVP or RTP/SAVP, encrypts when the other side gave a key) or
      "srtp-mand" (offers RTP/SAVP, accepts only RTP/SAVP); None: clear RTP.
    """

    def __init__(self, workdir: Path, user: str, password: str,
                 registrar_port: int | None = None, kamailio: "Kamailio | None" = None,
                 answermode: str = "auto", tone: float | None = 440.0,
                 source: Path | str | None = None, source_seconds: float = 300.0,
                 codecs: str = "pcmu,pcma", modules: Iterable[str] = ("g711",),
                 sip_port: int | None = None, quit_after: int = 900,
                 account_extra: str = "", extra_config: str = "", name: str | None = None,
                 sip_trace: bool = True, register: bool = True, outbound: bool = True,
                 max_calls: int = 8, message_peer: str | None = None,
                 ip: str | None = None, host: str | None = None,
                 prefix: Iterable[str] = (), mediaenc: str | None = None,
                 registrar_ip: str | None = None, netns_path: str | None = None):
        # ip (or host, the same): where it listens (SIP, RTP) and registers: the
        # Kamailio's by default; ctrl_tcp stays on 127.0.0.1 of the namespace it runs
        # in. prefix: a command it runs under; none by default. registrar_ip: the
        # registrar's address (AOR domain and outbound proxy) when it is not ip (a
        # baresip in a NATed home: ip its private address). netns_path: the network
        # namespace it runs in (/var/run/netns/NAME), when not the test's: ctrl_tcp
        # is reached from inside it.
        self.ip = host or ip or (kamailio.ip if kamailio else LOOPBACK)
        self.registrar_ip = registrar_ip or self.ip
        self.netns_path = netns_path
        self.prefix = list(prefix)
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", user):
            raise ValueError(f"user name {user!r} not supported")
        if re.search(r"[;,<>\s\"]", password):
            raise ValueError("baresip's account line cannot carry ; , < > space or quotes "
                             "in auth_pass: use another password for a baresip user")
        self.kamailio = kamailio
        self.registrar_port = registrar_port or (kamailio.port if kamailio else None)
        self.register, self.outbound = register, outbound
        if self.registrar_port is None and (register or outbound):
            raise ValueError("registrar_port or kamailio is required")
        self.user, self.password = user, password
        self.answermode, self.codecs = answermode, codecs
        self.sip_port = sip_port or free_port("sip", span=2)  # TLS on the next one
        self.ctrl_port = free_port("tcp")
        self.name = name or f"bs{user}"
        self.workdir = Path(workdir) / f"baresip-{user}-{self.sip_port}"
        self.cfgdir = self.workdir / "config"
        self.recdir = self.workdir / "recordings"
        self.cfgdir.mkdir(parents=True, exist_ok=True)
        self.recdir.mkdir(exist_ok=True)
        self.log = self.workdir / "baresip.log"
        self.quit_after = quit_after
        self.sip_trace = sip_trace
        self.max_calls = max_calls
        if source is None:
            from audio import make_tone_wav  # local import: numpy only when needed
            source = make_tone_wav(self.workdir / f"source-{tone or 0:g}Hz.wav", tone or 0,
                                   source_seconds)
        self.source = Path(source)
        self.modules = list(modules)
        self.mediaenc = mediaenc
        if mediaenc is not None and "srtp" not in self.modules:
            self.modules.append("srtp")
        self.account_extra = account_extra
        self.extra_config = extra_config
        self.message_peer = message_peer
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.events: list[dict] = []
        self.cursor = 0
        self._responses: dict[str, dict] = {}
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None
        self._token = 0
        self.sent_commands: list[str] = []
        self._write_config()
        _register(self)

    # -- config -----------------------------------------------------------
    @property
    def aor(self) -> str:
        """The address of record as callers use it (no port)."""
        return f"sip:{self.user}@{uri_host(self.registrar_ip)}"

    @property
    def contact_uri(self) -> str:
        """Direct address, bypassing the registrar."""
        return f"sip:{self.user}@{host_port(self.ip, self.sip_port)}"

    def account_line(self) -> str:
        # The AOR has no port (callers dial sip:USER@127.0.0.1); every request
        # goes through the registrar as outbound proxy (preloaded Route, which
        # kamailio.cfg consumes), so baresip can also call a bare
        # sip:USER@127.0.0.1 given in a REFER.
        line = (f"<sip:{self.user}@{uri_host(self.registrar_ip)};transport=udp>"
                f";auth_pass={self.password};answermode={self.answermode}"
                f";audio_codecs={self.codecs};regint={600 if self.register else 0}")
        if self.outbound:
            line += (f";outbound=\"sip:{host_port(self.registrar_ip, self.registrar_port)}"
                     f";transport=udp\"")
        if self.mediaenc:
            line += f";mediaenc={self.mediaenc}"
        return line + self.account_extra

    def _write_config(self) -> None:
        mods = "".join(f"module\t\t\t{m if m.endswith('.so') else m + '.so'}\n"
                       for m in self.modules)
        cfg = (
            "# written by tests/e2e/peers.py\n"
            "poll_method\t\tepoll\n"
            f"sip_listen\t\t{host_port(self.ip, self.sip_port)}\n"
            f"net_interface\t\t{self.ip}\n"
            + ("net_prefer_ipv6\t\tyes\n" if ":" in self.ip else "") +
            "call_local_timeout\t120\n"
            f"call_max_calls\t\t{self.max_calls}\n"
            f"audio_player\t\taubridge,{self.name}\n"
            f"audio_source\t\taufile,{self.source}\n"
            f"audio_alert\t\taubridge,{self.name}\n"
            "audio_level\t\tno\n"
            "rtp_stats\t\tno\n"
            f"module_path\t\t{BARESIP_MODULE_DIR}\n"
            f"{mods}"
            "module\t\t\taufile.so\n"
            "module\t\t\taubridge.so\n"
            "module\t\t\tsndfile.so\n"
            "module_app\t\taccount.so\n"
            "module_app\t\tmenu.so\n"
            "module_app\t\tctrl_tcp.so\n"
            f"ctrl_tcp_listen\t\t{LOOPBACK}:{self.ctrl_port}\n"
            f"snd_path\t\t{self.recdir}\n"
            f"{self.extra_config}"
        )
        contacts = ""
        if self.message_peer:
            cfg += "module\t\t\tstdio.so\nmodule_app\t\tcontact.so\n"
            contacts = f"<{self.message_peer}>\n"
        (self.cfgdir / "config").write_text(cfg)
        (self.cfgdir / "accounts").write_text(self.account_line() + "\n")
        (self.cfgdir / "contacts").write_text(contacts)

    # -- process ----------------------------------------------------------
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, wait_registered: bool = True, timeout: float = 30.0) -> "Baresip":
        assert self.proc is None, "baresip already started"
        exe = which("baresip") or "baresip"
        self._logf = open(self.log, "wb")
        args = [*self.prefix, exe, "-f", str(self.cfgdir), "-t", str(self.quit_after)]
        if self.sip_trace:
            args.append("-s")  # SIP trace into the log
        # The stdio UI needs a stdin it can poll (not /dev/null); nothing is written.
        stdin = subprocess.PIPE if self.message_peer else subprocess.DEVNULL
        self.proc = subprocess.Popen(args,
                                     stdin=stdin, stdout=self._logf,
                                     stderr=subprocess.STDOUT, cwd=str(self.workdir),
                                     start_new_session=True)

        def connect():
            if self.proc.poll() is not None:
                raise AssertionError(f"baresip exited with {self.proc.returncode}:\n"
                                     f"{tail(self.log, 40)}")
            try:
                if self.netns_path:
                    import netns  # local import: only for a baresip in another namespace
                    with netns.entered(self.netns_path):
                        return socket.create_connection((LOOPBACK, self.ctrl_port), timeout=1)
                return socket.create_connection((LOOPBACK, self.ctrl_port), timeout=1)
            except OSError:
                return None
        self.sock = wait_until(connect, timeout, 0.05, f"baresip ctrl_tcp on {self.ctrl_port}")
        self.sock.settimeout(None)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if wait_registered and self.register:
            self.wait_registered(timeout)
        return self

    def _read(self) -> None:
        buf = b""
        sock = self.sock
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
            while True:
                m = re.match(rb"(\d+):", buf)
                if not m:
                    if buf and not buf[:1].isdigit():
                        buf = b""  # out of sync: drop (never seen)
                    break
                n = int(m.group(1))
                start = m.end()
                if len(buf) < start + n + 1:
                    break
                payload, buf = buf[start:start + n], buf[start + n + 1:]
                try:
                    msg = json.loads(payload.decode("utf-8", errors="replace"))
                except ValueError:
                    msg = {"type": "_unparsed", "raw": payload.decode("utf-8", "replace")}
                msg["_t"] = time.monotonic()
                with self._cond:
                    if msg.get("response"):
                        self._responses[str(msg.get("token"))] = msg
                    else:
                        self.events.append(msg)
                    self._cond.notify_all()
        with self._cond:
            self.events.append({"type": "_eof", "_t": time.monotonic()})
            self._cond.notify_all()

    def command(self, command: str, params: str | None = None, timeout: float = 15.0) -> dict:
        """Sends one ctrl_tcp command; returns its response dict (ok, data)."""
        assert self.sock is not None, "baresip not started"
        self._token += 1
        token = f"t{self._token}"
        msg: dict = {"command": command, "token": token}
        if params is not None:
            msg["params"] = params
        self.sent_commands.append(f"{command} {params or ''}".strip())
        self.sock.sendall(_netstring(json.dumps(msg).encode()))
        deadline = time.monotonic() + timeout
        with self._cond:
            while token not in self._responses:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"baresip gave no response to {msg} within {timeout:.0f}s")
                self._cond.wait(min(left, 0.5))
            return self._responses.pop(token)

    def _ok(self, command: str, params: str | None = None) -> dict:
        r = self.command(command, params)
        if not r.get("ok"):
            raise AssertionError(f"baresip refused {command} {params or ''}: {r}")
        return r

    # -- call control -----------------------------------------------------
    def dial(self, uri: str) -> dict:
        return self._ok("dial", uri)

    def answer(self) -> dict:
        return self._ok("accept")

    def hangup(self) -> dict:
        return self._ok("hangup")

    def hold(self) -> dict:
        return self._ok("hold")

    def resume(self) -> dict:
        return self._ok("resume")

    def transfer(self, uri: str) -> dict:
        return self._ok("transfer", uri)

    def list_calls(self) -> str:
        return str(self.command("listcalls").get("data", ""))

    # -- text messages (message_peer) ---------------------------------------
    def message(self, text: str) -> dict:
        """Sends a MESSAGE with `text` to message_peer (its answer is not reported
        here: watch the other side)."""
        assert self.message_peer, "Baresip(message_peer=URI) is needed to send messages"
        return self._ok("message", text)

    def messages_received(self) -> list[tuple[str, str]]:
        """(sender URI, text) of every MESSAGE baresip took, as its UI printed them."""
        assert self.message_peer, "Baresip(message_peer=URI) prints received messages"
        text = self.log.read_text(errors="replace")
        return re.findall(r'(?m)^\r?(sips?:\S+): "(.*)"\r?$', text)

    # -- events -----------------------------------------------------------
    def _describe(self) -> str:
        with self._cond:
            items = list(self.events[-40:])
        return "\n".join(json.dumps({k: v for k, v in e.items() if k != "_t"})
                         for e in items) or "<no events>"

    def mark(self) -> int:
        """Moves the cursor to the end: the next wait_event sees only newer events."""
        with self._cond:
            self.cursor = len(self.events)
            return self.cursor

    def wait_event(self, type_: str, pred: Callable[[dict], bool] | None = None,
                   timeout: float = 30.0) -> dict:
        """The next event (after the previous match) of that type matching pred;
        moves the cursor past it. Events: CALL_INCOMING, CALL_RINGING,
        CALL_PROGRESS, CALL_ESTABLISHED, CALL_CLOSED (param "603 Decline"),
        CALL_REMOTE_SDP (param "offer"/"answer"), CALL_TRANSFER, REGISTER_OK, ..."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                while self.cursor < len(self.events):
                    ev = self.events[self.cursor]
                    self.cursor += 1
                    if ev.get("type") == type_ and (pred is None or pred(ev)):
                        return ev
                    if ev.get("type") == "_eof":
                        self.cursor -= 1
                        raise AssertionError(f"baresip {self.user} ended while waiting for "
                                             f"{type_}; events:\n{self._describe()}\n"
                                             f"log:\n{tail(self.log, 30)}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"baresip {self.user}: no {type_} within "
                                         f"{timeout:.0f}s; events:\n{self._describe()}")
                self._cond.wait(min(left, 0.5))

    def count(self, type_: str, pred: Callable[[dict], bool] | None = None) -> int:
        with self._cond:
            return sum(1 for e in self.events
                       if e.get("type") == type_ and (pred is None or pred(e)))

    # -- registration -----------------------------------------------------
    def _my_contacts(self) -> list[dict]:
        assert self.kamailio is not None, "registered() needs the Kamailio object"
        return [c for c in self.kamailio.contacts(self.user)
                if host_port(self.ip, self.sip_port) in c["address"]]

    def registered(self) -> bool:
        """Whether Kamailio's location table holds this baresip's contact."""
        return bool(self._my_contacts())

    def wait_registered(self, timeout: float = 30.0) -> None:
        if self.kamailio is not None:
            wait_until(self.registered, timeout, 0.1,
                       f"baresip {self.user} (port {self.sip_port}) in ul.dump")
        else:
            self.wait_event("REGISTER_OK", timeout=timeout)

    # -- recordings -------------------------------------------------------
    def recordings(self, index: int = -1) -> tuple[Path, Path]:
        """(enc, dec) of the latest call (index -1; -2 the one before, ...):
        enc = what baresip sent, dec = what it received. Files are named
        dump-<start time, to the second>-enc/dec.wav."""
        def pick(kind):
            # The name holds the call's start time (to the second): name order
            # is call order.
            fs = sorted(self.recdir.glob(f"dump-*-{kind}.wav"), key=lambda p: p.name)
            if not fs or len(fs) < -index:
                raise AssertionError(f"no {kind} recording #{index} in {self.recdir} "
                                     f"(files: {sorted(os.listdir(self.recdir))})")
            return fs[index]
        return pick("enc"), pick("dec")

    def recording_files(self) -> list[Path]:
        return sorted(self.recdir.glob("dump-*.wav"))

    # -- end --------------------------------------------------------------
    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None and self.sock is not None:
            try:
                self.command("quit", timeout=3)
            except (AssertionError, OSError):
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        _kill_group(self.proc, grace=5)
        for f in (self.sock, self.proc.stdin):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
        return self.proc.returncode

    def diagnostics(self) -> list[tuple[str, str]]:
        state = "not started" if self.proc is None else (
            "running" if self.proc.poll() is None else f"exited {self.proc.returncode}")
        recs = "\n".join(f"{p.name} {p.stat().st_size} bytes" for p in self.recording_files())
        return [
            (f"baresip {self.user} ({state}) commands", "\n".join(self.sent_commands[-20:])),
            (f"baresip {self.user} events", self._describe()),
            (f"baresip {self.user} log (tail)", tail(self.log, 60)),
            (f"baresip {self.user} recordings", recs),
        ]

    def cleanup(self) -> None:
        self.stop()
        f = getattr(self, "_logf", None)
        if f:
            f.close()


# --------------------------------------------------------------------------
# PulseAudio: a paced sound device without a sound card
# --------------------------------------------------------------------------

class StunServer:
    """A STUN server (Debian's coturn: `turnserver --stun-only`) on host:port (UDP),
    for the NAT tests (netns.nat_world). `binding(from_host)` asks it once, as a
    check that it answers."""

    def __init__(self, workdir: Path, host: str = LOOPBACK, port: int | None = None,
                 prefix: Iterable[str] = ()):
        self.host = host
        self.port = port or free_port("udp")
        self.prefix = list(prefix)
        self.workdir = Path(workdir) / f"stun-{self.port}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log = self.workdir / "turnserver.log"
        self.proc: subprocess.Popen | None = None
        _register(self)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> "StunServer":
        exe = which("turnserver") or "/usr/bin/turnserver"
        self._logf = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [*self.prefix, exe, "-n", "--stun-only", "-L", self.host, "-p", str(self.port),
             "--no-cli", "--no-tls", "--no-dtls", "--log-file", "stdout", "--simple-log",
             "--pidfile", str(self.workdir / "turnserver.pid")],
            stdin=subprocess.DEVNULL, stdout=self._logf, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=str(self.workdir))

        def answers():
            if self.proc.poll() is not None:
                raise AssertionError(f"turnserver exited with {self.proc.returncode}:\n"
                                     f"{tail(self.log, 40)}")
            return self.binding(timeout=0.3)
        wait_until(answers, timeout, 0.1, f"STUN server on {self.address}")
        return self

    def binding(self, timeout: float = 1.0) -> tuple[str, int] | None:
        """One Binding request from this namespace; the XOR-MAPPED-ADDRESS it
        answered, or None."""
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind((self.host, 0))
            s.settimeout(timeout)
            tid = secrets.token_bytes(12)
            s.sendto(b"\x00\x01\x00\x00\x21\x12\xa4\x42" + tid, (self.host, self.port))
            data, _ = s.recvfrom(2048)
        except OSError:
            return None
        finally:
            s.close()
        at = 20
        while at + 4 <= len(data):
            kind, n = struct.unpack("!HH", data[at:at + 4])
            if kind == 0x0020 and n >= 8:
                port = struct.unpack("!H", data[at + 6:at + 8])[0] ^ 0x2112
                ip = bytes(a ^ b for a, b in zip(data[at + 8:at + 12], b"\x21\x12\xa4\x42"))
                return socket.inet_ntoa(ip), port
            at += 4 + (n + 3) // 4 * 4
        return None

    def diagnostics(self) -> list[tuple[str, str]]:
        return [(f"STUN server {self.address} log (tail)", tail(self.log, 30))]

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            _kill_group(self.proc, grace=5)
        f = getattr(self, "_logf", None)
        if f:
            f.close()


class PulseAudio:
    """A private PulseAudio server with null sinks: real, paced sound devices with
    no sound card (it paces roughly: assert loosely on timing).

    `pulseaudio -n -F CONFIG --exit-idle-time=-1 --daemonize=no` with its own
    HOME / XDG_RUNTIME_DIR / XDG_CONFIG_HOME under a short folder in /tmp, one
    `module-null-sink` per name in `sinks` (each also has `NAME.monitor`, a
    recording device holding what the sink plays), and
    `module-native-protocol-unix` on its own socket (anonymous auth). Clients
    reach it with env PULSE_SERVER=unix:SOCKET (`self.env`). Runs as root
    without --system (a warning only). Killed by pid, with every recorder and
    player started here.
    """

    def __init__(self, workdir: Path, sinks: Iterable[str] = ("spk", "mic"),
                 rate: int = 44100):
        self.bin = which("pulseaudio")
        if self.bin is None:
            raise AssertionError("pulseaudio not installed (scripts/install-test-deps.sh)")
        self.sinks = list(sinks)
        self.workdir = Path(workdir) / f"pulseaudio-{secrets.token_hex(3)}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        # The socket path must fit in 108 bytes: a short folder of its own.
        self.home = Path(tempfile.mkdtemp(prefix="pa", dir="/tmp"))
        os.chmod(self.home, 0o700)
        self.socket = self.home / "native"
        self.config = self.workdir / "default.pa"
        lines = [f"load-module module-null-sink sink_name={n} rate={rate}" for n in self.sinks]
        lines.append(f"load-module module-native-protocol-unix socket={self.socket} "
                     "auth-anonymous=1")
        self.config.write_text("\n".join(lines) + "\n")
        self.log = self.workdir / "pulseaudio.log"
        self.server = f"unix:{self.socket}"
        self.env = dict(os.environ)
        rt = self.home / "rt"
        rt.mkdir(mode=0o700, exist_ok=True)
        self.env.update(HOME=str(self.home), XDG_RUNTIME_DIR=str(rt),
                        XDG_CONFIG_HOME=str(self.home / "config"), PULSE_SERVER=self.server)
        self.env.pop("DISPLAY", None)
        self.proc: subprocess.Popen | None = None
        self.helpers: list[subprocess.Popen] = []
        _register(self)

    def start(self, timeout: float = 20.0) -> "PulseAudio":
        self._logf = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [self.bin, "-n", "-F", str(self.config), "--exit-idle-time=-1",
             "--daemonize=no", "--disable-shm=yes", "--use-pid-file=no",
             "--log-target=stderr", "--log-level=notice"],
            stdin=subprocess.DEVNULL, stdout=self._logf, stderr=subprocess.STDOUT,
            env=self.env, start_new_session=True, cwd=str(self.workdir))

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"pulseaudio exited {self.proc.returncode}:\n"
                                     f"{tail(self.log, 30)}")
            r = subprocess.run(["pactl", "list", "short", "sinks"], env=self.env,
                               capture_output=True, timeout=10, stdin=subprocess.DEVNULL)
            names = r.stdout.decode(errors="replace")
            return r.returncode == 0 and all(n in names for n in self.sinks)
        wait_until(ready, timeout, 0.2, "pulseaudio ready with its sinks")
        return self

    def pactl(self, *args: str) -> str:
        r = subprocess.run(["pactl", *args], env=self.env, capture_output=True, timeout=15,
                           stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise AssertionError(f"pactl {' '.join(args)}: {r.stderr.decode(errors='replace')}")
        return r.stdout.decode(errors="replace")

    def default_sink(self) -> str:
        """The server's default sink (what `default` plays to)."""
        for line in self.pactl("info").splitlines():
            if line.startswith("Default Sink:"):
                return line.split(":", 1)[1].strip()
        raise AssertionError("pactl info names no default sink")

    def _helper(self, args: list[str], out=None) -> subprocess.Popen:
        p = subprocess.Popen(args, env=self.env, stdin=subprocess.DEVNULL,
                             stdout=out or subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        self.helpers.append(p)
        return p

    def play(self, sink: str, wav: Path) -> subprocess.Popen:
        """`paplay -d SINK WAV` in the background (stop with stop_helper)."""
        return self._helper(["paplay", "-d", sink, str(wav)])

    def record(self, source: str, rate: int = 8000) -> "PulseRecording":
        """Starts `parec -d SOURCE` (mono 16-bit at `rate`); .stop() gives the samples."""
        path = self.workdir / f"rec-{source}-{secrets.token_hex(3)}.raw"
        f = open(path, "wb")
        p = self._helper(["parec", "-d", source, f"--rate={rate}", "--channels=1",
                          "--format=s16le", "--raw"], out=f)
        return PulseRecording(self, p, f, path, rate)

    def stop_helper(self, p: subprocess.Popen) -> None:
        _kill_group(p, grace=3)

    def stop(self) -> int | None:
        for p in self.helpers:
            _kill_group(p, grace=3)
        rc = _kill_group(self.proc, grace=5) if self.proc else None
        return rc

    def diagnostics(self) -> list[tuple[str, str]]:
        return [("pulseaudio log (tail)", tail(self.log, 40))]

    def cleanup(self) -> None:
        self.stop()
        f = getattr(self, "_logf", None)
        if f:
            f.close()
        shutil.rmtree(self.home, ignore_errors=True)


class PulseRecording:
    """A running `parec`; stop() ends it and returns the samples (floats in [-1, 1])."""

    def __init__(self, pa: PulseAudio, proc: subprocess.Popen, f, path: Path, rate: int):
        self.pa, self.proc, self.f, self.path, self.rate = pa, proc, f, path, rate

    def stop(self):
        import numpy as np  # local import: numpy only when needed
        self.pa.stop_helper(self.proc)
        self.f.close()
        data = self.path.read_bytes()
        return np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.float64) / 32768.0


# --------------------------------------------------------------------------
# A tiny SIP registration client (for the harness's own tests)
# --------------------------------------------------------------------------

class SipResponse:
    def __init__(self, raw: str):
        self.raw = raw
        head = raw.split("\r\n\r\n", 1)[0]
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        self.code = int(parts[1])
        self.reason = parts[2] if len(parts) > 2 else ""
        self.headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                self.headers.append((k.strip().lower(), v.strip()))

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)

    def __repr__(self) -> str:
        return f"<{self.code} {self.reason}>"


def _digest_params(value: str) -> dict[str, str]:
    value = re.sub(r"^\s*Digest\s+", "", value, flags=re.I)
    return {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
            for m in re.finditer(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))', value)}


class SipUac:
    """Sends REGISTERs like a phone would: answers one digest challenge per
    attempt (MD5 or SHA-256, qop=auth), retries once on 423 with Min-Expires,
    retransmits on UDP (T1 500 ms, up to 32 s). Keeps one Call-ID."""

    def __init__(self, server_port: int, user: str, password: str, transport: str = "udp",
                 user_agent: str = "e2e-uac", domain: str = LOOPBACK,
                 honour_423: bool = True):
        self.server = (LOOPBACK, server_port)
        self.user, self.password, self.transport = user, password, transport
        self.user_agent, self.domain = user_agent, domain
        self.honour_423 = honour_423
        self.call_id = secrets.token_hex(10) + "@" + LOOPBACK
        self.tag = secrets.token_hex(4)
        self.cseq = 0
        if transport == "udp":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind((LOOPBACK, 0))
        else:
            self.sock = socket.create_connection(self.server, timeout=5)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.local_port = self.sock.getsockname()[1]
        self.sent: list[str] = []
        self._buf = b""

    def close(self) -> None:
        self.sock.close()

    def _request(self, expires: int, auth: str | None) -> str:
        self.cseq += 1
        t = self.transport.upper()
        tp = "" if self.transport == "udp" else f";transport={self.transport}"
        lines = [
            f"REGISTER sip:{self.server[0]}:{self.server[1]}{tp} SIP/2.0",
            f"Via: SIP/2.0/{t} {LOOPBACK}:{self.local_port};branch=z9hG4bK{secrets.token_hex(8)};rport",
            "Max-Forwards: 70",
            f"From: <sip:{self.user}@{self.domain}>;tag={self.tag}",
            f"To: <sip:{self.user}@{self.domain}>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} REGISTER",
            f"Contact: <sip:{self.user}@{LOOPBACK}:{self.local_port}{tp}>",
            f"Expires: {expires}",
            f"User-Agent: {self.user_agent}",
        ]
        if auth:
            lines.append(auth)
        lines += ["Content-Length: 0", "", ""]
        return "\r\n".join(lines)

    def _recv_one(self, timeout: float) -> str | None:
        self.sock.settimeout(timeout)
        try:
            if self.transport == "udp":
                data, _ = self.sock.recvfrom(65535)
                return data.decode("utf-8", errors="replace")
            while b"\r\n\r\n" not in self._buf:
                chunk = self.sock.recv(65535)
                if not chunk:
                    return None
                self._buf += chunk
            head, rest = self._buf.split(b"\r\n\r\n", 1)
            m = re.search(rb"(?im)^(content-length|l)\s*:\s*(\d+)", head)
            n = int(m.group(2)) if m else 0
            while len(rest) < n:
                chunk = self.sock.recv(65535)
                if not chunk:
                    return None
                rest += chunk
            self._buf = rest[n:]
            return (head + b"\r\n\r\n" + rest[:n]).decode("utf-8", errors="replace")
        except (socket.timeout, TimeoutError):
            return None

    def _transact(self, msg: str, timeout: float = 32.0) -> SipResponse | None:
        """Sends a request, returns its final response (None on timeout)."""
        self.sent.append(msg)
        cseq = f"{self.cseq} {msg.split(' ', 1)[0]}"
        deadline = time.monotonic() + timeout
        interval = 0.5
        next_send = 0.0
        for _ in range(1000):
            now = time.monotonic()
            if now >= deadline:
                return None
            if now >= next_send and (self.transport == "udp" or next_send == 0.0):
                self.sock.sendto(msg.encode(), self.server) if self.transport == "udp" \
                    else self.sock.sendall(msg.encode())
                next_send = now + interval
                interval = min(interval * 2, 4.0)
            raw = self._recv_one(max(0.01, min(next_send, deadline) - time.monotonic()))
            if raw is None:
                continue
            if not raw.startswith("SIP/2.0"):
                continue
            resp = SipResponse(raw)
            if resp.header("cseq") != cseq or resp.code < 200:
                continue
            return resp
        return None

    def _authorization(self, challenge: SipResponse, uri: str, method: str = "REGISTER") -> str:
        hdr_name = "www-authenticate" if challenge.code == 401 else "proxy-authenticate"
        p = _digest_params(challenge.header(hdr_name) or "")
        alg = p.get("algorithm", "MD5")
        h = (lambda s: hashlib.sha256(s.encode()).hexdigest()) if alg.upper() == "SHA-256" \
            else (lambda s: hashlib.md5(s.encode()).hexdigest())
        realm, nonce = p.get("realm", ""), p.get("nonce", "")
        ha1 = h(f"{self.user}:{realm}:{self.password}")
        ha2 = h(f"{method}:{uri}")
        out = f'Digest username="{self.user}", realm="{realm}", nonce="{nonce}", uri="{uri}"'
        if "qop" in p:
            cnonce, nc = secrets.token_hex(8), "00000001"
            resp = h(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
            out += f', qop=auth, nc={nc}, cnonce="{cnonce}"'
        else:
            resp = h(f"{ha1}:{nonce}:{ha2}")
        out += f', response="{resp}", algorithm={alg}'
        if "opaque" in p:
            out += f', opaque="{p["opaque"]}"'
        name = "Authorization" if challenge.code == 401 else "Proxy-Authorization"
        return f"{name}: {out}"

    def register(self, expires: int = 60, timeout: float = 32.0) -> list[SipResponse | None]:
        """One registration attempt. Returns every final response received."""
        tp = "" if self.transport == "udp" else f";transport={self.transport}"
        uri = f"sip:{self.server[0]}:{self.server[1]}{tp}"
        out: list[SipResponse | None] = []
        auth = None
        authed = retried_423 = False
        for _ in range(4):
            resp = self._transact(self._request(expires, auth), timeout)
            out.append(resp)
            if resp is None:
                break
            if resp.code in (401, 407) and not authed:
                auth, authed = self._authorization(resp, uri), True
                continue
            if resp.code == 423 and not retried_423:
                retried_423 = True
                if self.honour_423:
                    expires = int(resp.header("min-expires") or expires)
                continue
            break
        return out

    def message(self, to_user: str, text: str, timeout: float = 10.0) -> list[SipResponse | None]:
        """An out-of-dialog MESSAGE to to_user@domain through the server,
        answering one 401/407 challenge."""
        tp = "" if self.transport == "udp" else f";transport={self.transport}"
        uri = f"sip:{to_user}@{self.domain}"
        out: list[SipResponse | None] = []
        auth = None
        for _ in range(2):
            self.cseq += 1
            body = text.encode()
            lines = [
                f"MESSAGE {uri} SIP/2.0",
                f"Via: SIP/2.0/{self.transport.upper()} {LOOPBACK}:{self.local_port}"
                f";branch=z9hG4bK{secrets.token_hex(8)};rport",
                f"Route: <sip:{self.server[0]}:{self.server[1]};lr{tp}>",
                "Max-Forwards: 70",
                f"From: <sip:{self.user}@{self.domain}>;tag={self.tag}",
                f"To: <{uri}>",
                f"Call-ID: {secrets.token_hex(10)}@{LOOPBACK}",
                f"CSeq: {self.cseq} MESSAGE",
                "Content-Type: text/plain",
            ]
            if auth:
                lines.append(auth)
            lines += [f"Content-Length: {len(body)}", "", text]
            resp = self._transact("\r\n".join(lines), timeout)
            out.append(resp)
            if resp is not None and resp.code in (401, 407) and auth is None:
                auth = self._authorization(resp, uri, "MESSAGE")
                continue
            break
        return out

    def receive_request(self, timeout: float = 10.0) -> str | None:
        """The next request that arrives on this client's socket (answered 200)."""
        deadline = time.monotonic() + timeout
        for _ in range(1000):
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            raw = self._recv_one(left)
            if raw is None:
                return None
            if raw.startswith("SIP/2.0"):
                continue
            head = raw.split("\r\n\r\n", 1)[0].split("\r\n")
            keep = [h for h in head[1:] if re.match(r"(?i)(via|from|to|call-id|cseq)\s*:", h)]
            reply = "\r\n".join(["SIP/2.0 200 OK", *keep, "Content-Length: 0", "", ""])
            if self.transport == "udp":
                via = next((h for h in keep if h.lower().startswith("via")), "")
                m = re.search(r"SIP/2.0/UDP\s+([0-9.]+):(\d+)", via)
                dest = (m.group(1), int(m.group(2))) if m else self.server
                m2 = re.search(r"rport=(\d+)", via)
                if m2:
                    dest = (dest[0], int(m2.group(1)))
                self.sock.sendto(reply.encode(), dest)
            else:
                self.sock.sendall(reply.encode())
            return raw
        return None


# --------------------------------------------------------------------------
# D-Bus: a private session bus, its signals, a fake notification server
# --------------------------------------------------------------------------

def _read_line(proc: subprocess.Popen, timeout: float, what: str) -> str:
    """The first line of proc's stdout, waiting at most `timeout`."""
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            raise AssertionError(f"{what}: nothing on stdout within {timeout:.0f}s")
        line = proc.stdout.readline()
    finally:
        sel.close()
    if not line:
        raise AssertionError(f"{what} ended before it printed a line (rc {proc.poll()})")
    return line.decode(errors="replace").strip() if isinstance(line, bytes) else line.strip()


class SessionBus:
    """`dbus-daemon --session --print-address --nofork`, started by the test and
    stopped by its pid. `env` is what a process needs to use it; `busctl(...)` and
    `call(...)` run busctl on it."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.address = ""
        self.log = self.workdir / "dbus-daemon.stderr"
        self.commands: list[str] = []
        _register(self)

    def start(self) -> "SessionBus":
        self._errf = open(self.log, "wb")
        self.proc = subprocess.Popen(
            ["dbus-daemon", "--session", "--print-address=1", "--nofork", "--nopidfile"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._errf,
            start_new_session=True)
        self.address = _read_line(self.proc, 15, "dbus-daemon")
        assert self.address.startswith(("unix:", "tcp:")), self.address
        return self

    @property
    def env(self) -> dict[str, str]:
        return {"DBUS_SESSION_BUS_ADDRESS": self.address}

    def busctl(self, *args: str, timeout: float = 30.0) -> tuple[int, str, str]:
        argv = ["busctl", "--user", *args]
        self.commands.append(" ".join(argv))
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, **self.env}, stdin=subprocess.DEVNULL)
        return r.returncode, r.stdout, r.stderr

    def call(self, dest: str, path: str, iface: str, method: str, signature: str = "",
             *args: object, timeout: float = 30.0) -> tuple[int, object, str]:
        """busctl --json=short call ...: (exit code, the reply's data list or None,
        stderr: the error's text)."""
        argv = ["--json=short", "call", dest, path, iface, method]
        if signature:
            argv += [signature, *[str(a) for a in args]]
        rc, out, err = self.busctl(*argv, timeout=timeout)
        data = json.loads(out)["data"] if rc == 0 and out.strip() else None
        return rc, data, err.strip()

    def has_owner(self, name: str) -> bool:
        rc, data, _ = self.call("org.freedesktop.DBus", "/org/freedesktop/DBus",
                                "org.freedesktop.DBus", "NameHasOwner", "s", name)
        return rc == 0 and data == [True]

    def wait_name(self, name: str, timeout: float = 20.0) -> None:
        wait_until(lambda: self.has_owner(name), timeout, 0.1, f"{name} on the bus")

    def monitor(self, match: str) -> "BusMonitor":
        return BusMonitor(self, match)

    def cleanup(self) -> None:
        if self.proc is not None:
            _kill_group(self.proc, grace=5)
            if self.proc.stdout:
                self.proc.stdout.close()
        if getattr(self, "_errf", None):
            self._errf.close()

    def diagnostics(self) -> list[tuple[str, str]]:
        return [("session bus commands", "\n".join(self.commands[-20:])),
                ("dbus-daemon stderr", tail(self.log, 20))]


class BusMonitor:
    """The messages matching `match` on a SessionBus, as busctl monitor's JSON
    objects, read by a thread; wait_for() waits (bounded) for one."""

    def __init__(self, bus: SessionBus, match: str):
        self.bus = bus
        self.messages: list[dict] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            ["busctl", "--user", "monitor", "--json=short", "--match", match],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, **bus.env}, start_new_session=True)
        # busctl says "Monitoring bus message stream." once it is listening.
        _read_stderr_line = threading.Event()

        def read_err() -> None:
            for _ in self.proc.stderr:
                _read_stderr_line.set()
            _read_stderr_line.set()

        threading.Thread(target=read_err, daemon=True).start()
        threading.Thread(target=self._read, daemon=True).start()
        if not _read_stderr_line.wait(15):
            raise AssertionError("busctl monitor did not start within 15 s")
        _register(self)

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            with self._cond:
                self.messages.append(msg)
                self._cond.notify_all()

    def signals(self, member: str | None = None) -> list[list]:
        """The payloads (argument lists) of the signals seen, oldest first."""
        with self._cond:
            return [m.get("payload", {}).get("data", []) for m in self.messages
                    if m.get("type") == "signal" and (member is None or m.get("member") == member)]

    def wait_for(self, pred: Callable[[list], bool], timeout: float = 30.0,
                 what: str = "signal", member: str | None = None) -> list:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for args in self.signals(member):
                    if pred(args):
                        return args
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {what} within {timeout:.0f}s; seen:\n"
                                         + "\n".join(map(str, self.signals()[-30:])))
                self._cond.wait(min(left, 0.5))

    def cleanup(self) -> None:
        _kill_group(self.proc, grace=2)

    def diagnostics(self) -> list[tuple[str, str]]:
        return [("bus monitor signals", "\n".join(map(str, self.signals()[-30:])))]


class FakeNotifications:
    """fake_notifications.py on a SessionBus: records Notify/CloseNotification
    calls (`calls`), emits ActionInvoked with invoke()."""

    def __init__(self, bus: SessionBus):
        self.calls: list[dict] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            [os.environ.get("PYTHON", "python3"), str(HERE / "fake_notifications.py"),
             bus.address],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, start_new_session=True)
        first = json.loads(_read_line(self.proc, 15, "fake notification server"))
        assert first.get("member") == "ready", first
        threading.Thread(target=self._read, daemon=True).start()
        _register(self)

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                call = json.loads(line)
            except ValueError:
                continue
            with self._cond:
                self.calls.append(call)
                self._cond.notify_all()

    def wait_call(self, member: str, pred: Callable[[dict], bool] | None = None,
                  timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for c in self.calls:
                    if c.get("member") == member and (pred is None or pred(c)):
                        return c
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {member} call within {timeout:.0f}s; calls: "
                                         f"{self.calls}")
                self._cond.wait(min(left, 0.5))

    def invoke(self, notification: int, action: str) -> None:
        self.proc.stdin.write(f"invoke {notification} {action}\n")
        self.proc.stdin.flush()

    def cleanup(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        _kill_group(self.proc, grace=3)

    def diagnostics(self) -> list[tuple[str, str]]:
        err = ""
        if self.proc.poll() is not None and self.proc.stderr:
            err = self.proc.stderr.read()
        return [("fake notification server calls", "\n".join(map(str, self.calls))),
                ("fake notification server stderr", err)]
