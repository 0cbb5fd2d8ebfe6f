//! The D-Bus face: the phone on the session bus, one well-known name per profile
//! ([`bus_name`]), object [`OBJECT_PATH`], interface [`INTERFACE`]. Its methods are the
//! DDE verbs (`Dial`, `Hangup`, `SetVolume`...) and variants that take a call id
//! (`HangupCall`, `HoldCall`...); each one is the engine's own command, spelt as the
//! grammar reads it ([`Request::words`]), so every check and every behaviour is the
//! socket's. A refused command is the D-Bus error `org.microsip.Phone1.Error.<Code>`
//! (`NoCall`, `BadArgument`...) with the engine's words. `Execute(s)` takes what a
//! socket line may hold, DDE execute strings too (`[Hold][Dial(1002)]`): parsed whole
//! before anything runs, then run in order, one `(ok, code, text)` per command
//! ([`execute_commands`]). Every engine event goes out
//! as the signal `Event(s type, t call, s json)`, the JSON the socket's `events`
//! stream gives (`call` 0 for events about no call).
//!
//! Started by [`start`] only when `DBUS_SESSION_BUS_ADDRESS` names a bus that
//! answers and `[Settings] dbus` is not 0; without one the phone logs a line and runs
//! on. The desktop notifications ([`crate::notify`]) share the connection.

use std::time::Duration;

use microsip_engine::command::ParseError;
use microsip_engine::grammar;
use microsip_engine::reply::ErrorCode;
use microsip_engine::{EngineHandle, Reply};
use tokio::sync::broadcast::error::RecvError;
use tracing::{debug, info, warn};
use zbus::message::{Header, Message};
use zbus::names::{ErrorName, OwnedErrorName};
use zbus::object_server::SignalEmitter;

use crate::paths::DEFAULT_PROFILE;

/// The object every method and signal is on.
pub const OBJECT_PATH: &str = "/org/microsip/Phone";
/// The interface (a `1` so a later incompatible one can stand beside it).
pub const INTERFACE: &str = "org.microsip.Phone1";
/// Errors are `ERROR_PREFIX.<Code>`: `org.microsip.Phone1.Error.NoCall`.
pub const ERROR_PREFIX: &str = "org.microsip.Phone1.Error";
/// The default profile's well-known name; other profiles add `.<profile>`.
pub const BASE_NAME: &str = "org.microsip.Phone";
/// How long connecting to the bus and taking the name may take before the phone
/// gives up on D-Bus for this run.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The well-known name of a profile: `org.microsip.Phone` for the default one,
/// `org.microsip.Phone.<profile>` for the others. A D-Bus name element holds only
/// `[A-Za-z0-9_-]` and does not start with a digit, so every other byte of the
/// profile name (`.`), `_` itself and a leading digit are written `_xx` (hex):
/// `work` → `org.microsip.Phone.work`, `a.b_c` → `org.microsip.Phone.a_2eb_5fc`,
/// `2nd` → `org.microsip.Phone._32nd`.
pub fn bus_name(profile: &str) -> String {
    if profile == DEFAULT_PROFILE {
        return BASE_NAME.to_string();
    }
    let mut element = String::with_capacity(profile.len());
    for (i, b) in profile.bytes().enumerate() {
        let plain = b.is_ascii_alphabetic() || b == b'-' || (b.is_ascii_digit() && i > 0);
        if plain {
            element.push(char::from(b));
        } else {
            element.push_str(&format!("_{b:02x}"));
        }
    }
    format!("{BASE_NAME}.{element}")
}

