"""Attended transfer (REFER with Replaces, RFC 3891 / RFC 5589 §7) in both roles,
an INVITE with Replaces taking one of our calls' place, and `redial` / `callback`.

The phone under test (A, user 1001) plays 440 Hz; a second phone of ours is 1004
(600 Hz) and, for the all-ours flow, a third is 1005 (800 Hz); baresip is 1002
(1000 Hz) or 1003 (700 Hz). baresip 1.0 knows nothing of Replaces: as a transfer
target it takes the INVITE with Replaces as a new call, which RFC 3891 allows a UA
without the extension to do; the transferor then ends its own call to it.
SIPp plays the peers that send what baresip cannot: a REFER whose Refer-To carries
Replaces, and INVITEs with Replaces (tests/e2e/sipp/uac_replaces*.xml).
"""

from __future__ import annotations

import re
import secrets
import socket
import time

import pytest

import audio
import peers
from peers import account, ini
from test_calls import _bad, call_phone, dial, received, sent, wait_call  # noqa: F401

USERS = {"1001": "p;w#1005", "1002": "secret2", "1003": "secret3", "1004": "secret4",
         "1005": "secret5"}
TONE_B2, TONE_C2, TONE_A, TONE_C = 600, 800, 1000, 700
TALK_SECONDS = 4


@pytest.fixture
def kam(make_kamailio):
    return make_kamailio(users=USERS)


@pytest.fixture
def other_phone(make_phone, kam, tmp_path):
    """make(user, tone) -> another registered phone of ours, auto-answering, with
    file audio; .out_path is what it hears."""
    def make(user, tone):
        src = audio.make_tone_wav(tmp_path / f"src-{user}-{tone}.wav", tone, 30)
        out = tmp_path / f"out-{user}-{secrets.token_hex(3)}.wav"
        ph = make_phone(ini(account(kam.address, user, USERS[user]),
                            audioInputDevice=f"file:{src}", audioOutputDevice=f"file:{out}",
                            autoAnswer="all", autoAnswerDelay=0))
        ph.events().wait_state(1, "registered", 30, codes={200})
        ph.out_path = out
        return ph
    return make


def tag_of(header: str | None) -> str:
    m = re.search(r";\s*tag=([^;>\s]+)", header or "")
    assert m, header
    return m.group(1)


def dialog_of_our_call(ph, call_id_index: int = 0) -> tuple[str, str, str]:
    """(Call-ID, our tag, their tag) of the `call_id_index`-th INVITE we sent."""
    invites = [m for m in sent(ph, "INVITE") if not m.header("replaces")]
    seen: list[str] = []
    for m in invites:
        if m.call_id not in seen:
            seen.append(m.call_id)
    call_id = seen[call_id_index]
    invite = next(m for m in invites if m.call_id == call_id)
    ok = next(m for m in received(ph, code=200, call_id=call_id) if m.cseq_method == "INVITE")
    return call_id, tag_of(invite.header("from")), tag_of(ok.header("to"))


def events_of(ph, type_: str, call: int | None = None) -> list[dict]:
    return [e for e in ph.events().items
            if e.get("type") == type_ and (call is None or e.get("call") == call)]


def talk_and_check(b_phone, c_heard, b_heard_tone: float, c_heard_tone: float, what: str):
    """B and C talk for TALK_SECONDS: each recording holds the other's tone."""
    time.sleep(TALK_SECONDS)
    b_secs = audio.tone_seconds(b_phone.out_path, b_heard_tone)
    assert b_secs >= 0.6 * TALK_SECONDS, f"{what}: B heard {b_heard_tone} Hz for {b_secs:.2f}s\n" \
        + audio.describe(b_phone.out_path, b_heard_tone)
    path = c_heard()
    c_secs = audio.tone_seconds(path, c_heard_tone)
    assert c_secs >= 0.6 * TALK_SECONDS, f"{what}: C heard {c_heard_tone} Hz for {c_secs:.2f}s\n" \
        + audio.describe(path, c_heard_tone)


