//! The start options: `microsip [OPTIONS] [COMMAND...]` → [`StartOptions`] plus the
//! command words; and what those options mean to a phone that already runs.

use std::fmt;
use std::path::{Path, PathBuf};

use microsip_engine::command::WindowState;

use crate::paths::{absolute, RunningPhone};

/// Account settings for this run (`--dn --user --domain --password --proxy --stun`);
/// they override the ini. `Debug` prints the password as `***`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AccountOverrides {
    /// `--dn NAME`: the display name.
    pub display_name: Option<String>,
    /// `--user USER`: the user name.
    pub user: Option<String>,
    /// `--domain DOMAIN`: the SIP domain.
    pub domain: Option<String>,
    /// `--password PASS`: never written to the ini unless asked.
    pub password: Option<String>,
    /// `--proxy HOST[:PORT]`: the outbound proxy.
    pub proxy: Option<String>,
    /// `--stun HOST[:PORT]`: the STUN server.
    pub stun: Option<String>,
}

impl AccountOverrides {
    /// True when no account option was given.
    pub fn is_empty(&self) -> bool {
        *self == AccountOverrides::default()
    }
}

/// Prints `***` in place of a password.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Debug for AccountOverrides {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountOverrides")
            .field("display_name", &self.display_name)
            .field("user", &self.user)
            .field("domain", &self.domain)
            .field("password", &self.password.as_ref().map(|_| Redacted))
            .field("proxy", &self.proxy)
            .field("stun", &self.stun)
            .finish()
    }
}

/// Everything given before the command words.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartOptions {
    /// `--ini FILE`, `/i:FILE`.
    pub ini: Option<PathBuf>,
    /// `--profile NAME`: `[A-Za-z0-9_.-]{1,64}`, not starting with `.`.
    pub profile: Option<String>,
    /// `--dn --user --domain --password --proxy --stun` for this run.
    pub account: AccountOverrides,
    /// `--call TARGET`: dial once registered.
    pub call: Option<String>,
    /// `--autoanswer 0|1`.
    pub autoanswer: Option<bool>,
    /// `--dialplan RULES`.
    pub dialplan: Option<String>,
    /// `--show normal|minimized|hidden`, `/minimized`, `/hide`.
    pub show: Option<WindowState>,
    /// `--debug FILE`: SIP trace.
    pub debug: Option<PathBuf>,
    /// `--log FILE`: CSV call log.
    pub log: Option<PathBuf>,
    /// `--setvolume N`, 0–100.
    pub setvolume: Option<u8>,
    /// `--micvolume N`, 0–100.
    pub micvolume: Option<u8>,
    /// `--http PORT`: serve the HTTP + WebSocket API on 127.0.0.1:PORT (0: off);
    /// overrides the ini's `httpPort`.
    pub http: Option<u16>,
    /// `--headless` or `--daemon`.
    pub headless: bool,
    /// `--json`: replies in JSON.
    pub json: bool,
    /// `--help`, `-h`.
    pub help: bool,
    /// `--version`, `-V`.
    pub version: bool,
}

/// Why the start options are wrong. `Display` is the text for the person; it never
/// holds a `--password` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionsError {
    /// `--frobnicate`: the option's name only, never a `=value`.
    UnknownOption {
        /// The option as given, without its value.
        option: String,
    },
    /// `--ini` with nothing after it.
    MissingValue {
        /// The option as spelled.
        option: &'static str,
        /// What it needs, e.g. `a file name`.
        what: &'static str,
    },
    /// `--setvolume loud`.
    BadValue {
        /// The option as spelled.
        option: &'static str,
        /// What it takes, e.g. `0-100`.
        expected: &'static str,
        /// The value given.
        got: String,
    },
    /// `--json=1`: a flag given a value.
    UnexpectedValue {
        /// The flag as spelled.
        option: &'static str,
    },
    /// `--profile ../x`.
    BadProfile {
        /// The name given.
        name: String,
    },
}

impl fmt::Display for OptionsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionsError::UnknownOption { option } => {
                write!(
                    f,
                    "unknown option '{}' (see microsip --help)",
                    shown(option)
                )
            }
            OptionsError::MissingValue { option, what } => write!(f, "{option} needs {what}"),
            OptionsError::BadValue {
                option,
                expected,
                got,
            } => write!(f, "{option} needs {expected}, got '{}'", shown(got)),
            OptionsError::UnexpectedValue { option } => write!(f, "{option} takes no value"),
            OptionsError::BadProfile { name } => write!(
                f,
                "profile name '{}' is not allowed: use 1-64 letters, digits, '_', '.' or '-', \
                 not starting with '.'",
                shown(name)
            ),
        }
    }
}

