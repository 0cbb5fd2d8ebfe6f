"""kill -9 in the middle of a burst of calls and MESSAGEs, several times over one
ini: the ini still parses, every call whose `call.ended` went out on the event
stream is in `[Calls]`, every MESSAGE the phone answered 200 is kept, whole, and no
temporary file of ours is left behind once the phone runs again.

SIPp (built-in UAC) calls the phone, which answers by itself; SIPp hangs up each
call after a moment. A thread sends MESSAGEs to the phone over UDP and keeps the
texts it got a 200 for. The kill comes at a random moment (seeded, printed)."""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import threading
import time
import uuid

from peers import LOOPBACK, ini, wait_until

ROUNDS = int(os.environ.get("CRASH_ROUNDS", "4"))
SEED = int(os.environ.get("CRASH_SEED", "0")) or random.randrange(1, 1 << 30)


def calls_entries(ini_text: str) -> dict[str, list[str]]:
    """The `[Calls]` entries of an ini: key -> fields (number;name;type;time;...)."""
    calls, section = {}, None
    for line in ini_text.splitlines():
        if line.startswith("["):
            section = line.strip().strip("[]")
        elif section == "Calls" and "=" in line:
            k, v = line.split("=", 1)
            calls[k.strip()] = v.split(";")
    return calls


class MessageSender(threading.Thread):
    """Sends MESSAGEs to the phone one after the other; `acked` holds the texts that
    got a 200 (the phone says 200 only once a message is stored)."""

    def __init__(self, port: int, tag: str):
        super().__init__(daemon=True)
        self.port = port
        self.tag = tag
        self.acked: list[str] = []
        self.stop = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.settimeout(0.5)

    def run(self) -> None:
        local = self.sock.getsockname()[1]
        for i in range(10_000):
            if self.stop.is_set():
                break
            text = f"crash {self.tag} message {i} with ; # and = kept"
            call_id = uuid.uuid4().hex
            body = text.encode()
            req = (
                f"MESSAGE sip:1001@{LOOPBACK}:{self.port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {LOOPBACK}:{local};branch=z9hG4bK{call_id[:16]};rport\r\n"
                "Max-Forwards: 70\r\n"
                f"From: <sip:2002@{LOOPBACK}>;tag={call_id[:8]}\r\n"
                f"To: <sip:1001@{LOOPBACK}>\r\n"
                f"Call-ID: {call_id}@{LOOPBACK}\r\n"
                "CSeq: 1 MESSAGE\r\n"
                "Content-Type: text/plain\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            try:
                self.sock.sendto(req, (LOOPBACK, self.port))
                deadline = time.monotonic() + 1.0
                while time.monotonic() < deadline:
                    data = self.sock.recv(65535).decode(errors="replace")
                    if call_id in data and data.startswith("SIP/2.0 200"):
                        self.acked.append(text)
                        break
                    if call_id in data and not data.startswith("SIP/2.0 1"):
                        break
            except OSError:
                # The phone is gone (killed): stop sending.
                if self.stop.is_set():
                    break
        self.sock.close()


def test_kill_9_during_calls_and_messages_loses_nothing_that_went_out(
        make_phone, make_sipp, free_port):
    print(f"crash test seed {SEED} (CRASH_SEED={SEED} repeats it)")
    rnd = random.Random(SEED)
    port = free_port("sip")
    settings = ini({"label": "local", "server": "", "proxy": "", "domain": LOOPBACK,
                    "username": "1001", "password": "", "transport": "udp"},
                   sourcePort=port, autoAnswer="all", autoAnswerDelay=0, autoAnswerCalls="all",
                   audioInputDevice="null", audioOutputDevice="null")
    ph = make_phone(settings)
    workdir = ph.ini_path.parent
    acked_all: list[str] = []
    ended_total = 0
    entries_before = 0
    for rnd_no in range(ROUNDS):
        if ph.proc is None:
            ph.start()
        ev = ph.new_event_stream()
        ev.wait_for("snapshot", None, 15)
        sipp = make_sipp(None, builtin="uac", remote=f"{LOOPBACK}:{port}", calls=400,
                         timeout_s=60, trace=False, extra=["-s", "1001", "-r", "25", "-d", "300"])
        sender = MessageSender(port, f"r{rnd_no}")
        sender.start()
        # Let the burst get going, then kill the phone at a random moment.
        ev.wait_for("call.ended", None, 30)
        time.sleep(rnd.uniform(0.2, 2.0))
        os.killpg(ph.proc.pid, signal.SIGKILL)
        ph.proc.wait(10)
        ph.proc = None
        sender.stop.set()
        sender.join(10)
        sipp.stop()
        # What went out before the kill: every call.ended the stream delivered (its
        # reader sees the end of the stream once it has read everything before).
        ev.wait_for("_eof", None, 15)
        ended = [e for e in ev.items if e.get("type") == "call.ended"]
        ev.close()
        text = ph.ini_path.read_text()
        entries = calls_entries(text)
        assert "[Account1]" in text and "[Settings]" in text, text[:2000]
        for key, fields in entries.items():
            assert re.fullmatch(r"\d+", key) and len(fields) >= 5, (key, fields)
            assert fields[2] in ("0", "1", "2", "3") and fields[3].isdigit(), (key, fields)
        new = len(entries) - entries_before
        assert new >= len(ended), (
            f"round {rnd_no}: {len(ended)} call.ended went out but only {new} new "
            f"[Calls] entries (seed {SEED})")
        entries_before = len(entries)
        ended_total += len(ended)
        acked_all += sender.acked
        print(f"round {rnd_no}: {len(ended)} calls ended, {new} history entries, "
              f"{len(sender.acked)} messages acknowledged")
    assert ended_total > 0 and acked_all, "the burst never got going"
    # Once running again: every acknowledged message is there, whole; no temporary
    # file of ours is left.
    ph.start()
    ev = ph.new_event_stream()
    ev.wait_for("snapshot", None, 15)
    rc, reply = ph.cmd_json("messages")
    assert rc == 0, reply
    kept = [m["text"] for m in reply["data"]]
    missing = [t for t in acked_all if t not in kept]
    assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {missing[:3]}"
    wait_until(lambda: not [p for p in os.listdir(workdir) if ".tmp-" in p], 10, 0.1,
               "stale temporary files removed")
