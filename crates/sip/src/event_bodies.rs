//! The bodies NOTIFY carries for the event packages we subscribe to, read tolerantly:
//! PIDF presence documents (RFC 3863, with the simple RPID activities of RFC 4480)
//! and simple-message-summary (RFC 3842). Anything hostile or malformed gives a
//! clear [`BodyError`], never a panic; the XML reader here knows only what PIDF
//! needs (elements, attributes skipped, text, comments, CDATA).
//! Also builds the PIDF document we PUBLISH.

use std::fmt;

/// Largest body we read (a presence document for one contact is a few hundred bytes).
pub(crate) const MAX_BODY: usize = 64 * 1024;
/// Deepest element nesting we follow.
const MAX_DEPTH: usize = 32;

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyError(pub String);

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BodyError {}

fn err<T>(message: impl Into<String>) -> Result<T, BodyError> {
    Err(BodyError(message.into()))
}

/// What a presence document says about one presentity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// `open` when any tuple is open, `closed` when some tuple says closed,
    /// `unknown` when no tuple has a basic status.
    pub basic: &'static str,
    /// The first RPID activity (`busy`, `on-the-phone`, `away`, ...), if any.
    pub activity: Option<String>,
    /// The first `<note>`, whitespace-trimmed.
    pub note: Option<String>,
}

impl Presence {
    /// One word for the user: `open`, `closed`, `busy` (open but busy or on the
    /// phone), `away` (open but away/absent/sleeping...), or `unknown`.
    pub fn status(&self) -> &'static str {
        if self.basic != "open" {
            return self.basic;
        }
        match self.activity.as_deref() {
            Some("busy" | "on-the-phone" | "meeting" | "performance" | "presentation") => "busy",
            Some("away" | "vacation" | "sleeping" | "permanent-absence" | "appointment") => "away",
            _ => "open",
        }
    }
}

/// A message-summary: the mailbox state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageSummary {
    /// `Messages-Waiting: yes`.
    pub waiting: bool,
    /// New and old voice messages (`Voice-Message: new/old`), 0 when absent.
    pub new: u32,
    /// Old voice messages (the second number), 0 when absent.
    pub old: u32,
    /// `Message-Account`, if given.
    pub account: Option<String>,
}

/// One piece of an XML text.
#[derive(Debug, PartialEq, Eq)]
enum Token<'a> {
    /// `<name ...>` (local name, without prefix); `empty` for `<name/>`.
    Open {
        name: &'a str,
        empty: bool,
    },
    Close {
        name: &'a str,
    },
    Text(String),
}

/// The element's local name: `rpid:busy` → `busy`.
fn local(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

/// Splits `text` into tokens; skips the declaration, comments, processing
/// instructions and DOCTYPE; CDATA becomes text.
fn tokens(text: &str) -> Result<Vec<Token<'_>>, BodyError> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            out.push(Token::Text(unescape(rest)?));
            break;
        };
        if lt > 0 {
            out.push(Token::Text(unescape(&rest[..lt])?));
        }
        rest = &rest[lt..];
        let (skip_to, what) = if rest.starts_with("<!--") {
            ("-->", "a comment")
        } else if rest.starts_with("<![CDATA[") {
            let Some(end) = rest.find("]]>") else {
                return err("unterminated CDATA section");
            };
            out.push(Token::Text(rest["<![CDATA[".len()..end].to_string()));
            rest = &rest[end + 3..];
            continue;
        } else if rest.starts_with("<?") {
            ("?>", "a processing instruction")
        } else if rest.starts_with("<!") {
            (">", "a declaration")
        } else {
            ("", "")
        };
        if !skip_to.is_empty() {
            let Some(end) = rest.find(skip_to) else {
                return err(format!("unterminated {what}"));
            };
            rest = &rest[end + skip_to.len()..];
            continue;
        }
        // A tag: find its end outside quoted attribute values.
        let bytes = rest.as_bytes();
        let mut quote = None;
        let mut end = None;
        for (i, &b) in bytes.iter().enumerate().skip(1) {
            match (quote, b) {
                (Some(q), b) if b == q => quote = None,
                (Some(_), _) => {}
                (None, b'"' | b'\'') => quote = Some(b),
                (None, b'>') => {
                    end = Some(i);
                    break;
                }
                (None, b'<') => return err("'<' inside a tag"),
                _ => {}
            }
        }
        let Some(end) = end else {
            return err("unterminated tag");
        };
        let inner = &rest[1..end];
        rest = &rest[end + 1..];
        if let Some(name) = inner.strip_prefix('/') {
            let name = name.trim();
            if name.is_empty() {
                return err("closing tag without a name");
            }
            out.push(Token::Close { name: local(name) });
        } else {
            let empty = inner.ends_with('/');
            let body = inner.trim_end_matches('/');
            let name = body
                .split(|c: char| c.is_ascii_whitespace())
                .next()
                .unwrap_or("");
            if name.is_empty() {
                return err("tag without a name");
            }
            out.push(Token::Open {
                name: local(name),
                empty,
            });
        }
    }
    Ok(out)
}

