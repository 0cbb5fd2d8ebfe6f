#!/usr/bin/env python3
"""Idle control connections and memory (issue 10): the phone's RSS at rest, while
BENCH_CONNECTIONS (2,000) connections are open and idle, and after they closed,
over BENCH_ROUNDS (3) rounds. The connections come from BENCH_CLIENTS (40)
processes, each opening its share, sending one STATUS on each and then holding
them without a word; each counts the answers and the refusals (`ERR busy`).

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
from registration_control import kill, rss_kb  # noqa: E402
from startup import ask  # noqa: E402

BIN = os.environ.get("MICROSIP_BIN", str(ROOT / "target" / "release" / "microsip"))
BEFORE_BIN = os.environ.get("MICROSIP_BEFORE_BIN")
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "2000"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "40"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))

# One client process: opens N connections, sends STATUS on each, reads the answer,
# prints "A R F" (answered, refused, neither), then holds them until stdin closes.
HOLDER = r"""
import socket, sys, time
path, n = sys.argv[1], int(sys.argv[2])
held, ok, refused = [], 0, 0

def connect():
    # A full listen backlog (many clients at once) says EAGAIN: try again, bounded.
    for _ in range(2000):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return s
        except BlockingIOError:
            s.close()
            time.sleep(0.005)
    raise OSError("backlog stayed full")

failed = 0
for _ in range(n):
    s = connect()
    s.settimeout(30)
    line = b""
    try:
        s.sendall(b"STATUS\n")
    except OSError:
        pass  # refused and closed before the request went out: the line is there
    try:
        while not line.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            line += chunk
    except OSError:
        pass
    if line.startswith(b"ERR busy"):
        refused += 1
        s.close()
    elif line.strip():
        ok += 1
        held.append(s)
    else:
        failed += 1
        s.close()
print(ok, refused, failed, flush=True)
sys.stdin.read()
"""


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
            holders = [subprocess.Popen([sys.executable, "-c", HOLDER, str(sock), str(share)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)
                       for _ in range(CLIENTS)]
            ok = refused = failed = 0
            for h in holders:
                a, b, c = (int(x) for x in h.stdout.readline().split())
                ok, refused, failed = ok + a, refused + b, failed + c
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
