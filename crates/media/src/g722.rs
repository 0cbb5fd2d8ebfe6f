//! ITU-T G.722 sub-band ADPCM at 64 kbit/s: 16 kHz 16-bit PCM to one byte per two
//! samples and back.
//!
//! Written from the ITU algorithm description (the block numbers in the comments are
//! the Recommendation's): a 24-tap QMF splits the signal into a 0–4 kHz and a 4–8 kHz
//! band, each sampled at 8 kHz; the lower band is coded with 6-bit ADPCM (of which the
//! 4 most significant bits drive the predictor, so 56 and 48 kbit/s decoders stay in
//! step), the higher band with 2-bit ADPCM. A code byte is `ihigh << 6 | ilow`.
//!
//! Arithmetic is the Recommendation's 16-bit fixed point, so the output is bit-exact
//! with other conforming implementations (the tests compare with values produced by
//! spandsp's G.722, which passes the ITU test vectors). Input and output are 16-bit
//! PCM at unity gain (the QMF halves the level in each band, the receive QMF doubles
//! it back). The QMF pair delays the signal by 22 samples (1.375 ms).
//!
//! Only the 64 kbit/s mode (mode 1) is implemented: it is the one SIP uses
//! (`G722/8000`, RTP payload type 9).

/// Transmit and receive QMF coefficients (Table 11/G.722, as integers).
const QMF_COEFFS: [i32; 12] = [3, -11, 12, 32, -210, 951, 3876, -805, 362, -156, 53, -11];

/// Lower band quantizer decision levels (Table 14, ×8 of the 6-bit quantizer `Q6`).
const Q6: [i32; 32] = [
    0, 35, 72, 110, 150, 190, 233, 276, 323, 370, 422, 473, 530, 587, 650, 714, 786, 858, 940,
    1023, 1121, 1219, 1339, 1458, 1612, 1765, 1980, 2195, 2557, 2919, 0, 0,
];
/// 6-bit codes for a negative difference, by quantizer interval.
const ILN: [i32; 32] = [
    0, 63, 62, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11,
    10, 9, 8, 7, 6, 5, 4, 0,
];
/// 6-bit codes for a positive difference, by quantizer interval.
const ILP: [i32; 32] = [
    0, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46, 45, 44, 43, 42, 41, 40, 39,
    38, 37, 36, 35, 34, 33, 32, 0,
];
/// Lower band log scale factor multipliers (Table 16, `WL`).
const WL: [i32; 8] = [-60, -30, 58, 172, 334, 538, 1198, 3042];
/// 4-bit code to `WL` index (`RIL` → `IL4` mapping).
const RL42: [i32; 16] = [0, 7, 6, 5, 4, 3, 2, 1, 7, 6, 5, 4, 3, 2, 1, 0];
/// Inverse log base-2 table (Table 17, `ILB`).
const ILB: [i32; 32] = [
    2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383, 2435, 2489, 2543, 2599, 2656, 2714, 2774, 2834,
    2896, 2960, 3025, 3091, 3158, 3228, 3298, 3371, 3444, 3520, 3597, 3676, 3756, 3838, 3922, 4008,
];
/// 4-bit inverse quantizer outputs (Table 15, `QM4`).
const QM4: [i32; 16] = [
    0, -20456, -12896, -8968, -6288, -4240, -2584, -1200, 20456, 12896, 8968, 6288, 4240, 2584,
    1200, 0,
];
/// 6-bit inverse quantizer outputs (Table 15, `QM6`): the decoder's 64 kbit/s output.
const QM6: [i32; 64] = [
    -136, -136, -136, -136, -24808, -21904, -19008, -16704, -14984, -13512, -12280, -11192, -10232,
    -9360, -8576, -7856, -7192, -6576, -6000, -5456, -4944, -4464, -4008, -3576, -3168, -2776,
    -2400, -2032, -1688, -1360, -1040, -728, 24808, 21904, 19008, 16704, 14984, 13512, 12280,
    11192, 10232, 9360, 8576, 7856, 7192, 6576, 6000, 5456, 4944, 4464, 4008, 3576, 3168, 2776,
    2400, 2032, 1688, 1360, 1040, 728, 432, 136, -432, -136,
];
/// 2-bit inverse quantizer outputs (Table 13, `QM2`).
const QM2: [i32; 4] = [-7408, -1616, 7408, 1616];
/// Higher band codes for a negative / positive difference (`IHN`, `IHP`).
const IHN: [i32; 3] = [0, 1, 0];
const IHP: [i32; 3] = [0, 3, 2];
/// Higher band log scale factor multipliers (`WH`) and the code → index map.
const WH: [i32; 3] = [0, -214, 798];
const RH2: [i32; 4] = [2, 1, 2, 1];

