//! The adaptive jitter buffer of one received audio stream, sans-IO: the caller passes
//! the time in (milliseconds of any monotonic clock), [`JitterBuffer::push`]es every
//! received packet of the negotiated audio payload and [`JitterBuffer::pop`]s one frame
//! per playout tick. No sockets, no clock, no threads: tests drive it with a fake clock.
//!
//! This module owns the playout schedule of one stream: reordering (packets are slotted
//! by timestamp in a ring preallocated at construction), duplicates, late packets,
//! sequence and timestamp wrap-around, resynchronisation (a new SSRC, a big timestamp
//! jump), the adaptive playout delay and clock drift. It knows no codec: payloads are
//! opaque bytes, and a [`Playout::Missing`] frame is concealed by the caller (see
//! [`crate::plc`] for G.711).
//!
//! # How the delay adapts
//!
//! Every packet that arrives while playing gets a *margin*: how long before its playout
//! tick it arrived (negative: late). The largest margin of the last second is the
//! current delay (what the fastest packets wait); the largest *spread* (current delay
//! minus a packet's margin) of the last ten seconds is the peak delay variation. The
//! RFC 3550 interarrival jitter is kept too. The target is
//! `clamp(max(peak, 3 × jitter) + one frame, min_delay, max_delay)`.
//!
//! The delay only moves at safe points and by whole frames:
//! * it grows by *holding*: when the next frame has not arrived and the delay is short
//!   of the target (or packets were just late), the tick plays a concealed frame and
//!   the frame stays due, so the packet, when it comes, is played instead of dropped;
//! * it shrinks by one frame when it has stayed a frame above the target for 1.5 s
//!   (at once when it is above `max_delay`), preferably by skipping a frame that is
//!   missing anyway;
//! * at the start of a talk spurt (marker bit after silence) it jumps to the target.
//!
//! Clock drift needs nothing more: a sender a little fast fills the buffer, the delay
//! creeps above the target and frames are dropped one at a time; a sender a little slow
//! drains it, a frame comes too late for its tick and is held. The delay stays bounded.
//!
//! Nothing is allocated per packet: a slot's buffer only grows when a payload larger
//! than any before arrives (at most [`MAX_PAYLOAD`] bytes).

use crate::rtp::RtpHeader;

/// Largest payload accepted; larger ones are dropped and counted as invalid.
pub const MAX_PAYLOAD: usize = 1500;

/// Frames before the next one that are remembered (for telling duplicates from late
/// packets); older packets are out of the window.
const HISTORY: i64 = 64;
/// Factor on the interarrival jitter in the target delay.
const K_JITTER: f64 = 3.0;
/// How long the delay must stay a frame above the target before a frame is dropped.
/// Longer than the delay window, so a stale estimate never causes a drop.
const SHRINK_HOLD_MS: u64 = 1500;
/// Buckets of the sliding maxima (current delay: 8 × 125 ms; peak: 8 × 1.25 s).
const BUCKETS: usize = 8;
const DELAY_BUCKET_MS: u64 = 125;
const PEAK_BUCKET_MS: u64 = 1250;
/// Upper bound on the slot ring, whatever the configuration.
const MAX_SLOTS: usize = 1024;
/// RFC 3550 A.1: sequence numbers further ahead than this are a jump, further behind
/// than `MAX_MISORDER` are old.
const MAX_DROPOUT: u16 = 3000;
const MAX_MISORDER: u16 = 100;

/// The stream's clock, frame size and delay bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// RTP clock rate in Hz (8000 for G.711).
    pub clock_rate: u32,
    /// Timestamp units per frame, i.e. per playout tick (160 for 20 ms at 8 kHz).
    pub frame_samples: u32,
    /// The playout delay never targets less than this.
    pub min_delay_ms: u32,
    /// The playout delay never targets more than this.
    pub max_delay_ms: u32,
    /// Delay before the first frame is played, until the stream has been measured.
    pub initial_delay_ms: u32,
}

impl JitterConfig {
    /// `frame_samples` per tick at `clock_rate`, delay 20–300 ms, 40 ms at first.
    pub const fn new(clock_rate: u32, frame_samples: u32) -> JitterConfig {
        JitterConfig {
            clock_rate,
            frame_samples,
            min_delay_ms: 20,
            max_delay_ms: 300,
            initial_delay_ms: 40,
        }
    }
}

impl Default for JitterConfig {
    /// G.711: 8 kHz, 20 ms frames.
    fn default() -> JitterConfig {
        JitterConfig::new(8000, 160)
    }
}

/// What to play for one tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Playout<'a> {
    /// The payload of the next frame: decode and play it.
    Frame(&'a [u8]),
    /// The next frame is not there (lost, or held back to grow the delay): conceal it.
    Missing,
    /// Nothing to play yet (buffering at the start, or the stream has gone silent):
    /// play silence.
    Waiting,
}

/// Counters of one stream. `Missing` frames = `lost` + `inserted`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct JitterStats {
    /// Packets pushed (every one, including invalid, late and duplicate ones).
    pub received: u64,
    /// Frames played as `Missing` because their packet was not there.
    pub lost: u64,
    /// Packets that arrived after their frame was played (dropped).
    pub late: u64,
    /// Packets whose frame was already buffered or played (dropped).
    pub duplicate: u64,
    /// Frames removed to shrink the delay (drift, or less jitter than before); a
    /// frame that was missing anyway counts here too, not in `lost`.
    pub dropped_for_drift: u64,
    /// `Missing` frames played to grow the delay (the frame after them was not lost).
    pub inserted: u64,
    /// Packets with an empty payload or one above [`MAX_PAYLOAD`] (dropped).
    pub invalid: u64,
    /// Packets far outside the buffer's window that did not start a new stream
    /// (dropped).
    pub out_of_window: u64,
    /// Times the buffer started over: a big timestamp jump, or a new SSRC.
    pub resyncs: u64,
    /// How long the fastest packets wait in the buffer, in ms.
    pub current_delay_ms: u32,
    /// The delay the buffer aims at, in ms.
    pub target_delay_ms: u32,
    /// RFC 3550 interarrival jitter, in ms.
    pub jitter_ms: f32,
}

/// What an RTCP receiver report needs about this source (RFC 3550 §6.4.1, A.1, A.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reception {
    /// Cycles × 65536 + the highest sequence number received.
    pub extended_highest_seq: u32,
    /// Packets expected since the first one (highest − first + 1).
    pub expected: u32,
    /// Packets received since the first one (duplicates included, as RFC 3550 counts).
    pub received: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
}

/// A sliding maximum over `BUCKETS` buckets of `bucket_ms`, without allocation.
#[derive(Debug, Clone)]
struct WindowMax {
    values: [f64; BUCKETS],
    index: [u64; BUCKETS],
    bucket_ms: u64,
}

