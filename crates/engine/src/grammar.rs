//! The grammar: the words a script sends (command line or one socket line) → one
//! [`Command`], or several for a DDE execute string (`[Hold][Dial(1002)]`, see
//! the `dde` module).

use crate::command::{
    CallId, Command, ConferenceAction, ContactsAction, DeviceRole, LevelChange, LevelKind,
    ParseError, PlayEnd, Secret, StatusForm, WindowState,
};
use crate::dde;

/// Points one `volumeup`/`volumedown`/`micup`/`micdown` step moves a level. The `msip:`
/// forms (`msip:speakup`...) move exactly one step.
pub const LEVEL_STEP_POINTS: i32 = 5;

/// What `dtmf` accepts, for error messages.
const DTMF_ALLOWED: &str = "0-9, *, #, A-D, and ',' for a pause";

/// One command word of the grammar, as the documentation shows it: the canonical
/// name, its arguments and what it does. [`COMMANDS`] lists every one; the man page
/// and the shell completions are made from it (`microsip man`,
/// `microsip completions SHELL`), and the tests below hold it to the parser: each
/// name parses (is no `unknown_command`), and each command the parser makes has
/// its name here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandHelp {
    /// The canonical command word (`dial`, `hangup`, ...).
    pub name: &'static str,
    /// The arguments, as a synopsis (`TARGET [ACCOUNT]`); empty when none.
    pub args: &'static str,
    /// One line: what it does, and the other spellings it has.
    pub help: &'static str,
    /// Fixed words the first argument may be, for completion (`on`, `off`...).
    pub words: &'static [&'static str],
}

const fn help(
    name: &'static str,
    args: &'static str,
    help: &'static str,
    words: &'static [&'static str],
) -> CommandHelp {
    CommandHelp {
        name,
        args,
        help,
        words,
    }
}

/// Every canonical command, in the order the documentation lists them.
pub const COMMANDS: &[CommandHelp] = &[
    help("dial", "TARGET [ACCOUNT]", "call TARGET (a number, sip:, sips:, tel:, callto: URI); an active call is held first (Dial, DIAL, msip:NUMBER, a bare number)", &[]),
    help("callto", "TARGET [ACCOUNT]", "call without holding the active call (CallTo)", &[]),
    help("redial", "", "dial the number dialled last, through the dial plan (lastCallNumber after a restart)", &[]),
    help("callback", "", "call the caller of the last missed call, through the dial plan", &[]),
    help("message", "TARGET TEXT...", "send a SIP MESSAGE (also NUMBER TEXT...)", &[]),
    help("answer", "[ID]", "answer a ringing call, the oldest without an id (Answer, /answer, msip:answer)", &[]),
    help("reject", "[ID] [CODE]", "reject ringing calls with 486, or CODE (Reject, /hangupincoming)", &["decline"]),
    help("decline", "[ID]", "reject ringing calls with 603 Decline", &[]),
    help("hangup", "[ID]", "end the active call, or call ID (Hangup, HANGUP)", &[]),
    help("hangupall", "", "end every call but ringing incoming ones (/hangupall, msip:hangupall)", &[]),
    help("hangupcalling", "", "cancel unanswered outgoing calls (/hangupcalling)", &[]),
    help("hold", "[ID] [on|off]", "toggle or set hold (Hold, msip:hold)", &["on", "off"]),
    help("transfer", "TARGET [ID]", "blind transfer (Transfer, /transfer:N, msip:transfer_N); TARGET the id of another call (transfer C ID): attended transfer of ID to that call's remote (REFER with Replaces)", &[]),
    help("dtmf", "DIGITS [ID]", "send DTMF 0-9 * # A-D, ',' a pause (SendDTMF, /dtmf:D)", &[]),
    help("media", "[ID] | stream ID URL [8000|16000] [replace|mix] | stop ID [CLIENT]", "live call audio for programs: who streams what, stream a call to a ws:// URL, stop", &["stream", "stop"]),
    help("record", "start|stop [ID]", "record the call to a WAV file in recordingPath", &["start", "stop"]),
    help("play", "FILE [ID] [stop|loop|hangup]", "play a WAV file into the call; play off [ID] stops it", &["off"]),
    help("conference", "[ID...] | off [ID]", "merge calls, or take one out / end the conference", &["off"]),
    help("mute", "[on|off]", "microphone mute, toggled without an argument (Mute, msip:micmute)", &["on", "off"]),
    help("speakermute", "[on|off]", "speaker mute (msip:speakmute)", &["on", "off"]),
    help("autoanswer", "[on|off]", "auto-answer incoming calls for this run", &["on", "off"]),
    help("volumeup", "[N]", "speaker volume up N steps 1-10 (VolumeUp, msip:speakup)", &[]),
    help("volumedown", "[N]", "speaker volume down N steps (VolumeDown, msip:speakdown)", &[]),
    help("micup", "[N]", "microphone level up N steps (msip:micup)", &[]),
    help("micdown", "[N]", "microphone level down N steps (msip:micdown)", &[]),
    help("setvolume", "LEVEL", "speaker volume 0-100 (SetVolume, VOLUME)", &[]),
    help("setmicvolume", "LEVEL", "microphone level 0-100 (SetMicVolume)", &[]),
    help("levels", "", "the speaker and microphone levels and mutes", &[]),
    help("setdevice", "input|output|ring DEVICE", "switch an audio device: a number from devices, an id, a name, null, file:PATH.wav, tone:FREQ (SetDevice)", &["input", "output", "ring"]),
    help("devices", "", "list the audio devices, numbered", &[]),
    help("status", "", "call status: 0 idle, 1 ringing, 2 active, 3 hold, 4 disconnected (Status; STATUS and report:status: the number)", &[]),
    help("activecall", "", "remote URI of the active call (ACTIVECALL)", &[]),
    help("calls", "", "every call: id, direction, account, remote, state, duration, codec", &[]),
    help("history", "[missed] [N]", "the call history, newest first", &["missed"]),
    help("messages", "[CONTACT]", "stored text messages", &[]),
    help("contacts", "[list | add NUMBER [NAME...] | remove NUMBER]", "the address book (Contacts.xml)", &["list", "add", "remove"]),
    help("account", "N [/password:P]", "switch the active account, or store its password (/account:N)", &[]),
    help("register", "[N]", "register now", &[]),
    help("unregister", "[N]", "unregister now", &[]),
    help("show", "[normal|minimized|hidden]", "window state (--show)", &["normal", "minimized", "hidden"]),
    help("minimize", "", "minimize the window (msip:minimize, /minimized)", &[]),
    help("hide", "", "hide the window (/hide)", &[]),
    help("events", "[FILTER]", "stream events as JSON lines (FILTER: a type prefix, e.g. call.)", &[]),
    help("exit", "", "hang up every call, unregister and exit (Close, QUIT, /exit)", &[]),
];

/// Parse one socket line that must hold one command: split it into words (see
/// [`split_words`]), then [`parse_args`]. A DDE execute string holding one command
/// (`[Status]`) is one too.
pub fn parse_line(line: &str) -> Result<Command, ParseError> {
    only_one(parse_line_all(line)?)
}

/// Parse one socket line into the commands it holds, in order: one for the word
/// forms (`hold 3 on`), one or more for a DDE execute string (`[Hold][Dial(1002)]`).
/// A string that does not parse whole is an error, so nothing of it runs.
pub fn parse_line_all(line: &str) -> Result<Vec<Command>, ParseError> {
    if dde::is_execute_string(line) {
        return parse_execute(line);
    }
    Ok(vec![parse_args(&split_words(line)?)?])
}

/// [`parse_line_all`] for words as a command line gives them: words that start with
/// `[` are one DDE execute string (`microsip '[Dial(1002)]'`, or
/// `microsip [Hold] [Status]`).
pub fn parse_args_all(words: &[String]) -> Result<Vec<Command>, ParseError> {
    match words.first() {
        Some(first) if dde::is_execute_string(first) => parse_execute(&words.join(" ")),
        _ => Ok(vec![parse_words_or_line(words)?]),
    }
}

fn only_one(mut commands: Vec<Command>) -> Result<Command, ParseError> {
    match commands.len() {
        1 => Ok(commands.remove(0)),
        n => Err(bad(format!(
            "this string holds {n} commands where one is expected"
        ))),
    }
}

/// A DDE execute string: every part parsed before any runs. Each part's verb is
/// one of the command names (`Dial`, `SetDevice`, `Status`, `report:status`...;
/// never a dial target or a `/x:` or `msip:` form), its arguments are read like a
/// socket line's words, commas separating them (see [`plain_args`]). `[Status]`
/// replies the number, as `STATUS` does (integrators poll it). `events` streams
/// and cannot be bracketed; `Close` (exit) may only come last.
fn parse_execute(text: &str) -> Result<Vec<Command>, ParseError> {
    let parts = dde::split(text)?;
    let mut commands = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let in_part = |e: ParseError| ParseError {
            code: e.code,
            message: format!("{} in '{}'", e.message, shown_within(&part.text, 60, "...")),
        };
        let verb = part.verb.as_str();
        let named = verb.starts_with(|c: char| c.is_ascii_alphabetic())
            && verb.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !named && !verb.eq_ignore_ascii_case("report:status") {
            return Err(in_part(unknown(verb)));
        }
        let mut words = vec![part.verb.clone()];
        words.extend(split_words(&part.args).map_err(in_part)?);
        let command = match parse_words(&words).map_err(in_part)? {
            Command::Status { .. } => Command::Status {
                form: StatusForm::Numeric,
            },
            Command::Events { .. } => {
                return Err(in_part(bad(
                    "events is a stream, not a DDE command: ask for it as `events`",
                )))
            }
            Command::Exit if i + 1 < parts.len() => {
                return Err(in_part(bad("nothing may follow an exit")));
            }
            other => other,
        };
        commands.push(command);
    }
    Ok(commands)
}

/// Split a line into words on whitespace. A double quote groups words (`"hello there"`,
/// also mid-word: `/password:"a b"`); inside quotes `\"` is a quote and `\\` a
/// backslash, any other backslash is itself. `""` is an empty word. An unterminated
/// quote is a `bad_argument` error.
pub fn split_words(line: &str) -> Result<Vec<String>, ParseError> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '"' {
            in_word = true;
            loop {
                match chars.next() {
                    None => return Err(bad("unterminated quote")),
                    Some('"') => break,
                    Some('\\') => match chars.peek() {
                        Some(&next) if next == '"' || next == '\\' => {
                            current.push(next);
                            chars.next();
                        }
                        _ => current.push('\\'),
                    },
                    Some(other) => current.push(other),
                }
            }
        } else if c.is_whitespace() {
            if in_word {
                words.push(std::mem::take(&mut current));
                in_word = false;
            }
        } else {
            in_word = true;
            current.push(c);
        }
    }
    if in_word {
        words.push(current);
    }
    Ok(words)
}

