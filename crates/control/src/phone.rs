//! Becoming the phone: holding the profile's lock, find and load the ini (creating
//! the default profile on first run), apply this run's start options, start the
//! engine, the control socket, the HTTP API and the D-Bus face (when enabled),
//! and exit cleanly on `exit`, SIGTERM or SIGINT.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use microsip_config::{default_document, Config, IniFile};
use microsip_engine::{Command, ConfigStore, EngineSetup};
use tracing::{error, info, warn};

use crate::audit::AuditLog;
use crate::contacts::ContactsFile;
use crate::integrations;
use crate::messages::MessageStore;
use crate::options::StartOptions;
use crate::paths::{self, InstanceLock, RunningPhone};
use crate::records::RecordFiles;
use crate::socket::SocketServer;

/// Writes settings the engine changes back into the ini, atomically, under the lock
/// every writer of the ini shares (the history is written by the integrations).
struct IniStore {
    file: Arc<Mutex<IniFile>>,
}

impl ConfigStore for IniStore {
    fn set(&mut self, section: &str, key: &str, value: &str) -> Result<(), String> {
        let mut file = self
            .file
            .lock()
            .map_err(|_| "the ini lock is poisoned".to_string())?;
        // Re-read first so a change made by hand since start-up is not overwritten.
        file.reload().map_err(|e| e.to_string())?;
        file.set(section, key, value)
            .map_err(|e| format!("[{section}] {key}: {e}"))?;
        file.save().map_err(|e| e.to_string())
    }
}

/// Sets up logging to stderr: our crates at `info` (or `$MICROSIP_LOG`), the SIP
/// library at `warn`.
pub fn init_logging() {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let level = match std::env::var("MICROSIP_LOG").as_deref() {
        Ok("debug") => LevelFilter::DEBUG,
        Ok("trace") => LevelFilter::TRACE,
        Ok("warn") => LevelFilter::WARN,
        Ok("error") => LevelFilter::ERROR,
        _ => LevelFilter::INFO,
    };
    let filter = Targets::new()
        .with_default(level)
        .with_target("rsipstack", LevelFilter::WARN.min(level));
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false),
        )
        .with(filter)
        .try_init();
}

/// The account this run's `--user`/`--domain`/... apply to: `accountId`, or 1 when
/// that is the local account 0.
fn override_section(config: &Config) -> (u32, String) {
    let n = if config.settings.account_id == 0 {
        1
    } else {
        config.settings.account_id
    };
    (n, microsip_config::account_section(n))
}

/// Applies start options to a copy of the document (never saved: `--password` does
/// not end up in the ini) and builds the typed config from it.
fn effective_config(file: &IniFile, options: &StartOptions) -> Config {
    let mut doc = file.doc().clone();
    let base = file.config();
    let o = &options.account;
    let mut touched_account = false;
    let (n, section) = override_section(&base);
    let set = |doc: &mut microsip_config::IniDocument, section: &str, key: &str, value: &str| {
        if let Err(e) = doc.set(section, key, value.trim()) {
            warn!("start option for [{section}] {key} ignored: {e}");
        }
    };
    for (key, value) in [
        ("displayName", &o.display_name),
        ("username", &o.user),
        ("domain", &o.domain),
        ("password", &o.password),
        ("proxy", &o.proxy),
    ] {
        if let Some(v) = value {
            set(&mut doc, &section, key, v);
            touched_account = true;
        }
    }
    if let Some(rules) = &options.dialplan {
        set(&mut doc, &section, "dialPlan", rules);
    }
    if touched_account {
        set(&mut doc, "Settings", "accountId", &n.to_string());
    }
    if let Some(stun) = &o.stun {
        set(&mut doc, "Settings", "STUN", stun);
        set(&mut doc, "Settings", "enableSTUN", "1");
    }
    if let Some(on) = options.autoanswer {
        set(
            &mut doc,
            "Settings",
            "autoAnswer",
            if on { "all" } else { "button" },
        );
    }
    if let Some(v) = options.setvolume {
        set(&mut doc, "Settings", "volumeOutput", &v.to_string());
    }
    if let Some(v) = options.micvolume {
        set(&mut doc, "Settings", "volumeInput", &v.to_string());
    }
    Config::from_document(&doc, file.path())
}

/// Loads the ini for this profile, creating it with the default profile when missing.
/// A file that exists but cannot be read whole (too large, not a regular file,
/// unreadable) is an error: the phone does not start and the file stays as it is.
fn load_ini(path: PathBuf) -> Result<IniFile, String> {
    let mut file = IniFile::load(&path).map_err(|e| e.to_string())?;
    if !file.existed() {
        file = IniFile::with_document(&path, default_document());
        match file.save() {
            Ok(()) => info!("created {}", path.display()),
            Err(e) => warn!("could not create {}: {e}", path.display()),
        }
    }
    Ok(file)
}

/// Removes the temporary files a phone killed in the middle of a write left beside
/// the ini (and beside the file it links to): only ours, only a dead process's.
fn remove_stale_temps(ini: &std::path::Path) {
    let mut places = vec![ini.to_path_buf()];
    if let Ok(real) = std::fs::canonicalize(ini) {
        if real != ini {
            places.push(real);
        }
    }
    for place in places {
        let Some(name) = place.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let dir = match place.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        for path in microsip_config::remove_stale_temps(&dir, &[name, crate::contacts::FILE_NAME]) {
            info!("removed {} (left by an interrupted write)", path.display());
        }
    }
}

