//! SRTP keyed by SDES (RFC 3711, RFC 4568): this module owns the media crypto of a
//! call — the crypto suites we speak, the master keys (drawn at random, never shown in
//! `Debug` or logs), the `a=crypto` attribute (read leniently, written exactly), and
//! the per-call [`SrtpStream`] that protects what we send and unprotects what arrives
//! (RTP and RTCP) with `rtc-srtp` (pure Rust, sans-IO).
//!
//! The SDP offer/answer rules (which profile to offer, when to refuse) are in
//! [`crate::sdp`]; the session ([`crate::session`]) runs every datagram through the
//! stream when the negotiation agreed on one.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use rtc_srtp::context::Context;
use rtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use rtc_srtp::protection_profile::ProtectionProfile;

/// Length of an SDES master key and salt together (AES-128: 16 + 14 bytes).
pub const MASTER_LEN: usize = 30;

/// Replay window of the receiving contexts (packets), the RFC 3711 default.
const REPLAY_WINDOW: usize = 64;

/// The SDES crypto suites we speak (RFC 4568 §6.2), in our order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suite {
    /// `AES_CM_128_HMAC_SHA1_80`: AES-128 counter mode, 80-bit HMAC-SHA1 tag.
    AesCm128HmacSha1_80,
    /// `AES_CM_128_HMAC_SHA1_32`: the same with a 32-bit tag on RTP (80 on RTCP).
    AesCm128HmacSha1_32,
}

impl Suite {
    /// Every suite, most preferred first (what our offers list).
    pub const ALL: [Suite; 2] = [Suite::AesCm128HmacSha1_80, Suite::AesCm128HmacSha1_32];

