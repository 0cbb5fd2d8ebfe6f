//! The typed, read-only view of microsip.ini: `[Settings]`, the accounts, and the problems found.
//!
//! A bad value never stops loading: it becomes a [`ConfigProblem`] and the key takes
//! its default. Changes are written through [`crate::IniDocument::set`] so the rest of
//! the file stays as it is.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::ini::{redact, same_name, IniDocument, IniProblem};

/// The `[Settings]` section name.
pub const SETTINGS: &str = "Settings";

/// The User-Agent sent when the ini does not name one.
pub const DEFAULT_USER_AGENT: &str = concat!("MicroSIP-Linux/", env!("CARGO_PKG_VERSION"));

/// The section name of account `n`: `Account1`.
pub fn account_section(n: u32) -> String {
    format!("Account{n}")
}

/// What the phone writes on first run when the ini does not exist: `[Settings]
/// accountId=0` and a local "call by IP" `[Account0]`.
pub fn default_document() -> IniDocument {
    const TEXT: &str =
        "[Settings]\naccountId=0\n\n[Account0]\nlabel=Local\ndomain=127.0.0.1\nusername=microsip\n";
    IniDocument::parse(TEXT.as_bytes()).0
}

/// A value the phone could not use, or a line it could not understand.
#[derive(Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The ini file.
    pub path: PathBuf,
    /// 1-based line number; 0 when the problem is about the file as a whole.
    pub line: usize,
    /// The section (empty: outside any section).
    pub section: String,
    /// The key (empty: the problem is about a whole line or section).
    pub key: String,
    /// The value found (or the line's text when `key` is empty).
    pub value: String,
    /// What is allowed / what is wrong.
    pub allowed: String,
    /// The value used instead, if any, as it should be shown.
    pub using: Option<String>,
}

impl ConfigProblem {
    fn from_ini(path: &Path, p: &IniProblem) -> Self {
        ConfigProblem {
            path: path.to_path_buf(),
            line: p.line,
            section: p.section.clone().unwrap_or_default(),
            key: String::new(),
            value: p.text.clone(),
            allowed: p.message.clone(),
            using: None,
        }
    }
}

/// `microsip.ini:12: [Account1] registerRefresh="abc": expected a whole number of
/// seconds, at least 10 (using 300)`. Password values are shown as `***`.
impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        f.write_str(": ")?;
        let value = redact(&self.key, &self.value);
        let mut head = Vec::new();
        if !self.section.is_empty() {
            head.push(format!("[{}]", self.section));
        }
        if !self.key.is_empty() {
            head.push(format!("{}=\"{value}\"", self.key));
        } else if !self.value.is_empty() {
            head.push(format!("\"{value}\""));
        }
        if !head.is_empty() {
            write!(f, "{}: ", head.join(" "))?;
        }
        f.write_str(&self.allowed)?;
        if let Some(using) = &self.using {
            write!(f, " (using {using})")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConfigProblem({self})")
    }
}

/// An enum stored in the ini as one of a fixed set of words.
trait Word: Copy + Default + 'static {
    const ALLOWED: &'static str;
    fn from_word(s: &str) -> Option<Self>;
    fn as_word(self) -> &'static str;
}

macro_rules! word_enum {
    (
        $(#[$meta:meta])*
        $name:ident, allowed $allowed:literal {
            $($(#[$vmeta:meta])* $variant:ident = $word:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in the order of the documentation.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The word written in the ini.
            pub(crate) fn as_word(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)+
                }
            }

            /// The value for an ini word (case-insensitive), if it is one.
            pub(crate) fn from_word(s: &str) -> Option<Self> {
                $(if s.eq_ignore_ascii_case($word) {
                    return Some($name::$variant);
                })+
                None
            }
        }

        impl Word for $name {
            const ALLOWED: &'static str = $allowed;
            fn from_word(s: &str) -> Option<Self> {
                $name::from_word(s)
            }
            fn as_word(self) -> &'static str {
                $name::as_word(self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_word())
            }
        }
    };
}

word_enum! {
    /// `transport`: the SIP transport of an account.
    Transport, allowed "expected udp, tcp, tls, or empty for UDP and TCP" {
        /// UDP only.
        #[default]
        Udp = "udp",
        /// TCP only.
        Tcp = "tcp",
        /// TLS.
        Tls = "tls",
        /// `transport=` (empty): UDP and TCP.
        UdpTcp = "",
    }
}

word_enum! {
    /// `SRTP`: media encryption, SRTP keyed by SDES (`a=crypto`). `dtls` calls are
    /// refused (DTLS-SRTP is not supported); `dtls-sdes` works as `mandatory`.
    Srtp, allowed "expected empty (off), optional, mandatory, dtls or dtls-sdes" {
        /// No media encryption.
        #[default]
        Disabled = "",
        /// SRTP (SDES keys) offered in `RTP/AVP`; clear RTP with a peer without it.
        Optional = "optional",
        /// SRTP (SDES keys) required.
        Mandatory = "mandatory",
        /// SRTP keyed by DTLS: not supported, the account's calls are refused.
        Dtls = "dtls",
        /// SRTP keyed by DTLS or SDES: SDES only, as `Mandatory`.
        DtlsSdes = "dtls-sdes",
    }
}

