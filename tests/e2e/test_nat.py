"""A real NAT (issue 12): the phone in a "home" namespace behind a router namespace
doing `iptables MASQUERADE`; Kamailio, baresip and a STUN server (coturn) in the
"internet" namespace (netns.nat_world: home 10.0.1.2, router 203.0.113.11 on the
internet side, servers on 203.0.113.1; the internet has no route to 10.0.0.0/8).

With `enableSTUN=1` the phone learns the router's public address and port for its
SIP socket (Contact of REGISTER and calls) and for each call's RTP socket (SDP `c=`
and `m=`): it registers, calls baresip and is called by it, and the tones are heard
both ways. Without STUN (the control) the Contact Kamailio stores is the private
address, so a call to the phone cannot be delivered: Kamailio has no route there.
"""

from __future__ import annotations

import re
import time

import pytest

import audio
import peers
from peers import account, ini

USERS = {"1001": "p;w#1005", "1002": "secret2", "1003": "secret3"}
CALL_SECONDS = 6
TONE_US, TONE_PEER = 440, 1000


@pytest.fixture
def internet(nat_world, make_kamailio, tmp_path):
    """Kamailio and a STUN server on the internet's address; the world."""
    kam = make_kamailio(users=USERS, host=nat_world.internet_ip)
    stun = peers.StunServer(tmp_path, host=nat_world.internet_ip).start()
    return nat_world, kam, stun


def home_phone(make_phone, world, kam, tmp_path, home_index=0, user="1001",
               tone=TONE_US, extra_args=(), account_keys=None, **settings) -> peers.Phone:
    """A phone in a home (under `ip netns exec`), file audio, registered as user;
    account_keys go in its [Account1] (ICE=1...), settings in [Settings]."""
    home = world.homes[home_index]
    src = audio.make_tone_wav(tmp_path / f"phone-src-{tone}.wav", tone, 30)
    out = tmp_path / f"phone-out-{user}.wav"
    keys = dict(audioInputDevice=f"file:{src}", audioOutputDevice=f"file:{out}",
                autoAnswer="all", autoAnswerDelay=0, **settings)
    acc = account(kam.address, user, USERS[user], domain=world.internet_ip,
                  **(account_keys or {}))
    ph = make_phone(ini(acc, **keys), prefix=home.prefix, extra_args=extra_args)
    ph.events().wait_state(1, "registered", 30, codes={200})
    ph.out_path = out
    return ph


def sdp_of(msg: peers.TracedMessage) -> tuple[str, int]:
    """(c= address, m=audio port) of a traced message's SDP body."""
    c = re.search(r"^c=IN IP4 (\S+)", msg.body, re.M)
    m = re.search(r"^m=audio (\d+) ", msg.body, re.M)
    assert c and m, msg.text
    return c.group(1), int(m.group(1))


def contact_host_port(msg: peers.TracedMessage) -> str:
    contact = msg.header("Contact") or ""
    m = re.search(r"sip:[^@>;]+@([^>;]+)", contact)
    assert m, msg.text
    return m.group(1)


def wait_event(ph: peers.Phone, type_: str, timeout: float = 30, pred=None) -> dict:
    ev = ph.events()

    def find():
        with ev._cond:
            items = list(ev.items)
        return next((e for e in items if e.get("type") == type_
                     and (pred is None or pred(e))), None)
    return peers.wait_until(find, timeout, 0.05, f"{type_} from the phone")


def heard(path, freq: int, seconds: float, what: str) -> None:
    cov = audio.tone_coverage(path, freq)
    secs = audio.tone_seconds(path, freq)
    detail = f"{what}: {freq} Hz coverage {cov:.1%}, {secs:.2f}s of {seconds:.2f}s\n" \
        + audio.describe(path, freq)
    assert cov >= 0.9, detail
    assert secs >= 0.8 * seconds, detail


def stun_log(ph: peers.Phone) -> list[str]:
    return [line for line in ph.stderr_text().splitlines() if "STUN" in line]


