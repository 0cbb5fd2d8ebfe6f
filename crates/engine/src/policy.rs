//! What happens to an incoming INVITE: reject, forward, or ring (and maybe answer by itself), from the ini's incoming-call keys.
//!
//! [`decide`] applies, in this order (the first that applies wins):
//!
//! 1. `DND=1` → 486 Busy Here.
//! 2. `denyIncoming` → 403 Forbidden, per rule:
//!    - `""` (off) and `button` (the DND button; its state is `DND`, step 1): no rule;
//!    - `user`: the To user of the INVITE is not one of our users
//!      ([`IncomingFacts::account_users`] and the account's `username`; exact,
//!      case-sensitive as SIP users are);
//!    - `domain`: the To host is not the account's domain;
//!    - `userdomain`: `user` or `domain` would reject;
//!    - `remotedomain`: the From host (the caller's domain) is not the account's
//!      domain;
//!    - `all`: every call.
//!
//!    Domains compare without case, without a `:port`, a trailing dot or `[]`
//!    around IPv6. When the account has no domain (or is the local account 0, as in
//!    MicroSIP), `domain`, `remotedomain` and the domain half of `userdomain` reject
//!    nothing.
//! 3. `maxConcurrentCalls` = N and N calls (not ended, not counting this one) exist →
//!    486.
//! 4. `callWaiting=0` and another call exists → 486.
//! 5. `forwarding=all` with a `forwardingNumber` → [`Decision::Forward`] to the number
//!    made a URI by
//!    [`normalize_target`] on the account (prefix, dial plan, domain); `delay_s` is
//!    `forwardingDelay`. A number that cannot be made a URI forwards nothing and the
//!    call goes on to ring.
//! 6. Otherwise the call rings, and answers by itself after a delay when:
//!    - `autoAnswer=all`: after `autoAnswerDelay`;
//!    - `autoAnswer=header` and the INVITE asks: `Call-Info: …;answer-after=N` → after
//!      N seconds (the header's delay wins, also over `X-AUTOANSWER`);
//!      `X-AUTOANSWER: true` (or `1`: [`x_autoanswer_is_true`]) → after
//!      `autoAnswerDelay`;
//!    - and, when `autoAnswerNumber` has masks, the caller's user part matches one
//!      ([`mask_matches`]);
//!    - and, when other calls exist, `autoAnswerCalls` allows it: `""` never, `hold`
//!      when every other call is on hold, `all` always.
//!
//! `button` (for `autoAnswer`, `forwarding`) means a switch the user flips at run
//! time; the ini alone does not turn it on, so [`decide`] treats it as off. An engine
//! whose switch is on passes a copy of the settings with `all` instead.
//!
//! Rejections carry a `Reason` header (RFC 3326 form, `SIP;cause=…;text="…"`) with
//! MicroSIP's words for why. Caller data (names, users, domains) is only compared,
//! never copied into a decision.

use std::time::Duration;

use microsip_config::{Account, AutoAnswer, AutoAnswerCalls, DenyIncoming, Forwarding, Settings};

use crate::dialplan::normalize_target;

/// What the engine knows of an incoming INVITE and of the calls already there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IncomingFacts {
    /// User part of the caller (P-Asserted-Identity or From); auto-answer masks match it.
    pub from_user: String,
    /// Host part of the caller's URI (`denyIncoming=remotedomain`).
    pub from_domain: String,
    /// Display name of the caller, if any (not used to decide; for the record).
    pub display_name: Option<String>,
    /// User part of the To URI (`denyIncoming=user`, `userdomain`).
    pub to_user: String,
    /// Host part of the To URI (`denyIncoming=domain`, `userdomain`).
    pub to_domain: String,
    /// The INVITE has `X-AUTOANSWER: true` (see [`x_autoanswer_is_true`]).
    pub x_autoanswer: bool,
    /// `answer-after` of a `Call-Info` header (see [`parse_answer_after`]).
    pub call_info_answer_after: Option<u32>,
    /// Calls that have not ended, not counting this one.
    pub active_calls: usize,
    /// Every one of those calls is on hold (ignored when there are none).
    pub calls_on_hold_only: bool,
    /// Domain of the account the call came in on; empty: the account's `domain`.
    pub account_domain: String,
    /// User names of our accounts (`denyIncoming=user`); the account's `username`
    /// counts too.
    pub account_users: Vec<String>,
}