/// Replaces the five predefined entities and numeric references.
fn unescape(raw: &str) -> Result<String, BodyError> {
    if !raw.contains('&') {
        return Ok(raw.to_string());
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest.find(';').filter(|&s| s <= 12) else {
            return err("an '&' that starts no entity");
        };
        let entity = &rest[1..semi];
        let c = match entity {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = entity.strip_prefix('#') {
                    dec.parse::<u32>().ok()
                } else {
                    None
                };
                match code.and_then(char::from_u32) {
                    Some(c) => c,
                    None => return err(format!("unknown entity &{entity};")),
                }
            }
        };
        out.push(c);
        rest = &rest[semi + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Reads an `application/pidf+xml` document.
pub fn parse_pidf(body: &[u8]) -> Result<Presence, BodyError> {
    if body.len() > MAX_BODY {
        return err(format!("presence document over {MAX_BODY} bytes"));
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| BodyError("presence document is not UTF-8".into()))?;
    let text = text.trim_start_matches('\u{feff}');
    let mut stack: Vec<&str> = Vec::new();
    let mut seen_root = false;
    let mut any_open = false;
    let mut any_closed = false;
    let mut activity: Option<String> = None;
    let mut note: Option<String> = None;
    for token in tokens(text)? {
        match token {
            Token::Open { name, empty } => {
                if stack.is_empty() {
                    if seen_root || name != "presence" {
                        return err(format!("the root element is <{name}>, not <presence>"));
                    }
                    seen_root = true;
                }
                if stack.last() == Some(&"activities") && activity.is_none() && name != "other" {
                    activity = Some(name.to_string());
                }
                if !empty {
                    if stack.len() >= MAX_DEPTH {
                        return err("elements nested too deeply");
                    }
                    stack.push(name);
                }
            }
            Token::Close { name } => match stack.pop() {
                Some(open) if open == name => {}
                Some(open) => return err(format!("</{name}> closes <{open}>")),
                None => return err(format!("</{name}> closes nothing")),
            },
            Token::Text(t) => {
                let t = t.trim();
                if t.is_empty() {
                    continue;
                }
                match stack.last() {
                    None => return err("text outside the <presence> element"),
                    Some(&"basic") if stack.contains(&"tuple") => {
                        if t.eq_ignore_ascii_case("open") {
                            any_open = true;
                        } else if t.eq_ignore_ascii_case("closed") {
                            any_closed = true;
                        } else {
                            return err(format!(
                                "basic status \"{}\" is neither open nor closed",
                                short(t)
                            ));
                        }
                    }
                    Some(&"note") if note.is_none() => note = Some(short(t)),
                    Some(&"other")
                        if activity.is_none()
                            && stack.iter().rev().nth(1) == Some(&"activities") =>
                    {
                        activity = Some(short(t));
                    }
                    _ => {}
                }
            }
        }
    }
    if !seen_root {
        return err("no <presence> element");
    }
    if let Some(open) = stack.last() {
        return err(format!("<{open}> is not closed"));
    }
    Ok(Presence {
        basic: if any_open {
            "open"
        } else if any_closed {
            "closed"
        } else {
            "unknown"
        },
        activity,
        note,
    })
}

/// At most 200 characters of `t` (notes end up in events and logs).
fn short(t: &str) -> String {
    t.chars().take(200).collect()
}

/// Reads an `application/simple-message-summary` body.
pub fn parse_message_summary(body: &[u8]) -> Result<MessageSummary, BodyError> {
    if body.len() > MAX_BODY {
        return err(format!("message summary over {MAX_BODY} bytes"));
    }
    let text =
        std::str::from_utf8(body).map_err(|_| BodyError("message summary is not UTF-8".into()))?;
    let mut waiting = None;
    let mut counts = None;
    let mut account = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            // RFC 3842 allows message headers after a blank line; skip what is not
            // "name: value".
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "messages-waiting" => {
                waiting = Some(match value.to_ascii_lowercase().as_str() {
                    "yes" => true,
                    "no" => false,
                    _ => {
                        return err(format!(
                            "Messages-Waiting is \"{}\", not yes or no",
                            short(value)
                        ))
                    }
                })
            }
            "message-account" => account = Some(short(value)),
            "voice-message" => counts = Some(voice_counts(value)?),
            _ => {}
        }
    }
    let Some(waiting) = waiting else {
        return err("no Messages-Waiting line");
    };
    let (new, old) = counts.unwrap_or((0, 0));
    Ok(MessageSummary {
        waiting,
        new,
        old,
        account,
    })
}

/// `3/1` or `3/1 (0/0)` → (3, 1).
fn voice_counts(value: &str) -> Result<(u32, u32), BodyError> {
    let main = value.split('(').next().unwrap_or("").trim();
    let bad = || BodyError(format!("Voice-Message \"{}\" is not new/old", short(value)));
    let (new, old) = main.split_once('/').ok_or_else(bad)?;
    let new = new.trim().parse::<u32>().map_err(|_| bad())?;
    let old = old.trim().parse::<u32>().map_err(|_| bad())?;
    Ok((new, old))
}

