"""Audio helpers for the call tests: make tone files, and measure what a
recording holds by its frequency (never just "not silent").

A recording is cut into windows (250 ms by default). For each window we take the
RMS level (dBFS) and the dominant frequency (FFT peak of a Hann-windowed frame,
refined by parabolic interpolation). A window is *silent* when its level is
below `SILENCE_DB` (-50 dBFS; G.711 idle noise and an all-zero file sit far
below, a -6 dBFS test tone far above).

The call portion of a recording: setup silence is cut, and only that. Peers
differ in what they write before media flows (baresip's sndfile writes nothing
until the first RTP packet is decoded; a phone that writes its output at a
steady tick writes silence while the call is ringing), and after it stops. So
`tone_coverage` takes the span from the first non-silent window to the last
non-silent window (leading and trailing silence dropped), and counts EVERY
window in that span: a dropout or a wrong tone in the middle of the call counts
against the coverage. Pass `trim=False` to count the whole file.

Files: RIFF/WAVE, PCM 16-bit (8/24/32-bit PCM and 32-bit float are read too),
mono or several channels (averaged).
"""

from __future__ import annotations

import math
import struct
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SILENCE_DB = -50.0


# ---------------------------------------------------------------- files

def make_tone_wav(path, freq: float, seconds: float, rate: int = 8000,
                  amplitude: float = 0.5, channels: int = 1) -> Path:
    """A 16-bit PCM WAV of a sine at freq Hz (amplitude 0.5 = -6 dBFS peak), the
    same in every channel. freq 0 writes silence."""
    path = Path(path)
    n = int(round(seconds * rate))
    t = np.arange(n, dtype=np.float64) / rate
    x = amplitude * np.sin(2 * math.pi * freq * t) if freq else np.zeros(n)
    write_wav(path, x, rate, channels)
    return path


def make_noise_wav(path, seconds: float, rate: int = 8000, amplitude: float = 0.3,
                   seed: int = 1) -> Path:
    """White noise (uniform), for negative tests."""
    rng = np.random.default_rng(seed)
    write_wav(path, rng.uniform(-amplitude, amplitude, int(seconds * rate)), rate)
    return Path(path)


def write_wav(path, samples, rate: int = 8000, channels: int = 1) -> None:
    """Writes float samples in [-1, 1] as 16-bit PCM: mono, or the same samples
    in each of `channels` (baresip's Opus wants a 48 kHz stereo source)."""
    pcm = np.clip(np.asarray(samples, dtype=np.float64), -1.0, 1.0)
    if channels > 1:
        pcm = np.repeat(pcm, channels)
    data = (pcm * 32767.0).round().astype("<i2").tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data)


def write_ulaw_raw(path, samples) -> Path:
    """Raw G.711 mu-law bytes (no header) from float samples: what SIPp's
    `rtp_stream` plays."""
    x = np.clip(np.asarray(samples, dtype=np.float64), -1.0, 1.0)
    pcm = (x * 32767.0).round().astype(np.int32)
    bias, clip = 0x84, 32635
    sign = np.where(pcm < 0, 0x80, 0)
    mag = np.minimum(np.abs(pcm), clip) + bias
    exponent = np.zeros_like(mag)
    for e in range(7, 0, -1):
        exponent = np.where((exponent == 0) & (mag >= (1 << (e + 7))), e, exponent)
    mantissa = (mag >> (exponent + 3)) & 0x0F
    ulaw = (~(sign | (exponent << 4) | mantissa)) & 0xFF
    Path(path).write_bytes(ulaw.astype(np.uint8).tobytes())
    return Path(path)


def _ulaw_decode(b: np.ndarray) -> np.ndarray:
    u = (~b.astype(np.int32)) & 0xFF
    exponent, mantissa = (u >> 4) & 0x07, u & 0x0F
    mag = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(u & 0x80, -mag, mag).astype(np.float64) / 32768.0


