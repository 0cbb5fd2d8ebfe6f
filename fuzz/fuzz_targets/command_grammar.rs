//! Any text as a command: as a line (plain words or DDE execute strings), as the
//! words a command line hands over (split on NUL, as argv), and as words split
//! from the line. Words quoted back into a line must split into the same words.
#![no_main]

use libfuzzer_sys::fuzz_target;
use microsip_engine::grammar::{
    parse_args, parse_args_all, parse_line, parse_line_all, split_words,
};

/// One word as `split_words` reads a quoted word back.
fn quote(word: &str) -> String {
    format!("\"{}\"", word.replace('\\', "\\\\").replace('"', "\\\""))
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = parse_line(&text);
    let _ = parse_line_all(&text);
    let argv: Vec<String> = text.split('\0').map(str::to_string).collect();
    let _ = parse_args(&argv);
    let _ = parse_args_all(&argv);
    if let Ok(words) = split_words(&text) {
        let _ = parse_args(&words);
        let _ = parse_args_all(&words);
        let line = words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ");
        match split_words(&line) {
            Ok(again) => assert_eq!(again, words, "quoted line: {line:?}"),
            Err(e) => panic!("quoted words do not split again ({}): {line:?}", e.message),
        }
    }
});
