//! RTP packets (RFC 3550): writing the fixed header and reading a received packet,
//! both without allocating.
//!
//! This module owns the wire format only: version 2, padding, header extension and
//! CSRC list (skipped when reading), marker, payload type, sequence number, timestamp
//! and SSRC. Anything malformed or short is an [`RtpError`], never a panic. It keeps
//! no stream state; the engine does.

use std::fmt;

/// Length of the fixed RTP header (no CSRCs, no extension).
pub const HEADER_LEN: usize = 12;

/// The fields of an RTP header that a G.711 stream uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// Marker bit (first packet of a talk spurt for audio).
    pub marker: bool,
    /// Payload type, 0..=127.
    pub payload_type: u8,
    /// Sequence number.
    pub sequence: u16,
    /// Media timestamp, in clock-rate units.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
}

/// A parsed packet: its header and borrowed payload (CSRCs, extension and padding
/// removed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    /// The fixed header fields.
    pub header: RtpHeader,
    /// Number of CSRC identifiers the packet carried (skipped).
    pub csrc_count: u8,
    /// Header extension profile id, when the packet had one (its data is skipped).
    pub extension_profile: Option<u16>,
    /// Number of padding bytes removed from the end.
    pub padding: u8,
    /// The payload.
    pub payload: &'a [u8],
}

/// Why a packet could not be read or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtpError {
    /// Fewer bytes than the header (with its CSRCs and extension) needs.
    TooShort,
    /// The version field is not 2.
    BadVersion(u8),
    /// The padding count is zero or longer than the packet body.
    BadPadding,
    /// A payload type above 127 was asked to be written.
    BadPayloadType(u8),
    /// The output buffer cannot hold the packet.
    BufferTooSmall,
}

impl fmt::Display for RtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RtpError::TooShort => f.write_str("RTP packet too short"),
            RtpError::BadVersion(v) => write!(f, "RTP version {v}, expected 2"),
            RtpError::BadPadding => f.write_str("RTP padding larger than the packet"),
            RtpError::BadPayloadType(pt) => write!(f, "RTP payload type {pt} above 127"),
            RtpError::BufferTooSmall => f.write_str("buffer too small for the RTP packet"),
        }
    }
}

impl std::error::Error for RtpError {}

