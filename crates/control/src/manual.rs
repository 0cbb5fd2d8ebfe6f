//! The man page and the shell completions (bash, zsh, fish), made from the
//! definitions the phone already has: the commands from the grammar's table
//! ([`microsip_engine::grammar::COMMANDS`]) and the options from the `--help` text
//! ([`crate::options::usage`]). Nothing here lists a command or an option by hand.
//! `microsip man` and `microsip completions SHELL` print them (packaging/ installs
//! them).

use microsip_engine::grammar::{CommandHelp, COMMANDS};

use crate::options::usage;

/// One start option as `--help` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionHelp {
    /// The spellings that start with `-` (`--headless`, `--daemon`; `-h`, `--help`).
    pub names: Vec<String>,
    /// The value's placeholder (`FILE`, `0|1`), `None` for a flag.
    pub value: Option<String>,
    /// The left column as shown (`--ini FILE, /i:FILE`).
    pub shown: String,
    /// What the option does, as `--help` words it.
    pub help: String,
}

impl OptionHelp {
    /// Whether the value is a file name.
    pub fn takes_file(&self) -> bool {
        self.value.as_deref() == Some("FILE")
    }

    /// The fixed values it takes (`0|1` → `0`, `1`), if any.
    pub fn choices(&self) -> Vec<&str> {
        match self.value.as_deref() {
            Some(v) if v.contains('|') => v.split('|').collect(),
            _ => Vec::new(),
        }
    }
}

/// The options of the `--help` text: its `Options` block, one entry per line that
/// starts with an option (a help text may continue on the next line).
pub fn options() -> Vec<OptionHelp> {
    let text = usage();
    let mut list: Vec<OptionHelp> = Vec::new();
    let mut in_block = false;
    for line in text.lines() {
        if line.starts_with("Options") {
            in_block = true;
            continue;
        }
        if !in_block {
            continue;
        }
        if line.trim().is_empty() || !line.starts_with(' ') {
            break;
        }
        let body = line.trim_start();
        if body.starts_with('-') || body.starts_with('/') {
            // The left column ends at the first run of two spaces.
            let (left, help) = match body.split_once("  ") {
                Some((left, help)) => (left.trim(), help.trim()),
                None => (body.trim(), ""),
            };
            let mut names = Vec::new();
            let mut value = None;
            for spelling in left.split(", ") {
                let mut parts = spelling.split_whitespace();
                let Some(name) = parts.next() else { continue };
                if name.starts_with('-') {
                    names.push(name.to_string());
                    if let Some(v) = parts.next() {
                        value = Some(v.to_string());
                    }
                }
            }
            list.push(OptionHelp {
                names,
                value,
                shown: left.to_string(),
                help: help.to_string(),
            });
        } else if let Some(last) = list.last_mut() {
            // The help of the option above, on its own line.
            if !last.help.is_empty() {
                last.help.push(' ');
            }
            last.help.push_str(body.trim());
        }
    }
    list
}

