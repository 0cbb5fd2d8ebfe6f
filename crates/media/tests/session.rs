//! Two sans-IO media sessions talk to each other in one process, on a fake clock:
//! audio crossing, loss and reordering through the jitter buffer, RTCP and its
//! numbers, DTMF both ways, symmetric-RTP latching, hold. No socket, no sleep: every
//! datagram goes through [`Net`], which delivers it after a chosen delay (or drops
//! it), and time moves only when [`Net::step`] says so.
#![allow(clippy::unwrap_used, unsafe_code)] // test code: a failed unwrap is a failed test

use microsip_media::audio::SAMPLE_RATE;
use microsip_test_support::dominant;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use microsip_media::audio::{NullSource, ToneSource};
use microsip_media::mixer::Mixer;
use microsip_media::rtcp::{self, RtcpPacket};
use microsip_media::{
    rtp, AudioError, AudioSink, AudioSource, Codec, Direction, DtmfMode, Levels, MediaEvent,
    MediaSession, Negotiated, SessionConfig, TickIo, Transmit, Via, FRAME_SAMPLES,
};

/// What a side plays: every sample, kept for the test to look at.
#[derive(Clone, Default)]
struct Heard(Arc<Mutex<Vec<i16>>>);

impl Heard {
    fn samples(&self) -> Vec<i16> {
        self.0.lock().unwrap().clone()
    }
}

impl AudioSink for Heard {
    fn write(&mut self, frame: &[i16]) -> Result<(), AudioError> {
        self.0.lock().unwrap().extend_from_slice(frame);
        Ok(())
    }
    fn close(&mut self) -> Result<(), AudioError> {
        Ok(())
    }
}

/// One end of the call: the session, its devices, its addresses, what it told.
struct Side {
    session: MediaSession,
    source: Box<dyn AudioSource>,
    heard: Heard,
    rtp: SocketAddr,
    rtcp: SocketAddr,
    events: Vec<MediaEvent>,
    /// RTP packets this side sent, as they left (header only).
    sent: Vec<rtp::RtpHeader>,
}

impl Side {
    fn new(id: u64, port: u16, source: Box<dyn AudioSource>, epoch: Instant) -> Side {
        Side {
            session: MediaSession::new(SessionConfig {
                id,
                local_port: port,
                dtmf: DtmfMode::Auto,
                seed: [0x1234_5678_9abc_def0 ^ id, 0x0fed_cba9_8765_4321 ^ id],
                epoch,
                // 2026-01-01: any wall-clock time will do, it is only in the reports.
                wall_at_epoch: Duration::from_secs(1_767_225_600),
            }),
            source,
            heard: Heard::default(),
            rtp: addr(port),
            rtcp: addr(port + 1),
            events: Vec::new(),
            sent: Vec::new(),
        }
    }

    fn dtmf(&self) -> String {
        self.events
            .iter()
            .filter_map(|e| match e {
                MediaEvent::Dtmf { digit, .. } => Some(*digit),
                _ => None,
            })
            .collect()
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1], port))
}

/// What the network does to one RTP packet (the `n`th one way, from 1): `None`
/// drops it, `Some(ms)` delays it by that much on top of the link's latency.
type Rule = Box<dyn FnMut(u64) -> Option<u64>>;

/// A datagram on its way.
struct InFlight {
    at: Duration,
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
}

/// The network and the clock between two sides.
struct Net {
    a: Side,
    b: Side,
    epoch: Instant,
    /// Fake time since `epoch`.
    now: Duration,
    latency: Duration,
    a_to_b: Rule,
    b_to_a: Rule,
    counted: [u64; 2],
    flight: Vec<InFlight>,
    /// Datagrams to addresses neither side has.
    elsewhere: Vec<(SocketAddr, Vec<u8>)>,
    mixer: Mixer,
    /// The levels both sides run with.
    levels: Levels,
}

fn negotiated(codec: Codec, remote: SocketAddr, rtcp: Option<SocketAddr>) -> Negotiated {
    Negotiated {
        codec,
        payload_type: codec
            .static_payload_type()
            .unwrap_or(microsip_media::sdp::OPUS_PT),
        remote: Some(remote),
        remote_direction: Direction::SendRecv,
        local_direction: Direction::SendRecv,
        telephone_event: Some(101),
        telephone_event_rate: 8000,
        ptime_ms: 20,
        rtcp,
        rtcp_mux: false,
        srtp: None,
        ice: None,
    }
}

