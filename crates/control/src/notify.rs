//! The desktop notification for an incoming call, through
//! `org.freedesktop.Notifications` on the session bus: a call that rings raises one
//! notification with the actions `answer` (Answer) and `decline` (Decline); invoking
//! Answer runs the engine's `answer ID`, Decline its `decline ID` (603), the same
//! commands as the socket. The notification is closed when the call stops ringing
//! (answered, confirmed or ended). Nothing is shown without a notification server,
//! and nothing runs without D-Bus ([`crate::dbus`]) or with `[Settings]
//! notifications=0`.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use microsip_engine::{Command, EngineHandle, Event, EventKind};
use tokio::sync::broadcast::error::RecvError;
use tracing::{debug, info, warn};
use zbus::match_rule::MatchRule;
use zbus::message::Type;
use zbus::zvariant::Value;
use zbus::MessageStream;

/// The notification service's bus name (and its interface's name).
pub const SERVICE: &str = "org.freedesktop.Notifications";
/// The notification service's object.
pub const PATH: &str = "/org/freedesktop/Notifications";
/// The action key that answers the call (its label is `Answer`).
pub const ACTION_ANSWER: &str = "answer";
/// The action key that rejects the call with 603 (its label is `Decline`).
pub const ACTION_DECLINE: &str = "decline";
/// How long the notification server may take to answer a call.
const SERVER_TIMEOUT: Duration = Duration::from_secs(3);
/// At most this many calls are remembered at once (a flood of INVITEs cannot grow
/// the map without bound).
const MAX_TRACKED: usize = 64;

/// An incoming call this face knows about.
#[derive(Debug, Default)]
struct Incoming {
    number: String,
    name: Option<String>,
    /// The server's id for its notification, while one is shown.
    notification: Option<u32>,
}

/// What the notifier does about one event: the pure part, tested without a bus.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Nothing,
    /// Show a notification for this call: summary, body.
    Show {
        call: u64,
        summary: String,
        body: String,
    },
    /// Close the server's notification with this id.
    Close {
        notification: u32,
    },
}

/// The calls and their notifications.
#[derive(Debug, Default)]
struct Notifier {
    calls: HashMap<u64, Incoming>,
}

impl Notifier {
    fn on_event(&mut self, kind: &EventKind) -> Step {
        match kind {
            EventKind::CallIncoming {
                call, number, name, ..
            } => {
                if self.calls.len() >= MAX_TRACKED {
                    return Step::Nothing;
                }
                self.calls.insert(
                    *call,
                    Incoming {
                        number: number.clone(),
                        name: name.clone(),
                        notification: None,
                    },
                );
                Step::Nothing
            }
            EventKind::CallRinging { call } => match self.calls.get(call) {
                Some(incoming) if incoming.notification.is_none() => Step::Show {
                    call: *call,
                    summary: "Incoming call".to_string(),
                    body: caller_text(&incoming.number, incoming.name.as_deref()),
                },
                _ => Step::Nothing,
            },
            EventKind::CallAnswered { call, .. }
            | EventKind::CallConfirmed { call }
            | EventKind::CallEnded { call, .. } => match self.calls.remove(call) {
                Some(Incoming {
                    notification: Some(notification),
                    ..
                }) => Step::Close { notification },
                _ => Step::Nothing,
            },
            _ => Step::Nothing,
        }
    }

    /// The server showed the notification for `call` with this id. False when the
    /// call stopped ringing meanwhile (the caller closes it then).
    fn shown(&mut self, call: u64, notification: u32) -> bool {
        match self.calls.get_mut(&call) {
            Some(incoming) => {
                incoming.notification = Some(notification);
                true
            }
            None => false,
        }
    }

    /// The call behind a notification id, if it is ours.
    fn call_of(&self, notification: u32) -> Option<u64> {
        self.calls
            .iter()
            .find(|(_, c)| c.notification == Some(notification))
            .map(|(id, _)| *id)
    }

    /// The server closed the notification (the user dismissed it, it expired).
    fn closed(&mut self, notification: u32) {
        for incoming in self.calls.values_mut() {
            if incoming.notification == Some(notification) {
                incoming.notification = None;
            }
        }
    }
}

