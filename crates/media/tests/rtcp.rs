//! RTCP through the engine's real sockets: which port reports leave from (RTP + 1, or
//! the RTP port with rtcp-mux) and reach, the BYE on close. The reports' numbers
//! (loss, jitter, round trip) are tested on a fake clock in `tests/session.rs`.
#![allow(clippy::unwrap_used, unsafe_code)] // test code: a failed unwrap is a failed test

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use microsip_media::rtcp::{self, RtcpPacket};
use microsip_media::{
    AudioSpec, Codec, Direction, MediaConfig, MediaEngine, MediaEvent, Negotiated,
};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn engine() -> (MediaEngine, mpsc::Receiver<MediaEvent>) {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let e = MediaEngine::start_with_events(
        MediaConfig {
            bind_ip: LOCALHOST,
            rtp_port_min: None,
            rtp_port_max: None,
            dtmf: Default::default(),
        },
        Box::new(move |ev| {
            let _ = tx.lock().unwrap().send(ev);
        }),
    )
    .unwrap();
    (e, rx)
}

fn negotiated(rtp: SocketAddr, rtcp: SocketAddr, mux: bool) -> Negotiated {
    Negotiated {
        codec: Codec::Pcmu,
        payload_type: 0,
        remote: Some(rtp),
        remote_direction: Direction::SendRecv,
        local_direction: Direction::SendRecv,
        telephone_event: Some(101),
        telephone_event_rate: 8000,
        ptime_ms: 20,
        rtcp: Some(rtcp),
        rtcp_mux: mux,
        srtp: None,
        ice: None,
    }
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

fn bind() -> UdpSocket {
    UdpSocket::bind((LOCALHOST, 0)).unwrap()
}

fn addr(s: &UdpSocket) -> SocketAddr {
    s.local_addr().unwrap()
}

#[test]
fn rtcp_mux_shares_the_rtp_port_and_bye_ends() {
    let (e, _events) = engine();
    let pa = e.open(1, AudioSpec::Tone(440.0), AudioSpec::Null).unwrap();
    // The peer is a raw socket: it sees our RTP and, muxed, our RTCP on one port.
    let peer = bind();
    let peer_addr = addr(&peer);
    e.configure(1, negotiated(peer_addr, peer_addr, true))
        .unwrap();
    peer.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 2048];
    let mut our_ssrc = None;
    let mut report = None;
    let end = Instant::now() + Duration::from_secs(5);
    while report.is_none() && Instant::now() < end {
        let Ok((len, from)) = peer.recv_from(&mut buf) else {
            continue;
        };
        assert_eq!(from.port(), pa, "RTP and RTCP both from the RTP port");
        if rtcp::is_rtcp(&buf[..len]) {
            report = Some(rtcp::parse(&buf[..len]).unwrap());
        } else {
            our_ssrc = Some(microsip_media::rtp::parse(&buf[..len]).unwrap().header.ssrc);
        }
    }
    let report = report.expect("an RTCP report within 5 s");
    let ssrc = our_ssrc.unwrap();
    // We send, so an SR, with our SSRC and a CNAME; no block (we receive nothing).
    match &report[0] {
        RtcpPacket::SenderReport {
            ssrc: s,
            info,
            blocks,
        } => {
            assert_eq!(*s, ssrc);
            assert!(info.packet_count >= 10);
            assert_eq!(info.octet_count, info.packet_count * 160);
            assert!(blocks.is_empty());
        }
        other => panic!("expected an SR, got {other:?}"),
    }
    assert!(
        matches!(&report[1], RtcpPacket::SourceDescription { chunks } if chunks[0].0 == ssrc && chunks[0].1.is_some())
    );

    // The peer's RR about our stream, muxed onto our RTP port, is read (not played).
    let mut rr = Vec::new();
    rtcp::write_report(
        &mut rr,
        0xabcd,
        None,
        &[rtcp::ReportBlock {
            ssrc,
            fraction_lost: 64,
            cumulative_lost: 7,
            extended_highest_seq: 100,
            jitter: 160,
            lsr: 0,
            dlsr: 0,
        }],
    );
    peer.send_to(&rr, SocketAddr::new(LOCALHOST, pa)).unwrap();
    wait_for("the muxed RR to be read", Duration::from_secs(2), || {
        e.stats(1).unwrap().quality.reports_received == 1
    });
    let s = e.stats(1).unwrap();
    assert_eq!(s.quality.remote_fraction_lost, Some(64));
    assert_eq!(s.quality.remote_cumulative_lost, Some(7));
    assert_eq!(s.quality.remote_jitter_ms, Some(20));
    assert_eq!(s.packets_received, 0, "RTCP is not counted as RTP");

    // Closing sends a BYE.
    e.close(1).unwrap();
    let end = Instant::now() + Duration::from_secs(2);
    let mut bye = false;
    while !bye && Instant::now() < end {
        if let Ok((len, _)) = peer.recv_from(&mut buf) {
            if rtcp::is_rtcp(&buf[..len]) {
                bye = rtcp::parse(&buf[..len])
                    .unwrap()
                    .iter()
                    .any(|p| matches!(p, RtcpPacket::Bye { sources, .. } if sources == &[ssrc]));
            }
        }
    }
    assert!(bye, "a BYE on close");
}

