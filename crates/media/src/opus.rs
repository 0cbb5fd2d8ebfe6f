//! Opus (RFC 6716, RTP payload RFC 7587) through the system's libopus: a mono
//! encoder and decoder pair for 20 ms frames, with the decoder's own loss
//! concealment and in-band forward error correction. The PCM side runs at 48 kHz
//! by default, or at any rate libopus takes (8, 12, 16, 24 kHz: `with_rate`), so a
//! 16 kHz call needs no resampler; the RTP clock is 48000 whatever the PCM rate.
//!
//! This module owns the only `unsafe` code of the media crate: a dozen libopus calls
//! through `audiopus_sys`, each with its lengths checked here. libopus is linked from
//! the system (`libopus0`, found with pkg-config; `libopus-dev` to build), so the
//! binary carries no copy of it; when pkg-config cannot find it, `audiopus_sys`
//! builds its bundled copy with CMake instead.
//!
//! The encoder is set up for calls: `VOIP` application, voice signal, 32 kbit/s
//! variable bit rate, audio up to 12 kHz (super-wideband), complexity 5, in-band FEC
//! on for an expected 5 % loss, DTX off (at a 16 kHz PCM rate, as calls use it,
//! the audio stops at 8 kHz: wideband). The decoder decodes any Opus packet (mono
//! or stereo, any bandwidth, 2.5–120 ms) to mono at its PCM rate.
//!
//! Why complexity 5 and 12 kHz: with libopus 1.3.1 on the project's 2-core machine
//! the encoder costs about 0.3 ms of CPU per 20 ms frame there, against 0.6 ms at
//! complexity 9 (1.5 % against 3 % of a core per call: 50 calls would take most of
//! both cores), and in-band FEC stays effective (a lost frame rebuilt from FEC is
//! ~13 dB closer to the original than concealment). At complexity 5 with full
//! band (20 kHz) libopus 1.3.1 stops adding FEC data at 32 kbit/s; at 12 kHz it
//! keeps it. pjsip (and so MicroSIP) also defaults to complexity 5.

// This module is the binding to libopus (C): its FFI calls are unsafe by nature.
#![allow(unsafe_code)]

use std::ffi::c_int;
use std::fmt;
use std::ptr::NonNull;

use audiopus_sys as ffi;

/// Default PCM rate of this codec, and always its RTP clock.
pub const SAMPLE_RATE: u32 = 48_000;
/// The PCM rates libopus accepts.
pub const RATES: [u32; 5] = [8000, 12_000, 16_000, 24_000, 48_000];
/// Samples in one 20 ms frame at 48 kHz.
pub const FRAME_SAMPLES: usize = 960;
/// The longest Opus packet lasts 120 ms: 5,760 samples at 48 kHz.
pub const MAX_PACKET_SAMPLES: usize = 5760;
/// The largest Opus packet for one frame (RFC 6716 §3.4).
pub(crate) const MAX_PACKET_BYTES: usize = 1275;

/// Encoder settings. [`OpusSettings::default`] is what calls use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusSettings {
    /// Target bit rate in bit/s (variable bit rate around it).
    pub bitrate: i32,
    /// Encoder complexity 0–10 (CPU against quality).
    pub complexity: i32,
    /// Highest audio frequency coded, in Hz: 4000 (narrowband), 6000, 8000
    /// (wideband), 12000 (super-wideband) or 20000 (full band).
    pub max_audio_hz: u32,
    /// In-band forward error correction (LBRR): each packet also carries a coarse
    /// copy of the previous frame.
    pub inband_fec: bool,
    /// Expected packet loss in percent (tunes how much FEC costs).
    pub expected_loss_percent: i32,
    /// Discontinuous transmission (stop sending in silence).
    pub dtx: bool,
}

impl Default for OpusSettings {
    fn default() -> Self {
        OpusSettings {
            bitrate: 32_000,
            complexity: 5,
            max_audio_hz: 12_000,
            inband_fec: true,
            expected_loss_percent: 5,
            dtx: false,
        }
    }
}