/// The paragraph under `Usage:` in `--help`.
fn description() -> String {
    usage()
        .split("\n\n")
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Text made safe for roff: backslashes and dashes escaped, no line starting with
/// a control character.
fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with(['.', '\'']) {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

/// The man page, `microsip(1)`, in roff.
pub fn man_page() -> String {
    let mut out = String::new();
    out.push_str(&format!(
        ".TH MICROSIP 1 \"\" \"microsip {}\" \"User Commands\"\n",
        env!("CARGO_PKG_VERSION")
    ));
    out.push_str(".SH NAME\nmicrosip \\- MicroSIP\\-compatible SIP softphone with a real API\n");
    out.push_str(
        ".SH SYNOPSIS\n.B microsip\n[\\fIOPTIONS\\fR] [\\fICOMMAND\\fR [\\fIARGUMENT\\fR...]]\n",
    );
    out.push_str(&format!(".SH DESCRIPTION\n{}\n", roff(&description())));
    out.push_str(".PP\nCommands are case\\-insensitive; MicroSIP's DDE spellings (\\fBDial\\fR, \\fBSendDTMF\\fR), its \\fB/x:\\fR and \\fBmsip:\\fR forms and DDE execute strings (\\fB[Dial(1002)]\\fR) are accepted too.\n");
    out.push_str(".SH OPTIONS\n");
    for option in options() {
        out.push_str(&format!(
            ".TP\n.B {}\n{}\n",
            roff(&option.shown),
            roff(&option.help)
        ));
    }
    out.push_str(".SH COMMANDS\n");
    for command in COMMANDS {
        let head = if command.args.is_empty() {
            format!(".B {}", roff(command.name))
        } else {
            format!(".BI \"{} \" \"{}\"", roff(command.name), roff(command.args))
        };
        out.push_str(&format!(".TP\n{head}\n{}\n", roff(command.help)));
    }
    #[cfg(feature = "dbus")]
    out.push_str(&dbus_section());
    out.push_str(".SH FILES\n.TP\n.I $XDG_CONFIG_HOME/microsip/microsip.ini\nsettings, accounts and the call history (MicroSIP's format)\n.TP\n.I $XDG_RUNTIME_DIR/microsip/PROFILE.sock\nthe control socket of a running phone\n");
    out.push_str(".SH EXIT STATUS\n0 when the command succeeded, 1 when the phone refused it, 2 when no phone answered or the options were wrong.\n");
    out
}

/// The D-Bus part of the man page.
#[cfg(feature = "dbus")]
fn dbus_section() -> String {
    use crate::dbus;
    format!(
        ".SH D\\-BUS\nOn the session bus the phone owns \\fB{}\\fR (\\fB{}.\\fIPROFILE\\fR for other profiles), object \\fB{}\\fR, interface \\fB{}\\fR: the DDE verbs as methods (\\fBDial\\fR, \\fBHangup\\fR, \\fBStatus\\fR...), variants taking a call id (\\fBHangupCall\\fR, \\fBHoldCall\\fR...), \\fBExecute\\fR(s) for a DDE execute string or a command line (one (ok, code, text) per command; a string that does not parse runs nothing), every event as the signal \\fBEvent\\fR(type, call, json). Errors are \\fB{}.\\fICode\\fR. \\fB[Settings] dbus=0\\fR turns it off.\n",
        roff(dbus::BASE_NAME),
        roff(dbus::BASE_NAME),
        roff(dbus::OBJECT_PATH),
        roff(dbus::INTERFACE),
        roff(dbus::ERROR_PREFIX),
    )
}

/// The shells [`completions`] knows.
pub const SHELLS: [&str; 3] = ["bash", "zsh", "fish"];

/// The completion script for `shell`.
pub fn completions(shell: &str) -> Result<String, String> {
    match shell {
        "bash" => Ok(bash()),
        "zsh" => Ok(zsh()),
        "fish" => Ok(fish()),
        other => Err(format!(
            "no completions for '{other}': use {}",
            SHELLS.join(", ")
        )),
    }
}

fn command_names() -> String {
    COMMANDS
        .iter()
        .map(|c| c.name)
        .collect::<Vec<_>>()
        .join(" ")
}

fn with_words() -> impl Iterator<Item = &'static CommandHelp> {
    COMMANDS.iter().filter(|c| !c.words.is_empty())
}

fn bash() -> String {
    let options = options();
    let all: Vec<String> = options.iter().flat_map(|o| o.names.clone()).collect();
    let with_value: Vec<String> = options
        .iter()
        .filter(|o| o.value.is_some())
        .flat_map(|o| o.names.clone())
        .collect();
    let files: Vec<String> = options
        .iter()
        .filter(|o| o.takes_file())
        .flat_map(|o| o.names.clone())
        .collect();
    let mut choices = String::new();
    for option in options.iter().filter(|o| !o.choices().is_empty()) {
        choices.push_str(&format!(
            "        {}) COMPREPLY=($(compgen -W \"{}\" -- \"$cur\")); return ;;\n",
            option.names.join("|"),
            option.choices().join(" ")
        ));
    }
    let mut args = String::new();
    for command in with_words() {
        args.push_str(&format!(
            "        {}) COMPREPLY=($(compgen -W \"{}\" -- \"$cur\")) ;;\n",
            command.name,
            command.words.join(" ")
        ));
    }
    format!(
        "# bash completion for microsip (generated by `microsip completions bash`)\n\
_microsip() {{\n\
    local cur prev i word command=\"\"\n\
    cur=\"${{COMP_WORDS[COMP_CWORD]}}\"\n\
    prev=\"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
    case \"$prev\" in\n\
        {files}) COMPREPLY=($(compgen -f -- \"$cur\")); return ;;\n\
{choices}        {values}) return ;;\n\
    esac\n\
    for ((i = 1; i < COMP_CWORD; i++)); do\n\
        word=\"${{COMP_WORDS[i]}}\"\n\
        case \"$word\" in\n\
            {values}) ((i++)) ;;\n\
            -*) ;;\n\
            *) command=\"$word\"; break ;;\n\
        esac\n\
    done\n\
    if [ -z \"$command\" ]; then\n\
        if [[ \"$cur\" == -* ]]; then\n\
            COMPREPLY=($(compgen -W \"{all}\" -- \"$cur\"))\n\
        else\n\
            COMPREPLY=($(compgen -W \"{commands}\" -- \"$cur\"))\n\
        fi\n\
        return\n\
    fi\n\
    case \"$command\" in\n\
{args}        play) COMPREPLY=($(compgen -f -- \"$cur\")) ;;\n\
    esac\n\
}}\n\
complete -F _microsip microsip\n",
        files = files.join("|"),
        values = with_value.join("|"),
        all = all.join(" "),
        commands = command_names(),
    )
}

/// Text for a zsh `_arguments` or `_describe` description.
fn zsh_text(text: &str) -> String {
    text.replace(['\'', '\\'], "")
        .replace(':', "\\:")
        .replace('[', "(")
        .replace(']', ")")
}

fn zsh() -> String {
    let mut specs = String::new();
    for option in options() {
        for name in &option.names {
            let action = if option.takes_file() {
                ":file:_files".to_string()
            } else if !option.choices().is_empty() {
                format!(":value:({})", option.choices().join(" "))
            } else if let Some(value) = &option.value {
                format!(":{}: ", value.to_ascii_lowercase())
            } else {
                String::new()
            };
            specs.push_str(&format!(
                "        '{}[{}]{}' \\\n",
                name,
                zsh_text(&option.help),
                action
            ));
        }
    }
    let mut commands = String::new();
    for command in COMMANDS {
        commands.push_str(&format!(
            "        '{}:{}'\n",
            command.name,
            zsh_text(command.help)
        ));
    }
    let mut args = String::new();
    for command in with_words() {
        args.push_str(&format!(
            "                {}) _values 'argument' {} ;;\n",
            command.name,
            command.words.join(" ")
        ));
    }
    format!(
        "#compdef microsip\n\
# zsh completion for microsip (generated by `microsip completions zsh`)\n\
_microsip() {{\n\
    local -a commands\n\
    local state\n\
    commands=(\n\
{commands}    )\n\
    _arguments -s \\\n\
{specs}        '1:command:->command' \\\n\
        '*::argument:->argument'\n\
    case $state in\n\
        command) _describe 'command' commands ;;\n\
        argument)\n\
            case $words[1] in\n\
{args}                play) _files ;;\n\
            esac ;;\n\
    esac\n\
}}\n\
_microsip \"$@\"\n"
    )
}

/// Text for a fish `-d` description (single-quoted).
fn fish_text(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\'', "\\'")
}

