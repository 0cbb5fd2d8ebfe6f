//! The SIP endpoint: listeners (UDP and TCP on one port), our own User-Agent and
//! Call-ID domain, the trace, and the dispatcher that answers requests arriving
//! outside any dialog (OPTIONS → 200; what we cannot serve yet gets a clear code).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::sip::prelude::{HeadersExt, ToTypedHeader};
use rsipstack::sip::{Header, Method, Param, Response, SipMessage, StatusCode, Transport};
use rsipstack::transaction::endpoint::{EndpointInner, EndpointOption, MessageInspector};
use rsipstack::transaction::{Endpoint, EndpointBuilder, TransactionReceiver};
use rsipstack::transport::tcp::TcpConnection;
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::{SipAddr, SipConnection};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::call::{CallSignal, Calls, CancelReasons};
use crate::message::IncomingMessage;
use crate::reader::{self, EchoBook, Frame, ReaderConfig, ResponseView, Verdict};
use crate::subscription::{route_notify, NotifyRoutes};
use crate::tls::TlsFlows;
use crate::trace::{Direction, SipTrace};
use crate::SipError;

/// The methods we answer; sent in `Allow`.
pub(crate) const ALLOW: &str =
    "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, MESSAGE, NOTIFY, REFER, UPDATE";

/// How to start the endpoint.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// Address to bind; `0.0.0.0` listens everywhere.
    pub bind_ip: IpAddr,
    /// Local SIP port for both UDP and TCP; 0 picks a free one.
    pub port: u16,
    /// Also listen on TCP (same port number as UDP).
    pub tcp: bool,
    /// `User-Agent` header: ours, never the library's.
    pub user_agent: String,
    /// Domain part of the Call-IDs we make.
    pub callid_domain: String,
    /// Where to write the SIP trace, if anywhere.
    pub trace: Option<PathBuf>,
    /// `[Settings] rport`: RFC 3581 `;rport` in the Via of the requests we send;
    /// false leaves it out (MicroSIP's `rport=0`, pjsip's `disable_rport`).
    pub rport: bool,
    /// STUN servers (`[Settings] enableSTUN` + `STUN`), asked in order from the UDP
    /// socket before the stack starts; empty: none asked.
    pub stun: Vec<SocketAddr>,
}

/// What the SIP layer hands the engine: call signals and received messages.
pub struct SipInbox {
    /// Signals of every call leg, in order.
    pub calls: mpsc::UnboundedReceiver<CallSignal>,
    /// MESSAGEs received outside a call, each with the answer owed.
    pub messages: mpsc::UnboundedReceiver<IncomingMessage>,
}

/// A running SIP endpoint. Dropping it does not stop it; call [`SipStack::shutdown`].
pub struct SipStack {
    pub(crate) endpoint: Endpoint,
    pub(crate) udp: UdpConnection,
    pub(crate) tcp_addr: Option<SocketAddr>,
    /// The UDP listener's public address as the first STUN server that answered saw
    /// it (`None`: no STUN server configured, or none answered).
    public_udp: Option<(SocketAddr, SocketAddr)>,
    calls: Calls,
    /// Where NOTIFYs for our subscriptions go (by Call-ID and our tag).
    pub(crate) notify_routes: NotifyRoutes,
    /// Our TLS connections open now (the registrations'), by remote.
    pub(crate) tls_flows: TlsFlows,
    cancel: CancellationToken,
}

