//! SDP (RFC 4566) reading and writing, and the offer/answer rules of RFC 3264 for one
//! audio stream.
//!
//! This module owns the session description text: a lenient parser (unknown or
//! malformed attribute lines are skipped, CRLF or LF), the offer we send, the answer
//! we give to an offer, and what an answer to our offer means. The result of a
//! negotiation is a [`Negotiated`] value the media engine takes; nothing here opens a
//! socket or knows about SIP.
//!
//! Codecs are described by one table ([`Codec`]): PCMU and PCMA, G.722 (`G722/8000`, payload type 9: RFC 3551 keeps an 8 kHz RTP
//! clock although it samples at 16 kHz) and Opus (`opus/48000/2`, dynamic payload
//! type, 111 in our offers, with `a=fmtp` asking for in-band FEC and 20 ms frames).
//! Answers keep the offerer's payload type numbers and pick the offerer's first
//! codec we have, or our first one that the offer has when asked to
//! ([`LocalMedia::prefer_own_order`], the ini's `forceCodec`).
//!
//! SRTP keyed by SDES (RFC 4568) is negotiated here too, by [`LocalMedia::srtp`]:
//! off, we offer `RTP/AVP` and answer an offer's `a=crypto` in clear (an `RTP/SAVP`
//! offer is refused); optional, we offer `RTP/AVP` with `a=crypto` lines (the "best
//! effort" form) and take SRTP whenever the other side gives a usable key;
//! mandatory, we offer `RTP/SAVP` and refuse ([`SdpError::SrtpRequired`]) an offer or
//! an answer without a usable key. The keys and the crypto are in [`crate::srtp`].
//!
//! ICE (RFC 8839) is negotiated here too, by [`LocalMedia::ice`]: with it, our
//! offers and answers carry `a=ice-ufrag`, `a=ice-pwd`, one `a=candidate` line per
//! candidate (RTP as component 1, RTCP as 2 unless RTCP is multiplexed) and
//! (offers) `a=rtcp-mux`; the peer's are read at session or media
//! level, and [`Negotiated::ice`] holds both sides' (our role: the offerer
//! controls, or whoever faces an `a=ice-lite` peer). ICE lines in an offer to a
//! phone without ICE are ignored (plain RFC 3264), and our offer's ICE lines
//! answered without any mean no ICE. The agent is [`microsip_nat::ice`].

use std::fmt;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

pub use microsip_nat::ice::{Candidate, Credentials};

use crate::srtp::{Crypto, MasterKey, SrtpParams, Suite};

/// Media direction attribute (`a=sendrecv` and friends), from the point of view of
/// whoever wrote the description.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    /// `a=sendrecv` (also the default when absent).
    #[default]
    SendRecv,
    /// `a=sendonly`: the writer sends, does not receive (typically: it holds the call).
    SendOnly,
    /// `a=recvonly`: the writer receives only.
    RecvOnly,
    /// `a=inactive`: no media either way.
    Inactive,
}

impl Direction {
    /// The direction seen from the other side: sendonly ↔ recvonly.
    pub fn reversed(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }

    /// Whether the writer of this direction sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether the writer of this direction receives media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// The direction allowed by both `self` and `other` (each flow must be allowed
    /// by both).
    pub(crate) fn intersect(self, other: Direction) -> Direction {
        Direction::from_flags(
            self.sends() && other.sends(),
            self.receives() && other.receives(),
        )
    }

    /// Builds a direction from whether one sends and receives.
    pub(crate) fn from_flags(sends: bool, receives: bool) -> Direction {
        match (sends, receives) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    /// The attribute name (`sendrecv`, `sendonly`, `recvonly`, `inactive`).
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    fn from_attribute(name: &str) -> Option<Direction> {
        match name {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An audio codec the phone can send and receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
    /// G.722 at 64 kbit/s (16 kHz audio, RTP clock 8000).
    G722,
    /// Opus, sent mono at 48 kHz (RTP clock 48000, written `opus/48000/2`).
    Opus,
}

/// Format parameters a codec writes in `a=fmtp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FmtpKind {
    /// None.
    None,
    /// Opus (RFC 7587): in-band FEC, 20 ms minimum packet time, and mono unless the
    /// ini's `opusStereo` is set.
    Opus,
}

/// One row of the codec table.
struct CodecInfo {
    codec: Codec,
    /// Encoding name as written in `a=rtpmap` and in the ini.
    name: &'static str,
    /// RTP clock rate (the `a=rtpmap` rate).
    clock_rate: u32,
    /// Rate written in MicroSIP's ini (`audioCodecs=PCMA/8000/1 ...`).
    ini_rate: u32,
    /// Channels, as written in `a=rtpmap` and in the ini.
    channels: u8,
    /// Channel counts accepted when reading an `a=rtpmap` or the ini (Opus is
    /// `/2` by RFC 7587, but `/1` and a missing count are seen too).
    accepted_channels: &'static [u8],
    /// RFC 3551 static payload type, if any.
    static_pt: Option<u8>,
    /// The payload type our offers use when there is no static one (when free).
    offer_pt: Option<u8>,
    /// What goes in `a=fmtp`.
    fmtp: FmtpKind,
}

const CODECS: &[CodecInfo] = &[
    CodecInfo {
        codec: Codec::Pcmu,
        name: "PCMU",
        clock_rate: 8000,
        ini_rate: 8000,
        channels: 1,
        accepted_channels: &[1],
        static_pt: Some(0),
        offer_pt: None,
        fmtp: FmtpKind::None,
    },
    CodecInfo {
        codec: Codec::Pcma,
        name: "PCMA",
        clock_rate: 8000,
        ini_rate: 8000,
        channels: 1,
        accepted_channels: &[1],
        static_pt: Some(8),
        offer_pt: None,
        fmtp: FmtpKind::None,
    },
    CodecInfo {
        codec: Codec::G722,
        name: "G722",
        // RFC 3551 §4.5.2: the RTP clock stays 8000 for historical reasons.
        clock_rate: 8000,
        ini_rate: 16000,
        channels: 1,
        accepted_channels: &[1],
        static_pt: Some(9),
        offer_pt: None,
        fmtp: FmtpKind::None,
    },
    CodecInfo {
        codec: Codec::Opus,
        name: "opus",
        clock_rate: 48000,
        ini_rate: 48000,
        channels: 2,
        accepted_channels: &[2, 1],
        static_pt: None,
        offer_pt: Some(OPUS_PT),
        fmtp: FmtpKind::Opus,
    },
];

/// Payload type we offer for Opus (the common choice; answers keep the offerer's).
pub const OPUS_PT: u8 = 111;

/// First payload type handed out to codecs without a static one.
const FIRST_DYNAMIC_PT: u8 = 96;
/// Payload type we offer for telephone-event (RFC 4733).
pub(crate) const TELEPHONE_EVENT_PT: u8 = 101;

impl Codec {
    /// Every codec this build supports, in table order.
    pub fn all() -> impl Iterator<Item = Codec> {
        CODECS.iter().map(|c| c.codec)
    }

    fn info(self) -> &'static CodecInfo {
        // The table has one row per variant; the fallback is never taken.
        CODECS
            .iter()
            .find(|c| c.codec == self)
            .unwrap_or(&CODECS[0])
    }

    /// Encoding name as in `a=rtpmap` (`PCMU`, `PCMA`, `G722`, `opus`).
    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// RTP clock rate (8000 for G.722 although it samples at 16 kHz).
    pub fn clock_rate(self) -> u32 {
        self.info().clock_rate
    }

    /// The rate a person would name the codec by, as in MicroSIP's ini: 8000 for
    /// G.711, 16000 for G.722, 48000 for Opus.
    pub fn audio_rate(self) -> u32 {
        self.info().ini_rate
    }

    /// Channels as written in `a=rtpmap` (2 for Opus, which is still sent mono).
    pub fn channels(self) -> u8 {
        self.info().channels
    }

    /// The static payload type (RFC 3551), if the codec has one.
    pub fn static_payload_type(self) -> Option<u8> {
        self.info().static_pt
    }

    /// Parses one entry of MicroSIP's `audioCodecs` ini key, e.g. `PCMA/8000/1`,
    /// `G722/16000/1`, `opus/48000/2` (case-insensitive; rate and channels may be
    /// left out; G.722 is also accepted with its RTP rate 8000, Opus with 1
    /// channel). Unknown → `None`.
    pub fn from_ini_name(text: &str) -> Option<Codec> {
        let mut parts = text.trim().split('/');
        let name = parts.next()?.trim();
        let rate = match parts.next() {
            Some(r) => Some(r.trim().parse::<u32>().ok()?),
            None => None,
        };
        let channels = match parts.next() {
            Some(c) => Some(c.trim().parse::<u8>().ok()?),
            None => None,
        };
        if parts.next().is_some() {
            return None;
        }
        CODECS
            .iter()
            .find(|c| {
                c.name.eq_ignore_ascii_case(name)
                    && rate.is_none_or(|r| r == c.ini_rate || r == c.clock_rate)
                    && channels.is_none_or(|ch| c.accepted_channels.contains(&ch))
            })
            .map(|c| c.codec)
    }

    /// Parses MicroSIP's whole `audioCodecs` value (entries separated by spaces),
    /// keeping the order and skipping codecs this build does not have.
    pub fn list_from_ini(text: &str) -> Vec<Codec> {
        let mut out = Vec::new();
        for entry in text.split_whitespace() {
            if let Some(c) = Codec::from_ini_name(entry) {
                if !out.contains(&c) {
                    out.push(c);
                }
            }
        }
        out
    }

    /// The ini spelling (`PCMA/8000/1`, `G722/16000/1`, `opus/48000/2`).
    pub fn ini_name(self) -> String {
        let i = self.info();
        format!("{}/{}/{}", i.name, i.ini_rate, i.channels)
    }

    /// Whether an `a=rtpmap` entry describes this codec.
    fn matches_rtpmap(self, map: &RtpMap) -> bool {
        let i = self.info();
        map.encoding.eq_ignore_ascii_case(i.name)
            && map.clock_rate == i.clock_rate
            && i.accepted_channels.contains(&map.channels.unwrap_or(1))
    }

    /// The payload type our offers use when the codec has no static one.
    fn offer_payload_type(self) -> Option<u8> {
        self.info().offer_pt
    }

    /// Our `a=fmtp` parameters for this codec, if it has any.
    fn fmtp_params(self, local: &LocalMedia) -> Option<&'static str> {
        match self.info().fmtp {
            FmtpKind::None => None,
            FmtpKind::Opus if local.opus_stereo => {
                Some("useinbandfec=1;minptime=20;stereo=1;sprop-stereo=1")
            }
            FmtpKind::Opus => Some("useinbandfec=1;minptime=20;stereo=0;sprop-stereo=0"),
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a description could not be read or negotiated. The SIP layer answers
/// `488 Not Acceptable Here` to [`SdpError::NoCommonCodec`] and [`SdpError::NoAudio`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdpError {
    /// The text is not a session description (or an `m=` line is unreadable).
    Malformed(String),
    /// No `m=audio` stream over RTP/AVP (or RTP/AVPF) in the description.
    NoAudio,
    /// The audio stream offers no codec we have (or the answer picked none we offered).
    NoCommonCodec,
    /// Our SRTP is mandatory and the other side gave no usable `a=crypto` key.
    SrtpRequired,
    /// The offer asks for SRTP (`RTP/SAVP`) and SRTP is off for this account.
    SrtpNotEnabled,
}

impl fmt::Display for SdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SdpError::Malformed(why) => write!(f, "malformed SDP: {why}"),
            SdpError::NoAudio => f.write_str("no RTP/AVP audio stream in the SDP"),
            SdpError::NoCommonCodec => f.write_str("no common audio codec"),
            SdpError::SrtpRequired => {
                f.write_str("SRTP required and the other side gave no usable SRTP key (a=crypto)")
            }
            SdpError::SrtpNotEnabled => {
                f.write_str("the other side requires SRTP (RTP/SAVP) and SRTP is off")
            }
        }
    }
}

