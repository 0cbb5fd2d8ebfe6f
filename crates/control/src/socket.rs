//! The local control socket (server side): a Unix stream socket, mode 0600, only for
//! our own user. One request per line, plain (`hold 3 on`) or JSON
//! (`{"argv":["hold","3","on"],"token":"t"}`); one reply line per request; `events`
//! turns the connection into a JSON-lines event stream.
//!
//! A DDE execute string holding several commands (`[Hold][Dial(1002)]`) runs them in
//! order, each after the one before has replied, whatever that reply (and whether or
//! not the client is still there to read it): a plain request gets one reply line per
//! command; a JSON request gets one object whose `replies` holds them (`ok` when all
//! succeeded). A string that does not parse whole runs nothing and gets one error.
//!
//! Connections are bounded: a client process may hold [`MAX_CONNECTIONS_PER_CLIENT`]
//! at once and the phone serves [`MAX_CONNECTIONS`] in all (only our own user may
//! connect, so that is also the per-user bound). The one over a bound gets one
//! refusal line (`ERR busy too many control connections ...`) and is closed. A
//! connection reads through a small buffer (1 KiB; a long request's line buffer is
//! shrunk again after it), and once many connections have come and gone the memory
//! they used is handed back to the system (glibc keeps freed pages otherwise).

use std::collections::HashMap;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use microsip_engine::grammar::{parse_args_all, parse_line_all};
use microsip_engine::reply::{fail, to_json, to_json_many, to_line};
use microsip_engine::{Command, EngineHandle, ErrorCode, Reply};

use crate::audit::AuditLog;
use crate::event_feed::{self, EVENT_WRITE_TIMEOUT};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, warn};

/// Longest request line accepted; longer input is refused and the connection closed.
pub const MAX_LINE: usize = 64 * 1024;
/// Connections one client process may hold at once.
pub const MAX_CONNECTIONS_PER_CLIENT: usize = 64;
/// Connections served at once, all clients together.
pub const MAX_CONNECTIONS: usize = 256;
/// Read buffer of a connection while it reads a request (lines grow past it).
const READ_BUFFER: usize = 1024;
/// When at least this many connections were open at once and three quarters of them
/// have closed, the allocator is asked to give freed memory back to the system.
const TRIM_AFTER: usize = 32;

/// Counts the open connections, in all and per client process.
#[derive(Debug)]
struct Limits {
    per_client: usize,
    total: usize,
    state: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    open: usize,
    /// The most open at once since memory was last given back.
    peak: usize,
    /// How many times memory was given back.
    trims: usize,
    by_client: HashMap<i32, usize>,
}

/// One admitted connection; counted until dropped.
#[derive(Debug)]
struct Slot {
    limits: Arc<Limits>,
    client: i32,
}

impl Limits {
    fn new(per_client: usize, total: usize) -> Arc<Limits> {
        Arc::new(Limits {
            per_client,
            total,
            state: Mutex::new(Counts::default()),
        })
    }

    /// Admits a connection from process `client`, or says why not.
    fn admit(self: &Arc<Self>, client: i32) -> Result<Slot, String> {
        let mut counts = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if counts.open >= self.total {
            return Err(format!(
                "too many control connections: the phone serves {} at once; close some and \
                 retry",
                self.total
            ));
        }
        let mine = counts.by_client.get(&client).copied().unwrap_or(0);
        if mine >= self.per_client {
            return Err(format!(
                "too many control connections from this process (pid {client}): at most {} at \
                 once; close some and retry",
                self.per_client
            ));
        }
        counts.by_client.insert(client, mine + 1);
        counts.open += 1;
        counts.peak = counts.peak.max(counts.open);
        Ok(Slot {
            limits: self.clone(),
            client,
        })
    }

