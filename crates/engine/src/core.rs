//! The engine core: the phone's state (accounts, registrations, calls, levels,
//! presence) and every decision about it, as a sans-IO state machine in the manner
//! of quinn-proto and str0m. It takes [`Input`]s with the time passed in
//! ([`Core::handle`], [`Core::handle_timeout`]) and leaves what must happen as
//! [`Output`]s ([`Core::poll_output`]); [`Core::poll_timeout`] says when it next
//! wants the time. No tokio, no sockets, no files, no clock and no randomness here:
//! the [`crate::driver`] does all of that. The call flows live in their own modules
//! (`calls`, `messages`, `presence`, `recording`, `devices`) as `impl Core` blocks.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use microsip_config::{Account, AutoAnswer, Config, Srtp, Transport};
use microsip_media::{Levels, MediaStats};
use microsip_sip::{LegId, Outcome, RegistrationConfig, RegistrationEvent, SipTransport};
use serde_json::json;
use tracing::{info, warn};

use crate::calls::{Call, DialRequest, HangupBatch, Then};
use crate::command::{CallId, Command, LevelChange, LevelKind, Secret, WindowState};
use crate::event::{AccountView, Event, EventKind, Snapshot};
use crate::io::{Done, Input, MediaAction, Now, Output, ReplyTo, SipAction, StoreAction, Ticket};
use crate::reply::{fail, ok, ok_with, ErrorCode, Reply};
use crate::timers::{Timer, Timers};

/// How long `exit` waits for calls to end, and then for un-REGISTERs.
pub(crate) const EXIT_GRACE: Duration = Duration::from_secs(4);

/// Reads a call's media counters (shared memory the media thread updates; no I/O).
pub trait MediaStatsView: Send {
    /// The media counters of call `call`, or `None` when it has no media session.
    fn stats(&self, call: CallId) -> Option<MediaStats>;
}

/// No media counters (tests).
pub struct NoStats;

impl MediaStatsView for NoStats {
    fn stats(&self, _call: CallId) -> Option<MediaStats> {
        None
    }
}

/// What the core starts from, all of it data.
pub struct CoreSetup {
    /// The settings and accounts (the ini, read).
    pub config: Config,
    /// The address SIP and RTP are bound to.
    pub bind_ip: IpAddr,
    /// The local address towards each account's server (for SDP when bound to all).
    pub media_ips: HashMap<u32, IpAddr>,
    /// A local address of the other family than `bind_ip` (IPv6 for an IPv4 phone,
    /// IPv4 for an IPv6 one), for calls whose peer offers only that family; `None`
    /// when the machine has none.
    pub other_family_ip: Option<IpAddr>,
    /// The SIP UDP socket's public address learned by STUN at start (`None`: STUN
    /// off or unanswered): the Contact of UDP accounts without `publicAddr`.
    pub sip_public: Option<std::net::SocketAddr>,
    /// Whether this machine has a sound system (an empty device key means its
    /// default device then, else `null`).
    pub sound_system: bool,
    /// `--call TARGET [ACCOUNT]`: dial once the account registered.
    pub call_on_start: Option<(String, Option<u32>)>,
    /// Seeds the core's random numbers (SDP session ids).
    pub seed: u64,
    /// Where the core reads the calls' media counters (quality numbers).
    pub stats: Box<dyn MediaStatsView>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RegState {
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
    /// Whether it has a registration (a server to register with).
    pub(crate) registers: bool,
    pub(crate) state: RegState,
}

/// A `register`/`unregister` command waiting for every account it named.
pub(crate) struct RegisterBatch {
    pub(crate) reply: ReplyTo,
    pub(crate) on: bool,
    pub(crate) waiting: usize,
    pub(crate) done: Vec<(u32, Outcome)>,
}

/// Where `exit` stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExitPhase {
    /// Waiting for the calls to end.
    Calls,
    /// Waiting for registrations and subscriptions to stop.
    Unregistering,
}

