//! The one event stream: every state change, numbered, timed, as JSON-ready values.

use serde::{Serialize, Serializer};

/// One event, as every subscriber sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Increases by one per event, from 1.
    pub seq: u64,
    /// RFC 3339 UTC.
    pub time: String,
    /// The account of the call, for call events that do not carry it themselves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<u32>,
    /// What happened; its fields are written flat into the event's JSON, with `type`.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "type")]
pub enum EventKind {
    /// An account is sending its REGISTER.
    #[serde(rename = "account.registering")]
    AccountRegistering {
        /// The account's number (its `AccountN` section).
        account: u32,
    },
    /// The registrar accepted an account's REGISTER.
    #[serde(rename = "account.registered")]
    AccountRegistered {
        /// The account's number.
        account: u32,
        /// The registrar's status code (2xx).
        code: u16,
        /// The registrar's reason phrase.
        reason: String,
        /// How long the registration holds, seconds, as the registrar granted it.
        expires: u32,
        /// The Contact the registrar bound.
        contact: String,
    },
    /// An account's REGISTER failed; it is tried again after `retry_in`.
    #[serde(rename = "account.failed")]
    AccountFailed {
        /// The account's number.
        account: u32,
        /// The failure's status code.
        code: u16,
        /// The reason phrase, or what went wrong.
        reason: String,
        /// Seconds until the next attempt.
        retry_in: u32,
    },
    /// An account is no longer registered.
    #[serde(rename = "account.unregistered")]
    AccountUnregistered {
        /// The account's number.
        account: u32,
    },
    /// The network under an account changed: `state` is `down` (no route to the
    /// registrar: the link dropped or the address went away), `up` (the same
    /// address is back: the account registers again now) or `changed` (a new
    /// local address: SIP moved to it, the account registers again from it, and
    /// calls of the old address ended).
    #[serde(rename = "account.network")]
    AccountNetwork {
        /// The account's number.
        account: u32,
        /// `down`, `up` or `changed`.
        state: String,
        /// The local address now (`null` while down).
        address: Option<String>,
        /// The local address before.
        previous: String,
    },
    /// We dialled a call.
    #[serde(rename = "call.outgoing")]
    CallOutgoing {
        /// The call's id (the `id` in `calls` and every call event).
        call: u64,
        /// The account it goes out on.
        account: u32,
        /// The SIP URI called.
        remote: String,
        /// The user part of `remote` (the number dialled).
        number: String,
    },
    /// A call came in.
    #[serde(rename = "call.incoming")]
    CallIncoming {
        /// The call's id.
        call: u64,
        /// The account it came in on.
        account: u32,
        /// The caller's SIP URI.
        remote: String,
        /// The user part of `remote` (the caller's number).
        number: String,
        /// The caller's display name, when the From has one.
        name: Option<String>,
        /// Who diverted the call to us (the Diversion header), when it was diverted.
        #[serde(skip_serializing_if = "Option::is_none")]
        diversion: Option<String>,
    },
    /// The call rings: the remote sent 180 (outgoing), or we did (incoming).
    #[serde(rename = "call.ringing")]
    CallRinging {
        /// The call's id.
        call: u64,
    },
    /// An outgoing call got early media (183 with SDP).
    #[serde(rename = "call.early")]
    CallEarly {
        /// The call's id.
        call: u64,
        /// The provisional status code.
        code: u16,
    },
    /// The call was answered: a 2xx received (outgoing) or sent (incoming).
    #[serde(rename = "call.answered")]
    CallAnswered {
        /// The call's id.
        call: u64,
        /// The 2xx status code.
        code: u16,
    },
    /// The dialog is confirmed (ACK sent or received).
    #[serde(rename = "call.confirmed")]
    CallConfirmed {
        /// The call's id.
        call: u64,
    },
    /// The call was put on hold.
    #[serde(rename = "call.held")]
    CallHeld {
        /// The call's id.
        call: u64,
        /// Who held it: `local` or `remote`.
        by: &'static str,
    },
    /// The call was taken off hold.
    #[serde(rename = "call.resumed")]
    CallResumed {
        /// The call's id.
        call: u64,
        /// Who resumed it: `local` or `remote`.
        by: &'static str,
    },
    /// A transfer's progress: our REFER's answer, the remote's REFER (202), or a
    /// NOTIFY; or our call replaced by an INVITE with `Replaces`.
    #[serde(rename = "call.transfer")]
    CallTransfer {
        /// The call being transferred (or replaced).
        call: u64,
        /// The status code: the REFER's answer, 202, or the NOTIFY's sipfrag code
        /// (200 for a call replaced).
        code: u16,
        /// Its reason phrase.
        reason: String,
        /// The transfer target (empty in NOTIFY progress).
        target: String,
        /// `blind` (REFER to a URI), `attended` (REFER with Replaces, RFC 3891),
        /// or `replaced` (an INVITE with Replaces took this call's place).
        kind: &'static str,
        /// The other call of ours involved: the one whose remote the transfer goes
        /// to (attended), or the call that replaced this one (replaced).
        #[serde(skip_serializing_if = "Option::is_none")]
        with: Option<u64>,
    },
    /// A DTMF digit received; `method`: `rfc4733`, `inband` or `info`.
    #[serde(rename = "call.dtmf")]
    CallDtmf {
        /// The call's id.
        call: u64,
        /// The digit: `0-9`, `*`, `#` or `A-D`.
        digit: String,
        /// How it came: `rfc4733`, `inband` or `info`.
        method: &'static str,
    },
    /// A recording of the call `started`, `stopped` or `failed` (with `error`; the
    /// call goes on).
    #[serde(rename = "call.recording")]
    CallRecording {
        /// The call's id.
        call: u64,
        /// `started`, `stopped` or `failed`.
        state: &'static str,
        /// The WAV file recorded into.
        path: String,
        /// Why the recording failed (with `failed`).
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A program `started` or `stopped` streaming the call's audio (a WebSocket
    /// client of `GET /calls/{id}/media`, or one `media stream` connected to).
    #[serde(rename = "call.media")]
    CallMedia {
        /// The call's id.
        call: u64,
        /// `started` or `stopped`.
        state: &'static str,
        /// The client's id (for `media stop`).
        client: u64,
        /// Its PCM rate, Hz.
        rate: u32,
        /// `replace` or `mix`: how its audio goes into the call.
        mode: &'static str,
        /// Who it is: its address, or the URL the phone connected to.
        remote: String,
        /// With `stopped`: frames sent to it.
        #[serde(skip_serializing_if = "Option::is_none")]
        frames_out: Option<u64>,
        /// With `stopped`: why (it went away, stopped reading, was stopped, the
        /// call ended).
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A file played into the call `started`, `ended` (ran out) or `stopped`.
    #[serde(rename = "call.playing")]
    CallPlaying {
        /// The call's id.
        call: u64,
        /// `started`, `ended` or `stopped`.
        state: &'static str,
        /// The file played.
        file: String,
    },
    /// The call `joined` or `left` the conference; `members`: who is in it now.
    #[serde(rename = "call.conference")]
    CallConference {
        /// The call's id.
        call: u64,
        /// `joined` or `left`.
        state: &'static str,
        /// The calls in the conference now.
        members: Vec<u64>,
    },
    /// The call ended.
    #[serde(rename = "call.ended")]
    CallEnded {
        /// The call's id.
        call: u64,
        /// The SIP status code it ended with.
        code: u16,
        /// The reason phrase it ended with.
        reason: String,
        /// Who ended it: `local` or `remote`.
        by: &'static str,
        /// Seconds since it was answered (0 if it never was).
        duration: u64,
        /// An incoming call the caller CANCELed because it was answered elsewhere
        /// (`Reason: SIP;cause=200`); only written when true.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        elsewhere: bool,
        /// The final numbers, when the call had media.
        #[serde(flatten)]
        quality: Option<CallQuality>,
    },
    /// An RTCP report arrived: the call's quality numbers with it.
    #[serde(rename = "call.quality")]
    CallQuality {
        /// The call's id.
        call: u64,
        /// The numbers as of this report.
        #[serde(flatten)]
        quality: CallQuality,
    },
    /// A MESSAGE arrived.
    #[serde(rename = "message.received")]
    MessageReceived {
        /// The sender's URI.
        from: String,
        /// The sender's display name, when the From has one.
        name: Option<String>,
        /// The URI it was sent to.
        to: String,
        /// The body's Content-Type (e.g. `text/plain`).
        content_type: String,
        /// The message text.
        text: String,
        /// The call it came in (a MESSAGE inside a dialog, RFC 3428).
        #[serde(skip_serializing_if = "Option::is_none")]
        call: Option<u64>,
    },
    /// A MESSAGE we sent was accepted (2xx).
    #[serde(rename = "message.sent")]
    MessageSent {
        /// The recipient.
        to: String,
        /// The 2xx status code.
        code: u16,
    },
    /// A MESSAGE we sent was refused or not answered.
    #[serde(rename = "message.failed")]
    MessageFailed {
        /// The recipient.
        to: String,
        /// The failure's status code.
        code: u16,
        /// The reason phrase, or what went wrong.
        reason: String,
    },
    /// A contact's presence changed (a NOTIFY of a presence subscription). `status`:
    /// `open`, `closed`, `busy`, `away` or `unknown`; `basic` is the PIDF basic
    /// status; `activity` the first RPID activity.
    #[serde(rename = "presence")]
    Presence {
        /// The account that subscribes.
        account: u32,
        /// The URI subscribed to.
        contact: String,
        /// The number as the address book has it.
        number: String,
        /// `open`, `closed`, `busy`, `away` or `unknown`.
        status: &'static str,
        /// The PIDF basic status (`open` or `closed`).
        basic: &'static str,
        /// The first RPID activity (e.g. `busy`, `away`), if any.
        activity: Option<String>,
        /// The PIDF note, if any.
        note: Option<String>,
    },
    /// The account's mailbox state (message-summary NOTIFY).
    #[serde(rename = "mwi")]
    Mwi {
        /// The account whose mailbox it is.
        account: u32,
        /// Whether messages are waiting.
        waiting: bool,
        /// New voice messages.
        new: u32,
        /// Old (heard) voice messages.
        old: u32,
        /// The account's voicemail number.
        voicemail: String,
    },
    /// The phone is about to exit.
    #[serde(rename = "phone.exiting")]
    PhoneExiting,
}

impl EventKind {
    /// The call this event is about, if any.
    pub fn call(&self) -> Option<u64> {
        match self {
            EventKind::CallOutgoing { call, .. }
            | EventKind::CallIncoming { call, .. }
            | EventKind::CallRinging { call }
            | EventKind::CallEarly { call, .. }
            | EventKind::CallAnswered { call, .. }
            | EventKind::CallConfirmed { call }
            | EventKind::CallHeld { call, .. }
            | EventKind::CallResumed { call, .. }
            | EventKind::CallTransfer { call, .. }
            | EventKind::CallDtmf { call, .. }
            | EventKind::CallRecording { call, .. }
            | EventKind::CallMedia { call, .. }
            | EventKind::CallPlaying { call, .. }
            | EventKind::CallConference { call, .. }
            | EventKind::CallEnded { call, .. }
            | EventKind::CallQuality { call, .. } => Some(*call),
            EventKind::MessageReceived { call, .. } => *call,
            _ => None,
        }
    }

    /// Whether the event names its account itself.
    fn has_account(&self) -> bool {
        matches!(
            self,
            EventKind::CallOutgoing { .. }
                | EventKind::CallIncoming { .. }
                | EventKind::AccountRegistering { .. }
                | EventKind::AccountRegistered { .. }
                | EventKind::AccountFailed { .. }
                | EventKind::AccountUnregistered { .. }
                | EventKind::AccountNetwork { .. }
                | EventKind::Presence { .. }
                | EventKind::Mwi { .. }
        )
    }

    /// Whether an `account` field must be added next to this event.
    pub(crate) fn needs_account(&self) -> bool {
        self.call().is_some() && !self.has_account()
    }

    /// The `type` field, for filters.
    pub fn type_name(&self) -> &'static str {
        match self {
            EventKind::AccountRegistering { .. } => "account.registering",
            EventKind::AccountRegistered { .. } => "account.registered",
            EventKind::AccountFailed { .. } => "account.failed",
            EventKind::AccountUnregistered { .. } => "account.unregistered",
            EventKind::AccountNetwork { .. } => "account.network",
            EventKind::CallOutgoing { .. } => "call.outgoing",
            EventKind::CallIncoming { .. } => "call.incoming",
            EventKind::CallRinging { .. } => "call.ringing",
            EventKind::CallEarly { .. } => "call.early",
            EventKind::CallAnswered { .. } => "call.answered",
            EventKind::CallConfirmed { .. } => "call.confirmed",
            EventKind::CallHeld { .. } => "call.held",
            EventKind::CallResumed { .. } => "call.resumed",
            EventKind::CallTransfer { .. } => "call.transfer",
            EventKind::CallDtmf { .. } => "call.dtmf",
            EventKind::CallRecording { .. } => "call.recording",
            EventKind::CallMedia { .. } => "call.media",
            EventKind::CallPlaying { .. } => "call.playing",
            EventKind::CallConference { .. } => "call.conference",
            EventKind::CallEnded { .. } => "call.ended",
            EventKind::CallQuality { .. } => "call.quality",
            EventKind::MessageReceived { .. } => "message.received",
            EventKind::MessageSent { .. } => "message.sent",
            EventKind::MessageFailed { .. } => "message.failed",
            EventKind::Presence { .. } => "presence",
            EventKind::Mwi { .. } => "mwi",
            EventKind::PhoneExiting => "phone.exiting",
        }
    }
}

/// A percentage kept in tenths (so events stay `Eq`); written as a number with one
/// decimal (`5.0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Percent(pub u32);

impl Percent {
    /// From a fraction in 1/256 (RTCP's fraction lost).
    pub(crate) fn from_fraction(fraction: u8) -> Percent {
        Percent(((u32::from(fraction) * 1000) + 128) / 256)
    }
}

impl std::fmt::Display for Percent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0 / 10, self.0 % 10)
    }
}

