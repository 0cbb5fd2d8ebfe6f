//! Live call audio for programs: the per-call taps that hand what the far end says
//! to stream clients (WebSocket listeners, voice bots) and take the audio they send
//! back into the call.
//!
//! This module owns the two queues between the media thread and one client, and
//! nothing of sockets or protocols (the control faces speak WebSocket around a
//! [`StreamClient`]):
//!
//! * **out**: each tick the call plays a frame, the decoded frame (after the jitter
//!   buffer and loss concealment, before the speaker gain, at the codec's PCM rate)
//!   is copied into a bounded channel ([`OUT_QUEUE_FRAMES`]) with `try_send`; a client
//!   whose channel is full has stopped reading and is dropped, never waited for;
//! * **in**: the client's frames (brought to the bus rate on the client's side) wait
//!   in a briefly locked queue ([`IN_QUEUE_FRAMES`]); each tick the call is about to
//!   send, the media thread takes one frame of each client and plays it instead of
//!   the microphone ([`StreamMode::Replace`]) or adds it ([`StreamMode::Mix`]).
//!   [`StreamClient::clear`] empties the queue at once (barge-in: the next frame sent
//!   is already without it). Marks queued between frames are echoed to the client
//!   once the audio before them went out.
//!
//! The media thread never blocks on a client: it only copies frames, `try_send`s, and
//! holds a client's queue lock for one pop. Memory is taken when a client comes,
//! never per tick.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc::{self, error::TrySendError};

use crate::audio::{FRAME_SAMPLES, SAMPLE_RATE};
use crate::resample::Resampler;

/// Frames (20 ms each) the phone queues for a client before the client counts as not
/// reading and is dropped (1 s).
pub const OUT_QUEUE_FRAMES: usize = 50;
/// Frames (20 ms each) a client may queue into the call ahead of time (60 s); more is
/// refused frame by frame.
pub const IN_QUEUE_FRAMES: usize = 3000;
/// Clients one call streams to at most.
pub const MAX_CLIENTS_PER_CALL: usize = 8;

/// The rates a client may choose, Hz.
pub const STREAM_RATES: [u32; 2] = [8000, 16000];

/// How a client's audio goes into the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StreamMode {
    /// Instead of the microphone (silence while nothing is queued).
    #[default]
    Replace,
    /// Added to the microphone.
    Mix,
}

impl StreamMode {
    /// `replace` or `mix`.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamMode::Replace => "replace",
            StreamMode::Mix => "mix",
        }
    }

    /// Reads `replace` / `mix` (any case); `None` for anything else.
    pub fn parse(word: &str) -> Option<StreamMode> {
        match word.to_ascii_lowercase().as_str() {
            "replace" => Some(StreamMode::Replace),
            "mix" => Some(StreamMode::Mix),
            _ => None,
        }
    }
}

/// What a client asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRequest {
    /// The PCM rate of the frames both ways: 8000 or 16000 Hz.
    pub rate: u32,
    /// How its audio goes into the call.
    pub mode: StreamMode,
    /// Who it is, for listings and events (a peer address or the URL dialled).
    pub remote: String,
}

/// One client as listings show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// The client's id (unique in this run).
    pub client: u64,
    /// The call it streams.
    pub call: u64,
    /// Its PCM rate, Hz.
    pub rate: u32,
    /// How its audio goes into the call.
    pub mode: StreamMode,
    /// Who it is.
    pub remote: String,
    /// Frames sent to it so far.
    pub frames_out: u64,
    /// Frames it sent that went into the call so far.
    pub frames_in: u64,
    /// Frames it sent that were refused (wrong size, queue full).
    pub frames_refused: u64,
}

/// What the media thread hands a client.
// Frames travel inline: the channel's slots are allocated once, never per tick.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum StreamOut {
    /// One 20 ms frame of what the far end says, at `rate` (the codec's PCM rate;
    /// [`StreamClient::convert`] brings it to the client's).
    Audio {
        /// The samples; `len` of them are used.
        pcm: [i16; FRAME_SAMPLES],
        /// How many samples.
        len: usize,
        /// Their rate, Hz.
        rate: u32,
    },
    /// A mark the client queued: the audio it sent before it has gone out.
    Mark(String),
}

