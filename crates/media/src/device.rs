//! Sound devices: microphones and speakers reached through `cpal`, behind the same
//! [`AudioSource`] / [`AudioSink`] traits as the headless devices.
//!
//! This module owns device names (`default`, a device name or id, `pulse:NAME`,
//! `alsa:NAME`), the device list of the `devices` command, and the [`Fifo`] between a
//! device's own callback thread and the media thread's 20 ms tick. The media clock
//! never waits on a device: a source that has nothing gives silence, a sink that is
//! full drops the oldest audio, and the fill level is kept between bounds so two
//! clocks that drift apart (a device running fast or slow) cost a dropped or a silent
//! stretch now and then, never a growing delay. Audio crosses the fifo as mono
//! 16-bit at the bus rate for sources (the device callback resamples) and at the
//! device rate for sinks (the media thread resamples), so each callback only copies.
//! A device error after opening is logged once; the call goes on with silence.
//!
//! Hosts: PulseAudio through cpal's native client (no libpulse; PipeWire answers it
//! through pipewire-pulse) when a PulseAudio server is reachable, else ALSA. Nothing
//! here runs, connects or starts a thread until a device spec names a sound device
//! or the device list is asked for.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Mutex, MutexGuard};

use crate::audio::{AudioError, AudioSink, AudioSource};

#[cfg(not(feature = "sound"))]
pub use silent::{check, list, DeviceSink, DeviceSource};
#[cfg(feature = "sound")]
pub use sound::{check, list, DeviceSink, DeviceSource};

/// Whether this machine looks like it has a sound system a call could use: a
/// PulseAudio (or PipeWire) server socket, or an ALSA playback device node. Cheap:
/// looks at the environment and a few paths, connects to nothing. Always false
/// without the `sound` feature.
pub fn sound_system_present() -> bool {
    if !cfg!(feature = "sound") {
        return false;
    }
    if std::env::var_os("PULSE_SERVER").is_some_and(|v| !v.is_empty()) {
        return true;
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        if std::path::Path::new(&dir).join("pulse/native").exists() {
            return true;
        }
    }
    std::fs::read_dir("/dev/snd")
        .map(|entries| {
            entries.flatten().any(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with("pcmC") && name.ends_with('p')
            })
        })
        .unwrap_or(false)
}

/// Length of the PulseAudio native protocol's authentication cookie.
const PULSE_COOKIE_LEN: usize = 256;

/// Makes sure a PulseAudio connection carries a cookie. The native protocol sends a
/// 256-byte cookie with every connection; cpal's client sends an empty one when the
/// user has no cookie file (`$PULSE_COOKIE`, `~/.config/pulse/cookie`,
/// `~/.pulse-cookie`; none exists on a fresh headless machine until libpulse makes
/// one), and PulseAudio then drops the connection as a protocol error. When none is
/// found, writes an anonymous (all-zero) cookie into `dir` (mode 0600) and points
/// `PULSE_COOKIE` at it: a server with anonymous auth accepts it, one that checks
/// cookies refuses it as it would refuse the empty one. Call once at start-up,
/// before any thread starts (it sets an environment variable).
pub fn prepare_pulse_cookie(dir: &std::path::Path) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if !cfg!(feature = "sound") {
        return Ok(());
    }
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let known = std::env::var_os("PULSE_COOKIE")
        .map(std::path::PathBuf::from)
        .into_iter()
        .chain(home.iter().map(|h| h.join(".config/pulse/cookie")))
        .chain(home.iter().map(|h| h.join(".pulse-cookie")));
    for path in known {
        if path.exists() {
            return Ok(());
        }
    }
    let path = dir.join("pulse-cookie");
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        file.write_all(&[0u8; PULSE_COOKIE_LEN])
    };
    write().map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    std::env::set_var("PULSE_COOKIE", &path);
    Ok(())
}

/// Fifo level the reader waits for before playing, in 20 ms frames.
const TARGET_FRAMES: usize = 3;
/// Frames above the target the level may reach before the oldest audio is dropped
/// back down to the target.
const SLACK_FRAMES: usize = 4;

