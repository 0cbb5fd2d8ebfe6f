//! The endpoints. Each turns its path, query and JSON body into the words of one
//! control command (`hold 3 on`), has the engine's grammar parse them — so every
//! check and normalization is the socket's own — runs the command with
//! `EngineHandle::execute`, and answers with the socket's JSON reply
//! (`{"ok": true, "text": ..., "data": ...}`) or a problem+json refusal.
//!
//! [`routes`] builds the router and the list of (method, path) it serves; a test
//! checks that list against `docs/openapi.json`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::handler::Handler;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter};
use axum::Router;
use microsip_engine::grammar::parse_args;
use microsip_engine::reply::to_json;
use microsip_engine::{Command, Reply};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tracing::debug;

use super::auth::session_cookie_header;
use super::problem::Problem;
use super::{ApiState, MAX_BODY};
use crate::event_feed::{self, EVENT_WRITE_TIMEOUT};
use crate::media_stream;

/// The OpenAPI document, as kept in the repository.
pub const OPENAPI: &str = include_str!("../../../../docs/openapi.json");

type Shared = Arc<ApiState>;

/// The router and what it serves.
pub struct Routes {
    pub router: Router<Shared>,
    /// (method in lowercase, path as OpenAPI writes it).
    pub list: Vec<(&'static str, &'static str)>,
}

impl Routes {
    fn add<H, T>(mut self, method: &'static str, path: &'static str, handler: H) -> Routes
    where
        H: Handler<T, Shared>,
        T: 'static,
    {
        let filter = match method {
            "post" => MethodFilter::POST,
            "put" => MethodFilter::PUT,
            "delete" => MethodFilter::DELETE,
            _ => MethodFilter::GET,
        };
        self.router = self.router.route(path, on(filter, handler));
        self.list.push((method, path));
        self
    }
}

/// Every endpoint.
pub fn routes() -> Routes {
    Routes {
        router: Router::new(),
        list: Vec::new(),
    }
    .add("get", "/openapi.json", openapi)
    .add("get", "/", web_index)
    .add("get", "/app.js", web_script)
    .add("get", "/style.css", web_style)
    .add("post", "/login", login)
    .add("get", "/events", events)
    .add("get", "/status", status)
    .add("get", "/calls", calls)
    .add("post", "/calls", dial)
    .add("post", "/calls/{id}/answer", answer)
    .add("post", "/calls/{id}/reject", reject)
    .add("post", "/calls/{id}/hangup", hangup)
    .add("post", "/calls/{id}/hold", hold)
    .add("post", "/calls/{id}/resume", resume)
    .add("post", "/calls/{id}/transfer", transfer)
    .add("post", "/calls/{id}/dtmf", dtmf)
    .add("post", "/calls/{id}/mute", mute)
    .add("post", "/calls/{id}/record", record)
    .add("post", "/calls/{id}/play", play)
    .add("get", "/calls/{id}/media", call_media)
    .add("get", "/accounts", accounts)
    .add("post", "/accounts/{n}/register", register)
    .add("post", "/accounts/{n}/unregister", unregister)
    .add("post", "/accounts/{n}/activate", activate)
    .add("get", "/messages", messages)
    .add("post", "/messages", send_message)
    .add("get", "/history", history)
    .add("get", "/contacts", contacts)
    .add("post", "/contacts", add_contact)
    .add("delete", "/contacts/{number}", remove_contact)
    .add("get", "/devices", devices)
    .add("put", "/devices/{role}", set_device)
    .add("get", "/levels", levels)
    .add("put", "/levels", set_levels)
}

// ------------------------------------------------------------------ helpers

fn words(list: &[&str]) -> Vec<String> {
    list.iter().map(|w| w.to_string()).collect()
}

/// The command the grammar makes of `words`.
fn command_of(words: &[String]) -> Result<Command, Problem> {
    parse_args(words).map_err(|e| Problem::from_parse(&e))
}

