//! Who may use the HTTP API: the bearer token (made on first use, 32 random bytes as
//! hex, kept mode 0600 in `microsip.http-token` beside the ini, compared in constant
//! time), and browser sessions for the web page: a one-time login code (valid
//! [`LOGIN_CODE_LIFETIME`], used once) is exchanged at `POST /login` for an HttpOnly,
//! SameSite=Strict cookie. A request authenticated by the cookie alone that changes
//! something (POST, PUT, DELETE, or a WebSocket upgrade) must also say it comes from
//! the page (`X-Microsip: 1`, or an `Origin` that is the API's own or an allowed
//! one), so another site cannot make the browser act (CSRF).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, Method};

use super::problem::Problem;

/// The token file's name, in the ini's folder.
pub const TOKEN_FILE: &str = "microsip.http-token";
/// The session cookie's name.
pub const SESSION_COOKIE: &str = "microsip_session";
/// How long a one-time login code is valid.
pub const LOGIN_CODE_LIFETIME: Duration = Duration::from_secs(60);
/// How long a browser session lasts.
const SESSION_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// At most this many login codes and sessions are kept (the oldest go first).
const MAX_KEPT: usize = 32;
/// A token file larger than this is not ours.
const MAX_TOKEN_FILE: u64 = 4096;
/// Random bytes in a token, a code or a session id.
const SECRET_BYTES: usize = 32;

/// Where the token of the phone using `ini` is kept.
pub fn token_path(ini: &Path) -> PathBuf {
    let dir = match ini.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    dir.join(TOKEN_FILE)
}

/// `SECRET_BYTES` random bytes as lowercase hex.
fn random_hex() -> Result<String, String> {
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| format!("no random numbers: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Reads the token beside `ini`, making it (mode 0600, written atomically) when there
/// is none. A file that is there but holds no usable token is an error naming it;
/// it is left as it is.
pub fn load_or_create_token(ini: &Path) -> Result<String, String> {
    let path = token_path(ini);
    let read = |path: &Path| -> Result<Option<String>, String> {
        let Some(bytes) =
            microsip_config::read_file_limited(path, MAX_TOKEN_FILE).map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&bytes).trim().to_string();
        if text.len() < 32 || !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "{} holds no usable token (32 or more printable characters); remove it and a \
                 new one is made",
                path.display()
            ));
        }
        Ok(Some(text))
    };
    if let Some(token) = read(&path)? {
        return Ok(token);
    }
    let token = random_hex()?;
    microsip_config::write_atomic(&path, format!("{token}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    // Another process may have made one at the same moment: the file decides.
    Ok(read(&path)?.unwrap_or(token))
}

/// Compares two secrets in time that depends only on their lengths.
pub fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    if given.len() != expected.len() {
        return false;
    }
    given
        .iter()
        .zip(expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// What authenticated a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `Authorization: Bearer TOKEN`.
    Token,
    /// The `microsip_session` cookie of a browser that logged in with a one-time code.
    Cookie,
}

/// The token, the live login codes and sessions.
pub struct Auth {
    token: String,
    kept: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    /// (code, valid until)
    codes: Vec<(String, Instant)>,
    /// (session id, valid until)
    sessions: Vec<(String, Instant)>,
}

fn keep(list: &mut Vec<(String, Instant)>, secret: String, until: Instant) {
    let now = Instant::now();
    list.retain(|(_, t)| *t > now);
    if list.len() >= MAX_KEPT {
        list.remove(0);
    }
    list.push((secret, until));
}

/// Takes `given` out of `list` when it is there and still valid.
fn take(list: &mut Vec<(String, Instant)>, given: &str, once: bool) -> bool {
    let now = Instant::now();
    list.retain(|(_, t)| *t > now);
    match list
        .iter()
        .position(|(s, _)| same_secret(given.as_bytes(), s.as_bytes()))
    {
        Some(i) => {
            if once {
                list.remove(i);
            }
            true
        }
        None => false,
    }
}

impl Auth {
    /// Checks requests against `token`; no login codes or sessions yet.
    pub fn new(token: String) -> Auth {
        Auth {
            token,
            kept: Mutex::new(Kept::default()),
        }
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A one-time login code, valid for [`LOGIN_CODE_LIFETIME`] (for `microsip open`).
    pub fn mint_login_code(&self) -> Result<String, String> {
        let code = random_hex()?;
        keep(
            &mut self.kept().codes,
            code.clone(),
            Instant::now() + LOGIN_CODE_LIFETIME,
        );
        Ok(code)
    }

    /// Exchanges a login code (once) for a new session id.
    pub fn login(&self, code: &str) -> Result<String, Problem> {
        let mut kept = self.kept();
        if !take(&mut kept.codes, code, true) {
            return Err(Problem::unauthorized(
                "the login code is wrong, used or expired",
            ));
        }
        let session = random_hex().map_err(|e| {
            Problem::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "internal", e)
        })?;
        keep(
            &mut kept.sessions,
            session.clone(),
            Instant::now() + SESSION_LIFETIME,
        );
        Ok(session)
    }

    /// Checks a request's credentials: the bearer token, or else the session cookie.
    pub fn check(&self, headers: &HeaderMap) -> Result<Via, Problem> {
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            let given = value.as_bytes();
            let token = given
                .strip_prefix(b"Bearer ")
                .or_else(|| given.strip_prefix(b"bearer "));
            return match token {
                Some(t) if same_secret(t.trim_ascii(), self.token.as_bytes()) => Ok(Via::Token),
                _ => Err(Problem::unauthorized("wrong bearer token")),
            };
        }
        if let Some(session) = session_cookie(headers) {
            if take(&mut self.kept().sessions, session, false) {
                return Ok(Via::Cookie);
            }
            return Err(Problem::unauthorized(
                "the session has expired; open the page again with `microsip open`",
            ));
        }
        Err(Problem::unauthorized(
            "this needs `Authorization: Bearer TOKEN` (`microsip http-token` prints it)",
        ))
    }
}

