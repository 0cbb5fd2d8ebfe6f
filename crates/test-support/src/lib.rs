//! What the workspace's tests share, so no test file keeps its own copy: scratch
//! folders removed when the test ends, FIFOs, and the tone measures (Goertzel power,
//! the dominant frequency) that audio tests assert with. A dev-dependency only; it
//! knows nothing of the phone.
// Test support: a failed step is a failed test, so it panics on purpose.
#![allow(clippy::unwrap_used)]

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh folder under the system temp dir, removed (with everything in it, made
/// writable first) when dropped. Derefs to its [`Path`].
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Makes `microsip-<tag>-<pid>-<n>-<nanos>` in the temp dir; `tag` names the test.
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "microsip-{tag}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A path for `name` inside the folder (nothing is created).
    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The names of the entries in the folder, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl From<&TempDir> for PathBuf {
    fn from(dir: &TempDir) -> PathBuf {
        dir.0.clone()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        // A test may have made the folder read-only; make it removable again.
        let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o700));
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Makes a FIFO (named pipe) at `path`, mode 0600.
#[allow(unsafe_code)] // libc::mkfifo; std has no FIFO maker
pub fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path that lives across the call.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo: {}", std::io::Error::last_os_error());
}

/// Power of `freq` Hz in `x` sampled at `rate` (Goertzel), normalised by length.
pub fn goertzel(x: &[i16], freq: f64, rate: u32) -> f64 {
    let w = std::f64::consts::TAU * freq / f64::from(rate);
    let c = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &v in x {
        let s = f64::from(v) + c * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    (s1 * s1 + s2 * s2 - c * s1 * s2) / (x.len() as f64).powi(2)
}

/// The strongest frequency in `x` sampled at `rate`, to 10 Hz, searched from
/// 50 Hz to 50 Hz below the Nyquist frequency.
pub fn dominant(x: &[i16], rate: u32) -> u32 {
    (50..=rate / 2 - 50)
        .step_by(10)
        .max_by(|a, b| {
            goertzel(x, f64::from(*a), rate).total_cmp(&goertzel(x, f64::from(*b), rate))
        })
        .unwrap_or(0)
}

/// `n` samples of a sine of `freq` Hz and peak `amplitude` at `rate`.
pub fn sine(freq: f64, amplitude: f64, rate: u32, n: usize) -> Vec<i16> {
    (0..n)
        .map(|i| {
            (amplitude * (std::f64::consts::TAU * freq * i as f64 / f64::from(rate)).sin()) as i16
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sine_is_found_at_its_frequency_and_the_folder_goes_away() {
        let x = sine(1000.0, 8000.0, 8000, 1600);
        assert_eq!(dominant(&x, 8000), 1000);
        assert!(goertzel(&x, 1000.0, 8000) > 100.0 * goertzel(&x, 400.0, 8000));
        let dir = TempDir::new("test-support");
        std::fs::write(dir.file("a"), "x").unwrap();
        mkfifo(&dir.file("p"));
        assert_eq!(dir.names(), ["a", "p"]);
        let path = dir.path().to_path_buf();
        drop(dir);
        assert!(!path.exists());
    }
}
