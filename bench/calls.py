#!/usr/bin/env python3
"""Benchmarks for calls (issue 3), each next to a peer measured in the same run
on the same machine. Prints numbers; asserts nothing (shared, noisy machines).

1. Call setup added by the phone, p50 (and p90) over N calls (BENCH_CALLS, 20):
   - outgoing: the `dial` command's start -> the INVITE on the wire (the first
     INVITE of the new Call-ID in the phone's --debug trace), for `microsip dial`
     as a process and for a `dial` request on the control socket; the callee is
     SIPp's built-in UAS, reached directly;
   - incoming: INVITE in -> 200 out with autoAnswer=all, both from the phone's
     trace; and INVITE -> 200 as SIPp's UAC sees it (its ResponseTime1) for the
     phone, baresip (answermode=auto) and SIPp's own UAS.
2. Calls per second answered under a bounded SIPp load: `sipp -sn uac` at
   offered rates (BENCH_RATES, "50,100,200,400"), 1 s calls, RATE x 5 calls
   each (-m), at most RATE x 3 at once (-l); the same load against SIPp's own
   UAS (-sn uas) in the same run. answered/s = successful calls / (elapsed - 1 s).
   The phone runs with audio devices `null` here (signalling capacity).
3. CPU and RSS per call with 50 (BENCH_CONCURRENT) concurrent G.711 calls with
   file audio both ways: SIPp (sipp/uac_rtp_call.xml) calls the phone and
   streams a PCMU tone into every call; the phone plays a WAV file into every
   call (audioInputDevice=file:..., output null). Once every call is up, the
   process's utime+stime (/proc/PID/stat) is sampled over 20 s (BENCH_WINDOW)
   and RSS before the calls, with half of them up and with all of them up. The
   calls come from two SIPp runs (half each), so the second half's RSS is the
   marginal cost of a call: the first call also faults in code (file-backed
   text pages, shared with every process running the binary) and grows the
   heap once, which the "all / idle" figure spreads over the calls. The same
   50 calls against baresip (answermode=auto, aufile source, aubridge player).
   Per call: CPU % of one core / calls; (RSS all - RSS idle) / calls; marginal
   (RSS all - RSS half) / (calls in the second half), and its anonymous part.

Run: MICROSIP_BIN=target/release/microsip python3 bench/calls.py
(default binary: target/release/microsip, else target/debug/microsip;
BENCH_ONLY=setup,load,concurrent picks measures).
"""

from __future__ import annotations

import csv
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

import audio  # noqa: E402
import peers  # noqa: E402
from peers import Baresip, Kamailio, Phone, Sipp, account, free_port, ini  # noqa: E402



def pick_binary() -> None:
    """Sets MICROSIP_BIN, unless set, to the release build, else the debug build.
    Every bench script that imports this module gets it at import."""
    if "MICROSIP_BIN" not in os.environ:
        for cand in ("release", "debug"):
            if (ROOT / "target" / cand / "microsip").exists():
                os.environ["MICROSIP_BIN"] = str(ROOT / "target" / cand / "microsip")
                break


pick_binary()

N_CALLS = int(os.environ.get("BENCH_CALLS", "20"))
RATES = [int(r) for r in os.environ.get("BENCH_RATES", "50,100,200,400").split(",")]
CONCURRENT = int(os.environ.get("BENCH_CONCURRENT", "50"))
WINDOW = float(os.environ.get("BENCH_WINDOW", "20"))
CLK_TCK = os.sysconf("SC_CLK_TCK")
PASSWORD = "p;w#1005"


# ---------------------------------------------------------------- helpers

def pct(values, q):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def fmt_ms(values) -> str:
    if not values:
        return "no samples"
    return (f"p50 {pct(values, 50) * 1000:.2f} ms, p90 {pct(values, 90) * 1000:.2f} ms "
            f"(n={len(values)})")


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15)


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    """A memory figure in KB from /proc/PID/status (VmRSS, RssAnon, RssFile)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def memory(pid: int) -> tuple[int, int]:
    """(RSS, anonymous RSS) in KB."""
    return rss_kb(pid), rss_kb(pid, "RssAnon")


def sipp_stats(s: Sipp) -> dict:
    """The last row of SIPp's -trace_stat CSV."""
    path = s.workdir / "stats.csv"
    try:
        rows = list(csv.reader(path.read_text().splitlines(), delimiter=";"))
    except OSError:
        return {}
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1]))


