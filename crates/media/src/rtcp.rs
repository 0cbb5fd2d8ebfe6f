//! RTCP (RFC 3550 §6) for one call, sans-IO: the caller passes the time in (a
//! monotonic millisecond clock and the matching NTP wallclock), hands in every RTCP
//! datagram received and sends the compound packets this module builds. No sockets,
//! no clock, no threads.
//!
//! This module owns the RTCP wire format (SR, RR, SDES CNAME and BYE written; SR, RR,
//! SDES and BYE read, XR/APP/feedback and unknown types skipped; anything malformed
//! is an [`RtcpError`], never a panic), the report schedule (first report about a
//! second after media starts, then every 5 s randomised by 0.5–1.5), the per-interval
//! loss accounting of the report block about the peer's stream (fed from the jitter
//! buffer's [`Reception`], which already does the RFC 3550 A.1 sequence bookkeeping),
//! and what the peer's reports tell about our stream: its loss, its jitter and the
//! round-trip time from LSR/DLSR (§6.4.1). The results are kept in [`Quality`].

use std::fmt;

use crate::jitter::Reception;

/// Packet types (RFC 3550 §12.1, RFC 3611, RFC 4585).
pub const PT_SR: u8 = 200;
/// RR: receiver report.
pub const PT_RR: u8 = 201;
/// SDES: source description.
pub const PT_SDES: u8 = 202;
/// BYE: a source leaves.
pub const PT_BYE: u8 = 203;
/// APP: application-defined.
pub const PT_APP: u8 = 204;

/// The regular report interval.
pub(crate) const REPORT_INTERVAL_MS: u64 = 5_000;
/// The first report's interval (before randomisation) after media starts.
pub(crate) const FIRST_REPORT_MS: u64 = 1_000;
/// Report blocks in one SR/RR at most (the 5-bit count).
const MAX_BLOCKS: usize = 31;

/// Why an RTCP datagram was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcpError {
    /// Fewer bytes than a header, or than a packet's length field says.
    Truncated,
    /// The version field is not 2.
    BadVersion(u8),
    /// A length that does not fit the packet's content (report count, SDES items).
    BadLength,
    /// Padding on a packet that is not the last, or a padding count that does not fit.
    BadPadding,
    /// Not an RTCP packet type (200–223 as RFC 5761 reserves them).
    NotRtcp(u8),
}

impl fmt::Display for RtcpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RtcpError::Truncated => f.write_str("RTCP packet truncated"),
            RtcpError::BadVersion(v) => write!(f, "RTCP version {v}, expected 2"),
            RtcpError::BadLength => f.write_str("RTCP length does not match its content"),
            RtcpError::BadPadding => f.write_str("RTCP padding is malformed"),
            RtcpError::NotRtcp(pt) => write!(f, "packet type {pt} is not RTCP"),
        }
    }
}

impl std::error::Error for RtcpError {}

/// One report block (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    /// The source this block is about.
    pub ssrc: u32,
    /// Fraction lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Packets lost since the start (24-bit signed: duplicates can make it negative).
    pub cumulative_lost: i32,
    /// Cycles × 65536 + the highest sequence number received.
    pub extended_highest_seq: u32,
    /// Interarrival jitter, in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP time of the last SR from `ssrc` (0: none).
    pub lsr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub dlsr: u32,
}

/// The sender information of an SR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SenderInfo {
    /// NTP wallclock (seconds since 1900 << 32 | fraction).
    pub ntp: u64,
    /// The RTP timestamp matching `ntp`.
    pub rtp_timestamp: u32,
    /// RTP packets sent since the start.
    pub packet_count: u32,
    /// Payload octets sent since the start.
    pub octet_count: u32,
}

/// One packet of a compound RTCP datagram, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtcpPacket {
    /// SR: a sender's report, with its sending counters.
    SenderReport {
        /// The sender's SSRC.
        ssrc: u32,
        /// Its clock and what it sent.
        info: SenderInfo,
        /// Its reports on the sources it receives.
        blocks: Vec<ReportBlock>,
    },
    /// RR: a receiver's report.
    ReceiverReport {
        /// The reporter's SSRC.
        ssrc: u32,
        /// Its reports on the sources it receives.
        blocks: Vec<ReportBlock>,
    },
    /// Source descriptions: each source with its CNAME, when it had one.
    SourceDescription {
        /// (SSRC, CNAME) of each source.
        chunks: Vec<(u32, Option<String>)>,
    },
    /// BYE: these sources leave.
    Bye {
        /// The SSRCs that leave.
        sources: Vec<u32>,
        /// The reason text, if given.
        reason: Option<String>,
    },
    /// APP, XR, feedback and unknown types: skipped.
    Other {
        /// The packet type byte.
        packet_type: u8,
    },
}

/// Whether a datagram that arrived on the RTP port is RTCP (RFC 5761 §4: the second
/// byte is an RTCP packet type, 192–223, which no RTP payload type with or without
/// the marker bit can be when payload types 64–95 are avoided).
pub fn is_rtcp(data: &[u8]) -> bool {
    data.len() >= 4 && data[0] >> 6 == 2 && (192..=223).contains(&data[1])
}

fn be16(b: &[u8], at: usize) -> Result<u16, RtcpError> {
    let s = b.get(at..at + 2).ok_or(RtcpError::Truncated)?;
    Ok(u16::from_be_bytes([s[0], s[1]]))
}