/// One method call, with its arguments: what the engine is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    Dial {
        target: String,
        account: Option<u32>,
    },
    CallTo {
        target: String,
    },
    Answer {
        call: Option<u64>,
    },
    /// Reject a ringing call with 486.
    Reject {
        call: Option<u64>,
    },
    /// Reject a ringing call with 603 Decline.
    Decline {
        call: u64,
    },
    Hangup {
        call: Option<u64>,
    },
    HangupAll,
    /// `on: None` toggles.
    Hold {
        call: Option<u64>,
        on: Option<bool>,
    },
    Transfer {
        target: String,
        call: Option<u64>,
    },
    Dtmf {
        digits: String,
        call: Option<u64>,
    },
    /// `on: None` toggles.
    Mute {
        on: Option<bool>,
    },
    VolumeUp,
    VolumeDown,
    SetVolume {
        level: u32,
    },
    SetMicVolume {
        level: u32,
    },
    SetDevice {
        role: String,
        device: String,
    },
    /// The numeric status, as the socket's `STATUS`.
    Status,
    ActiveCall,
    Calls,
    Close,
}

impl Request {
    /// The command words the engine's grammar reads for this request: the same
    /// words a socket client would send, one D-Bus argument one word.
    pub fn words(&self) -> Vec<String> {
        let call = |verb: &str, call: &Option<u64>| {
            let mut words = vec![verb.to_string()];
            words.extend(call.map(|id| id.to_string()));
            words
        };
        let switch = |on: bool| if on { "on" } else { "off" }.to_string();
        match self {
            Request::Dial { target, account } => {
                let mut words = vec!["dial".to_string(), target.clone()];
                if let Some(n) = account {
                    words.extend(["account".to_string(), n.to_string()]);
                }
                words
            }
            Request::CallTo { target } => vec!["callto".into(), target.clone()],
            Request::Answer { call: id } => call("answer", id),
            Request::Reject { call: id } => call("reject", id),
            Request::Decline { call: id } => vec!["decline".into(), id.to_string()],
            Request::Hangup { call: id } => call("hangup", id),
            Request::HangupAll => vec!["hangupall".into()],
            Request::Hold { call: id, on } => {
                let mut words = call("hold", id);
                words.extend(on.map(switch));
                words
            }
            Request::Transfer { target, call: id } => {
                let mut words = vec!["transfer".to_string(), target.clone()];
                words.extend(id.map(|id| id.to_string()));
                words
            }
            Request::Dtmf { digits, call: id } => {
                let mut words = vec!["dtmf".to_string(), digits.clone()];
                words.extend(id.map(|id| id.to_string()));
                words
            }
            Request::Mute { on } => {
                let mut words = vec!["mute".to_string()];
                words.extend(on.map(switch));
                words
            }
            Request::VolumeUp => vec!["volumeup".into()],
            Request::VolumeDown => vec!["volumedown".into()],
            Request::SetVolume { level } => vec!["setvolume".into(), level.to_string()],
            Request::SetMicVolume { level } => vec!["setmicvolume".into(), level.to_string()],
            Request::SetDevice { role, device } => {
                vec!["setdevice".into(), role.clone(), device.clone()]
            }
            // Upper case: the numeric form, as the socket's `STATUS`.
            Request::Status => vec!["STATUS".into()],
            Request::ActiveCall => vec!["activecall".into()],
            Request::Calls => vec!["calls".into()],
            Request::Close => vec!["exit".into()],
        }
    }

    /// The engine command, read by the grammar.
    pub fn command(&self) -> Result<microsip_engine::Command, ParseError> {
        grammar::parse_args(&self.words())
    }
}

/// The commands `Execute` runs for `line`: one socket line (`hold 3 on`) or a DDE
/// execute string (`[Hold][Dial(1002)]`), read whole by the grammar, so a string that
/// does not parse (an unbalanced bracket, an unknown verb, a bad argument) is one
/// error naming the part, and nothing of it runs. `events` is refused: on the bus
/// the events are the `Event` signal.
pub(crate) fn execute_commands(line: &str) -> Result<Vec<microsip_engine::Command>, PhoneError> {
    let commands = grammar::parse_line_all(line).map_err(PhoneError::from_parse)?;
    if commands
        .iter()
        .any(|c| matches!(c, microsip_engine::Command::Events { .. }))
    {
        return Err(PhoneError::new(
            ErrorCode::BadArgument,
            "events come as the Event signal on D-Bus, not as a command",
        ));
    }
    Ok(commands)
}

