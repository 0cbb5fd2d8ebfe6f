"""Registration of the phone against real peers: Kamailio (digest auth, location
table) and SIPp registrars for the edges Kamailio will not produce.

The phone is started with `--ini INI --profile P --debug TRACE --headless`
(peers.Phone); its state is read from `microsip --profile P events`
(snapshot + account.* events) and from Kamailio's location table (ul.dump).
"""

from __future__ import annotations

import re
import socket
import struct
import threading
import time

import pytest

import rtp
from peers import LIVE, account, ini

PASSWORD = "p;w#1005"  # Kamailio's password for 1001 (conftest default users)


def registered(phone, account_no=1, timeout=30):
    return phone.events().wait_state(account_no, "registered", timeout, codes={200})


# ---------------------------------------------------------------- Kamailio

def test_registers_through_the_401_challenge(kamailio, make_phone):
    phone = make_phone(ini(account(kamailio.address, "1002", "secret2")))
    ev = phone.events()
    snap = ev.snapshot()
    assert isinstance(snap.get("seq"), int) and isinstance(snap.get("calls"), list)
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", snap.get("time", "")), snap
    registered(phone)

    [c] = kamailio.wait_contacts("1002")
    assert c["user_agent"].startswith("MicroSIP"), c
    assert "rsipstack" not in c["user_agent"].lower(), c
    assert "restsend" not in c["call_id"].lower(), c  # the library's Call-ID brand
    assert c["socket"] == f"udp:{kamailio.address}", c
    assert 0 < c["expires"] <= 300, c
    # Kamailio challenged first, then saved the binding.
    log = kamailio.log.read_text(errors="replace")
    assert re.search(r"REGISTER for sip:1002@127\.0\.0\.1\S* from .*: challenge", log), log[-2000:]
    assert re.search(r"REGISTER for sip:1002@127\.0\.0\.1\S* from .* saved", log), log[-2000:]

    # `register` answers after the outcome and emits a live account.registered.
    ev.mark()
    rc, out, err = phone.cmd("register")
    assert rc == 0
    e = ev.wait_for("account.registered", lambda e: e.get("account") == 1, 30)
    assert e["code"] == 200, e
    assert isinstance(e.get("expires"), int) and 0 < e["expires"] <= 300, e
    assert isinstance(e.get("contact"), str) and "127.0.0.1" in e["contact"], e
    assert isinstance(e.get("reason"), str), e
    assert isinstance(e.get("seq"), int) and e["seq"] > snap["seq"], e
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", e.get("time", "")), e


def test_password_with_semicolon_and_hash_registers(kamailio, make_phone):
    phone = make_phone(ini(account(kamailio.address, "1001", PASSWORD)))
    assert f"password={PASSWORD}\n" in phone.ini_path.read_text()
    registered(phone)
    [c] = kamailio.wait_contacts("1001")
    assert c["user_agent"].startswith("MicroSIP"), c


def test_sha256_digest_registers(make_kamailio, make_phone):
    kam = make_kamailio(algorithm="SHA-256")
    phone = make_phone(ini(account(kam.address, "1001", PASSWORD)))
    registered(phone)
    kam.wait_contacts("1001")
    assert "algorithm=SHA-256" in phone.trace_text()


def test_wrong_password_is_reported_and_phone_keeps_running(kamailio, make_phone):
    phone = make_phone(ini(account(kamailio.address, "1001", "p;w#1006")))
    rec = phone.events().wait_state(1, "failed", 60, codes={401, 403})
    assert rec["code"] in (401, 403), rec
    assert phone.running()
    rc, out, _ = phone.cmd("status")
    assert rc == 0 and out.startswith("0"), out
    assert kamailio.contacts("1001") == []


def test_kamailio_stopped_then_back(kamailio, make_phone):
    phone = make_phone(ini(account(kamailio.address, "1001", PASSWORD, registerRefresh=10)))
    ev = phone.events()
    registered(phone)
    kamailio.wait_contacts("1001")

    kamailio.stop()
    # The next refresh (within 10 s) goes unanswered: a failure with a SIP code
    # (408 after the transaction timeout, or 503).
    rec = ev.wait_state(1, "failed", 120)
    assert isinstance(rec.get("code"), int) and 400 <= rec["code"] <= 699, rec
    assert phone.running()

    kamailio.start()  # the same port, an empty location table
    ev.wait_state(1, "registered", 120, codes={200})
    [c] = kamailio.wait_contacts("1001")
    assert c["user_agent"].startswith("MicroSIP")


