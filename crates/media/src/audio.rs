//! Headless audio devices: where a call's sound comes from and goes to when there is
//! no sound card.
//!
//! This module owns the device names of the ini (`file:PATH.wav`, `tone:FREQ`,
//! `null`), the [`AudioSource`] / [`AudioSink`] traits the engine reads 20 ms frames
//! from and writes decoded audio to, and their file, tone and null implementations.
//! Everything here runs on the phone's internal audio bus: 16 kHz mono 16-bit, 20 ms
//! frames of 320 samples ([`SAMPLE_RATE`], [`FRAME_SAMPLES`]); the media engine
//! converts between the bus and each call's codec. Sound cards come later behind the
//! same traits.
//!
//! A file source is read, mixed to mono and resampled when it is opened (on the
//! caller's thread, so the media thread never waits on the disk to play it), and the
//! decoded audio is shared between all calls playing the same unchanged file.

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Instant, SystemTime};

use crate::device::{DeviceName, DeviceSink, DeviceSource};
use crate::g711;
use crate::resample::Resampler as FirResampler;

/// The internal audio bus's rate: every source gives and every sink takes audio at
/// this rate (G.711 calls are resampled to and from it, G.722 and Opus run at it).
pub const SAMPLE_RATE: u32 = 16_000;
/// Samples in one 20 ms frame of the bus.
pub const FRAME_SAMPLES: usize = SAMPLE_RATE as usize / 50;
/// Longest file a file source accepts, in seconds (it is held decoded in memory).
pub(crate) const MAX_FILE_SECONDS: u32 = 600;
/// Tone amplitude: half of full scale, -6 dBFS.
pub(crate) const TONE_AMPLITUDE: f64 = 16384.0;

/// An audio device as named in the ini's device keys.
#[derive(Debug, Clone, PartialEq)]
pub enum AudioSpec {
    /// `file:PATH.wav`: play this WAV (looping) as a source; write what is heard as a sink.
    File(PathBuf),
    /// `tone:FREQ`: a sine of FREQ Hz at -6 dBFS (source only).
    Tone(f32),
    /// `null` (or empty): silence as a source; discard as a sink.
    Null,
    /// A sound device: `default`, `pulse:NAME`, `alsa:NAME`, or a device's name or id
    /// (see [`crate::device`]).
    Device(DeviceName),
}

impl AudioSpec {
    /// Reads a device name: `file:PATH`, `tone:FREQ`, `null` or `""` (headless),
    /// else a sound device (`default`, `pulse:NAME`, `alsa:NAME`, a name or id),
    /// looked up only when opened.
    pub fn parse(text: &str) -> Result<AudioSpec, AudioError> {
        let t = text.trim();
        if t.is_empty() || t.eq_ignore_ascii_case("null") {
            return Ok(AudioSpec::Null);
        }
        if let Some((scheme, rest)) = t.split_once(':') {
            if scheme.eq_ignore_ascii_case("file") {
                if rest.trim().is_empty() {
                    return Err(AudioError::UnknownDevice(text.to_string()));
                }
                return Ok(AudioSpec::File(PathBuf::from(rest)));
            }
            if scheme.eq_ignore_ascii_case("tone") {
                return match rest.trim().parse::<f32>() {
                    Ok(f) if f.is_finite() && f > 0.0 && f < (SAMPLE_RATE / 2) as f32 => {
                        Ok(AudioSpec::Tone(f))
                    }
                    _ => Err(AudioError::BadTone(text.to_string())),
                };
            }
        }
        DeviceName::parse(t)
            .map(AudioSpec::Device)
            .ok_or_else(|| AudioError::UnknownDevice(text.to_string()))
    }

    /// Whether this is a sound device (not a file, tone or null).
    pub fn is_device(&self) -> bool {
        matches!(self, AudioSpec::Device(_))
    }
}

impl fmt::Display for AudioSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AudioSpec::File(p) => write!(f, "file:{}", p.display()),
            AudioSpec::Tone(hz) => write!(f, "tone:{hz}"),
            AudioSpec::Null => f.write_str("null"),
            AudioSpec::Device(d) => d.fmt(f),
        }
    }
}

/// Why a device could not be named, opened, read or written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioError {
    /// Not a device name this build knows.
    UnknownDevice(String),
    /// `tone:` with a frequency that is not a number between 0 and 8000 Hz (half
    /// the bus rate).
    BadTone(String),
    /// A source-only device (`tone:`) used as an output.
    NotAnOutput(String),
    /// A sound device could not be reached, opened or started.
    Device(String),
    /// A file could not be opened, read or written.
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl AudioError {
    fn file(path: &Path, message: impl fmt::Display) -> AudioError {
        AudioError::File {
            path: path.to_path_buf(),
            message: message.to_string(),
        }
    }
}

