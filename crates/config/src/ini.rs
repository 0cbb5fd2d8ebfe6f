//! The round-trip INI document: every line kept, values read and changed in place.
//!
//! Rules (MicroSIP / Windows profile API compatible):
//! - a comment is a line whose first non-blank character is `;` or `#`;
//! - a section header is `[name]` (text after the `]` is ignored);
//! - a key line is `key=value`: the value is everything after the first `=`, with
//!   surrounding blanks trimmed — no escapes, no inline comments;
//! - section and key names are compared case-insensitively and written with the
//!   spelling they already have;
//! - anything else is kept verbatim and reported as an [`IniProblem`].

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::OnceLock;

/// Which line ending a line had (or new lines get).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineEnding {
    /// `\n`
    Lf,
    /// `\r\n`
    CrLf,
}

impl LineEnding {
    fn as_str(self) -> &'static str {
        match self {
            LineEnding::Lf => "\n",
            LineEnding::CrLf => "\r\n",
        }
    }
}

/// The encoding the document was read from. Output is always UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceEncoding {
    /// UTF-8 without a byte order mark (also: an empty or new document).
    Utf8,
    /// UTF-8 with a byte order mark; the mark is written back.
    Utf8Bom,
    /// UTF-16 little endian with a byte order mark (MicroSIP on Windows).
    Utf16Le,
    /// UTF-16 big endian with a byte order mark.
    Utf16Be,
    /// Not valid UTF-8 and no byte order mark: read as Windows-1252 ("ANSI").
    Windows1252,
}

/// A line of the file that could not be understood, or a suspicious one. The line is
/// kept as it is; the problem only informs.
#[derive(Clone, PartialEq, Eq)]
pub struct IniProblem {
    /// 1-based line number (0: the file as a whole, e.g. its encoding).
    pub line: usize,
    /// The section the line is in, if any.
    pub section: Option<String>,
    /// The text of the line (without its line ending).
    pub text: String,
    /// What is wrong and what happens about it.
    pub message: String,
}

/// Replaces text that may hold a password with `***` before it is shown or logged.
pub(crate) fn redact<'a>(key: &str, text: &'a str) -> &'a str {
    let secret = |s: &str| s.to_ascii_lowercase().contains("pass");
    if secret(key) || secret(text) {
        "***"
    } else {
        text
    }
}

impl fmt::Display for IniProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: ", self.line)?;
        if let Some(s) = &self.section {
            write!(f, "[{s}] ")?;
        }
        if !self.text.is_empty() {
            write!(f, "\"{}\": ", redact("", &self.text))?;
        }
        f.write_str(&self.message)
    }
}

impl fmt::Debug for IniProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IniProblem({self})")
    }
}

/// Why [`IniDocument::set`] refused a change. Never shows the value (it may be a
/// password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IniError {
    /// The value holds a line break, which would split the line.
    NewlineInValue {
        /// The section of the refused change.
        section: String,
        /// The key of the refused change.
        key: String,
    },
    /// The value starts or ends with a blank, which would be lost on reading back.
    BlankAtEdge {
        /// The section of the refused change.
        section: String,
        /// The key of the refused change.
        key: String,
    },
    /// The key is empty, has `=` or a line break, has blanks around it, or starts
    /// with `;`, `#` or `[`.
    BadKey {
        /// The section of the refused change.
        section: String,
        /// The key as given.
        key: String,
    },
    /// The section name is empty, has `]` or a line break, or blanks around it.
    BadSection {
        /// The section name as given.
        section: String,
    },
}

impl fmt::Display for IniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IniError::NewlineInValue { section, key } => {
                write!(f, "[{section}] {key}: a value cannot contain a line break")
            }
            IniError::BlankAtEdge { section, key } => write!(
                f,
                "[{section}] {key}: a value cannot start or end with a blank (it would be lost)"
            ),
            IniError::BadKey { section, key } => write!(
                f,
                "[{section}] {key:?}: not a valid key name (empty, or has '=', a line break, \
                 blanks around it, or starts with ';', '#' or '[')"
            ),
            IniError::BadSection { section } => write!(
                f,
                "[{section:?}]: not a valid section name (empty, or has ']', a line break or \
                 blanks around it)"
            ),
        }
    }
}

impl std::error::Error for IniError {}

#[derive(Clone, PartialEq, Eq)]
enum Kind {
    /// Blank line, comment, or a line that was not understood.
    Other,
    Section {
        name: String,
    },
    /// `key=value`: where the key and the value are in the line's text (no copies:
    /// a file of many keys is read with one allocation a line).
    Entry {
        key: Range<usize>,
        value: Range<usize>,
    },
}