word_enum! {
    /// `DTMFMethod`.
    DtmfMethod, allowed "expected 0 (auto), 1 (in-band), 2 (RFC 4733) or 3 (SIP INFO)" {
        /// RFC 4733 if the remote side offers it, else in-band.
        #[default]
        Auto = "0",
        /// Tones in the audio.
        InBand = "1",
        /// RFC 4733 telephone-event packets.
        Rfc4733 = "2",
        /// SIP INFO requests.
        SipInfo = "3",
    }
}

word_enum! {
    /// `autoAnswer`.
    AutoAnswer, allowed "expected empty (off), button, header or all" {
        /// Never auto-answer.
        Off = "",
        /// Auto-answer when switched on by the user (button / `--autoanswer 1`).
        #[default]
        Button = "button",
        /// When the INVITE asks for it (`X-AUTOANSWER: true`, `Call-Info: ...;answer-after=N`).
        Header = "header",
        /// Every incoming call, after `autoAnswerDelay`.
        All = "all",
    }
}

word_enum! {
    /// `autoAnswerCalls`: when auto-answer may apply.
    AutoAnswerCalls, allowed "expected empty (only when idle), hold or all" {
        /// Only when there is no other call.
        #[default]
        Idle = "",
        /// Also when every other call is on hold.
        Hold = "hold",
        /// Whatever other calls there are.
        All = "all",
    }
}

word_enum! {
    /// `denyIncoming`.
    DenyIncoming, allowed "expected empty (off), button, user, domain, userdomain, remotedomain or all" {
        /// Refuse nothing.
        Off = "",
        /// MicroSIP's window button; refuses nothing here (no window).
        #[default]
        Button = "button",
        /// Refuse calls to a user other than the account's.
        User = "user",
        /// Refuse calls to a domain other than the account's.
        Domain = "domain",
        /// Refuse calls to another user or another domain.
        UserDomain = "userdomain",
        /// Refuse callers from a domain other than the account's.
        RemoteDomain = "remotedomain",
        /// Refuse every incoming call.
        All = "all",
    }
}

word_enum! {
    /// `forwarding`.
    Forwarding, allowed "expected empty (off), button or all" {
        /// No forwarding.
        #[default]
        Off = "",
        /// MicroSIP's window button; forwards nothing here (no window).
        Button = "button",
        /// Forward every incoming call to `forwardingNumber`.
        All = "all",
    }
}

word_enum! {
    /// `recordingFormat`.
    RecordingFormat, allowed "expected wav or mp3" {
        /// WAV files.
        #[default]
        Wav = "wav",
        /// MP3 files (not encoded here: recorded as WAV).
        Mp3 = "mp3",
    }
}

/// One entry of `audioCodecs`: `name/clock/channels`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioCodec {
    /// The codec's name as in SDP, e.g. `PCMA`, `opus`.
    pub name: String,
    /// The RTP clock rate, Hz (e.g. 8000).
    pub clock_rate: u32,
    /// The number of channels (1 when left out).
    pub channels: u32,
}

impl AudioCodec {
    /// Parses `PCMA/8000/1` (channels may be left out: 1).
    pub fn parse(s: &str) -> Option<AudioCodec> {
        let mut parts = s.split('/');
        let name = parts.next().filter(|n| !n.is_empty())?;
        let clock_rate = parts.next()?.parse().ok().filter(|&c: &u32| c > 0)?;
        let channels = match parts.next() {
            Some(c) => c.parse().ok().filter(|c: &u32| (1..=8).contains(c))?,
            None => 1,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(AudioCodec {
            name: name.to_owned(),
            clock_rate,
            channels,
        })
    }
}

impl fmt::Display for AudioCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.name, self.clock_rate, self.channels)
    }
}

const DEFAULT_CODECS: &str = "PCMA/8000/1 PCMU/8000/1";

fn default_codecs() -> Vec<AudioCodec> {
    DEFAULT_CODECS
        .split_whitespace()
        .filter_map(AudioCodec::parse)
        .collect()
}

/// The event hooks (`cmd*` keys): the command to run, if set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    /// `cmdIncomingCall`
    pub incoming_call: Option<String>,
    /// `cmdCallRing`
    pub call_ring: Option<String>,
    /// `cmdOutgoingCall`
    pub outgoing_call: Option<String>,
    /// `cmdCallAnswer`
    pub call_answer: Option<String>,
    /// `cmdCallAnswerVideo`
    pub call_answer_video: Option<String>,
    /// `cmdCallStart`
    pub call_start: Option<String>,
    /// `cmdCallBusy`
    pub call_busy: Option<String>,
    /// `cmdCallEnd`
    pub call_end: Option<String>,
}

