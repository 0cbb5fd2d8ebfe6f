//! RTCP end to end over loopback: two sessions report to each other through a relay
//! that drops every 20th RTP packet one way, and over rtcp-mux.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use microsip_media::rtcp::{self, RtcpPacket};
use microsip_media::{
    AudioSpec, Codec, Direction, MediaConfig, MediaEngine, MediaEvent, MediaStats, Negotiated,
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

/// Forwards `from` → `to` (received on `inbound`, sent from `outbound`), dropping
/// every `drop_every`-th RTP packet (0: none); counts what passed.
fn pipe(
    inbound: UdpSocket,
    outbound: UdpSocket,
    to: SocketAddr,
    drop_every: u64,
    stop: Arc<AtomicBool>,
    seen: Arc<AtomicU64>,
) -> thread::JoinHandle<()> {
    inbound
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut n = 0u64;
        // Bounded: the test stops it, and it ends by itself after a minute anyway.
        let end = Instant::now() + Duration::from_secs(60);
        while !stop.load(Ordering::Relaxed) && Instant::now() < end {
            let Ok((len, _)) = inbound.recv_from(&mut buf) else {
                continue;
            };
            if !rtcp::is_rtcp(&buf[..len]) {
                n += 1;
                if drop_every > 0 && n.is_multiple_of(drop_every) {
                    continue;
                }
            } else {
                seen.fetch_add(1, Ordering::Relaxed);
            }
            let _ = outbound.send_to(&buf[..len], to);
        }
    })
}

fn bind() -> UdpSocket {
    UdpSocket::bind((LOCALHOST, 0)).unwrap()
}

fn addr(s: &UdpSocket) -> SocketAddr {
    s.local_addr().unwrap()
}

fn percent(fraction: u8) -> f64 {
    f64::from(fraction) * 100.0 / 256.0
}

#[test]
fn reports_cross_a_lossy_relay() {
    let (e, events) = engine();
    let pa = e.open(1, AudioSpec::Tone(440.0), AudioSpec::Null).unwrap();
    let pb = e.open(2, AudioSpec::Tone(880.0), AudioSpec::Null).unwrap();
    assert_eq!(pa % 2, 0);
    let a_rtp = SocketAddr::new(LOCALHOST, pa);
    let a_rtcp = SocketAddr::new(LOCALHOST, pa + 1);
    let b_rtp = SocketAddr::new(LOCALHOST, pb);
    let b_rtcp = SocketAddr::new(LOCALHOST, pb + 1);
    // The relay: one socket per direction and kind, facing each side.
    let (ra_rtp, ra_rtcp, rb_rtp, rb_rtcp) = (bind(), bind(), bind(), bind());
    let stop = Arc::new(AtomicBool::new(false));
    let (to_b_rtcp, to_a_rtcp) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let none = Arc::new(AtomicU64::new(0));
    let pipes = vec![
        // A → B: every 20th RTP packet lost.
        pipe(
            ra_rtp.try_clone().unwrap(),
            rb_rtp.try_clone().unwrap(),
            b_rtp,
            20,
            stop.clone(),
            none.clone(),
        ),
        pipe(
            rb_rtp.try_clone().unwrap(),
            ra_rtp.try_clone().unwrap(),
            a_rtp,
            0,
            stop.clone(),
            none.clone(),
        ),
        pipe(
            ra_rtcp.try_clone().unwrap(),
            rb_rtcp.try_clone().unwrap(),
            b_rtcp,
            0,
            stop.clone(),
            to_b_rtcp.clone(),
        ),
        pipe(
            rb_rtcp.try_clone().unwrap(),
            ra_rtcp.try_clone().unwrap(),
            a_rtcp,
            0,
            stop.clone(),
            to_a_rtcp.clone(),
        ),
    ];
    // A sends to the relay's A-facing sockets, B to its B-facing ones.
    e.configure(1, negotiated(addr(&ra_rtp), addr(&ra_rtcp), false))
        .unwrap();
    e.configure(2, negotiated(addr(&rb_rtp), addr(&rb_rtcp), false))
        .unwrap();

    // A needs a report from B sent after A's first SR (its LSR/DLSR give the RTT),
    // and B must have measured enough packets for the loss to show.
    let stats = |id| e.stats(id).unwrap();
    wait_for(
        "B's reports to tell A its loss and RTT",
        Duration::from_secs(20),
        || {
            let q = stats(1).quality;
            q.rtt_ms.is_some() && q.remote_cumulative_lost.unwrap_or(0) >= 3
        },
    );
    let a: MediaStats = stats(1);
    let b: MediaStats = stats(2);
    stop.store(true, Ordering::Relaxed);
    for p in pipes {
        p.join().unwrap();
    }

    // B lost 1 in 20 of A's packets, by its own count and by its reports to A.
    let permille = b.quality.loss_permille();
    assert!((35..=65).contains(&permille), "B measured {permille}‰ lost");
    assert!(b.quality.expected >= 60, "{:?}", b.quality);
    let reported = a.quality.remote_cumulative_lost.unwrap();
    assert!(reported >= 3, "{:?}", a.quality);
    let fraction = percent(a.quality.remote_fraction_lost.unwrap());
    assert!(
        (2.0..=8.0).contains(&fraction),
        "B reported {fraction:.1} % lost"
    );
    // Nothing was lost the other way.
    assert_eq!(a.quality.lost, 0, "{:?}", a.quality);
    assert_eq!(
        b.quality.remote_cumulative_lost.unwrap_or(0),
        0,
        "{:?}",
        b.quality
    );
    // Loopback: a round trip of a few ms at most (generous for a loaded machine).
    let rtt = a.quality.rtt_ms.unwrap();
    assert!(rtt < 200, "RTT {rtt} ms");
    assert!(a.quality.reports_received >= 1 && a.quality.reports_sent >= 1);
    assert!(to_b_rtcp.load(Ordering::Relaxed) >= 1 && to_a_rtcp.load(Ordering::Relaxed) >= 1);
    // A jitter in ms on both sides, small on loopback: a tone from a 20 ms clock.
    assert!(b.jitter_ms < 40 && a.quality.remote_jitter_ms.unwrap() < 40);

    // Every report received was an event with the numbers.
    let quality_events: Vec<(u64, microsip_media::rtcp::Quality)> = events
        .try_iter()
        .filter_map(|ev| match ev {
            MediaEvent::Quality { call, quality } => Some((call, quality)),
            _ => None,
        })
        .collect();
    let for_a: Vec<_> = quality_events.iter().filter(|(c, _)| *c == 1).collect();
    assert!(!for_a.is_empty(), "{quality_events:?}");
    assert!(for_a.last().unwrap().1.rtt_ms.is_some());
    e.close(1).unwrap();
    e.close(2).unwrap();
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
