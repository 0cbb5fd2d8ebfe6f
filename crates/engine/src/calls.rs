//! Calls inside the engine: the call table, every call command (dial, answer,
//! reject, hangup, hold, transfer, status, calls), what the engine does with each
//! SIP signal, and the session timers (RFC 4028: who refreshes, when, and the BYE
//! when a refresh never came). Media is opened, configured and closed here, and
//! nowhere else.

use std::time::{Duration, Instant};

use microsip_config::{Account, Srtp};
use microsip_media::sdp::{self, Direction, LocalIce, LocalMedia, LocalSrtp, Negotiated, SdpError};
use microsip_media::srtp::MasterKey;
use microsip_media::AudioSpec;
use microsip_nat::ice::{Candidate, Credentials};
use microsip_sip::{CallerAccount, EndedBy, IncomingInvite, LegId, Refresher, SessionTimerAsk};
use serde_json::{json, Value};
use tracing::{debug, info, warn};

use crate::command::{CallId, Command, StatusForm};
use crate::core::Core;
use crate::dialplan;
use crate::event::{CallQuality, EventKind};
use crate::io::{
    AnswerId, LegSignal, MediaAction, MediaFailure, MessageIn, OpenedMedia, ReplyTo, SipAction,
};
use crate::policy::{self, Decision, IncomingFacts};
use crate::recording::CallExtras;
use crate::reply::{fail, ok, ok_with, ErrorCode, Reply};
pub(crate) use crate::then::Then;
use crate::timers::Timer;

/// How long `hangup` waits for the far end before ending the call locally.
const HANGUP_GRACE: Duration = Duration::from_secs(8);
/// How long a `hold`/`transfer` sent during set-up waits for the answer.
const DEFERRED_LIMIT: Duration = Duration::from_secs(60);
/// A session refresh that meets a re-INVITE of ours in flight (or a 491) waits this
/// long before it tries again.
const REFRESH_RETRY: Duration = Duration::from_secs(2);
/// Why a call of an `SRTP=dtls` account is refused.
const DTLS_NOT_SUPPORTED: &str =
    "DTLS-SRTP is not supported (SRTP=dtls); SRTP=mandatory gives SDES-keyed SRTP";

/// The reason `call.ended` gives when the other side never refreshed the session.
const SESSION_EXPIRED: &str = "session timer expired";

/// A session timer in force (RFC 4028): the interval, and whether we refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SessionTimer {
    pub(crate) interval: u32,
    pub(crate) we_refresh: bool,
}

impl SessionTimer {
    /// When the timer fires after a refresh: we refresh at half the interval; the
    /// other side's refresh is awaited until the interval less the smaller of 32 s
    /// and a third of it (RFC 4028 §10), then we send BYE.
    fn due(self) -> Duration {
        let interval_ms = u64::from(self.interval) * 1000;
        if self.we_refresh {
            Duration::from_millis(interval_ms / 2)
        } else {
            Duration::from_millis(interval_ms - (interval_ms / 3).min(32_000))
        }
    }

    /// The headers that state it in a message of a transaction of which we are the
    /// UAC (`we_are_uac`) or the UAS; `Require: timer` when `require`.
    fn headers(self, we_are_uac: bool, require: bool) -> Vec<(String, String)> {
        let refresher = if self.we_refresh == we_are_uac {
            Refresher::Uac
        } else {
            Refresher::Uas
        };
        let mut h = vec![(
            "Session-Expires".to_string(),
            format!("{};refresher={}", self.interval, refresher.word()),
        )];
        if require {
            h.push(("Require".to_string(), "timer".to_string()));
        }
        h
    }
}

/// What a session-timer request from the other side (an INVITE, a re-INVITE or an
/// UPDATE, of which we are the UAS) comes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerTerms {
    /// No Session-Expires: no session timer.
    Off,
    /// Below our minimum: answer 422 with `Min-SE` of this many seconds.
    TooSmall(u32),
    /// Agreed; `require`: the other side supports timers (answer `Require: timer`).
    Agreed { timer: SessionTimer, require: bool },
}

/// RFC 4028 §9 for the UAS: the interval asked for, if not below `min`; the refresher
/// the other side named, else the other side (uac) when it supports timers, else us.
fn terms_for_request(ask: &SessionTimerAsk, min: u32) -> TimerTerms {
    let Some(se) = ask.expires else {
        return TimerTerms::Off;
    };
    if se.seconds < min {
        return TimerTerms::TooSmall(min);
    }
    let refresher = match se.refresher {
        // A UAC that does not support timers cannot refresh (RFC 4028 §9).
        Some(r) if ask.supported => r,
        _ if ask.supported => Refresher::Uac,
        _ => Refresher::Uas,
    };
    TimerTerms::Agreed {
        timer: SessionTimer {
            interval: se.seconds,
            we_refresh: refresher == Refresher::Uas,
        },
        require: ask.supported,
    }
}