/// `[Settings]`, typed. Field docs name the ini key; text fields are `None` when
/// the key is missing or empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `accountId`: the active account (0: the local account). Default 1, or 0 when
    /// there is no `[Account1]`.
    pub account_id: u32,
    /// `sourcePort`: local SIP port, 0 any.
    pub source_port: u16,
    /// `rtpPortMin`: `None` any (0 or missing).
    pub rtp_port_min: Option<u16>,
    /// `rtpPortMax`: `None` any (0 or missing).
    pub rtp_port_max: Option<u16>,
    /// `rport`
    pub rport: bool,
    /// `STUN`: servers (split on `;`, `,` and blanks).
    pub stun: Vec<String>,
    /// `enableSTUN`
    pub enable_stun: bool,
    /// `dnsSrv`
    pub dns_srv: bool,
    /// `dnsSrvNs`: name servers (split on `;`, `,` and blanks).
    pub dns_srv_ns: Vec<String>,
    /// `userAgent` (empty: [`DEFAULT_USER_AGENT`]).
    pub user_agent: String,
    /// `audioCodecs` in priority order.
    pub audio_codecs: Vec<AudioCodec>,
    /// `forceCodec`
    pub force_codec: bool,
    /// `opusStereo`
    pub opus_stereo: bool,
    /// `VAD`
    pub vad: bool,
    /// `EC`
    pub ec: bool,
    /// `audioInputDevice` (`None`: default device)
    pub audio_input_device: Option<String>,
    /// `audioOutputDevice`
    pub audio_output_device: Option<String>,
    /// `audioRingDevice`
    pub audio_ring_device: Option<String>,
    /// `volumeOutput` 0–100
    pub volume_output: u8,
    /// `volumeInput` 0–100
    pub volume_input: u8,
    /// `volumeRing` 0–100
    pub volume_ring: u8,
    /// `micAmplification`
    pub mic_amplification: bool,
    /// `swLevelAdjustment`
    pub sw_level_adjustment: bool,
    /// `ringingSound` (`None`: built-in)
    pub ringing_sound: Option<String>,
    /// `DTMFMethod`
    pub dtmf_method: DtmfMethod,
    /// `localDTMF`
    pub local_dtmf: bool,
    /// `autoAnswer`
    pub auto_answer: AutoAnswer,
    /// `autoAnswerDelay`, seconds
    pub auto_answer_delay: u32,
    /// `autoAnswerNumber`: masks (split on `;` and `|`), `*`/`?` wildcards.
    pub auto_answer_number: Vec<String>,
    /// `autoAnswerCalls`
    pub auto_answer_calls: AutoAnswerCalls,
    /// `denyIncoming`
    pub deny_incoming: DenyIncoming,
    /// `DND`
    pub dnd: bool,
    /// `forwarding`
    pub forwarding: Forwarding,
    /// `forwardingNumber`
    pub forwarding_number: Option<String>,
    /// `forwardingDelay`, seconds (0: immediate 302)
    pub forwarding_delay: u32,
    /// `callWaiting`
    pub call_waiting: bool,
    /// `maxConcurrentCalls` (`None`: no limit; 0 is read as no limit)
    pub max_concurrent_calls: Option<u32>,
    /// `autoHangUpTime`, seconds, 0 off
    pub auto_hang_up_time: u32,
    /// `recordingPath` (relative: to the ini's folder, see [`Config::recording_dir`])
    pub recording_path: String,
    /// `recordingFormat`
    pub recording_format: RecordingFormat,
    /// `autoRecording`
    pub auto_recording: bool,
    /// `featureCodeCP`: call pickup
    pub feature_code_cp: String,
    /// `enableFeatureCodeCP`
    pub enable_feature_code_cp: bool,
    /// `featureCodeBT`: blind transfer
    pub feature_code_bt: String,
    /// `enableFeatureCodeBT`
    pub enable_feature_code_bt: bool,
    /// `featureCodeAT`: attended transfer
    pub feature_code_at: String,
    /// `enableFeatureCodeAT`
    pub enable_feature_code_at: bool,
    /// `disableMessaging`
    pub disable_messaging: bool,
    /// `cmd*`
    pub hooks: Hooks,
    /// `enableLog`
    pub enable_log: bool,
    /// `minimized`
    pub minimized: bool,
    /// `lastCallNumber` (kept by the phone)
    pub last_call_number: Option<String>,
    /// `callsLastKey` (kept by the phone)
    pub calls_last_key: Option<u32>,
    /// `version` (kept by the phone)
    pub version: Option<String>,
    /// `statusDisconnectedTime` (not a MicroSIP key): how long, in milliseconds, the
    /// numeric STATUS keeps saying 4 after a call ends.
    pub status_disconnected_ms: u32,
    /// `sessionTimerMin` (not a MicroSIP key): our Min-SE, in seconds (RFC 4028). A
    /// peer's Session-Expires below it is answered 422 with `Min-SE`. RFC 4028's
    /// floor is 90 (the default); lower values are for tests with short timers.
    pub session_timer_min: u32,
    /// `httpPort` (not a MicroSIP key): the HTTP + WebSocket API's port on 127.0.0.1;
    /// 0 (the default): off.
    pub http_port: u16,
    /// `httpAllowOrigins` (not a MicroSIP key): the web origins allowed to call the
    /// HTTP API from a browser (CORS), separated by spaces or commas.
    pub http_allow_origins: Vec<String>,
    /// `dbus` (not a MicroSIP key): serve the D-Bus interface on the session bus when
    /// one is reachable; 0 turns it (and the desktop notifications) off.
    pub dbus: bool,
    /// `notifications` (not a MicroSIP key): a desktop notification with Answer and
    /// Decline for an incoming call (needs D-Bus and a notification server).
    pub notifications: bool,
    /// `tlsCaFile` (not a MicroSIP key): a PEM file of CA certificates trusted for
    /// TLS servers besides the system roots; an account's own `tlsCaFile` wins.
    pub tls_ca_file: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            account_id: 1,
            source_port: 0,
            rtp_port_min: None,
            rtp_port_max: None,
            rport: true,
            stun: Vec::new(),
            enable_stun: false,
            dns_srv: false,
            dns_srv_ns: Vec::new(),
            user_agent: DEFAULT_USER_AGENT.to_owned(),
            audio_codecs: default_codecs(),
            force_codec: false,
            opus_stereo: false,
            vad: false,
            ec: true,
            audio_input_device: None,
            audio_output_device: None,
            audio_ring_device: None,
            volume_output: 100,
            volume_input: 100,
            volume_ring: 100,
            mic_amplification: false,
            sw_level_adjustment: false,
            ringing_sound: None,
            dtmf_method: DtmfMethod::Auto,
            local_dtmf: true,
            auto_answer: AutoAnswer::Button,
            auto_answer_delay: 0,
            auto_answer_number: Vec::new(),
            auto_answer_calls: AutoAnswerCalls::Idle,
            deny_incoming: DenyIncoming::Button,
            dnd: false,
            forwarding: Forwarding::Off,
            forwarding_number: None,
            forwarding_delay: 0,
            call_waiting: true,
            max_concurrent_calls: None,
            auto_hang_up_time: 0,
            recording_path: "Recordings".to_owned(),
            recording_format: RecordingFormat::Wav,
            auto_recording: false,
            feature_code_cp: "**".to_owned(),
            enable_feature_code_cp: false,
            feature_code_bt: "##".to_owned(),
            enable_feature_code_bt: false,
            feature_code_at: "*2".to_owned(),
            enable_feature_code_at: false,
            disable_messaging: false,
            hooks: Hooks::default(),
            enable_log: false,
            minimized: false,
            last_call_number: None,
            calls_last_key: None,
            version: None,
            status_disconnected_ms: 2000,
            session_timer_min: 90,
            http_port: 0,
            http_allow_origins: Vec::new(),
            dbus: true,
            notifications: true,
            tls_ca_file: None,
        }
    }
}

