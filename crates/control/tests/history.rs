//! MicroSIP's `[Calls]` ring buffer and `[Dialed]` list in the ini.
#![allow(clippy::unwrap_used, unsafe_code)] // test code: a failed unwrap is a failed test

use microsip_test_support::TempDir;
use std::fs;

use microsip_config::{IniDocument, IniFile};
use microsip_control::history::{self, CallType, HistoryEntry};

fn entry(number: &str, kind: CallType, time: i64) -> HistoryEntry {
    HistoryEntry {
        number: number.into(),
        name: format!("Name {number}"),
        kind,
        time,
        duration: 30,
        info: "Normal call clearing".into(),
    }
}

#[test]
fn round_trip_through_the_file() {
    let dir = TempDir::new("history-roundtrip");
    let path = dir.join("microsip.ini");
    fs::write(
        &path,
        "; my settings\n[Settings]\naccountId=1\n\n[Account1]\ndomain=example.com\n",
    )
    .unwrap();
    let mut file = IniFile::load(&path).unwrap();
    let calls = [
        entry("1001", CallType::Outgoing, 1_700_000_000),
        entry("1002", CallType::Incoming, 1_700_000_100),
        entry("1003", CallType::Missed, 1_700_000_200),
        entry("1004", CallType::AnsweredElsewhere, 1_700_000_300),
    ];
    for (i, call) in calls.iter().enumerate() {
        let key = history::append(file.doc_mut(), call).unwrap();
        assert_eq!(key, i as u32);
    }
    file.save().unwrap();

    let file = IniFile::load(&path).unwrap();
    let read = history::read(file.doc());
    let mut expected = calls.to_vec();
    expected.reverse();
    assert_eq!(read, expected);
    assert_eq!(file.doc().get("Settings", "callsLastKey"), Some("3"));
    assert_eq!(
        file.doc().get("Calls", "1"),
        Some("1002;Name 1002;1;1700000100;30;Normal call clearing")
    );
    // What was there before survives.
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("; my settings\n[Settings]\naccountId=1\n"));
    assert_eq!(file.doc().get("Account1", "domain"), Some("example.com"));
}

#[test]
fn ring_wraps_at_1000() {
    let mut doc = IniDocument::new();
    for i in 0..1005 {
        let key = history::append(&mut doc, &entry(&i.to_string(), CallType::Incoming, i)).unwrap();
        assert_eq!(key, (i % 1000) as u32);
    }
    assert_eq!(doc.keys("Calls").len(), 1000);
    assert_eq!(doc.get("Settings", "callsLastKey"), Some("4"));
    assert_eq!(
        doc.get("Calls", "4").map(|v| v.starts_with("1004;")),
        Some(true)
    );
    assert_eq!(
        doc.get("Calls", "5").map(|v| v.starts_with("5;")),
        Some(true)
    );
    let read = history::read(&doc);
    assert_eq!(read.len(), 1000);
    assert_eq!(read[0].number, "1004");
    assert_eq!(read[999].number, "5");
    // Same time for every entry: the ring order decides.
    let mut doc = IniDocument::new();
    for i in 0..1003 {
        history::append(&mut doc, &entry(&i.to_string(), CallType::Outgoing, 7)).unwrap();
    }
    let read = history::read(&doc);
    assert_eq!(read[0].number, "1002");
    assert_eq!(read[1].number, "1001");
    assert_eq!(read[2].number, "1000");
    assert_eq!(read[3].number, "999");
    assert_eq!(read[999].number, "3");
}

#[test]
fn hostile_names_do_not_break_the_format() {
    let dir = TempDir::new("history-hostile");
    let path = dir.join("microsip.ini");
    let mut file = IniFile::load(&path).unwrap();
    file.set("Settings", "accountId", "1").unwrap();
    let evil = HistoryEntry {
        number: " 10;01\n ".into(),
        name: "Evil;Name\n[Settings]\naccountId=9\r\n\t\u{0}".into(),
        kind: CallType::Incoming,
        time: 1,
        duration: 2,
        info: "a;b\u{1b}[2J ".into(),
    };
    history::append(file.doc_mut(), &evil).unwrap();
    file.save().unwrap();

    let file = IniFile::load(&path).unwrap();
    assert!(file.problems().is_empty(), "{:?}", file.problems());
    assert_eq!(file.doc().get("Settings", "accountId"), Some("1"));
    assert_eq!(file.doc().sections(), ["Settings", "Calls"]);
    assert_eq!(file.doc().keys("Calls"), ["0"]);
    let read = history::read(file.doc());
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].number, "10,01");
    assert_eq!(read[0].name, "Evil,Name [Settings] accountId=9");
    assert_eq!(read[0].info, "a,b [2J");
    assert_eq!(
        (read[0].kind, read[0].time, read[0].duration),
        (CallType::Incoming, 1, 2)
    );
}

