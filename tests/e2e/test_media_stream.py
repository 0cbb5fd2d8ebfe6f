"""Live call audio over WebSocket (issue 14): `GET /calls/{id}/media` and
`media stream ID URL`, against baresip through Kamailio.

The phone under test (1001, HTTP API on) calls baresip (1002), which plays a
1013 Hz tone (20.26 cycles a frame: no two frames within a second alike, so a
frame can be matched to the RTP packet that carried it) and records what it
receives. A Python WebSocket client:
- sees the tone's frequency in the PCM frames it receives, each frame matched to
  the captured RTP packet whose payload it is (PCMU at 8000 Hz: the frame is the
  payload decoded) and received within LATENCY_BOUND of it (the measured numbers
  are printed; bench/ws_media.py measures properly);
- sends a 600 Hz tone back, and baresip's recording holds it; after `clear` the
  phone's RTP to baresip is silent from the next frame on;
- the phone connects out to a WebSocket server of the test's (`media stream`),
  which hears the tone and sends a 700 Hz tone that baresip hears; `media` lists
  it; `media stop` ends it with `{"event":"stop"}`;
- bad input: a frame of the wrong size gets an error message and the call goes
  on; an unknown call is 404 problem+json, no token 401.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time

import numpy as np
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect
from websockets.sync.server import serve as ws_serve

import audio
import peers
import rtp
from peers import account, ini

USERS = {"1001": "p;w#1005", "1002": "secret2"}
TONE_B = 1013          # baresip's tone
TONE_BACK = 600        # what the client sends into the call
TONE_SERVER = 700      # what the test's server sends into the call
LATENCY_BOUND = 0.150  # generous to CI; the aim is 60 ms (see the bench)


@pytest.fixture
def kam(make_kamailio):
    return make_kamailio(users=USERS)


@pytest.fixture
def media_phone(make_phone, kam):
    """A registered phone (null audio devices) with the HTTP API: (phone, port, token)."""
    port = peers.free_port("tcp")
    ph = make_phone(ini(account(kam.address, "1001", USERS["1001"]),
                        audioInputDevice="null", audioOutputDevice="null",
                        audioRingDevice="null"),
                    extra_args=["--http", str(port)])
    ph.events().wait_state(1, "registered", 30, codes={200})
    token = (ph.workdir / "microsip.http-token").read_text().strip()
    return ph, port, token


def call_baresip(ph, b) -> int:
    rc, out, err = ph.cmd("dial", "1002")
    assert rc == 0 and out.strip().isdigit(), (rc, out, err)
    cid = int(out.strip())
    ph.events().wait_for("call.confirmed", lambda e: e.get("call") == cid, 30)
    b.wait_event("CALL_ESTABLISHED")
    return cid


def tone_frames(freq: float, seconds: float, rate: int = 8000, start: int = 0) -> list[bytes]:
    n = rate // 50
    total = int(seconds * 50)
    t = (np.arange(total * n) + start) / rate
    x = (0.4 * 32767 * np.sin(2 * np.pi * freq * t)).astype("<i2")
    return [x[i * n:(i + 1) * n].tobytes() for i in range(total)]


def pcm(frames: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(frames), dtype="<i2").astype(np.float64) / 32768.0


class Listener:
    """Reads a media WebSocket in a thread: the start message, every binary frame
    with its arrival time, every text message."""

    def __init__(self, ws):
        self.ws = ws
        self.frames: list[tuple[float, bytes]] = []
        self.texts: list[dict] = []
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            for message in self.ws:
                now = time.time()
                if isinstance(message, bytes):
                    self.frames.append((now, message))
                else:
                    self.texts.append(json.loads(message))
        except Exception:  # the connection ended
            pass
        finally:
            self.closed.set()

    def wait_text(self, pred, timeout: float) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for t in list(self.texts):
                if pred(t):
                    return t
            time.sleep(0.02)
        raise AssertionError(f"no such text message in {timeout}s: {self.texts}")

    def wait_frames(self, count: int, timeout: float) -> None:
        deadline = time.time() + timeout
        while len(self.frames) < count and time.time() < deadline:
            time.sleep(0.02)
        assert len(self.frames) >= count, f"{len(self.frames)} frames in {timeout}s"


def send_paced(ws, frames: list[bytes]) -> None:
    """Sends frames at the real-time pace (20 ms each), on absolute deadlines."""
    start = time.monotonic()
    for i, f in enumerate(frames):
        delay = start + i * 0.02 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        ws.send(f)


def g711(p) -> np.ndarray:
    """A PCMU (0) or PCMA (8) packet's payload as float samples."""
    return rtp.decode([p])


