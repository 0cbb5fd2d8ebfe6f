//! The ICE agent (RFC 8445, full implementation) for one data stream over UDP, as
//! a sans-IO state machine, and the candidate line of RFC 8839.
//!
//! It owns the candidates (ours: host and server-reflexive, given at the start;
//! the peer's: from its SDP, and peer-reflexive ones learned from its checks), the
//! checklist (pairs, their priorities and states, frozen / waiting by foundation),
//! the check schedule (one new check per [`TA`], retransmissions from [`RTO`]
//! doubling, [`MAX_SENDS`] at most), the answers to the peer's checks (with the role
//! conflict rules of section 7.3.1.1 and 487), triggered checks, and nomination:
//! regular nomination when controlling (a second check with USE-CANDIDATE on the
//! best valid pair, once every pair is done or [`NOMINATION_WAIT`] after the first
//! valid one), USE-CANDIDATE accepted when controlled. A Binding indication keeps
//! the selected pair open every [`KEEPALIVE`].
//!
//! It owns no socket and reads no clock: what arrives is handed to
//! [`Agent::handle`] with the component it came in on, time passes in
//! [`Agent::handle_timeout`], and the datagrams to send wait in
//! [`Agent::poll_transmit`]. Each component is one local socket (its host
//! candidate is its base), so a pair is a component and a remote address; a
//! server-reflexive candidate of ours is paired through its base (RFC 8445 section
//! 6.1.2.4). Components are numbered from 1 (RTP) and 2 (RTCP without rtcp-mux).
//!
//! Not built: aggressive nomination (deprecated by RFC 8445), relayed (TURN)
//! candidates, trickle ICE, several data streams sharing one agent, consent
//! freshness (RFC 7675) beyond the keep-alive.

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::check::{self, Check, Kind, Role};
use crate::stun::{self, StunError, TransactionId};

/// The pace of new checks (RFC 8445 section 14.2: 50 ms by default; the phone's
/// media tick is 20 ms and one data stream carries a few pairs).
pub const TA: Duration = Duration::from_millis(20);
/// The first retransmission timeout of a check (doubled after each send).
pub const RTO: Duration = Duration::from_millis(100);
/// The longest wait between two sends of one check.
pub const MAX_RTO: Duration = Duration::from_millis(800);
/// Sends of one check before its pair fails (about 2.3 s in all).
pub const MAX_SENDS: u32 = 5;
/// How long a controlling agent waits, after the first valid pair, for a better
/// pair to succeed before it nominates the best one it has.
pub const NOMINATION_WAIT: Duration = Duration::from_millis(300);
/// How often a Binding indication goes out on the selected pair.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

/// The type of a candidate (RFC 8445 section 5.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CandidateType {
    /// An address of a local interface.
    Host,
    /// The address a NAT gave the host candidate, as a STUN server saw it.
    ServerReflexive,
    /// An address learned from a connectivity check.
    PeerReflexive,
    /// A TURN relay's address (read from a peer's SDP; we gather none).
    Relayed,
}

impl CandidateType {
    /// The type preference of RFC 8445 section 5.1.2.2 (126, 110, 100, 0).
    pub fn preference(self) -> u32 {
        match self {
            CandidateType::Host => 126,
            CandidateType::PeerReflexive => 110,
            CandidateType::ServerReflexive => 100,
            CandidateType::Relayed => 0,
        }
    }

    /// The SDP name (`host`, `srflx`, `prflx`, `relay`).
    pub fn as_str(self) -> &'static str {
        match self {
            CandidateType::Host => "host",
            CandidateType::ServerReflexive => "srflx",
            CandidateType::PeerReflexive => "prflx",
            CandidateType::Relayed => "relay",
        }
    }

    fn from_sdp(name: &str) -> Option<CandidateType> {
        match name {
            "host" => Some(CandidateType::Host),
            "srflx" => Some(CandidateType::ServerReflexive),
            "prflx" => Some(CandidateType::PeerReflexive),
            "relay" => Some(CandidateType::Relayed),
            _ => None,
        }
    }
}

/// A transport address an agent can be reached at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Same for candidates of the same type from the same base and server.
    pub foundation: String,
    /// 1 for RTP, 2 for RTCP.
    pub component: u16,
    /// Its priority (RFC 8445 section 5.1.2).
    pub priority: u32,
    /// The address.
    pub address: SocketAddr,
    /// What kind of address it is.
    pub kind: CandidateType,
    /// The base (or the server-reflexive address of a relay): `raddr`/`rport`.
    pub related: Option<SocketAddr>,
}

impl Candidate {
    /// The priority of a candidate of `kind` for `component`, with the highest
    /// local preference (one interface).
    pub fn priority_of(kind: CandidateType, component: u16) -> u32 {
        (kind.preference() << 24) | (65535 << 8) | (256 - u32::from(component.clamp(1, 256)))
    }

    /// Our host candidate: the socket's own address.
    pub fn host(component: u16, address: SocketAddr) -> Candidate {
        Candidate {
            foundation: foundation(CandidateType::Host, address.ip()),
            component,
            priority: Candidate::priority_of(CandidateType::Host, component),
            address,
            kind: CandidateType::Host,
            related: None,
        }
    }

    /// Our server-reflexive candidate: `address` as a STUN server saw the socket
    /// `base`.
    pub fn server_reflexive(component: u16, address: SocketAddr, base: SocketAddr) -> Candidate {
        Candidate {
            foundation: foundation(CandidateType::ServerReflexive, base.ip()),
            component,
            priority: Candidate::priority_of(CandidateType::ServerReflexive, component),
            address,
            kind: CandidateType::ServerReflexive,
            related: Some(base),
        }
    }

