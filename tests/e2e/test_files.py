"""The files the phone keeps (issue 10): an ini it cannot read whole is refused and
left exactly as it was; a large ini starts and its history reads back; stale
temporary files of a dead phone are cleaned, others kept; and the control socket
bounds the connections a client may hold."""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import time
from pathlib import Path

import pytest

from peers import (Phone, connection_holder, control_line, holder_replies, ini,
                   wait_until)


def fingerprint(path: Path) -> tuple:
    """What must not change: type, inode, size, modification time, content hash."""
    st = os.lstat(path)
    digest = None
    if stat.S_ISREG(st.st_mode):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        digest = h.hexdigest()
    return (stat.S_IFMT(st.st_mode), st.st_ino, st.st_size, st.st_mtime_ns, digest)


def refused_to_start(ph: Phone) -> tuple[int, str]:
    ph.start(wait_ready=False)
    rc = ph.wait_exit(30)
    return rc, ph.stderr_text()


def calls_ini(n: int, last_key: int = 0, extra_keys: int = 0) -> str:
    """The local account only, `n` [Calls] entries (key i: number 10<i>, time
    1700000000 + i), and `extra_keys` more keys in a section of their own."""
    lines = ["[Settings]", "accountId=0", "sourcePort=0", f"callsLastKey={last_key}",
             "audioInputDevice=null", "audioOutputDevice=null", "[Calls]"]
    lines += [f"{i}=10{i};Name {i};1;{1_700_000_000 + i};{i % 60};" for i in range(n)]
    lines.append("[Plugin]")
    lines += [f"key{i}=value {i}" for i in range(extra_keys)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- refused files

def test_an_ini_over_the_size_limit_is_refused_and_left_untouched(make_phone):
    ph = make_phone(start=False)
    # 70 MB of a real ini (history lines), not a sparse file: every byte must stay.
    line = "1234=5551234;Someone;1;1700000000;42;a long info field to fill the file\n"
    block = ("[Settings]\naccountId=0\n[Calls]\n" + line * 100_000).encode()
    with open(ph.ini_path, "wb") as f:
        while f.tell() < 70 * 1000 * 1000:
            f.write(block)
    before = fingerprint(ph.ini_path)
    rc, err = refused_to_start(ph)
    assert rc != 0, err
    assert str(ph.ini_path) in err and "limit" in err and "left as it is" in err, err
    assert fingerprint(ph.ini_path) == before
    # Nothing else was written beside it (no default profile, no temporary file).
    assert sorted(p.name for p in ph.ini_path.parent.iterdir()
                  if p.name.startswith("microsip.ini")) == ["microsip.ini"]


def test_a_fifo_as_ini_is_refused_at_once_and_stays_a_fifo(make_phone):
    ph = make_phone(start=False)
    os.mkfifo(ph.ini_path, 0o600)
    before = fingerprint(ph.ini_path)
    t0 = time.monotonic()
    rc, err = refused_to_start(ph)  # bounded: wait_exit fails after 30 s
    assert rc != 0, err
    assert "FIFO" in err and "not a regular file" in err, err
    assert fingerprint(ph.ini_path) == before
    assert stat.S_ISFIFO(os.lstat(ph.ini_path).st_mode)
    assert time.monotonic() - t0 < 30


def test_a_device_as_ini_is_refused(make_phone):
    ph = make_phone(start=False)
    if os.geteuid() == 0:
        # Our own node (the null device's numbers) in the test folder: a phone that
        # got this wrong as root must not be able to replace the real /dev/null.
        os.mknod(ph.ini_path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    else:
        ph.ini_path = Path("/dev/null")  # not ours to replace anyway
    before = fingerprint(ph.ini_path)
    rc, err = refused_to_start(ph)
    assert rc != 0 and "character device" in err, err
    assert fingerprint(ph.ini_path)[:3] == before[:3]  # still the same device node
    assert os.lstat(ph.ini_path).st_rdev == os.makedev(1, 3)


# ---------------------------------------------------------------- large files

def test_an_ini_with_10k_history_entries_starts_reads_and_keeps_them(make_phone, make_sipp):
    n = 10_000
    ph = make_phone(calls_ini(n, last_key=499), start=False)
    ph.start()
    rc, reply = ph.cmd_json("history")
    assert rc == 0 and reply["ok"], reply
    listed = reply["data"]
    # MicroSIP's ring holds keys 0..999: those are the history, newest first.
    assert len(listed) == 1000, len(listed)
    assert [e["number"] for e in listed[:3]] == ["10999", "10998", "10997"]
    assert listed[-1]["number"] == "100" and listed[-1]["type"] == "in"
    assert all(e["name"] == f"Name {e['number'][2:]}" for e in listed)

    # A call adds one entry at callsLastKey + 1 = 500; the other 9,999 stay.
    sipp = make_sipp("uas_answer.xml", timeout_s=60)
    ph.events().snapshot()  # subscribed before the call
    rc, out, err = ph.cmd("dial", f"sip:777@{sipp.address}")
    assert rc == 0, err
    call = int(out.strip())
    ph.events().wait_for("call.confirmed", lambda e: e.get("call") == call, 30)
    ph.cmd("hangup", str(call))
    ph.events().wait_for("call.ended", lambda e: e.get("call") == call, 30)

    def history_has_the_call():
        data = ph.cmd_json("history")[1]["data"]
        return data and data[0]["number"].startswith("777") and data
    listed = wait_until(history_has_the_call, 20, what="the call in the history")
    assert len(listed) == 1000
    text = ph.ini_path.read_text()
    keys = {}
    section = None
    for ln in text.splitlines():
        if ln.startswith("["):
            section = ln
        elif section == "[Calls]" and "=" in ln:
            k, v = ln.split("=", 1)
            keys[k] = v
    assert len(keys) == n
    assert keys["500"].startswith("777"), keys["500"]
    assert all(keys[str(i)].startswith(f"10{i};Name {i};") for i in range(n) if i != 500)
    assert "callsLastKey=500" in text
    assert not [p for p in ph.ini_path.parent.iterdir() if ".tmp-" in p.name]


def test_an_ini_with_100k_keys_starts_and_answers(make_phone):
    ph = make_phone(calls_ini(1000, last_key=999, extra_keys=99_000), start=False)
    ph.start()
    assert ph.cmd("STATUS")[1].strip() == "0"
    rc, reply = ph.cmd_json("history")
    assert rc == 0 and len(reply["data"]) == 1000, reply.get("error")
    assert reply["data"][0]["number"] == "10999"
    # No problem reported for a well-formed file, however large.
    assert "microsip: line" not in ph.stderr_text(), ph.stderr_text()[-2000:]


# ---------------------------------------------------------------- temporary files

def test_stale_temporary_files_of_a_dead_phone_are_removed_and_nothing_else(make_phone):
    ph = make_phone(ini(accountId=0), start=False)
    folder = ph.ini_path.parent
    dead = 2 ** 22 + 1000  # above Linux's largest pid: no such process
    alive = os.getpid()
    names = {
        f"microsip.ini.tmp-{dead}": False,   # ours, its writer is gone: removed
        f"Contacts.xml.tmp-{dead}": False,   # ours too
        f"microsip.ini.tmp-{alive}": True,   # a live process's: kept
        f"notes.txt.tmp-{dead}": True,       # not a file of ours: kept
        "microsip.ini.tmp-x": True,          # not a pid: kept
        "microsip.ini.bak": True,
    }
    for name in names:
        (folder / name).write_text("partial")
    ph.start()
    for name, kept in names.items():
        assert (folder / name).exists() == kept, name
    assert ph.cmd("STATUS")[1].strip() == "0"


# ---------------------------------------------------------------- control connections

PER_CLIENT = 64   # crates/control/src/socket.rs MAX_CONNECTIONS_PER_CLIENT
TOTAL = 256       # MAX_CONNECTIONS


def answered_connection(path: Path) -> socket.socket:
    """A connection whose STATUS was answered, once the phone admits one (bounded)."""
    def attempt():
        s, line = control_line(path)
        if line == b"OK 0\n":
            return s
        s.close()
        return None
    return wait_until(attempt, 10, 0.05, "the phone to admit a connection")


def test_a_client_may_hold_a_bounded_number_of_connections(make_phone):
    ph = make_phone(ini(accountId=0, audioInputDevice="null", audioOutputDevice="null"))
    held = []
    try:
        for _ in range(PER_CLIENT):
            s, line = control_line(ph.socket_path)
            held.append(s)
            assert line == b"OK 0\n", line
        s, line = control_line(ph.socket_path)
        s.close()
        assert line.startswith(b"ERR busy too many control connections from this process"), line
        assert f"at most {PER_CLIENT}".encode() in line, line
        # Another process is not affected, and the held connections still work.
        assert ph.cmd("STATUS")[1].strip() == "0"
        held[0].sendall(b"STATUS\n")
        assert held[0].recv(100) == b"OK 0\n"
        # A closed connection frees its place.
        held.pop().close()
        held.append(answered_connection(ph.socket_path))
    finally:
        for s in held:
            s.close()


def test_the_phone_serves_a_bounded_number_of_connections_in_all(make_phone):
    ph = make_phone(ini(accountId=0, audioInputDevice="null", audioOutputDevice="null"))
    clients = 5
    each = 60  # under the per-process bound; 300 in all, over the total
    holders = []
    try:
        lines = []
        # One client after the other, so which ones are refused is known: the last.
        for _ in range(clients):
            h = connection_holder(ph.socket_path, each)
            holders.append(h)
            lines += holder_replies(h)
        assert lines[:TOTAL] == ["OK 0"] * TOTAL, lines[:TOTAL]
        refused = lines[TOTAL:]
        assert len(refused) == clients * each - TOTAL
        assert all(r.startswith("ERR busy too many control connections: the phone serves "
                                f"{TOTAL} at once") for r in refused), refused[:3]
        # Once the holders are gone, the phone answers as before.
        for h in holders:
            h.stdin.close()
            h.wait(30)
        holders = []
        answered_connection(ph.socket_path).close()
    finally:
        for h in holders:
            h.kill()
            h.wait(10)


def test_a_contacts_file_that_cannot_be_read_is_refused_and_kept(make_phone):
    ph = make_phone(ini(accountId=0, audioInputDevice="null", audioOutputDevice="null"),
                    start=False)
    contacts = ph.ini_path.parent / "Contacts.xml"
    os.mkfifo(contacts, 0o600)
    ph.start()
    rc, out, err = ph.cmd("contacts", "add", "101", "Alice", check=False)
    assert rc == 1 and "FIFO" in err, (rc, out, err)
    rc, out, err = ph.cmd("contacts", check=False)
    assert rc == 1 and "FIFO" in err, (rc, out, err)
    assert stat.S_ISFIFO(os.lstat(contacts).st_mode)
    # A damaged file is reported and kept byte for byte; the phone goes on.
    os.unlink(contacts)
    contacts.write_text('<contacts><contact name="A" number="1"')
    before = fingerprint(contacts)
    rc, out, err = ph.cmd("contacts", "add", "101", "Alice", check=False)
    assert rc == 1 and "Contacts.xml" in err, (rc, out, err)
    assert fingerprint(contacts) == before
    assert ph.cmd("STATUS")[1].strip() == "0"