impl SipStack {
    /// Binds the listeners and starts serving. Fails with a clear error when the port
    /// is taken or the trace file cannot be opened. Call signals and messages arrive
    /// on the returned inbox.
    pub async fn start(config: StackConfig) -> Result<(SipStack, SipInbox), SipError> {
        let cancel = CancellationToken::new();
        let trace = match &config.trace {
            Some(path) => Some(Arc::new(SipTrace::open(path).map_err(|e| {
                SipError::Setup(format!("cannot open SIP trace {}: {e}", path.display()))
            })?)),
            None => None,
        };

        let reading = Arc::new(Reading {
            config: ReaderConfig {
                server: config.user_agent.clone(),
                allow: ALLOW,
            },
            echo: EchoBook::default(),
            trace: trace.clone(),
        });
        let mut builder = EndpointBuilder::new();
        builder
            .with_user_agent(&config.user_agent)
            .with_cancel_token(cancel.clone())
            .with_option(EndpointOption {
                callid_suffix: Some(config.callid_domain.clone()),
                ..Default::default()
            });
        let cancel_reasons = CancelReasons::default();
        builder.with_inspector(Box::new(Inspector {
            trace: trace.clone(),
            rport: config.rport,
            cancel_reasons: cancel_reasons.clone(),
            reading: reading.clone(),
        }));
        builder.with_transport_inspector(Box::new(StackStreams {
            reading: reading.clone(),
        }));
        let endpoint = builder.build();

        let bind = SocketAddr::new(config.bind_ip, config.port);
        // Our reader sits under the stack's UDP listener: the stack reads the
        // datagrams through it (see `ReadingSocket`).
        let std_socket = std::net::UdpSocket::bind(bind)
            .map_err(|e| SipError::Setup(format!("cannot listen on UDP {bind}: {e}")))?;
        // STUN from the SIP socket itself, before the stack reads it: the mapping
        // learned is the one our REGISTERs and calls leave through (kept open by
        // the registration's keep-alives). Blocks start-up at most
        // `stun::PER_SERVER` per silent server.
        let public_udp = if config.stun.is_empty() {
            None
        } else {
            match microsip_nat::stun::discover(&std_socket, &config.stun) {
                Ok(m) => {
                    info!(
                        "STUN: SIP socket {} is {} seen from {} (round trip {:.2} ms)",
                        std_socket
                            .local_addr()
                            .map(|a| a.to_string())
                            .unwrap_or_default(),
                        m.public,
                        m.server,
                        m.round_trip.as_secs_f64() * 1000.0
                    );
                    Some((m.public, m.server))
                }
                Err(e) => {
                    warn!("STUN: no public address for the SIP socket ({e}); using the local one");
                    None
                }
            }
        };
        let socket = std_socket
            .set_nonblocking(true)
            .and_then(|()| tokio::net::UdpSocket::from_std(std_socket))
            .map_err(|e| SipError::Setup(format!("cannot listen on UDP {bind}: {e}")))?;
        let socket = Arc::new(ReadingSocket {
            socket,
            reading: reading.clone(),
        });
        // With a wildcard bind the stack advertises the first non-loopback address.
        let udp = UdpConnection::from_socket(socket, None, Some(cancel.child_token()))
            .await
            .map_err(|e| SipError::Setup(format!("cannot listen on UDP {bind}: {e}")))?;
        let udp_port = udp
            .get_addr()
            .get_socketaddr()
            .map(|a| a.port())
            .map_err(|e| SipError::Setup(format!("UDP listener has no address: {e}")))?;
        endpoint
            .inner
            .transport_layer
            .add_transport(SipConnection::Udp(udp.clone()));

        let mut tcp_addr = None;
        let mut tcp_local = None;
        let mut tcp_listener = None;
        if config.tcp {
            // Our own TCP listener: each accepted connection is read by our
            // reader and handed to the stack message by message (`serve_stream`).
            // Requests the stack sends on a TCP flow still choose the listener's
            // address for their Via: the UDP listener's, same port.
            let tcp_bind = SocketAddr::new(config.bind_ip, udp_port);
            let listener = tokio::net::TcpListener::bind(tcp_bind)
                .await
                .map_err(|e| SipError::Setup(format!("cannot listen on TCP {tcp_bind}: {e}")))?;
            let local = SipAddr {
                r#type: Some(Transport::Tcp),
                addr: tcp_bind.into(),
            };
            tcp_addr = Some(tcp_bind);
            tcp_local = Some(local.clone());
            tcp_listener = Some((listener, local));
        }
        if let Some(trace) = &trace {
            let mut addrs = endpoint.inner.transport_layer.get_listen_addrs();
            addrs.extend(tcp_local.clone());
            trace.set_local_addrs(addrs);
        }

        let incoming = endpoint
            .incoming_transactions()
            .map_err(|e| SipError::Setup(format!("SIP endpoint: {e}")))?;
        let inner = endpoint.inner.clone();
        tokio::spawn(async move {
            if let Err(e) = inner.serve().await {
                warn!("SIP endpoint stopped: {e}");
            }
        });
        if let Some((listener, local)) = tcp_listener {
            tokio::spawn(serve_tcp(
                listener,
                local,
                endpoint.inner.clone(),
                reading.clone(),
                cancel.child_token(),
            ));
        }
        let (signal_tx, signal_rx) = mpsc::unbounded_channel();
        let layer = Arc::new(DialogLayer::new(endpoint.inner.clone()));
        let tls_flows = TlsFlows::default();
        let calls = Calls::new(
            layer,
            signal_tx,
            udp.get_addr().clone(),
            tcp_local,
            tls_flows.clone(),
            cancel_reasons,
        );
        let (message_tx, message_rx) = mpsc::unbounded_channel();
        let notify_routes = NotifyRoutes::default();
        tokio::spawn(dispatch(
            incoming,
            calls.clone(),
            message_tx,
            notify_routes.clone(),
        ));
        info!(
            "SIP listening on {}:{udp_port} (UDP{})",
            config.bind_ip,
            if config.tcp { ", TCP" } else { "" }
        );

        Ok((
            SipStack {
                endpoint,
                udp,
                tcp_addr,
                public_udp,
                calls,
                notify_routes,
                tls_flows,
                cancel,
            },
            SipInbox {
                calls: signal_rx,
                messages: message_rx,
            },
        ))
    }