#[derive(Clone, PartialEq, Eq)]
struct Line {
    /// The line without its ending, exactly as read (or as generated).
    text: String,
    /// `None`: the last line of a file that does not end with a line break.
    ending: Option<LineEnding>,
    kind: Kind,
}

impl Line {
    /// The key and value of an entry line.
    fn entry(&self) -> Option<(&str, &str)> {
        match &self.kind {
            Kind::Entry { key, value } => {
                Some((self.text.get(key.clone())?, self.text.get(value.clone())?))
            }
            _ => None,
        }
    }
}

/// Where `inner`, a slice of `outer`, lies in it.
fn span(outer: &str, inner: &str) -> Range<usize> {
    let start = (inner.as_ptr() as usize).saturating_sub(outer.as_ptr() as usize);
    start..start + inner.len()
}

/// An INI file held line by line, so that writing it back changes only what was set.
///
/// Lookups go through an index of sections and keys (built on first use, dropped by
/// any change that moves lines), so reading a file and every key in it takes time
/// linear in its size.
#[derive(Clone)]
pub struct IniDocument {
    lines: Vec<Line>,
    newline: LineEnding,
    encoding: SourceEncoding,
    index: OnceLock<Index>,
    /// The problems of the lines as they are, while no line has moved since parsing.
    problems: Option<Vec<IniProblem>>,
}

/// Two documents are equal when they would write the same file.
impl PartialEq for IniDocument {
    fn eq(&self, other: &Self) -> bool {
        self.lines == other.lines
            && self.newline == other.newline
            && self.encoding == other.encoding
    }
}

impl Eq for IniDocument {}

/// Where a section's lines are and which keys it has.
#[derive(Clone, Debug)]
struct SectionIndex {
    /// `[header, end)` line ranges of each block of the section, in file order.
    blocks: Vec<(usize, usize)>,
    /// Folded key name -> the line of its first occurrence.
    keys: HashMap<String, usize>,
    /// The lines of the first occurrence of each key, in file order.
    order: Vec<usize>,
}

/// The sections of a document, by folded name, in the order they first appear.
#[derive(Clone, Debug, Default)]
struct Index {
    sections: Vec<SectionIndex>,
    by_name: HashMap<String, usize>,
}

/// Builds an [`Index`] line by line.
#[derive(Default)]
struct IndexBuilder {
    index: Index,
    /// The section the lines being added belong to.
    current: Option<usize>,
}

/// What adding a line found already there.
enum Seen {
    /// Nothing: the line is the first of its name (or not a name at all).
    New,
    /// A section header whose section began at this line (0-based).
    Section(usize),
    /// A key whose first occurrence in the section is at this line (0-based).
    Key(usize),
    /// A key outside any section.
    Orphan,
}

impl IndexBuilder {
    /// Adds line `i`, of kind `kind`, whose text is `text`.
    fn add(&mut self, i: usize, kind: &Kind, text: &str) -> Seen {
        let index = &mut self.index;
        match kind {
            Kind::Section { name } => {
                if let Some(c) = self.current {
                    close_block(&mut index.sections[c], i);
                }
                let next = index.sections.len();
                let s = *index.by_name.entry(fold(name)).or_insert(next);
                let seen = if s == next {
                    index.sections.push(SectionIndex {
                        blocks: Vec::new(),
                        keys: HashMap::new(),
                        order: Vec::new(),
                    });
                    Seen::New
                } else {
                    Seen::Section(index.sections[s].blocks[0].0)
                };
                index.sections[s].blocks.push((i, usize::MAX));
                self.current = Some(s);
                seen
            }
            Kind::Entry { key, .. } => {
                let Some(c) = self.current else {
                    return Seen::Orphan;
                };
                let section = &mut index.sections[c];
                match section
                    .keys
                    .entry(fold(text.get(key.clone()).unwrap_or("")))
                {
                    std::collections::hash_map::Entry::Occupied(first) => Seen::Key(*first.get()),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(i);
                        section.order.push(i);
                        Seen::New
                    }
                }
            }
            Kind::Other => Seen::New,
        }
    }

    /// The index of a document of `len` lines.
    fn finish(mut self, len: usize) -> Index {
        if let Some(c) = self.current {
            close_block(&mut self.index.sections[c], len);
        }
        self.index
    }
}

