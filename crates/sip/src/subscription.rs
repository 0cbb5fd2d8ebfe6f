//! Event subscriptions (RFC 6665) and presence publication (RFC 3903), one task
//! each. A [`Subscription`] SUBSCRIBEs to a package (presence of a contact, or the
//! message-summary of our own mailbox), answers digest challenges, refreshes before
//! expiry, takes the NOTIFYs the dispatcher routes to it by Call-ID and our tag,
//! reads their bodies, resubscribes when the notifier ends the subscription with a
//! reason that allows it, and unsubscribes (Expires: 0) when stopped. A
//! [`Publication`] PUBLISHes our own PIDF status and refreshes it with
//! SIP-If-Match, removing it when stopped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{
    CallId, Contact, Expires, Header, Headers, Method, Param, Request, Response, Route, StatusCode,
    Uri,
};
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transaction::{make_tag, random_text};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::call::{content_type, strip_angle, CallerAccount, Calls};
use crate::digest::{answer, pick_challenge, Challenge};
use crate::event_bodies::{
    parse_message_summary, parse_pidf, pidf_document, MessageSummary, Presence,
};
use crate::message::MessageSender;
use crate::refresh::{RefreshSchedule, SUBSCRIBE_REFUSALS};
use crate::registration::reason_of;
use crate::request::{send_and_wait, NoAnswer};
use crate::stack::SipStack;

/// How long we wait for the answer to a SUBSCRIBE or PUBLISH.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an unsubscribe or unpublish may take when stopping.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// Where NOTIFYs go: `call-id` + our tag → the subscription's task.
pub(crate) type NotifyRoutes = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Transaction>>>>;

fn route_key(call_id: &str, tag: &str) -> String {
    format!("{call_id}\n{tag}")
}

/// Hands a NOTIFY to the subscription it belongs to; gives it back when none does.
pub(crate) fn route_notify(routes: &NotifyRoutes, tx: Transaction) -> Option<Transaction> {
    let call_id = tx
        .original
        .call_id_header()
        .ok()
        .map(|c| c.value().to_string());
    let tag = tx
        .original
        .to_header()
        .ok()
        .and_then(|t| t.tag().ok().flatten())
        .map(|t| t.value().to_string());
    let (Some(call_id), Some(tag)) = (call_id, tag) else {
        return Some(tx);
    };
    let sender = routes
        .lock()
        .ok()
        .and_then(|r| r.get(&route_key(&call_id, &tag)).cloned());
    match sender {
        Some(s) => s.send(tx).err().map(|e| e.0),
        None => Some(tx),
    }
}

/// The event package subscribed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Package {
    /// `presence`, bodies `application/pidf+xml`.
    Presence,
    /// `message-summary` (MWI), bodies `application/simple-message-summary`.
    MessageSummary,
}

impl Package {
    /// The `Event` header's value: `presence` or `message-summary`.
    pub fn event(self) -> &'static str {
        match self {
            Package::Presence => "presence",
            Package::MessageSummary => "message-summary",
        }
    }
    fn accept(self) -> &'static str {
        match self {
            Package::Presence => "application/pidf+xml",
            Package::MessageSummary => "application/simple-message-summary",
        }
    }
}

/// What a subscription or publication reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionEvent {
    /// A presence document arrived for `target`.
    Presence {
        /// The id the subscription was started with.
        id: u64,
        /// The account that subscribes.
        account: u32,
        /// The URI subscribed to.
        target: String,
        /// What the document says.
        presence: Presence,
    },
    /// A message summary arrived.
    MessageSummary {
        /// The id the subscription was started with.
        id: u64,
        /// The account that subscribes.
        account: u32,
        /// The URI subscribed to (the mailbox).
        target: String,
        /// What the summary says.
        summary: MessageSummary,
    },
    /// The subscription (or publication) changed state: `active`, `pending`,
    /// `terminated` (by the notifier; `reason` says why), `failed` (the request was
    /// refused: `code`), `published`.
    State {
        /// The id the subscription or publication was started with.
        id: u64,
        /// The account.
        account: u32,
        /// The URI subscribed to (or published for).
        target: String,
        /// The event package.
        package: Package,
        /// The new state (see above).
        state: &'static str,
        /// The status code: the refusal's with `failed`, the answer's with `published`, else 200.
        code: u16,
        /// Why, in words (`subscribed`, the refusal's reason, the termination's reason).
        reason: String,
    },
}

/// A way to start subscriptions and publications on the stack.
#[derive(Clone)]
pub struct Subscriber {
    sender: MessageSender,
    calls: Calls,
    routes: NotifyRoutes,
}

impl SipStack {
    /// A handle for starting subscriptions and publications.
    pub fn subscriber(&self) -> Subscriber {
        Subscriber {
            sender: self.message_sender(),
            calls: self.calls().clone(),
            routes: self.notify_routes.clone(),
        }
    }
}

/// What one subscription needs.
#[derive(Clone)]
pub struct SubscriptionConfig {
    /// The caller's id for this subscription, echoed in events.
    pub id: u64,
    /// The account that subscribes.
    pub account: u32,
    /// The identity and credentials the SUBSCRIBE goes out with.
    pub caller: CallerAccount,
    /// Request-URI and To of the initial SUBSCRIBE (`sip:` URI).
    pub target: String,
    /// The event package.
    pub package: Package,
    /// Requested expiry, seconds.
    pub expires: u32,
}

/// The digest state one requester keeps: the last challenge and its nonce count.
#[derive(Default)]
struct Auth {
    challenge: Option<(Challenge, u8)>,
    /// Challenges since the last success.
    rounds: u8,
}

impl Auth {
    fn header(&mut self, caller: &CallerAccount, method: &Method, uri: &Uri) -> Option<Header> {
        let (challenge, nc) = self.challenge.as_mut()?;
        *nc = nc.checked_add(1)?;
        let user = caller
            .auth_id
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| caller.username.clone());
        Some(answer(
            challenge,
            method,
            uri,
            &user,
            &caller.password,
            &random_text(12),
            *nc,
        ))
    }

    /// A 401/407 came: true when we should answer it (a first challenge, or a
    /// stale nonce), false when the credentials were refused.
    fn challenged(&mut self, resp: &Response, sent_with_auth: bool) -> bool {
        let Some(challenge) = pick_challenge(resp) else {
            return false;
        };
        self.rounds += 1;
        if (sent_with_auth && !challenge.is_stale()) || self.rounds > 3 {
            self.challenge = None;
            return false;
        }
        self.challenge = Some((challenge, 0));
        true
    }
}

