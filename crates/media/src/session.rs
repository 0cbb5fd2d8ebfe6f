//! One call's media as a sans-IO state machine: datagrams in, datagrams out, time passed in.
//!
//! A [`MediaSession`] owns everything a call's media decides: the stream state (SSRC,
//! sequence, timestamp, the marker of a talk spurt), the codec and its resamplers,
//! the jitter buffer and loss concealment, DTMF (RFC 4733 sent and received, in-band
//! tones sent and heard), RTCP (reports, their schedule, the numbers they tell),
//! symmetric-RTP and -RTCP latching, hold and receive-only, and the speaker and
//! microphone levels, and SRTP when negotiated (every datagram out protected, every
//! one in checked and decrypted, by the call's [`SrtpStream`]; nothing goes out in
//! clear while SRTP is agreed). It owns no socket, reads no clock and draws no random
//! number:
//!
//! * what arrives is handed in with its arrival time ([`MediaSession::handle_rtp`],
//!   [`MediaSession::handle_rtcp`]);
//! * the 20 ms frame is run when the caller says so, at the time it passes in
//!   ([`MediaSession::tick`]), with the audio source and sink to use for that frame;
//! * what is to be sent waits in [`MediaSession::poll_transmit`], what is to be told in
//!   [`MediaSession::poll_event`].
//!
//! Sources and sinks run on the audio bus (16 kHz mono, [`audio::SAMPLE_RATE`]);
//! a session's `CodecPath` holds the negotiated codec and the resamplers between the
//! bus and the codec's PCM rate (G.711: 8 kHz both ways; G.722 and Opus, whose libopus
//! runs at 16 kHz, none), sized once when the call is configured. Work nobody uses
//! is skipped: a frame received for a `null` sink with no recorder and no conference
//! is decoded but not brought to the bus, and in-band DTMF detection listens to the
//! decoded audio (8 kHz for G.711: no conversion).
//!
//! With ICE negotiated ([`Negotiated::ice`]) the session runs the call's ICE agent
//! ([`microsip_nat::ice::Agent`]): STUN on the RTP port (and the RTCP port) is told
//! from RTP and RTCP by its first byte (RFC 7983: 0-3) and handed to the agent,
//! whose checks and answers go out with the media (never through SRTP); media
//! goes to the pair the agent selected (nothing before there is one; the SDP
//! address if every pair failed), not to a latched source.
//!
//! The media thread ([`crate::engine`]) is the I/O around it: sockets, the clock, the
//! audio devices. Tests drive two sessions against each other with a fake clock (the
//! model is str0m's `handle_input` / `poll_output`).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::audio::{self, AudioSink, AudioSource, FRAME_SAMPLES};
use crate::codec::{self, AudioCodec, MAX_PAYLOAD_BYTES};
use crate::dtmf::{self, GoertzelDetector, Rfc4733Receiver, Rfc4733Sender, ToneGenerator};
use crate::engine::{DtmfMode, Levels, MediaError, MediaEvent, MediaStats};
use crate::jitter::{JitterBuffer, JitterConfig, Playout};
use crate::mixer::Mixer;
use crate::plc::Plc;
use crate::recorder::{Player, Recorder, Taps};
use crate::resample::Resampler;
use crate::rtcp::{self, RtcpSession};
use crate::rtp::{self, RtpHeader};
use crate::sdp::{Codec, Negotiated};
use crate::srtp::SrtpStream;
use crate::stream::{StreamTap, Streams};
use microsip_nat::ice::{self, Agent, AgentConfig};

/// Everything a session is given once, at its start (sans-IO: the caller draws the
/// random numbers and reads the clocks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// The call id (named in events and logs).
    pub id: u64,
    /// The local RTP port (only reported in [`MediaStats`]).
    pub local_port: u16,
    /// How DTMF is sent and detected.
    pub dtmf: DtmfMode,
    /// Random bits: SSRC, first sequence number and timestamp, CNAME, RTCP schedule.
    pub seed: [u64; 2],
    /// The session's time zero: every `now` passed in is at or after it.
    pub epoch: Instant,
    /// Wall-clock time (since the Unix epoch) at `epoch`, for RTCP's NTP timestamps.
    pub wall_at_epoch: Duration,
}

/// Which of the call's local ports a datagram goes out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The RTP port (RTP, and RTCP when muxed).
    Rtp,
    /// The RTCP port (RTP port + 1).
    Rtcp,
}

/// A datagram the session wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Out of which local port.
    pub via: Via,
    /// To where.
    pub to: SocketAddr,
    /// The datagram.
    pub data: Vec<u8>,
}

/// What one frame tick works with besides the session: the phone's levels, the
/// conference, and the call's audio devices (read and written only on this tick).
pub struct TickIo<'a> {
    /// Speaker and microphone levels and mutes.
    pub levels: Levels,
    /// The conference (every call's tick of one 20 ms period shares it).
    pub mixer: &'a mut Mixer,
    /// Where what the call sends comes from (read once per tick while sending).
    pub source: &'a mut dyn AudioSource,
    /// Where what the call plays goes (written once per tick while playing).
    pub sink: &'a mut dyn AudioSink,
}

/// Scales `frame` from gain `from` to gain `to` in a straight line across the frame,
/// so a level change never clicks. Returns `to` (the gain now in force).
pub(crate) fn apply_gain(frame: &mut [i16], from: f32, to: f32) -> f32 {
    if from == 1.0 && to == 1.0 {
        return to;
    }
    let n = frame.len().max(1) as f32;
    for (i, s) in frame.iter_mut().enumerate() {
        let g = from + (to - from) * (i as f32 + 1.0) / n;
        *s = (f32::from(*s) * g).clamp(-32768.0, 32767.0) as i16;
    }
    to
}

