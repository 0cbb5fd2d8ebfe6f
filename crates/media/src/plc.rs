//! Packet loss concealment for codecs without their own (G.711 and other plain PCM):
//! what to play for a frame the jitter buffer reports missing.
//!
//! This module owns only the signal: it remembers the last good samples and, for a
//! missing frame, repeats the last pitch period (found by normalised autocorrelation,
//! 2.5–15 ms) so the repetition continues the waveform; the repeated period is
//! crossfaded over a quarter period at its seam so its wrap-around does not click. The
//! first 20 ms of a loss play at full level, the next 20 ms fade by 6 dB, the next fade
//! to silence: after 60 ms of loss it is silent. The first good frame after a loss
//! fades in over 5 ms from what concealment would have played, so neither end of a
//! loss clicks. No allocation after construction; no panics on any input length.

/// Samples of the gain schedule's step (20 ms) at `rate`.
fn step_samples(rate: u32) -> usize {
    (rate as usize / 50).max(1)
}

/// Loss concealment for one stream of 16-bit PCM.
#[derive(Debug, Clone)]
pub struct Plc {
    /// Shortest and longest pitch period searched, in samples.
    min_lag: usize,
    max_lag: usize,
    /// The last samples played (good or concealed), oldest first.
    history: Vec<i16>,
    /// One pitch period, its end crossfaded into its start; `lag` samples used.
    period: Vec<f32>,
    lag: usize,
    /// Position in `period` of the next concealed sample.
    phase: usize,
    /// Samples concealed since the last good frame (0: not concealing).
    lost: usize,
    /// Length of the gain schedule's step (20 ms).
    step: usize,
    /// Length of the fade-in after a loss.
    recovery: usize,
}

impl Plc {
    /// Concealment for 8 kHz PCM (G.711) with frames of `frame_samples`.
    pub fn new(frame_samples: usize) -> Plc {
        Plc::with_rate(frame_samples, 8000)
    }

    /// Concealment for PCM at `sample_rate` Hz with frames of `frame_samples`.
    pub fn with_rate(frame_samples: usize, sample_rate: u32) -> Plc {
        let rate = sample_rate.max(1000) as usize;
        let min_lag = (rate / 400).max(2);
        let max_lag = (rate * 15 / 1000).max(min_lag + 1);
        let history = (3 * max_lag).max(frame_samples);
        Plc {
            min_lag,
            max_lag,
            history: vec![0; history],
            period: vec![0.0; max_lag],
            lag: max_lag,
            phase: 0,
            lost: 0,
            step: step_samples(rate as u32),
            recovery: (rate / 200).max(1),
        }
    }

    /// Remembers a good (decoded) frame; call it for every frame played from a packet,
    /// after [`smooth_recovery`](Self::smooth_recovery).
    pub fn good(&mut self, pcm: &[i16]) {
        self.remember(pcm);
        self.lost = 0;
    }

    /// Fills `out` with the concealment of a missing frame (any length).
    pub fn conceal(&mut self, out: &mut [i16]) {
        if self.lost == 0 {
            self.start();
        }
        for sample in out.iter_mut() {
            let value = self.period[self.phase] * self.gain(self.lost);
            *sample = value.round().clamp(-32768.0, 32767.0) as i16;
            self.phase = (self.phase + 1) % self.lag;
            self.lost = self.lost.saturating_add(1);
        }
        self.remember(out);
    }

    /// Whether the previous frame was concealed.
    pub fn concealing(&self) -> bool {
        self.lost > 0
    }

    /// Fades the first good frame after a loss in from what concealment would have
    /// played (5 ms); does nothing when there was no loss. Call before
    /// [`good`](Self::good).
    pub fn smooth_recovery(&mut self, pcm: &mut [i16]) {
        if self.lost == 0 {
            return;
        }
        let n = self.recovery.min(pcm.len());
        let mut phase = self.phase;
        for (i, sample) in pcm.iter_mut().take(n).enumerate() {
            let concealed = self.period[phase] * self.gain(self.lost.saturating_add(i));
            phase = (phase + 1) % self.lag;
            let w = (i + 1) as f32 / (n + 1) as f32;
            let mixed = w * f32::from(*sample) + (1.0 - w) * concealed;
            *sample = mixed.round().clamp(-32768.0, 32767.0) as i16;
        }
    }

