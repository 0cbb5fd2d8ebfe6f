//! The typed view: defaults, every kind of bad value, inactive accounts, gaps, secrets.
#![allow(clippy::unwrap_used, unsafe_code)] // test code: a failed unwrap is a failed test

use microsip_config::{
    account_section, AutoAnswer, Config, ConfigProblem, DenyIncoming, DtmfMethod, IniDocument,
    Settings, Srtp, Transport,
};

fn config(text: &str) -> Config {
    let (doc, _) = IniDocument::parse(text.as_bytes());
    Config::from_document(&doc, "microsip.ini")
}

fn problem<'a>(c: &'a Config, key: &str) -> &'a ConfigProblem {
    c.problems
        .iter()
        .find(|p| p.key == key)
        .unwrap_or_else(|| panic!("no problem for {key}: {:?}", c.problems))
}

#[test]
fn defaults_follow_ini_md() {
    let s = Settings::default();
    assert_eq!(s.account_id, 1);
    assert_eq!(s.source_port, 0);
    assert_eq!((s.rtp_port_min, s.rtp_port_max), (None, None));
    assert!(s.rport && s.ec && s.local_dtmf && s.call_waiting);
    assert!(!s.enable_stun && !s.dns_srv && !s.vad && !s.dnd && !s.force_codec);
    assert_eq!(s.volume_output, 100);
    assert_eq!(s.volume_input, 100);
    assert_eq!(s.volume_ring, 100);
    assert_eq!(s.dtmf_method, DtmfMethod::Auto);
    assert_eq!(s.auto_answer, AutoAnswer::Button);
    assert_eq!(s.deny_incoming, DenyIncoming::Button);
    assert_eq!(s.recording_path, "Recordings");
    assert_eq!(
        (
            s.feature_code_cp.as_str(),
            s.feature_code_bt.as_str(),
            s.feature_code_at.as_str()
        ),
        ("**", "##", "*2")
    );
    let codecs: Vec<String> = s.audio_codecs.iter().map(|c| c.to_string()).collect();
    assert_eq!(codecs, vec!["PCMA/8000/1", "PCMU/8000/1"]);
    assert!(s.user_agent.starts_with("MicroSIP"));
    assert_eq!(s.status_disconnected_ms, 2000);
    assert_eq!(s.session_timer_min, 90);
    assert!(s.dbus && s.notifications);
    assert_eq!(s.hooks.call_end, None);

    let c = config("[Account1]\ndomain=example.com\n");
    assert!(c.problems.is_empty());
    assert_eq!(c.settings, Settings::default());
    let a = c.active_account().unwrap();
    assert_eq!(a.number, 1);
    assert_eq!(a.transport, Transport::Udp);
    assert_eq!(a.srtp, Srtp::Disabled);
    assert_eq!(a.register_refresh, 300);
    assert_eq!(a.keep_alive, 15);
    assert!(!a.hide_cid && !a.publish && !a.ice && !a.allow_rewrite && !a.disable_session_timer);
    assert!(a.server.is_none() && a.password.is_none());
}

