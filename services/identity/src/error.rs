//! Identity's error type, mapped to `tonic::Status` once, here.

use tandem_platform::{ApiError, FieldViolation, auth::AuthError, db::DbError};
use tandem_proto::common::v1::ErrorReason;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
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
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl IdentityError {
    pub fn rule(reason: ErrorReason, message: impl Into<String>) -> Self {
        Self::Rule(reason, message.into())
    }
}

impl From<ApiError> for IdentityError {
    fn from(err: ApiError) -> Self {
        match err {
            ApiError::InvalidArgument(v) => Self::Invalid(v),
            other => Self::Internal(anyhow::anyhow!("{other}")),
        }
    }
}

impl From<sqlx::Error> for IdentityError {
    fn from(err: sqlx::Error) -> Self {
        Self::Db(err.into())
    }
}

impl From<IdentityError> for tonic::Status {
    fn from(err: IdentityError) -> Self {
        let api = match err {
            IdentityError::Invalid(v) => ApiError::InvalidArgument(v),
            IdentityError::Unauthenticated(m) => ApiError::Unauthenticated(m.into()),
            IdentityError::InvalidCredentials => {
                return tandem_platform::error::status(
                    tonic::Code::Unauthenticated,
                    ErrorReason::InvalidCredentials,
                    "wrong email or password",
                    &[],
                );
            }
            IdentityError::Denied(m) => ApiError::PermissionDenied(m.into()),
            IdentityError::NotFound(what) => ApiError::NotFound(what.into()),
            IdentityError::Duplicate(reason, message) => ApiError::AlreadyExists { reason, message },
            IdentityError::Rule(reason, message) => ApiError::FailedPrecondition { reason, message },
            IdentityError::Db(DbError::Unavailable(m)) | IdentityError::Unavailable(m) => {
                ApiError::Unavailable(m)
            }
            IdentityError::Db(e) => ApiError::Internal(e.to_string()),
            IdentityError::Auth(e) => e.into(),
            IdentityError::Internal(e) => ApiError::Internal(format!("{e:#}")),
        };
        api.into()
    }
}

pub type Result<T, E = IdentityError> = std::result::Result<T, E>;
