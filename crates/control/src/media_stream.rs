//! Live call audio over WebSocket: the protocol spoken around one
//! [`StreamClient`], for both faces that carry it — a client of
//! `GET /calls/{id}/media` (axum's WebSocket), and a server the phone connects out to
//! for `media stream ID URL` (tokio-tungstenite, [`dialer`]).
//!
//! The phone sends first a text `{"event":"start","call":ID,"client":N,"codec":...,
//! "rate":...,"mode":...,"remote":...,"frame_bytes":...}`, then binary frames: 20 ms
//! of 16-bit little-endian mono PCM at the chosen rate, of what the far end says
//! (decoded, after the jitter buffer); marks the client asked for come back as
//! `{"event":"mark","name":...}` once the audio before them went out, and the stream
//! ends with `{"event":"stop","reason":...}`. The client may send binary frames of
//! the same format (played into the call), `{"event":"mark","name":...}`,
//! `{"event":"clear"}` (drops what is queued: barge-in) and `{"event":"stop"}`. A
//! frame of the wrong size or a message not understood gets an
//! `{"event":"error","reason":...}` and is dropped; the call is unharmed. A client
//! that stops reading is dropped by the media thread (its queue is bounded).
//!
//! Nothing here touches RTP: the media thread's side is `microsip_media::stream`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use microsip_engine::reply::{fail, ok_with};
use microsip_engine::{CallId, Command, EngineHandle, ErrorCode, MediaDial, MediaDialer, Reply};
use microsip_media::{StreamClient, StreamMode, StreamOut, StreamRequest};
use serde_json::{json, Value};
use tracing::debug;

use crate::event_feed::EVENT_WRITE_TIMEOUT;

/// How long `media stream` waits for the server to accept the WebSocket.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest message taken from a client (a 20 ms frame at 16 kHz is 640 bytes).
pub const MAX_MESSAGE: usize = 64 * 1024;

/// One WebSocket message, whichever library carried it.
#[derive(Debug)]
pub(crate) enum Msg {
    Text(String),
    Binary(Vec<u8>),
    Close,
    /// Ping, pong: answered by the library.
    Other,
}

/// A WebSocket, whichever library speaks it.
pub(crate) trait Socket: Send {
    fn send(&mut self, msg: Msg) -> impl Future<Output = Result<(), ()>> + Send;
    /// The next message; `None` when the connection is gone.
    fn recv(&mut self) -> impl Future<Output = Option<Msg>> + Send;
}

impl Socket for axum::extract::ws::WebSocket {
    async fn send(&mut self, msg: Msg) -> Result<(), ()> {
        use axum::extract::ws::Message;
        let message = match msg {
            Msg::Text(t) => Message::Text(t.into()),
            Msg::Binary(b) => Message::Binary(b.into()),
            Msg::Close | Msg::Other => Message::Close(None),
        };
        axum::extract::ws::WebSocket::send(self, message)
            .await
            .map_err(|_| ())
    }
    async fn recv(&mut self) -> Option<Msg> {
        use axum::extract::ws::Message;
        match axum::extract::ws::WebSocket::recv(self).await? {
            Ok(Message::Text(t)) => Some(Msg::Text(t.to_string())),
            Ok(Message::Binary(b)) => Some(Msg::Binary(b.to_vec())),
            Ok(Message::Close(_)) | Err(_) => Some(Msg::Close),
            Ok(_) => Some(Msg::Other),
        }
    }
}

type Tungstenite =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Outbound(Tungstenite);

impl Socket for Outbound {
    async fn send(&mut self, msg: Msg) -> Result<(), ()> {
        use tokio_tungstenite::tungstenite::Message;
        let message = match msg {
            Msg::Text(t) => Message::Text(t.into()),
            Msg::Binary(b) => Message::Binary(b.into()),
            Msg::Close | Msg::Other => Message::Close(None),
        };
        self.0.send(message).await.map_err(|_| ())
    }
    async fn recv(&mut self) -> Option<Msg> {
        use tokio_tungstenite::tungstenite::Message;
        match self.0.next().await? {
            Ok(Message::Text(t)) => Some(Msg::Text(t.to_string())),
            Ok(Message::Binary(b)) => Some(Msg::Binary(b.to_vec())),
            Ok(Message::Close(_)) | Err(_) => Some(Msg::Close),
            Ok(_) => Some(Msg::Other),
        }
    }
}

