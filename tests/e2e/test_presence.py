"""Presence and message waiting against real peers.

Kamailio is the registrar and proxy: it challenges the phone's SUBSCRIBE and
PUBLISH (407, digest) and relays them, record-routed, to a SIPp scenario that
plays the presence server / voicemail server (peers.Kamailio's
presence_server). SIPp's NOTIFYs come back
through Kamailio's Record-Route to the phone.

- a contact with presence="1" -> SUBSCRIBE (Event: presence) through digest
  auth; NOTIFYs open, closed, malformed, busy -> `presence` events open, closed,
  busy in that order (nothing for the malformed one, which is still answered
  200); `contacts list` shows the last status; `unregister` unsubscribes
  (Expires: 0; exit does too, see the MWI test).
- a NOTIFY terminated;reason=deactivated -> a new subscription at once, in a new
  dialog.
- voicemailNumber set -> SUBSCRIBE (Event: message-summary) to the account's
  own AoR; `Voice-Message: 3/1` -> `mwi` new=3 old=1; a malformed summary ->
  200 and no event; a NOTIFY without Subscription-State -> 400; then waiting=no,
  also in `status` and snapshots; the refresh comes in the dialog before the
  granted 20 s run out.
- publish=1 -> PUBLISH of a PIDF "open", refreshed with SIP-If-Match and no
  body, removed (Expires: 0) on exit.
- a NOTIFY for no subscription of ours -> 481.
- Kamailio's own presence server (presence + presence_xml on db_text, cfg
  `#!ifdef WITH_PRESENCE`) with baresip publishing: the phone sees baresip open,
  then closed when baresip exits.
"""

from __future__ import annotations

import re

import pytest

from peers import account, ini, wait_until

PASSWORD = "p;w#1005"  # Kamailio's password for 1001 (conftest default users)


def contacts_xml(*contacts: tuple[str, str, int]) -> str:
    rows = "".join(f'<contact name="{n}" number="{num}" presence="{p}"/>\n'
                   for n, num, p in contacts)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<contacts>\n{rows}</contacts>\n'


def setup(make_kamailio, make_sipp, make_phone, scenario: str, contacts: str | None = None,
          timeout_s: int = 120, calls: int = 1, **acct):
    """SIPp as the presence server behind Kamailio, and the phone registered with
    its event stream running from before the registration (Kamailio starts only
    once the stream is up, so no early NOTIFY is missed)."""
    sipp = make_sipp(scenario, timeout_s=timeout_s, calls=calls)
    kamailio = make_kamailio(start=False, presence_server=f"sip:{sipp.address}")
    phone = make_phone(ini(account(kamailio.address, "1001", PASSWORD, **acct)), start=False)
    if contacts is not None:
        (phone.ini_path.parent / "Contacts.xml").write_text(contacts)
    phone.start()
    ev = phone.events()
    ev.snapshot()
    kamailio.start()
    # The REGISTER sent before Kamailio listened is retransmitted (or retried).
    ev.wait_state(1, "registered", 60, codes={200})
    return sipp, phone, ev


def kam_port(phone) -> str:
    """Kamailio's port, from the phone's first REGISTER."""
    reg = next(m for m in phone.trace_messages() if m.method == "REGISTER")
    return reg.dst.rsplit(":", 1)[1]


def traced(phone, method: str, cseq_method: str | None = None):
    return [m for m in phone.trace_messages()
            if (m.method == method if cseq_method is None
                else m.is_response and m.cseq_method == cseq_method)]


def test_presence_notifications_become_events(make_kamailio, make_sipp, make_phone):
    sipp, phone, ev = setup(make_kamailio, make_sipp, make_phone, "uas_presence.xml",
                            contacts_xml(("Alice", "2001", 1), ("Bob", "2002", 0)))
    got = [ev.wait_for("presence", None, 30) for _ in range(3)]
    assert [e["status"] for e in got] == ["open", "closed", "busy"], got
    assert all(e["number"] == "2001" and e["account"] == 1 for e in got), got
    assert got[0]["contact"] == "sip:2001@127.0.0.1", got[0]
    assert got[0]["note"] == "Ready & waiting" and got[0]["basic"] == "open", got[0]
    assert got[2]["basic"] == "open" and got[2]["activity"] == "on-the-phone", got[2]

    # The SUBSCRIBE went through Kamailio's digest challenge; only contact 2001 is
    # watched (Bob has presence="0").
    subs = traced(phone, "SUBSCRIBE")
    assert len(subs) >= 2, [m.first_line for m in phone.trace_messages()]
    assert all(s.first_line.startswith("SUBSCRIBE sip:2001@127.0.0.1 ") for s in subs[:2]), subs
    assert subs[0].header("event") == "presence", subs[0].text
    assert subs[0].header("accept") == "application/pidf+xml", subs[0].text
    assert subs[0].header("proxy-authorization") is None
    assert (subs[1].header("proxy-authorization") or "").startswith("Digest "), subs[1].text
    codes = [m.code for m in traced(phone, None, "SUBSCRIBE")]
    assert codes[:2] == [407, 200], codes
    # Every NOTIFY (the malformed one included) was answered 200.
    notify_answers = [m.code for m in traced(phone, None, "NOTIFY")]
    assert notify_answers == [200, 200, 200, 200], notify_answers

    rc, reply = phone.cmd_json("contacts", "list")
    assert rc == 0 and reply["ok"], reply
    by_number = {c["number"]: c for c in reply["data"]}
    assert by_number["2001"].get("status") == "busy", reply
    assert "status" not in by_number["2002"], reply
    text = phone.cmd("contacts", "list")[1]
    assert "2001 Alice (busy)" in text, text

    # `unregister` ends the subscriptions too (exit does, in the other tests).
    rc, out, err = phone.cmd("unregister")
    assert rc == 0, (out, err)
    assert sipp.wait(60) == 0, "SIPp saw no unsubscribe (SUBSCRIBE Expires: 0)"
    unsub = traced(phone, "SUBSCRIBE")[-1]
    assert unsub.header("expires") == "0", unsub.text
    assert unsub.to_tag and unsub.call_id == subs[1].call_id, unsub.text
    assert phone.stop() == 0
    assert ev.count("presence") == 3, ev.items


