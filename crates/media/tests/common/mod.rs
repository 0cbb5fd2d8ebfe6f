//! Tone measures the media crate's integration tests share (one copy, not one per
//! test file).
#![allow(dead_code)]

use microsip_media::audio::SAMPLE_RATE;

/// Power of `freq` in `x` (Goertzel, at the bus rate), normalised by length.
pub fn goertzel(x: &[i16], freq: f64) -> f64 {
    let w = std::f64::consts::TAU * freq / f64::from(SAMPLE_RATE);
    let c = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &v in x {
        let s = f64::from(v) + c * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    (s1 * s1 + s2 * s2 - c * s1 * s2) / (x.len() as f64).powi(2)
}

/// The strongest frequency in `x`, to 10 Hz.
pub fn dominant(x: &[i16]) -> u32 {
    (50..=3950)
        .step_by(10)
        .max_by(|a, b| goertzel(x, f64::from(*a)).total_cmp(&goertzel(x, f64::from(*b))))
        .unwrap_or(0)
}
