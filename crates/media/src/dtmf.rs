//! DTMF every way a call carries it, without I/O: RFC 4733 telephone-event packets
//! (sent and received), SIP INFO bodies (`application/dtmf-relay`, `application/dtmf`)
//! and in-band tones (generated, and detected with Goertzel filters).
//!
//! Nothing here owns a socket, a clock or a thread. The media engine calls the pieces
//! once per 20 ms tick with what it has (the RTP timestamp of the tick, a received
//! payload, a 160-sample frame at 8 kHz) and gets back what to send or which digit
//! arrived:
//!
//! * [`Rfc4733Sender::tick`] gives the telephone-event packet to send *instead of* this
//!   tick's audio packet, or `None` to send audio as usual;
//! * [`Rfc4733Receiver::on_packet`] takes every received telephone-event payload and
//!   reports each digit exactly once;
//! * [`ToneGenerator::fill`] writes the tone (or the silent gap after it) over this
//!   tick's outgoing frame; [`ToneGenerator::mix`] adds it to a frame instead;
//! * [`GoertzelDetector::process`] takes every decoded received frame;
//! * [`info_body`] and [`parse_info`] are for the SIP layer (SIP INFO).
//!
//! Digits are `0-9 * # A-D` (lower-case `a-d` accepted on input, upper-case on output),
//! RFC 4733 events 0–15. In a digit string to send, `,` is a one-second pause.
//! Nothing in this module panics on any input.

use std::collections::VecDeque;
use std::f64::consts::{PI, TAU};
use std::fmt;

/// The rate in-band DTMF is detected at, and tones are generated at unless a
/// generator is made [`ToneGenerator::with_rate`]: 8 kHz, the telephone band (the
/// media engine hands the detector a resampled copy of what it plays).
pub const SAMPLE_RATE: u32 = 8000;
/// 20 ms at [`SAMPLE_RATE`].
pub const FRAME_SAMPLES: usize = 160;

/// The payload type offered for `telephone-event/8000` unless the peer chose another.
pub const DEFAULT_PAYLOAD_TYPE: u8 = 101;
/// How long one digit plays (RFC 4733 events and in-band tones), by default.
pub const DEFAULT_DIGIT_MS: u32 = 100;
/// Silence between two digits, by default.
pub const DEFAULT_GAP_MS: u32 = 60;
/// What a `,` in a digit string waits.
pub const PAUSE_MS: u32 = 1000;
/// The volume field of sent events: the tone's power, −10 dBm0.
pub(crate) const DEFAULT_VOLUME: u8 = 10;
/// How many times the end packet of an event is sent (RFC 4733 §2.5.1.4).
pub const END_PACKETS: u8 = 3;
/// The most digits and pauses one queue holds; a longer request is refused whole.
pub const MAX_QUEUED: usize = 256;
/// Content type of SIP INFO DTMF (`Signal=5\r\nDuration=160\r\n`).
pub(crate) const INFO_CONTENT_TYPE: &str = "application/dtmf-relay";
/// The other SIP INFO DTMF content type: the body is the digit alone.
pub(crate) const INFO_DTMF_CONTENT_TYPE: &str = "application/dtmf";
/// The low (row) group of DTMF frequencies, in Hz.
pub(crate) const ROW_HZ: [f64; 4] = [697.0, 770.0, 852.0, 941.0];
/// The high (column) group of DTMF frequencies, in Hz.
pub(crate) const COL_HZ: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
/// Level of each of the two generated tones, in dBFS (a full-scale sine is 0 dBFS).
pub const DEFAULT_TONE_DBFS: f64 = -10.0;

/// Length of one media tick.
const TICK_MS: u32 = 20;
/// The digit of each RFC 4733 event code 0–15.
const DIGITS: [char; 16] = [
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '#', 'A', 'B', 'C', 'D',
];

/// Why digits were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DtmfError {
    /// A character that is not `0-9 * # A-D a-d ,` (position counted in characters).
    InvalidDigit {
        /// The character.
        digit: char,
        /// Its position in the string, from 0.
        position: usize,
    },
    /// The queue would hold more than [`MAX_QUEUED`] digits and pauses.
    TooMany {
        /// The limit.
        limit: usize,
    },
}

impl fmt::Display for DtmfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DtmfError::InvalidDigit { digit, position } => write!(
                f,
                "{digit:?} at position {} is not a DTMF digit (0-9, *, #, A-D, and ',' for a pause)",
                position + 1
            ),
            DtmfError::TooMany { limit } => {
                write!(f, "too many DTMF digits: at most {limit} may wait to be sent")
            }
        }
    }
}

impl std::error::Error for DtmfError {}

/// The RFC 4733 event code of a digit (`0-9 * # A-D`, also `a-d`).
pub(crate) fn digit_to_event(digit: char) -> Option<u8> {
    match digit {
        '0'..='9' => Some(digit as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(digit as u8 - b'A' + 12),
        'a'..='d' => Some(digit as u8 - b'a' + 12),
        _ => None,
    }
}

/// The digit of an RFC 4733 event code (`None` above 15: not a DTMF event).
pub(crate) fn event_to_digit(event: u8) -> Option<char> {
    DIGITS.get(usize::from(event)).copied()
}

/// The (row, column) indexes into [`ROW_HZ`]/[`COL_HZ`] of an event code 0–15.
fn keypad_position(event: u8) -> Option<(usize, usize)> {
    Some(match event {
        1 => (0, 0),
        2 => (0, 1),
        3 => (0, 2),
        12 => (0, 3),
        4 => (1, 0),
        5 => (1, 1),
        6 => (1, 2),
        13 => (1, 3),
        7 => (2, 0),
        8 => (2, 1),
        9 => (2, 2),
        14 => (2, 3),
        10 => (3, 0),
        0 => (3, 1),
        11 => (3, 2),
        15 => (3, 3),
        _ => return None,
    })
}

/// The event code at a keypad position (inverse of [`keypad_position`]).
fn keypad_event(row: usize, col: usize) -> Option<u8> {
    const KEYPAD: [[u8; 4]; 4] = [[1, 2, 3, 12], [4, 5, 6, 13], [7, 8, 9, 14], [10, 0, 11, 15]];
    KEYPAD.get(row)?.get(col).copied()
}

/// The (low, high) tone frequencies of a digit, in Hz.
pub fn tone_frequencies(digit: char) -> Option<(f64, f64)> {
    let (row, col) = keypad_position(digit_to_event(digit)?)?;
    Some((ROW_HZ[row], COL_HZ[col]))
}

/// One element of a digit string to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfStep {
    /// A digit, upper-case.
    Digit(char),
    /// A `,`: wait [`PAUSE_MS`].
    Pause,
}

/// Reads a digit string (`0-9 * # A-D a-d` and `,` for a pause). The whole string is
/// refused on the first other character, or when it is longer than [`MAX_QUEUED`].
/// The SIP layer uses it to pace SIP INFO digits the same way the queues here do.
pub fn parse_digits(digits: &str) -> Result<Vec<DtmfStep>, DtmfError> {
    let mut steps = Vec::new();
    for (position, c) in digits.chars().enumerate() {
        if steps.len() == MAX_QUEUED {
            return Err(DtmfError::TooMany { limit: MAX_QUEUED });
        }
        let step = if c == ',' {
            DtmfStep::Pause
        } else {
            match digit_to_event(c).and_then(event_to_digit) {
                Some(d) => DtmfStep::Digit(d),
                None => return Err(DtmfError::InvalidDigit { digit: c, position }),
            }
        };
        steps.push(step);
    }
    Ok(steps)
}

/// What a queue holds: an event code or a pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    Event(u8),
    Pause,
}

/// Parses `digits` and appends them to `queue`, all or nothing.
fn enqueue(queue: &mut VecDeque<Item>, digits: &str) -> Result<(), DtmfError> {
    let steps = parse_digits(digits)?;
    if queue.len() + steps.len() > MAX_QUEUED {
        return Err(DtmfError::TooMany { limit: MAX_QUEUED });
    }
    queue.extend(steps.into_iter().map(|s| match s {
        DtmfStep::Digit(d) => Item::Event(digit_to_event(d).unwrap_or(0)),
        DtmfStep::Pause => Item::Pause,
    }));
    Ok(())
}

// ---------------------------------------------------------------------------------
// RFC 4733 payload
// ---------------------------------------------------------------------------------

/// The four bytes of an RFC 4733 named-event payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code (0–15 are the DTMF digits).
    pub event: u8,
    /// The E bit: this packet ends the event.
    pub end: bool,
    /// Power of the tone, 0 to 63 (−dBm0); higher values are truncated to 6 bits.
    pub volume: u8,
    /// Duration so far, in RTP timestamp units, from the event's timestamp.
    pub duration: u16,
}