/// A reply as the HTTP answer: `status` and the socket's JSON, or a problem.
fn answer_with(reply: &Reply, status: StatusCode) -> Response {
    match reply {
        Ok(_) => json_response(status, &to_json(reply, None)),
        Err(failure) => Problem::from_failure(failure).into_response(),
    }
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response {
    let mut response = (status, value.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Parses `words` and runs the command; 200 with the reply.
async fn run(state: &ApiState, words: Vec<String>) -> Response {
    match command_of(&words) {
        Ok(command) => answer_with(&state.engine.execute(command).await, StatusCode::OK),
        Err(problem) => problem.into_response(),
    }
}

/// Reads a JSON body of at most [`MAX_BODY`] bytes. An empty body is `T::default()`
/// when `required` is false; anything else must be `application/json`.
async fn read_json<T: DeserializeOwned + Default>(
    headers: &HeaderMap,
    body: Body,
    required: bool,
) -> Result<T, Problem> {
    let too_large = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is larger than {MAX_BODY} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| too_large())?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        if required {
            return Err(Problem::bad("this needs a JSON body"));
        }
        return Ok(T::default());
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media != "application/json" && !media.ends_with("+json") {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be application/json",
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| Problem::bad(format!("bad JSON body: {e}")))
}

/// A path's call id: a positive whole number.
fn call_id(path: Result<Path<String>, PathRejection>) -> Result<String, Problem> {
    let Path(raw) = path.map_err(|e| Problem::bad(e.body_text()))?;
    match raw.parse::<u64>() {
        Ok(n) if n > 0 && raw.bytes().all(|b| b.is_ascii_digit()) => Ok(n.to_string()),
        _ => Err(Problem::bad(format!(
            "a call id is a positive whole number, got '{}'",
            raw.chars().take(40).collect::<String>()
        ))),
    }
}

/// A path's text value (an account number, a contact, a device role).
fn path_text(path: Result<Path<String>, PathRejection>) -> Result<String, Problem> {
    let Path(raw) = path.map_err(|e| Problem::bad(e.body_text()))?;
    if raw.trim().is_empty() {
        return Err(Problem::bad("the path names nothing"));
    }
    Ok(raw)
}

fn query_map(
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<HashMap<String, String>, Problem> {
    query
        .map(|Query(map)| map)
        .map_err(|e| Problem::bad(e.body_text()))
}

/// A required text field that must hold something.
fn non_empty(name: &str, value: &str) -> Result<(), Problem> {
    if value.trim().is_empty() {
        return Err(Problem::bad(format!("{name} must not be empty")));
    }
    Ok(())
}

macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(problem) => return problem.into_response(),
        }
    };
}

// ------------------------------------------------------------------ open ones

async fn openapi() -> Response {
    let mut response = OPENAPI.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The web phone page (`GET /`), its script and style: embedded, served without a
/// token; every piece of data on it comes through the authenticated API.
pub const WEB_INDEX: &str = include_str!("web/index.html");
pub const WEB_SCRIPT: &str = include_str!("web/app.js");
pub const WEB_STYLE: &str = include_str!("web/style.css");

fn web_file(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn web_index() -> Response {
    web_file(WEB_INDEX, "text/html; charset=utf-8")
}

async fn web_script() -> Response {
    web_file(WEB_SCRIPT, "text/javascript; charset=utf-8")
}

async fn web_style() -> Response {
    web_file(WEB_STYLE, "text/css; charset=utf-8")
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    code: String,
}

async fn login(State(state): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    let body: LoginBody = tri!(read_json(&headers, body, true).await);
    let session = tri!(state.auth.login(&body.code));
    let mut response = json_response(
        StatusCode::OK,
        &to_json(&microsip_engine::reply::ok("logged in"), None),
    );
    if let Ok(cookie) = HeaderValue::from_str(&session_cookie_header(&session)) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

pub async fn not_found() -> Response {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint (see /openapi.json)",
    )
    .into_response()
}

pub async fn method_not_allowed() -> Response {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method (see /openapi.json)",
    )
    .into_response()
}

// ------------------------------------------------------------------ events

async fn events(
    State(state): State<Shared>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let query = tri!(query_map(query));
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => {
            return Problem::new(
                StatusCode::UPGRADE_REQUIRED,
                "upgrade_required",
                format!("GET /events is a WebSocket: {}", rejection.body_text()),
            )
            .into_response()
        }
    };
    let filter = query.get("filter").filter(|f| !f.is_empty()).cloned();
    upgrade
        .max_message_size(MAX_BODY)
        .on_upgrade(move |socket| stream_events(socket, state, filter))
}

