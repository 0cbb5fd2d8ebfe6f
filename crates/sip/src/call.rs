//! Call signalling: INVITE dialogs in both directions on rsipstack's dialog layer.
//! Each call leg has a numeric id (the engine adopts it as the call id); everything
//! that happens to a leg is reported as one [`CallSignal`]; the engine acts on a leg
//! through [`Calls`]. SDP is carried as text: this module does not read it. It reads
//! and writes the session-timer headers (RFC 4028); the timers themselves and who
//! refreshes are the engine's.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::dialog::{
    DialogState, DialogStateReceiver, TerminatedReason, TransactionHandle,
};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invitation::InviteOption;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::prelude::{HeadersExt, ToTypedHeader};
use rsipstack::sip::{Header, Method, Request, StatusCode, Transport, Uri};
use rsipstack::sip::{Param, Response};
use rsipstack::transaction::endpoint::EndpointInner;
use rsipstack::transaction::transaction::{Transaction, TransactionEvent, TransactionEventSender};
use rsipstack::transport::SipAddr;
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// A call leg's id; the engine uses the same number as the call id.
pub type LegId = u64;

/// Who ended a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndedBy {
    /// We ended the call.
    Local,
    /// The remote ended the call.
    Remote,
}

/// What we know about an incoming INVITE, for the engine's policy and events.
#[derive(Debug, Clone, Default)]
pub struct IncomingInvite {
    /// The caller as a URI (P-Asserted-Identity when present, else From).
    pub remote: String,
    /// The user part of `remote` (the caller's number).
    pub remote_user: String,
    /// The host part of `remote`.
    pub remote_domain: String,
    /// The caller's display name, when the header has one.
    pub display_name: Option<String>,
    /// The Request-URI's user (which of our accounts is called).
    pub to_user: String,
    /// The Request-URI's host.
    pub to_domain: String,
    /// `Diversion` as received (kept for history and events).
    pub diversion: Option<String>,
    /// `X-AUTOANSWER` as received (the engine's policy reads it).
    pub x_autoanswer: Option<String>,
    /// `Call-Info` as received (the engine reads `answer-after`).
    pub call_info: Option<String>,
    /// What the caller says about session timers (RFC 4028).
    pub session_timer: SessionTimerAsk,
    /// The caller's SDP offer, if the INVITE carried one.
    pub sdp: Option<String>,
    /// The transport it came on.
    pub tcp: bool,
    /// What its `Replaces` header (RFC 3891) names, when it has one.
    pub replaces: Option<crate::replaces::ReplacesMatch>,
}

/// Which side refreshes the session (RFC 4028 `refresher`): the UAC or the UAS of
/// the request that set the interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    /// The UAC (the side that sent the request) refreshes.
    Uac,
    /// The UAS (the side that answered it) refreshes.
    Uas,
}

impl Refresher {
    /// The parameter's value: `uac` or `uas`.
    pub fn word(self) -> &'static str {
        match self {
            Refresher::Uac => "uac",
            Refresher::Uas => "uas",
        }
    }
}

/// A `Session-Expires` value: `1800;refresher=uas`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionExpires {
    /// The session interval, seconds.
    pub seconds: u32,
    /// Who refreshes, when named.
    pub refresher: Option<Refresher>,
}

/// What a request or response says about session timers (RFC 4028).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionTimerAsk {
    /// `Session-Expires`, when present and readable.
    pub expires: Option<SessionExpires>,
    /// `Min-SE`, when present and readable.
    pub min_se: Option<u32>,
    /// `timer` is in `Supported` or `Require`.
    pub supported: bool,
}

/// Reads `Session-Expires` (also its compact form `x`), `Min-SE`, `Supported` and
/// `Require`. An unreadable Session-Expires counts as absent.
pub(crate) fn session_timer_of(headers: &rsipstack::sip::Headers) -> SessionTimerAsk {
    let mut ask = SessionTimerAsk::default();
    for h in headers.iter() {
        match h {
            Header::SessionExpires(v) => ask.expires = parse_session_expires(v.value()),
            Header::MinSE(v) => {
                let n = v.value().split(';').next().unwrap_or_default().trim();
                ask.min_se = n.parse().ok();
            }
            Header::Supported(v) if lists_timer(v.value()) => ask.supported = true,
            Header::Require(v) if lists_timer(v.value()) => ask.supported = true,
            _ => {}
        }
    }
    ask
}

fn lists_timer(value: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case("timer"))
}

/// `1800;refresher=uac` → 1800 s, refresher UAC. Other parameters are ignored;
/// a refresher other than uac/uas counts as not named.
pub(crate) fn parse_session_expires(value: &str) -> Option<SessionExpires> {
    let mut parts = value.split(';');
    let seconds = parts.next()?.trim().parse::<u32>().ok()?;
    let refresher = parts.find_map(|p| {
        let (name, v) = p.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("refresher") {
            return None;
        }
        match v.trim().to_ascii_lowercase().as_str() {
            "uac" => Some(Refresher::Uac),
            "uas" => Some(Refresher::Uas),
            _ => None,
        }
    });
    Some(SessionExpires { seconds, refresher })
}

/// An answer owed to the remote for an in-dialog request.
pub struct Responder(TransactionHandle);

impl Responder {
    /// Answers with `code`, and an SDP body when given.
    pub async fn respond(self, code: u16, sdp: Option<String>) {
        self.respond_with(code, sdp, Vec::new()).await
    }

    /// Answers with `code`, these extra headers, and an SDP body when given.
    pub async fn respond_with(self, code: u16, sdp: Option<String>, extra: Vec<(String, String)>) {
        let mut headers: Vec<Header> = extra
            .into_iter()
            .map(|(n, v)| Header::Other(n, v))
            .collect();
        let body = sdp.map(|s| {
            headers.push(Header::ContentType("application/sdp".into()));
            s.into_bytes()
        });
        let headers = (!headers.is_empty()).then_some(headers);
        if let Err(e) = self.0.respond(StatusCode::from(code), headers, body).await {
            debug!("in-dialog answer not sent: {e}");
        }
    }
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Responder")
    }
}

