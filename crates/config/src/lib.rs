//! microsip.ini: the round-trip document, typed settings and accounts, atomic writes.
//!
//! - [`IniDocument`] keeps every line of the file, so a rewrite changes only what was set.
//! - [`IniFile`] loads it from disk (UTF-8 or UTF-16 with BOM) and saves it atomically, mode 0600.
//! - [`Config`] is the typed, read-only view: [`Settings`], [`Account`]s and [`ConfigProblem`]s.

pub mod file;
pub mod ini;
pub mod settings;

pub use file::{
    read_file, read_file_limited, remove_stale_temps, write_atomic, FileError, IniFile,
    MAX_FILE_SIZE,
};
pub use ini::{IniDocument, IniError, IniProblem, LineEnding, SourceEncoding};
pub use settings::{
    account_section, default_document, Account, AudioCodec, AutoAnswer, AutoAnswerCalls, Config,
    ConfigProblem, DenyIncoming, DtmfMethod, Forwarding, Hooks, RecordingFormat, Settings, Srtp,
    Transport, DEFAULT_USER_AGENT, SETTINGS,
};
