//! `redial` and `callback`, as MicroSIP offers them: call again the number dialled
//! last, or call back the caller of the last missed call. Both go through `dial`
//! (the dial plan, the account, an active call held first). The core remembers
//! both while it runs; after a restart `redial` falls back to `[Settings]
//! lastCallNumber` and `callback` to the newest missed call of the history.

use serde_json::Value;

use crate::calls::{Call, CallDirection, DialRequest};
use crate::core::Core;
use crate::io::{ReplyTo, StoreAction};
use crate::reply::{fail, ErrorCode};
use crate::then::Then;

/// A number to call again, and the account it was called from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Remembered {
    /// What to dial (as typed for `redial`; the caller's number or URI for
    /// `callback`).
    pub(crate) target: String,
    /// The account it was dialled from or came in on (`None`: the active one).
    pub(crate) account: Option<u32>,
}

impl Core {
    /// A `dial` command is being carried out: `redial` calls this again.
    pub(crate) fn remember_dialled(&mut self, target: &str, account: Option<u32>) {
        if !target.trim().is_empty() {
            self.last_dialled = Some(Remembered {
                target: target.trim().to_string(),
                account,
            });
        }
    }

    /// A call ends: an incoming one nobody answered here is the one `callback`
    /// calls back.
    pub(crate) fn remember_if_missed(&mut self, call: &Call, elsewhere: bool) {
        if call.direction != CallDirection::Incoming
            || call.answered.is_some()
            || elsewhere
            || call.remote.is_empty()
        {
            return;
        }
        let account = self.accounts.get(&call.account).map(|s| &s.account);
        let (_, domain) = microsip_sip::call::user_and_domain(&call.remote);
        // A caller of our own domain is called back by number (the dial plan
        // applies); anyone else at the address they called from.
        let by_number = !call.number.is_empty()
            && account
                .is_some_and(|a| a.server.is_some() && a.domain.eq_ignore_ascii_case(&domain));
        let target = if by_number {
            call.number.clone()
        } else {
            call.remote.clone()
        };
        self.last_missed = Some(Remembered {
            target,
            account: Some(call.account),
        });
    }

    /// `redial`: dial the number dialled last (this run's, else `lastCallNumber`).
    pub(crate) fn redial(&mut self, reply: ReplyTo) {
        let last = self.last_dialled.clone().or_else(|| {
            self.config
                .settings
                .last_call_number
                .as_deref()
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(|n| Remembered {
                    target: n.to_string(),
                    account: None,
                })
        });
        match last {
            Some(r) => {
                self.remember_dialled(&r.target, r.account);
                self.dial(DialRequest::new(&r.target, r.account), Some(reply));
            }
            None => self.reply(
                Some(reply),
                fail(
                    ErrorCode::NoCall,
                    "nothing to redial: no number was dialled yet",
                ),
            ),
        }
    }

    /// `callback`: call the caller of the last missed call (this run's, else the
    /// newest missed call in the history).
    pub(crate) fn callback(&mut self, reply: ReplyTo) {
        match self.last_missed.clone() {
            Some(r) => self.call_back(r, reply),
            None => self.store_then(StoreAction::ListHistory, Some(Then::Callback { reply })),
        }
    }

    /// The history came for `callback`: its newest missed call.
    pub(crate) fn callback_from_history(
        &mut self,
        list: Result<Vec<Value>, String>,
        reply: ReplyTo,
    ) {
        let list = match list {
            Ok(list) => list,
            Err(e) => {
                return self.reply(
                    Some(reply),
                    fail(ErrorCode::Internal, format!("history cannot be read: {e}")),
                )
            }
        };
        let newest_missed = list
            .iter()
            .filter(|e| e["type"] == "missed")
            .filter_map(|e| {
                let number = e["number"].as_str()?.trim();
                (!number.is_empty()).then(|| (e["time"].as_i64().unwrap_or(0), number))
            })
            .max_by_key(|(time, _)| *time);
        match newest_missed {
            Some((_, number)) => {
                let r = Remembered {
                    target: number.to_string(),
                    account: None,
                };
                self.call_back(r, reply)
            }
            None => self.reply(
                Some(reply),
                fail(ErrorCode::NoCall, "nothing to call back: no missed call"),
            ),
        }
    }

    fn call_back(&mut self, r: Remembered, reply: ReplyTo) {
        self.remember_dialled(&r.target, r.account);
        self.dial(DialRequest::new(&r.target, r.account), Some(reply));
    }
}
