//! Contacts in MicroSIP's `Contacts.xml` beside the ini:
//! `<contacts><contact name="..." number="..." presence="0|1" .../></contacts>`.
//!
//! A small XML reader and writer for exactly this flat format, safe on any input:
//!
//! - Input may be UTF-8 (with or without a byte order mark) or UTF-16 LE/BE with a
//!   byte order mark (as copied from Windows); bytes that are not valid UTF-8 and
//!   carry no mark are read as Latin-1 rather than refused. Output is UTF-8.
//! - `<!DOCTYPE`, `<!ENTITY` and any other `<!...>` declaration are refused, so no
//!   entity can be defined or expanded. Attribute values understand `&amp; &lt; &gt;
//!   &quot; &apos;` and numeric references (`&#233;`, `&#xE9;`); a `&` that starts
//!   none of these is kept as a literal `&` (hand-edited files), a reference to a
//!   character XML does not allow becomes U+FFFD. Blanks written literally in a value
//!   (tab, line break) read as spaces, as XML says.
//! - The root must be `<contacts>`; each `<contact>` directly inside it is a contact
//!   and keeps all its attributes, in order, known or not, so a rewrite loses
//!   nothing MicroSIP stored (e.g. `starred`, `info`). Comments, processing
//!   instructions, text and other elements are skipped and not written back.
//! - Element and attribute names must be plain XML names (letters, digits, `_ : - .`,
//!   not starting with a digit, `-` or `.`), and an attribute may appear once.
//! - Badly nested or unclosed tags are errors (with the line), so a damaged file is
//!   reported and never overwritten by [`ContactsFile::add`] or
//!   [`ContactsFile::remove`]. Limits: 64 MB per file, 1024 attributes per element,
//!   nesting depth 32.
//! - Writing escapes `& < > " '` and writes tab, CR and LF as numeric references so
//!   they survive; other characters XML 1.0 forbids are written as U+FFFD. Every
//!   change is written atomically (`write_atomic`, mode 0600).

use std::fmt;
use std::path::{Path, PathBuf};

use microsip_config::{read_file, write_atomic, FileError};

/// The file name beside the ini.
pub const FILE_NAME: &str = "Contacts.xml";
const MAX_ATTRIBUTES: usize = 1024;
const MAX_DEPTH: usize = 32;

/// One contact: its attributes in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Contact {
    /// `(name, value)` pairs, each name once.
    pub attributes: Vec<(String, String)>,
}

impl Contact {
    /// A contact with `name`, `number` and `presence` (`"1"` or `"0"`).
    pub fn new(name: &str, number: &str, presence: bool) -> Contact {
        let mut c = Contact::default();
        c.set("name", name);
        c.set("number", number);
        c.set("presence", if presence { "1" } else { "0" });
        c
    }

    /// The value of an attribute.
    pub fn get(&self, attribute: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n == attribute)
            .map(|(_, v)| v.as_str())
    }

    /// Sets an attribute (in place if present, else at the end). Returns false, and
    /// changes nothing, when `attribute` is not a name XML allows.
    pub fn set(&mut self, attribute: &str, value: &str) -> bool {
        if !valid_name(attribute) {
            return false;
        }
        match self.attributes.iter_mut().find(|(n, _)| n == attribute) {
            Some((_, v)) => *v = value.to_owned(),
            None => self
                .attributes
                .push((attribute.to_owned(), value.to_owned())),
        }
        true
    }

    /// `name` (empty if missing).
    pub fn name(&self) -> &str {
        self.get("name").unwrap_or("")
    }

    /// `number` (empty if missing).
    pub fn number(&self) -> &str {
        self.get("number").unwrap_or("")
    }

    /// Whether `presence` is on (`1`, `true` or `yes`).
    pub fn presence(&self) -> bool {
        matches!(
            self.get("presence")
                .map(|p| p.trim().to_ascii_lowercase())
                .as_deref(),
            Some("1" | "true" | "yes")
        )
    }
}

/// The whole file: the root's attributes and the contacts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContactsDoc {
    /// Attributes of `<contacts>`, kept on rewrite.
    pub root_attributes: Vec<(String, String)>,
    /// The contacts, in file order.
    pub contacts: Vec<Contact>,
}

/// Why a file could not be read as contacts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlError {
    /// 1-based line (0 when about the whole file).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for XmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.message)
        } else {
            write!(f, "line {}: {}", self.line, self.message)
        }
    }
}

impl std::error::Error for XmlError {}

/// What can go wrong with the contacts file.
#[derive(Debug)]
pub enum ContactsError {
    /// Reading or writing failed.
    File(FileError),
    /// The file is not a contacts file this reader accepts.
    Xml {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        error: XmlError,
    },
    /// The request itself is wrong (e.g. an empty number).
    Invalid(String),
}