/// A libopus error (its negative return code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusError {
    /// What was being done (`encoder_create`, `encode`, ...).
    pub call: &'static str,
    /// libopus's error code (`OPUS_BAD_ARG` = -1, ...).
    pub code: i32,
}

impl fmt::Display for OpusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.code {
            ffi::OPUS_BAD_ARG => "bad argument",
            ffi::OPUS_BUFFER_TOO_SMALL => "buffer too small",
            ffi::OPUS_INTERNAL_ERROR => "internal error",
            ffi::OPUS_INVALID_PACKET => "invalid packet",
            ffi::OPUS_UNIMPLEMENTED => "unimplemented",
            ffi::OPUS_INVALID_STATE => "invalid state",
            ffi::OPUS_ALLOC_FAIL => "allocation failed",
            _ => "unknown error",
        };
        write!(f, "opus {}: {what} ({})", self.call, self.code)
    }
}

impl std::error::Error for OpusError {}

fn check(call: &'static str, code: c_int) -> Result<usize, OpusError> {
    if code < 0 {
        Err(OpusError { call, code })
    } else {
        Ok(code as usize)
    }
}

/// A mono Opus encoder (48 kHz PCM unless made `with_rate`).
#[derive(Debug)]
pub struct OpusEncoder {
    raw: NonNull<ffi::OpusEncoder>,
    rate: u32,
}

/// `rate` if libopus takes it, else an `OPUS_BAD_ARG` error for `call`.
fn check_rate(call: &'static str, rate: u32) -> Result<u32, OpusError> {
    if RATES.contains(&rate) {
        Ok(rate)
    } else {
        Err(OpusError {
            call,
            code: ffi::OPUS_BAD_ARG,
        })
    }
}

// SAFETY: the encoder state is plain memory owned by this value; libopus keeps no
// thread-local or shared state for it, so it may move to another thread. It is not
// `Sync` (every call takes `&mut self`).
unsafe impl Send for OpusEncoder {}

impl OpusEncoder {
    /// Creates a 48 kHz encoder with `settings`.
    pub fn new(settings: OpusSettings) -> Result<OpusEncoder, OpusError> {
        OpusEncoder::with_rate(settings, SAMPLE_RATE)
    }

    /// Creates an encoder taking PCM at `rate` (one of [`RATES`]) with `settings`.
    /// Audio above half the rate is not coded (16 kHz: wideband, up to 8 kHz).
    pub fn with_rate(settings: OpusSettings, rate: u32) -> Result<OpusEncoder, OpusError> {
        let rate = check_rate("encoder_create", rate)?;
        let mut error: c_int = 0;
        // SAFETY: plain constructor; `error` is a valid out-pointer.
        let raw = unsafe {
            ffi::opus_encoder_create(rate as i32, 1, ffi::OPUS_APPLICATION_VOIP, &mut error)
        };
        check("encoder_create", error)?;
        let raw = NonNull::new(raw).ok_or(OpusError {
            call: "encoder_create",
            code: ffi::OPUS_ALLOC_FAIL,
        })?;
        let mut encoder = OpusEncoder { raw, rate };
        encoder.ctl(
            "set bitrate",
            ffi::OPUS_SET_BITRATE_REQUEST,
            settings.bitrate,
        )?;
        encoder.ctl("set vbr", ffi::OPUS_SET_VBR_REQUEST, 1)?;
        encoder.ctl(
            "set complexity",
            ffi::OPUS_SET_COMPLEXITY_REQUEST,
            settings.complexity,
        )?;
        let bandwidth = match settings.max_audio_hz {
            0..=4000 => ffi::OPUS_BANDWIDTH_NARROWBAND,
            4001..=6000 => ffi::OPUS_BANDWIDTH_MEDIUMBAND,
            6001..=8000 => ffi::OPUS_BANDWIDTH_WIDEBAND,
            8001..=12000 => ffi::OPUS_BANDWIDTH_SUPERWIDEBAND,
            _ => ffi::OPUS_BANDWIDTH_FULLBAND,
        };
        encoder.ctl(
            "set max bandwidth",
            ffi::OPUS_SET_MAX_BANDWIDTH_REQUEST,
            bandwidth,
        )?;
        encoder.ctl(
            "set signal",
            ffi::OPUS_SET_SIGNAL_REQUEST,
            ffi::OPUS_SIGNAL_VOICE,
        )?;
        encoder.ctl(
            "set inband fec",
            ffi::OPUS_SET_INBAND_FEC_REQUEST,
            i32::from(settings.inband_fec),
        )?;
        encoder.ctl(
            "set packet loss",
            ffi::OPUS_SET_PACKET_LOSS_PERC_REQUEST,
            settings.expected_loss_percent,
        )?;
        encoder.ctl(
            "set dtx",
            ffi::OPUS_SET_DTX_REQUEST,
            i32::from(settings.dtx),
        )?;
        Ok(encoder)
    }

