//! The engine task: one loop that owns the accounts and their registrations, applies
//! each command in order, answers only after the change took effect, and publishes
//! every change as an [`Event`]. Faces talk to it through an [`EngineHandle`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use microsip_config::{Account, AutoAnswer, Config, DtmfMethod, Transport};
use microsip_media::{DtmfMode, Levels, MediaConfig, MediaEngine, MediaEvent};
use microsip_sip::{
    Outcome, Registration, RegistrationConfig, RegistrationEvent, SipInbox, SipStack, SipTransport,
    StackConfig,
};
use serde_json::json;
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{info, warn};

use crate::calls::{Call, CallDone};
use crate::command::{CallId, Command, LevelChange, LevelKind, Secret, WindowState};
use crate::event::{AccountView, Event, EventKind, Snapshot};
use crate::messages::{
    ArchiveQueue, MessageArchive, MessageDone, MessageStored, Records, SharedArchive,
};
use crate::reply::{fail, ok, ok_with, ErrorCode, Reply};

/// How long `exit` waits for un-REGISTERs before leaving anyway.
const EXIT_GRACE: Duration = Duration::from_secs(4);
/// Events kept for slow subscribers before they are told they lagged.
const EVENT_BACKLOG: usize = 1024;

/// Where the engine writes settings it changes (the ini, in the real phone).
pub trait ConfigStore: Send {
    /// Sets one key and saves atomically; the error says what failed.
    fn set(&mut self, section: &str, key: &str, value: &str) -> Result<(), String>;
}

/// A store that keeps nothing (tests, or a read-only ini).
pub struct NoStore;

impl ConfigStore for NoStore {
    fn set(&mut self, _section: &str, _key: &str, _value: &str) -> Result<(), String> {
        Err("settings are read-only in this run".into())
    }
}

/// Everything the engine starts from.
pub struct EngineSetup {
    pub config: Config,
    pub store: Box<dyn ConfigStore>,
    /// SIP trace file (`--debug`).
    pub trace: Option<PathBuf>,
    /// `--call TARGET`, or `microsip dial TARGET [ACCOUNT]` with no phone running:
    /// dial once the account the call goes out from (that one, else the active one)
    /// registered.
    pub call_on_start: Option<(String, Option<u32>)>,
    /// Where text messages are kept.
    pub archive: Box<dyn MessageArchive>,
    /// The call history and the address book.
    pub records: Box<dyn Records>,
    /// Consumers that must see every event (history, hooks, call log): unbounded,
    /// unlike the `events` stream, which drops what a slow client cannot take.
    pub observers: Vec<mpsc::UnboundedSender<Event>>,
}

pub(crate) enum Request {
    Command(Command, oneshot::Sender<Reply>),
    Subscribe(oneshot::Sender<(Snapshot, broadcast::Receiver<Event>)>),
    /// A registration command finished in the background; publish its state.
    Settled,
    /// Call work done in the background (re-INVITE answered, timers...).
    CallDone(CallDone),
    /// Something the media thread saw (a DTMF digit...).
    Media(MediaEvent),
    /// A MESSAGE we sent got its answer.
    MessageDone(MessageDone),
    /// A MESSAGE we received is stored (or could not be).
    MessageStored(Box<MessageStored>),
    /// A subscription or publication reported (NOTIFY body, state change).
    Presence(microsip_sip::SubscriptionEvent),
}

/// A cheap, cloneable way for faces to reach the engine.
#[derive(Clone)]
pub struct EngineHandle {
    inbox: mpsc::UnboundedSender<Request>,
}

impl EngineHandle {
    /// Applies one command; the reply comes after the change took effect.
    pub async fn execute(&self, command: Command) -> Reply {
        let (tx, rx) = oneshot::channel();
        if self.inbox.send(Request::Command(command, tx)).is_err() {
            return fail(ErrorCode::Stopping, "the phone is stopping");
        }
        rx.await
            .unwrap_or_else(|_| fail(ErrorCode::Stopping, "the phone is stopping"))
    }