/// Datagrams kept for reuse (sent ones handed back by [`MediaSession::recycle`]).
const SPARE_BUFFERS: usize = 4;

/// One call's media (see the module documentation).
pub struct MediaSession {
    id: u64,
    local_port: u16,
    epoch: Instant,
    /// Unix time at `epoch`, for the NTP timestamps of our reports.
    wall_at_epoch: Duration,
    negotiated: Option<Negotiated>,
    /// Where packets go: the SDP address until the peer's first packet, then its source.
    target: Option<SocketAddr>,
    latched: bool,
    local_hold: bool,
    receive_only: bool,
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
    /// Whether the previous tick sent (the next first packet carries the marker).
    sending: bool,
    /// The codec and its conversions (from `configure`).
    path: Option<CodecPath>,
    /// Received audio waits here for its playout tick.
    jitter: JitterBuffer,
    dtmf_mode: DtmfMode,
    /// RFC 4733 sender, when the peer offered telephone-event.
    dtmf_out: Option<Rfc4733Sender>,
    dtmf_in: Rfc4733Receiver,
    tones_out: ToneGenerator,
    /// In-band detection, when the mode asks for it.
    detector: Option<InbandDetector>,
    /// Gains last applied (ramps start from here).
    mic_gain: f32,
    speaker_gain: f32,
    /// Recording, a file played in, the conference (see `recorder.rs`).
    taps: Taps,
    /// Programs listening to the call and talking into it (see `stream.rs`).
    streams: Streams,
    /// RTCP: where reports go (latched to where the peer's come from), the protocol
    /// state, the peer's SSRC.
    rtcp_target: Option<SocketAddr>,
    rtcp_latched: bool,
    rtcp: RtcpSession,
    peer_ssrc: Option<u32>,
    /// Counters.
    packets_sent: u64,
    bytes_sent: u64,
    packets_received: u64,
    bytes_received: u64,
    last_received: Option<Instant>,
    /// Output waiting to be polled, and buffers to reuse.
    transmits: VecDeque<Transmit>,
    events: VecDeque<MediaEvent>,
    spare: Vec<Vec<u8>>,
    /// SRTP: whether the negotiation agreed on it, and the stream (`None` while
    /// agreed only when it could not be made: then nothing is sent or played).
    encrypted: bool,
    srtp: Option<SrtpStream>,
    /// A decrypted datagram, reused.
    unprotected: Vec<u8>,
    /// The ICE agent, when ICE was negotiated.
    ice: Option<Agent>,
    /// The agent failed and media went to the SDP address (said once).
    ice_failed: bool,
    /// The first tick after a configure that gave a remote address, until the
    /// first RTP packet goes out (then logged with the time it took).
    awaiting_first_packet: Option<Option<Instant>>,
    /// One bus frame from the source, one payload, one packet: reused every tick.
    pcm: [i16; FRAME_SAMPLES],
    payload: [u8; MAX_PAYLOAD_BYTES],
    packet: [u8; rtp::HEADER_LEN + MAX_PAYLOAD_BYTES],
}

impl MediaSession {
    /// A session that sends nothing until [`MediaSession::configure`].
    pub fn new(config: SessionConfig) -> MediaSession {
        let [r, t] = config.seed;
        MediaSession {
            id: config.id,
            local_port: config.local_port,
            epoch: config.epoch,
            wall_at_epoch: config.wall_at_epoch,
            negotiated: None,
            target: None,
            latched: false,
            local_hold: false,
            receive_only: false,
            ssrc: r as u32,
            sequence: (r >> 32) as u16,
            timestamp: t as u32,
            sending: false,
            path: None,
            jitter: JitterBuffer::new(JitterConfig::default()),
            dtmf_mode: config.dtmf,
            dtmf_out: None,
            dtmf_in: Rfc4733Receiver::new(),
            tones_out: ToneGenerator::with_rate(audio::SAMPLE_RATE),
            detector: None,
            mic_gain: 1.0,
            speaker_gain: 1.0,
            taps: Taps::default(),
            streams: Streams::default(),
            rtcp_target: None,
            rtcp_latched: false,
            rtcp: RtcpSession::new(r as u32, &format!("{t:016x}@microsip"), 8000, r ^ t),
            peer_ssrc: None,
            packets_sent: 0,
            bytes_sent: 0,
            packets_received: 0,
            bytes_received: 0,
            last_received: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            spare: Vec::new(),
            encrypted: false,
            srtp: None,
            unprotected: Vec::new(),
            ice: None,
            ice_failed: false,
            awaiting_first_packet: None,
            pcm: [0; FRAME_SAMPLES],
            payload: [0; MAX_PAYLOAD_BYTES],
            packet: [0; rtp::HEADER_LEN + MAX_PAYLOAD_BYTES],
        }
    }

