"""Calls with audio, through Kamailio with digest auth, against real peers:
baresip as the other phone, SIPp for what baresip won't do (tests/e2e/sipp/),
and the RTP on the wire where only that can tell (rtp.RtpTap).

The phone under test ($MICROSIP_BIN) is user 1001; baresip A is 1002, C is 1003.
The phone plays a 440 Hz tone file (audioInputDevice=file:...) and writes what
it hears to a WAV (audioOutputDevice=file:...); baresip A plays 1000 Hz, C 700 Hz.
Audio is judged by frequency (audio.py: 250 ms windows, dominant frequency
within 15 Hz), never by "not silent".
"""

from __future__ import annotations

import re
import secrets
import threading
import time

import pytest

import audio
import peers
import rtp
from peers import account, ini

USERS = {"1001": "p;w#1005", "1002": "secret2", "1003": "secret3"}
PASSWORD = USERS["1001"]
CALL_SECONDS = 8          # how long the audio calls last
TONE_US, TONE_A, TONE_C = 440, 1000, 700
HOSTILE_NAME = '"; rm -rf ~ $(id)'
CALLS_LINE = re.compile(r"^(\d+) (in|out) (\d+) (\S+) (\S+) (\d+)s (\S+)"
                        r"(?: jitter=\d+ms loss=\d+\.\d% rtt=(?:\d+ms|-))?$")


# ---------------------------------------------------------------- helpers

@pytest.fixture
def kam(make_kamailio):
    return make_kamailio(users=USERS)


@pytest.fixture
def call_phone(make_phone, kam, tmp_path):
    """make(auto_answer="all"|"button", tone=440, account_keys={...},
    **more_settings) -> a registered phone with file audio; .out_path is what it
    hears; account_keys go in its [Account1] (e.g. SRTP=mandatory)."""
    def make(auto_answer="all", tone=TONE_US, register=True, account_keys=None, **settings):
        src = audio.make_tone_wav(tmp_path / f"phone-src-{tone}.wav", tone, 20)
        out = tmp_path / f"phone-out-{secrets.token_hex(3)}.wav"
        keys = dict(audioInputDevice=f"file:{src}", audioOutputDevice=f"file:{out}",
                    autoAnswer=auto_answer, autoAnswerDelay=0, statusDisconnectedTime=2000)
        keys.update(settings)
        accounts = ([account(kam.address, "1001", PASSWORD, **(account_keys or {}))]
                    if register else [])
        if not register:
            keys.setdefault("accountId", 0)
        ph = make_phone(ini(*accounts, **keys))
        ev = ph.events()
        if register:
            ev.wait_state(1, "registered", 30, codes={200})
        else:
            ev.snapshot()
        ph.out_path = out
        return ph
    return make


def wait_call(ph: peers.Phone, type_: str, call: int | None = None, timeout: float = 30,
              pred=None) -> dict:
    """The first event of that type (for that call id) in the whole stream so
    far, waiting (bounded) until it comes. Does not move the stream's cursor."""
    ev = ph.events()

    def find():
        with ev._cond:
            items = list(ev.items)
        for e in items:
            if e.get("type") == type_ and (call is None or e.get("call") == call) \
                    and (pred is None or pred(e)):
                return e
        return None
    try:
        return peers.wait_until(find, timeout, 0.05, f"{type_} for call {call}")
    except AssertionError as e:
        raise AssertionError(f"{e}\nevents:\n{ev._describe()}") from None


def count_events(ph: peers.Phone, type_: str, call: int | None = None) -> int:
    return ph.events().count(type_, (lambda e: e.get("call") == call) if call else None)


def dial(ph: peers.Phone, target: str) -> int:
    rc, out, err = ph.cmd("dial", target)
    assert rc == 0 and out.strip().isdigit(), (rc, out, err)
    return int(out.strip())


def status(ph: peers.Phone) -> str:
    return ph.cmd("STATUS")[1].strip()


def calls_entries(ph: peers.Phone) -> list[tuple]:
    """`calls` parsed: [(id, direction, account, remote, state, seconds, codec), ...]."""
    rc, out, err = ph.cmd("calls")
    assert rc == 0, err
    text = out.strip()
    if not text:
        return []
    out_list = []
    for part in text.split("; "):
        m = CALLS_LINE.match(part.strip())
        assert m, ("`calls` entry not `ID DIRECTION ACCOUNT REMOTE STATE DURATION CODEC`: "
                   f"{part!r}")
        out_list.append((int(m.group(1)), m.group(2), int(m.group(3)), m.group(4),
                         m.group(5), int(m.group(6)), m.group(7)))
    return out_list


def calls_json(ph: peers.Phone) -> list[dict]:
    rc, reply = ph.cmd_json("calls")
    assert rc == 0 and reply.get("ok") is True, reply
    assert isinstance(reply.get("data"), list), reply
    return reply["data"]


