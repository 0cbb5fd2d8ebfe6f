//! Any bytes as media packets: an RTP packet (header, CSRCs, extension, padding),
//! an RTCP compound packet (also through an RTCP session, as received), and an RFC
//! 4733 telephone-event payload (also through the receiver that turns them into
//! digits). The input is also cut into several datagrams at each `0xFF 0xFE`, fed
//! to one session and one receiver in turn. An RTP header read and written back
//! reads the same; an event payload read and written back gives its bytes (less
//! the reserved bit).
#![no_main]

use libfuzzer_sys::fuzz_target;
use microsip_media::dtmf::{encode_event, parse_event, Rfc4733Receiver};
use microsip_media::{rtcp, rtp};

fn datagrams(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(at) = rest.windows(2).position(|w| w == [0xFF, 0xFE]) {
        out.push(&rest[..at]);
        rest = &rest[at + 2..];
    }
    out.push(rest);
    out
}

fuzz_target!(|data: &[u8]| {
    let mut session = rtcp::RtcpSession::new(0x1234_5678, "fuzz@example", 8000, 7);
    session.start(0);
    let mut receiver = Rfc4733Receiver::new();
    for (i, packet) in datagrams(data).into_iter().enumerate() {
        let now = rtcp::Now {
            ms: 20 * i as u64,
            ntp: rtcp::ntp_from_unix(std::time::Duration::from_millis(
                1_700_000_000_000 + 20 * i as u64,
            )),
        };
        if let Ok(parsed) = rtp::parse(packet) {
            let mut buf = vec![0u8; 12 + parsed.payload.len()];
            let n = rtp::write_packet(&parsed.header, parsed.payload, &mut buf)
                .expect("a header we read can be written");
            let again = rtp::parse(&buf[..n]).expect("a packet we wrote reads");
            assert_eq!(again.header, parsed.header);
            assert_eq!(again.payload, parsed.payload);
            let _ = receiver.on_packet(parsed.header.timestamp, parsed.payload);
        }
        let _ = rtcp::is_rtcp(packet);
        let _ = rtcp::parse(packet);
        let _ = session.on_datagram(now, packet);
        let _ = session.quality();
        if let Some(event) = parse_event(packet) {
            let written = encode_event(&event);
            assert_eq!(written[0], packet[0]);
            assert_eq!(written[1], packet[1] & 0xBF);
            assert_eq!(written[2..4], packet[2..4]);
        }
        let ts = packet
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(0);
        let _ = receiver.on_packet(ts, packet.get(4..).unwrap_or(&[]));
    }
});
