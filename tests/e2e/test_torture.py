"""RFC 4475 torture messages at a running phone, over UDP and over TCP (issue 10).

Every message of the RFC's archive (rfc4475/*.dat, byte for byte) is sent at the
phone, one at a time, and what comes back is checked against what a user agent
must do with it:

- a valid request is answered with a final code that is not 400 (the code a UA
  gives: 200 for OPTIONS, 405 for REGISTER, 501 for an unknown method); a valid
  INVITE rings (1xx), and is then rejected with `reject` and ACKed;
- an invalid request is answered 400 (or its specific code: 505 for an unknown
  SIP version) or dropped; the application-layer ones get their own code and
  must get it: 420 with Unsupported, 416, 415 with Accept, 406;
- a response matching no transaction gets nothing back.

After each message an OPTIONS from the same test, over the same transport, must
be answered 200: the phone still works. The score (messages handled as a UA
should, per transport) is printed, and every message must pass.
"""

from __future__ import annotations

import re
import secrets
import socket
import time
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent / "rfc4475"

RING = "ring"          # a valid INVITE: 1xx, then our `reject` (486), ACKed
RESPONSE = "response"  # a response to no transaction of ours: nothing comes back

# name -> (valid, what a UA must do). For a valid request: the final codes allowed
# (never 400) or RING. For an invalid one: the codes allowed; `DROP_OK` (in the
# third slot) also allows no answer at all.
DROP_OK = True
EXPECT: dict[str, tuple] = {
    # 3.1.1 valid messages
    "wsinv": (True, {481}),            # its To has a tag: a dialog we do not have
    "intmeth": (True, {501}),          # unknown method (RFC 3261 21.5.2)
    "esc01": (True, RING),
    "escnull": (True, {405}),          # REGISTER at a UA
    "esc02": (True, {501}),            # RE%47IST%45R is an unknown method, not REGISTER
    "lwsdisp": (True, {200}),
    "longreq": (True, RING),
    "dblreq": (True, {405}),           # REGISTER; over UDP the INVITE after it is ignored
    "semiuri": (True, {200}),
    "transports": (True, {200}),
    "mpart01": (True, {200, 415}),     # MESSAGE, multipart/mixed
    "unreason": (True, RESPONSE),
    "noreason": (True, RESPONSE),
    # 3.1.2 invalid messages
    "badinv01": (False, {400}, DROP_OK),
    "clerr": (False, {400}, DROP_OK),
    "ncl": (False, {400}, DROP_OK),
    "scalar02": (False, {400}, DROP_OK),
    "scalarlg": (False, RESPONSE),
    "quotbal": (False, {400}, DROP_OK),
    "ltgtruri": (False, {400}, DROP_OK),
    "lwsruri": (False, {400}, DROP_OK),
    "lwsstart": (False, {400}, DROP_OK),
    "trws": (False, {400}, DROP_OK),
    "escruri": (False, {400}, DROP_OK),
    "baddate": (False, {400}, DROP_OK),
    "regbadct": (False, {400}, DROP_OK),
    "badaspec": (False, {400}, DROP_OK),
    "baddn": (False, {400}, DROP_OK),
    "badvers": (False, {400, 505}, DROP_OK),
    "mismatch01": (False, {400}, DROP_OK),
    "mismatch02": (False, {400, 501}, DROP_OK),
    "bigcode": (False, RESPONSE),
    # 3.2 transaction layer
    "badbranch": (True, {200}),
    # 3.3 application layer
    "insuf": (False, {400}, DROP_OK),
    "unkscm": (False, {416}),
    "novelsc": (False, {416}),
    "unksm2": (False, {400, 405, 416}, DROP_OK),  # a REGISTER: a UA has no registrar
    "bext01": (False, {420}),
    "invut": (False, {415}),
    "regaut01": (True, {405}),
    "multi01": (False, {400}, DROP_OK),
    "mcl01": (False, {400}, DROP_OK),
    "bcast": (True, RESPONSE),
    "zeromf": (True, {200}),           # Max-Forwards 0 matters to proxies, not to the target
    "cparam01": (True, {405}),
    "cparam02": (True, {405}),
    "regescrt": (True, {405}),
    "sdp01": (False, {406}),
    # 3.4 backward compatibility
    "inv2543": (True, RING),
    # a stray file of the archive: no version, no Via
    "test": (False, {400}, DROP_OK),
}

