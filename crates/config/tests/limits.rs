//! What the ini code refuses and how it scales: files over the size limit and files
//! that are not regular files are reported and left as they are; stale temporary
//! files of dead writers are cleaned up; large files parse completely.
#![allow(clippy::unwrap_used, unsafe_code)] // test code: a failed unwrap is a failed test

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use microsip_config::{
    read_file, remove_stale_temps, write_atomic, IniDocument, IniFile, MAX_FILE_SIZE,
};
use microsip_test_support::{mkfifo, TempDir};

#[test]
fn a_file_over_the_limit_is_refused_and_left_as_it_is() {
    let dir = TempDir::new("big");
    let path = dir.path().join("microsip.ini");
    fs::write(&path, "[Settings]\naccountId=0\n").unwrap();
    // Sparse: the size is what counts, no need to write 64 MiB.
    let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(MAX_FILE_SIZE + 1).unwrap();
    drop(f);
    let before = fs::metadata(&path).unwrap();

    let err = IniFile::load(&path).unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with(&path.display().to_string()),
        "{message}"
    );
    assert!(message.contains("more than the limit"), "{message}");
    assert!(message.contains("left as it is"), "{message}");
    assert!(read_file(&path).is_err());

    let after = fs::metadata(&path).unwrap();
    assert_eq!(after.len(), MAX_FILE_SIZE + 1);
    assert_eq!(after.ino(), before.ino());
    assert_eq!(after.mtime_nsec(), before.mtime_nsec());

    // Exactly at the limit is fine.
    let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(MAX_FILE_SIZE).unwrap();
    drop(f);
    assert_eq!(
        read_file(&path).unwrap().map(|b| b.len() as u64),
        Some(MAX_FILE_SIZE)
    );
}

#[test]
fn a_fifo_is_refused_without_blocking_and_never_replaced() {
    let dir = TempDir::new("fifo");
    let path = dir.path().join("microsip.ini");
    mkfifo(&path);
    // Opening a FIFO for reading would wait for a writer: this returns at once.
    let err = IniFile::load(&path).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("FIFO"), "{message}");
    assert!(message.contains("not a regular file"), "{message}");

    let err = write_atomic(&path, b"[Settings]\n").unwrap_err();
    assert!(err.to_string().contains("FIFO"), "{err}");
    let mut file = IniFile::with_document(&path, IniDocument::new());
    file.set("Settings", "accountId", "0").unwrap();
    assert!(file.save().is_err());
    assert!(fs::symlink_metadata(&path).unwrap().file_type().is_fifo());
    // No temporary file left behind either.
    assert_eq!(dir.names(), vec!["microsip.ini"]);
}

#[test]
fn a_device_and_a_folder_are_refused() {
    let err = read_file(Path::new("/dev/null")).unwrap_err();
    assert!(err.to_string().contains("character device"), "{err}");
    let dir = TempDir::new("folder");
    let err = read_file(dir.path()).unwrap_err();
    assert!(err.to_string().contains("a folder"), "{err}");
    assert!(write_atomic(dir.path(), b"x").is_err());
    assert!(dir.path().is_dir());
}

#[test]
fn stale_temporary_files_of_dead_writers_are_removed_and_nothing_else() {
    let dir = TempDir::new("stale");
    let d = dir.path();
    // A pid that cannot be running (above the kernel's maximum).
    let dead = 0x7fff_fff0;
    let alive = std::process::id();
    let names = [
        format!("microsip.ini.tmp-{dead}"),  // ours, dead writer: removed
        format!("Contacts.xml.tmp-{dead}"),  // ours, dead writer: removed
        format!("microsip.ini.tmp-{alive}"), // a live writer's: kept
        format!("other.ini.tmp-{dead}"),     // not one of our names: kept
        "microsip.ini.tmp-abc".to_string(),  // not a pid: kept
        "microsip.ini".to_string(),
    ];
    for n in &names {
        fs::write(d.join(n), "x").unwrap();
    }
    let mut removed = remove_stale_temps(d, &["microsip.ini", "Contacts.xml"]);
    removed.sort();
    assert_eq!(
        removed,
        vec![
            d.join(format!("Contacts.xml.tmp-{dead}")),
            d.join(format!("microsip.ini.tmp-{dead}"))
        ]
    );
    let mut expected: Vec<String> = names[2..].to_vec();
    expected.sort();
    assert_eq!(dir.names(), expected);
}

/// An ini as a long-used phone may have it: settings, accounts, and `n` history
/// entries, with a duplicate key and a repeated section at the end.
fn big_ini(n: usize) -> String {
    let mut text = String::from("[Settings]\naccountId=1\ncallsLastKey=7\n[Account1]\n");
    text.push_str("server=127.0.0.1\ndomain=127.0.0.1\nusername=1001\n[Calls]\n");
    for i in 0..n {
        text.push_str(&format!(
            "{i}=10{i};Name {i};1;{};{};\n",
            1_700_000_000 + i,
            i % 60
        ));
    }
    text.push_str("0=duplicate\n[Settings]\nlate=1\n");
    text
}

#[test]
fn a_large_file_parses_completely_and_in_order() {
    let n = 100_000;
    let text = big_ini(n);
    let (doc, problems) = IniDocument::parse(text.as_bytes());
    // Round trip.
    assert_eq!(doc.to_bytes(), text.as_bytes());
    // Every entry, in file order, the duplicate reported and not used.
    let entries = doc.entries("calls");
    assert_eq!(entries.len(), n);
    for (i, (k, v)) in entries.iter().enumerate() {
        assert_eq!(*k, i.to_string());
        assert!(v.starts_with(&format!("10{i};Name {i};")), "{v}");
    }
    assert_eq!(doc.get("Calls", "99999").map(|v| &v[..7]), Some("1099999"));
    assert_eq!(doc.get("settings", "CALLSLASTKEY"), Some("7"));
    // Keys of the repeated [Settings] count where the first has none.
    assert_eq!(doc.get("Settings", "late"), Some("1"));
    assert_eq!(doc.sections(), vec!["Settings", "Account1", "Calls"]);
    let lines: Vec<usize> = problems.iter().map(|p| p.line).collect();
    assert_eq!(lines, vec![n + 9, n + 10], "{problems:?}");
    assert!(problems[0]
        .message
        .contains("duplicate key; the first one (line 9)"));
    assert!(problems[1].message.contains("first at line 1"));

    // Changes keep the index right: a new key, a removal, a new section.
    let mut doc = doc;
    doc.set("Calls", "100000", "x;y;0;0;0;").unwrap();
    assert!(doc.remove("Calls", "5"));
    doc.set("New", "k", "v").unwrap();
    assert_eq!(doc.entries("Calls").len(), n);
    assert_eq!(doc.get("Calls", "5"), None);
    assert_eq!(doc.get("Calls", "100000"), Some("x;y;0;0;0;"));
    assert_eq!(doc.get("Calls", "6").map(|v| &v[..3]), Some("106"));
    assert_eq!(doc.get("new", "K"), Some("v"));
    assert_eq!(doc.get("Settings", "accountId"), Some("1"));
}

#[test]
fn a_large_file_gives_its_typed_config() {
    let dir = TempDir::new("large");
    let path = dir.path().join("microsip.ini");
    fs::write(&path, big_ini(100_000)).unwrap();
    let file = IniFile::load(&path).unwrap();
    let config = file.config();
    assert_eq!(config.settings.account_id, 1);
    assert_eq!(config.accounts.len(), 2);
    assert_eq!(config.accounts[1].username.as_deref(), Some("1001"));
}
