"""SRTP keyed by SDES (RFC 4568) against baresip's `srtp` module, each test in a
network namespace of its own (the `isolated_netns` fixture): the account's
`SRTP=` decides what we offer and accept.

- mandatory against baresip `mediaenc=srtp-mand`: calls both ways with tones heard
  both ways, RTP/SAVP and a=crypto in the SDP, and on the wire (rtp.RtpTap) our
  packets and baresip's carry no tone when read as PCMU/PCMA; a hold and resume
  (re-INVITEs) keeps the keys and the audio comes back;
- mandatory against baresip without SRTP: its call is answered 488, ours ends
  with the reason, and not one RTP packet leaves our port;
- optional: in clear against baresip without SRTP (the tone is on the wire),
  encrypted against baresip `mediaenc=srtp` (RTP/AVP with a=crypto both ways).
"""
from __future__ import annotations

import re
import time

import audio
import rtp
from test_calls import (TONE_A, TONE_US, call_phone, dial, heard, kam,  # noqa: F401 (fixtures)
                        received, sent, wait_call)

CALL_SECONDS = 6
CRYPTO = re.compile(r"(?m)^a=crypto:\d+ AES_CM_128_HMAC_SHA1_(80|32) inline:[A-Za-z0-9+/=]{40}")


def srtp_phone(call_phone, mode: str, **kw):
    return call_phone(account_keys={"SRTP": mode}, **kw)


def answer_to_invite(msgs) -> str:
    """The SDP of the first 200 to an INVITE among msgs (sent or received)."""
    bodies = [m.body for m in msgs if m.cseq_method == "INVITE" and m.body]
    assert bodies, "no 200 with SDP to an INVITE"
    return bodies[0]


def profile(sdp: str) -> str | None:
    m = re.search(r"(?m)^m=audio \d+ (\S+) ", sdp)
    return m.group(1) if m else None


def assert_encrypted(tap, ours: int, theirs: int, t0: float, t1: float, what: str):
    """Both directions between our RTP port and baresip's carried packets in
    [t0, t1) and none of them reads as the tones when decoded as G.711."""
    out = tap.flow(src=ours, dst=theirs, t0=t0, t1=t1)
    back = tap.flow(src=theirs, dst=ours, t0=t0, t1=t1)
    assert len(out) >= 100 and len(back) >= 100, \
        f"{what}: {len(out)} packets out, {len(back)} back\n{tap.diagnostics()}"
    for flow, tone in ((out, TONE_US), (back, TONE_A)):
        assert rtp.tone_packets(flow, tone) == 0, f"{what}: the {tone} Hz tone is on the wire"
        # A 10-byte (or 4-byte) tag after 160 bytes of 20 ms G.711.
        assert {len(p.payload) for p in flow} <= {164, 170}, {len(p.payload) for p in flow}


def baresip_calls_us_encrypted(ph, a, rtp_tap, want_profile: str, what: str) -> None:
    """baresip `a` calls the phone and hangs up after CALL_SECONDS; both SDPs carry
    `want_profile` with a crypto line, each side hears the other's tone, and no
    packet on the wire between the two RTP ports decodes to a tone."""
    a.dial("sip:1001@127.0.0.1")
    est = a.wait_event("CALL_ESTABLISHED")
    cid = wait_call(ph, "call.confirmed")["call"]
    t0 = time.time()
    time.sleep(CALL_SECONDS)
    t1 = time.time()
    a.hangup()
    closed = a.wait_event("CALL_CLOSED")
    wait_call(ph, "call.ended", cid)
    offer = received(ph, "INVITE")[0].body
    answer = answer_to_invite(sent(ph, code=200))
    assert profile(offer) == want_profile and CRYPTO.search(offer), offer
    assert profile(answer) == want_profile and CRYPTO.search(answer), answer
    heard(ph.out_path, TONE_A, closed["_t"] - est["_t"], "the phone's output file")
    _, dec = a.recordings()
    assert audio.tone_coverage(dec, TONE_US) >= 0.9, audio.describe(dec, TONE_US)
    assert_encrypted(rtp_tap, rtp.sdp_audio_port(answer), rtp.sdp_audio_port(offer),
                     t0, t1, what)


def test_mandatory_baresip_srtp_mand_calls_us_encrypted_both_ways(isolated_netns, kam,
                                                                   call_phone, make_baresip,
                                                                   rtp_tap):
    ph = srtp_phone(call_phone, "mandatory")
    a = make_baresip(kam, "1002", tone=TONE_A, mediaenc="srtp-mand")
    baresip_calls_us_encrypted(ph, a, rtp_tap, "RTP/SAVP", "baresip's call")


