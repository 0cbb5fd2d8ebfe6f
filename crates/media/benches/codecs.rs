//! Encode and decode cost of one 20 ms frame for each codec, plus Opus loss
//! handling, the resampler and SRTP (protect and unprotect one 20 ms G.711
//! packet, both suites), with criterion. After the run a table of medians is
//! printed (read back from criterion's `estimates.json`).
//!
//! Time is the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall
//! time, so other work on a busy machine does not count as ours.
//!
//! `cargo bench -p microsip-media --bench codecs` (add `-- --quick` for a short run,
//! or a filter such as `-- encode`).
#![allow(clippy::unwrap_used, unsafe_code)] // test code: a failed unwrap is a failed test

use std::hint::black_box;
use std::path::{Path, PathBuf};

use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{Criterion, Throughput};
use microsip_media::codec::{AudioCodec, Opus, G711, G722, MAX_DECODED_SAMPLES, MAX_PAYLOAD_BYTES};
use microsip_media::opus::OpusSettings;
use microsip_media::resample::Resampler;
use microsip_media::srtp::{MasterKey, SrtpParams, SrtpStream, Suite};

/// A speech-like test signal: a vowel-ish harmonic series on a gliding pitch with a
/// syllable envelope, plus a little noise. `seconds` long at `rate`.
fn speechlike(rate: u32, seconds: u32) -> Vec<i16> {
    let mut state = 0x2545_F491u32;
    let mut phase = 0.0f64;
    (0..rate * seconds)
        .map(|i| {
            let t = f64::from(i) / f64::from(rate);
            let f0 = 120.0 + 40.0 * (std::f64::consts::TAU * 0.7 * t).sin();
            phase += std::f64::consts::TAU * f0 / f64::from(rate);
            let mut v = 0.0;
            for h in 1..=20 {
                let f = f0 * f64::from(h);
                if f > f64::from(rate) / 2.2 {
                    break;
                }
                // Formant-like weighting around 700 Hz and 1.2 kHz.
                let w = 1.0 / (1.0 + ((f - 700.0) / 300.0).powi(2))
                    + 0.5 / (1.0 + ((f - 1200.0) / 400.0).powi(2))
                    + 0.05;
                v += w * (phase * f64::from(h)).sin();
            }
            let envelope = 0.55 + 0.45 * (std::f64::consts::TAU * 3.0 * t).sin();
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let noise = (f64::from(state) / f64::from(u32::MAX) - 0.5) * 300.0;
            (v * envelope * 4000.0 + noise).clamp(-32768.0, 32767.0) as i16
        })
        .collect()
}

/// CPU time of the calling thread.
fn thread_cpu_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Criterion measurement: thread CPU time.
struct ThreadCpu;

impl Measurement for ThreadCpu {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu_now()
    }

    fn end(&self, start: Duration) -> Duration {
        thread_cpu_now().saturating_sub(start)
    }

    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }

    fn zero(&self) -> Duration {
        Duration::ZERO
    }

    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        &NanosFormatter
    }
}

/// Formats nanoseconds as ns/µs/ms.
struct NanosFormatter;

impl ValueFormatter for NanosFormatter {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = if typical < 1e3 {
            (1.0, "ns")
        } else if typical < 1e6 {
            (1e-3, "µs")
        } else {
            (1e-6, "ms")
        };
        for v in values {
            *v *= factor;
        }
        unit
    }

    fn scale_throughputs(
        &self,
        _typical: f64,
        _t: &Throughput,
        _values: &mut [f64],
    ) -> &'static str {
        "ns"
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

type Bench = Criterion<ThreadCpu>;

fn bench_codec(c: &mut Bench, name: &str, mut codec: Box<dyn AudioCodec>) {
    let frame = codec.frame_samples();
    let pcm = speechlike(codec.sample_rate(), 2);
    let frames: Vec<&[i16]> = pcm.chunks_exact(frame).collect();
    let mut payloads = Vec::new();
    let mut out = vec![0u8; MAX_PAYLOAD_BYTES];
    for f in &frames {
        let n = codec.encode(f, &mut out);
        payloads.push(out[..n].to_vec());
    }
    let mut i = 0;
    c.bench_function(&format!("encode/{name}"), |b| {
        b.iter(|| {
            i = (i + 1) % frames.len();
            black_box(codec.encode(black_box(frames[i]), &mut out))
        })
    });
    let mut decoded = vec![0i16; MAX_DECODED_SAMPLES];
    let mut i = 0;
    c.bench_function(&format!("decode/{name}"), |b| {
        b.iter(|| {
            i = (i + 1) % payloads.len();
            black_box(codec.decode(black_box(&payloads[i]), &mut decoded))
        })
    });
    if name.starts_with("opus") {
        // A decode then a concealment: one loss after good packets (repeated
        // concealments alone would measure the long-loss fade-out instead).
        let mut i = 0;
        c.bench_function(&format!("decode+conceal/{name}"), |b| {
            b.iter(|| {
                i = (i + 1) % payloads.len();
                codec.decode(&payloads[i], &mut decoded);
                black_box(codec.conceal(&mut decoded))
            })
        });
        let mut i = 0;
        c.bench_function(&format!("decode_fec/{name}"), |b| {
            b.iter(|| {
                i = (i + 1) % payloads.len();
                black_box(codec.decode_fec(black_box(&payloads[i]), &mut decoded))
            })
        });
    }
}