impl fmt::Display for AudioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AudioError::UnknownDevice(name) => {
                write!(
                    f,
                    "unknown audio device '{name}': use a device id from `devices`, \
                     default, file:PATH.wav, tone:FREQ or null"
                )
            }
            AudioError::BadTone(name) => {
                write!(
                    f,
                    "bad tone '{name}': use tone:FREQ with FREQ in Hz, above 0 and below {}",
                    SAMPLE_RATE / 2
                )
            }
            AudioError::NotAnOutput(name) => {
                write!(
                    f,
                    "'{name}' cannot be an audio output: use file:PATH.wav or null"
                )
            }
            AudioError::Device(message) => write!(f, "sound device {message}"),
            AudioError::File { path, message } => write!(f, "{}: {message}", path.display()),
        }
    }
}

impl std::error::Error for AudioError {}

/// Where a call's outgoing audio comes from. Never blocks.
pub trait AudioSource: Send {
    /// Fills `out` with the next 20 ms.
    fn read(&mut self, out: &mut [i16; FRAME_SAMPLES]);
}

/// Where a call's incoming audio goes. Never panics.
pub trait AudioSink: Send {
    /// Takes decoded samples (any length). The first failure is returned once; after
    /// that the sink discards everything and returns `Ok`.
    fn write(&mut self, frame: &[i16]) -> Result<(), AudioError>;
    /// Finishes the output (for a file: the final header). Idempotent.
    fn close(&mut self) -> Result<(), AudioError>;
    /// Whether the sink throws away whatever it is given (`null`): then the engine
    /// need not prepare the audio for it.
    fn discards(&self) -> bool {
        false
    }
}

/// Opens `spec` as a source. A file is read now: a missing or unreadable file is an
/// error here, not later.
pub fn open_source(spec: &AudioSpec) -> Result<Box<dyn AudioSource>, AudioError> {
    Ok(match spec {
        AudioSpec::File(path) => Box::new(FileSource::open(path)?),
        AudioSpec::Tone(hz) => Box::new(ToneSource::new(*hz)),
        AudioSpec::Null => Box::new(NullSource),
        AudioSpec::Device(d) => Box::new(DeviceSource::open(d)?),
    })
}

/// Opens `spec` as a sink. A file is created (or truncated) now.
pub(crate) fn open_sink(spec: &AudioSpec) -> Result<Box<dyn AudioSink>, AudioError> {
    Ok(match spec {
        AudioSpec::File(path) => Box::new(FileSink::create(path)?),
        AudioSpec::Tone(_) => return Err(AudioError::NotAnOutput(spec.to_string())),
        AudioSpec::Null => Box::new(NullSink),
        AudioSpec::Device(d) => Box::new(DeviceSink::open(d)?),
    })
}

/// Silence.
#[derive(Debug, Default)]
pub struct NullSource;

impl AudioSource for NullSource {
    fn read(&mut self, out: &mut [i16; FRAME_SAMPLES]) {
        out.fill(0);
    }
}

/// Discards everything.
#[derive(Debug, Default)]
pub(crate) struct NullSink;

impl AudioSink for NullSink {
    fn write(&mut self, _frame: &[i16]) -> Result<(), AudioError> {
        Ok(())
    }
    fn close(&mut self) -> Result<(), AudioError> {
        Ok(())
    }
    fn discards(&self) -> bool {
        true
    }
}

/// A sine wave at -6 dBFS whose phase runs on across frames.
#[derive(Debug)]
pub struct ToneSource {
    phase: f64,
    step: f64,
}

impl ToneSource {
    /// A tone of `hz` Hz.
    pub fn new(hz: f32) -> ToneSource {
        ToneSource {
            phase: 0.0,
            step: std::f64::consts::TAU * f64::from(hz) / f64::from(SAMPLE_RATE),
        }
    }
}

impl AudioSource for ToneSource {
    fn read(&mut self, out: &mut [i16; FRAME_SAMPLES]) {
        for s in out.iter_mut() {
            *s = (self.phase.sin() * TONE_AMPLITUDE) as i16;
            self.phase += self.step;
            if self.phase >= std::f64::consts::TAU {
                self.phase -= std::f64::consts::TAU;
            }
        }
    }
}

/// Plays a WAV file, looping at its end.
#[derive(Debug)]
pub(crate) struct FileSource {
    samples: Arc<[i16]>,
    position: usize,
}

impl FileSource {
    /// Loads `path` (any rate, any channel count; 8/16/24/32-bit PCM, 32-bit float,
    /// µ-law or A-law) as bus-rate (16 kHz) mono.
    pub fn open(path: &Path) -> Result<FileSource, AudioError> {
        Ok(FileSource {
            samples: load_shared(path)?,
            position: 0,
        })
    }

    /// The decoded audio (16 kHz mono).
    pub fn samples(&self) -> &[i16] {
        &self.samples
    }
}

impl AudioSource for FileSource {
    fn read(&mut self, out: &mut [i16; FRAME_SAMPLES]) {
        let len = self.samples.len();
        if len == 0 {
            out.fill(0);
            return;
        }
        let mut filled = 0;
        while filled < FRAME_SAMPLES {
            if self.position >= len {
                self.position = 0;
            }
            let n = (FRAME_SAMPLES - filled).min(len - self.position);
            out[filled..filled + n]
                .copy_from_slice(&self.samples[self.position..self.position + n]);
            filled += n;
            self.position += n;
        }
    }
}

struct CacheEntry {
    path: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
    samples: Weak<[i16]>,
}

