"""The harness checks its call peers without the phone: baresip through Kamailio
(audio each way, manual answer, CANCEL, reject, transfer), the RTP tap, and
every call scenario in sipp/ against baresip or a small reference client
written here. Where baresip cannot stand in for a correct phone (a forked pair
of 200s), the scenario is shown to pass a client that follows RFC 3261 and to
fail baresip, which does not."""

from __future__ import annotations

import re
import secrets
import socket
import time

import pytest

import audio
import peers
import rtp

USERS = {"1001": "p;w#1005", "1002": "secret2", "1003": "secret3", "1004": "secret4"}


@pytest.fixture
def kam(make_kamailio):
    return make_kamailio(users=USERS)


def tones(path, *freqs):
    """For failure messages: one character per 250 ms window."""
    out = []
    for w in audio.windows(path):
        ch = "."
        if not w.silent:
            ch = "?"
            for f in freqs:
                if abs(w.freq - f) <= 15:
                    ch = str(f)[0]
        out.append(ch)
    return f"{path.name}: {''.join(out)}"


def call_seconds(b: peers.Baresip) -> float:
    starts = [e["_t"] for e in b.events if e.get("type") == "CALL_ESTABLISHED"]
    ends = [e["_t"] for e in b.events if e.get("type") == "CALL_CLOSED"]
    return ends[-1] - starts[-1]


# ---------------------------------------------------------------- baresip

def test_baresip_to_baresip_hears_each_others_tone(kam, make_baresip):
    a = make_baresip(kam, "1002", tone=440)
    c = make_baresip(kam, "1003", tone=1000)
    assert a.registered() and c.registered()
    a.dial(c.aor)
    a.wait_event("CALL_RINGING")
    a.wait_event("CALL_ESTABLISHED")
    ev = c.wait_event("CALL_ESTABLISHED")
    assert ev["peeruri"].startswith("sip:1002@127.0.0.1")
    time.sleep(5)
    a.hangup()
    assert "Connection reset" in c.wait_event("CALL_CLOSED")["param"]
    a.wait_event("CALL_CLOSED")
    _, a_dec = a.recordings()
    c_enc, c_dec = c.recordings()
    for rec, want, other in ((c_dec, 440, 1000), (a_dec, 1000, 440)):
        assert audio.tone_coverage(rec, want) >= 0.9, audio.describe(rec, want)
        assert audio.tone_coverage(rec, other) == 0.0, audio.describe(rec, other)
        # Heard for most of the call, not just a moment.
        assert audio.tone_seconds(rec, want) >= 0.9 * call_seconds(c) - 0.5, tones(rec, want)
    assert audio.tone_coverage(c_enc, 1000) >= 0.9  # what c sent: its own source


def test_baresip_manual_answer_cancel_and_reject(kam, make_baresip):
    a = make_baresip(kam, "1002")
    c = make_baresip(kam, "1003", answermode="manual")
    # CANCEL: the caller gives up before the answer.
    a.dial(c.aor)
    inc = c.wait_event("CALL_INCOMING")
    assert inc["peeruri"] == "sip:1002@127.0.0.1"
    a.hangup()
    c.wait_event("CALL_CLOSED")
    assert c.count("CALL_ESTABLISHED") == 0
    assert re.search(r"(?m)^CANCEL sip:1003", c.log.read_text(errors="replace"))
    # Reject: baresip's hangup of a ringing call is a 486.
    a.dial(c.aor)
    c.wait_event("CALL_INCOMING")
    c.hangup()
    assert a.wait_event("CALL_CLOSED", lambda e: "486" in e["param"])
    # Answer.
    a.dial(c.aor)
    c.wait_event("CALL_INCOMING")
    c.answer()
    a.wait_event("CALL_ESTABLISHED")
    c.wait_event("CALL_ESTABLISHED")
    c.hangup()
    a.wait_event("CALL_CLOSED")


