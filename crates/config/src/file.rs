//! The ini file on disk: loading (missing file = empty document) and atomic, private saving.

use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::ini::{IniDocument, IniProblem};
use crate::settings::Config;

/// Files larger than this are refused rather than read into memory.
pub const MAX_FILE_SIZE: u64 = 64 * 1024 * 1024;

/// A file operation that failed: which path, what was being done, and the system's
/// reason (e.g. `No space left on device`).
#[derive(Debug)]
pub struct FileError {
    /// The path the failing operation was about.
    pub path: PathBuf,
    /// What was being done: "read", "create", "write", "sync", "rename to ...", ...
    pub action: String,
    /// The underlying error.
    pub source: io::Error,
}

impl FileError {
    fn new(path: &Path, action: impl Into<String>, source: io::Error) -> Self {
        FileError {
            path: path.to_path_buf(),
            action: action.into(),
            source,
        }
    }

    /// The kind of the underlying error.
    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: cannot {}: {}",
            self.path.display(),
            self.action,
            self.source
        )
    }
}

impl std::error::Error for FileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// What a file that is not a regular file is, in words.
fn kind_of(file_type: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_dir() {
        "a folder"
    } else if file_type.is_fifo() {
        "a FIFO (named pipe)"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

fn refuse(path: &Path, action: &str, message: String) -> FileError {
    FileError::new(
        path,
        action,
        io::Error::new(io::ErrorKind::InvalidInput, message),
    )
}

/// Checks that `meta` is a regular file of at most `max` bytes.
fn check_regular(path: &Path, meta: &fs::Metadata, max: u64) -> Result<(), FileError> {
    if !meta.file_type().is_file() {
        return Err(refuse(
            path,
            "read",
            format!(
                "it is {}, not a regular file; it was left as it is",
                kind_of(&meta.file_type())
            ),
        ));
    }
    if meta.len() > max {
        return Err(refuse(
            path,
            "read",
            format!(
                "it is {} bytes, more than the limit of {max} bytes ({} MiB); it was left as \
                 it is",
                meta.len(),
                max / (1024 * 1024)
            ),
        ));
    }
    Ok(())
}

/// Reads a whole file, refusing files over [`MAX_FILE_SIZE`] and anything that is
/// not a regular file (a FIFO, a device, a folder): those are never opened for
/// writing and never replaced by this crate. `Ok(None)` if it does not exist.
pub fn read_file(path: &Path) -> Result<Option<Vec<u8>>, FileError> {
    read_file_limited(path, MAX_FILE_SIZE)
}

/// [`read_file`] with another size limit.
pub fn read_file_limited(path: &Path, max: u64) -> Result<Option<Vec<u8>>, FileError> {
    // Look before opening: opening a FIFO waits for a writer, opening a device may
    // act on it.
    match fs::metadata(path) {
        Ok(meta) => check_regular(path, &meta, max)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FileError::new(path, "examine", e)),
    }
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FileError::new(path, "open", e)),
    };
    // It may have been swapped between the look and the open.
    let meta = file
        .metadata()
        .map_err(|e| FileError::new(path, "examine", e))?;
    check_regular(path, &meta, max)?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| FileError::new(path, "read", e))?;
    if bytes.len() as u64 > max {
        return Err(refuse(
            path,
            "read",
            format!("it grew past the limit of {max} bytes while being read"),
        ));
    }
    Ok(Some(bytes))
}

/// The temporary file [`write_atomic`] writes before renaming it over `name`.
fn temp_name(name: &std::ffi::OsStr) -> std::ffi::OsString {
    let mut tmp = name.to_os_string();
    tmp.push(format!("{TEMP_MARK}{}", std::process::id()));
    tmp
}

/// What [`write_atomic`] puts between a file's name and its process id.
const TEMP_MARK: &str = ".tmp-";

