#!/usr/bin/env python3
"""A loss/jitter relay for RTP on loopback, with just enough SIP to sit in a call.

The kernel here has no netem, so impairment is done in user space: the relay
stands between a caller and one callee, both on 127.0.0.1.

SIP (UDP): every message from the callee's SIP port goes to the caller (the last
address a message came from that is not the callee); every other message goes to
the callee. SDP bodies are rewritten so that each side sends its RTP to the relay:
the `m=audio` port of the caller's SDP becomes the relay's callee-facing port and
vice versa; `a=rtcp:` lines and `a=rtcp-mux` are dropped (RTCP is not relayed).
Responses come back through the relay because both phones answer to the source
address (rport). In-dialog requests may go straight to the Contact; that carries
no SDP in the benchmarks that use this (BYE).

RTP: each packet is dropped with probability `loss`, otherwise released after
`base + uniform(-jitter, +jitter)` ms (so packets reorder), in both directions.
A packet's fate is not drawn from a shared random stream (two threads would
interleave it differently every run) but computed from a hash of (seed,
direction, the packet's place in its stream: its RTP sequence number counted
from the first one the relay saw in that direction). So two runs with the same
seed drop and delay the same packet numbers of the same direction, whatever the
timing of the other direction.
"""

from __future__ import annotations

import hashlib
import heapq
import re
import socket
import struct
import threading
import time

LOOPBACK = "127.0.0.1"


def _udp(port: int = 0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((LOOPBACK, port))
    return s


class LossRelay:
    def __init__(self, callee_sip_port: int, loss: float = 0.05, jitter_ms: float = 30.0,
                 base_ms: float = 40.0, seed: int = 1):
        self.callee = (LOOPBACK, callee_sip_port)
        self.loss, self.jitter, self.base = loss, jitter_ms / 1000, base_ms / 1000
        self.seed = seed
        # Per direction ("to_callee", "to_caller"): the first RTP sequence number
        # seen, so a packet is known by its place in the stream. Each is written
        # only by its direction's thread.
        self._first_seq: dict[str, int] = {}
        self.sip = _udp()
        self.sip_port = self.sip.getsockname()[1]
        # `to_callee` receives the caller's RTP (its port goes into the callee's
        # SDP) and forwards it to the callee; `to_caller` the other way round.
        self.to_callee = _udp()
        self.to_caller = _udp()
        self.caller: tuple[str, int] | None = None
        self.caller_media: tuple[str, int] | None = None
        self.callee_media: tuple[str, int] | None = None
        self.sent = self.dropped = 0
        # The packet numbers dropped, per direction (to compare two runs).
        self.lost: dict[str, list[int]] = {"to_callee": [], "to_caller": []}
        self._queue: list[tuple[float, int, socket.socket, bytes, tuple[str, int]]] = []
        self._n = 0
        self._cond = threading.Condition()
        self._stop = False
        self._threads = [threading.Thread(target=f, daemon=True) for f in
                         (self._sip_loop, self._rtp_loop_caller, self._rtp_loop_callee,
                          self._release_loop)]

    def start(self) -> "LossRelay":
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop = True
        with self._cond:
            self._cond.notify_all()
        for s in (self.sip, self.to_callee, self.to_caller):
            try:
                s.close()
            except OSError:
                pass

    # -- SIP ---------------------------------------------------------------
    def _rewrite(self, msg: bytes, from_callee: bool) -> bytes:
        head, sep, body = msg.partition(b"\r\n\r\n")
        if not sep or b"m=audio" not in body:
            return msg
        text = body.decode("utf-8", "replace")
        m = re.search(r"^m=audio (\d+)", text, re.M)
        if not m:
            return msg
        port = int(m.group(1))
        # Each side is told to send to the socket that forwards to the other side,
        # and hears the other side from that same socket (symmetric RTP).
        if from_callee:
            self.callee_media = (LOOPBACK, port)
            relay_port = self.to_callee.getsockname()[1]
        else:
            self.caller_media = (LOOPBACK, port)
            relay_port = self.to_caller.getsockname()[1]
        text = re.sub(r"^m=audio \d+", f"m=audio {relay_port}", text, count=1, flags=re.M)
        text = re.sub(r"^a=rtcp(-mux)?(:.*)?\r?\n", "", text, flags=re.M)
        new = text.encode()
        head = re.sub(rb"(?im)^(content-length|l)\s*:\s*\d+", b"Content-Length: %d" % len(new),
                      head)
        return head + sep + new

    def _sip_loop(self) -> None:
        while not self._stop:
            try:
                data, src = self.sip.recvfrom(65535)
            except OSError:
                return
            from_callee = src == self.callee
            if not from_callee:
                self.caller = src
            dest = self.caller if from_callee else self.callee
            if dest is None:
                continue
            try:
                self.sip.sendto(self._rewrite(data, from_callee), dest)
            except OSError:
                pass

    # -- RTP ---------------------------------------------------------------
    def fate(self, direction: str, index: int) -> tuple[bool, float]:
        """(dropped, delay in seconds) of packet number `index` (0 = the first the
        relay saw) going `direction`: a pure function of (seed, direction, index)."""
        digest = hashlib.blake2b(f"{self.seed}:{direction}:{index}".encode(),
                                 digest_size=16).digest()
        a, b = struct.unpack("!QQ", digest)
        u_loss, u_delay = a / 2.0**64, b / 2.0**64
        if u_loss < self.loss:
            return True, 0.0
        return False, max(0.0, self.base + (2 * u_delay - 1) * self.jitter)

    def _index(self, direction: str, data: bytes) -> int:
        """The packet's place in its direction's stream, from its RTP sequence
        number (mod 2^16 from the first one seen; wraps after 65,536 packets,
        about 22 minutes at 20 ms)."""
        if len(data) < 4:
            return 0
        seq = struct.unpack("!H", data[2:4])[0]
        first = self._first_seq.setdefault(direction, seq)
        return (seq - first) & 0xFFFF

    def _impair(self, direction: str, out: socket.socket, data: bytes,
                dest: tuple[str, int] | None) -> None:
        if dest is None:
            return
        index = self._index(direction, data)
        dropped, delay = self.fate(direction, index)
        with self._cond:
            if dropped:
                self.dropped += 1
                self.lost[direction].append(index)
                return
            self._n += 1
            heapq.heappush(self._queue, (time.monotonic() + delay, self._n, out, data, dest))
            self._cond.notify_all()

    def _rtp_loop_caller(self) -> None:
        # caller -> relay (to_callee socket) -> callee
        while not self._stop:
            try:
                data, _ = self.to_callee.recvfrom(65535)
            except OSError:
                return
            self._impair("to_callee", self.to_caller, data, self.callee_media)

    def _rtp_loop_callee(self) -> None:
        # callee -> relay (to_caller socket) -> caller
        while not self._stop:
            try:
                data, _ = self.to_caller.recvfrom(65535)
            except OSError:
                return
            self._impair("to_caller", self.to_callee, data, self.caller_media)

    def _release_loop(self) -> None:
        with self._cond:
            while not self._stop:
                now = time.monotonic()
                while self._queue and self._queue[0][0] <= now:
                    _, _, out, data, dest = heapq.heappop(self._queue)
                    try:
                        out.sendto(data, dest)
                        self.sent += 1
                    except OSError:
                        pass
                wait = (self._queue[0][0] - now) if self._queue else 0.1
                self._cond.wait(max(0.0005, wait))
