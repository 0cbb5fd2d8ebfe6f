//! SIP MESSAGE (RFC 3428) outside dialogs: sending text with digest auth (a proxy
//! answers 407), and handing received messages to the engine with a reply the
//! engine sends only once the text is safely stored.

use std::sync::Arc;
use std::time::Duration;

use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{CallId, Header, Method, Param, Request, StatusCode, Transport, Uri};
use rsipstack::transaction::endpoint::EndpointInner;
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transaction::{make_tag, random_text};
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::{SipAddr, SipConnection};
use tracing::debug;

use crate::call::{content_type, split_name_addr, CallerAccount};
use crate::digest::{answer, pick_challenge};
use crate::request::{send_and_wait, NoAnswer};
use crate::stack::SipStack;

/// How long we wait for the answer to a MESSAGE.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest text we send or accept (RFC 3428 §9: keep MESSAGE under 1300 bytes on
/// UDP is advice; we allow larger over TCP, bounded here).
pub(crate) const MAX_TEXT: usize = 64 * 1024;

/// A MESSAGE that arrived, and the answer we owe it.
pub struct IncomingMessage {
    /// The sender's URI.
    pub from: String,
    /// The sender's display name, when the From has one.
    pub display_name: Option<String>,
    /// Our URI it was sent to.
    pub to: String,
    /// The body's Content-Type (e.g. `text/plain`).
    pub content_type: String,
    /// The message text.
    pub text: String,
    reply: Transaction,
}

impl std::fmt::Debug for IncomingMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingMessage")
            .field("from", &self.from)
            .field("content_type", &self.content_type)
            .field("bytes", &self.text.len())
            .finish()
    }
}

impl IncomingMessage {
    /// Answers the MESSAGE (200 once stored; 405 when messaging is off; 500 when it
    /// could not be stored, so the sender retries).
    pub async fn respond(mut self, code: u16) {
        if let Err(e) = self.reply.reply(StatusCode::from(code)).await {
            debug!("answer to MESSAGE not sent: {e}");
        }
    }

    pub(crate) fn from_transaction(tx: Transaction) -> Result<IncomingMessage, Box<Transaction>> {
        let req = &tx.original;
        let from = req
            .from_header()
            .map(|f| f.value().to_string())
            .unwrap_or_default();
        let (display_name, from_uri) = split_name_addr(&from);
        let to = req
            .to_header()
            .map(|t| t.value().to_string())
            .unwrap_or_default();
        let (_, to_uri) = split_name_addr(&to);
        let content_type = content_type(req).unwrap_or_else(|| "text/plain".into());
        if req.body.len() > MAX_TEXT {
            return Err(Box::new(tx));
        }
        let text = String::from_utf8_lossy(&req.body).into_owned();
        Ok(IncomingMessage {
            from: from_uri,
            display_name,
            to: to_uri,
            content_type,
            text,
            reply: tx,
        })
    }
}

/// A cheap handle for sending MESSAGEs from any task.
#[derive(Clone)]
pub struct MessageSender {
    inner: Arc<EndpointInner>,
    udp: UdpConnection,
    tcp: bool,
}