def hms_seconds(text: str) -> float:
    """SIPp's ElapsedTime 'HH:MM:SS:mmm' (or HH:MM:SS) -> seconds."""
    parts = text.strip().split(":")
    h, m, sec = int(parts[0]), int(parts[1]), int(parts[2])
    ms = int(parts[3]) if len(parts) > 3 else 0
    return h * 3600 + m * 60 + sec + ms / 1000


def rtd_ms(text: str) -> float:
    """SIPp's ResponseTime1(C) 'HH:MM:SS:mmm[uuu]' -> milliseconds."""
    parts = text.strip().split(":")
    if len(parts) < 4:
        return float("nan")
    h, m, sec = int(parts[0]), int(parts[1]), int(parts[2])
    frac = parts[3]
    ms = int(frac[:3]) + (int(frac[3:6]) / 1000 if len(frac) >= 6 else 0)
    return (h * 3600 + m * 60 + sec) * 1000 + ms


def stat_args() -> list[str]:
    return ["-trace_stat", "-stf", "stats.csv", "-fd", "1"]


def wait_exit(s: Sipp, timeout: float) -> int | None:
    try:
        return s.wait(timeout)
    except AssertionError:
        s.stop()
        return None


def cleanup_all() -> None:
    order = sorted(peers.LIVE, key=lambda o: 0 if isinstance(o, Phone)
                   else 1 if isinstance(o, Baresip) else 2)
    for o in order:
        try:
            o.cleanup()
        except Exception as e:  # noqa: BLE001 - keep cleaning up
            print(f"  (cleanup {type(o).__name__}: {e})")
    peers.LIVE.clear()


def new_phone(work: Path, kam: Kamailio | None, **settings) -> Phone:
    accounts = [account(kam.address, "1001", PASSWORD)] if kam else []
    keys = dict(autoAnswer="all", autoAnswerDelay=0, **settings)
    if not kam:
        keys["accountId"] = 0
    ph = Phone(work, ini=ini(*accounts, **keys)).start()
    if kam:
        ph.events().wait_state(1, "registered", 30, codes={200})
    return ph


def first_invites(ph: Phone) -> dict[str, float]:
    """{Call-ID: time of the first SENT INVITE} from the trace."""
    out: dict[str, float] = {}
    for m in ph.trace_messages():
        if m.sent and m.method == "INVITE" and not m.to_tag and m.call_id not in out:
            out[m.call_id] = m.t
    return out


# ---------------------------------------------------------------- 1. setup time

def bench_outgoing_setup(work: Path, kam: Kamailio) -> None:
    print(f"\n1a. outgoing call setup: command -> INVITE on the wire ({N_CALLS} calls each)")
    # Not the built-in uas: through Kamailio its BYE answer would go astray.
    uas = Sipp(work, "uas_answer.xml", calls=10 * N_CALLS, timeout_s=600, trace=False).start()
    ph = new_phone(work, kam, audioInputDevice="null", audioOutputDevice="null")
    ev = ph.events()
    results = {"process (`microsip dial`)": [], "socket request (dial)": []}
    for how, delays in results.items():
        for _ in range(N_CALLS):
            known = set(first_invites(ph))
            t0 = time.time()
            if how.startswith("process"):
                rc, out, err = ph.cmd("dial", f"sip:svc@{uas.address}", check=False)
                ok = rc == 0
                cid = int(out.strip()) if ok and out.strip().isdigit() else None
            else:
                r = ph.request("dial", f"sip:svc@{uas.address}")
                ok = bool(r.get("ok"))
                data = r.get("data")
                cid = data.get("call") if isinstance(data, dict) else None
                if cid is None and str(r.get("text", "")).strip().isdigit():
                    cid = int(str(r["text"]).strip())
            if not ok:
                print(f"   dial failed: {out if how.startswith('process') else r}")
                continue
            new = {k: v for k, v in first_invites(ph).items() if k not in known}
            if new:
                delays.append(min(new.values()) - t0)
            try:
                ev.wait_for("call.confirmed", lambda e: e.get("call") == cid, timeout=10)
            except AssertionError:
                pass
            ph.request("hangup", str(cid)) if cid else ph.request("hangupall")
            try:
                ev.wait_for("call.ended", lambda e: e.get("call") == cid, timeout=10)
            except AssertionError:
                pass
        print(f"   {how:30s} {fmt_ms(delays)}")
    print("   (trace timestamps have 1 us resolution; the process figure includes "
          "starting the client process)")
    ph.cleanup()
    uas.cleanup()