impl fmt::Display for ContactsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContactsError::File(e) => write!(f, "{e}"),
            ContactsError::Xml { path, error } => write!(f, "{}: {error}", path.display()),
            ContactsError::Invalid(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for ContactsError {}

impl From<FileError> for ContactsError {
    fn from(e: FileError) -> Self {
        ContactsError::File(e)
    }
}

/// Whether [`ContactsFile::add`] added a contact or changed an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddOutcome {
    /// A new contact.
    Added,
    /// A contact with that number existed: its name and presence were changed, its
    /// other attributes kept.
    Updated,
}

/// Whether `name` may be written as an attribute name (a conservative subset of XML
/// names: no delimiters, not empty, not starting with a digit, `-` or `.`).
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_alphabetic() || c == '_' || c == ':' => {}
        _ => return false,
    }
    chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | ':' | '-' | '.'))
}

/// The file's text: by byte order mark, else UTF-8, else Latin-1.
pub fn decode(bytes: &[u8]) -> String {
    fn utf16(bytes: &[u8], little: bool) -> String {
        let units = bytes.chunks_exact(2).map(|p| {
            if little {
                u16::from_le_bytes([p[0], p[1]])
            } else {
                u16::from_be_bytes([p[0], p[1]])
            }
        });
        char::decode_utf16(units)
            .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect()
    }
    if let Some(rest) = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        return String::from_utf8_lossy(rest).into_owned();
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        return utf16(rest, true);
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        return utf16(rest, false);
    }
    if bytes.len() >= 2 && bytes[0] == b'<' && bytes[1] == 0 {
        return utf16(bytes, true);
    }
    if bytes.len() >= 2 && bytes[0] == 0 && bytes[1] == b'<' {
        return utf16(bytes, false);
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

/// Parses a contacts file (any of the accepted encodings).
pub fn parse(bytes: &[u8]) -> Result<ContactsDoc, XmlError> {
    parse_str(&decode(bytes))
}

/// Parses contacts XML text.
pub(crate) fn parse_str(text: &str) -> Result<ContactsDoc, XmlError> {
    Parser { s: text, pos: 0 }.document()
}

struct Parser<'a> {
    s: &'a str,
    pos: usize,
}

fn is_delimiter(b: u8) -> bool {
    b.is_ascii_whitespace()
        || matches!(
            b,
            b'/' | b'>' | b'<' | b'=' | b'"' | b'\'' | b'&' | b'?' | b'!'
        )
}

impl<'a> Parser<'a> {
    fn err(&self, message: impl Into<String>) -> XmlError {
        let upto = self.s.get(..self.pos).unwrap_or(self.s);
        XmlError {
            line: upto.matches('\n').count() + 1,
            message: message.into(),
        }
    }

