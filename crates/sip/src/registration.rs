//! Our registration client, one task per account: REGISTER with a Contact we choose
//! (the stack's own client rewrites it), digest auth, 423 → Min-Expires, refresh
//! before expiry, back-off after failures, rport, NAT keep-alive, and un-REGISTER on stop.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rsipstack::sip::prelude::{HeadersExt, ToTypedHeader};
use rsipstack::sip::{
    CallId, Contact, Expires, Header, Method, Param, Request, Response, Route, Transport, Uri,
};
use rsipstack::transaction::endpoint::EndpointInner;
use rsipstack::transaction::{make_tag, random_text};
use rsipstack::transport::stream::StreamConnection;
use rsipstack::transport::tcp::TcpConnection;
use rsipstack::transport::{SipAddr, SipConnection};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, Instant};
use tracing::{debug, info, warn};

use crate::digest::{answer, pick_challenge, Challenge};
use crate::refresh::{RefreshSchedule, REGISTER_REFUSALS};
use crate::request::NoAnswer;
use crate::stack::SipStack;
use crate::tls::{TlsClient, TlsFlows};

/// How long we wait for a registrar's final answer before calling it a failure.
/// Shorter than the transaction's 32 s so a dead registrar is reported promptly.
pub(crate) const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The local code of a registration whose registrar's TLS certificate was refused
/// (or whose CA file cannot be used): 495, "Invalid TLS certificate" (RFC 8599's
/// code for a bad client certificate, the closest there is). Retried after the
/// back-off of a refusal, never at full speed.
pub(crate) const TLS_REFUSED: u16 = 495;

/// Which transport REGISTER (and the Contact) uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SipTransport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP: our connection to the registrar, kept open; incoming
    /// requests come down it.
    Tls,
}

/// Everything one account's registration needs.
#[derive(Clone)]
pub struct RegistrationConfig {
    /// The account's number, given back in its events.
    pub account: u32,
    /// Registrar `host[:port]`.
    pub server: String,
    /// Outbound proxy `host[:port]` (first of the account's list), if any.
    pub proxy: Option<String>,
    /// Our domain (the From and To of the REGISTER).
    pub domain: String,
    /// The user part of the registered address.
    pub username: String,
    /// Digest user name when it differs from `username`.
    pub auth_id: Option<String>,
    /// The password for digest authentication (never logged).
    pub password: String,
    /// The display name in the From and To, if any.
    pub display_name: Option<String>,
    /// The transport to register over.
    pub transport: SipTransport,
    /// Requested expiry in seconds.
    pub expires: u32,
    /// NAT keep-alive interval in seconds; 0 turns it off.
    pub keep_alive: u32,
    /// Address to put in the Contact instead of our own (`host` or `host:port`).
    pub public_addr: Option<String>,
    /// Follow the registrar's `received`/`rport` view of our address.
    pub allow_rewrite: bool,
    /// The CA file trusted for the registrar's TLS certificate besides the system
    /// roots (`tlsCaFile`, the account's or `[Settings]`').
    pub tls_ca_file: Option<String>,
    /// `[Settings] rport` (the stack's inspector puts `;rport` in our Via, or not).
    /// MicroSIP's `rport=0` is pjsip's `disable_rport`: then `allowRewrite` follows
    /// only a `received` host, keeping our own port (an `rport=` a registrar sends
    /// anyway is ignored).
    pub rport: bool,
}

impl std::fmt::Debug for RegistrationConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrationConfig")
            .field("account", &self.account)
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &"***")
            .field("transport", &self.transport)
            .field("expires", &self.expires)
            .field("allow_rewrite", &self.allow_rewrite)
            .field("rport", &self.rport)
            .finish_non_exhaustive()
    }
}

/// What a registration reports to the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationEvent {
    /// The registrar accepted a REGISTER.
    Registered {
        /// The account's number.
        account: u32,
        /// The registrar's status code (2xx).
        code: u16,
        /// The registrar's reason phrase.
        reason: String,
        /// The granted expiry, seconds.
        expires: u32,
        /// The Contact the registrar bound.
        contact: String,
    },
    /// The REGISTER failed; it is tried again after `retry_in`.
    Failed {
        /// The account's number.
        account: u32,
        /// The failure's status code.
        code: u16,
        /// The reason phrase, or what went wrong.
        reason: String,
        /// Seconds until the next attempt.
        retry_in: u32,
    },
    /// The account is no longer registered (un-REGISTER done or not needed).
    Unregistered {
        /// The account's number.
        account: u32,
    },
}

/// The result of one REGISTER exchange (after auth and 423 retries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The final status code (a local code when no answer came).
    pub code: u16,
    /// The reason phrase, or what went wrong.
    pub reason: String,
    /// Granted expiry (0 after an un-REGISTER).
    pub expires: u32,
}

impl Outcome {
    /// Whether the code is a 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.code)
    }
    fn local(code: u16, reason: &str) -> Outcome {
        Outcome {
            code,
            reason: reason.to_string(),
            expires: 0,
        }
    }
}

