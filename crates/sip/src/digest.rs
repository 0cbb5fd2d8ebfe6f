//! Digest authentication (RFC 2617 / RFC 7616 / RFC 8760): picks the strongest
//! challenge a 401/407 offers (SHA-256 before MD5) and builds the answer header.

use rsipstack::sip::headers::auth::{Algorithm, AuthQop, Qop};
use rsipstack::sip::typed::{Authorization, ProxyAuthorization, WwwAuthenticate};
use rsipstack::sip::{DigestGenerator, Header, Method, Response, Uri};

/// One challenge we can answer, and whether it came as 407 (proxy) or 401.
#[derive(Debug, Clone)]
pub(crate) struct Challenge {
    pub proxy: bool,
    pub params: WwwAuthenticate,
}

impl Challenge {
    /// Whether the server only rejected the nonce (`stale=true`).
    pub(crate) fn is_stale(&self) -> bool {
        self.params
            .stale
            .as_deref()
            .is_some_and(|s| s.trim_matches('"').eq_ignore_ascii_case("true"))
    }
}

fn strength(algorithm: Option<Algorithm>) -> Option<u8> {
    match algorithm.unwrap_or(Algorithm::Md5) {
        Algorithm::Sha256 => Some(3),
        Algorithm::Sha512 => Some(2),
        Algorithm::Md5 => Some(1),
        // The *-sess variants need the server's cooperation we do not implement.
        _ => None,
    }
}

/// The best challenge in a 401 or 407, or `None` when it offers nothing we can answer.
pub(crate) fn pick_challenge(resp: &Response) -> Option<Challenge> {
    let mut best: Option<(u8, Challenge)> = None;
    for header in resp.headers.iter() {
        let (proxy, text) = match header {
            Header::WwwAuthenticate(h) => (false, h.value()),
            Header::ProxyAuthenticate(h) => (true, h.value()),
            _ => continue,
        };
        let Ok(params) = WwwAuthenticate::parse(&to_stack_spelling(text)) else {
            continue;
        };
        let Some(score) = strength(params.algorithm) else {
            continue;
        };
        if best.as_ref().is_none_or(|(s, _)| score > *s) {
            best = Some((score, Challenge { proxy, params }));
        }
    }
    best.map(|(_, c)| c)
}

/// The `Authorization` (or `Proxy-Authorization`) header answering `challenge`.
/// `nc` counts uses of the same nonce (1 for a fresh challenge).
pub fn answer(
    challenge: &Challenge,
    method: &Method,
    uri: &Uri,
    username: &str,
    password: &str,
    cnonce: &str,
    nc: u8,
) -> Header {
    let c = &challenge.params;
    let algorithm = c.algorithm.unwrap_or(Algorithm::Md5);
    let qop = match c.qop {
        Some(Qop::Auth) | Some(Qop::AuthInt) => Some(AuthQop::Auth {
            cnonce: cnonce.to_string(),
            nc,
        }),
        None => None,
    };
    let response = DigestGenerator {
        username,
        password,
        nonce: &c.nonce,
        uri,
        realm: &c.realm,
        method,
        qop: qop.as_ref(),
        algorithm,
    }
    .compute();
    let auth = Authorization {
        scheme: c.scheme.clone(),
        username: username.to_string(),
        realm: c.realm.clone(),
        nonce: c.nonce.clone(),
        uri: uri.clone(),
        response,
        algorithm: Some(algorithm),
        opaque: c.opaque.clone(),
        qop,
    };
    let header: Header = if challenge.proxy {
        ProxyAuthorization {
            scheme: auth.scheme,
            username: auth.username,
            realm: auth.realm,
            nonce: auth.nonce,
            uri: auth.uri,
            response: auth.response,
            algorithm: auth.algorithm,
            opaque: auth.opaque,
            qop: auth.qop,
        }
        .into()
    } else {
        auth.into()
    };
    to_wire_spelling(header)
}

/// RFC 7616 and RFC 8760 spell the algorithms `SHA-256` and `SHA-512-256`; the
/// stack's parser knows only `SHA256`/`SHA512`. Translate on the way in…
fn to_stack_spelling(text: &str) -> String {
    replace_algorithm(text, &[("SHA-256", "SHA256"), ("SHA-512-256", "SHA512")])
}

/// …and back on the way out, so the registrar reads the name it offered. The stack
/// also quotes `qop`, which RFC 2617 §3.2.2 writes bare (`qop=auth`); strict
/// servers refuse the quoted form.
fn to_wire_spelling(header: Header) -> Header {
    let fix = |v: &str| {
        replace_algorithm(v, &[("SHA256", "SHA-256"), ("SHA512", "SHA-512-256")])
            .replace("qop=\"auth\"", "qop=auth")
    };
    match header {
        Header::Authorization(h) => Header::Authorization(fix(h.value()).into()),
        Header::ProxyAuthorization(h) => Header::ProxyAuthorization(fix(h.value()).into()),
        other => other,
    }
}