#[test]
fn every_key_is_read() {
    let c = config(
        "[Settings]\naccountId=2\nsourcePort=5070\nrtpPortMin=10000\nrtpPortMax=20000\nrport=0\n\
         STUN=stun1.example.com;stun2.example.com:3478\nenableSTUN=1\ndnsSrv=1\n\
         dnsSrvNs=1.1.1.1 8.8.8.8\nuserAgent=Test/1\naudioCodecs=opus/48000/2 G722/16000/1\n\
         forceCodec=1\nopusStereo=1\nVAD=1\nEC=0\naudioInputDevice=Mic\naudioOutputDevice=Spk\n\
         audioRingDevice=Bell\nvolumeOutput=10\nvolumeInput=20\nvolumeRing=30\n\
         micAmplification=1\nswLevelAdjustment=1\nringingSound=/tmp/ring.wav\nDTMFMethod=3\n\
         localDTMF=0\nautoAnswer=header\nautoAnswerDelay=5\nautoAnswerNumber=10*;2?|300\n\
         autoAnswerCalls=hold\ndenyIncoming=remotedomain\nDND=1\nforwarding=all\n\
         forwardingNumber=555\nforwardingDelay=20\ncallWaiting=0\nmaxConcurrentCalls=3\n\
         autoHangUpTime=60\nrecordingPath=/rec\nrecordingFormat=mp3\nautoRecording=1\n\
         featureCodeCP=*8\nenableFeatureCodeCP=1\nfeatureCodeBT=#1\nenableFeatureCodeBT=1\n\
         featureCodeAT=#2\nenableFeatureCodeAT=1\ndisableMessaging=1\n\
         cmdIncomingCall=/bin/in\ncmdCallRing=/bin/ring\ncmdOutgoingCall=/bin/out\n\
         cmdCallAnswer=/bin/ans\ncmdCallAnswerVideo=/bin/vid\ncmdCallStart=/bin/start\n\
         cmdCallBusy=/bin/busy\ncmdCallEnd=/bin/end {number}\nenableLog=1\nminimized=1\n\
         lastCallNumber=123\ncallsLastKey=7\nversion=3.21.3\nstatusDisconnectedTime=500\nsessionTimerMin=10\n\
         dbus=0\nnotifications=0\n\
         [Account1]\ndomain=one.example\n\
         [Account2]\nlabel=Work\nserver=sip.example.com:5080\nproxy=sip:p1;lr sip:p2\n\
         domain=example.com\nusername=1005\npassword=secret\nauthID=auth1005\n\
         displayName=Alice Smith\ndialingPrefix=9\ndialPlan=(xxx|<0:+49>x.)\nhideCID=1\n\
         voicemailNumber=*97\nSRTP=dtls-sdes\ntransport=tls\npublicAddr=203.0.113.5\n\
         registerRefresh=60\nkeepAlive=0\npublish=1\nICE=1\nallowRewrite=1\n\
         disableSessionTimer=1\n",
    );
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let s = &c.settings;
    assert_eq!(s.account_id, 2);
    assert_eq!(s.source_port, 5070);
    assert_eq!((s.rtp_port_min, s.rtp_port_max), (Some(10000), Some(20000)));
    assert!(!s.rport);
    assert_eq!(s.stun, vec!["stun1.example.com", "stun2.example.com:3478"]);
    assert!(s.enable_stun && s.dns_srv);
    assert_eq!(s.dns_srv_ns, vec!["1.1.1.1", "8.8.8.8"]);
    assert_eq!(s.user_agent, "Test/1");
    assert_eq!(s.audio_codecs.len(), 2);
    assert_eq!(s.audio_codecs[0].name, "opus");
    assert_eq!(s.audio_codecs[0].clock_rate, 48000);
    assert_eq!(s.audio_codecs[0].channels, 2);
    assert!(s.force_codec && s.opus_stereo && s.vad && !s.ec);
    assert_eq!(s.audio_input_device.as_deref(), Some("Mic"));
    assert_eq!(s.audio_output_device.as_deref(), Some("Spk"));
    assert_eq!(s.audio_ring_device.as_deref(), Some("Bell"));
    assert_eq!(
        (s.volume_output, s.volume_input, s.volume_ring),
        (10, 20, 30)
    );
    assert!(s.mic_amplification && s.sw_level_adjustment);
    assert_eq!(s.ringing_sound.as_deref(), Some("/tmp/ring.wav"));
    assert_eq!(s.dtmf_method, DtmfMethod::SipInfo);
    assert!(!s.local_dtmf);
    assert_eq!(s.auto_answer, AutoAnswer::Header);
    assert_eq!(s.auto_answer_delay, 5);
    assert_eq!(s.auto_answer_number, vec!["10*", "2?", "300"]);
    assert_eq!(s.auto_answer_calls, microsip_config::AutoAnswerCalls::Hold);
    assert_eq!(s.deny_incoming, DenyIncoming::RemoteDomain);
    assert!(s.dnd);
    assert_eq!(s.forwarding, microsip_config::Forwarding::All);
    assert_eq!(s.forwarding_number.as_deref(), Some("555"));
    assert_eq!(s.forwarding_delay, 20);
    assert!(!s.call_waiting);
    assert_eq!(s.max_concurrent_calls, Some(3));
    assert_eq!(s.auto_hang_up_time, 60);
    assert_eq!(s.recording_path, "/rec");
    assert_eq!(c.recording_dir(), std::path::PathBuf::from("/rec"));
    assert_eq!(s.recording_format, microsip_config::RecordingFormat::Mp3);
    assert!(s.auto_recording);
    assert_eq!(s.feature_code_cp, "*8");
    assert_eq!(s.feature_code_bt, "#1");
    assert_eq!(s.feature_code_at, "#2");
    assert!(s.enable_feature_code_cp && s.enable_feature_code_bt && s.enable_feature_code_at);
    assert!(s.disable_messaging && s.enable_log && s.minimized);
    let h = &s.hooks;
    assert_eq!(h.incoming_call.as_deref(), Some("/bin/in"));
    assert_eq!(h.call_ring.as_deref(), Some("/bin/ring"));
    assert_eq!(h.outgoing_call.as_deref(), Some("/bin/out"));
    assert_eq!(h.call_answer.as_deref(), Some("/bin/ans"));
    assert_eq!(h.call_answer_video.as_deref(), Some("/bin/vid"));
    assert_eq!(h.call_start.as_deref(), Some("/bin/start"));
    assert_eq!(h.call_busy.as_deref(), Some("/bin/busy"));
    assert_eq!(h.call_end.as_deref(), Some("/bin/end {number}"));
    assert_eq!(s.last_call_number.as_deref(), Some("123"));
    assert_eq!(s.calls_last_key, Some(7));
    assert_eq!(s.version.as_deref(), Some("3.21.3"));
    assert_eq!(s.status_disconnected_ms, 500);
    assert_eq!(s.session_timer_min, 10);
    assert!(!s.dbus && !s.notifications);

    let a = c.active_account().unwrap();
    assert_eq!(a.number, 2);
    assert!(a.active);
    assert_eq!(a.label.as_deref(), Some("Work"));
    assert_eq!(a.server.as_deref(), Some("sip.example.com:5080"));
    assert_eq!(a.proxy, vec!["sip:p1;lr", "sip:p2"]);
    assert_eq!(a.domain, "example.com");
    assert_eq!(a.username.as_deref(), Some("1005"));
    assert_eq!(a.password.as_deref(), Some("secret"));
    assert_eq!(a.auth_id.as_deref(), Some("auth1005"));
    assert_eq!(a.auth_user(), Some("auth1005"));
    assert_eq!(a.display_name.as_deref(), Some("Alice Smith"));
    assert_eq!(a.dialing_prefix.as_deref(), Some("9"));
    assert_eq!(a.dial_plan.as_deref(), Some("(xxx|<0:+49>x.)"));
    assert!(a.hide_cid);
    assert_eq!(a.voicemail_number.as_deref(), Some("*97"));
    assert_eq!(a.srtp, Srtp::DtlsSdes);
    assert_eq!(a.transport, Transport::Tls);
    assert_eq!(a.public_addr.as_deref(), Some("203.0.113.5"));
    assert_eq!(a.register_refresh, 60);
    assert_eq!(a.keep_alive, 0);
    assert!(a.publish && a.ice && a.allow_rewrite && a.disable_session_timer);
    assert_eq!(a.section(), "Account2");
}

