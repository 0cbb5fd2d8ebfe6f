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
use crate::request::NoAnswer;
use crate::stack::SipStack;

/// How long we wait for a registrar's final answer before calling it a failure.
/// Shorter than the transaction's 32 s so a dead registrar is reported promptly.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Which transport REGISTER (and the Contact) uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SipTransport {
    Udp,
    Tcp,
}

/// Everything one account's registration needs.
#[derive(Clone)]
pub struct RegistrationConfig {
    pub account: u32,
    /// Registrar `host[:port]`.
    pub server: String,
    /// Outbound proxy `host[:port]` (first of the account's list), if any.
    pub proxy: Option<String>,
    pub domain: String,
    pub username: String,
    /// Digest user name when it differs from `username`.
    pub auth_id: Option<String>,
    pub password: String,
    pub display_name: Option<String>,
    pub transport: SipTransport,
    /// Requested expiry in seconds.
    pub expires: u32,
    /// NAT keep-alive interval in seconds; 0 turns it off.
    pub keep_alive: u32,
    /// Address to put in the Contact instead of our own (`host` or `host:port`).
    pub public_addr: Option<String>,
    /// Follow the registrar's `received`/`rport` view of our address.
    pub allow_rewrite: bool,
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
    Registered {
        account: u32,
        code: u16,
        reason: String,
        expires: u32,
        contact: String,
    },
    Failed {
        account: u32,
        code: u16,
        reason: String,
        /// Seconds until the next attempt.
        retry_in: u32,
    },
    Unregistered {
        account: u32,
    },
}

/// The result of one REGISTER exchange (after auth and 423 retries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub code: u16,
    pub reason: String,
    /// Granted expiry (0 after an un-REGISTER).
    pub expires: u32,
}

impl Outcome {
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
    /// The last challenge, reused on refreshes (saves a round trip).
    challenge: Option<(Challenge, u8)>,
}

/// Back-off after failures: 2, 4, 8 … up to 120 s; credentials errors start at 30 s.
pub(crate) fn backoff(failures: u32, code: u16) -> u32 {
    let base: u32 = if matches!(code, 401 | 403 | 404 | 407) {
        30
    } else {
        2
    };
    base.saturating_mul(1 << failures.min(6)).min(300).max(base)
}

/// When to refresh a binding that expires in `expires` seconds.
pub(crate) fn refresh_after(expires: u32) -> Duration {
    let secs = if expires >= 40 {
        expires - 10
    } else {
        (expires / 2).max(1)
    };
    Duration::from_secs(u64::from(secs))
}

async fn run(
    mut client: Client,
    mut control: mpsc::UnboundedReceiver<Control>,
    events: mpsc::UnboundedSender<RegistrationEvent>,
) {
    let account = client.config.account;
    let mut wanted = true; // register (true) or stay unregistered (false)
    let mut registered = false;
    let mut failures: u32 = 0;
    let mut next_attempt = Some(Instant::now());
    let keep_alive = Duration::from_secs(u64::from(client.config.keep_alive.max(1)));
    let mut next_keep_alive = Instant::now() + keep_alive;
    let mut queued: VecDeque<Control> = VecDeque::new();

    loop {
        let request = if let Some(c) = queued.pop_front() {
            Some(c)
        } else {
            let far = Instant::now() + Duration::from_secs(86_400);
            tokio::select! {
                c = control.recv() => match c {
                    Some(c) => Some(c),
                    None => Some(Control::Stop(oneshot::channel().0)),
                },
                _ = sleep_until(next_attempt.unwrap_or(far)) => None,
                _ = sleep_until(next_keep_alive),
                    if registered && client.config.keep_alive > 0 => {
                    client.send_keep_alive().await;
                    next_keep_alive = Instant::now() + keep_alive;
                    continue;
                }
            }
        };

        let (expires, reply, stop) = match request {
            None => (client.config.expires, None, false),
            Some(Control::SetPassword(p)) => {
                client.config.password = p;
                client.challenge = None;
                if wanted {
                    next_attempt = Some(Instant::now());
                }
                continue;
            }
            Some(Control::Register(reply)) => {
                wanted = true;
                (client.config.expires, Some(reply), false)
            }
            Some(Control::Unregister(reply)) => {
                wanted = false;
                (0, Some(reply), false)
            }
            Some(Control::Stop(reply)) => (0, Some(reply), true),
        };

        if expires == 0 && !registered {
            next_attempt = None;
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
            next_attempt = None;
            let _ = events.send(RegistrationEvent::Unregistered { account });
        } else if outcome.is_success() {
            registered = true;
            failures = 0;
            next_attempt = Some(Instant::now() + refresh_after(outcome.expires));
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
                contact: client.contact.to_string(),
            });
        } else {
            registered = false;
            let retry_in = backoff(failures, outcome.code);
            failures = failures.saturating_add(1);
            next_attempt = Some(Instant::now() + Duration::from_secs(u64::from(retry_in)));
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
        let transport = if tcp { Transport::Tcp } else { Transport::Udp };
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
        let connection = if self.config.transport == SipTransport::Tcp {
            match self.tcp_connection().await {
                Ok(c) => Some(c),
                Err(e) => return Err(Outcome::local(503, &e)),
            }
        } else {
            Some(SipConnection::Udp(self.udp.clone()))
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
                Err(Outcome::local(503, &e))
            }
            Err(NoAnswer::Timeout) => {
                self.drop_tcp();
                Err(Outcome::local(
                    408,
                    "Request Timeout (no answer from registrar)",
                ))
            }
        }
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
        let tcp = self.config.transport == SipTransport::Tcp;
        let text = format!(
            "sip:{}@{seen}{}",
            self.config.username,
            if tcp { ";transport=tcp" } else { "" }
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

    #[test]
    fn backoff_grows_and_is_bounded() {
        assert_eq!(backoff(0, 408), 2);
        assert_eq!(backoff(1, 408), 4);
        assert_eq!(backoff(10, 408), 128);
        assert_eq!(backoff(0, 403), 30);
        assert!(backoff(30, 403) <= 300);
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

    #[test]
    fn refresh_comes_before_expiry() {
        assert_eq!(refresh_after(300), Duration::from_secs(290));
        assert_eq!(refresh_after(10), Duration::from_secs(5));
        assert_eq!(refresh_after(1), Duration::from_secs(1));
    }
}
