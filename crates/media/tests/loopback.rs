//! The media engine's I/O over real loopback sockets: ports, the clock, devices and
//! files, errors. What a call's media does (audio, jitter, RTCP, DTMF, latching,
//! hold) is tested on a fake clock in `tests/session.rs`; here only what needs the
//! real sockets and the real clock.
#![allow(clippy::unwrap_used, unsafe_code)] // test code: a failed unwrap is a failed test

use microsip_test_support::{dominant, TempDir};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use microsip_media::{
    AudioSpec, Codec, Direction, MediaConfig, MediaEngine, MediaError, Negotiated,
};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// The audio bus: what file sinks write.
const BUS_RATE: u32 = microsip_media::audio::SAMPLE_RATE;
/// Samples of one 20 ms frame on the bus.
const FRAME: usize = microsip_media::FRAME_SAMPLES;

fn engine(range: Option<(u16, u16)>) -> MediaEngine {
    MediaEngine::start(MediaConfig {
        bind_ip: LOCALHOST,
        rtp_port_min: range.map(|r| r.0),
        rtp_port_max: range.map(|r| r.1),
        dtmf: Default::default(),
    })
    .unwrap()
}

fn negotiated(codec: Codec, remote_port: u16) -> Negotiated {
    Negotiated {
        codec,
        payload_type: codec
            .static_payload_type()
            .unwrap_or(microsip_media::sdp::OPUS_PT),
        remote: Some(SocketAddr::new(LOCALHOST, remote_port)),
        remote_direction: Direction::SendRecv,
        local_direction: Direction::SendRecv,
        telephone_event: Some(101),
        telephone_event_rate: 8000,
        ptime_ms: 20,
        // No RTCP here (tests/rtcp.rs has it): reports to a raw socket's port + 1
        // could land on another test's socket.
        rtcp: None,
        rtcp_mux: false,
        srtp: None,
        ice: None,
    }
}

fn read_wav(path: &Path) -> Vec<i16> {
    let mut r = hound::WavReader::open(path).unwrap();
    assert_eq!(r.spec().sample_rate, BUS_RATE);
    assert_eq!(r.spec().channels, 1);
    r.samples::<i16>().map(Result::unwrap).collect()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        sleep(Duration::from_millis(10));
    }
}

/// Two engines over real sockets, into a `file:` output (written by its writer
/// thread, finished when `close` returns). Every codec crosses in `tests/session.rs`.
#[test]
fn tone_crosses_two_engines_and_is_recorded() {
    let tmp = TempDir::new("media-loopback");
    for codec in [Codec::Pcma, Codec::Opus] {
        let a = engine(None);
        let b = engine(None);
        let out = tmp.file("heard.wav");
        let port_a = a.open(1, AudioSpec::Tone(440.0), AudioSpec::Null).unwrap();
        let port_b = b
            .open(1, AudioSpec::Null, AudioSpec::File(out.clone()))
            .unwrap();
        assert_eq!(port_a % 2, 0);
        assert_eq!(port_b % 2, 0);
        // Nothing is sent before configure.
        sleep(Duration::from_millis(60));
        assert_eq!(a.stats(1).unwrap().packets_sent, 0);
        a.configure(1, negotiated(codec, port_b)).unwrap();
        b.configure(1, negotiated(codec, port_a)).unwrap();
        sleep(Duration::from_millis(1000));
        let sa = a.stats(1).unwrap();
        let sb = b.stats(1).unwrap();
        assert_eq!(sa.codec, Some(codec));
        assert!((40..=60).contains(&sa.packets_sent), "{sa:?}");
        if codec != Codec::Opus {
            // 160 bytes of G.711 or G.722 per 20 ms (Opus varies).
            assert_eq!(sa.bytes_sent, sa.packets_sent * 172, "{codec}");
        }
        assert!(sb.packets_received >= 40, "{sb:?}");
        assert!(sa.packets_received >= 40, "silence from b: {sa:?}");
        assert!(sb.last_received_ms_ago.unwrap() < 200);
        b.close(1).unwrap();
        a.close(1).unwrap();
        assert_eq!(b.stats(1), None);
        let heard = read_wav(&out);
        assert!(heard.len() >= 40 * FRAME, "{} samples", heard.len());
        assert_eq!(dominant(&heard, BUS_RATE), 440, "{codec}");
        // The tone holds its frequency in every 100 ms after the start.
        for (i, w) in heard.chunks_exact(FRAME * 5).enumerate().skip(1) {
            assert_eq!(dominant(w, BUS_RATE), 440, "{codec}: window {i}");
        }
        // The level kept (a -6 dBFS sine: RMS 11585) after the codec's start-up.
        let tail = &heard[FRAME * 5..];
        let rms =
            (tail.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / tail.len() as f64).sqrt();
        assert!(
            (10_300.0..=13_000.0).contains(&rms),
            "{codec}: RMS {rms:.0}"
        );
    }
}

