//! From what the user typed to a SIP request URI: percent escapes, post-dial digits, dialing prefix, dial plan, domain and transport.
//!
//! [`normalize_target`] follows MicroSIP's order:
//!
//! 1. `%XX` escapes are decoded (`%20`, `%2B`, …), but only when the decoded text is
//!    itself dialable: a decoding that yields bad UTF-8, a broken escape or a text
//!    that fails on syntax leaves the input as it was, so decoding twice is harmless
//!    and `sip:a%20b@host` stays a valid escaped URI.
//! 2. Blanks around the input are trimmed; control characters are refused.
//! 3. `sip:`/`sips:` URIs are kept (scheme lowercased, `#` in the user part written
//!    `%23`), after checking: something after the scheme, at most one `@`, a user
//!    before it, a host (name, IPv4 or `[IPv6]`, optional port), no blanks.
//!    Neither the prefix, the dial plan nor the transport touch them.
//! 4. `tel:` is stripped, and with it any `;parameters` of the tel URI.
//! 5. `123,45#`: when the part before the first `,` is phone-number-like, the rest is
//!    kept verbatim (further commas included) as post-dial DTMF.
//! 6. Phone-number-like input — an optional leading `+`, then digits, `*`, `#` and the
//!    separators `.` `-` `(` `)` `/` and blank — loses its separators. When the
//!    account has a `dialingPrefix` and the number is longer than 3 characters (as in
//!    MicroSIP, so short extensions are left alone), a leading `+` is dropped and the
//!    prefix put in front. Without a prefix the `+` stays.
//! 7. The dial plan (see [`DialPlan`]) rewrites or refuses phone numbers and bare
//!    names (`alice`): everything that will be sent to the account's own domain.
//! 8. Bare numbers and names become `sip:USER@DOMAIN`; `user@host` becomes
//!    `sip:user@host`; an IP address alone (`10.0.0.1`, `10.0.0.1:5070`, `[::1]`)
//!    becomes `sip:IP`. These get `;transport=tcp` (or `;transport=tls`) when the
//!    account's transport is TCP (TLS).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use microsip_config::{Account, Transport};

/// Longest input [`normalize_target`] looks at, in bytes.
pub const MAX_TARGET_LEN: usize = 2048;

/// Most elements (characters outside `<…:replacement>`) one dial plan rule may have.
pub(crate) const MAX_RULE_ELEMENTS: usize = 256;

/// Where a call goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The request URI: `sip:…` or `sips:…`.
    pub uri: String,
    /// DTMF digits to send once the call is answered: what followed the first `,` of
    /// `123,45#`, verbatim (further commas are pauses).
    pub post_dial: Option<String>,
    /// What to show and log: the number after prefix and dial plan, the `user@host`
    /// or name typed, or the URI.
    pub display: String,
}

/// Why a target cannot be dialed. `Display` gives a sentence for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialError {
    /// Nothing (or only blanks, or a bare `tel:`) was given.
    Empty,
    /// The input is longer than [`MAX_TARGET_LEN`] bytes.
    TooLong {
        /// The input's length in bytes.
        len: usize,
    },
    /// A `sip:`/`sips:` URI (or `user@host`) that is not valid.
    InvalidUri {
        /// The URI as given.
        uri: String,
        /// Why it is not valid.
        reason: String,
    },
    /// Input that is neither a number, a name, an address nor a URI.
    InvalidTarget {
        /// The input as given.
        target: String,
        /// Why it cannot be dialled.
        reason: String,
    },
    /// The post-dial part holds something other than DTMF digits and commas.
    BadPostDial {
        /// The post-dial part as given.
        digits: String,
    },
    /// The account has no domain to put after a bare number.
    NoDomain {
        /// The account's number.
        account: u32,
    },
    /// The account's domain is not a host name or address.
    BadDomain {
        /// The account's number.
        account: u32,
        /// The domain as configured.
        domain: String,
    },
    /// The dial plan has rules and none of them matches the number.
    NoDialPlanMatch {
        /// The number the rules were tried on.
        number: String,
    },
    /// A dial plan rule cannot be understood.
    BadDialPlan {
        /// The rule as written.
        rule: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl DialError {
    /// Errors about the shape of the text (the ones that let [`normalize_target`]
    /// fall back to the undecoded input).
    fn is_syntax(&self) -> bool {
        matches!(
            self,
            DialError::Empty
                | DialError::InvalidUri { .. }
                | DialError::InvalidTarget { .. }
                | DialError::BadPostDial { .. }
        )
    }
}

/// Text from the input as it may be shown: control characters escaped, long text cut.
fn shown(text: &str) -> String {
    crate::grammar::shown_within(text, 80, "…")
}

impl fmt::Display for DialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DialError::Empty => f.write_str("nothing to dial"),
            DialError::TooLong { len } => write!(
                f,
                "the target is too long ({len} bytes; at most {MAX_TARGET_LEN})"
            ),
            DialError::InvalidUri { uri, reason } => {
                write!(f, "\"{}\" is not a valid SIP URI: {reason}", shown(uri))
            }
            DialError::InvalidTarget { target, reason } => {
                write!(f, "\"{}\" cannot be dialed: {reason}", shown(target))
            }
            DialError::BadPostDial { digits } => write!(
                f,
                "post-dial digits may hold only 0-9, *, #, A-D and commas, not \"{}\"",
                shown(digits)
            ),
            DialError::NoDomain { account } => write!(
                f,
                "[Account{account}] has no domain to dial a number or name on"
            ),
            DialError::BadDomain { account, domain } => write!(
                f,
                "[Account{account}] domain \"{}\" is not a host name or address",
                shown(domain)
            ),
            DialError::NoDialPlanMatch { number } => {
                write!(f, "no dial plan rule matches {}", shown(number))
            }
            DialError::BadDialPlan { rule, reason } => {
                write!(
                    f,
                    "dial plan rule \"{}\" is malformed: {reason}",
                    shown(rule)
                )
            }
        }
    }
}

