//! Event hooks: the eight `cmd*` keys of `[Settings]` run a program at moments of a
//! call, as MicroSIP does, but without freezing the phone and without a shell.
//!
//! How a hook's command line becomes a process:
//!
//! 1. The ini value is split into words, never by a shell: blanks separate words,
//!    double quotes group (`"My Scripts/hook.sh"` is one word), and inside quotes a
//!    backslash escapes only `\"` and `\\`. Outside quotes a backslash is literal, so
//!    a Windows-style `C:\x` stays as written. Single quotes are ordinary characters
//!    (as in MicroSIP): write `sh -c "..."`, not `sh -c '...'`.
//! 2. In each word the placeholders `{number} {callerid} {name} {user} {domain}
//!    {server} {duration} {time} {callid} {direction}` and `%callerid%` are replaced
//!    by the call's values. A value is inserted as is: it is never split into words
//!    nor searched for placeholders again, so a caller id such as `"; rm -rf ~ $(id)`
//!    reaches the program as part of one plain argument. NUL characters (which no
//!    argument can hold) are removed from values.
//! 3. When the command holds no placeholder at all, the caller's number is appended
//!    as the last argument (MicroSIP's behaviour); nothing is appended when the
//!    number is empty (MicroSIP then passes no parameters either).
//! 4. The first word is the program (looked up in `PATH` when it has no `/`). A shell
//!    runs only when the user wrote one (`sh -c '...'`); the phone never adds one. A
//!    placeholder embedded in a shell's script text would let a caller id run
//!    commands, so that is reported once when the hooks are set; the same values are
//!    also in the environment (`MICROSIP_NUMBER`, `MICROSIP_CALLERID`, ...,
//!    `MICROSIP_EVENT`) for scripts to quote themselves (`"$MICROSIP_CALLERID"`).
//!
//! [`HookRunner::fire`] returns at once: the child is started on the tokio runtime
//! in a process group of its own, with stdin from `/dev/null` and its output sent to
//! the phone's log (or discarded), and is killed with its whole group (SIGKILL) when
//! it outlives the time limit (10 s unless set). It is always reaped. A program that
//! cannot be started is logged with the hook's name; the caller never sees an error.
//! At most [`DEFAULT_MAX_RUNNING`] hook processes run at once (a flood of INVITEs
//! must not become a flood of processes); a hook fired beyond that is skipped and
//! logged.

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use microsip_config::Hooks;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// How long a hook may run before it is killed, unless set otherwise.
pub(crate) const DEFAULT_TIME_LIMIT: Duration = Duration::from_secs(10);
/// How many hook processes may run at the same time, unless set otherwise.
pub const DEFAULT_MAX_RUNNING: usize = 32;
/// Longest line of a hook's output copied into the log (longer lines are cut).
const MAX_LOG_LINE: usize = 1000;
/// Most output of one stream of one hook run copied into the log; the rest is read
/// and dropped so the child never blocks on a full pipe.
const MAX_LOG_BYTES: usize = 16 * 1024;

/// The moments a hook can fire at, one per `cmd*` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookEvent {
    /// `cmdIncomingCall`: an INVITE arrived (before auto-reject rules).
    IncomingCall,
    /// `cmdCallRing`: an incoming call actually rings.
    CallRing,
    /// `cmdOutgoingCall`: an outgoing call starts.
    OutgoingCall,
    /// `cmdCallAnswer`: an incoming call is answered.
    CallAnswer,
    /// `cmdCallAnswerVideo`: accepted for compatibility (no video).
    CallAnswerVideo,
    /// `cmdCallStart`: any call is confirmed.
    CallStart,
    /// `cmdCallBusy`: a call ended with 486, 600 or 603.
    CallBusy,
    /// `cmdCallEnd`: a call ended any other way.
    CallEnd,
}

impl HookEvent {
    /// Every event, in the order of the spec.
    pub const ALL: [HookEvent; 8] = [
        HookEvent::IncomingCall,
        HookEvent::CallRing,
        HookEvent::OutgoingCall,
        HookEvent::CallAnswer,
        HookEvent::CallAnswerVideo,
        HookEvent::CallStart,
        HookEvent::CallBusy,
        HookEvent::CallEnd,
    ];

