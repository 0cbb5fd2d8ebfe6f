//! What goes into the engine core and what comes out of it: the whole boundary
//! between the call logic (sans-IO, [`crate::core`]) and the [`crate::driver`] that
//! owns the SIP stack, the media thread, the files and the clock.
//!
//! The core never waits: every action that takes time (a re-INVITE, a REGISTER, a
//! file write, opening a sound device) leaves as an [`Output`] with a [`Ticket`], and
//! its result comes back as [`Input::Done`] with that ticket. Replies are addressed
//! to a [`ReplyTo`] the driver handed in with the command.

use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use microsip_media::device::DeviceInfo;
use microsip_media::sdp::Negotiated;
use microsip_media::{AudioSpec, Levels, MediaEvent, PlayEnd, RecordingStatus};
use microsip_sip::{
    CallerAccount, EndedBy, IncomingInvite, LegId, Outcome, Package, RegistrationConfig,
    RegistrationEvent, SessionTimerAsk, SubscriptionEvent,
};

use crate::command::{CallId, Command};
use crate::event::Event;
use crate::messages::MessageRecord;
use crate::reply::Reply;

/// Who waits for a reply: an id the driver gave with the command.
pub type ReplyTo = u64;

/// The id of an action whose result the core waits for.
pub type Ticket = u64;

/// The id of an answer owed to the remote (an in-dialog request, a MESSAGE): the
/// driver keeps the transaction, the core says what to answer.
pub(crate) type AnswerId = u64;

/// The time, as the driver (or a test's fake clock) gives it.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Monotonic time, for durations and timers.
    pub mono: Instant,
    /// Wall-clock time, for event stamps, file names and records.
    pub wall: SystemTime,
}

/// One thing that happened to a call leg, as the core sees it (the SIP crate's
/// signal with its transaction handles kept by the driver).
#[derive(Debug)]
pub enum LegSignal {
    /// A new incoming INVITE: caller, target, offer and headers.
    Incoming(Box<IncomingInvite>),
    /// 180 (or 183 without SDP) for an outgoing call.
    Ringing,
    /// 183 with SDP: early media.
    Early {
        /// The provisional status code (183).
        code: u16,
        /// The remote's early-media SDP.
        sdp: Option<String>,
    },
    /// 2xx to our INVITE.
    Answered {
        /// The SDP in the 2xx, if it carried one.
        sdp: Option<String>,
        /// The session-timer terms the 2xx set (interval, refresher).
        session_timer: SessionTimerAsk,
    },
    /// The dialog is confirmed (ACK sent or received).
    Confirmed,
    /// The remote sent a re-INVITE or UPDATE: answer it with `answer`.
    Reoffer {
        /// The remote's new SDP offer, if the request carried one.
        sdp: Option<String>,
        /// True for an UPDATE, false for a re-INVITE.
        update: bool,
        /// The session-timer terms the request asks for.
        session_timer: SessionTimerAsk,
        /// Where the core's answer ([`SipAction::Respond`]) goes.
        answer: AnswerId,
    },
    /// The remote asks us to call `target` (blind transfer).
    Refer {
        /// The URI to call (the Refer-To).
        target: String,
        /// Where the answer to the REFER goes.
        answer: AnswerId,
    },
    /// Progress of a REFER we sent (the remote's NOTIFY).
    ReferProgress {
        /// The status code of the transfer call, from the NOTIFY's sipfrag.
        code: u16,
        /// The reason phrase of that status line.
        reason: String,
        /// True for the final NOTIFY (the implicit subscription ended).
        done: bool,
    },
    /// A MESSAGE inside the call.
    Message(MessageIn),
    /// An INFO (already answered 200).
    Info {
        /// The INFO body's Content-Type.
        content_type: String,
        /// The INFO body.
        body: String,
    },
    /// The leg ended.
    Ended {
        /// The SIP status code the leg ended with.
        code: u16,
        /// The reason phrase (or Reason header text) the leg ended with.
        reason: String,
        /// Which side ended the leg.
        by: EndedBy,
        /// True when a CANCEL said the call was answered elsewhere (another phone of a group).
        elsewhere: bool,
    },
}

