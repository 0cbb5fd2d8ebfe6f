"""Incoming-call policy from the ini and a transfer asked by the other side, with
baresip through Kamailio: DND answers 486, callWaiting=0 refuses a second call,
immediate forwarding answers 302 naming the target, and a REFER from baresip makes
us call the target and end the first call."""

from __future__ import annotations

import pytest

from peers import account, ini, wait_until

PASSWORD = "p;w#1005"
USERS = {"1001": PASSWORD, "1002": "secret2", "1003": "secret3"}


@pytest.fixture
def kam(make_kamailio):
    return make_kamailio(users=USERS)


def phone(kam, make_phone, **settings):
    ph = make_phone(ini(account(kam.address, "1001", PASSWORD), audioInputDevice="tone:440",
                        audioOutputDevice="null", **settings))
    ph.events().wait_state(1, "registered", 30, codes={200})
    return ph


def test_dnd_answers_486(kam, make_phone, make_baresip):
    ph = phone(kam, make_phone, DND=1, autoAnswer="all")
    a = make_baresip(kam, "1002")
    a.dial("sip:1001@127.0.0.1")
    closed = a.wait_event("CALL_CLOSED")
    assert closed["param"].startswith("486"), closed
    ended = ph.events().wait_for("call.ended", None, 15)
    assert ended["code"] == 486, ended


def test_call_waiting_off_refuses_a_second_call(kam, make_phone, make_baresip):
    ph = phone(kam, make_phone, callWaiting=0, autoAnswer="all")
    a = make_baresip(kam, "1002")
    c = make_baresip(kam, "1003")
    a.dial("sip:1001@127.0.0.1")
    a.wait_event("CALL_ESTABLISHED")
    c.dial("sip:1001@127.0.0.1")
    closed = c.wait_event("CALL_CLOSED")
    assert closed["param"].startswith("486"), closed
    assert a.count("CALL_CLOSED") == 0  # the first call goes on


def test_immediate_forwarding_answers_302(kam, make_phone, make_baresip):
    ph = phone(kam, make_phone, forwarding="all", forwardingNumber="1003", forwardingDelay=0)
    c = make_baresip(kam, "1003")
    a = make_baresip(kam, "1002")
    a.dial("sip:1001@127.0.0.1")
    # baresip follows the 302 to 1003 (or reports it); either way we sent the 302.
    ended = ph.events().wait_for("call.ended", None, 15)
    assert ended["code"] == 302, ended
    # The event is emitted as the response is handed to the transaction layer; the
    # trace line is written when it leaves the socket, a moment later.
    trace = wait_until(lambda: (t := ph.trace_text()) and "SIP/2.0 302" in t and t, 5,
                       what="302 in the SIP trace")
    assert "sip:1003@127.0.0.1" in trace, trace[-3000:]
    assert "Diversion:" in trace


def test_transfer_asked_by_the_remote(kam, make_phone, make_baresip):
    ph = phone(kam, make_phone)
    a = make_baresip(kam, "1002")
    c = make_baresip(kam, "1003")
    cid = int(ph.cmd("dial", "1002")[1].strip())
    a.wait_event("CALL_ESTABLISHED")
    a.transfer("sip:1003@127.0.0.1")
    c.wait_event("CALL_ESTABLISHED", timeout=20)
    ev = ph.events()
    first_end = ev.wait_for("call.ended", lambda e: e.get("call") == cid, 20)
    assert first_end["call"] == cid
    out = [e for e in ev.items if e.get("type") == "call.outgoing"]
    assert any("1003" in e.get("remote", "") for e in out), out