    /// One `OPUS_SET_*` request with an `opus_int32` argument.
    fn ctl(&mut self, call: &'static str, request: i32, value: i32) -> Result<(), OpusError> {
        // SAFETY: every request used here takes exactly one opus_int32 by value.
        let code = unsafe { ffi::opus_encoder_ctl(self.raw.as_ptr(), request, value) };
        check(call, code).map(|_| ())
    }

    /// The PCM rate.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Encodes one frame of `pcm` (2.5, 5, 10, 20, 40 or 60 ms: at 48 kHz 120 to
    /// 2,880 samples, 960 for 20 ms; at 16 kHz 320 for 20 ms) into `out`; returns
    /// the packet length.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, OpusError> {
        let quantum = (self.rate / 400) as usize; // 2.5 ms
        let whole = pcm.len().is_multiple_of(quantum)
            && [1, 2, 4, 8, 16, 24].contains(&(pcm.len() / quantum));
        if !whole || out.is_empty() {
            return Err(OpusError {
                call: "encode",
                code: ffi::OPUS_BAD_ARG,
            });
        }
        let max = out.len().min(MAX_PACKET_BYTES) as i32;
        // SAFETY: `pcm` holds `pcm.len()` mono samples (the frame size passed) and
        // `out` at least `max` bytes.
        let n = unsafe {
            ffi::opus_encode(
                self.raw.as_ptr(),
                pcm.as_ptr(),
                pcm.len() as c_int,
                out.as_mut_ptr(),
                max,
            )
        };
        check("encode", n)
    }
}

impl Drop for OpusEncoder {
    fn drop(&mut self) {
        // SAFETY: created by opus_encoder_create, destroyed once.
        unsafe { ffi::opus_encoder_destroy(self.raw.as_ptr()) }
    }
}

/// A mono Opus decoder (48 kHz PCM unless made `with_rate`).
#[derive(Debug)]
pub struct OpusDecoder {
    raw: NonNull<ffi::OpusDecoder>,
    rate: u32,
}

// SAFETY: as for `OpusEncoder`.
unsafe impl Send for OpusDecoder {}

impl OpusDecoder {
    /// Creates a 48 kHz decoder.
    pub fn new() -> Result<OpusDecoder, OpusError> {
        OpusDecoder::with_rate(SAMPLE_RATE)
    }

    /// Creates a decoder giving PCM at `rate` (one of [`RATES`]); any packet
    /// decodes, whatever rate it was coded at.
    pub fn with_rate(rate: u32) -> Result<OpusDecoder, OpusError> {
        let rate = check_rate("decoder_create", rate)?;
        let mut error: c_int = 0;
        // SAFETY: plain constructor; `error` is a valid out-pointer.
        let raw = unsafe { ffi::opus_decoder_create(rate as i32, 1, &mut error) };
        check("decoder_create", error)?;
        let raw = NonNull::new(raw).ok_or(OpusError {
            call: "decoder_create",
            code: ffi::OPUS_ALLOC_FAIL,
        })?;
        Ok(OpusDecoder { raw, rate })
    }

