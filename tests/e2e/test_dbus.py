"""The D-Bus face (issue 11), on a private session bus the test starts itself
(dbus-daemon, stopped by pid): busctl calls reach the engine's commands (a Dial
reaches baresip), every event comes as an `Event` signal with the socket's JSON,
`Status` answers as the socket's STATUS, a refused command is the D-Bus error
org.microsip.Phone1.Error.<Code> with the engine's words, and without a bus (or
with `dbus=0`) the phone runs on without it.

The phone is 1001 (registered at Kamailio, file audio); baresip is 1002.
"""

from __future__ import annotations

import json
import subprocess

import pytest

import peers
from test_calls import call_phone, kam, wait_call  # noqa: F401 (fixtures)

PATH = "/org/microsip/Phone"
IFACE = "org.microsip.Phone1"
SIGNALS = f"type='signal',interface='{IFACE}'"


@pytest.fixture
def make_phone(make_phone, session_bus):
    """conftest's make_phone, the phone on the test's session bus."""
    def make(*args, **kw):
        kw.setdefault("env", session_bus.env)
        return make_phone(*args, **kw)
    return make


def bus_name(ph: peers.Phone) -> str:
    # The test profiles are letters and digits starting with a letter: used as is.
    if ph.profile == "default":
        return "org.microsip.Phone"
    assert ph.profile.isalnum() and ph.profile[0].isalpha(), ph.profile
    return f"org.microsip.Phone.{ph.profile}"


def call(bus: peers.SessionBus, ph: peers.Phone, method: str, signature: str = "",
         *args) -> list:
    rc, data, err = bus.call(bus_name(ph), PATH, IFACE, method, signature, *args)
    assert rc == 0, (method, args, err)
    return data


def gdbus_error(bus: peers.SessionBus, ph: peers.Phone, method: str, *args: str) -> str:
    """The error gdbus prints for a call that must fail (it names the D-Bus error)."""
    argv = ["gdbus", "call", "--address", bus.address, "--dest", bus_name(ph),
            "--object-path", PATH, "--method", f"{IFACE}.{method}", *args]
    bus.commands.append(" ".join(argv))
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                       stdin=subprocess.DEVNULL)
    assert r.returncode != 0, (method, args, r.stdout)
    return r.stderr.strip()


def events_of(mon: peers.BusMonitor, call_id: int | None = None) -> list[dict]:
    """The Event signals' JSON, checked against the signal's own type and call."""
    out = []
    for kind, cid, text in mon.signals("Event"):
        event = json.loads(text)
        assert event["type"] == kind and event.get("call", 0) == cid, (kind, cid, text)
        if call_id is None or cid == call_id:
            out.append(event)
    return out


def test_dial_over_dbus_reaches_baresip_and_every_event_is_a_signal(
        kam, call_phone, make_baresip, session_bus):
    a = make_baresip(kam, "1002", tone=1000)
    ph = call_phone()
    session_bus.wait_name(bus_name(ph))
    mon = session_bus.monitor(SIGNALS)
    assert call(session_bus, ph, "Status") == [0]

    [cid] = call(session_bus, ph, "Dial", "s", "1002")
    est = a.wait_event("CALL_ESTABLISHED")
    assert est["peeruri"].startswith("sip:1001@127.0.0.1"), est
    wait_call(ph, "call.confirmed", cid)
    mon.wait_for(lambda s: s[:2] == ["call.confirmed", cid], what="call.confirmed signal")
    # Status answers as the socket's STATUS does.
    assert call(session_bus, ph, "Status") == [2]
    assert ph.cmd("STATUS")[1].strip() == "2"
    assert call(session_bus, ph, "ActiveCall")[0].startswith("sip:1002@127.0.0.1")

    # Hold and resume by id: baresip sees both.
    assert call(session_bus, ph, "HoldCall", "tb", cid, "true") == [f"call {cid} held"]
    wait_call(ph, "call.held", cid)
    assert call(session_bus, ph, "Status") == [3]
    call(session_bus, ph, "HoldCall", "tb", cid, "false")
    wait_call(ph, "call.resumed", cid)

    call(session_bus, ph, "HangupCall", "t", cid)
    a.wait_event("CALL_CLOSED")
    wait_call(ph, "call.ended", cid)
    mon.wait_for(lambda s: s[:2] == ["call.ended", cid], what="call.ended signal")

    # The signals carry the socket's events, the same JSON, in the same order.
    by_signal = events_of(mon, cid)
    by_socket = [{k: v for k, v in e.items() if k != "_t"} for e in ph.events().items
                 if e.get("call") == cid]
    assert [e["type"] for e in by_signal] == [e["type"] for e in by_socket], (
        by_signal, by_socket)
    assert by_signal == by_socket
    assert [e["type"] for e in by_signal][:1] == ["call.outgoing"]
    assert {"call.confirmed", "call.held", "call.resumed", "call.ended"} <= {
        e["type"] for e in by_signal}

    # Nothing to hang up now: the engine's refusal as the D-Bus error.
    err = gdbus_error(session_bus, ph, "Hangup")
    assert "org.microsip.Phone1.Error.NoCall" in err and "no call" in err, err


