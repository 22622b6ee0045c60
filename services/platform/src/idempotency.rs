//! `request_id` idempotency records. A use case claims `(scope, request_id)` inside its
//! transaction before it changes anything and records its answer before it commits:
//! a retry with the same request gets the first answer back and changes nothing; the same id
//! with a different request is refused. Concurrent retries queue on the record's primary key
//! (PostgreSQL) or the write lock (SQLite), so exactly one of them does the work.

use base64::{Engine, engine::general_purpose::STANDARD};
use prost::Message;
use sha2::{Digest, Sha256};

use crate::{
    db::{DbError, Tx},
    time::now_micros,
};

/// What a claim found.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim<R> {
    /// First time: do the work, then [`record`] the answer in the same transaction.
    New,
    /// A retry of the same request: answer this, change nothing.
    Replay(R),
    /// The id was used before with a different request.
    Mismatch,
}

/// A stable digest of a request (its protobuf encoding).
pub fn fingerprint<M: Message>(request: &M) -> String {
    let digest = Sha256::digest(request.encode_to_vec());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

pub async fn claim<R: Message + Default>(
    tx: &mut Tx,
    scope: &str,
    request_id: &str,
    fingerprint: &str,
) -> Result<Claim<R>, DbError> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_records (scope, request_id, fingerprint, response, create_time) \
         VALUES ($1, $2, $3, NULL, $4) ON CONFLICT (scope, request_id) DO NOTHING",
    )
    .bind(scope)
    .bind(request_id)
    .bind(fingerprint)
    .bind(now_micros())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Claim::New);
    }
    let (stored, response): (String, Option<String>) = sqlx::query_as(
        "SELECT fingerprint, response FROM idempotency_records WHERE scope = $1 AND request_id = $2",
    )
    .bind(scope)
    .bind(request_id)
    .fetch_one(&mut **tx)
    .await?;
    if stored != fingerprint {
        return Ok(Claim::Mismatch);
    }
    let response = response.ok_or_else(|| DbError::Other("idempotency record without a response".into()))?;
    let bytes = STANDARD.decode(response).map_err(|e| DbError::Other(e.to_string()))?;
    let decoded = R::decode(bytes.as_slice()).map_err(|e| DbError::Other(e.to_string()))?;
    Ok(Claim::Replay(decoded))
}

/// Stores the answer of a claimed request; call before committing.
pub async fn record<R: Message>(
    tx: &mut Tx,
    scope: &str,
    request_id: &str,
    response: &R,
) -> Result<(), DbError> {
    sqlx::query("UPDATE idempotency_records SET response = $1 WHERE scope = $2 AND request_id = $3")
        .bind(STANDARD.encode(response.encode_to_vec()))
        .bind(scope)
        .bind(request_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
