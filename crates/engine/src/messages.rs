//! Text messages (SIP MESSAGE): sending (`message TARGET TEXT`), receiving (stored
//! before the sender is told 200, so nothing acknowledged is ever lost), listing
//! (`messages [CONTACT]`), and the `message.*` events. Stores are synced to disk,
//! so they run one at a time, in order, on a blocking thread ([`ArchiveQueue`]):
//! the engine (and with it SIP and the control socket) never waits for a disk.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use microsip_sip::IncomingMessage;
use serde::Serialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::command::ContactsAction;
use crate::dialplan;
use crate::engine::{Engine, Request};
use crate::event::EventKind;
use crate::reply::{fail, ok_with, ErrorCode, Reply};

/// One stored message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageRecord {
    /// Unix seconds.
    pub time: i64,
    pub incoming: bool,
    /// The other party's URI (whose conversation it belongs to).
    pub contact: String,
    pub from: String,
    pub to: String,
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

/// What comes back from a MESSAGE sent in the background.
pub(crate) struct MessageDone {
    pub(crate) record: MessageRecord,
    pub(crate) result: Result<(u16, String), String>,
    pub(crate) reply: oneshot::Sender<Reply>,
}

/// The archive, shared by the engine (listing) and the store queue (writing).
pub(crate) type SharedArchive = Arc<Mutex<Box<dyn MessageArchive>>>;

fn lock_archive(archive: &SharedArchive) -> MutexGuard<'_, Box<dyn MessageArchive>> {
    archive
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A message that was being stored, and what came of it.
pub(crate) struct MessageStored {
    pub(crate) message: IncomingMessage,
    pub(crate) result: Result<MessageRecord, String>,
}

enum StoreJob {
    /// Store, then let the engine answer the sender and publish the event.
    Incoming(Box<IncomingMessage>, MessageRecord),
    /// Store a sent message's record, then give the command its reply.
    Outgoing(MessageRecord, oneshot::Sender<Reply>, Reply),
}

/// Stores messages one at a time, in the order they were queued, off the engine.
pub(crate) struct ArchiveQueue {
    jobs: mpsc::UnboundedSender<StoreJob>,
}

impl ArchiveQueue {
    /// Starts the queue's task; outcomes of incoming messages come back to `inbox`.
    pub(crate) fn start(archive: SharedArchive, inbox: mpsc::UnboundedSender<Request>) -> Self {
        let (jobs, mut queue) = mpsc::unbounded_channel::<StoreJob>();
        tokio::spawn(async move {
            while let Some(job) = queue.recv().await {
                let archive = archive.clone();
                match job {
                    StoreJob::Incoming(message, record) => {
                        let result = tokio::task::spawn_blocking(move || {
                            lock_archive(&archive).store(&record).map(|()| record)
                        })
                        .await
                        .unwrap_or_else(|e| Err(format!("the store task failed: {e}")));
                        let _ = inbox.send(Request::MessageStored(Box::new(MessageStored {
                            message: *message,
                            result,
                        })));
                    }
                    StoreJob::Outgoing(record, reply, answer) => {
                        let to = record.to.clone();
                        let stored = tokio::task::spawn_blocking(move || {
                            lock_archive(&archive).store(&record)
                        })
                        .await
                        .unwrap_or_else(|e| Err(format!("the store task failed: {e}")));
                        if let Err(e) = stored {
                            warn!("sent message to {to} not stored: {e}");
                        }
                        let _ = reply.send(answer);
                    }
                }
            }
        });
        ArchiveQueue { jobs }
    }