/// Writes the payload of one event (the R bit is zero).
pub fn encode_event(event: &TelephoneEvent) -> [u8; 4] {
    let d = event.duration.to_be_bytes();
    [
        event.event,
        (u8::from(event.end) << 7) | (event.volume & 0x3F),
        d[0],
        d[1],
    ]
}

/// Reads the first event of a payload; `None` when it is shorter than four bytes.
pub fn parse_event(payload: &[u8]) -> Option<TelephoneEvent> {
    let p = payload.get(..4)?;
    Some(TelephoneEvent {
        event: p[0],
        end: p[1] & 0x80 != 0,
        volume: p[1] & 0x3F,
        duration: u16::from_be_bytes([p[2], p[3]]),
    })
}

/// One telephone-event packet to send this tick: the caller writes the RTP header
/// (its own SSRC and next sequence number, [`Rfc4733Sender::payload_type`], this
/// `marker` and `timestamp`) followed by `payload`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPacket {
    /// The RTP marker bit: set on the first packet of an event only.
    pub marker: bool,
    /// The RTP timestamp: the event's, the same for all its packets.
    pub timestamp: u32,
    /// The RFC 4733 payload.
    pub payload: [u8; 4],
}

impl EventPacket {
    /// The payload, decoded.
    pub fn event(&self) -> TelephoneEvent {
        // Four bytes always parse.
        parse_event(&self.payload).unwrap_or(TelephoneEvent {
            event: 0,
            end: false,
            volume: 0,
            duration: 0,
        })
    }
}

// ---------------------------------------------------------------------------------
// RFC 4733 sender
// ---------------------------------------------------------------------------------

/// What the sender's next tick does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendState {
    /// Nothing queued.
    Idle,
    /// The next tick sends the first packet of this event.
    Start(u8),
    /// The event plays; `duration` was the last packet's.
    Playing {
        event: u8,
        timestamp: u32,
        duration: u32,
    },
    /// End packets still to send (at least one).
    Ending {
        event: u8,
        timestamp: u32,
        duration: u16,
        left: u8,
    },
    /// This many ticks without event packets (gap or pause) before the next item.
    Silent(u32),
}

/// Sends digits as RFC 4733 telephone-events, one packet per 20 ms tick.
///
/// Each digit: a first packet with the marker bit, then one packet per tick with the
/// duration growing by one frame (160 at 8 kHz), the last one with the E bit sent
/// [`END_PACKETS`] times; all with the RTP timestamp of the tick the digit started.
/// Then a gap of audio ticks ([`DEFAULT_GAP_MS`]) before the next digit; a `,` adds
/// [`PAUSE_MS`] of audio ticks.
#[derive(Debug, Clone)]
pub struct Rfc4733Sender {
    payload_type: u8,
    /// Timestamp units per tick.
    step: u32,
    clock_rate: u32,
    digit_units: u32,
    gap_ticks: u32,
    pause_ticks: u32,
    volume: u8,
    queue: VecDeque<Item>,
    next: SendState,
}

impl Rfc4733Sender {
    /// A sender for the negotiated telephone-event payload type and clock rate (8000
    /// for `telephone-event/8000`; out-of-range rates are clamped to 1000–192000, 0
    /// means 8000). Digits last [`DEFAULT_DIGIT_MS`], gaps [`DEFAULT_GAP_MS`].
    pub fn new(payload_type: u8, clock_rate: u32) -> Rfc4733Sender {
        let clock_rate = if clock_rate == 0 {
            SAMPLE_RATE
        } else {
            clock_rate.clamp(1000, 192_000)
        };
        let mut s = Rfc4733Sender {
            payload_type: payload_type & 0x7F,
            step: clock_rate * TICK_MS / 1000,
            clock_rate,
            digit_units: 0,
            gap_ticks: 0,
            pause_ticks: PAUSE_MS / TICK_MS,
            volume: DEFAULT_VOLUME,
            queue: VecDeque::new(),
            next: SendState::Idle,
        };
        s.set_digit_ms(DEFAULT_DIGIT_MS);
        s.set_gap_ms(DEFAULT_GAP_MS);
        s
    }

    /// The payload type to put in the RTP header of event packets.
    pub fn payload_type(&self) -> u8 {
        self.payload_type
    }

    /// How long each digit lasts, rounded up to whole ticks (at least one tick, at
    /// most what the 16-bit duration field holds). Applies from the next digit.
    pub(crate) fn set_digit_ms(&mut self, ms: u32) {
        let units = u64::from(ms) * u64::from(self.clock_rate) / 1000;
        let ticks = units.div_ceil(u64::from(self.step)).max(1);
        let max_ticks = u64::from(u16::MAX) / u64::from(self.step);
        self.digit_units = (ticks.min(max_ticks) * u64::from(self.step)) as u32;
    }

    /// The silence between the last end packet of a digit and the next digit, rounded
    /// up to whole ticks.
    pub(crate) fn set_gap_ms(&mut self, ms: u32) {
        self.gap_ticks = ms.div_ceil(TICK_MS);
    }

    /// Appends digits (`0-9 * # A-D a-d`, `,` for a pause) to send; nothing is queued
    /// when any character is refused or the queue would exceed [`MAX_QUEUED`].
    pub fn queue(&mut self, digits: &str) -> Result<(), DtmfError> {
        enqueue(&mut self.queue, digits)?;
        self.settle();
        Ok(())
    }

    /// Whether this tick (the next call of [`tick`](Self::tick)) sends an event packet
    /// instead of audio.
    pub fn is_active(&self) -> bool {
        matches!(
            self.next,
            SendState::Start(_) | SendState::Playing { .. } | SendState::Ending { .. }
        )
    }

    /// Whether everything queued has been sent (gaps and pauses included).
    pub fn is_idle(&self) -> bool {
        self.next == SendState::Idle
    }

    /// Forgets the queue and stops at once (an event in progress gets no end packet;
    /// receivers time it out).
    pub fn clear(&mut self) {
        self.queue.clear();
        self.next = SendState::Idle;
    }

    /// One 20 ms tick, `now` being the RTP timestamp this tick's audio packet would
    /// carry. Returns the event packet to send instead of audio, or `None`.
    pub fn tick(&mut self, now: u32) -> Option<EventPacket> {
        let packet = match self.next {
            SendState::Idle => None,
            SendState::Silent(n) => {
                self.next = SendState::Silent(n.saturating_sub(1));
                None
            }
            SendState::Start(event) => Some(self.play(event, now, 0, true)),
            SendState::Playing {
                event,
                timestamp,
                duration,
            } => Some(self.play(event, timestamp, duration, false)),
            SendState::Ending {
                event,
                timestamp,
                duration,
                left,
            } => {
                self.next = if left > 1 {
                    SendState::Ending {
                        event,
                        timestamp,
                        duration,
                        left: left - 1,
                    }
                } else {
                    SendState::Silent(self.gap_ticks)
                };
                Some(self.packet(event, timestamp, duration, true, false))
            }
        };
        self.settle();
        packet
    }

    /// The next packet of a playing event; moves to the end packets when the digit's
    /// length is reached.
    fn play(&mut self, event: u8, timestamp: u32, sent: u32, first: bool) -> EventPacket {
        let duration = sent.saturating_add(self.step).min(self.digit_units);
        if duration >= self.digit_units {
            let d = u16::try_from(duration).unwrap_or(u16::MAX);
            self.next = if END_PACKETS > 1 {
                SendState::Ending {
                    event,
                    timestamp,
                    duration: d,
                    left: END_PACKETS - 1,
                }
            } else {
                SendState::Silent(self.gap_ticks)
            };
            self.packet(event, timestamp, d, true, first)
        } else {
            self.next = SendState::Playing {
                event,
                timestamp,
                duration,
            };
            let d = u16::try_from(duration).unwrap_or(u16::MAX);
            self.packet(event, timestamp, d, false, first)
        }
    }

    fn packet(
        &self,
        event: u8,
        timestamp: u32,
        duration: u16,
        end: bool,
        marker: bool,
    ) -> EventPacket {
        EventPacket {
            marker,
            timestamp,
            payload: encode_event(&TelephoneEvent {
                event,
                end,
                volume: self.volume,
                duration,
            }),
        }
    }

    /// Takes the next queue item when nothing plays and the gap is over.
    fn settle(&mut self) {
        while matches!(self.next, SendState::Idle | SendState::Silent(0)) {
            self.next = match self.queue.pop_front() {
                Some(Item::Event(e)) => SendState::Start(e),
                Some(Item::Pause) => SendState::Silent(self.pause_ticks),
                None => {
                    self.next = SendState::Idle;
                    return;
                }
            };
        }
    }
}

