//! Sound devices inside the engine: the `devices` list, `setdevice` (also during a
//! call, without dropping it: the media thread swaps the call's source or sink), the
//! ini keys `audioInputDevice` / `audioOutputDevice` / `audioRingDevice` they write,
//! and the ring tone played on the ring device while an incoming call rings.

pub use microsip_media::device::prepare_pulse_cookie;
use microsip_media::device::DeviceInfo;
use microsip_media::{AudioError, AudioSpec};
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::command::DeviceRole;
use crate::core::Core;
use crate::io::{MediaAction, MediaFailure, ReplyTo};
use crate::reply::{fail, ok_with, ErrorCode, Reply};
use crate::then::Then;

fn role_words(role: DeviceRole) -> (&'static str, &'static str) {
    match role {
        DeviceRole::Input => ("input", "audioInputDevice"),
        DeviceRole::Output => ("output", "audioOutputDevice"),
        DeviceRole::Ring => ("ring", "audioRingDevice"),
    }
}

fn audio_failure(e: &AudioError) -> Reply {
    let code = match e {
        AudioError::UnknownDevice(_) => ErrorCode::NoSuchDevice,
        AudioError::BadTone(_) | AudioError::NotAnOutput(_) => ErrorCode::BadArgument,
        _ => ErrorCode::Media,
    };
    fail(code, e.to_string())
}

/// The reply for a device the media could not use.
fn media_failure(e: &MediaFailure) -> Reply {
    let code = if e.no_such_device {
        ErrorCode::NoSuchDevice
    } else if e.bad_argument {
        ErrorCode::BadArgument
    } else {
        ErrorCode::Media
    };
    fail(code, e.message.clone())
}

/// Whether `spec` (an ini value) names `info` for recording (`input`) or playing.
fn is_current(spec: &str, info: &DeviceInfo, input: bool) -> bool {
    match AudioSpec::parse(spec) {
        Ok(AudioSpec::Device(name)) => info.matches(&name, input),
        _ => false,
    }
}

/// The devices of one side as `devices` lists and numbers them (from 1, in this
/// order): those that record for `input`, those that play for output and ring.
fn role_devices(list: &[DeviceInfo], input: bool) -> impl Iterator<Item = &DeviceInfo> {
    list.iter()
        .filter(move |d| if input { d.input } else { d.output })
}