impl Net {
    /// A (port 4000) sends `a`, B (port 6000) sends `b`; not configured yet.
    fn new(a: Box<dyn AudioSource>, b: Box<dyn AudioSource>) -> Net {
        let epoch = Instant::now();
        Net {
            a: Side::new(1, 4000, a, epoch),
            b: Side::new(2, 6000, b, epoch),
            epoch,
            now: Duration::ZERO,
            latency: Duration::from_millis(10),
            a_to_b: Box::new(|_| Some(0)),
            b_to_a: Box::new(|_| Some(0)),
            counted: [0; 2],
            flight: Vec::new(),
            elsewhere: Vec::new(),
            mixer: Mixer::new(),
            levels: Levels::default(),
        }
    }

    /// Both sides configured with `codec`, each pointing at the other's addresses.
    fn call(a: Box<dyn AudioSource>, b: Box<dyn AudioSource>, codec: Codec) -> Net {
        let mut net = Net::new(a, b);
        let (a_rtp, a_rtcp, b_rtp, b_rtcp) = (net.a.rtp, net.a.rtcp, net.b.rtp, net.b.rtcp);
        net.a
            .session
            .configure(negotiated(codec, b_rtp, Some(b_rtcp)));
        net.b
            .session
            .configure(negotiated(codec, a_rtp, Some(a_rtcp)));
        net
    }

    fn time(&self) -> Instant {
        self.epoch + self.now
    }

    /// 20 ms pass: what arrived meanwhile is handed over at its arrival time, then
    /// both sides run their frame and what they send goes on the wire.
    fn step(&mut self) {
        self.now += Duration::from_millis(20);
        self.flight.sort_by_key(|d| d.at);
        let due: Vec<InFlight> = {
            let split = self.flight.partition_point(|d| d.at <= self.now);
            self.flight.drain(..split).collect()
        };
        for d in due {
            let at = self.epoch + d.at;
            let side = if d.to == self.a.rtp || d.to == self.a.rtcp {
                &mut self.a
            } else if d.to == self.b.rtp || d.to == self.b.rtcp {
                &mut self.b
            } else {
                self.elsewhere.push((d.to, d.data));
                continue;
            };
            if d.to == side.rtp {
                side.session.handle_rtp(at, d.from, &d.data);
            } else {
                side.session.handle_rtcp(at, d.from, &d.data);
            }
        }
        self.mixer.begin_tick();
        let now = self.time();
        for which in 0..2 {
            let side = if which == 0 { &mut self.a } else { &mut self.b };
            let mut sink = side.heard.clone();
            side.session.tick(
                now,
                &mut TickIo {
                    levels: self.levels,
                    mixer: &mut self.mixer,
                    source: side.source.as_mut(),
                    sink: &mut sink,
                },
            );
            self.collect(which);
        }
    }

    fn steps(&mut self, n: usize) {
        for _ in 0..n {
            self.step();
        }
    }

    /// Puts what side `which` queued on the wire, and keeps its events.
    fn collect(&mut self, which: usize) {
        let now = self.now;
        let latency = self.latency;
        let (side, rule) = if which == 0 {
            (&mut self.a, &mut self.a_to_b)
        } else {
            (&mut self.b, &mut self.b_to_a)
        };
        while let Some(event) = side.session.poll_event() {
            side.events.push(event);
        }
        while let Some(t) = side.session.poll_transmit() {
            let Transmit { via, to, data } = t.clone();
            let from = match via {
                Via::Rtp => side.rtp,
                Via::Rtcp => side.rtcp,
            };
            let mut extra = Some(0);
            if !rtcp::is_rtcp(&data) {
                if let Ok(p) = rtp::parse(&data) {
                    side.sent.push(p.header);
                }
                self.counted[which] += 1;
                extra = rule(self.counted[which]);
            }
            side.session.recycle(t);
            if let Some(ms) = extra {
                self.flight.push(InFlight {
                    at: now + latency + Duration::from_millis(ms),
                    from,
                    to,
                    data,
                });
            }
        }
    }
}

fn rms(x: &[i16]) -> f64 {
    (x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len().max(1) as f64).sqrt()
}