/// Which sound system a device name is looked up in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// PulseAudio when its server is reachable, then ALSA.
    Any,
    /// `pulse:NAME`: PulseAudio only.
    Pulse,
    /// `alsa:NAME`: ALSA only.
    Alsa,
}

/// A sound device as named in the ini or by `setdevice`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceName {
    /// Where to look it up.
    pub backend: Backend,
    /// The device's id or name; `None` is the backend's default device.
    pub name: Option<String>,
}

impl DeviceName {
    /// Reads `default`, `pulse:NAME`, `pulseaudio:NAME`, `alsa:NAME` or a bare name.
    /// `None` for an empty text.
    pub fn parse(text: &str) -> Option<DeviceName> {
        let t = text.trim();
        if t.is_empty() {
            return None;
        }
        let (backend, rest) = match t.split_once(':') {
            Some((scheme, rest))
                if scheme.eq_ignore_ascii_case("pulse")
                    || scheme.eq_ignore_ascii_case("pulseaudio") =>
            {
                (Backend::Pulse, rest.trim())
            }
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("alsa") => {
                (Backend::Alsa, rest.trim())
            }
            _ => (Backend::Any, t),
        };
        let name = if rest.is_empty() || rest.eq_ignore_ascii_case("default") {
            None
        } else {
            Some(rest.to_string())
        };
        Some(DeviceName { backend, name })
    }
}

impl fmt::Display for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.name.as_deref().unwrap_or("default");
        match self.backend {
            Backend::Any => f.write_str(name),
            Backend::Pulse => write!(f, "pulse:{name}"),
            Backend::Alsa => write!(f, "alsa:{name}"),
        }
    }
}

/// One entry of the device list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Stable id, accepted by `setdevice` and the ini: `pulse:NAME` or `alsa:NAME`.
    pub id: String,
    /// What the sound system calls it.
    pub name: String,
    /// Can record.
    pub input: bool,
    /// Can play.
    pub output: bool,
    /// The default recording device of the preferred host.
    pub default_input: bool,
    /// The default playback device of the preferred host.
    pub default_output: bool,
}

impl DeviceInfo {
    /// Whether `spec` names this device (as id, bare id or name, any case for names).
    pub fn matches(&self, spec: &DeviceName, input: bool) -> bool {
        let Some(name) = spec.name.as_deref() else {
            return if input {
                self.default_input
            } else {
                self.default_output
            };
        };
        let backend_ok = match spec.backend {
            Backend::Any => true,
            Backend::Pulse => self.id.starts_with("pulse:"),
            Backend::Alsa => self.id.starts_with("alsa:"),
        };
        let bare = self.id.split_once(':').map_or(self.id.as_str(), |x| x.1);
        backend_ok && (self.id == name || bare == name || self.name.eq_ignore_ascii_case(name))
    }
}

// ---------------------------------------------------------------- the fifo

#[derive(Debug)]
struct FifoState {
    buf: VecDeque<i16>,
    /// Samples in 20 ms at the fifo's rate.
    frame: usize,
    /// Level the reader waits for after an underrun (and at the start).
    target: usize,
    /// Level above which the writer drops the oldest audio back to `target`.
    high: usize,
    primed: bool,
    underruns: u64,
    dropped: u64,
}

/// What a [`Fifo`] has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FifoStats {
    /// Samples waiting.
    pub level: usize,
    /// Reads that found too little and gave silence.
    pub underruns: u64,
    /// Samples dropped because the level went above its bound.
    pub dropped: u64,
}

/// A bounded, briefly locked queue of mono samples between a device callback and
/// the media tick. The reader gets silence until `target` samples wait (again after
/// each underrun); the writer drops the oldest samples down to `target` whenever the
/// level would pass `high`. So the level, and with it the delay, stays bounded
/// whichever side runs faster. Neither side ever waits for the other beyond the
/// copy under the lock.
#[derive(Debug)]
pub struct Fifo {
    state: Mutex<FifoState>,
}

