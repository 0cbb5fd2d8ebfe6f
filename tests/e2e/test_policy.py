"""Incoming-call policy from the ini and a transfer asked by the other side, through
Kamailio with baresip (or SIPp, for the headers baresip cannot send) as the caller:
DND answers 486, callWaiting=0 and maxConcurrentCalls refuse a second call,
denyIncoming refuses a foreign caller with 403, autoAnswer=header follows
X-AUTOANSWER and Call-Info answer-after, autoAnswerDelay and autoHangUpTime keep
their time, forwarding answers 302 naming the target (at once or after a delay),
and a REFER from baresip makes us call the target and end the first call."""

from __future__ import annotations

import re
import time

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


def second_call_gets_486(kam, make_baresip):
    """baresip 1002 calls us and is answered; then 1003 calls and must get 486 while
    the first call goes on. Returns (1002, 1003)."""
    a = make_baresip(kam, "1002")
    c = make_baresip(kam, "1003")
    a.dial("sip:1001@127.0.0.1")
    a.wait_event("CALL_ESTABLISHED")
    c.dial("sip:1001@127.0.0.1")
    closed = c.wait_event("CALL_CLOSED")
    assert closed["param"].startswith("486"), closed
    assert c.count("CALL_ESTABLISHED") == 0
    assert a.count("CALL_CLOSED") == 0  # the first call goes on
    return a, c


def test_call_waiting_off_refuses_a_second_call(kam, make_phone, make_baresip):
    phone(kam, make_phone, callWaiting=0, autoAnswer="all")
    second_call_gets_486(kam, make_baresip)


def test_immediate_forwarding_answers_302(kam, make_phone, make_baresip):
    ph = phone(kam, make_phone, forwarding="all", forwardingNumber="1003", forwardingDelay=0)
    make_baresip(kam, "1003")  # where the call is forwarded
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


# ------------------------------------------------- auto-answer, deny, limits, timers
#
# Times are read from the phone's SIP trace (millisecond stamps of what it sent):
# a delay of N s is checked loosely, between N - 0.3 and N + 2.5 s.

def sent(ph, method=None, code=None):
    return [m for m in ph.trace_messages() if m.sent
            and (method is None or m.method == method)
            and (code is None or m.code == code)]


def first_sent(ph, what, method=None, code=None, cseq_method="INVITE", timeout=10):
    def find():
        ms = [m for m in sent(ph, method, code)
              if cseq_method is None or m.cseq_method == cseq_method]
        return ms[0] if ms else None
    return wait_until(find, timeout, 0.05, what)


def assert_delay(earlier, later, seconds):
    gap = later.t - earlier.t
    assert seconds - 0.3 <= gap <= seconds + 2.5, \
        f"{later.first_line} came {gap:.2f} s after {earlier.first_line}, not ~{seconds} s"


@pytest.mark.parametrize("name,value,after", [
    ("X-AUTOANSWER", "true", 0),
    ("X-AUTOANSWER", "1", 0),
    ("Call-Info", "<sip:127.0.0.1>;answer-after=1", 1),
])
def test_auto_answer_header_answers_by_itself(kam, make_phone, make_sipp, name, value, after):
    """autoAnswer=header: a caller through the proxy asks with X-AUTOANSWER (true or 1)
    or Call-Info ...;answer-after=N; nobody answers for the phone, SIPp gets the 200."""
    ph = phone(kam, make_phone, autoAnswer="header", autoAnswerDelay=0)
    sipp = make_sipp("uac_proxy_header.xml", timeout_s=30, remote=kam.address,
                     extra=["-s", "1001", "-au", "1002", "-ap", USERS["1002"],
                            "-key", "hdr_name", name, "-key", "hdr_value", value])
    assert sipp.wait() == 0  # answered within 10 s, BYE answered 200
    ringing = first_sent(ph, "180 sent", code=180)
    answer = first_sent(ph, "200 to the INVITE sent", code=200)
    if after:
        assert_delay(ringing, answer, after)
    else:
        assert answer.t - ringing.t < 1.0, (ringing.when, answer.when)
    inc = ph.events().wait_for("call.incoming", None, 5)
    assert inc["number"] == "1002", inc
    ph.events().wait_for("call.answered", lambda e: e.get("call") == inc["call"], 5)
    ended = ph.events().wait_for("call.ended", lambda e: e.get("call") == inc["call"], 10)
    assert ended["by"] == "remote", ended


