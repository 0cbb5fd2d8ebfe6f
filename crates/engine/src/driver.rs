//! The driver: the only place with tokio, sockets, files and the clock. It owns the
//! SIP stack (registrations, subscriptions, call legs), the media thread and the
//! stores, feeds everything that happens into the [`Core`] with the time, and
//! performs what the core asks for. Slow work never runs on the signalling task:
//! media actions go to one media worker thread and store actions to one store
//! thread, each in order, and their results come back as inputs.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use microsip_config::{Config, DtmfMethod, Transport};
use microsip_media::device::DeviceName;
use microsip_media::ring::Ringer;
use microsip_media::{
    audio, AudioError, AudioSpec, DtmfMode, MediaConfig, MediaEngine, MediaError, MediaStats,
    StreamClient, StreamInfo, StreamMode, StreamRequest,
};
use microsip_sip::{
    CallSignal, Calls, IncomingMessage, LegId, Publication, PublishConfig, Registration,
    RegistrationEvent, Responder, SignalKind, SipStack, StackConfig, Subscriber, Subscription,
    SubscriptionConfig, SubscriptionEvent,
};
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, warn};

use crate::command::{CallId, Command, MediaCommand};
use crate::core::{host_ip, Core, CoreSetup, MediaStatsView};
use crate::event::{Event, EventKind, Snapshot};
use crate::io::{
    AnswerId, Done, Input, LegSignal, MediaAction, MediaFailure, MessageIn, Now, OpenedMedia,
    Output, ReplyTo, SipAction, StoreAction, Ticket,
};
use crate::messages::{MessageArchive, Records};
use crate::reply::{fail, ok_with, ErrorCode, Failure, Reply};

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
    /// The settings and accounts the engine starts with (the ini, read).
    pub config: Config,
    /// Where settings changed by commands (volume, active account...) are saved.
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
    pub observers: Vec<mpsc::UnboundedSender<Observed>>,
}

/// An event as an observer gets it. For a `call.ended`, `written` is there: the
/// observer sends on it (or drops it) once what it keeps of the call is on disk, and
/// only then does the event go out on the stream, so a history entry is never lost
/// to a crash after a client saw its call end.
#[derive(Debug)]
pub struct Observed {
    /// The event.
    pub event: Event,
    /// For a `call.ended`: send (or drop) once the observer's record is on disk.
    pub written: Option<oneshot::Sender<()>>,
}

/// How long a `call.ended` waits for the observers' writes before it goes out
/// anyway (a disk that hangs must not stop the event stream for good).
const WRITTEN_WAIT: Duration = Duration::from_secs(5);

/// A new subscriber's snapshot and live events.
type NewSubscriber = (Snapshot, broadcast::Receiver<Event>);

enum Request {
    Command(Command, oneshot::Sender<Reply>),
    Subscribe(oneshot::Sender<NewSubscriber>),
}

/// What the publisher task is given, in order.
enum Publish {
    Event(Event),
    /// Subscribe after every event queued before this snapshot went out.
    Subscribe(Snapshot, oneshot::Sender<NewSubscriber>),
}

/// What the publisher holds back until the observers wrote it down.
enum Held {
    /// An event and the writes it waits for (none left: it can go).
    Event {
        event: Event,
        writes: Vec<oneshot::Receiver<()>>,
        deadline: tokio::time::Instant,
    },
    /// A subscriber, in its place among the events.
    Subscribe(Snapshot, oneshot::Sender<NewSubscriber>),
}

