#!/usr/bin/env python3
"""Benchmarks for the integration faces (issue 5), each next to a peer measured in
the same run on the same machine. Prints numbers; asserts nothing.

1. Event latency: a raw SIP INVITE leaves a UDP socket of this script (time taken
   just before sendto) -> the `call.incoming` JSON line read by an `events` client
   connected straight to the phone's control socket. N times (BENCH_EVENTS, 50),
   one call at a time, each rejected before the next. The peer: baresip, the same
   INVITE to its SIP port -> its `CALL_INCOMING` event on its ctrl_tcp connection.
2. Hook start latency: the same INVITE -> the moment the `cmdIncomingCall` hook
   process runs: the hook is a 10-line C program compiled here that writes
   CLOCK_MONOTONIC (the clock of time.monotonic()) to a file named by its argument.
   Next to it, the same program started by this script (subprocess.Popen), the
   floor any hook runner pays for fork+exec on this machine.
3. Event throughput with 10 clients (BENCH_CLIENTS): SIPp sends BENCH_BURST
   INVITEs at BENCH_RATE/s to the phone with DND=1 (each: call.incoming then
   call.ended 486); every client counts what it got and in what order. Reported:
   events/s per client over the burst, and whether all clients saw the same
   sequence numbers. The same burst with one client, for the ratio.

Run: MICROSIP_BIN=target/release/microsip python3 bench/integrations.py
"""

from __future__ import annotations

import json
import os
import secrets
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

from peers import LOOPBACK, Baresip, Phone, Sipp, free_port, ini  # noqa: E402
from calls import cleanup_all, pick_binary  # noqa: E402

pick_binary()

N_EVENTS = int(os.environ.get("BENCH_EVENTS", "50"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "10"))
BURST = int(os.environ.get("BENCH_BURST", "1000"))
RATE = int(os.environ.get("BENCH_RATE", "200"))


def pct(values, q):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def fmt_ms(values) -> str:
    if not values:
        return "no samples"
    return (f"p50 {pct(values, 50) * 1000:.3f} ms, p99 {pct(values, 99) * 1000:.3f} ms "
            f"(n={len(values)})")


