//! The `history` reply: one line per call for people — local date and time,
//! direction, number, name, duration (`2026-12-07 14:03  out  1002  Bob  0:42`),
//! newest first — and the same entries for JSON clients, with the start time both as
//! Unix seconds (`time`, as MicroSIP stores it) and as ISO 8601 (`time_iso`).

use serde_json::Value;

use crate::reply::{ok_with, Reply};
use microsip_sip::time::local_time;

/// The reply for `history [missed] [N]`; `entries` as the records give them (each
/// with `number`, `name`, `type`, `time`, `duration`).
pub(crate) fn history_reply(mut entries: Vec<Value>, missed: bool, limit: Option<usize>) -> Reply {
    // Newest first; a stable sort keeps the records' order for calls in one second.
    entries.sort_by_key(|e| std::cmp::Reverse(e["time"].as_i64().unwrap_or(0)));
    if missed {
        entries.retain(|e| e["type"] == "missed");
    }
    if let Some(n) = limit {
        entries.truncate(n);
    }
    for entry in &mut entries {
        let iso = local_time(entry["time"].as_i64().unwrap_or(0)).iso8601();
        if let Some(map) = entry.as_object_mut() {
            map.insert("time_iso".into(), Value::String(iso));
        }
    }
    let text = if entries.is_empty() {
        if missed {
            "no missed calls"
        } else {
            "no calls yet"
        }
        .to_string()
    } else {
        lines(&entries).join("\n")
    };
    ok_with(text, Value::Array(entries))
}

/// One aligned line per entry; the name column only when some call has a name.
fn lines(entries: &[Value]) -> Vec<String> {
    let text = |e: &Value, key: &str| e[key].as_str().unwrap_or("").to_string();
    let rows: Vec<[String; 5]> = entries
        .iter()
        .map(|e| {
            [
                local_time(e["time"].as_i64().unwrap_or(0)).minutes(),
                text(e, "type"),
                text(e, "number"),
                text(e, "name"),
                duration(e["duration"].as_u64().unwrap_or(0)),
            ]
        })
        .collect();
    let width = |column: usize| {
        rows.iter()
            .map(|r| r[column].chars().count())
            .max()
            .unwrap_or(0)
    };
    let (kind_w, number_w, name_w, duration_w) = (width(1), width(2), width(3), width(4));
    rows.iter()
        .map(|[when, kind, number, name, duration]| {
            let mut line = format!("{when}  {kind:<kind_w$}  {number:<number_w$}  ");
            if name_w > 0 {
                line.push_str(&format!("{name:<name_w$}  "));
            }
            line.push_str(&format!("{duration:>duration_w$}"));
            line
        })
        .collect()
}

/// `0:42`, `12:05`, `1:02:03`.
fn duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A history entry as the records give it.
    fn entry(number: &str, name: &str, kind: &str, time: i64, duration: u64) -> Value {
        serde_json::json!({
            "number": number, "name": name, "type": kind,
            "time": time, "duration": duration, "info": "",
        })
    }

    fn when(secs: i64) -> String {
        local_time(secs).minutes()
    }

    #[test]
    fn durations() {
        assert_eq!(duration(0), "0:00");
        assert_eq!(duration(42), "0:42");
        assert_eq!(duration(725), "12:05");
        assert_eq!(duration(3723), "1:02:03");
    }

    #[test]
    fn lines_are_local_aligned_and_newest_first() {
        let t = 1_796_650_815;
        let entries = vec![
            entry("1002", "Bob", "out", t - 3600, 42),
            entry("7777", "", "missed", t, 0),
            entry("sip:100@pbx", "Alice Example", "in", t - 60, 3723),
        ];
        let r = history_reply(entries, false, None).unwrap();
        let lines: Vec<&str> = r.text.lines().collect();
        assert_eq!(
            lines,
            [
                format!("{}  missed  7777{}0:00", when(t), " ".repeat(27)),
                format!(
                    "{}  in      sip:100@pbx  Alice Example  1:02:03",
                    when(t - 60)
                ),
                format!(
                    "{}  out     1002         Bob               0:42",
                    when(t - 3600)
                ),
            ]
        );
        let data = r.data.as_array().unwrap();
        assert_eq!(data[0]["time"], t);
        assert_eq!(data[0]["time_iso"], local_time(t).iso8601());
        assert_eq!(data[2]["number"], "1002");
    }

    #[test]
    fn the_example_line_and_no_name_column_when_nobody_has_a_name() {
        let t = 1_796_650_815;
        let r = history_reply(vec![entry("1002", "Bob", "out", t, 42)], false, None).unwrap();
        assert_eq!(r.text, format!("{}  out  1002  Bob  0:42", when(t)));
        let r = history_reply(vec![entry("1002", "", "out", t, 42)], false, None).unwrap();
        assert_eq!(r.text, format!("{}  out  1002  0:42", when(t)));
    }

    #[test]
    fn missed_and_a_count() {
        let entries: Vec<Value> = (0..5)
            .map(|i| {
                let kind = if i % 2 == 0 { "missed" } else { "in" };
                entry(&format!("10{i}"), "", kind, 1_000_000 + i, 0)
            })
            .collect();
        let numbers = |r: Reply| -> Vec<String> {
            r.unwrap()
                .data
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["number"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            numbers(history_reply(entries.clone(), false, Some(2))),
            ["104", "103"]
        );
        assert_eq!(
            numbers(history_reply(entries.clone(), true, None)),
            ["104", "102", "100"]
        );
        assert_eq!(
            numbers(history_reply(entries.clone(), true, Some(1))),
            ["104"]
        );
        let none = history_reply(vec![entries[1].clone()], true, None).unwrap();
        assert_eq!(none.text, "no missed calls");
        assert_eq!(none.data, Value::Array(vec![]));
        assert_eq!(
            history_reply(vec![], false, None).unwrap().text,
            "no calls yet"
        );
    }
}