/// What to do with the INVITE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Answer with this final status; add `header` (name, value) if given.
    Reject {
        /// The final status code (e.g. 486, 603).
        code: u16,
        /// Its reason phrase.
        reason: &'static str,
        /// An extra header (name, value), if any.
        header: Option<(String, String)>,
    },
    /// Redirect to `target` (a SIP URI): at once with 302 and a Diversion header when
    /// `delay_s` is 0; otherwise ring and redirect after `delay_s` seconds unless the
    /// call was answered or ended.
    Forward {
        /// Where to redirect the call (a SIP URI).
        target: String,
        /// Seconds to ring before redirecting; 0: redirect at once with 302.
        delay_s: u32,
    },
    /// Ring; answer by itself after the delay when one is given.
    Ring {
        /// How long to ring before answering by itself; `None`: wait for the user.
        auto_answer_after: Option<Duration>,
    },
}

fn busy(text: &str) -> Decision {
    Decision::Reject {
        code: 486,
        reason: "Busy Here",
        header: Some(("Reason".into(), format!("SIP;cause=486;text=\"{text}\""))),
    }
}

fn forbidden(text: &str) -> Decision {
    Decision::Reject {
        code: 403,
        reason: "Forbidden",
        header: Some(("Reason".into(), format!("SIP;cause=403;text=\"{text}\""))),
    }
}

/// Decides what happens to an incoming call on `account`; see the module
/// documentation for the order and the meaning of each key.
pub fn decide(settings: &Settings, account: &Account, facts: &IncomingFacts) -> Decision {
    if settings.dnd {
        return busy("Do Not Disturb");
    }
    if denied(settings.deny_incoming, account, facts) {
        return forbidden("Denied");
    }
    if let Some(max) = settings.max_concurrent_calls {
        if max > 0 && facts.active_calls >= usize::try_from(max).unwrap_or(usize::MAX) {
            return busy("Active calls limit");
        }
    }
    if !settings.call_waiting && facts.active_calls > 0 {
        return busy("Call waiting is off");
    }
    if settings.forwarding == Forwarding::All {
        let number = settings.forwarding_number.as_deref().map(str::trim);
        if let Some(target) = number
            .filter(|n| !n.is_empty())
            .and_then(|n| normalize_target(n, account).ok())
        {
            return Decision::Forward {
                target: target.uri,
                delay_s: settings.forwarding_delay,
            };
        }
    }
    Decision::Ring {
        auto_answer_after: auto_answer_delay(settings, facts)
            .map(|s| Duration::from_secs(s.into())),
    }
}