def start_attended(a, b_user: str, c_user: str) -> tuple[int, int]:
    """A calls B, then C (B is held), and transfers B to C: returns (B's, C's) call ids."""
    bid = dial(a, b_user)
    wait_call(a, "call.confirmed", bid)
    cid = dial(a, c_user)
    wait_call(a, "call.confirmed", cid)
    time.sleep(0.5)
    rc, reply = a.cmd_json("transfer", str(cid), str(bid))
    assert rc == 0 and reply["ok"] and reply["data"]["kind"] == "attended", reply
    assert reply["data"]["with"] == cid, reply
    return bid, cid


def check_the_refer(a, b, cid_sip: tuple[str, str, str]):
    """A's REFER carried Replaces naming A's dialog with C; B's INVITE carried it."""
    call_id, a_tag, c_tag = cid_sip
    refer = [m for m in sent(a, "REFER")]
    assert refer, "no REFER sent"
    refer_to = refer[0].header("refer-to") or ""
    m = re.fullmatch(r"<(sip:[^?>]+)\?Replaces=([^>]+)>", refer_to)
    assert m, refer_to
    replaces = m.group(2).replace("%3B", ";").replace("%3D", "=").replace("%40", "@")
    assert replaces == f"{call_id};to-tag={c_tag};from-tag={a_tag}", refer_to
    invites = [x for x in sent(b, "INVITE") if x.header("replaces")]
    assert invites, "B sent no INVITE with Replaces"
    assert invites[0].header("replaces") == replaces, invites[0].text
    assert "?" not in invites[0].first_line, invites[0].first_line


def test_attended_transfer_b_and_c_talk_and_a_is_out(kam, call_phone, other_phone,
                                                     make_baresip):
    """A (us) talks to B (our phone 1004), calls C (baresip 1003), transfers B to C
    with Replaces. B's INVITE carries the Replaces; A's calls both end; B and C talk
    (tones both ways)."""
    c = make_baresip(kam, "1003", tone=TONE_C)
    b = other_phone("1004", TONE_B2)
    a = call_phone()
    bid, cid = start_attended(a, "1004", "1003")
    # B follows the REFER with Replaces: its new call to C.
    b_new = wait_call(b, "call.outgoing", None, pred=lambda e: e["remote"].startswith("sip:1003"))
    b_xfer = wait_call(b, "call.transfer", None)
    assert b_xfer["kind"] == "attended" and b_xfer["code"] == 202, b_xfer
    wait_call(b, "call.confirmed", b_new["call"])
    done = wait_call(a, "call.transfer", bid, pred=lambda e: e.get("code") == 200)
    assert done["kind"] == "attended" and done["with"] == cid, done
    wait_call(a, "call.ended", bid)
    wait_call(a, "call.ended", cid)
    check_the_refer(a, b, dialog_of_our_call(a, 1))
    assert a.cmd("calls")[1].strip() == ""
    talk_and_check(b, lambda: c.recordings()[1], TONE_C, TONE_B2, "B-C")
    b.cmd("hangup", str(b_new["call"]))
    wait_call(b, "call.ended", b_new["call"])


def test_attended_transfer_to_a_phone_of_ours_replaces_the_call(kam, call_phone, other_phone):
    """All three of ours: C (1005) gets B's INVITE with Replaces naming its call
    with A, answers it at once (no ringing), BYEs A's call and says `replaced`."""
    c = other_phone("1005", TONE_C2)
    b = other_phone("1004", TONE_B2)
    a = call_phone()
    bid, cid = start_attended(a, "1004", "1005")
    replaced = wait_call(c, "call.transfer", None, pred=lambda e: e.get("kind") == "replaced")
    new_at_c = replaced["with"]
    assert not events_of(c, "call.ringing", new_at_c), "a replacing call must not ring"
    wait_call(a, "call.transfer", bid, pred=lambda e: e.get("code") == 200)
    wait_call(a, "call.ended", bid)
    wait_call(a, "call.ended", cid)
    wait_call(c, "call.ended", replaced["call"])
    check_the_refer(a, b, dialog_of_our_call(a, 1))
    talk_and_check(b, lambda: c.out_path, TONE_C2, TONE_B2, "B-C")
    c.cmd("hangup")


