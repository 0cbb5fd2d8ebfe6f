"""Sound devices: the phone on real, paced devices without a sound card.

A private PulseAudio server (peers.PulseAudio) has null sinks `spk`, `spk2`
and `mic`; each sink's `.monitor` records what it plays. The phone reaches the
server with PULSE_SERVER (cpal's native PulseAudio host). Our speaker is a null
sink, recorded with `parec`; our microphone is the monitor of the sink `mic`,
into which `paplay` plays a tone. Audio is judged by frequency (audio.py), and
PulseAudio paces roughly, so durations are asserted loosely.

The phone is 1001, baresip 1002 (plays 1000 Hz and records what it hears).
"""

from __future__ import annotations

import os
import time

import pytest

import audio
import peers
from peers import account, ini
from test_calls import calls_entries, dial, wait_call

USERS = {"1001": "p;w#1005", "1002": "secret2"}
PASSWORD = USERS["1001"]
TONE_BARESIP, TONE_MIC, TONE_SWITCHED = 1000, 440, 700
RATE = 8000


@pytest.fixture
def kam(make_kamailio):
    return make_kamailio(users=USERS)


@pytest.fixture
def pulse(tmp_path):
    if peers.which("pulseaudio") is None or peers.which("parec") is None:
        pytest.fail("pulseaudio / pulseaudio-utils missing: run scripts/install-test-deps.sh")
    return peers.PulseAudio(tmp_path, sinks=("spk", "spk2", "mic")).start()


def pulse_phone(make_phone, pulse, kam=None, **settings) -> peers.Phone:
    """A phone that reaches `pulse` (registered at `kam` when given)."""
    accounts = [account(kam.address, "1001", PASSWORD)] if kam else []
    if not kam:
        settings.setdefault("accountId", 0)
    ph = make_phone(ini(*accounts, **settings), start=False)
    ph.env["PULSE_SERVER"] = pulse.server
    # No cookie file anywhere, as on a fresh headless machine: cpal's client would
    # send an empty cookie, which PulseAudio 16 kicks; the phone brings its own.
    ph.env.pop("PULSE_COOKIE", None)
    ph.env["HOME"] = str(pulse.home / "phone-home")
    os.makedirs(ph.env["HOME"], exist_ok=True)
    ph.start()
    if kam:
        ph.events().wait_state(1, "registered", 30, codes={200})
    return ph


def seconds_of(samples, freq: float) -> float:
    return audio.tone_seconds(samples, freq, rate=RATE)


def test_devices_lists_the_null_sinks_and_their_monitors(make_phone, pulse):
    ph = pulse_phone(make_phone, pulse, audioOutputDevice="pulse:spk2",
                     audioInputDevice="mic.monitor")
    rc, out, err = ph.cmd("devices")
    assert rc == 0, err
    # `  N  ID  NAME [marks]`: each side's devices numbered from 1.
    lines = out.splitlines()
    inputs = lines[lines.index("input devices:") + 1:lines.index("output devices:")]
    outputs = lines[lines.index("output devices:") + 1:]
    for sink in ("spk", "spk2", "mic"):
        assert any(line.split()[1:2] == [f"pulse:{sink}.monitor"] for line in inputs), out
        assert any(line.split()[1:2] == [f"pulse:{sink}"] for line in outputs), out
    # The monitors record; the sinks play.
    assert not any(line.split()[1:2] == ["pulse:spk"] for line in inputs), out
    assert [line for line in outputs if "[current]" in line][0].split()[1] == "pulse:spk2", out
    assert [line for line in inputs if "[current]" in line][0].split()[1] == "pulse:mic.monitor"
    rc, reply = ph.cmd_json("devices")
    assert rc == 0, reply
    ids = [d["id"] for d in reply["data"]["output"]]
    assert {"pulse:spk", "pulse:spk2", "pulse:mic"} <= set(ids), reply
    assert reply["data"]["current"] == {"input": "mic.monitor", "output": "pulse:spk2",
                                        "ring": "null"}, reply
    # A name that is not there is a clear error, and nothing is stored.
    rc, reply = ph.cmd_json("setdevice", "input", "pulse:nosuch.monitor")
    assert rc == 1 and reply["code"] == "no_such_device", reply
    assert "audioInputDevice=mic.monitor" in ph.ini_path.read_text(), ph.ini_path.read_text()
    # A sink cannot record.
    rc, reply = ph.cmd_json("setdevice", "input", "pulse:spk")
    assert rc == 1 and reply["code"] == "no_such_device", reply


