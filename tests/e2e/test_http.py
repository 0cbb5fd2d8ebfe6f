"""The HTTP + WebSocket API (`--http PORT`, `[Settings] httpPort`), against the phone
under test and real peers.

Without the token every endpoint answers 401 problem+json; with it, `POST /calls`
dials baresip through Kamailio, the call becomes active, `/hold` and `/resume` are
seen as events, `/dtmf` digits are reported by baresip, `/hangup` ends it and the
call is in `GET /history`; `GET /events` (WebSocket) gives the snapshot and then the
call's `call.*` events. The API listens on 127.0.0.1 only; CORS headers go only to
listed origins; bad input gets the right 4xx problem+json; schemathesis checks every
response against docs/openapi.json (no 5xx)."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from websockets.sync.client import connect as ws_connect

import peers
from peers import account, ini

PASSWORD = "p;w#1005"
USERS = {"1001": PASSWORD, "1002": "secret2"}
REPO = Path(__file__).resolve().parents[2]
OPENAPI = REPO / "docs" / "openapi.json"
LISTED = "https://crm.example"
# Path parameters for calling every documented endpoint.
PATH_VALUES = {"{id}": "1", "{n}": "1", "{number}": "1002", "{role}": "input"}


# ---------------------------------------------------------------- helpers

class Api:
    """A small client for the phone's HTTP API."""

    def __init__(self, port: int, token: str | None):
        self.port, self.token = port, token

    def request(self, method: str, path: str, body=None, token: str | None = "default",
                headers: dict | None = None, raw: bytes | None = None,
                timeout: float = 60.0) -> tuple[int, dict, object]:
        """-> (status, lowercase headers, parsed JSON body or the text)."""
        h = dict(headers or {})
        token = self.token if token == "default" else token
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=data, headers=h)
            r = conn.getresponse()
            text = r.read().decode("utf-8", errors="replace")
            hdrs = {k.lower(): v for k, v in r.getheaders()}
        finally:
            conn.close()
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = text
        return r.status, hdrs, parsed


def assert_problem(status: int, headers: dict, body, want_status: int, want_code: str):
    assert status == want_status, (status, body)
    assert headers.get("content-type") == "application/problem+json", headers
    assert isinstance(body, dict), body
    assert {"type", "title", "status", "detail", "code"} <= set(body), body
    assert body["status"] == want_status and body["code"] == want_code, body


def documented_operations() -> list[tuple[str, str]]:
    doc = json.loads(OPENAPI.read_text())
    return [(m.upper(), p) for p, item in doc["paths"].items() for m in item
            if m in ("get", "post", "put", "delete")]


def concrete(path: str) -> str:
    for k, v in PATH_VALUES.items():
        path = path.replace(k, v)
    return path


