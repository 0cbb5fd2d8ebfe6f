//! `microsip`: the first process for a profile becomes the phone (it takes the
//! profile's lock before anything registers); every later one forwards its arguments
//! to it over the control socket — the start options a running phone can act on as
//! commands, then the command words — prints the replies and exits.

use std::path::Path;
use std::time::{Duration, Instant};

use microsip_control::client::{self, EXIT_NO_PHONE};
use microsip_control::manual;
use microsip_control::options::{parse_start, runtime_commands, usage, StartOptions};
use microsip_control::paths::{self, Claim, InstanceLock};
use microsip_control::phone;
use microsip_engine::grammar::parse_args_all;
use microsip_engine::Command;

/// How long to wait for a phone that holds the profile's lock (it is starting, or
/// exiting) to answer on its socket, or to let go of the lock.
const STARTING_WAIT: Duration = Duration::from_secs(30);
/// Pause between two looks at the socket and the lock.
const POLL: Duration = Duration::from_millis(20);

fn main() {
    std::process::exit(run());
}

fn run() -> i32 {
    let mut args = Vec::new();
    for arg in std::env::args_os().skip(1) {
        match arg.into_string() {
            Ok(s) => args.push(s),
            Err(bad) => {
                eprintln!(
                    "microsip: argument is not valid UTF-8: {}",
                    bad.to_string_lossy()
                );
                return EXIT_NO_PHONE;
            }
        }
    }
    let (options, words) = match parse_start(&args) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("microsip: {e}");
            return EXIT_NO_PHONE;
        }
    };
    if options.help {
        print!("{}", usage());
        return 0;
    }
    if options.version {
        println!("microsip {}", env!("CARGO_PKG_VERSION"));
        return 0;
    }
    // Made here, never sent to a phone: the man page and the shell completions
    // (packaging/ installs them).
    match words
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["man"] => {
            print!("{}", manual::man_page());
            return 0;
        }
        ["completions", shell] => {
            return match manual::completions(shell) {
                Ok(script) => {
                    print!("{script}");
                    0
                }
                Err(e) => {
                    eprintln!("microsip: {e}");
                    EXIT_NO_PHONE
                }
            };
        }
        _ => {}
    }
    let profile = options
        .profile
        .clone()
        .unwrap_or_else(|| paths::DEFAULT_PROFILE.to_string());
    let (socket, lock) = match (paths::socket_path(&profile), paths::lock_path(&profile)) {
        (Ok(s), Ok(l)) => (s, l),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("microsip: {e}");
            return EXIT_NO_PHONE;
        }
    };

    if words
        .first()
        .is_some_and(|w| w.eq_ignore_ascii_case("open"))
    {
        return open_web_page(&words[1..], &socket, &profile);
    }
    if let [word] = words.as_slice() {
        if word.eq_ignore_ascii_case("http-token") {
            return print_http_token(&options, &profile, &lock);
        }
    }

    // Either a phone answers on the socket, or this process takes the lock and is the
    // phone; while another process holds the lock without answering, it is starting
    // (or exiting): wait for it, bounded.
    let deadline = Instant::now() + STARTING_WAIT;
    loop {
        if let Some(stream) = client::connect(&socket) {
            return to_running_phone(stream, &options, words, &profile, &lock);
        }
        match paths::claim(&lock) {
            Ok(Claim::Won(held)) => return start_phone(options, words, &profile, held),
            Ok(Claim::Held) => {}
            Err(e) => {
                eprintln!("microsip: {e}");
                return EXIT_NO_PHONE;
            }
        }
        if Instant::now() >= deadline {
            eprintln!(
                "microsip: a phone for profile '{profile}' holds {} but did not answer on {} \
                 within {} s",
                lock.display(),
                socket.display(),
                STARTING_WAIT.as_secs()
            );
            return EXIT_NO_PHONE;
        }
        std::thread::sleep(POLL);
    }
}