    /// The call id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Our SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Starts or updates the stream after an offer/answer (again after a re-INVITE,
    /// or when the final answer follows early media). A new remote address resets the
    /// symmetric-RTP latch.
    pub fn configure(&mut self, negotiated: Negotiated) {
        let remote_changed = self.negotiated.as_ref().map(|n| n.remote) != Some(negotiated.remote);
        if remote_changed {
            self.target = negotiated.remote;
            self.latched = false;
        }
        let rtcp_changed = self.negotiated.as_ref().map(|n| (n.rtcp, n.rtcp_mux))
            != Some((negotiated.rtcp, negotiated.rtcp_mux));
        if rtcp_changed {
            self.rtcp_target = negotiated.rtcp;
            self.rtcp_latched = false;
        }
        self.rtcp.set_clock_rate(negotiated.codec.clock_rate());
        let events_allowed = matches!(self.dtmf_mode, DtmfMode::Auto | DtmfMode::Rfc4733);
        self.dtmf_out = match (negotiated.telephone_event, events_allowed) {
            (Some(pt), true) => Some(Rfc4733Sender::new(pt, negotiated.telephone_event_rate)),
            _ => None,
        };
        let inband = match self.dtmf_mode {
            DtmfMode::Inband => true,
            DtmfMode::Auto => negotiated.telephone_event.is_none(),
            DtmfMode::Rfc4733 | DtmfMode::SipInfo => false,
        };
        let codec_changed = self.path.as_ref().map(|p| p.kind) != Some(negotiated.codec);
        if codec_changed {
            self.set_codec(negotiated.codec);
        } else if remote_changed {
            self.jitter.reset();
        }
        self.detector = self
            .path
            .as_ref()
            .filter(|_| inband)
            .map(|p| InbandDetector::new(p.codec.sample_rate(), p.decoded.len()));
        if remote_changed {
            self.dtmf_in.reset();
        }
        self.set_srtp(&negotiated);
        self.set_ice(&negotiated);
        if self.ice.is_some() {
            // ICE decides where media goes: nothing until a pair is valid.
            self.target = self.ice.as_ref().and_then(|a| a.selected(1));
            self.latched = true;
        }
        if negotiated.remote.is_some()
            && self.awaiting_first_packet.is_none()
            && self.packets_sent == 0
        {
            self.awaiting_first_packet = Some(None);
        }
        self.negotiated = Some(negotiated);
    }

    /// Starts the ICE agent (new credentials: an ICE restart too), or gives the
    /// running one the candidates of a new offer or answer, or stops it.
    fn set_ice(&mut self, negotiated: &Negotiated) {
        let Some(params) = &negotiated.ice else {
            self.ice = None;
            return;
        };
        if let Some(agent) = self.ice.as_mut() {
            if agent.remote_credentials() == &params.remote
                && agent.local_credentials() == &params.local.credentials
            {
                agent.add_remote_candidates(params.remote_candidates.clone());
                return;
            }
        }
        tracing::info!(
            call = self.id,
            "ICE: {} local and {} remote candidates, {}",
            params.local.candidates.len(),
            params.remote_candidates.len(),
            if params.controlling {
                "controlling"
            } else {
                "controlled"
            }
        );
        self.ice_failed = false;
        self.ice = Some(Agent::new(AgentConfig {
            local: params.local.credentials.clone(),
            remote: params.remote.clone(),
            candidates: params.local.candidates.clone(),
            remote_candidates: params.remote_candidates.clone(),
            controlling: params.controlling,
            tie_breaker: params.local.tie_breaker,
            seed: u64::from(self.ssrc) << 32 | u64::from(self.sequence) ^ params.local.tie_breaker,
        }));
    }

    /// Runs the ICE agent at `now`: its checks and answers are queued, and media
    /// follows its selected pair.
    fn ice_tick(&mut self, now: Instant) {
        let Some(agent) = self.ice.as_mut() else {
            return;
        };
        agent.handle_timeout(now);
        while let Some(t) = agent.poll_transmit() {
            let via = if t.component == 1 {
                Via::Rtp
            } else {
                Via::Rtcp
            };
            self.transmits.push_back(Transmit {
                via,
                to: t.to,
                data: t.data,
            });
        }
        let selected = agent.selected(1);
        let failed = agent.state() == ice::State::Failed;
        if let Some(to) = agent.selected(2) {
            // RTCP not multiplexed: component 2's pair.
            if self.rtcp_target != Some(to) {
                tracing::info!(call = self.id, "ICE: RTCP to {to}");
                self.rtcp_target = Some(to);
                self.rtcp_latched = true;
            }
        }
        match selected {
            Some(to) if self.target != Some(to) => {
                tracing::info!(call = self.id, "ICE: media to {to}");
                self.target = Some(to);
            }
            None if failed && !self.ice_failed => {
                self.ice_failed = true;
                let remote = self.negotiated.as_ref().and_then(|n| n.remote);
                tracing::warn!(
                    call = self.id,
                    "ICE: every pair failed; media to the SDP address {remote:?}"
                );
                self.target = remote;
            }
            _ => {}
        }
    }

    /// The ICE agent's view, for the counters: (state, nominated address).
    pub fn ice_state(&self) -> Option<(ice::State, Option<SocketAddr>)> {
        self.ice.as_ref().map(|a| (a.state(), a.nominated(1)))
    }

    /// Applies the negotiated SRTP: the same keys keep the stream (its rollover
    /// counters and replay windows), new keys make a new one, none means clear RTP.
    fn set_srtp(&mut self, negotiated: &Negotiated) {
        self.encrypted = negotiated.srtp.is_some();
        let Some(params) = &negotiated.srtp else {
            self.srtp = None;
            return;
        };
        if self.srtp.as_ref().map(SrtpStream::params) == Some(params) {
            return;
        }
        self.srtp = match SrtpStream::new(params.clone()) {
            Ok(stream) => Some(stream),
            Err(e) => {
                tracing::warn!(call = self.id, error = %e, "cannot set up SRTP; the call sends no media");
                None
            }
        };
    }