    /// The value of an `a=candidate:` line (RFC 8839 section 5.1), without the
    /// attribute name: `1 1 UDP 2130706431 192.0.2.1 4000 typ host`.
    pub fn to_sdp(&self) -> String {
        let mut out = format!(
            "{} {} UDP {} {} {} typ {}",
            self.foundation,
            self.component,
            self.priority,
            self.address.ip(),
            self.address.port(),
            self.kind.as_str()
        );
        if let Some(r) = self.related {
            out.push_str(&format!(" raddr {} rport {}", r.ip(), r.port()));
        }
        out
    }

    /// Reads the value of an `a=candidate:` line. `None`: malformed, or not UDP
    /// (a TCP candidate is of no use to us), or a host name (RFC 8839 allows FQDNs;
    /// we resolve nothing here).
    pub fn parse(value: &str) -> Option<Candidate> {
        let f: Vec<&str> = value.split_whitespace().collect();
        if f.len() < 8 || !f[2].eq_ignore_ascii_case("udp") || f[6] != "typ" {
            return None;
        }
        let component = f[1].parse::<u16>().ok().filter(|c| (1..=256).contains(c))?;
        let priority = f[3].parse::<u32>().ok()?;
        let ip = f[4].parse::<IpAddr>().ok()?;
        let port = f[5].parse::<u16>().ok()?;
        let kind = CandidateType::from_sdp(f[7])?;
        let mut related_ip = None;
        let mut related_port = None;
        let mut rest = f[8..].iter();
        while let (Some(k), Some(v)) = (rest.next(), rest.next()) {
            match *k {
                "raddr" => related_ip = v.parse::<IpAddr>().ok(),
                "rport" => related_port = v.parse::<u16>().ok(),
                _ => {}
            }
        }
        Some(Candidate {
            foundation: f[0].to_string(),
            component,
            priority,
            address: SocketAddr::new(ip, port),
            kind,
            related: related_ip
                .zip(related_port)
                .map(|(i, p)| SocketAddr::new(i, p)),
        })
    }
}

/// A foundation: the same for the same type and base address (section 5.1.1.3).
fn foundation(kind: CandidateType, base: IpAddr) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in kind.as_str().bytes().chain(base.to_string().into_bytes()) {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    (h % 100_000_000).to_string()
}

/// An agent's `ice-ufrag` and `ice-pwd`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name fragment (4 to 256 ice-chars).
    pub ufrag: String,
    /// The password (22 to 256 ice-chars).
    pub pwd: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The password stays out of logs.
        f.debug_struct("Credentials")
            .field("ufrag", &self.ufrag)
            .finish_non_exhaustive()
    }
}

const ICE_CHARS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

impl Credentials {
    /// An 8-character ufrag and a 24-character password made of `random` (four
    /// random 64-bit values the caller drew).
    pub fn from_random(random: [u64; 4]) -> Credentials {
        let chars = |words: &[u64], n: usize| -> String {
            words
                .iter()
                .flat_map(|w| (0..10).map(move |i| ICE_CHARS[((w >> (6 * i)) & 63) as usize]))
                .take(n)
                .map(char::from)
                .collect()
        };
        Credentials {
            ufrag: chars(&random[..1], 8),
            pwd: chars(&random[1..], 24),
        }
    }
}

/// What the agent is given at its start.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Our ufrag and password (the ones in our SDP).
    pub local: Credentials,
    /// The peer's, from its SDP.
    pub remote: Credentials,
    /// Our candidates (a host candidate per component, and server-reflexive ones).
    pub candidates: Vec<Candidate>,
    /// The peer's candidates from its SDP.
    pub remote_candidates: Vec<Candidate>,
    /// Our role at the start: the offerer controls (or the full agent facing a
    /// lite one).
    pub controlling: bool,
    /// Our tie-breaker (random, for role conflicts).
    pub tie_breaker: u64,
    /// Random bits for the transaction ids.
    pub seed: u64,
}

/// A datagram the agent wants sent from the socket of `component`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Out of the socket of this component.
    pub component: u16,
    /// To where.
    pub to: SocketAddr,
    /// The STUN message.
    pub data: Vec<u8>,
}

/// The state of a candidate pair (RFC 8445 section 6.1.2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairState {
    /// Not to be checked until a pair of the same foundation succeeds.
    Frozen,
    /// To be checked.
    Waiting,
    /// A check is out.
    InProgress,
    /// A check succeeded: the pair is valid.
    Succeeded,
    /// The check got no answer, or an error.
    Failed,
}

/// Where the agent stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Checks are running and no pair is valid yet.
    Checking,
    /// A pair of every component is valid, not all nominated yet.
    Connected,
    /// Every component has a nominated pair.
    Completed,
    /// Every pair failed.
    Failed,
}

/// One check in flight.
#[derive(Debug, Clone)]
struct Transaction {
    id: TransactionId,
    request: Vec<u8>,
    sends: u32,
    next_at: Instant,
    use_candidate: bool,
    /// Sent as controlling (a 487 then makes us controlled, and the reverse).
    controlling: bool,
}

/// A candidate pair: our socket of `component` and a remote address.
#[derive(Debug, Clone)]
struct Pair {
    component: u16,
    remote: SocketAddr,
    local_priority: u32,
    remote_priority: u32,
    foundation: String,
    state: PairState,
    transaction: Option<Transaction>,
    /// USE-CANDIDATE came from the controlling peer before the pair was valid:
    /// nominated as soon as our check succeeds.
    nominate_on_success: bool,
    nominated: bool,
}

impl Pair {
    /// RFC 8445 section 6.1.2.3.
    fn priority(&self, controlling: bool) -> u64 {
        let (g, d) = if controlling {
            (
                u64::from(self.local_priority),
                u64::from(self.remote_priority),
            )
        } else {
            (
                u64::from(self.remote_priority),
                u64::from(self.local_priority),
            )
        };
        (1u64 << 32) * g.min(d) + 2 * g.max(d) + u64::from(g > d)
    }

    fn valid(&self) -> bool {
        self.state == PairState::Succeeded
    }
}

