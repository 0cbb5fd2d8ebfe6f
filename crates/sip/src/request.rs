//! One client transaction outside any dialog, with a bound on how long we wait for
//! its final answer. The transaction runs in its own task (the stack's receive is not
//! cancel-safe), so giving up here never corrupts it.

use std::sync::Arc;
use std::time::Duration;

use rsipstack::sip::{Request, Response, SipMessage};
use rsipstack::transaction::endpoint::EndpointInner;
use rsipstack::transaction::key::{TransactionKey, TransactionRole};
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transport::{SipAddr, SipConnection};
use tokio::sync::oneshot;

/// Why no final answer came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NoAnswer {
    /// The request could not be sent (code 503 for the caller).
    Unsent(String),
    /// Nothing final within the time (code 408 for the caller).
    Timeout,
}

/// Sends `req` on `connection` to `destination` and waits at most `limit` for a
/// final (≥ 200) response.
pub(crate) async fn send_and_wait(
    inner: Arc<EndpointInner>,
    req: Request,
    connection: Option<SipConnection>,
    destination: SipAddr,
    limit: Duration,
) -> Result<Response, NoAnswer> {
    let method = req.method;
    let key = TransactionKey::from_request(&req, TransactionRole::Client)
        .map_err(|e| NoAnswer::Unsent(e.to_string()))?;
    let mut tx = Transaction::new_client(key, req, inner, connection);
    tx.destination = Some(destination);
    let (done, answer) = oneshot::channel();
    tokio::spawn(async move {
        if let Err(e) = tx.send().await {
            let _ = done.send(Err(format!("cannot send {method}: {e}")));
            return;
        }
        while let Some(msg) = tx.receive().await {
            if let SipMessage::Response(resp) = msg {
                if resp.status_code.code() >= 200 {
                    let _ = done.send(Ok(resp));
                    return;
                }
            }
        }
        let _ = done.send(Err("no answer".into()));
    });
    match tokio::time::timeout(limit, answer).await {
        Ok(Ok(Ok(resp))) => Ok(resp),
        Ok(Ok(Err(e))) => Err(NoAnswer::Unsent(e)),
        Ok(Err(_)) | Err(_) => Err(NoAnswer::Timeout),
    }
}