    /// The ini key (`cmdCallEnd`, ...).
    pub fn key(self) -> &'static str {
        match self {
            HookEvent::IncomingCall => "cmdIncomingCall",
            HookEvent::CallRing => "cmdCallRing",
            HookEvent::OutgoingCall => "cmdOutgoingCall",
            HookEvent::CallAnswer => "cmdCallAnswer",
            HookEvent::CallAnswerVideo => "cmdCallAnswerVideo",
            HookEvent::CallStart => "cmdCallStart",
            HookEvent::CallBusy => "cmdCallBusy",
            HookEvent::CallEnd => "cmdCallEnd",
        }
    }

    /// The event for a key (exact spelling, or any case).
    pub fn from_key(key: &str) -> Option<HookEvent> {
        HookEvent::ALL
            .into_iter()
            .find(|e| e.key().eq_ignore_ascii_case(key))
    }

    /// The hook for the end of a call with final SIP `code`: `CallBusy` for 486, 600
    /// and 603, `CallEnd` otherwise.
    pub(crate) fn for_end(code: u16) -> HookEvent {
        match code {
            486 | 600 | 603 => HookEvent::CallBusy,
            _ => HookEvent::CallEnd,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What a hook is told about the call. Every field is text, inserted into the
/// command line as is; the engine fills what applies and leaves the rest empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookContext {
    /// The remote party's number (user part): the caller on incoming calls, the
    /// called number on outgoing ones. Appended when the command has no placeholder.
    pub number: String,
    /// The remote party as shown (e.g. `Alice <1001>`, or the number alone).
    pub callerid: String,
    /// The remote party's display name, if any.
    pub name: String,
    /// The local account's user name.
    pub user: String,
    /// The local account's domain.
    pub domain: String,
    /// The local account's server.
    pub server: String,
    /// Talk time so far, whole seconds.
    pub duration: String,
    /// When the event happened (Unix seconds).
    pub time: String,
    /// The phone's call id.
    pub callid: String,
    /// `in` or `out`.
    pub direction: String,
}

type Field = fn(&HookContext) -> &str;

/// The placeholders, with the environment variable carrying the same value.
const PLACEHOLDERS: [(&str, &str, Field); 11] = [
    ("{number}", "MICROSIP_NUMBER", |c| &c.number),
    ("{callerid}", "MICROSIP_CALLERID", |c| &c.callerid),
    ("{name}", "MICROSIP_NAME", |c| &c.name),
    ("{user}", "MICROSIP_USER", |c| &c.user),
    ("{domain}", "MICROSIP_DOMAIN", |c| &c.domain),
    ("{server}", "MICROSIP_SERVER", |c| &c.server),
    ("{duration}", "MICROSIP_DURATION", |c| &c.duration),
    ("{time}", "MICROSIP_TIME", |c| &c.time),
    ("{callid}", "MICROSIP_CALLID", |c| &c.callid),
    ("{direction}", "MICROSIP_DIRECTION", |c| &c.direction),
    ("%callerid%", "", |c| &c.callerid),
];

/// Splits a hook's command line into words without a shell: blanks separate words,
/// double quotes group (and may make an empty word: `""`), and inside quotes `\"`
/// and `\\` are the only escapes. Outside quotes a backslash is an ordinary
/// character. An unterminated quote runs to the end of the line.
pub(crate) fn split_command(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' => quoted = false,
                '\\' => match chars.peek() {
                    Some(&next) if next == '"' || next == '\\' => {
                        word.push(next);
                        chars.next();
                    }
                    _ => word.push('\\'),
                },
                _ => word.push(c),
            }
        } else if c == '"' {
            quoted = true;
            in_word = true;
        } else if c.is_whitespace() {
            if in_word {
                words.push(std::mem::take(&mut word));
                in_word = false;
            }
        } else {
            word.push(c);
            in_word = true;
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Whether `word` holds a placeholder.
fn has_placeholder(word: &str) -> bool {
    PLACEHOLDERS
        .iter()
        .any(|(token, _, _)| word.contains(token))
}

/// A value as it may go into an argument or the environment: without NULs.
fn clean(value: &str) -> String {
    value.replace('\0', "")
}

/// Replaces the placeholders in `word`, left to right, in one pass: inserted values
/// are not searched again.
fn substitute(word: &str, ctx: &HookContext) -> String {
    let mut out = String::with_capacity(word.len());
    let mut rest = word;
    while let Some(pos) = rest.find(['{', '%']) {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        match PLACEHOLDERS.iter().find(|(t, _, _)| tail.starts_with(t)) {
            Some((token, _, field)) => {
                out.push_str(&clean(field(ctx)));
                rest = &tail[token.len()..];
            }
            None => {
                // '{' and '%' are one byte each.
                out.push_str(&tail[..1]);
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The argument vector for `command` (program first) with `ctx` filled in: the
/// placeholders replaced, or the number appended when there is none. Empty when the
/// command has no words.
pub(crate) fn expand_command(command: &str, ctx: &HookContext) -> Vec<String> {
    let words = split_command(command);
    if words.is_empty() {
        return words;
    }
    let any = words.iter().any(|w| has_placeholder(w));
    let mut argv: Vec<String> = words.iter().map(|w| substitute(w, ctx)).collect();
    if !any && !ctx.number.is_empty() {
        argv.push(clean(&ctx.number));
    }
    argv
}

/// Whether `program` names a shell or command interpreter.
fn is_shell(program: &str) -> bool {
    let base = program.rsplit(['/', '\\']).next().unwrap_or(program);
    let base = base.to_ascii_lowercase();
    let base = base.strip_suffix(".exe").unwrap_or(&base);
    matches!(
        base,
        "sh" | "bash"
            | "dash"
            | "zsh"
            | "ksh"
            | "mksh"
            | "ash"
            | "busybox"
            | "fish"
            | "csh"
            | "tcsh"
            | "cmd"
            | "powershell"
            | "pwsh"
    )
}

/// Whether the command runs a shell with a placeholder inside script text (a word
/// that is more than just the placeholder), where a hostile value could run code.
fn shell_script_placeholder(command: &str) -> bool {
    let words = split_command(command);
    let Some((program, args)) = words.split_first() else {
        return false;
    };
    is_shell(program)
        && args
            .iter()
            .any(|w| has_placeholder(w) && !PLACEHOLDERS.iter().any(|(token, _, _)| w == token))
}

/// Where a hook's standard output and error go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HookOutput {
    /// Each line goes to the phone's log (info level, tagged with the hook's key),
    /// long lines cut, at most 16 KiB per stream and run.
    #[default]
    Log,
    /// Discarded (`/dev/null`).
    Null,
}

/// How one hook run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    /// The program exited by itself: its exit code (`None`: ended by a signal).
    Exited(Option<i32>),
    /// It outlived the time limit and was killed with its process group.
    Killed,
    /// It could not be started (missing program, permissions, ...): the reason.
    SpawnFailed(String),
    /// Not started: too many hooks were already running.
    Skipped,
}

struct Shared {
    commands: [Option<String>; 8],
    time_limit: Duration,
    output: HookOutput,
    max_running: usize,
    running: AtomicUsize,
}

/// Runs the `cmd*` hooks. Cheap to clone (clones share the count of running hooks).
#[derive(Clone)]
pub struct HookRunner {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for HookRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookRunner")
            .field("commands", &self.shared.commands)
            .field("time_limit", &self.shared.time_limit)
            .field("output", &self.shared.output)
            .field("max_running", &self.shared.max_running)
            .finish()
    }
}

impl HookRunner {
    /// A runner for the hooks of the ini (`Config::settings.hooks`), with the default
    /// time limit, output to the log. Hooks whose shell script text holds a
    /// placeholder are reported here, once.
    pub fn new(hooks: &Hooks) -> HookRunner {
        HookRunner::with_options(
            hooks,
            DEFAULT_TIME_LIMIT,
            HookOutput::Log,
            DEFAULT_MAX_RUNNING,
        )
    }

    /// A runner with an explicit time limit, output and cap on running hooks
    /// (`max_running` 0 is taken as 1).
    pub fn with_options(
        hooks: &Hooks,
        time_limit: Duration,
        output: HookOutput,
        max_running: usize,
    ) -> HookRunner {
        let commands = [
            &hooks.incoming_call,
            &hooks.call_ring,
            &hooks.outgoing_call,
            &hooks.call_answer,
            &hooks.call_answer_video,
            &hooks.call_start,
            &hooks.call_busy,
            &hooks.call_end,
        ]
        .map(|c| {
            c.as_deref()
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
        });
        for event in HookEvent::ALL {
            if let Some(command) = &commands[event.index()] {
                if shell_script_placeholder(command) {
                    warn!(
                        "{}: a placeholder inside a shell script lets a caller id run commands; \
                         pass it as its own argument or use \"$MICROSIP_...\" variables",
                        event.key()
                    );
                }
            }
        }
        HookRunner {
            shared: Arc::new(Shared {
                commands,
                time_limit,
                output,
                max_running: max_running.max(1),
                running: AtomicUsize::new(0),
            }),
        }
    }

    /// The command set for `event`, if any.
    pub fn command(&self, event: HookEvent) -> Option<&str> {
        self.shared.commands[event.index()].as_deref()
    }

    /// The time limit of a hook run.
    pub fn time_limit(&self) -> Duration {
        self.shared.time_limit
    }

    /// How many hook processes are running now.
    pub fn running(&self) -> usize {
        self.shared.running.load(Ordering::SeqCst)
    }

    /// The argument vector `event` would run with `ctx` (program first), or `None`
    /// when no hook is set for it.
    pub fn argv(&self, event: HookEvent, ctx: &HookContext) -> Option<Vec<String>> {
        let argv = expand_command(self.command(event)?, ctx);
        (!argv.is_empty()).then_some(argv)
    }

    /// Runs the hook for `event`, if one is set, and returns at once. The returned
    /// handle tells how the run ended; dropping it is fine. `None` when no hook is
    /// set or there is no tokio runtime to run it on (logged).
    pub fn fire(&self, event: HookEvent, ctx: &HookContext) -> Option<JoinHandle<HookOutcome>> {
        let argv = self.argv(event, ctx)?;
        let runtime = match tokio::runtime::Handle::try_current() {
            Ok(r) => r,
            Err(_) => {
                warn!("{}: not run: no runtime to run it on", event.key());
                return None;
            }
        };
        let env: Vec<(&'static str, String)> =
            std::iter::once(("MICROSIP_EVENT", event.key().to_owned()))
                .chain(
                    PLACEHOLDERS
                        .iter()
                        .filter(|(_, var, _)| !var.is_empty())
                        .map(|(_, var, field)| (*var, clean(field(ctx)))),
                )
                .collect();
        // Counted here, not in the task, so that the cap holds for hooks fired back
        // to back before any of them got to run.
        let before = self.shared.running.fetch_add(1, Ordering::SeqCst);
        let guard = RunningGuard(self.shared.clone());
        if before >= self.shared.max_running {
            warn!(
                "{}: not run: {} hooks are already running",
                event.key(),
                self.shared.max_running
            );
            return Some(runtime.spawn(async move {
                drop(guard);
                HookOutcome::Skipped
            }));
        }
        Some(runtime.spawn(run(guard, event, argv, env)))
    }
}

/// Counts a hook run as running until it is dropped, however the run ends.
struct RunningGuard(Arc<Shared>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

#[allow(unsafe_code)] // libc calls; see the SAFETY notes inside
async fn run(
    guard: RunningGuard,
    event: HookEvent,
    argv: Vec<String>,
    env: Vec<(&'static str, String)>,
) -> HookOutcome {
    let shared = &guard.0;
    let hook = event.key();
    let Some((program, args)) = argv.split_first() else {
        return HookOutcome::SpawnFailed("empty command".into());
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .envs(env)
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    match shared.output {
        HookOutput::Log => command.stdout(Stdio::piped()).stderr(Stdio::piped()),
        HookOutput::Null => command.stdout(Stdio::null()).stderr(Stdio::null()),
    };
    let started = Instant::now();
    // A limit too large to add is as good as none (a year).
    let deadline = started
        .checked_add(shared.time_limit)
        .unwrap_or_else(|| started + Duration::from_secs(365 * 86_400));
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            warn!("{hook}: cannot run {program:?}: {e}");
            return HookOutcome::SpawnFailed(e.to_string());
        }
    };
    debug!("{hook}: started {program:?} (pid {:?})", child.id());
    if let Some(out) = child.stdout.take() {
        tokio::spawn(copy_to_log(out, hook, "stdout", deadline));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(copy_to_log(err, hook, "stderr", deadline));
    }
    let outcome = tokio::select! {
        status = child.wait() => match status {
            Ok(s) => HookOutcome::Exited(s.code()),
            Err(e) => {
                warn!("{hook}: cannot wait for {program:?}: {e}");
                HookOutcome::Exited(None)
            }
        },
        _ = tokio::time::sleep_until(deadline) => HookOutcome::Killed,
    };
    if outcome == HookOutcome::Killed {
        if let Some(pid) = child.id() {
            // The child is not reaped yet, so its pid (= its process group id) cannot
            // have been reused.
            if let Ok(pgid) = i32::try_from(pid) {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe {
                    libc::kill(-pgid, libc::SIGKILL);
                }
            }
        }
        let _ = child.start_kill();
        let _ = child.wait().await;
        warn!(
            "{hook}: {program:?} still running after {:?}: killed",
            shared.time_limit
        );
    } else {
        debug!(
            "{hook}: {program:?} ended ({outcome:?}) after {:?}",
            started.elapsed()
        );
    }
    outcome
}

/// Copies a hook's output into the log line by line until the pipe closes or the
/// deadline (plus a moment) passes.
async fn copy_to_log<R: AsyncRead + Unpin>(
    mut reader: R,
    hook: &'static str,
    stream: &'static str,
    deadline: Instant,
) {
    let work = async {
        let mut buf = [0u8; 4096];
        let mut line: Vec<u8> = Vec::new();
        let mut logged = 0usize;
        let emit = |line: &mut Vec<u8>, logged: &mut usize| {
            if *logged < MAX_LOG_BYTES {
                *logged += line.len() + 1;
                info!(
                    "{hook} {stream}: {}",
                    String::from_utf8_lossy(line).trim_end()
                );
            }
            line.clear();
        };
        loop {
            let n = match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            for &b in &buf[..n] {
                if b == b'\n' {
                    emit(&mut line, &mut logged);
                } else if line.len() < MAX_LOG_LINE {
                    line.push(b);
                }
            }
        }
        if !line.is_empty() {
            emit(&mut line, &mut logged);
        }
    };
    let until = deadline
        .checked_add(Duration::from_secs(1))
        .unwrap_or(deadline);
    let _ = tokio::time::timeout_at(until, work).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitting() {
        assert_eq!(split_command("  a  b\tc "), ["a", "b", "c"]);
        assert_eq!(split_command(r#""My Dir/x y" z"#), ["My Dir/x y", "z"]);
        assert_eq!(split_command(r#"a"b c"d"#), ["ab cd"]);
        assert_eq!(split_command(r#""" x"#), ["", "x"]);
        assert_eq!(split_command(r#""a\"b\\c\d""#), [r#"a"b\c\d"#]);
        assert_eq!(split_command(r"C:\x\y.exe \n"), [r"C:\x\y.exe", r"\n"]);
        assert_eq!(split_command(r#""unterminated  x"#), ["unterminated  x"]);
        assert!(split_command("   ").is_empty());
    }

    #[test]
    fn substitution_is_one_pass() {
        let ctx = HookContext {
            number: "{name}".into(),
            name: "%callerid%".into(),
            callerid: "a\0b".into(),
            ..Default::default()
        };
        assert_eq!(
            expand_command("x n={number} m={name} c=%callerid% {nope} 100%", &ctx),
            ["x", "n={name}", "m=%callerid%", "c=ab", "{nope}", "100%"]
        );
    }

    #[test]
    fn number_appended_only_without_placeholders() {
        let ctx = HookContext {
            number: "1001".into(),
            ..Default::default()
        };
        assert_eq!(expand_command("notify a", &ctx), ["notify", "a", "1001"]);
        assert_eq!(expand_command("notify {user}", &ctx), ["notify", ""]);
        assert_eq!(
            expand_command("notify", &HookContext::default()),
            ["notify"]
        );
    }

    #[test]
    fn shells_are_recognised() {
        assert!(is_shell("sh"));
        assert!(is_shell("/bin/bash"));
        assert!(is_shell(r"C:\Windows\System32\cmd.exe"));
        assert!(!is_shell("/usr/local/bin/hook"));
        assert!(shell_script_placeholder(r#"sh -c "echo {callerid}""#));
        assert!(shell_script_placeholder("bash -c \"echo {number}\""));
        assert!(!shell_script_placeholder("sh /x/hook.sh {callerid}"));
        assert!(!shell_script_placeholder("/x/hook {callerid}"));
    }

    #[test]
    fn end_codes() {
        assert_eq!(HookEvent::for_end(486), HookEvent::CallBusy);
        assert_eq!(HookEvent::for_end(603), HookEvent::CallBusy);
        assert_eq!(HookEvent::for_end(600), HookEvent::CallBusy);
        assert_eq!(HookEvent::for_end(200), HookEvent::CallEnd);
        assert_eq!(HookEvent::for_end(487), HookEvent::CallEnd);
        for e in HookEvent::ALL {
            assert_eq!(HookEvent::from_key(e.key()), Some(e));
        }
    }
}
