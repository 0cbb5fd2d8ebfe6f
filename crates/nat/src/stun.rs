//! STUN Binding (RFC 5389 section 6-7, 15.1-15.2): the 20-byte request, the parse
//! of a success response's (XOR-)MAPPED-ADDRESS, and [`discover`], which asks the
//! servers of a list in turn from one socket until one answers.
//!
//! Only what a client needs to learn its server-reflexive address: no
//! authentication, no FINGERPRINT (servers answer a plain Binding), no TURN.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

/// The magic cookie of every RFC 5389 message.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// The default STUN port (RFC 5389 section 9).
pub const DEFAULT_PORT: u16 = 3478;

const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const BINDING_ERROR: u16 = 0x0111;
const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
const ATTR_ERROR_CODE: u16 = 0x0009;
const HEADER_LEN: usize = 20;

/// A transaction id: 96 bits chosen at random for each request.
pub type TransactionId = [u8; 12];

/// Why a datagram is not the answer to our Binding request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StunError {
    /// Not a STUN message (too short, wrong cookie, bad length).
    NotStun,
    /// A STUN message, but not a Binding response to this transaction.
    NotOurs,
    /// The server refused: its error code and reason phrase.
    Refused(u16, String),
    /// A success response without a usable (XOR-)MAPPED-ADDRESS.
    NoAddress,
}

impl fmt::Display for StunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StunError::NotStun => write!(f, "not a STUN message"),
            StunError::NotOurs => write!(f, "not the answer to our Binding request"),
            StunError::Refused(code, reason) => write!(f, "STUN error {code} {reason}"),
            StunError::NoAddress => write!(f, "Binding response without a mapped address"),
        }
    }
}

impl std::error::Error for StunError {}

/// True when `data` looks like an RFC 5389 message: the two top bits zero, the magic
/// cookie in place, a length that fits. RTP (version 2) never passes.
pub fn is_stun(data: &[u8]) -> bool {
    data.len() >= HEADER_LEN
        && data[0] & 0xC0 == 0
        && u32::from_be_bytes([data[4], data[5], data[6], data[7]]) == MAGIC_COOKIE
        && usize::from(u16::from_be_bytes([data[2], data[3]])) + HEADER_LEN == data.len()
}

/// The Binding request with transaction id `id` (no attributes).
pub fn binding_request(id: &TransactionId) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[0..2].copy_from_slice(&BINDING_REQUEST.to_be_bytes());
    // length 0
    out[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    out[8..20].copy_from_slice(id);
    out
}

/// The address a Binding success response to transaction `id` reports:
/// XOR-MAPPED-ADDRESS, or MAPPED-ADDRESS from an old server.
pub fn parse_binding_response(data: &[u8], id: &TransactionId) -> Result<SocketAddr, StunError> {
    if !is_stun(data) {
        return Err(StunError::NotStun);
    }
    let kind = u16::from_be_bytes([data[0], data[1]]);
    if data[8..20] != id[..] || (kind != BINDING_SUCCESS && kind != BINDING_ERROR) {
        return Err(StunError::NotOurs);
    }
    let mut xor = None;
    let mut plain = None;
    let mut refused = None;
    let mut at = HEADER_LEN;
    while at + 4 <= data.len() {
        let attr = u16::from_be_bytes([data[at], data[at + 1]]);
        let len = usize::from(u16::from_be_bytes([data[at + 2], data[at + 3]]));
        let value = data.get(at + 4..at + 4 + len).ok_or(StunError::NotStun)?;
        match attr {
            ATTR_XOR_MAPPED_ADDRESS => xor = address(value, Some(id)),
            ATTR_MAPPED_ADDRESS => plain = address(value, None),
            ATTR_ERROR_CODE if value.len() >= 4 => {
                let code = u16::from(value[2] & 0x7) * 100 + u16::from(value[3]);
                let reason = String::from_utf8_lossy(&value[4..]).into_owned();
                refused = Some((code, reason));
            }
            _ => {}
        }
        // Attributes are padded to 4 bytes.
        at += 4 + len.div_ceil(4) * 4;
    }
    if kind == BINDING_ERROR {
        let (code, reason) = refused.unwrap_or((0, String::new()));
        return Err(StunError::Refused(code, reason));
    }
    xor.or(plain).ok_or(StunError::NoAddress)
}

