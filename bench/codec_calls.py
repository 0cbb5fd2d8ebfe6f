#!/usr/bin/env python3
"""CPU and RSS per call for each codec with 50 (BENCH_CONCURRENT) concurrent calls,
next to baresip carrying the same calls in the same run.

One baresip (the caller, `call_max_calls` above the count) dials the callee 50
times with one codec only; both sides play a tone file at the codec's rate. The
callee is (a) microsip (autoAnswer=all, a WAV into every call, output null), then
(b) a baresip (answermode=auto, aufile source, aubridge player: no sound card).
Once every call is up the callee's utime+stime is sampled over BENCH_WINDOW
seconds (bench/calls.py measure_process). The caller's own CPU is not counted.

Run: MICROSIP_BIN=target/release/microsip python3 bench/codec_calls.py
(BENCH_CODECS: PCMU,G722,opus by default.)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "bench"))

import audio  # noqa: E402
from calls import CONCURRENT, WINDOW, cleanup_all, measure_process, rss_kb  # noqa: E402
from peers import LOOPBACK, Baresip, Phone, free_port, ini  # noqa: E402
from test_codecs import CASES  # noqa: E402

CODECS = os.environ.get("BENCH_CODECS", "PCMU,G722,opus").split(",")
MODULES = ("g711", "g722", "opus")


def caller(work: Path, case, source: Path) -> Baresip:
    return Baresip(work, "2001", "x", register=False, outbound=False, source=source,
                   codecs=case.baresip, modules=MODULES, sip_trace=False,
                   max_calls=CONCURRENT + 10).start(wait_registered=False)


def dial_all(b: Baresip, uri: str) -> None:
    for _ in range(CONCURRENT):
        b.dial(uri)
        time.sleep(0.04)


def bench_codec(work: Path, name: str) -> None:
    case = CASES[name]
    src = audio.make_tone_wav(work / f"src-{name}.wav", 440, 120, rate=case.baresip_rate,
                              channels=case.baresip_channels)
    ours = audio.make_tone_wav(work / "ours.wav", 600, 20, rate=16000)
    print(f"\n{name}: {CONCURRENT} calls, CPU over {WINDOW:.0f} s")
    # (a) microsip answers.
    port = free_port("sip")
    ph = Phone(work / f"m-{name}", ini=ini(accountId=0, sourcePort=port, autoAnswer="all",
                                           autoAnswerDelay=0, autoAnswerCalls="all",
                                           maxConcurrentCalls=1000,
                                           audioInputDevice=f"file:{ours}",
                                           audioOutputDevice="null",
                                           audioCodecs=case.ini_name)).start()
    time.sleep(1)
    idle = rss_kb(ph.pid)
    b = caller(work / f"cm-{name}", case, src)
    dial_all(b, f"sip:1001@{LOOPBACK}:{port}")

    def phone_calls_up():
        try:
            r = ph.request("calls", timeout=5)
            return sum(1 for d in (r.get("data") or [])
                       if d.get("state") == "active" and d.get("codec") == case.shown)
        except (OSError, AssertionError):
            return 0
    measure_process(ph.pid, phone_calls_up, "microsip", idle)
    b.cleanup()
    ph.cleanup()
    # (b) baresip answers.
    callee = Baresip(work / f"b-{name}", "1002", "x", register=False, outbound=False,
                     source=src, codecs=case.baresip, modules=MODULES, sip_trace=False,
                     max_calls=CONCURRENT + 10).start(wait_registered=False)
    time.sleep(1)
    idle_b = rss_kb(callee.proc.pid)
    b = caller(work / f"cb-{name}", case, src)
    dial_all(b, f"sip:1002@{LOOPBACK}:{callee.sip_port}")

    def baresip_calls_up():
        return callee.count("CALL_ESTABLISHED") - callee.count("CALL_CLOSED")
    measure_process(callee.proc.pid, baresip_calls_up, "baresip", idle_b)
    b.cleanup()
    callee.cleanup()


def main() -> None:
    print(f"microsip: {os.environ.get('MICROSIP_BIN')}; {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="bench-codec-calls-") as tmp:
        try:
            for name in CODECS:
                try:
                    bench_codec(Path(tmp), name)
                except Exception as e:  # noqa: BLE001 - report and go on
                    print(f"   FAILED: {type(e).__name__}: {e}")
                finally:
                    cleanup_all()
        finally:
            cleanup_all()


if __name__ == "__main__":
    main()
