//! Where the phone keeps its files: the per-profile socket and the ini location
//! (`--ini`, portable mode beside the binary, or `$XDG_CONFIG_HOME`).

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The profile used when `--profile` is not given.
pub const DEFAULT_PROFILE: &str = "default";

fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// `$XDG_RUNTIME_DIR/microsip`, else `/tmp/microsip-<uid>`: created mode 0700 and
/// refused when someone else owns it or others may enter it.
pub fn runtime_dir() -> Result<PathBuf, String> {
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
        let base = std::env::temp_dir().join(format!("msip-paths-{}", std::process::id()));
        let dir = base.join("inner");
        private_dir(&dir).unwrap();
        let mode = fs::metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        fs::remove_dir_all(&base).unwrap();
    }
}
