//! Tiers' error type, mapped to `tonic::Status` once, here.

use tandem_platform::{ApiError, FieldViolation, db::DbError};
use tandem_proto::common::v1::ErrorReason;

#[derive(Debug, thiserror::Error)]
pub enum TiersError {
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
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl TiersError {
    pub fn invalid(field: &str, description: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldViolation::new(field, description)])
    }

    pub fn rule(reason: ErrorReason, message: impl Into<String>) -> Self {
        Self::Rule(reason, message.into())
    }
}

impl From<ApiError> for TiersError {
    fn from(err: ApiError) -> Self {
        match err {
            ApiError::InvalidArgument(v) => Self::Invalid(v),
            ApiError::Unavailable(m) => Self::Unavailable(m),
            other => Self::Internal(anyhow::anyhow!("{other}")),
        }
    }
}

impl From<sqlx::Error> for TiersError {
    fn from(err: sqlx::Error) -> Self {
        Self::Db(err.into())
    }
}

impl From<TiersError> for tonic::Status {
    fn from(err: TiersError) -> Self {
        let api = match err {
            TiersError::Invalid(v) => ApiError::InvalidArgument(v),
            TiersError::Unauthenticated(m) => ApiError::Unauthenticated(m.into()),
            TiersError::Denied(m) => ApiError::PermissionDenied(m.into()),
            TiersError::NotFound(what) => ApiError::NotFound(what.into()),
            TiersError::Duplicate(reason, message) => ApiError::AlreadyExists { reason, message },
            TiersError::Rule(reason, message) => ApiError::FailedPrecondition { reason, message },
            TiersError::Db(DbError::Unavailable(m)) | TiersError::Unavailable(m) => ApiError::Unavailable(m),
            TiersError::Db(e) => ApiError::Internal(e.to_string()),
            TiersError::Internal(e) => ApiError::Internal(format!("{e:#}")),
        };
        api.into()
    }
}

pub type Result<T, E = TiersError> = std::result::Result<T, E>;
