//! The pieces of RFC 3261's grammar (§25.1) the reader checks header values and
//! URIs against. Every function takes text that has been unfolded (RFC 3261 §7.3.1:
//! a line fold is white space) and says what is wrong, in words fit for a reason
//! phrase.

/// Why a message is malformed (the text goes into the 400's reason phrase).
pub(crate) type Bad = &'static str;

/// `token` characters (RFC 3261 §25.1).
pub(crate) fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// `word` characters (Call-ID).
fn is_word_char(b: u8) -> bool {
    is_token_char(b) || b"()<>:\\\"/[]?{}".contains(&b)
}

/// `unreserved` = alphanum / mark.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b)
}

pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Text with `%` escapes: every `%` must start `%HH`.
fn escapes_ok(s: &[u8]) -> bool {
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            if !(s.get(i + 1).is_some_and(|b| b.is_ascii_hexdigit())
                && s.get(i + 2).is_some_and(|b| b.is_ascii_hexdigit()))
            {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

/// Every byte is `unreserved`, an escape, or one of `extra`.
fn chars_ok(s: &str, extra: &[u8]) -> bool {
    escapes_ok(s.as_bytes())
        && s.bytes()
            .all(|b| is_unreserved(b) || b == b'%' || extra.contains(&b))
}

/// The scheme of a URI (`sip`, `tel`, `soap.beep`...), if the text starts with one.
pub(crate) fn scheme(uri: &str) -> Option<&str> {
    let (scheme, _) = uri.split_once(':')?;
    let mut bytes = scheme.bytes();
    let first = bytes.next()?;
    (first.is_ascii_alphabetic() && bytes.all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)))
        .then_some(scheme)
}

pub(crate) fn is_sip_scheme(scheme: &str) -> bool {
    scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips")
}

/// `host` = hostname / IPv4address / IPv6reference.
fn host_ok(host: &str) -> bool {
    if let Some(v6) = host.strip_prefix('[') {
        return v6
            .strip_suffix(']')
            .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok());
    }
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !host.starts_with('.')
        && !host.starts_with('-')
}

/// `hostport` = host [ ":" port ].
pub(crate) fn hostport_ok(hp: &str) -> bool {
    let (host, port) = if hp.starts_with('[') {
        match hp.find(']') {
            Some(end) => (&hp[..=end], hp[end + 1..].strip_prefix(':')),
            None => return false,
        }
    } else {
        match hp.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hp, None),
        }
    };
    host_ok(host)
        && port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// A SIP or SIPS URI (RFC 3261 §19.1.1). `headers_allowed` is false for a
/// Request-URI (§19.1.5: escaped headers have no meaning there).
pub(crate) fn sip_uri_ok(uri: &str, headers_allowed: bool) -> Result<(), Bad> {
    let Some((scheme, rest)) = uri.split_once(':') else {
        return Err("URI without scheme");
    };
    if !is_sip_scheme(scheme) {
        return Err("not a SIP URI");
    }
    let (userinfo, rest) = match rest.find('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    if let Some(userinfo) = userinfo {
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (userinfo, None),
        };
        if user.is_empty() || !chars_ok(user, b"&=+$,;?/") {
            return Err("bad user part in URI");
        }
        if password.is_some_and(|p| !chars_ok(p, b"&=+$,")) {
            return Err("bad password in URI");
        }
    }
    let (before_headers, headers) = match rest.split_once('?') {
        Some((a, h)) => (a, Some(h)),
        None => (rest, None),
    };
    let mut parts = before_headers.split(';');
    let hostport = parts.next().unwrap_or_default();
    if !hostport_ok(hostport) {
        return Err("bad host in URI");
    }
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (param, None),
        };
        if name.is_empty() || !chars_ok(name, b"[]/:&+$") {
            return Err("bad URI parameter");
        }
        if value.is_some_and(|v| v.is_empty() || !chars_ok(v, b"[]/:&+$")) {
            return Err("bad URI parameter value");
        }
    }
    if let Some(headers) = headers {
        if !headers_allowed {
            return Err("escaped headers in Request-URI");
        }
        for h in headers.split('&') {
            let Some((n, v)) = h.split_once('=') else {
                return Err("bad URI header");
            };
            if n.is_empty() || !chars_ok(n, b"[]/?:+$") || !chars_ok(v, b"[]/?:+$") {
                return Err("bad URI header");
            }
        }
    }
    Ok(())
}

