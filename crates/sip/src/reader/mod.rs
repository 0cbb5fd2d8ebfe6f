//! Our reader for SIP input. Every datagram, and every message framed off a TCP
//! stream we accepted, passes here before the stack's parser sees it:
//!
//! - a valid message of any form RFC 3261 allows (line folding, white space around
//!   separators, compact header names, escapes, unknown methods and headers) is
//!   handed on, rewritten into the plain spelling the stack's parser reads (one
//!   Via per header, no folds, no white space around `;` `=` `/`);
//! - a request the phone must refuse is answered here, statelessly (RFC 3261
//!   §8.2.7), with the right code: 400 for a malformed one (the reason phrase
//!   says what is wrong), 505 for another SIP version, 501 for an unknown method,
//!   416 for a Request-URI scheme other than sip/sips, 420 with Unsupported for an
//!   unknown `Require`, 415 with Accept for a body an INVITE cannot carry, 406 for
//!   an INVITE whose `Accept` excludes SDP;
//! - what cannot be answered (a malformed response, an ACK, bytes without a Via)
//!   is dropped.
//!
//! The stack later builds its responses from the rewritten request; the
//! [`EchoBook`] remembers, per request, the Via, From, To, Call-ID and CSeq
//! values as received, so the responses can carry them back as they came (RFC
//! 3261 §8.2.6.2), not re-spelled.
//!
//! It is sans-IO: bytes in, a [`Verdict`] out.

mod grammar;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use grammar::{
    call_id_ok, cseq, is_sip_scheme, is_token, media_type, name_addr, number, scheme, sip_date_ok,
    split_list, uri_ok, user_escaped, via_parm, Bad,
};

/// The methods the stack knows; any other is answered 501 here.
const METHODS: [&str; 14] = [
    "ACK",
    "BYE",
    "CANCEL",
    "INFO",
    "INVITE",
    "MESSAGE",
    "NOTIFY",
    "OPTIONS",
    "PRACK",
    "PUBLISH",
    "REFER",
    "REGISTER",
    "SUBSCRIBE",
    "UPDATE",
];

/// The option tags a `Require` may name (RFC 3261 §8.2.2.3).
const SUPPORTED: [&str; 2] = ["replaces", "timer"];

/// The To tag of our stateless answers; an ACK carrying one is dropped.
const STATELESS_TAG: &str = "ms-sl-";

/// The From tag we give a request that has none (RFC 2543 has no tags; the stack
/// needs one to key the transaction). Derived from the Call-ID, so every request
/// of the same call gets the same.
pub(crate) const RFC2543_TAG: &str = "rfc2543-";

/// The largest message we read (a UDP datagram's worth).
pub(crate) const MAX_MESSAGE: usize = 65_535;

/// What to do with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it to the stack: the message in the stack's spelling.
    Pass(Vec<u8>),
    /// Send this response back; the request goes no further.
    Answer(Vec<u8>),
    /// Nothing to do (why, for the log).
    Drop(String),
}

/// Static facts the reader's answers carry.
#[derive(Debug, Clone)]
pub(crate) struct ReaderConfig {
    /// `Server` header of our stateless answers.
    pub server: String,
    /// The `Allow` we send with 501.
    pub allow: &'static str,
}

/// One header as received.
#[derive(Debug)]
struct Field<'a> {
    /// The name as written.
    name: &'a str,
    /// The long name, lower case (`v` → `via`).
    canon: String,
    /// The value with folds kept, trimmed (what a response echoes).
    raw: &'a str,
    /// The value unfolded (each fold becomes white space), trimmed.
    value: String,
}

fn canonical(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    let long = match lower.as_str() {
        "i" => "call-id",
        "m" => "contact",
        "e" => "content-encoding",
        "l" => "content-length",
        "c" => "content-type",
        "f" => "from",
        "s" => "subject",
        "k" => "supported",
        "t" => "to",
        "v" => "via",
        "o" => "event",
        "r" => "refer-to",
        "b" => "referred-by",
        "x" => "session-expires",
        "u" => "allow-events",
        "a" => "accept-contact",
        "j" => "reject-contact",
        "d" => "request-disposition",
        "y" => "identity",
        "n" => "identity-info",
        _ => return lower,
    };
    long.to_string()
}