/// Parse the words after the program's options (`microsip /answer`, `microsip hold 3
/// on`, `microsip msip:hangupall`, `microsip 123`).
///
/// Three families of names reach the same command, case-insensitively: DDE-style words
/// (`Dial`, `SendDTMF`, `QUIT`), MicroSIP's command-line forms (`/answer`,
/// `/transfer:<n>`, `/account:<n> /password:<p>`), its `msip:` forms (`msip:answer`,
/// `msip:transfer_<n>`), and dial targets on their own (`123`, `sip:100@host`,
/// `tel:+123`, `1001@10.0.0.1`); a target followed by more words is a MESSAGE. Never
/// panics; every error is `unknown_command` or `bad_argument`.
///
/// A single word that holds whitespace (`microsip "123 hello"`, how MicroSIP's own
/// command line arrives) is split on whitespace first. Words that start with `[`
/// are a DDE execute string that must hold one command (`[Dial(1002)]`); see
/// [`parse_args_all`] for several.
///
/// Arguments may be separated by commas too, as MicroSIP's documents write them
/// (`SetDevice input, 2`, `hold 3, on`): see `plain_args` and `value_args`.
pub fn parse_args(words: &[String]) -> Result<Command, ParseError> {
    only_one(parse_args_all(words)?)
}

fn parse_words_or_line(words: &[String]) -> Result<Command, ParseError> {
    if let [only] = words {
        if only.chars().any(char::is_whitespace) {
            let split: Vec<String> = only.split_whitespace().map(str::to_string).collect();
            return parse_words(&split);
        }
    }
    parse_words(words)
}

fn parse_words(words: &[String]) -> Result<Command, ParseError> {
    let Some((first, rest)) = words.split_first() else {
        return Err(bad("empty command"));
    };
    if first.is_empty() {
        return Err(bad("empty command"));
    }
    // ASCII lowercase keeps byte offsets, so `first[n..]` matches `lower[n..]`.
    let lower = first.to_ascii_lowercase();
    // Arguments that cannot hold a comma, for the commands that take only those.
    let plain = || plain_args(rest);
    match lower.as_str() {
        "dial" => dial("dial", rest, true, first == "DIAL"),
        "callto" => dial("callto", rest, false, false),
        "redial" => no_arguments("redial", &plain(), Command::Redial),
        "callback" => no_arguments("callback", &plain(), Command::Callback),
        "message" => message(rest),
        "answer" => Ok(Command::Answer {
            call: optional_call("answer", &plain())?,
        }),
        "reject" => reject("reject", &plain(), None),
        "decline" => reject("decline", &plain(), Some(603)),
        "hangup" => Ok(Command::Hangup {
            call: optional_call("hangup", &plain())?,
        }),
        "hangupall" => no_arguments("hangupall", &plain(), Command::HangupAll),
        "hangupcalling" => no_arguments("hangupcalling", &plain(), Command::HangupCalling),
        "hold" => hold(&plain()),
        "transfer" => transfer(&value_args(rest)),
        "dtmf" | "senddtmf" => match value_args(rest).split_first() {
            Some((digits, more)) => dtmf(digits, more),
            None => Err(bad(format!("dtmf needs digits: {DTMF_ALLOWED}"))),
        },
        "mute" => Ok(Command::Mute {
            on: optional_switch("mute", &plain())?,
        }),
        "speakermute" => Ok(Command::SpeakerMute {
            on: optional_switch("speakermute", &plain())?,
        }),
        "autoanswer" => Ok(Command::AutoAnswer {
            on: optional_switch("autoanswer", &plain())?,
        }),
        "volumeup" => relative("volumeup", LevelKind::Speaker, 1, &plain()),
        "volumedown" => relative("volumedown", LevelKind::Speaker, -1, &plain()),
        "micup" => relative("micup", LevelKind::Microphone, 1, &plain()),
        "micdown" => relative("micdown", LevelKind::Microphone, -1, &plain()),
        "setvolume" | "volume" => absolute("setvolume", LevelKind::Speaker, &plain()),
        "setmicvolume" => absolute("setmicvolume", LevelKind::Microphone, &plain()),
        "setdevice" => set_device(rest),
        "devices" => no_arguments("devices", &plain(), Command::Devices),
        "levels" => no_arguments("levels", &plain(), Command::Levels),
        "status" => {
            let form = if first == "STATUS" {
                StatusForm::Numeric
            } else {
                StatusForm::Word
            };
            no_arguments("status", &plain(), Command::Status { form })
        }
        // MicroSIP's documents: "use report:status for state management".
        "report:status" => no_arguments(
            "report:status",
            &plain(),
            Command::Status {
                form: StatusForm::Numeric,
            },
        ),
        "activecall" => no_arguments("activecall", &plain(), Command::ActiveCall),
        "calls" => no_arguments("calls", &plain(), Command::Calls),
        "history" => history(&plain()),
        "contacts" => contacts(rest),
        "messages" => match value_args(rest).as_slice() {
            [] => Ok(Command::Messages { contact: None }),
            [contact] => Ok(Command::Messages {
                contact: Some(contact.clone()),
            }),
            _ => Err(bad("messages takes at most one contact")),
        },
        "account" => match rest.split_first() {
            Some((number, more)) => account(number.trim_end_matches(','), more),
            None => Err(bad("account needs an account number")),
        },
        "register" => Ok(Command::Register {
            account: optional_account("register", &plain())?,
        }),
        "unregister" => Ok(Command::Unregister {
            account: optional_account("unregister", &plain())?,
        }),
        "show" => show(&plain()),
        "minimize" => window("minimize", &plain(), WindowState::Minimized),
        "hide" => window("hide", &plain(), WindowState::Hidden),
        "exit" | "close" | "quit" => no_arguments("exit", &plain(), Command::Exit),
        "events" => events(&value_args(rest)),
        "media" => media(rest),
        "record" => record(&plain()),
        "play" => play(&value_args(rest)),
        "conference" => conference(&plain()),
        _ => prefixed(first, &lower, rest),
    }
}

/// The forms that carry their argument inside the first word, and dial targets.
fn prefixed(first: &str, lower: &str, rest: &[String]) -> Result<Command, ParseError> {
    if lower.starts_with('/') {
        return slash_form(first, lower, rest);
    }
    if let Some(lower_rest) = lower.strip_prefix("msip:") {
        return msip_form(&first[5..], lower_rest, rest);
    }
    if lower.starts_with("dtmf:") {
        return dtmf(&first[5..], rest);
    }
    const SCHEMES: [&str; 6] = ["sip:", "sips:", "tel:", "callto:", "dial:", "dialpad:"];
    if SCHEMES.iter().any(|scheme| lower.starts_with(scheme)) {
        return dial_target("dial", first, rest, true, false);
    }
    // A bare number or address: dial it, or with more words send them as a MESSAGE.
    let decoded = percent_decode(first)?;
    if is_number_like(&decoded) || is_address_like(&decoded) {
        let target = checked_target("dial", &decoded)?;
        if rest.is_empty() {
            return Ok(Command::Dial {
                target,
                account: None,
                hold_active: true,
                numeric: false,
            });
        }
        return Ok(Command::Message {
            target,
            text: rest.join(" "),
        });
    }
    Err(unknown(first))
}

/// MicroSIP's command-line forms: `/answer`, `/transfer:<n>`, `/account:<n>`...
fn slash_form(first: &str, lower: &str, rest: &[String]) -> Result<Command, ParseError> {
    match lower {
        "/answer" => {
            return Ok(Command::Answer {
                call: optional_call("/answer", rest)?,
            })
        }
        "/hangupall" => return no_arguments("/hangupall", rest, Command::HangupAll),
        "/hangupcalling" => return no_arguments("/hangupcalling", rest, Command::HangupCalling),
        "/hangupincoming" => return reject("/hangupincoming", rest, None),
        "/exit" => return no_arguments("/exit", rest, Command::Exit),
        "/hide" => return window("/hide", rest, WindowState::Hidden),
        "/minimized" => return window("/minimized", rest, WindowState::Minimized),
        _ => {}
    }
    if lower.starts_with("/transfer:") {
        let mut words = vec![first[10..].to_string()];
        words.extend_from_slice(rest);
        return transfer(&words);
    }
    if lower.starts_with("/dtmf:") {
        return dtmf(&first[6..], rest);
    }
    if lower.starts_with("/account:") {
        return account(&first[9..], rest);
    }
    if lower.starts_with("/password:") {
        // `/password:P /account:N`: the same as the other order.
        let password = first[10..].to_string();
        return match rest {
            [only] if only.to_ascii_lowercase().starts_with("/account:") => {
                let number = parse_account(&only[9..])?;
                Ok(Command::Account {
                    number,
                    password: Some(Secret(password)),
                })
            }
            _ => Err(bad(
                "/password: goes with one /account:N (and nothing else)",
            )),
        };
    }
    Err(unknown(first))
}

/// `msip:` forms; `raw` and `lower` are what follows `msip:`.
fn msip_form(raw: &str, lower: &str, rest: &[String]) -> Result<Command, ParseError> {
    let step = LEVEL_STEP_POINTS;
    let fixed = |name: &str, command: Command| no_arguments(&format!("msip:{name}"), rest, command);
    let level = |kind, points| Command::Level {
        kind,
        change: LevelChange::Relative(points),
    };
    match lower {
        "answer" => Ok(Command::Answer {
            call: optional_call("msip:answer", rest)?,
        }),
        "hangupall" => fixed(lower, Command::HangupAll),
        "hold" => hold(rest),
        "micmute" => fixed(lower, Command::Mute { on: Some(true) }),
        "micunmute" => fixed(lower, Command::Mute { on: Some(false) }),
        "micmuteclick" => fixed(lower, Command::Mute { on: None }),
        "speakmute" => fixed(lower, Command::SpeakerMute { on: Some(true) }),
        "speakunmute" => fixed(lower, Command::SpeakerMute { on: Some(false) }),
        "speakmuteclick" => fixed(lower, Command::SpeakerMute { on: None }),
        "speakup" => fixed(lower, level(LevelKind::Speaker, step)),
        "speakdown" => fixed(lower, level(LevelKind::Speaker, -step)),
        "micup" => fixed(lower, level(LevelKind::Microphone, step)),
        "micdown" => fixed(lower, level(LevelKind::Microphone, -step)),
        "minimize" => fixed(
            lower,
            Command::Window {
                state: WindowState::Minimized,
            },
        ),
        _ if lower.starts_with("transfer_") => {
            let mut words = vec![raw[9..].to_string()];
            words.extend_from_slice(rest);
            transfer(&words)
        }
        // `msip:<number>` (or any other target): dial it.
        _ => dial_target("dial", raw, rest, true, false),
    }
}

