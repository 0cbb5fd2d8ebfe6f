"""IPv6 (issue 12): the phone registers and calls over ::1, writes `IN IP6` in its
SDP, and answers an IPv6-only offer from an IPv6 address even on an IPv4 account.

Every test runs in a network namespace of its own (`isolated_netns`): loopback
only, 127.0.0.1 and ::1. Kamailio listens on [::1] (`peers.Kamailio(ip="::1")`),
baresip registers there over IPv6 (`peers.Baresip(ip="::1")`, `net_prefer_ipv6`).
"""

from __future__ import annotations

import re
import secrets
import socket
import struct
import threading
import time

import numpy as np
import pytest

import audio
import peers
from peers import account, ini

USERS = {"1001": "p;w#1005", "1002": "secret2"}
TONE_US, TONE_PEER = 440, 1000
CALL_SECONDS = 5


@pytest.fixture
def kam6(isolated_netns, make_kamailio):
    return make_kamailio(users=USERS, ip="::1")


def phone6(make_phone, kam, tmp_path, transport="udp", auto_answer="all"):
    """A phone registered at the IPv6 Kamailio with file audio (a 440 Hz tone)."""
    src = audio.make_tone_wav(tmp_path / "phone-src.wav", TONE_US, 30)
    out = tmp_path / f"phone-out-{secrets.token_hex(3)}.wav"
    ph = make_phone(ini(account(kam.address, "1001", USERS["1001"], domain="[::1]",
                                transport=transport),
                        audioInputDevice=f"file:{src}", audioOutputDevice=f"file:{out}",
                        autoAnswer=auto_answer, autoAnswerDelay=0))
    ph.events().wait_state(1, "registered", 30, codes={200})
    ph.out_path = out
    return ph


def wait_event(ph, type_, pred=None, timeout=30):
    ev = ph.events()

    def find():
        with ev._cond:
            items = list(ev.items)
        return next((e for e in items if e.get("type") == type_
                     and (pred is None or pred(e))), None)
    try:
        return peers.wait_until(find, timeout, 0.05, type_)
    except AssertionError as e:
        raise AssertionError(f"{e}\nevents:\n{ev._describe()}") from None


def traced(ph, sent, method=None, code=None):
    return [m for m in ph.trace_messages() if m.sent == sent
            and (method is None or m.method == method) and (code is None or m.code == code)]


def heard(path, freq, seconds, what):
    cov = audio.tone_coverage(path, freq)
    secs = audio.tone_seconds(path, freq)
    assert cov >= 0.9 and secs >= 0.8 * seconds, \
        f"{what}: {cov:.0%} coverage, {secs:.1f}s of {seconds:.1f}s\n{audio.describe(path, freq)}"


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_registers_over_ipv6_with_bracketed_contact_and_via(kam6, make_phone, tmp_path,
                                                            transport):
    ph = phone6(make_phone, kam6, tmp_path, transport=transport)
    regs = traced(ph, True, "REGISTER")
    assert regs, ph.trace_text()[-2000:]
    last = regs[-1]
    assert re.search(rf"(?im)^via: SIP/2\.0/{transport} \[::1\]:\d+", last.text), last.text
    assert re.search(r"(?im)^contact: <sip:1001@\[::1\]:\d+", last.text), last.text
    assert last.dst.startswith("[::1]:"), last.dst
    # Kamailio answered the digest: 401 then 200, and holds our IPv6 contact.
    codes = [m.code for m in traced(ph, False) if m.code]
    assert 401 in codes and codes[-1] == 200, codes
    contacts = kam6.wait_contacts("1001")
    assert any("[::1]" in c["address"] for c in contacts), contacts
    if transport == "tcp":
        assert any("transport=tcp" in c["address"].lower() for c in contacts), contacts


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_call_to_baresip_over_ipv6_with_audio_both_ways(kam6, make_phone, make_baresip,
                                                         tmp_path, transport):
    b = make_baresip(kam6, "1002", tone=TONE_PEER)
    ph = phone6(make_phone, kam6, tmp_path, transport=transport)
    rc, out, err = ph.cmd("dial", "1002")
    assert rc == 0, (out, err)
    cid = int(out.strip())
    est = b.wait_event("CALL_ESTABLISHED")
    wait_event(ph, "call.confirmed", lambda e: e.get("call") == cid)
    time.sleep(CALL_SECONDS)
    assert ph.cmd("hangup", str(cid))[0] == 0
    closed = b.wait_event("CALL_CLOSED")
    wait_event(ph, "call.ended", lambda e: e.get("call") == cid)
    invite = traced(ph, True, "INVITE")[0]
    assert invite.first_line.startswith("INVITE sip:1002@[::1]"), invite.first_line
    assert invite.transport == transport.upper() and invite.dst.startswith("[::1]:"), \
        (invite.transport, invite.dst)
    assert "c=IN IP6 ::1" in invite.body and "o=" in invite.body, invite.body
    answer = [m for m in traced(ph, False, code=200) if m.cseq_method == "INVITE" and m.body]
    assert answer and "c=IN IP6 ::1" in answer[0].body, answer
    _, dec = b.recordings()
    heard(dec, TONE_US, closed["_t"] - est["_t"], "baresip heard us")
    heard(ph.out_path, TONE_PEER, closed["_t"] - est["_t"], "we heard baresip")