impl Fifo {
    /// A fifo for a stream of `frame` samples per 20 ms.
    pub fn new(frame: usize) -> Fifo {
        let frame = frame.max(1);
        let target = TARGET_FRAMES * frame;
        let high = target + SLACK_FRAMES * frame;
        Fifo {
            state: Mutex::new(FifoState {
                buf: VecDeque::with_capacity(high + 2 * frame),
                frame,
                target,
                high,
                primed: false,
                underruns: 0,
                dropped: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FifoState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `samples`; drops the oldest audio back to the target level when the
    /// level would pass its bound.
    pub fn write(&self, samples: &[i16]) {
        let mut s = self.lock();
        s.buf.extend(samples.iter().copied());
        if s.buf.len() > s.high {
            let excess = s.buf.len() - s.target;
            s.buf.drain(..excess);
            s.dropped += excess as u64;
        }
    }

    /// Fills `out`; silence (and `false`) while the fifo is refilling after an
    /// underrun or at the start.
    pub fn read(&self, out: &mut [i16]) -> bool {
        let mut s = self.lock();
        // A reader taking more than the target at once (a device with big periods)
        // raises the bounds so it can ever be served.
        if out.len() + s.frame > s.target {
            s.target = out.len() + s.frame;
            s.high = s.target + SLACK_FRAMES * s.frame;
        }
        if !s.primed {
            if s.buf.len() < s.target {
                out.fill(0);
                return false;
            }
            s.primed = true;
        }
        if s.buf.len() < out.len() {
            s.primed = false;
            s.underruns += 1;
            out.fill(0);
            return false;
        }
        let n = out.len();
        for (o, v) in out.iter_mut().zip(s.buf.drain(..n)) {
            *o = v;
        }
        true
    }

    /// Level and counters.
    pub fn stats(&self) -> FifoStats {
        let s = self.lock();
        FifoStats {
            level: s.buf.len(),
            underruns: s.underruns,
            dropped: s.dropped,
        }
    }

    /// The current bound above which audio is dropped.
    pub fn high(&self) -> usize {
        self.lock().high
    }
}

/// The cpal side: hosts, the device list, and the streams.
#[cfg(feature = "sound")]
mod sound {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc};
    use std::thread;

    use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
    use cpal::{FromSample, SampleFormat, SizedSample, StreamConfig};

    use super::*;
    use crate::audio::{FRAME_SAMPLES, SAMPLE_RATE};
    use crate::resample::Resampler;

    fn device_error(what: &str, e: impl fmt::Display) -> AudioError {
        AudioError::Device(format!("{what}: {e}"))
    }

    fn prefix(host: cpal::HostId) -> &'static str {
        if host.name().eq_ignore_ascii_case("alsa") {
            "alsa"
        } else {
            "pulse"
        }
    }

    fn pulse_host() -> Option<cpal::HostId> {
        cpal::available_hosts()
            .into_iter()
            .find(|h| h.name().to_ascii_lowercase().starts_with("pulse"))
    }

    fn alsa_host() -> Option<cpal::HostId> {
        cpal::available_hosts()
            .into_iter()
            .find(|h| h.name().eq_ignore_ascii_case("alsa"))
    }

    /// The hosts to look in, preferred first. Connecting to PulseAudio is bounded (cpal
    /// gives up after 2 s).
    fn hosts(backend: Backend) -> Result<Vec<cpal::Host>, AudioError> {
        let mut out = Vec::new();
        let mut last_error = None;
        let wanted: Vec<cpal::HostId> = match backend {
            Backend::Pulse => pulse_host().into_iter().collect(),
            Backend::Alsa => alsa_host().into_iter().collect(),
            Backend::Any => pulse_host().into_iter().chain(alsa_host()).collect(),
        };
        for id in wanted {
            match cpal::host_from_id(id) {
                Ok(h) => out.push(h),
                Err(e) => last_error = Some(device_error(id.name(), e)),
            }
        }
        if out.is_empty() {
            return Err(last_error.unwrap_or_else(|| {
                AudioError::Device(match backend {
                    Backend::Pulse => "no PulseAudio server is reachable".to_string(),
                    _ => "no sound system is available".to_string(),
                })
            }));
        }
        Ok(out)
    }

    fn device_id(host: cpal::HostId, device: &cpal::Device) -> Option<String> {
        let id = device.id().ok()?;
        Some(format!("{}:{}", prefix(host), id.id()))
    }

    fn list_host(host: &cpal::Host, preferred: bool, out: &mut Vec<DeviceInfo>) {
        let hid = host.id();
        let default_in = host.default_input_device().and_then(|d| device_id(hid, &d));
        let default_out = host
            .default_output_device()
            .and_then(|d| device_id(hid, &d));
        let Ok(devices) = host.devices() else { return };
        for d in devices {
            let Some(id) = device_id(hid, &d) else {
                continue;
            };
            let name = d
                .description()
                .map(|x| x.name().to_string())
                .unwrap_or_else(|_| id.clone());
            let (input, output) = (d.supports_input(), d.supports_output());
            out.push(DeviceInfo {
                default_input: preferred && input && default_in.as_deref() == Some(id.as_str()),
                default_output: preferred && output && default_out.as_deref() == Some(id.as_str()),
                id,
                name,
                input,
                output,
            });
        }
    }

    /// Every sound device of every available host (PulseAudio first). Empty when there
    /// is no sound system at all.
    pub fn list() -> Vec<DeviceInfo> {
        let mut out = Vec::new();
        let Ok(hosts) = hosts(Backend::Any) else {
            return out;
        };
        for (i, h) in hosts.iter().enumerate() {
            list_host(h, i == 0, &mut out);
        }
        out
    }

    /// Finds the device `name` names, for recording (`input`) or playing.
    fn find(name: &DeviceName, input: bool) -> Result<(cpal::Device, String), AudioError> {
        let unknown = || AudioError::UnknownDevice(name.to_string());
        let hosts = hosts(name.backend)?;
        for host in &hosts {
            let hid = host.id();
            let Some(wanted) = name.name.as_deref() else {
                let d = if input {
                    host.default_input_device()
                } else {
                    host.default_output_device()
                };
                match d {
                    Some(d) => {
                        let id = device_id(hid, &d).unwrap_or_else(|| name.to_string());
                        return Ok((d, id));
                    }
                    None => continue,
                }
            };
            let Ok(devices) = host.devices() else {
                continue;
            };
            for d in devices {
                if (input && !d.supports_input()) || (!input && !d.supports_output()) {
                    continue;
                }
                let Some(id) = device_id(hid, &d) else {
                    continue;
                };
                let info = DeviceInfo {
                    id: id.clone(),
                    name: d
                        .description()
                        .map(|x| x.name().to_string())
                        .unwrap_or_default(),
                    input,
                    output: !input,
                    default_input: false,
                    default_output: false,
                };
                if info.matches(name, input) || id.eq_ignore_ascii_case(wanted) {
                    return Ok((d, id));
                }
            }
        }
        Err(unknown())
    }

    /// Checks that `name` names a device that can record (`input`) or play, without
    /// opening it.
    pub fn check(name: &DeviceName, input: bool) -> Result<String, AudioError> {
        find(name, input).map(|(_, id)| id)
    }

    // ---------------------------------------------------------------- streams

    /// Logs a device's first error after opening, and only that one.
    fn error_reporter(label: String) -> impl FnMut(cpal::Error) + Send + 'static {
        let reported = AtomicBool::new(false);
        move |e| {
            if !reported.swap(true, Ordering::Relaxed) {
                tracing::warn!(device = %label, error = %e, "sound device failed; the call goes on with silence there");
            }
        }
    }

    /// The device's own format and rate, in periods of 20 ms.
    fn stream_config(
        device: &cpal::Device,
        input: bool,
        id: &str,
    ) -> Result<(StreamConfig, SampleFormat), AudioError> {
        let supported = if input {
            device.default_input_config()
        } else {
            device.default_output_config()
        }
        .map_err(|e| device_error(id, e))?;
        let mut config = supported.config();
        config.buffer_size = cpal::BufferSize::Fixed((config.sample_rate / 50).max(1));
        Ok((config, supported.sample_format()))
    }

    /// Mono bus-rate audio of a device's input stream: downmixed and resampled in the
    /// callback.
    fn build_input<T>(
        device: &cpal::Device,
        config: &StreamConfig,
        fifo: Arc<Fifo>,
        id: &str,
    ) -> Result<cpal::Stream, AudioError>
    where
        T: SizedSample + Send + 'static,
        i16: FromSample<T>,
    {
        let channels = usize::from(config.channels.max(1));
        let mut resampler =
            Resampler::new(config.sample_rate, SAMPLE_RATE).map_err(|e| device_error(id, e))?;
        let period = (config.sample_rate / 50) as usize;
        let mut mono: Vec<i16> = Vec::with_capacity(period * 2);
        let mut out: Vec<i16> = Vec::with_capacity(resampler.max_output(period * 2));
        let data = move |data: &[T], _: &cpal::InputCallbackInfo| {
            mono.clear();
            mono.extend(data.chunks(channels).map(|frame| {
                let sum: i32 = frame.iter().map(|&s| i32::from(i16::from_sample_(s))).sum();
                (sum / frame.len().max(1) as i32) as i16
            }));
            let need = resampler.max_output(mono.len());
            if out.len() < need {
                out.resize(need, 0);
            }
            let n = resampler.process(&mono, &mut out);
            fifo.write(&out[..n]);
        };
        let build = |config: &StreamConfig| {
            device.build_input_stream::<T, _, _>(
                *config,
                data.clone(),
                error_reporter(id.to_string()),
                None,
            )
        };
        open_with_fallback(config, build, id)
    }

    /// A device's output stream playing the device-rate mono audio of `fifo` on every
    /// channel.
    fn build_output<T>(
        device: &cpal::Device,
        config: &StreamConfig,
        fifo: Arc<Fifo>,
        id: &str,
    ) -> Result<cpal::Stream, AudioError>
    where
        T: SizedSample + FromSample<i16> + Send + 'static,
    {
        let channels = usize::from(config.channels.max(1));
        let mut mono: Vec<i16> = Vec::with_capacity((config.sample_rate / 25) as usize);
        let data = move |data: &mut [T], _: &cpal::OutputCallbackInfo| {
            let frames = data.len() / channels;
            if mono.len() < frames {
                mono.resize(frames, 0);
            }
            fifo.read(&mut mono[..frames]);
            for (frame, &s) in data.chunks_mut(channels).zip(mono.iter()) {
                frame.fill(T::from_sample_(s));
            }
        };
        let build = |config: &StreamConfig| {
            device.build_output_stream::<T, _, _>(
                *config,
                data.clone(),
                error_reporter(id.to_string()),
                None,
            )
        };
        open_with_fallback(config, build, id)
    }

    /// Builds with 20 ms periods, else with the device's own, and starts the stream.
    fn open_with_fallback(
        config: &StreamConfig,
        build: impl Fn(&StreamConfig) -> Result<cpal::Stream, cpal::Error>,
        id: &str,
    ) -> Result<cpal::Stream, AudioError> {
        let stream = match build(config) {
            Ok(s) => s,
            Err(_) => {
                let mut any = *config;
                any.buffer_size = cpal::BufferSize::Default;
                build(&any).map_err(|e| device_error(id, e))?
            }
        };
        stream.play().map_err(|e| device_error(id, e))?;
        Ok(stream)
    }

    macro_rules! by_format {
    ($format:expr, $build:ident, $($arg:expr),*) => {
        match $format {
            SampleFormat::I16 => $build::<i16>($($arg),*),
            SampleFormat::I32 => $build::<i32>($($arg),*),
            SampleFormat::F32 => $build::<f32>($($arg),*),
            SampleFormat::F64 => $build::<f64>($($arg),*),
            SampleFormat::U8 => $build::<u8>($($arg),*),
            SampleFormat::U16 => $build::<u16>($($arg),*),
            // Anything else: ask for 16-bit (PulseAudio converts).
            _ => $build::<i16>($($arg),*),
        }
    };
}

    /// Holds a device's stream on a small thread of its own, which builds and starts
    /// it (PulseAudio answers a new recording only once the source delivers, up to
    /// seconds for an idle one) and stops it when the keeper is dropped. So neither
    /// opening nor closing a device ever makes the caller or the media thread wait.
    struct Keeper {
        _stop: mpsc::Sender<()>,
    }

    impl Keeper {
        fn start(
            id: &str,
            build: impl FnOnce() -> Result<cpal::Stream, AudioError> + Send + 'static,
        ) -> Result<Keeper, AudioError> {
            let (stop, stopped) = mpsc::channel::<()>();
            let label = id.to_string();
            thread::Builder::new()
            .name("sound-device".into())
            .stack_size(256 * 1024)
            .spawn(move || match build() {
                Ok(stream) => {
                    // Returns when the keeper (the only sender) is dropped.
                    let _ = stopped.recv();
                    drop(stream);
                }
                Err(e) => {
                    tracing::warn!(device = %label, error = %e, "sound device did not start; the call goes on with silence there");
                }
            })
            .map_err(|e| device_error(id, e))?;
            Ok(Keeper { _stop: stop })
        }
    }

    /// A microphone: what the device recorded, 20 ms per tick, silence when it has
    /// nothing.
    pub struct DeviceSource {
        id: String,
        fifo: Arc<Fifo>,
        _keeper: Keeper,
    }

    impl fmt::Debug for DeviceSource {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("DeviceSource")
                .field("id", &self.id)
                .finish()
        }
    }