impl Index {
    fn build(lines: &[Line]) -> Index {
        let mut builder = IndexBuilder::default();
        for (i, line) in lines.iter().enumerate() {
            builder.add(i, &line.kind, &line.text);
        }
        builder.finish(lines.len())
    }

    fn section(&self, name: &str) -> Option<&SectionIndex> {
        self.by_name.get(&fold(name)).map(|&s| &self.sections[s])
    }
}

fn close_block(section: &mut SectionIndex, end: usize) {
    if let Some(block) = section.blocks.last_mut() {
        block.1 = end;
    }
}

/// The form of a section or key name that [`same_name`] compares.
fn fold(name: &str) -> String {
    if name.is_ascii() {
        name.to_ascii_lowercase()
    } else {
        name.to_lowercase()
    }
}

impl Default for IniDocument {
    fn default() -> Self {
        IniDocument::new()
    }
}

/// Never prints values: a document holds passwords.
impl fmt::Debug for IniDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IniDocument")
            .field("lines", &self.lines.len())
            .field("sections", &self.sections())
            .field("newline", &self.newline)
            .field("encoding", &self.encoding)
            .finish()
    }
}

fn is_blank(c: char) -> bool {
    c.is_ascii_whitespace()
}

fn trim(s: &str) -> &str {
    s.trim_matches(is_blank)
}

/// Case-insensitive comparison of section and key names.
pub(crate) fn same_name(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        a.eq_ignore_ascii_case(b)
    } else {
        a.to_lowercase() == b.to_lowercase()
    }
}

/// Windows-1252 code points for bytes 0x80..=0x9F (undefined ones map to the C1
/// control of the same value, as Windows does).
const CP1252_HIGH: [u16; 32] = [
    0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039,
    0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
    0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178,
];

fn decode(bytes: &[u8], problems: &mut Vec<IniProblem>) -> (String, SourceEncoding) {
    let whole_file = |message: String| IniProblem {
        line: 0,
        section: None,
        text: String::new(),
        message,
    };
    // A UTF-16 file is written back as UTF-8, where a U+FEFF at the start reads as
    // the UTF-8 mark: marks repeated after the first (saved as text too) are not
    // text, so the document reads the same before and after a rewrite.
    let utf16 = |body: &[u8], le: bool, problems: &mut Vec<IniProblem>| -> String {
        if !body.chunks_exact(2).remainder().is_empty() {
            problems.push(whole_file(
                "UTF-16 file has an odd number of bytes; the last byte is ignored".into(),
            ));
        }
        let units: Vec<u16> = body
            .chunks_exact(2)
            .map(|p| {
                if le {
                    u16::from_le_bytes([p[0], p[1]])
                } else {
                    u16::from_be_bytes([p[0], p[1]])
                }
            })
            .collect();
        let text = match String::from_utf16(&units) {
            Ok(s) => s,
            Err(_) => {
                problems.push(whole_file(
                    "UTF-16 file has broken characters; they were replaced by U+FFFD".into(),
                ));
                String::from_utf16_lossy(&units)
            }
        };
        match text.strip_prefix('\u{FEFF}') {
            Some(_) => text.trim_start_matches('\u{FEFF}').to_owned(),
            None => text,
        }
    };
    if let Some(body) = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        let text = match std::str::from_utf8(body) {
            Ok(s) => s.to_owned(),
            Err(e) => {
                problems.push(whole_file(format!(
                    "file starts with a UTF-8 mark but is not UTF-8 after byte {}; broken \
                     characters were replaced by U+FFFD",
                    e.valid_up_to() + 3
                )));
                String::from_utf8_lossy(body).into_owned()
            }
        };
        return (text, SourceEncoding::Utf8Bom);
    }
    if let Some(body) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        return (utf16(body, true, problems), SourceEncoding::Utf16Le);
    }
    if let Some(body) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        return (utf16(body, false, problems), SourceEncoding::Utf16Be);
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_owned(), SourceEncoding::Utf8),
        Err(_) => {
            problems.push(whole_file(
                "file is not UTF-8; read as Windows-1252 and will be written back as UTF-8".into(),
            ));
            let text = bytes
                .iter()
                .map(|&b| match b {
                    0x80..=0x9F => char::from_u32(u32::from(CP1252_HIGH[usize::from(b - 0x80)]))
                        .unwrap_or('\u{FFFD}'),
                    _ => char::from(b),
                })
                .collect();
            (text, SourceEncoding::Windows1252)
        }
    }
}