def bench_incoming_setup(work: Path) -> None:
    print(f"\n1b. incoming call setup with auto-answer: INVITE in -> 200 out ({N_CALLS} calls)")
    sipp_rtd = {}
    # The phone.
    port = free_port("sip")
    ph = new_phone(work, None, sourcePort=port, audioInputDevice="null",
                   audioOutputDevice="null")
    uac = Sipp(work, builtin="uac", calls=N_CALLS, timeout_s=120, trace=False,
               remote=f"127.0.0.1:{port}",
               extra=["-s", "1001", "-r", "5", "-d", "200", "-l", "1", *stat_args()]).start()
    wait_exit(uac, 120)
    invite_in: dict[str, float] = {}
    ok_out: dict[str, float] = {}
    for m in ph.trace_messages():
        if not m.sent and m.method == "INVITE" and not m.to_tag:
            invite_in.setdefault(m.call_id, m.t)
        if m.sent and m.code == 200 and m.cseq_method == "INVITE":
            ok_out.setdefault(m.call_id, m.t)
    delays = [ok_out[c] - t for c, t in invite_in.items() if c in ok_out]
    print(f"   phone, from its trace:          {fmt_ms(delays)}")
    st = sipp_stats(uac)
    sipp_rtd["microsip"] = (st.get("ResponseTime1(C)", ""), st.get("SuccessfulCall(C)", "?"))
    ph.cleanup()
    uac.cleanup()
    # baresip.
    b = Baresip(work, "1002", "x", register=False, outbound=False, tone=0,
                source_seconds=60, sip_trace=False).start()
    uac = Sipp(work, builtin="uac", calls=N_CALLS, timeout_s=120, trace=False,
               remote=f"127.0.0.1:{b.sip_port}",
               extra=["-s", "1002", "-r", "5", "-d", "200", "-l", "1", *stat_args()]).start()
    wait_exit(uac, 120)
    st = sipp_stats(uac)
    sipp_rtd["baresip"] = (st.get("ResponseTime1(C)", ""), st.get("SuccessfulCall(C)", "?"))
    b.cleanup()
    uac.cleanup()
    # SIPp's own UAS.
    uas = Sipp(work, builtin="uas", calls=N_CALLS, timeout_s=120, trace=False).start()
    uac = Sipp(work, builtin="uac", calls=N_CALLS, timeout_s=120, trace=False,
               remote=uas.address,
               extra=["-s", "1001", "-r", "5", "-d", "200", "-l", "1", *stat_args()]).start()
    wait_exit(uac, 120)
    st = sipp_stats(uac)
    sipp_rtd["sipp uas"] = (st.get("ResponseTime1(C)", ""), st.get("SuccessfulCall(C)", "?"))
    uas.cleanup()
    uac.cleanup()
    for who, (rt, n) in sipp_rtd.items():
        val = rtd_ms(rt) if rt else float("nan")
        print(f"   INVITE -> 200 seen by SIPp UAC, {who:9s}: mean {val:.3f} ms ({n} calls)")


# ---------------------------------------------------------------- 2. load

def run_load(work: Path, target: str, rate: int, service: str) -> tuple[int, int, float]:
    n = rate * 5
    uac = Sipp(work, builtin="uac", calls=n, timeout_s=90, trace=False, remote=target,
               extra=["-s", service, "-r", str(rate), "-l", str(rate * 3), "-d", "1000",
                      "-recv_timeout", "10000", *stat_args()]).start()
    wait_exit(uac, 150)
    st = sipp_stats(uac)
    uac.cleanup()
    ok = int(st.get("SuccessfulCall(C)", "0") or 0)
    failed = int(st.get("FailedCall(C)", "0") or 0)
    elapsed = hms_seconds(st["ElapsedTime(C)"]) if st.get("ElapsedTime(C)") else float("nan")
    return ok, failed, elapsed