/// One `[AccountN]` section, typed. Text fields are `None` when missing or empty.
/// `Debug` shows the password as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    /// N of `[AccountN]` (0: the local account).
    pub number: u32,
    /// False when the account cannot work (no `domain`); see `inactive_reason`.
    pub active: bool,
    /// Why the account is inactive.
    pub inactive_reason: Option<String>,
    /// `label`
    pub label: Option<String>,
    /// `server`: registrar `host[:port]`; `None`: do not register.
    pub server: Option<String>,
    /// `proxy`: outbound proxies (space separated).
    pub proxy: Vec<String>,
    /// `domain` (required; empty when missing and the account is inactive).
    pub domain: String,
    /// `username`
    pub username: Option<String>,
    /// `password` (plain text).
    pub password: Option<String>,
    /// `authID`
    pub auth_id: Option<String>,
    /// `displayName`
    pub display_name: Option<String>,
    /// `dialingPrefix`
    pub dialing_prefix: Option<String>,
    /// `dialPlan`
    pub dial_plan: Option<String>,
    /// `hideCID`
    pub hide_cid: bool,
    /// `voicemailNumber` (set: subscribe to MWI)
    pub voicemail_number: Option<String>,
    /// `SRTP`
    pub srtp: Srtp,
    /// `transport` (missing: udp; empty: UDP and TCP)
    pub transport: Transport,
    /// `publicAddr`
    pub public_addr: Option<String>,
    /// `registerRefresh`, seconds (≥ 10)
    pub register_refresh: u32,
    /// `keepAlive`, seconds (0: off)
    pub keep_alive: u32,
    /// `publish`
    pub publish: bool,
    /// `ICE`
    pub ice: bool,
    /// `allowRewrite`
    pub allow_rewrite: bool,
    /// `disableSessionTimer`
    pub disable_session_timer: bool,
    /// `tlsCaFile` of this account (not a MicroSIP key): overrides `[Settings]
    /// tlsCaFile` for this account's TLS connections.
    pub tls_ca_file: Option<String>,
}

impl Account {
    /// The authentication user: `authID`, else `username`.
    pub fn auth_user(&self) -> Option<&str> {
        self.auth_id.as_deref().or(self.username.as_deref())
    }

    /// The ini section of this account: `Account1`.
    pub fn section(&self) -> String {
        account_section(self.number)
    }
}

struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("number", &self.number)
            .field("active", &self.active)
            .field("inactive_reason", &self.inactive_reason)
            .field("label", &self.label)
            .field("server", &self.server)
            .field("proxy", &self.proxy)
            .field("domain", &self.domain)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| Redacted))
            .field("auth_id", &self.auth_id)
            .field("display_name", &self.display_name)
            .field("dialing_prefix", &self.dialing_prefix)
            .field("dial_plan", &self.dial_plan)
            .field("hide_cid", &self.hide_cid)
            .field("voicemail_number", &self.voicemail_number)
            .field("srtp", &self.srtp)
            .field("transport", &self.transport)
            .field("public_addr", &self.public_addr)
            .field("register_refresh", &self.register_refresh)
            .field("keep_alive", &self.keep_alive)
            .field("publish", &self.publish)
            .field("ice", &self.ice)
            .field("allow_rewrite", &self.allow_rewrite)
            .field("disable_session_timer", &self.disable_session_timer)
            .field("tls_ca_file", &self.tls_ca_file)
            .finish()
    }
}