    /// Switches to `codec`: a fresh encoder, decoder and resamplers, and a jitter
    /// buffer on the codec's RTP clock.
    fn set_codec(&mut self, codec: Codec) {
        self.path = CodecPath::new(codec, self.id);
        if let Some(path) = &self.path {
            self.jitter = JitterBuffer::new(path.jitter_config());
        }
    }

    /// Our hold: while `true` the session neither sends nor plays.
    pub fn set_hold(&mut self, on: bool) {
        self.local_hold = on;
    }

    /// Early media: while `true` the session plays what arrives and sends nothing.
    pub fn set_receive_only(&mut self, on: bool) {
        self.receive_only = on;
    }

    /// Starts (`Some`) or stops (`None`) recording the call (the recorder's file is
    /// written by its own thread).
    pub(crate) fn set_recorder(&mut self, recorder: Option<Recorder>) {
        self.taps.set_recorder(recorder);
    }

    /// Starts (`Some`) or stops (`None`) playing a file instead of the source.
    pub(crate) fn set_player(&mut self, player: Option<Player>) {
        self.taps.set_player(player);
    }

    /// Adds a stream client: from the next tick it gets what the call plays and its
    /// frames go into what the call sends. Refused past
    /// [`crate::stream::MAX_CLIENTS_PER_CALL`].
    pub(crate) fn add_stream(&mut self, tap: StreamTap) -> Result<(), MediaError> {
        if self.streams.len() >= crate::stream::MAX_CLIENTS_PER_CALL {
            return Err(MediaError::Stream(format!(
                "call {} already streams to {} clients",
                self.id,
                crate::stream::MAX_CLIENTS_PER_CALL
            )));
        }
        self.events.push_back(MediaEvent::StreamStarted {
            call: self.id,
            info: tap.info(),
        });
        self.streams.add(tap);
        Ok(())
    }

    /// Lets go of the stream clients that asked to stop, and reports them.
    pub(crate) fn drop_closing_streams(&mut self) {
        self.streams.drop_closing();
        self.report_stopped_streams();
    }

    fn report_stopped_streams(&mut self) {
        for s in self.streams.take_stopped() {
            self.events.push_back(MediaEvent::StreamStopped {
                call: self.id,
                info: s.info,
                reason: s.reason,
            });
        }
    }

    /// Queues DTMF digits by the way this call can carry them (RFC 4733 events when
    /// the peer offered telephone-event and the mode allows, else in-band tones).
    pub fn send_dtmf(&mut self, digits: &str) -> Result<(), MediaError> {
        if self.negotiated.is_none() {
            return Err(MediaError::Dtmf("the call has no audio stream yet".into()));
        }
        let result = match (&mut self.dtmf_out, self.dtmf_mode) {
            (_, DtmfMode::SipInfo) => {
                return Err(MediaError::Dtmf(
                    "DTMF goes by SIP INFO on this phone".into(),
                ))
            }
            (Some(sender), DtmfMode::Auto | DtmfMode::Rfc4733) => sender.queue(digits),
            (None, DtmfMode::Rfc4733) => {
                return Err(MediaError::Dtmf(
                    "the other side did not offer telephone-event (RFC 4733)".into(),
                ))
            }
            _ => self.tones_out.queue(digits),
        };
        result.map_err(|e| MediaError::Dtmf(e.to_string()))
    }

    fn may_send(&self) -> bool {
        match &self.negotiated {
            Some(n) => {
                !self.local_hold
                    && !self.receive_only
                    && n.local_direction.sends()
                    && n.remote_direction.receives()
            }
            None => false,
        }
    }

    fn plays(&self) -> bool {
        match &self.negotiated {
            Some(n) => !self.local_hold && n.local_direction.receives(),
            None => false,
        }
    }

    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    fn rtcp_now(&self, now: Instant) -> rtcp::Now {
        let since = now.saturating_duration_since(self.epoch);
        rtcp::Now {
            ms: since.as_millis() as u64,
            ntp: rtcp::ntp_from_unix(self.wall_at_epoch + since),
        }
    }

    /// Queues a datagram (RTP or RTCP), protected when SRTP is agreed; dropped when
    /// SRTP is agreed and cannot protect it (never sent in clear).
    fn queue(&mut self, via: Via, to: SocketAddr, bytes: &[u8]) {
        let mut data = self.spare.pop().unwrap_or_default();
        data.clear();
        if self.encrypted {
            let Some(srtp) = self.srtp.as_mut() else {
                return;
            };
            let protected = if rtcp::is_rtcp(bytes) {
                srtp.protect_rtcp(bytes, &mut data)
            } else {
                srtp.protect_rtp(bytes, &mut data)
            };
            if let Err(e) = protected {
                tracing::debug!(call = self.id, error = %e, "packet not sent");
                return;
            }
        } else {
            data.extend_from_slice(bytes);
        }
        self.transmits.push_back(Transmit { via, to, data });
    }

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Hands back a sent datagram's buffer, so the next one needs no allocation.
    pub fn recycle(&mut self, transmit: Transmit) {
        if self.spare.len() < SPARE_BUFFERS {
            self.spare.push(transmit.data);
        }
    }

    /// Tells the session a datagram it queued never left (a full or failing
    /// socket): an RTP packet is then not counted as sent.
    pub(crate) fn send_failed(&mut self, transmit: &Transmit) {
        if !rtcp::is_rtcp(&transmit.data) && rtp::parse(&transmit.data).is_ok() {
            self.packets_sent = self.packets_sent.saturating_sub(1);
            self.bytes_sent = self.bytes_sent.saturating_sub(transmit.data.len() as u64);
        }
    }

