//! Sample-rate conversion between device and codec rates (8, 16, 48 kHz, and any
//! other pair with a small rational ratio such as 44.1 ↔ 48 kHz), one stream at a
//! time, frame by frame.
//!
//! A [`Resampler`] is a polyphase FIR: a Kaiser-windowed sinc low-pass (about 60 dB
//! stop-band, pass-band to ~0.42 × the lower rate, e.g. 3.4 kHz at 8 kHz and 6.8 kHz
//! at 16 kHz) evaluated only at the output instants. It keeps its history between
//! calls, so a stream cut into 20 ms frames comes out exactly as if converted whole
//! (no clicks at frame boundaries), and it allocates only when made. A 20 ms frame
//! in gives exactly 20 ms out for rates that are whole numbers of samples per 20 ms.
//!
//! Cost: 48 multiply-adds per output sample when going up, 48 × the ratio when going
//! down (8 → 48 kHz: 47 k per 20 ms frame; 48 → 8 kHz: 46 k). Latency: 3 ms at
//! 8 kHz, 1.5 ms at 16 kHz (see [`Resampler::delay`]).

use std::fmt;

/// Taps per output sample at the lower rate (sets the transition band width).
const TAPS_PER_LOW_SAMPLE: usize = 48;
/// Kaiser window β: about 60 dB of stop-band attenuation.
const KAISER_BETA: f64 = 5.65;
/// Cut-off (the middle of the transition band) as a fraction of the lower rate.
const CUTOFF: f64 = 0.46;
/// Largest interpolation factor accepted (bounds the coefficient table).
const MAX_UP: usize = 640;

/// Why a resampler could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResampleError {
    /// A rate of 0, or a ratio too fine to convert with a small table
    /// (the reduced ratio's numerator is above 640).
    UnsupportedRates {
        /// Input rate.
        from: u32,
        /// Output rate.
        to: u32,
    },
}

impl fmt::Display for ResampleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResampleError::UnsupportedRates { from, to } => {
                write!(f, "cannot resample from {from} Hz to {to} Hz")
            }
        }
    }
}

impl std::error::Error for ResampleError {}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Modified Bessel function of the first kind, order 0 (for the Kaiser window).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let half = x / 2.0;
    for k in 1..64 {
        term *= (half / k as f64) * (half / k as f64);
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

/// Taps per block in [`dot`] (branches are padded with zeros to whole blocks).
const LANES: usize = 8;

/// `Σ a[i]·b[i]` for slices of equal length, a multiple of [`LANES`]. Eight
/// independent sums in locals: they stay in registers and overlap in the pipeline
/// even at `opt-level = "s"` (which does not vectorize or unroll), where a plain
/// `sum()` would wait on every addition in turn.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (mut s0, mut s1, mut s2, mut s3) = (0.0f32, 0.0f32, 0.0f32, 0.0f32);
    let (mut s4, mut s5, mut s6, mut s7) = (0.0f32, 0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        s0 += x[0] * y[0];
        s1 += x[1] * y[1];
        s2 += x[2] * y[2];
        s3 += x[3] * y[3];
        s4 += x[4] * y[4];
        s5 += x[5] * y[5];
        s6 += x[6] * y[6];
        s7 += x[7] * y[7];
    }
    ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
}

/// `y.round().clamp(-32768.0, 32767.0) as i16`, exactly, without calling `roundf`:
/// x86-64 without SSE4.1 has no rounding instruction, so `f32::round` is a software
/// function call per sample. Clamping first is the same (the bounds are whole), and
/// adding ±0.5 in `f64` is exact, so truncating gives round-half-away-from-zero.
#[inline]
fn round_to_i16(y: f32) -> i16 {
    let y = f64::from(y.clamp(-32768.0, 32767.0));
    (y + 0.5f64.copysign(y)) as i16
}

/// A stateful mono converter from one rate to another.
#[derive(Debug, Clone)]
pub struct Resampler {
    from: u32,
    to: u32,
    /// Interpolation factor L (output rate / gcd).
    up: usize,
    /// Decimation factor M (input rate / gcd).
    down: usize,
    /// Taps per polyphase branch.
    taps: usize,
    /// `up` branches of `taps` coefficients each, every branch stored oldest input
    /// first, so a branch is a dot product with a contiguous slice of `history`.
    coeffs: Vec<f32>,
    /// The last `taps - 1` input samples, then the input not yet consumed.
    history: Vec<f32>,
    /// Next output instant, in units of 1/`up` input samples from `history[0]`.
    position: usize,
    /// Filter centre in units of 1/`up` input samples.
    centre: usize,
}

