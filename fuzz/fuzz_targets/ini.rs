//! Any bytes as a microsip.ini: parsed (UTF-8 or UTF-16), then read into the
//! phone's settings. What the document writes back must parse to the same
//! document, and writing is stable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use microsip_config::{Config, IniDocument};

fuzz_target!(|data: &[u8]| {
    let (doc, _problems) = IniDocument::parse(data);
    let _config = Config::from_document(&doc, "/nonexistent/microsip.ini");
    let written = doc.to_bytes();
    let (again, problems) = IniDocument::parse(&written);
    assert!(
        again == doc,
        "the written document parses differently ({problems:?}): {:?}",
        String::from_utf8_lossy(&written)
    );
    assert_eq!(again.to_bytes(), written, "writing is not stable");
});