    /// The next thing to tell (a received digit, a report, a file that ran out...).
    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.pop_front()
    }

    /// One 20 ms frame at `now`: sends this tick's packet (20 ms from the source,
    /// encoded, or an RFC 4733 event), plays one frame from the jitter buffer into the
    /// sink (decoded, or concealed when lost), and sends an RTCP report when due.
    pub fn tick(&mut self, now: Instant, io: &mut TickIo<'_>) {
        self.ice_tick(now);
        if let Some(waiting) = self.awaiting_first_packet.as_mut() {
            waiting.get_or_insert(now);
        }
        if let Some(ticks) = self.path.as_ref().map(CodecPath::frame_ticks) {
            match self.target {
                Some(to) if self.may_send() => {
                    if let Some(Some(since)) = self.awaiting_first_packet.take() {
                        tracing::info!(
                            call = self.id,
                            "first RTP packet to {to}, {} ms after the answer ({})",
                            now.saturating_duration_since(since).as_millis(),
                            if self.ice.is_some() { "ICE" } else { "no ICE" }
                        );
                    }
                    self.send_frame(to, io);
                    self.sequence = self.sequence.wrapping_add(1);
                    self.sending = true;
                }
                _ => self.sending = false,
            }
            // The media clock runs on while we are silent.
            self.timestamp = self.timestamp.wrapping_add(ticks);
        }
        self.play(now, io);
        let events = &mut self.events;
        self.taps.end_tick(self.id, &mut |e| events.push_back(e));
        if !self.streams.is_empty() {
            self.drop_closing_streams();
        }
        self.report_stopped_streams();
        self.rtcp_tick(now);
    }

    /// Sends this tick's packet to `to`: 20 ms from the source, encoded (with
    /// in-band DTMF tones over it), or an RFC 4733 event packet while a digit goes.
    fn send_frame(&mut self, to: SocketAddr, io: &mut TickIo<'_>) {
        let (Some(n), Some(path)) = (&self.negotiated, self.path.as_mut()) else {
            return;
        };
        // The source always advances, so a file keeps its pace.
        io.source.read(&mut self.pcm);
        self.mic_gain = apply_gain(&mut self.pcm, self.mic_gain, io.levels.microphone_gain());
        self.streams.on_send(&mut self.pcm);
        self.taps.on_send(self.id, &mut self.pcm, io.mixer);
        let event = self.dtmf_out.as_mut().and_then(|sender| {
            sender
                .tick(self.timestamp)
                .map(|ev| (sender.payload_type(), ev))
        });
        let written = match event {
            Some((event_pt, ev)) => {
                let header = RtpHeader {
                    marker: ev.marker,
                    payload_type: event_pt,
                    sequence: self.sequence,
                    timestamp: ev.timestamp,
                    ssrc: self.ssrc,
                };
                rtp::write_packet(&header, &ev.payload, &mut self.packet)
            }
            None => {
                self.tones_out.fill(&mut self.pcm);
                let len = path.encode(&self.pcm, &mut self.payload);
                let header = RtpHeader {
                    marker: !self.sending,
                    payload_type: n.payload_type,
                    sequence: self.sequence,
                    timestamp: self.timestamp,
                    ssrc: self.ssrc,
                };
                if len == 0 {
                    Err(rtp::RtpError::BufferTooSmall)
                } else {
                    rtp::write_packet(&header, &self.payload[..len], &mut self.packet)
                }
            }
        };
        let Ok(len) = written else { return };
        self.packets_sent += 1;
        self.bytes_sent += len as u64;
        let packet = self.packet;
        self.queue(Via::Rtp, to, &packet[..len]);
    }

    /// Plays one frame from the jitter buffer: decoded, or concealed when it was lost,
    /// brought to the bus rate.
    fn play(&mut self, now: Instant, io: &mut TickIo<'_>) {
        if !self.plays() {
            return;
        }
        let now_ms = self.ms(now);
        let Some(path) = self.path.as_mut() else {
            return;
        };
        let Some(decoded) = path.decode_next(&mut self.jitter, now_ms) else {
            return;
        };
        let decoded = decoded.min(path.decoded.len());
        if let Some(detector) = self.detector.as_mut() {
            let (id, events) = (self.id, &mut self.events);
            detector.process(&path.decoded[..decoded], |digit| {
                events.push_back(MediaEvent::Dtmf {
                    call: id,
                    digit,
                    inband: true,
                })
            });
        }
        self.streams
            .on_decoded(&path.decoded[..decoded], path.codec.sample_rate());
        if io.sink.discards() && !self.taps.hears(self.id, io.mixer) {
            // Nobody hears this frame (a `null` sink, no recorder, no conference): it
            // was decoded, so the jitter buffer, concealment and in-band detection go
            // on, but it is not brought to the bus.
            path.bus_skipped = true;
            self.speaker_gain = io.levels.speaker_gain();
        } else {
            let samples = path.convert_to_bus(decoded);
            let frame = &mut path.played[..samples];
            self.speaker_gain = apply_gain(frame, self.speaker_gain, io.levels.speaker_gain());
            self.taps.on_heard(self.id, frame, io.mixer);
            if let Err(e) = io.sink.write(frame) {
                tracing::warn!(call = self.id, error = %e, "audio output failed; the call goes on without it");
            }
        }
    }

    /// A datagram that arrived on the RTP port from `from` at `now`: RTP (played when
    /// it is the negotiated payload type, read as DTMF when telephone-event), or RTCP
    /// when muxed.
    pub fn handle_rtp(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        if self.is_stun(now, 1, from, data) {
            return;
        }
        if !self.encrypted {
            return self.handle_clear_rtp(now, from, data);
        }
        let mut clear = std::mem::take(&mut self.unprotected);
        let rtcp = rtcp::is_rtcp(data);
        if self.unprotect(rtcp, data, &mut clear) {
            self.handle_clear_rtp(now, from, &clear);
        }
        self.unprotected = clear;
    }

    /// RFC 7983: a first byte of 0-3 is STUN, for the ICE agent (`component` is
    /// the port it came in on: 1 RTP, 2 RTCP); without one it is dropped. `false`:
    /// not STUN (RTP, RTCP, or their SRTP forms).
    fn is_stun(&mut self, now: Instant, component: u16, from: SocketAddr, data: &[u8]) -> bool {
        if data.first().is_none_or(|b| *b > 3) {
            return false;
        }
        if let Some(agent) = self.ice.as_mut() {
            agent.handle(now, component, from, data);
        }
        true
    }

    /// Decrypts `data` (SRTCP when `rtcp`, else SRTP) into `clear`; `false` for a
    /// datagram that fails (a clear, forged, replayed or short packet: dropped).
    fn unprotect(&mut self, rtcp: bool, data: &[u8], clear: &mut Vec<u8>) -> bool {
        let Some(srtp) = self.srtp.as_mut() else {
            return false;
        };
        let result = if rtcp {
            srtp.unprotect_rtcp(data, clear)
        } else {
            srtp.unprotect_rtp(data, clear)
        };
        match result {
            Ok(()) => true,
            Err(e) => {
                tracing::trace!(call = self.id, error = %e, "datagram dropped");
                false
            }
        }
    }

    /// A datagram of the RTP port, in clear (as it came, or decrypted).
    fn handle_clear_rtp(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        if rtcp::is_rtcp(data) {
            // RFC 5761 demultiplexing: RTCP on the RTP port when muxed (or from the
            // peer's RTP address, for peers that mux unasked).
            let muxed = self.negotiated.as_ref().is_some_and(|n| n.rtcp_mux);
            if muxed || self.target == Some(from) {
                self.on_rtcp(now, data, from, true);
            }
            return;
        }
        let Some(n) = &self.negotiated else { return };
        let Ok(packet) = rtp::parse(data) else {
            return;
        };
        let pt = packet.header.payload_type;
        let is_media = pt == n.payload_type;
        if !is_media && n.telephone_event != Some(pt) {
            return;
        }
        // Symmetric RTP: answer to where the peer's packets come from (with ICE,
        // the agent's pair; media is taken from any of the peer's addresses).
        let ice = self.ice.is_some();
        if !ice && self.latched {
            if self.target != Some(from) {
                return;
            }
        } else if !ice && n.remote.is_some() {
            self.latched = true;
            self.target = Some(from);
        }
        self.packets_received += 1;
        self.bytes_received += data.len() as u64;
        self.last_received = Some(now);
        if !is_media {
            if matches!(self.dtmf_mode, DtmfMode::Auto | DtmfMode::Rfc4733) {
                if let Some(digit) = self
                    .dtmf_in
                    .on_packet(packet.header.timestamp, packet.payload)
                {
                    self.events.push_back(MediaEvent::Dtmf {
                        call: self.id,
                        digit,
                        inband: false,
                    });
                }
            }
            return;
        }
        if self.plays() {
            self.peer_ssrc = Some(packet.header.ssrc);
            let now_ms = self.ms(now) + 1;
            self.jitter
                .push_packet(now_ms, &packet.header, packet.payload);
        }
    }

    /// A datagram that arrived on the RTCP port (RTP port + 1) from `from` at `now`.
    pub fn handle_rtcp(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        if self.is_stun(now, 2, from, data) {
            return;
        }
        if !self.encrypted {
            return self.on_rtcp(now, data, from, false);
        }
        let mut clear = std::mem::take(&mut self.unprotected);
        if self.unprotect(true, data, &mut clear) {
            self.on_rtcp(now, &clear, from, false);
        }
        self.unprotected = clear;
    }

    /// Stops the call's media: queues the last report and a BYE. The caller sends
    /// them and finishes the sink.
    pub fn close(&mut self, now: Instant) {
        self.streams.stop_all("the call ended");
        self.report_stopped_streams();
        let Some((via, to)) = self.rtcp_destination() else {
            return;
        };
        let bye = self
            .rtcp
            .bye(self.rtcp_now(now), &self.sending(), self.reception());
        self.queue(via, to, &bye);
    }

    /// The session's counters at `now`.
    pub fn stats(&self, now: Instant) -> MediaStats {
        let js = self.jitter.stats();
        MediaStats {
            local_port: self.local_port,
            codec: self.negotiated.as_ref().map(|n| n.codec),
            packets_sent: self.packets_sent,
            packets_received: self.packets_received,
            bytes_sent: self.bytes_sent,
            bytes_received: self.bytes_received,
            last_received_ms_ago: self
                .last_received
                .map(|t| now.saturating_duration_since(t).as_millis() as u64),
            remote: self.target,
            packets_lost: js.lost,
            jitter_ms: js.jitter_ms.max(0.0) as u32,
            playout_delay_ms: js.current_delay_ms,
            quality: self.rtcp.quality(),
        }
    }
}