impl std::error::Error for DialError {}

/// Turns what the user typed into the URI to call on `account`; see the module
/// documentation for the steps.
pub fn normalize_target(input: &str, account: &Account) -> Result<Target, DialError> {
    if input.len() > MAX_TARGET_LEN {
        return Err(DialError::TooLong { len: input.len() });
    }
    if let Some(decoded) = percent_decode(input) {
        return match normalize_plain(&decoded, account) {
            Err(e) if e.is_syntax() => normalize_plain(input, account).map_err(|_| e),
            other => other,
        };
    }
    normalize_plain(input, account)
}

/// Decodes `%XX` escapes; `None` when there are none, one is broken, or the bytes
/// are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    if !text.contains('%') {
        return None;
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let pair = bytes.get(i + 1..i + 3)?;
            out.push(hex_value(pair[0])? * 16 + hex_value(pair[1])?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `text` without its first `prefix.len()` bytes when it starts with `prefix`,
/// ignoring ASCII case.
fn strip_prefix_ci<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

fn normalize_plain(input: &str, account: &Account) -> Result<Target, DialError> {
    let text = input.trim();
    if text.is_empty() {
        return Err(DialError::Empty);
    }
    if text.chars().any(char::is_control) {
        return Err(DialError::InvalidTarget {
            target: text.to_owned(),
            reason: "control characters are not allowed".into(),
        });
    }
    for scheme in ["sips", "sip"] {
        if let Some(rest) = text
            .split_once(':')
            .filter(|(s, _)| s.eq_ignore_ascii_case(scheme))
            .map(|(_, rest)| rest)
        {
            let uri = build_uri(scheme, rest).map_err(|reason| DialError::InvalidUri {
                uri: text.to_owned(),
                reason,
            })?;
            return Ok(Target {
                display: uri.clone(),
                uri,
                post_dial: None,
            });
        }
    }

    let mut text = text;
    if let Some(rest) = strip_prefix_ci(text, "tel:") {
        text = rest.split(';').next().unwrap_or_default().trim();
        if text.is_empty() {
            return Err(DialError::Empty);
        }
    }

    let mut post_dial = None;
    if let Some((before, after)) = text.split_once(',') {
        if before.trim().is_empty() {
            return Err(DialError::InvalidTarget {
                target: text.to_owned(),
                reason: "nothing to dial before the post-dial digits".into(),
            });
        }
        if is_phone_like(before) {
            if !after.chars().all(is_post_dial_char) {
                return Err(DialError::BadPostDial {
                    digits: after.to_owned(),
                });
            }
            if !after.is_empty() {
                post_dial = Some(after.to_owned());
            }
            text = before.trim();
        }
    }

    if let Some(host) = ip_literal(text) {
        let uri = with_transport(format!("sip:{host}"), account.transport);
        return Ok(Target {
            uri,
            post_dial,
            display: text.to_owned(),
        });
    }

    if text.contains('@') {
        let uri = build_uri("sip", text).map_err(|reason| DialError::InvalidUri {
            uri: text.to_owned(),
            reason,
        })?;
        return Ok(Target {
            uri: with_transport(uri, account.transport),
            post_dial,
            display: text.to_owned(),
        });
    }

    let number = if is_phone_like(text) {
        let digits: String = text
            .chars()
            .filter(|c| !is_separator(*c))
            .collect::<String>();
        apply_prefix(digits, account.dialing_prefix.as_deref())
    } else {
        if text.contains(':') {
            return Err(DialError::InvalidTarget {
                target: text.to_owned(),
                reason: "only sip:, sips: and tel: addresses can be dialed".into(),
            });
        }
        // Check the name before the dial plan sees it, for a clearer error.
        encode_user(text, false).map_err(|reason| DialError::InvalidTarget {
            target: text.to_owned(),
            reason,
        })?;
        text.to_owned()
    };

    let plan = DialPlan::parse(account.dial_plan.as_deref().unwrap_or_default())?;
    let number = plan
        .apply(&number)
        .ok_or_else(|| DialError::NoDialPlanMatch {
            number: number.clone(),
        })?;

    if account.domain.is_empty() {
        return Err(DialError::NoDomain {
            account: account.number,
        });
    }
    if check_hostport(&account.domain).is_err() {
        return Err(DialError::BadDomain {
            account: account.number,
            domain: account.domain.clone(),
        });
    }
    let user = encode_user(&number, false).map_err(|reason| DialError::InvalidTarget {
        target: number.clone(),
        reason,
    })?;
    let uri = with_transport(format!("sip:{user}@{}", account.domain), account.transport);
    Ok(Target {
        uri,
        post_dial,
        display: number,
    })
}

fn is_separator(c: char) -> bool {
    matches!(c, '.' | '-' | '(' | ')' | '/' | ' ')
}

/// An optional leading `+`, then digits, `*`, `#` and separators, with at least one
/// digit, `*` or `#`.
fn is_phone_like(text: &str) -> bool {
    let text = text.trim();
    let body = text.strip_prefix('+').unwrap_or(text);
    body.chars()
        .any(|c| c.is_ascii_digit() || c == '*' || c == '#')
        && body
            .chars()
            .all(|c| c.is_ascii_digit() || c == '*' || c == '#' || is_separator(c))
}

fn is_post_dial_char(c: char) -> bool {
    c.is_ascii_digit() || matches!(c, '*' | '#' | ',' | 'A'..='D' | 'a'..='d')
}

/// MicroSIP: the prefix goes in front of numbers longer than 3 characters, which lose
/// a leading `+`.
fn apply_prefix(number: String, prefix: Option<&str>) -> String {
    match prefix.map(str::trim).filter(|p| !p.is_empty()) {
        Some(prefix) if number.chars().count() > 3 => {
            format!("{prefix}{}", number.strip_prefix('+').unwrap_or(&number))
        }
        _ => number,
    }
}

/// `10.0.0.1`, `10.0.0.1:5070`, `[::1]`, `[::1]:5070`: the host to call directly.
fn ip_literal(text: &str) -> Option<&str> {
    if let Some(inner) = text.strip_prefix('[') {
        let (addr, rest) = inner.split_once(']')?;
        addr.parse::<Ipv6Addr>().ok()?;
        return (rest.is_empty() || rest.strip_prefix(':').and_then(parse_port).is_some())
            .then_some(text);
    }
    let (addr, port) = match text.split_once(':') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    addr.parse::<Ipv4Addr>().ok()?;
    match port {
        Some(p) => parse_port(p).map(|_| text),
        None => Some(text),
    }
}

fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u16>().ok().filter(|&p| p != 0)
}