    /// The suite's name in `a=crypto`.
    pub fn name(self) -> &'static str {
        match self {
            Suite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Suite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
        }
    }

    /// The suite named `name` (case-insensitive), `None` for one we do not speak.
    pub fn from_name(name: &str) -> Option<Suite> {
        Suite::ALL
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name))
    }

    fn profile(self) -> ProtectionProfile {
        match self {
            Suite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
            Suite::AesCm128HmacSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
        }
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An SDES master key and salt (30 bytes). Its `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey([u8; MASTER_LEN]);

/// Fills `buf` from the system's secure random source (the one SRTP keys come
/// from; ICE passwords too). Fails only when the operating system has none.
pub fn secure_random(buf: &mut [u8]) -> Result<(), SrtpError> {
    let provider =
        rtc_srtp::crypto::default_provider().map_err(|e| SrtpError::Crypto(e.to_string()))?;
    provider
        .random()
        .fill(buf)
        .map_err(|e| SrtpError::Crypto(e.to_string()))
}

impl MasterKey {
    /// A fresh key from the system's secure random source. Fails only when the
    /// operating system has no random source to give.
    pub fn random() -> Result<MasterKey, SrtpError> {
        let mut bytes = [0u8; MASTER_LEN];
        let provider =
            rtc_srtp::crypto::default_provider().map_err(|e| SrtpError::Crypto(e.to_string()))?;
        provider
            .random()
            .fill(&mut bytes)
            .map_err(|e| SrtpError::Crypto(e.to_string()))?;
        Ok(MasterKey(bytes))
    }

    /// The key made of these bytes (key then salt).
    pub fn from_bytes(bytes: [u8; MASTER_LEN]) -> MasterKey {
        MasterKey(bytes)
    }

    /// Base64 as written after `inline:` (40 characters).
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }

    /// The key in `text` (base64; `None` unless it decodes to exactly 30 bytes).
    pub fn from_base64(text: &str) -> Option<MasterKey> {
        let bytes = BASE64.decode(text.trim()).ok()?;
        <[u8; MASTER_LEN]>::try_from(bytes.as_slice())
            .ok()
            .map(MasterKey)
    }

    fn key(&self) -> &[u8] {
        &self.0[..16]
    }

    fn salt(&self) -> &[u8] {
        &self.0[16..]
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<secret>)")
    }
}

/// One `a=crypto:<tag> <suite> inline:<key>[|lifetime]` line of a description, read
/// or to be written. Lines we cannot use (unknown suite, a key that is not 30 bytes,
/// an MKI, several keys, session parameters that turn protection off) are not
/// represented: [`Crypto::parse`] gives `None` for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crypto {
    /// The tag that pairs an answer's line with the offer's (1 to 999999999).
    pub tag: u32,
    /// The suite.
    pub suite: Suite,
    /// The master key and salt.
    pub key: MasterKey,
}

impl Crypto {
    /// Reads the value of an `a=crypto:` attribute (after the colon). `None` when the
    /// line is malformed or asks for something we do not do.
    pub fn parse(value: &str) -> Option<Crypto> {
        let mut fields = value.split_whitespace();
        let tag = fields.next()?;
        if tag.is_empty() || tag.len() > 9 || !tag.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let tag = tag.parse::<u32>().ok()?;
        let suite = Suite::from_name(fields.next()?)?;
        let key_params = fields.next()?;
        // Several keys (`;`-separated) are for MKI rekeying, which we do not do.
        if key_params.contains(';') {
            return None;
        }
        let (method, info) = key_params.split_once(':')?;
        if !method.eq_ignore_ascii_case("inline") {
            return None;
        }
        let mut parts = info.split('|');
        let key = MasterKey::from_base64(parts.next()?)?;
        for extra in parts {
            // `2^31` or a number is a lifetime (kept by nobody); `1:4` is an MKI.
            if extra.contains(':') {
                return None;
            }
        }
        // Session parameters that weaken the protection are refused; others
        // (KDR=0, WSH) change nothing for us.
        for param in fields {
            let upper = param.to_ascii_uppercase();
            if upper.starts_with("UNENCRYPTED_") || upper.starts_with("UNAUTHENTICATED_") {
                return None;
            }
            if let Some(kdr) = upper.strip_prefix("KDR=") {
                if kdr != "0" {
                    return None;
                }
            }
            if upper.starts_with("FEC_") {
                return None;
            }
        }
        Some(Crypto { tag, suite, key })
    }

    /// The attribute value as we write it (after `a=crypto:`).
    pub fn to_value(&self) -> String {
        format!(
            "{} {} inline:{}",
            self.tag,
            self.suite.name(),
            self.key.to_base64()
        )
    }
}

/// What a negotiation agreed: the suite, the key we send with and the peer's key
/// (from its `a=crypto`). `Debug` shows the suite only.
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpParams {
    /// The agreed suite.
    pub suite: Suite,
    /// Our master key: what we protect with.
    pub local: MasterKey,
    /// The peer's master key: what we unprotect with.
    pub remote: MasterKey,
}

impl fmt::Debug for SrtpParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpParams")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

/// Why a packet could not be protected or unprotected, or a stream not made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SrtpError {
    /// The crypto library refused (a bad key length, a failed authentication, a
    /// replayed packet, a packet too short): its message.
    Crypto(String),
}

impl fmt::Display for SrtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SrtpError::Crypto(why) => write!(f, "SRTP: {why}"),
        }
    }
}

impl std::error::Error for SrtpError {}

/// One call's SRTP: a sending context (our key) and a receiving one (the peer's key).
/// Kept across re-INVITEs that keep the same keys, so the rollover counters and the
/// replay windows go on.
pub struct SrtpStream {
    params: SrtpParams,
    outbound: Context,
    inbound: Context,
}

impl SrtpStream {
    /// The stream for `params`. Fails when the crypto library cannot be set up.
    pub fn new(params: SrtpParams) -> Result<SrtpStream, SrtpError> {
        let provider =
            rtc_srtp::crypto::default_provider().map_err(|e| SrtpError::Crypto(e.to_string()))?;
        let profile = params.suite.profile();
        let context = |key: &MasterKey, receiving: bool| {
            let (rtp, rtcp) = if receiving {
                (
                    Some(srtp_replay_protection(REPLAY_WINDOW)),
                    Some(srtcp_replay_protection(REPLAY_WINDOW)),
                )
            } else {
                (None, None)
            };
            Context::new(key.key(), key.salt(), profile, rtp, rtcp, provider.crypto())
                .map_err(|e| SrtpError::Crypto(e.to_string()))
        };
        Ok(SrtpStream {
            outbound: context(&params.local, false)?,
            inbound: context(&params.remote, true)?,
            params,
        })
    }

    /// The keys and suite this stream runs with.
    pub fn params(&self) -> &SrtpParams {
        &self.params
    }

    /// Encrypts and authenticates an RTP packet; the SRTP packet is appended to `out`
    /// (cleared first).
    pub fn protect_rtp(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<(), SrtpError> {
        let protected = self
            .outbound
            .encrypt_rtp(packet)
            .map_err(|e| SrtpError::Crypto(e.to_string()))?;
        out.clear();
        out.extend_from_slice(&protected);
        Ok(())
    }

    /// Encrypts and authenticates an RTCP compound packet into `out` (cleared first).
    pub fn protect_rtcp(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<(), SrtpError> {
        let protected = self
            .outbound
            .encrypt_rtcp(packet)
            .map_err(|e| SrtpError::Crypto(e.to_string()))?;
        out.clear();
        out.extend_from_slice(&protected);
        Ok(())
    }

    /// Checks and decrypts an SRTP packet into `out` (cleared first). Fails on a
    /// wrong tag (a clear or forged packet), a replay or a packet too short.
    pub fn unprotect_rtp(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<(), SrtpError> {
        let clear = self
            .inbound
            .decrypt_rtp(packet)
            .map_err(|e| SrtpError::Crypto(e.to_string()))?;
        out.clear();
        out.extend_from_slice(&clear);
        Ok(())
    }

    /// Checks and decrypts an SRTCP packet into `out` (cleared first).
    pub fn unprotect_rtcp(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<(), SrtpError> {
        let clear = self
            .inbound
            .decrypt_rtcp(packet)
            .map_err(|e| SrtpError::Crypto(e.to_string()))?;
        out.clear();
        out.extend_from_slice(&clear);
        Ok(())
    }
}

impl fmt::Debug for SrtpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpStream")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 3711 Appendix B.3's master key and salt (libsrtp's known-answer test).
    const RFC3711_MASTER: [u8; MASTER_LEN] = [
        0xe1, 0xf9, 0x7a, 0x0d, 0x3e, 0x01, 0x8b, 0xe0, 0xd6, 0x4f, 0xa3, 0x2c, 0x06, 0xde, 0x41,
        0x39, 0x0e, 0xc6, 0x75, 0xad, 0x49, 0x8a, 0xfe, 0xeb, 0xb6, 0x96, 0x0b, 0x3a, 0xab, 0xe6,
    ];
    const RTP_PLAIN: [u8; 28] = [
        0x80, 0x0f, 0x12, 0x34, 0xde, 0xca, 0xfb, 0xad, 0xca, 0xfe, 0xba, 0xbe, 0xab, 0xab, 0xab,
        0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab,
    ];
    const SRTP_80: [u8; 38] = [
        0x80, 0x0f, 0x12, 0x34, 0xde, 0xca, 0xfb, 0xad, 0xca, 0xfe, 0xba, 0xbe, 0x4e, 0x55, 0xdc,
        0x4c, 0xe7, 0x99, 0x78, 0xd8, 0x8c, 0xa4, 0xd2, 0x15, 0x94, 0x9d, 0x24, 0x02, 0xb7, 0x8d,
        0x6a, 0xcc, 0x99, 0xea, 0x17, 0x9b, 0x8d, 0xbb,
    ];
    const RTCP_PLAIN: [u8; 24] = [
        0x81, 0xc8, 0x00, 0x0b, 0xca, 0xfe, 0xba, 0xbe, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab,
        0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab,
    ];
    const SRTCP_80: [u8; 38] = [
        0x81, 0xc8, 0x00, 0x0b, 0xca, 0xfe, 0xba, 0xbe, 0x71, 0x28, 0x03, 0x5b, 0xe4, 0x87, 0xb9,
        0xbd, 0xbe, 0xf8, 0x90, 0x41, 0xf9, 0x77, 0xa5, 0xa8, 0x80, 0x00, 0x00, 0x01, 0x99, 0x3e,
        0x08, 0xcd, 0x54, 0xd6, 0xc1, 0x23, 0x07, 0x98,
    ];

    fn stream(suite: Suite) -> SrtpStream {
        let key = MasterKey::from_bytes(RFC3711_MASTER);
        SrtpStream::new(SrtpParams {
            suite,
            local: key.clone(),
            remote: key,
        })
        .unwrap()
    }

    #[test]
    fn known_answer_rtp_and_rtcp_sha1_80() {
        let mut s = stream(Suite::AesCm128HmacSha1_80);
        let mut out = Vec::new();
        s.protect_rtp(&RTP_PLAIN, &mut out).unwrap();
        assert_eq!(out, SRTP_80);
        s.protect_rtcp(&RTCP_PLAIN, &mut out).unwrap();
        assert_eq!(out, SRTCP_80);

        let mut r = stream(Suite::AesCm128HmacSha1_80);
        r.unprotect_rtp(&SRTP_80, &mut out).unwrap();
        assert_eq!(out, RTP_PLAIN);
        r.unprotect_rtcp(&SRTCP_80, &mut out).unwrap();
        assert_eq!(out, RTCP_PLAIN);
    }

    #[test]
    fn known_answer_rtp_sha1_32_is_the_80_tag_cut_short() {
        let mut s = stream(Suite::AesCm128HmacSha1_32);
        let mut out = Vec::new();
        s.protect_rtp(&RTP_PLAIN, &mut out).unwrap();
        assert_eq!(out, SRTP_80[..32]);
        let mut r = stream(Suite::AesCm128HmacSha1_32);
        r.unprotect_rtp(&out.clone(), &mut out).unwrap();
        assert_eq!(out, RTP_PLAIN);
    }

    #[test]
    fn tampered_replayed_and_clear_packets_are_refused() {
        let mut r = stream(Suite::AesCm128HmacSha1_80);
        let mut out = Vec::new();
        let mut bad = SRTP_80;
        bad[20] ^= 1;
        assert!(r.unprotect_rtp(&bad, &mut out).is_err());
        assert!(r.unprotect_rtp(&RTP_PLAIN, &mut out).is_err());
        assert!(r.unprotect_rtp(&SRTP_80[..5], &mut out).is_err());
        r.unprotect_rtp(&SRTP_80, &mut out).unwrap();
        assert!(r.unprotect_rtp(&SRTP_80, &mut out).is_err(), "a replay");
    }

    #[test]
    fn round_trip_with_random_keys_both_ways() {
        let a = MasterKey::random().unwrap();
        let b = MasterKey::random().unwrap();
        assert_ne!(a, b);
        let mut alice = SrtpStream::new(SrtpParams {
            suite: Suite::AesCm128HmacSha1_32,
            local: a.clone(),
            remote: b.clone(),
        })
        .unwrap();
        let mut bob = SrtpStream::new(SrtpParams {
            suite: Suite::AesCm128HmacSha1_32,
            local: b,
            remote: a,
        })
        .unwrap();
        let (mut wire, mut back) = (Vec::new(), Vec::new());
        for seq in 0u16..300 {
            let mut packet = RTP_PLAIN;
            packet[2..4].copy_from_slice(&seq.wrapping_add(65400).to_be_bytes());
            alice.protect_rtp(&packet, &mut wire).unwrap();
            assert_ne!(&wire[12..28], &packet[12..]);
            bob.unprotect_rtp(&wire, &mut back).unwrap();
            assert_eq!(back, packet);
        }
        bob.protect_rtcp(&RTCP_PLAIN, &mut wire).unwrap();
        alice.unprotect_rtcp(&wire, &mut back).unwrap();
        assert_eq!(back, RTCP_PLAIN);
    }

    #[test]
    fn crypto_lines_parse_and_format() {
        let key = MasterKey::from_bytes(RFC3711_MASTER);
        let line = Crypto {
            tag: 1,
            suite: Suite::AesCm128HmacSha1_80,
            key: key.clone(),
        };
        let text = line.to_value();
        assert_eq!(
            text,
            "1 AES_CM_128_HMAC_SHA1_80 inline:4fl6DT4Bi+DWT6MsBt5BOQ7Gda1Jiv7rtpYLOqvm"
        );
        assert_eq!(Crypto::parse(&text), Some(line));
        // A lifetime, KDR=0 and the other suite are fine; the key is 30 bytes.
        let c = Crypto::parse(
            "7 aes_cm_128_hmac_sha1_32 inline:4fl6DT4Bi+DWT6MsBt5BOQ7Gda1Jiv7rtpYLOqvm|2^31 KDR=0",
        )
        .unwrap();
        assert_eq!((c.tag, c.suite), (7, Suite::AesCm128HmacSha1_32));
        assert_eq!(c.key, key);
        assert!(!format!("{c:?}").contains("4fl6"), "Debug hides the key");
    }

    #[test]
    fn unusable_crypto_lines_are_ignored_not_a_panic() {
        let key = "4fl6DT4Bi+DWT6MsBt5BOQ7Gda1Jiv7rtpYLOqvm";
        for bad in [
            "",
            "1",
            "1 AES_CM_128_HMAC_SHA1_80",
            "x AES_CM_128_HMAC_SHA1_80 inline:4fl6DT4Bi+DWT6MsBt5BOQ7Gda1Jiv7rtpYLOqvm",
            "1234567890 AES_CM_128_HMAC_SHA1_80 inline:4fl6DT4Bi+DWT6MsBt5BOQ7Gda1Jiv7rtpYLOqvm",
            "1 AES_256_CM_HMAC_SHA1_80 inline:4fl6DT4Bi+DWT6MsBt5BOQ7Gda1Jiv7rtpYLOqvm",
            "1 F8_128_HMAC_SHA1_80 inline:4fl6DT4Bi+DWT6MsBt5BOQ7Gda1Jiv7rtpYLOqvm",
            // 29 and 31 bytes, not base64, no inline:
            "1 AES_CM_128_HMAC_SHA1_80 inline:4fl6DT4Bi+DWT6MsBt5BOQ7Gda1Jiv7rtpYLOqs=",
            "1 AES_CM_128_HMAC_SHA1_80 inline:4fl6DT4Bi+DWT6MsBt5BOQ7Gda1Jiv7rtpYLOqvmAA==",
            "1 AES_CM_128_HMAC_SHA1_80 inline:!!!!",
            "1 AES_CM_128_HMAC_SHA1_80 4fl6DT4Bi+DWT6MsBt5BOQ7Gda1Jiv7rtpYLOqvm",
            "1 AES_CM_128_HMAC_SHA1_80 uri:4fl6DT4Bi+DWT6MsBt5BOQ7Gda1Jiv7rtpYLOqvm",
            "1 AES_CM_128_HMAC_SHA1_80 inline:4fl6DT4Bi+DWT6MsBt5BOQ7Gda1Jiv7rtpYLOqvm|2^20|1:4",
            "1 AES_CM_128_HMAC_SHA1_80 inline:4fl6DT4Bi+DWT6MsBt5BOQ7Gda1Jiv7rtpYLOqvm UNENCRYPTED_SRTP",
            "1 AES_CM_128_HMAC_SHA1_80 inline:4fl6DT4Bi+DWT6MsBt5BOQ7Gda1Jiv7rtpYLOqvm KDR=24",
            "1 AES_CM_128_HMAC_SHA1_80 inline:a;inline:b",
            "1 AES_CM_128_HMAC_SHA1_80 inline:é",
        ] {
            assert_eq!(Crypto::parse(bad), None, "{bad:?}");
        }
        assert_eq!(
            MasterKey::from_base64(key)
                .map(|k| k.to_base64())
                .as_deref(),
            Some(key)
        );
    }
}