def frame_latencies(frames: list[tuple[float, bytes]], packets) -> tuple[list[float], int | None]:
    """For each received frame, the delay since the captured RTP packet whose
    decoded payload it is (the latest such packet before it); and the port those
    packets went to (the phone's RTP port)."""
    decoded = [(p.t, g711(p), p.dst) for p in packets if p.pt in (0, 8) and len(p.payload) == 160]
    out, ports = [], {}
    for t, data in frames:
        x = np.frombuffer(data, dtype="<i2").astype(np.float64) / 32768.0
        if len(x) != 160 or np.sqrt(np.mean(x * x)) < 0.01:
            continue
        best = None
        for pt, y, dst in decoded:
            if pt > t:
                break
            c = float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-12))
            if c > 0.995:
                best = (pt, dst)
        if best is not None:
            out.append(t - best[0])
            ports[best[1]] = ports.get(best[1], 0) + 1
    return out, max(ports, key=ports.get) if ports else None


def listening(ph, cid: int, count: int) -> list[dict]:
    rc, reply = ph.cmd_json("media", str(cid))
    assert rc == 0 and reply["ok"], reply
    assert len(reply["data"]["streams"]) == count, reply
    return reply["data"]["streams"]


# ---------------------------------------------------------------- tests

def test_a_client_hears_the_call_in_time_talks_into_it_and_clears(
        kam, media_phone, make_baresip, rtp_tap):
    ph, port, token = media_phone
    b = make_baresip(kam, "1002", tone=TONE_B)
    ev = ph.events()
    cid = call_baresip(ph, b)
    url = f"ws://127.0.0.1:{port}/calls/{cid}/media?rate=8000"
    with ws_connect(url, additional_headers={"Authorization": f"Bearer {token}"},
                    open_timeout=10) as ws:
        listener = Listener(ws)
        start = listener.wait_text(lambda t: t.get("event") == "start", 10)
        assert start["call"] == cid and start["rate"] == 8000, start
        assert start["codec"] in ("PCMU", "PCMA") and "1002" in start["remote"], start
        assert start["mode"] == "replace" and start["frame_bytes"] == 320, start
        started = ev.wait_for("call.media", lambda e: e.get("state") == "started", 10)
        assert started["call"] == cid and started["client"] == start["client"], started
        assert [s["client"] for s in listening(ph, cid, 1)] == [start["client"]]

        # What baresip says, in the frames, in time.
        listener.wait_frames(150, 15)
        frames = list(listener.frames)
        assert all(len(f) == 320 for _, f in frames)
        x = pcm([f for _, f in frames])
        coverage = audio.tone_coverage(x, TONE_B, rate=8000)
        assert coverage >= 0.9, f"{TONE_B} Hz in {coverage:.0%}\n" + audio.describe(x, rate=8000)
        lat, phone_port = frame_latencies(frames, list(rtp_tap.packets))
        lat.sort()
        assert len(lat) >= 0.8 * len(frames), f"{len(lat)} of {len(frames)} frames matched"
        p50, p99 = lat[len(lat) // 2], lat[int(len(lat) * 0.99)]
        print(f"\nRTP in -> WebSocket frame: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
              f"max {lat[-1] * 1000:.1f} ms over {len(lat)} frames")
        assert p99 <= LATENCY_BOUND, f"p99 {p99 * 1000:.1f} ms"

        # A different tone back: baresip hears it.
        send_paced(ws, tone_frames(TONE_BACK, 4))
        # Barge-in: 20 s queued at once, then cleared.
        for f in tone_frames(TONE_BACK, 20, start=4 * 8000):
            ws.send(f)
        time.sleep(1.0)
        t_clear = time.time()
        ws.send(json.dumps({"event": "clear"}))
        cleared = listener.wait_text(lambda t: t.get("event") == "cleared", 5)
        assert cleared["marks"] == [], cleared
        time.sleep(1.0)
        # A mark with nothing queued comes back at once.
        ws.send(json.dumps({"event": "mark", "name": "m1"}))
        listener.wait_text(lambda t: t.get("event") == "mark" and t.get("name") == "m1", 5)
        info = listening(ph, cid, 1)[0]
        assert info["frames_in"] >= 200 and info["frames_refused"] == 0, info

    stopped = ev.wait_for("call.media", lambda e: e.get("state") == "stopped", 10)
    assert stopped["client"] == start["client"], stopped
    listening(ph, cid, 0)
    # Our RTP to baresip: the tone while it was queued, silence from the frame
    # after the clear.
    to_b = [p for p in list(rtp_tap.packets) if p.pt in (0, 8) and p.src == phone_port
            and float(np.mean(np.abs(g711(p)))) > 0.05
            and p.t > t_clear - 2.0]
    assert any(p.t <= t_clear for p in to_b), "no tone packets to baresip before the clear"
    last = max(p.t for p in to_b) - t_clear
    print(f"last tone packet {last * 1000:.1f} ms after the clear was sent")
    assert last <= 0.100, f"tone went on {last * 1000:.1f} ms after clear"
    ph.cmd("hangup", str(cid))
    b.wait_event("CALL_CLOSED")
    enc, dec = b.recordings()
    secs = audio.tone_seconds(dec, TONE_BACK)
    assert secs >= 4.0, f"baresip heard {TONE_BACK} Hz for {secs:.2f}s\n" + audio.describe(dec)


def test_the_phone_streams_to_a_server_both_ways_and_stops(kam, media_phone, make_baresip):
    ph, _port, _token = media_phone
    b = make_baresip(kam, "1002", tone=TONE_B)
    ev = ph.events()
    cid = call_baresip(ph, b)
    got: dict = {"frames": [], "texts": []}
    done = threading.Event()

    def handler(ws):
        start = json.loads(ws.recv(timeout=10))
        got["texts"].append(start)
        sender = threading.Thread(
            target=send_paced, args=(ws, tone_frames(TONE_SERVER, 5, rate=16000, )),
            daemon=True)
        sender.start()
        try:
            for message in ws:
                if isinstance(message, bytes):
                    got["frames"].append(message)
                else:
                    got["texts"].append(json.loads(message))
        except Exception:
            pass
        done.set()

    server_port = peers.free_port("tcp")
    with ws_serve(handler, "127.0.0.1", server_port) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"ws://127.0.0.1:{server_port}/bot?call={cid}"
        rc, reply = ph.cmd_json("media", "stream", str(cid), url, "16000")
        assert rc == 0 and reply["ok"], reply
        client = reply["data"]["client"]
        started = ev.wait_for("call.media", lambda e: e.get("state") == "started", 10)
        assert started["remote"] == url and started["rate"] == 16000, started
        streams = listening(ph, cid, 1)
        assert streams[0]["remote"] == url and streams[0]["client"] == client, streams
        time.sleep(6)
        rc, reply = ph.cmd_json("media", "stop", str(cid), str(client))
        assert rc == 0 and reply["ok"], reply
        assert done.wait(10), "the server's connection did not end"
        server.shutdown()
    start = got["texts"][0]
    assert start["event"] == "start" and start["call"] == cid and start["rate"] == 16000, start
    assert got["texts"][-1].get("event") == "stop", got["texts"][-3:]
    assert len(got["frames"]) >= 200 and all(len(f) == 640 for f in got["frames"])
    x = pcm(got["frames"])
    coverage = audio.tone_coverage(x, TONE_B, rate=16000)
    assert coverage >= 0.9, f"{TONE_B} Hz in {coverage:.0%}\n" + audio.describe(x, rate=16000)
    stopped = ev.wait_for("call.media", lambda e: e.get("state") == "stopped", 10)
    assert stopped["client"] == client, stopped
    listening(ph, cid, 0)
    ph.cmd("hangup", str(cid))
    b.wait_event("CALL_CLOSED")
    enc, dec = b.recordings()
    secs = audio.tone_seconds(dec, TONE_SERVER)
    assert secs >= 4.0, f"baresip heard {TONE_SERVER} Hz for {secs:.2f}s\n" + audio.describe(dec)


def test_bad_input_gets_errors_and_the_call_goes_on(kam, media_phone, make_baresip):
    ph, port, token = media_phone
    b = make_baresip(kam, "1002", tone=TONE_B)
    cid = call_baresip(ph, b)
    auth = {"Authorization": f"Bearer {token}"}
    # No token: 401, unknown call: 404, both problem+json, before any upgrade.
    for path, headers, status in ((f"/calls/{cid}/media", {}, 401),
                                  ("/calls/99/media", auth, 404)):
        with pytest.raises(InvalidStatus) as refused:
            ws_connect(f"ws://127.0.0.1:{port}{path}", additional_headers=headers,
                       open_timeout=10)
        response = refused.value.response
        assert response.status_code == status, response
        assert response.headers["content-type"] == "application/problem+json", response.headers
        body = json.loads(response.body)
        assert body["status"] == status, body
    # A bad rate in the query is a 400 problem.
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(f"ws://127.0.0.1:{port}/calls/{cid}/media?rate=44100",
                   additional_headers=auth, open_timeout=10)
    assert refused.value.response.status_code == 400
    rc, out, err = ph.cmd("media", "stream", "99", "ws://127.0.0.1:9/", check=False)
    assert rc != 0 and "no call 99" in out + err, (out, err)
    rc, out, err = ph.cmd("media", "stream", str(cid), "wss://127.0.0.1:9/", check=False)
    assert rc != 0 and "not supported yet" in out + err, (out, err)
    rc, out, err = ph.cmd("media", "stream", str(cid), f"ws://127.0.0.1:{peers.free_port('tcp')}/", check=False)
    assert rc != 0 and "cannot connect" in out + err, (out, err)
    # Rate from the first message; a frame of the wrong size: an error, dropped.
    with ws_connect(f"ws://127.0.0.1:{port}/calls/{cid}/media", additional_headers=auth,
                    open_timeout=10) as ws:
        ws.send(json.dumps({"event": "start", "rate": 16000, "mode": "mix"}))
        listener = Listener(ws)
        start = listener.wait_text(lambda t: t.get("event") == "start", 10)
        assert start["rate"] == 16000 and start["mode"] == "mix", start
        ws.send(b"\x00" * 100)
        error = listener.wait_text(lambda t: t.get("event") == "error", 5)
        assert "640 bytes" in error["reason"] and "got 100" in error["reason"], error
        ws.send("not json")
        listener.wait_text(lambda t: "JSON" in t.get("reason", ""), 5)
        count = len(listener.frames)
        listener.wait_frames(count + 25, 5)
        assert all(len(f) == 640 for _, f in listener.frames)
    assert ph.cmd("STATUS")[1].strip() == "2"
    # Two clients on one call; hanging up ends both with a stop message.
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(ws_connect(
            f"ws://127.0.0.1:{port}/calls/{cid}/media?rate=8000",
            additional_headers=auth, open_timeout=10)) for _ in range(2)]
        listeners = [Listener(ws) for ws in clients]
        for lst in listeners:
            lst.wait_frames(10, 10)
        listening(ph, cid, 2)
        ph.cmd("hangup", str(cid))
        for lst in listeners:
            stop = lst.wait_text(lambda t: t.get("event") == "stop", 10)
            assert stop["reason"] == "the call ended", stop


