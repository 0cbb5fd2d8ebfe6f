//! The engine core's call flows on a fake clock: no sockets, no tokio, no sleeps.
//! Each test builds a [`Core`] from an ini text, feeds it inputs (commands, SIP
//! signals, results of the actions it asked for) at times it chooses, and checks the
//! outputs: the SIP and media actions, the replies and the events.
#![allow(clippy::unwrap_used, unsafe_code)] // test code: a failed unwrap is a failed test

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use microsip_config::{Config, IniDocument};
use microsip_engine::command::{Command, StatusForm};
use microsip_engine::core::{Core, CoreSetup, NoStats};
use microsip_engine::io::{
    Done, Input, LegSignal, MediaAction, Now, Output, ReplyTo, SipAction, StoreAction, Ticket,
};
use microsip_engine::{EventKind, Reply};
use microsip_sip::{
    EndedBy, IncomingInvite, Outcome, Refresher, RegistrationEvent, SessionExpires, SessionTimerAsk,
};

/// A peer's SDP offer with PCMU.
const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n";

/// The same as an answer.
const ANSWER: &str = OFFER;

/// An account registering at 127.0.0.1 (nothing is sent: the core only asks).
const ACCOUNT: &str =
    "[Account1]\nserver=127.0.0.1\ndomain=127.0.0.1\nusername=1001\npassword=secret\n";

/// An ini with these `[Settings]` lines and [`ACCOUNT`].
fn ini(settings: &str) -> String {
    format!("[Settings]\naccountId=1\n{settings}\n{ACCOUNT}")
}

/// The core under test, its fake clock and everything it said.
struct Bench {
    core: Core,
    t0: Instant,
    wall0: SystemTime,
    elapsed: Duration,
    outputs: Vec<Output>,
    next_reply: ReplyTo,
    /// Replies received, by the id the command was given.
    replies: HashMap<ReplyTo, Reply>,
}

impl Bench {
    fn new(ini: &str) -> Bench {
        Bench::with_call_on_start(ini, None)
    }

    fn with_call_on_start(ini: &str, call: Option<(String, Option<u32>)>) -> Bench {
        Bench::with_setup(ini, call, None)
    }

    fn with_setup(
        ini: &str,
        call: Option<(String, Option<u32>)>,
        other_family_ip: Option<std::net::IpAddr>,
    ) -> Bench {
        let (doc, _) = IniDocument::parse(ini.as_bytes());
        let config = Config::from_document(&doc, "/nonexistent/microsip.ini");
        let t0 = Instant::now();
        let wall0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_650_815);
        let core = Core::new(
            CoreSetup {
                config,
                bind_ip: [127, 0, 0, 1].into(),
                media_ips: HashMap::new(),
                other_family_ip,
                sip_public: None,
                sound_system: false,
                call_on_start: call,
                seed: 42,
                stats: Box::new(NoStats),
            },
            Now {
                mono: t0,
                wall: wall0,
            },
        );
        let mut b = Bench {
            core,
            t0,
            wall0,
            elapsed: Duration::ZERO,
            outputs: Vec::new(),
            next_reply: 1,
            replies: HashMap::new(),
        };
        b.collect();
        b.answer_stores();
        b
    }

    fn now(&self) -> Now {
        Now {
            mono: self.t0 + self.elapsed,
            wall: self.wall0 + self.elapsed,
        }
    }

    fn collect(&mut self) {
        while let Some(o) = self.core.poll_output() {
            match o {
                Output::Reply { to, reply } => {
                    self.replies.insert(to, reply);
                }
                other => self.outputs.push(other),
            }
        }
    }

    fn input(&mut self, input: Input) {
        let now = self.now();
        self.core.handle(input, now);
        self.collect();
    }

    /// Moves the clock on by `d`, firing timers on the way as a driver would.
    fn advance(&mut self, d: Duration) {
        let end = self.elapsed + d;
        while let Some(at) = self.core.poll_timeout() {
            let at = at.duration_since(self.t0);
            if at > end {
                break;
            }
            self.elapsed = self.elapsed.max(at);
            let now = self.now();
            self.core.handle_timeout(now);
            self.collect();
        }
        self.elapsed = end;
    }

    fn command(&mut self, command: Command) -> ReplyTo {
        let id = self.next_reply;
        self.next_reply += 1;
        self.input(Input::Command { reply: id, command });
        id
    }

    fn reply(&self, id: ReplyTo) -> Option<&Reply> {
        self.replies.get(&id)
    }

    fn done(&mut self, ticket: Ticket, result: Done) {
        self.input(Input::Done { ticket, result });
    }

    /// Takes the SIP actions asked for so far.
    fn sip(&mut self) -> Vec<(Option<Ticket>, SipAction)> {
        let mut taken = Vec::new();
        let mut rest = Vec::new();
        for o in self.outputs.drain(..) {
            match o {
                Output::Sip { ticket, action } => taken.push((ticket, action)),
                other => rest.push(other),
            }
        }
        self.outputs = rest;
        taken
    }

    /// Takes the media actions asked for so far.
    fn media(&mut self) -> Vec<(Option<Ticket>, MediaAction)> {
        let mut taken = Vec::new();
        let mut rest = Vec::new();
        for o in self.outputs.drain(..) {
            match o {
                Output::Media { ticket, action } => taken.push((ticket, action)),
                other => rest.push(other),
            }
        }
        self.outputs = rest;
        taken
    }

    /// Takes the events published so far.
    fn events(&mut self) -> Vec<EventKind> {
        let mut taken = Vec::new();
        let mut rest = Vec::new();
        for o in self.outputs.drain(..) {
            match o {
                Output::Event(e) => taken.push(e.kind),
                other => rest.push(other),
            }
        }
        self.outputs = rest;
        taken
    }

    /// Answers every store read with an empty list and every write with success.
    fn answer_stores(&mut self) {
        let mut stores = Vec::new();
        let mut rest = Vec::new();
        for o in self.outputs.drain(..) {
            match o {
                Output::Store { ticket, action } => stores.push((ticket, action)),
                other => rest.push(other),
            }
        }
        self.outputs = rest;
        for (ticket, action) in stores {
            let Some(ticket) = ticket else { continue };
            let result = match action {
                StoreAction::ListContacts | StoreAction::ListHistory => Done::List(Ok(Vec::new())),
                StoreAction::ListMessages { .. } => Done::Messages(Ok(Vec::new())),
                StoreAction::AddContact { .. } => Done::Contact(Ok("added".into())),
                StoreAction::RemoveContact { .. } => Done::Contact(Ok("removed".into())),
                StoreAction::SetConfig { .. } | StoreAction::StoreMessage(_) => Done::Unit(Ok(())),
            };
            self.done(ticket, result);
        }
    }

    /// Opens every media session asked for (on port 40000 + call id).
    fn open_media(&mut self) {
        for (ticket, action) in self.media() {
            if let (Some(ticket), MediaAction::Open { call, .. }) = (ticket, action) {
                self.done(ticket, Done::MediaOpened(Ok((40_000 + call as u16).into())));
            }
        }
    }

    /// `dial 1002`: returns the call id (the leg is the same number).
    fn dial(&mut self) -> u64 {
        let r = self.command(Command::Dial {
            target: "1002".into(),
            account: None,
            hold_active: true,
            numeric: false,
        });
        assert!(
            self.reply(r).is_none(),
            "dial replies once the INVITE is out"
        );
        self.open_media();
        let answer = self
            .reply(r)
            .expect("dial replied")
            .clone()
            .expect("dial ok");
        let id = answer.data["call"].as_u64().expect("a call id");
        let sip = self.sip();
        assert!(
            sip.iter()
                .any(|(_, a)| matches!(a, SipAction::Dial { leg, .. } if *leg == id)),
            "{sip:?}"
        );
        id
    }

    /// Our call `leg` is answered with `session_timer` and confirmed.
    fn answered(&mut self, leg: u64, session_timer: SessionTimerAsk) {
        self.input(Input::Leg {
            leg,
            signal: LegSignal::Answered {
                sdp: Some(ANSWER.into()),
                session_timer,
            },
        });
        self.input(Input::Leg {
            leg,
            signal: LegSignal::Confirmed,
        });
    }

    /// An INVITE from 1002 on `leg`.
    fn incoming(&mut self, leg: u64, session_timer: SessionTimerAsk) {
        let invite = IncomingInvite {
            remote: "sip:1002@127.0.0.1".into(),
            remote_user: "1002".into(),
            remote_domain: "127.0.0.1".into(),
            to_user: "1001".into(),
            to_domain: "127.0.0.1".into(),
            sdp: Some(OFFER.into()),
            session_timer,
            ..IncomingInvite::default()
        };
        self.input(Input::Leg {
            leg,
            signal: LegSignal::Incoming(Box::new(invite)),
        });
    }

    fn ended(&mut self, leg: u64, code: u16, by: EndedBy) {
        self.input(Input::Leg {
            leg,
            signal: LegSignal::Ended {
                code,
                reason: "Normal Clearing".into(),
                by,
                elsewhere: false,
            },
        });
    }

    fn status(&mut self) -> String {
        let r = self.command(Command::Status {
            form: StatusForm::Numeric,
        });
        self.reply(r)
            .expect("status replies at once")
            .as_ref()
            .expect("status ok")
            .text
            .clone()
    }
}