fn with_transport(uri: String, transport: Transport) -> String {
    let param = match transport {
        Transport::Tcp => ";transport=tcp",
        Transport::Tls => ";transport=tls",
        Transport::Udp | Transport::UdpTcp => return uri,
    };
    if uri.to_ascii_lowercase().contains(";transport=") {
        return uri;
    }
    match uri.find('?') {
        Some(q) => format!("{}{param}{}", &uri[..q], &uri[q..]),
        None => uri + param,
    }
}

fn is_unreserved(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '!' | '~' | '*' | '\'' | '(' | ')')
}

/// RFC 3261 `user` characters that need no escaping.
fn is_user_char(c: char) -> bool {
    is_unreserved(c) || matches!(c, '&' | '=' | '+' | '$' | ',' | ';' | '?' | '/')
}

/// Checks the `%` escape at `chars[i]`: two hex digits must follow, and they must
/// not encode a control character.
fn check_escape(chars: &[char], i: usize) -> Result<(), String> {
    let value = chars.get(i + 1..i + 3).and_then(|h| {
        let hi = hex_value(u8::try_from(h[0]).ok()?)?;
        let lo = hex_value(u8::try_from(h[1]).ok()?)?;
        Some(hi * 16 + lo)
    });
    match value {
        None => Err("'%' must be followed by two hex digits".into()),
        Some(v) if v < 0x20 || v == 0x7f => {
            Err("escaped control characters are not allowed".into())
        }
        Some(_) => Ok(()),
    }
}

/// A character as it may be shown in a message.
fn show_char(c: char) -> String {
    if c.is_control() {
        c.escape_default().collect()
    } else {
        c.to_string()
    }
}

/// The user part as it goes into a URI: `#` and non-ASCII letters percent-encoded,
/// valid `%XX` escapes kept, anything else that a URI cannot hold refused.
/// `userinfo` also allows the `:` of `user:password`.
fn encode_user(user: &str, userinfo: bool) -> Result<String, String> {
    let chars: Vec<char> = user.chars().collect();
    let mut out = String::with_capacity(user.len());
    for (i, &c) in chars.iter().enumerate() {
        if c == '%' {
            check_escape(&chars, i)?;
            out.push(c);
        } else if is_user_char(c) || (userinfo && c == ':') {
            out.push(c);
        } else if c.is_whitespace() {
            return Err("blanks are not allowed".into());
        } else if c == '#' || !c.is_ascii() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            return Err(format!("'{}' is not allowed", show_char(c)));
        }
    }
    Ok(out)
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
fn check_hostport(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("no host".into());
    }
    let (host, port) = if let Some(inner) = text.strip_prefix('[') {
        let Some((addr, rest)) = inner.split_once(']') else {
            return Err("'[' without ']' around the IPv6 address".into());
        };
        if addr.parse::<Ipv6Addr>().is_err() {
            return Err(format!("\"{}\" is not an IPv6 address", shown(addr)));
        }
        match rest {
            "" => (text, None),
            _ => match rest.strip_prefix(':') {
                Some(p) => (text, Some(p)),
                None => return Err("unexpected text after the IPv6 address".into()),
            },
        }
    } else {
        match text.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        }
    };
    if !host.starts_with('[') {
        if host.is_empty() {
            return Err("no host".into());
        }
        if let Some(c) = host
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
        {
            return Err(format!("'{}' is not allowed in a host name", show_char(c)));
        }
        if host.starts_with('.') || host.contains("..") {
            return Err("empty label in the host name".into());
        }
    }
    if let Some(p) = port {
        if parse_port(p).is_none() {
            return Err(format!(
                "\"{}\" is not a port number (1 to 65535)",
                shown(p)
            ));
        }
    }
    Ok(())
}

/// Checks and rebuilds `scheme:rest`.
fn build_uri(scheme: &str, rest: &str) -> Result<String, String> {
    if rest.is_empty() {
        return Err(format!("nothing after {scheme}:"));
    }
    if rest.chars().any(char::is_whitespace) {
        return Err("blanks are not allowed".into());
    }
    let (user, after) = match rest.split_once('@') {
        Some((user, after)) => {
            if after.contains('@') {
                return Err("more than one '@'".into());
            }
            if user.is_empty() {
                return Err("no user before '@'".into());
            }
            (Some(encode_user(user, true)?), after)
        }
        None => (None, rest),
    };
    let end = after.find([';', '?']).unwrap_or(after.len());
    let (hostport, params) = after.split_at(end);
    check_hostport(hostport)?;
    let pchars: Vec<char> = params.chars().collect();
    for (i, &c) in pchars.iter().enumerate() {
        if c == '%' {
            check_escape(&pchars, i)?;
        } else if !(is_unreserved(c)
            || matches!(
                c,
                '[' | ']' | '/' | ':' | '&' | '+' | '$' | ';' | '=' | '?' | ','
            ))
        {
            return Err(format!(
                "'{}' is not allowed in URI parameters",
                show_char(c)
            ));
        }
    }
    Ok(match user {
        Some(user) => format!("{scheme}:{user}@{hostport}{params}"),
        None => format!("{scheme}:{hostport}{params}"),
    })
}