/// The spelling we hand the stack for the headers it types.
fn proper(canon: &str) -> Option<&'static str> {
    Some(match canon {
        "via" => "Via",
        "from" => "From",
        "to" => "To",
        "call-id" => "Call-ID",
        "cseq" => "CSeq",
        "contact" => "Contact",
        "content-length" => "Content-Length",
        "content-type" => "Content-Type",
        "max-forwards" => "Max-Forwards",
        "route" => "Route",
        "record-route" => "Record-Route",
        "supported" => "Supported",
        "require" => "Require",
        "expires" => "Expires",
        "event" => "Event",
        "refer-to" => "Refer-To",
        "referred-by" => "Referred-By",
        "session-expires" => "Session-Expires",
        "content-encoding" => "Content-Encoding",
        "subject" => "Subject",
        "allow-events" => "Allow-Events",
        _ => return None,
    })
}

/// A message split into start line, headers and body.
struct Parsed<'a> {
    start: &'a str,
    fields: Vec<Field<'a>>,
    body: &'a [u8],
    /// The Content-Length said more than there was (datagram), or a stream
    /// message had none.
    length_problem: Option<Bad>,
}

impl<'a> Parsed<'a> {
    fn all<'s>(&'s self, canon: &'s str) -> impl Iterator<Item = &'s Field<'a>> + 's {
        self.fields.iter().filter(move |f| f.canon == canon)
    }

    fn first<'s>(&'s self, canon: &'s str) -> Option<&'s Field<'a>> {
        self.all(canon).next()
    }
}