static CACHE: Mutex<Vec<CacheEntry>> = Mutex::new(Vec::new());

/// Loads a file once for all the calls playing it at the same time.
fn load_shared(path: &Path) -> Result<Arc<[i16]>, AudioError> {
    let meta = std::fs::metadata(path).map_err(|e| AudioError::file(path, e))?;
    if !meta.is_file() {
        return Err(AudioError::file(path, "not a file"));
    }
    let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let modified = meta.modified().ok();
    {
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|e| e.samples.strong_count() > 0);
        if let Some(hit) = cache
            .iter()
            .find(|e| e.path == key && e.len == meta.len() && e.modified == modified)
            .and_then(|e| e.samples.upgrade())
        {
            return Ok(hit);
        }
    }
    let samples: Arc<[i16]> = load_wav(path)?.into();
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    cache.push(CacheEntry {
        path: key,
        len: meta.len(),
        modified,
        samples: Arc::downgrade(&samples),
    });
    Ok(samples)
}

/// What the `fmt ` chunk says, read by us (hound does not know G.711 WAVs).
struct FmtInfo {
    format_tag: u16,
    channels: u16,
    sample_rate: u32,
    data_offset: u64,
    data_len: u64,
}

const WAVE_FORMAT_ALAW: u16 = 6;
const WAVE_FORMAT_MULAW: u16 = 7;

fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Walks the RIFF chunks up to `data`. `None` when the file is not a RIFF/WAVE file
/// or has no `fmt ` before `data`.
fn read_fmt<R: Read + Seek>(r: &mut R) -> io::Result<Option<FmtInfo>> {
    let mut head = [0u8; 12];
    r.read_exact(&mut head)?;
    if &head[0..4] != b"RIFF" || &head[8..12] != b"WAVE" {
        return Ok(None);
    }
    let mut fmt: Option<(u16, u16, u32)> = None;
    let mut pos: u64 = 12;
    loop {
        let mut ch = [0u8; 8];
        if r.read_exact(&mut ch).is_err() {
            return Ok(None);
        }
        pos += 8;
        let size = u64::from(u32::from_le_bytes([ch[4], ch[5], ch[6], ch[7]]));
        let padded = size + (size & 1);
        if &ch[0..4] == b"fmt " {
            let mut body = [0u8; 16];
            if size < 16 {
                return Ok(None);
            }
            r.read_exact(&mut body)?;
            fmt = match (read_u16(&body, 0), read_u16(&body, 2), read_u32(&body, 4)) {
                (Some(t), Some(c), Some(s)) => Some((t, c, s)),
                _ => None,
            };
            r.seek(SeekFrom::Current((padded - 16) as i64))?;
        } else if &ch[0..4] == b"data" {
            return Ok(fmt.map(|(format_tag, channels, sample_rate)| FmtInfo {
                format_tag,
                channels,
                sample_rate,
                data_offset: pos,
                data_len: size,
            }));
        } else {
            r.seek(SeekFrom::Current(padded as i64))?;
        }
        pos += padded;
    }
}

fn check_shape(path: &Path, channels: u16, rate: u32, frames: u64) -> Result<(), AudioError> {
    if channels == 0 {
        return Err(AudioError::file(path, "WAV file with no channels"));
    }
    if !(1000..=384_000).contains(&rate) {
        return Err(AudioError::file(
            path,
            format!("unsupported sample rate {rate} Hz"),
        ));
    }
    if frames / u64::from(rate) > u64::from(MAX_FILE_SECONDS) {
        return Err(AudioError::file(
            path,
            format!(
                "audio file too long ({} s): at most {MAX_FILE_SECONDS} s can be played",
                frames / u64::from(rate)
            ),
        ));
    }
    Ok(())
}

/// Reads a WAV file into mono samples at the bus rate ([`SAMPLE_RATE`]).
pub(crate) fn load_wav(path: &Path) -> Result<Vec<i16>, AudioError> {
    let file = File::open(path).map_err(|e| AudioError::file(path, e))?;
    let mut reader = BufReader::new(file);
    let info = read_fmt(&mut reader)
        .map_err(|e| AudioError::file(path, format!("not a readable WAV file ({e})")))?;
    let out = match info {
        Some(info)
            if info.format_tag == WAVE_FORMAT_ALAW || info.format_tag == WAVE_FORMAT_MULAW =>
        {
            load_g711(path, &mut reader, &info)?
        }
        _ => {
            reader
                .seek(SeekFrom::Start(0))
                .map_err(|e| AudioError::file(path, e))?;
            load_pcm(path, reader)?
        }
    };
    if out.is_empty() {
        return Err(AudioError::file(path, "WAV file holds no audio"));
    }
    Ok(out)
}