fn fish() -> String {
    let mut out = String::from(
        "# fish completion for microsip (generated by `microsip completions fish`)\n\
complete -c microsip -f\n",
    );
    for option in options() {
        for name in &option.names {
            let flag = match name.strip_prefix("--") {
                Some(long) => format!("-l {long}"),
                None => format!("-s {}", name.trim_start_matches('-')),
            };
            let value = if option.takes_file() {
                " -r -F".to_string()
            } else if !option.choices().is_empty() {
                format!(" -x -a '{}'", option.choices().join(" "))
            } else if option.value.is_some() {
                " -x".to_string()
            } else {
                String::new()
            };
            out.push_str(&format!(
                "complete -c microsip -n __fish_use_subcommand {flag}{value} -d '{}'\n",
                fish_text(&option.help)
            ));
        }
    }
    for command in COMMANDS {
        out.push_str(&format!(
            "complete -c microsip -n __fish_use_subcommand -a {} -d '{}'\n",
            command.name,
            fish_text(command.help)
        ));
    }
    for command in with_words() {
        out.push_str(&format!(
            "complete -c microsip -n '__fish_seen_subcommand_from {}' -a '{}'\n",
            command.name,
            command.words.join(" ")
        ));
    }
    out.push_str("complete -c microsip -n '__fish_seen_subcommand_from play' -F\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_options_come_from_the_help_text() {
        let list = options();
        let find = |name: &str| {
            list.iter()
                .find(|o| o.names.iter().any(|n| n == name))
                .unwrap_or_else(|| panic!("{name} missing: {list:#?}"))
        };
        assert!(find("--ini").takes_file());
        assert_eq!(find("--ini").shown, "--ini FILE, /i:FILE");
        assert_eq!(find("--autoanswer").choices(), ["0", "1"]);
        assert_eq!(find("--json").value, None);
        assert_eq!(find("--daemon").names, ["--headless", "--daemon"]);
        assert_eq!(find("-h").names, ["-h", "--help"]);
        assert_eq!(find("--show").help, "window state");
        assert_eq!(find("--profile").value.as_deref(), Some("NAME"));
        // Every `--name` the help text mentions in its options block is found.
        assert!(list.len() >= 20, "{list:#?}");
    }

    #[test]
    fn every_command_and_option_is_in_every_output() {
        let man = man_page();
        let outputs = [
            ("man", man.clone()),
            ("bash", completions("bash").unwrap()),
            ("zsh", completions("zsh").unwrap()),
            ("fish", completions("fish").unwrap()),
        ];
        for (what, text) in &outputs {
            for command in COMMANDS {
                let needle = if *what == "man" {
                    roff(command.name)
                } else {
                    command.name.to_string()
                };
                assert!(text.contains(&needle), "{what} lacks {}", command.name);
            }
            for option in options() {
                for name in &option.names {
                    let needle = match *what {
                        "man" => roff(name),
                        "fish" => match name.strip_prefix("--") {
                            Some(long) => format!("-l {long} "),
                            None => format!("-s {} ", name.trim_start_matches('-')),
                        },
                        _ => name.clone(),
                    };
                    assert!(text.contains(&needle), "{what} lacks {name}");
                }
            }
        }
        assert!(man.starts_with(".TH MICROSIP 1"));
        #[cfg(feature = "dbus")]
        assert!(man.contains("org.microsip.Phone1"));
        assert!(completions("tcsh").unwrap_err().contains("bash, zsh, fish"));
    }

    #[test]
    fn roff_escapes() {
        assert_eq!(roff("--ini"), "\\-\\-ini");
        assert_eq!(roff(".x"), "\\&.x");
        assert_eq!(roff("a\\b"), "a\\eb");
    }
}