/// RFC 4028 §7.2 for the UAC: the 2xx to our INVITE (or refresh) sets the interval
/// (never below `min`) and the refresher (us, the uac, when it names none).
fn terms_from_answer(ask: &SessionTimerAsk, min: u32) -> Option<SessionTimer> {
    let se = ask.expires?;
    Some(SessionTimer {
        interval: se.seconds.max(min),
        we_refresh: se.refresher.unwrap_or(Refresher::Uac) == Refresher::Uac,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallDirection {
    Outgoing,
    Incoming,
}

impl CallDirection {
    fn word(self) -> &'static str {
        match self {
            CallDirection::Outgoing => "out",
            CallDirection::Incoming => "in",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallState {
    /// Our INVITE is out, nothing back yet.
    Calling,
    /// 180 received (outgoing) or we sent 180 (incoming).
    Ringing,
    /// 183 with media (outgoing).
    Early,
    /// Answered and not held by us.
    Active,
}

/// Who waits for a call to end: a command's reply, or a `hangupall` batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waiter {
    Reply(ReplyTo),
    Batch(u64),
}

/// A `hangupall`/`hangupcalling` waiting for its calls to end.
pub(crate) struct HangupBatch {
    pub(crate) reply: ReplyTo,
    pub(crate) calls: Vec<CallId>,
    pub(crate) waiting: usize,
}

/// A command waiting for the call (its answer, or a re-INVITE of ours to end).
pub(crate) struct Deferred {
    pub(crate) command: Command,
    pub(crate) reply: Option<ReplyTo>,
    pub(crate) since: Instant,
}

/// A call to place: what the `dial` command, `redial`, `callback`, a call on start
/// and a followed REFER ask for.
pub(crate) struct DialRequest<'a> {
    /// What was dialled, before the dial plan.
    pub(crate) target: &'a str,
    /// The account to call from (`None`: the active one).
    pub(crate) account: Option<u32>,
    /// Put the call in progress on hold first.
    pub(crate) hold_active: bool,
    /// Reply in DDE's numeric form (`0` when the call cannot be placed).
    pub(crate) numeric: bool,
    /// Placed for a REFER received on this call.
    pub(crate) transfer_for: Option<CallId>,
    /// Extra INVITE headers (`Replaces`, for a REFER).
    pub(crate) headers: Vec<(String, String)>,
}

impl<'a> DialRequest<'a> {
    /// A plain call to `target` from `account` that holds the call in progress.
    pub(crate) fn new(target: &'a str, account: Option<u32>) -> DialRequest<'a> {
        DialRequest {
            target,
            account,
            hold_active: true,
            numeric: false,
            transfer_for: None,
            headers: Vec::new(),
        }
    }
}

/// What a call being placed waits for: its media, then the INVITE goes.
pub(crate) struct Placing {
    pub(crate) call: CallId,
    pub(crate) account: Account,
    pub(crate) uri: String,
    pub(crate) hold_active: bool,
    pub(crate) numeric: bool,
    pub(crate) reply: Option<ReplyTo>,
    /// Extra INVITE headers (`Replaces` for a REFER of an attended transfer).
    pub(crate) headers: Vec<(String, String)>,
}

pub(crate) struct Call {
    pub(crate) id: CallId,
    /// The SIP leg carrying it.
    pub(crate) leg: LegId,
    pub(crate) direction: CallDirection,
    pub(crate) account: u32,
    pub(crate) remote: String,
    pub(crate) number: String,
    pub(crate) name: Option<String>,
    pub(crate) state: CallState,
    pub(crate) started: Instant,
    pub(crate) answered: Option<Instant>,
    pub(crate) confirmed: bool,
    pub(crate) codec: Option<&'static str>,
    pub(crate) local_hold: bool,
    pub(crate) remote_hold: bool,
    /// The remote's offer, for an incoming call not answered yet.
    pub(crate) offer: Option<String>,
    /// Our side of the SDP (port, version), once media is open.
    pub(crate) local: Option<LocalMedia>,
    /// Our media address when it is not the account's usual one (a peer of the
    /// other address family).
    pub(crate) media_ip: Option<std::net::IpAddr>,
    pub(crate) negotiated: Option<Negotiated>,
    /// DTMF digits to send once answered (`123,45#`).
    pub(crate) post_dial: Option<String>,
    /// The caller's session-timer terms, for an incoming call not answered yet.
    pub(crate) session_ask: SessionTimerAsk,
    /// The session timer in force, if any.
    pub(crate) session_timer: Option<SessionTimer>,
    /// Bumped at every refresh or change of the session timer: only the timer
    /// armed last may fire.
    pub(crate) session_generation: u64,
    /// Why we ended the call when no command did (`call.ended`'s reason).
    pub(crate) end_reason: Option<String>,
    /// Replies owed when the call ends (hangup).
    pub(crate) end_waiters: Vec<Waiter>,
    /// Commands waiting for the call to be answered.
    pub(crate) deferred: Vec<Deferred>,
    /// The INVITE has not left yet (media opening).
    pub(crate) placing: bool,
    /// We are ending it (hangup sent).
    pub(crate) ending: bool,
    /// `answer` is opening its media.
    pub(crate) answering: bool,
    /// This call was placed for a REFER received on that call.
    pub(crate) transfer_for: Option<CallId>,
    /// Our REFER on this call asks the remote to replace that call of ours
    /// (attended transfer): on success both end.
    pub(crate) attended_with: Option<CallId>,
    /// This incoming call came with `Replaces` naming that call of ours: once it
    /// is confirmed, the old one ends.
    pub(crate) replacing: Option<CallId>,
    /// A re-INVITE of ours is in flight.
    pub(crate) busy_reinvite: bool,
    /// Recording, a file played in, the conference (`recording.rs`).
    pub(crate) extras: CallExtras,
}

impl Call {
    pub(crate) fn new(
        id: CallId,
        leg: LegId,
        direction: CallDirection,
        account: u32,
        started: Instant,
    ) -> Call {
        Call {
            id,
            leg,
            direction,
            account,
            remote: String::new(),
            number: String::new(),
            name: None,
            state: CallState::Calling,
            started,
            answered: None,
            confirmed: false,
            codec: None,
            local_hold: false,
            remote_hold: false,
            offer: None,
            media_ip: None,
            local: None,
            negotiated: None,
            post_dial: None,
            session_ask: SessionTimerAsk::default(),
            session_timer: None,
            session_generation: 0,
            end_reason: None,
            end_waiters: Vec::new(),
            deferred: Vec::new(),
            transfer_for: None,
            attended_with: None,
            replacing: None,
            busy_reinvite: false,
            placing: false,
            ending: false,
            answering: false,
            extras: CallExtras::default(),
        }
    }

    fn is_ringing_in(&self) -> bool {
        self.direction == CallDirection::Incoming && self.answered.is_none()
    }
    fn is_setting_up_out(&self) -> bool {
        self.direction == CallDirection::Outgoing && self.answered.is_none()
    }
    fn state_word(&self) -> &'static str {
        if self.answered.is_some() {
            if self.local_hold || self.remote_hold {
                "held"
            } else {
                "active"
            }
        } else {
            match self.state {
                CallState::Calling => "calling",
                CallState::Ringing => "ringing",
                CallState::Early => "early",
                CallState::Active => "active",
            }
        }
    }
    fn duration_s(&self, now: Instant) -> u64 {
        self.answered
            .map(|a| now.saturating_duration_since(a).as_secs())
            .unwrap_or(0)
    }
    fn view(&self, now: Instant) -> Value {
        json!({
            "id": self.id,
            "direction": self.direction.word(),
            "account": self.account,
            "remote": self.remote,
            "number": self.number,
            "name": self.name,
            "state": self.state_word(),
            "duration": self.duration_s(now),
            "codec": self.codec,
            // G722 16000, opus 48000, PCMU/PCMA 8000 (the ini's audioCodecs rate).
            "codec_rate": self.negotiated.as_ref().map(|n| n.codec.audio_rate()),
            "held_by_us": self.local_hold,
            "held_by_remote": self.remote_hold,
            "post_dial": self.post_dial,
            "recording": self.extras.recording.as_ref().map(|p| p.display().to_string()),
            "playing": self.extras.playing,
            "conference": self.extras.in_conference,
            "session_timer": self.session_timer.map(|t| json!({
                "interval": t.interval,
                "refresher": if t.we_refresh { "local" } else { "remote" },
            })),
        })
    }
}

fn to_audio(spec: Option<&str>) -> Result<AudioSpec, String> {
    AudioSpec::parse(spec.unwrap_or("")).map_err(|e| e.to_string())
}

/// A call's audio device from its ini key: an empty key means the system's default
/// device where this machine has a sound system (a desktop, as in MicroSIP's ini),
/// and no device at all on a headless machine. `true` with it: the device was not
/// named, so a failure to open it falls back to `null` instead of failing the call.
fn call_audio(spec: Option<&str>, sound_system: bool) -> Result<(AudioSpec, bool), String> {
    let named = spec.is_some_and(|s| !s.trim().is_empty());
    if !named && sound_system {
        return Ok((to_audio(Some("default"))?, true));
    }
    Ok((to_audio(spec)?, false))
}

impl Core {
    pub(crate) fn caller_account(&self, account: &Account) -> CallerAccount {
        CallerAccount {
            username: account.username.clone().unwrap_or_default(),
            domain: account.domain.clone(),
            display_name: account.display_name.clone(),
            auth_id: account.auth_id.clone(),
            password: account.password.clone().unwrap_or_default(),
            outbound: account
                .proxy
                .first()
                .cloned()
                .or_else(|| account.server.clone())
                .filter(|s| !s.trim().is_empty()),
            tcp: matches!(account.transport, microsip_config::Transport::Tcp),
            tls: matches!(account.transport, microsip_config::Transport::Tls),
            public_addr: crate::core::contact_public_addr(account, self.sip_public),
            hide_cid: account.hide_cid,
            session_timers: !account.disable_session_timer,
        }
    }

    /// The IP for a call on `account` whose peer's media is at `peer` (an IP
    /// literal of the target or the offer's address, when known): ours, unless
    /// the peer is of the other family and we have an address of that family
    /// (an IPv6-only offer on an IPv4 account is answered over IPv6).
    fn media_ip_for(&self, account: &Account, peer: Option<std::net::IpAddr>) -> std::net::IpAddr {
        let ours = self.media_ip(account);
        match (peer, self.other_family_ip) {
            (Some(peer), Some(other))
                if peer.is_ipv6() != ours.is_ipv6() && other.is_ipv6() == peer.is_ipv6() =>
            {
                other
            }
            _ => ours,
        }
    }

    /// The address we put in SDP for a call on `account` whose RTP socket is
    /// `opened`: `publicAddr` (with the local port: the router forwards it), else
    /// the public address STUN learned for that socket, else `local_ip`.
    fn media_addr(
        &self,
        account: &Account,
        opened: OpenedMedia,
        local_ip: std::net::IpAddr,
    ) -> (std::net::IpAddr, u16) {
        let configured = account
            .public_addr
            .as_deref()
            .and_then(crate::core::host_ip);
        match (configured, opened.public) {
            (Some(ip), _) => (ip, opened.port),
            (None, Some(public)) => (public.ip(), public.port()),
            (None, None) => (local_ip, opened.port),
        }
    }

    /// The IP we put in SDP for a call on `account`.
    fn media_ip(&self, account: &Account) -> std::net::IpAddr {
        if let Some(ip) = account
            .public_addr
            .as_deref()
            .and_then(crate::core::host_ip)
        {
            return ip;
        }
        if !self.bind_ip.is_unspecified() {
            return self.bind_ip;
        }
        self.media_ips
            .get(&account.number)
            .copied()
            .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]))
    }

    /// The account's SRTP for a call: off, or SDES optional or mandatory with a
    /// fresh random key (`key: false`: a placeholder key, for checks whose SDP is not
    /// sent). Fails for `SRTP=dtls` (not supported) or when no random key can be had.
    fn local_srtp(account: &Account, key: bool) -> Result<Option<LocalSrtp>, String> {
        let mandatory = match account.srtp {
            Srtp::Disabled => return Ok(None),
            Srtp::Optional => false,
            Srtp::Mandatory | Srtp::DtlsSdes => true,
            Srtp::Dtls => return Err(DTLS_NOT_SUPPORTED.to_string()),
        };
        let key = if key {
            MasterKey::random().map_err(|e| format!("no SRTP key: {e}"))?
        } else {
            MasterKey::from_bytes([0; microsip_media::srtp::MASTER_LEN])
        };
        Ok(Some(LocalSrtp { mandatory, key }))
    }

    /// Why an incoming offer is refused (488) on SRTP grounds before the call rings:
    /// `SRTP=dtls`, mandatory SRTP without a usable key in the offer, or an
    /// `RTP/SAVP` offer to an account without SRTP.
    fn srtp_refusal(&self, account: &Account, offer: Option<&str>) -> Option<String> {
        let srtp = match Self::local_srtp(account, false) {
            Ok(s) => s,
            Err(e) => return Some(e),
        };
        let offer = sdp::parse(offer?).ok()?;
        let check = LocalMedia {
            ip: std::net::IpAddr::from([127, 0, 0, 1]),
            port: 9,
            codecs: sdp::Codec::all().collect(),
            telephone_event: false,
            direction: Direction::SendRecv,
            session_id: 0,
            version: 0,
            opus_stereo: false,
            prefer_own_order: false,
            offer_first_only: false,
            srtp,
            ice: None,
        };
        match sdp::answer(&offer, &check) {
            Err(e @ (SdpError::SrtpRequired | SdpError::SrtpNotEnabled)) => Some(e.to_string()),
            _ => None,
        }
    }

    fn local_media(
        &mut self,
        account: &Account,
        opened: OpenedMedia,
        local_ip: std::net::IpAddr,
    ) -> Result<LocalMedia, String> {
        let srtp = Self::local_srtp(account, true)?;
        let ice = account.ice.then(|| self.local_ice(opened, local_ip));
        let (ip, port) = self.media_addr(account, opened, local_ip);
        let session_id = self.random();
        let mut codecs: Vec<sdp::Codec> = self
            .config
            .settings
            .audio_codecs
            .iter()
            .filter_map(|c| {
                sdp::Codec::from_ini_name(&format!("{}/{}/{}", c.name, c.clock_rate, c.channels))
            })
            .collect();
        if codecs.is_empty() {
            codecs = vec![sdp::Codec::Pcma, sdp::Codec::Pcmu];
        }
        Ok(LocalMedia {
            ip,
            port,
            codecs,
            telephone_event: true,
            direction: Direction::SendRecv,
            session_id,
            version: 1,
            opus_stereo: self.config.settings.opus_stereo,
            // forceCodec: answers take our first codec the offer has, not the
            // offerer's first.
            prefer_own_order: self.config.settings.force_codec,
            // and offers carry only the first codec ("send only the first codec").
            offer_first_only: self.config.settings.force_codec,
            srtp,
            ice,
        })
    }

    /// The call's ICE (the account's `ICE=1`): fresh credentials and tie-breaker,
    /// the RTP socket's host candidate on `local_ip`, and its server-reflexive one
    /// when STUN answered; the same for the RTCP socket as component 2 (used only
    /// with a peer that does not take the `a=rtcp-mux` we offer).
    fn local_ice(&mut self, opened: OpenedMedia, local_ip: std::net::IpAddr) -> LocalIce {
        let host = std::net::SocketAddr::new(local_ip, opened.port);
        let mut candidates = vec![Candidate::host(1, host)];
        if let Some(public) = opened.public.filter(|p| *p != host) {
            candidates.push(Candidate::server_reflexive(1, public, host));
        }
        // RTCP as component 2, for a peer that does not multiplex it.
        if let Some(port) = opened.rtcp_port {
            let host = std::net::SocketAddr::new(local_ip, port);
            candidates.push(Candidate::host(2, host));
            if let Some(public) = opened.rtcp_public.filter(|p| *p != host) {
                candidates.push(Candidate::server_reflexive(2, public, host));
            }
        }
        // The password guards the checks: from the secure source, as SRTP keys.
        let mut words = [self.random(), self.random(), self.random(), self.random()];
        let mut bytes = [0u8; 32];
        if microsip_media::srtp::secure_random(&mut bytes).is_ok() {
            for (w, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
                let mut b = [0u8; 8];
                b.copy_from_slice(chunk);
                *w = u64::from_le_bytes(b);
            }
        }
        LocalIce {
            credentials: Credentials::from_random(words),
            candidates,
            tie_breaker: self.random(),
        }
    }

    /// Opens the call's media on `bind` (`None`: the engine's address); `then`
    /// goes on with its RTP port.
    fn open_media(
        &mut self,
        id: CallId,
        bind: Option<std::net::IpAddr>,
        then: Then,
    ) -> Result<(), Reply> {
        let sound = self.sound_system;
        let (source, fallback_source) =
            call_audio(self.config.settings.audio_input_device.as_deref(), sound)
                .map_err(|e| fail(ErrorCode::BadArgument, format!("audioInputDevice: {e}")))?;
        let (sink, fallback_sink) =
            call_audio(self.config.settings.audio_output_device.as_deref(), sound)
                .map_err(|e| fail(ErrorCode::BadArgument, format!("audioOutputDevice: {e}")))?;
        self.media_then(
            MediaAction::Open {
                call: id,
                source,
                sink,
                fallback_source,
                fallback_sink,
                bind: bind.or(self.media_bind),
            },
            Some(then),
        );
        Ok(())
    }

    /// Whether an incoming call waits for an answer (the ring tone plays).
    pub(crate) fn any_ringing_in(&self) -> bool {
        self.calls
            .values()
            .any(|c| c.is_ringing_in() && c.state == CallState::Ringing)
    }

    /// The call a command without an id means: the active call, else the only one.
    fn default_call(&self) -> Option<CallId> {
        self.active_call().or_else(|| {
            if self.calls.len() == 1 {
                self.calls.keys().next().copied()
            } else {
                None
            }
        })
    }

    /// The call in conversation: the newest answered call we do not hold.
    pub(crate) fn active_call(&self) -> Option<CallId> {
        self.calls
            .values()
            .filter(|c| c.answered.is_some() && !c.local_hold)
            .max_by_key(|c| c.answered)
            .map(|c| c.id)
            .or_else(|| {
                self.calls
                    .values()
                    .filter(|c| c.answered.is_some())
                    .max_by_key(|c| c.answered)
                    .map(|c| c.id)
            })
    }

    pub(crate) fn find(&self, id: Option<CallId>) -> Result<CallId, Reply> {
        match id {
            Some(id) if self.calls.contains_key(&id) => Ok(id),
            Some(id) => Err(fail(
                ErrorCode::NoSuchCall,
                format!("there is no call {id}"),
            )),
            None => self
                .default_call()
                .ok_or_else(|| fail(ErrorCode::NoCall, "there is no call")),
        }
    }

    pub(crate) fn status(&self, form: StatusForm) -> Reply {
        let (code, word) = self.status_code();
        match form {
            StatusForm::Numeric => ok_with(code.to_string(), json!({ "status": code })),
            StatusForm::Word => ok_with(
                format!("{code} {word}"),
                json!({
                    "status": code,
                    "state": word,
                    "accounts": self.account_views(),
                    "calls": self.call_views(),
                }),
            ),
        }
    }

    fn status_code(&self) -> (u8, &'static str) {
        let calls: Vec<&Call> = self.calls.values().collect();
        if calls.iter().any(|c| c.is_ringing_in()) {
            return (1, "ringing");
        }
        if calls
            .iter()
            .any(|c| c.answered.is_some() && !c.local_hold && !c.remote_hold)
        {
            return (2, "active");
        }
        if calls.iter().any(|c| c.answered.is_some()) {
            return (3, "hold");
        }
        if calls.iter().any(|c| c.is_setting_up_out()) {
            return (1, "calling");
        }
        let window = Duration::from_millis(u64::from(self.config.settings.status_disconnected_ms));
        let now = self.now.mono;
        if self
            .last_ended
            .is_some_and(|t| now.saturating_duration_since(t) < window)
        {
            return (4, "disconnected");
        }
        (0, "idle")
    }

    pub(crate) fn call_views(&self) -> Vec<Value> {
        let now = self.now.mono;
        self.calls
            .values()
            .map(|c| {
                let mut view = c.view(now);
                if let (Some(q), Value::Object(map)) = (self.call_quality(c.id), &mut view) {
                    if let Ok(Value::Object(fields)) = serde_json::to_value(q) {
                        map.extend(fields);
                    }
                }
                view
            })
            .collect()
    }

    /// The quality numbers of a call with media.
    fn call_quality(&self, id: CallId) -> Option<CallQuality> {
        self.media_stats(id).map(|s| CallQuality::from_media(&s))
    }

    pub(crate) fn list_calls(&self) -> Reply {
        let text: Vec<String> = self
            .calls
            .values()
            .map(|c| {
                let mut line = format!(
                    "{} {} {} {} {} {}s {}",
                    c.id,
                    c.direction.word(),
                    c.account,
                    c.remote,
                    c.state_word(),
                    c.duration_s(self.now.mono),
                    c.codec.unwrap_or("-")
                );
                if let Some(q) = self.call_quality(c.id) {
                    line.push(' ');
                    line.push_str(&q.plain());
                }
                line
            })
            .collect();
        ok_with(text.join("; "), Value::Array(self.call_views()))
    }

    pub(crate) fn active_remote(&self) -> Reply {
        match self.active_call().and_then(|id| self.calls.get(&id)) {
            Some(c) => ok_with(
                c.remote.clone(),
                json!({ "call": c.id, "remote": c.remote }),
            ),
            None => ok_with("", json!({ "call": null })),
        }
    }

    // ------------------------------------------------------------------ dial

    /// `dial`: the call gets its id and media now, the INVITE goes once the media
    /// is open, and the reply (the call id) comes then.
    pub(crate) fn dial(&mut self, request: DialRequest<'_>, reply: Option<ReplyTo>) {
        let (target, numeric, transfer_for) =
            (request.target, request.numeric, request.transfer_for);
        if let Err(e) = self.place_call(request, reply) {
            if let Some(origin) = transfer_for {
                self.refer_failed(origin, target, &e);
            }
            self.dial_failed(numeric, reply, e);
        }
    }

    fn dial_failed(&mut self, numeric: bool, reply: Option<ReplyTo>, e: Reply) {
        if numeric {
            self.reply(reply, ok_with("0", json!({ "call": null })));
        } else {
            self.reply(reply, e);
        }
    }

    fn place_call(
        &mut self,
        request: DialRequest<'_>,
        reply: Option<ReplyTo>,
    ) -> Result<(), Reply> {
        let DialRequest {
            target,
            account,
            hold_active,
            numeric,
            transfer_for,
            headers,
        } = request;
        let number = account.unwrap_or(self.active_account);
        let account = match self.accounts.get(&number) {
            Some(slot) if slot.account.active => slot.account.clone(),
            Some(slot) => {
                return Err(fail(
                    ErrorCode::NoAccount,
                    format!(
                        "account {number} cannot place calls: {}",
                        slot.account
                            .inactive_reason
                            .clone()
                            .unwrap_or_else(|| "inactive".into())
                    ),
                ))
            }
            None => {
                return Err(fail(
                    ErrorCode::NoAccount,
                    format!("there is no account {number} to call from"),
                ))
            }
        };
        if let Some(max) = self.config.settings.max_concurrent_calls.filter(|m| *m > 0) {
            if self.calls.len() >= max as usize {
                return Err(fail(
                    ErrorCode::Busy,
                    format!("already {} calls (maxConcurrentCalls)", self.calls.len()),
                ));
            }
        }
        if number == 0 && !is_direct_address(target) {
            return Err(fail(
                ErrorCode::NoAccount,
                format!(
                    "no account to call {target} from: configure an account, or give a \
                     full address (sip:user@host or an IP address)"
                ),
            ));
        }
        let dialled = dialplan::normalize_target(target, &account).map_err(|e| {
            let code = match e {
                dialplan::DialError::NoDialPlanMatch { .. }
                | dialplan::DialError::BadDialPlan { .. } => ErrorCode::DialPlan,
                _ => ErrorCode::BadArgument,
            };
            fail(code, e.to_string())
        })?;
        microsip_sip::call::check_target(&dialled.uri)
            .map_err(|e| fail(ErrorCode::BadArgument, e.to_string()))?;
        let id = self.new_call_id();
        // A target given as an IP literal of the other family is called from an
        // address of that family.
        let (_, target_host) = microsip_sip::call::user_and_domain(&dialled.uri);
        let bind = {
            let ip = self.media_ip_for(&account, crate::core::host_ip(&target_host));
            (ip != self.media_ip(&account)).then_some(ip)
        };
        self.open_media(
            id,
            bind,
            Then::Dial(Box::new(Placing {
                call: id,
                account: account.clone(),
                uri: dialled.uri.clone(),
                hold_active,
                numeric,
                reply,
                headers,
            })),
        )?;
        let (user, _) = microsip_sip::call::user_and_domain(&dialled.uri);
        let mut call = Call::new(id, id, CallDirection::Outgoing, number, self.now.mono);
        call.remote = dialled.uri.clone();
        call.number = user;
        call.state = CallState::Calling;
        call.post_dial = dialled.post_dial.clone();
        call.transfer_for = transfer_for;
        call.placing = true;
        call.media_ip = bind;
        self.calls.insert(id, call);
        self.legs.insert(id, id);
        Ok(())
    }

    /// The media of a call being placed is open (or could not be): the INVITE goes,
    /// the command gets its reply, and `call.outgoing` is published.
    pub(crate) fn on_dial_media(
        &mut self,
        placing: Placing,
        port: Result<OpenedMedia, MediaFailure>,
    ) {
        let Placing {
            call: id,
            account,
            uri,
            hold_active,
            numeric,
            reply,
            headers,
        } = placing;
        let transfer_for = self.calls.get(&id).and_then(|c| c.transfer_for);
        let port = match port {
            Ok(port) if self.calls.get(&id).is_some_and(|c| !c.ending) => port,
            Ok(_) => {
                // Hung up before the INVITE left.
                self.media(MediaAction::Close { call: id });
                self.forget_call(id);
                self.dial_failed(
                    numeric,
                    reply,
                    fail(ErrorCode::NoSuchCall, format!("call {id} was hung up")),
                );
                return;
            }
            Err(e) => {
                self.forget_call(id);
                let e = fail(
                    ErrorCode::Media,
                    format!("cannot open media: {}", e.message),
                );
                if let Some(origin) = transfer_for {
                    self.refer_failed(origin, &uri, &e);
                }
                self.dial_failed(numeric, reply, e);
                return;
            }
        };
        let ip = self
            .calls
            .get(&id)
            .and_then(|c| c.media_ip)
            .unwrap_or_else(|| self.media_ip(&account));
        let local = match self.local_media(&account, port, ip) {
            Ok(local) => local,
            Err(why) => {
                self.media(MediaAction::Close { call: id });
                self.forget_call(id);
                let e = fail(ErrorCode::Media, format!("call not placed: {why}"));
                if let Some(origin) = transfer_for {
                    self.refer_failed(origin, &uri, &e);
                }
                self.dial_failed(numeric, reply, e);
                return;
            }
        };
        let offer = sdp::offer(&local);
        let caller = self.caller_account(&account);
        self.sip(SipAction::Dial {
            leg: id,
            caller,
            target: uri.clone(),
            offer,
            headers,
        });
        if hold_active {
            if let Some(active) = self.active_call().filter(|a| *a != id) {
                if self.calls.get(&active).is_some_and(|c| !c.local_hold) {
                    self.start_hold(active, true, None);
                }
            }
        }
        let number = account.number;
        let dialled_number = match self.calls.get_mut(&id) {
            Some(c) => {
                c.local = Some(local);
                c.placing = false;
                c.number.clone()
            }
            None => return,
        };
        info!("call {id}: calling {uri}");
        self.publish(EventKind::CallOutgoing {
            call: id,
            account: number,
            remote: uri,
            number: dialled_number,
        });
        if let Some(origin) = transfer_for {
            info!("call {origin}: transferred by the remote (call {id})");
            if let Some(leg) = self.calls.get(&origin).map(|c| c.leg) {
                self.sip(SipAction::NotifyRefer {
                    leg,
                    code: 100,
                    reason: "Trying".into(),
                    done: false,
                });
            }
        }
        let answer = if numeric {
            ok_with("1", json!({ "call": id }))
        } else {
            ok_with(id.to_string(), json!({ "call": id }))
        };
        self.reply(reply, answer);
    }

    /// A call the remote asked for with REFER could not be placed: tell it.
    fn refer_failed(&mut self, origin: CallId, target: &str, e: &Reply) {
        let text = match e {
            Err(f) => f.message.clone(),
            Ok(_) => "failed".into(),
        };
        warn!("call {origin}: transfer to {target} failed: {text}");
        if let Some(leg) = self.calls.get(&origin).map(|c| c.leg) {
            self.sip(SipAction::NotifyRefer {
                leg,
                code: 503,
                reason: "Service Unavailable".into(),
                done: true,
            });
        }
    }

    /// Removes a call that never got going (no event was published for it); whoever
    /// waited for it is answered.
    fn forget_call(&mut self, id: CallId) {
        self.timers.cancel(|t| t.call() == Some(id));
        let Some(c) = self.calls.remove(&id) else {
            return;
        };
        self.legs.remove(&c.leg);
        for w in c.end_waiters {
            self.call_gone_for(
                w,
                ok_with(format!("call {id} ended"), json!({ "call": id })),
            );
        }
        for d in c.deferred {
            self.reply(
                d.reply,
                fail(ErrorCode::NoSuchCall, format!("call {id} ended")),
            );
        }
    }

    // ---------------------------------------------------------- incoming

    fn on_incoming(&mut self, leg: LegId, invite: IncomingInvite) {
        let number = self.account_for(&invite.to_user);
        let Some(account) = self.accounts.get(&number).map(|s| s.account.clone()) else {
            self.sip(SipAction::Reject {
                leg,
                code: 404,
                headers: Vec::new(),
            });
            return;
        };
        let replaced = match invite.replaces.clone() {
            None => None,
            Some(named) => match self.call_to_replace(named) {
                Ok(old) => Some(old),
                Err((code, why)) => {
                    info!("incoming INVITE with Replaces refused with {code}: {why}");
                    self.sip(SipAction::Reject {
                        leg,
                        code,
                        headers: Vec::new(),
                    });
                    return;
                }
            },
        };
        let id = self.new_call_id();
        let facts = IncomingFacts {
            from_user: invite.remote_user.clone(),
            from_domain: invite.remote_domain.clone(),
            to_user: invite.to_user.clone(),
            to_domain: invite.to_domain.clone(),
            display_name: invite.display_name.clone(),
            x_autoanswer: invite
                .x_autoanswer
                .as_deref()
                .is_some_and(policy::x_autoanswer_is_true),
            call_info_answer_after: invite
                .call_info
                .as_deref()
                .and_then(policy::parse_answer_after),
            active_calls: self.calls.len(),
            calls_on_hold_only: !self.calls.is_empty()
                && self.calls.values().all(|c| c.local_hold || c.remote_hold),
            account_domain: account.domain.clone(),
            account_users: self
                .accounts
                .values()
                .filter_map(|s| s.account.username.clone())
                .collect(),
        };
        let mut call = Call::new(id, leg, CallDirection::Incoming, number, self.now.mono);
        call.remote = invite.remote.clone();
        call.number = invite.remote_user.clone();
        call.name = invite.display_name.clone();
        call.state = CallState::Ringing;
        call.offer = invite.sdp.clone();
        if !account.disable_session_timer {
            call.session_ask = invite.session_timer;
        }
        self.calls.insert(id, call);
        self.legs.insert(leg, id);
        self.publish(EventKind::CallIncoming {
            call: id,
            account: number,
            remote: invite.remote.clone(),
            number: invite.remote_user.clone(),
            name: invite.display_name.clone(),
            diversion: invite.diversion.clone(),
        });
        let min = self.config.settings.session_timer_min;
        if let Some(TimerTerms::TooSmall(min)) = self
            .calls
            .get(&id)
            .map(|c| terms_for_request(&c.session_ask, min))
        {
            info!("call {id}: Session-Expires below our minimum: 422 (Min-SE {min})");
            let headers = vec![("Min-SE".to_string(), min.to_string())];
            self.sip(SipAction::Reject {
                leg,
                code: 422,
                headers,
            });
            return;
        }
        if let Some(why) = self.srtp_refusal(&account, invite.sdp.as_deref()) {
            info!("call {id}: refused with 488 ({why})");
            if let Some(c) = self.calls.get_mut(&id) {
                c.end_reason = Some(why);
            }
            self.sip(SipAction::Reject {
                leg,
                code: 488,
                headers: Vec::new(),
            });
            return;
        }
        if let Some(old) = replaced {
            // RFC 3891 §3: the new call takes the old one's place at once, no
            // ringing; the old one ends once the new one is confirmed.
            info!("call {id}: replaces call {old}; answering it at once");
            if let Some(c) = self.calls.get_mut(&id) {
                c.replacing = Some(old);
            }
            self.answer(Some(id), None);
            return;
        }
        match policy::decide(&self.config.settings, &account, &facts) {
            Decision::Reject {
                code,
                reason,
                header,
            } => {
                info!("call {id}: refused with {code} ({reason})");
                self.sip(SipAction::Reject {
                    leg,
                    code,
                    headers: header.into_iter().collect(),
                });
            }
            Decision::Forward { target, delay_s } => {
                if delay_s == 0 {
                    self.forward(id, &target);
                } else {
                    self.sip(SipAction::Ringing { leg });
                    self.publish(EventKind::CallRinging { call: id });
                    self.set_timer(
                        Duration::from_secs(u64::from(delay_s)),
                        Timer::Forward { call: id, target },
                    );
                }
            }
            Decision::Ring { auto_answer_after } => {
                self.sip(SipAction::Ringing { leg });
                self.publish(EventKind::CallRinging { call: id });
                if let Some(delay) = auto_answer_after {
                    self.set_timer(delay, Timer::AutoAnswer { call: id });
                }
            }
        }
    }

    /// The call an incoming INVITE's `Replaces` names (RFC 3891 §3), or the code to
    /// refuse it with: 400 unreadable, 481 no such dialog (or an early one we did
    /// not start), 486 `early-only` for a confirmed one, 603 one that is ending.
    fn call_to_replace(&self, named: microsip_sip::ReplacesMatch) -> Result<CallId, (u16, String)> {
        use microsip_sip::ReplacesMatch;
        match named {
            ReplacesMatch::Malformed(why) => Err((400, why)),
            ReplacesMatch::NoDialog => Err((481, "no dialog of ours matches".into())),
            ReplacesMatch::Leg {
                leg,
                confirmed,
                we_initiated,
                early_only,
            } => {
                let Some(call) = self.legs.get(&leg).and_then(|id| self.calls.get(id)) else {
                    return Err((481, "the dialog named has ended".into()));
                };
                if call.ending {
                    Err((603, format!("call {} is ending", call.id)))
                } else if confirmed && early_only {
                    Err((486, format!("call {} is confirmed (early-only)", call.id)))
                } else if !confirmed && !we_initiated {
                    Err((
                        481,
                        format!("call {} is an early dialog we did not start", call.id),
                    ))
                } else {
                    Ok(call.id)
                }
            }
        }
    }

    /// The call `new` that came with Replaces is confirmed: `old` ends (BYE, or
    /// CANCEL while it was still ringing out).
    fn replace_call(&mut self, old: CallId, new: CallId) {
        if !self.calls.contains_key(&old) {
            return;
        }
        let target = self
            .calls
            .get(&new)
            .map(|c| c.remote.clone())
            .unwrap_or_default();
        info!("call {old}: replaced by call {new}");
        self.publish(EventKind::CallTransfer {
            call: old,
            code: 200,
            reason: "Replaced".into(),
            target,
            kind: "replaced",
            with: Some(new),
        });
        if let Some(c) = self.calls.get_mut(&old) {
            c.end_reason = Some(format!("Replaced by call {new}"));
        }
        self.end_call(old, None);
    }

    /// Which account an incoming call is for: the one whose user is called, else
    /// the active account.
    fn account_for(&self, to_user: &str) -> u32 {
        self.accounts
            .values()
            .find(|s| {
                s.account.active
                    && s.account.username.as_deref() == Some(to_user)
                    && s.account.server.is_some()
            })
            .map(|s| s.account.number)
            .unwrap_or(self.active_account)
    }

    fn forward(&mut self, id: CallId, target: &str) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        let leg = call.leg;
        let Some(account) = self.accounts.get(&call.account).map(|s| s.account.clone()) else {
            return;
        };
        let uri = match dialplan::normalize_target(target, &account) {
            Ok(t) => t.uri,
            Err(e) => {
                warn!("forwarding target {target}: {e}; rejecting with 480");
                self.sip(SipAction::Reject {
                    leg,
                    code: 480,
                    headers: Vec::new(),
                });
                return;
            }
        };
        let ours = format!(
            "<sip:{}@{}>;reason=unconditional",
            account.username.clone().unwrap_or_default(),
            account.domain
        );
        let headers = vec![
            ("Contact".to_string(), format!("<{uri}>")),
            ("Diversion".to_string(), ours),
        ];
        info!("call {id}: forwarded to {uri}");
        self.sip(SipAction::Reject {
            leg,
            code: 302,
            headers,
        });
    }

    // -------------------------------------------------------------- DTMF

    /// Sends DTMF on a confirmed call by the configured method (RFC 4733 or in-band
    /// through the media, or SIP INFO). Replies once the digits are queued.
    pub(crate) fn dtmf(&mut self, digits: &str, id: Option<CallId>) -> Reply {
        let id = match id {
            Some(id) => match self.calls.get(&id) {
                Some(c) if c.confirmed => id,
                Some(_) => {
                    return fail(
                        ErrorCode::NoCall,
                        format!("call {id} is not confirmed: no DTMF yet"),
                    )
                }
                None => return fail(ErrorCode::NoSuchCall, format!("there is no call {id}")),
            },
            None => match self
                .active_call()
                .filter(|id| self.calls.get(id).is_some_and(|c| c.confirmed))
            {
                Some(id) => id,
                None => return fail(ErrorCode::NoCall, "no confirmed call for DTMF"),
            },
        };
        if let Err(e) = microsip_media::dtmf::parse_digits(digits) {
            return fail(ErrorCode::BadArgument, e.to_string());
        }
        let Some(leg) = self.calls.get(&id).map(|c| c.leg) else {
            return fail(ErrorCode::NoSuchCall, format!("there is no call {id}"));
        };
        if self.config.settings.dtmf_method == microsip_config::DtmfMethod::SipInfo {
            self.sip(SipAction::InfoDigits {
                leg,
                digits: digits.to_string(),
            });
        } else {
            self.media(MediaAction::SendDtmf {
                call: id,
                digits: digits.to_string(),
            });
        }
        ok_with(
            format!("call {id}: sending {digits}"),
            json!({ "call": id, "digits": digits }),
        )
    }

    pub(crate) fn on_media_event(&mut self, event: microsip_media::MediaEvent) {
        match event {
            microsip_media::MediaEvent::Dtmf {
                call,
                digit,
                inband,
            } => {
                if self.calls.contains_key(&call) {
                    self.publish(EventKind::CallDtmf {
                        call,
                        digit: digit.to_string(),
                        method: if inband { "inband" } else { "rfc4733" },
                    });
                }
            }
            microsip_media::MediaEvent::PlaybackEnded { call, hangup } => {
                self.on_playback_ended(call, hangup)
            }
            microsip_media::MediaEvent::RecordingFailed { call, path, error } => {
                self.on_recording_failed(call, path, error)
            }
            microsip_media::MediaEvent::StreamStarted { call, info } => {
                if self.calls.contains_key(&call) {
                    self.publish(media_event(call, "started", &info, None));
                }
            }
            microsip_media::MediaEvent::StreamStopped { call, info, reason } => {
                self.publish(media_event(call, "stopped", &info, Some(reason)));
            }
            microsip_media::MediaEvent::Quality { call, .. } => {
                if self.calls.contains_key(&call) {
                    if let Some(quality) = self.call_quality(call) {
                        self.publish(EventKind::CallQuality { call, quality });
                    }
                }
            }
        }
    }

    // ------------------------------------------------------------ answer

    /// `answer`: opens the call's media, then sends 200 with our SDP and replies.
    pub(crate) fn answer(&mut self, id: Option<CallId>, reply: Option<ReplyTo>) {
        let id = match id {
            Some(id) => match self.calls.get(&id) {
                Some(c) if c.is_ringing_in() && !c.answering => id,
                Some(c) if c.is_ringing_in() => {
                    return self.reply(
                        reply,
                        fail(
                            ErrorCode::WrongState,
                            format!("call {id} is being answered"),
                        ),
                    )
                }
                Some(_) => {
                    return self.reply(
                        reply,
                        fail(ErrorCode::WrongState, format!("call {id} is not ringing")),
                    )
                }
                None => {
                    return self.reply(
                        reply,
                        fail(ErrorCode::NoSuchCall, format!("there is no call {id}")),
                    )
                }
            },
            None => match self
                .calls
                .values()
                .filter(|c| c.is_ringing_in() && !c.answering)
                .min_by_key(|c| (c.started, c.id))
            {
                Some(c) => c.id,
                None => return self.reply(reply, fail(ErrorCode::NoCall, "no call is ringing")),
            },
        };
        // An offer of the other address family is answered from an address of
        // that family, on a socket of that family.
        let offered = self
            .calls
            .get(&id)
            .and_then(|c| c.offer.as_deref())
            .and_then(|o| sdp::parse(o).ok())
            .and_then(|o| o.audio_connection());
        let account = self
            .calls
            .get(&id)
            .and_then(|c| self.accounts.get(&c.account))
            .map(|s| s.account.clone());
        let bind = account.and_then(|a| {
            let ip = self.media_ip_for(&a, offered);
            (ip != self.media_ip(&a)).then_some(ip)
        });
        if let Some(c) = self.calls.get_mut(&id) {
            c.answering = true;
            c.media_ip = bind;
        }
        if let Err(e) = self.open_media(id, bind, Then::Answer { call: id, reply }) {
            if let Some(c) = self.calls.get_mut(&id) {
                c.answering = false;
            }
            self.reply(reply, e);
        }
    }

    /// The media of a call being answered is open (or could not be).
    pub(crate) fn on_answer_media(
        &mut self,
        id: CallId,
        port: Result<OpenedMedia, MediaFailure>,
        reply: Option<ReplyTo>,
    ) {
        let answer = self.finish_answer(id, port);
        if let Some(c) = self.calls.get_mut(&id) {
            c.answering = false;
        }
        self.reply(reply, answer);
    }

    /// A call being answered that cannot be (no usable SRTP, no common codec): its
    /// media closed, 488 to the caller; the refusal is the command's reply.
    fn refuse_answer_488(
        &mut self,
        id: CallId,
        leg: u64,
        code: ErrorCode,
        why: impl std::fmt::Display,
    ) -> Reply {
        self.media(MediaAction::Close { call: id });
        self.sip(SipAction::Reject {
            leg,
            code: 488,
            headers: Vec::new(),
        });
        fail(code, format!("call {id} refused with 488: {why}"))
    }

    fn finish_answer(&mut self, id: CallId, port: Result<OpenedMedia, MediaFailure>) -> Reply {
        let Some(call) = self.calls.get(&id).filter(|c| c.is_ringing_in()) else {
            if port.is_ok() {
                self.media(MediaAction::Close { call: id });
            }
            return fail(ErrorCode::NoSuchCall, format!("call {id} has ended"));
        };
        let port = match port {
            Ok(p) => p,
            Err(e) => {
                return fail(
                    ErrorCode::Media,
                    format!("cannot open media: {}", e.message),
                )
            }
        };
        let leg = call.leg;
        let Some(account) = self.accounts.get(&call.account).map(|s| s.account.clone()) else {
            self.media(MediaAction::Close { call: id });
            return fail(ErrorCode::NoAccount, "the call's account is gone");
        };
        let offer_text = call.offer.clone();
        let session_terms =
            terms_for_request(&call.session_ask, self.config.settings.session_timer_min);
        let ip = call.media_ip.unwrap_or_else(|| self.media_ip(&account));
        let local = match self.local_media(&account, port, ip) {
            Ok(local) => local,
            Err(why) => return self.refuse_answer_488(id, leg, ErrorCode::Media, why),
        };
        let (answer_sdp, negotiated) = match offer_text.as_deref().map(sdp::parse) {
            Some(Ok(offer)) => match sdp::answer(&offer, &local) {
                Ok(x) => (x.0, Some(x.1)),
                Err(e) => return self.refuse_answer_488(id, leg, ErrorCode::NoCommonCodec, e),
            },
            Some(Err(e)) => {
                self.media(MediaAction::Close { call: id });
                self.sip(SipAction::Reject {
                    leg,
                    code: 400,
                    headers: Vec::new(),
                });
                return fail(
                    ErrorCode::BadArgument,
                    format!("call {id}: unreadable SDP offer: {e}"),
                );
            }
            // No offer: ours goes in the 200 and the peer's media is learnt from
            // its RTP (symmetric RTP).
            None => (sdp::offer(&local), None),
        };
        let (extra, session_timer) = match session_terms {
            TimerTerms::Agreed { timer, require } => (timer.headers(false, require), Some(timer)),
            TimerTerms::Off | TimerTerms::TooSmall(_) => (Vec::new(), None),
        };
        self.sip(SipAction::Answer {
            leg,
            sdp: answer_sdp,
            headers: extra,
            session_timers: !account.disable_session_timer,
        });
        if let Some(n) = &negotiated {
            self.media(MediaAction::Configure {
                call: id,
                negotiated: Box::new(n.clone()),
            });
        }
        let now = self.now.mono;
        if let Some(call) = self.calls.get_mut(&id) {
            call.codec = negotiated.as_ref().map(|n| n.codec.name());
            call.negotiated = negotiated;
            call.local = Some(local);
            call.answered = Some(now);
            call.state = CallState::Active;
            call.offer = None;
            call.session_timer = session_timer;
        }
        self.arm_session_timer(id);
        self.after_answer(id);
        self.publish(EventKind::CallAnswered {
            call: id,
            code: 200,
        });
        ok_with(format!("answered call {id}"), json!({ "call": id }))
    }

    /// Timers that start when a call is answered.
    fn after_answer(&mut self, id: CallId) {
        let secs = self.config.settings.auto_hang_up_time;
        if secs > 0 {
            self.set_timer(
                Duration::from_secs(u64::from(secs)),
                Timer::AutoHangup { call: id },
            );
        }
    }

    pub(crate) fn reject(&mut self, id: Option<CallId>, code: Option<u16>) -> Reply {
        let code = code.unwrap_or(486);
        let ids: Vec<CallId> = match id {
            Some(id) => match self.calls.get(&id) {
                Some(c) if c.is_ringing_in() => vec![id],
                Some(_) => return fail(ErrorCode::WrongState, format!("call {id} is not ringing")),
                None => return fail(ErrorCode::NoSuchCall, format!("there is no call {id}")),
            },
            None => self
                .calls
                .values()
                .filter(|c| c.is_ringing_in())
                .map(|c| c.id)
                .collect(),
        };
        if ids.is_empty() {
            return fail(ErrorCode::NoCall, "no call is ringing");
        }
        for id in &ids {
            if let Some(leg) = self.calls.get(id).map(|c| c.leg) {
                self.sip(SipAction::Reject {
                    leg,
                    code,
                    headers: Vec::new(),
                });
            }
        }
        let list: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        ok_with(
            format!("rejected call {} with {code}", list.join(", ")),
            json!({ "calls": ids, "code": code }),
        )
    }

    // ----------------------------------------------------------- hang up

    /// Ends one call; the reply goes out once the call has ended.
    pub(crate) fn hangup(&mut self, id: Option<CallId>, reply: ReplyTo) {
        match self.find(id) {
            Ok(id) => self.end_call(id, Some(Waiter::Reply(reply))),
            Err(e) => self.reply(Some(reply), e),
        }
    }

    /// Ends a call whatever its state (decline while it rings at us, CANCEL or BYE
    /// otherwise); it is taken out of the table when the SIP layer says it ended, or
    /// after [`HANGUP_GRACE`].
    pub(crate) fn end_call(&mut self, id: CallId, waiter: Option<Waiter>) {
        let Some(call) = self.calls.get_mut(&id) else {
            if let Some(Waiter::Reply(r)) = waiter {
                self.reply(
                    Some(r),
                    fail(ErrorCode::NoSuchCall, format!("there is no call {id}")),
                );
            }
            return;
        };
        if let Some(w) = waiter {
            call.end_waiters.push(w);
        }
        let leg = call.leg;
        let first = !call.ending;
        call.ending = true;
        if call.placing {
            // The INVITE has not left: the call ends here once its media is open.
            return;
        }
        if !first {
            return;
        }
        if call.is_ringing_in() {
            self.sip(SipAction::Reject {
                leg,
                code: 603,
                headers: Vec::new(),
            });
        } else {
            self.sip(SipAction::Hangup { leg });
        }
        self.set_timer(HANGUP_GRACE, Timer::HangupGrace { call: id });
    }

    /// `hangupall` (every call but incoming ones still ringing) and `hangupcalling`
    /// (our calls not answered yet). Replies once they have ended.
    pub(crate) fn hangup_many(&mut self, only_calling: bool, reply: ReplyTo) {
        let ids: Vec<CallId> = self
            .calls
            .values()
            .filter(|c| {
                if only_calling {
                    c.is_setting_up_out()
                } else {
                    !c.is_ringing_in()
                }
            })
            .map(|c| c.id)
            .collect();
        if ids.is_empty() {
            self.reply(
                Some(reply),
                ok_with("no call to end", json!({ "calls": [] })),
            );
            return;
        }
        let batch = self.next_batch;
        self.next_batch += 1;
        self.hangup_batches.insert(
            batch,
            HangupBatch {
                reply,
                calls: ids.clone(),
                waiting: ids.len(),
            },
        );
        for id in ids {
            self.end_call(id, Some(Waiter::Batch(batch)));
        }
    }

    /// A call some hang-up waited for has ended.
    fn call_gone_for(&mut self, waiter: Waiter, answer: Reply) {
        match waiter {
            Waiter::Reply(r) => self.reply(Some(r), answer),
            Waiter::Batch(b) => {
                let Some(batch) = self.hangup_batches.get_mut(&b) else {
                    return;
                };
                batch.waiting = batch.waiting.saturating_sub(1);
                if batch.waiting > 0 {
                    return;
                }
                if let Some(batch) = self.hangup_batches.remove(&b) {
                    let list: Vec<String> = batch.calls.iter().map(|i| i.to_string()).collect();
                    self.reply(
                        Some(batch.reply),
                        ok_with(
                            format!("ended call {}", list.join(", ")),
                            json!({ "calls": batch.calls }),
                        ),
                    );
                }
            }
        }
    }

    // -------------------------------------------------------------- hold

    /// The confirmed call a mid-call command acts on. A call still being set up
    /// keeps the command until it is answered (so `dial`, `hold` back to back works);
    /// a ringing incoming call refuses it. `None`: the reply has been sent or kept.
    fn confirmed_call(
        &mut self,
        id: Option<CallId>,
        command: impl FnOnce(CallId) -> Command,
        reply: Option<ReplyTo>,
    ) -> Option<CallId> {
        let id = match self.find(id) {
            Ok(id) => id,
            Err(e) => {
                self.reply(reply, e);
                return None;
            }
        };
        let now = self.now.mono;
        let call = self.calls.get_mut(&id)?;
        if call.confirmed {
            return Some(id);
        }
        if call.is_ringing_in() {
            self.reply(
                reply,
                fail(
                    ErrorCode::WrongState,
                    format!("call {id} is not answered yet"),
                ),
            );
        } else {
            call.deferred.push(Deferred {
                command: command(id),
                reply,
                since: now,
            });
        }
        None
    }

    pub(crate) fn hold(&mut self, id: Option<CallId>, on: Option<bool>, reply: Option<ReplyTo>) {
        let command = |id| Command::Hold { call: Some(id), on };
        let Some(id) = self.confirmed_call(id, command, reply) else {
            return;
        };
        let now = self.now.mono;
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.busy_reinvite {
            // A re-INVITE of ours (a hold, a session refresh) is in flight: this
            // one goes out once it is answered, toggles judged then.
            call.deferred.push(Deferred {
                command: Command::Hold { call: Some(id), on },
                reply,
                since: now,
            });
            return;
        }
        let want = on.unwrap_or(!call.local_hold);
        if want == call.local_hold {
            self.reply(
                reply,
                ok(format!(
                    "call {id} {}",
                    if want { "already held" } else { "not held" }
                )),
            );
            return;
        }
        self.start_hold(id, want, reply);
    }

    fn start_hold(&mut self, id: CallId, on: bool, reply: Option<ReplyTo>) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let leg = call.leg;
        let Some(local) = call.local.as_mut() else {
            self.reply(
                reply,
                fail(ErrorCode::WrongState, format!("call {id} has no media")),
            );
            return;
        };
        if call.busy_reinvite {
            self.reply(
                reply,
                fail(
                    ErrorCode::WrongState,
                    format!("call {id} is being changed; try again"),
                ),
            );
            return;
        }
        call.busy_reinvite = true;
        local.version += 1;
        local.direction = if on {
            if call.remote_hold {
                Direction::Inactive
            } else {
                Direction::SendOnly
            }
        } else if call.remote_hold {
            Direction::RecvOnly
        } else {
            Direction::SendRecv
        };
        let offer = sdp::offer(local);
        // A re-INVITE is a session refresh too: it keeps the timer's terms.
        let extra = call
            .session_timer
            .map(|t| t.headers(true, false))
            .unwrap_or_default();
        if on {
            // No sending while held: stop at once, before the answer comes back.
            self.media(MediaAction::SetHold { call: id, on: true });
        }
        self.sip_then(
            SipAction::Reinvite {
                leg,
                sdp: offer,
                headers: extra,
            },
            Some(Then::Hold {
                call: id,
                on,
                reply,
            }),
        );
    }

    // ---------------------------------------------------------- transfer

    /// `transfer TARGET [ID]`: blind transfer of call `ID` (or the active call) to
    /// `TARGET`; when `TARGET` is the id of another call of ours and `ID` is given,
    /// attended transfer (REFER with Replaces; see [`Self::attended_transfer`]).
    pub(crate) fn transfer(&mut self, target: &str, id: Option<CallId>, reply: Option<ReplyTo>) {
        if let Some((other, id)) = self.attended_target(target, id) {
            return self.attended_transfer(other, id, reply);
        }
        let command = |id| Command::Transfer {
            target: target.to_string(),
            call: Some(id),
        };
        let Some(id) = self.confirmed_call(id, command, reply) else {
            return;
        };
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        let leg = call.leg;
        let account_no = call.account;
        let Some(account) = self.accounts.get(&account_no).map(|s| s.account.clone()) else {
            self.reply(
                reply,
                fail(ErrorCode::NoAccount, "the call's account is gone"),
            );
            return;
        };
        let uri = match dialplan::normalize_target(target, &account) {
            Ok(t) => t.uri,
            Err(e) => {
                self.reply(reply, fail(ErrorCode::BadArgument, e.to_string()));
                return;
            }
        };
        self.sip_then(
            SipAction::Refer {
                leg,
                target: uri.clone(),
                replacing: None,
            },
            Some(Then::Transfer {
                call: id,
                target: uri,
                reply,
            }),
        );
    }

    /// `transfer N ID` where `N` is another call of ours (not `ID`): the call to
    /// hand `ID`'s remote over to.
    fn attended_target(&self, target: &str, id: Option<CallId>) -> Option<(CallId, CallId)> {
        let id = id?;
        let other: CallId = target.trim().parse().ok()?;
        (other != id && self.calls.contains_key(&other)).then_some((other, id))
    }

    /// Attended transfer (RFC 5589 §7): we talk to B on `id` and to C on `other`;
    /// B gets a REFER whose Refer-To is C's address with `Replaces` naming our
    /// dialog with C, so B's INVITE takes that dialog's place at C. The NOTIFYs
    /// follow as for a blind transfer; on success both our calls end.
    fn attended_transfer(&mut self, other: CallId, id: CallId, reply: Option<ReplyTo>) {
        let command = move |id| Command::Transfer {
            target: other.to_string(),
            call: Some(id),
        };
        let Some(id) = self.confirmed_call(Some(id), command, reply) else {
            return;
        };
        let (target_leg, target_remote) = match self.calls.get(&other) {
            Some(c) if c.ending => {
                return self.reply(
                    reply,
                    fail(ErrorCode::NoSuchCall, format!("call {other} is ending")),
                )
            }
            Some(c) if c.confirmed => (c.leg, c.remote.clone()),
            Some(_) => {
                return self.reply(
                    reply,
                    fail(
                        ErrorCode::WrongState,
                        format!(
                            "call {other} is not answered yet: an attended transfer needs \
                             the target's call connected"
                        ),
                    ),
                )
            }
            None => {
                return self.reply(
                    reply,
                    fail(ErrorCode::NoSuchCall, format!("there is no call {other}")),
                )
            }
        };
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        call.attended_with = Some(other);
        let leg = call.leg;
        info!("call {id}: attended transfer to call {other} ({target_remote})");
        self.sip_then(
            SipAction::Refer {
                leg,
                target: target_remote.clone(),
                replacing: Some(target_leg),
            },
            Some(Then::Transfer {
                call: id,
                target: target_remote,
                reply,
            }),
        );
    }

    /// The kind of our transfer on `id` (for `call.transfer`) and the other call.
    fn our_transfer_kind(&self, id: CallId) -> (&'static str, Option<CallId>) {
        match self.calls.get(&id).and_then(|c| c.attended_with) {
            Some(other) => ("attended", Some(other)),
            None => ("blind", None),
        }
    }

    // ------------------------------------------------- background results

    /// Carries out commands that waited for the call (its answer, or the end of a
    /// re-INVITE of ours), in the order they came; one that waited too long fails.
    fn run_deferred(&mut self, deferred: Vec<Deferred>) {
        for d in deferred {
            if self.now.mono.saturating_duration_since(d.since) > DEFERRED_LIMIT {
                self.reply(
                    d.reply,
                    fail(
                        ErrorCode::WrongState,
                        "the call could not take the command in time",
                    ),
                );
                continue;
            }
            match d.command {
                Command::Hold { call, on } => self.hold(call, on, d.reply),
                Command::Transfer { target, call } => self.transfer(&target, call, d.reply),
                _ => self.reply(
                    d.reply,
                    fail(ErrorCode::Internal, "unexpected deferred command"),
                ),
            }
        }
    }

    /// The commands that waited for a re-INVITE of ours on `id` to end.
    fn after_reinvite(&mut self, id: CallId) {
        let deferred = match self.calls.get_mut(&id) {
            // An ending call answers its waiting commands when it is gone.
            Some(c) if c.confirmed && !c.busy_reinvite && c.end_reason.is_none() => {
                std::mem::take(&mut c.deferred)
            }
            _ => return,
        };
        self.run_deferred(deferred);
    }

    /// Our hold (or resume) re-INVITE was answered.
    pub(crate) fn on_hold_done(
        &mut self,
        call: CallId,
        on: bool,
        result: Result<(u16, Option<String>, SessionTimerAsk), String>,
        reply: Option<ReplyTo>,
    ) {
        let min = self.config.settings.session_timer_min;
        let Some(c) = self.calls.get_mut(&call) else {
            self.reply(
                reply,
                fail(ErrorCode::NoSuchCall, format!("call {call} has ended")),
            );
            return;
        };
        c.busy_reinvite = false;
        match result {
            Ok((code, _sdp, ask)) if (200..300).contains(&code) => {
                c.local_hold = on;
                let refreshed = c.session_timer.is_some();
                if refreshed {
                    c.session_timer = terms_from_answer(&ask, min).or(c.session_timer);
                }
                let hold_media = on || c.remote_hold;
                self.media(MediaAction::SetHold {
                    call,
                    on: hold_media,
                });
                if refreshed {
                    self.arm_session_timer(call);
                }
                if on {
                    self.on_local_hold(call);
                }
                let by = "local";
                if on {
                    self.publish(EventKind::CallHeld { call, by });
                } else {
                    self.publish(EventKind::CallResumed { call, by });
                }
                let word = if on { "held" } else { "resumed" };
                self.reply(
                    reply,
                    ok_with(format!("call {call} {word}"), json!({ "call": call })),
                );
            }
            other => {
                let hold_media = c.local_hold || c.remote_hold;
                self.media(MediaAction::SetHold {
                    call,
                    on: hold_media,
                });
                let message = match other {
                    Ok((code, _, _)) => {
                        format!("call {call}: the other side answered the re-INVITE with {code}")
                    }
                    Err(e) => format!("call {call}: {e}"),
                };
                self.reply(reply, fail(ErrorCode::Refused, message));
            }
        }
        self.after_reinvite(call);
    }

    /// Our REFER was answered.
    pub(crate) fn on_transfer_done(
        &mut self,
        call: CallId,
        target: String,
        result: Result<u16, String>,
        reply: Option<ReplyTo>,
    ) {
        let (kind, with) = self.our_transfer_kind(call);
        if !matches!(result, Ok(code) if (200..300).contains(&code)) {
            if let Some(c) = self.calls.get_mut(&call) {
                c.attended_with = None;
            }
        }
        match result {
            Ok(code) if (200..300).contains(&code) => {
                self.publish(EventKind::CallTransfer {
                    call,
                    code,
                    reason: "Accepted".into(),
                    target: target.clone(),
                    kind,
                    with,
                });
                let mut data = json!({ "call": call, "code": code, "kind": kind });
                if let Some(other) = with {
                    data["with"] = json!(other);
                }
                self.reply(
                    reply,
                    ok_with(
                        format!("call {call} transfer ({kind}) to {target} accepted ({code})"),
                        data,
                    ),
                );
            }
            Ok(code) => self.reply(
                reply,
                fail(
                    ErrorCode::Refused,
                    format!("call {call}: transfer refused with {code}"),
                ),
            ),
            Err(e) => self.reply(reply, fail(ErrorCode::Refused, format!("call {call}: {e}"))),
        }
    }

    /// A call timer fired.
    pub(crate) fn on_call_timer(&mut self, timer: Timer) {
        match timer {
            Timer::Session { call, generation } => {
                let Some(c) = self.calls.get(&call) else {
                    return;
                };
                let Some(timer) = c
                    .session_timer
                    .filter(|_| c.session_generation == generation)
                else {
                    return; // refreshed (or turned off) since this timer was armed
                };
                if timer.we_refresh {
                    self.refresh_session(call, generation);
                } else {
                    warn!(
                        "call {call}: no session refresh within {} s; ending it",
                        timer.interval
                    );
                    if let Some(c) = self.calls.get_mut(&call) {
                        c.end_reason = Some(SESSION_EXPIRED.to_string());
                    }
                    self.end_call(call, None);
                }
            }
            Timer::HangupGrace { call } => {
                if self.calls.contains_key(&call) {
                    warn!("call {call}: no answer to our hang-up; ending it here");
                    self.finish(call, 408, "No answer to BYE".into(), "local");
                }
            }
            Timer::AutoAnswer { call } => {
                if self.calls.get(&call).is_some_and(|c| c.is_ringing_in()) {
                    self.answer(Some(call), None);
                }
            }
            Timer::Forward { call, target } => {
                if self.calls.get(&call).is_some_and(|c| c.is_ringing_in()) {
                    self.forward(call, &target);
                }
            }
            Timer::AutoHangup { call } => {
                if self.calls.contains_key(&call) {
                    info!("call {call}: autoHangUpTime reached");
                    self.end_call(call, None);
                }
            }
            Timer::ExitGrace => {}
        }
    }

    // ------------------------------------------------------ SIP signals

    pub(crate) fn on_leg_signal(&mut self, leg: LegId, signal: LegSignal) {
        if let LegSignal::Incoming(invite) = signal {
            return self.on_incoming(leg, *invite);
        }
        let Some(id) = self.legs.get(&leg).copied() else {
            // A leg we forgot: answer what must be answered.
            match signal {
                LegSignal::Reoffer { answer, .. } | LegSignal::Refer { answer, .. } => {
                    self.respond(answer, 481, None, Vec::new());
                }
                LegSignal::Message(m) => self.respond(m.answer, 481, None, Vec::new()),
                LegSignal::Answered { .. } => self.sip(SipAction::Hangup { leg }),
                _ => {}
            }
            return;
        };
        match signal {
            LegSignal::Incoming(_) => {}
            LegSignal::Ringing => {
                if let Some(c) = self.calls.get_mut(&id) {
                    if c.state == CallState::Calling {
                        c.state = CallState::Ringing;
                        self.publish(EventKind::CallRinging { call: id });
                    }
                }
            }
            LegSignal::Early { code, sdp } => {
                self.apply_remote_answer(id, sdp.as_deref(), true);
                if let Some(c) = self.calls.get_mut(&id) {
                    c.state = CallState::Early;
                }
                self.publish(EventKind::CallEarly { call: id, code });
            }
            LegSignal::Answered { sdp, session_timer } => {
                // Answered after we cancelled it: end it with a BYE now.
                if self.calls.get(&id).is_some_and(|c| c.ending) {
                    self.sip(SipAction::Hangup { leg });
                    return;
                }
                self.apply_remote_answer(id, sdp.as_deref(), false);
                let min = self.config.settings.session_timer_min;
                let timers_off = self.session_timers_off(id);
                let now = self.now.mono;
                if let Some(c) = self.calls.get_mut(&id) {
                    c.state = CallState::Active;
                    c.answered = Some(now);
                    if !timers_off {
                        c.session_timer = terms_from_answer(&session_timer, min);
                    }
                }
                self.arm_session_timer(id);
                self.after_answer(id);
                self.publish(EventKind::CallAnswered {
                    call: id,
                    code: 200,
                });
            }
            LegSignal::Confirmed => {
                let deferred = match self.calls.get_mut(&id) {
                    Some(c) => {
                        c.confirmed = true;
                        std::mem::take(&mut c.deferred)
                    }
                    None => return,
                };
                self.publish(EventKind::CallConfirmed { call: id });
                if let Some(old) = self.calls.get_mut(&id).and_then(|c| c.replacing.take()) {
                    self.replace_call(old, id);
                }
                self.auto_record(id);
                self.transfer_progress(id, 200, "OK", true);
                if let Some(digits) = self.calls.get_mut(&id).and_then(|c| c.post_dial.take()) {
                    // `123,45#`: a one-second pause, then the digits.
                    if let Err(f) = self.dtmf(&format!(",{digits}"), Some(id)) {
                        warn!("call {id}: post-dial digits {digits}: {}", f.message);
                    }
                }
                self.run_deferred(deferred);
            }
            LegSignal::Reoffer {
                sdp,
                update,
                session_timer,
                answer,
            } => self.on_reoffer(id, sdp, update, session_timer, answer),
            LegSignal::Refer { target, answer } => {
                self.respond(answer, 202, None, Vec::new());
                let account = self.calls.get(&id).map(|c| c.account);
                // A Refer-To with Replaces (attended transfer): the INVITE we send
                // carries it; no other header of the Refer-To is taken.
                let (uri, replaces) = microsip_sip::replaces::split_refer_to(&target);
                let kind = if replaces.is_some() {
                    "attended"
                } else {
                    "blind"
                };
                self.publish(EventKind::CallTransfer {
                    call: id,
                    code: 202,
                    reason: "Transfer requested by the remote".into(),
                    target: uri.clone(),
                    kind,
                    with: None,
                });
                let headers = replaces
                    .map(|r| vec![("Replaces".to_string(), r)])
                    .unwrap_or_default();
                self.dial(
                    DialRequest {
                        hold_active: false,
                        transfer_for: Some(id),
                        headers,
                        ..DialRequest::new(&uri, account)
                    },
                    None,
                );
            }
            LegSignal::ReferProgress { code, reason, done } => {
                let target = String::new();
                let (kind, with) = self.our_transfer_kind(id);
                self.publish(EventKind::CallTransfer {
                    call: id,
                    code,
                    reason,
                    target,
                    kind,
                    with,
                });
                let success = (200..300).contains(&code);
                if done && success && self.calls.contains_key(&id) {
                    info!("call {id}: transfer done; hanging up our leg");
                    self.end_call(id, None);
                    // The target's call was replaced there: it ends here too (the
                    // target's BYE may cross ours; either ends it).
                    if let Some(other) = with.filter(|o| self.calls.contains_key(o)) {
                        info!("call {other}: replaced at the transfer target; ending it");
                        self.end_call(other, None);
                    }
                } else if done {
                    if let Some(c) = self.calls.get_mut(&id) {
                        c.attended_with = None;
                    }
                }
            }
            LegSignal::Message(message) => self.on_message(MessageIn {
                call: Some(id),
                ..message
            }),
            LegSignal::Info { content_type, body } => {
                match microsip_media::dtmf::parse_info(&content_type, &body) {
                    Some(digit) => {
                        self.publish(EventKind::CallDtmf {
                            call: id,
                            digit: digit.to_string(),
                            method: "info",
                        });
                    }
                    None => debug!("call {id}: INFO {content_type} ({} bytes)", body.len()),
                }
            }
            LegSignal::Ended {
                code,
                reason,
                by,
                elsewhere,
            } => {
                let by = match by {
                    EndedBy::Local => "local",
                    EndedBy::Remote => "remote",
                };
                self.transfer_progress(id, code, &reason, true);
                self.finish_call(id, code, reason, by, elsewhere);
            }
        }
    }

    /// Answers an in-dialog request (or a MESSAGE).
    pub(crate) fn respond(
        &mut self,
        answer: AnswerId,
        code: u16,
        sdp: Option<String>,
        headers: Vec<(String, String)>,
    ) {
        self.sip(SipAction::Respond {
            answer,
            code,
            sdp,
            headers,
        });
    }

    /// A call we placed for a REFER progressed: tell the transferor.
    fn transfer_progress(&mut self, id: CallId, code: u16, reason: &str, done: bool) {
        let Some(origin) = self.calls.get_mut(&id).and_then(|c| c.transfer_for.take()) else {
            return;
        };
        let success = (200..300).contains(&code);
        let Some(leg) = self.calls.get(&origin).map(|c| c.leg) else {
            return;
        };
        // On success our leg ends, but only once the transferor has its final
        // NOTIFY: a BYE first would end the dialog the NOTIFY needs (RFC 3515 §2.4.5).
        let then = success.then_some(Then::TransferNotified { call: origin });
        self.sip_then(
            SipAction::NotifyRefer {
                leg,
                code,
                reason: reason.to_string(),
                done,
            },
            then,
        );
    }

    /// The transferor has the final NOTIFY of a transfer that worked: end our leg.
    pub(crate) fn on_transfer_notified(&mut self, origin: CallId) {
        if self.calls.contains_key(&origin) {
            self.end_call(origin, None);
        }
    }

    fn apply_remote_answer(&mut self, id: CallId, sdp_text: Option<&str>, early: bool) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let (Some(text), Some(local)) = (sdp_text, call.local.as_ref()) else {
            return;
        };
        match sdp::parse(text).and_then(|d| sdp::accept_answer(&d, local)) {
            Ok(n) => {
                call.codec = Some(n.codec.name());
                call.negotiated = Some(n.clone());
                self.media(MediaAction::Configure {
                    call: id,
                    negotiated: Box::new(n),
                });
                self.media(MediaAction::SetReceiveOnly {
                    call: id,
                    on: early,
                });
            }
            Err(e @ SdpError::SrtpRequired) => {
                // Mandatory SRTP and an answer without a key: no clear RTP is ever
                // sent (the media was not configured); the call ends, saying why.
                warn!("call {id}: {e}; ending the call");
                call.end_reason = Some(e.to_string());
                self.end_call(id, None);
            }
            Err(e) => warn!("call {id}: unusable SDP answer: {e}"),
        }
    }

    /// A re-INVITE or UPDATE from the other side: a new offer (hold, resume, a codec
    /// change), a request for ours, or only a session refresh. Its session-timer
    /// terms are answered (422 when below our minimum) and restart the timer.
    fn on_reoffer(
        &mut self,
        id: CallId,
        sdp_text: Option<String>,
        update: bool,
        ask: SessionTimerAsk,
        reply: AnswerId,
    ) {
        let terms = if self.session_timers_off(id) {
            TimerTerms::Off
        } else {
            terms_for_request(&ask, self.config.settings.session_timer_min)
        };
        if !self.calls.contains_key(&id) {
            return self.respond(reply, 481, None, Vec::new());
        }
        let (timer, extra) = match terms {
            TimerTerms::TooSmall(min) => {
                let extra = vec![("Min-SE".to_string(), min.to_string())];
                return self.respond(reply, 422, None, extra);
            }
            TimerTerms::Agreed { timer, require } => (Some(timer), timer.headers(false, require)),
            TimerTerms::Off => (None, Vec::new()),
        };
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(local) = call.local.as_mut() else {
            return self.respond(reply, 488, None, Vec::new());
        };
        let Some(text) = sdp_text else {
            // An UPDATE without SDP only refreshes the session: 200 without SDP. An
            // offer-less re-INVITE asks for our offer.
            let offer = (!update).then(|| {
                local.version += 1;
                sdp::offer(local)
            });
            call.session_timer = timer;
            self.respond(reply, 200, offer, extra);
            self.arm_session_timer(id);
            return;
        };
        let desc = match sdp::parse(&text) {
            Ok(d) => d,
            Err(_) => return self.respond(reply, 400, None, Vec::new()),
        };
        local.version += 1;
        local.direction = if call.local_hold {
            Direction::SendOnly
        } else {
            Direction::SendRecv
        };
        let (answer, negotiated) = match sdp::answer(&desc, local) {
            Ok(x) => x,
            Err(_) => return self.respond(reply, 488, None, Vec::new()),
        };
        let held_by_remote = matches!(
            negotiated.remote_direction,
            Direction::SendOnly | Direction::Inactive
        ) || negotiated.remote.is_none();
        let was = call.remote_hold;
        call.remote_hold = held_by_remote;
        call.codec = Some(negotiated.codec.name());
        call.negotiated = Some(negotiated.clone());
        call.session_timer = timer;
        let hold_media = call.local_hold || held_by_remote;
        self.media(MediaAction::Configure {
            call: id,
            negotiated: Box::new(negotiated),
        });
        self.media(MediaAction::SetHold {
            call: id,
            on: hold_media,
        });
        self.respond(reply, 200, Some(answer), extra);
        self.arm_session_timer(id);
        if held_by_remote && !was {
            self.publish(EventKind::CallHeld {
                call: id,
                by: "remote",
            });
        } else if !held_by_remote && was {
            self.publish(EventKind::CallResumed {
                call: id,
                by: "remote",
            });
        }
    }

    // ---------------------------------------------------- session timers

    /// Whether the call's account has `disableSessionTimer=1`.
    fn session_timers_off(&self, id: CallId) -> bool {
        self.calls
            .get(&id)
            .and_then(|c| self.accounts.get(&c.account))
            .is_some_and(|s| s.account.disable_session_timer)
    }

    /// (Re)starts the call's session timer after a refresh or a change of terms;
    /// any timer armed before no longer fires.
    fn arm_session_timer(&mut self, id: CallId) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        call.session_generation += 1;
        let Some(timer) = call.session_timer else {
            return;
        };
        let generation = call.session_generation;
        debug!(
            "call {id}: session timer {} s, {} refreshes",
            timer.interval,
            if timer.we_refresh {
                "we"
            } else {
                "the other side"
            }
        );
        self.after_session(id, generation, timer.due());
    }

    fn after_session(&mut self, id: CallId, generation: u64, delay: Duration) {
        self.set_timer(
            delay,
            Timer::Session {
                call: id,
                generation,
            },
        );
    }

    /// Our turn to refresh: a re-INVITE with the SDP unchanged (same version) and
    /// the timer's terms. A re-INVITE of ours already in flight defers it.
    fn refresh_session(&mut self, id: CallId, generation: u64) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let (Some(timer), Some(local)) = (call.session_timer, call.local.as_ref()) else {
            return;
        };
        if call.busy_reinvite || !call.confirmed {
            self.after_session(id, generation, REFRESH_RETRY);
            return;
        }
        call.busy_reinvite = true;
        let leg = call.leg;
        let offer = sdp::offer(local);
        let mut extra = timer.headers(true, false);
        extra.push(("Supported".to_string(), "timer".to_string()));
        info!("call {id}: refreshing the session ({} s)", timer.interval);
        self.sip_then(
            SipAction::Reinvite {
                leg,
                sdp: offer,
                headers: extra,
            },
            Some(Then::Refresh { call: id }),
        );
    }

    /// The answer to our refresh: a 2xx sets the terms again (none: the other side
    /// turned the timer off); a 491 tries again shortly; 408, 481 or no answer ends
    /// the call (RFC 4028 §10); another refusal keeps the terms for the next try.
    pub(crate) fn on_refreshed(
        &mut self,
        id: CallId,
        result: Result<(u16, Option<String>, SessionTimerAsk), String>,
    ) {
        let min = self.config.settings.session_timer_min;
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        call.busy_reinvite = false;
        match result {
            Ok((code, _, ask)) if (200..300).contains(&code) => {
                call.session_timer = terms_from_answer(&ask, min);
                self.arm_session_timer(id);
            }
            Ok((491, _, _)) => {
                let generation = call.session_generation;
                self.after_session(id, generation, REFRESH_RETRY);
            }
            Ok((code @ (408 | 481), _, _)) => {
                warn!("call {id}: session refresh answered {code}; ending the call");
                call.end_reason = Some(format!("session refresh failed ({code})"));
                self.end_call(id, None);
            }
            Err(e) => {
                warn!("call {id}: session refresh failed: {e}; ending the call");
                call.end_reason = Some("session refresh failed".to_string());
                self.end_call(id, None);
            }
            Ok((code, _, _)) => {
                warn!("call {id}: session refresh answered {code}; trying again later");
                self.arm_session_timer(id);
            }
        }
        self.after_reinvite(id);
    }

    /// The call is over: close media, publish, answer whoever waited, forget it.
    pub(crate) fn finish(&mut self, id: CallId, code: u16, reason: String, by: &'static str) {
        self.finish_call(id, code, reason, by, false);
    }

    /// [`Self::finish`], saying whether the call was answered elsewhere.
    fn finish_call(
        &mut self,
        id: CallId,
        code: u16,
        reason: String,
        by: &'static str,
        elsewhere: bool,
    ) {
        let now = self.now.mono;
        let Some(duration) = self.calls.get(&id).map(|c| c.duration_s(now)) else {
            return;
        };
        let reason = self
            .calls
            .get_mut(&id)
            .and_then(|c| c.end_reason.take())
            .unwrap_or(reason);
        // Our RTP/SAVP offer refused: say that SRTP is why.
        let srtp_refused = code == 488
            && self.calls.get(&id).is_some_and(|c| {
                !c.confirmed
                    && matches!(c.direction, CallDirection::Outgoing)
                    && c.local
                        .as_ref()
                        .and_then(|l| l.srtp.as_ref())
                        .is_some_and(|s| s.mandatory)
            });
        let reason = if srtp_refused {
            format!("{reason}: the other side refused our SRTP offer (SRTP=mandatory)")
        } else {
            reason
        };
        let quality = self.call_quality(id);
        self.media(MediaAction::Close { call: id });
        self.on_media_closed(id);
        self.last_ended = Some(now);
        info!("call {id}: ended {code} {reason} ({by}, {duration}s)");
        // Published while the call is still in the table, so the event names its account.
        self.publish(EventKind::CallEnded {
            call: id,
            code,
            reason: reason.clone(),
            by,
            duration,
            elsewhere,
            quality,
        });
        let Some(call) = self.calls.remove(&id) else {
            return;
        };
        self.remember_if_missed(&call, elsewhere);
        self.legs.remove(&call.leg);
        self.timers.cancel(|t| t.call() == Some(id));
        for w in call.end_waiters {
            self.call_gone_for(
                w,
                ok_with(
                    format!("call {id} ended"),
                    json!({ "call": id, "code": code, "reason": reason }),
                ),
            );
        }
        for d in call.deferred {
            self.reply(
                d.reply,
                fail(
                    ErrorCode::NoSuchCall,
                    format!("call {id} ended ({code} {reason})"),
                ),
            );
        }
    }
}