fn replace_algorithm(text: &str, pairs: &[(&str, &str)]) -> String {
    let lower = text.to_ascii_lowercase();
    let Some(at) = lower.find("algorithm=") else {
        return text.to_string();
    };
    let start = at + "algorithm=".len();
    let rest = &text[start..];
    let quoted = rest.starts_with('"');
    let body = rest.trim_start_matches('"');
    let end = body
        .find(|c: char| c == ',' || c == '"' || c.is_whitespace())
        .unwrap_or(body.len());
    let name = &body[..end];
    match pairs
        .iter()
        .find(|(from, _)| name.eq_ignore_ascii_case(from))
    {
        Some((_, to)) => {
            let skip = start + usize::from(quoted) + end;
            format!(
                "{}{}{to}{}",
                &text[..start],
                if quoted { "\"" } else { "" },
                &text[skip..]
            )
        }
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response_with(headers: &[&str]) -> Response {
        let mut text = String::from(
            "SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
             From: <sip:1001@127.0.0.1>;tag=a\r\nTo: <sip:1001@127.0.0.1>;tag=b\r\n\
             Call-ID: x@y\r\nCSeq: 1 REGISTER\r\n",
        );
        for h in headers {
            text.push_str(h);
            text.push_str("\r\n");
        }
        text.push_str("Content-Length: 0\r\n\r\n");
        Response::try_from(text.as_str()).expect("test response parses")
    }

    #[test]
    fn prefers_sha256_when_offered() {
        let resp = response_with(&[
            r#"WWW-Authenticate: Digest realm="r", nonce="n1", algorithm=MD5, qop="auth""#,
            r#"WWW-Authenticate: Digest realm="r", nonce="n2", algorithm=SHA-256, qop="auth""#,
        ]);
        let c = pick_challenge(&resp).expect("a challenge");
        assert_eq!(c.params.nonce, "n2");
        assert_eq!(c.params.algorithm, Some(Algorithm::Sha256));
        let uri = Uri::try_from("sip:127.0.0.1").expect("uri");
        let text = answer(&c, &Method::Register, &uri, "1001", "pw", "cn", 1).to_string();
        assert!(text.contains("algorithm=SHA-256"), "{text}");
        assert!(
            text.contains("qop=auth,") || text.ends_with("qop=auth"),
            "{text}"
        );
    }

    #[test]
    fn md5_without_algorithm_and_known_answer() {
        // RFC 2617 §3.5-style vector computed with the same inputs by hand:
        // HA1 = MD5("1001:r:secret"), HA2 = MD5("REGISTER:sip:127.0.0.1"), no qop.
        let resp = response_with(&[r#"WWW-Authenticate: Digest realm="r", nonce="abc""#]);
        let c = pick_challenge(&resp).expect("a challenge");
        let uri = Uri::try_from("sip:127.0.0.1").expect("uri");
        let header = answer(&c, &Method::Register, &uri, "1001", "secret", "cn", 1);
        let text = header.to_string();
        assert!(text.starts_with("Authorization: Digest"), "{text}");
        let ha1 = format!("{:x}", md5_of("1001:r:secret"));
        let ha2 = format!("{:x}", md5_of("REGISTER:sip:127.0.0.1"));
        let expected = format!("{:x}", md5_of(&format!("{ha1}:abc:{ha2}")));
        assert!(text.contains(&expected), "{text} lacks {expected}");
        assert!(!text.contains("secret"));
    }

    #[test]
    fn proxy_challenge_gets_proxy_authorization() {
        let mut resp = response_with(&[r#"Proxy-Authenticate: Digest realm="r", nonce="abc""#]);
        resp.status_code = 407.into();
        let c = pick_challenge(&resp).expect("a challenge");
        assert!(c.proxy);
        let uri = Uri::try_from("sip:1002@127.0.0.1").expect("uri");
        let header = answer(&c, &Method::Invite, &uri, "1001", "pw", "cn", 1);
        assert!(header.to_string().starts_with("Proxy-Authorization:"));
    }

    #[test]
    fn stale_flag_and_no_usable_challenge() {
        let resp = response_with(&[r#"WWW-Authenticate: Digest realm="r", nonce="n", stale=true"#]);
        assert!(pick_challenge(&resp).expect("challenge").is_stale());
        let none = response_with(&[
            r#"WWW-Authenticate: Digest realm="r", nonce="n", algorithm=MD5-sess"#,
        ]);
        assert!(pick_challenge(&none).is_none());
    }

    /// A small independent MD5 (RFC 1321) so the test checks the stack's digest
    /// against a second implementation, not against itself.
    fn md5_of(input: &str) -> Md5Digest {
        let s: [u32; 64] = [
            7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20,
            5, 9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
            6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
        ];
        let k: Vec<u32> = (0..64)
            .map(|i| ((i as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u32)
            .collect();
        let mut msg = input.as_bytes().to_vec();
        let bit_len = (msg.len() as u64).wrapping_mul(8);
        msg.push(0x80);
        while msg.len() % 64 != 56 {
            msg.push(0);
        }
        msg.extend_from_slice(&bit_len.to_le_bytes());
        let (mut a0, mut b0, mut c0, mut d0) =
            (0x67452301u32, 0xefcdab89u32, 0x98badcfeu32, 0x10325476u32);
        for chunk in msg.chunks(64) {
            let m: Vec<u32> = chunk
                .chunks(4)
                .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
                .collect();
            let (mut a, mut b, mut c, mut d) = (a0, b0, c0, d0);
            for i in 0..64 {
                let (f, g) = match i / 16 {
                    0 => ((b & c) | (!b & d), i),
                    1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                    2 => (b ^ c ^ d, (3 * i + 5) % 16),
                    _ => (c ^ (b | !d), (7 * i) % 16),
                };
                let f2 = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
                a = d;
                d = c;
                c = b;
                b = b.wrapping_add(f2.rotate_left(s[i]));
            }
            a0 = a0.wrapping_add(a);
            b0 = b0.wrapping_add(b);
            c0 = c0.wrapping_add(c);
            d0 = d0.wrapping_add(d);
        }
        let mut out = [0u8; 16];
        for (i, v) in [a0, b0, c0, d0].iter().enumerate() {
            out[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
        }
        Md5Digest(out)
    }

    struct Md5Digest([u8; 16]);
    impl std::fmt::LowerHex for Md5Digest {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            for b in self.0 {
                write!(f, "{b:02x}")?;
            }
            Ok(())
        }
    }
}
