"""The command line, the control socket and the ini file, against a running
phone (or none)."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import time

import pytest

from peers import account, ini

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


# ---------------------------------------------------------------- two phones

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