fn be32(b: &[u8], at: usize) -> Result<u32, RtcpError> {
    let s = b.get(at..at + 4).ok_or(RtcpError::Truncated)?;
    Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn read_block(b: &[u8], at: usize) -> Result<ReportBlock, RtcpError> {
    let lost = be32(b, at + 4)?;
    // 24-bit two's complement.
    let cumulative = ((lost & 0x00ff_ffff) << 8) as i32 >> 8;
    Ok(ReportBlock {
        ssrc: be32(b, at)?,
        fraction_lost: (lost >> 24) as u8,
        cumulative_lost: cumulative,
        extended_highest_seq: be32(b, at + 8)?,
        jitter: be32(b, at + 12)?,
        lsr: be32(b, at + 16)?,
        dlsr: be32(b, at + 20)?,
    })
}

fn read_blocks(body: &[u8], at: usize, count: usize) -> Result<Vec<ReportBlock>, RtcpError> {
    // Profile-specific extensions may follow the blocks; they must fit, not be absent.
    if body.len() < at + 24 * count {
        return Err(RtcpError::BadLength);
    }
    (0..count).map(|i| read_block(body, at + 24 * i)).collect()
}

fn read_sdes(body: &[u8], count: usize) -> Result<Vec<(u32, Option<String>)>, RtcpError> {
    let mut chunks = Vec::with_capacity(count.min(MAX_BLOCKS));
    let mut at = 4;
    for _ in 0..count {
        let ssrc = be32(body, at).map_err(|_| RtcpError::BadLength)?;
        at += 4;
        let mut cname = None;
        loop {
            let kind = *body.get(at).ok_or(RtcpError::BadLength)?;
            if kind == 0 {
                // End of the item list; the chunk is padded to 32 bits.
                at = (at + 1).div_ceil(4) * 4;
                break;
            }
            let len = usize::from(*body.get(at + 1).ok_or(RtcpError::BadLength)?);
            let text = body.get(at + 2..at + 2 + len).ok_or(RtcpError::BadLength)?;
            if kind == 1 {
                cname = Some(String::from_utf8_lossy(text).into_owned());
            }
            at += 2 + len;
        }
        chunks.push((ssrc, cname));
    }
    Ok(chunks)
}

fn read_bye(body: &[u8], count: usize) -> Result<RtcpPacket, RtcpError> {
    let sources = (0..count)
        .map(|i| be32(body, 4 + 4 * i).map_err(|_| RtcpError::BadLength))
        .collect::<Result<Vec<u32>, _>>()?;
    let at = 4 + 4 * count;
    let reason = match body.get(at) {
        Some(&len) => {
            let text = body
                .get(at + 1..at + 1 + usize::from(len))
                .ok_or(RtcpError::BadLength)?;
            Some(String::from_utf8_lossy(text).into_owned())
        }
        None => None,
    };
    Ok(RtcpPacket::Bye { sources, reason })
}

/// Reads a compound RTCP datagram (RFC 3550 §6.1, A.2): every packet version 2, the
/// lengths adding up exactly, padding only on the last one. Reduced-size RTCP (RFC
/// 5506: one packet of any type) is accepted too.
pub fn parse(data: &[u8]) -> Result<Vec<RtcpPacket>, RtcpError> {
    if data.len() < 4 {
        return Err(RtcpError::Truncated);
    }
    let mut packets = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(RtcpError::Truncated);
        }
        let version = rest[0] >> 6;
        if version != 2 {
            return Err(RtcpError::BadVersion(version));
        }
        let padding = rest[0] & 0x20 != 0;
        let count = usize::from(rest[0] & 0x1f);
        let packet_type = rest[1];
        if !(192..=223).contains(&packet_type) {
            return Err(RtcpError::NotRtcp(packet_type));
        }
        let len = (usize::from(be16(rest, 2)?) + 1) * 4;
        let whole = rest.get(..len).ok_or(RtcpError::Truncated)?;
        rest = &rest[len..];
        let body = if padding {
            if !rest.is_empty() {
                return Err(RtcpError::BadPadding);
            }
            let pad = usize::from(whole[len - 1]);
            if pad == 0 || pad > len - 4 {
                return Err(RtcpError::BadPadding);
            }
            &whole[..len - pad]
        } else {
            whole
        };
        let packet = match packet_type {
            PT_SR => {
                let ssrc = be32(body, 4).map_err(|_| RtcpError::BadLength)?;
                if body.len() < 28 {
                    return Err(RtcpError::BadLength);
                }
                let info = SenderInfo {
                    ntp: (u64::from(be32(body, 8)?) << 32) | u64::from(be32(body, 12)?),
                    rtp_timestamp: be32(body, 16)?,
                    packet_count: be32(body, 20)?,
                    octet_count: be32(body, 24)?,
                };
                RtcpPacket::SenderReport {
                    ssrc,
                    info,
                    blocks: read_blocks(body, 28, count)?,
                }
            }
            PT_RR => {
                let ssrc = be32(body, 4).map_err(|_| RtcpError::BadLength)?;
                RtcpPacket::ReceiverReport {
                    ssrc,
                    blocks: read_blocks(body, 8, count)?,
                }
            }
            PT_SDES => RtcpPacket::SourceDescription {
                chunks: read_sdes(body, count)?,
            },
            PT_BYE => read_bye(body, count)?,
            other => RtcpPacket::Other { packet_type: other },
        };
        packets.push(packet);
    }
    Ok(packets)
}

