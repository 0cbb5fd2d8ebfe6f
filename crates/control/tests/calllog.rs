//! The CSV call log: RFC 4180 rows read back by a small parser here and by Python's
//! csv module, one header, hostile display names, failing writes.
#![allow(clippy::unwrap_used, unsafe_code)] // test code: a failed unwrap is a failed test

use microsip_test_support::TempDir;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use microsip_control::calllog::{CallLog, CallRecord, COLUMNS, HEADER};

/// RFC 4180, strictly: records end with CRLF, quoted fields may hold anything with
/// `""` for a quote.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    field.push('"');
                } else {
                    quoted = false;
                }
            } else {
                field.push(c);
            }
            continue;
        }
        match c {
            '"' => {
                assert!(field.is_empty() && !was_quoted, "quote inside a field");
                quoted = true;
                was_quoted = true;
            }
            ',' => {
                row.push(std::mem::take(&mut field));
                was_quoted = false;
            }
            '\r' => {
                assert_eq!(chars.next(), Some('\n'), "CR without LF");
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
                was_quoted = false;
            }
            '\n' => panic!("bare LF outside quotes"),
            c => {
                assert!(!was_quoted, "text after a closing quote");
                field.push(c);
            }
        }
    }
    assert!(!quoted, "unterminated quote");
    assert!(
        field.is_empty() && row.is_empty(),
        "last record without CRLF"
    );
    rows
}

fn record(i: u64, name: &str) -> CallRecord {
    let start = UNIX_EPOCH + Duration::from_millis(1_714_566_896_000 + i * 1000);
    CallRecord {
        start,
        direction: ["in", "out"][(i % 2) as usize].into(),
        account: "1001@example.com".into(),
        remote_uri: format!("sip:{i}@example.com;transport=tcp"),
        remote_number: i.to_string(),
        display_name: name.into(),
        answered: (i != 1).then(|| start + Duration::from_millis(2500)),
        end: start + Duration::from_secs(65),
        duration: Duration::from_millis(62_500),
        end_code: (i != 2).then_some(200),
        end_reason: "Normal call clearing, by remote".into(),
        call_id: format!("{i}"),
    }
}

fn expected_row(r: &CallRecord, start: &str, answered: &str, end: &str) -> Vec<String> {
    vec![
        start.into(),
        r.direction.clone(),
        r.account.clone(),
        r.remote_uri.clone(),
        r.remote_number.clone(),
        r.display_name.clone(),
        answered.into(),
        end.into(),
        "62".into(),
        r.end_code.map(|c| c.to_string()).unwrap_or_default(),
        r.end_reason.clone(),
        r.call_id.clone(),
    ]
}

const NAMES: [&str; 4] = [
    "Evil \"Boss\", Inc.\r\nSecond line\nthird",
    "  padded  ",
    "",
    "=HYPERLINK(\"http://x\";\"y\") ünïcödé \u{1F600}",
];

fn write_log(path: &Path) -> Vec<CallRecord> {
    let records: Vec<CallRecord> = NAMES
        .iter()
        .enumerate()
        .map(|(i, n)| record(i as u64, n))
        .collect();
    for r in &records {
        // A new handle each time, as after a restart.
        CallLog::new(path).append(r).unwrap();
    }
    records
}

fn expected(records: &[CallRecord]) -> Vec<Vec<String>> {
    let mut rows = vec![COLUMNS.iter().map(|c| c.to_string()).collect::<Vec<_>>()];
    for (i, r) in records.iter().enumerate() {
        let start = format!("2024-05-01T12:34:{:02}.000Z", 56 + i);
        let answered = [
            "2024-05-01T12:34:58.500Z",
            "",
            "2024-05-01T12:35:00.500Z",
            "2024-05-01T12:35:01.500Z",
        ][i];
        let end = format!("2024-05-01T12:36:{:02}.000Z", 1 + i);
        rows.push(expected_row(r, &start, answered, &end));
    }
    rows
}