impl std::error::Error for OptionsError {}

/// One known option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Ini,
    Profile,
    DisplayName,
    User,
    Domain,
    Password,
    Proxy,
    Stun,
    Call,
    Autoanswer,
    Dialplan,
    Show,
    Debug,
    Log,
    SetVolume,
    MicVolume,
    Http,
    Headless,
    Json,
    Help,
    Version,
}

impl Key {
    /// The key and its canonical spelling for a `--name`.
    fn lookup(name: &str) -> Option<(Key, &'static str)> {
        Some(match name {
            "ini" => (Key::Ini, "--ini"),
            "profile" => (Key::Profile, "--profile"),
            "dn" => (Key::DisplayName, "--dn"),
            "user" => (Key::User, "--user"),
            "domain" => (Key::Domain, "--domain"),
            "password" => (Key::Password, "--password"),
            "proxy" => (Key::Proxy, "--proxy"),
            "stun" => (Key::Stun, "--stun"),
            "call" => (Key::Call, "--call"),
            "autoanswer" => (Key::Autoanswer, "--autoanswer"),
            "dialplan" => (Key::Dialplan, "--dialplan"),
            "show" => (Key::Show, "--show"),
            "debug" => (Key::Debug, "--debug"),
            "log" => (Key::Log, "--log"),
            "setvolume" => (Key::SetVolume, "--setvolume"),
            "micvolume" => (Key::MicVolume, "--micvolume"),
            "http" => (Key::Http, "--http"),
            "headless" => (Key::Headless, "--headless"),
            "daemon" => (Key::Headless, "--daemon"),
            "json" => (Key::Json, "--json"),
            "help" => (Key::Help, "--help"),
            "version" => (Key::Version, "--version"),
            _ => return None,
        })
    }

    /// What the value is, for "needs ..." messages; `None` for flags.
    fn value_kind(self) -> Option<&'static str> {
        match self {
            Key::Ini | Key::Debug | Key::Log => Some("a file name"),
            Key::Profile => Some("a name"),
            Key::DisplayName | Key::User | Key::Domain | Key::Password | Key::Proxy | Key::Stun => {
                Some("a value")
            }
            Key::Call => Some("a target"),
            Key::Autoanswer => Some("0 or 1"),
            Key::Dialplan => Some("rules"),
            Key::Show => Some("normal, minimized or hidden"),
            Key::SetVolume | Key::MicVolume => Some("a number 0-100"),
            Key::Http => Some("a port number (0: off)"),
            Key::Headless | Key::Json | Key::Help | Key::Version => None,
        }
    }

    /// Account settings may be set to an empty string (`--proxy=` clears it).
    fn allows_empty(self) -> bool {
        matches!(
            self,
            Key::DisplayName | Key::User | Key::Domain | Key::Password | Key::Proxy | Key::Stun
        )
    }
}

/// Parse the arguments after the program name. Options come first; the first word
/// that is not an option starts the command, and every word from there on is a
/// command word (`microsip message 100 --not-an-option`). `--` ends the options.
/// `/minimized` and `/hide` are start options when no command word follows them, and
/// commands otherwise; other `/x` words (`/answer`, `/exit`) are commands; `/i:FILE`
/// is an option. When an option is given twice, the last one wins.
pub fn parse_start(args: &[String]) -> Result<(StartOptions, Vec<String>), OptionsError> {
    let mut options = StartOptions::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "--" {
            return Ok((options, args[i + 1..].to_vec()));
        }
        if let Some(body) = arg.strip_prefix("--") {
            let (name, inline) = match body.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (body, None),
            };
            let Some((key, spelling)) = Key::lookup(name) else {
                return Err(OptionsError::UnknownOption {
                    option: format!("--{name}"),
                });
            };
            match key.value_kind() {
                None if inline.is_some() => {
                    return Err(OptionsError::UnexpectedValue { option: spelling })
                }
                None => set_flag(&mut options, key),
                Some(what) => {
                    let value = match inline {
                        Some(value) => value,
                        None => {
                            i += 1;
                            match args.get(i) {
                                // A password may look like anything; other values may
                                // not look like the next option.
                                Some(value) if key == Key::Password || !value.starts_with("--") => {
                                    value.as_str()
                                }
                                _ => {
                                    return Err(OptionsError::MissingValue {
                                        option: spelling,
                                        what,
                                    })
                                }
                            }
                        }
                    };
                    if value.is_empty() && !key.allows_empty() {
                        return Err(OptionsError::MissingValue {
                            option: spelling,
                            what,
                        });
                    }
                    set_value(&mut options, key, spelling, value)?;
                }
            }
            i += 1;
            continue;
        }
        match arg.as_str() {
            "-h" => options.help = true,
            "-V" => options.version = true,
            _ if arg.starts_with('-') && arg.len() > 1 => {
                let name = arg.split_once('=').map_or(arg.as_str(), |(name, _)| name);
                return Err(OptionsError::UnknownOption {
                    option: name.to_string(),
                });
            }
            _ => {
                let lower = arg.to_ascii_lowercase();
                if lower.starts_with("/i:") {
                    let file = &arg[3..];
                    if file.is_empty() {
                        return Err(OptionsError::MissingValue {
                            option: "/i:",
                            what: "a file name",
                        });
                    }
                    options.ini = Some(PathBuf::from(file));
                } else if lower == "/minimized" || lower == "/hide" {
                    // A start option only when no command word follows.
                    let (_, command) = parse_start(&args[i + 1..])?;
                    if !command.is_empty() {
                        return Ok((options, args[i..].to_vec()));
                    }
                    options.show = Some(if lower == "/hide" {
                        WindowState::Hidden
                    } else {
                        WindowState::Minimized
                    });
                } else {
                    return Ok((options, args[i..].to_vec()));
                }
            }
        }
        i += 1;
    }
    Ok((options, Vec::new()))
}

