//! Any bytes as one request line on the control socket (plain words, a DDE
//! string, or JSON with "argv"/"command"), through the socket's own parser. A
//! refused JSON request must be answered in JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use microsip_control::socket::parse_request_line;

fuzz_target!(|data: &[u8]| {
    let is_json = std::str::from_utf8(data).is_ok_and(|t| t.trim().starts_with('{'));
    if let Err(reply) = parse_request_line(data) {
        if is_json {
            if let Err(e) = serde_json::from_str::<serde_json::Value>(&reply) {
                panic!("refusal of a JSON request is not JSON ({e}): {reply}");
            }
        }
    }
});