def is_uri_of(uri: str, user: str) -> bool:
    return re.fullmatch(rf"sip:{user}@127\.0\.0\.1(:\d+)?(;.*)?", uri or "") is not None


def sent(ph, method=None, code=None, call_id=None):
    return [m for m in ph.trace_messages() if m.sent
            and (method is None or m.method == method)
            and (code is None or m.code == code)
            and (call_id is None or m.call_id == call_id)]


def received(ph, method=None, code=None, call_id=None):
    return [m for m in ph.trace_messages() if not m.sent
            and (method is None or m.method == method)
            and (code is None or m.code == code)
            and (call_id is None or m.call_id == call_id)]


def heard(path, freq, call_seconds: float, what: str):
    """The recording holds freq for at least 90 % of the call: 90 % of its call
    span (leading/trailing silence cut, see audio.py) AND 90 % of the call's
    length as the peer saw it (a recording that only holds a second of tone
    followed by nothing would pass the first alone)."""
    cov = audio.tone_coverage(path, freq)
    secs = audio.tone_seconds(path, freq)
    detail = f"{what}: {freq} Hz coverage {cov:.1%}, {secs:.2f}s of a {call_seconds:.2f}s call\n" \
        + audio.describe(path, freq)
    assert cov >= 0.9, detail
    assert secs >= 0.9 * call_seconds, detail