def test_auto_answer_header_without_the_header_rings(kam, make_phone, make_baresip):
    """The control for the test above: autoAnswer=header, a caller that does not ask
    (baresip sends neither header) keeps ringing until the test answers."""
    ph = phone(kam, make_phone, autoAnswer="header", autoAnswerDelay=0)
    a = make_baresip(kam, "1002")
    a.dial("sip:1001@127.0.0.1")
    inc = ph.events().wait_for("call.incoming", None, 10)
    first_sent(ph, "180 sent", code=180)
    time.sleep(1.5)
    assert not sent(ph, code=200), "answered without being asked"
    assert a.count("CALL_ESTABLISHED") == 0
    rc, out, err = ph.cmd("answer", str(inc["call"]))
    assert rc == 0, (out, err)
    a.wait_event("CALL_ESTABLISHED")
    ph.cmd("hangup")
    a.wait_event("CALL_CLOSED")


def test_auto_answer_delay(kam, make_phone, make_baresip):
    ph = phone(kam, make_phone, autoAnswer="all", autoAnswerDelay=2)
    a = make_baresip(kam, "1002")
    a.dial("sip:1001@127.0.0.1")
    a.wait_event("CALL_ESTABLISHED", timeout=15)
    assert_delay(first_sent(ph, "180 sent", code=180),
                 first_sent(ph, "200 sent", code=200), 2)
    ph.cmd("hangup")
    a.wait_event("CALL_CLOSED")


def test_deny_incoming_remotedomain(kam, make_phone, make_sipp, make_baresip):
    """denyIncoming=remotedomain: a caller from another domain (SIPp, From
    sip:6666@127.0.0.9, through the proxy) sees 403 with our Reason; a caller from the
    account's domain (baresip 1002@127.0.0.1) gets through to the auto-answer."""
    ph = phone(kam, make_phone, denyIncoming="remotedomain", autoAnswer="all")
    sipp = make_sipp("uac_foreign_domain.xml", timeout_s=30, remote=kam.address,
                     extra=["-s", "1001"])
    assert sipp.wait() == 0  # the 403 came, ACKed
    [refusal] = [m for m in sipp.received() if m.startswith("SIP/2.0 403")][:1]
    assert re.search(r"(?mi)^Reason:.*cause=403", refusal), refusal
    ended = ph.events().wait_for("call.ended", None, 10)
    assert ended["code"] == 403, ended
    a = make_baresip(kam, "1002")
    a.dial("sip:1001@127.0.0.1")
    a.wait_event("CALL_ESTABLISHED", timeout=15)
    ph.cmd("hangup")
    a.wait_event("CALL_CLOSED")


def test_max_concurrent_calls_refuses_the_second_486(kam, make_phone, make_baresip):
    ph = phone(kam, make_phone, maxConcurrentCalls=1, autoAnswer="all")
    a, _ = second_call_gets_486(kam, make_baresip)
    busy = first_sent(ph, "486 sent", code=486)
    assert "Active calls limit" in (busy.header("reason") or ""), busy.text
    ph.cmd("hangup")
    a.wait_event("CALL_CLOSED")


def test_auto_hang_up_time_ends_the_call(kam, make_phone, make_baresip):
    ph = phone(kam, make_phone, autoAnswer="all", autoHangUpTime=2)
    a = make_baresip(kam, "1002")
    a.dial("sip:1001@127.0.0.1")
    a.wait_event("CALL_ESTABLISHED")
    closed = a.wait_event("CALL_CLOSED", timeout=10)
    assert a.count("CALL_CLOSED") == 1, closed
    bye = first_sent(ph, "our BYE", method="BYE", cseq_method="BYE")
    assert_delay(first_sent(ph, "200 sent", code=200), bye, 2)
    ended = ph.events().wait_for("call.ended", None, 10)
    assert ended["by"] == "local" and ended["code"] == 200, ended
    assert re.search(r"(?m)^BYE sip:1002", a.log.read_text(errors="replace")), "baresip saw no BYE"


def test_forwarding_after_a_delay(kam, make_phone, make_baresip):
    """forwarding=all with forwardingDelay=2: the call rings (180), and 2 s later is
    redirected with 302 to the forwarding number, with our Diversion."""
    ph = phone(kam, make_phone, forwarding="all", forwardingNumber="1003", forwardingDelay=2)
    make_baresip(kam, "1003")
    a = make_baresip(kam, "1002")
    a.dial("sip:1001@127.0.0.1")
    ringing = first_sent(ph, "180 sent", code=180)
    moved = first_sent(ph, "302 sent", code=302, timeout=15)
    assert_delay(ringing, moved, 2)
    assert "sip:1003@127.0.0.1" in (moved.header("contact") or ""), moved.text
    assert re.search(r"<sip:1001@127\.0\.0\.1>;reason=", moved.header("diversion") or ""), \
        moved.text
    ended = ph.events().wait_for("call.ended", None, 10)
    assert ended["code"] == 302, ended