def test_behind_nat_with_stun_registers_public_contact_and_calls_both_ways(
        internet, make_phone, make_baresip, tmp_path):
    world, kam, stun = internet
    home = world.homes[0]
    bs = make_baresip(kam, "1002", tone=TONE_PEER, host=world.internet_ip)
    ph = home_phone(make_phone, world, kam, tmp_path,
                    enableSTUN=1, STUN=f"203.0.113.9:3478;{stun.address}")

    # The Contact Kamailio stores is the router's public address and the port
    # STUN saw, not the phone's private one.
    contacts = kam.wait_contacts("1001")
    assert len(contacts) == 1, contacts
    assert f"@{home.public_ip}:" in contacts[0]["address"], contacts
    assert home.ip not in contacts[0]["address"], contacts
    regs = [m for m in ph.trace_messages() if m.sent and m.method == "REGISTER"]
    assert regs and contact_host_port(regs[0]).startswith(f"{home.public_ip}:"), regs[0].text
    # The first server of the list never answers; the second does.
    assert any("SIP socket" in line and home.public_ip in line and stun.address in line
               for line in stun_log(ph)), stun_log(ph)

    # We call baresip: the INVITE's SDP carries the public address and the port
    # STUN learned for the RTP socket; baresip hears our tone.
    rc, out, err = ph.cmd("dial", "1002")
    assert rc == 0, (out, err)
    cid = int(out.strip())
    est = bs.wait_event("CALL_ESTABLISHED")
    wait_event(ph, "call.confirmed", pred=lambda e: e.get("call") == cid)
    invite = next(m for m in ph.trace_messages() if m.sent and m.method == "INVITE"
                  and m.body)
    ip, port = sdp_of(invite)
    assert ip == home.public_ip, invite.body
    rtp_lines = [line for line in stun_log(ph) if "RTP port" in line]
    assert rtp_lines and f"{home.public_ip}:{port}" in rtp_lines[-1], (port, rtp_lines)
    assert contact_host_port(invite).startswith(f"{home.public_ip}:"), invite.text
    time.sleep(CALL_SECONDS)
    ph.cmd("hangup", str(cid))
    closed = bs.wait_event("CALL_CLOSED")
    wait_event(ph, "call.ended", pred=lambda e: e.get("call") == cid)
    _, dec = bs.recordings()
    heard(dec, TONE_US, closed["_t"] - est["_t"], "baresip heard the phone behind NAT")
    heard(ph.out_path, TONE_PEER, CALL_SECONDS, "the phone heard baresip through NAT")

    # baresip calls the phone: Kamailio reaches it at the public Contact, the
    # phone answers (autoAnswer) with the public address in its SDP.
    time.sleep(1.1)  # baresip names its recordings by the second
    ph.out_path.rename(tmp_path / "phone-out-1.wav")
    bs.dial(f"sip:1001@{world.internet_ip}")
    est2 = bs.wait_event("CALL_ESTABLISHED")
    inc = wait_event(ph, "call.incoming")
    ok200 = [m for m in ph.trace_messages() if m.sent and m.code == 200
             and "m=audio" in m.body]
    assert ok200, ph.trace_text()[-3000:]
    ip2, _ = sdp_of(ok200[-1])
    assert ip2 == home.public_ip, ok200[-1].body
    # Its Contact too: baresip's BYE must reach the phone through the router.
    assert contact_host_port(ok200[-1]).startswith(f"{home.public_ip}:"), ok200[-1].text
    time.sleep(CALL_SECONDS)
    bs.hangup()
    closed2 = bs.wait_event("CALL_CLOSED")
    wait_event(ph, "call.ended", pred=lambda e: e.get("call") == inc["call"])
    _, dec2 = bs.recordings()
    heard(dec2, TONE_US, closed2["_t"] - est2["_t"], "baresip heard the phone (incoming)")
    heard(ph.out_path, TONE_PEER, CALL_SECONDS, "the phone heard baresip (incoming)")


def test_behind_nat_without_stun_the_private_contact_is_unreachable(
        internet, make_phone, make_baresip, tmp_path):
    """The control: no STUN, no publicAddr. The phone registers (Kamailio answers
    to the Via's received/rport) but its Contact and SDP say 10.0.1.2, an address
    the internet cannot route to: baresip's call to it fails, never rings."""
    world, kam, _ = internet
    home = world.homes[0]
    bs = make_baresip(kam, "1002", tone=TONE_PEER, host=world.internet_ip)
    ph = home_phone(make_phone, world, kam, tmp_path, allowRewrite=0)
    contacts = kam.wait_contacts("1001")
    assert f"@{home.ip}:" in contacts[0]["address"], contacts
    bs.dial(f"sip:1001@{world.internet_ip}")
    closed = bs.wait_event("CALL_CLOSED")
    assert not ph.events().count("call.incoming"), ph.events()._describe()
    assert not any(m.method == "INVITE" for m in ph.trace_messages() if not m.sent)
    assert closed.get("param"), closed