fn timers(seconds: u32, refresher: Option<Refresher>) -> SessionTimerAsk {
    SessionTimerAsk {
        expires: Some(SessionExpires { seconds, refresher }),
        min_se: None,
        supported: true,
    }
}

/// Whether media was opened (a call being placed or answered).
fn opens(media: &[(Option<Ticket>, MediaAction)]) -> bool {
    media
        .iter()
        .any(|(_, a)| matches!(a, MediaAction::Open { .. }))
}

fn reinvites(sip: &[(Option<Ticket>, SipAction)]) -> Vec<(Ticket, Vec<(String, String)>)> {
    sip.iter()
        .filter_map(|(t, a)| match a {
            SipAction::Reinvite { headers, .. } => Some(((*t)?, headers.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn we_refresh_the_session_at_half_the_interval() {
    let mut b = Bench::new(&ini(""));
    let id = b.dial();
    // The callee's 200 makes us (the uac) the refresher of a 120 s session.
    b.answered(id, timers(120, Some(Refresher::Uac)));
    b.sip();
    b.advance(Duration::from_millis(59_999));
    assert!(
        reinvites(&b.sip()).is_empty(),
        "no refresh before half the interval"
    );
    b.advance(Duration::from_millis(1));
    let sent = reinvites(&b.sip());
    assert_eq!(sent.len(), 1, "one refresh at 60 s");
    assert!(sent[0]
        .1
        .contains(&("Session-Expires".into(), "120;refresher=uac".into())));
    // The refresh is answered: the next one is 60 s later, not before.
    let (ticket, _) = sent[0].clone();
    b.done(
        ticket,
        Done::Reinvite(Ok((200, None, timers(120, Some(Refresher::Uac))))),
    );
    b.advance(Duration::from_secs(59));
    assert!(reinvites(&b.sip()).is_empty());
    b.advance(Duration::from_secs(1));
    assert_eq!(reinvites(&b.sip()).len(), 1);
}

#[test]
fn a_session_the_other_side_never_refreshes_ends_with_bye() {
    let mut b = Bench::new(&ini(""));
    let id = b.dial();
    b.answered(id, timers(90, Some(Refresher::Uas)));
    b.sip();
    b.events();
    // They refresh; we wait 90 - min(32, 30) = 60 s, then send BYE.
    b.advance(Duration::from_millis(59_900));
    assert!(b.sip().is_empty());
    b.advance(Duration::from_millis(100));
    let sip = b.sip();
    assert!(
        sip.iter()
            .any(|(_, a)| matches!(a, SipAction::Hangup { leg } if *leg == id)),
        "{sip:?}"
    );
    b.ended(id, 200, EndedBy::Local);
    let ended = b.events().into_iter().find_map(|e| match e {
        EventKind::CallEnded { reason, .. } => Some(reason),
        _ => None,
    });
    assert_eq!(ended.as_deref(), Some("session timer expired"));
}

#[test]
fn a_hold_sent_while_ringing_waits_for_the_answer() {
    let mut b = Bench::new(&ini(""));
    let id = b.dial();
    b.input(Input::Leg {
        leg: id,
        signal: LegSignal::Ringing,
    });
    let hold = b.command(Command::Hold {
        call: Some(id),
        on: Some(true),
    });
    assert!(b.reply(hold).is_none(), "kept until the call is answered");
    assert!(reinvites(&b.sip()).is_empty());
    b.advance(Duration::from_secs(5));
    b.answered(id, SessionTimerAsk::default());
    let sent = reinvites(&b.sip());
    assert_eq!(sent.len(), 1, "the hold goes once confirmed");
    assert!(
        b.reply(hold).is_none(),
        "replies when the re-INVITE is answered"
    );
    b.done(
        sent[0].0,
        Done::Reinvite(Ok((200, None, SessionTimerAsk::default()))),
    );
    let text = &b.reply(hold).expect("replied").as_ref().expect("ok").text;
    assert_eq!(text, &format!("call {id} held"));
    assert!(b
        .events()
        .iter()
        .any(|e| matches!(e, EventKind::CallHeld { by: "local", .. })));
}

#[test]
fn a_second_hold_during_a_reinvite_goes_after_it() {
    let mut b = Bench::new(&ini(""));
    let id = b.dial();
    b.answered(id, SessionTimerAsk::default());
    b.sip();
    let first = b.command(Command::Hold {
        call: Some(id),
        on: Some(true),
    });
    let second = b.command(Command::Hold {
        call: Some(id),
        on: Some(false),
    });
    let sent = reinvites(&b.sip());
    assert_eq!(sent.len(), 1, "one re-INVITE in flight at a time");
    b.done(
        sent[0].0,
        Done::Reinvite(Ok((200, None, SessionTimerAsk::default()))),
    );
    assert!(b.reply(first).is_some_and(|r| r.is_ok()));
    let resumed = reinvites(&b.sip());
    assert_eq!(
        resumed.len(),
        1,
        "the resume goes once the hold was answered"
    );
    b.done(
        resumed[0].0,
        Done::Reinvite(Ok((200, None, SessionTimerAsk::default()))),
    );
    assert_eq!(
        b.reply(second).expect("replied").as_ref().expect("ok").text,
        format!("call {id} resumed")
    );
}

#[test]
fn auto_answer_after_the_configured_delay() {
    let mut b = Bench::new(&ini("autoAnswer=all\nautoAnswerDelay=3"));
    b.incoming(1 << 62, SessionTimerAsk::default());
    let sip = b.sip();
    assert!(sip
        .iter()
        .any(|(_, a)| matches!(a, SipAction::Ringing { .. })));
    b.advance(Duration::from_millis(2_999));
    assert!(!opens(&b.media()), "not answered before 3 s");
    b.advance(Duration::from_millis(1));
    b.open_media();
    let sip = b.sip();
    assert!(
        sip.iter()
            .any(|(_, a)| matches!(a, SipAction::Answer { leg, .. } if *leg == 1 << 62)),
        "{sip:?}"
    );
    assert!(b
        .events()
        .iter()
        .any(|e| matches!(e, EventKind::CallAnswered { .. })));
}

#[test]
fn auto_hang_up_after_the_configured_time() {
    let mut b = Bench::new(&ini("autoHangUpTime=5"));
    let id = b.dial();
    b.advance(Duration::from_secs(10)); // ringing time does not count
    b.answered(id, SessionTimerAsk::default());
    b.sip();
    b.advance(Duration::from_millis(4_999));
    assert!(b.sip().is_empty());
    b.advance(Duration::from_millis(1));
    let sip = b.sip();
    assert!(sip
        .iter()
        .any(|(_, a)| matches!(a, SipAction::Hangup { leg } if *leg == id)));
}

#[test]
fn status_says_4_for_the_disconnected_window_then_0() {
    let mut b = Bench::new(&ini("statusDisconnectedTime=2000"));
    assert_eq!(b.status(), "0");
    let id = b.dial();
    assert_eq!(b.status(), "1");
    b.answered(id, SessionTimerAsk::default());
    assert_eq!(b.status(), "2");
    b.ended(id, 200, EndedBy::Remote);
    assert_eq!(b.status(), "4");
    b.advance(Duration::from_millis(1_999));
    assert_eq!(b.status(), "4");
    b.advance(Duration::from_millis(1));
    assert_eq!(b.status(), "0");
}

#[test]
fn dial_on_start_waits_for_the_registration() {
    let mut b = Bench::with_call_on_start(&ini(""), Some(("1002".into(), None)));
    let sip = b.sip();
    assert!(sip
        .iter()
        .any(|(_, a)| matches!(a, SipAction::StartRegistration(_))));
    assert!(!opens(&b.media()), "nothing dialled before registering");
    b.input(Input::Registration(RegistrationEvent::Failed {
        account: 1,
        code: 503,
        reason: "Service Unavailable".into(),
        retry_in: 30,
    }));
    assert!(!opens(&b.media()), "a failure dials nothing");
    b.input(Input::Registration(RegistrationEvent::Registered {
        account: 1,
        code: 200,
        reason: "OK".into(),
        expires: 300,
        contact: "sip:1001@127.0.0.1:5060".into(),
    }));
    b.open_media();
    let sip = b.sip();
    assert!(
        sip.iter()
            .any(|(_, a)| matches!(a, SipAction::Dial { target, .. } if target.contains("1002"))),
        "{sip:?}"
    );
}

#[test]
fn hangup_without_an_answer_ends_the_call_after_the_grace() {
    let mut b = Bench::new(&ini(""));
    let id = b.dial();
    b.answered(id, SessionTimerAsk::default());
    b.sip();
    b.events();
    let hangup = b.command(Command::Hangup { call: Some(id) });
    assert!(b.reply(hangup).is_none(), "replies once the call has ended");
    b.advance(Duration::from_millis(7_999));
    assert!(b.reply(hangup).is_none());
    b.advance(Duration::from_millis(1));
    assert!(b.reply(hangup).is_some_and(|r| r.is_ok()));
    let codes: Vec<u16> = b
        .events()
        .into_iter()
        .filter_map(|e| match e {
            EventKind::CallEnded { code, .. } => Some(code),
            _ => None,
        })
        .collect();
    assert_eq!(codes, vec![408]);
}

#[test]
fn hangupall_replies_once_every_call_ended() {
    let mut b = Bench::new(&ini(""));
    let one = b.dial();
    b.answered(one, SessionTimerAsk::default());
    let two = b.dial();
    b.answered(two, SessionTimerAsk::default());
    b.sip();
    let all = b.command(Command::HangupAll);
    assert_eq!(
        b.sip()
            .iter()
            .filter(|(_, a)| matches!(a, SipAction::Hangup { .. }))
            .count(),
        2
    );
    b.ended(one, 200, EndedBy::Local);
    assert!(b.reply(all).is_none(), "one call is still up");
    b.ended(two, 200, EndedBy::Local);
    let text = &b.reply(all).expect("replied").as_ref().expect("ok").text;
    assert_eq!(text, &format!("ended call {one}, {two}"));
}

#[test]
fn a_refer_places_the_new_call_and_notifies_in_order() {
    let mut b = Bench::new(&ini(""));
    b.incoming(1 << 62, SessionTimerAsk::default());
    let answer = b.command(Command::Answer { call: None });
    b.open_media();
    assert!(b.reply(answer).is_some_and(|r| r.is_ok()));
    b.input(Input::Leg {
        leg: 1 << 62,
        signal: LegSignal::Confirmed,
    });
    b.sip();
    b.input(Input::Leg {
        leg: 1 << 62,
        signal: LegSignal::Refer {
            target: "sip:1003@127.0.0.1".into(),
            answer: 7,
        },
    });
    b.open_media();
    let sip = b.sip();
    let kinds: Vec<String> = sip.iter().map(|(_, a)| format!("{a:?}")).collect();
    assert!(kinds[0].starts_with("Respond(7, 202)"), "{kinds:?}");
    let new_leg = sip
        .iter()
        .find_map(|(_, a)| match a {
            SipAction::Dial { leg, .. } => Some(*leg),
            _ => None,
        })
        .expect("the new call");
    assert!(kinds
        .iter()
        .any(|k| k.contains("NotifyRefer") && k.ends_with("100)")));
    b.answered(new_leg, SessionTimerAsk::default());
    let sip = b.sip();
    let notify = sip.iter().find_map(|(t, a)| match a {
        SipAction::NotifyRefer { code, done, .. } => Some((*t, *code, *done)),
        _ => None,
    });
    let Some((Some(ticket), 200, true)) = notify else {
        panic!("a final NOTIFY 200 with a ticket: {sip:?}");
    };
    // Our leg ends only once the final NOTIFY is done: a BYE first would end the
    // dialog the NOTIFY travels in.
    let hangup = |sip: &[(Option<Ticket>, SipAction)]| {
        sip.iter()
            .any(|(_, a)| matches!(a, SipAction::Hangup { leg } if *leg == 1 << 62))
    };
    assert!(
        !hangup(&sip),
        "hung up before the NOTIFY was answered: {sip:?}"
    );
    b.done(ticket, Done::Unit(Ok(())));
    let sip = b.sip();
    assert!(hangup(&sip), "the transferred leg is hung up: {sip:?}");
}

#[test]
fn register_replies_once_every_registrar_answered() {
    let mut b = Bench::new(&format!(
        "{}[Account2]\nserver=127.0.0.1\ndomain=127.0.0.1\nusername=1003\n",
        ini("")
    ));
    b.sip();
    let r = b.command(Command::Register { account: None });
    let asks: Vec<Ticket> = b
        .sip()
        .into_iter()
        .filter_map(|(t, a)| matches!(a, SipAction::Register { on: true, .. }).then_some(t?))
        .collect();
    assert_eq!(asks.len(), 2);
    let ok = Outcome {
        code: 200,
        reason: "OK".into(),
        expires: 300,
    };
    b.done(asks[0], Done::Registration(ok.clone()));
    assert!(b.reply(r).is_none());
    b.done(asks[1], Done::Registration(ok));
    let text = &b.reply(r).expect("replied").as_ref().expect("ok").text;
    assert!(text.contains("account 1 registered") && text.contains("account 2 registered"));
}

#[test]
fn exit_ends_calls_unregisters_and_stops_within_the_grace() {
    let mut b = Bench::new(&ini(""));
    let id = b.dial();
    b.answered(id, SessionTimerAsk::default());
    b.sip();
    let exit = b.command(Command::Exit);
    assert!(b
        .sip()
        .iter()
        .any(|(_, a)| matches!(a, SipAction::Hangup { .. })));
    // The far end never answers the BYE: after 4 s the call is ended here and the
    // registrations are stopped.
    b.advance(Duration::from_secs(4));
    let stop = b
        .sip()
        .into_iter()
        .find_map(|(t, a)| matches!(a, SipAction::StopAll).then_some(t))
        .flatten()
        .expect("everything stopped");
    assert!(b.reply(exit).is_none());
    b.done(stop, Done::Unit(Ok(())));
    assert!(b.reply(exit).is_some_and(|r| r.is_ok()));
    assert!(b.outputs.iter().any(|o| matches!(o, Output::Stopped)));
}

#[test]
fn a_level_change_goes_to_the_media_at_once_and_replies_once_stored() {
    let mut b = Bench::new(&ini(""));
    b.media();
    let r = b.command(Command::Level {
        kind: microsip_engine::command::LevelKind::Speaker,
        change: microsip_engine::command::LevelChange::Relative(5),
    });
    assert!(b
        .media()
        .iter()
        .any(|(_, a)| matches!(a, MediaAction::SetLevels(_))));
    let stores: Vec<String> = b
        .outputs
        .iter()
        .filter_map(|o| match o {
            Output::Store {
                action: StoreAction::SetConfig { key, value, .. },
                ..
            } => Some(format!("{key}={value}")),
            _ => None,
        })
        .collect();
    assert_eq!(stores.len(), 1, "{stores:?}");
    assert!(stores[0].starts_with("volumeOutput="));
    // The write is the driver's (off the signalling task); the reply follows it.
    assert!(b.reply(r).is_none());
    b.answer_stores();
    assert!(b.reply(r).is_some_and(|r| r.is_ok()));
}

#[test]
fn levels_reads_the_levels_the_ini_and_the_commands_set() {
    let mut b = Bench::new(&ini("volumeOutput=70\nvolumeInput=30"));
    let r = b.command(Command::Levels);
    let first = b.reply(r).expect("replied at once").as_ref().expect("ok");
    assert_eq!(first.text, "speaker 70 on, microphone 30 on");
    assert_eq!(first.data["speaker"], 70);
    assert_eq!(first.data["microphoneMuted"], false);
    b.command(Command::Mute { on: Some(true) });
    b.command(Command::Level {
        kind: microsip_engine::command::LevelKind::Speaker,
        change: microsip_engine::command::LevelChange::Absolute(40),
    });
    b.answer_stores();
    let r = b.command(Command::Levels);
    let now = b.reply(r).expect("replied at once").as_ref().expect("ok");
    assert_eq!(now.text, "speaker 40 on, microphone 30 muted");
    assert_eq!(now.data["speaker"], 40);
    assert_eq!(now.data["microphoneMuted"], true);
}

#[test]
fn a_message_inside_a_call_is_kept_then_answered_and_names_the_call() {
    let mut b = Bench::new(&ini(""));
    let id = b.dial();
    b.answered(id, SessionTimerAsk::default());
    b.sip();
    b.events();
    b.input(Input::Leg {
        leg: id,
        signal: LegSignal::Message(microsip_engine::io::MessageIn {
            from: "sip:1002@127.0.0.1".into(),
            display_name: None,
            to: "sip:1001@127.0.0.1".into(),
            content_type: "text/plain".into(),
            text: "hello".into(),
            answer: 9,
            call: None,
        }),
    });
    assert!(b.sip().is_empty(), "no 200 before the message is kept");
    b.answer_stores();
    let sip = b.sip();
    assert!(
        sip.iter().any(|(_, a)| matches!(
            a,
            SipAction::Respond {
                answer: 9,
                code: 200,
                ..
            }
        )),
        "{sip:?}"
    );
    let got = b.events().into_iter().find_map(|e| match e {
        EventKind::MessageReceived { call, text, .. } => Some((call, text)),
        _ => None,
    });
    assert_eq!(got, Some((Some(id), "hello".to_string())));
}

#[test]
fn a_new_local_address_ends_the_calls_registers_again_and_moves_media() {
    let mut b = Bench::new(&ini(""));
    let id = b.dial();
    b.answered(id, SessionTimerAsk::default());
    b.events();
    b.sip();
    let new_ip: std::net::IpAddr = [10, 9, 0, 3].into();
    b.input(Input::Network(microsip_engine::io::NetworkChange {
        previous: [127, 0, 0, 1].into(),
        address: Some(new_ip),
        restarted: true,
        media_ips: HashMap::new(),
        other_family_ip: None,
    }));
    b.answer_stores();
    let events = b.events();
    assert!(
        events.iter().any(|e| matches!(e, EventKind::AccountNetwork { account: 1, state, address: Some(a), previous }
            if state == "changed" && a == "10.9.0.3" && previous == "127.0.0.1")),
        "{events:?}"
    );
    assert!(
        events.iter().any(
            |e| matches!(e, EventKind::CallEnded { call, code: 503, reason, .. }
            if *call == id && reason.contains("network changed") && reason.contains("127.0.0.1"))
        ),
        "{events:?}"
    );
    let sip = b.sip();
    assert!(
        sip.iter()
            .any(|(_, a)| matches!(a, SipAction::StartRegistration(c) if c.account == 1)),
        "{sip:?}"
    );
    // A new call binds its RTP on the new address and offers it.
    let r = b.command(Command::Dial {
        target: "1002".into(),
        account: None,
        hold_active: true,
        numeric: false,
    });
    let media = b.media();
    assert!(
        media
            .iter()
            .any(|(_, a)| matches!(a, MediaAction::Open { bind: Some(ip), .. } if *ip == new_ip)),
        "{media:?}"
    );
    for (ticket, action) in media {
        if let (Some(ticket), MediaAction::Open { call, .. }) = (ticket, action) {
            b.done(ticket, Done::MediaOpened(Ok((40_000 + call as u16).into())));
        }
    }
    assert!(b.reply(r).is_some());
    let sip = b.sip();
    assert!(
        sip.iter().any(|(_, a)| matches!(a, SipAction::Dial { offer, .. } if offer.contains("c=IN IP4 10.9.0.3"))),
        "{sip:?}"
    );
}

#[test]
fn a_new_local_address_subscribes_and_publishes_again_once_registered() {
    let mut b = Bench::new(&ini("").replace(
        "password=secret\n",
        "password=secret\nvoicemailNumber=*97\npublish=1\n",
    ));
    let registered = || {
        Input::Registration(RegistrationEvent::Registered {
            account: 1,
            code: 200,
            reason: "OK".into(),
            expires: 300,
            contact: "sip:1001@127.0.0.1:5060".into(),
        })
    };
    let presence_asks = |sip: &[(Option<Ticket>, SipAction)]| {
        let subscribes = sip
            .iter()
            .filter(|(_, a)| matches!(a, SipAction::Subscribe { .. }))
            .count();
        let publishes = sip
            .iter()
            .filter(|(_, a)| matches!(a, SipAction::Publish { .. }))
            .count();
        (subscribes, publishes)
    };
    b.sip();
    b.input(registered());
    assert_eq!(
        presence_asks(&b.sip()),
        (1, 1),
        "MWI subscription and PUBLISH"
    );
    b.input(Input::Network(microsip_engine::io::NetworkChange {
        previous: [127, 0, 0, 1].into(),
        address: Some([10, 9, 0, 3].into()),
        restarted: true,
        media_ips: HashMap::new(),
        other_family_ip: None,
    }));
    b.answer_stores();
    assert_eq!(
        presence_asks(&b.sip()),
        (0, 0),
        "nothing before registering on the new address"
    );
    b.input(registered());
    assert_eq!(
        presence_asks(&b.sip()),
        (1, 1),
        "made again on the new endpoint"
    );
    // A registration refresh on the same endpoint starts nothing twice.
    b.input(registered());
    assert_eq!(presence_asks(&b.sip()), (0, 0));
}

#[test]
fn the_same_address_back_registers_again_and_keeps_the_calls() {
    let mut b = Bench::new(&ini(""));
    let id = b.dial();
    b.answered(id, SessionTimerAsk::default());
    b.events();
    b.sip();
    for address in [None, Some([127, 0, 0, 1].into())] {
        b.input(Input::Network(microsip_engine::io::NetworkChange {
            previous: [127, 0, 0, 1].into(),
            address,
            restarted: false,
            media_ips: HashMap::new(),
            other_family_ip: None,
        }));
    }
    b.answer_stores();
    let states: Vec<String> = b
        .events()
        .into_iter()
        .filter_map(|e| match e {
            EventKind::AccountNetwork { state, .. } => Some(state),
            EventKind::CallEnded { .. } => Some("ended".into()),
            _ => None,
        })
        .collect();
    assert_eq!(states, ["down", "up"]);
    let sip = b.sip();
    assert!(
        sip.iter().any(|(_, a)| matches!(
            a,
            SipAction::Register {
                account: 1,
                on: true
            }
        )),
        "{sip:?}"
    );
}

#[test]
fn an_ipv6_only_offer_is_answered_from_our_ipv6_address() {
    let v6: std::net::IpAddr = std::net::Ipv6Addr::LOCALHOST.into();
    let mut b = Bench::with_setup(&ini("autoAnswer=all"), None, Some(v6));
    let invite = IncomingInvite {
        remote: "sip:1002@127.0.0.1".into(),
        remote_user: "1002".into(),
        remote_domain: "127.0.0.1".into(),
        to_user: "1001".into(),
        to_domain: "127.0.0.1".into(),
        sdp: Some(OFFER.replace("IN IP4 127.0.0.1", "IN IP6 ::1")),
        ..IncomingInvite::default()
    };
    b.input(Input::Leg {
        leg: 1 << 62,
        signal: LegSignal::Incoming(Box::new(invite)),
    });
    b.advance(Duration::from_millis(10));
    let media = b.media();
    assert!(
        media
            .iter()
            .any(|(_, a)| matches!(a, MediaAction::Open { bind: Some(ip), .. } if *ip == v6)),
        "{media:?}"
    );
    for (ticket, action) in media {
        if let (Some(ticket), MediaAction::Open { call, .. }) = (ticket, action) {
            b.done(ticket, Done::MediaOpened(Ok((40_000 + call as u16).into())));
        }
    }
    let sip = b.sip();
    assert!(
        sip.iter().any(
            |(_, a)| matches!(a, SipAction::Answer { sdp, .. } if sdp.contains("c=IN IP6 ::1"))
        ),
        "{sip:?}"
    );
    // An IPv4 offer on the same phone stays on IPv4.
    let mut b = Bench::with_setup(&ini("autoAnswer=all"), None, Some(v6));
    b.incoming(1 << 62, SessionTimerAsk::default());
    b.advance(Duration::from_millis(10));
    let media = b.media();
    assert!(
        media
            .iter()
            .any(|(_, a)| matches!(a, MediaAction::Open { bind: None, .. })),
        "{media:?}"
    );
}

/// The REFER asked for, with its ticket.
fn refer_of(sip: &[(Option<Ticket>, SipAction)]) -> Option<(Ticket, u64, String, Option<u64>)> {
    sip.iter().find_map(|(t, a)| match a {
        SipAction::Refer {
            leg,
            target,
            replacing,
        } => Some(((*t)?, *leg, target.clone(), *replacing)),
        _ => None,
    })
}

fn hung_up(sip: &[(Option<Ticket>, SipAction)], which: u64) -> bool {
    sip.iter()
        .any(|(_, a)| matches!(a, SipAction::Hangup { leg } if *leg == which))
}

fn transfers(events: &[EventKind]) -> Vec<(u64, u16, &'static str, Option<u64>)> {
    events
        .iter()
        .filter_map(|e| match e {
            EventKind::CallTransfer {
                call,
                code,
                kind,
                with,
                ..
            } => Some((*call, *code, *kind, *with)),
            _ => None,
        })
        .collect()
}

/// Two answered calls of ours: B (`dial`, then held by the second dial) and C.
fn two_calls(b: &mut Bench) -> (u64, u64) {
    let first = b.dial();
    b.answered(first, SessionTimerAsk::default());
    let second = b.dial();
    for (t, a) in b.sip() {
        if let (Some(t), SipAction::Reinvite { .. }) = (t, a) {
            b.done(
                t,
                Done::Reinvite(Ok((200, Some(ANSWER.into()), SessionTimerAsk::default()))),
            );
        }
    }
    b.answered(second, SessionTimerAsk::default());
    b.sip();
    b.events();
    (first, second)
}

#[test]
fn attended_transfer_refers_with_replaces_and_ends_both_calls_on_success() {
    let mut b = Bench::new(&ini(""));
    let (first, second) = two_calls(&mut b);
    let r = b.command(Command::Transfer {
        target: second.to_string(),
        call: Some(first),
    });
    let sip = b.sip();
    let (ticket, leg, target, replacing) = refer_of(&sip).expect("a REFER");
    assert_eq!((leg, replacing), (first, Some(second)));
    assert_eq!(target, "sip:1002@127.0.0.1");
    assert!(
        b.reply(r).is_none(),
        "the reply waits for the REFER's answer"
    );
    b.done(ticket, Done::Refer(Ok(202)));
    let reply = b.reply(r).unwrap().clone().unwrap();
    assert_eq!(reply.data["kind"], "attended");
    assert_eq!(reply.data["with"], second);
    assert_eq!(
        transfers(&b.events()),
        vec![(first, 202, "attended", Some(second))]
    );
    // NOTIFY 100 changes nothing; the final 200 ends both our calls.
    b.input(Input::Leg {
        leg: first,
        signal: LegSignal::ReferProgress {
            code: 100,
            reason: "Trying".into(),
            done: false,
        },
    });
    assert!(!hung_up(&b.sip(), first));
    b.input(Input::Leg {
        leg: first,
        signal: LegSignal::ReferProgress {
            code: 200,
            reason: "OK".into(),
            done: true,
        },
    });
    let sip = b.sip();
    assert!(hung_up(&sip, first) && hung_up(&sip, second), "{sip:?}");
    assert_eq!(
        transfers(&b.events()),
        vec![
            (first, 100, "attended", Some(second)),
            (first, 200, "attended", Some(second))
        ]
    );
}

#[test]
fn an_attended_transfer_that_fails_keeps_both_calls() {
    let mut b = Bench::new(&ini(""));
    let (first, second) = two_calls(&mut b);
    b.command(Command::Transfer {
        target: second.to_string(),
        call: Some(first),
    });
    let (ticket, ..) = refer_of(&b.sip()).expect("a REFER");
    b.done(ticket, Done::Refer(Ok(202)));
    b.input(Input::Leg {
        leg: first,
        signal: LegSignal::ReferProgress {
            code: 486,
            reason: "Busy Here".into(),
            done: true,
        },
    });
    let sip = b.sip();
    assert!(!hung_up(&sip, first) && !hung_up(&sip, second), "{sip:?}");
    // The next transfer of that call is blind again.
    b.command(Command::Transfer {
        target: "1003".into(),
        call: Some(first),
    });
    let (_, _, target, replacing) = refer_of(&b.sip()).expect("a REFER");
    assert_eq!((target.as_str(), replacing), ("sip:1003@127.0.0.1", None));
}

#[test]
fn attended_transfer_needs_the_target_call_answered() {
    let mut b = Bench::new(&ini(""));
    let first = b.dial();
    b.answered(first, SessionTimerAsk::default());
    let second = b.dial();
    let r = b.command(Command::Transfer {
        target: second.to_string(),
        call: Some(first),
    });
    let err = b.reply(r).unwrap().clone().unwrap_err();
    assert_eq!(err.code.as_str(), "wrong_state", "{}", err.message);
    assert!(refer_of(&b.sip()).is_none());
}

/// An answered incoming call on `leg`; returns its call id.
fn answered_incoming(b: &mut Bench, leg: u64) -> u64 {
    b.incoming(leg, SessionTimerAsk::default());
    let r = b.command(Command::Answer { call: None });
    b.open_media();
    let id = b.reply(r).unwrap().clone().unwrap().data["call"]
        .as_u64()
        .unwrap();
    b.input(Input::Leg {
        leg,
        signal: LegSignal::Confirmed,
    });
    b.sip();
    b.events();
    id
}

fn incoming_replacing(b: &mut Bench, leg: u64, replaces: microsip_sip::ReplacesMatch) {
    let invite = IncomingInvite {
        remote: "sip:1003@127.0.0.1".into(),
        remote_user: "1003".into(),
        remote_domain: "127.0.0.1".into(),
        to_user: "1001".into(),
        to_domain: "127.0.0.1".into(),
        sdp: Some(OFFER.into()),
        replaces: Some(replaces),
        ..IncomingInvite::default()
    };
    b.input(Input::Leg {
        leg,
        signal: LegSignal::Incoming(Box::new(invite)),
    });
}

#[test]
fn an_invite_with_replaces_is_answered_at_once_and_ends_the_old_call() {
    let mut b = Bench::new(&ini(""));
    let old_leg = 1 << 62;
    let old = answered_incoming(&mut b, old_leg);
    let new_leg = old_leg + 1;
    incoming_replacing(
        &mut b,
        new_leg,
        microsip_sip::ReplacesMatch::Leg {
            leg: old_leg,
            confirmed: true,
            we_initiated: false,
            early_only: false,
        },
    );
    b.open_media();
    let sip = b.sip();
    assert!(
        !sip.iter()
            .any(|(_, a)| matches!(a, SipAction::Ringing { .. })),
        "no ringing for a replacing call: {sip:?}"
    );
    assert!(
        sip.iter()
            .any(|(_, a)| matches!(a, SipAction::Answer { leg, .. } if *leg == new_leg)),
        "answered at once: {sip:?}"
    );
    assert!(
        !hung_up(&sip, old_leg),
        "the old call waits for the new one's ACK"
    );
    b.input(Input::Leg {
        leg: new_leg,
        signal: LegSignal::Confirmed,
    });
    assert!(hung_up(&b.sip(), old_leg));
    let events = b.events();
    let new = transfers(&events)[0].3.expect("the new call");
    assert_eq!(transfers(&events), vec![(old, 200, "replaced", Some(new))]);
}

#[test]
fn an_invite_with_replaces_naming_no_call_or_a_bad_one_is_refused() {
    use microsip_sip::ReplacesMatch;
    let mut b = Bench::new(&ini(""));
    let old_leg = 1 << 62;
    answered_incoming(&mut b, old_leg);
    let ringing_leg = old_leg + 5;
    b.incoming(ringing_leg, SessionTimerAsk::default());
    b.sip();
    let cases = [
        (ReplacesMatch::NoDialog, 481),
        (
            ReplacesMatch::Malformed("Replaces has no to-tag".into()),
            400,
        ),
        (
            ReplacesMatch::Leg {
                leg: old_leg,
                confirmed: true,
                we_initiated: false,
                early_only: true,
            },
            486,
        ),
        (
            ReplacesMatch::Leg {
                leg: ringing_leg,
                confirmed: false,
                we_initiated: false,
                early_only: false,
            },
            481,
        ),
    ];
    for (i, (named, expected)) in cases.into_iter().enumerate() {
        let leg = old_leg + 10 + i as u64;
        incoming_replacing(&mut b, leg, named);
        let sip = b.sip();
        assert!(
            sip.iter().any(
                |(_, a)| matches!(a, SipAction::Reject { leg: l, code, .. } if *l == leg && *code == expected)
            ),
            "case {i}: {sip:?}"
        );
        assert!(
            !hung_up(&sip, old_leg),
            "case {i}: the old call is unharmed"
        );
    }
}

#[test]
fn a_refer_with_replaces_sends_the_invite_with_replaces() {
    let mut b = Bench::new(&ini(""));
    let leg = 1 << 62;
    let call = answered_incoming(&mut b, leg);
    b.input(Input::Leg {
        leg,
        signal: LegSignal::Refer {
            target: "sip:1003@127.0.0.1:5090?Replaces=abc%40h%3Bto-tag%3D1%3Bfrom-tag%3D2".into(),
            answer: 9,
        },
    });
    b.open_media();
    let sip = b.sip();
    let dial = sip.iter().find_map(|(_, a)| match a {
        SipAction::Dial {
            target, headers, ..
        } => Some((target.clone(), headers.clone())),
        _ => None,
    });
    let (target, headers) = dial.expect("the INVITE");
    assert_eq!(target, "sip:1003@127.0.0.1:5090");
    assert_eq!(
        headers,
        vec![(
            "Replaces".to_string(),
            "abc@h;to-tag=1;from-tag=2".to_string()
        )]
    );
    let events = b.events();
    assert_eq!(transfers(&events), vec![(call, 202, "attended", None)]);
}

#[test]
fn redial_calls_the_last_number_and_says_when_there_is_none() {
    let mut b = Bench::new(&ini(""));
    let r = b.command(Command::Redial);
    let err = b.reply(r).unwrap().clone().unwrap_err();
    assert_eq!(err.code.as_str(), "no_call");
    assert!(err.message.contains("nothing to redial"), "{}", err.message);
    let first = b.dial();
    b.ended(first, 486, EndedBy::Remote);
    b.sip();
    let r = b.command(Command::Redial);
    b.open_media();
    assert!(b.reply(r).unwrap().is_ok());
    let sip = b.sip();
    assert!(
        sip.iter().any(
            |(_, a)| matches!(a, SipAction::Dial { target, .. } if target == "sip:1002@127.0.0.1")
        ),
        "{sip:?}"
    );
    // After a restart: lastCallNumber, through the dial plan.
    let mut b = Bench::new(&ini("lastCallNumber=1005"));
    b.command(Command::Redial);
    b.open_media();
    let sip = b.sip();
    assert!(
        sip.iter().any(
            |(_, a)| matches!(a, SipAction::Dial { target, .. } if target == "sip:1005@127.0.0.1")
        ),
        "{sip:?}"
    );
}

#[test]
fn callback_calls_the_last_missed_caller() {
    let mut b = Bench::new(&ini(""));
    let r = b.command(Command::Callback);
    b.answer_stores();
    let err = b.reply(r).unwrap().clone().unwrap_err();
    assert!(err.message.contains("no missed call"), "{}", err.message);
    // A call that rang and was cancelled.
    b.incoming(1 << 62, SessionTimerAsk::default());
    b.ended(1 << 62, 487, EndedBy::Remote);
    b.sip();
    let r = b.command(Command::Callback);
    b.open_media();
    assert!(b.reply(r).unwrap().is_ok());
    let sip = b.sip();
    assert!(
        sip.iter().any(
            |(_, a)| matches!(a, SipAction::Dial { target, .. } if target == "sip:1002@127.0.0.1")
        ),
        "{sip:?}"
    );
}

#[test]
fn callback_after_a_restart_reads_the_history() {
    let mut b = Bench::new(&ini(""));
    let r = b.command(Command::Callback);
    let mut stores = Vec::new();
    let mut rest = Vec::new();
    for o in b.outputs.drain(..) {
        match o {
            Output::Store { ticket, action } => stores.push((ticket, action)),
            other => rest.push(other),
        }
    }
    b.outputs = rest;
    let (ticket, _) = stores
        .into_iter()
        .find(|(_, a)| matches!(a, StoreAction::ListHistory))
        .expect("the history is read");
    let history = vec![
        serde_json::json!({"number": "1007", "type": "missed", "time": 100}),
        serde_json::json!({"number": "1008", "type": "missed", "time": 300}),
        serde_json::json!({"number": "1009", "type": "in", "time": 400}),
    ];
    b.done(ticket.unwrap(), Done::List(Ok(history)));
    b.open_media();
    assert!(b.reply(r).unwrap().is_ok());
    let sip = b.sip();
    assert!(
        sip.iter().any(
            |(_, a)| matches!(a, SipAction::Dial { target, .. } if target == "sip:1008@127.0.0.1")
        ),
        "{sip:?}"
    );
}

#[test]
fn an_invite_with_replaces_for_our_unanswered_call_cancels_it() {
    // RFC 3891 §3: an early dialog we started may be replaced (the caller picked
    // up elsewhere); the old INVITE is cancelled once the new call is confirmed.
    let mut b = Bench::new(&ini(""));
    let ringing_out = b.dial();
    b.input(Input::Leg {
        leg: ringing_out,
        signal: LegSignal::Ringing,
    });
    b.sip();
    let new_leg = (1 << 62) + 1;
    incoming_replacing(
        &mut b,
        new_leg,
        microsip_sip::ReplacesMatch::Leg {
            leg: ringing_out,
            confirmed: false,
            we_initiated: true,
            early_only: true,
        },
    );
    b.open_media();
    let sip = b.sip();
    assert!(
        sip.iter()
            .any(|(_, a)| matches!(a, SipAction::Answer { leg, .. } if *leg == new_leg)),
        "{sip:?}"
    );
    b.input(Input::Leg {
        leg: new_leg,
        signal: LegSignal::Confirmed,
    });
    assert!(hung_up(&b.sip(), ringing_out));
}
