"""Audio levels during a real call with baresip through Kamailio: `setmicvolume`
halves what baresip hears (-6 dB), `mute` silences it and unmuting brings it back;
`setvolume` halves what we hear. Measured in the recordings, window by window."""

from __future__ import annotations

import statistics
import time

import pytest

import audio
from peers import account, ini

PASSWORD = "p;w#1005"
USERS = {"1001": PASSWORD, "1002": "secret2"}
PHASE = 2.0  # seconds per level step


@pytest.fixture
def kam(make_kamailio):
    return make_kamailio(users=USERS)


def levels(path) -> list[float]:
    """dBFS of each 250 ms window of the call portion (leading/trailing silence cut)."""
    ws = audio.windows(path, window_ms=250)
    while ws and ws[0].silent:
        ws.pop(0)
    while ws and ws[-1].silent:
        ws.pop()
    return [w.level for w in ws]


def plateau(values: list[float], start: float, end: float) -> float:
    """Median level of the windows between `start` and `end` seconds (250 ms each)."""
    part = values[int(start * 4):int(end * 4)]
    assert part, (start, end, len(values))
    return statistics.median(part)


def test_mic_volume_and_mute_change_what_the_other_side_hears(kam, make_phone, make_baresip):
    a = make_baresip(kam, "1002", tone=1000)
    ph = make_phone(ini(account(kam.address, "1001", PASSWORD),
                        audioInputDevice="tone:440", audioOutputDevice="null"))
    ev = ph.events()
    ev.wait_state(1, "registered", 30, codes={200})
    rc, out, _ = ph.cmd("dial", "1002")
    cid = int(out.strip())
    ev.wait_for("call.confirmed", lambda e: e.get("call") == cid, 30)
    time.sleep(PHASE)
    assert ph.cmd("setmicvolume", "50")[1].strip() == "50"
    time.sleep(PHASE)
    assert "muted" in ph.cmd("mute")[1]
    time.sleep(PHASE)
    assert "unmuted" in ph.cmd("mute")[1]
    time.sleep(PHASE)
    ph.cmd("hangup", str(cid))
    a.wait_event("CALL_CLOSED")
    _, dec = a.recordings()
    lv = levels(dec)
    # Phases of PHASE seconds each; keep 0.5 s away from every change.
    full = plateau(lv, 0.5, PHASE - 0.5)
    half = plateau(lv, PHASE + 0.5, 2 * PHASE - 0.5)
    muted = [w for w in audio.windows(dec, window_ms=250) if w.silent]
    back = plateau(lv, 3 * PHASE + 0.5, 4 * PHASE - 0.5)
    assert -8.0 <= half - full <= -4.0, (full, half)
    assert len(muted) >= int((PHASE - 1.0) * 4), "no silence while muted"
    assert -8.0 <= back - full <= -4.0, (full, back)
    assert audio.tone_coverage(dec, 440) > 0.5


def test_speaker_volume_changes_what_we_hear(kam, make_phone, make_baresip, tmp_path):
    a = make_baresip(kam, "1002", tone=1000)
    out = tmp_path / "heard.wav"
    ph = make_phone(ini(account(kam.address, "1001", PASSWORD),
                        audioInputDevice="null", audioOutputDevice=f"file:{out}"))
    ev = ph.events()
    ev.wait_state(1, "registered", 30, codes={200})
    rc, o, _ = ph.cmd("dial", "1002")
    cid = int(o.strip())
    ev.wait_for("call.confirmed", lambda e: e.get("call") == cid, 30)
    time.sleep(PHASE)
    assert ph.cmd("setvolume", "50")[1].strip() == "50"
    time.sleep(PHASE)
    assert ph.cmd("VolumeUp", "2")[1].strip() == "60"
    ph.cmd("hangup", str(cid))
    lv = levels(out)
    full = plateau(lv, 0.5, PHASE - 0.5)
    half = plateau(lv, PHASE + 0.5, 2 * PHASE - 0.5)
    assert -8.0 <= half - full <= -4.0, (full, half)
    assert "volumeOutput=60" in ph.ini_path.read_text()