/// Splits the bytes into lines and headers. `Err(None)`: not even that works
/// (nothing to answer with); `Err(Some(why))`: malformed but readable.
fn split(bytes: &[u8], stream: bool) -> Result<Parsed<'_>, (Option<Bad>, Option<Parsed<'_>>)> {
    let (head, body, no_blank) = match find(bytes, b"\r\n\r\n") {
        Some(end) => (&bytes[..end], &bytes[end + 4..], false),
        None => {
            let head = bytes.strip_suffix(b"\r\n").unwrap_or(bytes);
            (head, &[][..], true)
        }
    };
    let Ok(head) = std::str::from_utf8(head) else {
        return Err((None, None));
    };
    let mut lines = head.split("\r\n");
    let start = lines.next().unwrap_or_default();
    let mut fields: Vec<Field> = Vec::new();
    let mut problem: Option<Bad> = None;
    // (name, raw start, raw end) with folds joined later.
    let mut pieces: Vec<(&str, usize, usize)> = Vec::new();
    let base = head.as_ptr() as usize;
    for line in lines {
        if line.contains(['\r', '\n']) {
            problem.get_or_insert("bare CR or LF in header");
        }
        let offset = line.as_ptr() as usize - base;
        if line.starts_with([' ', '\t']) {
            match pieces.last_mut() {
                Some(last) => last.2 = offset + line.len(),
                None => {
                    problem.get_or_insert("fold before the first header");
                }
            }
            continue;
        }
        let Some(colon) = line.find(':') else {
            problem.get_or_insert("header line without colon");
            continue;
        };
        let name = line[..colon].trim_end_matches([' ', '\t']);
        if !is_token(name) {
            problem.get_or_insert("bad header name");
            continue;
        }
        pieces.push((name, offset + colon + 1, offset + line.len()));
    }
    for (name, from, to) in pieces {
        let raw = head[from..to].trim_matches([' ', '\t', '\r', '\n']);
        // A fold is CRLF and white space: dropping the CRLF leaves the white space.
        let value = raw
            .replace("\r\n", "")
            .trim_matches([' ', '\t'])
            .to_string();
        fields.push(Field {
            name,
            canon: canonical(name),
            raw,
            value,
        });
    }
    let mut parsed = Parsed {
        start,
        fields,
        body,
        length_problem: None,
    };
    if no_blank {
        problem.get_or_insert("no empty line after the headers");
    }
    // Content-Length (RFC 3261 §18.3, §20.14).
    let lengths: Vec<&str> = parsed
        .all("content-length")
        .map(|f| f.value.as_str())
        .collect();
    match lengths.as_slice() {
        [] if stream => parsed.length_problem = Some("no Content-Length on a stream"),
        [] => {}
        [one] => match number(one, MAX_MESSAGE as u64) {
            None => parsed.length_problem = Some("bad Content-Length"),
            Some(n) if n as usize > parsed.body.len() => {
                parsed.length_problem = Some("Content-Length larger than the message")
            }
            Some(n) => parsed.body = &parsed.body[..n as usize],
        },
        _ => parsed.length_problem = Some("more than one Content-Length"),
    }
    match problem {
        Some(p) => Err((Some(p), Some(parsed))),
        None => Ok(parsed),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads one message: a datagram, or one framed off a stream (`stream`).
/// `source` is where it came from (for `received` / `rport`).
pub(crate) fn read(
    bytes: &[u8],
    stream: bool,
    source: SocketAddr,
    config: &ReaderConfig,
    echo: &EchoBook,
) -> Verdict {
    let start = bytes
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(bytes.len());
    let bytes = &bytes[start..];
    if bytes.is_empty() {
        return Verdict::Drop("empty".into());
    }
    // Header text must be UTF-8 (RFC 3261 §7.3); old PBXs send Latin-1 display
    // names: read those with the odd bytes replaced rather than lose the call.
    let head_end = find(bytes, b"\r\n\r\n")
        .map(|e| e + 4)
        .unwrap_or(bytes.len());
    if std::str::from_utf8(&bytes[..head_end]).is_err() {
        let mut fixed = String::from_utf8_lossy(&bytes[..head_end])
            .into_owned()
            .into_bytes();
        fixed.extend_from_slice(&bytes[head_end..]);
        // The replaced text is UTF-8: this recursion goes one level deep.
        return read(&fixed, stream, source, config, echo);
    }
    let (parsed, problem) = match split(bytes, stream) {
        Ok(p) => (p, None),
        Err((_, None)) => return Verdict::Drop("not a SIP message (not UTF-8)".into()),
        Err((p, Some(parsed))) => (parsed, p),
    };
    if parsed
        .start
        .get(..4)
        .is_some_and(|v| v.eq_ignore_ascii_case("SIP/"))
    {
        return match problem
            .or(parsed.length_problem)
            .or_else(|| check_response(&parsed).err())
        {
            Some(why) => Verdict::Drop(format!("malformed response: {why}")),
            None => Verdict::Pass(rewrite(&parsed, None)),
        };
    }
    let method = parsed.start.split(' ').next().unwrap_or_default();
    let answerable = parsed.first("via").is_some();
    let refuse = |code: u16, reason: &str, extra: &[(&str, String)]| {
        if method == "ACK" || !answerable {
            Verdict::Drop(format!("{code} {reason} (nobody to answer)"))
        } else {
            Verdict::Answer(answer(&parsed, source, code, reason, extra, config))
        }
    };
    match check_request(&parsed, problem) {
        Ok(()) => {}
        Err(Refusal::Version) => return refuse(505, "Version Not Supported", &[]),
        Err(Refusal::Bad(why)) => return refuse(400, &format!("Bad Request ({why})"), &[]),
    }
    let mut parts = parsed.start.split(' ');
    let (method, uri) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    if method == "ACK" {
        let to_tag = parsed
            .first("to")
            .and_then(|f| name_addr(&f.value).ok())
            .and_then(|a| a.param("tag").flatten().map(str::to_string));
        if to_tag.is_some_and(|t| t.starts_with(STATELESS_TAG)) {
            return Verdict::Drop("ACK of a stateless answer".into());
        }
    }
    if !METHODS.contains(&method) {
        return refuse(
            501,
            "Not Implemented",
            &[("Allow", config.allow.to_string())],
        );
    }
    if method != "ACK" && method != "CANCEL" {
        if let Some(refusal) = application_checks(&parsed, method, uri) {
            let (code, reason, extra) = refusal;
            return refuse(code, reason, &extra);
        }
    }
    let verdict = Verdict::Pass(rewrite(&parsed, Some(method)));
    echo.remember(&parsed);
    verdict
}

enum Refusal {
    Version,
    Bad(Bad),
}

fn check_response(p: &Parsed) -> Result<(), Bad> {
    let mut parts = p.start.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    let reason = parts.next().ok_or("bad Status-Line")?;
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return Err("bad SIP version");
    }
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) || code.starts_with('0') {
        return Err("bad status code");
    }
    if reason.chars().any(|c| c.is_control() && c != '\t') {
        return Err("bad reason phrase");
    }
    // Of a response only what matching it to our transaction needs is checked:
    // the rest is the stack's to read (a picky reader here could lose a
    // registrar's answer).
    for name in ["via", "from", "to", "call-id", "cseq"] {
        if p.first(name).is_none() {
            return Err("a response without Via, From, To, Call-ID or CSeq");
        }
    }
    let top = p.first("via").map(|f| f.value.as_str()).unwrap_or_default();
    via_parm(split_list(top).first().copied().unwrap_or_default())?;
    cseq(
        p.first("cseq")
            .map(|f| f.value.as_str())
            .unwrap_or_default(),
    )?;
    Ok(())
}

