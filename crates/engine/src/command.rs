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
    Speaker,
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
    Input,
    Output,
    Ring,
}

/// Window state (`minimize`, `show`, `/hide`, `/minimized`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowState {
    Normal,
    Minimized,
    Hidden,
}

/// One command, whatever face it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Start a call. `hold_active`: put an active call on hold first (`dial`: true,
    /// `callto`: false). `numeric`: the DDE `DIAL` form that replies `1`/`0`.
    Dial {
        target: String,
        account: Option<u32>,
        hold_active: bool,
        numeric: bool,
    },
    /// Send a SIP MESSAGE (`message TARGET TEXT`, or `NUMBER TEXT...`).
    Message {
        target: String,
        text: String,
    },
    Answer {
        call: Option<CallId>,
    },
    /// `code`: SIP code to reject with (486 when `None`).
    Reject {
        call: Option<CallId>,
        code: Option<u16>,
    },
    Hangup {
        call: Option<CallId>,
    },
    HangupAll,
    HangupCalling,
    /// `on`: `Some(true)` hold, `Some(false)` resume, `None` toggle.
    Hold {
        call: Option<CallId>,
        on: Option<bool>,
    },
    Transfer {
        target: String,
        call: Option<CallId>,
    },
    Dtmf {
        digits: String,
        call: Option<CallId>,
    },
    /// Microphone mute; `None` toggles.
    Mute {
        on: Option<bool>,
    },
    /// Speaker mute; `None` toggles.
    SpeakerMute {
        on: Option<bool>,
    },
    /// Auto-answer incoming calls for this run (`--autoanswer` to a running phone);
    /// `None` toggles. Not written to the ini.
    AutoAnswer {
        on: Option<bool>,
    },
    Level {
        kind: LevelKind,
        change: LevelChange,
    },
    SetDevice {
        role: DeviceRole,
        device: String,
    },
    Devices,
    Status {
        form: StatusForm,
    },
    ActiveCall,
    Calls,
    /// Switch the active account; with `password`, store that password for it instead.
    Account {
        number: u32,
        password: Option<Secret>,
    },
    Register {
        account: Option<u32>,
    },
    Unregister {
        account: Option<u32>,
    },
    Window {
        state: WindowState,
    },
    Exit,
    /// Keep the connection open and stream events; `filter` is an event-type prefix.
    Events {
        filter: Option<String>,
    },
    /// `history [missed] [N]`: the call history, newest first; only the missed
    /// calls with `missed`, only the newest `limit` with a number.
    History {
        missed: bool,
        limit: Option<usize>,
    },
    /// `messages [CONTACT]`: stored text messages.
    Messages {
        contact: Option<String>,
    },
    /// `contacts [list|add|remove]`: the address book (`Contacts.xml`).
    Contacts {
        action: ContactsAction,
    },
    /// `record start|stop [ID]`: record a call to a WAV file in `recordingPath`.
    Record {
        call: Option<CallId>,
        on: bool,
    },
    /// `play FILE [ID] [stop|loop|hangup]`: play a WAV file into a call instead of
    /// the microphone; `file: None` (`play off [ID]`) stops playing.
    Play {
        file: Option<String>,
        call: Option<CallId>,
        at_end: PlayEnd,
    },
    /// `conference [ID...]` merges calls; `conference off [ID]` takes one out, or
    /// ends the conference.
    Conference {
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
    List,
    Add {
        number: String,
        name: String,
        presence: bool,
    },
    Remove {
        number: String,
    },
}

impl Command {
    /// The canonical name, as used in audit logs and "not available yet" replies.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Dial { .. } => "dial",
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
            Command::Record { .. } => "record",
            Command::Play { .. } => "play",
            Command::Conference { .. } => "conference",
        }
    }
}

/// Why a list of words is not a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Stable machine code: `unknown_command` or `bad_argument`.
    pub code: &'static str,
    /// Words a person understands, e.g. `volume must be 0-100`.
    pub message: String,
}