def bench_load(work: Path) -> None:
    print("\n2. calls per second answered under SIPp load (1 s calls, RATE x 5 calls, "
          "-l RATE x 3)")
    print(f"   {'offered/s':>9} | {'microsip ok/failed':>18} {'answered/s':>10} | "
          f"{'sipp uas ok/failed':>18} {'answered/s':>10} | ratio")
    for rate in RATES:
        # A fresh phone for each rate: an overload at one rate does not weigh on
        # the next.
        port = free_port("sip")
        ph = new_phone(work, None, sourcePort=port, audioInputDevice="null",
                       audioOutputDevice="null", maxConcurrentCalls=10000,
                       autoAnswerCalls="all")
        ok, failed, el = run_load(work, f"127.0.0.1:{port}", rate, "1001")
        try:
            alive = ph.running() and bool(ph.request("STATUS").get("ok"))
        except (OSError, AssertionError):
            alive = False
        ph.cleanup()
        a_ps = ok / max(el - 1.0, 0.001)
        uas = Sipp(work, builtin="uas", calls=rate * 5, timeout_s=90, trace=False).start()
        ok2, failed2, el2 = run_load(work, uas.address, rate, "1001")
        uas.cleanup()
        b_ps = ok2 / max(el2 - 1.0, 0.001)
        print(f"   {rate:>9} | {ok:>8}/{failed:<9} {a_ps:>10.1f} | {ok2:>8}/{failed2:<9} "
              f"{b_ps:>10.1f} | {a_ps / b_ps if b_ps else float('nan'):.0%}"
              f"{'' if alive else '  (the phone no longer answered STATUS)'}")
        time.sleep(2)


# ---------------------------------------------------------------- 3. CPU and RSS per call

def wait_calls(calls_up, want: int, label: str) -> int:
    # Asked once the calls should be up (SIPp places 25 a second), then every
    # second: a question to the process while its calls come up costs it memory
    # of its own (the reply's buffers between the calls' allocations).
    time.sleep(want / 25 + 2)
    deadline = time.monotonic() + 60
    up = 0
    while time.monotonic() < deadline:
        up = calls_up()
        if up >= want:
            break
        time.sleep(1)
    if up < want:
        print(f"   {label}: only {up} of {want} calls came up")
    time.sleep(2)  # settle
    return up


def cpu_percent(pid: int) -> float:
    """The process's CPU over WINDOW seconds, in % of one core."""
    t0, c0 = time.monotonic(), cpu_ticks(pid)
    time.sleep(WINDOW)
    t1, c1 = time.monotonic(), cpu_ticks(pid)
    return (c1 - c0) / CLK_TCK / (t1 - t0) * 100


def measure_process(pid: int, calls_up, label: str, idle_rss: int) -> None:
    """Once CONCURRENT calls are up (started by the caller): CPU over WINDOW and RSS
    per call against the idle RSS (bench/codec_calls.py)."""
    up = wait_calls(calls_up, CONCURRENT, label)
    cpu_pct = cpu_percent(pid)
    rss = rss_kb(pid)
    n = max(up, 1)
    print(f"   {label:9s}: {up} calls; CPU {cpu_pct:.2f} % of a core = {cpu_pct / n:.3f} % "
          f"per call; RSS {idle_rss} KB idle -> {rss} KB = {(rss - idle_rss) / n:.1f} KB "
          f"per call")


