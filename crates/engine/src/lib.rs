//! The phone's engine. It owns all state (accounts, registrations, calls) and is the
//! only thing that changes it. Every face (command line, socket, HTTP) turns its input
//! into one [`Command`], gets one [`Reply`], and may subscribe to the [`Event`] stream.
//!
//! Two layers: the [`core`] is a sans-IO state machine (inputs in with the time,
//! outputs out, no tokio, sockets, files or clock), and the [`driver`] owns the SIP
//! stack, the media thread and the stores, performs the core's outputs and feeds
//! their results back. Faces talk to the driver through an [`EngineHandle`].

mod calls;
pub mod command;
pub mod core;
mod dde;
pub mod devices;
pub mod dialplan;
pub mod driver;
pub mod event;
pub mod grammar;
mod history_view;
pub mod io;
pub mod memory;
pub mod messages;
mod network;
pub mod policy;
mod presence;
mod recording;
mod redial;
pub mod reply;
mod then;
mod timers;

pub use command::{CallId, Command, ParseError};
pub use driver::{
    start, ConfigStore, EngineHandle, EngineSetup, MediaDial, MediaDialer, NoStore, Observed,
};
pub use event::{Event, EventKind, Snapshot};
pub use messages::{MessageArchive, MessageRecord, NoArchive, NoRecords, Records};
/// Wall-clock time as RFC 3339 text (shared with the faces' files).
pub use microsip_sip::time;
pub use reply::{Answer, ErrorCode, Failure, Reply};