/// A client's frame or mark waiting to go into the call.
// Inline frames: one allocation-free slot each in the queue.
#[allow(clippy::large_enum_variant)]
enum Inbound {
    Frame([i16; FRAME_SAMPLES]),
    Mark(String),
}

/// What both sides of one client share.
struct ClientShared {
    info: Mutex<StreamInfo>,
    inbox: Mutex<VecDeque<Inbound>>,
    /// The client side is gone or asked to stop: the media thread lets go.
    closing: AtomicBool,
    /// The media thread let go (why, in `reason`).
    stopped: AtomicBool,
    reason: Mutex<Option<String>>,
    frames_out: AtomicU64,
    frames_in: AtomicU64,
    frames_refused: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ClientShared {
    fn info(&self) -> StreamInfo {
        let mut info = lock(&self.info).clone();
        info.frames_out = self.frames_out.load(Ordering::Relaxed);
        info.frames_in = self.frames_in.load(Ordering::Relaxed);
        info.frames_refused = self.frames_refused.load(Ordering::Relaxed);
        info
    }
}

/// Why a client's frame was refused (the call is unharmed; the frame is dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Not 20 ms at the client's rate.
    WrongSize {
        /// Bytes received.
        got: usize,
        /// Bytes a 20 ms frame has at the client's rate.
        want: usize,
    },
    /// [`IN_QUEUE_FRAMES`] are already queued.
    QueueFull,
    /// The phone let go of this client (the call ended, it was stopped).
    Stopped,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::WrongSize { got, want } => write!(
                f,
                "a frame must be 20 ms of 16-bit mono PCM: {want} bytes at this rate, got {got}; frame dropped"
            ),
            FrameError::QueueFull => write!(
                f,
                "{} s of audio are already queued; frame dropped",
                IN_QUEUE_FRAMES / 50
            ),
            FrameError::Stopped => f.write_str("the stream has stopped"),
        }
    }
}

impl std::error::Error for FrameError {}

/// The client's side of one stream: frames out of the call, frames and marks into
/// it. Dropping it lets the call go of the client (the media thread notices on its
/// next tick).
pub struct StreamClient {
    shared: Arc<ClientShared>,
    out: mpsc::Receiver<StreamOut>,
    rate: u32,
    /// Codec rate → client rate (rebuilt when the codec's rate changes).
    to_client: Option<Resampler>,
    /// Client rate → bus rate.
    to_bus: Option<Resampler>,
    converted: Vec<i16>,
}

impl std::fmt::Debug for StreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamClient")
            .field("info", &self.shared.info())
            .finish()
    }
}

impl StreamClient {
    /// This client as listings show it.
    pub fn info(&self) -> StreamInfo {
        self.shared.info()
    }

    /// The client's PCM rate, Hz.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Bytes in one 20 ms frame at the client's rate.
    pub fn frame_bytes(&self) -> usize {
        self.rate as usize / 50 * 2
    }

    /// The next thing for the client; `None` once the phone let go of it (the reason
    /// is in [`StreamClient::stop_reason`]).
    pub async fn next(&mut self) -> Option<StreamOut> {
        self.out.recv().await
    }

    /// Why the phone let go of this client (`None`: it has not).
    pub fn stop_reason(&self) -> Option<String> {
        lock(&self.shared.reason).clone()
    }