#[test]
fn microsip_entries_with_missing_fields() {
    let text = "\u{feff}[Settings]\r\ncallsLastKey=2\r\n[Calls]\r\n\
        0=100;Alice;1;1700000000;65;\r\n\
        1=101;;2;1700000100\r\n\
        2=102\r\n\
        3=\r\n\
        x=junk\r\n\
        1500=103;;0;1;1;\r\n\
        4=sip:104@example.com;Bob;7;1600000000;abc;info;with;semicolons\r\n";
    let (mut doc, problems) = IniDocument::parse(text.as_bytes());
    assert!(problems.is_empty());
    let read = history::read(&doc);
    let numbers: Vec<&str> = read.iter().map(|e| e.number.as_str()).collect();
    assert_eq!(numbers, ["101", "100", "sip:104@example.com", "102"]);
    assert_eq!(read[0].kind, CallType::Missed);
    assert_eq!((read[0].name.as_str(), read[0].duration), ("", 0));
    assert_eq!(read[1].name, "Alice");
    assert_eq!(read[1].duration, 65);
    assert_eq!(read[2].kind, CallType::Other(7));
    assert_eq!(read[2].duration, 0);
    assert_eq!(read[2].info, "info;with;semicolons");
    assert_eq!(read[3].kind, CallType::Outgoing);
    assert_eq!(read[3].time, 0);

    // The next entry follows callsLastKey; an unknown type is written back as is.
    assert_eq!(history::append(&mut doc, &read[2]).unwrap(), 3);
    assert_eq!(
        doc.get("Calls", "3"),
        Some("sip:104@example.com;Bob;7;1600000000;0;info,with,semicolons")
    );
    // The file keeps its CRLF line endings.
    assert!(doc
        .to_string()
        .contains("3=sip:104@example.com;Bob;7;1600000000;0;info,with,semicolons\r\n"));
}

#[test]
fn without_calls_last_key_the_next_free_key_is_used() {
    let (mut doc, _) = IniDocument::parse(b"[Calls]\n0=1;;0;5;0;\n7=2;;0;6;0;\n");
    assert_eq!(
        history::append(&mut doc, &entry("3", CallType::Outgoing, 9)).unwrap(),
        8
    );
    let (mut doc, _) =
        IniDocument::parse(b"[Settings]\ncallsLastKey=nonsense\n[Calls]\n999=1;;0;5;0;\n");
    assert_eq!(
        history::append(&mut doc, &entry("3", CallType::Outgoing, 9)).unwrap(),
        0
    );
    let mut doc = IniDocument::new();
    assert_eq!(
        history::append(&mut doc, &entry("3", CallType::Outgoing, 9)).unwrap(),
        0
    );
}

#[test]
fn dialed_numbers_newest_first_once_each() {
    let mut doc = IniDocument::new();
    for n in ["100", "200", "300", "200", " ", "a\nb"] {
        history::remember_dialed(&mut doc, n).unwrap();
    }
    assert_eq!(history::dialed(&doc), ["a b", "200", "300", "100"]);
    assert_eq!(doc.get("Dialed", "0"), Some("a b"));
    assert_eq!(doc.get("Dialed", "3"), Some("100"));
    assert_eq!(history::last_call_number(&doc).as_deref(), Some("a b"));
    for i in 0..30 {
        history::remember_dialed(&mut doc, &format!("9{i:02}")).unwrap();
    }
    let dialed = history::dialed(&doc);
    assert_eq!(dialed.len(), history::MAX_DIALED);
    assert_eq!(dialed[0], "929");
    assert_eq!(dialed[19], "910");
    assert_eq!(doc.keys("Dialed").len(), history::MAX_DIALED);
    // A list written by MicroSIP with gaps and a stray key.
    let (mut doc, _) = IniDocument::parse(b"[Dialed]\n0=1\n2=3\nfoo=bar\n5=1\n");
    assert_eq!(history::dialed(&doc), ["1", "3"]);
    history::remember_dialed(&mut doc, "3").unwrap();
    assert_eq!(doc.entries("Dialed"), [("0", "3"), ("1", "1")]);
}