def test_baresip_is_a_transferee_through_kamailio(kam, make_baresip):
    """A calls C, then refers C to D (REFER through Kamailio): C calls D, A's leg
    ends. The phone's transfer test relies on baresip doing C's part."""
    a = make_baresip(kam, "1002", tone=440)
    c = make_baresip(kam, "1003", tone=1000)
    d = make_baresip(kam, "1004", tone=700)
    a.dial(c.aor)
    a.wait_event("CALL_ESTABLISHED")
    c.wait_event("CALL_ESTABLISHED")
    a.transfer(d.aor)
    assert c.wait_event("TRANSFER")["param"] == "sip:1004@127.0.0.1"
    est = d.wait_event("CALL_ESTABLISHED")
    assert est["peeruri"].startswith("sip:1003@127.0.0.1")
    a.wait_event("CALL_CLOSED")
    time.sleep(3)
    d.hangup()
    c.wait_event("CALL_CLOSED", lambda e: e.get("peeruri", "").startswith("sip:1004"))
    _, d_dec = d.recordings()
    assert audio.tone_coverage(d_dec, 1000) >= 0.9, audio.describe(d_dec, 1000)


def test_rtp_tap_sees_audio_stop_while_held(kam, make_baresip, rtp_tap):
    a = make_baresip(kam, "1002", tone=440)
    c = make_baresip(kam, "1003", tone=1000)
    a.dial(c.aor)
    a.wait_event("CALL_ESTABLISHED")
    time.sleep(2)
    a.hold()
    t_hold = time.time()
    time.sleep(2)
    t_resume = time.time()
    a.resume()
    time.sleep(2)
    a.hangup()
    t_end = time.time()
    c.wait_event("CALL_CLOSED")
    ports = {int(m) for m in re.findall(r"(?m)^m=audio (\d+) ", c.log.read_text())}
    assert len(ports) == 2, ports
    for dst in ports:
        before = rtp_tap.flow(dst=dst, t1=t_hold)
        held = rtp_tap.flow(dst=dst, t0=t_hold + 0.2, t1=t_resume)
        after = rtp_tap.flow(dst=dst, t0=t_resume + 0.3, t1=t_end)
        assert len(before) >= 50 and len(after) >= 50, rtp_tap.diagnostics()
        assert held == [], f"{len(held)} packets to {dst} while held"
    tone_to = {dst: (rtp.tone_packets(rtp_tap.flow(dst=dst), 440),
                     rtp.tone_packets(rtp_tap.flow(dst=dst), 1000)) for dst in ports}
    # One direction carries 440 Hz only, the other 1000 Hz only.
    assert any(v[0] > 100 and v[1] == 0 for v in tone_to.values()), tone_to
    assert any(v[1] > 100 and v[0] == 0 for v in tone_to.values()), tone_to


# ---------------------------------------------------------------- SIPp UAS scenarios

def ulaw_files(early=1000, answer=600):
    return {"early.ulaw": _ulaw(early), "answer.ulaw": _ulaw(answer), "tone.ulaw": _ulaw(early)}


def _ulaw(freq, seconds=4):
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as d:
        return audio.make_tone_ulaw(Path(d) / "t.ulaw", freq, seconds).read_bytes()


@pytest.fixture(params=["direct", "kamailio"])
def caller(request, kam, make_baresip):
    """baresip as the caller: straight to SIPp, or through Kamailio (which
    relays a Request-URI with another port as it is)."""
    if request.param == "direct":
        return make_baresip(None, "1002", password="x", register=False, outbound=False)
    return make_baresip(kam, "1002")


def test_sipp_183_early_media(make_sipp, caller):
    sipp = make_sipp("uas_183_early_media.xml", timeout_s=60, files=ulaw_files())
    caller.dial(f"sip:svc@{sipp.address}")
    caller.wait_event("CALL_PROGRESS")
    caller.wait_event("CALL_ESTABLISHED")
    time.sleep(2)
    caller.hangup()
    assert sipp.wait(60) == 0
    _, dec = caller.recordings()
    # 3 s of 1000 Hz before the 200, then 600 Hz.
    assert audio.tone_seconds(dec, 1000) >= 2.0, tones(dec, 1000, 600)
    assert audio.tone_seconds(dec, 600) >= 1.0, tones(dec, 1000, 600)
    ws = [w for w in audio.windows(dec) if not w.silent]
    first_600 = next(i for i, w in enumerate(ws) if abs(w.freq - 600) <= 15)
    assert all(abs(w.freq - 1000) <= 15 for w in ws[:first_600 - 1]), tones(dec, 1000, 600)