/// A MESSAGE that arrived; `answer` says where its answer goes.
#[derive(Debug, Clone)]
pub struct MessageIn {
    /// The sender's URI (the From).
    pub from: String,
    /// The sender's display name, when the From has one.
    pub display_name: Option<String>,
    /// The URI it was sent to (the To).
    pub to: String,
    /// The body's Content-Type (e.g. `text/plain`).
    pub content_type: String,
    /// The message text.
    pub text: String,
    /// Where the core's answer to this MESSAGE goes.
    pub answer: AnswerId,
    /// The call it came in, for a MESSAGE inside a dialog.
    pub call: Option<CallId>,
}

/// Everything the core takes.
#[derive(Debug)]
pub enum Input {
    /// A command from a face; its reply goes to `reply`.
    Command {
        /// Where the reply goes.
        reply: ReplyTo,
        /// The parsed command.
        command: Command,
    },
    /// Something happened to a SIP call leg.
    Leg {
        /// The leg it happened to.
        leg: LegId,
        /// What happened.
        signal: LegSignal,
    },
    /// A registration reported.
    Registration(RegistrationEvent),
    /// A MESSAGE arrived.
    Message(MessageIn),
    /// A subscription or publication reported.
    Presence(SubscriptionEvent),
    /// The media thread saw something.
    Media(MediaEvent),
    /// An action sent out with `ticket` finished.
    Done {
        /// The ticket the action went out with.
        ticket: Ticket,
        /// The action's result.
        result: Done,
    },
    /// The local address towards the registrar went away, came back or changed.
    Network(NetworkChange),
}

/// What the network watch saw, and what the driver already did about it.
#[derive(Debug, Clone)]
pub struct NetworkChange {
    /// The local address SIP was using until now.
    pub previous: std::net::IpAddr,
    /// The local address towards the registrar now; `None`: no route (link down).
    pub address: Option<std::net::IpAddr>,
    /// True when the SIP endpoint was started again on `address` (a new address):
    /// every call and registration of the old endpoint is gone.
    pub restarted: bool,
    /// The local address towards each account's server, after the change.
    pub media_ips: std::collections::HashMap<u32, std::net::IpAddr>,
    /// A local address of the other family, after the change.
    pub other_family_ip: Option<std::net::IpAddr>,
}

/// The result of an action.
#[derive(Debug)]
pub enum Done {
    /// Done, or why not.
    Unit(Result<(), String>),
    /// A re-INVITE's final answer: code, SDP, session-timer terms.
    Reinvite(Result<(u16, Option<String>, SessionTimerAsk), String>),
    /// A REFER's answer code.
    Refer(Result<u16, String>),
    /// A REGISTER (or un-REGISTER) exchange.
    Registration(Outcome),
    /// A MESSAGE's final answer.
    Message(Result<(u16, String), String>),
    /// A media action that can fail in a way the user is told about.
    Media(Result<(), MediaFailure>),
    /// Media opened: its RTP port, and its public address when STUN learned one.
    MediaOpened(Result<OpenedMedia, MediaFailure>),
    /// A recording started into this file.
    Path(Result<PathBuf, MediaFailure>),
    /// A recording was finished (`None`: there was none).
    Recording(Result<Option<RecordingStatus>, MediaFailure>),
    /// The sound devices.
    Devices(Vec<DeviceInfo>),
    /// A list read from a store (history, contacts).
    List(Result<Vec<serde_json::Value>, String>),
    /// The stored messages.
    Messages(Result<Vec<MessageRecord>, String>),
    /// A contact was added (`added`/`updated`) or removed (`removed`, or `absent`).
    Contact(Result<String, String>),
}

/// A call's media, opened by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenedMedia {
    /// The local RTP port.
    pub port: u16,
    /// The RTP socket's public address as a STUN server saw it (`None`: STUN off,
    /// or no server answered).
    pub public: Option<std::net::SocketAddr>,
    /// The RTCP port (RTP + 1), when its socket could be bound.
    pub rtcp_port: Option<u16>,
    /// The RTCP socket's public address (asked for only when an account has ICE).
    pub rtcp_public: Option<std::net::SocketAddr>,
}

impl From<u16> for OpenedMedia {
    fn from(port: u16) -> Self {
        OpenedMedia {
            port,
            public: None,
            rtcp_port: None,
            rtcp_public: None,
        }
    }
}

/// Why a media action failed, with what kind of failure it was (for the reply's
/// error code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaFailure {
    /// The device does not exist.
    pub no_such_device: bool,
    /// The argument is wrong (a tone for an output...).
    pub bad_argument: bool,
    /// What went wrong, one sentence for the reply.
    pub message: String,
}