fn tone(hz: f32) -> Box<dyn AudioSource> {
    Box::new(ToneSource::new(hz))
}

#[test]
fn a_tone_crosses_both_ways_in_every_codec() {
    for codec in [Codec::Pcma, Codec::Pcmu, Codec::G722, Codec::Opus] {
        let mut net = Net::new(tone(440.0), tone(1000.0));
        // Nothing is sent before configure.
        net.steps(3);
        assert_eq!(net.a.session.stats(net.time()).packets_sent, 0);
        let (a_rtp, b_rtp) = (net.a.rtp, net.b.rtp);
        net.a.session.configure(negotiated(codec, b_rtp, None));
        net.b.session.configure(negotiated(codec, a_rtp, None));
        net.steps(50);
        let sa = net.a.session.stats(net.time());
        let sb = net.b.session.stats(net.time());
        assert_eq!(sa.codec, Some(codec));
        // One packet a tick, exactly: the clock is ours.
        assert_eq!(sa.packets_sent, 50, "{codec}");
        // Each arrives 10 ms after it left, and is handed over on the next tick.
        assert_eq!(
            sb.packets_received, 49,
            "{codec}: all but the one in flight"
        );
        if codec != Codec::Opus {
            // 160 bytes of G.711 or G.722 per 20 ms (Opus varies).
            assert_eq!(sa.bytes_sent, 50 * 172, "{codec}");
        }
        assert_eq!(
            sb.last_received_ms_ago,
            Some(10),
            "{codec}: the link's latency"
        );
        assert_eq!(sb.packets_lost, 0, "{codec}");
        for (heard, hz) in [(net.b.heard.samples(), 440), (net.a.heard.samples(), 1000)] {
            assert!(
                heard.len() >= 40 * FRAME_SAMPLES,
                "{codec}: {}",
                heard.len()
            );
            // The tone holds its frequency in every 100 ms after the start.
            for (i, w) in heard.chunks_exact(FRAME_SAMPLES * 5).enumerate().skip(1) {
                assert_eq!(dominant(w, SAMPLE_RATE), hz, "{codec}: window {i}");
            }
            // The level kept (a -6 dBFS sine: RMS 11585) after the codec's start-up.
            let level = rms(&heard[FRAME_SAMPLES * 5..]);
            assert!(
                (10_300.0..=13_000.0).contains(&level),
                "{codec}: RMS {level:.0}"
            );
        }
    }
}

#[test]
fn packets_on_the_wire() {
    let mut net = Net::call(tone(440.0), Box::new(NullSource), Codec::Pcma);
    net.steps(10);
    let sent = net.a.sent.clone();
    assert_eq!(sent.len(), 10);
    assert!(sent[0].marker, "the first packet carries the marker");
    for (i, h) in sent.iter().enumerate() {
        assert_eq!(h.payload_type, 8);
        assert_eq!(h.ssrc, net.a.session.ssrc());
        assert_eq!(h.sequence, sent[0].sequence.wrapping_add(i as u16));
        assert_eq!(h.timestamp, sent[0].timestamp.wrapping_add(160 * i as u32));
        assert_eq!(h.marker, i == 0);
    }
    // Hold and resume: a new talk spurt with the marker, the clock having run on.
    net.a.session.set_hold(true);
    net.steps(8);
    assert_eq!(net.a.sent.len(), 10, "nothing sent while held");
    net.a.session.set_hold(false);
    net.step();
    let last = sent[9];
    let again = net.a.sent[10];
    assert!(again.marker);
    assert_eq!(again.sequence, last.sequence.wrapping_add(1));
    assert_eq!(again.timestamp.wrapping_sub(last.timestamp), 160 * 9);

    // What arrives: only the negotiated payload type and telephone-event count;
    // other payload types and garbage are ignored.
    let before = net.a.session.stats(net.time()).packets_received;
    let mut pkt = [0u8; 172];
    pkt[0] = 0x80;
    let (now, from) = (net.time(), net.b.rtp);
    for (pt, count) in [(8u8, 3), (101, 2), (0, 4), (18, 1)] {
        pkt[1] = pt;
        for _ in 0..count {
            net.a.session.handle_rtp(now, from, &pkt);
        }
    }
    net.a.session.handle_rtp(now, from, &[0x80, 8, 0]);
    let s = net.a.session.stats(now);
    assert_eq!(s.packets_received, before + 5);
    assert_eq!(s.remote, Some(from));
}

