//! The HTTP + WebSocket API (off unless `--http PORT` or `[Settings] httpPort`):
//! served on 127.0.0.1 only, on the phone's own tokio runtime, with axum. Every
//! endpoint is a thin mapping onto `EngineHandle::execute(Command)` — the same
//! commands, through the same grammar, as the control socket — and `GET /events`
//! is the socket's event stream over a WebSocket.
//!
//! - [`auth`]: the bearer token, login codes and session cookies;
//! - [`cors`]: CORS for the origins listed in `httpAllowOrigins`;
//! - [`problem`]: errors as `application/problem+json`;
//! - [`routes`]: the endpoints, the web phone page (`web/`, embedded) and the route table the OpenAPI document is checked
//!   against (`docs/openapi.json`, served at `GET /openapi.json`).
//!
//! Success bodies are the socket's JSON reply (`{"ok": true, "text": ..., "data":
//! ...}`), for every endpoint.

pub mod auth;
pub(crate) mod cors;
pub(crate) mod problem;
pub(crate) mod routes;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use microsip_engine::EngineHandle;
use tracing::{error, info, warn};

use auth::{Auth, Via};
use cors::AllowedOrigins;
use problem::Problem;

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;
/// The kernel send buffer of each connection (the kernel doubles it).
const SEND_BUFFER: u32 = 64 * 1024;
/// The header a cookie-authenticated page sends with changes (CSRF proof).
pub const PAGE_HEADER: &str = "x-microsip";

/// Starts the API when `port` is not 0 (`--http PORT`, else `[Settings] httpPort`).
/// A failure (the port is taken, the token file is unusable) is reported in the log
/// and on stderr, and the phone runs on without HTTP.
pub async fn start_if_enabled(
    port: u16,
    engine: EngineHandle,
    ini: &Path,
    allow_origins: &[String],
) -> Option<HttpServer> {
    if port == 0 {
        return None;
    }
    match HttpServer::start(port, engine, ini, allow_origins).await {
        Ok(server) => Some(server),
        Err(e) => {
            error!("{e}");
            eprintln!("microsip: {e}");
            None
        }
    }
}

/// What every handler shares.
pub struct ApiState {
    /// The engine every endpoint runs its command on.
    pub engine: EngineHandle,
    /// The token, login codes and sessions requests are checked against.
    pub auth: Auth,
    /// The web origins allowed to call the API from a browser (`httpAllowOrigins`).
    pub origins: AllowedOrigins,
    /// The API's own origins (`http://127.0.0.1:PORT`, `http://localhost:PORT`).
    pub own_origins: Vec<String>,
}

/// A running API: the address it listens on, and the way to mint login codes.
pub struct HttpServer {
    /// Where it listens (always 127.0.0.1).
    pub address: SocketAddr,
    state: Arc<ApiState>,
}

impl HttpServer {
    /// Binds 127.0.0.1:`port` and serves the API with `engine` (on the current tokio
    /// runtime). The token is read from beside `ini` (made when missing). Errors are
    /// one sentence for the log and stderr.
    pub async fn start(
        port: u16,
        engine: EngineHandle,
        ini: &Path,
        allow_origins: &[String],
    ) -> Result<HttpServer, String> {
        let token =
            auth::load_or_create_token(ini).map_err(|e| format!("HTTP API not started: {e}"))?;
        let (origins, bad) = AllowedOrigins::new(allow_origins);
        for entry in bad {
            warn!("httpAllowOrigins: '{entry}' is not an origin (https://host[:port]); ignored");
        }
        let listener = listen(port)
            .map_err(|e| format!("HTTP API not started: cannot listen on 127.0.0.1:{port}: {e}"))?;
        let address = listener
            .local_addr()
            .map_err(|e| format!("HTTP API not started: {e}"))?;
        let state = Arc::new(ApiState {
            engine,
            auth: Auth::new(token),
            origins,
            own_origins: vec![
                format!("http://127.0.0.1:{}", address.port()),
                format!("http://localhost:{}", address.port()),
            ],
        });
        let app = router(state.clone());
        let listener = listener.tap_io(|tcp| {
            // Small replies and events go out at once.
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                warn!("HTTP API stopped: {e}");
            }
        });
        info!("HTTP API on http://{address}");
        Ok(HttpServer { address, state })
    }

    /// A one-time login code for the web page (valid 60 s): `POST /login` with
    /// `{"code": CODE}` turns it into a session cookie.
    pub fn mint_login_code(&self) -> Result<String, String> {
        self.state.auth.mint_login_code()
    }

    /// The web page's address with a fresh login code in its fragment
    /// (`http://127.0.0.1:PORT/#login=CODE`): the page posts it to `/login`. The
    /// fragment never reaches a server or its logs.
    pub fn login_url(&self) -> Result<String, String> {
        let code = self.mint_login_code()?;
        Ok(format!("http://{}/#login={code}", self.address))
    }
}