impl IniDocument {
    /// An empty document (LF line endings, UTF-8).
    pub fn new() -> Self {
        IniDocument {
            lines: Vec::new(),
            newline: LineEnding::Lf,
            encoding: SourceEncoding::Utf8,
            index: OnceLock::new(),
            problems: Some(Vec::new()),
        }
    }

    /// Reads a document from the bytes of a file. Never fails: what cannot be
    /// understood is kept verbatim and listed in the returned problems.
    pub fn parse(bytes: &[u8]) -> (IniDocument, Vec<IniProblem>) {
        let mut problems = Vec::new();
        let (text, encoding) = decode(bytes, &mut problems);
        let mut lines = Vec::new();
        let (mut crlf, mut lf) = (0usize, 0usize);
        let mut rest = text.as_str();
        while !rest.is_empty() {
            let (line, ending, next) = match rest.find('\n') {
                Some(i) => {
                    let (line, ending) = match rest[..i].strip_suffix('\r') {
                        Some(l) => {
                            crlf += 1;
                            (l, LineEnding::CrLf)
                        }
                        None => {
                            lf += 1;
                            (&rest[..i], LineEnding::Lf)
                        }
                    };
                    (line, Some(ending), &rest[i + 1..])
                }
                None => (rest, None, ""),
            };
            lines.push(Line {
                text: line.to_owned(),
                ending,
                kind: Kind::Other,
            });
            rest = next;
        }
        let mut doc = IniDocument {
            lines,
            newline: if crlf > lf {
                LineEnding::CrLf
            } else {
                LineEnding::Lf
            },
            encoding,
            index: OnceLock::new(),
            problems: None,
        };
        doc.classify(&mut problems);
        // Problems of the lines; those about the bytes (line 0: the encoding) are the
        // source file's, not the document's.
        doc.problems = Some(problems.iter().filter(|p| p.line != 0).cloned().collect());
        (doc, problems)
    }

    /// Gives every line its kind, reports what is odd, and builds the index on the way.
    fn classify(&mut self, problems: &mut Vec<IniProblem>) {
        let mut builder = IndexBuilder::default();
        let mut section: Option<String> = None;
        for (i, line) in self.lines.iter_mut().enumerate() {
            let number = i + 1;
            let t = trim(&line.text);
            let mut problem = |message: String, section: &Option<String>| {
                problems.push(IniProblem {
                    line: number,
                    section: section.clone(),
                    text: line.text.clone(),
                    message,
                })
            };
            let kind = if t.is_empty() || t.starts_with(';') || t.starts_with('#') {
                Kind::Other
            } else if let Some(inner) = t.strip_prefix('[') {
                match inner.find(']') {
                    Some(end) if !trim(&inner[..end]).is_empty() => Kind::Section {
                        name: trim(&inner[..end]).to_owned(),
                    },
                    Some(_) => {
                        problem(
                            "empty section name; the line is kept as it is".into(),
                            &section,
                        );
                        Kind::Other
                    }
                    None => {
                        problem(
                            "section header without ']'; the line is kept as it is".into(),
                            &section,
                        );
                        Kind::Other
                    }
                }
            } else if let Some(eq) = t.find('=') {
                let key = trim(&t[..eq]);
                if key.is_empty() {
                    problem(
                        "no key name before '='; the line is kept as it is".into(),
                        &section,
                    );
                    Kind::Other
                } else {
                    Kind::Entry {
                        key: span(&line.text, key),
                        value: span(&line.text, trim(&t[eq + 1..])),
                    }
                }
            } else {
                problem(
                    "not understood: expected key=value, [Section] or a ';' comment; the line \
                     is kept as it is"
                        .into(),
                    &section,
                );
                Kind::Other
            };
            if let Kind::Section { name } = &kind {
                section = Some(name.clone());
            }
            match builder.add(i, &kind, &line.text) {
                Seen::New => {}
                Seen::Section(first) => problem(
                    format!(
                        "section appears again (first at line {}); its keys count only where \
                         the first one has none",
                        first + 1
                    ),
                    &None,
                ),
                Seen::Key(first) => problem(
                    format!("duplicate key; the first one (line {}) is used", first + 1),
                    &section,
                ),
                Seen::Orphan => {
                    problem(
                        "key outside any [Section]; it is ignored and kept as it is".into(),
                        &section,
                    );
                    // Kept verbatim, not a key.
                    line.kind = Kind::Other;
                    continue;
                }
            }
            line.kind = kind;
        }
        self.index = OnceLock::from(builder.finish(self.lines.len()));
    }

    /// The line ending new lines get (the one most used in the file read; LF for a new
    /// document).
    pub fn line_ending(&self) -> LineEnding {
        self.newline
    }