def test_two_phones_behind_two_nats_hear_each_other_with_stun(
        internet, make_phone, tmp_path):
    """Phone A in home 1 (STUN from the start option `--stun`), phone B in home 2
    (STUN from the ini): each SDP names its router's public address and mapped
    port, and both hear the other's tone. MASQUERADE keeps the port STUN saw for
    the new destination, so the first packets each side sends open its router for
    the other's (the far router drops what comes before)."""
    world, kam, stun = internet
    a = home_phone(make_phone, world, kam, tmp_path, 0, "1001", TONE_US,
                   extra_args=("--stun", stun.address))
    b = home_phone(make_phone, world, kam, tmp_path, 1, "1003", TONE_PEER,
                   enableSTUN=1, STUN=stun.address)
    for ph, home, user in ((a, world.homes[0], "1001"), (b, world.homes[1], "1003")):
        contacts = kam.wait_contacts(user)
        assert f"@{home.public_ip}:" in contacts[0]["address"], contacts
    rc, out, err = a.cmd("dial", "1003")
    assert rc == 0, (out, err)
    cid = int(out.strip())
    wait_event(a, "call.confirmed", pred=lambda e: e.get("call") == cid)
    inc = wait_event(b, "call.incoming")
    invite = next(m for m in a.trace_messages() if m.sent and m.method == "INVITE" and m.body)
    assert sdp_of(invite)[0] == world.homes[0].public_ip, invite.body
    answer = [m for m in b.trace_messages() if m.sent and m.code == 200 and "m=audio" in m.body]
    assert answer and sdp_of(answer[-1])[0] == world.homes[1].public_ip, b.trace_text()[-2000:]
    assert contact_host_port(answer[-1]).startswith(f"{world.homes[1].public_ip}:"), \
        answer[-1].text
    time.sleep(CALL_SECONDS)
    a.cmd("hangup", str(cid))
    wait_event(a, "call.ended", pred=lambda e: e.get("call") == cid)
    wait_event(b, "call.ended", pred=lambda e: e.get("call") == inc["call"])
    heard(a.out_path, TONE_PEER, CALL_SECONDS, "phone A heard phone B across two NATs")
    heard(b.out_path, TONE_US, CALL_SECONDS, "phone B heard phone A across two NATs")


# -- ICE (RFC 8445) across two NATs ---------------------------------------------

ICE_CALL_SECONDS = 10
# baresip 1.0 (libre's ICE) checks its pairs one after the other, each waiting for
# the last one's answer or timeout (2.3 s), highest priority first, and sends no
# media until every pair is done; its pairs to our private host address never
# answer (and its checks to our public address come only after them, so our
# checks are dropped by its router until then). Its audio starts ~2.4 s into the
# call with one component, ~4.7 s with two (RTCP not multiplexed). The tones must
# fill the rest.
ICE_ALLOWANCE = {True: 3.5, False: 6.0}


@pytest.fixture(params=["rtcp_mux", "no_rtcp_mux"])
def ice_world(request, nat_world, make_kamailio, make_baresip, tmp_path):
    """Kamailio (with nathelper: baresip does not know it is behind a NAT, so its
    private Contact is replaced by its router's address) and coturn in the
    internet; baresip with its `ice` module (medianat=ice, coturn as STUN server)
    in home 2, with `rtcp_mux yes` (one ICE component) or baresip's default (RTCP
    on its own port: a second component, RTCP's own candidates and checks)."""
    world = nat_world
    kam = make_kamailio(users=USERS, host=world.internet_ip, nat_helper=True)
    stun = peers.StunServer(tmp_path, host=world.internet_ip).start()
    home2 = world.homes[1]
    bs = make_baresip(
        kam, "1002", tone=TONE_PEER, host=home2.ip, registrar_ip=world.internet_ip,
        prefix=home2.prefix, netns_path=f"/var/run/netns/{home2.name}",
        modules=("g711", "ice"),
        account_extra=f';medianat=ice;stunserver="stun:{stun.address}"',
        extra_config="rtcp_mux\t\tyes\n" if request.param == "rtcp_mux" else "")
    bs.rtcp_mux = request.param == "rtcp_mux"
    return world, kam, stun, bs