/// Hands every event to the observers at once, and to the stream in order, a
/// `call.ended` (and what came after it) only once the observers wrote it down (at
/// most [`WRITTEN_WAIT`]). The observers get the events without waiting, so their
/// writes can go in batches. Runs as a task of its own so the signalling task never
/// waits for a disk.
async fn publisher(
    mut queue: mpsc::UnboundedReceiver<Publish>,
    events: broadcast::Sender<Event>,
    mut observers: Vec<mpsc::UnboundedSender<Observed>>,
) {
    let mut held: std::collections::VecDeque<Held> = std::collections::VecDeque::new();
    let mut open = true;
    loop {
        // Out with everything at the head that waits for nothing more.
        while let Some(front) = held.front() {
            if let Held::Event { writes, .. } = front {
                if !writes.is_empty() {
                    break;
                }
            }
            match held.pop_front() {
                Some(Held::Event { event, .. }) => {
                    // No subscriber is fine.
                    let _ = events.send(event);
                }
                Some(Held::Subscribe(snapshot, reply)) => {
                    let _ = reply.send((snapshot, events.subscribe()));
                }
                None => {}
            }
        }
        // Checked here, after the head went out: a queue closed while the last
        // event waited for its writes must not leave this task waiting for ever.
        if !open && held.is_empty() {
            break;
        }
        let head_written = async {
            match held.front_mut() {
                Some(Held::Event {
                    writes, deadline, ..
                }) => {
                    // Each write is taken off the list once done, so a wait cut
                    // short by a new event never polls a finished one again.
                    while let Some(w) = writes.first_mut() {
                        if tokio::time::timeout_at(*deadline, w).await.is_err() {
                            warn!("an event went out before it was written down");
                            writes.clear();
                            break;
                        }
                        writes.remove(0);
                    }
                }
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            item = queue.recv(), if open => match item {
                Some(Publish::Event(event)) => {
                    let durable =
                        matches!(event.kind, crate::event::EventKind::CallEnded { .. });
                    let mut writes = Vec::new();
                    observers.retain(|o| {
                        let (tx, rx) = if durable {
                            let (tx, rx) = oneshot::channel();
                            (Some(tx), Some(rx))
                        } else {
                            (None, None)
                        };
                        let sent = o
                            .send(Observed {
                                event: event.clone(),
                                written: tx,
                            })
                            .is_ok();
                        if sent {
                            writes.extend(rx);
                        }
                        sent
                    });
                    held.push_back(Held::Event {
                        event,
                        writes,
                        deadline: tokio::time::Instant::now() + WRITTEN_WAIT,
                    });
                }
                Some(Publish::Subscribe(snapshot, reply)) => {
                    held.push_back(Held::Subscribe(snapshot, reply));
                }
                None => open = false,
            },
            () = head_written => {
                if let Some(Held::Event { writes, .. }) = held.front_mut() {
                    writes.clear();
                }
            }
        }
    }
}

/// Sleeps until `at`, or for ever when there is none.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A NOTIFY for a REFER we received, waiting for the one before it to be answered.
struct QueuedNotify {
    code: u16,
    reason: String,
    /// The last of the subscription (`Subscription-State: terminated`).
    last: bool,
    /// Tells the core this NOTIFY is done.
    done: Box<dyn FnOnce(Done) + Send>,
}

/// Connects out to a WebSocket for `media stream` and streams the call there: the
/// control faces speak WebSocket, so they provide it
/// ([`EngineHandle::set_media_dialer`]). Its reply is the command's.
pub type MediaDialer =
    Arc<dyn Fn(MediaDial) -> Pin<Box<dyn Future<Output = Reply> + Send>> + Send + Sync>;

/// What a `media stream ID URL` asks the [`MediaDialer`] for.
pub struct MediaDial {
    /// The engine, to attach the stream once connected ([`EngineHandle::attach_media`]).
    pub engine: EngineHandle,
    /// The call to stream.
    pub call: CallId,
    /// The `ws://` URL to connect to.
    pub url: String,
    /// The PCM rate both ways, Hz.
    pub rate: u32,
    /// How the server's audio goes into the call.
    pub mode: StreamMode,
}

/// A cheap, cloneable way for faces to reach the engine.
#[derive(Clone)]
pub struct EngineHandle {
    inbox: mpsc::UnboundedSender<Request>,
    /// The media thread, for live call audio (`media`, `GET /calls/{id}/media`).
    media: MediaEngine,
    dialer: Arc<OnceLock<MediaDialer>>,
}

/// A media error as a reply's failure.
fn stream_failure(call: CallId, e: &MediaError) -> Failure {
    let (code, message) = match e {
        MediaError::UnknownSession(_) => (
            ErrorCode::NoSuchCall,
            format!("there is no call {call} with audio (no such call, or not answered yet)"),
        ),
        MediaError::Stopped => (ErrorCode::Stopping, "the phone is stopping".to_string()),
        other => (ErrorCode::Media, other.to_string()),
    };
    Failure { code, message }
}

/// One stream client as replies show it.
fn stream_json(info: &StreamInfo) -> serde_json::Value {
    serde_json::json!({
        "call": info.call,
        "client": info.client,
        "rate": info.rate,
        "mode": info.mode.as_str(),
        "remote": info.remote,
        "frames_out": info.frames_out,
        "frames_in": info.frames_in,
        "frames_refused": info.frames_refused,
    })
}

fn stream_line(info: &StreamInfo) -> String {
    format!(
        "call {} client {}: {} Hz {} {} ({} frames out, {} in)",
        info.call,
        info.client,
        info.rate,
        info.mode.as_str(),
        info.remote,
        info.frames_out,
        info.frames_in
    )
}

impl EngineHandle {
    /// Sets who connects out for `media stream` (once; later calls are ignored).
    pub fn set_media_dialer(&self, dialer: MediaDialer) {
        let _ = self.dialer.set(dialer);
    }

    /// Adds a stream client to call `call`: from the next 20 ms tick it gets what the
    /// far end says and its frames go into the call (see `microsip_media::stream`).
    /// Fails with `no_such_call` when the call has no audio, `bad_argument` for a
    /// rate other than 8000 or 16000, `media` when the call has too many clients.
    pub async fn attach_media(
        &self,
        call: CallId,
        request: StreamRequest,
    ) -> Result<StreamClient, Failure> {
        if request.rate != 8000 && request.rate != 16000 {
            return Err(Failure {
                code: ErrorCode::BadArgument,
                message: format!("rate must be 8000 or 16000, got {}", request.rate),
            });
        }
        let media = self.media.clone();
        // The media thread acknowledges within a tick; never wait for it on the
        // signalling task.
        tokio::task::spawn_blocking(move || media.add_stream(call, request))
            .await
            .map_err(|_| Failure {
                code: ErrorCode::Internal,
                message: "the media request was lost".into(),
            })?
            .map_err(|e| stream_failure(call, &e))
    }

    /// The stream clients of call `call` (`None`: of every call).
    pub fn media_streams(&self, call: Option<CallId>) -> Vec<StreamInfo> {
        self.media.streams(call)
    }

    async fn media_command(&self, action: MediaCommand) -> Reply {
        match action {
            MediaCommand::List { call } => {
                if let Some(id) = call {
                    if !self.media.sessions().contains(&id) {
                        return Err(stream_failure(id, &MediaError::UnknownSession(id)));
                    }
                }
                let streams = self.media.streams(call);
                let text = if streams.is_empty() {
                    "no call audio is streamed".to_string()
                } else {
                    streams
                        .iter()
                        .map(stream_line)
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                ok_with(
                    text,
                    serde_json::json!({ "streams": streams.iter().map(stream_json).collect::<Vec<_>>() }),
                )
            }
            MediaCommand::Stream {
                call,
                url,
                rate,
                mode,
            } => {
                if !self.media.sessions().contains(&call) {
                    return Err(stream_failure(call, &MediaError::UnknownSession(call)));
                }
                let Some(dialer) = self.dialer.get().cloned() else {
                    return fail(
                        ErrorCode::NotAvailableYet,
                        "media stream is not available in this run",
                    );
                };
                dialer(MediaDial {
                    engine: self.clone(),
                    call,
                    url,
                    rate,
                    mode,
                })
                .await
            }
            MediaCommand::Stop { call, client } => {
                let media = self.media.clone();
                let stopped =
                    tokio::task::spawn_blocking(move || media.stop_streams(call, client)).await;
                match stopped {
                    Ok(Ok(list)) => ok_with(
                        format!("call {call}: {} stream client(s) stopped", list.len()),
                        serde_json::json!({ "stopped": list.iter().map(stream_json).collect::<Vec<_>>() }),
                    ),
                    Ok(Err(MediaError::Stream(message))) => Err(Failure {
                        code: ErrorCode::NoSuchCall,
                        message,
                    }),
                    Ok(Err(e)) => Err(stream_failure(call, &e)),
                    Err(_) => fail(ErrorCode::Internal, "the media request was lost"),
                }
            }
        }
    }

    /// Applies one command; the reply comes after the change took effect.
    pub async fn execute(&self, command: Command) -> Reply {
        if let Command::Media { action } = command {
            return self.media_command(action).await;
        }
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

fn now() -> Now {
    Now {
        mono: Instant::now(),
        wall: SystemTime::now(),
    }
}

/// The media thread's counters, read by the core for `calls` and quality events.
struct EngineStats(MediaEngine);

impl MediaStatsView for EngineStats {
    fn stats(&self, call: CallId) -> Option<MediaStats> {
        self.0.stats(call)
    }
}

/// Starts the SIP endpoint, the media thread, the workers and the engine task.
/// Returns the handle faces use and a join handle that completes when the phone has
/// exited.
pub async fn start(
    setup: EngineSetup,
) -> Result<(EngineHandle, tokio::task::JoinHandle<()>), String> {
    let stack_config = stack_config(&setup.config, setup.trace.clone());
    let bind_ip = stack_config.bind_ip;
    let network_target = first_server_ip(&setup.config).filter(|_| !bind_ip.is_unspecified());
    let stun_servers = stack_config.stun.clone();
    let (sip, signals) = SipStack::start(stack_config.clone())
        .await
        .map_err(|e| e.to_string())?;
    let (results_tx, results) = mpsc::unbounded_channel::<Input>();
    let media_events = results_tx.clone();
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
            let _ = media_events.send(Input::Media(event));
        }),
    )
    .map_err(|e| format!("cannot start media: {e}"))?;
    // The server that answered the SIP socket is asked first for each call's RTP.
    // ICE gathers a server-reflexive candidate from the STUN list even when
    // enableSTUN is off (the SIP Contact then stays as it is).
    let mut stun_servers =
        if stun_servers.is_empty() && setup.config.accounts.iter().any(|a| a.active && a.ice) {
            let (servers, bad) = microsip_nat::stun::resolve_servers(&setup.config.settings.stun);
            for b in bad {
                warn!("STUN server skipped: {b}");
            }
            servers
        } else {
            stun_servers
        };
    if let Some(first) = sip.stun_server() {
        stun_servers.retain(|s| *s != first);
        stun_servers.insert(0, first);
    }
    media.set_stun_servers(stun_servers);
    media.set_rtcp_discovery(setup.config.accounts.iter().any(|a| a.active && a.ice));
    let sip_public = sip.public_udp();
    // Calls we answer carry the public Contact of the default account (or of the
    // first that has one).
    let incoming_public = setup
        .config
        .accounts
        .iter()
        .filter(|a| a.active)
        .find(|a| a.number == setup.config.settings.account_id)
        .or_else(|| setup.config.accounts.iter().find(|a| a.active))
        .and_then(|a| crate::core::contact_public_addr(a, sip_public));
    sip.calls().set_incoming_public(incoming_public);
    let server_ips: Vec<(u32, IpAddr)> = setup
        .config
        .accounts
        .iter()
        .filter_map(|a| Some((a.number, a.server.as_deref().and_then(host_ip)?)))
        .collect();
    let media_ips = media_ips_towards(&server_ips);
    let core = Core::new(
        CoreSetup {
            config: setup.config,
            bind_ip,
            media_ips,
            other_family_ip: microsip_sip::other_family_ip(bind_ip),
            sip_public,
            sound_system: microsip_media::device::sound_system_present(),
            call_on_start: setup.call_on_start,
            seed: seed(),
            stats: Box::new(EngineStats(media.clone())),
        },
        now(),
    );
    let (events, _) = broadcast::channel(EVENT_BACKLOG);
    let (publish, queue) = mpsc::unbounded_channel();
    let publisher = tokio::spawn(publisher(queue, events, setup.observers));
    let (inbox, requests) = mpsc::unbounded_channel();
    let (reg_tx, reg_rx) = mpsc::unbounded_channel();
    let (presence_tx, presence_rx) = mpsc::unbounded_channel();
    let media_for_handle = media.clone();
    let media_worker = MediaWorker::start(media, results_tx.clone());
    let store_worker = StoreWorker::start(
        setup.store,
        setup.archive,
        setup.records,
        results_tx.clone(),
    );
    let subscriber = sip.subscriber();
    let (network_tx, network_rx) = mpsc::unbounded_channel();
    if let Some(target) = network_target {
        tokio::spawn(watch_network(target, bind_ip, network_tx));
    }
    let driver = Driver {
        stack_config,
        server_ips,
        core,
        calls: sip.calls().clone(),
        message_sender: sip.message_sender(),
        subscriber,
        sip,
        registrations: HashMap::new(),
        reg_events: reg_tx,
        subscriptions: HashMap::new(),
        publications: HashMap::new(),
        presence_events: presence_tx,
        answers: HashMap::new(),
        next_answer: 1,
        notify_queues: HashMap::new(),
        replies: HashMap::new(),
        next_reply: 1,
        publish,
        results: results_tx,
        media_worker,
        store_worker,
        stopped: false,
        trim_at: None,
    };
    let handle = EngineHandle {
        inbox,
        media: media_for_handle,
        dialer: Arc::new(OnceLock::new()),
    };
    let join = tokio::spawn(async move {
        driver
            .run(requests, results, reg_rx, presence_rx, signals, network_rx)
            .await;
        // The last events (the calls ended at exit) reach the observers first.
        let _ = publisher.await;
    });
    Ok((handle, join))
}

/// A seed for the core's random numbers (SDP session ids).
fn seed() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// How often the network watch looks at the local address towards the registrar.
const NETWORK_POLL: Duration = Duration::from_secs(2);

/// The network watch: every [`NETWORK_POLL`], the local address the system would
/// use towards `target` (the first registrar); each change (`None`: no route) goes
/// to the driver. A `connect` on a UDP socket, off the signalling task; ends when
/// the driver is gone.
async fn watch_network(
    target: IpAddr,
    start: IpAddr,
    changes: mpsc::UnboundedSender<Option<IpAddr>>,
) {
    let mut seen = Some(start);
    let mut tick = tokio::time::interval(NETWORK_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = microsip_sip::probe_local_ip(target);
        if now != seen {
            seen = now;
            if changes.send(now).is_err() {
                return;
            }
        }
    }
}

/// The local address towards each account's server (for SDP when bound to all).
fn media_ips_towards(server_ips: &[(u32, IpAddr)]) -> HashMap<u32, IpAddr> {
    server_ips
        .iter()
        .map(|&(n, ip)| (n, microsip_sip::local_ip_towards(ip)))
        .collect()
}

/// The IP literal of the first active account's outbound proxy or registrar.
fn first_server_ip(config: &Config) -> Option<IpAddr> {
    config
        .accounts
        .iter()
        .filter(|a| a.active)
        .filter_map(|a| a.proxy.first().cloned().or_else(|| a.server.clone()))
        .find_map(|s| host_ip(&s))
}

/// Bind address: the local address that reaches the first registrar (loopback for a
/// loopback PBX), else every interface.
fn stack_config(config: &Config, trace: Option<PathBuf>) -> StackConfig {
    let first_server_ip = first_server_ip(config);
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
        stun: stun_servers(&config.settings),
    }
}