// ---------------------------------------------------------------------------------
// RFC 4733 receiver
// ---------------------------------------------------------------------------------

/// How many recent event timestamps the receiver remembers.
const RECEIVER_HISTORY: usize = 8;
/// A packet whose timestamp is this far (or less) *before* the newest event is a late
/// packet of an old event, not a new digit (8 s at 8 kHz).
const STALE_WINDOW: u32 = 0x1_0000;

/// An event heard this long (in timestamp units) may go on in a new segment.
const LONG_EVENT: u16 = 0x8000;

/// What the receiver knows of the newest event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LastEvent {
    timestamp: u32,
    event: u8,
    duration: u16,
    ended: bool,
}

/// Turns received telephone-event payloads into digits, each reported once.
///
/// An event is known by its RTP timestamp: the first packet of a timestamp not seen
/// before reports the digit (whichever packet of the event arrives first, so losing the
/// first packets loses nothing); further packets, end packets and their retransmissions
/// are ignored, also when they arrive late after the next event has begun. A new
/// timestamp is a new digit, even for the same digit — except the next segment of a
/// long event (RFC 4733 §2.5.1.3: same event, heard for at least 4 s at 8 kHz, not
/// ended, the new timestamp within what was heard of it). Payloads shorter than four bytes and events above 15 are ignored. Call
/// [`reset`](Self::reset) when the peer's stream restarts (new SSRC).
#[derive(Debug, Clone, Default)]
pub struct Rfc4733Receiver {
    recent: [Option<u32>; RECEIVER_HISTORY],
    next_slot: usize,
    last: Option<LastEvent>,
}

impl Rfc4733Receiver {
    /// A receiver that has seen nothing.
    pub fn new() -> Rfc4733Receiver {
        Rfc4733Receiver::default()
    }

    /// Forgets every event seen.
    pub fn reset(&mut self) {
        *self = Rfc4733Receiver::default();
    }

    /// One received packet of the telephone-event payload type: its RTP timestamp and
    /// payload. Returns the digit when this packet begins a new event.
    pub fn on_packet(&mut self, rtp_timestamp: u32, payload: &[u8]) -> Option<char> {
        let ev = parse_event(payload)?;
        let digit = event_to_digit(ev.event)?;
        if self.recent.contains(&Some(rtp_timestamp)) {
            if let Some(last) = self.last.as_mut() {
                if last.timestamp == rtp_timestamp && last.event == ev.event {
                    last.duration = last.duration.max(ev.duration);
                    last.ended |= ev.end;
                }
            }
            return None;
        }
        let seen = LastEvent {
            timestamp: rtp_timestamp,
            event: ev.event,
            duration: ev.duration,
            ended: ev.end,
        };
        if let Some(last) = self.last {
            let behind = last.timestamp.wrapping_sub(rtp_timestamp);
            if behind != 0 && behind <= STALE_WINDOW {
                // A late packet of an older event.
                return None;
            }
            let ahead = rtp_timestamp.wrapping_sub(last.timestamp);
            if ev.event == last.event
                && !last.ended
                && last.duration >= LONG_EVENT
                && ahead <= u32::from(last.duration)
            {
                // The next segment of a long event.
                self.remember(seen);
                return None;
            }
        }
        self.remember(seen);
        Some(digit)
    }

    fn remember(&mut self, event: LastEvent) {
        if let Some(slot) = self.recent.get_mut(self.next_slot) {
            *slot = Some(event.timestamp);
        }
        self.next_slot = (self.next_slot + 1) % RECEIVER_HISTORY;
        self.last = Some(event);
    }
}

// ---------------------------------------------------------------------------------
// SIP INFO
// ---------------------------------------------------------------------------------

/// The content type and body of a SIP INFO carrying one digit:
/// `application/dtmf-relay`, `Signal=5\r\nDuration=160\r\n` (`a-d` sent upper-case).
pub fn info_body(digit: char, duration_ms: u32) -> Result<(&'static str, String), DtmfError> {
    let d = digit_to_event(digit)
        .and_then(event_to_digit)
        .ok_or(DtmfError::InvalidDigit { digit, position: 0 })?;
    Ok((
        INFO_CONTENT_TYPE,
        format!("Signal={d}\r\nDuration={duration_ms}\r\n"),
    ))
}

/// The digit a received SIP INFO carries, if any: `application/dtmf-relay` (the
/// `Signal` line, keys case-insensitive, blanks allowed, the digit or its event number
/// 0–15 as `10`/`11` for `*`/`#`) or `application/dtmf` (the body is the digit).
/// Content-type parameters and case are ignored. Returns the upper-case digit.
pub fn parse_info(content_type: &str, body: &str) -> Option<char> {
    let mime = content_type.split(';').next().unwrap_or_default().trim();
    if mime.eq_ignore_ascii_case(INFO_CONTENT_TYPE) {
        body.lines().find_map(|line| {
            let (key, value) = line.split_once('=').or_else(|| line.split_once(':'))?;
            if key.trim().eq_ignore_ascii_case("signal") {
                parse_signal(value)
            } else {
                None
            }
        })
    } else if mime.eq_ignore_ascii_case(INFO_DTMF_CONTENT_TYPE) {
        parse_signal(body)
    } else {
        None
    }
}

/// A digit (`5`, `*`, `a`) or an event number (`10` is `*`).
fn parse_signal(value: &str) -> Option<char> {
    let value = value.trim();
    let mut chars = value.chars();
    let first = chars.next()?;
    if chars.next().is_none() {
        return digit_to_event(first).and_then(event_to_digit);
    }
    if value.len() <= 3 && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse::<u8>().ok().and_then(event_to_digit);
    }
    None
}

// ---------------------------------------------------------------------------------
// In-band tone generator
// ---------------------------------------------------------------------------------

/// Samples (at 8 kHz) of the raised-cosine ramp at each end of a tone (2 ms), against
/// clicks.
const RAMP_SAMPLES: u32 = 16;

/// What the generator does now.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ToneState {
    /// Nothing queued.
    Idle,
    /// A tone, `pos` samples into it.
    Tone { low: f64, high: f64, pos: u32 },
    /// Silence after a tone, samples left.
    Gap(u32),
    /// A `,`: the caller's audio passes, samples left.
    Pause(u32),
}

/// What one sample of output is.
enum ToneSample {
    Tone(f64),
    Gap,
    Pass,
}

/// Generates DTMF tones (at 8 kHz, or the rate given to
/// [`with_rate`](ToneGenerator::with_rate)): each digit the standard pair of sines, each at
/// [`DEFAULT_TONE_DBFS`], for [`DEFAULT_DIGIT_MS`] (with 2 ms ramps), then
/// [`DEFAULT_GAP_MS`] of silence; a `,` lets the caller's audio through for
/// [`PAUSE_MS`]. Sample-exact across frames, phase-continuous within a tone.
#[derive(Debug, Clone)]
pub struct ToneGenerator {
    /// Sample rate of the frames filled.
    rate: u32,
    /// Length of the ramps at each end of a tone.
    ramp_samples: u32,
    amplitude: f64,
    on_samples: u32,
    off_samples: u32,
    queue: VecDeque<Item>,
    state: ToneState,
    /// Phases of the two sines, in cycles (0..1).
    phase: (f64, f64),
}

impl Default for ToneGenerator {
    fn default() -> Self {
        ToneGenerator::new()
    }
}

impl ToneGenerator {
    /// An 8 kHz generator with the default level and timing.
    pub fn new() -> ToneGenerator {
        ToneGenerator::with_rate(SAMPLE_RATE)
    }

    /// A generator for frames at `rate` Hz (clamped to 8–192 kHz) with the
    /// default level and timing.
    pub fn with_rate(rate: u32) -> ToneGenerator {
        let rate = rate.clamp(8000, 192_000);
        let mut g = ToneGenerator {
            rate,
            ramp_samples: RAMP_SAMPLES * rate / SAMPLE_RATE,
            amplitude: 0.0,
            on_samples: 0,
            off_samples: 0,
            queue: VecDeque::new(),
            state: ToneState::Idle,
            phase: (0.0, 0.0),
        };
        g.set_level_dbfs(DEFAULT_TONE_DBFS);
        g.set_timing(DEFAULT_DIGIT_MS, DEFAULT_GAP_MS);
        g
    }

    /// The level of each of the two tones, in dBFS, clamped to −60…−6.
    pub(crate) fn set_level_dbfs(&mut self, dbfs: f64) {
        let dbfs = if dbfs.is_nan() {
            DEFAULT_TONE_DBFS
        } else {
            dbfs.clamp(-60.0, -6.0)
        };
        self.amplitude = f64::from(i16::MAX) * 10f64.powf(dbfs / 20.0);
    }