/// One thing that happened to a call leg.
#[derive(Debug)]
pub enum SignalKind {
    /// A new incoming INVITE; the engine decides whether to ring, answer or refuse.
    Incoming(Box<IncomingInvite>),
    /// 180 (or 183 without SDP) for an outgoing call.
    Ringing {
        /// The provisional status code (180 or 183).
        code: u16,
    },
    /// 183 with SDP: early media.
    Early {
        /// The provisional status code (183).
        code: u16,
        /// The remote's early-media SDP.
        sdp: Option<String>,
    },
    /// 2xx to our INVITE.
    Answered {
        /// The SDP in the 2xx, if it carried one.
        sdp: Option<String>,
        /// The session-timer terms in the 2xx.
        session_timer: SessionTimerAsk,
    },
    /// The dialog is confirmed (ACK sent or received).
    Confirmed,
    /// The remote sent a re-INVITE or UPDATE (`update`); answer it with the
    /// responder.
    Reoffer {
        /// The remote's new SDP offer, if the request carried one.
        sdp: Option<String>,
        /// True for an UPDATE, false for a re-INVITE.
        update: bool,
        /// The session-timer terms the request asks for.
        session_timer: SessionTimerAsk,
        /// Answers the request.
        reply: Responder,
    },
    /// The remote asks us to call `target` (blind transfer); answer 202 or refuse.
    Refer {
        /// The URI to call (the Refer-To).
        target: String,
        /// Answers the REFER.
        reply: Responder,
    },
    /// Progress of a REFER we sent (from the remote's NOTIFY).
    ReferProgress {
        /// The transfer call's status code, from the NOTIFY's sipfrag.
        code: u16,
        /// That status line's reason phrase.
        reason: String,
        /// True for the final NOTIFY (the implicit subscription ended).
        done: bool,
    },
    /// A MESSAGE inside the call (RFC 3428 allows it); answer it with the
    /// responder once it is kept.
    Message {
        /// The sender's URI (the From).
        from: String,
        /// The sender's display name, when the From has one.
        display_name: Option<String>,
        /// The URI it was sent to (the To).
        to: String,
        /// The body's Content-Type.
        content_type: String,
        /// The message text.
        text: String,
        /// Answers the MESSAGE.
        reply: Responder,
    },
    /// An INFO (e.g. DTMF relay), already answered 200.
    Info {
        /// The INFO body's Content-Type.
        content_type: String,
        /// The INFO body.
        body: String,
    },
    /// The leg ended.
    Ended {
        /// The SIP status code it ended with.
        code: u16,
        /// The reason phrase (or Reason header text) it ended with.
        reason: String,
        /// Which side ended it.
        by: EndedBy,
        /// The caller CANCELed with `Reason: SIP;cause=200` (RFC 3326): the call
        /// was answered elsewhere (another phone of a group).
        elsewhere: bool,
    },
}

/// A signal and the leg it belongs to.
#[derive(Debug)]
pub struct CallSignal {
    /// The leg it happened to.
    pub call: LegId,
    /// What happened.
    pub kind: SignalKind,
}

/// The account an outgoing call is placed from.
#[derive(Clone)]
pub struct CallerAccount {
    /// The user part of our address (From and Contact).
    pub username: String,
    /// Our domain (the From's host).
    pub domain: String,
    /// The display name in the From, if any.
    pub display_name: Option<String>,
    /// The user name for digest authentication, when not `username`.
    pub auth_id: Option<String>,
    /// The password for digest authentication (never logged).
    pub password: String,
    /// Where requests go when not by the target's address: the proxy, else the
    /// registrar (`host[:port]`).
    pub outbound: Option<String>,
    /// Send over TCP instead of UDP.
    pub tcp: bool,
    /// Send over TLS, on the registration's connection to `outbound` (wins over
    /// `tcp`).
    pub tls: bool,
    /// Address for the Contact instead of ours.
    pub public_addr: Option<String>,
    /// Send `Privacy: id` and an anonymous From.
    pub hide_cid: bool,
    /// Offer session timers (`Supported: timer`); off with `disableSessionTimer`.
    pub session_timers: bool,
}

/// Where the ids of incoming legs start (see [`Calls::allocate`]).
const INCOMING_LEGS: LegId = 1 << 62;

/// Checks that `target` is a SIP URI the stack can send an INVITE to (what
/// [`Calls::dial`] would refuse as a bad target), without sending anything.
pub fn check_target(target: &str) -> Result<(), CallError> {
    Uri::try_from(target)
        .map(drop)
        .map_err(|e| CallError::BadTarget(format!("{target}: {e}")))
}

/// Why the SIP layer refused to act.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// No leg has this id (it ended, or never was).
    NoSuchLeg,
    /// The target is not a SIP URI the stack can use.
    BadTarget(String),
    /// The leg's dialog cannot do this in its current state (the text says what).
    WrongState(String),
    /// The request was not sent, or another internal failure (the text says what).
    Failed(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::NoSuchLeg => f.write_str("no such call"),
            CallError::BadTarget(s) => write!(f, "bad target: {s}"),
            CallError::WrongState(s) | CallError::Failed(s) => f.write_str(s),
        }
    }
}

struct Leg {
    dialog: InviteDialog,
    /// For outgoing calls: where the INVITE went (the outbound proxy), so the
    /// CANCEL goes there too (the stack would send it by the Request-URI).
    destination: Option<SipAddr>,
    /// For incoming calls: how to answer the INVITE's transaction with headers of
    /// our own (the dialog's reject() takes none).
    server: Option<ServerInvite>,
    /// We ended it (BYE/CANCEL/reject sent by us).
    local_end: Arc<AtomicBool>,
    confirmed: Arc<AtomicBool>,
}

#[derive(Clone)]
struct ServerInvite {
    request: Request,
    respond: TransactionEventSender,
    endpoint: Arc<EndpointInner>,
}

/// The call legs of the phone.
#[derive(Clone)]
pub struct Calls {
    layer: Arc<DialogLayer>,
    legs: Arc<Mutex<HashMap<LegId, Leg>>>,
    next_id: Arc<AtomicU64>,
    signals: mpsc::UnboundedSender<CallSignal>,
    udp_local: SipAddr,
    tcp_local: Option<SipAddr>,
    /// Our TLS connections open now (the registrations'), by remote.
    tls_flows: crate::tls::TlsFlows,
    /// The Reason headers of the CANCELs received (the stack's inspector fills it).
    cancel_reasons: CancelReasons,
    /// The public `host:port` for the Contact of the calls we answer over UDP (the
    /// account's `publicAddr` or the STUN-learned address; `None`: the local one).
    incoming_public: Arc<Mutex<Option<String>>>,
}

impl Calls {
    pub(crate) fn new(
        layer: Arc<DialogLayer>,
        signals: mpsc::UnboundedSender<CallSignal>,
        udp_local: SipAddr,
        tcp_local: Option<SipAddr>,
        tls_flows: crate::tls::TlsFlows,
        cancel_reasons: CancelReasons,
    ) -> Calls {
        Calls {
            layer,
            legs: Arc::new(Mutex::new(HashMap::new())),
            next_id: Arc::new(AtomicU64::new(1)),
            signals,
            udp_local,
            tcp_local,
            tls_flows,
            cancel_reasons,
            incoming_public: Arc::new(Mutex::new(None)),
        }
    }

    /// Sets the public `host[:port]` the Contact of calls answered over UDP carries
    /// (the engine's choice: `publicAddr`, else the STUN-learned address).
    pub fn set_incoming_public(&self, public: Option<String>) {
        if let Ok(mut p) = self.incoming_public.lock() {
            *p = public;
        }
    }

