//! Authentication: access tokens are EdDSA-signed JWTs issued by identity. Every service
//! verifies them with identity's public keys (its JWKS), pinned to EdDSA, with issuer, audience
//! and expiry checked. The verified caller goes into the request's extensions, as an
//! `Arc<Caller>`.
//!
//! A token names a user, or a service (a *service principal*: `sub` = `svc:<service>` and the
//! `svc` claim naming the service). Only identity signs, so only identity can be a service
//! principal; it gives itself short-lived tokens to ask other services what only services may
//! ask (commissions' `CheckTeamRewards`). A service principal is a member of no team and no
//! staff: [`caller`] refuses it, so a service token is good only for the few RPCs that take it
//! explicitly through [`caller_or_service`].

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use tandem_proto::identity::v1::{Jwk, StaffRole};
use tokio::sync::RwLock;

use crate::error::ApiError;

pub const ISSUER: &str = "tandem-identity";
pub const AUDIENCE: &str = "tandem";
/// The `sub` of a service principal's token starts with this; user ids never do.
pub const SERVICE_SUBJECT_PREFIX: &str = "svc:";

/// The `sub` of a token issued to `service`.
pub fn service_subject(service: &str) -> String {
    format!("{SERVICE_SUBJECT_PREFIX}{service}")
}

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
    /// The service's name (`identity`) when the token was issued to a service, not a user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub svc: Option<String>,
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
    /// The service when the caller is a service principal (then `user_id` is `svc:<service>`
    /// and `staff_role` is `None`).
    pub service: Option<String>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("user_id", &self.user_id)
            .field("staff_role", &self.staff_role)
            .field("issued_at", &self.issued_at)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Caller {
    /// The caller verified claims name. A token whose claims do not hold together is refused:
    /// a service principal's `sub` must be `svc:<its svc claim>` and it holds no staff role; a
    /// user's `sub` never starts with `svc:`.
    pub fn from_claims(claims: &Claims) -> Result<Self, AuthError> {
        let service = match &claims.svc {
            Some(service) => {
                let well_formed = !service.is_empty() && service.bytes().all(|b| b.is_ascii_lowercase());
                if !well_formed || claims.sub != service_subject(service) || claims.staff.is_some() {
                    return Err(AuthError::Invalid("malformed service principal".into()));
                }
                Some(service.clone())
            }
            None if claims.sub.starts_with(SERVICE_SUBJECT_PREFIX) => {
                return Err(AuthError::Invalid("a user token cannot name a service".into()));
            }
            None => None,
        };
        Ok(Self {
            user_id: claims.sub.clone(),
            staff_role: claims
                .staff
                .as_deref()
                .and_then(StaffRole::from_str_name)
                .filter(|r| *r != StaffRole::Unspecified),
            issued_at: claims.iat,
            token: None,
            service,
        })
    }

    pub fn is_staff(&self) -> bool {
        self.staff_role.is_some()
    }

    /// Whether the caller is a service, not a user.
    pub fn is_service_principal(&self) -> bool {
        self.service.is_some()
    }

    /// Whether the caller is the service `name`.
    pub fn is_service(&self, name: &str) -> bool {
        self.service.as_deref() == Some(name)
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

/// Turns a bearer token into a caller, which carries the token (`Caller::token`).
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    async fn authenticate(&self, token: &str) -> Result<Arc<Caller>, AuthError>;
}

/// Public keys by `kid`, as published in a JWKS. Rotation adds a key before signing with it,
/// so tokens signed with the previous key keep verifying until they expire.
#[derive(Default)]
pub struct KeySet {
    keys: RwLock<Keys>,
    /// Counts the changes of the keys: a verifier drops the tokens it verified under older keys.
    generation: AtomicU64,
}

#[derive(Default)]
struct Keys {
    published: Vec<Jwk>,
    by_kid: HashMap<String, DecodingKey>,
}

impl KeySet {
    pub fn from_jwks(jwks: &[Jwk]) -> Result<Self, AuthError> {
        let keys = Keys { published: jwks.to_vec(), by_kid: decode_jwks(jwks)? };
        Ok(Self { keys: RwLock::new(keys), generation: AtomicU64::new(0) })
    }

    /// Replaces the keys with the ones of a freshly fetched JWKS.
    pub async fn replace(&self, jwks: &[Jwk]) -> Result<(), AuthError> {
        let mut keys = self.keys.write().await;
        if keys.published == jwks {
            return Ok(());
        }
        *keys = Keys { published: jwks.to_vec(), by_kid: decode_jwks(jwks)? };
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    pub async fn get(&self, kid: &str) -> Option<DecodingKey> {
        self.keys.read().await.by_kid.get(kid).cloned()
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
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
///
/// A caller sends the same token with every call until it expires, and checking its Ed25519
/// signature is most of what authenticating a call costs. So the verifier remembers the tokens
/// it verified, by their exact text, with the caller they name: the same text again is the
/// same signed token, and skips straight to the expiry check, and every call with it shares
/// one [`Caller`]. The memory is bounded ([`VERIFIED_TOKENS`]) and forgotten whenever the key
/// set changes, so a key withdrawn from the JWKS stops vouching for its tokens at once.
pub struct JwtVerifier {
    keys: Arc<KeySet>,
    validation: Validation,
    verified: Mutex<Verified>,
}

/// At most this many verified tokens are remembered; past it, the expired ones are dropped
/// and, when that is not enough, all of them.
pub const VERIFIED_TOKENS: usize = 10_000;

#[derive(Default)]
struct Verified {
    generation: u64,
    /// By the token's text, which is also the caller's `token`.
    tokens: HashMap<Arc<str>, Remembered>,
}

/// A verified token's expiry (`exp`, seconds since the epoch) and the caller it names.
struct Remembered {
    expires: i64,
    caller: Arc<Caller>,
}

impl JwtVerifier {
    pub fn new(keys: Arc<KeySet>) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = 5;
        let verified = Mutex::new(Verified { generation: keys.generation(), tokens: HashMap::new() });
        Self { keys, validation, verified }
    }

    /// The caller a valid token names, carrying the token itself.
    pub async fn verify(&self, token: &str) -> Result<Arc<Caller>, AuthError> {
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(caller) = self.remembered(token, now) {
            return Ok(caller);
        }
        let generation = self.keys.generation();
        let header = jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        if header.alg != Algorithm::EdDSA {
            return Err(AuthError::Invalid("unsupported signing algorithm".into()));
        }
        let kid = header.kid.ok_or_else(|| AuthError::Invalid("token has no key id".into()))?;
        let key =
            self.keys.get(&kid).await.ok_or_else(|| AuthError::Invalid("unknown signing key".into()))?;
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &self.validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?
            .claims;
        let caller = Arc::new(Caller { token: Some(token.into()), ..Caller::from_claims(&claims)? });
        self.remember(&caller, claims.exp, generation, now);
        Ok(caller)
    }

    /// The caller of a token verified before under the current keys, unless it has expired
    /// since (with the same leeway as a full check).
    fn remembered(&self, token: &str, now: u64) -> Option<Arc<Caller>> {
        let generation = self.keys.generation();
        let verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if verified.generation != generation {
            return None;
        }
        let remembered = verified.tokens.get(token)?;
        self.unexpired(remembered.expires, now).then(|| remembered.caller.clone())
    }

    fn unexpired(&self, expires: i64, now: u64) -> bool {
        u64::try_from(expires).is_ok_and(|exp| exp.saturating_add(self.validation.leeway) >= now)
    }

    /// Remembers a caller whose token (`caller.token`) was verified under the keys of
    /// `generation`.
    fn remember(&self, caller: &Arc<Caller>, expires: i64, generation: u64, now: u64) {
        let Some(token) = caller.token.clone() else { return };
        let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if verified.generation != generation {
            // The keys changed: what was verified before is forgotten. A token verified under
            // keys that changed while it was checked is not remembered.
            if generation < self.keys.generation() {
                return;
            }
            *verified = Verified { generation, tokens: HashMap::new() };
        }
        if verified.tokens.len() >= VERIFIED_TOKENS {
            verified.tokens.retain(|_, r| self.unexpired(r.expires, now));
            if verified.tokens.len() >= VERIFIED_TOKENS {
                verified.tokens.clear();
            }
        }
        verified.tokens.insert(token, Remembered { expires, caller: caller.clone() });
    }
}

#[async_trait]
impl Authenticator for JwtVerifier {
    async fn authenticate(&self, token: &str) -> Result<Arc<Caller>, AuthError> {
        self.verify(token).await
    }
}

/// The verified user calling, or UNAUTHENTICATED; a service principal is refused with
/// PERMISSION_DENIED (it acts only through the RPCs that take [`caller_or_service`]).
pub fn caller<T>(request: &tonic::Request<T>) -> Result<&Arc<Caller>, ApiError> {
    let caller = caller_or_service(request)?;
    if caller.is_service_principal() {
        return Err(ApiError::PermissionDenied("a service token is not accepted here".into()));
    }
    Ok(caller)
}

/// The verified caller, a user or a service principal, or UNAUTHENTICATED. Only for the RPCs
/// that serve services; they check which service it is.
pub fn caller_or_service<T>(request: &tonic::Request<T>) -> Result<&Arc<Caller>, ApiError> {
    request
        .extensions()
        .get::<Arc<Caller>>()
        .ok_or_else(|| ApiError::Unauthenticated("a bearer access token is required".into()))
}

/// The user calling when the request carries a user's token; `None` for anonymous requests
/// (and for a service principal, which is no user).
pub fn optional_caller<T>(request: &tonic::Request<T>) -> Option<&Arc<Caller>> {
    request.extensions().get::<Arc<Caller>>().filter(|c| !c.is_service_principal())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str, staff: Option<&str>, svc: Option<&str>) -> Claims {
        Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: sub.into(),
            iat: 1,
            exp: 2,
            jti: "tok_1".into(),
            staff: staff.map(str::to_owned),
            svc: svc.map(str::to_owned),
        }
    }

    fn verifier() -> JwtVerifier {
        JwtVerifier::new(Arc::new(KeySet::default()))
    }

    /// The caller of the token `token`, as a verifier remembers it.
    fn holding(token: &str) -> Arc<Caller> {
        let caller = Caller::from_claims(&claims("user_1", None, None)).unwrap();
        Arc::new(Caller { token: Some(token.into()), ..caller })
    }

    #[test]
    fn a_remembered_token_expires_with_its_claims() {
        let verifier = verifier();
        let caller = holding("tok");
        verifier.remember(&caller, 1_000, 0, 900);
        assert!(verifier.remembered("tok", 1_000).is_some_and(|c| Arc::ptr_eq(&c, &caller)));
        // The same five seconds of leeway as a full check, then no more.
        assert!(verifier.remembered("tok", 1_005).is_some());
        assert!(verifier.remembered("tok", 1_006).is_none());
        assert!(verifier.remembered("other", 900).is_none());
    }

    #[test]
    fn remembered_tokens_are_bounded() {
        let verifier = verifier();
        for i in 0..VERIFIED_TOKENS {
            verifier.remember(&holding(&format!("tok{i}")), if i % 2 == 0 { 10 } else { 1_000 }, 0, 5);
        }
        // Full: the expired half goes first.
        verifier.remember(&holding("one more"), 1_000, 0, 500);
        let remembered = verifier.verified.lock().unwrap().tokens.len();
        assert_eq!(remembered, VERIFIED_TOKENS / 2 + 1);
        assert!(verifier.remembered("tok1", 500).is_some() && verifier.remembered("one more", 500).is_some());
        // Full of live tokens: all are forgotten rather than growing.
        for i in 0..VERIFIED_TOKENS {
            verifier.remember(&holding(&format!("live{i}")), 1_000, 0, 500);
        }
        assert!(verifier.verified.lock().unwrap().tokens.len() <= VERIFIED_TOKENS);
    }

    #[tokio::test]
    async fn tokens_verified_under_older_keys_are_not_remembered() {
        let keys = Arc::new(KeySet::default());
        let verifier = JwtVerifier::new(keys.clone());
        keys.replace(&[]).await.unwrap();
        assert_eq!(keys.generation(), 0, "the same (empty) key set is no change");
        keys.generation.fetch_add(1, Ordering::AcqRel);
        // Verified before the change: not remembered, and nothing remembered before it counts.
        verifier.remember(&holding("tok"), 1_000, 0, 5);
        assert!(verifier.remembered("tok", 5).is_none());
        verifier.remember(&holding("tok"), 1_000, 1, 5);
        assert!(verifier.remembered("tok", 5).is_some());
    }

    #[test]
    fn a_service_principal_is_neither_user_nor_staff() {
        let c = Caller::from_claims(&claims("svc:identity", None, Some("identity"))).unwrap();
        assert!(c.is_service_principal() && c.is_service("identity"));
        assert!(!c.is_service("commissions"));
        assert!(!c.is_staff());
        assert_eq!(c.user_id, "svc:identity");
    }

    #[test]
    fn users_are_not_services() {
        let c = Caller::from_claims(&claims("user_1", Some("STAFF_ROLE_ADMIN"), None)).unwrap();
        assert!(!c.is_service_principal() && !c.is_service("identity"));
        assert!(c.is_staff());
    }

    #[test]
    fn incoherent_principals_are_refused() {
        for (sub, staff, svc) in [
            // A service claim with another subject.
            ("user_1", None, Some("identity")),
            ("svc:commissions", None, Some("identity")),
            // A service holding a staff role.
            ("svc:identity", Some("STAFF_ROLE_ADMIN"), Some("identity")),
            // A service subject without the claim.
            ("svc:identity", None, None),
            // Malformed service names.
            ("svc:", None, Some("")),
            ("svc:Identity", None, Some("Identity")),
        ] {
            assert!(
                matches!(Caller::from_claims(&claims(sub, staff, svc)), Err(AuthError::Invalid(_))),
                "{sub} {staff:?} {svc:?}"
            );
        }
    }

    #[test]
    fn only_service_rpcs_see_a_service_principal() {
        let service = Caller::from_claims(&claims("svc:identity", None, Some("identity"))).unwrap();
        let mut request = tonic::Request::new(());
        request.extensions_mut().insert(Arc::new(service));
        assert!(matches!(caller(&request), Err(ApiError::PermissionDenied(_))));
        assert!(optional_caller(&request).is_none());
        assert!(caller_or_service(&request).unwrap().is_service("identity"));

        let user = Caller::from_claims(&claims("user_1", None, None)).unwrap();
        let mut request = tonic::Request::new(());
        request.extensions_mut().insert(Arc::new(user));
        assert_eq!(caller(&request).unwrap().user_id, "user_1");
        assert!(optional_caller(&request).is_some());

        let anonymous = tonic::Request::new(());
        assert!(matches!(caller(&anonymous), Err(ApiError::Unauthenticated(_))));
        assert!(matches!(caller_or_service(&anonymous), Err(ApiError::Unauthenticated(_))));
    }
}