    /// The call legs: dial, answer, hang up...
    pub fn calls(&self) -> &Calls {
        &self.calls
    }

    /// The UDP listener's address.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp.get_addr().get_socketaddr().ok()
    }

    /// The UDP listener's public address learned by STUN at start (`None`: STUN off
    /// or no server answered).
    pub fn public_udp(&self) -> Option<SocketAddr> {
        self.public_udp.map(|(public, _)| public)
    }

    /// The STUN server that answered at start, if one did.
    pub fn stun_server(&self) -> Option<SocketAddr> {
        self.public_udp.map(|(_, server)| server)
    }

    /// The TCP listener's address, when TCP is on.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    pub(crate) fn inner(&self) -> Arc<EndpointInner> {
        self.endpoint.inner.clone()
    }

    /// Stops every listener and timer. Unregister first: this sends nothing.
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }
}

/// Sees every message the stack sends or receives: takes `;rport` out of the Via
/// of our requests when the ini says `rport=0`, notes the Reason of each CANCEL
/// received, and feeds the SIP trace.
struct Inspector {
    trace: Option<Arc<SipTrace>>,
    rport: bool,
    cancel_reasons: CancelReasons,
    reading: Arc<Reading>,
}

impl MessageInspector for Inspector {
    fn before_send(&self, mut msg: SipMessage, dest: Option<&SipAddr>) -> SipMessage {
        if !self.rport {
            if let SipMessage::Request(req) = &mut msg {
                without_rport(&mut req.headers);
            }
        }
        match &mut msg {
            SipMessage::Response(resp) => echo_as_received(&self.reading.echo, resp),
            SipMessage::Request(req) => without_made_up_tag(&mut req.headers),
        }
        if let Some(trace) = &self.trace {
            trace.sent(&msg, dest);
        }
        msg
    }

    fn after_received(&self, msg: SipMessage, from: Option<&SipAddr>) -> SipMessage {
        if let SipMessage::Request(req) = &msg {
            self.cancel_reasons.record(req);
        }
        if let Some(trace) = &self.trace {
            trace.received(&msg, from);
        }
        msg
    }
}

