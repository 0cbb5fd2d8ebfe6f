//! Any bytes as a microsip.ini: parsed (UTF-8 or UTF-16), then read into the
//! phone's settings. What the document writes back (always UTF-8) must parse to
//! the same text, sections and entries, and writing must be stable. A value set
//! (as `account N /password:P` stores a password) must read back as set.
#![no_main]

use libfuzzer_sys::fuzz_target;
use microsip_config::{Config, IniDocument};

fn content(doc: &IniDocument) -> Vec<(String, Vec<(String, String)>)> {
    doc.sections()
        .into_iter()
        .map(|s| {
            let entries = doc
                .entries(s)
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            (s.to_string(), entries)
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let (mut doc, _problems) = IniDocument::parse(data);
    let _config = Config::from_document(&doc, "/nonexistent/microsip.ini");
    let written = doc.to_bytes();
    let (again, problems) = IniDocument::parse(&written);
    assert_eq!(
        again.to_string(),
        doc.to_string(),
        "the written document reads differently ({problems:?})"
    );
    assert_eq!(content(&again), content(&doc), "written: {written:?}");
    assert_eq!(again.to_bytes(), written, "writing is not stable");

    // The first line of the input (trimmed) as a password, and as a key's value in
    // the first section the document has.
    let text = String::from_utf8_lossy(data);
    let value = text.lines().next().unwrap_or("").trim();
    let first = doc.sections().first().map(|s| s.to_string());
    let key = first
        .as_deref()
        .and_then(|s| doc.keys(s).first().map(|k| k.to_string()));
    let mut targets = vec![("Account1".to_string(), "password".to_string())];
    if let (Some(s), Some(k)) = (first, key) {
        targets.push((s, k));
    }
    for (section, key) in targets {
        if doc.set(&section, &key, value).is_ok() {
            let (read, _) = IniDocument::parse(&doc.to_bytes());
            assert_eq!(
                read.get(&section, &key),
                Some(value),
                "[{section}] {key} set to {value:?} reads back otherwise from {:?}",
                doc.to_string()
            );
        }
    }
});