def test_call_through_pulseaudio_both_ways(kam, make_phone, make_baresip, pulse, tmp_path):
    """Our speaker is the sink `spk` (its monitor recorded); our microphone is
    the monitor of `mic`, into which paplay plays 440 Hz."""
    a = make_baresip(kam, "1002", tone=TONE_BARESIP)
    mic_tone = audio.make_tone_wav(tmp_path / "mic.wav", TONE_MIC, 60)
    pulse.play("mic", mic_tone)
    speaker = pulse.record("spk.monitor", RATE)
    ph = pulse_phone(make_phone, pulse, kam, audioOutputDevice="pulse:spk",
                     audioInputDevice="pulse:mic.monitor")
    cid = dial(ph, "1002")
    a.wait_event("CALL_ESTABLISHED")
    wait_call(ph, "call.confirmed", cid)
    time.sleep(6)
    assert ph.cmd("hangup", str(cid))[0] == 0
    a.wait_event("CALL_CLOSED")
    wait_call(ph, "call.ended", cid)
    heard = speaker.stop()
    # What baresip sent came out of our speaker...
    assert seconds_of(heard, TONE_BARESIP) >= 2.5, audio.describe(heard, TONE_BARESIP,
                                                                  rate=RATE)
    assert seconds_of(heard, TONE_MIC) == 0.0
    # ...and what our microphone recorded reached baresip.
    _, dec = a.recordings()
    assert audio.tone_seconds(dec, TONE_MIC) >= 2.5, audio.describe(dec, TONE_MIC)
    assert audio.tone_coverage(dec, TONE_BARESIP) == 0.0


def test_setdevice_mid_call_switches_without_dropping_the_call(kam, make_phone, make_baresip,
                                                               pulse, tmp_path):
    a = make_baresip(kam, "1002", tone=TONE_BARESIP)
    pulse.play("mic", audio.make_tone_wav(tmp_path / "mic.wav", TONE_MIC, 60))
    first = pulse.record("spk.monitor", RATE)
    second = pulse.record("spk2.monitor", RATE)
    ph = pulse_phone(make_phone, pulse, kam, audioOutputDevice="pulse:spk",
                     audioInputDevice="pulse:mic.monitor")
    cid = dial(ph, "1002")
    a.wait_event("CALL_ESTABLISHED")
    wait_call(ph, "call.confirmed", cid)
    time.sleep(4)
    rc, out, err = ph.cmd("setdevice", "output", "pulse:spk2")
    assert rc == 0 and out.strip() == "output device: pulse:spk2", (out, err)
    rc, out, err = ph.cmd("setdevice", "input", f"tone:{TONE_SWITCHED}")
    assert rc == 0 and out.strip() == f"input device: tone:{TONE_SWITCHED}", (out, err)
    time.sleep(5)
    # Still the one call, up (active), never ended.
    entries = calls_entries(ph)
    assert len(entries) == 1 and entries[0][0] == cid and entries[0][4] == "active", entries
    assert ph.events().count("call.ended") == 0
    assert ph.cmd("hangup", str(cid))[0] == 0
    a.wait_event("CALL_CLOSED")
    wait_call(ph, "call.ended", cid)
    before, after = first.stop(), second.stop()
    # Baresip's tone first on spk, then on spk2.
    assert seconds_of(before, TONE_BARESIP) >= 1.5, audio.describe(before, rate=RATE)
    assert seconds_of(after, TONE_BARESIP) >= 2.0, audio.describe(after, rate=RATE)
    # Baresip heard the microphone, then the tone we switched to.
    _, dec = a.recordings()
    assert audio.tone_seconds(dec, TONE_MIC) >= 1.5, audio.describe(dec, TONE_MIC)
    assert audio.tone_seconds(dec, TONE_SWITCHED) >= 2.5, audio.describe(dec, TONE_SWITCHED)
    ws = audio.windows(dec)
    last_mic = max(w.start for w in ws if abs(w.freq - TONE_MIC) < 15 and not w.silent)
    first_switched = min(w.start for w in ws
                         if abs(w.freq - TONE_SWITCHED) < 15 and not w.silent)
    assert last_mic < first_switched + 0.5, audio.describe(dec)
    # Stored in the ini like any setting.
    text = ph.ini_path.read_text()
    assert "audioOutputDevice=pulse:spk2" in text and \
        f"audioInputDevice=tone:{TONE_SWITCHED}" in text, text