# Over a stream a request must carry Content-Length (RFC 3261 18.3): inv2543 has
# none, so over TCP it is malformed there.
TCP_EXPECT = {"inv2543": (False, {400}, DROP_OK)}

COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "l": "content-length",
           "c": "content-type", "m": "contact", "k": "supported", "s": "subject"}


def parse_response(data: bytes) -> dict:
    """A response's status and headers (unfolded, compact names expanded)."""
    head, _, body = data.partition(b"\r\n\r\n")
    text = re.sub(r"\r\n[ \t]+", " ", head.decode("utf-8", errors="replace"))
    lines = text.split("\r\n")
    status = lines[0]
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        headers.append((COMPACT.get(name, name), value.strip()))
    code = int(status.split(" ")[1]) if status.startswith("SIP/2.0 ") else 0
    return {"status": status, "code": code, "headers": headers, "raw": data, "body": body}


def header(resp: dict, name: str) -> str | None:
    return next((v for n, v in resp["headers"] if n == name), None)


def headers(resp: dict, name: str) -> list[str]:
    return [v for n, v in resp["headers"] if n == name]


def request_line(data: bytes) -> str:
    return data.split(b"\r\n", 1)[0].decode("utf-8", errors="replace")


def call_ids_of(data: bytes) -> set[str]:
    """Every Call-ID in the bytes (dblreq holds two requests)."""
    text = re.sub(r"\r\n[ \t]+", " ", data.decode("utf-8", errors="replace"))
    ids = set()
    for line in text.split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() in ("call-id", "i") and value.strip():
            ids.add(value.strip())
    return ids


def split_top(value: str) -> str:
    """The first element of a comma-separated header value (outside quotes and <>)."""
    depth, quoted = 0, False
    for i, ch in enumerate(value):
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth -= 1
        elif not quoted and depth == 0 and ch == ",":
            return value[:i].strip()
    return value.strip()


def ack_for(request: bytes, resp: dict) -> bytes:
    """The ACK of a non-2xx final response (RFC 3261 17.1.1.3), built from the
    response's echo of the request."""
    # The Request-URI of the request this answers (the last start line before
    # its Call-ID: dblreq holds two requests).
    text = request.decode("utf-8", errors="replace")
    at = text.find(header(resp, "call-id") or "\0")
    starts = [m for m in re.finditer(r"(?m)^(\S+) (\S+) SIP/2\.0\r$", text[:at] if at > 0 else text)]
    ruri = starts[-1].group(2) if starts else request_line(request).split(" ")[1]
    cseq = header(resp, "cseq") or "1 INVITE"
    lines = [f"ACK {ruri} SIP/2.0",
             f"Via: {split_top(headers(resp, 'via')[0])}",
             f"From: {header(resp, 'from')}",
             f"To: {header(resp, 'to')}",
             f"Call-ID: {header(resp, 'call-id')}",
             f"CSeq: {cseq.split()[0]} ACK",
             "Max-Forwards: 70",
             "Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


def options(transport: str, local: tuple[str, int], target: int) -> tuple[bytes, str]:
    call_id = "probe-" + secrets.token_hex(6)
    msg = (f"OPTIONS sip:probe@127.0.0.1:{target} SIP/2.0\r\n"
           f"Via: SIP/2.0/{transport} {local[0]}:{local[1]};rport;branch=z9hG4bK{secrets.token_hex(6)}\r\n"
           f"Max-Forwards: 70\r\n"
           f"From: <sip:torture@127.0.0.1>;tag={secrets.token_hex(4)}\r\n"
           f"To: <sip:probe@127.0.0.1:{target}>\r\n"
           f"Call-ID: {call_id}\r\n"
           f"CSeq: 1 OPTIONS\r\n"
           f"Content-Length: 0\r\n\r\n")
    return msg.encode(), call_id


class UdpPeer:
    def __init__(self, port: int):
        self.target = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.local = self.sock.getsockname()

    def drain(self) -> None:
        self.sock.setblocking(False)
        try:
            while True:
                self.sock.recvfrom(65535)
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.target)

    def recv(self, timeout: float) -> dict | None:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data, _ = self.sock.recvfrom(65535)
        except (socket.timeout, BlockingIOError):
            return None
        return parse_response(data)

    def close(self) -> None:
        self.sock.close()