/// Any URI: a SIP one checked in full, another scheme's as `absoluteURI`.
pub(crate) fn uri_ok(uri: &str, headers_allowed: bool) -> Result<(), Bad> {
    let Some(scheme) = scheme(uri) else {
        return Err("URI without scheme");
    };
    if is_sip_scheme(scheme) {
        return sip_uri_ok(uri, headers_allowed);
    }
    let rest = &uri[scheme.len() + 1..];
    if rest.is_empty() || !chars_ok(rest, b";/?:@&=+$,") {
        return Err("bad URI");
    }
    Ok(())
}

/// A cursor over a header value.
pub(crate) struct Cursor<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(s: &'a str) -> Cursor<'a> {
        Cursor { s, i: 0 }
    }

    pub(crate) fn rest(&self) -> &'a str {
        &self.s[self.i..]
    }

    pub(crate) fn at_end(&self) -> bool {
        self.i >= self.s.len()
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    pub(crate) fn skip_ws(&mut self) {
        while self.peek().is_some_and(is_wsp) {
            self.i += 1;
        }
    }

    /// `c` with white space either side (SEMI, EQUAL, COMMA, SLASH...).
    pub(crate) fn eat(&mut self, c: u8) -> bool {
        let start = self.i;
        self.skip_ws();
        if self.peek() == Some(c) {
            self.i += 1;
            self.skip_ws();
            true
        } else {
            self.i = start;
            false
        }
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a str {
        let start = self.i;
        while self.peek().is_some_and(&f) {
            self.i += 1;
        }
        &self.s[start..self.i]
    }

    pub(crate) fn token(&mut self) -> Option<&'a str> {
        let t = self.take_while(is_token_char);
        (!t.is_empty()).then_some(t)
    }

    /// A `quoted-string`, quotes included.
    pub(crate) fn quoted(&mut self) -> Result<&'a str, Bad> {
        let start = self.i;
        if self.peek() != Some(b'"') {
            return Err("expected a quoted string");
        }
        self.i += 1;
        loop {
            match self.peek() {
                None => return Err("unterminated quoted string"),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(&self.s[start..self.i]);
                }
                Some(b'\\') => {
                    // quoted-pair: any octet but CR and LF; a character beyond
                    // ASCII (RFC 3261 allows none) is taken whole, not cut.
                    match self.s[self.i + 1..].chars().next() {
                        Some('\r') | Some('\n') | None => {
                            return Err("bad escape in quoted string")
                        }
                        Some(escaped) => self.i += 1 + escaped.len_utf8(),
                    }
                }
                Some(b) if b < 0x20 && b != b'\t' => {
                    return Err("control character in quoted string")
                }
                Some(_) => {
                    // Whole UTF-8 characters: the text is a &str already.
                    let ch = self.rest().chars().next().map(char::len_utf8).unwrap_or(1);
                    self.i += ch;
                }
            }
        }
    }

    /// `gen-value` = token / host / quoted-string.
    fn gen_value(&mut self) -> Result<&'a str, Bad> {
        if self.peek() == Some(b'"') {
            return self.quoted();
        }
        let v = self.take_while(|b| is_token_char(b) || b == b'[' || b == b']' || b == b':');
        if v.is_empty() {
            return Err("empty parameter value");
        }
        Ok(v)
    }

    /// `*( SEMI generic-param )`, each as (name, value).
    pub(crate) fn params(&mut self) -> Result<Vec<(&'a str, Option<&'a str>)>, Bad> {
        let mut out = Vec::new();
        while self.eat(b';') {
            let Some(name) = self.token() else {
                return Err("empty parameter");
            };
            let value = if self.eat(b'=') {
                Some(self.gen_value()?)
            } else {
                None
            };
            out.push((name, value));
        }
        Ok(out)
    }
}

