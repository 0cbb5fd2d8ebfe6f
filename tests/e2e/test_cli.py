"""The command line, the control socket and the ini file, against a running
phone (or none)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import tempfile
import time
from pathlib import Path

import pytest

from peers import Phone, account, ini, wait_until

PASSWORD = "p;w#1005"


def registered(phone, account_no=1, timeout=30):
    return phone.events().wait_state(account_no, "registered", timeout, codes={200})


def sock_exchange(path, data: bytes, timeout=10.0, shutdown=True) -> bytes:
    """Sends data on the phone's socket; returns what came back until the phone
    closed, a full line arrived, or the timeout (bounded)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    out = b""
    try:
        s.connect(str(path))
        try:
            s.sendall(data)
            if shutdown:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the phone closed on us: allowed
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and b"\n" not in out:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout, TimeoutError):
                break
            if not chunk:
                break
            out += chunk
    finally:
        s.close()
    return out


def assert_error_or_closed(reply: bytes):
    if not reply:
        return  # closed without an answer: allowed
    line = reply.split(b"\n", 1)[0].decode("utf-8", errors="replace")
    if line.startswith("{"):
        assert json.loads(line).get("ok") is False, line
    else:
        assert line.startswith("ERR "), line


# ---------------------------------------------------------------- no phone running

@pytest.mark.parametrize("word", ["/answer", "/hangupall"])
def test_command_with_no_phone_running_fails_at_once(make_phone, word):
    phone = make_phone(start=False)
    t0 = time.monotonic()
    rc, out, err = phone.cmd(word, check=False, timeout=30)
    elapsed = time.monotonic() - t0
    assert rc == 2, (rc, out, err)
    assert re.search(r"(?i)no (phone|microsip)\b.*\brunning|not running", err), err
    assert elapsed < 5, f"took {elapsed:.1f}s"
    assert not phone.socket_path.exists()  # it did not start a phone


def test_unknown_option_is_named(make_phone):
    phone = make_phone(start=False)
    rc, out, err = phone.cmd("--bogus-option", check=False, timeout=30)
    assert rc != 0
    assert "--bogus-option" in err, err
    assert not phone.socket_path.exists()


# ---------------------------------------------------------------- a dial starts the phone

def two_accounts(kamailio):
    return ini(account(kamailio.address, "1001", PASSWORD),
               account(kamailio.address, "1002", "secret2"))


def sipp_invites(sipp, timeout=30):
    return wait_until(lambda: sipp.received("INVITE"), timeout, what="the INVITE at SIPp")


@pytest.mark.parametrize("how, user", [("dial", "1002"), ("--call", "1001")])
def test_a_phone_started_to_call_registers_then_calls(kamailio, make_phone, make_sipp,
                                                      how, user):
    """`microsip dial TARGET 2` with no phone running starts one that dials from
    account 2 once it registered; `microsip --call TARGET` the same from the active
    account (1)."""
    sipp = make_sipp("uas_answer.xml", timeout_s=60)
    target = f"sip:svc@{sipp.address}"
    args = ["dial", target, "2"] if how == "dial" else ["--call", target]
    phone = make_phone(two_accounts(kamailio), start=False, extra_args=args)
    assert not phone.socket_path.exists()
    phone.start()
    [invite] = sipp_invites(sipp)
    assert re.search(rf"(?im)^(from|f):.*sip:{user}@127\.0\.0\.1", invite), invite
    msgs = phone.trace_messages()
    sent_invite = next(i for i, m in enumerate(msgs) if m.sent and m.method == "INVITE")
    registered_first = [i for i, m in enumerate(msgs)
                        if not m.sent and m.code == 200 and m.cseq_method == "REGISTER"
                        and f"sip:{user}@" in (m.header("to") or "")]
    assert registered_first and registered_first[0] < sent_invite, msgs
    rc, out, _ = phone.cmd("hangupall")
    assert rc == 0, out
    assert sipp.wait() == 0  # answered, ACKed, BYE answered
    assert phone.running()


# ---------------------------------------------------------------- one running phone

@pytest.fixture
def phone(kamailio, make_phone):
    p = make_phone(ini(account(kamailio.address, "1001", PASSWORD)))
    registered(p)
    return p


def test_status_idle(phone):
    rc, out, _ = phone.cmd("STATUS")
    assert rc == 0 and out.strip() == "0", out
    rc, out, _ = phone.cmd("status")
    assert rc == 0 and re.match(r"0\b", out.strip()), out
    rc, out, _ = phone.cmd("Status")
    assert rc == 0 and out.strip().startswith("0"), out