    impl DeviceSource {
        /// Opens `name` for recording and starts it.
        pub fn open(name: &DeviceName) -> Result<DeviceSource, AudioError> {
            let (device, id) = find(name, true)?;
            let (config, format) = stream_config(&device, true, &id)?;
            let fifo = Arc::new(Fifo::new(FRAME_SAMPLES));
            Resampler::new(config.sample_rate, SAMPLE_RATE).map_err(|e| device_error(&id, e))?;
            tracing::info!(device = %id, rate = config.sample_rate, channels = config.channels, "sound input opening");
            let (f, i) = (fifo.clone(), id.clone());
            let keeper = Keeper::start(&id, move || {
                by_format!(format, build_input, &device, &config, f, &i)
            })?;
            Ok(DeviceSource {
                id,
                fifo,
                _keeper: keeper,
            })
        }

        /// The device's id.
        pub fn id(&self) -> &str {
            &self.id
        }

        /// The fifo's level and counters.
        pub fn stats(&self) -> FifoStats {
            self.fifo.stats()
        }
    }

    impl AudioSource for DeviceSource {
        fn read(&mut self, out: &mut [i16; FRAME_SAMPLES]) {
            self.fifo.read(out);
        }
    }

    /// A speaker: the media thread resamples to the device rate into the fifo the
    /// device callback plays from.
    pub struct DeviceSink {
        id: String,
        fifo: Arc<Fifo>,
        resampler: Resampler,
        scratch: Vec<i16>,
        keeper: Option<Keeper>,
    }