fn put_header(out: &mut Vec<u8>, count: usize, packet_type: u8, words_after: usize) {
    out.push(0x80 | (count as u8 & 0x1f));
    out.push(packet_type);
    out.extend_from_slice(&(words_after as u16).to_be_bytes());
}

fn put_block(out: &mut Vec<u8>, b: &ReportBlock) {
    out.extend_from_slice(&b.ssrc.to_be_bytes());
    let lost = (b.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff) as u32) & 0x00ff_ffff;
    out.extend_from_slice(&((u32::from(b.fraction_lost) << 24) | lost).to_be_bytes());
    out.extend_from_slice(&b.extended_highest_seq.to_be_bytes());
    out.extend_from_slice(&b.jitter.to_be_bytes());
    out.extend_from_slice(&b.lsr.to_be_bytes());
    out.extend_from_slice(&b.dlsr.to_be_bytes());
}

/// Appends an SR (with `info`) or an RR (without) from `ssrc` carrying `blocks`
/// (at most 31 are written).
pub fn write_report(
    out: &mut Vec<u8>,
    ssrc: u32,
    info: Option<&SenderInfo>,
    blocks: &[ReportBlock],
) {
    let blocks = &blocks[..blocks.len().min(MAX_BLOCKS)];
    let words = 1 + if info.is_some() { 5 } else { 0 } + 6 * blocks.len();
    match info {
        Some(info) => {
            put_header(out, blocks.len(), PT_SR, words);
            out.extend_from_slice(&ssrc.to_be_bytes());
            out.extend_from_slice(&info.ntp.to_be_bytes());
            out.extend_from_slice(&info.rtp_timestamp.to_be_bytes());
            out.extend_from_slice(&info.packet_count.to_be_bytes());
            out.extend_from_slice(&info.octet_count.to_be_bytes());
        }
        None => {
            put_header(out, blocks.len(), PT_RR, words);
            out.extend_from_slice(&ssrc.to_be_bytes());
        }
    }
    for b in blocks {
        put_block(out, b);
    }
}

/// Appends an SDES with one chunk: `ssrc` and its CNAME (cut to 255 bytes).
pub(crate) fn write_sdes(out: &mut Vec<u8>, ssrc: u32, cname: &str) {
    let mut name = &cname.as_bytes()[..cname.len().min(255)];
    // Never cut inside a UTF-8 sequence.
    while std::str::from_utf8(name).is_err() {
        name = &name[..name.len() - 1];
    }
    // ssrc, type, length, text, then at least one zero byte, padded to 32 bits.
    let chunk = (4 + 2 + name.len() + 1).div_ceil(4) * 4;
    put_header(out, 1, PT_SDES, chunk / 4);
    let start = out.len();
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.push(1);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.resize(start + chunk, 0);
}

/// Appends a BYE for `ssrc` (no reason).
pub(crate) fn write_bye(out: &mut Vec<u8>, ssrc: u32) {
    put_header(out, 1, PT_BYE, 1);
    out.extend_from_slice(&ssrc.to_be_bytes());
}

/// The middle 32 bits of an NTP timestamp (LSR, and the arrival time A of §6.4.1).
pub(crate) fn ntp_middle(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// Seconds since 1900-01-01 to 1970-01-01.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// A duration since the Unix epoch as an NTP timestamp.
pub fn ntp_from_unix(since_epoch: std::time::Duration) -> u64 {
    let secs = since_epoch.as_secs().wrapping_add(NTP_UNIX_OFFSET);
    let frac = (u64::from(since_epoch.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// The time of an event, on both clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// A monotonic clock, in milliseconds.
    pub ms: u64,
    /// NTP wallclock at the same moment.
    pub ntp: u64,
}

/// What our RTP stream has sent, for the SR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sending {
    /// RTP packets sent since the start.
    pub packets: u64,
    /// Payload octets sent since the start.
    pub octets: u64,
    /// The RTP timestamp of now.
    pub rtp_timestamp: u32,
}

/// Call quality as RTCP sees it: our reception of the peer's stream and what the
/// peer reports about ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quality {
    /// Reports (SR/RR) we sent.
    pub reports_sent: u64,
    /// Reports (SR/RR) the peer sent us.
    pub reports_received: u64,
    /// Round-trip time of the latest report block carrying LSR/DLSR, in ms. It
    /// includes how long the report waited before the caller read it (the media
    /// thread reads on its 20 ms tick).
    pub rtt_ms: Option<u32>,
    /// Fraction of our packets the peer lost in its last interval, in 1/256.
    pub remote_fraction_lost: Option<u8>,
    /// Our packets the peer lost since the start.
    pub remote_cumulative_lost: Option<i32>,
    /// The interarrival jitter the peer measures on our stream, in ms.
    pub remote_jitter_ms: Option<u32>,
    /// Packets of the peer's stream expected so far (as of our last report).
    pub expected: u64,
    /// Packets of the peer's stream lost so far (expected − received).
    pub lost: i64,
    /// Fraction lost in our last report's interval, in 1/256.
    pub fraction_lost: u8,
    /// The peer said BYE.
    pub bye_received: bool,
}

impl Quality {
    /// Our reception loss since the start, in tenths of a percent.
    pub fn loss_permille(&self) -> u32 {
        if self.expected == 0 || self.lost <= 0 {
            return 0;
        }
        ((self.lost as u64).min(self.expected) * 1000 / self.expected) as u32
    }
}

/// What [`RtcpSession::on_datagram`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Received {
    /// An SR or RR from the peer was in it.
    pub report: bool,
    /// The peer said BYE.
    pub bye: bool,
}

