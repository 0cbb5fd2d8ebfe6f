"""Every codec in real calls with baresip through Kamailio: PCMU, PCMA, G.722 and
Opus, each alone in the call (the phone's `audioCodecs` and baresip's account
`audio_codecs` both hold just that one).

- A tone we play is in baresip's recording, at its frequency, in >= 90 % of the
  250 ms windows of the call; `calls` names the codec.
- Speech (espeak-ng, ~10 s of Harvard sentences) played both ways at once: what
  baresip recorded of ours, and what we recorded of baresip's, each scored with
  PESQ (ITU-T P.862, PyPI `pesq`) against the original: narrowband (8 kHz) for
  G.711, wideband (16 kHz) for G.722 and Opus.
- Answers: the offerer's first codec we have, or with forceCodec=1 our first.

baresip's `aufile` source must be at the codec's own rate (8 kHz for G.711, 16 kHz
for G.722, 48 kHz stereo for its Opus), so its source files are made per codec.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pytest

import audio
from peers import account, ini

PASSWORD = "p;w#1005"
USERS = {"1001": PASSWORD, "1002": "secret2"}
BARESIP_MODULES = ("g711", "g722", "opus")
TONE = 440.0
TONE_SECONDS = 4.0
# Silence before the speech (the call's first packets) and after it (the files
# are longer than the call, so neither side loops or hangs up at the end).
LEAD_SECONDS = 1.0
TAIL_SECONDS = 60.0


@dataclass(frozen=True)
class CodecCase:
    ini_name: str        # the phone's audioCodecs
    baresip: str         # baresip's account audio_codecs
    baresip_rate: int    # baresip's aufile rate (the codec's PCM rate in baresip)
    baresip_channels: int
    shown: str           # what `calls` shows
    shown_rate: int      # and its JSON codec_rate
    mode: str            # PESQ mode
    min_pesq: float


CASES = {
    "PCMU": CodecCase("PCMU/8000/1", "pcmu/8000/1", 8000, 1, "PCMU", 8000, "nb", 4.0),
    "PCMA": CodecCase("PCMA/8000/1", "pcma/8000/1", 8000, 1, "PCMA", 8000, "nb", 4.0),
    "G722": CodecCase("G722/16000/1", "G722/16000/1", 16000, 1, "G722", 16000, "wb", 3.8),
    "opus": CodecCase("opus/48000/2", "opus/48000/2", 48000, 2, "opus", 48000, "wb", 3.8),
}


def pesq_rate(case: CodecCase) -> int:
    return 8000 if case.mode == "nb" else 16000


@pytest.fixture
def kam(make_kamailio):
    return make_kamailio(users=USERS)


def call_baresip(kam, make_phone, make_baresip, case: CodecCase, our_source: str,
                 their_source, out_path):
    """The phone (playing our_source, recording to out_path) calls baresip
    (playing their_source), both limited to the case's codec; returns
    (baresip, phone, call id) once established."""
    a = make_baresip(kam, "1002", source=their_source, codecs=case.baresip,
                     modules=BARESIP_MODULES)
    ph = make_phone(ini(account(kam.address, "1001", PASSWORD),
                        audioInputDevice=our_source, audioOutputDevice=f"file:{out_path}",
                        audioCodecs=case.ini_name))
    ev = ph.events()
    ev.wait_state(1, "registered", 30, codes={200})
    rc, out, err = ph.cmd("dial", "1002")
    assert rc == 0, (out, err)
    cid = int(out.strip())
    ev.wait_for("call.confirmed", lambda e: e.get("call") == cid, 30)
    a.wait_event("CALL_ESTABLISHED")
    return a, ph, cid


def shown_codec(ph, cid: int) -> tuple[str, int]:
    """(codec, codec_rate) of call cid as `calls` shows it (text and JSON agree)."""
    rc, reply = ph.cmd_json("calls")
    assert rc == 0 and reply.get("ok") is True, reply
    mine = [c for c in reply["data"] if c["id"] == cid]
    assert mine, reply
    rc, text, err = ph.cmd("calls")
    assert rc == 0, err
    line = next(ln for ln in text.splitlines() if ln.split()[:1] == [str(cid)])
    assert line.split()[6] == mine[0]["codec"], text
    return mine[0]["codec"], mine[0]["codec_rate"]


def hang_up(a, ph, cid: int) -> None:
    rc, out, err = ph.cmd("hangup", str(cid))
    assert rc == 0, (out, err)
    a.wait_event("CALL_CLOSED")


@pytest.mark.parametrize("name", list(CASES))
def test_tone_crosses_each_codec(kam, make_phone, make_baresip, tmp_path, name):
    case = CASES[name]
    silence = audio.make_tone_wav(tmp_path / "silence.wav", 0, 120, rate=case.baresip_rate,
                                  channels=case.baresip_channels)
    a, ph, cid = call_baresip(kam, make_phone, make_baresip, case, f"tone:{TONE:g}",
                              silence, tmp_path / "out.wav")
    assert shown_codec(ph, cid) == (case.shown, case.shown_rate)
    time.sleep(TONE_SECONDS)
    hang_up(a, ph, cid)
    _, dec = a.recordings()
    rate = audio.read_wav(dec)[1]
    assert rate == case.baresip_rate, f"{dec}: {rate} Hz"
    assert audio.duration(dec) >= TONE_SECONDS - 1, audio.describe(dec, TONE)
    assert audio.tone_coverage(dec, TONE) >= 0.9, audio.describe(dec, TONE)


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """(16 kHz samples, 8 kHz samples, workdir) of the spoken sentences."""
    work = tmp_path_factory.mktemp("speech")
    wide, _ = audio.make_speech(work)
    narrow = audio.resample(wide, 16000, 8000, work)
    return wide, narrow, work


def padded(x: np.ndarray, rate: int) -> np.ndarray:
    return np.concatenate([np.zeros(int(LEAD_SECONDS * rate)), x,
                           np.zeros(int(TAIL_SECONDS * rate))])


@pytest.mark.parametrize("name", list(CASES))
def test_speech_quality_both_ways(kam, make_phone, make_baresip, tmp_path, speech, name):
    case = CASES[name]
    wide, narrow, work = speech
    rate = pesq_rate(case)
    ref = narrow if rate == 8000 else wide
    # Ours: at the PESQ rate (8 kHz for G.711, as a G.711 prompt would be).
    ours = tmp_path / "ours.wav"
    audio.write_wav(ours, padded(ref, rate), rate)
    # baresip's: at its codec rate.
    theirs = tmp_path / "theirs.wav"
    audio.write_wav(theirs, padded(audio.resample(wide, 16000, case.baresip_rate, tmp_path),
                                   case.baresip_rate),
                    case.baresip_rate, case.baresip_channels)
    out = tmp_path / "out.wav"
    a, ph, cid = call_baresip(kam, make_phone, make_baresip, case, f"file:{ours}", theirs, out)
    assert shown_codec(ph, cid) == (case.shown, case.shown_rate)
    time.sleep(LEAD_SECONDS + len(ref) / rate + 1.5)
    hang_up(a, ph, cid)
    _, dec = a.recordings()
    sent = audio.pesq_score(ref, rate, dec, tmp_path, case.mode)
    # Ours is a 16 kHz file whatever the codec: scored at the case's rate.
    received = audio.pesq_score(ref, rate, out, tmp_path, case.mode)
    print(f"PESQ {case.mode} {name}: ours at baresip {sent:.2f}, baresip's at ours {received:.2f}")
    assert sent >= case.min_pesq, f"{name}: what baresip heard of us scores {sent:.2f}"
    assert received >= case.min_pesq, f"{name}: what we heard of baresip scores {received:.2f}"


@pytest.mark.parametrize("force", [0, 1])
def test_answer_codec_follows_the_offer_unless_forced(kam, make_phone, make_baresip,
                                                      tmp_path, force):
    # baresip offers opus, G.722, PCMU, PCMA in that order; we list PCMA first.
    expected = CASES["PCMA" if force else "opus"]
    source = audio.make_tone_wav(tmp_path / "s.wav", 0, 120, rate=expected.baresip_rate,
                                 channels=expected.baresip_channels)
    a = make_baresip(kam, "1002", source=source,
                     codecs="opus/48000/2,G722/16000/1,pcmu/8000/1,pcma/8000/1",
                     modules=BARESIP_MODULES)
    ph = make_phone(ini(account(kam.address, "1001", PASSWORD), audioInputDevice="null",
                        audioOutputDevice="null", forceCodec=force,
                        audioCodecs="PCMA/8000/1 G722/16000/1 opus/48000/2"))
    ev = ph.events()
    ev.wait_state(1, "registered", 30, codes={200})
    a.dial("sip:1001@127.0.0.1")
    cid = ev.wait_for("call.incoming", None, 30)["call"]
    rc, out, err = ph.cmd("/answer")
    assert rc == 0, (out, err)
    ev.wait_for("call.confirmed", lambda e: e.get("call") == cid, 30)
    assert shown_codec(ph, cid) == (expected.shown, expected.shown_rate)
    hang_up(a, ph, cid)


@pytest.mark.parametrize("name", ["G722", "opus"])
def test_rfc4733_digits_both_ways_on_wideband_codecs(kam, make_phone, make_baresip,
                                                     tmp_path, name):
    # telephone-event/8000 beside a 16 kHz (G.722: RTP clock 8000) or 48 kHz
    # (Opus: RTP clock 48000) audio stream.
    case = CASES[name]
    silence = audio.make_tone_wav(tmp_path / "silence.wav", 0, 120, rate=case.baresip_rate,
                                  channels=case.baresip_channels)
    a, ph, cid = call_baresip(kam, make_phone, make_baresip, case, "null", silence,
                              tmp_path / "out.wav")
    ev = ph.events()
    digits = "159#*0"
    rc, out, err = ph.cmd("dtmf", digits)
    assert rc == 0, (out, err)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and a.count("CALL_DTMF_START") < len(digits):
        time.sleep(0.1)
    got = "".join(e.get("param", "") for e in a.events if e.get("type") == "CALL_DTMF_START")
    assert got == digits, got
    for d in "2468":
        a.command("sndcode", d)
        time.sleep(0.25)
    heard = [ev.wait_for("call.dtmf", lambda e: e.get("call") == cid, 15) for _ in "2468"]
    assert "".join(e["digit"] for e in heard) == "2468", heard
    assert all(e["method"] == "rfc4733" for e in heard), heard
    hang_up(a, ph, cid)


@pytest.mark.parametrize("force", [0, 1])
def test_force_codec_offers_only_the_first_codec(kam, make_phone, make_baresip, tmp_path,
                                                 force):
    # forceCodec (ini.md: "send only the first codec"): our INVITE offers G.722 alone.
    case = CASES["G722"]
    source = audio.make_tone_wav(tmp_path / "s.wav", 0, 120, rate=case.baresip_rate,
                                 channels=case.baresip_channels)
    a = make_baresip(kam, "1002", source=source,
                     codecs="opus/48000/2,G722/16000/1,pcmu/8000/1,pcma/8000/1",
                     modules=BARESIP_MODULES)
    ph = make_phone(ini(account(kam.address, "1001", PASSWORD), audioInputDevice="null",
                        audioOutputDevice="null", forceCodec=force,
                        audioCodecs="G722/16000/1 PCMU/8000/1 PCMA/8000/1"))
    ev = ph.events()
    ev.wait_state(1, "registered", 30, codes={200})
    rc, out, err = ph.cmd("dial", "sip:1002@127.0.0.1")
    assert rc == 0, (out, err)
    cid = ev.wait_for("call.confirmed", None, 30)["call"]
    invite = next(m for m in ph.trace_messages() if m.sent and m.method == "INVITE")
    m_line = next(line for line in invite.body.splitlines() if line.startswith("m=audio"))
    payloads = m_line.split()[3:]
    if force:
        assert payloads == ["9", "101"], m_line
    else:
        assert payloads[:3] == ["9", "0", "8"], m_line
    assert shown_codec(ph, cid)[0] == "G722"
    hang_up(a, ph, cid)
