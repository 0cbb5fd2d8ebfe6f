#!/usr/bin/env python3
"""The D-Bus face's cost (issue 11): the phone's idle resident memory without a
session bus, on a bus with `dbus=0`, and on a bus with D-Bus on (before and after
BENCH_CALLS `Status` calls), and the round trip of `Status` over D-Bus (jeepney
client) against `STATUS` on the control socket, median and p99.

A private dbus-daemon is started and stopped by pid; the phone runs the local
account only (no server), null audio. MICROSIP_BIN (default
target/release/microsip).

Prints numbers; asserts nothing about speed (shared, noisy machines).
Run: python3 bench/dbus_idle.py
"""
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = os.environ.get("MICROSIP_BIN", str(ROOT / "target" / "release" / "microsip"))
CALLS = int(os.environ.get("BENCH_CALLS", "2000"))
SETTLE_S = 2.0


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def start_bus() -> tuple[subprocess.Popen, str]:
    bus = subprocess.Popen(["dbus-daemon", "--session", "--print-address=1", "--nofork",
                            "--nopidfile"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    address = bus.stdout.readline().decode().strip()
    return bus, address


def start_phone(work: Path, env_bus: str | None, dbus_on: bool) -> tuple[subprocess.Popen, Path]:
    work.mkdir(parents=True)
    runtime = Path(tempfile.mkdtemp(prefix="msb", dir="/tmp"))
    os.chmod(runtime, 0o700)
    ini = work / "microsip.ini"
    ini.write_text("[Settings]\naccountId=0\naudioInputDevice=null\naudioOutputDevice=null\n"
                   f"dbus={1 if dbus_on else 0}\n")
    env = {k: v for k, v in os.environ.items() if k != "DBUS_SESSION_BUS_ADDRESS"}
    env.update(XDG_RUNTIME_DIR=str(runtime), XDG_CONFIG_HOME=str(work))
    if env_bus:
        env["DBUS_SESSION_BUS_ADDRESS"] = env_bus
    proc = subprocess.Popen([BIN, "--ini", str(ini), "--profile", "bench", "--headless"],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    sock = runtime / "microsip" / "bench.sock"
    for _ in range(300):
        if sock.exists():
            try:
                socket_status(sock)
                break
            except OSError:
                pass
        time.sleep(0.1)
    proc.runtime = runtime  # type: ignore[attr-defined]
    return proc, sock


def socket_status(sock: Path, conn: socket.socket | None = None) -> str:
    own = conn is None
    if own:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(10)
        conn.connect(str(sock))
    conn.sendall(b"STATUS\n")
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    if own:
        conn.close()
    return data.decode()


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
    runtime = getattr(proc, "runtime", None)
    if runtime:
        shutil.rmtree(runtime, ignore_errors=True)


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> int:
    if not os.path.exists(BIN):
        print(f"no binary {BIN} (cargo build --release)", file=sys.stderr)
        return 1
    from jeepney import DBusAddress, new_method_call
    from jeepney.io.blocking import open_dbus_connection

    work = Path(tempfile.mkdtemp(prefix="bench-dbus-"))
    bus, address = start_bus()
    try:
        rows = []
        for label, env_bus, on in (("no session bus", None, True),
                                   ("bus, dbus=0", address, False),
                                   ("bus, D-Bus on", address, True)):
            proc, sock = start_phone(work / label.replace(" ", "_").replace(",", ""),
                                     env_bus, on)
            time.sleep(SETTLE_S)
            rows.append((label, rss_kb(proc.pid)))
            if label == "bus, D-Bus on":
                conn = open_dbus_connection(bus=address)
                phone = DBusAddress("/org/microsip/Phone", bus_name="org.microsip.Phone.bench",
                                    interface="org.microsip.Phone1")
                times = []
                for _ in range(CALLS):
                    t = time.perf_counter()
                    reply = conn.send_and_get_reply(new_method_call(phone, "Status"), timeout=10)
                    times.append((time.perf_counter() - t) * 1000)
                    assert reply.body == (0,), reply.body
                conn.close()
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(10)
                s.connect(str(sock))
                sock_times = []
                for _ in range(CALLS):
                    t = time.perf_counter()
                    assert socket_status(sock, s) == "OK 0\n"
                    sock_times.append((time.perf_counter() - t) * 1000)
                s.close()
                time.sleep(SETTLE_S)
                rows.append((f"bus, D-Bus on, after {CALLS} Status calls", rss_kb(proc.pid)))
            stop(proc)
        print(f"binary: {BIN}")
        print(f"{'idle phone (local account, null audio)':46} {'VmRSS':>10}")
        for label, kb in rows:
            print(f"{label:46} {kb:>7} kB")
        print(f"\nStatus round trip, {CALLS} calls, one client:")
        print(f"  D-Bus (jeepney)  p50 {statistics.median(times):.3f} ms  "
              f"p99 {percentile(times, 0.99):.3f} ms")
        print(f"  socket STATUS    p50 {statistics.median(sock_times):.3f} ms  "
              f"p99 {percentile(sock_times, 0.99):.3f} ms")
    finally:
        try:
            os.killpg(bus.pid, 15)
            bus.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