/// Splits a header value at the commas that separate list elements (outside quoted
/// strings and `<...>`).
pub(crate) fn split_list(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut quoted, mut angle, mut escape) = (false, false, false);
    let mut start = 0;
    for (i, b) in value.bytes().enumerate() {
        if escape {
            escape = false;
            continue;
        }
        match b {
            b'\\' if quoted => escape = true,
            b'"' if !angle => quoted = !quoted,
            b'<' if !quoted => angle = true,
            b'>' if !quoted => angle = false,
            b',' if !quoted && !angle => {
                out.push(value[start..i].trim_matches([' ', '\t']));
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value[start..].trim_matches([' ', '\t']));
    out
}

/// A name-addr or addr-spec with its header parameters (From, To, Contact, Route...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NameAddr<'a> {
    /// The display name as written (a quoted string or tokens), if any.
    pub display: Option<&'a str>,
    pub uri: &'a str,
    /// Whether the URI was written in `<...>`.
    pub angle: bool,
    pub params: Vec<(&'a str, Option<&'a str>)>,
}

impl NameAddr<'_> {
    pub(crate) fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// The value in a canonical spacing the stack's parser reads.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        if let Some(d) = self.display {
            out.push_str(d);
            out.push(' ');
        }
        let uri = user_escaped(self.uri);
        if self.angle {
            out.push('<');
            out.push_str(&uri);
            out.push('>');
        } else {
            out.push_str(&uri);
        }
        for (n, v) in &self.params {
            out.push(';');
            out.push_str(n);
            if let Some(v) = v {
                out.push('=');
                out.push_str(v);
            }
        }
        out
    }
}

/// A SIP URI with `?` and `;` in its user part (and password) written `%3F` and
/// `%3B`: RFC 3261 allows both there (user-unreserved: `+4930123;phone-context=x`,
/// RFC 3966), but the stack takes `?` for the start of the URI's headers and `;`
/// for the end of the host, and then finds no host (`sip:;x@h`, `sip:a:;x@h`: found
/// by fuzzing) or the wrong one (`sip:1001;isub=1@pbx` read as host `1001`). Our
/// own readers of a user part ([`crate::user_and_domain`]) take `%3B`/`%3F` as they
/// take `;`/`?`. Responses echo the request's own To and From, not this spelling.
pub(crate) fn user_escaped(uri: &str) -> std::borrow::Cow<'_, str> {
    let Some((scheme, rest)) = uri.split_once(':') else {
        return uri.into();
    };
    let Some(at) = rest.find('@') else {
        return uri.into();
    };
    let user = &rest[..at];
    if !is_sip_scheme(scheme) || !user.contains(['?', ';']) {
        return uri.into();
    }
    let user = user.replace('?', "%3F").replace(';', "%3B");
    format!("{scheme}:{user}{}", &rest[at..]).into()
}

/// `( name-addr / addr-spec ) *( SEMI generic-param )` (RFC 3261 §20.10, §20.20).
pub(crate) fn name_addr(value: &str) -> Result<NameAddr<'_>, Bad> {
    let mut c = Cursor::new(value);
    c.skip_ws();
    let mut display = None;
    let angle;
    let uri;
    if c.peek() == Some(b'"') {
        let q = c.quoted()?;
        display = Some(q);
        c.skip_ws();
        if c.peek() != Some(b'<') {
            return Err("display name without <URI>");
        }
    }
    if c.peek() != Some(b'<') && display.is_none() && angle_first(value) {
        // Unquoted display name: tokens separated by white space.
        let start = c.i;
        loop {
            if c.token().is_none() {
                return Err("bad display name");
            }
            c.skip_ws();
            if c.peek() == Some(b'<') {
                break;
            }
        }
        display = Some(value[start..c.i].trim_end_matches([' ', '\t']));
    }
    if c.peek() == Some(b'<') {
        c.i += 1;
        let rest = c.rest();
        let Some(end) = rest.find('>') else {
            return Err("missing >");
        };
        uri = &rest[..end];
        c.i += end + 1;
        angle = true;
        if uri.is_empty() || uri.starts_with([' ', '\t']) || uri.ends_with([' ', '\t']) {
            return Err("white space inside <>");
        }
        uri_ok(uri, true)?;
    } else {
        // addr-spec: the URI ends at the first ';' (its own parameters would be
        // taken for header parameters, so a URI with ';', ',' or '?' needs <>).
        let rest = c.rest();
        let end = rest.find([';', ' ', '\t']).unwrap_or(rest.len());
        uri = &rest[..end];
        c.i += end;
        angle = false;
        if uri.contains([',', '?']) {
            return Err("URI with , or ? outside <>");
        }
        uri_ok(uri, false)?;
    }
    let params = c.params()?;
    c.skip_ws();
    if !c.at_end() {
        return Err("junk after address");
    }
    Ok(NameAddr {
        display,
        uri,
        angle,
        params,
    })
}