#[test]
fn every_kind_of_bad_value_is_reported_with_file_line_key_and_allowed() {
    let text = "[Settings]\n\
        autoAnswer=sometimes\n\
        rtpPortMin=70000\n\
        DND=yes\n\
        volumeOutput=150\n\
        sourcePort=-1\n\
        DTMFMethod=5\n\
        audioCodecs=PCMA/8000/1 bogus\n\
        statusDisconnectedTime=2s\n\
        [Account1]\n\
        domain=example.com\n\
        registerRefresh=abc\n\
        transport=sctp\n\
        SRTP=always\n\
        keepAlive=5.5\n\
        hideCID=2\n";
    let c = config(text);
    let expect = [
        (
            "autoAnswer",
            2,
            "Settings",
            "sometimes",
            "button",
            "(using \"button\")",
        ),
        ("rtpPortMin", 3, "Settings", "70000", "65535", "(using 0)"),
        ("DND", 4, "Settings", "yes", "0 or 1", "(using 0)"),
        (
            "volumeOutput",
            5,
            "Settings",
            "150",
            "0 to 100",
            "(using 100)",
        ),
        (
            "sourcePort",
            6,
            "Settings",
            "-1",
            "port number",
            "(using 0)",
        ),
        (
            "DTMFMethod",
            7,
            "Settings",
            "5",
            "RFC 4733",
            "(using \"0\")",
        ),
        (
            "audioCodecs",
            8,
            "Settings",
            "PCMA/8000/1 bogus",
            "bogus",
            "(using \"PCMA/8000/1\")",
        ),
        (
            "statusDisconnectedTime",
            9,
            "Settings",
            "2s",
            "milliseconds",
            "(using 2000)",
        ),
        (
            "registerRefresh",
            12,
            "Account1",
            "abc",
            "at least 10",
            "(using 300)",
        ),
        (
            "transport",
            13,
            "Account1",
            "sctp",
            "udp, tcp, tls",
            "(using \"udp\")",
        ),
        (
            "SRTP",
            14,
            "Account1",
            "always",
            "mandatory",
            "(using \"\")",
        ),
        ("keepAlive", 15, "Account1", "5.5", "seconds", "(using 15)"),
        ("hideCID", 16, "Account1", "2", "0 or 1", "(using 0)"),
    ];
    assert_eq!(c.problems.len(), expect.len(), "{:#?}", c.problems);
    for (key, line, section, value, allowed, using) in expect {
        let p = problem(&c, key);
        assert_eq!(p.line, line, "{p}");
        assert_eq!(p.section, section, "{p}");
        assert_eq!(p.value, value, "{p}");
        let shown = p.to_string();
        let head = format!("microsip.ini:{line}: [{section}] {key}=\"{value}\": expected ");
        assert!(shown.starts_with(&head), "{shown}");
        assert!(shown.contains(allowed), "{shown}");
        assert!(shown.ends_with(using), "{shown}");
    }
    // Problems come in line order, and the keys took their defaults.
    let lines: Vec<usize> = c.problems.iter().map(|p| p.line).collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted);
    let s = &c.settings;
    assert_eq!(s.auto_answer, AutoAnswer::Button);
    assert_eq!(s.rtp_port_min, None);
    assert!(!s.dnd);
    assert_eq!(s.volume_output, 100);
    assert_eq!(s.dtmf_method, DtmfMethod::Auto);
    assert_eq!(s.audio_codecs.len(), 1);
    assert_eq!(s.status_disconnected_ms, 2000);
    let a = &c.accounts[1];
    assert!(a.active);
    assert_eq!(a.register_refresh, 300);
    assert_eq!(a.transport, Transport::Udp);
    assert_eq!(a.srtp, Srtp::Disabled);
    assert_eq!(a.keep_alive, 15);
    assert!(!a.hide_cid);
}

