//! One interface for every audio codec of a call: [`AudioCodec`], made from a
//! negotiated [`Codec`] by [`make_codec`].
//!
//! This module owns the per-codec facts the media thread needs (PCM rate, samples
//! per 20 ms frame, RTP clock) and the encode/decode/concealment calls; it knows
//! nothing of RTP headers, sockets, jitter or devices. Every implementation works
//! in place on caller-supplied buffers: nothing is allocated per frame.
//!
//! | codec | PCM rate | 20 ms frame | RTP clock | payload per 20 ms | concealment |
//! |---|---|---|---|---|---|
//! | PCMU, PCMA | 8 kHz | 160 | 8000 | 160 B | caller (`plc`) |
//! | G.722 | 16 kHz | 320 | 8000 (RFC 3551) | 160 B | caller (`plc`) |
//! | Opus | 48 kHz (or 8–24 kHz: [`make_codec_at`]) | 960 (320 at 16 kHz) | 48000 | ~80 B (32 kbit/s VBR) | Opus PLC and in-band FEC |

use std::fmt;

use crate::g711;
use crate::g722::{G722Decoder, G722Encoder};
use crate::jitter;
use crate::opus::{self, OpusDecoder, OpusEncoder, OpusError, OpusSettings};
use crate::sdp::Codec;

/// Room for one encoded 20 ms frame of any codec (the largest Opus packet).
pub const MAX_PAYLOAD_BYTES: usize = opus::MAX_PACKET_BYTES;
/// Room for the decoding of any packet a peer may send: 120 ms at 48 kHz (the
/// longest Opus packet; G.711 and G.722 packets of up to 120 ms fit as well).
pub const MAX_DECODED_SAMPLES: usize = opus::MAX_PACKET_SAMPLES;

/// An audio codec as the media thread uses it: mono 16-bit PCM at
/// [`sample_rate`](AudioCodec::sample_rate) in, RTP payloads out, and back.
pub trait AudioCodec: Send {
    /// PCM rate: 8000 for G.711, 16000 for G.722, 48000 for Opus.
    fn sample_rate(&self) -> u32;

    /// Samples per 20 ms frame at [`sample_rate`](AudioCodec::sample_rate).
    fn frame_samples(&self) -> usize;

    /// RTP timestamp clock: 8000 for G.722 (RFC 3551 keeps its 8 kHz clock although
    /// it samples at 16 kHz), otherwise the sample rate.
    fn rtp_clock_rate(&self) -> u32;

    /// RTP timestamp units per 20 ms frame (160 for G.711 and G.722, 960 for Opus).
    fn rtp_frame_ticks(&self) -> u32 {
        self.rtp_clock_rate() / 50
    }

    /// Encodes one frame (`pcm` of [`frame_samples`](AudioCodec::frame_samples))
    /// into `out`; returns the payload length, 0 when nothing could be encoded (`out`
    /// too small: [`MAX_PAYLOAD_BYTES`] always fits; for Opus, a length that is not
    /// an Opus frame duration — G.711 and G.722 take any length, 2 samples per
    /// G.722 byte).
    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> usize;

    /// Decodes one payload into `out`; returns the number of samples (0 for a
    /// payload that cannot be decoded). Payloads may be longer than 20 ms (the
    /// peer's ptime): [`MAX_DECODED_SAMPLES`] always fits, and so does
    /// [`max_decoded_samples`](AudioCodec::max_decoded_samples).
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> usize;

    /// The most samples this codec decodes from one payload of up to
    /// [`jitter::MAX_PAYLOAD`] bytes (what the jitter buffer passes on) or of up to
    /// 120 ms: the size of a decode buffer that never truncates, for this codec
    /// (at most [`MAX_DECODED_SAMPLES`]).
    fn max_decoded_samples(&self) -> usize;

    /// Fills in one lost frame with the codec's own concealment (Opus), returning
    /// the number of samples written; 0 when the codec has none (G.711, G.722): the
    /// caller conceals then (`plc`).
    fn conceal(&mut self, out: &mut [i16]) -> usize;

    /// Rebuilds the lost frame just before `next_payload` from its in-band forward
    /// error correction (Opus): `Some(samples)` written to `out`, after which
    /// `next_payload` is decoded as usual. `None` when the codec has no FEC.
    fn decode_fec(&mut self, next_payload: &[u8], out: &mut [i16]) -> Option<usize>;
}