    /// A frame of [`StreamOut::Audio`] at the client's rate, as little-endian bytes.
    pub fn convert(&mut self, pcm: &[i16], rate: u32) -> Vec<u8> {
        let samples: &[i16] = if rate == self.rate {
            pcm
        } else {
            let wanted_from = self.to_client.as_ref().map(Resampler::from_rate);
            if wanted_from != Some(rate) {
                self.to_client = Resampler::new(rate, self.rate).ok();
            }
            match self.to_client.as_mut() {
                Some(r) => {
                    self.converted.resize(r.max_output(pcm.len()), 0);
                    let n = r.process(pcm, &mut self.converted);
                    &self.converted[..n]
                }
                None => pcm,
            }
        };
        samples.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    /// Queues one 20 ms frame from the client (little-endian bytes at its rate) to go
    /// into the call. A frame of the wrong size, or one past [`IN_QUEUE_FRAMES`], is
    /// refused and dropped; the call is unharmed.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        if self.shared.stopped.load(Ordering::Relaxed) {
            return Err(FrameError::Stopped);
        }
        let want = self.frame_bytes();
        if bytes.len() != want {
            self.shared.frames_refused.fetch_add(1, Ordering::Relaxed);
            return Err(FrameError::WrongSize {
                got: bytes.len(),
                want,
            });
        }
        let pcm: Vec<i16> = bytes
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        let mut frame = [0i16; FRAME_SAMPLES];
        match self.to_bus.as_mut() {
            Some(r) => {
                let mut out = vec![0i16; r.max_output(pcm.len())];
                let n = r.process(&pcm, &mut out).min(FRAME_SAMPLES);
                frame[FRAME_SAMPLES - n..].copy_from_slice(&out[..n]);
            }
            None => frame.copy_from_slice(&pcm[..FRAME_SAMPLES]),
        }
        let mut inbox = lock(&self.shared.inbox);
        let frames = inbox
            .iter()
            .filter(|i| matches!(i, Inbound::Frame(_)))
            .count();
        if frames >= IN_QUEUE_FRAMES {
            drop(inbox);
            self.shared.frames_refused.fetch_add(1, Ordering::Relaxed);
            return Err(FrameError::QueueFull);
        }
        inbox.push_back(Inbound::Frame(frame));
        Ok(())
    }

    /// Queues a mark after the frames queued so far: it comes back as
    /// [`StreamOut::Mark`] once they went out (at once when none are queued).
    pub fn mark(&self, name: String) {
        lock(&self.shared.inbox).push_back(Inbound::Mark(name));
    }

    /// Drops every frame queued (barge-in); returns the marks dropped with them.
    pub fn clear(&self) -> Vec<String> {
        let drained: Vec<Inbound> = lock(&self.shared.inbox).drain(..).collect();
        drained
            .into_iter()
            .filter_map(|i| match i {
                Inbound::Mark(name) => Some(name),
                Inbound::Frame(_) => None,
            })
            .collect()
    }
}

impl Drop for StreamClient {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::Relaxed);
    }
}

/// The media thread's side of one client.
pub(crate) struct StreamTap {
    shared: Arc<ClientShared>,
    out: mpsc::Sender<StreamOut>,
}

impl StreamTap {
    pub(crate) fn info(&self) -> StreamInfo {
        self.shared.info()
    }
}

/// Makes both sides of a new client of call `call`: the tap goes to the media thread,
/// the client to whoever speaks to it. `client` is its id.
pub(crate) fn new_client(
    call: u64,
    client: u64,
    request: &StreamRequest,
) -> (StreamTap, StreamClient, Arc<dyn ClientView>) {
    let (tx, rx) = mpsc::channel(OUT_QUEUE_FRAMES);
    let shared = Arc::new(ClientShared {
        info: Mutex::new(StreamInfo {
            client,
            call,
            rate: request.rate,
            mode: request.mode,
            remote: request.remote.clone(),
            frames_out: 0,
            frames_in: 0,
            frames_refused: 0,
        }),
        inbox: Mutex::new(VecDeque::new()),
        closing: AtomicBool::new(false),
        stopped: AtomicBool::new(false),
        reason: Mutex::new(None),
        frames_out: AtomicU64::new(0),
        frames_in: AtomicU64::new(0),
        frames_refused: AtomicU64::new(0),
    });
    let to_bus = (request.rate != SAMPLE_RATE)
        .then(|| Resampler::new(request.rate, SAMPLE_RATE).ok())
        .flatten();
    let view: Arc<dyn ClientView> = shared.clone();
    (
        StreamTap {
            shared: shared.clone(),
            out: tx,
        },
        StreamClient {
            shared,
            out: rx,
            rate: request.rate,
            to_client: None,
            to_bus,
            converted: Vec::new(),
        },
        view,
    )
}

/// A client seen from the engine's registry (for listings and stop).
pub(crate) trait ClientView: Send + Sync {
    fn info(&self) -> StreamInfo;
    fn stopped(&self) -> bool;
    fn request_stop(&self);
}