enum Control {
    Register(oneshot::Sender<Outcome>),
    Unregister(oneshot::Sender<Outcome>),
    SetPassword(String),
    Stop(oneshot::Sender<Outcome>),
}

/// A handle on one account's registration task.
#[derive(Clone)]
pub struct Registration {
    control: mpsc::UnboundedSender<Control>,
}

impl Registration {
    /// Starts the task; it registers at once.
    pub fn start(
        stack: &SipStack,
        config: RegistrationConfig,
        events: mpsc::UnboundedSender<RegistrationEvent>,
    ) -> Registration {
        let (control, rx) = mpsc::unbounded_channel();
        let client = Client::new(stack, config);
        tokio::spawn(run(client, rx, events));
        Registration { control }
    }

    /// Registers now; answers with the outcome.
    pub async fn register(&self) -> Outcome {
        self.ask(Control::Register).await
    }

    /// Removes our binding (Expires: 0) and stays unregistered until `register`.
    pub async fn unregister(&self) -> Outcome {
        self.ask(Control::Unregister).await
    }

    /// Uses a new password from the next REGISTER on.
    pub fn set_password(&self, password: String) {
        let _ = self.control.send(Control::SetPassword(password));
    }

    /// Un-registers if registered and ends the task.
    pub async fn stop(&self) -> Outcome {
        self.ask(Control::Stop).await
    }

    async fn ask(&self, make: fn(oneshot::Sender<Outcome>) -> Control) -> Outcome {
        let (tx, rx) = oneshot::channel();
        if self.control.send(make(tx)).is_err() {
            return Outcome::local(500, "registration task has ended");
        }
        rx.await
            .unwrap_or_else(|_| Outcome::local(500, "registration task has ended"))
    }
}

/// The REGISTER state one account keeps between exchanges.
struct Client {
    inner: Arc<EndpointInner>,
    config: RegistrationConfig,
    call_id: String,
    from_tag: String,
    cseq: u32,
    contact: Uri,
    registrar_uri: Uri,
    /// Where packets go: the proxy if any, else the registrar.
    destination: SipAddr,
    /// Our listener for this transport (Via sent-by).
    local: SipAddr,
    udp: rsipstack::transport::udp::UdpConnection,
    tcp: Option<SipConnection>,
    tcp_listener: Option<SocketAddr>,
    /// Our TLS connection to `destination` and its token (cancelled by the stack
    /// when the connection ends).
    tls: Option<(SipConnection, tokio_util::sync::CancellationToken)>,
    /// Trust for TLS, made on the first connection (or why it could not be).
    tls_client: Option<Result<Arc<TlsClient>, String>>,
    tls_flows: TlsFlows,
    /// A Contact bound over an earlier TLS connection: removed (expires=0) by the
    /// next REGISTER.
    stale_contact: Option<Uri>,
    /// The last challenge, reused on refreshes (saves a round trip).
    challenge: Option<(Challenge, u8)>,
}

/// What the registration task does on the network: the real [`Client`], or a
/// scripted registrar in the tests.
trait Registrar {
    fn account(&self) -> u32;
    /// The expiry to ask for (a 423 may have raised it).
    fn expires(&self) -> u32;
    /// NAT keep-alive interval in seconds; 0: none.
    fn keep_alive(&self) -> u32;
    /// Our Contact as registered.
    fn contact(&self) -> String;
    /// Uses `password` from the next REGISTER on.
    fn set_password(&mut self, password: String);
    /// One REGISTER exchange with `expires` (0 removes the binding).
    async fn exchange(&mut self, expires: u32) -> Outcome;
    async fn send_keep_alive(&mut self);
    /// A token cancelled when the connection the registration rides on ends
    /// (TLS); `None`: nothing to watch.
    fn flow_token(&self) -> Option<tokio_util::sync::CancellationToken> {
        None
    }
    /// Forgets the connection that ended; says which it was.
    fn flow_lost(&mut self) -> String {
        String::new()
    }
}

impl Registrar for Client {
    fn account(&self) -> u32 {
        self.config.account
    }
    fn expires(&self) -> u32 {
        self.config.expires
    }
    fn keep_alive(&self) -> u32 {
        self.config.keep_alive
    }
    fn contact(&self) -> String {
        self.contact.to_string()
    }
    fn set_password(&mut self, password: String) {
        self.config.password = password;
        self.challenge = None;
    }
    async fn exchange(&mut self, expires: u32) -> Outcome {
        Client::exchange(self, expires).await
    }
    async fn send_keep_alive(&mut self) {
        Client::send_keep_alive(self).await
    }
    fn flow_token(&self) -> Option<tokio_util::sync::CancellationToken> {
        self.tls.as_ref().map(|(_, token)| token.clone())
    }
    fn flow_lost(&mut self) -> String {
        self.drop_tls();
        format!(
            "TLS connection to {} lost; reconnecting",
            self.destination.addr
        )
    }
}

