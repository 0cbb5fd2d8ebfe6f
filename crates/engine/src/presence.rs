//! Presence and message waiting: which subscriptions the phone keeps and the events
//! they produce. Once the active account is registered it subscribes to the presence
//! of every contact marked `presence="1"`; every registered account with a
//! `voicemailNumber` subscribes to its own mailbox (message-summary, Request-URI and
//! To = the account's AoR); every registered account with `publish=1` publishes
//! `open`. NOTIFYs become `presence` and `mwi` events (the last mailbox state also
//! shows in `status` and snapshots, the last presence in `contacts list`);
//! un-registering or exiting unsubscribes and removes the published state.

use std::collections::{BTreeMap, HashMap};

use microsip_sip::{Package, SubscriptionEvent};
use serde_json::Value;
use tracing::{debug, info, warn};

use crate::core::Core;
use crate::dialplan;
use crate::event::{EventKind, MwiView};
use crate::io::SipAction;

/// Requested subscription and publication lifetimes, seconds.
const PRESENCE_EXPIRES: u32 = 600;
const MWI_EXPIRES: u32 = 3600;
const PUBLISH_EXPIRES: u32 = 600;

struct Watch {
    account: u32,
    /// The number as the address book has it (or the voicemail number).
    number: String,
    target: String,
    package: Package,
}

/// The engine's presence state (the driver keeps the subscriptions' tasks, by id).
#[derive(Default)]
pub(crate) struct PresenceState {
    watches: BTreeMap<u64, Watch>,
    /// Our publication per account, by id.
    publications: BTreeMap<u32, u64>,
    next_id: u64,
    /// Last known status per contact URI.
    statuses: HashMap<String, &'static str>,
    /// Last known mailbox state per account.
    mailboxes: HashMap<u32, MwiView>,
}

impl PresenceState {
    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The mailbox state of `account`, once a message summary came.
    pub(crate) fn mwi(&self, account: u32) -> Option<MwiView> {
        self.mailboxes.get(&account).copied()
    }

    /// Forgets every subscription and publication (the driver stops them all at
    /// exit).
    pub(crate) fn forget_all(&mut self) {
        self.watches.clear();
        self.publications.clear();
    }
}

/// The contacts that want presence: (number, presence on).
fn presence_numbers(contacts: &[Value]) -> Vec<String> {
    contacts
        .iter()
        .filter(|c| c["presence"].as_bool() == Some(true))
        .filter_map(|c| c["number"].as_str())
        .map(str::to_string)
        .collect()
}

