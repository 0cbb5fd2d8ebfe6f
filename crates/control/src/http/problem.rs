//! Errors as `application/problem+json` (RFC 9457): `type`, `title`, `status`,
//! `detail`, and `code`, the engine's stable error code (or one of the HTTP layer's
//! own: `unauthorized`, `forbidden`, `not_found`, `method_not_allowed`,
//! `unsupported_media_type`, `too_large`, `upgrade_required`), which clients match on.
//!
//! Statuses: refusals caused by the request are 4xx; 5xx only for the phone's own
//! trouble (`internal`, `config_write`, `stopping`).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use microsip_engine::reply::Failure;
use microsip_engine::{ErrorCode, ParseError};

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            code,
            detail: detail.into(),
        }
    }

    /// A bad request (`bad_argument`).
    pub fn bad(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "bad_argument", detail)
    }

    /// No valid token or session.
    pub fn unauthorized(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    /// The engine refused the command.
    pub fn from_failure(failure: &Failure) -> Problem {
        Problem::new(
            status_of(failure.code),
            failure.code.as_str(),
            failure.message.clone(),
        )
    }

    /// The grammar refused the words a request became.
    pub fn from_parse(error: &ParseError) -> Problem {
        let code = ErrorCode::from_parse_code(error.code);
        Problem::new(status_of(code), code.as_str(), error.message.clone())
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "type": format!("urn:microsip:problem:{}", self.code),
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
            "code": self.code,
        })
    }
}

/// The HTTP status of an engine error code.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::UnknownCommand | ErrorCode::BadArgument | ErrorCode::NotAvailableYet => {
            StatusCode::BAD_REQUEST
        }
        ErrorCode::NoSuchAccount | ErrorCode::NoSuchCall | ErrorCode::NoSuchDevice => {
            StatusCode::NOT_FOUND
        }
        ErrorCode::AccountInactive
        | ErrorCode::RegistrationFailed
        | ErrorCode::NoCall
        | ErrorCode::NoAccount
        | ErrorCode::Busy
        | ErrorCode::WrongState
        | ErrorCode::NoCommonCodec
        | ErrorCode::Refused => StatusCode::CONFLICT,
        ErrorCode::DialPlan | ErrorCode::Media => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::ConfigWrite | ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Stopping => StatusCode::SERVICE_UNAVAILABLE,
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = self.body().to_string();
        let mut response = (self.status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_codes_map_to_client_statuses() {
        assert_eq!(status_of(ErrorCode::BadArgument), StatusCode::BAD_REQUEST);
        assert_eq!(
            status_of(ErrorCode::UnknownCommand),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(status_of(ErrorCode::NoSuchCall), StatusCode::NOT_FOUND);
        assert_eq!(status_of(ErrorCode::NoSuchAccount), StatusCode::NOT_FOUND);
        assert_eq!(status_of(ErrorCode::NoSuchDevice), StatusCode::NOT_FOUND);
        assert_eq!(status_of(ErrorCode::WrongState), StatusCode::CONFLICT);
        assert_eq!(status_of(ErrorCode::NoCall), StatusCode::CONFLICT);
        assert_eq!(status_of(ErrorCode::Busy), StatusCode::CONFLICT);
        assert_eq!(
            status_of(ErrorCode::Stopping),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn problem_body_has_rfc9457_members_and_the_code() {
        let failure = Failure {
            code: ErrorCode::NoSuchCall,
            message: "there is no call 9".into(),
        };
        let problem = Problem::from_failure(&failure);
        let body = problem.body();
        assert_eq!(body["status"], 404);
        assert_eq!(body["code"], "no_such_call");
        assert_eq!(body["title"], "Not Found");
        assert_eq!(body["detail"], "there is no call 9");
        assert_eq!(body["type"], "urn:microsip:problem:no_such_call");
        let response = Problem::unauthorized("no token").into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers().get(header::WWW_AUTHENTICATE),
            Some(&HeaderValue::from_static("Bearer"))
        );
        assert_eq!(
            response.headers().get(header::CONTENT_TYPE),
            Some(&HeaderValue::from_static(PROBLEM_JSON))
        );
    }
}