    #[cfg(test)]
    fn open(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).open
    }

    #[cfg(test)]
    fn trims(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).trims
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let trim = {
            let mut counts = self.limits.state.lock().unwrap_or_else(|e| e.into_inner());
            counts.open = counts.open.saturating_sub(1);
            if let Some(n) = counts.by_client.get_mut(&self.client) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    counts.by_client.remove(&self.client);
                }
            }
            if counts.by_client.is_empty() {
                counts.by_client.shrink_to_fit();
            }
            // Once most of a wave of connections is gone (a few long-lived event
            // clients may stay), not on every ordinary close.
            let trim = counts.peak >= TRIM_AFTER && counts.open <= counts.peak / 4;
            if trim || counts.open == 0 {
                counts.peak = counts.open;
            }
            counts.trims += usize::from(trim);
            trim
        };
        if trim {
            microsip_engine::memory::give_back();
        }
    }
}

/// What `http-login` answers with: the web page's URL carrying a fresh one-time login
/// code (`microsip open`), or why there is none (the HTTP API is off).
pub type WebLogin = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// The socket-only command that asks for the web page's login URL. It is answered
/// here, not by the engine: the HTTP server, which mints the codes, lives in this
/// crate.
pub const WEB_LOGIN_COMMAND: &str = "http-login";

/// The listening socket; removes its file when dropped.
pub struct SocketServer {
    path: PathBuf,
    in_flight: Arc<AtomicUsize>,
}

impl SocketServer {
    /// Binds `path` (refusing when another phone already answers there), sets mode
    /// 0600 and serves connections with `engine`.
    pub async fn bind(
        path: &Path,
        engine: EngineHandle,
        audit: Option<Arc<AuditLog>>,
        web_login: Option<WebLogin>,
    ) -> Result<SocketServer, String> {
        if path.exists() {
            if UnixStream::connect(path).await.is_ok() {
                return Err(format!(
                    "another phone is already running on {}",
                    path.display()
                ));
            }
            // A stale socket from a phone that did not exit cleanly.
            std::fs::remove_file(path)
                .map_err(|e| format!("cannot remove stale socket {}: {e}", path.display()))?;
        }
        let listener = UnixListener::bind(path)
            .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("cannot set mode 0600 on {}: {e}", path.display()))?;
        let in_flight = Arc::new(AtomicUsize::new(0));
        tokio::spawn(accept_loop(
            listener,
            engine,
            in_flight.clone(),
            audit,
            web_login,
        ));
        Ok(SocketServer {
            path: path.to_path_buf(),
            in_flight,
        })
    }

    /// Waits (bounded) until replies being written have gone out.
    pub async fn drain(&self) {
        for _ in 0..100 {
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for SocketServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[allow(unsafe_code)] // libc calls; see the SAFETY notes inside
async fn accept_loop(
    listener: UnixListener,
    engine: EngineHandle,
    in_flight: Arc<AtomicUsize>,
    audit: Option<Arc<AuditLog>>,
    web_login: Option<WebLogin>,
) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let limits = Limits::new(MAX_CONNECTIONS_PER_CLIENT, MAX_CONNECTIONS);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!("control socket accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let client = match stream.peer_cred() {
            Ok(cred) if cred.uid() == me => cred.pid().unwrap_or(0),
            Ok(cred) => {
                warn!("refused control connection from uid {}", cred.uid());
                continue;
            }
            Err(e) => {
                warn!("refused control connection: cannot read peer credentials: {e}");
                continue;
            }
        };
        let slot = match limits.admit(client) {
            Ok(slot) => slot,
            Err(reason) => {
                debug!("refused control connection: {reason}");
                // The socket's buffer is empty: one non-blocking write fits; a
                // client that does not read it is not waited for.
                let line = format!("{}\n", to_line(&fail(ErrorCode::Busy, reason)));
                let _ = stream.try_write(line.as_bytes());
                continue;
            }
        };
        tokio::spawn(serve_connection(
            slot,
            stream,
            engine.clone(),
            in_flight.clone(),
            audit.clone(),
            web_login.clone(),
        ));
    }
}

