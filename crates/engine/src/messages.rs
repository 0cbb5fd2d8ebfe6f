//! Text messages (SIP MESSAGE): sending (`message TARGET TEXT`), receiving (stored
//! before the sender is told 200, so nothing acknowledged is ever lost), listing
//! (`messages [CONTACT]`), and the `message.*` events; the call history and the
//! address book as the `history` and `contacts` commands see them. Every read and
//! write is a store action the driver runs in order off the signalling task.

use std::time::UNIX_EPOCH;

use serde::Serialize;
use serde_json::json;
use tracing::warn;

use crate::command::ContactsAction;
use crate::core::Core;
use crate::dialplan;
use crate::event::EventKind;
use crate::io::{MessageIn, ReplyTo, SipAction, StoreAction};
use crate::reply::{fail, ok_with, ErrorCode};
use crate::then::Then;

/// One stored message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageRecord {
    /// Unix seconds.
    pub time: i64,
    /// True for a message we received, false for one we sent.
    pub incoming: bool,
    /// The other party's URI (whose conversation it belongs to).
    pub contact: String,
    /// The sender's URI.
    pub from: String,
    /// The recipient's URI.
    pub to: String,
    /// The message text.
    pub text: String,
    /// `received`, `sent`, `failed 404 Not Found`, ...
    pub status: String,
}

/// Where messages are kept (a folder of per-contact files in the real phone).
pub trait MessageArchive: Send {
    /// Stores one message durably (written and synced) before returning.
    fn store(&mut self, record: &MessageRecord) -> Result<(), String>;
    /// The stored messages with `contact`, or with everyone; oldest first.
    fn list(&self, contact: Option<&str>) -> Result<Vec<MessageRecord>, String>;
}

/// The user's other records: the call history and the address book.
pub trait Records: Send {
    /// The call history, newest first, as JSON objects.
    fn history(&self) -> Result<Vec<serde_json::Value>, String>;
    /// The contacts, as JSON objects (`name`, `number`, `presence`, ...).
    fn contacts(&self) -> Result<Vec<serde_json::Value>, String>;
    /// Adds (or updates) a contact; says which.
    fn add_contact(&mut self, name: &str, number: &str, presence: bool) -> Result<String, String>;
    /// Removes the contact with `number`; false when there was none.
    fn remove_contact(&mut self, number: &str) -> Result<bool, String>;
}

/// No records (tests).
pub struct NoRecords;

impl Records for NoRecords {
    fn history(&self) -> Result<Vec<serde_json::Value>, String> {
        Ok(Vec::new())
    }
    fn contacts(&self) -> Result<Vec<serde_json::Value>, String> {
        Ok(Vec::new())
    }
    fn add_contact(&mut self, _: &str, _: &str, _: bool) -> Result<String, String> {
        Err("no address book in this run".into())
    }
    fn remove_contact(&mut self, _: &str) -> Result<bool, String> {
        Err("no address book in this run".into())
    }
}

/// An archive that keeps nothing (tests).
pub struct NoArchive;

impl MessageArchive for NoArchive {
    fn store(&mut self, _record: &MessageRecord) -> Result<(), String> {
        Ok(())
    }
    fn list(&self, _contact: Option<&str>) -> Result<Vec<MessageRecord>, String> {
        Ok(Vec::new())
    }
}

impl Core {
    fn unix_now(&self) -> i64 {
        self.now
            .wall
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }

    /// A MESSAGE arrived: refuse it (messaging off), or store it, then report it and
    /// answer 200.
    pub(crate) fn on_message(&mut self, message: MessageIn) {
        if self.config.settings.disable_messaging {
            self.respond(message.answer, 405, None, Vec::new());
            return;
        }
        let record = MessageRecord {
            time: self.unix_now(),
            incoming: true,
            contact: message.from.clone(),
            from: message.from.clone(),
            to: message.to.clone(),
            text: message.text.clone(),
            status: "received".into(),
        };
        self.store_then(
            StoreAction::StoreMessage(Box::new(record)),
            Some(Then::MessageStored {
                message: Box::new(message),
            }),
        );
    }