/// The call's far end and codec, from the engine's `calls`.
async fn call_facts(engine: &EngineHandle, call: CallId) -> (Value, Value) {
    let Ok(answer) = engine.execute(Command::Calls).await else {
        return (Value::Null, Value::Null);
    };
    let entry = answer.data.as_array().and_then(|calls| {
        calls
            .iter()
            .find(|c| c.get("id").and_then(Value::as_u64) == Some(call))
    });
    match entry {
        Some(c) => (
            c.get("codec").cloned().unwrap_or(Value::Null),
            c.get("remote").cloned().unwrap_or(Value::Null),
        ),
        None => (Value::Null, Value::Null),
    }
}

async fn send_json(socket: &mut impl Socket, value: Value) -> Result<(), ()> {
    match tokio::time::timeout(
        EVENT_WRITE_TIMEOUT,
        socket.send(Msg::Text(value.to_string())),
    )
    .await
    {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// What a client's text message asks for.
#[derive(Debug)]
enum ClientText {
    Mark(String),
    Clear,
    Stop,
    /// A start / config message after the stream began: nothing to change.
    Ignored,
}

fn read_client_text(text: &str) -> Result<ClientText, String> {
    let value: Value = serde_json::from_str(text)
        .map_err(|_| "a text message must be a JSON object with an \"event\"".to_string())?;
    match value.get("event").and_then(Value::as_str) {
        Some("mark") => match value.get("name") {
            Some(Value::String(name)) => Ok(ClientText::Mark(name.clone())),
            Some(other) => Ok(ClientText::Mark(other.to_string())),
            None => Err("a mark needs a \"name\"".into()),
        },
        Some("clear") => Ok(ClientText::Clear),
        Some("stop") => Ok(ClientText::Stop),
        Some("start") | Some("config") => Ok(ClientText::Ignored),
        Some(other) => Err(format!(
            "unknown event '{other}': the phone takes mark, clear and stop"
        )),
        None => Err("a text message needs an \"event\"".into()),
    }
}

/// The start message, then audio both ways until the client or the phone ends it.
pub(crate) async fn run(mut socket: impl Socket, mut client: StreamClient, engine: EngineHandle) {
    let info = client.info();
    let (codec, remote) = call_facts(&engine, info.call).await;
    let start = json!({
        "event": "start",
        "call": info.call,
        "client": info.client,
        "codec": codec,
        "rate": info.rate,
        "mode": info.mode.as_str(),
        "remote": remote,
        "frame_bytes": client.frame_bytes(),
    });
    if send_json(&mut socket, start).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                None | Some(Msg::Close) => return,
                Some(Msg::Other) => {}
                Some(Msg::Binary(bytes)) => {
                    if let Err(e) = client.push(&bytes) {
                        let error = json!({"event": "error", "reason": e.to_string()});
                        if send_json(&mut socket, error).await.is_err() {
                            return;
                        }
                    }
                }
                Some(Msg::Text(text)) => {
                    let reply = match read_client_text(&text) {
                        Ok(ClientText::Mark(name)) => {
                            client.mark(name);
                            None
                        }
                        Ok(ClientText::Clear) => {
                            let marks = client.clear();
                            Some(json!({"event": "cleared", "marks": marks}))
                        }
                        Ok(ClientText::Stop) => {
                            let _ = send_json(&mut socket, json!({"event": "stop", "reason": "the client stopped"})).await;
                            let _ = socket.send(Msg::Close).await;
                            return;
                        }
                        Ok(ClientText::Ignored) => None,
                        Err(reason) => Some(json!({"event": "error", "reason": reason})),
                    };
                    if let Some(reply) = reply {
                        if send_json(&mut socket, reply).await.is_err() {
                            return;
                        }
                    }
                }
            },
            out = client.next() => match out {
                Some(StreamOut::Audio { pcm, len, rate }) => {
                    let bytes = client.convert(&pcm[..len.min(pcm.len())], rate);
                    let sent = tokio::time::timeout(EVENT_WRITE_TIMEOUT, socket.send(Msg::Binary(bytes))).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        debug!("dropping a media stream client that stopped reading");
                        return;
                    }
                }
                Some(StreamOut::Mark(name)) => {
                    if send_json(&mut socket, json!({"event": "mark", "name": name})).await.is_err() {
                        return;
                    }
                }
                None => {
                    let reason = client.stop_reason().unwrap_or_else(|| "stopped".into());
                    let _ = send_json(&mut socket, json!({"event": "stop", "reason": reason})).await;
                    let _ = socket.send(Msg::Close).await;
                    return;
                }
            },
        }
    }
}