#[test]
fn loss_and_reordering_are_concealed_by_the_jitter_buffer() {
    let mut net = Net::call(tone(440.0), Box::new(NullSource), Codec::Pcmu);
    // A → B: every 25th packet lost; every 10th held back 30 ms, so the next one
    // overtakes it.
    net.a_to_b = Box::new(|n| match n {
        n if n % 25 == 0 => None,
        n if n % 10 == 0 => Some(30),
        _ => Some(0),
    });
    net.steps(250); // 5 s
    let lost_on_the_wire = 250 / 25;
    let b = net.b.session.stats(net.time());
    // (The last one sent, the 250th, was dropped: none is in flight.)
    assert_eq!(b.packets_received, 250 - lost_on_the_wire);
    // The reordered packets were waited for; only the dropped ones are lost (all
    // but the last, not due to be played yet).
    assert_eq!(b.packets_lost, lost_on_the_wire - 1, "{b:?}");
    // Every frame played, lost ones concealed: the tone never breaks.
    let heard = net.b.heard.samples();
    let frames = heard.len() / FRAME_SAMPLES;
    assert!(frames >= 240, "{frames} frames played in 250 ticks");
    for (i, w) in heard.chunks_exact(FRAME_SAMPLES).enumerate().skip(5) {
        assert!(rms(w) > 5_000.0, "frame {i} is silent: RMS {:.0}", rms(w));
    }
    for (i, w) in heard.chunks_exact(FRAME_SAMPLES * 5).enumerate().skip(1) {
        assert_eq!(dominant(w, SAMPLE_RATE), 440, "window {i}");
    }
}

#[test]
fn rtcp_reports_tell_loss_jitter_and_round_trip() {
    let mut net = Net::call(tone(440.0), tone(880.0), Codec::Pcmu);
    // A → B: every 20th RTP packet lost, the others 0 or 10 ms late in turn (10 ms
    // of jitter). B → A: clean. Both ways 10 ms: a 20 ms round trip.
    net.a_to_b = Box::new(|n| match n {
        n if n % 20 == 0 => None,
        n if n % 2 == 0 => Some(10),
        _ => Some(0),
    });
    let mut ticks = 0;
    while ticks < 1500 {
        net.step();
        ticks += 1;
        let q = net.a.session.stats(net.time()).quality;
        if q.rtt_ms.is_some() && q.remote_cumulative_lost.unwrap_or(0) >= 5 {
            break;
        }
    }
    assert!(ticks < 1500, "no report with the RTT and the loss in 30 s");
    let a = net.a.session.stats(net.time());
    let b = net.b.session.stats(net.time());
    // B lost 1 in 20 of A's packets, by its own count and by its reports to A.
    let permille = b.quality.loss_permille();
    assert!((40..=60).contains(&permille), "B measured {permille}‰ lost");
    assert_eq!(b.packets_lost, b.quality.lost as u64);
    let fraction = f64::from(a.quality.remote_fraction_lost.unwrap()) * 100.0 / 256.0;
    assert!(
        (3.0..=7.0).contains(&fraction),
        "B reported {fraction:.1} % lost"
    );
    // Nothing was lost the other way.
    assert_eq!(a.quality.lost, 0, "{:?}", a.quality);
    assert_eq!(b.quality.remote_cumulative_lost, Some(0), "{:?}", b.quality);
    // The round trip is the links' 20 ms (reports carry milliseconds in 1/65536 s).
    let rtt = a.quality.rtt_ms.unwrap();
    assert!((19..=21).contains(&rtt), "RTT {rtt} ms");
    // Delays alternating 0/10 ms: an interarrival jitter near 10 ms, measured by B
    // and reported to A; none the other way.
    assert!(
        (7..=11).contains(&b.jitter_ms),
        "B's jitter {} ms",
        b.jitter_ms
    );
    let told = a.quality.remote_jitter_ms.unwrap();
    assert!((7..=11).contains(&told), "reported jitter {told} ms");
    assert_eq!(a.jitter_ms, 0);
    assert_eq!(b.quality.remote_jitter_ms, Some(0));
    // Every report received was an event with the numbers.
    let for_a: Vec<_> = net
        .a
        .events
        .iter()
        .filter_map(|e| match e {
            MediaEvent::Quality { call: 1, quality } => Some(*quality),
            _ => None,
        })
        .collect();
    assert_eq!(for_a.len() as u64, a.quality.reports_received);
    assert_eq!(for_a.last().unwrap().rtt_ms, Some(rtt));
    assert!(net.b.session.stats(net.time()).quality.reports_received >= 1);
}