impl RtpHeader {
    /// Writes this header (version 2, no padding, extension or CSRCs) into the first
    /// [`HEADER_LEN`] bytes of `buf`; returns [`HEADER_LEN`].
    pub fn write(&self, buf: &mut [u8]) -> Result<usize, RtpError> {
        if self.payload_type > 127 {
            return Err(RtpError::BadPayloadType(self.payload_type));
        }
        let out = buf.get_mut(..HEADER_LEN).ok_or(RtpError::BufferTooSmall)?;
        out[0] = 0x80;
        out[1] = (u8::from(self.marker) << 7) | self.payload_type;
        out[2..4].copy_from_slice(&self.sequence.to_be_bytes());
        out[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        Ok(HEADER_LEN)
    }
}

/// Writes a whole packet (header then `payload`) into `buf`; returns its length.
pub fn write_packet(header: &RtpHeader, payload: &[u8], buf: &mut [u8]) -> Result<usize, RtpError> {
    let total = HEADER_LEN + payload.len();
    if buf.len() < total {
        return Err(RtpError::BufferTooSmall);
    }
    header.write(buf)?;
    buf[HEADER_LEN..total].copy_from_slice(payload);
    Ok(total)
}

/// Reads a received packet.
pub fn parse(buf: &[u8]) -> Result<RtpPacket<'_>, RtpError> {
    if buf.len() < HEADER_LEN {
        return Err(RtpError::TooShort);
    }
    let b0 = buf[0];
    let version = b0 >> 6;
    if version != 2 {
        return Err(RtpError::BadVersion(version));
    }
    let has_padding = b0 & 0x20 != 0;
    let has_extension = b0 & 0x10 != 0;
    let csrc_count = b0 & 0x0F;
    let b1 = buf[1];
    let header = RtpHeader {
        marker: b1 & 0x80 != 0,
        payload_type: b1 & 0x7F,
        sequence: u16::from_be_bytes([buf[2], buf[3]]),
        timestamp: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
        ssrc: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
    };
    let mut offset = HEADER_LEN + 4 * usize::from(csrc_count);
    if buf.len() < offset {
        return Err(RtpError::TooShort);
    }
    let mut extension_profile = None;
    if has_extension {
        let ext = buf.get(offset..offset + 4).ok_or(RtpError::TooShort)?;
        extension_profile = Some(u16::from_be_bytes([ext[0], ext[1]]));
        let words = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
        offset += 4 + 4 * words;
        if buf.len() < offset {
            return Err(RtpError::TooShort);
        }
    }
    let mut end = buf.len();
    let mut padding = 0;
    if has_padding {
        padding = buf[end - 1];
        let pad = usize::from(padding);
        if pad == 0 || pad > end - offset {
            return Err(RtpError::BadPadding);
        }
        end -= pad;
    }
    Ok(RtpPacket {
        header,
        csrc_count,
        extension_profile,
        padding,
        payload: &buf[offset..end],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> RtpHeader {
        RtpHeader {
            marker: true,
            payload_type: 8,
            sequence: 0xBEEF,
            timestamp: 0x0102_0304,
            ssrc: 0xDEAD_BEEF,
        }
    }

    #[test]
    fn write_then_parse() {
        let mut buf = [0u8; 64];
        let n = write_packet(&header(), &[1, 2, 3], &mut buf).unwrap();
        assert_eq!(n, 15);
        assert_eq!(&buf[..4], &[0x80, 0x88, 0xBE, 0xEF]);
        let p = parse(&buf[..n]).unwrap();
        assert_eq!(p.header, header());
        assert_eq!(p.payload, &[1, 2, 3]);
        assert_eq!(p.csrc_count, 0);
        assert_eq!(p.extension_profile, None);
        assert_eq!(p.padding, 0);
    }

    #[test]
    fn skips_csrcs_extension_and_padding() {
        let mut pkt = vec![
            0x80 | 0x20 | 0x10 | 0x02,
            0x00,
            0,
            1,
            0,
            0,
            0,
            160,
            0,
            0,
            0,
            7,
        ];
        pkt.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]); // two CSRCs
        pkt.extend_from_slice(&[0xBE, 0xDE, 0, 1, 9, 9, 9, 9]); // one-word extension
        pkt.extend_from_slice(&[0xAA, 0xBB]); // payload
        pkt.extend_from_slice(&[0, 0, 3]); // three bytes of padding
        let p = parse(&pkt).unwrap();
        assert_eq!(p.csrc_count, 2);
        assert_eq!(p.extension_profile, Some(0xBEDE));
        assert_eq!(p.padding, 3);
        assert_eq!(p.payload, &[0xAA, 0xBB]);
        assert_eq!(p.header.payload_type, 0);
        assert!(!p.header.marker);
        assert_eq!(p.header.timestamp, 160);
        assert_eq!(p.header.ssrc, 7);
    }

    #[test]
    fn errors() {
        assert_eq!(parse(&[0x80; 11]), Err(RtpError::TooShort));
        assert_eq!(parse(&[0x40; 12]), Err(RtpError::BadVersion(1)));
        // Three CSRCs announced, none present.
        let mut p = [0u8; 12];
        p[0] = 0x83;
        assert_eq!(parse(&p), Err(RtpError::TooShort));
        // Extension announced, header missing.
        p[0] = 0x90;
        assert_eq!(parse(&p), Err(RtpError::TooShort));
        // Padding of zero and padding longer than the body.
        let mut q = [0u8; 14];
        q[0] = 0xA0;
        assert_eq!(parse(&q), Err(RtpError::BadPadding));
        q[13] = 3;
        assert_eq!(parse(&q), Err(RtpError::BadPadding));
        q[13] = 2;
        assert_eq!(parse(&q).unwrap().payload, &[] as &[u8]);
        // Writing.
        let mut small = [0u8; 13];
        assert_eq!(
            write_packet(&header(), &[1, 2], &mut small),
            Err(RtpError::BufferTooSmall)
        );
        let bad = RtpHeader {
            payload_type: 200,
            ..header()
        };
        assert_eq!(
            bad.write(&mut [0u8; 12]),
            Err(RtpError::BadPayloadType(200))
        );
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut state = 0x1234_5678_9ABC_DEF0u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut buf = [0u8; 96];
        let mut ok = 0;
        for _ in 0..200_000 {
            let len = (next() % 97) as usize;
            for b in buf[..len].iter_mut() {
                *b = next() as u8;
            }
            // Bias towards version 2 so the deeper paths run too.
            if len > 0 && next() % 2 == 0 {
                buf[0] = (buf[0] & 0x3F) | 0x80;
            }
            if let Ok(p) = parse(&buf[..len]) {
                ok += 1;
                assert!(p.payload.len() <= len);
            }
        }
        assert!(ok > 1000, "the parser accepted only {ok} packets");
    }
}