#[test]
fn register_refresh_below_ten_and_inverted_rtp_range() {
    let c = config(
        "[Settings]\nrtpPortMin=20000\nrtpPortMax=10000\n[Account1]\ndomain=d\nregisterRefresh=5\n",
    );
    assert_eq!(c.problems.len(), 2, "{:?}", c.problems);
    assert!(problem(&c, "rtpPortMax")
        .to_string()
        .contains("rtpPortMin (20000)"));
    assert_eq!(
        (c.settings.rtp_port_min, c.settings.rtp_port_max),
        (None, None)
    );
    assert_eq!(c.accounts[1].register_refresh, 300);
}

#[test]
fn account_without_domain_is_inactive_and_reported() {
    let c = config("[Settings]\naccountId=1\n[Account1]\nserver=sip.example.com\nusername=1\n[Account2]\ndomain=\n");
    assert_eq!(c.accounts.len(), 3);
    for (n, line) in [(1, 3), (2, 7)] {
        let a = &c.accounts[n];
        assert!(!a.active);
        assert!(a.inactive_reason.as_deref().unwrap().contains("domain"));
        let p = c
            .problems
            .iter()
            .find(|p| p.section == account_section(n as u32))
            .unwrap();
        assert_eq!(p.key, "domain");
        assert_eq!(p.line, line, "{p}");
        assert!(p.to_string().contains("inactive"), "{p}");
    }
    assert_eq!(c.accounts[1].server.as_deref(), Some("sip.example.com"));
}

