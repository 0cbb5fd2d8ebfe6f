//! The message store: SIP MESSAGEs received and sent, kept on disk per contact so
//! that nothing received is lost across a restart (MicroSIP keeps them in memory
//! only).
//!
//! - The folder is `messages/` beside the ini ([`MessageStore::beside_ini`]), mode
//!   0700; one file per contact, mode 0600, named from the contact's URI made safe
//!   (`[A-Za-z0-9@._-]` kept, anything else `_`, at most 80 characters) plus a hash
//!   of the whole contact key, so URIs that look alike stay apart:
//!   `sip_1001@example.com-1c2d3e4f5a6b7c8d.jsonl`.
//! - The contact key is the URI lightly normalised ([`contact_key`]): blanks
//!   trimmed, `Name <uri>` reduced to the URI, URI parameters and headers (`;...`,
//!   `?...`) dropped, the scheme and host lower-cased. Callers should pass the
//!   remote party's URI (in for `from`, out for `to`).
//! - Each message is one JSON line, `{"contact":...,"time":...,"direction":"in|out",
//!   "from":...,"to":...,"text":...,"status":...}` (plus `"id"` when set; time in
//!   Unix seconds), appended with `O_APPEND` and synced before [`MessageStore::store`]
//!   returns: once it returned `Ok`, a SIGKILL or power loss does not lose it.
//! - A later status (e.g. `sent` or `failed` once the answer to our MESSAGE came) is
//!   another line, `{"contact":...,"id":...,"status":...,"time":...}`
//!   ([`MessageStore::set_status`]); reading applies it to the latest message
//!   with that id.
//! - Reading never fails on content: a torn last line (a crash in the middle of an
//!   append), any line that is not such JSON, a line longer than [`MAX_LINE`] or a
//!   line of another contact (should two keys ever share a file name) is skipped.
//!   An append after a torn line starts on a new line.

use std::fs::{self, DirBuilder, File};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use microsip_config::FileError;
use serde::{Deserialize, Serialize};

use crate::calllog::append_record;

/// Longest line (one message, JSON-encoded) written or read: 16 MiB.
pub const MAX_LINE: usize = 16 * 1024 * 1024;
/// The folder name beside the ini.
pub(crate) const FOLDER: &str = "messages";
/// Longest readable part of a file name (before the hash).
const MAX_NAME: usize = 80;

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageDirection {
    /// Received.
    In,
    /// Sent.
    Out,
}

/// One message as kept on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// When it was received or sent, Unix seconds.
    pub time: i64,
    /// `in` or `out`.
    pub direction: MessageDirection,
    /// The sender's URI.
    pub from: String,
    /// The recipient's URI.
    pub to: String,
    /// The text.
    pub text: String,
    /// `received`, `pending`, `sent`, `failed`, ... (free text).
    pub status: String,
    /// An id to refer to the message later ([`MessageStore::set_status`]); empty
    /// when not needed (then not written).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
}

/// What a line is written as.
#[derive(Serialize)]
struct LineOut<'a> {
    contact: &'a str,
    #[serde(flatten)]
    message: &'a StoredMessage,
}

/// A status line.
#[derive(Serialize)]
struct StatusOut<'a> {
    contact: &'a str,
    id: &'a str,
    status: &'a str,
    time: i64,
}

/// What a line may hold when read back.
#[derive(Deserialize)]
struct LineIn {
    #[serde(default)]
    contact: Option<String>,
    #[serde(default)]
    time: Option<i64>,
    #[serde(default)]
    direction: Option<MessageDirection>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    id: Option<String>,
}

/// The contact key for a URI (see the module docs).
pub fn contact_key(uri: &str) -> String {
    let s = uri.trim();
    let s = match (s.find('<'), s.rfind('>')) {
        (Some(a), Some(b)) if a < b => &s[a + 1..b],
        _ => s,
    };
    let s = s.split([';', '?']).next().unwrap_or("").trim();
    let Some((scheme, rest)) = s.split_once(':') else {
        return s.to_owned();
    };
    let scheme = scheme.to_ascii_lowercase();
    if !matches!(scheme.as_str(), "sip" | "sips" | "tel") {
        return s.to_owned();
    }
    match rest.rsplit_once('@') {
        Some((user, host)) => format!("{scheme}:{user}@{}", host.to_ascii_lowercase()),
        None if scheme == "tel" => format!("{scheme}:{rest}"),
        None => format!("{scheme}:{}", rest.to_ascii_lowercase()),
    }
}

