//! The ring tone of an incoming call: a [`Ringer`] plays the ring cadence (or the
//! ini's `ringingSound` WAV, looping) into the ring device while a call rings.
//!
//! This module owns the built-in cadence ([`RingTone`]: 440 + 480 Hz, 2 s on, 4 s
//! off, the North American ring) and the ringer's small thread, which writes 20 ms
//! frames on its own clock into any [`AudioSink`](crate::AudioSink) (a sound device's fifo or a file)
//! and lives only while something rings. The media thread is not involved: ringing
//! has no call media.

use std::path::Path;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::audio::{self, AudioError, AudioSource, AudioSpec, FileSource, FRAME_SAMPLES};
use crate::audio::{SAMPLE_RATE, TONE_AMPLITUDE};

/// Seconds of tone, then of silence, in one ring cycle.
const RING_ON_S: u32 = 2;
const RING_OFF_S: u32 = 4;

/// The ring cadence: 440 Hz + 480 Hz together (each at -12 dBFS), 2 s on, 4 s off.
#[derive(Debug)]
pub struct RingTone {
    /// Sample position in the cycle.
    position: u32,
    phases: [f64; 2],
    steps: [f64; 2],
}

impl Default for RingTone {
    fn default() -> Self {
        RingTone::new()
    }
}

impl RingTone {
    /// The cadence, starting with the tone.
    pub fn new() -> RingTone {
        let step = |hz: f64| std::f64::consts::TAU * hz / f64::from(SAMPLE_RATE);
        RingTone {
            position: 0,
            phases: [0.0; 2],
            steps: [step(440.0), step(480.0)],
        }
    }
}

impl AudioSource for RingTone {
    fn read(&mut self, out: &mut [i16; FRAME_SAMPLES]) {
        let on = RING_ON_S * SAMPLE_RATE;
        let cycle = (RING_ON_S + RING_OFF_S) * SAMPLE_RATE;
        for s in out.iter_mut() {
            *s = if self.position < on {
                let v = (self.phases[0].sin() + self.phases[1].sin()) * TONE_AMPLITUDE / 2.0;
                for (p, st) in self.phases.iter_mut().zip(self.steps) {
                    *p = (*p + st) % std::f64::consts::TAU;
                }
                v as i16
            } else {
                0
            };
            self.position = (self.position + 1) % cycle;
        }
    }
}

/// Plays a ring source into a sink on its own 20 ms clock until dropped.
pub struct Ringer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Ringer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ringer").finish()
    }
}

impl Ringer {
    /// Opens `device` and starts ringing: `sound` (a WAV, looping) when given and
    /// readable, else the built-in cadence. Errors: the device cannot be opened.
    pub fn start(device: &AudioSpec, sound: Option<&Path>) -> Result<Ringer, AudioError> {
        let mut sink = audio::open_sink(device)?;
        let mut source: Box<dyn AudioSource> = match sound.map(FileSource::open) {
            Some(Ok(file)) => Box::new(file),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "ringingSound not played; ringing with the built-in tone");
                Box::new(RingTone::new())
            }
            None => Box::new(RingTone::new()),
        };
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name("ring".into())
            .stack_size(128 * 1024)
            .spawn(move || {
                let start = Instant::now();
                let mut frame = [0i16; FRAME_SAMPLES];
                let mut ticks: u32 = 0;
                // Bounded: an hour of ringing at most.
                while ticks < 180_000 {
                    source.read(&mut frame);
                    if let Err(e) = sink.write(&frame) {
                        tracing::warn!(error = %e, "ring device failed");
                    }
                    ticks += 1;
                    let next = start + Duration::from_millis(20 * u64::from(ticks));
                    let wait = next.saturating_duration_since(Instant::now());
                    match stopped.recv_timeout(wait) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        _ => break,
                    }
                }
                if let Err(e) = sink.close() {
                    tracing::warn!(error = %e, "ring device not closed cleanly");
                }
            })
            .map_err(|e| AudioError::Device(format!("ring: cannot start a thread: {e}")))?;
        Ok(Ringer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Ringer {
    fn drop(&mut self) {
        // Closing the channel wakes the thread at once; it closes the sink and ends.
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cadence_is_two_seconds_of_440_and_480_then_four_of_silence() {
        let mut r = RingTone::new();
        let mut all = Vec::new();
        let mut frame = [0i16; FRAME_SAMPLES];
        for _ in 0..(12 * 50) {
            r.read(&mut frame);
            all.extend_from_slice(&frame);
        }
        let rate = SAMPLE_RATE as usize;
        let rms = |x: &[i16]| {
            (x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
        };
        let on = &all[..2 * rate];
        assert!(rms(on) > 5000.0, "tone on: {}", rms(on));
        assert_eq!(rms(&all[2 * rate + 1..6 * rate]), 0.0);
        assert!(rms(&all[6 * rate..8 * rate]) > 5000.0, "second ring");
        // Both frequencies, nothing else strong.
        let power = |f: f64| {
            let w = std::f64::consts::TAU * f / rate as f64;
            let (mut re, mut im) = (0.0, 0.0);
            for (n, &v) in on.iter().enumerate() {
                re += f64::from(v) * (w * n as f64).cos();
                im -= f64::from(v) * (w * n as f64).sin();
            }
            (re * re + im * im).sqrt()
        };
        assert!(power(440.0) > 50.0 * power(1000.0));
        assert!(power(480.0) > 50.0 * power(1000.0));
        assert!(all
            .iter()
            .all(|&v| i32::from(v).abs() <= TONE_AMPLITUDE as i32));
    }

    #[test]
    fn ringer_writes_the_cadence_to_a_file_until_dropped() {
        let dir = microsip_test_support::TempDir::new("media-ring");
        let path = dir.join("ring.wav");
        let r = Ringer::start(&AudioSpec::File(path.clone()), None).unwrap();
        thread::sleep(Duration::from_millis(300));
        drop(r);
        let samples = audio::load_wav(&path).unwrap();
        // Paced on its own clock: some audio, not a runaway burst.
        let ms = samples.len() * 1000 / SAMPLE_RATE as usize;
        assert!(ms > 0 && ms < 5000, "{ms} ms");
        assert!(samples.iter().any(|&v| v.abs() > 4000));
    }
}