impl std::error::Error for SdpError {}

/// The `o=` line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    /// User name (`-` usually).
    pub username: String,
    /// Session id, as written.
    pub session_id: String,
    /// Session version, as written (changes when the description changes).
    pub version: String,
    /// Address, as written.
    pub address: String,
}

/// An `a=rtpmap` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    /// Payload type.
    pub payload_type: u8,
    /// Encoding name, as written.
    pub encoding: String,
    /// Clock rate.
    pub clock_rate: u32,
    /// Channels, when written.
    pub channels: Option<u8>,
}

/// An `a=fmtp` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fmtp {
    /// Payload type.
    pub payload_type: u8,
    /// Parameters, as written.
    pub params: String,
}

/// An `a=rtcp` attribute (RFC 3605).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rtcp {
    /// RTCP port.
    pub port: u16,
    /// RTCP address, when given.
    pub address: Option<IpAddr>,
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MediaDesc {
    /// Media type (`audio`, `video`, ...).
    pub media: String,
    /// Port (0: stream rejected or disabled).
    pub port: u16,
    /// Transport protocol (`RTP/AVP`, ...).
    pub protocol: String,
    /// Formats, as written (payload type numbers for RTP).
    pub formats: Vec<String>,
    /// Media-level `c=` address.
    pub connection: Option<IpAddr>,
    /// `a=rtpmap` entries.
    pub rtpmaps: Vec<RtpMap>,
    /// `a=fmtp` entries.
    pub fmtps: Vec<Fmtp>,
    /// `a=ptime`, in milliseconds.
    pub ptime: Option<u32>,
    /// Media-level direction attribute.
    pub direction: Option<Direction>,
    /// `a=rtcp`.
    pub rtcp: Option<Rtcp>,
    /// `a=rtcp-mux` (RFC 5761).
    pub rtcp_mux: bool,
    /// The `a=crypto` lines we can use (SDES, RFC 4568), in the writer's order;
    /// lines with an unknown suite or a bad key are left out.
    pub crypto: Vec<Crypto>,
    /// Media-level `a=ice-ufrag` (RFC 8839).
    pub ice_ufrag: Option<String>,
    /// Media-level `a=ice-pwd`.
    pub ice_pwd: Option<String>,
    /// The `a=candidate` lines we can use (UDP, IP literals), in order.
    pub candidates: Vec<Candidate>,
}

impl MediaDesc {
    /// The numeric formats (payload types), in order.
    pub(crate) fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        self.formats
            .iter()
            .filter_map(|f| f.parse::<u8>().ok())
            .filter(|pt| *pt <= 127)
    }

    /// The `a=rtpmap` for a payload type.
    pub fn rtpmap(&self, pt: u8) -> Option<&RtpMap> {
        self.rtpmaps.iter().find(|m| m.payload_type == pt)
    }

    /// Whether the transport is plain RTP we can speak.
    pub(crate) fn is_rtp_avp(&self) -> bool {
        ["RTP/AVP", "RTP/AVPF", "RTP/SAVP", "RTP/SAVPF"]
            .iter()
            .any(|p| self.protocol.eq_ignore_ascii_case(p))
    }

    /// Whether the profile is a secure one (`RTP/SAVP`, `RTP/SAVPF`): SRTP only.
    pub(crate) fn is_secure_profile(&self) -> bool {
        ["RTP/SAVP", "RTP/SAVPF"]
            .iter()
            .any(|p| self.protocol.eq_ignore_ascii_case(p))
    }

    /// The codec a payload type stands for here (rtpmap first, then static number).
    pub(crate) fn codec_of(&self, pt: u8) -> Option<Codec> {
        match self.rtpmap(pt) {
            Some(map) => Codec::all().find(|c| c.matches_rtpmap(map)),
            None => Codec::all().find(|c| c.static_payload_type() == Some(pt)),
        }
    }

    /// The payload type of telephone-event/8000, if listed.
    pub fn telephone_event(&self) -> Option<u8> {
        self.telephone_event_at(&[8000]).map(|(pt, _)| pt)
    }

    /// The telephone-event entry to use with an audio codec of RTP clock
    /// `clock_rate`: the one at that clock (RFC 4733 §2.1: events share the audio's
    /// clock), else the one at 8000 (most peers offer only that, Opus or not).
    /// Returns its payload type and clock rate.
    pub fn telephone_event_for(&self, clock_rate: u32) -> Option<(u8, u32)> {
        self.telephone_event_at(&[clock_rate, 8000])
    }

    /// The first telephone-event payload type at the first of `rates` listed.
    fn telephone_event_at(&self, rates: &[u32]) -> Option<(u8, u32)> {
        rates.iter().find_map(|&rate| {
            self.payload_types()
                .find(|pt| {
                    self.rtpmap(*pt).is_some_and(|m| {
                        m.encoding.eq_ignore_ascii_case("telephone-event") && m.clock_rate == rate
                    })
                })
                .map(|pt| (pt, rate))
        })
    }
}

/// A parsed session description.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionDesc {
    /// The `o=` line.
    pub origin: Option<Origin>,
    /// Session-level `c=` address.
    pub connection: Option<IpAddr>,
    /// Session-level direction attribute.
    pub direction: Option<Direction>,
    /// The `m=` sections, in order.
    pub media: Vec<MediaDesc>,
    /// Session-level `a=ice-ufrag` (RFC 8839).
    pub ice_ufrag: Option<String>,
    /// Session-level `a=ice-pwd`.
    pub ice_pwd: Option<String>,
    /// `a=ice-lite`: the writer is a lite ICE agent.
    pub ice_lite: bool,
}

impl SessionDesc {
    /// The address the first audio stream goes to (media level, else session
    /// level), unspecified ones (`0.0.0.0`, `::`) included: its family is the one
    /// our answer must use. `None` when the offer has no audio or no address.
    pub fn audio_connection(&self) -> Option<IpAddr> {
        let m = self.media.iter().find(|m| m.media == "audio")?;
        self.connection_of(m)
    }

    /// The ICE credentials and candidates of `m` (media level wins over session
    /// level); `None` when the writer does not do ICE for it.
    pub fn ice_of(&self, m: &MediaDesc) -> Option<(Credentials, Vec<Candidate>)> {
        let ufrag = m.ice_ufrag.as_ref().or(self.ice_ufrag.as_ref())?;
        let pwd = m.ice_pwd.as_ref().or(self.ice_pwd.as_ref())?;
        if m.candidates.is_empty() {
            return None;
        }
        Some((
            Credentials {
                ufrag: ufrag.clone(),
                pwd: pwd.clone(),
            },
            m.candidates.clone(),
        ))
    }

    /// The address media of `m` goes to (media level wins over session level).
    pub(crate) fn connection_of(&self, m: &MediaDesc) -> Option<IpAddr> {
        m.connection.or(self.connection)
    }

    /// The direction of `m` (media level wins, then session level, then sendrecv).
    pub(crate) fn direction_of(&self, m: &MediaDesc) -> Direction {
        m.direction.or(self.direction).unwrap_or_default()
    }

    /// Where RTP for `m` is sent: `None` when the port is 0, or the address is
    /// missing or unspecified (`0.0.0.0`, the old hold form).
    pub(crate) fn rtp_address_of(&self, m: &MediaDesc) -> Option<SocketAddr> {
        let ip = self.connection_of(m)?;
        if m.port == 0 || ip.is_unspecified() {
            return None;
        }
        Some(SocketAddr::new(ip, m.port))
    }

    /// Where RTCP for `m` is sent: the RTP address when `mux`, else `a=rtcp` (RFC
    /// 3605), else the RTP port + 1. `None` when RTP has no address.
    pub fn rtcp_address_of(&self, m: &MediaDesc, mux: bool) -> Option<SocketAddr> {
        let rtp = self.rtp_address_of(m)?;
        if mux {
            return Some(rtp);
        }
        match m.rtcp {
            Some(Rtcp { port, address }) if port != 0 => {
                let ip = address
                    .filter(|ip| !ip.is_unspecified())
                    .unwrap_or(rtp.ip());
                Some(SocketAddr::new(ip, port))
            }
            _ => Some(SocketAddr::new(rtp.ip(), rtp.port().checked_add(1)?)),
        }
    }
}

/// Parses a session description. Lenient: unknown lines and unreadable attributes are
/// skipped; only text with no `v=`/`m=` line at all, or an unreadable `m=` line, is an
/// error.
pub fn parse(text: &str) -> Result<SessionDesc, SdpError> {
    let mut desc = SessionDesc::default();
    let mut seen_version = false;
    for raw in text.lines() {
        let line = raw.trim_end_matches('\r').trim();
        let Some((kind, value)) = line.split_once('=') else {
            continue;
        };
        let kind = kind.trim();
        if kind.len() != 1 {
            continue;
        }
        match kind {
            "v" => seen_version = true,
            "o" => desc.origin = parse_origin(value),
            "c" => {
                let addr = parse_connection(value);
                match desc.media.last_mut() {
                    Some(m) => m.connection = addr,
                    None => desc.connection = addr,
                }
            }
            "m" => desc.media.push(parse_media_line(value)?),
            "a" => {
                let (name, arg) = match value.split_once(':') {
                    Some((n, a)) => (n.trim(), Some(a.trim())),
                    None => (value.trim(), None),
                };
                match desc.media.last_mut() {
                    Some(m) => apply_media_attribute(m, name, arg),
                    None => match (name, arg) {
                        ("ice-ufrag", Some(v)) => desc.ice_ufrag = Some(v.to_string()),
                        ("ice-pwd", Some(v)) => desc.ice_pwd = Some(v.to_string()),
                        ("ice-lite", _) => desc.ice_lite = true,
                        _ => {
                            if let Some(d) = Direction::from_attribute(name) {
                                desc.direction = Some(d);
                            }
                        }
                    },
                }
            }
            _ => {}
        }
    }
    if !seen_version && desc.media.is_empty() {
        return Err(SdpError::Malformed("no v= or m= line".into()));
    }
    Ok(desc)
}

fn parse_origin(value: &str) -> Option<Origin> {
    let f: Vec<&str> = value.split_whitespace().collect();
    if f.len() < 6 {
        return None;
    }
    Some(Origin {
        username: f[0].to_string(),
        session_id: f[1].to_string(),
        version: f[2].to_string(),
        address: f[5].to_string(),
    })
}

/// `IN IP4 192.0.2.1` (a multicast `/ttl` suffix is dropped; a host name gives `None`).
fn parse_connection(value: &str) -> Option<IpAddr> {
    let mut f = value.split_whitespace();
    let _net = f.next()?;
    let _family = f.next()?;
    let addr = f.next()?;
    let addr = addr.split('/').next().unwrap_or(addr);
    IpAddr::from_str(addr).ok()
}

fn parse_media_line(value: &str) -> Result<MediaDesc, SdpError> {
    let mut f = value.split_whitespace();
    let (Some(media), Some(port), Some(protocol)) = (f.next(), f.next(), f.next()) else {
        return Err(SdpError::Malformed(format!("m={value}")));
    };
    let port = port.split('/').next().unwrap_or(port);
    let port = port
        .parse::<u16>()
        .map_err(|_| SdpError::Malformed(format!("m={value}")))?;
    Ok(MediaDesc {
        media: media.to_string(),
        port,
        protocol: protocol.to_string(),
        formats: f.map(str::to_string).collect(),
        ..MediaDesc::default()
    })
}