#[test]
fn rtcp_mux_shares_the_rtp_port_and_close_says_bye() {
    let mut net = Net::new(tone(440.0), tone(880.0));
    let (a_rtp, b_rtp) = (net.a.rtp, net.b.rtp);
    let mut na = negotiated(Codec::Pcmu, b_rtp, Some(b_rtp));
    na.rtcp_mux = true;
    let mut nb = negotiated(Codec::Pcmu, a_rtp, Some(a_rtp));
    nb.rtcp_mux = true;
    net.a.session.configure(na);
    net.b.session.configure(nb);
    // Watch what A sends: everything from and to the RTP ports.
    let mut reports = 0;
    for _ in 0..1000 {
        net.step();
        for d in &net.flight {
            assert_ne!(d.to, net.b.rtcp, "nothing for the RTCP port when muxed");
            assert_ne!(d.from, net.a.rtcp);
        }
        reports = net.b.session.stats(net.time()).quality.reports_received;
        if reports >= 2 {
            break;
        }
    }
    assert!(reports >= 2, "B got {reports} muxed reports in 20 s");
    let b = net.b.session.stats(net.time());
    assert_eq!(
        b.packets_received,
        net.a.sent.len() as u64 - 1,
        "RTCP is not counted as RTP (one RTP packet in flight)"
    );
    assert!(b.quality.rtt_ms.is_some() || net.a.session.stats(net.time()).quality.rtt_ms.is_some());

    // Closing A: a last report and a BYE with A's SSRC, to B's RTP port.
    let now = net.time();
    net.a.session.close(now);
    let bye = net.a.session.poll_transmit().expect("a BYE on close");
    assert_eq!((bye.via, bye.to), (Via::Rtp, b_rtp));
    let packets = rtcp::parse(&bye.data).unwrap();
    let ssrc = net.a.session.ssrc();
    assert!(
        packets
            .iter()
            .any(|p| matches!(p, RtcpPacket::Bye { sources, .. } if sources == &[ssrc])),
        "{packets:?}"
    );
    net.b.session.handle_rtp(now, a_rtp, &bye.data);
    assert!(net.b.session.stats(now).quality.bye_received);
}

#[test]
fn dtmf_rfc4733_both_ways() {
    let mut net = Net::call(tone(440.0), tone(440.0), Codec::Pcmu);
    net.steps(5);
    net.a.session.send_dtmf("123#").unwrap();
    net.b.session.send_dtmf("*09D").unwrap();
    net.steps(150);
    assert_eq!(net.b.dtmf(), "123#");
    assert_eq!(net.a.dtmf(), "*09D");
    assert!(net
        .b
        .events
        .iter()
        .all(|e| !matches!(e, MediaEvent::Dtmf { inband: true, .. })));
    // Event packets carry payload type 101.
    assert!(net.a.sent.iter().any(|h| h.payload_type == 101));
    // A digit outside the set is refused and changes nothing.
    assert!(net.a.session.send_dtmf("12x").is_err());
    net.steps(50);
    assert_eq!(net.b.dtmf(), "123#");
}

#[test]
fn dtmf_in_band_without_telephone_event() {
    let mut net = Net::new(Box::new(NullSource), Box::new(NullSource));
    let (a_rtp, b_rtp) = (net.a.rtp, net.b.rtp);
    let mut na = negotiated(Codec::Pcma, b_rtp, None);
    na.telephone_event = None;
    let mut nb = negotiated(Codec::Pcma, a_rtp, None);
    nb.telephone_event = None;
    net.a.session.configure(na);
    net.b.session.configure(nb);
    net.steps(5);
    net.a.session.send_dtmf("5A0").unwrap();
    net.steps(150);
    assert_eq!(net.b.dtmf(), "5A0");
    assert!(net
        .b
        .events
        .iter()
        .all(|e| matches!(e, MediaEvent::Dtmf { inband: true, .. })));
    assert!(net.a.sent.iter().all(|h| h.payload_type == 8));
}

