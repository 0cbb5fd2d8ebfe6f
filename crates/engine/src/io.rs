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
    Incoming(Box<IncomingInvite>),
    /// 180 (or 183 without SDP) for an outgoing call.
    Ringing,
    /// 183 with SDP: early media.
    Early {
        code: u16,
        sdp: Option<String>,
    },
    /// 2xx to our INVITE.
    Answered {
        sdp: Option<String>,
        session_timer: SessionTimerAsk,
    },
    /// The dialog is confirmed (ACK sent or received).
    Confirmed,
    /// The remote sent a re-INVITE or UPDATE: answer it with `answer`.
    Reoffer {
        sdp: Option<String>,
        update: bool,
        session_timer: SessionTimerAsk,
        answer: AnswerId,
    },
    /// The remote asks us to call `target` (blind transfer).
    Refer {
        target: String,
        answer: AnswerId,
    },
    /// Progress of a REFER we sent (the remote's NOTIFY).
    ReferProgress {
        code: u16,
        reason: String,
        done: bool,
    },
    /// A MESSAGE inside the call.
    Message(MessageIn),
    /// An INFO (already answered 200).
    Info {
        content_type: String,
        body: String,
    },
    /// The leg ended.
    Ended {
        code: u16,
        reason: String,
        by: EndedBy,
        elsewhere: bool,
    },
}

/// A MESSAGE that arrived; `answer` says where its answer goes.
#[derive(Debug, Clone)]
pub struct MessageIn {
    pub from: String,
    pub display_name: Option<String>,
    pub to: String,
    pub content_type: String,
    pub text: String,
    pub answer: AnswerId,
    /// The call it came in, for a MESSAGE inside a dialog.
    pub call: Option<CallId>,
}

/// Everything the core takes.
#[derive(Debug)]
pub enum Input {
    /// A command from a face; its reply goes to `reply`.
    Command { reply: ReplyTo, command: Command },
    /// Something happened to a SIP call leg.
    Leg { leg: LegId, signal: LegSignal },
    /// A registration reported.
    Registration(RegistrationEvent),
    /// A MESSAGE arrived.
    Message(MessageIn),
    /// A subscription or publication reported.
    Presence(SubscriptionEvent),
    /// The media thread saw something.
    Media(MediaEvent),
    /// An action sent out with `ticket` finished.
    Done { ticket: Ticket, result: Done },
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
    /// Media opened on this local RTP port.
    MediaOpened(Result<u16, MediaFailure>),
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

/// Why a media action failed, with what kind of failure it was (for the reply's
/// error code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaFailure {
    /// The device does not exist.
    pub no_such_device: bool,
    /// The argument is wrong (a tone for an output...).
    pub bad_argument: bool,
    pub message: String,
}

impl MediaFailure {
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
    Reply { to: ReplyTo, reply: Reply },
    /// An event for every subscriber (and the observers: hooks, history, call log).
    Event(Event),
    /// A SIP action; with a ticket, its result comes back as [`Input::Done`].
    Sip {
        ticket: Option<Ticket>,
        action: SipAction,
    },
    /// A media action; with a ticket, its result comes back.
    Media {
        ticket: Option<Ticket>,
        action: MediaAction,
    },
    /// A store read or write (in order, off the signalling task).
    Store {
        ticket: Option<Ticket>,
        action: StoreAction,
    },
    /// Every call ended and everything unregistered (or the grace ran out): stop.
    Stopped,
}