/// One command's result in `Execute`'s reply: whether it was done, its error code
/// (`no_such_call`...; empty when done) and its text (the reply, or the reason).
type ExecuteResult = (bool, String, String);

fn execute_result(reply: Reply) -> ExecuteResult {
    match reply {
        Ok(answer) => (true, String::new(), answer.text),
        Err(failure) => (false, failure.code.as_str().to_string(), failure.message),
    }
}

/// A refused command as a D-Bus error: `org.microsip.Phone1.Error.<Code>` and the
/// engine's words.
#[derive(Debug, Clone)]
pub struct PhoneError {
    name: OwnedErrorName,
    message: String,
}

impl PhoneError {
    /// The D-Bus error for an engine failure `code`, with `message` as its text.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> PhoneError {
        let name = error_name(code);
        // Every code's name is valid ([A-Za-z] only); the fallback never runs.
        let name = OwnedErrorName::try_from(name)
            .unwrap_or_else(|_| ErrorName::from_static_str_unchecked(ERROR_PREFIX).into());
        PhoneError {
            name,
            message: message.into(),
        }
    }

    fn from_parse(e: ParseError) -> PhoneError {
        PhoneError::new(ErrorCode::from_parse_code(e.code), e.message)
    }
}

/// `no_such_call` → `org.microsip.Phone1.Error.NoSuchCall`.
pub fn error_name(code: ErrorCode) -> String {
    let camel: String = code
        .as_str()
        .split('_')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect();
    format!("{ERROR_PREFIX}.{camel}")
}

impl zbus::DBusError for PhoneError {
    fn create_reply(&self, call: &Header<'_>) -> zbus::Result<Message> {
        Message::error(call, self.name.as_ref())?.build(&(self.message.as_str(),))
    }

    fn name(&self) -> ErrorName<'_> {
        self.name.as_ref()
    }

    fn description(&self) -> Option<&str> {
        Some(&self.message)
    }
}

/// A reply's text, or its failure as a D-Bus error.
fn text_of(reply: Reply) -> Result<String, PhoneError> {
    reply
        .map(|answer| answer.text)
        .map_err(|f| PhoneError::new(f.code, f.message))
}

/// The exported object.
struct PhoneObject {
    engine: EngineHandle,
}

impl PhoneObject {
    async fn run(&self, request: Request) -> Result<String, PhoneError> {
        let command = request.command().map_err(PhoneError::from_parse)?;
        text_of(self.engine.execute(command).await)
    }

    /// A dial's reply: the new call's id.
    async fn dial_request(&self, request: Request) -> Result<u64, PhoneError> {
        let text = self.run(request).await?;
        number_in(&text)
    }
}

/// The number a reply's text starts with (a call id, a status code).
fn number_in(text: &str) -> Result<u64, PhoneError> {
    text.split_whitespace()
        .next()
        .and_then(|word| word.parse().ok())
        .ok_or_else(|| {
            PhoneError::new(
                ErrorCode::Internal,
                format!("the engine replied '{text}' where a number was expected"),
            )
        })
}

// Each call runs as its own task (zbus's default), so a command that waits (a hold
// while the call still rings) holds up no other client. A caller that waits for
// each reply (as busctl and the usual bindings do) has its commands applied in
// order, each reply after its change took effect, as on the socket; calls sent
// without waiting for the replies have no order guaranteed.
#[zbus::interface(name = "org.microsip.Phone1")]
impl PhoneObject {
    /// Dial a target (number, SIP URI, tel:...); an active call is put on hold
    /// first. Returns the new call's id.
    async fn dial(&self, target: String) -> Result<u64, PhoneError> {
        self.dial_request(Request::Dial {
            target,
            account: None,
        })
        .await
    }