def test_short_expiry_refreshes(kamailio, make_phone):
    phone = make_phone(ini(account(kamailio.address, "1001", PASSWORD, registerRefresh=10)))
    ev = phone.events()
    registered(phone)
    [first] = kamailio.wait_contacts("1001")
    assert 0 < first["expires"] <= 10, first  # the phone asked for 10 s

    ev.mark()
    ev.wait_for("account.registered", lambda e: e.get("account") == 1 and e.get("code") == 200, 30)
    ev.wait_for("account.registered", lambda e: e.get("account") == 1 and e.get("code") == 200, 30)
    [later] = kamailio.wait_contacts("1001")
    assert later["cseq"] > first["cseq"], (first, later)  # Kamailio saw the refreshes
    assert later["call_id"] == first["call_id"], (first, later)  # same registration
    assert 0 < later["expires"] <= 10, later


@pytest.mark.parametrize("word", ["/exit", "exit", "Close", "QUIT"])
def test_exit_unregisters_and_ends(kamailio, make_phone, word):
    phone = make_phone(ini(account(kamailio.address, "1001", PASSWORD)))
    registered(phone)
    kamailio.wait_contacts("1001")
    rc, _, err = phone.cmd(word, check=False)
    assert rc == 0, err
    assert phone.wait_exit(30) == 0
    # The un-REGISTER was answered before the phone ended.
    assert kamailio.contacts("1001") == [], kamailio.ul_dump()
    assert re.search(r"(?i)expires:\s*0\b|;expires=0\b", phone.trace_text())


def test_tcp_registers(kamailio, make_phone):
    phone = make_phone(ini(account(kamailio.address, "1002", "secret2", transport="tcp")))
    registered(phone)
    [c] = kamailio.wait_contacts("1002")
    assert c["socket"] == f"tcp:{kamailio.address}", c
    assert "transport=tcp" in c["address"].lower(), c


def test_unregister_and_register_commands(kamailio, make_phone):
    phone = make_phone(ini(account(kamailio.address, "1001", PASSWORD)))
    ev = phone.events()
    registered(phone)
    kamailio.wait_contacts("1001")

    ev.mark()
    phone.cmd("unregister")
    # `unregister` replies after the un-REGISTER was answered.
    assert kamailio.contacts("1001") == [], kamailio.ul_dump()
    ev.wait_for("account.unregistered", lambda e: e.get("account") == 1, 30)
    assert ev.account_state(1)[0] == "unregistered"

    ev.mark()
    phone.cmd("register", "1")
    assert kamailio.contacts("1001"), kamailio.ul_dump()
    e = ev.wait_for("account.registered", lambda e: e.get("account") == 1, 30)
    assert e["code"] == 200


def test_sip_trace_has_register_401_200_and_never_the_password(kamailio, make_phone):
    phone = make_phone(ini(account(kamailio.address, "1001", PASSWORD)))
    registered(phone)
    kamailio.wait_contacts("1001")
    phone.stop()

    trace = phone.trace_text()
    lines = trace.splitlines()
    assert PASSWORD not in trace
    assert PASSWORD not in phone.stderr_text()
    assert (phone.workdir / "phone.stdout").read_text(errors="replace").find(PASSWORD) < 0

    sent_re = re.compile(r"(?i)\b(sent|send|tx|out|outgoing)\b|-->|>>>")
    recv_re = re.compile(r"(?i)\b(recv|received|receive|rx|in|incoming)\b|<--|<<<")

    def record_header(idx):
        """The line naming Kamailio's address just before (or on) a start line."""
        for j in range(idx - 1, max(-1, idx - 4), -1):
            if kamailio.address in lines[j]:
                return lines[j]
        return None

    def starts(pattern):
        return [i for i, line in enumerate(lines) if re.match(pattern, line.strip())]

    regs = starts(r"REGISTER sip:\S+ SIP/2\.0$")
    r401 = starts(r"SIP/2\.0 401\b")
    r200 = [i for i in starts(r"SIP/2\.0 200\b")
            if any("REGISTER" in lines[k] for k in range(i, min(len(lines), i + 15))
                   if lines[k].lower().startswith("cseq"))]
    assert len(regs) >= 2 and r401 and r200, trace[-3000:]
    for i in regs[:2]:
        h = record_header(i)
        assert h and sent_re.search(h), f"no sent/address line for REGISTER at {i}: {h!r}"
    for i in (r401[0], r200[0]):
        h = record_header(i)
        assert h and recv_re.search(h), f"no received/address line for response at {i}: {h!r}"
    assert regs[0] < r401[0] < regs[1] < r200[0]
    # The digest answer is in the trace (a hash, not the password).
    assert re.search(r"(?im)^authorization:\s*digest\b.*response=", trace)


