"""What integrators use, in real calls with baresip through Kamailio and SIPp:
the cmd* hooks (each fires once, at its moment, with its arguments, never through
a shell), the [Calls] history, the CSV call log, text messages kept across SIGKILL,
and several event clients at once (a stuck one slows nothing)."""

from __future__ import annotations

import csv
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from peers import Phone, account, ini, wait_until

PASSWORD = "p;w#1005"
USERS = {"1001": PASSWORD, "1002": "secret2"}
HOOKS = ["cmdIncomingCall", "cmdCallRing", "cmdOutgoingCall", "cmdCallAnswer",
         "cmdCallStart", "cmdCallBusy", "cmdCallEnd"]


@pytest.fixture
def kam(make_kamailio):
    return make_kamailio(users=USERS)


def hook_script(tmp_path: Path, sleep: int = 0) -> Path:
    """A hook that appends one line per run to OUTFILE (its first argument): the
    number of further arguments, then each between | marks."""
    script = tmp_path / f"hook{sleep}.sh"
    script.write_text(
        "#!/bin/sh\n"
        f"sleep {sleep}\n"
        'out="$1"; shift\n'
        'line="$#"\n'
        'for a in "$@"; do line="$line|$a"; done\n'
        'printf "%s\\n" "$line" >> "$out"\n')
    script.chmod(0o755)
    return script


def hook_settings(tmp_path: Path, script: Path) -> dict:
    return {k: f"{script} {tmp_path}/{k}.txt {{number}} {{direction}} {{callid}}" for k in HOOKS}


def runs(tmp_path: Path, key: str) -> list[list[str]]:
    f = tmp_path / f"{key}.txt"
    if not f.exists():
        return []
    return [line.split("|") for line in f.read_text().splitlines()]


def phone_for(kam, make_phone, tmp_path, **settings) -> Phone:
    ph = make_phone(ini(account(kam.address, "1001", PASSWORD), audioInputDevice="tone:440",
                        audioOutputDevice="null", **settings),
                    extra_args=["--log", str(tmp_path / "calls.csv")])
    ph.events().wait_state(1, "registered", 30, codes={200})
    return ph


def wait_hook(tmp_path, key, n=1, timeout=15):
    wait_until(lambda: len(runs(tmp_path, key)) >= n, timeout, 0.05, f"{key} x{n}")


def test_hooks_fire_once_each_with_their_arguments(kam, make_phone, make_baresip, tmp_path):
    script = hook_script(tmp_path)
    ph = phone_for(kam, make_phone, tmp_path, autoAnswer="button", **hook_settings(tmp_path, script))
    a = make_baresip(kam, "1002", tone=1000)
    # Outgoing, answered by baresip, hung up by us.
    cid = ph.cmd("dial", "1002")[1].strip()
    ph.events().wait_for("call.confirmed", None, 30)
    ph.cmd("hangup", cid)
    wait_hook(tmp_path, "cmdCallEnd")
    assert runs(tmp_path, "cmdOutgoingCall") == [["3", "1002", "out", cid]]
    assert runs(tmp_path, "cmdCallStart") == [["3", "1002", "out", cid]]
    assert runs(tmp_path, "cmdCallEnd") == [["3", "1002", "out", cid]]
    # Incoming, answered by the test.
    a.dial("sip:1001@127.0.0.1")
    inc = ph.events().wait_for("call.incoming", None, 30)
    wait_hook(tmp_path, "cmdCallRing")
    ph.cmd("answer")
    ph.events().wait_for("call.confirmed", None, 30)
    a.hangup()
    wait_hook(tmp_path, "cmdCallEnd", 2)
    icid = str(inc["call"])
    for key in ["cmdIncomingCall", "cmdCallRing", "cmdCallAnswer"]:
        assert runs(tmp_path, key) == [["3", "1002", "in", icid]], key
    assert runs(tmp_path, "cmdCallStart")[1] == ["3", "1002", "in", icid]
    assert runs(tmp_path, "cmdCallEnd")[1] == ["3", "1002", "in", icid]
    assert runs(tmp_path, "cmdCallBusy") == []


