//! Where the phone keeps its files: the per-profile socket, the per-profile lock that
//! makes exactly one process the phone, and the ini location (`--ini`, portable mode
//! beside the binary, or `$XDG_CONFIG_HOME`).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The profile used when `--profile` is not given.
pub const DEFAULT_PROFILE: &str = "default";

#[allow(unsafe_code)] // libc calls; see the SAFETY notes inside
fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// `$XDG_RUNTIME_DIR/microsip`, else `/tmp/microsip-<uid>`: created mode 0700 and
/// refused when someone else owns it or others may enter it.
pub(crate) fn runtime_dir() -> Result<PathBuf, String> {
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(base) => PathBuf::from(base).join("microsip"),
        None => PathBuf::from(format!("/tmp/microsip-{}", uid())),
    };
    private_dir(&dir)?;
    Ok(dir)
}

/// Creates `dir` (mode 0700) or checks that the existing one is ours and private.
fn private_dir(dir: &Path) -> Result<(), String> {
    match fs::symlink_metadata(dir) {
        Ok(meta) => {
            if !meta.is_dir() {
                return Err(format!("{} exists and is not a folder", dir.display()));
            }
            if meta.uid() != uid() {
                return Err(format!(
                    "{} belongs to another user; refusing to use it",
                    dir.display()
                ));
            }
            if meta.mode() & 0o077 != 0 {
                fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                    .map_err(|e| format!("cannot make {} private: {e}", dir.display()))?;
            }
            Ok(())
        }
        Err(_) => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display())),
    }
}

/// The control socket of `profile`.
pub fn socket_path(profile: &str) -> Result<PathBuf, String> {
    Ok(runtime_dir()?.join(format!("{profile}.sock")))
}

/// The lock file of `profile`, beside its socket.
pub fn lock_path(profile: &str) -> Result<PathBuf, String> {
    Ok(runtime_dir()?.join(format!("{profile}.lock")))
}

/// What the phone holding a profile's lock runs with, recorded in the lock file so a
/// later `microsip --ini FILE` can tell whether FILE is the running phone's. Absolute
/// paths; no secrets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningPhone {
    /// The running phone's process id.
    pub pid: u32,
    /// The ini file it runs with.
    pub ini: PathBuf,
    /// Its SIP trace file (`--debug`), if any.
    pub debug: Option<PathBuf>,
    /// Its CSV call log (`--log`), if any.
    pub log: Option<PathBuf>,
}

/// The profile's lock, held (`flock`, exclusive) for as long as this process is the
/// phone: taken before anything registers, released when the process ends. The file
/// stays (unlinking a locked file lets a second process lock a new one).
#[derive(Debug)]
pub struct InstanceLock {
    file: File,
}

/// The outcome of [`claim`].
#[derive(Debug)]
pub enum Claim {
    /// This process is the phone now.
    Won(InstanceLock),
    /// Another process holds the lock: a phone is starting, running or exiting.
    Held,
}

/// Tries (without waiting) to become the phone of the profile whose lock is `path`.
#[allow(unsafe_code)] // libc calls; see the SAFETY notes inside
pub fn claim(path: &Path) -> Result<Claim, String> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot open the lock {}: {e}", path.display()))?;
    // SAFETY: flock on a file descriptor we own; it has no memory effects.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(Claim::Won(InstanceLock { file }));
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(Claim::Held)
    } else {
        Err(format!("cannot lock {}: {e}", path.display()))
    }
}

impl InstanceLock {
    /// Records what this phone runs with (replacing what an earlier phone wrote).
    pub fn record(&mut self, running: &RunningPhone) -> Result<(), String> {
        let text = serde_json::to_string(running).map_err(|e| e.to_string())?;
        self.file
            .set_len(0)
            .and_then(|_| self.file.rewind())
            .and_then(|_| self.file.write_all(text.as_bytes()))
            .and_then(|_| self.file.flush())
            .map_err(|e| format!("cannot write the lock file: {e}"))
    }
}

/// What the phone holding the lock at `path` recorded, if it did.
pub fn running_phone(path: &Path) -> Option<RunningPhone> {
    let mut text = String::new();
    File::open(path).ok()?.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

/// `path` made absolute for comparing: canonical when it exists, else its canonical
/// folder joined with its name, else joined to the current folder.
pub fn absolute(path: &Path) -> PathBuf {
    if let Ok(p) = fs::canonicalize(path) {
        return p;
    }
    if let (Some(parent), Some(name)) = (path.parent(), path.file_name()) {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        if let Ok(p) = fs::canonicalize(parent) {
            return p.join(name);
        }
    }
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The ini to use: `--ini` if given; else `microsip.ini` beside the binary when it
/// exists (portable mode); else `$XDG_CONFIG_HOME/microsip/microsip.ini` (other
/// profiles: `.../microsip/<profile>/microsip.ini`).
pub fn ini_path(explicit: Option<&Path>, profile: &str) -> PathBuf {
    if let Some(path) = explicit {
        return path.to_path_buf();
    }
    if let Some(portable) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("microsip.ini")))
        .filter(|p| p.is_file())
    {
        return portable;
    }
    let config_home = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    let base = config_home.join("microsip");
    if profile == DEFAULT_PROFILE {
        base.join("microsip.ini")
    } else {
        base.join(profile).join("microsip.ini")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_ini_wins() {
        let p = ini_path(Some(Path::new("/x/y.ini")), "a");
        assert_eq!(p, PathBuf::from("/x/y.ini"));
    }

    #[test]
    fn private_dir_is_created_0700() {
        let base = microsip_test_support::TempDir::new("paths");
        let dir = base.join("inner");
        private_dir(&dir).unwrap();
        let mode = fs::metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn one_process_holds_the_lock_and_records_what_it_runs() {
        let base = microsip_test_support::TempDir::new("lock");
        private_dir(&base).unwrap();
        let path = base.join("p.lock");
        let Claim::Won(mut lock) = claim(&path).unwrap() else {
            panic!("the first claim must win");
        };
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        // flock locks belong to the open file: a second open is refused while held.
        assert!(matches!(claim(&path).unwrap(), Claim::Held));
        let running = RunningPhone {
            pid: 7,
            ini: base.join("a.ini"),
            debug: Some(base.join("t.log")),
            log: None,
        };
        lock.record(&running).unwrap();
        lock.record(&running).unwrap(); // rewritten, not appended
        assert_eq!(running_phone(&path), Some(running));
        drop(lock);
        assert!(matches!(claim(&path).unwrap(), Claim::Won(_)));
    }

    #[test]
    fn absolute_paths_compare_equal() {
        let here = std::env::current_dir().unwrap();
        let here = fs::canonicalize(here).unwrap();
        assert_eq!(
            absolute(Path::new("no-such-file.ini")),
            here.join("no-such-file.ini")
        );
        assert_eq!(
            absolute(Path::new("./no-such-file.ini")),
            here.join("no-such-file.ini")
        );
        assert_eq!(absolute(&here), here);
    }
}