/// The RTCP side of one RTP session: schedule, reception accounting, quality.
#[derive(Debug, Clone)]
pub struct RtcpSession {
    ssrc: u32,
    cname: String,
    /// The clock rate of both streams (RTP timestamp units per second).
    clock_rate: u32,
    /// When the next report is due (`None`: not started).
    next_report_ms: Option<u64>,
    rng: u64,
    /// Reception at our previous report (of that SSRC), for the interval's fraction
    /// lost.
    prior_ssrc: Option<u32>,
    expected_prior: u32,
    received_prior: u32,
    /// The peer's last SR: its SSRC, the middle of its NTP time, our arrival time.
    last_sr: Option<(u32, u32, u64)>,
    /// Packets we had sent at our previous report (an SR only if we sent since).
    sent_at_last_report: u64,
    quality: Quality,
}

impl RtcpSession {
    /// A session for our stream `ssrc`, named `cname`, at `clock_rate`; `seed`
    /// randomises the intervals.
    pub fn new(ssrc: u32, cname: &str, clock_rate: u32, seed: u64) -> RtcpSession {
        RtcpSession {
            ssrc,
            cname: cname.to_string(),
            clock_rate: clock_rate.max(1),
            next_report_ms: None,
            rng: seed | 1,
            prior_ssrc: None,
            expected_prior: 0,
            received_prior: 0,
            last_sr: None,
            sent_at_last_report: 0,
            quality: Quality::default(),
        }
    }

    /// Our SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Sets the clock rate (after a codec change).
    pub(crate) fn set_clock_rate(&mut self, clock_rate: u32) {
        self.clock_rate = clock_rate.max(1);
    }

    /// The numbers so far.
    pub fn quality(&self) -> Quality {
        self.quality
    }

    /// `base_ms` × a random factor in 0.5–1.5 (RFC 3550 §6.3.1), at least 1 ms.
    fn randomised(&mut self, base_ms: u64) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11;
        let unit = r as f64 / (1u64 << 53) as f64;
        ((base_ms as f64 * (0.5 + unit)) as u64).max(1)
    }

    /// Media has started (or restarted): the first report goes about a second from
    /// `now_ms`. Does nothing when already started.
    pub fn start(&mut self, now_ms: u64) {
        if self.next_report_ms.is_none() {
            let wait = self.randomised(FIRST_REPORT_MS);
            self.next_report_ms = Some(now_ms + wait);
        }
    }

    /// Whether a report is due.
    pub fn due(&self, now_ms: u64) -> bool {
        self.next_report_ms.is_some_and(|t| now_ms >= t)
    }

    /// The report block about the peer's stream `peer_ssrc`, as received so far.
    fn block(&mut self, now: Now, peer_ssrc: u32, r: &Reception) -> ReportBlock {
        if self.prior_ssrc != Some(peer_ssrc)
            || r.expected < self.expected_prior
            || r.received < self.received_prior
        {
            // The stream started over (new SSRC, resync): a new interval base.
            self.expected_prior = 0;
            self.received_prior = 0;
            self.prior_ssrc = Some(peer_ssrc);
        }
        let expected_interval = r.expected.wrapping_sub(self.expected_prior);
        let received_interval = r.received.wrapping_sub(self.received_prior);
        let lost_interval = i64::from(expected_interval) - i64::from(received_interval);
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / i64::from(expected_interval)).min(255) as u8
        };
        self.expected_prior = r.expected;
        self.received_prior = r.received;
        let cumulative = i64::from(r.expected) - i64::from(r.received);
        self.quality.expected = u64::from(r.expected);
        self.quality.lost = cumulative;
        self.quality.fraction_lost = fraction_lost;
        let (lsr, dlsr) = match self.last_sr {
            Some((ssrc, lsr, at_ms)) if ssrc == peer_ssrc => {
                let delay = now.ms.saturating_sub(at_ms);
                (
                    lsr,
                    (delay.saturating_mul(65_536) / 1_000).min(u64::from(u32::MAX)) as u32,
                )
            }
            _ => (0, 0),
        };
        ReportBlock {
            ssrc: peer_ssrc,
            fraction_lost,
            cumulative_lost: cumulative.clamp(-0x80_0000, 0x7f_ffff) as i32,
            extended_highest_seq: r.extended_highest_seq,
            jitter: r.jitter,
            lsr,
            dlsr,
        }
    }

    /// Builds the report due now: an SR when we sent RTP since the previous report,
    /// else an RR; one block about the peer's stream when we receive one
    /// (`reception`: its SSRC and counters); then SDES CNAME. Schedules the next.
    pub fn report(
        &mut self,
        now: Now,
        sending: &Sending,
        reception: Option<(u32, Reception)>,
    ) -> Vec<u8> {
        let blocks: Vec<ReportBlock> = reception
            .map(|(ssrc, r)| self.block(now, ssrc, &r))
            .into_iter()
            .collect();
        let info = (sending.packets > self.sent_at_last_report).then_some(SenderInfo {
            ntp: now.ntp,
            rtp_timestamp: sending.rtp_timestamp,
            packet_count: sending.packets as u32,
            octet_count: sending.octets as u32,
        });
        self.sent_at_last_report = sending.packets;
        let mut out = Vec::with_capacity(96);
        write_report(&mut out, self.ssrc, info.as_ref(), &blocks);
        write_sdes(&mut out, self.ssrc, &self.cname);
        self.quality.reports_sent += 1;
        let wait = self.randomised(REPORT_INTERVAL_MS);
        self.next_report_ms = Some(now.ms + wait);
        out
    }

    /// The last report and BYE, for when the call ends.
    pub fn bye(
        &mut self,
        now: Now,
        sending: &Sending,
        reception: Option<(u32, Reception)>,
    ) -> Vec<u8> {
        let mut out = self.report(now, sending, reception);
        write_bye(&mut out, self.ssrc);
        self.next_report_ms = None;
        out
    }

    /// Takes one received RTCP datagram. Blocks about other sources (our own SSRC
    /// looped back, third parties) are ignored.
    pub fn on_datagram(&mut self, now: Now, data: &[u8]) -> Result<Received, RtcpError> {
        let packets = parse(data)?;
        let mut found = Received::default();
        for p in &packets {
            let (sender, blocks) = match p {
                RtcpPacket::SenderReport { ssrc, info, blocks } => {
                    if *ssrc != self.ssrc {
                        self.last_sr = Some((*ssrc, ntp_middle(info.ntp), now.ms));
                    }
                    (*ssrc, blocks)
                }
                RtcpPacket::ReceiverReport { ssrc, blocks } => (*ssrc, blocks),
                RtcpPacket::Bye { sources, .. } => {
                    if sources.iter().any(|s| *s != self.ssrc) {
                        found.bye = true;
                        self.quality.bye_received = true;
                    }
                    continue;
                }
                _ => continue,
            };
            if sender == self.ssrc {
                continue;
            }
            found.report = true;
            self.quality.reports_received += 1;
            if let Some(b) = blocks.iter().find(|b| b.ssrc == self.ssrc) {
                self.on_block_about_us(now, b);
            }
        }
        Ok(found)
    }

    fn on_block_about_us(&mut self, now: Now, b: &ReportBlock) {
        self.quality.remote_fraction_lost = Some(b.fraction_lost);
        self.quality.remote_cumulative_lost = Some(b.cumulative_lost);
        let jitter_ms = u64::from(b.jitter) * 1000 / u64::from(self.clock_rate);
        self.quality.remote_jitter_ms = Some(jitter_ms.min(u64::from(u32::MAX)) as u32);
        if b.lsr != 0 {
            if let Some(rtt) = round_trip(ntp_middle(now.ntp), b.lsr, b.dlsr) {
                self.quality.rtt_ms = Some(rtt);
            }
        }
    }
}