fn dial(
    name: &str,
    rest: &[String],
    hold_active: bool,
    numeric: bool,
) -> Result<Command, ParseError> {
    match value_args(rest).split_first() {
        Some((target, more)) => dial_target(name, target, more, hold_active, numeric),
        None => Err(bad(format!("{name} needs a target"))),
    }
}

/// A dial with its target known: `more` is nothing, `N` or `account N`.
fn dial_target(
    name: &str,
    raw_target: &str,
    more: &[String],
    hold_active: bool,
    numeric: bool,
) -> Result<Command, ParseError> {
    let target = normalize_target(name, raw_target)?;
    let account = match more {
        [] => None,
        [number] => Some(parse_account(number)?),
        [word, number] if word.eq_ignore_ascii_case("account") => Some(parse_account(number)?),
        _ => {
            return Err(bad(format!(
                "{name} takes a target and an optional account number"
            )))
        }
    };
    Ok(Command::Dial {
        target,
        account,
        hold_active,
        numeric,
    })
}

/// `message TARGET TEXT...`; the text keeps its commas (`message 100, hello, world`).
fn message(rest: &[String]) -> Result<Command, ParseError> {
    match value_then_text(rest) {
        None => Err(bad("message needs a target and a text")),
        Some((_, [])) => Err(bad("message needs a text after the target")),
        Some((target, text)) => Ok(Command::Message {
            target: normalize_target("message", &target)?,
            text: text.join(" "),
        }),
    }
}

/// `contacts [list]`, `contacts add NUMBER [NAME...]`, `contacts remove NUMBER`; the
/// name keeps its commas (`contacts add 100, Smith, John`).
fn contacts(rest: &[String]) -> Result<Command, ParseError> {
    let Some((verb, args)) = rest.split_first() else {
        return Ok(Command::Contacts {
            action: ContactsAction::List,
        });
    };
    let verb = verb.trim_end_matches(',').to_ascii_lowercase();
    let args = match args.split_first() {
        Some((comma, more)) if comma == "," => more,
        _ => args,
    };
    let action = match (verb.as_str(), value_then_text(args)) {
        ("list", None) => ContactsAction::List,
        ("add", Some((number, name))) => ContactsAction::Add {
            name: if name.is_empty() {
                number.clone()
            } else {
                name.join(" ")
            },
            number,
            presence: false,
        },
        ("remove", Some((number, []))) => ContactsAction::Remove { number },
        _ => {
            return Err(bad(
                "contacts takes: list | add NUMBER [NAME...] | remove NUMBER",
            ))
        }
    };
    Ok(Command::Contacts { action })
}

/// `history [missed] [N]`: every call (or the missed ones), the newest N.
fn history(rest: &[String]) -> Result<Command, ParseError> {
    const USAGE: &str = "history takes 'missed' and a number of calls, e.g. history missed 10";
    let mut missed = false;
    let mut limit = None;
    for word in rest {
        if word.eq_ignore_ascii_case("missed") && !missed {
            missed = true;
        } else if is_digits(word) && limit.is_none() {
            match word.parse::<usize>() {
                Ok(n) if n > 0 => limit = Some(n),
                _ => {
                    return Err(bad(format!(
                        "history count must be a positive number, got '{}'",
                        shown(word)
                    )))
                }
            }
        } else if word.starts_with("--") {
            return Err(bad(format!(
                "{USAGE}; options go before the command (microsip {} history)",
                shown(word)
            )));
        } else {
            return Err(bad(format!("{USAGE}, got '{}'", shown(word))));
        }
    }
    Ok(Command::History { missed, limit })
}

fn reject(name: &str, rest: &[String], default_code: Option<u16>) -> Result<Command, ParseError> {
    let mut call = None;
    let mut code = default_code;
    let mut code_given = false;
    for word in rest {
        let new_code = if word.eq_ignore_ascii_case("decline") {
            Some(603)
        } else if is_digits(word) {
            match word.parse::<u64>() {
                Ok(n) if (400..=699).contains(&n) => u16::try_from(n).ok(),
                Ok(n) if n >= 400 => {
                    return Err(bad(format!("SIP code must be 400-699, got '{n}'")));
                }
                _ => {
                    if call.is_some() {
                        return Err(bad(format!("{name} takes one call id")));
                    }
                    call = Some(parse_call_id(word)?);
                    continue;
                }
            }
        } else {
            return Err(bad(format!(
                "{name} takes an optional call id and SIP code (400-699, or 'decline'), got '{}'",
                shown(word)
            )));
        };
        if code_given {
            return Err(bad(format!("{name} takes one SIP code")));
        }
        code_given = true;
        code = new_code;
    }
    Ok(Command::Reject { call, code })
}

fn hold(rest: &[String]) -> Result<Command, ParseError> {
    if rest.len() > 2 {
        return Err(bad("hold takes an optional call id and on or off"));
    }
    let mut call = None;
    let mut on = None;
    for word in rest {
        if is_digits(word) {
            if call.is_some() {
                return Err(bad("hold takes one call id"));
            }
            call = Some(parse_call_id(word)?);
        } else {
            let mode = match word.to_ascii_lowercase().as_str() {
                "on" => true,
                "off" => false,
                _ => {
                    return Err(bad(format!(
                        "no such hold mode '{}': use on or off",
                        shown(word)
                    )))
                }
            };
            if on.is_some() {
                return Err(bad("hold takes one of on or off"));
            }
            on = Some(mode);
        }
    }
    Ok(Command::Hold { call, on })
}

fn transfer(words: &[String]) -> Result<Command, ParseError> {
    let Some((target, more)) = words.split_first() else {
        return Err(bad("transfer needs a target"));
    };
    let target = normalize_target("transfer", target)?;
    let call = match more {
        [] => None,
        [id] => Some(parse_call_id(id)?),
        _ => return Err(bad("transfer takes a target and an optional call id")),
    };
    Ok(Command::Transfer { target, call })
}

fn dtmf(digits: &str, more: &[String]) -> Result<Command, ParseError> {
    if digits.is_empty() {
        return Err(bad(format!("dtmf needs digits: {DTMF_ALLOWED}")));
    }
    let mut checked = String::with_capacity(digits.len());
    for c in digits.chars() {
        match c {
            '0'..='9' | '*' | '#' | ',' | 'A'..='D' => checked.push(c),
            'a'..='d' => checked.push(c.to_ascii_uppercase()),
            _ => {
                return Err(bad(format!(
                    "no such DTMF digit '{}': use {DTMF_ALLOWED}",
                    shown(&c.to_string())
                )))
            }
        }
    }
    let call = match more {
        [] => None,
        [id] => Some(parse_call_id(id)?),
        _ => return Err(bad("dtmf takes digits and an optional call id")),
    };
    Ok(Command::Dtmf {
        digits: checked,
        call,
    })
}

fn optional_switch(name: &str, rest: &[String]) -> Result<Option<bool>, ParseError> {
    match rest {
        [] => Ok(None),
        [word] => match word.to_ascii_lowercase().as_str() {
            "on" | "1" => Ok(Some(true)),
            "off" | "0" => Ok(Some(false)),
            _ => Err(bad(format!(
                "no such {name} mode '{}': use on, off, 1 or 0",
                shown(word)
            ))),
        },
        _ => Err(bad(format!("{name} takes at most one of on, off, 1 or 0"))),
    }
}

fn relative(
    name: &str,
    kind: LevelKind,
    sign: i32,
    rest: &[String],
) -> Result<Command, ParseError> {
    let steps: i32 = match rest {
        [] => 1,
        [word] => match word.parse::<i32>() {
            Ok(n) if is_digits(word) && (1..=10).contains(&n) => n,
            _ => {
                return Err(bad(format!(
                    "{name} steps must be 1-10, got '{}'",
                    shown(word)
                )))
            }
        },
        _ => return Err(bad(format!("{name} takes at most a number of steps 1-10"))),
    };
    Ok(Command::Level {
        kind,
        change: LevelChange::Relative(sign * steps * LEVEL_STEP_POINTS),
    })
}

fn absolute(name: &str, kind: LevelKind, rest: &[String]) -> Result<Command, ParseError> {
    match rest {
        [] => Err(bad(format!("{name} needs a level 0-100"))),
        [word] => match word.parse::<u8>() {
            Ok(n) if is_digits(word) && n <= 100 => Ok(Command::Level {
                kind,
                change: LevelChange::Absolute(n),
            }),
            _ => Err(bad("volume must be 0-100")),
        },
        _ => Err(bad(format!("{name} takes one level 0-100"))),
    }
}

/// `setdevice ROLE DEVICE`: `SetDevice input, 2`, `SetDevice output,null` and
/// `SetDevice ring Built-in Audio, Analog Stereo` (a device name keeps its commas
/// and spaces).
fn set_device(rest: &[String]) -> Result<Command, ParseError> {
    let Some((first, more)) = rest.split_first() else {
        return Err(bad(
            "setdevice needs input, output or ring and a device id, number or name",
        ));
    };
    // The role cannot hold a comma: one right after it separates.
    let (role_word, glued) = match first.split_once(',') {
        Some((role, after)) => (role, Some(after)),
        None => (first.as_str(), None),
    };
    let role = match role_word.to_ascii_lowercase().as_str() {
        "input" => DeviceRole::Input,
        "output" => DeviceRole::Output,
        "ring" => DeviceRole::Ring,
        _ => {
            return Err(bad(format!(
                "no such device role '{}': use input, output or ring",
                shown(role_word)
            )))
        }
    };
    let mut words: Vec<&str> = glued
        .into_iter()
        .chain(more.iter().map(String::as_str))
        .collect();
    // A comma standing between the role and the device.
    if let Some(first) = words.first_mut() {
        *first = first.strip_prefix(',').unwrap_or(first);
    }
    let device = words.join(" ");
    if device.trim().is_empty() {
        return Err(bad("setdevice needs a device id, number or name"));
    }
    Ok(Command::SetDevice {
        role,
        device: device.trim().to_string(),
    })
}

/// `account N [/password:P]` and `/account:N [/password:P]`. Never echoes a password.
fn account(number: &str, more: &[String]) -> Result<Command, ParseError> {
    let number = parse_account(number)?;
    let password = match more {
        [] => None,
        [word] if word.to_ascii_lowercase().starts_with("/password:") => {
            Some(word[10..].to_string())
        }
        _ => {
            return Err(bad(
                "account takes an account number and an optional /password:P",
            ))
        }
    };
    Ok(Command::Account {
        number,
        password: password.map(Secret),
    })
}