impl Serialize for Percent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(f64::from(self.0) / 10.0)
    }
}

/// A call's quality, in `call.quality`, `call.ended` and `calls`: what we measure on
/// the peer's stream, what the peer reports about ours (RTCP), and the round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CallQuality {
    /// Interarrival jitter of what we receive, ms.
    pub jitter: u32,
    /// Share of the peer's packets that never reached us, percent (as of our last
    /// report).
    pub loss: Percent,
    /// How many of the peer's packets never reached us.
    pub lost: i64,
    /// Round-trip time, ms (`null` until the peer answered one of our reports).
    pub rtt: Option<u32>,
    /// Share of our packets the peer lost in its last report's interval, percent.
    pub remote_loss: Option<Percent>,
    /// How many of our packets the peer lost, as it reports.
    pub remote_lost: Option<i32>,
    /// Jitter the peer measures on our stream, ms.
    pub remote_jitter: Option<u32>,
    /// RTCP reports received from the peer.
    pub rtcp: u64,
    /// RTCP reports we sent.
    pub rtcp_sent: u64,
}

impl CallQuality {
    /// From the media engine's counters of the call.
    pub(crate) fn from_media(stats: &microsip_media::MediaStats) -> CallQuality {
        let q = &stats.quality;
        CallQuality {
            jitter: stats.jitter_ms,
            loss: Percent(q.loss_permille()),
            lost: q.lost.max(0),
            rtt: q.rtt_ms,
            remote_loss: q.remote_fraction_lost.map(Percent::from_fraction),
            remote_lost: q.remote_cumulative_lost,
            remote_jitter: q.remote_jitter_ms,
            rtcp: q.reports_received,
            rtcp_sent: q.reports_sent,
        }
    }