#[test]
fn rtcp_latches_to_where_the_peers_reports_come_from() {
    let (e, _events) = engine();
    let pa = e.open(1, AudioSpec::Tone(440.0), AudioSpec::Null).unwrap();
    let our_rtcp = SocketAddr::new(LOCALHOST, pa + 1);
    // The SDP names `decoy` for RTCP; the peer's reports really come from `peer`.
    let (rtp_sink, decoy, peer, stranger) = (bind(), bind(), bind(), bind());
    e.configure(1, negotiated(addr(&rtp_sink), addr(&decoy), false))
        .unwrap();
    let rr = |sender: u32, fraction_lost: u8| {
        let mut out = Vec::new();
        rtcp::write_report(
            &mut out,
            sender,
            None,
            &[rtcp::ReportBlock {
                ssrc: 0, // not about our stream: only counted
                fraction_lost,
                ..Default::default()
            }],
        );
        out
    };
    peer.send_to(&rr(0x5eed, 0), our_rtcp).unwrap();
    wait_for("the peer's RR", Duration::from_secs(2), || {
        e.stats(1).unwrap().quality.reports_received == 1
    });
    // Latched: a stranger's reports are ignored...
    stranger.send_to(&rr(0xbad, 0), our_rtcp).unwrap();
    thread::sleep(Duration::from_millis(200));
    assert_eq!(e.stats(1).unwrap().quality.reports_received, 1);
    // ...and ours go to the peer, not to the SDP's address.
    peer.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 2048];
    let end = Instant::now() + Duration::from_secs(10);
    let mut got = None;
    while got.is_none() && Instant::now() < end {
        if let Ok((len, from)) = peer.recv_from(&mut buf) {
            assert_eq!(from, our_rtcp, "sent from our RTCP port (RTP + 1)");
            got = Some(rtcp::parse(&buf[..len]).unwrap());
        }
    }
    let got = got.expect("a report at the latched address within 10 s");
    assert!(matches!(got[0], RtcpPacket::SenderReport { .. }), "{got:?}");
    decoy.set_nonblocking(true).unwrap();
    assert!(
        decoy.recv_from(&mut buf).is_err(),
        "nothing for the SDP address once latched"
    );
    // Garbage on the RTCP port changes nothing.
    peer.send_to(&[0x80, 201, 0xff, 0xff, 1, 2], our_rtcp)
        .unwrap();
    thread::sleep(Duration::from_millis(100));
    assert_eq!(e.stats(1).unwrap().quality.reports_received, 1);
    e.close(1).unwrap();
}