    /// The encoding the document was read from (it is always written as UTF-8).
    pub fn encoding(&self) -> SourceEncoding {
        self.encoding
    }

    /// Drops what depends on line numbers: the index and the problems.
    fn lines_moved(&mut self) {
        self.index = OnceLock::new();
        self.problems = None;
    }

    /// The lines that could not be understood, as [`IniDocument::parse`] reports them
    /// (without those about the file's encoding), for the document as it is now (remembered from parsing while no line moved;
    /// a value changed in place moves none).
    pub fn problems(&self) -> Vec<IniProblem> {
        match &self.problems {
            Some(p) => p.clone(),
            None => IniDocument::parse(&self.to_bytes()).1,
        }
    }

    fn index(&self) -> &Index {
        self.index.get_or_init(|| Index::build(&self.lines))
    }

    /// Index ranges `[header, end)` of each block belonging to `section`.
    fn blocks(&self, section: &str) -> &[(usize, usize)] {
        self.index()
            .section(section)
            .map_or(&[], |s| s.blocks.as_slice())
    }

    fn find(&self, section: &str, key: &str) -> Option<usize> {
        self.index().section(section)?.keys.get(&fold(key)).copied()
    }

    /// The value of `key` in `section` (the first one if repeated).
    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.get_with_line(section, key).map(|(v, _)| v)
    }

    /// The value of `key` in `section` and its 1-based line number.
    pub(crate) fn get_with_line(&self, section: &str, key: &str) -> Option<(&str, usize)> {
        let i = self.find(section, key)?;
        self.lines[i].entry().map(|(_, value)| (value, i + 1))
    }

    /// 1-based line number of the (first) header of `section`.
    pub(crate) fn section_line(&self, section: &str) -> Option<usize> {
        self.blocks(section).first().map(|(start, _)| start + 1)
    }

    /// Whether the section exists.
    pub(crate) fn has_section(&self, section: &str) -> bool {
        !self.blocks(section).is_empty()
    }

    /// Section names in file order, each once, with their first spelling.
    pub fn sections(&self) -> Vec<&str> {
        self.index()
            .sections
            .iter()
            .filter_map(|s| match &self.lines[s.blocks.first()?.0].kind {
                Kind::Section { name } => Some(name.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Keys of `section` in file order, each once, with their first spelling.
    pub fn keys(&self, section: &str) -> Vec<&str> {
        self.entries(section).into_iter().map(|(k, _)| k).collect()
    }

    /// `(key, value)` pairs of `section` in file order; a repeated key only once (its
    /// first value).
    pub fn entries(&self, section: &str) -> Vec<(&str, &str)> {
        let Some(s) = self.index().section(section) else {
            return Vec::new();
        };
        s.order
            .iter()
            .filter_map(|&i| self.lines[i].entry())
            .collect()
    }

    /// Sets `key` in `section`: replaces the value in place if the key exists (other
    /// lines untouched; nothing changes if the value is the same), otherwise adds
    /// `key=value` after the last key of the section, creating the section at the end
    /// of the file if needed.
    pub fn set(&mut self, section: &str, key: &str, value: &str) -> Result<(), IniError> {
        check_names(section, key)?;
        if value.contains(['\n', '\r']) {
            return Err(IniError::NewlineInValue {
                section: section.to_owned(),
                key: key.to_owned(),
            });
        }
        if trim(value) != value {
            return Err(IniError::BlankAtEdge {
                section: section.to_owned(),
                key: key.to_owned(),
            });
        }
        if let Some(i) = self.find(section, key) {
            let line = &mut self.lines[i];
            let Kind::Entry { value: old, .. } = &mut line.kind else {
                return Ok(()); // find only gives entries
            };
            if line.text.get(old.clone()) == Some(value) {
                return Ok(());
            }
            // Keep what precedes the value ("key = ") as written.
            let eq = line.text.find('=').map_or(line.text.len(), |p| p + 1);
            let after = &line.text[eq..];
            let lead = after.len() - after.trim_start_matches(is_blank).len();
            line.text.truncate(eq + lead);
            line.text.push_str(value);
            *old = eq + lead..line.text.len();
            return Ok(());
        }
        let entry = Line {
            text: format!("{key}={value}"),
            ending: Some(self.newline),
            kind: Kind::Entry {
                key: 0..key.len(),
                value: key.len() + 1..key.len() + 1 + value.len(),
            },
        };
        match self.blocks(section).first().copied() {
            Some((start, end)) => {
                let last_key = (start + 1..end)
                    .rev()
                    .find(|&i| matches!(self.lines[i].kind, Kind::Entry { .. }))
                    .unwrap_or(start);
                self.insert(last_key + 1, entry);
            }
            None => {
                let header = Line {
                    text: format!("[{section}]"),
                    ending: Some(self.newline),
                    kind: Kind::Section {
                        name: section.to_owned(),
                    },
                };
                let at = self.lines.len();
                self.insert(at, header);
                self.insert(at + 1, entry);
            }
        }
        Ok(())
    }

    /// Inserts a line at `at`, giving the line before it a line ending if it had none.
    fn insert(&mut self, at: usize, line: Line) {
        if at > 0 {
            let newline = self.newline;
            let before = &mut self.lines[at - 1];
            if before.ending.is_none() {
                before.ending = Some(newline);
            }
        }
        self.lines.insert(at, line);
        self.lines_moved();
    }

    /// Removes `key` from `section` (every copy of it). Returns whether it was there.
    pub fn remove(&mut self, section: &str, key: &str) -> bool {
        let blocks = self.blocks(section).to_vec();
        let before = self.lines.len();
        let (mut at, mut block) = (0, 0);
        // One pass over the lines, whatever the number of copies (blocks are in order).
        self.lines.retain(|line| {
            let i = at;
            at += 1;
            while blocks.get(block).is_some_and(|&(_, end)| end <= i) {
                block += 1;
            }
            let inside = blocks.get(block).is_some_and(|&(start, _)| i > start);
            !(inside && line.entry().is_some_and(|(k, _)| same_name(k, key)))
        });
        let removed = self.lines.len() != before;
        if removed {
            self.lines_moved();
        }
        removed
    }

    /// Removes `section`: its header and every line up to the next section (every copy
    /// of it). Returns whether it was there.
    pub fn remove_section(&mut self, section: &str) -> bool {
        let blocks = self.blocks(section).to_vec();
        for &(start, end) in blocks.iter().rev() {
            self.lines.drain(start..end);
        }
        if !blocks.is_empty() {
            self.lines_moved();
        }
        !blocks.is_empty()
    }

    /// The document as UTF-8 bytes (with the UTF-8 mark only if the file read had one).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.encoding == SourceEncoding::Utf8Bom {
            out.extend_from_slice(&[0xEF, 0xBB, 0xBF]);
        }
        out.extend_from_slice(self.to_string().as_bytes());
        out
    }
}

fn check_names(section: &str, key: &str) -> Result<(), IniError> {
    let breaks = |s: &str| s.contains(['\n', '\r']);
    if section.is_empty() || trim(section) != section || section.contains(']') || breaks(section) {
        return Err(IniError::BadSection {
            section: section.to_owned(),
        });
    }
    if key.is_empty()
        || trim(key) != key
        || key.contains('=')
        || breaks(key)
        || key.starts_with([';', '#', '['])
    {
        return Err(IniError::BadKey {
            section: section.to_owned(),
            key: key.to_owned(),
        });
    }
    Ok(())
}

/// The text of the document, lines with their own endings.
impl fmt::Display for IniDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.lines {
            f.write_str(&line.text)?;
            if let Some(e) = line.ending {
                f.write_str(e.as_str())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "; MicroSIP settings\r\n\
        \r\n\
        [Settings]\r\n\
        accountId=1\r\n\
        # hash comment\r\n\
        unknownKey = keep me \r\n\
        this line is garbage\r\n\
        \r\n\
        [Account1]\r\n\
        server=sip.example.com\r\n\
        password=p;w#1005\r\n\
        recordingPath=C:\\x;y\r\n\
        \r\n\
        [Mystery]\r\n\
        x=1\r\n";

    #[test]
    fn round_trip_is_byte_identical() {
        let (doc, problems) = IniDocument::parse(SAMPLE.as_bytes());
        assert_eq!(doc.to_bytes(), SAMPLE.as_bytes());
        assert_eq!(doc.line_ending(), LineEnding::CrLf);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].line, 7);
        assert_eq!(problems[0].section.as_deref(), Some("Settings"));
        assert!(problems[0].to_string().starts_with("line 7: [Settings]"));
    }

    #[test]
    fn values_are_raw() {
        let (doc, _) = IniDocument::parse(SAMPLE.as_bytes());
        assert_eq!(doc.get("account1", "PASSWORD"), Some("p;w#1005"));
        assert_eq!(doc.get("Account1", "recordingPath"), Some("C:\\x;y"));
        assert_eq!(doc.get("Settings", "unknownkey"), Some("keep me"));
        assert_eq!(doc.get("Settings", "missing"), None);
        assert_eq!(doc.get_with_line("Settings", "accountId"), Some(("1", 4)));
        assert_eq!(doc.section_line("mystery"), Some(14));
    }

    #[test]
    fn set_in_place_changes_one_line() {
        let (mut doc, _) = IniDocument::parse(SAMPLE.as_bytes());
        doc.set("settings", "UNKNOWNKEY", "new").unwrap();
        let expected = SAMPLE.replace("unknownKey = keep me \r\n", "unknownKey = new\r\n");
        assert_eq!(doc.to_string(), expected);
        // The value read back follows every change, longer or shorter.
        assert_eq!(doc.get("Settings", "unknownKey"), Some("new"));
        doc.set("Settings", "unknownKey", "a much longer välue")
            .unwrap();
        assert_eq!(
            doc.get("SETTINGS", "unknownkey"),
            Some("a much longer välue")
        );
        doc.set("Settings", "unknownKey", "").unwrap();
        assert_eq!(doc.get("Settings", "unknownKey"), Some(""));
        assert_eq!(
            doc.entries("Settings"),
            vec![("accountId", "1"), ("unknownKey", "")]
        );
        // Same value: nothing changes at all.
        let (mut doc, _) = IniDocument::parse(SAMPLE.as_bytes());
        doc.set("Settings", "unknownKey", "keep me").unwrap();
        assert_eq!(doc.to_string(), SAMPLE);
    }

    #[test]
    fn set_appends_after_last_key_and_creates_sections() {
        let (mut doc, _) = IniDocument::parse(SAMPLE.as_bytes());
        doc.set("Account1", "domain", "example.com").unwrap();
        doc.set("New", "a", "b").unwrap();
        let expected = SAMPLE.replace(
            "recordingPath=C:\\x;y\r\n",
            "recordingPath=C:\\x;y\r\ndomain=example.com\r\n",
        ) + "[New]\r\na=b\r\n";
        assert_eq!(doc.to_string(), expected);
        assert_eq!(doc.get("new", "A"), Some("b"));
    }

    #[test]
    fn set_into_empty_section_and_file_without_final_newline() {
        let (mut doc, _) = IniDocument::parse(b"[A]\n[B]\nx=1");
        doc.set("A", "k", "v").unwrap();
        doc.set("B", "y", "2").unwrap();
        assert_eq!(doc.to_string(), "[A]\nk=v\n[B]\nx=1\ny=2\n");
    }

    #[test]
    fn set_refuses_bad_input() {
        let mut doc = IniDocument::new();
        assert!(matches!(
            doc.set("S", "k", "a\nb"),
            Err(IniError::NewlineInValue { .. })
        ));
        assert!(matches!(
            doc.set("S", "k", "a\rb"),
            Err(IniError::NewlineInValue { .. })
        ));
        assert!(matches!(
            doc.set("S", "k", " a"),
            Err(IniError::BlankAtEdge { .. })
        ));
        assert!(matches!(
            doc.set("S", "a=b", "1"),
            Err(IniError::BadKey { .. })
        ));
        assert!(matches!(
            doc.set("S", "", "1"),
            Err(IniError::BadKey { .. })
        ));
        assert!(matches!(
            doc.set("S]", "k", "1"),
            Err(IniError::BadSection { .. })
        ));
        assert_eq!(doc.to_string(), "");
        let err = doc.set("Account1", "password", "secret\n").unwrap_err();
        assert!(!err.to_string().contains("secret"));
    }

    #[test]
    fn remove_key_and_section() {
        let (mut doc, _) = IniDocument::parse(SAMPLE.as_bytes());
        assert!(doc.remove("Account1", "Password"));
        assert!(!doc.remove("Account1", "Password"));
        assert!(doc.remove_section("mystery"));
        assert!(!doc.remove_section("mystery"));
        assert_eq!(doc.sections(), vec!["Settings", "Account1"]);
        assert_eq!(
            doc.keys("Account1"),
            vec!["server", "recordingPath"],
            "{}",
            doc
        );
        assert!(!doc.to_string().contains("password"));
    }

    #[test]
    fn duplicates_first_wins_and_are_reported() {
        let text = "[S]\nk=1\nk=2\n[s]\nk=3\nj=4\n";
        let (doc, problems) = IniDocument::parse(text.as_bytes());
        assert_eq!(doc.get("S", "k"), Some("1"));
        assert_eq!(doc.get("S", "j"), Some("4"));
        assert_eq!(doc.sections(), vec!["S"]);
        assert_eq!(doc.entries("S"), vec![("k", "1"), ("j", "4")]);
        let lines: Vec<usize> = problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![3, 4, 5]);
    }

    #[test]
    fn problems_follow_the_lines() {
        let text = "[S]\nk=1\ngarbage\nk=2\n";
        let (mut doc, problems) = IniDocument::parse(text.as_bytes());
        assert_eq!(doc.problems(), problems);
        let lines = |d: &IniDocument| d.problems().iter().map(|p| p.line).collect::<Vec<_>>();
        assert_eq!(lines(&doc), vec![3, 4]);
        doc.set("S", "k", "changed").unwrap(); // in place: no line moves
        assert_eq!(lines(&doc), vec![3, 4]);
        doc.set("T", "x", "1").unwrap(); // appended: still the same lines
        assert_eq!(lines(&doc), vec![3, 4]);
        let (mut doc, _) = IniDocument::parse(text.as_bytes());
        doc.set("S", "new", "1").unwrap(); // inserted after line 4
        assert_eq!(lines(&doc), vec![3, 4]);
        assert!(doc.remove("S", "k")); // both copies of k: the garbage moves up
        assert_eq!(lines(&doc), vec![2]);
    }

    #[test]
    fn odd_lines() {
        let text = "k=outside\n[]\n[Open\n=novalue\n[S] trailing\n  ; indented comment\n";
        let (doc, problems) = IniDocument::parse(text.as_bytes());
        assert_eq!(doc.to_string(), text);
        assert_eq!(problems.len(), 4);
        assert!(doc.has_section("S"));
        assert_eq!(doc.keys("S"), Vec::<&str>::new());
    }

    #[test]
    fn utf16_le_and_be() {
        let text = "[Account1]\r\ndisplayName=Zoë\r\n";
        let mut le = vec![0xFF, 0xFE];
        let mut be = vec![0xFE, 0xFF];
        for u in text.encode_utf16() {
            le.extend_from_slice(&u.to_le_bytes());
            be.extend_from_slice(&u.to_be_bytes());
        }
        for bytes in [le, be] {
            let (doc, problems) = IniDocument::parse(&bytes);
            assert!(problems.is_empty());
            assert_eq!(doc.get("Account1", "displayName"), Some("Zoë"));
            assert_eq!(doc.to_bytes(), text.as_bytes());
        }
    }

    /// Found by fuzzing (fuzz/fuzz_targets/ini.rs): a UTF-16 file whose mark is
    /// doubled read its first line with a U+FEFF before `[Settings]` (the section
    /// was lost), and written back as UTF-8 the U+FEFF became the UTF-8 mark, so
    /// the rewritten file read differently.
    #[test]
    fn fuzz_utf16_with_doubled_mark() {
        let text = "[Settings]\r\naccountId=1\r\n";
        let mut le = vec![0xFF, 0xFE, 0xFF, 0xFE];
        for u in text.encode_utf16() {
            le.extend_from_slice(&u.to_le_bytes());
        }
        let (doc, problems) = IniDocument::parse(&le);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(doc.get("Settings", "accountId"), Some("1"));
        assert_eq!(doc.to_bytes(), text.as_bytes());
        let (again, _) = IniDocument::parse(&doc.to_bytes());
        assert!(again.to_string() == doc.to_string());
    }

    #[test]
    fn utf8_bom_kept_and_ansi_fallback() {
        let bytes = b"\xEF\xBB\xBF[S]\nk=v\n";
        let (doc, _) = IniDocument::parse(bytes);
        assert_eq!(doc.get("S", "k"), Some("v"));
        assert_eq!(doc.to_bytes(), bytes);
        let (doc, problems) = IniDocument::parse(b"[S]\nname=Jos\xe9 \x80\n");
        assert_eq!(doc.get("S", "name"), Some("José €"));
        assert_eq!(problems.len(), 1);
        assert_eq!(doc.encoding(), SourceEncoding::Windows1252);
    }

    #[test]
    fn debug_and_problems_hide_passwords() {
        let (doc, problems) = IniDocument::parse(b"[A]\npassword=hunter2\npassword hunter3\n");
        assert!(!format!("{doc:?}").contains("hunter"));
        assert_eq!(problems.len(), 1);
        assert!(!problems[0].to_string().contains("hunter"));
        assert!(!format!("{problems:?}").contains("hunter"));
    }
}