/// Our reader's state, shared by the UDP socket, the TCP connections and the
/// inspector.
struct Reading {
    config: ReaderConfig,
    echo: EchoBook,
    trace: Option<Arc<SipTrace>>,
}

impl Reading {
    /// Runs one message through the reader; what it answers or drops is traced
    /// here (the stack never sees it).
    fn read(&self, bytes: &[u8], tcp: bool, from: SocketAddr) -> Verdict {
        self.read_as(bytes, tcp, if tcp { "TCP" } else { "UDP" }, from)
    }

    /// As [`Reading::read`], traced under `transport` ("TLS" for a TLS stream).
    fn read_as(&self, bytes: &[u8], stream: bool, transport: &str, from: SocketAddr) -> Verdict {
        let verdict = reader::read(bytes, stream, from, &self.config, &self.echo);
        match &verdict {
            Verdict::Pass(_) => {}
            Verdict::Answer(resp) => {
                if let Some(trace) = &self.trace {
                    let text = String::from_utf8_lossy(bytes);
                    trace.record(Direction::Received, transport, &from.to_string(), &text);
                    let text = String::from_utf8_lossy(resp);
                    trace.record(Direction::Sent, transport, &from.to_string(), &text);
                }
            }
            Verdict::Drop(why) => {
                debug!("dropped a message from {from} ({transport}): {why}");
                if let Some(trace) = &self.trace {
                    let text = format!("{}\n(dropped: {why})", String::from_utf8_lossy(bytes));
                    trace.record(Direction::Received, transport, &from.to_string(), &text);
                }
            }
        }
        verdict
    }
}

/// The UDP socket the stack's listener reads from: each datagram goes through
/// our reader first. What it passes reaches the stack (rewritten); what it
/// answers is answered from here; what it drops never arrives.
struct ReadingSocket {
    socket: tokio::net::UdpSocket,
    reading: Arc<Reading>,
}

type IoResult<T> = rsipstack::Result<T>;

impl rsipstack::platform::net::UdpSocket for ReadingSocket {
    fn recv_from<'a, 'b, 'f>(
        &'a self,
        buf: &'b mut [u8],
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = IoResult<(usize, SocketAddr)>> + Send + 'f>,
    >
    where
        'a: 'f,
        'b: 'f,
        Self: 'f,
    {
        Box::pin(async move {
            loop {
                let (len, from) = self.socket.recv_from(buf).await?;
                let packet = &buf[..len];
                // Keep-alives and stray white space: the stack's own business.
                if packet.iter().all(|b| b.is_ascii_whitespace()) {
                    return Ok((len, from));
                }
                match self.reading.read(packet, false, from) {
                    Verdict::Pass(message) if message.len() <= buf.len() => {
                        buf[..message.len()].copy_from_slice(&message);
                        return Ok((message.len(), from));
                    }
                    Verdict::Pass(_) => debug!("a datagram from {from} grew too large"),
                    Verdict::Answer(resp) => {
                        if let Err(e) = self.socket.send_to(&resp, from).await {
                            debug!("could not answer {from}: {e}");
                        }
                    }
                    Verdict::Drop(_) => {}
                }
            }
        })
    }

    fn send_to<'a, 'b, 'f>(
        &'a self,
        buf: &'b [u8],
        addr: SocketAddr,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = IoResult<usize>> + Send + 'f>>
    where
        'a: 'f,
        'b: 'f,
        Self: 'f,
    {
        Box::pin(async move { Ok(self.socket.send_to(buf, addr).await?) })
    }

    fn local_addr(&self) -> IoResult<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }
}

/// The TCP connections the phone opens itself (to its registrar, or the stack's
/// to a TCP target) are read by the stack's own parser; what it makes of their
/// messages goes through our reader here, written out again, so the same refusals
/// (420, 416, 415, 406, 400 for what parses but is wrong) apply on them too.
/// Messages our reader handed on already (UDP, our TCP listener's connections)
/// are left alone.
struct StackStreams {
    reading: Arc<Reading>,
}