impl MediaFailure {
    /// A failure that is neither a missing device nor a bad argument.
    pub fn other(message: impl Into<String>) -> MediaFailure {
        MediaFailure {
            no_such_device: false,
            bad_argument: false,
            message: message.into(),
        }
    }
}

/// Everything the core asks for.
#[derive(Debug)]
pub enum Output {
    /// The reply to a command.
    Reply {
        /// The id the command came in with.
        to: ReplyTo,
        /// The reply.
        reply: Reply,
    },
    /// An event for every subscriber (and the observers: hooks, history, call log).
    Event(Event),
    /// A SIP action; with a ticket, its result comes back as [`Input::Done`].
    Sip {
        /// The ticket its result comes back with; `None`: no result is awaited.
        ticket: Option<Ticket>,
        /// What the SIP stack is to do.
        action: SipAction,
    },
    /// A media action; with a ticket, its result comes back.
    Media {
        /// The ticket its result comes back with; `None`: no result is awaited.
        ticket: Option<Ticket>,
        /// What the media thread is to do.
        action: MediaAction,
    },
    /// A store read or write (in order, off the signalling task).
    Store {
        /// The ticket its result comes back with; `None`: no result is awaited.
        ticket: Option<Ticket>,
        /// What the store is to do.
        action: StoreAction,
    },
    /// Every call ended and everything unregistered (or the grace ran out): stop.
    Stopped,
}

/// What the SIP stack is asked to do.
pub enum SipAction {
    /// Send the INVITE of a new call (leg id chosen by the core).
    Dial {
        /// The new leg's id.
        leg: LegId,
        /// The account (identity and credentials) that calls.
        caller: CallerAccount,
        /// The SIP URI to call.
        target: String,
        /// Our SDP offer.
        offer: String,
        /// Extra headers for the INVITE, as (name, value): `Replaces` when a
        /// REFER of an attended transfer asked for this call.
        headers: Vec<(String, String)>,
    },
    /// 180 on an incoming call.
    Ringing {
        /// The incoming leg.
        leg: LegId,
    },
    /// 200 with our SDP on an incoming call.
    Answer {
        /// The incoming leg.
        leg: LegId,
        /// Our SDP answer.
        sdp: String,
        /// Extra headers for the 200, as (name, value).
        headers: Vec<(String, String)>,
        /// Whether to announce session-timer support (`Supported: timer`).
        session_timers: bool,
    },
    /// A final refusal of an incoming call that is not answered.
    Reject {
        /// The incoming leg.
        leg: LegId,
        /// The final status code (e.g. 486, 603).
        code: u16,
        /// Extra headers for the response, as (name, value).
        headers: Vec<(String, String)>,
    },
    /// CANCEL, or BYE once confirmed.
    Hangup {
        /// The leg to end.
        leg: LegId,
    },
    /// A re-INVITE with our SDP (result: [`Done::Reinvite`]).
    Reinvite {
        /// The leg to re-INVITE.
        leg: LegId,
        /// Our new SDP offer.
        sdp: String,
        /// Extra headers, as (name, value).
        headers: Vec<(String, String)>,
    },
    /// DTMF digits as SIP INFO, one after the other, paced like tones.
    InfoDigits {
        /// The leg to send them on.
        leg: LegId,
        /// The digits to send, in order.
        digits: String,
    },
    /// A REFER (result: [`Done::Refer`]).
    Refer {
        /// The leg whose remote is asked to transfer.
        leg: LegId,
        /// The transfer target (the Refer-To URI).
        target: String,
        /// Attended transfer: the leg whose remote is the target, named in the
        /// Refer-To's `Replaces` (then `target` only labels it).
        replacing: Option<LegId>,
    },
    /// A NOTIFY on the implicit subscription of a REFER we received; the next one
    /// goes only after the previous one was answered.
    NotifyRefer {
        /// The leg the REFER came on.
        leg: LegId,
        /// The transfer call's status, as the sipfrag's status code.
        code: u16,
        /// The reason phrase of that status.
        reason: String,
        /// True for the final NOTIFY (the subscription terminates).
        done: bool,
    },
    /// The answer to an in-dialog request or a MESSAGE.
    Respond {
        /// Which request to answer (the id from its signal).
        answer: AnswerId,
        /// The status code.
        code: u16,
        /// An SDP body for the answer, if any.
        sdp: Option<String>,
        /// Extra headers, as (name, value).
        headers: Vec<(String, String)>,
    },
    /// A MESSAGE (result: [`Done::Message`]).
    SendMessage {
        /// The account (identity and credentials) that sends.
        caller: CallerAccount,
        /// The recipient's SIP URI.
        target: String,
        /// The message text.
        text: String,
    },
    /// Start an account's registration (it refreshes and retries by itself).
    StartRegistration(Box<RegistrationConfig>),
    /// REGISTER (`on`) or un-REGISTER now (result: [`Done::Registration`]).
    Register {
        /// The account's number (as in the ini's `AccountN` section).
        account: u32,
        /// True to REGISTER, false to un-REGISTER.
        on: bool,
    },
    /// A new password for an account's registration.
    SetPassword {
        /// The account's number.
        account: u32,
        /// The new password (never logged).
        password: String,
    },
    /// Start a subscription (`id` comes back in its events).
    Subscribe {
        /// The core's id for this subscription, given back in its events.
        id: u64,
        /// The account's number.
        account: u32,
        /// The identity and credentials it subscribes with.
        caller: CallerAccount,
        /// The URI subscribed to.
        target: String,
        /// The event package (presence or message-summary).
        package: Package,
        /// The requested expiry, in seconds.
        expires: u32,
    },
    /// Publish our presence (`open`) for an account.
    Publish {
        /// The core's id for this publication, given back in its events.
        id: u64,
        /// The account's number.
        account: u32,
        /// The identity and credentials it publishes with.
        caller: CallerAccount,
        /// The requested expiry, in seconds.
        expires: u32,
    },
    /// Stop a subscription or publication.
    Unsubscribe {
        /// The id given with [`SipAction::Subscribe`] or [`SipAction::Publish`].
        id: u64,
    },
    /// Stop every registration, subscription and publication (result: unit, once
    /// done or given up).
    StopAll,
}

