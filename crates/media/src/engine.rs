//! The media thread: the sockets, the clock and the devices around every call's session.
//!
//! One thread, named `media`, serves the RTP of every call on one 20 ms tick.
//! This module owns the RTP and RTCP sockets, the clock, the audio devices of each
//! call and the handle callers use; what a call's media decides (stream state,
//! codec, jitter buffer, DTMF, RTCP, latching, hold) is its
//! [`MediaSession`], which is handed the datagrams that
//! arrived, the time, and the call's source and sink, and hands back datagrams to send
//! and events. The tick runs on absolute deadlines (`start + n × 20 ms`), so it does
//! not drift; there is no timer or task per call. Each tick, for each call: read what
//! arrived on its sockets into the session, run the session's frame, send what it
//! queued, report its events through the event callback and publish its counters.
//! RTCP goes on RTP port + 1 (or on the RTP port with rtcp-mux).
//!
//! A call's `file:` output is written by a writer thread (see [`crate::recorder`]),
//! never on the tick; closing the call waits, on the caller's thread, for the file
//! to be finished.
//!
//! Callers talk to the thread through [`MediaEngine`], a cheap clonable handle; every
//! request waits for the thread's acknowledgement (at most five seconds), so when
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

use crate::audio::{self, AudioError, AudioSink, AudioSource, AudioSpec};
use crate::mixer::Mixer;
use crate::recorder::{self, PlayEnd, Player, RecordingHandle, RecordingStatus};
use crate::rtcp::Quality;
use crate::sdp::{Codec, Negotiated};
use crate::session::{MediaSession, SessionConfig, TickIo, Via};
use crate::stream::{self, ClientView, StreamClient, StreamInfo, StreamRequest, StreamTap};

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
    /// The speaker is muted (what we hear is silenced).
    pub speaker_muted: bool,
    /// The microphone is muted (what we send is silenced).
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
    pub(crate) fn speaker_gain(&self) -> f32 {
        if self.speaker_muted {
            0.0
        } else {
            volume_gain(self.speaker)
        }
    }
    pub(crate) fn microphone_gain(&self) -> f32 {
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

/// Something the media thread reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// A DTMF digit was received on call `call`; `inband`: heard in the audio
    /// (else an RFC 4733 event).
    Dtmf {
        /// The call it arrived on.
        call: u64,
        /// The digit: `0-9`, `*`, `#` or `A-D`.
        digit: char,
        /// Heard in the audio (else an RFC 4733 event).
        inband: bool,
    },
    /// The file played into call `call` ran out; `hangup`: the call is to end now
    /// (else it is back on its microphone).
    PlaybackEnded {
        /// The call the file played into.
        call: u64,
        /// End the call now (the file was played with `hangup`).
        hangup: bool,
    },
    /// Writing the recording of call `call` failed (disk full...); the call goes on.
    RecordingFailed {
        /// The call being recorded.
        call: u64,
        /// The file that could not be written.
        path: std::path::PathBuf,
        /// What went wrong.
        error: String,
    },
    /// An RTCP report arrived from the peer of call `call`; `quality` is the call's
    /// numbers with it.
    Quality {
        /// The call the report is about.
        call: u64,
        /// The call's quality numbers with this report.
        quality: Quality,
    },
    /// A stream client started listening to call `call` (see [`crate::stream`]).
    StreamStarted {
        /// The call.
        call: u64,
        /// The client.
        info: StreamInfo,
    },
    /// A stream client of call `call` was let go of: it went away, stopped reading,
    /// was stopped, or the call ended (`reason` says which).
    StreamStopped {
        /// The call.
        call: u64,
        /// The client, with its final counters.
        info: StreamInfo,
        /// Why, in words.
        reason: String,
    },
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
    /// A stream client could not be added (bad rate, too many clients).
    Stream(String),
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
            MediaError::Stream(e) => f.write_str(e),
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

/// A session's counters as the media thread last published them (after each tick
/// and each request), and when.
#[derive(Debug)]
struct Published {
    stats: MediaStats,
    at: Instant,
}

type SharedStats = Mutex<Published>;

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
    /// How DTMF is sent and detected, for every session.
    dtmf: DtmfMode,
    epoch: Instant,
    /// STUN servers asked for each RTP socket's public address (empty: none).
    stun: Mutex<Vec<SocketAddr>>,
    /// Stream clients, for listings (those the media thread let go of are pruned).
    streams: Mutex<Vec<Arc<dyn ClientView>>>,
    /// The RTCP socket's public address is asked for too.
    rtcp_stun: Mutex<bool>,
}