/// Clamps to the 16-bit range, as the Recommendation's saturating operations do.
#[inline]
fn sat(x: i32) -> i32 {
    x.clamp(-32768, 32767)
}

/// The adaptive predictor and scale factor of one sub-band (identical in the
/// encoder and the decoder, which is what keeps them in step).
#[derive(Debug, Clone, Copy)]
struct Band {
    /// Predicted signal (`S`).
    s: i32,
    /// Zero-section output (`SZ`).
    sz: i32,
    /// Reconstructed signal, current and previous (`R`).
    r: [i32; 2],
    /// Pole coefficients `A1`, `A2`.
    a: [i32; 2],
    /// Partial reconstructed signal, previous two (`P`).
    p: [i32; 2],
    /// Quantized difference signal, current and previous six (`D`).
    d: [i32; 7],
    /// Zero coefficients `B1`..`B6`.
    b: [i32; 6],
    /// Log scale factor (`NB`).
    nb: i32,
    /// Scale factor (`DET`).
    det: i32,
}

impl Band {
    const fn new(det: i32) -> Band {
        Band {
            s: 0,
            sz: 0,
            r: [0; 2],
            a: [0; 2],
            p: [0; 2],
            d: [0; 7],
            b: [0; 6],
            nb: 0,
            det,
        }
    }

    /// Blocks 3L/3H (LOGSCL/SCALEL, LOGSCH/SCALEH): adapts the scale factor.
    /// `w` is the log multiplier of the code, `limit` the top of `NB`, `shift` 8 for
    /// the lower band and 10 for the higher.
    #[inline]
    fn adapt_scale(&mut self, w: i32, limit: i32, shift: i32) {
        self.nb = (((self.nb * 127) >> 7) + w).clamp(0, limit);
        let wd1 = (self.nb >> 6) & 31;
        let wd2 = shift - (self.nb >> 11);
        let wd3 = if wd2 < 0 {
            ILB[wd1 as usize] << -wd2
        } else {
            ILB[wd1 as usize] >> wd2
        };
        self.det = wd3 << 2;
    }

    /// Block 4: reconstruction, pole/zero predictor adaptation and the next
    /// prediction, from the quantized difference `dx`.
    fn predict(&mut self, dx: i32) {
        // RECONS and PARREC.
        let r = sat(self.s + dx);
        let p = sat(self.sz + dx);
        let negative = |v: i32| v < 0;

        // UPPOL2: second pole coefficient.
        let wd1 = sat(self.a[0] << 2);
        let wd2 = if negative(p) == negative(self.p[0]) {
            -wd1
        } else {
            wd1
        }
        .min(32767);
        let wd3 = (wd2 >> 7)
            + if negative(p) == negative(self.p[1]) {
                128
            } else {
                -128
            }
            + ((self.a[1] * 32512) >> 15);
        let a2 = wd3.clamp(-12288, 12288);

        // UPPOL1: first pole coefficient, limited by the second.
        let wd1 = if negative(p) == negative(self.p[0]) {
            192
        } else {
            -192
        };
        let wd2 = (self.a[0] * 32640) >> 15;
        let limit = sat(15360 - a2);
        let a1 = sat(wd1 + wd2).clamp(-limit, limit);

        // FILTEP: pole section output from the new coefficients.
        let sp = sat(((a1 * sat(r + r)) >> 15) + ((a2 * sat(self.r[0] + self.r[0])) >> 15));
        self.r = [r, self.r[0]];
        self.a = [a1, a2];
        self.p = [p, self.p[0]];

        // UPZERO, DELAYA and FILTEZ: zero coefficients, difference history, zero
        // section output.
        let step = if dx == 0 { 0 } else { 128 };
        self.d[0] = dx;
        let mut sz = 0;
        for i in (0..6).rev() {
            let wd2 = if negative(self.d[i + 1]) == negative(dx) {
                step
            } else {
                -step
            };
            let wd3 = (self.b[i] * 32640) >> 15;
            self.b[i] = sat(wd2 + wd3);
            sz += (self.b[i] * sat(self.d[i] + self.d[i])) >> 15;
            self.d[i + 1] = self.d[i];
        }
        self.sz = sat(sz);

        // PREDIC.
        self.s = sat(sp + self.sz);
    }
}