fn load_g711<R: Read + Seek>(
    path: &Path,
    r: &mut R,
    info: &FmtInfo,
) -> Result<Vec<i16>, AudioError> {
    let channels = info.channels;
    // A header written before the length was known may claim 0 or 4 GiB: trust the
    // file's real size over it.
    let file_len = r
        .seek(SeekFrom::End(0))
        .map_err(|e| AudioError::file(path, e))?;
    let available = file_len.saturating_sub(info.data_offset);
    let data_len = if info.data_len == 0 || info.data_len > available {
        available
    } else {
        info.data_len
    };
    check_shape(
        path,
        channels,
        info.sample_rate,
        data_len / u64::from(channels.max(1)),
    )?;
    r.seek(SeekFrom::Start(info.data_offset))
        .map_err(|e| AudioError::file(path, e))?;
    let decode = if info.format_tag == WAVE_FORMAT_ALAW {
        g711::alaw_to_linear
    } else {
        g711::ulaw_to_linear
    };
    let mut mixer = Mixer::new(channels, info.sample_rate);
    let mut buf = [0u8; 4096];
    let mut left = data_len;
    while left > 0 {
        let want = (buf.len() as u64).min(left) as usize;
        let n = match r.read(&mut buf[..want]) {
            Ok(0) => break, // truncated file: play what is there
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(AudioError::file(path, e)),
        };
        for &b in &buf[..n] {
            mixer.push(f32::from(decode(b)));
        }
        left -= n as u64;
    }
    Ok(mixer.finish())
}

fn load_pcm(path: &Path, reader: BufReader<File>) -> Result<Vec<i16>, AudioError> {
    let mut wav = hound::WavReader::new(reader).map_err(|e| match e {
        hound::Error::Unsupported => AudioError::file(
            path,
            "unsupported WAV encoding: use 16-bit PCM, float, µ-law or A-law \
             (for example: sox in.wav -b 16 -e signed-integer out.wav)",
        ),
        e => AudioError::file(path, format!("not a readable WAV file ({e})")),
    })?;
    let spec = wav.spec();
    check_shape(
        path,
        spec.channels,
        spec.sample_rate,
        u64::from(wav.duration()),
    )?;
    let mut mixer = Mixer::new(spec.channels, spec.sample_rate);
    match spec.sample_format {
        hound::SampleFormat::Int => {
            if !(1..=32).contains(&spec.bits_per_sample) {
                return Err(AudioError::file(path, "unsupported bits per sample"));
            }
            let scale = 32768.0 / 2f64.powi(i32::from(spec.bits_per_sample) - 1);
            for s in wav.samples::<i32>() {
                match s {
                    Ok(v) => mixer.push((f64::from(v) * scale) as f32),
                    Err(e) => {
                        if mixer.is_empty() {
                            return Err(AudioError::file(path, e));
                        }
                        tracing::warn!(path = %path.display(), error = %e, "WAV file cut short; playing what was read");
                        break;
                    }
                }
            }
        }
        hound::SampleFormat::Float => {
            for s in wav.samples::<f32>() {
                match s {
                    Ok(v) => mixer.push(if v.is_finite() { v * 32767.0 } else { 0.0 }),
                    Err(e) => {
                        if mixer.is_empty() {
                            return Err(AudioError::file(path, e));
                        }
                        tracing::warn!(path = %path.display(), error = %e, "WAV file cut short; playing what was read");
                        break;
                    }
                }
            }
        }
    }
    Ok(mixer.finish())
}

/// Turns interleaved samples of any channel count and rate into bus-rate mono: the
/// channels are averaged, then [`crate::resample::Resampler`] (a windowed-sinc
/// filter) converts the rate, its delay taken off so the file starts on time. A
/// rate whose ratio to the bus is too fine for it (not 8/16/44.1/48 kHz or the
/// like) falls back to a moving average and linear interpolation.
struct Mixer {
    channels: u16,
    channel: u16,
    frame_sum: f32,
    convert: Convert,
    out: Vec<i16>,
    /// Mono input samples seen.
    count: u64,
}

/// How a [`Mixer`] converts the rate.
enum Convert {
    /// Input collected in `pending` and converted in blocks; the first `skip`
    /// output samples (the filter's delay) are dropped.
    Sinc {
        resampler: FirResampler,
        pending: Vec<i16>,
        block: Vec<i16>,
        skip: usize,
    },
    Linear(LinearResampler),
}

/// Mono samples converted at once by [`Convert::Sinc`].
const MIX_BLOCK: usize = 4096;

impl Mixer {
    fn new(channels: u16, rate: u32) -> Mixer {
        let convert = match FirResampler::new(rate, SAMPLE_RATE) {
            Ok(resampler) => {
                let block = vec![0; resampler.max_output(MIX_BLOCK)];
                Convert::Sinc {
                    skip: resampler.delay().round() as usize,
                    resampler,
                    pending: Vec::with_capacity(MIX_BLOCK),
                    block,
                }
            }
            Err(_) => Convert::Linear(LinearResampler::new(rate)),
        };
        Mixer {
            channels: channels.max(1),
            channel: 0,
            frame_sum: 0.0,
            convert,
            out: Vec::new(),
            count: 0,
        }
    }

    fn push(&mut self, sample: f32) {
        self.frame_sum += sample;
        self.channel += 1;
        if self.channel == self.channels {
            let mono = self.frame_sum / f32::from(self.channels);
            self.channel = 0;
            self.frame_sum = 0.0;
            self.count += 1;
            match &mut self.convert {
                Convert::Sinc { pending, .. } => {
                    pending.push(mono.round().clamp(-32768.0, 32767.0) as i16);
                    if pending.len() >= MIX_BLOCK {
                        self.flush();
                    }
                }
                Convert::Linear(r) => r.push(mono, &mut self.out),
            }
        }
    }