/// The snapshot, then the live events, as text messages; ends when the client
/// closes, cannot take a message for [`EVENT_WRITE_TIMEOUT`], or the phone stops.
async fn stream_events(mut socket: WebSocket, state: Shared, filter: Option<String>) {
    let Some((snapshot, mut feed)) = event_feed::subscribe(&state.engine, filter).await else {
        let _ = socket.send(Message::Close(None)).await;
        return;
    };
    if send_text(&mut socket, snapshot).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
            text = feed.next_text() => match text {
                Some(text) => {
                    if send_text(&mut socket, text).await.is_err() {
                        debug!("dropping a WebSocket event client that stopped reading");
                        return;
                    }
                }
                None => {
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
            },
        }
    }
}

async fn send_text(socket: &mut WebSocket, text: String) -> Result<(), ()> {
    match tokio::time::timeout(EVENT_WRITE_TIMEOUT, socket.send(Message::Text(text.into()))).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

// ------------------------------------------------------------------ call audio

/// How long a client of `GET /calls/{id}/media` without `rate` in its query may
/// take to send its first message naming the rate (else 8000 Hz).
const FIRST_MESSAGE_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// `GET /calls/{id}/media`: a WebSocket streams the call's audio both ways (see
/// `media_stream`); a plain GET lists who streams the call.
async fn call_media(
    State(state): State<Shared>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let id = tri!(call_id(path));
    let query = tri!(query_map(query));
    let (rate, mode) = tri!(media_stream::stream_options(
        query.get("rate").map(String::as_str),
        query.get("mode").map(String::as_str)
    )
    .map_err(Problem::bad));
    // The call must have audio before the protocol switches: a 404 is a problem.
    let listing = match command_of(&words(&["media", "list", &id])) {
        Ok(command) => state.engine.execute(command).await,
        Err(problem) => return problem.into_response(),
    };
    let Ok(upgrade) = upgrade else {
        return answer_with(&listing, StatusCode::OK);
    };
    if listing.is_err() {
        return answer_with(&listing, StatusCode::OK);
    }
    let Ok(call) = id.parse::<u64>() else {
        return Problem::bad("a call id is a positive whole number").into_response();
    };
    let agent: String = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(60)
        .collect();
    let remote = if agent.is_empty() {
        "GET /calls/{id}/media".replace("{id}", &id)
    } else {
        format!("GET /calls/{id}/media ({agent})")
    };
    upgrade
        .max_message_size(media_stream::MAX_MESSAGE)
        .on_upgrade(move |socket| media_client(socket, state, call, rate, mode, remote))
}

/// Picks the rate (the query's, else the client's first message's, else 8000 Hz),
/// attaches the stream and serves it.
async fn media_client(
    mut socket: WebSocket,
    state: Shared,
    call: u64,
    rate: Option<u32>,
    mode: Option<microsip_media::StreamMode>,
    remote: String,
) {
    let (mut rate, mut mode) = (rate, mode);
    if rate.is_none() {
        if let Ok(Some(Ok(Message::Text(text)))) =
            tokio::time::timeout(FIRST_MESSAGE_WAIT, socket.recv()).await
        {
            let first: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            let word = |key: &str| -> Option<String> {
                match first.get(key)? {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    _ => None,
                }
            };
            let (r, m) = (word("rate"), word("mode"));
            match media_stream::stream_options(r.as_deref(), m.as_deref()) {
                Ok((r, m)) => {
                    rate = r;
                    mode = m.or(mode);
                }
                Err(reason) => {
                    let _ = send_text(
                        &mut socket,
                        serde_json::json!({"event": "stop", "reason": reason}).to_string(),
                    )
                    .await;
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
            }
        }
    }
    let request = microsip_media::StreamRequest {
        rate: rate.unwrap_or(8000),
        mode: mode.unwrap_or_default(),
        remote,
    };
    match state.engine.attach_media(call, request).await {
        Ok(client) => media_stream::serve(socket, client, state.engine.clone()).await,
        Err(failure) => {
            let _ = send_text(
                &mut socket,
                serde_json::json!({"event": "stop", "reason": failure.message}).to_string(),
            )
            .await;
            let _ = socket.send(Message::Close(None)).await;
        }
    }
}

// ------------------------------------------------------------------ reads

async fn status(State(state): State<Shared>) -> Response {
    run(&state, words(&["status"])).await
}

async fn calls(State(state): State<Shared>) -> Response {
    run(&state, words(&["calls"])).await
}

async fn devices(State(state): State<Shared>) -> Response {
    run(&state, words(&["devices"])).await
}

async fn levels(State(state): State<Shared>) -> Response {
    run(&state, words(&["levels"])).await
}

async fn contacts(State(state): State<Shared>) -> Response {
    run(&state, words(&["contacts", "list"])).await
}

/// `status`'s accounts.
async fn accounts(State(state): State<Shared>) -> Response {
    let command = tri!(command_of(&words(&["status"])));
    let reply = state.engine.execute(command).await.map(|answer| {
        let list = answer
            .data
            .get("accounts")
            .cloned()
            .unwrap_or(serde_json::Value::Array(Vec::new()));
        let count = list.as_array().map_or(0, Vec::len);
        microsip_engine::Answer {
            text: format!("{count} accounts"),
            data: list,
        }
    });
    answer_with(&reply, StatusCode::OK)
}

async fn history(
    State(state): State<Shared>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let query = tri!(query_map(query));
    let mut list = words(&["history"]);
    match query.get("missed").map(String::as_str) {
        None | Some("false") | Some("0") => {}
        Some("true") | Some("1") => list.push("missed".into()),
        Some(other) => {
            return Problem::bad(format!("missed is true or false, got '{other}'")).into_response()
        }
    }
    if let Some(limit) = query.get("limit") {
        if !limit.bytes().all(|b| b.is_ascii_digit()) || limit.is_empty() {
            return Problem::bad("limit is a positive whole number").into_response();
        }
        list.push(limit.clone());
    }
    run(&state, list).await
}

async fn messages(
    State(state): State<Shared>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let query = tri!(query_map(query));
    let mut list = words(&["messages"]);
    if let Some(contact) = query.get("contact").filter(|c| !c.trim().is_empty()) {
        list.push(contact.clone());
    }
    run(&state, list).await
}

// ------------------------------------------------------------------ calls

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DialBody {
    target: String,
    account: Option<u32>,
    /// Hold an active call first (`dial`, the default) or not (`callto`).
    hold_active: Option<bool>,
}

async fn dial(State(state): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    let body: DialBody = tri!(read_json(&headers, body, true).await);
    tri!(non_empty("target", &body.target));
    let verb = if body.hold_active.unwrap_or(true) {
        "dial"
    } else {
        "callto"
    };
    let mut list = vec![verb.to_string(), body.target];
    if let Some(account) = body.account {
        list.push(account.to_string());
    }
    let command = tri!(command_of(&list));
    let reply = state.engine.execute(command).await;
    let id = reply
        .as_ref()
        .ok()
        .and_then(|answer| answer.data.get("call"))
        .and_then(serde_json::Value::as_u64);
    let Some(id) = id else {
        return answer_with(&reply, StatusCode::CREATED);
    };
    // The new call's id at the top as well (`{"call": ID}`), beside the reply.
    let mut body = to_json(&reply, None);
    if let Some(map) = body.as_object_mut() {
        map.insert("call".into(), id.into());
    }
    let mut response = json_response(StatusCode::CREATED, &body);
    if let Ok(location) = HeaderValue::from_str(&format!("/calls/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

async fn call_action(
    state: &ApiState,
    path: Result<Path<String>, PathRejection>,
    make: impl FnOnce(String) -> Vec<String>,
) -> Response {
    let id = tri!(call_id(path));
    run(state, make(id)).await
}

async fn answer(
    State(state): State<Shared>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    call_action(&state, path, |id| vec!["answer".into(), id]).await
}

async fn hangup(
    State(state): State<Shared>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    call_action(&state, path, |id| vec!["hangup".into(), id]).await
}

async fn hold(State(state): State<Shared>, path: Result<Path<String>, PathRejection>) -> Response {
    call_action(&state, path, |id| vec!["hold".into(), id, "on".into()]).await
}

async fn resume(
    State(state): State<Shared>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    call_action(&state, path, |id| vec!["hold".into(), id, "off".into()]).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RejectBody {
    /// SIP code, 400-699 (486 when absent).
    code: Option<u16>,
}

async fn reject(
    State(state): State<Shared>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let id = tri!(call_id(path));
    let body: RejectBody = tri!(read_json(&headers, body, false).await);
    let mut list = vec!["reject".to_string(), id];
    if let Some(code) = body.code {
        if !(400..=699).contains(&code) {
            return Problem::bad(format!("SIP code must be 400-699, got '{code}'")).into_response();
        }
        list.push(code.to_string());
    }
    run(&state, list).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TargetBody {
    target: String,
}

async fn transfer(
    State(state): State<Shared>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let id = tri!(call_id(path));
    let body: TargetBody = tri!(read_json(&headers, body, true).await);
    tri!(non_empty("target", &body.target));
    run(&state, vec!["transfer".into(), body.target, id]).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DigitsBody {
    digits: String,
}

async fn dtmf(
    State(state): State<Shared>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let id = tri!(call_id(path));
    let body: DigitsBody = tri!(read_json(&headers, body, true).await);
    tri!(non_empty("digits", &body.digits));
    run(&state, vec!["dtmf".into(), body.digits, id]).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SwitchBody {
    /// On (the default) or off.
    on: Option<bool>,
}

fn on_off(on: Option<bool>) -> &'static str {
    if on.unwrap_or(true) {
        "on"
    } else {
        "off"
    }
}

/// The microphone is the phone's, not a call's: this mutes it for every call.
async fn mute(
    State(state): State<Shared>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    tri!(call_id(path));
    let body: SwitchBody = tri!(read_json(&headers, body, false).await);
    run(&state, words(&["mute", on_off(body.on)])).await
}

async fn record(
    State(state): State<Shared>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let id = tri!(call_id(path));
    let body: SwitchBody = tri!(read_json(&headers, body, false).await);
    let verb = if body.on.unwrap_or(true) {
        "start"
    } else {
        "stop"
    };
    run(&state, vec!["record".into(), verb.into(), id]).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PlayBody {
    /// A WAV file; absent or null: stop playing.
    file: Option<String>,
    at_end: Option<AtEnd>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum AtEnd {
    Stop,
    Loop,
    Hangup,
}

async fn play(
    State(state): State<Shared>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let id = tri!(call_id(path));
    let body: PlayBody = tri!(read_json(&headers, body, false).await);
    let list = match body.file {
        None => vec!["play".into(), "off".into(), id],
        Some(file) => {
            tri!(non_empty("file", &file));
            let mut list = vec!["play".into(), file, id];
            if let Some(end) = body.at_end {
                list.push(
                    match end {
                        AtEnd::Stop => "stop",
                        AtEnd::Loop => "loop",
                        AtEnd::Hangup => "hangup",
                    }
                    .into(),
                );
            }
            list
        }
    };
    run(&state, list).await
}

// ------------------------------------------------------------------ accounts

fn account_number(path: Result<Path<String>, PathRejection>) -> Result<String, Problem> {
    let raw = path_text(path)?;
    match raw.parse::<u32>() {
        Ok(n) if raw.bytes().all(|b| b.is_ascii_digit()) => Ok(n.to_string()),
        _ => Err(Problem::bad(format!(
            "an account number is a whole number, got '{}'",
            raw.chars().take(40).collect::<String>()
        ))),
    }
}

async fn register(
    State(state): State<Shared>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let n = tri!(account_number(path));
    run(&state, vec!["register".into(), n]).await
}

async fn unregister(
    State(state): State<Shared>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let n = tri!(account_number(path));
    run(&state, vec!["unregister".into(), n]).await
}

async fn activate(
    State(state): State<Shared>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let n = tri!(account_number(path));
    run(&state, vec!["account".into(), n]).await
}

// ------------------------------------------------------------------ messages, contacts

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MessageBody {
    target: String,
    text: String,
}

async fn send_message(State(state): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    let body: MessageBody = tri!(read_json(&headers, body, true).await);
    tri!(non_empty("target", &body.target));
    tri!(non_empty("text", &body.text));
    run(&state, vec!["message".into(), body.target, body.text]).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ContactBody {
    number: String,
    name: Option<String>,
}

async fn add_contact(State(state): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    let body: ContactBody = tri!(read_json(&headers, body, true).await);
    tri!(non_empty("number", &body.number));
    let mut list = vec!["contacts".into(), "add".into(), body.number];
    if let Some(name) = body.name.filter(|n| !n.trim().is_empty()) {
        list.push(name);
    }
    match command_of(&list) {
        Ok(command) => answer_with(&state.engine.execute(command).await, StatusCode::CREATED),
        Err(problem) => problem.into_response(),
    }
}

async fn remove_contact(
    State(state): State<Shared>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let number = tri!(path_text(path));
    run(&state, vec!["contacts".into(), "remove".into(), number]).await
}

// ------------------------------------------------------------------ devices, levels

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DeviceBody {
    device: String,
}

async fn set_device(
    State(state): State<Shared>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let role = tri!(path_text(path));
    if !matches!(role.as_str(), "input" | "output" | "ring") {
        return Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "the device roles are input, output and ring",
        )
        .into_response();
    }
    let body: DeviceBody = tri!(read_json(&headers, body, true).await);
    tri!(non_empty("device", &body.device));
    run(&state, vec!["setdevice".into(), role, body.device]).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct LevelsBody {
    speaker: Option<u8>,
    microphone: Option<u8>,
    speaker_muted: Option<bool>,
    microphone_muted: Option<bool>,
}

/// Runs `setvolume`, `setmicvolume`, `speakermute`, `mute` for the fields given, in
/// that order, stopping at the first refusal (the ones before it took effect). The
/// reply's text joins theirs; its data lists theirs.
async fn set_levels(State(state): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    let body: LevelsBody = tri!(read_json(&headers, body, true).await);
    let mut commands = Vec::new();
    if let Some(level) = body.speaker {
        commands.push(vec!["setvolume".to_string(), level.to_string()]);
    }
    if let Some(level) = body.microphone {
        commands.push(vec!["setmicvolume".to_string(), level.to_string()]);
    }
    if let Some(on) = body.speaker_muted {
        commands.push(words(&["speakermute", on_off(Some(on))]));
    }
    if let Some(on) = body.microphone_muted {
        commands.push(words(&["mute", on_off(Some(on))]));
    }
    if commands.is_empty() {
        return Problem::bad(
            "give at least one of speaker, microphone, speakerMuted, microphoneMuted",
        )
        .into_response();
    }
    // Every part parses before any runs.
    let mut parsed = Vec::new();
    for list in &commands {
        parsed.push(tri!(command_of(list)));
    }
    let mut texts = Vec::new();
    let mut data = Vec::new();
    for command in parsed {
        match state.engine.execute(command).await {
            Ok(answer) => {
                texts.push(answer.text);
                data.push(answer.data);
            }
            Err(failure) => return Problem::from_failure(&failure).into_response(),
        }
    }
    let reply: Reply = Ok(microsip_engine::Answer {
        text: texts.join("; "),
        data: serde_json::Value::Array(data),
    });
    answer_with(&reply, StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route the server has is in the OpenAPI document, and every path and
    /// method there is a route.
    #[test]
    fn openapi_document_lists_exactly_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..3]), Some("3.1"));
        let mut served: Vec<(String, String)> = routes()
            .list
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        served.sort();
        let mut documented = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                    documented.push((method.clone(), path.clone()));
                }
            }
        }
        documented.sort();
        assert_eq!(served, documented);
    }

    #[test]
    fn call_ids_are_positive_numbers() {
        assert_eq!(call_id(Ok(Path("7".into()))), Ok("7".into()));
        assert!(call_id(Ok(Path("0".into()))).is_err());
        assert!(call_id(Ok(Path("decline".into()))).is_err());
        assert!(call_id(Ok(Path("+7".into()))).is_err());
        assert!(call_id(Ok(Path("99999999999999999999999".into()))).is_err());
    }
}
