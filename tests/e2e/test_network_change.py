"""Network changes (issue 12): the local address the phone uses goes away, comes
back or changes, and the phone registers again by itself and says so in
`account.network` events; a call of an address that is gone ends with a reason
naming the change.

Two namespaces: the test's own (`isolated_netns`, "home": the phone) and a peer
namespace (`netns.Peer`, "server": Kamailio and baresip on 10.9.0.1), joined by a
veth pair. The phone's address on its side is 10.9.0.2; the tests delete it and
add 10.9.0.3, or take the link down and up again.
"""

from __future__ import annotations

import re
import secrets
import time

import pytest

import audio
import netns
import peers
from peers import account, ini

USERS = {"1001": "p;w#1005", "1002": "secret2"}
SERVER, FIRST, SECOND = "10.9.0.1", "10.9.0.2", "10.9.0.3"


@pytest.fixture
def net(isolated_netns):
    ns = netns.Peer()
    ns.run_there("ip", "addr", "add", f"{SERVER}/24", "dev", ns.there)
    ns.run_here("ip", "addr", "add", f"{FIRST}/24", "dev", ns.here)
    yield ns
    ns.stop()


@pytest.fixture
def server(net, make_kamailio, make_baresip):
    """Kamailio (and a baresip 1002 registered there) inside the server namespace."""
    with netns.entered(net.path):
        kam = make_kamailio(users=USERS, ip=SERVER)
        bs = make_baresip(kam, "1002", tone=1000)
    return kam, bs


def wait_event(ph, type_, pred=None, timeout=30, after=0):
    ev = ph.events()

    def find():
        with ev._cond:
            items = list(ev.items)[after:]
        return next((e for e in items if e.get("type") == type_
                     and (pred is None or pred(e))), None)
    try:
        return peers.wait_until(find, timeout, 0.1, type_)
    except AssertionError as e:
        raise AssertionError(f"{e}\nevents:\n{ev._describe()}") from None


def event_count(ph) -> int:
    with ph.events()._cond:
        return len(ph.events().items)


def start_phone(make_phone, kam, tmp_path):
    src = audio.make_tone_wav(tmp_path / "src.wav", 440, 60)
    ph = make_phone(ini(account(kam.address, "1001", USERS["1001"], domain=SERVER),
                        audioInputDevice=f"file:{src}", audioOutputDevice="null",
                        autoAnswer="all", autoAnswerDelay=0))
    ph.events().wait_state(1, "registered", 30, codes={200})
    return ph


def contacts_from(kam, ip):
    return [c for c in kam.contacts("1001") if f"@{ip}:" in c["address"]]


def test_a_new_address_registers_again_and_ends_the_call_of_the_old_one(
        net, server, make_phone, tmp_path):
    kam, bs = server
    ph = start_phone(make_phone, kam, tmp_path)
    assert contacts_from(kam, FIRST), kam.contacts("1001")
    rc, out, err = ph.cmd("dial", "1002")
    assert rc == 0, (out, err)
    cid = int(out.strip())
    bs.wait_event("CALL_ESTABLISHED")
    wait_event(ph, "call.confirmed", lambda e: e.get("call") == cid)
    mark = event_count(ph)

    # The address goes away; another one comes.
    net.run_here("ip", "addr", "del", f"{FIRST}/24", "dev", net.here)
    net.run_here("ip", "addr", "add", f"{SECOND}/24", "dev", net.here)

    changed = wait_event(ph, "account.network", lambda e: e.get("state") == "changed",
                         after=mark)
    assert changed["account"] == 1 and changed["address"] == SECOND \
        and changed["previous"] == FIRST, changed
    ended = wait_event(ph, "call.ended", lambda e: e.get("call") == cid, after=mark)
    assert "network changed" in ended.get("reason", "") and FIRST in ended["reason"], ended
    registered = wait_event(ph, "account.registered", after=mark)
    assert f"@{SECOND}:" in registered["contact"], registered
    kam.wait_contacts("1001", pred=lambda c: f"@{SECOND}:" in c["address"])
    # Every REGISTER after the change left from the new address.
    regs = [m for m in ph.trace_messages() if m.sent and m.method == "REGISTER"]
    assert regs[-1].src.startswith(f"{SECOND}:"), regs[-1].src
    assert re.search(rf"(?im)^via: SIP/2\.0/UDP {re.escape(SECOND)}:", regs[-1].text)

    # A new call works from the new address: baresip hears our tone.
    bs.hangup()  # its side of the old call (our BYE could not leave a gone address)
    bs.wait_event("CALL_CLOSED")
    rc, out, err = ph.cmd("dial", "1002")
    assert rc == 0, (out, err)
    cid2 = int(out.strip())
    est = bs.wait_event("CALL_ESTABLISHED", lambda e: e["_t"] > bs.events[-1]["_t"] - 60)
    wait_event(ph, "call.confirmed", lambda e: e.get("call") == cid2)
    invite = [m for m in ph.trace_messages() if m.sent and m.method == "INVITE"][-1]
    assert f"c=IN IP4 {SECOND}" in invite.body, invite.body
    time.sleep(3)
    assert ph.cmd("hangup", str(cid2))[0] == 0
    closed = bs.wait_event("CALL_CLOSED", lambda e: e["_t"] > est["_t"])
    _, dec = bs.recordings()
    assert audio.tone_seconds(dec, 440) >= 0.8 * (closed["_t"] - est["_t"]) - 0.5, \
        audio.describe(dec, 440)


def test_the_link_drops_for_10_s_and_comes_back_the_phone_registers_again(
        net, server, make_phone, tmp_path):
    kam, _ = server
    ph = start_phone(make_phone, kam, tmp_path)
    mark = event_count(ph)
    regs_before = len([m for m in ph.trace_messages() if m.sent and m.method == "REGISTER"])

    net.run_here("ip", "link", "set", net.here, "down")
    down = wait_event(ph, "account.network", lambda e: e.get("state") == "down", after=mark)
    assert down["account"] == 1 and down["address"] is None and down["previous"] == FIRST
    time.sleep(10)
    up_mark = event_count(ph)
    net.run_here("ip", "link", "set", net.here, "up")
    up = wait_event(ph, "account.network", lambda e: e.get("state") == "up", after=up_mark)
    assert up["address"] == FIRST, up
    registered = wait_event(ph, "account.registered", after=up_mark)
    assert registered["code"] == 200 and f"@{FIRST}:" in registered["contact"], registered
    regs = [m for m in ph.trace_messages() if m.sent and m.method == "REGISTER"]
    assert len(regs) > regs_before, "no REGISTER after the link came back"
    assert contacts_from(kam, FIRST), kam.contacts("1001")
    # And a call works: Kamailio routes it to baresip, which answers.
    rc, out, err = ph.cmd("dial", "1002")
    assert rc == 0, (out, err)
    cid = int(out.strip())
    wait_event(ph, "call.confirmed", lambda e: e.get("call") == cid)
    assert ph.cmd("hangup", str(cid))[0] == 0
    wait_event(ph, "call.ended", lambda e: e.get("call") == cid)