    /// Dial from a given account.
    async fn dial_from(&self, target: String, account: u32) -> Result<u64, PhoneError> {
        self.dial_request(Request::Dial {
            target,
            account: Some(account),
        })
        .await
    }

    /// Dial without putting an active call on hold. Returns the new call's id.
    async fn call_to(&self, target: String) -> Result<u64, PhoneError> {
        self.dial_request(Request::CallTo { target }).await
    }

    /// Answer the oldest ringing incoming call.
    async fn answer(&self) -> Result<String, PhoneError> {
        self.run(Request::Answer { call: None }).await
    }

    async fn answer_call(&self, call: u64) -> Result<String, PhoneError> {
        self.run(Request::Answer { call: Some(call) }).await
    }

    /// Reject ringing incoming calls (486).
    async fn reject(&self) -> Result<String, PhoneError> {
        self.run(Request::Reject { call: None }).await
    }

    async fn reject_call(&self, call: u64) -> Result<String, PhoneError> {
        self.run(Request::Reject { call: Some(call) }).await
    }

    /// Reject a ringing incoming call with 603 Decline.
    async fn decline_call(&self, call: u64) -> Result<String, PhoneError> {
        self.run(Request::Decline { call }).await
    }

    /// End the active call.
    async fn hangup(&self) -> Result<String, PhoneError> {
        self.run(Request::Hangup { call: None }).await
    }

    async fn hangup_call(&self, call: u64) -> Result<String, PhoneError> {
        self.run(Request::Hangup { call: Some(call) }).await
    }

    async fn hangup_all(&self) -> Result<String, PhoneError> {
        self.run(Request::HangupAll).await
    }

    /// Toggle hold on the active call.
    async fn hold(&self) -> Result<String, PhoneError> {
        self.run(Request::Hold {
            call: None,
            on: None,
        })
        .await
    }

    /// Hold (`true`) or resume (`false`) a call.
    async fn hold_call(&self, call: u64, on: bool) -> Result<String, PhoneError> {
        self.run(Request::Hold {
            call: Some(call),
            on: Some(on),
        })
        .await
    }

    /// Blind transfer of the active call.
    async fn transfer(&self, target: String) -> Result<String, PhoneError> {
        self.run(Request::Transfer { target, call: None }).await
    }

    async fn transfer_call(&self, call: u64, target: String) -> Result<String, PhoneError> {
        self.run(Request::Transfer {
            target,
            call: Some(call),
        })
        .await
    }

    /// Send DTMF digits on the active call.
    #[zbus(name = "SendDTMF")]
    async fn send_dtmf(&self, digits: String) -> Result<String, PhoneError> {
        self.run(Request::Dtmf { digits, call: None }).await
    }

    #[zbus(name = "SendDTMFCall")]
    async fn send_dtmf_call(&self, call: u64, digits: String) -> Result<String, PhoneError> {
        self.run(Request::Dtmf {
            digits,
            call: Some(call),
        })
        .await
    }

    /// Toggle the microphone mute.
    async fn mute(&self) -> Result<String, PhoneError> {
        self.run(Request::Mute { on: None }).await
    }

    async fn set_mute(&self, on: bool) -> Result<String, PhoneError> {
        self.run(Request::Mute { on: Some(on) }).await
    }

    /// One step up; returns the new level.
    async fn volume_up(&self) -> Result<String, PhoneError> {
        self.run(Request::VolumeUp).await
    }

    async fn volume_down(&self) -> Result<String, PhoneError> {
        self.run(Request::VolumeDown).await
    }

    /// Speaker level 0-100.
    async fn set_volume(&self, level: u32) -> Result<String, PhoneError> {
        self.run(Request::SetVolume { level }).await
    }

    /// Microphone level 0-100.
    async fn set_mic_volume(&self, level: u32) -> Result<String, PhoneError> {
        self.run(Request::SetMicVolume { level }).await
    }

