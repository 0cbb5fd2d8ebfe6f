//! The STUN messages of ICE connectivity checks (RFC 8445 section 7.1-7.3 on RFC
//! 5389): a Binding request carrying USERNAME, PRIORITY, ICE-CONTROLLING or
//! ICE-CONTROLLED, USE-CANDIDATE, protected by MESSAGE-INTEGRITY (HMAC-SHA1 with the
//! short-term password) and FINGERPRINT (CRC-32), and the success response with
//! XOR-MAPPED-ADDRESS. Checked against the RFC 5769 samples.
//!
//! This is the wire layer only: candidate gathering, pairing, the check schedule and
//! nomination are the ICE agent's ([`crate::ice`]).

use std::net::SocketAddr;

use sha1::{Digest, Sha1};

use crate::stun::{is_stun, TransactionId, MAGIC_COOKIE};

const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const BINDING_ERROR: u16 = 0x0111;
const BINDING_INDICATION: u16 = 0x0011;
const ATTR_ERROR_CODE: u16 = 0x0009;
const ATTR_USERNAME: u16 = 0x0006;
const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
const ATTR_PRIORITY: u16 = 0x0024;
const ATTR_USE_CANDIDATE: u16 = 0x0025;
const ATTR_FINGERPRINT: u16 = 0x8028;
const ATTR_ICE_CONTROLLED: u16 = 0x8029;
const ATTR_ICE_CONTROLLING: u16 = 0x802A;
const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// Our ICE role in a check, with the tie-breaker (RFC 8445 section 7.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// ICE-CONTROLLING with this tie-breaker.
    Controlling(u64),
    /// ICE-CONTROLLED with this tie-breaker.
    Controlled(u64),
}

/// What a connectivity check says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// USERNAME: `remote-ufrag:local-ufrag` as the sender writes it.
    pub username: String,
    /// PRIORITY: the peer-reflexive priority the sender would have.
    pub priority: u32,
    /// The sender's role (`None`: the request named none).
    pub role: Option<Role>,
    /// USE-CANDIDATE: the controlling agent nominates this pair.
    pub use_candidate: bool,
}

/// A connectivity check with transaction `id`, signed with the remote agent's
/// password (`ice-pwd`).
pub fn encode_request(id: &TransactionId, check: &Check, password: &[u8]) -> Vec<u8> {
    let mut m = header(BINDING_REQUEST, id);
    attr(&mut m, ATTR_USERNAME, check.username.as_bytes());
    attr(&mut m, ATTR_PRIORITY, &check.priority.to_be_bytes());
    match check.role {
        Some(Role::Controlling(t)) => attr(&mut m, ATTR_ICE_CONTROLLING, &t.to_be_bytes()),
        Some(Role::Controlled(t)) => attr(&mut m, ATTR_ICE_CONTROLLED, &t.to_be_bytes()),
        None => {}
    }
    if check.use_candidate {
        attr(&mut m, ATTR_USE_CANDIDATE, &[]);
    }
    sign(&mut m, password);
    m
}

/// The success response to check `id`, telling the checker its address as seen
/// (`mapped`), signed with our own password.
pub fn encode_success(id: &TransactionId, mapped: SocketAddr, password: &[u8]) -> Vec<u8> {
    let mut m = header(BINDING_SUCCESS, id);
    let mut value = Vec::with_capacity(20);
    value.push(0);
    value.push(if mapped.is_ipv4() { 1 } else { 2 });
    value.extend((mapped.port() ^ (MAGIC_COOKIE >> 16) as u16).to_be_bytes());
    let mut key = MAGIC_COOKIE.to_be_bytes().to_vec();
    key.extend(id);
    match mapped.ip() {
        std::net::IpAddr::V4(v4) => value.extend(v4.octets().iter().zip(&key).map(|(a, k)| a ^ k)),
        std::net::IpAddr::V6(v6) => value.extend(v6.octets().iter().zip(&key).map(|(a, k)| a ^ k)),
    }
    attr(&mut m, ATTR_XOR_MAPPED_ADDRESS, &value);
    sign(&mut m, password);
    m
}

/// The error response to check `id` (RFC 5389 section 15.6: class `code / 100`,
/// number `code % 100`, reason phrase), signed with our own password: 487 Role
/// Conflict, 400 Bad Request.
pub fn encode_error(id: &TransactionId, code: u16, reason: &str, password: &[u8]) -> Vec<u8> {
    let mut m = header(BINDING_ERROR, id);
    let mut value = vec![0, 0, (code / 100) as u8, (code % 100) as u8];
    value.extend(reason.as_bytes());
    attr(&mut m, ATTR_ERROR_CODE, &value);
    sign(&mut m, password);
    m
}