def measure_concurrent(pid: int, calls_up, label: str, start_calls) -> None:
    """Idle memory, the first half of the calls, memory, the second half, then CPU
    over WINDOW and memory with all of them up."""
    idle, idle_anon = memory(pid)
    half = CONCURRENT // 2
    start_calls(half)
    up_half = wait_calls(calls_up, half, label)
    rss_half, anon_half = memory(pid)
    start_calls(CONCURRENT - half)
    up = wait_calls(calls_up, CONCURRENT, label)
    cpu_pct = cpu_percent(pid)
    rss, anon = memory(pid)
    n = max(up, 1)
    second = max(up - up_half, 1)
    print(f"   {label:9s}: {up} calls; CPU {cpu_pct:.2f} % of a core = {cpu_pct / n:.3f} % "
          f"per call; RSS {idle} KB idle -> {rss_half} KB ({up_half} calls) -> {rss} KB; "
          f"per call: {(rss - idle) / n:.1f} KB all/idle, marginal {(rss - rss_half) / second:.1f} KB "
          f"(anonymous {(anon - anon_half) / second:.1f} KB; idle anon {idle_anon} KB)")


def bench_concurrent(work: Path) -> None:
    print(f"\n3. {CONCURRENT} concurrent G.711 calls with file audio, "
          f"CPU over {WINDOW:.0f} s and RSS")
    call_ms = int((WINDOW + 60) * 1000)
    tone_ulaw = audio.make_tone_ulaw(work / "tone.ulaw", 1000, 10).read_bytes()
    src = audio.make_tone_wav(work / "src440.wav", 440, 20)

    def caller(port: int, user: str):
        """Starts a SIPp UAC placing `n` calls to 127.0.0.1:port (one run per half)."""
        def start(n: int) -> None:
            Sipp(work, "uac_rtp_call.xml", calls=n, timeout_s=int(call_ms / 1000) + 60,
                 trace=False, files={"tone.ulaw": tone_ulaw}, remote=f"127.0.0.1:{port}",
                 extra=["-s", user, "-r", "25", "-l", str(n), "-d", str(call_ms)]).start()
        return start

    # The phone.
    port = free_port("sip")
    ph = new_phone(work, None, sourcePort=port, audioInputDevice=f"file:{src}",
                   audioOutputDevice="null", maxConcurrentCalls=1000,
                   autoAnswerCalls="all")
    time.sleep(1)

    def phone_calls_up():
        try:
            r = ph.request("calls", timeout=5)
            return sum(1 for d in (r.get("data") or []) if d.get("state") == "active")
        except (OSError, AssertionError):
            return 0
    measure_concurrent(ph.pid, phone_calls_up, "microsip", caller(port, "1001"))
    ph.request("hangupall")
    ph.cleanup()
    for o in [o for o in peers.LIVE if isinstance(o, Sipp)]:
        o.cleanup()
    # baresip.
    b = Baresip(work, "1002", "x", register=False, outbound=False, source=src, sip_trace=False,
                max_calls=CONCURRENT + 10).start()
    time.sleep(1)

    def baresip_calls_up():
        return b.count("CALL_ESTABLISHED") - b.count("CALL_CLOSED")
    measure_concurrent(b.proc.pid, baresip_calls_up, "baresip", caller(b.sip_port, "1002"))
    b.cleanup()
    for o in [o for o in peers.LIVE if isinstance(o, Sipp)]:
        o.cleanup()


def main() -> int:
    print(f"microsip: {os.environ.get('MICROSIP_BIN')}; {os.cpu_count()} CPUs")
    work = Path(tempfile.mkdtemp(prefix="bench-calls-"))
    try:
        kam = Kamailio(work / "kamailio", users={"1001": PASSWORD, "1002": "secret2"}).start()
        steps = {"setup": lambda: (bench_outgoing_setup(work, kam), bench_incoming_setup(work)),
                 "load": lambda: bench_load(work), "concurrent": lambda: bench_concurrent(work)}
        only = [w for w in os.environ.get("BENCH_ONLY", "").split(",") if w]
        for name, step in steps.items():
            if only and name not in only:
                continue
            try:
                step()
            except Exception as e:  # noqa: BLE001 - report and go on to the next measure
                print(f"   FAILED: {type(e).__name__}: {e}")
            finally:
                # Everything but Kamailio ends between measures.
                for o in [o for o in peers.LIVE if o is not kam]:
                    try:
                        o.cleanup()
                    except Exception:  # noqa: BLE001
                        pass
                peers.LIVE[:] = [kam]
    finally:
        cleanup_all()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
