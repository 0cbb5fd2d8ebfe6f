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

- ICE (two homes, two NATs): the time from the answer (the 200 OK received by
  the caller, sent by the callee) to the first RTP packet sent, as each phone
  logs it ("first RTP packet to ..., N ms after the answer (ICE|no ICE)"): two
  of our phones with STUN only (RTP goes at once to the SDP address) against the
  same two with ICE=1 (RTP goes once a pair is valid), and our phone (ICE) with
  baresip's ice module in the other home (BENCH_ICE_CALLS calls each, default 5).

Run as root (namespaces): MICROSIP_BIN=target/release/microsip python3 bench/nat.py
(default binary: target/release/microsip, else target/debug/microsip).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "bench"))

import netns  # noqa: E402
import peers  # noqa: E402
from calls import cleanup_all, pick_binary  # noqa: E402
from peers import account, ini  # noqa: E402

CALLS = int(os.environ.get("BENCH_CALLS", "10"))
ICE_CALLS = int(os.environ.get("BENCH_ICE_CALLS", "5"))
USERS = {"1001": "p;w#1005", "1002": "secret2", "1003": "secret3"}
FIRST_RTP = re.compile(r"first RTP packet to \S+, (\d+) ms after the answer \((ICE|no ICE)\)")


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


def first_rtp_ms(ph: peers.Phone, ice: bool) -> list[float]:
    """The phone's logged delays from the answer to its first RTP packet."""
    return [float(ms) for ms, kind in FIRST_RTP.findall(ph.stderr_text())
            if (kind == "ICE") == ice]


def home_phone(tmp: Path, name: str, home, kam, stun, user: str, ice: bool) -> peers.Phone:
    acc = account(kam.address, user, USERS[user], domain=netns.INTERNET_IP,
                  **({"ICE": 1} if ice else {}))
    ph = peers.Phone(tmp / name, ini=ini(acc, audioInputDevice="null",
                                         audioOutputDevice="null", autoAnswer="all",
                                         autoAnswerDelay=0, enableSTUN=1,
                                         STUN=stun.address),
                     prefix=home.prefix)
    ph.start()
    ph.events().wait_state(1, "registered", 30, codes={200})
    return ph


def call_and_hang_up(caller: peers.Phone, number: str, seconds: float = 1.0) -> None:
    ev = caller.events()
    reply = caller.request("dial", number, timeout=20)
    if not reply.get("ok"):
        raise SystemExit(f"dial failed: {reply}")
    data = reply.get("data")
    cid = data.get("call") if isinstance(data, dict) else int(str(reply.get("text")).strip())
    ev.wait_for("call.confirmed", timeout=20, pred=lambda e: e.get("call") == cid)
    time.sleep(seconds)
    caller.request("hangup", str(cid), timeout=20)
    ev.wait_for("call.ended", timeout=20, pred=lambda e: e.get("call") == cid)


def ice_numbers(tmp: Path) -> dict:
    """Answer -> first RTP packet across two NATs: STUN only vs ICE, phone to
    phone, and phone (ICE) to baresip (ice module)."""
    out: dict[str, list[float]] = {}
    with netns.nat_world(homes=2) as world:
        try:
            h1, h2 = world.homes
            kam = peers.Kamailio(tmp / "kam2", users=USERS, host=world.internet_ip,
                                 nat_helper=True).start()
            stun = peers.StunServer(tmp / "stun2", host=world.internet_ip).start()
            for ice in (False, True):
                label = "ICE" if ice else "STUN only"
                a = home_phone(tmp, f"a-{label}", h1, kam, stun, "1001", ice)
                b = home_phone(tmp, f"b-{label}", h2, kam, stun, "1003", ice)
                for _ in range(ICE_CALLS):
                    call_and_hang_up(a, "1003", 2.0 if ice else 1.0)
                out[f"phone->phone {label}: caller"] = first_rtp_ms(a, ice)
                out[f"phone->phone {label}: callee"] = first_rtp_ms(b, ice)
                a.cleanup()
                b.cleanup()
            bs = peers.Baresip(
                tmp, "1002", USERS["1002"], kamailio=kam, host=h2.ip,
                registrar_ip=world.internet_ip, prefix=h2.prefix,
                netns_path=f"/var/run/netns/{h2.name}", modules=("g711", "ice"),
                account_extra=f';medianat=ice;stunserver="stun:{stun.address}"',
                extra_config="rtcp_mux\t\tyes\n").start()
            a = home_phone(tmp, "a-bs", h1, kam, stun, "1001", True)
            for _ in range(ICE_CALLS):
                call_and_hang_up(a, "1002", 4.0)
            out["phone->baresip ICE: caller"] = first_rtp_ms(a, True)
            del bs
        finally:
            cleanup_all()
    return out


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
            cleanup_all()
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
    ice = ice_numbers(tmp)
    print(f"answer -> first RTP packet sent, two homes behind two NATs ({ICE_CALLS} calls each)")
    for name, values in ice.items():
        print(f"  {name:34s} p50 {pct(values, .5):7.1f} ms  max {max(values or [float('nan')]):7.1f} ms"
              f"  ({len(values)} calls)")


if __name__ == "__main__":
    main()