/// The registration task: registers at once, refreshes before expiry, backs off
/// after failures (all timing in its [`RefreshSchedule`]), sends keep-alives while
/// registered, and serves the handle's requests.
async fn run<R: Registrar>(
    mut client: R,
    mut control: mpsc::UnboundedReceiver<Control>,
    events: mpsc::UnboundedSender<RegistrationEvent>,
) {
    let account = client.account();
    let mut wanted = true; // register (true) or stay unregistered (false)
    let mut registered = false;
    let mut schedule = RefreshSchedule::new(REGISTER_REFUSALS);
    schedule.due_now(Instant::now());
    let keep_alive = Duration::from_secs(u64::from(client.keep_alive().max(1)));
    let mut next_keep_alive = Instant::now() + keep_alive;
    let mut queued: VecDeque<Control> = VecDeque::new();

    loop {
        let flow = client.flow_token();
        let flow_closed = async move {
            match flow {
                Some(token) => token.cancelled_owned().await,
                None => std::future::pending().await,
            }
        };
        let request = if let Some(c) = queued.pop_front() {
            Some(c)
        } else {
            tokio::select! {
                _ = flow_closed, if wanted => {
                    // The connection we registered over is gone: so is the way in
                    // for our calls. Say so, then connect and register again now.
                    let reason = client.flow_lost();
                    warn!("account {account}: {reason}");
                    if registered {
                        registered = false;
                        let _ = events.send(RegistrationEvent::Failed {
                            account,
                            code: 503,
                            reason,
                            retry_in: 0,
                        });
                        schedule.due_now(Instant::now());
                    }
                    continue;
                }
                c = control.recv() => match c {
                    Some(c) => Some(c),
                    None => Some(Control::Stop(oneshot::channel().0)),
                },
                _ = schedule.wait() => None,
                _ = sleep_until(next_keep_alive),
                    if registered && client.keep_alive() > 0 => {
                    client.send_keep_alive().await;
                    next_keep_alive = Instant::now() + keep_alive;
                    continue;
                }
            }
        };

        let (expires, reply, stop) = match request {
            None => (client.expires(), None, false),
            Some(Control::SetPassword(p)) => {
                client.set_password(p);
                if wanted {
                    schedule.due_now(Instant::now());
                }
                continue;
            }
            Some(Control::Register(reply)) => {
                wanted = true;
                (client.expires(), Some(reply), false)
            }
            Some(Control::Unregister(reply)) => {
                wanted = false;
                (0, Some(reply), false)
            }
            Some(Control::Stop(reply)) => (0, Some(reply), true),
        };

        if expires == 0 && !registered {
            schedule.stop();
            let _ = events.send(RegistrationEvent::Unregistered { account });
            if let Some(reply) = reply {
                let _ = reply.send(Outcome::local(200, "not registered"));
            }
            if stop {
                return;
            }
            continue;
        }

        // One exchange; other requests queue meanwhile, except a stop, which wins.
        let (outcome, stop_now) = {
            let exchange = client.exchange(expires);
            tokio::pin!(exchange);
            let mut stop_now = None;
            let outcome = loop {
                tokio::select! {
                    out = &mut exchange => break Some(out),
                    c = control.recv() => match c {
                        Some(Control::Stop(r)) => stop_now = Some(r),
                        None => stop_now = Some(oneshot::channel().0),
                        Some(other) => queued.push_back(other),
                    },
                }
                if stop_now.is_some() {
                    break None;
                }
            };
            (outcome, stop_now)
        };
        if let Some(r) = stop_now {
            // Abandon the exchange in flight and remove the binding instead.
            let out = if registered {
                client.exchange(0).await
            } else {
                Outcome::local(200, "not registered")
            };
            let _ = events.send(RegistrationEvent::Unregistered { account });
            let _ = r.send(out);
            if let Some(reply) = reply {
                let _ = reply.send(Outcome::local(500, "phone is stopping"));
            }
            return;
        }
        let outcome = outcome.unwrap_or_else(|| Outcome::local(500, "interrupted"));

        if expires == 0 {
            registered = false;
            schedule.stop();
            let _ = events.send(RegistrationEvent::Unregistered { account });
        } else if outcome.is_success() {
            registered = true;
            schedule.succeeded(Instant::now(), outcome.expires);
            next_keep_alive = Instant::now() + keep_alive;
            info!(
                "account {account} registered (expires {}s)",
                outcome.expires
            );
            let _ = events.send(RegistrationEvent::Registered {
                account,
                code: outcome.code,
                reason: outcome.reason.clone(),
                expires: outcome.expires,
                contact: client.contact(),
            });
        } else {
            registered = false;
            let retry_in = schedule.failed(Instant::now(), outcome.code, None);
            warn!(
                "account {account} registration failed: {} {} (retry in {retry_in}s)",
                outcome.code, outcome.reason
            );
            let _ = events.send(RegistrationEvent::Failed {
                account,
                code: outcome.code,
                reason: outcome.reason.clone(),
                retry_in,
            });
        }
        if let Some(reply) = reply {
            let _ = reply.send(outcome);
        }
        if stop {
            return;
        }
    }
}