impl WindowMax {
    fn new(bucket_ms: u64) -> WindowMax {
        WindowMax {
            values: [f64::NEG_INFINITY; BUCKETS],
            index: [0; BUCKETS],
            bucket_ms,
        }
    }

    fn push(&mut self, now_ms: u64, value: f64) {
        let idx = now_ms / self.bucket_ms;
        let b = (idx % BUCKETS as u64) as usize;
        if self.index[b] != idx {
            self.index[b] = idx;
            self.values[b] = value;
        } else if value > self.values[b] {
            self.values[b] = value;
        }
    }

    fn max(&self, now_ms: u64) -> Option<f64> {
        let idx = now_ms / self.bucket_ms;
        let mut max = f64::NEG_INFINITY;
        for (v, i) in self.values.iter().zip(&self.index) {
            if i.saturating_add(BUCKETS as u64) > idx && *v > max {
                max = *v;
            }
        }
        (max > f64::NEG_INFINITY).then_some(max)
    }

    /// Moves every value by `delta` (the playout schedule moved).
    fn shift(&mut self, delta: f64) {
        for v in &mut self.values {
            if v.is_finite() {
                *v += delta;
            }
        }
    }

    fn clear(&mut self) {
        self.values = [f64::NEG_INFINITY; BUCKETS];
    }
}

/// RFC 3550 A.1 sequence number bookkeeping, for receiver reports.
#[derive(Debug, Clone, Copy)]
struct SeqTrack {
    base: u32,
    max: u16,
    cycles: u32,
    received: u32,
    bad: Option<u16>,
}

impl SeqTrack {
    fn start(seq: u16) -> SeqTrack {
        SeqTrack {
            base: u32::from(seq),
            max: seq,
            cycles: 0,
            received: 0,
            bad: None,
        }
    }

    fn update(&mut self, seq: u16) {
        let delta = seq.wrapping_sub(self.max);
        if delta < MAX_DROPOUT {
            if seq < self.max {
                self.cycles = self.cycles.wrapping_add(1 << 16);
            }
            self.max = seq;
            self.bad = None;
        } else if delta <= u16::MAX - MAX_MISORDER {
            // A big jump: believe it when the next packet follows it.
            if self.bad == Some(seq) {
                *self = SeqTrack::start(seq);
            } else {
                self.bad = Some(seq.wrapping_add(1));
                return;
            }
        }
        self.received = self.received.wrapping_add(1);
    }

    fn extended_max(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max))
    }
}

/// One frame's place in the ring.
#[derive(Debug, Clone)]
struct Slot {
    frame: i64,
    filled: bool,
    arrival_ms: u64,
    data: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// No stream (yet, or any more).
    Idle,
    /// Collecting the first packets of a stream before playing.
    Buffering {
        /// Frame of the packet that started the stream.
        first: i64,
        /// Earliest frame buffered (played first).
        lowest: i64,
        /// When the `first` frame would have arrived, judged by the slowest packet.
        virt_first_ms: f64,
        /// How long to buffer.
        start_delay_ms: f64,
    },
    /// Playing one frame per tick.
    Playing,
}

/// An adaptive jitter buffer for one stream. See the module documentation.
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    config: JitterConfig,
    /// Frame duration in ms and in timestamp units.
    frame_ms: f64,
    frame_ts: i64,
    slots: Vec<Slot>,
    state: State,
    ssrc: Option<u32>,
    /// Whether the stream has been measured (later starts use the target delay).
    warm: bool,
    /// Timestamp unwrapping: `ts_ref` is at extended timestamp `ts_ref_ext`.
    ts_ref: u32,
    ts_ref_ext: i64,
    /// The frame the next tick plays.
    next_frame: i64,
    /// When the last tick played (or held) a frame.
    last_pop_ms: f64,
    /// Latest time seen.
    last_now: u64,
    /// Filled slots.
    buffered: usize,
    /// Bit i: frame `next_frame - 1 - i` had a packet.
    received_past: u64,
    /// A late packet arrived since the last tick.
    late_since_pop: bool,
    last_arrival_ms: Option<u64>,
    /// Since when the delay has been a frame above the target.
    above_since: Option<u64>,
    /// Missing frames still to count as inserted (a talk spurt started later).
    pending_insert: u64,
    /// A far-away packet: the start of a new stream if the next one follows it.
    candidate: Option<(u16, u32)>,
    delay_window: WindowMax,
    peak_window: WindowMax,
    /// RFC 3550 jitter in timestamp units, and the previous packet's arrival (in
    /// timestamp units) and timestamp.
    jitter: f64,
    prev_transit: Option<(f64, u32)>,
    seq: Option<SeqTrack>,
    stats: JitterStats,
}

impl JitterBuffer {
    /// A buffer for one stream. Nonsense values are corrected: a zero clock rate or
    /// frame size counts as 1, `max_delay_ms` is at least `min_delay_ms`, and the
    /// initial delay lies between them.
    pub fn new(config: JitterConfig) -> JitterBuffer {
        let mut config = config;
        config.clock_rate = config.clock_rate.max(1);
        config.frame_samples = config.frame_samples.max(1);
        config.max_delay_ms = config.max_delay_ms.max(config.min_delay_ms);
        config.initial_delay_ms = config
            .initial_delay_ms
            .clamp(config.min_delay_ms, config.max_delay_ms);
        let frame_ms = f64::from(config.frame_samples) * 1000.0 / f64::from(config.clock_rate);
        let frames = (2.0 * f64::from(config.max_delay_ms) / frame_ms).ceil() + 4.0;
        let count = if frames.is_finite() {
            (frames as usize).clamp(16, MAX_SLOTS)
        } else {
            MAX_SLOTS
        };
        let capacity = (config.frame_samples as usize).clamp(64, 512);
        let slots = (0..count)
            .map(|_| Slot {
                frame: 0,
                filled: false,
                arrival_ms: 0,
                data: Vec::with_capacity(capacity),
            })
            .collect();
        JitterBuffer {
            config,
            frame_ms,
            frame_ts: i64::from(config.frame_samples),
            slots,
            state: State::Idle,
            ssrc: None,
            warm: false,
            ts_ref: 0,
            ts_ref_ext: 0,
            next_frame: 0,
            last_pop_ms: 0.0,
            last_now: 0,
            buffered: 0,
            received_past: 0,
            late_since_pop: false,
            last_arrival_ms: None,
            above_since: None,
            pending_insert: 0,
            candidate: None,
            delay_window: WindowMax::new(DELAY_BUCKET_MS),
            peak_window: WindowMax::new(PEAK_BUCKET_MS),
            jitter: 0.0,
            prev_transit: None,
            seq: None,
            stats: JitterStats::default(),
        }
    }