/// One dialog's identifiers and route.
struct Dialog {
    call_id: String,
    local_tag: String,
    remote_tag: Option<String>,
    /// Where in-dialog requests go (the notifier's Contact).
    remote_target: Option<Uri>,
    /// Route set, first hop first, each `<uri>`.
    route_set: Vec<String>,
    cseq: u32,
    /// A 2xx (or a NOTIFY) established it.
    established: bool,
}

impl Dialog {
    fn new() -> Dialog {
        Dialog {
            call_id: format!("{}@microsip-rs", random_text(20)),
            local_tag: make_tag().to_string(),
            remote_tag: None,
            remote_target: None,
            route_set: Vec::new(),
            cseq: 0,
            established: false,
        }
    }
}

/// The values of every header named `name` (or its compact form), in order.
fn header_values(headers: &Headers, names: &[&str]) -> Vec<String> {
    headers
        .iter()
        .filter(|h| names.iter().any(|n| h.name().eq_ignore_ascii_case(n)))
        .map(|h| h.value().trim().to_string())
        .collect()
}

fn header_value(headers: &Headers, names: &[&str]) -> Option<String> {
    header_values(headers, names).into_iter().next()
}

/// The individual entries of Record-Route headers, in message order.
fn record_routes(headers: &Headers) -> Vec<String> {
    header_values(headers, &["Record-Route"])
        .iter()
        .flat_map(|v| split_list(v))
        .collect()
}

/// Splits a header list on commas outside `<...>` and quotes.
fn split_list(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut quoted = false;
    let mut start = 0;
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => depth += 1,
            '>' if !quoted => depth -= 1,
            ',' if !quoted && depth <= 0 => {
                out.push(value[start..i].trim().to_string());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value[start..].trim().to_string());
    out.retain(|s| !s.is_empty());
    out
}

/// `name;a=1;b=2` → (`name`, params lower-cased).
fn split_params(value: &str) -> (String, HashMap<String, String>) {
    let mut parts = value.split(';');
    let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let params = parts
        .filter_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let k = k.trim().to_ascii_lowercase();
            (!k.is_empty()).then(|| (k, v.trim().trim_matches('"').to_string()))
        })
        .collect();
    (name, params)
}

fn expires_of(resp: &Response) -> Option<u32> {
    resp.expires_header()
        .and_then(|h| h.value().trim().parse::<u32>().ok())
}

fn retry_after(headers: &Headers) -> Option<u32> {
    header_value(headers, &["Retry-After"])
        .and_then(|v| v.split([';', '(', ' ']).next().map(str::to_string))
        .and_then(|v| v.trim().parse::<u32>().ok())
}

/// What a NOTIFY asks of the subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Nothing changes.
    Stay,
    /// Still active; the notifier grants this many seconds.
    Expires(u32),
    /// Ended; subscribe again (new dialog) after this many seconds.
    Resubscribe(u32),
    /// Ended for good.
    Ended,
}

/// What to do when the notifier ends the subscription (RFC 6665 §4.1.3):
/// `deactivated` / `timeout`: subscribe again at once; `probation` / `giveup` / no
/// reason: again after `retry-after` (30 s when absent); `rejected`, `noresource`,
/// `invariant` and unknown reasons: only when a `retry-after` is given.
fn after_termination(reason: &str, retry_after: Option<u32>) -> Next {
    match reason {
        "deactivated" | "timeout" => Next::Resubscribe(retry_after.unwrap_or(0)),
        "probation" | "giveup" | "" => Next::Resubscribe(retry_after.unwrap_or(30)),
        _ => match retry_after {
            Some(r) => Next::Resubscribe(r),
            None => Next::Ended,
        },
    }
}

/// Plans the next SUBSCRIBE after one failed with `code`: at once when a refresh
/// found that the notifier lost our dialog (481) or did not answer (408) and this is
/// the first failure since the last success; else after the back-off (refusals such
/// as 404, 405, 489, 501 and 603 from 30 s; a Retry-After wins). Returns the wait in
/// seconds.
fn after_failed_subscribe(
    schedule: &mut RefreshSchedule,
    now: Instant,
    refresh: bool,
    code: u16,
    retry_after: Option<u32>,
) -> u32 {
    let wait = schedule.failed(now, code, retry_after);
    if refresh && matches!(code, 481 | 408) && schedule.failures() == 1 {
        schedule.due_now(now);
        return 0;
    }
    wait
}

enum Control {
    Stop(oneshot::Sender<()>),
}

/// A handle on one subscription's task.
pub struct Subscription {
    control: mpsc::UnboundedSender<Control>,
}

impl Subscription {
    /// Starts the task; it subscribes at once.
    pub fn start(
        subscriber: &Subscriber,
        config: SubscriptionConfig,
        events: mpsc::UnboundedSender<SubscriptionEvent>,
    ) -> Subscription {
        let (control, rx) = mpsc::unbounded_channel();
        let (notify_tx, notify_rx) = mpsc::unbounded_channel();
        let sub = Sub {
            subscriber: subscriber.clone(),
            config,
            events,
            dialog: Dialog::new(),
            auth: Auth::default(),
            notify_tx,
            notifies: notify_rx,
            pending: None,
        };
        tokio::spawn(run_subscription(sub, rx));
        Subscription { control }
    }