fn show(rest: &[String]) -> Result<Command, ParseError> {
    let state = match rest {
        [] => WindowState::Normal,
        [word] => match word.to_ascii_lowercase().as_str() {
            "normal" => WindowState::Normal,
            "minimized" => WindowState::Minimized,
            "hidden" => WindowState::Hidden,
            _ => {
                return Err(bad(format!(
                    "no such window state '{}': use normal, minimized or hidden",
                    shown(word)
                )))
            }
        },
        _ => return Err(bad("show takes at most one of normal, minimized or hidden")),
    };
    Ok(Command::Window { state })
}

fn window(name: &str, rest: &[String], state: WindowState) -> Result<Command, ParseError> {
    no_arguments(name, rest, Command::Window { state })
}

fn events(rest: &[String]) -> Result<Command, ParseError> {
    match rest {
        [] => Ok(Command::Events { filter: None }),
        [filter] => Ok(Command::Events {
            filter: Some(filter.clone()),
        }),
        _ => Err(bad("events takes at most one filter")),
    }
}

/// `media [ID]`, `media list [ID]`, `media stream ID URL [RATE] [replace|mix]`,
/// `media stop ID [CLIENT]`.
fn media(rest: &[String]) -> Result<Command, ParseError> {
    use crate::command::MediaCommand;
    const USAGE: &str =
        "media takes an optional call id, or stream ID URL [8000|16000] [replace|mix], or stop ID [CLIENT]";
    let action = match rest.split_first() {
        None => MediaCommand::List { call: None },
        Some((verb, more)) => match verb.to_ascii_lowercase().as_str() {
            "list" => match more {
                [] => MediaCommand::List { call: None },
                [id] => MediaCommand::List {
                    call: Some(parse_call_id(id)?),
                },
                _ => return Err(bad(USAGE)),
            },
            "stream" => {
                let [id, url, options @ ..] = more else {
                    return Err(bad("media stream needs a call id and a ws:// URL"));
                };
                let call = parse_call_id(id)?;
                let url = stream_url(url)?;
                let mut rate = None;
                let mut mode = None;
                for word in options {
                    if is_digits(word) {
                        if rate.is_some() {
                            return Err(bad(USAGE));
                        }
                        rate = match word.as_str() {
                            "8000" => Some(8000),
                            "16000" => Some(16000),
                            _ => {
                                return Err(bad(format!(
                                    "media rate must be 8000 or 16000, got '{}'",
                                    shown(word)
                                )))
                            }
                        };
                    } else if let Some(m) = microsip_media::StreamMode::parse(word) {
                        if mode.is_some() {
                            return Err(bad(USAGE));
                        }
                        mode = Some(m);
                    } else {
                        return Err(bad(format!(
                            "media stream takes a rate (8000 or 16000) and replace or mix, got '{}'",
                            shown(word)
                        )));
                    }
                }
                MediaCommand::Stream {
                    call,
                    url,
                    rate: rate.unwrap_or(8000),
                    mode: mode.unwrap_or_default(),
                }
            }
            "stop" => match more {
                [id] => MediaCommand::Stop {
                    call: parse_call_id(id)?,
                    client: None,
                },
                [id, client] => MediaCommand::Stop {
                    call: parse_call_id(id)?,
                    client: Some(match client.parse::<u64>() {
                        Ok(n) if is_digits(client) && n > 0 => n,
                        _ => {
                            return Err(bad(format!(
                                "client id must be a positive number, got '{}'",
                                shown(client)
                            )))
                        }
                    }),
                },
                _ => return Err(bad("media stop needs a call id and an optional client id")),
            },
            _ if is_digits(verb) && more.is_empty() => MediaCommand::List {
                call: Some(parse_call_id(verb)?),
            },
            _ => return Err(bad(USAGE)),
        },
    };
    Ok(Command::Media { action })
}

/// A `ws://` URL for `media stream` (`wss://` is refused: not supported yet).
fn stream_url(url: &str) -> Result<String, ParseError> {
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad("the media URL contains a space or a control character"));
    }
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("wss://") {
        return Err(bad(
            "wss:// (WebSocket over TLS) is not supported yet for media: use ws://",
        ));
    }
    match lower.strip_prefix("ws://") {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(url.to_string()),
        _ => Err(bad(format!(
            "the media URL must be ws://HOST:PORT/PATH, got '{}'",
            shown(url)
        ))),
    }
}

/// `record start|stop [ID]` (`on`/`off` too).
fn record(rest: &[String]) -> Result<Command, ParseError> {
    const USAGE: &str = "record takes start or stop and an optional call id";
    let Some((verb, more)) = rest.split_first() else {
        return Err(bad(USAGE));
    };
    let on = match verb.to_ascii_lowercase().as_str() {
        "start" | "on" => true,
        "stop" | "off" => false,
        _ => {
            return Err(bad(format!(
                "no such record action '{}': use start or stop",
                shown(verb)
            )))
        }
    };
    let call = match more {
        [] => None,
        [id] => Some(parse_call_id(id)?),
        _ => return Err(bad(USAGE)),
    };
    Ok(Command::Record { call, on })
}

/// `play FILE [ID] [stop|loop|hangup]` (id and end in either order), `play off [ID]`.
fn play(rest: &[String]) -> Result<Command, ParseError> {
    let Some((file, more)) = rest.split_first() else {
        return Err(bad(
            "play needs a WAV file (then an optional call id and stop, loop or hangup)",
        ));
    };
    if file.trim().is_empty() {
        return Err(bad("play needs a WAV file"));
    }
    if file.chars().any(char::is_control) {
        return Err(bad("play file name contains a control character"));
    }
    let stop = file.eq_ignore_ascii_case("off");
    let mut call = None;
    let mut at_end = None;
    for word in more {
        if is_digits(word) {
            if call.is_some() {
                return Err(bad("play takes one call id"));
            }
            call = Some(parse_call_id(word)?);
            continue;
        }
        let end = match word.to_ascii_lowercase().as_str() {
            "stop" => PlayEnd::Stop,
            "loop" => PlayEnd::Loop,
            "hangup" => PlayEnd::Hangup,
            _ => {
                return Err(bad(format!(
                    "no such end of file choice '{}': use stop, loop or hangup",
                    shown(word)
                )))
            }
        };
        if at_end.is_some() || stop {
            return Err(bad("play takes one of stop, loop or hangup after a file"));
        }
        at_end = Some(end);
    }
    Ok(Command::Play {
        file: (!stop).then(|| file.clone()),
        call,
        at_end: at_end.unwrap_or_default(),
    })
}

/// `conference [ID...]`, `conference off [ID]`.
fn conference(rest: &[String]) -> Result<Command, ParseError> {
    if let Some((first, more)) = rest.split_first() {
        if first.eq_ignore_ascii_case("off") {
            return match more {
                [] => Ok(Command::Conference {
                    action: ConferenceAction::Leave(None),
                }),
                [id] => Ok(Command::Conference {
                    action: ConferenceAction::Leave(Some(parse_call_id(id)?)),
                }),
                _ => Err(bad("conference off takes at most one call id")),
            };
        }
    }
    let mut ids = Vec::with_capacity(rest.len());
    for word in rest {
        let id = parse_call_id(word).map_err(|_| {
            bad(format!(
                "conference takes call ids or off, got '{}'",
                shown(word)
            ))
        })?;
        if ids.contains(&id) {
            return Err(bad(format!("call {id} is named twice")));
        }
        ids.push(id);
    }
    Ok(Command::Conference {
        action: ConferenceAction::Merge(ids),
    })
}

/// Arguments that cannot hold a comma (call ids, numbers, codes, on/off, keywords):
/// a comma separates them as a blank does (`hold 3, on`, `hold 3,on`,
/// `conference 1,2`).
fn plain_args(rest: &[String]) -> Vec<String> {
    rest.iter()
        .flat_map(|word| word.split(','))
        .filter(|part| !part.is_empty())
        .map(str::to_string)
        .collect()
}

/// A value that may hold a comma (a dial string's `,` pause, a device id, a file
/// name) and then plain arguments: only a comma that ends the value, or stands
/// alone after it, separates (`dial 1002, 2` is account 2; `dial 1002,45#` dials
/// 1002 and then sends 45#).
fn value_args(rest: &[String]) -> Vec<String> {
    match value_then_text(rest) {
        Some((value, more)) => std::iter::once(value).chain(plain_args(more)).collect(),
        None => Vec::new(),
    }
}

/// A value (a comma at its end separates) and the words after it as they are (a
/// text keeps its commas); a lone `,` after the value is dropped.
fn value_then_text(rest: &[String]) -> Option<(String, &[String])> {
    let (value, more) = rest.split_first()?;
    let value = match value.strip_suffix(',') {
        Some(stripped) if !stripped.is_empty() => stripped,
        _ => value.as_str(),
    };
    let more = match more.split_first() {
        Some((comma, after)) if comma == "," => after,
        _ => more,
    };
    Some((value.to_string(), more))
}

fn no_arguments(name: &str, rest: &[String], command: Command) -> Result<Command, ParseError> {
    match rest.first() {
        None => Ok(command),
        Some(word) => Err(bad(format!(
            "{name} takes no arguments, got '{}'",
            shown(word)
        ))),
    }
}

fn optional_call(name: &str, rest: &[String]) -> Result<Option<CallId>, ParseError> {
    match rest {
        [] => Ok(None),
        [id] => Ok(Some(parse_call_id(id)?)),
        _ => Err(bad(format!("{name} takes at most one call id"))),
    }
}

fn optional_account(name: &str, rest: &[String]) -> Result<Option<u32>, ParseError> {
    match rest {
        [] => Ok(None),
        [number] => Ok(Some(parse_account(number)?)),
        _ => Err(bad(format!("{name} takes at most one account number"))),
    }
}

fn parse_call_id(word: &str) -> Result<CallId, ParseError> {
    match word.parse::<CallId>() {
        Ok(id) if is_digits(word) && id > 0 => Ok(id),
        _ => Err(bad(format!(
            "call id must be a positive number, got '{}'",
            shown(word)
        ))),
    }
}

fn parse_account(word: &str) -> Result<u32, ParseError> {
    match word.parse::<u32>() {
        Ok(n) if is_digits(word) && n > 0 => Ok(n),
        _ => Err(bad(format!(
            "account number must be a positive number, got '{}'",
            shown(word)
        ))),
    }
}

/// A dial/transfer/message target: strip `callto:`, `dial:`, `dialpad:` (and a `//`
/// after them) and `tel:`; keep `sip:`/`sips:` URIs whole; percent-decode `%XX`.
fn normalize_target(name: &str, raw: &str) -> Result<String, ParseError> {
    let lower = raw.to_ascii_lowercase();
    let mut target = raw;
    for (prefix, slashes) in [
        ("callto:", true),
        ("dialpad:", true),
        ("dial:", true),
        ("tel:", false),
    ] {
        if lower.starts_with(prefix) {
            target = &raw[prefix.len()..];
            if slashes {
                target = target.strip_prefix("//").unwrap_or(target);
            }
            break;
        }
    }
    checked_target(name, &percent_decode(target)?)
}