def ice_lines(body: str) -> dict:
    """The ICE attributes of an SDP body: ufrag, pwd, candidates (dicts)."""
    cands = []
    for m in re.finditer(r"^a=candidate:(\S+) (\d) UDP (\d+) (\S+) (\d+) typ (\w+)", body, re.M):
        cands.append(dict(component=int(m.group(2)), ip=m.group(4), port=int(m.group(5)),
                          type=m.group(6)))
    ufrag = re.search(r"^a=ice-ufrag:(\S+)", body, re.M)
    pwd = re.search(r"^a=ice-pwd:(\S+)", body, re.M)
    return dict(ufrag=ufrag and ufrag.group(1), pwd=pwd and pwd.group(1), candidates=cands)


def test_ice_across_two_nats_with_baresip_both_ways(ice_world, make_phone, tmp_path):
    """Our phone (ICE=1, coturn as STUN) in home 1, baresip with its ice module in
    home 2, both behind MASQUERADE routers that drop unsolicited packets: a call
    each way. Our SDP carries ufrag, pwd, our host and server-reflexive candidates
    (the srflx one is the router's address and the port STUN saw, and the c=
    default); the checks pass both routers (each side's checks open its router for
    the other's), the phone nominates (as caller) or accepts baresip's nomination
    (as callee), and the tones are heard both ways."""
    world, kam, stun, bs = ice_world
    home1, home2 = world.homes
    ph = home_phone(make_phone, world, kam, tmp_path, enableSTUN=1, STUN=stun.address,
                    account_keys={"ICE": 1})

    # We call baresip: we offer ICE and control.
    rc, out, err = ph.cmd("dial", "1002")
    assert rc == 0, (out, err)
    cid = int(out.strip())
    est = bs.wait_event("CALL_ESTABLISHED")
    wait_event(ph, "call.confirmed", pred=lambda e: e.get("call") == cid)
    invite = next(m for m in ph.trace_messages() if m.sent and m.method == "INVITE" and m.body)
    ours = ice_lines(invite.body)
    assert ours["ufrag"] and len(ours["pwd"]) >= 22, invite.body
    types = {c["type"]: c for c in ours["candidates"] if c["component"] == 1}
    assert types["host"]["ip"] == home1.ip, invite.body
    assert types["srflx"]["ip"] == home1.public_ip, invite.body
    assert sdp_of(invite) == (home1.public_ip, types["srflx"]["port"]), invite.body
    assert "a=rtcp-mux" in invite.body, invite.body
    # RTCP's candidates too (component 2), for a peer that does not multiplex.
    assert {(c["component"], c["type"]) for c in ours["candidates"]} == \
        {(1, "host"), (1, "srflx"), (2, "host"), (2, "srflx")}, invite.body
    answer = next(m for m in ph.trace_messages() if not m.sent and m.code == 200 and m.body)
    theirs = ice_lines(answer.body)
    assert theirs["ufrag"] and any(c["type"] == "srflx" and c["ip"] == home2.public_ip
                                   for c in theirs["candidates"]), answer.body
    assert ("a=rtcp-mux" in answer.body) == bs.rtcp_mux, answer.body
    time.sleep(ICE_CALL_SECONDS)
    ph.cmd("hangup", str(cid))
    closed = bs.wait_event("CALL_CLOSED")
    wait_event(ph, "call.ended", pred=lambda e: e.get("call") == cid)
    log = ph.stderr_text()
    assert re.search(r"ICE: nominated 203\.0\.113\.12:\d+ \(component 1\)", log), log[-3000:]
    if not bs.rtcp_mux:
        assert re.search(r"ICE: nominated 203\.0\.113\.12:\d+ \(component 2\)", log), \
            log[-3000:]
    _, dec = bs.recordings()
    heard(dec, TONE_US, closed["_t"] - est["_t"] - ICE_ALLOWANCE[bs.rtcp_mux],
          "baresip heard the phone across two NATs (ICE)")
    heard(ph.out_path, TONE_PEER, ICE_CALL_SECONDS - ICE_ALLOWANCE[bs.rtcp_mux],
          "the phone heard baresip across two NATs (ICE)")

    # baresip calls us: it offers ICE and controls; we answer with ours.
    time.sleep(1.1)  # baresip names its recordings by the second
    ph.out_path.rename(tmp_path / "phone-out-ice-1.wav")
    bs.dial(f"sip:1001@{world.internet_ip}")
    est2 = bs.wait_event("CALL_ESTABLISHED")
    inc = wait_event(ph, "call.incoming")
    ok200 = [m for m in ph.trace_messages() if m.sent and m.code == 200 and "m=audio" in m.body]
    assert ok200, ph.trace_text()[-3000:]
    ours2 = ice_lines(ok200[-1].body)
    # RTCP's candidates only when baresip's offer did not multiplex it.
    assert ours2["ufrag"] and {(c["component"], c["type"]) for c in ours2["candidates"]} == \
        {(k, t) for k in ((1,) if bs.rtcp_mux else (1, 2)) for t in ("host", "srflx")}, \
        ok200[-1].body
    assert any(c["type"] == "srflx" and c["ip"] == home1.public_ip
               for c in ours2["candidates"]), ok200[-1].body
    time.sleep(ICE_CALL_SECONDS)
    bs.hangup()
    closed2 = bs.wait_event("CALL_CLOSED")
    wait_event(ph, "call.ended", pred=lambda e: e.get("call") == inc["call"])
    log = ph.stderr_text()
    assert re.search(r"ICE: the peer nominated 203\.0\.113\.12:\d+", log), log[-3000:]
    _, dec2 = bs.recordings()
    heard(dec2, TONE_US, closed2["_t"] - est2["_t"] - ICE_ALLOWANCE[bs.rtcp_mux],
          "baresip heard the phone (incoming, ICE)")
    heard(ph.out_path, TONE_PEER, ICE_CALL_SECONDS - ICE_ALLOWANCE[bs.rtcp_mux],
          "the phone heard baresip (incoming, ICE)")