/// What the SIP stack is asked to do.
pub enum SipAction {
    /// Send the INVITE of a new call (leg id chosen by the core).
    Dial {
        leg: LegId,
        caller: CallerAccount,
        target: String,
        offer: String,
    },
    /// 180 on an incoming call.
    Ringing { leg: LegId },
    /// 200 with our SDP on an incoming call.
    Answer {
        leg: LegId,
        sdp: String,
        headers: Vec<(String, String)>,
        session_timers: bool,
    },
    /// A final refusal of an incoming call that is not answered.
    Reject {
        leg: LegId,
        code: u16,
        headers: Vec<(String, String)>,
    },
    /// CANCEL, or BYE once confirmed.
    Hangup { leg: LegId },
    /// A re-INVITE with our SDP (result: [`Done::Reinvite`]).
    Reinvite {
        leg: LegId,
        sdp: String,
        headers: Vec<(String, String)>,
    },
    /// DTMF digits as SIP INFO, one after the other, paced like tones.
    InfoDigits { leg: LegId, digits: String },
    /// A REFER (result: [`Done::Refer`]).
    Refer { leg: LegId, target: String },
    /// A NOTIFY on the implicit subscription of a REFER we received; the next one
    /// goes only after the previous one was answered.
    NotifyRefer {
        leg: LegId,
        code: u16,
        reason: String,
        done: bool,
    },
    /// The answer to an in-dialog request or a MESSAGE.
    Respond {
        answer: AnswerId,
        code: u16,
        sdp: Option<String>,
        headers: Vec<(String, String)>,
    },
    /// A MESSAGE (result: [`Done::Message`]).
    SendMessage {
        caller: CallerAccount,
        target: String,
        text: String,
    },
    /// Start an account's registration (it refreshes and retries by itself).
    StartRegistration(Box<RegistrationConfig>),
    /// REGISTER (`on`) or un-REGISTER now (result: [`Done::Registration`]).
    Register { account: u32, on: bool },
    /// A new password for an account's registration.
    SetPassword { account: u32, password: String },
    /// Start a subscription (`id` comes back in its events).
    Subscribe {
        id: u64,
        account: u32,
        caller: CallerAccount,
        target: String,
        package: Package,
        expires: u32,
    },
    /// Publish our presence (`open`) for an account.
    Publish {
        id: u64,
        account: u32,
        caller: CallerAccount,
        expires: u32,
    },
    /// Stop a subscription or publication.
    Unsubscribe { id: u64 },
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
            SipAction::Refer { leg, target } => write!(f, "Refer({leg}, {target})"),
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
        call: CallId,
        source: AudioSpec,
        sink: AudioSpec,
        fallback_source: bool,
        fallback_sink: bool,
    },
    Configure {
        call: CallId,
        negotiated: Box<Negotiated>,
    },
    SetHold {
        call: CallId,
        on: bool,
    },
    SetReceiveOnly {
        call: CallId,
        on: bool,
    },
    SendDtmf {
        call: CallId,
        digits: String,
    },
    /// Close a session (and finish its recording).
    Close {
        call: CallId,
    },
    SetLevels(Levels),
    /// Start recording into `path`, or `name-2.wav`... when it exists (result:
    /// [`Done::Path`], the file chosen).
    StartRecording {
        call: CallId,
        path: PathBuf,
    },
    /// Stop recording (result: [`Done::Recording`], once the file is finished).
    StopRecording {
        call: CallId,
    },
    /// Play a WAV into the call (result: [`Done::Media`], once it plays or could not
    /// be read).
    Play {
        call: CallId,
        path: PathBuf,
        at_end: PlayEnd,
    },
    StopPlaying {
        call: CallId,
    },
    SetConference {
        calls: Vec<CallId>,
    },
    /// Switch the source (`input`) or sink of these calls to `spec`, or with no
    /// call only check that it can be used (result: [`Done::Media`]).
    SetDevice {
        input: bool,
        ring: bool,
        calls: Vec<CallId>,
        spec: AudioSpec,
    },
    /// List the sound devices (result: [`Done::Devices`]).
    ListDevices,
    /// Ring (or stop ringing) on the ring device.
    Ring {
        device: Option<AudioSpec>,
        sound: Option<PathBuf>,
    },
}

/// What the stores are asked to do; the driver runs them in order, off the
/// signalling task.
#[derive(Debug)]
pub enum StoreAction {
    /// Set one ini key (saved atomically).
    SetConfig {
        section: String,
        key: String,
        value: String,
    },
    /// Keep a message (result: unit, once synced).
    StoreMessage(Box<MessageRecord>),
    /// The messages with a contact, or all (result: [`Done::Messages`]).
    ListMessages {
        contact: Option<String>,
    },
    /// The call history (result: [`Done::List`]).
    ListHistory,
    /// The address book (result: [`Done::List`]).
    ListContacts,
    AddContact {
        name: String,
        number: String,
        presence: bool,
    },
    RemoveContact {
        number: String,
    },
}