/// G.722 encoder state (64 kbit/s). About 200 bytes; no allocation.
#[derive(Debug, Clone)]
pub(crate) struct G722Encoder {
    /// Transmit QMF delay line.
    x: [i32; 24],
    low: Band,
    high: Band,
}

impl Default for G722Encoder {
    fn default() -> Self {
        G722Encoder::new()
    }
}

impl G722Encoder {
    /// A fresh encoder (the Recommendation's reset state).
    pub const fn new() -> G722Encoder {
        G722Encoder {
            x: [0; 24],
            low: Band::new(32),
            high: Band::new(8),
        }
    }

    /// Encodes `pcm` (16 kHz) into `out`, one byte per two samples; returns how many
    /// bytes were written: `min(pcm.len() / 2, out.len())`. An odd last sample is
    /// ignored, so feed even lengths (a 20 ms frame is 320 samples → 160 bytes).
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> usize {
        let n = (pcm.len() / 2).min(out.len());
        for (o, pair) in out[..n].iter_mut().zip(pcm.chunks_exact(2)) {
            *o = self.encode_pair(pair[0], pair[1]);
        }
        n
    }

    fn encode_pair(&mut self, s0: i16, s1: i16) -> u8 {
        // Transmit QMF: shift in two samples, compute one output per band.
        self.x.copy_within(2.., 0);
        self.x[22] = i32::from(s0);
        self.x[23] = i32::from(s1);
        let mut sum_even = 0;
        let mut sum_odd = 0;
        for i in 0..12 {
            sum_odd += self.x[2 * i] * QMF_COEFFS[i];
            sum_even += self.x[2 * i + 1] * QMF_COEFFS[11 - i];
        }
        let xlow = sat((sum_even + sum_odd) >> 14);
        let xhigh = sat((sum_even - sum_odd) >> 14);

        // Lower band. Block 1L: SUBTRA, QUANTL.
        let el = sat(xlow - self.low.s);
        let wd = if el >= 0 { el } else { -(el + 1) };
        // The first decision level above `wd` (levels 1..=29; 30 if none), found by
        // bisection: the levels grow with the index.
        let det = self.low.det;
        let i = 1 + Q6[1..30].partition_point(|&q| wd >= (q * det) >> 12);
        let ilow = if el < 0 { ILN[i] } else { ILP[i] };
        // Block 2L: INVQAL (4-bit, for the predictor).
        let ril = (ilow >> 2) as usize;
        let dlow = (self.low.det * QM4[ril]) >> 15;
        // Blocks 3L and 4L.
        self.low.adapt_scale(WL[RL42[ril] as usize], 18432, 8);
        self.low.predict(dlow);

        // Higher band. Block 1H: SUBTRA, QUANTH.
        let eh = sat(xhigh - self.high.s);
        let wd = if eh >= 0 { eh } else { -(eh + 1) };
        let mih = if wd >= (564 * self.high.det) >> 12 {
            2
        } else {
            1
        };
        let ihigh = if eh < 0 { IHN[mih] } else { IHP[mih] };
        // Block 2H: INVQAH.
        let dhigh = (self.high.det * QM2[ihigh as usize]) >> 15;
        // Blocks 3H and 4H.
        self.high
            .adapt_scale(WH[RH2[ihigh as usize] as usize], 22528, 10);
        self.high.predict(dhigh);

        ((ihigh << 6) | ilow) as u8
    }
}

