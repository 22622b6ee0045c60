//! Identity's business rules as plain types and functions, tested without a server.

pub mod access;
pub mod secrets;
pub mod teams;