def test_deactivated_subscription_is_renewed_in_a_new_dialog(
        make_kamailio, make_sipp, make_phone):
    sipp, phone, ev = setup(make_kamailio, make_sipp, make_phone, "uas_presence_deactivated.xml",
                            contacts_xml(("Alice", "2001", 1)), calls=2)
    first = ev.wait_for("presence", None, 30)
    second = ev.wait_for("presence", None, 30)
    assert first["status"] == second["status"] == "open", (first, second)
    # A NOTIFY "terminated;reason=deactivated" -> a new SUBSCRIBE at once, in a
    # new dialog (new Call-ID, no To tag), through the digest challenge again.
    subs = [m for m in traced(phone, "SUBSCRIBE") if m.header("expires") != "0"]
    call_ids = list(dict.fromkeys(m.call_id for m in subs))
    assert len(call_ids) == 2, [m.text for m in subs]
    renewed = [m for m in subs if m.call_id == call_ids[1]]
    assert not renewed[0].to_tag and renewed[0].header("proxy-authorization") is None, renewed
    assert (renewed[1].header("proxy-authorization") or "").startswith("Digest "), renewed
    terminated = next(m for m in phone.trace_messages() if m.method == "NOTIFY"
                      and "deactivated" in (m.header("subscription-state") or ""))
    assert renewed[0].t >= terminated.t
    assert phone.stop() == 0
    assert sipp.wait(60) == 0, "SIPp failed: no renewed subscription or no unsubscribe"


def test_mwi_counts_become_events(make_kamailio, make_sipp, make_phone):
    sipp, phone, ev = setup(make_kamailio, make_sipp, make_phone, "uas_mwi.xml",
                            voicemailNumber="*97")
    first = ev.wait_for("mwi", None, 30)
    assert (first["waiting"], first["new"], first["old"]) == (True, 3, 1), first
    assert first["account"] == 1 and first["voicemail"] == "*97", first
    second = ev.wait_for("mwi", None, 30)
    assert (second["waiting"], second["new"], second["old"]) == (False, 0, 4), second
    # `status` (and snapshots) carry the last mailbox state.
    rc, reply = phone.cmd_json("status")
    [acct] = [a for a in reply["data"]["accounts"] if a["account"] == 1]
    assert acct.get("mwi") == {"waiting": False, "new": 0, "old": 4}, reply
    snap = phone.new_event_stream().snapshot()
    [acct] = [a for a in snap["accounts"] if a["account"] == 1]
    assert acct.get("mwi") == {"waiting": False, "new": 0, "old": 4}, snap

    [sub, *_] = traced(phone, "SUBSCRIBE")
    # Request-URI and To: the account's own AoR.
    assert sub.first_line.startswith("SUBSCRIBE sip:1001@127.0.0.1 "), sub.text
    assert "sip:1001@127.0.0.1" in (sub.header("to") or ""), sub.text
    assert sub.header("event") == "message-summary", sub.text
    assert sub.header("accept") == "application/simple-message-summary", sub.text
    # The malformed summary got 200 (no event); the NOTIFY without
    # Subscription-State got 400.
    answers = [m.code for m in traced(phone, None, "NOTIFY")]
    assert answers == [200, 200, 400, 200], answers

    # SIPp granted 20 s: the refresh comes in the dialog, through Kamailio's
    # Record-Route, to SIPp's Contact.
    subs = []

    def refreshed():
        subs[:] = [m for m in traced(phone, "SUBSCRIBE") if m.header("expires") != "0"]
        return len(subs) >= 3 or None

    wait_until(refreshed, 40, 0.5, "a refreshing SUBSCRIBE")
    initial, refresh = subs[1], subs[2]
    assert refresh.call_id == initial.call_id, (initial.text, refresh.text)
    assert refresh.to_tag and not initial.to_tag, refresh.text
    assert refresh.first_line.startswith("SUBSCRIBE sip:voicemail@127.0.0.1:"), refresh.text
    assert f"sip:127.0.0.1:{kam_port(phone)};lr" in (refresh.header("route") or ""), refresh.text

    assert phone.stop() == 0
    assert sipp.wait(60) == 0, "SIPp failed (see its errors: wrong answer or no unsubscribe)"
    assert ev.count("mwi") == 2, ev.items


