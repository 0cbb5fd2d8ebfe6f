//! The one command set every face speaks: the typed `Command`, and the grammar that
//! turns MicroSIP's three families of spellings (DDE-style words, `WM_COPYDATA`-style
//! codes, its real command line `/x:` and `msip:` forms) into it.
//!
//! This module knows no sockets and no SIP; it only reads words.

/// An engine-made call id: small, positive, never reused while the phone runs.
pub type CallId = u64;

/// A password: cloned and compared like a string, printed as `***` so a command can
/// be logged without leaking it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Which form of `status` the caller asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusForm {
    /// `status`, `Status`: one line of text that starts with the numeric code.
    Word,
    /// `STATUS`: just the integer (0 idle, 1 ringing, 2 active, 3 hold, 4 disconnected).
    Numeric,
}

/// Which level a volume command changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LevelKind {
    /// The speaker (playback) volume.
    Speaker,
    /// The microphone (capture) level.
    Microphone,
}

/// How a level changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LevelChange {
    /// Set to this value, 0–100.
    Absolute(u8),
    /// Add this many points (negative: down).
    Relative(i32),
}

/// Which audio device `setdevice` switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRole {
    /// The microphone (capture) device.
    Input,
    /// The speaker (playback) device.
    Output,
    /// The device incoming calls ring on.
    Ring,
}

/// Window state (`minimize`, `show`, `/hide`, `/minimized`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowState {
    /// Shown normally.
    Normal,
    /// Minimized.
    Minimized,
    /// Hidden (no window shown).
    Hidden,
}