fn check_request(p: &Parsed, problem: Option<Bad>) -> Result<(), Refusal> {
    let parts: Vec<&str> = p.start.split(' ').collect();
    let [method, uri, version] = parts.as_slice() else {
        return Err(Refusal::Bad("bad Request-Line"));
    };
    if !is_token(method) {
        return Err(Refusal::Bad("bad method"));
    }
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        let v = version.get(4..).unwrap_or_default();
        let numeric = version.len() > 4
            && version
                .get(..4)
                .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
            && v.split_once('.').is_some_and(|(a, b)| {
                !a.is_empty()
                    && !b.is_empty()
                    && a.bytes().all(|c| c.is_ascii_digit())
                    && b.bytes().all(|c| c.is_ascii_digit())
            });
        return Err(if numeric {
            Refusal::Version
        } else {
            Refusal::Bad("bad SIP version")
        });
    }
    uri_ok(uri, false).map_err(Refusal::Bad)?;
    if let Some(why) = problem.or(p.length_problem) {
        return Err(Refusal::Bad(why));
    }
    check_headers(p, Some(method)).map_err(Refusal::Bad)
}

/// The headers a response must echo, and those whose value the phone reads.
fn check_headers(p: &Parsed, method: Option<&str>) -> Result<(), Bad> {
    for name in ["via", "from", "to", "call-id", "cseq"] {
        if p.first(name).is_none() {
            return Err(match name {
                "via" => "missing Via",
                "from" => "missing From",
                "to" => "missing To",
                "call-id" => "missing Call-ID",
                _ => "missing CSeq",
            });
        }
    }
    for name in [
        "from",
        "to",
        "call-id",
        "cseq",
        "max-forwards",
        "content-type",
    ] {
        if p.all(name).count() > 1 {
            return Err("a single-value header given twice");
        }
    }
    for f in &p.fields {
        match f.canon.as_str() {
            "via" => {
                for v in split_list(&f.value) {
                    via_parm(v)?;
                }
            }
            "from" | "to" => {
                name_addr(&f.value)?;
            }
            "contact" if f.value == "*" => {}
            "contact" | "route" | "record-route" => {
                for v in split_list(&f.value) {
                    name_addr(v)?;
                }
            }
            "call-id" if !call_id_ok(&f.value) => return Err("bad Call-ID"),
            "cseq" => {
                let (_, m) = cseq(&f.value)?;
                if let Some(method) = method {
                    if m != method {
                        return Err("CSeq method differs from the request's");
                    }
                }
            }
            "max-forwards" if number(&f.value, 255).is_none() => return Err("bad Max-Forwards"),
            "expires" | "min-expires" if number(&f.value, u64::MAX).is_none() => {
                return Err("bad Expires")
            }
            "content-type" => {
                media_type(&f.value, false)?;
            }
            "accept" => {
                for v in split_list(&f.value).into_iter().filter(|v| !v.is_empty()) {
                    media_type(v, true)?;
                }
            }
            "require" | "proxy-require" | "supported" | "unsupported" => {
                for v in split_list(&f.value) {
                    if !v.is_empty() && !is_token(v) {
                        return Err("bad option tag");
                    }
                }
            }
            "date" if !sip_date_ok(&f.value) => return Err("bad Date (RFC 1123, GMT)"),
            _ => {}
        }
    }
    if method.is_some() {
        let from = p
            .first("from")
            .map(|f| f.value.as_str())
            .unwrap_or_default();
        let to = p.first("to").map(|f| f.value.as_str()).unwrap_or_default();
        if from.is_empty() || to.is_empty() {
            return Err("empty From or To");
        }
    }
    Ok(())
}

type Refuse = (u16, &'static str, Vec<(&'static str, String)>);