/// Whether a `<` comes before any `;` outside quoted strings (a name-addr),
/// rather than parameters of an addr-spec (whose quoted values may hold `<`).
fn angle_first(value: &str) -> bool {
    let mut quoted = false;
    let mut escape = false;
    for b in value.bytes() {
        if escape {
            escape = false;
            continue;
        }
        match b {
            b'\\' if quoted => escape = true,
            b'"' => quoted = !quoted,
            b'<' if !quoted => return true,
            b';' if !quoted => return false,
            _ => {}
        }
    }
    false
}

/// One `via-parm`: `SIP / 2.0 / UDP host[:port] *(;param)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ViaParm<'a> {
    pub protocol: &'a str,
    pub version: &'a str,
    pub transport: &'a str,
    pub sent_by: &'a str,
    pub params: Vec<(&'a str, Option<&'a str>)>,
}

impl ViaParm<'_> {
    pub(crate) fn branch(&self) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("branch"))
            .and_then(|(_, v)| *v)
    }

    pub(crate) fn render(&self) -> String {
        let mut out = format!(
            "{}/{}/{} {}",
            self.protocol, self.version, self.transport, self.sent_by
        );
        for (n, v) in &self.params {
            out.push(';');
            out.push_str(n);
            if let Some(v) = v {
                out.push('=');
                out.push_str(v);
            }
        }
        out
    }
}

pub(crate) fn via_parm(value: &str) -> Result<ViaParm<'_>, Bad> {
    let mut c = Cursor::new(value);
    c.skip_ws();
    let protocol = c.token().ok_or("bad Via protocol")?;
    if !c.eat(b'/') {
        return Err("bad Via protocol");
    }
    let version = c.token().ok_or("bad Via version")?;
    if !c.eat(b'/') {
        return Err("bad Via protocol");
    }
    let transport = c.token().ok_or("bad Via transport")?;
    c.skip_ws();
    let rest = c.rest();
    let end = rest.find([';', ' ', '\t']).unwrap_or(rest.len());
    let sent_by = &rest[..end];
    c.i += end;
    if !hostport_ok(sent_by) {
        return Err("bad Via sent-by");
    }
    let params = c.params()?;
    c.skip_ws();
    if !c.at_end() {
        return Err("junk in Via");
    }
    Ok(ViaParm {
        protocol,
        version,
        transport,
        sent_by,
        params,
    })
}

/// `callid` = word [ "@" word ].
pub(crate) fn call_id_ok(v: &str) -> bool {
    let mut parts = v.splitn(2, '@');
    let first = parts.next().unwrap_or_default();
    let word = |w: &str| !w.is_empty() && w.bytes().all(is_word_char);
    word(first) && parts.next().is_none_or(word)
}

/// `CSeq` = 1*DIGIT LWS Method, the number below 2**31 (RFC 3261 §8.1.1.5).
pub(crate) fn cseq(v: &str) -> Result<(u32, &str), Bad> {
    let v = v.trim_matches([' ', '\t']);
    let split = v.find([' ', '\t']).ok_or("bad CSeq")?;
    let (num, method) = (&v[..split], v[split..].trim_start_matches([' ', '\t']));
    if num.is_empty() || num.len() > 10 || !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err("bad CSeq number");
    }
    let n: u64 = num.parse().map_err(|_| "bad CSeq number")?;
    if n >= 1 << 31 {
        return Err("CSeq number too large");
    }
    if !is_token(method) {
        return Err("bad CSeq method");
    }
    Ok((n as u32, method))
}