/// The ICE agent of one data stream (see the module documentation).
#[derive(Debug)]
pub struct Agent {
    local: Credentials,
    remote: Credentials,
    controlling: bool,
    tie_breaker: u64,
    locals: Vec<Candidate>,
    remotes: Vec<Candidate>,
    pairs: Vec<Pair>,
    triggered: VecDeque<usize>,
    transmits: VecDeque<Transmit>,
    rng: u64,
    next_check: Option<Instant>,
    first_valid_at: Option<Instant>,
    last_keepalive: Option<Instant>,
    prflx_count: u32,
}

impl Agent {
    /// An agent that starts checking on the first [`Agent::handle_timeout`].
    pub fn new(config: AgentConfig) -> Agent {
        let mut agent = Agent {
            local: config.local,
            remote: config.remote,
            controlling: config.controlling,
            tie_breaker: config.tie_breaker,
            locals: config.candidates,
            remotes: Vec::new(),
            pairs: Vec::new(),
            triggered: VecDeque::new(),
            transmits: VecDeque::new(),
            rng: config.seed | 1,
            next_check: None,
            first_valid_at: None,
            last_keepalive: None,
            prflx_count: 0,
        };
        agent.add_remote_candidates(config.remote_candidates);
        agent
    }

    /// Our ufrag and password.
    pub fn local_credentials(&self) -> &Credentials {
        &self.local
    }

    /// The peer's ufrag and password.
    pub fn remote_credentials(&self) -> &Credentials {
        &self.remote
    }

    /// Whether we are the controlling agent now (a role conflict may have changed it).
    pub fn is_controlling(&self) -> bool {
        self.controlling
    }

    /// Adds remote candidates (a new offer or answer with the same credentials):
    /// the new ones are paired, the known ones ignored.
    pub fn add_remote_candidates(&mut self, candidates: Vec<Candidate>) {
        for c in candidates {
            if self.has_local(c.component)
                && !self
                    .remotes
                    .iter()
                    .any(|r| r.component == c.component && r.address == c.address)
            {
                self.remotes.push(c.clone());
                self.pair_with(&c, PairState::Frozen);
            }
        }
        self.compute_states();
    }

    fn has_local(&self, component: u16) -> bool {
        self.locals.iter().any(|l| l.component == component)
    }

    /// The host candidate (the base) of `component`.
    fn base(&self, component: u16) -> Option<&Candidate> {
        self.locals
            .iter()
            .find(|l| l.component == component && l.kind == CandidateType::Host)
            .or_else(|| self.locals.iter().find(|l| l.component == component))
    }

    /// Pairs `remote` with our base of its component (same address family),
    /// unless that pair exists; returns its index.
    fn pair_with(&mut self, remote: &Candidate, state: PairState) -> Option<usize> {
        if let Some(i) = self
            .pairs
            .iter()
            .position(|p| p.component == remote.component && p.remote == remote.address)
        {
            return Some(i);
        }
        let base = self.base(remote.component)?;
        if base.address.is_ipv4() != remote.address.is_ipv4() {
            return None;
        }
        let pair = Pair {
            component: remote.component,
            remote: remote.address,
            local_priority: base.priority,
            remote_priority: remote.priority,
            foundation: format!("{}:{}", base.foundation, remote.foundation),
            state,
            transaction: None,
            nominate_on_success: false,
            nominated: false,
        };
        self.pairs.push(pair);
        Some(self.pairs.len() - 1)
    }

    /// Section 6.1.2.6: for each foundation, the highest-priority pair of the
    /// lowest component waits; the others stay frozen. Runs over frozen pairs only.
    fn compute_states(&mut self) {
        let controlling = self.controlling;
        let mut best: Vec<(String, usize)> = Vec::new();
        for (i, p) in self.pairs.iter().enumerate() {
            if p.state != PairState::Frozen {
                continue;
            }
            if self
                .pairs
                .iter()
                .any(|q| q.foundation == p.foundation && q.state != PairState::Frozen)
            {
                continue;
            }
            match best.iter_mut().find(|(f, _)| *f == p.foundation) {
                Some((_, j)) => {
                    let q = &self.pairs[*j];
                    if (p.component, u64::MAX - p.priority(controlling))
                        < (q.component, u64::MAX - q.priority(controlling))
                    {
                        *j = i;
                    }
                }
                None => best.push((p.foundation.clone(), i)),
            }
        }
        for (_, i) in best {
            self.pairs[i].state = PairState::Waiting;
        }
    }

    /// Where media of `component` goes: the nominated pair, else the best valid
    /// one (media may flow before nomination), else `None`.
    pub fn selected(&self, component: u16) -> Option<SocketAddr> {
        self.nominated(component)
            .or_else(|| self.best_valid(component).map(|i| self.pairs[i].remote))
    }

    /// The nominated pair's remote address of `component`, once there is one.
    pub fn nominated(&self, component: u16) -> Option<SocketAddr> {
        self.pairs
            .iter()
            .find(|p| p.component == component && p.nominated && p.valid())
            .map(|p| p.remote)
    }

    fn best_valid(&self, component: u16) -> Option<usize> {
        let controlling = self.controlling;
        self.pairs
            .iter()
            .enumerate()
            .filter(|(_, p)| p.component == component && p.valid())
            .max_by_key(|(_, p)| p.priority(controlling))
            .map(|(i, _)| i)
    }

    fn components(&self) -> Vec<u16> {
        let mut c: Vec<u16> = self.pairs.iter().map(|p| p.component).collect::<Vec<_>>();
        c.sort_unstable();
        c.dedup();
        c
    }

    /// Where the agent stands (see [`State`]).
    pub fn state(&self) -> State {
        let components = self.components();
        if components.is_empty() {
            return State::Failed;
        }
        if components.iter().all(|c| self.nominated(*c).is_some()) {
            return State::Completed;
        }
        if components.iter().all(|c| self.best_valid(*c).is_some()) {
            return State::Connected;
        }
        if self.pairs.iter().all(|p| p.state == PairState::Failed) {
            return State::Failed;
        }
        State::Checking
    }

