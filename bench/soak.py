#!/usr/bin/env python3
"""A soak of many short calls (issue 10): SIPp's built-in UAC places BENCH_SOAK_CALLS
(10,000) calls to the phone, BENCH_SOAK_RATE (100) a second, each 200 ms long, at
most 200 at once; the phone answers them itself (autoAnswer=all, audio `null`).
Prints the phone's RSS, anonymous RSS and open file descriptors before the soak,
after each of BENCH_SOAK_ROUNDS (2) rounds and after a settling pause, with how many calls SIPp saw succeed and how
many `call.ended` events and `[Calls]` entries the phone produced. The same soak
against SIPp's own UAS (-sn uas) is run first, as the peer that shows what the
machine can carry.

Prints numbers; asserts nothing (shared, noisy machines).
Run: MICROSIP_BIN=target/release/microsip python3 bench/soak.py
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

from calls import (cleanup_all, hms_seconds, memory, new_phone, sipp_stats,  # noqa: E402
                   stat_args, wait_exit)
from peers import Sipp, free_port  # noqa: E402

CALLS = int(os.environ.get("BENCH_SOAK_CALLS", "10000"))
# Rounds of CALLS calls against the same phone: memory that grows every round is
# a leak; memory that grows once and then holds is the allocator's high water.
ROUNDS = int(os.environ.get("BENCH_SOAK_ROUNDS", "2"))
RATE = int(os.environ.get("BENCH_SOAK_RATE", "100"))


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def soak(work: Path, target: str) -> dict:
    """Runs the SIPp UAC against `target`; its last statistics row."""
    uac = Sipp(work, builtin="uac", calls=CALLS, timeout_s=CALLS // RATE + 120, trace=False,
               remote=target, extra=["-s", "1001", "-r", str(RATE), "-l", str(RATE * 2),
                                     "-d", "200", "-recv_timeout", "10000", *stat_args()])
    uac.start()
    wait_exit(uac, CALLS / RATE + 180)
    st = sipp_stats(uac)
    uac.cleanup()
    return st


def line(label: str, st: dict) -> str:
    ok = int(st.get("SuccessfulCall(C)", "0") or 0)
    failed = int(st.get("FailedCall(C)", "0") or 0)
    elapsed = hms_seconds(st["ElapsedTime(C)"]) if st.get("ElapsedTime(C)") else float("nan")
    return f"{label}: {ok} calls succeeded, {failed} failed, in {elapsed:.0f} s"


def main() -> int:
    print(f"soak: {CALLS} calls of 200 ms at {RATE}/s")
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        work = Path(tmp)
        try:
            uas = Sipp(work, builtin="uas", calls=CALLS + 10, timeout_s=CALLS // RATE + 300,
                       trace=False).start()
            print("  " + line("SIPp's own UAS (peer)", soak(work, uas.address)))
            uas.cleanup()

            port = free_port("sip")
            ph = new_phone(work, None, audioInputDevice="null", audioOutputDevice="null",
                           autoAnswerCalls="all", sourcePort=port)
            ev = ph.events()
            pid = ph.proc.pid
            time.sleep(2)
            before = (*memory(pid), fds(pid))
            rows = [("before", before)]
            results = []
            for r in range(1, ROUNDS + 1):
                results.append(soak(work, f"127.0.0.1:{port}"))
                rows.append((f"after round {r}", (*memory(pid), fds(pid))))
            time.sleep(10)
            rows.append(("10 s later", (*memory(pid), fds(pid))))
            ended = ev.count("call.ended")
            rc, reply = ph.cmd_json("history")
            entries = len(reply.get("data", [])) if rc == 0 else -1
            for r, st in enumerate(results, 1):
                print("  " + line(f"microsip round {r}", st))
            print(f"  microsip call.ended events: {ended}; history entries: {entries} "
                  "([Calls] keeps the last 1000)")
            for label, (rss, anon, nfd) in rows:
                print(f"  microsip {label:14}: RSS {rss / 1024:.1f} MB "
                      f"(anonymous {anon / 1024:.1f} MB), {nfd} open file descriptors")
        finally:
            cleanup_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
