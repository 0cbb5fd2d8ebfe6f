"""Session timers (RFC 4028) against SIPp: the phone refreshes when the other side
names it the refresher (as the caller, in the 2xx; as the callee, in the INVITE),
answers an UPDATE without SDP with a 200 without SDP, refuses a Session-Expires
below its minimum with 422 and Min-SE, and sends BYE when a refresh it waits for
never comes (call.ended: "session timer expired").

The phone's minimum is lowered with the ini key sessionTimerMin (default 90, RFC
4028's floor) so that a 10 s interval keeps each test under ~15 s: a refresh is due
at half the interval (5 s), an expiry at the interval less a third (6.7 s). Times
are read from the phone's SIP trace."""

from __future__ import annotations

import re

import pytest

import peers
from test_calls import (call_phone, calls_json, dial, kam, received, sent,  # noqa: F401
                        wait_call)

INTERVAL = 10


@pytest.fixture
def timer_phone(call_phone, free_port):
    """A phone with sessionTimerMin=INTERVAL that SIPp can also call straight at
    127.0.0.1:sourcePort (auto-answer)."""
    port = free_port("sip")
    ph = call_phone(auto_answer="all", sourcePort=port, sessionTimerMin=INTERVAL)
    ph.sip_port = port
    return ph


def in_call(msgs, call_id):
    return [m for m in msgs if m.call_id == call_id]


def gap(earlier, later) -> float:
    return later.t - earlier.t


def test_we_refresh_when_the_callee_says_refresher_uac(timer_phone, make_sipp):
    """We call SIPp; its 200 says Session-Expires: 10;refresher=uac. SIPp refreshes
    once with an UPDATE without SDP (we stay the refresher): our 200 has no SDP.
    Our re-INVITE refresh follows half the interval later."""
    ph = timer_phone
    sipp = make_sipp("uas_session_timer.xml", timeout_s=40, extra=["-key", "se", str(INTERVAL)])
    cid = dial(ph, f"sip:svc@{sipp.address}")
    wait_call(ph, "call.confirmed", cid)
    [view] = [c for c in calls_json(ph) if c["id"] == cid]
    assert view["session_timer"] == {"interval": INTERVAL, "refresher": "local"}, view
    assert sipp.wait() == 0  # every check in the scenario held
    wait_call(ph, "call.ended", cid)
    call_id = sent(ph, "INVITE")[0].call_id
    assert "timer" in (sent(ph, "INVITE")[0].header("supported") or ""), sent(ph, "INVITE")[0].text
    update_ok = [m for m in in_call(sent(ph, code=200), call_id) if m.cseq_method == "UPDATE"]
    assert update_ok, "no 200 to the UPDATE"
    assert update_ok[0].body.strip() == "", update_ok[0].text
    assert (update_ok[0].header("content-type") or "") == "", update_ok[0].text
    assert re.match(rf"{INTERVAL};refresher=uas", update_ok[0].header("session-expires") or ""), \
        update_ok[0].text
    refreshes = list({m.header("cseq"): m for m in in_call(sent(ph, "INVITE"), call_id)
                      if m.to_tag}.values())
    assert len(refreshes) == 1, refreshes
    refresh = refreshes[0]
    assert re.match(rf"{INTERVAL};refresher=uac", refresh.header("session-expires") or ""), \
        refresh.text
    # Half the interval after the last refresh (the UPDATE), loosely.
    assert INTERVAL / 2 - 0.3 <= gap(update_ok[0], refresh) <= INTERVAL / 2 + 2.0, \
        (update_ok[0].when, refresh.when)
    # The refresh offers the SDP unchanged: same o= line as our first offer.
    origin = re.compile(r"(?m)^o=.*$")
    assert origin.search(refresh.body).group(0) == origin.search(
        sent(ph, "INVITE")[0].body).group(0)


def test_we_refresh_when_the_caller_asks_and_422_below_our_minimum(timer_phone, make_sipp):
    """SIPp calls us with Session-Expires: 5 (below our 10): 422 with Min-SE: 10. It
    calls again with 10;refresher=uas: our 200 says refresher=uas and Require: timer,
    and our re-INVITE refresh comes half the interval after it."""
    ph = timer_phone
    sipp = make_sipp("uac_session_timer.xml", timeout_s=40, remote=f"127.0.0.1:{ph.sip_port}",
                     extra=["-s", "1001", "-key", "se_low", "5", "-key", "se", str(INTERVAL)])
    assert sipp.wait() == 0
    [too_small] = sent(ph, code=422)[:1]
    assert (too_small.header("min-se") or "").strip() == str(INTERVAL), too_small.text
    ok = [m for m in sent(ph, code=200) if m.cseq_method == "INVITE"
          and m.header("cseq").startswith("2 ")]
    assert ok and re.match(rf"{INTERVAL};refresher=uas", ok[0].header("session-expires") or ""), ok
    assert (ok[0].header("require") or "") == "timer", ok[0].text
    refresh = [m for m in sent(ph, "INVITE") if m.call_id == ok[0].call_id]
    assert len(refresh) >= 1, "no refresh re-INVITE"
    assert INTERVAL / 2 - 0.3 <= gap(ok[0], refresh[0]) <= INTERVAL / 2 + 2.0, \
        (ok[0].when, refresh[0].when)
    ev = ph.events()
    ended = [e for e in ev.items if e.get("type") == "call.ended"]
    assert [e.get("code") for e in ended][:1] == [422], ended


def test_no_refresh_from_the_caller_ends_the_call(timer_phone, make_sipp):
    """SIPp says it refreshes (10;refresher=uac) and never does: we send BYE at the
    interval less a third, and call.ended says why."""
    ph = timer_phone
    sipp = make_sipp("uac_session_expiry.xml", timeout_s=40, remote=f"127.0.0.1:{ph.sip_port}",
                     extra=["-s", "1001", "-key", "se", str(INTERVAL)])
    assert sipp.wait() == 0  # our BYE came, answered
    [ok] = [m for m in sent(ph, code=200) if m.cseq_method == "INVITE"][:1]
    [bye] = sent(ph, "BYE")[:1]
    assert re.match(rf"{INTERVAL};refresher=uac", ok.header("session-expires") or ""), ok.text
    assert (ok.header("require") or "") == "timer", ok.text
    expected = INTERVAL - min(32, INTERVAL / 3)
    assert expected - 0.3 <= gap(ok, bye) <= expected + 2.0, (ok.when, bye.when)
    ended = peers.wait_until(
        lambda: [e for e in ph.events().items if e.get("type") == "call.ended"], 10, 0.05,
        "call.ended")[0]
    assert ended["by"] == "local" and ended["reason"] == "session timer expired", ended
    assert not received(ph, "INVITE", call_id=ok.call_id)[1:], "SIPp sent a refresh after all"
