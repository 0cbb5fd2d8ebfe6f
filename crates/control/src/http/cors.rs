//! CORS, only for the origins the user lists in `[Settings] httpAllowOrigins`: a
//! request from a listed origin gets `Access-Control-Allow-Origin` (its own origin,
//! never `*`), a preflight from one is answered with the methods and headers the API
//! takes; a request from any other origin gets no CORS header at all, so the browser
//! keeps the answer from that page.
//!
//! Origins are compared as browsers send them: scheme, host and port, case-insensitive
//! in scheme and host, the default port (80 for http, 443 for https) left out, no path.

use axum::http::{header, HeaderMap, HeaderValue};

/// The methods a preflight allows.
pub const ALLOW_METHODS: &str = "GET, POST, PUT, DELETE, OPTIONS";
/// The request headers a preflight allows.
pub const ALLOW_HEADERS: &str = "Authorization, Content-Type, X-Microsip";
/// How long a browser may keep a preflight's answer, in seconds.
const MAX_AGE: &str = "600";

/// The listed origins, normalized.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedOrigins {
    origins: Vec<String>,
}

/// An origin as compared: lowercase scheme and host, no default port, no trailing
/// `/`. `None` for what is not an `http(s)://host[:port]` origin (`null`, a path).
pub fn normalize(origin: &str) -> Option<String> {
    let origin = origin.trim().trim_end_matches('/');
    let (scheme, rest) = origin.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if (scheme != "http" && scheme != "https")
        || rest.is_empty()
        || rest.contains(['/', '?', '#', '@'])
    {
        return None;
    }
    let rest = rest.to_ascii_lowercase();
    let rest = match (scheme.as_str(), rest.rsplit_once(':')) {
        ("http", Some((host, "80"))) | ("https", Some((host, "443"))) if !host.ends_with(':') => {
            host.to_string()
        }
        _ => rest,
    };
    Some(format!("{scheme}://{rest}"))
}

impl AllowedOrigins {
    /// From the ini's list (each entry one origin). Entries that are not origins are
    /// returned as the second value, to be reported.
    pub fn new(list: &[String]) -> (AllowedOrigins, Vec<String>) {
        let mut origins = Vec::new();
        let mut bad = Vec::new();
        for entry in list {
            match normalize(entry) {
                Some(o) => origins.push(o),
                None => bad.push(entry.clone()),
            }
        }
        (AllowedOrigins { origins }, bad)
    }

    /// Whether `origin` (as a browser sent it) is listed.
    pub fn allows(&self, origin: &str) -> bool {
        normalize(origin).is_some_and(|o| self.origins.contains(&o))
    }

    /// The request's `Origin` when it is listed.
    pub fn allowed_origin<'a>(&self, headers: &'a HeaderMap) -> Option<&'a HeaderValue> {
        let value = headers.get(header::ORIGIN)?;
        self.allows(value.to_str().ok()?).then_some(value)
    }
}

/// Adds the CORS headers for an allowed origin to a response's headers.
pub fn add_headers(headers: &mut HeaderMap, origin: &HeaderValue, preflight: bool) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    if preflight {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(MAX_AGE),
        );
    } else {
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Location"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_as_browsers_send_them() {
        let (allowed, bad) = AllowedOrigins::new(&[
            "https://crm.example".into(),
            "http://127.0.0.1:8080/".into(),
            "HTTPS://Shop.Example:443".into(),
            "crm.example".into(),
            "null".into(),
        ]);
        assert_eq!(bad, ["crm.example", "null"]);
        assert!(allowed.allows("https://crm.example"));
        assert!(allowed.allows("https://CRM.example:443"));
        assert!(allowed.allows("http://127.0.0.1:8080"));
        assert!(allowed.allows("https://shop.example"));
        assert!(!allowed.allows("http://crm.example"));
        assert!(!allowed.allows("https://crm.example:8443"));
        assert!(!allowed.allows("https://evil.crm.example"));
        assert!(!allowed.allows("https://crm.example.evil"));
        assert!(!allowed.allows("http://127.0.0.1:8081"));
        assert!(!allowed.allows("null"));
        assert!(!allowed.allows(""));
        assert!(!AllowedOrigins::default().allows("https://crm.example"));
    }

    #[test]
    fn only_a_listed_origin_gets_headers() {
        let (allowed, _) = AllowedOrigins::new(&["https://crm.example".into()]);
        let mut request = HeaderMap::new();
        request.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(allowed.allowed_origin(&request).is_none());
        request.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://crm.example"),
        );
        let origin = allowed.allowed_origin(&request).unwrap().clone();
        let mut response = HeaderMap::new();
        add_headers(&mut response, &origin, true);
        assert_eq!(
            response[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://crm.example"
        );
        assert!(response.contains_key(header::ACCESS_CONTROL_ALLOW_HEADERS));
    }
}