impl rsipstack::transaction::endpoint::TransportEventInspector for StackStreams {
    fn handle<'a, 'f>(
        &'a self,
        event: rsipstack::transport::TransportEvent,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Option<rsipstack::transport::TransportEvent>>
                + Send
                + 'f,
        >,
    >
    where
        'a: 'f,
        Self: 'f,
    {
        use rsipstack::transport::TransportEvent;
        Box::pin(async move {
            let TransportEvent::Incoming(msg, conn, from) = event else {
                return Some(event);
            };
            if !matches!(conn, SipConnection::Tcp(_) | SipConnection::Tls(_)) {
                return Some(TransportEvent::Incoming(msg, conn, from));
            }
            let Ok(remote) = from.get_socketaddr() else {
                return Some(TransportEvent::Incoming(msg, conn, from));
            };
            let transport = if matches!(conn, SipConnection::Tls(_)) {
                "TLS"
            } else {
                "TCP"
            };
            match self
                .reading
                .read_as(&msg.to_bytes(), true, transport, remote)
            {
                Verdict::Pass(bytes) => match SipMessage::try_from(bytes.as_slice()) {
                    Ok(checked) => Some(TransportEvent::Incoming(checked, conn, from)),
                    Err(_) => Some(TransportEvent::Incoming(msg, conn, from)),
                },
                Verdict::Answer(resp) => {
                    let sent = match &conn {
                        SipConnection::Tcp(c) => c.inner.send_raw(&resp).await,
                        SipConnection::Tls(c) => {
                            use rsipstack::transport::stream::StreamConnection;
                            c.send_raw(&resp).await
                        }
                        _ => Ok(()),
                    };
                    if let Err(e) = sent {
                        debug!("could not answer {remote} ({transport}): {e}");
                    }
                    None
                }
                Verdict::Drop(_) => None,
            }
        })
    }
}

/// How long an accepted TCP connection may stay silent (the stack's own default).
const STREAM_IDLE: Duration = Duration::from_secs(300);
/// How long a stream that cannot be framed is kept open for the answers under way.
const BROKEN_IDLE: Duration = Duration::from_secs(32);

/// Accepts TCP connections until cancelled; each is served by `serve_stream`.
async fn serve_tcp(
    listener: tokio::net::TcpListener,
    local: SipAddr,
    inner: Arc<EndpointInner>,
    reading: Arc<Reading>,
    cancel: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                warn!("TCP accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Without NODELAY a response can wait for the peer's delayed ACK.
        let _ = stream.set_nodelay(true);
        let token = cancel.child_token();
        match TcpConnection::from_stream(stream, local.clone(), Some(token.clone())) {
            Ok(conn) => {
                tokio::spawn(serve_stream(
                    conn,
                    remote,
                    inner.clone(),
                    reading.clone(),
                    token,
                ));
            }
            Err(e) => warn!("TCP connection from {remote}: {e}"),
        }
    }
}

/// Reads one accepted TCP connection: frames messages by Content-Length, runs
/// each through the reader and hands what passes to the stack on this
/// connection (so responses and in-dialog requests flow back on it). A stream
/// that cannot be framed any more (no, two or a bad Content-Length) gets its 400
/// and is closed.
async fn serve_stream(
    conn: TcpConnection,
    remote: SocketAddr,
    inner: Arc<EndpointInner>,
    reading: Arc<Reading>,
    token: CancellationToken,
) {
    let Some(mut read_half) = conn.inner.read_half.lock().await.take() else {
        return;
    };
    let from = SipAddr {
        r#type: Some(Transport::Tcp),
        addr: remote.into(),
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    // Once the stream cannot be framed, what follows is read and thrown away
    // until the peer closes (the answers already under way still go out).
    let mut broken = false;
    loop {
        let idle = if broken { BROKEN_IDLE } else { STREAM_IDLE };
        let n = tokio::select! {
            _ = token.cancelled() => break,
            read = tokio::time::timeout(idle, read_half.read(&mut chunk)) => match read {
                Ok(Ok(n)) if n > 0 => n,
                _ => break,
            },
        };
        if broken {
            continue;
        }
        buf.extend_from_slice(&chunk[..n]);
        loop {
            match reader::next_frame(&mut buf) {
                Frame::More => break,
                Frame::Ping => {
                    let _ = conn.inner.send_raw(b"\r\n").await;
                }
                Frame::Message(message) => {
                    stream_message(&message, &conn, remote, &from, &inner, &reading).await;
                }
                Frame::Broken(message) => {
                    if let Some(message) = message {
                        stream_message(&message, &conn, remote, &from, &inner, &reading).await;
                    }
                    debug!("TCP stream from {remote} cannot be framed any more");
                    broken = true;
                    buf.clear();
                    break;
                }
            }
        }
    }
    token.cancel();
    let _ = conn.inner.close().await;
}

async fn stream_message(
    message: &[u8],
    conn: &TcpConnection,
    remote: SocketAddr,
    from: &SipAddr,
    inner: &Arc<EndpointInner>,
    reading: &Reading,
) {
    match reading.read(message, true, remote) {
        Verdict::Pass(bytes) => {
            let msg = match SipMessage::try_from(bytes.as_slice()) {
                Ok(msg) => msg,
                Err(e) => {
                    debug!("the stack cannot read a message from {remote}: {e}");
                    return;
                }
            };
            let msg = match SipConnection::update_msg_received(msg, remote, Transport::Tcp) {
                Ok(msg) => msg,
                Err(e) => {
                    debug!("message from {remote}: {e}");
                    return;
                }
            };
            let connection = SipConnection::Tcp(conn.clone());
            if let Err(e) = inner.on_received_message(msg, connection, from).await {
                debug!("message from {remote}: {e}");
            }
        }
        Verdict::Answer(resp) => {
            let _ = conn.inner.send_raw(&resp).await;
        }
        Verdict::Drop(_) => {}
    }
}

/// Puts the request's Via, From, To, Call-ID and CSeq back into its response as
/// they were received (RFC 3261 §8.2.6.2), where the stack re-spelled them (it
/// re-writes To to add its tag, and the top Via to add `received`). Each value
/// is only put back when the stack reads the same tag, branch and destination
/// out of it.
fn echo_as_received(book: &EchoBook, resp: &mut Response) {
    let vias: Vec<String> = resp
        .headers
        .iter()
        .filter_map(|h| match h {
            Header::Via(v) => Some(v.value().to_string()),
            _ => None,
        })
        .collect();
    let (Ok(call_id), Ok(cseq), Ok(to)) = (
        resp.call_id_header().map(|c| c.value().to_string()),
        resp.cseq_header().map(|c| c.value().to_string()),
        resp.to_header().map(|t| t.value().to_string()),
    ) else {
        return;
    };
    let view = ResponseView {
        call_id,
        cseq,
        vias: vias.clone(),
        to,
    };
    let Some(back) = book.restore(&view) else {
        return;
    };
    let same_via = {
        let old = resp
            .via_header()
            .ok()
            .and_then(|v| SipConnection::parse_target_from_via(v).ok());
        let new_via = rsipstack::sip::Via::new(back.vias[0].clone());
        let new = SipConnection::parse_target_from_via(&new_via).ok();
        let branch = |v: &rsipstack::sip::Via| {
            v.typed()
                .ok()
                .and_then(|t| t.branch().map(|b| b.to_string()))
        };
        old.is_some() && old == new && resp.via_header().ok().and_then(branch) == branch(&new_via)
    };
    let mut vias_back = back.vias.into_iter();
    for h in resp.headers.iter_mut() {
        match h {
            Header::Via(v) if same_via => {
                if let Some(raw) = vias_back.next() {
                    *v = rsipstack::sip::Via::new(raw);
                }
            }
            Header::From(f) => {
                let new = rsipstack::sip::From::new(back.from.clone());
                if new.tag().ok().flatten() == f.tag().ok().flatten() {
                    *f = new;
                }
            }
            Header::To(t) => {
                let new = rsipstack::sip::To::new(back.to.clone());
                if new.tag().ok().flatten() == t.tag().ok().flatten() {
                    *t = new;
                }
            }
            Header::CallId(c) if c.value().trim() == back.call_id.replace("\r\n", " ").trim() => {
                *c = rsipstack::sip::CallId::new(back.call_id.clone());
            }
            Header::CSeq(c) => {
                let new = rsipstack::sip::CSeq::new(back.cseq.clone());
                if new.seq().ok() == c.seq().ok() && new.method().ok() == c.method().ok() {
                    *c = new;
                }
            }
            _ => {}
        }
    }
}

/// An RFC 2543 caller sent no From tag; the reader made one up for the stack
/// (`reader::RFC2543_TAG`). Our requests to it carry its From in To: without that
/// tag, as it knows none.
fn without_made_up_tag(headers: &mut rsipstack::sip::Headers) {
    for h in headers.iter_mut() {
        if let Header::To(to) = h {
            let value = to.value();
            if let Some(at) = value.find(&format!(";tag={}", reader::RFC2543_TAG)) {
                let end = value[at + 1..]
                    .find(';')
                    .map(|e| at + 1 + e)
                    .unwrap_or(value.len());
                let stripped = format!("{}{}", &value[..at], &value[end..]);
                *to = rsipstack::sip::To::new(stripped);
            }
        }
    }
}

/// Drops the `rport` parameter from the top Via (ours, on a request we send).
fn without_rport(headers: &mut rsipstack::sip::Headers) {
    let Some(Header::Via(via)) = headers.iter_mut().find(|h| matches!(h, Header::Via(_))) else {
        return;
    };
    let Ok(mut typed) = via.typed() else {
        return;
    };
    if typed.params.iter().any(|p| matches!(p, Param::Rport(_))) {
        typed.params.retain(|p| !matches!(p, Param::Rport(_)));
        *via = typed.into();
    }
}

/// The local address the kernel would use to reach `remote` (no packet is sent).
pub fn local_ip_towards(remote: IpAddr) -> IpAddr {
    probe_local_ip(remote).unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// The local address the system would send from to reach `remote` (a UDP
/// `connect`, which sends nothing); `None` when there is no route (the link is
/// down, the address went away).
pub fn probe_local_ip(remote: IpAddr) -> Option<IpAddr> {
    let bind = SocketAddr::new(
        if remote.is_ipv6() {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        } else {
            Ipv4Addr::UNSPECIFIED.into()
        },
        0,
    );
    let socket = UdpSocket::bind(bind).ok()?;
    socket.connect(SocketAddr::new(remote, 9)).ok()?;
    let local = socket.local_addr().ok()?.ip();
    (!local.is_unspecified()).then_some(local)
}

/// A local address of the other family than `ip`, for media with a peer that
/// offers only that family: the other loopback for a loopback `ip` (when this
/// machine has it), else the address the system would use towards a public
/// address of that family (a UDP `connect`, which sends nothing). `None` when the
/// machine has no such address or route.
pub fn other_family_ip(ip: IpAddr) -> Option<IpAddr> {
    let (loopback, probe): (IpAddr, IpAddr) = if ip.is_ipv6() {
        (
            Ipv4Addr::LOCALHOST.into(),
            Ipv4Addr::new(192, 0, 2, 1).into(),
        )
    } else {
        (
            std::net::Ipv6Addr::LOCALHOST.into(),
            std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into(),
        )
    };
    let usable = |candidate: IpAddr| UdpSocket::bind(SocketAddr::new(candidate, 0)).is_ok();
    if ip.is_loopback() && usable(loopback) {
        return Some(loopback);
    }
    let bind = SocketAddr::new(
        if probe.is_ipv6() {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        } else {
            Ipv4Addr::UNSPECIFIED.into()
        },
        0,
    );
    let socket = UdpSocket::bind(bind).ok()?;
    socket.connect(SocketAddr::new(probe, 9)).ok()?;
    let local = socket.local_addr().ok()?.ip();
    (!local.is_unspecified()).then_some(local)
}

/// Routes requests the transaction layer hands us: NOTIFYs of our subscriptions to
/// them (an unknown out-of-dialog NOTIFY gets 481), in-dialog requests to their
/// dialog (481 when none), new INVITEs to the call legs, OPTIONS answered 200, the
/// rest refused with 405 and our Allow.
async fn dispatch(
    mut incoming: TransactionReceiver,
    calls: Calls,
    messages: mpsc::UnboundedSender<IncomingMessage>,
    notify_routes: NotifyRoutes,
) {
    while let Some(tx) = incoming.recv().await {
        let mut tx = if tx.original.method == Method::Notify {
            match route_notify(&notify_routes, tx) {
                None => continue,
                Some(tx) => tx,
            }
        } else {
            tx
        };
        let method = tx.original.method;
        let has_to_tag = tx
            .original
            .to_header()
            .ok()
            .and_then(|t| t.tag().ok().flatten())
            .is_some();
        if has_to_tag {
            calls.in_dialog(tx);
            continue;
        }
        if method == Method::Invite {
            calls.incoming(tx);
            continue;
        }
        if method == Method::Message {
            match IncomingMessage::from_transaction(tx) {
                Ok(message) => {
                    // The engine answers once the text is stored.
                    if let Err(returned) = messages.send(message) {
                        tokio::spawn(returned.0.respond(503));
                    }
                }
                Err(mut tx) => {
                    tokio::spawn(async move {
                        let _ = tx.reply(StatusCode::RequestEntityTooLarge).await;
                    });
                }
            }
            continue;
        }
        tokio::spawn(async move {
            let result = match method {
                Method::Options => {
                    let headers = vec![
                        Header::Allow(ALLOW.into()),
                        Header::Accept("application/sdp".into()),
                    ];
                    tx.reply_with(StatusCode::OK, headers, None).await
                }
                Method::Ack => Ok(()),
                Method::Bye | Method::Cancel | Method::Notify => {
                    tx.reply(StatusCode::CallTransactionDoesNotExist).await
                }
                _ => {
                    let headers = vec![Header::Allow(ALLOW.into())];
                    tx.reply_with(StatusCode::MethodNotAllowed, headers, None)
                        .await
                }
            };
            if let Err(e) = result {
                debug!("could not answer {method}: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsipstack::sip::Headers;

    #[test]
    fn a_made_up_rfc2543_tag_never_leaves() {
        let mut headers: Headers = vec![
            Header::To(rsipstack::sip::To::new(
                "<sip:+13035551111@ift.client.example.net;user=phone>;tag=rfc2543-1a2b3c4d;x=1",
            )),
            Header::From(rsipstack::sip::From::new(
                "<sip:UserB@example.com>;tag=ours",
            )),
        ]
        .into();
        without_made_up_tag(&mut headers);
        let to = headers.iter().find_map(|h| match h {
            Header::To(t) => Some(t.value().to_string()),
            _ => None,
        });
        assert_eq!(
            to.as_deref(),
            Some("<sip:+13035551111@ift.client.example.net;user=phone>;x=1")
        );
        let mut ours: Headers =
            vec![Header::To(rsipstack::sip::To::new("<sip:a@b>;tag=abc"))].into();
        without_made_up_tag(&mut ours);
        assert!(ours
            .iter()
            .any(|h| matches!(h, Header::To(t) if t.value() == "<sip:a@b>;tag=abc")));
    }
}