def test_a_refer_with_replaces_is_followed_with_an_invite_with_replaces(make_phone, make_sipp,
                                                                        free_port):
    """SIPp calls us, then REFERs us to a SIPp UAS with Replaces in the Refer-To: our
    INVITE to the target carries that Replaces header (unescaped), its Request-URI
    none of it; the NOTIFYs end with 200 and our first call ends."""
    port = free_port("sip")
    target = make_sipp("uas_answer.xml", timeout_s=60)
    ph = make_phone(ini(account("", "1001", ""), sourcePort=port, autoAnswer="all",
                        audioInputDevice="null", audioOutputDevice="null"))
    ev = ph.events()
    replaces = "xfer-dialog@127.0.0.1;to-tag=tt1;from-tag=ft2"
    refer_to = f"{target.address}?Replaces=xfer-dialog%40127.0.0.1%3Bto-tag%3Dtt1%3Bfrom-tag%3Dft2"
    sipp = make_sipp("uac_refer_slow_notify.xml", timeout_s=60, remote=f"127.0.0.1:{port}",
                     extra=["-s", "1001", "-key", "refer_to", refer_to])
    first = ev.wait_for("call.incoming", None, 15)["call"]
    xfer = ev.wait_for("call.transfer", lambda e: e.get("call") == first, 15)
    assert xfer["kind"] == "attended" and xfer["target"] == f"sip:target@{target.address}", xfer
    ev.wait_for("call.ended", lambda e: e.get("call") == first, 20)
    assert sipp.wait() == 0, sipp.messages()[-3000:]
    invites = target.received("INVITE")
    assert invites, target.messages()[-3000:]
    lines = invites[0].replace("\r\n", "\n").split("\n")
    assert lines[0].startswith(f"INVITE sip:target@{target.address} SIP/2.0"), lines[0]
    got = [ln.split(":", 1)[1].strip() for ln in lines if ln.lower().startswith("replaces:")]
    assert got == [replaces], invites[0]
    ph.cmd("hangupall")


def rtp_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.5)
    return s


def rtp_packets_from(s: socket.socket, want: int, seconds: float) -> int:
    """How many PCMU RTP packets arrived (stops at `want`, bounded in time)."""
    n, deadline = 0, time.monotonic() + seconds
    while n < want and time.monotonic() < deadline:
        try:
            data, _ = s.recvfrom(2048)
        except socket.timeout:
            continue
        if len(data) >= 12 and data[0] >> 6 == 2 and data[1] & 0x7F == 0:
            n += 1
    return n


def test_an_invite_with_replaces_takes_our_call_with_baresip(make_phone, make_sipp,
                                                             make_baresip, free_port):
    """We talk to baresip; SIPp sends an INVITE with Replaces naming that dialog: it
    is answered at once (SIPp fails on a 180), baresip gets BYE, our RTP goes to
    SIPp's media address, and `call.transfer` says `replaced`."""
    port = free_port("sip")
    bs = make_baresip(None, "1002", tone=TONE_A, register=False, outbound=False)
    ph = make_phone(ini(account("", "1001", ""), sourcePort=port, autoAnswer="all",
                        audioInputDevice="null", audioOutputDevice="null"))
    ph.events().snapshot()
    old = dial(ph, f"sip:1002@127.0.0.1:{bs.sip_port}")
    bs.wait_event("CALL_ESTABLISHED")
    wait_call(ph, "call.confirmed", old)
    call_id, our_tag, their_tag = dialog_of_our_call(ph)
    media = rtp_socket()
    try:
        sipp = make_sipp("uac_replaces.xml", timeout_s=60, remote=f"127.0.0.1:{port}",
                         extra=["-s", "1001",
                                "-key", "replaces", f"{call_id};to-tag={our_tag};from-tag={their_tag}",
                                "-key", "rtp_port", str(media.getsockname()[1])])
        xfer = wait_call(ph, "call.transfer", old)
        assert xfer["kind"] == "replaced" and xfer["code"] == 200, xfer
        new = xfer["with"]
        assert new != old
        bs.wait_event("CALL_CLOSED")
        wait_call(ph, "call.ended", old)
        assert not events_of(ph, "call.ringing", new), "a replacing call must not ring"
        assert rtp_packets_from(media, 25, 10) == 25, "no RTP of ours at SIPp's address"
        assert sipp.wait() == 0, sipp.messages()[-3000:]
        wait_call(ph, "call.ended", new)
    finally:
        media.close()