/// RFC 3261 §8.2.2 and §8.2.3, in that order: the Request-URI's scheme, `Require`,
/// then what an INVITE carries and accepts.
fn application_checks(p: &Parsed, method: &str, uri: &str) -> Option<Refuse> {
    if !scheme(uri).is_some_and(is_sip_scheme) {
        return Some((416, "Unsupported URI Scheme", Vec::new()));
    }
    let unknown: Vec<&str> = p
        .all("require")
        .flat_map(|f| split_list(&f.value))
        .filter(|t| !t.is_empty() && !SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(t)))
        .collect();
    if !unknown.is_empty() {
        return Some((
            420,
            "Bad Extension",
            vec![("Unsupported", unknown.join(", "))],
        ));
    }
    if method == "INVITE" || method == "UPDATE" {
        if !p.body.is_empty() {
            let content_type = p
                .first("content-type")
                .and_then(|f| media_type(&f.value, false).ok());
            let sdp = content_type
                .as_ref()
                .is_some_and(|(t, s)| t == "application" && s == "sdp");
            if !sdp {
                return Some((
                    415,
                    "Unsupported Media Type",
                    vec![("Accept", "application/sdp".into())],
                ));
            }
            let encoded = p.all("content-encoding").any(|f| {
                split_list(&f.value)
                    .iter()
                    .any(|e| !e.eq_ignore_ascii_case("identity"))
            });
            if encoded {
                return Some((
                    415,
                    "Unsupported Media Type",
                    vec![
                        ("Accept", "application/sdp".into()),
                        ("Accept-Encoding", "identity".into()),
                    ],
                ));
            }
        }
        if method == "INVITE" {
            let accepts: Vec<(String, String)> = p
                .all("accept")
                .flat_map(|f| split_list(&f.value))
                .filter(|v| !v.is_empty())
                .filter_map(|v| media_type(v, true).ok())
                .collect();
            let said = p.first("accept").is_some();
            let sdp_ok = accepts
                .iter()
                .any(|(t, s)| (t == "*" || t == "application") && (s == "*" || s == "sdp"));
            if said && !sdp_ok {
                return Some((
                    406,
                    "Not Acceptable",
                    vec![("Accept", "application/sdp".into())],
                ));
            }
        }
    }
    None
}

/// The start line with its version in upper case: the version is
/// case-insensitive (RFC 3261 §7.1), but the stack reads only the upper case
/// senders MUST send. The line was checked: its version is SIP/2.0.
fn start_line(start: &str, request: bool) -> String {
    let split = if request {
        start
            .rsplit_once(' ')
            .map(|(line, _)| match line.split_once(' ') {
                Some((method, uri)) => format!("{method} {} SIP/2.0", user_escaped(uri)),
                None => format!("{line} SIP/2.0"),
            })
    } else {
        start
            .split_once(' ')
            .map(|(_, rest)| format!("SIP/2.0 {rest}"))
    };
    split.unwrap_or_else(|| start.to_string())
}

/// The message in the spelling the stack's parser reads.
fn rewrite(p: &Parsed, method: Option<&str>) -> Vec<u8> {
    let mut out = String::with_capacity(p.start.len() + 64 * p.fields.len());
    out.push_str(&start_line(p.start, method.is_some()));
    out.push_str("\r\n");
    let call_id = p.first("call-id").map(|f| f.value.as_str()).unwrap_or("");
    for f in &p.fields {
        let name = proper(&f.canon).unwrap_or(f.name);
        match f.canon.as_str() {
            "via" => {
                for v in split_list(&f.value) {
                    let v = via_parm(v)
                        .map(|v| v.render())
                        .unwrap_or_else(|_| v.to_string());
                    push(&mut out, name, &v);
                }
            }
            "from" | "to" => {
                let mut v = name_addr(&f.value)
                    .map(|a| a.render())
                    .unwrap_or_else(|_| f.value.clone());
                let untagged = name_addr(&f.value).is_ok_and(|a| a.param("tag").is_none());
                if f.canon == "from" && method.is_some() && untagged {
                    v.push_str(&format!(";tag={}", rfc2543_tag(call_id)));
                }
                push(&mut out, name, &v);
            }
            "contact" | "route" | "record-route" if f.value != "*" => {
                let v: Vec<String> = split_list(&f.value)
                    .into_iter()
                    .map(|v| {
                        name_addr(v)
                            .map(|a| a.render())
                            .unwrap_or_else(|_| v.into())
                    })
                    .collect();
                push(&mut out, name, &v.join(", "));
            }
            "cseq" => {
                let v = cseq(&f.value)
                    .map(|(n, m)| format!("{n} {m}"))
                    .unwrap_or_else(|_| f.value.clone());
                push(&mut out, name, &v);
            }
            "content-length" => {}
            _ => push(&mut out, name, &f.value),
        }
    }
    if method == Some("INVITE") && p.first("contact").is_none() {
        // RFC 2543 made Contact optional; the caller is then reached at its From
        // URI (RFC 2543 §6.13). The stack needs a Contact for the dialog.
        if let Some(from) = p.first("from").and_then(|f| name_addr(&f.value).ok()) {
            push(&mut out, "Contact", &format!("<{}>", from.uri));
        }
    }
    push(&mut out, "Content-Length", &p.body.len().to_string());
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(p.body);
    bytes
}