def listening_tcp(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket the process listens on (IPv4 and IPv6)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            local, state, inode = f[1], f[3], f[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            addr_hex, port_hex = local.split(":")
            if width == 8:
                addr = socket.inet_ntop(socket.AF_INET, bytes.fromhex(addr_hex)[::-1])
            else:
                words = bytes.fromhex(addr_hex)
                addr = socket.inet_ntop(socket.AF_INET6, b"".join(
                    words[i:i + 4][::-1] for i in range(0, 16, 4)))
            found.append((addr, int(port_hex, 16)))
    return found


def tcp_state(local_port: int, remote_port: int) -> str | None:
    """The state (hex, as /proc/net/tcp writes it: 01 ESTABLISHED) of the IPv4
    connection 127.0.0.1:local_port <-> 127.0.0.1:remote_port, None when gone."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        local, remote, state = f[1], f[2], f[3]
        if (int(local.split(":")[1], 16) == local_port
                and int(remote.split(":")[1], 16) == remote_port):
            return state
    return None


# ---------------------------------------------------------------- fixtures

@pytest.fixture
def kam(make_kamailio):
    return make_kamailio(users=USERS)


@pytest.fixture
def api_phone(make_phone):
    """make(accounts=[...], use_option=True, **settings) -> (phone, Api): a phone
    with the HTTP API on a free port (`--http PORT`, or `httpPort` in the ini)."""
    def make(accounts=(), use_option=True, **settings):
        port = peers.free_port("tcp")
        keys = dict(audioInputDevice="null", audioOutputDevice="null",
                    audioRingDevice="null", httpAllowOrigins=f"{LISTED}, http://127.0.0.1:9")
        if not accounts:
            keys["accountId"] = 0
        if not use_option:
            keys["httpPort"] = port
        keys.update(settings)
        extra = ["--http", str(port)] if use_option else []
        ph = make_phone(ini(*accounts, **keys), extra_args=extra)
        token_file = ph.workdir / "microsip.http-token"
        token = token_file.read_text().strip()
        return ph, Api(port, token)
    return make


# ---------------------------------------------------------------- tests

def test_without_the_token_every_endpoint_answers_401(api_phone):
    ph, api = api_phone()
    ops = documented_operations()
    assert len(ops) >= 25
    for method, path in ops:
        if path in ("/openapi.json", "/login", "/", "/app.js", "/style.css"):
            continue  # public: the document, the login, the web page's files
        for token in (None, "0" * 64, api.token[:-1] + "x"):
            body = {} if method in ("POST", "PUT") else None
            status, headers, reply = api.request(method, concrete(path), body, token=token)
            assert_problem(status, headers, reply, 401, "unauthorized")
            assert headers.get("www-authenticate") == "Bearer", (method, path, headers)
    # The phone did nothing: still idle, no call.
    status, _, reply = api.request("GET", "/status")
    assert status == 200 and reply["data"]["status"] == 0, reply


def test_token_file_is_private_and_printed_by_the_command(api_phone):
    ph, api = api_phone()
    token_file = ph.workdir / "microsip.http-token"
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    assert len(api.token) == 64 and int(api.token, 16) >= 0
    rc, out, err = ph.cmd("--ini", str(ph.ini_path), "http-token")
    assert rc == 0 and out.strip() == api.token, (out, err)
    # Without a running phone too (the same file, not a new token).
    ph.cmd("exit")
    ph.wait_exit(30)
    rc, out, err = ph.cmd("--ini", str(ph.ini_path), "http-token")
    assert rc == 0 and out.strip() == api.token, (out, err)


def test_served_document_is_the_repos_and_lists_every_route(api_phone):
    ph, api = api_phone()
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=30)
    conn.request("GET", "/openapi.json")
    r = conn.getresponse()
    served = r.read()
    conn.close()
    assert r.status == 200
    assert served == OPENAPI.read_bytes()
    doc = json.loads(served)
    assert doc["openapi"].startswith("3.1")
    # Every documented operation exists (with the token: never "no such endpoint"
    # nor "method not allowed").
    for method, path in documented_operations():
        if path in ("/login",):
            continue
        if method in ("POST", "PUT", "DELETE") and path in ("/calls", "/messages"):
            continue  # would dial or send
        body = {} if method in ("POST", "PUT") else None
        status, _, reply = api.request(method, concrete(path), body)
        if status >= 400:
            assert reply.get("code") not in ("not_found", "method_not_allowed"), (method, path, reply)


def test_listens_on_127_0_0_1_only_and_httpport_in_the_ini(api_phone):
    for use_option in (True, False):
        ph, api = api_phone(use_option=use_option)
        sockets = [s for s in listening_tcp(ph.pid) if s[1] == api.port]
        assert sockets == [("127.0.0.1", api.port)], listening_tcp(ph.pid)
        status, _, reply = api.request("GET", "/status")
        assert status == 200 and reply["ok"] is True


def test_http_is_off_unless_enabled(make_phone):
    ph = make_phone(ini(accountId=0, audioInputDevice="null", audioOutputDevice="null"))
    assert not (ph.workdir / "microsip.http-token").exists()
    rc, out, _ = ph.cmd("status")
    assert rc == 0


def test_a_port_in_use_is_reported_and_the_phone_runs_on(make_phone):
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        ph = make_phone(ini(accountId=0, audioInputDevice="null", audioOutputDevice="null"),
                        extra_args=["--http", str(port)])
        rc, out, _ = ph.cmd("status")
        assert rc == 0 and out.startswith("0"), out
        err = ph.stderr_text()
        assert f"cannot listen on 127.0.0.1:{port}" in err, err
    finally:
        holder.close()


def test_cors_only_for_listed_origins(api_phone):
    ph, api = api_phone()
    status, headers, _ = api.request("GET", "/status", headers={"Origin": LISTED})
    assert status == 200 and headers.get("access-control-allow-origin") == LISTED, headers
    for origin in ("https://evil.example", "http://crm.example", "https://crm.example.evil",
                   "null"):
        status, headers, _ = api.request("GET", "/status", headers={"Origin": origin})
        assert status == 200
        assert not [k for k in headers if k.startswith("access-control-")], (origin, headers)
    # Preflight.
    pre = {"Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "authorization, content-type"}
    status, headers, _ = api.request("OPTIONS", "/calls", token=None,
                                     headers={"Origin": LISTED, **pre})
    assert status == 204 and headers.get("access-control-allow-origin") == LISTED, headers
    assert "POST" in headers.get("access-control-allow-methods", "")
    assert "authorization" in headers.get("access-control-allow-headers", "").lower()
    status, headers, _ = api.request("OPTIONS", "/calls", token=None,
                                     headers={"Origin": "https://evil.example", **pre})
    assert not [k for k in headers if k.startswith("access-control-")], headers
    # A refusal to a listed origin carries the header (the page can read the error).
    status, headers, _ = api.request("GET", "/status", token=None, headers={"Origin": LISTED})
    assert status == 401 and headers.get("access-control-allow-origin") == LISTED


def test_bad_input_gets_4xx_problems(api_phone):
    ph, api = api_phone()
    # Malformed JSON.
    s, h, b = api.request("POST", "/calls", raw=b'{"target":',
                          headers={"Content-Type": "application/json"})
    assert_problem(s, h, b, 400, "bad_argument")
    # Wrong types, unknown fields, missing fields.
    for body in ({"target": 1002}, {"target": "1002", "frob": 1}, {}, {"target": ""}):
        s, h, b = api.request("POST", "/calls", body)
        assert_problem(s, h, b, 400, "bad_argument")
    # Wrong content type.
    s, h, b = api.request("POST", "/calls", raw=b"target=1002",
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_problem(s, h, b, 415, "unsupported_media_type")
    # Oversized body.
    big = json.dumps({"target": "1" * (70 * 1024)}).encode()
    s, h, b = api.request("POST", "/calls", raw=big, headers={"Content-Type": "application/json"})
    assert_problem(s, h, b, 413, "too_large")
    # Unknown call id; not a call id.
    s, h, b = api.request("POST", "/calls/4242/hangup")
    assert_problem(s, h, b, 404, "no_such_call")
    s, h, b = api.request("POST", "/calls/4242/dtmf", {"digits": "1"})
    assert_problem(s, h, b, 404, "no_such_call")
    s, h, b = api.request("POST", "/calls/decline/reject")
    assert_problem(s, h, b, 400, "bad_argument")
    # The grammar's checks: bad digits, a level out of range.
    s, h, b = api.request("POST", "/calls/1/dtmf", {"digits": "12x"})
    assert_problem(s, h, b, 400, "bad_argument")
    s, h, b = api.request("PUT", "/levels", {"speaker": 101})
    assert_problem(s, h, b, 400, "bad_argument")
    # No call to answer (state), unknown account, unknown endpoint, wrong method.
    s, h, b = api.request("POST", "/accounts/7/register")
    assert_problem(s, h, b, 404, "no_such_account")
    s, h, b = api.request("GET", "/nowhere")
    assert_problem(s, h, b, 404, "not_found")
    s, h, b = api.request("DELETE", "/status")
    assert_problem(s, h, b, 405, "method_not_allowed")
    # /events without an upgrade.
    s, h, b = api.request("GET", "/events")
    assert_problem(s, h, b, 426, "upgrade_required")
    # The phone is fine.
    s, _, b = api.request("GET", "/status")
    assert s == 200 and b["data"]["status"] == 0


def test_levels_and_contacts_run_the_socket_commands(api_phone):
    ph, api = api_phone()
    s, _, b = api.request("PUT", "/levels", {"speaker": 40, "microphone": 60,
                                             "microphoneMuted": True})
    assert s == 200 and b["ok"] is True, b
    assert [d.get("level", d.get("muted")) for d in b["data"]] == [40, 60, True], b
    assert "volumeOutput=40" in ph.ini_path.read_text()
    s, _, b = api.request("POST", "/contacts", {"number": "1002", "name": "Bob Smith"})
    assert s == 201, b
    rc, out, _ = ph.cmd("contacts")
    assert "1002" in out and "Bob Smith" in out, out
    s, _, b = api.request("GET", "/contacts")
    assert s == 200 and "1002" in json.dumps(b["data"])
    s, _, b = api.request("DELETE", "/contacts/1002")
    assert s == 200, b
    rc, out, _ = ph.cmd("contacts")
    assert "1002" not in out, out


def test_a_call_through_the_api_and_its_events_over_websocket(kam, api_phone, make_baresip):
    a = make_baresip(kam, "1002", tone=0)
    ph, api = api_phone([account(kam.address, "1001", PASSWORD)], DTMFMethod="2")
    ev = ph.events()
    ev.wait_state(1, "registered", 30, codes={200})
    with ws_connect(f"ws://127.0.0.1:{api.port}/events?filter=call.",
                    additional_headers={"Authorization": f"Bearer {api.token}"},
                    open_timeout=30) as ws:
        snapshot = json.loads(ws.recv(timeout=30))
        assert snapshot["type"] == "snapshot" and snapshot["calls"] == [], snapshot
        states = {a["account"]: a["state"] for a in snapshot["accounts"]}
        assert states.get(1) == "registered", snapshot

        def next_ws(type_: str, cid: int) -> dict:
            for _ in range(200):
                e = json.loads(ws.recv(timeout=30))
                assert e["type"].startswith("call."), e
                if e["type"] == type_ and e.get("call") == cid:
                    return e
            raise AssertionError(f"no {type_} for call {cid} on the WebSocket")

        s, h, b = api.request("POST", "/calls", {"target": "1002", "account": 1})
        assert s == 201, b
        cid = b["call"]
        assert b["data"]["call"] == cid and b["ok"], b
        assert h.get("location") == f"/calls/{cid}"
        next_ws("call.outgoing", cid)
        a.wait_event("CALL_ESTABLISHED")
        next_ws("call.confirmed", cid)
        s, _, b = api.request("GET", "/calls")
        assert s == 200 and [c["id"] for c in b["data"]] == [cid], b

        s, _, b = api.request("POST", f"/calls/{cid}/hold")
        assert s == 200, b
        next_ws("call.held", cid)
        s, _, b = api.request("GET", "/status")
        assert b["data"]["status"] == 3, b
        s, _, b = api.request("POST", f"/calls/{cid}/resume")
        assert s == 200, b
        next_ws("call.resumed", cid)

        s, _, b = api.request("POST", f"/calls/{cid}/dtmf", {"digits": "19#"})
        assert s == 200, b
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and a.count("CALL_DTMF_START") < 3:
            time.sleep(0.1)
        got = "".join(e.get("param", "") for e in a.events if e.get("type") == "CALL_DTMF_START")
        assert got == "19#", got

        s, _, b = api.request("POST", f"/calls/{cid}/hangup")
        assert s == 200, b
        a.wait_event("CALL_CLOSED")
        next_ws("call.ended", cid)
    s, _, b = api.request("GET", "/history?limit=5")
    assert s == 200, b
    assert b["data"] and b["data"][0]["number"] == "1002", b
    s, _, b = api.request("GET", "/history?missed=true")
    assert s == 200 and all(e["type"] == "missed" for e in b["data"]), b


def test_websocket_needs_the_token(api_phone):
    ph, api = api_phone()
    with pytest.raises(Exception) as caught:
        ws_connect(f"ws://127.0.0.1:{api.port}/events", open_timeout=10)
    assert "401" in str(caught.value), caught.value
    with ws_connect(f"ws://127.0.0.1:{api.port}/events",
                    additional_headers={"Authorization": f"Bearer {api.token}"},
                    open_timeout=10) as ws:
        snapshot = json.loads(ws.recv(timeout=10))
        assert snapshot["type"] == "snapshot"
        # A command over HTTP, its event over the WebSocket.
        s, _, _ = api.request("PUT", "/levels", {"speakerMuted": True})
        assert s == 200


def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(api_phone, tmp_path):
    ph, api = api_phone()
    # Bounded: few examples per operation, a time budget; nothing that dials, sends
    # a message, transfers or switches a sound device (those reach the world or the
    # machine), and not the WebSocket.
    args = [sys.executable, "-m", "schemathesis.cli", "run",
            f"http://127.0.0.1:{api.port}/openapi.json",
            "-H", f"Authorization: Bearer {api.token}",
            "-n", "8", "--seed", "1", "--max-time", "60", "-w", "1", "--no-color",
            "--checks", "not_a_server_error,status_code_conformance,"
                        "content_type_conformance,response_schema_conformance",
            "--report-dir", str(tmp_path / "schemathesis")]
    for op in ("dial", "callTransfer", "sendMessage", "setDevice", "events"):
        args += ["--exclude-operation-id", op]
    r = subprocess.run(args, capture_output=True, text=True, timeout=400, cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-6000:]
    assert "passed" in out and "Tested: " in out, out[-3000:]
    assert ph.running()


def test_a_websocket_client_that_never_reads_is_dropped_and_others_are_served(
        kam, api_phone):
    ph, api = api_phone([account(kam.address, "1001", PASSWORD)])
    ev = ph.events()
    ev.wait_state(1, "registered", 30, codes={200})
    # A client with a tiny receive buffer that reads nothing after the handshake.
    stalled = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", api.port))
    stalled.sendall((f"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                     f"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {api.token}\r\n\r\n")
                    .encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += stalled.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    with ws_connect(f"ws://127.0.0.1:{api.port}/events?filter=account.registering",
                    additional_headers={"Authorization": f"Bearer {api.token}"},
                    open_timeout=10) as good:
        assert json.loads(good.recv(timeout=10))["type"] == "snapshot"
        # Events enough to fill the stalled client's buffers many times over
        # (`register 1` on one kept-open socket connection; each makes 2 events).
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(str(ph.socket_path))
        lines = conn.makefile("rb")
        rounds = 600
        for _ in range(rounds):
            conn.sendall(b"register 1\n")
            assert lines.readline().startswith(b"OK"), "register refused"
        conn.close()
        # The reading client got every one of them, in order.
        seen = 0
        while seen < rounds:
            e = json.loads(good.recv(timeout=30))
            assert e["type"] == "account.registering", e
            seen += 1
        # The phone still answers at once.
        s, _, b = api.request("GET", "/status")
        assert s == 200 and b["ok"] is True
    # The stalled client is dropped (the phone's end of the connection leaves
    # ESTABLISHED: it closed it, with data still queued); then reading what was
    # queued ends in end-of-stream, not in a stream that goes on.
    client_port = stalled.getsockname()[1]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and tcp_state(api.port, client_port) == "01":
        time.sleep(0.2)
    assert tcp_state(api.port, client_port) != "01", "the stalled client was not dropped"
    stalled.settimeout(30)
    total = 0
    while True:
        chunk = stalled.recv(65536)
        if not chunk:
            break
        total += len(chunk)
    stalled.close()
    assert total > 0
    assert f"Bearer {api.token}" not in ph.stderr_text()
