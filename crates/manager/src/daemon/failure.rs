//! The daemon's error answers and its JSON helpers.

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::api::ApiError;
use crate::driver::DriverError;

/// A request that failed: the status and one line for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub status: StatusCode,
    pub message: String,
}

impl Failure {
    fn new(status: StatusCode, message: impl Into<String>) -> Failure {
        let message: String = message.into();
        // One line, whatever a driver or the OS said.
        let lines: Vec<&str> = message
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let last = lines.len().saturating_sub(1);
        let message = lines
            .iter()
            .enumerate()
            .map(|(i, l)| if i < last { l.trim_end_matches(':') } else { l })
            .collect::<Vec<_>>()
            .join(": ");
        Failure { status, message }
    }

    /// 400: the request itself is malformed.
    pub fn bad_request(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404: no such domain, device or route.
    pub fn not_found(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::NOT_FOUND, message)
    }

    /// 409: the domain's state forbids it.
    pub fn conflict(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::CONFLICT, message)
    }

    /// 422: well-formed but impossible.
    pub fn unprocessable(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    /// 403: a write on the read-only socket.
    pub fn forbidden() -> Failure {
        Failure::new(
            StatusCode::FORBIDDEN,
            "operation forbidden: read only access",
        )
    }

    /// 500: the daemon itself failed (its state directory, a task).
    pub fn internal(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// 502: the driver or the VMM failed.
    pub fn driver(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::BAD_GATEWAY, message)
    }

    /// The state directory could not be written.
    pub fn storage(e: std::io::Error) -> Failure {
        Failure::internal(format!("cannot write the state directory: {e}"))
    }
}

impl From<DriverError> for Failure {
    fn from(e: DriverError) -> Failure {
        match e {
            DriverError::Unsupported(m) => Failure::unprocessable(m),
            DriverError::Conflict(m) => Failure::conflict(m),
            DriverError::Failed(m) => Failure::driver(m),
        }
    }
}

impl From<tokio::task::JoinError> for Failure {
    fn from(e: tokio::task::JoinError) -> Failure {
        Failure::internal(format!("a daemon task failed: {e}"))
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        json(
            self.status,
            &ApiError {
                error: self.message,
            },
        )
    }
}

/// A JSON answer.
pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(bytes))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// 200 with a JSON body.
pub(crate) fn ok<T: Serialize>(value: &T) -> Response {
    json(StatusCode::OK, value)
}

/// 204.
pub(crate) fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// Parses a JSON request body; an empty body is `T::default()` where the
/// route allows one.
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice(bytes)
        .map_err(|e| Failure::bad_request(format!("malformed request body: {e}")))
}

/// As [`parse_body`], with an empty body meaning the defaults.
pub(crate) fn parse_optional_body<T: serde::de::DeserializeOwned + Default>(
    bytes: &[u8],
) -> Result<T, Failure> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_body(bytes)
}

/// The result type of every handler.
pub(crate) type Answer = Result<Response, Failure>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_is_one_line_with_its_status() {
        let f = Failure::driver("the VMM said:\n  first\n\n  second\n");
        assert_eq!(f.message, "the VMM said: first: second");
        assert_eq!(Failure::conflict("one").message, "one");
        assert_eq!(f.status, StatusCode::BAD_GATEWAY);
        let cases = [
            (DriverError::Unsupported("u".into()), 422),
            (DriverError::Conflict("c".into()), 409),
            (DriverError::Failed("f".into()), 502),
        ];
        for (e, status) in cases {
            assert_eq!(Failure::from(e).status.as_u16(), status);
        }
        assert_eq!(
            Failure::forbidden().message,
            "operation forbidden: read only access"
        );
    }

    #[test]
    fn bodies() {
        let empty: crate::api::StartRequest = parse_optional_body(b" \n").unwrap();
        assert!(!empty.paused);
        let e = parse_optional_body::<crate::api::StartRequest>(b"{\"x\":1}").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(parse_body::<crate::api::DefineRequest>(b"").is_err());
    }
}