#[test]
fn symmetric_rtp_and_rtcp_latch_to_the_real_source() {
    let mut net = Net::new(tone(440.0), tone(440.0));
    // A believes B is at the decoy (B's SDP said so); B sends from its real ports.
    let decoy = addr(5000);
    let decoy_rtcp = addr(5001);
    let (a_rtp, a_rtcp, b_rtp) = (net.a.rtp, net.a.rtcp, net.b.rtp);
    net.a
        .session
        .configure(negotiated(Codec::Pcmu, decoy, Some(decoy_rtcp)));
    net.b
        .session
        .configure(negotiated(Codec::Pcmu, a_rtp, Some(a_rtcp)));
    net.step();
    assert_eq!(net.a.session.stats(net.time()).remote, Some(decoy));
    assert_eq!(net.elsewhere.len(), 0);
    net.steps(3);
    // A's first packets went to the decoy; once B's arrived, A answers B.
    assert!(net.elsewhere.iter().any(|(to, _)| *to == decoy));
    assert_eq!(net.a.session.stats(net.time()).remote, Some(b_rtp));
    let to_decoy = net.elsewhere.len();
    net.steps(50);
    let rtp_to_decoy = net
        .elsewhere
        .iter()
        .skip(to_decoy)
        .filter(|(to, _)| *to == decoy)
        .count();
    assert_eq!(rtp_to_decoy, 0, "the decoy still gets packets");
    assert!(net.b.session.stats(net.time()).packets_received >= 45);

    // Packets from a third address are ignored once latched.
    let stranger = addr(7000);
    let before = net.a.session.stats(net.time()).packets_received;
    let mut pkt = [0u8; 172];
    pkt[0] = 0x80;
    for _ in 0..20 {
        net.a.session.handle_rtp(net.time(), stranger, &pkt);
    }
    assert_eq!(net.a.session.stats(net.time()).packets_received, before);
    assert_eq!(net.a.session.stats(net.time()).remote, Some(b_rtp));

    // RTCP: A's reports go where B's come from, and a stranger's are ignored.
    while net.a.session.stats(net.time()).quality.reports_received == 0 {
        net.step();
        assert!(net.now < Duration::from_secs(20), "no report from B");
    }
    let before = net.elsewhere.len();
    let received = net.a.session.stats(net.time()).quality.reports_received;
    let mut rr = Vec::new();
    rtcp::write_report(&mut rr, 0xbad, None, &[]);
    net.a.session.handle_rtcp(net.time(), stranger, &rr);
    assert_eq!(
        net.a.session.stats(net.time()).quality.reports_received,
        received
    );
    for _ in 0..500 {
        net.step();
        if net.a.session.stats(net.time()).quality.reports_sent >= 3 {
            break;
        }
    }
    assert!(
        net.elsewhere[before..]
            .iter()
            .all(|(to, _)| *to != decoy_rtcp),
        "reports still go to the SDP's RTCP address"
    );

    // The same SDP address again keeps the latch; a new one resets it (B is quiet
    // meanwhile, so A cannot latch again before we look).
    net.b.session.set_hold(true);
    net.steps(2);
    net.a
        .session
        .configure(negotiated(Codec::Pcmu, decoy, Some(decoy_rtcp)));
    assert_eq!(net.a.session.stats(net.time()).remote, Some(b_rtp));
    let moved = addr(5100);
    net.a
        .session
        .configure(negotiated(Codec::Pcmu, moved, Some(addr(5101))));
    net.steps(5);
    assert_eq!(net.a.session.stats(net.time()).remote, Some(moved));
    net.b.session.set_hold(false);
    net.steps(3);
    assert_eq!(net.a.session.stats(net.time()).remote, Some(b_rtp));
}