/// The engine core.
pub struct Core {
    pub(crate) config: Config,
    pub(crate) bind_ip: IpAddr,
    pub(crate) media_ips: HashMap<u32, IpAddr>,
    pub(crate) other_family_ip: Option<IpAddr>,
    /// Where RTP sockets are bound once SIP moved to a new address (the media
    /// engine's own address is the one it started with); `None` until then.
    pub(crate) media_bind: Option<IpAddr>,
    pub(crate) sip_public: Option<std::net::SocketAddr>,
    pub(crate) sound_system: bool,
    pub(crate) accounts: BTreeMap<u32, AccountSlot>,
    pub(crate) active_account: u32,
    pub(crate) calls: BTreeMap<CallId, Call>,
    /// SIP legs to the calls they carry.
    pub(crate) legs: HashMap<LegId, CallId>,
    next_call: CallId,
    /// When the last call ended (numeric STATUS says 4 for a while).
    pub(crate) last_ended: Option<Instant>,
    /// What `redial` calls (the last `dial` of this run).
    pub(crate) last_dialled: Option<crate::redial::Remembered>,
    /// Whom `callback` calls (the caller of this run's last missed call).
    pub(crate) last_missed: Option<crate::redial::Remembered>,
    seq: u64,
    call_on_start: Option<(String, Option<u32>)>,
    /// Speaker/microphone levels and mutes, for every call.
    pub(crate) levels: Levels,
    /// Presence and MWI subscriptions, our publication.
    pub(crate) presence: crate::presence::PresenceState,
    /// The address book as last read (presence subscriptions follow it).
    pub(crate) contacts: Vec<serde_json::Value>,
    /// Whether an incoming call rings (the ring tone plays).
    pub(crate) ringing: bool,
    pub(crate) timers: Timers,
    pub(crate) now: Now,
    rng: u64,
    out: VecDeque<Output>,
    next_ticket: Ticket,
    /// What to do when the action with this ticket finishes.
    pub(crate) pending: HashMap<Ticket, Then>,
    pub(crate) register_batches: HashMap<u64, RegisterBatch>,
    pub(crate) hangup_batches: HashMap<u64, HangupBatch>,
    pub(crate) next_batch: u64,
    stats: Box<dyn MediaStatsView>,
    exiting: Option<(ExitPhase, ReplyTo)>,
}

impl Core {
    /// A core for `setup` at `now`. Its first outputs start the registrations and
    /// read the address book.
    pub fn new(setup: CoreSetup, now: Now) -> Core {
        let mut core = Core {
            active_account: setup.config.settings.account_id,
            bind_ip: setup.bind_ip,
            media_ips: setup.media_ips,
            other_family_ip: setup.other_family_ip,
            media_bind: None,
            sip_public: setup.sip_public,
            sound_system: setup.sound_system,
            config: setup.config,
            accounts: BTreeMap::new(),
            calls: BTreeMap::new(),
            legs: HashMap::new(),
            next_call: 1,
            last_ended: None,
            last_dialled: None,
            last_missed: None,
            seq: 0,
            call_on_start: setup.call_on_start,
            levels: Levels::default(),
            presence: crate::presence::PresenceState::default(),
            contacts: Vec::new(),
            ringing: false,
            timers: Timers::default(),
            now,
            rng: setup.seed | 1,
            out: VecDeque::new(),
            next_ticket: 1,
            pending: HashMap::new(),
            register_batches: HashMap::new(),
            hangup_batches: HashMap::new(),
            next_batch: 1,
            stats: setup.stats,
            exiting: None,
        };
        core.levels.speaker = core.config.settings.volume_output.min(100);
        core.levels.microphone = core.config.settings.volume_input.min(100);
        core.media(MediaAction::SetLevels(core.levels));
        core.load_accounts();
        core.reload_contacts();
        if let Some((_, account)) = &core.call_on_start {
            // The call goes out from the account named, else the active one: wait for
            // that one's registration, if it registers at all.
            let from = account.unwrap_or(core.active_account);
            let waits = core.accounts.get(&from).is_some_and(|s| s.registers);
            if !waits {
                core.dial_on_start();
            }
        }
        core.update_ringer();
        core
    }

