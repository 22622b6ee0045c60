//! The one mapping from errors to `tonic::Status`: every refusal carries a
//! `google.rpc.ErrorInfo` with a reason from `tandem.common.v1.ErrorReason`, and invalid input a
//! `google.rpc.BadRequest` with its field violations. Internal causes are logged, never sent.

use tandem_proto::common::v1::ErrorReason;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `domain` of every `ErrorInfo` Tandem sends.
pub const ERROR_DOMAIN: &str = "tandem.dev";

/// One invalid field: its path in the request (`team.name`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self { field: field.into(), description: description.into() }
    }
}

/// What an API answers when it refuses a request; each service's own error type converts into
/// it, and it converts into a `Status` in exactly one place ([`From<ApiError> for Status`]).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid argument")]
    InvalidArgument(Vec<FieldViolation>),
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("already exists: {message}")]
    AlreadyExists { reason: ErrorReason, message: String },
    #[error("failed precondition: {message}")]
    FailedPrecondition { reason: ErrorReason, message: String },
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// The request is larger than the server accepts: not worth retrying as it is.
    #[error("message too large: {0}")]
    MessageTooLarge(String),
    /// The caller spent its rate; it may try again after the delay (sent as `RetryInfo`).
    #[error("rate limited; retry after {0:?}")]
    RateLimited(std::time::Duration),
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The cause is logged with the request's trace; the caller sees a generic message.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    pub fn precondition(reason: ErrorReason, message: impl Into<String>) -> Self {
        Self::FailedPrecondition { reason, message: message.into() }
    }

    pub fn already_exists(reason: ErrorReason, message: impl Into<String>) -> Self {
        Self::AlreadyExists { reason, message: message.into() }
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self::Internal(cause.to_string())
    }
}

/// A status with an `ErrorInfo` (and field violations when there are any).
pub fn status(code: Code, reason: ErrorReason, message: &str, violations: &[FieldViolation]) -> Status {
    let mut details = ErrorDetails::with_error_info(
        reason.as_str_name().trim_start_matches("ERROR_REASON_"),
        ERROR_DOMAIN,
        std::collections::HashMap::<String, String>::new(),
    );
    if !violations.is_empty() {
        details.set_bad_request(
            violations
                .iter()
                .map(|v| tonic_types::FieldViolation::new(v.field.clone(), v.description.clone()))
                .collect::<Vec<_>>(),
        );
    }
    Status::with_error_details(code, message, details)
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        match err {
            ApiError::InvalidArgument(violations) => {
                let message = violations
                    .iter()
                    .map(|v| format!("{}: {}", v.field, v.description))
                    .collect::<Vec<_>>()
                    .join("; ");
                status(Code::InvalidArgument, ErrorReason::InvalidArgument, &message, &violations)
            }
            ApiError::Unauthenticated(m) => {
                status(Code::Unauthenticated, ErrorReason::Unauthenticated, &m, &[])
            }
            ApiError::PermissionDenied(m) => {
                status(Code::PermissionDenied, ErrorReason::PermissionDenied, &m, &[])
            }
            ApiError::NotFound(m) => {
                status(Code::NotFound, ErrorReason::NotFound, &format!("{m} not found"), &[])
            }
            ApiError::AlreadyExists { reason, message } => status(Code::AlreadyExists, reason, &message, &[]),
            ApiError::FailedPrecondition { reason, message } => {
                status(Code::FailedPrecondition, reason, &message, &[])
            }
            ApiError::ResourceExhausted(m) => {
                status(Code::ResourceExhausted, ErrorReason::Overloaded, &m, &[])
            }
            ApiError::MessageTooLarge(m) => {
                status(Code::ResourceExhausted, ErrorReason::InvalidArgument, &m, &[])
            }
            ApiError::RateLimited(retry_after) => {
                let mut details = ErrorDetails::with_error_info(
                    ErrorReason::Overloaded.as_str_name().trim_start_matches("ERROR_REASON_"),
                    ERROR_DOMAIN,
                    std::collections::HashMap::<String, String>::new(),
                );
                details.set_retry_info(Some(retry_after));
                Status::with_error_details(
                    Code::ResourceExhausted,
                    "too many requests from this caller; retry after the RetryInfo delay",
                    details,
                )
            }
            ApiError::Unavailable(m) => {
                tracing::warn!(error = %m, "dependency unavailable");
                status(
                    Code::Unavailable,
                    ErrorReason::Unavailable,
                    "a dependency is unavailable; retry later",
                    &[],
                )
            }
            ApiError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                status(Code::Internal, ErrorReason::Internal, "internal error", &[])
            }
        }
    }
}