/// The STUN servers to ask (`enableSTUN=1` and a `STUN` list; `--stun` sets both),
/// resolved once; entries that do not resolve are logged and skipped.
fn stun_servers(settings: &microsip_config::Settings) -> Vec<std::net::SocketAddr> {
    if !settings.enable_stun {
        return Vec::new();
    }
    let (servers, bad) = microsip_nat::stun::resolve_servers(&settings.stun);
    for b in bad {
        warn!("STUN server skipped: {b}");
    }
    if servers.is_empty() {
        warn!("enableSTUN=1 but no usable STUN server in STUN=");
    }
    servers
}

/// What an answer owed to the remote is kept as.
enum Owed {
    InDialog(Responder),
    Message(Box<IncomingMessage>),
}

struct Driver {
    /// How the SIP endpoint was started (started again from it on a new address).
    stack_config: StackConfig,
    /// Each account's registrar address, when an IP literal (media addresses).
    server_ips: Vec<(u32, IpAddr)>,
    core: Core,
    sip: SipStack,
    calls: Calls,
    message_sender: microsip_sip::MessageSender,
    subscriber: Subscriber,
    registrations: HashMap<u32, Registration>,
    reg_events: mpsc::UnboundedSender<RegistrationEvent>,
    subscriptions: HashMap<u64, Subscription>,
    publications: HashMap<u64, Publication>,
    presence_events: mpsc::UnboundedSender<SubscriptionEvent>,
    answers: HashMap<AnswerId, Owed>,
    next_answer: AnswerId,
    /// NOTIFYs for a REFER we received, sent one after the other per leg.
    notify_queues: HashMap<LegId, mpsc::UnboundedSender<QueuedNotify>>,
    replies: HashMap<ReplyTo, oneshot::Sender<Reply>>,
    next_reply: ReplyTo,
    /// Events (and subscriptions) go out through the publisher task.
    publish: mpsc::UnboundedSender<Publish>,
    /// Results of work done elsewhere come back here.
    results: mpsc::UnboundedSender<Input>,
    media_worker: MediaWorker,
    store_worker: StoreWorker,
    stopped: bool,
    /// When to give freed memory back: a while after the last call ended (its
    /// transactions linger for up to 32 s), if no call is up by then.
    trim_at: Option<tokio::time::Instant>,
}

