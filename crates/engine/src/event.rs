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
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "type")]
pub enum EventKind {
    #[serde(rename = "account.registering")]
    AccountRegistering { account: u32 },
    #[serde(rename = "account.registered")]
    AccountRegistered {
        account: u32,
        code: u16,
        reason: String,
        expires: u32,
        contact: String,
    },
    #[serde(rename = "account.failed")]
    AccountFailed {
        account: u32,
        code: u16,
        reason: String,
        retry_in: u32,
    },
    #[serde(rename = "account.unregistered")]
    AccountUnregistered { account: u32 },
    #[serde(rename = "call.outgoing")]
    CallOutgoing {
        call: u64,
        account: u32,
        remote: String,
        /// The user part of `remote` (the number dialled).
        number: String,
    },
    #[serde(rename = "call.incoming")]
    CallIncoming {
        call: u64,
        account: u32,
        remote: String,
        number: String,
        name: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        diversion: Option<String>,
    },
    #[serde(rename = "call.ringing")]
    CallRinging { call: u64 },
    #[serde(rename = "call.early")]
    CallEarly { call: u64, code: u16 },
    #[serde(rename = "call.answered")]
    CallAnswered { call: u64, code: u16 },
    #[serde(rename = "call.confirmed")]
    CallConfirmed { call: u64 },
    #[serde(rename = "call.held")]
    CallHeld { call: u64, by: &'static str },
    #[serde(rename = "call.resumed")]
    CallResumed { call: u64, by: &'static str },
    #[serde(rename = "call.transfer")]
    CallTransfer {
        call: u64,
        code: u16,
        reason: String,
        target: String,
    },
    /// A DTMF digit received; `method`: `rfc4733`, `inband` or `info`.
    #[serde(rename = "call.dtmf")]
    CallDtmf {
        call: u64,
        digit: String,
        method: &'static str,
    },
    /// A recording of the call `started`, `stopped` or `failed` (with `error`; the
    /// call goes on).
    #[serde(rename = "call.recording")]
    CallRecording {
        call: u64,
        state: &'static str,
        path: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A file played into the call `started`, `ended` (ran out) or `stopped`.
    #[serde(rename = "call.playing")]
    CallPlaying {
        call: u64,
        state: &'static str,
        file: String,
    },
    /// The call `joined` or `left` the conference; `members`: who is in it now.
    #[serde(rename = "call.conference")]
    CallConference {
        call: u64,
        state: &'static str,
        members: Vec<u64>,
    },
    #[serde(rename = "call.ended")]
    CallEnded {
        call: u64,
        code: u16,
        reason: String,
        by: &'static str,
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
        call: u64,
        #[serde(flatten)]
        quality: CallQuality,
    },
    #[serde(rename = "message.received")]
    MessageReceived {
        from: String,
        name: Option<String>,
        to: String,
        content_type: String,
        text: String,
        /// The call it came in (a MESSAGE inside a dialog, RFC 3428).
        #[serde(skip_serializing_if = "Option::is_none")]
        call: Option<u64>,
    },
    #[serde(rename = "message.sent")]
    MessageSent { to: String, code: u16 },
    #[serde(rename = "message.failed")]
    MessageFailed {
        to: String,
        code: u16,
        reason: String,
    },
    /// A contact's presence changed (a NOTIFY of a presence subscription). `status`:
    /// `open`, `closed`, `busy`, `away` or `unknown`; `basic` is the PIDF basic
    /// status; `activity` the first RPID activity.
    #[serde(rename = "presence")]
    Presence {
        account: u32,
        contact: String,
        number: String,
        status: &'static str,
        basic: &'static str,
        activity: Option<String>,
        note: Option<String>,
    },
    /// The account's mailbox state (message-summary NOTIFY).
    #[serde(rename = "mwi")]
    Mwi {
        account: u32,
        waiting: bool,
        new: u32,
        old: u32,
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
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The last event's `seq` before this snapshot; live events follow from `seq + 1`.
    pub seq: u64,
    pub time: String,
    pub accounts: Vec<AccountView>,
    pub calls: Vec<serde_json::Value>,
}

/// One account as shown in snapshots and `status`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AccountView {
    pub account: u32,
    /// `registered`, `registering`, `failed`, `unregistered`, `inactive`, `local`.
    pub state: &'static str,
    pub aor: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<u32>,
    pub active: bool,
    /// The mailbox as the last message-summary NOTIFY said (voicemailNumber set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mwi: Option<MwiView>,
}

/// A mailbox state: messages waiting, new and old voice messages.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct MwiView {
    pub waiting: bool,
    pub new: u32,
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