impl Core {
    /// Brings the subscriptions of `account` in line with the settings and the
    /// address book (after registering, or a contact change).
    pub(crate) fn presence_sync(&mut self, number: u32) {
        let Some(account) = self.accounts.get(&number).map(|s| s.account.clone()) else {
            return;
        };
        let registered = self.is_registered(number);
        // (package, target, number as shown) wanted for this account.
        let mut wanted: Vec<(Package, String, String)> = Vec::new();
        if registered && number == self.active_account {
            for n in presence_numbers(&self.contacts) {
                match dialplan::normalize_target(&n, &account) {
                    Ok(t) => {
                        if !wanted.iter().any(|(_, u, _)| *u == t.uri) {
                            wanted.push((Package::Presence, t.uri, n));
                        }
                    }
                    Err(e) => warn!("contact {n}: no presence subscription: {e}"),
                }
            }
        }
        if let (true, Some(vm)) = (registered, account.voicemail_number.clone()) {
            let aor = format!(
                "sip:{}@{}",
                account.username.clone().unwrap_or_default(),
                account.domain
            );
            wanted.push((Package::MessageSummary, aor, vm));
        }
        // Stop what is no longer wanted.
        let stale: Vec<u64> = self
            .presence
            .watches
            .iter()
            .filter(|(_, w)| w.account == number)
            .filter(|(_, w)| {
                !wanted
                    .iter()
                    .any(|(p, t, _)| *p == w.package && *t == w.target)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some(w) = self.presence.watches.remove(&id) {
                debug!("{} subscription to {} stopped", w.package.event(), w.target);
                self.presence.statuses.remove(&w.target);
                if w.package == Package::MessageSummary {
                    self.presence.mailboxes.remove(&w.account);
                }
                self.sip(SipAction::Unsubscribe { id });
            }
        }
        // Start what is missing.
        let caller = self.caller_account(&account);
        for (package, target, shown) in wanted {
            let running = self
                .presence
                .watches
                .values()
                .any(|w| w.account == number && w.package == package && w.target == target);
            if running {
                continue;
            }
            let id = self.presence.new_id();
            info!(
                "account {number}: subscribing to {} of {target}",
                package.event()
            );
            self.sip(SipAction::Subscribe {
                id,
                account: number,
                caller: caller.clone(),
                target: target.clone(),
                package,
                expires: match package {
                    Package::Presence => PRESENCE_EXPIRES,
                    Package::MessageSummary => MWI_EXPIRES,
                },
            });
            self.presence.watches.insert(
                id,
                Watch {
                    account: number,
                    number: shown,
                    target,
                    package,
                },
            );
        }
        // Our own presence.
        let publishing = self.presence.publications.contains_key(&number);
        if registered && account.publish && !publishing {
            let id = self.presence.new_id();
            info!("account {number}: publishing presence");
            self.sip(SipAction::Publish {
                id,
                account: number,
                caller,
                expires: PUBLISH_EXPIRES,
            });
            self.presence.publications.insert(number, id);
        } else if !registered && publishing {
            if let Some(id) = self.presence.publications.remove(&number) {
                self.sip(SipAction::Unsubscribe { id });
            }
        }
    }

    /// A subscription or publication reported something.
    pub(crate) fn on_presence(&mut self, event: SubscriptionEvent) {
        match event {
            SubscriptionEvent::Presence {
                id,
                account,
                target,
                presence,
            } => {
                let Some(w) = self.presence.watches.get(&id) else {
                    return; // stopped meanwhile
                };
                let number = w.number.clone();
                let status = presence.status();
                self.presence.statuses.insert(target.clone(), status);
                self.publish(EventKind::Presence {
                    account,
                    contact: target,
                    number,
                    status,
                    basic: presence.basic,
                    activity: presence.activity,
                    note: presence.note,
                });
            }
            SubscriptionEvent::MessageSummary {
                id,
                account,
                summary,
                ..
            } => {
                let Some(w) = self.presence.watches.get(&id) else {
                    return;
                };
                let voicemail = w.number.clone();
                self.presence.mailboxes.insert(
                    account,
                    MwiView {
                        waiting: summary.waiting,
                        new: summary.new,
                        old: summary.old,
                    },
                );
                self.publish(EventKind::Mwi {
                    account,
                    waiting: summary.waiting,
                    new: summary.new,
                    old: summary.old,
                    voicemail,
                });
            }
            SubscriptionEvent::State {
                account,
                target,
                package,
                state,
                code,
                reason,
                ..
            } => {
                if state == "failed" {
                    warn!(
                        "account {account}: {} for {target} refused: {code} {reason}",
                        package.event()
                    );
                } else {
                    debug!(
                        "account {account}: {} for {target}: {state} ({code} {reason})",
                        package.event()
                    );
                }
            }
        }
    }

    /// The last known presence status of the contact with `number`, if subscribed.
    pub(crate) fn presence_of(&self, number: &str) -> Option<&'static str> {
        let w = self
            .presence
            .watches
            .values()
            .find(|w| w.package == Package::Presence && w.number == number)?;
        Some(
            self.presence
                .statuses
                .get(&w.target)
                .copied()
                .unwrap_or("unknown"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_presence_contacts_are_watched() {
        let contacts = vec![
            json!({"name": "A", "number": "2001", "presence": true}),
            json!({"name": "B", "number": "2002", "presence": false}),
            json!({"name": "C", "number": "2003"}),
        ];
        assert_eq!(presence_numbers(&contacts), vec!["2001".to_string()]);
    }
}