    /// The id of an incoming leg. Outgoing legs take the ids the engine gives them
    /// (small numbers); incoming ones come from the upper half of the range, so the
    /// two never meet.
    fn allocate(&self) -> LegId {
        INCOMING_LEGS | self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn leg(&self, id: LegId) -> Result<InviteDialog, CallError> {
        let legs = self
            .legs
            .lock()
            .map_err(|_| CallError::Failed("lock".into()))?;
        legs.get(&id)
            .map(|l| l.dialog.clone())
            .ok_or(CallError::NoSuchLeg)
    }

    fn mark_local_end(&self, id: LegId) {
        if let Ok(legs) = self.legs.lock() {
            if let Some(l) = legs.get(&id) {
                l.local_end.store(true, Ordering::SeqCst);
            }
        }
    }

    pub(crate) fn contact(&self, user: &str, tcp: bool, public_addr: Option<&str>) -> Uri {
        let local = match (tcp, &self.tcp_local) {
            (true, Some(t)) => t,
            _ => &self.udp_local,
        };
        Calls::contact_at(
            user,
            local,
            public_addr,
            if tcp { ";transport=tcp" } else { "" },
        )
    }

    /// Our Contact on a TLS connection whose local end is `local`: its address
    /// (the registrar sends requests for us down that connection) with
    /// `;transport=tls`, or `public_addr` when set.
    pub(crate) fn tls_contact(user: &str, local: &SipAddr, public_addr: Option<&str>) -> Uri {
        Calls::contact_at(user, local, public_addr, ";transport=tls")
    }

    /// `sip:USER@HOST:PORT` + `transport`: `public_addr` (with `local`'s port when it
    /// names none), else `local`'s address.
    fn contact_at(user: &str, local: &SipAddr, public_addr: Option<&str>, transport: &str) -> Uri {
        let host_port = match public_addr.filter(|s| !s.is_empty()) {
            Some(p) if p.contains(':') => p.to_string(),
            Some(p) => format!(
                "{p}:{}",
                local.addr.port.map(|p| p.to_string()).unwrap_or_default()
            ),
            None => local.addr.to_string(),
        };
        let user_part = if user.is_empty() {
            String::new()
        } else {
            format!("{user}@")
        };
        Uri::try_from(format!("sip:{user_part}{host_port}{transport}").as_str()).unwrap_or_default()
    }

    /// Places a call: sends the INVITE (answering 401/407 with the account's
    /// credentials) and returns the new leg's id once the INVITE is on its way.
    pub fn dial(
        &self,
        id: LegId,
        account: &CallerAccount,
        target: &str,
        sdp_offer: String,
        extra_headers: Vec<(String, String)>,
    ) -> Result<LegId, CallError> {
        let callee =
            Uri::try_from(target).map_err(|e| CallError::BadTarget(format!("{target}: {e}")))?;
        let from_text = if account.hide_cid {
            "sip:anonymous@anonymous.invalid".to_string()
        } else {
            format!("sip:{}@{}", account.username, account.domain)
        };
        let caller = Uri::try_from(from_text.as_str())
            .map_err(|e| CallError::BadTarget(format!("{from_text}: {e}")))?;
        let secure_target = target.to_ascii_lowercase().starts_with("sips:")
            || target.to_ascii_lowercase().contains(";transport=tls");
        if secure_target && !account.tls {
            return Err(CallError::Failed(format!(
                "{target} needs TLS: this account does not use transport=tls"
            )));
        }
        let transport = if account.tls {
            Transport::Tls
        } else if account.tcp {
            Transport::Tcp
        } else {
            Transport::Udp
        };
        // Over TLS the call rides the registration's connection: our Contact is
        // that connection's local end.
        let tls_local = if account.tls {
            let Some(outbound) = account.outbound.as_deref() else {
                return Err(CallError::Failed(
                    "TLS: this account has no registrar or proxy to connect to".into(),
                ));
            };
            let remote = Uri::try_from(format!("sip:{outbound}").as_str())
                .map(|u| u.host_with_port.to_string())
                .unwrap_or_else(|_| outbound.to_string());
            match self.tls_flows.local_for(&remote) {
                Some(local) => Some(local),
                None => {
                    return Err(CallError::Failed(format!(
                        "TLS: no connection to {outbound} (the account is not registered)"
                    )))
                }
            }
        } else {
            None
        };
        let destination = account.outbound.as_deref().and_then(|o| {
            Uri::try_from(format!("sip:{o}").as_str())
                .ok()
                .map(|u| SipAddr {
                    r#type: Some(transport),
                    addr: u.host_with_port,
                })
        });
        let invite_destination = destination.clone();
        let mut headers: Vec<Header> = extra_headers
            .into_iter()
            .map(|(n, v)| Header::Other(n, v))
            .collect();
        headers.push(Header::Allow(crate::stack::ALLOW.into()));
        headers.push(Header::Supported(supported(account.session_timers).into()));
        if account.hide_cid {
            headers.push(Header::Privacy("id".into()));
        }
        let option = InviteOption {
            caller_display_name: if account.hide_cid {
                Some("Anonymous".into())
            } else {
                account.display_name.clone()
            },
            caller,
            callee,
            destination,
            content_type: Some("application/sdp".into()),
            offer: Some(sdp_offer.into_bytes()),
            contact: match &tls_local {
                Some(local) => {
                    Calls::tls_contact(&account.username, local, account.public_addr.as_deref())
                }
                None => self.contact(
                    &account.username,
                    account.tcp,
                    account.public_addr.as_deref(),
                ),
            },
            credential: Some(Credential {
                username: account.username.clone(),
                password: account.password.clone(),
                realm: None,
                auth_username: account.auth_id.clone().filter(|s| !s.is_empty()),
            }),
            headers: Some(headers),
            ..Default::default()
        };
        let (state_tx, state_rx) = self.layer.new_dialog_state_channel();
        let (dialog, join) = self
            .layer
            .do_invite_async(option, state_tx)
            .map_err(|e| CallError::Failed(format!("INVITE not sent: {e}")))?;
        let local_end = Arc::new(AtomicBool::new(false));
        let confirmed = Arc::new(AtomicBool::new(false));
        if let Ok(mut legs) = self.legs.lock() {
            legs.insert(
                id,
                Leg {
                    dialog,
                    destination: invite_destination,
                    server: None,
                    local_end: local_end.clone(),
                    confirmed: confirmed.clone(),
                },
            );
        }
        tokio::spawn(self.clone().watch(id, state_rx, true));
        // The INVITE's final answer: a failure ends the call here.
        let me = self.clone();
        tokio::spawn(async move {
            let outcome = join.await;
            let failure = match outcome {
                Ok(Ok((_, Some(resp)))) if resp.status_code.code() >= 300 => Some((
                    resp.status_code.code(),
                    resp.reason_phrase()
                        .map(str::to_string)
                        .unwrap_or_else(|| resp.status_code.text().to_string()),
                )),
                Ok(Ok((_, None))) => Some((408, "Request Timeout".to_string())),
                Ok(Err(e)) => Some((500, format!("INVITE failed: {e}"))),
                Err(_) => Some((500, "INVITE task ended".to_string())),
                _ => None,
            };
            if let Some((code, reason)) = failure {
                let by = if local_end.load(Ordering::SeqCst) {
                    EndedBy::Local
                } else {
                    EndedBy::Remote
                };
                me.end(id, code, reason, by);
            }
        });
        Ok(id)
    }

    /// A new INVITE from the dispatcher.
    pub(crate) fn incoming(&self, mut tx: Transaction) {
        let req = tx.original.clone();
        let transport = tx.connection.as_ref().map(|c| c.transport());
        let mut info = describe_invite(
            &req,
            matches!(transport, Some(Transport::Tcp | Transport::Tls)),
        );
        info.replaces = self.match_replaces(&req);
        // Over TLS our Contact is the connection's local end (we have no listener);
        // over UDP the public address (publicAddr or STUN) when there is one.
        let contact = match (&tx.connection, transport) {
            (Some(conn), Some(Transport::Tls)) => {
                Calls::tls_contact(&info.to_user, conn.get_addr(), None)
            }
            _ => {
                let public = if info.tcp {
                    None
                } else {
                    self.incoming_public.lock().ok().and_then(|p| p.clone())
                };
                self.contact(&info.to_user, info.tcp, public.as_deref())
            }
        };
        let (state_tx, state_rx) = self.layer.new_dialog_state_channel();
        let dialog =
            match self
                .layer
                .get_or_create_server_invite(&tx, state_tx, None, Some(contact))
            {
                Ok(d) => d,
                Err(e) => {
                    warn!("cannot take incoming INVITE: {e}");
                    tokio::spawn(async move {
                        let _ = tx.reply(StatusCode::ServerInternalError).await;
                    });
                    return;
                }
            };
        let server = ServerInvite {
            request: req.clone(),
            respond: tx.tu_sender.clone(),
            endpoint: tx.endpoint_inner.clone(),
        };
        let id = self.allocate();
        if let Ok(mut legs) = self.legs.lock() {
            legs.insert(
                id,
                Leg {
                    dialog: dialog.clone(),
                    destination: None,
                    server: Some(server),
                    local_end: Arc::new(AtomicBool::new(false)),
                    confirmed: Arc::new(AtomicBool::new(false)),
                },
            );
        }
        tokio::spawn(self.clone().watch(id, state_rx, false));
        let mut driver = dialog;
        tokio::spawn(async move {
            if let Err(e) = driver.handle(&mut tx).await {
                debug!("incoming INVITE transaction: {e}");
            }
        });
        let _ = self.signals.send(CallSignal {
            call: id,
            kind: SignalKind::Incoming(Box::new(info)),
        });
    }

    /// What the `Replaces` headers of `req` name among our legs (`None`: it has
    /// none). More than one, or one that cannot be read, is malformed (RFC 3891 §3).
    fn match_replaces(&self, req: &Request) -> Option<crate::replaces::ReplacesMatch> {
        use crate::replaces::{parse_replaces, ReplacesMatch};
        let values: Vec<&str> = req
            .headers
            .iter()
            .filter_map(|h| match h {
                Header::Replaces(r) => Some(r.value()),
                Header::Other(n, v) if n.eq_ignore_ascii_case("Replaces") => Some(v.as_str()),
                _ => None,
            })
            .collect();
        let value = match values.as_slice() {
            [] => return None,
            [one] => *one,
            _ => {
                return Some(ReplacesMatch::Malformed(
                    "more than one Replaces header".into(),
                ))
            }
        };
        let wanted = match parse_replaces(value) {
            Ok(v) => v,
            Err(e) => return Some(ReplacesMatch::Malformed(e)),
        };
        let legs = self.legs.lock().ok()?;
        let found = legs.iter().find(|(_, leg)| {
            let id = leg.dialog.id();
            id.call_id == wanted.call_id
                && id.local_tag == wanted.to_tag
                && id.remote_tag == wanted.from_tag
        });
        Some(match found {
            Some((&leg_id, leg)) => ReplacesMatch::Leg {
                leg: leg_id,
                confirmed: leg.confirmed.load(Ordering::SeqCst),
                we_initiated: leg.dialog.role()
                    == rsipstack::transaction::key::TransactionRole::Client,
                early_only: wanted.early_only,
            },
            None => ReplacesMatch::NoDialog,
        })
    }

    /// A request with a To-tag: hand it to its dialog, or 481.
    pub(crate) fn in_dialog(&self, mut tx: Transaction) {
        match self.layer.match_dialog(&tx) {
            Some(mut dialog) => {
                tokio::spawn(async move {
                    if let Err(e) = dialog.handle(&mut tx).await {
                        debug!("in-dialog {}: {e}", tx.original.method);
                    }
                });
            }
            None => {
                if tx.original.method == Method::Ack {
                    return;
                }
                tokio::spawn(async move {
                    let _ = tx.reply(StatusCode::CallTransactionDoesNotExist).await;
                });
            }
        }
    }

    /// Sends 180 Ringing on an incoming call.
    pub fn ringing(&self, id: LegId) -> Result<(), CallError> {
        self.leg(id)?
            .ringing(None, None)
            .map_err(|e| CallError::WrongState(format!("cannot ring: {e}")))
    }

    /// Answers an incoming call with 200 and our SDP (`Supported: timer` unless
    /// `session_timers` is off).
    pub fn answer(
        &self,
        id: LegId,
        sdp: String,
        extra: Vec<(String, String)>,
        session_timers: bool,
    ) -> Result<(), CallError> {
        let mut headers = vec![
            Header::ContentType("application/sdp".into()),
            Header::Allow(crate::stack::ALLOW.into()),
            Header::Supported(supported(session_timers).into()),
        ];
        headers.extend(extra.into_iter().map(|(n, v)| Header::Other(n, v)));
        self.leg(id)?
            .accept(Some(headers), Some(sdp.into_bytes()))
            .map_err(|e| CallError::WrongState(format!("cannot answer: {e}")))
    }

    /// Refuses an incoming call that has not been answered (486, 603, 488, 302 with
    /// a Contact and Diversion...). The call ends here with `code`.
    pub fn reject(
        &self,
        id: LegId,
        code: u16,
        headers: Vec<(String, String)>,
    ) -> Result<(), CallError> {
        let (dialog, server) = {
            let legs = self
                .legs
                .lock()
                .map_err(|_| CallError::Failed("lock".into()))?;
            let leg = legs.get(&id).ok_or(CallError::NoSuchLeg)?;
            if leg.confirmed.load(Ordering::SeqCst) {
                return Err(CallError::WrongState("the call is already answered".into()));
            }
            (leg.dialog.clone(), leg.server.clone())
        };
        let server = server.ok_or_else(|| CallError::WrongState("not an incoming call".into()))?;
        let status = StatusCode::from(code);
        let reason = status.text().to_string();
        let mut resp: Response = server.endpoint.make_response(&server.request, status, None);
        add_to_tag(&mut resp, &dialog.id().local_tag);
        for (name, value) in headers {
            resp.headers.push(Header::Other(name, value));
        }
        server
            .respond
            .send(TransactionEvent::Respond(resp))
            .map_err(|_| CallError::WrongState("the call has already ended".into()))?;
        self.mark_local_end(id);
        self.end(id, code, reason, EndedBy::Local);
        Ok(())
    }

    /// Ends a call whatever its state: CANCEL while ours is unanswered, reject while
    /// theirs rings, BYE once confirmed. Returns when the request was answered.
    pub async fn hangup(&self, id: LegId) -> Result<(), CallError> {
        let dialog = self.leg(id)?;
        self.mark_local_end(id);
        let (destination, confirmed) = self
            .legs
            .lock()
            .ok()
            .and_then(|l| {
                l.get(&id)
                    .map(|l| (l.destination.clone(), l.confirmed.load(Ordering::SeqCst)))
            })
            .unwrap_or((None, false));
        if let (Some(destination), false) = (destination, confirmed) {
            if dialog.role() == rsipstack::transaction::key::TransactionRole::Client {
                return self.cancel_via(&dialog, destination).await;
            }
        }
        let result = dialog.hangup().await;
        if let Err(e) = result {
            debug!("hangup of leg {id}: {e}");
        }
        // If the stack did not report an end (e.g. CANCEL of a call that then got
        // 200 and was BYE'd), make sure the engine hears of it.
        let confirmed = self
            .legs
            .lock()
            .ok()
            .and_then(|l| l.get(&id).map(|l| l.confirmed.load(Ordering::SeqCst)))
            .unwrap_or(false);
        if confirmed {
            self.end(id, 200, "Normal Clearing".into(), EndedBy::Local);
        }
        Ok(())
    }

    /// CANCELs our unanswered INVITE through the proxy it went to (RFC 3261 §9.1:
    /// same Request-URI, Call-ID, From, To, CSeq number, top Via and Route).
    async fn cancel_via(
        &self,
        dialog: &InviteDialog,
        destination: SipAddr,
    ) -> Result<(), CallError> {
        let invite = dialog.initial_request();
        let mut cancel = invite.clone();
        cancel.method = Method::Cancel;
        cancel.body = Vec::new();
        let mut top_via_seen = false;
        cancel.headers.retain(|h| match h {
            Header::Via(_) => !std::mem::replace(&mut top_via_seen, true),
            Header::From(_)
            | Header::To(_)
            | Header::CallId(_)
            | Header::Route(_)
            | Header::MaxForwards(_)
            | Header::UserAgent(_) => true,
            _ => false,
        });
        if let Ok(cseq) = invite.cseq_header().and_then(|c| c.seq()) {
            cancel.headers.push(Header::CSeq(
                rsipstack::sip::typed::CSeq {
                    seq: cseq,
                    method: Method::Cancel,
                }
                .into(),
            ));
        }
        let inner = self.layer.endpoint.clone();
        let result = crate::request::send_and_wait(
            inner,
            cancel,
            None,
            destination,
            std::time::Duration::from_secs(10),
        )
        .await;
        match result {
            Ok(resp) if resp.status_code.code() < 300 => Ok(()),
            Ok(resp) => Err(CallError::Failed(format!(
                "CANCEL answered {}",
                resp.status_code.code()
            ))),
            Err(e) => Err(CallError::Failed(format!("CANCEL not answered: {e:?}"))),
        }
    }

    /// Sends a re-INVITE with `sdp` and `extra` headers (a session refresh's
    /// Session-Expires); returns the answer's code, SDP and session-timer terms.
    pub async fn reinvite(
        &self,
        id: LegId,
        sdp: String,
        extra: Vec<(String, String)>,
    ) -> Result<(u16, Option<String>, SessionTimerAsk), CallError> {
        let dialog = self.leg(id)?;
        let mut headers = vec![Header::ContentType("application/sdp".into())];
        headers.extend(extra.into_iter().map(|(n, v)| Header::Other(n, v)));
        match dialog.reinvite(Some(headers), Some(sdp.into_bytes())).await {
            Ok(Some(resp)) => {
                let body = (!resp.body.is_empty())
                    .then(|| String::from_utf8_lossy(&resp.body).into_owned());
                Ok((
                    resp.status_code.code(),
                    body,
                    session_timer_of(&resp.headers),
                ))
            }
            Ok(None) => Err(CallError::WrongState("the call is not confirmed".into())),
            Err(e) => Err(CallError::Failed(format!("re-INVITE failed: {e}"))),
        }
    }

    /// Sends an INFO with `body` of `content_type` (DTMF relay); returns the code.
    pub async fn info(
        &self,
        id: LegId,
        content_type: &str,
        body: String,
    ) -> Result<u16, CallError> {
        let dialog = self.leg(id)?;
        let headers = vec![Header::ContentType(content_type.into())];
        match dialog.info(Some(headers), Some(body.into_bytes())).await {
            Ok(Some(resp)) => Ok(resp.status_code.code()),
            Ok(None) => Err(CallError::WrongState("the call is not confirmed".into())),
            Err(e) => Err(CallError::Failed(format!("INFO failed: {e}"))),
        }
    }

    /// Sends REFER to `target`; returns the code of the answer (202 expected).
    pub async fn refer(&self, id: LegId, target: &str) -> Result<u16, CallError> {
        let dialog = self.leg(id)?;
        let uri =
            Uri::try_from(target).map_err(|e| CallError::BadTarget(format!("{target}: {e}")))?;
        match dialog.refer(uri, None, None).await {
            Ok(Some(resp)) => Ok(resp.status_code.code()),
            Ok(None) => Err(CallError::WrongState("the call is not confirmed".into())),
            Err(e) => Err(CallError::Failed(format!("REFER failed: {e}"))),
        }
    }

    /// Sends REFER on leg `id` asking its remote to call the remote of leg
    /// `replacing` with `Replaces` naming that leg's dialog (attended transfer, RFC
    /// 5589 §7); returns the answer's code (202 expected) and the Refer-To sent.
    pub async fn refer_replacing(
        &self,
        id: LegId,
        replacing: LegId,
    ) -> Result<(u16, String), CallError> {
        let dialog = self.leg(id)?;
        let target = self.leg(replacing)?;
        let ids = target.id();
        if ids.remote_tag.is_empty() {
            return Err(CallError::WrongState(
                "the call to transfer to has no dialog yet".into(),
            ));
        }
        let remote = target.snapshot().remote_uri.to_string();
        let replaces =
            crate::replaces::format_replaces(&ids.call_id, &ids.local_tag, &ids.remote_tag);
        let refer_to = crate::replaces::refer_to_replacing(&remote, &replaces);
        let header = rsipstack::sip::ReferTo::new(refer_to.clone());
        match dialog.refer(header, None, None).await {
            Ok(Some(resp)) => Ok((resp.status_code.code(), refer_to)),
            Ok(None) => Err(CallError::WrongState("the call is not confirmed".into())),
            Err(e) => Err(CallError::Failed(format!("REFER failed: {e}"))),
        }
    }

    /// Tells the transferor how our call to the REFER target goes (RFC 3515 NOTIFY).
    pub async fn notify_refer(&self, id: LegId, code: u16, reason: &str, done: bool) {
        let Ok(dialog) = self.leg(id) else { return };
        let headers = vec![
            Header::Event("refer".into()),
            Header::SubscriptionState(
                if done {
                    "terminated;reason=noresource"
                } else {
                    "active;expires=60"
                }
                .into(),
            ),
            Header::ContentType("message/sipfrag;version=2.0".into()),
        ];
        let body = format!("SIP/2.0 {code} {reason}\r\n").into_bytes();
        if let Err(e) = dialog.notify(Some(headers), Some(body)).await {
            debug!("NOTIFY for REFER on leg {id}: {e}");
        }
    }

    /// Reports the end of a leg once, and forgets it.
    fn end(&self, id: LegId, code: u16, reason: String, by: EndedBy) {
        let leg = self.legs.lock().ok().and_then(|mut l| l.remove(&id));
        if let Some(leg) = leg {
            self.layer.remove_dialog(&leg.dialog.id());
            let cancel_reason = self.cancel_reasons.take(&leg.dialog.id().call_id);
            let elsewhere = code == 487
                && by == EndedBy::Remote
                && cancel_reason.as_deref().is_some_and(completed_elsewhere);
            let reason = if elsewhere {
                "Call completed elsewhere".to_string()
            } else {
                reason
            };
            let _ = self.signals.send(CallSignal {
                call: id,
                kind: SignalKind::Ended {
                    code,
                    reason,
                    by,
                    elsewhere,
                },
            });
        }
    }

    /// Turns one leg's dialog states into signals until it ends.
    async fn watch(self, id: LegId, mut states: DialogStateReceiver, outgoing: bool) {
        let (local_end, confirmed) = match self.legs.lock().ok().and_then(|l| {
            l.get(&id)
                .map(|leg| (leg.local_end.clone(), leg.confirmed.clone()))
        }) {
            Some(x) => x,
            None => return,
        };
        let send = |kind| {
            let _ = self.signals.send(CallSignal { call: id, kind });
        };
        while let Some(state) = states.recv().await {
            match state {
                DialogState::Early(_, resp) if outgoing => {
                    let code = resp.status_code.code();
                    let sdp = body_text(&resp.body);
                    if sdp.is_some() {
                        send(SignalKind::Early { code, sdp });
                    } else {
                        send(SignalKind::Ringing { code });
                    }
                }
                // Sent again after every in-dialog request: only the first counts.
                DialogState::Confirmed(_, resp) if !confirmed.swap(true, Ordering::SeqCst) => {
                    if outgoing {
                        send(SignalKind::Answered {
                            sdp: body_text(&resp.body),
                            session_timer: session_timer_of(&resp.headers),
                        });
                    }
                    send(SignalKind::Confirmed);
                }
                DialogState::Updated(_, req, handle) => {
                    send(SignalKind::Reoffer {
                        sdp: body_text(&req.body),
                        update: req.method == Method::Update,
                        session_timer: session_timer_of(&req.headers),
                        reply: Responder(handle),
                    });
                }
                DialogState::Refer(_, req, handle) => {
                    let target = req
                        .refer_to_header()
                        .map(|h| strip_angle(h.value()))
                        .unwrap_or_default();
                    send(SignalKind::Refer {
                        target,
                        reply: Responder(handle),
                    });
                }
                DialogState::Notify(_, req, handle) => {
                    let _ = handle.reply(StatusCode::OK).await;
                    if let Some((code, reason)) = sipfrag_status(&req.body) {
                        let done = req.headers.iter().any(|h| {
                            matches!(h, Header::SubscriptionState(s) if s.value().trim_start().starts_with("terminated"))
                        }) || code >= 200;
                        send(SignalKind::ReferProgress { code, reason, done });
                    }
                }
                DialogState::Info(_, req, handle) => {
                    let _ = handle.reply(StatusCode::OK).await;
                    let content_type = content_type(&req).unwrap_or_default();
                    send(SignalKind::Info {
                        content_type,
                        body: String::from_utf8_lossy(&req.body).into_owned(),
                    });
                }
                DialogState::Options(_, _, handle) => {
                    let _ = handle.reply(StatusCode::OK).await;
                }
                DialogState::Message(_, req, handle) => {
                    if req.body.len() > crate::message::MAX_TEXT {
                        let _ = handle.reply(StatusCode::RequestEntityTooLarge).await;
                        continue;
                    }
                    let (display_name, from) = req
                        .from_header()
                        .map(|f| split_name_addr(f.value()))
                        .unwrap_or_default();
                    let (_, to) = req
                        .to_header()
                        .map(|t| split_name_addr(t.value()))
                        .unwrap_or_default();
                    send(SignalKind::Message {
                        from,
                        display_name,
                        to,
                        content_type: content_type(&req).unwrap_or_else(|| "text/plain".into()),
                        text: String::from_utf8_lossy(&req.body).into_owned(),
                        reply: Responder(handle),
                    });
                }
                DialogState::Publish(_, _, handle) => {
                    let _ = handle.reply(StatusCode::NotImplemented).await;
                }
                DialogState::Terminated(_, reason) => {
                    let (code, text) = termination(&reason);
                    let by = if local_end.load(Ordering::SeqCst) {
                        EndedBy::Local
                    } else {
                        EndedBy::Remote
                    };
                    self.end(id, code, text, by);
                    return;
                }
                _ => {}
            }
        }
    }
}

/// How many CANCEL reasons are kept for calls that have not ended yet (a CANCEL
/// for no call of ours is forgotten once this many came after it).
const CANCEL_REASONS_KEPT: usize = 64;

/// The stack answers a CANCEL inside the INVITE's transaction and reports only
/// "cancelled": the stack's inspector puts each CANCEL's Reason header (RFC 3326)
/// here by Call-ID, and the call takes it when it ends. Shared, bounded.
#[derive(Clone, Default)]
pub(crate) struct CancelReasons(Arc<Mutex<VecDeque<(String, String)>>>);

impl CancelReasons {
    /// Notes the Reason of a CANCEL received (nothing when it has none).
    pub(crate) fn record(&self, req: &Request) {
        if req.method != Method::Cancel {
            return;
        }
        let reason = req.headers.iter().find_map(|h| match h {
            Header::Reason(r) => Some(r.value().to_string()),
            _ => None,
        });
        let (Some(reason), Ok(call_id)) = (reason, req.call_id_header()) else {
            return;
        };
        if let Ok(mut kept) = self.0.lock() {
            if kept.len() >= CANCEL_REASONS_KEPT {
                kept.pop_front();
            }
            kept.push_back((call_id.value().to_string(), reason));
        }
    }