fn push(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str(": ");
    out.push_str(value);
    out.push_str("\r\n");
}

/// FNV-1a, for tags that must come out the same for the same input.
fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn rfc2543_tag(call_id: &str) -> String {
    format!("{RFC2543_TAG}{:08x}", fnv(&[call_id]) as u32)
}

/// A stateless response (RFC 3261 §8.2.6): Via, From, To, Call-ID and CSeq as
/// received (To with our tag when it had none), sent back where it came from.
fn answer(
    p: &Parsed,
    source: SocketAddr,
    code: u16,
    reason: &str,
    extra: &[(&str, String)],
    config: &ReaderConfig,
) -> Vec<u8> {
    let mut out = format!("SIP/2.0 {code} {reason}\r\n");
    let mut first_via = true;
    for f in p.all("via") {
        let mut value = f.raw.to_string();
        if first_via {
            first_via = false;
            value = with_received(&value, &f.value, source);
        }
        push(&mut out, f.name, &value);
    }
    for name in ["from", "to", "call-id", "cseq"] {
        for f in p.all(name) {
            let mut value = f.raw.to_string();
            if name == "to" {
                if let Ok(a) = name_addr(&f.value) {
                    if a.param("tag").is_none() {
                        let call_id = p.first("call-id").map(|c| c.value.as_str()).unwrap_or("");
                        let from = p.first("from").map(|c| c.value.as_str()).unwrap_or("");
                        let via = p.first("via").map(|c| c.value.as_str()).unwrap_or("");
                        let tag = fnv(&[call_id, from, via]);
                        value.push_str(&format!(";tag={STATELESS_TAG}{tag:016x}"));
                    }
                }
            }
            push(&mut out, f.name, &value);
        }
    }
    for (name, value) in extra {
        push(&mut out, name, value);
    }
    push(&mut out, "Server", &config.server);
    push(&mut out, "Content-Length", "0");
    out.push_str("\r\n");
    out.into_bytes()
}

/// The top Via with `received` (when the sent-by is not the source) and the
/// `rport` value (when asked for) added (RFC 3261 §18.2.1, RFC 3581).
fn with_received(raw: &str, unfolded: &str, source: SocketAddr) -> String {
    let top = split_list(unfolded).into_iter().next().unwrap_or_default();
    let Ok(via) = via_parm(top) else {
        return raw.to_string();
    };
    let host = via
        .sent_by
        .rsplit_once(':')
        .filter(|_| !via.sent_by.starts_with('['))
        .map(|(h, _)| h)
        .unwrap_or(via.sent_by);
    let mut add = String::new();
    if via
        .params
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("rport") && v.is_none())
    {
        // rport without a value: fill it in (and received, RFC 3581 §4).
        add.push_str(&format!(";received={}", source.ip()));
        let s = insert_after_first(raw, &add);
        let first = split_list(&s).into_iter().next().unwrap_or_default();
        let end = s.find(first).map(|i| i + first.len()).unwrap_or(s.len());
        return match fill_param(&s[..end], "rport", &source.port().to_string()) {
            Some(filled) => format!("{filled}{}", &s[end..]),
            None => s,
        };
    }
    if host != source.ip().to_string() {
        add.push_str(&format!(";received={}", source.ip()));
    }
    insert_after_first(raw, &add)
}

/// `extra` appended to the first element of a comma-separated value.
fn insert_after_first(raw: &str, extra: &str) -> String {
    if extra.is_empty() {
        return raw.to_string();
    }
    let first = split_list(raw).into_iter().next().unwrap_or(raw);
    let end = raw
        .find(first)
        .map(|i| i + first.len())
        .unwrap_or(raw.len());
    format!("{}{}{}", &raw[..end], extra, &raw[end..])
}

/// Splits a stream into messages (RFC 3261 §18.3: Content-Length frames each).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// One whole message.
    Message(Vec<u8>),
    /// A CRLF CRLF keep-alive ping (answer CRLF, RFC 5626 §4.4.1).
    Ping,
    /// Not enough bytes yet.
    More,
    /// The stream cannot be framed any further; `Some` is a message to read
    /// (it gets its 400) before the connection is closed.
    Broken(Option<Vec<u8>>),
}