/// The host of a domain as compared: lowercase, no port, no trailing dot, no `[]`.
fn host_key(domain: &str) -> String {
    let d = domain.trim();
    let host = if let Some(inner) = d.strip_prefix('[') {
        inner.split(']').next().unwrap_or_default()
    } else if d.matches(':').count() > 1 {
        d // a bare IPv6 address
    } else {
        d.split(':').next().unwrap_or_default()
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn denied(rule: DenyIncoming, account: &Account, facts: &IncomingFacts) -> bool {
    let our_domain = if facts.account_domain.trim().is_empty() {
        host_key(&account.domain)
    } else {
        host_key(&facts.account_domain)
    };
    // The local account (0) has no domain of its own to compare with.
    let domain_rules_apply = account.number != 0 && !our_domain.is_empty();
    let wrong_user = || {
        !facts
            .account_users
            .iter()
            .map(String::as_str)
            .chain(account.username.as_deref())
            .any(|u| u == facts.to_user)
    };
    let wrong_to_domain = || domain_rules_apply && host_key(&facts.to_domain) != our_domain;
    match rule {
        DenyIncoming::Off | DenyIncoming::Button => false,
        DenyIncoming::User => wrong_user(),
        DenyIncoming::Domain => wrong_to_domain(),
        DenyIncoming::UserDomain => wrong_user() || wrong_to_domain(),
        DenyIncoming::RemoteDomain => {
            domain_rules_apply && host_key(&facts.from_domain) != our_domain
        }
        DenyIncoming::All => true,
    }
}

/// Seconds after which the call answers by itself, if it does.
fn auto_answer_delay(settings: &Settings, facts: &IncomingFacts) -> Option<u32> {
    let delay = match settings.auto_answer {
        AutoAnswer::Off | AutoAnswer::Button => None,
        AutoAnswer::All => Some(settings.auto_answer_delay),
        AutoAnswer::Header => match facts.call_info_answer_after {
            Some(n) => Some(n),
            None => facts.x_autoanswer.then_some(settings.auto_answer_delay),
        },
    }?;
    let masks = &settings.auto_answer_number;
    if !masks.is_empty() && !masks.iter().any(|m| mask_matches(m, &facts.from_user)) {
        return None;
    }
    if facts.active_calls > 0 {
        let allowed = match settings.auto_answer_calls {
            AutoAnswerCalls::Idle => false,
            AutoAnswerCalls::Hold => facts.calls_on_hold_only,
            AutoAnswerCalls::All => true,
        };
        if !allowed {
            return None;
        }
    }
    Some(delay)
}

/// The auto-answer delay a `Call-Info` header value asks for:
/// `<sip:x>;answer-after=N` → N seconds (parameter name without case, blanks around
/// `=` allowed, the first `answer-after` of the value wins). Parameters inside `<…>`
/// and quoted strings do not count. Without `answer-after`, the words Polycom and
/// MicroSIP also know — an `alert-autoanswer` info or `auto answer` — mean 0.
/// `None`: the header does not ask (or N is not a whole number that fits in u32).
pub fn parse_answer_after(call_info: &str) -> Option<u32> {
    let mut params = Vec::new();
    let mut current = String::new();
    let mut in_angle = false;
    let mut in_quote = false;
    let mut escaped = false;
    for c in call_info.chars() {
        if in_quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quote = false;
            }
            continue;
        }
        if in_angle {
            if c == '>' {
                in_angle = false;
            }
            continue;
        }
        match c {
            '"' => in_quote = true,
            '<' => in_angle = true,
            ';' | ',' => params.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    params.push(current);
    for param in &params {
        if let Some((name, value)) = param.split_once('=') {
            if name.trim().eq_ignore_ascii_case("answer-after") {
                let value = value.trim();
                if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                return value.parse().ok();
            }
        }
    }
    let lower = call_info.to_ascii_lowercase();
    (lower.contains("alert-autoanswer") || lower.contains("auto answer")).then_some(0)
}

/// True when an `X-AUTOANSWER` header value asks to answer: `true` or `1`, without
/// case, blanks around ignored (MicroSIP).
pub fn x_autoanswer_is_true(value: &str) -> bool {
    let v = value.trim();
    v.eq_ignore_ascii_case("true") || v == "1"
}

/// Wildcard match of a whole text: `*` any run (also empty), `?` exactly one
/// character, anything else itself, ASCII letters without case. Linear-space, no
/// recursion; worst case mask length × text length steps.
pub fn mask_matches(mask: &str, text: &str) -> bool {
    let m: Vec<char> = mask.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut mi, mut ti) = (0, 0);
    // Last `*` seen and the text position it is currently made to cover up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match m.get(mi) {
            Some('*') => {
                star = Some((mi, ti));
                mi += 1;
            }
            Some(&c) if c == '?' || c.eq_ignore_ascii_case(&t[ti]) => {
                mi += 1;
                ti += 1;
            }
            _ => match star {
                Some((smi, sti)) => {
                    mi = smi + 1;
                    ti = sti + 1;
                    star = Some((smi, sti + 1));
                }
                None => return false,
            },
        }
    }
    m[mi.min(m.len())..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use microsip_config::{Config, IniDocument};

    /// Settings and `[Account1]` (domain pbx.example, user 100) from ini lines.
    fn setup(settings: &str, account: &str) -> (Settings, Account) {
        let text = format!(
            "[Settings]\n{settings}\n[Account1]\ndomain=pbx.example\nusername=100\n{account}\n"
        );
        let (doc, _) = IniDocument::parse(text.as_bytes());
        let config = Config::from_document(&doc, "test.ini");
        assert!(config.problems.is_empty(), "{:?}", config.problems);
        (config.settings, config.accounts[1].clone())
    }

    fn facts() -> IncomingFacts {
        IncomingFacts {
            from_user: "200".into(),
            from_domain: "pbx.example".into(),
            display_name: Some("Bob".into()),
            to_user: "100".into(),
            to_domain: "pbx.example".into(),
            account_domain: "pbx.example".into(),
            account_users: vec!["100".into()],
            ..IncomingFacts::default()
        }
    }

    fn decide_with(settings: &str, f: &IncomingFacts) -> Decision {
        let (s, a) = setup(settings, "");
        decide(&s, &a, f)
    }

    fn ring() -> Decision {
        Decision::Ring {
            auto_answer_after: None,
        }
    }

    fn answer(secs: u64) -> Decision {
        Decision::Ring {
            auto_answer_after: Some(Duration::from_secs(secs)),
        }
    }

    fn code(d: &Decision) -> Option<u16> {
        match d {
            Decision::Reject { code, .. } => Some(*code),
            _ => None,
        }
    }

    #[test]
    fn defaults_ring() {
        assert_eq!(decide_with("", &facts()), ring());
        let (s, a) = setup("", "");
        assert_eq!(decide(&s, &a, &IncomingFacts::default()), ring());
    }

    #[test]
    fn dnd_is_486_and_comes_first() {
        let d = decide_with("DND=1\ndenyIncoming=all\nautoAnswer=all", &facts());
        assert_eq!(
            d,
            Decision::Reject {
                code: 486,
                reason: "Busy Here",
                header: Some((
                    "Reason".into(),
                    "SIP;cause=486;text=\"Do Not Disturb\"".into()
                )),
            }
        );
        assert_eq!(decide_with("DND=0", &facts()), ring());
    }

    #[test]
    fn deny_incoming_rules() {
        let forbidden = Some(403);
        let mut other_user = facts();
        other_user.to_user = "101".into();
        let mut other_to_domain = facts();
        other_to_domain.to_domain = "other.example".into();
        let mut other_from_domain = facts();
        other_from_domain.from_domain = "evil.example".into();
        let mut second_user = facts();
        second_user.to_user = "555".into();
        second_user.account_users = vec!["100".into(), "555".into()];
        let mut case_port = facts();
        case_port.to_domain = "PBX.Example.:5060".into();
        case_port.from_domain = "Pbx.Example".into();

        let table: &[(&str, &IncomingFacts, Option<u16>)] = &[
            ("denyIncoming=", &other_user, None),
            ("denyIncoming=button", &other_user, None),
            ("denyIncoming=all", &facts(), forbidden),
            ("denyIncoming=user", &facts(), None),
            ("denyIncoming=user", &other_user, forbidden),
            ("denyIncoming=user", &second_user, None),
            ("denyIncoming=user", &other_to_domain, None),
            ("denyIncoming=domain", &other_to_domain, forbidden),
            ("denyIncoming=domain", &other_user, None),
            ("denyIncoming=domain", &case_port, None),
            ("denyIncoming=userdomain", &facts(), None),
            ("denyIncoming=userdomain", &other_user, forbidden),
            ("denyIncoming=userdomain", &other_to_domain, forbidden),
            ("denyIncoming=remotedomain", &other_from_domain, forbidden),
            ("denyIncoming=remotedomain", &other_to_domain, None),
            ("denyIncoming=remotedomain", &case_port, None),
        ];
        for (settings, f, expected) in table {
            let d = decide_with(settings, f);
            assert_eq!(code(&d), *expected, "{settings} {f:?}");
            if expected.is_some() {
                assert_eq!(
                    d,
                    Decision::Reject {
                        code: 403,
                        reason: "Forbidden",
                        header: Some(("Reason".into(), "SIP;cause=403;text=\"Denied\"".into())),
                    }
                );
            }
        }
    }

    #[test]
    fn deny_domain_rules_need_a_domain() {
        let (s, mut a) = setup("denyIncoming=remotedomain", "");
        let mut f = facts();
        f.from_domain = "evil.example".into();
        f.account_domain.clear();
        // Falls back to the account's domain.
        assert_eq!(code(&decide(&s, &a, &f)), Some(403));
        a.domain.clear();
        assert_eq!(decide(&s, &a, &f), ring());
        // The local account compares no domains.
        let (s, mut a) = setup("denyIncoming=domain", "");
        a.number = 0;
        let mut f = facts();
        f.to_domain = "192.168.1.5".into();
        assert_eq!(decide(&s, &a, &f), ring());
    }

    #[test]
    fn deny_user_counts_the_account_username() {
        let (s, a) = setup("denyIncoming=user", "");
        let mut f = facts();
        f.account_users.clear();
        assert_eq!(decide(&s, &a, &f), ring());
        f.to_user = "1000".into();
        assert_eq!(code(&decide(&s, &a, &f)), Some(403));
    }

    #[test]
    fn max_concurrent_calls() {
        let mut f = facts();
        f.active_calls = 1;
        assert_eq!(decide_with("maxConcurrentCalls=2", &f), ring());
        f.active_calls = 2;
        let d = decide_with("maxConcurrentCalls=2", &f);
        assert_eq!(code(&d), Some(486));
        assert!(
            matches!(&d, Decision::Reject { header: Some((_, v)), .. } if v.contains("Active calls limit"))
        );
        // 0 means no limit
        f.active_calls = 50;
        assert_eq!(decide_with("maxConcurrentCalls=0", &f), ring());
        // denyIncoming comes before the limit
        f.active_calls = 2;
        f.to_user = "x".into();
        assert_eq!(
            code(&decide_with("maxConcurrentCalls=2\ndenyIncoming=user", &f)),
            Some(403)
        );
    }

    #[test]
    fn call_waiting() {
        let mut f = facts();
        assert_eq!(decide_with("callWaiting=0", &f), ring());
        f.active_calls = 1;
        let d = decide_with("callWaiting=0", &f);
        assert_eq!(code(&d), Some(486));
        assert!(
            matches!(&d, Decision::Reject { header: Some((_, v)), .. } if v.contains("Call waiting"))
        );
        assert_eq!(decide_with("callWaiting=1", &f), ring());
    }

    #[test]
    fn forwarding() {
        let f = facts();
        assert_eq!(
            decide_with("forwarding=all\nforwardingNumber=300", &f),
            Decision::Forward {
                target: "sip:300@pbx.example".into(),
                delay_s: 0
            }
        );
        assert_eq!(
            decide_with(
                "forwarding=all\nforwardingNumber= sip:v@vm.example \nforwardingDelay=20",
                &f
            ),
            Decision::Forward {
                target: "sip:v@vm.example".into(),
                delay_s: 20
            }
        );
        // no number, or off
        assert_eq!(decide_with("forwarding=all", &f), ring());
        assert_eq!(decide_with("forwarding=\nforwardingNumber=300", &f), ring());
        // button: a run-time switch the ini alone does not turn on
        assert_eq!(
            decide_with("forwarding=button\nforwardingNumber=300", &f),
            ring()
        );
        // an unusable number forwards nothing: the call rings (and may auto-answer)
        assert_eq!(
            decide_with("forwarding=all\nforwardingNumber=a b\nautoAnswer=all", &f),
            answer(0)
        );
        // the dial plan applies to the forwarding number
        let (s, a) = setup(
            "forwarding=all\nforwardingNumber=89161234567",
            "dialPlan=<8:+7>xxxxxxxxxx",
        );
        assert_eq!(
            decide(&s, &a, &f),
            Decision::Forward {
                target: "sip:+79161234567@pbx.example".into(),
                delay_s: 0
            }
        );
        // forwarding comes after the busy rules and before auto-answer
        let mut busy = facts();
        busy.active_calls = 1;
        assert_eq!(
            code(&decide_with(
                "forwarding=all\nforwardingNumber=300\ncallWaiting=0",
                &busy
            )),
            Some(486)
        );
        assert!(matches!(
            decide_with("forwarding=all\nforwardingNumber=300\nautoAnswer=all", &f),
            Decision::Forward { .. }
        ));
    }

    #[test]
    fn auto_answer_modes() {
        let f = facts();
        assert_eq!(decide_with("autoAnswer=", &f), ring());
        assert_eq!(decide_with("autoAnswer=all", &f), answer(0));
        assert_eq!(
            decide_with("autoAnswer=all\nautoAnswerDelay=3", &f),
            answer(3)
        );
        // button (the default): a run-time switch the ini alone does not turn on
        assert_eq!(decide_with("", &f), ring());
        assert_eq!(
            decide_with("autoAnswer=button\nautoAnswerDelay=2", &f),
            ring()
        );
        // an engine whose switch is on passes `all`
        let (mut s, a) = setup("autoAnswer=button\nautoAnswerDelay=2", "");
        s.auto_answer = AutoAnswer::All;
        assert_eq!(decide(&s, &a, &f), answer(2));
    }

    #[test]
    fn auto_answer_header() {
        let mut f = facts();
        assert_eq!(decide_with("autoAnswer=header", &f), ring());
        f.x_autoanswer = true;
        assert_eq!(
            decide_with("autoAnswer=header\nautoAnswerDelay=4", &f),
            answer(4)
        );
        f.call_info_answer_after = Some(7);
        assert_eq!(
            decide_with("autoAnswer=header\nautoAnswerDelay=4", &f),
            answer(7)
        );
        f.x_autoanswer = false;
        f.call_info_answer_after = Some(0);
        assert_eq!(
            decide_with("autoAnswer=header\nautoAnswerDelay=4", &f),
            answer(0)
        );
        // headers mean nothing unless autoAnswer=header
        assert_eq!(decide_with("autoAnswer=", &f), ring());
        assert_eq!(decide_with("autoAnswer=button", &f), ring());
        // autoAnswer=all keeps its own delay
        assert_eq!(
            decide_with("autoAnswer=all\nautoAnswerDelay=4", &f),
            answer(4)
        );
    }

    #[test]
    fn auto_answer_number_masks() {
        let mut f = facts();
        f.from_user = "+4930123".into();
        let s = "autoAnswer=all\nautoAnswerNumber=";
        assert_eq!(decide_with(&format!("{s}+4930*"), &f), answer(0));
        assert_eq!(decide_with(&format!("{s}100;+49301??"), &f), answer(0));
        assert_eq!(decide_with(&format!("{s}100|+49301??"), &f), answer(0));
        assert_eq!(decide_with(&format!("{s}100 ; 2*"), &f), ring());
        assert_eq!(decide_with(&format!("{s}+4930"), &f), ring());
        assert_eq!(decide_with(&format!("{s}*"), &f), answer(0));
        // masks restrict header auto-answer too
        let mut h = facts();
        h.from_user = "alice".into();
        h.x_autoanswer = true;
        assert_eq!(
            decide_with("autoAnswer=header\nautoAnswerNumber=ALICE", &h),
            answer(0)
        );
        assert_eq!(
            decide_with("autoAnswer=header\nautoAnswerNumber=bob", &h),
            ring()
        );
    }

    #[test]
    fn auto_answer_calls() {
        let mut f = facts();
        f.active_calls = 1;
        f.calls_on_hold_only = false;
        assert_eq!(decide_with("autoAnswer=all", &f), ring());
        assert_eq!(
            decide_with("autoAnswer=all\nautoAnswerCalls=hold", &f),
            ring()
        );
        assert_eq!(
            decide_with("autoAnswer=all\nautoAnswerCalls=all", &f),
            answer(0)
        );
        f.calls_on_hold_only = true;
        assert_eq!(decide_with("autoAnswer=all", &f), ring());
        assert_eq!(
            decide_with("autoAnswer=all\nautoAnswerCalls=hold", &f),
            answer(0)
        );
        // idle: every mode answers
        f.active_calls = 0;
        f.calls_on_hold_only = false;
        for calls in ["", "hold", "all"] {
            assert_eq!(
                decide_with(&format!("autoAnswer=all\nautoAnswerCalls={calls}"), &f),
                answer(0)
            );
        }
    }

    #[test]
    fn answer_after_parsing() {
        let cases: &[(&str, Option<u32>)] = &[
            ("<sip:pbx.example>;answer-after=0", Some(0)),
            ("<sip:pbx.example>;answer-after=5", Some(5)),
            ("<sip:pbx.example> ; Answer-After = 12 ", Some(12)),
            ("<sip:x>;purpose=info;answer-after=3;foo", Some(3)),
            ("<sip:x>;answer-after=3, <sip:y>;answer-after=9", Some(3)),
            ("<sip:x>;purpose=icon, <sip:y>;answer-after=9", Some(9)),
            (";answer-after=1", Some(1)),
            ("<sip:x;answer-after=5>", None),
            ("<sip:x>;note=\";answer-after=5\"", None),
            ("<sip:x>;answer-after=", None),
            ("<sip:x>;answer-after=-1", None),
            ("<sip:x>;answer-after=1.5", None),
            ("<sip:x>;answer-after=99999999999", None),
            ("<sip:x>;answer-after=4294967295", Some(u32::MAX)),
            ("<sip:x>;info=alert-autoanswer", Some(0)),
            ("<sip:x>;info=\"alert-autoanswer\"", Some(0)),
            ("<sip:x>;info=Auto Answer", Some(0)),
            ("<sip:x>;purpose=icon", None),
            ("", None),
            ("garbage", None),
            ("<<<;;;===\"", None),
            ("\"unterminated ;answer-after=1", None),
        ];
        for (value, expected) in cases {
            assert_eq!(parse_answer_after(value), *expected, "{value:?}");
        }
        let long = format!("<sip:x>;{}answer-after=2", "a=b;".repeat(3000));
        assert_eq!(parse_answer_after(&long), Some(2));
    }

    #[test]
    fn x_autoanswer_values() {
        for v in ["true", "TRUE", " True ", "1"] {
            assert!(x_autoanswer_is_true(v), "{v}");
        }
        for v in ["", "false", "0", "yes", "true; x", "11"] {
            assert!(!x_autoanswer_is_true(v), "{v}");
        }
    }

    #[test]
    fn masks() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "", true),
            ("*", "anything", true),
            ("", "", true),
            ("", "a", false),
            ("?", "", false),
            ("?", "a", true),
            ("??", "a", false),
            ("1*", "1", true),
            ("1*", "123", true),
            ("1*", "213", false),
            ("*3", "123", true),
            ("*2*", "123", true),
            ("*2*", "13", false),
            ("1?3", "123", true),
            ("1?3", "1234", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("*ab", "aab", true),
            ("*aab", "aaab", true),
            ("**", "x", true),
            ("Alice", "alice", true),
            ("+49*", "+4930", true),
            ("ü?", "üx", true),
            ("123", "123", true),
            ("123", "1234", false),
        ];
        for (mask, text, expected) in cases {
            assert_eq!(mask_matches(mask, text), *expected, "{mask:?} {text:?}");
        }
    }

    #[test]
    fn hostile_caller_data_is_just_data() {
        let huge = "x".repeat(10_000);
        let hostile = [
            "\"; rm -rf / #",
            "'; DROP TABLE calls; --",
            "$(reboot)`id`",
            "a\r\nVia: SIP/2.0/UDP evil\r\n",
            "\u{0}\u{7f}\u{202e}",
            "*",
            "?",
            "",
            huge.as_str(),
        ];
        let settings_list = [
            "",
            "autoAnswer=all\nautoAnswerNumber=1*;?;*x*x*x*x*x*x*x*y",
            "autoAnswer=header\ndenyIncoming=userdomain",
            "autoAnswer=all\nautoAnswerCalls=all\ndenyIncoming=domain",
            "denyIncoming=remotedomain",
            "denyIncoming=user\nforwarding=all\nforwardingNumber=300",
        ];
        for settings in settings_list {
            let (s, a) = setup(settings, "");
            for h in hostile {
                let f = IncomingFacts {
                    from_user: h.into(),
                    from_domain: h.into(),
                    display_name: Some(h.into()),
                    to_user: h.into(),
                    to_domain: h.into(),
                    x_autoanswer: true,
                    call_info_answer_after: parse_answer_after(h),
                    active_calls: 0,
                    calls_on_hold_only: false,
                    account_domain: h.into(),
                    account_users: vec![h.into()],
                };
                let d = decide(&s, &a, &f);
                // Nothing of the caller's text ends up in the decision.
                let text = format!("{d:?}");
                assert!(
                    !text.contains("rm -rf") && !text.contains("evil") && !text.contains(&huge)
                );
            }
        }
        // A 10 kB mask against a 10 kB caller: bounded work, no recursion.
        let mask = "*x".repeat(5_000);
        assert!(mask_matches(&mask, &huge));
        assert!(!mask_matches(&(mask + "y"), &huge));
    }
}
