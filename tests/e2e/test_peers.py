"""The harness checks its own peers, without the phone: Kamailio's config (digest
auth, location table, proxying) and each SIPp registrar scenario, driven by a
small Python SIP client (peers.SipUac) and by sipsak. Each scenario is also
shown to FAIL for a client that misbehaves, so a phone test that relies on it
can fail too."""

from __future__ import annotations

import re
import subprocess
import threading
import time

import pytest

import peers
from peers import SipUac


def codes(responses):
    return [r.code if r is not None else None for r in responses]


# ---------------------------------------------------------------- kamailio

def test_parse_ul_dump_handles_several_aors_and_contacts():
    text = """{
	Domains: {
		Domain: {
			Domain: location
			Size: 1024
			AoRs: {
				Info: {
					AoR: 1001
					HashID: 1
					Contacts: {
						Contact: {
							Address: sip:1001@127.0.0.1:40001;transport=tcp
							Expires: 57
							Call-ID: abc@127.0.0.1
							CSeq: 3
							User-Agent: MicroSIP/0.1: test {x}
							Socket: tcp:127.0.0.1:5080
						}
						Contact: {
							Address: sip:1001@127.0.0.1:40002
							Expires: permanent
							User-Agent: other
							Socket: udp:127.0.0.1:5080
						}
					}
				}
				Info: {
					AoR: 1002
					Contacts: {
						Contact: {
							Address: sip:1002@127.0.0.1:40003
							Expires: 10
						}
					}
				}
			}
			Stats: {
				Records: 2
			}
		}
	}
}
"""
    d = peers.parse_ul_dump(text)
    assert sorted(d) == ["1001", "1002"]
    a, b = d["1001"]
    assert a["address"] == "sip:1001@127.0.0.1:40001;transport=tcp"
    assert a["expires"] == 57 and a["cseq"] == 3
    assert a["user_agent"] == "MicroSIP/0.1: test {x}"
    assert a["socket"] == "tcp:127.0.0.1:5080"
    assert b["expires"] is None and b["user_agent"] == "other"
    assert d["1002"][0]["expires"] == 10
    assert peers.parse_ul_dump("{\n}\n") == {}


def test_free_port_is_free_for_udp_and_tcp():
    import socket
    p = peers.free_port()
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        s = socket.socket(socket.AF_INET, kind)
        s.bind(("127.0.0.1", p))
        s.close()
    assert peers.free_port() != p


def test_kamailio_registers_through_401_with_special_password(kamailio):
    uac = SipUac(kamailio.port, "1001", "p;w#1005")
    resp = uac.register(expires=60)
    assert codes(resp) == [401, 200]
    chal = resp[0].header("www-authenticate")
    assert 'realm="127.0.0.1"' in chal and "algorithm=MD5" in chal
    [c] = kamailio.contacts("1001")
    assert c["address"] == f"sip:1001@127.0.0.1:{uac.local_port}"
    assert c["user_agent"] == "e2e-uac"
    assert 0 < c["expires"] <= 60
    assert c["socket"] == f"udp:127.0.0.1:{kamailio.port}"
    # Un-REGISTER removes it.
    assert codes(uac.register(expires=0)) == [401, 200]
    assert kamailio.contacts("1001") == []
    uac.close()


def test_kamailio_rejects_wrong_password_and_unknown_user(kamailio):
    uac = SipUac(kamailio.port, "1001", "p;w#100")
    assert codes(uac.register()) == [401, 401]
    uac2 = SipUac(kamailio.port, "1999", "whatever")
    assert codes(uac2.register()) == [401, 401]
    assert kamailio.ul_dump() == {}


