//! The CSV call log (`--log FILE`): one row per finished call, for spreadsheets and
//! scripts (Python's `csv` module reads it as is).
//!
//! - The first line is a header ([`HEADER`]), written only when the file is new or
//!   empty; rows and the header end with CRLF (RFC 4180).
//! - A field is quoted when it holds `,`, `"`, CR or LF or begins or ends with a
//!   blank; quotes inside are doubled. Other control characters (which no CSV reader
//!   expects, and which could drive a terminal) are written as spaces. Values are
//!   otherwise written as they are (no spreadsheet-formula escaping: a consumer
//!   opening the file in a spreadsheet must treat it as text).
//! - Times are ISO 8601 in UTC with milliseconds (`2024-05-01T12:34:56.789Z`); an
//!   unanswered call has an empty answered time. Durations are whole seconds.
//! - Each row is appended with one `write` on a file opened with `O_APPEND` (so a
//!   rotated file is simply started anew) and synced before [`CallLog::append`]
//!   returns. A failing write (disk full) is returned as an error and the partial
//!   row is cut off again; the rows already there are never touched. If the file
//!   does not end with a line break (a crash in the middle of a row), the next row
//!   starts on a new line.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use microsip_config::FileError;

/// The column names, in order.
pub const COLUMNS: [&str; 12] = [
    "start",
    "direction",
    "account",
    "remote_uri",
    "remote_number",
    "display_name",
    "answered",
    "end",
    "duration",
    "end_code",
    "end_reason",
    "call_id",
];

/// The header line (without its line break).
pub const HEADER: &str = "start,direction,account,remote_uri,remote_number,display_name,answered,end,duration,end_code,end_reason,call_id";

/// One finished call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    /// When the call started (INVITE sent or received).
    pub start: SystemTime,
    /// `in` or `out`.
    pub direction: String,
    /// The local account (e.g. `1001@example.com`, or its label).
    pub account: String,
    /// The remote party's URI.
    pub remote_uri: String,
    /// The remote party's number (user part).
    pub remote_number: String,
    /// The remote party's display name.
    pub display_name: String,
    /// When the call was answered; `None` if it never was.
    pub answered: Option<SystemTime>,
    /// When the call ended.
    pub end: SystemTime,
    /// Talk time (answered to end); written as whole seconds.
    pub duration: Duration,
    /// The final SIP code (e.g. 200 for a call ended by BYE, 486, 487), if any.
    pub end_code: Option<u16>,
    /// Why the call ended (`BYE from remote`, `Busy Here`, ...).
    pub end_reason: String,
    /// The phone's call id.
    pub call_id: String,
}

/// `t` as ISO 8601 UTC with milliseconds. Times before 1970 are written as
/// 1970-01-01T00:00:00.000Z.
pub fn iso8601(t: SystemTime) -> String {
    microsip_engine::time::rfc3339(t)
}

/// One CSV field, quoted when needed (RFC 4180), other control characters as spaces.
pub(crate) fn csv_field(value: &str) -> String {
    let cleaned: String = value
        .chars()
        .map(|c| {
            if c.is_control() && c != '\r' && c != '\n' {
                ' '
            } else {
                c
            }
        })
        .collect();
    let needs_quotes = cleaned.contains([',', '"', '\r', '\n'])
        || cleaned.starts_with(' ')
        || cleaned.ends_with(' ');
    if needs_quotes {
        format!("\"{}\"", cleaned.replace('"', "\"\""))
    } else {
        cleaned
    }
}

/// The CSV row for `record`, with its CRLF.
pub(crate) fn csv_row(record: &CallRecord) -> String {
    let fields = [
        iso8601(record.start),
        record.direction.clone(),
        record.account.clone(),
        record.remote_uri.clone(),
        record.remote_number.clone(),
        record.display_name.clone(),
        record.answered.map(iso8601).unwrap_or_default(),
        iso8601(record.end),
        record.duration.as_secs().to_string(),
        record.end_code.map(|c| c.to_string()).unwrap_or_default(),
        record.end_reason.clone(),
        record.call_id.clone(),
    ];
    let mut row = fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",");
    row.push_str("\r\n");
    row
}

/// Appends `bytes` to `path` as one record, durably: opens it for reading and with
/// `O_APPEND` (created mode 0600), writes `header` first when the file is empty, a line break
/// first when the file does not end with one, syncs, and on a failed write cuts the
/// file back to its old length. Shared with the message store.
pub(crate) fn append_record(
    path: &Path,
    header: Option<&[u8]>,
    bytes: &[u8],
) -> Result<(), FileError> {
    let err = |action: &str, source: io::Error| FileError {
        path: path.to_path_buf(),
        action: action.to_owned(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| err("open", e))?;
    let len = file.metadata().map_err(|e| err("examine", e))?.len();
    let mut out = Vec::with_capacity(bytes.len() + 64);
    if len == 0 {
        if let Some(h) = header {
            out.extend_from_slice(h);
        }
    } else if !ends_with_newline(&file, len) {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(bytes);
    if let Err(e) = file.write_all(&out).and_then(|_| file.sync_data()) {
        // Take the partial record back out so the next one starts clean.
        let _ = file.set_len(len);
        let _ = file.sync_data();
        return Err(err("append to", e));
    }
    Ok(())
}

/// Whether the last byte of `file` (of length `len` > 0) is a line feed.
fn ends_with_newline(file: &File, len: u64) -> bool {
    let mut last = [0u8; 1];
    match file.read_at(&mut last, len - 1) {
        Ok(1) => last[0] == b'\n',
        // Unreadable (e.g. a write-only pipe): assume it is fine.
        _ => true,
    }
}

/// The CSV call log at a path.
#[derive(Debug, Clone)]
pub struct CallLog {
    path: PathBuf,
}

impl CallLog {
    /// The log at `path` (nothing is opened until a row is appended).
    pub fn new(path: impl Into<PathBuf>) -> CallLog {
        CallLog { path: path.into() }
    }

    /// Where the log is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the row for `record` (and the header first if the file is new or
    /// empty), synced to disk before returning. On error (the caller logs it) the
    /// file holds what it held before.
    pub fn append(&self, record: &CallRecord) -> Result<(), FileError> {
        let header = format!("{HEADER}\r\n");
        append_record(
            &self.path,
            Some(header.as_bytes()),
            csv_row(record).as_bytes(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn dates() {
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(951_782_400_123); // leap day 2000
        assert_eq!(iso8601(t), "2000-02-29T00:00:00.123Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_714_566_896);
        assert_eq!(iso8601(t), "2024-05-01T12:34:56.000Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_102_444_799);
        assert_eq!(iso8601(t), "2099-12-31T23:59:59.000Z");
    }

    #[test]
    fn quoting() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field(""), "");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("l1\nl2"), "\"l1\nl2\"");
        assert_eq!(csv_field(" x"), "\" x\"");
        assert_eq!(csv_field("x "), "\"x \"");
        assert_eq!(csv_field("a\u{1b}[2Jb\0c"), "a [2Jb c");
        assert_eq!(HEADER, COLUMNS.join(","));
    }
}
