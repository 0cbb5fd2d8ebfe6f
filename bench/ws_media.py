#!/usr/bin/env python3
"""Live call audio over WebSocket (`GET /calls/{id}/media`): latency both ways,
CPU per streamed call, and BENCH_WS_CALLS (100) calls streamed at once.

SIPp (sipp/uac_rtp_call.xml, PCMU, a looped 1013 Hz tone: no two 20 ms frames in
a second alike) calls the phone, which answers by itself (autoAnswer=all, no
registrar, null audio devices, HTTP API on).

1. One call, one client at 8000 Hz (PCMU's own rate: a frame is the packet's
   payload decoded). RTP in -> WebSocket frame out: every frame is matched to the
   captured RTP packet whose payload it is (RtpTap on lo, needs root), and the
   delay from the packet's capture to the frame's arrival is taken. WebSocket
   frame in -> RTP out: the client sends one 600 Hz frame every 200 ms between
   silent ones (paced at 20 ms, replace mode); the delay from its send to the
   capture of the first loud RTP packet the phone sends after it.
2. BENCH_WS_CALLS calls: the phone's CPU (utime+stime) over BENCH_WS_WINDOW s
   without clients, then with one client per call; frames each client got over
   the window against 50 a second (lost), inter-arrival gaps over 60 ms (late),
   and clients the phone dropped (call.media stopped).

Run: MICROSIP_BIN=target/release/microsip python3 bench/ws_media.py
(BENCH_WS_PARTS=1 or 2 runs one part; BENCH_WS_CALLS, BENCH_WS_WINDOW.)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "bench"))

import audio  # noqa: E402
import peers  # noqa: E402
import rtp  # noqa: E402
from calls import cpu_ticks  # noqa: E402
from peers import Phone, Sipp, free_port, ini  # noqa: E402
from test_media_stream import Listener, frame_latencies, g711  # noqa: E402
from websockets.sync.client import connect as ws_connect  # noqa: E402

CALLS = int(os.environ.get("BENCH_WS_CALLS", "100"))
WINDOW = float(os.environ.get("BENCH_WS_WINDOW", "10"))
TONE = 1013
HZ = os.sysconf("SC_CLK_TCK")


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p / 100))] if v else float("nan")


def ms(values) -> str:
    return (f"p50 {pct(values, 50) * 1000:.1f} ms, p99 {pct(values, 99) * 1000:.1f} ms, "
            f"max {max(values) * 1000:.1f} ms (n={len(values)})") if values else "no samples"


def start_phone(work: Path) -> tuple[Phone, int, int, str]:
    sip_port, http_port = free_port("sip"), free_port("tcp")
    ph = Phone(work, ini=ini(accountId=0, sourcePort=sip_port, autoAnswer="all",
                             autoAnswerDelay=0, autoAnswerCalls="all", maxConcurrentCalls=1000,
                             audioInputDevice="null", audioOutputDevice="null",
                             audioRingDevice="null", audioCodecs="PCMU/8000/1"),
               extra_args=["--http", str(http_port)]).start()
    token = (ph.workdir / "microsip.http-token").read_text().strip()
    return ph, sip_port, http_port, token


def sipp_calls(work: Path, sip_port: int, n: int, seconds: int) -> Sipp:
    tone = audio.make_tone_ulaw(work / "tone.ulaw", TONE, 10).read_bytes()
    return Sipp(work, "uac_rtp_call.xml", calls=n, timeout_s=seconds + 120, trace=False,
                files={"tone.ulaw": tone}, remote=f"127.0.0.1:{sip_port}",
                extra=["-s", "1001", "-r", "25", "-l", str(n), "-d", str(seconds * 1000)]).start()


def active_calls(ph: Phone) -> list[int]:
    try:
        r = ph.request("calls", timeout=5)
    except (OSError, AssertionError):
        return []
    return [d["id"] for d in (r.get("data") or []) if d.get("state") == "active"]


def wait_calls(ph: Phone, n: int, timeout: float) -> list[int]:
    deadline = time.time() + timeout
    ids: list[int] = []
    while time.time() < deadline:
        ids = active_calls(ph)
        if len(ids) >= n:
            return ids
        time.sleep(0.5)
    raise SystemExit(f"only {len(ids)} of {n} calls up in {timeout:.0f}s")


def connect(http_port: int, token: str, cid: int, rate: int = 8000):
    return ws_connect(f"ws://127.0.0.1:{http_port}/calls/{cid}/media?rate={rate}",
                      additional_headers={"Authorization": f"Bearer {token}"},
                      open_timeout=30, max_queue=None)


def bench_latency(work: Path) -> None:
    print("\n1. latency, one call (PCMU, client at 8000 Hz)")
    ok, why = rtp.RtpTap.available()
    if not ok:
        print(f"   skipped: {why}")
        return
    ph, sip_port, http_port, token = start_phone(work / "lat")
    tap = rtp.RtpTap().start()
    sipp_calls(work / "lat", sip_port, 1, 40)
    cid = wait_calls(ph, 1, 30)[0]
    with connect(http_port, token, cid) as ws:
        lst = Listener(ws)
        lst.wait_frames(400, 20)
        frames = list(lst.frames)
        lat, phone_port = frame_latencies(frames, list(tap.packets))
        print(f"   RTP in -> WebSocket frame out: {ms(lat)}")
        # WebSocket frame in -> RTP out: one loud frame every 200-220 ms (a random
        # phase against the phone's 20 ms tick); in replace mode the phone sends
        # silence while nothing is queued.
        n = 160
        t = np.arange(n) / 8000
        loud = (0.5 * 32767 * np.sin(2 * np.pi * 600 * t)).astype("<i2").tobytes()
        rng = np.random.default_rng(7)
        sent = []
        for _ in range(100):
            time.sleep(0.2 + float(rng.uniform(0, 0.02)))
            sent.append(time.time())
            ws.send(loud)
        time.sleep(0.5)
    out = sorted((p.t for p in list(tap.packets)
                  if p.src == phone_port and p.pt == 0 and float(np.mean(np.abs(g711(p)))) > 0.05))
    back = []
    for ts in sent:
        after = [x for x in out if x >= ts]
        if after and after[0] - ts < 0.2:
            back.append(after[0] - ts)
    print(f"   WebSocket frame in -> RTP out: {ms(back)} ({len(back)} of {len(sent)} bursts seen)")
    tap.stop()
    ph.cleanup()


def bench_many(work: Path) -> None:
    print(f"\n2. {CALLS} calls streamed at once, CPU over {WINDOW:.0f} s")
    ph, sip_port, http_port, token = start_phone(work / "many")
    sipp_calls(work / "many", sip_port, CALLS, int(WINDOW * 2 + 120))
    ids = wait_calls(ph, CALLS, 120)
    time.sleep(2)
    c0, t0 = cpu_ticks(ph.pid), time.time()
    time.sleep(WINDOW)
    base = (cpu_ticks(ph.pid) - c0) / HZ / (time.time() - t0) * 100
    print(f"   without clients: {base:.2f} % of a core ({base / CALLS:.3f} % per call)")
    ev = ph.events()
    sockets = [connect(http_port, token, cid) for cid in ids]
    listeners = [Listener(ws) for ws in sockets]
    time.sleep(2)
    def phone_frames_out() -> int:
        r = ph.request("media", timeout=10)
        return sum(s["frames_out"] for s in (r.get("data") or {}).get("streams", []))
    marks = [len(lst.frames) for lst in listeners]
    out0 = phone_frames_out()
    c0, t0 = cpu_ticks(ph.pid), time.time()
    time.sleep(WINDOW)
    c1, t1 = cpu_ticks(ph.pid), time.time()
    out1 = phone_frames_out()
    got = [len(lst.frames) - m for lst, m in zip(listeners, marks)]
    with_clients = (c1 - c0) / HZ / (t1 - t0) * 100
    expected = (t1 - t0) * 50
    lost = sum(max(0.0, expected - g) for g in got)
    late = 0
    frames_seen = 0
    for lst in listeners:
        ts = [t for t, _ in list(lst.frames) if t0 <= t <= t1]
        frames_seen += len(ts)
        late += sum(1 for a, b in zip(ts, ts[1:]) if b - a > 0.060)
    dropped = [e for e in list(ev.items) if e.get("type") == "call.media"
               and e.get("state") == "stopped"]
    print(f"   with {len(sockets)} clients: {with_clients:.2f} % of a core; streaming costs "
          f"{(with_clients - base) / CALLS:.3f} % of a core per streamed call")
    print(f"   frames over {t1 - t0:.1f} s: {frames_seen} received of {expected * len(sockets):.0f} "
          f"expected; lost {lost:.0f} ({lost / (expected * len(sockets)) * 100:.2f} %), "
          f"late (gap > 60 ms) {late}; clients dropped by the phone: {len(dropped)}")
    print(f"   frames the phone's media thread handed to the clients meanwhile: {out1 - out0} "
          f"(a shortfall here is the calls' own playout missing ticks, not the streaming)")
    reasons: dict[str, int] = {}
    for e in dropped:
        reasons[e.get("reason", "?")] = reasons.get(e.get("reason", "?"), 0) + 1
    if reasons:
        print(f"   why: {reasons}")
    for ws in sockets:
        ws.close()
    ph.request("hangupall")
    ph.cleanup()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-ws-media-") as tmp:
        work = Path(tmp)
        try:
            parts = os.environ.get("BENCH_WS_PARTS", "12")
            if "1" in parts:
                bench_latency(work)
            if "2" in parts:
                bench_many(work)
        finally:
            for o in reversed(list(peers.LIVE)):
                try:
                    o.cleanup()
                except Exception:
                    pass


if __name__ == "__main__":
    main()