/// Serves one client of `GET /calls/{id}/media` (already attached).
pub(crate) async fn serve(
    socket: axum::extract::ws::WebSocket,
    client: StreamClient,
    engine: EngineHandle,
) {
    run(socket, client, engine).await;
}

/// The `media stream ID URL` dialer: connects to the URL (at most
/// [`CONNECT_TIMEOUT`]), attaches the stream, and streams on in a task of its own.
/// The reply names the client once the start message is on its way.
pub fn dialer() -> MediaDialer {
    Arc::new(|dial: MediaDial| Box::pin(stream_to(dial)))
}

async fn stream_to(dial: MediaDial) -> Reply {
    let MediaDial {
        engine,
        call,
        url,
        rate,
        mode,
    } = dial;
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let connecting = tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true);
    let socket = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok((socket, _response))) => socket,
        Ok(Err(e)) => return fail(ErrorCode::Media, format!("cannot connect to {url}: {e}")),
        Err(_) => {
            return fail(
                ErrorCode::Media,
                format!(
                    "{url} did not accept the WebSocket within {} s",
                    CONNECT_TIMEOUT.as_secs()
                ),
            )
        }
    };
    let request = StreamRequest {
        rate,
        mode,
        remote: url.clone(),
    };
    let client = match engine.attach_media(call, request).await {
        Ok(client) => client,
        Err(failure) => {
            let mut socket = Outbound(socket);
            let _ = send_json(
                &mut socket,
                json!({"event": "stop", "reason": failure.message}),
            )
            .await;
            let _ = socket.send(Msg::Close).await;
            return Err(failure);
        }
    };
    let info = client.info();
    tokio::spawn(run(Outbound(socket), client, engine));
    ok_with(
        format!(
            "call {call}: streaming to {url} as client {} ({} Hz, {})",
            info.client,
            info.rate,
            info.mode.as_str()
        ),
        json!({
            "call": call,
            "client": info.client,
            "rate": info.rate,
            "mode": info.mode.as_str(),
            "remote": url,
        }),
    )
}

/// Reads `rate` and `mode` from a query or a client's first message; `None` in each
/// when absent. Errors name the bad value.
pub(crate) fn stream_options(
    rate: Option<&str>,
    mode: Option<&str>,
) -> Result<(Option<u32>, Option<StreamMode>), String> {
    let rate = match rate {
        None => None,
        Some("8000") => Some(8000),
        Some("16000") => Some(16000),
        Some(other) => return Err(format!("rate must be 8000 or 16000, got '{other}'")),
    };
    let mode = match mode {
        None => None,
        Some(m) => Some(
            StreamMode::parse(m)
                .ok_or_else(|| format!("mode must be replace or mix, got '{m}'"))?,
        ),
    };
    Ok((rate, mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_texts() {
        assert!(matches!(
            read_client_text(r#"{"event":"mark","name":"a"}"#),
            Ok(ClientText::Mark(n)) if n == "a"
        ));
        assert!(matches!(
            read_client_text(r#"{"event":"clear"}"#),
            Ok(ClientText::Clear)
        ));
        assert!(read_client_text("hello").unwrap_err().contains("JSON"));
        assert!(read_client_text(r#"{"event":"dance"}"#)
            .unwrap_err()
            .contains("unknown event"));
        assert_eq!(
            stream_options(Some("16000"), Some("mix")).unwrap(),
            (Some(16000), Some(StreamMode::Mix))
        );
        assert!(stream_options(Some("44100"), None)
            .unwrap_err()
            .contains("8000"));
        assert!(stream_options(None, Some("loud"))
            .unwrap_err()
            .contains("replace"));
    }
}
