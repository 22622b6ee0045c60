//! Deals' error type, mapped to `tonic::Status` once, here.

use tandem_platform::{ApiError, FieldViolation, db::DbError};
use tandem_proto::common::v1::ErrorReason;

#[derive(Debug, thiserror::Error)]
pub enum DealsError {
    #[error("invalid argument")]
    Invalid(Vec<FieldViolation>),
    #[error("unauthenticated: {0}")]
    Unauthenticated(&'static str),
    #[error("permission denied: {0}")]
    Denied(&'static str),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{1}")]
    Duplicate(ErrorReason, String),
    #[error("{1}")]
    Rule(ErrorReason, String),
    #[error("{0}")]
    Conflict(&'static str),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl DealsError {
    pub fn invalid(field: &str, description: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldViolation::new(field, description)])
    }

    pub fn rule(reason: ErrorReason, message: impl Into<String>) -> Self {
        Self::Rule(reason, message.into())
    }
}

impl From<ApiError> for DealsError {
    fn from(err: ApiError) -> Self {
        match err {
            ApiError::InvalidArgument(v) => Self::Invalid(v),
            ApiError::Unavailable(m) => Self::Unavailable(m),
            other => Self::Internal(anyhow::anyhow!("{other}")),
        }
    }
}

impl From<sqlx::Error> for DealsError {
    fn from(err: sqlx::Error) -> Self {
        Self::Db(err.into())
    }
}

impl From<DealsError> for tonic::Status {
    fn from(err: DealsError) -> Self {
        let api = match err {
            DealsError::Invalid(v) => ApiError::InvalidArgument(v),
            DealsError::Unauthenticated(m) => ApiError::Unauthenticated(m.into()),
            DealsError::Denied(m) => ApiError::PermissionDenied(m.into()),
            DealsError::NotFound(what) => ApiError::NotFound(what.into()),
            DealsError::Duplicate(reason, message) => ApiError::AlreadyExists { reason, message },
            DealsError::Rule(reason, message) => ApiError::FailedPrecondition { reason, message },
            // Another writer changed the object between our read and write: the client retries.
            DealsError::Conflict(m) => {
                return tonic::Status::aborted(format!("{m} changed concurrently; retry"));
            }
            DealsError::Db(DbError::Unavailable(m)) | DealsError::Unavailable(m) => ApiError::Unavailable(m),
            DealsError::Db(e) => ApiError::Internal(e.to_string()),
            DealsError::Internal(e) => ApiError::Internal(format!("{e:#}")),
        };
        api.into()
    }
}

pub type Result<T, E = DealsError> = std::result::Result<T, E>;
