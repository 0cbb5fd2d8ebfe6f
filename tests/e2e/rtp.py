"""Watching RTP on the wire (127.0.0.1), for what no recording can show:
whether the phone stops SENDING while a call is held, and what it sends.

`RtpTap` reads every UDP datagram on the loopback interface through an
AF_PACKET socket (needs root or CAP_NET_RAW: `RtpTap.available()` says),
keeps those that look like RTP (version 2) with their arrival time, and
lets a test pick a flow by ports afterwards. Nothing is injected; nothing
else on the machine is touched. A reader thread with a bounded poll runs
until stop().

RTCP (a second byte of 200-207, RFC 5761) is kept apart, whole, in `rtcp`
(see `RtcpDatagram.packets()`); `rtcp_flow()` selects it like `flow()`.

Also: `sdp_audio_port(text)`, the m=audio port of the SDP in a SIP message;
`decode(packets)`, the PCMU / PCMA payloads as float samples.
"""

from __future__ import annotations

import os
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass

import numpy as np

import audio

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


@dataclass
class RtpPacket:
    t: float          # time.time() at capture
    src: int          # UDP source port
    dst: int          # UDP destination port
    pt: int           # payload type
    seq: int
    ts: int
    ssrc: int
    marker: bool
    payload: bytes


@dataclass
class RtcpDatagram:
    t: float          # time.time() at capture
    src: int          # UDP source port
    dst: int          # UDP destination port
    data: bytes       # the whole compound datagram

    def packets(self) -> list[tuple[int, int, bytes]]:
        """The compound's packets as (packet type, count field, whole packet);
        stops at the first one whose length does not fit."""
        out, rest = [], self.data
        while len(rest) >= 4:
            n = (struct.unpack("!H", rest[2:4])[0] + 1) * 4
            if n > len(rest):
                break
            out.append((rest[1], rest[0] & 0x1F, rest[:n]))
            rest = rest[n:]
        return out


def _parse(frame: bytes, t: float) -> RtpPacket | RtcpDatagram | None:
    # Loopback frames carry a 14-byte Ethernet header (all zero addresses).
    if len(frame) < 14 + 20 + 8 + 12:
        return None
    eth_type = struct.unpack("!H", frame[12:14])[0]
    if eth_type != 0x0800:
        return None
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    if ip[0] >> 4 != 4 or ip[9] != 17 or ip[12:16] != b"\x7f\x00\x00\x01":
        return None
    udp = ip[ihl:]
    src, dst, length = struct.unpack("!HHH", udp[:6])
    data = udp[8:length]
    if len(data) < 12 or data[0] >> 6 != 2:
        return None
    b0, b1 = data[0], data[1]
    if 72 <= b1 & 0x7F <= 79:  # RTCP (SR/RR/...), also when sent on an RTP port
        return RtcpDatagram(t, src, dst, bytes(data))
    cc = b0 & 0x0F
    off = 12 + 4 * cc
    if b0 & 0x10:  # header extension
        if len(data) < off + 4:
            return None
        off += 4 + 4 * struct.unpack("!H", data[off + 2:off + 4])[0]
    payload = data[off:]
    if b0 & 0x20 and payload:  # padding
        payload = payload[:-payload[-1]] if payload[-1] <= len(payload) else b""
    pt = b1 & 0x7F
    seq, ts, ssrc = struct.unpack("!HII", data[2:12])
    return RtpPacket(t, src, dst, pt, seq, ts, ssrc, bool(b1 & 0x80), bytes(payload))


