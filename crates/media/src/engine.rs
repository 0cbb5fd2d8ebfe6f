//! The media engine: one thread, named `media`, that serves the RTP of every call on
//! one 20 ms tick.
//!
//! This module owns the RTP sockets, the per-call stream state (SSRC, sequence,
//! timestamp, symmetric-RTP latch, hold) and the clock. The tick runs on absolute
//! deadlines (`start + n × 20 ms`), so it does not drift; there is no timer or task
//! per call. Each tick, for each session: read 20 ms from the source, encode, send one
//! packet (or a DTMF event packet); then drain what arrived into the session's jitter
//! buffer and play one frame from it (decoded, or concealed when lost). Received
//! DTMF (RFC 4733, or in-band when asked) is reported through the event callback.
//! RTCP goes on RTP port + 1 (or on the RTP port with rtcp-mux): the protocol is
//! [`crate::rtcp`]; here are only its sockets, its place in the tick and its numbers.
//!
//! Sources and sinks run on the audio bus (16 kHz mono, [`audio::SAMPLE_RATE`]);
//! each session's `CodecPath` holds the negotiated codec and the resamplers
//! between the bus and the codec's PCM rate (G.711: 8 kHz both ways; G.722 and Opus,
//! whose libopus runs at 16 kHz, none), sized once when the call is configured.
//! Work nobody uses is skipped: a frame received for a `null` sink with no recorder
//! and no conference is decoded but not brought to the bus, and in-band DTMF
//! detection listens to the decoded audio (8 kHz for G.711: no conversion).
//!
//! Callers talk to the thread through [`MediaEngine`], a cheap clonable handle; every
//! request waits for the thread's acknowledgement (at most one second), so when
//! `set_hold` or `close` returns the change has taken effect. Sockets and files are
//! opened on the caller's thread, so their errors come back to the caller.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crate::audio::{self, AudioError, AudioSink, AudioSource, AudioSpec, FRAME_SAMPLES};
use crate::codec::{self, AudioCodec, MAX_PAYLOAD_BYTES};
use crate::dtmf::{self, GoertzelDetector, Rfc4733Receiver, Rfc4733Sender, ToneGenerator};
use crate::jitter::{JitterBuffer, JitterConfig, Playout};
use crate::mixer::Mixer;
use crate::plc::Plc;
use crate::recorder::{self, PlayEnd, Player, RecordingHandle, RecordingStatus, Taps};
use crate::resample::Resampler;
use crate::rtcp::{self, Quality, RtcpSession};
use crate::rtp::{self, RtpHeader};
use crate::sdp::{Codec, Negotiated};

/// The media clock: one packet per call every 20 ms.
pub const TICK: Duration = Duration::from_millis(20);
/// How long a request waits for the media thread (the engine asks from a thread of
/// its own, never from the signalling task, so a loaded machine may take its time).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Packets read from one socket per tick at most (the rest waits for the next tick).
const MAX_PACKETS_PER_TICK: usize = 32;
/// When the thread falls further behind than this (suspend, overload), the missed
/// ticks are skipped instead of being run back to back.
const MAX_LATENESS: Duration = Duration::from_millis(100);

/// How DTMF travels in the media (the ini's `DTMFMethod`; SIP INFO is the SIP
/// layer's business and means "no in-band detection" here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DtmfMode {
    /// RFC 4733 when the peer offered telephone-event, else in-band.
    #[default]
    Auto,
    /// In-band tones only.
    Inband,
    /// RFC 4733 only.
    Rfc4733,
    /// SIP INFO: nothing in the media.
    SipInfo,
}

/// The phone's audio levels, shared by every call: 0–100 each, and the mutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Levels {
    /// Speaker (what we hear), 0–100.
    pub speaker: u8,
    /// Microphone (what we send), 0–100.
    pub microphone: u8,
    pub speaker_muted: bool,
    pub microphone_muted: bool,
}

impl Default for Levels {
    fn default() -> Levels {
        Levels {
            speaker: 100,
            microphone: 100,
            speaker_muted: false,
            microphone_muted: false,
        }
    }
}

impl Levels {
    fn speaker_gain(&self) -> f32 {
        if self.speaker_muted {
            0.0
        } else {
            volume_gain(self.speaker)
        }
    }
    fn microphone_gain(&self) -> f32 {
        if self.microphone_muted {
            0.0
        } else {
            volume_gain(self.microphone)
        }
    }
}

/// 0–100 → amplitude factor: 100 is unity, 50 is half (−6 dB), 0 is silence.
fn volume_gain(level: u8) -> f32 {
    f32::from(level.min(100)) / 100.0
}

/// Scales `frame` from gain `from` to gain `to` in a straight line across the frame,
/// so a level change never clicks. Returns `to` (the gain now in force).
fn apply_gain(frame: &mut [i16], from: f32, to: f32) -> f32 {
    if from == 1.0 && to == 1.0 {
        return to;
    }
    let n = frame.len().max(1) as f32;
    for (i, s) in frame.iter_mut().enumerate() {
        let g = from + (to - from) * (i as f32 + 1.0) / n;
        *s = (f32::from(*s) * g).clamp(-32768.0, 32767.0) as i16;
    }
    to
}

/// Something the media thread reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// A DTMF digit was received on call `call`; `inband`: heard in the audio
    /// (else an RFC 4733 event).
    Dtmf {
        call: u64,
        digit: char,
        inband: bool,
    },
    /// The file played into call `call` ran out; `hangup`: the call is to end now
    /// (else it is back on its microphone).
    PlaybackEnded { call: u64, hangup: bool },
    /// Writing the recording of call `call` failed (disk full...); the call goes on.
    RecordingFailed {
        call: u64,
        path: std::path::PathBuf,
        error: String,
    },
    /// An RTCP report arrived from the peer of call `call`; `quality` is the call's
    /// numbers with it.
    Quality { call: u64, quality: Quality },
}

/// Where media events go (called on the media thread: must not block).
pub type EventSink = Box<dyn Fn(MediaEvent) + Send + 'static>;

/// Where the engine binds its RTP sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaConfig {
    /// Local address for RTP sockets (`0.0.0.0` for all).
    pub bind_ip: IpAddr,
    /// Lowest RTP port (the ini's `rtpPortMin`); `None`: no lower bound (1024).
    pub rtp_port_min: Option<u16>,
    /// Highest RTP port (the ini's `rtpPortMax`); `None`: no upper bound (65535).
    pub rtp_port_max: Option<u16>,
    /// How DTMF is sent and detected.
    pub dtmf: DtmfMode,
}

/// What went wrong with a media request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaError {
    /// Every even port of the configured range is taken.
    NoFreePort {
        /// Range start, as configured.
        min: u16,
        /// Range end, as configured.
        max: u16,
    },
    /// The configured range holds no even port.
    BadPortRange {
        /// Range start, as configured.
        min: u16,
        /// Range end, as configured.
        max: u16,
    },
    /// The RTP socket could not be opened.
    Socket(String),
    /// The audio source or sink could not be opened or finished.
    Audio(AudioError),
    /// `open` with an id that is already open.
    DuplicateSession(u64),
    /// A request for an id that is not open.
    UnknownSession(u64),
    /// The media thread is gone.
    Stopped,
    /// The media thread did not acknowledge within [`REQUEST_TIMEOUT`].
    Timeout,
    /// DTMF could not be sent (bad digit, no stream, method not possible).
    Dtmf(String),
    /// A recording could not be started.
    Recording(String),
}

