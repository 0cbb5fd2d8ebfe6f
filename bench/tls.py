#!/usr/bin/env python3
"""SIP over TLS (issue 12): numbers, next to UDP in the same run on the same machine.

- start -> registered at Kamailio (its location table), over UDP and over TLS (TCP
  connect, handshake with certificate check against the system roots + the test
  CA, then REGISTER/401/REGISTER/200), median of N starts;
- the `register` command's round trip (a REGISTER on the open connection: over TLS
  no new handshake), median of N;
- idle RSS with one account registered, UDP vs TLS.

Prints numbers; asserts nothing about speed (shared, noisy machines).
Run: python3 bench/tls.py (after a release build), or scripts/bench.sh
"""
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "bench"))
from peers import Kamailio  # noqa: E402
from registration_control import kill, memory_kb, registered  # noqa: E402
from test_tls import make_ca, make_server_cert  # noqa: E402

BIN = os.environ.get("MICROSIP_BIN", str(ROOT / "target" / "release" / "microsip"))
RUNS = int(os.environ.get("BENCH_RUNS", "7"))
USERS = {"1001": "p;w#1005"}


def start(work: Path, server: str, tag: str, transport: str, ca: Path):
    ini = work / f"{tag}.ini"
    ini.write_text(f"[Settings]\naccountId=1\ntlsCaFile={ca}\n[Account1]\nserver={server}\n"
                   f"domain=127.0.0.1\nusername=1001\npassword=p;w#1005\n"
                   f"transport={transport}\n")
    env = dict(os.environ, XDG_RUNTIME_DIR=str(work), XDG_CONFIG_HOME=str(work))
    t0 = time.perf_counter()
    proc = subprocess.Popen([BIN, "--ini", str(ini), "--profile", tag, "--headless"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, t0, env


def time_to_registered(kam: Kamailio, proc, t0: float) -> float:
    for _ in range(6000):  # at most ~30 s
        if registered(kam, "1001@127.0.0.1"):
            return time.perf_counter() - t0
        if proc.poll() is not None:
            raise SystemExit(f"microsip exited with {proc.returncode}")
        time.sleep(0.005)
    raise SystemExit("not registered within 30 s")


def command_ms(env: dict, tag: str, *words: str) -> float:
    sock = Path(env["XDG_RUNTIME_DIR"]) / "microsip" / f"{tag}.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(15)
    s.connect(str(sock))
    t0 = time.perf_counter()
    s.sendall((" ".join(words) + "\n").encode())
    data = b""
    while not data.endswith(b"\n"):
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    ms = (time.perf_counter() - t0) * 1000
    s.close()
    return ms


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-tls") as d:
        work = Path(d)
        ca = make_ca(work / "ca", "Bench SIP CA")
        crt, key = make_server_cert(work / "ca", ca)
        kam = Kamailio(work / "kam", users=USERS, tls_cert=crt, tls_key=key).start()
        try:
            results = {}
            for transport, server in (("udp", kam.address), ("tls", kam.tls_address)):
                starts, commands, rss = [], [], []
                for i in range(RUNS):
                    tag = f"b{transport}{i}"
                    proc, t0, env = start(work, server, tag, transport, ca[0])
                    try:
                        starts.append(time_to_registered(kam, proc, t0) * 1000)
                        for _ in range(3):
                            commands.append(command_ms(env, tag, "register"))
                        if i == 0:
                            time.sleep(3)  # idle
                            rss.append(memory_kb(proc.pid))
                    finally:
                        kill(proc)
                    # The binding goes with the un-REGISTER at exit.
                    for _ in range(200):
                        if not registered(kam, "1001@127.0.0.1"):
                            break
                        time.sleep(0.05)
                results[transport] = (starts, commands, rss)
            print(f"microsip {BIN}, {RUNS} starts per transport")
            for transport, (starts, commands, rss) in results.items():
                print(f"{transport.upper():4} start -> registered: median "
                      f"{statistics.median(starts):6.1f} ms (min {min(starts):.1f}, "
                      f"max {max(starts):.1f})")
                print(f"{transport.upper():4} `register` round trip (open connection): "
                      f"median {statistics.median(commands):5.1f} ms")
                m = rss[0]
                print(f"{transport.upper():4} idle with the account registered: RSS "
                      f"{m['rss'] / 1024:.1f} MB, private {m['private'] / 1024:.1f} MB")
            u = statistics.median(results["udp"][0])
            t = statistics.median(results["tls"][0])
            print(f"TLS - UDP start -> registered: {t - u:+.1f} ms (median)")
        finally:
            kam.cleanup()


if __name__ == "__main__":
    main()