/// Round-trip time in ms from a report block (RFC 3550 §6.4.1): arrival `a`, LSR and
/// DLSR, all in 1/65536 s. `None` when the result is negative beyond a rounding error
/// or absurd (over a minute): clocks or the peer are confused.
pub(crate) fn round_trip(a: u32, lsr: u32, dlsr: u32) -> Option<u32> {
    let rtt = a.wrapping_sub(lsr).wrapping_sub(dlsr) as i32;
    // Up to 2 ms below zero is rounding (DLSR is often counted in whole ms).
    if !(-131..=60 * 65_536).contains(&rtt) {
        return None;
    }
    Some((i64::from(rtt.max(0)) * 1000 / 65_536) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: u32 = 0x1111_1111;
    const PEER: u32 = 0x2222_2222;

    fn now(ms: u64) -> Now {
        // NTP on the same clock: 1000 s plus `ms`.
        Now {
            ms,
            ntp: ((1000 + ms / 1000) << 32) | (((ms % 1000) << 32) / 1000),
        }
    }

    fn reception(expected: u32, received: u32) -> Reception {
        Reception {
            extended_highest_seq: 70_000 + expected,
            expected,
            received,
            jitter: 80,
        }
    }

    #[test]
    fn report_round_trip() {
        let mut s = RtcpSession::new(US, "user@127.0.0.1", 8000, 7);
        s.start(0);
        let sending = Sending {
            packets: 250,
            octets: 40_000,
            rtp_timestamp: 1234,
        };
        let bytes = s.report(now(5_000), &sending, Some((PEER, reception(250, 240))));
        assert_eq!(bytes.len() % 4, 0);
        let packets = parse(&bytes).unwrap();
        assert_eq!(packets.len(), 2);
        match &packets[0] {
            RtcpPacket::SenderReport { ssrc, info, blocks } => {
                assert_eq!(*ssrc, US);
                assert_eq!(info.packet_count, 250);
                assert_eq!(info.octet_count, 40_000);
                assert_eq!(info.rtp_timestamp, 1234);
                assert_eq!(info.ntp, now(5_000).ntp);
                assert_eq!(blocks.len(), 1);
                let b = blocks[0];
                assert_eq!(b.ssrc, PEER);
                assert_eq!(b.cumulative_lost, 10);
                // 10 of 250 = 4 % = 10.24/256.
                assert_eq!(b.fraction_lost, 10);
                assert_eq!(b.extended_highest_seq, 70_250);
                assert_eq!(b.jitter, 80);
                assert_eq!((b.lsr, b.dlsr), (0, 0));
            }
            other => panic!("expected an SR, got {other:?}"),
        }
        assert_eq!(
            packets[1],
            RtcpPacket::SourceDescription {
                chunks: vec![(US, Some("user@127.0.0.1".to_string()))]
            }
        );
        // Nothing sent since: an RR.
        let bytes = s.report(now(10_000), &sending, Some((PEER, reception(500, 490))));
        match &parse(&bytes).unwrap()[0] {
            RtcpPacket::ReceiverReport { ssrc, blocks } => {
                assert_eq!(*ssrc, US);
                // This interval lost nothing.
                assert_eq!(blocks[0].fraction_lost, 0);
                assert_eq!(blocks[0].cumulative_lost, 10);
            }
            other => panic!("expected an RR, got {other:?}"),
        }
        let q = s.quality();
        assert_eq!(q.reports_sent, 2);
        assert_eq!(q.expected, 500);
        assert_eq!(q.lost, 10);
        assert_eq!(q.loss_permille(), 20);
    }

    #[test]
    fn every_sdes_length_is_aligned_and_read_back() {
        for n in 0..12 {
            let name: String = "x".repeat(n);
            let mut out = Vec::new();
            write_sdes(&mut out, PEER, &name);
            assert_eq!(out.len() % 4, 0);
            assert_eq!(
                parse(&out).unwrap(),
                vec![RtcpPacket::SourceDescription {
                    chunks: vec![(PEER, Some(name))]
                }]
            );
        }
        let long = "é".repeat(200);
        let mut out = Vec::new();
        write_sdes(&mut out, PEER, &long);
        match &parse(&out).unwrap()[0] {
            RtcpPacket::SourceDescription { chunks } => {
                let cname = chunks[0].1.as_deref().unwrap();
                assert!(cname.len() <= 255 && cname.chars().all(|c| c == 'é'));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn loss_fraction_per_interval() {
        let mut s = RtcpSession::new(US, "c", 8000, 1);
        let none = Sending {
            packets: 0,
            octets: 0,
            rtp_timestamp: 0,
        };
        let frac = |bytes: Vec<u8>| match &parse(&bytes).unwrap()[0] {
            RtcpPacket::ReceiverReport { blocks, .. } => blocks[0].fraction_lost,
            other => panic!("{other:?}"),
        };
        // Half lost.
        assert_eq!(
            frac(s.report(now(1), &none, Some((PEER, reception(100, 50))))),
            128
        );
        // Then 1 in 20 (5 %): 12.8/256.
        assert_eq!(
            frac(s.report(now(2), &none, Some((PEER, reception(300, 240))))),
            12
        );
        // Duplicates (more received than expected): 0, never negative.
        assert_eq!(
            frac(s.report(now(3), &none, Some((PEER, reception(310, 260))))),
            0
        );
        // The stream started over: counted from its new base.
        assert_eq!(
            frac(s.report(now(4), &none, Some((PEER, reception(10, 5))))),
            128
        );
        // A new SSRC, even with bigger counters: from its own start.
        assert_eq!(
            frac(s.report(now(5), &none, Some((7, reception(400, 400))))),
            0
        );
        // Nothing received at all: no block.
        let bytes = s.report(now(6), &none, None);
        assert_eq!(
            parse(&bytes).unwrap()[0],
            RtcpPacket::ReceiverReport {
                ssrc: US,
                blocks: vec![]
            }
        );
    }

    #[test]
    fn rtt_from_lsr_and_dlsr() {
        // RFC 3550 figure 2: A = 0xb710:8000 (46864.500 s), LSR = 0xb705:2000
        // (46853.125 s), DLSR = 0x0005:4000 (5.250 s): RTT = 6.125 s.
        assert_eq!(
            round_trip(0xb710_8000, 0xb705_2000, 0x0005_4000),
            Some(6125)
        );
        assert_eq!(round_trip(100, 100, 0), Some(0));
        // A rounding error of a ms is zero, a real negative is refused.
        assert_eq!(round_trip(1000, 1000, 65), Some(0));
        assert_eq!(round_trip(1000, 1000, 65_536), None);
        // Across the wrap of the 32-bit clock.
        assert_eq!(round_trip(0x0000_8000, 0xffff_8000, 0), Some(1000));

        // End to end: we send an SR at 10 s, the peer holds it 250 ms and answers;
        // its report arrives at 10.300 s: RTT 50 ms.
        let mut us = RtcpSession::new(US, "us", 8000, 3);
        let mut peer = RtcpSession::new(PEER, "peer", 8000, 4);
        let sending = Sending {
            packets: 10,
            octets: 1600,
            rtp_timestamp: 0,
        };
        let sr = us.report(now(10_000), &sending, Some((PEER, reception(10, 10))));
        // The peer's clocks differ from ours: only its DLSR matters.
        let peer_now = |ms: u64| Now {
            ms: ms + 777_777,
            ntp: now(ms + 5_000_000).ntp,
        };
        let got = peer.on_datagram(peer_now(10_025), &sr).unwrap();
        assert!(got.report);
        let rr = peer.report(
            peer_now(10_275),
            &Sending {
                packets: 0,
                octets: 0,
                rtp_timestamp: 0,
            },
            Some((US, reception(10, 10))),
        );
        assert!(us.on_datagram(now(10_300), &rr).unwrap().report);
        let q = us.quality();
        let rtt = q.rtt_ms.unwrap();
        assert!((49..=51).contains(&rtt), "rtt {rtt}");
        assert_eq!(q.reports_received, 1);
        assert_eq!(q.remote_fraction_lost, Some(0));
        assert_eq!(q.remote_cumulative_lost, Some(0));
        // Jitter 80 timestamp units at 8 kHz = 10 ms.
        assert_eq!(q.remote_jitter_ms, Some(10));
        // The peer saw no SR from us before its first report: no RTT there.
        assert_eq!(peer.quality().rtt_ms, None);
    }

    #[test]
    fn peer_loss_and_bye_are_read() {
        let mut us = RtcpSession::new(US, "us", 8000, 3);
        let mut out = Vec::new();
        let block = ReportBlock {
            ssrc: US,
            fraction_lost: 13,
            cumulative_lost: -3,
            extended_highest_seq: 5,
            jitter: 16,
            lsr: 0,
            dlsr: 0,
        };
        let other = ReportBlock { ssrc: 99, ..block };
        write_report(&mut out, PEER, None, &[other, block]);
        write_sdes(&mut out, PEER, "peer");
        write_bye(&mut out, PEER);
        let got = us.on_datagram(now(1), &out).unwrap();
        assert_eq!(
            got,
            Received {
                report: true,
                bye: true
            }
        );
        let q = us.quality();
        assert_eq!(q.remote_fraction_lost, Some(13));
        assert_eq!(q.remote_cumulative_lost, Some(-3));
        assert_eq!(q.remote_jitter_ms, Some(2));
        assert!(q.bye_received);
        assert_eq!(q.rtt_ms, None);
        // Our own report looped back is not the peer's.
        let mut mine = RtcpSession::new(US, "us", 8000, 5);
        let echo = mine.report(
            now(1),
            &Sending {
                packets: 1,
                octets: 160,
                rtp_timestamp: 0,
            },
            None,
        );
        let got = us.on_datagram(now(2), &echo).unwrap();
        assert!(!got.report);
        assert_eq!(us.quality().reports_received, 1);
    }

    #[test]
    fn bye_closes_the_compound() {
        let mut s = RtcpSession::new(US, "us", 8000, 9);
        s.start(0);
        let bytes = s.bye(
            now(100),
            &Sending {
                packets: 0,
                octets: 0,
                rtp_timestamp: 0,
            },
            None,
        );
        let packets = parse(&bytes).unwrap();
        assert_eq!(
            packets.last(),
            Some(&RtcpPacket::Bye {
                sources: vec![US],
                reason: None
            })
        );
        assert!(!s.due(1_000_000));
    }

    #[test]
    fn schedule_first_soon_then_about_five_seconds() {
        let mut gaps = Vec::new();
        for seed in 0..200u64 {
            let mut s = RtcpSession::new(US, "c", 8000, seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            assert!(!s.due(u64::MAX), "not before start");
            s.start(1_000);
            s.start(50_000); // a second start changes nothing
            let first = (1_000..=2_600).find(|&t| s.due(t)).expect("first report");
            assert!((1_500..=2_500).contains(&first), "first at {first}");
            let none = Sending {
                packets: 0,
                octets: 0,
                rtp_timestamp: 0,
            };
            s.report(now(first), &none, None);
            let next = (first..first + 8_000).find(|&t| s.due(t)).expect("next");
            gaps.push(next - first);
        }
        assert!(gaps.iter().all(|g| (2_500..=7_500).contains(g)), "{gaps:?}");
        let min = *gaps.iter().min().unwrap();
        let max = *gaps.iter().max().unwrap();
        assert!(min < 3_500 && max > 6_500, "randomised: {min}..{max}");
        let mean = gaps.iter().sum::<u64>() / gaps.len() as u64;
        assert!((4_500..=5_500).contains(&mean), "mean {mean}");
    }

    #[test]
    fn rtcp_mux_demultiplexing() {
        let mut rr = Vec::new();
        write_report(&mut rr, US, None, &[]);
        assert!(is_rtcp(&rr));
        // RTP PCMU, PCMA, telephone-event 101, with and without the marker.
        for pt in [0u8, 8, 101, 0x80, 0x88, 0x80 | 101] {
            assert!(!is_rtcp(&[0x80, pt, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]));
        }
        assert!(!is_rtcp(&[0x80, 200]));
        assert!(!is_rtcp(&[0x40, 200, 0, 1]));
    }

    #[test]
    fn other_types_are_skipped() {
        let mut out = Vec::new();
        write_report(&mut out, PEER, None, &[]);
        // XR (207) with one block-ish word, APP (204) with name, RTPFB (205).
        out.extend_from_slice(&[0x80, 207, 0, 2, 0, 0, 0, 1, 4, 0, 0, 0]);
        out.extend_from_slice(&[0x81, 204, 0, 2, 0, 0, 0, 1, b'a', b'b', b'c', b'd']);
        out.extend_from_slice(&[0x81, 205, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2]);
        let packets = parse(&out).unwrap();
        assert_eq!(packets.len(), 4);
        assert_eq!(packets[1], RtcpPacket::Other { packet_type: 207 });
        assert_eq!(packets[2], RtcpPacket::Other { packet_type: 204 });
        // Padding on the last packet.
        let mut padded = Vec::new();
        write_report(&mut padded, PEER, None, &[]);
        padded[0] |= 0x20;
        padded[3] = 2;
        padded.extend_from_slice(&[0, 0, 0, 4]);
        assert_eq!(
            parse(&padded).unwrap(),
            vec![RtcpPacket::ReceiverReport {
                ssrc: PEER,
                blocks: vec![]
            }]
        );
    }

    #[test]
    fn malformed_input_is_an_error() {
        let mut good = Vec::new();
        write_report(
            &mut good,
            PEER,
            Some(&SenderInfo::default()),
            &[ReportBlock::default()],
        );
        write_sdes(&mut good, PEER, "peer");
        assert!(parse(&good).is_ok());
        assert_eq!(parse(&[]), Err(RtcpError::Truncated));
        assert_eq!(parse(&[0x80, 201, 0]), Err(RtcpError::Truncated));
        // Every truncation of a good compound fails cleanly, except at the packet
        // boundary (the SR alone is a valid compound).
        let sr_len = 8 + 20 + 24;
        for n in 1..good.len() {
            assert_eq!(parse(&good[..n]).is_ok(), n == sr_len, "{n} bytes");
        }
        // Length says more than there is.
        assert_eq!(
            parse(&[0x80, 201, 0xff, 0xff, 0, 0, 0, 1]),
            Err(RtcpError::Truncated)
        );
        // Report count says more blocks than the length holds.
        assert_eq!(
            parse(&[0x9f, 201, 0, 1, 0, 0, 0, 1]),
            Err(RtcpError::BadLength)
        );
        assert_eq!(
            parse(&[0x80, 200, 0, 1, 0, 0, 0, 1]),
            Err(RtcpError::BadLength)
        );
        assert_eq!(
            parse(&[0x00, 201, 0, 1, 0, 0, 0, 1]),
            Err(RtcpError::BadVersion(0))
        );
        assert_eq!(
            parse(&[0x80, 96, 0, 1, 0, 0, 0, 1]),
            Err(RtcpError::NotRtcp(96))
        );
        // Padding that is not on the last packet, zero, or too long.
        let mut pad_first = good.clone();
        pad_first[0] |= 0x20;
        assert_eq!(parse(&pad_first), Err(RtcpError::BadPadding));
        assert_eq!(
            parse(&[0xa0, 201, 0, 1, 0, 0, 0, 0]),
            Err(RtcpError::BadPadding)
        );
        assert_eq!(
            parse(&[0xa0, 201, 0, 1, 0, 0, 0, 9]),
            Err(RtcpError::BadPadding)
        );
        // SDES with an item running past the end, or no terminator.
        assert_eq!(
            parse(&[0x81, 202, 0, 2, 0, 0, 0, 1, 1, 40, b'a', b'b']),
            Err(RtcpError::BadLength)
        );
        assert_eq!(
            parse(&[0x81, 202, 0, 2, 0, 0, 0, 1, 1, 2, b'a', b'b']),
            Err(RtcpError::BadLength)
        );
        // BYE with more sources than fit, or a reason past the end.
        assert_eq!(
            parse(&[0x83, 203, 0, 1, 0, 0, 0, 1]),
            Err(RtcpError::BadLength)
        );
        assert_eq!(
            parse(&[0x81, 203, 0, 2, 0, 0, 0, 1, 9, b'x', 0, 0]),
            Err(RtcpError::BadLength)
        );
        let mut s = RtcpSession::new(US, "c", 8000, 1);
        assert!(s.on_datagram(now(0), &[0x80, 201, 0xff, 0xff]).is_err());
        assert_eq!(s.quality(), Quality::default());
    }

    #[test]
    fn random_bytes_never_panic() {
        // Fuzz-like: random bytes, random mutations of a good compound, and every
        // header byte value on short packets.
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut good = Vec::new();
        write_report(
            &mut good,
            PEER,
            Some(&SenderInfo::default()),
            &[ReportBlock::default(), ReportBlock::default()],
        );
        write_sdes(&mut good, PEER, "someone@example");
        write_bye(&mut good, PEER);
        let mut s = RtcpSession::new(US, "c", 8000, 1);
        for i in 0..20_000u32 {
            let data: Vec<u8> = if i % 2 == 0 {
                let len = (next() % 120) as usize;
                (0..len).map(|_| next() as u8).collect()
            } else {
                let mut d = good.clone();
                for _ in 0..(1 + next() % 4) {
                    let at = (next() as usize) % d.len();
                    d[at] = next() as u8;
                }
                d.truncate((next() as usize) % (good.len() + 1));
                d
            };
            let _ = parse(&data);
            let _ = s.on_datagram(now(u64::from(i)), &data);
            let _ = is_rtcp(&data);
        }
        for b0 in 0..=255u8 {
            for b1 in [192u8, 200, 201, 202, 203, 204, 207, 223] {
                for len in [0u8, 1, 2, 255] {
                    let _ = parse(&[b0, b1, 0, len, 1, 2, 3, 4, 5, 6, 7, 8]);
                }
            }
        }
    }

    #[test]
    fn ntp_conversion() {
        let t = ntp_from_unix(std::time::Duration::from_millis(1_500));
        assert_eq!(t >> 32, NTP_UNIX_OFFSET + 1);
        assert_eq!(t & 0xffff_ffff, 1 << 31);
        assert_eq!(
            ntp_middle(t),
            (((NTP_UNIX_OFFSET + 1) as u32) << 16) | 0x8000
        );
    }
}