def test_status_errors_and_close_on_the_default_profile(make_phone, session_bus):
    ph = make_phone(peers.ini(accountId=0, audioInputDevice="null",
                              audioOutputDevice="null"), profile="default")
    session_bus.wait_name("org.microsip.Phone")
    assert "D-Bus: org.microsip.Phone on the session bus" in ph.stderr_text()
    assert call(session_bus, ph, "Status") == [0]
    assert ph.cmd("STATUS")[1].strip() == "0"
    # Levels: the engine's checks and replies.
    assert call(session_bus, ph, "SetVolume", "u", 40) == ["40"]
    assert ph.cmd("status")[0] == 0
    err = gdbus_error(session_bus, ph, "SetVolume", "101")
    assert "org.microsip.Phone1.Error.BadArgument" in err and "volume must be 0-100" in err
    err = gdbus_error(session_bus, ph, "HangupCall", "99")
    assert "org.microsip.Phone1.Error.NoSuchCall" in err, err
    err = gdbus_error(session_bus, ph, "SendDTMF", "'xyz'")
    assert "org.microsip.Phone1.Error.BadArgument" in err and "DTMF" in err, err
    err = gdbus_error(session_bus, ph, "Dial", "''")
    assert "org.microsip.Phone1.Error." in err, err
    assert json.loads(call(session_bus, ph, "Calls")[0]) == []
    # Close: the phone exits and leaves the bus.
    assert call(session_bus, ph, "Close") == ["exiting"]
    assert ph.wait_exit(30) == 0
    peers.wait_until(lambda: not session_bus.has_owner("org.microsip.Phone"), 10, 0.1,
                     "the name released")


def test_without_a_bus_or_with_dbus_0_the_phone_runs_on(make_phone, session_bus):
    no_bus = make_phone(peers.ini(accountId=0, audioInputDevice="null",
                                  audioOutputDevice="null"), env={})
    # conftest's Phone drops DBUS_SESSION_BUS_ADDRESS: no bus for this one.
    assert "DBUS_SESSION_BUS_ADDRESS" not in no_bus.env
    peers.wait_until(lambda: "D-Bus off: no session bus" in no_bus.stderr_text(), 10, 0.1,
                     "the log line")
    assert no_bus.cmd("STATUS")[1].strip() == "0"

    off = make_phone(peers.ini(accountId=0, dbus=0, audioInputDevice="null",
                               audioOutputDevice="null"))
    peers.wait_until(lambda: "D-Bus off ([Settings] dbus=0)" in off.stderr_text(), 10, 0.1,
                     "the log line")
    assert not session_bus.has_owner(bus_name(off))
    assert off.cmd("STATUS")[1].strip() == "0"


def test_execute_takes_dde_strings_whole(kam, call_phone, make_baresip, session_bus):
    """Issue 15 on the bus: `Execute(s)` takes a DDE execute string (or a socket
    line), parsed whole, run in order, one (ok, code, text) per command."""
    a = make_baresip(kam, "1002", tone=1000)
    ph = call_phone()
    session_bus.wait_name(bus_name(ph))
    assert call(session_bus, ph, "Execute", "s", "[SetVolume(30)] [Status]") == [
        [[True, "", "30"], [True, "", "0"]]]
    # The bracketed Dial reaches baresip and the call becomes active.
    [[dialed]] = call(session_bus, ph, "Execute", "s", "[Dial(sip:1002@127.0.0.1)]")
    assert dialed[:2] == [True, ""] and dialed[2].isdigit(), dialed
    cid = int(dialed[2])
    a.wait_event("CALL_ESTABLISHED")
    wait_call(ph, "call.confirmed", cid)
    assert call(session_bus, ph, "Execute", "s", "[Status]") == [[[True, "", "2"]]]
    assert call(session_bus, ph, "Execute", "s", "report:status") == [[[True, "", "2"]]]
    # A broken string: the D-Bus error naming the part, and nothing ran.
    err = gdbus_error(session_bus, ph, "Execute", "'[SetVolume(10)][Hangup][Dial(1003)'")
    assert "org.microsip.Phone1.Error.BadArgument" in err, err
    assert "'[Dial(1003)' has no closing ']'" in err, err
    err = gdbus_error(session_bus, ph, "Execute", "'[Hangup][Frobnicate(1)]'")
    assert "org.microsip.Phone1.Error.UnknownCommand" in err and "Frobnicate" in err, err
    assert call(session_bus, ph, "Status") == [2]
    assert ph.cmd_json("levels")[1]["data"]["speaker"] == 30
    assert a.count("CALL_CLOSED") == 0
    # Hold, then a refused command, then the status: each one's reply, in order.
    [replies] = call(session_bus, ph, "Execute", "s", f"[Hold({cid}, on)][Hangup(99)][Status]")
    assert replies[0][:2] == [True, ""], replies
    assert replies[1][:2] == [False, "no_such_call"], replies
    assert replies[2] == [True, "", "3"], replies
    wait_call(ph, "call.held", cid)
    [[hung]] = call(session_bus, ph, "Execute", "s", f"[Hangup({cid})]")
    assert hung[0] is True, hung
    a.wait_event("CALL_CLOSED")
    wait_call(ph, "call.ended", cid)