impl fmt::Display for MediaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MediaError::NoFreePort { min, max } => write!(f, "no free RTP port in {min}-{max}"),
            MediaError::BadPortRange { min, max } => {
                write!(f, "RTP port range {min}-{max} holds no even port")
            }
            MediaError::Socket(e) => write!(f, "cannot open an RTP socket: {e}"),
            MediaError::Audio(e) => e.fmt(f),
            MediaError::DuplicateSession(id) => write!(f, "media session {id} is already open"),
            MediaError::UnknownSession(id) => write!(f, "no media session {id}"),
            MediaError::Stopped => f.write_str("the media thread has stopped"),
            MediaError::Timeout => f.write_str("the media thread did not answer within 5 s"),
            MediaError::Dtmf(e) => f.write_str(e),
            MediaError::Recording(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for MediaError {}

impl From<AudioError> for MediaError {
    fn from(e: AudioError) -> MediaError {
        MediaError::Audio(e)
    }
}

/// Counters of one session, readable from any thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaStats {
    /// The local RTP port.
    pub local_port: u16,
    /// The negotiated codec (`None` before `configure`).
    pub codec: Option<Codec>,
    /// RTP packets sent.
    pub packets_sent: u64,
    /// RTP packets received and accepted (negotiated payload type or telephone-event,
    /// from the peer).
    pub packets_received: u64,
    /// Bytes sent (whole RTP packets).
    pub bytes_sent: u64,
    /// Bytes received (whole RTP packets).
    pub bytes_received: u64,
    /// Milliseconds since the last accepted packet (`None`: none yet).
    pub last_received_ms_ago: Option<u64>,
    /// Where packets go: the SDP address, or the latched source (symmetric RTP).
    pub remote: Option<SocketAddr>,
    /// Packets lost (never arrived in time), from the jitter buffer.
    pub packets_lost: u64,
    /// Interarrival jitter (RFC 3550), milliseconds.
    pub jitter_ms: u32,
    /// Current playout delay of the jitter buffer, milliseconds.
    pub playout_delay_ms: u32,
    /// What RTCP tells: reports sent and received, round-trip time, loss both ways.
    pub quality: Quality,
}

/// Counters shared between the media thread (writer) and callers (readers).
#[derive(Debug)]
struct SharedStats {
    local_port: u16,
    packets_sent: AtomicU64,
    packets_received: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    /// Milliseconds since the engine's epoch, plus one; 0: never.
    last_received: AtomicU64,
    /// Changed only on configure and on latching.
    peer: Mutex<(Option<Codec>, Option<SocketAddr>)>,
    packets_lost: AtomicU64,
    jitter_ms: AtomicU64,
    playout_delay_ms: AtomicU64,
    /// Changed when an RTCP report is sent or received.
    quality: Mutex<Quality>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Shared {
    bind_ip: IpAddr,
    /// The configured port range, if any.
    range: Option<PortRange>,
    /// Index (in even ports from the first) where the next search starts.
    next_port: Mutex<u32>,
    sessions: Mutex<HashMap<u64, Arc<SharedStats>>>,
    /// Recordings in progress, by call: their writer threads' handles.
    recordings: Mutex<HashMap<u64, RecordingHandle>>,
    /// Calls whose output is a `file:`: the handles of the writer threads that
    /// write them.
    sink_files: Mutex<HashMap<u64, RecordingHandle>>,
    epoch: Instant,
}

/// How long stopping a recording waits for its file to be finished.
const RECORDING_FINISH_TIMEOUT: Duration = Duration::from_secs(3);

enum Request {
    Add(Box<Session>),
    Configure(u64, Box<Negotiated>),
    SetHold(u64, bool),
    SetReceiveOnly(u64, bool),
    SendDtmf(u64, String),
    SetLevels(Levels),
    Close(u64),
    /// Start (`Some`) or stop (`None`) recording a call.
    Record(u64, Option<Box<recorder::Recorder>>),
    /// Start (`Some`) or stop (`None`) playing a file into a call.
    Play(u64, Option<Box<Player>>),
    /// The calls merged into the conference (fewer than two: none).
    Conference(Vec<u64>),
    SetSource(u64, Box<dyn AudioSource>),
    SetSink(u64, Box<dyn AudioSink>),
}

struct Envelope {
    request: Request,
    ack: mpsc::SyncSender<Result<(), MediaError>>,
}

/// Handle to the media thread. Clone it freely; the thread ends when the last handle
/// is dropped (finishing every open sink).
#[derive(Clone)]
pub struct MediaEngine {
    tx: mpsc::Sender<Envelope>,
    shared: Arc<Shared>,
}

impl fmt::Debug for MediaEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaEngine")
            .field("bind_ip", &self.shared.bind_ip)
            .field("range", &self.shared.range)
            .finish()
    }
}

/// A configured RTP port range and the even ports in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PortRange {
    /// As configured (for messages).
    min: u16,
    max: u16,
    /// First and last even port inside.
    first: u16,
    last: u16,
}

/// The even ports of a configured range (`None`: no range, any port).
fn even_range(min: Option<u16>, max: Option<u16>) -> Result<Option<PortRange>, MediaError> {
    if min.is_none() && max.is_none() {
        return Ok(None);
    }
    let lo = min.unwrap_or(1024);
    let hi = max.unwrap_or(u16::MAX);
    let first = u32::from(lo.max(2)).div_ceil(2) * 2;
    let last = u32::from(hi) & !1;
    if first > last || last > u32::from(u16::MAX) {
        return Err(MediaError::BadPortRange { min: lo, max: hi });
    }
    Ok(Some(PortRange {
        min: lo,
        max: hi,
        first: first as u16,
        last: last as u16,
    }))
}

impl MediaEngine {
    /// Starts the media thread.
    pub fn start(config: MediaConfig) -> Result<MediaEngine, MediaError> {
        MediaEngine::start_with_events(config, Box::new(|_| {}))
    }

    /// Starts the media thread; `events` hears of received DTMF and the like.
    pub fn start_with_events(
        config: MediaConfig,
        events: EventSink,
    ) -> Result<MediaEngine, MediaError> {
        let range = even_range(config.rtp_port_min, config.rtp_port_max)?;
        let shared = Arc::new(Shared {
            bind_ip: config.bind_ip,
            range,
            next_port: Mutex::new(0),
            sessions: Mutex::new(HashMap::new()),
            recordings: Mutex::new(HashMap::new()),
            sink_files: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
        });
        let (tx, rx) = mpsc::channel();
        thread::Builder::new()
            .name("media".into())
            .stack_size(256 * 1024)
            .spawn(move || run(rx, config.dtmf, events))
            .map_err(|e| MediaError::Socket(format!("cannot start the media thread: {e}")))?;
        Ok(MediaEngine { tx, shared })
    }

    fn request(&self, request: Request) -> Result<(), MediaError> {
        let (ack, done) = mpsc::sync_channel(1);
        self.tx
            .send(Envelope { request, ack })
            .map_err(|_| MediaError::Stopped)?;
        match done.recv_timeout(REQUEST_TIMEOUT) {
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(MediaError::Timeout),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(MediaError::Stopped),
        }
    }

    /// Opens a session for call `id`: binds an even RTP port (in the configured range,
    /// tried in order from where the last search stopped, wrapping), opens the source
    /// and the sink, and hands the session to the media thread. Returns the local RTP
    /// port. Nothing is sent until [`MediaEngine::configure`].
    pub fn open(&self, id: u64, source: AudioSpec, sink: AudioSpec) -> Result<u16, MediaError> {
        {
            let sessions = lock(&self.shared.sessions);
            if sessions.contains_key(&id) {
                return Err(MediaError::DuplicateSession(id));
            }
        }
        let (socket, rtcp_socket) = self.bind_rtp()?;
        let local_port = socket
            .local_addr()
            .map_err(|e| MediaError::Socket(e.to_string()))?
            .port();
        for s in std::iter::once(&socket).chain(rtcp_socket.as_ref()) {
            s.set_nonblocking(true)
                .map_err(|e| MediaError::Socket(e.to_string()))?;
        }
        let source = audio::open_source(&source)?;
        let (sink, sink_file) = open_sink(&sink)?;
        let stats = Arc::new(SharedStats {
            local_port,
            packets_sent: AtomicU64::new(0),
            packets_received: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            last_received: AtomicU64::new(0),
            peer: Mutex::new((None, None)),
            packets_lost: AtomicU64::new(0),
            jitter_ms: AtomicU64::new(0),
            playout_delay_ms: AtomicU64::new(0),
            quality: Mutex::new(Quality::default()),
        });
        {
            let mut sessions = lock(&self.shared.sessions);
            if sessions.contains_key(&id) {
                return Err(MediaError::DuplicateSession(id));
            }
            sessions.insert(id, stats.clone());
            if let Some(handle) = sink_file {
                lock(&self.shared.sink_files).insert(id, handle);
            }
        }
        let mut session = Session::new(id, socket, source, sink, stats, self.shared.epoch);
        session.rtcp_socket = rtcp_socket;
        match self.request(Request::Add(Box::new(session))) {
            Ok(()) => Ok(local_port),
            Err(e) => {
                lock(&self.shared.sessions).remove(&id);
                lock(&self.shared.sink_files).remove(&id);
                Err(e)
            }
        }
    }