/// Why a codec could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// libopus refused (out of memory, or a library without the needed features).
    Opus(OpusError),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Opus(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for CodecError {}

impl From<OpusError> for CodecError {
    fn from(e: OpusError) -> CodecError {
        CodecError::Opus(e)
    }
}

/// Makes the encoder/decoder pair for a negotiated codec (one per call), Opus at
/// 48 kHz.
pub fn make_codec(codec: Codec) -> Result<Box<dyn AudioCodec>, CodecError> {
    make_codec_at(codec, opus::SAMPLE_RATE)
}

/// Makes the encoder/decoder pair for a negotiated codec with its PCM side as
/// close to `rate` as the codec allows: Opus runs at `rate` when libopus takes it
/// (8, 12, 16, 24, 48 kHz; else 48 kHz), the others at their own fixed rate. A
/// 16 kHz audio path so needs no resampler for G.722 and Opus.
pub fn make_codec_at(codec: Codec, rate: u32) -> Result<Box<dyn AudioCodec>, CodecError> {
    Ok(match codec {
        Codec::Pcmu => Box::new(G711::ulaw()),
        Codec::Pcma => Box::new(G711::alaw()),
        Codec::G722 => Box::new(G722::new()),
        Codec::Opus => {
            let rate = if opus::RATES.contains(&rate) {
                rate
            } else {
                opus::SAMPLE_RATE
            };
            Box::new(Opus::with_rate(OpusSettings::default(), rate)?)
        }
    })
}

/// G.711 µ-law or A-law ([`g711`]); stateless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct G711 {
    alaw: bool,
}

impl G711 {
    /// PCMU.
    pub const fn ulaw() -> G711 {
        G711 { alaw: false }
    }

    /// PCMA.
    pub const fn alaw() -> G711 {
        G711 { alaw: true }
    }
}

impl AudioCodec for G711 {
    fn sample_rate(&self) -> u32 {
        8000
    }

    fn frame_samples(&self) -> usize {
        160
    }

    fn rtp_clock_rate(&self) -> u32 {
        8000
    }

    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> usize {
        if out.len() < pcm.len() {
            return 0;
        }
        if self.alaw {
            g711::encode_alaw(pcm, out)
        } else {
            g711::encode_ulaw(pcm, out)
        }
    }

    fn max_decoded_samples(&self) -> usize {
        // One sample per byte.
        jitter::MAX_PAYLOAD.min(MAX_DECODED_SAMPLES)
    }

    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> usize {
        if self.alaw {
            g711::decode_alaw(payload, out)
        } else {
            g711::decode_ulaw(payload, out)
        }
    }

    fn conceal(&mut self, _out: &mut [i16]) -> usize {
        0
    }

    fn decode_fec(&mut self, _next_payload: &[u8], _out: &mut [i16]) -> Option<usize> {
        None
    }
}

/// G.722 at 64 kbit/s ([`crate::g722`]): 16 kHz PCM, RTP clock 8000.
#[derive(Debug, Clone, Default)]
pub struct G722 {
    encoder: G722Encoder,
    decoder: G722Decoder,
}

impl G722 {
    /// A fresh encoder and decoder.
    pub const fn new() -> G722 {
        G722 {
            encoder: G722Encoder::new(),
            decoder: G722Decoder::new(),
        }
    }
}

impl AudioCodec for G722 {
    fn sample_rate(&self) -> u32 {
        16_000
    }

    fn frame_samples(&self) -> usize {
        320
    }

    fn rtp_clock_rate(&self) -> u32 {
        8000
    }

    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> usize {
        if out.len() < pcm.len() / 2 {
            return 0;
        }
        self.encoder.encode(pcm, out)
    }

    fn max_decoded_samples(&self) -> usize {
        // Two samples per byte.
        (2 * jitter::MAX_PAYLOAD).min(MAX_DECODED_SAMPLES)
    }

    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> usize {
        self.decoder.decode(payload, out)
    }

    fn conceal(&mut self, _out: &mut [i16]) -> usize {
        0
    }

    fn decode_fec(&mut self, _next_payload: &[u8], _out: &mut [i16]) -> Option<usize> {
        None
    }
}

/// Opus, mono, 20 ms frames ([`crate::opus`]); PCM at 48 kHz or the rate given to
/// [`Opus::with_rate`], RTP clock 48000 either way.
#[derive(Debug)]
pub struct Opus {
    encoder: OpusEncoder,
    decoder: OpusDecoder,
    /// PCM rate of both.
    rate: u32,
    /// Duration of the last packet received: what a loss is assumed to last.
    last_samples: usize,
}