/// How long after the last call ended memory is given back (Timer K/J: 32 s).
const TRIM_AFTER_CALLS: Duration = Duration::from_secs(40);

impl Driver {
    async fn run(
        mut self,
        mut requests: mpsc::UnboundedReceiver<Request>,
        mut results: mpsc::UnboundedReceiver<Input>,
        mut reg_events: mpsc::UnboundedReceiver<RegistrationEvent>,
        mut presence: mpsc::UnboundedReceiver<SubscriptionEvent>,
        mut signals: microsip_sip::SipInbox,
        mut network: mpsc::UnboundedReceiver<Option<IpAddr>>,
    ) {
        self.drain();
        while !self.stopped {
            let sleep = sleep_until_some(self.core.poll_timeout().map(Into::into));
            tokio::select! {
                Some(request) = requests.recv() => match request {
                    Request::Command(command, reply) => {
                        let id = self.next_reply;
                        self.next_reply += 1;
                        self.replies.insert(id, reply);
                        self.core.handle(Input::Command { reply: id, command }, now());
                    }
                    Request::Subscribe(reply) => {
                        let snapshot = self.core.snapshot();
                        let _ = self.publish.send(Publish::Subscribe(snapshot, reply));
                    }
                },
                Some(input) = results.recv() => self.core.handle(input, now()),
                Some(event) = reg_events.recv() => {
                    self.core.handle(Input::Registration(event), now());
                }
                Some(event) = presence.recv() => self.core.handle(Input::Presence(event), now()),
                Some(signal) = signals.calls.recv() => {
                    let (leg, signal) = self.leg_signal(signal);
                    self.core.handle(Input::Leg { leg, signal }, now());
                }
                Some(message) = signals.messages.recv() => {
                    let message = self.message_in(message);
                    self.core.handle(Input::Message(message), now());
                }
                Some(seen) = network.recv() => {
                    if let Some(inbox) = self.on_network(seen).await {
                        signals = inbox;
                    }
                }
                () = sleep => self.core.handle_timeout(now()),
                () = sleep_until_some(self.trim_at) => {
                    self.trim_at = None;
                    if self.core.call_count() == 0 {
                        crate::memory::give_back();
                    }
                }
                else => break,
            }
            self.drain();
        }
        // Dropping the stack's handles frees the ports.
        self.registrations.clear();
        self.sip.shutdown();
        // `self` (and with it the publisher's queue) goes: the publisher ends once
        // it has handed out what is queued.
    }