    /// Binds an even RTP port and, when free, the odd port above it for RTCP. A pair
    /// is preferred; when no pair is free, an RTP port alone (RTCP then only with
    /// rtcp-mux).
    fn bind_rtp(&self) -> Result<(UdpSocket, Option<UdpSocket>), MediaError> {
        let ip = self.shared.bind_ip;
        let rtcp_of = |rtp: &UdpSocket| -> Option<UdpSocket> {
            let port = rtp.local_addr().ok()?.port().checked_add(1)?;
            UdpSocket::bind(SocketAddr::new(ip, port)).ok()
        };
        let Some(PortRange {
            min,
            max,
            first,
            last,
        }) = self.shared.range
        else {
            // Any free port, preferably even with the odd one above free: hold the
            // others while asking again so the system hands out a different port.
            let mut held = Vec::new();
            let mut lone_even = None;
            for _ in 0..16 {
                let s = UdpSocket::bind(SocketAddr::new(ip, 0))
                    .map_err(|e| MediaError::Socket(e.to_string()))?;
                let port = s
                    .local_addr()
                    .map_err(|e| MediaError::Socket(e.to_string()))?
                    .port();
                if port % 2 == 0 {
                    if let Some(rtcp) = rtcp_of(&s) {
                        return Ok((s, Some(rtcp)));
                    }
                    if lone_even.is_none() {
                        lone_even = Some(s);
                        continue;
                    }
                }
                held.push(s);
            }
            return lone_even
                .or_else(|| held.pop())
                .map(|s| (s, None))
                .ok_or(MediaError::NoFreePort { min: 0, max: 0 });
        };
        let count = (u32::from(last) - u32::from(first)) / 2 + 1;
        let mut next = lock(&self.shared.next_port);
        let mut lone = None;
        for i in 0..count {
            let index = (*next + i) % count;
            let port = (u32::from(first) + 2 * index) as u16;
            match UdpSocket::bind(SocketAddr::new(ip, port)) {
                Ok(s) => match rtcp_of(&s) {
                    Some(rtcp) => {
                        *next = (index + 1) % count;
                        return Ok((s, Some(rtcp)));
                    }
                    None => {
                        if lone.is_none() {
                            lone = Some((s, index));
                        }
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                Err(e) => return Err(MediaError::Socket(format!("{ip}:{port}: {e}"))),
            }
        }
        match lone {
            Some((s, index)) => {
                *next = (index + 1) % count;
                Ok((s, None))
            }
            None => Err(MediaError::NoFreePort { min, max }),
        }
    }

    /// Starts or updates the stream of `id` after an offer/answer (again after a
    /// re-INVITE, or when the final answer follows early media). A new remote address
    /// resets the symmetric-RTP latch.
    pub fn configure(&self, id: u64, negotiated: Negotiated) -> Result<(), MediaError> {
        self.request(Request::Configure(id, Box::new(negotiated)))
    }

    /// Our hold: while `true` the session neither sends nor plays.
    pub fn set_hold(&self, id: u64, local_hold: bool) -> Result<(), MediaError> {
        self.request(Request::SetHold(id, local_hold))
    }

    /// Early media on an outgoing call: while `true` the session plays what arrives and
    /// sends nothing.
    pub fn set_receive_only(&self, id: u64, receive_only: bool) -> Result<(), MediaError> {
        self.request(Request::SetReceiveOnly(id, receive_only))
    }

    /// Sends DTMF `digits` (`0-9*#A-D`, `,` = 1 s pause) on call `id`: as RFC 4733
    /// events when the peer offered telephone-event (and the mode allows), else as
    /// in-band tones. Errors: a digit outside the set, no negotiated stream.
    pub fn send_dtmf(&self, id: u64, digits: &str) -> Result<(), MediaError> {
        self.request(Request::SendDtmf(id, digits.to_string()))
    }

    /// Stops and removes the session and finishes its sink (a file gets its final
    /// header). Returns once done (at most [`REQUEST_TIMEOUT`]). A sink that failed to
    /// finish is reported, but the session is gone either way.
    pub fn close(&self, id: u64) -> Result<(), MediaError> {
        if !lock(&self.shared.sessions).contains_key(&id) {
            return Err(MediaError::UnknownSession(id));
        }
        let result = self.request(Request::Close(id));
        lock(&self.shared.sessions).remove(&id);
        // The session let go of its `file:` output: wait for the file to be finished.
        let sink_file = lock(&self.shared.sink_files).remove(&id);
        let result = result.and(finish_sink_file(sink_file));
        // The session (and its recorder) is gone: let the writer finish the file.
        let recording = lock(&self.shared.recordings).remove(&id);
        if let Some(handle) = recording {
            let status = handle.finish(RECORDING_FINISH_TIMEOUT);
            if let Some(e) = status.error {
                tracing::warn!(call = id, error = %e, "recording not finished cleanly");
            }
        }
        result
    }

    /// Starts recording call `id` into the WAV file `path` (created or truncated
    /// now, its folder too if missing): a mono mix of what the call sends and hears, at
    /// the bus rate. Errors: the file cannot be created, the call is already being
    /// recorded, no such session.
    pub fn start_recording(&self, id: u64, path: &std::path::Path) -> Result<(), MediaError> {
        if !lock(&self.shared.sessions).contains_key(&id) {
            return Err(MediaError::UnknownSession(id));
        }
        if lock(&self.shared.recordings).contains_key(&id) {
            return Err(MediaError::Recording(format!(
                "call {id} is already being recorded"
            )));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                MediaError::Recording(format!("cannot create the folder {}: {e}", dir.display()))
            })?;
        }
        let (rec, handle) = recorder::start_recording(path)?;
        self.request(Request::Record(id, Some(Box::new(rec))))?;
        lock(&self.shared.recordings).insert(id, handle);
        Ok(())
    }

    /// Stops recording call `id` and returns once the file is finished (its final
    /// header written), at most a few seconds. `None`: it was not being recorded.
    pub fn stop_recording(&self, id: u64) -> Result<Option<RecordingStatus>, MediaError> {
        let Some(handle) = lock(&self.shared.recordings).remove(&id) else {
            return Ok(None);
        };
        let result = self.request(Request::Record(id, None));
        let status = handle.finish(RECORDING_FINISH_TIMEOUT);
        result.map(|()| Some(status))
    }

    /// Plays the WAV file `path` into call `id` instead of its microphone (loaded
    /// now: a missing or unreadable file is an error here and changes nothing).
    /// `at_end`: what happens when it runs out (a [`MediaEvent::PlaybackEnded`]
    /// says when).
    pub fn play(&self, id: u64, path: &std::path::Path, at_end: PlayEnd) -> Result<(), MediaError> {
        if !lock(&self.shared.sessions).contains_key(&id) {
            return Err(MediaError::UnknownSession(id));
        }
        let player = Player::open(path, at_end)?;
        self.request(Request::Play(id, Some(Box::new(player))))
    }

    /// Stops playing a file into call `id` (back to the microphone).
    pub fn stop_playing(&self, id: u64) -> Result<(), MediaError> {
        self.request(Request::Play(id, None))
    }

    /// Merges `calls` into the phone's one conference (replacing its members; fewer
    /// than two calls ends it): each member then also sends what the others are
    /// heard saying. Unknown ids are an error and change nothing.
    pub fn set_conference(&self, calls: &[u64]) -> Result<(), MediaError> {
        self.request(Request::Conference(calls.to_vec()))
    }