/// One parsed request line.
struct Request {
    /// One command, or several from a DDE execute string, in order.
    command: Result<Vec<Command>, Reply>,
    /// `Some` for the JSON form: reply in JSON and echo this token.
    json: Option<Value>,
    /// Who sent it: `cli` (a `microsip ARGS...` process says so) or `socket`.
    source: &'static str,
    /// The words as received, for the audit log when they made no command.
    words: Vec<String>,
}

/// Parses one request line as the socket reads it (plain words, a DDE execute
/// string, or the JSON form `{"argv": [...]}` / `{"command": "..."}`) into the
/// commands it asks for, or the reply that refuses it; with the JSON form, the
/// reply as it would be written back (JSON, the token echoed) for a refusal. Public
/// for the fuzz target `fuzz/fuzz_targets/json_request.rs`.
pub fn parse_request_line(bytes: &[u8]) -> Result<Vec<Command>, String> {
    let request = parse_request(bytes);
    request
        .command
        .map_err(|reply| render(&reply, &request.json))
}

fn parse_request(bytes: &[u8]) -> Request {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Request {
            command: Err(fail(ErrorCode::BadArgument, "request is not UTF-8 text")),
            json: None,
            source: "socket",
            words: Vec::new(),
        };
    };
    let text = text.trim();
    if !text.starts_with('{') {
        return Request {
            command: parse_line_all(text).map_err(parse_failure),
            json: None,
            source: "socket",
            words: text.split_whitespace().map(str::to_string).collect(),
        };
    }
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return Request {
                command: Err(fail(
                    ErrorCode::BadArgument,
                    format!("bad JSON request: {e}"),
                )),
                json: Some(Value::Null),
                source: "socket",
                words: Vec::new(),
            }
        }
    };
    let token = value.get("token").cloned().unwrap_or(Value::Null);
    let source = match value.get("source").and_then(Value::as_str) {
        Some("cli") => "cli",
        _ => "socket",
    };
    let mut words = Vec::new();
    let command = if let Some(argv) = value.get("argv").and_then(Value::as_array) {
        let words_of: Option<Vec<String>> = argv
            .iter()
            .map(|w| w.as_str().map(str::to_string))
            .collect();
        match words_of {
            Some(w) => {
                words = w;
                parse_args_all(&words).map_err(parse_failure)
            }
            None => Err(fail(
                ErrorCode::BadArgument,
                "argv must be a list of strings",
            )),
        }
    } else if let Some(line) = value.get("command").and_then(Value::as_str) {
        parse_line_all(line).map_err(parse_failure)
    } else {
        Err(fail(
            ErrorCode::BadArgument,
            "a JSON request needs \"argv\" (a list of words) or \"command\" (a line)",
        ))
    };
    Request {
        command,
        json: Some(token),
        source,
        words,
    }
}

fn parse_failure(e: microsip_engine::ParseError) -> Reply {
    fail(ErrorCode::from_parse_code(e.code), e.message)
}

fn render(reply: &Reply, json: &Option<Value>) -> String {
    match json {
        Some(token) => {
            let token = (!token.is_null()).then_some(token);
            to_json(reply, token).to_string()
        }
        None => to_line(reply),
    }
}

/// Reads one line of at most [`MAX_LINE`] bytes. `Ok(None)` at end of input;
/// `Err(())` when the line is too long.
async fn read_line<R: AsyncBufReadExt + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<Result<(), ()>>> {
    buf.clear();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(if buf.is_empty() { None } else { Some(Ok(())) });
        }
        let (take, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        buf.extend_from_slice(&available[..take]);
        reader.consume(take);
        if buf.len() > MAX_LINE + 1 {
            return Ok(Some(Err(())));
        }
        if done {
            return Ok(Some(Ok(())));
        }
    }
}