    /// The network watch saw the local address towards the registrar change
    /// (`None`: no route). A new address: the SIP endpoint starts again on it (the
    /// old one is bound to an address that is gone) and its inbox is returned; the
    /// core is told in every case (events, registering again, calls).
    async fn on_network(&mut self, seen: Option<IpAddr>) -> Option<microsip_sip::SipInbox> {
        let previous = self.stack_config.bind_ip;
        let mut inbox = None;
        if let Some(address) = seen.filter(|a| *a != previous) {
            let mut config = self.stack_config.clone();
            config.bind_ip = address;
            // Keep the port when we can: the same Contact but for the address.
            if let Some(port) = self.sip.udp_addr().map(|a| a.port()) {
                config.port = port;
            }
            self.registrations.clear();
            self.subscriptions.clear();
            self.publications.clear();
            self.notify_queues.clear();
            self.sip.shutdown();
            let started = match SipStack::start(config.clone()).await {
                Ok(started) => Ok((started, config)),
                Err(e) => {
                    warn!("SIP on {address} with the old port: {e}; trying any port");
                    config.port = self.stack_config.port;
                    SipStack::start(config.clone())
                        .await
                        .map(|started| (started, config))
                }
            };
            match started {
                Ok(((sip, signals), config)) => {
                    self.calls = sip.calls().clone();
                    self.message_sender = sip.message_sender();
                    self.subscriber = sip.subscriber();
                    self.sip = sip;
                    self.stack_config = config;
                    inbox = Some(signals);
                }
                Err(e) => {
                    warn!("network changed to {address}, but SIP cannot start there: {e}");
                    return None;
                }
            }
        }
        let restarted = inbox.is_some();
        let change = crate::io::NetworkChange {
            previous,
            address: seen,
            restarted,
            media_ips: media_ips_towards(&self.server_ips),
            other_family_ip: seen.and_then(microsip_sip::other_family_ip),
        };
        self.core.handle(Input::Network(change), now());
        inbox
    }

    /// Keeps the transaction handles of a signal and hands the core the rest.
    fn leg_signal(&mut self, signal: CallSignal) -> (LegId, LegSignal) {
        let leg = signal.call;
        let s = match signal.kind {
            SignalKind::Incoming(invite) => LegSignal::Incoming(invite),
            SignalKind::Ringing { .. } => LegSignal::Ringing,
            SignalKind::Early { code, sdp } => LegSignal::Early { code, sdp },
            SignalKind::Answered { sdp, session_timer } => {
                LegSignal::Answered { sdp, session_timer }
            }
            SignalKind::Confirmed => LegSignal::Confirmed,
            SignalKind::Reoffer {
                sdp,
                update,
                session_timer,
                reply,
            } => LegSignal::Reoffer {
                sdp,
                update,
                session_timer,
                answer: self.owe(Owed::InDialog(reply)),
            },
            SignalKind::Refer { target, reply } => LegSignal::Refer {
                target,
                answer: self.owe(Owed::InDialog(reply)),
            },
            SignalKind::ReferProgress { code, reason, done } => {
                LegSignal::ReferProgress { code, reason, done }
            }
            SignalKind::Info { content_type, body } => LegSignal::Info { content_type, body },
            SignalKind::Message {
                from,
                display_name,
                to,
                content_type,
                text,
                reply,
            } => LegSignal::Message(MessageIn {
                from,
                display_name,
                to,
                content_type,
                text,
                answer: self.owe(Owed::InDialog(reply)),
                call: None,
            }),
            SignalKind::Ended {
                code,
                reason,
                by,
                elsewhere,
            } => {
                self.notify_queues.remove(&leg);
                LegSignal::Ended {
                    code,
                    reason,
                    by,
                    elsewhere,
                }
            }
        };
        (leg, s)
    }

    fn message_in(&mut self, message: IncomingMessage) -> MessageIn {
        let m = MessageIn {
            from: message.from.clone(),
            display_name: message.display_name.clone(),
            to: message.to.clone(),
            content_type: message.content_type.clone(),
            text: message.text.clone(),
            answer: 0,
            call: None,
        };
        let answer = self.owe(Owed::Message(Box::new(message)));
        MessageIn { answer, ..m }
    }

    fn owe(&mut self, owed: Owed) -> AnswerId {
        let id = self.next_answer;
        self.next_answer += 1;
        self.answers.insert(id, owed);
        id
    }

