"""DTMF, each method and each direction, in real calls.

Out: the 16 digits sent by us are reported by baresip in order (RFC 4733 and SIP
INFO; baresip has no in-band detector, so in-band digits are found in baresip's
recording by a Goertzel detector written here, independent of the phone's).
In: digits from baresip (RFC 4733), from SIPp (SIP INFO) and in-band tones in
baresip's audio arrive as `call.dtmf` events in order."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

import audio
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


def detect_digits(path) -> str:
    """Digits in a recording: per 20 ms block the strongest row and column tone must
    each carry most of their group's energy; a digit counts after 2 blocks, and a
    new one after a gap."""
    x, rate = audio._samples(path, None)
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
                     extra=["-s", "1001"])
    got = dtmf_events(ev, 4)
    assert "".join(e["digit"] for e in got) == "1#A*"
    assert all(e["method"] == "info" for e in got), got
    assert sipp.wait() == 0
