//! What integrators get from each call event, off the engine's path: the `cmd*`
//! hooks, the `[Calls]` history and `[Dialed]` list in the ini, and the CSV call
//! log. Fed by an unbounded observer channel, so no event is ever skipped, and run
//! on a thread of its own (with its own small runtime for the hook children), so
//! neither a slow disk (the ini is fsynced on every save) nor starting a hook
//! process can hold up SIP, the control socket or media.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use microsip_config::{Config, IniDocument, IniFile};
use microsip_engine::{EventKind, Observed};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::calllog::{CallLog, CallRecord};
use crate::history::{self, CallType, HistoryEntry};
use crate::hooks::{HookContext, HookEvent, HookRunner};

/// What we remember of a call between its first and last event.
struct CallInfo {
    incoming: bool,
    account: u32,
    remote: String,
    number: String,
    name: String,
    start: SystemTime,
    answered: Option<SystemTime>,
}

struct Integrations {
    config: Config,
    hooks: HookRunner,
    log: Option<Arc<CallLog>>,
    calls: HashMap<u64, CallInfo>,
    /// File writes (history, dialed list, CSV rows), in order, on the writer thread,
    /// so a hook never waits for the previous call's fsync.
    writes: std::sync::mpsc::Sender<FileWrite>,
}

/// A change to the ini document (the history, the dialed list).
type IniChange = Box<dyn FnOnce(&mut IniDocument) -> Result<(), String> + Send>;

/// One job for the writer thread.
enum FileWrite {
    /// Change the ini (saved with the other changes queued with it).
    Ini(IniChange),
    /// Any other write (a CSV row).
    Other(Box<dyn FnOnce() + Send>),
    /// Say when everything queued before is on disk.
    Written(oneshot::Sender<()>),
}

/// Runs file writes until every sender is gone. Whatever is queued when the thread
/// wakes is done as one batch: the ini is read and saved once for all the changes
/// in it (a burst of ended calls costs one rewrite, not one each), other writes run
/// in order, and only then are the waiters told.
fn spawn_writer(
    ini: Arc<Mutex<IniFile>>,
) -> std::io::Result<(
    std::sync::mpsc::Sender<FileWrite>,
    std::thread::JoinHandle<()>,
)> {
    let (tx, rx) = std::sync::mpsc::channel::<FileWrite>();
    let thread = std::thread::Builder::new()
        .name("integrations-files".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                batch.extend(rx.try_iter());
                write_batch(&ini, batch);
            }
        })?;
    Ok((tx, thread))
}

/// One batch of the writer thread (see [`spawn_writer`]).
fn write_batch(ini: &Mutex<IniFile>, batch: Vec<FileWrite>) {
    let mut changes = Vec::new();
    let mut waiters = Vec::new();
    for job in batch {
        match job {
            FileWrite::Ini(change) => changes.push(change),
            FileWrite::Other(write) => write(),
            FileWrite::Written(tx) => waiters.push(tx),
        }
    }
    if !changes.is_empty() {
        save_changes(ini, changes);
    }
    for w in waiters {
        let _ = w.send(());
    }
}

/// Re-reads the ini under the lock every writer of it shares (so no one's change is
/// lost), applies `changes` in order and saves it atomically, once.
fn save_changes(ini: &Mutex<IniFile>, changes: Vec<IniChange>) {
    let Ok(mut file) = ini.lock() else {
        warn!("history not saved: the ini lock is poisoned");
        return;
    };
    if let Err(e) = file.reload() {
        warn!("history not saved: {e}");
        return;
    }
    for change in changes {
        if let Err(e) = change(file.doc_mut()) {
            warn!("history not saved: {e}");
        }
    }
    if let Err(e) = file.save() {
        warn!("history not saved: {e}");
    }
}

/// How long the phone waits at exit for the last history/log writes and for hooks
/// that are still running.
const EXIT_GRACE: Duration = Duration::from_secs(3);

/// The integrations thread: feed it events through the sender [`spawn`] returns
/// (given to the engine as an observer); at exit, once every sender is gone,
/// [`IntegrationsThread::finish`] waits for it to write what is left.
pub struct IntegrationsThread {
    thread: Option<std::thread::JoinHandle<()>>,
}

