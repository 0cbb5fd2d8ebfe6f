#!/usr/bin/env python3
"""Idle control connections and memory (issue 10): the phone's RSS at rest, while
BENCH_CONNECTIONS (2,000) connections are open and idle, and after they closed,
over BENCH_ROUNDS (3) rounds. The connections come from BENCH_CLIENTS (40)
processes (peers.connection_holder), each opening its share, sending one STATUS on
each and then holding them without a word; the answers and the refusals
(`ERR busy`) are counted.

Compares binaries: MICROSIP_BIN (default target/release/microsip) and, when given,
MICROSIP_BEFORE_BIN.

Prints numbers; asserts nothing (shared, noisy machines).
Run: python3 bench/connections.py
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from registration_control import kill, rss_kb  # noqa: E402  (also puts tests/e2e on the path)
from startup import ask  # noqa: E402
from peers import connection_holder, holder_replies  # noqa: E402

BIN = os.environ.get("MICROSIP_BIN", str(ROOT / "target" / "release" / "microsip"))
BEFORE_BIN = os.environ.get("MICROSIP_BEFORE_BIN")
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "2000"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "40"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))

def settle(pid: int, timeout: float = 10.0) -> int:
    """RSS once it stopped changing for 0.5 s (bounded)."""
    deadline = time.monotonic() + timeout
    last, since = rss_kb(pid), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = rss_kb(pid)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= 0.5:
            break
    return last


def measure(label: str, binary: str) -> None:
    work = Path(tempfile.mkdtemp(prefix="microsip-bench-conn-"))
    run = Path(tempfile.mkdtemp(prefix="msc", dir="/tmp"))
    ini = work / "microsip.ini"
    ini.write_text("[Settings]\naccountId=0\nsourcePort=0\naudioInputDevice=null\n"
                   "audioOutputDevice=null\n")
    env = dict(os.environ, XDG_RUNTIME_DIR=str(run), XDG_CONFIG_HOME=str(work))
    sock = run / "microsip" / "conn.sock"
    proc = subprocess.Popen([binary, "--ini", str(ini), "--profile", "conn", "--headless"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    holders: list[subprocess.Popen] = []
    try:
        deadline = time.monotonic() + 30
        while not (sock.exists() and ask(sock, "STATUS", 5)):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{binary} did not start")
            time.sleep(0.01)
        idle = settle(proc.pid)
        print(f"{label}: idle {idle / 1024:.1f} MB", flush=True)
        share = CONNECTIONS // CLIENTS
        for r in range(1, ROUNDS + 1):
            holders = [connection_holder(sock, share) for _ in range(CLIENTS)]
            replies = [r for h in holders for r in holder_replies(h)]
            ok = sum(1 for r in replies if r.startswith("OK"))
            refused = sum(1 for r in replies if r.startswith("ERR busy"))
            failed = len(replies) - ok - refused
            held = settle(proc.pid)
            for h in holders:
                h.stdin.close()
            for h in holders:
                h.wait(30)
            holders = []
            # The phone has seen every close once a new connection is answered and
            # its memory stopped moving.
            ask(sock, "STATUS", 10)
            after = settle(proc.pid)
            print(f"{label}: round {r}: {ok} connections held, {refused} refused, {failed} "
                  f"without an answer; "
                  f"RSS {held / 1024:.1f} MB while held, {after / 1024:.1f} MB after they "
                  f"closed", flush=True)
    finally:
        for h in holders:
            h.kill()
            h.wait(5)
        kill(proc)
        shutil.rmtree(run, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    print(f"{CONNECTIONS} idle control connections from {CLIENTS} processes, {ROUNDS} rounds")
    for label, binary in [("after", BIN)] + ([("before", BEFORE_BIN)] if BEFORE_BIN else []):
        measure(label, binary)


if __name__ == "__main__":
    main()