    /// The pairs as (component, remote address, state, nominated), highest
    /// priority first (for logs and tests).
    pub fn pairs(&self) -> Vec<(u16, SocketAddr, PairState, bool)> {
        let mut order: Vec<&Pair> = self.pairs.iter().collect();
        order.sort_by_key(|p| std::cmp::Reverse(p.priority(self.controlling)));
        order
            .into_iter()
            .map(|p| (p.component, p.remote, p.state, p.nominated))
            .collect()
    }

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    fn next_id(&mut self) -> TransactionId {
        // splitmix64
        let mut word = || {
            self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let (a, b) = (word(), word());
        let mut id = [0u8; 12];
        id[..8].copy_from_slice(&a.to_be_bytes());
        id[8..].copy_from_slice(&b.to_be_bytes()[..4]);
        id
    }

    /// A datagram that arrived at `now` on the socket of `component` from `from`.
    /// Returns `false` when it is not a STUN Binding message (RTP, RTCP, DTLS:
    /// the caller's business, RFC 7983); `true` when the agent took it (answered,
    /// used, or dropped as bad).
    pub fn handle(&mut self, now: Instant, component: u16, from: SocketAddr, data: &[u8]) -> bool {
        let kind = check::kind(data);
        if kind.is_some() {
            tracing::trace!("ICE: {kind:?} from {from} (component {component})");
        }
        match kind {
            None => false,
            Some(Kind::Indication) => true,
            Some(Kind::Request) => {
                self.on_request(now, component, from, data);
                true
            }
            Some(Kind::Response) => {
                self.on_response(now, from, data);
                true
            }
        }
    }

    fn on_request(&mut self, now: Instant, component: u16, from: SocketAddr, data: &[u8]) {
        let Some((id, request)) = check::parse_request(data) else {
            return;
        };
        if !check::verify(data, self.local.pwd.as_bytes()) {
            tracing::debug!("ICE: check from {from} fails MESSAGE-INTEGRITY; dropped");
            return;
        }
        let expected = format!("{}:{}", self.local.ufrag, self.remote.ufrag);
        if request.username != expected {
            tracing::debug!(
                "ICE: check from {from} for user {:?}; dropped",
                request.username
            );
            return;
        }
        // Section 7.3.1.1: role conflicts.
        match request.role {
            Some(Role::Controlling(theirs)) if self.controlling => {
                if self.tie_breaker >= theirs {
                    self.reply_error(component, from, &id, 487, "Role Conflict");
                    return;
                }
                self.switch_role(false);
            }
            Some(Role::Controlled(theirs)) if !self.controlling => {
                if self.tie_breaker >= theirs {
                    self.switch_role(true);
                } else {
                    self.reply_error(component, from, &id, 487, "Role Conflict");
                    return;
                }
            }
            _ => {}
        }
        let response = check::encode_success(&id, from, self.local.pwd.as_bytes());
        self.transmits.push_back(Transmit {
            component,
            to: from,
            data: response,
        });
        if !self.has_local(component) {
            return;
        }
        // Section 7.3.1.3: a source we do not know is a peer-reflexive candidate.
        let known = self
            .remotes
            .iter()
            .any(|r| r.component == component && r.address == from);
        if !known {
            self.prflx_count += 1;
            let c = Candidate {
                foundation: format!("prflx{}", self.prflx_count),
                component,
                priority: request.priority,
                address: from,
                kind: CandidateType::PeerReflexive,
                related: None,
            };
            self.remotes.push(c.clone());
            tracing::debug!("ICE: peer-reflexive candidate {from} (component {component})");
            self.pair_with(&c, PairState::Waiting);
        }
        let Some(i) = self
            .pairs
            .iter()
            .position(|p| p.component == component && p.remote == from)
        else {
            return;
        };
        // Section 7.3.1.4: the triggered check.
        let pair = &mut self.pairs[i];
        match pair.state {
            PairState::Succeeded => {}
            PairState::InProgress => {
                // Section 7.3.1.4: the check out is sent again at once, with a
                // fresh retransmission schedule (the path works now, most likely:
                // the peer's check just opened its NAT for ours).
                if let Some(t) = pair.transaction.as_mut() {
                    t.sends = 1;
                    t.next_at = now + RTO;
                    let data = t.request.clone();
                    self.transmits.push_back(Transmit {
                        component,
                        to: from,
                        data,
                    });
                }
            }
            PairState::Frozen | PairState::Waiting | PairState::Failed => {
                pair.state = PairState::Waiting;
                if !self.triggered.contains(&i) {
                    self.triggered.push_back(i);
                }
            }
        }
        // Section 7.3.1.5: USE-CANDIDATE from the controlling agent.
        if request.use_candidate && !self.controlling {
            let pair = &mut self.pairs[i];
            if pair.valid() {
                if !pair.nominated {
                    tracing::info!("ICE: the peer nominated {from} (component {component})");
                }
                pair.nominated = true;
            } else {
                pair.nominate_on_success = true;
            }
        }
    }

    fn reply_error(
        &mut self,
        component: u16,
        to: SocketAddr,
        id: &TransactionId,
        code: u16,
        reason: &str,
    ) {
        let data = check::encode_error(id, code, reason, self.local.pwd.as_bytes());
        self.transmits.push_back(Transmit {
            component,
            to,
            data,
        });
    }

    fn switch_role(&mut self, controlling: bool) {
        if self.controlling != controlling {
            tracing::info!(
                "ICE: role conflict; we are {} now",
                if controlling {
                    "controlling"
                } else {
                    "controlled"
                }
            );
            self.controlling = controlling;
        }
    }

    fn on_response(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let Some(id) = check::transaction_of(data) else {
            return;
        };
        let Some(i) = self
            .pairs
            .iter()
            .position(|p| p.transaction.as_ref().is_some_and(|t| t.id == id))
        else {
            return;
        };
        if !check::verify(data, self.remote.pwd.as_bytes()) {
            tracing::debug!("ICE: response from {from} fails MESSAGE-INTEGRITY; dropped");
            return;
        }
        let Some(t) = self.pairs[i].transaction.take() else {
            return;
        };
        match stun::parse_binding_response(data, &id) {
            Ok(_mapped) if from == self.pairs[i].remote => {
                let pair = &mut self.pairs[i];
                let first = !pair.valid();
                pair.state = PairState::Succeeded;
                if (t.use_candidate && self.controlling) || pair.nominate_on_success {
                    pair.nominated = true;
                    tracing::info!(
                        "ICE: {} {} (component {})",
                        if self.controlling {
                            "nominated"
                        } else {
                            "the peer nominated"
                        },
                        pair.remote,
                        pair.component
                    );
                }
                if first {
                    tracing::debug!(
                        "ICE: {} (component {}) is valid",
                        pair.remote,
                        pair.component
                    );
                    self.first_valid_at.get_or_insert(now);
                    // Section 7.2.5.3.3: unfreeze the pairs of the same foundation.
                    let foundation = pair.foundation.clone();
                    for p in &mut self.pairs {
                        if p.foundation == foundation && p.state == PairState::Frozen {
                            p.state = PairState::Waiting;
                        }
                    }
                }
            }
            Ok(_) => {
                // Section 7.2.5.2.1: not symmetric.
                self.pairs[i].state = PairState::Failed;
            }
            Err(StunError::Refused(487, _)) => {
                // Section 7.2.5.1: switch role and check again.
                self.switch_role(!t.controlling);
                if !self.pairs[i].valid() {
                    self.pairs[i].state = PairState::Waiting;
                }
                self.triggered.push_back(i);
            }
            Err(e) => {
                tracing::debug!("ICE: check to {from} refused: {e}");
                if !self.pairs[i].valid() {
                    self.pairs[i].state = PairState::Failed;
                }
            }
        }
    }

    /// Runs the schedule at `now`: retransmissions and timeouts, the next check
    /// (triggered first), nomination, keep-alives. Call it at least every [`TA`].
    pub fn handle_timeout(&mut self, now: Instant) {
        self.retransmit(now);
        if self.next_check.is_none_or(|at| now >= at) {
            if let Some(i) = self.next_pair() {
                self.send_check(now, i, false);
                self.next_check = Some(now + TA);
            }
        }
        self.nominate(now);
        self.keepalive(now);
    }

    fn retransmit(&mut self, now: Instant) {
        for i in 0..self.pairs.len() {
            let Some(t) = self.pairs[i].transaction.as_mut() else {
                continue;
            };
            if now < t.next_at {
                continue;
            }
            if t.sends >= MAX_SENDS {
                let pair = &mut self.pairs[i];
                pair.transaction = None;
                if !pair.valid() {
                    tracing::debug!("ICE: no answer from {}; the pair failed", pair.remote);
                    pair.state = PairState::Failed;
                }
                continue;
            }
            let wait = (RTO * 2u32.pow(t.sends)).min(MAX_RTO);
            t.sends += 1;
            t.next_at = now + wait;
            let data = t.request.clone();
            let (component, to) = (self.pairs[i].component, self.pairs[i].remote);
            self.transmits.push_back(Transmit {
                component,
                to,
                data,
            });
        }
    }

    /// The pair to check next: a triggered one, else the highest-priority
    /// waiting pair, else the highest-priority frozen one (section 6.1.4.2).
    fn next_pair(&mut self) -> Option<usize> {
        while let Some(i) = self.triggered.pop_front() {
            if self.pairs[i].transaction.is_none() && self.pairs[i].state == PairState::Waiting {
                return Some(i);
            }
        }
        let controlling = self.controlling;
        let best_in = |state: PairState, pairs: &[Pair]| {
            pairs
                .iter()
                .enumerate()
                .filter(|(_, p)| p.state == state && p.transaction.is_none())
                .max_by_key(|(_, p)| p.priority(controlling))
                .map(|(i, _)| i)
        };
        best_in(PairState::Waiting, &self.pairs).or_else(|| best_in(PairState::Frozen, &self.pairs))
    }

    fn send_check(&mut self, now: Instant, i: usize, use_candidate: bool) {
        let id = self.next_id();
        let pair = &self.pairs[i];
        let check = Check {
            username: format!("{}:{}", self.remote.ufrag, self.local.ufrag),
            priority: Candidate::priority_of(CandidateType::PeerReflexive, pair.component),
            role: Some(if self.controlling {
                Role::Controlling(self.tie_breaker)
            } else {
                Role::Controlled(self.tie_breaker)
            }),
            use_candidate,
        };
        let request = check::encode_request(&id, &check, self.remote.pwd.as_bytes());
        let (component, to) = (pair.component, pair.remote);
        tracing::trace!(
            "ICE: check to {to} (component {component}, use-candidate {use_candidate})"
        );
        self.transmits.push_back(Transmit {
            component,
            to,
            data: request.clone(),
        });
        let pair = &mut self.pairs[i];
        if !pair.valid() {
            pair.state = PairState::InProgress;
        }
        pair.transaction = Some(Transaction {
            id,
            request,
            sends: 1,
            next_at: now + RTO,
            use_candidate,
            controlling: self.controlling,
        });
    }

    /// Regular nomination (section 8.1.1): once every pair is done, or
    /// [`NOMINATION_WAIT`] after the first valid pair, or when the best valid pair
    /// is the best pair there is, a check with USE-CANDIDATE on the best valid pair
    /// of each component that has none nominated.
    fn nominate(&mut self, now: Instant) {
        if !self.controlling {
            return;
        }
        let Some(first) = self.first_valid_at else {
            return;
        };
        let controlling = self.controlling;
        for component in self.components() {
            if self.nominated(component).is_some()
                || self.pairs.iter().any(|p| {
                    p.component == component
                        && p.transaction.as_ref().is_some_and(|t| t.use_candidate)
                })
            {
                continue;
            }
            let Some(best) = self.best_valid(component) else {
                continue;
            };
            let best_priority = self.pairs[best].priority(controlling);
            let better_pending = self.pairs.iter().any(|p| {
                p.component == component
                    && p.priority(controlling) > best_priority
                    && matches!(
                        p.state,
                        PairState::Frozen | PairState::Waiting | PairState::InProgress
                    )
            });
            if !better_pending || now.saturating_duration_since(first) >= NOMINATION_WAIT {
                // A plain check still out on this pair gives way to the nomination.
                self.pairs[best].transaction = None;
                self.send_check(now, best, true);
            }
        }
    }

    fn keepalive(&mut self, now: Instant) {
        if self.state() != State::Completed {
            return;
        }
        let last = *self.last_keepalive.get_or_insert(now);
        if now.saturating_duration_since(last) < KEEPALIVE {
            return;
        }
        self.last_keepalive = Some(now);
        for component in self.components() {
            if let Some(to) = self.nominated(component) {
                let id = self.next_id();
                self.transmits.push_back(Transmit {
                    component,
                    to,
                    data: check::encode_indication(&id),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn priorities_follow_rfc8445() {
        // 126 << 24 | 65535 << 8 | 255
        assert_eq!(
            Candidate::priority_of(CandidateType::Host, 1),
            2_130_706_431
        );
        assert_eq!(
            Candidate::priority_of(CandidateType::ServerReflexive, 1),
            1_694_498_815
        );
        assert_eq!(
            Candidate::priority_of(CandidateType::Host, 2),
            2_130_706_430
        );
        let p = |l: u32, r: u32| Pair {
            component: 1,
            remote: addr("192.0.2.1:1"),
            local_priority: l,
            remote_priority: r,
            foundation: String::new(),
            state: PairState::Frozen,
            transaction: None,
            nominate_on_success: false,
            nominated: false,
        };
        // 2^32 * MIN(G,D) + 2 * MAX(G,D) + (G > D ? 1 : 0)
        assert_eq!(p(10, 7).priority(true), (7u64 << 32) + 20 + 1);
        assert_eq!(p(10, 7).priority(false), (7u64 << 32) + 20);
        assert_eq!(p(5, 5).priority(true), (5u64 << 32) + 10);
    }

    #[test]
    fn candidate_lines_round_trip() {
        let base = addr("10.0.1.2:4000");
        let host = Candidate::host(1, base);
        let srflx = Candidate::server_reflexive(1, addr("203.0.113.11:4000"), base);
        assert_ne!(host.foundation, srflx.foundation);
        assert_eq!(
            srflx.to_sdp(),
            format!(
                "{} 1 UDP 1694498815 203.0.113.11 4000 typ srflx raddr 10.0.1.2 rport 4000",
                srflx.foundation
            )
        );
        assert_eq!(Candidate::parse(&host.to_sdp()), Some(host));
        assert_eq!(Candidate::parse(&srflx.to_sdp()), Some(srflx));
        // baresip's form, a TCP one (skipped), a host name (skipped), junk.
        let c = Candidate::parse("7f000001 1 UDP 2113929471 10.0.2.2 40002 typ host").unwrap();
        assert_eq!(
            (c.component, c.address, c.kind),
            (1, addr("10.0.2.2:40002"), CandidateType::Host)
        );
        assert_eq!(
            Candidate::parse("1 1 TCP 1 10.0.2.2 9 typ host tcptype active"),
            None
        );
        assert_eq!(Candidate::parse("1 1 UDP 1 host.example 9 typ host"), None);
        assert_eq!(Candidate::parse("1 1 UDP"), None);
    }

    #[test]
    fn credentials_are_ice_chars_of_the_right_length() {
        let c = Credentials::from_random([1, 2, 3, u64::MAX]);
        assert_eq!(c.ufrag.len(), 8);
        assert_eq!(c.pwd.len(), 24);
        assert!(c
            .ufrag
            .bytes()
            .chain(c.pwd.bytes())
            .all(|b| ICE_CHARS.contains(&b)));
        assert!(!format!("{c:?}").contains(&c.pwd));
    }

    /// One agent of a test: its socket address per component.
    struct Side {
        agent: Agent,
        addr: SocketAddr,
    }

    fn creds(u: &str) -> Credentials {
        Credentials {
            ufrag: u.into(),
            pwd: format!("{u}-password-0123456789abc"),
        }
    }

    /// Two agents on plain addresses (no NAT), `a` controlling.
    fn pair_of_agents(a_addr: &str, b_addr: &str) -> (Side, Side) {
        let (a_addr, b_addr) = (addr(a_addr), addr(b_addr));
        let a_cands = vec![Candidate::host(1, a_addr)];
        let b_cands = vec![Candidate::host(1, b_addr)];
        let a = Agent::new(AgentConfig {
            local: creds("aaaa"),
            remote: creds("bbbb"),
            candidates: a_cands.clone(),
            remote_candidates: b_cands.clone(),
            controlling: true,
            tie_breaker: 7,
            seed: 1,
        });
        let b = Agent::new(AgentConfig {
            local: creds("bbbb"),
            remote: creds("aaaa"),
            candidates: b_cands,
            remote_candidates: a_cands,
            controlling: false,
            tie_breaker: 3,
            seed: 2,
        });
        (
            Side {
                agent: a,
                addr: a_addr,
            },
            Side {
                agent: b,
                addr: b_addr,
            },
        )
    }

    /// Runs both agents for `ms` milliseconds of fake time in 20 ms steps, passing
    /// datagrams through `deliver(from, to) -> bool` (false: lost).
    fn run(
        a: &mut Side,
        b: &mut Side,
        start: Instant,
        ms: u64,
        deliver: &dyn Fn(SocketAddr, SocketAddr) -> bool,
    ) -> Instant {
        let mut now = start;
        for _ in 0..ms / 20 {
            for side in 0..2 {
                let (me, other) = if side == 0 {
                    (&mut *a, &mut *b)
                } else {
                    (&mut *b, &mut *a)
                };
                me.agent.handle_timeout(now);
                while let Some(t) = me.agent.poll_transmit() {
                    if t.to == other.addr && deliver(me.addr, t.to) {
                        assert!(other.agent.handle(now, t.component, me.addr, &t.data));
                    }
                }
            }
            now += Duration::from_millis(20);
        }
        now
    }

    #[test]
    fn two_agents_check_nominate_and_complete() {
        let (mut a, mut b) = pair_of_agents("192.0.2.1:4000", "192.0.2.2:5000");
        let t0 = Instant::now();
        assert_eq!(a.agent.state(), State::Checking);
        assert_eq!(a.agent.selected(1), None);
        run(&mut a, &mut b, t0, 200, &|_, _| true);
        assert_eq!(a.agent.state(), State::Completed);
        assert_eq!(b.agent.state(), State::Completed);
        assert_eq!(a.agent.selected(1), Some(b.addr));
        assert_eq!(b.agent.selected(1), Some(a.addr));
        assert_eq!(b.agent.nominated(1), Some(a.addr));
        assert!(a.agent.is_controlling() && !b.agent.is_controlling());
    }

    #[test]
    fn rtp_is_not_taken_and_bad_checks_are_dropped() {
        let (mut a, mut b) = pair_of_agents("192.0.2.1:4000", "192.0.2.2:5000");
        let now = Instant::now();
        assert!(!a
            .agent
            .handle(now, 1, b.addr, &[0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]));
        // A check signed with the wrong password gets no answer.
        let check = Check {
            username: "aaaa:bbbb".into(),
            priority: 1,
            role: Some(Role::Controlled(3)),
            use_candidate: false,
        };
        let bad = check::encode_request(&[9; 12], &check, b"wrong");
        assert!(a.agent.handle(now, 1, b.addr, &bad));
        assert_eq!(a.agent.poll_transmit(), None);
        // Right password, wrong user name: dropped too.
        let check = Check {
            username: "xxxx:bbbb".into(),
            ..check
        };
        let bad = check::encode_request(&[9; 12], &check, creds("aaaa").pwd.as_bytes());
        assert!(a.agent.handle(now, 1, b.addr, &bad));
        assert_eq!(a.agent.poll_transmit(), None);
        let _ = &mut b;
    }

    #[test]
    fn a_check_from_an_unknown_address_makes_a_peer_reflexive_pair_and_a_triggered_check() {
        let (mut a, mut b) = pair_of_agents("192.0.2.1:4000", "192.0.2.2:5000");
        let now = Instant::now();
        // b's checks come through a NAT: from 198.51.100.7:6000, not its host address.
        let natted = addr("198.51.100.7:6000");
        b.agent.handle_timeout(now);
        let t = b.agent.poll_transmit().unwrap();
        assert!(a.agent.handle(now, 1, natted, &t.data));
        let answer = a.agent.poll_transmit().unwrap();
        assert_eq!(answer.to, natted);
        assert!(check::verify(&answer.data, creds("aaaa").pwd.as_bytes()));
        let id = check::transaction_of(&t.data).unwrap();
        assert_eq!(stun::parse_binding_response(&answer.data, &id), Ok(natted));
        let pairs = a.agent.pairs();
        assert!(
            pairs
                .iter()
                .any(|(c, r, s, _)| *c == 1 && *r == natted && *s == PairState::Waiting),
            "{pairs:?}"
        );
        // The triggered check goes first, to the peer-reflexive address.
        a.agent.handle_timeout(now);
        let first = a.agent.poll_transmit().unwrap();
        assert_eq!(first.to, natted);
        let _ = &mut b;
    }

    #[test]
    fn a_pair_that_never_answers_fails_after_its_retransmissions() {
        let (mut a, mut b) = pair_of_agents("192.0.2.1:4000", "192.0.2.2:5000");
        let t0 = Instant::now();
        let mut sends = 0;
        let mut now = t0;
        for _ in 0..200 {
            a.agent.handle_timeout(now);
            while a.agent.poll_transmit().is_some() {
                sends += 1;
            }
            now += Duration::from_millis(20);
        }
        assert_eq!(sends, MAX_SENDS);
        assert_eq!(a.agent.state(), State::Failed);
        assert_eq!(a.agent.selected(1), None);
        let _ = &mut b;
    }

    #[test]
    fn checks_lost_at_first_then_let_through_still_succeed() {
        // A NAT that drops the far side's first packets until we have sent to it:
        // the retransmissions get through.
        let (mut a, mut b) = pair_of_agents("192.0.2.1:4000", "192.0.2.2:5000");
        let t0 = Instant::now();
        let opened = std::cell::Cell::new(false);
        let now = run(&mut a, &mut b, t0, 60, &|from, _| {
            if from.port() == 5000 {
                opened.set(true);
            }
            opened.get()
        });
        run(&mut a, &mut b, now, 600, &|_, _| true);
        assert_eq!(a.agent.state(), State::Completed);
        assert_eq!(b.agent.state(), State::Completed);
    }

    #[test]
    fn the_controlling_side_waits_for_a_better_pair_then_nominates_the_best_valid() {
        // a has two remote candidates: b's host (higher priority, never answers) and
        // b's server-reflexive address (answers). a nominates the srflx pair after
        // NOMINATION_WAIT, not at once.
        let a_addr = addr("192.0.2.1:4000");
        let b_host = addr("10.0.2.2:5000");
        let b_public = addr("198.51.100.2:5000");
        let mut a = Side {
            agent: Agent::new(AgentConfig {
                local: creds("aaaa"),
                remote: creds("bbbb"),
                candidates: vec![Candidate::host(1, a_addr)],
                remote_candidates: vec![
                    Candidate::host(1, b_host),
                    Candidate::server_reflexive(1, b_public, b_host),
                ],
                controlling: true,
                tie_breaker: 7,
                seed: 1,
            }),
            addr: a_addr,
        };
        let mut b = Side {
            agent: Agent::new(AgentConfig {
                local: creds("bbbb"),
                remote: creds("aaaa"),
                candidates: vec![
                    Candidate::host(1, b_host),
                    Candidate::server_reflexive(1, b_public, b_host),
                ],
                remote_candidates: vec![Candidate::host(1, a_addr)],
                controlling: false,
                tie_breaker: 3,
                seed: 2,
            }),
            addr: b_public,
        };
        let t0 = Instant::now();
        let mut now = t0;
        let mut nominated_at = None;
        for _ in 0..100 {
            a.agent.handle_timeout(now);
            while let Some(t) = a.agent.poll_transmit() {
                if t.to == b_public {
                    b.agent.handle(now, 1, a_addr, &t.data);
                }
            }
            b.agent.handle_timeout(now);
            while let Some(t) = b.agent.poll_transmit() {
                // b sends from its host socket; the NAT makes it b_public.
                a.agent.handle(now, 1, b_public, &t.data);
            }
            if nominated_at.is_none() && a.agent.nominated(1).is_some() {
                nominated_at = Some(now - t0);
            }
            now += Duration::from_millis(20);
        }
        assert_eq!(a.agent.selected(1), Some(b_public));
        assert_eq!(a.agent.nominated(1), Some(b_public));
        assert_eq!(b.agent.nominated(1), Some(a_addr));
        let at = nominated_at.unwrap();
        assert!(at >= NOMINATION_WAIT, "nominated after {at:?}");
        let pairs = a.agent.pairs();
        assert_eq!(pairs[0].1, b_host, "{pairs:?}");
    }

    #[test]
    fn a_role_conflict_is_resolved_by_the_tie_breaker() {
        // Both think they control; b has the bigger tie-breaker and stays
        // controlling, a gets 487 (or switches on b's check) and becomes controlled.
        let (mut a, mut b) = pair_of_agents("192.0.2.1:4000", "192.0.2.2:5000");
        b.agent.controlling = true;
        b.agent.tie_breaker = 1000;
        let t0 = Instant::now();
        run(&mut a, &mut b, t0, 400, &|_, _| true);
        assert!(!a.agent.is_controlling());
        assert!(b.agent.is_controlling());
        assert_eq!(a.agent.state(), State::Completed);
        assert_eq!(b.agent.state(), State::Completed);
    }

    #[test]
    fn a_487_answer_switches_our_role() {
        let (mut a, _b) = pair_of_agents("192.0.2.1:4000", "192.0.2.2:5000");
        let now = Instant::now();
        a.agent.handle_timeout(now);
        let t = a.agent.poll_transmit().unwrap();
        let id = check::transaction_of(&t.data).unwrap();
        let refusal = check::encode_error(&id, 487, "Role Conflict", creds("bbbb").pwd.as_bytes());
        assert!(a.agent.handle(now, 1, t.to, &refusal));
        assert!(!a.agent.is_controlling());
        // The pair is checked again at once, as controlled.
        a.agent.handle_timeout(now + TA);
        let again = a.agent.poll_transmit().unwrap();
        let (_, check) = check::parse_request(&again.data).unwrap();
        assert_eq!(check.role, Some(Role::Controlled(7)));
        assert!(!check.use_candidate);
    }

    #[test]
    fn use_candidate_before_our_check_succeeded_nominates_on_success() {
        let (mut a, mut b) = pair_of_agents("192.0.2.1:4000", "192.0.2.2:5000");
        let now = Instant::now();
        // a (controlling) nominates right away on a pair b has not validated.
        a.agent.send_check(now, 0, true);
        let t = a.agent.poll_transmit().unwrap();
        assert!(b.agent.handle(now, 1, a.addr, &t.data));
        let _answer = b.agent.poll_transmit().unwrap();
        assert_eq!(b.agent.nominated(1), None);
        b.agent.handle_timeout(now);
        let check = b.agent.poll_transmit().unwrap();
        assert!(a.agent.handle(now, 1, b.addr, &check.data));
        let answer = a.agent.poll_transmit().unwrap();
        assert!(b.agent.handle(now, 1, a.addr, &answer.data));
        assert_eq!(b.agent.nominated(1), Some(a.addr));
        assert_eq!(b.agent.state(), State::Completed);
    }

    #[test]
    fn frozen_pairs_wait_for_their_foundation() {
        // Two components: the RTCP pair of the same foundation stays frozen until
        // the RTP pair succeeds.
        let a_rtp = addr("192.0.2.1:4000");
        let a_rtcp = addr("192.0.2.1:4001");
        let b = |p: u16| Candidate::host(p - 4999, addr(&format!("192.0.2.2:{p}")));
        let agent = Agent::new(AgentConfig {
            local: creds("aaaa"),
            remote: creds("bbbb"),
            candidates: vec![Candidate::host(1, a_rtp), Candidate::host(2, a_rtcp)],
            remote_candidates: vec![b(5000), b(5001)],
            controlling: true,
            tie_breaker: 7,
            seed: 1,
        });
        let states: Vec<(u16, PairState)> = agent.pairs().iter().map(|p| (p.0, p.2)).collect();
        assert!(states.contains(&(1, PairState::Waiting)), "{states:?}");
        assert!(states.contains(&(2, PairState::Frozen)), "{states:?}");
    }

    #[test]
    fn the_completed_agent_keeps_the_pair_open() {
        let (mut a, mut b) = pair_of_agents("192.0.2.1:4000", "192.0.2.2:5000");
        let t0 = Instant::now();
        let now = run(&mut a, &mut b, t0, 200, &|_, _| true);
        a.agent.handle_timeout(now);
        while a.agent.poll_transmit().is_some() {}
        a.agent
            .handle_timeout(now + KEEPALIVE + Duration::from_millis(1));
        let k = a.agent.poll_transmit().unwrap();
        assert_eq!(check::kind(&k.data), Some(Kind::Indication));
        assert!(b.agent.handle(now, 1, a.addr, &k.data));
        assert_eq!(b.agent.poll_transmit(), None);
    }
}