/// A MicroSIP dial plan (`dialPlan`): rules separated by `|`, the first rule that
/// matches the whole number rewrites it; when there are rules and none matches, the
/// number may not be dialed.
///
/// Rule syntax:
/// - blanks and parentheses around the plan and around each rule are trimmed (so
///   `(xxx|9xxx)` and `(xxx)|(9xxx)` both hold the rules `xxx` and `9xxx`); empty
///   rules are skipped; a plan with no rules lets every number through;
/// - `x` / `X`: any one character (as in MicroSIP, whose rules are regular
///   expressions where `x` becomes `.`; numbers reaching the plan hold only digits,
///   `*`, `#` and a leading `+`, or a name's characters);
/// - `.`: the previous `x` or literal zero or more times (greedy, backtracking);
/// - `0`-`9`, `*`, `#`, `+`: themselves;
/// - `<match:replace>`: `match` (literals, `x`, `.`) is matched and replaced by
///   `replace` (digits, `*`, `#`, `+`; may be empty to strip). `<match>` without `:`
///   only matches. Groups do not nest and cannot be repeated with `.`.
///
/// Anything else in a rule makes the whole plan malformed ([`DialError::BadDialPlan`]
/// names the rule), whatever the number.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DialPlan {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    elements: Vec<Element>,
    /// Per group, in order: what replaces its match (`None`: keep it).
    replacements: Vec<Option<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Atom {
    Literal(char),
    Any,
}