class RtpTap:
    """Captures RTP-looking UDP on lo from start() to stop()."""

    def __init__(self, max_packets: int = 500_000):
        self.packets: list[RtpPacket] = []
        self.rtcp: list[RtcpDatagram] = []
        self.max_packets = max_packets
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.error: str | None = None

    @staticmethod
    def available() -> tuple[bool, str]:
        """(True, "") when this process may capture on lo; else (False, why)."""
        try:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            s.close()
            return True, ""
        except (PermissionError, OSError, AttributeError) as e:
            return False, f"cannot capture on lo ({e}): run as root or with CAP_NET_RAW"

    def start(self) -> "RtpTap":
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.bind(("lo", 0))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        s.settimeout(0.2)
        self._sock = s
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        s = self._sock
        while not self._stop.is_set():
            try:
                frame, addr = s.recvfrom(65535)
            except (socket.timeout, TimeoutError):
                continue
            except OSError as e:
                self.error = str(e)
                break
            if addr[2] == PACKET_OUTGOING:  # lo shows each packet twice
                continue
            p = _parse(frame, time.time())
            if isinstance(p, RtcpDatagram):
                if len(self.rtcp) < self.max_packets:
                    self.rtcp.append(p)
            elif p is not None and len(self.packets) < self.max_packets:
                self.packets.append(p)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    cleanup = stop

    def diagnostics(self) -> list[tuple[str, str]]:
        flows: dict[tuple[int, int], int] = {}
        for p in list(self.packets):
            flows[(p.src, p.dst)] = flows.get((p.src, p.dst), 0) + 1
        text = "\n".join(f"{s} -> {d}: {n} packets" for (s, d), n in sorted(flows.items()))
        return [("RTP tap flows", text or "<none>" if not self.error else f"error: {self.error}")]

    # -- selection --------------------------------------------------------
    def flow(self, dst: int | None = None, src: int | None = None,
             t0: float | None = None, t1: float | None = None) -> list[RtpPacket]:
        """Packets to port dst (and/or from port src) captured in [t0, t1)."""
        out = []
        for p in list(self.packets):
            if dst is not None and p.dst != dst:
                continue
            if src is not None and p.src != src:
                continue
            if t0 is not None and p.t < t0:
                continue
            if t1 is not None and p.t >= t1:
                continue
            out.append(p)
        return out


    def rtcp_flow(self, dst: int | None = None,
                  src: int | None = None) -> list[RtcpDatagram]:
        """RTCP datagrams to port dst (and/or from port src)."""
        return [d for d in list(self.rtcp)
                if (dst is None or d.dst == dst) and (src is None or d.src == src)]


def decode(packets: list[RtpPacket]) -> np.ndarray:
    """The PCMU (0) / PCMA (8) payloads, in arrival order, as float samples
    (other payload types, e.g. telephone-event, are skipped)."""
    parts = []
    for p in packets:
        b = np.frombuffer(p.payload, dtype=np.uint8)
        if p.pt == 0:
            parts.append(audio._ulaw_decode(b))
        elif p.pt == 8:
            parts.append(audio._alaw_decode(b))
    return np.concatenate(parts) if parts else np.zeros(0)


def tone_packets(packets: list[RtpPacket], freq: float, tol_hz: float = 15.0) -> int:
    """How many of the packets' 20 ms frames, taken in runs of 250 ms, carry
    the tone: windows of decoded audio holding freq, times the packets per
    window."""
    x = decode(packets)
    if x.size == 0:
        return 0
    n = sum(1 for w in audio.windows(x, 8000)
            if not w.silent and abs(w.freq - freq) <= tol_hz and w.tonal >= 0.5)
    return n * 250 // 20


def sdp_audio_port(text: str) -> int | None:
    """The m=audio port in a SIP message's SDP (None if there is none)."""
    m = re.search(r"(?m)^m=audio (\d+) ", text)
    return int(m.group(1)) if m else None


def sdp_direction(text: str) -> str:
    """sendrecv / sendonly / recvonly / inactive of the SDP's audio (or session);
    sendrecv when none is written."""
    m = re.search(r"(?m)^a=(sendrecv|sendonly|recvonly|inactive)\s*$", text)
    return m.group(1) if m else "sendrecv"


def require_capture(what: str) -> None:
    """In a test that watches `what` on the wire: skip it when capturing is not
    allowed here and E2E_NO_CAPTURE=1 says so, else fail it with the reason."""
    import pytest

    ok, why = RtpTap.available()
    if not ok:
        if os.environ.get("E2E_NO_CAPTURE") == "1":
            pytest.skip(why)
        pytest.fail(f"{why} (set E2E_NO_CAPTURE=1 to skip the tests that watch {what})")