/// Takes the next frame off the front of `buf`.
pub(crate) fn next_frame(buf: &mut Vec<u8>) -> Frame {
    if buf.starts_with(b"\r\n\r\n") {
        buf.drain(..4);
        return Frame::Ping;
    }
    let skip = buf
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    if skip == buf.len() {
        if buf.len() >= 4 {
            buf.clear();
        }
        return Frame::More;
    }
    if skip > 0 && skip < buf.len() {
        buf.drain(..skip);
    }
    let Some(end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > MAX_MESSAGE {
            return Frame::Broken(None);
        }
        return Frame::More;
    };
    let head = String::from_utf8_lossy(&buf[..end + 2]);
    let mut lengths = Vec::new();
    for line in head.split("\r\n").skip(1) {
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim_end_matches([' ', '\t']);
            if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l") {
                lengths.push(value.trim().to_string());
            }
        }
    }
    let length = match lengths.as_slice() {
        [one] => number(one, MAX_MESSAGE as u64),
        _ => None,
    };
    match length {
        Some(n) => {
            let total = end + 4 + n as usize;
            if buf.len() < total {
                Frame::More
            } else {
                Frame::Message(buf.drain(..total).collect())
            }
        }
        // No Content-Length, two, or a bad one: the end is unknown. Read the
        // headers (for the 400) and give up on the stream.
        None => Frame::Broken(Some(buf.drain(..end + 4).collect())),
    }
}

/// What a response must carry back of one request (RFC 3261 §8.2.6.2).
#[derive(Debug, Clone)]
struct Echo {
    call_id: String,
    cseq: String,
    branch: String,
    /// The request's top Via as we handed it on (to see what the stack adds).
    top_via: String,
    vias: Vec<String>,
    from: String,
    to: String,
    to_had_tag: bool,
    raw_call_id: String,
    raw_cseq: String,
    at: Instant,
}

/// The headers of recent requests as received, for the responses to them.
#[derive(Default)]
pub(crate) struct EchoBook {
    entries: Mutex<VecDeque<Echo>>,
}

/// How long a request's echo is kept (a transaction's life, 64 × T1, and some).
const ECHO_KEEP: Duration = Duration::from_secs(40);
const ECHO_MAX: usize = 512;

impl EchoBook {
    fn remember(&self, p: &Parsed) {
        let unfolded_vias: Vec<String> = p
            .all("via")
            .flat_map(|f| split_list(&f.value).into_iter().map(str::to_string))
            .collect();
        let raw_vias: Vec<String> = p
            .all("via")
            .flat_map(|f| split_list(f.raw).into_iter().map(str::to_string))
            .collect();
        let Some(top) = unfolded_vias.first().and_then(|v| via_parm(v).ok()) else {
            return;
        };
        let (Some(from), Some(to), Some(call_id), Some(cs)) = (
            p.first("from"),
            p.first("to"),
            p.first("call-id"),
            p.first("cseq"),
        ) else {
            return;
        };
        let Ok((n, m)) = cseq(&cs.value) else {
            return;
        };
        let echo = Echo {
            call_id: call_id.value.clone(),
            cseq: format!("{n} {m}"),
            branch: top.branch().unwrap_or_default().to_string(),
            top_via: top.render(),
            vias: if raw_vias.len() == unfolded_vias.len() {
                raw_vias
            } else {
                unfolded_vias
            },
            from: from.raw.to_string(),
            to: to.raw.to_string(),
            to_had_tag: name_addr(&to.value).is_ok_and(|a| a.param("tag").is_some()),
            raw_call_id: call_id.raw.to_string(),
            raw_cseq: cs.raw.to_string(),
            at: Instant::now(),
        };
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let now = Instant::now();
        while entries
            .front()
            .is_some_and(|e| now.duration_since(e.at) > ECHO_KEEP)
            || entries.len() >= ECHO_MAX
        {
            entries.pop_front();
        }
        entries.push_back(echo);
    }