    impl fmt::Debug for DeviceSink {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("DeviceSink").field("id", &self.id).finish()
        }
    }

    impl DeviceSink {
        /// Opens `name` for playing and starts it (playing silence until fed).
        pub fn open(name: &DeviceName) -> Result<DeviceSink, AudioError> {
            let (device, id) = find(name, false)?;
            let (config, format) = stream_config(&device, false, &id)?;
            let resampler = Resampler::new(SAMPLE_RATE, config.sample_rate)
                .map_err(|e| device_error(&id, e))?;
            let fifo = Arc::new(Fifo::new((config.sample_rate / 50).max(1) as usize));
            tracing::info!(device = %id, rate = config.sample_rate, channels = config.channels, "sound output opening");
            let (f, i) = (fifo.clone(), id.clone());
            let keeper = Keeper::start(&id, move || {
                by_format!(format, build_output, &device, &config, f, &i)
            })?;
            let scratch = vec![0; resampler.max_output(FRAME_SAMPLES * 4)];
            Ok(DeviceSink {
                id,
                fifo,
                resampler,
                scratch,
                keeper: Some(keeper),
            })
        }

        /// The device's id.
        pub fn id(&self) -> &str {
            &self.id
        }

        /// The fifo's level and counters.
        pub fn stats(&self) -> FifoStats {
            self.fifo.stats()
        }
    }

    impl AudioSink for DeviceSink {
        fn write(&mut self, frame: &[i16]) -> Result<(), AudioError> {
            if self.keeper.is_none() {
                return Ok(());
            }
            let need = self.resampler.max_output(frame.len());
            if self.scratch.len() < need {
                self.scratch.resize(need, 0);
            }
            let n = self.resampler.process(frame, &mut self.scratch);
            self.fifo.write(&self.scratch[..n]);
            Ok(())
        }

        fn close(&mut self) -> Result<(), AudioError> {
            self.keeper = None;
            Ok(())
        }
    }
}

