#!/usr/bin/env python3
"""The HTTP + WebSocket API (issue 11), each number next to the control socket's in
the same run on the same machine:

- round trip of `status`: `GET /status` on kept-alive HTTP/1.1 connections vs the
  `status` line on kept-open socket connections, p50/p99, with 1 client and with
  BENCH_CONCURRENT (100) clients at once (asyncio; the same client code for both);
- event latency: `POST /accounts/1/register` sent -> `account.registering` received
  on the WebSocket `GET /events`, vs `register 1` on the socket -> the same event on
  the socket's `events` stream (Kamailio as the registrar);
- idle RSS with HTTP off and on (and, with MICROSIP_BEFORE_BIN, a binary built
  without the API, HTTP off: "unchanged").

Prints numbers; asserts nothing about speed (shared, noisy machines).
Run: python3 bench/http_api.py (MICROSIP_BIN defaults to target/release/microsip)
"""
import asyncio
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from registration_control import kill  # noqa: E402  (also puts tests/e2e on the path)
from connections import settle  # noqa: E402
from startup import ask  # noqa: E402
from peers import Kamailio, free_port  # noqa: E402
from websockets.sync.client import connect as ws_connect  # noqa: E402

BIN = os.environ.get("MICROSIP_BIN", str(ROOT / "target" / "release" / "microsip"))
BEFORE_BIN = os.environ.get("MICROSIP_BEFORE_BIN")
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "2000"))
CONCURRENT = int(os.environ.get("BENCH_CONCURRENT", "100"))
PER_CLIENT = int(os.environ.get("BENCH_PER_CLIENT", "50"))
EVENTS = int(os.environ.get("BENCH_EVENTS", "50"))


class Phone:
    def __init__(self, binary: str, work: Path, tag: str, http_port: int | None,
                 kam: Kamailio | None = None):
        self.work = work / tag
        self.work.mkdir(parents=True)
        self.run = Path(tempfile.mkdtemp(prefix="msh", dir="/tmp"))
        ini = self.work / "microsip.ini"
        text = "[Settings]\nsourcePort=0\naudioInputDevice=null\naudioOutputDevice=null\n"
        if kam is None:
            text += "accountId=0\n"
        else:
            text += (f"accountId=1\n[Account1]\nserver=127.0.0.1:{kam.port}\n"
                     "domain=127.0.0.1\nusername=1001\npassword=p;w#1005\n")
        ini.write_text(text)
        env = dict(os.environ, XDG_RUNTIME_DIR=str(self.run), XDG_CONFIG_HOME=str(self.work))
        args = [binary, "--ini", str(ini), "--profile", tag, "--headless"]
        if http_port:
            args += ["--http", str(http_port)]
        self.sock = self.run / "microsip" / f"{tag}.sock"
        self.port = http_port
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while not (self.sock.exists() and ask(self.sock, "STATUS", 5)):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"{binary} did not start")
            time.sleep(0.01)
        token_file = self.work / "microsip.http-token"
        self.token = token_file.read_text().strip() if http_port else None

    def stop(self) -> None:
        kill(self.proc)
        shutil.rmtree(self.run, ignore_errors=True)


# ---------------------------------------------------------------- round trips

async def http_client(port: int, token: str, n: int, out: list) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (f"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               f"Authorization: Bearer {token}\r\n\r\n").encode()
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            out.append((time.perf_counter() - t0) * 1000)
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head.decode(errors="replace"))
    finally:
        writer.close()


async def socket_client(path: Path, n: int, out: list) -> None:
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            writer.write(b"status\n")
            line = await reader.readline()
            out.append((time.perf_counter() - t0) * 1000)
            if not line.startswith(b"OK"):
                raise RuntimeError(line.decode(errors="replace"))
    finally:
        writer.close()