    /// `role`: input, output or ring; `device`: an id or name from `devices`.
    async fn set_device(&self, role: String, device: String) -> Result<String, PhoneError> {
        self.run(Request::SetDevice { role, device }).await
    }

    /// As the socket's `STATUS`: 0 idle, 1 ringing, 2 active, 3 on hold,
    /// 4 disconnected.
    async fn status(&self) -> Result<u32, PhoneError> {
        let text = self.run(Request::Status).await?;
        let n = number_in(&text)?;
        u32::try_from(n).map_err(|_| {
            PhoneError::new(ErrorCode::Internal, format!("status {n} is out of range"))
        })
    }

    /// The remote URI of the active call, empty when none.
    async fn active_call(&self) -> Result<String, PhoneError> {
        self.run(Request::ActiveCall).await
    }

    /// Every call, as the JSON array `calls` gives JSON clients.
    async fn calls(&self) -> Result<String, PhoneError> {
        let command = Request::Calls.command().map_err(PhoneError::from_parse)?;
        let answer = self
            .engine
            .execute(command)
            .await
            .map_err(|f| PhoneError::new(f.code, f.message))?;
        Ok(answer.data.to_string())
    }

    /// What a socket line may hold: a DDE execute string (`[Hold][Dial(1002)]`,
    /// `[Status]`, `[SetDevice(output, null)]`) or one command's words
    /// (`SetDevice input, 2`). Parsed whole first (a broken string is the error
    /// `BadArgument`/`UnknownCommand` naming the part, and nothing runs), then run in
    /// order, each once the one before replied: one `(ok, code, text)` per command,
    /// `code` empty when it was done (`[Status]` gives the number, as `Status`).
    async fn execute(&self, line: String) -> Result<Vec<ExecuteResult>, PhoneError> {
        let commands = execute_commands(&line)?;
        let mut results = Vec::with_capacity(commands.len());
        for command in commands {
            results.push(execute_result(self.engine.execute(command).await));
        }
        Ok(results)
    }

    /// Hang up every call cleanly, unregister and exit.
    async fn close(&self) -> Result<String, PhoneError> {
        self.run(Request::Close).await
    }

    /// Every engine event: its `type`, its call id (0: none) and its JSON.
    #[zbus(signal)]
    async fn event(
        emitter: &SignalEmitter<'_>,
        kind: &str,
        call: u64,
        json: &str,
    ) -> zbus::Result<()>;
}

/// The running D-Bus face: dropping it leaves the bus (the name goes with it).
pub struct DbusService {
    connection: zbus::Connection,
    name: String,
}

impl DbusService {
    /// The connection, for the other desktop parts (notifications).
    pub fn connection(&self) -> &zbus::Connection {
        &self.connection
    }

    /// The well-known bus name this phone owns (`org.microsip.Phone[.<profile>]`).
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Why there is no D-Bus face this run.
#[derive(Debug)]
pub enum Unavailable {
    /// `DBUS_SESSION_BUS_ADDRESS` is not set.
    NoBus,
    /// The bus did not answer or refused us (the text says why).
    Failed(String),
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unavailable::NoBus => f.write_str("no session bus (DBUS_SESSION_BUS_ADDRESS not set)"),
            Unavailable::Failed(why) => f.write_str(why),
        }
    }
}

