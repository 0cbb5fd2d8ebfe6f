"""Registration of the phone against real peers: Kamailio (digest auth, location
table) and SIPp registrars for the edges Kamailio will not produce.

The phone is started with `--ini INI --profile P --debug TRACE --headless`
(peers.Phone); its state is read from `microsip --profile P events`
(snapshot + account.* events) and from Kamailio's location table (ul.dump).
"""

from __future__ import annotations

import re

import pytest

from peers import account, ini

PASSWORD = "p;w#1005"  # Kamailio's password for 1001 (conftest default users)


def registered(phone, account_no=1, timeout=30):
    return phone.events().wait_state(account_no, "registered", timeout, codes={200})


# ---------------------------------------------------------------- Kamailio

def test_registers_through_the_401_challenge(kamailio, make_phone):
    phone = make_phone(ini(account(kamailio.address, "1002", "secret2")))
    ev = phone.events()
    snap = ev.snapshot()
    assert isinstance(snap.get("seq"), int) and isinstance(snap.get("calls"), list)
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", snap.get("time", "")), snap
    registered(phone)

    [c] = kamailio.wait_contacts("1002")
    assert c["user_agent"].startswith("MicroSIP"), c
    assert "rsipstack" not in c["user_agent"].lower(), c
    assert "restsend" not in c["call_id"].lower(), c  # the library's Call-ID brand
    assert c["socket"] == f"udp:{kamailio.address}", c
    assert 0 < c["expires"] <= 300, c
    # Kamailio challenged first, then saved the binding.
    log = kamailio.log.read_text(errors="replace")
    assert re.search(r"REGISTER for sip:1002@127\.0\.0\.1\S* from .*: challenge", log), log[-2000:]
    assert re.search(r"REGISTER for sip:1002@127\.0\.0\.1\S* from .* saved", log), log[-2000:]

    # `register` answers after the outcome and emits a live account.registered.
    ev.mark()
    rc, out, err = phone.cmd("register")
    assert rc == 0
    e = ev.wait_for("account.registered", lambda e: e.get("account") == 1, 30)
    assert e["code"] == 200, e
    assert isinstance(e.get("expires"), int) and 0 < e["expires"] <= 300, e
    assert isinstance(e.get("contact"), str) and "127.0.0.1" in e["contact"], e
    assert isinstance(e.get("reason"), str), e
    assert isinstance(e.get("seq"), int) and e["seq"] > snap["seq"], e
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", e.get("time", "")), e


def test_password_with_semicolon_and_hash_registers(kamailio, make_phone):
    phone = make_phone(ini(account(kamailio.address, "1001", PASSWORD)))
    assert f"password={PASSWORD}\n" in phone.ini_path.read_text()
    registered(phone)
    [c] = kamailio.wait_contacts("1001")
    assert c["user_agent"].startswith("MicroSIP"), c


def test_sha256_digest_registers(make_kamailio, make_phone):
    kam = make_kamailio(algorithm="SHA-256")
    phone = make_phone(ini(account(kam.address, "1001", PASSWORD)))
    registered(phone)
    kam.wait_contacts("1001")
    assert "algorithm=SHA-256" in phone.trace_text()


def test_wrong_password_is_reported_and_phone_keeps_running(kamailio, make_phone):
    phone = make_phone(ini(account(kamailio.address, "1001", "p;w#1006")))
    rec = phone.events().wait_state(1, "failed", 60, codes={401, 403})
    assert rec["code"] in (401, 403), rec
    assert phone.running()
    rc, out, _ = phone.cmd("status")
    assert rc == 0 and out.startswith("0"), out
    assert kamailio.contacts("1001") == []