/// Removes temporary files that [`write_atomic`] left in `dir` for the files named
/// `names` when a phone died in the middle of a write: `<name>.tmp-<pid>`, regular
/// files of our own user whose process is gone. Nothing else is touched (another
/// program's files, a live process's write in progress). Returns what was removed.
#[allow(unsafe_code)] // geteuid and kill(pid, 0): libc calls, see the SAFETY notes
pub fn remove_stale_temps(dir: &Path, names: &[&str]) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return removed;
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(text) = file_name.to_str() else {
            continue;
        };
        let Some(pid) = names.iter().find_map(|n| {
            text.strip_prefix(n)?
                .strip_prefix(TEMP_MARK)?
                .parse::<libc::pid_t>()
                .ok()
                .filter(|&p| p > 0)
        }) else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks whether the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if !gone {
            continue;
        }
        let path = entry.path();
        let ours =
            fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_file() && m.uid() == me);
        if ours && fs::remove_file(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

/// Replaces `path` with `bytes` atomically, readable only by the user (mode 0600):
/// writes `<path>.tmp-<pid>` in the same folder, syncs it, renames it over `path`
/// and syncs the folder. Missing parent folders are created with mode 0700. If
/// `path` is a symbolic link, the file it points to is replaced (the link stays).
/// On error the old file is left whole and the temporary file is removed; a
/// temporary file left by a crash is removed by [`remove_stale_temps`]. `path`
/// naming something other than a regular file (a FIFO, a device) is refused.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let target = match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => fs::canonicalize(path).unwrap_or(path.into()),
        _ => path.to_path_buf(),
    };
    let name = target.file_name().ok_or_else(|| {
        FileError::new(
            &target,
            "write",
            io::Error::new(io::ErrorKind::InvalidInput, "not a file name"),
        )
    })?;
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| FileError::new(&dir, "create folder", e))?;
    }
    // Never put a regular file where a FIFO, a device or a folder is.
    match fs::metadata(&target) {
        Ok(meta) if !meta.file_type().is_file() => {
            return Err(refuse(
                &target,
                "write",
                format!(
                    "it is {}, not a regular file; it was left as it is",
                    kind_of(&meta.file_type())
                ),
            ))
        }
        _ => {}
    }
    let tmp = dir.join(temp_name(name));

    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(|e| FileError::new(&tmp, "create", e))?;
    let written = (|| {
        file.write_all(bytes)
            .map_err(|e| FileError::new(&tmp, "write", e))?;
        file.set_permissions(Permissions::from_mode(0o600))
            .map_err(|e| FileError::new(&tmp, "set mode 0600 on", e))?;
        file.sync_all()
            .map_err(|e| FileError::new(&tmp, "sync", e))?;
        drop(file);
        fs::rename(&tmp, &target)
            .map_err(|e| FileError::new(&tmp, format!("rename to {}", target.display()), e))
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let synced = File::open(&dir).and_then(|d| d.sync_all());
    match synced {
        // Some file systems cannot sync a folder; the rename itself has happened.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
        Err(e) => Err(FileError::new(&dir, "sync folder", e)),
        Ok(()) => Ok(()),
    }
}

/// An ini file: its path and its document. Change the document with
/// [`IniFile::doc_mut`] (or [`IniFile::set`]) and [`IniFile::save`] it.
#[derive(Debug, Clone)]
pub struct IniFile {
    path: PathBuf,
    doc: IniDocument,
    existed: bool,
    problems: Vec<IniProblem>,
}

impl IniFile {
    /// Reads the file. A missing file gives an empty document
    /// ([`IniFile::existed`] is false: the caller decides whether to create it).
    pub fn load(path: impl Into<PathBuf>) -> Result<IniFile, FileError> {
        let path = path.into();
        let (doc, problems, existed) = match read_file(&path)? {
            Some(bytes) => {
                let (doc, problems) = IniDocument::parse(&bytes);
                (doc, problems, true)
            }
            None => (IniDocument::new(), Vec::new(), false),
        };
        Ok(IniFile {
            path,
            doc,
            existed,
            problems,
        })
    }

    /// A file at `path` holding `doc`, not yet saved.
    pub fn with_document(path: impl Into<PathBuf>, doc: IniDocument) -> IniFile {
        IniFile {
            path: path.into(),
            doc,
            existed: false,
            problems: Vec::new(),
        }
    }

    /// Reads the file again (e.g. before a change, to keep edits made meanwhile).
    pub fn reload(&mut self) -> Result<(), FileError> {
        *self = IniFile::load(self.path.clone())?;
        Ok(())
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file existed when loaded.
    pub fn existed(&self) -> bool {
        self.existed
    }

    /// The document.
    pub fn doc(&self) -> &IniDocument {
        &self.doc
    }

    /// The document, to change it.
    pub fn doc_mut(&mut self) -> &mut IniDocument {
        &mut self.doc
    }

    /// Lines that could not be understood when loading.
    pub fn problems(&self) -> &[IniProblem] {
        &self.problems
    }

    /// Shorthand for `doc_mut().set(...)`.
    pub fn set(&mut self, section: &str, key: &str, value: &str) -> Result<(), crate::IniError> {
        self.doc.set(section, key, value)
    }

    /// The typed view of the document, problems tagged with this file's path.
    /// Problems about the file as a whole (e.g. its encoding) come first.
    pub fn config(&self) -> Config {
        let mut config = Config::from_document(&self.doc, &self.path);
        let whole_file = self.problems.iter().filter(|p| p.line == 0);
        let mut problems: Vec<_> = whole_file
            .map(|p| crate::ConfigProblem {
                path: self.path.clone(),
                line: 0,
                section: String::new(),
                key: String::new(),
                value: String::new(),
                allowed: p.message.clone(),
                using: None,
            })
            .collect();
        problems.append(&mut config.problems);
        config.problems = problems;
        config
    }

    /// Writes the document atomically with mode 0600 (see [`write_atomic`]).
    pub fn save(&mut self) -> Result<(), FileError> {
        write_atomic(&self.path, &self.doc.to_bytes())?;
        self.existed = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_empty_and_save_creates_private_folders() {
        let dir = microsip_test_support::TempDir::new("missing");
        let path = dir.join("a/b/microsip.ini");
        let mut f = IniFile::load(&path).unwrap();
        assert!(!f.existed());
        assert!(f.doc().sections().is_empty());
        f.set("Settings", "accountId", "0").unwrap();
        f.save().unwrap();
        assert!(f.existed());
        assert_eq!(fs::read(&path).unwrap(), b"[Settings]\naccountId=0\n");
        let mode = fs::metadata(dir.join("a")).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0);
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn symlink_target_is_replaced_and_link_kept() {
        let dir = microsip_test_support::TempDir::new("link");
        let real = dir.join("real.ini");
        let link = dir.join("microsip.ini");
        fs::write(&real, "[S]\nk=1\n").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let mut f = IniFile::load(&link).unwrap();
        f.set("S", "k", "2").unwrap();
        f.save().unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read_to_string(&real).unwrap(), "[S]\nk=2\n");
    }

    #[test]
    fn unreadable_path_is_an_error_naming_it() {
        let dir = microsip_test_support::TempDir::new("dir");
        let err = IniFile::load(dir.path()).unwrap_err();
        assert!(err.to_string().starts_with(&dir.display().to_string()));
    }
}