#[test]
fn hold_and_directions_decide_what_is_sent_and_played() {
    let mut net = Net::call(tone(440.0), tone(1000.0), Codec::Pcma);
    net.steps(10);
    let now = net.time();
    let (a0, b0) = (
        net.a.session.stats(now).packets_sent,
        net.b.session.stats(now).packets_received,
    );
    let heard_by_a = net.a.heard.samples().len();

    // Our hold on A: it neither sends nor plays; B goes on sending to it.
    net.a.session.set_hold(true);
    net.steps(20);
    let now = net.time();
    assert_eq!(net.a.session.stats(now).packets_sent, a0);
    assert_eq!(
        net.b.session.stats(now).packets_received,
        b0 + 1,
        "the one in flight"
    );
    assert!(net.a.session.stats(now).packets_received >= 25);
    assert_eq!(net.a.heard.samples().len(), heard_by_a, "plays nothing");

    // Resume: A sends again.
    net.a.session.set_hold(false);
    net.steps(5);
    let a1 = net.a.session.stats(net.time()).packets_sent;
    assert_eq!(a1, a0 + 5);

    // Held by the remote (B sendonly, we recvonly): A does not send; inactive
    // neither; to a recvonly peer it does.
    let b_rtp = net.b.rtp;
    for (remote, local, sends) in [
        (Direction::SendOnly, Direction::RecvOnly, false),
        (Direction::Inactive, Direction::Inactive, false),
        (Direction::RecvOnly, Direction::SendOnly, true),
    ] {
        let mut n = negotiated(Codec::Pcma, b_rtp, None);
        n.remote_direction = remote;
        n.local_direction = local;
        net.a.session.configure(n);
        let before = net.a.session.stats(net.time()).packets_sent;
        net.steps(5);
        let after = net.a.session.stats(net.time()).packets_sent;
        assert_eq!(after - before, if sends { 5 } else { 0 }, "{remote:?}");
    }

    // Early media: receive only.
    net.a
        .session
        .configure(negotiated(Codec::Pcma, b_rtp, None));
    net.a.session.set_receive_only(true);
    let s = net.a.session.stats(net.time());
    let heard = net.a.heard.samples().len();
    net.steps(10);
    let t = net.a.session.stats(net.time());
    assert_eq!(t.packets_sent, s.packets_sent);
    assert_eq!(t.packets_received, s.packets_received + 10);
    assert!(net.a.heard.samples().len() > heard, "early media is played");
    net.a.session.set_receive_only(false);
    net.steps(3);
    assert_eq!(
        net.a.session.stats(net.time()).packets_sent,
        t.packets_sent + 3
    );
}

#[test]
fn a_session_held_from_the_start_plays_nothing() {
    let mut net = Net::new(tone(440.0), Box::new(NullSource));
    net.b.session.set_hold(true);
    let (a_rtp, b_rtp) = (net.a.rtp, net.b.rtp);
    net.a
        .session
        .configure(negotiated(Codec::Pcmu, b_rtp, None));
    net.b
        .session
        .configure(negotiated(Codec::Pcmu, a_rtp, None));
    net.steps(30);
    let b = net.b.session.stats(net.time());
    assert!(b.packets_received >= 25);
    assert_eq!(b.packets_sent, 0);
    assert!(net.b.heard.samples().is_empty());
}

#[test]
fn levels_scale_and_mute_what_is_sent_and_heard() {
    let mut net = Net::call(tone(440.0), Box::new(NullSource), Codec::Pcmu);
    net.steps(25);
    let full = rms(&net.b.heard.samples()[FRAME_SAMPLES * 10..]);
    let level_of_next_half_second = |net: &mut Net, levels: Levels| {
        net.levels = levels;
        // Let what was sent at the old level play out first.
        net.steps(10);
        let from = net.b.heard.samples().len();
        net.steps(25);
        rms(&net.b.heard.samples()[from..])
    };
    // Half the microphone: the far end hears half the level (-6 dB).
    let mic_half = Levels {
        microphone: 50,
        ..Levels::default()
    };
    let ratio = level_of_next_half_second(&mut net, mic_half) / full;
    assert!(
        (0.45..=0.55).contains(&ratio),
        "microphone at 50: {ratio:.2}"
    );
    // Speaker at a quarter on both sides: what B plays is a quarter as loud.
    let speaker = Levels {
        speaker: 25,
        ..Levels::default()
    };
    let ratio = level_of_next_half_second(&mut net, speaker) / full;
    assert!((0.2..=0.3).contains(&ratio), "speaker at 25: {ratio:.2}");
    // Muted microphone: silence.
    let muted = Levels {
        microphone_muted: true,
        ..Levels::default()
    };
    let level = level_of_next_half_second(&mut net, muted);
    assert!(level < 50.0, "muted: RMS {level:.0}");
    // And back.
    let ratio = level_of_next_half_second(&mut net, Levels::default()) / full;
    assert!((0.95..=1.05).contains(&ratio), "unmuted: {ratio:.2}");
}

