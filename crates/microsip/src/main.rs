//! `microsip`: the first process for a profile becomes the phone; every later one
//! forwards its arguments to it over the control socket, prints the reply and exits.

use microsip_control::client::{self, EXIT_NO_PHONE};
use microsip_control::options::{parse_start, usage};
use microsip_control::{paths, phone};
use microsip_engine::grammar::parse_args;
use microsip_engine::Command;

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
    let profile = options
        .profile
        .clone()
        .unwrap_or_else(|| paths::DEFAULT_PROFILE.to_string());
    let socket = match paths::socket_path(&profile) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("microsip: {e}");
            return EXIT_NO_PHONE;
        }
    };

    if let Some(stream) = client::connect(&socket) {
        if words.is_empty() {
            eprintln!("microsip: a phone is already running for profile '{profile}'");
            return client::forward(stream, &["show".to_string()], false);
        }
        return client::forward(stream, &words, options.json);
    }

    // No phone runs for this profile. A dial starts one; anything else has nothing
    // to act on.
    let mut call_on_start = None;
    if !words.is_empty() {
        match parse_args(&words) {
            Ok(Command::Dial { target, .. }) => call_on_start = Some(target),
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
    phone::run(options, &profile, call_on_start)
}