fn set_flag(options: &mut StartOptions, key: Key) {
    match key {
        Key::Headless => options.headless = true,
        Key::Json => options.json = true,
        Key::Help => options.help = true,
        Key::Version => options.version = true,
        _ => {}
    }
}

fn set_value(
    options: &mut StartOptions,
    key: Key,
    spelling: &'static str,
    value: &str,
) -> Result<(), OptionsError> {
    let bad = |expected: &'static str| OptionsError::BadValue {
        option: spelling,
        expected,
        got: value.to_string(),
    };
    let text = Some(value.to_string());
    match key {
        Key::Ini => options.ini = Some(PathBuf::from(value)),
        Key::Debug => options.debug = Some(PathBuf::from(value)),
        Key::Log => options.log = Some(PathBuf::from(value)),
        Key::Profile => {
            if !is_profile_name(value) {
                return Err(OptionsError::BadProfile {
                    name: value.to_string(),
                });
            }
            options.profile = text;
        }
        Key::DisplayName => options.account.display_name = text,
        Key::User => options.account.user = text,
        Key::Domain => options.account.domain = text,
        Key::Password => options.account.password = text,
        Key::Proxy => options.account.proxy = text,
        Key::Stun => options.account.stun = text,
        Key::Call => options.call = text,
        Key::Dialplan => options.dialplan = text,
        Key::Autoanswer => {
            options.autoanswer = Some(match value.to_ascii_lowercase().as_str() {
                "1" | "on" => true,
                "0" | "off" => false,
                _ => return Err(bad("0 or 1")),
            })
        }
        Key::Show => {
            options.show = Some(match value.to_ascii_lowercase().as_str() {
                "normal" => WindowState::Normal,
                "minimized" => WindowState::Minimized,
                "hidden" => WindowState::Hidden,
                _ => return Err(bad("normal, minimized or hidden")),
            })
        }
        Key::SetVolume | Key::MicVolume => {
            let level = match value.parse::<u8>() {
                Ok(level) if level <= 100 && value.bytes().all(|b| b.is_ascii_digit()) => level,
                _ => return Err(bad("a number 0-100")),
            };
            if key == Key::SetVolume {
                options.setvolume = Some(level);
            } else {
                options.micvolume = Some(level);
            }
        }
        Key::Http => {
            options.http = match value.parse::<u16>() {
                Ok(port) if value.bytes().all(|b| b.is_ascii_digit()) => Some(port),
                _ => return Err(bad("a port number 1-65535 (0: off)")),
            }
        }
        Key::Headless | Key::Json | Key::Help | Key::Version => set_flag(options, key),
    }
    Ok(())
}

/// `[A-Za-z0-9_.-]{1,64}`, not starting with `.`: it becomes a socket file name.
fn is_profile_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A value as an error shows it: at most 40 characters, controls escaped.
fn shown(text: &str) -> String {
    shown_within(text, 40)
}

/// A file name as an error shows it: at most 200 characters, controls escaped.
fn shown_path(path: &Path) -> String {
    shown_within(&path.to_string_lossy(), 200)
}

fn shown_within(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (count, c) in text.chars().enumerate() {
        if count == max {
            out.push_str("...");
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

/// Start options handed to a phone that already runs, which it cannot take: they
/// only apply when a phone starts. `Display` names options, never their values
/// (except file names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartOnlyError {
    /// The running phone's profile.
    pub profile: String,
    /// One text per problem: `--user, --password apply only when a phone starts`,
    /// `--ini /b.ini is not its ini (/a.ini)`.
    pub problems: Vec<String>,
}

impl fmt::Display for StartOnlyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a phone is already running for profile '{}': {}; stop it first \
             (microsip --profile {} exit) or start another with --profile NAME",
            self.profile,
            self.problems.join("; "),
            self.profile
        )
    }
}

