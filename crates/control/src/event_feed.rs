//! The event stream as every face sends it (the socket's `events`, the HTTP API's
//! WebSocket): the snapshot as one JSON text, then each live event as one JSON text,
//! filtered by an event-type prefix; a `{"type":"lagged","missed":N}` text where a
//! client fell so far behind that the engine's bounded queue dropped events for it.
//!
//! Each client has its own receiver on the engine's broadcast channel: a slow client
//! loses events (and is told so), it never slows the engine or anyone else. A face
//! drops a client that cannot take one text for [`EVENT_WRITE_TIMEOUT`].

use std::time::Duration;

use microsip_engine::{EngineHandle, Event};
use tokio::sync::broadcast::{self, error::RecvError};

/// A client that cannot take an event for this long is dropped.
pub const EVENT_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// One client's live events after its snapshot.
pub struct EventFeed {
    events: broadcast::Receiver<Event>,
    filter: Option<String>,
}

/// Subscribes: the snapshot's JSON text and the events after it, with no gap.
/// `None` when the phone is stopping.
pub async fn subscribe(
    engine: &EngineHandle,
    filter: Option<String>,
) -> Option<(String, EventFeed)> {
    let (snapshot, events) = engine.subscribe().await?;
    let snapshot = serde_json::to_string(&snapshot).unwrap_or_default();
    Some((snapshot, EventFeed { events, filter }))
}

impl EventFeed {
    /// The next event's JSON text (skipping those the filter leaves out); `None` once
    /// the phone has stopped. Cancel-safe: an event is never half taken.
    pub async fn next_text(&mut self) -> Option<String> {
        loop {
            match self.events.recv().await {
                Ok(event) => {
                    if let Some(prefix) = &self.filter {
                        if !event.kind.type_name().starts_with(prefix.as_str()) {
                            continue;
                        }
                    }
                    return Some(serde_json::to_string(&event).unwrap_or_default());
                }
                Err(RecvError::Lagged(missed)) => {
                    return Some(
                        serde_json::json!({ "type": "lagged", "missed": missed }).to_string(),
                    )
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}