def test_two_phones_behind_two_nats_hear_each_other_with_ice(
        internet, make_phone, tmp_path):
    """Two of our phones, each behind its NAT, both with ICE=1 (the issue's "two
    phones behind two NATs get audio with ICE"): each offers or answers its host
    and server-reflexive candidates, the caller nominates, the callee accepts it,
    media goes to the selected pair, and both hear the other's tone."""
    world, kam, stun = internet
    a = home_phone(make_phone, world, kam, tmp_path, 0, "1001", TONE_US,
                   enableSTUN=1, STUN=stun.address, account_keys={"ICE": 1})
    b = home_phone(make_phone, world, kam, tmp_path, 1, "1003", TONE_PEER,
                   enableSTUN=1, STUN=stun.address, account_keys={"ICE": 1})
    rc, out, err = a.cmd("dial", "1003")
    assert rc == 0, (out, err)
    cid = int(out.strip())
    wait_event(a, "call.confirmed", pred=lambda e: e.get("call") == cid)
    inc = wait_event(b, "call.incoming")
    invite = next(m for m in a.trace_messages() if m.sent and m.method == "INVITE" and m.body)
    answer = [m for m in b.trace_messages() if m.sent and m.code == 200 and "m=audio" in m.body]
    assert answer, b.trace_text()[-2000:]
    for body, home in ((invite.body, world.homes[0]), (answer[-1].body, world.homes[1])):
        lines = ice_lines(body)
        assert lines["ufrag"] and lines["pwd"], body
        assert {(c["type"], c["ip"]) for c in lines["candidates"]} == \
            {("host", home.ip), ("srflx", home.public_ip)}, body
    time.sleep(CALL_SECONDS)
    a.cmd("hangup", str(cid))
    wait_event(a, "call.ended", pred=lambda e: e.get("call") == cid)
    wait_event(b, "call.ended", pred=lambda e: e.get("call") == inc["call"])
    assert re.search(r"ICE: nominated 203\.0\.113\.12:\d+", a.stderr_text()), a.stderr_text()[-2000:]
    assert re.search(r"ICE: the peer nominated 203\.0\.113\.11:\d+", b.stderr_text()), \
        b.stderr_text()[-2000:]
    heard(a.out_path, TONE_PEER, CALL_SECONDS, "phone A heard phone B across two NATs (ICE)")
    heard(b.out_path, TONE_US, CALL_SECONDS, "phone B heard phone A across two NATs (ICE)")