    /// The counters of session `id`.
    pub fn stats(&self, id: u64) -> Option<MediaStats> {
        let stats = lock(&self.shared.sessions).get(&id)?.clone();
        let (codec, remote) = *lock(&stats.peer);
        let quality = *lock(&stats.quality);
        let last = stats.last_received.load(Ordering::Relaxed);
        let now = self.shared.epoch.elapsed().as_millis() as u64;
        Some(MediaStats {
            local_port: stats.local_port,
            codec,
            packets_sent: stats.packets_sent.load(Ordering::Relaxed),
            packets_received: stats.packets_received.load(Ordering::Relaxed),
            bytes_sent: stats.bytes_sent.load(Ordering::Relaxed),
            bytes_received: stats.bytes_received.load(Ordering::Relaxed),
            last_received_ms_ago: (last > 0).then(|| now.saturating_sub(last - 1)),
            remote,
            packets_lost: stats.packets_lost.load(Ordering::Relaxed),
            jitter_ms: stats.jitter_ms.load(Ordering::Relaxed) as u32,
            playout_delay_ms: stats.playout_delay_ms.load(Ordering::Relaxed) as u32,
            quality,
        })
    }

    /// Sets the speaker and microphone levels and mutes of every call (ramped over
    /// one frame, so the change does not click).
    pub fn set_levels(&self, levels: Levels) -> Result<(), MediaError> {
        self.request(Request::SetLevels(levels))
    }

    /// Switches where call `id`'s outgoing audio comes from, mid-call. The new source
    /// is opened here (errors leave the old one in place); it is in use when this
    /// returns.
    pub fn set_source(&self, id: u64, spec: &AudioSpec) -> Result<(), MediaError> {
        if !lock(&self.shared.sessions).contains_key(&id) {
            return Err(MediaError::UnknownSession(id));
        }
        let source = audio::open_source(spec)?;
        self.request(Request::SetSource(id, source))
    }

    /// Switches where call `id`'s incoming audio goes, mid-call. The old sink is
    /// finished (a file gets its final header); its failure to finish is reported,
    /// but the new sink is in use either way.
    pub fn set_sink(&self, id: u64, spec: &AudioSpec) -> Result<(), MediaError> {
        if !lock(&self.shared.sessions).contains_key(&id) {
            return Err(MediaError::UnknownSession(id));
        }
        let (sink, sink_file) = open_sink(spec)?;
        self.request(Request::SetSink(id, sink))?;
        let old = match sink_file {
            Some(handle) => lock(&self.shared.sink_files).insert(id, handle),
            None => lock(&self.shared.sink_files).remove(&id),
        };
        finish_sink_file(old)
    }

    /// Ids of the open sessions.
    pub fn sessions(&self) -> Vec<u64> {
        lock(&self.shared.sessions).keys().copied().collect()
    }
}

/// Opens a call's output: a `file:` is written by a writer thread (its handle
/// comes back with it), every other device directly.
fn open_sink(
    spec: &AudioSpec,
) -> Result<(Box<dyn AudioSink>, Option<RecordingHandle>), MediaError> {
    match spec {
        AudioSpec::File(path) => {
            let (sink, handle) = recorder::file_sink(path)?;
            Ok((Box::new(sink), Some(handle)))
        }
        other => Ok((audio::open_sink(other)?, None)),
    }
}

/// Waits for a `file:` output the media thread let go of to be finished (its final
/// header written); its write error, if any, is the result.
fn finish_sink_file(handle: Option<RecordingHandle>) -> Result<(), MediaError> {
    let Some(handle) = handle else { return Ok(()) };
    let status = handle.finish(RECORDING_FINISH_TIMEOUT);
    match status.error {
        Some(message) => Err(MediaError::Audio(AudioError::File {
            path: status.path,
            message,
        })),
        None => Ok(()),
    }
}

/// A random 64-bit value from the standard library's per-process random keys.
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish()
}

/// Buffers reused by every session on the media thread (nothing is allocated per
/// packet).
struct Scratch {
    events: EventSink,
    levels: Levels,
    /// The conference.
    mixer: Mixer,
    /// One bus frame from the source.
    pcm: [i16; FRAME_SAMPLES],
    payload: [u8; MAX_PAYLOAD_BYTES],
    packet: [u8; rtp::HEADER_LEN + MAX_PAYLOAD_BYTES],
    recv: [u8; 2048],
}

/// The negotiated codec of a session and the conversions between the audio bus and
/// the codec's PCM rate, with every buffer they need, made once per configure.
struct CodecPath {
    /// Which codec (a re-INVITE keeping it keeps this path and its state).
    kind: Codec,
    codec: Box<dyn AudioCodec>,
    /// Bus → codec rate, when they differ (G.711).
    to_codec: Option<Resampler>,
    /// Codec rate → bus, when they differ.
    to_bus: Option<Resampler>,
    /// One frame at the codec rate, what is encoded.
    encode_in: Vec<i16>,
    /// One received packet decoded (or a loss concealed) at the codec rate.
    decoded: Vec<i16>,
    /// `decoded` on the bus, what is played.
    played: Vec<i16>,
    /// Concealment for codecs without their own (G.711, G.722), at the codec rate.
    plc: Plc,
    /// Frames were decoded without being brought to the bus (nobody heard them):
    /// `to_bus` starts afresh on the next one instead of from stale history.
    bus_skipped: bool,
}

impl CodecPath {
    /// The path for `kind`; `None` (logged) when the codec cannot be made.
    fn new(kind: Codec, call: u64) -> Option<CodecPath> {
        let codec = match codec::make_codec_at(kind, audio::SAMPLE_RATE) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(call, codec = %kind, error = %e, "cannot make the codec; the call has no audio");
                return None;
            }
        };
        let rate = codec.sample_rate();
        let converter = |from: u32, to: u32| {
            (from != to)
                .then(|| Resampler::new(from, to).ok())
                .flatten()
        };
        let to_codec = converter(audio::SAMPLE_RATE, rate);
        let to_bus = converter(rate, audio::SAMPLE_RATE);
        // Sized for this codec's longest packet, not for any codec's (a G.711 call
        // needs a quarter of what 120 ms of Opus at 48 kHz would).
        let most = codec.max_decoded_samples();
        let played = to_bus.as_ref().map_or(most, |r| r.max_output(most));
        Some(CodecPath {
            kind,
            encode_in: vec![0; codec.frame_samples()],
            decoded: vec![0; most],
            played: vec![0; played],
            plc: Plc::with_rate(codec.frame_samples(), rate),
            bus_skipped: false,
            to_codec,
            to_bus,
            codec,
        })
    }

    /// The jitter buffer settings for this codec's RTP clock and 20 ms frames.
    fn jitter_config(&self) -> JitterConfig {
        JitterConfig::new(self.codec.rtp_clock_rate(), self.codec.rtp_frame_ticks())
    }

    /// RTP timestamp units per 20 ms.
    fn frame_ticks(&self) -> u32 {
        self.codec.rtp_frame_ticks()
    }

    /// Encodes one bus frame into `payload`; returns the payload length (0: nothing
    /// to send).
    fn encode(&mut self, bus: &[i16], payload: &mut [u8]) -> usize {
        match self.to_codec.as_mut() {
            Some(r) => {
                let n = r.process(bus, &mut self.encode_in);
                // (A converter gives a whole frame per frame; pad just in case.)
                self.encode_in[n..].fill(0);
                self.codec.encode(&self.encode_in, payload)
            }
            None => self.codec.encode(bus, payload),
        }
    }

    /// The next frame to play from `jitter`, decoded or concealed into `decoded`:
    /// the packet when it is there; for a lost one the codec's in-band FEC from the
    /// packet after it (Opus), else the codec's own concealment (Opus), else
    /// [`Plc`]. Returns the number of codec-rate samples, `None` while the buffer
    /// waits (nothing to play).
    fn decode_next(&mut self, jitter: &mut JitterBuffer, now_ms: u64) -> Option<usize> {
        let frame = self.codec.frame_samples();
        let decoded = match jitter.pop(now_ms) {
            Playout::Frame(payload) => self.codec.decode(payload, &mut self.decoded),
            Playout::Missing => {
                let fec = jitter
                    .peek_next()
                    .and_then(|next| self.codec.decode_fec(next, &mut self.decoded[..frame]));
                match fec {
                    Some(n) if n > 0 => return Some(n),
                    _ => 0,
                }
            }
            Playout::Waiting => return None,
        };
        if decoded > 0 {
            self.plc.smooth_recovery(&mut self.decoded[..decoded]);
            self.plc.good(&self.decoded[..decoded]);
            return Some(decoded);
        }
        // Lost, or a packet that would not decode.
        let n = self.codec.conceal(&mut self.decoded[..frame]);
        if n > 0 {
            return Some(n);
        }
        self.plc.conceal(&mut self.decoded[..frame]);
        Some(frame)
    }

    /// `decoded[..n]` on the bus rate, in `played`; returns its length.
    fn convert_to_bus(&mut self, n: usize) -> usize {
        let n = n.min(self.decoded.len());
        if std::mem::take(&mut self.bus_skipped) {
            if let Some(r) = self.to_bus.as_mut() {
                r.reset();
            }
        }
        match self.to_bus.as_mut() {
            Some(r) => r.process(&self.decoded[..n], &mut self.played),
            None => {
                self.played[..n].copy_from_slice(&self.decoded[..n]);
                n
            }
        }
    }
}