fn apply_media_attribute(m: &mut MediaDesc, name: &str, arg: Option<&str>) {
    if let Some(d) = Direction::from_attribute(name) {
        m.direction = Some(d);
        return;
    }
    if name == "rtcp-mux" {
        m.rtcp_mux = true;
        return;
    }
    let Some(arg) = arg else { return };
    match name {
        "rtpmap" => {
            if let Some(map) = parse_rtpmap(arg) {
                m.rtpmaps.push(map);
            }
        }
        "fmtp" => {
            let (pt, params) = arg.split_once(char::is_whitespace).unwrap_or((arg, ""));
            if let Ok(pt) = pt.parse::<u8>() {
                m.fmtps.push(Fmtp {
                    payload_type: pt,
                    params: params.trim().to_string(),
                });
            }
        }
        "crypto" => {
            if let Some(c) = Crypto::parse(arg) {
                m.crypto.push(c);
            }
        }
        "ice-ufrag" => m.ice_ufrag = Some(arg.to_string()),
        "ice-pwd" => m.ice_pwd = Some(arg.to_string()),
        "candidate" => {
            if let Some(c) = Candidate::parse(arg) {
                m.candidates.push(c);
            }
        }
        "ptime" => {
            // Some peers write fractional values ("20.0"); keep the whole part.
            let whole = arg.split('.').next().unwrap_or(arg);
            if let Ok(p) = whole.trim().parse::<u32>() {
                if p > 0 {
                    m.ptime = Some(p);
                }
            }
        }
        "rtcp" => {
            let mut f = arg.split_whitespace();
            if let Some(Ok(port)) = f.next().map(str::parse::<u16>) {
                let rest: Vec<&str> = f.collect();
                let address = if rest.len() >= 3 {
                    IpAddr::from_str(rest[2]).ok()
                } else {
                    None
                };
                m.rtcp = Some(Rtcp { port, address });
            }
        }
        _ => {}
    }
}

/// `8 PCMA/8000[/1]`.
fn parse_rtpmap(arg: &str) -> Option<RtpMap> {
    let (pt, rest) = arg.split_once(char::is_whitespace)?;
    let payload_type = pt.trim().parse::<u8>().ok().filter(|pt| *pt <= 127)?;
    let mut f = rest.trim().split('/');
    let encoding = f.next()?.trim().to_string();
    let clock_rate = f.next()?.trim().parse::<u32>().ok()?;
    let channels = match f.next() {
        Some(c) => Some(c.trim().parse::<u8>().ok()?),
        None => None,
    };
    if encoding.is_empty() {
        return None;
    }
    Some(RtpMap {
        payload_type,
        encoding,
        clock_rate,
        channels,
    })
}

/// What we put in our offers and answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMedia {
    /// Our media address (written in `o=` and `c=`).
    pub ip: IpAddr,
    /// Our RTP port (from [`crate::MediaEngine::open`]).
    pub port: u16,
    /// Codecs, most preferred first.
    pub codecs: Vec<Codec>,
    /// Whether we offer/accept telephone-event (RFC 4733, events 0-16).
    pub telephone_event: bool,
    /// Our direction (`SendOnly` when we hold the call).
    pub direction: Direction,
    /// `o=` session id (stays the same for the dialog).
    pub session_id: u64,
    /// `o=` version (incremented on every new offer or answer that changes).
    pub version: u64,
    /// The ini's `opusStereo`: Opus `a=fmtp` says `stereo=1;sprop-stereo=1`
    /// instead of `0` (we still send mono; stereo received is mixed down).
    pub opus_stereo: bool,
    /// The ini's `forceCodec`: an answer takes the first of OUR codecs that the
    /// offer has; otherwise the offer's first codec that we have (the offerer's
    /// preference, as pjsip does by default).
    pub prefer_own_order: bool,
    /// The ini's `forceCodec` too ("send only the first codec"): offers list only
    /// our first codec.
    pub offer_first_only: bool,
    /// SRTP (SDES) for this call: `None` when off; else our key (drawn once per
    /// call, kept across re-INVITEs) and whether clear RTP is refused.
    pub srtp: Option<LocalSrtp>,
    /// ICE for this call (the account's `ICE=1`): `None` when off.
    pub ice: Option<LocalIce>,
}

/// Our side of ICE for one call (see [`LocalMedia::ice`]): drawn once per call,
/// kept across re-INVITEs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalIce {
    /// Our `ice-ufrag` and `ice-pwd`.
    pub credentials: Credentials,
    /// Our candidates (host, and server-reflexive when STUN answered).
    pub candidates: Vec<Candidate>,
    /// Our tie-breaker for role conflicts (random).
    pub tie_breaker: u64,
}

/// What the agent of a call is started with: both sides' ICE and our role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceParams {
    /// Ours (from [`LocalMedia::ice`]).
    pub local: LocalIce,
    /// The peer's `ice-ufrag` and `ice-pwd`.
    pub remote: Credentials,
    /// The peer's candidates.
    pub remote_candidates: Vec<Candidate>,
    /// We control (we offered, or the peer is `ice-lite`).
    pub controlling: bool,
}

/// Our side of SDES for one call (see [`LocalMedia::srtp`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSrtp {
    /// `true`: offer `RTP/SAVP` and refuse a peer without a usable key; `false`: offer
    /// `RTP/AVP` with `a=crypto` and fall back to clear RTP.
    pub mandatory: bool,
    /// Our master key, the one we send with.
    pub key: MasterKey,
}

/// The outcome of an offer/answer exchange: what the media engine needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The codec both sides use.
    pub codec: Codec,
    /// Its payload type on the wire.
    pub payload_type: u8,
    /// Where to send RTP: `None` when the stream is rejected (port 0) or the peer gave
    /// no usable address (`c=0.0.0.0`).
    pub remote: Option<SocketAddr>,
    /// The peer's direction as it wrote it.
    pub remote_direction: Direction,
    /// Our direction as agreed (what we wrote in the answer, or what our offer allows
    /// given the answer).
    pub local_direction: Direction,
    /// Payload type of telephone-event, when both sides have it.
    pub telephone_event: Option<u8>,
    /// The clock rate of that telephone-event (8000 usually; 48000 when a peer
    /// offers `telephone-event/48000` beside Opus).
    pub telephone_event_rate: u32,
    /// The peer's `a=ptime` (20 when absent). We send 20 ms frames for now.
    pub ptime_ms: u32,
    /// Where to send RTCP (see [`SessionDesc::rtcp_address_of`]); `None` with `remote`.
    pub rtcp: Option<SocketAddr>,
    /// Both sides agreed on `a=rtcp-mux` (RFC 5761): RTCP shares the RTP port.
    pub rtcp_mux: bool,
    /// SRTP, when both sides agreed on a suite and gave keys; `None`: clear RTP.
    pub srtp: Option<SrtpParams>,
    /// ICE, when both sides do it; `None`: media goes to `remote` as written.
    pub ice: Option<IceParams>,
}

impl Negotiated {
    /// Whether the peer holds the call (`sendonly`/`inactive`, or `c=0.0.0.0`).
    pub fn held_by_remote(&self) -> bool {
        !self.remote_direction.receives() || self.remote.is_none()
    }
}

fn ip_family(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    }
}

fn write_session_header(out: &mut String, local: &LocalMedia) {
    let fam = ip_family(local.ip);
    let _ = write!(
        out,
        "v=0\r\no=- {} {} IN {fam} {}\r\ns=microsip\r\nc=IN {fam} {}\r\nt=0 0\r\n",
        local.session_id, local.version, local.ip, local.ip
    );
}

/// Writes our offer: every codec of `local` in priority order (only the first with
/// `forceCodec`, [`LocalMedia::offer_first_only`]), telephone-event with `0-16`
/// when enabled, `a=ptime:20` and our direction.
pub fn offer(local: &LocalMedia) -> String {
    let mut out = String::with_capacity(320);
    write_session_header(&mut out, local);
    let mut pts: Vec<(u8, Codec)> = Vec::new();
    let taken = |pts: &[(u8, Codec)], pt: u8| {
        pt == TELEPHONE_EVENT_PT || pts.iter().any(|(have, _)| *have == pt)
    };
    let offered = if local.offer_first_only {
        &local.codecs[..local.codecs.len().min(1)]
    } else {
        &local.codecs[..]
    };
    for &c in offered {
        if pts.iter().any(|(_, have)| *have == c) {
            continue;
        }
        let pt = match (c.static_payload_type(), c.offer_payload_type()) {
            (Some(pt), _) => pt,
            (None, Some(pt)) if !taken(&pts, pt) => pt,
            (None, _) => {
                match (FIRST_DYNAMIC_PT..=127).find(|&pt| {
                    !taken(&pts, pt)
                        && !local
                            .codecs
                            .iter()
                            .any(|other| other.offer_payload_type() == Some(pt))
                }) {
                    Some(pt) => pt,
                    None => continue,
                }
            }
        };
        pts.push((pt, c));
    }
    let te = local.telephone_event.then_some(TELEPHONE_EVENT_PT);
    let profile = match &local.srtp {
        Some(s) if s.mandatory => "RTP/SAVP",
        _ => "RTP/AVP",
    };
    let _ = write!(out, "m=audio {} {profile}", local.port);
    for (pt, _) in &pts {
        let _ = write!(out, " {pt}");
    }
    if let Some(te) = te {
        let _ = write!(out, " {te}");
    }
    out.push_str("\r\n");
    for (pt, c) in &pts {
        write_rtpmap(&mut out, *pt, *c, local);
    }
    if let Some(te) = te {
        write_telephone_event(&mut out, te, 8000);
    }
    if let Some(srtp) = &local.srtp {
        for (tag, suite) in offer_crypto_tags() {
            write_crypto(&mut out, tag, suite, &srtp.key);
        }
    }
    if let Some(ice) = &local.ice {
        // RTCP on the RTP port (RFC 5761) is offered with ICE: one component if
        // the peer takes it; RTCP's own candidates (component 2) for one that
        // does not.
        out.push_str("a=rtcp-mux\r\n");
        write_ice(&mut out, ice);
    }
    let _ = write!(out, "a=ptime:20\r\na={}\r\n", local.direction);
    out
}

impl LocalIce {
    /// Ours for a stream that multiplexes RTCP (`mux`: component 1 only) or not.
    fn for_stream(&self, mux: bool) -> LocalIce {
        let mut ice = self.clone();
        if mux {
            ice.candidates.retain(|c| c.component == 1);
        }
        ice
    }
}

/// Our ICE lines (RFC 8839 section 5): credentials and candidates.
fn write_ice(out: &mut String, ice: &LocalIce) {
    let _ = write!(
        out,
        "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\n",
        ice.credentials.ufrag, ice.credentials.pwd
    );
    for c in &ice.candidates {
        let _ = write!(out, "a=candidate:{}\r\n", c.to_sdp());
    }
}

/// The tags of our offered `a=crypto` lines: 1, 2... for [`Suite::ALL`].
fn offer_crypto_tags() -> impl Iterator<Item = (u32, Suite)> {
    (1u32..).zip(Suite::ALL)
}

fn write_crypto(out: &mut String, tag: u32, suite: Suite, key: &MasterKey) {
    let line = Crypto {
        tag,
        suite,
        key: key.clone(),
    };
    let _ = write!(out, "a=crypto:{}\r\n", line.to_value());
}

/// The SRTP an answer gives to the offered stream `m`: the offer's first usable
/// `a=crypto` line when we do SRTP, `None` for clear RTP, or why the offer is refused.
fn answer_crypto(m: &MediaDesc, local: &LocalMedia) -> Result<Option<Crypto>, SdpError> {
    let secure = m.is_secure_profile();
    match &local.srtp {
        None if secure => Err(SdpError::SrtpNotEnabled),
        None => Ok(None),
        Some(ours) => match m.crypto.first() {
            Some(theirs) => Ok(Some(theirs.clone())),
            None if ours.mandatory || secure => Err(SdpError::SrtpRequired),
            None => Ok(None),
        },
    }
}