#[test]
fn rows_read_back_with_rfc4180() {
    let dir = TempDir::new("calllog-rfc");
    let path = dir.join("calls.csv");
    let records = write_log(&path);
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.starts_with(&format!("{HEADER}\r\n")));
    assert_eq!(text.matches(HEADER).count(), 1, "one header");
    assert_eq!(parse_csv(&text), expected(&records));
}

#[test]
fn rows_read_back_by_python_csv() {
    let probe = Command::new("python3")
        .arg("-c")
        .arg("import csv, json")
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("python3 not available: skipped");
        return;
    }
    let dir = TempDir::new("calllog-python");
    let path = dir.join("calls.csv");
    let records = write_log(&path);
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import csv, json, sys\n\
             with open(sys.argv[1], newline='', encoding='utf-8') as f:\n\
             \x20   print(json.dumps(list(csv.reader(f, strict=True))))",
        )
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Vec<String>> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows, expected(&records));
}

#[test]
fn header_only_for_a_new_or_empty_file() {
    let dir = TempDir::new("calllog-header");
    let path = dir.join("calls.csv");
    fs::write(&path, "").unwrap();
    CallLog::new(&path).append(&record(0, "a")).unwrap();
    CallLog::new(&path).append(&record(1, "b")).unwrap();
    let rows = parse_csv(&fs::read_to_string(&path).unwrap());
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0], COLUMNS);
    // An existing log without our header (e.g. someone else's) is appended to as is.
    let other = dir.join("other.csv");
    fs::write(&other, "x,y\r\n").unwrap();
    CallLog::new(&other).append(&record(0, "a")).unwrap();
    let rows = parse_csv(&fs::read_to_string(&other).unwrap());
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0], ["x", "y"]);
}

#[test]
fn a_torn_last_row_does_not_swallow_the_next() {
    let dir = TempDir::new("calllog-torn");
    let path = dir.join("calls.csv");
    fs::write(
        &path,
        format!("{HEADER}\r\n2024-01-01T00:00:00.000Z,in,acc"),
    )
    .unwrap();
    CallLog::new(&path).append(&record(3, "after")).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    let rows = parse_csv(&text);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1], ["2024-01-01T00:00:00.000Z", "in", "acc"]);
    assert_eq!(rows[2][5], "after");
}

#[test]
fn disk_full_is_an_error_not_a_panic() {
    if Path::new("/dev/full").exists() {
        let err = CallLog::new("/dev/full")
            .append(&record(0, "x"))
            .unwrap_err();
        assert_eq!(err.source.raw_os_error(), Some(libc::ENOSPC), "{err}");
    }
    let dir = TempDir::new("calllog-errors");
    let err = CallLog::new(dir.join("missing/calls.csv"))
        .append(&record(0, "x"))
        .unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    assert!(CallLog::new(&dir).append(&record(0, "x")).is_err());
}

/// Run in a child process (it sets a process-wide file size limit): appends a row
/// that does not fit under the limit.
#[test]
fn child_append_over_file_size_limit() {
    let Some(path) = std::env::var_os("CALLLOG_LIMIT_CHILD") else {
        return;
    };
    let path = PathBuf::from(path);
    let len = fs::metadata(&path).unwrap().len();
    // SAFETY: plain system calls on this (child) process.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let limit = libc::rlimit {
            rlim_cur: len + 40,
            rlim_max: libc::RLIM_INFINITY,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
    let err = CallLog::new(&path)
        .append(&record(9, "too long"))
        .unwrap_err();
    println!("CHILD-ERROR {err}");
}

#[test]
fn a_failed_write_leaves_the_old_rows_whole() {
    let dir = TempDir::new("calllog-limit");
    let path = dir.join("calls.csv");
    write_log(&path);
    let before = fs::read(&path).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_append_over_file_size_limit",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CALLLOG_LIMIT_CHILD", &path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("CHILD-ERROR"), "{stdout}");
    assert_eq!(
        fs::read(&path).unwrap(),
        before,
        "partial row taken back out"
    );
}