    /// Tone and gap lengths (tone at least 10 ms, both at most 10 s); from the next
    /// digit.
    pub(crate) fn set_timing(&mut self, on_ms: u32, off_ms: u32) {
        self.on_samples = on_ms.clamp(10, 10_000) * self.rate / 1000;
        self.off_samples = off_ms.min(10_000) * self.rate / 1000;
    }

    /// Appends digits (`0-9 * # A-D a-d`, `,` for a pause); all or nothing.
    pub fn queue(&mut self, digits: &str) -> Result<(), DtmfError> {
        enqueue(&mut self.queue, digits)?;
        self.settle();
        Ok(())
    }

    /// Whether the next frame gets a tone or a gap.
    pub fn is_active(&self) -> bool {
        matches!(self.state, ToneState::Tone { .. } | ToneState::Gap(_))
    }

    /// Whether everything queued has been played.
    pub fn is_idle(&self) -> bool {
        self.state == ToneState::Idle
    }

    /// Forgets the queue and stops at once.
    pub fn clear(&mut self) {
        self.queue.clear();
        self.state = ToneState::Idle;
    }

    /// Replaces `frame` with the tone, or with silence in the gap after a tone; returns
    /// whether it wrote anything. During a pause or when idle the frame is left alone
    /// (the caller's audio is sent).
    pub fn fill(&mut self, frame: &mut [i16]) -> bool {
        if self.is_quiet() {
            return false;
        }
        let mut wrote = false;
        for s in frame.iter_mut() {
            match self.next_sample() {
                ToneSample::Tone(v) => {
                    *s = to_i16(v);
                    wrote = true;
                }
                ToneSample::Gap => {
                    *s = 0;
                    wrote = true;
                }
                ToneSample::Pass => {}
            }
        }
        self.settle();
        wrote
    }

    /// Adds the tone to `frame` (saturating), e.g. to play it locally over what the
    /// speaker plays; gaps and pauses leave the frame alone. Returns whether a tone was
    /// added.
    pub fn mix(&mut self, frame: &mut [i16]) -> bool {
        if self.is_quiet() {
            return false;
        }
        let mut wrote = false;
        for s in frame.iter_mut() {
            if let ToneSample::Tone(v) = self.next_sample() {
                *s = to_i16(f64::from(*s) + v);
                wrote = true;
            }
        }
        self.settle();
        wrote
    }

    /// Nothing playing and nothing queued: a frame passes through untouched (checked
    /// once per frame rather than per sample).
    fn is_quiet(&self) -> bool {
        self.state == ToneState::Idle && self.queue.is_empty()
    }

    fn next_sample(&mut self) -> ToneSample {
        self.settle();
        match self.state {
            ToneState::Idle => ToneSample::Pass,
            ToneState::Pause(n) => {
                self.state = ToneState::Pause(n.saturating_sub(1));
                ToneSample::Pass
            }
            ToneState::Gap(n) => {
                self.state = ToneState::Gap(n.saturating_sub(1));
                ToneSample::Gap
            }
            ToneState::Tone { low, high, pos } => {
                let v = self.amplitude
                    * ramp(pos, self.on_samples, self.ramp_samples)
                    * ((TAU * self.phase.0).sin() + (TAU * self.phase.1).sin());
                let rate = f64::from(self.rate);
                self.phase.0 = (self.phase.0 + low / rate).fract();
                self.phase.1 = (self.phase.1 + high / rate).fract();
                self.state = if pos + 1 >= self.on_samples {
                    ToneState::Gap(self.off_samples)
                } else {
                    ToneState::Tone {
                        low,
                        high,
                        pos: pos + 1,
                    }
                };
                ToneSample::Tone(v)
            }
        }
    }

    /// Takes the next queue item when idle or when a gap or pause is over.
    fn settle(&mut self) {
        while matches!(
            self.state,
            ToneState::Idle | ToneState::Gap(0) | ToneState::Pause(0)
        ) {
            self.state = match self.queue.pop_front() {
                Some(Item::Event(e)) => match keypad_position(e) {
                    Some((row, col)) => {
                        self.phase = (0.0, 0.0);
                        ToneState::Tone {
                            low: ROW_HZ[row],
                            high: COL_HZ[col],
                            pos: 0,
                        }
                    }
                    None => continue,
                },
                Some(Item::Pause) => ToneState::Pause(PAUSE_MS * self.rate / 1000),
                None => {
                    self.state = ToneState::Idle;
                    return;
                }
            };
        }
    }
}

/// The envelope of a tone of `len` samples at sample `pos`: raised-cosine ramps of
/// `ramp_samples` at both ends.
fn ramp(pos: u32, len: u32, ramp_samples: u32) -> f64 {
    let ramp = ramp_samples.min(len / 2).max(1);
    let from_edge = pos.min(len.saturating_sub(1).saturating_sub(pos));
    if from_edge >= ramp {
        1.0
    } else {
        0.5 * (1.0 - (PI * (f64::from(from_edge) + 0.5) / f64::from(ramp)).cos())
    }
}

fn to_i16(v: f64) -> i16 {
    v.round().clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16
}

// ---------------------------------------------------------------------------------
// In-band detector
// ---------------------------------------------------------------------------------

/// Samples per analysis window (20 ms, 50 Hz resolution).
const WINDOW: usize = FRAME_SAMPLES;
/// Samples between two analyses (10 ms).
const HOP: usize = WINDOW / 2;
/// Consecutive analyses agreeing on a digit before it is reported: 3 windows of 20 ms
/// 10 ms apart, 40 ms of tone.
const ON_HOPS: u32 = 3;
/// Consecutive analyses without a digit before the same digit may be reported again:
/// 40 ms of no tone.
const OFF_HOPS: u32 = 3;
/// The weakest tone accepted, dBFS.
const MIN_TONE_DBFS: f32 = -35.0;
/// The high tone may be at most this much stronger than the low one (normal twist).
const NORMAL_TWIST_DB: f32 = 8.0;
/// The low tone may be at most this much stronger than the high one (reverse twist).
const REVERSE_TWIST_DB: f32 = 4.0;
/// Each tone must exceed the other three of its group by this much.
const DOMINANCE_DB: f32 = 8.0;
/// The two tones must carry at least this share of the window's energy.
const MIN_TONE_SHARE: f32 = 0.8;
/// The second harmonic of the high tone must be this much below it.
const HARMONIC_DB: f32 = 10.0;

fn db_to_ratio(db: f32) -> f32 {
    10f32.powf(db / 10.0)
}

/// Detects in-band DTMF in received 8 kHz audio.
///
/// Every 10 ms it analyses the last 20 ms (Goertzel filters at the eight DTMF
/// frequencies, no window, 50 Hz resolution). A window holds a digit when: each of the
/// two tones is above −35 dBFS; each tone is 8 dB above the other three of its group;
/// the twist is within 8 dB (high stronger) or 4 dB (low stronger); the two tones carry
/// at least 80 % of the window's energy (speech and music spread theirs); and the high
/// tone has no second harmonic within 10 dB (music and voices do). A digit
/// is reported once after three windows in a row (40 ms of tone) agree, and the same
/// digit not again before three windows in a row (40 ms) held no digit.
#[derive(Debug, Clone)]
pub struct GoertzelDetector {
    window: [f32; WINDOW],
    filled: usize,
    coeffs: [f32; 8],
    /// Second harmonics of the high group.
    harmonic_coeffs: [f32; 4],
    run: Option<u8>,
    run_len: u32,
    current: Option<u8>,
}

impl Default for GoertzelDetector {
    fn default() -> Self {
        GoertzelDetector::new()
    }
}

impl GoertzelDetector {
    /// A detector that has heard nothing.
    pub fn new() -> GoertzelDetector {
        let mut coeffs = [0f32; 8];
        for (c, &f) in coeffs.iter_mut().zip(ROW_HZ.iter().chain(COL_HZ.iter())) {
            *c = goertzel_coeff(f);
        }
        GoertzelDetector {
            window: [0.0; WINDOW],
            filled: 0,
            coeffs,
            harmonic_coeffs: COL_HZ.map(|f| goertzel_coeff(2.0 * f)),
            run: None,
            run_len: 0,
            current: None,
        }
    }

    /// Forgets what it heard.
    pub fn reset(&mut self) {
        *self = GoertzelDetector::new();
    }

    /// One received 20 ms frame; returns the digit that became steady in it, if any.
    pub fn process(&mut self, frame: &[i16; FRAME_SAMPLES]) -> Option<char> {
        let mut found = None;
        self.process_samples(frame, |d| found = Some(d));
        found
    }