impl From<crate::db::DbError> for ApiError {
    fn from(err: crate::db::DbError) -> Self {
        match err {
            crate::db::DbError::Unavailable(m) => ApiError::Unavailable(m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// The error type of every service's use cases and handlers: the refusals the API makes,
/// plus storage, authentication and internal failures. Each service names it after itself
/// (`pub use tandem_platform::error::ServiceError as TiersError;`) and handlers turn it into a
/// `Status` with `?`, through the one mapping below.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("invalid argument")]
    Invalid(Vec<FieldViolation>),
    #[error("unauthenticated: {0}")]
    Unauthenticated(&'static str),
    #[error("wrong email or password")]
    InvalidCredentials,
    #[error("permission denied: {0}")]
    Denied(&'static str),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{1}")]
    Duplicate(ErrorReason, String),
    #[error("{1}")]
    Rule(ErrorReason, String),
    /// Another writer changed the object between a read and a write: the client retries.
    #[error("{0} changed concurrently")]
    Conflict(&'static str),
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// A refusal that already has its API form (from platform helpers and peers).
    #[error(transparent)]
    Api(ApiError),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ServiceError {
    pub fn invalid(field: &str, description: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldViolation::new(field, description)])
    }

    pub fn rule(reason: ErrorReason, message: impl Into<String>) -> Self {
        Self::Rule(reason, message.into())
    }
}

impl From<ApiError> for ServiceError {
    fn from(err: ApiError) -> Self {
        match err {
            ApiError::InvalidArgument(v) => Self::Invalid(v),
            ApiError::Unavailable(m) => Self::Unavailable(m),
            other => Self::Api(other),
        }
    }
}

impl From<sqlx::Error> for ServiceError {
    fn from(err: sqlx::Error) -> Self {
        Self::Db(err.into())
    }
}

impl From<ServiceError> for Status {
    fn from(err: ServiceError) -> Self {
        let api = match err {
            ServiceError::Invalid(v) => ApiError::InvalidArgument(v),
            ServiceError::Unauthenticated(m) => ApiError::Unauthenticated(m.into()),
            ServiceError::InvalidCredentials => {
                return status(
                    Code::Unauthenticated,
                    ErrorReason::InvalidCredentials,
                    "wrong email or password",
                    &[],
                );
            }
            ServiceError::Denied(m) => ApiError::PermissionDenied(m.into()),
            ServiceError::NotFound(what) => ApiError::NotFound(what.into()),
            ServiceError::Duplicate(reason, message) => ApiError::AlreadyExists { reason, message },
            ServiceError::Rule(reason, message) => ApiError::FailedPrecondition { reason, message },
            ServiceError::Conflict(what) => {
                return Status::aborted(format!("{what} changed concurrently; retry"));
            }
            ServiceError::Db(crate::db::DbError::Unavailable(m)) | ServiceError::Unavailable(m) => {
                ApiError::Unavailable(m)
            }
            ServiceError::Db(e) => ApiError::Internal(e.to_string()),
            ServiceError::Auth(e) => e.into(),
            ServiceError::Api(e) => e,
            ServiceError::Internal(e) => ApiError::Internal(format!("{e:#}")),
        };
        api.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_carries_field_violations_and_reason() {
        let status: Status = ApiError::InvalidArgument(vec![
            FieldViolation::new("email", "must be an email address"),
            FieldViolation::new("name", "must not be empty"),
        ])
        .into();
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let fields: Vec<_> = details
            .bad_request()
            .expect("bad request details")
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(fields, ["email", "name"]);
        let info = details.error_info().expect("error info");
        assert_eq!(info.reason, "INVALID_ARGUMENT");
        assert_eq!(info.domain, ERROR_DOMAIN);
    }

    #[test]
    fn internal_causes_are_not_sent() {
        let status: Status = ApiError::internal("password column missing").into();
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("password"));
    }

    #[test]
    fn preconditions_name_their_rule() {
        let status: Status =
            ApiError::precondition(ErrorReason::TeamHasMembers, "remove the other members first").into();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.get_error_details().error_info().unwrap().reason, "TEAM_HAS_MEMBERS");
    }
}