/// One command, whatever face it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Start a call. `hold_active`: put an active call on hold first (`dial`: true,
    /// `callto`: false). `numeric`: the DDE `DIAL` form that replies `1`/`0`.
    Dial {
        /// The number or URI to call (dial plan applied; `,` starts post-dial DTMF).
        target: String,
        /// The account to call from; `None`: the active account.
        account: Option<u32>,
        /// Put an active call on hold first.
        hold_active: bool,
        /// Reply `1`/`0` (DDE `DIAL`) instead of the call id.
        numeric: bool,
    },
    /// Dial again the number dialled last (`redial`); an active call is held first.
    Redial,
    /// Call the caller of the last missed call (`callback`); an active call is held
    /// first.
    Callback,
    /// Send a SIP MESSAGE (`message TARGET TEXT`, or `NUMBER TEXT...`).
    Message {
        /// The recipient's number or URI.
        target: String,
        /// The message text (sent as `text/plain`).
        text: String,
    },
    /// Answer a ringing incoming call.
    Answer {
        /// The call to answer; `None`: the oldest ringing one.
        call: Option<CallId>,
    },
    /// `code`: SIP code to reject with (486 when `None`).
    Reject {
        /// The call to reject; `None`: every ringing incoming call.
        call: Option<CallId>,
        /// The SIP status to reject with.
        code: Option<u16>,
    },
    /// End a call (CANCEL, reject or BYE, as its state needs).
    Hangup {
        /// The call to end; `None`: the current call.
        call: Option<CallId>,
    },
    /// End every call except incoming calls still ringing.
    HangupAll,
    /// Cancel outgoing calls not yet answered.
    HangupCalling,
    /// `on`: `Some(true)` hold, `Some(false)` resume, `None` toggle.
    Hold {
        /// The call; `None`: the current call.
        call: Option<CallId>,
        /// Hold (`true`), resume (`false`) or toggle (`None`).
        on: Option<bool>,
    },
    /// Blind transfer with REFER.
    Transfer {
        /// The number or URI to transfer to.
        target: String,
        /// The call to transfer; `None`: the current call.
        call: Option<CallId>,
    },
    /// Send DTMF digits on a confirmed call.
    Dtmf {
        /// The digits, `0-9*#A-D`, `,` = 1 s pause.
        digits: String,
        /// The call; `None`: the current call.
        call: Option<CallId>,
    },
    /// Microphone mute; `None` toggles.
    Mute {
        /// Mute (`true`), unmute (`false`) or toggle (`None`).
        on: Option<bool>,
    },
    /// Speaker mute; `None` toggles.
    SpeakerMute {
        /// Mute (`true`), unmute (`false`) or toggle (`None`).
        on: Option<bool>,
    },
    /// Auto-answer incoming calls for this run (`--autoanswer` to a running phone);
    /// `None` toggles. Not written to the ini.
    AutoAnswer {
        /// On (`true`), off (`false`) or toggle (`None`).
        on: Option<bool>,
    },
    /// Change the speaker volume or microphone level; replies the new level.
    Level {
        /// Which level.
        kind: LevelKind,
        /// To a value, or by a number of points.
        change: LevelChange,
    },
    /// Switch an audio device, also during a call.
    SetDevice {
        /// Which device: input, output or ring.
        role: DeviceRole,
        /// The device's id or name (as `devices` lists them).
        device: String,
    },
    /// List the audio devices with their ids.
    Devices,
    /// The speaker and microphone levels and mutes (read only).
    Levels,
    /// The call status.
    Status {
        /// The word or numeric (`STATUS`) form.
        form: StatusForm,
    },
    /// The remote URI of the active call (empty when there is none).
    ActiveCall,
    /// Every call with id, direction, remote, state, duration and codec.
    Calls,
    /// Switch the active account; with `password`, store that password for it instead.
    Account {
        /// The account's number (its `AccountN` section).
        number: u32,
        /// The password to store for it.
        password: Option<Secret>,
    },
    /// Register now.
    Register {
        /// The account; `None`: the active account.
        account: Option<u32>,
    },
    /// Unregister now.
    Unregister {
        /// The account; `None`: the active account.
        account: Option<u32>,
    },
    /// Set the window state (accepted and answered where there is no window).
    Window {
        /// The state asked for.
        state: WindowState,
    },
    /// Hang up every call cleanly, unregister and exit.
    Exit,
    /// Keep the connection open and stream events; `filter` is an event-type prefix.
    Events {
        /// Only events whose `type` starts with this.
        filter: Option<String>,
    },
    /// `history [missed] [N]`: the call history, newest first; only the missed
    /// calls with `missed`, only the newest `limit` with a number.
    History {
        /// Only the missed calls.
        missed: bool,
        /// At most this many entries.
        limit: Option<usize>,
    },
    /// `messages [CONTACT]`: stored text messages.
    Messages {
        /// Only the messages with this contact; `None`: all.
        contact: Option<String>,
    },
    /// `contacts [list|add|remove]`: the address book (`Contacts.xml`).
    Contacts {
        /// List, add or remove.
        action: ContactsAction,
    },
    /// `media [ID]`, `media stream ID URL [RATE] [replace|mix]`, `media stop ID
    /// [CLIENT]`: live call audio for programs (WebSocket clients).
    Media {
        /// What to do.
        action: MediaCommand,
    },
    /// `record start|stop [ID]`: record a call to a WAV file in `recordingPath`.
    Record {
        /// The call; `None`: the current call.
        call: Option<CallId>,
        /// Start (`true`) or stop (`false`).
        on: bool,
    },
    /// `play FILE [ID] [stop|loop|hangup]`: play a WAV file into a call instead of
    /// the microphone; `file: None` (`play off [ID]`) stops playing.
    Play {
        /// The WAV file; `None`: stop playing.
        file: Option<String>,
        /// The call; `None`: the current call.
        call: Option<CallId>,
        /// What to do when the file runs out.
        at_end: PlayEnd,
    },
    /// `conference [ID...]` merges calls; `conference off [ID]` takes one out, or
    /// ends the conference.
    Conference {
        /// Merge calls, or take one out.
        action: ConferenceAction,
    },
}

/// What happens when a file played into a call runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlayEnd {
    /// Back to the microphone.
    #[default]
    Stop,
    /// Again from the start.
    Loop,
    /// Hang the call up.
    Hangup,
}