/// 64-bit FNV-1a.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The file name for a contact key: the safe part, a hash of the whole key, `.jsonl`.
pub fn file_name(key: &str) -> String {
    let mut safe: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '@' | '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(MAX_NAME)
        .collect();
    if safe.starts_with('.') {
        safe.replace_range(..1, "_");
    }
    format!("{safe}-{:016x}.jsonl", fnv1a(key.as_bytes()))
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn file_error(path: &Path, action: &str, source: io::Error) -> FileError {
    FileError {
        path: path.to_path_buf(),
        action: action.to_owned(),
        source,
    }
}

/// Reads the lines of `path` that are whole and at most [`MAX_LINE`] long (a last
/// line without its line break is a torn append and is left out). `Ok(None)` when
/// the file does not exist.
fn read_lines(path: &Path) -> Result<Option<Vec<Vec<u8>>>, FileError> {
    if !regular_or_missing(path)? {
        return Ok(None);
    }
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(file_error(path, "open", e)),
    };
    let mut reader = BufReader::new(file);
    let mut lines = Vec::new();
    let mut skipping = false;
    loop {
        let mut line = Vec::new();
        let limit = u64::try_from(MAX_LINE + 1).unwrap_or(u64::MAX);
        let n = (&mut reader)
            .take(limit)
            .read_until(b'\n', &mut line)
            .map_err(|e| file_error(path, "read", e))?;
        if n == 0 {
            break;
        }
        let whole = line.last() == Some(&b'\n');
        if skipping {
            // The rest of an over-long line.
            skipping = !whole;
            continue;
        }
        if !whole {
            if line.len() > MAX_LINE {
                skipping = true;
            }
            // Else: the torn last line.
            continue;
        }
        lines.push(line);
    }
    Ok(Some(lines))
}