/// A build without the `sound` feature: no sound system is linked; every sound
/// device is missing.
#[cfg(not(feature = "sound"))]
mod silent {
    use super::*;

    fn no_sound(name: &DeviceName) -> AudioError {
        AudioError::Device(format!(
            "{name}: this build has no sound devices (built without the `sound` feature)"
        ))
    }

    /// No devices.
    pub fn list() -> Vec<DeviceInfo> {
        Vec::new()
    }

    /// Always an error.
    pub fn check(name: &DeviceName, _input: bool) -> Result<String, AudioError> {
        Err(no_sound(name))
    }

    /// Cannot exist in this build.
    #[derive(Debug)]
    pub enum DeviceSource {}

    impl DeviceSource {
        /// Always an error.
        pub fn open(name: &DeviceName) -> Result<DeviceSource, AudioError> {
            Err(no_sound(name))
        }
    }

    impl AudioSource for DeviceSource {
        fn read(&mut self, _out: &mut [i16; crate::audio::FRAME_SAMPLES]) {
            match *self {}
        }
    }

    /// Cannot exist in this build.
    #[derive(Debug)]
    pub enum DeviceSink {}

    impl DeviceSink {
        /// Always an error.
        pub fn open(name: &DeviceName) -> Result<DeviceSink, AudioError> {
            Err(no_sound(name))
        }
    }