/// In-band DTMF detection on what a call plays: the detector works at 8 kHz, so it
/// hears the decoded audio at the codec's rate, resampled only when that is not 8 kHz
/// (G.711 is heard as decoded, with no conversion).
struct InbandDetector {
    detector: GoertzelDetector,
    to_8k: Option<Resampler>,
    buf: Vec<i16>,
}

impl InbandDetector {
    /// A detector for decoded audio at `rate` Hz, in pieces of at most `most`
    /// samples.
    fn new(rate: u32, most: usize) -> InbandDetector {
        let to_8k = Resampler::new(rate, dtmf::SAMPLE_RATE)
            .ok()
            .filter(|r| !r.is_passthrough());
        InbandDetector {
            detector: GoertzelDetector::new(),
            buf: to_8k
                .as_ref()
                .map_or(Vec::new(), |r| vec![0; r.max_output(most)]),
            to_8k,
        }
    }

    /// Listens to decoded samples; calls `on_digit` for each digit heard.
    fn process(&mut self, decoded: &[i16], on_digit: impl FnMut(char)) {
        match self.to_8k.as_mut() {
            Some(r) => {
                let n = r.process(decoded, &mut self.buf);
                self.detector.process_samples(&self.buf[..n], on_digit);
            }
            None => self.detector.process_samples(decoded, on_digit),
        }
    }
}

struct Session {
    id: u64,
    socket: UdpSocket,
    source: Box<dyn AudioSource>,
    sink: Box<dyn AudioSink>,
    stats: Arc<SharedStats>,
    epoch: Instant,
    negotiated: Option<Negotiated>,
    /// Where packets go: the SDP address until the peer's first packet, then its source.
    target: Option<SocketAddr>,
    latched: bool,
    local_hold: bool,
    receive_only: bool,
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
    /// Whether the previous tick sent (the next first packet carries the marker).
    sending: bool,
    socket_error_logged: bool,
    /// The codec and its conversions (from `configure`).
    path: Option<CodecPath>,
    /// Received audio waits here for its playout tick.
    jitter: JitterBuffer,
    dtmf_mode: DtmfMode,
    /// RFC 4733 sender, when the peer offered telephone-event.
    dtmf_out: Option<Rfc4733Sender>,
    dtmf_in: Rfc4733Receiver,
    tones_out: ToneGenerator,
    /// In-band detection, when the mode asks for it.
    detector: Option<InbandDetector>,
    /// Gains last applied (ramps start from here).
    mic_gain: f32,
    speaker_gain: f32,
    /// Recording, a file played in, the conference (see `recorder.rs`).
    taps: Taps,
    /// RTCP: the socket on RTP port + 1 (`None`: none could be bound), where reports
    /// go (latched to where the peer's come from), the protocol state, the peer's SSRC.
    rtcp_socket: Option<UdpSocket>,
    rtcp_target: Option<SocketAddr>,
    rtcp_latched: bool,
    rtcp: RtcpSession,
    peer_ssrc: Option<u32>,
    /// Unix time at `epoch`, for the NTP timestamps of our reports.
    wall_at_epoch: Duration,
}

impl Session {
    fn new(
        id: u64,
        socket: UdpSocket,
        source: Box<dyn AudioSource>,
        sink: Box<dyn AudioSink>,
        stats: Arc<SharedStats>,
        epoch: Instant,
    ) -> Session {
        let r = random_u64();
        let t = random_u64();
        let wall_at_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_sub(epoch.elapsed());
        Session {
            id,
            socket,
            source,
            sink,
            stats,
            epoch,
            negotiated: None,
            target: None,
            latched: false,
            local_hold: false,
            receive_only: false,
            ssrc: r as u32,
            sequence: (r >> 32) as u16,
            timestamp: t as u32,
            sending: false,
            socket_error_logged: false,
            path: None,
            jitter: JitterBuffer::new(JitterConfig::default()),
            dtmf_mode: DtmfMode::Auto,
            dtmf_out: None,
            dtmf_in: Rfc4733Receiver::new(),
            tones_out: ToneGenerator::with_rate(audio::SAMPLE_RATE),
            detector: None,
            mic_gain: 1.0,
            speaker_gain: 1.0,
            taps: Taps::default(),
            rtcp_socket: None,
            rtcp_target: None,
            rtcp_latched: false,
            rtcp: RtcpSession::new(r as u32, &format!("{t:016x}@microsip"), 8000, r ^ t),
            peer_ssrc: None,
            wall_at_epoch,
        }
    }

    fn configure(&mut self, negotiated: Negotiated) {
        let remote_changed = self.negotiated.as_ref().map(|n| n.remote) != Some(negotiated.remote);
        if remote_changed {
            self.target = negotiated.remote;
            self.latched = false;
        }
        let rtcp_changed = self.negotiated.as_ref().map(|n| (n.rtcp, n.rtcp_mux))
            != Some((negotiated.rtcp, negotiated.rtcp_mux));
        if rtcp_changed {
            self.rtcp_target = negotiated.rtcp;
            self.rtcp_latched = false;
        }
        self.rtcp.set_clock_rate(negotiated.codec.clock_rate());
        *lock(&self.stats.peer) = (Some(negotiated.codec), self.target);
        let events_allowed = matches!(self.dtmf_mode, DtmfMode::Auto | DtmfMode::Rfc4733);
        self.dtmf_out = match (negotiated.telephone_event, events_allowed) {
            (Some(pt), true) => Some(Rfc4733Sender::new(pt, negotiated.telephone_event_rate)),
            _ => None,
        };
        let inband = match self.dtmf_mode {
            DtmfMode::Inband => true,
            DtmfMode::Auto => negotiated.telephone_event.is_none(),
            DtmfMode::Rfc4733 | DtmfMode::SipInfo => false,
        };
        let codec_changed = self.path.as_ref().map(|p| p.kind) != Some(negotiated.codec);
        if codec_changed {
            self.set_codec(negotiated.codec);
        } else if remote_changed {
            self.jitter.reset();
        }
        self.detector = self
            .path
            .as_ref()
            .filter(|_| inband)
            .map(|p| InbandDetector::new(p.codec.sample_rate(), p.decoded.len()));
        if remote_changed {
            self.dtmf_in.reset();
        }
        self.negotiated = Some(negotiated);
    }

    /// Switches to `codec`: a fresh encoder, decoder and resamplers, and a jitter
    /// buffer on the codec's RTP clock.
    fn set_codec(&mut self, codec: Codec) {
        self.path = CodecPath::new(codec, self.id);
        if let Some(path) = &self.path {
            self.jitter = JitterBuffer::new(path.jitter_config());
        }
    }

