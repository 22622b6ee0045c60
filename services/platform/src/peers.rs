//! Calling identity from another service: its public keys (JWKS) for verifying tokens, and
//! its permission check on the caller's behalf.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use tandem_proto::identity::v1::{
    CheckPermissionRequest, GetJwksRequest, Jwk, Permission, access_service_client::AccessServiceClient,
    auth_service_client::AuthServiceClient,
};
use tonic::transport::{Channel, Endpoint};

use crate::{
    ApiError,
    auth::{Caller, KeySet, Permissions},
    telemetry,
};

/// How often the published keys are fetched again (a rotated key appears within this time).
const JWKS_REFRESH: Duration = Duration::from_secs(300);

/// A connection to identity at `TANDEM_IDENTITY_URL`.
#[derive(Clone)]
pub struct Identity {
    channel: Channel,
}

impl Identity {
    /// Connects lazily: identity may start after this service.
    pub fn connect(url: &str) -> anyhow::Result<Self> {
        let channel = Endpoint::from_shared(url.to_owned())?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(5))
            .connect_lazy();
        Ok(Self { channel })
    }

    async fn jwks(&self) -> anyhow::Result<Vec<Jwk>> {
        let mut request = tonic::Request::new(GetJwksRequest {});
        telemetry::inject_into_metadata(request.metadata_mut());
        Ok(AuthServiceClient::new(self.channel.clone()).get_jwks(request).await?.into_inner().keys)
    }

    /// Identity's public keys, waiting until identity answers, then refreshed in the
    /// background so that rotated keys are picked up.
    pub async fn keys(&self) -> anyhow::Result<Arc<KeySet>> {
        let keys = loop {
            match self.jwks().await {
                Ok(jwks) => break Arc::new(KeySet::from_jwks(&jwks)?),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot fetch identity's public keys yet; retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        };
        tokio::spawn({
            let identity = self.clone();
            let keys = keys.clone();
            async move {
                loop {
                    tokio::time::sleep(JWKS_REFRESH).await;
                    match identity.jwks().await {
                        Ok(jwks) => {
                            if let Err(err) = keys.replace(&jwks).await {
                                tracing::warn!(error = %err, "identity published unusable keys; keeping the previous ones");
                            }
                        }
                        Err(err) => tracing::warn!(error = %err, "cannot refresh identity's public keys"),
                    }
                }
            }
        });
        Ok(keys)
    }
}

/// Identity's `AccessService/CheckPermission`, asked with the caller's own token (identity
/// answers a user about itself), with a deadline and the caller's trace context.
#[async_trait]
impl Permissions for Identity {
    async fn check(&self, caller: &Caller, team_id: &str, permission: Permission) -> Result<bool, ApiError> {
        let token = caller
            .token
            .as_deref()
            .ok_or_else(|| ApiError::Unauthenticated("no bearer token to forward".into()))?;
        let mut request = tonic::Request::new(CheckPermissionRequest {
            user_id: caller.user_id.clone(),
            team_id: team_id.to_owned(),
            permission: permission.into(),
        });
        request.set_timeout(Duration::from_secs(2));
        let bearer = format!("Bearer {token}")
            .parse()
            .map_err(|_| ApiError::Unauthenticated("the bearer token is not valid metadata".into()))?;
        request.metadata_mut().insert("authorization", bearer);
        telemetry::inject_into_metadata(request.metadata_mut());
        match AccessServiceClient::new(self.channel.clone()).check_permission(request).await {
            Ok(response) => Ok(response.into_inner().allowed),
            Err(status) if status.code() == tonic::Code::Unauthenticated => {
                Err(ApiError::Unauthenticated(status.message().to_owned()))
            }
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "identity permission check failed");
                Err(ApiError::Unavailable("identity did not answer the permission check".into()))
            }
        }
    }
}