impl std::fmt::Debug for SipAction {
    /// Names the action and its leg; never a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SipAction::Dial { leg, target, .. } => write!(f, "Dial({leg}, {target})"),
            SipAction::Ringing { leg } => write!(f, "Ringing({leg})"),
            SipAction::Answer { leg, .. } => write!(f, "Answer({leg})"),
            SipAction::Reject { leg, code, .. } => write!(f, "Reject({leg}, {code})"),
            SipAction::Hangup { leg } => write!(f, "Hangup({leg})"),
            SipAction::Reinvite { leg, .. } => write!(f, "Reinvite({leg})"),
            SipAction::InfoDigits { leg, digits } => write!(f, "InfoDigits({leg}, {digits})"),
            SipAction::Refer {
                leg,
                target,
                replacing,
            } => match replacing {
                Some(r) => write!(f, "Refer({leg}, {target}, replacing {r})"),
                None => write!(f, "Refer({leg}, {target})"),
            },
            SipAction::NotifyRefer { leg, code, .. } => write!(f, "NotifyRefer({leg}, {code})"),
            SipAction::Respond { answer, code, .. } => write!(f, "Respond({answer}, {code})"),
            SipAction::SendMessage { target, .. } => write!(f, "SendMessage({target})"),
            SipAction::StartRegistration(c) => write!(f, "StartRegistration({})", c.account),
            SipAction::Register { account, on } => write!(f, "Register({account}, {on})"),
            SipAction::SetPassword { account, .. } => write!(f, "SetPassword({account}, ***)"),
            SipAction::Subscribe { id, target, .. } => write!(f, "Subscribe({id}, {target})"),
            SipAction::Publish { id, account, .. } => write!(f, "Publish({id}, {account})"),
            SipAction::Unsubscribe { id } => write!(f, "Unsubscribe({id})"),
            SipAction::StopAll => f.write_str("StopAll"),
        }
    }
}