def test_mandatory_we_call_baresip_srtp_mand_and_hold_keeps_the_keys(isolated_netns, kam,
                                                                     call_phone, make_baresip,
                                                                     rtp_tap):
    a = make_baresip(kam, "1002", tone=TONE_A, mediaenc="srtp-mand")
    ph = srtp_phone(call_phone, "mandatory")
    cid = dial(ph, "1002")
    a.wait_event("CALL_ESTABLISHED")
    wait_call(ph, "call.confirmed", cid)
    t0 = time.time()
    time.sleep(CALL_SECONDS)
    t1 = time.time()
    # Hold and resume: two re-INVITEs, the same keys, the audio comes back.
    rc, out, err = ph.cmd("hold", str(cid), "on")
    assert rc == 0, (out, err)
    wait_call(ph, "call.held", cid)
    time.sleep(1)
    rc, out, err = ph.cmd("hold", str(cid), "off")
    assert rc == 0, (out, err)
    wait_call(ph, "call.resumed", cid)
    t_resume = time.time()
    time.sleep(CALL_SECONDS)
    t_end = time.time()
    ph.cmd("hangup", str(cid))
    a.wait_event("CALL_CLOSED")

    offer = sent(ph, "INVITE")[0].body
    answer = answer_to_invite(received(ph, code=200))
    assert profile(offer) == "RTP/SAVP" and len(CRYPTO.findall(offer)) == 2, offer
    assert profile(answer) == "RTP/SAVP" and CRYPTO.search(answer), answer
    # Every re-INVITE offers the same key (the context goes on).
    keys = {tuple(re.findall(r"inline:(\S+)", m.body)) for m in sent(ph, "INVITE")}
    assert len(keys) == 1, keys
    _, dec = a.recordings()
    heard(dec, TONE_US, t1 - t0, "baresip's recording of what it received (before the hold)")
    # What we heard after the resume: baresip's tone, decrypted.
    assert audio.tone_seconds(ph.out_path, TONE_A) >= 0.9 * (CALL_SECONDS + (t1 - t0)), \
        audio.describe(ph.out_path, TONE_A)
    ours, theirs = rtp.sdp_audio_port(offer), rtp.sdp_audio_port(answer)
    assert_encrypted(rtp_tap, ours, theirs, t0, t1, "before the hold")
    assert_encrypted(rtp_tap, ours, theirs, t_resume + 0.5, t_end, "after the resume")
    blog = a.log.read_text(errors="replace")
    assert "failed to decrypt" not in blog, blog[-3000:]


def test_mandatory_refuses_an_incoming_clear_offer_with_488(isolated_netns, kam, call_phone,
                                                           make_baresip, rtp_tap):
    ph = srtp_phone(call_phone, "mandatory")
    a = make_baresip(kam, "1002", tone=TONE_A)
    a.dial("sip:1001@127.0.0.1")
    closed = a.wait_event("CALL_CLOSED")
    assert "488" in str(closed), closed
    ended = wait_call(ph, "call.ended")
    assert ended["code"] == 488 and "SRTP" in ended["reason"], ended
    assert sent(ph, code=488), ph.trace_text()[-2000:]
    assert not sent(ph, code=200, call_id=received(ph, "INVITE")[0].call_id)
    theirs = rtp.sdp_audio_port(received(ph, "INVITE")[0].body)
    assert rtp_tap.flow(dst=theirs) == [], "RTP reached baresip"


def test_mandatory_call_to_a_clear_peer_ends_with_a_reason_and_no_rtp(isolated_netns, kam,
                                                                      call_phone, make_baresip,
                                                                      rtp_tap):
    a = make_baresip(kam, "1002", tone=TONE_A)
    ph = srtp_phone(call_phone, "mandatory")
    cid = dial(ph, "1002")
    ended = wait_call(ph, "call.ended", cid)
    assert ended["code"] == 488 and "SRTP" in ended["reason"], ended
    offer = sent(ph, "INVITE")[0].body
    assert profile(offer) == "RTP/SAVP", offer
    assert rtp_tap.flow(src=rtp.sdp_audio_port(offer)) == [], "clear RTP left our port"
    assert rtp_tap.rtcp_flow(src=rtp.sdp_audio_port(offer)) == []
    assert a.count("CALL_ESTABLISHED") == 0 or a.wait_event("CALL_CLOSED")


def test_optional_against_a_clear_peer_is_clear(isolated_netns, kam, call_phone,
                                                make_baresip, rtp_tap):
    a = make_baresip(kam, "1002", tone=TONE_A)
    ph = srtp_phone(call_phone, "optional")
    cid = dial(ph, "1002")
    est = a.wait_event("CALL_ESTABLISHED")
    wait_call(ph, "call.confirmed", cid)
    time.sleep(CALL_SECONDS)
    ph.cmd("hangup", str(cid))
    closed = a.wait_event("CALL_CLOSED")
    offer = sent(ph, "INVITE")[0].body
    answer = answer_to_invite(received(ph, code=200))
    assert profile(offer) == "RTP/AVP" and len(CRYPTO.findall(offer)) == 2, offer
    assert not CRYPTO.search(answer), answer
    _, dec = a.recordings()
    heard(dec, TONE_US, closed["_t"] - est["_t"], "baresip's recording of what it received")
    out = rtp_tap.flow(src=rtp.sdp_audio_port(offer), dst=rtp.sdp_audio_port(answer))
    assert rtp.tone_packets(out, TONE_US) >= 100, rtp_tap.diagnostics()


def test_optional_against_baresip_srtp_is_encrypted(isolated_netns, kam, call_phone,
                                                    make_baresip, rtp_tap):
    ph = srtp_phone(call_phone, "optional")
    a = make_baresip(kam, "1002", tone=TONE_A, mediaenc="srtp")
    baresip_calls_us_encrypted(ph, a, rtp_tap, "RTP/AVP", "baresip's best-effort call")
