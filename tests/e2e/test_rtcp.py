"""RTCP with baresip through Kamailio: reports both ways, the round-trip time
and loss in `calls` and in `call.quality` events, the final numbers in
`call.ended`, and a BYE when the call ends.

The wire (rtp.RtpTap on lo) shows what we send: SR/RR from our SSRC on the
RTP port + 1, or on the RTP port itself when baresip offered rtcp-mux. That
baresip READ our reports shows in its own: its report block about our stream
carries LSR = the middle 32 bits of the NTP time of one of our SRs.

The phone is 1001; baresip is 1002. Timings are loose: baresip reports about
every 5 s, so a call of ~11 s sees at least one report each way.
"""

from __future__ import annotations

import re
import struct
import time

import peers
import rtp
# The helpers and fixtures (`kam` with users 1001-1003, `call_phone`: a
# registered phone with file audio) of the call tests.
from test_calls import (CALLS_LINE, TONE_A, calls_json, call_phone, dial,  # noqa: F401
                        kam, received, sent, wait_call)

CALL_SECONDS = 11
PT_SR, PT_RR, PT_SDES, PT_BYE = 200, 201, 202, 203


def report_blocks(packet: bytes) -> list[dict]:
    """The report blocks of one SR or RR."""
    pt, count = packet[1], packet[0] & 0x1F
    at = 28 if pt == PT_SR else 8
    blocks = []
    for i in range(count):
        b = packet[at + 24 * i: at + 24 * (i + 1)]
        if len(b) < 24:
            break
        ssrc, lost, ext, jitter, lsr, dlsr = struct.unpack("!IIIIII", b)
        blocks.append(dict(ssrc=ssrc, fraction=lost >> 24, lost=lost & 0xFFFFFF,
                           ext=ext, jitter=jitter, lsr=lsr, dlsr=dlsr))
    return blocks


def reports(datagrams: list[rtp.RtcpDatagram]) -> list[tuple[int, int, bytes]]:
    """Every SR/RR in these datagrams: (type, sender SSRC, packet)."""
    out = []
    for d in datagrams:
        for pt, _, packet in d.packets():
            if pt in (PT_SR, PT_RR) and len(packet) >= 8:
                out.append((pt, struct.unpack("!I", packet[4:8])[0], packet))
    return out


def sr_lsr_values(our_reports) -> set[int]:
    """The LSR a peer would echo for each of our SRs (middle 32 bits of NTP)."""
    out = set()
    for pt, _, packet in our_reports:
        if pt == PT_SR and len(packet) >= 16:
            msw, lsw = struct.unpack("!II", packet[8:16])
            out.add(((msw & 0xFFFF) << 16) | (lsw >> 16))
    return out


def quality_events(ph: peers.Phone, cid: int) -> list[dict]:
    ev = ph.events()
    with ev._cond:
        return [e for e in ev.items if e.get("type") == "call.quality" and e.get("call") == cid]


def check_quality_fields(q: dict, what: str) -> None:
    for key in ("jitter", "loss", "lost", "rtt", "remote_loss", "remote_lost",
                "remote_jitter", "rtcp", "rtcp_sent"):
        assert key in q, f"{what}: no {key!r} in {q}"
    assert isinstance(q["jitter"], int) and 0 <= q["jitter"] < 200, q
    # Loopback loses nothing (a few packets at most on a loaded machine).
    assert 0 <= q["loss"] < 5 and 0 <= q["lost"] < 25, q