/// G.722 decoder state (64 kbit/s). About 200 bytes; no allocation.
#[derive(Debug, Clone)]
pub(crate) struct G722Decoder {
    /// Receive QMF delay line.
    x: [i32; 24],
    low: Band,
    high: Band,
}

impl Default for G722Decoder {
    fn default() -> Self {
        G722Decoder::new()
    }
}

impl G722Decoder {
    /// A fresh decoder (the Recommendation's reset state).
    pub const fn new() -> G722Decoder {
        G722Decoder {
            x: [0; 24],
            low: Band::new(32),
            high: Band::new(8),
        }
    }

    /// Decodes `codes` into `out` (16 kHz), two samples per byte; returns how many
    /// samples were written: `2 × min(codes.len(), out.len() / 2)`. Every byte is
    /// valid input.
    pub fn decode(&mut self, codes: &[u8], out: &mut [i16]) -> usize {
        let n = codes.len().min(out.len() / 2);
        for (pair, &code) in out.chunks_exact_mut(2).zip(&codes[..n]) {
            let (a, b) = self.decode_byte(code);
            pair[0] = sat(a) as i16;
            pair[1] = sat(b) as i16;
        }
        2 * n
    }

    /// Decodes one byte to two samples, before the final limiting to 16 bits (a
    /// loud passage can overshoot it slightly).
    fn decode_byte(&mut self, code: u8) -> (i32, i32) {
        let ilow = i32::from(code & 0x3F);
        let ihigh = i32::from(code >> 6);

        // Lower band. Block 5L: INVQBL (6-bit) and RECONS, block 6L: LIMIT.
        let wd = (self.low.det * QM6[ilow as usize]) >> 15;
        let rlow = (self.low.s + wd).clamp(-16384, 16383);
        // Block 2L: INVQAL (4-bit, for the predictor), blocks 3L and 4L.
        let ril = (ilow >> 2) as usize;
        let dlow = (self.low.det * QM4[ril]) >> 15;
        self.low.adapt_scale(WL[RL42[ril] as usize], 18432, 8);
        self.low.predict(dlow);

        // Higher band. Block 2H: INVQAH, block 5H: RECONS, block 6H: LIMIT.
        let dhigh = (self.high.det * QM2[ihigh as usize]) >> 15;
        let rhigh = (dhigh + self.high.s).clamp(-16384, 16383);
        // Blocks 3H and 4H.
        self.high
            .adapt_scale(WH[RH2[ihigh as usize] as usize], 22528, 10);
        self.high.predict(dhigh);

        // Receive QMF: two output samples from one sample of each band.
        self.x.copy_within(2.., 0);
        self.x[22] = rlow + rhigh;
        self.x[23] = rlow - rhigh;
        let mut xout1 = 0;
        let mut xout2 = 0;
        for i in 0..12 {
            xout2 += self.x[2 * i] * QMF_COEFFS[i];
            xout1 += self.x[2 * i + 1] * QMF_COEFFS[11 - i];
        }
        (xout1 >> 11, xout2 >> 11)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_signal::{snr_db, zero_crossings};

    fn fnv(bytes: impl IntoIterator<Item = u8>) -> u64 {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    }

    fn pcm_bytes(pcm: &[i16]) -> impl Iterator<Item = u8> + '_ {
        pcm.iter().flat_map(|s| s.to_le_bytes())
    }

    struct XorShift(u32);