    /// Queues DTMF digits by the way this call can carry them.
    fn send_dtmf(&mut self, digits: &str) -> Result<(), MediaError> {
        if self.negotiated.is_none() {
            return Err(MediaError::Dtmf("the call has no audio stream yet".into()));
        }
        let result = match (&mut self.dtmf_out, self.dtmf_mode) {
            (_, DtmfMode::SipInfo) => {
                return Err(MediaError::Dtmf(
                    "DTMF goes by SIP INFO on this phone".into(),
                ))
            }
            (Some(sender), DtmfMode::Auto | DtmfMode::Rfc4733) => sender.queue(digits),
            (None, DtmfMode::Rfc4733) => {
                return Err(MediaError::Dtmf(
                    "the other side did not offer telephone-event (RFC 4733)".into(),
                ))
            }
            _ => self.tones_out.queue(digits),
        };
        result.map_err(|e| MediaError::Dtmf(e.to_string()))
    }

    fn may_send(&self) -> bool {
        match &self.negotiated {
            Some(n) => {
                !self.local_hold
                    && !self.receive_only
                    && n.local_direction.sends()
                    && n.remote_direction.receives()
            }
            None => false,
        }
    }

    fn plays(&self) -> bool {
        match &self.negotiated {
            Some(n) => !self.local_hold && n.local_direction.receives(),
            None => false,
        }
    }

    fn socket_error(&mut self, what: &str, e: &io::Error) {
        if !self.socket_error_logged {
            self.socket_error_logged = true;
            tracing::warn!(call = self.id, error = %e, "RTP {what} failed; the call goes on");
        }
    }

    fn tick(&mut self, scratch: &mut Scratch) {
        if let Some(ticks) = self.path.as_ref().map(CodecPath::frame_ticks) {
            match self.target {
                Some(to) if self.may_send() => {
                    self.send_frame(to, scratch);
                    self.sequence = self.sequence.wrapping_add(1);
                    self.sending = true;
                }
                _ => self.sending = false,
            }
            // The media clock runs on while we are silent.
            self.timestamp = self.timestamp.wrapping_add(ticks);
        }
        self.receive(scratch);
        self.play(scratch);
        self.taps.end_tick(self.id, &mut |e| (scratch.events)(e));
        self.rtcp_tick(scratch);
    }

    /// Sends this tick's packet to `to`: 20 ms from the source, encoded (with
    /// in-band DTMF tones over it), or an RFC 4733 event packet while a digit goes.
    fn send_frame(&mut self, to: SocketAddr, scratch: &mut Scratch) {
        let (Some(n), Some(path)) = (&self.negotiated, self.path.as_mut()) else {
            return;
        };
        // The source always advances, so a file keeps its pace.
        self.source.read(&mut scratch.pcm);
        self.mic_gain = apply_gain(
            &mut scratch.pcm,
            self.mic_gain,
            scratch.levels.microphone_gain(),
        );
        self.taps.on_send(self.id, &mut scratch.pcm, &scratch.mixer);
        let event = self.dtmf_out.as_mut().and_then(|sender| {
            sender
                .tick(self.timestamp)
                .map(|ev| (sender.payload_type(), ev))
        });
        let written = match event {
            Some((event_pt, ev)) => {
                let header = RtpHeader {
                    marker: ev.marker,
                    payload_type: event_pt,
                    sequence: self.sequence,
                    timestamp: ev.timestamp,
                    ssrc: self.ssrc,
                };
                rtp::write_packet(&header, &ev.payload, &mut scratch.packet)
            }
            None => {
                self.tones_out.fill(&mut scratch.pcm);
                let len = path.encode(&scratch.pcm, &mut scratch.payload);
                let header = RtpHeader {
                    marker: !self.sending,
                    payload_type: n.payload_type,
                    sequence: self.sequence,
                    timestamp: self.timestamp,
                    ssrc: self.ssrc,
                };
                if len == 0 {
                    Err(rtp::RtpError::BufferTooSmall)
                } else {
                    rtp::write_packet(&header, &scratch.payload[..len], &mut scratch.packet)
                }
            }
        };
        let Ok(len) = written else { return };
        match self.socket.send_to(&scratch.packet[..len], to) {
            Ok(sent) => {
                self.stats.packets_sent.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .bytes_sent
                    .fetch_add(sent as u64, Ordering::Relaxed);
            }
            // Kernel buffer full: this packet is lost, like on the wire.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => self.socket_error("send", &e),
        }
    }

    /// Plays one frame from the jitter buffer: decoded, or concealed when it was lost,
    /// brought to the bus rate.
    fn play(&mut self, scratch: &mut Scratch) {
        if !self.plays() {
            return;
        }
        let Some(path) = self.path.as_mut() else {
            return;
        };
        let now = self.epoch.elapsed().as_millis() as u64;
        let Some(decoded) = path.decode_next(&mut self.jitter, now) else {
            return;
        };
        let decoded = decoded.min(path.decoded.len());
        if let Some(detector) = self.detector.as_mut() {
            let (id, events) = (self.id, &scratch.events);
            detector.process(&path.decoded[..decoded], |digit| {
                (events)(MediaEvent::Dtmf {
                    call: id,
                    digit,
                    inband: true,
                })
            });
        }
        if self.sink.discards() && !self.taps.hears(self.id, &scratch.mixer) {
            // Nobody hears this frame (a `null` sink, no recorder, no conference): it
            // was decoded, so the jitter buffer, concealment and in-band detection go
            // on, but it is not brought to the bus.
            path.bus_skipped = true;
            self.speaker_gain = scratch.levels.speaker_gain();
        } else {
            let samples = path.convert_to_bus(decoded);
            let frame = &mut path.played[..samples];
            self.speaker_gain = apply_gain(frame, self.speaker_gain, scratch.levels.speaker_gain());
            self.taps.on_heard(self.id, frame, &mut scratch.mixer);
            if let Err(e) = self.sink.write(frame) {
                tracing::warn!(call = self.id, error = %e, "audio output failed; the call goes on without it");
            }
        }
        let js = self.jitter.stats();
        self.stats.packets_lost.store(js.lost, Ordering::Relaxed);
        self.stats
            .jitter_ms
            .store(js.jitter_ms.max(0.0) as u64, Ordering::Relaxed);
        self.stats
            .playout_delay_ms
            .store(u64::from(js.current_delay_ms), Ordering::Relaxed);
    }

    fn receive(&mut self, scratch: &mut Scratch) {
        for _ in 0..MAX_PACKETS_PER_TICK {
            match self.socket.recv_from(&mut scratch.recv) {
                Ok((len, from)) => {
                    let len = len.min(scratch.recv.len());
                    self.on_packet(len, from, scratch);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // ICMP errors surface here on some systems: not fatal.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => {
                    self.socket_error("receive", &e);
                    break;
                }
            }
        }
    }

    fn on_packet(&mut self, len: usize, from: SocketAddr, scratch: &mut Scratch) {
        if rtcp::is_rtcp(&scratch.recv[..len]) {
            // RFC 5761 demultiplexing: RTCP on the RTP port when muxed (or from the
            // peer's RTP address, for peers that mux unasked).
            let muxed = self.negotiated.as_ref().is_some_and(|n| n.rtcp_mux);
            if muxed || self.target == Some(from) {
                self.on_rtcp(&scratch.recv[..len], from, true, &scratch.events);
            }
            return;
        }
        let Some(n) = &self.negotiated else { return };
        let Ok(packet) = rtp::parse(&scratch.recv[..len]) else {
            return;
        };
        let pt = packet.header.payload_type;
        let is_media = pt == n.payload_type;
        if !is_media && n.telephone_event != Some(pt) {
            return;
        }
        // Symmetric RTP: answer to where the peer's packets come from.
        if self.latched {
            if self.target != Some(from) {
                return;
            }
        } else if n.remote.is_some() {
            self.latched = true;
            if self.target != Some(from) {
                self.target = Some(from);
                lock(&self.stats.peer).1 = Some(from);
            }
        }
        self.stats.packets_received.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes_received
            .fetch_add(len as u64, Ordering::Relaxed);
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        self.stats.last_received.store(now, Ordering::Relaxed);
        if !is_media {
            if matches!(self.dtmf_mode, DtmfMode::Auto | DtmfMode::Rfc4733) {
                if let Some(digit) = self
                    .dtmf_in
                    .on_packet(packet.header.timestamp, packet.payload)
                {
                    (scratch.events)(MediaEvent::Dtmf {
                        call: self.id,
                        digit,
                        inband: false,
                    });
                }
            }
            return;
        }
        if self.plays() {
            self.peer_ssrc = Some(packet.header.ssrc);
            self.jitter.push_packet(now, &packet.header, packet.payload);
        }
    }