    /// Received samples of any length (packets of 10, 30 ms…); calls `on_digit` for
    /// each digit that became steady.
    pub(crate) fn process_samples(&mut self, samples: &[i16], mut on_digit: impl FnMut(char)) {
        for &s in samples {
            if let Some(slot) = self.window.get_mut(self.filled) {
                *slot = f32::from(s) / 32768.0;
            }
            self.filled += 1;
            if self.filled >= WINDOW {
                let hit = self.classify();
                self.window.copy_within(HOP.., 0);
                self.filled = WINDOW - HOP;
                if let Some(d) = self.decide(hit) {
                    on_digit(d);
                }
            }
        }
    }

    /// Updates the runs with one analysis; returns a digit to report.
    fn decide(&mut self, hit: Option<u8>) -> Option<char> {
        if hit == self.run {
            self.run_len = self.run_len.saturating_add(1);
        } else {
            self.run = hit;
            self.run_len = 1;
        }
        match self.run {
            None if self.run_len >= OFF_HOPS => {
                self.current = None;
                None
            }
            Some(d) if self.run_len >= ON_HOPS && self.current != Some(d) => {
                self.current = Some(d);
                event_to_digit(d)
            }
            _ => None,
        }
    }

    /// The digit (event code) the current window holds, if any.
    fn classify(&self) -> Option<u8> {
        let n = WINDOW as f32;
        let energy: f32 = self.window.iter().map(|x| x * x).sum::<f32>() / n;
        let min_tone = 0.5 * db_to_ratio(MIN_TONE_DBFS);
        if energy < 2.0 * min_tone {
            return None;
        }
        let power = goertzel_bank(&self.window, &self.coeffs);
        let (rows, cols) = power.split_at(4);
        let (row, row_p) = strongest(rows)?;
        let (col, col_p) = strongest(cols)?;
        if row_p < min_tone || col_p < min_tone {
            return None;
        }
        if col_p > row_p * db_to_ratio(NORMAL_TWIST_DB)
            || row_p > col_p * db_to_ratio(REVERSE_TWIST_DB)
        {
            return None;
        }
        let dominance = db_to_ratio(DOMINANCE_DB);
        let dominates = |group: &[f32], best: usize, p: f32| {
            group
                .iter()
                .enumerate()
                .all(|(i, &q)| i == best || p >= q * dominance)
        };
        if !dominates(rows, row, row_p) || !dominates(cols, col, col_p) {
            return None;
        }
        if row_p + col_p < MIN_TONE_SHARE * energy {
            return None;
        }
        // Sines have no harmonics; a note of music or a voice does.
        let harmonic = goertzel(&self.window, self.harmonic_coeffs[col]);
        if harmonic * db_to_ratio(HARMONIC_DB) > col_p {
            return None;
        }
        keypad_event(row, col)
    }
}

