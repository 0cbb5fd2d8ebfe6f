//! Call history in MicroSIP's own place and format, so a history carried over from
//! Windows shows up and ours is readable by MicroSIP.
//!
//! - `[Calls]`: keys `0`..`999` used as a ring buffer, each value
//!   `number;name;type;time;duration;info` (type 0 outgoing, 1 incoming, 2 missed,
//!   3 answered elsewhere; time in Unix seconds; duration in seconds).
//! - `[Settings] callsLastKey`: the key written last; the next entry goes to
//!   `(callsLastKey + 1) % 1000`, overwriting the oldest once the ring is full.
//! - `[Settings] lastCallNumber`: the number dialled last (for redial).
//! - `[Dialed]`: `0`..`19`, numbers typed for dialling, newest first, each once.
//!
//! Writing never breaks the format: in `number`, `name` and `info`, a `;` becomes
//! `,`, every control character (line breaks, tabs, ...) becomes a space, and blanks
//! at either end are trimmed. Reading is lenient: fields missing at the end of a
//! value (older MicroSIP entries) read as empty / 0, an unknown type is kept as
//! [`CallType::Other`], unparsable numbers read as 0, and keys that are not
//! `0`..`999` are ignored. `info` is the rest of the value, so a `;` MicroSIP left in
//! it is kept.
//!
//! These functions change an [`IniDocument`]; the caller saves it
//! (`IniFile::save`, atomic).

use microsip_config::{IniDocument, IniError};

/// The history section.
pub(crate) const CALLS: &str = "Calls";
/// The dialled-numbers section.
pub(crate) const DIALED: &str = "Dialed";
/// The section holding `callsLastKey` and `lastCallNumber`.
pub const SETTINGS: &str = "Settings";
/// Size of the `[Calls]` ring.
pub(crate) const RING_SIZE: u32 = 1000;
/// How many numbers `[Dialed]` keeps.
pub const MAX_DIALED: usize = 20;

/// The kind of a history entry (MicroSIP's `type` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallType {
    /// 0: we called.
    Outgoing,
    /// 1: we answered.
    Incoming,
    /// 2: it rang and nobody answered here.
    Missed,
    /// 3: answered on another device (e.g. a pickup).
    AnsweredElsewhere,
    /// Any other number found in a file; written back unchanged.
    Other(u32),
}

impl CallType {
    /// The number stored in the ini.
    pub fn code(self) -> u32 {
        match self {
            CallType::Outgoing => 0,
            CallType::Incoming => 1,
            CallType::Missed => 2,
            CallType::AnsweredElsewhere => 3,
            CallType::Other(n) => n,
        }
    }

    /// The type for a stored number.
    pub(crate) fn from_code(code: u32) -> CallType {
        match code {
            0 => CallType::Outgoing,
            1 => CallType::Incoming,
            2 => CallType::Missed,
            3 => CallType::AnsweredElsewhere,
            n => CallType::Other(n),
        }
    }
}

/// One call in the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The remote number (or URI).
    pub number: String,
    /// The remote display name, if known.
    pub name: String,
    /// What kind of call it was.
    pub kind: CallType,
    /// When the call started, Unix seconds.
    pub time: i64,
    /// Talk time, seconds.
    pub duration: u64,
    /// Free text (MicroSIP puts e.g. the end reason here).
    pub info: String,
}