def test_busy_fires_cmdcallbusy_not_cmdcallend(kam, make_phone, make_baresip, tmp_path):
    script = hook_script(tmp_path)
    ph = phone_for(kam, make_phone, tmp_path, **hook_settings(tmp_path, script))
    a = make_baresip(kam, "1002", answermode="manual")
    ph.cmd("dial", "1002")
    a.wait_event("CALL_INCOMING")
    a.command("hangup")  # baresip refuses the ringing call (486)
    ended = ph.events().wait_for("call.ended", None, 30)
    assert ended["code"] in (486, 603), ended
    wait_hook(tmp_path, "cmdCallBusy")
    time.sleep(0.5)
    assert runs(tmp_path, "cmdCallEnd") == []


def test_hostile_caller_id_reaches_the_hook_as_one_argument(make_phone, make_sipp, free_port,
                                                             tmp_path):
    script = hook_script(tmp_path)
    port = free_port("sip")
    ph = make_phone(ini(account("", "1001", ""), sourcePort=port, autoAnswer="all",
                        audioInputDevice="null", audioOutputDevice="null",
                        cmdIncomingCall=f"{script} {tmp_path}/in.txt {{name}}",
                        cmdCallStart=f"{script} {tmp_path}/start.txt"))
    sipp = make_sipp("uac_hostile_callerid.xml", timeout_s=60, remote=f"127.0.0.1:{port}",
                     extra=["-s", "1001"])
    wait_until(lambda: (tmp_path / "in.txt").exists(), 15, 0.05, "the hook")
    assert (tmp_path / "in.txt").read_text() == '1|"; rm -rf ~ $(id)\n'
    assert sipp.wait() == 0
    # No placeholder: the number is appended as the last argument.
    wait_until(lambda: (tmp_path / "start.txt").exists(), 15, 0.05, "cmdCallStart")
    assert (tmp_path / "start.txt").read_text() == "1|6666\n"
    assert ph.running()


def test_a_slow_hook_does_not_delay_answering(kam, make_phone, make_baresip, tmp_path):
    script = hook_script(tmp_path, sleep=60)
    ph = phone_for(kam, make_phone, tmp_path, autoAnswer="all",
                   cmdIncomingCall=f"{script} {tmp_path}/slow.txt")
    a = make_baresip(kam, "1002", tone=1000)
    for _ in range(2):
        t0 = time.monotonic()
        a.dial("sip:1001@127.0.0.1")
        a.wait_event("CALL_ESTABLISHED", timeout=10)
        assert time.monotonic() - t0 < 5, "answering waited for the hook"
        a.hangup()
        ph.events().wait_for("call.ended", None, 30)


