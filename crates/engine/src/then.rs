//! What the core does when an action it sent out comes back ([`Input::Done`]): one
//! continuation per kind of waiting flow, kept by ticket until the result arrives.
//!
//! [`Input::Done`]: crate::io::Input::Done

use tracing::warn;

use crate::calls::Placing;
use crate::command::{CallId, DeviceRole, PlayEnd};
use crate::core::Core;
use crate::io::{Done, MessageIn, ReplyTo};
use crate::messages::MessageRecord;
use crate::reply::{fail, ErrorCode, Reply};

/// A flow waiting for the result of an action.
pub(crate) enum Then {
    /// A call being placed waits for its media.
    Dial(Box<Placing>),
    /// A call being answered waits for its media.
    Answer {
        call: CallId,
        reply: Option<ReplyTo>,
    },
    /// Our hold/resume re-INVITE.
    Hold {
        call: CallId,
        on: bool,
        reply: Option<ReplyTo>,
    },
    /// Our session refresh.
    Refresh { call: CallId },
    /// Our REFER.
    Transfer {
        call: CallId,
        target: String,
        reply: Option<ReplyTo>,
    },
    /// The final NOTIFY of a transfer the remote asked for (REFER) was sent and
    /// answered (or failed): our leg of that call may end now.
    TransferNotified { call: CallId },
    /// One account of a `register` command.
    Register { batch: u64, account: u32 },
    /// Everything stopped for `exit`.
    Stopped,
    /// A setting was written: give the command its answer (`must`: only if the
    /// write worked).
    Stored {
        what: String,
        reply: Option<ReplyTo>,
        answer: Reply,
        must: bool,
    },
    /// A MESSAGE we sent was answered.
    MessageSent {
        record: Box<MessageRecord>,
        reply: ReplyTo,
    },
    /// The record of a MESSAGE we sent is kept: give the command its reply.
    MessageKept { reply: ReplyTo, answer: Reply },
    /// A MESSAGE we received is kept (or not): answer the sender, publish.
    MessageStored { message: Box<MessageIn> },
    /// `messages`.
    Messages { reply: ReplyTo },
    /// `history [missed] [N]`.
    History {
        reply: ReplyTo,
        missed: bool,
        limit: Option<usize>,
    },
    /// `callback` waits for the history (its newest missed call).
    Callback { reply: ReplyTo },
    /// `contacts list`.
    ContactList { reply: ReplyTo },
    /// The address book, read again after a change (presence follows it).
    ContactsLoaded,
    /// `contacts add|remove` done; `added`: the name and presence flag of a
    /// contact added (the address book the core keeps follows without a re-read).
    ContactChanged {
        reply: ReplyTo,
        number: String,
        added: Option<(String, bool)>,
    },
    /// `record start`.
    RecordingStarted {
        call: CallId,
        reply: Option<ReplyTo>,
    },
    /// `record stop`.
    RecordingStopped {
        call: CallId,
        path: String,
        reply: ReplyTo,
    },
    /// `play FILE`.
    Playing {
        call: CallId,
        file: String,
        at_end: PlayEnd,
        reply: ReplyTo,
    },
    /// `devices`.
    Devices { reply: ReplyTo },
    /// `setdevice ROLE NUMBER` waits for the device list.
    DeviceNumber {
        role: DeviceRole,
        number: usize,
        reply: ReplyTo,
    },
    /// `setdevice`.
    DeviceSet {
        role: DeviceRole,
        value: String,
        calls: usize,
        reply: ReplyTo,
    },
}

impl Then {
    /// The command waiting, if any.
    fn reply_to(&self) -> Option<ReplyTo> {
        match self {
            Then::Dial(p) => p.reply,
            Then::Answer { reply, .. }
            | Then::Hold { reply, .. }
            | Then::Transfer { reply, .. }
            | Then::RecordingStarted { reply, .. }
            | Then::Stored { reply, .. } => *reply,
            Then::MessageSent { reply, .. }
            | Then::MessageKept { reply, .. }
            | Then::Messages { reply }
            | Then::History { reply, .. }
            | Then::Callback { reply }
            | Then::DeviceNumber { reply, .. }
            | Then::ContactList { reply }
            | Then::ContactChanged { reply, .. }
            | Then::RecordingStopped { reply, .. }
            | Then::Playing { reply, .. }
            | Then::Devices { reply }
            | Then::DeviceSet { reply, .. } => Some(*reply),
            Then::Refresh { .. }
            | Then::TransferNotified { .. }
            | Then::Register { .. }
            | Then::Stopped
            | Then::MessageStored { .. }
            | Then::ContactsLoaded => None,
        }
    }
}

