//! Recording calls, playing files into them, and the conference: the `record`,
//! `play` and `conference` commands, `autoRecording`, and what happens to all three
//! when a call is held or ends, or its file runs out.
//!
//! The media thread does the audio (`microsip_media::recorder`, `mixer`); this
//! module decides which call, names the files the way MicroSIP does, keeps each
//! call's state for `calls`, and publishes `call.recording`, `call.playing` and
//! `call.conference`.

use std::path::PathBuf;
use std::time::SystemTime;

use microsip_config::Account;
use microsip_media::RecordingStatus;
use serde_json::json;
use tracing::{info, warn};

use crate::calls::CallDirection;
use crate::command::{CallId, ConferenceAction, PlayEnd};
use crate::core::Core;
use crate::event::EventKind;
use crate::io::{MediaAction, MediaFailure, ReplyTo};
use crate::reply::{fail, ok_with, ErrorCode, Reply};
use crate::then::Then;

/// What a call has beyond plain audio.
#[derive(Debug, Default)]
pub(crate) struct CallExtras {
    /// The file being recorded.
    pub(crate) recording: Option<PathBuf>,
    /// The file being played into the call.
    pub(crate) playing: Option<String>,
    /// Merged into the conference.
    pub(crate) in_conference: bool,
}

/// Characters MicroSIP replaces by `_` in a recording's name (see
/// [`recording_file_name`]).
const UNSAFE_IN_NAMES: [char; 12] = ['/', '\\', '?', '%', '*', ':', '|', '"', '<', '>', '.', ' '];