    /// Performs everything the core asked for.
    fn drain(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Reply { to, reply } => {
                    if let Some(tx) = self.replies.remove(&to) {
                        let _ = tx.send(reply);
                    }
                }
                Output::Event(event) => {
                    if matches!(event.kind, EventKind::CallEnded { .. }) {
                        self.trim_at = Some(tokio::time::Instant::now() + TRIM_AFTER_CALLS);
                    }
                    let _ = self.publish.send(Publish::Event(event));
                }
                Output::Sip { ticket, action } => self.sip_action(ticket, action),
                Output::Media { ticket, action } => self.media_worker.push(ticket, action),
                Output::Store { ticket, action } => self.store_worker.push(ticket, action),
                Output::Stopped => self.stopped = true,
            }
        }
    }

    /// Sends `result` back to the core as the result of `ticket`.
    fn done_later(&self, ticket: Option<Ticket>) -> impl FnOnce(Done) + Send + 'static {
        let results = self.results.clone();
        move |result| {
            if let Some(ticket) = ticket {
                let _ = results.send(Input::Done { ticket, result });
            }
        }
    }

    /// Tells the core a leg ended because the stack refused to act on it.
    fn leg_failed(&self, leg: LegId, what: &str, error: String) {
        warn!("call leg {leg}: {what}: {error}");
        let _ = self.results.send(Input::Leg {
            leg,
            signal: LegSignal::Ended {
                code: 500,
                reason: format!("{what} failed: {error}"),
                by: microsip_sip::EndedBy::Local,
                elsewhere: false,
            },
        });
    }

    fn sip_action(&mut self, ticket: Option<Ticket>, action: SipAction) {
        let done = self.done_later(ticket);
        match action {
            SipAction::Dial {
                leg,
                caller,
                target,
                offer,
                headers,
            } => {
                if let Err(e) = self.calls.dial(leg, &caller, &target, offer, headers) {
                    self.leg_failed(leg, "INVITE", e.to_string());
                }
                done(Done::Unit(Ok(())));
            }
            SipAction::Ringing { leg } => {
                if let Err(e) = self.calls.ringing(leg) {
                    debug!("call leg {leg}: 180 not sent: {e}");
                }
            }
            SipAction::Answer {
                leg,
                sdp,
                headers,
                session_timers,
            } => {
                if let Err(e) = self.calls.answer(leg, sdp, headers, session_timers) {
                    self.leg_failed(leg, "answer", e.to_string());
                }
            }
            SipAction::Reject { leg, code, headers } => {
                if let Err(e) = self.calls.reject(leg, code, headers) {
                    debug!("call leg {leg}: {code} not sent: {e}");
                }
            }
            SipAction::Hangup { leg } => {
                let calls = self.calls.clone();
                tokio::spawn(async move {
                    let _ = calls.hangup(leg).await;
                });
            }
            SipAction::Reinvite { leg, sdp, headers } => {
                let calls = self.calls.clone();
                tokio::spawn(async move {
                    let result = calls
                        .reinvite(leg, sdp, headers)
                        .await
                        .map_err(|e| e.to_string());
                    done(Done::Reinvite(result));
                });
            }
            SipAction::InfoDigits { leg, digits } => {
                let calls = self.calls.clone();
                tokio::spawn(async move { send_info_digits(calls, leg, digits).await });
            }
            SipAction::Refer {
                leg,
                target,
                replacing,
            } => {
                let calls = self.calls.clone();
                tokio::spawn(async move {
                    let result = match replacing {
                        Some(other) => calls
                            .refer_replacing(leg, other)
                            .await
                            .map(|(code, _)| code),
                        None => calls.refer(leg, &target).await,
                    };
                    done(Done::Refer(result.map_err(|e| e.to_string())));
                });
            }
            SipAction::NotifyRefer {
                leg,
                code,
                reason,
                done: last,
            } => {
                let queue = self.notify_queues.entry(leg).or_insert_with(|| {
                    let (tx, mut rx) = mpsc::unbounded_channel::<QueuedNotify>();
                    let calls = self.calls.clone();
                    tokio::spawn(async move {
                        // Each NOTIFY goes after the previous one was answered;
                        // the core hears when each is done (answered or failed).
                        while let Some(n) = rx.recv().await {
                            calls.notify_refer(leg, n.code, &n.reason, n.last).await;
                            (n.done)(Done::Unit(Ok(())));
                            if n.last {
                                break;
                            }
                        }
                    });
                    tx
                });
                let _ = queue.send(QueuedNotify {
                    code,
                    reason,
                    last,
                    done: Box::new(done),
                });
            }
            SipAction::Respond {
                answer,
                code,
                sdp,
                headers,
            } => match self.answers.remove(&answer) {
                Some(Owed::InDialog(responder)) => {
                    tokio::spawn(async move { responder.respond_with(code, sdp, headers).await });
                }
                Some(Owed::Message(message)) => {
                    tokio::spawn(message.respond(code));
                }
                None => debug!("answer {answer} already given"),
            },
            SipAction::SendMessage {
                caller,
                target,
                text,
            } => {
                let sender = self.message_sender.clone();
                tokio::spawn(async move {
                    let result = microsip_sip::send_message(&sender, &caller, &target, &text).await;
                    done(Done::Message(result));
                });
            }
            SipAction::StartRegistration(config) => {
                let account = config.account;
                let reg = Registration::start(&self.sip, *config, self.reg_events.clone());
                self.registrations.insert(account, reg);
            }
            SipAction::Register { account, on } => match self.registrations.get(&account) {
                Some(reg) => {
                    let reg = reg.clone();
                    tokio::spawn(async move {
                        let outcome = if on {
                            reg.register().await
                        } else {
                            reg.unregister().await
                        };
                        done(Done::Registration(outcome));
                    });
                }
                None => done(Done::Registration(microsip_sip::Outcome {
                    code: 500,
                    reason: "no registration".into(),
                    expires: 0,
                })),
            },
            SipAction::SetPassword { account, password } => {
                if let Some(reg) = self.registrations.get(&account) {
                    reg.set_password(password);
                }
            }
            SipAction::Subscribe {
                id,
                account,
                caller,
                target,
                package,
                expires,
            } => {
                let s = Subscription::start(
                    &self.subscriber,
                    SubscriptionConfig {
                        id,
                        account,
                        caller,
                        target,
                        package,
                        expires,
                    },
                    self.presence_events.clone(),
                );
                self.subscriptions.insert(id, s);
            }
            SipAction::Publish {
                id,
                account,
                caller,
                expires,
            } => {
                let p = Publication::start(
                    &self.subscriber,
                    PublishConfig {
                        id,
                        account,
                        caller,
                        expires,
                        note: None,
                    },
                    self.presence_events.clone(),
                );
                self.publications.insert(id, p);
            }
            SipAction::Unsubscribe { id } => {
                if let Some(s) = self.subscriptions.remove(&id) {
                    tokio::spawn(async move { s.stop().await });
                }
                if let Some(p) = self.publications.remove(&id) {
                    tokio::spawn(async move { p.stop().await });
                }
            }
            SipAction::StopAll => {
                let mut jobs = Vec::new();
                for (_, s) in self.subscriptions.drain() {
                    jobs.push(tokio::spawn(async move { s.stop().await }));
                }
                for (_, p) in self.publications.drain() {
                    jobs.push(tokio::spawn(async move { p.stop().await }));
                }
                for reg in self.registrations.values() {
                    let reg = reg.clone();
                    jobs.push(tokio::spawn(async move {
                        reg.stop().await;
                    }));
                }
                tokio::spawn(async move {
                    for j in jobs {
                        let _ = j.await;
                    }
                    done(Done::Unit(Ok(())));
                });
            }
        }
    }
}