class RawUac:
    """Sends bare INVITEs (no auth) from one UDP socket and ACKs final responses."""

    def __init__(self, target_port: int):
        self.target = (LOOPBACK, target_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.port = self.sock.getsockname()[1]
        self.sdp_port = free_port("udp")

    def invite(self, user: str, caller: str = "bench") -> tuple[str, float]:
        call_id = secrets.token_hex(8) + "@" + LOOPBACK
        body = (f"v=0\r\no=- 1 1 IN IP4 {LOOPBACK}\r\ns=-\r\nc=IN IP4 {LOOPBACK}\r\nt=0 0\r\n"
                f"m=audio {self.sdp_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
                "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n")
        msg = "\r\n".join([
            f"INVITE sip:{user}@{LOOPBACK}:{self.target[1]} SIP/2.0",
            f"Via: SIP/2.0/UDP {LOOPBACK}:{self.port};branch=z9hG4bK{secrets.token_hex(8)};rport",
            "Max-Forwards: 70",
            f"From: <sip:{caller}@{LOOPBACK}>;tag={secrets.token_hex(4)}",
            f"To: <sip:{user}@{LOOPBACK}>",
            f"Call-ID: {call_id}",
            "CSeq: 1 INVITE",
            f"Contact: <sip:bench@{LOOPBACK}:{self.port}>",
            "Content-Type: application/sdp",
            f"Content-Length: {len(body)}",
            "", body])
        t = time.monotonic()
        self.sock.sendto(msg.encode(), self.target)
        return call_id, t

    def drain_and_ack(self, timeout: float = 2.0) -> None:
        """Reads responses until a final one; ACKs it (non-2xx ACK reuses the Via)."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data, _ = self.sock.recvfrom(65535)
            except OSError:
                return
            text = data.decode("utf-8", "replace")
            first = text.split("\r\n", 1)[0]
            if not first.startswith("SIP/2.0 ") or int(first.split()[1]) < 200:
                continue
            heads = {}
            for line in text.split("\r\n")[1:]:
                if not line:
                    break
                k, _, v = line.partition(":")
                heads.setdefault(k.strip().lower(), v.strip())
            ack = "\r\n".join([
                f"ACK sip:x@{LOOPBACK}:{self.target[1]} SIP/2.0",
                f"Via: {heads.get('via', '')}", "Max-Forwards: 70",
                f"From: {heads.get('from', '')}", f"To: {heads.get('to', '')}",
                f"Call-ID: {heads.get('call-id', '')}",
                f"CSeq: {heads.get('cseq', '1 INVITE').split()[0]} ACK",
                "Content-Length: 0", "", ""])
            self.sock.sendto(ack.encode(), self.target)
            return

    def close(self) -> None:
        self.sock.close()


class SocketEvents:
    """An `events` client on the phone's control socket; stamps each line on arrival."""

    def __init__(self, path: Path, read: bool = True):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.sock.sendall(b"events\n")
        self.items: list[tuple[float, dict]] = []
        self.cond = threading.Condition()
        if read:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = self.sock.recv(262144)
            except OSError:
                break
            if not chunk:
                break
            now = time.monotonic()
            buf += chunk
            *lines, buf = buf.split(b"\n")
            parsed = []
            for line in lines:
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if isinstance(ev, dict):
                    parsed.append((now, ev))
            with self.cond:
                self.items.extend(parsed)
                self.cond.notify_all()

    def wait(self, pred, timeout: float) -> tuple[float, dict] | None:
        deadline = time.monotonic() + timeout
        with self.cond:
            i = 0
            while True:
                while i < len(self.items):
                    if pred(self.items[i][1]):
                        return self.items[i]
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def count(self, type_: str) -> int:
        with self.cond:
            return sum(1 for _, e in self.items if e.get("type") == type_)

    def seqs(self) -> list[int]:
        with self.cond:
            return [e["seq"] for _, e in self.items if isinstance(e.get("seq"), int)]

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


STAMP_C = r"""
#include <stdio.h>
#include <time.h>
int main(int argc, char **argv) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (argc < 2) return 2;
    FILE *f = fopen(argv[1], "w");
    if (!f) return 1;
    fprintf(f, "%lld.%09ld\n", (long long)ts.tv_sec, ts.tv_nsec);
    return fclose(f) != 0;
}
"""


def build_stamp(work: Path) -> Path:
    src, exe = work / "stamp.c", work / "stamp"
    src.write_text(STAMP_C)
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(src)], check=True)
    return exe


def read_stamp(path: Path) -> float | None:
    for _ in range(200):
        try:
            text = path.read_text().strip()
            if text:
                return float(text)
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    return None