fn bench_resampler(c: &mut Bench, from: u32, to: u32) {
    let mut r = Resampler::new(from, to).unwrap();
    let pcm = speechlike(from, 1);
    let frames: Vec<&[i16]> = pcm.chunks_exact(from as usize / 50).collect();
    let mut out = vec![0i16; r.max_output(from as usize / 50)];
    let mut i = 0;
    c.bench_function(&format!("resample/{}k-{}k", from / 1000, to / 1000), |b| {
        b.iter(|| {
            i = (i + 1) % frames.len();
            black_box(r.process(black_box(frames[i]), &mut out))
        })
    });
}

/// SRTP on one 20 ms PCMU packet (12 + 160 bytes): protect on one side, unprotect
/// on the other (a new sequence number each time: no replay).
fn bench_srtp(c: &mut Bench, name: &str, suite: Suite) {
    let (a, b) = (
        MasterKey::from_bytes([1; 30]),
        MasterKey::from_bytes([2; 30]),
    );
    let params = |local: &MasterKey, remote: &MasterKey| SrtpParams {
        suite,
        local: local.clone(),
        remote: remote.clone(),
    };
    let mut sender = SrtpStream::new(params(&a, &b)).unwrap();
    let mut receiver = SrtpStream::new(params(&b, &a)).unwrap();
    let mut packet = vec![0x80u8, 0, 0, 0, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef];
    packet.extend(std::iter::repeat_n(0x55u8, 160));
    let (mut wire, mut clear) = (Vec::new(), Vec::new());
    let mut seq = 0u16;
    c.bench_function(&format!("protect+unprotect/{name}"), |bench| {
        bench.iter(|| {
            seq = seq.wrapping_add(1);
            packet[2..4].copy_from_slice(&seq.to_be_bytes());
            packet[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
            sender.protect_rtp(black_box(&packet), &mut wire).unwrap();
            receiver
                .unprotect_rtp(black_box(&wire), &mut clear)
                .unwrap();
            black_box(clear.len())
        })
    });
}

/// `<target>/criterion`, where criterion writes its estimates.
fn criterion_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join("criterion");
    }
    // The bench runs as <target>/<profile>/deps/codecs-<hash>.
    std::env::current_exe()
        .ok()
        .and_then(|p| p.ancestors().nth(3).map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("criterion")
}

/// The median point estimate (ns) from a criterion `estimates.json`.
fn median_ns(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let rest = &text[text.find("\"median\"")?..];
    let rest = &rest[rest.find("\"point_estimate\":")? + "\"point_estimate\":".len()..];
    let end = rest.find([',', '}'])?;
    rest[..end].trim().parse().ok()
}

const NAMES: &[&str] = &[
    "encode/PCMU",
    "decode/PCMU",
    "encode/PCMA",
    "decode/PCMA",
    "encode/G722",
    "decode/G722",
    "encode/opus",
    "decode/opus",
    "decode+conceal/opus",
    "decode_fec/opus",
    "encode/opus16k",
    "decode/opus16k",
    "decode+conceal/opus16k",
    "decode_fec/opus16k",
    "resample/8k-48k",
    "resample/48k-8k",
    "resample/16k-48k",
    "resample/48k-16k",
    "resample/8k-16k",
    "resample/16k-8k",
    "protect+unprotect/SRTP_80",
    "protect+unprotect/SRTP_32",
];

fn main() {
    let dir = criterion_dir();
    let mut c = Criterion::default()
        .with_measurement(ThreadCpu)
        .output_directory(&dir)
        .configure_from_args();
    bench_codec(&mut c, "PCMU", Box::new(G711::ulaw()));
    bench_codec(&mut c, "PCMA", Box::new(G711::alaw()));
    bench_codec(&mut c, "G722", Box::new(G722::new()));
    bench_codec(
        &mut c,
        "opus",
        Box::new(Opus::new(OpusSettings::default()).expect("opus encoder")),
    );
    // What calls use: libopus at the 16 kHz audio bus's rate.
    bench_codec(
        &mut c,
        "opus16k",
        Box::new(Opus::with_rate(OpusSettings::default(), 16_000).expect("opus encoder")),
    );
    for (from, to) in [
        (8000, 48000),
        (48000, 8000),
        (16000, 48000),
        (48000, 16000),
        (8000, 16000),
        (16000, 8000),
    ] {
        bench_resampler(&mut c, from, to);
    }
    bench_srtp(&mut c, "SRTP_80", Suite::AesCm128HmacSha1_80);
    bench_srtp(&mut c, "SRTP_32", Suite::AesCm128HmacSha1_32);
    c.final_summary();

    println!("\nmedian time per 20 ms frame (share of one core for one stream):");
    for name in NAMES {
        // criterion names the folder after the id, `/` turned into `_`.
        let file = dir
            .join(name.replace('/', "_"))
            .join("new")
            .join("estimates.json");
        if let Some(ns) = median_ns(&file) {
            println!(
                "  {name:<18} {:>9.2} µs  ({:.3} %)",
                ns / 1000.0,
                ns / 20_000_000.0 * 100.0
            );
        }
    }
}