/// A (XOR-)MAPPED-ADDRESS value: family, port, address; un-XORed when `xor_id` is
/// the transaction id.
fn address(value: &[u8], xor_id: Option<&TransactionId>) -> Option<SocketAddr> {
    if value.len() < 8 {
        return None;
    }
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let mut port = u16::from_be_bytes([value[2], value[3]]);
    if xor_id.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    let ip = match value[1] {
        0x01 => {
            let mut b: [u8; 4] = value.get(4..8)?.try_into().ok()?;
            if xor_id.is_some() {
                for (x, c) in b.iter_mut().zip(cookie) {
                    *x ^= c;
                }
            }
            IpAddr::V4(Ipv4Addr::from(b))
        }
        0x02 => {
            let mut b: [u8; 16] = value.get(4..20)?.try_into().ok()?;
            if let Some(id) = xor_id {
                let key = cookie.iter().chain(id.iter());
                for (x, k) in b.iter_mut().zip(key) {
                    *x ^= k;
                }
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The servers of an ini `STUN` list (`host[:port]` each; names are resolved here,
/// once). Entries that do not resolve are named in the error list and skipped.
pub fn resolve_servers(list: &[String]) -> (Vec<SocketAddr>, Vec<String>) {
    let mut found = Vec::new();
    let mut bad = Vec::new();
    for entry in list.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let with_port = if entry.parse::<SocketAddr>().is_ok() {
            entry.to_string()
        } else if entry.parse::<IpAddr>().is_ok() {
            match entry.parse::<Ipv6Addr>() {
                Ok(_) => format!("[{entry}]:{DEFAULT_PORT}"),
                Err(_) => format!("{entry}:{DEFAULT_PORT}"),
            }
        } else if entry
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            entry.to_string()
        } else {
            format!("{entry}:{DEFAULT_PORT}")
        };
        match with_port.to_socket_addrs() {
            Ok(mut addrs) => match addrs.next() {
                Some(a) => found.push(a),
                None => bad.push(format!("{entry}: no address")),
            },
            Err(e) => bad.push(format!("{entry}: {e}")),
        }
    }
    (found, bad)
}

/// When the request to one server is sent (from the first send): RFC 5389's
/// doubling retransmissions, shortened for a phone that waits on the answer.
const RETRANSMIT_AT_MS: [u64; 3] = [0, 200, 600];
/// How long one server gets in all before the next is asked.
pub const PER_SERVER: Duration = Duration::from_millis(1400);

/// What [`discover`] learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// The server that answered.
    pub server: SocketAddr,
    /// The socket's address as that server saw it (the NAT's public side).
    pub public: SocketAddr,
    /// From the first request to that server to its answer.
    pub round_trip: Duration,
}

/// Asks `servers` in order, from `socket`, for the socket's public address; the
/// first that answers wins. Blocks at most [`PER_SERVER`] per server. The socket's
/// read timeout is changed while it runs and left at none; datagrams that are not
/// the answer are dropped (call it before the socket carries anything else).
/// Fails with each server's reason when none answers.
pub fn discover(socket: &UdpSocket, servers: &[SocketAddr]) -> Result<Mapping, String> {
    let mut reasons = Vec::new();
    for server in servers {
        if server.is_ipv4() != socket.local_addr().map(|a| a.is_ipv4()).unwrap_or(true) {
            reasons.push(format!("{server}: other address family"));
            continue;
        }
        match ask(socket, *server) {
            Ok(m) => {
                let _ = socket.set_read_timeout(None);
                return Ok(m);
            }
            Err(e) => reasons.push(format!("{server}: {e}")),
        }
    }
    let _ = socket.set_read_timeout(None);
    if reasons.is_empty() {
        return Err("no STUN server".into());
    }
    Err(reasons.join("; "))
}

fn ask(socket: &UdpSocket, server: SocketAddr) -> Result<Mapping, String> {
    let id = transaction_id();
    let request = binding_request(&id);
    let start = Instant::now();
    let end = start + PER_SERVER;
    let mut buf = [0u8; 1500];
    let mut sent = 0;
    loop {
        let now = Instant::now();
        if now >= end {
            return Err(format!("no answer in {} ms", PER_SERVER.as_millis()));
        }
        if sent < RETRANSMIT_AT_MS.len()
            && now >= start + Duration::from_millis(RETRANSMIT_AT_MS[sent])
        {
            socket
                .send_to(&request, server)
                .map_err(|e| format!("cannot send: {e}"))?;
            sent += 1;
        }
        let next_send = RETRANSMIT_AT_MS
            .get(sent)
            .map(|ms| start + Duration::from_millis(*ms))
            .unwrap_or(end)
            .min(end);
        let wait = next_send
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        socket
            .set_read_timeout(Some(wait))
            .map_err(|e| format!("socket: {e}"))?;
        match socket.recv_from(&mut buf) {
            Ok((len, from)) if from == server => match parse_binding_response(&buf[..len], &id) {
                Ok(public) => {
                    return Ok(Mapping {
                        server,
                        public,
                        round_trip: start.elapsed(),
                    })
                }
                Err(e @ StunError::Refused(..)) => return Err(e.to_string()),
                Err(_) => {}
            },
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            // An ICMP port unreachable from an earlier send: nobody there.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                return Err("refused (nothing listens there)".into())
            }
            Err(e) => return Err(format!("cannot receive: {e}")),
        }
    }
}

/// 96 random bits (std's hasher seeds: no random crate needed for a transaction id).
fn transaction_id() -> TransactionId {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut out = [0u8; 12];
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    let a = h.finish();
    h.write_u64(a);
    let b = h.finish();
    out[..8].copy_from_slice(&a.to_be_bytes());
    out[8..].copy_from_slice(&b.to_be_bytes()[..4]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5769 section 2.2: a sample IPv4 response (its XOR-MAPPED-ADDRESS is
    /// 192.0.2.1:32853); MESSAGE-INTEGRITY and FINGERPRINT are skipped over.
    const RFC5769_V4: &str = "0101003c2112a442b7e7a701bc34d686fa87dfae\
        8022000b7465737420766563746f7220\
        002000080001a147e112a643\
        000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7\
        80280004c07d4c96";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn the_rfc5769_sample_response_gives_its_address() {
        let data = hex(RFC5769_V4);
        let id: TransactionId = data[8..20].try_into().unwrap();
        assert!(is_stun(&data));
        assert_eq!(
            parse_binding_response(&data, &id),
            Ok("192.0.2.1:32853".parse().unwrap())
        );
        let other = [0u8; 12];
        assert_eq!(
            parse_binding_response(&data, &other),
            Err(StunError::NotOurs)
        );
    }

    #[test]
    fn the_rfc5769_ipv6_sample_is_unxored_with_the_transaction_id() {
        let data = hex("010100482112a442b7e7a701bc34d686fa87dfae\
             8022000b7465737420766563746f7220\
             002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d9\
             00080014a382954e4be67bf11784c97c8292c275bfe3ed41\
             80280004c8fb0b4c");
        let id: TransactionId = data[8..20].try_into().unwrap();
        assert_eq!(
            parse_binding_response(&data, &id),
            Ok("[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                .parse()
                .unwrap())
        );
    }

    #[test]
    fn a_request_is_twenty_bytes_with_the_cookie_and_id() {
        let id = [7u8; 12];
        let r = binding_request(&id);
        assert_eq!(&r[..4], &[0, 1, 0, 0]);
        assert_eq!(&r[4..8], &MAGIC_COOKIE.to_be_bytes());
        assert_eq!(&r[8..], &id);
        assert!(is_stun(&r));
    }

    #[test]
    fn rtp_and_junk_are_not_stun() {
        let mut rtp = vec![0x80, 0, 0, 1];
        rtp.extend([0u8; 168]);
        assert!(!is_stun(&rtp));
        assert!(!is_stun(b"short"));
        assert_eq!(
            parse_binding_response(&rtp, &[0; 12]),
            Err(StunError::NotStun)
        );
        // A truncated attribute is refused, not read past the end.
        let mut bad = hex(RFC5769_V4);
        bad[3] = 0x3c + 4; // claims more than there is
        bad.extend([0, 0x20, 0, 40]);
        let id: TransactionId = bad[8..20].try_into().unwrap();
        assert_eq!(parse_binding_response(&bad, &id), Err(StunError::NotStun));
    }

    #[test]
    fn an_error_response_is_refused_with_its_code() {
        let id = [9u8; 12];
        let mut m = vec![0x01, 0x11, 0, 12];
        m.extend(MAGIC_COOKIE.to_be_bytes());
        m.extend(id);
        m.extend([0, 9, 0, 8, 0, 0, 4, 20, b'N', b'o', b'p', b'e']);
        assert_eq!(
            parse_binding_response(&m, &id),
            Err(StunError::Refused(420, "Nope".into()))
        );
    }

    #[test]
    fn the_ini_list_resolves_literals_with_the_default_port() {
        let (ok, bad) = resolve_servers(&[
            "203.0.113.1".into(),
            "203.0.113.1:3479".into(),
            "::1".into(),
            "[::1]:5000".into(),
            "no.such.host.invalid".into(),
        ]);
        assert_eq!(
            ok,
            vec![
                "203.0.113.1:3478".parse::<SocketAddr>().unwrap(),
                "203.0.113.1:3479".parse().unwrap(),
                "[::1]:3478".parse().unwrap(),
                "[::1]:5000".parse().unwrap(),
            ]
        );
        assert_eq!(bad.len(), 1);
    }

    /// A server thread on 127.0.0.1 answering one Binding with the sender's address.
    fn tiny_server() -> (SocketAddr, std::thread::JoinHandle<()>) {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 100];
            let (len, from) = server.recv_from(&mut buf).unwrap();
            assert_eq!(len, 20);
            let SocketAddr::V4(v4) = from else { panic!() };
            let mut m = vec![0x01, 0x01, 0, 12];
            m.extend(MAGIC_COOKIE.to_be_bytes());
            m.extend(&buf[8..20]);
            m.extend([0, 0x20, 0, 8, 0, 1]);
            m.extend((v4.port() ^ 0x2112).to_be_bytes());
            for (o, c) in v4.ip().octets().iter().zip(MAGIC_COOKIE.to_be_bytes()) {
                m.push(o ^ c);
            }
            server.send_to(&m, from).unwrap();
        });
        (addr, t)
    }

    #[test]
    fn discover_skips_a_dead_server_and_takes_the_next() {
        let dead = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dead_addr = dead.local_addr().unwrap();
        drop(dead);
        let (live, t) = tiny_server();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let m = discover(&client, &[dead_addr, live]).unwrap();
        assert_eq!(m.server, live);
        assert_eq!(m.public, client.local_addr().unwrap());
        t.join().unwrap();
    }

    #[test]
    fn discover_names_every_server_when_none_answers() {
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let err = discover(&client, &[silent.local_addr().unwrap()]).unwrap_err();
        assert!(err.contains("no answer"), "{err}");
        assert!(discover(&client, &[]).is_err());
    }
}