/// `Ok(false)` when `path` does not exist; an error when it is something else than a
/// regular file (a FIFO would block us, a device would take our writes).
fn regular_or_missing(path: &Path) -> Result<bool, FileError> {
    match fs::metadata(path) {
        Ok(meta) if meta.file_type().is_file() => Ok(true),
        Ok(_) => Err(file_error(
            path,
            "use",
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "it is not a regular file; it was left as it is",
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(file_error(path, "examine", e)),
    }
}

/// The messages per contact, in a folder.
#[derive(Debug, Clone)]
pub struct MessageStore {
    dir: PathBuf,
}

impl MessageStore {
    /// The store in `dir` (created when the first message is stored).
    pub fn new(dir: impl Into<PathBuf>) -> MessageStore {
        MessageStore { dir: dir.into() }
    }

    /// The store in `messages/` beside the ini file `ini`.
    pub fn beside_ini(ini: &Path) -> MessageStore {
        let parent = match ini.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        MessageStore::new(parent.join(FOLDER))
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file holding the messages of `contact` (a URI; see [`contact_key`]).
    pub fn path_for(&self, contact: &str) -> PathBuf {
        self.dir.join(file_name(&contact_key(contact)))
    }

    fn append_line(
        &self,
        contact: &str,
        line: Result<String, serde_json::Error>,
    ) -> Result<(), FileError> {
        let path = self.path_for(contact);
        let mut line = line.map_err(|e| {
            file_error(
                &path,
                "encode a message for",
                io::Error::new(io::ErrorKind::InvalidData, e),
            )
        })?;
        if line.len() >= MAX_LINE {
            return Err(file_error(
                &path,
                "store a message in",
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("message larger than {MAX_LINE} bytes"),
                ),
            ));
        }
        line.push('\n');
        if !self.dir.is_dir() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .map_err(|e| file_error(&self.dir, "create folder", e))?;
        }
        let new = !regular_or_missing(&path)?;
        append_record(&path, None, line.as_bytes())?;
        if new {
            // Make the new file's name durable too.
            match File::open(&self.dir).and_then(|d| d.sync_all()) {
                Err(e) if e.raw_os_error() != Some(libc::EINVAL) => {
                    return Err(file_error(&self.dir, "sync folder", e))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Appends `message` to the file of `contact` and syncs it; `Ok` means it is on
    /// disk.
    pub fn store(&self, contact: &str, message: &StoredMessage) -> Result<(), FileError> {
        let key = contact_key(contact);
        let line = serde_json::to_string(&LineOut {
            contact: &key,
            message,
        });
        self.append_line(contact, line)
    }

    /// Records a new status for the message of `contact` with id `id`.
    pub fn set_status(&self, contact: &str, id: &str, status: &str) -> Result<(), FileError> {
        let key = contact_key(contact);
        let line = serde_json::to_string(&StatusOut {
            contact: &key,
            id,
            status,
            time: now_secs(),
        });
        self.append_line(contact, line)
    }

    /// The messages of `contact`, oldest first (empty when there are none).
    pub fn list(&self, contact: &str) -> Result<Vec<StoredMessage>, FileError> {
        let key = contact_key(contact);
        let Some(lines) = read_lines(&self.path_for(contact))? else {
            return Ok(Vec::new());
        };
        let mut out: Vec<StoredMessage> = Vec::new();
        for line in lines {
            let Ok(l) = serde_json::from_slice::<LineIn>(&line) else {
                continue;
            };
            if l.contact.as_deref().is_some_and(|c| c != key) {
                continue;
            }
            match (l.direction, l.text) {
                (Some(direction), Some(text)) => out.push(StoredMessage {
                    time: l.time.unwrap_or(0),
                    direction,
                    from: l.from.unwrap_or_default(),
                    to: l.to.unwrap_or_default(),
                    text,
                    status: l.status.unwrap_or_default(),
                    id: l.id.unwrap_or_default(),
                }),
                (None, None) => {
                    if let (Some(id), Some(status)) = (l.id, l.status) {
                        if let Some(m) = out.iter_mut().rev().find(|m| !id.is_empty() && m.id == id)
                        {
                            m.status = status;
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// The contacts with stored messages (their keys), the most recently written
    /// first. Files that hold no readable line are left out.
    pub fn contacts(&self) -> Result<Vec<String>, FileError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(file_error(&self.dir, "list", e)),
        };
        let mut found: Vec<(SystemTime, String)> = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("jsonl") {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let Some(key) = first_contact(&path) else {
                continue;
            };
            if found.iter().any(|(_, k)| *k == key) {
                continue;
            }
            found.push((meta.modified().unwrap_or(UNIX_EPOCH), key));
        }
        found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        Ok(found.into_iter().map(|(_, k)| k).collect())
    }
}

/// The contact of the first readable line of a message file.
fn first_contact(path: &Path) -> Option<String> {
    let file = File::open(path).ok()?;
    let mut reader = BufReader::new(file);
    for _ in 0..16 {
        let mut line = Vec::new();
        let limit = u64::try_from(MAX_LINE + 1).unwrap_or(u64::MAX);
        let n = (&mut reader)
            .take(limit)
            .read_until(b'\n', &mut line)
            .ok()?;
        if n == 0 || line.last() != Some(&b'\n') {
            return None;
        }
        if let Ok(LineIn {
            contact: Some(c), ..
        }) = serde_json::from_slice::<LineIn>(&line)
        {
            return Some(c);
        }
    }
    None
}

/// The engine keeps its messages here: one file per contact.
impl microsip_engine::MessageArchive for MessageStore {
    fn store(&mut self, record: &microsip_engine::MessageRecord) -> Result<(), String> {
        let message = StoredMessage {
            time: record.time,
            direction: if record.incoming {
                MessageDirection::In
            } else {
                MessageDirection::Out
            },
            from: record.from.clone(),
            to: record.to.clone(),
            text: record.text.clone(),
            status: record.status.clone(),
            id: String::new(),
        };
        MessageStore::store(self, &record.contact, &message).map_err(|e| e.to_string())
    }

    fn list(&self, contact: Option<&str>) -> Result<Vec<microsip_engine::MessageRecord>, String> {
        let contacts = match contact {
            Some(c) => vec![c.to_string()],
            None => self.contacts().map_err(|e| e.to_string())?,
        };
        let mut all = Vec::new();
        for c in contacts {
            for m in MessageStore::list(self, &c).map_err(|e| e.to_string())? {
                all.push(microsip_engine::MessageRecord {
                    time: m.time,
                    incoming: m.direction == MessageDirection::In,
                    contact: c.clone(),
                    from: m.from,
                    to: m.to,
                    text: m.text,
                    status: m.status,
                });
            }
        }
        all.sort_by_key(|m| m.time);
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(
            contact_key(" \"Bob\" <SIP:1001@Example.COM;transport=tcp> "),
            "sip:1001@example.com"
        );
        assert_eq!(contact_key("sip:Bob@host?subject=x"), "sip:Bob@host");
        assert_eq!(contact_key("tel:+12345"), "tel:+12345");
        assert_eq!(contact_key("1001"), "1001");
        assert_eq!(contact_key(""), "");
    }

    #[test]
    fn names() {
        let a = file_name("sip:1001@example.com");
        assert!(a.starts_with("sip_1001@example.com-"), "{a}");
        assert!(a.ends_with(".jsonl"));
        assert_ne!(file_name("sip:a/b"), file_name("sip:a_b"));
        assert!(file_name("../../etc/passwd").starts_with("_._.._etc_passwd"));
        assert!(!file_name(".hidden").starts_with('.'));
        let long = file_name(&"x".repeat(10_000));
        assert!(long.len() < 120);
        let odd = file_name("sip:ünï\u{0}cödé/\\");
        assert!(odd
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@._-".contains(c)));
    }
}