/// What kind of Binding message `data` is (`None`: not STUN, or another method).
pub fn kind(data: &[u8]) -> Option<Kind> {
    if !is_stun(data) {
        return None;
    }
    match u16::from_be_bytes([data[0], data[1]]) {
        BINDING_REQUEST => Some(Kind::Request),
        BINDING_INDICATION => Some(Kind::Indication),
        BINDING_SUCCESS | BINDING_ERROR => Some(Kind::Response),
        _ => None,
    }
}

/// The class of a Binding message ([`kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A Binding request (a connectivity check).
    Request,
    /// A Binding indication (a keep-alive: nothing to answer).
    Indication,
    /// A success or error response.
    Response,
}

/// The transaction id of a STUN message (`None`: too short to be one).
pub fn transaction_of(data: &[u8]) -> Option<TransactionId> {
    data.get(8..20)?.try_into().ok()
}

/// A Binding indication (RFC 5389 section 7.1, with FINGERPRINT only): the
/// keep-alive an agent sends on a selected pair that carries no media.
pub fn encode_indication(id: &TransactionId) -> Vec<u8> {
    let mut m = header(BINDING_INDICATION, id);
    let len = m.len() + 8 - 20;
    set_length(&mut m, len);
    let crc = crc32(&m) ^ FINGERPRINT_XOR;
    attr(&mut m, ATTR_FINGERPRINT, &crc.to_be_bytes());
    m
}