/// At most this many problems of the ini are printed at start (a damaged file may
/// have one per line); the rest are counted.
const MAX_PROBLEMS_SHOWN: usize = 50;

/// Runs the phone in this process until it is told to exit. Returns the exit status.
/// `lock` is the profile's lock ([`paths::claim`]), held until the socket is gone;
/// `call_on_start` is a target (and account) to dial once registered.
pub fn run(
    options: StartOptions,
    profile: &str,
    call_on_start: Option<(String, Option<u32>)>,
    mut lock: InstanceLock,
) -> i32 {
    init_logging();
    let socket = match paths::socket_path(profile) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("microsip: {e}");
            return 2;
        }
    };
    // Still one thread here: the only safe moment to set the environment.
    match paths::runtime_dir() {
        Ok(dir) => {
            if let Err(e) = microsip_engine::devices::prepare_pulse_cookie(&dir) {
                warn!("PulseAudio may refuse us: {e}");
            }
        }
        Err(e) => warn!("PulseAudio may refuse us: {e}"),
    }
    let ini_path = paths::ini_path(options.ini.as_deref(), profile);
    remove_stale_temps(&ini_path);
    let file = match load_ini(ini_path.clone()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("microsip: cannot use the ini: {e}");
            return 2;
        }
    };
    let config = effective_config(&file, &options);
    for problem in config.problems.iter().take(MAX_PROBLEMS_SHOWN) {
        eprintln!("microsip: {problem}");
    }
    if config.problems.len() > MAX_PROBLEMS_SHOWN {
        eprintln!(
            "microsip: ... and {} more problems in {}",
            config.problems.len() - MAX_PROBLEMS_SHOWN,
            ini_path.display()
        );
    }
    let running = RunningPhone {
        pid: std::process::id(),
        ini: paths::absolute(&ini_path),
        debug: options.debug.as_deref().map(paths::absolute),
        log: options.log.as_deref().map(paths::absolute),
    };
    if let Err(e) = lock.record(&running) {
        warn!("{e}: a later `microsip --ini FILE` cannot be checked against this phone");
    }
    let file = Arc::new(Mutex::new(file));
    let http_port = options.http.unwrap_or(config.settings.http_port);
    let http_origins = config.settings.http_allow_origins.clone();

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("microsip: cannot start: {e}");
            return 2;
        }
    };
    let (observer, integrations) =
        match integrations::spawn(config.clone(), file.clone(), options.log.clone()) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("microsip: cannot start: {e}");
                return 2;
            }
        };
    let (dbus_on, notifications_on) = (config.settings.dbus, config.settings.notifications);
    let code = runtime.block_on(async move {
        let setup = EngineSetup {
            config,
            store: Box::new(IniStore { file: file.clone() }),
            trace: options.debug.clone(),
            call_on_start,
            observers: vec![observer],
            archive: Box::new(MessageStore::beside_ini(&ini_path)),
            records: Box::new(RecordFiles {
                ini: file.clone(),
                contacts: ContactsFile::beside_ini(&ini_path),
            }),
        };
        let (engine, mut finished) = match microsip_engine::start(setup).await {
            Ok(x) => x,
            Err(e) => {
                eprintln!("microsip: {e}");
                return 2;
            }
        };
        // `media stream ID URL`: the phone connects out to a WebSocket.
        engine.set_media_dialer(crate::media_stream::dialer());
        // Before the socket: a client that sees the phone answer finds the API up.
        let http =
            crate::http::start_if_enabled(http_port, engine.clone(), &ini_path, &http_origins)
                .await
                .map(Arc::new);
        // `microsip open` asks the socket for a login URL the HTTP server mints.
        let web_login = http
            .clone()
            .map(|server| Arc::new(move || server.login_url()) as crate::socket::WebLogin);
        let audit = Arc::new(AuditLog::beside_ini(&ini_path));
        let server = match SocketServer::bind(&socket, engine.clone(), Some(audit), web_login).await
        {
            Ok(s) => s,
            Err(e) => {
                eprintln!("microsip: {e}");
                let _ = engine.execute(Command::Exit).await;
                return 2;
            }
        };
        info!("phone ready; control socket {}", socket.display());
        // The desktop's bus (and its notifications), when there is one; left at the
        // end of this block, once the engine has finished.
        #[cfg(feature = "dbus")]
        let _desktop =
            crate::dbus::start_desktop(engine.clone(), profile, dbus_on, notifications_on).await;
        #[cfg(not(feature = "dbus"))]
        if dbus_on || notifications_on {
            info!("D-Bus off: not in this build");
        }
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => Some(s),
                Err(e) => {
                    error!("cannot watch SIGTERM: {e}");
                    None
                }
            };
        let term_signal = async {
            match term.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = &mut finished => {}
            _ = term_signal => {
                info!("SIGTERM: exiting");
                let _ = engine.execute(Command::Exit).await;
                let _ = (&mut finished).await;
            }
            _ = tokio::signal::ctrl_c() => {
                info!("interrupted: exiting");
                let _ = engine.execute(Command::Exit).await;
                let _ = (&mut finished).await;
            }
        }
        server.drain().await;
        drop(server);
        0
    });
    // Everything that held an event sender is gone with the runtime's tasks.
    drop(runtime);
    integrations.finish();
    // Only now may another process become the phone: our socket file is gone.
    drop(lock);
    code
}