/// Escapes text for an XML attribute or element.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The PIDF document we PUBLISH for `entity` (our AoR).
pub(crate) fn pidf_document(entity: &str, open: bool, note: Option<&str>) -> String {
    let mut doc = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n\
         <presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{}\">\r\n\
         <tuple id=\"microsip-rs\"><status><basic>{}</basic></status></tuple>\r\n",
        escape(entity),
        if open { "open" } else { "closed" }
    );
    if let Some(note) = note {
        doc.push_str(&format!("<note>{}</note>\r\n", escape(note)));
    }
    doc.push_str("</presence>\r\n");
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf"
  xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
  xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:2001@127.0.0.1">
  <tuple id="a1"><status><basic>open</basic></status><contact>sip:2001@127.0.0.1</contact></tuple>
  <dm:person id="p1"><rpid:activities><rpid:on-the-phone/></rpid:activities></dm:person>
  <note>On a call &amp; busy</note>
</presence>"#;

    #[test]
    fn reads_open_with_activity_and_note() {
        let p = parse_pidf(OPEN.as_bytes()).unwrap();
        assert_eq!(p.basic, "open");
        assert_eq!(p.activity.as_deref(), Some("on-the-phone"));
        assert_eq!(p.note.as_deref(), Some("On a call & busy"));
        assert_eq!(p.status(), "busy");
    }

    #[test]
    fn reads_closed_and_empty_documents() {
        let closed = r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b"><tuple id="x"><status><basic> closed </basic></status></tuple></presence>"#;
        let p = parse_pidf(closed.as_bytes()).unwrap();
        assert_eq!((p.basic, p.status()), ("closed", "closed"));
        let empty = r#"<?xml version="1.0"?><presence entity="sip:a@b"/>"#;
        assert_eq!(parse_pidf(empty.as_bytes()).unwrap().status(), "unknown");
        // Prefixed PIDF, CDATA note, comments.
        let prefixed = "<p:presence xmlns:p='urn:ietf:params:xml:ns:pidf'><!-- c --><p:tuple id='t'><p:status><p:basic>open</p:basic></p:status></p:tuple><p:note><![CDATA[<hi>]]></p:note></p:presence>";
        let p = parse_pidf(prefixed.as_bytes()).unwrap();
        assert_eq!((p.status(), p.note.as_deref()), ("open", Some("<hi>")));
    }

    #[test]
    fn malformed_presence_is_an_error() {
        for bad in [
            "",
            "open",
            "<presence>",
            "<presence><tuple></presence>",
            "<presence><tuple><status><basic>maybe</basic></status></tuple></presence>",
            "<other/>",
            "<presence/><presence/>",
            "<presence a=\"x>",
            "<presence>&bogus;</presence>",
            "<presence><!-- never ends",
            "</presence>",
            "<presence><note>a</note></presence> trailing",
            "<>",
        ] {
            assert!(parse_pidf(bad.as_bytes()).is_err(), "accepted {bad:?}");
        }
        assert!(parse_pidf(&[0xff, 0xfe, 0x00]).is_err());
        let deep =
            "<presence>".to_string() + &"<a>".repeat(100) + &"</a>".repeat(100) + "</presence>";
        assert!(parse_pidf(deep.as_bytes()).is_err());
        let huge = vec![b' '; MAX_BODY + 1];
        assert!(parse_pidf(&huge).is_err());
    }

    #[test]
    fn reads_message_summary() {
        let s = parse_message_summary(
            b"Messages-Waiting: yes\r\nMessage-Account: sip:1001@127.0.0.1\r\nVoice-Message: 3/1 (0/0)\r\n",
        )
        .unwrap();
        assert_eq!((s.waiting, s.new, s.old), (true, 3, 1));
        assert_eq!(s.account.as_deref(), Some("sip:1001@127.0.0.1"));
        let s = parse_message_summary(b"messages-waiting:no\n").unwrap();
        assert_eq!((s.waiting, s.new, s.old), (false, 0, 0));
    }

    #[test]
    fn malformed_message_summary_is_an_error() {
        for bad in [
            &b""[..],
            b"Voice-Message: 3/1",
            b"Messages-Waiting: perhaps",
            b"Messages-Waiting: yes\r\nVoice-Message: three/1",
            b"Messages-Waiting: yes\r\nVoice-Message: 99999999999/1",
            b"Messages-Waiting: yes\r\nVoice-Message: 3",
            b"\xff\xfe",
        ] {
            assert!(parse_message_summary(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn published_document_reads_back() {
        let doc = pidf_document("sip:1001@127.0.0.1", true, Some("a<b"));
        let p = parse_pidf(doc.as_bytes()).unwrap();
        assert_eq!((p.basic, p.note.as_deref()), ("open", Some("a<b")));
    }
}