async fn serve_connection(
    _slot: Slot,
    stream: UnixStream,
    engine: EngineHandle,
    in_flight: Arc<AtomicUsize>,
    audit: Option<Arc<AuditLog>>,
    web_login: Option<WebLogin>,
) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::with_capacity(READ_BUFFER, read);
    let mut buf = Vec::new();
    loop {
        match read_line(&mut reader, &mut buf).await {
            Ok(None) => return,
            Err(e) => {
                debug!("control connection read error: {e}");
                return;
            }
            Ok(Some(Err(()))) => {
                let reply = fail(
                    ErrorCode::BadArgument,
                    format!("request line longer than {MAX_LINE} bytes"),
                );
                let _ = write
                    .write_all(format!("{}\n", to_line(&reply)).as_bytes())
                    .await;
                return;
            }
            Ok(Some(Ok(()))) => {}
        }
        if buf.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        if buf.capacity() > 4 * READ_BUFFER {
            // A long request came; do not keep its buffer while idle afterwards.
            buf.shrink_to(4 * READ_BUFFER);
        }
        let request = parse_request(&buf);
        if let [word] = request.words.as_slice() {
            if word.eq_ignore_ascii_case(WEB_LOGIN_COMMAND) {
                let reply = web_login_reply(web_login.as_ref());
                if write_line(&mut write, &render(&reply, &request.json))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
        }
        let mut commands = match request.command {
            Ok(c) => c,
            Err(reply) => {
                if let Some(audit) = &audit {
                    audit.record(request.source, Err(&request.words), &reply);
                }
                if write_line(&mut write, &render(&reply, &request.json))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
        };
        if let [Command::Events { .. }] = commands.as_slice() {
            if let Some(Command::Events { filter }) = commands.pop() {
                stream_events(&engine, &mut write, filter, &request.json).await;
            }
            return;
        }
        let many = commands.len() > 1;
        let is_exit = commands.iter().any(|c| matches!(c, Command::Exit));
        in_flight.fetch_add(1, Ordering::SeqCst);
        let mut replies = Vec::with_capacity(commands.len());
        let mut written = Ok(());
        for command in commands {
            let audited = audit.as_ref().map(|_| command.clone());
            let reply = engine.execute(command).await;
            if let (Some(audit), Some(command)) = (&audit, &audited) {
                audit.record(request.source, Ok(command), &reply);
            }
            // Plain: each reply as soon as its command is done; JSON: one object.
            // A client gone mid-string does not stop it (as a single command runs
            // whether or not its reply can be written).
            if (request.json.is_none() || !many) && written.is_ok() {
                written = write_line(&mut write, &render(&reply, &request.json)).await;
            }
            replies.push(reply);
        }
        if let (Some(token), true, Ok(())) = (&request.json, many, &written) {
            let token = (!token.is_null()).then_some(token);
            written = write_line(&mut write, &to_json_many(&replies, token).to_string()).await;
        }
        in_flight.fetch_sub(1, Ordering::SeqCst);
        if written.is_err() || is_exit {
            return;
        }
    }
}

/// The reply to `http-login`: the page's URL (in `text` and `data.url`), or why not.
/// The URL holds a one-time code, so it is neither logged nor audited.
fn web_login_reply(web_login: Option<&WebLogin>) -> Reply {
    let Some(mint) = web_login else {
        return fail(
            ErrorCode::NotAvailableYet,
            "the HTTP API is off: start the phone with --http PORT or set [Settings] httpPort",
        );
    };
    match mint() {
        Ok(url) => microsip_engine::reply::ok_with(url.clone(), serde_json::json!({ "url": url })),
        Err(e) => fail(ErrorCode::Internal, e),
    }
}

async fn write_line<W: AsyncWriteExt + Unpin>(write: &mut W, line: &str) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    write.write_all(&bytes).await?;
    write.flush().await
}

