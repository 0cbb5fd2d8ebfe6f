//! The API audit log: one JSON line per command received on the control socket,
//! with the time, where it came from (`cli`: a `microsip ARGS...` process; `socket`:
//! any other client), the command as understood (passwords print as `***`) and the
//! result. Appended, never rewritten; a failure to write is logged, never fatal.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use microsip_engine::{Command, Reply};
use serde_json::json;
use tracing::warn;

/// Appends audit records to one file (mode 0600).
pub struct AuditLog {
    path: PathBuf,
    lock: Mutex<()>,
}

impl AuditLog {
    /// A log appending to `path`; the file is made (mode 0600) at the first record.
    pub fn new(path: impl Into<PathBuf>) -> AuditLog {
        AuditLog {
            path: path.into(),
            lock: Mutex::new(()),
        }
    }

    /// `audit.log` beside the ini.
    pub fn beside_ini(ini: &Path) -> AuditLog {
        AuditLog::new(ini.parent().unwrap_or(Path::new(".")).join("audit.log"))
    }

    /// Records one request. `command` is what the grammar made of it, or the raw
    /// words (with `/password:` values masked) when it made nothing.
    pub fn record(&self, source: &str, command: Result<&Command, &[String]>, reply: &Reply) {
        let request = match command {
            Ok(c) => json!({ "command": c.name(), "parsed": format!("{c:?}") }),
            Err(words) => json!({ "words": mask(words) }),
        };
        let result = match reply {
            Ok(a) => json!({ "ok": true, "text": a.text }),
            Err(f) => json!({ "ok": false, "code": f.code.as_str(), "error": f.message }),
        };
        let line = json!({
            "time": microsip_engine::time::rfc3339(SystemTime::now()),
            "source": source,
            "request": request,
            "result": result,
        });
        let _guard = self.lock.lock();
        let written = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)
            .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
        if let Err(e) = written {
            warn!("audit log {}: {e}", self.path.display());
        }
    }
}

/// Raw words with anything that may be a password replaced by `***`.
fn mask(words: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(words.len());
    let mut hide_next = false;
    for w in words {
        if hide_next {
            out.push("***".to_string());
            hide_next = false;
            continue;
        }
        let lower = w.to_ascii_lowercase();
        if lower.starts_with("/password:") {
            out.push("/password:***".to_string());
        } else if lower == "--password" {
            out.push(w.clone());
            hide_next = true;
        } else if lower.starts_with("--password=") {
            out.push("--password=***".to_string());
        } else {
            out.push(w.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use microsip_engine::command::Secret;

    #[test]
    fn passwords_never_reach_the_log() {
        let dir = microsip_test_support::TempDir::new("audit");
        let log = AuditLog::new(dir.join("audit.log"));
        let cmd = Command::Account {
            number: 1,
            password: Some(Secret("s3cret;#".into())),
        };
        log.record("cli", Ok(&cmd), &microsip_engine::reply::ok("stored"));
        let words: Vec<String> = ["/account:1", "/password:s3cret;#", "--password", "other"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        log.record("socket", Err(&words), &microsip_engine::reply::ok("x"));
        let text = std::fs::read_to_string(dir.join("audit.log")).unwrap();
        assert!(
            !text.contains("s3cret") && !text.contains("other"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 2);
        assert!(text.contains("\"source\":\"cli\"") && text.contains("\"command\":\"account\""));
    }
}