impl ClientView for ClientShared {
    fn info(&self) -> StreamInfo {
        ClientShared::info(self)
    }
    fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }
    fn request_stop(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }
}

/// A client the call let go of this tick, and why.
pub(crate) struct Stopped {
    pub(crate) info: StreamInfo,
    pub(crate) reason: String,
}

/// The stream clients of one call, on the media thread.
#[derive(Default)]
pub(crate) struct Streams {
    taps: Vec<StreamTap>,
    /// Let go of this tick, to be reported.
    stopped: Vec<Stopped>,
    /// The frame being summed for the call (reused).
    sum: Vec<i32>,
}

impl Streams {
    pub(crate) fn is_empty(&self) -> bool {
        self.taps.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.taps.len()
    }

    pub(crate) fn add(&mut self, tap: StreamTap) {
        self.taps.push(tap);
    }

    /// Lets go of clients: those whose side is gone or asked to stop (`None` stops
    /// every one with `reason`).
    pub(crate) fn stop_all(&mut self, reason: &str) {
        for tap in std::mem::take(&mut self.taps) {
            self.let_go(tap, reason.to_string());
        }
    }

    fn let_go(&mut self, tap: StreamTap, reason: String) {
        *lock(&tap.shared.reason) = Some(reason.clone());
        tap.shared.stopped.store(true, Ordering::Relaxed);
        self.stopped.push(Stopped {
            info: tap.shared.info(),
            reason,
        });
    }

    /// The reports of clients let go of since the last call.
    pub(crate) fn take_stopped(&mut self) -> Vec<Stopped> {
        std::mem::take(&mut self.stopped)
    }