    /// The Reason of the CANCEL received for `call_id`, forgotten here.
    fn take(&self, call_id: &str) -> Option<String> {
        let mut kept = self.0.lock().ok()?;
        let at = kept.iter().rposition(|(id, _)| id == call_id)?;
        kept.remove(at).map(|(_, reason)| reason)
    }
}

/// `SIP;cause=200;text="Call completed elsewhere"` (RFC 3326; one of several
/// comma-separated reasons).
fn completed_elsewhere(reason: &str) -> bool {
    reason.split(',').any(|r| {
        let mut parts = r.split(';').map(str::trim);
        parts.next().is_some_and(|p| p.eq_ignore_ascii_case("SIP"))
            && parts.any(|p| {
                p.split_once('=').is_some_and(|(k, v)| {
                    k.trim().eq_ignore_ascii_case("cause") && v.trim().trim_matches('"') == "200"
                })
            })
    })
}

/// Our `Supported` value.
fn supported(session_timers: bool) -> &'static str {
    if session_timers {
        "replaces, timer"
    } else {
        "replaces"
    }
}

fn add_to_tag(resp: &mut Response, tag: &str) {
    for header in resp.headers.iter_mut() {
        if let Header::To(to) = header {
            if let Ok(mut typed) = to.typed() {
                if !typed.params.iter().any(|p| matches!(p, Param::Tag(_))) {
                    typed.params.push(Param::Tag(tag.to_string().into()));
                }
                *header = Header::To(typed.into());
            }
        }
    }
}