/// RTCP: its place in the tick, the latch, the numbers and events.
impl MediaSession {
    /// Where our reports go, and out of which port: the RTP target when muxed, else
    /// the RTCP address.
    fn rtcp_destination(&self) -> Option<(Via, SocketAddr)> {
        let n = self.negotiated.as_ref()?;
        n.remote?;
        if n.rtcp_mux {
            Some((Via::Rtp, self.target?))
        } else {
            Some((Via::Rtcp, self.rtcp_target?))
        }
    }

    fn sending(&self) -> rtcp::Sending {
        rtcp::Sending {
            packets: self.packets_sent,
            octets: self
                .bytes_sent
                .saturating_sub(self.packets_sent * rtp::HEADER_LEN as u64),
            rtp_timestamp: self.timestamp,
        }
    }

    fn reception(&self) -> Option<(u32, crate::jitter::Reception)> {
        Some((self.peer_ssrc?, self.jitter.reception()?))
    }

    /// Each tick: a report when one is due.
    fn rtcp_tick(&mut self, now: Instant) {
        let Some((via, to)) = self.rtcp_destination() else {
            return;
        };
        let now = self.rtcp_now(now);
        self.rtcp.start(now.ms);
        if self.rtcp.due(now.ms) {
            let report = self.rtcp.report(now, &self.sending(), self.reception());
            self.queue(via, to, &report);
        }
    }