impl std::error::Error for StartOnlyError {}

/// What this run's start options ask of a phone that already runs, as command words
/// for the engine's grammar, in this order: `show STATE`, `setvolume N`,
/// `setmicvolume N`, `autoanswer on|off`, `dial TARGET`. `--profile`, `--json`,
/// `--headless` (the phone has no window) and an `--ini`/`--debug`/`--log` naming the
/// running phone's own file ask nothing. Every other option only applies when a phone
/// starts and is refused: `running` is what the phone recorded in its lock file
/// (`None`: unknown, so no file can be confirmed as its own).
pub fn runtime_commands(
    options: &StartOptions,
    running: Option<&RunningPhone>,
    profile: &str,
) -> Result<Vec<Vec<String>>, StartOnlyError> {
    let mut problems = Vec::new();
    let a = &options.account;
    let start_only: Vec<&str> = [
        ("--dn", a.display_name.is_some()),
        ("--user", a.user.is_some()),
        ("--domain", a.domain.is_some()),
        ("--password", a.password.is_some()),
        ("--proxy", a.proxy.is_some()),
        ("--stun", a.stun.is_some()),
        ("--dialplan", options.dialplan.is_some()),
        ("--http", options.http.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, given)| given.then_some(name))
    .collect();
    match start_only.as_slice() {
        [] => {}
        [one] => problems.push(format!("{one} applies only when a phone starts")),
        many => problems.push(format!(
            "{} apply only when a phone starts",
            many.join(", ")
        )),
    }
    // (option, what it names, the file given, the running phone's: `None` unknown).
    type FileOption<'a> = (
        &'a str,
        &'a str,
        Option<&'a PathBuf>,
        Option<Option<&'a PathBuf>>,
    );
    let files: [FileOption; 3] = [
        (
            "--ini",
            "ini",
            options.ini.as_ref(),
            running.map(|r| Some(&r.ini)),
        ),
        (
            "--debug",
            "SIP trace",
            options.debug.as_ref(),
            running.map(|r| r.debug.as_ref()),
        ),
        (
            "--log",
            "call log",
            options.log.as_ref(),
            running.map(|r| r.log.as_ref()),
        ),
    ];
    for (option, what, given, theirs) in files {
        let Some(given) = given else { continue };
        let given = absolute(given);
        match theirs {
            Some(Some(theirs)) if *theirs == given => {}
            Some(Some(theirs)) => problems.push(format!(
                "{option} {} is not its {what} ({})",
                shown_path(&given),
                shown_path(theirs)
            )),
            Some(None) => problems.push(format!(
                "{option} applies only when a phone starts (it runs without a {what})"
            )),
            None => problems.push(format!(
                "{option} applies only when a phone starts (cannot tell which {what} it uses)"
            )),
        }
    }
    if !problems.is_empty() {
        return Err(StartOnlyError {
            profile: profile.to_string(),
            problems,
        });
    }
    let mut commands = Vec::new();
    let words = |list: &[&str]| list.iter().map(|w| w.to_string()).collect::<Vec<_>>();
    if let Some(state) = options.show {
        let state = match state {
            WindowState::Normal => "normal",
            WindowState::Minimized => "minimized",
            WindowState::Hidden => "hidden",
        };
        commands.push(words(&["show", state]));
    }
    if let Some(level) = options.setvolume {
        commands.push(words(&["setvolume", &level.to_string()]));
    }
    if let Some(level) = options.micvolume {
        commands.push(words(&["setmicvolume", &level.to_string()]));
    }
    if let Some(on) = options.autoanswer {
        commands.push(words(&["autoanswer", if on { "on" } else { "off" }]));
    }
    if let Some(target) = &options.call {
        commands.push(words(&["dial", target]));
    }
    Ok(commands)
}

/// The `--help` text: the options and the commands in short.
pub fn usage() -> &'static str {
    "\
Usage: microsip [OPTIONS] [COMMAND...]

The first microsip to start becomes the phone. A later `microsip COMMAND...` sends
the command to the running phone, prints the reply and exits with its status.
A running phone also takes --call, --setvolume, --micvolume, --autoanswer and --show
(applied in that order, before the command); the options that shape a phone as it
starts (--ini of another file, --debug, --log, --user, ...) are refused with exit 2.