#[test]
fn file_source_to_file_sink_in_one_engine() {
    let tmp = TempDir::new("media-loopback");
    let input = tmp.file("in.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&input, spec).unwrap();
    for i in 0..3200 {
        // 0.2 s: the source loops several times within the call.
        let v = (std::f64::consts::TAU * 1000.0 * f64::from(i) / 16_000.0).sin() * 10_000.0;
        w.write_sample(v as i16).unwrap();
    }
    w.finalize().unwrap();
    let out = tmp.file("out.wav");
    let e = engine(None);
    let pa = e.open(10, AudioSpec::File(input), AudioSpec::Null).unwrap();
    let pb = e
        .open(11, AudioSpec::Null, AudioSpec::File(out.clone()))
        .unwrap();
    e.configure(10, negotiated(Codec::Pcmu, pb)).unwrap();
    e.configure(11, negotiated(Codec::Pcmu, pa)).unwrap();
    sleep(Duration::from_millis(700));
    e.close(11).unwrap();
    let heard = read_wav(&out);
    assert!(heard.len() >= 25 * FRAME);
    assert_eq!(dominant(&heard, BUS_RATE), 1000);
    e.close(10).unwrap();
}

#[test]
fn tick_does_not_drift() {
    let e = engine(None);
    let peer = UdpSocket::bind((LOCALHOST, 0)).unwrap();
    let peer_port = peer.local_addr().unwrap().port();
    e.open(1, AudioSpec::Null, AudioSpec::Null).unwrap();
    e.configure(1, negotiated(Codec::Pcmu, peer_port)).unwrap();
    sleep(Duration::from_millis(200));
    let (t1, n1) = (Instant::now(), e.stats(1).unwrap().packets_sent);
    sleep(Duration::from_millis(2000));
    let (t2, n2) = (Instant::now(), e.stats(1).unwrap().packets_sent);
    let expected = (t2 - t1).as_secs_f64() / 0.020;
    let sent = (n2 - n1) as f64;
    assert!(
        (sent - expected).abs() <= 2.0,
        "{sent} packets in {:?}",
        t2 - t1
    );
    e.close(1).unwrap();
}

#[test]
fn rtp_port_range_is_honoured() {
    let (min, max) = (47_100, 47_110);
    let e = engine(Some((min, max)));
    let mut ports = Vec::new();
    for id in 0..6 {
        ports.push(e.open(id, AudioSpec::Null, AudioSpec::Null).unwrap());
    }
    assert_eq!(ports, vec![47_100, 47_102, 47_104, 47_106, 47_108, 47_110]);
    let err = e.open(99, AudioSpec::Null, AudioSpec::Null).unwrap_err();
    assert_eq!(err.to_string(), "no free RTP port in 47100-47110");
    // A failed open leaves no session behind.
    assert_eq!(e.stats(99), None);
    e.close(2).unwrap();
    assert_eq!(e.open(7, AudioSpec::Null, AudioSpec::Null).unwrap(), 47_104);
    for id in [0, 1, 3, 4, 5, 7] {
        e.close(id).unwrap();
    }
    // Ports are reused in order, wrapping; a port taken by someone else is skipped.
    let squatter = UdpSocket::bind((LOCALHOST, 47_106)).unwrap();
    assert_eq!(e.open(8, AudioSpec::Null, AudioSpec::Null).unwrap(), 47_108);
    assert_eq!(e.open(9, AudioSpec::Null, AudioSpec::Null).unwrap(), 47_110);
    assert_eq!(
        e.open(10, AudioSpec::Null, AudioSpec::Null).unwrap(),
        47_100
    );
    drop(squatter);

    // Odd bounds: only the even ports inside.
    let odd = engine(Some((47_121, 47_125)));
    assert_eq!(
        odd.open(1, AudioSpec::Null, AudioSpec::Null).unwrap(),
        47_122
    );
    assert_eq!(
        odd.open(2, AudioSpec::Null, AudioSpec::Null).unwrap(),
        47_124
    );
    assert_eq!(
        odd.open(3, AudioSpec::Null, AudioSpec::Null).unwrap_err(),
        MediaError::NoFreePort {
            min: 47_121,
            max: 47_125
        }
    );
    assert!(matches!(
        MediaEngine::start(MediaConfig {
            bind_ip: LOCALHOST,
            rtp_port_min: Some(5001),
            rtp_port_max: Some(5001),
            dtmf: Default::default(),
        }),
        Err(MediaError::BadPortRange { .. })
    ));
}

#[test]
fn errors_reach_the_caller() {
    let tmp = TempDir::new("media-loopback");
    let e = engine(None);
    let missing = tmp.file("nope.wav");
    let err = e
        .open(1, AudioSpec::File(missing), AudioSpec::Null)
        .unwrap_err();
    assert!(matches!(err, MediaError::Audio(_)), "{err}");
    assert!(err.to_string().contains("nope.wav"), "{err}");
    assert_eq!(e.stats(1), None);
    let err = e
        .open(1, AudioSpec::Null, AudioSpec::Tone(440.0))
        .unwrap_err();
    assert!(
        err.to_string().contains("cannot be an audio output"),
        "{err}"
    );
    e.open(1, AudioSpec::Null, AudioSpec::Null).unwrap();
    assert_eq!(
        e.open(1, AudioSpec::Null, AudioSpec::Null).unwrap_err(),
        MediaError::DuplicateSession(1)
    );
    assert_eq!(e.close(2), Err(MediaError::UnknownSession(2)));
    assert_eq!(
        e.configure(2, negotiated(Codec::Pcma, 9)),
        Err(MediaError::UnknownSession(2))
    );
    assert_eq!(e.set_hold(2, true), Err(MediaError::UnknownSession(2)));
    assert_eq!(e.sessions(), vec![1]);
    e.close(1).unwrap();
    assert!(e.sessions().is_empty());
}

#[test]
fn a_failing_socket_keeps_the_call() {
    // Sending to an IPv6 peer from an IPv4 socket fails every time: the session stays.
    let e = engine(None);
    let p = e.open(1, AudioSpec::Tone(440.0), AudioSpec::Null).unwrap();
    let mut n = negotiated(Codec::Pcma, 9);
    n.remote = Some("[::1]:9".parse().unwrap());
    e.configure(1, n).unwrap();
    sleep(Duration::from_millis(100));
    let s = e.stats(1).unwrap();
    assert_eq!(s.local_port, p);
    assert_eq!(s.packets_sent, 0);
    e.set_hold(1, true).unwrap();
    e.close(1).unwrap();
}

#[test]
fn dropping_the_last_handle_finishes_files() {
    let tmp = TempDir::new("media-loopback");
    let out = tmp.file("dropped.wav");
    let a = engine(None);
    let b = engine(None);
    let pa = a.open(1, AudioSpec::Tone(440.0), AudioSpec::Null).unwrap();
    let pb = b
        .open(1, AudioSpec::Null, AudioSpec::File(out.clone()))
        .unwrap();
    a.configure(1, negotiated(Codec::Pcma, pb)).unwrap();
    b.configure(1, negotiated(Codec::Pcma, pa)).unwrap();
    // Played audio trails received packets by the jitter buffer's delay.
    wait_until("audio", || b.stats(1).unwrap().packets_received > 20);
    let clone = b.clone();
    drop(b);
    assert!(clone.stats(1).is_some());
    drop(clone);
    wait_until("the file to be finished", || {
        hound::WavReader::open(&out)
            .map(|r| r.duration() >= 1600)
            .unwrap_or(false)
    });
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct we hand it.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    assert_eq!(rc, 0);
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn rss_kib() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// 50 sessions (25 pairs, file source → file sink both ways, PCMA) on one engine for
/// 5 s; prints the CPU time the process used. Run with
/// `cargo test -p microsip-media --release -- --ignored --nocapture cpu_50_sessions`.
#[test]
#[ignore]
fn cpu_50_sessions() {
    let tmp = TempDir::new("media-loopback");
    let input = tmp.file("cpu-in.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&input, spec).unwrap();
    for i in 0..24_000 {
        let v = (std::f64::consts::TAU * 440.0 * f64::from(i) / 8000.0).sin() * 16_000.0;
        w.write_sample(v as i16).unwrap();
    }
    w.finalize().unwrap();

    let rss0 = rss_kib();
    let e = engine(None);
    let mut outs = Vec::new();
    let mut ports = Vec::new();
    for id in 0..50u64 {
        let out = tmp.file(&format!("cpu-out-{id}.wav"));
        ports.push(
            e.open(
                id,
                AudioSpec::File(input.clone()),
                AudioSpec::File(out.clone()),
            )
            .unwrap(),
        );
        outs.push(out);
    }
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    for pair in 0..25u64 {
        let (a, b) = (2 * pair, 2 * pair + 1);
        e.configure(a, negotiated(Codec::Pcma, ports[b as usize]))
            .unwrap();
        e.configure(b, negotiated(Codec::Pcma, ports[a as usize]))
            .unwrap();
    }
    sleep(Duration::from_secs(5));
    let cpu1 = cpu_seconds();
    let rss1 = rss_kib();
    let wall = t0.elapsed().as_secs_f64();
    let sent: u64 = (0..50).map(|id| e.stats(id).unwrap().packets_sent).sum();
    let received: u64 = (0..50)
        .map(|id| e.stats(id).unwrap().packets_received)
        .sum();
    for id in 0..50 {
        e.close(id).unwrap();
    }
    let cpu = cpu1 - cpu0;
    println!(
        "cpu_50_sessions: {cpu:.3} s CPU in {wall:.2} s wall = {:.2} % of a core in all, \
         {:.4} % per session; {sent} packets sent, {received} received; RSS {rss0} KiB before the engine, {rss1} KiB with 50 sessions \
         ({} KiB per session)",
        100.0 * cpu / wall,
        100.0 * cpu / wall / 50.0,
        (rss1 - rss0) / 50
    );
    assert!(received > 50 * 200, "{received} packets received");
    for out in outs {
        assert!(read_wav(&out).len() > 200 * FRAME);
    }
}