impl Core {
    /// Carries on with the flow that waited for `result`.
    pub(crate) fn then(&mut self, then: Then, result: Done) {
        match (then, result) {
            (Then::Dial(placing), Done::MediaOpened(port)) => self.on_dial_media(*placing, port),
            (Then::Answer { call, reply }, Done::MediaOpened(port)) => {
                self.on_answer_media(call, port, reply)
            }
            (Then::Hold { call, on, reply }, Done::Reinvite(r)) => {
                self.on_hold_done(call, on, r, reply)
            }
            (Then::Refresh { call }, Done::Reinvite(r)) => self.on_refreshed(call, r),
            (
                Then::Transfer {
                    call,
                    target,
                    reply,
                },
                Done::Refer(r),
            ) => self.on_transfer_done(call, target, r, reply),
            (Then::Register { batch, account }, Done::Registration(outcome)) => {
                self.on_registered(batch, account, outcome)
            }
            (Then::TransferNotified { call }, _) => self.on_transfer_notified(call),
            (Then::Stopped, _) => self.on_stopped(true),
            (
                Then::Stored {
                    what,
                    reply,
                    answer,
                    must,
                },
                Done::Unit(stored),
            ) => match stored {
                Ok(()) => self.reply(reply, answer),
                Err(e) if must => self.reply(
                    reply,
                    fail(ErrorCode::ConfigWrite, format!("{what} not saved: {e}")),
                ),
                Err(e) => {
                    warn!("{what} not saved: {e}");
                    self.reply(reply, answer);
                }
            },
            (Then::MessageSent { record, reply }, Done::Message(r)) => {
                self.on_message_done(*record, r, reply)
            }
            (Then::MessageKept { reply, answer }, Done::Unit(stored)) => {
                if let Err(e) = stored {
                    warn!("sent message not stored: {e}");
                }
                self.reply(Some(reply), answer);
            }
            (Then::MessageStored { message }, Done::Unit(stored)) => {
                self.on_message_stored(*message, stored)
            }
            (Then::Messages { reply }, Done::Messages(list)) => self.messages_listed(list, reply),
            (
                Then::History {
                    reply,
                    missed,
                    limit,
                },
                Done::List(list),
            ) => self.history_listed(list, missed, limit, reply),
            (Then::Callback { reply }, Done::List(list)) => self.callback_from_history(list, reply),
            (Then::ContactList { reply }, Done::List(list)) => self.contacts_listed(list, reply),
            (Then::ContactsLoaded, Done::List(list)) => self.contacts_loaded(list),
            (
                Then::ContactChanged {
                    reply,
                    number,
                    added,
                },
                Done::Contact(r),
            ) => self.contact_changed(r, number, added, reply),
            (Then::RecordingStarted { call, reply }, Done::Path(r)) => {
                self.recording_started(call, r, reply)
            }
            (Then::RecordingStopped { call, path, reply }, Done::Recording(r)) => {
                self.recording_stopped(call, path, r, reply)
            }
            (
                Then::Playing {
                    call,
                    file,
                    at_end,
                    reply,
                },
                Done::Media(r),
            ) => self.playing(call, file, at_end, r, reply),
            (Then::Devices { reply }, Done::Devices(list)) => self.devices_listed(&list, reply),
            (
                Then::DeviceNumber {
                    role,
                    number,
                    reply,
                },
                Done::Devices(list),
            ) => self.device_numbered(role, number, &list, reply),
            (
                Then::DeviceSet {
                    role,
                    value,
                    calls,
                    reply,
                },
                Done::Media(r),
            ) => self.device_set(role, value, calls, r, reply),
            (then, other) => {
                warn!("an action's result did not match what waited for it: {other:?}");
                // Whoever waited must still hear something.
                let reply = then.reply_to();
                self.reply(reply, fail(ErrorCode::Internal, "unexpected result"));
            }
        }
    }
}
