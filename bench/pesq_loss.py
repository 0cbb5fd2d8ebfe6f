#!/usr/bin/env python3
"""Speech quality through a lossy, jittery network: our phone as the receiver next
to baresip as the receiver, the same sender and the same impairment, in one run.

A baresip phone plays ~11 s of espeak-ng speech (tests/e2e/audio.make_speech) into
a call that passes through bench/loss_relay.py (5 % loss, +-30 ms jitter around
40 ms, seeded per direction and packet: both runs lose the same packet numbers of
the sender's stream, which is checked and printed). The receiver is (a)
microsip, writing what it plays to a WAV file, then (b) a second baresip recording
what it decodes (its `plc` module loaded for the mono codecs, jitter buffer 1-20 frames). Each
recording is aligned to the speech and scored with PESQ (ITU-T P.862, PyPI
`pesq`; tests/e2e/audio.pesq_score): narrowband for G.711, wideband for G.722 and
Opus. The same two calls without impairment give the clean scores.
The sender's Opus carries in-band FEC (BENCH_OPUS_FEC=0 turns it off), the same
stream for both receivers.

Run: MICROSIP_BIN=target/release/microsip python3 bench/pesq_loss.py
(BENCH_CODECS: PCMU,G722,opus by default (names of tests/e2e/test_codecs.CASES);
BENCH_LOSS, BENCH_JITTER_MS override the impairment.)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "bench"))

import audio  # noqa: E402
from loss_relay import LossRelay  # noqa: E402
from test_codecs import CASES, CodecCase, pesq_rate  # noqa: E402
from peers import LOOPBACK, Baresip, Phone, free_port, ini  # noqa: E402
from calls import cleanup_all, pick_binary  # noqa: E402

pick_binary()

CODECS = os.environ.get("BENCH_CODECS", "PCMU,G722,opus").split(",")
LOSS = float(os.environ.get("BENCH_LOSS", "0.05"))
JITTER_MS = float(os.environ.get("BENCH_JITTER_MS", "30"))
OPUS_FEC = os.environ.get("BENCH_OPUS_FEC", "1") == "1"
LEAD_SECONDS, TAIL_SECONDS = 1.0, 60.0


def padded(x: np.ndarray, rate: int) -> np.ndarray:
    return np.concatenate([np.zeros(int(LEAD_SECONDS * rate)), x,
                           np.zeros(int(TAIL_SECONDS * rate))])


def call_seconds(ref: np.ndarray, rate: int) -> float:
    return LEAD_SECONDS + len(ref) / rate + 2.0


def start_sender(work: Path, user: str, case: CodecCase, source: Path) -> Baresip:
    """The caller that plays the speech: the same for both receivers. With
    BENCH_OPUS_FEC=1 (the default) its Opus encoder adds in-band FEC for 5 % loss
    (`opus_inbandfec`, `opus_packet_loss`), which a receiver may use or ignore."""
    fec = "opus_inbandfec\tyes\nopus_packet_loss\t5\n" if OPUS_FEC else ""
    return Baresip(work, user, "x", register=False, outbound=False, source=source,
                   codecs=case.baresip, modules=("g711", "g722", "opus"),
                   sip_trace=False, extra_config=fec).start(wait_registered=False)


def to_microsip(work: Path, case: CodecCase, source: Path, ref: np.ndarray,
                impaired: bool) -> tuple[float, list[int]]:
    work.mkdir(parents=True, exist_ok=True)
    port = free_port("sip")
    out = work / f"microsip-{'lossy' if impaired else 'clean'}.wav"
    ph = Phone(work, ini=ini(accountId=0, sourcePort=port, autoAnswer="all",
                             autoAnswerDelay=0, audioInputDevice="null",
                             audioOutputDevice=f"file:{out}",
                             audioCodecs=case.ini_name)).start()
    relay = LossRelay(port, loss=LOSS if impaired else 0.0,
                      jitter_ms=JITTER_MS if impaired else 0.0,
                      base_ms=40.0 if impaired else 0.0).start()
    sender = start_sender(work, "2001", case, source)
    sender.dial(f"sip:1001@{LOOPBACK}:{relay.sip_port}")
    rate = pesq_rate(case)
    time.sleep(call_seconds(ref, rate))
    ph.cmd("hangupall", check=False)
    time.sleep(0.5)
    sender.cleanup()
    ph.stop()
    relay.stop()
    print(f"   relay: {relay.sent} forwarded, {relay.dropped} dropped")
    # The sender (baresip) is the caller: its stream goes "to_callee".
    return audio.pesq_score(ref, rate, out, work, case.mode), relay.lost["to_callee"]


def to_baresip(work: Path, case: CodecCase, source: Path, ref: np.ndarray,
               impaired: bool) -> tuple[float, list[int]]:
    work.mkdir(parents=True, exist_ok=True)
    silence = audio.make_tone_wav(work / "silence.wav", 0, 120, rate=case.baresip_rate,
                                  channels=case.baresip_channels)
    receiver = Baresip(work, "1003", "x", register=False, outbound=False, source=silence,
                       # baresip's plc module takes mono only; on a stereo (Opus)
                       # call it breaks the decode chain, and libopus conceals itself.
                       codecs=case.baresip,
                       modules=("g711", "g722", "opus") + (("plc",) if case.baresip_channels == 1
                                                            else ()),
                       sip_trace=False,
                       extra_config="jitter_buffer_delay\t1-20\n").start(wait_registered=False)
    relay = LossRelay(receiver.sip_port, loss=LOSS if impaired else 0.0,
                      jitter_ms=JITTER_MS if impaired else 0.0,
                      base_ms=40.0 if impaired else 0.0).start()
    sender = start_sender(work, "2002", case, source)
    sender.dial(f"sip:1003@{LOOPBACK}:{relay.sip_port}")
    rate = pesq_rate(case)
    time.sleep(call_seconds(ref, rate))
    sender.hangup()
    time.sleep(0.5)
    import shutil; shutil.copytree(work, "/tmp/pesq-debug-" + work.name, dirs_exist_ok=True)
    _, dec = receiver.recordings()
    sender.cleanup()
    receiver.cleanup()
    relay.stop()
    print(f"   relay: {relay.sent} forwarded, {relay.dropped} dropped")
    return audio.pesq_score(ref, rate, dec, work, case.mode), relay.lost["to_callee"]


def main() -> None:
    print(f"binary: {os.environ.get('MICROSIP_BIN')}; sender's Opus in-band FEC "
          f"{'on' if OPUS_FEC else 'off'}; impairment {LOSS:.0%} loss, "
          f"+-{JITTER_MS:.0f} ms jitter")
    with tempfile.TemporaryDirectory(prefix="bench-pesq-") as tmp:
        work = Path(tmp)
        try:
            wide, _ = audio.make_speech(work)
            rows = []
            for name in CODECS:
                case = CASES[name]
                rate = pesq_rate(case)
                ref = audio.resample(wide, 16000, rate, work)
                source = work / f"source-{name}.wav"
                audio.write_wav(source, padded(audio.resample(wide, 16000, case.baresip_rate,
                                                              work), case.baresip_rate),
                                case.baresip_rate, case.baresip_channels)
                for impaired in (False, True):
                    tag = f"{name}-{int(impaired)}"
                    ours, lost_ours = to_microsip(work / f"m-{tag}", case, source, ref,
                                                  impaired)
                    theirs, lost_theirs = to_baresip(work / f"b-{tag}", case, source, ref,
                                                     impaired)
                    # Both runs drop the same sender packets up to the shorter
                    # call's end (the calls end a few packets apart).
                    n = min(max(lost_ours, default=-1), max(lost_theirs, default=-1))
                    same = [i for i in lost_ours if i <= n] == [i for i in lost_theirs if i <= n]
                    print(f"   {name} {'impaired' if impaired else 'clean'}: sender packets "
                          f"dropped {len(lost_ours)} / {len(lost_theirs)}, same numbers in "
                          f"both runs: {'yes' if same else 'NO'}")
                    rows.append((name, case.mode, impaired, ours, theirs))
                    print(f"   {name} {'impaired' if impaired else 'clean'}: "
                          f"microsip {ours:.2f}, baresip {theirs:.2f}")
            print("PESQ, receiver microsip vs receiver baresip (same sender, same relay):")
            for name, mode, impaired, ours, theirs in rows:
                what = "impaired" if impaired else "clean   "
                print(f"  {name:5s} {mode} {what}: microsip {ours:.2f}  baresip {theirs:.2f}  "
                      f"difference {ours - theirs:+.2f}")
        finally:
            cleanup_all()


if __name__ == "__main__":
    main()