    /// For a response about to be sent: the header values to put back, as
    /// (Vias, From, To, Call-ID, CSeq), given the response's own values. `None`
    /// when the request is unknown or the values as received would not carry
    /// the same tags and branch (then the stack's spelling stays).
    pub(crate) fn restore(&self, resp: &ResponseView) -> Option<Restored> {
        let entries = self.entries.lock().ok()?;
        let top = resp.vias.first().and_then(|v| via_parm(v).ok())?;
        let branch = top.branch().unwrap_or_default();
        let echo = entries
            .iter()
            .rev()
            .find(|e| e.call_id == resp.call_id && e.cseq == resp.cseq && e.branch == branch)?;
        // What the stack did to the top Via: `received` added, `rport` given
        // its value. Anything else (a parameter dropped or changed): keep the
        // stack's spelling.
        let before = via_parm(&echo.top_via).ok()?;
        let mut vias = echo.vias.clone();
        let first = vias.first_mut()?;
        for (n, v) in &top.params {
            match before
                .params
                .iter()
                .find(|(bn, _)| bn.eq_ignore_ascii_case(n))
            {
                Some((_, bv)) if bv == v => {}
                Some((_, None)) => *first = fill_param(first, n, (*v)?)?,
                Some(_) => return None,
                None => {
                    first.push(';');
                    first.push_str(n);
                    if let Some(v) = v {
                        first.push('=');
                        first.push_str(v);
                    }
                }
            }
        }
        let kept = before
            .params
            .iter()
            .all(|(bn, _)| top.params.iter().any(|(n, _)| n.eq_ignore_ascii_case(bn)));
        if !kept {
            return None;
        }
        if vias.len() != resp.vias.len() {
            return None;
        }
        let mut to = echo.to.clone();
        let resp_to_tag = name_addr(&resp.to)
            .ok()
            .and_then(|a| a.param("tag").flatten().map(str::to_string));
        if !echo.to_had_tag {
            if let Some(tag) = &resp_to_tag {
                to.push_str(";tag=");
                to.push_str(tag);
            }
        }
        Some(Restored {
            vias,
            from: echo.from.clone(),
            to,
            call_id: echo.raw_call_id.clone(),
            cseq: echo.raw_cseq.clone(),
        })
    }
}

/// `;name` (a parameter without value, as received) given `=value`, in place.
fn fill_param(raw: &str, name: &str, value: &str) -> Option<String> {
    let lower = raw.to_ascii_lowercase();
    let name_lower = name.to_ascii_lowercase();
    let bytes = raw.as_bytes();
    let mut from = 0;
    while let Some(i) = lower[from..].find(&name_lower).map(|i| i + from) {
        let end = i + name.len();
        let before = raw[..i].trim_end_matches([' ', '\t', '\r', '\n']);
        let after = raw[end..].trim_start_matches([' ', '\t', '\r', '\n']);
        let boundary = bytes.get(end).is_none_or(|b| !grammar::is_token_char(*b));
        if before.ends_with(';')
            && boundary
            && (after.is_empty() || after.starts_with(';') || after.starts_with(','))
        {
            return Some(format!("{}={value}{}", &raw[..end], &raw[end..]));
        }
        from = end;
    }
    None
}

/// The values of a response the [`EchoBook`] looks at.
pub(crate) struct ResponseView {
    pub call_id: String,
    pub cseq: String,
    pub vias: Vec<String>,
    pub to: String,
}

/// Header values as received, for a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Restored {
    pub vias: Vec<String>,
    pub from: String,
    pub to: String,
    pub call_id: String,
    pub cseq: String,
}

#[cfg(test)]
mod tests;

/// Runs outside input through the reader as the stack does, for tests and fuzz
/// targets outside this crate (`fuzz/fuzz_targets/sip_reader.rs`): with `stream`
/// false, `chunks` are UDP datagrams, each read on its own; with `stream` true,
/// they are the reads off one TCP connection, framed by Content-Length as they
/// arrive and each framed message read (keep-alive pings give no verdict; a stream
/// that cannot be framed any more ends there, as the stack closes it). The source
/// is a fixed address; one echo book serves the whole input.
pub fn read_input<'a>(chunks: impl IntoIterator<Item = &'a [u8]>, stream: bool) -> Vec<Verdict> {
    let config = ReaderConfig {
        server: "microsip-rs".into(),
        allow: "INVITE, ACK, CANCEL, BYE",
    };
    let echo = EchoBook::default();
    let source = SocketAddr::from(([192, 0, 2, 1], 5060));
    let mut verdicts = Vec::new();
    let mut buf = Vec::new();
    for chunk in chunks {
        if !stream {
            verdicts.push(read(chunk, false, source, &config, &echo));
            continue;
        }
        buf.extend_from_slice(chunk);
        loop {
            match next_frame(&mut buf) {
                Frame::More => break,
                Frame::Ping => {}
                Frame::Message(message) => {
                    verdicts.push(read(&message, true, source, &config, &echo));
                }
                Frame::Broken(message) => {
                    if let Some(message) = message {
                        verdicts.push(read(&message, true, source, &config, &echo));
                    }
                    return verdicts;
                }
            }
        }
    }
    verdicts
}
