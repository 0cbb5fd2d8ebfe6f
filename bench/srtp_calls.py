#!/usr/bin/env python3
"""CPU per call with SRTP against without: BENCH_CONCURRENT (50) concurrent calls
from one baresip, answered (a) by microsip and (b) by a baresip, first in clear
RTP, then with SRTP (SDES, AES_CM_128_HMAC_SHA1_80: baresip `mediaenc=srtp-mand`,
microsip `SRTP=mandatory`), all in the same run. PCMU; both sides play a tone.
Once every call is up the callee's utime+stime is sampled over BENCH_WINDOW
seconds (bench/calls.py measure_process); the caller's CPU is not counted.

Also prints the size of the phone's binary ($MICROSIP_BIN) and, when
MICROSIP_BIN_BEFORE names a build without SRTP, the difference.

Run: MICROSIP_BIN=target/release/microsip python3 bench/srtp_calls.py
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
from peers import LOOPBACK, Baresip, Phone, account, free_port, ini  # noqa: E402

MODES = [("clear", "", None), ("SRTP", "mandatory", "srtp-mand")]


def caller(work: Path, source: Path, mediaenc: str | None) -> Baresip:
    return Baresip(work, "2001", "x", register=False, outbound=False, source=source,
                   codecs="pcmu", sip_trace=False, max_calls=CONCURRENT + 10,
                   mediaenc=mediaenc).start(wait_registered=False)


def dial_all(b: Baresip, uri: str) -> None:
    for _ in range(CONCURRENT):
        b.dial(uri)
        time.sleep(0.04)


def bench_mode(work: Path, label: str, srtp: str, mediaenc: str | None) -> None:
    src = audio.make_tone_wav(work / "src.wav", 440, 120)
    ours = audio.make_tone_wav(work / "ours.wav", 600, 20, rate=16000)
    print(f"\n{label}: {CONCURRENT} calls, CPU over {WINDOW:.0f} s")
    port = free_port("sip")
    # An account without a registrar (SRTP is an account key): calls to 1001 land on it.
    acc = account("", "1001", SRTP=srtp)
    ph = Phone(work / f"m-{label}", ini=ini(acc, sourcePort=port, autoAnswer="all",
                                           autoAnswerDelay=0, autoAnswerCalls="all",
                                           maxConcurrentCalls=1000,
                                           audioInputDevice=f"file:{ours}",
                                           audioOutputDevice="null",
                                           audioCodecs="PCMU/8000/1")).start()
    time.sleep(1)
    idle = rss_kb(ph.pid)
    b = caller(work / f"cm-{label}", src, mediaenc)
    dial_all(b, f"sip:1001@{LOOPBACK}:{port}")

    def phone_calls_up():
        try:
            r = ph.request("calls", timeout=5)
            return sum(1 for d in (r.get("data") or []) if d.get("state") == "active")
        except (OSError, AssertionError):
            return 0
    measure_process(ph.pid, phone_calls_up, "microsip", idle)
    b.cleanup()
    ph.cleanup()
    callee = Baresip(work / f"b-{label}", "1002", "x", register=False, outbound=False,
                     source=src, codecs="pcmu", sip_trace=False, max_calls=CONCURRENT + 10,
                     mediaenc=mediaenc).start(wait_registered=False)
    time.sleep(1)
    idle_b = rss_kb(callee.proc.pid)
    b = caller(work / f"cb-{label}", src, mediaenc)
    dial_all(b, f"sip:1002@{LOOPBACK}:{callee.sip_port}")

    def baresip_calls_up():
        return callee.count("CALL_ESTABLISHED") - callee.count("CALL_CLOSED")
    measure_process(callee.proc.pid, baresip_calls_up, "baresip", idle_b)
    b.cleanup()
    callee.cleanup()


def sizes() -> None:
    now = Path(os.environ["MICROSIP_BIN"])
    print(f"binary: {now} {now.stat().st_size} bytes")
    before = os.environ.get("MICROSIP_BIN_BEFORE")
    if before:
        b = Path(before).stat().st_size
        print(f"binary before SRTP: {before} {b} bytes; SRTP adds "
              f"{now.stat().st_size - b} bytes")


def main() -> None:
    print(f"microsip: {os.environ.get('MICROSIP_BIN')}; {os.cpu_count()} CPUs")
    sizes()
    with tempfile.TemporaryDirectory(prefix="bench-srtp-calls-") as tmp:
        try:
            for label, srtp, mediaenc in MODES:
                try:
                    bench_mode(Path(tmp), label, srtp, mediaenc)
                except Exception as e:  # noqa: BLE001 - report and go on
                    print(f"   FAILED: {type(e).__name__}: {e}")
                finally:
                    cleanup_all()
        finally:
            cleanup_all()


if __name__ == "__main__":
    main()
