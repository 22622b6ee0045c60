//! Authentication: access tokens are EdDSA-signed JWTs issued by identity. Every service
//! verifies them with identity's public keys (its JWKS), pinned to EdDSA, with issuer, audience
//! and expiry checked. The verified caller goes into the request's extensions.

use std::{collections::HashMap, sync::Arc};

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use tandem_proto::identity::v1::{Jwk, StaffRole};
use tokio::sync::RwLock;

use crate::error::ApiError;

pub const ISSUER: &str = "tandem-identity";
pub const AUDIENCE: &str = "tandem";

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The user id.
    pub sub: String,
    pub iat: i64,
    pub exp: i64,
    /// The token id.
    pub jti: String,
    /// The staff role's name (`STAFF_ROLE_ADMIN`, …) for vendor staff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staff: Option<String>,
}

/// Who is calling, as a verified token says.
#[derive(Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: String,
    pub staff_role: Option<StaffRole>,
    /// When the token was issued (seconds since the epoch).
    pub issued_at: i64,
    /// The bearer token the caller presented, forwarded when a service asks identity on the
    /// caller's behalf. Never logged.
    pub token: Option<Arc<str>>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("user_id", &self.user_id)
            .field("staff_role", &self.staff_role)
            .field("issued_at", &self.issued_at)
            .finish_non_exhaustive()
    }
}

impl Caller {
    pub fn from_claims(claims: &Claims) -> Self {
        Self {
            user_id: claims.sub.clone(),
            staff_role: claims
                .staff
                .as_deref()
                .and_then(StaffRole::from_str_name)
                .filter(|r| *r != StaffRole::Unspecified),
            issued_at: claims.iat,
            token: None,
        }
    }

    pub fn is_staff(&self) -> bool {
        self.staff_role.is_some()
    }

    pub fn has_staff_role(&self, roles: &[StaffRole]) -> bool {
        self.staff_role.is_some_and(|r| roles.contains(&r))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("user is deactivated")]
    Inactive,
    #[error("cannot verify tokens now: {0}")]
    Unavailable(String),
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Invalid(m) => ApiError::Unauthenticated(m),
            AuthError::Inactive => ApiError::Unauthenticated("user is deactivated".into()),
            AuthError::Unavailable(m) => ApiError::Unavailable(m),
        }
    }
}

/// Turns a bearer token into a caller.
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    async fn authenticate(&self, token: &str) -> Result<Caller, AuthError>;
}

/// Public keys by `kid`, as published in a JWKS. Rotation adds a key before signing with it,
/// so tokens signed with the previous key keep verifying until they expire.
#[derive(Default)]
pub struct KeySet {
    keys: RwLock<HashMap<String, DecodingKey>>,
}

impl KeySet {
    pub fn from_jwks(jwks: &[Jwk]) -> Result<Self, AuthError> {
        Ok(Self { keys: RwLock::new(decode_jwks(jwks)?) })
    }

    /// Replaces the keys with the ones of a freshly fetched JWKS.
    pub async fn replace(&self, jwks: &[Jwk]) -> Result<(), AuthError> {
        *self.keys.write().await = decode_jwks(jwks)?;
        Ok(())
    }

    pub async fn get(&self, kid: &str) -> Option<DecodingKey> {
        self.keys.read().await.get(kid).cloned()
    }
}

fn decode_jwks(jwks: &[Jwk]) -> Result<HashMap<String, DecodingKey>, AuthError> {
    jwks.iter()
        .filter(|k| k.kty == "OKP" && k.crv == "Ed25519")
        .map(|k| {
            DecodingKey::from_ed_components(&k.x)
                .map(|key| (k.kid.clone(), key))
                .map_err(|e| AuthError::Invalid(format!("bad key {}: {e}", k.kid)))
        })
        .collect()
}

/// Verifies signature (EdDSA only: `none`, HMAC and every other algorithm are refused),
/// issuer, audience and expiry.
pub struct JwtVerifier {
    keys: Arc<KeySet>,
    validation: Validation,
}

impl JwtVerifier {
    pub fn new(keys: Arc<KeySet>) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = 5;
        Self { keys, validation }
    }

    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        if header.alg != Algorithm::EdDSA {
            return Err(AuthError::Invalid("unsupported signing algorithm".into()));
        }
        let kid = header.kid.ok_or_else(|| AuthError::Invalid("token has no key id".into()))?;
        let key =
            self.keys.get(&kid).await.ok_or_else(|| AuthError::Invalid("unknown signing key".into()))?;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &self.validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        Ok(data.claims)
    }
}

#[async_trait]
impl Authenticator for JwtVerifier {
    async fn authenticate(&self, token: &str) -> Result<Caller, AuthError> {
        Ok(Caller::from_claims(&self.verify(token).await?))
    }
}

/// The verified caller of a request, or UNAUTHENTICATED.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<&Caller, ApiError> {
    request
        .extensions()
        .get::<Caller>()
        .ok_or_else(|| ApiError::Unauthenticated("a bearer access token is required".into()))
}

/// The caller when the request carries a token; `None` for anonymous requests.
pub fn optional_caller<T>(request: &tonic::Request<T>) -> Option<&Caller> {
    request.extensions().get::<Caller>()
}

/// Identity's answer to "may this caller do this on this team?", as every service asks it
/// before acting for a team: in-process in `tandem dev`, over gRPC (`AccessService`) in
/// production.
#[async_trait]
pub trait Permissions: Send + Sync + 'static {
    async fn check(
        &self,
        caller: &Caller,
        team_id: &str,
        permission: tandem_proto::identity::v1::Permission,
    ) -> Result<bool, ApiError>;
}
