#!/usr/bin/env python3
"""Speech quality through a lossy, jittery network: our phone as the receiver next
to baresip as the receiver, the same sender and the same impairment, in one run.

A baresip phone plays ~9 s of espeak-ng speech into a call that passes through
bench/loss_relay.py (5 % loss, +-30 ms jitter around 40 ms, seeded: both runs lose
the same packet numbers). The receiver is (a) microsip, writing what it plays to a
WAV file, then (b) a second baresip recording what it decodes (its `plc` module
loaded, jitter buffer 1-20 frames). Each recording is aligned to
the speech by cross-correlation and scored with PESQ (ITU-T P.862, PyPI `pesq`):
narrowband for PCMU. The same two calls without impairment give the clean scores.

Run: MICROSIP_BIN=target/release/microsip python3 bench/pesq_loss.py
(BENCH_CODEC: pcmu (default); BENCH_LOSS, BENCH_JITTER_MS override the impairment.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "bench"))

import audio  # noqa: E402
import peers  # noqa: E402
from loss_relay import LossRelay  # noqa: E402
from peers import LOOPBACK, Baresip, Phone, free_port, ini  # noqa: E402

if "MICROSIP_BIN" not in os.environ:
    for cand in ("release", "debug"):
        if (ROOT / "target" / cand / "microsip").exists():
            os.environ["MICROSIP_BIN"] = str(ROOT / "target" / cand / "microsip")
            break

CODEC = os.environ.get("BENCH_CODEC", "pcmu")
LOSS = float(os.environ.get("BENCH_LOSS", "0.05"))
JITTER_MS = float(os.environ.get("BENCH_JITTER_MS", "30"))
RATE = 8000
SPEECH = ("The birch canoe slid on the smooth planks. Glue the sheet to the dark blue "
          "background. It is easy to tell the depth of a well. These days a chicken leg "
          "is a rare dish. Rice is often served in round bowls.")


def make_speech(work: Path) -> tuple[Path, np.ndarray]:
    """(source WAV for baresip: 1 s silence, speech, 30 s silence; reference speech)."""
    raw = work / "speech-raw.wav"
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(raw), SPEECH], check=True,
                   stdout=subprocess.DEVNULL)
    speech = work / "speech.wav"
    subprocess.run(["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(speech),
                    "norm", "-3"], check=True)
    ref, rate = audio.read_wav(speech)
    assert rate == RATE
    ref = np.asarray(ref, dtype=np.float64)
    source = work / "source.wav"
    pad = np.zeros(RATE)
    tail = np.zeros(30 * RATE)
    audio.write_wav(source, np.concatenate([pad, ref, tail]), RATE)
    return source, ref


def to_rate(path: Path, rate: int) -> np.ndarray:
    x, r = audio.read_wav(path)
    x = np.asarray(x, dtype=np.float64)
    if r == rate:
        return x
    out = path.with_suffix(f".{rate}.wav")
    subprocess.run(["sox", str(path), "-r", str(rate), "-c", "1", "-b", "16", str(out)],
                   check=True)
    y, _ = audio.read_wav(out)
    return np.asarray(y, dtype=np.float64)


def fast_corr_lag(ref: np.ndarray, deg: np.ndarray) -> int:
    n = len(ref) + len(deg)
    size = 1 << (n - 1).bit_length()
    fr = np.fft.rfft(ref, size)
    fd = np.fft.rfft(deg, size)
    c = np.fft.irfft(fd * np.conj(fr), size)[:len(deg) - len(ref) + 1]
    return int(np.argmax(c))


def pesq_nb(ref: np.ndarray, deg: np.ndarray) -> float:
    from pesq import pesq
    if len(deg) < len(ref):
        deg = np.concatenate([deg, np.zeros(len(ref) - len(deg))])
    lag = fast_corr_lag(ref, deg)
    seg = deg[lag:lag + len(ref)]
    return float(pesq(RATE, ref, seg, "nb"))


def call_seconds(ref: np.ndarray) -> float:
    return 1.0 + len(ref) / RATE + 2.0


def to_microsip(work: Path, source: Path, ref: np.ndarray, impaired: bool) -> float:
    port = free_port("sip")
    out = work / f"microsip-{'lossy' if impaired else 'clean'}.wav"
    ph = Phone(work, ini=ini(accountId=0, sourcePort=port, autoAnswer="all",
                             autoAnswerDelay=0, audioInputDevice="null",
                             audioOutputDevice=f"file:{out}")).start()
    relay = LossRelay(port, loss=LOSS if impaired else 0.0,
                      jitter_ms=JITTER_MS if impaired else 0.0,
                      base_ms=40.0 if impaired else 0.0).start()
    sender = Baresip(work, "2001", "x", register=False, outbound=False, source=source,
                     codecs=CODEC, modules=("g711", "g722", "opus"),
                     sip_trace=False).start(wait_registered=False)
    sender.dial(f"sip:1001@{LOOPBACK}:{relay.sip_port}")
    time.sleep(call_seconds(ref))
    ph.cmd("hangupall", check=False)
    time.sleep(0.5)
    sender.cleanup()
    ph.stop()
    relay.stop()
    print(f"   relay: {relay.sent} forwarded, {relay.dropped} dropped")
    return pesq_nb(ref, to_rate(out, RATE))


def to_baresip(work: Path, source: Path, ref: np.ndarray, impaired: bool) -> float:
    receiver = Baresip(work, "1003", "x", register=False, outbound=False, tone=None,
                       codecs=CODEC, modules=("g711", "g722", "opus", "plc"),
                       sip_trace=False,
                       extra_config="jitter_buffer_delay\t1-20\n").start(wait_registered=False)
    relay = LossRelay(receiver.sip_port, loss=LOSS if impaired else 0.0,
                      jitter_ms=JITTER_MS if impaired else 0.0,
                      base_ms=40.0 if impaired else 0.0).start()
    sender = Baresip(work, "2002", "x", register=False, outbound=False, source=source,
                     codecs=CODEC, modules=("g711", "g722", "opus"),
                     sip_trace=False).start(wait_registered=False)
    sender.dial(f"sip:1003@{LOOPBACK}:{relay.sip_port}")
    time.sleep(call_seconds(ref))
    sender.hangup()
    time.sleep(0.5)
    _, dec = receiver.recordings()
    sender.cleanup()
    receiver.cleanup()
    relay.stop()
    print(f"   relay: {relay.sent} forwarded, {relay.dropped} dropped")
    return pesq_nb(ref, to_rate(dec, RATE))


def main() -> None:
    print(f"binary: {os.environ.get('MICROSIP_BIN')}; codec {CODEC}; impairment "
          f"{LOSS:.0%} loss, +-{JITTER_MS:.0f} ms jitter")
    with tempfile.TemporaryDirectory(prefix="bench-pesq-") as tmp:
        work = Path(tmp)
        try:
            source, ref = make_speech(work)
            print(f"speech: {len(ref) / RATE:.1f} s")
            rows = []
            for impaired in (False, True):
                ours = to_microsip(work / f"m{int(impaired)}", source, ref, impaired)
                theirs = to_baresip(work / f"b{int(impaired)}", source, ref, impaired)
                rows.append((impaired, ours, theirs))
            for impaired, ours, theirs in rows:
                what = "impaired" if impaired else "clean   "
                print(f"PESQ nb {what}: microsip {ours:.2f}  baresip {theirs:.2f}  "
                      f"difference {ours - theirs:+.2f}")
        finally:
            for o in list(peers.LIVE):
                try:
                    o.cleanup()
                except Exception as e:  # noqa: BLE001 - keep cleaning up
                    print(f"  (cleanup {type(o).__name__}: {e})")
            peers.LIVE.clear()


if __name__ == "__main__":
    main()