/// A request's Content-Type, if it has one.
pub(crate) fn content_type(req: &Request) -> Option<String> {
    req.headers.iter().find_map(|h| match h {
        Header::ContentType(c) => Some(c.value().to_string()),
        _ => None,
    })
}

fn body_text(body: &[u8]) -> Option<String> {
    (!body.is_empty()).then(|| String::from_utf8_lossy(body).into_owned())
}

pub(crate) fn strip_angle(v: &str) -> String {
    let v = v.trim();
    match (v.find('<'), v.find('>')) {
        (Some(a), Some(b)) if b > a => v[a + 1..b].to_string(),
        _ => v.to_string(),
    }
}

/// `SIP/2.0 200 OK` in a message/sipfrag body.
fn sipfrag_status(body: &[u8]) -> Option<(u16, String)> {
    let text = std::str::from_utf8(body).ok()?;
    let line = text.lines().next()?.trim();
    let rest = line.strip_prefix("SIP/2.0 ")?;
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    Some((code.parse().ok()?, reason.trim().to_string()))
}

fn termination(reason: &TerminatedReason) -> (u16, String) {
    let coded = |c: &StatusCode| (c.code(), c.text().to_string());
    match reason {
        TerminatedReason::Timeout => (408, "Request Timeout".into()),
        TerminatedReason::UacCancel => (487, "Request Terminated".into()),
        TerminatedReason::UacBye | TerminatedReason::UasBye => (200, "Normal Clearing".into()),
        TerminatedReason::UacBusy | TerminatedReason::UasBusy => (486, "Busy Here".into()),
        TerminatedReason::UasDecline => (603, "Decline".into()),
        TerminatedReason::ProxyAuthRequired => (407, "Proxy Authentication Required".into()),
        TerminatedReason::ProxyError(c)
        | TerminatedReason::UacOther(c)
        | TerminatedReason::UasOther(c) => coded(c),
    }
}