class StatusPoller:
    """Polls STATUS on the control socket every ~10 ms in a thread, keeping
    each change (a bounded number of polls)."""

    def __init__(self, ph: peers.Phone, max_seconds: float = 120):
        self.ph, self.max_seconds = ph, max_seconds
        self.changes: list[tuple[float, str]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        deadline = time.monotonic() + self.max_seconds
        last = None
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                r = self.ph.request("STATUS", timeout=5)
                v = str(r.get("text", "")).strip() if r.get("ok") else f"ERR {r}"
            except (OSError, AssertionError) as e:
                v = f"ERR {e}"
                self.errors.append(v)
            if v != last:
                self.changes.append((time.monotonic(), v))
                last = v
            time.sleep(0.01)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(10)

    def sequence(self) -> list[str]:
        return [v for _, v in self.changes]


# ---------------------------------------------------------------- audio both ways

def test_we_call_baresip_and_it_hears_our_tone(kam, call_phone, make_baresip):
    a = make_baresip(kam, "1002", tone=TONE_A)
    ph = call_phone()
    cid = dial(ph, "1002")
    # The reply came once the INVITE was on the wire.
    invites = sent(ph, "INVITE")
    assert invites and "sip:1002@127.0.0.1" in invites[0].first_line, ph.trace_text()[-2000:]
    out_ev = wait_call(ph, "call.outgoing", cid)
    assert is_uri_of(out_ev.get("remote"), "1002"), out_ev
    est = a.wait_event("CALL_ESTABLISHED")
    assert est["peeruri"].startswith("sip:1001@127.0.0.1")
    wait_call(ph, "call.confirmed", cid)
    time.sleep(CALL_SECONDS)
    rc, out, err = ph.cmd("hangup", str(cid))
    assert rc == 0, (out, err)
    closed = a.wait_event("CALL_CLOSED")
    ended = wait_call(ph, "call.ended", cid)
    assert {"code", "reason", "duration"} <= set(ended), ended
    _, dec = a.recordings()
    heard(dec, TONE_US, closed["_t"] - est["_t"], "baresip's recording of what it received")
    assert audio.tone_coverage(dec, TONE_A) == 0.0  # our tone, not its own echoed


def test_baresip_calls_us_we_answer_and_hear_its_tone(kam, call_phone, make_baresip):
    ph = call_phone(auto_answer="button")
    a = make_baresip(kam, "1002", tone=TONE_A)
    a.dial("sip:1001@127.0.0.1")
    inc = wait_call(ph, "call.incoming")
    cid = inc["call"]
    assert is_uri_of(inc.get("remote"), "1002") and inc.get("number") == "1002", inc
    assert status(ph) == "1"
    rc, out, err = ph.cmd("/answer")
    assert rc == 0, (out, err)
    est = a.wait_event("CALL_ESTABLISHED")
    wait_call(ph, "call.answered", cid)
    wait_call(ph, "call.confirmed", cid)
    assert status(ph) == "2"
    assert is_uri_of(ph.cmd("ACTIVECALL")[1].strip(), "1002"), ph.cmd("ACTIVECALL")
    time.sleep(CALL_SECONDS)
    a.hangup()
    closed = a.wait_event("CALL_CLOSED")
    wait_call(ph, "call.ended", cid)
    heard(ph.out_path, TONE_A, closed["_t"] - est["_t"], "the phone's output file")
    assert audio.tone_coverage(ph.out_path, TONE_US) == 0.0
    # And baresip heard us.
    _, dec = a.recordings()
    assert audio.tone_coverage(dec, TONE_US) >= 0.9, audio.describe(dec, TONE_US)


def test_exit_with_a_call_up_ends_the_call_then_the_phone(kam, call_phone, make_baresip):
    """`/exit` while a call is up: the peer gets its BYE, the call is in [Calls], and
    the process ends by itself (it used to hang once the last call.ended waited for
    its history write when the event queue closed)."""
    ph = call_phone(auto_answer="all")
    a = make_baresip(kam, "1002")
    a.dial("sip:1001@127.0.0.1")
    a.wait_event("CALL_ESTABLISHED")
    cid = wait_call(ph, "call.confirmed")["call"]
    rc, out, err = ph.cmd("/exit", check=False)
    assert rc == 0, (out, err)
    closed = a.wait_event("CALL_CLOSED")
    assert "1001" in closed.get("peeruri", ""), closed
    assert ph.wait_exit(15) == 0
    assert wait_call(ph, "call.ended", cid)["by"] == "local"
    calls = ph.ini_path.read_text().split("[Calls]", 1)[-1]
    assert "1002" in calls, calls


# ---------------------------------------------------------------- status, activecall, calls

def test_status_reads_0_1_2_3_2_4_0_over_a_call(kam, call_phone, make_baresip):
    a = make_baresip(kam, "1002", answermode="manual")
    ph = call_phone()
    assert status(ph) == "0"
    assert ph.cmd("ACTIVECALL")[1] == "\n"  # empty line when idle
    with StatusPoller(ph) as poll:
        cid = dial(ph, "1002")
        assert status(ph) == "1"  # ringing (out, not yet answered)
        a.wait_event("CALL_INCOMING")
        time.sleep(0.5)
        a.answer()
        wait_call(ph, "call.confirmed", cid)
        assert status(ph) == "2"
        assert is_uri_of(ph.cmd("ACTIVECALL")[1].strip(), "1002"), ph.cmd("ACTIVECALL")
        time.sleep(0.5)
        rc, out, err = ph.cmd("hold")
        assert rc == 0 and f"call {cid} held" in out, (out, err)
        assert status(ph) == "3"
        time.sleep(0.5)
        rc, out, err = ph.cmd("hold", "off")
        assert rc == 0 and f"call {cid} resumed" in out, (out, err)
        assert status(ph) == "2"
        time.sleep(0.5)
        rc, out, err = ph.cmd("hangup")
        assert rc == 0, (out, err)
        assert status(ph) == "4"
        a.wait_event("CALL_CLOSED")
        peers.wait_until(lambda: status(ph) == "0", 15, 0.1, "STATUS back to 0")
        time.sleep(0.2)
    seq = poll.sequence()
    assert not poll.errors, poll.errors
    assert seq == ["0", "1", "2", "3", "2", "4", "0"], poll.changes
    # 4 lasted statusDisconnectedTime (2000 ms), roughly: reported, not asserted.
    t4 = [t for t, v in poll.changes if v == "4"][0]
    t0 = [t for t, v in poll.changes if v == "0"][-1]
    print(f"STATUS 4 lasted {t0 - t4:.2f}s (statusDisconnectedTime=2000)")
    assert ph.cmd("ACTIVECALL")[1] == "\n"
    rc, out, _ = ph.cmd("status")
    assert re.match(r"0\b", out.strip()), out


def test_calls_lists_two_simultaneous_calls_with_ids(kam, call_phone, make_baresip):
    a = make_baresip(kam, "1002", tone=TONE_A)
    c = make_baresip(kam, "1003", tone=TONE_C)
    ph = call_phone()
    id1 = dial(ph, "1002")
    a.wait_event("CALL_ESTABLISHED")
    wait_call(ph, "call.confirmed", id1)
    id2 = dial(ph, "1003")  # the active call goes on hold first
    assert id2 != id1
    c.wait_event("CALL_ESTABLISHED")
    wait_call(ph, "call.confirmed", id2)
    entries = {e[0]: e for e in calls_entries(ph)}
    assert sorted(entries) == sorted([id1, id2]), entries
    assert entries[id1][1] == "out" and is_uri_of(entries[id1][3], "1002"), entries
    assert entries[id2][1] == "out" and is_uri_of(entries[id2][3], "1003"), entries
    assert entries[id1][2] == 1 and entries[id2][2] == 1, entries  # the account column
    assert entries[id1][4] == "held" and entries[id2][4] == "active", entries
    assert {entries[i][6] for i in (id1, id2)} <= {"PCMU", "PCMA"}, entries
    data = {d["id"]: d for d in calls_json(ph)}
    assert sorted(data) == sorted([id1, id2]), data
    for i, user in ((id1, "1002"), (id2, "1003")):
        d = data[i]
        assert d["direction"] == "out" and is_uri_of(d["remote"], user), d
        assert d["account"] == 1 and isinstance(d["duration"], int), d
        assert d["codec"] in ("PCMU", "PCMA"), d
    assert data[id1]["state"] == "held" and data[id2]["state"] == "active", data
    rc, out, err = ph.cmd("hangupall")
    assert rc == 0, (out, err)
    a.wait_event("CALL_CLOSED")
    c.wait_event("CALL_CLOSED")
    wait_call(ph, "call.ended", id1)
    wait_call(ph, "call.ended", id2)
    assert calls_entries(ph) == []


# ---------------------------------------------------------------- cancel, reject

def test_hangupcalling_cancels_an_unanswered_call(kam, call_phone, make_baresip):
    a = make_baresip(kam, "1002", answermode="manual")
    ph = call_phone()
    cid = dial(ph, "1002")
    a.wait_event("CALL_INCOMING")
    rc, out, err = ph.cmd("hangupcalling")
    assert rc == 0, (out, err)
    cancels = sent(ph, "CANCEL")
    assert cancels, "no CANCEL in the phone's trace"
    invite = [m for m in sent(ph, "INVITE") if m.call_id == cancels[0].call_id][-1]
    # RFC 3261 9.1: the CANCEL goes where the INVITE went (same Request-URI,
    # same destination, the INVITE's branch).
    assert cancels[0].dst == invite.dst, (cancels[0].dst, invite.dst)
    assert cancels[0].first_line.split()[1] == invite.first_line.split()[1]
    a.wait_event("CALL_CLOSED")
    assert a.count("CALL_ESTABLISHED") == 0
    assert re.search(r"(?m)^CANCEL sip:1002", a.log.read_text(errors="replace")), \
        "baresip saw no CANCEL"
    ended = wait_call(ph, "call.ended", cid)
    assert ended.get("code") == 487, ended
    assert calls_entries(ph) == []


def test_reject_603_is_seen_by_baresip_as_603(kam, call_phone, make_baresip):
    ph = call_phone(auto_answer="button")
    a = make_baresip(kam, "1002")
    a.dial("sip:1001@127.0.0.1")
    cid = wait_call(ph, "call.incoming")["call"]
    rc, out, err = ph.cmd("reject", "603")
    assert rc == 0, (out, err)
    closed = a.wait_event("CALL_CLOSED")
    assert closed["param"].startswith("603"), closed
    assert sent(ph, code=603)
    assert wait_call(ph, "call.ended", cid).get("code") == 603
    assert a.count("CALL_ESTABLISHED") == 0
    assert calls_entries(ph) == []


def test_reject_without_a_code_is_seen_by_baresip_as_486(kam, call_phone, make_baresip):
    ph = call_phone(auto_answer="button")
    a = make_baresip(kam, "1002")
    a.dial("sip:1001@127.0.0.1")
    cid = wait_call(ph, "call.incoming")["call"]
    rc, out, err = ph.cmd("reject")
    assert rc == 0 and "486" in out, (out, err)
    closed = a.wait_event("CALL_CLOSED")
    assert closed["param"].startswith("486"), closed
    assert sent(ph, code=486)
    assert wait_call(ph, "call.ended", cid).get("code") == 486
    assert a.count("CALL_ESTABLISHED") == 0


# ---------------------------------------------------------------- scripts

def test_dial_hold_hangup_back_to_back_without_sleeps(kam, call_phone, make_baresip):
    """A script writes `dial`, `hold`, `hangup` in one go: each reply comes in order
    once its change took effect, and baresip sees the INVITE, the hold re-INVITE
    (sendonly) and the BYE, in that order."""
    a = make_baresip(kam, "1002")
    ph = call_phone()
    replies = ph.requests([["dial", "1002"], ["hold"], ["hangup"]], timeout=30)
    assert [r.get("token") for r in replies] == ["r0", "r1", "r2"], replies
    assert all(r.get("ok") is True for r in replies), replies
    cid = replies[0]["data"]["call"]
    assert re.search(rf"call {cid} held", replies[1]["text"]), replies
    assert re.search(rf"call {cid} ended", replies[2]["text"]), replies
    a.wait_event("CALL_ESTABLISHED")
    a.wait_event("CALL_CLOSED")
    # baresip's own SIP trace: INVITE (our offer), re-INVITE with sendonly, BYE.
    blog = a.log.read_text(errors="replace")
    invites = [m.start() for m in re.finditer(r"(?m)^INVITE sip:1002", blog)]
    assert len(invites) >= 2, blog[-4000:]
    hold_at = blog.find("a=sendonly", invites[1])
    bye_at = blog.find("\nBYE sip:1002")
    assert 0 < invites[1] < hold_at < bye_at, blog[-4000:]
    # The reply and the event leave together: wait for the event to be read.
    ph.events().wait_for("call.ended", lambda e: e.get("call") == cid)
    events = [e["type"] for e in ph.events().items if e.get("call") == cid]
    for earlier, later in (("call.confirmed", "call.held"), ("call.held", "call.ended")):
        assert events.index(earlier) < events.index(later), events


def test_numeric_dial_replies_1_or_0(kam, call_phone, make_baresip):
    a = make_baresip(kam, "1002")
    ph = call_phone()
    rc, out, err = ph.cmd("DIAL", "1002")
    assert rc == 0 and out.strip() == "1", (out, err)
    a.wait_event("CALL_ESTABLISHED")
    [d] = calls_json(ph)
    assert d["direction"] == "out" and is_uri_of(d["remote"], "1002"), d
    rc, out, err = ph.cmd("DIAL", "sip:a b", check=False)
    assert out.strip() == "0", (rc, out, err)
    assert [c["id"] for c in calls_json(ph)] == [d["id"]]  # nothing else started
    ph.cmd("hangup")
    a.wait_event("CALL_CLOSED")
    assert len({m.call_id for m in sent(ph, "INVITE")}) == 1  # one call (407 retry included)


# ---------------------------------------------------------------- hold

def test_hold_is_seen_by_baresip_and_our_audio_stops_while_held(kam, call_phone, make_baresip,
                                                                 rtp_tap):
    a = make_baresip(kam, "1002", tone=TONE_A)
    ph = call_phone()
    cid = dial(ph, "1002")
    a.wait_event("CALL_ESTABLISHED")
    wait_call(ph, "call.confirmed", cid)
    time.sleep(3)
    a.mark()
    rc, out, err = ph.cmd("hold", str(cid), "on")
    t_held = time.time()
    assert rc == 0 and f"call {cid} held" in out, (out, err)
    wait_call(ph, "call.held", cid, pred=lambda e: e.get("by") == "local")
    time.sleep(4)
    t_resume = time.time()
    rc, out, err = ph.cmd("hold", str(cid), "off")
    assert rc == 0 and f"call {cid} resumed" in out, (out, err)
    wait_call(ph, "call.resumed", cid, pred=lambda e: e.get("by") == "local")
    time.sleep(3)
    ph.cmd("hangup", str(cid))
    t_end = time.time()
    a.wait_event("CALL_CLOSED")

    # Signalling: our re-INVITEs and baresip's answers.
    msgs = ph.trace_messages()
    call_id = sent(ph, "INVITE")[0].call_id
    reinvites = list({m.header("cseq"): m for m in msgs if m.sent and m.method == "INVITE"
                      and m.call_id == call_id and m.to_tag}.values())  # retransmissions once
    assert len(reinvites) == 2, reinvites
    assert rtp.sdp_direction(reinvites[0].body) in ("sendonly", "inactive"), reinvites[0].text
    assert rtp.sdp_direction(reinvites[1].body) == "sendrecv", reinvites[1].text
    answers = [m for m in msgs if not m.sent and m.code == 200 and m.call_id == call_id
               and m.cseq_method == "INVITE" and m.body]
    directions = [rtp.sdp_direction(m.body) for m in answers]
    assert directions[-2:] in (["recvonly", "sendrecv"], ["inactive", "sendrecv"]), directions
    # baresip got the offer and answered it (its own SIP trace and events).
    blog = a.log.read_text(errors="replace")
    assert re.search(r"(?m)^a=sendonly|^a=inactive", blog), "baresip never saw the hold offer"
    assert a.count("CALL_REMOTE_SDP", lambda e: e.get("param") == "offer") >= 2

    # Media on the wire: from our RTP port to baresip's.
    ours = rtp.sdp_audio_port(sent(ph, "INVITE")[0].body)
    theirs = rtp.sdp_audio_port(answers[0].body)
    before = rtp_tap.flow(src=ours, dst=theirs, t1=t_held)
    held = rtp_tap.flow(src=ours, dst=theirs, t0=t_held + 0.2, t1=t_resume)
    after = rtp_tap.flow(src=ours, dst=theirs, t0=t_resume + 0.5, t1=t_end)
    assert rtp.tone_packets(before, TONE_US) >= 100, rtp_tap.diagnostics()
    assert rtp.tone_packets(held, TONE_US) == 0, f"{len(held)} packets while held"
    assert held == [], f"the phone sent {len(held)} RTP packets while held (no sending while held)"
    assert rtp.tone_packets(after, TONE_US) >= 75, f"audio did not come back: {len(after)} packets"
    # baresip's recording: our tone before the hold. (baresip 1.0 stops writing
    # its dec recording at a re-INVITE that changes the direction, and does not
    # start again; so the wire, not the file, shows the hold and the resume.)
    _, dec = a.recordings()
    assert audio.tone_seconds(dec, TONE_US) >= 2.0, audio.describe(dec, TONE_US)


def test_hold_by_baresip_is_shown_as_held_by_remote(kam, call_phone, make_baresip):
    a = make_baresip(kam, "1002", tone=TONE_A)
    ph = call_phone()
    cid = dial(ph, "1002")
    a.wait_event("CALL_ESTABLISHED")
    wait_call(ph, "call.confirmed", cid)
    a.hold()
    wait_call(ph, "call.held", cid, pred=lambda e: e.get("by") == "remote")
    [d] = calls_json(ph)
    assert d["id"] == cid and d["state"] in ("held", "active"), d
    a.resume()
    wait_call(ph, "call.resumed", cid, pred=lambda e: e.get("by") == "remote")
    ph.cmd("hangup")
    a.wait_event("CALL_CLOSED")


# ---------------------------------------------------------------- transfer

def test_blind_transfer_of_a_to_c(kam, call_phone, make_baresip):
    a = make_baresip(kam, "1002", tone=TONE_A)
    c = make_baresip(kam, "1003", tone=TONE_C)
    ph = call_phone()
    cid = dial(ph, "1002")
    a.wait_event("CALL_ESTABLISHED")
    wait_call(ph, "call.confirmed", cid)
    time.sleep(1)
    rc, out, err = ph.cmd("transfer", "sip:1003@127.0.0.1", str(cid))
    assert rc == 0, (out, err)
    assert sent(ph, "REFER"), "no REFER in the trace"
    assert received(ph, code=202), "the reply came before the 202"
    refer_to = a.wait_event("TRANSFER")["param"]
    assert refer_to.strip("<>").startswith("sip:1003@127.0.0.1"), refer_to
    est = c.wait_event("CALL_ESTABLISHED")
    assert est["peeruri"].startswith("sip:1002@127.0.0.1"), est  # C is called by A
    wait_call(ph, "call.ended", cid)  # our leg ends
    a.wait_event("CALL_CLOSED", lambda e: e.get("peeruri", "").startswith("sip:1001"))
    tr = [e for e in ph.events().items if e.get("type") == "call.transfer" and e.get("call") == cid]
    assert tr and any(e.get("code") == 200 for e in tr), tr
    assert all("target" in e and "code" in e for e in tr), tr
    assert calls_entries(ph) == []
    time.sleep(3)
    c.hangup()
    c.wait_event("CALL_CLOSED")
    _, c_dec = c.recordings()
    assert audio.tone_coverage(c_dec, TONE_A) >= 0.9, audio.describe(c_dec, TONE_A)


# ---------------------------------------------------------------- SIPp: the phone calls SIPp

def ulaw(tmp_path, freq, seconds=5):
    return audio.make_tone_ulaw(tmp_path / f"{freq}.ulaw", freq, seconds).read_bytes()


def test_183_early_media_is_heard_before_the_answer(call_phone, make_sipp, tmp_path):
    sipp = make_sipp("uas_183_early_media.xml", timeout_s=90,
                     files={"early.ulaw": ulaw(tmp_path, 1000), "answer.ulaw": ulaw(tmp_path, 600)})
    ph = call_phone()
    cid = dial(ph, f"sip:svc@{sipp.address}")
    early = wait_call(ph, "call.early", cid)
    conf = wait_call(ph, "call.confirmed", cid)
    items = ph.events().items
    assert items.index(early) < items.index(conf)  # early media before the answer
    time.sleep(3)
    ph.cmd("hangup", str(cid))
    assert sipp.wait() == 0
    wait_call(ph, "call.ended", cid)
    out = ph.out_path
    detail = audio.describe(out, 1000)
    assert audio.tone_seconds(out, 1000) >= 2.0, detail  # of the 3 s of early media
    assert audio.tone_seconds(out, 600) >= 2.0, detail   # after the 200
    ws = [w for w in audio.windows(out) if not w.silent]
    first_600 = next(i for i, w in enumerate(ws) if abs(w.freq - 600) <= 15)
    assert sum(1 for w in ws[:first_600] if abs(w.freq - 1000) <= 15) >= 8, detail


def test_488_from_the_peer_ends_the_call(call_phone, make_sipp):
    sipp = make_sipp("uas_488.xml", timeout_s=60)
    ph = call_phone()
    cid = dial(ph, f"sip:svc@{sipp.address}")
    ended = wait_call(ph, "call.ended", cid)
    assert ended.get("code") == 488, ended
    assert sipp.wait() == 0  # ACKed, and no retry
    assert calls_entries(ph) == []
    assert status(ph) in ("0", "4")


@pytest.mark.parametrize("direction,expected", [("sendonly", "recvonly"), ("inactive", "inactive")])
def test_peer_reinvite_holds_and_resumes_us(call_phone, make_sipp, direction, expected):
    sipp = make_sipp("uas_reinvite.xml", timeout_s=60, extra=["-key", "hold", direction])
    ph = call_phone()
    cid = dial(ph, f"sip:svc@{sipp.address}")
    wait_call(ph, "call.held", cid, pred=lambda e: e.get("by") == "remote")
    wait_call(ph, "call.resumed", cid, pred=lambda e: e.get("by") == "remote")
    wait_call(ph, "call.ended", cid)
    assert sipp.wait() == 0  # our 200s said recvonly or inactive, then sendrecv
    # RFC 3264 6.1: recvonly answers sendonly, inactive answers inactive.
    answers = [m for m in sent(ph, code=200) if "a=recvonly" in m.text or "a=inactive" in m.text]
    assert answers and f"a={expected}" in answers[0].text, [m.text for m in answers]
    assert calls_entries(ph) == []


def test_hold_from_a_second_client_waits_for_the_re_invite_in_flight(call_phone, make_sipp):
    # SIPp takes 1.5 s to answer the hold; a `hold off` from another client in
    # that time waits for it, then resumes (it used to be refused "try again").
    sipp = make_sipp("uas_slow_reinvite.xml", timeout_s=60)
    ph = call_phone()
    cid = dial(ph, f"sip:svc@{sipp.address}")
    wait_call(ph, "call.confirmed", cid)
    replies = {}

    def hold(word):
        replies[word] = ph.request("hold", str(cid), word, timeout=20)
    first = threading.Thread(target=hold, args=("on",))
    first.start()
    # The hold's re-INVITE on the wire (in the dialog, sendonly; not a resent INVITE).
    peers.wait_until(lambda: [m for m in sent(ph, "INVITE") if m.to_tag and "a=sendonly" in m.text],
                     10, 0.02, "the hold re-INVITE")
    t0 = time.monotonic()
    hold("off")
    waited = time.monotonic() - t0
    first.join(20)
    assert replies["on"].get("ok"), replies
    assert replies["off"].get("ok") and "resumed" in replies["off"].get("text", ""), replies
    assert waited >= 1.0, waited  # it waited for the slow answer to the first
    held = wait_call(ph, "call.held", cid)
    resumed = wait_call(ph, "call.resumed", cid)
    assert held["seq"] < resumed["seq"]
    assert sipp.wait() == 0  # re-INVITEs in order: sendonly, then sendrecv
    wait_call(ph, "call.ended", cid)


def test_forked_200s_are_both_acked_and_the_second_is_ended(call_phone, make_sipp):
    sipp = make_sipp("uas_forked_200.xml", timeout_s=90)
    ph = call_phone()
    cid = dial(ph, f"sip:svc@{sipp.address}")
    wait_call(ph, "call.confirmed", cid)

    def second_leg_ended():
        return [m for m in sent(ph, "BYE") if m.to_tag and "SIPpTagB" in m.to_tag]
    peers.wait_until(second_leg_ended, 15, 0.1, "a BYE for the second 200's dialog")
    acks = {m.to_tag for m in sent(ph, "ACK") if m.to_tag}
    assert any("SIPpTagA" in t for t in acks) and any("SIPpTagB" in t for t in acks), acks
    # The phone ACKs the second 200 before it ends that dialog (a proxy may
    # still deliver the two in either order; the scenario accepts both).
    out = [m for m in sent(ph) if m.to_tag and "SIPpTagB" in m.to_tag]
    order = [m.method for m in out if m.method in ("ACK", "BYE")]
    assert order.index("ACK") < order.index("BYE"), order
    [entry] = calls_entries(ph)  # one call, the first dialog
    assert entry[0] == cid and entry[4] == "active", entry
    ph.cmd("hangup", str(cid))
    assert sipp.wait() == 0
    wait_call(ph, "call.ended", cid)


# ---------------------------------------------------------------- SIPp: SIPp calls the phone

@pytest.fixture
def direct_phone(call_phone, free_port):
    """A phone SIPp can call straight at 127.0.0.1:sourcePort."""
    def make(auto_answer="all"):
        port = free_port("sip")
        ph = call_phone(auto_answer=auto_answer, sourcePort=port)
        ph.sip_port = port
        return ph
    return make


def test_retransmitted_invite_makes_one_call(direct_phone, make_sipp):
    ph = direct_phone(auto_answer="button")
    sipp = make_sipp("uac_retransmit_invite.xml", timeout_s=90,
                     remote=f"127.0.0.1:{ph.sip_port}", extra=["-nr", "-s", "1001"])
    cid = wait_call(ph, "call.incoming")["call"]
    call_id = [m for m in received(ph, "INVITE")][0].call_id
    peers.wait_until(lambda: len(received(ph, "INVITE", call_id=call_id)) >= 3, 15, 0.05,
                     "the three copies of the INVITE at the phone")
    time.sleep(0.5)
    assert count_events(ph, "call.incoming") == 1, ph.events()._describe()
    assert [e[0] for e in calls_entries(ph)] == [cid]
    rc, out, err = ph.cmd("answer", str(cid))
    assert rc == 0, (out, err)
    assert sipp.wait() == 0
    wait_call(ph, "call.ended", cid)
    assert count_events(ph, "call.incoming") == 1
    tags = {m.to_tag for m in sent(ph, call_id=call_id) if m.is_response and m.code > 100}
    assert len(tags) == 1, f"responses from more than one dialog: {tags}"
    assert len(sent(ph, code=200, call_id=call_id)) >= 2  # the 200 again for the late copy
    assert calls_entries(ph) == []


def test_bye_before_ack_ends_the_call(direct_phone, make_sipp):
    ph = direct_phone()
    sipp = make_sipp("uac_bye_before_ack.xml", timeout_s=60,
                     remote=f"127.0.0.1:{ph.sip_port}", extra=["-s", "1001"])
    cid = wait_call(ph, "call.incoming")["call"]
    assert sipp.wait() == 0  # our 200 to the BYE, and no BYE of ours afterwards
    wait_call(ph, "call.ended", cid)
    assert calls_entries(ph) == []
    assert status(ph) in ("0", "4")
    assert not sent(ph, "BYE")


def test_no_common_codec_is_answered_488(direct_phone, make_sipp):
    ph = direct_phone()
    sipp = make_sipp("uac_488_no_codec.xml", timeout_s=60,
                     remote=f"127.0.0.1:{ph.sip_port}", extra=["-s", "1001"])
    assert sipp.wait() == 0
    assert sent(ph, code=488)
    assert not sent(ph, code=200)
    assert calls_entries(ph) == []


def test_hostile_caller_id_is_plain_text(direct_phone, make_sipp):
    ph = direct_phone()
    sipp = make_sipp("uac_hostile_callerid.xml", timeout_s=60,
                     remote=f"127.0.0.1:{ph.sip_port}", extra=["-s", "1001"])
    inc = wait_call(ph, "call.incoming")
    assert inc.get("name") == HOSTILE_NAME, inc
    assert inc.get("number") == "6666", inc
    assert sipp.wait() == 0
    assert ph.running() and status(ph) in ("0", "4")


# ---------------------------------------------------------------- bad input

def test_dial_with_no_account_is_refused(call_phone):
    """Only the local account (Account0, no domain to add to a bare number):
    `dial 123` is refused and nothing goes on the wire."""
    ph = call_phone(register=False)
    rc, reply = ph.cmd_json("dial", "123")
    assert rc == 1 and reply.get("ok") is False, reply
    assert reply.get("code") == "no_account", reply
    rc, out, err = ph.cmd("dial", "123", check=False)
    assert rc == 1 and "no_account" in err and err.strip(), (out, err)
    assert calls_entries(ph) == []
    assert status(ph) == "0"
    assert not sent(ph, "INVITE")


def _bad(ph, words, code):
    rc, reply = ph.cmd_json(*words)
    assert rc == 1 and reply.get("ok") is False and reply.get("code") == code, (words, reply)
    assert reply.get("error"), reply
    rc, out, err = ph.cmd(*words, check=False)
    assert rc == 1 and err.strip() and out.strip() == "", (words, out, err)


def test_bad_input_gives_clear_errors_and_changes_nothing(kam, call_phone, make_baresip):
    ph = call_phone()
    # No call at all.
    _bad(ph, ["hangup"], "no_call")
    _bad(ph, ["hangup", "999"], "no_such_call")
    _bad(ph, ["dial", "sip:a b"], "bad_argument")
    assert calls_entries(ph) == [] and status(ph) == "0"
    assert not sent(ph, "INVITE")
    # With a call up: the same commands leave it as it is.
    a = make_baresip(kam, "1002")
    cid = dial(ph, "1002")
    a.wait_event("CALL_ESTABLISHED")
    wait_call(ph, "call.confirmed", cid)
    # What a command could change (duration and the RTCP figures move by themselves).
    stable = ("id", "direction", "account", "remote", "state", "codec", "held")
    before = [{k: d.get(k) for k in stable} for d in calls_json(ph)]
    n_sent = len([m for m in ph.trace_messages() if m.sent and m.method in
                  ("INVITE", "BYE", "CANCEL", "REFER")])
    _bad(ph, ["hangup", "999"], "no_such_call")
    _bad(ph, ["hold", "999"], "no_such_call")
    _bad(ph, ["dial", "sip:a b"], "bad_argument")
    _bad(ph, ["transfer", "sip:1003@127.0.0.1", "999"], "no_such_call")
    after = [{k: d.get(k) for k in stable} for d in calls_json(ph)]
    assert after == before
    assert status(ph) == "2"
    assert a.count("CALL_CLOSED") == 0
    assert n_sent == len([m for m in ph.trace_messages() if m.sent and m.method in
                          ("INVITE", "BYE", "CANCEL", "REFER")])
    ph.cmd("hangup", str(cid))
    a.wait_event("CALL_CLOSED")