    /// The raw decode call: `packet` `None` is a lost packet (concealment), `fec`
    /// asks for the FEC data of `packet` (the frame before it). Decodes at most
    /// `out.len()` samples (rounded down to a multiple of 2.5 ms).
    fn decode_raw(
        &mut self,
        packet: Option<&[u8]>,
        out: &mut [i16],
        fec: bool,
    ) -> Result<usize, OpusError> {
        // Concealment and FEC must be asked for a multiple of 2.5 ms.
        let quantum = (self.rate / 400) as usize;
        let most = MAX_PACKET_SAMPLES / (SAMPLE_RATE / self.rate) as usize;
        let frame = out.len().min(most) / quantum * quantum;
        if frame == 0 {
            return Err(OpusError {
                call: "decode",
                code: ffi::OPUS_BUFFER_TOO_SMALL,
            });
        }
        let (data, len) = match packet {
            Some(p) if !p.is_empty() => (p.as_ptr(), p.len().min(i32::MAX as usize) as i32),
            _ => (std::ptr::null(), 0),
        };
        // SAFETY: `data` is null (loss) or points to `len` readable bytes; `out` has
        // room for `frame` mono samples.
        let n = unsafe {
            ffi::opus_decode(
                self.raw.as_ptr(),
                data,
                len,
                out.as_mut_ptr(),
                frame as c_int,
                c_int::from(fec),
            )
        };
        check("decode", n)
    }

    /// The PCM rate.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Decodes one packet into `out`; returns the number of samples. `out` should
    /// hold [`MAX_PACKET_SAMPLES`] to take any packet a peer may send.
    pub fn decode(&mut self, packet: &[u8], out: &mut [i16]) -> Result<usize, OpusError> {
        if packet.is_empty() {
            return Err(OpusError {
                call: "decode",
                code: ffi::OPUS_INVALID_PACKET,
            });
        }
        self.decode_raw(Some(packet), out, false)
    }

    /// Conceals one lost packet: fills `out` (its length, rounded down to 2.5 ms,
    /// at most 120 ms) by extrapolating from what was decoded before.
    pub fn conceal(&mut self, out: &mut [i16]) -> Result<usize, OpusError> {
        self.decode_raw(None, out, false)
    }

    /// Recovers the lost packet just before `next` from `next`'s in-band FEC data,
    /// filling `out` (the lost duration). Without FEC data in `next` libopus
    /// conceals instead. `next` must then be decoded as usual.
    pub fn decode_fec(&mut self, next: &[u8], out: &mut [i16]) -> Result<usize, OpusError> {
        self.decode_raw(Some(next), out, true)
    }

    /// The duration of the last packet decoded (or concealed), in samples.
    pub fn last_packet_samples(&mut self) -> Option<usize> {
        let mut value: i32 = 0;
        // SAFETY: this request takes one opus_int32 out-pointer.
        let code = unsafe {
            ffi::opus_decoder_ctl(
                self.raw.as_ptr(),
                ffi::OPUS_GET_LAST_PACKET_DURATION_REQUEST,
                &mut value as *mut i32,
            )
        };
        (code == ffi::OPUS_OK && value > 0).then_some(value as usize)
    }
}

impl Drop for OpusDecoder {
    fn drop(&mut self) {
        // SAFETY: created by opus_decoder_create, destroyed once.
        unsafe { ffi::opus_decoder_destroy(self.raw.as_ptr()) }
    }
}

/// The number of samples (at 48 kHz) a packet decodes to, from its TOC byte;
/// `None` for a malformed packet.
pub fn packet_samples(packet: &[u8]) -> Option<usize> {
    if packet.is_empty() {
        return None;
    }
    // SAFETY: `packet` holds `packet.len()` readable bytes.
    let n = unsafe {
        ffi::opus_packet_get_nb_samples(
            packet.as_ptr(),
            packet.len().min(i32::MAX as usize) as i32,
            SAMPLE_RATE as i32,
        )
    };
    check("packet_get_nb_samples", n).ok()
}