    /// An incoming message is on disk (200 and the event) or could not be (500).
    pub(crate) fn on_message_stored(&mut self, message: MessageIn, stored: Result<(), String>) {
        match stored {
            Ok(()) => {
                self.publish(EventKind::MessageReceived {
                    from: message.from,
                    name: message.display_name,
                    to: message.to,
                    content_type: message.content_type,
                    text: message.text,
                    call: message.call,
                });
                self.respond(message.answer, 200, None, Vec::new());
            }
            Err(e) => {
                warn!(
                    "message from {} not stored: {e}; answering 500",
                    message.from
                );
                self.respond(message.answer, 500, None, Vec::new());
            }
        }
    }

    /// `message TARGET TEXT`: replies once the far end answered.
    pub(crate) fn send_text(&mut self, target: &str, text: &str, reply: ReplyTo) {
        let Some(account) = self
            .accounts
            .get(&self.active_account)
            .map(|s| s.account.clone())
        else {
            self.reply(
                Some(reply),
                fail(ErrorCode::NoAccount, "no account to send from"),
            );
            return;
        };
        let uri = match dialplan::normalize_target(target, &account) {
            Ok(t) => t.uri,
            Err(e) => {
                self.reply(Some(reply), fail(ErrorCode::BadArgument, e.to_string()));
                return;
            }
        };
        let caller = self.caller_account(&account);
        let record = MessageRecord {
            time: self.unix_now(),
            incoming: false,
            contact: uri.clone(),
            from: format!(
                "sip:{}@{}",
                account.username.clone().unwrap_or_default(),
                account.domain
            ),
            to: uri.clone(),
            text: text.to_string(),
            status: "sending".into(),
        };
        self.sip_then(
            SipAction::SendMessage {
                caller,
                target: uri,
                text: text.to_string(),
            },
            Some(Then::MessageSent {
                record: Box::new(record),
                reply,
            }),
        );
    }

    /// The far end answered our MESSAGE: publish, keep the record, then reply.
    pub(crate) fn on_message_done(
        &mut self,
        mut record: MessageRecord,
        result: Result<(u16, String), String>,
        reply: ReplyTo,
    ) {
        let answer = match &result {
            Ok((code, reason)) if (200..300).contains(code) => {
                record.status = "sent".into();
                self.publish(EventKind::MessageSent {
                    to: record.to.clone(),
                    code: *code,
                });
                ok_with(
                    format!("message delivered to {} ({code} {reason})", record.to),
                    json!({ "to": record.to, "code": code }),
                )
            }
            Ok((code, reason)) => {
                record.status = format!("failed {code} {reason}");
                self.publish(EventKind::MessageFailed {
                    to: record.to.clone(),
                    code: *code,
                    reason: reason.clone(),
                });
                fail(
                    ErrorCode::Refused,
                    format!("message to {} failed: {code} {reason}", record.to),
                )
            }
            Err(e) => {
                record.status = format!("failed {e}");
                self.publish(EventKind::MessageFailed {
                    to: record.to.clone(),
                    code: 0,
                    reason: e.clone(),
                });
                fail(ErrorCode::BadArgument, format!("message not sent: {e}"))
            }
        };
        self.store_then(
            StoreAction::StoreMessage(Box::new(record)),
            Some(Then::MessageKept { reply, answer }),
        );
    }

    /// `history [missed] [N]`.
    pub(crate) fn list_history(&mut self, missed: bool, limit: Option<usize>, reply: ReplyTo) {
        self.store_then(
            StoreAction::ListHistory,
            Some(Then::History {
                reply,
                missed,
                limit,
            }),
        );
    }

    /// The history came from the store: one line per call, newest first (see
    /// [`crate::history_view`]).
    pub(crate) fn history_listed(
        &mut self,
        list: Result<Vec<serde_json::Value>, String>,
        missed: bool,
        limit: Option<usize>,
        reply: ReplyTo,
    ) {
        let answer = match list {
            Ok(list) => crate::history_view::history_reply(list, missed, limit),
            Err(e) => fail(ErrorCode::Internal, format!("history cannot be read: {e}")),
        };
        self.reply(Some(reply), answer);
    }