    /// Converts the pending input.
    fn flush(&mut self) {
        if let Convert::Sinc {
            resampler,
            pending,
            block,
            skip,
        } = &mut self.convert
        {
            let n = resampler.process(pending, block);
            pending.clear();
            let drop = (*skip).min(n);
            *skip -= drop;
            self.out.extend_from_slice(&block[drop..n]);
        }
    }

    fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn finish(mut self) -> Vec<i16> {
        let from = match &mut self.convert {
            Convert::Sinc {
                resampler, pending, ..
            } => {
                // Push the filter's tail out with silence.
                let from = resampler.from_rate();
                let tail = (resampler.delay() * f64::from(from) / f64::from(SAMPLE_RATE)).ceil();
                pending.resize(pending.len() + tail as usize + 2, 0);
                from
            }
            Convert::Linear(_) => return self.out,
        };
        self.flush();
        // As long as the input lasts, at the bus rate.
        let len = (self.count * u64::from(SAMPLE_RATE)).div_ceil(u64::from(from));
        self.out.truncate(len as usize);
        self.out
    }
}

/// The fallback converter: a moving average of about one output period (a cheap
/// anti-alias filter when the rate drops by 2× or more), then linear interpolation.
struct LinearResampler {
    /// Input samples per output sample.
    step: f64,
    /// Position (in input samples) of the next output sample.
    next: f64,
    /// Input samples seen.
    count: u64,
    prev: f32,
    window: Vec<f32>,
    window_sum: f32,
    window_at: usize,
}

impl LinearResampler {
    fn new(rate: u32) -> LinearResampler {
        let step = f64::from(rate) / f64::from(SAMPLE_RATE);
        let width = if step >= 2.0 {
            step.floor() as usize
        } else {
            1
        };
        LinearResampler {
            step,
            next: 0.0,
            count: 0,
            prev: 0.0,
            window: vec![0.0; width.max(1)],
            window_sum: 0.0,
            window_at: 0,
        }
    }

    fn push(&mut self, x: f32, out: &mut Vec<i16>) {
        let x = if self.window.len() > 1 {
            self.window_sum += x - self.window[self.window_at];
            self.window[self.window_at] = x;
            self.window_at = (self.window_at + 1) % self.window.len();
            let filled = (self.count as usize + 1).min(self.window.len());
            self.window_sum / filled as f32
        } else {
            x
        };
        if self.count == 0 {
            self.prev = x;
        }
        let here = self.count as f64;
        while self.next <= here {
            let frac = (self.next - (here - 1.0)).clamp(0.0, 1.0) as f32;
            let y = self.prev + (x - self.prev) * frac;
            out.push(y.round().clamp(-32768.0, 32767.0) as i16);
            self.next += self.step;
        }
        self.prev = x;
        self.count += 1;
    }
}

/// Writes what is heard to a 16 kHz (bus rate) mono 16-bit WAV file. The header is brought up to
/// date at least once a second while audio arrives, so a killed phone leaves a
/// readable file.
pub(crate) struct FileSink<W: Write + Seek = BufWriter<File>> {
    path: PathBuf,
    writer: Option<hound::WavWriter<W>>,
    failed: bool,
    last_flush: Instant,
}

const SINK_SPEC: hound::WavSpec = hound::WavSpec {
    channels: 1,
    sample_rate: SAMPLE_RATE,
    bits_per_sample: 16,
    sample_format: hound::SampleFormat::Int,
};

impl FileSink {
    /// Creates (or truncates) `path`.
    pub fn create(path: &Path) -> Result<FileSink, AudioError> {
        let file = File::create(path).map_err(|e| AudioError::file(path, e))?;
        FileSink::new(path, BufWriter::new(file))
    }
}

impl<W: Write + Seek> FileSink<W> {
    /// A sink writing to `out`; `path` names it in messages.
    pub fn new(path: &Path, out: W) -> Result<FileSink<W>, AudioError> {
        let mut writer =
            hound::WavWriter::new(out, SINK_SPEC).map_err(|e| AudioError::file(path, e))?;
        // Put a valid (empty) header on disk right away.
        writer.flush().map_err(|e| AudioError::file(path, e))?;
        Ok(FileSink {
            path: path.to_path_buf(),
            writer: Some(writer),
            failed: false,
            last_flush: Instant::now(),
        })
    }

    fn fail(&mut self, e: hound::Error) -> Result<(), AudioError> {
        self.failed = true;
        // Dropping the writer tries a last header update and releases the file.
        self.writer = None;
        Err(AudioError::file(&self.path, format!("cannot write: {e}")))
    }
}