impl Opus {
    /// A 48 kHz encoder with `settings` and a decoder.
    pub fn new(settings: OpusSettings) -> Result<Opus, OpusError> {
        Opus::with_rate(settings, opus::SAMPLE_RATE)
    }

    /// An encoder with `settings` and a decoder, both with PCM at `rate` (one of
    /// [`opus::RATES`]).
    pub fn with_rate(settings: OpusSettings, rate: u32) -> Result<Opus, OpusError> {
        Ok(Opus {
            encoder: OpusEncoder::with_rate(settings, rate)?,
            decoder: OpusDecoder::with_rate(rate)?,
            rate,
            last_samples: rate as usize / 50,
        })
    }

    /// Room for one lost packet in `out`: the last packet's duration.
    fn loss_len(&self, out: &[i16]) -> usize {
        self.last_samples.min(out.len())
    }
}

impl AudioCodec for Opus {
    fn sample_rate(&self) -> u32 {
        self.rate
    }

    fn frame_samples(&self) -> usize {
        self.rate as usize / 50
    }

    fn rtp_clock_rate(&self) -> u32 {
        opus::SAMPLE_RATE
    }

    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> usize {
        self.encoder.encode(pcm, out).unwrap_or(0)
    }

    fn max_decoded_samples(&self) -> usize {
        // The longest Opus packet, 120 ms, at this PCM rate.
        (self.rate as usize * 120 / 1000).min(MAX_DECODED_SAMPLES)
    }

    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> usize {
        match self.decoder.decode(payload, out) {
            Ok(n) => {
                if n > 0 {
                    self.last_samples = n;
                }
                n
            }
            Err(_) => 0,
        }
    }

    fn conceal(&mut self, out: &mut [i16]) -> usize {
        let n = self.loss_len(out);
        self.decoder.conceal(&mut out[..n]).unwrap_or(0)
    }