/// Everything the phone reads from microsip.ini. Read-only: write changes with
/// [`crate::IniDocument::set`] / [`crate::IniFile`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The ini file the values came from.
    pub path: PathBuf,
    /// The `[Settings]` section, typed.
    pub settings: Settings,
    /// Index = account number. `accounts[0]` is `[Account0]`, or the built-in local
    /// account of [`default_document`] when the file has none; then `[Account1]`… up
    /// to the first gap.
    pub accounts: Vec<Account>,
    /// Everything that was not right, in line order.
    pub problems: Vec<ConfigProblem>,
}

impl Config {
    /// Builds the typed view. Never fails; see `problems`.
    pub fn from_document(doc: &IniDocument, path: impl AsRef<Path>) -> Config {
        let path = path.as_ref();
        let mut problems = Vec::new();
        let ini_problems = doc.problems();
        problems.extend(
            ini_problems
                .iter()
                .map(|p| ConfigProblem::from_ini(path, p)),
        );

        let mut settings = read_settings(&mut Reader::new(doc, path, SETTINGS, &mut problems));

        let mut accounts = Vec::new();
        accounts.push(if doc.has_section(&account_section(0)) {
            read_account(doc, path, 0, &mut problems)
        } else {
            read_account(&default_document(), path, 0, &mut Vec::new())
        });
        let mut n = 1;
        while doc.has_section(&account_section(n)) {
            accounts.push(read_account(doc, path, n, &mut problems));
            n += 1;
        }
        // Numbered sections after the gap are ignored: say so.
        for name in doc.sections() {
            let Some(m) = account_number(name) else {
                continue;
            };
            if m > n {
                problems.push(ConfigProblem {
                    path: path.to_path_buf(),
                    line: doc.section_line(name).unwrap_or(0),
                    section: name.to_owned(),
                    key: String::new(),
                    value: String::new(),
                    allowed: format!(
                        "ignored: accounts are numbered 1, 2, 3… without gaps and [{}] is missing",
                        account_section(n)
                    ),
                    using: None,
                });
            }
        }

        // accountId must name an account that exists.
        if settings.account_id as usize >= accounts.len() {
            let fallback = if accounts.len() > 1 { 1 } else { 0 };
            if let Some((value, line)) = doc.get_with_line(SETTINGS, "accountId") {
                if !value.is_empty() {
                    problems.push(ConfigProblem {
                        path: path.to_path_buf(),
                        line,
                        section: SETTINGS.to_owned(),
                        key: "accountId".to_owned(),
                        value: value.to_owned(),
                        allowed: format!(
                            "expected the number of an account in this file: 0 (local) to {}",
                            accounts.len() - 1
                        ),
                        using: Some(fallback.to_string()),
                    });
                }
            }
            settings.account_id = fallback;
        }

        problems.sort_by_key(|p| p.line);
        Config {
            path: path.to_path_buf(),
            settings,
            accounts,
            problems,
        }
    }

    /// Account `n`, if it exists.
    pub fn account(&self, n: u32) -> Option<&Account> {
        self.accounts.get(n as usize)
    }

    /// The account `accountId` names.
    pub fn active_account(&self) -> Option<&Account> {
        self.account(self.settings.account_id)
    }

    /// The folder for recordings: `recordingPath`, relative to the ini's folder when
    /// it is not absolute.
    pub fn recording_dir(&self) -> PathBuf {
        let p = Path::new(&self.settings.recording_path);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.path
                .parent()
                .map_or_else(|| p.to_path_buf(), |dir| dir.join(p))
        }
    }
}

/// N of a section named `AccountN` (exact spelling of N, any case of "Account").
fn account_number(section: &str) -> Option<u32> {
    let digits = section.get(7..)?;
    if !same_name(section.get(..7)?, "Account") {
        return None;
    }
    let n: u32 = digits.parse().ok()?;
    (account_section(n).get(7..) == Some(digits)).then_some(n)
}

/// Reads keys of one section, turning bad values into problems.
struct Reader<'a> {
    doc: &'a IniDocument,
    path: &'a Path,
    section: &'a str,
    problems: &'a mut Vec<ConfigProblem>,
}

impl<'a> Reader<'a> {
    fn new(
        doc: &'a IniDocument,
        path: &'a Path,
        section: &'a str,
        problems: &'a mut Vec<ConfigProblem>,
    ) -> Self {
        Reader {
            doc,
            path,
            section,
            problems,
        }
    }

    fn raw(&self, key: &str) -> Option<(&'a str, usize)> {
        self.doc.get_with_line(self.section, key)
    }

    /// The line of `key`, or of the section header when the key is missing.
    fn line(&self, key: &str) -> usize {
        self.raw(key)
            .map(|(_, l)| l)
            .or_else(|| self.doc.section_line(self.section))
            .unwrap_or(0)
    }

    fn report(&mut self, key: &str, value: &str, allowed: String, using: Option<String>) {
        let line = self.line(key);
        self.problems.push(ConfigProblem {
            path: self.path.to_path_buf(),
            line,
            section: self.section.to_owned(),
            key: key.to_owned(),
            value: value.to_owned(),
            allowed,
            using,
        });
    }