/// Whole digits, at most `max`.
pub(crate) fn number(v: &str, max: u64) -> Option<u64> {
    let v = v.trim_matches([' ', '\t']);
    if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse::<u64>().ok().filter(|n| *n <= max)
}

/// `type/subtype *(;param)` (Content-Type) or a media range (Accept); returns
/// (type, subtype), lower case.
pub(crate) fn media_type(v: &str, range: bool) -> Result<(String, String), Bad> {
    let mut c = Cursor::new(v);
    c.skip_ws();
    let t = c.token().ok_or("bad media type")?;
    if !c.eat(b'/') {
        return Err("bad media type");
    }
    let s = c.token().ok_or("bad media subtype")?;
    if !range && (t == "*" || s == "*") {
        return Err("bad media type");
    }
    c.params()?;
    c.skip_ws();
    if !c.at_end() {
        return Err("junk after media type");
    }
    Ok((t.to_ascii_lowercase(), s.to_ascii_lowercase()))
}

/// An RFC 1123 date in GMT: `Sat, 13 Nov 2010 23:29:00 GMT` (RFC 3261 §20.17).
/// Read leniently (a one-digit day, any case), but the zone must be GMT: a
/// local time zone is what RFC 4475 `baddate` shows to be malformed.
pub(crate) fn sip_date_ok(v: &str) -> bool {
    let w: Vec<&str> = v.split_whitespace().collect();
    let [wkday, day, month, year, time, zone] = w.as_slice() else {
        return false;
    };
    const DAYS: [&str; 7] = ["mon,", "tue,", "wed,", "thu,", "fri,", "sat,", "sun,"];
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let digits = |s: &str, n: std::ops::RangeInclusive<usize>| {
        n.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
    };
    let time_ok = time.split(':').count() == 3 && time.split(':').all(|p| digits(p, 2..=2));
    DAYS.contains(&wkday.to_ascii_lowercase().as_str())
        && digits(day, 1..=2)
        && MONTHS.contains(&month.to_ascii_lowercase().as_str())
        && digits(year, 4..=4)
        && time_ok
        && *zone == "GMT"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_uris() {
        assert!(sip_uri_ok("sip:user@example.com", false).is_ok());
        assert!(sip_uri_ok("sip:sips%3Auser%40example.com@example.net", false).is_ok());
        assert!(sip_uri_ok("sip:user;par=u%40example.net@example.com", false).is_ok());
        assert!(sip_uri_ok(
            "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com",
            false
        )
        .is_ok());
        assert!(sip_uri_ok("sip:+4930123;phone-context=example.com@pbx", false).is_ok());
        assert!(sip_uri_ok("sip:[::1]:5060;transport=tcp", false).is_ok());
        assert_eq!(
            sip_uri_ok("sip:user@example.com?Route=%3Csip:example.com%3E", false),
            Err("escaped headers in Request-URI")
        );
        assert!(sip_uri_ok("sip:user@example.com?Route=%3Csip:example.com%3E", true).is_ok());
        assert!(sip_uri_ok("sip:us%zzer@example.com", false).is_err());
        assert!(sip_uri_ok("sip:user@exa mple.com", false).is_err());
        assert!(sip_uri_ok("sip:user@example.com;;", false).is_err());
        assert!(uri_ok("soap.beep://192.0.2.103:3002", false).is_ok());
        assert!(uri_ok("nobodyKnowsThisScheme:totallyopaquecontent", false).is_ok());
        assert!(uri_ok("<sip:user@example.com>", false).is_err());
    }

    /// Found by fuzzing (fuzz/fuzz_targets/sip_reader.rs): a backslash before a
    /// character beyond ASCII in a quoted display name (a Latin-1 byte, read as
    /// U+FFFD) stepped two bytes, into that character, and the reader panicked.
    #[test]
    fn fuzz_escape_before_a_wide_character_in_a_quoted_string() {
        let a = name_addr("\"NUL:\\\u{FFFD} x\" <sip:u@example.com>;tag=1").expect("read");
        assert_eq!(a.uri, "sip:u@example.com");
        let a = name_addr("\"\\é\" <sip:u@example.com>").expect("read");
        assert_eq!(a.uri, "sip:u@example.com");
        assert!(name_addr("\"a\\\u{FFFD}").is_err());
    }

    #[test]
    fn addresses() {
        let a =
            name_addr("\"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com> ; tag = 98asjd8")
                .expect("wsinv From");
        assert_eq!(a.uri, "sip:jdrosen@example.com");
        assert_eq!(a.param("tag"), Some(Some("98asjd8")));
        let a = name_addr("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n")
            .expect("wsinv To");
        assert_eq!(a.uri, "sip:vivekg@chair-dnrc.example.com");
        assert_eq!(
            a.render(),
            "sip:vivekg@chair-dnrc.example.com;tag=1918181833n"
        );
        assert!(name_addr("caller<sip:caller@example.com>;tag=323").is_ok());
        assert!(
            name_addr("token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;tag=x").is_ok()
        );
        assert_eq!(
            name_addr("\"Mr. J. User <sip:j.user@example.com>"),
            Err("unterminated quoted string")
        );
        assert_eq!(
            name_addr("Bell, Alexander <sip:a.g.bell@example.com>;tag=43"),
            Err("bad display name")
        );
        assert_eq!(
            name_addr("\"Watson, Thomas\" < sip:t.watson@example.org >"),
            Err("white space inside <>")
        );
        assert_eq!(
            name_addr("\"Joe\" <sip:joe@example.org>;;;;"),
            Err("empty parameter")
        );
        assert_eq!(
            name_addr("sip:user@example.com?Route=%3Csip:sip.example.com%3E"),
            Err("URI with , or ? outside <>")
        );
        assert!(name_addr("<sip:user@example.com?Route=%3Csip:sip.example.com%3E>").is_ok());
        assert!(name_addr("isbn:2983792873").is_ok());
        // Quoted parameter values may hold < and > (RFC 5626 instance ids).
        let a = name_addr("sip:1002@127.0.0.1:5070;+sip.instance=\"<urn:uuid:1-2>\";expires=300")
            .expect("addr-spec with a quoted <");
        assert!(!a.angle && a.uri == "sip:1002@127.0.0.1:5070");
        assert!(name_addr("<sip:1002@127.0.0.1>;+sip.instance=\"<urn:uuid:1-2>\"").is_ok());
    }

    #[test]
    fn vias() {
        let v = via_parm("SIP  /   2.0 /UDP     192.0.2.2;branch=390skdjuw").expect("via");
        assert_eq!(v.render(), "SIP/2.0/UDP 192.0.2.2;branch=390skdjuw");
        let v = via_parm("SIP  / 2.0  / TCP     spindle.example.com   ;  branch  =   z9hG4bK9ikj8")
            .expect("via");
        assert_eq!(v.branch(), Some("z9hG4bK9ikj8"));
        assert!(via_parm("SIP/2.0/UDP 192.0.2.15;;").is_err());
        assert!(via_parm("SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en").is_ok());
        assert_eq!(split_list("a, b ,c").len(), 3);
        assert_eq!(split_list("\"a,b\" <sip:x>, <sip:y,z>").len(), 2);
    }

    #[test]
    fn scalars() {
        assert_eq!(cseq("0009\t INVITE"), Ok((9, "INVITE")));
        assert_eq!(
            cseq("36893488147419103232 REGISTER"),
            Err("bad CSeq number")
        );
        assert_eq!(cseq("2147483648 INVITE"), Err("CSeq number too large"));
        assert!(call_id_ok("intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"));
        assert!(!call_id_ok("a b"));
        assert_eq!(number("0068", 255), Some(68));
        assert_eq!(number("300", 255), None);
        assert_eq!(number("-999", u64::MAX), None);
        assert!(sip_date_ok("Sat, 13 Nov 2010 23:29:00 GMT"));
        assert!(!sip_date_ok("Fri, 01 Jan 2010 16:00:00 EST"));
        assert!(sip_date_ok("Mon, 7 Dec 2026 15:00:00 GMT"));
        assert_eq!(
            media_type("application/sdp", false),
            Ok(("application".into(), "sdp".into()))
        );
        assert!(media_type("text/*", true).is_ok());
    }
}