    // ------------------------------------------------------------ the loop

    /// Takes one input at `now`.
    pub fn handle(&mut self, input: Input, now: Now) {
        self.now = now;
        match input {
            Input::Command { reply, command } => self.apply(command, reply),
            Input::Leg { leg, signal } => self.on_leg_signal(leg, signal),
            Input::Registration(event) => self.on_registration(event),
            Input::Message(message) => self.on_message(message),
            Input::Presence(event) => self.on_presence(event),
            Input::Media(event) => self.on_media_event(event),
            Input::Done { ticket, result } => self.on_done(ticket, result),
            Input::Network(change) => self.on_network(change),
        }
        self.after_input();
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Now) {
        self.now = now;
        while let Some(timer) = self.timers.pop_due(now.mono) {
            self.on_timer(timer);
        }
        self.after_input();
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When the core next wants [`Core::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// How many calls there are (in any state).
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// Where things stand, for a new subscriber (live events follow from its
    /// `seq + 1`).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            kind: "snapshot",
            seq: self.seq,
            time: microsip_sip::time::rfc3339(self.now.wall),
            accounts: self.account_views(),
            calls: self.call_views(),
        }
    }

    fn after_input(&mut self) {
        self.update_ringer();
        self.check_exit();
    }

    // ------------------------------------------------------ output helpers

    pub(crate) fn reply(&mut self, to: Option<ReplyTo>, reply: Reply) {
        match to {
            Some(to) => self.out.push_back(Output::Reply { to, reply }),
            None => {
                if let Err(f) = reply {
                    warn!("{}", f.message);
                }
            }
        }
    }

    fn ticket(&mut self, then: Option<Then>) -> Option<Ticket> {
        let then = then?;
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.pending.insert(ticket, then);
        Some(ticket)
    }

    /// Asks the SIP stack for `action`; `then` says what to do with its result.
    pub(crate) fn sip_then(&mut self, action: SipAction, then: Option<Then>) {
        let ticket = self.ticket(then);
        self.out.push_back(Output::Sip { ticket, action });
    }

    pub(crate) fn sip(&mut self, action: SipAction) {
        self.sip_then(action, None);
    }

    pub(crate) fn media_then(&mut self, action: MediaAction, then: Option<Then>) {
        let ticket = self.ticket(then);
        self.out.push_back(Output::Media { ticket, action });
    }

    pub(crate) fn media(&mut self, action: MediaAction) {
        self.media_then(action, None);
    }

    pub(crate) fn store_then(&mut self, action: StoreAction, then: Option<Then>) {
        let ticket = self.ticket(then);
        self.out.push_back(Output::Store { ticket, action });
    }

    /// Sets one ini key (in order, off the signalling task), then gives the command
    /// `answer` (the change is on disk when a script reads the ini next). `must`: a
    /// failed write fails the command (a password); else it is only logged.
    pub(crate) fn store_setting(
        &mut self,
        (section, key, value): (&str, &str, &str),
        reply: Option<ReplyTo>,
        answer: Reply,
        must: bool,
    ) {
        self.store_then(
            StoreAction::SetConfig {
                section: section.to_string(),
                key: key.to_string(),
                value: value.to_string(),
            },
            Some(Then::Stored {
                what: format!("[{section}] {key}"),
                reply,
                answer,
                must,
            }),
        );
    }

    /// Arms a timer `after` from now.
    pub(crate) fn set_timer(&mut self, after: Duration, timer: Timer) {
        let at = self.now.mono + after;
        self.timers.set(at, timer);
    }

    /// A new call id (also the SIP leg of the calls we place).
    pub(crate) fn new_call_id(&mut self) -> CallId {
        loop {
            let id = self.next_call;
            self.next_call += 1;
            if !self.calls.contains_key(&id) && !self.legs.contains_key(&id) {
                return id;
            }
        }
    }

    /// A pseudo-random 63-bit number (xorshift, seeded by the driver).
    pub(crate) fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x >> 1
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
            time: microsip_sip::time::rfc3339(self.now.wall),
            account,
            kind,
        };
        self.out.push_back(Output::Event(event));
    }

    /// A call's media counters, if it has media.
    pub(crate) fn media_stats(&self, call: CallId) -> Option<MediaStats> {
        self.stats.stats(call)
    }

    // ------------------------------------------------------------ accounts

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
            match account.srtp {
                Srtp::Dtls => warn!(
                    "account {}: SRTP=dtls: DTLS-SRTP is not supported; its calls are refused \
                     (SRTP=mandatory gives SDES-keyed SRTP)",
                    account.number
                ),
                Srtp::DtlsSdes => warn!(
                    "account {}: SRTP=dtls-sdes: DTLS-SRTP is not supported; its calls use \
                     SDES-keyed SRTP as SRTP=mandatory",
                    account.number
                ),
                Srtp::Disabled | Srtp::Optional | Srtp::Mandatory => {}
            }
            let mut registers = false;
            if let (RegState::Registering, Some(rc)) = (
                &state,
                registration_config(
                    &account,
                    self.config.settings.rport,
                    &self.config.settings.tls_ca_file,
                    self.sip_public,
                ),
            ) {
                registers = true;
                self.sip(SipAction::StartRegistration(Box::new(rc)));
            }
            self.accounts.insert(
                account.number,
                AccountSlot {
                    account,
                    registers,
                    state,
                },
            );
        }
    }

    fn dial_on_start(&mut self) {
        if let Some((target, account)) = self.call_on_start.take() {
            info!("--call {target}: dialling");
            self.dial(DialRequest::new(&target, account), None);
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

    /// Applies one command. Those that wait for the network or a disk reply when
    /// their result comes back.
    fn apply(&mut self, command: Command, reply: ReplyTo) {
        if self.exiting.is_some() && !matches!(command, Command::Status { .. }) {
            self.reply(
                Some(reply),
                fail(ErrorCode::Stopping, "the phone is stopping"),
            );
            return;
        }
        let r = Some(reply);
        let answer = match command {
            Command::Status { form } => self.status(form),
            Command::Dial {
                target,
                account,
                hold_active,
                numeric,
            } => {
                self.remember_dialled(&target, account);
                return self.dial(
                    DialRequest {
                        hold_active,
                        numeric,
                        ..DialRequest::new(&target, account)
                    },
                    r,
                );
            }
            Command::Redial => return self.redial(reply),
            Command::Callback => return self.callback(reply),
            Command::Answer { call } => return self.answer(call, r),
            Command::Reject { call, code } => self.reject(call, code),
            Command::Hangup { call } => return self.hangup(call, reply),
            Command::HangupAll => return self.hangup_many(false, reply),
            Command::HangupCalling => return self.hangup_many(true, reply),
            Command::Hold { call, on } => return self.hold(call, on, r),
            Command::Transfer { target, call } => return self.transfer(&target, call, r),
            Command::ActiveCall => self.active_remote(),
            Command::Dtmf { digits, call } => self.dtmf(&digits, call),
            Command::Message { target, text } => return self.send_text(&target, &text, reply),
            Command::Messages { contact } => return self.list_messages(contact, reply),
            Command::History { missed, limit } => return self.list_history(missed, limit, reply),
            Command::Contacts { action } => return self.contacts(action, reply),
            Command::Record { call, on } => return self.record(call, on, r),
            Command::Play { file, call, at_end } => return self.play(file, call, at_end, reply),
            Command::Conference { action } => self.conference(action),
            // The media thread's stream clients are reached by the engine handle
            // (`EngineHandle::execute` answers `media` before it gets here).
            Command::Media { .. } => fail(
                ErrorCode::NotAvailableYet,
                "media streams are not available in this engine",
            ),
            Command::Mute { on } => self.set_mute(false, on),
            Command::SpeakerMute { on } => self.set_mute(true, on),
            Command::AutoAnswer { on } => self.set_auto_answer(on),
            Command::Level { kind, change } => return self.set_level(kind, change, reply),
            Command::Levels => self.levels_now(),
            Command::Calls => self.list_calls(),
            Command::Window { state } => ok(match state {
                WindowState::Normal => "no window: running headless",
                WindowState::Minimized => "no window: running headless (minimized)",
                WindowState::Hidden => "no window: running headless (hidden)",
            }),
            Command::Register { account } => return self.register(account, true, reply),
            Command::Unregister { account } => return self.register(account, false, reply),
            Command::Account { number, password } => return self.account(number, password, reply),
            Command::Events { .. } => fail(
                ErrorCode::BadArgument,
                "events is a stream: ask for it on the socket (microsip events)",
            ),
            Command::Exit => return self.exit(reply),
            Command::Devices => return self.list_devices(reply),
            Command::SetDevice { role, device } => return self.set_device(role, &device, reply),
        };
        self.reply(r, answer);
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
                    _ if !slot.registers => Err(fail(
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
                    .filter(|(_, s)| s.registers)
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

    /// `register`/`unregister`: one exchange per account; the reply comes once every
    /// registrar answered.
    fn register(&mut self, account: Option<u32>, on: bool, reply: ReplyTo) {
        let numbers = match self.targets(account) {
            Ok(n) => n,
            Err(r) => return self.reply(Some(reply), r),
        };
        let batch = self.next_batch;
        self.next_batch += 1;
        self.register_batches.insert(
            batch,
            RegisterBatch {
                reply,
                on,
                waiting: numbers.len(),
                done: Vec::new(),
            },
        );
        for n in &numbers {
            if on {
                if let Some(slot) = self.accounts.get_mut(n) {
                    slot.state = RegState::Registering;
                }
                self.publish(EventKind::AccountRegistering { account: *n });
            }
        }
        for n in numbers {
            self.sip_then(
                SipAction::Register { account: n, on },
                Some(Then::Register { batch, account: n }),
            );
        }
    }

    /// One account of a `register` batch answered.
    pub(crate) fn on_registered(&mut self, batch: u64, account: u32, outcome: Outcome) {
        let Some(b) = self.register_batches.get_mut(&batch) else {
            return;
        };
        b.done.push((account, outcome));
        b.waiting = b.waiting.saturating_sub(1);
        if b.waiting > 0 {
            return;
        }
        if let Some(mut b) = self.register_batches.remove(&batch) {
            b.done.sort_by_key(|(n, _)| *n);
            let answer = summarize(&b.done, b.on);
            self.reply(Some(b.reply), answer);
        }
    }

    fn account(&mut self, number: u32, password: Option<Secret>, reply: ReplyTo) {
        let Some(slot) = self.accounts.get_mut(&number) else {
            return self.reply(
                Some(reply),
                fail(
                    ErrorCode::NoSuchAccount,
                    format!("there is no account {number}"),
                ),
            );
        };
        let section = slot.account.section();
        if let Some(Secret(password)) = password {
            slot.account.password = Some(password.clone());
            let registers = slot.registers;
            self.store_setting(
                (&section, "password", &password),
                Some(reply),
                ok(format!("password stored for account {number}")),
                true,
            );
            if registers {
                self.sip(SipAction::SetPassword {
                    account: number,
                    password,
                });
            }
            return;
        }
        if let RegState::Inactive(reason) = &slot.state {
            let answer = fail(
                ErrorCode::AccountInactive,
                format!("account {number} is inactive: {reason}"),
            );
            return self.reply(Some(reply), answer);
        }
        let previous = std::mem::replace(&mut self.active_account, number);
        self.config.settings.account_id = number;
        info!("account {number} is now the active account");
        // Contacts' presence follows the active account.
        if previous != number {
            self.presence_sync(previous);
            self.presence_sync(number);
        }
        self.store_setting(
            ("Settings", "accountId", &number.to_string()),
            Some(reply),
            ok_with(
                format!("account {number} active"),
                json!({ "account": number }),
            ),
            false,
        );
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
        self.media(MediaAction::SetLevels(self.levels));
        let what = if speaker { "speaker" } else { "microphone" };
        ok_with(
            format!("{what} {}", if now { "muted" } else { "unmuted" }),
            json!({ "device": what, "muted": now }),
        )
    }

    /// `levels`: the speaker and microphone levels and mutes, as `PUT /levels` takes them.
    fn levels_now(&self) -> Reply {
        let l = self.levels;
        let word = |muted: bool| if muted { "muted" } else { "on" };
        ok_with(
            format!(
                "speaker {} {}, microphone {} {}",
                l.speaker,
                word(l.speaker_muted),
                l.microphone,
                word(l.microphone_muted)
            ),
            json!({
                "speaker": l.speaker,
                "microphone": l.microphone,
                "speakerMuted": l.speaker_muted,
                "microphoneMuted": l.microphone_muted,
            }),
        )
    }

    /// `setvolume`, `volumeup/down`, `setmicvolume`, `micup/down`: replies the new level.
    fn set_level(&mut self, kind: LevelKind, change: LevelChange, reply: ReplyTo) {
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
        self.media(MediaAction::SetLevels(self.levels));
        let (what, key) = match kind {
            LevelKind::Speaker => ("speaker", "volumeOutput"),
            LevelKind::Microphone => ("microphone", "volumeInput"),
        };
        self.store_setting(
            ("Settings", key, &new.to_string()),
            Some(reply),
            ok_with(new.to_string(), json!({ "device": what, "level": new })),
            false,
        );
    }

    // ---------------------------------------------------------------- exit

    /// `exit`: ends every call, then un-registers everything (each step bounded by
    /// [`EXIT_GRACE`]), then replies and stops.
    fn exit(&mut self, reply: ReplyTo) {
        self.publish(EventKind::PhoneExiting);
        self.exiting = Some((ExitPhase::Calls, reply));
        let ids: Vec<CallId> = self.calls.keys().copied().collect();
        for id in ids {
            self.end_call(id, None);
        }
        self.set_timer(EXIT_GRACE, Timer::ExitGrace);
        self.check_exit();
    }

    /// Moves `exit` on once the calls are gone.
    fn check_exit(&mut self) {
        if let Some((ExitPhase::Calls, reply)) = self.exiting {
            if self.calls.is_empty() {
                self.stop_everything(reply);
            }
        }
    }

    fn stop_everything(&mut self, reply: ReplyTo) {
        self.exiting = Some((ExitPhase::Unregistering, reply));
        self.timers.cancel(|t| *t == Timer::ExitGrace);
        self.set_timer(EXIT_GRACE, Timer::ExitGrace);
        self.presence.forget_all();
        self.sip_then(SipAction::StopAll, Some(Then::Stopped));
    }

    /// Registrations and subscriptions stopped (or the grace ran out): goodbye.
    pub(crate) fn on_stopped(&mut self, in_time: bool) {
        let Some((_, reply)) = self.exiting else {
            return;
        };
        if !in_time {
            warn!("some registrars did not answer the un-REGISTER in time");
        }
        self.timers.cancel(|_| true);
        self.reply(Some(reply), ok("exiting"));
        self.out.push_back(Output::Stopped);
        // Nothing more happens after this.
        self.exiting = Some((ExitPhase::Unregistering, u64::MAX));
    }

    fn on_exit_grace(&mut self) {
        match self.exiting {
            Some((ExitPhase::Calls, reply)) => {
                let leftover: Vec<CallId> = self.calls.keys().copied().collect();
                for id in leftover {
                    self.finish(id, 408, "phone exiting".into(), "local");
                }
                self.stop_everything(reply);
            }
            Some((ExitPhase::Unregistering, _)) => self.on_stopped(false),
            None => {}
        }
    }

    // ------------------------------------------------------- timers, results

    fn on_timer(&mut self, timer: Timer) {
        match timer {
            Timer::ExitGrace => self.on_exit_grace(),
            other => self.on_call_timer(other),
        }
    }

    fn on_done(&mut self, ticket: Ticket, result: Done) {
        let Some(then) = self.pending.remove(&ticket) else {
            return;
        };
        self.then(then, result);
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
    // `[v6]` without a port.
    if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return inner.parse().ok();
    }
    s.rsplit_once(':').and_then(|(h, _)| h.parse().ok())
}

/// `rport`: the `[Settings]` key (RFC 3581 in our Via; 0 leaves it out).
/// `sip_public`: the SIP socket's address learned by STUN, the Contact's when the
/// account has no `publicAddr` and registers over UDP.
pub(crate) fn registration_config(
    account: &Account,
    rport: bool,
    tls_ca_file: &Option<String>,
    sip_public: Option<std::net::SocketAddr>,
) -> Option<RegistrationConfig> {
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
            Transport::Tls => SipTransport::Tls,
            _ => SipTransport::Udp,
        },
        tls_ca_file: account.tls_ca_file.clone().or_else(|| tls_ca_file.clone()),
        expires: account.register_refresh,
        keep_alive: account.keep_alive,
        public_addr: contact_public_addr(account, sip_public),
        allow_rewrite: account.allow_rewrite,
        rport,
    })
}

/// The public `host[:port]` for an account's Contact: its `publicAddr`, else the SIP
/// socket's STUN-learned address when the account signals over UDP.
pub(crate) fn contact_public_addr(
    account: &Account,
    sip_public: Option<std::net::SocketAddr>,
) -> Option<String> {
    account
        .public_addr
        .clone()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| {
            let udp = !matches!(account.transport, Transport::Tcp | Transport::Tls);
            sip_public.filter(|_| udp).map(|a| a.to_string())
        })
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
        let v6_loopback = Some(IpAddr::from(std::net::Ipv6Addr::LOCALHOST));
        assert_eq!(host_ip("[::1]"), v6_loopback);
        assert_eq!(host_ip("[::1]:5070"), v6_loopback);
        assert_eq!(host_ip("::1"), v6_loopback);
        assert_eq!(
            host_ip("127.0.0.1:5070"),
            Some(IpAddr::from([127, 0, 0, 1]))
        );
        assert_eq!(host_ip("[::1]:5070"), "::1".parse().ok());
        assert_eq!(host_ip("pbx.example.com:5060"), None);
    }

    fn account_of(keys: &str) -> Account {
        let ini = format!("[Settings]\naccountId=1\n[Account1]\nserver=203.0.113.1\n{keys}");
        let (doc, _) = microsip_config::IniDocument::parse(ini.as_bytes());
        let config = Config::from_document(&doc, "/nonexistent/microsip.ini");
        config.accounts.into_iter().find(|a| a.number == 1).unwrap()
    }

    #[test]
    fn the_contact_takes_public_addr_then_stun_and_stun_only_on_udp() {
        let stun: std::net::SocketAddr = "203.0.113.11:5060".parse().unwrap();
        let udp = account_of("transport=udp\n");
        assert_eq!(
            contact_public_addr(&udp, Some(stun)).as_deref(),
            Some("203.0.113.11:5060")
        );
        assert_eq!(contact_public_addr(&udp, None), None);
        let configured = account_of("transport=udp\npublicAddr=198.51.100.7\n");
        assert_eq!(
            contact_public_addr(&configured, Some(stun)).as_deref(),
            Some("198.51.100.7")
        );
        // The SIP socket's UDP mapping says nothing about a TCP connection.
        let tcp = account_of("transport=tcp\n");
        assert_eq!(contact_public_addr(&tcp, Some(stun)), None);
    }
}