class TcpPeer:
    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.local = self.sock.getsockname()
        self.buf = b""

    def drain(self) -> None:
        pass

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        while True:
            msg = self._frame()
            if msg is not None:
                return parse_response(msg)
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65535)
            except (socket.timeout, OSError):
                return None
            if not chunk:
                return None
            self.buf += chunk

    def _frame(self) -> bytes | None:
        while self.buf.startswith(b"\r\n"):
            self.buf = self.buf[2:]
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        m = re.search(rb"\r\n(?:content-length|l)[ \t]*:[ \t]*(\d+)", self.buf[:end + 2], re.I)
        length = int(m.group(1)) if m else 0
        total = end + 4 + length
        if len(self.buf) < total:
            return None
        msg, self.buf = self.buf[:total], self.buf[total:]
        return msg

    def close(self) -> None:
        self.sock.close()


def exchange(peer, data: bytes, phone, expect_answer: bool) -> list[dict]:
    """Sends one torture message; returns the responses that came for it (ringing
    INVITEs are rejected by the phone's `reject` and ACKed)."""
    peer.drain()
    peer.send(data)
    call_ids = call_ids_of(data)
    is_invite = b"INVITE " in data.split(b"\r\n", 1)[0] or b"\r\nINVITE " in data
    got: list[dict] = []
    rejected = False
    deadline = time.monotonic() + (6.0 if expect_answer else 1.5)
    finals = 0
    while time.monotonic() < deadline:
        resp = peer.recv(deadline - time.monotonic())
        if resp is None:
            break
        if call_ids and header(resp, "call-id") not in call_ids:
            continue  # a late response of an earlier message
        got.append(resp)
        if is_invite and resp["code"] in (180, 183) and not rejected:
            rejected = True
            phone.request("reject")
        if resp["code"] >= 200:
            if is_invite and resp["code"] >= 300 and (header(resp, "cseq") or "").endswith("INVITE"):
                peer.send(ack_for(data, resp))
            finals += 1
            # dblreq over TCP holds a second request: wait for its answer too.
            if not (isinstance(peer, TcpPeer) and len(call_ids) > 1 and finals < 2):
                break
    return got


def verdict(name: str, expect: tuple, got: list[dict]) -> str | None:
    """None when the phone did what a UA must; else what went wrong."""
    valid, what = expect[0], expect[1]
    drop_ok = len(expect) > 2 and expect[2]
    finals = [r for r in got if r["code"] >= 200]
    codes = [r["code"] for r in got]
    if what == RESPONSE:
        return None if not got else f"answered a stray response: {codes}"
    if what == RING:
        if not any(c in (180, 183) for c in codes):
            return f"did not ring: {codes}"
        if not finals or finals[0]["code"] in (400, 500):
            return f"no proper final answer after ringing: {codes}"
        return None
    if not finals:
        return None if drop_ok else f"no final answer (wanted {sorted(what)}): {codes}"
    code = finals[0]["code"]
    if code not in what:
        return f"answered {code}, wanted {sorted(what)}"
    resp = finals[0]
    if code == 420:
        unsupported = ",".join(headers(resp, "unsupported"))
        if "nothingSupportsThis" not in unsupported or "nothingSupportsThisEither" not in unsupported:
            return f"420 without Unsupported listing both tags: {unsupported!r}"
    if code == 415 and not headers(resp, "accept"):
        return "415 without Accept"
    return None