/// The libopus version string (`libopus 1.3.1`).
pub fn version() -> String {
    // SAFETY: returns a pointer to a static NUL-terminated string.
    let ptr = unsafe { ffi::opus_get_version_string() };
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: non-null, static, NUL-terminated.
    unsafe { std::ffi::CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A voiced, speech-like signal at 48 kHz: harmonics of a gliding pitch under
    /// a syllable-rate envelope (so a lost frame is not just more of the same).
    fn speechlike(len: usize) -> Vec<i16> {
        let rate = f64::from(SAMPLE_RATE);
        let mut phase = 0.0f64;
        (0..len)
            .map(|i| {
                let t = i as f64 / rate;
                let f0 = 130.0 + 50.0 * (std::f64::consts::TAU * 1.3 * t).sin();
                phase += std::f64::consts::TAU * f0 / rate;
                let mut v = 0.0;
                for h in 1..=25 {
                    let f = f0 * f64::from(h);
                    let w = 1.0 / (1.0 + ((f - 600.0) / 250.0).powi(2))
                        + 0.6 / (1.0 + ((f - 1800.0) / 350.0).powi(2))
                        + 0.03;
                    v += w * (phase * f64::from(h)).sin();
                }
                let envelope = 0.5 + 0.5 * (std::f64::consts::TAU * 4.0 * t).sin().abs();
                (v * envelope * 5000.0).clamp(-32768.0, 32767.0) as i16
            })
            .collect()
    }

    fn encode_all(pcm: &[i16]) -> Vec<Vec<u8>> {
        let mut enc = OpusEncoder::new(OpusSettings::default()).unwrap();
        let mut buf = [0u8; MAX_PACKET_BYTES];
        pcm.chunks_exact(FRAME_SAMPLES)
            .map(|f| {
                let n = enc.encode(f, &mut buf).unwrap();
                buf[..n].to_vec()
            })
            .collect()
    }

    /// Decodes `packets`, handling the frames in `lost` with FEC (from the next
    /// packet) or with concealment.
    fn decode_with_loss(packets: &[Vec<u8>], lost: &[usize], fec: bool) -> Vec<i16> {
        let mut dec = OpusDecoder::new().unwrap();
        let mut out = Vec::new();
        let mut frame = vec![0i16; MAX_PACKET_SAMPLES];
        for (i, p) in packets.iter().enumerate() {
            let n = if lost.contains(&i) {
                if fec {
                    dec.decode_fec(&packets[i + 1], &mut frame[..FRAME_SAMPLES])
                        .unwrap()
                } else {
                    dec.conceal(&mut frame[..FRAME_SAMPLES]).unwrap()
                }
            } else {
                dec.decode(p, &mut frame).unwrap()
            };
            assert_eq!(n, FRAME_SAMPLES, "frame {i}");
            out.extend_from_slice(&frame[..n]);
        }
        out
    }

    fn snr_db(reference: &[i16], x: &[i16]) -> f64 {
        let (mut s, mut e) = (0.0, 0.0);
        for (&r, &v) in reference.iter().zip(x) {
            s += f64::from(r).powi(2);
            e += (f64::from(v) - f64::from(r)).powi(2);
        }
        10.0 * (s / e.max(1e-9)).log10()
    }

    #[test]
    fn version_is_reported() {
        assert!(version().starts_with("libopus"), "{}", version());
    }

    #[test]
    fn packets_are_20ms_and_about_32_kbit() {
        let pcm = speechlike(SAMPLE_RATE as usize * 2);
        let packets = encode_all(&pcm);
        assert_eq!(packets.len(), 100);
        let bytes: usize = packets.iter().map(Vec::len).sum();
        let kbit = bytes as f64 * 8.0 / 2.0 / 1000.0;
        assert!((20.0..=40.0).contains(&kbit), "{kbit:.1} kbit/s");
        for p in &packets {
            assert_eq!(packet_samples(p), Some(FRAME_SAMPLES));
        }
        assert_eq!(packet_samples(&[]), None);
        let mut dec = OpusDecoder::new().unwrap();
        let mut out = [0i16; MAX_PACKET_SAMPLES];
        assert_eq!(dec.decode(&packets[0], &mut out), Ok(FRAME_SAMPLES));
        assert_eq!(dec.last_packet_samples(), Some(FRAME_SAMPLES));
        // Errors are errors, not panics.
        assert!(dec.decode(&[], &mut out).is_err());
        assert!(dec.decode(&packets[0], &mut out[..100]).is_err());
        assert!(dec.conceal(&mut out[..100]).is_err());
        let mut enc = OpusEncoder::new(OpusSettings::default()).unwrap();
        assert!(enc.encode(&[0; 100], &mut [0u8; 100]).is_err());
        assert!(enc.encode(&[0; 960], &mut []).is_err());
    }

    #[test]
    fn fec_recovers_a_lost_frame_better_than_concealment() {
        let pcm = speechlike(SAMPLE_RATE as usize * 3);
        let packets = encode_all(&pcm);
        let reference = decode_with_loss(&packets, &[], false);
        let lost = [23usize, 41, 58, 77, 96, 120];
        let plc = decode_with_loss(&packets, &lost, false);
        let fec = decode_with_loss(&packets, &lost, true);
        let mut plc_total = 0.0;
        let mut fec_total = 0.0;
        for &k in &lost {
            // The lost frame and the one after it (where the decoder catches up).
            let range = k * FRAME_SAMPLES..(k + 2) * FRAME_SAMPLES;
            let p = snr_db(&reference[range.clone()], &plc[range.clone()]);
            let f = snr_db(&reference[range.clone()], &fec[range]);
            plc_total += p;
            fec_total += f;
        }
        let (plc_mean, fec_mean) = (plc_total / lost.len() as f64, fec_total / lost.len() as f64);
        assert!(
            fec_mean > plc_mean + 3.0,
            "FEC {fec_mean:.1} dB vs concealment {plc_mean:.1} dB"
        );
        assert!(fec_mean > 5.0, "FEC {fec_mean:.1} dB");
        // Both keep the level: no silence, no blast, in the lost frame.
        for out in [&plc, &fec] {
            for &k in &lost {
                let range = k * FRAME_SAMPLES..(k + 1) * FRAME_SAMPLES;
                let rms = |x: &[i16]| {
                    (x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
                };
                let ratio = rms(&out[range.clone()]) / rms(&reference[range]);
                assert!(
                    (0.3..=2.0).contains(&ratio),
                    "frame {k}: level ratio {ratio:.2}"
                );
            }
        }
    }

    #[test]
    fn stereo_packets_decode_to_mono() {
        // A peer that sends stereo (sprop-stereo=1) is still heard.
        let mut error = 0;
        // SAFETY: as in `OpusEncoder::new`; destroyed below.
        let raw =
            unsafe { ffi::opus_encoder_create(48000, 2, ffi::OPUS_APPLICATION_VOIP, &mut error) };
        assert_eq!(error, ffi::OPUS_OK);
        let stereo: Vec<i16> = speechlike(FRAME_SAMPLES)
            .iter()
            .flat_map(|&s| [s, s / 2])
            .collect();
        let mut packet = [0u8; MAX_PACKET_BYTES];
        let mut dec = OpusDecoder::new().unwrap();
        let mut out = [0i16; MAX_PACKET_SAMPLES];
        for _ in 0..5 {
            // SAFETY: `stereo` holds 960 interleaved stereo samples, `packet` 1275 bytes.
            let n =
                unsafe { ffi::opus_encode(raw, stereo.as_ptr(), 960, packet.as_mut_ptr(), 1275) };
            assert!(n > 0);
            assert_eq!(dec.decode(&packet[..n as usize], &mut out), Ok(960));
        }
        // SAFETY: created above.
        unsafe { ffi::opus_encoder_destroy(raw) };
        assert!(out.iter().any(|&s| s.unsigned_abs() > 1000));
    }
}
