//! Raw bytes into our SIP reader, as the stack feeds it: as UDP datagrams and as
//! the reads off one TCP connection (framed by Content-Length). Whatever the
//! reader answers must be a SIP response rsipstack reads, and whatever it hands on
//! must be a message rsipstack's parser reads (the reader's promise: it rewrites
//! what it passes into the spelling the stack reads).
#![no_main]

use libfuzzer_sys::fuzz_target;
use microsip_sip::{read_input, Verdict};
use rsipstack::sip::SipMessage;

/// Cuts the input into chunks at each `0xFF` byte (never valid in UTF-8 text),
/// so one input can be several datagrams or a stream read in pieces.
fn chunks(data: &[u8]) -> Vec<&[u8]> {
    data.split(|b| *b == 0xFF).collect()
}

fn check(verdicts: Vec<Verdict>) {
    for verdict in verdicts {
        match verdict {
            Verdict::Pass(bytes) => {
                if let Err(e) = SipMessage::try_from(bytes.as_slice()) {
                    panic!(
                        "we hand on what the stack cannot parse ({e}): {}",
                        String::from_utf8_lossy(&bytes)
                    );
                }
            }
            Verdict::Answer(bytes) => {
                assert!(bytes.starts_with(b"SIP/2.0 "), "answer: {bytes:?}");
                match SipMessage::try_from(bytes.as_slice()) {
                    Ok(SipMessage::Response(_)) => {}
                    other => panic!(
                        "our answer does not read back as a response ({other:?}): {}",
                        String::from_utf8_lossy(&bytes)
                    ),
                }
            }
            Verdict::Drop(_) => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(read_input([data], false));
    check(read_input([data], true));
    let parts = chunks(data);
    if parts.len() > 1 {
        check(read_input(parts.iter().copied(), false));
        check(read_input(parts.iter().copied(), true));
    }
});