/// What an action asks of the engine.
fn action_command(action: &str, call: u64) -> Option<Command> {
    match action {
        ACTION_ANSWER => Some(Command::Answer { call: Some(call) }),
        ACTION_DECLINE => Some(Command::Reject {
            call: Some(call),
            code: Some(603),
        }),
        _ => None,
    }
}

/// `Alice <1002>` or `1002`, with the markup some servers read escaped.
fn caller_text(number: &str, name: Option<&str>) -> String {
    let escape = |s: &str| {
        s.chars()
            .filter(|c| !c.is_control())
            .take(120)
            .collect::<String>()
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    match name
        .map(str::trim)
        .filter(|n| !n.is_empty() && *n != number)
    {
        Some(name) => format!("{} &lt;{}&gt;", escape(name), escape(number)),
        None => escape(number),
    }
}

/// Starts the notifier on the D-Bus face's connection; it ends with the engine's
/// event stream.
pub async fn start(connection: zbus::Connection, engine: EngineHandle) {
    let rule = match MatchRule::builder()
        .msg_type(Type::Signal)
        .interface(SERVICE)
        .and_then(|b| b.path(PATH))
    {
        Ok(b) => b.build(),
        Err(e) => {
            warn!("notifications off: {e}");
            return;
        }
    };
    let signals = match MessageStream::for_match_rule(rule, &connection, Some(64)).await {
        Ok(s) => s,
        Err(e) => {
            warn!("notifications off: {e}");
            return;
        }
    };
    let Some((_, events)) = engine.subscribe().await else {
        return;
    };
    tokio::spawn(run(connection, engine, events, signals));
}

async fn run(
    connection: zbus::Connection,
    engine: EngineHandle,
    mut events: tokio::sync::broadcast::Receiver<Event>,
    mut signals: MessageStream,
) {
    let mut notifier = Notifier::default();
    let mut server_missing_said = false;
    loop {
        tokio::select! {
            event = events.recv() => {
                let step = match event {
                    Ok(event) => notifier.on_event(&event.kind),
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                };
                match step {
                    Step::Nothing => {}
                    Step::Show { call, summary, body } => {
                        match notify(&connection, &summary, &body).await {
                            Ok(id) => {
                                if !notifier.shown(call, id) {
                                    close(&connection, id).await;
                                }
                            }
                            Err(e) => {
                                if !server_missing_said {
                                    info!("no desktop notification for call {call}: {e}");
                                    server_missing_said = true;
                                } else {
                                    debug!("no desktop notification for call {call}: {e}");
                                }
                            }
                        }
                    }
                    Step::Close { notification } => close(&connection, notification).await,
                }
            }
            message = signals.next() => {
                let Some(Ok(message)) = message else {
                    if message.is_none() {
                        return;
                    }
                    continue;
                };
                let header = message.header();
                match header.member().map(|m| m.as_str()) {
                    Some("ActionInvoked") => {
                        let Ok((id, action)) = message.body().deserialize::<(u32, String)>() else {
                            continue;
                        };
                        let Some(call) = notifier.call_of(id) else { continue };
                        let Some(command) = action_command(&action, call) else { continue };
                        info!("notification: {action} call {call}");
                        if let Err(f) = engine.execute(command).await {
                            info!("notification {action} for call {call}: {}", f.message);
                        }
                    }
                    Some("NotificationClosed") => {
                        if let Ok((id, _reason)) = message.body().deserialize::<(u32, u32)>() {
                            notifier.closed(id);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// `Notify`: the server's id for the new notification.
async fn notify(connection: &zbus::Connection, summary: &str, body: &str) -> Result<u32, String> {
    let actions = [ACTION_ANSWER, "Answer", ACTION_DECLINE, "Decline"];
    let mut hints: HashMap<&str, Value<'_>> = HashMap::new();
    hints.insert("urgency", Value::U8(2));
    hints.insert("category", Value::from("call.incoming"));
    hints.insert("resident", Value::Bool(true));
    let body_args = (
        "MicroSIP",
        0u32,
        "call-start",
        summary,
        body,
        &actions[..],
        hints,
        0i32,
    );
    let call = connection.call_method(Some(SERVICE), PATH, Some(SERVICE), "Notify", &body_args);
    let reply = tokio::time::timeout(SERVER_TIMEOUT, call)
        .await
        .map_err(|_| "the notification server did not answer".to_string())?
        .map_err(|e| e.to_string())?;
    reply
        .body()
        .deserialize::<u32>()
        .map_err(|e| format!("the notification server replied oddly: {e}"))
}

async fn close(connection: &zbus::Connection, notification: u32) {
    let args = (notification,);
    let call = connection.call_method(
        Some(SERVICE),
        PATH,
        Some(SERVICE),
        "CloseNotification",
        &args,
    );
    match tokio::time::timeout(SERVER_TIMEOUT, call).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => debug!("CloseNotification {notification}: {e}"),
        Err(_) => debug!("CloseNotification {notification}: no answer"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incoming(call: u64, name: Option<&str>) -> EventKind {
        EventKind::CallIncoming {
            call,
            account: 1,
            remote: format!("sip:100{call}@127.0.0.1"),
            number: format!("100{call}"),
            name: name.map(str::to_string),
            diversion: None,
        }
    }

    #[test]
    fn a_ringing_incoming_call_shows_once_and_closes_when_answered() {
        let mut n = Notifier::default();
        assert_eq!(n.on_event(&incoming(2, Some("Bob & <Co>"))), Step::Nothing);
        let step = n.on_event(&EventKind::CallRinging { call: 2 });
        assert_eq!(
            step,
            Step::Show {
                call: 2,
                summary: "Incoming call".into(),
                body: "Bob &amp; &lt;Co&gt; &lt;1002&gt;".into()
            }
        );
        assert!(n.shown(2, 40));
        assert_eq!(n.call_of(40), Some(2));
        assert_eq!(n.call_of(41), None);
        // Shown once.
        assert_eq!(
            n.on_event(&EventKind::CallRinging { call: 2 }),
            Step::Nothing
        );
        assert_eq!(
            n.on_event(&EventKind::CallAnswered { call: 2, code: 200 }),
            Step::Close { notification: 40 }
        );
        assert_eq!(n.call_of(40), None);
        assert_eq!(
            n.on_event(&EventKind::CallConfirmed { call: 2 }),
            Step::Nothing
        );
    }

    #[test]
    fn outgoing_calls_and_dismissed_notifications() {
        let mut n = Notifier::default();
        // An outgoing call's ringing shows nothing.
        assert_eq!(
            n.on_event(&EventKind::CallRinging { call: 1 }),
            Step::Nothing
        );
        n.on_event(&incoming(3, None));
        assert!(matches!(
            n.on_event(&EventKind::CallRinging { call: 3 }),
            Step::Show { body, .. } if body == "1003"
        ));
        assert!(n.shown(3, 7));
        n.closed(7);
        assert_eq!(n.call_of(7), None);
        // Already closed by the server: nothing to close.
        assert_eq!(
            n.on_event(&EventKind::CallConfirmed { call: 3 }),
            Step::Nothing
        );
        // A call that stopped ringing before the server answered.
        n.on_event(&incoming(4, None));
        n.on_event(&EventKind::CallRinging { call: 4 });
        n.on_event(&EventKind::CallConfirmed { call: 4 });
        assert!(!n.shown(4, 9));
    }

    #[test]
    fn actions_are_the_engine_commands() {
        assert_eq!(
            action_command("answer", 5),
            Some(Command::Answer { call: Some(5) })
        );
        assert_eq!(
            action_command("decline", 5),
            Some(Command::Reject {
                call: Some(5),
                code: Some(603)
            })
        );
        assert_eq!(action_command("default", 5), None);
        // The same commands the grammar makes of `answer 5` and `decline 5`.
        let words = |line: &str| microsip_engine::grammar::parse_line(line).unwrap();
        assert_eq!(action_command("answer", 5), Some(words("answer 5")));
        assert_eq!(action_command("decline", 5), Some(words("decline 5")));
    }
}
