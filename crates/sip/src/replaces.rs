//! The `Replaces` header (RFC 3891) as text: reading and writing its value, and the
//! Refer-To of an attended transfer that carries it as an escaped URI header
//! (`<sip:c@host?Replaces=id%3Bto-tag%3Dx%3Bfrom-tag%3Dy>`, RFC 5589 §7). Matching a
//! value against our dialogs is [`crate::call::Calls`]' job; this module has no I/O.

/// A `Replaces` value: the dialog it names, as seen by the UA that receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplacesValue {
    /// The dialog's Call-ID.
    pub call_id: String,
    /// `to-tag`: the receiving UA's own tag in that dialog.
    pub to_tag: String,
    /// `from-tag`: the other party's tag in that dialog.
    pub from_tag: String,
    /// `early-only`: replace the dialog only while it is early.
    pub early_only: bool,
}

/// What an incoming INVITE's `Replaces` names among our call legs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplacesMatch {
    /// One of our legs.
    Leg {
        /// The leg named.
        leg: crate::call::LegId,
        /// Its dialog is confirmed (else early).
        confirmed: bool,
        /// We sent the INVITE that made it (an outgoing call).
        we_initiated: bool,
        /// The header asks for `early-only`.
        early_only: bool,
    },
    /// No leg of ours has this Call-ID and these tags (481).
    NoDialog,
    /// The value cannot be read, or the INVITE has more than one (400); the text
    /// says why.
    Malformed(String),
}

/// Reads `call-id;to-tag=X;from-tag=Y[;early-only]` (other parameters are
/// ignored). Fails, saying why, when the Call-ID or either tag is missing or empty.
pub fn parse_replaces(value: &str) -> Result<ReplacesValue, String> {
    let mut parts = value.trim().split(';');
    let call_id = parts.next().unwrap_or_default().trim();
    if call_id.is_empty() || call_id.contains(char::is_whitespace) {
        return Err(format!("Replaces has no Call-ID: {value:?}"));
    }
    let (mut to_tag, mut from_tag, mut early_only) = (None, None, false);
    for param in parts {
        let (name, v) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (param.trim(), None),
        };
        if name.eq_ignore_ascii_case("to-tag") {
            to_tag = v.map(str::to_string);
        } else if name.eq_ignore_ascii_case("from-tag") {
            from_tag = v.map(str::to_string);
        } else if name.eq_ignore_ascii_case("early-only") {
            early_only = true;
        }
    }
    let to_tag = to_tag
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("Replaces has no to-tag: {value:?}"))?;
    let from_tag = from_tag
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("Replaces has no from-tag: {value:?}"))?;
    Ok(ReplacesValue {
        call_id: call_id.to_string(),
        to_tag,
        from_tag,
        early_only,
    })
}

/// `call-id;to-tag=X;from-tag=Y` for the dialog with `call_id` in which we are
/// `local_tag` and the remote `remote_tag`, as the remote reads it: its to-tag is
/// its own tag (our remote tag).
pub fn format_replaces(call_id: &str, local_tag: &str, remote_tag: &str) -> String {
    format!("{call_id};to-tag={remote_tag};from-tag={local_tag}")
}

/// Escapes a header value for a URI's `?name=value` part (RFC 3261 §25.1: `hvalue`
/// keeps unreserved characters and `[]/?:+$`; everything else is `%XX`).
pub fn escape_uri_header(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3 / 2);
    for b in value.bytes() {
        let keep = b.is_ascii_alphanumeric() || b"-_.!~*'()[]/?:+$".contains(&b);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits stays as it is.
fn unescape(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(b) = hex {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `<sip:c@h?Replaces=...>` (or without angle brackets; the Refer-To's own
/// parameters are dropped) → the URI to call without its `?headers`, and the
/// `Replaces` value carried in them, unescaped. Other embedded headers are
/// ignored: we do not let a REFER put arbitrary headers in our INVITE.
pub fn split_refer_to(refer_to: &str) -> (String, Option<String>) {
    let uri = crate::call::strip_angle(refer_to);
    let Some((base, headers)) = uri.split_once('?') else {
        return (uri, None);
    };
    let replaces = headers.split('&').find_map(|h| {
        let (name, value) = h.split_once('=')?;
        unescape(name)
            .trim()
            .eq_ignore_ascii_case("Replaces")
            .then(|| unescape(value))
    });
    (base.to_string(), replaces)
}

/// The Refer-To value of an attended transfer: `target` (the transfer target's
/// URI, any `?headers` of its own dropped) with the Replaces of the dialog that
/// target should replace.
pub fn refer_to_replacing(target: &str, replaces: &str) -> String {
    let base = target.split('?').next().unwrap_or(target);
    format!("<{base}?Replaces={}>", escape_uri_header(replaces))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_replaces_values() {
        let v = parse_replaces("98732@sip.example.com;from-tag=r33th4x0r;to-tag=ff87ff").unwrap();
        assert_eq!(v.call_id, "98732@sip.example.com");
        assert_eq!(
            (v.to_tag.as_str(), v.from_tag.as_str()),
            ("ff87ff", "r33th4x0r")
        );
        assert!(!v.early_only);
        let v = parse_replaces(" a;TO-TAG=1 ; From-Tag=2;early-only;x=y").unwrap();
        assert_eq!(
            (v.call_id.as_str(), v.to_tag.as_str(), v.from_tag.as_str()),
            ("a", "1", "2")
        );
        assert!(v.early_only);
        for bad in [
            "",
            ";to-tag=1;from-tag=2",
            "a;to-tag=1",
            "a;from-tag=2",
            "a;to-tag=;from-tag=2",
            "a b;to-tag=1;from-tag=2",
        ] {
            assert!(parse_replaces(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn refer_to_round_trip() {
        let replaces = format_replaces("abc@127.0.0.1", "ours", "theirs");
        assert_eq!(replaces, "abc@127.0.0.1;to-tag=theirs;from-tag=ours");
        let refer_to = refer_to_replacing("sip:c@127.0.0.1:5070;transport=udp", &replaces);
        assert_eq!(
            refer_to,
            "<sip:c@127.0.0.1:5070;transport=udp?Replaces=abc%40127.0.0.1%3Bto-tag%3Dtheirs%3Bfrom-tag%3Dours>"
        );
        let (uri, r) = split_refer_to(&refer_to);
        assert_eq!(uri, "sip:c@127.0.0.1:5070;transport=udp");
        assert_eq!(r.as_deref(), Some(replaces.as_str()));
        assert_eq!(split_refer_to("<sip:b@h>"), ("sip:b@h".to_string(), None));
        assert_eq!(
            split_refer_to("sip:b@h?Subject=x&replaces=a%3Bto-tag%3D1%3bfrom-tag%3D2"),
            (
                "sip:b@h".to_string(),
                Some("a;to-tag=1;from-tag=2".to_string())
            )
        );
        // A broken escape stays as it is.
        assert_eq!(unescape("a%3"), "a%3");
        assert_eq!(unescape("a%zz%41"), "a%zzA");
    }
}