    /// Level of the `n`th concealed sample: 1 for 20 ms, down to 0.5 (−6 dB) over the
    /// next 20 ms, down to 0 over the next 20 ms, then 0.
    fn gain(&self, n: usize) -> f32 {
        let step = self.step;
        if n < step {
            1.0
        } else if n < 2 * step {
            1.0 - 0.5 * (n - step) as f32 / step as f32
        } else if n < 3 * step {
            0.5 - 0.5 * (n - 2 * step) as f32 / step as f32
        } else {
            0.0
        }
    }

    fn remember(&mut self, pcm: &[i16]) {
        let h = self.history.len();
        if pcm.len() >= h {
            self.history.copy_from_slice(&pcm[pcm.len() - h..]);
        } else {
            self.history.copy_within(pcm.len().., 0);
            self.history[h - pcm.len()..].copy_from_slice(pcm);
        }
    }

    /// A loss starts: find the pitch period and prepare one period to repeat.
    fn start(&mut self) {
        let h = self.history.len();
        let lag = self.pitch();
        let blend = (lag / 4).max(1);
        for (j, p) in self.period.iter_mut().take(lag).enumerate() {
            *p = f32::from(self.history[h - lag + j]);
        }
        // Crossfade the period's end into the samples that precede its start, so that
        // repeating it (end → start) continues smoothly.
        for j in 0..blend {
            let w = (j + 1) as f32 / (blend + 1) as f32;
            let own = f32::from(self.history[h - blend + j]);
            let before = f32::from(self.history[h - lag - blend + j]);
            self.period[lag - blend + j] = (1.0 - w) * own + w * before;
        }
        self.lag = lag;
        self.phase = 0;
    }