def test_an_ice_phone_calling_a_peer_without_ice_falls_back_to_plain_rtp(
        internet, make_phone, make_baresip, tmp_path):
    """ICE=1 on our phone, baresip without ICE in the internet: our offer carries
    ICE lines and a=rtcp-mux, baresip's answer neither, so no agent runs and the
    call is an ordinary one (media to the answer's c=/m=), tones both ways."""
    world, kam, stun = internet
    bs = make_baresip(kam, "1002", tone=TONE_PEER, host=world.internet_ip)
    ph = home_phone(make_phone, world, kam, tmp_path, enableSTUN=1, STUN=stun.address,
                    account_keys={"ICE": 1})
    rc, out, err = ph.cmd("dial", "1002")
    assert rc == 0, (out, err)
    cid = int(out.strip())
    est = bs.wait_event("CALL_ESTABLISHED")
    wait_event(ph, "call.confirmed", pred=lambda e: e.get("call") == cid)
    invite = next(m for m in ph.trace_messages() if m.sent and m.method == "INVITE" and m.body)
    assert ice_lines(invite.body)["candidates"], invite.body
    answer = next(m for m in ph.trace_messages() if not m.sent and m.code == 200 and m.body)
    assert not ice_lines(answer.body)["ufrag"], answer.body
    time.sleep(CALL_SECONDS)
    ph.cmd("hangup", str(cid))
    closed = bs.wait_event("CALL_CLOSED")
    wait_event(ph, "call.ended", pred=lambda e: e.get("call") == cid)
    log = ph.stderr_text()
    assert "ICE:" not in log, log[-2000:]
    assert "after the answer (no ICE)" in log, log[-2000:]
    _, dec = bs.recordings()
    heard(dec, TONE_US, closed["_t"] - est["_t"], "baresip (no ICE) heard the ICE phone")
    heard(ph.out_path, TONE_PEER, CALL_SECONDS, "the ICE phone heard baresip (no ICE)")


def test_ice_survives_hold_and_resume(internet, make_phone, tmp_path):
    """Two ICE phones behind two NATs; A holds and resumes (two re-INVITEs with
    the same ICE credentials): the agents are kept (no restart, no new checks
    needed) and the tones are heard again after the resume."""
    world, kam, stun = internet
    a = home_phone(make_phone, world, kam, tmp_path, 0, "1001", TONE_US,
                   enableSTUN=1, STUN=stun.address, account_keys={"ICE": 1})
    b = home_phone(make_phone, world, kam, tmp_path, 1, "1003", TONE_PEER,
                   enableSTUN=1, STUN=stun.address, account_keys={"ICE": 1})
    rc, out, err = a.cmd("dial", "1003")
    assert rc == 0, (out, err)
    cid = int(out.strip())
    wait_event(a, "call.confirmed", pred=lambda e: e.get("call") == cid)
    inc = wait_event(b, "call.incoming")
    time.sleep(2)
    rc, out, err = a.cmd("hold")
    assert rc == 0 and f"call {cid} held" in out, (out, err)
    time.sleep(1)
    rc, out, err = a.cmd("hold", "off")
    assert rc == 0 and f"call {cid} resumed" in out, (out, err)
    time.sleep(4)
    a.cmd("hangup", str(cid))
    wait_event(a, "call.ended", pred=lambda e: e.get("call") == cid)
    wait_event(b, "call.ended", pred=lambda e: e.get("call") == inc["call"])
    for ph in (a, b):
        log = ph.stderr_text()
        assert len(re.findall(r"ICE: \d+ local and \d+ remote candidates", log)) == 1, log[-3000:]
    reinvites = [m for m in a.trace_messages() if m.sent and m.method == "INVITE" and m.body]
    assert len(reinvites) >= 3, [m.first_line for m in reinvites]  # (the first twice: 407)
    assert len({ice_lines(m.body)["ufrag"] for m in reinvites}) == 1
    # 2 s before the hold and 4 s after the resume: at least 80 % of 6 s each way.
    for path, freq, what in ((a.out_path, TONE_PEER, "A heard B"), (b.out_path, TONE_US, "B heard A")):
        secs = audio.tone_seconds(path, freq)
        assert secs >= 0.8 * 6, f"{what}: {secs:.2f}s\n" + audio.describe(path, freq)
