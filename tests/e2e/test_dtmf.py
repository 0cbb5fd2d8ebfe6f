"""DTMF, each method and each direction, in real calls.

Out: the 16 digits sent by us are reported by baresip in order (RFC 4733 and SIP
INFO; baresip has no in-band detector, so in-band digits are found in baresip's
recording by a Goertzel detector written here, independent of the phone's);
"auto" with a peer that answers without telephone-event (SIPp, PCMU only) sends
them in-band, found in the RTP on the wire; post-dial digits (`1002,45#`) reach
baresip after the one-second pause.
In: digits from baresip (RFC 4733), from SIPp (SIP INFO, all 16) and in-band
tones in baresip's audio arrive as `call.dtmf` events in order."""

from __future__ import annotations

import math
import re
import time

import numpy as np
import pytest

import audio
import rtp
from peers import account, ini

PASSWORD = "p;w#1005"
USERS = {"1001": PASSWORD, "1002": "secret2"}
DIGITS = "123456789*0#ABCD"
LOW = [697, 770, 852, 941]
HIGH = [1209, 1336, 1477, 1633]
KEYS = ["123A", "456B", "789C", "*0#D"]


@pytest.fixture
def kam(make_kamailio):
    return make_kamailio(users=USERS)


def phone_in_call(kam, make_phone, make_baresip, method: str, **baresip_kw):
    a = make_baresip(kam, "1002", **baresip_kw)
    ph = make_phone(ini(account(kam.address, "1001", PASSWORD), audioInputDevice="null",
                        audioOutputDevice="null", DTMFMethod=method))
    ev = ph.events()
    ev.wait_state(1, "registered", 30, codes={200})
    cid = int(ph.cmd("dial", "1002")[1].strip())
    ev.wait_for("call.confirmed", lambda e: e.get("call") == cid, 30)
    a.wait_event("CALL_ESTABLISHED")
    return a, ph, ev, cid


def dtmf_events(ev, n: int, timeout: float = 20) -> list[dict]:
    got = []
    for _ in range(n):
        got.append(ev.wait_for("call.dtmf", None, timeout))
    return got


def goertzel_power(x: np.ndarray, f: float, rate: int) -> float:
    w = 2 * math.pi * f / rate
    c = 2 * math.cos(w)
    s1 = s2 = 0.0
    for v in x:
        s1, s2 = float(v) + c * s1 - s2, s1
    return s1 * s1 + s2 * s2 - c * s1 * s2