# ---------------------------------------------------------------- on the wire

class WireTap:
    """Every UDP datagram and TCP segment payload on lo (127.0.0.1 -> 127.0.0.1),
    as (time, "udp"|"tcp", src port, dst port, payload), through rtp.RtpTap's kind of
    AF_PACKET socket (root or CAP_NET_RAW). RtpTap keeps only RTP; keep-alives
    (CRLF CRLF) and SIP need the rest. A reader thread with a bounded poll runs until
    stop()."""

    def __init__(self, max_packets: int = 100_000):
        self.packets: list[tuple[float, str, int, int, bytes]] = []
        self.max_packets = max_packets
        self._stop = threading.Event()
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(rtp.ETH_P_ALL))
        s.bind(("lo", 0))
        s.settimeout(0.2)
        self._sock = s
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame, addr = self._sock.recvfrom(65535)
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                break
            if addr[2] == rtp.PACKET_OUTGOING or len(frame) < 14 + 20 + 8:
                continue
            ip = frame[14:]
            if frame[12:14] != b"\x08\x00" or ip[0] >> 4 != 4 or ip[12:16] != b"\x7f\x00\x00\x01":
                continue
            ihl = (ip[0] & 0x0F) * 4
            total = struct.unpack("!H", ip[2:4])[0]
            seg = ip[ihl:total]
            if ip[9] == 17:
                proto, src, dst = "udp", *struct.unpack("!HH", seg[:4])
                data = seg[8:]
            elif ip[9] == 6 and len(seg) >= 20:
                proto, src, dst = "tcp", *struct.unpack("!HH", seg[:4])
                data = seg[(seg[12] >> 4) * 4:]
            else:
                continue
            if data and len(self.packets) < self.max_packets:
                self.packets.append((time.time(), proto, src, dst, bytes(data)))

    def select(self, proto=None, src=None, dst=None, t0=None, pred=None):
        return [p for p in list(self.packets)
                if (proto is None or p[1] == proto) and (src is None or p[2] == src)
                and (dst is None or p[3] == dst) and (t0 is None or p[0] >= t0)
                and (pred is None or pred(p[4]))]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    cleanup = stop

    def diagnostics(self) -> list[tuple[str, str]]:
        flows: dict[tuple, int] = {}
        for _, proto, src, dst, _ in list(self.packets):
            flows[(proto, src, dst)] = flows.get((proto, src, dst), 0) + 1
        text = "\n".join(f"{p} {s} -> {d}: {n}" for (p, s, d), n in sorted(flows.items()))
        return [("wire tap flows", text or "<none>")]


@pytest.fixture
def wire():
    rtp.require_capture("the wire")
    tap = WireTap()
    LIVE.append(tap)
    return tap


def is_register(data: bytes) -> bool:
    return data.startswith(b"REGISTER ")


def via(data: bytes) -> str:
    m = re.search(rb"(?im)^(?:via|v):[^\r\n]*", data)
    return m.group(0).decode(errors="replace") if m else ""


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_nat_keep_alive_is_crlf_crlf_every_interval(kamailio, make_phone, wire, transport):
    phone = make_phone(ini(account(kamailio.address, "1001", PASSWORD, transport=transport,
                                   keepAlive=1)))
    registered(phone)
    kamailio.wait_contacts("1001")
    regs = wire.select(transport, dst=kamailio.port, pred=is_register)
    assert regs, wire.diagnostics()
    ours = regs[-1][2]  # the port our REGISTERs leave from (UDP socket / TCP connection)
    t0 = time.time()
    time.sleep(3.6)
    pings = wire.select(transport, dst=kamailio.port, t0=t0, pred=lambda d: d == b"\r\n\r\n")
    # One each second: 3 in 3.6 s (2..5 allowed for scheduling on a busy machine).
    assert 2 <= len(pings) <= 5, (len(pings), wire.diagnostics())
    assert {p[2] for p in pings} == {ours}, (ours, pings)
    gaps = [b[0] - a[0] for a, b in zip(pings, pings[1:])]
    assert all(0.5 <= g <= 2.0 for g in gaps), gaps
    assert kamailio.contacts("1001"), "the keep-alives broke the registration"


def test_no_keep_alive_with_keep_alive_0(kamailio, make_phone, wire):
    phone = make_phone(ini(account(kamailio.address, "1001", PASSWORD, keepAlive=0)))
    registered(phone)
    t0 = time.time()
    time.sleep(2.5)
    assert wire.select("udp", dst=kamailio.port, t0=t0,
                       pred=lambda d: d.strip(b"\r\n") == b"") == []


