#!/usr/bin/env python3
"""Benchmarks for registration and the command line (issue 2), each next to a peer
measured in the same run on the same machine:

- idle RSS with one registered account: microsip vs baresip (same Kamailio);
- control-socket round trip of STATUS (p50/p90/p99);
- `microsip STATUS` as a whole process (hyperfine) vs `kamcmd core.uptime`;
- start -> registered on loopback: microsip vs baresip (median of N starts).

Prints numbers; asserts nothing about speed (shared, noisy machines).
Run: scripts/bench.sh
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from peers import Kamailio, free_port  # noqa: E402

BIN = os.environ.get("MICROSIP_BIN", str(ROOT / "target" / "release" / "microsip"))
# The small static build (scripts/build-small.sh), measured too when it is there.
SMALL_BIN = os.environ.get(
    "MICROSIP_SMALL_BIN",
    str(ROOT / "target" / "x86_64-unknown-linux-musl" / "small" / "microsip"))
RTT = str(ROOT / "target" / "release" / "examples" / "socket_rtt")
RUNS = int(os.environ.get("BENCH_RUNS", "5"))


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def memory_kb(pid: int) -> dict:
    """Rss, Pss (shared pages split among their users) and private (Private_Clean +
    Private_Dirty: what the process alone holds) from /proc/PID/smaps_rollup."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[key.strip()] = int(parts[0])
    return {"rss": fields.get("Rss", -1), "pss": fields.get("Pss", -1),
            "private": fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0),
            "anon": fields.get("Anonymous", -1)}


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def registered(kam: Kamailio, aor: str) -> bool:
    out = subprocess.run([kam.kamcmd, "-s", f"unix:{kam.ctl}", "ul.lookup", "location", aor],
                         capture_output=True, text=True, timeout=5).stdout
    return "Contact" in out or "Address" in out


