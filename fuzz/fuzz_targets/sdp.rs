//! Any bytes as a remote SDP: parsed, then answered as an offer and accepted as an
//! answer, with local media options taken from the first byte. An answer we build
//! must parse again and name a codec we have.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use microsip_media::sdp::{Candidate, Credentials, LocalIce};
use microsip_media::srtp::MasterKey;
use microsip_media::{accept_answer, answer, parse_sdp, Codec, Direction, LocalMedia, LocalSrtp};

fn local(flags: u8) -> LocalMedia {
    let mut codecs = vec![Codec::Opus, Codec::G722, Codec::Pcmu, Codec::Pcma];
    codecs.rotate_left(usize::from(flags & 3));
    if flags & 4 != 0 {
        codecs.truncate(1);
    }
    LocalMedia {
        ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
        port: 4000,
        codecs,
        telephone_event: flags & 8 != 0,
        direction: if flags & 16 != 0 {
            Direction::SendOnly
        } else {
            Direction::SendRecv
        },
        session_id: 1,
        version: 1,
        opus_stereo: flags & 32 != 0,
        prefer_own_order: flags & 64 != 0,
        offer_first_only: flags & 128 != 0,
        // SRTP off, optional or mandatory (the fixed key changes nothing here).
        srtp: (flags % 3 != 0).then(|| LocalSrtp {
            mandatory: flags % 3 == 2,
            key: MasterKey::from_bytes([7; 30]),
        }),
        // ICE on for an odd number of set bits (host candidates for RTP and RTCP).
        ice: (flags.count_ones() % 2 == 1).then(|| LocalIce {
            credentials: Credentials::from_random([1, 2, 3, 4]),
            candidates: vec![
                Candidate::host(
                    1,
                    "192.0.2.7:4000".parse().unwrap_or(([0, 0, 0, 0], 0).into()),
                ),
                Candidate::host(
                    2,
                    "192.0.2.7:4001".parse().unwrap_or(([0, 0, 0, 0], 0).into()),
                ),
            ],
            tie_breaker: 7,
        }),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let Ok(remote) = parse_sdp(&text) else {
        return;
    };
    let local = local(flags);
    let _ = accept_answer(&remote, &local);
    if let Ok((ours, negotiated)) = answer(&remote, &local) {
        assert!(
            local.codecs.contains(&negotiated.codec),
            "negotiated {:?}, not ours",
            negotiated.codec
        );
        if let Err(e) = parse_sdp(&ours) {
            panic!("our answer does not parse again ({e}):\n{ours}");
        }
    }
});