/// Connects to the session bus, takes the profile's name, exports the object and
/// starts sending the events as signals.
pub async fn start(engine: EngineHandle, profile: &str) -> Result<DbusService, Unavailable> {
    let address = std::env::var("DBUS_SESSION_BUS_ADDRESS")
        .ok()
        .filter(|a| !a.trim().is_empty())
        .ok_or(Unavailable::NoBus)?;
    let name = bus_name(profile);
    let object = PhoneObject {
        engine: engine.clone(),
    };
    let connect = async {
        zbus::connection::Builder::address(address.as_str())?
            .name(name.as_str())?
            .serve_at(OBJECT_PATH, object)?
            .build()
            .await
    };
    let connection = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(c)) => c,
        Ok(Err(zbus::Error::NameTaken)) => {
            return Err(Unavailable::Failed(format!(
                "{name} is already taken on the session bus"
            )))
        }
        Ok(Err(e)) => return Err(Unavailable::Failed(format!("session bus: {e}"))),
        Err(_) => {
            return Err(Unavailable::Failed(format!(
                "the session bus did not answer within {} s",
                CONNECT_TIMEOUT.as_secs()
            )))
        }
    };
    let emitter = SignalEmitter::new(&connection, OBJECT_PATH)
        .map_err(|e| Unavailable::Failed(e.to_string()))?
        .into_owned();
    let Some((_, events)) = engine.subscribe().await else {
        return Err(Unavailable::Failed("the phone is stopping".into()));
    };
    tokio::spawn(send_events(emitter, events));
    Ok(DbusService { connection, name })
}

/// Every event as an `Event` signal, until the engine's stream closes. A listener
/// too slow for the bus costs a `lagged` signal, as on the socket.
async fn send_events(
    emitter: SignalEmitter<'static>,
    mut events: tokio::sync::broadcast::Receiver<microsip_engine::Event>,
) {
    loop {
        let (kind, call, json) = match events.recv().await {
            Ok(event) => (
                event.kind.type_name(),
                event.kind.call().unwrap_or(0),
                serde_json::to_string(&event).unwrap_or_default(),
            ),
            Err(RecvError::Lagged(missed)) => (
                "lagged",
                0,
                serde_json::json!({ "type": "lagged", "missed": missed }).to_string(),
            ),
            Err(RecvError::Closed) => return,
        };
        if let Err(e) = PhoneObject::event(&emitter, kind, call, &json).await {
            debug!("D-Bus signal {kind} not sent: {e}");
        }
    }
}

