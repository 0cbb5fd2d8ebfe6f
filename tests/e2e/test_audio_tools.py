"""The audio measures the call tests rely on, on synthetic signals: a tone is
recognised by its frequency (and only that tone), noise and silence are not
tones, and the call span is cut as documented in audio.py."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

import audio

RATE = 8000


def tone(freq, seconds, rate=RATE, amp=0.5):
    t = np.arange(int(seconds * rate)) / rate
    return amp * np.sin(2 * math.pi * freq * t)


@pytest.mark.parametrize("freq", [300.0, 440.0, 1000.0, 2500.0, 3400.0])
def test_dominant_frequency_of_a_tone(freq):
    x = tone(freq, 0.25)
    assert abs(audio.dominant_frequency(x, RATE) - freq) < 2.0


def test_dominant_frequency_ignores_dc_and_hum():
    x = tone(440, 0.25) + 0.3 + tone(50, 0.25, amp=0.05)
    assert abs(audio.dominant_frequency(x, RATE) - 440) < 2.0
    assert audio.dominant_frequency(np.zeros(2000), RATE) == 0.0
    assert audio.dominant_frequency([], RATE) == 0.0


def test_tone_file_round_trip(tmp_path):
    p = audio.make_tone_wav(tmp_path / "t.wav", 440, 3)
    x, rate = audio.read_wav(p)
    assert rate == 8000 and len(x) == 24000
    assert abs(np.max(np.abs(x)) - 0.5) < 0.01
    assert audio.tone_coverage(p, 440) == 1.0
    assert audio.tone_seconds(p, 440) == pytest.approx(3.0)
    assert audio.silence_fraction(p) == 0.0


def test_440_passes_and_1000_fails_for_440(tmp_path):
    p440 = audio.make_tone_wav(tmp_path / "a.wav", 440, 2)
    p1000 = audio.make_tone_wav(tmp_path / "b.wav", 1000, 2)
    assert audio.tone_coverage(p440, 440) == 1.0
    assert audio.tone_coverage(p1000, 440) == 0.0
    assert audio.tone_coverage(p1000, 1000) == 1.0
    # 20 Hz off is outside the default 15 Hz tolerance; 10 Hz off is inside.
    assert audio.tone_coverage(audio.make_tone_wav(tmp_path / "c.wav", 460, 2), 440) == 0.0
    assert audio.tone_coverage(audio.make_tone_wav(tmp_path / "d.wav", 450, 2), 440) == 1.0


def test_noise_is_not_a_tone(tmp_path):
    p = audio.make_noise_wav(tmp_path / "n.wav", 3)
    assert audio.tone_coverage(p, 440) == 0.0
    assert audio.silence_fraction(p) == 0.0
    # Even for the frequency where the noise happens to peak in some window.
    for w in audio.windows(p):
        assert audio.tone_coverage(p, w.freq) < 0.2
        break


def test_quiet_tone_still_counts_and_silence_does_not(tmp_path):
    quiet = tone(440, 1, amp=0.01)  # -43 dBFS peak: above the -50 dBFS floor
    assert audio.tone_coverage(quiet, 440, rate=RATE) == 1.0
    assert audio.tone_coverage(np.zeros(8000), 440, rate=RATE) == 0.0
    assert audio.silence_fraction(np.zeros(8000), rate=RATE) == 1.0
    assert audio.silence_fraction(np.zeros(0), rate=RATE) == 1.0


def test_leading_and_trailing_silence_are_cut_but_gaps_count(tmp_path):
    # 1 s setup silence, 2 s tone, 0.5 s dropout, 2 s tone, 1 s silence.
    x = np.concatenate([np.zeros(8000), tone(440, 2), np.zeros(4000), tone(440, 2),
                        np.zeros(8000)])
    cov = audio.tone_coverage(x, 440, rate=RATE)
    # span 4.5 s = 18 windows, 2 of them silent
    assert cov == pytest.approx(16 / 18)
    assert audio.tone_coverage(x, 440, rate=RATE, trim=False) == pytest.approx(16 / 26)
    assert audio.tone_seconds(x, 440, rate=RATE) == pytest.approx(4.0)
    assert audio.silence_fraction(x, rate=RATE) == pytest.approx(10 / 26)
    assert audio.silence_fraction(x, rate=RATE, trim=True) == pytest.approx(2 / 18)


def test_wrong_tone_in_the_middle_counts_against(tmp_path):
    x = np.concatenate([tone(440, 2), tone(1000, 1), tone(440, 2)])
    assert audio.tone_coverage(x, 440, rate=RATE) == pytest.approx(16 / 20)


def test_tone_under_noise(tmp_path):
    rng = np.random.default_rng(7)
    x = tone(440, 2) + rng.normal(0, 0.05, 16000)  # ~17 dB SNR
    assert audio.tone_coverage(x, 440, rate=RATE) == 1.0


def test_g711_codecs_keep_the_tone(tmp_path):
    raw = audio.make_tone_ulaw(tmp_path / "t.ulaw", 1000, 1)
    assert raw.stat().st_size == 8000
    y = audio.read_ulaw_raw(raw)
    assert np.max(np.abs(y - tone(1000, 1))) < 0.02
    assert audio.tone_coverage(y, 1000, rate=RATE) == 1.0
    # A-law decoding (used on captured PCMA payloads): a full-scale code pair.
    a = audio._alaw_decode(np.array([0xD5, 0x55, 0xAA, 0x2A], dtype=np.uint8))
    assert a[0] > 0 and a[1] < 0 and a[2] > 0.9 and a[3] < -0.9


def write_raw_wav(path, data: bytes, rate=8000, bits=16, channels=1, tag=1,
                  data_size=None):
    align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * align, align, bits)
    size = len(data) if data_size is None else data_size
    path.write_bytes(b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt " +
                     struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", size) + data)


def test_read_wav_formats(tmp_path):
    x = tone(440, 0.5)
    pcm16 = (x * 32767).astype("<i2")
    # stereo 16-bit
    st = np.stack([pcm16, pcm16], axis=1).tobytes()
    write_raw_wav(tmp_path / "s.wav", st, channels=2)
    y, r = audio.read_wav(tmp_path / "s.wav")
    assert r == 8000 and len(y) == 4000 and audio.tone_coverage(y, 440, rate=r) == 1.0
    # float 32
    write_raw_wav(tmp_path / "f.wav", x.astype("<f4").tobytes(), bits=32, tag=3)
    assert audio.tone_coverage(tmp_path / "f.wav", 440) == 1.0
    # 16 kHz (a wideband recording)
    write_raw_wav(tmp_path / "w.wav", (tone(440, 0.5, rate=16000) * 32767).astype("<i2")
                  .tobytes(), rate=16000)
    assert audio.tone_coverage(tmp_path / "w.wav", 440) == 1.0
    # a recorder killed mid-call: data size never written (0), odd trailing byte
    write_raw_wav(tmp_path / "k.wav", pcm16.tobytes() + b"\x01", data_size=0)
    y, _ = audio.read_wav(tmp_path / "k.wav")
    assert len(y) == 4000
    with pytest.raises(ValueError):
        (tmp_path / "bad.wav").write_bytes(b"not a wav at all")
        audio.read_wav(tmp_path / "bad.wav")