impl IntegrationsThread {
    /// Waits (at most `EXIT_GRACE`, 3 s, plus a moment) for the thread to drain its
    /// queue and for running hooks to end. Call after the engine has stopped.
    pub fn finish(mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        let deadline = std::time::Instant::now() + EXIT_GRACE + Duration::from_millis(500);
        while !thread.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if thread.is_finished() {
            let _ = thread.join();
        } else {
            warn!("integrations still busy at exit; leaving them");
        }
    }
}

/// Starts the integrations thread; send it every engine event.
pub fn spawn(
    config: Config,
    ini: Arc<Mutex<IniFile>>,
    log: Option<PathBuf>,
) -> std::io::Result<(mpsc::UnboundedSender<Observed>, IntegrationsThread)> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Observed>();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (writes, writer) = spawn_writer(ini.clone())?;
    let thread = std::thread::Builder::new()
        .name("integrations".into())
        .spawn(move || {
            let mut me = Integrations {
                hooks: HookRunner::new(&config.settings.hooks),
                config,
                log: log.map(|path| Arc::new(CallLog::new(path))),
                calls: HashMap::new(),
                writes,
            };
            runtime.block_on(async move {
                while let Some(observed) = rx.recv().await {
                    me.on_event(observed);
                }
                // The phone is exiting: give hooks fired by the last events (a
                // cmdCallEnd, say) a moment to finish before the runtime goes.
                let deadline = tokio::time::Instant::now() + EXIT_GRACE;
                while me.hooks.running() > 0 && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
            // `me` (and with it the last write sender) is gone: the writer ends
            // once the queue is empty.
            let _ = writer.join();
        })?;
    Ok((
        tx,
        IntegrationsThread {
            thread: Some(thread),
        },
    ))
}

/// The `[Calls]` type of a finished call: 0 out, 1 answered here, 3 cancelled by
/// the caller because it was answered elsewhere, else 2 missed.
fn history_type(info: &CallInfo, elsewhere: bool) -> CallType {
    match (info.incoming, info.answered.is_some(), elsewhere) {
        (false, _, _) => CallType::Outgoing,
        (true, true, _) => CallType::Incoming,
        (true, false, true) => CallType::AnsweredElsewhere,
        (true, false, false) => CallType::Missed,
    }
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Integrations {
    fn context(&self, call: u64, info: &CallInfo, duration: u64) -> HookContext {
        let account = self.config.account(info.account);
        HookContext {
            number: info.number.clone(),
            callerid: if info.name.is_empty() {
                info.number.clone()
            } else {
                format!("{} <{}>", info.name, info.number)
            },
            name: info.name.clone(),
            user: account.and_then(|a| a.username.clone()).unwrap_or_default(),
            domain: account.map(|a| a.domain.clone()).unwrap_or_default(),
            server: account.and_then(|a| a.server.clone()).unwrap_or_default(),
            duration: duration.to_string(),
            time: unix(SystemTime::now()).to_string(),
            callid: call.to_string(),
            direction: if info.incoming { "in" } else { "out" }.to_string(),
        }
    }

    fn fire(&self, event: HookEvent, call: u64, duration: u64) {
        if let Some(info) = self.calls.get(&call) {
            let ctx = self.context(call, info, duration);
            let _ = self.hooks.fire(event, &ctx);
        }
    }

    /// Fires the hooks and keeps the records of one event; `written` (for a call's
    /// end) is told once its history entry and CSV row are on disk.
    fn on_event(&mut self, observed: Observed) {
        let Observed { event, written } = observed;
        match event.kind {
            EventKind::CallOutgoing {
                call,
                account,
                remote,
                number,
            } => {
                self.calls.insert(
                    call,
                    CallInfo {
                        incoming: false,
                        account,
                        remote,
                        number: number.clone(),
                        name: String::new(),
                        start: SystemTime::now(),
                        answered: None,
                    },
                );
                self.with_ini(move |doc| {
                    history::remember_dialed(doc, &number).map_err(|e| e.to_string())
                });
                self.fire(HookEvent::OutgoingCall, call, 0);
            }
            EventKind::CallIncoming {
                call,
                account,
                remote,
                number,
                name,
                ..
            } => {
                self.calls.insert(
                    call,
                    CallInfo {
                        incoming: true,
                        account,
                        remote,
                        number,
                        name: name.unwrap_or_default(),
                        start: SystemTime::now(),
                        answered: None,
                    },
                );
                self.fire(HookEvent::IncomingCall, call, 0);
            }
            EventKind::CallRinging { call }
                if self.calls.get(&call).is_some_and(|c| c.incoming) =>
            {
                self.fire(HookEvent::CallRing, call, 0);
            }
            EventKind::CallAnswered { call, .. } => {
                let incoming = match self.calls.get_mut(&call) {
                    Some(info) => {
                        info.answered = Some(SystemTime::now());
                        info.incoming
                    }
                    None => false,
                };
                if incoming {
                    self.fire(HookEvent::CallAnswer, call, 0);
                }
            }
            EventKind::CallConfirmed { call } => self.fire(HookEvent::CallStart, call, 0),
            EventKind::CallEnded {
                call,
                code,
                reason,
                duration,
                elsewhere,
                ..
            } => {
                self.fire(HookEvent::for_end(code), call, duration);
                if let Some(info) = self.calls.remove(&call) {
                    let kind = history_type(&info, elsewhere);
                    self.record(call, &info, kind, code, &reason, duration);
                }
            }
            _ => {}
        }
        if let Some(written) = written {
            // Queued behind this event's writes: sent once they are done.
            self.send(FileWrite::Written(written));
        }
    }

    /// History entry in the ini and a CSV row, written as the call ends.
    fn record(
        &self,
        call: u64,
        info: &CallInfo,
        kind: CallType,
        code: u16,
        reason: &str,
        duration: u64,
    ) {
        let entry = HistoryEntry {
            number: info.number.clone(),
            name: info.name.clone(),
            kind,
            time: unix(info.start),
            duration,
            info: String::new(),
        };
        self.with_ini(move |doc| {
            history::append(doc, &entry)
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        if let Some(log) = &self.log {
            let account = self
                .config
                .account(info.account)
                .map(|a| format!("{}@{}", a.username.clone().unwrap_or_default(), a.domain))
                .unwrap_or_default();
            let record = CallRecord {
                start: info.start,
                direction: if info.incoming { "in" } else { "out" }.to_string(),
                account,
                remote_uri: info.remote.clone(),
                remote_number: info.number.clone(),
                display_name: info.name.clone(),
                answered: info.answered,
                end: SystemTime::now(),
                duration: Duration::from_secs(duration),
                end_code: Some(code),
                end_reason: reason.to_string(),
                call_id: call.to_string(),
            };
            let log = log.clone();
            self.queue(move || {
                if let Err(e) = log.append(&record) {
                    warn!("call log: {e}");
                }
            });
        }
    }

    fn queue(&self, write: impl FnOnce() + Send + 'static) {
        self.send(FileWrite::Other(Box::new(write)));
    }

    fn send(&self, job: FileWrite) {
        if self.writes.send(job).is_err() {
            warn!("history/call log not written: the writer thread is gone");
        }
    }

    /// Changes the ini under the lock every writer of it shares, re-reading it
    /// first so no one's change is lost, and saves it atomically.
    /// Queued on the writer thread like every other file write.
    fn with_ini(
        &self,
        change: impl FnOnce(&mut IniDocument) -> Result<(), String> + Send + 'static,
    ) {
        self.send(FileWrite::Ini(Box::new(change)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(incoming: bool, answered: bool) -> CallInfo {
        CallInfo {
            incoming,
            account: 1,
            remote: "sip:1002@127.0.0.1".into(),
            number: "1002".into(),
            name: String::new(),
            start: SystemTime::now(),
            answered: answered.then(SystemTime::now),
        }
    }

    #[test]
    fn history_types() {
        assert_eq!(history_type(&info(false, true), false), CallType::Outgoing);
        assert_eq!(history_type(&info(false, false), true), CallType::Outgoing);
        assert_eq!(history_type(&info(true, true), false), CallType::Incoming);
        assert_eq!(history_type(&info(true, true), true), CallType::Incoming);
        assert_eq!(history_type(&info(true, false), false), CallType::Missed);
        assert_eq!(
            history_type(&info(true, false), true),
            CallType::AnsweredElsewhere
        );
    }
}