    fn close(&mut self) -> Result<(), MediaError> {
        self.send_rtcp_bye();
        self.sink.close().map_err(MediaError::Audio)
    }
}

/// RTCP transport: the sockets, the schedule in the tick, the numbers and events.
impl Session {
    fn rtcp_now(&self) -> rtcp::Now {
        let since = self.epoch.elapsed();
        rtcp::Now {
            ms: since.as_millis() as u64,
            ntp: rtcp::ntp_from_unix(self.wall_at_epoch + since),
        }
    }

    /// Where our reports go: the RTP target when muxed, else the RTCP address.
    fn rtcp_destination(&self) -> Option<SocketAddr> {
        let n = self.negotiated.as_ref()?;
        n.remote?;
        if n.rtcp_mux {
            self.target
        } else {
            self.rtcp_target
        }
    }

    fn sending(&self) -> rtcp::Sending {
        let packets = self.stats.packets_sent.load(Ordering::Relaxed);
        let bytes = self.stats.bytes_sent.load(Ordering::Relaxed);
        rtcp::Sending {
            packets,
            octets: bytes.saturating_sub(packets * rtp::HEADER_LEN as u64),
            rtp_timestamp: self.timestamp,
        }
    }

    fn reception(&self) -> Option<(u32, crate::jitter::Reception)> {
        Some((self.peer_ssrc?, self.jitter.reception()?))
    }

    fn send_rtcp(&mut self, bytes: &[u8], to: SocketAddr) {
        let muxed = self.negotiated.as_ref().is_some_and(|n| n.rtcp_mux);
        let socket = if muxed {
            &self.socket
        } else {
            match &self.rtcp_socket {
                Some(s) => s,
                None => return,
            }
        };
        match socket.send_to(bytes, to) {
            Ok(_) => {}
            // A full buffer, or an earlier ICMP error (nobody on the peer's RTCP
            // port): the report is lost, like on the wire.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::ConnectionRefused
                ) => {}
            Err(e) => self.socket_error("RTCP send", &e),
        }
    }

    /// Each tick: reads what came to the RTCP port, and sends a report when due.
    fn rtcp_tick(&mut self, scratch: &mut Scratch) {
        // Taken out while reading, so the handler may borrow the session.
        if let Some(socket) = self.rtcp_socket.take() {
            for _ in 0..MAX_PACKETS_PER_TICK {
                match socket.recv_from(&mut scratch.recv) {
                    Ok((len, from)) => {
                        let len = len.min(scratch.recv.len());
                        self.on_rtcp(&scratch.recv[..len], from, false, &scratch.events);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // Interrupted, or an ICMP error surfacing: not fatal.
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::Interrupted | io::ErrorKind::ConnectionRefused
                        ) => {}
                    Err(e) => {
                        self.socket_error("RTCP receive", &e);
                        break;
                    }
                }
            }
            self.rtcp_socket = Some(socket);
        }
        let Some(to) = self.rtcp_destination() else {
            return;
        };
        let now = self.rtcp_now();
        self.rtcp.start(now.ms);
        if self.rtcp.due(now.ms) {
            let report = self.rtcp.report(now, &self.sending(), self.reception());
            self.send_rtcp(&report, to);
            *lock(&self.stats.quality) = self.rtcp.quality();
        }
    }

    /// One RTCP datagram from `from` (on the RTP port when `muxed`).
    fn on_rtcp(&mut self, data: &[u8], from: SocketAddr, muxed: bool, events: &EventSink) {
        if !muxed && self.rtcp_latched && self.rtcp_target != Some(from) {
            return;
        }
        let now = self.rtcp_now();
        let Ok(received) = self.rtcp.on_datagram(now, data) else {
            return;
        };
        if !received.report {
            return;
        }
        // Symmetric RTCP: answer to where the peer's reports come from.
        let has_remote = self.negotiated.as_ref().is_some_and(|n| n.remote.is_some());
        if !muxed && !self.rtcp_latched && has_remote {
            self.rtcp_latched = true;
            self.rtcp_target = Some(from);
        }
        let quality = self.rtcp.quality();
        *lock(&self.stats.quality) = quality;
        (events)(MediaEvent::Quality {
            call: self.id,
            quality,
        });
    }

    /// The last report and a BYE, when the call's media closes.
    fn send_rtcp_bye(&mut self) {
        let Some(to) = self.rtcp_destination() else {
            return;
        };
        let now = self.rtcp_now();
        let bye = self.rtcp.bye(now, &self.sending(), self.reception());
        self.send_rtcp(&bye, to);
        *lock(&self.stats.quality) = self.rtcp.quality();
    }
}

fn find(sessions: &mut [Session], id: u64) -> Result<&mut Session, MediaError> {
    sessions
        .iter_mut()
        .find(|s| s.id == id)
        .ok_or(MediaError::UnknownSession(id))
}

fn handle(
    sessions: &mut Vec<Session>,
    request: Request,
    dtmf: DtmfMode,
    levels: &mut Levels,
    mixer: &mut Mixer,
) -> Result<(), MediaError> {
    match request {
        Request::SetLevels(new) => {
            *levels = new;
            Ok(())
        }
        Request::Add(mut session) => {
            session.dtmf_mode = dtmf;
            if sessions.iter().any(|s| s.id == session.id) {
                return Err(MediaError::DuplicateSession(session.id));
            }
            sessions.push(*session);
            Ok(())
        }
        Request::Configure(id, negotiated) => {
            find(sessions, id)?.configure(*negotiated);
            Ok(())
        }
        Request::SetHold(id, on) => {
            find(sessions, id)?.local_hold = on;
            Ok(())
        }
        Request::SetReceiveOnly(id, on) => {
            find(sessions, id)?.receive_only = on;
            Ok(())
        }
        Request::SendDtmf(id, digits) => find(sessions, id)?.send_dtmf(&digits),
        Request::Close(id) => {
            let index = sessions
                .iter()
                .position(|s| s.id == id)
                .ok_or(MediaError::UnknownSession(id))?;
            let mut session = sessions.swap_remove(index);
            mixer.remove(id);
            session.close()
        }
        Request::Record(id, recorder) => {
            find(sessions, id)?.taps.set_recorder(recorder.map(|r| *r));
            Ok(())
        }
        Request::Play(id, player) => {
            find(sessions, id)?.taps.set_player(player.map(|p| *p));
            Ok(())
        }
        Request::Conference(calls) => {
            if let Some(missing) = calls.iter().find(|c| !sessions.iter().any(|s| s.id == **c)) {
                return Err(MediaError::UnknownSession(*missing));
            }
            mixer.set_members(&calls);
            Ok(())
        }
        Request::SetSource(id, source) => {
            find(sessions, id)?.source = source;
            Ok(())
        }
        Request::SetSink(id, sink) => {
            let session = find(sessions, id)?;
            let mut old = std::mem::replace(&mut session.sink, sink);
            old.close().map_err(MediaError::Audio)
        }
    }
}