def _alaw_decode(b: np.ndarray) -> np.ndarray:
    a = b.astype(np.int32) ^ 0x55
    exponent, mantissa = (a >> 4) & 0x07, a & 0x0F
    mag = np.where(exponent == 0, (mantissa << 4) + 8,
                   ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(a & 0x80, mag, -mag).astype(np.float64) / 32768.0


def read_ulaw_raw(path) -> np.ndarray:
    """Float samples from raw G.711 mu-law bytes (the inverse of write_ulaw_raw)."""
    return _ulaw_decode(np.frombuffer(Path(path).read_bytes(), dtype=np.uint8))


def make_tone_ulaw(path, freq: float, seconds: float, amplitude: float = 0.5) -> Path:
    """Raw 8 kHz mu-law tone for SIPp's rtp_stream."""
    n = int(round(seconds * 8000))
    t = np.arange(n, dtype=np.float64) / 8000
    return write_ulaw_raw(path, amplitude * np.sin(2 * math.pi * freq * t))


def read_wav(path) -> tuple[np.ndarray, int]:
    """(samples as float64 in [-1, 1], mono; sample rate). Reads the RIFF chunks
    itself so a file whose header sizes were never fixed up (a recorder killed
    mid-call) is still read up to its last whole frame."""
    raw = Path(path).read_bytes()
    if len(raw) < 12 or raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        raise ValueError(f"{path}: not a RIFF/WAVE file")
    pos, fmt, data = 12, None, None
    while pos + 8 <= len(raw):
        cid, size = raw[pos:pos + 4], struct.unpack("<I", raw[pos + 4:pos + 8])[0]
        body = raw[pos + 8:pos + 8 + size]
        if cid == b"fmt ":
            fmt = struct.unpack("<HHIIHH", body[:16])
        elif cid == b"data":
            # size may be 0 or 0xFFFFFFFF in a file never finalised: take the rest.
            data = raw[pos + 8:] if size in (0, 0xFFFFFFFF) or pos + 8 + size > len(raw) else body
            break
        pos += 8 + size + (size & 1)
    if fmt is None or data is None:
        raise ValueError(f"{path}: no fmt or data chunk")
    tag, channels, rate, _, align, bits = fmt
    if tag == 0xFFFE:  # WAVE_FORMAT_EXTENSIBLE: the sub-format decides
        tag = 3 if bits == 32 and b"\x03\x00\x00\x00\x00\x00\x10\x00" in raw[:200] else 1
    usable = len(data) - len(data) % align
    data = data[:usable]
    if tag == 3 and bits == 32:
        x = np.frombuffer(data, dtype="<f4").astype(np.float64)
    elif tag == 1 and bits == 16:
        x = np.frombuffer(data, dtype="<i2").astype(np.float64) / 32768.0
    elif tag == 7 and bits == 8:  # G.711 mu-law
        x = _ulaw_decode(np.frombuffer(data, dtype=np.uint8))
    elif tag == 6 and bits == 8:  # G.711 A-law
        x = _alaw_decode(np.frombuffer(data, dtype=np.uint8))
    elif tag == 1 and bits == 8:
        x = (np.frombuffer(data, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
    elif tag == 1 and bits == 24:
        b = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = np.where(v >= 1 << 23, v - (1 << 24), v).astype(np.float64) / float(1 << 23)
    elif tag == 1 and bits == 32:
        x = np.frombuffer(data, dtype="<i4").astype(np.float64) / float(1 << 31)
    else:
        raise ValueError(f"{path}: unsupported WAV format tag {tag}, {bits} bits")
    if channels > 1:
        x = x.reshape(-1, channels).mean(axis=1)
    return x, rate


def _samples(src, rate: int | None) -> tuple[np.ndarray, int]:
    if isinstance(src, (str, Path)):
        return read_wav(src)
    if rate is None:
        raise ValueError("rate is required with raw samples")
    return np.asarray(src, dtype=np.float64), rate


# ---------------------------------------------------------------- measures

def level_db(samples) -> float:
    """RMS level in dBFS (-inf for digital silence, floored at -200)."""
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        return -200.0
    rms = math.sqrt(float(np.mean(x * x)))
    return 20 * math.log10(rms) if rms > 1e-10 else -200.0


def dominant_frequency(samples, rate: int) -> float:
    """The frequency (Hz) of the strongest spectral peak above 50 Hz (DC and hum
    ignored); 0.0 for an empty or all-zero frame."""
    x = np.asarray(samples, dtype=np.float64)
    if x.size < 8 or not np.any(x):
        return 0.0
    x = x - x.mean()
    n = x.size
    nfft = 1 << max(12, (n - 1).bit_length())  # zero-pad: finer bins
    spec = np.abs(np.fft.rfft(x * np.hanning(n), nfft))
    lo = int(math.ceil(50.0 * nfft / rate))
    if lo >= spec.size - 1:
        return 0.0
    k = lo + int(np.argmax(spec[lo:]))
    # Parabolic interpolation on the log magnitude around the peak.
    if 0 < k < spec.size - 1 and spec[k - 1] > 0 and spec[k + 1] > 0 and spec[k] > 0:
        a, b, c = math.log(spec[k - 1]), math.log(spec[k]), math.log(spec[k + 1])
        d = a - 2 * b + c
        shift = 0.5 * (a - c) / d if d != 0 else 0.0
    else:
        shift = 0.0
    return (k + shift) * rate / nfft


def tonality(samples, rate: int, freq: float, tol_hz: float = 15.0) -> float:
    """Share of the frame's energy within tol_hz (+ window leakage) of freq: a
    pure tone gives ~1, white noise a few %."""
    x = np.asarray(samples, dtype=np.float64)
    if x.size < 8 or not np.any(x):
        return 0.0
    x = x - x.mean()
    nfft = 1 << max(12, (x.size - 1).bit_length())
    p = np.abs(np.fft.rfft(x * np.hanning(x.size), nfft)) ** 2
    f = np.arange(p.size) * rate / nfft
    width = tol_hz + 2.0 * rate / x.size  # Hann main lobe half-width is 2 bins
    total = float(p.sum())
    return float(p[np.abs(f - freq) <= width].sum()) / total if total > 0 else 0.0


@dataclass
class Window:
    start: float   # seconds from the start of the file
    level: float   # dBFS
    freq: float    # dominant frequency, Hz (0 when silent)
    tonal: float   # energy share at that dominant frequency (0..1)

    @property
    def silent(self) -> bool:
        return self.level < SILENCE_DB


def windows(src, rate: int | None = None, window_ms: int = 250) -> list[Window]:
    """The file (or samples) cut into whole windows, each measured."""
    x, rate = _samples(src, rate)
    n = max(1, int(rate * window_ms / 1000))
    out = []
    for i in range(len(x) // n):
        w = x[i * n:(i + 1) * n]
        lv = level_db(w)
        if lv < SILENCE_DB:
            out.append(Window(i * n / rate, lv, 0.0, 0.0))
            continue
        f = dominant_frequency(w, rate)
        out.append(Window(i * n / rate, lv, f, tonality(w, rate, f, 10.0)))
    return out


def call_span(ws: list[Window]) -> list[Window]:
    """Leading and trailing silent windows removed (see the module docstring)."""
    idx = [i for i, w in enumerate(ws) if not w.silent]
    if not idx:
        return []
    return ws[idx[0]:idx[-1] + 1]


def _is_tone(w: Window, freq: float, tol_hz: float, min_tonal: float) -> bool:
    return (not w.silent) and abs(w.freq - freq) <= tol_hz and w.tonal >= min_tonal


def tone_coverage(src, freq: float, tol_hz: float = 15.0, window_ms: int = 250,
                  rate: int | None = None, trim: bool = True,
                  min_tonal: float = 0.5) -> float:
    """Fraction of the call's windows whose dominant frequency is within tol_hz of
    freq (and which are a tone: at least min_tonal of the energy at that peak, so
    noise that happens to peak near freq does not pass). The call portion is
    the span between the first and the last non-silent window (trim=True);
    every window in it counts. 0.0 when there is nothing to measure."""
    ws = windows(src, rate, window_ms)
    span = call_span(ws) if trim else ws
    if not span:
        return 0.0
    return sum(1 for w in span if _is_tone(w, freq, tol_hz, min_tonal)) / len(span)


def tone_seconds(src, freq: float, tol_hz: float = 15.0, window_ms: int = 250,
                 rate: int | None = None, min_tonal: float = 0.5) -> float:
    """Seconds of the file that hold the tone (windows counted x window length)."""
    ws = windows(src, rate, window_ms)
    return sum(1 for w in ws if _is_tone(w, freq, tol_hz, min_tonal)) * window_ms / 1000.0


def silence_fraction(src, window_ms: int = 250, rate: int | None = None,
                     trim: bool = False, threshold_db: float = SILENCE_DB) -> float:
    """Fraction of windows below threshold_db (the whole file by default; the
    call span with trim=True). An empty file counts as all silent (1.0)."""
    ws = windows(src, rate, window_ms)
    if trim:
        ws = call_span(ws)
    if not ws:
        return 1.0
    return sum(1 for w in ws if w.level < threshold_db) / len(ws)


def duration(src, rate: int | None = None) -> float:
    x, rate = _samples(src, rate)
    return len(x) / rate


def describe(src, freq: float | None = None, window_ms: int = 250,
             rate: int | None = None, limit: int = 400) -> str:
    """A one-line-per-window listing for failure messages."""
    try:
        ws = windows(src, rate, window_ms)
    except (OSError, ValueError) as e:
        return f"<cannot read {src}: {e}>"
    head = f"{src}: {len(ws)} windows of {window_ms} ms"
    if freq is not None:
        head += f", coverage of {freq:g} Hz {tone_coverage(src, freq, rate=rate):.1%}"
    lines = [head]
    for w in ws[:limit]:
        lines.append(f"  {w.start:7.2f}s {w.level:7.1f} dB "
                     f"{'silent' if w.silent else f'{w.freq:7.1f} Hz tonal {w.tonal:.2f}'}")
    if len(ws) > limit:
        lines.append(f"  ... {len(ws) - limit} more")
    return "\n".join(lines)


# ---------------------------------------------------------------- speech, PESQ

SENTENCES = ("The birch canoe slid on the smooth planks. Glue the sheet to the dark "
             "blue background. It is easy to tell the depth of a well. These days a "
             "chicken leg is a rare dish. Rice is often served in round bowls.")


def resample(x: np.ndarray, rate: int, to: int, workdir) -> np.ndarray:
    """x (float, mono) from rate to `to` Hz through sox (its default very high
    quality filter)."""
    if rate == to:
        return np.asarray(x, dtype=np.float64)
    workdir = Path(workdir)
    src, dst = workdir / f"resample-in-{rate}.wav", workdir / f"resample-out-{to}.wav"
    write_wav(src, x, rate)
    subprocess.run(["sox", str(src), "-r", str(to), str(dst)], check=True,
                   capture_output=True, timeout=60)
    return read_wav(dst)[0]


# espeak-ng's voice for PESQ material. Its default male voice scores oddly low
# with PESQ whatever the path (wideband: G.722 3.1, Opus 3.3, even 1.6 with only
# white noise 45 dB below its peak added; narrowband G.711 4.0), as if its buzz
# source were out of what P.862 models; the `f3` variant scores like natural
# speech does (G.722 4.1, Opus 4.1, G.711 4.3 coded offline).
SPEECH_VOICE = "en+f3"


def make_speech(workdir, text: str = SENTENCES,
                voice: str = SPEECH_VOICE) -> tuple[np.ndarray, int]:
    """Speech by espeak-ng (about 11 s of the Harvard sentences above), as float
    samples at 16 kHz mono, normalised to -3 dBFS peak: (samples, 16000)."""
    workdir = Path(workdir)
    raw = workdir / "speech-espeak.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), text], check=True,
                   capture_output=True, timeout=60)
    x, rate = read_wav(raw)
    x = resample(x, rate, 16000, workdir)
    x = x / max(1e-9, float(np.max(np.abs(x)))) * 0.7
    return x, 16000


def align(ref: np.ndarray, deg: np.ndarray) -> np.ndarray:
    """The part of deg that lines up with ref (same rate): the offset of the
    largest cross-correlation (FFT), cut to ref's length (zeros past deg's end)."""
    n = len(ref) + len(deg)
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(deg, size) * np.conj(np.fft.rfft(ref, size)), size)
    lag = int(np.argmax(corr[:len(deg)]))
    out = np.zeros(len(ref))
    piece = deg[lag:lag + len(ref)]
    out[:len(piece)] = piece
    return out


def pesq_score(ref: np.ndarray, rate: int, deg_path, workdir, mode: str) -> float:
    """PESQ (ITU-T P.862, PyPI `pesq`) of the recording deg_path against ref:
    the recording mixed to mono, resampled to rate, aligned to ref (so the
    silence around it and the start of the call do not count). mode 'nb' (8 kHz)
    or 'wb' (16 kHz)."""
    from pesq import pesq  # local import: only the PESQ tests need it
    deg, deg_rate = read_wav(deg_path)
    deg = resample(deg, deg_rate, rate, workdir)
    return float(pesq(rate, ref, align(ref, deg), mode))
