//! Presence and message waiting: which subscriptions the phone keeps and the events
//! they produce. Once the active account is registered it subscribes to the presence
//! of every contact marked `presence="1"`; every registered account with a
//! `voicemailNumber` subscribes to its own mailbox (message-summary, Request-URI and
//! To = the account's AoR); every registered account with `publish=1` publishes
//! `open`. NOTIFYs become `presence` and `mwi` events (the last mailbox state also
//! shows in `status` and snapshots, the last presence in `contacts list`);
//! un-registering or exiting unsubscribes and removes the published state.

use std::collections::{BTreeMap, HashMap};

use microsip_sip::{
    Package, Publication, PublishConfig, Subscription, SubscriptionConfig, SubscriptionEvent,
};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::dialplan;
use crate::engine::{Engine, Request};
use crate::event::{EventKind, MwiView};

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
    handle: Subscription,
}

/// The engine's presence state.
pub(crate) struct PresenceState {
    watches: BTreeMap<u64, Watch>,
    publications: BTreeMap<u32, Publication>,
    next_id: u64,
    /// Last known status per contact URI.
    statuses: HashMap<String, &'static str>,
    /// Last known mailbox state per account.
    mailboxes: HashMap<u32, MwiView>,
    events: mpsc::UnboundedSender<SubscriptionEvent>,
}

impl PresenceState {
    /// Subscription reports reach the engine as [`Request::Presence`] on `inbox`.
    pub(crate) fn new(inbox: mpsc::UnboundedSender<Request>) -> PresenceState {
        let (events, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                if inbox.send(Request::Presence(event)).is_err() {
                    break;
                }
            }
        });
        PresenceState {
            watches: BTreeMap::new(),
            publications: BTreeMap::new(),
            next_id: 1,
            statuses: HashMap::new(),
            mailboxes: HashMap::new(),
            events,
        }
    }

    /// The mailbox state of `account`, once a message summary came.
    pub(crate) fn mwi(&self, account: u32) -> Option<MwiView> {
        self.mailboxes.get(&account).copied()
    }

    /// Stops everything; the handles finish when each unsubscribe is done.
    pub(crate) fn stop_all(&mut self) -> Vec<JoinHandle<()>> {
        let mut jobs = Vec::new();
        for (_, w) in std::mem::take(&mut self.watches) {
            jobs.push(tokio::spawn(async move { w.handle.stop().await }));
        }
        for (_, p) in std::mem::take(&mut self.publications) {
            jobs.push(tokio::spawn(async move { p.stop().await }));
        }
        jobs
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

impl Engine {
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
            match self.records.contacts() {
                Ok(contacts) => {
                    for n in presence_numbers(&contacts) {
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
                Err(e) => warn!("contacts cannot be read for presence: {e}"),
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
                tokio::spawn(async move { w.handle.stop().await });
            }
        }
        // Start what is missing.
        let caller = self.caller_account(&account);
        let subscriber = self.sip.subscriber();
        for (package, target, shown) in wanted {
            let running = self
                .presence
                .watches
                .values()
                .any(|w| w.account == number && w.package == package && w.target == target);
            if running {
                continue;
            }
            let id = self.presence.next_id;
            self.presence.next_id += 1;
            info!(
                "account {number}: subscribing to {} of {target}",
                package.event()
            );
            let handle = Subscription::start(
                &subscriber,
                SubscriptionConfig {
                    id,
                    account: number,
                    caller: caller.clone(),
                    target: target.clone(),
                    package,
                    expires: match package {
                        Package::Presence => PRESENCE_EXPIRES,
                        Package::MessageSummary => MWI_EXPIRES,
                    },
                },
                self.presence.events.clone(),
            );
            self.presence.watches.insert(
                id,
                Watch {
                    account: number,
                    number: shown,
                    target,
                    package,
                    handle,
                },
            );
        }
        // Our own presence.
        let publishing = self.presence.publications.contains_key(&number);
        if registered && account.publish && !publishing {
            let id = self.presence.next_id;
            self.presence.next_id += 1;
            info!("account {number}: publishing presence");
            let p = Publication::start(
                &subscriber,
                PublishConfig {
                    id,
                    account: number,
                    caller,
                    expires: PUBLISH_EXPIRES,
                    note: None,
                },
                self.presence.events.clone(),
            );
            self.presence.publications.insert(number, p);
        } else if !registered && publishing {
            if let Some(p) = self.presence.publications.remove(&number) {
                tokio::spawn(async move { p.stop().await });
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