/// The whole application: routes, then authentication, then CORS outermost (so
/// refusals carry CORS headers for an allowed origin too).
pub fn router(state: Arc<ApiState>) -> axum::Router {
    routes::routes()
        .router
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn_with_state(state.clone(), cors_layer))
        .with_state(state)
}

/// Listens on 127.0.0.1:`port` (never another address). Accepted connections inherit
/// a send buffer of [`SEND_BUFFER`]: what a client that stops reading can hold queued
/// in the kernel is bounded, so the write timeout drops it soon.
fn listen(port: u16) -> std::io::Result<tokio::net::TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.set_send_buffer_size(SEND_BUFFER)?;
    socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
    socket.listen(128)
}

/// The paths anyone may reach: the OpenAPI document, the web page's files and the
/// login.
fn is_public(method: &Method, path: &str) -> bool {
    (method == Method::GET && matches!(path, "/openapi.json" | "/" | "/app.js" | "/style.css"))
        || (method == Method::POST && path == "/login")
}

async fn authenticate(
    State(state): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Response {
    if is_public(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    match state.auth.check(request.headers()) {
        Ok(Via::Token) => next.run(request).await,
        Ok(Via::Cookie) => {
            if auth::needs_csrf_proof(request.method(), request.headers())
                && !comes_from_page(&state.origins, &state.own_origins, request.headers())
            {
                return Problem::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "a change made with the session cookie needs the header X-Microsip: 1 \
                     or an allowed Origin",
                )
                .into_response();
            }
            next.run(request).await
        }
        Err(problem) => problem.into_response(),
    }
}

/// Whether a cookie-authenticated request shows it comes from the page (or an
/// allowed origin), which another site's page cannot fake.
fn comes_from_page(origins: &AllowedOrigins, own_origins: &[String], headers: &HeaderMap) -> bool {
    if headers
        .get(PAGE_HEADER)
        .is_some_and(|v| v.as_bytes() == b"1")
    {
        return true;
    }
    headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|origin| {
            cors::normalize(origin).is_some_and(|o| own_origins.contains(&o))
                || origins.allows(origin)
        })
}

async fn cors_layer(State(state): State<Arc<ApiState>>, request: Request, next: Next) -> Response {
    let origin: Option<HeaderValue> = state.origins.allowed_origin(request.headers()).cloned();
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let mut response = StatusCode::NO_CONTENT.into_response();
        if let Some(origin) = &origin {
            cors::add_headers(response.headers_mut(), origin, true);
        }
        return response;
    }
    let mut response = next.run(request).await;
    if let Some(origin) = &origin {
        cors::add_headers(response.headers_mut(), origin, false);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_changes_need_the_page_header_or_an_allowed_origin() {
        let (origins, _) = AllowedOrigins::new(&["https://crm.example".into()]);
        let own = vec!["http://127.0.0.1:8080".to_string()];
        let check = |pairs: &[(&'static str, &'static str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.insert(*name, HeaderValue::from_static(value));
            }
            comes_from_page(&origins, &own, &headers)
        };
        assert!(!check(&[]));
        assert!(check(&[("x-microsip", "1")]));
        assert!(!check(&[("x-microsip", "0")]));
        assert!(check(&[("origin", "http://127.0.0.1:8080")]));
        assert!(check(&[("origin", "https://crm.example")]));
        assert!(!check(&[("origin", "http://127.0.0.1:8081")]));
        assert!(!check(&[("origin", "https://evil.example")]));
        assert!(!check(&[("origin", "null")]));
    }

    #[test]
    fn only_the_document_and_the_login_are_public() {
        assert!(is_public(&Method::GET, "/openapi.json"));
        assert!(is_public(&Method::POST, "/login"));
        assert!(is_public(&Method::GET, "/"));
        assert!(is_public(&Method::GET, "/app.js"));
        assert!(!is_public(&Method::POST, "/openapi.json"));
        assert!(!is_public(&Method::GET, "/status"));
        assert!(!is_public(&Method::GET, "/events"));
    }
}