    /// The value, `None` when missing or empty.
    fn text(&self, key: &str) -> Option<String> {
        self.raw(key)
            .map(|(v, _)| v)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    }

    fn string(&self, key: &str, default: &str) -> String {
        self.text(key).unwrap_or_else(|| default.to_owned())
    }

    fn list(&self, key: &str, separators: &[char]) -> Vec<String> {
        self.text(key)
            .map(|v| {
                v.split(|c: char| separators.contains(&c))
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn flag(&mut self, key: &str, default: bool) -> bool {
        match self.raw(key) {
            None | Some(("", _)) => default,
            Some(("0", _)) => false,
            Some(("1", _)) => true,
            Some((v, _)) => {
                self.report(
                    key,
                    v,
                    "expected 0 or 1".into(),
                    Some(u8::from(default).to_string()),
                );
                default
            }
        }
    }

    /// A whole number in `min..=max`; `what` completes "expected ...".
    fn number(&mut self, key: &str, default: u64, min: u64, max: u64, what: &str) -> u64 {
        match self.raw(key) {
            None | Some(("", _)) => default,
            Some((v, _)) => match v.parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => n,
                _ => {
                    self.report(
                        key,
                        v,
                        format!("expected {what}"),
                        Some(default.to_string()),
                    );
                    default
                }
            },
        }
    }

    fn seconds(&mut self, key: &str, default: u32) -> u32 {
        self.number(
            key,
            default.into(),
            0,
            u32::MAX.into(),
            "a whole number of seconds",
        ) as u32
    }

    fn percent(&mut self, key: &str, default: u8) -> u8 {
        self.number(key, default.into(), 0, 100, "a whole number from 0 to 100") as u8
    }

    /// A port, 0 meaning any (→ `None`).
    fn port(&mut self, key: &str) -> Option<u16> {
        let n = self.number(
            key,
            0,
            0,
            65535,
            "a port number from 1 to 65535, or 0 for any",
        );
        u16::try_from(n).ok().filter(|&p| p != 0)
    }

    fn word<E: Word>(&mut self, key: &str) -> E {
        let Some((v, _)) = self.raw(key) else {
            return E::default();
        };
        match E::from_word(v) {
            Some(w) => w,
            None if v.is_empty() => E::default(),
            None => {
                let default = E::default();
                self.report(
                    key,
                    v,
                    E::ALLOWED.to_owned(),
                    Some(format!("\"{}\"", default.as_word())),
                );
                default
            }
        }
    }
}

fn read_settings(r: &mut Reader<'_>) -> Settings {
    let d = Settings::default();
    let mut rtp_port_min = r.port("rtpPortMin");
    let mut rtp_port_max = r.port("rtpPortMax");
    if let (Some(min), Some(max)) = (rtp_port_min, rtp_port_max) {
        if min > max {
            let v = max.to_string();
            r.report(
                "rtpPortMax",
                &v,
                format!("expected a port not below rtpPortMin ({min})"),
                Some("any port".into()),
            );
            rtp_port_min = None;
            rtp_port_max = None;
        }
    }
    let audio_codecs = match r.raw("audioCodecs") {
        None | Some(("", _)) => d.audio_codecs.clone(),
        Some((v, _)) => {
            let (good, bad): (Vec<_>, Vec<_>) = v
                .split_whitespace()
                .map(|c| (c, AudioCodec::parse(c)))
                .partition(|(_, p)| p.is_some());
            let good: Vec<AudioCodec> = good.into_iter().filter_map(|(_, p)| p).collect();
            let codecs = if good.is_empty() {
                d.audio_codecs.clone()
            } else {
                good
            };
            if !bad.is_empty() {
                let bad: Vec<&str> = bad.into_iter().map(|(c, _)| c).collect();
                let using: Vec<String> = codecs.iter().map(|c| c.to_string()).collect();
                r.report(
                    "audioCodecs",
                    v,
                    format!(
                        "expected codecs as name/clock/channels separated by spaces, like \
                         \"{DEFAULT_CODECS}\"; not understood: {}",
                        bad.join(" ")
                    ),
                    Some(format!("\"{}\"", using.join(" "))),
                );
            }
            codecs
        }
    };
    let max_calls = r.number(
        "maxConcurrentCalls",
        0,
        0,
        u32::MAX.into(),
        "a whole number of calls (0: no limit)",
    ) as u32;
    let calls_last_key = match r.raw("callsLastKey") {
        None | Some(("", _)) => None,
        Some(_) => Some(r.number("callsLastKey", 0, 0, u32::MAX.into(), "a whole number") as u32),
    };
    let list_separators: &[char] = &[';', ',', ' ', '\t'];
    Settings {
        account_id: r.number(
            "accountId",
            d.account_id.into(),
            0,
            u32::MAX.into(),
            "an account number (0: the local account)",
        ) as u32,
        source_port: r.number(
            "sourcePort",
            0,
            0,
            65535,
            "a port number from 1 to 65535, or 0 for any",
        ) as u16,
        rtp_port_min,
        rtp_port_max,
        rport: r.flag("rport", d.rport),
        stun: r.list("STUN", list_separators),
        enable_stun: r.flag("enableSTUN", d.enable_stun),
        dns_srv: r.flag("dnsSrv", d.dns_srv),
        dns_srv_ns: r.list("dnsSrvNs", list_separators),
        user_agent: r.string("userAgent", &d.user_agent),
        audio_codecs,
        force_codec: r.flag("forceCodec", d.force_codec),
        opus_stereo: r.flag("opusStereo", d.opus_stereo),
        vad: r.flag("VAD", d.vad),
        ec: r.flag("EC", d.ec),
        audio_input_device: r.text("audioInputDevice"),
        audio_output_device: r.text("audioOutputDevice"),
        audio_ring_device: r.text("audioRingDevice"),
        volume_output: r.percent("volumeOutput", d.volume_output),
        volume_input: r.percent("volumeInput", d.volume_input),
        volume_ring: r.percent("volumeRing", d.volume_ring),
        mic_amplification: r.flag("micAmplification", d.mic_amplification),
        sw_level_adjustment: r.flag("swLevelAdjustment", d.sw_level_adjustment),
        ringing_sound: r.text("ringingSound"),
        dtmf_method: r.word("DTMFMethod"),
        local_dtmf: r.flag("localDTMF", d.local_dtmf),
        auto_answer: r.word("autoAnswer"),
        auto_answer_delay: r.seconds("autoAnswerDelay", d.auto_answer_delay),
        auto_answer_number: r.list("autoAnswerNumber", &[';', '|']),
        auto_answer_calls: r.word("autoAnswerCalls"),
        deny_incoming: r.word("denyIncoming"),
        dnd: r.flag("DND", d.dnd),
        forwarding: r.word("forwarding"),
        forwarding_number: r.text("forwardingNumber"),
        forwarding_delay: r.seconds("forwardingDelay", d.forwarding_delay),
        call_waiting: r.flag("callWaiting", d.call_waiting),
        max_concurrent_calls: (max_calls > 0).then_some(max_calls),
        auto_hang_up_time: r.seconds("autoHangUpTime", d.auto_hang_up_time),
        recording_path: r.string("recordingPath", &d.recording_path),
        recording_format: r.word("recordingFormat"),
        auto_recording: r.flag("autoRecording", d.auto_recording),
        feature_code_cp: r.string("featureCodeCP", &d.feature_code_cp),
        enable_feature_code_cp: r.flag("enableFeatureCodeCP", d.enable_feature_code_cp),
        feature_code_bt: r.string("featureCodeBT", &d.feature_code_bt),
        enable_feature_code_bt: r.flag("enableFeatureCodeBT", d.enable_feature_code_bt),
        feature_code_at: r.string("featureCodeAT", &d.feature_code_at),
        enable_feature_code_at: r.flag("enableFeatureCodeAT", d.enable_feature_code_at),
        disable_messaging: r.flag("disableMessaging", d.disable_messaging),
        hooks: Hooks {
            incoming_call: r.text("cmdIncomingCall"),
            call_ring: r.text("cmdCallRing"),
            outgoing_call: r.text("cmdOutgoingCall"),
            call_answer: r.text("cmdCallAnswer"),
            call_answer_video: r.text("cmdCallAnswerVideo"),
            call_start: r.text("cmdCallStart"),
            call_busy: r.text("cmdCallBusy"),
            call_end: r.text("cmdCallEnd"),
        },
        enable_log: r.flag("enableLog", d.enable_log),
        minimized: r.flag("minimized", d.minimized),
        last_call_number: r.text("lastCallNumber"),
        calls_last_key,
        version: r.text("version"),
        status_disconnected_ms: r.number(
            "statusDisconnectedTime",
            d.status_disconnected_ms.into(),
            0,
            u32::MAX.into(),
            "a whole number of milliseconds",
        ) as u32,
        session_timer_min: r.number(
            "sessionTimerMin",
            d.session_timer_min.into(),
            2,
            86_400,
            "a whole number of seconds from 2 to 86400",
        ) as u32,
        http_port: r.number(
            "httpPort",
            0,
            0,
            65535,
            "a port number from 1 to 65535, or 0 for off",
        ) as u16,
        http_allow_origins: r.list("httpAllowOrigins", &[',', ' ', '\t']),
        dbus: r.flag("dbus", d.dbus),
        notifications: r.flag("notifications", d.notifications),
        tls_ca_file: r.text("tlsCaFile"),
    }
}

fn read_account(
    doc: &IniDocument,
    path: &Path,
    number: u32,
    problems: &mut Vec<ConfigProblem>,
) -> Account {
    let section = account_section(number);
    let mut r = Reader::new(doc, path, &section, problems);
    let domain = r.text("domain");
    let (active, inactive_reason) = match &domain {
        Some(_) => (true, None),
        None => {
            let value = r.raw("domain").map_or("", |(v, _)| v);
            r.report(
                "domain",
                value,
                "required: the SIP domain of the account; the account is left inactive".into(),
                None,
            );
            (
                false,
                Some(format!(
                    "[{section}] has no domain (the SIP domain is required)"
                )),
            )
        }
    };
    Account {
        number,
        active,
        inactive_reason,
        label: r.text("label"),
        server: r.text("server").map(|s| bracket_ipv6(&s)),
        proxy: r
            .list("proxy", &[' ', '\t'])
            .iter()
            .map(|p| bracket_ipv6(p))
            .collect(),
        domain: bracket_ipv6(&domain.unwrap_or_default()),
        username: r.text("username"),
        password: r.text("password"),
        auth_id: r.text("authID"),
        display_name: r.text("displayName"),
        dialing_prefix: r.text("dialingPrefix"),
        dial_plan: r.text("dialPlan"),
        hide_cid: r.flag("hideCID", false),
        voicemail_number: r.text("voicemailNumber"),
        srtp: r.word("SRTP"),
        transport: r.word("transport"),
        public_addr: r.text("publicAddr"),
        register_refresh: r.number(
            "registerRefresh",
            300,
            10,
            u32::MAX.into(),
            "a whole number of seconds, at least 10",
        ) as u32,
        keep_alive: r.seconds("keepAlive", 15),
        publish: r.flag("publish", false),
        ice: r.flag("ICE", false),
        allow_rewrite: r.flag("allowRewrite", false),
        disable_session_timer: r.flag("disableSessionTimer", false),
        tls_ca_file: r.text("tlsCaFile"),
    }
}

/// A bare IPv6 literal (`::1`, `2001:db8::5`) as SIP writes a host: in brackets
/// (`[::1]`), so `host` and `host:port` stay apart; anything else unchanged.
fn bracket_ipv6(host: &str) -> String {
    match host.trim().parse::<std::net::Ipv6Addr>() {
        Ok(ip) => format!("[{ip}]"),
        Err(_) => host.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        let (doc, _) = IniDocument::parse(text.as_bytes());
        Config::from_document(&doc, "microsip.ini")
    }

    #[test]
    fn defaults_of_an_empty_file() {
        let c = config("");
        let expected = Settings {
            account_id: 0, // no [Account1]: the local account
            ..Settings::default()
        };
        assert_eq!(c.settings, expected);
        assert_eq!(Settings::default().account_id, 1);
        assert!(c.problems.is_empty());
        assert_eq!(c.accounts.len(), 1);
        let local = c.active_account().unwrap();
        assert_eq!(local.domain, "127.0.0.1");
        assert_eq!(local.label.as_deref(), Some("Local"));
        assert!(local.active);
    }

    #[test]
    fn bare_ipv6_literals_are_bracketed() {
        let v6 = config("[Account1]\ndomain=::1\nserver=::1\nproxy=[::1]:5070\n");
        let a = v6.accounts.iter().find(|a| a.number == 1).unwrap();
        assert_eq!(a.domain, "[::1]");
        assert_eq!(a.server.as_deref(), Some("[::1]"));
        assert_eq!(a.proxy, vec!["[::1]:5070".to_string()]);
        let v4 = config("[Account1]\ndomain=example.com\nserver=192.0.2.1:5060\n");
        let a = v4.accounts.iter().find(|a| a.number == 1).unwrap();
        assert_eq!(a.domain, "example.com");
        assert_eq!(a.server.as_deref(), Some("192.0.2.1:5060"));
    }

    #[test]
    fn default_document_reads_back() {
        let doc = default_document();
        let c = Config::from_document(&doc, "microsip.ini");
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        assert_eq!(c.settings.account_id, 0);
        assert_eq!(c.accounts[0].username.as_deref(), Some("microsip"));
        assert_eq!(c.accounts[0].server, None);
        assert_eq!(doc.get("Account0", "label"), Some("Local"));
    }

    #[test]
    fn problem_display_matches_the_spec() {
        let c = config(
            "[Settings]\naccountId=1\n[Account1]\ndomain=example.com\nregisterRefresh=abc\n",
        );
        assert_eq!(c.problems.len(), 1);
        assert_eq!(
            c.problems[0].to_string(),
            "microsip.ini:5: [Account1] registerRefresh=\"abc\": expected a whole number of \
             seconds, at least 10 (using 300)"
        );
    }

    #[test]
    fn words_are_case_insensitive_and_empty_means_the_empty_word() {
        let c = config(
            "[Settings]\nautoAnswer=\ndenyIncoming=ALL\nDTMFMethod=2\n[Account1]\ndomain=d\ntransport=\nSRTP=Mandatory\n",
        );
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        assert_eq!(c.settings.auto_answer, AutoAnswer::Off);
        assert_eq!(c.settings.deny_incoming, DenyIncoming::All);
        assert_eq!(c.settings.dtmf_method, DtmfMethod::Rfc4733);
        assert_eq!(c.accounts[1].transport, Transport::UdpTcp);
        assert_eq!(c.accounts[1].srtp, Srtp::Mandatory);
        let c = config("[Account1]\ndomain=d\n");
        assert_eq!(c.accounts[1].transport, Transport::Udp);
        assert_eq!(c.settings.account_id, 1);
    }

    #[test]
    fn account_number_parsing() {
        assert_eq!(account_number("Account12"), Some(12));
        assert_eq!(account_number("account0"), Some(0));
        assert_eq!(account_number("Account01"), None);
        assert_eq!(account_number("Account"), None);
        assert_eq!(account_number("Accounts"), None);
        assert_eq!(account_number("Acc"), None);
        assert_eq!(account_number("Accounté"), None);
    }
}