/// Reads the caller, the called user and the headers the engine's policy needs.
fn describe_invite(req: &Request, tcp: bool) -> IncomingInvite {
    let header_value = |name: &str| {
        req.headers.iter().find_map(|h| match h {
            Header::Other(n, v) if n.eq_ignore_ascii_case(name) => Some(v.clone()),
            _ => None,
        })
    };
    let from = req
        .from_header()
        .map(|f| f.value().to_string())
        .unwrap_or_default();
    let pai = req
        .headers
        .iter()
        .find_map(|h| match h {
            Header::PAssertedIdentity(p) => Some(p.value().to_string()),
            _ => None,
        })
        .or_else(|| header_value("P-Asserted-Identity"));
    let identity = pai.clone().unwrap_or_else(|| from.clone());
    let (display_name, uri) = split_name_addr(&identity);
    let (from_display, _) = split_name_addr(&from);
    let (user, domain) = user_and_domain(&uri);
    let diversion = req.headers.iter().find_map(|h| match h {
        Header::Diversion(d) => Some(d.value().to_string()),
        _ => None,
    });
    let call_info = req.headers.iter().find_map(|h| match h {
        Header::CallInfo(c) => Some(c.value().to_string()),
        _ => None,
    });
    let session_timer = session_timer_of(&req.headers);
    let x_autoanswer = header_value("X-AUTOANSWER");
    let (to_user, to_domain) = (
        req.uri
            .auth
            .as_ref()
            .map(|a| {
                a.user
                    .split([';', '?'])
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
            .unwrap_or_default(),
        req.uri.host_with_port.host.to_string(),
    );
    IncomingInvite {
        remote: uri,
        remote_user: user,
        remote_domain: domain,
        display_name: display_name.or(from_display),
        to_user,
        to_domain,
        diversion,
        x_autoanswer,
        call_info,
        session_timer,
        sdp: body_text(&req.body),
        tcp,
        replaces: None,
    }
}

/// `"Name" <sip:u@d>;tag=x` → (Some("Name"), "sip:u@d"). Quotes and escapes are
/// removed from the name; nothing in it is interpreted.
pub(crate) fn split_name_addr(value: &str) -> (Option<String>, String) {
    let v = value.trim();
    if let (Some(a), Some(b)) = (v.rfind('<'), v.rfind('>')) {
        if b > a {
            let name = v[..a].trim();
            let name = name
                .strip_prefix('"')
                .and_then(|n| n.strip_suffix('"'))
                .map(|n| n.replace("\\\"", "\"").replace("\\\\", "\\"))
                .unwrap_or_else(|| name.to_string());
            let name = (!name.is_empty()).then_some(name);
            return (name, v[a + 1..b].to_string());
        }
    }
    let uri = v.split(';').next().unwrap_or(v).trim().to_string();
    (None, uri)
}

/// `sip:user@domain:port;params` → ("user", "domain"). The user is the number
/// without its RFC 3966 parameters (`sip:+4930123;phone-context=example.com@pbx`
/// → "+4930123", `sip:1001;isub=12@pbx` → "1001"): the user part may hold `;`
/// and `?`, and an unescaped `@` can only end it (RFC 3261 §25.1). A `tel:` URI's
/// number is its user.
pub fn user_and_domain(uri: &str) -> (String, String) {
    let uri = uri.trim();
    let (scheme, rest) = match uri.split_once(':') {
        Some((scheme, rest))
            if scheme.eq_ignore_ascii_case("sip")
                || scheme.eq_ignore_ascii_case("sips")
                || scheme.eq_ignore_ascii_case("tel") =>
        {
            (Some(scheme), rest)
        }
        _ => (None, uri),
    };
    let rest = rest.split('>').next().unwrap_or(rest);
    let number = |user: &str| {
        let user = user.split(':').next().unwrap_or(user); // no password
        let user = user.split([';', '?']).next().unwrap_or(user);
        // Our SIP reader hands the stack `;` and `?` in a user part escaped.
        let lower = user.to_ascii_lowercase();
        let end = [lower.find("%3b"), lower.find("%3f")]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(user.len());
        user[..end].to_string()
    };
    if scheme.is_some_and(|s| s.eq_ignore_ascii_case("tel")) {
        return (number(rest), String::new());
    }
    let (user, host) = match rest.find('@') {
        Some(at) => (number(&rest[..at]), &rest[at + 1..]),
        None => (String::new(), rest),
    };
    let host = host.split([';', '?']).next().unwrap_or(host);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => host.split(':').next().unwrap_or(host),
    };
    (user, host.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_addr_forms() {
        assert_eq!(
            split_name_addr(r#""Alice \"A\"" <sip:1001@127.0.0.1:5060>;tag=x"#),
            (Some("Alice \"A\"".into()), "sip:1001@127.0.0.1:5060".into())
        );
        assert_eq!(
            split_name_addr("sip:1002@h;tag=1"),
            (None, "sip:1002@h".into())
        );
        let hostile = "\"; rm -rf ~ $(id)\" <sip:evil@127.0.0.1>";
        assert_eq!(
            split_name_addr(hostile).0.as_deref(),
            Some("; rm -rf ~ $(id)")
        );
    }

    fn cancel(call_id: &str, reason: Option<&str>) -> Request {
        let reason = reason
            .map(|r| format!("Reason: {r}\r\n"))
            .unwrap_or_default();
        let text = format!(
            "CANCEL sip:1001@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
             From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:1001@127.0.0.1>\r\nCall-ID: {call_id}\r\n\
             CSeq: 1 CANCEL\r\n{reason}Content-Length: 0\r\n\r\n"
        );
        Request::try_from(text.as_str()).expect("test CANCEL parses")
    }

    #[test]
    fn cancel_reasons_are_taken_once_by_call_id_and_bounded() {
        let kept = CancelReasons::default();
        kept.record(&cancel("a@h", Some("SIP;cause=200")));
        kept.record(&cancel("b@h", None));
        assert_eq!(kept.take("b@h"), None);
        assert_eq!(kept.take("a@h").as_deref(), Some("SIP;cause=200"));
        assert_eq!(kept.take("a@h"), None);
        for i in 0..CANCEL_REASONS_KEPT + 1 {
            kept.record(&cancel(&format!("{i}@h"), Some("SIP;cause=200")));
        }
        assert_eq!(kept.take("0@h"), None, "the oldest is forgotten");
        assert!(kept.take(&format!("{CANCEL_REASONS_KEPT}@h")).is_some());
    }

    #[test]
    fn cancel_reason_answered_elsewhere() {
        assert!(completed_elsewhere(
            r#"SIP;cause=200;text="Call completed elsewhere""#
        ));
        assert!(completed_elsewhere(
            r#"Q.850;cause=16, sip ; cause = "200""#
        ));
        assert!(!completed_elsewhere("SIP;cause=487"));
        assert!(!completed_elsewhere("Q.850;cause=200"));
        assert!(!completed_elsewhere(""));
    }

    #[test]
    fn user_domain() {
        assert_eq!(
            user_and_domain("sip:1001@127.0.0.1:5070;transport=tcp"),
            ("1001".into(), "127.0.0.1".into())
        );
        assert_eq!(
            user_and_domain("sip:pbx.example"),
            (String::new(), "pbx.example".into())
        );
        // RFC 3966 parameters in the user part (a trunk's caller).
        assert_eq!(
            user_and_domain("sip:+4930123;phone-context=example.com@pbx.example;user=phone"),
            ("+4930123".into(), "pbx.example".into())
        );
        assert_eq!(
            user_and_domain("sip:1001;isub=12@192.0.2.1:5060"),
            ("1001".into(), "192.0.2.1".into())
        );
        assert_eq!(
            user_and_domain("sip:1001%3Bisub=12@192.0.2.1:5060"),
            ("1001".into(), "192.0.2.1".into())
        );
        assert_eq!(
            user_and_domain("sips:alice:secret@[2001:db8::1]:5061>"),
            ("alice".into(), "2001:db8::1".into())
        );
        assert_eq!(
            user_and_domain("tel:+4930123;phone-context=example.com"),
            ("+4930123".into(), String::new())
        );
    }

    #[test]
    fn session_expires_values() {
        assert_eq!(
            parse_session_expires("1800;refresher=uas"),
            Some(SessionExpires {
                seconds: 1800,
                refresher: Some(Refresher::Uas)
            })
        );
        assert_eq!(
            parse_session_expires(" 90 ; Refresher = UAC ;x=1"),
            Some(SessionExpires {
                seconds: 90,
                refresher: Some(Refresher::Uac)
            })
        );
        assert_eq!(
            parse_session_expires("600;refresher=both"),
            Some(SessionExpires {
                seconds: 600,
                refresher: None
            })
        );
        assert_eq!(parse_session_expires("soon"), None);
        assert_eq!(parse_session_expires("-5"), None);
        assert!(lists_timer("replaces, Timer"));
        assert!(!lists_timer("timers, 100rel"));
    }

    #[test]
    fn sipfrag() {
        assert_eq!(
            sipfrag_status(b"SIP/2.0 200 OK\r\n"),
            Some((200, "OK".into()))
        );
        assert_eq!(
            sipfrag_status(b"SIP/2.0 100 Trying"),
            Some((100, "Trying".into()))
        );
        assert_eq!(sipfrag_status(b"garbage"), None);
    }
}