    /// The frame the call just decoded (`rate` Hz), for every client.
    pub(crate) fn on_decoded(&mut self, pcm: &[i16], rate: u32) {
        if self.taps.is_empty() {
            return;
        }
        let len = pcm.len().min(FRAME_SAMPLES);
        let mut frame = [0i16; FRAME_SAMPLES];
        frame[..len].copy_from_slice(&pcm[..len]);
        let mut i = 0;
        while i < self.taps.len() {
            let tap = &self.taps[i];
            let sent = tap.out.try_send(StreamOut::Audio {
                pcm: frame,
                len,
                rate,
            });
            match sent {
                Ok(()) => {
                    tap.shared.frames_out.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                Err(TrySendError::Full(_)) => {
                    let tap = self.taps.swap_remove(i);
                    self.let_go(
                        tap,
                        format!(
                            "the client stopped reading ({} frames waiting)",
                            OUT_QUEUE_FRAMES
                        ),
                    );
                }
                Err(TrySendError::Closed(_)) => {
                    let tap = self.taps.swap_remove(i);
                    self.let_go(tap, "the client went away".into());
                }
            }
        }
    }

    /// The bus frame the call is about to send (after the microphone gain): each
    /// client's next frame replaces or joins it; marks passed are echoed.
    pub(crate) fn on_send(&mut self, frame: &mut [i16; FRAME_SAMPLES]) {
        self.drop_closing();
        if self.taps.is_empty() {
            return;
        }
        let replace = self
            .taps
            .iter()
            .any(|t| lock(&t.shared.info).mode == StreamMode::Replace);
        self.sum.clear();
        if replace {
            self.sum.resize(FRAME_SAMPLES, 0);
        } else {
            self.sum.extend(frame.iter().map(|&s| i32::from(s)));
        }
        for tap in &self.taps {
            let mut inbox = lock(&tap.shared.inbox);
            let mut marks = Vec::new();
            let mut took = false;
            while let Some(item) = inbox.front() {
                match item {
                    Inbound::Mark(_) => {
                        if let Some(Inbound::Mark(name)) = inbox.pop_front() {
                            marks.push(name);
                        }
                    }
                    Inbound::Frame(_) if took => break,
                    Inbound::Frame(_) => {
                        if let Some(Inbound::Frame(f)) = inbox.pop_front() {
                            for (s, x) in self.sum.iter_mut().zip(f.iter()) {
                                *s += i32::from(*x);
                            }
                            took = true;
                        }
                    }
                }
            }
            drop(inbox);
            if took {
                tap.shared.frames_in.fetch_add(1, Ordering::Relaxed);
            }
            for name in marks {
                // A client too slow for its marks is dropped on the next audio frame.
                let _ = tap.out.try_send(StreamOut::Mark(name));
            }
        }
        for (out, s) in frame.iter_mut().zip(self.sum.iter()) {
            *out = (*s).clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
        }
    }

    /// Lets go of clients whose side is gone or asked to stop.
    pub(crate) fn drop_closing(&mut self) {
        let mut i = 0;
        while i < self.taps.len() {
            if self.taps[i].shared.closing.load(Ordering::Relaxed) {
                let tap = self.taps.swap_remove(i);
                self.let_go(tap, "stopped".into());
            } else {
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(rate: u32, mode: StreamMode) -> StreamRequest {
        StreamRequest {
            rate,
            mode,
            remote: "test".into(),
        }
    }

    #[test]
    fn frames_go_out_and_a_client_that_stops_reading_is_dropped() {
        let mut streams = Streams::default();
        let (tap, mut client, _) = new_client(1, 7, &request(8000, StreamMode::Replace));
        streams.add(tap);
        let pcm = [100i16; 160];
        for _ in 0..OUT_QUEUE_FRAMES {
            streams.on_decoded(&pcm, 8000);
        }
        assert_eq!(streams.len(), 1);
        assert!(streams.take_stopped().is_empty());
        // One more than the queue holds: dropped, never waited for.
        streams.on_decoded(&pcm, 8000);
        assert!(streams.is_empty());
        let stopped = streams.take_stopped();
        assert_eq!(stopped.len(), 1);
        assert!(
            stopped[0].reason.contains("stopped reading"),
            "{}",
            stopped[0].reason
        );
        assert!(client.stop_reason().unwrap().contains("stopped reading"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let first = rt.block_on(client.next()).unwrap();
        match first {
            StreamOut::Audio { len, rate, pcm } => {
                assert_eq!((len, rate), (160, 8000));
                let bytes = client.convert(&pcm[..len], rate);
                assert_eq!(bytes.len(), 320);
                assert_eq!(&bytes[..2], &100i16.to_le_bytes());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn client_frames_replace_or_mix_and_clear_drops_them_at_once() {
        let mut streams = Streams::default();
        let (tap, mut client, _) = new_client(1, 1, &request(16000, StreamMode::Mix));
        streams.add(tap);
        let bytes: Vec<u8> = [1000i16; FRAME_SAMPLES]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        assert_eq!(
            client.push(&bytes[..100]),
            Err(FrameError::WrongSize {
                got: 100,
                want: 640
            })
        );
        client.push(&bytes).unwrap();
        client.mark("end".into());
        client.push(&bytes).unwrap();
        let mut frame = [500i16; FRAME_SAMPLES];
        streams.on_send(&mut frame);
        assert!(
            frame.iter().all(|&s| s == 1500),
            "mixed with the microphone"
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        match rt.block_on(client.next()).unwrap() {
            StreamOut::Mark(name) => assert_eq!(name, "end"),
            other => panic!("{other:?}"),
        }
        // Barge-in: what is queued is gone before the next frame.
        client.mark("late".into());
        assert_eq!(client.clear(), vec!["late".to_string()]);
        let mut frame = [500i16; FRAME_SAMPLES];
        streams.on_send(&mut frame);
        assert!(frame.iter().all(|&s| s == 500));
        assert_eq!(client.info().frames_in, 1);
        assert_eq!(client.info().frames_refused, 1);
        // Replace: silence instead of the microphone while nothing is queued.
        let (tap, _replace, _) = new_client(1, 2, &request(8000, StreamMode::Replace));
        streams.add(tap);
        let mut frame = [500i16; FRAME_SAMPLES];
        streams.on_send(&mut frame);
        assert!(frame.iter().all(|&s| s == 0));
        // A client dropped on its side is let go of on the next tick.
        drop(client);
        let mut frame = [0i16; FRAME_SAMPLES];
        streams.on_send(&mut frame);
        assert_eq!(streams.len(), 1);
        assert_eq!(streams.take_stopped()[0].info.client, 1);
    }
}