def test_baresip_calls_us_over_ipv6_and_we_answer_in_ip6(kam6, make_phone, make_baresip,
                                                         tmp_path):
    ph = phone6(make_phone, kam6, tmp_path, auto_answer="button")
    b = make_baresip(kam6, "1002", tone=TONE_PEER)
    b.dial("sip:1001@[::1]")
    inc = wait_event(ph, "call.incoming")
    offer = traced(ph, False, "INVITE")[0]
    assert "c=IN IP6 ::1" in offer.body, offer.body
    assert ph.cmd("answer")[0] == 0
    est = b.wait_event("CALL_ESTABLISHED")
    wait_event(ph, "call.confirmed", lambda e: e.get("call") == inc["call"])
    ours = [m for m in traced(ph, True, code=200) if m.cseq_method == "INVITE" and m.body]
    assert ours and "c=IN IP6 ::1" in ours[0].body, ours
    assert re.search(r"(?im)^contact: <sip:1001@\[::1\]:\d+", ours[0].text), ours[0].text
    time.sleep(CALL_SECONDS)
    b.hangup()
    closed = b.wait_event("CALL_CLOSED")
    wait_event(ph, "call.ended", lambda e: e.get("call") == inc["call"])
    _, dec = b.recordings()
    heard(dec, TONE_US, closed["_t"] - est["_t"], "baresip heard us")
    heard(ph.out_path, TONE_PEER, closed["_t"] - est["_t"], "we heard baresip")


class RtpPeer6:
    """The media end of an IPv6-only offer: a UDP socket on [::1] that keeps the
    RTP it receives (with the sender) and sends a PCMU tone to where it is told,
    every 20 ms, from a thread (bounded in count)."""

    def __init__(self, freq: float, workdir):
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self.sock.bind(("::1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.received: list[tuple[str, bytes]] = []
        self.target: tuple[str, int] | None = None
        self._tone = audio.make_tone_ulaw(workdir / "peer-tone.ulaw", freq, 60).read_bytes()
        self._stop = threading.Event()
        self._rx = threading.Thread(target=self._read, daemon=True)
        self._tx = threading.Thread(target=self._send, daemon=True)
        self._rx.start()
        self._tx.start()

    def _read(self):
        for _ in range(20000):
            if self._stop.is_set():
                return
            try:
                data, src = self.sock.recvfrom(2048)
            except OSError:
                continue
            if len(data) >= 12 and data[0] >> 6 == 2 and not 72 <= data[1] & 0x7F <= 79:
                self.received.append((src[0], data))

    def _send(self):
        seq, ts, ssrc = 1, 0, 0x1234ABCD
        for i in range(3000):  # 60 s at most
            if self._stop.wait(0.02):
                return
            if self.target is None:
                continue
            payload = self._tone[i * 160 % (len(self._tone) - 160):][:160]
            pkt = struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload
            seq, ts = seq + 1, ts + 160
            try:
                self.sock.sendto(pkt, self.target)
            except OSError:
                pass

    def heard(self) -> np.ndarray:
        parts = [audio._ulaw_decode(np.frombuffer(d[12:], dtype=np.uint8))
                 for _, d in self.received if d[1] & 0x7F == 0]
        return np.concatenate(parts) if parts else np.zeros(0)

    def close(self):
        self._stop.set()
        self._rx.join(2)
        self._tx.join(2)
        self.sock.close()


def test_ipv6_only_offer_on_an_ipv4_account_is_answered_over_ipv6(isolated_netns, make_kamailio,
                                                                  make_phone, make_sipp,
                                                                  tmp_path):
    """Signalling over IPv4 (the account's registrar on 127.0.0.1), media offered on
    [::1] only: the answer says IN IP6 and our IPv6 address, RTP flows both ways
    over IPv6."""
    kam = make_kamailio(users=USERS)
    src = audio.make_tone_wav(tmp_path / "src.wav", TONE_US, 30)
    out = tmp_path / "out.wav"
    sip_port = peers.free_port("sip")
    ph = make_phone(ini(account(kam.address, "1001", USERS["1001"]), sourcePort=sip_port,
                        audioInputDevice=f"file:{src}", audioOutputDevice=f"file:{out}",
                        autoAnswer="all", autoAnswerDelay=0))
    ph.events().wait_state(1, "registered", 30, codes={200})
    media = RtpPeer6(TONE_PEER, tmp_path)
    try:
        sipp = make_sipp("uac_ipv6_offer.xml", remote=f"127.0.0.1:{sip_port}",
                         extra=["-s", "1001", "-key", "rtp_ip", "::1",
                                "-key", "rtp_port", str(media.port)])
        inc = wait_event(ph, "call.incoming")
        wait_event(ph, "call.confirmed", lambda e: e.get("call") == inc["call"])
        answer = [m for m in traced(ph, True, code=200) if m.cseq_method == "INVITE" and m.body]
        assert answer, ph.trace_text()[-3000:]
        body = answer[0].body
        assert re.search(r"(?m)^c=IN IP6 ::1\s*$", body), body
        port = int(re.search(r"(?m)^m=audio (\d+) ", body).group(1))
        media.target = ("::1", port)
        t0 = time.monotonic()
        peers.wait_until(lambda: len(media.received) >= 150 or None, 20, 0.1,
                         "3 s of RTP from the phone on [::1]")
        time.sleep(max(0.0, CALL_SECONDS - (time.monotonic() - t0)))
        assert ph.cmd("hangup", str(inc["call"]))[0] == 0
        assert sipp.wait(30) == 0
        wait_event(ph, "call.ended", lambda e: e.get("call") == inc["call"])
    finally:
        media.close()
    # Our RTP came from our IPv6 address, to the offer's, and carried our tone.
    assert {s for s, _ in media.received} == {"::1"}
    x = media.heard()
    assert audio.tone_coverage(x, TONE_US, rate=8000) >= 0.9, \
        audio.describe(x, TONE_US, rate=8000)
    # And the tone sent to the answer's IPv6 port reached the phone's output.
    assert audio.tone_seconds(out, TONE_PEER) >= 0.6 * CALL_SECONDS, \
        audio.describe(out, TONE_PEER)
