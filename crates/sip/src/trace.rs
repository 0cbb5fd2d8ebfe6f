//! The SIP trace (`--debug FILE`): every message sent and received, with time,
//! direction, transport and both addresses. Messages never carry a password (digest
//! sends only a hash), and nothing else is written here.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use rsipstack::sip::prelude::{HeadersExt, ToTypedHeader};
use rsipstack::sip::{Param, SipMessage};
use rsipstack::transport::SipAddr;

/// Appends trace records to one file; shared by every transport.
pub(crate) struct SipTrace {
    file: Mutex<File>,
    /// Our own listening addresses, printed as the local side of each record.
    local: Mutex<Vec<SipAddr>>,
}

impl SipTrace {
    /// Opens (creates, appends to) the trace file with mode 0600.
    pub fn open(path: &Path) -> std::io::Result<SipTrace> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        Ok(SipTrace {
            file: Mutex::new(file),
            local: Mutex::new(Vec::new()),
        })
    }

    pub(crate) fn set_local_addrs(&self, addrs: Vec<SipAddr>) {
        if let Ok(mut local) = self.local.lock() {
            *local = addrs;
        }
    }

    fn local_for(&self, transport: &str) -> String {
        let Ok(local) = self.local.lock() else {
            return "?".into();
        };
        local
            .iter()
            .find(|a| {
                a.r#type
                    .map(|t| t.to_string().eq_ignore_ascii_case(transport))
                    .unwrap_or(false)
            })
            .or(local.first())
            .map(|a| a.addr.to_string())
            .unwrap_or_else(|| "?".into())
    }

    /// Writes one record: a header line and the message text.
    pub fn record(&self, direction: Direction, transport: &str, remote: &str, text: &str) {
        let local = self.local_for(transport);
        let (from, to) = match direction {
            Direction::Sent => (local.as_str(), remote),
            Direction::Received => (remote, local.as_str()),
        };
        let line = format!(
            "---- {} {} {} {} -> {} ({} bytes)\n{}\n",
            crate::time::timestamp_micros(),
            direction.word(),
            transport.to_ascii_uppercase(),
            from,
            to,
            text.len(),
            text.trim_end()
        );
        if let Ok(mut file) = self.file.lock() {
            // A full disk must not stop the phone: the trace is best effort.
            let _ = file.write_all(line.as_bytes());
        }
    }
}

/// Which way a traced message went.
#[derive(Debug, Clone, Copy)]
pub enum Direction {
    /// We sent it.
    Sent,
    /// We received it.
    Received,
}

impl Direction {
    fn word(self) -> &'static str {
        match self {
            Direction::Sent => "SENT",
            Direction::Received => "RECV",
        }
    }
}

impl SipTrace {
    /// Records a message the stack is about to send to `dest` (`None` for a response:
    /// its Via says where it goes).
    pub(crate) fn sent(&self, msg: &SipMessage, dest: Option<&SipAddr>) {
        let (transport, remote) = match dest {
            Some(addr) => (transport_word(addr), addr.addr.to_string()),
            None => response_destination(msg),
        };
        self.record(Direction::Sent, &transport, &remote, &msg.to_string());
    }

    /// Records a message the stack received from `from`.
    pub(crate) fn received(&self, msg: &SipMessage, from: Option<&SipAddr>) {
        let (transport, remote) = match from {
            Some(addr) => (transport_word(addr), addr.addr.to_string()),
            None => ("?".to_string(), "?".to_string()),
        };
        self.record(Direction::Received, &transport, &remote, &msg.to_string());
    }
}

fn transport_word(addr: &SipAddr) -> String {
    addr.r#type
        .map(|t| t.to_string().to_ascii_uppercase())
        .unwrap_or_else(|| "UDP".into())
}

/// The stack does not tell where a response goes; RFC 3261 §18.2.2 does: the top
/// Via's `received`/`rport`, else its sent-by.
fn response_destination(msg: &SipMessage) -> (String, String) {
    let SipMessage::Response(resp) = msg else {
        return ("?".into(), "?".into());
    };
    let Some(via) = resp.via_header().ok().and_then(|v| v.typed().ok()) else {
        return ("?".into(), "?".into());
    };
    let mut host = via.uri.host_with_port.host.to_string();
    let mut port = via.uri.host_with_port.port.map(|p| p.to_string());
    // A request that came over TCP with a UDP Via got `;transport=TCP` added:
    // its response goes back on that connection.
    let mut transport = via.transport;
    for param in &via.params {
        match param {
            Param::Received(r) => host = r.value().to_string(),
            Param::Rport(Some(p)) => port = Some(p.to_string()),
            Param::Transport(t) => transport = *t,
            _ => {}
        }
    }
    let remote = match port {
        Some(p) => format!("{host}:{p}"),
        None => host,
    };
    (transport.to_string().to_ascii_uppercase(), remote)
}
