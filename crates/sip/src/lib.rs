//! SIP signalling for the phone. rsipstack (pinned) is used only inside this crate,
//! so an upgrade touches one place. It owns the endpoint and its listeners, our
//! reader of SIP input (`reader`: every message passes it before the stack's
//! parser), the registration clients, the refresh and back-off schedule that the
//! REGISTER, SUBSCRIBE and PUBLISH tasks share (`refresh`), digest answers and the SIP
//! trace. It knows nothing of the ini file, commands or RTP.

pub mod call;
pub(crate) mod digest;
pub mod event_bodies;
pub mod message;
mod reader;
mod refresh;
pub mod registration;
pub mod replaces;
mod request;
pub mod stack;
pub mod subscription;
pub mod time;
mod tls;
pub mod trace;

pub use call::{
    CallError, CallSignal, CallerAccount, Calls, EndedBy, IncomingInvite, LegId, Refresher,
    Responder, SessionExpires, SessionTimerAsk, SignalKind,
};
pub use message::{send_message, IncomingMessage, MessageSender};
pub use reader::{read_input, Verdict};
pub use registration::{
    Outcome, Registration, RegistrationConfig, RegistrationEvent, SipTransport,
};
pub use replaces::{ReplacesMatch, ReplacesValue};
pub use stack::{
    local_ip_towards, other_family_ip, probe_local_ip, SipInbox, SipStack, StackConfig,
};
pub use subscription::{
    Package, Publication, PublishConfig, Subscriber, Subscription, SubscriptionConfig,
    SubscriptionEvent,
};

/// A SIP failure the phone reports to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipError {
    /// The endpoint could not start (port taken, trace file not writable...).
    Setup(String),
}

impl std::fmt::Display for SipError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SipError::Setup(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for SipError {}