    /// One RTCP datagram from `from` (on the RTP port when `muxed`).
    fn on_rtcp(&mut self, now: Instant, data: &[u8], from: SocketAddr, muxed: bool) {
        if !muxed && self.rtcp_latched && self.rtcp_target != Some(from) {
            return;
        }
        let now = self.rtcp_now(now);
        let Ok(received) = self.rtcp.on_datagram(now, data) else {
            return;
        };
        if !received.report {
            return;
        }
        // Symmetric RTCP: answer to where the peer's reports come from.
        let has_remote = self.negotiated.as_ref().is_some_and(|n| n.remote.is_some());
        if !muxed && !self.rtcp_latched && has_remote {
            self.rtcp_latched = true;
            self.rtcp_target = Some(from);
        }
        self.events.push_back(MediaEvent::Quality {
            call: self.id,
            quality: self.rtcp.quality(),
        });
    }
}

/// The negotiated codec of a session and the conversions between the audio bus and
/// the codec's PCM rate, with every buffer they need, made once per configure.
struct CodecPath {
    /// Which codec (a re-INVITE keeping it keeps this path and its state).
    kind: Codec,
    codec: Box<dyn AudioCodec>,
    /// Bus → codec rate, when they differ (G.711).
    to_codec: Option<Resampler>,
    /// Codec rate → bus, when they differ.
    to_bus: Option<Resampler>,
    /// One frame at the codec rate, what is encoded.
    encode_in: Vec<i16>,
    /// One received packet decoded (or a loss concealed) at the codec rate.
    decoded: Vec<i16>,
    /// `decoded` on the bus, what is played.
    played: Vec<i16>,
    /// Concealment for codecs without their own (G.711, G.722), at the codec rate.
    plc: Plc,
    /// Frames were decoded without being brought to the bus (nobody heard them):
    /// `to_bus` starts afresh on the next one instead of from stale history.
    bus_skipped: bool,
}

impl CodecPath {
    /// The path for `kind`; `None` (logged) when the codec cannot be made.
    fn new(kind: Codec, call: u64) -> Option<CodecPath> {
        let codec = match codec::make_codec_at(kind, audio::SAMPLE_RATE) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(call, codec = %kind, error = %e, "cannot make the codec; the call has no audio");
                return None;
            }
        };
        let rate = codec.sample_rate();
        let converter = |from: u32, to: u32| {
            (from != to)
                .then(|| Resampler::new(from, to).ok())
                .flatten()
        };
        let to_codec = converter(audio::SAMPLE_RATE, rate);
        let to_bus = converter(rate, audio::SAMPLE_RATE);
        // Sized for this codec's longest packet, not for any codec's (a G.711 call
        // needs a quarter of what 120 ms of Opus at 48 kHz would).
        let most = codec.max_decoded_samples();
        let played = to_bus.as_ref().map_or(most, |r| r.max_output(most));
        Some(CodecPath {
            kind,
            encode_in: vec![0; codec.frame_samples()],
            decoded: vec![0; most],
            played: vec![0; played],
            plc: Plc::with_rate(codec.frame_samples(), rate),
            bus_skipped: false,
            to_codec,
            to_bus,
            codec,
        })
    }

    /// The jitter buffer settings for this codec's RTP clock and 20 ms frames.
    fn jitter_config(&self) -> JitterConfig {
        JitterConfig::new(self.codec.rtp_clock_rate(), self.codec.rtp_frame_ticks())
    }

    /// RTP timestamp units per 20 ms.
    fn frame_ticks(&self) -> u32 {
        self.codec.rtp_frame_ticks()
    }

    /// Encodes one bus frame into `payload`; returns the payload length (0: nothing
    /// to send).
    fn encode(&mut self, bus: &[i16], payload: &mut [u8]) -> usize {
        match self.to_codec.as_mut() {
            Some(r) => {
                let n = r.process(bus, &mut self.encode_in);
                // (A converter gives a whole frame per frame; pad just in case.)
                self.encode_in[n..].fill(0);
                self.codec.encode(&self.encode_in, payload)
            }
            None => self.codec.encode(bus, payload),
        }
    }

    /// The next frame to play from `jitter`, decoded or concealed into `decoded`:
    /// the packet when it is there; for a lost one the codec's in-band FEC from the
    /// packet after it (Opus), else the codec's own concealment (Opus), else
    /// [`Plc`]. Returns the number of codec-rate samples, `None` while the buffer
    /// waits (nothing to play).
    fn decode_next(&mut self, jitter: &mut JitterBuffer, now_ms: u64) -> Option<usize> {
        let frame = self.codec.frame_samples();
        let decoded = match jitter.pop(now_ms) {
            Playout::Frame(payload) => self.codec.decode(payload, &mut self.decoded),
            Playout::Missing => {
                let fec = jitter
                    .peek_next()
                    .and_then(|next| self.codec.decode_fec(next, &mut self.decoded[..frame]));
                match fec {
                    Some(n) if n > 0 => return Some(n),
                    _ => 0,
                }
            }
            Playout::Waiting => return None,
        };
        if decoded > 0 {
            self.plc.smooth_recovery(&mut self.decoded[..decoded]);
            self.plc.good(&self.decoded[..decoded]);
            return Some(decoded);
        }
        // Lost, or a packet that would not decode.
        let n = self.codec.conceal(&mut self.decoded[..frame]);
        if n > 0 {
            return Some(n);
        }
        self.plc.conceal(&mut self.decoded[..frame]);
        Some(frame)
    }

    /// `decoded[..n]` on the bus rate, in `played`; returns its length.
    fn convert_to_bus(&mut self, n: usize) -> usize {
        let n = n.min(self.decoded.len());
        if std::mem::take(&mut self.bus_skipped) {
            if let Some(r) = self.to_bus.as_mut() {
                r.reset();
            }
        }
        match self.to_bus.as_mut() {
            Some(r) => r.process(&self.decoded[..n], &mut self.played),
            None => {
                self.played[..n].copy_from_slice(&self.decoded[..n]);
                n
            }
        }
    }
}