/// Sends the acknowledgement, the snapshot, then live events until the client goes
/// away, stops reading for too long, or the phone exits.
async fn stream_events<W: AsyncWriteExt + Unpin>(
    engine: &EngineHandle,
    write: &mut W,
    filter: Option<String>,
    json: &Option<Value>,
) {
    let Some((snapshot, mut feed)) = event_feed::subscribe(engine, filter).await else {
        let reply = fail(ErrorCode::Stopping, "the phone is stopping");
        let _ = write_line(write, &render(&reply, json)).await;
        return;
    };
    let ack = microsip_engine::reply::ok("streaming events");
    if write_line(write, &render(&ack, json)).await.is_err() {
        return;
    }
    if write_line(write, &snapshot).await.is_err() {
        return;
    }
    while let Some(line) = feed.next_text().await {
        match tokio::time::timeout(EVENT_WRITE_TIMEOUT, write_line(write, &line)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.kind() == ErrorKind::BrokenPipe => return,
            Ok(Err(_)) | Err(_) => {
                debug!("dropping an event client that stopped reading");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_json_requests() {
        let r = parse_request(b"STATUS\n");
        assert!(r.json.is_none());
        assert!(matches!(r.command.as_deref(), Ok([Command::Status { .. }])));

        let r = parse_request(br#"{"argv":["STATUS"],"token":"t1"}"#);
        assert_eq!(r.json, Some(Value::from("t1")));
        assert!(r.command.is_ok());

        // DDE execute strings, on a plain line and in JSON: every command, in order.
        for request in [
            &b"[Hold] [Dial(1002)]\n"[..],
            br#"{"argv":["[Hold]","[Dial(1002)]"]}"#,
            br#"{"command":"[Hold][Dial(1002)]"}"#,
        ] {
            let r = parse_request(request);
            assert!(
                matches!(
                    r.command.as_deref(),
                    Ok([Command::Hold { .. }, Command::Dial { .. }])
                ),
                "{request:?}"
            );
        }
        // Broken: one error, nothing to run.
        let r = parse_request(b"[Hold][Dial(1002)\n");
        assert!(r.command.is_err());

        let r = parse_request(b"\xff\xfe garbage");
        assert!(r.command.is_err());

        let r = parse_request(br#"{"argv":[1,2]}"#);
        assert!(r.command.is_err());
    }

    #[test]
    fn connections_are_bounded_per_client_and_in_all() {
        let limits = Limits::new(2, 3);
        let a1 = limits.admit(10).unwrap();
        let _a2 = limits.admit(10).unwrap();
        let err = limits.admit(10).unwrap_err();
        assert!(err.contains("pid 10") && err.contains("at most 2"), "{err}");
        let _b1 = limits.admit(11).unwrap();
        let err = limits.admit(12).unwrap_err();
        assert!(err.contains("serves 3 at once"), "{err}");
        assert_eq!(limits.open(), 3);
        // A closed connection gives its place back, to anyone.
        drop(a1);
        assert_eq!(limits.open(), 2);
        let _c1 = limits.admit(12).unwrap();
        assert!(limits.admit(10).is_err());
    }

    #[test]
    fn memory_is_given_back_after_a_wave_not_after_every_close() {
        let limits = Limits::new(1000, 1000);
        // One connection at a time, as the command line does: never.
        for _ in 0..100 {
            drop(limits.admit(1).unwrap());
        }
        assert_eq!(limits.trims(), 0);
        // A wave of 40 while an event client stays: once, when 3/4 have gone.
        let _events = limits.admit(2).unwrap();
        let mut wave: Vec<Slot> = (0..39).map(|_| limits.admit(1).unwrap()).collect();
        while wave.len() > 10 {
            wave.pop();
            assert_eq!(limits.trims(), 0);
        }
        wave.pop();
        assert_eq!(limits.trims(), 1);
        wave.clear();
        assert_eq!(limits.trims(), 1);
    }

    #[tokio::test]
    async fn long_lines_are_refused() {
        let data = vec![b'a'; MAX_LINE + 10];
        let mut reader = BufReader::new(&data[..]);
        let mut buf = Vec::new();
        let got = read_line(&mut reader, &mut buf).await.unwrap();
        assert_eq!(got, Some(Err(())));
    }
}