/// A device number (`setdevice input 2`) as opposed to an id or a name.
fn device_number(text: &str) -> Option<usize> {
    let t = text.trim();
    if t.is_empty() || t.len() > 6 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

/// The id of the device `devices` lists as `number` for `role`.
fn device_by_number(list: &[DeviceInfo], role: DeviceRole, number: usize) -> Result<String, Reply> {
    let (what, _) = role_words(role);
    let input = role == DeviceRole::Input;
    let found: Vec<&DeviceInfo> = role_devices(list, input).collect();
    if number == 0 {
        return Err(fail(
            ErrorCode::NoSuchDevice,
            "device numbers start at 1 (microsip devices lists them)",
        ));
    }
    match found.get(number - 1) {
        Some(d) => Ok(d.id.clone()),
        None if found.is_empty() => Err(fail(
            ErrorCode::NoSuchDevice,
            format!(
                "there is no {what} device {number}: no sound device {} here (use null{})",
                if input { "records" } else { "plays" },
                if input {
                    ", file:PATH.wav or tone:FREQ"
                } else {
                    " or file:PATH.wav"
                }
            ),
        )),
        None => Err(fail(
            ErrorCode::NoSuchDevice,
            format!(
                "there is no {what} device {number}: devices lists {} (1-{})",
                found.len(),
                found.len()
            ),
        )),
    }
}

/// The `devices` reply: every device with its number and id, the default and
/// current ones marked.
fn device_list(list: &[DeviceInfo], input: &str, output: &str, ring: &str) -> Reply {
    let mut text = Vec::new();
    let mut data = serde_json::Map::new();
    for (title, want_input) in [("input", true), ("output", false)] {
        let mut entries = Vec::new();
        text.push(format!("{title} devices:"));
        let devices: Vec<&DeviceInfo> = role_devices(list, want_input).collect();
        // A table: numbers right-aligned, ids padded, so `10` lines up under `9`.
        let number_width = devices.len().to_string().len();
        let id_width = devices
            .iter()
            .map(|d| d.id.chars().count())
            .max()
            .unwrap_or(0);
        for (number, d) in (1..).zip(devices) {
            let default = if want_input {
                d.default_input
            } else {
                d.default_output
            };
            let current = is_current(if want_input { input } else { output }, d, want_input);
            let ringing = !want_input && is_current(ring, d, false);
            let mut marks = String::new();
            if current {
                marks.push_str(" [current]");
            }
            if ringing {
                marks.push_str(" [ring]");
            }
            if default {
                marks.push_str(" [default]");
            }
            text.push(format!(
                "  {number:>number_width$}  {:<id_width$}  {}{marks}",
                d.id, d.name
            ));
            let mut entry = json!({
                "number": number, "id": d.id, "name": d.name, "default": default,
                "current": current,
            });
            if !want_input {
                entry["ring"] = Value::Bool(ringing);
            }
            entries.push(entry);
        }
        if entries.is_empty() {
            text.push("  (none)".to_string());
        }
        data.insert(title.to_string(), Value::Array(entries));
    }
    text.push(format!(
        "current: input={input} output={output} ring={ring} (setdevice takes a number above, an id, a name, or default, file:PATH.wav, tone:FREQ for input, null)"
    ));
    data.insert(
        "current".into(),
        json!({ "input": input, "output": output, "ring": ring }),
    );
    ok_with(text.join("\n"), Value::Object(data))
}

/// An ini device value as shown: empty is `null`.
fn shown(value: Option<&str>) -> String {
    match value.map(str::trim) {
        None | Some("") => "null".to_string(),
        Some(v) => v.to_string(),
    }
}

impl Core {
    /// `devices`: the driver asks the sound systems (which may take a moment) off
    /// the signalling task.
    pub(crate) fn list_devices(&mut self, reply: ReplyTo) {
        self.media_then(MediaAction::ListDevices, Some(Then::Devices { reply }));
    }

    pub(crate) fn devices_listed(&mut self, list: &[DeviceInfo], reply: ReplyTo) {
        let s = &self.config.settings;
        let input = shown(s.audio_input_device.as_deref());
        let output = shown(s.audio_output_device.as_deref());
        let ring = shown(s.audio_ring_device.as_deref());
        let answer = device_list(list, &input, &output, &ring);
        self.reply(Some(reply), answer);
    }

    /// `setdevice input|output|ring DEVICE`: checks the device (a number is the one
    /// `devices` lists under it: the list is asked for first), switches every call
    /// to it (calls stay up), stores it in the ini, and replies once in use.
    pub(crate) fn set_device(&mut self, role: DeviceRole, text: &str, reply: ReplyTo) {
        if let Some(number) = device_number(text) {
            return self.media_then(
                MediaAction::ListDevices,
                Some(Then::DeviceNumber {
                    role,
                    number,
                    reply,
                }),
            );
        }
        let spec = match AudioSpec::parse(text) {
            Ok(s) => s,
            Err(e) => return self.reply(Some(reply), audio_failure(&e)),
        };
        if role != DeviceRole::Input && matches!(spec, AudioSpec::Tone(_)) {
            return self.reply(
                Some(reply),
                audio_failure(&AudioError::NotAnOutput(spec.to_string())),
            );
        }
        // The calls with media open: each switches to the new device.
        let calls: Vec<_> = if role == DeviceRole::Ring {
            Vec::new()
        } else {
            self.calls
                .values()
                .filter(|c| c.local.is_some())
                .map(|c| c.id)
                .collect()
        };
        let value = spec.to_string();
        let count = calls.len();
        self.media_then(
            MediaAction::SetDevice {
                input: role == DeviceRole::Input,
                ring: role == DeviceRole::Ring,
                calls,
                spec,
            },
            Some(Then::DeviceSet {
                role,
                value,
                calls: count,
                reply,
            }),
        );
    }

    /// The device list came for `setdevice ROLE NUMBER`: the number names a device.
    pub(crate) fn device_numbered(
        &mut self,
        role: DeviceRole,
        number: usize,
        list: &[DeviceInfo],
        reply: ReplyTo,
    ) {
        match device_by_number(list, role, number) {
            Ok(id) => self.set_device(role, &id, reply),
            Err(r) => self.reply(Some(reply), r),
        }
    }

    /// The media switched (or checked) the device.
    pub(crate) fn device_set(
        &mut self,
        role: DeviceRole,
        value: String,
        calls: usize,
        result: Result<(), MediaFailure>,
        reply: ReplyTo,
    ) {
        if let Err(e) = result {
            return self.reply(Some(reply), media_failure(&e));
        }
        let (what, key) = role_words(role);
        let settings = &mut self.config.settings;
        match role {
            DeviceRole::Input => settings.audio_input_device = Some(value.clone()),
            DeviceRole::Output => settings.audio_output_device = Some(value.clone()),
            DeviceRole::Ring => settings.audio_ring_device = Some(value.clone()),
        }
        if role == DeviceRole::Ring && self.ringing {
            // Ring on the new device from now on.
            let ring = self.ring_action();
            self.media(ring);
        }
        info!("{what} device: {value} ({calls} call(s) switched)");
        let answer = ok_with(
            format!("{what} device: {value}"),
            json!({ "role": what, "device": value, "calls": calls }),
        );
        self.store_setting(("Settings", key, &value), Some(reply), answer, false);
    }

    /// Starts or stops the ring tone as incoming calls start or stop ringing. Called
    /// after everything the core handles.
    pub(crate) fn update_ringer(&mut self) {
        let ringing = self.any_ringing_in();
        if ringing == self.ringing {
            return;
        }
        self.ringing = ringing;
        let action = if ringing {
            self.ring_action()
        } else {
            MediaAction::Ring {
                device: None,
                sound: None,
            }
        };
        self.media(action);
    }

    /// Ringing on the ring device when that is a sound device or a file (null and
    /// unset ring silently).
    fn ring_action(&self) -> MediaAction {
        let s = &self.config.settings;
        let device = match AudioSpec::parse(s.audio_ring_device.as_deref().unwrap_or("")) {
            Ok(spec @ (AudioSpec::Device(_) | AudioSpec::File(_))) => Some(spec),
            Ok(_) => None,
            Err(e) => {
                warn!("audioRingDevice: {e}");
                None
            }
        };
        let sound = s
            .ringing_sound
            .as_deref()
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(std::path::PathBuf::from);
        MediaAction::Ring { device, sound }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, input: bool, default: bool) -> DeviceInfo {
        DeviceInfo {
            id: id.into(),
            name: format!("Name of {id}"),
            input,
            output: !input,
            default_input: input && default,
            default_output: !input && default,
        }
    }

    #[test]
    fn list_marks_current_and_default() {
        let list = [
            info("pulse:mic.monitor", true, true),
            info("pulse:spk", false, false),
            info("pulse:other", false, true),
        ];
        let r = device_list(&list, "pulse:mic.monitor", "spk", "default").unwrap();
        let lines: Vec<&str> = r.text.lines().collect();
        assert_eq!(lines[0], "input devices:");
        assert_eq!(
            lines[1],
            "  1  pulse:mic.monitor  Name of pulse:mic.monitor [current] [default]"
        );
        assert_eq!(lines[2], "output devices:");
        assert_eq!(lines[3], "  1  pulse:spk    Name of pulse:spk [current]");
        assert_eq!(
            lines[4],
            "  2  pulse:other  Name of pulse:other [ring] [default]"
        );
        assert_eq!(r.data["output"][1]["number"], 2);
        assert_eq!(r.data["output"][0]["current"], true);
        assert_eq!(r.data["output"][1]["ring"], true);
        assert_eq!(r.data["current"]["input"], "pulse:mic.monitor");
        let empty = device_list(&[], "null", "null", "null").unwrap();
        assert!(empty.text.contains("input devices:\n  (none)"));
    }

    #[test]
    fn list_lines_up_past_nine_devices() {
        let ids: Vec<String> = (1..=11).map(|n| format!("alsa:d{n}")).collect();
        let list: Vec<DeviceInfo> = ids.iter().map(|id| info(id, true, false)).collect();
        let r = device_list(&list, "null", "null", "null").unwrap();
        let lines: Vec<&str> = r.text.lines().collect();
        assert_eq!(lines[1], "   1  alsa:d1   Name of alsa:d1");
        assert_eq!(lines[11], "  11  alsa:d11  Name of alsa:d11");
    }

    #[test]
    fn numbers_name_the_devices_devices_lists() {
        let list = [
            info("pulse:spk", false, false),
            info("pulse:spk.monitor", true, false),
            info("pulse:mic", false, true),
            info("pulse:mic.monitor", true, true),
        ];
        let listed = device_list(&list, "null", "null", "null").unwrap();
        // Whatever number `devices` prints beside an id, that number picks that id.
        for (section, role) in [("input", DeviceRole::Input), ("output", DeviceRole::Output)] {
            for entry in listed.data[section].as_array().unwrap() {
                let n = entry["number"].as_u64().unwrap() as usize;
                assert_eq!(device_by_number(&list, role, n).unwrap(), entry["id"]);
            }
        }
        assert_eq!(
            device_by_number(&list, DeviceRole::Input, 2).unwrap(),
            "pulse:mic.monitor"
        );
        assert_eq!(
            device_by_number(&list, DeviceRole::Ring, 1).unwrap(),
            "pulse:spk"
        );
        let error = |r: Result<String, Reply>| r.unwrap_err().unwrap_err();
        let past = error(device_by_number(&list, DeviceRole::Output, 3));
        assert_eq!(past.code, ErrorCode::NoSuchDevice);
        assert_eq!(
            past.message,
            "there is no output device 3: devices lists 2 (1-2)"
        );
        assert!(error(device_by_number(&list, DeviceRole::Input, 0))
            .message
            .contains("start at 1"));
        let none = error(device_by_number(&[], DeviceRole::Input, 2));
        assert!(
            none.message
                .starts_with("there is no input device 2: no sound device records"),
            "{}",
            none.message
        );
        assert_eq!(device_number(" 2 "), Some(2));
        for text in ["", "pulse:spk", "2a", "-1", "1234567", "null"] {
            assert_eq!(device_number(text), None, "{text}");
        }
    }
}