/// What `conference` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConferenceAction {
    /// Merge these calls (none named: every confirmed call not on hold).
    Merge(Vec<CallId>),
    /// Take this call out (`None`: end the conference).
    Leave(Option<CallId>),
}

/// What `contacts` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactsAction {
    /// List the contacts.
    List,
    /// Add a contact, or update the one with this number.
    Add {
        /// Its number or SIP URI (the contact's key).
        number: String,
        /// The name shown for it.
        name: String,
        /// Whether to subscribe to its presence.
        presence: bool,
    },
    /// Remove the contact with this number.
    Remove {
        /// The contact's number or SIP URI.
        number: String,
    },
}

impl Command {
    /// The canonical name, as used in audit logs and "not available yet" replies.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Dial { .. } => "dial",
            Command::Redial => "redial",
            Command::Callback => "callback",
            Command::Message { .. } => "message",
            Command::Answer { .. } => "answer",
            Command::Reject { .. } => "reject",
            Command::Hangup { .. } => "hangup",
            Command::HangupAll => "hangupall",
            Command::HangupCalling => "hangupcalling",
            Command::Hold { .. } => "hold",
            Command::Transfer { .. } => "transfer",
            Command::Dtmf { .. } => "dtmf",
            Command::Mute { .. } => "mute",
            Command::SpeakerMute { .. } => "speakermute",
            Command::AutoAnswer { .. } => "autoanswer",
            Command::Level {
                kind: LevelKind::Speaker,
                change: LevelChange::Absolute(_),
            } => "setvolume",
            Command::Level {
                kind: LevelKind::Microphone,
                change: LevelChange::Absolute(_),
            } => "setmicvolume",
            Command::Level {
                kind: LevelKind::Speaker,
                change: LevelChange::Relative(n),
            } => {
                if *n >= 0 {
                    "volumeup"
                } else {
                    "volumedown"
                }
            }
            Command::Level {
                kind: LevelKind::Microphone,
                change: LevelChange::Relative(n),
            } => {
                if *n >= 0 {
                    "micup"
                } else {
                    "micdown"
                }
            }
            Command::SetDevice { .. } => "setdevice",
            Command::Devices => "devices",
            Command::Levels => "levels",
            Command::Status { .. } => "status",
            Command::ActiveCall => "activecall",
            Command::Calls => "calls",
            Command::Account { .. } => "account",
            Command::Register { .. } => "register",
            Command::Unregister { .. } => "unregister",
            Command::Window { .. } => "show",
            Command::Exit => "exit",
            Command::Events { .. } => "events",
            Command::History { .. } => "history",
            Command::Messages { .. } => "messages",
            Command::Contacts { .. } => "contacts",
            Command::Media { .. } => "media",
            Command::Record { .. } => "record",
            Command::Play { .. } => "play",
            Command::Conference { .. } => "conference",
        }
    }
}

/// What `media` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaCommand {
    /// Who streams what: every client of call `call` (`None`: of every call).
    List {
        /// The call; `None`: every call.
        call: Option<CallId>,
    },
    /// The phone connects out to the WebSocket `url` and streams call `call` to it.
    Stream {
        /// The call.
        call: CallId,
        /// A `ws://` URL.
        url: String,
        /// The PCM rate both ways, 8000 or 16000 Hz.
        rate: u32,
        /// How the client's audio goes into the call.
        mode: microsip_media::StreamMode,
    },
    /// Stops streaming call `call` to client `client` (`None`: to every client).
    Stop {
        /// The call.
        call: CallId,
        /// The client's id (from `media`); `None`: every client of the call.
        client: Option<u64>,
    },
}

/// Why a list of words is not a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Stable machine code: `unknown_command` or `bad_argument`.
    pub code: &'static str,
    /// Words a person understands, e.g. `volume must be 0-100`.
    pub message: String,
}