def test_sipp_answering_uas(make_sipp, caller):
    sipp = make_sipp("uas_answer.xml", timeout_s=60)
    caller.dial(f"sip:svc@{sipp.address}")
    caller.wait_event("CALL_ESTABLISHED")
    # Kamailio's UDP workers may pass an ACK and a BYE sent a moment apart in
    # either order, and the scenario wants the ACK first: hang up once it arrived.
    peers.wait_until(lambda: sipp.received("ACK"), 10, 0.05, "SIPp to get the ACK")
    caller.hangup()
    caller.wait_event("CALL_CLOSED")
    assert sipp.wait(60) == 0
    # The 200 to baresip's BYE reached it (through Kamailio too). SIPp exits as
    # soon as it has sent the 200; baresip logs it a moment later.
    bye_ok = re.compile(r"SIP/2.0 200 OK\r?\n(?:[^\r\n]+\r?\n){0,15}?CSeq: \d+ BYE")
    peers.wait_until(lambda: bye_ok.search(caller.log.read_text(errors="replace")), 10, 0.05,
                     "baresip to log the 200 to its BYE")


def test_sipp_488(make_sipp, caller):
    sipp = make_sipp("uas_488.xml", timeout_s=60)
    caller.dial(f"sip:svc@{sipp.address}")
    assert "488" in caller.wait_event("CALL_CLOSED")["param"]
    assert sipp.wait(60) == 0


def test_sipp_reinvite_hold_and_resume(make_sipp, caller):
    sipp = make_sipp("uas_reinvite.xml", timeout_s=60, extra=["-key", "hold", "sendonly"])
    caller.dial(f"sip:svc@{sipp.address}")
    caller.wait_event("CALL_ESTABLISHED")
    caller.wait_event("CALL_CLOSED", timeout=30)  # SIPp's BYE
    assert sipp.wait(60) == 0
    log = caller.log.read_text(errors="replace")
    assert "a=sendonly" in log and "a=recvonly" in log


