"""The seeds' command forms (issue 15), against a running phone: DDE execute
strings (`[Dial(...)]`, `[Status]`, several in one string) from the command line
and the socket, comma-separated arguments (`SetDevice input, 2`), `report:status`,
device numbers, and the history a person can read.

The phone is 1001 (registered at Kamailio, file audio); baresip is 1002 and
answers by itself. Devices are numbered against a private PulseAudio server
(test_devices.py's null sinks).
"""

from __future__ import annotations

import re
import socket
import time

import pytest

import peers
from test_calls import call_phone, kam, wait_call  # noqa: F401 (fixtures)
from test_devices import pulse, pulse_phone  # noqa: F401 (fixture)

HISTORY_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d)  (\S+) +(\S+) +(?:.*\S +)?(\d+:\d\d)$")


def status(ph: peers.Phone) -> str:
    return ph.cmd("STATUS")[1].strip()


def volume_in_ini(ph: peers.Phone) -> str | None:
    m = re.search(r"^volumeOutput=(\S*)$", ph.ini_path.read_text(), re.M)
    return m.group(1) if m else None


def test_bracketed_dial_and_status_from_the_command_line_and_the_socket(
        kam, call_phone, make_baresip):
    a = make_baresip(kam, "1002", tone=1000)
    ph = call_phone()
    # The documents' form, from the command line: the call reaches baresip.
    rc, out, err = ph.cmd("[Dial(sip:1002@127.0.0.1)]", check=False)
    assert rc == 0 and out.strip().isdigit(), (rc, out, err)
    cid = int(out)
    est = a.wait_event("CALL_ESTABLISHED")
    assert "1001" in est.get("peeruri", ""), est
    wait_call(ph, "call.confirmed", cid)
    # [Status] and report:status answer as STATUS does: the number.
    assert status(ph) == "2"
    for form in ["[Status]", "report:status", "[report:status]"]:
        assert ph.cmd(form)[1] == "2\n", form
        assert ph.plain(form) == ["OK 2"], form
        assert ph.request(form) == ph.request("STATUS"), form
    # Several commands in one string on the socket: in order, one line each.
    held, now = ph.plain("[Hold][Status]", replies=2)
    assert held.startswith("OK ") and now == "OK 3", (held, now)
    wait_call(ph, "call.held", cid)
    # JSON: one object, the replies in order.
    reply = ph.requests([[f"[Hold({cid}, off)] [Status]"]], timeout=30)[0]
    assert reply["ok"] is True and reply["token"] == "r0", reply
    assert [r["ok"] for r in reply["replies"]] == [True, True], reply
    assert reply["replies"][1]["text"] == "2", reply
    wait_call(ph, "call.resumed", cid)
    # From the command line: one reply line each; the hangup reaches baresip.
    rc, out, err = ph.cmd("[SetVolume(30)] [Hangup]", check=False)
    assert rc == 0, (rc, out, err)
    assert out.splitlines()[0] == "30" and len(out.splitlines()) == 2, out
    a.wait_event("CALL_CLOSED")
    wait_call(ph, "call.ended", cid)
    assert volume_in_ini(ph) == "30"
    # The bracketed Dial as a plain socket line: baresip answers, the call is active.
    [dialed] = ph.plain("[Dial(sip:1002@127.0.0.1)]")
    assert re.fullmatch(r"OK \d+", dialed), dialed
    again = int(dialed.split()[1])
    assert again != cid
    a.wait_event("CALL_ESTABLISHED")
    wait_call(ph, "call.confirmed", again)
    assert ph.plain("[Status]") == ["OK 2"] and status(ph) == "2"
    assert ph.plain(f"[Hangup({again})]")[0].startswith("OK")
    a.wait_event("CALL_CLOSED")
    wait_call(ph, "call.ended", again)


def test_bracketed_dial_starts_the_phone_when_none_runs(kam, make_phone, make_baresip):
    """`microsip '[Dial(1002)]'` with no phone running: it becomes the phone,
    registers and calls, as `microsip dial 1002` does."""
    a = make_baresip(kam, "1002", tone=1000)
    ph = make_phone(peers.ini(peers.account(kam.address, "1001", "p;w#1005"),
                              audioInputDevice="null", audioOutputDevice="null"),
                    extra_args=["[Dial(1002)]"])
    a.wait_event("CALL_ESTABLISHED", timeout=30)
    assert ph.running()
    assert status(ph) == "2"
    assert ph.plain("[Hangup]")[0].startswith("OK")
    a.wait_event("CALL_CLOSED")