def pct(values: list, p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def clients_in_one_process(kind: str, target: str, token: str, clients: int,
                           per: int) -> list:
    """`clients` concurrent connections (asyncio) of one kind; their latencies."""
    out: list = []

    async def run_all():
        if kind == "http":
            await asyncio.gather(*(http_client(int(target), token, per, out)
                                   for _ in range(clients)))
        else:
            await asyncio.gather(*(socket_client(Path(target), per, out)
                                   for _ in range(clients)))

    asyncio.run(run_all())
    return out


def round_trips(phone: Phone) -> None:
    # The socket serves at most 64 connections per client process: 100 clients come
    # from 2 processes of 50 (for both kinds, the same client code).
    for clients, per in ((1, REQUESTS), (CONCURRENT, PER_CLIENT)):
        groups = max(1, (clients + 49) // 50)
        for name, kind, target in (("HTTP GET /status", "http", str(phone.port)),
                                   ("socket status", "socket", str(phone.sock))):
            t0 = time.perf_counter()
            with multiprocessing.Pool(groups) as pool:
                parts = pool.starmap(clients_in_one_process,
                                     [(kind, target, phone.token, clients // groups, per)] * groups)
            wall = time.perf_counter() - t0
            out = [v for part in parts for v in part]
            print(f"round trip, {clients} client(s) x {per}: {name}: "
                  f"p50 {statistics.median(out):.3f} ms, p99 {pct(out, 0.99):.3f} ms, "
                  f"{len(out) / wall:.0f} req/s", flush=True)


# ---------------------------------------------------------------- event latency

def http_post(port: int, token: str, path: str) -> None:
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", path, headers={"Authorization": f"Bearer {token}"})
    conn.getresponse().read()
    conn.close()


def event_latency(phone: Phone) -> None:
    ws_ms, sock_ms = [], []
    with ws_connect(f"ws://127.0.0.1:{phone.port}/events?filter=account.registering",
                    additional_headers={"Authorization": f"Bearer {phone.token}"}) as ws:
        json.loads(ws.recv(timeout=10))  # the snapshot
        for _ in range(EVENTS):
            t0 = time.perf_counter()
            sender = threading.Thread(target=http_post,
                                      args=(phone.port, phone.token, "/accounts/1/register"))
            sender.start()
            event = json.loads(ws.recv(timeout=30))
            ws_ms.append((time.perf_counter() - t0) * 1000)
            assert event["type"] == "account.registering", event
            sender.join(30)
    import socket as sk
    stream = sk.socket(sk.AF_UNIX, sk.SOCK_STREAM)
    stream.connect(str(phone.sock))
    stream.sendall(b"events account.registering\n")
    lines = stream.makefile("rb")
    lines.readline()  # OK streaming events
    lines.readline()  # the snapshot
    for _ in range(EVENTS):
        t0 = time.perf_counter()
        sender = threading.Thread(target=ask, args=(phone.sock, "register 1", 30))
        sender.start()
        event = json.loads(lines.readline())
        sock_ms.append((time.perf_counter() - t0) * 1000)
        assert event["type"] == "account.registering", event
        sender.join(30)
    stream.close()
    for name, out in (("HTTP POST -> WebSocket", ws_ms), ("socket command -> socket events",
                                                          sock_ms)):
        print(f"event latency (register -> account.registering), {name}: "
              f"p50 {statistics.median(out):.3f} ms, p99 {pct(out, 0.99):.3f} ms "
              f"({len(out)} events)", flush=True)


# ---------------------------------------------------------------- main

def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="msbench-http-"))
    print(f"# microsip {BIN}")
    kam = Kamailio(work / "kam").start()
    phones = []
    try:
        # Idle RSS: HTTP off, on (and a binary without the API).
        rows = [("HTTP off", BIN, None), ("HTTP on", BIN, free_port("tcp"))]
        if BEFORE_BIN:
            rows.insert(0, ("before the API, HTTP off", BEFORE_BIN, None))
        for i, (label, binary, port) in enumerate(rows):
            p = Phone(binary, work, f"idle{i}", port)
            phones.append(p)
            if port:
                # A few requests, so the served path has run.
                asyncio.run(http_client(port, p.token, 10, []))
            print(f"idle RSS, {label}: {settle(p.proc.pid) / 1024:.2f} MB", flush=True)
            p.stop()
        phones.clear()

        p = Phone(BIN, work, "rtt", free_port("tcp"), kam)
        phones.append(p)
        round_trips(p)
        event_latency(p)
    finally:
        for p in phones:
            p.stop()
        kam.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