/// The mean power (A²/2 for a sine of amplitude A) at the frequency whose Goertzel
/// coefficient (2·cos ω) is `coeff`: 2|X|²/N².
fn goertzel(window: &[f32], coeff: f32) -> f32 {
    let (mut s1, mut s2) = (0f32, 0f32);
    for &x in window {
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let n = window.len().max(1) as f32;
    2.0 * (s1 * s1 + s2 * s2 - coeff * s1 * s2).max(0.0) / (n * n)
}

/// [`goertzel`] at the eight coefficients `coeffs` in one pass over `window`: the
/// eight recurrences are independent, so running them side by side overlaps their
/// latencies instead of waiting on each in turn. Each one does the same operations in
/// the same order as [`goertzel`], so the results are identical.
fn goertzel_bank(window: &[f32], coeffs: &[f32; 8]) -> [f32; 8] {
    let mut s1 = [0f32; 8];
    let mut s2 = [0f32; 8];
    for &x in window {
        for k in 0..8 {
            let s0 = x + coeffs[k] * s1[k] - s2[k];
            s2[k] = s1[k];
            s1[k] = s0;
        }
    }
    let n = window.len().max(1) as f32;
    let mut power = [0f32; 8];
    for k in 0..8 {
        let (a, b, c) = (s1[k], s2[k], coeffs[k]);
        power[k] = 2.0 * (a * a + b * b - c * a * b).max(0.0) / (n * n);
    }
    power
}

/// The Goertzel coefficient of a frequency at 8 kHz.
fn goertzel_coeff(hz: f64) -> f32 {
    (2.0 * (TAU * hz / f64::from(SAMPLE_RATE)).cos()) as f32
}

/// Index and value of the largest of a group.
fn strongest(group: &[f32]) -> Option<(usize, f32)> {
    group
        .iter()
        .copied()
        .enumerate()
        .fold(None, |best, (i, p)| match best {
            Some((_, bp)) if bp >= p => best,
            _ => Some((i, p)),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64: deterministic noise for tests.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        /// Uniform in [0, 1).
        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
        /// Standard normal (Box–Muller).
        fn gauss(&mut self) -> f64 {
            let u = self.unit().max(1e-12);
            let v = self.unit();
            (-2.0 * u.ln()).sqrt() * (TAU * v).cos()
        }
    }

    #[test]
    fn goertzel_bank_matches_one_filter_at_a_time() {
        let mut rng = Rng(0x5eed);
        let window: Vec<f32> = (0..WINDOW)
            .map(|i| {
                let t = i as f64 / f64::from(SAMPLE_RATE);
                (0.3 * (TAU * 770.0 * t).sin()
                    + 0.2 * (TAU * 1336.0 * t).sin()
                    + 0.05 * rng.gauss()) as f32
            })
            .collect();
        let d = GoertzelDetector::new();
        let bank = goertzel_bank(&window, &d.coeffs);
        for (k, &c) in d.coeffs.iter().enumerate() {
            assert_eq!(
                bank[k].to_bits(),
                goertzel(&window, c).to_bits(),
                "filter {k}"
            );
        }
    }

    const ALL: &str = "0123456789*#ABCD";

    #[test]
    fn dtmf_digit_codes() {
        for (i, d) in ALL.chars().enumerate() {
            assert_eq!(digit_to_event(d), Some(i as u8));
            assert_eq!(event_to_digit(i as u8), Some(d));
            let (row, col) = keypad_position(i as u8).unwrap();
            assert_eq!(keypad_event(row, col), Some(i as u8));
        }
        assert_eq!(digit_to_event('b'), Some(13));
        assert_eq!(digit_to_event('E'), None);
        assert_eq!(digit_to_event(','), None);
        assert_eq!(event_to_digit(16), None);
        assert_eq!(tone_frequencies('1'), Some((697.0, 1209.0)));
        assert_eq!(tone_frequencies('0'), Some((941.0, 1336.0)));
        assert_eq!(tone_frequencies('#'), Some((941.0, 1477.0)));
        assert_eq!(tone_frequencies('d'), Some((941.0, 1633.0)));
        assert_eq!(
            parse_digits("1a,#").unwrap(),
            vec![
                DtmfStep::Digit('1'),
                DtmfStep::Digit('A'),
                DtmfStep::Pause,
                DtmfStep::Digit('#')
            ]
        );
        assert_eq!(
            parse_digits("12 3"),
            Err(DtmfError::InvalidDigit {
                digit: ' ',
                position: 2
            })
        );
        assert!(parse_digits(&"1".repeat(MAX_QUEUED)).is_ok());
        assert_eq!(
            parse_digits(&"1".repeat(MAX_QUEUED + 1)),
            Err(DtmfError::TooMany { limit: MAX_QUEUED })
        );
    }

    #[test]
    fn dtmf_event_payload_round_trip() {
        let ev = TelephoneEvent {
            event: 11,
            end: true,
            volume: 10,
            duration: 800,
        };
        let p = encode_event(&ev);
        assert_eq!(p, [11, 0x8A, 0x03, 0x20]);
        assert_eq!(parse_event(&p), Some(ev));
        assert_eq!(parse_event(&p[..3]), None);
        assert_eq!(parse_event(&[1, 0x4A, 0, 160, 9, 9]).unwrap().volume, 10);
    }

    /// Ticks the sender until it is idle; returns (tick index, packet) for each packet.
    fn drain(sender: &mut Rfc4733Sender, start_ts: u32) -> Vec<(u32, EventPacket)> {
        let mut out = Vec::new();
        let mut ts = start_ts;
        for i in 0..10_000u32 {
            if sender.is_idle() {
                break;
            }
            let active = sender.is_active();
            let p = sender.tick(ts);
            assert_eq!(active, p.is_some(), "is_active disagrees at tick {i}");
            if let Some(p) = p {
                out.push((i, p));
            }
            ts = ts.wrapping_add(160);
        }
        out
    }

    #[test]
    fn dtmf_sender_packets_for_one_digit() {
        let mut s = Rfc4733Sender::new(DEFAULT_PAYLOAD_TYPE, 8000);
        assert!(s.is_idle() && !s.is_active());
        assert_eq!(s.tick(0), None);
        s.queue("1").unwrap();
        assert!(s.is_active());
        let packets = drain(&mut s, 1000);
        let events: Vec<TelephoneEvent> = packets.iter().map(|(_, p)| p.event()).collect();
        let durations: Vec<u16> = events.iter().map(|e| e.duration).collect();
        assert_eq!(durations, [160, 320, 480, 640, 800, 800, 800]);
        let ends: Vec<bool> = events.iter().map(|e| e.end).collect();
        assert_eq!(ends, [false, false, false, false, true, true, true]);
        assert!(events.iter().all(|e| e.event == 1 && e.volume == 10));
        let markers: Vec<bool> = packets.iter().map(|(_, p)| p.marker).collect();
        assert_eq!(markers, [true, false, false, false, false, false, false]);
        assert!(packets.iter().all(|(_, p)| p.timestamp == 1000));
        // Consecutive ticks; the three end packets identical.
        let ticks: Vec<u32> = packets.iter().map(|(i, _)| *i).collect();
        assert_eq!(ticks, [0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(packets[4].1, packets[5].1);
        assert_eq!(packets[5].1, packets[6].1);
        assert_eq!(s.payload_type(), 101);
        // 60 ms gap: three ticks of audio were still owed before idle.
        let mut s = Rfc4733Sender::new(96, 8000);
        s.queue("5").unwrap();
        let mut ticks = 0;
        while !s.is_idle() {
            s.tick(0);
            ticks += 1;
        }
        assert_eq!(ticks, 7 + 3);
    }

    #[test]
    fn dtmf_sender_timing_and_errors() {
        let mut s = Rfc4733Sender::new(101, 8000);
        assert_eq!(
            s.queue("12x"),
            Err(DtmfError::InvalidDigit {
                digit: 'x',
                position: 2
            })
        );
        assert!(s.is_idle(), "a refused string queues nothing");
        assert!(s.queue(&"1".repeat(MAX_QUEUED)).is_ok());
        // The first digit left the queue to play: one more fits, then no more.
        assert!(s.queue("1").is_ok());
        assert_eq!(s.queue("1"), Err(DtmfError::TooMany { limit: MAX_QUEUED }));
        s.clear();
        assert!(s.is_idle());

        // Two digits: the second starts 3 ticks after the last end packet, with a new
        // timestamp and a marker.
        s.queue("2#").unwrap();
        let p = drain(&mut s, 0);
        assert_eq!(p.len(), 14);
        assert_eq!(p[7].0, 10);
        assert!(p[7].1.marker);
        assert_eq!(p[7].1.timestamp, 1600);
        assert_eq!(p[7].1.event().event, 11);

        // Longer digits, 16 kHz clock, and a timestamp that wraps.
        let mut s = Rfc4733Sender::new(101, 16_000);
        s.set_digit_ms(250);
        s.queue("9").unwrap();
        let p = drain(&mut s, u32::MAX - 100);
        let d: Vec<u16> = p.iter().map(|(_, p)| p.event().duration).collect();
        // 250 ms at 16 kHz is 4000, rounded up to 13 ticks of 320.
        let mut want: Vec<u16> = (1..=12).map(|k| 320 * k).collect();
        want.extend([4160; 3]);
        assert_eq!(d, want);
        assert!(p.iter().all(|(_, p)| p.timestamp == u32::MAX - 100));

        // Absurd settings do not panic and stay within the 16-bit duration.
        let mut s = Rfc4733Sender::new(200, 0);
        s.set_digit_ms(u32::MAX);
        s.set_gap_ms(u32::MAX);
        s.queue("1").unwrap();
        let first = s.tick(0).unwrap();
        assert_eq!(first.event().duration, 160);
        let mut s = Rfc4733Sender::new(101, u32::MAX);
        s.set_digit_ms(0);
        s.queue("1").unwrap();
        let p = s.tick(0).unwrap();
        assert!(p.event().end && p.marker);
    }

    #[test]
    fn dtmf_sender_receiver_round_trip() {
        let mut s = Rfc4733Sender::new(101, 8000);
        let mut r = Rfc4733Receiver::new();
        s.queue(ALL).unwrap();
        let got: String = drain(&mut s, 12345)
            .iter()
            .filter_map(|(_, p)| r.on_packet(p.timestamp, &p.payload))
            .collect();
        assert_eq!(got, ALL);

        // A pause: at least 50 audio ticks between the last packet of 2 and the 3.
        let mut s = Rfc4733Sender::new(101, 8000);
        let mut r = Rfc4733Receiver::new();
        s.queue("12,3").unwrap();
        let packets = drain(&mut s, 0);
        let mut got = Vec::new();
        for (tick, p) in &packets {
            if let Some(d) = r.on_packet(p.timestamp, &p.payload) {
                got.push((d, *tick));
            }
        }
        assert_eq!(got.iter().map(|g| g.0).collect::<String>(), "123");
        let last_of_2 = packets
            .iter()
            .filter(|(_, p)| p.event().event == 2)
            .map(|(t, _)| *t)
            .max()
            .unwrap();
        let first_of_3 = got[2].1;
        let silent = first_of_3 - last_of_2 - 1;
        assert!(silent >= 50, "only {silent} ticks between 2 and 3");
        assert_eq!(silent, 53);
    }

    #[test]
    fn dtmf_receiver_loss_duplicates_reordering() {
        let mut s = Rfc4733Sender::new(101, 8000);
        s.queue("5500").unwrap();
        let packets: Vec<EventPacket> = drain(&mut s, 0).into_iter().map(|(_, p)| p).collect();
        assert_eq!(packets.len(), 28);

        // Loss of the first three packets of every event, each packet twice.
        let mut r = Rfc4733Receiver::new();
        let got: String = packets
            .chunks(7)
            .flat_map(|ev| ev[3..].iter())
            .flat_map(|p| [p, p])
            .filter_map(|p| r.on_packet(p.timestamp, &p.payload))
            .collect();
        assert_eq!(got, "5500");

        // Only one end packet of each event survives.
        let mut r = Rfc4733Receiver::new();
        let got: String = packets
            .chunks(7)
            .map(|ev| ev[6])
            .filter_map(|p| r.on_packet(p.timestamp, &p.payload))
            .collect();
        assert_eq!(got, "5500");

        // End packets of one event arrive after the next event began.
        let mut order: Vec<EventPacket> = Vec::new();
        for (i, ev) in packets.chunks(7).enumerate() {
            order.extend_from_slice(&ev[..5]);
            if i > 0 {
                // The previous event's retransmitted ends, late.
                order.extend_from_slice(&packets[(i - 1) * 7 + 5..(i - 1) * 7 + 7]);
            }
        }
        order.extend_from_slice(&packets[26..]);
        let mut r = Rfc4733Receiver::new();
        let got: String = order
            .iter()
            .filter_map(|p| r.on_packet(p.timestamp, &p.payload))
            .collect();
        assert_eq!(got, "5500");

        // Garbage and other events are ignored.
        let mut r = Rfc4733Receiver::new();
        assert_eq!(r.on_packet(0, &[]), None);
        assert_eq!(r.on_packet(0, &[1, 2, 3]), None);
        assert_eq!(r.on_packet(0, &[16, 0x80, 0, 160]), None);
        assert_eq!(r.on_packet(0, &[1, 0x0A, 0, 160]), Some('1'));
        assert_eq!(r.on_packet(0, &[1, 0x8A, 0, 160]), None);

        // A long event's next segment (RFC 4733 §2.5.1.3) is not a new digit.
        let mut r = Rfc4733Receiver::new();
        assert_eq!(r.on_packet(1000, &[7, 10, 0xFF, 0xF0]), Some('7'));
        assert_eq!(r.on_packet(1000 + 0xFFF0, &[7, 10, 0, 160]), None);
        assert_eq!(r.on_packet(1000 + 0xFFF0, &[7, 0x8A, 0x10, 0]), None);
        // The same digit again, later: new.
        assert_eq!(
            r.on_packet(1000 + 0xFFF0 + 0x1000 + 480, &[7, 10, 0, 160]),
            Some('7')
        );

        // After a reset (new SSRC) an earlier timestamp is a new event.
        r.reset();
        assert_eq!(r.on_packet(500, &[8, 10, 0, 160]), Some('8'));
        // Without one, an event just before the newest is stale.
        assert_eq!(r.on_packet(400, &[9, 10, 0, 160]), None);
        // A stream that jumps far (wrapping) is new events.
        assert_eq!(
            r.on_packet(500u32.wrapping_sub(0x100_0000), &[9, 10, 0, 160]),
            Some('9')
        );
    }

    #[test]
    fn dtmf_random_payloads_never_panic() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut r = Rfc4733Receiver::new();
        let mut buf = [0u8; 16];
        let mut reported = 0;
        for _ in 0..200_000 {
            let len = (rng.next() % 17) as usize;
            for b in buf[..len].iter_mut() {
                *b = rng.next() as u8;
            }
            if len > 0 && rng.next() & 1 == 0 {
                buf[0] &= 0x0F;
            }
            let ts = if rng.next() & 3 == 0 {
                rng.next() as u32
            } else {
                (rng.next() % 8) as u32 * 160
            };
            if let Some(d) = r.on_packet(ts, &buf[..len]) {
                assert!(ALL.contains(d));
                reported += 1;
            }
            let _ = parse_event(&buf[..len]);
            let text = String::from_utf8_lossy(&buf[..len]);
            if let Some(d) = parse_info(INFO_CONTENT_TYPE, &format!("Signal={text}")) {
                assert!(ALL.contains(d));
            }
            let _ = parse_info(&text, &text);
            let _ = parse_info(INFO_DTMF_CONTENT_TYPE, &text);
            let mut g = ToneGenerator::new();
            let _ = g.queue(&text);
        }
        assert!(reported > 100);
    }

    #[test]
    fn dtmf_sip_info() {
        assert_eq!(
            info_body('5', 160).unwrap(),
            (
                "application/dtmf-relay",
                "Signal=5\r\nDuration=160\r\n".to_owned()
            )
        );
        assert_eq!(
            info_body('a', 100).unwrap().1,
            "Signal=A\r\nDuration=100\r\n"
        );
        assert!(info_body(',', 100).is_err());
        assert!(info_body('x', 100).is_err());
        for d in ALL.chars() {
            let (ct, body) = info_body(d, 250).unwrap();
            assert_eq!(parse_info(ct, &body), Some(d));
            assert_eq!(parse_info(INFO_DTMF_CONTENT_TYPE, &d.to_string()), Some(d));
        }
        let relay = "application/dtmf-relay";
        assert_eq!(parse_info(relay, "signal= 5\nduration=100"), Some('5'));
        assert_eq!(
            parse_info(relay, "SIGNAL = *\r\nDuration= 160\r\n"),
            Some('*')
        );
        assert_eq!(parse_info(relay, "Duration=160\r\nSignal=#\r\n"), Some('#'));
        assert_eq!(parse_info(relay, "Signal=10\r\n"), Some('*'));
        assert_eq!(parse_info(relay, "Signal=11\r\n"), Some('#'));
        assert_eq!(parse_info(relay, "Signal=15"), Some('D'));
        assert_eq!(parse_info(relay, "Signal=c"), Some('C'));
        assert_eq!(parse_info(relay, "Signal=16"), None);
        assert_eq!(parse_info(relay, "Signal=12345"), None);
        assert_eq!(parse_info(relay, "Signal="), None);
        assert_eq!(parse_info(relay, "Duration=160"), None);
        assert_eq!(parse_info(relay, ""), None);
        assert_eq!(parse_info(relay, "Signal=E"), None);
        assert_eq!(
            parse_info("Application/DTMF-Relay; charset=utf-8", "Signal=9"),
            Some('9')
        );
        assert_eq!(parse_info("application/dtmf", " 7\r\n"), Some('7'));
        assert_eq!(parse_info("APPLICATION/DTMF", "#"), Some('#'));
        assert_eq!(parse_info("application/dtmf", "11"), Some('#'));
        assert_eq!(parse_info("application/dtmf", "77"), None);
        assert_eq!(parse_info("application/dtmf", ""), None);
        assert_eq!(parse_info("text/plain", "Signal=5"), None);
        assert_eq!(parse_info("application/dtmf-relayx", "Signal=5"), None);
    }

    /// Runs the generator until idle, frame by frame (one extra silent frame after).
    fn generate(digits: &str) -> Vec<[i16; FRAME_SAMPLES]> {
        let mut g = ToneGenerator::new();
        g.queue(digits).unwrap();
        let mut frames = vec![[0i16; FRAME_SAMPLES]];
        while !g.is_idle() {
            let mut f = [0i16; FRAME_SAMPLES];
            g.fill(&mut f);
            frames.push(f);
        }
        frames.push([0i16; FRAME_SAMPLES]);
        frames
    }

    fn detect(frames: &[[i16; FRAME_SAMPLES]]) -> String {
        let mut d = GoertzelDetector::new();
        frames.iter().filter_map(|f| d.process(f)).collect()
    }

    fn power(samples: &[i16]) -> f64 {
        samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len() as f64
    }

    #[test]
    fn dtmf_generator_shape() {
        let mut g = ToneGenerator::new();
        let mut f = [7i16; FRAME_SAMPLES];
        assert!(!g.fill(&mut f));
        assert_eq!(f, [7; FRAME_SAMPLES]);
        g.queue("1,2").unwrap();
        let mut frames = Vec::new();
        let mut wrote = Vec::new();
        while !g.is_idle() {
            let mut f = [7i16; FRAME_SAMPLES];
            wrote.push(g.fill(&mut f));
            frames.push(f);
        }
        // 5 tone frames, 3 gap frames, 50 pause frames, 5 tone, 3 gap.
        assert_eq!(frames.len(), 5 + 3 + 50 + 5 + 3);
        assert!(wrote[..8].iter().all(|&w| w));
        assert!(wrote[8..58].iter().all(|&w| !w));
        assert!(frames[8..58].iter().all(|f| *f == [7; FRAME_SAMPLES]));
        assert!(frames[5..8].iter().all(|f| *f == [0; FRAME_SAMPLES]));
        // Level: each tone at -10 dBFS, so the pair's power is 2 × (A²/2).
        let a = 32767.0 * 10f64.powf(-0.5);
        let p = power(&frames[2]);
        assert!((p / (a * a) - 1.0).abs() < 0.05, "power {p}");
        // Phase continuity across frame boundaries: no jump larger than the largest
        // step of the pair itself.
        let tone: Vec<i16> = frames[..5].iter().flatten().copied().collect();
        let max_step = 2.0 * a * TAU * 1209.0 / 8000.0 * 1.05;
        for w in tone.windows(2) {
            assert!(f64::from(w[1]) - f64::from(w[0]) <= max_step);
            assert!(f64::from(w[0]) - f64::from(w[1]) <= max_step);
        }
        // Starts and ends quietly (ramps).
        assert!(tone[0].abs() < 500 && tone[799].abs() < 500);

        // Mixing adds; gaps leave the frame alone.
        let mut g = ToneGenerator::new();
        g.queue("5").unwrap();
        let mut f = [1000i16; FRAME_SAMPLES];
        assert!(g.mix(&mut f));
        assert!(f.iter().any(|&s| s != 1000));
        for _ in 0..4 {
            g.mix(&mut [0; FRAME_SAMPLES]);
        }
        let mut f = [1000i16; FRAME_SAMPLES];
        assert!(!g.mix(&mut f));
        assert_eq!(f, [1000; FRAME_SAMPLES]);
        assert!(g.is_active());
        g.clear();
        assert!(g.is_idle() && !g.is_active());
        // Saturation instead of wrap-around.
        let mut g = ToneGenerator::new();
        g.set_level_dbfs(0.0);
        g.queue("D").unwrap();
        let mut f = [i16::MAX; FRAME_SAMPLES];
        g.mix(&mut f);
        assert!(f.iter().all(|&s| s > 0));
        assert!(ToneGenerator::new().queue("12;").is_err());
    }

    #[test]
    fn dtmf_generator_to_detector_all_digits() {
        assert_eq!(detect(&generate(ALL)), ALL);
        assert_eq!(detect(&generate("1,1")), "11");
        assert_eq!(detect(&generate("0000####")), "0000####");
    }

    #[test]
    fn dtmf_detector_not_frame_aligned() {
        // The tone starts mid-frame and arrives in 30 ms packets.
        let frames = generate(ALL);
        let mut samples = vec![0i16; 57];
        samples.extend(frames.iter().flatten());
        let mut d = GoertzelDetector::new();
        let mut got = String::new();
        for chunk in samples.chunks(240) {
            d.process_samples(chunk, |c| got.push(c));
        }
        assert_eq!(got, ALL);
    }

    #[test]
    fn dtmf_detector_with_noise_and_tone() {
        let a = 32767.0 * 10f64.powf(-0.5);
        let signal_power = a * a; // two sines of amplitude a
        for seed in 1..=5u64 {
            let mut rng = Rng(0xDEAD_BEEF ^ (seed << 32) ^ seed);
            // White noise at 20 dB SNR.
            let sigma = (signal_power / 100.0).sqrt();
            let noisy: Vec<[i16; FRAME_SAMPLES]> = generate(ALL)
                .iter()
                .map(|f| f.map(|s| to_i16(f64::from(s) + sigma * rng.gauss())))
                .collect();
            assert_eq!(detect(&noisy), ALL, "noise, seed {seed}");
        }
        // A 440 Hz tone at -20 dBFS underneath.
        let b = 32767.0 * 10f64.powf(-1.0);
        let mut n = 0u32;
        let hum: Vec<[i16; FRAME_SAMPLES]> = generate(ALL)
            .iter()
            .map(|f| {
                f.map(|s| {
                    n += 1;
                    to_i16(f64::from(s) + b * (TAU * 440.0 * f64::from(n) / 8000.0).sin())
                })
            })
            .collect();
        assert_eq!(detect(&hum), ALL);
        // Both, and a weaker signal (-25 dBFS per tone).
        let mut g = ToneGenerator::new();
        g.set_level_dbfs(-25.0);
        g.queue(ALL).unwrap();
        let mut d = GoertzelDetector::new();
        let mut rng = Rng(77);
        let mut got = String::new();
        let weak_sigma = (2.0 * (32767.0f64 * 10f64.powf(-1.25)).powi(2) / 2.0 / 100.0).sqrt();
        while !g.is_idle() {
            let mut f = [0i16; FRAME_SAMPLES];
            g.fill(&mut f);
            let f = f.map(|s| {
                n += 1;
                to_i16(
                    f64::from(s)
                        + weak_sigma * rng.gauss()
                        + 0.3 * b * (TAU * 440.0 * f64::from(n) / 8000.0).sin(),
                )
            });
            got.extend(d.process(&f));
        }
        assert_eq!(got, ALL);
    }

    #[test]
    fn dtmf_detector_timing_limits() {
        // A 30 ms tone is too short; 50 ms is enough.
        for (ms, want) in [(30, ""), (50, "5")] {
            let mut g = ToneGenerator::new();
            g.set_timing(ms, 60);
            g.queue("5").unwrap();
            let mut frames = vec![];
            while !g.is_idle() {
                let mut f = [0i16; FRAME_SAMPLES];
                g.fill(&mut f);
                frames.push(f);
            }
            frames.push([0; FRAME_SAMPLES]);
            assert_eq!(detect(&frames), want, "{ms} ms");
        }
        // A 2 s tone is one digit; a 10 ms dropout inside it does not repeat it.
        let mut g = ToneGenerator::new();
        g.set_timing(2000, 60);
        g.queue("8").unwrap();
        let mut samples = Vec::new();
        while !g.is_idle() {
            let mut f = [0i16; FRAME_SAMPLES];
            g.fill(&mut f);
            samples.extend_from_slice(&f);
        }
        for s in &mut samples[8000..8080] {
            *s = 0;
        }
        let mut d = GoertzelDetector::new();
        let mut got = String::new();
        d.process_samples(&samples, |c| got.push(c));
        assert_eq!(got, "8");
        // Twist: high 9 dB above low is refused, 6 dB accepted; low 6 dB above high
        // refused, 3 dB accepted.
        for (low_db, high_db, want) in [
            (-19.0, -10.0, ""),
            (-16.0, -10.0, "1"),
            (-10.0, -16.0, ""),
            (-10.0, -13.0, "1"),
        ] {
            let (lo, hi) = (
                32767.0 * 10f64.powf(low_db / 20.0),
                32767.0 * 10f64.powf(high_db / 20.0),
            );
            let samples: Vec<i16> = (0..800)
                .map(|n| {
                    let t = f64::from(n) / 8000.0;
                    to_i16(lo * (TAU * 697.0 * t).sin() + hi * (TAU * 1209.0 * t).sin())
                })
                .collect();
            let mut d = GoertzelDetector::new();
            let mut got = String::new();
            d.process_samples(&samples, |c| got.push(c));
            assert_eq!(got, want, "low {low_db} dB, high {high_db} dB");
        }
        // Too quiet: -40 dBFS per tone.
        let mut g = ToneGenerator::new();
        g.set_level_dbfs(-40.0);
        g.queue("123").unwrap();
        let mut d = GoertzelDetector::new();
        while !g.is_idle() {
            let mut f = [0i16; FRAME_SAMPLES];
            g.fill(&mut f);
            assert_eq!(d.process(&f), None);
        }
    }

    /// 10 s of speech-like sound: voiced segments (a gliding pitch with 3.4 kHz of
    /// harmonics shaped by moving formants), unvoiced pink-ish noise, and music (notes
    /// with harmonics, two at a time), each segment 40–300 ms.
    fn speech_like(seed: u64, seconds: u32) -> Vec<i16> {
        let mut rng = Rng(seed);
        let total = (seconds * SAMPLE_RATE) as usize;
        let mut out = Vec::with_capacity(total);
        let mut phases = [0f64; 64];
        let mut pink = [0f64; 3];
        while out.len() < total {
            let len = 320 + (rng.next() % 2080) as usize;
            let kind = rng.next() % 4;
            let level = 2000.0 + 8000.0 * rng.unit();
            let f0_start = 80.0 + 220.0 * rng.unit();
            let f0_end = f0_start * (0.7 + 0.6 * rng.unit());
            let formants = [
                300.0 + 600.0 * rng.unit(),
                900.0 + 1400.0 * rng.unit(),
                2000.0 + 1200.0 * rng.unit(),
            ];
            let notes = [
                220.0 * 2f64.powf((rng.next() % 36) as f64 / 12.0),
                220.0 * 2f64.powf((rng.next() % 36) as f64 / 12.0),
            ];
            let weights: Vec<f64> = (0..64).map(|_| 0.2 + rng.unit()).collect();
            for i in 0..len {
                let t = i as f64 / len as f64;
                let env = (PI * t).sin();
                let v = match kind {
                    0 | 1 => {
                        let f0 = f0_start + (f0_end - f0_start) * t;
                        let mut v = 0.0;
                        for (k, ph) in phases.iter_mut().enumerate() {
                            let f = f0 * (k + 1) as f64;
                            if f > 3400.0 {
                                break;
                            }
                            let shape: f64 = formants
                                .iter()
                                .map(|&fm| 1.0 / (1.0 + ((f - fm) / 120.0).powi(2)))
                                .sum();
                            *ph = (*ph + f / 8000.0).fract();
                            v += weights[k] * shape * (TAU * *ph).sin();
                        }
                        v * 0.3
                    }
                    2 => {
                        // Pink-ish: white noise through leaky integrators.
                        let w = rng.gauss();
                        pink[0] = 0.99 * pink[0] + 0.1 * w;
                        pink[1] = 0.9 * pink[1] + 0.3 * w;
                        pink[2] = 0.5 * pink[2] + 0.5 * w;
                        (pink[0] + pink[1] + pink[2]) * 0.3
                    }
                    _ => {
                        let mut v = 0.0;
                        for (n, &note) in notes.iter().enumerate() {
                            for k in 1..=6 {
                                let ph = &mut phases[n * 8 + k];
                                *ph = (*ph + note * k as f64 / 8000.0).fract();
                                v += (TAU * *ph).sin() / k as f64;
                            }
                        }
                        v * 0.3
                    }
                };
                out.push(to_i16(level * env * v));
                if out.len() == total {
                    break;
                }
            }
        }
        out
    }

    #[test]
    fn dtmf_detector_ignores_speech_music_noise() {
        for seed in 1..=6u64 {
            let audio = speech_like(0x5EED_0000 + seed, 10);
            let mut d = GoertzelDetector::new();
            let mut got = String::new();
            for frame in audio.chunks_exact(FRAME_SAMPLES) {
                let mut f = [0i16; FRAME_SAMPLES];
                f.copy_from_slice(frame);
                got.extend(d.process(&f));
            }
            assert_eq!(got, "", "seed {seed}");
        }
        // White noise at several levels.
        let mut rng = Rng(3);
        let mut d = GoertzelDetector::new();
        for level in [100.0, 1000.0, 5000.0, 12000.0] {
            for _ in 0..100 {
                let f = [0i16; FRAME_SAMPLES].map(|_| to_i16(level * rng.gauss()));
                assert_eq!(d.process(&f), None);
            }
        }
    }

    #[test]
    fn dtmf_detector_random_samples_never_panic() {
        let mut rng = Rng(11);
        let mut d = GoertzelDetector::new();
        for i in 0..2000 {
            let f = [0i16; FRAME_SAMPLES].map(|_| match i % 3 {
                0 => rng.next() as i16,
                1 => {
                    if rng.next() & 1 == 0 {
                        i16::MIN
                    } else {
                        i16::MAX
                    }
                }
                _ => 0,
            });
            let _ = d.process(&f);
        }
        d.process_samples(&[], |_| {});
        d.reset();
    }
}
