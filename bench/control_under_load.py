#!/usr/bin/env python3
"""Control and signalling under load (issue 9): does slow work (recording, playing
a file, volume changes, the address book) hold up the phone's signalling task?
Numbers only; asserts nothing (shared, noisy machines).

For each binary (MICROSIP_BIN, and MICROSIP_BIN_BEFORE when set: the same run
measures both, one after the other, on the same machine):

1. Kamailio, the phone (registered as 1001; headless: audioInputDevice=tone:440,
   audioOutputDevice=null; recordingPath in a temp folder; autoAnswer=all) and
   BENCH_CALLS (20) calls that stay up for the whole window: SIPp
   (sipp/uac_rtp_call.xml) calls the phone directly and streams a PCMU tone into
   every call, the phone sends its tone back. `calls` (JSON) must show them all
   `active` before and after the window (printed). Then `autoanswer off`, so the
   probe calls below ring.
2. STATUS round trip from one client (a plain `STATUS` line on its own control
   connection, paced at BENCH_RATE (100) a second, BENCH_SAMPLES (2000) samples,
   or fewer when BENCH_MAX_SECONDS (60) run out first; p50, p99, max): before
   the calls ("no calls"), with the calls up and nothing else ("idle"), and with
   the calls up and the load below running ("loaded"). Next to each STATUS, in
   the same loop, one round trip to a peer that does nothing but answer: a line
   echo on a Unix socket in a process of its own (`--echo`); its p99 is the
   scheduling noise of the machine at those moments.
3. INVITE -> 180: a raw SIP INVITE from a UDP socket of this script (time taken
   just before sendto) to the 180 read on that socket; then CANCEL, 487, ACK.
   BENCH_PROBES (20) calls one after the other, idle and under the load;
   median, p90, max.
4. The load, in a separate process (`--load`, so Python's GIL in the load
   threads never delays the measuring client), one thread and one control
   connection each, back to back unless said:
   - `record start ID` / `record stop ID` on the first call;
   - `play FILE ID` (a 10-minute 16 kHz mono 16-bit WAV) / `play off ID` on the
     second call;
   - `volumeup` / `volumedown`, alternating, 50 a second;
   - `contacts add NUMBER NAME`, a new number each time.
   Each client's operations per second and reply times are printed.

At the end: one table, a row per binary. The load average is printed at every
measure: other work on the machine shows in these numbers.

Run: MICROSIP_BIN=target/release/microsip \
     MICROSIP_BIN_BEFORE=/path/to/old/microsip python3 bench/control_under_load.py
(BENCH_CALLS, BENCH_SAMPLES, BENCH_RATE, BENCH_PROBES change the sizes;
BENCH_LOAD=record,play,volume,contacts picks the load clients, all by default.)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "bench"))

CALLS = int(os.environ.get("BENCH_CALLS", "20"))
SAMPLES = int(os.environ.get("BENCH_SAMPLES", "2000"))
RATE = float(os.environ.get("BENCH_RATE", "100"))
# A STATUS series also ends after this long (a phone that stalls would take for ever).
MAX_SECONDS = float(os.environ.get("BENCH_MAX_SECONDS", "60"))
PROBES = int(os.environ.get("BENCH_PROBES", "20"))
WAV_SECONDS = 600
WAV_RATE = 16000
VOLUME_RATE = 50.0
PASSWORD = "p;w#1005"
# Which load clients run (all by default): BENCH_LOAD=record,play,volume,contacts.
LOAD_CLIENTS = ["record", "play", "volume", "contacts"]
LOAD = [c for c in os.environ.get("BENCH_LOAD", ",".join(LOAD_CLIENTS)).split(",") if c]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def pct(values, q):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def load_avg() -> str:
    return "load average %.2f %.2f %.2f" % os.getloadavg()


class Conn:
    """One persistent connection to the phone's control socket: a request line, its
    reply line (peers.Phone.request opens a connection per request)."""

    def __init__(self, path: str, timeout: float = 60.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.reader = self.sock.makefile("rb")

    def line(self, text: str) -> str:
        self.sock.sendall(text.encode() + b"\n")
        reply = self.reader.readline()
        if not reply:
            raise OSError("the phone closed the control connection")
        return reply.decode(errors="replace").rstrip("\n")

    def request(self, *argv: str) -> dict:
        return json.loads(self.line(json.dumps({"argv": list(argv)})))

    def close(self) -> None:
        try:
            self.reader.close()
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------- the load process

def load_main(config: dict) -> None:
    """`--load CONFIG`: runs the load clients until stdin closes, then prints one
    JSON line: per client, operations, failures, reply times."""
    path = config["socket"]
    stop = threading.Event()
    results: dict[str, dict] = {}

    def client(name: str, steps, pace: float | None = None) -> None:
        times: list[float] = []
        fails, first_error = 0, None
        try:
            conn = Conn(path)
        except OSError as e:
            results[name] = {"ops": 0, "fails": 1, "error": str(e), "times": []}
            return
        t_start = time.monotonic()
        i = 0
        while not stop.is_set():
            argv = steps[i % len(steps)]
            if callable(argv):
                argv = argv(i)
            if pace:
                wait = t_start + i / pace - time.monotonic()
                if wait > 0:
                    stop.wait(wait)
                    if stop.is_set():
                        break
            t0 = time.perf_counter()
            try:
                r = conn.request(*argv)
            except (OSError, ValueError) as e:
                fails += 1
                first_error = first_error or f"{' '.join(argv)}: {e}"
                break
            times.append(time.perf_counter() - t0)
            if not r.get("ok"):
                fails += 1
                first_error = first_error or f"{' '.join(argv)}: {r.get('error') or r}"
            i += 1
        elapsed = time.monotonic() - t_start
        conn.close()
        results[name] = {"ops": len(times), "fails": fails, "error": first_error,
                         "elapsed": elapsed, "times": times}

    a, b = config["record_call"], config["play_call"]
    base = config["contact_base"]
    clients = [
        ("record start/stop", [["record", "start", a], ["record", "stop", a]], None),
        ("play/play off", [["play", config["wav"], b], ["play", "off", b]], None),
        ("volumeup/volumedown", [["volumeup"], ["volumedown"]], VOLUME_RATE),
        ("contacts add", [lambda i: ["contacts", "add", str(base + i), f"Bench {i}"]], None),
    ]
    keys = dict(zip(LOAD_CLIENTS, clients))
    clients = [keys[k] for k in config["clients"]]
    threads = [threading.Thread(target=client, args=c, daemon=True) for c in clients]
    for t in threads:
        t.start()
    sys.stdin.read()  # until the parent closes it
    stop.set()
    for t in threads:
        t.join(60)
    out = {}
    for name, _steps, _pace in clients:
        r = results.get(name, {"ops": 0, "fails": 0, "error": "did not end", "times": []})
        ts = r.pop("times")
        r.update(p50_ms=pct(ts, 50) * 1000, p99_ms=pct(ts, 99) * 1000,
                 max_ms=max(ts) * 1000 if ts else float("nan"))
        out[name] = r
    print(json.dumps(out), flush=True)


# ---------------------------------------------------------------- measures

def status_rtt(path: str, samples: int, rate: float,
               echo: str | None = None) -> tuple[list[float], list[float]]:
    """STATUS round trips (seconds) on one connection, paced at `rate` a second;
    with `echo`, each STATUS is followed by one round trip to that line echo (the
    machine's own scheduling noise at the same moments)."""
    conn = Conn(path)
    peer = Conn(echo) if echo else None
    for _ in range(20):  # warm up
        conn.line("STATUS")
        if peer:
            peer.line("STATUS")
    out, peer_out = [], []
    t_start = time.monotonic()
    for i in range(samples):
        if time.monotonic() - t_start > MAX_SECONDS:
            break
        wait = t_start + i / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        t0 = time.perf_counter()
        reply = conn.line("STATUS")
        t1 = time.perf_counter()
        out.append(t1 - t0)
        if not reply.startswith("OK"):
            raise AssertionError(f"STATUS answered {reply!r}")
        if peer:
            peer.line("OK 2")
            peer_out.append(time.perf_counter() - t1)
    conn.close()
    if peer:
        peer.close()
    return out, peer_out


def echo_main(path: str) -> None:
    """`--echo PATH`: a line echo on a Unix socket (one connection at a time), the
    peer measured next to STATUS: a process that does nothing but answer."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(4)
    while True:
        c, _ = srv.accept()
        for line in c.makefile("rb"):
            c.sendall(line)
        c.close()


def _headers(text: str) -> tuple[str, dict[str, str]]:
    lines = text.split("\r\n")
    heads: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            break
        k, _, v = line.partition(":")
        heads.setdefault(k.strip().lower(), v.strip())
    return lines[0], heads


def invite_to_180(port: int, n: int) -> tuple[list[float], list[str]]:
    """n calls to the phone, one after the other: INVITE -> 180 (seconds), then
    CANCEL, 487, ACK. bench/integrations.py's RawUac sends the INVITE."""
    from integrations import RawUac
    uac = RawUac(port)
    ruri = f"sip:1001@127.0.0.1:{port}"
    delays: list[float] = []
    problems: list[str] = []
    try:
        for i in range(n):
            call_id, t0 = uac.invite("1001", caller=f"probe{i}")
            ringing = None
            deadline = t0 + 10
            uac.sock.settimeout(0.5)
            while time.monotonic() < deadline and ringing is None:
                try:
                    data, _ = uac.sock.recvfrom(65535)
                except OSError:
                    continue
                t1 = time.monotonic()
                first, heads = _headers(data.decode("utf-8", "replace"))
                if heads.get("call-id") != call_id or not first.startswith("SIP/2.0 "):
                    continue
                code = int(first.split()[1])
                if code == 180:
                    ringing = heads
                    delays.append(t1 - t0)
                elif code >= 200:
                    problems.append(f"probe {i}: {first}")
                    break
            if ringing is None:
                problems.append(f"probe {i}: no 180 within 10 s")
                continue
            to = re.sub(r";\s*tag=[^;>\s]+", "", ringing.get("to", ""))
            cancel = "\r\n".join([
                f"CANCEL {ruri} SIP/2.0", f"Via: {ringing.get('via', '')}",
                "Max-Forwards: 70", f"From: {ringing.get('from', '')}", f"To: {to}",
                f"Call-ID: {call_id}", "CSeq: 1 CANCEL", "Content-Length: 0", "", ""])
            uac.sock.sendto(cancel.encode(), uac.target)
            # The INVITE's final answer (487) is ACKed.
            deadline = time.monotonic() + 10
            done = False
            while time.monotonic() < deadline and not done:
                try:
                    data, _ = uac.sock.recvfrom(65535)
                except OSError:
                    continue
                first, heads = _headers(data.decode("utf-8", "replace"))
                if (heads.get("call-id") != call_id or not first.startswith("SIP/2.0 ")
                        or not heads.get("cseq", "").endswith("INVITE")
                        or int(first.split()[1]) < 200):
                    continue
                ack = "\r\n".join([
                    f"ACK {ruri} SIP/2.0", f"Via: {heads.get('via', '')}",
                    "Max-Forwards: 70", f"From: {heads.get('from', '')}",
                    f"To: {heads.get('to', '')}", f"Call-ID: {call_id}", "CSeq: 1 ACK",
                    "Content-Length: 0", "", ""])
                uac.sock.sendto(ack.encode(), uac.target)
                done = True
                if not first.startswith("SIP/2.0 487"):
                    problems.append(f"probe {i}: answered {first} to the CANCEL")
            if not done:
                problems.append(f"probe {i}: no final answer after the CANCEL")
            time.sleep(0.2)
    finally:
        uac.close()
    return delays, problems


def active_calls(ph) -> list[dict]:
    r = ph.request("calls", timeout=30)
    return [d for d in (r.get("data") or []) if d.get("state") == "active"]


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def fmt(values) -> str:
    return (f"p50 {pct(values, 50) * 1000:.2f} ms, p99 {pct(values, 99) * 1000:.2f} ms, "
            f"max {max(values) * 1000:.2f} ms (n={len(values)})")


# ---------------------------------------------------------------- one binary

def run_binary(label: str, binary: str, work: Path, kam, wav: Path, tone_ulaw: bytes,
               echo: str) -> dict:
    import peers
    from peers import Phone, Sipp, account, free_port, ini

    os.environ["MICROSIP_BIN"] = binary
    print(f"\n== {label}: {binary}", flush=True)
    res: dict = {"label": label}
    port = free_port("sip")
    rec_dir = work / f"rec-{label}"
    rec_dir.mkdir()
    ph = Phone(work, ini=ini(account(kam.address, "1001", PASSWORD),
                             sourcePort=port, autoAnswer="all", autoAnswerDelay=0,
                             autoAnswerCalls="all", maxConcurrentCalls=1000,
                             audioInputDevice="tone:440", audioOutputDevice="null",
                             recordingPath=str(rec_dir))).start()
    sock = str(ph.socket_path)
    sipp = None
    load = None
    try:
        kam.wait_contacts("1001", timeout=30)
        print(f"   registered at Kamailio {kam.address}; phone SIP on 127.0.0.1:{port}")

        print(f"   STATUS, no calls ({load_avg()})", flush=True)
        res["none"], res["echo_none"] = status_rtt(sock, SAMPLES, RATE, echo)
        print(f"      {fmt(res['none'])}; echo peer {fmt(res['echo_none'])}")

        # The calls: SIPp streams a PCMU tone into each; they last longer than the window.
        sipp = Sipp(work, "uac_rtp_call.xml", calls=CALLS, timeout_s=3600, trace=False,
                    files={"tone.ulaw": tone_ulaw}, remote=f"127.0.0.1:{port}",
                    extra=["-s", "1001", "-r", "10", "-l", str(CALLS),
                           "-d", str(1800 * 1000)]).start()
        deadline = time.monotonic() + 60
        up = []
        while time.monotonic() < deadline:
            up = active_calls(ph)
            if len(up) >= CALLS:
                break
            time.sleep(1)
        res["calls_before"] = len(up)
        print(f"   {len(up)} of {CALLS} calls active before the window "
              f"(calls --json: {sum(1 for c in up if c.get('jitter') is not None)} "
              f"with RTP quality figures)")
        if len(up) < 2:
            raise AssertionError(f"only {len(up)} calls came up")
        r = ph.request("autoanswer", "off")
        if not r.get("ok"):
            print(f"   autoanswer off refused: {r}")
        time.sleep(2)

        print(f"   STATUS, {len(up)} calls, no load ({load_avg()})", flush=True)
        res["idle"], res["echo_idle"] = status_rtt(sock, SAMPLES, RATE, echo)
        print(f"      {fmt(res['idle'])}; echo peer {fmt(res['echo_idle'])}")
        print(f"   INVITE -> 180, {len(up)} calls, no load ({load_avg()})", flush=True)
        res["probe_idle"], problems = invite_to_180(port, PROBES)
        print(f"      median {pct(res['probe_idle'], 50) * 1000:.2f} ms, "
              f"p90 {pct(res['probe_idle'], 90) * 1000:.2f} ms "
              f"(n={len(res['probe_idle'])}){'; ' + '; '.join(problems) if problems else ''}")

        ids = [str(c["id"]) for c in up]
        config = {"socket": sock, "record_call": ids[0], "play_call": ids[1],
                  "wav": str(wav), "contact_base": 5550000, "clients": LOAD}
        load = subprocess.Popen([sys.executable, __file__, "--load", json.dumps(config)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                start_new_session=True)
        time.sleep(2)  # every client running
        t0, c0 = time.monotonic(), cpu_ticks(ph.pid)
        print(f"   STATUS, {len(up)} calls, under load ({load_avg()})", flush=True)
        res["loaded"], res["echo_loaded"] = status_rtt(sock, SAMPLES, RATE, echo)
        print(f"      {fmt(res['loaded'])}; echo peer {fmt(res['echo_loaded'])}")
        print(f"   INVITE -> 180, {len(up)} calls, under load ({load_avg()})", flush=True)
        res["probe_loaded"], problems = invite_to_180(port, PROBES)
        print(f"      median {pct(res['probe_loaded'], 50) * 1000:.2f} ms, "
              f"p90 {pct(res['probe_loaded'], 90) * 1000:.2f} ms, "
              f"max {max(res['probe_loaded'] or [float('nan')]) * 1000:.2f} ms "
              f"(n={len(res['probe_loaded'])}){'; ' + '; '.join(problems) if problems else ''}")
        t1, c1 = time.monotonic(), cpu_ticks(ph.pid)
        res["cpu"] = (c1 - c0) / CLK_TCK / (t1 - t0) * 100
        up_after = active_calls(ph)
        res["calls_after"] = len(up_after)
        out, _ = load.communicate(timeout=90)  # closes its stdin: the load ends
        load = None
        stats = json.loads(out.decode().strip().splitlines()[-1])
        print(f"   phone CPU under load: {res['cpu']:.0f} % of a core; "
              f"{len(up_after)} of {CALLS} calls active after the window")
        for name, s in stats.items():
            el = s.get("elapsed") or float("nan")
            print(f"   load {name:20s}: {s['ops']} replies in {el:.1f} s "
                  f"({s['ops'] / el:.1f}/s), {s['fails']} refused; reply p50 "
                  f"{s['p50_ms']:.2f} ms, p99 {s['p99_ms']:.2f} ms, max {s['max_ms']:.2f} ms"
                  f"{'; first error: ' + s['error'] if s.get('error') else ''}")
        res["load"] = stats
        files = list(rec_dir.glob("*.wav"))
        print(f"   recordings written: {len(files)}")
    finally:
        if load is not None:
            peers._kill_group(load, grace=3)
        try:
            ph.request("hangupall", timeout=20)
        except (OSError, AssertionError) as e:
            print(f"   hangupall: {e}")
        ph.cleanup()
        if sipp is not None:
            sipp.cleanup()
        peers.LIVE[:] = [o for o in peers.LIVE if o is kam]
    return res


def main() -> int:
    import audio
    import peers
    from peers import Kamailio

    bins = []
    if os.environ.get("MICROSIP_BIN_BEFORE"):
        bins.append(("before", os.environ["MICROSIP_BIN_BEFORE"]))
    bins.append(("after", os.environ.get("MICROSIP_BIN")
                 or str(ROOT / "target" / "release" / "microsip")))
    unknown = set(LOAD) - set(LOAD_CLIENTS)
    if unknown:
        print(f"BENCH_LOAD: no such load client {sorted(unknown)}; use {LOAD_CLIENTS}")
        return 2
    print(f"load clients: {', '.join(LOAD)}")
    print(f"{CALLS} calls; STATUS {SAMPLES} samples at {RATE:.0f}/s; {PROBES} INVITE probes; "
          f"{os.cpu_count()} CPUs; {load_avg()}")
    work = Path(tempfile.mkdtemp(prefix="bench-ctl-"))
    results = []
    echo_proc = None
    try:
        wav = audio.make_tone_wav(work / "ten-minutes.wav", 1000, WAV_SECONDS, rate=WAV_RATE)
        print(f"play file: {wav.stat().st_size / 1e6:.1f} MB, {WAV_SECONDS} s, "
              f"{WAV_RATE} Hz mono 16-bit")
        tone_ulaw = audio.make_tone_ulaw(work / "tone.ulaw", 600, 10).read_bytes()
        kam = Kamailio(work / "kamailio", users={"1001": PASSWORD, "1002": "secret2"}).start()
        echo = str(work / "echo.sock")
        echo_proc = subprocess.Popen([sys.executable, __file__, "--echo", echo],
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        peers.wait_until(lambda: Path(echo).exists(), 10, 0.05, "the echo peer")
        for label, binary in bins:
            try:
                results.append(run_binary(label, binary, work, kam, wav, tone_ulaw, echo))
            except Exception as e:  # noqa: BLE001 - report and go on
                print(f"   FAILED: {type(e).__name__}: {e}")
    finally:
        if echo_proc is not None:
            peers._kill_group(echo_proc, grace=2)
        for o in list(peers.LIVE):
            try:
                o.cleanup()
            except Exception:  # noqa: BLE001
                pass
        peers.LIVE.clear()
        shutil.rmtree(work, ignore_errors=True)

    def ms(v):
        return f"{v * 1000:.2f}"
    print("\nSTATUS round trip (ms) and INVITE -> 180 (ms), "
          f"{CALLS} calls up; loaded = record/play/volume/contacts clients running; "
          "echo = the line echo peer at the same moments")
    head = (f"{'':7} | {'no calls p50/p99':>16} | {'idle p50/p99':>13} | "
            f"{'loaded p50/p99/max':>22} | {'p99 ratio':>9} | {'echo p99 idle/loaded':>20} | "
            f"{'180 idle med/p90':>16} | {'180 loaded med/p90':>18} | calls before/after")
    print(head)
    print("-" * len(head))
    for r in results:
        if "probe_loaded" not in r:
            print(f"{r['label']:7} | (incomplete)")
            continue
        ratio = pct(r["loaded"], 99) / pct(r["idle"], 99)
        print(f"{r['label']:7} | {ms(pct(r['none'], 50)):>7}/{ms(pct(r['none'], 99)):<8} | "
              f"{ms(pct(r['idle'], 50)):>6}/{ms(pct(r['idle'], 99)):<6} | "
              f"{ms(pct(r['loaded'], 50)):>6}/{ms(pct(r['loaded'], 99)):>7}/"
              f"{ms(max(r['loaded'])):<7} | {ratio:>9.1f} | "
              f"{ms(pct(r['echo_idle'], 99)):>9}/{ms(pct(r['echo_loaded'], 99)):<10} | "
              f"{ms(pct(r['probe_idle'], 50)):>7}/{ms(pct(r['probe_idle'], 90)):<8} | "
              f"{ms(pct(r['probe_loaded'], 50)):>8}/{ms(pct(r['probe_loaded'], 90)):<9} | "
              f"{r['calls_before']}/{r.get('calls_after', '?')}")
    print(f"({load_avg()} at the end)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--echo":
        echo_main(sys.argv[2])
    if len(sys.argv) > 2 and sys.argv[1] == "--load":
        load_main(json.loads(sys.argv[2]))
        sys.exit(0)
    sys.exit(main())
