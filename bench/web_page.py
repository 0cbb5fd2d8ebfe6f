#!/usr/bin/env python3
"""The web phone page's weight and load time (issue 11): the bytes of `GET /` and its
files (as transferred and as decoded), and the navigation timing in Debian's
chromium (DOMContentLoaded, load) plus the time until the page is live (logged in,
the WebSocket's snapshot shown), over BENCH_LOADS loads, each with a fresh login
URL from `microsip open --print`. Then the incoming-call banner: BENCH_RINGS times a
raw SIP INVITE is sent to the phone over UDP and the time from sending it to the
banner's first visible frame (the page's own clock, same machine) is taken; the call
is then rejected (486, ACKed).

The phone runs the local account only, null audio, `--http` on a free port;
chromium is driven by tests/e2e/web/driver.js (playwright-core). MICROSIP_BIN
(default target/release/microsip).

Prints numbers; asserts nothing about speed (shared, noisy machines).
Run: python3 bench/web_page.py
"""
import json
import os
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = os.environ.get("MICROSIP_BIN", str(ROOT / "target" / "release" / "microsip"))
WEB = ROOT / "tests" / "e2e" / "web"
LOADS = int(os.environ.get("BENCH_LOADS", "20"))
RINGS = int(os.environ.get("BENCH_RINGS", "20"))

INVITE = (
    "INVITE sip:1001@127.0.0.1:{phone} SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-web{n}\r\n"
    "Max-Forwards: 70\r\n"
    "From: \"Bench {n}\" <sip:20{n}@127.0.0.1:{me}>;tag=web{n}\r\n"
    "To: <sip:1001@127.0.0.1:{phone}>\r\n"
    "Call-ID: web-bench-{n}@127.0.0.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:20{n}@127.0.0.1:{me}>\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: {length}\r\n\r\n{sdp}")
SDP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio {rtp} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ring_latencies(do, env: dict, phone_port: int) -> list[float]:
    """Sends RINGS INVITEs one after the other; for each, the ms from sending it to
    the page's banner showing. Each call is rejected and its 486 ACKed."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(10)
    me = sock.getsockname()[1]
    rtp = free_port()
    out = []
    for n in range(RINGS):
        sdp = SDP.format(rtp=rtp)
        invite = INVITE.format(phone=phone_port, me=me, n=n, sdp=sdp, length=len(sdp))
        sent = time.time()
        sock.sendto(invite.encode(), ("127.0.0.1", phone_port))
        shown = do("visibleAt", selector="#incoming")["at"] / 1000
        out.append((shown - sent) * 1000)
        subprocess.run([BIN, "--profile", "bench", "reject"], env=env, capture_output=True,
                       timeout=30)
        for _ in range(20):  # 100, 180, then the 486 to ACK: bounded
            data = sock.recv(65535).decode(errors="replace")
            if data.startswith("SIP/2.0 486"):
                to = next(line for line in data.split("\r\n") if line.lower().startswith("to:"))
                ack = (f"ACK sip:1001@127.0.0.1:{phone_port} SIP/2.0\r\n"
                       f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-web{n}\r\n"
                       f"Max-Forwards: 70\r\nFrom: <sip:20{n}@127.0.0.1:{me}>;tag=web{n}\r\n"
                       f"{to}\r\nCall-ID: web-bench-{n}@127.0.0.1\r\nCSeq: 1 ACK\r\n"
                       "Content-Length: 0\r\n\r\n")
                sock.sendto(ack.encode(), ("127.0.0.1", phone_port))
                break
        do("wait", selector="#incoming", state="hidden")
    sock.close()
    return out


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="msweb"))
    runtime = work / "run"
    runtime.mkdir(mode=0o700)
    ini = work / "microsip.ini"
    sip_port = free_port()
    ini.write_text("[Settings]\naccountId=0\naudioInputDevice=null\naudioOutputDevice=null\n"
                   f"audioRingDevice=null\nsourcePort={sip_port}\n")
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime), XDG_CONFIG_HOME=str(work))
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    port = free_port()
    phone = subprocess.Popen([BIN, "--ini", str(ini), "--profile", "bench", "--headless",
                              "--http", str(port)], env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    profile = work / "chromium"
    profile.mkdir()
    driver = subprocess.Popen(["node", str(WEB / "driver.js"), str(profile)], cwd=WEB,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def do(op: str, **args) -> dict:
        driver.stdin.write(json.dumps({"op": op, **args}) + "\n")
        driver.stdin.flush()
        answer = json.loads(driver.stdout.readline())
        if not answer.get("ok"):
            raise SystemExit(f"{op}: {answer.get('error')}")
        return answer

    def login_url() -> str:
        for _ in range(300):  # the phone is starting: bounded
            r = subprocess.run([BIN, "--profile", "bench", "open", "--print"], env=env,
                               capture_output=True, text=True, timeout=30)
            if r.returncode == 0:
                return r.stdout.strip()
            time.sleep(0.05)
        raise SystemExit(f"no login URL: {r.stderr}")

    try:
        loads, doms, lives, sizes = [], [], [], None
        for i in range(LOADS):
            url = login_url()
            do("goto", url="about:blank")
            started = time.monotonic()
            do("goto", url=url)
            do("wait", selector='body[data-state="live"]')
            lives.append((time.monotonic() - started) * 1000)
            t = do("timing")
            loads.append(t["load_ms"])
            doms.append(t["dom_ms"])
            if sizes is None:
                sizes = (t["bytes"], t["body_bytes"])
        files = {name: len((ROOT / "crates/control/src/http/web" / name).read_bytes())
                 for name in ("index.html", "app.js", "style.css")}
        print(f"web page files: {files}, total {sum(files.values())} bytes")
        print(f"first load: {sizes[0]} bytes transferred (with headers), "
              f"{sizes[1]} bytes of bodies (the page, its files and the API replies it read)")
        for name, values in (("DOMContentLoaded", doms), ("load", loads),
                             ("live (login + snapshot shown)", lives)):
            values = sorted(values)
            print(f"{name}: median {statistics.median(values):.1f} ms, "
                  f"max {values[-1]:.1f} ms over {len(values)} loads")
        banner = ring_latencies(do, env, sip_port)
        print(f"incoming call: INVITE sent -> banner visible: median "
              f"{statistics.median(banner):.1f} ms, max {max(banner):.1f} ms "
              f"over {len(banner)} calls")
    finally:
        try:
            driver.stdin.write('{"op": "close"}\n')
            driver.stdin.flush()
            driver.wait(timeout=20)
        except Exception:
            driver.kill()
        phone.terminate()
        try:
            phone.wait(timeout=20)
        except subprocess.TimeoutExpired:
            phone.kill()


if __name__ == "__main__":
    main()