/// MicroSIP's recording file name, without the folder:
/// `YYYYMMDD-HHMMSS-<remote user>-<outgoing|incoming>-<account label, else local
/// user>`, local time, then `/ \ ? % * : | " < > .` and spaces replaced by `_`, then
/// the extension. Taken from MicroSIP's `msip_call_recording_start` (global.cpp,
/// e.g. MicroSIP 3.19.27, github.com/nirzaf/MicroSIP-3.19.27-src): `filename.Format(
/// "%s-%s-%s-%s", tm.Format("%Y%m%d-%H%M%S"), remoteURI.user, role == UAC ?
/// "outgoing" : "incoming", label or localURI.user)`. Control characters are
/// replaced too (a name must not carry them on Linux).
pub(crate) fn recording_file_name(
    local_time: &str,
    remote_user: &str,
    direction: CallDirection,
    account: &str,
) -> String {
    let raw = format!(
        "{local_time}-{remote_user}-{}-{account}",
        match direction {
            CallDirection::Outgoing => "outgoing",
            CallDirection::Incoming => "incoming",
        }
    );
    let safe: String = raw
        .chars()
        .map(|c| {
            if UNSAFE_IN_NAMES.contains(&c) || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    format!("{safe}.wav")
}

/// The account part of a recording's name: the label of a configured account, else
/// its user.
fn account_word(account: &Account) -> String {
    label_or_user(
        account.number,
        account.label.as_deref(),
        account.username.as_deref(),
    )
}

/// MicroSIP: `accountId && !label.IsEmpty() ? label : localURI.user`.
fn label_or_user(number: u32, label: Option<&str>, user: Option<&str>) -> String {
    match label.map(str::trim) {
        Some(label) if number != 0 && !label.is_empty() => label.to_string(),
        _ => user.unwrap_or_default().to_string(),
    }
}

/// `t` as local time `YYYYMMDD-HHMMSS` (MicroSIP uses the local clock).
fn local_stamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let tm = microsip_sip::time::local_time(i64::try_from(secs).unwrap_or(0));
    format!(
        "{:04}{:02}{:02}-{:02}{:02}{:02}",
        tm.year, tm.month, tm.day, tm.hour, tm.minute, tm.second
    )
}

pub(crate) fn to_media_end(end: PlayEnd) -> microsip_media::PlayEnd {
    match end {
        PlayEnd::Stop => microsip_media::PlayEnd::Stop,
        PlayEnd::Loop => microsip_media::PlayEnd::Loop,
        PlayEnd::Hangup => microsip_media::PlayEnd::Hangup,
    }
}

impl Core {
    /// The answered call a media command acts on (`id`, else the active call).
    fn answered_call(&self, id: Option<CallId>, what: &str) -> Result<CallId, Reply> {
        let id = self.find(id)?;
        match self.calls.get(&id) {
            Some(c) if c.answered.is_some() => Ok(id),
            Some(_) => Err(fail(
                ErrorCode::WrongState,
                format!("call {id} is not answered yet: nothing to {what}"),
            )),
            None => Err(fail(
                ErrorCode::NoSuchCall,
                format!("there is no call {id}"),
            )),
        }
    }

    /// `record start|stop [ID]`. Replies once the recorder runs (start) or the file
    /// is finished (stop).
    pub(crate) fn record(&mut self, id: Option<CallId>, on: bool, reply: Option<ReplyTo>) {
        let id = match self.answered_call(id, "record") {
            Ok(id) => id,
            Err(r) => return self.reply(reply, r),
        };
        if on {
            self.start_recording(id, reply)
        } else {
            self.stop_recording(id, reply)
        }
    }

    fn start_recording(&mut self, id: CallId, reply: Option<ReplyTo>) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        if let Some(path) = &call.extras.recording {
            let path = path.display().to_string();
            return self.reply(
                reply,
                ok_with(
                    format!("call {id} is already recording to {path}"),
                    json!({ "call": id, "path": path }),
                ),
            );
        }
        let account = self
            .accounts
            .get(&call.account)
            .map(|s| account_word(&s.account))
            .unwrap_or_default();
        let name = recording_file_name(
            &local_stamp(self.now.wall),
            &call.number,
            call.direction,
            &account,
        );
        if self.config.settings.recording_format != microsip_config::RecordingFormat::Wav {
            info!("call {id}: recordingFormat is not wav; recording WAV (no MP3 encoder)");
        }
        let path = self.config.recording_dir().join(name);
        // Taken now so a second `record start` does not start another.
        if let Some(c) = self.calls.get_mut(&id) {
            c.extras.recording = Some(path.clone());
        }
        self.media_then(
            MediaAction::StartRecording { call: id, path },
            Some(Then::RecordingStarted { call: id, reply }),
        );
    }

    /// The recorder runs (into the file the driver chose) or could not start.
    pub(crate) fn recording_started(
        &mut self,
        id: CallId,
        result: Result<PathBuf, MediaFailure>,
        reply: Option<ReplyTo>,
    ) {
        let answer = match result {
            Ok(path) => {
                let Some(c) = self.calls.get_mut(&id) else {
                    return self.reply(
                        reply,
                        fail(ErrorCode::NoSuchCall, format!("call {id} has ended")),
                    );
                };
                c.extras.recording = Some(path.clone());
                let path = path.display().to_string();
                info!("call {id}: recording to {path}");
                self.publish(EventKind::CallRecording {
                    call: id,
                    state: "started",
                    path: path.clone(),
                    error: None,
                });
                ok_with(
                    format!("call {id} recording to {path}"),
                    json!({ "call": id, "path": path }),
                )
            }
            Err(e) => {
                if let Some(c) = self.calls.get_mut(&id) {
                    c.extras.recording = None;
                }
                fail(
                    ErrorCode::Media,
                    format!("call {id}: cannot record: {}", e.message),
                )
            }
        };
        self.reply(reply, answer);
    }

    fn stop_recording(&mut self, id: CallId, reply: Option<ReplyTo>) {
        let Some(path) = self
            .calls
            .get_mut(&id)
            .and_then(|c| c.extras.recording.take())
        else {
            return self.reply(
                reply,
                ok_with(
                    format!("call {id} is not being recorded"),
                    json!({ "call": id, "path": null }),
                ),
            );
        };
        let path = path.display().to_string();
        match reply {
            Some(reply) => self.media_then(
                MediaAction::StopRecording { call: id },
                Some(Then::RecordingStopped {
                    call: id,
                    path,
                    reply,
                }),
            ),
            None => self.media(MediaAction::StopRecording { call: id }),
        }
    }

    /// The recording's file is finished.
    pub(crate) fn recording_stopped(
        &mut self,
        id: CallId,
        path_text: String,
        result: Result<Option<RecordingStatus>, MediaFailure>,
        reply: ReplyTo,
    ) {
        let (seconds, dropped, error) = match result {
            Ok(Some(status)) => (status.seconds(), status.frames_dropped, status.error),
            Ok(None) => (0.0, 0, None),
            Err(e) => (0.0, 0, Some(e.message)),
        };
        self.publish(EventKind::CallRecording {
            call: id,
            state: "stopped",
            path: path_text.clone(),
            error: error.clone(),
        });
        let data = json!({
            "call": id,
            "path": path_text,
            "seconds": seconds,
            "dropped_frames": dropped,
            "error": error,
        });
        let answer = match error {
            None => ok_with(
                format!("call {id} recording stopped: {path_text} ({seconds:.1}s)"),
                data,
            ),
            Some(e) => fail(
                ErrorCode::Media,
                format!("call {id}: recording {path_text} stopped with an error: {e}"),
            ),
        };
        self.reply(Some(reply), answer);
    }

    /// `autoRecording=1`: every call is recorded once it is confirmed.
    pub(crate) fn auto_record(&mut self, id: CallId) {
        if !self.config.settings.auto_recording {
            return;
        }
        self.record(Some(id), true, None);
    }

    /// `play FILE [ID] [stop|loop|hangup]` and `play off [ID]`. Replies once the
    /// file plays (it is read off the signalling task) or could not be read.
    pub(crate) fn play(
        &mut self,
        file: Option<String>,
        id: Option<CallId>,
        at_end: PlayEnd,
        reply: ReplyTo,
    ) {
        let id = match self.answered_call(id, "play into") {
            Ok(id) => id,
            Err(r) => return self.reply(Some(reply), r),
        };
        let Some(file) = file else {
            let Some(was) = self
                .calls
                .get_mut(&id)
                .and_then(|c| c.extras.playing.take())
            else {
                return self.reply(
                    Some(reply),
                    ok_with(
                        format!("call {id} is not playing a file"),
                        json!({ "call": id, "file": null }),
                    ),
                );
            };
            self.media(MediaAction::StopPlaying { call: id });
            self.publish(EventKind::CallPlaying {
                call: id,
                state: "stopped",
                file: was.clone(),
            });
            return self.reply(
                Some(reply),
                ok_with(
                    format!("call {id} stopped playing {was}"),
                    json!({ "call": id, "file": was }),
                ),
            );
        };
        self.media_then(
            MediaAction::Play {
                call: id,
                path: PathBuf::from(&file),
                at_end: to_media_end(at_end),
            },
            Some(Then::Playing {
                call: id,
                file,
                at_end,
                reply,
            }),
        );
    }

    /// The file plays, or could not be read.
    pub(crate) fn playing(
        &mut self,
        id: CallId,
        file: String,
        at_end: PlayEnd,
        result: Result<(), MediaFailure>,
        reply: ReplyTo,
    ) {
        if let Err(e) = result {
            return self.reply(
                Some(reply),
                fail(
                    ErrorCode::Media,
                    format!("call {id}: cannot play {}", e.message),
                ),
            );
        }
        let Some(c) = self.calls.get_mut(&id) else {
            return self.reply(
                Some(reply),
                fail(ErrorCode::NoSuchCall, format!("call {id} has ended")),
            );
        };
        let replaced = c.extras.playing.replace(file.clone());
        if let Some(old) = replaced {
            self.publish(EventKind::CallPlaying {
                call: id,
                state: "stopped",
                file: old,
            });
        }
        self.publish(EventKind::CallPlaying {
            call: id,
            state: "started",
            file: file.clone(),
        });
        let end = match at_end {
            PlayEnd::Stop => "stop",
            PlayEnd::Loop => "loop",
            PlayEnd::Hangup => "hangup",
        };
        self.reply(
            Some(reply),
            ok_with(
                format!("call {id} playing {file} (at its end: {end})"),
                json!({ "call": id, "file": file, "at_end": end }),
            ),
        );
    }

    /// The media says the file played into `call` ran out.
    pub(crate) fn on_playback_ended(&mut self, call: CallId, hangup: bool) {
        let Some(file) = self
            .calls
            .get_mut(&call)
            .and_then(|c| c.extras.playing.take())
        else {
            return;
        };
        self.publish(EventKind::CallPlaying {
            call,
            state: "ended",
            file,
        });
        if hangup {
            info!("call {call}: the played file ended; hanging up");
            self.end_call(call, None);
        }
    }

    /// The media says writing the recording of `call` failed; the call goes on.
    pub(crate) fn on_recording_failed(&mut self, call: CallId, path: PathBuf, error: String) {
        if !self.calls.contains_key(&call) {
            return;
        }
        warn!("call {call}: recording {} failed: {error}", path.display());
        self.publish(EventKind::CallRecording {
            call,
            state: "failed",
            path: path.display().to_string(),
            error: Some(error),
        });
    }

    /// The calls in the conference.
    fn conference_members(&self) -> Vec<CallId> {
        self.calls
            .values()
            .filter(|c| c.extras.in_conference)
            .map(|c| c.id)
            .collect()
    }

    /// Makes `wanted` the conference (fewer than two: none), tells the media, and
    /// publishes who joined and who left.
    fn set_conference(&mut self, wanted: Vec<CallId>) -> Result<Vec<CallId>, Reply> {
        let mut wanted = wanted;
        wanted.sort_unstable();
        wanted.dedup();
        if wanted.len() < 2 {
            wanted.clear();
        }
        let before = self.conference_members();
        self.media(MediaAction::SetConference {
            calls: wanted.clone(),
        });
        for id in before.iter().filter(|id| !wanted.contains(id)) {
            if let Some(c) = self.calls.get_mut(id) {
                c.extras.in_conference = false;
            }
            self.publish(EventKind::CallConference {
                call: *id,
                state: "left",
                members: wanted.clone(),
            });
        }
        for id in wanted.iter().filter(|id| !before.contains(id)) {
            if let Some(c) = self.calls.get_mut(id) {
                c.extras.in_conference = true;
            }
            self.publish(EventKind::CallConference {
                call: *id,
                state: "joined",
                members: wanted.clone(),
            });
        }
        Ok(wanted)
    }

    /// `conference [ID...]`, `conference off [ID]`.
    pub(crate) fn conference(&mut self, action: ConferenceAction) -> Reply {
        let members = self.conference_members();
        let wanted = match action {
            ConferenceAction::Merge(ids) => {
                let ids = if ids.is_empty() {
                    self.calls
                        .values()
                        .filter(|c| c.confirmed && c.answered.is_some() && !c.local_hold)
                        .map(|c| c.id)
                        .collect()
                } else {
                    for id in &ids {
                        match self.calls.get(id) {
                            None => {
                                return fail(
                                    ErrorCode::NoSuchCall,
                                    format!("there is no call {id}"),
                                )
                            }
                            Some(c) if !c.confirmed || c.answered.is_none() => {
                                return fail(
                                    ErrorCode::WrongState,
                                    format!("call {id} is not answered yet"),
                                )
                            }
                            Some(c) if c.local_hold => {
                                return fail(
                                    ErrorCode::WrongState,
                                    format!(
                                        "call {id} is on hold: resume it first (hold {id} off)"
                                    ),
                                )
                            }
                            Some(_) => {}
                        }
                    }
                    ids
                };
                let mut all = members.clone();
                all.extend(ids);
                all.sort_unstable();
                all.dedup();
                if all.len() < 2 {
                    return fail(
                        ErrorCode::NoCall,
                        "a conference needs two answered calls that are not on hold",
                    );
                }
                all
            }
            ConferenceAction::Leave(Some(id)) => {
                if !self.calls.contains_key(&id) {
                    return fail(ErrorCode::NoSuchCall, format!("there is no call {id}"));
                }
                if !members.contains(&id) {
                    return fail(
                        ErrorCode::WrongState,
                        format!("call {id} is not in the conference"),
                    );
                }
                members.iter().copied().filter(|m| *m != id).collect()
            }
            ConferenceAction::Leave(None) => Vec::new(),
        };
        match self.set_conference(wanted) {
            Ok(now) if now.is_empty() => ok_with("no conference", json!({ "members": [] })),
            Ok(now) => {
                let list: Vec<String> = now.iter().map(|i| i.to_string()).collect();
                ok_with(
                    format!("conference of calls {}", list.join(", ")),
                    json!({ "members": now }),
                )
            }
            Err(r) => r,
        }
    }

    /// `id` was held by us: it leaves the conference.
    pub(crate) fn on_local_hold(&mut self, id: CallId) {
        if self.calls.get(&id).is_some_and(|c| c.extras.in_conference) {
            let rest: Vec<CallId> = self
                .conference_members()
                .into_iter()
                .filter(|m| *m != id)
                .collect();
            if let Err(Err(f)) = self.set_conference(rest) {
                warn!("call {id}: leaving the conference: {}", f.message);
            }
        }
    }

    /// `id`'s media is closed (the call is ending; still in the table): its
    /// recording is finished, it leaves the conference.
    pub(crate) fn on_media_closed(&mut self, id: CallId) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let recording = call.extras.recording.take();
        let playing = call.extras.playing.take();
        if let Some(path) = recording {
            self.publish(EventKind::CallRecording {
                call: id,
                state: "stopped",
                path: path.display().to_string(),
                error: None,
            });
        }
        if let Some(file) = playing {
            self.publish(EventKind::CallPlaying {
                call: id,
                state: "stopped",
                file,
            });
        }
        self.on_local_hold(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_microsip() {
        assert_eq!(
            recording_file_name("20261123-191502", "1002", CallDirection::Outgoing, "1001"),
            "20261123-191502-1002-outgoing-1001.wav"
        );
        assert_eq!(
            recording_file_name(
                "20261123-191502",
                "+1 (555) a.b/c:d",
                CallDirection::Incoming,
                "My Office*"
            ),
            "20261123-191502-+1_(555)_a_b_c_d-incoming-My_Office_.wav"
        );
        assert_eq!(
            recording_file_name("20261123-191502", "x\ny", CallDirection::Incoming, ""),
            "20261123-191502-x_y-incoming-.wav"
        );
    }

    #[test]
    fn local_stamps_have_the_shape() {
        let s = local_stamp(SystemTime::now());
        assert_eq!(s.len(), 15, "{s}");
        assert!(s[..8].bytes().all(|b| b.is_ascii_digit()), "{s}");
        assert_eq!(&s[8..9], "-");
        assert!(s[9..].bytes().all(|b| b.is_ascii_digit()), "{s}");
    }

    #[test]
    fn accounts_name_by_label_else_user() {
        assert_eq!(label_or_user(1, Some("Office"), Some("1001")), "Office");
        assert_eq!(label_or_user(1, Some("  "), Some("1001")), "1001");
        assert_eq!(label_or_user(1, None, Some("1001")), "1001");
        assert_eq!(label_or_user(0, Some("Local"), Some("1001")), "1001");
        assert_eq!(label_or_user(2, None, None), "");
    }
}