/// `a=rtpmap` for `c` under `pt`, and its `a=fmtp` when it has parameters.
fn write_rtpmap(out: &mut String, pt: u8, c: Codec, local: &LocalMedia) {
    if c.channels() == 1 {
        let _ = write!(out, "a=rtpmap:{pt} {}/{}\r\n", c.name(), c.clock_rate());
    } else {
        let _ = write!(
            out,
            "a=rtpmap:{pt} {}/{}/{}\r\n",
            c.name(),
            c.clock_rate(),
            c.channels()
        );
    }
    if let Some(params) = c.fmtp_params(local) {
        let _ = write!(out, "a=fmtp:{pt} {params}\r\n");
    }
}

fn write_telephone_event(out: &mut String, pt: u8, rate: u32) {
    let _ = write!(
        out,
        "a=rtpmap:{pt} telephone-event/{rate}\r\na=fmtp:{pt} 0-16\r\n"
    );
}

/// The first of our codecs (in our order) that `m` lists, with the payload type `m`
/// uses for it.
fn pick_codec(m: &MediaDesc, ours: &[Codec]) -> Option<(Codec, u8)> {
    ours.iter().find_map(|&c| {
        m.payload_types()
            .find(|&pt| m.codec_of(pt) == Some(c))
            .map(|pt| (c, pt))
    })
}

/// The codec an answer takes from `m`: our first that `m` lists when `local`
/// prefers its own order, else `m`'s first that we have.
fn pick_answer_codec(m: &MediaDesc, local: &LocalMedia) -> Option<(Codec, u8)> {
    if local.prefer_own_order {
        return pick_codec(m, &local.codecs);
    }
    m.payload_types().find_map(|pt| {
        m.codec_of(pt)
            .filter(|c| local.codecs.contains(c))
            .map(|c| (c, pt))
    })
}

fn write_rejected(out: &mut String, m: &MediaDesc) {
    let formats = if m.formats.is_empty() {
        "0".to_string()
    } else {
        m.formats.join(" ")
    };
    let _ = write!(out, "m={} 0 {} {}\r\n", m.media, m.protocol, formats);
}

/// Answers `offer` (RFC 3264 §6): the offer's first codec that we have (or, with
/// [`LocalMedia::prefer_own_order`], our first that the offer has), the offer's
/// payload type numbers kept, one `m=` line per offered line
/// (all but the chosen audio stream rejected with port 0), and our direction as the
/// reverse of the offer's, limited by `local.direction`.
pub fn answer(offer: &SessionDesc, local: &LocalMedia) -> Result<(String, Negotiated), SdpError> {
    let usable = |m: &MediaDesc| m.media.eq_ignore_ascii_case("audio") && m.is_rtp_avp();
    let mut chosen = None;
    let mut live_audio = false;
    let mut crypto_refusal = None;
    for (i, m) in offer.media.iter().enumerate() {
        if !usable(m) || m.port == 0 {
            continue;
        }
        live_audio = true;
        // A stream whose SRTP terms we cannot meet is skipped (an offer may carry
        // the same audio as RTP/SAVP and as RTP/AVP).
        let crypto = match answer_crypto(m, local) {
            Ok(c) => c,
            Err(e) => {
                crypto_refusal.get_or_insert(e);
                continue;
            }
        };
        if let Some((codec, pt)) = pick_answer_codec(m, local) {
            chosen = Some((i, codec, pt, crypto));
            break;
        }
    }
    let disabled_audio = offer.media.iter().position(|m| usable(m) && m.port == 0);
    if chosen.is_none() {
        if let Some(e) = crypto_refusal {
            return Err(e);
        }
        if live_audio {
            return Err(SdpError::NoCommonCodec);
        }
        if disabled_audio.is_none() {
            return Err(SdpError::NoAudio);
        }
    }

    let mut out = String::with_capacity(320);
    write_session_header(&mut out, local);
    let negotiated = match chosen {
        Some((index, codec, pt, crypto)) => {
            let m = &offer.media[index];
            let remote_direction = offer.direction_of(m);
            let local_direction = remote_direction.reversed().intersect(local.direction);
            let te = if local.telephone_event {
                m.telephone_event_for(codec.clock_rate())
            } else {
                None
            };
            // ICE when both do it; the full agent facing a lite one controls.
            let ice = local.ice.as_ref().zip(offer.ice_of(m)).map(
                |(ours, (remote, remote_candidates))| IceParams {
                    local: ours.for_stream(m.rtcp_mux),
                    remote,
                    remote_candidates,
                    controlling: offer.ice_lite,
                },
            );
            for (i, other) in offer.media.iter().enumerate() {
                if i != index {
                    write_rejected(&mut out, other);
                    continue;
                }
                let _ = write!(out, "m=audio {} {} {pt}", local.port, m.protocol);
                if let Some((te, _)) = te {
                    let _ = write!(out, " {te}");
                }
                out.push_str("\r\n");
                write_rtpmap(&mut out, pt, codec, local);
                if let Some((te, rate)) = te {
                    write_telephone_event(&mut out, te, rate);
                }
                // RFC 5761: an offered rtcp-mux is accepted (we demultiplex anyway).
                if m.rtcp_mux {
                    out.push_str("a=rtcp-mux\r\n");
                }
                if let (Some(theirs), Some(ours)) = (&crypto, &local.srtp) {
                    write_crypto(&mut out, theirs.tag, theirs.suite, &ours.key);
                }
                if let Some(params) = &ice {
                    write_ice(&mut out, &params.local);
                }
                let _ = write!(out, "a=ptime:20\r\na={local_direction}\r\n");
            }
            Negotiated {
                codec,
                payload_type: pt,
                remote: offer.rtp_address_of(m),
                remote_direction,
                local_direction,
                telephone_event: te.map(|(pt, _)| pt),
                telephone_event_rate: te.map_or(8000, |(_, rate)| rate),
                ptime_ms: m.ptime.unwrap_or(20),
                rtcp: offer.rtcp_address_of(m, m.rtcp_mux),
                rtcp_mux: m.rtcp_mux,
                srtp: crypto
                    .zip(local.srtp.as_ref())
                    .map(|(theirs, ours)| SrtpParams {
                        suite: theirs.suite,
                        local: ours.key.clone(),
                        remote: theirs.key,
                    }),
                ice,
            }
        }
        None => {
            // Every audio stream is disabled (port 0): answer with port 0 throughout.
            let index = disabled_audio.ok_or(SdpError::NoAudio)?;
            for m in &offer.media {
                write_rejected(&mut out, m);
            }
            let m = &offer.media[index];
            let (codec, payload_type) = pick_codec(m, &local.codecs)
                .or_else(|| {
                    local
                        .codecs
                        .first()
                        .map(|&c| (c, c.static_payload_type().unwrap_or(0)))
                })
                .ok_or(SdpError::NoCommonCodec)?;
            Negotiated {
                codec,
                payload_type,
                remote: None,
                remote_direction: Direction::Inactive,
                local_direction: Direction::Inactive,
                telephone_event: None,
                telephone_event_rate: 8000,
                ptime_ms: m.ptime.unwrap_or(20),
                rtcp: None,
                rtcp_mux: false,
                srtp: None,
                ice: None,
            }
        }
    };
    Ok((out, negotiated))
}