impl MessageSender {
    /// How a request goes to `next` (the first hop): the destination with its
    /// transport, the connection to use (UDP: our listener; TCP: the stack finds or
    /// opens one) and our listener address for Via. TCP only when the account asks
    /// for it and the stack listens on TCP.
    pub(crate) fn hop(
        &self,
        account_tcp: bool,
        next: rsipstack::sip::HostWithPort,
    ) -> (SipAddr, Option<SipConnection>, Option<SipAddr>) {
        let tcp = account_tcp && self.tcp;
        let destination = SipAddr {
            r#type: Some(if tcp { Transport::Tcp } else { Transport::Udp }),
            addr: next,
        };
        let connection = if tcp {
            None // the stack looks up (or opens) a TCP connection to the destination
        } else {
            Some(SipConnection::Udp(self.udp.clone()))
        };
        let local = if tcp {
            self.inner
                .transport_layer
                .get_listen_addrs()
                .into_iter()
                .find(|a| a.r#type == Some(Transport::Tcp))
        } else {
            Some(self.udp.get_addr().clone())
        };
        (destination, connection, local)
    }

    pub(crate) fn inner(&self) -> Arc<EndpointInner> {
        self.inner.clone()
    }

    /// Whether the stack listens on TCP.
    pub(crate) fn tcp(&self) -> bool {
        self.tcp
    }
}

impl SipStack {
    /// A handle for sending MESSAGEs.
    pub fn message_sender(&self) -> MessageSender {
        MessageSender {
            inner: self.inner(),
            udp: self.udp.clone(),
            tcp: self.tcp_addr().is_some(),
        }
    }
}

/// Sends `text` as a MESSAGE from `account` to `target` (a `sip:` URI), answering a
/// 401/407 challenge once. Returns the final code and reason.
pub async fn send_message(
    sender: &MessageSender,
    account: &CallerAccount,
    target: &str,
    text: &str,
) -> Result<(u16, String), String> {
    if text.len() > MAX_TEXT {
        return Err(format!("the text is longer than {MAX_TEXT} bytes"));
    }
    let inner = sender.inner.clone();
    let uri = Uri::try_from(target).map_err(|e| format!("bad target {target}: {e}"))?;
    let aor_text = format!("sip:{}@{}", account.username, account.domain);
    let aor = Uri::try_from(aor_text.as_str()).map_err(|e| format!("bad account address: {e}"))?;
    let destination = match account.outbound.as_deref() {
        Some(o) => Uri::try_from(format!("sip:{o}").as_str())
            .map(|u| u.host_with_port)
            .map_err(|e| format!("bad server {o}: {e}"))?,
        None => uri.host_with_port.clone(),
    };
    let (destination, connection, local) = sender.hop(account.tcp, destination);
    let call_id = format!("{}@microsip-rs", random_text(20));
    let from_tag = make_tag().to_string();
    let mut challenge = None;
    let mut last = (408, "Request Timeout".to_string());
    for cseq in 1..=3u32 {
        let via = inner
            .get_via(local.clone(), None)
            .map_err(|e| format!("no local address: {e}"))?;
        let from = rsipstack::sip::typed::From {
            display_name: account.display_name.clone(),
            uri: aor.clone(),
            params: vec![Param::Tag(from_tag.clone().into())],
        };
        let to = rsipstack::sip::typed::To {
            display_name: None,
            uri: uri.clone(),
            params: vec![],
        };
        let mut req: Request = inner.make_request(
            Method::Message,
            uri.clone(),
            via,
            from,
            to,
            cseq,
            Some(CallId::new(call_id.clone())),
        );
        req.headers
            .push(Header::ContentType("text/plain;charset=UTF-8".into()));
        if let Some(c) = &challenge {
            let user = account
                .auth_id
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| account.username.clone());
            req.headers.push(answer(
                c,
                &Method::Message,
                &uri,
                &user,
                &account.password,
                &random_text(12),
                1,
            ));
        }
        req.body = text.as_bytes().to_vec();
        let resp = match send_and_wait(
            inner.clone(),
            req,
            connection.clone(),
            destination.clone(),
            MESSAGE_TIMEOUT,
        )
        .await
        {
            Ok(r) => r,
            Err(NoAnswer::Unsent(e)) => return Ok((503, e)),
            Err(NoAnswer::Timeout) => return Ok(last),
        };
        let code = resp.status_code.code();
        let reason = resp
            .reason_phrase()
            .map(str::to_string)
            .unwrap_or_else(|| resp.status_code.text().to_string());
        last = (code, reason);
        match code {
            401 | 407 if challenge.is_none() => match pick_challenge(&resp) {
                Some(c) => challenge = Some(c),
                None => return Ok(last),
            },
            _ => return Ok(last),
        }
    }
    Ok(last)
}
