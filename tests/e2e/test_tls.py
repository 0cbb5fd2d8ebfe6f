"""SIP over TLS (issue 12): the phone registers to Kamailio's TLS listener with a
certificate made here by `openssl` (a CA of the test's own, named by `tlsCaFile`),
calls baresip (on UDP at the same Kamailio) and is called by it with audio both
ways; a certificate from another CA is refused with a clear reason; when Kamailio
restarts, the phone reconnects and registers again by itself.

Each test runs in a network namespace of its own (`isolated_netns`).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

import audio
import peers
from peers import account, ini
from test_calls import CALL_SECONDS, TONE_A, TONE_US, dial, heard, sent, wait_call

USERS = {"1001": "p;w#1005", "1002": "secret2"}
PASSWORD = USERS["1001"]


def make_ca(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed CA (certificate, key) called `name`."""
    folder.mkdir(parents=True, exist_ok=True)
    crt, key = folder / "ca.crt", folder / "ca.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", str(key), "-out", str(crt), "-days", "2",
                    "-subj", f"/CN={name}"],
                   check=True, capture_output=True, timeout=60)
    return crt, key


def make_server_cert(folder: Path, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    """A server certificate for 127.0.0.1 (IP SAN), signed by `ca`."""
    crt, key, csr = folder / "server.crt", folder / "server.key", folder / "server.csr"
    ext = folder / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                   "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(csr), "-subj", "/CN=127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca[0]),
                    "-CAkey", str(ca[1]), "-CAcreateserial", "-out", str(crt), "-days", "2",
                    "-extfile", str(ext)],
                   check=True, capture_output=True, timeout=60)
    return crt, key


@pytest.fixture
def test_ca(tmp_path):
    return make_ca(tmp_path / "ca", "Test SIP CA")


@pytest.fixture
def tls_kam(make_kamailio, tmp_path, test_ca):
    crt, key = make_server_cert(tmp_path / "ca", test_ca)
    return make_kamailio(users=USERS, tls_cert=crt, tls_key=key)


def tls_phone(make_phone, kam, ca_file: Path, tmp_path, auto_answer="all"):
    """The phone as 1001 registering over TLS to kam, trusting ca_file; plays 440 Hz
    and writes what it hears to .out_path."""
    src = audio.make_tone_wav(tmp_path / "phone-src.wav", TONE_US, 30)
    out = tmp_path / "phone-out.wav"
    ph = make_phone(ini(account(kam.tls_address, "1001", PASSWORD, transport="tls",
                                tlsCaFile=str(ca_file)),
                        audioInputDevice=f"file:{src}", audioOutputDevice=f"file:{out}",
                        autoAnswer=auto_answer, autoAnswerDelay=0))
    ph.out_path = out
    return ph


def test_registers_over_tls_and_calls_both_ways(isolated_netns, tls_kam, test_ca,
                                                  make_phone, make_baresip, tmp_path):
    ph = tls_phone(make_phone, tls_kam, test_ca[0], tmp_path)
    ev = ph.events()
    # The state, not the event: the phone may have registered before the stream began.
    ev.wait_state(1, "registered", 30, codes={200})
    # Kamailio bound a TLS contact, reached over its TLS socket, through the 401.
    [c] = tls_kam.wait_contacts("1001")
    assert c["socket"] == f"tls:{tls_kam.tls_address}", c
    assert "transport=tls" in c["address"].lower(), c
    registers = sent(ph, "REGISTER")
    assert all("transport=tls" in (m.header("Contact") or "").lower() for m in registers), \
        [m.header("Contact") for m in registers]
    assert registers and all(m.transport == "TLS" for m in registers), \
        [(m.transport, m.first_line) for m in registers]
    assert any("Authorization:" in m.text for m in registers)
    assert PASSWORD not in ph.trace_text()

    # We call baresip (1002, UDP at the same Kamailio): it hears our tone.
    a = make_baresip(tls_kam, "1002", tone=TONE_A)
    cid = dial(ph, "1002")
    est = a.wait_event("CALL_ESTABLISHED")
    wait_call(ph, "call.confirmed", cid)
    invites = sent(ph, "INVITE")
    assert invites and invites[0].transport == "TLS", [(m.transport, m.first_line) for m in invites]
    time.sleep(CALL_SECONDS)
    rc, out, err = ph.cmd("hangup", str(cid))
    assert rc == 0, (out, err)
    closed = a.wait_event("CALL_CLOSED")
    wait_call(ph, "call.ended", cid)
    _, dec = a.recordings()
    heard(dec, TONE_US, closed["_t"] - est["_t"], "baresip's recording of our call")

    # baresip calls us: the INVITE comes down our registration's TLS connection.
    a.dial("sip:1001@127.0.0.1")
    inc = wait_call(ph, "call.incoming")
    cid2 = inc["call"]
    est2 = a.wait_event("CALL_ESTABLISHED")
    wait_call(ph, "call.confirmed", cid2)
    received_invites = [m for m in ph.trace_messages()
                        if not m.sent and m.method == "INVITE"]
    assert received_invites and received_invites[-1].transport == "TLS", \
        [(m.transport, m.first_line) for m in received_invites]
    time.sleep(CALL_SECONDS)
    a.hangup()
    closed2 = a.wait_event("CALL_CLOSED")
    wait_call(ph, "call.ended", cid2)
    heard(ph.out_path, TONE_A, closed2["_t"] - est2["_t"], "the phone's output file")
    assert PASSWORD not in ph.trace_text()


def test_a_certificate_from_another_ca_is_refused(isolated_netns, make_kamailio, test_ca,
                                                    make_phone, tmp_path):
    other = make_ca(tmp_path / "other", "Other SIP CA")
    crt, key = make_server_cert(tmp_path / "other", other)
    kam = make_kamailio(users=USERS, tls_cert=crt, tls_key=key)
    ph = tls_phone(make_phone, kam, test_ca[0], tmp_path)
    # The first failure may come before our event stream: the snapshot has it.
    failed = ph.events().wait_state(1, "failed", 30, codes={495})
    reason = failed.get("reason", "")
    assert "TLS: certificate not trusted" in reason, failed
    assert "Other SIP CA" in reason, failed
    # Refused: retried after a refusal's back-off (30 s first), not at full speed.
    if "retry_in" in failed:
        assert failed["retry_in"] >= 30, failed
    assert kam.contacts("1001") == []
    assert not sent(ph, "REGISTER"), "nothing may go out on an untrusted connection"


def test_kamailio_restart_the_phone_reconnects_and_registers_again(
        isolated_netns, tls_kam, test_ca, make_phone, tmp_path):
    ph = tls_phone(make_phone, tls_kam, test_ca[0], tmp_path)
    ev = ph.events()
    ev.wait_state(1, "registered", 30, codes={200})
    [before] = tls_kam.wait_contacts("1001")
    tls_kam.stop()
    lost = ev.wait_for("account.failed", timeout=30)
    assert "TLS connection" in lost.get("reason", "") and "lost" in lost["reason"], lost
    tls_kam.start()
    again = ev.wait_for("account.registered", timeout=60)
    assert again.get("code") == 200, again
    [after] = tls_kam.wait_contacts("1001")
    assert after["socket"] == f"tls:{tls_kam.tls_address}", after
    assert after["address"] != before["address"], (before, after)  # a new connection