def test_a_broken_string_changes_nothing(kam, call_phone, make_baresip):
    a = make_baresip(kam, "1002", tone=1000)
    ph = call_phone()
    assert ph.cmd("setvolume", "30")[1].strip() == "30"
    cid = int(ph.cmd("[Dial(1002)]")[1])
    a.wait_event("CALL_ESTABLISHED")
    wait_call(ph, "call.confirmed", cid)
    cases = [
        # (string, code, words the message must hold)
        ("[SetVolume(10)][Hangup][Dial(1003)", "bad_argument", "'[Dial(1003)' has no closing ']'"),
        ("[SetVolume(10)][Hangup][Frobnicate(1)]", "unknown_command",
         "unknown command 'Frobnicate' in '[Frobnicate(1)]'"),
        ("[SetVolume(10)][Hangup(1,2)]", "bad_argument", "in '[Hangup(1,2)]'"),
        ("[SetVolume(10)] hangup", "bad_argument", "unexpected 'hangup'"),
        ("[SetVolume(10)][Hangup(\"1)]", "bad_argument", "unterminated quote"),
    ]
    for text, code, words in cases:
        # Command line: exit 1, the reason on stderr, nothing on stdout.
        rc, out, err = ph.cmd(text, check=False)
        assert rc == 1 and out == "" and words in err and f"({code})" in err, (text, rc, out, err)
        # Socket, plain and JSON: one error, nothing run.
        reply = ph.request(text)
        assert ph.plain(text) == [f"ERR {code} {reply.get('error')}"], text
        assert reply["ok"] is False and reply["code"] == code and words in reply["error"], reply
    # Nothing ran: the volume, the call and baresip are as they were.
    assert volume_in_ini(ph) == "30"
    assert status(ph) == "2"
    assert ph.events().count("call.ended") == 0
    assert a.count("CALL_CLOSED") == 0
    assert ph.cmd("hangup", str(cid))[0] == 0
    a.wait_event("CALL_CLOSED")


def test_devices_by_number_and_setdevice_with_commas(make_phone, pulse):
    ph = pulse_phone(make_phone, pulse, audioOutputDevice="pulse:spk",
                     audioInputDevice="pulse:mic.monitor")
    rc, out, err = ph.cmd("devices")
    assert rc == 0, err
    lines = out.splitlines()
    inputs = lines[lines.index("input devices:") + 1:lines.index("output devices:")]
    numbered = {}
    for line in inputs:
        number, device_id = line.split()[:2]
        numbered[int(number)] = device_id
    assert sorted(numbered) == list(range(1, len(inputs) + 1)), out
    assert len(numbered) >= 3, out  # spk, spk2 and mic have a monitor each
    second = numbered[2]
    # The documents' form: the role, a comma, the number `devices` printed.
    rc, out, err = ph.cmd("SetDevice", "input,", "2", check=False)
    assert rc == 0 and out.strip() == f"input device: {second}", (rc, out, err)
    assert f"audioInputDevice={second}\n" in ph.ini_path.read_text()
    rc, listed, _ = ph.cmd("devices")
    current = [ln for ln in listed.splitlines()[1:len(inputs) + 1] if "[current]" in ln]
    assert [ln.split()[:2] for ln in current] == [["2", second]], listed
    # On the socket: the documents' form, as one word, and without the comma.
    first = numbered[1]
    assert ph.plain("SetDevice input,1") == [f"OK input device: {first}"]
    assert ph.plain("SetDevice input, 2") == [f"OK input device: {second}"]
    assert ph.plain("setdevice input 1") == [f"OK input device: {first}"]
    assert ph.plain("setdevice input 2") == [f"OK input device: {second}"]
    # The bracketed form switches the output to null, from the command line and
    # from the socket; `devices` shows it.
    outputs = [ln.split()[1] for ln in lines[lines.index("output devices:") + 1:]
               if ln.startswith("  ")]
    rc, out, err = ph.cmd("[SetDevice(output, null)]", check=False)
    assert rc == 0 and out == "output device: null\n", (rc, out, err)
    assert "audioOutputDevice=null\n" in ph.ini_path.read_text()
    assert ph.cmd_json("devices")[1]["data"]["current"]["output"] == "null"
    assert ph.plain("[SetDevice(output, 1)]") == [f"OK output device: {outputs[0]}"]
    assert ph.cmd_json("devices")[1]["data"]["current"]["output"] == outputs[0]
    assert ph.plain("[SetDevice(output, null)]") == ["OK output device: null"]
    assert "audioOutputDevice=null\n" in ph.ini_path.read_text()
    assert ph.cmd_json("devices")[1]["data"]["current"]["output"] == "null"
    # A number past the list: a clear error, nothing stored.
    past = len(inputs) + 5
    rc, reply = ph.cmd_json("SetDevice", "input,", str(past))
    assert rc == 1 and reply["code"] == "no_such_device", reply
    assert reply["error"] == (f"there is no input device {past}: devices lists "
                              f"{len(inputs)} (1-{len(inputs)})"), reply
    assert f"audioInputDevice={second}\n" in ph.ini_path.read_text()
    # In a string, the runtime error is that command's reply; the ones before ran.
    lines = ph.plain(f"[SetDevice(input, 1)][SetDevice(input, {past})]", replies=2)
    assert lines[0] == f"OK input device: {first}", lines
    assert lines[1].startswith(f"ERR no_such_device there is no input device {past}"), lines