/// Whether `target` names its host itself (`sip:user@host`, `user@host`, an IP
/// address), so the local account can call it without a domain of its own.
fn is_direct_address(target: &str) -> bool {
    let t = target.trim();
    let rest = t
        .strip_prefix("sips:")
        .or_else(|| t.strip_prefix("sip:"))
        .unwrap_or(t);
    let host = match rest.split_once('@') {
        Some((_, host)) => return !host.is_empty(),
        None => rest.split([';', '?']).next().unwrap_or(rest),
    };
    host.parse::<std::net::IpAddr>().is_ok()
        || host.parse::<std::net::SocketAddr>().is_ok()
        || host
            .rsplit_once(':')
            .is_some_and(|(h, p)| h.parse::<std::net::IpAddr>().is_ok() && p.parse::<u16>().is_ok())
}

/// A `call.media` event of a stream client.
fn media_event(
    call: CallId,
    state: &'static str,
    info: &microsip_media::StreamInfo,
    reason: Option<String>,
) -> EventKind {
    EventKind::CallMedia {
        call,
        state,
        client: info.client,
        rate: info.rate,
        mode: info.mode.as_str(),
        remote: info.remote.clone(),
        frames_out: reason.as_ref().map(|_| info.frames_out),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::{terms_for_request, terms_from_answer, SessionTimer, TimerTerms};
    use microsip_sip::{Refresher, SessionExpires, SessionTimerAsk};
    use std::time::Duration;

    fn ask(seconds: u32, refresher: Option<Refresher>, supported: bool) -> SessionTimerAsk {
        SessionTimerAsk {
            expires: Some(SessionExpires { seconds, refresher }),
            min_se: None,
            supported,
        }
    }

    #[test]
    fn session_terms_as_uas() {
        let agreed = |interval, we_refresh, require| TimerTerms::Agreed {
            timer: SessionTimer {
                interval,
                we_refresh,
            },
            require,
        };
        assert_eq!(
            terms_for_request(&SessionTimerAsk::default(), 90),
            TimerTerms::Off
        );
        assert_eq!(
            terms_for_request(&ask(60, Some(Refresher::Uac), true), 90),
            TimerTerms::TooSmall(90)
        );
        // The refresher the caller named; none named: the caller when it supports
        // timers, else us.
        assert_eq!(
            terms_for_request(&ask(1800, Some(Refresher::Uac), true), 90),
            agreed(1800, false, true)
        );
        assert_eq!(
            terms_for_request(&ask(90, Some(Refresher::Uas), true), 90),
            agreed(90, true, true)
        );
        assert_eq!(
            terms_for_request(&ask(600, None, true), 90),
            agreed(600, false, true)
        );
        assert_eq!(
            terms_for_request(&ask(600, Some(Refresher::Uac), false), 90),
            agreed(600, true, false)
        );
        assert_eq!(
            terms_for_request(&ask(10, None, false), 10),
            agreed(10, true, false)
        );
    }

    #[test]
    fn session_terms_as_uac() {
        assert_eq!(terms_from_answer(&SessionTimerAsk::default(), 90), None);
        let t = |interval, we_refresh| {
            Some(SessionTimer {
                interval,
                we_refresh,
            })
        };
        assert_eq!(
            terms_from_answer(&ask(1800, Some(Refresher::Uac), true), 90),
            t(1800, true)
        );
        assert_eq!(
            terms_from_answer(&ask(1800, Some(Refresher::Uas), true), 90),
            t(1800, false)
        );
        assert_eq!(terms_from_answer(&ask(120, None, true), 90), t(120, true));
        // Never below our minimum, whatever the answer says.
        assert_eq!(terms_from_answer(&ask(5, None, true), 90), t(90, true));
    }

    #[test]
    fn session_timer_due_and_headers() {
        let ours = SessionTimer {
            interval: 90,
            we_refresh: true,
        };
        let theirs = SessionTimer {
            interval: 90,
            we_refresh: false,
        };
        assert_eq!(ours.due(), Duration::from_secs(45));
        assert_eq!(theirs.due(), Duration::from_secs(60)); // 90 - min(32, 30)
        let long = SessionTimer {
            interval: 1800,
            we_refresh: false,
        };
        assert_eq!(long.due(), Duration::from_secs(1768)); // 1800 - 32
        let se = |t: SessionTimer, uac, req| t.headers(uac, req);
        assert_eq!(
            se(ours, true, false),
            vec![("Session-Expires".into(), "90;refresher=uac".into())]
        );
        assert_eq!(
            se(ours, false, true),
            vec![
                ("Session-Expires".into(), "90;refresher=uas".into()),
                ("Require".into(), "timer".into())
            ]
        );
        assert_eq!(se(theirs, false, false)[0].1, "90;refresher=uac");
        assert_eq!(se(theirs, true, false)[0].1, "90;refresher=uas");
    }

    #[test]
    fn direct_addresses() {
        use super::is_direct_address as d;
        assert!(d("sip:1002@127.0.0.1:5070"));
        assert!(d("1002@10.0.0.1"));
        assert!(d("127.0.0.1"));
        assert!(d("sip:127.0.0.1:5062"));
        assert!(!d("123"));
        assert!(!d("sip:123"));
    }
}