/// ICE on both sides (A offers and controls): each side's host candidate plus, for
/// B, an address nobody answers on; the SDP default address of both points
/// nowhere, so media can only flow where the agents found a path.
#[test]
fn with_ice_media_waits_for_a_valid_pair_then_goes_to_the_selected_one() {
    use microsip_media::{IceParams, LocalIce};
    use microsip_nat::ice::{Candidate, Credentials};
    let mut net = Net::new(tone(440.0), tone(1000.0));
    let (a_rtp, b_rtp) = (net.a.rtp, net.b.rtp);
    let nowhere = SocketAddr::from(([198, 51, 100, 9], 9));
    let creds = |u: &str| Credentials {
        ufrag: u.into(),
        pwd: format!("{u}-pwd-0123456789abcdefgh"),
    };
    let a_ice = LocalIce {
        credentials: creds("aaaa"),
        candidates: vec![Candidate::host(1, a_rtp)],
        tie_breaker: 5,
    };
    let b_ice = LocalIce {
        credentials: creds("bbbb"),
        candidates: vec![
            Candidate::host(1, b_rtp),
            Candidate::server_reflexive(1, SocketAddr::from(([198, 51, 100, 2], 7000)), b_rtp),
        ],
        tie_breaker: 9,
    };
    let with_ice = |local: &LocalIce, remote: &LocalIce, controlling: bool| Negotiated {
        rtcp_mux: true,
        ice: Some(IceParams {
            local: local.clone(),
            remote: remote.credentials.clone(),
            remote_candidates: remote.candidates.clone(),
            controlling,
        }),
        ..negotiated(Codec::Pcma, nowhere, Some(nowhere))
    };
    net.a.session.configure(with_ice(&a_ice, &b_ice, true));
    net.b.session.configure(with_ice(&b_ice, &a_ice, false));
    // The first tick sends checks only: no pair is valid yet.
    net.step();
    assert!(net.a.sent.is_empty() && net.b.sent.is_empty());
    assert_eq!(net.a.session.stats(net.time()).remote, None);
    net.steps(60);
    // Media to the selected pairs, none to the SDP address; the STUN that went
    // elsewhere is A's check to B's unreachable candidate.
    let (sa, sb) = (
        net.a.session.stats(net.time()),
        net.b.session.stats(net.time()),
    );
    assert_eq!(sa.remote, Some(b_rtp));
    assert_eq!(sb.remote, Some(a_rtp));
    assert!(
        sa.packets_sent >= 55 && sb.packets_sent >= 55,
        "{sa:?} {sb:?}"
    );
    assert!(sb.packets_received >= 55 && sa.packets_received >= 55);
    assert!(!net.elsewhere.iter().any(|(to, _)| *to == nowhere));
    assert!(net
        .elsewhere
        .iter()
        .all(|(to, d)| *to == SocketAddr::from(([198, 51, 100, 2], 7000)) && d[0] < 4));
    let (a_state, a_nominated) = net.a.session.ice_state().unwrap();
    let (b_state, b_nominated) = net.b.session.ice_state().unwrap();
    assert_eq!(a_nominated, Some(b_rtp));
    assert_eq!(b_nominated, Some(a_rtp));
    assert_eq!(
        (a_state, b_state),
        (
            microsip_nat::ice::State::Completed,
            microsip_nat::ice::State::Completed
        )
    );
    for (heard, hz) in [(net.b.heard.samples(), 440), (net.a.heard.samples(), 1000)] {
        let tail = &heard[heard.len() - FRAME_SAMPLES * 20..];
        for w in tail.chunks_exact(FRAME_SAMPLES * 5) {
            assert_eq!(dominant(w, SAMPLE_RATE), hz);
        }
    }
    // A STUN datagram never reaches the RTP path, even without ICE: a session
    // without an agent drops it.
    let mut plain = Net::call(tone(440.0), tone(1000.0), Codec::Pcma);
    plain.steps(5);
    let before = plain.b.session.stats(plain.time()).packets_received;
    let now = plain.time();
    let stun = microsip_nat::stun::binding_request(&[1; 12]);
    plain.b.session.handle_rtp(now, plain.a.rtp, &stun);
    assert_eq!(plain.b.session.stats(now).packets_received, before);
}