def event_and_hook_latency(work: Path) -> None:
    stamps = work / "stamps"
    stamps.mkdir(parents=True)
    stamp = build_stamp(work)
    port = free_port("sip")
    ph = Phone(work, ini=ini(accountId=0, sourcePort=port,
                             cmdIncomingCall=f"{stamp} {stamps}/{{callid}}")).start()
    ev = SocketEvents(ph.socket_path)
    if not ev.wait(lambda e: e.get("type") == "snapshot" or "accounts" in e, 5):
        print("  (no snapshot line; continuing)")
    uac = RawUac(port)
    event_lat, hook_lat = [], []
    for i in range(N_EVENTS):
        caller = f"bench{i}"
        call_id, t0 = uac.invite("1001", caller)
        got = ev.wait(lambda e: e.get("type") == "call.incoming"
                      and e.get("number") == caller, 5)
        if got is None:
            print(f"  no call.incoming for {call_id}")
            continue
        event_lat.append(got[0] - t0)
        cid = got[1].get("call")
        ph.request("reject", str(cid))
        uac.drain_and_ack()
        # the hook names its file after our call id
        ran = read_stamp(stamps / str(cid))
        if ran is not None:
            hook_lat.append(ran - t0)
    uac.close()
    ev.close()
    ph.stop()

    floor = []
    for i in range(N_EVENTS):
        f = stamps / f"floor-{i}"
        t0 = time.monotonic()
        subprocess.Popen([str(stamp), str(f)]).wait()
        ran = read_stamp(f)
        if ran is not None:
            floor.append(ran - t0)

    bs = Baresip(work, "1002", "secret2", register=False, outbound=False,
                 answermode="manual", sip_trace=False).start(wait_registered=False)
    uac = RawUac(bs.sip_port)
    peer_lat = []
    for _ in range(N_EVENTS):
        bs.mark()
        _, t0 = uac.invite("1002")
        try:
            e = bs.wait_event("CALL_INCOMING", None, 5)
        except AssertionError:
            print("  baresip: no CALL_INCOMING")
            continue
        peer_lat.append(e["_t"] - t0)
        bs.hangup()
        uac.drain_and_ack()
        time.sleep(0.05)
    uac.close()
    bs.cleanup()

    print("1. event latency, INVITE sent -> JSON line at a client")
    print(f"   microsip call.incoming (control socket): {fmt_ms(event_lat)}")
    print(f"   baresip CALL_INCOMING (ctrl_tcp):        {fmt_ms(peer_lat)}")
    if event_lat and peer_lat:
        print(f"   ratio p50 microsip/baresip: {pct(event_lat, 50) / pct(peer_lat, 50):.2f}")
    print("2. hook start latency, INVITE sent -> hook process ran (file mtime)")
    print(f"   cmdIncomingCall (C stamp program):       {fmt_ms(hook_lat)}")
    print(f"   floor: Popen(same program) from Python:  {fmt_ms(floor)}")


def throughput(work: Path, clients: int) -> None:
    port = free_port("sip")
    ph = Phone(work, ini=ini(accountId=0, sourcePort=port, DND=1)).start()
    streams = [SocketEvents(ph.socket_path) for _ in range(clients)]
    time.sleep(0.3)
    marks = [len(s.items) for s in streams]
    t0 = time.monotonic()
    sipp = Sipp(work, builtin="uac", remote=f"{LOOPBACK}:{port}", calls=BURST,
                timeout_s=120, trace=False,
                extra=["-s", "1001", "-r", str(RATE), "-l", "400"]).start()
    try:
        sipp.wait(120)
    except AssertionError:
        sipp.stop()
    want = 2 * BURST
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if all(s.count("call.ended") >= BURST for s in streams):
            break
        time.sleep(0.05)
    last = [s.items[-1][0] if s.items else t0 for s in streams]
    got = [len(s.items) - m for s, m in zip(streams, marks)]
    rates = [g / max(1e-9, t - t0) for g, t in zip(got, last)]
    ref = streams[0].seqs()
    same = all(s.seqs() == ref for s in streams[1:])
    print(f"   {clients:2d} client(s): {min(got)}-{max(got)} of ~{want} events each, "
          f"median {pct(rates, 50):.0f} events/s per client (aggregate "
          f"{sum(rates):.0f}/s); same order at every client: {same}")
    for s in streams:
        s.close()
    ph.stop()


def main() -> None:
    print(f"binary: {os.environ.get('MICROSIP_BIN')}")
    with tempfile.TemporaryDirectory(prefix="bench-int-") as tmp:
        work = Path(tmp)
        try:
            event_and_hook_latency(work / "lat")
            print(f"3. events throughput: {BURST} INVITEs at {RATE}/s rejected by DND "
                  "(2 events each)")
            throughput(work / "one", 1)
            throughput(work / "ten", CLIENTS)
        finally:
            cleanup_all()


if __name__ == "__main__":
    main()