def test_unknown_option_to_running_phone(phone):
    rc, out, err = phone.cmd("--bogus-option", check=False)
    assert rc != 0
    assert "--bogus-option" in err, err
    assert phone.running() and phone.cmd("STATUS")[1].strip() == "0"


def test_unknown_command(phone):
    rc, out, err = phone.cmd("frobnicate", check=False)
    assert rc == 1, (rc, out, err)
    assert "unknown command" in err.lower(), err
    reply = sock_exchange(phone.socket_path, b"frobnicate\n")
    assert reply.startswith(b"ERR ") and b"unknown command" in reply.lower(), reply
    assert phone.cmd("STATUS")[1].strip() == "0"


def test_unknown_sound_device_is_a_clear_error(phone):
    rc, out, err = phone.cmd("setdevice", "output", "No Such Speaker", check=False)
    assert rc == 1, (rc, out, err)
    assert "unknown audio device 'No Such Speaker'" in err, err
    rc, reply = phone.cmd_json("setdevice", "output", "No Such Speaker")
    assert rc == 1 and reply["code"] == "no_such_device", reply
    assert phone.running()
    assert phone.cmd("STATUS")[1].strip() == "0"


def test_socket_line_and_json_protocol(phone):
    reply = sock_exchange(phone.socket_path, b"STATUS\n")
    assert reply == b"OK 0\n", reply
    req = json.dumps({"argv": ["STATUS"], "token": "t1"}).encode() + b"\n"
    line = sock_exchange(phone.socket_path, req).split(b"\n", 1)[0]
    r = json.loads(line)
    assert r.get("ok") is True and r.get("token") == "t1" and r.get("text") == "0", r
    req = json.dumps({"argv": ["hold", "3", "on"], "token": "t2"}).encode() + b"\n"
    r = json.loads(sock_exchange(phone.socket_path, req).split(b"\n", 1)[0])
    assert r.get("ok") is False and r.get("token") == "t2", r
    assert isinstance(r.get("code"), str) and r.get("error"), r


def test_garbage_on_the_socket(phone):
    path = phone.socket_path
    rng = __import__("random").Random(1234)
    junk = bytes(rng.randrange(256) for _ in range(4096))
    assert_error_or_closed(sock_exchange(path, junk + b"\n"))
    assert phone.cmd("STATUS")[1].strip() == "0"
    # 1 MB line without a newline, invalid UTF-8 in it.
    big = b"status " + b"\xff\xfe\xc3\x28" * (1 << 18)
    assert_error_or_closed(sock_exchange(path, big, timeout=20))
    assert phone.cmd("STATUS")[1].strip() == "0"
    # Invalid UTF-8 on a line of its own, NUL bytes, broken JSON, JSON of the wrong shape.
    for bad in (b"\xc3\x28\xa0\xa1\n", b"sta\x00tus\n", b'{"argv": ["status"\n',
                b'{"argv": 5, "token": 1}\n', b"[]\n", b'{"argv": []}\n'):
        assert_error_or_closed(sock_exchange(path, bad))
    # Connect and close without a word; a half-sent line.
    sock_exchange(path, b"")
    sock_exchange(path, b"stat")
    assert phone.running()
    rc, out, _ = phone.cmd("status")
    assert rc == 0 and out.startswith("0"), out