/// Trim a target and refuse an empty one or one with control characters (a CR/LF
/// would otherwise reach a SIP header).
fn checked_target(name: &str, target: &str) -> Result<String, ParseError> {
    let target = target.trim();
    if target.is_empty() {
        return Err(bad(format!("{name} needs a target")));
    }
    if target.chars().any(char::is_control) {
        return Err(bad(format!("{name} target contains a control character")));
    }
    Ok(target.to_string())
}

/// Decode `%XX` escapes; a `%` not followed by two hex digits stays as it is.
fn percent_decode(text: &str) -> Result<String, ParseError> {
    if !text.contains('%') {
        return Ok(text.to_string());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'%' {
            if let (Some(high), Some(low)) = (
                bytes.get(i + 1).and_then(|b| hex_value(*b)),
                bytes.get(i + 2).and_then(|b| hex_value(*b)),
            ) {
                out.push(high * 16 + low);
                i += 3;
                continue;
            }
        }
        out.push(byte);
        i += 1;
    }
    String::from_utf8(out).map_err(|_| bad("target is not valid UTF-8 after percent-decoding"))
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// `[+]` then digits, `*`, `#`, `,`, with at least one digit, `*` or `#`.
fn is_number_like(word: &str) -> bool {
    let body = word.strip_prefix('+').unwrap_or(word);
    !body.is_empty()
        && body
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '*' | '#' | ','))
        && body
            .chars()
            .any(|c| c.is_ascii_digit() || matches!(c, '*' | '#'))
}

/// `user@host`: something before and after one `@`, no whitespace, quotes or controls.
fn is_address_like(word: &str) -> bool {
    let Some((user, host)) = word.split_once('@') else {
        return false;
    };
    !user.is_empty()
        && !host.is_empty()
        && !host.contains('@')
        && !word
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '<' | '>'))
}

fn is_digits(word: &str) -> bool {
    !word.is_empty() && word.bytes().all(|b| b.is_ascii_digit())
}

fn bad(message: impl Into<String>) -> ParseError {
    ParseError {
        code: "bad_argument",
        message: message.into(),
    }
}

fn unknown(word: &str) -> ParseError {
    ParseError {
        code: "unknown_command",
        message: format!("unknown command '{}'", shown(word)),
    }
}

/// A word as an error message shows it: at most 40 characters, controls escaped.
fn shown(word: &str) -> String {
    shown_within(word, 40, "...")
}

