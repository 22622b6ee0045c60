//! What every Tandem service stands on: configuration, telemetry, the server bootstrap
//! (health, reflection, tower layers, graceful shutdown), authentication, the error mapping,
//! storage (connect, migrate, idempotency records, the outbox) and the event bus.

mod accept;
pub mod admin;
pub mod allocator;
pub mod auth;
pub mod bus;
pub mod config;
pub mod db;
pub mod error;
pub mod idempotency;
pub mod ids;
pub mod layers;
pub mod metrics;
pub mod outbox;
pub mod paging;
pub mod peers;
pub mod redis_bus;
pub mod server;
pub mod telemetry;
pub mod testing;
pub mod time;
pub mod validate;

pub use error::{ApiError, FieldViolation};
