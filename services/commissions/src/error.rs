//! Commissions' error type: the platform's [`ServiceError`](tandem_platform::error::ServiceError),
//! mapped to `tonic::Status` in one place, `platform::error`.

pub use tandem_platform::error::ServiceError as CommissionsError;

pub type Result<T, E = CommissionsError> = std::result::Result<T, E>;
