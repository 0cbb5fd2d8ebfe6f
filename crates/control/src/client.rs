//! The local control socket (client side): what a second `microsip ARGS...` does.
//! It forwards the command words exactly (JSON `argv`), after the requests its start
//! options stand for, prints each reply and turns them into an exit status. Plain
//! blocking I/O: no runtime to start, so it is quick.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

/// Exit status: the phone did it.
pub const EXIT_OK: i32 = 0;
/// Exit status: the phone refused the command (the reason is on stderr).
pub const EXIT_REFUSED: i32 = 1;
/// Exit status: usage error, or no phone to talk to.
pub const EXIT_NO_PHONE: i32 = 2;

/// How long a reply may take (registration waits for the registrar).
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// Connects to a running phone, or `None` when none answers on `path`.
pub fn connect(path: &Path) -> Option<UnixStream> {
    match UnixStream::connect(path) {
        Ok(s) => Some(s),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => None,
        Err(_) => None,
    }
}

/// Sends `argv` to the phone on `stream`, prints the answer (stdout for text, stderr
/// for errors; the raw JSON with `json`), and returns the exit status. `events`
/// keeps printing the stream until the phone closes it.
pub fn forward(stream: UnixStream, argv: &[String], json: bool) -> i32 {
    forward_all(stream, &[argv.to_vec()], json)
}

/// [`forward`] for several requests on one connection, in order (a start option
/// turned into a command, then the command words): each reply is printed, and the
/// first refusal ends it with its status.
pub fn forward_all(stream: UnixStream, requests: &[Vec<String>], json: bool) -> i32 {
    let _ = stream.set_read_timeout(Some(REPLY_TIMEOUT));
    let mut reader = BufReader::new(stream);
    for argv in requests {
        match exchange(&mut reader, argv, json) {
            Step::Next => {}
            Step::Stream => {
                let _ = reader.get_ref().set_read_timeout(None);
                return copy_stream(reader);
            }
            Step::Stop(code) => return code,
        }
    }
    EXIT_OK
}

/// Sends `argv` to the phone and returns its reply's text, or its error message;
/// nothing is printed (for commands that use the answer themselves: `microsip open`).
pub fn ask(stream: UnixStream, argv: &[String]) -> Result<String, String> {
    let _ = stream.set_read_timeout(Some(REPLY_TIMEOUT));
    let request = serde_json::json!({ "argv": argv, "source": "cli" }).to_string();
    let mut writer: &UnixStream = &stream;
    writer
        .write_all(format!("{request}\n").as_bytes())
        .and_then(|_| writer.flush())
        .map_err(|e| format!("cannot talk to the phone: {e}"))?;
    let mut line = String::new();
    match BufReader::new(&stream).read_line(&mut line) {
        Ok(0) => return Err("the phone closed the connection without a reply".into()),
        Ok(_) => {}
        Err(e) => return Err(format!("no reply from the phone: {e}")),
    }
    let reply: Value = serde_json::from_str(line.trim())
        .map_err(|_| format!("unreadable reply from the phone: {}", line.trim()))?;
    let text = |key: &str| {
        reply
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    if reply.get("ok").and_then(Value::as_bool).unwrap_or(false) {
        Ok(text("text"))
    } else {
        Err(text("error"))
    }
}

/// What comes after one request.
enum Step {
    /// Done and done well: send the next one.
    Next,
    /// `events` was accepted: copy the stream.
    Stream,
    /// Stop with this status.
    Stop(i32),
}

fn exchange(reader: &mut BufReader<UnixStream>, argv: &[String], json: bool) -> Step {
    let request = serde_json::json!({ "argv": argv, "source": "cli" }).to_string();
    let mut writer: &UnixStream = reader.get_ref();
    if let Err(e) = writer
        .write_all(format!("{request}\n").as_bytes())
        .and_then(|_| writer.flush())
    {
        eprintln!("microsip: cannot talk to the phone: {e}");
        return Step::Stop(EXIT_NO_PHONE);
    }
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => {
            eprintln!("microsip: the phone closed the connection without a reply");
            return Step::Stop(EXIT_REFUSED);
        }
        Ok(_) => {}
        Err(e) => {
            eprintln!("microsip: no reply from the phone: {e}");
            return Step::Stop(EXIT_REFUSED);
        }
    }
    let reply: Value = match serde_json::from_str(line.trim()) {
        Ok(v) => v,
        Err(_) => {
            eprintln!("microsip: unreadable reply from the phone: {}", line.trim());
            return Step::Stop(EXIT_REFUSED);
        }
    };
    let ok = reply.get("ok").and_then(Value::as_bool).unwrap_or(false);
    let is_stream = ok
        && argv
            .first()
            .is_some_and(|w| w.eq_ignore_ascii_case("events"));
    if json {
        print_line(line.trim());
    } else if !is_stream {
        // A DDE execute string of several commands: one reply each, in order.
        match reply.get("replies").and_then(Value::as_array) {
            Some(replies) => replies.iter().for_each(print_reply),
            None => print_reply(&reply),
        }
    }
    match (ok, is_stream) {
        (true, true) => Step::Stream,
        (true, false) => Step::Next,
        (false, _) => Step::Stop(EXIT_REFUSED),
    }
}

/// A reply's text on stdout, or its error on stderr.
fn print_reply(reply: &Value) {
    if reply.get("ok").and_then(Value::as_bool).unwrap_or(false) {
        print_line(reply.get("text").and_then(Value::as_str).unwrap_or(""));
    } else {
        let code = reply.get("code").and_then(Value::as_str).unwrap_or("error");
        let message = reply.get("error").and_then(Value::as_str).unwrap_or("");
        eprintln!("microsip: {message} ({code})");
    }
}

/// Prints one line of the reply; a reader that went away (`microsip devices | head`)
/// is not an error of the phone's.
fn print_line(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}").and_then(|_| out.flush());
}

fn copy_stream(mut reader: BufReader<UnixStream>) -> i32 {
    let stdout = std::io::stdout();
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return EXIT_OK,
            Ok(_) => {
                let mut out = stdout.lock();
                if out
                    .write_all(line.as_bytes())
                    .and_then(|_| out.flush())
                    .is_err()
                {
                    return EXIT_OK;
                }
            }
            Err(_) => return EXIT_OK,
        }
    }
}