    impl XorShift {
        fn next(&mut self) -> u32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 17;
            self.0 ^= self.0 << 5;
            self.0
        }
    }

    /// An integer-only test signal (so another implementation can build the very
    /// same one): full-range noise, a loud triangle, quiet noise, silence and a
    /// full-scale sawtooth, 16,000 samples in all.
    fn stress_signal(rng: &mut XorShift) -> Vec<i16> {
        let mut out = Vec::with_capacity(16_000);
        for _ in 0..4000 {
            out.push((rng.next() >> 16) as u16 as i16);
        }
        for i in 0..4000i32 {
            let ph = i % 37;
            let v = if ph < 19 {
                (ph * 40000) / 18 - 20000
            } else {
                20000 - ((ph - 18) * 40000) / 18
            };
            out.push(v.clamp(-32768, 32767) as i16);
        }
        for _ in 0..2000 {
            out.push(((rng.next() >> 16) as u16 as i16) >> 6);
        }
        out.extend(std::iter::repeat_n(0, 2000));
        for i in 0..4000i32 {
            out.push((-32768 + (i % 16) * 4369) as i16);
        }
        out
    }

    /// Bit-exact against spandsp's G.722 (libspandsp 0.0.6, whose test suite checks
    /// the ITU-T test vectors): the codes, their decoding, and the decoding of
    /// random bytes, each summarised by an FNV-1a hash of spandsp's output.
    #[test]
    fn matches_reference_implementation() {
        let mut rng = XorShift(0x1234_5678);
        let signal = stress_signal(&mut rng);
        let mut codes = vec![0u8; signal.len() / 2];
        assert_eq!(G722Encoder::new().encode(&signal, &mut codes), 8000);
        assert_eq!(
            &codes[..12],
            &[33, 132, 32, 132, 32, 132, 30, 46, 152, 132, 161, 163]
        );
        assert_eq!(fnv(codes.iter().copied()), 0xe5ae_e063_d2b3_01a7);

        let decoded = decode_wrapping(&codes);
        assert_eq!(
            &decoded[100..108],
            &[-17506, -2290, -10723, -13902, 3207, -6116, 13282, 16674]
        );
        assert_eq!(fnv(pcm_bytes(&decoded)), 0xa915_dfc4_b7d3_6845);

        let random: Vec<u8> = (0..4000).map(|_| (rng.next() >> 24) as u8).collect();
        let decoded = decode_wrapping(&random);
        assert_eq!(
            &decoded[1000..1006],
            &[-22071, -10263, 27171, 17876, 25058, -10281]
        );
        assert_eq!(fnv(pcm_bytes(&decoded)), 0x9504_c5b2_b0a4_a0bc);

        // The public decoder limits where that spandsp wraps around: same samples
        // everywhere else, and full scale of the right sign where it overshoots.
        let mut limited = vec![0i16; 16_000];
        assert_eq!(G722Decoder::new().decode(&codes, &mut limited), 16_000);
        let wrapped = decode_wrapping(&codes);
        let mut overshoots = 0;
        for (i, (&l, &w)) in limited.iter().zip(&wrapped).enumerate() {
            if l != w {
                overshoots += 1;
                assert!(
                    (l == i16::MAX && w < 0) || (l == i16::MIN && w > 0),
                    "sample {i}: {l} vs {w}"
                );
            }
        }
        assert!((1..200).contains(&overshoots), "{overshoots}");
    }

    /// Decodes like spandsp 0.0.6, whose last step truncates to 16 bits instead
    /// of limiting.
    fn decode_wrapping(codes: &[u8]) -> Vec<i16> {
        let mut dec = G722Decoder::new();
        let mut out = Vec::with_capacity(2 * codes.len());
        for &c in codes {
            let (a, b) = dec.decode_byte(c);
            out.push(a as i16);
            out.push(b as i16);
        }
        out
    }

    fn sine(freq: f64, amplitude: f64, rate: f64, len: usize) -> Vec<i16> {
        (0..len)
            .map(|i| (amplitude * (std::f64::consts::TAU * freq * i as f64 / rate).sin()) as i16)
            .collect()
    }

    fn round_trip(pcm: &[i16]) -> Vec<i16> {
        let mut enc = G722Encoder::new();
        let mut dec = G722Decoder::new();
        let mut out = Vec::with_capacity(pcm.len());
        // 20 ms frames, as on the wire.
        for frame in pcm.chunks(320) {
            let mut codes = [0u8; 160];
            let n = enc.encode(frame, &mut codes);
            let mut pcm = [0i16; 320];
            let m = dec.decode(&codes[..n], &mut pcm);
            out.extend_from_slice(&pcm[..m]);
        }
        out
    }

    #[test]
    fn sine_round_trip_keeps_frequency_and_snr() {
        // The codec's delay (the QMF pair's), from a signal that is not periodic
        // within the search range.
        let mix: Vec<i16> = sine(440.0, 4000.0, 16000.0, 16000)
            .iter()
            .zip(sine(1730.0, 3000.0, 16000.0, 16000))
            .zip(sine(5100.0, 2000.0, 16000.0, 16000))
            .map(|((a, b), c)| a + b + c)
            .collect();
        let output = round_trip(&mix);
        let best = (0..100)
            .max_by(|&a, &b| {
                snr_db(&mix, &output, a, 4000..16000).total_cmp(&snr_db(
                    &mix,
                    &output,
                    b,
                    4000..16000,
                ))
            })
            .unwrap();
        assert_eq!(best, 22, "codec delay");

        let input = sine(1000.0, 10000.0, 16000.0, 16000);
        let output = round_trip(&input);
        assert_eq!(output.len(), input.len());
        let snr = snr_db(&input, &output, 22, 4000..16000);
        assert!(snr >= 20.0, "SNR {snr:.1} dB");
        // 1 kHz: 2,000 zero crossings per second, over the last 0.75 s.
        let zc = zero_crossings(&output[4000..]);
        assert!((1495..=1505).contains(&zc), "{zc} zero crossings");

        // Quieter and wideband (6 kHz, the upper sub-band) tones come through too.
        for (freq, amplitude) in [(300.0, 1000.0), (3400.0, 8000.0), (6000.0, 8000.0)] {
            let input = sine(freq, amplitude, 16000.0, 16000);
            let output = round_trip(&input);
            let snr = snr_db(&input, &output, 22, 4000..16000);
            assert!(snr >= 15.0, "{freq} Hz: SNR {snr:.1} dB");
        }
    }

    #[test]
    fn silence_stays_silent() {
        let output = round_trip(&[0i16; 16000]);
        let peak = output.iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!(peak <= 8, "peak {peak}");
        // And after a loud passage, silence decays back to near silence.
        let mut input = sine(1000.0, 30000.0, 16000.0, 8000);
        input.extend(std::iter::repeat_n(0, 8000));
        let output = round_trip(&input);
        let peak = output[12000..]
            .iter()
            .map(|s| s.unsigned_abs())
            .max()
            .unwrap();
        assert!(peak <= 8, "peak {peak}");
    }

    #[test]
    fn any_bytes_decode_and_lengths_are_bounded() {
        let mut rng = XorShift(0xDEAD_BEEF);
        let mut dec = G722Decoder::new();
        let mut out = [0i16; 320];
        for round in 0..2000 {
            let len = (rng.next() % 200) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| match round % 3 {
                    0 => rng.next() as u8,
                    1 => 0xFF,
                    _ => 0x00,
                })
                .collect();
            let n = dec.decode(&bytes, &mut out);
            assert_eq!(n, 2 * len.min(160));
        }
        // Encoder: odd input and short output.
        let mut enc = G722Encoder::new();
        let mut codes = [0u8; 4];
        assert_eq!(enc.encode(&[1, 2, 3], &mut codes), 1);
        assert_eq!(enc.encode(&[i16::MAX; 20], &mut codes), 4);
        assert_eq!(enc.encode(&[i16::MIN; 20], &mut codes), 4);
        assert_eq!(dec.decode(&codes, &mut out[..5]), 4);
    }
}