impl Client {
    fn new(stack: &SipStack, config: RegistrationConfig) -> Client {
        let inner = stack.inner();
        let tcp = config.transport == SipTransport::Tcp;
        let transport = match config.transport {
            SipTransport::Udp => Transport::Udp,
            SipTransport::Tcp => Transport::Tcp,
            SipTransport::Tls => Transport::Tls,
        };
        let udp_addr = stack.udp.get_addr().clone();
        let local = match (tcp, stack.tcp_addr()) {
            (true, Some(addr)) => SipAddr {
                r#type: Some(Transport::Tcp),
                addr: addr.into(),
            },
            _ => udp_addr,
        };
        let target = config
            .proxy
            .clone()
            .unwrap_or_else(|| config.server.clone());
        let destination = sip_addr(&target, transport);
        let registrar_uri = Uri::try_from(format!("sip:{}", config.server).as_str())
            .unwrap_or_else(|_| Uri::try_from("sip:invalid").unwrap_or_default());
        let contact = make_contact(&config, &local, tcp);
        Client {
            call_id: format!("{}@{}", random_text(24), contact_host(&local)),
            from_tag: make_tag().to_string(),
            cseq: 0,
            contact,
            registrar_uri,
            destination,
            local,
            udp: stack.udp.clone(),
            tcp: None,
            tcp_listener: stack.tcp_addr(),
            tls: None,
            tls_client: None,
            tls_flows: stack.tls_flows.clone(),
            stale_contact: None,
            challenge: None,
            inner,
            config,
        }
    }

    fn aor(&self) -> String {
        format!("sip:{}@{}", self.config.username, self.config.domain)
    }

    fn build(&mut self, expires: u32, auth: Option<Header>) -> Result<Request, String> {
        self.cseq += 1;
        let aor = Uri::try_from(self.aor().as_str()).map_err(|e| format!("bad address: {e}"))?;
        // `;rport` leaves the Via in the stack's inspector when the ini says rport=0.
        let via = self
            .inner
            .get_via(Some(self.local.clone()), None)
            .map_err(|e| e.to_string())?;
        let from = rsipstack::sip::typed::From {
            display_name: self.config.display_name.clone(),
            uri: aor.clone(),
            params: vec![Param::Tag(self.from_tag.clone().into())],
        };
        let to = rsipstack::sip::typed::To {
            display_name: None,
            uri: aor,
            params: vec![],
        };
        let mut req = self.inner.make_request(
            Method::Register,
            self.registrar_uri.clone(),
            via,
            from,
            to,
            self.cseq,
            Some(CallId::new(self.call_id.clone())),
        );
        if let Some(proxy) = &self.config.proxy {
            req.headers
                .push(Route::new(format!("<sip:{proxy};lr>")).into());
        }
        req.headers
            .push(Contact::new(format!("<{}>", self.contact)).into());
        if let Some(stale) = &self.stale_contact {
            req.headers
                .push(Contact::new(format!("<{stale}>;expires=0")).into());
        }
        req.headers.push(Expires::from(expires).into());
        req.headers.push(Header::Allow(crate::stack::ALLOW.into()));
        if let Some(auth) = auth {
            req.headers.push(auth);
        }
        Ok(req)
    }

