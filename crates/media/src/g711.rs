//! G.711 µ-law (PCMU) and A-law (PCMA): 16-bit linear PCM to 8-bit codes and back.
//!
//! This module owns the sample conversions and nothing else (no framing, no RTP).
//! The results are bit-exact with Sun's reference `g711.c` in the 16-bit form pjsip
//! (and so MicroSIP) uses:
//!
//! * µ-law: magnitude biased by 0x84 and clipped at 32635, segment = position of the
//!   magnitude's leading one. Identical for every input to the `BIAS 0x84` /
//!   `CLIP 32635` formulation.
//! * A-law: negative values take the magnitude `-x - 8` (floored at 0, pjsip's
//!   2011 fix for `-1..-7`), then the segment table `0xFF, 0x1FF, ... 0x7FFF`.
//! * Decoding is Sun's `ulaw2linear` / `alaw2linear` for all 256 codes, read from
//!   tables computed at compile time (pjsip's shortcut of decoding µ-law `0x00` as 0
//!   is not copied: `0x00` is -32124 as the standard says).
//!
//! The encoders use the segment search (a `leading_zeros`) rather than a 64 KiB table,
//! to keep the process small; they are a handful of integer operations per sample.

/// Encodes one 16-bit linear sample as µ-law.
#[inline]
pub(crate) fn linear_to_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let value = i32::from(sample);
    let (magnitude, mask) = if value < 0 {
        (-value, 0x7F)
    } else {
        (value, 0xFF)
    };
    let biased = magnitude.min(CLIP) + BIAS; // 132..=32767: bits 7..=14 lead
    let segment = (31 - biased.leading_zeros() as i32) - 7; // 0..=7
    let code = (segment << 4) | ((biased >> (segment + 3)) & 0x0F);
    (code ^ mask) as u8
}

/// Encodes one 16-bit linear sample as A-law.
#[inline]
pub(crate) fn linear_to_alaw(sample: i16) -> u8 {
    let value = i32::from(sample);
    let (magnitude, mask) = if value >= 0 {
        (value, 0xD5)
    } else {
        ((-value - 8).max(0), 0x55)
    };
    // Segment = how many of the thresholds 0xFF, 0x1FF, ... 0x7FFF lie below it.
    let segment = if magnitude <= 0xFF {
        0
    } else {
        (31 - magnitude.leading_zeros() as i32) - 7
    };
    let quant = if segment < 2 {
        (magnitude >> 4) & 0x0F
    } else {
        (magnitude >> (segment + 3)) & 0x0F
    };
    (((segment << 4) | quant) ^ mask) as u8
}

/// Decodes one µ-law code.
#[inline]
pub(crate) fn ulaw_to_linear(code: u8) -> i16 {
    ULAW_TO_LINEAR[code as usize]
}

/// Decodes one A-law code.
#[inline]
pub(crate) fn alaw_to_linear(code: u8) -> i16 {
    ALAW_TO_LINEAR[code as usize]
}

/// Encodes `pcm` into `out` as µ-law; returns how many bytes were written
/// (the shorter of the two lengths).
pub fn encode_ulaw(pcm: &[i16], out: &mut [u8]) -> usize {
    let n = pcm.len().min(out.len());
    for (o, &s) in out[..n].iter_mut().zip(&pcm[..n]) {
        *o = linear_to_ulaw(s);
    }
    n
}

/// Encodes `pcm` into `out` as A-law; returns how many bytes were written.
pub(crate) fn encode_alaw(pcm: &[i16], out: &mut [u8]) -> usize {
    let n = pcm.len().min(out.len());
    for (o, &s) in out[..n].iter_mut().zip(&pcm[..n]) {
        *o = linear_to_alaw(s);
    }
    n
}

/// Decodes µ-law `codes` into `out`; returns how many samples were written.
pub fn decode_ulaw(codes: &[u8], out: &mut [i16]) -> usize {
    let n = codes.len().min(out.len());
    for (o, &c) in out[..n].iter_mut().zip(&codes[..n]) {
        *o = ulaw_to_linear(c);
    }
    n
}

/// Decodes A-law `codes` into `out`; returns how many samples were written.
pub(crate) fn decode_alaw(codes: &[u8], out: &mut [i16]) -> usize {
    let n = codes.len().min(out.len());
    for (o, &c) in out[..n].iter_mut().zip(&codes[..n]) {
        *o = alaw_to_linear(c);
    }
    n
}

const fn ulaw_decode_ref(code: u8) -> i16 {
    let u = !code;
    let t = (((u & 0x0F) as i32) << 3) + 0x84;
    let t = t << ((u & 0x70) >> 4);
    if u & 0x80 != 0 {
        (0x84 - t) as i16
    } else {
        (t - 0x84) as i16
    }
}

const fn alaw_decode_ref(code: u8) -> i16 {
    let a = code ^ 0x55;
    let mut t = ((a & 0x0F) as i32) << 4;
    let seg = ((a & 0x70) >> 4) as i32;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    if a & 0x80 != 0 {
        t as i16
    } else {
        -t as i16
    }
}

const fn build_table(alaw: bool) -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = if alaw {
            alaw_decode_ref(i as u8)
        } else {
            ulaw_decode_ref(i as u8)
        };
        i += 1;
    }
    table
}

static ULAW_TO_LINEAR: [i16; 256] = build_table(false);
static ALAW_TO_LINEAR: [i16; 256] = build_table(true);

#[cfg(test)]
mod tests {
    use super::*;

    // ---- Independent transcriptions of Sun's g711.c (16-bit form, as in pjsip) ----

    const SEG_END: [i32; 8] = [0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF, 0x3FFF, 0x7FFF];