    impl AudioSink for DeviceSink {
        fn write(&mut self, _frame: &[i16]) -> Result<(), AudioError> {
            match *self {}
        }
        fn close(&mut self) -> Result<(), AudioError> {
            match *self {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(start: i16, n: usize) -> Vec<i16> {
        (0..n).map(|i| start.wrapping_add(i as i16)).collect()
    }

    #[test]
    fn names() {
        let p = |t: &str| DeviceName::parse(t).unwrap();
        assert_eq!(DeviceName::parse("  "), None);
        assert_eq!(
            p("default"),
            DeviceName {
                backend: Backend::Any,
                name: None
            }
        );
        assert_eq!(p("pulse:sink1").backend, Backend::Pulse);
        assert_eq!(p("PulseAudio:sink1").name.as_deref(), Some("sink1"));
        assert_eq!(
            p("alsa:hw:CARD=0,DEV=0").name.as_deref(),
            Some("hw:CARD=0,DEV=0")
        );
        assert_eq!(p("alsa:").name, None);
        assert_eq!(p("USB Headset").name.as_deref(), Some("USB Headset"));
        for t in [
            "default",
            "pulse:a.monitor",
            "alsa:hw:0,0",
            "USB Headset",
            "pulse:default",
        ] {
            assert_eq!(p(t).to_string(), t);
        }
    }

    #[test]
    fn matching() {
        let info = DeviceInfo {
            id: "pulse:null1.monitor".into(),
            name: "Monitor of Null Output".into(),
            input: true,
            output: false,
            default_input: true,
            default_output: false,
        };
        let p = |t: &str| DeviceName::parse(t).unwrap();
        assert!(info.matches(&p("pulse:null1.monitor"), true));
        assert!(info.matches(&p("null1.monitor"), true));
        assert!(info.matches(&p("monitor of null output"), true));
        assert!(info.matches(&p("default"), true));
        assert!(!info.matches(&p("default"), false));
        assert!(!info.matches(&p("alsa:null1.monitor"), true));
        assert!(!info.matches(&p("null1"), true));
    }

    #[test]
    fn waits_for_the_target_level_then_plays_in_order() {
        let f = Fifo::new(10);
        let mut out = [7i16; 10];
        assert!(!f.read(&mut out));
        assert_eq!(out, [0; 10]);
        f.write(&ramp(0, 20));
        assert!(
            !f.read(&mut out),
            "below the 30-sample target: still silence"
        );
        f.write(&ramp(20, 10));
        assert!(f.read(&mut out));
        assert_eq!(out.to_vec(), ramp(0, 10));
        assert!(f.read(&mut out));
        assert_eq!(out.to_vec(), ramp(10, 10));
    }

    #[test]
    fn underrun_gives_silence_and_refills() {
        let f = Fifo::new(10);
        f.write(&ramp(0, 35));
        let mut out = [0i16; 10];
        for _ in 0..3 {
            assert!(f.read(&mut out));
        }
        // 5 left: not a whole read.
        out.fill(9);
        assert!(!f.read(&mut out));
        assert_eq!(out, [0; 10]);
        assert_eq!(f.stats().underruns, 1);
        // Refills to the target before playing again, keeping what was left.
        f.write(&ramp(35, 20));
        assert!(!f.read(&mut out));
        f.write(&ramp(55, 10));
        assert!(f.read(&mut out));
        assert_eq!(out.to_vec(), ramp(30, 10));
    }

    #[test]
    fn overrun_drops_the_oldest() {
        let f = Fifo::new(10);
        // Target 30, bound 70: writing 80 keeps the newest 30.
        f.write(&ramp(0, 80));
        let s = f.stats();
        assert_eq!(s.level, 30);
        assert_eq!(s.dropped, 50);
        let mut out = [0i16; 10];
        assert!(f.read(&mut out));
        assert_eq!(out.to_vec(), ramp(50, 10));
    }

    #[test]
    fn drift_keeps_the_level_bounded() {
        // A writer 4 % fast, then 4 % slow, against a steady reader of 160 per tick.
        for (num, den) in [(26u64, 25u64), (24, 25)] {
            let f = Fifo::new(160);
            let mut out = [0i16; 160];
            let mut written = 0u64;
            let mut played = 0u64;
            let mut max_level = 0;
            for tick in 1..=5000u64 {
                let due = tick * 160 * num / den;
                let n = (due - written) as usize;
                f.write(&vec![1000; n]);
                written = due;
                if f.read(&mut out) {
                    played += 1;
                }
                max_level = max_level.max(f.stats().level);
            }
            assert!(max_level <= f.high(), "level {max_level}");
            let s = f.stats();
            if num > den {
                assert!(s.dropped > 0);
                assert!(played > 4990, "played {played}");
            } else {
                assert!(s.underruns > 0);
                // About 4 % of the ticks are silent; the rest play.
                assert!(played > 4700 && played < 4900, "played {played}");
            }
        }
    }

    #[test]
    fn big_reads_raise_the_bounds() {
        let f = Fifo::new(10);
        let mut out = vec![0i16; 100];
        f.write(&ramp(0, 60));
        assert!(!f.read(&mut out));
        f.write(&ramp(60, 60));
        assert!(f.read(&mut out), "served once 110 samples wait");
        assert_eq!(out, ramp(0, 100));
    }
}