class ReferenceUac:
    """A UAC that follows RFC 3261 13.2.2.4 for forked answers: it sends one
    INVITE over UDP, ACKs EVERY 2xx (each To-tag is a dialog), keeps the first
    dialog and sends BYE on the others; later hangs up the first. Only for
    checking uas_forked_200.xml."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.call_id = secrets.token_hex(8) + "@127.0.0.1"
        self.tag = secrets.token_hex(4)
        self.uri = f"sip:svc@{target[0]}:{target[1]}"
        self.dialogs: list[dict] = []  # {tag, contact, to}
        self.byes_ok: list[str] = []

    def _send(self, text: str) -> None:
        self.sock.sendto(text.replace("\n", "\r\n").encode(), self.target)

    def _req(self, method: str, ruri: str, to: str, cseq: int, body: str = "") -> str:
        lines = [f"{method} {ruri} SIP/2.0",
                 f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{secrets.token_hex(6)};rport",
                 f"From: <sip:ref@127.0.0.1:{self.port}>;tag={self.tag}",
                 f"To: {to}", f"Call-ID: {self.call_id}", f"CSeq: {cseq} {method}",
                 f"Contact: <sip:ref@127.0.0.1:{self.port}>", "Max-Forwards: 70"]
        if body:
            lines.append("Content-Type: application/sdp")
        lines += [f"Content-Length: {len(body.replace(chr(10), chr(13) + chr(10)))}", "", body]
        return "\n".join(lines)

    def invite_and_settle(self, seconds: float = 3.0) -> None:
        sdp = ("v=0\no=ref 1 1 IN IP4 127.0.0.1\ns=ref\nc=IN IP4 127.0.0.1\nt=0 0\n"
               "m=audio 9 RTP/AVP 0\na=rtpmap:0 PCMU/8000\na=sendrecv\n")
        self._send(self._req("INVITE", self.uri, f"<{self.uri}>", 1, sdp))
        deadline = time.monotonic() + seconds
        for _ in range(200):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                data, _ = self.sock.recvfrom(65535)
            except (socket.timeout, TimeoutError):
                break
            msg = peers.SipResponse(data.decode(errors="replace")) \
                if data.startswith(b"SIP/2.0") else None
            if msg is None or msg.code < 200 or "INVITE" not in (msg.header("cseq") or ""):
                if msg is not None and "BYE" in (msg.header("cseq") or ""):
                    self.byes_ok.append(msg.header("to") or "")
                continue
            to = msg.header("to") or ""
            tag = re.search(r"tag=([^;>\s]+)", to).group(1)
            contact = re.search(r"<([^>]+)>", msg.header("contact") or "").group(1)
            known = next((d for d in self.dialogs if d["tag"] == tag), None)
            if known is None:
                known = {"tag": tag, "contact": contact, "to": to}
                self.dialogs.append(known)
                self._send(self._req("ACK", contact, to, 1))
                if len(self.dialogs) > 1:  # an extra dialog: ACK, then BYE
                    self._send(self._req("BYE", contact, to, 2))
            else:
                self._send(self._req("ACK", contact, to, 1))  # a retransmitted 2xx

    def hang_up_first(self) -> None:
        d = self.dialogs[0]
        self._send(self._req("BYE", d["contact"], d["to"], 2))
        self.sock.settimeout(3)
        try:
            data, _ = self.sock.recvfrom(65535)
            if data.startswith(b"SIP/2.0 200"):
                self.byes_ok.append("first")
        except (socket.timeout, TimeoutError):
            pass

    def close(self) -> None:
        self.sock.close()


def test_sipp_forked_200_passes_a_client_that_follows_rfc3261(make_sipp):
    sipp = make_sipp("uas_forked_200.xml", timeout_s=60)
    uac = ReferenceUac(("127.0.0.1", sipp.port))
    try:
        uac.invite_and_settle(3.0)
        assert [d["contact"].endswith(";leg=a") or "leg=a" in d["contact"]
                for d in uac.dialogs] == [True, False], uac.dialogs
        uac.hang_up_first()
    finally:
        uac.close()
    assert sipp.wait(60) == 0
    acks = sipp.received("ACK")
    assert len(acks) == 2
    assert len(sipp.received("BYE")) == 2


def test_sipp_forked_200_fails_baresip_which_ignores_the_second_200(make_sipp, make_baresip):
    b = make_baresip(None, "1002", password="x", register=False, outbound=False)
    sipp = make_sipp("uas_forked_200.xml", timeout_s=60)
    b.dial(f"sip:svc@{sipp.address}")
    b.wait_event("CALL_ESTABLISHED")
    time.sleep(1)
    b.hangup()
    assert sipp.wait(60) != 0
    assert len(sipp.received("ACK")) == 1  # no ACK for the second dialog


# ---------------------------------------------------------------- SIPp UAC scenarios

@pytest.fixture
def callee(make_baresip):
    """baresip reached directly on its SIP port (no registrar)."""
    def make(answermode="auto", tone=440):
        return make_baresip(None, "1002", password="x", register=False, outbound=False,
                            answermode=answermode, tone=tone)
    return make


def test_sipp_retransmitted_invite_makes_one_call_at_baresip(make_sipp, callee):
    b = callee("manual")
    sipp = make_sipp("uac_retransmit_invite.xml", timeout_s=60,
                     remote=f"127.0.0.1:{b.sip_port}", extra=["-nr", "-s", "1002"])
    b.wait_event("CALL_INCOMING")
    time.sleep(1)
    b.answer()
    assert sipp.wait(60) == 0
    b.wait_event("CALL_CLOSED")
    assert b.count("CALL_INCOMING") == 1
    # Every copy was answered by a 180, all of one dialog (one To-tag).
    ringing = [m for m in sipp.messages().split("received") if "SIP/2.0 180" in m[:200]]
    assert len(ringing) >= 3
    assert len({re.search(r"(?m)^To:.*tag=([^;>\s]+)", m).group(1) for m in ringing}) == 1
    invites = [m for m in sipp.sent() if m.startswith("INVITE ")]
    assert len(invites) == 4 and len({re.search(r"branch=(\S+)", m).group(1)
                                      for m in invites}) == 1


def test_sipp_bye_before_ack_at_baresip(make_sipp, callee):
    b = callee("auto")
    sipp = make_sipp("uac_bye_before_ack.xml", timeout_s=60,
                     remote=f"127.0.0.1:{b.sip_port}", extra=["-s", "1002"])
    assert sipp.wait(60) == 0
    b.wait_event("CALL_CLOSED")
    assert not [m for m in sipp.sent() if m.startswith("ACK ")]


def test_sipp_no_common_codec_gets_488_from_baresip(make_sipp, callee):
    b = callee("auto")
    sipp = make_sipp("uac_488_no_codec.xml", timeout_s=60,
                     remote=f"127.0.0.1:{b.sip_port}", extra=["-s", "1002"])
    assert sipp.wait(60) == 0
    assert b.count("CALL_ESTABLISHED") == 0


def test_sipp_hostile_caller_id_reaches_baresip(make_sipp, callee):
    b = callee("manual")
    sipp = make_sipp("uac_hostile_callerid.xml", timeout_s=60,
                     remote=f"127.0.0.1:{b.sip_port}", extra=["-s", "1002"])
    inc = b.wait_event("CALL_INCOMING")
    assert inc["peeruri"].startswith("sip:6666@127.0.0.1")
    b.answer()
    assert sipp.wait(60) == 0
    assert '"\\"; rm -rf ~ $(id)"' in sipp.sent()[0]


@pytest.mark.parametrize("scenario", ["uac_cancel.xml", "uac_cancel_elsewhere.xml"])
def test_sipp_cancel_while_baresip_rings(make_sipp, callee, scenario):
    b = callee("manual")
    sipp = make_sipp(scenario, timeout_s=30, remote=f"127.0.0.1:{b.sip_port}",
                     extra=["-s", "1002"])
    b.wait_event("CALL_INCOMING")
    assert sipp.wait(60) == 0  # 180, then 200 to the CANCEL and 487
    b.wait_event("CALL_CLOSED")
    cancel = [m for m in sipp.sent() if m.startswith("CANCEL ")]
    assert len(cancel) == 1
    assert ('Reason: SIP;cause=200;text="Call completed elsewhere"' in cancel[0]) == \
        (scenario == "uac_cancel_elsewhere.xml")


def test_sipp_rtp_call_is_heard_by_baresip(make_sipp, callee):
    b = callee("auto", tone=440)
    sipp = make_sipp("uac_rtp_call.xml", timeout_s=60, files={"tone.ulaw": _ulaw(1000)},
                     remote=f"127.0.0.1:{b.sip_port}", extra=["-s", "1002", "-d", "4000"])
    assert sipp.wait(60) == 0
    b.wait_event("CALL_CLOSED")
    _, dec = b.recordings()
    assert audio.tone_coverage(dec, 1000) >= 0.9, audio.describe(dec, 1000)
    assert audio.tone_seconds(dec, 1000) >= 3.0, tones(dec, 1000)


PROXY_HEADER_KEYS = ["-au", "1002", "-ap", USERS["1002"],
                     "-key", "hdr_name", "X-AUTOANSWER", "-key", "hdr_value", "true"]


def test_sipp_proxy_header_call_is_answered_by_baresip(kam, make_sipp, make_baresip):
    """uac_proxy_header: through Kamailio (407, then the INVITE with credentials and
    the header) to baresip 1003, which auto-answers."""
    b = make_baresip(kam, "1003", answermode="auto")
    sipp = make_sipp("uac_proxy_header.xml", timeout_s=30, remote=kam.address,
                     extra=["-s", "1003", *PROXY_HEADER_KEYS])
    assert sipp.wait(60) == 0
    b.wait_event("CALL_CLOSED")
    invites = [m for m in sipp.sent() if m.startswith("INVITE ")]
    assert "Proxy-Authorization:" in invites[-1] and "X-AUTOANSWER: true" in invites[-1]


def test_sipp_proxy_header_call_fails_when_nobody_answers(kam, make_sipp, make_baresip):
    b = make_baresip(kam, "1003", answermode="manual")
    sipp = make_sipp("uac_proxy_header.xml", timeout_s=12, remote=kam.address,
                     extra=["-s", "1003", *PROXY_HEADER_KEYS])
    b.wait_event("CALL_INCOMING")  # it rings, and nobody answers it
    assert sipp.wait(60) != 0


def test_sipp_foreign_domain_fails_a_callee_refusing_otherwise(kam, make_sipp, make_baresip):
    """uac_foreign_domain wants 403: baresip (which has no such rule) rings and is
    made to refuse with 486, so the scenario fails."""
    b = make_baresip(kam, "1002", answermode="manual")
    sipp = make_sipp("uac_foreign_domain.xml", timeout_s=15, remote=kam.address,
                     extra=["-s", "1002"])
    inc = b.wait_event("CALL_INCOMING")
    assert inc["peeruri"].startswith("sip:6666@127.0.0.9"), inc  # relayed, no challenge
    b.hangup()
    assert sipp.wait(60) != 0
    assert any(m.startswith("SIP/2.0 486") for m in sipp.received()), sipp.messages()[-3000:]


# Session timers (RFC 4028): baresip 1.0 has none, so each session-timer scenario
# is shown to fail it (the phone's tests in test_session_timers.py pass them).

def test_sipp_uas_session_timer_fails_a_caller_without_timers(kam, make_sipp, make_baresip):
    """baresip never refreshes: SIPp's wait for the refresh (or its check that the
    INVITE says Supported: timer) fails the call."""
    a = make_baresip(kam, "1002")
    sipp = make_sipp("uas_session_timer.xml", timeout_s=30, extra=["-key", "se", "10"])
    a.dial(f"sip:svc@{sipp.address}")
    assert sipp.wait(60) != 0
    assert not [m for m in sipp.received("INVITE")[1:] if "Session-Expires" in m]


@pytest.mark.parametrize("scenario,keys,answermode", [
    ("uac_session_timer.xml", ["-key", "se_low", "5", "-key", "se", "10"], "manual"),
    ("uac_session_expiry.xml", ["-key", "se", "10"], "auto"),
])
def test_sipp_uac_session_timer_scenarios_fail_a_callee_without_timers(make_sipp, callee,
                                                                      scenario, keys,
                                                                      answermode):
    """baresip rings (and answers) whatever the Session-Expires, with none of its own:
    the scenario wants a 422, or a 200 naming the refresher, and fails."""
    b = callee(answermode)
    sipp = make_sipp(scenario, timeout_s=30, remote=f"127.0.0.1:{b.sip_port}",
                     extra=["-s", "1002", *keys])
    assert sipp.wait(20) != 0
    got = sipp.received()
    assert not [m for m in got if m.startswith("SIP/2.0 422")], got
    assert not [m for m in got if "Session-Expires" in m], got


# ---------------------------------------------------------------- every scenario can fail

@pytest.mark.parametrize("scenario", ["uas_183_early_media.xml", "uas_488.xml",
                                      "uas_reinvite.xml", "uas_forked_200.xml",
                                      "uas_answer.xml"])
def test_uas_scenarios_fail_when_nobody_calls(make_sipp, scenario):
    sipp = make_sipp(scenario, timeout_s=3, files=ulaw_files(), extra=["-key", "hold", "sendonly"])
    assert sipp.wait(30) != 0


def test_uac_scenarios_fail_when_nobody_answers(make_sipp):
    """All at once (each waits 30 s for a first answer before it gives up)."""
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never answers
    dead.bind(("127.0.0.1", 0))
    try:
        replaces = ["-key", "replaces", "a@h;to-tag=1;from-tag=2"]
        keys = {"uac_callerid.xml": ["-key", "name", "x"], "uac_message_405.xml": ["-key", "text", "x"],
                "uac_replaces.xml": [*replaces, "-key", "rtp_port", "9"],
                "uac_replaces_481.xml": replaces, "uac_replaces_400.xml": replaces}
        runs = [make_sipp(scenario, timeout_s=5, files=ulaw_files(),
                          remote=f"127.0.0.1:{dead.getsockname()[1]}",
                          extra=["-s", "1001", *keys.get(scenario, [])])
                for scenario in ["uac_retransmit_invite.xml", "uac_bye_before_ack.xml",
                                 "uac_488_no_codec.xml", "uac_hostile_callerid.xml",
                                 "uac_rtp_call.xml", "uac_callerid.xml", "uac_cancel.xml",
                                 "uac_cancel_elsewhere.xml", "uac_busy.xml",
                                 "uac_message_405.xml", "uac_replaces.xml",
                                 "uac_replaces_481.xml", "uac_replaces_400.xml"]]
        for sipp in runs:
            assert sipp.wait(120) != 0, sipp.scenario.name
    finally:
        dead.close()


def test_uac_replaces_fails_against_a_peer_that_rings(make_sipp, make_baresip):
    """baresip knows nothing of Replaces: it rings (180) before it answers, which
    uac_replaces.xml must take as a failure (a replacing call is answered at once)."""
    bs = make_baresip(None, "1001", register=False, outbound=False)
    sipp = make_sipp("uac_replaces.xml", timeout_s=30, remote=f"127.0.0.1:{bs.sip_port}",
                     extra=["-s", "1001", "-key", "replaces", "a@h;to-tag=1;from-tag=2",
                            "-key", "rtp_port", "9"])
    assert sipp.wait(60) != 0
    assert [m for m in sipp.received() if m.startswith("SIP/2.0 180")], sipp.received()