def run_call_and_check(ph, a, cid, tap, ours: int, theirs: int, mux: bool):
    """Waits for reports both ways during the call, checks `calls` and the
    events, hangs up, checks call.ended and the wire."""
    t0 = time.monotonic()
    # baresip's first report comes about 5 s in; the RTT once it answers an SR of ours.
    q = wait_call(ph, "call.quality", cid, timeout=15,
                  pred=lambda e: e.get("rtt") is not None)
    check_quality_fields(q, "call.quality")
    assert q["rtcp"] >= 1 and 0 <= q["rtt"] < 500, q
    # The peer's view of our stream: loss and jitter as baresip reported them.
    assert q["remote_loss"] is not None and q["remote_loss"] < 5, q
    assert q["remote_jitter"] is not None and q["remote_jitter"] < 200, q

    # `calls`, JSON and plain, carry the same numbers.
    [entry] = [c for c in calls_json(ph) if c["id"] == cid]
    check_quality_fields(entry, "calls")
    assert entry["rtcp"] >= 1 and entry["rtt"] is not None and entry["rtt"] >= 0, entry
    assert entry["rtcp_sent"] >= 1, entry
    rc, out, err = ph.cmd("calls")
    assert rc == 0, err
    line = [p for p in out.strip().split("; ") if p.startswith(f"{cid} ")][0]
    assert CALLS_LINE.match(line), line
    assert re.search(r" jitter=\d+ms loss=\d+\.\d% rtt=\d+ms$", line), line

    time.sleep(max(0.0, CALL_SECONDS - (time.monotonic() - t0)))
    rc, out, err = ph.cmd("hangup", str(cid))
    assert rc == 0, (out, err)
    a.wait_event("CALL_CLOSED")
    ended = wait_call(ph, "call.ended", cid)
    check_quality_fields(ended, "call.ended")
    assert ended["rtcp"] >= q["rtcp"] and ended["rtcp_sent"] >= 2, ended
    assert ended["rtt"] is not None, ended
    events = quality_events(ph, cid)
    assert 1 <= len(events) <= 10, events  # one per report received, ~every 5 s

    # The wire. Our RTCP port: the RTP port + 1, or the RTP port with rtcp-mux.
    time.sleep(0.3)  # the BYE leaves as the media closes
    our_rtcp, their_rtcp = (ours, theirs) if mux else (ours + 1, theirs + 1)
    our_rtp = tap.flow(src=ours, dst=theirs)
    their_rtp = tap.flow(src=theirs, dst=ours)
    assert our_rtp and their_rtp, tap.diagnostics()
    our_ssrc, their_ssrc = our_rtp[0].ssrc, their_rtp[0].ssrc
    ours_out = tap.rtcp_flow(src=our_rtcp, dst=their_rtcp)
    theirs_in = tap.rtcp_flow(src=their_rtcp, dst=our_rtcp)
    mine = reports(ours_out)
    assert len(mine) >= 2, f"{len(ours_out)} RTCP datagrams from {our_rtcp} to {their_rtcp}"
    assert all(ssrc == our_ssrc for _, ssrc, _ in mine), (our_ssrc, mine)
    # We send all along: SRs, each with a block about baresip's stream, and a CNAME.
    assert all(pt == PT_SR for pt, _, _ in mine), [pt for pt, _, _ in mine]
    for _, _, packet in mine:
        blocks = report_blocks(packet)
        assert [b["ssrc"] for b in blocks] == [their_ssrc], blocks
        assert blocks[0]["lost"] < 25, blocks
    assert all(any(pt == PT_SDES for pt, _, _ in d.packets()) for d in ours_out)
    assert any(pt == PT_BYE for pt, _, _ in ours_out[-1].packets()), "no BYE at the end"
    # baresip's reports about our stream echo one of our SRs: it read them.
    theirs_reports = reports(theirs_in)
    assert theirs_reports, f"no RTCP from baresip {their_rtcp} to {our_rtcp}"
    about_us = [b for _, _, p in theirs_reports for b in report_blocks(p)
                if b["ssrc"] == our_ssrc]
    assert about_us, theirs_reports
    echoed = {b["lsr"] for b in about_us} - {0}
    assert echoed and echoed <= sr_lsr_values(mine), (echoed, sr_lsr_values(mine))
    # And ours echo baresip's SRs (its RTT comes from them).
    our_blocks = [b for _, _, p in mine for b in report_blocks(p)]
    ours_echoed = {b["lsr"] for b in our_blocks} - {0}
    assert ours_echoed and ours_echoed <= sr_lsr_values(theirs_reports), \
        (ours_echoed, sr_lsr_values(theirs_reports))
    print(f"call {cid}: {len(events)} call.quality events; call.ended {ended}")
    return ended


def test_reports_both_ways_when_we_call_baresip(kam, call_phone, make_baresip, rtp_tap):
    a = make_baresip(kam, "1002", tone=TONE_A)
    ph = call_phone()
    cid = dial(ph, "1002")
    a.wait_event("CALL_ESTABLISHED")
    wait_call(ph, "call.confirmed", cid)
    invite = sent(ph, "INVITE")[0]
    answer = [m for m in received(ph, code=200) if m.cseq_method == "INVITE" and m.body][0]
    # We do not offer rtcp-mux; baresip (rtcp_mux off) does not answer with it.
    assert "a=rtcp-mux" not in invite.body and "a=rtcp-mux" not in answer.body
    ours, theirs = rtp.sdp_audio_port(invite.body), rtp.sdp_audio_port(answer.body)
    assert ours % 2 == 0, ours
    run_call_and_check(ph, a, cid, rtp_tap, ours, theirs, mux=False)


def test_rtcp_mux_when_baresip_offers_it(kam, call_phone, make_baresip, rtp_tap):
    ph = call_phone(auto_answer="all")
    a = make_baresip(kam, "1002", tone=TONE_A, extra_config="rtcp_mux\t\tyes\n")
    a.dial("sip:1001@127.0.0.1")
    inc = wait_call(ph, "call.incoming")
    cid = inc["call"]
    a.wait_event("CALL_ESTABLISHED")
    wait_call(ph, "call.confirmed", cid)
    offer = [m for m in received(ph, "INVITE") if m.body][0]
    answer = [m for m in sent(ph, code=200) if m.cseq_method == "INVITE" and m.body][0]
    assert "a=rtcp-mux" in offer.body, offer.text
    assert "a=rtcp-mux" in answer.body, answer.text
    ours, theirs = rtp.sdp_audio_port(answer.body), rtp.sdp_audio_port(offer.body)
    run_call_and_check(ph, a, cid, rtp_tap, ours, theirs, mux=True)
    # Nothing went to the RTCP ports: everything shares the RTP ports.
    assert not rtp_tap.rtcp_flow(src=ours + 1), "RTCP on port + 1 despite rtcp-mux"
