//! The phone's media: everything between a negotiated session description and the
//! samples a call plays and records. Media knows no SIP: the SIP layer hands in SDP
//! text and gets SDP text back, then drives the [`MediaEngine`] with call ids.
//!
//! * [`sdp`] reads and writes session descriptions and does offer/answer;
//! * [`rtp`] is the RTP wire format;
//! * [`rtcp`] is RTCP: reports, their schedule and the call quality they tell;
//! * [`srtp`] is SRTP keyed by SDES: the `a=crypto` line, the keys, protect/unprotect;
//! * [`g711`] is the PCMU/PCMA codec;
//! * [`audio`] has the headless devices (`file:`, `tone:`, `null`);
//! * [`device`] has the sound devices (cpal) behind the same traits;
//! * [`ring`] plays the ring tone of an incoming call;
//! * [`recorder`] records calls and plays files into them, [`mixer`] is the conference;
//! * [`session`] is one call's media as a sans-IO state machine (packets in, packets
//!   out, time passed in);
//! * [`stream`] is live call audio for programs (the queues to and from each client);
//! * [`engine`] is the one media thread serving every call on one 20 ms tick: the
//!   sockets, the clock and the devices around the sessions.

pub mod audio;
pub mod codec;
pub mod device;
pub mod dtmf;
pub mod engine;
pub mod g711;
pub mod g722;
pub mod jitter;
pub mod mixer;
pub mod opus;
pub mod plc;
pub mod recorder;
pub mod resample;
pub mod ring;
pub mod rtcp;
pub mod rtp;
pub mod sdp;
pub mod session;
pub mod srtp;
pub mod stream;
#[cfg(test)]
mod test_signal;

pub use audio::{AudioError, AudioSink, AudioSource, AudioSpec, FRAME_SAMPLES};
pub use engine::{
    DtmfMode, EventSink, Levels, MediaConfig, MediaEngine, MediaError, MediaEvent, MediaStats,
    OpenedPorts,
};
pub use recorder::{PlayEnd, RecordingStatus};
pub use sdp::{
    accept_answer, answer, offer, parse as parse_sdp, Codec, Direction, IceParams, LocalIce,
    LocalMedia, LocalSrtp, Negotiated, SdpError, SessionDesc,
};
pub use session::{MediaSession, SessionConfig, TickIo, Transmit, Via};
pub use stream::{FrameError, StreamClient, StreamInfo, StreamMode, StreamOut, StreamRequest};