/// True when `data` ends with a valid FINGERPRINT and carries a MESSAGE-INTEGRITY
/// that `password` produced.
pub fn verify(data: &[u8], password: &[u8]) -> bool {
    if !is_stun(data) {
        return false;
    }
    let mut at = 20;
    let mut integrity_ok = false;
    while at + 4 <= data.len() {
        let kind = u16::from_be_bytes([data[at], data[at + 1]]);
        let len = usize::from(u16::from_be_bytes([data[at + 2], data[at + 3]]));
        let Some(value) = data.get(at + 4..at + 4 + len) else {
            return false;
        };
        match kind {
            ATTR_MESSAGE_INTEGRITY if len == 20 => {
                let mut covered = data[..at].to_vec();
                set_length(&mut covered, at + 24 - 20);
                integrity_ok = hmac_sha1(password, &covered)[..] == value[..];
            }
            ATTR_FINGERPRINT if len == 4 => {
                let mut covered = data[..at].to_vec();
                set_length(&mut covered, at + 8 - 20);
                let want = crc32(&covered) ^ FINGERPRINT_XOR;
                return integrity_ok && want.to_be_bytes()[..] == value[..];
            }
            _ => {}
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    false
}

/// The check a Binding request carries (`None`: not a Binding request). Verify it
/// with [`verify`] first.
pub fn parse_request(data: &[u8]) -> Option<(TransactionId, Check)> {
    if !is_stun(data) || u16::from_be_bytes([data[0], data[1]]) != BINDING_REQUEST {
        return None;
    }
    let id: TransactionId = data[8..20].try_into().ok()?;
    let mut check = Check {
        username: String::new(),
        priority: 0,
        role: None,
        use_candidate: false,
    };
    let mut at = 20;
    while at + 4 <= data.len() {
        let kind = u16::from_be_bytes([data[at], data[at + 1]]);
        let len = usize::from(u16::from_be_bytes([data[at + 2], data[at + 3]]));
        let value = data.get(at + 4..at + 4 + len)?;
        match kind {
            ATTR_USERNAME => check.username = String::from_utf8_lossy(value).into_owned(),
            ATTR_PRIORITY => check.priority = u32::from_be_bytes(value.try_into().ok()?),
            ATTR_ICE_CONTROLLING => {
                check.role = Some(Role::Controlling(u64::from_be_bytes(
                    value.try_into().ok()?,
                )))
            }
            ATTR_ICE_CONTROLLED => {
                check.role = Some(Role::Controlled(u64::from_be_bytes(value.try_into().ok()?)))
            }
            ATTR_USE_CANDIDATE => check.use_candidate = true,
            _ => {}
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    Some((id, check))
}

fn header(kind: u16, id: &TransactionId) -> Vec<u8> {
    let mut m = Vec::with_capacity(128);
    m.extend(kind.to_be_bytes());
    m.extend([0, 0]);
    m.extend(MAGIC_COOKIE.to_be_bytes());
    m.extend(id);
    m
}

fn attr(m: &mut Vec<u8>, kind: u16, value: &[u8]) {
    m.extend(kind.to_be_bytes());
    m.extend((value.len() as u16).to_be_bytes());
    m.extend(value);
    m.resize(m.len() + (4 - value.len() % 4) % 4, 0);
    let len = m.len() - 20;
    set_length(m, len);
}

fn set_length(m: &mut [u8], len: usize) {
    m[2..4].copy_from_slice(&(len as u16).to_be_bytes());
}

/// MESSAGE-INTEGRITY then FINGERPRINT, each over what precedes it with the length
/// counting it (RFC 5389 sections 15.4-15.5).
fn sign(m: &mut Vec<u8>, password: &[u8]) {
    let len = m.len() + 24 - 20;
    set_length(m, len);
    let mac = hmac_sha1(password, m);
    attr(m, ATTR_MESSAGE_INTEGRITY, &mac);
    let len = m.len() + 8 - 20;
    set_length(m, len);
    let crc = crc32(m) ^ FINGERPRINT_XOR;
    attr(m, ATTR_FINGERPRINT, &crc.to_be_bytes());
}

/// HMAC-SHA1 (RFC 2104).
fn hmac_sha1(key: &[u8], data: &[u8]) -> [u8; 20] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..20].copy_from_slice(&Sha1::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha1::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(data);
    let mut outer = Sha1::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// CRC-32 (ISO-HDLC, as in RFC 5389's FINGERPRINT).
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";

    /// RFC 5769 section 2.1: the sample request (SOFTWARE "STUN test client", PRIORITY, ICE-CONTROLLED,
    /// USERNAME "evtj:h6vY", MESSAGE-INTEGRITY, FINGERPRINT).
    const RFC5769_REQUEST: &str = "000100582112a442b7e7a701bc34d686fa87dfae
        802200105354554e207465737420636c69656e74
        002400046e0001ff
        80290008932ff9b151263b36
        000600096576746a3a68367659202020
        000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2
        80280004e57a3bcf";

    #[test]
    fn the_rfc5769_request_verifies_and_parses() {
        let data = hex(RFC5769_REQUEST);
        assert!(verify(&data, PASSWORD));
        assert!(!verify(&data, b"wrong"));
        let (id, check) = parse_request(&data).unwrap();
        assert_eq!(id[..], data[8..20]);
        assert_eq!(check.username, "evtj:h6vY");
        assert_eq!(check.priority, 0x6e00_01ff);
        assert_eq!(check.role, Some(Role::Controlled(0x932f_f9b1_5126_3b36)));
        assert!(!check.use_candidate);
        let mut bent = data.clone();
        bent[30] ^= 1;
        assert!(!verify(&bent, PASSWORD));
    }

    #[test]
    fn the_rfc5769_response_verifies() {
        let data = hex("0101003c2112a442b7e7a701bc34d686fa87dfae
             8022000b7465737420766563746f7220
             002000080001a147e112a643
             000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7
             80280004c07d4c96");
        assert!(verify(&data, PASSWORD));
    }

    #[test]
    fn our_request_and_response_round_trip() {
        let id = [3u8; 12];
        let check = Check {
            username: "abcd:efgh".into(),
            priority: 1_853_824_767,
            role: Some(Role::Controlling(42)),
            use_candidate: true,
        };
        let m = encode_request(&id, &check, b"pass");
        assert!(verify(&m, b"pass"));
        assert_eq!(parse_request(&m), Some((id, check)));
        let addr: SocketAddr = "203.0.113.11:40000".parse().unwrap();
        let r = encode_success(&id, addr, b"pass");
        assert!(verify(&r, b"pass"));
        assert_eq!(crate::stun::parse_binding_response(&r, &id), Ok(addr));
        let e = encode_error(&id, 487, "Role Conflict", b"pass");
        assert!(verify(&e, b"pass"));
        assert_eq!(kind(&e), Some(Kind::Response));
        assert_eq!(
            crate::stun::parse_binding_response(&e, &id),
            Err(crate::stun::StunError::Refused(487, "Role Conflict".into()))
        );
        assert_eq!(kind(&m), Some(Kind::Request));
        assert_eq!(kind(&encode_indication(&id)), Some(Kind::Indication));
        assert_eq!(kind(b"\x80\x00rtp"), None);
    }
}