def run_torture(phone, port: int, transport: str) -> None:
    names = sorted(p.stem for p in DATA.glob("*.dat"))
    assert len(names) == 50 and set(names) == set(EXPECT), sorted(set(names) ^ set(EXPECT))
    failures = []
    udp = UdpPeer(port) if transport == "UDP" else None
    try:
        for name in names:
            data = (DATA / f"{name}.dat").read_bytes()
            expect = EXPECT[name]
            if transport == "TCP":
                expect = TCP_EXPECT.get(name, expect)
            peer = udp if udp is not None else TcpPeer(port)
            try:
                expect_answer = expect[1] not in (RESPONSE,) and not (len(expect) > 2)
                got = exchange(peer, data, phone, expect_answer)
            finally:
                if udp is None:
                    peer.close()
            problem = verdict(name, expect, got)
            # dblreq over TCP: the INVITE after the REGISTER is a request of its own.
            if problem is None and transport == "TCP" and name == "dblreq":
                finals = [r["code"] for r in got if r["code"] >= 200]
                if len(finals) < 2 or finals[1] in (400, 500):
                    problem = f"the second request got {finals[1:]}"
            # The phone still works: an OPTIONS over the same transport gets 200.
            probe = udp if udp is not None else TcpPeer(port)
            try:
                msg, call_id = options(transport, probe.local, port)
                probe.drain()
                probe.send(msg)
                answer = None
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    r = probe.recv(deadline - time.monotonic())
                    if r is None:
                        break
                    if header(r, "call-id") == call_id and r["code"] >= 200:
                        answer = r
                        break
            finally:
                if udp is None:
                    probe.close()
            if answer is None or answer["code"] != 200:
                problem = (problem + "; " if problem else "") + \
                    f"OPTIONS afterwards got {answer['code'] if answer else 'nothing'}"
            line = f"{transport} {name:11} {'ok' if problem is None else 'FAIL: ' + problem}"
            print(line)
            if problem is not None:
                failures.append(line)
    finally:
        if udp is not None:
            udp.close()
    print(f"RFC 4475 over {transport}: {len(names) - len(failures)} of {len(names)} "
          f"handled as a UA should")
    assert phone.running(), "the phone died"
    assert not failures, "\n".join(failures)


@pytest.fixture
def phone(make_phone, free_port):
    port = free_port("sip")
    # One account without a server ("call by IP" on 127.0.0.1), on UDP and TCP.
    p = make_phone({"Settings": {"accountId": 1, "sourcePort": port},
                    "Account1": {"domain": "127.0.0.1", "username": "1001", "transport": ""}})
    p.sip_port = port
    return p


@pytest.mark.parametrize("transport", ["UDP", "TCP"])
def test_rfc4475_torture(phone, transport):
    run_torture(phone, phone.sip_port, transport)
    # No response carries a parameter twice (the echo of the request's Via with
    # the stack's received / rport put back into it).
    for m in phone.trace_messages():
        if m.sent and m.text.startswith("SIP/2.0"):
            via = m.header("Via") or ""
            names = [p.split("=")[0].strip().lower() for p in via.split(",")[0].split(";")[1:]]
            names = [n for n in names if n]  # badinv01's own empty ones come back as sent
            assert len(names) == len(set(names)), m.text


def test_responses_echo_to_byte_exact(phone):
    """RFC 3261 8.2.6.2: the response's To is the request's (plus our tag), not a
    re-escaped copy; From, Call-ID and CSeq come back as sent."""
    peer = UdpPeer(phone.sip_port)
    try:
        tag = secrets.token_hex(4)
        msg = ("OPTIONS sip:%75ser@127.0.0.1 SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP {peer.local[0]}:{peer.local[1]};branch=z9hG4bK{tag}\r\n"
               "To: sip:%75se%72@example.com\r\n"
               f"From: \"A \\\"quoted\\\" name\" <sip:I%20have%20spaces@example.net>;tag={tag}\r\n"
               "Call-ID: echo.%41@x\r\n"
               "CSeq:   7   OPTIONS\r\n"
               "Max-Forwards: 70\r\n"
               "l: 0\r\n\r\n").encode()
        peer.send(msg)
        resp = peer.recv(5)
        assert resp is not None and resp["code"] == 200, resp
        raw = resp["raw"].decode()
        assert re.search(r"\r\nTo: sip:%75se%72@example\.com;tag=[^\r;]+\r\n", raw), raw
        assert (f"\r\nFrom: \"A \\\"quoted\\\" name\" <sip:I%20have%20spaces@example.net>"
                f";tag={tag}\r\n") in raw, raw
        assert "\r\nCall-ID: echo.%41@x\r\n" in raw, raw
        assert "\r\nCSeq: 7   OPTIONS\r\n" in raw, raw
    finally:
        peer.close()