/// What the media thread (and the sound devices) are asked to do. Session ids are
/// call ids.
#[derive(Debug)]
pub enum MediaAction {
    /// Open a session (result: [`Done::MediaOpened`]); `fallback`: if the device
    /// cannot be opened, go on with `null` for the sides marked.
    Open {
        /// The call; also the media session's id.
        call: CallId,
        /// Where the call's sent audio comes from (device, file, tone, null).
        source: AudioSpec,
        /// Where the call's heard audio goes.
        sink: AudioSpec,
        /// Fall back to `null` when the source cannot be opened.
        fallback_source: bool,
        /// Fall back to `null` when the sink cannot be opened.
        fallback_sink: bool,
        /// The address to bind the RTP socket on; `None`: the media engine's.
        bind: Option<std::net::IpAddr>,
    },
    /// Start or update the call's RTP stream after an offer/answer.
    Configure {
        /// The call.
        call: CallId,
        /// The offer/answer's outcome: codec, payload types, remote address.
        negotiated: Box<Negotiated>,
    },
    /// Our hold: while `on` the session neither sends nor plays.
    SetHold {
        /// The call.
        call: CallId,
        /// True to hold, false to resume.
        on: bool,
    },
    /// Early media: while `on` the session plays what arrives and sends nothing.
    SetReceiveOnly {
        /// The call.
        call: CallId,
        /// True while the call is only in early media.
        on: bool,
    },
    /// Send DTMF in the RTP stream (RFC 4733 events or in-band tones).
    SendDtmf {
        /// The call.
        call: CallId,
        /// The digits (`0-9*#A-D`, `,` = 1 s pause).
        digits: String,
    },
    /// Close a session (and finish its recording).
    Close {
        /// The call.
        call: CallId,
    },
    /// Set the speaker and microphone volumes and mutes.
    SetLevels(Levels),
    /// Start recording into `path`, or `name-2.wav`... when it exists (result:
    /// [`Done::Path`], the file chosen).
    StartRecording {
        /// The call.
        call: CallId,
        /// The WAV file to record into.
        path: PathBuf,
    },
    /// Stop recording (result: [`Done::Recording`], once the file is finished).
    StopRecording {
        /// The call.
        call: CallId,
    },
    /// Play a WAV into the call (result: [`Done::Media`], once it plays or could not
    /// be read).
    Play {
        /// The call.
        call: CallId,
        /// The WAV file to play.
        path: PathBuf,
        /// What to do when it ends (nothing, or hang up).
        at_end: PlayEnd,
    },
    /// Stop the file playing into the call.
    StopPlaying {
        /// The call.
        call: CallId,
    },
    /// Make these calls the phone's one conference (fewer than two ends it).
    SetConference {
        /// The conference's members.
        calls: Vec<CallId>,
    },
    /// Switch the source (`input`) or sink of these calls to `spec`, or with no
    /// call only check that it can be used (result: [`Done::Media`]).
    SetDevice {
        /// True: the source (microphone side); false: the sink (speaker side).
        input: bool,
        /// True: the ring device (only checked, no call is switched).
        ring: bool,
        /// The calls to switch (none: only check `spec`).
        calls: Vec<CallId>,
        /// The device or file to use.
        spec: AudioSpec,
    },
    /// List the sound devices (result: [`Done::Devices`]).
    ListDevices,
    /// Ring (or stop ringing) on the ring device.
    Ring {
        /// The device to ring on; `None`: stop ringing.
        device: Option<AudioSpec>,
        /// A WAV to loop; `None` (or unreadable): the built-in cadence.
        sound: Option<PathBuf>,
    },
}

/// What the stores are asked to do; the driver runs them in order, off the
/// signalling task.
#[derive(Debug)]
pub enum StoreAction {
    /// Set one ini key (saved atomically).
    SetConfig {
        /// The ini section (e.g. `Settings`, `Account1`).
        section: String,
        /// The key in that section.
        key: String,
        /// The new value, as written to the ini.
        value: String,
    },
    /// Keep a message (result: unit, once synced).
    StoreMessage(Box<MessageRecord>),
    /// The messages with a contact, or all (result: [`Done::Messages`]).
    ListMessages {
        /// The contact's number; `None`: all messages.
        contact: Option<String>,
    },
    /// The call history (result: [`Done::List`]).
    ListHistory,
    /// The address book (result: [`Done::List`]).
    ListContacts,
    /// Add a contact, or update the one with this number (result: [`Done::Contact`]).
    AddContact {
        /// The name shown for it.
        name: String,
        /// Its number or SIP URI (the contact's key).
        number: String,
        /// Whether to subscribe to its presence.
        presence: bool,
    },
    /// Remove the contact with this number (result: [`Done::Contact`]).
    RemoveContact {
        /// The contact's number or SIP URI.
        number: String,
    },
}