/// The sockets [`MediaEngine::open_public`] opened for a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenedPorts {
    /// The local RTP port.
    pub port: u16,
    /// The RTP socket's public address as a STUN server saw it (`None`: no
    /// servers set, or none answered).
    pub public: Option<SocketAddr>,
    /// The local RTCP port (RTP + 1; `None`: it could not be bound).
    pub rtcp_port: Option<u16>,
    /// The RTCP socket's public address (only with [`MediaEngine::set_rtcp_discovery`]).
    pub rtcp_public: Option<SocketAddr>,
}

/// How long stopping a recording waits for its file to be finished.
const RECORDING_FINISH_TIMEOUT: Duration = Duration::from_secs(3);

enum Request {
    Add(Box<Call>),
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
    /// A new stream client of a call.
    AddStream(u64, Box<StreamTap>),
    /// Let go of the stream clients of a call that asked to stop, now.
    DropClosingStreams(u64),
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
            dtmf: config.dtmf,
            epoch: Instant::now(),
            stun: Mutex::new(Vec::new()),
            streams: Mutex::new(Vec::new()),
            rtcp_stun: Mutex::new(false),
        });
        let (tx, rx) = mpsc::channel();
        thread::Builder::new()
            .name("media".into())
            .stack_size(256 * 1024)
            .spawn(move || run(rx, events))
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
        self.open_on(id, None, source, sink)
    }

    /// [`MediaEngine::open`] with the RTP socket bound on `bind` instead of the
    /// engine's address (`None`: the engine's): a call whose peer is of the other
    /// address family (an IPv6-only offer on an IPv4 account) gets a socket of that
    /// family. Fails like `open`, also when `bind` is not a local address.
    pub fn open_on(
        &self,
        id: u64,
        bind: Option<IpAddr>,
        source: AudioSpec,
        sink: AudioSpec,
    ) -> Result<u16, MediaError> {
        self.open_public(id, bind, source, sink)
            .map(|opened| opened.port)
    }

    /// The STUN servers asked for the public address of each RTP socket opened from
    /// now on (the ini's `enableSTUN` + `STUN`); empty turns it off.
    pub fn set_stun_servers(&self, servers: Vec<SocketAddr>) {
        *lock(&self.shared.stun) = servers;
    }

    /// Whether the RTCP socket's public address is asked for too (ICE gives RTCP
    /// its own candidates for peers that do not multiplex it); off by default.
    pub fn set_rtcp_discovery(&self, on: bool) {
        *lock(&self.shared.rtcp_stun) = on;
    }

    /// [`MediaEngine::open_on`], and the RTP socket's public address as the first
    /// STUN server that answered saw it (`None`: no servers set, or none answered;
    /// the call goes on with the local address), and the RTCP socket's with
    /// [`MediaEngine::set_rtcp_discovery`]. With STUN on this blocks for the
    /// round trip (at most `stun::PER_SERVER` per silent server).
    pub fn open_public(
        &self,
        id: u64,
        bind: Option<IpAddr>,
        source: AudioSpec,
        sink: AudioSpec,
    ) -> Result<OpenedPorts, MediaError> {
        {
            let sessions = lock(&self.shared.sessions);
            if sessions.contains_key(&id) {
                return Err(MediaError::DuplicateSession(id));
            }
        }
        let (socket, rtcp_socket) = self.bind_rtp(bind.unwrap_or(self.shared.bind_ip))?;
        let local_port = socket
            .local_addr()
            .map_err(|e| MediaError::Socket(e.to_string()))?
            .port();
        let servers = lock(&self.shared.stun).clone();
        let public = if servers.is_empty() {
            None
        } else {
            match microsip_nat::stun::discover(&socket, &servers) {
                Ok(m) => {
                    // The server that answered is asked first next time: a dead
                    // one ahead of it in the list would delay every call.
                    if servers.first() != Some(&m.server) {
                        let mut list = lock(&self.shared.stun);
                        list.retain(|s| *s != m.server);
                        list.insert(0, m.server);
                    }
                    tracing::info!(
                        call = id,
                        "STUN: RTP port {local_port} is {} seen from {} (round trip {:.2} ms)",
                        m.public,
                        m.server,
                        m.round_trip.as_secs_f64() * 1000.0
                    );
                    Some(m.public)
                }
                Err(e) => {
                    tracing::warn!(call = id, "STUN: no public address for RTP ({e})");
                    None
                }
            }
        };
        let rtcp_port = rtcp_socket
            .as_ref()
            .and_then(|s| s.local_addr().ok())
            .map(|a| a.port());
        let rtcp_public = match (&rtcp_socket, public, *lock(&self.shared.rtcp_stun)) {
            (Some(rtcp), Some(_), true) => {
                let servers = lock(&self.shared.stun).clone();
                match microsip_nat::stun::discover(rtcp, &servers[..servers.len().min(1)]) {
                    Ok(m) => Some(m.public),
                    Err(e) => {
                        tracing::warn!(call = id, "STUN: no public address for RTCP ({e})");
                        None
                    }
                }
            }
            _ => None,
        };
        for s in std::iter::once(&socket).chain(rtcp_socket.as_ref()) {
            s.set_nonblocking(true)
                .map_err(|e| MediaError::Socket(e.to_string()))?;
        }
        let source = audio::open_source(&source)?;
        let (sink, sink_file) = open_sink(&sink)?;
        let epoch = self.shared.epoch;
        let wall_at_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_sub(epoch.elapsed());
        let session = MediaSession::new(SessionConfig {
            id,
            local_port,
            dtmf: self.shared.dtmf,
            seed: [random_u64(), random_u64()],
            epoch,
            wall_at_epoch,
        });
        let now = Instant::now();
        let stats = Arc::new(Mutex::new(Published {
            stats: session.stats(now),
            at: now,
        }));
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
        let call = Call {
            session,
            socket,
            rtcp_socket,
            source,
            sink,
            stats,
            socket_error_logged: false,
        };
        match self.request(Request::Add(Box::new(call))) {
            Ok(()) => Ok(OpenedPorts {
                port: local_port,
                public,
                rtcp_port,
                rtcp_public,
            }),
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
    fn bind_rtp(&self, ip: IpAddr) -> Result<(UdpSocket, Option<UdpSocket>), MediaError> {
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
        let shared = lock(&self.shared.sessions).get(&id)?.clone();
        let published = lock(&shared);
        let mut stats = published.stats.clone();
        // Published at `at`: the last packet is older by now.
        let since = published.at.elapsed().as_millis() as u64;
        stats.last_received_ms_ago = stats.last_received_ms_ago.map(|ms| ms + since);
        Some(stats)
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

    /// Adds a stream client to call `id` (see [`crate::stream`]): from the next tick
    /// it gets what the far end says and its frames go into the call. Errors: no such
    /// session, a rate other than 8000 or 16000, too many clients on the call.
    pub fn add_stream(&self, id: u64, request: StreamRequest) -> Result<StreamClient, MediaError> {
        static NEXT_CLIENT: AtomicU64 = AtomicU64::new(1);
        if !lock(&self.shared.sessions).contains_key(&id) {
            return Err(MediaError::UnknownSession(id));
        }
        if !stream::STREAM_RATES.contains(&request.rate) {
            return Err(MediaError::Stream(format!(
                "rate {} Hz is not offered: use 8000 or 16000",
                request.rate
            )));
        }
        let client_id = NEXT_CLIENT.fetch_add(1, Ordering::Relaxed);
        let (tap, client, view) = stream::new_client(id, client_id, &request);
        self.request(Request::AddStream(id, Box::new(tap)))?;
        let mut streams = lock(&self.shared.streams);
        streams.retain(|c| !c.stopped());
        streams.push(view);
        Ok(client)
    }

    /// The stream clients of call `id` (`None`: of every call), oldest first.
    pub fn streams(&self, id: Option<u64>) -> Vec<StreamInfo> {
        let mut streams = lock(&self.shared.streams);
        streams.retain(|c| !c.stopped());
        streams
            .iter()
            .map(|c| c.info())
            .filter(|i| id.is_none_or(|id| i.call == id))
            .collect()
    }

    /// Lets go of the stream clients of call `id` (`client`: only that one); returns
    /// those stopped, once the media thread let go of them (their sockets then get
    /// the end of the stream). Errors: no such session, no such client on the call.
    pub fn stop_streams(
        &self,
        id: u64,
        client: Option<u64>,
    ) -> Result<Vec<StreamInfo>, MediaError> {
        if !lock(&self.shared.sessions).contains_key(&id) {
            return Err(MediaError::UnknownSession(id));
        }
        let chosen: Vec<Arc<dyn ClientView>> = {
            let mut streams = lock(&self.shared.streams);
            streams.retain(|c| !c.stopped());
            streams
                .iter()
                .filter(|c| {
                    let info = c.info();
                    info.call == id && client.is_none_or(|n| info.client == n)
                })
                .cloned()
                .collect()
        };
        if let (Some(n), true) = (client, chosen.is_empty()) {
            return Err(MediaError::Stream(format!(
                "call {id} has no stream client {n}"
            )));
        }
        for c in &chosen {
            c.request_stop();
        }
        self.request(Request::DropClosingStreams(id))?;
        Ok(chosen.iter().map(|c| c.info()).collect())
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

/// A call on the media thread: its sans-IO [`MediaSession`] and the I/O around it
/// (the RTP and RTCP sockets, the audio source and sink, the published counters).
struct Call {
    session: MediaSession,
    socket: UdpSocket,
    /// The socket on RTP port + 1 (`None`: none could be bound; RTCP then only with
    /// rtcp-mux).
    rtcp_socket: Option<UdpSocket>,
    source: Box<dyn AudioSource>,
    sink: Box<dyn AudioSink>,
    stats: Arc<SharedStats>,
    socket_error_logged: bool,
}

impl Call {
    fn id(&self) -> u64 {
        self.session.id()
    }

    fn socket_error(&mut self, what: &str, e: &io::Error) {
        if !self.socket_error_logged {
            self.socket_error_logged = true;
            tracing::warn!(call = self.id(), error = %e, "{what} failed; the call goes on");
        }
    }

    /// Hands what waits on both sockets to the session, stamped `now`.
    fn receive(&mut self, now: Instant, buf: &mut [u8]) {
        let session = &mut self.session;
        let rtp = drain(&self.socket, buf, |from, data| {
            session.handle_rtp(now, from, data)
        });
        let rtcp = self.rtcp_socket.as_ref().and_then(|socket| {
            drain(socket, buf, |from, data| {
                session.handle_rtcp(now, from, data)
            })
        });
        if let Some(e) = rtp {
            self.socket_error("RTP receive", &e);
        }
        if let Some(e) = rtcp {
            self.socket_error("RTCP receive", &e);
        }
    }

    /// Sends what the session queued, tells what it has to tell, and publishes its
    /// counters.
    fn flush(&mut self, now: Instant, events: &EventSink) {
        while let Some(t) = self.session.poll_transmit() {
            let socket = match t.via {
                Via::Rtp => Some(&self.socket),
                Via::Rtcp => self.rtcp_socket.as_ref(),
            };
            if let Some(socket) = socket {
                match socket.send_to(&t.data, t.to) {
                    Ok(_) => {}
                    // An earlier ICMP error (nobody on the peer's port): the packet
                    // is lost, like on the wire.
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                    // A full buffer: lost before it left.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.session.send_failed(&t),
                    Err(e) => {
                        self.session.send_failed(&t);
                        self.socket_error("send", &e);
                    }
                }
            }
            self.session.recycle(t);
        }
        while let Some(event) = self.session.poll_event() {
            (events)(event);
        }
        *lock(&self.stats) = Published {
            stats: self.session.stats(now),
            at: now,
        };
    }

    /// One 20 ms frame: what arrived, then the session's tick with this call's
    /// devices, then what it produced.
    fn tick(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        levels: Levels,
        mixer: &mut Mixer,
        events: &EventSink,
    ) {
        self.receive(now, buf);
        self.session.tick(
            now,
            &mut TickIo {
                levels,
                mixer,
                source: self.source.as_mut(),
                sink: self.sink.as_mut(),
            },
        );
        self.flush(now, events);
    }

    /// The last report and a BYE go out; the sink is finished (a `file:` is let go
    /// of: its writer thread finishes it).
    fn close(&mut self, events: &EventSink) -> Result<(), MediaError> {
        let now = Instant::now();
        self.session.close(now);
        self.flush(now, events);
        self.sink.close().map_err(MediaError::Audio)
    }
}

/// Reads what waits on `socket` (at most [`MAX_PACKETS_PER_TICK`] datagrams) into
/// `on`; returns the error that stopped it, if one did.
fn drain(
    socket: &UdpSocket,
    buf: &mut [u8],
    mut on: impl FnMut(SocketAddr, &[u8]),
) -> Option<io::Error> {
    for _ in 0..MAX_PACKETS_PER_TICK {
        match socket.recv_from(buf) {
            Ok((len, from)) => on(from, &buf[..len.min(buf.len())]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            // Interrupted, or an ICMP error surfacing: not fatal.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionRefused
                ) => {}
            Err(e) => return Some(e),
        }
    }
    None
}

fn find(calls: &mut [Call], id: u64) -> Result<&mut Call, MediaError> {
    calls
        .iter_mut()
        .find(|c| c.id() == id)
        .ok_or(MediaError::UnknownSession(id))
}

/// What the media thread keeps besides its calls.
struct Thread {
    events: EventSink,
    levels: Levels,
    /// The conference.
    mixer: Mixer,
    /// One received datagram.
    recv: Box<[u8; 2048]>,
}

fn handle(calls: &mut Vec<Call>, request: Request, t: &mut Thread) -> Result<(), MediaError> {
    let id = match request {
        Request::SetLevels(new) => {
            t.levels = new;
            return Ok(());
        }
        Request::Add(call) => {
            if calls.iter().any(|c| c.id() == call.id()) {
                return Err(MediaError::DuplicateSession(call.id()));
            }
            calls.push(*call);
            return Ok(());
        }
        Request::Close(id) => {
            let index = calls
                .iter()
                .position(|c| c.id() == id)
                .ok_or(MediaError::UnknownSession(id))?;
            let mut call = calls.swap_remove(index);
            t.mixer.remove(id);
            return call.close(&t.events);
        }
        Request::Conference(members) => {
            if let Some(missing) = members
                .iter()
                .find(|m| !calls.iter().any(|c| c.id() == **m))
            {
                return Err(MediaError::UnknownSession(*missing));
            }
            t.mixer.set_members(&members);
            return Ok(());
        }
        Request::Configure(id, negotiated) => {
            find(calls, id)?.session.configure(*negotiated);
            id
        }
        Request::SetHold(id, on) => {
            find(calls, id)?.session.set_hold(on);
            id
        }
        Request::SetReceiveOnly(id, on) => {
            find(calls, id)?.session.set_receive_only(on);
            id
        }
        Request::SendDtmf(id, digits) => {
            find(calls, id)?.session.send_dtmf(&digits)?;
            id
        }
        Request::Record(id, recorder) => {
            find(calls, id)?.session.set_recorder(recorder.map(|r| *r));
            id
        }
        Request::Play(id, player) => {
            find(calls, id)?.session.set_player(player.map(|p| *p));
            id
        }
        Request::SetSource(id, source) => {
            find(calls, id)?.source = source;
            id
        }
        Request::AddStream(id, tap) => {
            find(calls, id)?.session.add_stream(*tap)?;
            id
        }
        Request::DropClosingStreams(id) => {
            find(calls, id)?.session.drop_closing_streams();
            id
        }
        Request::SetSink(id, sink) => {
            let call = find(calls, id)?;
            let mut old = std::mem::replace(&mut call.sink, sink);
            old.close().map_err(MediaError::Audio)?;
            id
        }
    };
    // The change shows in the counters as soon as the request returns.
    let call = find(calls, id)?;
    call.flush(Instant::now(), &t.events);
    Ok(())
}

/// The media thread: the clock and the sockets around the calls' sessions.
fn run(rx: mpsc::Receiver<Envelope>, events: EventSink) {
    let mut calls: Vec<Call> = Vec::new();
    let mut t = Thread {
        events,
        levels: Levels::default(),
        mixer: Mixer::new(),
        recv: Box::new([0; 2048]),
    };
    let mut start = Instant::now();
    let mut ticks: u64 = 0;
    loop {
        if calls.is_empty() {
            // Idle: sleep until someone asks for something.
            let Ok(envelope) = rx.recv() else { break };
            let _ = envelope
                .ack
                .send(handle(&mut calls, envelope.request, &mut t));
            start = Instant::now();
            ticks = 0;
            continue;
        }
        let deadline = start + Duration::from_micros(20_000 * ticks);
        let now = Instant::now();
        if now >= deadline {
            t.mixer.begin_tick();
            for c in calls.iter_mut() {
                c.tick(now, &mut t.recv[..], t.levels, &mut t.mixer, &t.events);
            }
            ticks += 1;
            // A thread that is behind never waits in `recv_timeout`: serve what was
            // asked meanwhile (a stream client, a recording...) after each tick, or
            // requests would starve while the calls keep it busy.
            while let Ok(envelope) = rx.try_recv() {
                let _ = envelope
                    .ack
                    .send(handle(&mut calls, envelope.request, &mut t));
            }
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
                let _ = envelope
                    .ack
                    .send(handle(&mut calls, envelope.request, &mut t));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    for mut c in calls {
        if let Err(e) = c.close(&t.events) {
            tracing::warn!(call = c.id(), error = %e, "finishing the audio output failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_levels() {
        assert_eq!(volume_gain(100), 1.0);
        assert_eq!(volume_gain(0), 0.0);
        assert_eq!(volume_gain(250), 1.0);
    }

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
        let dir = microsip_test_support::TempDir::new("media-engine-rec");
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
            status.frames_written * crate::FRAME_SAMPLES as u64
        );
        assert_eq!(m.stop_recording(1), Ok(None));
        assert_eq!(
            m.set_conference(&[1, 9]),
            Err(MediaError::UnknownSession(9))
        );
        m.close(1).unwrap();
    }

    #[test]
    fn engine_is_clone_send_sync() {
        fn check<T: Clone + Send + Sync>() {}
        check::<MediaEngine>();
    }
}