/// Sends digits one SIP INFO each (`application/dtmf-relay`), paced like tones:
/// 100 ms per digit plus a 60 ms gap, one second per `,`.
async fn send_info_digits(calls: Calls, leg: LegId, digits: String) {
    use microsip_media::dtmf::{info_body, parse_digits, DtmfStep};
    let Ok(steps) = parse_digits(&digits) else {
        return;
    };
    for step in steps {
        match step {
            DtmfStep::Pause => tokio::time::sleep(Duration::from_secs(1)).await,
            DtmfStep::Digit(d) => {
                if let Ok((content_type, body)) = info_body(d, 100) {
                    if let Err(e) = calls.info(leg, content_type, body).await {
                        warn!("call leg {leg}: INFO for {d}: {e}");
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(160)).await;
            }
        }
    }
}

// ------------------------------------------------------------------ media worker

/// Runs media actions off the signalling task (they wait for the media thread, open
/// devices, read WAV files, finish recordings), in order, on two threads: one for
/// what calls need to go on (open, configure, hold, levels, devices...), one for
/// files played and recorded, so reading a ten-minute WAV never holds up a new
/// call's media.
struct MediaWorker {
    control: std_mpsc::Sender<(Option<Ticket>, MediaAction)>,
    files: std_mpsc::Sender<(Option<Ticket>, MediaAction)>,
}

/// Lowers the calling thread's scheduling priority (nice 10): a busy worker must not
/// take the CPU from the signalling task on a loaded machine.
#[allow(unsafe_code)] // setpriority: a libc call, see the SAFETY note
fn lower_priority() {
    // SAFETY: setpriority only reads its integer arguments; on Linux, PRIO_PROCESS
    // with who = 0 applies to the calling thread alone.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
    if rc != 0 {
        debug!("worker thread priority unchanged");
    }
}

/// A worker thread: runs what `jobs` brings with `run`, sends each result with a
/// ticket back to `results`.
fn spawn_worker<A: Send + 'static>(
    name: &str,
    results: mpsc::UnboundedSender<Input>,
    mut run: impl FnMut(A) -> Option<Done> + Send + 'static,
) -> std_mpsc::Sender<(Option<Ticket>, A)> {
    let (jobs, rx) = std_mpsc::channel::<(Option<Ticket>, A)>();
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .stack_size(256 * 1024)
        .spawn(move || {
            lower_priority();
            while let Ok((ticket, action)) = rx.recv() {
                if let (Some(result), Some(ticket)) = (run(action), ticket) {
                    let _ = results.send(Input::Done { ticket, result });
                }
            }
        });
    if let Err(e) = spawned {
        warn!("cannot start the {name} thread: {e}");
    }
    jobs
}

fn failure_of(e: &MediaError) -> MediaFailure {
    match e {
        MediaError::Audio(a) => audio_failure_of(a),
        other => MediaFailure::other(other.to_string()),
    }
}

fn audio_failure_of(e: &AudioError) -> MediaFailure {
    MediaFailure {
        no_such_device: matches!(e, AudioError::UnknownDevice(_)),
        bad_argument: matches!(e, AudioError::BadTone(_) | AudioError::NotAnOutput(_)),
        message: e.to_string(),
    }
}

impl MediaWorker {
    fn start(media: MediaEngine, results: mpsc::UnboundedSender<Input>) -> MediaWorker {
        let files_media = media.clone();
        let mut ringer: Option<Ringer> = None;
        let control = spawn_worker("media-control", results.clone(), move |action| {
            run_media(&media, &mut ringer, action)
        });
        let mut no_ringer: Option<Ringer> = None;
        let files = spawn_worker("media-files", results, move |action| {
            run_media(&files_media, &mut no_ringer, action)
        });
        MediaWorker { control, files }
    }

    fn push(&self, ticket: Option<Ticket>, action: MediaAction) {
        let queue = match action {
            MediaAction::Play { .. }
            | MediaAction::StopPlaying { .. }
            | MediaAction::StartRecording { .. }
            | MediaAction::StopRecording { .. } => &self.files,
            _ => &self.control,
        };
        if queue.send((ticket, action)).is_err() {
            warn!("a media worker thread is gone");
        }
    }
}

/// Logs a media change that failed; the call goes on.
fn logged(call: CallId, what: &str, result: Result<(), MediaError>) -> Option<Done> {
    if let Err(e) = result {
        warn!("call {call}: media {what}: {e}");
    }
    None
}

fn run_media(
    media: &MediaEngine,
    ringer: &mut Option<Ringer>,
    action: MediaAction,
) -> Option<Done> {
    match action {
        MediaAction::Open {
            call,
            source,
            sink,
            fallback_source,
            fallback_sink,
            bind,
        } => {
            let result = match media.open_public(call, bind, source.clone(), sink.clone()) {
                Err(e) if fallback_source || fallback_sink => {
                    warn!(
                        "call {call}: the default sound device cannot be used ({e}); going on without it"
                    );
                    let source = if fallback_source {
                        AudioSpec::Null
                    } else {
                        source
                    };
                    let sink = if fallback_sink { AudioSpec::Null } else { sink };
                    media.open_public(call, bind, source, sink)
                }
                other => other,
            };
            Some(Done::MediaOpened(
                result
                    .map(|o| OpenedMedia {
                        port: o.port,
                        public: o.public,
                        rtcp_port: o.rtcp_port,
                        rtcp_public: o.rtcp_public,
                    })
                    .map_err(|e| failure_of(&e)),
            ))
        }
        MediaAction::Configure { call, negotiated } => {
            logged(call, "configure", media.configure(call, *negotiated))
        }
        MediaAction::SetHold { call, on } => logged(call, "set_hold", media.set_hold(call, on)),
        MediaAction::SetReceiveOnly { call, on } => {
            logged(call, "set_receive_only", media.set_receive_only(call, on))
        }
        MediaAction::SendDtmf { call, digits } => {
            logged(call, "send_dtmf", media.send_dtmf(call, &digits))
        }
        MediaAction::Close { call } => {
            if let Err(e) = media.close(call) {
                debug!("call {call}: media close: {e}");
            }
            None
        }
        MediaAction::SetLevels(levels) => {
            if let Err(e) = media.set_levels(levels) {
                warn!("audio levels not applied: {e}");
            }
            None
        }
        MediaAction::StartRecording { call, path } => {
            let path = unused_path(path);
            Some(Done::Path(
                media
                    .start_recording(call, &path)
                    .map(|()| path)
                    .map_err(|e| failure_of(&e)),
            ))
        }
        MediaAction::StopRecording { call } => Some(Done::Recording(
            media.stop_recording(call).map_err(|e| failure_of(&e)),
        )),
        MediaAction::Play { call, path, at_end } => Some(Done::Media(
            media.play(call, &path, at_end).map_err(|e| failure_of(&e)),
        )),
        MediaAction::StopPlaying { call } => logged(call, "stop_playing", media.stop_playing(call)),
        MediaAction::SetConference { calls } => {
            if let Err(e) = media.set_conference(&calls) {
                warn!("conference: {e}");
            }
            None
        }
        MediaAction::SetDevice {
            input,
            ring,
            calls,
            spec,
        } => Some(Done::Media(set_device(media, input, ring, &calls, &spec))),
        MediaAction::ListDevices => Some(Done::Devices(microsip_media::device::list())),
        MediaAction::Ring { device, sound } => {
            *ringer = None;
            if let Some(spec) = device {
                match Ringer::start(&spec, sound.as_deref()) {
                    Ok(r) => *ringer = Some(r),
                    Err(e) => warn!("ring tone not played on {spec}: {e}"),
                }
            }
            None
        }
    }
}