def test_invite_responses_echo_to_byte_exact(phone):
    """The same for the responses of a call: the 180 and the 486 carry the
    INVITE's To as sent (escapes kept) with the phone's tag."""
    peer = UdpPeer(phone.sip_port)
    try:
        tag = secrets.token_hex(4)
        call_id = "echo-invite." + tag
        sdp = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
               "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
        msg = (f"INVITE sip:1001@127.0.0.1:{phone.sip_port} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP {peer.local[0]}:{peer.local[1]};rport;branch=z9hG4bK{tag}\r\n"
               "To:   <sip:%31001@127.0.0.1>\r\n"
               f"From: <sip:caller@127.0.0.1>;tag={tag}\r\n"
               f"Call-ID: {call_id}\r\n"
               "CSeq: 1 INVITE\r\n"
               f"Contact: <sip:caller@{peer.local[0]}:{peer.local[1]}>\r\n"
               "Max-Forwards: 70\r\n"
               "Content-Type: application/sdp\r\n"
               f"Content-Length: {len(sdp)}\r\n\r\n{sdp}").encode()
        got = exchange(peer, msg, phone, expect_answer=True)
        codes = [r["code"] for r in got]
        assert 180 in codes and codes[-1] == 486, codes
        for r in got:
            if r["code"] == 100:
                continue
            raw = r["raw"].decode()
            assert re.search(r"\r\nTo: <sip:%31001@127\.0\.0\.1>;tag=[^\r;]+\r\n", raw), raw
            assert f"\r\nFrom: <sip:caller@127.0.0.1>;tag={tag}\r\n" in raw, raw
    finally:
        peer.close()


# -- SIPp: the application-layer refusals and a trunk's caller -------------------

@pytest.mark.parametrize("transport", ["u1", "t1"])
@pytest.mark.parametrize("scenario,code", [("uac_420_require.xml", 420),
                                           ("uac_415_body.xml", 415),
                                           ("uac_416_scheme.xml", 416),
                                           ("uac_406_accept.xml", 406)])
def test_refusals_with_their_own_code(phone, make_sipp, scenario, code, transport):
    """SIPp's INVITE gets its code at once (no ringing, no call in the engine) and
    its ACK is taken quietly, over UDP and TCP."""
    sipp = make_sipp(scenario, timeout_s=30, remote=f"127.0.0.1:{phone.sip_port}",
                     extra=["-s", "1001", "-t", transport])
    assert sipp.wait() == 0, sipp.messages()[-3000:]
    assert not [m for m in phone.trace_messages() if m.text.startswith("SIP/2.0 180")]
    rc, out, _ = phone.cmd("calls")
    assert rc == 0 and "ringing" not in out.lower(), out
    assert phone.request("STATUS")["text"].strip() in ("0", "OK 0"), "no call was made"


@pytest.mark.parametrize("user,number", [("+4930123;phone-context=example.com", "+4930123"),
                                         ("1001;isub=12", "1001")])
def test_caller_number_with_user_parameters(make_phone, make_sipp, free_port, tmp_path,
                                            user, number):
    """A caller `sip:+4930123;phone-context=example.com@pbx` (RFC 3966) or
    `sip:1001;isub=12@pbx` who gives up while the phone rings: call.incoming's
    number, the cmdIncomingCall hook and the missed call in `history` carry the
    number without its parameters."""
    script = tmp_path / "hook.sh"
    script.write_text('#!/bin/sh\nout="$1"; shift\nprintf "%s\\n" "$*" >> "$out"\n')
    script.chmod(0o755)
    port = free_port("sip")
    ph = make_phone({"Settings": {"accountId": 1, "sourcePort": port,
                                  "cmdIncomingCall": f"{script} {tmp_path}/in.txt {{number}}"},
                     "Account1": {"domain": "127.0.0.1", "username": "1001", "transport": ""}})
    sipp = make_sipp("uac_user_params.xml", timeout_s=30, remote=f"127.0.0.1:{port}",
                     extra=["-s", "1001;isub=12", "-key", "user", user])
    inc = ph.events().wait_for("call.incoming", None, 15)
    assert inc["number"] == number, inc
    assert sipp.wait() == 0, sipp.messages()[-3000:]
    ph.events().wait_for("call.ended", lambda e: e.get("call") == inc["call"], 15)
    hook = tmp_path / "in.txt"
    for _ in range(150):
        if hook.exists() and hook.read_text().strip():
            break
        time.sleep(0.1)
    assert hook.read_text() == f"{number}\n"
    rc, listed, _ = ph.cmd("history")
    assert rc == 0 and re.search(rf"  missed +{re.escape(number)}  ", listed), listed