    /// The lag in `min_lag..=max_lag` that best repeats the last `max_lag` samples.
    fn pitch(&self) -> usize {
        let h = self.history.len();
        let window = self.max_lag;
        let x = &self.history[h - window..];
        let energy_x: f64 = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        let mut best_lag = self.max_lag;
        let mut best = f64::MIN;
        for lag in self.min_lag..=self.max_lag {
            let y = &self.history[h - window - lag..h - lag];
            let mut cross = 0.0f64;
            let mut energy_y = 0.0f64;
            for (&a, &b) in x.iter().zip(y) {
                cross += f64::from(a) * f64::from(b);
                energy_y += f64::from(b) * f64::from(b);
            }
            let denominator = (energy_x * energy_y).sqrt();
            let score = if denominator > 0.0 {
                cross / denominator
            } else {
                0.0
            };
            if score > best {
                best = score;
                best_lag = lag;
            }
        }
        best_lag
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: f64 = 8000.0;

    fn sine(freq: f64, from: usize, n: usize) -> Vec<i16> {
        (from..from + n)
            .map(|i| (A * (2.0 * std::f64::consts::PI * freq * i as f64 / 8000.0).sin()) as i16)
            .collect()
    }

    fn energy(x: &[i16]) -> f64 {
        x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / x.len().max(1) as f64
    }

    fn max_step(x: &[i16]) -> f64 {
        x.windows(2)
            .map(|w| (f64::from(w[1]) - f64::from(w[0])).abs())
            .fold(0.0, f64::max)
    }

    /// Plays `good` frames of a sine, then `lost` concealed frames, then `after` good
    /// frames (smoothed); returns everything played.
    fn play(freq: f64, good: usize, lost: usize, after: usize) -> Vec<i16> {
        let mut plc = Plc::new(160);
        let mut out = Vec::new();
        for k in 0..good {
            let frame = sine(freq, k * 160, 160);
            plc.good(&frame);
            out.extend_from_slice(&frame);
        }
        for _ in 0..lost {
            let mut frame = [0i16; 160];
            plc.conceal(&mut frame);
            out.extend_from_slice(&frame);
        }
        for k in good + lost..good + lost + after {
            let mut frame = sine(freq, k * 160, 160);
            plc.smooth_recovery(&mut frame);
            plc.good(&frame);
            out.extend_from_slice(&frame);
        }
        out
    }

    #[test]
    fn concealment_energy_decays_to_silence() {
        for freq in [150.0, 440.0, 1000.0] {
            let out = play(freq, 10, 5, 0);
            let reference = energy(&out[9 * 160..10 * 160]);
            let e: Vec<f64> = (10..15)
                .map(|k| energy(&out[k * 160..(k + 1) * 160]))
                .collect();
            // First frame at full level, then falling: −6 dB, then to silence.
            assert!(e[0] > 0.8 * reference, "{freq} Hz: {e:?} vs {reference}");
            assert!(e[1] < e[0] && e[1] > 0.25 * reference, "{freq} Hz: {e:?}");
            assert!(e[2] < e[1] && e[2] < 0.25 * reference, "{freq} Hz: {e:?}");
            assert_eq!(e[3], 0.0);
            assert_eq!(e[4], 0.0);
        }
    }

    #[test]
    fn silence_after_sixty_ms() {
        let out = play(440.0, 5, 6, 0);
        // The last concealed samples before 60 ms are nearly silent, then silence.
        assert!(out[5 * 160 + 470..5 * 160 + 480]
            .iter()
            .all(|&v| v.abs() < 300));
        assert!(out[5 * 160 + 480..].iter().all(|&v| v == 0));
    }

    #[test]
    fn a_periodic_signal_is_continued() {
        // One lost frame of a steady tone: the concealment is close to the real thing.
        for freq in [250.0, 500.0, 1000.0] {
            let out = play(freq, 10, 1, 0);
            let truth = sine(freq, 10 * 160, 160);
            let concealed = &out[10 * 160..];
            let noise: Vec<i16> = truth
                .iter()
                .zip(concealed)
                .map(|(&a, &b)| a.saturating_sub(b))
                .collect();
            let snr = 10.0 * (energy(&truth) / energy(&noise).max(1.0)).log10();
            assert!(snr > 15.0, "{freq} Hz: {snr:.1} dB");
        }
    }

    #[test]
    fn no_discontinuity_at_the_seams() {
        for freq in [200.0, 440.0, 700.0, 1000.0] {
            let natural = A * 2.0 * std::f64::consts::PI * freq / 8000.0;
            for lost in [1, 2, 3, 5] {
                let out = play(freq, 10, lost, 5);
                let step = max_step(&out);
                assert!(
                    step <= 1.2 * natural + 0.02 * A,
                    "{freq} Hz, {lost} lost: step {step:.0}, natural {natural:.0}"
                );
            }
        }
    }

    #[test]
    fn the_first_good_frame_after_silence_fades_in() {
        let mut plc = Plc::new(160);
        plc.good(&sine(440.0, 0, 160));
        let mut frame = [0i16; 160];
        for _ in 0..4 {
            plc.conceal(&mut frame);
        }
        assert!(plc.concealing());
        let mut next = [20_000i16; 160];
        plc.smooth_recovery(&mut next);
        assert!(next[0] < 1000, "{}", next[0]);
        assert!(next[..40].windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(next[40..], [20_000; 120]);
        plc.good(&next);
        assert!(!plc.concealing());
        // No loss before: untouched.
        let mut again = [123i16; 160];
        plc.smooth_recovery(&mut again);
        assert_eq!(again, [123; 160]);
    }

    #[test]
    fn any_lengths_and_rates_are_fine() {
        for (frame, rate) in [(160, 8000), (0, 8000), (1, 1), (960, 48_000), (320, 16_000)] {
            let mut plc = Plc::with_rate(frame, rate);
            let mut buf = vec![0i16; 5000];
            for len in [0usize, 1, 7, 160, 5000] {
                plc.conceal(&mut buf[..len]);
                plc.smooth_recovery(&mut buf[..len]);
                plc.good(&buf[..len]);
            }
            // Nothing heard yet: concealment is silence.
            plc.conceal(&mut buf);
            assert!(buf.iter().all(|&v| v == 0));
            for (i, v) in buf.iter_mut().enumerate() {
                *v = if i % 2 == 0 { i16::MAX } else { i16::MIN };
            }
            plc.good(&buf);
            plc.conceal(&mut buf[..333]);
            plc.smooth_recovery(&mut buf[..17]);
        }
        let mut plc = Plc::new(160);
        plc.conceal(&mut [0i16; 160]);
    }
}
