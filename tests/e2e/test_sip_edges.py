"""More of registration and the account commands, against real peers: OPTIONS from
sipsak, `/account:N /password:P` written to the ini and used at Kamailio, publicAddr
in the Contact Kamailio stores, and --user/--password start options that never reach
the ini.
"""

from __future__ import annotations

import subprocess

from peers import account, ini, which

PASSWORD = "p;w#1005"


def registered(phone, account_no=1, timeout=30):
    return phone.events().wait_state(account_no, "registered", timeout, codes={200})


def test_options_is_answered_200_with_allow(kamailio, make_phone, free_port):
    port = free_port("sip")
    phone = make_phone(ini(account(kamailio.address, "1001", PASSWORD), sourcePort=port))
    registered(phone)
    sipsak = which("sipsak")
    assert sipsak, "sipsak is installed by scripts/install-test-deps.sh"
    r = subprocess.run([sipsak, "-vv", "-s", f"sip:1001@127.0.0.1:{port}"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SIP/2.0 200" in r.stdout, r.stdout
    assert "Allow:" in r.stdout and "INVITE" in r.stdout, r.stdout
    assert "MicroSIP" in r.stdout, r.stdout  # our own User-Agent / Server
    assert "OPTIONS" in phone.trace_text()


def test_account_password_command_stores_and_reregisters(kamailio, make_phone):
    text = (
        "; my phone\n[Settings]\naccountId=1\nsourcePort=0\n\n"
        f"[Account1]\nserver={kamailio.address}\ndomain=127.0.0.1\nusername=1001\n"
        "password=wrong\nmyOwnKey=kept;as#is\n"
    )
    phone = make_phone(text)
    ev = phone.events()
    ev.wait_state(1, "failed", 30)
    rc, out, err = phone.cmd("/account:1", f"/password:{PASSWORD}")
    assert rc == 0, err
    assert "password stored" in out
    ev.wait_state(1, "registered", 30, codes={200})
    kamailio.wait_contacts("1001")
    saved = phone.ini_path.read_text()
    assert f"password={PASSWORD}\n" in saved
    assert "password=wrong" not in saved
    assert saved.startswith("; my phone\n[Settings]\n"), saved  # comment and order kept
    assert "myOwnKey=kept;as#is\n" in saved  # unknown key kept literally
    assert (phone.ini_path.stat().st_mode & 0o777) == 0o600
    # The API audit log has the command, from the command line, without the password.
    audit = (phone.ini_path.parent / "audit.log").read_text()
    assert '"source":"cli"' in audit and '"command":"account"' in audit, audit
    assert PASSWORD not in audit and "wrong" not in audit, audit


def test_account_switch_and_unknown_account(kamailio, make_phone):
    phone = make_phone(ini(account(kamailio.address, "1001", PASSWORD),
                           account(kamailio.address, "1002", "secret2")))
    registered(phone, 1)
    registered(phone, 2)
    rc, out, _ = phone.cmd("account", "2")
    assert rc == 0 and "account 2" in out
    assert "accountId=2" in phone.ini_path.read_text()
    rc, _, err = phone.cmd("account", "7", check=False)
    assert rc == 1 and "no account 7" in err


def test_public_addr_goes_into_the_contact(kamailio, make_phone):
    phone = make_phone(ini(account(kamailio.address, "1001", PASSWORD,
                                   publicAddr="127.0.0.77:5099")))
    registered(phone)
    [c] = kamailio.wait_contacts("1001")
    assert "127.0.0.77:5099" in c["address"], c


def test_start_options_override_without_writing_the_ini(kamailio, make_phone):
    text = "[Settings]\naccountId=1\n[Account1]\nserver=" + kamailio.address + \
        "\ndomain=127.0.0.1\nusername=nobody\npassword=nothing\n"
    phone = make_phone(text, extra_args=["--user", "1002", "--password", "secret2"])
    registered(phone)
    kamailio.wait_contacts("1002")
    saved = phone.ini_path.read_text()
    assert "secret2" not in saved and "username=nobody" in saved