/// Switches the calls to `spec`, or with no call checks that it can be used.
fn set_device(
    media: &MediaEngine,
    input: bool,
    ring: bool,
    calls: &[CallId],
    spec: &AudioSpec,
) -> Result<(), MediaFailure> {
    let check = |name: &DeviceName| {
        microsip_media::device::check(name, input)
            .map(drop)
            .map_err(|e| audio_failure_of(&e))
    };
    match spec {
        _ if !calls.is_empty() && !ring => calls.iter().try_for_each(|&id| {
            let r = if input {
                media.set_source(id, spec)
            } else {
                media.set_sink(id, spec)
            };
            r.map_err(|e| failure_of(&e))
        }),
        AudioSpec::File(_) if input => audio::open_source(spec)
            .map(drop)
            .map_err(|e| audio_failure_of(&e)),
        AudioSpec::Device(name) => check(name),
        _ => Ok(()),
    }
}

/// `path`, or `name-2.wav`, `name-3.wav`... when it exists (two recordings of one
/// call in the same second must not overwrite each other).
fn unused_path(path: PathBuf) -> PathBuf {
    if !path.exists() {
        return path;
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    for n in 2..1000 {
        let candidate = dir.join(format!("{stem}-{n}.wav"));
        if !candidate.exists() {
            return candidate;
        }
    }
    path
}

// ------------------------------------------------------------------ store worker

/// Runs store reads and writes one after the other on a thread of its own, so the
/// signalling task never waits for a disk.
struct StoreWorker {
    jobs: std_mpsc::Sender<(Option<Ticket>, StoreAction)>,
}

impl StoreWorker {
    fn start(
        mut store: Box<dyn ConfigStore>,
        mut archive: Box<dyn MessageArchive>,
        mut records: Box<dyn Records>,
        results: mpsc::UnboundedSender<Input>,
    ) -> StoreWorker {
        let jobs = spawn_worker("store", results, move |action| {
            Some(match action {
                StoreAction::SetConfig {
                    section,
                    key,
                    value,
                } => Done::Unit(store.set(&section, &key, &value)),
                StoreAction::StoreMessage(record) => Done::Unit(archive.store(&record)),
                StoreAction::ListMessages { contact } => {
                    Done::Messages(archive.list(contact.as_deref()))
                }
                StoreAction::ListHistory => Done::List(records.history()),
                StoreAction::ListContacts => Done::List(records.contacts()),
                StoreAction::AddContact {
                    name,
                    number,
                    presence,
                } => Done::Contact(records.add_contact(&name, &number, presence)),
                StoreAction::RemoveContact { number } => Done::Contact(
                    records
                        .remove_contact(&number)
                        .map(|removed| if removed { "removed" } else { "absent" }.into()),
                ),
            })
        });
        StoreWorker { jobs }
    }

    fn push(&self, ticket: Option<Ticket>, action: StoreAction) {
        if self.jobs.send((ticket, action)).is_err() {
            warn!("the store thread is gone");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;

    fn ended(call: u64) -> Event {
        Event {
            seq: call,
            time: String::new(),
            account: None,
            kind: EventKind::CallEnded {
                call,
                code: 200,
                reason: "Normal Clearing".into(),
                by: "local",
                duration: 0,
                elsewhere: false,
                quality: None,
            },
        }
    }

    /// At exit the queue closes while the last `call.ended` still waits for its
    /// history write: once written it goes out, and the publisher ends (it used to
    /// wait for ever, and `exit` with a call up never ended the process).
    #[tokio::test(start_paused = true)]
    async fn the_publisher_ends_when_the_queue_closes_before_the_last_write() {
        let (observer, mut observed) = mpsc::unbounded_channel();
        let (events, mut stream) = broadcast::channel(16);
        let (publish, queue) = mpsc::unbounded_channel();
        let task = tokio::spawn(publisher(queue, events, vec![observer]));
        for call in [1, 2] {
            publish.send(Publish::Event(ended(call))).ok();
        }
        let first = observed.recv().await.expect("the observer gets the first");
        let second = observed.recv().await.expect("the observer gets the second");
        first
            .written
            .expect("a call.ended asks for its write")
            .send(())
            .ok();
        drop(publish);
        tokio::task::yield_now().await;
        second
            .written
            .expect("a call.ended asks for its write")
            .send(())
            .ok();
        // Far less than the write wait: a publisher that waits for it has hung.
        let ended_in_time = tokio::time::timeout(Duration::from_millis(100), task).await;
        assert!(ended_in_time.is_ok(), "the publisher did not end");
        assert_eq!(stream.recv().await.map(|e| e.seq).ok(), Some(1));
        assert_eq!(stream.recv().await.map(|e| e.seq).ok(), Some(2));
    }
}