def test_these_scenarios_fail_against_a_peer_that_rings_or_is_silent(make_sipp):
    """The scenarios can fail: SIPp's own UAS rings and answers every INVITE (no
    420 / 415 / 416 / 406), and a bound socket that never answers gives no 180 to
    the trunk caller."""
    uas = make_sipp(builtin="uas", timeout_s=60, calls=10)
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind(("127.0.0.1", 0))
    try:
        runs = [make_sipp(s, timeout_s=10, remote=uas.address, extra=["-s", "1001"])
                for s in ["uac_420_require.xml", "uac_415_body.xml", "uac_416_scheme.xml",
                          "uac_406_accept.xml"]]
        runs.append(make_sipp("uac_user_params.xml", timeout_s=10,
                              remote=f"127.0.0.1:{dead.getsockname()[1]}",
                              extra=["-s", "1001", "-key", "user", "+4930123;x=y"]))
        for sipp in runs:
            assert sipp.wait(60) != 0, sipp.scenario.name
    finally:
        dead.close()


def test_refusals_on_the_connection_to_the_registrar(make_phone, free_port):
    """Requests arriving on the TCP connection the phone opened to its registrar
    (read by the stack's own parser) are refused the same way: a fake registrar
    answers the REGISTER 200, then sends an INVITE with an unknown Require down
    that connection (420 + Unsupported) and an OPTIONS (200)."""
    reg_port = free_port("tcp")
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", reg_port))
    server.listen(1)
    server.settimeout(20)
    try:
        make_phone({"Settings": {"accountId": 1, "sourcePort": free_port("sip")},
                    "Account1": {"server": f"127.0.0.1:{reg_port}", "domain": "127.0.0.1",
                                 "username": "1001", "password": "x", "transport": "tcp",
                                 "registerRefresh": 300}})
        conn, _ = server.accept()
        peer = TcpPeer.__new__(TcpPeer)
        peer.sock, peer.buf, peer.local = conn, b"", conn.getsockname()
        deadline = time.monotonic() + 15
        register = None
        while register is None and time.monotonic() < deadline:
            conn.settimeout(max(deadline - time.monotonic(), 0.01))
            chunk = conn.recv(65535)
            assert chunk, "the phone closed the connection"
            peer.buf += chunk
            register = peer._frame()
        assert register is not None and register.startswith(b"REGISTER "), register
        req = parse_response(b"SIP/2.0 0 x\r\n" + register.split(b"\r\n", 1)[1])
        ok = ("SIP/2.0 200 OK\r\n"
              + "".join(f"Via: {v}\r\n" for v in headers(req, "via"))
              + f"From: {header(req, 'from')}\r\nTo: {header(req, 'to')};tag=reg1\r\n"
              f"Call-ID: {header(req, 'call-id')}\r\nCSeq: {header(req, 'cseq')}\r\n"
              f"Contact: {header(req, 'contact')};expires=300\r\nContent-Length: 0\r\n\r\n")
        conn.sendall(ok.encode())
        local = conn.getsockname()
        invite = (f"INVITE sip:1001@{local[0]} SIP/2.0\r\n"
                  f"Via: SIP/2.0/TCP {local[0]}:{local[1]};branch=z9hG4bKreg420\r\n"
                  "From: <sip:7777@127.0.0.1>;tag=r1\r\nTo: <sip:1001@127.0.0.1>\r\n"
                  "Call-ID: reg420@127.0.0.1\r\nCSeq: 1 INVITE\r\n"
                  f"Contact: <sip:7777@{local[0]}:{local[1]};transport=tcp>\r\n"
                  "Max-Forwards: 70\r\nRequire: x-no-such-extension\r\nContent-Length: 0\r\n\r\n")
        conn.sendall(invite.encode())
        resp = peer.recv(10)
        while resp is not None and resp["code"] < 200:
            resp = peer.recv(10)
        assert resp is not None and resp["code"] == 420, resp
        assert "x-no-such-extension" in (header(resp, "unsupported") or ""), resp
        msg, call_id = options("TCP", local, reg_port)
        conn.sendall(msg)
        resp = peer.recv(10)
        assert resp is not None and resp["code"] == 200 and header(resp, "call-id") == call_id, resp
        conn.close()
    finally:
        server.close()