    /// The plain-text form in `calls`: `jitter=3ms loss=0.5% rtt=12ms`.
    pub fn plain(&self) -> String {
        let rtt = match self.rtt {
            Some(ms) => format!("{ms}ms"),
            None => "-".to_string(),
        };
        format!("jitter={}ms loss={}% rtt={rtt}", self.jitter, self.loss)
    }
}

/// Where a client stands when it subscribes: sent before any live event.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Always `snapshot` (the JSON `type`).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The last event's `seq` before this snapshot; live events follow from `seq + 1`.
    pub seq: u64,
    /// When the snapshot was taken, RFC 3339 UTC.
    pub time: String,
    /// Every account, with its registration state.
    pub accounts: Vec<AccountView>,
    /// Every call, as `calls` lists them.
    pub calls: Vec<serde_json::Value>,
}

/// One account as shown in snapshots and `status`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AccountView {
    /// The account's number (its `AccountN` section).
    pub account: u32,
    /// `registered`, `registering`, `failed`, `unregistered`, `inactive`, `local`.
    pub state: &'static str,
    /// The account's address of record, `sip:user@domain`.
    pub aor: String,
    /// The last registration status code (200 when registered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// Why the last registration failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How long the registration holds, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<u32>,
    /// Whether this is the phone's active account (the one calls go out on by default).
    pub active: bool,
    /// The mailbox as the last message-summary NOTIFY said (voicemailNumber set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mwi: Option<MwiView>,
}