    fn credentials_answer(&mut self, req_uri: &Uri) -> Option<Header> {
        let (challenge, nc) = self.challenge.as_mut()?;
        *nc = nc.checked_add(1)?;
        let username = self
            .config
            .auth_id
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| self.config.username.clone());
        Some(answer(
            challenge,
            &Method::Register,
            req_uri,
            &username,
            &self.config.password,
            &random_text(12),
            *nc,
        ))
    }

    /// One REGISTER exchange with `expires` (0 removes the binding): answers
    /// challenges (twice at most, more only for `stale`), follows 423 once or twice.
    async fn exchange(&mut self, expires: u32) -> Outcome {
        let mut expires = expires;
        let mut challenges = 0;
        let mut too_brief = 0;
        let mut last = Outcome::local(408, "Request Timeout");
        for _round in 0..6 {
            // Over TLS the connection comes first: our Via and Contact are its
            // local end.
            if self.config.transport == SipTransport::Tls {
                if let Err(out) = self.tls_connection().await {
                    return out;
                }
            }
            let auth = self.credentials_answer(&self.registrar_uri.clone());
            let sent_with_auth = auth.is_some();
            let req = match self.build(expires, auth) {
                Ok(r) => r,
                Err(e) => return Outcome::local(400, &e),
            };
            let resp = match self.transact(req).await {
                Ok(r) => r,
                Err(out) => return out,
            };
            let code = resp.status_code.code();
            let reason = reason_of(&resp);
            last = Outcome {
                code,
                reason: reason.clone(),
                expires: 0,
            };
            match code {
                200..=299 => {
                    self.stale_contact = None;
                    if expires > 0 && self.config.allow_rewrite && self.follow_rport(&resp) {
                        continue;
                    }
                    last.expires = if expires == 0 {
                        0
                    } else {
                        granted_expires(&resp, &self.contact, expires)
                    };
                    return last;
                }
                401 | 407 => {
                    let Some(challenge) = pick_challenge(&resp) else {
                        return last;
                    };
                    let stale = challenge.is_stale();
                    challenges += 1;
                    // A second challenge after our answer means the password is wrong,
                    // unless the server says only the nonce was old.
                    if sent_with_auth && !stale && challenges > 1 {
                        self.challenge = None;
                        return last;
                    }
                    if challenges > 3 {
                        self.challenge = None;
                        return last;
                    }
                    self.challenge = Some((challenge, 0));
                }
                423 => {
                    too_brief += 1;
                    let min = resp
                        .min_expires_header()
                        .and_then(|h| h.value().trim().parse::<u32>().ok());
                    match min {
                        Some(min) if too_brief <= 2 && min > expires => {
                            expires = min;
                            self.config.expires = min;
                        }
                        _ => return last,
                    }
                }
                _ => return last,
            }
        }
        last
    }

    /// Sends one request and waits (at most [`ANSWER_TIMEOUT`]) for the final answer.
    /// The transaction runs in its own task, so giving up here is safe.
    async fn transact(&mut self, req: Request) -> Result<Response, Outcome> {
        let connection = match self.config.transport {
            SipTransport::Tcp => match self.tcp_connection().await {
                Ok(c) => Some(c),
                Err(e) => return Err(Outcome::local(503, &e)),
            },
            SipTransport::Tls => match self.tls_connection().await {
                Ok(c) => Some(c),
                Err(out) => return Err(out),
            },
            SipTransport::Udp => Some(SipConnection::Udp(self.udp.clone())),
        };
        let result = crate::request::send_and_wait(
            self.inner.clone(),
            req,
            connection,
            self.destination.clone(),
            ANSWER_TIMEOUT,
        )
        .await;
        match result {
            Ok(resp) => Ok(resp),
            Err(NoAnswer::Unsent(e)) => {
                self.drop_tcp();
                self.drop_tls();
                Err(Outcome::local(503, &e))
            }
            Err(NoAnswer::Timeout) => {
                self.drop_tcp();
                self.drop_tls();
                Err(Outcome::local(
                    408,
                    "Request Timeout (no answer from registrar)",
                ))
            }
        }
    }

    /// Closes our TLS connection (if any) and forgets it.
    fn drop_tls(&mut self) {
        if let Some((conn, token)) = self.tls.take() {
            token.cancel();
            self.inner.transport_layer.remove_connection(&conn);
            self.tls_flows.forget(&self.destination);
        }
    }

    /// Our TLS connection to the registrar (or proxy), made on first use: the
    /// certificate checked against the system roots and `tlsCaFile`. Our Via and
    /// Contact take its local address, so the registrar sends our calls down it.
    /// A refused certificate fails with code 495 ("TLS: certificate not trusted...").
    async fn tls_connection(&mut self) -> Result<SipConnection, Outcome> {
        if let Some((conn, token)) = &self.tls {
            if !token.is_cancelled() {
                return Ok(conn.clone());
            }
            self.drop_tls();
        }
        let client = match &self.tls_client {
            Some(made) => made.clone(),
            None => {
                let made = TlsClient::new(self.config.tls_ca_file.as_deref()).map(Arc::new);
                self.tls_client = Some(made.clone());
                made
            }
        }
        .map_err(|e| Outcome::local(TLS_REFUSED, &e))?;
        let remote = self.destination.get_socketaddr().map_err(|e| {
            Outcome::local(
                503,
                &format!("TLS: registrar address {}: {e}", self.destination),
            )
        })?;
        let server_name = self.destination.addr.host.to_string();
        let stream = client.connect(remote, &server_name).await.map_err(|f| {
            Outcome::local(if f.certificate { TLS_REFUSED } else { 503 }, &f.reason)
        })?;
        let token = tokio_util::sync::CancellationToken::new();
        let conn = rsipstack::transport::tls::TlsConnection::from_client_stream(
            stream,
            self.destination.clone(),
            Some(token.clone()),
        )
        .await
        .map_err(|e| Outcome::local(503, &format!("TLS connection: {e}")))?;
        let conn = SipConnection::Tls(conn);
        let local = conn.get_addr().clone();
        debug!("TLS connection {local} -> {}", self.destination);
        let contact = crate::call::Calls::tls_contact(
            &self.config.username,
            &local,
            self.config.public_addr.as_deref(),
        );
        // A binding made over an earlier connection points at a dead flow: the
        // next REGISTER removes it.
        if self.cseq > 0 && contact != self.contact {
            self.stale_contact = Some(self.contact.clone());
        }
        self.contact = contact;
        self.local = local.clone();
        self.tls_flows.set(&self.destination, local);
        self.inner.transport_layer.add_connection(conn.clone());
        self.tls = Some((conn.clone(), token));
        Ok(conn)
    }

    fn drop_tcp(&mut self) {
        if let Some(conn) = self.tcp.take() {
            self.inner.transport_layer.remove_connection(&conn);
        }
    }

    /// Our own TCP connection with TCP_NODELAY (the stack's has Nagle on, which
    /// delays the authenticated request by a delayed-ACK period).
    async fn tcp_connection(&mut self) -> Result<SipConnection, String> {
        if let Some(conn) = &self.tcp {
            return Ok(conn.clone());
        }
        let remote = self
            .destination
            .get_socketaddr()
            .map_err(|e| format!("registrar address {}: {e}", self.destination))?;
        let stream = tokio::time::timeout(ANSWER_TIMEOUT, tokio::net::TcpStream::connect(remote))
            .await
            .map_err(|_| format!("TCP connect to {remote} timed out"))?
            .map_err(|e| format!("TCP connect to {remote}: {e}"))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("TCP_NODELAY: {e}"))?;
        let local = match self.tcp_listener {
            Some(addr) => SipAddr {
                r#type: Some(Transport::Tcp),
                addr: addr.into(),
            },
            None => self.local.clone(),
        };
        let conn = TcpConnection::from_stream(stream, local, None)
            .map_err(|e| format!("TCP connection: {e}"))?;
        let conn = SipConnection::Tcp(conn);
        self.inner.transport_layer.add_connection(conn.clone());
        self.tcp = Some(conn.clone());
        Ok(conn)
    }

    /// With `allowRewrite`, adopt the address the registrar saw; true if it changed.
    fn follow_rport(&mut self, resp: &Response) -> bool {
        let Some(via) = resp.via_header().ok().and_then(|v| v.typed().ok()) else {
            return false;
        };
        let Some(seen) = seen_address(&via.params, &self.contact, self.config.rport) else {
            return false;
        };
        let text = format!(
            "sip:{}@{seen}{}",
            self.config.username,
            match self.config.transport {
                SipTransport::Udp => "",
                SipTransport::Tcp => ";transport=tcp",
                SipTransport::Tls => ";transport=tls",
            }
        );
        match Uri::try_from(text.as_str()) {
            Ok(uri) => {
                debug!("contact rewritten to {uri} (registrar saw {seen})");
                self.contact = uri;
                true
            }
            Err(_) => false,
        }
    }

    /// A CRLF CRLF ping (RFC 5626 §4.4.1) keeps NAT bindings open.
    async fn send_keep_alive(&mut self) {
        let result = match self.config.transport {
            SipTransport::Udp => self.udp.send_raw(b"\r\n\r\n", &self.destination).await,
            SipTransport::Tcp => match &self.tcp {
                Some(SipConnection::Tcp(conn)) => conn.send_raw(b"\r\n\r\n").await,
                _ => Ok(()),
            },
            SipTransport::Tls => match &self.tls {
                Some((SipConnection::Tls(conn), _)) => conn.send_raw(b"\r\n\r\n").await,
                _ => Ok(()),
            },
        };
        if let Err(e) = result {
            debug!("keep-alive to {} failed: {e}", self.destination);
        }
    }
}

