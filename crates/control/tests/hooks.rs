//! Hooks run as child processes without a shell: placeholders, the appended number,
//! a hostile caller id as one literal argument, the time limit, a missing program.
#![allow(clippy::unwrap_used, unsafe_code)] // test code: a failed unwrap is a failed test

use microsip_test_support::TempDir;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use microsip_config::Hooks;
use microsip_control::hooks::{HookContext, HookEvent, HookOutcome, HookOutput, HookRunner};

/// A script that writes `$#` and then each argument after the first (the output
/// file), NUL-separated, to the output file.
fn args_script(dir: &Path) -> PathBuf {
    let path = dir.join("args.sh");
    fs::write(
        &path,
        "#!/bin/sh\nout=\"$1\"; shift\n{ printf '%s\\0' \"$#\"; for a in \"$@\"; do printf '%s\\0' \"$a\"; done; } > \"$out\"\n",
    )
    .unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The arguments the script saw (without the count).
fn read_args(path: &Path) -> Vec<String> {
    let text = fs::read_to_string(path).unwrap();
    let mut parts: Vec<String> = text.split('\0').map(str::to_owned).collect();
    assert_eq!(parts.pop().as_deref(), Some(""), "NUL-terminated");
    let count: usize = parts.remove(0).parse().unwrap();
    assert_eq!(count, parts.len());
    parts
}

fn hooks_with(event: HookEvent, command: String) -> Hooks {
    let mut hooks = Hooks::default();
    let slot = match event {
        HookEvent::IncomingCall => &mut hooks.incoming_call,
        HookEvent::CallRing => &mut hooks.call_ring,
        HookEvent::OutgoingCall => &mut hooks.outgoing_call,
        HookEvent::CallAnswer => &mut hooks.call_answer,
        HookEvent::CallAnswerVideo => &mut hooks.call_answer_video,
        HookEvent::CallStart => &mut hooks.call_start,
        HookEvent::CallBusy => &mut hooks.call_busy,
        HookEvent::CallEnd => &mut hooks.call_end,
    };
    *slot = Some(command);
    hooks
}

fn ctx() -> HookContext {
    HookContext {
        number: "1001".into(),
        callerid: "Alice <1001>".into(),
        name: "Alice".into(),
        user: "2002".into(),
        domain: "example.com".into(),
        server: "192.0.2.10".into(),
        duration: "42".into(),
        time: "1700000000".into(),
        callid: "7".into(),
        direction: "in".into(),
    }
}

async fn run(runner: &HookRunner, event: HookEvent, ctx: &HookContext) -> HookOutcome {
    let handle = runner.fire(event, ctx).expect("hook is set");
    handle.await.unwrap()
}

#[tokio::test]
async fn placeholders_are_substituted() {
    let dir = TempDir::new("hooks-placeholders");
    let script = args_script(&dir);
    let out = dir.join("out");
    let command = format!(
        "\"{}\" \"{}\" {{number}} {{callerid}} n={{name}} {{user}}@{{domain}} {{server}} {{duration}} {{time}} {{callid}} {{direction}} %callerid% \"two words\"",
        script.display(),
        out.display()
    );
    let runner = HookRunner::new(&hooks_with(HookEvent::CallEnd, command));
    assert_eq!(
        run(&runner, HookEvent::CallEnd, &ctx()).await,
        HookOutcome::Exited(Some(0))
    );
    assert_eq!(
        read_args(&out),
        [
            "1001",
            "Alice <1001>",
            "n=Alice",
            "2002@example.com",
            "192.0.2.10",
            "42",
            "1700000000",
            "7",
            "in",
            "Alice <1001>",
            "two words"
        ]
    );
    // Other events have no hook.
    assert!(runner.fire(HookEvent::CallStart, &ctx()).is_none());
}

#[tokio::test]
async fn number_is_appended_without_placeholders() {
    let dir = TempDir::new("hooks-append");
    let script = args_script(&dir);
    let out = dir.join("out");
    let command = format!("{} {} first second", script.display(), out.display());
    let runner = HookRunner::new(&hooks_with(HookEvent::IncomingCall, command));
    assert_eq!(
        run(&runner, HookEvent::IncomingCall, &ctx()).await,
        HookOutcome::Exited(Some(0))
    );
    assert_eq!(read_args(&out), ["first", "second", "1001"]);
}

#[tokio::test]
async fn hostile_caller_id_is_one_literal_argument() {
    let dir = TempDir::new("hooks-hostile");
    let script = args_script(&dir);
    let pwned = dir.join("pwned");
    let hostile = format!(
        "\"; rm -rf ~ $(id) `touch {p}`\n; touch {p} & echo {{number}} %callerid% \\\" '",
        p = pwned.display()
    );
    let ctx = HookContext {
        number: hostile.clone(),
        callerid: hostile.clone(),
        ..ctx()
    };
    // Placeholder form, twice in one word and alone.
    let out = dir.join("out1");
    let command = format!(
        "{} {} {{callerid}} x{{callerid}}y",
        script.display(),
        out.display()
    );
    let runner = HookRunner::new(&hooks_with(HookEvent::CallRing, command));
    assert_eq!(
        run(&runner, HookEvent::CallRing, &ctx).await,
        HookOutcome::Exited(Some(0))
    );
    assert_eq!(read_args(&out), [hostile.clone(), format!("x{hostile}y")]);

    // Appended form.
    let out = dir.join("out2");
    let command = format!("{} {}", script.display(), out.display());
    let runner = HookRunner::new(&hooks_with(HookEvent::CallRing, command));
    run(&runner, HookEvent::CallRing, &ctx).await;
    assert_eq!(read_args(&out), [hostile.as_str()]);

    // The environment carries the same value, for scripts that quote it themselves.
    let out = dir.join("env");
    let command = format!(
        "/bin/sh -c \"printf %s \\\"$MICROSIP_CALLERID\\\" > {}\"",
        out.display()
    );
    let runner = HookRunner::new(&hooks_with(HookEvent::CallRing, command));
    run(&runner, HookEvent::CallRing, &ctx).await;
    assert_eq!(fs::read_to_string(&out).unwrap(), hostile);

    assert!(!pwned.exists(), "nothing from the caller id ran");
}

#[tokio::test]
async fn slow_hook_is_killed_at_the_limit_without_blocking() {
    let dir = TempDir::new("hooks-slow");
    let pidfile = dir.join("bg.pid");
    // A child that never exits, with a grandchild in its process group.
    let command = format!(
        "/bin/sh -c \"sleep 60 & echo $! > {}; sleep 60\"",
        pidfile.display()
    );
    let runner = HookRunner::with_options(
        &hooks_with(HookEvent::CallStart, command),
        Duration::from_secs(1),
        HookOutput::Null,
        4,
    );
    let started = Instant::now();
    let handle = runner.fire(HookEvent::CallStart, &ctx()).unwrap();
    let fire_took = started.elapsed();
    assert!(
        fire_took < Duration::from_millis(50),
        "fire took {fire_took:?}"
    );

    let outcome = handle.await.unwrap();
    let total = started.elapsed();
    assert_eq!(outcome, HookOutcome::Killed);
    assert!(
        total >= Duration::from_millis(950) && total < Duration::from_secs(5),
        "killed after {total:?}"
    );
    assert_eq!(runner.running(), 0);

    // The grandchild went with the group (gone, or a zombie awaiting its reaper).
    let pid = fs::read_to_string(&pidfile).unwrap().trim().to_owned();
    let stat = format!("/proc/{pid}/stat");
    let mut dead = false;
    for _ in 0..100 {
        dead = match fs::read_to_string(&stat) {
            Err(_) => true,
            Ok(s) => s
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        };
        if dead {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(dead, "background process {pid} still running");
}

#[tokio::test]
async fn second_hook_is_not_delayed_by_a_slow_one() {
    let dir = TempDir::new("hooks-parallel");
    let script = args_script(&dir);
    let out = dir.join("out");
    let mut hooks = hooks_with(HookEvent::CallAnswer, "sleep 60".into());
    hooks.incoming_call = Some(format!("{} {}", script.display(), out.display()));
    let runner = HookRunner::with_options(&hooks, Duration::from_secs(2), HookOutput::Log, 8);
    let slow = runner.fire(HookEvent::CallAnswer, &ctx()).unwrap();
    let started = Instant::now();
    let quick = runner.fire(HookEvent::IncomingCall, &ctx()).unwrap();
    assert_eq!(quick.await.unwrap(), HookOutcome::Exited(Some(0)));
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(read_args(&out), ["1001"]);
    assert_eq!(slow.await.unwrap(), HookOutcome::Killed);
}

#[tokio::test]
async fn missing_program_is_not_an_error() {
    let runner = HookRunner::new(&hooks_with(
        HookEvent::CallEnd,
        "/nonexistent/microsip-hook {number}".into(),
    ));
    let started = Instant::now();
    let handle = runner.fire(HookEvent::CallEnd, &ctx()).unwrap();
    assert!(started.elapsed() < Duration::from_millis(50));
    match handle.await.unwrap() {
        HookOutcome::SpawnFailed(reason) => assert!(!reason.is_empty()),
        other => panic!("unexpected {other:?}"),
    }
    // Not executable, and a word-less command.
    let runner = HookRunner::new(&hooks_with(HookEvent::CallEnd, "/etc/hostname".into()));
    let outcome = runner
        .fire(HookEvent::CallEnd, &ctx())
        .unwrap()
        .await
        .unwrap();
    assert!(
        matches!(outcome, HookOutcome::SpawnFailed(_)),
        "{outcome:?}"
    );
    let runner = HookRunner::new(&hooks_with(HookEvent::CallEnd, "  \"\" ".into()));
    let outcome = runner
        .fire(HookEvent::CallEnd, &ctx())
        .unwrap()
        .await
        .unwrap();
    assert!(
        matches!(outcome, HookOutcome::SpawnFailed(_)),
        "{outcome:?}"
    );
    let runner = HookRunner::new(&hooks_with(HookEvent::CallEnd, "   ".into()));
    assert!(runner.fire(HookEvent::CallEnd, &ctx()).is_none());
}

#[tokio::test]
async fn noisy_hook_does_not_block_on_its_output() {
    let runner = HookRunner::with_options(
        &hooks_with(
            HookEvent::CallEnd,
            "/bin/sh -c \"head -c 2000000 /dev/zero | tr '\\\\0' x; head -c 300000 /dev/zero >&2; echo done\"".into(),
        ),
        Duration::from_secs(10),
        HookOutput::Log,
        4,
    );
    let started = Instant::now();
    let outcome = run(&runner, HookEvent::CallEnd, &ctx()).await;
    assert_eq!(outcome, HookOutcome::Exited(Some(0)));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn too_many_running_hooks_are_skipped() {
    let runner = HookRunner::with_options(
        &hooks_with(HookEvent::CallRing, "sleep 60".into()),
        Duration::from_secs(2),
        HookOutput::Null,
        1,
    );
    let first = runner.fire(HookEvent::CallRing, &ctx()).unwrap();
    let second = runner.fire(HookEvent::CallRing, &ctx()).unwrap();
    assert_eq!(second.await.unwrap(), HookOutcome::Skipped);
    assert_eq!(first.await.unwrap(), HookOutcome::Killed);
    assert_eq!(runner.running(), 0);
}

#[test]
fn fire_outside_a_runtime_does_not_panic() {
    let runner = HookRunner::new(&hooks_with(HookEvent::CallEnd, "true".into()));
    assert!(runner.fire(HookEvent::CallEnd, &ctx()).is_none());
}

#[tokio::test]
async fn an_enormous_time_limit_is_not_a_panic() {
    let runner = HookRunner::with_options(
        &hooks_with(HookEvent::CallEnd, "true".into()),
        Duration::MAX,
        HookOutput::Log,
        0,
    );
    assert_eq!(
        run(&runner, HookEvent::CallEnd, &ctx()).await,
        HookOutcome::Exited(Some(0))
    );
}
