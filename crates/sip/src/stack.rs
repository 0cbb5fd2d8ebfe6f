//! The SIP endpoint: listeners (UDP and TCP on one port), our own User-Agent and
//! Call-ID domain, the trace, and the dispatcher that answers requests arriving
//! outside any dialog (OPTIONS → 200; what we cannot serve yet gets a clear code).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;

use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::sip::prelude::{HeadersExt, ToTypedHeader};
use rsipstack::sip::{Header, Method, Param, SipMessage, StatusCode};
use rsipstack::transaction::endpoint::{EndpointInner, EndpointOption, MessageInspector};
use rsipstack::transaction::{Endpoint, EndpointBuilder, TransactionReceiver};
use rsipstack::transport::tcp_listener::TcpListenerConnection;
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::{SipAddr, SipConnection};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::call::{CallSignal, Calls, CancelReasons};
use crate::message::IncomingMessage;
use crate::subscription::{route_notify, NotifyRoutes};
use crate::trace::SipTrace;
use crate::SipError;

/// The methods we answer; sent in `Allow`.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, MESSAGE, NOTIFY, REFER, UPDATE";

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
}

/// What the SIP layer hands the engine: call signals and received messages.
pub struct SipInbox {
    pub calls: mpsc::UnboundedReceiver<CallSignal>,
    pub messages: mpsc::UnboundedReceiver<IncomingMessage>,
}

/// A running SIP endpoint. Dropping it does not stop it; call [`SipStack::shutdown`].
pub struct SipStack {
    pub(crate) endpoint: Endpoint,
    pub(crate) udp: UdpConnection,
    pub(crate) tcp_addr: Option<SocketAddr>,
    calls: Calls,
    /// Where NOTIFYs for our subscriptions go (by Call-ID and our tag).
    pub(crate) notify_routes: NotifyRoutes,
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
        }));
        let endpoint = builder.build();

        let bind = SocketAddr::new(config.bind_ip, config.port);
        // With a wildcard bind the stack advertises the first non-loopback address.
        let udp = UdpConnection::create_connection(bind, None, Some(cancel.child_token()))
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
        if config.tcp {
            let tcp_bind = SocketAddr::new(config.bind_ip, udp_port);
            let listener = TcpListenerConnection::new(tcp_bind, None)
                .await
                .map_err(|e| SipError::Setup(format!("cannot listen on TCP {tcp_bind}: {e}")))?;
            tcp_addr = Some(tcp_bind);
            tcp_local = Some(listener.get_addr().clone());
            endpoint
                .inner
                .transport_layer
                .add_transport(SipConnection::TcpListener(listener));
        }
        if let Some(trace) = &trace {
            trace.set_local_addrs(endpoint.inner.transport_layer.get_listen_addrs());
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
        let (signal_tx, signal_rx) = mpsc::unbounded_channel();
        let layer = Arc::new(DialogLayer::new(endpoint.inner.clone()));
        let calls = Calls::new(
            layer,
            signal_tx,
            udp.get_addr().clone(),
            tcp_local,
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
                calls,
                notify_routes,
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
}

impl MessageInspector for Inspector {
    fn before_send(&self, mut msg: SipMessage, dest: Option<&SipAddr>) -> SipMessage {
        if !self.rport {
            if let SipMessage::Request(req) = &mut msg {
                without_rport(&mut req.headers);
            }
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
    let probe = || -> std::io::Result<IpAddr> {
        let bind: SocketAddr = if remote.is_ipv6() {
            "[::]:0".parse().map_err(std::io::Error::other)?
        } else {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
        };
        let socket = UdpSocket::bind(bind)?;
        socket.connect(SocketAddr::new(remote, 9))?;
        Ok(socket.local_addr()?.ip())
    };
    probe().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
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