def test_history_and_csv_after_three_calls_and_sigkill(kam, make_phone, make_baresip, tmp_path):
    ph = phone_for(kam, make_phone, tmp_path)
    make_baresip(kam, "1002", tone=1000)
    for _ in range(3):
        cid = ph.cmd("dial", "1002")[1].strip()
        ph.events().wait_for("call.confirmed", None, 30)
        time.sleep(1.1)
        ph.cmd("hangup", cid)
    wait_until(lambda: len(list(csv.reader(open(tmp_path / "calls.csv")))) >= 4, 10, 0.05, "rows")
    rc, listed, _ = ph.cmd("history")
    assert rc == 0 and listed.count(" out 1002 ") == 3, listed
    os.killpg(ph.proc.pid, signal.SIGKILL)
    ph.proc.wait(10)
    text = ph.ini_path.read_text()
    calls = {}
    section = None
    for line in text.splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Calls" and "=" in line:
            k, v = line.split("=", 1)
            calls[k] = v.split(";")
    assert sorted(calls) == ["0", "1", "2"], text
    for fields in calls.values():
        number, name, kind, when, duration = fields[:5]
        assert number == "1002" and kind == "0", fields
        assert abs(int(when) - time.time()) < 120 and int(duration) >= 1, fields
    assert "callsLastKey=2" in text and "[Account1]" in text and PASSWORD in text
    with open(tmp_path / "calls.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    for r in rows:
        assert r["direction"] == "out" and r["remote_number"] == "1002", r
        assert r["end_code"] == "200" and int(r["duration"]) >= 1, r
        assert r["answered"] and r["start"] <= r["answered"] <= r["end"], r


def test_messages_both_ways_survive_sigkill(kam, make_phone, make_baresip, make_sipp,
                                            free_port, tmp_path):
    port = free_port("sip")
    ph = phone_for(kam, make_phone, tmp_path, sourcePort=port)
    make_baresip(kam, "1002", tone=1000)
    rc, out, err = ph.cmd("message", "1002", "hello; from the phone")
    assert rc == 0 and "200" in out, (out, err)
    sipp = make_sipp("uac_message.xml", timeout_s=30, remote=f"127.0.0.1:{port}",
                     extra=["-s", "1001", "-key", "text", "kept after a crash"])
    assert sipp.wait() == 0  # our 200 came after the text was stored
    received = ph.events().wait_for("message.received", None, 10)
    assert received["text"].strip() == "kept after a crash", received
    os.killpg(ph.proc.pid, signal.SIGKILL)
    ph.proc.wait(10)
    again = Phone(ph.workdir.parent, profile=ph.profile, runtime_dir=ph.runtime_dir)
    again.ini_path = ph.ini_path
    again.start()
    listed = again.cmd("messages")[1]
    assert "kept after a crash" in listed and "hello; from the phone" in listed, listed


def test_two_event_clients_see_the_same_events_and_a_stuck_one_slows_nothing(
        kam, make_phone, make_baresip, tmp_path):
    ph = phone_for(kam, make_phone, tmp_path)
    make_baresip(kam, "1002", tone=1000)
    other = ph.new_event_stream()
    other.snapshot()
    # A client that asks for events and never reads them.
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.connect(str(ph.socket_path))
    stuck.sendall(b"events\n")
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        for _ in range(3):
            t0 = time.monotonic()
            cid = ph.cmd("dial", "1002")[1].strip()
            ph.events().wait_for("call.confirmed", None, 30)
            ph.cmd("hangup", cid)
            assert time.monotonic() - t0 < 10
        mine = [e for e in ph.events().items if e.get("type", "").startswith("call.")]
        wait_until(lambda: sum(1 for e in other.items if e.get("type") == "call.ended") >= 3,
                   10, 0.05, "the second client")
        theirs = [e for e in other.items if e.get("type", "").startswith("call.")]
        key = [(e["seq"], e["type"], e.get("call")) for e in mine]
        assert key == [(e["seq"], e["type"], e.get("call")) for e in theirs][:len(key)]
        seqs = [e["seq"] for e in mine]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    finally:
        stuck.close()


def test_contacts_add_list_remove(make_phone):
    ph = make_phone(ini(account("", "1001", "")))
    assert ph.cmd("contacts", "add", "1002", "Alice", "O'Brien & <Co>")[0] == 0
    assert ph.cmd("contacts", "add", "1003")[0] == 0
    listed = ph.cmd("contacts")[1]
    assert "1002 Alice O'Brien & <Co>" in listed and "1003 1003" in listed, listed
    xml = (ph.ini_path.parent / "Contacts.xml").read_text()
    assert "&amp;" in xml and "&lt;Co&gt;" in xml, xml
    assert ph.cmd("contacts", "remove", "1003")[0] == 0
    rc, _, err = ph.cmd("contacts", "remove", "1003", check=False)
    assert rc == 1 and "no contact" in err
    assert "1003" not in ph.cmd("contacts", "list")[1]