fn sip_addr(target: &str, transport: Transport) -> SipAddr {
    let uri = Uri::try_from(format!("sip:{target}").as_str()).unwrap_or_default();
    SipAddr {
        r#type: Some(transport),
        addr: uri.host_with_port,
    }
}

fn contact_host(local: &SipAddr) -> String {
    local.addr.host.to_string()
}

fn make_contact(config: &RegistrationConfig, local: &SipAddr, tcp: bool) -> Uri {
    let host_port = match config.public_addr.as_deref().filter(|s| !s.is_empty()) {
        Some(public) if public.contains(':') => public.to_string(),
        Some(public) => format!(
            "{public}:{}",
            local.addr.port.map(|p| p.to_string()).unwrap_or_default()
        ),
        None => local.addr.to_string(),
    };
    let text = format!(
        "sip:{}@{host_port}{}",
        config.username,
        if tcp { ";transport=tcp" } else { "" }
    );
    Uri::try_from(text.as_str()).unwrap_or_default()
}

/// The `host:port` a response's Via says the registrar saw us at (`received`, and
/// `rport` when `use_rport`), when it differs from `contact`'s; `None` otherwise.
fn seen_address(via_params: &[Param], contact: &Uri, use_rport: bool) -> Option<String> {
    let mut host = None;
    let mut port = None;
    for p in via_params {
        match p {
            Param::Received(r) => host = Some(r.value().to_string()),
            Param::Rport(Some(p)) if use_rport => port = Some(p.to_string()),
            _ => {}
        }
    }
    let ours = &contact.host_with_port;
    let seen = match (host, port) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => match ours.port {
            Some(p) => format!("{h}:{p}"),
            None => h,
        },
        (None, Some(p)) => format!("{}:{p}", ours.host),
        (None, None) => return None,
    };
    (seen != ours.to_string()).then_some(seen)
}

pub(crate) fn reason_of(resp: &Response) -> String {
    resp.reason_phrase()
        .map(str::to_string)
        .unwrap_or_else(|| resp.status_code.text().to_string())
}