def test_kamailio_stopped_then_back(kamailio, make_phone):
    phone = make_phone(ini(account(kamailio.address, "1001", PASSWORD, registerRefresh=10)))
    ev = phone.events()
    registered(phone)
    kamailio.wait_contacts("1001")

    kamailio.stop()
    # The next refresh (within 10 s) goes unanswered: a failure with a SIP code
    # (408 after the transaction timeout, or 503).
    rec = ev.wait_state(1, "failed", 120)
    assert isinstance(rec.get("code"), int) and 400 <= rec["code"] <= 699, rec
    assert phone.running()

    kamailio.start()  # the same port, an empty location table
    ev.wait_state(1, "registered", 120, codes={200})
    [c] = kamailio.wait_contacts("1001")
    assert c["user_agent"].startswith("MicroSIP")


def test_short_expiry_refreshes(kamailio, make_phone):
    phone = make_phone(ini(account(kamailio.address, "1001", PASSWORD, registerRefresh=10)))
    ev = phone.events()
    registered(phone)
    [first] = kamailio.wait_contacts("1001")
    assert 0 < first["expires"] <= 10, first  # the phone asked for 10 s

    ev.mark()
    ev.wait_for("account.registered", lambda e: e.get("account") == 1 and e.get("code") == 200, 30)
    ev.wait_for("account.registered", lambda e: e.get("account") == 1 and e.get("code") == 200, 30)
    [later] = kamailio.wait_contacts("1001")
    assert later["cseq"] > first["cseq"], (first, later)  # Kamailio saw the refreshes
    assert later["call_id"] == first["call_id"], (first, later)  # same registration
    assert 0 < later["expires"] <= 10, later


@pytest.mark.parametrize("word", ["/exit", "exit", "Close", "QUIT"])
def test_exit_unregisters_and_ends(kamailio, make_phone, word):
    phone = make_phone(ini(account(kamailio.address, "1001", PASSWORD)))
    registered(phone)
    kamailio.wait_contacts("1001")
    rc, _, err = phone.cmd(word, check=False)
    assert rc == 0, err
    assert phone.wait_exit(30) == 0
    # The un-REGISTER was answered before the phone ended.
    assert kamailio.contacts("1001") == [], kamailio.ul_dump()
    assert re.search(r"(?i)expires:\s*0\b|;expires=0\b", phone.trace_text())


def test_tcp_registers(kamailio, make_phone):
    phone = make_phone(ini(account(kamailio.address, "1002", "secret2", transport="tcp")))
    registered(phone)
    [c] = kamailio.wait_contacts("1002")
    assert c["socket"] == f"tcp:{kamailio.address}", c
    assert "transport=tcp" in c["address"].lower(), c


def test_unregister_and_register_commands(kamailio, make_phone):
    phone = make_phone(ini(account(kamailio.address, "1001", PASSWORD)))
    ev = phone.events()
    registered(phone)
    kamailio.wait_contacts("1001")

    ev.mark()
    phone.cmd("unregister")
    # `unregister` replies after the un-REGISTER was answered.
    assert kamailio.contacts("1001") == [], kamailio.ul_dump()
    ev.wait_for("account.unregistered", lambda e: e.get("account") == 1, 30)
    assert ev.account_state(1)[0] == "unregistered"

    ev.mark()
    phone.cmd("register", "1")
    assert kamailio.contacts("1001"), kamailio.ul_dump()
    e = ev.wait_for("account.registered", lambda e: e.get("account") == 1, 30)
    assert e["code"] == 200