def detect_digits(src, rate: int | None = None) -> str:
    """Digits in a recording (a WAV path, or samples at `rate`): per 20 ms block the
    strongest row and column tone must each carry most of their group's energy; a
    digit counts after 2 blocks, and a new one after a gap."""
    x, rate = audio._samples(src, rate)
    block = int(rate * 0.02)
    out, last, run = [], None, 0
    for i in range(len(x) // block):
        b = np.asarray(x[i * block:(i + 1) * block], dtype=np.float64)
        if np.sqrt(np.mean(b * b)) < 0.01:
            key = None
        else:
            lows = [goertzel_power(b, f, rate) for f in LOW]
            highs = [goertzel_power(b, f, rate) for f in HIGH]
            li, hi = int(np.argmax(lows)), int(np.argmax(highs))
            ok = lows[li] > 4 * sorted(lows)[-2] and highs[hi] > 4 * sorted(highs)[-2]
            key = KEYS[li][hi] if ok else None
        run = run + 1 if key is not None and key == last else (1 if key else 0)
        if key is not None and run == 2:
            out.append(key)
        last = key
    return "".join(out)


@pytest.mark.parametrize("method", ["0", "2", "3"], ids=["auto-rfc4733", "rfc4733", "sip-info"])
def test_our_digits_reach_baresip_in_order(kam, make_phone, make_baresip, method):
    a, ph, ev, cid = phone_in_call(kam, make_phone, make_baresip, method, tone=0)
    rc, out, err = ph.cmd("dtmf", DIGITS)
    assert rc == 0, err
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and a.count("CALL_DTMF_START") < len(DIGITS):
        time.sleep(0.1)
    got = "".join(e.get("param", "") for e in a.events if e.get("type") == "CALL_DTMF_START")
    assert got == DIGITS, got
    if method == "3":
        assert "INFO sip:" in ph.trace_text()
    ph.cmd("hangup", str(cid))


def test_inband_digits_are_in_what_baresip_records(kam, make_phone, make_baresip):
    a, ph, ev, cid = phone_in_call(kam, make_phone, make_baresip, "1", tone=0)
    assert ph.cmd("dtmf", DIGITS)[0] == 0
    time.sleep(len(DIGITS) * 0.16 + 1.0)
    ph.cmd("hangup", str(cid))
    a.wait_event("CALL_CLOSED")
    _, dec = a.recordings()
    assert detect_digits(dec) == DIGITS
    assert a.count("CALL_DTMF_START") == 0  # nothing went as RFC 4733


def test_baresip_digits_arrive_as_events_in_order(kam, make_phone, make_baresip):
    a, ph, ev, cid = phone_in_call(kam, make_phone, make_baresip, "0", tone=0)
    for d in DIGITS:
        a.command("sndcode", d)
        time.sleep(0.25)
    got = dtmf_events(ev, len(DIGITS))
    assert "".join(e["digit"] for e in got) == DIGITS
    assert all(e["call"] == cid and e["method"] == "rfc4733" for e in got), got


def test_inband_digits_from_baresip_are_detected(kam, make_phone, make_baresip, tmp_path):
    # baresip plays a file holding the digits as tones (made here, 100 ms on, 100 ms off).
    rate = 8000
    parts = [np.zeros(rate)]
    for d in DIGITS:
        r = next(i for i, row in enumerate(KEYS) if d in row)
        c = KEYS[r].index(d)
        t = np.arange(int(rate * 0.1)) / rate
        parts.append(0.25 * np.sin(2 * math.pi * LOW[r] * t) + 0.25 * np.sin(2 * math.pi * HIGH[c] * t))
        parts.append(np.zeros(int(rate * 0.1)))
    parts.append(np.zeros(rate * 60))
    src = tmp_path / "digits.wav"
    audio.write_wav(src, np.concatenate(parts), rate)
    a, ph, ev, cid = phone_in_call(kam, make_phone, make_baresip, "1", source=src)
    got = dtmf_events(ev, len(DIGITS))
    assert "".join(e["digit"] for e in got) == DIGITS
    assert all(e["method"] == "inband" for e in got), got


def test_info_digits_from_sipp_arrive_as_events(make_phone, make_sipp, free_port):
    port = free_port("sip")
    ph = make_phone(ini(account("", "1001", ""), sourcePort=port, autoAnswer="all",
                        audioInputDevice="null", audioOutputDevice="null"))
    ev = ph.events()
    sipp = make_sipp("uac_info_dtmf.xml", timeout_s=60, remote=f"127.0.0.1:{port}",
                     extra=["-s", "1001", "-key", "digits", DIGITS])
    got = dtmf_events(ev, len(DIGITS))
    assert "".join(e["digit"] for e in got) == DIGITS
    assert all(e["method"] == "info" for e in got), got
    assert sipp.wait() == 0
    infos = [m for m in sipp.sent() if m.startswith("INFO ")]
    assert len(infos) == len(DIGITS), len(infos)  # one INFO a digit, none resent


def test_auto_sends_inband_when_the_peer_has_no_telephone_event(make_phone, make_sipp,
                                                                rtp_tap):
    # DTMFMethod=0 ("auto") with a peer whose answer has PCMU only: the digits go
    # as tones in the audio, and no packet of the telephone-event type we offered.
    sipp = make_sipp("uas_pcmu_only.xml", timeout_s=60)
    ph = make_phone(ini(accountId=0, audioInputDevice="null", audioOutputDevice="null",
                        DTMFMethod="0"))
    ev = ph.events()
    cid = int(ph.cmd("dial", f"sip:svc@{sipp.address}")[1].strip())
    ev.wait_for("call.confirmed", lambda e: e.get("call") == cid, 30)
    rc, out, err = ph.cmd("dtmf", DIGITS)
    assert rc == 0, err
    time.sleep(len(DIGITS) * 0.16 + 1.0)
    ph.cmd("hangup", str(cid))
    assert sipp.wait() == 0
    invite = next(m for m in ph.trace_messages() if m.sent and m.method == "INVITE")
    offered = re.search(r"(?m)^a=rtpmap:(\d+) telephone-event/8000", invite.body)
    assert offered, invite.text  # we offered it; the answer left it out
    answer = next(m for m in ph.trace_messages() if not m.sent and m.code == 200
                  and m.cseq_method == "INVITE")
    assert "telephone-event" not in answer.body, answer.text
    ours = rtp.sdp_audio_port(invite.body)
    packets = rtp_tap.flow(src=ours, dst=sipp.media_port)
    assert len(packets) >= 100, rtp_tap.diagnostics()
    assert {p.pt for p in packets} == {0}, sorted({p.pt for p in packets})
    assert int(offered.group(1)) not in {p.pt for p in packets}
    assert detect_digits(rtp.decode(packets), 8000) == DIGITS


@pytest.mark.parametrize("words", [("dial", "1002,45#"), ("msip:1002,45#",)],
                         ids=["dial", "msip"])
def test_post_dial_digits_reach_baresip_after_the_pause(kam, make_phone, make_baresip,
                                                        words):
    a = make_baresip(kam, "1002", tone=0)
    ph = make_phone(ini(account(kam.address, "1001", PASSWORD), audioInputDevice="null",
                        audioOutputDevice="null", DTMFMethod="0"))
    ph.events().wait_state(1, "registered", 30, codes={200})
    rc, out, err = ph.cmd(*words)
    assert rc == 0, err
    established = a.wait_event("CALL_ESTABLISHED")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and a.count("CALL_DTMF_START") < 3:
        time.sleep(0.05)
    starts = [e for e in a.events if e.get("type") == "CALL_DTMF_START"]
    assert "".join(e.get("param", "") for e in starts) == "45#", starts
    # `,` is a one-second pause after the answer (baresip's events lag a little).
    delay = starts[0]["_t"] - established["_t"]
    assert 0.8 <= delay <= 3.0, delay
    ph.cmd("hangupall")