def test_a_client_that_stops_reading_is_dropped_and_the_call_goes_on(
        kam, media_phone, make_baresip):
    ph, port, token = media_phone
    b = make_baresip(kam, "1002", tone=TONE_B)
    ev = ph.events()
    cid = call_baresip(ph, b)
    auth = {"Authorization": f"Bearer {token}"}
    url = f"ws://127.0.0.1:{port}/calls/{cid}/media?rate=16000"
    # A reader that keeps up, and one that never reads: a small receive buffer, and
    # websockets stops reading the socket once 16 messages wait unread.
    stack = contextlib.ExitStack()
    reader = stack.enter_context(ws_connect(url, additional_headers=auth, open_timeout=10))
    listener = Listener(reader)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    stack.enter_context(ws_connect(url, sock=sock, additional_headers=auth,
                                   open_timeout=10, max_queue=16))
    first = ev.wait_for("call.media", lambda e: e.get("state") == "started", 10)
    second = ev.wait_for("call.media", lambda e: e.get("state") == "started"
                         and e.get("client") != first["client"], 10)
    dropped = ev.wait_for("call.media", lambda e: e.get("state") == "stopped", 60)
    assert "stopped reading" in dropped["reason"], dropped
    assert dropped["client"] in (first["client"], second["client"]), dropped
    # The call and the other client go on.
    assert ph.cmd("STATUS")[1].strip() == "2"
    count = len(listener.frames)
    listener.wait_frames(count + 50, 10)
    streams = listening(ph, cid, 1)
    assert streams[0]["client"] != dropped["client"], streams
    stack.close()