/// The expiry the registrar granted our binding: our Contact's `expires` parameter,
/// else the Expires header, else what we asked for.
fn granted_expires(resp: &Response, ours: &Uri, asked: u32) -> u32 {
    let ours = ours.host_with_port.to_string();
    for header in resp.headers.iter() {
        let Header::Contact(c) = header else { continue };
        for part in c.value().split(',') {
            if !part.contains(&ours) {
                continue;
            }
            for param in part.split(';').skip(1) {
                let mut kv = param.splitn(2, '=');
                if kv.next().map(|k| k.trim().eq_ignore_ascii_case("expires")) == Some(true) {
                    if let Some(v) = kv.next().and_then(|v| v.trim().parse::<u32>().ok()) {
                        return v;
                    }
                }
            }
        }
    }
    resp.expires_header()
        .and_then(|h| h.value().trim().parse::<u32>().ok())
        .unwrap_or(asked)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One scripted REGISTER answer: how long the registrar takes, then what it says.
    struct Scripted {
        takes: Duration,
        code: u16,
        expires: u32,
    }

    fn answers(takes: u64, code: u16, expires: u32) -> Scripted {
        Scripted {
            takes: Duration::from_secs(takes),
            code,
            expires,
        }
    }

    /// A registrar that answers from a script (200 with what was asked once it runs
    /// out) and logs when each REGISTER went out (seconds since `start`) and its
    /// Expires.
    struct ScriptedRegistrar {
        start: Instant,
        script: VecDeque<Scripted>,
        sent: mpsc::UnboundedSender<(u64, u32)>,
        keep_alives: mpsc::UnboundedSender<u64>,
        keep_alive: u32,
    }

    impl Registrar for ScriptedRegistrar {
        fn account(&self) -> u32 {
            7
        }
        fn expires(&self) -> u32 {
            60
        }
        fn keep_alive(&self) -> u32 {
            self.keep_alive
        }
        fn contact(&self) -> String {
            "sip:1001@127.0.0.1:5060".into()
        }
        fn set_password(&mut self, _password: String) {}
        async fn exchange(&mut self, expires: u32) -> Outcome {
            let _ = self
                .sent
                .send(((Instant::now() - self.start).as_secs(), expires));
            let answer = self.script.pop_front().unwrap_or(Scripted {
                takes: Duration::ZERO,
                code: 200,
                expires,
            });
            tokio::time::sleep(answer.takes).await;
            Outcome {
                code: answer.code,
                reason: "scripted".into(),
                expires: if (200..300).contains(&answer.code) {
                    answer.expires
                } else {
                    0
                },
            }
        }
        async fn send_keep_alive(&mut self) {
            let _ = self
                .keep_alives
                .send((Instant::now() - self.start).as_secs());
        }
    }

    /// The real registration task on a scripted registrar: its handle, its events,
    /// the REGISTERs sent (second, Expires) and the keep-alives sent (second).
    #[allow(clippy::type_complexity)]
    fn start_scripted(
        script: Vec<Scripted>,
        keep_alive: u32,
    ) -> (
        Registration,
        mpsc::UnboundedReceiver<RegistrationEvent>,
        mpsc::UnboundedReceiver<(u64, u32)>,
        mpsc::UnboundedReceiver<u64>,
    ) {
        let (sent, sent_rx) = mpsc::unbounded_channel();
        let (keep_alives, keep_alives_rx) = mpsc::unbounded_channel();
        let registrar = ScriptedRegistrar {
            start: Instant::now(),
            script: script.into(),
            sent,
            keep_alives,
            keep_alive,
        };
        let (control, rx) = mpsc::unbounded_channel();
        let (events, events_rx) = mpsc::unbounded_channel();
        tokio::spawn(run(registrar, rx, events));
        (Registration { control }, events_rx, sent_rx, keep_alives_rx)
    }

    async fn next_event(events: &mut mpsc::UnboundedReceiver<RegistrationEvent>) -> String {
        match events.recv().await {
            Some(RegistrationEvent::Registered { expires, .. }) => format!("registered {expires}"),
            Some(RegistrationEvent::Failed { code, retry_in, .. }) => {
                format!("failed {code} retry in {retry_in}")
            }
            Some(RegistrationEvent::Unregistered { .. }) => "unregistered".into(),
            None => "task ended".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_task_backs_off_then_refreshes_before_expiry() {
        let (handle, mut events, mut sent, _) = start_scripted(
            vec![answers(0, 503, 0), answers(0, 503, 0), answers(0, 200, 60)],
            0,
        );
        assert_eq!(next_event(&mut events).await, "failed 503 retry in 2");
        assert_eq!(next_event(&mut events).await, "failed 503 retry in 4");
        assert_eq!(next_event(&mut events).await, "registered 60");
        assert_eq!(next_event(&mut events).await, "registered 60");
        let mut at = Vec::new();
        while let Ok(register) = sent.try_recv() {
            at.push(register);
        }
        assert_eq!(at, vec![(0, 60), (2, 60), (6, 60), (56, 60)]);
        // Stopping removes the binding and ends the task: nothing more is sent.
        let out = handle.stop().await;
        assert_eq!((out.code, out.expires), (200, 0));
        assert_eq!(next_event(&mut events).await, "unregistered");
        assert_eq!(next_event(&mut events).await, "task ended");
        assert_eq!(sent.recv().await, Some((56, 0)));
        assert_eq!(sent.recv().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn unregistered_stays_unregistered_until_asked() {
        let (handle, mut events, mut sent, _) = start_scripted(vec![], 0);
        assert_eq!(next_event(&mut events).await, "registered 60");
        let out = handle.unregister().await;
        assert_eq!((out.code, out.expires), (200, 0));
        assert_eq!(next_event(&mut events).await, "unregistered");
        // A week later nothing was sent: no refresh, no retry.
        tokio::time::sleep(Duration::from_secs(7 * 86_400)).await;
        assert!(events.try_recv().is_err());
        let mut at = Vec::new();
        while let Ok(register) = sent.try_recv() {
            at.push(register);
        }
        assert_eq!(at, vec![(0, 60), (0, 0)]);
        // Asked again: registers at once and refreshes at 50 s from there.
        let out = handle.register().await;
        assert_eq!((out.code, out.expires), (200, 60));
        assert_eq!(next_event(&mut events).await, "registered 60");
        assert_eq!(next_event(&mut events).await, "registered 60");
        assert_eq!(sent.recv().await, Some((7 * 86_400, 60)));
        assert_eq!(sent.recv().await, Some((7 * 86_400 + 50, 60)));
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_back_off_from_30_s_and_a_success_starts_over() {
        let mut script: Vec<Scripted> = (0..6).map(|_| answers(0, 403, 0)).collect();
        script.push(answers(0, 200, 60));
        script.push(answers(0, 503, 0));
        let (_handle, mut events, mut sent, _) = start_scripted(script, 0);
        for retry_in in [30, 60, 120, 240, 300, 300] {
            assert_eq!(
                next_event(&mut events).await,
                format!("failed 403 retry in {retry_in}")
            );
        }
        assert_eq!(next_event(&mut events).await, "registered 60");
        assert_eq!(next_event(&mut events).await, "failed 503 retry in 2");
        let mut at = Vec::new();
        while let Ok((second, _)) = sent.try_recv() {
            at.push(second);
        }
        assert_eq!(at, vec![0, 30, 90, 210, 450, 750, 1050, 1100]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_wins_over_a_refresh_that_hangs() {
        // Registered at 0; the refresh at 50 s gets no answer for 10 s; a stop at
        // 55 s abandons it and removes the binding at once.
        let (handle, mut events, mut sent, _) =
            start_scripted(vec![answers(0, 200, 60), answers(10, 408, 0)], 0);
        assert_eq!(next_event(&mut events).await, "registered 60");
        tokio::time::sleep(Duration::from_secs(55)).await;
        let out = handle.stop().await;
        assert_eq!((out.code, out.expires), (200, 0));
        assert_eq!(next_event(&mut events).await, "unregistered");
        assert_eq!(next_event(&mut events).await, "task ended");
        let mut at = Vec::new();
        while let Some(register) = sent.recv().await {
            at.push(register);
        }
        assert_eq!(at, vec![(0, 60), (50, 60), (55, 0)]);
    }

    #[tokio::test(start_paused = true)]
    async fn keep_alives_run_while_registered_only() {
        let (handle, mut events, _sent, mut keep_alives) =
            start_scripted(vec![answers(0, 200, 300)], 15);
        assert_eq!(next_event(&mut events).await, "registered 300");
        tokio::time::sleep(Duration::from_secs(50)).await;
        let out = handle.unregister().await;
        assert_eq!(out.code, 200);
        tokio::time::sleep(Duration::from_secs(600)).await;
        let mut at = Vec::new();
        while let Ok(second) = keep_alives.try_recv() {
            at.push(second);
        }
        assert_eq!(at, vec![15, 30, 45]);
    }

    fn via_params(via: &str) -> Vec<Param> {
        let header = rsipstack::sip::headers::Via::new(via);
        header.typed().unwrap().params
    }

    #[test]
    fn the_address_the_registrar_saw() {
        let contact = Uri::try_from("sip:1001@192.168.1.5:5070").unwrap();
        let seen = |via: &str, rport: bool| seen_address(&via_params(via), &contact, rport);
        let nat = "SIP/2.0/UDP 192.168.1.5:5070;branch=z9hG4bKx;received=203.0.113.7;rport=40001";
        assert_eq!(seen(nat, true).as_deref(), Some("203.0.113.7:40001"));
        // rport=0: the port is ours, only the received host is followed.
        assert_eq!(seen(nat, false).as_deref(), Some("203.0.113.7:5070"));
        let port_only = "SIP/2.0/UDP 192.168.1.5:5070;branch=z9hG4bKx;rport=40001";
        assert_eq!(seen(port_only, true).as_deref(), Some("192.168.1.5:40001"));
        assert_eq!(seen(port_only, false), None);
        // Nothing new: no rewrite.
        let same = "SIP/2.0/UDP 192.168.1.5:5070;branch=z9hG4bKx;received=192.168.1.5;rport=5070";
        assert_eq!(seen(same, true), None);
        assert_eq!(seen(same, false), None);
        assert_eq!(
            seen("SIP/2.0/UDP 192.168.1.5:5070;branch=z9hG4bKx;rport", true),
            None
        );
    }
}
