//! Secrets: passwords hashed with argon2id, random tokens (refresh, invitation, email
//! verification) of which only a SHA-256 digest is stored, and the EdDSA signing key.

use argon2::{
    Argon2,
    password_hash::{PasswordHasher, PasswordVerifier},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::{
    SigningKey, VerifyingKey,
    pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey},
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::RngCore;
use sha2::{Digest, Sha256};
use tandem_platform::auth::{AUDIENCE, Claims, ISSUER, service_subject};
use tandem_proto::identity::v1::Jwk;

/// A new random token: 32 bytes, base64url.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The stored form of a token: its SHA-256, hex. A leaked table cannot be replayed.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// An argon2id PHC string with a random salt. Slow by design: call it off the async runtime.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("{e}"))
}

pub fn verify_password(password: &str, phc: &str) -> bool {
    Argon2::default().verify_password(password.as_bytes(), phc).is_ok()
}

/// The key that signs access tokens, with its published half.
#[derive(Clone)]
pub struct SigningKeyPair {
    kid: String,
    encoding: EncodingKey,
    jwk: Jwk,
}

impl SigningKeyPair {
    /// A fresh key, kept in memory only (tokens die with the process).
    pub fn generate() -> Self {
        Self::from_signing_key(&SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// A new Ed25519 private key as PKCS#8 PEM, to keep in a file.
    pub fn generate_pem() -> anyhow::Result<String> {
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        Ok(key.to_pkcs8_pem(Default::default()).map_err(|e| anyhow::anyhow!("{e}"))?.to_string())
    }

    /// A PKCS#8 PEM Ed25519 private key (`openssl genpkey -algorithm ed25519`).
    pub fn from_pem(pem: &str) -> anyhow::Result<Self> {
        let key = SigningKey::from_pkcs8_pem(pem)
            .map_err(|e| anyhow::anyhow!("not an Ed25519 PKCS#8 PEM key: {e}"))?;
        Ok(Self::from_signing_key(&key))
    }

    fn from_signing_key(key: &SigningKey) -> Self {
        let jwk = jwk_of(&key.verifying_key());
        let der = key.to_pkcs8_der().expect("an Ed25519 key always encodes to PKCS#8");
        Self { encoding: EncodingKey::from_ed_der(der.as_bytes()), kid: jwk.kid.clone(), jwk }
    }

    pub fn jwk(&self) -> &Jwk {
        &self.jwk
    }

    /// Signs an access token for `user_id`, valid `ttl_secs` from `now_secs`.
    pub fn sign(
        &self,
        user_id: &str,
        staff_role: Option<&str>,
        now_secs: i64,
        ttl_secs: i64,
    ) -> anyhow::Result<String> {
        self.encode(&Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: user_id.into(),
            iat: now_secs,
            exp: now_secs + ttl_secs,
            jti: tandem_platform::ids::new_id("tok"),
            staff: staff_role.map(str::to_owned),
            svc: None,
        })
    }

    /// Signs a token for the service principal `service` (`sub` = `svc:<service>`), valid
    /// `ttl_secs` from `now_secs`. Only identity holds the key, so only identity has one.
    pub fn sign_service(&self, service: &str, now_secs: i64, ttl_secs: i64) -> anyhow::Result<String> {
        self.encode(&Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: service_subject(service),
            iat: now_secs,
            exp: now_secs + ttl_secs,
            jti: tandem_platform::ids::new_id("tok"),
            staff: None,
            svc: Some(service.to_owned()),
        })
    }

    fn encode(&self, claims: &Claims) -> anyhow::Result<String> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &self.encoding)?)
    }
}

/// The published form of an Ed25519 public key; its `kid` is derived from the key, so the
/// same key has the same id on every replica and after every restart.
fn jwk_of(key: &VerifyingKey) -> Jwk {
    let public = key.to_bytes();
    Jwk {
        kty: "OKP".into(),
        crv: "Ed25519".into(),
        x: URL_SAFE_NO_PAD.encode(public),
        kid: URL_SAFE_NO_PAD.encode(&Sha256::digest(public)[..12]),
        alg: "EdDSA".into(),
        r#use: "sig".into(),
    }
}