def ringing_call(kam, make_phone, make_baresip, pulse, ring_device: str):
    """A phone ringing on `ring_device` (no other audio) for a call from baresip
    1002, not answered. Returns (phone, baresip, call id)."""
    ph = pulse_phone(make_phone, pulse, kam, audioRingDevice=ring_device,
                     audioOutputDevice="null", audioInputDevice="null", autoAnswer="button")
    a = make_baresip(kam, "1002", tone=TONE_BARESIP)
    a.dial("sip:1001@127.0.0.1")
    return ph, a, wait_call(ph, "call.incoming")["call"]


def ring_windows(samples) -> list:
    """The 250 ms windows of `samples` holding the ring cadence's 440 + 480 Hz (each
    window's peak is one of them)."""
    return [w for w in audio.windows(samples, RATE)
            if not w.silent and min(abs(w.freq - 440), abs(w.freq - 480)) < 15]


def test_ring_tone_plays_on_the_ring_device_while_a_call_rings(kam, make_phone, make_baresip,
                                                               pulse):
    ring = pulse.record("spk2.monitor", RATE)
    ph, a, cid = ringing_call(kam, make_phone, make_baresip, pulse, "pulse:spk2")
    # Two rings of the cadence (2 s on, 4 s off): 0-2 s and 6-8 s.
    time.sleep(7)
    assert ph.cmd("answer")[0] == 0
    a.wait_event("CALL_ESTABLISHED")
    heard = ring.stop()
    # Answered: the ring device falls silent.
    after = pulse.record("spk2.monitor", RATE)
    time.sleep(2)
    quiet = after.stop()
    assert ph.cmd("hangup", str(cid))[0] == 0
    wait_call(ph, "call.ended", cid)
    ws = [w for w in audio.windows(heard, RATE) if not w.silent]
    rung = ring_windows(heard)
    assert len(rung) * 0.25 >= 1.0, audio.describe(heard, rate=RATE)
    assert len(rung) >= 0.8 * len(ws), audio.describe(heard, rate=RATE)
    assert len(quiet) > 0 and audio.silence_fraction(quiet, rate=RATE) == 1.0, \
        audio.describe(quiet, rate=RATE)


def test_setdevice_ring_moves_the_ring_tone_while_a_call_rings(kam, make_phone, make_baresip,
                                                               pulse):
    on_spk = pulse.record("spk.monitor", RATE)
    on_spk2 = pulse.record("spk2.monitor", RATE)
    ph, _, cid = ringing_call(kam, make_phone, make_baresip, pulse, "pulse:spk")
    # The cadence rings 0-2 s and 6-8 s: the first ring on spk; switched in the
    # pause, the second on spk2.
    time.sleep(3)
    rc, out, err = ph.cmd("setdevice", "ring", "pulse:spk2")
    assert rc == 0 and out.strip() == "ring device: pulse:spk2", (out, err)
    time.sleep(5.5)
    assert ph.cmd("reject")[0] == 0
    wait_call(ph, "call.ended", cid)
    time.sleep(2.5)  # parec hands over its audio in chunks: let the last one come
    before, after = on_spk.stop(), on_spk2.stop()

    def rung_seconds(x):
        return 0.25 * len(ring_windows(x))
    # One ring (2 s) on each, loosely (PulseAudio paces roughly; the first ring
    # reaches spk only ~0.75 s, the stream opening at the INVITE): spk never got
    # the second ring (that would make about 4 s), spk2 got it.
    assert 0.5 <= rung_seconds(before) <= 3.0, audio.describe(before, rate=RATE)
    assert rung_seconds(after) >= 1.0, audio.describe(after, rate=RATE)
    assert "audioRingDevice=pulse:spk2" in ph.ini_path.read_text()


