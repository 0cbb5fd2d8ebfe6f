#!/usr/bin/env python3
"""Start-up time against the size of the ini (issue 10): from the start of the
process to its control socket answering STATUS, and the time of one `history`
request, for an ini with 0, 1k, 10k and 100k `[Calls]` entries (median of
BENCH_RUNS starts, 3 by default).

Compares binaries: MICROSIP_BIN (default target/release/microsip) and, when given,
MICROSIP_BEFORE_BIN (e.g. a release build of the commit before the change), each
measured in the same run. A start that takes longer than BENCH_START_TIMEOUT (120 s)
is stopped and printed as `>N s`; once a binary has timed out, larger files are
skipped for it.

Prints numbers; asserts nothing about speed (shared, noisy machines).
Run: python3 bench/startup.py
"""
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from registration_control import kill  # noqa: E402

BIN = os.environ.get("MICROSIP_BIN", str(ROOT / "target" / "release" / "microsip"))
BEFORE_BIN = os.environ.get("MICROSIP_BEFORE_BIN")
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
START_TIMEOUT = float(os.environ.get("BENCH_START_TIMEOUT", "120"))
SIZES = [int(s) for s in os.environ.get("BENCH_SIZES", "0,1000,10000,100000").split(",")]


def write_ini(path: Path, entries: int) -> None:
    """The local account only and `entries` [Calls] entries (keys 0..entries-1)."""
    with open(path, "w") as f:
        f.write("[Settings]\naccountId=0\nsourcePort=0\naudioInputDevice=null\n"
                f"audioOutputDevice=null\ncallsLastKey={max(entries - 1, 0) % 1000}\n[Calls]\n")
        for i in range(entries):
            f.write(f"{i}=10{i};Name {i};{i % 3};{1_700_000_000 + i};{i % 60};\n")


def ask(sock_path: Path, line: str, timeout: float) -> str | None:
    """One request on the control socket; its reply line, or None if none answers."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(sock_path))
        s.sendall(line.encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            buf += chunk
        return buf.decode(errors="replace") or None
    except OSError:
        return None
    finally:
        s.close()


def one_start(binary: str, work: Path, ini: Path, entries: int) -> tuple[float | None, float | None]:
    """(seconds to STATUS answered, seconds for one `history`), None when timed out."""
    tag = f"s{os.getpid()}"
    run = Path(tempfile.mkdtemp(prefix="msb", dir="/tmp"))
    env = dict(os.environ, XDG_RUNTIME_DIR=str(run), XDG_CONFIG_HOME=str(work))
    sock_path = run / "microsip" / f"{tag}.sock"
    t0 = time.perf_counter()
    proc = subprocess.Popen([binary, "--ini", str(ini), "--profile", tag, "--headless"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    started = history = None
    try:
        while time.perf_counter() - t0 < START_TIMEOUT and proc.poll() is None:
            if sock_path.exists() and ask(sock_path, "STATUS", 5) is not None:
                started = time.perf_counter() - t0
                break
            time.sleep(0.002)
        if started is not None:
            t1 = time.perf_counter()
            reply = ask(sock_path, json.dumps({"argv": ["history"]}), START_TIMEOUT)
            if reply is not None:
                history = time.perf_counter() - t1
                got = len(json.loads(reply).get("data") or [])
                want = min(entries, 1000)
                if got != want:
                    print(f"  ! {binary}: history listed {got} entries, expected {want}")
    finally:
        kill(proc)
        shutil.rmtree(run, ignore_errors=True)
    return started, history


def fmt(values: list, timed_out: bool) -> str:
    if timed_out:
        return f">{START_TIMEOUT:.0f} s"
    return f"{statistics.median(values) * 1000:.0f} ms"


def main() -> None:
    binaries = [("after", BIN)] + ([("before", BEFORE_BIN)] if BEFORE_BIN else [])
    work = Path(tempfile.mkdtemp(prefix="microsip-bench-startup-"))
    given_up: set[str] = set()
    print(f"start-up (process start -> STATUS answered) and one `history`, median of {RUNS}")
    print(f"{'[Calls] entries':>16} {'ini bytes':>10}  " +
          "  ".join(f"{label + ' start':>14} {label + ' history':>16}" for label, _ in binaries))
    try:
        for entries in SIZES:
            ini = work / f"calls-{entries}.ini"
            write_ini(ini, entries)
            size = ini.stat().st_size
            cells = []
            for label, binary in binaries:
                if label in given_up:
                    cells.append(f"{'skipped':>14} {'':>16}")
                    continue
                starts, histories, timed_out = [], [], False
                for _ in range(RUNS):
                    # The phone rewrites nothing here, but start from the same bytes.
                    write_ini(ini, entries)
                    s, h = one_start(binary, work, ini, entries)
                    if s is None or h is None:
                        timed_out = True
                        given_up.add(label)
                        break
                    starts.append(s)
                    histories.append(h)
                cells.append(f"{fmt(starts, timed_out):>14} {fmt(histories, timed_out):>16}")
            print(f"{entries:>16} {size:>10}  " + "  ".join(cells), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