Options (before the command; `--name=value` works too; `--` ends the options):
  --ini FILE, /i:FILE       the ini file to use
  --profile NAME            a named instance with its own socket ([A-Za-z0-9_.-])
  --dn NAME                 account display name for this run
  --user USER               account user for this run
  --domain DOMAIN           account domain (SIP server) for this run
  --password PASSWORD       account password for this run (not written to the ini)
  --proxy PROXY             account outbound proxy for this run
  --stun SERVER             STUN server for this run
  --call TARGET             dial TARGET once registered
  --autoanswer 0|1          auto-answer incoming calls
  --dialplan RULES          dial plan (x . <match:replace>, rules split by |)
  --show normal|minimized|hidden, /minimized, /hide
                            window state
  --debug FILE              write a SIP trace to FILE
  --log FILE                append one CSV row per finished call to FILE
  --setvolume N             initial speaker volume, 0-100
  --micvolume N             initial microphone level, 0-100
  --http PORT               serve the HTTP + WebSocket API on 127.0.0.1:PORT
                            (0: off; the ini's httpPort otherwise)
  --headless, --daemon      run with no window
  --json                    print replies as JSON
  -h, --help                print this help
  -V, --version             print the version

Commands (case-insensitive; MicroSIP's DDE, /x: and msip: spellings work too):
  dial TARGET [ACCOUNT]     call (an active call is held first); also a bare number,
                            sip:, sips:, tel:, callto:, dial:, dialpad:, msip:NUMBER
  callto TARGET [ACCOUNT]   call without holding the active call
  NUMBER TEXT...            send TEXT as a SIP MESSAGE
  message TARGET TEXT...    send a SIP MESSAGE
  answer [ID]               answer a ringing call (/answer, msip:answer)
  reject [ID] [CODE]        reject ringing calls (486; decline = 603) (/hangupincoming)
  hangup [ID]               end the active call
  hangupall                 end every call but ringing incoming ones
  hangupcalling             cancel unanswered outgoing calls
  hold [ID] [on|off]        toggle or set hold (msip:hold)
  transfer TARGET [ID]      blind transfer (/transfer:N, msip:transfer_N)
  dtmf DIGITS [ID]          send 0-9 * # A-D, ',' = pause (SendDTMF, /dtmf:D)
  record start|stop [ID]    record the call to a WAV in recordingPath
  play FILE [ID] [stop|loop|hangup]
                            play a WAV into the call; play off [ID] stops it
  conference [ID...]        merge calls (all answered ones without ids);
                            conference off [ID] takes one out or ends it
  mute [on|off|1|0]         microphone mute (msip:micmute, micunmute, micmuteclick)
  speakermute [on|off]      speaker mute (msip:speakmute, ...)
  autoanswer [on|off]       auto-answer incoming calls for this run (toggle alone)
  volumeup|volumedown [N]   speaker volume by N steps 1-10 (msip:speakup, speakdown)
  micup|micdown [N]         microphone level by N steps (msip:micup, micdown)
  setvolume N               speaker volume 0-100 (VOLUME)
  setmicvolume N            microphone level 0-100
  setdevice input|output|ring DEVICE
                            switch an audio device (a number from devices, an
                            id, a name, null, file:PATH.wav, tone:FREQ)
  devices                   list audio devices, numbered
  status                    call status (STATUS, report:status: 0 idle,
                            1 ringing, 2 active, 3 hold, 4 disconnected)
  activecall                remote URI of the active call
  calls                     every call
  history [missed] [N]      the call history, newest first (N: the newest N)
  account N [/password:P]   switch account, or store its password (/account:N)
  register [N], unregister [N]
  show [normal|minimized|hidden], minimize, /hide, /minimized
  events [FILTER]           stream events
  exit                      hang up, unregister and exit (Close, QUIT, /exit)
  http-token                print the HTTP API's bearer token (made if missing)
  open [--print]            open the web phone page logged in (--print: print its address)

DDE execute strings run as well: '[Dial(1002)]', '[Status]' (the number),
'[SetDevice(output, null)]', several in one string ('[Hold][Dial(1002)]': in order,
one reply each). Arguments may be separated by commas: SetDevice input, 2.
"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_string).collect()
    }

    fn parse(line: &str) -> Result<(StartOptions, Vec<String>), OptionsError> {
        parse_start(&words(line))
    }

    fn options(line: &str) -> StartOptions {
        let (options, command) = parse(line).unwrap();
        assert!(command.is_empty(), "{line}: command {command:?}");
        options
    }

    fn error(line: &str) -> String {
        parse(line).unwrap_err().to_string()
    }

    #[test]
    fn nothing_given() {
        assert_eq!(parse("").unwrap(), (StartOptions::default(), vec![]));
    }

    #[test]
    fn every_value_option_in_both_spellings() {
        for form in [
            "--ini /tmp/a.ini",
            "--ini=/tmp/a.ini",
            "/i:/tmp/a.ini",
            "/I:/tmp/a.ini",
        ] {
            assert_eq!(
                options(form).ini,
                Some(PathBuf::from("/tmp/a.ini")),
                "{form}"
            );
        }
        for form in ["--profile work", "--profile=work"] {
            assert_eq!(options(form).profile.as_deref(), Some("work"));
        }
        let account = |line: &str| options(line).account;
        for sep in [" ", "="] {
            let a = account(&format!(
                "--dn{sep}Alice --user{sep}1001 --domain{sep}pbx.example --password{sep}pw \
                 --proxy{sep}sip:proxy --stun{sep}stun.example"
            ));
            assert_eq!(a.display_name.as_deref(), Some("Alice"));
            assert_eq!(a.user.as_deref(), Some("1001"));
            assert_eq!(a.domain.as_deref(), Some("pbx.example"));
            assert_eq!(a.password.as_deref(), Some("pw"));
            assert_eq!(a.proxy.as_deref(), Some("sip:proxy"));
            assert_eq!(a.stun.as_deref(), Some("stun.example"));
            assert!(!a.is_empty());

            let o = options(&format!(
                "--call{sep}123 --autoanswer{sep}1 --dialplan{sep}<0:>x. --show{sep}hidden \
                 --debug{sep}/tmp/t --log{sep}/tmp/l.csv --setvolume{sep}40 --micvolume{sep}100"
            ));
            assert_eq!(o.call.as_deref(), Some("123"));
            assert_eq!(o.autoanswer, Some(true));
            assert_eq!(o.dialplan.as_deref(), Some("<0:>x."));
            assert_eq!(o.show, Some(WindowState::Hidden));
            assert_eq!(o.debug, Some(PathBuf::from("/tmp/t")));
            assert_eq!(o.log, Some(PathBuf::from("/tmp/l.csv")));
            assert_eq!(o.setvolume, Some(40));
            assert_eq!(o.micvolume, Some(100));
        }
        assert_eq!(options("--autoanswer 0").autoanswer, Some(false));
        assert_eq!(options("--show normal").show, Some(WindowState::Normal));
        assert_eq!(
            options("--show Minimized").show,
            Some(WindowState::Minimized)
        );
        assert_eq!(options("--setvolume 0").setvolume, Some(0));
        // An account value may be empty (`--proxy=` clears it) and may start with '-'.
        assert_eq!(account("--proxy=").proxy.as_deref(), Some(""));
        assert_eq!(account("--password --x").password.as_deref(), Some("--x"));
        assert_eq!(account("--dn -x").display_name.as_deref(), Some("-x"));
        // A value may contain '='.
        assert_eq!(
            options("--dialplan=<1:=>").dialplan.as_deref(),
            Some("<1:=>")
        );
        // The last one wins.
        assert_eq!(options("--setvolume 1 --setvolume 2").setvolume, Some(2));
    }

    #[test]
    fn every_flag() {
        assert!(options("--headless").headless);
        assert!(options("--daemon").headless);
        assert!(options("--json").json);
        assert!(options("--help").help);
        assert!(options("-h").help);
        assert!(options("--version").version);
        assert!(options("-V").version);
        let all = options("--headless --json -h -V");
        assert!(all.headless && all.json && all.help && all.version);
        assert_eq!(options("/minimized").show, Some(WindowState::Minimized));
        assert_eq!(options("/MINIMIZED").show, Some(WindowState::Minimized));
        assert_eq!(options("/hide").show, Some(WindowState::Hidden));
        let o = options("/hide --ini x.ini --json");
        assert_eq!(o.show, Some(WindowState::Hidden));
        assert_eq!(o.ini, Some(PathBuf::from("x.ini")));
        assert!(o.json);
    }

    #[test]
    fn the_command_split() {
        let (o, command) = parse("--profile p --json message 100 --not-an-option").unwrap();
        assert_eq!(o.profile.as_deref(), Some("p"));
        assert!(o.json);
        assert_eq!(command, words("message 100 --not-an-option"));

        for line in [
            "/answer",
            "/exit",
            "/account:2 /password:x",
            "123",
            "msip:hangupall",
        ] {
            let (o, command) = parse(line).unwrap();
            assert_eq!(o, StartOptions::default(), "{line}");
            assert_eq!(command, words(line));
        }
        let (o, command) = parse("/i:a.ini /transfer:200").unwrap();
        assert_eq!(o.ini, Some(PathBuf::from("a.ini")));
        assert_eq!(command, ["/transfer:200"]);

        // `/hide` with command words after it is a command word itself.
        let (o, command) = parse("--json /hide 123").unwrap();
        assert!(o.json);
        assert_eq!(o.show, None);
        assert_eq!(command, ["/hide", "123"]);
        let (o, command) = parse("/minimized --json dial 1").unwrap();
        assert!(!o.json);
        assert_eq!(command, words("/minimized --json dial 1"));

        // `--` ends the options.
        let (o, command) = parse("--json -- --help").unwrap();
        assert!(o.json && !o.help);
        assert_eq!(command, ["--help"]);
        assert_eq!(parse("--").unwrap().1, Vec::<String>::new());

        // Options after the command are command words.
        let (o, command) = parse("status --json").unwrap();
        assert!(!o.json);
        assert_eq!(command, ["status", "--json"]);
    }

    #[test]
    fn errors() {
        assert_eq!(
            error("--frobnicate"),
            "unknown option '--frobnicate' (see microsip --help)"
        );
        assert_eq!(
            error("--frob=1"),
            "unknown option '--frob' (see microsip --help)"
        );
        assert_eq!(error("-x"), "unknown option '-x' (see microsip --help)");
        assert_eq!(error("-v"), "unknown option '-v' (see microsip --help)");
        assert_eq!(
            error("--INI a"),
            "unknown option '--INI' (see microsip --help)"
        );
        assert_eq!(
            error("--setvolume loud"),
            "--setvolume needs a number 0-100, got 'loud'"
        );
        assert_eq!(
            error("--micvolume=101"),
            "--micvolume needs a number 0-100, got '101'"
        );
        assert_eq!(
            error("--setvolume -5"),
            "--setvolume needs a number 0-100, got '-5'"
        );
        assert_eq!(
            error("--setvolume +5"),
            "--setvolume needs a number 0-100, got '+5'"
        );
        assert_eq!(error("--ini"), "--ini needs a file name");
        assert_eq!(error("--ini="), "--ini needs a file name");
        assert_eq!(error("--ini --json"), "--ini needs a file name");
        assert_eq!(error("/i:"), "/i: needs a file name");
        assert_eq!(error("--debug"), "--debug needs a file name");
        assert_eq!(error("--log"), "--log needs a file name");
        assert_eq!(error("--call"), "--call needs a target");
        assert_eq!(error("--dialplan"), "--dialplan needs rules");
        assert_eq!(error("--dn"), "--dn needs a value");
        assert_eq!(error("--password"), "--password needs a value");
        assert_eq!(
            error("--autoanswer yes"),
            "--autoanswer needs 0 or 1, got 'yes'"
        );
        assert_eq!(
            error("--show big"),
            "--show needs normal, minimized or hidden, got 'big'"
        );
        assert_eq!(error("--json=1"), "--json takes no value");
        assert_eq!(error("--daemon=yes"), "--daemon takes no value");
        assert_eq!(error("--profile"), "--profile needs a name");
        for bad in [".hidden", "a/b", "../x", "a b", "é", &"x".repeat(65)] {
            let result = parse_start(&["--profile".to_string(), bad.to_string()]);
            let message = result.unwrap_err().to_string();
            assert!(message.starts_with("profile name '"), "{bad}: {message}");
        }
        for good in ["a", "work-2", "A_b.c", &"x".repeat(64)] {
            let (o, _) = parse_start(&["--profile".to_string(), good.to_string()]).unwrap();
            assert_eq!(o.profile.as_deref(), Some(good));
        }
        // An error after /hide is still reported.
        assert!(error("/hide --frob").contains("--frob"));
    }

    #[test]
    fn a_password_never_shows() {
        let (o, _) = parse("--password secret --user 1001").unwrap();
        assert_eq!(o.account.password.as_deref(), Some("secret"));
        let debug = format!("{o:?} {:?}", o.account);
        assert!(!debug.contains("secret"), "{debug}");
        assert!(debug.contains("password: Some(***)"), "{debug}");
        assert!(format!("{:?}", AccountOverrides::default()).contains("password: None"));

        for line in [
            "--password secret --setvolume loud",
            "--password secret --frob",
            "--password=secret --frob=secret",
            "--passwd=secret",
            "--pasword secret",
            "--password secret --json=secret",
            "--password secret --profile ../bad",
            "--password secret --ini",
            "-p=secret",
        ] {
            let error = parse(line).unwrap_err();
            let text = format!("{error} {error:?}");
            assert!(!text.contains("secret"), "{line}: {text}");
        }
    }

    fn running(ini: &str) -> RunningPhone {
        RunningPhone {
            pid: 1,
            ini: absolute(Path::new(ini)),
            debug: Some(absolute(Path::new("/tmp/trace.log"))),
            log: None,
        }
    }

    fn runtime(line: &str) -> Result<Vec<String>, String> {
        let (o, _) = parse(line).unwrap();
        let r = running("/tmp/a.ini");
        runtime_commands(&o, Some(&r), "p")
            .map(|list| list.iter().map(|w| w.join(" ")).collect())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_running_phone_takes_the_run_time_options_as_commands() {
        assert_eq!(runtime(""), Ok(vec![]));
        assert_eq!(
            runtime("--call 123 --setvolume 30 --micvolume 0 --autoanswer 1 /minimized"),
            Ok(vec![
                "show minimized".to_string(),
                "setvolume 30".to_string(),
                "setmicvolume 0".to_string(),
                "autoanswer on".to_string(),
                "dial 123".to_string(),
            ])
        );
        assert_eq!(runtime("--autoanswer 0"), Ok(vec!["autoanswer off".into()]));
        assert_eq!(runtime("--show hidden"), Ok(vec!["show hidden".into()]));
        // Options about this process or naming the running phone's own files.
        assert_eq!(
            runtime("--profile p --json --headless --ini /tmp/a.ini --debug /tmp/trace.log"),
            Ok(vec![])
        );
        assert_eq!(runtime("/i:/tmp/./a.ini"), Ok(vec![]));
        // The words come out as the engine's grammar reads them.
        for line in [
            "--call sip:100@127.0.0.1 --setvolume 30 --micvolume 5 --autoanswer 1 --show normal",
        ] {
            for words in runtime(line).unwrap() {
                let words: Vec<String> = words.split(' ').map(str::to_string).collect();
                assert!(
                    microsip_engine::grammar::parse_args(&words).is_ok(),
                    "{words:?}"
                );
            }
        }
    }

    #[test]
    fn a_running_phone_refuses_the_start_only_options() {
        let e = runtime("--user 1001 --password secret --call 1").unwrap_err();
        assert_eq!(
            e,
            "a phone is already running for profile 'p': --user, --password apply only when \
             a phone starts; stop it first (microsip --profile p exit) or start another with \
             --profile NAME"
        );
        assert!(!e.contains("secret"));
        for (line, needle) in [
            ("--dn A", "--dn applies only when a phone starts"),
            ("--domain d", "--domain applies"),
            ("--proxy=", "--proxy applies"),
            ("--stun s", "--stun applies"),
            ("--dialplan x.", "--dialplan applies"),
            (
                "--ini /tmp/b.ini",
                "--ini /tmp/b.ini is not its ini (/tmp/a.ini)",
            ),
            (
                "--debug /tmp/other.log",
                "--debug /tmp/other.log is not its SIP trace",
            ),
            (
                "--log /tmp/calls.csv",
                "--log applies only when a phone starts (it runs without a call log)",
            ),
        ] {
            let e = runtime(line).unwrap_err();
            assert!(e.contains(needle), "{line}: {e}");
        }
        // Two problems are both named.
        let e = runtime("--ini /tmp/b.ini --user u").unwrap_err();
        assert!(
            e.contains("--user applies") && e.contains("--ini /tmp/b.ini"),
            "{e}"
        );
        // Without the lock file's record no file can be confirmed.
        let (o, _) = parse("--ini /tmp/a.ini").unwrap();
        let e = runtime_commands(&o, None, "p").unwrap_err().to_string();
        assert!(e.contains("cannot tell which ini it uses"), "{e}");
        assert_eq!(
            runtime_commands(&parse("--setvolume 1").unwrap().0, None, "p"),
            Ok(vec![vec!["setvolume".to_string(), "1".to_string()]])
        );
    }

    #[test]
    fn http_port_option() {
        assert_eq!(parse("--http 8080").unwrap().0.http, Some(8080));
        assert_eq!(parse("--http=0").unwrap().0.http, Some(0));
        for bad in ["--http x", "--http 65536", "--http -1", "--http +80"] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("--http needs a port number"), "{bad}: {e}");
        }
        // A running phone cannot take it: the API starts with the phone.
        let e = runtime_commands(&parse("--http 8080").unwrap().0, None, "p")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--http applies only when a phone starts"), "{e}");
    }

    #[test]
    fn usage_names_every_option() {
        let text = usage();
        for option in [
            "--ini",
            "/i:",
            "--profile",
            "--dn",
            "--user",
            "--domain",
            "--password",
            "--proxy",
            "--stun",
            "--call",
            "--autoanswer",
            "--dialplan",
            "--show",
            "/minimized",
            "/hide",
            "--debug",
            "--log",
            "--setvolume",
            "--micvolume",
            "--http",
            "--headless",
            "--daemon",
            "--json",
            "--help",
            "--version",
            "-h",
            "-V",
        ] {
            assert!(text.contains(option), "{option}");
        }
    }
}