/// A field as it may be stored: `;` → `,`, control characters → space, trimmed.
pub(crate) fn sanitize_field(s: &str) -> String {
    let replaced: String = s
        .chars()
        .map(|c| match c {
            ';' => ',',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect();
    replaced.trim().to_owned()
}

/// The `[Calls]` value for `entry` (fields sanitised, see the module docs).
pub(crate) fn format_entry(entry: &HistoryEntry) -> String {
    let value = format!(
        "{};{};{};{};{};{}",
        sanitize_field(&entry.number),
        sanitize_field(&entry.name),
        entry.kind.code(),
        entry.time,
        entry.duration,
        sanitize_field(&entry.info)
    );
    value.trim().to_owned()
}

/// Reads a `[Calls]` value; `None` when it holds nothing (no number, no name).
pub(crate) fn parse_entry(value: &str) -> Option<HistoryEntry> {
    let mut fields = value.splitn(6, ';');
    let mut next = || fields.next().unwrap_or("").trim();
    let number = next().to_owned();
    let name = next().to_owned();
    let kind = CallType::from_code(next().parse().unwrap_or(0));
    let time = next().parse().unwrap_or(0);
    let duration = next().parse().unwrap_or(0);
    let info = next().to_owned();
    if number.is_empty() && name.is_empty() {
        return None;
    }
    Some(HistoryEntry {
        number,
        name,
        kind,
        time,
        duration,
        info,
    })
}

/// `callsLastKey`, if it is a valid ring key.
fn last_key(doc: &IniDocument) -> Option<u32> {
    doc.get(SETTINGS, "callsLastKey")
        .and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|&k| k < RING_SIZE)
}

/// The `[Calls]` entries with their ring keys, in file order.
fn keyed_entries(doc: &IniDocument) -> Vec<(u32, HistoryEntry)> {
    doc.entries(CALLS)
        .into_iter()
        .filter_map(|(k, v)| {
            let key = k.trim().parse::<u32>().ok().filter(|&k| k < RING_SIZE)?;
            Some((key, parse_entry(v)?))
        })
        .collect()
}

/// The history, newest first: by time, and for equal times the key written later
/// first (counting back from `callsLastKey` around the ring).
pub fn read(doc: &IniDocument) -> Vec<HistoryEntry> {
    let last = last_key(doc).unwrap_or(RING_SIZE - 1);
    let mut entries = keyed_entries(doc);
    let age = |key: u32| (last + RING_SIZE - key) % RING_SIZE;
    entries.sort_by(|(ka, a), (kb, b)| b.time.cmp(&a.time).then(age(*ka).cmp(&age(*kb))));
    entries.into_iter().map(|(_, e)| e).collect()
}

/// Adds `entry` at the next ring key (overwriting what was there), sets
/// `callsLastKey` to it and returns it. Without a valid `callsLastKey`, the key after
/// the highest one in use (0 for an empty history) is taken.
pub fn append(doc: &mut IniDocument, entry: &HistoryEntry) -> Result<u32, IniError> {
    let key = match last_key(doc) {
        Some(last) => (last + 1) % RING_SIZE,
        None => {
            keyed_entries(doc)
                .iter()
                .map(|(k, _)| k + 1)
                .max()
                .unwrap_or(0)
                % RING_SIZE
        }
    };
    doc.set(CALLS, &key.to_string(), &format_entry(entry))?;
    doc.set(SETTINGS, "callsLastKey", &key.to_string())?;
    Ok(key)
}

/// `lastCallNumber`, if set.
pub fn last_call_number(doc: &IniDocument) -> Option<String> {
    doc.get(SETTINGS, "lastCallNumber")
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// The dialled numbers, newest first.
pub fn dialed(doc: &IniDocument) -> Vec<String> {
    let mut keyed: Vec<(u32, String)> = doc
        .entries(DIALED)
        .into_iter()
        .filter_map(|(k, v)| {
            let key = k.trim().parse::<u32>().ok()?;
            let v = v.trim();
            (!v.is_empty()).then(|| (key, v.to_owned()))
        })
        .collect();
    keyed.sort_by_key(|(k, _)| *k);
    let mut out: Vec<String> = Vec::new();
    for (_, v) in keyed {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// Puts `number` first in `[Dialed]` (removing an older copy, keeping at most
/// [`MAX_DIALED`]) and sets `lastCallNumber`. The number is cleaned like a history
/// field; an empty one changes nothing.
pub fn remember_dialed(doc: &mut IniDocument, number: &str) -> Result<(), IniError> {
    let number = sanitize_field(number);
    if number.is_empty() {
        return Ok(());
    }
    let mut list = dialed(doc);
    list.retain(|n| *n != number);
    list.insert(0, number.clone());
    list.truncate(MAX_DIALED);
    let old_keys: Vec<String> = doc.keys(DIALED).into_iter().map(str::to_owned).collect();
    for key in old_keys {
        let keep = key
            .trim()
            .parse::<usize>()
            .is_ok_and(|k| k < list.len() && key == k.to_string());
        if !keep {
            doc.remove(DIALED, &key);
        }
    }
    for (i, n) in list.iter().enumerate() {
        doc.set(DIALED, &i.to_string(), n)?;
    }
    doc.set(SETTINGS, "lastCallNumber", &number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitising() {
        assert_eq!(sanitize_field(" a;b\nc\r\td\u{7f} "), "a,b c  d");
    }

    #[test]
    fn parse_lenient() {
        let e = parse_entry("100;;1").unwrap();
        assert_eq!(
            (e.number.as_str(), e.kind, e.time),
            ("100", CallType::Incoming, 0)
        );
        assert!(parse_entry("").is_none());
        assert!(parse_entry(";;;;;").is_none());
        let e = parse_entry("1;n;9;x;-3;a;b").unwrap();
        assert_eq!(e.kind, CallType::Other(9));
        assert_eq!((e.time, e.duration, e.info.as_str()), (0, 0, "a;b"));
    }
}