impl Resampler {
    /// A converter from `from` Hz to `to` Hz. Equal rates give a pass-through.
    pub fn new(from: u32, to: u32) -> Result<Resampler, ResampleError> {
        let unsupported = ResampleError::UnsupportedRates { from, to };
        if from == 0 || to == 0 {
            return Err(unsupported);
        }
        let g = gcd(u64::from(from), u64::from(to));
        let up = (u64::from(to) / g) as usize;
        let down = (u64::from(from) / g) as usize;
        if up > MAX_UP {
            return Err(unsupported);
        }
        if up == 1 && down == 1 {
            return Ok(Resampler {
                from,
                to,
                up,
                down,
                taps: 1,
                coeffs: vec![1.0],
                history: Vec::new(),
                position: 0,
                centre: 0,
            });
        }
        // The filter runs (notionally) at from × up. Its length, in those units,
        // gives TAPS_PER_LOW_SAMPLE taps per sample of the lower rate.
        let low = from.min(to);
        let high_rate = f64::from(from) * up as f64;
        let span = TAPS_PER_LOW_SAMPLE as f64 * high_rate / f64::from(low);
        // An odd, symmetric filter with its centre on a multiple of both factors
        // (when that is small), so the delay is a whole number of samples at both
        // rates and a round trip 8 → 48 → 8 kHz lands on whole samples.
        let grid = if up * down <= span as usize {
            up * down
        } else {
            1
        };
        let centre = (span / 2.0 / grid as f64).ceil() as usize * grid;
        let length = 2 * centre + 1;
        // Branches padded with zeros to whole blocks of LANES (see `dot`).
        let taps = length.div_ceil(up).next_multiple_of(LANES);
        let fc = CUTOFF * f64::from(low) / high_rate; // cycles per high-rate sample
        let window_norm = bessel_i0(KAISER_BETA);
        let mut h = vec![0.0f64; taps * up];
        for (j, v) in h.iter_mut().enumerate().take(length) {
            let t = j as f64 - centre as f64;
            let sinc = if t == 0.0 {
                2.0 * fc
            } else {
                (std::f64::consts::TAU * fc * t).sin() / (std::f64::consts::PI * t)
            };
            let r = t / centre as f64;
            let window = bessel_i0(KAISER_BETA * (1.0 - r * r).max(0.0).sqrt()) / window_norm;
            *v = sinc * window;
        }
        // Unity gain at DC for every branch (zero stuffing by `up` is compensated
        // by the branch sums being 1 each).
        let mut coeffs = vec![0.0f32; taps * up];
        for phase in 0..up {
            let sum: f64 = (0..taps).map(|k| h[phase + k * up]).sum();
            let scale = if sum.abs() > 1e-12 { 1.0 / sum } else { 0.0 };
            for k in 0..taps {
                // Oldest input first: tap k multiplies x[i - k].
                coeffs[phase * taps + (taps - 1 - k)] = (h[phase + k * up] * scale) as f32;
            }
        }
        let mut r = Resampler {
            from,
            to,
            up,
            down,
            taps,
            coeffs,
            history: Vec::new(),
            position: 0,
            centre,
        };
        r.reset();
        Ok(r)
    }

    /// Input rate.
    pub fn from_rate(&self) -> u32 {
        self.from
    }

    /// Output rate.
    pub fn to_rate(&self) -> u32 {
        self.to
    }

    /// Whether this converter copies its input unchanged (equal rates).
    pub fn is_passthrough(&self) -> bool {
        self.up == 1 && self.down == 1
    }

    /// How far the output lags the input, in output samples (a whole number for
    /// 8/16/48 kHz pairs: 8 → 48 kHz 144, 48 → 8 kHz 24, 16 → 48 kHz 72,
    /// 48 → 16 kHz 24, 8 → 16 kHz 48, 16 → 8 kHz 24).
    pub fn delay(&self) -> f64 {
        self.centre as f64 / self.down as f64
    }

    /// How many samples `input_len` input samples can produce at most (the size
    /// of `output` for [`process`](Resampler::process) that never truncates).
    pub fn max_output(&self, input_len: usize) -> usize {
        (input_len * self.up).div_ceil(self.down) + 1
    }

    /// Forgets the stream (silence before the next input).
    pub(crate) fn reset(&mut self) {
        self.history.clear();
        self.history.resize(self.taps.saturating_sub(1), 0.0);
        self.position = self.history.len() * self.up;
    }