    fn decode_fec(&mut self, next_payload: &[u8], out: &mut [i16]) -> Option<usize> {
        let n = self.loss_len(out);
        Some(
            self.decoder
                .decode_fec(next_payload, &mut out[..n])
                .unwrap_or(0),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use microsip_test_support::{goertzel, sine};

    fn round_trip(codec: &mut dyn AudioCodec, pcm: &[i16]) -> Vec<i16> {
        let mut out = Vec::new();
        let mut payload = [0u8; MAX_PAYLOAD_BYTES];
        let mut decoded = vec![0i16; MAX_DECODED_SAMPLES];
        for frame in pcm.chunks_exact(codec.frame_samples()) {
            let n = codec.encode(frame, &mut payload);
            assert!(n > 0);
            let m = codec.decode(&payload[..n], &mut decoded);
            assert_eq!(m, codec.frame_samples());
            out.extend_from_slice(&decoded[..m]);
        }
        out
    }

    fn every_codec() -> Vec<(&'static str, Box<dyn AudioCodec>)> {
        vec![
            ("PCMU", make_codec(Codec::Pcmu).unwrap()),
            ("PCMA", make_codec(Codec::Pcma).unwrap()),
            ("G722", Box::new(G722::new())),
            (
                "opus",
                Box::new(Opus::new(OpusSettings::default()).unwrap()),
            ),
        ]
    }

    #[test]
    fn rates_and_frames() {
        let facts: Vec<_> = every_codec()
            .iter()
            .map(|(name, c)| {
                (
                    *name,
                    c.sample_rate(),
                    c.frame_samples(),
                    c.rtp_clock_rate(),
                    c.rtp_frame_ticks(),
                )
            })
            .collect();
        assert_eq!(
            facts,
            vec![
                ("PCMU", 8000, 160, 8000, 160),
                ("PCMA", 8000, 160, 8000, 160),
                ("G722", 16000, 320, 8000, 160),
                ("opus", 48000, 960, 48000, 960),
            ]
        );
    }

    #[test]
    fn the_largest_packets_fit_each_codec_s_own_bound() {
        let big = vec![0x55u8; jitter::MAX_PAYLOAD];
        for (name, mut codec) in every_codec() {
            let most = codec.max_decoded_samples();
            assert!(most <= MAX_DECODED_SAMPLES, "{name}");
            assert!(
                most >= codec.sample_rate() as usize * 120 / 1000,
                "{name}: 120 ms"
            );
            let mut out = vec![0i16; MAX_DECODED_SAMPLES];
            let n = codec.decode(&big, &mut out);
            assert!(n <= most, "{name}: {n} samples from the largest payload");
        }
        let g711 = G711::ulaw();
        assert_eq!(g711.max_decoded_samples(), jitter::MAX_PAYLOAD);
    }

    #[test]
    fn make_codec_covers_every_codec() {
        for codec in Codec::all() {
            let c = make_codec(codec).unwrap();
            assert_eq!(c.rtp_clock_rate(), codec.clock_rate(), "{codec}");
            assert_eq!(c.frame_samples() as u32, c.sample_rate() / 50, "{codec}");
        }
    }

    #[test]
    fn opus_at_16khz_keeps_its_48k_clock_and_carries_a_tone() {
        let mut c = make_codec_at(Codec::Opus, 16_000).unwrap();
        assert_eq!(
            (
                c.sample_rate(),
                c.frame_samples(),
                c.rtp_clock_rate(),
                c.rtp_frame_ticks()
            ),
            (16_000, 320, 48_000, 960)
        );
        let input = sine(1000.0, 8000.0, 16_000, 16_000);
        let output = round_trip(c.as_mut(), &input);
        let tail = &output[1600..];
        let at_1k = goertzel(tail, 1000.0, 16_000);
        assert!(at_1k > 1000.0 * goertzel(tail, 1500.0, 16_000));
        let mut out = vec![0i16; MAX_DECODED_SAMPLES];
        assert_eq!(c.conceal(&mut out), 320);
        // A rate libopus does not take falls back to 48 kHz; the others are fixed.
        assert_eq!(
            make_codec_at(Codec::Opus, 44_100).unwrap().sample_rate(),
            48_000
        );
        assert_eq!(
            make_codec_at(Codec::G722, 48_000).unwrap().sample_rate(),
            16_000
        );
        assert_eq!(
            make_codec_at(Codec::Pcmu, 16_000).unwrap().sample_rate(),
            8000
        );
    }

    #[test]
    fn every_codec_carries_a_1khz_tone() {
        for (name, mut codec) in every_codec() {
            let rate = codec.sample_rate();
            let input = sine(1000.0, 8000.0, rate, rate as usize);
            let output = round_trip(codec.as_mut(), &input);
            // Skip the first 100 ms (codec start-up).
            let tail = &output[rate as usize / 10..];
            let at_1k = goertzel(tail, 1000.0, rate);
            for other in [500.0, 800.0, 1250.0, 2000.0, 3000.0] {
                let p = goertzel(tail, other, rate);
                assert!(
                    at_1k > 1000.0 * p,
                    "{name}: 1 kHz {at_1k:.0} vs {other} Hz {p:.0}"
                );
            }
            // Level kept within 1 dB (Goertzel power of a full sine is A²/4).
            let expected = 8000.0f64.powi(2) / 4.0;
            let db = 10.0 * (at_1k / expected).log10();
            assert!(db.abs() < 1.0, "{name}: level {db:.2} dB");
        }
    }

    #[test]
    fn bad_input_gives_zero_not_a_panic() {
        for (name, mut codec) in every_codec() {
            let mut small = [0u8; 10];
            let frame = vec![0i16; codec.frame_samples()];
            if name != "opus" {
                // (Opus lowers its bit rate to fit instead.)
                assert_eq!(codec.encode(&frame, &mut small), 0, "{name}");
            }
            if name == "opus" {
                // Not an Opus frame length.
                assert_eq!(codec.encode(&frame[1..], &mut [0u8; 2000]), 0);
            }
            let mut out = vec![0i16; MAX_DECODED_SAMPLES];
            // Empty, garbage and oversized payloads.
            let _ = codec.decode(&[], &mut out);
            for len in [1usize, 3, 17, 200, 1500] {
                let garbage: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
                let n = codec.decode(&garbage, &mut out);
                assert!(n <= out.len(), "{name}");
            }
            // A tiny output buffer.
            let mut tiny = [0i16; 3];
            let _ = codec.decode(&[0xFF; 160], &mut tiny);
            let _ = codec.conceal(&mut tiny);
            let _ = codec.decode_fec(&[0xFF; 160], &mut tiny);
            let _ = codec.conceal(&mut []);
        }
    }

    #[test]
    fn concealment_is_opus_only() {
        for (name, mut codec) in every_codec() {
            let mut out = vec![0i16; MAX_DECODED_SAMPLES];
            let concealed = codec.conceal(&mut out);
            let fec = codec.decode_fec(&[0u8; 100], &mut out);
            if name == "opus" {
                assert_eq!(concealed, 960);
                assert!(fec.is_some());
            } else {
                assert_eq!((concealed, fec), (0, None), "{name}");
            }
        }
    }
}
