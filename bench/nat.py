#!/usr/bin/env python3
"""NAT traversal numbers (issue 12). Prints numbers; asserts nothing.

In the tests' NAT world (tests/e2e/netns.py `nat_world`: the phone in a home
namespace behind an iptables MASQUERADE router; Kamailio, baresip (answermode=auto)
and coturn's STUN server in the "internet" namespace), for a phone with STUN on
and one with it off, in the same run:

- STUN round trip: the phone's own figures from its log (the SIP socket's at start,
  each call's RTP socket), p50 / max;
- start -> registered (the phone process started -> `registered` event);
- call setup: a `dial` request on the control socket -> `call.confirmed`
  (200 + ACK), over BENCH_CALLS calls (default 10), p50 / p90. With STUN on each
  call's RTP socket asks the STUN server before the INVITE goes.

ICE is not measured: it is not implemented (ICE=1 is refused with a warning).

Run as root (namespaces): MICROSIP_BIN=target/release/microsip python3 bench/nat.py
(default binary: target/release/microsip, else target/debug/microsip).
"""

from __future__ import annotations

import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

import netns  # noqa: E402
import peers  # noqa: E402
from peers import account, ini  # noqa: E402

CALLS = int(os.environ.get("BENCH_CALLS", "10"))
USERS = {"1001": "p;w#1005", "1002": "secret2"}


def pick_binary() -> None:
    if os.environ.get("MICROSIP_BIN"):
        return
    for p in (ROOT / "target/release/microsip", ROOT / "target/debug/microsip"):
        if p.exists():
            os.environ["MICROSIP_BIN"] = str(p)
            return
    sys.exit("no microsip binary: cargo build --release -p microsip")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def run_phone(tmp: Path, world, kam, stun, use_stun: bool) -> dict:
    settings = dict(audioInputDevice="null", audioOutputDevice="null")
    if use_stun:
        settings.update(enableSTUN=1, STUN=stun.address)
    acc = account(kam.address, "1001", USERS["1001"], domain=world.internet_ip)
    ph = peers.Phone(tmp / ("stun" if use_stun else "plain"), ini=ini(acc, **settings),
                     prefix=world.homes[0].prefix)
    t0 = time.monotonic()
    ph.start()
    ev = ph.events()
    ev.wait_state(1, "registered", 30, codes={200})
    registered = time.monotonic() - t0
    setups = []
    for _ in range(CALLS):
        t = time.monotonic()
        reply = ph.request("dial", "1002", timeout=20)
        if not reply.get("ok"):
            raise SystemExit(f"dial failed: {reply}")
        data = reply.get("data")
        cid = data.get("call") if isinstance(data, dict) else \
            int(data if data is not None else str(reply.get("text")).strip())
        ev.wait_for("call.confirmed", timeout=20, pred=lambda e: e.get("call") == cid)
        setups.append((time.monotonic() - t) * 1000)
        ph.request("hangup", str(cid), timeout=20)
        ev.wait_for("call.ended", timeout=20, pred=lambda e: e.get("call") == cid)
    stun_sip = [float(x) for x in re.findall(r"SIP socket .*round trip ([\d.]+) ms",
                                             ph.stderr_text())]
    stun_rtp = [float(x) for x in re.findall(r"RTP port .*round trip ([\d.]+) ms",
                                             ph.stderr_text())]
    ph.cleanup()
    return dict(registered=registered * 1000, setups=setups, stun_sip=stun_sip,
                stun_rtp=stun_rtp)


def main() -> None:
    pick_binary()
    why = netns.nat_available()
    if why:
        sys.exit(f"bench/nat.py: {why}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-nat-"))
    with netns.nat_world(homes=1) as world:
        try:
            kam = peers.Kamailio(tmp / "kam", users=USERS, host=world.internet_ip).start()
            stun = peers.StunServer(tmp, host=world.internet_ip).start()
            bs = peers.Baresip(tmp, "1002", USERS["1002"], kamailio=kam,
                               host=world.internet_ip, max_calls=4).start()
            results = {name: run_phone(tmp, world, kam, stun, on)
                       for name, on in (("without STUN", False), ("with STUN", True))}
        finally:
            for obj in sorted(peers.LIVE, key=lambda o: 0 if isinstance(o, peers.Phone) else 1):
                try:
                    obj.cleanup()
                except Exception as e:  # noqa: BLE001 - keep cleaning up
                    print(f"cleanup {type(obj).__name__}: {e}", file=sys.stderr)
            peers.LIVE.clear()
    print(f"binary: {os.environ['MICROSIP_BIN']}; {CALLS} calls each; NAT: MASQUERADE router")
    for name, r in results.items():
        s = r["setups"]
        print(f"{name:13s} start->registered {r['registered']:7.1f} ms   "
              f"dial->confirmed p50 {pct(s, .5):6.1f} ms p90 {pct(s, .9):6.1f} ms")
        if r["stun_sip"] or r["stun_rtp"]:
            print(f"{'':13s} STUN round trip: SIP socket {r['stun_sip']} ms; RTP sockets "
                  f"p50 {pct(r['stun_rtp'], .5):.2f} ms max {max(r['stun_rtp'] or [0]):.2f} ms "
                  f"({len(r['stun_rtp'])} calls)")
    del bs


if __name__ == "__main__":
    main()