/// The media thread.
fn run(rx: mpsc::Receiver<Envelope>, dtmf: DtmfMode, events: EventSink) {
    let mut sessions: Vec<Session> = Vec::new();
    let mut scratch = Box::new(Scratch {
        events,
        levels: Levels::default(),
        mixer: Mixer::new(),
        pcm: [0; FRAME_SAMPLES],
        payload: [0; MAX_PAYLOAD_BYTES],
        packet: [0; rtp::HEADER_LEN + MAX_PAYLOAD_BYTES],
        recv: [0; 2048],
    });
    let mut start = Instant::now();
    let mut ticks: u64 = 0;
    loop {
        if sessions.is_empty() {
            // Idle: sleep until someone asks for something.
            let Ok(envelope) = rx.recv() else { break };
            let _ = envelope.ack.send(handle(
                &mut sessions,
                envelope.request,
                dtmf,
                &mut scratch.levels,
                &mut scratch.mixer,
            ));
            start = Instant::now();
            ticks = 0;
            continue;
        }
        let deadline = start + Duration::from_micros(20_000 * ticks);
        let now = Instant::now();
        if now >= deadline {
            scratch.mixer.begin_tick();
            for s in sessions.iter_mut() {
                s.tick(&mut scratch);
            }
            ticks += 1;
            if now - deadline > MAX_LATENESS {
                let behind = (now - start).as_micros() as u64 / 20_000 + 1;
                tracing::debug!(
                    skipped = behind - ticks,
                    "media thread fell behind; skipping ticks"
                );
                ticks = behind;
            }
            continue;
        }
        match rx.recv_timeout(deadline - now) {
            Ok(envelope) => {
                let _ = envelope.ack.send(handle(
                    &mut sessions,
                    envelope.request,
                    dtmf,
                    &mut scratch.levels,
                    &mut scratch.mixer,
                ));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    for mut s in sessions {
        if let Err(e) = s.close() {
            tracing::warn!(call = s.id, error = %e, "finishing the audio output failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{apply_gain, volume_gain};

    #[test]
    fn gain_ramps_without_a_jump() {
        let mut frame = [10_000i16; 160];
        let now = apply_gain(&mut frame, 1.0, 0.5);
        assert_eq!(now, 0.5);
        assert!(frame[0] > 9_900, "starts near the old gain: {}", frame[0]);
        assert_eq!(frame[159], 5_000);
        assert!(frame.windows(2).all(|w| (w[0] - w[1]).abs() <= 40));
        let mut again = [10_000i16; 160];
        apply_gain(&mut again, 0.5, 0.5);
        assert!(again.iter().all(|&s| s == 5_000));
        assert_eq!(volume_gain(100), 1.0);
        assert_eq!(volume_gain(0), 0.0);
        assert_eq!(volume_gain(250), 1.0);
    }

    use super::*;

    #[test]
    fn port_ranges() {
        assert_eq!(even_range(None, None).unwrap(), None);
        assert_eq!(
            even_range(Some(4000), Some(4010)).unwrap(),
            Some(PortRange {
                min: 4000,
                max: 4010,
                first: 4000,
                last: 4010
            })
        );
        assert_eq!(
            even_range(Some(4001), Some(4009)).unwrap(),
            Some(PortRange {
                min: 4001,
                max: 4009,
                first: 4002,
                last: 4008
            })
        );
        assert_eq!(
            even_range(Some(4000), None).unwrap(),
            Some(PortRange {
                min: 4000,
                max: 65535,
                first: 4000,
                last: 65534
            })
        );
        assert_eq!(
            even_range(None, Some(2000)).unwrap(),
            Some(PortRange {
                min: 1024,
                max: 2000,
                first: 1024,
                last: 2000
            })
        );
        assert_eq!(
            even_range(Some(0), Some(3)).unwrap(),
            Some(PortRange {
                min: 0,
                max: 3,
                first: 2,
                last: 2
            })
        );
        assert_eq!(
            even_range(Some(4001), Some(4001)),
            Err(MediaError::BadPortRange {
                min: 4001,
                max: 4001
            })
        );
        assert_eq!(
            even_range(Some(5000), Some(4000)),
            Err(MediaError::BadPortRange {
                min: 5000,
                max: 4000
            })
        );
        assert_eq!(
            MediaError::NoFreePort {
                min: 4000,
                max: 4010
            }
            .to_string(),
            "no free RTP port in 4000-4010"
        );
    }

    #[test]
    fn random_values_differ() {
        let a = random_u64();
        let b = random_u64();
        assert_ne!(a, b);
    }

    #[test]
    fn recording_and_playing_need_a_session_and_a_readable_file() {
        let dir =
            std::env::temp_dir().join(format!("microsip-media-engine-rec-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let m = MediaEngine::start(MediaConfig {
            bind_ip: IpAddr::from([127, 0, 0, 1]),
            rtp_port_min: None,
            rtp_port_max: None,
            dtmf: DtmfMode::Auto,
        })
        .unwrap();
        let path = dir.join("sub").join("call.wav");
        assert_eq!(
            m.start_recording(5, &path),
            Err(MediaError::UnknownSession(5))
        );
        m.open(1, AudioSpec::Null, AudioSpec::Null).unwrap();
        assert!(matches!(
            m.play(1, &dir.join("missing.wav"), PlayEnd::Stop),
            Err(MediaError::Audio(_))
        ));
        // The folder is made; a second recorder for the same call is refused.
        m.start_recording(1, &path).unwrap();
        assert!(matches!(
            m.start_recording(1, &path),
            Err(MediaError::Recording(_))
        ));
        thread::sleep(Duration::from_millis(200));
        let status = m.stop_recording(1).unwrap().unwrap();
        assert_eq!(status.error, None);
        assert!(status.frames_written > 0, "{status:?}");
        // The header is final as soon as stop returns.
        let reader = hound::WavReader::open(&path).unwrap();
        assert_eq!(
            u64::from(reader.duration()),
            status.frames_written * FRAME_SAMPLES as u64
        );
        assert_eq!(m.stop_recording(1), Ok(None));
        assert_eq!(
            m.set_conference(&[1, 9]),
            Err(MediaError::UnknownSession(9))
        );
        m.close(1).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn engine_is_clone_send_sync() {
        fn check<T: Clone + Send + Sync>() {}
        check::<MediaEngine>();
    }

    /// Every codec's path: a stream with one lost packet plays a whole bus frame
    /// every tick once started (the loss concealed: Opus by FEC from the next
    /// packet, the others by `Plc`), and the tone keeps its pitch throughout.
    #[test]
    fn codec_paths_play_whole_frames_and_conceal_a_loss() {
        use crate::audio::ToneSource;
        use crate::test_signal::zero_crossings;
        for codec in [Codec::Pcmu, Codec::Pcma, Codec::G722, Codec::Opus] {
            let mut sender = CodecPath::new(codec, 1).unwrap();
            let mut receiver = CodecPath::new(codec, 2).unwrap();
            let mut jitter = JitterBuffer::new(receiver.jitter_config());
            let ticks = sender.frame_ticks();
            let mut tone = ToneSource::new(500.0);
            let mut frame = [0i16; FRAME_SAMPLES];
            let mut payload = [0u8; MAX_PAYLOAD_BYTES];
            let mut played = Vec::new();
            for k in 0..60u16 {
                tone.read(&mut frame);
                let n = sender.encode(&frame, &mut payload);
                assert!(n > 0, "{codec}");
                let now = u64::from(k) * 20;
                if k != 30 {
                    jitter.push(now, k, u32::from(k) * ticks, k == 0, &payload[..n]);
                }
                if let Some(decoded) = receiver.decode_next(&mut jitter, now) {
                    let m = receiver.convert_to_bus(decoded);
                    assert_eq!(m, FRAME_SAMPLES, "{codec}: tick {k}");
                    played.extend_from_slice(&receiver.played[..m]);
                }
            }
            assert!(
                played.len() >= 50 * FRAME_SAMPLES,
                "{codec}: {}",
                played.len()
            );
            assert_eq!(jitter.stats().lost, 1, "{codec}");
            // 500 Hz: 20 sign changes per 20 ms frame, in every frame after the
            // first few (codec start-up), the concealed one included.
            for (i, f) in played.chunks_exact(FRAME_SAMPLES).enumerate().skip(3) {
                let z = zero_crossings(f);
                assert!((18..=22).contains(&z), "{codec}: frame {i}: {z} crossings");
            }
        }
    }
}