impl<W: Write + Seek + Send> AudioSink for FileSink<W> {
    fn write(&mut self, frame: &[i16]) -> Result<(), AudioError> {
        if self.failed {
            return Ok(());
        }
        let Some(writer) = self.writer.as_mut() else {
            return Ok(());
        };
        for &s in frame {
            if let Err(e) = writer.write_sample(s) {
                return self.fail(e);
            }
        }
        if self.last_flush.elapsed().as_millis() >= 1000 {
            self.last_flush = Instant::now();
            if let Err(e) = writer.flush() {
                return self.fail(e);
            }
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), AudioError> {
        match self.writer.take() {
            Some(w) => w.finalize().map_err(|e| {
                self.failed = true;
                AudioError::file(&self.path, format!("cannot write: {e}"))
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use microsip_test_support::{dominant, goertzel, TempDir};

    fn write_wav(path: &Path, rate: u32, channels: u16, samples: &[i16]) {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for &s in samples {
            w.write_sample(s).unwrap();
        }
        w.finalize().unwrap();
    }

    #[test]
    fn parse_specs() {
        assert_eq!(AudioSpec::parse("").unwrap(), AudioSpec::Null);
        assert_eq!(AudioSpec::parse(" NULL ").unwrap(), AudioSpec::Null);
        assert_eq!(
            AudioSpec::parse("tone:440").unwrap(),
            AudioSpec::Tone(440.0)
        );
        assert_eq!(
            AudioSpec::parse("tone:1000.5").unwrap(),
            AudioSpec::Tone(1000.5)
        );
        assert_eq!(
            AudioSpec::parse("file:/x.wav").unwrap(),
            AudioSpec::File(PathBuf::from("/x.wav"))
        );
        assert_eq!(
            AudioSpec::parse("file:rel dir/a.wav").unwrap(),
            AudioSpec::File(PathBuf::from("rel dir/a.wav"))
        );
        let d = AudioSpec::parse("Speakers (Realtek)").unwrap();
        assert!(d.is_device());
        assert_eq!(d.to_string(), "Speakers (Realtek)");
        assert_eq!(AudioSpec::parse("default").unwrap().to_string(), "default");
        assert_eq!(
            AudioSpec::parse("pulse:sink.monitor").unwrap().to_string(),
            "pulse:sink.monitor"
        );
        assert!(matches!(
            AudioSpec::parse("file:"),
            Err(AudioError::UnknownDevice(_))
        ));
        for bad in [
            "tone:",
            "tone:x",
            "tone:0",
            "tone:-5",
            "tone:8000",
            "tone:NaN",
            "tone:inf",
        ] {
            assert!(
                matches!(AudioSpec::parse(bad), Err(AudioError::BadTone(_))),
                "{bad}"
            );
        }
        assert_eq!(
            AudioSpec::parse("tone:440").unwrap().to_string(),
            "tone:440"
        );
        assert!(matches!(
            open_sink(&AudioSpec::Tone(440.0)),
            Err(AudioError::NotAnOutput(_))
        ));
    }

    #[test]
    fn tone_is_continuous_and_at_minus_6_dbfs() {
        let mut t = ToneSource::new(440.0);
        let mut all = Vec::new();
        let mut frame = [0i16; FRAME_SAMPLES];
        for _ in 0..50 {
            t.read(&mut frame);
            all.extend_from_slice(&frame);
        }
        let peak = all.iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!((16000..=16384).contains(&peak), "peak {peak}");
        assert_eq!(dominant(&all, SAMPLE_RATE), 440);
        // No jump at frame edges: consecutive samples differ by at most the max slope.
        let max_step =
            (TONE_AMPLITUDE * std::f64::consts::TAU * 440.0 / f64::from(SAMPLE_RATE)) as i32 + 2;
        for w in all.windows(2) {
            assert!((i32::from(w[1]) - i32::from(w[0])).abs() <= max_step);
        }
    }

    #[test]
    fn null_devices() {
        let mut s = open_source(&AudioSpec::Null).unwrap();
        let mut f = [7i16; FRAME_SAMPLES];
        s.read(&mut f);
        assert!(f.iter().all(|&x| x == 0));
        let mut k = open_sink(&AudioSpec::Null).unwrap();
        k.write(&f).unwrap();
        k.close().unwrap();
    }

    #[test]
    fn file_source_loops() {
        let tmp = TempDir::new("media-audio");
        let path = tmp.file("ramp.wav");
        // At the bus rate: played as it is.
        let ramp: Vec<i16> = (0..500).collect();
        write_wav(&path, SAMPLE_RATE, 1, &ramp);
        let mut s = FileSource::open(&path).unwrap();
        let mut f = [0i16; FRAME_SAMPLES];
        s.read(&mut f);
        assert_eq!(f[0], 0);
        assert_eq!(f[319], 319);
        s.read(&mut f);
        assert_eq!(f[0], 320);
        assert_eq!(f[179], 499);
        assert_eq!(f[180], 0);
        assert_eq!(f[319], 139);
    }

    #[test]
    fn file_source_resamples_and_mixes() {
        let tmp = TempDir::new("media-audio");
        // 44.1 kHz stereo with 440 Hz left and right, read as 16 kHz mono.
        let path = tmp.file("stereo.wav");
        let n = 44_100;
        let mut data = Vec::with_capacity(n * 2);
        for i in 0..n {
            let v = ((std::f64::consts::TAU * 440.0 * i as f64 / 44_100.0).sin() * 12000.0) as i16;
            data.push(v);
            data.push(v);
        }
        write_wav(&path, 44_100, 2, &data);
        let s = FileSource::open(&path).unwrap();
        let len = s.samples().len();
        assert!((15990..=16010).contains(&len), "{len} samples");
        assert_eq!(dominant(s.samples(), SAMPLE_RATE), 440);
        let peak = s.samples().iter().map(|v| v.unsigned_abs()).max().unwrap();
        assert!((11000..=12100).contains(&peak), "peak {peak}");
        // The filter's delay is taken off: the sine starts at once.
        assert!(s.samples()[..8].iter().any(|v| v.unsigned_abs() > 500));

        // 8 kHz mono (G.711 prompts): twice as many samples, the tone kept, no
        // image of it above 4 kHz.
        let path = tmp.file("narrow.wav");
        let mono: Vec<i16> = (0..8000)
            .map(|i| {
                ((std::f64::consts::TAU * 1000.0 * f64::from(i) / 8000.0).sin() * 8000.0) as i16
            })
            .collect();
        write_wav(&path, 8000, 1, &mono);
        let s = FileSource::open(&path).unwrap();
        assert_eq!(s.samples().len(), 16_000);
        assert_eq!(dominant(s.samples(), SAMPLE_RATE), 1000);
        let mid = &s.samples()[1000..15_000];
        assert!(goertzel(mid, 1000.0, SAMPLE_RATE) > 10_000.0 * goertzel(mid, 7000.0, SAMPLE_RATE));

        // 16 kHz mono.
        let path = tmp.file("wide.wav");
        let mono: Vec<i16> = (0..16_000)
            .map(|i| {
                ((std::f64::consts::TAU * 1000.0 * f64::from(i) / 16_000.0).sin() * 8000.0) as i16
            })
            .collect();
        write_wav(&path, 16_000, 1, &mono);
        let s = FileSource::open(&path).unwrap();
        assert_eq!(dominant(s.samples(), SAMPLE_RATE), 1000);
    }

    #[test]
    fn file_source_reads_float_and_g711() {
        let tmp = TempDir::new("media-audio");
        let path = tmp.file("float.wav");
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 8000,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let mut w = hound::WavWriter::create(&path, spec).unwrap();
        for i in 0..8000 {
            w.write_sample((std::f32::consts::TAU * 300.0 * i as f32 / 8000.0).sin() * 0.5)
                .unwrap();
        }
        w.finalize().unwrap();
        assert_eq!(
            dominant(FileSource::open(&path).unwrap().samples(), SAMPLE_RATE),
            300
        );

        // µ-law and A-law WAVs, written by hand (format tags 7 and 6), with a LIST
        // chunk before fmt to exercise the chunk walk.
        for (tag, enc) in [
            (7u16, g711::linear_to_ulaw as fn(i16) -> u8),
            (6, g711::linear_to_alaw),
        ] {
            let data: Vec<u8> = (0..8000)
                .map(|i| {
                    enc(
                        ((std::f64::consts::TAU * 700.0 * f64::from(i) / 8000.0).sin() * 10000.0)
                            as i16,
                    )
                })
                .collect();
            let mut f = Vec::new();
            f.extend_from_slice(b"RIFF");
            f.extend_from_slice(&(4 + 8 + 3 + 1 + 8 + 18 + 8 + data.len() as u32).to_le_bytes());
            f.extend_from_slice(b"WAVELIST");
            f.extend_from_slice(&3u32.to_le_bytes());
            f.extend_from_slice(b"abc\0");
            f.extend_from_slice(b"fmt ");
            f.extend_from_slice(&18u32.to_le_bytes());
            f.extend_from_slice(&tag.to_le_bytes());
            f.extend_from_slice(&1u16.to_le_bytes());
            f.extend_from_slice(&8000u32.to_le_bytes());
            f.extend_from_slice(&8000u32.to_le_bytes());
            f.extend_from_slice(&1u16.to_le_bytes());
            f.extend_from_slice(&8u16.to_le_bytes());
            f.extend_from_slice(&0u16.to_le_bytes());
            f.extend_from_slice(b"data");
            f.extend_from_slice(&(data.len() as u32).to_le_bytes());
            f.extend_from_slice(&data);
            let path = tmp.file("g711.wav");
            std::fs::write(&path, &f).unwrap();
            let s = FileSource::open(&path).unwrap();
            assert_eq!(s.samples().len(), 16_000);
            assert_eq!(dominant(s.samples(), SAMPLE_RATE), 700, "format tag {tag}");
        }
    }

    #[test]
    fn file_source_errors() {
        let tmp = TempDir::new("media-audio");
        let missing = tmp.file("missing.wav");
        let e = FileSource::open(&missing).unwrap_err();
        assert!(e.to_string().contains("missing.wav"), "{e}");
        let text = tmp.file("text.wav");
        std::fs::write(&text, "hello, not a wav").unwrap();
        let e = FileSource::open(&text).unwrap_err();
        assert!(e.to_string().contains("not a readable WAV file"), "{e}");
        let empty = tmp.file("empty.wav");
        write_wav(&empty, 8000, 1, &[]);
        assert!(FileSource::open(&empty)
            .unwrap_err()
            .to_string()
            .contains("no audio"));
        // ADPCM (tag 2) is refused with advice.
        let mut f = Vec::new();
        f.extend_from_slice(b"RIFF\x24\0\0\0WAVEfmt \x10\0\0\0");
        f.extend_from_slice(&2u16.to_le_bytes());
        f.extend_from_slice(&1u16.to_le_bytes());
        f.extend_from_slice(&8000u32.to_le_bytes());
        f.extend_from_slice(&8000u32.to_le_bytes());
        f.extend_from_slice(&1u16.to_le_bytes());
        f.extend_from_slice(&8u16.to_le_bytes());
        f.extend_from_slice(b"data\0\0\0\0");
        let adpcm = tmp.file("adpcm.wav");
        std::fs::write(&adpcm, &f).unwrap();
        let e = FileSource::open(&adpcm).unwrap_err();
        assert!(e.to_string().contains("unsupported WAV encoding"), "{e}");
        assert!(FileSource::open(&std::env::temp_dir()).is_err());
    }

    #[test]
    fn mangled_wav_files_never_panic() {
        let tmp = TempDir::new("media-audio");
        let path = tmp.file("good.wav");
        let data: Vec<i16> = (0..800).map(|i| (i * 37) as i16).collect();
        write_wav(&path, 16_000, 2, &data);
        let good = std::fs::read(&path).unwrap();
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let bad = tmp.file("bad.wav");
        for _ in 0..1500 {
            let mut b = good.clone();
            for _ in 0..(1 + next() % 4) {
                // Mostly the header, where the damage matters.
                let i = (next() % 60.min(b.len() as u64)) as usize;
                b[i] = next() as u8;
            }
            let cut = (next() % (b.len() as u64 + 1)) as usize;
            std::fs::write(&bad, &b[..cut]).unwrap();
            let _ = load_wav(&bad);
        }
    }

    #[test]
    fn file_sink_writes_a_readable_wav() {
        let tmp = TempDir::new("media-audio");
        let path = tmp.file("out.wav");
        let mut sink = FileSink::create(&path).unwrap();
        // Readable even before anything is written.
        assert_eq!(hound::WavReader::open(&path).unwrap().duration(), 0);
        let frame: Vec<i16> = (0..160).collect();
        sink.write(&frame).unwrap();
        sink.write(&frame).unwrap();
        sink.close().unwrap();
        sink.close().unwrap();
        sink.write(&frame).unwrap();
        let mut r = hound::WavReader::open(&path).unwrap();
        assert_eq!(r.spec().sample_rate, 16_000);
        assert_eq!(r.spec().channels, 1);
        let got: Vec<i16> = r.samples::<i16>().map(Result::unwrap).collect();
        assert_eq!(got.len(), 320);
        assert_eq!(&got[..160], &frame[..]);
    }

    #[test]
    fn file_sink_header_updates_while_writing() {
        let tmp = TempDir::new("media-audio");
        let path = tmp.file("live.wav");
        let mut sink = FileSink::create(&path).unwrap();
        sink.last_flush = Instant::now() - std::time::Duration::from_secs(2);
        sink.write(&[1i16; 160]).unwrap();
        // Not closed: the header on disk already counts the samples.
        let r = hound::WavReader::open(&path).unwrap();
        assert_eq!(r.duration(), 160);
        drop(sink);
    }

    /// A disk that fills up after `room` bytes.
    struct SmallDisk {
        data: io::Cursor<Vec<u8>>,
        room: u64,
    }

    impl Write for SmallDisk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.data.position() + buf.len() as u64 > self.room {
                return Err(io::Error::other("No space left on device"));
            }
            self.data.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Seek for SmallDisk {
        fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
            self.data.seek(pos)
        }
    }

    #[test]
    fn file_sink_reports_a_full_disk_once() {
        let tmp = TempDir::new("media-audio");
        let disk = SmallDisk {
            data: io::Cursor::new(Vec::new()),
            room: 3000,
        };
        let mut sink = FileSink::new(Path::new("small.wav"), disk).unwrap();
        let frame = [0i16; FRAME_SAMPLES];
        let mut errors = Vec::new();
        for i in 0..100 {
            if i == 50 {
                sink.last_flush = Instant::now() - std::time::Duration::from_secs(2);
            }
            if let Err(e) = sink.write(&frame) {
                errors.push(e.to_string());
            }
        }
        assert_eq!(
            errors,
            vec!["small.wav: cannot write: No space left on device"]
        );
        assert!(sink.close().is_ok());

        // Full from the start: the error comes at open.
        let disk = SmallDisk {
            data: io::Cursor::new(Vec::new()),
            room: 10,
        };
        assert!(FileSink::new(Path::new("tiny.wav"), disk).is_err());
        if Path::new("/dev/full").exists() {
            assert!(FileSink::create(Path::new("/dev/full")).is_err());
        }
        let cannot_create = tmp.file("x").join("no/such/dir/out.wav");
        assert!(FileSink::create(&cannot_create).is_err());
    }
}
