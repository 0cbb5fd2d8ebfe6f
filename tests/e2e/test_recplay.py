"""Recording a call, playing a file into a call, and the conference, against
baresip through Kamailio.

The phone under test is 1001; baresip B is 1002, C is 1003, D is 1004. Each baresip plays a
tone file and records what it receives (peers.Baresip: dump-*-dec.wav). What a
recording holds is judged by frequency (audio.py), never by "not silent":
- our recording is a mono mix of both directions, so each 250 ms window must
  hold BOTH tones (each a real share of the window's energy, audio.tonality);
- a file played into the call replaces our tone in what baresip receives;
- in a conference each baresip receives the OTHER baresip's tone (and not its
  own), while we send silence.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

import audio
from peers import account, ini

USERS = {"1001": "p;w#1005", "1002": "secret2", "1003": "secret3", "1004": "secret4"}
TONE_US, TONE_B, TONE_C, TONE_FILE = 440, 1000, 900, 1000
CONF_B, CONF_C, CONF_D = 600, 900, 700
# MicroSIP's name: YYYYMMDD-HHMMSS-<remote user>-<outgoing|incoming>-<account label>.wav
NAME = re.compile(r"^\d{8}-\d{6}-1002-outgoing-1001(-\d+)?\.wav$")


@pytest.fixture
def kam(make_kamailio):
    return make_kamailio(users=USERS)


@pytest.fixture
def rec_phone(make_phone, kam, tmp_path):
    """make(tone=440 or None for silence, **settings) -> a registered phone whose
    recordings go to tmp_path/recordings (ph.rec_dir)."""
    def make(tone=TONE_US, **settings):
        if tone:
            src = audio.make_tone_wav(tmp_path / f"phone-src-{tone}.wav", tone, 60)
            source = f"file:{src}"
        else:
            source = "null"
        rec_dir = tmp_path / "recordings"
        keys = dict(audioInputDevice=source, audioOutputDevice="null",
                    recordingPath=str(rec_dir))
        keys.update(settings)
        ph = make_phone(ini(account(kam.address, "1001", USERS["1001"]), **keys))
        ph.events().wait_state(1, "registered", 30, codes={200})
        ph.rec_dir = rec_dir
        return ph
    return make


def call(ph, words=("dial", "1002")) -> int:
    rc, out, err = ph.cmd(*words)
    assert rc == 0 and out.strip().isdigit(), (rc, out, err)
    cid = int(out.strip())
    ph.events().wait_for("call.confirmed", lambda e: e.get("call") == cid, 30)
    return cid


def mixed_windows(path, freqs, min_share=0.15) -> float:
    """Fraction of the call span's 250 ms windows in which EVERY one of freqs
    holds at least min_share of the window's energy (a mix, not one tone)."""
    x, rate = audio.read_wav(path)
    n = rate // 4
    ws = [x[i * n:(i + 1) * n] for i in range(len(x) // n)]
    loud = [i for i, w in enumerate(ws) if audio.level_db(w) > audio.SILENCE_DB]
    if not loud:
        return 0.0
    span = ws[loud[0]:loud[-1] + 1]
    good = sum(1 for w in span if all(audio.tonality(w, rate, f) >= min_share for f in freqs))
    return good / len(span)


def first_tone_window(path, freq) -> float | None:
    """Start (s) of the first window holding freq as its tone."""
    for w in audio.windows(path):
        if not w.silent and abs(w.freq - freq) <= 15 and w.tonal >= 0.5:
            return w.start
    return None


# ---------------------------------------------------------------- recording

def test_record_start_stop_writes_a_microsip_named_wav_with_both_sides(
        kam, rec_phone, make_baresip):
    b = make_baresip(kam, "1002", tone=TONE_B)
    ph = rec_phone()
    ev = ph.events()
    cid = call(ph)
    b.wait_event("CALL_ESTABLISHED")
    time.sleep(1)
    rc, reply = ph.cmd_json("record", "start", str(cid))
    assert rc == 0 and reply["ok"], reply
    path = Path(reply["data"]["path"])
    assert path.parent == ph.rec_dir and NAME.match(path.name), path
    started = ev.wait_for("call.recording", lambda e: e.get("state") == "started", 10)
    assert started["call"] == cid and started["path"] == str(path), started
    # `calls` shows it.
    rc, calls = ph.cmd_json("calls")
    assert [c.get("recording") for c in calls["data"]] == [str(path)], calls
    time.sleep(5)
    rc, out, err = ph.cmd("record", "stop")  # no id: the active call
    assert rc == 0 and "recording stopped" in out, (out, err)
    stopped = ev.wait_for("call.recording", lambda e: e.get("state") == "stopped", 10)
    assert stopped["path"] == str(path) and "error" not in stopped, stopped
    # The reply came once the file was finished: its header is right now.
    secs = audio.duration(path)
    assert 4.0 <= secs <= 7.0, f"{path}: {secs:.2f}s"
    share = mixed_windows(path, (TONE_US, TONE_B))
    assert share >= 0.9, f"both tones in {share:.0%} of the windows\n" + audio.describe(path)
    # Stopping again changes nothing; the call went on throughout.
    rc, out, err = ph.cmd("record", "stop", str(cid))
    assert rc == 0 and "not being recorded" in out, (out, err)
    assert ph.cmd("STATUS")[1].strip() == "2"
    ph.cmd("hangup", str(cid))
    ev.wait_for("call.ended", lambda e: e.get("call") == cid, 20)
    assert sorted(p.name for p in ph.rec_dir.iterdir()) == [path.name]


def test_auto_recording_records_every_call_until_it_ends(kam, rec_phone, make_baresip):
    b = make_baresip(kam, "1002", tone=TONE_B)
    ph = rec_phone(autoRecording=1)
    ev = ph.events()
    cid = call(ph)
    b.wait_event("CALL_ESTABLISHED")
    started = ev.wait_for("call.recording", lambda e: e.get("call") == cid, 10)
    assert started["state"] == "started", started
    path = Path(started["path"])
    assert path.parent == ph.rec_dir and NAME.match(path.name), path
    time.sleep(4)
    b.hangup()
    stopped = ev.wait_for("call.recording", lambda e: e.get("call") == cid, 20)
    assert stopped["state"] == "stopped" and stopped["path"] == str(path), stopped
    # Finished before the call's end is announced.
    ev.wait_for("call.ended", lambda e: e.get("call") == cid, 5)
    assert audio.duration(path) >= 3.0, audio.describe(path)
    share = mixed_windows(path, (TONE_US, TONE_B))
    assert share >= 0.9, f"both tones in {share:.0%} of the windows\n" + audio.describe(path)


def test_record_refuses_without_a_call_and_with_bad_words(rec_phone):
    ph = rec_phone()
    rc, reply = ph.cmd_json("record", "start")
    assert rc != 0 and reply["code"] == "no_call", reply
    rc, reply = ph.cmd_json("record", "start", "9")
    assert rc != 0 and reply["code"] == "no_such_call", reply
    rc, reply = ph.cmd_json("record", "pause")
    assert rc != 0 and reply["code"] == "bad_argument", reply
    assert not ph.rec_dir.exists() or not any(ph.rec_dir.iterdir())


# ---------------------------------------------------------------- play

def test_play_replaces_our_tone_then_back_to_the_microphone(
        kam, rec_phone, make_baresip, tmp_path):
    b = make_baresip(kam, "1002", tone=0)
    ph = rec_phone()
    ev = ph.events()
    clip = audio.make_tone_wav(tmp_path / "clip-1k.wav", TONE_FILE, 3)
    cid = call(ph)
    b.wait_event("CALL_ESTABLISHED")
    time.sleep(2)
    rc, out, err = ph.cmd("play", str(clip), str(cid))
    assert rc == 0 and "playing" in out, (out, err)
    assert ev.wait_for("call.playing", None, 5)["state"] == "started"
    ended = ev.wait_for("call.playing", None, 15)
    assert ended["state"] == "ended" and ended["call"] == cid, ended
    time.sleep(2)
    ph.cmd("hangup", str(cid))
    b.wait_event("CALL_CLOSED")
    _, dec = b.recordings()
    ours, played = audio.tone_seconds(dec, TONE_US), audio.tone_seconds(dec, TONE_FILE)
    assert played >= 2.5 and ours >= 3.0, f"{ours}s of 440 Hz, {played}s of 1 kHz\n" \
        + audio.describe(dec)
    # 440 Hz, then the file's 1 kHz, then 440 Hz again.
    ws = [w for w in audio.windows(dec) if not w.silent and w.tonal >= 0.5]
    seq = []
    for w in ws:
        f = TONE_FILE if abs(w.freq - TONE_FILE) <= 15 else TONE_US if abs(w.freq - TONE_US) <= 15 else 0
        if f and (not seq or seq[-1] != f):
            seq.append(f)
    assert seq == [TONE_US, TONE_FILE, TONE_US], (seq, audio.describe(dec))


def test_play_with_hangup_ends_the_call_after_the_file(
        kam, rec_phone, make_baresip, tmp_path):
    b = make_baresip(kam, "1002", tone=0)
    ph = rec_phone()
    ev = ph.events()
    clip = audio.make_tone_wav(tmp_path / "clip-1k.wav", TONE_FILE, 3)
    cid = call(ph)
    b.wait_event("CALL_ESTABLISHED")
    # A missing file: a clear error, and nothing changes.
    rc, reply = ph.cmd_json("play", str(tmp_path / "missing.wav"), str(cid), "hangup")
    assert rc != 0 and reply["code"] == "media" and "missing.wav" in reply["error"], reply
    rc, reply = ph.cmd_json("play", str(tmp_path), str(cid))
    assert rc != 0 and reply["code"] == "media", reply
    assert ev.count("call.playing") == 0
    time.sleep(1)
    assert ph.cmd("STATUS")[1].strip() == "2"
    rc, out, err = ph.cmd("play", str(clip), str(cid), "hangup")
    assert rc == 0, (out, err)
    ended = ev.wait_for("call.playing", lambda e: e.get("state") == "ended", 15)
    assert ended["call"] == cid, ended
    gone = ev.wait_for("call.ended", lambda e: e.get("call") == cid, 15)
    assert gone["by"] == "local", gone
    b.wait_event("CALL_CLOSED")
    _, dec = b.recordings()
    assert audio.tone_seconds(dec, TONE_FILE) >= 2.5, audio.describe(dec)
    # The call ended with the file: no 440 Hz after the 1 kHz.
    first_file = first_tone_window(dec, TONE_FILE)
    assert first_file is not None
    after = [w for w in audio.windows(dec) if w.start > first_file and not w.silent
             and abs(w.freq - TONE_US) <= 15 and w.tonal >= 0.5]
    assert not after, audio.describe(dec)


# ---------------------------------------------------------------- conference

def test_conference_each_baresip_hears_the_other(kam, rec_phone, make_baresip):
    """B (600 Hz) and C (900 Hz) merged, D (700 Hz) in a call of its own; hold C:
    the conference is over; merge B and D; D hangs up: over again."""
    bb = make_baresip(kam, "1002", tone=CONF_B)
    bc = make_baresip(kam, "1003", tone=CONF_C)
    bd = make_baresip(kam, "1004", tone=CONF_D)
    ph = rec_phone(tone=None)  # we send silence: any tone a baresip hears is another's
    ev = ph.events()
    id_b = call(ph, ("dial", "1002"))
    bb.wait_event("CALL_ESTABLISHED")
    id_c = call(ph, ("callto", "1003"))  # callto: the other calls are not put on hold
    bc.wait_event("CALL_ESTABLISHED")
    id_d = call(ph, ("callto", "1004"))
    bd.wait_event("CALL_ESTABLISHED")
    time.sleep(2)
    rc, reply = ph.cmd_json("conference", str(id_b), str(id_c))
    assert rc == 0 and reply["ok"] and sorted(reply["data"]["members"]) == sorted([id_b, id_c]), \
        reply
    joined = {ev.wait_for("call.conference", None, 5)["call"] for _ in range(2)}
    assert joined == {id_b, id_c}
    rc, calls = ph.cmd_json("calls")
    assert {c["id"]: c["conference"] for c in calls["data"]} == \
        {id_b: True, id_c: True, id_d: False}, calls
    time.sleep(6)
    # Holding a member takes it out; with one left, the conference is over.
    rc, out, err = ph.cmd("hold", str(id_c), "on")
    assert rc == 0, (out, err)
    left = {ev.wait_for("call.conference", lambda e: e.get("state") == "left", 10)["call"]
            for _ in range(2)}
    assert left == {id_b, id_c}
    rc, reply = ph.cmd_json("conference", str(id_b), str(id_d))
    assert rc == 0 and sorted(reply["data"]["members"]) == sorted([id_b, id_d]), reply
    time.sleep(4)
    # A member hanging up leaves it too.
    bd.hangup()
    left = {ev.wait_for("call.conference", lambda e: e.get("state") == "left", 10)["call"]
            for _ in range(2)}
    assert left == {id_b, id_d}
    ev.wait_for("call.ended", lambda e: e.get("call") == id_d, 10)
    rc, calls = ph.cmd_json("calls")
    assert not any(c["conference"] for c in calls["data"]), calls
    ph.cmd("hangupall")
    for b in (bb, bc, bd):
        b.wait_event("CALL_CLOSED")
    dec_b, dec_c, dec_d = (b.recordings()[1] for b in (bb, bc, bd))
    # Each member heard the other member, for as long as they were merged.
    assert audio.tone_seconds(dec_b, CONF_C) >= 5.0, audio.describe(dec_b, CONF_C)
    assert audio.tone_seconds(dec_c, CONF_B) >= 5.0, audio.describe(dec_c, CONF_B)
    assert audio.tone_seconds(dec_b, CONF_D) >= 3.0, audio.describe(dec_b, CONF_D)
    assert audio.tone_seconds(dec_d, CONF_B) >= 3.0, audio.describe(dec_d, CONF_B)
    # Nobody hears itself, nor a call it was never merged with.
    for dec, never in ((dec_b, CONF_B), (dec_c, CONF_C), (dec_c, CONF_D), (dec_d, CONF_D),
                       (dec_d, CONF_C)):
        assert audio.tone_seconds(dec, never) == 0.0, audio.describe(dec, never)
    # Nothing crossed over before the merge; and B heard C before it heard D.
    first_c, first_d = first_tone_window(dec_b, CONF_C), first_tone_window(dec_b, CONF_D)
    assert first_c is not None and first_c >= 1.5, audio.describe(dec_b, CONF_C)
    assert first_d is not None and first_d > first_c + 5, audio.describe(dec_b)


def test_conference_refuses_what_it_cannot_merge(kam, rec_phone, make_baresip):
    bb = make_baresip(kam, "1002", tone=CONF_B)
    ph = rec_phone(tone=None)
    rc, reply = ph.cmd_json("conference")
    assert rc != 0 and reply["code"] == "no_call", reply
    cid = call(ph)
    bb.wait_event("CALL_ESTABLISHED")
    rc, reply = ph.cmd_json("conference")
    assert rc != 0 and reply["code"] == "no_call", reply
    rc, reply = ph.cmd_json("conference", str(cid), "77")
    assert rc != 0 and reply["code"] == "no_such_call", reply
    rc, reply = ph.cmd_json("conference", "off", str(cid))
    assert rc != 0 and reply["code"] == "wrong_state", reply
    rc, reply = ph.cmd_json("conference", "off")
    assert rc == 0 and reply["data"]["members"] == [], reply
    assert ph.events().count("call.conference") == 0