/// A mailbox state: messages waiting, new and old voice messages.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct MwiView {
    /// Whether messages are waiting.
    pub waiting: bool,
    /// New voice messages.
    pub new: u32,
    /// Old (heard) voice messages.
    pub old: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quality() -> CallQuality {
        CallQuality {
            jitter: 3,
            loss: Percent(50),
            lost: 12,
            rtt: Some(21),
            remote_loss: Some(Percent::from_fraction(13)),
            remote_lost: Some(9),
            remote_jitter: Some(4),
            rtcp: 2,
            rtcp_sent: 3,
        }
    }

    #[test]
    fn quality_event_fields() {
        let v = serde_json::to_value(EventKind::CallQuality {
            call: 7,
            quality: quality(),
        })
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "type": "call.quality", "call": 7, "jitter": 3, "loss": 5.0, "lost": 12,
                "rtt": 21, "remote_loss": 5.1, "remote_lost": 9, "remote_jitter": 4,
                "rtcp": 2, "rtcp_sent": 3
            })
        );
        let ended = |quality| EventKind::CallEnded {
            call: 7,
            code: 200,
            reason: "OK".into(),
            by: "local",
            duration: 10,
            elsewhere: false,
            quality,
        };
        let v = serde_json::to_value(ended(Some(quality()))).unwrap();
        assert_eq!(v["type"], "call.ended");
        assert_eq!(v["rtt"], 21);
        assert_eq!(v["loss"], 5.0);
        let v = serde_json::to_value(ended(None)).unwrap();
        assert!(v.get("rtt").is_none() && v.get("jitter").is_none());
        assert!(v.get("elsewhere").is_none());
        let cancelled = EventKind::CallEnded {
            call: 8,
            code: 487,
            reason: "Call completed elsewhere".into(),
            by: "remote",
            duration: 0,
            elsewhere: true,
            quality: None,
        };
        assert_eq!(serde_json::to_value(cancelled).unwrap()["elsewhere"], true);
        assert_eq!(
            EventKind::CallQuality {
                call: 1,
                quality: quality()
            }
            .call(),
            Some(1)
        );
    }

    #[test]
    fn percent_forms() {
        assert_eq!(Percent::from_fraction(0), Percent(0));
        assert_eq!(Percent::from_fraction(128), Percent(500));
        assert_eq!(Percent::from_fraction(255), Percent(996));
        assert_eq!(Percent(53).to_string(), "5.3");
        assert_eq!(quality().plain(), "jitter=3ms loss=5.0% rtt=21ms");
        let none = CallQuality {
            rtt: None,
            ..quality()
        };
        assert_eq!(none.plain(), "jitter=3ms loss=5.0% rtt=-");
    }
}
