//! DDE execute strings, as MicroSIP's integrators write them: `[Status]`,
//! `[Dial(sip:100@pbx)]`, `[SetDevice(output, null)]`, and several commands in one
//! string (`[Hold][Dial(1002)]`).
//!
//! This module only cuts a string into its bracketed parts (verb and the text between
//! the parentheses); [`crate::grammar`] turns each part into a command. A string
//! that does not cut whole is refused with the part that is wrong named, so nothing
//! of it runs.

use crate::command::ParseError;

/// One `[Verb(args)]` of an execute string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Part {
    /// The verb as written (`Dial`).
    pub verb: String,
    /// What stood between the parentheses, quotes kept (`output, null`); empty for
    /// `[Verb]` and `[Verb()]`.
    pub args: String,
    /// The part as written, brackets included, for error messages.
    pub text: String,
}

/// Whether `text` is written as a DDE execute string (its first non-blank is `[`).
pub(crate) fn is_execute_string(text: &str) -> bool {
    text.trim_start().starts_with('[')
}

/// Cuts an execute string into its parts, in order. Blanks between parts are
/// allowed; anything else outside brackets, an unbalanced bracket or parenthesis, an
/// unterminated quote or an empty `[]` is an error naming the part.
pub(crate) fn split(text: &str) -> Result<Vec<Part>, ParseError> {
    let mut parts = Vec::new();
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad("empty command".to_string()));
    }
    while !rest.is_empty() {
        let Some(body) = rest.strip_prefix('[') else {
            let stray: String = rest.chars().take_while(|c| *c != '[').collect();
            let after = parts
                .last()
                .map(|p: &Part| format!(" after '{}'", shown(&p.text)))
                .unwrap_or_default();
            return Err(bad(format!(
                "unexpected '{}'{after}: each command goes in brackets, like [Dial(1002)]",
                shown(stray.trim())
            )));
        };
        let (part, used) = one_part(body)?;
        parts.push(part);
        rest = body[used..].trim_start();
    }
    Ok(parts)
}

/// Reads one part from `body` (the text after its `[`); returns it and how many
/// bytes of `body` it took, its `]` included.
fn one_part(body: &str) -> Result<(Part, usize), ParseError> {
    // The part as written, for messages: up to its `]` (or the end).
    let whole = |end: usize| format!("[{}", &body[..end.min(body.len())]);
    let unclosed = || {
        let end = body.find('[').unwrap_or(body.len());
        bad(format!("'{}' has no closing ']'", shown(&whole(end))))
    };
    let lead = blanks(body);
    let verb_end = body[lead..]
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .map_or(body.len(), |e| lead + e);
    let verb = body[lead..verb_end].to_string();
    let mut i = verb_end + blanks(&body[verb_end..]);
    let mut args = String::new();
    let mut had_parens = false;
    match body[i..].chars().next() {
        None => return Err(unclosed()),
        Some('(') => {
            had_parens = true;
            let start = i + 1;
            let close = closing_paren(body, start)?;
            args = body[start..close].trim().to_string();
            i = close + 1;
            i += blanks(&body[i..]);
        }
        Some(_) => {}
    }
    match body[i..].chars().next() {
        Some(']') => {}
        None => return Err(unclosed()),
        Some('[') => return Err(unclosed()),
        Some(c) => {
            let end = body[i..].find(']').map_or(body.len(), |e| i + e + 1);
            let text = whole(end);
            return Err(bad(if c == ')' {
                format!("'{}' has a ')' without its '('", shown(&text))
            } else if had_parens {
                let stray = body[i..end].trim_end_matches(']').trim();
                format!(
                    "'{}': unexpected '{}' after the arguments' ')'",
                    shown(&text),
                    shown(stray)
                )
            } else if verb.is_empty() {
                format!("'{}' does not start with a command name", shown(&text))
            } else {
                format!(
                    "'{}': arguments go in parentheses, like [{verb}(...)]",
                    shown(&text)
                )
            }));
        }
    }
    let text = whole(i + 1);
    if verb.is_empty() {
        return Err(bad(format!(
            "'{}' does not start with a command name",
            shown(&text)
        )));
    }
    Ok((Part { verb, args, text }, i + 1))
}

