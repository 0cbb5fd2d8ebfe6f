//! The receive path as the media engine runs it, without sockets: G.711 packets go
//! through a lossy, jittery "network" into the jitter buffer; each 20 ms tick pops a
//! frame and decodes it, or conceals it, and "plays" it.
#![allow(clippy::unwrap_used, unsafe_code)] // test code: a failed unwrap is a failed test

use microsip_media::g711;
use microsip_media::jitter::{JitterBuffer, JitterConfig, Playout};
use microsip_media::plc::Plc;

/// xorshift64: deterministic noise for loss and jitter.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A voiced, speech-like test signal: harmonics of a gliding 100–140 Hz pitch under
/// a 4 Hz syllable envelope.
fn voice(n: usize) -> Vec<i16> {
    let mut phase = 0.0f64;
    (0..n)
        .map(|i| {
            let t = i as f64 / 8000.0;
            let f0 = 120.0 + 20.0 * (2.0 * std::f64::consts::PI * 0.5 * t).sin();
            phase += 2.0 * std::f64::consts::PI * f0 / 8000.0;
            let envelope = 0.55 + 0.45 * (2.0 * std::f64::consts::PI * 4.0 * t).sin();
            let v: f64 = (1..=8).map(|h| (h as f64 * phase).sin() / h as f64).sum();
            (6000.0 * envelope * v) as i16
        })
        .collect()
}

struct Outcome {
    played: Vec<i16>,
    /// For each tick: the index of the frame played (`None`: concealed or waiting).
    frames: Vec<Option<usize>>,
}

/// Sends `signal` as PCMU packets, drops each with probability `loss`, delays each by
/// up to `jitter_ms`, and plays it out with `conceal` (or silence) for missing frames.
fn call(signal: &[i16], loss: f64, jitter_ms: f64, conceal: bool) -> Outcome {
    let frames = signal.len() / 160;
    let mut rng = Rng(0x5eed);
    let mut packets: Vec<(u64, usize, Vec<u8>)> = Vec::new();
    for k in 0..frames {
        let drop = rng.unit() < loss;
        let delay = rng.unit() * jitter_ms;
        if drop && k > 0 {
            continue;
        }
        let mut payload = vec![0u8; 160];
        g711::encode_ulaw(&signal[k * 160..(k + 1) * 160], &mut payload);
        packets.push(((k as f64 * 20.0 + 3.0 + delay) as u64, k, payload));
    }
    packets.sort_by_key(|p| p.0);

    // What the engine keeps per call, allocated once.
    let mut jb = JitterBuffer::new(JitterConfig::default());
    let mut plc = Plc::new(160);
    let mut pcm = [0i16; 160];
    let mut out = Outcome {
        played: Vec::new(),
        frames: Vec::new(),
    };
    let mut next = 0;
    let mut now = 10u64;
    while now < frames as u64 * 20 + 400 {
        // Receive: every packet of the negotiated payload type goes to the buffer.
        while next < packets.len() && packets[next].0 <= now {
            let (at, k, payload) = &packets[next];
            let k = *k;
            jb.push(*at, k as u16, (k * 160) as u32, k == 0, payload);
            next += 1;
        }
        // Play out: one frame per tick.
        match jb.pop(now) {
            Playout::Frame(payload) => {
                let n = g711::decode_ulaw(payload, &mut pcm);
                plc.smooth_recovery(&mut pcm[..n]);
                plc.good(&pcm[..n]);
            }
            Playout::Missing if conceal => plc.conceal(&mut pcm),
            Playout::Missing | Playout::Waiting => pcm = [0; 160],
        }
        // (the sink: `sink.write(&pcm)`)
        out.played.extend_from_slice(&pcm);
        now += 20;
    }
    out.frames = locate(signal, &out.played);
    out
}

/// For each played frame, which frame of the signal it is (decoded G.711 is not
/// bit-exact, so: the nearest frame by error, if it is close).
fn locate(signal: &[i16], played: &[i16]) -> Vec<Option<usize>> {
    let reference: Vec<Vec<i16>> = signal
        .chunks_exact(160)
        .map(|f| {
            let mut codes = [0u8; 160];
            let mut pcm = [0i16; 160];
            g711::encode_ulaw(f, &mut codes);
            g711::decode_ulaw(&codes, &mut pcm);
            pcm.to_vec()
        })
        .collect();
    let mut last = 0usize;
    played
        .chunks_exact(160)
        .map(|p| {
            // Frames play in order: search just after the last one found.
            let found = (last..(last + 20).min(reference.len())).find(|&k| {
                // The first 5 ms after a loss are crossfaded; compare the rest.
                reference[k][40..] == p[40..]
            });
            if let Some(k) = found {
                last = k + 1;
            }
            found
        })
        .collect()
}

/// Signal-to-noise ratio (dB) over the frames that were concealed, each compared with
/// the signal frame it stood in for (the one between its played neighbours).
fn concealment_snr(signal: &[i16], out: &Outcome) -> f64 {
    let (mut s, mut e) = (0.0f64, 0.0f64);
    let mut previous: Option<usize> = None;
    for (tick, found) in out.frames.iter().enumerate() {
        match found {
            Some(k) => previous = Some(*k),
            None => {
                let Some(p) = previous else { continue };
                // Only single losses between two played neighbours are unambiguous.
                if out.frames.get(tick + 1) != Some(&Some(p + 2)) {
                    continue;
                }
                let truth = &signal[(p + 1) * 160..(p + 2) * 160];
                let got = &out.played[tick * 160..(tick + 1) * 160];
                for (&a, &b) in truth.iter().zip(got) {
                    s += f64::from(a) * f64::from(a);
                    e += (f64::from(a) - f64::from(b)).powi(2);
                }
            }
        }
    }
    10.0 * (s / e.max(1.0)).log10()
}

fn max_step(x: &[i16]) -> i32 {
    x.windows(2)
        .map(|w| (i32::from(w[1]) - i32::from(w[0])).abs())
        .max()
        .unwrap_or(0)
}

#[test]
fn plc_beats_silence_on_lost_frames() {
    let signal = voice(8000 * 60);
    let with = call(&signal, 0.05, 0.0, true);
    let without = call(&signal, 0.05, 0.0, false);
    let snr_with = concealment_snr(&signal, &with);
    let snr_without = concealment_snr(&signal, &without);
    eprintln!("lost frames: SNR {snr_with:.1} dB concealed, {snr_without:.1} dB silence");
    assert!(snr_without.abs() < 0.5, "{snr_without}");
    assert!(snr_with > snr_without + 3.0, "{snr_with} vs {snr_without}");
}

#[test]
fn jitter_and_loss_play_in_order_without_clicks() {
    let signal = voice(8000 * 60);
    let natural = max_step(&signal);
    for conceal in [true, false] {
        let out = call(&signal, 0.05, 30.0, conceal);
        let found: Vec<usize> = out.frames.iter().flatten().copied().collect();
        assert!(found.windows(2).all(|w| w[1] > w[0]), "out of order");
        assert!(
            found.len() * 100 >= 3000 * 94,
            "only {} of 3000 played",
            found.len()
        );
        let step = max_step(&out.played);
        eprintln!("conceal {conceal}: max step {step}, signal's own {natural}");
        if conceal {
            assert!(step < natural * 3 / 2, "click: step {step} vs {natural}");
        }
    }
}