/// The session cookie's value, if the request carries one.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == SESSION_COOKIE).then_some(value)
        })
}

/// The `Set-Cookie` value for a new session.
pub fn session_cookie_header(session: &str) -> String {
    format!(
        "{SESSION_COOKIE}={session}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_LIFETIME.as_secs()
    )
}

/// Whether a request authenticated by its cookie must prove it comes from the page:
/// everything but GET, HEAD and OPTIONS, and WebSocket upgrades.
pub fn needs_csrf_proof(method: &Method, headers: &HeaderMap) -> bool {
    let upgrade = headers
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    upgrade || !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abcdef", b"abcdef"));
        assert!(!same_secret(b"abcdef", b"abcdeg"));
        assert!(!same_secret(b"abcde", b"abcdef"));
        assert!(!same_secret(b"", b"a"));
        assert!(same_secret(b"", b""));
    }

    fn with(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn bearer_token_and_session_cookie() {
        let token = "t".repeat(64);
        let auth = Auth::new(token.clone());
        assert_eq!(
            auth.check(&with(header::AUTHORIZATION, &format!("Bearer {token}"))),
            Ok(Via::Token)
        );
        let wrong = auth
            .check(&with(header::AUTHORIZATION, "Bearer nope"))
            .unwrap_err();
        assert_eq!(wrong.status, axum::http::StatusCode::UNAUTHORIZED);
        assert!(auth.check(&HeaderMap::new()).is_err());
        assert!(auth
            .check(&with(header::AUTHORIZATION, &format!("Basic {token}")))
            .is_err());

        // A code works once, and gives a session the cookie carries.
        let code = auth.mint_login_code().unwrap();
        assert!(auth.login("wrong").is_err());
        let session = auth.login(&code).unwrap();
        assert!(auth.login(&code).is_err());
        let cookie = format!("other=1; {SESSION_COOKIE}={session}");
        assert_eq!(auth.check(&with(header::COOKIE, &cookie)), Ok(Via::Cookie));
        assert!(auth
            .check(&with(header::COOKIE, &format!("{SESSION_COOKIE}=x")))
            .is_err());
        let set = session_cookie_header(&session);
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"));
    }

    #[test]
    fn token_file_is_made_once_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ms-token-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ini = dir.join("microsip.ini");
        let first = load_or_create_token(&ini).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(load_or_create_token(&ini).unwrap(), first);
        let mode = std::fs::metadata(token_path(&ini))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(token_path(&ini), "short").unwrap();
        assert!(load_or_create_token(&ini)
            .unwrap_err()
            .contains("no usable token"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn csrf_proof_for_changes_and_upgrades() {
        assert!(!needs_csrf_proof(&Method::GET, &HeaderMap::new()));
        assert!(needs_csrf_proof(&Method::POST, &HeaderMap::new()));
        assert!(needs_csrf_proof(&Method::DELETE, &HeaderMap::new()));
        assert!(needs_csrf_proof(
            &Method::GET,
            &with(header::UPGRADE, "websocket")
        ));
    }
}