/// Where the `)` closing the arguments that start at `start` is. Inside double
/// quotes anything goes (`\"` and `\\` are escapes, as in a socket line); outside,
/// a `(`, `[` or `]` before the `)` is an error.
fn closing_paren(body: &str, start: usize) -> Result<usize, ParseError> {
    let mut in_quote = false;
    let mut chars = body[start..].char_indices();
    let so_far = |end: usize| format!("[{}", &body[..end]);
    while let Some((offset, c)) = chars.next() {
        let at = start + offset;
        if in_quote {
            match c {
                '"' => in_quote = false,
                '\\' if body[at + 1..].starts_with(['"', '\\']) => {
                    chars.next();
                }
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_quote = true,
            ')' => return Ok(at),
            ']' => {
                return Err(bad(format!(
                    "'{}' has no closing ')'",
                    shown(&so_far(at + 1))
                )))
            }
            '(' | '[' => {
                return Err(bad(format!(
                    "'{}': unexpected '{c}' in the arguments (quote an argument that holds one)",
                    shown(&so_far(at + 1))
                )))
            }
            _ => {}
        }
    }
    if in_quote {
        return Err(bad(format!(
            "'{}' has an unterminated quote",
            shown(&so_far(body.len()))
        )));
    }
    Err(bad(format!(
        "'{}' has no closing ')'",
        shown(&so_far(body.len()))
    )))
}

/// How many bytes of blanks `text` starts with.
fn blanks(text: &str) -> usize {
    text.len() - text.trim_start().len()
}

fn bad(message: String) -> ParseError {
    ParseError {
        code: "bad_argument",
        message,
    }
}

fn shown(text: &str) -> String {
    crate::grammar::shown_within(text, 60, "...")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(text: &str) -> Vec<(String, String)> {
        split(text)
            .unwrap_or_else(|e| panic!("{text}: {e:?}"))
            .into_iter()
            .map(|p| (p.verb, p.args))
            .collect()
    }

    fn error(text: &str) -> String {
        let e = split(text).expect_err(text);
        assert_eq!(e.code, "bad_argument", "{text}");
        e.message
    }

    fn pair(verb: &str, args: &str) -> (String, String) {
        (verb.to_string(), args.to_string())
    }

    #[test]
    fn cuts_parts() {
        assert_eq!(parts("[Status]"), [pair("Status", "")]);
        assert_eq!(parts(" [ Status ] "), [pair("Status", "")]);
        assert_eq!(parts("[Status()]"), [pair("Status", "")]);
        assert_eq!(
            parts("[Dial(sip:user@domain)]"),
            [pair("Dial", "sip:user@domain")]
        );
        assert_eq!(
            parts("[SetDevice( output, null )]"),
            [pair("SetDevice", "output, null")]
        );
        assert_eq!(
            parts("[Hold] [Dial(1002)]\n[Status]"),
            [pair("Hold", ""), pair("Dial", "1002"), pair("Status", "")]
        );
        // Quotes keep brackets, parentheses and commas; they stay for the grammar.
        assert_eq!(
            parts(r#"[Message(100, "a (b) [c], \"d\"")]"#),
            [pair("Message", r#"100, "a (b) [c], \"d\"""#)]
        );
        assert_eq!(parts("[report:status]"), [pair("report:status", "")]);
        let p = split("[Hold][Dial( 1002 )]").unwrap();
        assert_eq!(p[1].text, "[Dial( 1002 )]");
    }

    #[test]
    fn refuses_broken_strings_naming_the_part() {
        assert_eq!(error("[Dial(1002)"), "'[Dial(1002)' has no closing ']'");
        assert_eq!(error("[Status"), "'[Status' has no closing ']'");
        assert_eq!(
            error("[Hold][Dial(1002)"),
            "'[Dial(1002)' has no closing ']'"
        );
        assert_eq!(error("[Hold[Status]"), "'[Hold' has no closing ']'");
        assert_eq!(error("[Dial(1002]"), "'[Dial(1002]' has no closing ')'");
        assert_eq!(error("[Dial(1002"), "'[Dial(1002' has no closing ')'");
        assert_eq!(
            error("[Dial(\"1002)]"),
            "'[Dial(\"1002)]' has an unterminated quote"
        );
        assert!(error("[Dial(a(b))]").contains("unexpected '('"));
        assert_eq!(
            error("[Dial 1002]"),
            "'[Dial 1002]': arguments go in parentheses, like [Dial(...)]"
        );
        assert_eq!(
            error("[Dial(1)x]"),
            "'[Dial(1)x]': unexpected 'x' after the arguments' ')'"
        );
        assert_eq!(
            error("[SetVolume(30), ]"),
            "'[SetVolume(30), ]': unexpected ',' after the arguments' ')'"
        );
        assert_eq!(
            error("[Dial(1)(2)][Status]"),
            "'[Dial(1)(2)]': unexpected '(2)' after the arguments' ')'"
        );
        assert_eq!(error("[Hold)]"), "'[Hold)]' has a ')' without its '('");
        assert_eq!(error("[]"), "'[]' does not start with a command name");
        assert_eq!(error("[(1)]"), "'[(1)]' does not start with a command name");
        assert_eq!(
            error("[Hold] junk [Status]"),
            "unexpected 'junk' after '[Hold]': each command goes in brackets, like [Dial(1002)]"
        );
        assert_eq!(error("   "), "empty command");
    }

    #[test]
    fn never_panics_on_any_cut() {
        let text = "[Dial(\"a\\\"é,)\")] [Hold][Set(é, \"x\")]";
        for end in 0..=text.len() {
            if let Some(prefix) = text.get(..end) {
                let _ = split(prefix);
            }
        }
        for bytes in ["[\\", "[a(\"\\", "[a(\"\\\"", "[é", "[a(é", "[a é"] {
            let _ = split(bytes);
        }
    }
}