def test_a_call_over_tcp_to_our_listener_keeps_its_connection(make_phone, free_port):
    """A call that comes in on a TCP connection to the phone's listener (read by our
    reader, not the stack's) is answered on it, the caller's ACK reaches it, and
    our BYE goes back down the same connection (flow affinity), answered there."""
    import threading

    port = free_port("sip")
    ph = make_phone({"Settings": {"accountId": 1, "sourcePort": port, "autoAnswer": "all",
                                  "audioInputDevice": "null", "audioOutputDevice": "null"},
                     "Account1": {"domain": "127.0.0.1", "username": "1001", "transport": ""}})
    events = ph.events()
    events.snapshot()
    peer = TcpPeer(port)
    try:
        local = peer.local
        tag = secrets.token_hex(4)
        sdp = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
               f"m=audio {free_port('udp')} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
        call_id = f"tcp-call.{tag}"
        invite = (f"INVITE sip:1001@127.0.0.1:{port};transport=tcp SIP/2.0\r\n"
                  f"Via: SIP/2.0/TCP {local[0]}:{local[1]};branch=z9hG4bK{tag}\r\n"
                  f"From: \"TCP caller\" <sip:7777@127.0.0.1>;tag={tag}\r\n"
                  "t: <sip:1001@127.0.0.1>\r\n"
                  f"i: {call_id}\r\nCSeq: 1 INVITE\r\n"
                  f"m: <sip:7777@{local[0]}:{local[1]};transport=tcp>\r\n"
                  "Max-Forwards: 70\r\nc: application/sdp\r\n"
                  f"l: {len(sdp)}\r\n\r\n{sdp}")
        peer.send(invite.encode())
        ok = peer.recv(10)
        while ok is not None and ok["code"] < 200:
            ok = peer.recv(10)
        assert ok is not None and ok["code"] == 200, ok
        ack = (f"ACK sip:1001@127.0.0.1:{port};transport=tcp SIP/2.0\r\n"
               f"Via: SIP/2.0/TCP {local[0]}:{local[1]};branch=z9hG4bK{tag}a\r\n"
               f"From: \"TCP caller\" <sip:7777@127.0.0.1>;tag={tag}\r\n"
               f"To: {header(ok, 'to')}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\n"
               "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
        peer.send(ack.encode())
        events.wait_for("call.confirmed", None, 10)
        replies: list = []
        hangup = threading.Thread(target=lambda: replies.append(ph.request("hangup", timeout=20)))
        hangup.start()
        try:
            # Our reader's frame() reads requests as well as responses.
            bye = peer.recv(10)
            assert bye is not None and bye["status"].startswith("BYE "), bye
            assert header(bye, "call-id") == call_id, bye
            answer = ("SIP/2.0 200 OK\r\n"
                      + "".join(f"Via: {v}\r\n" for v in headers(bye, "via"))
                      + f"From: {header(bye, 'from')}\r\nTo: {header(bye, 'to')}\r\n"
                      f"Call-ID: {call_id}\r\nCSeq: {header(bye, 'cseq')}\r\n"
                      "Content-Length: 0\r\n\r\n")
            peer.send(answer.encode())
        finally:
            hangup.join(25)
        assert replies and replies[0].get("ok") is True, replies
        ended = events.wait_for("call.ended", None, 10)
        assert ended["by"] == "local", ended
    finally:
        peer.close()
