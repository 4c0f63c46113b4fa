//! The doors' one error type: every refusal of the API (and of the handlers the loop answers
//! for it) is JSON of one shape, `{"error": {"code", "message", "field"}}`, with a stable
//! `code` for programs, a sentence for people, and the field at fault when there is one.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The body of an error answer.
pub fn body(code: &str, message: &str, field: Option<&str>) -> Value {
    let mut error = json!({"code": code, "message": message});
    if let Some(field) = field {
        error["field"] = json!(field);
    }
    json!({ "error": error })
}

/// Why the API refused a request before it reached the work loop.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON (or not the JSON shape asked for).
    #[error("the body is not valid JSON: {0}")]
    Json(String),
    /// Something other than JSON was sent.
    #[error("send the body as JSON, with Content-Type: application/json")]
    MediaType,
    /// A header is malformed (`Idempotency-Key` too long).
    #[error("{message}")]
    Header {
        field: &'static str,
        message: String,
    },
    /// A field is missing or holds a value that cannot be used.
    #[error("{message}")]
    Invalid { field: String, message: String },
    #[error("no API key, or not a valid one: send `Authorization: Bearer <key>`")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("too many requests with this key; try again in {} s", .0.as_secs().max(1))]
    RateLimited(Duration),
    /// The work loop did not answer (the daemon stops, or is overloaded).
    #[error("the daemon could not take this now: {0}")]
    Unavailable(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::Json(_) | ApiError::Header { .. } => StatusCode::BAD_REQUEST,
            ApiError::MediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::Json(_) => "invalid_json",
            ApiError::MediaType => "unsupported_media_type",
            ApiError::Header { .. } => "invalid_header",
            ApiError::Invalid { .. } => "invalid_field",
            ApiError::Unauthorized => "unauthorized",
            ApiError::NotFound(_) => "not_found",
            ApiError::TooLarge(_) => "body_too_large",
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::Unavailable(_) => "unavailable",
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            ApiError::Header { field, .. } => Some(field),
            ApiError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (
            status,
            Json(body(self.code(), &self.to_string(), self.field())),
        )
            .into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::RateLimited(wait) => {
                // Whole seconds, rounded up: a client that waits this long gets through.
                let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
            }
            ApiError::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            ApiError::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_have_one_shape_with_a_code_a_sentence_and_the_field() {
        let error = ApiError::Invalid {
            field: "email".into(),
            message: "bad email address: no @".into(),
        };
        assert_eq!(error.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            body(error.code(), &error.to_string(), error.field()),
            json!({"error": {"code": "invalid_field", "message": "bad email address: no @", "field": "email"}})
        );
        let limited = ApiError::RateLimited(Duration::from_millis(1200)).into_response();
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(limited.headers()[header::RETRY_AFTER], "2");
    }
}