    /// A snapshot of where things stand and the live events after it, with no gap.
    pub async fn subscribe(&self) -> Option<(Snapshot, broadcast::Receiver<Event>)> {
        let (tx, rx) = oneshot::channel();
        self.inbox.send(Request::Subscribe(tx)).ok()?;
        rx.await.ok()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum RegState {
    /// The account cannot work (no domain...).
    Inactive(String),
    /// No `server`: nothing to register (call-by-IP account).
    Local,
    Registering,
    Registered {
        expires: u32,
    },
    Failed {
        code: u16,
        reason: String,
    },
    Unregistered,
}

pub(crate) struct AccountSlot {
    pub(crate) account: Account,
    registration: Option<Registration>,
    state: RegState,
}

/// The engine itself; lives inside its task.
pub(crate) struct Engine {
    pub(crate) config: Config,
    pub(crate) store: Box<dyn ConfigStore>,
    pub(crate) sip: SipStack,
    pub(crate) media: MediaEngine,
    /// The address SIP and RTP are bound to.
    pub(crate) bind_ip: IpAddr,
    pub(crate) accounts: BTreeMap<u32, AccountSlot>,
    pub(crate) active_account: u32,
    pub(crate) calls: BTreeMap<CallId, Call>,
    /// When the last call ended (numeric STATUS says 4 for a while).
    pub(crate) last_ended: Option<Instant>,
    events: broadcast::Sender<Event>,
    seq: u64,
    reg_events: mpsc::UnboundedSender<RegistrationEvent>,
    call_on_start: Option<(String, Option<u32>)>,
    observers: Vec<mpsc::UnboundedSender<Event>>,
    pub(crate) archive: SharedArchive,
    /// Writes to `archive`, in order, off the engine.
    pub(crate) archive_queue: ArchiveQueue,
    pub(crate) records: Box<dyn Records>,
    /// Speaker/microphone levels and mutes, for every call.
    pub(crate) levels: Levels,
    /// The engine's own inbox, for background work to report back.
    pub(crate) inbox: mpsc::UnboundedSender<Request>,
    /// Presence and MWI subscriptions, our publication.
    pub(crate) presence: crate::presence::PresenceState,
    /// Whether an incoming call rings, and the ring tone playing for it.
    pub(crate) ringing: bool,
    pub(crate) ringer: Option<microsip_media::ring::Ringer>,
}

/// Starts the SIP endpoint and the engine task. Returns the handle faces use and a
/// join handle that completes when the phone has exited.
pub async fn start(
    setup: EngineSetup,
) -> Result<(EngineHandle, tokio::task::JoinHandle<()>), String> {
    let stack_config = stack_config(&setup.config, setup.trace.clone());
    let bind_ip = stack_config.bind_ip;
    let (sip, signals) = SipStack::start(stack_config)
        .await
        .map_err(|e| e.to_string())?;
    let (events, _) = broadcast::channel(EVENT_BACKLOG);
    let (reg_tx, reg_rx) = mpsc::unbounded_channel();
    let (inbox, requests) = mpsc::unbounded_channel();
    let media_inbox = inbox.clone();
    let media = MediaEngine::start_with_events(
        MediaConfig {
            bind_ip,
            rtp_port_min: setup.config.settings.rtp_port_min,
            rtp_port_max: setup.config.settings.rtp_port_max,
            dtmf: match setup.config.settings.dtmf_method {
                DtmfMethod::Auto => DtmfMode::Auto,
                DtmfMethod::InBand => DtmfMode::Inband,
                DtmfMethod::Rfc4733 => DtmfMode::Rfc4733,
                DtmfMethod::SipInfo => DtmfMode::SipInfo,
            },
        },
        Box::new(move |event| {
            let _ = media_inbox.send(Request::Media(event));
        }),
    )
    .map_err(|e| format!("cannot start media: {e}"))?;

    let archive: SharedArchive = Arc::new(Mutex::new(setup.archive));
    let mut engine = Engine {
        active_account: setup.config.settings.account_id,
        config: setup.config,
        store: setup.store,
        sip,
        media,
        bind_ip,
        accounts: BTreeMap::new(),
        calls: BTreeMap::new(),
        last_ended: None,
        events,
        seq: 0,
        reg_events: reg_tx,
        call_on_start: setup.call_on_start,
        observers: setup.observers,
        archive: archive.clone(),
        archive_queue: ArchiveQueue::start(archive, inbox.clone()),
        records: setup.records,
        levels: Levels::default(),
        presence: crate::presence::PresenceState::new(inbox.clone()),
        inbox: inbox.clone(),
        ringing: false,
        ringer: None,
    };
    engine.levels.speaker = engine.config.settings.volume_output.min(100);
    engine.levels.microphone = engine.config.settings.volume_input.min(100);
    if let Err(e) = engine.media.set_levels(engine.levels) {
        warn!("audio levels not applied: {e}");
    }
    engine.load_accounts();
    if let Some((_, account)) = &engine.call_on_start {
        // The call goes out from the account named, else the active one: wait for
        // that one's registration, if it registers at all.
        let from = account.unwrap_or(engine.active_account);
        let waits = engine
            .accounts
            .get(&from)
            .is_some_and(|s| s.registration.is_some());
        if !waits {
            // Nothing to wait for: dial now.
            engine.dial_on_start();
        }
    }
    let handle = EngineHandle { inbox };
    let join = tokio::spawn(engine.run(requests, reg_rx, signals));
    Ok((handle, join))
}

/// Bind address: the local address that reaches the first registrar (loopback for a
/// loopback PBX), else every interface.
fn stack_config(config: &Config, trace: Option<PathBuf>) -> StackConfig {
    let first_server_ip = config
        .accounts
        .iter()
        .filter(|a| a.active)
        .filter_map(|a| a.proxy.first().cloned().or_else(|| a.server.clone()))
        .find_map(|s| host_ip(&s));
    let local_only = config.accounts.iter().all(|a| a.server.is_none());
    let bind_ip = match first_server_ip {
        Some(ip) => microsip_sip::local_ip_towards(ip),
        None if local_only => config
            .accounts
            .iter()
            .find_map(|a| host_ip(&a.domain))
            .unwrap_or(IpAddr::from([127, 0, 0, 1])),
        None => IpAddr::from([0, 0, 0, 0]),
    };
    let tcp = config
        .accounts
        .iter()
        .any(|a| matches!(a.transport, Transport::Tcp | Transport::UdpTcp));
    StackConfig {
        bind_ip,
        port: config.settings.source_port,
        tcp: tcp || config.accounts.is_empty(),
        user_agent: config.settings.user_agent.clone(),
        callid_domain: "microsip-rs".into(),
        trace,
        rport: config.settings.rport,
    }
}

/// The IP literal in `host[:port]` (or `[v6]:port`), if it is one.
pub(crate) fn host_ip(host_port: &str) -> Option<IpAddr> {
    let s = host_port.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    s.rsplit_once(':').and_then(|(h, _)| h.parse().ok())
}

/// `rport`: the `[Settings]` key (RFC 3581 in our Via; 0 leaves it out).
fn registration_config(account: &Account, rport: bool) -> Option<RegistrationConfig> {
    let server = account.server.clone().filter(|s| !s.trim().is_empty())?;
    Some(RegistrationConfig {
        account: account.number,
        server,
        proxy: account.proxy.first().cloned(),
        domain: account.domain.clone(),
        username: account.username.clone().unwrap_or_default(),
        auth_id: account.auth_id.clone(),
        password: account.password.clone().unwrap_or_default(),
        display_name: account.display_name.clone(),
        transport: match account.transport {
            Transport::Tcp => SipTransport::Tcp,
            _ => SipTransport::Udp,
        },
        expires: account.register_refresh,
        keep_alive: account.keep_alive,
        public_addr: account.public_addr.clone(),
        allow_rewrite: account.allow_rewrite,
        rport,
    })
}

impl Engine {
    fn load_accounts(&mut self) {
        for account in self.config.accounts.clone() {
            let state = if !account.active {
                RegState::Inactive(
                    account
                        .inactive_reason
                        .clone()
                        .unwrap_or_else(|| "account is not usable".into()),
                )
            } else if account
                .server
                .as_deref()
                .is_none_or(|s| s.trim().is_empty())
            {
                RegState::Local
            } else {
                RegState::Registering
            };
            let registration = match (
                &state,
                registration_config(&account, self.config.settings.rport),
            ) {
                (RegState::Registering, Some(rc)) => {
                    if matches!(account.transport, Transport::Tls) {
                        warn!(
                            "account {}: TLS is not supported yet; registering over UDP",
                            account.number
                        );
                    }
                    Some(Registration::start(&self.sip, rc, self.reg_events.clone()))
                }
                _ => None,
            };
            self.accounts.insert(
                account.number,
                AccountSlot {
                    account,
                    registration,
                    state,
                },
            );
        }
    }

    async fn run(
        mut self,
        mut requests: mpsc::UnboundedReceiver<Request>,
        mut reg_events: mpsc::UnboundedReceiver<RegistrationEvent>,
        mut signals: SipInbox,
    ) {
        loop {
            tokio::select! {
                Some(request) = requests.recv() => match request {
                    Request::Command(Command::Exit, reply) => {
                        self.exit(&mut signals).await;
                        let _ = reply.send(ok("exiting"));
                        break;
                    }
                    Request::Command(command, reply) => self.apply(command, reply),
                    Request::Subscribe(reply) => {
                        let _ = reply.send((self.snapshot(), self.events.subscribe()));
                    }
                    Request::Settled => {}
                    Request::CallDone(done) => self.on_call_done(done),
                    Request::Media(event) => self.on_media_event(event),
                    Request::MessageDone(done) => self.on_message_done(done),
                    Request::MessageStored(stored) => self.on_message_stored(*stored),
                    Request::Presence(event) => self.on_presence(event),
                },
                Some(event) = reg_events.recv() => self.on_registration(event),
                Some(signal) = signals.calls.recv() => self.on_signal(signal),
                Some(message) = signals.messages.recv() => self.on_message(message),
                else => break,
            }
            self.update_ringer();
        }
        self.ringer = None;
        self.sip.shutdown();
    }

    fn dial_on_start(&mut self) {
        if let Some((target, account)) = self.call_on_start.take() {
            match self.dial(&target, account, true, false, None) {
                Ok(a) => info!("--call {target}: call {}", a.text),
                Err(f) => warn!("--call {target}: {}", f.message),
            }
        }
    }

    pub(crate) fn publish(&mut self, kind: EventKind) {
        self.seq += 1;
        let account = if kind.needs_account() {
            kind.call()
                .and_then(|id| self.calls.get(&id))
                .map(|c| c.account)
        } else {
            None
        };
        let event = Event {
            seq: self.seq,
            time: microsip_sip::time::rfc3339(SystemTime::now()),
            account,
            kind,
        };
        self.observers.retain(|o| o.send(event.clone()).is_ok());
        // No subscriber is fine.
        let _ = self.events.send(event);
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            kind: "snapshot",
            seq: self.seq,
            time: microsip_sip::time::rfc3339(SystemTime::now()),
            accounts: self.account_views(),
            calls: self.call_views(),
        }
    }

    pub(crate) fn account_views(&self) -> Vec<AccountView> {
        self.accounts
            .values()
            .map(|slot| {
                let a = &slot.account;
                let (state, code, reason, expires) = match &slot.state {
                    RegState::Inactive(r) => ("inactive", None, Some(r.clone()), None),
                    RegState::Local => ("local", None, None, None),
                    RegState::Registering => ("registering", None, None, None),
                    RegState::Registered { expires } => {
                        ("registered", Some(200), None, Some(*expires))
                    }
                    RegState::Failed { code, reason } => {
                        ("failed", Some(*code), Some(reason.clone()), None)
                    }
                    RegState::Unregistered => ("unregistered", None, None, None),
                };
                AccountView {
                    account: a.number,
                    state,
                    aor: format!(
                        "sip:{}@{}",
                        a.username.clone().unwrap_or_default(),
                        a.domain
                    ),
                    code,
                    reason,
                    expires,
                    active: a.number == self.active_account,
                    mwi: self.presence.mwi(a.number),
                }
            })
            .collect()
    }

    /// Whether `account` is registered now.
    pub(crate) fn is_registered(&self, account: u32) -> bool {
        self.accounts
            .get(&account)
            .is_some_and(|s| matches!(s.state, RegState::Registered { .. }))
    }

    fn on_registration(&mut self, event: RegistrationEvent) {
        let (number, state, kind) = match event {
            RegistrationEvent::Registered {
                account,
                code,
                reason,
                expires,
                contact,
            } => (
                account,
                RegState::Registered { expires },
                EventKind::AccountRegistered {
                    account,
                    code,
                    reason,
                    expires,
                    contact,
                },
            ),
            RegistrationEvent::Failed {
                account,
                code,
                reason,
                retry_in,
            } => (
                account,
                RegState::Failed {
                    code,
                    reason: reason.clone(),
                },
                EventKind::AccountFailed {
                    account,
                    code,
                    reason,
                    retry_in,
                },
            ),
            RegistrationEvent::Unregistered { account } => (
                account,
                RegState::Unregistered,
                EventKind::AccountUnregistered { account },
            ),
        };
        if let Some(slot) = self.accounts.get_mut(&number) {
            slot.state = state;
        }
        let registered = matches!(kind, EventKind::AccountRegistered { .. });
        let unregistered = matches!(kind, EventKind::AccountUnregistered { .. });
        self.publish(kind);
        if registered || unregistered {
            self.presence_sync(number);
        }
        let awaited = self
            .call_on_start
            .as_ref()
            .is_some_and(|(_, account)| account.unwrap_or(self.active_account) == number);
        if registered && awaited {
            self.dial_on_start();
        }
    }

    /// Applies one command. Registration commands finish in a background task so the
    /// engine keeps serving; their reply still comes only after the outcome.
    fn apply(&mut self, command: Command, reply: oneshot::Sender<Reply>) {
        let answer = match command {
            Command::Status { form } => self.status(form),
            Command::Dial {
                target,
                account,
                hold_active,
                numeric,
            } => self.dial(&target, account, hold_active, numeric, None),
            Command::Answer { call } => self.answer(call),
            Command::Reject { call, code } => self.reject(call, code),
            Command::Hangup { call } => return self.hangup(call, reply),
            Command::HangupAll => return self.hangup_many(false, reply),
            Command::HangupCalling => return self.hangup_many(true, reply),
            Command::Hold { call, on } => return self.hold(call, on, reply),
            Command::Transfer { target, call } => return self.transfer(&target, call, reply),
            Command::ActiveCall => self.active_remote(),
            Command::Dtmf { digits, call } => self.dtmf(&digits, call),
            Command::Message { target, text } => return self.send_text(&target, &text, reply),
            Command::Messages { contact } => self.list_messages(contact.as_deref()),
            Command::History { missed, limit } => self.list_history(missed, limit),
            Command::Contacts { action } => self.contacts(action),
            Command::Record { call, on } => self.record(call, on),
            Command::Play { file, call, at_end } => self.play(file, call, at_end),
            Command::Conference { action } => self.conference(action),
            Command::Mute { on } => self.set_mute(false, on),
            Command::SpeakerMute { on } => self.set_mute(true, on),
            Command::AutoAnswer { on } => self.set_auto_answer(on),
            Command::Level { kind, change } => self.set_level(kind, change),
            Command::Calls => self.list_calls(),
            Command::Window { state } => ok(match state {
                WindowState::Normal => "no window: running headless",
                WindowState::Minimized => "no window: running headless (minimized)",
                WindowState::Hidden => "no window: running headless (hidden)",
            }),
            Command::Register { account } => {
                return self.register(account, true, reply);
            }
            Command::Unregister { account } => {
                return self.register(account, false, reply);
            }
            Command::Account { number, password } => self.account(number, password),
            Command::Events { .. } => fail(
                ErrorCode::BadArgument,
                "events is a stream: ask for it on the socket (microsip events)",
            ),
            Command::Exit => ok("exiting"),
            Command::Devices => return self.list_devices(reply),
            Command::SetDevice { role, device } => self.set_device(role, &device),
        };
        let _ = reply.send(answer);
    }

    fn targets(&self, account: Option<u32>) -> Result<Vec<u32>, Reply> {
        match account {
            Some(n) => match self.accounts.get(&n) {
                None => Err(fail(
                    ErrorCode::NoSuchAccount,
                    format!("there is no account {n}"),
                )),
                Some(slot) => match &slot.state {
                    RegState::Inactive(reason) => Err(fail(
                        ErrorCode::AccountInactive,
                        format!("account {n} is inactive: {reason}"),
                    )),
                    _ if slot.registration.is_none() => Err(fail(
                        ErrorCode::BadArgument,
                        format!("account {n} has no server to register with"),
                    )),
                    _ => Ok(vec![n]),
                },
            },
            None => {
                let all: Vec<u32> = self
                    .accounts
                    .iter()
                    .filter(|(_, s)| s.registration.is_some())
                    .map(|(n, _)| *n)
                    .collect();
                if all.is_empty() {
                    Err(fail(
                        ErrorCode::NoSuchAccount,
                        "no account has a server to register with",
                    ))
                } else {
                    Ok(all)
                }
            }
        }
    }

    fn register(&mut self, account: Option<u32>, on: bool, reply: oneshot::Sender<Reply>) {
        let numbers = match self.targets(account) {
            Ok(n) => n,
            Err(r) => {
                let _ = reply.send(r);
                return;
            }
        };
        let mut jobs = Vec::new();
        for n in numbers {
            if let Some(slot) = self.accounts.get_mut(&n) {
                if let Some(reg) = slot.registration.clone() {
                    if on {
                        slot.state = RegState::Registering;
                    }
                    jobs.push((n, reg));
                }
            }
        }
        if on {
            for (n, _) in &jobs {
                self.publish(EventKind::AccountRegistering { account: *n });
            }
        }
        let inbox = self.inbox.clone();
        tokio::spawn(async move {
            let mut done: Vec<(u32, Outcome)> = Vec::new();
            for (n, reg) in jobs {
                let out = if on {
                    reg.register().await
                } else {
                    reg.unregister().await
                };
                done.push((n, out));
            }
            let _ = inbox.send(Request::Settled);
            let _ = reply.send(summarize(&done, on));
        });
    }

    fn account(&mut self, number: u32, password: Option<Secret>) -> Reply {
        let Some(slot) = self.accounts.get_mut(&number) else {
            return fail(
                ErrorCode::NoSuchAccount,
                format!("there is no account {number}"),
            );
        };
        let section = slot.account.section();
        if let Some(Secret(password)) = password {
            if let Err(e) = self.store.set(&section, "password", &password) {
                return fail(ErrorCode::ConfigWrite, format!("password not stored: {e}"));
            }
            slot.account.password = Some(password.clone());
            if let Some(reg) = &slot.registration {
                reg.set_password(password);
            }
            return ok(format!("password stored for account {number}"));
        }
        if let RegState::Inactive(reason) = &slot.state {
            return fail(
                ErrorCode::AccountInactive,
                format!("account {number} is inactive: {reason}"),
            );
        }
        if let Err(e) = self.store.set("Settings", "accountId", &number.to_string()) {
            warn!("accountId not saved: {e}");
        }
        let previous = std::mem::replace(&mut self.active_account, number);
        self.config.settings.account_id = number;
        info!("account {number} is now the active account");
        // Contacts' presence follows the active account.
        if previous != number {
            self.presence_sync(previous);
            self.presence_sync(number);
        }
        ok_with(
            format!("account {number} active"),
            json!({ "account": number }),
        )
    }

    fn apply_levels(&mut self) -> Result<(), Reply> {
        self.media
            .set_levels(self.levels)
            .map_err(|e| fail(ErrorCode::Media, format!("levels not applied: {e}")))
    }

    /// `autoanswer` (`--autoanswer` to a running phone): answer every incoming call
    /// after `autoAnswerDelay` (`all`), or leave it to the user (`button`); toggles
    /// without an argument. For this run only, like the start option.
    fn set_auto_answer(&mut self, on: Option<bool>) -> Reply {
        let on = on.unwrap_or(self.config.settings.auto_answer != AutoAnswer::All);
        self.config.settings.auto_answer = if on {
            AutoAnswer::All
        } else {
            AutoAnswer::Button
        };
        ok_with(
            if on {
                "auto-answer on"
            } else {
                "auto-answer off"
            },
            json!({ "autoanswer": on }),
        )
    }

    /// `mute` (microphone) and `speakermute`: set, or toggle without an argument.
    fn set_mute(&mut self, speaker: bool, on: Option<bool>) -> Reply {
        let flag = if speaker {
            &mut self.levels.speaker_muted
        } else {
            &mut self.levels.microphone_muted
        };
        *flag = on.unwrap_or(!*flag);
        let now = *flag;
        if let Err(r) = self.apply_levels() {
            return r;
        }
        let what = if speaker { "speaker" } else { "microphone" };
        ok_with(
            format!("{what} {}", if now { "muted" } else { "unmuted" }),
            json!({ "device": what, "muted": now }),
        )
    }

    /// `setvolume`, `volumeup/down`, `setmicvolume`, `micup/down`: replies the new level.
    fn set_level(&mut self, kind: LevelKind, change: LevelChange) -> Reply {
        let level = match kind {
            LevelKind::Speaker => &mut self.levels.speaker,
            LevelKind::Microphone => &mut self.levels.microphone,
        };
        let new = match change {
            LevelChange::Absolute(v) => i32::from(v),
            LevelChange::Relative(d) => i32::from(*level) + d,
        }
        .clamp(0, 100) as u8;
        *level = new;
        if let Err(r) = self.apply_levels() {
            return r;
        }
        let (what, key) = match kind {
            LevelKind::Speaker => ("speaker", "volumeOutput"),
            LevelKind::Microphone => ("microphone", "volumeInput"),
        };
        if let Err(e) = self.store.set("Settings", key, &new.to_string()) {
            warn!("{key} not saved: {e}");
        }
        ok_with(new.to_string(), json!({ "device": what, "level": new }))
    }

    /// Ends every call, un-registers every account (each bounded in time) and says
    /// goodbye.
    async fn exit(&mut self, signals: &mut SipInbox) {
        self.publish(EventKind::PhoneExiting);
        let waits = self.end_all_calls();
        if !waits.is_empty() {
            // Keep handling signals so the calls' ends are seen and answered.
            let deadline = tokio::time::Instant::now() + EXIT_GRACE;
            while !self.calls.is_empty() {
                match tokio::time::timeout_at(deadline, signals.calls.recv()).await {
                    Ok(Some(signal)) => self.on_signal(signal),
                    _ => break,
                }
            }
            let leftover: Vec<CallId> = self.calls.keys().copied().collect();
            for id in leftover {
                self.finish(id, 408, "phone exiting".into(), "local");
            }
        }
        let presence_stops = self.presence.stop_all();
        let stops: Vec<Registration> = self
            .accounts
            .values()
            .filter_map(|s| s.registration.clone())
            .collect();
        let all = async {
            let mut handles = presence_stops;
            for reg in stops {
                handles.push(tokio::spawn(async move {
                    reg.stop().await;
                }));
            }
            for h in handles {
                let _ = h.await;
            }
        };
        if tokio::time::timeout(EXIT_GRACE, all).await.is_err() {
            warn!("some registrars did not answer the un-REGISTER in time");
        }
    }
}

fn summarize(done: &[(u32, Outcome)], on: bool) -> Reply {
    let words: Vec<String> = done
        .iter()
        .map(|(n, o)| {
            if on && o.is_success() {
                format!(
                    "account {n} registered ({} {}, expires {}s)",
                    o.code, o.reason, o.expires
                )
            } else if on {
                format!("account {n} failed: {} {}", o.code, o.reason)
            } else if o.is_success() {
                format!("account {n} unregistered")
            } else {
                format!("account {n} unregister failed: {} {}", o.code, o.reason)
            }
        })
        .collect();
    let data = json!(done
        .iter()
        .map(
            |(n, o)| json!({"account": n, "code": o.code, "reason": o.reason, "expires": o.expires})
        )
        .collect::<Vec<_>>());
    if done.iter().all(|(_, o)| o.is_success()) {
        ok_with(words.join("; "), data)
    } else {
        fail(ErrorCode::RegistrationFailed, words.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ip_forms() {
        assert_eq!(host_ip("127.0.0.1"), Some(IpAddr::from([127, 0, 0, 1])));
        assert_eq!(
            host_ip("127.0.0.1:5070"),
            Some(IpAddr::from([127, 0, 0, 1]))
        );
        assert_eq!(host_ip("[::1]:5070"), "::1".parse().ok());
        assert_eq!(host_ip("pbx.example.com:5060"), None);
    }
}