    /// Converts `input`, appending to the stream, and writes what is ready to
    /// `output`; returns the number of samples written. Output that does not fit
    /// is kept for the next call. A 20 ms frame at `from` gives a 20 ms frame at
    /// `to` (when both rates are whole samples per 20 ms).
    pub fn process(&mut self, input: &[i16], output: &mut [i16]) -> usize {
        if self.is_passthrough() {
            let n = input.len().min(output.len());
            output[..n].copy_from_slice(&input[..n]);
            return n;
        }
        self.history.extend(input.iter().map(|&s| f32::from(s)));
        let taps = self.taps;
        let mut written = 0;
        while written < output.len() {
            let newest = self.position / self.up;
            if newest >= self.history.len() {
                break;
            }
            let phase = self.position % self.up;
            let branch = &self.coeffs[phase * taps..(phase + 1) * taps];
            let window = &self.history[newest + 1 - taps..=newest];
            let y = dot(branch, window);
            output[written] = round_to_i16(y);
            written += 1;
            self.position += self.down;
        }
        // Keep the `taps - 1` samples before the next output's newest input.
        let newest = self.position / self.up;
        let drop = (newest + 1).saturating_sub(taps).min(self.history.len());
        if drop > 0 {
            self.history.drain(..drop);
            self.position -= drop * self.up;
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_signal::{snr_db, zero_crossings};

    fn sine(freq: f64, amplitude: f64, rate: u32, len: usize) -> Vec<i16> {
        (0..len)
            .map(|i| {
                (amplitude * (std::f64::consts::TAU * freq * i as f64 / f64::from(rate)).sin())
                    .round() as i16
            })
            .collect()
    }

    #[test]
    fn rounding_matches_f32_round() {
        let mut values: Vec<f32> = (-140_000..140_000).map(|i| i as f32 / 4.0).collect();
        values.extend([
            0.49999997,
            -0.49999997,
            0.5,
            -0.5,
            1.5,
            -1.5,
            32766.5,
            32767.49,
            32767.5,
            -32768.5,
            -32767.5,
            1e9,
            -1e9,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ]);
        let mut x = 0x2545_f491_u32;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            values.push(f32::from_bits(x) % 40_000.0);
        }
        for y in values {
            assert_eq!(
                round_to_i16(y),
                y.round().clamp(-32768.0, 32767.0) as i16,
                "{y}"
            );
        }
    }

    /// Runs `input` through `r` in `frame`-sample pieces.
    fn run(r: &mut Resampler, input: &[i16], frame: usize) -> Vec<i16> {
        let mut out = Vec::new();
        let mut buf = vec![0i16; r.max_output(frame)];
        for piece in input.chunks(frame) {
            let n = r.process(piece, &mut buf);
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    #[test]
    fn frame_sizes_and_delays() {
        for (from, to, delay) in [
            (8000, 48000, 144.0),
            (48000, 8000, 24.0),
            (16000, 48000, 72.0),
            (48000, 16000, 24.0),
            (8000, 16000, 48.0),
            (16000, 8000, 24.0),
            (8000, 8000, 0.0),
        ] {
            let mut r = Resampler::new(from, to).unwrap();
            assert_eq!(r.delay(), delay, "{from} -> {to}");
            let frame_in = from as usize / 50;
            let frame_out = to as usize / 50;
            let mut out = vec![0i16; frame_out];
            for _ in 0..10 {
                // Exactly one 20 ms frame out per 20 ms frame in, from the start.
                assert_eq!(r.process(&vec![100; frame_in], &mut out), frame_out);
            }
            assert_eq!(r.is_passthrough(), from == to);
        }
        // 44.1 kHz devices work too: 882 samples in, 960 out.
        let mut r = Resampler::new(44100, 48000).unwrap();
        let mut out = [0i16; 1000];
        for _ in 0..5 {
            assert_eq!(r.process(&[0; 882], &mut out), 960);
        }
        assert!(Resampler::new(0, 8000).is_err());
        assert!(Resampler::new(8000, 7919).is_err());
    }

    #[test]
    fn round_trips_keep_frequency_and_snr() {
        for (low, high) in [(8000u32, 48000u32), (16000, 48000), (8000, 16000)] {
            let input = sine(1000.0, 12000.0, low, low as usize); // 1 s
            let mut up = Resampler::new(low, high).unwrap();
            let mut down = Resampler::new(high, low).unwrap();
            let high_signal = run(&mut up, &input, low as usize / 50);
            assert_eq!(high_signal.len(), high as usize);
            // The intermediate signal is the same tone at the high rate.
            let expected = sine(1000.0, 12000.0, high, high as usize);
            let d = up.delay() as usize;
            let snr = snr_db(&expected, &high_signal, d, d + 1000..high as usize);
            assert!(snr >= 30.0, "{low} -> {high}: SNR {snr:.1} dB");
            let back = run(&mut down, &high_signal, high as usize / 50);
            assert_eq!(back.len(), low as usize);
            let total = (up.delay() * f64::from(low) / f64::from(high) + down.delay()) as usize;
            let snr = snr_db(&input, &back, total, total + 100..low as usize);
            assert!(snr >= 30.0, "{low} -> {high} -> {low}: SNR {snr:.1} dB");
            // 1 kHz: 2 zero crossings per ms.
            let zc = zero_crossings(&back[total + 100..total + 100 + low as usize / 2]);
            assert!((998..=1002).contains(&zc), "{low} -> {high} -> {low}: {zc}");
        }
    }

    #[test]
    fn frames_are_seamless() {
        // Cut into 20 ms frames, or into odd pieces, or whole: the same samples.
        let input = sine(1000.0, 12000.0, 8000, 8000);
        for (from, to) in [(8000, 48000), (48000, 8000), (16000, 48000)] {
            let input = if from == 8000 {
                input.clone()
            } else {
                sine(1000.0, 12000.0, from, from as usize)
            };
            let whole = run(&mut Resampler::new(from, to).unwrap(), &input, input.len());
            let framed = run(
                &mut Resampler::new(from, to).unwrap(),
                &input,
                from as usize / 50,
            );
            let odd = run(&mut Resampler::new(from, to).unwrap(), &input, 37);
            assert_eq!(whole, framed, "{from} -> {to}");
            assert_eq!(whole, odd, "{from} -> {to}");
            // No click: no step larger than the tone's own steepest slope.
            let max_step = (12000.0 * std::f64::consts::TAU * 1000.0 / f64::from(to)) * 1.05 + 2.0;
            let d = Resampler::new(from, to).unwrap().delay() as usize + 300;
            for w in framed[d..].windows(2) {
                let step = (i32::from(w[1]) - i32::from(w[0])).abs();
                assert!(f64::from(step) <= max_step, "{from} -> {to}: step {step}");
            }
        }
    }

    #[test]
    fn rejects_aliases_and_keeps_the_passband() {
        // 48 → 8 kHz: a 6 kHz tone (above 4 kHz) must not fold back to 2 kHz.
        let mut down = Resampler::new(48000, 8000).unwrap();
        let alias = run(&mut down, &sine(6000.0, 16000.0, 48000, 48000), 960);
        let peak = alias[200..].iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!(peak < 40, "alias peak {peak}");
        // 3.3 kHz passes at 8 kHz within 1 dB; 6.8 kHz at 16 kHz too.
        for (rate, freq) in [(8000u32, 3300.0), (16000, 6800.0)] {
            let mut down = Resampler::new(48000, rate).unwrap();
            let out = run(&mut down, &sine(freq, 16000.0, 48000, 48000), 960);
            let tail = &out[rate as usize / 10..];
            let rms = (tail.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / tail.len() as f64)
                .sqrt();
            let db = 20.0 * (rms / (16000.0 / 2f64.sqrt())).log10();
            assert!(db.abs() < 1.0, "{freq} Hz at {rate}: {db:.2} dB");
        }
    }

    #[test]
    fn small_output_buffers_lose_nothing() {
        let input = sine(700.0, 9000.0, 8000, 1600);
        let whole = run(&mut Resampler::new(8000, 48000).unwrap(), &input, 1600);
        let mut r = Resampler::new(8000, 48000).unwrap();
        let mut got = Vec::new();
        let mut buf = [0i16; 100];
        for piece in input.chunks(160) {
            let mut n = r.process(piece, &mut buf);
            got.extend_from_slice(&buf[..n]);
            while n == buf.len() {
                n = r.process(&[], &mut buf);
                got.extend_from_slice(&buf[..n]);
            }
        }
        assert_eq!(got, whole);
        // Full-scale input saturates instead of wrapping.
        let mut r = Resampler::new(8000, 48000).unwrap();
        let square: Vec<i16> = (0..1600)
            .map(|i| if i % 40 < 20 { i16::MAX } else { i16::MIN })
            .collect();
        let out = run(&mut r, &square, 160);
        assert!(out.contains(&i16::MAX));
    }
}