    fn push(&self, job: StoreJob) {
        if let Err(mpsc::error::SendError(job)) = self.jobs.send(job) {
            // Only when the runtime is going away: answer what can be answered.
            match job {
                StoreJob::Incoming(message, _) => drop(tokio::spawn(message.respond(500))),
                StoreJob::Outgoing(_, reply, answer) => {
                    let _ = reply.send(answer);
                }
            }
        }
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Engine {
    /// A MESSAGE arrived: refuse it (messaging off), or store it, report it, answer 200.
    pub(crate) fn on_message(&mut self, message: IncomingMessage) {
        if self.config.settings.disable_messaging {
            tokio::spawn(message.respond(405));
            return;
        }
        let record = MessageRecord {
            time: now(),
            incoming: true,
            contact: message.from.clone(),
            from: message.from.clone(),
            to: message.to.clone(),
            text: message.text.clone(),
            status: "received".into(),
        };
        self.archive_queue
            .push(StoreJob::Incoming(Box::new(message), record));
    }

    /// An incoming message is on disk (200 and the event) or could not be (500).
    pub(crate) fn on_message_stored(&mut self, stored: MessageStored) {
        let MessageStored { message, result } = stored;
        match result {
            Ok(record) => {
                self.publish(EventKind::MessageReceived {
                    from: record.from,
                    name: message.display_name.clone(),
                    to: record.to,
                    content_type: message.content_type.clone(),
                    text: record.text,
                });
                tokio::spawn(message.respond(200));
            }
            Err(e) => {
                warn!(
                    "message from {} not stored: {e}; answering 500",
                    message.from
                );
                tokio::spawn(message.respond(500));
            }
        }
    }

    /// `message TARGET TEXT`: replies once the far end answered.
    pub(crate) fn send_text(&mut self, target: &str, text: &str, reply: oneshot::Sender<Reply>) {
        let Some(account) = self
            .accounts
            .get(&self.active_account)
            .map(|s| s.account.clone())
        else {
            let _ = reply.send(fail(ErrorCode::NoAccount, "no account to send from"));
            return;
        };
        let uri = match dialplan::normalize_target(target, &account) {
            Ok(t) => t.uri,
            Err(e) => {
                let _ = reply.send(fail(ErrorCode::BadArgument, e.to_string()));
                return;
            }
        };
        let caller = self.caller_account(&account);
        let record = MessageRecord {
            time: now(),
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
        let sender = self.sip.message_sender();
        let inbox = self.inbox.clone();
        let text = text.to_string();
        tokio::spawn(async move {
            let result = microsip_sip::send_message(&sender, &caller, &uri, &text).await;
            let _ = inbox.send(Request::MessageDone(MessageDone {
                record,
                result,
                reply,
            }));
        });
    }

    pub(crate) fn on_message_done(&mut self, done: MessageDone) {
        let MessageDone {
            mut record,
            result,
            reply,
        } = done;
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
        self.archive_queue
            .push(StoreJob::Outgoing(record, reply, answer));
    }

    /// `history [missed] [N]`: one line per call, newest first (see
    /// [`crate::history_view`]).
    pub(crate) fn list_history(&self, missed: bool, limit: Option<usize>) -> Reply {
        match self.records.history() {
            Ok(list) => crate::history_view::history_reply(list, missed, limit),
            Err(e) => fail(ErrorCode::Internal, format!("history cannot be read: {e}")),
        }
    }

    /// `contacts [list]`, `contacts add NUMBER [NAME]`, `contacts remove NUMBER`.
    pub(crate) fn contacts(&mut self, action: ContactsAction) -> Reply {
        match action {
            ContactsAction::List => match self.records.contacts() {
                Ok(mut list) => {
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
            },
            ContactsAction::Add {
                number,
                name,
                presence,
            } => match self.records.add_contact(&name, &number, presence) {
                Ok(word) => {
                    let active = self.active_account;
                    self.presence_sync(active);
                    ok_with(
                        format!("contact {number} {word}"),
                        json!({ "number": number }),
                    )
                }
                Err(e) => fail(ErrorCode::ConfigWrite, format!("contact not saved: {e}")),
            },
            ContactsAction::Remove { number } => match self.records.remove_contact(&number) {
                Ok(true) => {
                    let active = self.active_account;
                    self.presence_sync(active);
                    ok_with(
                        format!("contact {number} removed"),
                        json!({ "number": number }),
                    )
                }
                Ok(false) => fail(
                    ErrorCode::BadArgument,
                    format!("there is no contact {number}"),
                ),
                Err(e) => fail(ErrorCode::ConfigWrite, format!("contact not removed: {e}")),
            },
        }
    }

    /// `messages [CONTACT]`.
    pub(crate) fn list_messages(&self, contact: Option<&str>) -> Reply {
        match lock_archive(&self.archive).list(contact) {
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
        }
    }
}