def test_history_for_people(kam, make_phone, make_baresip):
    a = make_baresip(kam, "1002", tone=1000)
    ph = make_phone(peers.ini(peers.account(kam.address, "1001", "p;w#1005"),
                              audioInputDevice="null", audioOutputDevice="null",
                              autoAnswer="button"), start=False)
    # The phone's clock is 5 h 30 min ahead of UTC: the history must show that.
    ph.env["TZ"] = "<+0530>-5:30"
    ph.start()
    ph.events().wait_state(1, "registered", 30, codes={200})
    cid = int(ph.cmd("dial", "1002")[1])
    a.wait_event("CALL_ESTABLISHED")
    wait_call(ph, "call.confirmed", cid)
    time.sleep(1.2)  # a talk time of at least a second, to read back
    assert ph.cmd("hangup", str(cid))[0] == 0
    a.wait_event("CALL_CLOSED")
    wait_call(ph, "call.ended", cid)
    # baresip calls us and gives up while it rings: a missed call, the newest.
    a.dial("sip:1001@127.0.0.1")
    inc = wait_call(ph, "call.incoming")
    a.hangup()
    wait_call(ph, "call.ended", inc["call"])
    peers.wait_until(lambda: len(ph.cmd_json("history")[1]["data"]) == 2, 15, 0.1,
                     "two history entries")
    rc, out, err = ph.cmd("history")
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 2, out
    parsed = [HISTORY_LINE.match(ln) for ln in lines]
    assert all(parsed), out
    assert [(m.group(2), m.group(3)) for m in parsed] == [("missed", "1002"), ("out", "1002")], out
    talk = parsed[1].group(4)
    assert re.fullmatch(r"0:0[1-9]|0:[1-5]\d", talk), out
    # JSON keeps the epoch seconds and adds ISO 8601, on the same local clock.
    rc, reply = ph.cmd_json("history")
    assert rc == 0, reply
    for entry, m in zip(reply["data"], parsed):
        local = time.gmtime(entry["time"] + 5 * 3600 + 30 * 60)
        assert m.group(1) == time.strftime("%Y-%m-%d %H:%M", local), (entry, m.group(0))
        assert entry["time_iso"] == time.strftime("%Y-%m-%dT%H:%M:%S+05:30", local), entry
        assert abs(entry["time"] - time.time()) < 300, entry
    # Only the missed calls; only the newest N.
    rc, out, _ = ph.cmd("history", "missed")
    assert rc == 0 and [HISTORY_LINE.match(ln).group(2) for ln in out.splitlines()] == ["missed"]
    rc, out, _ = ph.cmd("history", "1")
    assert rc == 0 and out.splitlines() == lines[:1], out
    assert ph.plain("history 2") == ["OK " + "; ".join(lines)]
    rc, reply = ph.cmd_json("history", "tomorrow")
    assert rc == 1 and reply["code"] == "bad_argument" and "'tomorrow'" in reply["error"], reply


@pytest.mark.parametrize("text", ["[Status]", "report:status"])
def test_status_forms_with_no_call(call_phone, text):
    ph = call_phone(register=False)
    assert ph.cmd(text)[1] == ph.cmd("STATUS")[1] == "0\n"


def test_a_string_runs_whole_when_its_client_is_gone(call_phone):
    ph = call_phone(register=False)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(ph.socket_path))
    s.sendall(b"[SetVolume(40)] [SetMicVolume(45)]\n")
    s.close()  # gone before any reply
    peers.wait_until(lambda: re.search(r"^volumeInput=45$", ph.ini_path.read_text(), re.M),
                     10, 0.05, "the second command of the string")
    assert volume_in_ini(ph) == "40"