def test_sip_trace_has_register_401_200_and_never_the_password(kamailio, make_phone):
    phone = make_phone(ini(account(kamailio.address, "1001", PASSWORD)))
    registered(phone)
    kamailio.wait_contacts("1001")
    phone.stop()

    trace = phone.trace_text()
    lines = trace.splitlines()
    assert PASSWORD not in trace
    assert PASSWORD not in phone.stderr_text()
    assert (phone.workdir / "phone.stdout").read_text(errors="replace").find(PASSWORD) < 0

    sent_re = re.compile(r"(?i)\b(sent|send|tx|out|outgoing)\b|-->|>>>")
    recv_re = re.compile(r"(?i)\b(recv|received|receive|rx|in|incoming)\b|<--|<<<")

    def record_header(idx):
        """The line naming Kamailio's address just before (or on) a start line."""
        for j in range(idx - 1, max(-1, idx - 4), -1):
            if kamailio.address in lines[j]:
                return lines[j]
        return None

    def starts(pattern):
        return [i for i, line in enumerate(lines) if re.match(pattern, line.strip())]

    regs = starts(r"REGISTER sip:\S+ SIP/2\.0$")
    r401 = starts(r"SIP/2\.0 401\b")
    r200 = [i for i in starts(r"SIP/2\.0 200\b")
            if any("REGISTER" in lines[k] for k in range(i, min(len(lines), i + 15))
                   if lines[k].lower().startswith("cseq"))]
    assert len(regs) >= 2 and r401 and r200, trace[-3000:]
    for i in regs[:2]:
        h = record_header(i)
        assert h and sent_re.search(h), f"no sent/address line for REGISTER at {i}: {h!r}"
    for i in (r401[0], r200[0]):
        h = record_header(i)
        assert h and recv_re.search(h), f"no received/address line for response at {i}: {h!r}"
    assert regs[0] < r401[0] < regs[1] < r200[0]
    # The digest answer is in the trace (a hash, not the password).
    assert re.search(r"(?im)^authorization:\s*digest\b.*response=", trace)


# ---------------------------------------------------------------- SIPp registrars

def sipp_account(sipp, **extra):
    # keepAlive=0: no keep-alive traffic to a scenario that expects only REGISTERs.
    return account(sipp.address, "1001", "secret", keepAlive=0, **extra)


def test_423_retries_with_min_expires(make_sipp, make_phone):
    sipp = make_sipp("reg_423.xml", timeout_s=120)
    phone = make_phone(ini(sipp_account(sipp, registerRefresh=60)))
    rec = registered(phone, timeout=60)
    if "expires" in rec:
        assert rec["expires"] >= 120, rec
    assert phone.stop() == 0
    assert sipp.wait(90) == 0, "SIPp saw a retry with Expires < 120 (or no un-REGISTER flow)"
    sent = sipp.sent()
    assert sent[0].startswith("SIP/2.0 423") and sent[1].startswith("SIP/2.0 200"), sent[:2]


def test_403_is_reported(make_sipp, make_phone):
    sipp = make_sipp("reg_403.xml", timeout_s=120)
    phone = make_phone(ini(sipp_account(sipp)))
    rec = phone.events().wait_state(1, "failed", 60, codes={403})
    assert rec["code"] == 403
    rc, out, _ = phone.cmd("status")
    assert rc == 0
    phone.stop()
    assert sipp.wait(90) == 0, "more than 12 REGISTERs answered 403"


def test_401_loop_gives_up(make_sipp, make_phone):
    sipp = make_sipp("reg_401_loop.xml", timeout_s=150)
    phone = make_phone(ini(sipp_account(sipp)))
    rec = phone.events().wait_state(1, "failed", 60, codes={401})
    assert rec["code"] == 401
    # SIPp ends by itself once the phone stays quiet for 10 s; it fails if the
    # phone sent more than 16 REGISTERs before that.
    rc = sipp.wait(170)
    regs = sipp.received("REGISTER")
    assert rc == 0, f"SIPp failed after {len(regs)} REGISTERs"
    assert 2 <= len(regs) <= 16, len(regs)
    assert any(re.search(r"(?im)^authorization:\s*digest", r) for r in regs)
    assert phone.running()
    assert phone.cmd("status")[0] == 0


def test_slow_registrar(make_sipp, make_phone):
    sipp = make_sipp("reg_slow.xml", timeout_s=120)
    phone = make_phone(ini(sipp_account(sipp)))
    registered(phone, timeout=60)
    assert sipp.sent()[0].startswith("SIP/2.0 200")
    assert phone.stop() == 0
    assert sipp.wait(90) == 0