def test_socket_modes(phone):
    st = os.stat(phone.socket_path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
    dst = os.stat(phone.socket_path.parent)
    assert stat.S_IMODE(dst.st_mode) == 0o700, oct(dst.st_mode)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the phone as another user")
def test_socket_refuses_another_user_even_root():
    # The phone runs as `nobody`; root is not stopped by the socket's 0600 mode, so
    # only the phone's own peer-credential check stands between it and the phone.
    nobody = (65534, 65534)
    work = Path(tempfile.mkdtemp(prefix="msuid", dir="/tmp"))  # pytest's tmp is root's 0700
    try:
        os.chmod(work, 0o755)
        phone = Phone(work, ini={"Settings": {"accountId": "0"}}, run_as=nobody)
        # A copy nobody can run, wherever the checkout is (its folders may be 0700).
        phone.bin = str(shutil.copy(phone.bin, work / "microsip"))
        phone.env["HOME"] = str(phone.workdir)
        phone.start()
        assert os.stat(phone.socket_path).st_uid == nobody[0]
        # Root connects, is not served, and nothing changes.
        for data in (b"STATUS\n", b'{"argv":["/exit"],"token":"t"}\n'):
            assert sock_exchange(phone.socket_path, data) == b""
        wait_until(lambda: "refused control connection from uid 0" in phone.stderr_text(),
                   10, 0.05, "the refusal in the phone's log")
        assert phone.running()
        # Its own user is served.
        rc, out, err = phone.cmd("STATUS")
        assert (rc, out.strip()) == (0, "0"), err
        phone.stop()
        assert phone.returncode == 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------- start options to a running phone

def test_call_option_to_a_running_phone_dials(phone, make_sipp):
    sipp = make_sipp("uas_answer.xml", timeout_s=60)
    rc, out, err = phone.cmd("--call", f"sip:svc@{sipp.address}")
    assert rc == 0, err
    cid = int(out.strip())
    phone.events().wait_for("call.confirmed", lambda e: e.get("call") == cid, 30)
    [invite] = sipp_invites(sipp)
    assert re.search(r"(?im)^(from|f):.*sip:1001@", invite), invite
    phone.cmd("hangup", str(cid))
    assert sipp.wait() == 0


def test_level_options_to_a_running_phone_set_the_levels(phone):
    rc, out, err = phone.cmd("--setvolume", "30")
    assert rc == 0 and out.strip() == "30", (rc, out, err)
    assert phone.cmd("volumeup")[1].strip() == "35"  # read back: 30 + one step
    rc, out, err = phone.cmd("--micvolume=20", "--setvolume", "10")
    assert rc == 0 and out.split() == ["10", "20"], (rc, out, err)  # in the documented order
    assert phone.cmd("micdown")[1].strip() == "15"
    assert phone.cmd("volumedown")[1].strip() == "5"
    rc, reply = phone.cmd_json("--setvolume", "40")
    assert rc == 0 and reply["data"]["level"] == 40, reply
    # Options, then the command words, on one connection.
    rc, out, _ = phone.cmd("--setvolume", "50", "STATUS")
    assert rc == 0 and out.split() == ["50", "0"], out


def test_autoanswer_option_to_a_running_phone(kamailio, make_phone, make_baresip):
    ph = make_phone(ini(account(kamailio.address, "1001", PASSWORD), autoAnswer="button",
                        autoAnswerDelay=0, audioInputDevice="null", audioOutputDevice="null"))
    registered(ph)
    b = make_baresip(kamailio, "1002")
    ev = ph.events()
    # Without it the call rings and nobody answers.
    b.dial("sip:1001@127.0.0.1")
    first = ev.wait_for("call.incoming", None, 15)
    time.sleep(1.5)
    assert b.count("CALL_ESTABLISHED") == 0
    b.hangup()
    ev.wait_for("call.ended", lambda e: e.get("call") == first["call"], 15)

    rc, out, err = ph.cmd("--autoanswer", "1")
    assert rc == 0 and "auto-answer on" in out, (rc, out, err)
    b.mark()
    b.dial("sip:1001@127.0.0.1")
    b.wait_event("CALL_ESTABLISHED", timeout=15)
    ev.wait_for("call.confirmed", lambda e: e.get("call") != first["call"], 15)
    b.hangup()
    assert ph.cmd("--autoanswer", "0")[1].strip() == "auto-answer off"


def test_start_only_options_to_a_running_phone_are_refused(phone, tmp_path):
    before = phone.cmd("setvolume", "60")[1].strip()
    assert before == "60"
    for args, needle in [
        (["--user", "1002"], "--user applies only when a phone starts"),
        (["--password", "s3cr3t-x", "--dn", "Bob"], "--dn, --password apply only when a phone starts"),
        (["--debug", str(tmp_path / "other-trace.log")], "is not its SIP trace"),
        (["--log", str(tmp_path / "calls.csv")], "--log applies only when a phone starts"),
        (["--ini", str(tmp_path / "other.ini")], f"is not its ini ({phone.ini_path.resolve()})"),
        (["/i:" + str(tmp_path / "other.ini")], "is not its ini"),
        (["--dialplan", "x.", "--setvolume", "10"], "--dialplan applies only"),
        (["--stun", "127.0.0.1:3478", "--call", "1002"], "--stun applies only"),
    ]:
        rc, out, err = phone.cmd(*args, check=False)
        assert rc == 2, (args, rc, out, err)
        assert needle in err and "a phone is already running for profile" in err, (args, err)
        assert "s3cr3t-x" not in err + out
    # Nothing of a refused request was applied: no level change, no call.
    assert phone.cmd("volumeup")[1].strip() == "65"
    assert phone.cmd("calls")[1].strip() == ""
    # The running phone's own ini and trace are no change: accepted.
    rc, out, err = phone.cmd("--ini", str(phone.ini_path), "--debug", str(phone.trace_path),
                             "--headless", "STATUS")
    assert rc == 0 and out.strip() == "0", (rc, out, err)
    assert phone.running()


# ---------------------------------------------------------------- two phones

def test_two_phones_started_at_once_for_one_profile(kamailio, make_phone):
    """Both start at the same moment with the same arguments: one takes the profile's
    lock and registers; the other waits for its socket, forwards (nothing to do but
    `show`) and exits 0. Kamailio holds one contact, from one source port."""
    a = make_phone(ini(account(kamailio.address, "1001", PASSWORD)), start=False)
    b = make_phone(profile=a.profile, start=False, runtime_dir=a.runtime_dir)
    b.ini_path, b.trace_path = a.ini_path, a.trace_path
    a.start(wait_ready=False)
    b.start(wait_ready=False)
    deadline = time.monotonic() + 30
    while a.running() and b.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    loser, winner = (a, b) if not a.running() else (b, a)
    assert not loser.running(), "both phones still run"
    assert loser.wait_exit(5) == 0, loser.stderr_text()
    assert "a phone is already running for profile" in loser.stderr_text()
    winner.wait_ready()
    registered(winner)
    [c] = kamailio.wait_contacts("1001")
    time.sleep(1.0)  # a second phone's REGISTER would be in by now
    assert len(kamailio.contacts("1001")) == 1, kamailio.ul_dump()
    log = kamailio.log.read_text(errors="replace")
    ports = set(re.findall(r"REGISTER for sip:1001@127\.0\.0\.1\S* from 127\.0\.0\.1:(\d+)", log))
    assert len(ports) == 1, ports
    assert winner.running() and winner.cmd("STATUS")[1].strip() == "0"


def test_two_profiles_side_by_side(kamailio, make_phone):
    a = make_phone(ini(account(kamailio.address, "1001", PASSWORD)), profile="alpha")
    b = make_phone(ini(account(kamailio.address, "1002", "secret2")), profile="beta",
                   runtime_dir=a.runtime_dir)
    registered(a)
    registered(b)
    kamailio.wait_contacts("1001")
    kamailio.wait_contacts("1002")
    assert a.socket_path != b.socket_path and a.socket_path.exists() and b.socket_path.exists()

    assert a.cmd("status")[0] == 0
    a.cmd("unregister")
    assert kamailio.contacts("1001") == []
    assert kamailio.contacts("1002"), "unregister to alpha reached beta"
    assert b.events().account_state(1)[0] == "registered"

    rc, _, _ = b.cmd("/exit")
    assert rc == 0 and b.wait_exit(30) == 0
    assert kamailio.contacts("1002") == []
    assert a.running() and a.cmd("STATUS")[1].strip() == "0"
    a.cmd("register")
    assert kamailio.contacts("1001")


# ---------------------------------------------------------------- the ini file

def test_broken_ini_lines_are_reported_and_the_good_account_registers(kamailio, make_phone):
    text = "\n".join([
        "[Settings]",
        "accountId=1",
        "this is not ini",                         # line 3
        "[Account1]",
        "label=no domain",
        f"server={kamailio.address}",
        "username=1001",
        f"password={PASSWORD}",
        "[Account2]",
        "label=good",
        f"server={kamailio.address}",
        "domain=127.0.0.1",
        "username=1002",
        "password=secret2",
        "registerRefresh=abc",                     # line 15
        "transport=udp",
        "",
    ])
    lines = text.split("\n")
    broken_no = lines.index("this is not ini") + 1
    refresh_no = lines.index("registerRefresh=abc") + 1
    phone = make_phone(text)
    registered(phone, 2)
    kamailio.wait_contacts("1002")
    assert kamailio.contacts("1001") == []
    assert phone.events().account_state(1)[0] == "inactive"

    err = phone.stderr_text()
    name = phone.ini_path.name
    err_lines = err.splitlines()

    def reported(*needles, line_no=None):
        for ln in err_lines:
            if all(n.lower() in ln.lower() for n in needles) and (
                    line_no is None or re.search(rf"(?<!\d){line_no}(?!\d)", ln)):
                return True
        return False

    assert reported(name, line_no=broken_no), err
    assert reported(name, "registerRefresh", line_no=refresh_no), err
    assert reported("domain"), err
    assert re.search(r"(?i)account\s*1\b.*domain|domain.*account\s*1\b", err), err
    assert "panic" not in err.lower()
    assert phone.cmd("STATUS")[1].strip() == "0"


def test_utf16le_ini_with_bom_and_crlf_registers(kamailio, make_phone):
    text = "\r\n".join([
        "[Settings]",
        "accountId=1",
        "[Account1]",
        "label=Zoë",
        f"server={kamailio.address}",
        "domain=127.0.0.1",
        "username=1001",
        f"password={PASSWORD}",
        "transport=udp",
        "",
    ])
    data = b"\xff\xfe" + text.encode("utf-16-le")
    phone = make_phone(data)
    registered(phone)
    kamailio.wait_contacts("1001")