/// In-band DTMF detection on what a call plays: the detector works at 8 kHz, so it
/// hears the decoded audio at the codec's rate, resampled only when that is not 8 kHz
/// (G.711 is heard as decoded, with no conversion).
struct InbandDetector {
    detector: GoertzelDetector,
    to_8k: Option<Resampler>,
    buf: Vec<i16>,
}

impl InbandDetector {
    /// A detector for decoded audio at `rate` Hz, in pieces of at most `most`
    /// samples.
    fn new(rate: u32, most: usize) -> InbandDetector {
        let to_8k = Resampler::new(rate, dtmf::SAMPLE_RATE)
            .ok()
            .filter(|r| !r.is_passthrough());
        InbandDetector {
            detector: GoertzelDetector::new(),
            buf: to_8k
                .as_ref()
                .map_or(Vec::new(), |r| vec![0; r.max_output(most)]),
            to_8k,
        }
    }

    /// Listens to decoded samples; calls `on_digit` for each digit heard.
    fn process(&mut self, decoded: &[i16], on_digit: impl FnMut(char)) {
        match self.to_8k.as_mut() {
            Some(r) => {
                let n = r.process(decoded, &mut self.buf);
                self.detector.process_samples(&self.buf[..n], on_digit);
            }
            None => self.detector.process_samples(decoded, on_digit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gain_ramps_without_a_jump() {
        let mut frame = [10_000i16; 160];
        let now = apply_gain(&mut frame, 1.0, 0.5);
        assert_eq!(now, 0.5);
        assert!(frame[0] > 9_900, "starts near the old gain: {}", frame[0]);
        assert_eq!(frame[159], 5_000);
        assert!(frame.windows(2).all(|w| (w[0] - w[1]).abs() <= 40));
        let mut again = [10_000i16; 160];
        apply_gain(&mut again, 0.5, 0.5);
        assert!(again.iter().all(|&s| s == 5_000));
    }

    /// Every codec's path: a stream with one lost packet plays a whole bus frame
    /// every tick once started (the loss concealed: Opus by FEC from the next
    /// packet, the others by `Plc`), and the tone keeps its pitch throughout.
    #[test]
    fn codec_paths_play_whole_frames_and_conceal_a_loss() {
        use crate::audio::ToneSource;
        use crate::test_signal::zero_crossings;
        for codec in [Codec::Pcmu, Codec::Pcma, Codec::G722, Codec::Opus] {
            let mut sender = CodecPath::new(codec, 1).unwrap();
            let mut receiver = CodecPath::new(codec, 2).unwrap();
            let mut jitter = JitterBuffer::new(receiver.jitter_config());
            let ticks = sender.frame_ticks();
            let mut tone = ToneSource::new(500.0);
            let mut frame = [0i16; FRAME_SAMPLES];
            let mut payload = [0u8; MAX_PAYLOAD_BYTES];
            let mut played = Vec::new();
            for k in 0..60u16 {
                tone.read(&mut frame);
                let n = sender.encode(&frame, &mut payload);
                assert!(n > 0, "{codec}");
                let now = u64::from(k) * 20;
                if k != 30 {
                    jitter.push(now, k, u32::from(k) * ticks, k == 0, &payload[..n]);
                }
                if let Some(decoded) = receiver.decode_next(&mut jitter, now) {
                    let m = receiver.convert_to_bus(decoded);
                    assert_eq!(m, FRAME_SAMPLES, "{codec}: tick {k}");
                    played.extend_from_slice(&receiver.played[..m]);
                }
            }
            assert!(
                played.len() >= 50 * FRAME_SAMPLES,
                "{codec}: {}",
                played.len()
            );
            assert_eq!(jitter.stats().lost, 1, "{codec}");
            // 500 Hz: 20 sign changes per 20 ms frame, in every frame after the
            // first few (codec start-up), the concealed one included.
            for (i, f) in played.chunks_exact(FRAME_SAMPLES).enumerate().skip(3) {
                let z = zero_crossings(f);
                assert!((18..=22).contains(&z), "{codec}: frame {i}: {z} crossings");
            }
        }
    }
}