#[test]
fn a_gap_stops_loading_and_is_reported() {
    let c =
        config("[Account1]\ndomain=a\n[Account3]\ndomain=c\n[Account2x]\n[account4]\ndomain=d\n");
    assert_eq!(c.accounts.len(), 2);
    assert_eq!(c.accounts[1].domain, "a");
    let ignored: Vec<String> = c.problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(ignored.len(), 2, "{ignored:?}");
    assert!(
        ignored[0].starts_with("microsip.ini:3: [Account3]: ignored"),
        "{ignored:?}"
    );
    assert!(ignored[0].contains("[Account2] is missing"));
    assert!(
        ignored[1].starts_with("microsip.ini:6: [account4]"),
        "{ignored:?}"
    );
}

#[test]
fn account_id_must_exist() {
    let c = config("[Settings]\naccountId=5\n[Account1]\ndomain=a\n");
    assert_eq!(c.settings.account_id, 1);
    let p = problem(&c, "accountId");
    assert_eq!(p.line, 2);
    assert!(p.to_string().ends_with("0 (local) to 1 (using 1)"), "{p}");

    let c = config("[Settings]\naccountId=1\n");
    assert_eq!(c.settings.account_id, 0);
    assert_eq!(c.problems.len(), 1);

    let c = config("[Settings]\naccountId=0\n[Account0]\nlabel=Mine\ndomain=10.0.0.1\n");
    assert!(c.problems.is_empty());
    assert_eq!(c.active_account().unwrap().label.as_deref(), Some("Mine"));
}

#[test]
fn debug_hides_the_password() {
    let c = config("[Account1]\ndomain=d\nusername=u\npassword=hunter2\n");
    let a = &c.accounts[1];
    let shown = format!("{a:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("password: Some(***)"), "{shown}");
    assert!(shown.contains("username: Some(\"u\")"), "{shown}");
    let whole = format!("{c:?} {c:#?}");
    assert!(!whole.contains("hunter2"));
    let (doc, _) = IniDocument::parse(b"[Account1]\npassword=hunter2\n");
    assert!(!format!("{doc:?}").contains("hunter2"));
}

#[test]
fn garbage_lines_become_problems_without_leaking_secrets() {
    let c = config("[Settings]\nthis is not ini\n[Account1]\ndomain=d\npassword hunter2\n");
    assert_eq!(c.problems.len(), 2, "{:?}", c.problems);
    let first = c.problems[0].to_string();
    assert!(
        first.starts_with("microsip.ini:2: [Settings] \"this is not ini\": not understood"),
        "{first}"
    );
    let second = c.problems[1].to_string();
    assert!(
        second.starts_with("microsip.ini:5: [Account1] \"***\""),
        "{second}"
    );
}

#[test]
fn relative_recording_path_is_beside_the_ini() {
    let (doc, _) = IniDocument::parse(b"");
    let c = Config::from_document(&doc, "/home/u/.config/microsip/microsip.ini");
    assert_eq!(
        c.recording_dir(),
        std::path::PathBuf::from("/home/u/.config/microsip/Recordings")
    );
}
