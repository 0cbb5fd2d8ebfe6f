//! Signal measures shared by the media crate's unit tests.

/// Signal-to-noise ratio of `output` against `reference` delayed by `delay` samples,
/// over `range` of the output.
pub(crate) fn snr_db(
    reference: &[i16],
    output: &[i16],
    delay: usize,
    range: std::ops::Range<usize>,
) -> f64 {
    let (mut signal, mut noise) = (0.0, 0.0);
    for i in range {
        let x = f64::from(reference[i - delay]);
        let e = f64::from(output[i]) - x;
        signal += x * x;
        noise += e * e;
    }
    10.0 * (signal / noise.max(1e-9)).log10()
}

/// Sign changes in `x` (twice the frequency times the duration, for a tone).
pub(crate) fn zero_crossings(x: &[i16]) -> usize {
    x.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count()
}