    /// The configuration in use (after correction).
    pub fn config(&self) -> JitterConfig {
        self.config
    }

    /// Takes one received packet of the stream's audio payload type. The payload is
    /// copied; anything (garbage included) is accepted without panicking.
    pub fn push(&mut self, now_ms: u64, seq: u16, timestamp: u32, marker: bool, payload: &[u8]) {
        self.last_now = self.last_now.max(now_ms);
        self.stats.received += 1;
        match &mut self.seq {
            Some(track) => track.update(seq),
            None => {
                let mut track = SeqTrack::start(seq);
                track.update(seq);
                self.seq = Some(track);
            }
        }
        if payload.is_empty() || payload.len() > MAX_PAYLOAD {
            self.stats.invalid += 1;
            return;
        }
        match self.state {
            State::Idle => self.restart(now_ms, timestamp, payload),
            State::Buffering { first, .. } => {
                let f = self.frame_of(timestamp);
                let rel = f - first;
                let back = (self.slots.len() / 4) as i64;
                if rel < -back || rel >= self.slots.len() as i64 - back {
                    self.far(now_ms, seq, timestamp, marker, payload, rel < 0);
                } else {
                    self.accept(now_ms, timestamp);
                    self.push_buffering(now_ms, f, rel, payload);
                }
            }
            State::Playing => {
                let f = self.frame_of(timestamp);
                let rel = f - self.next_frame;
                if rel >= self.slots.len() as i64 || rel < -HISTORY.max(self.slots.len() as i64) {
                    self.far(now_ms, seq, timestamp, marker, payload, rel < 0);
                } else {
                    self.accept(now_ms, timestamp);
                    self.push_playing(now_ms, f, rel, marker, payload);
                }
            }
        }
    }

    /// [`push`](Self::push) from a parsed RTP header: a new SSRC starts the buffer
    /// over ([`reset`](Self::reset)) first.
    pub(crate) fn push_packet(&mut self, now_ms: u64, header: &RtpHeader, payload: &[u8]) {
        if self.ssrc != Some(header.ssrc) {
            if self.ssrc.is_some() {
                self.reset();
                self.stats.resyncs += 1;
            }
            self.ssrc = Some(header.ssrc);
        }
        self.push(
            now_ms,
            header.sequence,
            header.timestamp,
            header.marker,
            payload,
        );
    }

    /// Forgets the stream (buffered frames, estimates, sequence numbers): the next
    /// packet starts a new one with the initial delay. The counters are kept.
    pub(crate) fn reset(&mut self) {
        for slot in &mut self.slots {
            slot.filled = false;
        }
        self.buffered = 0;
        self.state = State::Idle;
        self.ssrc = None;
        self.warm = false;
        self.late_since_pop = false;
        self.last_arrival_ms = None;
        self.above_since = None;
        self.pending_insert = 0;
        self.candidate = None;
        self.delay_window.clear();
        self.peak_window.clear();
        self.jitter = 0.0;
        self.prev_transit = None;
        self.seq = None;
    }