/// Starts the D-Bus face (and, with `notifications`, the desktop notifications)
/// when the settings allow it; logs why there is none. The phone runs on either way.
pub async fn start_desktop(
    engine: EngineHandle,
    profile: &str,
    enabled: bool,
    notifications: bool,
) -> Option<DbusService> {
    if !enabled {
        info!("D-Bus off ([Settings] dbus=0)");
        return None;
    }
    match start(engine.clone(), profile).await {
        Ok(service) => {
            info!("D-Bus: {} on the session bus", service.name());
            if notifications {
                crate::notify::start(service.connection().clone(), engine).await;
            }
            Some(service)
        }
        Err(Unavailable::NoBus) => {
            info!("D-Bus off: {}", Unavailable::NoBus);
            None
        }
        Err(e) => {
            warn!("D-Bus off: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use microsip_engine::command::{DeviceRole, LevelChange, LevelKind, StatusForm};
    use microsip_engine::Command;

    fn command(request: Request) -> Command {
        request.command().unwrap()
    }

    #[test]
    fn names_per_profile() {
        assert_eq!(bus_name("default"), "org.microsip.Phone");
        assert_eq!(bus_name("work"), "org.microsip.Phone.work");
        assert_eq!(bus_name("work-2"), "org.microsip.Phone.work-2");
        assert_eq!(bus_name("a.b_c"), "org.microsip.Phone.a_2eb_5fc");
        assert_eq!(bus_name("2nd"), "org.microsip.Phone._32nd");
        // Every allowed profile name makes a valid, distinct bus name.
        let profiles = ["x", "X1", "a.b", "a_2eb", "-", "_", "9", &"z".repeat(64)];
        let names: Vec<String> = profiles.iter().map(|p| bus_name(p)).collect();
        for name in &names {
            assert!(
                zbus::names::WellKnownName::try_from(name.as_str()).is_ok(),
                "{name}"
            );
        }
        let distinct: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(distinct.len(), names.len());
    }

    #[test]
    fn error_names() {
        assert_eq!(
            error_name(ErrorCode::NoCall),
            "org.microsip.Phone1.Error.NoCall"
        );
        assert_eq!(
            error_name(ErrorCode::NoSuchCall),
            "org.microsip.Phone1.Error.NoSuchCall"
        );
        assert_eq!(
            error_name(ErrorCode::NotAvailableYet),
            "org.microsip.Phone1.Error.NotAvailable"
        );
        let e = PhoneError::new(ErrorCode::BadArgument, "volume must be 0-100");
        assert_eq!(
            zbus::DBusError::name(&e).as_str(),
            "org.microsip.Phone1.Error.BadArgument"
        );
        assert_eq!(
            zbus::DBusError::description(&e),
            Some("volume must be 0-100")
        );
    }

    #[test]
    fn every_method_is_the_engine_command() {
        assert_eq!(
            command(Request::Dial {
                target: "1002".into(),
                account: None
            }),
            Command::Dial {
                target: "1002".into(),
                account: None,
                hold_active: true,
                numeric: false
            }
        );
        assert_eq!(
            command(Request::Dial {
                target: "1002,45#".into(),
                account: Some(2)
            }),
            Command::Dial {
                target: "1002,45#".into(),
                account: Some(2),
                hold_active: true,
                numeric: false
            }
        );
        assert!(matches!(
            command(Request::Dial {
                target: "tel:1002".into(),
                account: None
            }),
            Command::Dial { .. }
        ));
        assert!(matches!(
            command(Request::CallTo {
                target: "1002".into()
            }),
            Command::Dial {
                hold_active: false,
                ..
            }
        ));
        assert_eq!(
            command(Request::Answer { call: None }),
            Command::Answer { call: None }
        );
        assert_eq!(
            command(Request::Answer { call: Some(7) }),
            Command::Answer { call: Some(7) }
        );
        assert_eq!(
            command(Request::Reject { call: Some(7) }),
            Command::Reject {
                call: Some(7),
                code: None
            }
        );
        assert_eq!(
            command(Request::Decline { call: 7 }),
            Command::Reject {
                call: Some(7),
                code: Some(603)
            }
        );
        assert_eq!(
            command(Request::Hangup { call: None }),
            Command::Hangup { call: None }
        );
        assert_eq!(
            command(Request::Hangup { call: Some(3) }),
            Command::Hangup { call: Some(3) }
        );
        assert_eq!(command(Request::HangupAll), Command::HangupAll);
        assert_eq!(
            command(Request::Hold {
                call: None,
                on: None
            }),
            Command::Hold {
                call: None,
                on: None
            }
        );
        assert_eq!(
            command(Request::Hold {
                call: Some(3),
                on: Some(false)
            }),
            Command::Hold {
                call: Some(3),
                on: Some(false)
            }
        );
        assert_eq!(
            command(Request::Transfer {
                target: "1003".into(),
                call: Some(4)
            }),
            Command::Transfer {
                target: "1003".into(),
                call: Some(4)
            }
        );
        assert_eq!(
            command(Request::Dtmf {
                digits: "12#a".into(),
                call: None
            }),
            Command::Dtmf {
                digits: "12#A".into(),
                call: None
            }
        );
        assert_eq!(
            command(Request::Dtmf {
                digits: "1,2".into(),
                call: Some(5)
            }),
            Command::Dtmf {
                digits: "1,2".into(),
                call: Some(5)
            }
        );
        assert_eq!(
            command(Request::Mute { on: None }),
            Command::Mute { on: None }
        );
        assert_eq!(
            command(Request::Mute { on: Some(true) }),
            Command::Mute { on: Some(true) }
        );
        assert_eq!(
            command(Request::VolumeUp),
            Command::Level {
                kind: LevelKind::Speaker,
                change: LevelChange::Relative(grammar::LEVEL_STEP_POINTS)
            }
        );
        assert_eq!(
            command(Request::VolumeDown),
            Command::Level {
                kind: LevelKind::Speaker,
                change: LevelChange::Relative(-grammar::LEVEL_STEP_POINTS)
            }
        );
        assert_eq!(
            command(Request::SetVolume { level: 40 }),
            Command::Level {
                kind: LevelKind::Speaker,
                change: LevelChange::Absolute(40)
            }
        );
        assert_eq!(
            command(Request::SetMicVolume { level: 0 }),
            Command::Level {
                kind: LevelKind::Microphone,
                change: LevelChange::Absolute(0)
            }
        );
        assert_eq!(
            command(Request::SetDevice {
                role: "output".into(),
                device: "Built-in Audio, Analog Stereo".into()
            }),
            Command::SetDevice {
                role: DeviceRole::Output,
                device: "Built-in Audio, Analog Stereo".into()
            }
        );
        assert_eq!(
            command(Request::Status),
            Command::Status {
                form: StatusForm::Numeric
            }
        );
        assert_eq!(command(Request::ActiveCall), Command::ActiveCall);
        assert_eq!(command(Request::Calls), Command::Calls);
        assert_eq!(command(Request::Close), Command::Exit);
    }

    #[test]
    fn bad_arguments_are_the_grammars_errors() {
        let e = Request::SetVolume { level: 101 }.command().unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            ("bad_argument", "volume must be 0-100")
        );
        let e = Request::Dtmf {
            digits: "x".into(),
            call: None,
        }
        .command()
        .unwrap_err();
        assert_eq!(e.code, "bad_argument");
        assert!(Request::Dial {
            target: String::new(),
            account: None
        }
        .command()
        .is_err());
        assert!(Request::SetDevice {
            role: "speaker".into(),
            device: "1".into()
        }
        .command()
        .is_err());
        assert!(Request::Transfer {
            target: String::new(),
            call: None
        }
        .command()
        .is_err());
    }

    #[test]
    fn execute_reads_dde_strings_and_socket_lines_whole() {
        let commands = execute_commands("[Hold][Dial(1002)] [Status]").unwrap();
        assert_eq!(
            commands,
            [
                Command::Hold {
                    call: None,
                    on: None
                },
                Command::Dial {
                    target: "1002".into(),
                    account: None,
                    hold_active: true,
                    numeric: false
                },
                Command::Status {
                    form: StatusForm::Numeric
                }
            ]
        );
        assert_eq!(
            execute_commands("SetDevice input, 2").unwrap(),
            [Command::SetDevice {
                role: DeviceRole::Input,
                device: "2".into()
            }]
        );
        // A broken string is one error naming the part; nothing of it is returned.
        let e = execute_commands("[SetVolume(10)][Hangup][Dial(1003)").unwrap_err();
        assert_eq!(e.name.as_str(), "org.microsip.Phone1.Error.BadArgument");
        assert_eq!(e.message, "'[Dial(1003)' has no closing ']'");
        let e = execute_commands("[Hangup][Frobnicate(1)]").unwrap_err();
        assert_eq!(e.name.as_str(), "org.microsip.Phone1.Error.UnknownCommand");
        assert_eq!(
            e.message,
            "unknown command 'Frobnicate' in '[Frobnicate(1)]'"
        );
        // The events are the signal here.
        let e = execute_commands("events call.").unwrap_err();
        assert!(e.message.contains("Event signal"), "{}", e.message);
    }

    #[test]
    fn execute_results_carry_the_code_and_text() {
        assert_eq!(
            execute_result(microsip_engine::reply::ok("30")),
            (true, String::new(), "30".to_string())
        );
        assert_eq!(
            execute_result(microsip_engine::reply::fail(
                ErrorCode::NoSuchCall,
                "no call 9"
            )),
            (false, "no_such_call".to_string(), "no call 9".to_string())
        );
    }

    #[test]
    fn numbers_in_replies() {
        assert_eq!(number_in("3").unwrap(), 3);
        assert_eq!(number_in("2 active call 4").unwrap(), 2);
        assert!(number_in("busy").is_err());
    }
}