@pytest.mark.parametrize("code", ["481", "400"])
def test_an_invite_with_replaces_naming_no_call_is_refused(make_phone, make_sipp,
                                                         make_baresip, free_port, code):
    """Replaces naming no dialog of ours: 481; one that cannot be read (no
    from-tag): 400. No ringing either way; our call is unharmed."""
    port = free_port("sip")
    bs = make_baresip(None, "1002", tone=TONE_A, register=False, outbound=False)
    ph = make_phone(ini(account("", "1001", ""), sourcePort=port, autoAnswer="all",
                        audioInputDevice="null", audioOutputDevice="null"))
    ph.events().snapshot()
    old = dial(ph, f"sip:1002@127.0.0.1:{bs.sip_port}")
    wait_call(ph, "call.confirmed", old)
    call_id, our_tag, their_tag = dialog_of_our_call(ph)
    # The right Call-ID with the tags swapped names no dialog of ours.
    replaces = (f"{call_id};to-tag={their_tag};from-tag={our_tag}" if code == "481"
                else f"{call_id};to-tag={our_tag}")
    sipp = make_sipp(f"uac_replaces_{code}.xml", timeout_s=60, remote=f"127.0.0.1:{port}",
                     extra=["-s", "1001", "-key", "replaces", replaces])
    assert sipp.wait() == 0, sipp.messages()[-3000:]
    [d] = ph.cmd_json("calls")[1]["data"]
    assert d["id"] == old and d["state"] == "active", d
    assert not events_of(ph, "call.transfer"), events_of(ph, "call.transfer")
    ph.cmd("hangup")
    bs.wait_event("CALL_CLOSED")


def test_redial_calls_the_last_number_again(kam, call_phone, make_baresip):
    a = make_baresip(kam, "1002", tone=TONE_A)
    ph = call_phone()
    _bad(ph, ["redial"], "no_call")
    first = dial(ph, "1002")
    wait_call(ph, "call.confirmed", first)
    ph.cmd("hangup")
    wait_call(ph, "call.ended", first)
    rc, out, err = ph.cmd("redial")
    assert rc == 0 and out.strip().isdigit(), (out, err)
    again = int(out)
    assert again != first
    outgoing = wait_call(ph, "call.outgoing", again)
    assert outgoing["remote"] == "sip:1002@127.0.0.1" and outgoing["number"] == "1002", outgoing
    wait_call(ph, "call.confirmed", again)
    assert a.count("CALL_ESTABLISHED") == 2
    ph.cmd("hangup")
    wait_call(ph, "call.ended", again)


def test_callback_calls_the_last_missed_caller(kam, call_phone, make_baresip):
    a = make_baresip(kam, "1002", tone=TONE_A)
    ph = call_phone(auto_answer="button")
    _bad(ph, ["callback"], "no_call")
    a.dial("sip:1001@127.0.0.1")
    missed = wait_call(ph, "call.incoming")["call"]
    a.hangup()
    wait_call(ph, "call.ended", missed)
    rc, out, err = ph.cmd("callback")
    assert rc == 0 and out.strip().isdigit(), (out, err)
    back = int(out)
    outgoing = wait_call(ph, "call.outgoing", back)
    assert outgoing["remote"] == "sip:1002@127.0.0.1", outgoing
    wait_call(ph, "call.confirmed", back)
    ph.cmd("hangup")
    wait_call(ph, "call.ended", back)