/// Reads the answer to our offer (made from `local`): the first payload type in the
/// answer that is one of our codecs, the peer's address and direction.
pub fn accept_answer(answer: &SessionDesc, local: &LocalMedia) -> Result<Negotiated, SdpError> {
    let m = answer
        .media
        .iter()
        .find(|m| m.media.eq_ignore_ascii_case("audio") && m.is_rtp_avp())
        .ok_or(SdpError::NoAudio)?;
    let in_answer_order = m.payload_types().find_map(|pt| {
        m.codec_of(pt)
            .filter(|c| local.codecs.contains(c))
            .map(|c| (c, pt))
    });
    if m.port == 0 {
        // The peer rejected the stream.
        let (codec, payload_type) = in_answer_order
            .or_else(|| {
                local
                    .codecs
                    .first()
                    .map(|&c| (c, c.static_payload_type().unwrap_or(0)))
            })
            .ok_or(SdpError::NoCommonCodec)?;
        return Ok(Negotiated {
            codec,
            payload_type,
            remote: None,
            remote_direction: Direction::Inactive,
            local_direction: Direction::Inactive,
            telephone_event: None,
            telephone_event_rate: 8000,
            ptime_ms: m.ptime.unwrap_or(20),
            rtcp: None,
            rtcp_mux: false,
            srtp: None,
            ice: None,
        });
    }
    let (codec, payload_type) = in_answer_order.ok_or(SdpError::NoCommonCodec)?;
    let srtp = match &local.srtp {
        None => None,
        Some(ours) => {
            // The answer's line must answer one of ours: same tag, same suite.
            let agreed = m
                .crypto
                .iter()
                .find(|c| offer_crypto_tags().any(|(tag, suite)| tag == c.tag && suite == c.suite));
            match agreed {
                Some(theirs) => Some(SrtpParams {
                    suite: theirs.suite,
                    local: ours.key.clone(),
                    remote: theirs.key.clone(),
                }),
                None if ours.mandatory || m.is_secure_profile() => {
                    return Err(SdpError::SrtpRequired)
                }
                None => None,
            }
        }
    };
    let remote_direction = answer.direction_of(m);
    let te = if local.telephone_event {
        m.telephone_event_for(codec.clock_rate())
    } else {
        None
    };
    Ok(Negotiated {
        codec,
        payload_type,
        remote: answer.rtp_address_of(m),
        remote_direction,
        local_direction: local.direction.intersect(remote_direction.reversed()),
        telephone_event: te.map(|(pt, _)| pt),
        telephone_event_rate: te.map_or(8000, |(_, rate)| rate),
        ptime_ms: m.ptime.unwrap_or(20),
        // We offer rtcp-mux only with ICE; a peer that muxes anyway is followed.
        rtcp: answer.rtcp_address_of(m, m.rtcp_mux),
        rtcp_mux: m.rtcp_mux,
        srtp,
        // We offered, so we control (RFC 8445 section 6.1.1).
        ice: local
            .ice
            .as_ref()
            .zip(answer.ice_of(m))
            .map(|(ours, (remote, remote_candidates))| IceParams {
                local: ours.for_stream(m.rtcp_mux),
                remote,
                remote_candidates,
                controlling: true,
            }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> LocalMedia {
        LocalMedia {
            ip: "192.0.2.20".parse().unwrap(),
            port: 4000,
            codecs: vec![Codec::Pcma, Codec::Pcmu],
            telephone_event: true,
            direction: Direction::SendRecv,
            session_id: 1234,
            version: 1,
            opus_stereo: false,
            prefer_own_order: true,
            offer_first_only: false,
            srtp: None,
            ice: None,
        }
    }

    const BARESIP: &str = "v=0\r\n\
o=- 1672387263 2340518893 IN IP4 192.168.1.50\r\n\
s=-\r\n\
c=IN IP4 192.168.1.50\r\n\
t=0 0\r\n\
m=audio 10226 RTP/AVP 96 0 8 101\r\n\
b=AS:128\r\n\
a=rtpmap:96 opus/48000/2\r\n\
a=fmtp:96 stereo=1;sprop-stereo=1\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=rtcp-mux\r\n\
a=label:1\r\n\
a=sendrecv\r\n\
a=ssrc:2993454562 cname:1b0a2e4a-5a6b-4d93-a1d2-a4b4e1c3f1a2\r\n";

    const MICROSIP: &str = "v=0\r\n\
o=- 3906623712 3906623712 IN IP4 10.0.0.5\r\n\
s=pjmedia\r\n\
b=AS:84\r\n\
t=0 0\r\n\
a=X-nat:0\r\n\
m=audio 4000 RTP/AVP 8 0 101\r\n\
c=IN IP4 10.0.0.5\r\n\
b=TIAS:64000\r\n\
a=rtcp:4001 IN IP4 10.0.0.5\r\n\
a=sendrecv\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ssrc:1052359839 cname:7b0e3b5b2c5d6a1e\r\n";

    const ASTERISK: &str = "v=0\r\n\
o=- 1708351442 1708351442 IN IP4 203.0.113.5\r\n\
s=Asterisk\r\n\
c=IN IP4 203.0.113.5\r\n\
t=0 0\r\n\
m=audio 18062 RTP/AVP 0 8 3 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:3 GSM/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=maxptime:150\r\n\
a=sendrecv\r\n";

    const LINPHONE: &str = "v=0\n\
o=alice 2275 3412 IN IP4 192.168.0.23\n\
s=Talk\n\
c=IN IP4 192.168.0.23\n\
t=0 0\n\
a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics\n\
m=audio 7078 RTP/AVP 96 97 98 0 8 18 101 99 100\n\
a=rtpmap:96 opus/48000/2\n\
a=fmtp:96 useinbandfec=1\n\
a=rtpmap:97 speex/16000\n\
a=fmtp:97 vbr=on\n\
a=rtpmap:98 speex/8000\n\
a=fmtp:98 vbr=on\n\
a=fmtp:18 annexb=yes\n\
a=rtpmap:101 telephone-event/48000\n\
a=rtpmap:99 telephone-event/16000\n\
a=rtpmap:100 telephone-event/8000\n\
a=rtcp-fb:* trr-int 1000\n\
a=rtcp-fb:* ccm tmmbr\n\
m=video 9078 RTP/AVP 96\n\
a=rtpmap:96 VP8/90000\n";

    #[test]
    fn direction_rules() {
        assert_eq!(Direction::SendOnly.reversed(), Direction::RecvOnly);
        assert_eq!(Direction::RecvOnly.reversed(), Direction::SendOnly);
        assert_eq!(Direction::Inactive.reversed(), Direction::Inactive);
        assert_eq!(Direction::SendRecv.reversed(), Direction::SendRecv);
        assert_eq!(
            Direction::SendRecv.intersect(Direction::SendOnly),
            Direction::SendOnly
        );
        assert_eq!(
            Direction::RecvOnly.intersect(Direction::SendOnly),
            Direction::Inactive
        );
    }

    #[test]
    fn ini_names() {
        assert_eq!(Codec::from_ini_name("PCMA/8000/1"), Some(Codec::Pcma));
        assert_eq!(Codec::from_ini_name("pcmu/8000/1"), Some(Codec::Pcmu));
        assert_eq!(Codec::from_ini_name("PCMU"), Some(Codec::Pcmu));
        assert_eq!(Codec::from_ini_name("PCMU/16000/1"), None);
        assert_eq!(Codec::from_ini_name("PCMU/8000/2"), None);
        assert_eq!(Codec::from_ini_name(""), None);
        assert_eq!(Codec::from_ini_name("PCMA/x"), None);
        assert_eq!(Codec::Pcma.ini_name(), "PCMA/8000/1");
    }

    #[test]
    fn offer_text() {
        let text = offer(&local());
        assert_eq!(
            text,
            "v=0\r\no=- 1234 1 IN IP4 192.0.2.20\r\ns=microsip\r\nc=IN IP4 192.0.2.20\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
        );
        let back = parse(&text).unwrap();
        assert_eq!(back.media.len(), 1);
        assert_eq!(back.media[0].port, 4000);
        assert_eq!(back.media[0].telephone_event(), Some(101));
        let mut held = local();
        held.direction = Direction::SendOnly;
        held.telephone_event = false;
        held.ip = "2001:db8::1".parse().unwrap();
        let text = offer(&held);
        assert!(text.contains("c=IN IP6 2001:db8::1\r\n"));
        assert!(text.contains("m=audio 4000 RTP/AVP 8 0\r\n"));
        assert!(text.ends_with("a=sendonly\r\n"));
        assert!(!text.contains("telephone-event"));
    }

    #[test]
    fn parse_microsip_offer() {
        let d = parse(MICROSIP).unwrap();
        assert_eq!(d.connection, None);
        let m = &d.media[0];
        assert_eq!(m.connection, Some("10.0.0.5".parse().unwrap()));
        assert_eq!(
            m.rtcp,
            Some(Rtcp {
                port: 4001,
                address: Some("10.0.0.5".parse().unwrap())
            })
        );
        assert_eq!(d.rtp_address_of(m), Some("10.0.0.5:4000".parse().unwrap()));
        assert_eq!(d.origin.as_ref().unwrap().version, "3906623712");
        assert_eq!(
            m.fmtps,
            vec![Fmtp {
                payload_type: 101,
                params: "0-16".into()
            }]
        );
    }

    #[test]
    fn answer_baresip_prefers_our_order() {
        let d = parse(BARESIP).unwrap();
        let (text, n) = answer(&d, &local()).unwrap();
        assert_eq!(n.codec, Codec::Pcma);
        assert_eq!(n.payload_type, 8);
        assert_eq!(n.telephone_event, Some(101));
        assert_eq!(n.remote, Some("192.168.1.50:10226".parse().unwrap()));
        assert_eq!(n.local_direction, Direction::SendRecv);
        assert_eq!(n.remote_direction, Direction::SendRecv);
        assert_eq!(n.ptime_ms, 20);
        assert!(text.contains("m=audio 4000 RTP/AVP 8 101\r\n"), "{text}");
        assert!(text.contains("a=rtpmap:8 PCMA/8000\r\n"));
        assert!(text.contains("a=fmtp:101 0-16\r\n"));
        assert!(text.ends_with("a=sendrecv\r\n"));
        // baresip offered rtcp-mux: accepted, RTCP goes to its RTP port.
        assert!(text.contains("a=rtcp-mux\r\n"), "{text}");
        assert!(n.rtcp_mux);
        assert_eq!(n.rtcp, n.remote);
        // With PCMU first we take PCMU even though the offer lists PCMA too.
        let mut l = local();
        l.codecs = vec![Codec::Pcmu, Codec::Pcma];
        let (_, n) = answer(&d, &l).unwrap();
        assert_eq!((n.codec, n.payload_type), (Codec::Pcmu, 0));
    }

    #[test]
    fn answer_asterisk_and_microsip() {
        let (_, n) = answer(&parse(ASTERISK).unwrap(), &local()).unwrap();
        assert_eq!((n.codec, n.payload_type), (Codec::Pcma, 8));
        assert_eq!(n.remote, Some("203.0.113.5:18062".parse().unwrap()));
        let (text, n) = answer(&parse(MICROSIP).unwrap(), &local()).unwrap();
        assert_eq!((n.codec, n.telephone_event), (Codec::Pcma, Some(101)));
        assert!(text.contains("c=IN IP4 192.0.2.20\r\n"));
        // No telephone-event on our side: none in the answer.
        let mut l = local();
        l.telephone_event = false;
        let (text, n) = answer(&parse(ASTERISK).unwrap(), &l).unwrap();
        assert_eq!(n.telephone_event, None);
        assert!(!text.contains("telephone-event"));
    }

    #[test]
    fn rtcp_addresses() {
        // MicroSIP names its RTCP port and address; no mux, none in our answer.
        let (text, n) = answer(&parse(MICROSIP).unwrap(), &local()).unwrap();
        assert!(!n.rtcp_mux);
        assert!(!text.contains("rtcp-mux"));
        assert_eq!(n.rtcp, Some("10.0.0.5:4001".parse().unwrap()));
        // Asterisk says nothing: the RTP port + 1.
        let (_, n) = answer(&parse(ASTERISK).unwrap(), &local()).unwrap();
        assert_eq!(n.rtcp, Some("203.0.113.5:18063".parse().unwrap()));
        // a=rtcp with a port only keeps the connection address.
        let d = parse(&ASTERISK.replace("a=rtpmap:0 ", "a=rtcp:9000\r\na=rtpmap:0 ")).unwrap();
        let (_, n) = answer(&d, &local()).unwrap();
        assert_eq!(n.rtcp, Some("203.0.113.5:9000".parse().unwrap()));
        // Our offer does not ask for mux; an answer that muxes anyway is followed.
        assert!(!offer(&local()).contains("rtcp-mux"));
        let a = parse(&ASTERISK.replace("a=rtpmap:0 ", "a=rtcp-mux\r\na=rtpmap:0 ")).unwrap();
        let n = accept_answer(&a, &local()).unwrap();
        assert!(n.rtcp_mux);
        assert_eq!(n.rtcp, Some("203.0.113.5:18062".parse().unwrap()));
        let n = accept_answer(&parse(ASTERISK).unwrap(), &local()).unwrap();
        assert_eq!(
            (n.rtcp_mux, n.rtcp),
            (false, Some("203.0.113.5:18063".parse().unwrap()))
        );
        // Held with c=0.0.0.0: no RTCP address either.
        let held = parse(&ASTERISK.replace("c=IN IP4 203.0.113.5", "c=IN IP4 0.0.0.0")).unwrap();
        assert_eq!(accept_answer(&held, &local()).unwrap().rtcp, None);
    }

    #[test]
    fn answer_linphone_keeps_its_numbers_and_rejects_video() {
        let d = parse(LINPHONE).unwrap();
        assert_eq!(d.media.len(), 2);
        let (text, n) = answer(&d, &local()).unwrap();
        assert_eq!(n.codec, Codec::Pcma);
        // telephone-event/8000 is 100 in this offer: keep 100.
        assert_eq!(n.telephone_event, Some(100));
        assert!(text.contains("m=audio 4000 RTP/AVP 8 100\r\n"), "{text}");
        assert!(text.contains("a=rtpmap:100 telephone-event/8000\r\na=fmtp:100 0-16\r\n"));
        assert!(text.contains("m=video 0 RTP/AVP 96\r\n"));
        // Order of m= lines is the offer's.
        assert!(text.find("m=audio").unwrap() < text.find("m=video").unwrap());
    }

    #[test]
    fn dynamic_payload_type_for_a_static_codec() {
        let offer_text = "v=0\r\nc=IN IP4 198.51.100.1\r\nm=audio 5004 RTP/AVP 112\r\na=rtpmap:112 pcmu/8000/1\r\n";
        let (text, n) = answer(&parse(offer_text).unwrap(), &local()).unwrap();
        assert_eq!((n.codec, n.payload_type), (Codec::Pcmu, 112));
        assert!(text.contains("m=audio 4000 RTP/AVP 112\r\na=rtpmap:112 PCMU/8000\r\n"));
        // A static number remapped to something else is not that codec.
        let offer_text =
            "v=0\r\nc=IN IP4 198.51.100.1\r\nm=audio 5004 RTP/AVP 8\r\na=rtpmap:8 G729/8000\r\n";
        assert_eq!(
            answer(&parse(offer_text).unwrap(), &local()).unwrap_err(),
            SdpError::NoCommonCodec
        );
    }

    #[test]
    fn hold_forms() {
        let sendonly = BARESIP.replace("a=sendrecv", "a=sendonly");
        let (text, n) = answer(&parse(&sendonly).unwrap(), &local()).unwrap();
        assert_eq!(n.remote_direction, Direction::SendOnly);
        assert_eq!(n.local_direction, Direction::RecvOnly);
        assert!(n.held_by_remote());
        assert!(text.ends_with("a=recvonly\r\n"));

        let inactive = BARESIP.replace("a=sendrecv", "a=inactive");
        let (text, n) = answer(&parse(&inactive).unwrap(), &local()).unwrap();
        assert_eq!(n.local_direction, Direction::Inactive);
        assert!(text.ends_with("a=inactive\r\n"));

        // Session-level direction applies when the media has none; media level wins.
        let session_level =
            "v=0\r\nc=IN IP4 198.51.100.1\r\na=sendonly\r\nm=audio 5004 RTP/AVP 0\r\n";
        let (_, n) = answer(&parse(session_level).unwrap(), &local()).unwrap();
        assert_eq!(n.remote_direction, Direction::SendOnly);
        let both = "v=0\r\nc=IN IP4 198.51.100.1\r\na=sendonly\r\nm=audio 5004 RTP/AVP 0\r\na=sendrecv\r\n";
        let (_, n) = answer(&parse(both).unwrap(), &local()).unwrap();
        assert_eq!(n.remote_direction, Direction::SendRecv);

        // RFC 2543 hold: c=0.0.0.0.
        let zero = BARESIP.replace("c=IN IP4 192.168.1.50", "c=IN IP4 0.0.0.0");
        let (_, n) = answer(&parse(&zero).unwrap(), &local()).unwrap();
        assert_eq!(n.remote, None);
        assert!(n.held_by_remote());

        // We hold (our direction sendonly) and they offer sendrecv: we answer sendonly.
        let mut l = local();
        l.direction = Direction::SendOnly;
        let (text, n) = answer(&parse(BARESIP).unwrap(), &l).unwrap();
        assert_eq!(n.local_direction, Direction::SendOnly);
        assert!(text.ends_with("a=sendonly\r\n"));
    }

    #[test]
    fn port_zero_stream_is_rejected() {
        let disabled = ASTERISK.replace("m=audio 18062", "m=audio 0");
        let (text, n) = answer(&parse(&disabled).unwrap(), &local()).unwrap();
        assert!(text.contains("m=audio 0 RTP/AVP 0 8 3 101\r\n"), "{text}");
        assert_eq!(n.remote, None);
        assert_eq!(n.local_direction, Direction::Inactive);
        // A second audio stream is rejected while the first is taken.
        let two = format!("{ASTERISK}m=audio 18064 RTP/AVP 0\r\n");
        let (text, n) = answer(&parse(&two).unwrap(), &local()).unwrap();
        assert_eq!(n.remote, Some("203.0.113.5:18062".parse().unwrap()));
        assert!(text.contains("m=audio 0 RTP/AVP 0\r\n"));
    }

    fn with_srtp(mandatory: bool) -> LocalMedia {
        LocalMedia {
            srtp: Some(LocalSrtp {
                mandatory,
                key: MasterKey::from_bytes([9; 30]),
            }),
            ..local()
        }
    }

    const PEER_KEY: &str = "4fl6DT4Bi+DWT6MsBt5BOQ7Gda1Jiv7rtpYLOqvm";

    fn peer_sdp(profile: &str, crypto: &str) -> String {
        format!(
            "v=0\r\nc=IN IP4 198.51.100.1\r\nm=audio 5004 {profile} 0 8\r\n\
             a=rtpmap:0 PCMU/8000\r\n{crypto}a=sendrecv\r\n"
        )
    }

    #[test]
    fn srtp_offers_by_policy() {
        let ours = MasterKey::from_bytes([9; 30]).to_base64();
        let optional = offer(&with_srtp(false));
        assert!(
            optional.contains("m=audio 4000 RTP/AVP 8 0 101\r\n"),
            "{optional}"
        );
        assert!(optional.contains(&format!(
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{ours}\r\n\
             a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{ours}\r\n"
        )));
        assert!(offer(&with_srtp(true)).contains("m=audio 4000 RTP/SAVP 8 0 101\r\n"));
        assert!(!offer(&local()).contains("a=crypto"));
    }

    #[test]
    fn srtp_answers_by_policy() {
        let line = format!("a=crypto:3 AES_CM_128_HMAC_SHA1_32 inline:{PEER_KEY}\r\n");
        let savp = peer_sdp("RTP/SAVP", &line);
        let (text, n) = answer(&parse(&savp).unwrap(), &with_srtp(true)).unwrap();
        assert!(text.contains("m=audio 4000 RTP/SAVP 8\r\n"), "{text}");
        let ours = MasterKey::from_bytes([9; 30]).to_base64();
        assert!(text.contains(&format!(
            "a=crypto:3 AES_CM_128_HMAC_SHA1_32 inline:{ours}\r\n"
        )));
        let srtp = n.srtp.unwrap();
        assert_eq!(srtp.suite, Suite::AesCm128HmacSha1_32);
        assert_eq!(srtp.remote, MasterKey::from_base64(PEER_KEY).unwrap());
        // Best effort (RTP/AVP with a key): SRTP when we have it, clear when off.
        let avp = peer_sdp("RTP/AVP", &line);
        let (text, n) = answer(&parse(&avp).unwrap(), &with_srtp(false)).unwrap();
        assert!(text.contains("m=audio 4000 RTP/AVP 8\r\n") && n.srtp.is_some());
        let (text, n) = answer(&parse(&avp).unwrap(), &local()).unwrap();
        assert!(!text.contains("a=crypto") && n.srtp.is_none());
        // No usable key.
        let clear = peer_sdp("RTP/AVP", "");
        let bad_key = peer_sdp(
            "RTP/SAVP",
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ=\r\na=crypto:2 F8_128_HMAC_SHA1_80 inline:x\r\n",
        );
        let refuse = |sdp: &str, l: &LocalMedia| answer(&parse(sdp).unwrap(), l).unwrap_err();
        assert_eq!(refuse(&clear, &with_srtp(true)), SdpError::SrtpRequired);
        assert_eq!(refuse(&bad_key, &with_srtp(false)), SdpError::SrtpRequired);
        assert_eq!(refuse(&savp, &local()), SdpError::SrtpNotEnabled);
        let (text, n) = answer(&parse(&clear).unwrap(), &with_srtp(false)).unwrap();
        assert!(!text.contains("a=crypto") && n.srtp.is_none());
    }

    #[test]
    fn srtp_answers_to_our_offer() {
        let tag2 = format!("a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{PEER_KEY}\r\n");
        let n = accept_answer(
            &parse(&peer_sdp("RTP/SAVP", &tag2)).unwrap(),
            &with_srtp(true),
        )
        .unwrap();
        assert_eq!(n.srtp.map(|s| s.suite), Some(Suite::AesCm128HmacSha1_32));
        // A tag we did not offer with that suite, or no key at all.
        let wrong = format!("a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:{PEER_KEY}\r\n");
        let accept = |sdp: &str, l: &LocalMedia| accept_answer(&parse(sdp).unwrap(), l);
        assert_eq!(
            accept(&peer_sdp("RTP/AVP", &wrong), &with_srtp(true)).unwrap_err(),
            SdpError::SrtpRequired
        );
        assert_eq!(
            accept(&peer_sdp("RTP/AVP", ""), &with_srtp(true)).unwrap_err(),
            SdpError::SrtpRequired
        );
        assert_eq!(
            accept(&peer_sdp("RTP/AVP", ""), &with_srtp(false))
                .unwrap()
                .srtp,
            None
        );
    }

    #[test]
    fn no_common_codec_and_no_audio() {
        let g729 = "v=0\r\nc=IN IP4 198.51.100.1\r\nm=audio 5004 RTP/AVP 18 101\r\na=rtpmap:18 G729/8000\r\na=rtpmap:101 telephone-event/8000\r\n";
        assert_eq!(
            answer(&parse(g729).unwrap(), &local()).unwrap_err(),
            SdpError::NoCommonCodec
        );
        let video = "v=0\r\nc=IN IP4 198.51.100.1\r\nm=video 5004 RTP/AVP 96\r\n";
        assert_eq!(
            answer(&parse(video).unwrap(), &local()).unwrap_err(),
            SdpError::NoAudio
        );
        let srtp = "v=0\r\nc=IN IP4 198.51.100.1\r\nm=audio 5004 RTP/SAVP 0\r\n";
        assert_eq!(
            answer(&parse(srtp).unwrap(), &local()).unwrap_err(),
            SdpError::SrtpNotEnabled
        );
        let mut none = local();
        none.codecs.clear();
        assert_eq!(
            answer(&parse(ASTERISK).unwrap(), &none).unwrap_err(),
            SdpError::NoCommonCodec
        );
    }

    #[test]
    fn accept_answers() {
        let l = local();
        let ans = "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n\
m=audio 30000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=ptime:30\r\na=recvonly\r\n";
        let n = accept_answer(&parse(ans).unwrap(), &l).unwrap();
        assert_eq!((n.codec, n.payload_type), (Codec::Pcmu, 0));
        assert_eq!(n.remote, Some("198.51.100.7:30000".parse().unwrap()));
        assert_eq!(n.remote_direction, Direction::RecvOnly);
        assert_eq!(n.local_direction, Direction::SendOnly);
        assert_eq!(n.telephone_event, Some(101));
        assert_eq!(n.ptime_ms, 30);
        assert!(!n.held_by_remote());

        let mut only_pcma = l.clone();
        only_pcma.codecs = vec![Codec::Pcma];
        assert_eq!(
            accept_answer(&parse(ans).unwrap(), &only_pcma).unwrap_err(),
            SdpError::NoCommonCodec
        );

        let rejected = ans.replace("m=audio 30000", "m=audio 0");
        let n = accept_answer(&parse(&rejected).unwrap(), &l).unwrap();
        assert_eq!(n.remote, None);
        assert_eq!(n.local_direction, Direction::Inactive);

        // Our own offer, read back as if it were the answer.
        let n = accept_answer(&parse(&offer(&l)).unwrap(), &l).unwrap();
        assert_eq!((n.codec, n.payload_type), (Codec::Pcma, 8));
        assert_eq!(n.local_direction, Direction::SendRecv);
    }

    #[test]
    fn lenient_parsing() {
        let messy = "v=0\n  \nnonsense\nx\n=\nzz=1\nc=IN IP4 example.com\nm=audio 49170/2 RTP/AVP 0\nc=IN IP4 224.2.1.1/127\na=rtpmap:bad\na=rtpmap:0\na=ptime:20.0\na=fmtp:x y\na=rtcp:abc\na=sendonly\n";
        let d = parse(messy).unwrap();
        assert_eq!(d.connection, None);
        let m = &d.media[0];
        assert_eq!(m.port, 49170);
        assert_eq!(m.connection, Some("224.2.1.1".parse().unwrap()));
        assert!(m.rtpmaps.is_empty());
        assert_eq!(m.ptime, Some(20));
        assert!(m.fmtps.is_empty());
        assert_eq!(m.rtcp, None);
        assert_eq!(m.direction, Some(Direction::SendOnly));

        assert!(matches!(parse(""), Err(SdpError::Malformed(_))));
        assert!(matches!(parse("hello world"), Err(SdpError::Malformed(_))));
        assert!(matches!(
            parse("v=0\nm=audio x RTP/AVP 0\n"),
            Err(SdpError::Malformed(_))
        ));
        assert!(matches!(
            parse("v=0\nm=audio\n"),
            Err(SdpError::Malformed(_))
        ));
        // No c= anywhere: no remote address, answer still given.
        let (_, n) = answer(&parse("v=0\nm=audio 5000 RTP/AVP 8\n").unwrap(), &local()).unwrap();
        assert_eq!(n.remote, None);
        // IPv6.
        let v6 = "v=0\nc=IN IP6 2001:db8::5\nm=audio 5000 RTP/AVP 0\n";
        let (_, n) = answer(&parse(v6).unwrap(), &local()).unwrap();
        assert_eq!(n.remote, Some("[2001:db8::5]:5000".parse().unwrap()));
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"vocmat=:/ \r\n0123456789.IPN4audioRTPAVsendrcvinactive-";
        let every = LocalMedia {
            codecs: Codec::all().collect(),
            ..local()
        };
        let mut bytes = Vec::new();
        for round in 0..20_000 {
            bytes.clear();
            let len = (next() % 300) as usize;
            for _ in 0..len {
                let r = next();
                bytes.push(if round % 2 == 0 {
                    r as u8
                } else {
                    alphabet[(r % alphabet.len() as u64) as usize]
                });
            }
            let text = String::from_utf8_lossy(&bytes);
            if let Ok(d) = parse(&text) {
                let _ = answer(&d, &local());
                let _ = accept_answer(&d, &local());
                let _ = answer(&d, &every);
            }
        }
        // Mutations of real offers.
        for base in [BARESIP, MICROSIP, ASTERISK, LINPHONE] {
            for _ in 0..2_000 {
                let mut b = base.as_bytes().to_vec();
                for _ in 0..4 {
                    let i = (next() % b.len() as u64) as usize;
                    b[i] = next() as u8;
                }
                let cut = (next() % (b.len() as u64 + 1)) as usize;
                let text = String::from_utf8_lossy(&b[..cut]);
                if let Ok(d) = parse(&text) {
                    let _ = answer(&d, &local());
                    let _ = accept_answer(&d, &local());
                    let _ = answer(&d, &every);
                    let _ = accept_answer(&d, &every);
                }
            }
        }
    }
    /// baresip 1.0 with its opus, g722 and g711 modules.
    const BARESIP_WIDEBAND: &str = "v=0\r\n\
o=- 2890844526 2890844526 IN IP4 127.0.0.1\r\n\
s=-\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
m=audio 10300 RTP/AVP 96 9 0 8 101\r\n\
b=AS:96\r\n\
a=rtpmap:96 opus/48000/2\r\n\
a=fmtp:96 stereo=1;sprop-stereo=1\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=rtcp-mux\r\n\
a=sendrecv\r\n";

    /// MicroSIP (pjsip) with `audioCodecs=opus/48000/2 G722/16000/1 PCMA/8000/1
    /// PCMU/8000/1`: Opus on pjsip's dynamic number, G.722 without an rtpmap clock
    /// surprise.
    const MICROSIP_OPUS: &str = "v=0\r\n\
o=- 3906700000 3906700000 IN IP4 10.0.0.5\r\n\
s=pjmedia\r\n\
b=AS:117\r\n\
t=0 0\r\n\
a=X-nat:0\r\n\
m=audio 4002 RTP/AVP 120 9 8 0 101\r\n\
c=IN IP4 10.0.0.5\r\n\
b=TIAS:96000\r\n\
a=rtcp:4003 IN IP4 10.0.0.5\r\n\
a=sendrecv\r\n\
a=rtpmap:120 opus/48000/2\r\n\
a=fmtp:120 useinbandfec=1\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ssrc:1052359840 cname:7b0e3b5b2c5d6a1f\r\n";

    fn wideband_local(codecs: &[Codec]) -> LocalMedia {
        LocalMedia {
            codecs: codecs.to_vec(),
            ..local()
        }
    }

    #[test]
    fn wideband_ini_names() {
        for name in [
            "opus/48000/2",
            "OPUS/48000/2",
            "opus/48000/1",
            "opus/48000",
            "Opus",
        ] {
            assert_eq!(Codec::from_ini_name(name), Some(Codec::Opus), "{name}");
        }
        for name in ["G722/16000/1", "g722/16000/1", "G722/8000/1", "G722"] {
            assert_eq!(Codec::from_ini_name(name), Some(Codec::G722), "{name}");
        }
        for name in [
            "opus/16000/2",
            "opus/48000/3",
            "G722/16000/2",
            "G722/32000/1",
            "G729/8000/1",
        ] {
            assert_eq!(Codec::from_ini_name(name), None, "{name}");
        }
        assert_eq!(
            Codec::list_from_ini("opus/48000/2 G722/16000/1 PCMA/8000/1 PCMU/8000/1 G729/8000/1"),
            vec![Codec::Opus, Codec::G722, Codec::Pcma, Codec::Pcmu]
        );
        assert_eq!(
            Codec::list_from_ini("PCMU/8000/1 opus/48000/2 OPUS/48000/2"),
            vec![Codec::Pcmu, Codec::Opus]
        );
        assert_eq!(Codec::G722.ini_name(), "G722/16000/1");
        assert_eq!(Codec::Opus.ini_name(), "opus/48000/2");
        assert_eq!(Codec::G722.clock_rate(), 8000);
        assert_eq!(Codec::G722.static_payload_type(), Some(9));
        assert_eq!(Codec::Opus.static_payload_type(), None);
        assert_eq!(
            Codec::all().collect::<Vec<_>>(),
            vec![Codec::Pcmu, Codec::Pcma, Codec::G722, Codec::Opus]
        );
    }

    #[test]
    fn wideband_offer_text() {
        let l = wideband_local(&[Codec::Opus, Codec::G722, Codec::Pcma, Codec::Pcmu]);
        let text = offer(&l);
        assert_eq!(
            text,
            "v=0\r\no=- 1234 1 IN IP4 192.0.2.20\r\ns=microsip\r\nc=IN IP4 192.0.2.20\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 111 9 8 0 101\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 useinbandfec=1;minptime=20;stereo=0;sprop-stereo=0\r\n\
a=rtpmap:9 G722/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
        );
        // Read back: every codec on its number.
        let m = &parse(&text).unwrap().media[0];
        assert_eq!(m.codec_of(111), Some(Codec::Opus));
        assert_eq!(m.codec_of(9), Some(Codec::G722));
        // opusStereo.
        let stereo = LocalMedia {
            opus_stereo: true,
            ..l.clone()
        };
        assert!(offer(&stereo)
            .contains("a=fmtp:111 useinbandfec=1;minptime=20;stereo=1;sprop-stereo=1\r\n"));
        // forceCodec (the engine keeps only the first): one codec, still with fmtp.
        let forced = wideband_local(&[Codec::G722]);
        let text = offer(&forced);
        assert!(text.contains("m=audio 4000 RTP/AVP 9 101\r\na=rtpmap:9 G722/8000\r\n"));
        assert!(!text.contains("a=fmtp:9"));
        // Our own offer accepted back as an answer.
        let n = accept_answer(&parse(&offer(&l)).unwrap(), &l).unwrap();
        assert_eq!((n.codec, n.payload_type), (Codec::Opus, 111));
    }

    #[test]
    fn answer_baresip_wideband_by_our_priority() {
        let d = parse(BARESIP_WIDEBAND).unwrap();
        // Opus first for us: the offerer's 96 is kept, with our fmtp.
        let (text, n) = answer(
            &d,
            &wideband_local(&[Codec::Opus, Codec::G722, Codec::Pcmu]),
        )
        .unwrap();
        assert_eq!((n.codec, n.payload_type), (Codec::Opus, 96));
        assert_eq!(n.telephone_event, Some(101));
        assert!(text.contains("m=audio 4000 RTP/AVP 96 101\r\n"), "{text}");
        assert!(text.contains(
            "a=rtpmap:96 opus/48000/2\r\na=fmtp:96 useinbandfec=1;minptime=20;stereo=0;sprop-stereo=0\r\n"
        ));
        assert!(!text.contains("a=rtpmap:111"));
        // G.722 first: 9, RTP clock 8000 in the answer.
        let (text, n) = answer(
            &d,
            &wideband_local(&[Codec::G722, Codec::Opus, Codec::Pcmu]),
        )
        .unwrap();
        assert_eq!((n.codec, n.payload_type), (Codec::G722, 9));
        assert!(text.contains("m=audio 4000 RTP/AVP 9 101\r\na=rtpmap:9 G722/8000\r\n"));
        assert!(!text.contains("opus"));
        // PCMU first (even though the offer lists opus and G.722 before it).
        let (_, n) = answer(&d, &wideband_local(&[Codec::Pcmu, Codec::Opus])).unwrap();
        assert_eq!((n.codec, n.payload_type), (Codec::Pcmu, 0));
        // Only codecs the offer lacks: 488.
        let no_g711 = BARESIP_WIDEBAND
            .replace("96 9 0 8 101", "96 101")
            .replace("a=rtpmap:9 G722/8000\r\n", "");
        assert_eq!(
            answer(
                &parse(&no_g711).unwrap(),
                &wideband_local(&[Codec::G722, Codec::Pcma])
            )
            .unwrap_err(),
            SdpError::NoCommonCodec
        );
    }

    #[test]
    fn answer_microsip_opus_first() {
        let d = parse(MICROSIP_OPUS).unwrap();
        let m = &d.media[0];
        assert_eq!(m.codec_of(120), Some(Codec::Opus));
        assert_eq!(m.codec_of(9), Some(Codec::G722));
        // MicroSIP's default order on our side too.
        let ours = Codec::list_from_ini("opus/48000/2 G722/16000/1 PCMA/8000/1 PCMU/8000/1");
        let (text, n) = answer(&d, &wideband_local(&ours)).unwrap();
        assert_eq!((n.codec, n.payload_type), (Codec::Opus, 120));
        assert_eq!(n.remote, Some("10.0.0.5:4002".parse().unwrap()));
        assert!(text
            .contains("m=audio 4000 RTP/AVP 120 101\r\na=rtpmap:120 opus/48000/2\r\na=fmtp:120 "));
        // The old ini default (G.711 only) still answers PCMA.
        let (_, n) = answer(&d, &local()).unwrap();
        assert_eq!((n.codec, n.payload_type), (Codec::Pcma, 8));
        // Linphone's opus on 96, with its telephone-event at Opus's clock (101 at
        // 48000; 100 at 8000 is there too).
        let (_, n) = answer(&parse(LINPHONE).unwrap(), &wideband_local(&[Codec::Opus])).unwrap();
        assert_eq!(
            (
                n.codec,
                n.payload_type,
                n.telephone_event,
                n.telephone_event_rate
            ),
            (Codec::Opus, 96, Some(101), 48000)
        );
    }

    #[test]
    fn wideband_rtpmap_matching() {
        // Static 9 without an rtpmap is G.722; a G722/16000 rtpmap is not (RFC 3551).
        let bare = "v=0\r\nc=IN IP4 198.51.100.1\r\nm=audio 5004 RTP/AVP 9\r\n";
        let (_, n) = answer(&parse(bare).unwrap(), &wideband_local(&[Codec::G722])).unwrap();
        assert_eq!((n.codec, n.payload_type), (Codec::G722, 9));
        let wrong =
            "v=0\r\nc=IN IP4 198.51.100.1\r\nm=audio 5004 RTP/AVP 9\r\na=rtpmap:9 G722/16000\r\n";
        assert_eq!(
            answer(&parse(wrong).unwrap(), &wideband_local(&[Codec::G722])).unwrap_err(),
            SdpError::NoCommonCodec
        );
        // opus without a channel count, or upper-case, is still Opus; opus/16000 is not.
        for (map, ok) in [
            ("opus/48000", true),
            ("OPUS/48000/2", true),
            ("opus/16000/2", false),
        ] {
            let text = format!(
                "v=0\r\nc=IN IP4 198.51.100.1\r\nm=audio 5004 RTP/AVP 107\r\na=rtpmap:107 {map}\r\n"
            );
            let got = answer(&parse(&text).unwrap(), &wideband_local(&[Codec::Opus]));
            assert_eq!(got.is_ok(), ok, "{map}");
            if let Ok((text, n)) = got {
                assert_eq!(n.payload_type, 107);
                assert!(text.contains("a=rtpmap:107 opus/48000/2\r\n"));
            }
        }
        // Opus keeps 111 wherever it stands in our list.
        let l = wideband_local(&[Codec::Pcmu, Codec::Opus]);
        assert!(offer(&l).contains("m=audio 4000 RTP/AVP 0 111 101\r\n"));
    }

    #[test]
    fn accept_wideband_answers() {
        let l = wideband_local(&[Codec::Opus, Codec::G722, Codec::Pcmu]);
        let ans = "v=0\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n\
m=audio 30000 RTP/AVP 111 101\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 useinbandfec=1\r\n\
a=rtpmap:101 telephone-event/8000\r\n";
        let n = accept_answer(&parse(ans).unwrap(), &l).unwrap();
        assert_eq!((n.codec, n.payload_type), (Codec::Opus, 111));
        let ans = "v=0\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 30000 RTP/AVP 9\r\n";
        let n = accept_answer(&parse(ans).unwrap(), &l).unwrap();
        assert_eq!((n.codec, n.payload_type), (Codec::G722, 9));
        // An answer with a codec we did not offer is refused.
        let only_g711 = wideband_local(&[Codec::Pcmu]);
        assert_eq!(
            accept_answer(&parse(ans).unwrap(), &only_g711).unwrap_err(),
            SdpError::NoCommonCodec
        );
    }

    #[test]
    fn answer_takes_the_offerers_order_unless_forced() {
        let d = parse(BARESIP_WIDEBAND).unwrap();
        let ours = LocalMedia {
            codecs: vec![Codec::Pcma, Codec::G722, Codec::Opus],
            prefer_own_order: false,
            ..local()
        };
        // The offer lists opus first: taken although it is our last.
        let (text, n) = answer(&d, &ours).unwrap();
        assert_eq!((n.codec, n.payload_type), (Codec::Opus, 96));
        assert!(text.contains("m=audio 4000 RTP/AVP 96 101\r\n"), "{text}");
        // forceCodec: our first that the offer has.
        let forced = LocalMedia {
            prefer_own_order: true,
            ..ours.clone()
        };
        let (_, n) = answer(&d, &forced).unwrap();
        assert_eq!((n.codec, n.payload_type), (Codec::Pcma, 8));
        // The offer's first that we have, skipping what we lack.
        let g711 = LocalMedia {
            codecs: vec![Codec::Pcma, Codec::Pcmu],
            prefer_own_order: false,
            ..local()
        };
        let (_, n) = answer(&d, &g711).unwrap();
        assert_eq!((n.codec, n.payload_type), (Codec::Pcmu, 0));
    }

    #[test]
    fn force_codec_offers_only_the_first_codec() {
        let forced = LocalMedia {
            codecs: vec![Codec::G722, Codec::Pcmu, Codec::Pcma],
            offer_first_only: true,
            ..local()
        };
        let text = offer(&forced);
        assert!(text.contains("m=audio 4000 RTP/AVP 9 101\r\n"), "{text}");
        assert!(!text.contains("PCMU"), "{text}");
        let all = LocalMedia {
            offer_first_only: false,
            ..forced
        };
        assert!(offer(&all).contains("m=audio 4000 RTP/AVP 9 0 8 101\r\n"));
    }

    #[test]
    fn telephone_event_at_48000_goes_with_opus() {
        let offer_text = "v=0\r\nc=IN IP4 198.51.100.1\r\nt=0 0\r\n\
m=audio 5004 RTP/AVP 111 0 101 110\r\na=rtpmap:111 opus/48000/2\r\n\
a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/48000\r\n\
a=rtpmap:110 telephone-event/8000\r\n";
        let d = parse(offer_text).unwrap();
        let opus = LocalMedia {
            codecs: vec![Codec::Opus],
            ..local()
        };
        let (text, n) = answer(&d, &opus).unwrap();
        assert_eq!(
            (n.codec, n.telephone_event, n.telephone_event_rate),
            (Codec::Opus, Some(101), 48000)
        );
        assert!(
            text.contains("a=rtpmap:101 telephone-event/48000\r\n"),
            "{text}"
        );
        // PCMU takes the 8000 one.
        let (text, n) = answer(&d, &local()).unwrap();
        assert_eq!(
            (n.codec, n.telephone_event, n.telephone_event_rate),
            (Codec::Pcmu, Some(110), 8000)
        );
        assert!(
            text.contains("a=rtpmap:110 telephone-event/8000\r\n"),
            "{text}"
        );
        // Opus with only telephone-event/8000 offered (baresip, MicroSIP): 8000.
        let (_, n) = answer(&parse(BARESIP_WIDEBAND).unwrap(), &opus).unwrap();
        assert_eq!(
            (n.telephone_event, n.telephone_event_rate),
            (Some(101), 8000)
        );
    }

    fn with_ice() -> LocalMedia {
        let base: SocketAddr = "10.0.1.2:4000".parse().unwrap();
        LocalMedia {
            ip: "203.0.113.11".parse().unwrap(),
            ice: Some(LocalIce {
                credentials: Credentials {
                    ufrag: "ourufrag".into(),
                    pwd: "our-password-0123456789".into(),
                },
                candidates: vec![
                    Candidate::host(1, base),
                    Candidate::server_reflexive(1, "203.0.113.11:4000".parse().unwrap(), base),
                ],
                tie_breaker: 42,
            }),
            ..local()
        }
    }

    /// baresip 1.0 with `medianat=ice` and `rtcp_mux yes`: credentials at session
    /// level, candidates and rtcp-mux at media level.
    const BARESIP_ICE: &str = "v=0\r\n\
o=- 3736507464 469263689 IN IP4 10.0.2.2\r\n\
s=-\r\n\
c=IN IP4 10.0.2.2\r\n\
t=0 0\r\n\
a=ice-ufrag:Z0psPkZ\r\n\
a=ice-pwd:6VARkAjfN8PlIHA4zdBWTxMiCrhX6KV\r\n\
m=audio 1070 RTP/AVP 8 0 101\r\n\
c=IN IP4 203.0.113.12\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=sendrecv\r\n\
a=candidate:0a000202 1 UDP 2113929471 10.0.2.2 1070 typ host\r\n\
a=candidate:cb00710d 1 UDP 1677721855 203.0.113.12 1070 typ srflx raddr 10.0.2.2 rport 1070\r\n\
a=rtcp-mux\r\n";

    #[test]
    fn an_ice_offer_carries_credentials_candidates_and_rtcp_mux() {
        let text = offer(&with_ice());
        assert!(text.contains("c=IN IP4 203.0.113.11\r\n"), "{text}");
        assert!(
            text.contains("a=ice-ufrag:ourufrag\r\na=ice-pwd:our-password-0123456789\r\n"),
            "{text}"
        );
        assert!(
            text.contains(" 1 UDP 2130706431 10.0.1.2 4000 typ host\r\n"),
            "{text}"
        );
        assert!(
            text.contains(
                " 1 UDP 1694498815 203.0.113.11 4000 typ srflx raddr 10.0.1.2 rport 4000\r\n"
            ),
            "{text}"
        );
        assert!(text.contains("a=rtcp-mux\r\n"), "{text}");
        // Read back: our own offer is an ICE offer.
        let parsed = parse(&text).unwrap();
        let (creds, cands) = parsed.ice_of(&parsed.media[0]).unwrap();
        assert_eq!(creds.ufrag, "ourufrag");
        assert_eq!(cands, with_ice().ice.unwrap().candidates);
        // Without ICE, none of it.
        let plain = offer(&local());
        assert!(
            !plain.contains("ice-") && !plain.contains("candidate") && !plain.contains("rtcp-mux"),
            "{plain}"
        );
    }

    #[test]
    fn an_ice_offer_is_answered_with_ice_when_we_do_it_and_plainly_when_not() {
        let offer_desc = parse(BARESIP_ICE).unwrap();
        let (text, n) = answer(&offer_desc, &with_ice()).unwrap();
        assert!(text.contains("a=ice-ufrag:ourufrag\r\n"), "{text}");
        assert!(text.contains("typ srflx"), "{text}");
        assert!(text.contains("a=rtcp-mux\r\n"), "{text}");
        let ice = n.ice.unwrap();
        assert!(!ice.controlling, "the answerer is controlled");
        assert_eq!(ice.remote.ufrag, "Z0psPkZ");
        assert_eq!(ice.remote.pwd, "6VARkAjfN8PlIHA4zdBWTxMiCrhX6KV");
        assert_eq!(ice.remote_candidates.len(), 2);
        assert_eq!(n.remote, Some("203.0.113.12:1070".parse().unwrap()));
        assert!(n.rtcp_mux);
        // ICE=0: an ordinary RFC 3264 answer, no ICE line at all.
        let (text, n) = answer(&offer_desc, &local()).unwrap();
        assert!(
            !text.contains("ice-") && !text.contains("candidate"),
            "{text}"
        );
        assert_eq!(n.ice, None);
        assert_eq!(n.remote, Some("203.0.113.12:1070".parse().unwrap()));
        // A lite peer: the full agent controls.
        let lite = parse(&BARESIP_ICE.replace("t=0 0\r\n", "t=0 0\r\na=ice-lite\r\n")).unwrap();
        assert!(
            answer(&lite, &with_ice())
                .unwrap()
                .1
                .ice
                .unwrap()
                .controlling
        );
    }

    #[test]
    fn rtcp_gets_its_own_candidates_only_when_it_is_not_multiplexed() {
        let rtcp_base: SocketAddr = "10.0.1.2:4001".parse().unwrap();
        let mut local = with_ice();
        if let Some(ice) = local.ice.as_mut() {
            ice.candidates.push(Candidate::host(2, rtcp_base));
        }
        // Offered: both components (the answerer may not take rtcp-mux).
        assert!(offer(&local).contains(" 2 UDP 2130706430 10.0.1.2 4001 typ host\r\n"));
        // Answering a multiplexing offer: component 1 only, in the text and the agent.
        let (text, n) = answer(&parse(BARESIP_ICE).unwrap(), &local).unwrap();
        assert!(!text.contains(" 2 UDP "), "{text}");
        assert!(n
            .ice
            .unwrap()
            .local
            .candidates
            .iter()
            .all(|c| c.component == 1));
        // Answering one that does not multiplex: RTCP's candidate too.
        let no_mux = parse(&BARESIP_ICE.replace("a=rtcp-mux\r\n", "")).unwrap();
        let (text, n) = answer(&no_mux, &local).unwrap();
        assert!(
            text.contains(" 2 UDP 2130706430 10.0.1.2 4001 typ host\r\n"),
            "{text}"
        );
        assert!(!n.rtcp_mux);
        assert_eq!(n.ice.unwrap().local.candidates.len(), 3);
        // Our offer answered with rtcp-mux: the agent runs component 1 only.
        let n = accept_answer(&parse(BARESIP_ICE).unwrap(), &local).unwrap();
        assert!(n
            .ice
            .unwrap()
            .local
            .candidates
            .iter()
            .all(|c| c.component == 1));
    }

    #[test]
    fn an_answer_with_ice_makes_us_controlling_and_one_without_turns_it_off() {
        let n = accept_answer(&parse(BARESIP_ICE).unwrap(), &with_ice()).unwrap();
        let ice = n.ice.unwrap();
        assert!(ice.controlling);
        assert_eq!(ice.local, with_ice().ice.unwrap());
        let plain = BARESIP_ICE
            .lines()
            .filter(|l| !l.starts_with("a=ice") && !l.starts_with("a=candidate"))
            .collect::<Vec<_>>()
            .join("\r\n");
        let n = accept_answer(&parse(&plain).unwrap(), &with_ice()).unwrap();
        assert_eq!(n.ice, None);
        assert_eq!(n.remote, Some("203.0.113.12:1070".parse().unwrap()));
    }
}
