#!/usr/bin/env python3
"""The web phone page's weight and load time (issue 11): the bytes of `GET /` and its
files (as transferred and as decoded), and the navigation timing in Debian's
chromium (DOMContentLoaded, load) plus the time until the page is live (logged in,
the WebSocket's snapshot shown), over BENCH_LOADS loads, each with a fresh login
URL from `microsip open --print`.

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="msweb"))
    runtime = work / "run"
    runtime.mkdir(mode=0o700)
    ini = work / "microsip.ini"
    ini.write_text("[Settings]\naccountId=0\naudioInputDevice=null\naudioOutputDevice=null\n"
                   "audioRingDevice=null\n")
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
