//! Commissions' error type, mapped to `tonic::Status` once, here.

use tandem_platform::{ApiError, FieldViolation, db::DbError};
use tandem_proto::common::v1::ErrorReason;

#[derive(Debug, thiserror::Error)]
pub enum CommissionsError {
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

impl CommissionsError {
    pub fn invalid(field: &str, description: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldViolation::new(field, description)])
    }

    pub fn rule(reason: ErrorReason, message: impl Into<String>) -> Self {
        Self::Rule(reason, message.into())
    }
}

impl From<ApiError> for CommissionsError {
    fn from(err: ApiError) -> Self {
        match err {
            ApiError::InvalidArgument(v) => Self::Invalid(v),
            ApiError::Unavailable(m) => Self::Unavailable(m),
            other => Self::Internal(anyhow::anyhow!("{other}")),
        }
    }
}

impl From<sqlx::Error> for CommissionsError {
    fn from(err: sqlx::Error) -> Self {
        Self::Db(err.into())
    }
}

impl From<CommissionsError> for tonic::Status {
    fn from(err: CommissionsError) -> Self {
        let api = match err {
            CommissionsError::Invalid(v) => ApiError::InvalidArgument(v),
            CommissionsError::Unauthenticated(m) => ApiError::Unauthenticated(m.into()),
            CommissionsError::Denied(m) => ApiError::PermissionDenied(m.into()),
            CommissionsError::NotFound(what) => ApiError::NotFound(what.into()),
            CommissionsError::Duplicate(reason, message) => ApiError::AlreadyExists { reason, message },
            CommissionsError::Rule(reason, message) => ApiError::FailedPrecondition { reason, message },
            CommissionsError::Db(DbError::Unavailable(m)) | CommissionsError::Unavailable(m) => {
                ApiError::Unavailable(m)
            }
            CommissionsError::Db(e) => ApiError::Internal(e.to_string()),
            CommissionsError::Internal(e) => ApiError::Internal(format!("{e:#}")),
        };
        api.into()
    }
}

pub type Result<T, E = CommissionsError> = std::result::Result<T, E>;