    /// The frame to play now; call once per tick (every frame duration).
    pub fn pop(&mut self, now_ms: u64) -> Playout<'_> {
        self.last_now = self.last_now.max(now_ms);
        match self.state {
            State::Idle => Playout::Waiting,
            State::Buffering {
                first,
                lowest,
                virt_first_ms,
                start_delay_ms,
            } => {
                let start_at =
                    virt_first_ms + (lowest - first) as f64 * self.frame_ms + start_delay_ms
                        - self.frame_ms / 2.0;
                if (now_ms as f64) < start_at {
                    return Playout::Waiting;
                }
                self.begin(now_ms, lowest);
                self.pop_playing(now_ms)
            }
            State::Playing => self.pop_playing(now_ms),
        }
    }

    /// The counters, with the delays as of the latest time seen.
    pub fn stats(&self) -> JitterStats {
        let mut stats = self.stats;
        let delay = self.delay_window.max(self.last_now).unwrap_or(0.0);
        stats.current_delay_ms = delay.max(0.0).round() as u32;
        stats.target_delay_ms = self.target_ms(self.last_now).round() as u32;
        stats.jitter_ms = self.jitter_ms() as f32;
        stats
    }

    /// RFC 3550 interarrival jitter, in timestamp units (for RTCP reports).
    pub(crate) fn interarrival_jitter(&self) -> u32 {
        self.jitter as u32
    }

    /// What an RTCP receiver report needs (`None` before the first packet).
    pub(crate) fn reception(&self) -> Option<Reception> {
        let track = self.seq?;
        let highest = track.extended_max();
        Some(Reception {
            extended_highest_seq: highest,
            expected: highest.wrapping_sub(track.base).wrapping_add(1),
            received: track.received,
            jitter: self.interarrival_jitter(),
        })
    }

    /// Frames waiting in the buffer.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// The payload the next tick will play, if it is already here (while playing):
    /// after a `Missing` frame, a codec with in-band FEC (Opus) rebuilds the lost
    /// frame from it.
    pub(crate) fn peek_next(&self) -> Option<&[u8]> {
        if !matches!(self.state, State::Playing) || !self.has(self.next_frame) {
            return None;
        }
        Some(&self.slots[self.slot_index(self.next_frame)].data)
    }

    // --- internals -------------------------------------------------------------

    fn jitter_ms(&self) -> f64 {
        self.jitter * 1000.0 / f64::from(self.config.clock_rate)
    }

    fn target_ms(&self, now_ms: u64) -> f64 {
        let peak = self.peak_window.max(now_ms).unwrap_or(0.0).max(0.0);
        let wanted = peak.max(K_JITTER * self.jitter_ms()) + self.frame_ms;
        wanted.clamp(
            f64::from(self.config.min_delay_ms),
            f64::from(self.config.max_delay_ms),
        )
    }

    fn unwrap_ts(&self, timestamp: u32) -> i64 {
        self.ts_ref_ext + i64::from(timestamp.wrapping_sub(self.ts_ref) as i32)
    }

    /// The frame a timestamp belongs to (rounded to the nearest frame).
    fn frame_of(&self, timestamp: u32) -> i64 {
        (self.unwrap_ts(timestamp) + self.frame_ts / 2).div_euclid(self.frame_ts)
    }

    fn slot_index(&self, frame: i64) -> usize {
        frame.rem_euclid(self.slots.len() as i64) as usize
    }

    fn has(&self, frame: i64) -> bool {
        let slot = &self.slots[self.slot_index(frame)];
        slot.filled && slot.frame == frame
    }

    /// Bookkeeping for a packet inside the window: timestamp reference, jitter,
    /// arrival time.
    fn accept(&mut self, now_ms: u64, timestamp: u32) {
        self.candidate = None;
        let ext = self.unwrap_ts(timestamp);
        if ext > self.ts_ref_ext {
            self.ts_ref = timestamp;
            self.ts_ref_ext = ext;
        }
        let arrival = now_ms as f64 * f64::from(self.config.clock_rate) / 1000.0;
        if let Some((prev_arrival, prev_ts)) = self.prev_transit {
            let d = (arrival - prev_arrival) - f64::from(timestamp.wrapping_sub(prev_ts) as i32);
            self.jitter += (d.abs() - self.jitter) / 16.0;
        }
        self.prev_transit = Some((arrival, timestamp));
        self.last_arrival_ms = Some(now_ms);
    }

    fn store(&mut self, frame: i64, now_ms: u64, payload: &[u8]) {
        let index = self.slot_index(frame);
        let slot = &mut self.slots[index];
        if !slot.filled {
            self.buffered += 1;
        }
        slot.frame = frame;
        slot.filled = true;
        slot.arrival_ms = now_ms;
        slot.data.clear();
        slot.data.extend_from_slice(payload);
    }

    /// Starts a new stream with this packet.
    fn restart(&mut self, now_ms: u64, timestamp: u32, payload: &[u8]) {
        for slot in &mut self.slots {
            slot.filled = false;
        }
        self.buffered = 0;
        self.ts_ref = timestamp;
        self.ts_ref_ext = 0;
        self.next_frame = 0;
        let start_delay_ms = if self.warm {
            self.target_ms(now_ms)
        } else {
            f64::from(self.config.initial_delay_ms)
        };
        self.state = State::Buffering {
            first: 0,
            lowest: 0,
            virt_first_ms: now_ms as f64,
            start_delay_ms,
        };
        self.delay_window.clear();
        self.candidate = None;
        self.late_since_pop = false;
        self.above_since = None;
        self.pending_insert = 0;
        self.received_past = 0;
        let arrival = now_ms as f64 * f64::from(self.config.clock_rate) / 1000.0;
        self.prev_transit = Some((arrival, timestamp));
        self.last_arrival_ms = Some(now_ms);
        self.store(0, now_ms, payload);
    }

    /// A packet far outside the window: a new stream if it carries the marker or
    /// follows the previous far packet, else dropped.
    fn far(
        &mut self,
        now_ms: u64,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
        behind: bool,
    ) {
        let follows = self.candidate.is_some_and(|(cseq, cts)| {
            let ds = seq.wrapping_sub(cseq);
            let dt = i64::from(timestamp.wrapping_sub(cts) as i32);
            (1..=4).contains(&ds) && dt > 0 && dt <= 5 * self.frame_ts
        });
        if marker || follows {
            self.stats.resyncs += 1;
            self.restart(now_ms, timestamp, payload);
        } else {
            self.candidate = Some((seq, timestamp));
            if behind {
                self.stats.late += 1;
            } else {
                self.stats.out_of_window += 1;
            }
        }
    }

    fn push_buffering(&mut self, now_ms: u64, frame: i64, rel: i64, payload: &[u8]) {
        if self.has(frame) {
            self.stats.duplicate += 1;
            return;
        }
        self.store(frame, now_ms, payload);
        let frame_ms = self.frame_ms;
        if let State::Buffering {
            lowest,
            virt_first_ms,
            ..
        } = &mut self.state
        {
            *lowest = (*lowest).min(frame);
            *virt_first_ms = virt_first_ms.max(now_ms as f64 - rel as f64 * frame_ms);
        }
    }

    fn push_playing(&mut self, now_ms: u64, frame: i64, rel: i64, marker: bool, payload: &[u8]) {
        if rel < 0 {
            let age = -rel - 1;
            if age < HISTORY && self.received_past & (1 << age) != 0 {
                self.stats.duplicate += 1;
            } else {
                self.stats.late += 1;
                self.late_since_pop = true;
                self.observe(now_ms, frame);
            }
            return;
        }
        if self.has(frame) {
            self.stats.duplicate += 1;
            return;
        }
        if marker && self.buffered == 0 && rel > 0 {
            self.realign(now_ms, rel);
        }
        self.store(frame, now_ms, payload);
        self.observe(now_ms, frame);
    }

    /// Feeds a packet's margin (how long before its tick it arrived) to the estimates.
    fn observe(&mut self, now_ms: u64, frame: i64) {
        let margin =
            self.last_pop_ms + (frame - self.next_frame + 1) as f64 * self.frame_ms - now_ms as f64;
        self.delay_window.push(now_ms, margin);
        if let Some(max) = self.delay_window.max(now_ms) {
            self.peak_window.push(now_ms, max - margin);
        }
    }

    /// A talk spurt starts `ahead` frames after the next tick's frame, with nothing
    /// buffered in between: move the schedule to the target delay at once.
    fn realign(&mut self, now_ms: u64, ahead: i64) {
        let Some(delay) = self.delay_window.max(now_ms) else {
            return;
        };
        let target = self.target_ms(now_ms);
        let frame_ms = self.frame_ms;
        if delay >= target + frame_ms {
            let shrink = (((delay - target) / frame_ms).floor() as i64).min(ahead);
            if shrink > 0 {
                self.next_frame += shrink;
                self.received_past = self.received_past.checked_shl(shrink as u32).unwrap_or(0);
                self.delay_window.shift(-(shrink as f64) * frame_ms);
                self.stats.dropped_for_drift += shrink as u64;
            }
        } else if delay + frame_ms / 2.0 < target {
            let room_ring = self.slots.len() as i64 - 1 - ahead;
            let room_max =
                ((f64::from(self.config.max_delay_ms) - delay) / frame_ms).floor() as i64;
            let grow = (((target - delay) / frame_ms).round() as i64)
                .max(1)
                .min(room_ring)
                .min(room_max);
            if grow > 0 {
                self.next_frame -= grow;
                self.received_past = self.received_past.checked_shr(grow as u32).unwrap_or(0);
                self.delay_window.shift(grow as f64 * frame_ms);
                self.pending_insert += grow as u64;
            }
        }
    }

    /// Buffering is over: play from `lowest`.
    fn begin(&mut self, now_ms: u64, lowest: i64) {
        self.state = State::Playing;
        self.warm = true;
        self.next_frame = lowest;
        self.above_since = None;
        self.late_since_pop = false;
        self.received_past = 0;
        for i in 0..self.slots.len() {
            let slot = &self.slots[i];
            if slot.filled {
                let margin = now_ms as f64 + (slot.frame - lowest) as f64 * self.frame_ms
                    - slot.arrival_ms as f64;
                self.delay_window.push(now_ms, margin);
            }
        }
    }

    fn advance(&mut self, had_packet: bool) {
        self.next_frame += 1;
        self.received_past = (self.received_past << 1) | u64::from(had_packet);
    }

    fn pop_playing(&mut self, now_ms: u64) -> Playout<'_> {
        let frame_ms = self.frame_ms;
        let max_ms = f64::from(self.config.max_delay_ms);
        let silent_ms = self
            .last_arrival_ms
            .map_or(u64::MAX, |t| now_ms.saturating_sub(t)) as f64;
        // The stream has stopped (silence suppression, or gone): wait for the next
        // packet, which starts over with the target delay.
        if self.buffered == 0 && silent_ms > max_ms + 2.0 * frame_ms {
            self.state = State::Idle;
            self.late_since_pop = false;
            return Playout::Waiting;
        }
        let delay = self.delay_window.max(now_ms);
        let target = self.target_ms(now_ms);
        if delay.is_some_and(|d| d >= target + frame_ms) {
            self.above_since.get_or_insert(now_ms);
        } else {
            self.above_since = None;
        }
        let shrink = delay.is_some_and(|d| d > max_ms + frame_ms / 2.0)
            || self
                .above_since
                .is_some_and(|t| now_ms.saturating_sub(t) >= SHRINK_HOLD_MS);
        let alive = silent_ms <= (3.0 * frame_ms).max(60.0);
        let grow = alive
            && (self.late_since_pop || delay.is_some_and(|d| d + frame_ms / 2.0 < target))
            && delay.is_none_or(|d| d + frame_ms <= max_ms);
        self.late_since_pop = false;
        self.last_pop_ms = now_ms as f64;

        let have = self.has(self.next_frame);
        if !have && grow {
            // Hold: conceal this tick, keep the frame due.
            self.stats.inserted += 1;
            self.delay_window.shift(frame_ms);
            return Playout::Missing;
        }
        if shrink && self.has(self.next_frame + 1) {
            if have {
                let index = self.slot_index(self.next_frame);
                self.slots[index].filled = false;
                self.buffered -= 1;
            }
            self.advance(have);
            self.stats.dropped_for_drift += 1;
            self.delay_window.shift(-frame_ms);
            self.above_since = None;
        }

        let frame = self.next_frame;
        let index = self.slot_index(frame);
        if self.slots[index].filled && self.slots[index].frame == frame {
            self.slots[index].filled = false;
            self.buffered -= 1;
            self.advance(true);
            return Playout::Frame(&self.slots[index].data);
        }
        self.advance(false);
        if self.pending_insert > 0 {
            self.pending_insert -= 1;
            self.stats.inserted += 1;
        } else {
            self.stats.lost += 1;
        }
        Playout::Missing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic PRNG (xorshift64).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        /// Uniform in [0, 1).
        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }

        fn chance(&mut self, p: f64) -> bool {
            self.unit() < p
        }
    }

    /// One packet on the wire: `index` is the sender's frame number (also the payload).
    #[derive(Debug, Clone, Copy)]
    struct Packet {
        arrival_ms: f64,
        index: u32,
        seq: u16,
        ts: u32,
        marker: bool,
    }

    fn stream(count: u32, seq0: u16, ts0: u32) -> Vec<Packet> {
        (0..count)
            .map(|k| Packet {
                arrival_ms: 1000.0 + f64::from(k) * 20.0 + 5.0,
                index: k,
                seq: seq0.wrapping_add(k as u16),
                ts: ts0.wrapping_add(k.wrapping_mul(160)),
                marker: k == 0,
            })
            .collect()
    }

    fn payload(index: u32) -> [u8; 8] {
        let mut p = [0xffu8; 8];
        p[..4].copy_from_slice(&index.to_le_bytes());
        p
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Out {
        Frame(u32),
        Missing,
        Waiting,
    }

    struct Trace {
        /// Per tick up to the last frame played: time, outcome, stats after the tick.
        ticks: Vec<(u64, Out, JitterStats)>,
        /// The stats after the last frame played (the stream's end is not a loss).
        stats: JitterStats,
        jb: JitterBuffer,
    }

    impl Trace {
        fn after(&self, from_ms: u64) -> impl Iterator<Item = &(u64, Out, JitterStats)> {
            self.ticks.iter().filter(move |t| t.0 >= from_ms)
        }

        fn first_frame_ms(&self) -> u64 {
            self.ticks
                .iter()
                .find(|t| matches!(t.1, Out::Frame(_)))
                .map(|t| t.0)
                .expect("something played")
        }

        fn frames(&self) -> Vec<u32> {
            self.ticks
                .iter()
                .filter_map(|t| match t.1 {
                    Out::Frame(i) => Some(i),
                    _ => None,
                })
                .collect()
        }

        fn missing_after(&self, from_ms: u64) -> usize {
            self.after(from_ms).filter(|t| t.1 == Out::Missing).count()
        }

        fn longest_missing_run(&self) -> usize {
            let (mut run, mut longest) = (0, 0);
            for t in &self.ticks {
                if t.1 == Out::Missing {
                    run += 1;
                    longest = longest.max(run);
                } else {
                    run = 0;
                }
            }
            longest
        }

        fn stats_at(&self, ms: u64) -> JitterStats {
            self.after(ms).next().map(|t| t.2).unwrap_or_default()
        }
    }

    /// Delivers `packets` in arrival order and pops every 20 ms from `phase_ms` until
    /// `end_ms`.
    fn run(config: JitterConfig, mut packets: Vec<Packet>, phase_ms: u64, end_ms: u64) -> Trace {
        packets.sort_by(|a, b| a.arrival_ms.total_cmp(&b.arrival_ms));
        let mut jb = JitterBuffer::new(config);
        let mut ticks = Vec::new();
        let mut next = 0;
        let mut now = phase_ms;
        while now <= end_ms {
            while next < packets.len() && packets[next].arrival_ms.floor() as u64 <= now {
                let p = packets[next];
                jb.push(
                    p.arrival_ms.floor() as u64,
                    p.seq,
                    p.ts,
                    p.marker,
                    &payload(p.index),
                );
                next += 1;
            }
            let out = match jb.pop(now) {
                Playout::Frame(data) => {
                    Out::Frame(u32::from_le_bytes([data[0], data[1], data[2], data[3]]))
                }
                Playout::Missing => Out::Missing,
                Playout::Waiting => Out::Waiting,
            };
            ticks.push((now, out, jb.stats()));
            now += 20;
        }
        let last = ticks
            .iter()
            .rposition(|t| matches!(t.1, Out::Frame(_)))
            .unwrap_or(0);
        ticks.truncate(last + 1);
        let stats = ticks.last().map(|t| t.2).unwrap_or_default();
        Trace { ticks, stats, jb }
    }

    fn assert_increasing(frames: &[u32]) {
        for w in frames.windows(2) {
            assert!(w[1] > w[0], "played out of order: {} then {}", w[0], w[1]);
        }
    }

    #[test]
    fn clean_stream_plays_every_frame_at_a_constant_delay() {
        for phase in 0..20 {
            let trace = run(
                JitterConfig::default(),
                stream(500, 1000, 5000),
                phase,
                11_500,
            );
            let start = trace.first_frame_ms();
            assert!((1030..1060).contains(&start), "started at {start}");
            assert_eq!(trace.missing_after(start), 0, "phase {phase}");
            let frames = trace.frames();
            assert_increasing(&frames);
            let stats = trace.stats;
            assert_eq!(
                stats.lost + stats.late + stats.inserted + stats.duplicate,
                0
            );
            // At most one frame dropped, to come down from the initial 40 ms.
            assert!(stats.dropped_for_drift <= 1, "{stats:?}");
            assert_eq!(frames.len() as u64 + stats.dropped_for_drift, 500);
            let delays: Vec<u32> = trace
                .after(4000)
                .filter(|t| t.0 < 10_000)
                .map(|t| t.2.current_delay_ms)
                .collect();
            assert!(delays.windows(2).all(|w| w[0] == w[1]), "phase {phase}");
            assert!(delays[0] >= 15 && delays[0] < 40, "{}", delays[0]);
        }
    }

    #[test]
    fn random_loss_is_concealed_frame_for_frame() {
        for seed in 1..=5u64 {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed);
            let all = stream(3000, 7, 99);
            let lost: Vec<bool> = (0..3000).map(|k| k > 0 && rng.chance(0.05)).collect();
            let packets: Vec<Packet> = all
                .into_iter()
                .filter(|p| !lost[p.index as usize])
                .collect();
            let trace = run(JitterConfig::default(), packets, 3, 61_200);
            let stats = trace.stats;
            assert_eq!(
                stats.late + stats.inserted + stats.duplicate,
                0,
                "{stats:?}"
            );
            let start = trace.first_frame_ms();
            assert_eq!(trace.missing_after(start) as u64, stats.lost);
            // Between two played frames, only lost ones are missing, and there are no
            // more Missing ticks than lost frames.
            let mut previous: Option<u32> = None;
            let mut missing = 0u32;
            let mut skipped_lost = 0u64;
            for t in trace.after(start) {
                match t.1 {
                    Out::Frame(i) => {
                        if let Some(p) = previous {
                            let gap = i - p - 1;
                            let lost_between =
                                (p + 1..i).filter(|&k| lost[k as usize]).count() as u32;
                            assert_eq!(
                                gap, lost_between,
                                "frames {p}..{i}: a received frame was dropped"
                            );
                            assert!(
                                missing <= lost_between,
                                "{missing} Missing for {lost_between} lost after {p}"
                            );
                            skipped_lost += u64::from(lost_between - missing);
                        }
                        previous = Some(i);
                        missing = 0;
                    }
                    Out::Missing => missing += 1,
                    Out::Waiting => panic!("waiting while playing"),
                }
            }
            // A lost frame not concealed was skipped to shrink the delay.
            assert!(
                skipped_lost <= stats.dropped_for_drift,
                "{skipped_lost} {stats:?}"
            );
            let truly_lost = lost.iter().filter(|&&l| l).count() as u64;
            assert!(stats.lost <= truly_lost);
            assert!(stats.lost + stats.dropped_for_drift >= truly_lost - 2);
        }
    }

    #[test]
    fn reordered_neighbours_are_never_missing() {
        for seed in 1..=5u64 {
            let mut rng = Rng(0xdead_beef ^ (seed << 20));
            let mut packets = stream(3000, 0, 0);
            let mut k = 1;
            while k + 1 < packets.len() {
                if rng.chance(0.1) {
                    let (a, b) = (packets[k].index, packets[k + 1].index);
                    packets[k].index = b;
                    packets[k + 1].index = a;
                    let (sa, ta) = (packets[k].seq, packets[k].ts);
                    packets[k].seq = packets[k + 1].seq;
                    packets[k].ts = packets[k + 1].ts;
                    packets[k + 1].seq = sa;
                    packets[k + 1].ts = ta;
                    k += 2;
                } else {
                    k += 1;
                }
            }
            let trace = run(JitterConfig::default(), packets, 11, 61_200);
            let start = trace.first_frame_ms();
            let stats = trace.stats;
            assert_eq!(trace.missing_after(start), 0, "seed {seed}: {stats:?}");
            assert_eq!(stats.late, 0);
            assert_increasing(&trace.frames());
            assert!(stats.current_delay_ms <= 100, "{stats:?}");
        }
    }

    #[test]
    fn sixty_ms_jitter_is_absorbed_within_bounds() {
        for seed in 1..=5u64 {
            let mut rng = Rng(0x1234_5678 ^ (seed << 32));
            let mut packets = stream(3000, 500, 12345);
            for p in &mut packets {
                p.arrival_ms += rng.unit() * 60.0;
            }
            let trace = run(JitterConfig::default(), packets, 0, 61_200);
            let start = trace.first_frame_ms();
            let late_after_first_second = trace.stats.late - trace.stats_at(start + 1000).late;
            assert_eq!(late_after_first_second, 0, "seed {seed}: {:?}", trace.stats);
            assert_increasing(&trace.frames());
            for t in trace.after(start + 1000) {
                assert!(
                    t.2.current_delay_ms <= 60 + 40 + 10,
                    "seed {seed}: {:?}",
                    t.2
                );
                assert!(t.2.current_delay_ms <= 300);
            }
            let stats = trace.stats;
            assert!(
                stats.jitter_ms > 10.0 && stats.jitter_ms < 30.0,
                "{stats:?}"
            );
            // Nothing was lost: every Missing tick grew the delay.
            assert_eq!(stats.lost, 0, "{stats:?}");
            assert!(trace.frames().len() >= 2990, "{stats:?}");
        }
    }

    fn drifting(rate: f64, seconds: u32) -> Vec<Packet> {
        // The sender's 20 ms last 20 / rate ms of our time.
        (0..seconds * 50)
            .map(|k| Packet {
                arrival_ms: 1000.0 + f64::from(k) * 20.0 / rate + 5.0,
                index: k,
                seq: k as u16,
                ts: k.wrapping_mul(160),
                marker: k == 0,
            })
            .collect()
    }

    #[test]
    fn clock_drift_keeps_the_delay_bounded() {
        for rate in [1.01, 0.99] {
            let packets = drifting(rate, 300);
            let end = packets.last().unwrap().arrival_ms as u64;
            let trace = run(JitterConfig::default(), packets, 7, end);
            let start = trace.first_frame_ms();
            let stats = trace.stats;
            for t in trace.after(start + 2000) {
                assert!(t.2.current_delay_ms <= 80, "rate {rate}: {:?}", t.2);
            }
            assert!(trace.longest_missing_run() <= 1, "rate {rate}: {stats:?}");
            let frames = trace.frames();
            assert_increasing(&frames);
            // About 1 % of 15 000 frames adjusted; no starvation.
            let played = trace.after(start).count();
            assert!(frames.len() * 100 >= played * 98, "rate {rate}: {stats:?}");
            if rate > 1.0 {
                assert!((130..=170).contains(&stats.dropped_for_drift), "{stats:?}");
                assert_eq!(stats.inserted, 0, "{stats:?}");
            } else {
                assert!((130..=170).contains(&stats.inserted), "{stats:?}");
                assert!(stats.dropped_for_drift <= 1, "{stats:?}");
            }
            assert_eq!(stats.lost, 0, "rate {rate}: {stats:?}");
            assert!(stats.late <= 2, "rate {rate}: {stats:?}");
        }
    }

    #[test]
    fn duplicates_are_dropped_and_counted() {
        let mut rng = Rng(77);
        let mut packets = stream(1000, 0, 0);
        let mut dups = 0;
        for k in 0..1000 {
            if rng.chance(0.2) {
                let mut d = packets[k];
                d.arrival_ms += rng.unit() * 60.0;
                d.marker = false;
                packets.push(d);
                dups += 1;
            }
        }
        let trace = run(JitterConfig::default(), packets, 5, 22_000);
        let stats = trace.stats;
        assert_eq!(trace.jb.stats().duplicate, dups, "{stats:?}");
        assert_eq!(stats.late + stats.lost + stats.inserted, 0, "{stats:?}");
        let frames = trace.frames();
        assert_increasing(&frames);
        assert_eq!(frames.len() as u64 + stats.dropped_for_drift, 1000);
    }

    #[test]
    fn sequence_and_timestamp_wrap_around() {
        let ts0 = u32::MAX - 100 * 160 + 7;
        let mut rng = Rng(5);
        let mut packets = stream(600, 65_500, ts0);
        for p in &mut packets {
            p.arrival_ms += rng.unit() * 10.0;
        }
        let trace = run(JitterConfig::default(), packets, 9, 14_000);
        let stats = trace.stats;
        let start = trace.first_frame_ms();
        assert_eq!(trace.missing_after(start), 0, "{stats:?}");
        assert_eq!(stats.resyncs + stats.out_of_window + stats.late, 0);
        let frames = trace.frames();
        assert_increasing(&frames);
        assert_eq!(frames.len() as u64 + stats.dropped_for_drift, 600);
        let reception = trace.jb.reception().unwrap();
        assert_eq!(reception.extended_highest_seq, 65_500 + 599);
        assert_eq!(reception.expected, 600);
        assert_eq!(reception.received, 600);
    }

    #[test]
    fn garbage_never_panics() {
        let configs = [
            JitterConfig::default(),
            JitterConfig::new(48_000, 960),
            JitterConfig::new(8000, 80),
            JitterConfig {
                clock_rate: 0,
                frame_samples: 0,
                min_delay_ms: 500,
                max_delay_ms: 0,
                initial_delay_ms: u32::MAX,
            },
            JitterConfig {
                clock_rate: u32::MAX,
                frame_samples: u32::MAX,
                min_delay_ms: u32::MAX,
                max_delay_ms: u32::MAX,
                initial_delay_ms: 0,
            },
            JitterConfig::new(1, 1),
        ];
        let big = [0u8; MAX_PAYLOAD + 1];
        for (c, config) in configs.into_iter().enumerate() {
            let mut rng = Rng(0xabcdef ^ c as u64);
            let mut jb = JitterBuffer::new(config);
            let mut now: u64 = rng.next() >> 40;
            let (mut seq, mut ts) = (0u16, 0u32);
            for _ in 0..100_000 {
                match rng.next() % 16 {
                    0 => now = now.wrapping_add(rng.next() % 100_000),
                    1 => now = now.saturating_sub(rng.next() % 50),
                    2 => now = rng.next(),
                    _ => now = now.saturating_add(rng.next() % 25),
                }
                match rng.next() % 4 {
                    0 => {
                        seq = rng.next() as u16;
                        ts = rng.next() as u32;
                    }
                    _ => {
                        seq = seq.wrapping_add((rng.next() % 5) as u16);
                        ts = ts.wrapping_add((rng.next() % 800) as u32);
                    }
                }
                let len = (rng.next() % 200) as usize;
                match rng.next() % 8 {
                    0 => jb.push(now, seq, ts, rng.chance(0.5), &big),
                    1 => {
                        let _ = jb.pop(now);
                    }
                    2 => jb.push_packet(
                        now,
                        &RtpHeader {
                            marker: rng.chance(0.1),
                            payload_type: 0,
                            sequence: seq,
                            timestamp: ts,
                            ssrc: (rng.next() % 3) as u32,
                        },
                        &big[..len],
                    ),
                    _ => jb.push(now, seq, ts, rng.chance(0.05), &big[..len]),
                }
                assert!(jb.buffered() <= jb.slots.len());
                if let Playout::Frame(data) = jb.pop(now) {
                    assert!(!data.is_empty() && data.len() <= MAX_PAYLOAD);
                }
            }
            let _ = jb.stats();
            let _ = jb.reception();
        }
    }

    #[test]
    fn oversized_and_empty_payloads_are_dropped() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        jb.push(0, 1, 160, false, &[0; MAX_PAYLOAD + 1]);
        jb.push(0, 1, 160, false, &[]);
        assert_eq!(jb.stats().invalid, 2);
        assert_eq!(jb.pop(100), Playout::Waiting);
        jb.push(0, 1, 160, false, &[1; MAX_PAYLOAD]);
        assert_eq!(jb.pop(100), Playout::Frame(&[1; MAX_PAYLOAD]));
    }

    #[test]
    fn waits_then_starts_after_the_initial_delay() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        assert_eq!(jb.pop(0), Playout::Waiting);
        jb.push(10, 0, 0, true, &[1]);
        assert_eq!(jb.pop(20), Playout::Waiting);
        jb.push(30, 1, 160, false, &[2]);
        assert_eq!(jb.pop(40), Playout::Frame(&[1]));
        assert_eq!(jb.pop(60), Playout::Frame(&[2]));
        assert_eq!(jb.pop(80), Playout::Missing);
        assert_eq!(jb.stats().lost, 1);
    }

    #[test]
    fn a_late_packet_is_dropped_and_counted() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        jb.push(0, 0, 0, true, &[0]);
        assert_eq!(jb.pop(40), Playout::Frame(&[0]));
        assert_eq!(jb.pop(60), Playout::Missing);
        // Frame 1 arrives after its tick, frame 2 in time.
        jb.push(70, 1, 160, false, &[1]);
        jb.push(70, 2, 320, false, &[2]);
        assert_eq!(jb.stats().late, 1);
        assert_eq!(jb.pop(80), Playout::Frame(&[2]));
        // A copy of a played frame is a duplicate, not late.
        jb.push(85, 2, 320, false, &[2]);
        assert_eq!(jb.stats().duplicate, 1);
        assert_eq!(jb.stats().late, 1);
    }

    #[test]
    fn a_late_stream_is_held_rather_than_dropped() {
        // The network delay steps up by 100 ms. Until the first delayed packet arrives
        // (late) this looks like loss; from then on the buffer holds frames until they
        // arrive in time instead of dropping them.
        let mut packets = stream(1000, 0, 0);
        for p in packets.iter_mut().skip(300) {
            p.arrival_ms += 100.0;
        }
        let trace = run(JitterConfig::default(), packets, 3, 22_000);
        let stats = trace.stats;
        assert!(stats.late <= 5, "{stats:?}");
        assert!(stats.lost <= 5, "{stats:?}");
        assert!(stats.inserted >= 3 && stats.inserted <= 7, "{stats:?}");
        let frames = trace.frames();
        assert_increasing(&frames);
        assert!(frames.len() >= 990, "{stats:?}");
        assert!(trace.longest_missing_run() <= 9);
    }

    #[test]
    fn a_timestamp_jump_with_marker_starts_over() {
        let mut packets = stream(200, 0, 0);
        for p in packets.iter_mut().skip(100) {
            p.ts = p.ts.wrapping_add(1_000_000);
            p.seq = p.seq.wrapping_add(20_000);
        }
        packets[100].marker = true;
        let trace = run(JitterConfig::default(), packets, 2, 5_200);
        let stats = trace.stats;
        assert_eq!(stats.resyncs, 1, "{stats:?}");
        let frames = trace.frames();
        assert_increasing(&frames);
        assert!(frames.len() >= 197, "{stats:?}");
        assert!(trace.longest_missing_run() <= 2);
    }

    #[test]
    fn a_timestamp_jump_without_marker_starts_over_on_the_second_packet() {
        let mut packets = stream(200, 0, 0);
        for p in packets.iter_mut().skip(100) {
            p.ts = p.ts.wrapping_sub(2_000_000_000);
        }
        let trace = run(JitterConfig::default(), packets, 2, 5_200);
        let stats = trace.stats;
        assert_eq!(stats.resyncs, 1, "{stats:?}");
        assert_eq!(stats.late + stats.out_of_window, 1, "{stats:?}");
        let frames = trace.frames();
        assert_increasing(&frames);
        assert!(frames.len() >= 196, "{stats:?}");
        // One stray packet far away is dropped, and the stream goes on.
        let mut packets = stream(200, 0, 0);
        packets[50].ts = 3_000_000_000;
        let trace = run(JitterConfig::default(), packets, 2, 5_200);
        let stats = trace.stats;
        assert_eq!(stats.resyncs, 0, "{stats:?}");
        assert_eq!(stats.late + stats.out_of_window, 1, "{stats:?}");
        assert_eq!(stats.lost, 1, "{stats:?}");
    }

    #[test]
    fn a_new_ssrc_starts_over() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let header = |ssrc, sequence, timestamp| RtpHeader {
            marker: false,
            payload_type: 0,
            sequence,
            timestamp,
            ssrc,
        };
        jb.push_packet(0, &header(1, 10, 1000), &[1]);
        assert_eq!(jb.pop(40), Playout::Frame(&[1]));
        jb.push_packet(45, &header(1, 11, 1160), &[2]);
        // Another source, timestamps nearby: still a new stream.
        jb.push_packet(50, &header(2, 500, 1320), &[3]);
        assert_eq!(jb.stats().resyncs, 1);
        assert_eq!(jb.pop(60), Playout::Waiting);
        assert_eq!(jb.pop(80), Playout::Frame(&[3]));
        assert_eq!(jb.reception().unwrap().extended_highest_seq, 500);
    }

    #[test]
    fn silence_suppression_goes_back_to_waiting_and_restarts() {
        // 2 s of talk, 3 s of silence (nothing sent), 2 s of talk with the marker.
        let mut packets: Vec<Packet> = stream(100, 0, 0);
        for k in 0..100u32 {
            packets.push(Packet {
                arrival_ms: 1000.0 + f64::from(250 + k) * 20.0 + 5.0,
                index: 250 + k,
                seq: 100 + k as u16,
                ts: (250 + k) * 160,
                marker: k == 0,
            });
        }
        let trace = run(JitterConfig::default(), packets, 4, 8_200);
        let stats = trace.stats;
        assert_eq!(
            trace.frames().len() as u64 + stats.dropped_for_drift,
            200,
            "{stats:?}"
        );
        // A few Missing frames at the start of the silence, then Waiting.
        assert!(stats.lost <= 20, "{stats:?}");
        let waiting = trace
            .after(3500)
            .filter(|t| t.0 < 6000)
            .filter(|t| t.1 == Out::Waiting);
        assert!(waiting.count() >= 100);
        assert_eq!(stats.late + stats.resyncs, 0, "{stats:?}");
    }

    #[test]
    fn a_short_pause_with_marker_realigns_to_the_target() {
        // Start at 40 ms with a clean stream (target 20 ms): a 200 ms pause ending in
        // a marker lets the delay drop at once, without touching audio.
        let mut packets: Vec<Packet> = stream(50, 0, 0);
        for k in 0..100u32 {
            packets.push(Packet {
                arrival_ms: 1000.0 + f64::from(60 + k) * 20.0 + 5.0,
                index: 60 + k,
                seq: 50 + k as u16,
                ts: (60 + k) * 160,
                marker: k == 0,
            });
        }
        // Phase so that the initial delay is 45 ms.
        let trace = run(JitterConfig::default(), packets, 10, 4_500);
        let stats = trace.stats;
        assert_eq!(trace.frames().len(), 150, "{stats:?}");
        assert_eq!(stats.dropped_for_drift, 1, "{stats:?}");
        assert!(stats.current_delay_ms < 40, "{stats:?}");
    }

    #[test]
    fn wideband_clock_and_frames_work_too() {
        let config = JitterConfig::new(48_000, 960);
        let packets: Vec<Packet> = (0..500u32)
            .map(|k| Packet {
                arrival_ms: 500.0 + f64::from(k) * 20.0,
                index: k,
                seq: k as u16,
                ts: 1_000_000 + k * 960,
                marker: false,
            })
            .collect();
        let trace = run(config, packets, 13, 11_000);
        let start = trace.first_frame_ms();
        assert_eq!(trace.missing_after(start), 0);
        assert_eq!(trace.stats.lost, 0);
    }
}