/// `microsip http-token`: prints the HTTP API's bearer token, kept beside the ini
/// (the running phone's, when one runs), making it when there is none yet.
fn print_http_token(options: &StartOptions, profile: &str, lock: &Path) -> i32 {
    let ini = match (&options.ini, paths::running_phone(lock)) {
        (None, Some(running)) => running.ini,
        (explicit, _) => paths::ini_path(explicit.as_deref(), profile),
    };
    match microsip_control::http::auth::load_or_create_token(&ini) {
        Ok(token) => {
            println!("{token}");
            0
        }
        Err(e) => {
            eprintln!("microsip: {e}");
            EXIT_NO_PHONE
        }
    }
}

/// `microsip open [--print]`: asks the running phone for the web page's URL with a
/// one-time login code and opens it with `$BROWSER` (else `xdg-open`), or prints it.
fn open_web_page(args: &[String], socket: &Path, profile: &str) -> i32 {
    let print = match args {
        [] => false,
        [flag] if flag == "--print" => true,
        _ => {
            eprintln!("microsip: usage: microsip open [--print]");
            return EXIT_NO_PHONE;
        }
    };
    let Some(stream) = client::connect(socket) else {
        eprintln!("microsip: no phone is running for profile '{profile}'");
        return EXIT_NO_PHONE;
    };
    let url = match client::ask(stream, &["http-login".to_string()]) {
        Ok(url) => url,
        Err(e) => {
            eprintln!("microsip: {e}");
            return client::EXIT_REFUSED;
        }
    };
    if print {
        println!("{url}");
        return 0;
    }
    let opener = std::env::var("BROWSER")
        .ok()
        .filter(|b| !b.trim().is_empty())
        .unwrap_or_else(|| "xdg-open".to_string());
    match std::process::Command::new(&opener).arg(&url).spawn() {
        Ok(_) => 0,
        Err(e) => {
            eprintln!(
                "microsip: cannot run {opener}: {e}; `microsip open --print` prints the address"
            );
            client::EXIT_REFUSED
        }
    }
}

/// A phone runs: hand it what the start options ask (refusing those that only apply
/// when a phone starts), then the command words.
fn to_running_phone(
    stream: std::os::unix::net::UnixStream,
    options: &StartOptions,
    words: Vec<String>,
    profile: &str,
    lock: &Path,
) -> i32 {
    let running = paths::running_phone(lock);
    let mut requests = match runtime_commands(options, running.as_ref(), profile) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("microsip: {e}");
            return EXIT_NO_PHONE;
        }
    };
    if !words.is_empty() {
        requests.push(words);
    }
    if requests.is_empty() {
        eprintln!("microsip: a phone is already running for profile '{profile}'");
        return client::forward(stream, &["show".to_string()], false);
    }
    client::forward_all(stream, &requests, options.json)
}

/// No phone runs and this process holds the lock. A dial starts the phone (it dials
/// once registered, with the account given); anything else has nothing to act on.
fn start_phone(
    options: StartOptions,
    words: Vec<String>,
    profile: &str,
    lock: InstanceLock,
) -> i32 {
    let mut call_on_start = options.call.clone().map(|target| (target, None));
    if !words.is_empty() {
        // `microsip '[Dial(1002)]'` too; a string of several commands needs a phone.
        match parse_args_all(&words).as_deref() {
            Ok(
                [Command::Dial {
                    target, account, ..
                }],
            ) => {
                if call_on_start.is_some() {
                    eprintln!("microsip: give either --call or a dial command, not both");
                    return EXIT_NO_PHONE;
                }
                call_on_start = Some((target.clone(), *account));
            }
            Ok(_) => {
                eprintln!(
                    "microsip: no phone is running for profile '{profile}' \
                     (start one with: microsip --profile {profile})"
                );
                return EXIT_NO_PHONE;
            }
            Err(e) => {
                eprintln!("microsip: {}", e.message);
                return EXIT_NO_PHONE;
            }
        }
    }
    phone::run(options, profile, call_on_start, lock)
}