def test_kamailio_registers_sipsak(kamailio):
    sipsak = peers.which("sipsak")
    assert sipsak, "sipsak not installed"
    port = peers.free_port("udp")
    r = subprocess.run(
        [sipsak, "-U", "-C", f"sip:1002@127.0.0.1:{port}", "-s",
         f"sip:1002@127.0.0.1:{kamailio.port}", "-a", "secret2", "-x", "30", "-vv"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "authorizing" in r.stdout  # it went through the challenge
    [c] = kamailio.contacts("1002")
    assert c["user_agent"].startswith("sipsak")
    assert c["address"] == f"sip:1002@127.0.0.1:{port}"


def test_kamailio_tcp_registration(kamailio):
    uac = SipUac(kamailio.port, "1002", "secret2", transport="tcp")
    assert codes(uac.register(expires=60)) == [401, 200]
    [c] = kamailio.contacts("1002")
    assert c["socket"] == f"tcp:127.0.0.1:{kamailio.port}"
    assert "transport=tcp" in c["address"].lower()
    uac.close()


def test_kamailio_sha256_digest(make_kamailio):
    kam = make_kamailio(algorithm="SHA-256")
    uac = SipUac(kam.port, "1001", "p;w#1005")
    resp = uac.register()
    assert codes(resp) == [401, 200]
    assert "algorithm=SHA-256" in resp[0].header("www-authenticate")
    assert kam.contacts("1001")


def test_kamailio_min_expires_and_expiry(kamailio):
    uac = SipUac(kamailio.port, "1001", "p;w#1005")
    assert codes(uac.register(expires=2)) == [401, 200]
    [c] = kamailio.contacts("1001")
    assert c["expires"] is not None and c["expires"] <= 5  # raised to min_expires 5
    # Not refreshed: the contact leaves the location table by itself.
    kamailio.wait_contacts("1001", present=False, timeout=30)


def test_kamailio_stop_and_start_on_same_port(kamailio):
    port = kamailio.port
    uac = SipUac(port, "1001", "p;w#1005")
    assert codes(uac.register()) == [401, 200]
    kamailio.stop()
    assert not kamailio.running()
    assert codes(uac.register(timeout=2)) == [None]
    kamailio.start()
    assert kamailio.port == port
    assert kamailio.ul_dump() == {}  # in-memory location table
    assert codes(uac.register()) == [401, 200]
    assert kamailio.contacts("1001")


def test_kamailio_challenges_message_with_407_and_routes_to_registered_user(kamailio):
    callee = SipUac(kamailio.port, "1002", "secret2")
    assert codes(callee.register()) == [401, 200]
    caller = SipUac(kamailio.port, "1001", "p;w#1005")
    got = None

    def answer():
        nonlocal got
        got = callee.receive_request(timeout=15)

    t = threading.Thread(target=answer)
    t.start()
    resp = caller.message("1002", "hello")
    t.join(20)
    assert codes(resp) == [407, 200]
    assert got is not None and got.startswith("MESSAGE sip:1002@127.0.0.1:")
    assert got.rstrip().endswith("hello")
    # Unregistered target.
    resp = caller.message("1003", "nobody")
    assert codes(resp) == [407, 404]


# ---------------------------------------------------------------- SIPp

def test_sipp_423_passes_a_client_that_honours_min_expires(make_sipp):
    sipp = make_sipp("reg_423.xml", timeout_s=60)
    uac = SipUac(sipp.port, "1001", "x")
    resp = uac.register(expires=60)
    assert codes(resp) == [423, 200]
    assert resp[0].header("min-expires") == "120"
    assert "Expires: 120" in uac.sent[-1]
    assert resp[1].header("expires") == "120"
    assert codes(uac.register(expires=0)) == [200]  # the un-REGISTER on exit
    assert sipp.wait(60) == 0
    assert len(sipp.received("REGISTER")) == 3


def test_sipp_423_fails_a_client_that_ignores_min_expires(make_sipp):
    sipp = make_sipp("reg_423.xml", timeout_s=60)
    uac = SipUac(sipp.port, "1001", "x", honour_423=False)
    resp = uac.register(expires=60, timeout=3)
    assert resp[0].code == 423
    assert sipp.wait(60) != 0


def test_sipp_403(make_sipp):
    sipp = make_sipp("reg_403.xml", timeout_s=60)
    uac = SipUac(sipp.port, "1001", "x")
    assert codes(uac.register()) == [403]
    assert sipp.wait(60) == 0


def test_sipp_403_fails_a_client_that_hammers(make_sipp):
    sipp = make_sipp("reg_403.xml", timeout_s=60)
    uac = SipUac(sipp.port, "1001", "x")
    for _ in range(13):
        r = uac.register(timeout=3)
        if codes(r) != [403]:
            break
    assert sipp.wait(60) != 0


def test_sipp_401_loop_passes_a_client_that_gives_up(make_sipp):
    sipp = make_sipp("reg_401_loop.xml", timeout_s=90)
    uac = SipUac(sipp.port, "1001", "x")
    first = uac.register()
    assert codes(first) == [401, 401]
    n1 = re.search(r'nonce="([^"]+)"', first[0].header("www-authenticate")).group(1)
    n2 = re.search(r'nonce="([^"]+)"', first[1].header("www-authenticate")).group(1)
    assert n1 != n2  # a fresh nonce every time
    time.sleep(2)  # back-off, then one more attempt
    assert codes(uac.register()) == [401, 401]
    assert sipp.wait(90) == 0
    regs = sipp.received("REGISTER")
    assert len(regs) == 4
    assert sum(1 for r in regs if "\nAuthorization:" in r) == 2


def test_sipp_401_loop_fails_a_client_that_loops(make_sipp):
    sipp = make_sipp("reg_401_loop.xml", timeout_s=90)
    uac = SipUac(sipp.port, "1001", "x")
    for _ in range(10):
        if codes(uac.register(timeout=3)) != [401, 401]:
            break
    assert sipp.wait(90) != 0


def test_sipp_slow_registrar(make_sipp):
    sipp = make_sipp("reg_slow.xml", timeout_s=60)
    uac = SipUac(sipp.port, "1001", "x")
    t0 = time.monotonic()
    resp = uac.register(expires=300)
    assert codes(resp) == [200]
    assert time.monotonic() - t0 >= 2.5  # the registrar's 3 s pause (a lower bound)
    assert resp[0].header("expires") == "300"
    assert codes(uac.register(expires=0)) == [200]
    assert sipp.wait(60) == 0


@pytest.mark.parametrize("scenario", ["reg_423.xml", "reg_403.xml", "reg_401_loop.xml",
                                      "reg_slow.xml"])
def test_sipp_scenarios_fail_when_nobody_registers(make_sipp, scenario):
    """With no REGISTER at all, SIPp's global timeout ends the run with a non-zero code."""
    sipp = make_sipp(scenario, timeout_s=3)
    assert sipp.wait(30) != 0