/// The published half of a key that signed before a rotation and now only verifies: from its
/// PKCS#8 private PEM (the old key file as it was) or its SPKI public PEM
/// (`openssl pkey -pubout`). Only the public half is kept.
pub fn previous_key_from_pem(pem: &str) -> anyhow::Result<Jwk> {
    if let Ok(key) = SigningKey::from_pkcs8_pem(pem) {
        return Ok(jwk_of(&key.verifying_key()));
    }
    let key = VerifyingKey::from_public_key_pem(pem)
        .map_err(|e| anyhow::anyhow!("not an Ed25519 PKCS#8 private or SPKI public PEM key: {e}"))?;
    Ok(jwk_of(&key))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tandem_platform::auth::{JwtVerifier, KeySet};

    use super::*;

    #[test]
    fn tokens_are_random_and_stored_hashed() {
        let a = new_token();
        assert_ne!(a, new_token());
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_ne!(hash_token(&a), a);
        assert_eq!(hash_token(&a).len(), 64);
    }

    #[test]
    fn passwords_are_argon2id_and_verify() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("wrong horse", &phc));
        assert!(!verify_password("x", "not a hash"));
    }

    #[tokio::test]
    async fn signed_tokens_verify_with_the_published_key_only() {
        let key = SigningKeyPair::generate();
        let verifier = JwtVerifier::new(Arc::new(KeySet::from_jwks(&[key.jwk().clone()]).unwrap()));
        let now = tandem_platform::time::now_micros() / 1_000_000;
        let token = key.sign("user_1", Some("STAFF_ROLE_ADMIN"), now, 60).unwrap();
        let caller = verifier.verify(&token).await.unwrap();
        assert_eq!(caller.user_id, "user_1");
        assert_eq!(caller.staff_role, Some(tandem_proto::identity::v1::StaffRole::Admin));
        assert_eq!(caller.token.as_deref(), Some(token.as_str()));
        let again = verifier.verify(&token).await.unwrap();
        assert!(Arc::ptr_eq(&again, &caller), "the same token again shares the caller it named");

        let other = SigningKeyPair::generate();
        let foreign = other.sign("user_1", None, now, 60).unwrap();
        assert!(verifier.verify(&foreign).await.is_err(), "a token of another key");
        let expired = key.sign("user_1", None, now - 3600, 60).unwrap();
        assert!(verifier.verify(&expired).await.is_err(), "an expired token");
    }

    #[tokio::test]
    async fn service_tokens_name_a_service_principal() {
        use tandem_platform::auth::Authenticator;
        let key = SigningKeyPair::generate();
        let verifier = JwtVerifier::new(Arc::new(KeySet::from_jwks(&[key.jwk().clone()]).unwrap()));
        let now = tandem_platform::time::now_micros() / 1_000_000;
        let token = key.sign_service("identity", now, 60).unwrap();
        let caller = verifier.authenticate(&token).await.unwrap();
        assert!(caller.is_service("identity"));
        assert!(!caller.is_staff());
        assert_eq!(caller.user_id, "svc:identity");
        // A user token never is one.
        let user = verifier.authenticate(&key.sign("user_1", None, now, 60).unwrap()).await.unwrap();
        assert!(!user.is_service_principal());
    }

    #[test]
    fn pem_keys_load() {
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let pem = key.to_pkcs8_pem(Default::default()).unwrap();
        let pair = SigningKeyPair::from_pem(&pem).unwrap();
        assert_eq!(pair.jwk().x, URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes()));
        assert!(SigningKeyPair::from_pem("garbage").is_err());
    }

    #[test]
    fn previous_keys_load_from_private_or_public_pem_with_the_same_kid() {
        use ed25519_dalek::pkcs8::EncodePublicKey;
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let private = key.to_pkcs8_pem(Default::default()).unwrap();
        let public = key.verifying_key().to_public_key_pem(Default::default()).unwrap();
        let current = SigningKeyPair::from_pem(&private).unwrap();
        assert_eq!(&previous_key_from_pem(&private).unwrap(), current.jwk());
        assert_eq!(&previous_key_from_pem(&public).unwrap(), current.jwk());
        assert!(previous_key_from_pem("garbage").is_err());
    }

    #[tokio::test]
    async fn tokens_of_a_previous_key_verify_beside_the_current_one() {
        let old = SigningKeyPair::generate();
        let new = SigningKeyPair::generate();
        assert_ne!(old.jwk().kid, new.jwk().kid);
        let now = tandem_platform::time::now_micros() / 1_000_000;
        let both =
            JwtVerifier::new(Arc::new(KeySet::from_jwks(&[new.jwk().clone(), old.jwk().clone()]).unwrap()));
        for key in [&old, &new] {
            let token = key.sign("user_1", None, now, 60).unwrap();
            assert_eq!(both.verify(&token).await.unwrap().user_id, "user_1");
        }
        let only_new = JwtVerifier::new(Arc::new(KeySet::from_jwks(&[new.jwk().clone()]).unwrap()));
        let old_token = old.sign("user_1", None, now, 60).unwrap();
        assert!(only_new.verify(&old_token).await.is_err(), "a key dropped from the set");
    }

    #[tokio::test]
    async fn a_remembered_token_is_refused_once_its_key_is_withdrawn() {
        let old = SigningKeyPair::generate();
        let new = SigningKeyPair::generate();
        let keys = Arc::new(KeySet::from_jwks(&[new.jwk().clone(), old.jwk().clone()]).unwrap());
        let verifier = JwtVerifier::new(keys.clone());
        let now = tandem_platform::time::now_micros() / 1_000_000;
        let old_token = old.sign("user_1", None, now, 60).unwrap();
        let new_token = new.sign("user_2", None, now, 60).unwrap();
        for _ in 0..2 {
            assert_eq!(verifier.verify(&old_token).await.unwrap().user_id, "user_1");
            assert_eq!(verifier.verify(&new_token).await.unwrap().user_id, "user_2");
        }
        // The same JWKS again changes nothing; one without the old key refuses its tokens,
        // remembered or not.
        keys.replace(&[new.jwk().clone(), old.jwk().clone()]).await.unwrap();
        assert_eq!(verifier.verify(&old_token).await.unwrap().user_id, "user_1");
        keys.replace(&[new.jwk().clone()]).await.unwrap();
        assert!(verifier.verify(&old_token).await.is_err(), "a withdrawn key");
        assert_eq!(verifier.verify(&new_token).await.unwrap().user_id, "user_2");
    }

    #[tokio::test]
    async fn a_remembered_token_vouches_for_its_exact_text_only() {
        let key = SigningKeyPair::generate();
        let verifier = JwtVerifier::new(Arc::new(KeySet::from_jwks(&[key.jwk().clone()]).unwrap()));
        let now = tandem_platform::time::now_micros() / 1_000_000;
        let token = key.sign("user_1", None, now, 60).unwrap();
        assert_eq!(verifier.verify(&token).await.unwrap().user_id, "user_1");
        // Its signature under other claims (a staff role granted to oneself) is no token.
        let (_, rest) = token.split_once('.').unwrap();
        let (payload, signature) = rest.split_once('.').unwrap();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        claims["staff"] = "STAFF_ROLE_ADMIN".into();
        let header = token.split('.').next().unwrap();
        let forged = format!("{header}.{}.{signature}", URL_SAFE_NO_PAD.encode(claims.to_string()));
        assert!(verifier.verify(&forged).await.is_err(), "edited claims");
        assert_eq!(verifier.verify(&token).await.unwrap().staff_role, None);
    }
}
