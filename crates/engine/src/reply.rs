//! The one reply type: success with text (and data for JSON clients), or a failure
//! with a stable machine code and words a person understands.

use serde_json::Value;

/// Stable failure codes; scripts match on these, never on the words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// No command by that name.
    UnknownCommand,
    /// The command's arguments are wrong (the words say which).
    BadArgument,
    /// A command whose feature lands in a later release.
    NotAvailableYet,
    /// No account with that number.
    NoSuchAccount,
    /// The account is inactive and cannot be used (the words say why).
    AccountInactive,
    /// A `register`/`unregister` was not answered with success.
    RegistrationFailed,
    /// A change could not be saved (ini, contacts).
    ConfigWrite,
    /// The phone is exiting and takes no more commands.
    Stopping,
    /// Something that should not fail did (a store could not be read...).
    Internal,
    /// No call to act on.
    NoCall,
    /// A call id that does not exist.
    NoSuchCall,
    /// No usable account to call from.
    NoAccount,
    /// The dial plan refused the number.
    DialPlan,
    /// Too many calls.
    Busy,
    /// The call is not in a state for this (e.g. answer a call that is not ringing).
    WrongState,
    /// The media could not be set up (no free RTP port, unreadable audio file...).
    Media,
    /// The offer has no codec we can use (the call was refused with 488).
    NoCommonCodec,
    /// The other side refused (re-INVITE or REFER answered with an error).
    Refused,
    /// No sound device by that name or id (`devices` lists them).
    NoSuchDevice,
}

impl ErrorCode {
    /// The code as scripts see it, e.g. `no_such_call`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::UnknownCommand => "unknown_command",
            ErrorCode::BadArgument => "bad_argument",
            ErrorCode::NotAvailableYet => "not_available",
            ErrorCode::NoSuchAccount => "no_such_account",
            ErrorCode::AccountInactive => "account_inactive",
            ErrorCode::RegistrationFailed => "registration_failed",
            ErrorCode::ConfigWrite => "config_write",
            ErrorCode::Stopping => "stopping",
            ErrorCode::Internal => "internal",
            ErrorCode::NoCall => "no_call",
            ErrorCode::NoSuchCall => "no_such_call",
            ErrorCode::NoAccount => "no_account",
            ErrorCode::DialPlan => "dial_plan",
            ErrorCode::Busy => "busy",
            ErrorCode::WrongState => "wrong_state",
            ErrorCode::Media => "media",
            ErrorCode::NoCommonCodec => "no_common_codec",
            ErrorCode::Refused => "refused",
            ErrorCode::NoSuchDevice => "no_such_device",
        }
    }

    /// Maps a grammar error's code.
    pub fn from_parse_code(code: &str) -> ErrorCode {
        match code {
            "unknown_command" => ErrorCode::UnknownCommand,
            _ => ErrorCode::BadArgument,
        }
    }
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The one-line text a person or a shell script reads.
    pub text: String,
    /// The same, structured, for JSON clients (`Value::Null` when the text says it all).
    pub data: Value,
}

/// A refused command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The stable machine code.
    pub code: ErrorCode,
    /// Words a person understands, e.g. `no call is ringing`.
    pub message: String,
}

/// What every command gets back.
pub type Reply = Result<Answer, Failure>;

/// A text-only success.
pub fn ok(text: impl Into<String>) -> Reply {
    Ok(Answer {
        text: text.into(),
        data: Value::Null,
    })
}

/// A success with structured data for JSON clients.
pub fn ok_with(text: impl Into<String>, data: Value) -> Reply {
    Ok(Answer {
        text: text.into(),
        data,
    })
}

/// A failure.
pub fn fail(code: ErrorCode, message: impl Into<String>) -> Reply {
    Err(Failure {
        code,
        message: message.into(),
    })
}

/// The JSON form of a reply, with the client's token echoed.
pub fn to_json(reply: &Reply, token: Option<&Value>) -> Value {
    let mut obj = match reply {
        Ok(a) => serde_json::json!({ "ok": true, "text": a.text, "data": a.data }),
        Err(f) => serde_json::json!({ "ok": false, "code": f.code.as_str(), "error": f.message }),
    };
    if let (Some(token), Some(map)) = (token, obj.as_object_mut()) {
        map.insert("token".into(), token.clone());
    }
    obj
}

/// The JSON form of the replies to a request that held several commands (a DDE
/// execute string): one object, `ok` when every command succeeded, `replies` the
/// replies in order (each as [`to_json`] makes it), the client's token echoed.
pub fn to_json_many(replies: &[Reply], token: Option<&Value>) -> Value {
    let all_ok = replies.iter().all(Result::is_ok);
    let list: Vec<Value> = replies.iter().map(|r| to_json(r, None)).collect();
    let mut obj = serde_json::json!({ "ok": all_ok, "replies": list });
    if let (Some(token), Some(map)) = (token, obj.as_object_mut()) {
        map.insert("token".into(), token.clone());
    }
    obj
}

/// The plain line form: `OK <text>` or `ERR <code> <message>`, always one line (the
/// lines of a text of several are joined with `; `).
pub fn to_line(reply: &Reply) -> String {
    let one_line = |s: &str| {
        s.split(['\r', '\n'])
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect::<Vec<_>>()
            .join("; ")
    };
    match reply {
        Ok(a) if a.text.is_empty() => "OK".to_string(),
        Ok(a) => format!("OK {}", one_line(&a.text)),
        Err(f) => format!("ERR {} {}", f.code.as_str(), one_line(&f.message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_json() {
        assert_eq!(to_line(&ok("")), "OK");
        assert_eq!(to_line(&ok("2 active")), "OK 2 active");
        assert_eq!(
            to_line(&ok("input devices:\n  1  pulse:mic\r\n\noutput devices:")),
            "OK input devices:; 1  pulse:mic; output devices:"
        );
        assert_eq!(
            to_line(&fail(ErrorCode::NoCall, "no\ncall")),
            "ERR no_call no; call"
        );
        let token = Value::from("t");
        let many = to_json_many(&[ok("1"), fail(ErrorCode::NoCall, "no call")], Some(&token));
        assert_eq!(many["ok"], false);
        assert_eq!(many["token"], "t");
        assert_eq!(many["replies"][0], to_json(&ok("1"), None));
        assert_eq!(many["replies"][1]["code"], "no_call");
        assert_eq!(to_json_many(&[ok("1"), ok("2")], None)["ok"], true);
    }
}