    /// Unsubscribes (bounded in time) and ends the task.
    pub async fn stop(&self) {
        let (tx, rx) = oneshot::channel();
        if self.control.send(Control::Stop(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

struct Sub {
    subscriber: Subscriber,
    config: SubscriptionConfig,
    events: mpsc::UnboundedSender<SubscriptionEvent>,
    dialog: Dialog,
    auth: Auth,
    notify_tx: mpsc::UnboundedSender<Transaction>,
    notifies: mpsc::UnboundedReceiver<Transaction>,
    /// What a NOTIFY handled during an exchange asked for.
    pending: Option<Next>,
}

/// What the subscription task does on the network: the real [`Sub`], or a scripted
/// notifier in the tests.
trait Subscribing {
    /// A NOTIFY as it arrives.
    type Notify;
    /// The expiry to ask for (a 423 may have raised it).
    fn expires(&self) -> u32;
    /// A 2xx or a NOTIFY established the dialog: the next SUBSCRIBE is a refresh.
    fn established(&self) -> bool;
    fn report(&self, state: &'static str, code: u16, reason: &str);
    /// Adds (or removes) the dialog's NOTIFY route.
    fn route(&self, add: bool);
    /// Drops the dialog; the next SUBSCRIBE starts a new one.
    fn new_dialog(&mut self);
    /// The next NOTIFY for this dialog (cancel-safe).
    async fn next_notify(&mut self) -> Option<Self::Notify>;
    /// Answers one NOTIFY; says what the subscription does next.
    async fn on_notify(&mut self, notify: Self::Notify) -> Next;
    /// One SUBSCRIBE exchange (`expires` 0 unsubscribes). Ok: the granted expiry;
    /// Err: code, reason, Retry-After.
    async fn exchange(&mut self, expires: u32) -> Result<u32, (u16, String, Option<u32>)>;
    /// What a NOTIFY handled during the last exchange asked for.
    fn take_pending(&mut self) -> Option<Next>;
}

impl Subscribing for Sub {
    type Notify = Transaction;
    fn expires(&self) -> u32 {
        self.config.expires
    }
    fn established(&self) -> bool {
        self.dialog.established
    }
    fn report(&self, state: &'static str, code: u16, reason: &str) {
        Sub::report(self, state, code, reason)
    }
    fn route(&self, add: bool) {
        Sub::route(self, add)
    }
    fn new_dialog(&mut self) {
        Sub::new_dialog(self)
    }
    async fn next_notify(&mut self) -> Option<Transaction> {
        self.notifies.recv().await
    }
    async fn on_notify(&mut self, notify: Transaction) -> Next {
        Sub::on_notify(self, notify).await
    }
    async fn exchange(&mut self, expires: u32) -> Result<u32, (u16, String, Option<u32>)> {
        Sub::exchange(self, expires).await
    }
    fn take_pending(&mut self) -> Option<Next> {
        self.pending.take()
    }
}

/// Applies what a NOTIFY asked to the refresh schedule.
fn follow<S: Subscribing>(sub: &mut S, asked: Next, schedule: &mut RefreshSchedule) {
    match asked {
        Next::Stay => {}
        Next::Expires(secs) => schedule.expires_in(Instant::now(), secs.max(1)),
        Next::Resubscribe(after) => {
            sub.new_dialog();
            schedule.due_in(Instant::now(), after);
        }
        Next::Ended => {
            sub.new_dialog();
            schedule.stop();
        }
    }
}

/// The subscription task: subscribes at once, refreshes before expiry, backs off
/// after failures (all timing in its [`RefreshSchedule`]), follows what NOTIFYs ask,
/// and unsubscribes (bounded in time) when stopped.
async fn run_subscription<S: Subscribing>(
    mut sub: S,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    sub.route(true);
    let mut schedule = RefreshSchedule::new(SUBSCRIBE_REFUSALS);
    schedule.due_now(Instant::now());
    loop {
        tokio::select! {
            c = control.recv() => {
                if sub.established() {
                    let _ = tokio::time::timeout(STOP_TIMEOUT, sub.exchange(0)).await;
                }
                sub.route(false);
                if let Some(Control::Stop(done)) = c {
                    let _ = done.send(());
                }
                return;
            }
            Some(notify) = sub.next_notify() => {
                let asked = sub.on_notify(notify).await;
                follow(&mut sub, asked, &mut schedule);
            }
            _ = schedule.wait() => {
                let refresh = sub.established();
                let result = sub.exchange(sub.expires()).await;
                match result {
                    Ok(granted) => {
                        if !refresh {
                            sub.report("active", 200, "subscribed");
                        }
                        schedule.succeeded(Instant::now(), granted.max(10));
                    }
                    Err((code, reason, retry)) => {
                        sub.report("failed", code, &reason);
                        sub.new_dialog();
                        after_failed_subscribe(&mut schedule, Instant::now(), refresh, code, retry);
                    }
                };
                if let Some(asked) = sub.take_pending() {
                    follow(&mut sub, asked, &mut schedule);
                }
            }
        }
    }
}

impl Sub {
    fn target_text(&self) -> String {
        self.config.target.clone()
    }

    fn report(&self, state: &'static str, code: u16, reason: &str) {
        let _ = self.events.send(SubscriptionEvent::State {
            id: self.config.id,
            account: self.config.account,
            target: self.target_text(),
            package: self.config.package,
            state,
            code,
            reason: reason.to_string(),
        });
    }

    /// Adds (or removes) this dialog's NOTIFY route.
    fn route(&self, add: bool) {
        if let Ok(mut routes) = self.subscriber.routes.lock() {
            let key = route_key(&self.dialog.call_id, &self.dialog.local_tag);
            if add {
                routes.insert(key, self.notify_tx.clone());
            } else {
                routes.remove(&key);
            }
        }
    }

    fn new_dialog(&mut self) {
        self.route(false);
        self.dialog = Dialog::new();
        self.auth = Auth::default();
        self.route(true);
    }

    /// The first hop of a request to `request_uri`: in a dialog the first route, else
    /// the notifier's Contact; outside, the outbound proxy, else the target.
    fn next_hop(&self, request_uri: &Uri) -> rsipstack::sip::HostWithPort {
        let uri_host = |text: &str| {
            Uri::try_from(text)
                .map(|u| u.host_with_port)
                .unwrap_or_else(|_| request_uri.host_with_port.clone())
        };
        match self.dialog.route_set.first() {
            Some(r) if self.dialog.established => uri_host(&strip_angle(r)),
            _ if self.dialog.established => request_uri.host_with_port.clone(),
            _ => match self.config.caller.outbound.as_deref() {
                Some(o) => uri_host(&format!("sip:{o}")),
                None => request_uri.host_with_port.clone(),
            },
        }
    }

    fn build(&mut self, expires: u32, auth: Option<Header>) -> Result<Request, String> {
        let caller = &self.config.caller;
        let target = Uri::try_from(self.config.target.as_str())
            .map_err(|e| format!("bad target {}: {e}", self.config.target))?;
        let aor = Uri::try_from(format!("sip:{}@{}", caller.username, caller.domain).as_str())
            .map_err(|e| format!("bad account address: {e}"))?;
        let request_uri = match (&self.dialog.remote_target, self.dialog.established) {
            (Some(t), true) => t.clone(),
            _ => target.clone(),
        };
        let next = self.next_hop(&request_uri);
        let (_, _, local) = self.subscriber.sender.hop(caller.tcp, next);
        let inner = self.subscriber.sender.inner();
        let via = inner
            .get_via(local, None)
            .map_err(|e| format!("no local address: {e}"))?;
        self.dialog.cseq += 1;
        let from = rsipstack::sip::typed::From {
            display_name: caller.display_name.clone(),
            uri: aor,
            params: vec![Param::Tag(self.dialog.local_tag.clone().into())],
        };
        let to_params = match (&self.dialog.remote_tag, self.dialog.established) {
            (Some(tag), true) => vec![Param::Tag(tag.clone().into())],
            _ => vec![],
        };
        let to = rsipstack::sip::typed::To {
            display_name: None,
            uri: target,
            params: to_params,
        };
        let mut req = inner.make_request(
            Method::Subscribe,
            request_uri,
            via,
            from,
            to,
            self.dialog.cseq,
            Some(CallId::new(self.dialog.call_id.clone())),
        );
        if self.dialog.established {
            for r in &self.dialog.route_set {
                req.headers.push(Route::new(r.clone()).into());
            }
        }
        let contact = self.subscriber.calls.contact(
            &caller.username,
            caller.tcp && self.subscriber.sender.tcp(),
            caller.public_addr.as_deref(),
        );
        req.headers
            .push(Contact::new(format!("<{contact}>")).into());
        req.headers.push(Header::Other(
            "Event".into(),
            self.config.package.event().into(),
        ));
        req.headers
            .push(Header::Accept(self.config.package.accept().into()));
        req.headers.push(Expires::from(expires).into());
        req.headers.push(Header::Allow(crate::stack::ALLOW.into()));
        if let Some(auth) = auth {
            req.headers.push(auth);
        }
        Ok(req)
    }

    /// Sends `req` and waits for its final answer, handling NOTIFYs meanwhile (they
    /// may overtake the 2xx).
    async fn transact(&mut self, req: Request) -> Result<Response, NoAnswer> {
        let caller = &self.config.caller;
        let next = self.next_hop(&req.uri);
        let (destination, connection, _) = self.subscriber.sender.hop(caller.tcp, next);
        let answer = send_and_wait(
            self.subscriber.sender.inner(),
            req,
            connection,
            destination,
            ANSWER_TIMEOUT,
        );
        tokio::pin!(answer);
        loop {
            tokio::select! {
                out = &mut answer => return out,
                Some(tx) = self.notifies.recv() => {
                    let asked = self.on_notify(tx).await;
                    if asked != Next::Stay {
                        self.pending = Some(asked);
                    }
                }
            }
        }
    }

    /// One SUBSCRIBE exchange (initial or refresh; `expires` 0 unsubscribes), with
    /// digest answers and a 423 retry. Ok: the granted expiry.
    async fn exchange(&mut self, expires: u32) -> Result<u32, (u16, String, Option<u32>)> {
        let mut expires = expires;
        self.auth.rounds = 0;
        for _round in 0..6 {
            let uri = match (&self.dialog.remote_target, self.dialog.established) {
                (Some(t), true) => t.clone(),
                _ => Uri::try_from(self.config.target.as_str())
                    .map_err(|e| (400, format!("bad target: {e}"), None))?,
            };
            let auth = self
                .auth
                .header(&self.config.caller, &Method::Subscribe, &uri);
            let with_auth = auth.is_some();
            let req = self.build(expires, auth).map_err(|e| (400u16, e, None))?;
            let resp = match self.transact(req).await {
                Ok(r) => r,
                Err(NoAnswer::Unsent(e)) => return Err((503, e, None)),
                Err(NoAnswer::Timeout) => {
                    return Err((408, "Request Timeout (no answer)".into(), None))
                }
            };
            let code = resp.status_code.code();
            match code {
                200..=299 => {
                    if expires > 0 {
                        self.establish_from_response(&resp);
                    }
                    return Ok(expires_of(&resp).unwrap_or(expires).min(expires.max(1)));
                }
                401 | 407 => {
                    if !self.auth.challenged(&resp, with_auth) {
                        return Err((code, reason_of(&resp), None));
                    }
                }
                423 => {
                    let min = resp
                        .min_expires_header()
                        .and_then(|h| h.value().trim().parse::<u32>().ok());
                    match min {
                        Some(min) if min > expires && min <= 86_400 => {
                            expires = min;
                            self.config.expires = min;
                        }
                        _ => return Err((code, reason_of(&resp), None)),
                    }
                }
                _ => return Err((code, reason_of(&resp), retry_after(&resp.headers))),
            }
        }
        Err((500, "too many challenges".into(), None))
    }

    /// The dialog a 2xx creates (UAC side: Record-Route reversed). A NOTIFY may
    /// have created it first; its route set is kept unless it was empty (proxies
    /// record-route the SUBSCRIBE, not always the NOTIFY).
    fn establish_from_response(&mut self, resp: &Response) {
        let tag = resp
            .to_header()
            .ok()
            .and_then(|t| t.tag().ok().flatten())
            .map(|t| t.value().to_string());
        if self.dialog.remote_tag.is_none() {
            self.dialog.remote_tag = tag.clone();
        }
        if tag.is_some() && tag == self.dialog.remote_tag && self.dialog.route_set.is_empty() {
            let mut routes = record_routes(&resp.headers);
            routes.reverse();
            self.dialog.route_set = routes;
        }
        if let Some(c) = header_value(&resp.headers, &["Contact", "m"]) {
            if let Ok(u) = Uri::try_from(strip_angle(&c).as_str()) {
                self.dialog.remote_target = Some(u);
            }
        }
        self.dialog.established = self.dialog.remote_tag.is_some();
    }

    /// Answers one NOTIFY and reports its body; says what the subscription does next.
    async fn on_notify(&mut self, mut tx: Transaction) -> Next {
        let req = tx.original.clone();
        let event = header_value(&req.headers, &["Event", "o"]).unwrap_or_default();
        let (event, _) = split_params(&event);
        if event != self.config.package.event() {
            let _ = tx.reply(StatusCode::BadEvent).await;
            return Next::Stay;
        }
        let Some(state) = header_value(&req.headers, &["Subscription-State"]) else {
            let _ = tx
                .reply_with(
                    StatusCode::BadRequest,
                    vec![Header::Other(
                        "Warning".into(),
                        "399 microsip-rs \"Subscription-State missing\"".into(),
                    )],
                    None,
                )
                .await;
            return Next::Stay;
        };
        let (state, params) = split_params(&state);
        // The first NOTIFY may establish the dialog (before the 2xx; UAS side:
        // Record-Route in order).
        if self.dialog.remote_tag.is_none() {
            self.dialog.remote_tag = req
                .from_header()
                .ok()
                .and_then(|f| f.tag().ok().flatten())
                .map(|t| t.value().to_string());
            self.dialog.route_set = record_routes(&req.headers);
        }
        if let Some(c) = header_value(&req.headers, &["Contact", "m"]) {
            if let Ok(u) = Uri::try_from(strip_angle(&c).as_str()) {
                self.dialog.remote_target = Some(u);
            }
        }
        self.dialog.established = self.dialog.remote_tag.is_some();
        // Answer first: a body we cannot read is our problem, not the notifier's
        // (a failure response would end the subscription, RFC 6665 §4.2.2).
        if let Err(e) = tx.reply(StatusCode::OK).await {
            debug!("answer to NOTIFY not sent: {e}");
        }
        if !req.body.is_empty() {
            self.read_body(&req);
        }
        let param_u32 = |k: &str| params.get(k).and_then(|v| v.parse::<u32>().ok());
        match state.as_str() {
            "active" | "pending" => param_u32("expires").map_or(Next::Stay, Next::Expires),
            "terminated" => {
                let reason = params.get("reason").cloned().unwrap_or_default();
                info!(
                    "{} subscription to {} terminated by the notifier ({})",
                    self.config.package.event(),
                    self.config.target,
                    if reason.is_empty() {
                        "no reason"
                    } else {
                        &reason
                    }
                );
                self.report("terminated", 200, &reason);
                after_termination(&reason, param_u32("retry-after"))
            }
            _ => Next::Stay,
        }
    }

    fn read_body(&self, req: &Request) {
        let ctype = content_type(req).unwrap_or_default().to_ascii_lowercase();
        let wanted = self.config.package.accept();
        if !ctype.is_empty() && !ctype.starts_with(wanted) {
            warn!(
                "NOTIFY from {} has a {ctype} body, not {wanted}: ignored",
                self.config.target
            );
            return;
        }
        let event = match self.config.package {
            Package::Presence => {
                parse_pidf(&req.body).map(|presence| SubscriptionEvent::Presence {
                    id: self.config.id,
                    account: self.config.account,
                    target: self.target_text(),
                    presence,
                })
            }
            Package::MessageSummary => {
                parse_message_summary(&req.body).map(|summary| SubscriptionEvent::MessageSummary {
                    id: self.config.id,
                    account: self.config.account,
                    target: self.target_text(),
                    summary,
                })
            }
        };
        match event {
            Ok(e) => {
                let _ = self.events.send(e);
            }
            Err(e) => warn!(
                "NOTIFY from {}: unreadable {} body: {e}",
                self.config.target,
                self.config.package.event()
            ),
        }
    }
}

/// What a publication needs.
#[derive(Clone)]
pub struct PublishConfig {
    /// The caller's id for this publication, echoed in events.
    pub id: u64,
    /// The account whose presence is published.
    pub account: u32,
    /// The identity and credentials the PUBLISH goes out with.
    pub caller: CallerAccount,
    /// Requested expiry, seconds.
    pub expires: u32,
    /// A `<note>` to publish.
    pub note: Option<String>,
}

/// A handle on one publication's task (our presence, `open` while it runs).
pub struct Publication {
    control: mpsc::UnboundedSender<Control>,
}

impl Publication {
    /// Starts the task; it publishes at once.
    pub fn start(
        subscriber: &Subscriber,
        config: PublishConfig,
        events: mpsc::UnboundedSender<SubscriptionEvent>,
    ) -> Publication {
        let (control, rx) = mpsc::unbounded_channel();
        let publisher = Publisher {
            subscriber: subscriber.clone(),
            config,
            events,
            call_id: format!("{}@microsip-rs", random_text(20)),
            from_tag: make_tag().to_string(),
            cseq: 0,
            etag: None,
            auth: Auth::default(),
        };
        tokio::spawn(run_publication(publisher, rx));
        Publication { control }
    }

    /// Removes the published state (bounded in time) and ends the task.
    pub async fn stop(&self) {
        let (tx, rx) = oneshot::channel();
        if self.control.send(Control::Stop(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

struct Publisher {
    subscriber: Subscriber,
    config: PublishConfig,
    events: mpsc::UnboundedSender<SubscriptionEvent>,
    call_id: String,
    from_tag: String,
    cseq: u32,
    /// The entity tag of our published state (RFC 3903 §4.1).
    etag: Option<String>,
    auth: Auth,
}

/// What the publication task does on the network: the real [`Publisher`], or a
/// scripted server in the tests.
trait Publishing {
    /// The expiry to ask for (a 423 may have raised it).
    fn expires(&self) -> u32;
    /// The server holds our state (we have its entity tag).
    fn published(&self) -> bool;
    fn report(&self, state: &'static str, code: u16, reason: &str);
    /// One PUBLISH exchange (`expires` 0 removes our state). Ok: the granted expiry;
    /// Err: code, reason, Retry-After.
    async fn exchange(&mut self, expires: u32) -> Result<u32, (u16, String, Option<u32>)>;
}

impl Publishing for Publisher {
    fn expires(&self) -> u32 {
        self.config.expires
    }
    fn published(&self) -> bool {
        self.etag.is_some()
    }
    fn report(&self, state: &'static str, code: u16, reason: &str) {
        Publisher::report(self, state, code, reason)
    }
    async fn exchange(&mut self, expires: u32) -> Result<u32, (u16, String, Option<u32>)> {
        Publisher::exchange(self, expires).await
    }
}

/// The publication task: publishes at once, refreshes before expiry, backs off after
/// failures (all timing in its [`RefreshSchedule`]), and removes our state (bounded
/// in time) when stopped.
async fn run_publication<P: Publishing>(mut p: P, mut control: mpsc::UnboundedReceiver<Control>) {
    let mut schedule = RefreshSchedule::new(SUBSCRIBE_REFUSALS);
    schedule.due_now(Instant::now());
    loop {
        tokio::select! {
            c = control.recv() => {
                if p.published() {
                    let _ = tokio::time::timeout(STOP_TIMEOUT, p.exchange(0)).await;
                }
                if let Some(Control::Stop(done)) = c {
                    let _ = done.send(());
                }
                return;
            }
            _ = schedule.wait() => {
                match p.exchange(p.expires()).await {
                    Ok(granted) => {
                        schedule.succeeded(Instant::now(), granted.max(10));
                    }
                    Err((code, reason, retry)) => {
                        p.report("failed", code, &reason);
                        schedule.failed(Instant::now(), code, retry);
                    }
                }
            }
        }
    }
}

impl Publisher {
    fn aor(&self) -> String {
        format!(
            "sip:{}@{}",
            self.config.caller.username, self.config.caller.domain
        )
    }

    fn report(&self, state: &'static str, code: u16, reason: &str) {
        let _ = self.events.send(SubscriptionEvent::State {
            id: self.config.id,
            account: self.config.account,
            target: self.aor(),
            package: Package::Presence,
            state,
            code,
            reason: reason.to_string(),
        });
    }

    /// One PUBLISH exchange: initial (body), refresh (SIP-If-Match, no body) or
    /// removal (`expires` 0). A 412 drops the entity tag and publishes afresh.
    async fn exchange(&mut self, expires: u32) -> Result<u32, (u16, String, Option<u32>)> {
        let mut expires = expires;
        self.auth.rounds = 0;
        let mut fresh_tries = 0;
        for _round in 0..6 {
            let aor = Uri::try_from(self.aor().as_str())
                .map_err(|e| (400u16, format!("bad account address: {e}"), None))?;
            let auth = self
                .auth
                .header(&self.config.caller, &Method::Publish, &aor);
            let with_auth = auth.is_some();
            let caller = &self.config.caller;
            let next = match caller.outbound.as_deref() {
                Some(o) => Uri::try_from(format!("sip:{o}").as_str())
                    .map(|u| u.host_with_port)
                    .map_err(|e| (400u16, format!("bad server {o}: {e}"), None))?,
                None => aor.host_with_port.clone(),
            };
            let (destination, connection, local) = self.subscriber.sender.hop(caller.tcp, next);
            let inner = self.subscriber.sender.inner();
            let via = inner
                .get_via(local, None)
                .map_err(|e| (503u16, format!("no local address: {e}"), None))?;
            self.cseq += 1;
            let from = rsipstack::sip::typed::From {
                display_name: caller.display_name.clone(),
                uri: aor.clone(),
                params: vec![Param::Tag(self.from_tag.clone().into())],
            };
            let to = rsipstack::sip::typed::To {
                display_name: None,
                uri: aor.clone(),
                params: vec![],
            };
            let mut req = inner.make_request(
                Method::Publish,
                aor.clone(),
                via,
                from,
                to,
                self.cseq,
                Some(CallId::new(self.call_id.clone())),
            );
            req.headers
                .push(Header::Other("Event".into(), "presence".into()));
            req.headers.push(Expires::from(expires).into());
            match &self.etag {
                Some(etag) => req
                    .headers
                    .push(Header::Other("SIP-If-Match".into(), etag.clone())),
                None if expires > 0 => {
                    req.headers
                        .push(Header::ContentType("application/pidf+xml".into()));
                    req.body =
                        pidf_document(&self.aor(), true, self.config.note.as_deref()).into_bytes();
                }
                None => return Ok(0),
            }
            if let Some(auth) = auth {
                req.headers.push(auth);
            }
            let resp =
                match send_and_wait(inner, req, connection, destination, ANSWER_TIMEOUT).await {
                    Ok(r) => r,
                    Err(NoAnswer::Unsent(e)) => return Err((503, e, None)),
                    Err(NoAnswer::Timeout) => {
                        return Err((408, "Request Timeout (no answer)".into(), None))
                    }
                };
            let code = resp.status_code.code();
            match code {
                200..=299 => {
                    if expires == 0 {
                        self.etag = None;
                        return Ok(0);
                    }
                    let fresh = self.etag.is_none();
                    self.etag = header_value(&resp.headers, &["SIP-ETag"]);
                    if fresh {
                        self.report("published", code, &reason_of(&resp));
                    }
                    return Ok(expires_of(&resp).unwrap_or(expires).min(expires));
                }
                401 | 407 => {
                    if !self.auth.challenged(&resp, with_auth) {
                        return Err((code, reason_of(&resp), None));
                    }
                }
                412 if fresh_tries == 0 => {
                    // The server forgot our state: publish it again with a body.
                    fresh_tries += 1;
                    self.etag = None;
                    if expires == 0 {
                        return Ok(0);
                    }
                }
                423 => {
                    let min = resp
                        .min_expires_header()
                        .and_then(|h| h.value().trim().parse::<u32>().ok());
                    match min {
                        Some(min) if min > expires && min <= 86_400 => {
                            expires = min;
                            self.config.expires = min;
                        }
                        _ => return Err((code, reason_of(&resp), None)),
                    }
                }
                _ => return Err((code, reason_of(&resp), retry_after(&resp.headers))),
            }
        }
        Err((500, "too many retries".into(), None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    #[test]
    fn lists_and_params() {
        assert_eq!(
            split_list("<sip:a;lr>, <sip:b,c;lr>,\"x,y\" <sip:d>"),
            vec!["<sip:a;lr>", "<sip:b,c;lr>", "\"x,y\" <sip:d>"]
        );
        let (name, p) = split_params("Terminated; reason=deactivated;retry-after=5");
        assert_eq!(name, "terminated");
        assert_eq!(p.get("reason").map(String::as_str), Some("deactivated"));
        assert_eq!(p.get("retry-after").map(String::as_str), Some("5"));
        let (name, p) = split_params("");
        assert_eq!((name.as_str(), p.len()), ("", 0));
    }

    /// Runs a subscription's attempts through the loop's planning: `answers` are
    /// the SUBSCRIBE outcomes (Ok: granted seconds; Err: code), `established` the
    /// dialog state when each is sent. Returns the second of each attempt.
    async fn subscribe_attempts(answers: &[(bool, Result<u32, u16>)]) -> Vec<u64> {
        let start = Instant::now();
        let mut schedule = RefreshSchedule::new(SUBSCRIBE_REFUSALS);
        schedule.due_now(start);
        let mut seen = Vec::new();
        for &(refresh, answer) in answers {
            schedule.wait().await;
            let now = Instant::now();
            seen.push((now - start).as_secs());
            match answer {
                Ok(granted) => {
                    schedule.succeeded(now, granted.max(10));
                }
                Err(code) => {
                    after_failed_subscribe(&mut schedule, now, refresh, code, None);
                }
            }
        }
        seen
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_dialog_is_resubscribed_at_once_then_backed_off() {
        // Subscribed for 60 s; the refresh at 50 s gets 481: a new SUBSCRIBE at
        // once; it fails too (481, no dialog yet): 4 s (second failure in a row).
        let seen = subscribe_attempts(&[
            (false, Ok(60)),
            (true, Err(481)),
            (false, Err(481)),
            (false, Ok(60)),
        ])
        .await;
        assert_eq!(seen, vec![0, 50, 50, 54]);
        // Only the first failure since a success is retried at once, and only on
        // a refresh: an initial 481 backs off.
        let seen = subscribe_attempts(&[
            (false, Ok(60)),
            (true, Err(408)),
            (true, Err(408)),
            (true, Ok(60)),
            (false, Err(481)),
            (false, Ok(60)),
        ])
        .await;
        assert_eq!(seen, vec![0, 50, 50, 54, 104, 106]);
    }

    /// A scripted answer to a SUBSCRIBE or PUBLISH: Ok: granted seconds; Err:
    /// code and Retry-After. Once the script runs out, what was asked is granted.
    type Answer = Result<u32, (u16, Option<u32>)>;

    fn since(start: Instant) -> u64 {
        (Instant::now() - start).as_secs()
    }

    /// A notifier that answers SUBSCRIBEs from a script, takes NOTIFYs as the
    /// [`Next`] they ask for, and logs every request and report with its second.
    struct ScriptedNotifier {
        start: Instant,
        script: VecDeque<Answer>,
        log: mpsc::UnboundedSender<String>,
        notifies: mpsc::UnboundedReceiver<Next>,
        established: bool,
    }

    impl Subscribing for ScriptedNotifier {
        type Notify = Next;
        fn expires(&self) -> u32 {
            60
        }
        fn established(&self) -> bool {
            self.established
        }
        fn report(&self, state: &'static str, code: u16, _reason: &str) {
            let _ = self
                .log
                .send(format!("{} {state} {code}", since(self.start)));
        }
        fn route(&self, _add: bool) {}
        fn new_dialog(&mut self) {
            self.established = false;
        }
        async fn next_notify(&mut self) -> Option<Next> {
            self.notifies.recv().await
        }
        async fn on_notify(&mut self, notify: Next) -> Next {
            notify
        }
        async fn exchange(&mut self, expires: u32) -> Result<u32, (u16, String, Option<u32>)> {
            let in_dialog = if self.established { " in dialog" } else { "" };
            let _ = self.log.send(format!(
                "{} SUBSCRIBE {expires}{in_dialog}",
                since(self.start)
            ));
            match self.script.pop_front().unwrap_or(Ok(expires)) {
                Ok(granted) => {
                    self.established = expires > 0;
                    Ok(granted)
                }
                Err((code, retry_after)) => Err((code, "scripted".into(), retry_after)),
            }
        }
        fn take_pending(&mut self) -> Option<Next> {
            None
        }
    }

    /// The real subscription task on a scripted notifier: its handle, the log, and
    /// where to send NOTIFYs.
    fn start_scripted_subscription(
        script: Vec<Answer>,
    ) -> (
        Subscription,
        mpsc::UnboundedReceiver<String>,
        mpsc::UnboundedSender<Next>,
    ) {
        let (log, log_rx) = mpsc::unbounded_channel();
        let (notify, notifies) = mpsc::unbounded_channel();
        let notifier = ScriptedNotifier {
            start: Instant::now(),
            script: script.into(),
            log,
            notifies,
            established: false,
        };
        let (control, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_subscription(notifier, rx));
        (Subscription { control }, log_rx, notify)
    }

    /// Everything logged until the task ended.
    async fn whole_log(mut log: mpsc::UnboundedReceiver<String>) -> Vec<String> {
        let mut lines = Vec::new();
        while let Some(line) = log.recv().await {
            lines.push(line);
        }
        lines
    }

    #[tokio::test(start_paused = true)]
    async fn the_subscription_task_follows_failures_and_notifies() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let (handle, log, notify) = start_scripted_subscription(vec![
            Ok(60),
            Err((481, None)),
            Ok(60),
            Ok(60),
            Err((489, None)),
        ]);
        // The notifier grants 20 s in a NOTIFY: the refresh due at 100 s comes at 70.
        tokio::time::sleep_until(at(60)).await;
        let _ = notify.send(Next::Expires(20));
        // It ends the subscription, to be renewed in 5 s.
        tokio::time::sleep_until(at(80)).await;
        let _ = notify.send(Next::Resubscribe(5));
        // It ends it for good: nothing more, even a day later.
        tokio::time::sleep_until(at(120)).await;
        let _ = notify.send(Next::Ended);
        tokio::time::sleep_until(at(120 + 86_400)).await;
        handle.stop().await;
        assert_eq!(
            whole_log(log).await,
            vec![
                "0 SUBSCRIBE 60",
                "0 active 200",
                // The refresh finds the dialog lost: a new one at once.
                "50 SUBSCRIBE 60 in dialog",
                "50 failed 481",
                "50 SUBSCRIBE 60",
                "50 active 200",
                "70 SUBSCRIBE 60 in dialog",
                "85 SUBSCRIBE 60",
                // Event package refused: 30 s.
                "85 failed 489",
                "115 SUBSCRIBE 60",
                "115 active 200",
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopped_subscription_unsubscribes_in_its_dialog() {
        let (handle, log, _notify) = start_scripted_subscription(vec![]);
        tokio::time::sleep(Duration::from_secs(10)).await;
        handle.stop().await;
        assert_eq!(
            whole_log(log).await,
            vec!["0 SUBSCRIBE 60", "0 active 200", "10 SUBSCRIBE 0 in dialog"]
        );
    }

    /// A presence server that answers PUBLISHes from a script and logs every request
    /// and report with its second.
    struct ScriptedPresenceServer {
        start: Instant,
        script: VecDeque<Answer>,
        log: mpsc::UnboundedSender<String>,
        published: bool,
    }

    impl Publishing for ScriptedPresenceServer {
        fn expires(&self) -> u32 {
            60
        }
        fn published(&self) -> bool {
            self.published
        }
        fn report(&self, state: &'static str, code: u16, _reason: &str) {
            let _ = self
                .log
                .send(format!("{} {state} {code}", since(self.start)));
        }
        async fn exchange(&mut self, expires: u32) -> Result<u32, (u16, String, Option<u32>)> {
            let _ = self
                .log
                .send(format!("{} PUBLISH {expires}", since(self.start)));
            match self.script.pop_front().unwrap_or(Ok(expires)) {
                Ok(granted) => {
                    self.published = expires > 0;
                    Ok(granted)
                }
                Err((code, retry_after)) => Err((code, "scripted".into(), retry_after)),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_publication_task_honours_retry_after_and_refreshes() {
        let (log, log_rx) = mpsc::unbounded_channel();
        let server = ScriptedPresenceServer {
            start: Instant::now(),
            script: vec![
                Err((503, Some(17))),
                Err((503, None)),
                Ok(60),
                Ok(30),
                Ok(5),
            ]
            .into(),
            log,
            published: false,
        };
        let (control, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_publication(server, rx));
        let handle = Publication { control };
        tokio::time::sleep(Duration::from_secs(95)).await;
        handle.stop().await;
        assert_eq!(
            whole_log(log_rx).await,
            vec![
                "0 PUBLISH 60",
                "0 failed 503",
                // Retry-After: 17 s; then the second failure's back-off, 4 s.
                "17 PUBLISH 60",
                "17 failed 503",
                "21 PUBLISH 60",
                // Granted 60: refresh 10 s before; 30: at half; 5: taken as 10.
                "71 PUBLISH 60",
                "86 PUBLISH 60",
                "91 PUBLISH 60",
                "95 PUBLISH 0",
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_wait_longer_than_timeouts() {
        let now = Instant::now();
        let mut schedule = RefreshSchedule::new(SUBSCRIBE_REFUSALS);
        assert_eq!(
            after_failed_subscribe(&mut schedule, now, false, 408, None),
            2
        );
        assert_eq!(
            after_failed_subscribe(&mut schedule, now, false, 408, None),
            4
        );
        let mut schedule = RefreshSchedule::new(SUBSCRIBE_REFUSALS);
        assert_eq!(
            after_failed_subscribe(&mut schedule, now, true, 489, None),
            30
        );
        assert_eq!(
            after_failed_subscribe(&mut schedule, now, true, 405, None),
            60
        );
        assert_eq!(
            after_failed_subscribe(&mut schedule, now, true, 481, Some(7)),
            7
        );
        for _ in 0..20 {
            after_failed_subscribe(&mut schedule, now, false, 489, None);
        }
        assert_eq!(
            after_failed_subscribe(&mut schedule, now, false, 489, None),
            300
        );
    }

    #[test]
    fn termination_reasons() {
        assert_eq!(after_termination("deactivated", None), Next::Resubscribe(0));
        assert_eq!(after_termination("timeout", Some(5)), Next::Resubscribe(5));
        assert_eq!(after_termination("probation", None), Next::Resubscribe(30));
        assert_eq!(after_termination("", None), Next::Resubscribe(30));
        assert_eq!(after_termination("rejected", None), Next::Ended);
        assert_eq!(
            after_termination("noresource", Some(60)),
            Next::Resubscribe(60)
        );
    }

    #[test]
    fn record_routes_split_in_order() {
        let mut headers = Headers::default();
        headers.push(Header::Other(
            "Record-Route".into(),
            "<sip:a;lr>, <sip:b;lr>".into(),
        ));
        headers.push(Header::Other("Record-Route".into(), "<sip:c;lr>".into()));
        assert_eq!(
            record_routes(&headers),
            vec!["<sip:a;lr>", "<sip:b;lr>", "<sip:c;lr>"]
        );
        assert_eq!(retry_after(&headers), None);
        headers.push(Header::Other(
            "Retry-After".into(),
            "120;duration=60".into(),
        ));
        assert_eq!(retry_after(&headers), Some(120));
    }
}