    fn search(val: i32) -> i32 {
        for (i, &end) in SEG_END.iter().enumerate() {
            if val <= end {
                return i as i32;
            }
        }
        8
    }

    fn ref_linear2alaw(mut pcm_val: i32) -> u8 {
        let mask;
        if pcm_val >= 0 {
            mask = 0xD5;
        } else {
            mask = 0x55;
            pcm_val = -pcm_val - 8;
            if pcm_val < 0 {
                pcm_val = 0;
            }
        }
        let seg = search(pcm_val);
        if seg >= 8 {
            return (0x7F ^ mask) as u8;
        }
        let mut aval = seg << 4;
        if seg < 2 {
            aval |= (pcm_val >> 4) & 0xF;
        } else {
            aval |= (pcm_val >> (seg + 3)) & 0xF;
        }
        (aval ^ mask) as u8
    }

    fn ref_linear2ulaw(mut pcm_val: i32) -> u8 {
        let mask;
        if pcm_val < 0 {
            pcm_val = 0x84 - pcm_val;
            mask = 0x7F;
        } else {
            pcm_val += 0x84;
            mask = 0xFF;
        }
        let seg = search(pcm_val);
        if seg >= 8 {
            return (0x7F ^ mask) as u8;
        }
        let uval = (seg << 4) | ((pcm_val >> (seg + 3)) & 0xF);
        (uval ^ mask) as u8
    }

    /// The other classic formulation (BIAS 0x84, CLIP 32635, exponent table).
    fn ref_linear2ulaw_clip(sample: i32) -> u8 {
        let sign = if sample < 0 { 0x80 } else { 0 };
        let mut s = sample.abs();
        if s > 32635 {
            s = 32635;
        }
        s += 0x84;
        let mut exponent = 7;
        let mut mask = 0x4000;
        while s & mask == 0 && exponent > 0 {
            exponent -= 1;
            mask >>= 1;
        }
        let mantissa = (s >> (exponent + 3)) & 0x0F;
        !((sign | (exponent << 4) | mantissa) as u8)
    }

    fn ref_ulaw2linear(u_val: u8) -> i32 {
        let u = !u_val as i32;
        let mut t = ((u & 0xF) << 3) + 0x84;
        t <<= (u & 0x70) >> 4;
        if u & 0x80 != 0 {
            0x84 - t
        } else {
            t - 0x84
        }
    }

    fn ref_alaw2linear(a_val: u8) -> i32 {
        let a = (a_val ^ 0x55) as i32;
        let mut t = (a & 0xF) << 4;
        let seg = (a & 0x70) >> 4;
        match seg {
            0 => t += 8,
            1 => t += 0x108,
            _ => {
                t += 0x108;
                t <<= seg - 1;
            }
        }
        if a & 0x80 != 0 {
            t
        } else {
            -t
        }
    }

    #[test]
    fn ulaw_encoder_matches_reference_for_all_inputs() {
        for x in i16::MIN..=i16::MAX {
            let got = linear_to_ulaw(x);
            assert_eq!(got, ref_linear2ulaw(x as i32), "µ-law of {x}");
            assert_eq!(
                got,
                ref_linear2ulaw_clip(x as i32),
                "µ-law (clip form) of {x}"
            );
        }
    }

    #[test]
    fn alaw_encoder_matches_reference_for_all_inputs() {
        for x in i16::MIN..=i16::MAX {
            assert_eq!(linear_to_alaw(x), ref_linear2alaw(x as i32), "A-law of {x}");
        }
    }

    #[test]
    fn decoders_match_reference_for_all_codes() {
        for c in 0..=255u8 {
            assert_eq!(
                ulaw_to_linear(c) as i32,
                ref_ulaw2linear(c),
                "µ-law code {c:#04x}"
            );
            assert_eq!(
                alaw_to_linear(c) as i32,
                ref_alaw2linear(c),
                "A-law code {c:#04x}"
            );
        }
    }

    #[test]
    fn known_values() {
        // Silence and full scale, as every G.711 table lists them.
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(alaw_to_linear(0x2A), -32256);
    }

    #[test]
    fn round_trip_is_stable() {
        for c in 0..=255u8 {
            let u = ulaw_to_linear(c);
            assert_eq!(ulaw_to_linear(linear_to_ulaw(u)), u, "µ-law code {c:#04x}");
            let a = alaw_to_linear(c);
            assert_eq!(alaw_to_linear(linear_to_alaw(a)), a, "A-law code {c:#04x}");
        }
    }

    #[test]
    fn round_trip_error_is_bounded() {
        // Quantisation error stays within half a step of the top segment.
        for x in i16::MIN..=i16::MAX {
            let u = ulaw_to_linear(linear_to_ulaw(x)) as i32;
            let a = alaw_to_linear(linear_to_alaw(x)) as i32;
            assert!((u - x as i32).abs() <= 1024, "µ-law {x} -> {u}");
            assert!((a - x as i32).abs() <= 1024, "A-law {x} -> {a}");
        }
    }

    #[test]
    fn slice_helpers() {
        let pcm = [0i16, 1000, -1000, 32767];
        let mut codes = [0u8; 4];
        assert_eq!(encode_ulaw(&pcm, &mut codes), 4);
        let mut back = [0i16; 3];
        assert_eq!(decode_ulaw(&codes, &mut back), 3);
        assert_eq!(back[0], 0);
        assert_eq!(encode_alaw(&pcm, &mut codes[..2]), 2);
        assert_eq!(decode_alaw(&codes[..2], &mut back), 2);
        assert_eq!(back[0], 8);
    }
}