    fn rest(&self) -> &'a str {
        self.s.get(self.pos..).unwrap_or("")
    }

    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    /// Moves past `end`, which must come later.
    fn skip_past(&mut self, end: &str, what: &str) -> Result<(), XmlError> {
        match self.rest().find(end) {
            Some(i) => {
                self.pos += i + end.len();
                Ok(())
            }
            None => Err(self.err(format!("{what} is not closed"))),
        }
    }

    fn name(&mut self) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(|b| !is_delimiter(b)) {
            self.pos += 1;
        }
        // Delimiters are ASCII, so both ends are character boundaries.
        self.s.get(start..self.pos).unwrap_or("")
    }

    /// Attributes up to the end of a start tag; true if it was `/>`.
    fn attributes(&mut self) -> Result<(Vec<(String, String)>, bool), XmlError> {
        let mut attrs: Vec<(String, String)> = Vec::new();
        loop {
            self.skip_ws();
            match self.peek() {
                None => return Err(self.err("the file ends inside a tag")),
                Some(b'>') => {
                    self.pos += 1;
                    return Ok((attrs, false));
                }
                Some(b'/') => {
                    if self.rest().starts_with("/>") {
                        self.pos += 2;
                        return Ok((attrs, true));
                    }
                    return Err(self.err("'/' not followed by '>' in a tag"));
                }
                Some(_) => {}
            }
            let name = self.name();
            if name.is_empty() {
                return Err(self.err("unexpected character in a tag"));
            }
            if !valid_name(name) {
                return Err(self.err(format!("{name:?} is not an attribute name")));
            }
            self.skip_ws();
            if self.peek() != Some(b'=') {
                return Err(self.err(format!("attribute {name} has no value")));
            }
            self.pos += 1;
            self.skip_ws();
            let quote = match self.peek() {
                Some(q @ (b'"' | b'\'')) => q,
                _ => return Err(self.err(format!("the value of {name} is not quoted"))),
            };
            self.pos += 1;
            let start = self.pos;
            let Some(len) = self.rest().find(char::from(quote)) else {
                return Err(self.err(format!("the value of {name} is not closed")));
            };
            let raw = self.s.get(start..start + len).unwrap_or("");
            self.pos = start + len + 1;
            if attrs.len() >= MAX_ATTRIBUTES {
                return Err(self.err(format!("more than {MAX_ATTRIBUTES} attributes")));
            }
            if attrs.iter().any(|(n, _)| n == name) {
                return Err(self.err(format!("attribute {name} is repeated")));
            }
            attrs.push((name.to_owned(), unescape(raw)));
        }
    }

    fn document(mut self) -> Result<ContactsDoc, XmlError> {
        let mut doc = ContactsDoc::default();
        let mut stack: Vec<&'a str> = Vec::new();
        let mut root_seen = false;
        loop {
            let rest = self.rest();
            let lt = rest.find('<').unwrap_or(rest.len());
            if stack.is_empty() && !rest[..lt].trim().is_empty() {
                return Err(self.err("text outside the <contacts> element"));
            }
            self.pos += lt;
            let rest = self.rest();
            if rest.is_empty() {
                break;
            }
            if rest.starts_with("<?") {
                self.skip_past("?>", "a processing instruction")?;
            } else if rest.starts_with("<!--") {
                self.skip_past("-->", "a comment")?;
            } else if rest.starts_with("<![CDATA[") {
                if stack.is_empty() {
                    return Err(self.err("CDATA outside the <contacts> element"));
                }
                self.skip_past("]]>", "a CDATA section")?;
            } else if rest.starts_with("<!") {
                return Err(self.err("document type declarations and entities are not accepted"));
            } else if rest.starts_with("</") {
                self.pos += 2;
                let name = self.name();
                self.skip_ws();
                if self.peek() != Some(b'>') {
                    return Err(self.err(format!("end tag </{name} is not closed")));
                }
                self.pos += 1;
                match stack.pop() {
                    Some(open) if open == name => {}
                    Some(open) => {
                        return Err(self.err(format!("</{name}> closes <{open}>")));
                    }
                    None => return Err(self.err(format!("</{name}> closes nothing"))),
                }
            } else {
                self.pos += 1;
                let name = self.name();
                if !valid_name(name) {
                    return Err(self.err("'<' does not start a tag"));
                }
                let (attrs, empty) = self.attributes()?;
                if stack.is_empty() {
                    if root_seen {
                        return Err(self.err("a second element after </contacts>"));
                    }
                    if !name.eq_ignore_ascii_case("contacts") {
                        return Err(
                            self.err(format!("the root element is <{name}>, not <contacts>"))
                        );
                    }
                    root_seen = true;
                    doc.root_attributes = attrs;
                } else if stack.len() == 1 && name.eq_ignore_ascii_case("contact") {
                    doc.contacts.push(Contact { attributes: attrs });
                }
                if !empty {
                    if stack.len() >= MAX_DEPTH {
                        return Err(self.err(format!("elements nested deeper than {MAX_DEPTH}")));
                    }
                    stack.push(name);
                }
            }
        }
        if let Some(open) = stack.last() {
            return Err(self.err(format!("the file ends before </{open}>")));
        }
        Ok(doc)
    }
}

/// A character XML 1.0 allows.
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && !matches!(c, '\u{FFFE}' | '\u{FFFF}'))
}

/// Decodes the references in an attribute value and turns literal blanks into
/// spaces.
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(c) = rest.chars().next() {
        match c {
            '&' => {
                // ';' is ASCII, so the slice ends on a character boundary.
                let reference = rest.as_bytes()[1..]
                    .iter()
                    .take(15)
                    .position(|&b| b == b';')
                    .map(|end| &rest[1..1 + end]);
                let decoded = reference.and_then(|r| match r {
                    "amp" => Some('&'),
                    "lt" => Some('<'),
                    "gt" => Some('>'),
                    "quot" => Some('"'),
                    "apos" => Some('\''),
                    _ => {
                        let number = if let Some(hex) =
                            r.strip_prefix("#x").or_else(|| r.strip_prefix("#X"))
                        {
                            u32::from_str_radix(hex, 16).ok()
                        } else {
                            r.strip_prefix('#').and_then(|d| d.parse::<u32>().ok())
                        }?;
                        Some(
                            char::from_u32(number)
                                .filter(|&c| xml_char(c))
                                .unwrap_or(char::REPLACEMENT_CHARACTER),
                        )
                    }
                });
                match (reference, decoded) {
                    (Some(r), Some(ch)) => {
                        out.push(ch);
                        rest = &rest[r.len() + 2..];
                    }
                    _ => {
                        out.push('&');
                        rest = &rest[1..];
                    }
                }
            }
            '\r' => {
                // CR LF is one line break: one space.
                if !rest[1..].starts_with('\n') {
                    out.push(' ');
                }
                rest = &rest[1..];
            }
            '\t' | '\n' => {
                out.push(' ');
                rest = &rest[1..];
            }
            c => {
                out.push(if xml_char(c) {
                    c
                } else {
                    char::REPLACEMENT_CHARACTER
                });
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out
}

/// An attribute value as written between double quotes.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c if xml_char(c) => out.push(c),
            _ => out.push(char::REPLACEMENT_CHARACTER),
        }
    }
    out
}