/// User input as an error message may show it: control characters escaped, cut
/// after `max` characters with `ellipsis`. Shared with the dial plan's errors.
pub(crate) fn shown_within(text: &str, max: usize, ellipsis: &str) -> String {
    let mut out = String::new();
    for (count, c) in text.chars().enumerate() {
        if count == max {
            out.push_str(ellipsis);
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Command, ParseError> {
        parse_line(line)
    }

    fn dial(target: &str) -> Command {
        Command::Dial {
            target: target.to_string(),
            account: None,
            hold_active: true,
            numeric: false,
        }
    }

    fn speaker(points: i32) -> Command {
        Command::Level {
            kind: LevelKind::Speaker,
            change: LevelChange::Relative(points),
        }
    }

    fn mic(points: i32) -> Command {
        Command::Level {
            kind: LevelKind::Microphone,
            change: LevelChange::Relative(points),
        }
    }

    fn bad_argument(line: &str) -> String {
        match parse(line) {
            Err(error) => {
                assert_eq!(error.code, "bad_argument", "{line}: {error:?}");
                error.message
            }
            Ok(command) => panic!("{line}: expected an error, got {command:?}"),
        }
    }

    #[test]
    fn every_alias_in_the_spec_table() {
        use Command as C;
        let s = |t: &str| t.to_string();
        let window = |state| C::Window { state };
        let table: Vec<(&str, Command)> = vec![
            // dial
            ("dial 123", dial("123")),
            ("Dial 123", dial("123")),
            (
                "DIAL 123",
                C::Dial {
                    target: s("123"),
                    account: None,
                    hold_active: true,
                    numeric: true,
                },
            ),
            ("msip:123", dial("123")),
            ("123", dial("123")),
            ("+4930123,45#", dial("+4930123,45#")),
            ("*97", dial("*97")),
            ("1001@10.0.0.1", dial("1001@10.0.0.1")),
            ("sip:100@pbx.example", dial("sip:100@pbx.example")),
            ("sips:100@pbx.example", dial("sips:100@pbx.example")),
            ("SIP:100@pbx.example", dial("SIP:100@pbx.example")),
            ("tel:+4930123", dial("+4930123")),
            ("callto:123", dial("123")),
            ("callto://123", dial("123")),
            ("dial:123", dial("123")),
            ("dialpad:123", dial("123")),
            (
                "dial 123 2",
                C::Dial {
                    target: s("123"),
                    account: Some(2),
                    hold_active: true,
                    numeric: false,
                },
            ),
            (
                "dial 123 account 2",
                C::Dial {
                    target: s("123"),
                    account: Some(2),
                    hold_active: true,
                    numeric: false,
                },
            ),
            // callto
            (
                "callto 123",
                C::Dial {
                    target: s("123"),
                    account: None,
                    hold_active: false,
                    numeric: false,
                },
            ),
            (
                "CallTo sip:1@h 3",
                C::Dial {
                    target: s("sip:1@h"),
                    account: Some(3),
                    hold_active: false,
                    numeric: false,
                },
            ),
            // number text -> message
            (
                "123 hello there",
                C::Message {
                    target: s("123"),
                    text: s("hello there"),
                },
            ),
            (
                "message 100 \"hello  there\" again",
                C::Message {
                    target: s("100"),
                    text: s("hello  there again"),
                },
            ),
            // answer
            ("answer", C::Answer { call: None }),
            ("Answer 2", C::Answer { call: Some(2) }),
            ("ANSWER", C::Answer { call: None }),
            ("/answer", C::Answer { call: None }),
            ("msip:answer", C::Answer { call: None }),
            // reject
            (
                "reject",
                C::Reject {
                    call: None,
                    code: None,
                },
            ),
            (
                "Reject 3 603",
                C::Reject {
                    call: Some(3),
                    code: Some(603),
                },
            ),
            (
                "reject 480 3",
                C::Reject {
                    call: Some(3),
                    code: Some(480),
                },
            ),
            (
                "reject decline",
                C::Reject {
                    call: None,
                    code: Some(603),
                },
            ),
            (
                "decline 4",
                C::Reject {
                    call: Some(4),
                    code: Some(603),
                },
            ),
            (
                "/hangupincoming",
                C::Reject {
                    call: None,
                    code: None,
                },
            ),
            // hangup
            ("hangup", C::Hangup { call: None }),
            ("Hangup 7", C::Hangup { call: Some(7) }),
            ("HANGUP", C::Hangup { call: None }),
            ("hangupall", C::HangupAll),
            ("/hangupall", C::HangupAll),
            ("msip:hangupall", C::HangupAll),
            ("hangupcalling", C::HangupCalling),
            ("/hangupcalling", C::HangupCalling),
            // hold
            (
                "hold",
                C::Hold {
                    call: None,
                    on: None,
                },
            ),
            (
                "Hold 3 on",
                C::Hold {
                    call: Some(3),
                    on: Some(true),
                },
            ),
            (
                "hold OFF 3",
                C::Hold {
                    call: Some(3),
                    on: Some(false),
                },
            ),
            (
                "msip:hold",
                C::Hold {
                    call: None,
                    on: None,
                },
            ),
            // transfer
            (
                "transfer 200",
                C::Transfer {
                    target: s("200"),
                    call: None,
                },
            ),
            (
                "Transfer 200 4",
                C::Transfer {
                    target: s("200"),
                    call: Some(4),
                },
            ),
            (
                "TRANSFER sip:200@h",
                C::Transfer {
                    target: s("sip:200@h"),
                    call: None,
                },
            ),
            (
                "/transfer:200",
                C::Transfer {
                    target: s("200"),
                    call: None,
                },
            ),
            (
                "msip:transfer_200",
                C::Transfer {
                    target: s("200"),
                    call: None,
                },
            ),
            // dtmf
            (
                "dtmf 12*#",
                C::Dtmf {
                    digits: s("12*#"),
                    call: None,
                },
            ),
            (
                "SendDTMF 1,2abcd 5",
                C::Dtmf {
                    digits: s("1,2ABCD"),
                    call: Some(5),
                },
            ),
            (
                "DTMF 9",
                C::Dtmf {
                    digits: s("9"),
                    call: None,
                },
            ),
            (
                "/dtmf:55",
                C::Dtmf {
                    digits: s("55"),
                    call: None,
                },
            ),
            (
                "dtmf:#",
                C::Dtmf {
                    digits: s("#"),
                    call: None,
                },
            ),
            // mute
            ("mute", C::Mute { on: None }),
            ("Mute on", C::Mute { on: Some(true) }),
            ("MUTE 1", C::Mute { on: Some(true) }),
            ("MUTE 0", C::Mute { on: Some(false) }),
            ("mute off", C::Mute { on: Some(false) }),
            ("msip:micmute", C::Mute { on: Some(true) }),
            ("msip:micunmute", C::Mute { on: Some(false) }),
            ("msip:micmuteclick", C::Mute { on: None }),
            // speakermute
            ("speakermute", C::SpeakerMute { on: None }),
            ("speakermute on", C::SpeakerMute { on: Some(true) }),
            ("msip:speakmute", C::SpeakerMute { on: Some(true) }),
            ("msip:speakunmute", C::SpeakerMute { on: Some(false) }),
            ("msip:speakmuteclick", C::SpeakerMute { on: None }),
            // relative levels
            ("volumeup", speaker(LEVEL_STEP_POINTS)),
            ("VolumeUp 3", speaker(3 * LEVEL_STEP_POINTS)),
            ("VolumeDown", speaker(-LEVEL_STEP_POINTS)),
            ("volumedown 10", speaker(-10 * LEVEL_STEP_POINTS)),
            ("msip:speakup", speaker(5)),
            ("msip:speakdown", speaker(-5)),
            ("micup", mic(LEVEL_STEP_POINTS)),
            ("micdown 2", mic(-2 * LEVEL_STEP_POINTS)),
            ("msip:micup", mic(5)),
            ("msip:micdown", mic(-5)),
            // absolute levels
            (
                "setvolume 40",
                C::Level {
                    kind: LevelKind::Speaker,
                    change: LevelChange::Absolute(40),
                },
            ),
            (
                "SetVolume 0",
                C::Level {
                    kind: LevelKind::Speaker,
                    change: LevelChange::Absolute(0),
                },
            ),
            (
                "VOLUME 100",
                C::Level {
                    kind: LevelKind::Speaker,
                    change: LevelChange::Absolute(100),
                },
            ),
            (
                "SetMicVolume 70",
                C::Level {
                    kind: LevelKind::Microphone,
                    change: LevelChange::Absolute(70),
                },
            ),
            // devices
            (
                "SetDevice output \"USB Headset\"",
                C::SetDevice {
                    role: DeviceRole::Output,
                    device: s("USB Headset"),
                },
            ),
            (
                "setdevice input Built in mic",
                C::SetDevice {
                    role: DeviceRole::Input,
                    device: s("Built in mic"),
                },
            ),
            (
                "setdevice RING 3",
                C::SetDevice {
                    role: DeviceRole::Ring,
                    device: s("3"),
                },
            ),
            ("devices", C::Devices),
            ("levels", C::Levels),
            // status
            (
                "status",
                C::Status {
                    form: StatusForm::Word,
                },
            ),
            (
                "Status",
                C::Status {
                    form: StatusForm::Word,
                },
            ),
            (
                "STATUS",
                C::Status {
                    form: StatusForm::Numeric,
                },
            ),
            ("activecall", C::ActiveCall),
            ("ACTIVECALL", C::ActiveCall),
            ("calls", C::Calls),
            (
                "history",
                C::History {
                    missed: false,
                    limit: None,
                },
            ),
            // account
            (
                "account 2",
                C::Account {
                    number: 2,
                    password: None,
                },
            ),
            (
                "/account:2",
                C::Account {
                    number: 2,
                    password: None,
                },
            ),
            (
                "/account:2 /password:s3cret",
                C::Account {
                    number: 2,
                    password: Some(Secret(s("s3cret"))),
                },
            ),
            (
                "/password:s3cret /account:2",
                C::Account {
                    number: 2,
                    password: Some(Secret(s("s3cret"))),
                },
            ),
            (
                "account 3 /PASSWORD:\"a b\"",
                C::Account {
                    number: 3,
                    password: Some(Secret(s("a b"))),
                },
            ),
            ("register", C::Register { account: None }),
            ("register 2", C::Register { account: Some(2) }),
            ("unregister", C::Unregister { account: None }),
            ("unregister 1", C::Unregister { account: Some(1) }),
            // window
            ("minimize", window(WindowState::Minimized)),
            ("msip:minimize", window(WindowState::Minimized)),
            ("/minimized", window(WindowState::Minimized)),
            ("/hide", window(WindowState::Hidden)),
            ("hide", window(WindowState::Hidden)),
            ("show", window(WindowState::Normal)),
            ("show hidden", window(WindowState::Hidden)),
            ("show Minimized", window(WindowState::Minimized)),
            // exit
            ("exit", C::Exit),
            ("Close", C::Exit),
            ("QUIT", C::Exit),
            ("/exit", C::Exit),
            ("/EXIT", C::Exit),
            // events
            ("events", C::Events { filter: None }),
            (
                "events call.",
                C::Events {
                    filter: Some(s("call.")),
                },
            ),
        ];
        for (line, expected) in table {
            assert_eq!(parse(line), Ok(expected), "{line}");
        }
    }

    #[test]
    fn autoanswer_sets_or_toggles() {
        assert_eq!(
            parse("autoanswer on"),
            Ok(Command::AutoAnswer { on: Some(true) })
        );
        assert_eq!(
            parse("AutoAnswer 0"),
            Ok(Command::AutoAnswer { on: Some(false) })
        );
        assert_eq!(parse("autoanswer"), Ok(Command::AutoAnswer { on: None }));
        assert_eq!(
            bad_argument("autoanswer maybe"),
            "no such autoanswer mode 'maybe': use on, off, 1 or 0"
        );
    }

    #[test]
    fn parse_args_takes_words_as_given() {
        let words = |list: &[&str]| list.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_args(&words(&["message", "100", "hello there"])),
            Ok(Command::Message {
                target: "100".into(),
                text: "hello there".into()
            })
        );
        assert_eq!(
            parse_args(&words(&["hold", "3", "on"])),
            Ok(Command::Hold {
                call: Some(3),
                on: Some(true)
            })
        );
        // MicroSIP's one-string command line.
        assert_eq!(
            parse_args(&words(&["123 hello"])),
            Ok(Command::Message {
                target: "123".into(),
                text: "hello".into()
            })
        );
        assert_eq!(
            parse_args(&words(&["  "])).map_err(|e| e.message),
            Err("empty command".into())
        );
        assert_eq!(parse_args(&[]).map_err(|e| e.code), Err("bad_argument"));
    }

    #[test]
    fn unknown_commands() {
        for (line, shown_word) in [
            ("xyz", "xyz"),
            ("/frobnicate", "/frobnicate"),
            ("hello world", "hello"),
            ("+", "+"),
            ("@host", "@host"),
        ] {
            let error = parse(line).unwrap_err();
            assert_eq!(error.code, "unknown_command", "{line}");
            assert_eq!(error.message, format!("unknown command '{shown_word}'"));
        }
    }

    #[test]
    fn bad_arguments_are_explained() {
        assert_eq!(bad_argument(""), "empty command");
        assert_eq!(bad_argument("   \t "), "empty command");
        assert_eq!(bad_argument("dial"), "dial needs a target");
        assert_eq!(bad_argument("callto"), "callto needs a target");
        assert_eq!(bad_argument("msip:"), "dial needs a target");
        assert_eq!(bad_argument("tel:"), "dial needs a target");
        assert_eq!(bad_argument("dial \"  \""), "dial needs a target");
        assert!(bad_argument("dial 123 x").contains("account number"));
        assert!(bad_argument("dial 123 0").contains("positive"));
        assert!(bad_argument("dial 1 2 3").contains("optional account"));
        assert_eq!(
            bad_argument("hold maybe"),
            "no such hold mode 'maybe': use on or off"
        );
        assert!(bad_argument("hold 1 2").contains("one call id"));
        assert!(bad_argument("hold on off").contains("one of on or off"));
        assert!(bad_argument("hold 1 on x").contains("optional call id"));
        assert!(bad_argument("hold 0").contains("positive"));
        assert!(bad_argument("answer x").contains("call id must be a positive number, got 'x'"));
        assert!(bad_argument("answer -1").contains("positive"));
        assert!(bad_argument("hangup 1 2").contains("at most one call id"));
        assert!(bad_argument("hangup 99999999999999999999999").contains("positive"));
        assert!(bad_argument("hangupall 1").contains("takes no arguments"));
        assert!(bad_argument("reject 700").contains("400-699"));
        assert!(bad_argument("reject 486 603").contains("one SIP code"));
        assert!(bad_argument("reject 1 2").contains("one call id"));
        assert!(bad_argument("reject soon").contains("decline"));
        assert_eq!(bad_argument("transfer"), "transfer needs a target");
        assert_eq!(bad_argument("/transfer:"), "transfer needs a target");
        assert_eq!(bad_argument("msip:transfer_"), "transfer needs a target");
        assert!(bad_argument("transfer 1 2 3").contains("optional call id"));
        let dtmf_error = bad_argument("dtmf 12x");
        assert!(dtmf_error.contains("'x'") && dtmf_error.contains("0-9, *, #, A-D"));
        assert!(bad_argument("dtmf").contains("0-9, *, #, A-D"));
        assert!(bad_argument("/dtmf:").contains("0-9, *, #, A-D"));
        assert!(bad_argument("dtmf E").contains("A-D"));
        assert!(bad_argument("mute maybe").contains("on, off, 1 or 0"));
        assert!(bad_argument("mute on off").contains("at most one"));
        assert_eq!(bad_argument("setvolume 101"), "volume must be 0-100");
        assert_eq!(bad_argument("setvolume loud"), "volume must be 0-100");
        assert_eq!(bad_argument("setvolume -1"), "volume must be 0-100");
        assert_eq!(bad_argument("setvolume +5"), "volume must be 0-100");
        assert_eq!(bad_argument("SetMicVolume 300"), "volume must be 0-100");
        assert!(bad_argument("setvolume").contains("needs a level"));
        assert!(bad_argument("setvolume 1 2").contains("one level"));
        assert!(bad_argument("volumeup 0").contains("1-10"));
        assert!(bad_argument("volumeup 11").contains("1-10"));
        assert!(bad_argument("volumedown x").contains("1-10"));
        assert!(bad_argument("msip:speakup 3").contains("takes no arguments"));
        assert!(bad_argument("setdevice").contains("input, output or ring"));
        assert!(bad_argument("setdevice speaker 1").contains("no such device role 'speaker'"));
        assert!(bad_argument("setdevice input").contains("device id, number or name"));
        assert_eq!(bad_argument("account"), "account needs an account number");
        assert!(bad_argument("account x").contains("positive"));
        assert!(bad_argument("/account:").contains("positive"));
        assert!(bad_argument("register 1 2").contains("at most one account"));
        assert!(bad_argument("show sideways").contains("normal, minimized or hidden"));
        assert!(bad_argument("events a b").contains("one filter"));
        assert_eq!(bad_argument("message"), "message needs a target and a text");
        assert_eq!(
            bad_argument("message 100"),
            "message needs a text after the target"
        );
        assert!(bad_argument("/hide now").contains("takes no arguments"));
        assert!(bad_argument("status x").contains("takes no arguments"));
    }

    #[test]
    fn account_errors_never_echo_a_password() {
        for line in [
            "account 2 /password:hunter2 extra",
            "account 2 hunter2",
            "/account:2 /password:hunter2 /password:hunter2",
            "/account:x /password:hunter2",
            "/password:hunter2",
            "/password:hunter2 /account:2 more",
        ] {
            let error = parse(line).unwrap_err();
            assert_eq!(error.code, "bad_argument", "{line}");
            assert!(
                !error.message.contains("hunter2"),
                "{line}: {}",
                error.message
            );
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(
            split_words("message 100 \"hello there\"").unwrap(),
            ["message", "100", "hello there"]
        );
        assert_eq!(
            split_words(r#"a "x \"y\" \\ \n" b"#).unwrap(),
            ["a", r#"x "y" \ \n"#, "b"]
        );
        // Backslashes outside quotes are plain characters.
        assert_eq!(split_words(r"a\b \").unwrap(), [r"a\b", r"\"]);
        assert_eq!(split_words("a \"\" b").unwrap(), ["a", "", "b"]);
        assert_eq!(
            split_words("/password:\"a b\"c").unwrap(),
            ["/password:a bc"]
        );
        assert_eq!(split_words(" \t a\r\n").unwrap(), ["a"]);
        assert!(split_words("").unwrap().is_empty());
        let error = parse("message 100 \"open").unwrap_err();
        assert_eq!(error.code, "bad_argument");
        assert_eq!(error.message, "unterminated quote");
        assert_eq!(
            parse(r#"message 1 "a\""#).unwrap_err().message,
            "unterminated quote"
        );
        assert_eq!(
            parse(r#"message 100 "say \"hi\"""#),
            Ok(Command::Message {
                target: "100".into(),
                text: "say \"hi\"".into()
            })
        );
        assert_eq!(parse("\"\"").unwrap_err().message, "empty command");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(parse("tel:%2B4930123"), Ok(dial("+4930123")));
        assert_eq!(parse("%2B4930123"), Ok(dial("+4930123")));
        assert_eq!(
            parse("sip:alice%20smith@host"),
            Ok(dial("sip:alice smith@host"))
        );
        assert_eq!(parse("callto:%2b1%2A"), Ok(dial("+1*")));
        assert_eq!(parse("dial 100%23"), Ok(dial("100#")));
        assert_eq!(parse("msip:%2B49"), Ok(dial("+49")));
        // Not an escape: kept as it is.
        assert_eq!(parse("sip:a%zz@h%"), Ok(dial("sip:a%zz@h%")));
        assert_eq!(parse("sip:%C3%A9@h"), Ok(dial("sip:é@h")));
        assert!(bad_argument("sip:%FF@h").contains("UTF-8"));
        // A decoded CR/LF would reach a SIP header: refused.
        assert!(bad_argument("sip:a%0D%0AVia:x@h").contains("control character"));
        assert_eq!(
            parse("/transfer:%2B200"),
            Ok(Command::Transfer {
                target: "+200".into(),
                call: None
            })
        );
    }

    #[test]
    fn error_words_are_shortened_and_escaped() {
        let long = "x".repeat(200);
        let error = parse(&long).unwrap_err();
        assert!(error.message.len() < 80, "{}", error.message);
        let error = parse_args(&["ab\u{1b}[2J".to_string()]).unwrap_err();
        assert!(!error.message.contains('\u{1b}'), "{}", error.message);
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn random_input_never_panics() {
        const PIECES: [&str; 30] = [
            "[",
            "]",
            "(",
            ")",
            ", ",
            "[Dial(",
            "dial ",
            "msip:",
            "/account:",
            "/password:",
            "\"",
            "\\",
            "%",
            "%2",
            "%C3",
            "%FF",
            " ",
            "hold ",
            "reject ",
            "1",
            "999999999999999999999",
            "on",
            "sip:",
            "tel:",
            "@",
            "dtmf ",
            "/transfer:",
            "setvolume ",
            "é",
            "\r\n",
        ];
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for round in 0..10_000 {
            let length = rng.below(48);
            let mut bytes = Vec::with_capacity(length * 2);
            for _ in 0..length {
                // Even rounds: raw bytes only; odd rounds: a third raw bytes.
                if round % 2 == 0 || rng.below(3) == 0 {
                    bytes.push(rng.next() as u8);
                } else {
                    bytes.extend_from_slice(PIECES[rng.below(PIECES.len())].as_bytes());
                }
            }
            let line = String::from_utf8_lossy(&bytes);
            if let Err(error) = parse_line(&line) {
                assert!(
                    error.code == "bad_argument" || error.code == "unknown_command",
                    "{line:?}: {error:?}"
                );
                assert!(!error.message.is_empty());
            }
        }
    }

    #[test]
    fn record_play_and_conference() {
        use crate::command::{ConferenceAction as A, PlayEnd as E};
        let record = |call, on| Command::Record { call, on };
        assert_eq!(parse("record start").unwrap(), record(None, true));
        assert_eq!(parse("RECORD Stop 4").unwrap(), record(Some(4), false));
        assert_eq!(parse("record on 2").unwrap(), record(Some(2), true));
        assert_eq!(parse("record off").unwrap(), record(None, false));
        let play = |file: Option<&str>, call, at_end| Command::Play {
            file: file.map(str::to_string),
            call,
            at_end,
        };
        assert_eq!(
            parse("play /tmp/a.wav").unwrap(),
            play(Some("/tmp/a.wav"), None, E::Stop)
        );
        assert_eq!(
            parse("play \"/tmp/my file.wav\" 3 hangup").unwrap(),
            play(Some("/tmp/my file.wav"), Some(3), E::Hangup)
        );
        assert_eq!(
            parse("play a.wav LOOP 7").unwrap(),
            play(Some("a.wav"), Some(7), E::Loop)
        );
        assert_eq!(
            parse("play a.wav stop").unwrap(),
            play(Some("a.wav"), None, E::Stop)
        );
        assert_eq!(parse("play off").unwrap(), play(None, None, E::Stop));
        assert_eq!(parse("play off 5").unwrap(), play(None, Some(5), E::Stop));
        let conf = |action| Command::Conference { action };
        assert_eq!(parse("conference").unwrap(), conf(A::Merge(vec![])));
        assert_eq!(
            parse("conference 1 2 3").unwrap(),
            conf(A::Merge(vec![1, 2, 3]))
        );
        assert_eq!(parse("Conference off").unwrap(), conf(A::Leave(None)));
        assert_eq!(parse("conference OFF 2").unwrap(), conf(A::Leave(Some(2))));
        for (line, name) in [
            ("record start", "record"),
            ("play x.wav", "play"),
            ("conference", "conference"),
        ] {
            assert_eq!(parse(line).unwrap().name(), name);
        }
    }

    #[test]
    fn media_commands() {
        use crate::command::MediaCommand;
        use microsip_media::StreamMode;
        let media = |action| Command::Media { action };
        assert_eq!(
            parse("media").unwrap(),
            media(MediaCommand::List { call: None })
        );
        assert_eq!(
            parse("media 3").unwrap(),
            media(MediaCommand::List { call: Some(3) })
        );
        assert_eq!(
            parse("MEDIA stream 2 ws://127.0.0.1:9000/bot").unwrap(),
            media(MediaCommand::Stream {
                call: 2,
                url: "ws://127.0.0.1:9000/bot".into(),
                rate: 8000,
                mode: StreamMode::Replace
            })
        );
        assert_eq!(
            parse("media stream 2 ws://127.0.0.1:9000/ mix 16000").unwrap(),
            media(MediaCommand::Stream {
                call: 2,
                url: "ws://127.0.0.1:9000/".into(),
                rate: 16000,
                mode: StreamMode::Mix
            })
        );
        assert_eq!(
            parse("media stop 2 5").unwrap(),
            media(MediaCommand::Stop {
                call: 2,
                client: Some(5)
            })
        );
        assert_eq!(
            parse("media stop 2").unwrap(),
            media(MediaCommand::Stop {
                call: 2,
                client: None
            })
        );
        assert!(bad_argument("media stream 2").contains("ws:// URL"));
        assert!(bad_argument("media stream 2 http://x/").contains("ws://HOST:PORT"));
        assert!(bad_argument("media stream 2 wss://x/").contains("not supported yet"));
        assert!(bad_argument("media stream 2 ws://x/ 44100").contains("8000 or 16000"));
        assert!(bad_argument("media stream 2 ws://x/ loud").contains("replace or mix"));
        assert!(bad_argument("media stop").contains("call id"));
        assert!(bad_argument("media stop 1 x").contains("client id"));
        assert!(bad_argument("media sing").contains("media takes"));
    }

    #[test]
    fn record_play_and_conference_refuse_bad_input() {
        assert!(bad_argument("record").contains("start or stop"));
        assert_eq!(
            bad_argument("record maybe"),
            "no such record action 'maybe': use start or stop"
        );
        assert!(bad_argument("record start x").contains("positive"));
        assert!(bad_argument("record start 0").contains("positive"));
        assert!(bad_argument("record stop 1 2").contains("optional call id"));
        assert!(bad_argument("play").contains("needs a WAV file"));
        assert!(bad_argument("play \"\"").contains("needs a WAV file"));
        assert!(bad_argument("play \"a\tb.wav\"").contains("control character"));
        assert_eq!(
            bad_argument("play a.wav rewind"),
            "no such end of file choice 'rewind': use stop, loop or hangup"
        );
        assert!(bad_argument("play a.wav 1 2").contains("one call id"));
        assert!(bad_argument("play a.wav loop hangup").contains("one of stop, loop or hangup"));
        assert!(bad_argument("play off loop").contains("one of stop, loop or hangup"));
        assert!(bad_argument("play a.wav 0").contains("positive"));
        assert!(bad_argument("conference x").contains("call ids or off"));
        assert!(bad_argument("conference 1 0").contains("call ids or off"));
        assert!(bad_argument("conference 1 1").contains("named twice"));
        assert!(bad_argument("conference off 1 2").contains("at most one call id"));
        assert!(bad_argument("conference off x").contains("positive"));
    }

    fn all(line: &str) -> Vec<Command> {
        parse_line_all(line).unwrap_or_else(|e| panic!("{line}: {e:?}"))
    }

    fn numeric_status() -> Command {
        Command::Status {
            form: StatusForm::Numeric,
        }
    }

    fn set_device(role: DeviceRole, device: &str) -> Command {
        Command::SetDevice {
            role,
            device: device.to_string(),
        }
    }

    #[test]
    fn dde_execute_strings() {
        use DeviceRole::{Input, Output};
        assert_eq!(all("[Status]"), [numeric_status()]);
        assert_eq!(all("[status()]"), [numeric_status()]);
        assert_eq!(all("[STATUS]"), [numeric_status()]);
        assert_eq!(all("[Dial(sip:user@domain)]"), [dial("sip:user@domain")]);
        assert_eq!(all("[Dial(\"1002\")]"), [dial("1002")]);
        // A dial string's comma is a pause; a comma with a blank after it separates.
        assert_eq!(all("[Dial(1002,45#)]"), [dial("1002,45#")]);
        assert_eq!(
            all("[Dial(1002, 2)]"),
            [Command::Dial {
                target: "1002".into(),
                account: Some(2),
                hold_active: true,
                numeric: false
            }]
        );
        assert_eq!(
            all("[SetDevice(output, null)]"),
            [set_device(Output, "null")]
        );
        assert_eq!(all("[SetDevice(input,2)]"), [set_device(Input, "2")]);
        assert_eq!(
            all("[Hold][Dial(1002)]"),
            [
                Command::Hold {
                    call: None,
                    on: None
                },
                dial("1002")
            ]
        );
        assert_eq!(
            all(" [Hangup] \t[CallTo(1003)] [Status] "),
            [
                Command::Hangup { call: None },
                Command::Dial {
                    target: "1003".into(),
                    account: None,
                    hold_active: false,
                    numeric: false
                },
                numeric_status()
            ]
        );
        assert_eq!(
            all(r#"[Message(100, "hello, [world]")]"#),
            [Command::Message {
                target: "100".into(),
                text: "hello, [world]".into()
            }]
        );
        assert_eq!(
            all("[Message(100, hello, world)]"),
            [Command::Message {
                target: "100".into(),
                text: "hello, world".into()
            }]
        );
        assert_eq!(
            all("[SendDTMF(12#, 3)]"),
            [Command::Dtmf {
                digits: "12#".into(),
                call: Some(3)
            }]
        );
        assert_eq!(
            all("[SetVolume(40)][Hangup][Close]"),
            [
                Command::Level {
                    kind: LevelKind::Speaker,
                    change: LevelChange::Absolute(40)
                },
                Command::Hangup { call: None },
                Command::Exit
            ]
        );
        assert_eq!(all("[report:status]"), [numeric_status()]);
        // The command line's words: one string, or one word per part.
        let words = |list: &[&str]| list.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_args_all(&words(&["[Hold]", "[Dial(1002)]"])).unwrap(),
            [
                Command::Hold {
                    call: None,
                    on: None
                },
                dial("1002")
            ]
        );
        assert_eq!(
            parse_args_all(&words(&["[SetDevice(output,", "null)]"])).unwrap(),
            [set_device(Output, "null")]
        );
        // Where one command is wanted, a string of one is one.
        assert_eq!(parse("[Dial(1002)]"), Ok(dial("1002")));
        assert_eq!(parse_args(&words(&["[Status]"])), Ok(numeric_status()));
        assert!(parse("[Hold][Status]")
            .unwrap_err()
            .message
            .contains("holds 2 commands"));
    }

    #[test]
    fn broken_dde_strings_name_the_wrong_part() {
        let error = |line: &str| parse_line_all(line).expect_err(line);
        let e = error("[Hold][Dial(1002)");
        assert_eq!(e.code, "bad_argument");
        assert_eq!(e.message, "'[Dial(1002)' has no closing ']'");
        let e = error("[Hold][Frobnicate(1)]");
        assert_eq!(e.code, "unknown_command");
        assert_eq!(
            e.message,
            "unknown command 'Frobnicate' in '[Frobnicate(1)]'"
        );
        // Only command names: never a dial target, a /x: or msip: form.
        for (line, verb) in [("[1002]", "1002"), ("[msip:answer]", "msip:answer")] {
            let e = error(line);
            assert_eq!(e.code, "unknown_command", "{line}");
            assert_eq!(e.message, format!("unknown command '{verb}' in '{line}'"));
        }
        assert_eq!(error("[/answer]").code, "bad_argument");
        assert_eq!(
            error("[Status][SetVolume(200)]").message,
            "volume must be 0-100 in '[SetVolume(200)]'"
        );
        assert_eq!(
            error("[SetDevice(speaker, 2)]").message,
            "no such device role 'speaker': use input, output or ring in '[SetDevice(speaker, 2)]'"
        );
        assert!(error("[Message(1, \"x)]")
            .message
            .contains("unterminated quote"));
        assert!(error("[Events]").message.contains("events is a stream"));
        assert_eq!(
            error("[Close][Status]").message,
            "nothing may follow an exit in '[Close]'"
        );
    }

    #[test]
    fn commas_separate_arguments_that_cannot_hold_one() {
        use DeviceRole::{Input, Output, Ring};
        assert_eq!(
            parse("SetDevice output, null"),
            Ok(set_device(Output, "null"))
        );
        assert_eq!(parse("SetDevice input, 2"), Ok(set_device(Input, "2")));
        assert_eq!(parse("SetDevice input,2"), Ok(set_device(Input, "2")));
        assert_eq!(parse("SetDevice input , 2"), Ok(set_device(Input, "2")));
        assert_eq!(parse("SetDevice input 2"), Ok(set_device(Input, "2")));
        // A device id or name keeps its commas.
        assert_eq!(
            parse("setdevice output, alsa:hw:CARD=0,DEV=0"),
            Ok(set_device(Output, "alsa:hw:CARD=0,DEV=0"))
        );
        assert_eq!(
            parse("setdevice ring, Built-in Audio, Analog Stereo"),
            Ok(set_device(Ring, "Built-in Audio, Analog Stereo"))
        );
        assert!(bad_argument("setdevice input,").contains("device id, number or name"));
        assert_eq!(
            parse("hold 3, on"),
            Ok(Command::Hold {
                call: Some(3),
                on: Some(true)
            })
        );
        assert_eq!(
            parse("hold 3,on"),
            Ok(Command::Hold {
                call: Some(3),
                on: Some(true)
            })
        );
        assert_eq!(
            parse("reject 4, 603"),
            Ok(Command::Reject {
                call: Some(4),
                code: Some(603)
            })
        );
        assert_eq!(
            parse("conference 1,2, 3"),
            Ok(Command::Conference {
                action: ConferenceAction::Merge(vec![1, 2, 3])
            })
        );
        // A dial string's comma stays a pause; one that ends it separates.
        assert_eq!(parse("dial 1002,45#"), Ok(dial("1002,45#")));
        assert_eq!(parse("1002,45#"), Ok(dial("1002,45#")));
        assert_eq!(
            parse("dial 1002, 2"),
            Ok(Command::Dial {
                target: "1002".into(),
                account: Some(2),
                hold_active: true,
                numeric: false
            })
        );
        assert_eq!(
            parse("dtmf 1,2"),
            Ok(Command::Dtmf {
                digits: "1,2".into(),
                call: None
            })
        );
        assert_eq!(
            parse("dtmf 12, 3"),
            Ok(Command::Dtmf {
                digits: "12".into(),
                call: Some(3)
            })
        );
        assert_eq!(
            parse("transfer 200, 3"),
            Ok(Command::Transfer {
                target: "200".into(),
                call: Some(3)
            })
        );
        assert_eq!(
            parse("play a.wav, 3, loop"),
            Ok(Command::Play {
                file: Some("a.wav".into()),
                call: Some(3),
                at_end: PlayEnd::Loop
            })
        );
        // A text keeps its commas.
        assert_eq!(
            parse("message 100, hello, world"),
            Ok(Command::Message {
                target: "100".into(),
                text: "hello, world".into()
            })
        );
        assert_eq!(
            parse("contacts add 100, Smith, John"),
            Ok(Command::Contacts {
                action: ContactsAction::Add {
                    number: "100".into(),
                    name: "Smith, John".into(),
                    presence: false
                }
            })
        );
        assert_eq!(
            parse("account 2, /password:a,b"),
            Ok(Command::Account {
                number: 2,
                password: Some(Secret("a,b".into()))
            })
        );
    }

    #[test]
    fn report_status_is_status_numbers_twin() {
        for line in ["report:status", "Report:Status", "REPORT:STATUS", "STATUS"] {
            assert_eq!(parse(line), Ok(numeric_status()), "{line}");
        }
        assert!(bad_argument("report:status 1").contains("takes no arguments"));
    }

    #[test]
    fn history_forms() {
        let history = |missed, limit| Command::History { missed, limit };
        assert_eq!(parse("history"), Ok(history(false, None)));
        assert_eq!(parse("History missed"), Ok(history(true, None)));
        assert_eq!(parse("history 5"), Ok(history(false, Some(5))));
        assert_eq!(parse("history missed 5"), Ok(history(true, Some(5))));
        assert_eq!(parse("history 5, missed"), Ok(history(true, Some(5))));
        assert!(bad_argument("history 0").contains("positive"));
        assert!(bad_argument("history 99999999999999999999999").contains("positive"));
        assert!(bad_argument("history yesterday").contains("'yesterday'"));
        assert!(bad_argument("history 1 2").contains("'2'"));
        assert!(bad_argument("history missed missed").contains("'missed'"));
        assert!(bad_argument("history --json").contains("microsip --json history"));
    }
}

#[cfg(test)]
mod command_table_tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn every_listed_command_is_one_the_grammar_reads() {
        let mut seen = std::collections::HashSet::new();
        for entry in COMMANDS {
            assert!(seen.insert(entry.name), "{} listed twice", entry.name);
            assert!(!entry.help.is_empty(), "{}", entry.name);
            match parse_args(&words(entry.name)) {
                Ok(_) => {}
                Err(e) => assert_ne!(e.code, "unknown_command", "{}: {}", entry.name, e.message),
            }
        }
    }

    #[test]
    fn every_command_the_grammar_makes_is_listed() {
        // One line per `Command` variant (the match below is exhaustive, so a new
        // variant fails to compile here until it has a line and a table entry).
        let lines = [
            "dial 1",
            "callto 1",
            "redial",
            "callback",
            "message 1 hi",
            "answer",
            "reject",
            "hangup",
            "hangupall",
            "hangupcalling",
            "hold",
            "transfer 1",
            "dtmf 1",
            "mute",
            "speakermute",
            "autoanswer",
            "volumeup",
            "volumedown",
            "micup",
            "micdown",
            "setvolume 1",
            "setmicvolume 1",
            "setdevice input 1",
            "devices",
            "levels",
            "status",
            "activecall",
            "calls",
            "account 1",
            "register",
            "unregister",
            "show",
            "exit",
            "events",
            "history",
            "messages",
            "contacts",
            "record start",
            "media",
            "play a.wav",
            "conference",
        ];
        let listed: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
        for line in lines {
            let command = parse_args(&words(line)).unwrap();
            let name = match &command {
                Command::Dial {
                    hold_active: false, ..
                } => "callto",
                Command::Dial { .. }
                | Command::Redial
                | Command::Callback
                | Command::Message { .. }
                | Command::Answer { .. }
                | Command::Reject { .. }
                | Command::Hangup { .. }
                | Command::HangupAll
                | Command::HangupCalling
                | Command::Hold { .. }
                | Command::Transfer { .. }
                | Command::Dtmf { .. }
                | Command::Mute { .. }
                | Command::SpeakerMute { .. }
                | Command::AutoAnswer { .. }
                | Command::Level { .. }
                | Command::SetDevice { .. }
                | Command::Devices
                | Command::Levels
                | Command::Status { .. }
                | Command::ActiveCall
                | Command::Calls
                | Command::Account { .. }
                | Command::Register { .. }
                | Command::Unregister { .. }
                | Command::Window { .. }
                | Command::Exit
                | Command::Events { .. }
                | Command::History { .. }
                | Command::Messages { .. }
                | Command::Contacts { .. }
                | Command::Record { .. }
                | Command::Media { .. }
                | Command::Play { .. }
                | Command::Conference { .. } => command.name(),
            };
            assert!(listed.contains(&name), "{line}: {name} is not in COMMANDS");
            assert!(listed.contains(&line.split(' ').next().unwrap()), "{line}");
        }
    }
}