def test_ring_tone_to_a_file(kam, make_phone, make_baresip, tmp_path):
    out = tmp_path / "ring.wav"
    ph = make_phone(ini(account(kam.address, "1001", PASSWORD), audioRingDevice=f"file:{out}",
                        audioOutputDevice="null", audioInputDevice="null",
                        autoAnswer="button"))
    ph.events().wait_state(1, "registered", 30, codes={200})
    a = make_baresip(kam, "1002", tone=TONE_BARESIP)
    a.dial("sip:1001@127.0.0.1")
    cid = wait_call(ph, "call.incoming")["call"]
    time.sleep(1.5)
    assert ph.cmd("reject")[0] == 0
    wait_call(ph, "call.ended", cid)
    peers.wait_until(lambda: out.exists() and audio.duration(out) > 0.5, 10, 0.1, "ring file")
    ws = [w for w in audio.windows(out) if not w.silent]
    rung = [w for w in ws if min(abs(w.freq - 440), abs(w.freq - 480)) < 15]
    assert len(rung) * 0.25 >= 1.0 and len(rung) == len(ws), audio.describe(out)


def test_call_goes_on_when_the_sound_server_dies(kam, make_phone, make_baresip, pulse):
    a = make_baresip(kam, "1002", tone=TONE_BARESIP)
    ph = pulse_phone(make_phone, pulse, kam, audioOutputDevice="pulse:spk",
                     audioInputDevice="pulse:mic.monitor")
    cid = dial(ph, "1002")
    a.wait_event("CALL_ESTABLISHED")
    wait_call(ph, "call.confirmed", cid)
    time.sleep(2)
    pulse.stop()
    time.sleep(3)
    # The call is still up: the media clock does not depend on the device.
    entries = calls_entries(ph)
    assert len(entries) == 1 and entries[0][4] == "active", entries
    time.sleep(1)
    # A headless device can take over mid-call.
    assert ph.cmd("setdevice", "input", f"tone:{TONE_SWITCHED}")[0] == 0
    assert ph.cmd("setdevice", "output", "null")[0] == 0
    time.sleep(3)
    assert ph.cmd("hangup", str(cid))[0] == 0
    a.wait_event("CALL_CLOSED")
    wait_call(ph, "call.ended", cid)
    _, dec = a.recordings()
    assert audio.tone_seconds(dec, TONE_SWITCHED) >= 1.5, audio.describe(dec, TONE_SWITCHED)
    # Each device's failure is logged once, not per frame.
    errors = ph.stderr_text().count("sound device failed")
    assert 1 <= errors <= 2, ph.stderr_text()[-3000:]


def test_empty_device_keys_use_the_default_device_where_there_is_one(kam, make_phone,
                                                                      make_baresip, pulse):
    """No audioOutputDevice/audioInputDevice at all (a copied Windows ini): with a
    sound server reachable the call plays on its default sink."""
    a = make_baresip(kam, "1002", tone=TONE_BARESIP)
    default_sink = pulse.default_sink()
    speaker = pulse.record(f"{default_sink}.monitor", RATE)
    ph = pulse_phone(make_phone, pulse, kam)
    cid = dial(ph, "1002")
    a.wait_event("CALL_ESTABLISHED")
    wait_call(ph, "call.confirmed", cid)
    time.sleep(5)
    assert ph.cmd("hangup", str(cid))[0] == 0
    wait_call(ph, "call.ended", cid)
    heard = speaker.stop()
    assert seconds_of(heard, TONE_BARESIP) >= 2.0, audio.describe(heard, rate=RATE)


def test_empty_device_keys_fall_back_to_no_device_when_the_default_fails(
        kam, make_phone, make_baresip, tmp_path):
    """A sound server that is named but dead: the call still connects and carries
    our side (null microphone: silence; no error, no failed call)."""
    a = make_baresip(kam, "1002", tone=TONE_BARESIP)
    ph = make_phone(ini(account(kam.address, "1001", PASSWORD)), start=False)
    ph.env["PULSE_SERVER"] = f"unix:{tmp_path}/no-such-pulse-socket"
    ph.start()
    ph.events().wait_state(1, "registered", 30, codes={200})
    cid = dial(ph, "1002")
    a.wait_event("CALL_ESTABLISHED")
    wait_call(ph, "call.confirmed", cid)
    entries = calls_entries(ph)
    assert len(entries) == 1 and entries[0][4] == "active", entries
    assert ph.cmd("hangup", str(cid))[0] == 0
    wait_call(ph, "call.ended", cid)