def start_microsip(work: Path, kam: Kamailio, tag: str, binary: str = BIN):
    ini = work / f"{tag}.ini"
    ini.write_text(f"[Settings]\naccountId=1\n[Account1]\nserver=127.0.0.1:{kam.port}\n"
                   f"domain=127.0.0.1\nusername=1001\npassword=p;w#1005\n")
    env = dict(os.environ, XDG_RUNTIME_DIR=str(work), XDG_CONFIG_HOME=str(work))
    t0 = time.perf_counter()
    proc = subprocess.Popen([binary, "--ini", str(ini), "--profile", tag, "--headless"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Seen the way baresip's is: the contact in Kamailio's location table.
    for _ in range(2000):
        if registered(kam, "1001@127.0.0.1"):
            break
        time.sleep(0.002)
    t1 = time.perf_counter()
    return proc, env, (t1 - t0) * 1000


def start_baresip(work: Path, kam: Kamailio, tag: str):
    conf = work / f"baresip-{tag}"
    conf.mkdir(exist_ok=True)
    sip_port = free_port("sip", span=2)  # baresip: TLS on the next port
    (conf / "config").write_text(
        "poll_method epoll\nsip_listen 127.0.0.1:%d\nmodule_path /usr/lib/baresip/modules\n"
        "module g711.so\nmodule account.so\nmodule_app account.so\n"
        "audio_player aubridge,nil\naudio_source ausine,440\n" % sip_port)
    (conf / "accounts").write_text(
        f"<sip:1002@127.0.0.1:{kam.port};transport=udp>;auth_pass=secret2;regint=300\n")
    (conf / "contacts").write_text("")
    t0 = time.perf_counter()
    proc = subprocess.Popen(["baresip", "-f", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    for _ in range(2000):
        if registered(kam, "1002@127.0.0.1"):
            break
        time.sleep(0.002)
    t1 = time.perf_counter()
    return proc, (t1 - t0) * 1000


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="msbench", dir="/tmp"))
    kam = Kamailio(work / "kam").start()
    try:
        print(f"# microsip {BIN}\n# {RUNS} starts each; Kamailio on 127.0.0.1:{kam.port}")

        # start -> registered
        ours, theirs = [], []
        for i in range(RUNS):
            proc, _env, ms = start_microsip(work, kam, f"s{i}")
            ours.append(ms)
            kill(proc)
            for aor in ("1001@127.0.0.1", "1002@127.0.0.1"):
                subprocess.run([kam.kamcmd, "-s", f"unix:{kam.ctl}", "ul.rm", "location", aor],
                               capture_output=True)
            bproc, bms = start_baresip(work, kam, f"s{i}")
            theirs.append(bms)
            kill(bproc)
        print(f"start->registered: microsip median {statistics.median(ours):.1f} ms; "
              f"baresip median {statistics.median(theirs):.1f} ms (both: contact seen by polling "
              f"kamcmd ul.lookup, 2 ms steps); "
              f"ratio {statistics.median(ours) / statistics.median(theirs):.2f}")

        # idle RSS, both registered
        proc, env, _ = start_microsip(work, kam, "idle")
        bproc, _ = start_baresip(work, kam, "idle")
        time.sleep(5)
        ours_kb, theirs_kb = rss_kb(proc.pid), rss_kb(bproc.pid)
        print(f"idle RSS, one registered account: microsip {ours_kb / 1024:.2f} MB; "
              f"baresip {theirs_kb / 1024:.2f} MB; ratio {ours_kb / theirs_kb:.2f}")
        ours_m, theirs_m = memory_kb(proc.pid), memory_kb(bproc.pid)
        for key in ("pss", "private", "anon"):
            print(f"idle {key}: microsip {ours_m[key] / 1024:.2f} MB; "
                  f"baresip {theirs_m[key] / 1024:.2f} MB; "
                  f"ratio {ours_m[key] / max(theirs_m[key], 1):.2f}")
        kill(bproc)
        if Path(SMALL_BIN).exists():
            sproc, _env, _ = start_microsip(work, kam, "small", SMALL_BIN)
            time.sleep(5)
            small = memory_kb(sproc.pid)
            print(f"idle RSS, one registered account, small static build ({SMALL_BIN}): "
                  f"{small['rss'] / 1024:.2f} MB (pss {small['pss'] / 1024:.2f}, "
                  f"anon {small['anon'] / 1024:.2f}); ratio to baresip "
                  f"{small['rss'] / theirs_kb:.2f}")
            kill(sproc)
        else:
            print(f"no small build at {SMALL_BIN} (scripts/build-small.sh): not measured")

        # socket round trip
        sock = work / "microsip" / "idle.sock"
        out = subprocess.run([RTT, str(sock), "20000", "STATUS"], capture_output=True,
                             text=True, timeout=120)
        print(out.stdout.strip() or out.stderr.strip())

        # whole-process STATUS vs a peer's control client
        if shutil.which("hyperfine"):
            exports = work / "hf.json"
            # The phone's runtime folder goes in hyperfine's environment, not
            # through `env` in the timed command (that would time two programs).
            subprocess.run(
                ["hyperfine", "-N", "--warmup", "20", "--runs", "300", "--export-json", str(exports),
                 f"{BIN} --profile idle STATUS",
                 f"{kam.kamcmd} -s unix:{kam.ctl} core.uptime"],
                capture_output=True, text=True, timeout=300,
                env=dict(os.environ, XDG_RUNTIME_DIR=str(work)))
            import json
            res = json.loads(exports.read_text())["results"]
            a, b = res[0]["median"] * 1000, res[1]["median"] * 1000
            print(f"`microsip STATUS` process: median {a:.2f} ms; "
                  f"`kamcmd core.uptime` median {b:.2f} ms; ratio {a / b:.2f}")
        else:
            print("hyperfine not installed: skipped the whole-process timing")
        kill(proc)
    finally:
        kam.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
