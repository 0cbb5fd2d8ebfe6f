//! Any bytes as NOTIFY bodies: application/pidf+xml (presence) and
//! application/simple-message-summary (voicemail).
#![no_main]

use libfuzzer_sys::fuzz_target;
use microsip_sip::event_bodies::{parse_message_summary, parse_pidf};

fuzz_target!(|data: &[u8]| {
    let _ = parse_pidf(data);
    let _ = parse_message_summary(data);
});