@pytest.mark.parametrize("rport", [0, 1])
def test_rport_setting_decides_the_via_rport(kamailio, make_phone, wire, rport):
    phone = make_phone(ini(account(kamailio.address, "1001", PASSWORD), rport=rport))
    registered(phone)
    kamailio.wait_contacts("1001")
    regs = wire.select("udp", dst=kamailio.port, pred=is_register)
    assert regs, wire.diagnostics()
    sent = [via(p[4]) for p in regs]
    answers = [via(p[4]) for p in wire.select("udp", src=kamailio.port, dst=regs[0][2],
                                             pred=lambda d: d.startswith(b"SIP/2.0 "))]
    assert len(sent) >= 2 and len(answers) >= 2, wire.diagnostics()  # 401, then 200
    # Requests outside the registration follow the same setting: a call and a
    # MESSAGE to a user Kamailio does not know (404 each).
    events = phone.events()
    cid = int(phone.cmd("dial", "1009")[1].strip())
    events.wait_for("call.ended", lambda e: e.get("call") == cid, 30)
    assert phone.cmd("message", "1009", "hello", check=False)[0] == 1
    others = wire.select("udp", src=regs[0][2], dst=kamailio.port,
                         pred=lambda d: d.startswith((b"INVITE ", b"MESSAGE ")))
    assert {d[4].split(b" ")[0] for d in others} == {b"INVITE", b"MESSAGE"}, wire.diagnostics()
    sent += [via(p[4]) for p in others]
    if rport:
        assert all(re.search(r";\s*rport(;|$)", v) for v in sent), sent
        # Kamailio answered with the port it saw (RFC 3581).
        assert all(re.search(r";rport=\d+", v) for v in answers), answers
    else:
        assert not any("rport" in v.lower() for v in sent), sent
        assert not any("rport" in v.lower() for v in answers), answers


# ---------------------------------------------------------------- SIPp registrars

def sipp_account(sipp, **extra):
    # keepAlive=0: no keep-alive traffic to a scenario that expects only REGISTERs.
    return account(sipp.address, "1001", "secret", keepAlive=0, **extra)


def test_423_retries_with_min_expires(make_sipp, make_phone):
    sipp = make_sipp("reg_423.xml", timeout_s=120)
    phone = make_phone(ini(sipp_account(sipp, registerRefresh=60)))
    rec = registered(phone, timeout=60)
    if "expires" in rec:
        assert rec["expires"] >= 120, rec
    assert phone.stop() == 0
    assert sipp.wait(90) == 0, "SIPp saw a retry with Expires < 120 (or no un-REGISTER flow)"
    sent = sipp.sent()
    assert sent[0].startswith("SIP/2.0 423") and sent[1].startswith("SIP/2.0 200"), sent[:2]


def test_403_is_reported(make_sipp, make_phone):
    sipp = make_sipp("reg_403.xml", timeout_s=120)
    phone = make_phone(ini(sipp_account(sipp)))
    rec = phone.events().wait_state(1, "failed", 60, codes={403})
    assert rec["code"] == 403
    rc, out, _ = phone.cmd("status")
    assert rc == 0
    phone.stop()
    assert sipp.wait(90) == 0, "more than 12 REGISTERs answered 403"


def test_401_loop_gives_up(make_sipp, make_phone):
    sipp = make_sipp("reg_401_loop.xml", timeout_s=150)
    phone = make_phone(ini(sipp_account(sipp)))
    rec = phone.events().wait_state(1, "failed", 60, codes={401})
    assert rec["code"] == 401
    # SIPp ends by itself once the phone stays quiet for 10 s; it fails if the
    # phone sent more than 16 REGISTERs before that.
    rc = sipp.wait(170)
    regs = sipp.received("REGISTER")
    assert rc == 0, f"SIPp failed after {len(regs)} REGISTERs"
    assert 2 <= len(regs) <= 16, len(regs)
    assert any(re.search(r"(?im)^authorization:\s*digest", r) for r in regs)
    assert phone.running()
    assert phone.cmd("status")[0] == 0


def test_slow_registrar(make_sipp, make_phone):
    sipp = make_sipp("reg_slow.xml", timeout_s=120)
    phone = make_phone(ini(sipp_account(sipp)))
    registered(phone, timeout=60)
    assert sipp.sent()[0].startswith("SIP/2.0 200")
    assert phone.stop() == 0
    assert sipp.wait(90) == 0
