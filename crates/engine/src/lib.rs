//! The phone's engine. It owns all state (accounts, registrations, calls) and is the
//! only thing that changes it. Every face (command line, socket, HTTP) turns its input
//! into one [`Command`], gets one [`Reply`], and may subscribe to the [`Event`] stream.
//!
//! The engine knows no sockets and no files: SIP goes through `microsip-sip`, the ini
//! through the [`ConfigStore`] the binary hands in.

mod calls;
pub mod command;
mod dde;
pub mod devices;
pub mod dialplan;
pub mod engine;
pub mod event;
pub mod grammar;
mod history_view;
pub mod messages;
pub mod policy;
mod presence;
mod recording;
pub mod reply;

pub use command::{CallId, Command, ParseError};
pub use engine::{start, ConfigStore, EngineHandle, EngineSetup, NoStore};
pub use event::{Event, EventKind, Snapshot};
pub use messages::{MessageArchive, MessageRecord, NoArchive, NoRecords, Records};
/// Wall-clock time as RFC 3339 text (shared with the faces' files).
pub use microsip_sip::time;
pub use reply::{Answer, ErrorCode, Failure, Reply};