fn write_attributes(out: &mut String, attributes: &[(String, String)]) {
    for (name, value) in attributes {
        if valid_name(name) {
            out.push(' ');
            out.push_str(name);
            out.push_str("=\"");
            out.push_str(&escape(value));
            out.push('"');
        }
    }
}

/// The file's text (UTF-8).
pub fn to_xml(doc: &ContactsDoc) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<contacts");
    write_attributes(&mut out, &doc.root_attributes);
    out.push_str(">\n");
    for contact in &doc.contacts {
        out.push_str("<contact");
        write_attributes(&mut out, &contact.attributes);
        out.push_str("/>\n");
    }
    out.push_str("</contacts>\n");
    out
}

/// `Contacts.xml` at a path. Every call reads the file afresh, so changes made by
/// hand meanwhile are kept.
#[derive(Debug, Clone)]
pub struct ContactsFile {
    path: PathBuf,
}

impl ContactsFile {
    /// The file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> ContactsFile {
        ContactsFile { path: path.into() }
    }

    /// `Contacts.xml` in the folder of the ini file `ini`.
    pub fn beside_ini(ini: &Path) -> ContactsFile {
        let parent = match ini.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        ContactsFile::new(parent.join(FILE_NAME))
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole document; empty when the file does not exist.
    pub fn load(&self) -> Result<ContactsDoc, ContactsError> {
        match read_file(&self.path)? {
            None => Ok(ContactsDoc::default()),
            Some(bytes) => parse(&bytes).map_err(|error| ContactsError::Xml {
                path: self.path.clone(),
                error,
            }),
        }
    }

    /// Writes `doc` atomically.
    pub fn save(&self, doc: &ContactsDoc) -> Result<(), ContactsError> {
        write_atomic(&self.path, to_xml(doc).as_bytes())?;
        Ok(())
    }

    /// The contacts, in file order.
    pub fn list(&self) -> Result<Vec<Contact>, ContactsError> {
        Ok(self.load()?.contacts)
    }

    /// Adds a contact, or updates the name and presence of the one with this number
    /// (trimmed; must not be empty), and saves.
    pub fn add(
        &self,
        name: &str,
        number: &str,
        presence: bool,
    ) -> Result<AddOutcome, ContactsError> {
        let number = number.trim();
        if number.is_empty() {
            return Err(ContactsError::Invalid("a contact needs a number".into()));
        }
        let mut doc = self.load()?;
        let presence_value = if presence { "1" } else { "0" };
        let outcome = match doc
            .contacts
            .iter_mut()
            .find(|c| c.number().trim() == number)
        {
            Some(c) => {
                c.set("name", name);
                c.set("presence", presence_value);
                AddOutcome::Updated
            }
            None => {
                doc.contacts.push(Contact::new(name, number, presence));
                AddOutcome::Added
            }
        };
        self.save(&doc)?;
        Ok(outcome)
    }

    /// Removes every contact with this number (trimmed) and saves; whether one was
    /// there (nothing is written otherwise).
    pub fn remove(&self, number: &str) -> Result<bool, ContactsError> {
        let number = number.trim();
        let mut doc = self.load()?;
        let before = doc.contacts.len();
        doc.contacts.retain(|c| c.number().trim() != number);
        if doc.contacts.len() == before {
            return Ok(false);
        }
        self.save(&doc)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        assert_eq!(unescape("a&amp;b&lt;&gt;&quot;&apos;"), "a&b<>\"'");
        assert_eq!(unescape("&#233;&#xE9;&#XE9;"), "ééé");
        assert_eq!(
            unescape("AT&T &foo; &#0; &#xFFFFFFFFF; &"),
            "AT&T &foo; \u{FFFD} &#xFFFFFFFFF; &"
        );
        assert_eq!(unescape("a\r\nb\tc\rd"), "a b c d");
        assert_eq!(unescape("&#10;&#13;"), "\n\r");
        assert_eq!(unescape("&amp"), "&amp");
        assert_eq!(unescape("é&"), "é&");
        assert_eq!(unescape("&amp;éééééééé"), "&éééééééé");
    }

    #[test]
    fn names() {
        assert!(valid_name("presence"));
        assert!(valid_name("x:y-z.1"));
        assert!(!valid_name(""));
        assert!(!valid_name("1a"));
        assert!(!valid_name("a b"));
        assert!(!valid_name("a\"b"));
    }
}