impl Atom {
    fn matches(self, c: char) -> bool {
        match self {
            Atom::Literal(l) => l == c,
            Atom::Any => true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Element {
    One(Atom),
    /// Zero or more.
    Many(Atom),
    Open(usize),
    Close(usize),
}

fn is_phone_char(c: char) -> bool {
    c.is_ascii_digit() || matches!(c, '*' | '#' | '+')
}

impl DialPlan {
    /// Parses a `dialPlan` value.
    pub fn parse(text: &str) -> Result<DialPlan, DialError> {
        let mut rules = Vec::new();
        for raw in text.split('|') {
            let rule = raw.trim_matches(|c: char| c.is_whitespace() || c == '(' || c == ')');
            if rule.is_empty() {
                continue;
            }
            rules.push(Rule::parse(rule).map_err(|reason| DialError::BadDialPlan {
                rule: rule.to_owned(),
                reason,
            })?);
        }
        Ok(DialPlan { rules })
    }

    /// True when the plan has no rules (every number goes through unchanged).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The number rewritten by the first matching rule; `None` when there are rules
    /// and none matches.
    pub fn apply(&self, number: &str) -> Option<String> {
        if self.rules.is_empty() {
            return Some(number.to_owned());
        }
        let text: Vec<char> = number.chars().collect();
        self.rules.iter().find_map(|rule| rule.apply(&text))
    }
}

#[derive(PartialEq)]
enum GroupPart {
    Outside,
    Match,
    Replace,
}

impl Rule {
    fn parse(rule: &str) -> Result<Rule, String> {
        let mut open = false;
        for c in rule.chars() {
            match (c, open) {
                ('<', true) => return Err("'<' inside <...>".into()),
                ('<', false) => open = true,
                ('>', false) => return Err("'>' without '<'".into()),
                ('>', true) => open = false,
                _ => {}
            }
        }
        if open {
            return Err("'<' without '>'".into());
        }
        let mut elements = Vec::new();
        let mut replacements: Vec<Option<String>> = Vec::new();
        let mut part = GroupPart::Outside;
        let mut replacement: Option<String> = None;
        for c in rule.chars() {
            if part == GroupPart::Replace && c != '>' {
                if !is_phone_char(c) {
                    return Err(format!(
                        "'{}' in a replacement (only digits, *, # and + may replace)",
                        show_char(c)
                    ));
                }
                replacement.get_or_insert_with(String::new).push(c);
                continue;
            }
            match c {
                '<' => {
                    if part != GroupPart::Outside {
                        return Err("'<' inside <...>".into());
                    }
                    elements.push(Element::Open(replacements.len()));
                    part = GroupPart::Match;
                    replacement = None;
                }
                ':' => {
                    if part != GroupPart::Match {
                        return Err("':' outside <...>".into());
                    }
                    part = GroupPart::Replace;
                    replacement = Some(String::new());
                }
                '>' => {
                    if part == GroupPart::Outside {
                        return Err("'>' without '<'".into());
                    }
                    elements.push(Element::Close(replacements.len()));
                    replacements.push(replacement.take());
                    part = GroupPart::Outside;
                }
                '.' => match elements.last().copied() {
                    Some(Element::One(atom)) => {
                        if let Some(last) = elements.last_mut() {
                            *last = Element::Many(atom);
                        }
                    }
                    Some(Element::Many(_)) => return Err("'.' after '.'".into()),
                    Some(Element::Close(_)) => return Err("'.' cannot repeat a <...> group".into()),
                    Some(Element::Open(_)) | None => {
                        return Err("'.' with nothing before it to repeat".into())
                    }
                },
                'x' | 'X' => elements.push(Element::One(Atom::Any)),
                c if is_phone_char(c) => elements.push(Element::One(Atom::Literal(c))),
                c => {
                    return Err(format!(
                        "unexpected '{}' (rules use digits, x, ., *, #, + and <match:replace>)",
                        show_char(c)
                    ))
                }
            }
            if elements.len() > MAX_RULE_ELEMENTS {
                return Err(format!("longer than {MAX_RULE_ELEMENTS} elements"));
            }
        }
        if part != GroupPart::Outside {
            return Err("'<' without '>'".into());
        }
        Ok(Rule {
            elements,
            replacements,
        })
    }

    fn apply(&self, text: &[char]) -> Option<String> {
        let spans = self.full_match(text)?;
        let mut out = String::new();
        let mut at = 0;
        for (&(start, end), replacement) in spans.iter().zip(&self.replacements) {
            out.extend(&text[at..start]);
            match replacement {
                Some(r) => out.push_str(r),
                None => out.extend(&text[start..end]),
            }
            at = end;
        }
        out.extend(&text[at..]);
        Some(out)
    }

    /// Backtracking match of the whole rule against the whole text; the span of each
    /// group on success. A state is (element, position); `x.` tries one more
    /// character before moving on (greedy). States known to fail are remembered (their
    /// outcome does not depend on how they were reached), so the work is bounded by
    /// elements × characters, and the explicit stack keeps deep searches off the call
    /// stack.
    fn full_match(&self, text: &[char]) -> Option<Vec<(usize, usize)>> {
        let mut spans = vec![(0, 0); self.replacements.len()];
        let width = text.len() + 1;
        let mut failed = vec![false; (self.elements.len() + 1) * width];
        // (element, position, how many of its successors have been tried)
        let mut stack: Vec<(usize, usize, u8)> = vec![(0, 0, 0)];
        while let Some(top) = stack.last_mut() {
            let (i, pos, tried) = *top;
            top.2 += 1;
            let state = i * width + pos;
            if tried == 0 && failed[state] {
                stack.pop();
                continue;
            }
            let here = text.get(pos).copied();
            let next = match self.elements.get(i) {
                None => {
                    if pos == text.len() {
                        return Some(spans);
                    }
                    None
                }
                Some(&Element::Open(g)) => (tried == 0).then(|| {
                    if let Some(span) = spans.get_mut(g) {
                        span.0 = pos;
                    }
                    (i + 1, pos)
                }),
                Some(&Element::Close(g)) => (tried == 0).then(|| {
                    if let Some(span) = spans.get_mut(g) {
                        span.1 = pos;
                    }
                    (i + 1, pos)
                }),
                Some(&Element::One(atom)) => (tried == 0 && here.is_some_and(|c| atom.matches(c)))
                    .then_some((i + 1, pos + 1)),
                Some(&Element::Many(atom)) => {
                    let more = here.is_some_and(|c| atom.matches(c));
                    match (tried, more) {
                        (0, true) => Some((i, pos + 1)),
                        (0, false) | (1, true) => Some((i + 1, pos)),
                        _ => None,
                    }
                }
            };
            match next {
                Some((ni, np)) => stack.push((ni, np, 0)),
                None => {
                    failed[state] = true;
                    stack.pop();
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use microsip_config::{Config, IniDocument};

    /// `[Account1]` with domain pbx.example and the given extra lines.
    fn account(extra: &str) -> Account {
        let text = format!("[Account1]\ndomain=pbx.example\nusername=100\n{extra}\n");
        let (doc, _) = IniDocument::parse(text.as_bytes());
        Config::from_document(&doc, "test.ini").accounts[1].clone()
    }

    fn ok(uri: &str, post: Option<&str>, display: &str) -> Result<Target, DialError> {
        Ok(Target {
            uri: uri.to_owned(),
            post_dial: post.map(str::to_owned),
            display: display.to_owned(),
        })
    }

    fn no_match(number: &str) -> Result<Target, DialError> {
        Err(DialError::NoDialPlanMatch {
            number: number.to_owned(),
        })
    }

    #[test]
    fn table() {
        const RU: &str = "dialPlan=<8:+7>xxxxxxxxxx|<:9>xxxxxxx|<00:>x.|xxx";
        let cases: Vec<(&str, &str, Result<Target, DialError>)> = vec![
            // plain numbers and names
            ("", "123", ok("sip:123@pbx.example", None, "123")),
            ("", "  123  ", ok("sip:123@pbx.example", None, "123")),
            ("", "*97", ok("sip:*97@pbx.example", None, "*97")),
            ("", "*97#", ok("sip:*97%23@pbx.example", None, "*97#")),
            (
                "",
                "+49 (30) 123-45/67",
                ok("sip:+49301234567@pbx.example", None, "+49301234567"),
            ),
            (
                "",
                "030.123.456",
                ok("sip:030123456@pbx.example", None, "030123456"),
            ),
            ("", "alice", ok("sip:alice@pbx.example", None, "alice")),
            (
                "",
                "Jürgen",
                ok("sip:J%C3%BCrgen@pbx.example", None, "Jürgen"),
            ),
            // dialing prefix
            (
                "dialingPrefix=00",
                "4930123",
                ok("sip:004930123@pbx.example", None, "004930123"),
            ),
            (
                "dialingPrefix=00",
                "+4930123",
                ok("sip:004930123@pbx.example", None, "004930123"),
            ),
            (
                "dialingPrefix=00",
                "123",
                ok("sip:123@pbx.example", None, "123"),
            ),
            (
                "dialingPrefix=00",
                "alice",
                ok("sip:alice@pbx.example", None, "alice"),
            ),
            // dial plan
            (
                RU,
                "89161234567",
                ok("sip:+79161234567@pbx.example", None, "+79161234567"),
            ),
            (
                RU,
                "8 (916) 123-45-67",
                ok("sip:+79161234567@pbx.example", None, "+79161234567"),
            ),
            (
                RU,
                "1234567",
                ok("sip:91234567@pbx.example", None, "91234567"),
            ),
            (
                RU,
                "0049301234",
                ok("sip:49301234@pbx.example", None, "49301234"),
            ),
            (RU, "101", ok("sip:101@pbx.example", None, "101")),
            (RU, "12345", no_match("12345")),
            (RU, "alice", no_match("alice")),
            (
                "dialPlan=(xxx|9xxx)",
                "9123",
                ok("sip:9123@pbx.example", None, "9123"),
            ),
            (
                "dialPlan=(1xx)|(2xx)",
                "250",
                ok("sip:250@pbx.example", None, "250"),
            ),
            ("dialPlan=9x.", "9", ok("sip:9@pbx.example", None, "9")),
            (
                "dialPlan=XXX",
                "a1b",
                ok("sip:a1b@pbx.example", None, "a1b"),
            ),
            (
                "dialPlan=<0:>1x.|<1>x",
                "0123",
                ok("sip:123@pbx.example", None, "123"),
            ),
            (
                "dialPlan=<00:+>x.",
                "0049",
                ok("sip:+49@pbx.example", None, "+49"),
            ),
            (
                "dialPlan=()",
                "12345",
                ok("sip:12345@pbx.example", None, "12345"),
            ),
            ("dialPlan=xxx\ndialingPrefix=9", "1234", no_match("91234")),
            (
                "dialPlan=9xxxx\ndialingPrefix=9",
                "+1234",
                ok("sip:91234@pbx.example", None, "91234"),
            ),
            // URIs
            (
                "",
                "sip:100@host.example",
                ok("sip:100@host.example", None, "sip:100@host.example"),
            ),
            (
                "",
                "SIP:100@host.example",
                ok("sip:100@host.example", None, "sip:100@host.example"),
            ),
            (
                "",
                "sips:bob@host.example:5061;transport=tls",
                ok(
                    "sips:bob@host.example:5061;transport=tls",
                    None,
                    "sips:bob@host.example:5061;transport=tls",
                ),
            ),
            (
                "",
                "sip:host.example",
                ok("sip:host.example", None, "sip:host.example"),
            ),
            (
                "",
                "sip:[::1]:5070",
                ok("sip:[::1]:5070", None, "sip:[::1]:5070"),
            ),
            (
                "transport=tcp\ndialPlan=xxx",
                "sip:12345@host",
                ok("sip:12345@host", None, "sip:12345@host"),
            ),
            (
                "",
                "1001@10.0.0.1",
                ok("sip:1001@10.0.0.1", None, "1001@10.0.0.1"),
            ),
            (
                "dialPlan=xxx",
                "1001@10.0.0.1",
                ok("sip:1001@10.0.0.1", None, "1001@10.0.0.1"),
            ),
            ("", "10.0.0.1", ok("sip:10.0.0.1", None, "10.0.0.1")),
            (
                "transport=tcp",
                "10.0.0.1:5070",
                ok("sip:10.0.0.1:5070;transport=tcp", None, "10.0.0.1:5070"),
            ),
            // tel:
            (
                "",
                "tel:+4930123",
                ok("sip:+4930123@pbx.example", None, "+4930123"),
            ),
            (
                "",
                "TEL:+1-201-555-0123;phone-context=x",
                ok("sip:+12015550123@pbx.example", None, "+12015550123"),
            ),
            (
                "dialingPrefix=00",
                "tel:+4930123",
                ok("sip:004930123@pbx.example", None, "004930123"),
            ),
            // post-dial
            ("", "123,45#", ok("sip:123@pbx.example", Some("45#"), "123")),
            (
                "",
                "+49 30 123,,45,6",
                ok("sip:+4930123@pbx.example", Some(",45,6"), "+4930123"),
            ),
            ("", "123,", ok("sip:123@pbx.example", None, "123")),
            (
                RU,
                "89161234567,1",
                ok("sip:+79161234567@pbx.example", Some("1"), "+79161234567"),
            ),
            ("", "tel:123,4", ok("sip:123@pbx.example", Some("4"), "123")),
            // transport
            (
                "transport=tcp",
                "123",
                ok("sip:123@pbx.example;transport=tcp", None, "123"),
            ),
            (
                "transport=tls",
                "123",
                ok("sip:123@pbx.example;transport=tls", None, "123"),
            ),
            ("transport=", "123", ok("sip:123@pbx.example", None, "123")),
            (
                "transport=tcp",
                "bob@h;transport=udp",
                ok("sip:bob@h;transport=udp", None, "bob@h;transport=udp"),
            ),
            (
                "transport=tcp",
                "bob@h?subject=x",
                ok("sip:bob@h;transport=tcp?subject=x", None, "bob@h?subject=x"),
            ),
            // percent escapes
            (
                "",
                "%2B4930123",
                ok("sip:+4930123@pbx.example", None, "+4930123"),
            ),
            (
                "",
                "49%2030%20123",
                ok("sip:4930123@pbx.example", None, "4930123"),
            ),
            ("", "sip:a%20b@c", ok("sip:a%20b@c", None, "sip:a%20b@c")),
            ("", "sip:%2B123@c", ok("sip:+123@c", None, "sip:+123@c")),
            ("", "100%25", ok("sip:100%25@pbx.example", None, "100%25")),
            (
                RU,
                "%38%39161234567",
                ok("sip:+79161234567@pbx.example", None, "+79161234567"),
            ),
        ];
        assert!(cases.len() >= 30);
        for (extra, input, expected) in cases {
            let got = normalize_target(input, &account(extra));
            assert_eq!(got, expected, "input {input:?} with {extra:?}");
        }
    }

    fn error(extra: &str, input: &str) -> DialError {
        match normalize_target(input, &account(extra)) {
            Ok(t) => panic!("{input:?} gave {t:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn bad_input_is_refused_with_clear_words() {
        let cases: &[(&str, &str)] = &[
            ("", "nothing to dial"),
            ("   ", "nothing to dial"),
            ("tel:", "nothing to dial"),
            ("sip:", "\"sip:\" is not a valid SIP URI: nothing after sip:"),
            ("sips:", "\"sips:\" is not a valid SIP URI: nothing after sips:"),
            ("sip:a b@c", "\"sip:a b@c\" is not a valid SIP URI: blanks are not allowed"),
            ("sip:@c", "\"sip:@c\" is not a valid SIP URI: no user before '@'"),
            ("sip:a@", "\"sip:a@\" is not a valid SIP URI: no host"),
            ("sip:a@b@c", "\"sip:a@b@c\" is not a valid SIP URI: more than one '@'"),
            ("sip:a@c:99999", "\"sip:a@c:99999\" is not a valid SIP URI: \"99999\" is not a port number (1 to 65535)"),
            ("sip:<a>@c", "\"sip:<a>@c\" is not a valid SIP URI: '<' is not allowed"),
            ("sip:a@c;x=\"y\"", "\"sip:a@c;x=\"y\"\" is not a valid SIP URI: '\"' is not allowed in URI parameters"),
            ("sip:a@c d", "\"sip:a@c d\" is not a valid SIP URI: blanks are not allowed"),
            ("12\n3", "\"12\\n3\" cannot be dialed: control characters are not allowed"),
            ("sip:1\r\nVia: x@h", "\"sip:1\\r\\nVia: x@h\" cannot be dialed: control characters are not allowed"),
            ("12%0A3", "\"12\\n3\" cannot be dialed: control characters are not allowed"),
            ("sip:1%0D%0AVia:x@h", "\"sip:1\\r\\nVia:x@h\" cannot be dialed: control characters are not allowed"),
            ("john smith", "\"john smith\" cannot be dialed: blanks are not allowed"),
            ("100%", "\"100%\" cannot be dialed: '%' must be followed by two hex digits"),
            ("http://x", "\"http://x\" cannot be dialed: only sip:, sips: and tel: addresses can be dialed"),
            ("a\"b", "\"a\"b\" cannot be dialed: '\"' is not allowed"),
            (",45", "\",45\" cannot be dialed: nothing to dial before the post-dial digits"),
            ("123,4x5", "post-dial digits may hold only 0-9, *, #, A-D and commas, not \"4x5\""),
            ("a b@c", "\"a b@c\" is not a valid SIP URI: blanks are not allowed"),
        ];
        for (input, message) in cases {
            let e = error("", input);
            assert_eq!(e.to_string(), *message, "input {input:?}");
        }
    }

    #[test]
    fn control_characters_after_decoding_are_refused() {
        // %0A decodes to a newline: the decoded form is refused, and so is the raw
        // form (an escaped control character is refused, not sent).
        let e = error("", "12%0A3");
        assert!(matches!(e, DialError::InvalidTarget { .. }), "{e:?}");
        let e = error("", "sip:1%0D%0AVia:x@h");
        assert!(matches!(e, DialError::InvalidTarget { .. }), "{e:?}");
        // Escaped control characters are refused in URIs given raw, too.
        // (a stray '%' stops decoding, so the raw text is what is checked).
        let e = error("", "sip:a@h;x=%7F;y=%");
        assert!(matches!(e, DialError::InvalidUri { .. }), "{e:?}");
        assert_eq!(
            build_uri("sip", "a%0A@h"),
            Err("escaped control characters are not allowed".into())
        );
    }

    #[test]
    fn dial_plan_errors() {
        let e = error(RU_BAD, "123");
        assert_eq!(
            e.to_string(),
            "dial plan rule \"<8:+7xxx\" is malformed: '<' without '>'"
        );
        for (plan, reason) in [
            ("8>x", "'>' without '<'"),
            ("<8<9>>", "'<' inside <...>"),
            (".1", "'.' with nothing before it to repeat"),
            ("<.1>", "'.' with nothing before it to repeat"),
            ("1..", "'.' after '.'"),
            ("<1>.", "'.' cannot repeat a <...> group"),
            ("1:2", "':' outside <...>"),
            (
                "[2-9]xx",
                "unexpected '[' (rules use digits, x, ., *, #, + and <match:replace>)",
            ),
            (
                "<1:a>",
                "'a' in a replacement (only digits, *, # and + may replace)",
            ),
            (
                "1 2",
                "unexpected ' ' (rules use digits, x, ., *, #, + and <match:replace>)",
            ),
        ] {
            match DialPlan::parse(plan) {
                Err(DialError::BadDialPlan { rule, reason: r }) => {
                    assert_eq!((rule.as_str(), r.as_str()), (plan, reason))
                }
                other => panic!("{plan:?}: {other:?}"),
            }
        }
        let long = "x".repeat(MAX_RULE_ELEMENTS + 1);
        assert!(DialPlan::parse(&long).is_err());
        assert!(DialPlan::parse(&"x".repeat(MAX_RULE_ELEMENTS)).is_ok());
        // A bad rule is reported even when an earlier rule would match.
        assert!(matches!(
            error("dialPlan=xxx|<1", "123"),
            DialError::BadDialPlan { .. }
        ));
        // URIs do not go through the plan, so a bad plan does not stop them.
        assert!(normalize_target("sip:1@h", &account("dialPlan=<1")).is_ok());
    }

    const RU_BAD: &str = "dialPlan=xxx|<8:+7xxx";

    #[test]
    fn no_match_message() {
        assert_eq!(
            error("dialPlan=xxx", "12345").to_string(),
            "no dial plan rule matches 12345"
        );
    }

    #[test]
    fn dial_plan_matcher() {
        let plan = DialPlan::parse("<8:+7>xxxxxxxxxx | <:9>xxxxxxx|<00:>x.").unwrap();
        assert_eq!(plan.apply("89161234567").as_deref(), Some("+79161234567"));
        assert_eq!(plan.apply("1234567").as_deref(), Some("91234567"));
        assert_eq!(plan.apply("00").as_deref(), Some(""));
        assert_eq!(plan.apply("0012").as_deref(), Some("12"));
        assert_eq!(plan.apply("123"), None);
        // first match wins
        let plan = DialPlan::parse("<1:A>x|<1:B>x|1x").unwrap_err();
        assert!(matches!(plan, DialError::BadDialPlan { .. }));
        let plan = DialPlan::parse("<1:2>x|<1:3>x").unwrap();
        assert_eq!(plan.apply("15").as_deref(), Some("25"));
        // groups in the middle, several groups, plain groups
        let plan = DialPlan::parse("1<23:45>6<7>8<:#>").unwrap();
        assert_eq!(plan.apply("123678").as_deref(), Some("145678#"));
        // greedy repetition with backtracking
        let plan = DialPlan::parse("<1.:>1x").unwrap();
        assert_eq!(plan.apply("11115").as_deref(), Some("15"));
        let plan = DialPlan::parse("x.<5:6>x.").unwrap();
        assert_eq!(plan.apply("15525").as_deref(), Some("15526"));
        // anchored to the whole number
        let plan = DialPlan::parse("12").unwrap();
        assert_eq!(plan.apply("123"), None);
        assert_eq!(plan.apply("012"), None);
        assert_eq!(plan.apply("12").as_deref(), Some("12"));
        // empty plans
        for empty in ["", "  ", "()", "||", "( | )"] {
            let plan = DialPlan::parse(empty).unwrap();
            assert!(plan.is_empty());
            assert_eq!(plan.apply("anything").as_deref(), Some("anything"));
        }
        // literal * # +
        let plan = DialPlan::parse("*x#|+x.").unwrap();
        assert_eq!(plan.apply("*5#").as_deref(), Some("*5#"));
        assert_eq!(plan.apply("+49").as_deref(), Some("+49"));
        assert_eq!(plan.apply("+").as_deref(), Some("+"));
        assert_eq!(plan.apply("*55#"), None);
    }

    #[test]
    fn matcher_is_fast_on_pathological_rules() {
        let rule = "x.".repeat(100) + "1";
        let plan = DialPlan::parse(&rule).unwrap();
        let number = "2".repeat(MAX_TARGET_LEN);
        let start = std::time::Instant::now();
        assert_eq!(plan.apply(&number), None);
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn hostile_and_huge_input_is_just_data() {
        let acc = account(RU_OK);
        let huge = "1".repeat(MAX_TARGET_LEN + 1);
        assert_eq!(
            normalize_target(&huge, &acc),
            Err(DialError::TooLong {
                len: MAX_TARGET_LEN + 1
            })
        );
        let long = "1".repeat(MAX_TARGET_LEN);
        assert!(matches!(
            normalize_target(&long, &acc),
            Err(DialError::NoDialPlanMatch { .. })
        ));
        for input in [
            "\"; rm -rf / #",
            "$(reboot)",
            "sip:x@h>;evil",
            "%",
            "%%%",
            "%ZZ",
            "%C3",
            "sip:%C3@h",
            "😀",
            "\u{202e}123",
            "@",
            "@@",
            ":",
            "[",
            "[::1",
            "sip:[::1",
            "sip:a@[zz]",
            ",",
            ",,,",
            "+",
            "++1",
            "tel:;x",
        ] {
            // Must not panic; any answer is fine but errors must print.
            if let Err(e) = normalize_target(input, &acc) {
                assert!(!e.to_string().is_empty());
            }
        }
        let e = normalize_target(&format!("a\n{}", "b".repeat(500)), &acc).unwrap_err();
        assert!(e.to_string().chars().count() < 200, "{e}");
    }

    const RU_OK: &str = "dialPlan=<8:+7>xxxxxxxxxx|<:9>xxxxxxx";

    #[test]
    fn account_domain_problems() {
        let mut acc = account("");
        acc.domain.clear();
        assert_eq!(
            normalize_target("123", &acc),
            Err(DialError::NoDomain { account: 1 })
        );
        assert!(normalize_target("sip:1@h", &acc).is_ok());
        acc.domain = "bad domain".into();
        assert_eq!(
            normalize_target("123", &acc).unwrap_err().to_string(),
            "[Account1] domain \"bad domain\" is not a host name or address"
        );
        acc.domain = "pbx.example:5070".into();
        assert_eq!(
            normalize_target("123", &acc).unwrap().uri,
            "sip:123@pbx.example:5070"
        );
    }

    #[test]
    fn decoding_twice_is_harmless() {
        let acc = account("");
        for input in ["%2B4930123", "sip:a%20b@c", "49%2030", "100%2525"] {
            let once = normalize_target(input, &acc).unwrap();
            let twice = normalize_target(&percent_decode(input).unwrap(), &acc);
            if let Ok(twice) = twice {
                // Where the decoded text is dialable, it dials the same.
                assert_eq!(once, twice, "{input}");
            }
        }
        // The grammar decodes first; decoding again must not break a valid URI.
        let t = normalize_target("sip:alice%40home@h", &acc).unwrap();
        assert_eq!(t.uri, "sip:alice%40home@h");
    }
}