def test_publish_open_refresh_and_removal(make_kamailio, make_sipp, make_phone):
    sipp, phone, ev = setup(make_kamailio, make_sipp, make_phone, "uas_publish.xml", publish=1)
    # The first PUBLISH was granted 20 s: the refresh comes about 10 s later.
    pubs = []

    def refreshed():
        pubs[:] = [m for m in traced(phone, "PUBLISH") if m.header("proxy-authorization")]
        return len(pubs) >= 2 or None

    wait_until(refreshed, 40, 0.5, "a refreshing PUBLISH")
    first, refresh = pubs[0], pubs[1]
    assert first.header("event") == "presence", first.text
    assert first.header("content-type") == "application/pidf+xml", first.text
    assert re.search(r"<basic>open</basic>", first.body), first.body
    assert "sip:1001@127.0.0.1" in first.body, first.body
    assert refresh.header("sip-if-match") == "e1", refresh.text
    assert refresh.body.strip() == "", refresh.text
    assert phone.stop() == 0
    assert sipp.wait(60) == 0, "SIPp failed: no removal PUBLISH or a wrong entity tag"
    last = traced(phone, "PUBLISH")[-1]
    assert last.header("expires") == "0" and last.header("sip-if-match") == "e2", last.text


def test_unknown_notify_gets_481(kamailio, make_sipp, make_phone, free_port):
    port = free_port("sip")
    phone = make_phone(ini(account(kamailio.address, "1001", PASSWORD), sourcePort=port))
    phone.events().wait_state(1, "registered", 30, codes={200})
    sipp = make_sipp("uac_notify_unknown.xml", timeout_s=30, remote=f"127.0.0.1:{port}",
                     extra=["-s", "1001"])
    assert sipp.wait() == 0, "the phone did not answer 481 to both NOTIFYs"
    assert phone.running()
    assert phone.events().count("presence") == 0


@pytest.mark.parametrize("scenario", ["uas_presence.xml", "uas_presence_deactivated.xml",
                                      "uas_mwi.xml", "uas_publish.xml"])
def test_sipp_scenarios_fail_when_nobody_subscribes(make_sipp, scenario):
    """The harness: with no SUBSCRIBE / PUBLISH at all, SIPp's global timeout ends
    the run with a non-zero code."""
    sipp = make_sipp(scenario, timeout_s=3)
    assert sipp.wait(30) != 0


def test_presence_scenario_fails_on_a_wrong_answer(make_sipp):
    """The harness: uas_presence.xml fails when its first NOTIFY is answered 481
    instead of 200 (by a SIPp subscriber)."""
    sipp = make_sipp("uas_presence.xml", timeout_s=20)
    sub = make_sipp("uac_subscribe_481.xml", timeout_s=20, remote=sipp.address)
    assert sub.wait(30) == 0, "the subscriber got no 200 or no NOTIFY"
    assert sipp.wait(40) != 0


# ------------------------------------------- Kamailio's presence server + baresip

def test_baresip_online_then_offline_through_kamailio_presence(
        make_kamailio, make_phone, make_baresip):
    """baresip PUBLISHes its presence to Kamailio's presence module; the phone,
    with baresip's number as a presence contact, SUBSCRIBEs there and sees it
    open, then closed once baresip exits and withdraws its state."""
    kamailio = make_kamailio(users={"1001": PASSWORD, "1002": "secret2"},
                             presence_module=True, start=False)
    # The phone first, its event stream up before Kamailio starts (see setup()).
    phone = make_phone(ini(account(kamailio.address, "1001", PASSWORD)), start=False)
    (phone.ini_path.parent / "Contacts.xml").write_text(contacts_xml(("baresip", "1002", 1)))
    phone.start()
    ev = phone.events()
    ev.snapshot()
    kamailio.start()
    ev.wait_state(1, "registered", 60, codes={200})
    # presence is an application module: loaded after the accounts, so its
    # publisher sees the account (pubint: PUBLISH refresh interval).
    bs = make_baresip(kamailio, "1002", account_extra=";pubint=60",
                      extra_config="module_app\t\tpresence.so\n")
    online = ev.wait_for("presence",
                         lambda e: e["number"] == "1002" and e["status"] == "open", 30)
    assert online["status"] == "open" and online["contact"] == "sip:1002@127.0.0.1", online
    bs.stop()
    offline = ev.wait_for("presence",
                          lambda e: e["number"] == "1002" and e["status"] != "open", 30)
    # Kamailio answers the withdrawal (PUBLISH Expires: 0) with a "closed" document.
    assert offline["status"] == "closed" and offline["basic"] == "closed", offline
    assert phone.stop() == 0
