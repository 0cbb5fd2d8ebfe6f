//! What the core does when the network under the phone changes: the driver's
//! network watch saw the local address towards the registrar go away, come back
//! or change (and, for a new address, already started SIP again on it). The core
//! says so in `account.network`, registers every account again, and ends the
//! calls the old address carried, with a reason naming the change. Subscriptions
//! (presence, MWI) and our PUBLISH lived on the old endpoint: they are forgotten
//! and made again on the new one once the account is registered there.

use microsip_sip::EndedBy;
use tracing::info;

use crate::core::{registration_config, Core, RegState};
use crate::event::EventKind;
use crate::io::{LegSignal, NetworkChange, SipAction};

/// The SIP code a call ended by a change of address is reported with.
const ENDED_BY_NETWORK: u16 = 503;

impl Core {
    /// Takes one report of the network watch (see the module comment).
    pub(crate) fn on_network(&mut self, change: NetworkChange) {
        let previous = change.previous;
        let registering: Vec<u32> = self
            .accounts
            .values()
            .filter(|s| s.registers)
            .map(|s| s.account.number)
            .collect();
        let state = match (change.address, change.restarted) {
            (None, _) => "down",
            (Some(_), false) => "up",
            (Some(_), true) => "changed",
        };
        info!(
            "network {state}: local address {} (was {previous})",
            change
                .address
                .map_or_else(|| "none".to_string(), |a| a.to_string())
        );
        for &account in &registering {
            self.publish(EventKind::AccountNetwork {
                account,
                state: state.to_string(),
                address: change.address.map(|a| a.to_string()),
                previous: previous.to_string(),
            });
        }
        let Some(address) = change.address else {
            return;
        };
        if !change.restarted {
            // The same address is back: register again now rather than at the
            // next refresh (the registrar may have dropped us meanwhile).
            for account in registering {
                self.sip(SipAction::Register { account, on: true });
            }
            return;
        }
        self.bind_ip = address;
        self.media_ips = change.media_ips;
        self.other_family_ip = change.other_family_ip;
        self.media_bind = Some(address);
        // The driver dropped the subscriptions and publications with the old
        // endpoint; forgetting them here lets the next registration start them anew.
        self.presence.forget_all();
        // The old endpoint is gone, and with it every dialog: a re-INVITE from the
        // new address cannot be sent in them, so the calls end here, saying why.
        let legs: Vec<_> = self.legs.keys().copied().collect();
        for leg in legs {
            self.on_leg_signal(
                leg,
                LegSignal::Ended {
                    code: ENDED_BY_NETWORK,
                    reason: format!(
                        "network changed: local address {previous} is gone (now {address})"
                    ),
                    by: EndedBy::Local,
                    elsewhere: false,
                },
            );
        }
        let rport = self.config.settings.rport;
        for account in registering {
            let Some(slot) = self.accounts.get_mut(&account) else {
                continue;
            };
            let Some(config) = registration_config(
                &slot.account,
                rport,
                &self.config.settings.tls_ca_file,
                self.sip_public,
            ) else {
                continue;
            };
            slot.state = RegState::Registering;
            self.sip(SipAction::StartRegistration(Box::new(config)));
        }
    }
}
