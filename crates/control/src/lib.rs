//! The faces of the phone: start options, the local control socket (server and
//! client), the HTTP + WebSocket API, the file locations, and the start-up that turns a process into the phone.
//! The faces know no SIP and no RTP: they speak only `Command`, `Reply` and `Event`.

pub mod audit;
pub mod calllog;
pub mod client;
pub mod contacts;
#[cfg(feature = "dbus")]
pub(crate) mod dbus;
pub mod event_feed;
pub mod history;
pub mod hooks;
pub mod http;
pub mod integrations;
pub mod manual;
pub mod media_stream;
pub mod messages;
#[cfg(feature = "dbus")]
pub mod notify;
pub mod options;
pub mod paths;
pub mod phone;
pub mod records;
pub mod socket;