    /// `contacts [list]`, `contacts add NUMBER [NAME]`, `contacts remove NUMBER`.
    pub(crate) fn contacts(&mut self, action: ContactsAction, reply: ReplyTo) {
        match action {
            ContactsAction::List => {
                self.store_then(StoreAction::ListContacts, Some(Then::ContactList { reply }))
            }
            ContactsAction::Add {
                number,
                name,
                presence,
            } => self.store_then(
                StoreAction::AddContact {
                    name: name.clone(),
                    number: number.clone(),
                    presence,
                },
                Some(Then::ContactChanged {
                    reply,
                    number,
                    added: Some((name, presence)),
                }),
            ),
            ContactsAction::Remove { number } => self.store_then(
                StoreAction::RemoveContact {
                    number: number.clone(),
                },
                Some(Then::ContactChanged {
                    reply,
                    number,
                    added: None,
                }),
            ),
        }
    }

    /// Reads the address book again (presence subscriptions follow it).
    pub(crate) fn reload_contacts(&mut self) {
        self.store_then(StoreAction::ListContacts, Some(Then::ContactsLoaded));
    }

    pub(crate) fn contacts_loaded(&mut self, list: Result<Vec<serde_json::Value>, String>) {
        match list {
            Ok(list) => {
                self.contacts = list;
                let active = self.active_account;
                self.presence_sync(active);
            }
            Err(e) => warn!("contacts cannot be read for presence: {e}"),
        }
    }

    /// The address book came from the store for `contacts list`.
    pub(crate) fn contacts_listed(
        &mut self,
        list: Result<Vec<serde_json::Value>, String>,
        reply: ReplyTo,
    ) {
        let answer = match list {
            Ok(mut list) => {
                self.contacts = list.clone();
                for c in list.iter_mut() {
                    let status = c["number"].as_str().and_then(|n| self.presence_of(n));
                    if let (Some(status), Some(obj)) = (status, c.as_object_mut()) {
                        obj.insert("status".into(), json!(status));
                    }
                }
                let text: Vec<String> = list
                    .iter()
                    .map(|c| {
                        let line = format!(
                            "{} {}",
                            c["number"].as_str().unwrap_or(""),
                            c["name"].as_str().unwrap_or("")
                        );
                        match c["status"].as_str() {
                            Some(status) => format!("{line} ({status})"),
                            None => line,
                        }
                    })
                    .collect();
                ok_with(text.join("; "), json!(list))
            }
            Err(e) => fail(ErrorCode::Internal, format!("contacts cannot be read: {e}")),
        };
        self.reply(Some(reply), answer);
    }

    /// A contact was added or removed (or was not there): the address book the
    /// core keeps follows, and presence with it.
    pub(crate) fn contact_changed(
        &mut self,
        result: Result<String, String>,
        number: String,
        added: Option<(String, bool)>,
        reply: ReplyTo,
    ) {
        let answer = match result.as_deref() {
            Ok("absent") => fail(
                ErrorCode::BadArgument,
                format!("there is no contact {number}"),
            ),
            Ok(word) => {
                self.contacts
                    .retain(|c| c["number"].as_str() != Some(number.as_str()));
                if let Some((name, presence)) = added {
                    self.contacts
                        .push(json!({ "name": name, "number": number, "presence": presence }));
                }
                let active = self.active_account;
                self.presence_sync(active);
                ok_with(
                    format!("contact {number} {word}"),
                    json!({ "number": number }),
                )
            }
            Err(e) => fail(ErrorCode::ConfigWrite, format!("contact not saved: {e}")),
        };
        self.reply(Some(reply), answer);
    }

    /// `messages [CONTACT]`.
    pub(crate) fn list_messages(&mut self, contact: Option<String>, reply: ReplyTo) {
        self.store_then(
            StoreAction::ListMessages { contact },
            Some(Then::Messages { reply }),
        );
    }

    pub(crate) fn messages_listed(
        &mut self,
        list: Result<Vec<MessageRecord>, String>,
        reply: ReplyTo,
    ) {
        let answer = match list {
            Ok(list) => {
                let text: Vec<String> = list
                    .iter()
                    .map(|m| {
                        format!(
                            "{} {} {}: {}",
                            m.time,
                            if m.incoming { "from" } else { "to" },
                            m.contact,
                            m.text.replace(['\r', '\n'], " ")
                        )
                    })
                    .collect();
                ok_with(text.join("; "), json!(list))
            }
            Err(e) => fail(ErrorCode::Internal, format!("messages cannot be read: {e}")),
        };
        self.reply(Some(reply), answer);
    }
}
