//! Calling other services. Every outgoing call goes through a [`Peer`]: one lazily connected
//! channel to `TANDEM_<SERVICE>_URL`, a deadline on every call (the peer's own, cut to the
//! caller's when the call is made while serving a request), retries with exponential backoff
//! and jitter on UNAVAILABLE only, and the caller's trace context in the metadata.
//!
//! Only idempotent calls go through it: every peer call of the suite is a question (keys,
//! permissions, users, rewards), so asking again after UNAVAILABLE changes nothing.
//!
//! [`Identity`] is the identity peer other services use: its public keys (JWKS) for verifying
//! tokens, and its permission check on the caller's behalf.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use rand::Rng;
use tandem_proto::identity::v1::{
    CheckPermissionRequest, GetJwksRequest, Jwk, Permission, access_service_client::AccessServiceClient,
    auth_service_client::AuthServiceClient,
};
use tonic::{
    Code, Status,
    metadata::MetadataValue,
    transport::{Channel, Endpoint},
};

use crate::{
    ApiError,
    auth::{Caller, KeySet, Permissions},
    layers, telemetry,
};

/// How a peer's calls are bounded and retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The pause before the first retry, doubled before each further one.
    pub initial_backoff: Duration,
    /// The longest pause between two attempts.
    pub max_backoff: Duration,
    /// The time one call may take, retries included; a caller's shorter deadline wins.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            deadline: Duration::from_secs(3),
        }
    }
}

impl RetryPolicy {
    /// Whether attempt number `attempt` (1 for the first), which failed with `code`, is retried,
    /// and after what pause. `jitter` (in `[0, 1]`) picks the pause between half and all of the
    /// exponential backoff, so that clients refused together do not come back together.
    /// `remaining` is the time left before the deadline: a retry that could not start before it
    /// is not made.
    pub fn retry_after(
        &self,
        attempt: u32,
        code: Code,
        remaining: Duration,
        jitter: f64,
    ) -> Option<Duration> {
        if code != Code::Unavailable || attempt >= self.max_attempts {
            return None;
        }
        let exponent = attempt.saturating_sub(1).min(30);
        let backoff = self.initial_backoff.saturating_mul(1 << exponent).min(self.max_backoff);
        let pause = backoff.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
        (pause < remaining).then_some(pause)
    }
}

/// A peer could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("{peer}: invalid URL {url:?}: {reason}")]
    InvalidUrl { peer: &'static str, url: String, reason: String },
}

/// One peer service at its URL, with the policy its calls follow.
#[derive(Clone)]
pub struct Peer {
    name: &'static str,
    channel: Channel,
    policy: RetryPolicy,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer").field("name", &self.name).field("policy", &self.policy).finish_non_exhaustive()
    }
}

impl Peer {
    /// Connects lazily: the peer may start after this service, and a connection lost is made
    /// again on the next call.
    pub fn connect(name: &'static str, url: &str) -> Result<Self, PeerError> {
        let invalid = |reason: String| PeerError::InvalidUrl { peer: name, url: url.to_owned(), reason };
        let endpoint = Endpoint::from_shared(url.to_owned()).map_err(|e| invalid(e.to_string()))?;
        if endpoint.uri().host().is_none() {
            return Err(invalid("no host".into()));
        }
        let channel = endpoint
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true)
            .connect_lazy();
        Ok(Self { name, channel, policy: RetryPolicy::default() })
    }

    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn policy(&self) -> RetryPolicy {
        self.policy
    }

    /// Makes one call to the peer, retried under the policy. `rpc` makes one attempt with the
    /// channel and a request that carries `message`, the time left (`grpc-timeout`), the
    /// caller's trace context and `bearer` as `authorization`. Returns the peer's answer or the
    /// last status; DEADLINE_EXCEEDED when the time ran out.
    pub async fn call<M, R, F, Fut>(&self, bearer: Option<&str>, message: M, mut rpc: F) -> Result<R, Status>
    where
        M: Clone,
        F: FnMut(Channel, tonic::Request<M>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, Status>>,
    {
        let authorization = bearer
            .map(|token| {
                MetadataValue::try_from(format!("Bearer {token}"))
                    .map_err(|_| Status::unauthenticated("the bearer token is not valid metadata"))
            })
            .transpose()?;
        let own = Instant::now() + self.policy.deadline;
        let deadline = layers::current_deadline().map_or(own, |caller| caller.min(own));
        let mut attempt = 0;
        loop {
            attempt += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(Status::deadline_exceeded(format!("{} did not answer in time", self.name)));
            }
            let mut request = tonic::Request::new(message.clone());
            request.set_timeout(remaining);
            if let Some(value) = &authorization {
                request.metadata_mut().insert("authorization", value.clone());
            }
            telemetry::inject_into_metadata(request.metadata_mut());
            let status = match tokio::time::timeout(remaining, rpc(self.channel.clone(), request)).await {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) if timed_out(&status) => {
                    return Err(Status::deadline_exceeded(format!("{} did not answer in time", self.name)));
                }
                Ok(Err(status)) => status,
                Err(_) => {
                    return Err(Status::deadline_exceeded(format!("{} did not answer in time", self.name)));
                }
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            let jitter = rand::thread_rng().gen_range(0.0..=1.0);
            match self.policy.retry_after(attempt, status.code(), remaining, jitter) {
                Some(pause) => {
                    tracing::debug!(
                        peer = self.name,
                        attempt,
                        ?pause,
                        message = status.message(),
                        "peer unavailable; retrying"
                    );
                    tokio::time::sleep(pause).await;
                }
                None => return Err(status),
            }
        }
    }
}

/// Whether the client's own timer (the `grpc-timeout` the attempt carried) ended the call.
fn timed_out(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if err.is::<tonic::TimeoutExpired>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// The service-facing error for a peer's status that the caller cannot act on: logged with its
/// cause, answered as UNAVAILABLE.
pub fn unavailable(peer: &str, status: &Status) -> ApiError {
    tracing::warn!(peer, code = ?status.code(), message = status.message(), "peer call failed");
    ApiError::Unavailable(format!("{peer} did not answer"))
}

/// How often the published keys are fetched again (a rotated key appears within this time).
const JWKS_REFRESH: Duration = Duration::from_secs(300);

/// Identity at `TANDEM_IDENTITY_URL`, as every other service reaches it.
#[derive(Clone, Debug)]
pub struct Identity {
    peer: Peer,
}

impl Identity {
    /// Connects lazily: identity may start after this service.
    pub fn connect(url: &str) -> Result<Self, PeerError> {
        Ok(Self { peer: Peer::connect("identity", url)? })
    }

    pub fn from_peer(peer: Peer) -> Self {
        Self { peer }
    }

    /// The peer, for the other questions a service asks identity.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    async fn jwks(&self) -> Result<Vec<Jwk>, Status> {
        let response = self
            .peer
            .call(None, GetJwksRequest {}, |channel, request| async move {
                AuthServiceClient::new(channel).get_jwks(request).await
            })
            .await?;
        Ok(response.keys)
    }

    /// Identity's public keys, waiting until identity answers, then refreshed in the
    /// background so that rotated keys are picked up.
    pub async fn keys(&self) -> anyhow::Result<Arc<KeySet>> {
        let keys = loop {
            match self.jwks().await {
                Ok(jwks) => break Arc::new(KeySet::from_jwks(&jwks)?),
                Err(status) => {
                    tracing::warn!(code = ?status.code(), message = status.message(), "cannot fetch identity's public keys yet; retrying");
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
                        Err(status) => {
                            tracing::warn!(code = ?status.code(), message = status.message(), "cannot refresh identity's public keys");
                        }
                    }
                }
            }
        });
        Ok(keys)
    }
}

/// The caller's own bearer token, to ask a peer on its behalf.
pub fn forwarded_token(caller: &Caller) -> Result<&str, ApiError> {
    caller.token.as_deref().ok_or_else(|| ApiError::Unauthenticated("no bearer token to forward".into()))
}

/// Identity's `AccessService/CheckPermission`, asked with the caller's own token (identity
/// answers a user about itself). A service principal is a member of no team: refused here
/// without asking.
#[async_trait]
impl Permissions for Identity {
    async fn check(&self, caller: &Caller, team_id: &str, permission: Permission) -> Result<bool, ApiError> {
        if caller.is_service_principal() {
            return Ok(false);
        }
        let token = forwarded_token(caller)?;
        let message = CheckPermissionRequest {
            user_id: caller.user_id.clone(),
            team_id: team_id.to_owned(),
            permission: permission.into(),
        };
        let answer = self
            .peer
            .call(Some(token), message, |channel, request| async move {
                AccessServiceClient::new(channel).check_permission(request).await
            })
            .await;
        match answer {
            Ok(response) => Ok(response.allowed),
            Err(status) if status.code() == Code::Unauthenticated => {
                Err(ApiError::Unauthenticated(status.message().to_owned()))
            }
            Err(status) => Err(unavailable("identity", &status)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    };

    use tandem_proto::identity::v1::{
        GetJwksResponse,
        auth_service_server::{AuthService, AuthServiceServer},
    };
    use tokio_stream::wrappers::TcpListenerStream;

    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
            deadline: Duration::from_secs(3),
        }
    }

    #[test]
    fn only_unavailable_is_retried() {
        let p = policy();
        for code in [
            Code::DeadlineExceeded,
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::NotFound,
            Code::Internal,
            Code::ResourceExhausted,
            Code::Unknown,
            Code::FailedPrecondition,
        ] {
            assert_eq!(p.retry_after(1, code, Duration::from_secs(10), 0.5), None, "{code:?}");
        }
        assert!(p.retry_after(1, Code::Unavailable, Duration::from_secs(10), 0.5).is_some());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_between_half_and_all() {
        let p = policy();
        let ten = Duration::from_secs(10);
        let ms = Duration::from_millis;
        assert_eq!(p.retry_after(1, Code::Unavailable, ten, 1.0), Some(ms(100)));
        assert_eq!(p.retry_after(1, Code::Unavailable, ten, 0.0), Some(ms(50)));
        assert_eq!(p.retry_after(2, Code::Unavailable, ten, 1.0), Some(ms(200)));
        assert_eq!(p.retry_after(3, Code::Unavailable, ten, 1.0), Some(ms(300)), "capped");
        assert_eq!(p.retry_after(3, Code::Unavailable, ten, 0.0), Some(ms(150)));
        // Out-of-range jitter is clamped, never a longer pause than the cap.
        assert_eq!(p.retry_after(3, Code::Unavailable, ten, 7.0), Some(ms(300)));
        let long = RetryPolicy { max_attempts: 100, ..p };
        assert_eq!(long.retry_after(60, Code::Unavailable, ten, 1.0), Some(ms(300)), "no overflow");
    }

    #[test]
    fn attempts_are_bounded_and_never_past_the_deadline() {
        let p = policy();
        let ten = Duration::from_secs(10);
        assert!(p.retry_after(3, Code::Unavailable, ten, 0.5).is_some());
        assert_eq!(p.retry_after(4, Code::Unavailable, ten, 0.5), None, "the fourth attempt was the last");
        assert_eq!(
            p.retry_after(1, Code::Unavailable, Duration::from_millis(80), 1.0),
            None,
            "no retry that could not start before the deadline"
        );
        assert_eq!(p.retry_after(1, Code::Unavailable, Duration::ZERO, 0.0), None);
    }

    /// An identity `AuthService` whose `GetJwks` answers UNAVAILABLE `failures` times, then OK
    /// with one key — or never answers when `hang`. Counts the calls and records each call's
    /// `grpc-timeout` and `traceparent`.
    #[derive(Default)]
    struct Flaky {
        failures: u32,
        hang: bool,
        calls: AtomicU32,
        timeouts: std::sync::Mutex<Vec<Option<String>>>,
    }

    struct FlakyAuth(Arc<Flaky>);

    #[tonic::async_trait]
    impl AuthService for FlakyAuth {
        async fn get_jwks(
            &self,
            request: tonic::Request<GetJwksRequest>,
        ) -> Result<tonic::Response<GetJwksResponse>, Status> {
            let flaky = &self.0;
            let n = flaky.calls.fetch_add(1, Ordering::SeqCst);
            let timeout =
                request.metadata().get("grpc-timeout").and_then(|v| v.to_str().ok()).map(str::to_owned);
            flaky.timeouts.lock().unwrap().push(timeout);
            if flaky.hang {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            if n < flaky.failures {
                return Err(Status::unavailable("warming up"));
            }
            Ok(tonic::Response::new(GetJwksResponse {
                keys: vec![Jwk { kid: "k1".into(), ..Default::default() }],
            }))
        }
        async fn sign_up(
            &self,
            _: tonic::Request<tandem_proto::identity::v1::SignUpRequest>,
        ) -> Result<tonic::Response<tandem_proto::identity::v1::SignUpResponse>, Status> {
            Err(Status::unimplemented(""))
        }
        async fn authenticate(
            &self,
            _: tonic::Request<tandem_proto::identity::v1::AuthenticateRequest>,
        ) -> Result<tonic::Response<tandem_proto::identity::v1::AuthenticateResponse>, Status> {
            Err(Status::unimplemented(""))
        }
        async fn refresh_token(
            &self,
            _: tonic::Request<tandem_proto::identity::v1::RefreshTokenRequest>,
        ) -> Result<tonic::Response<tandem_proto::identity::v1::RefreshTokenResponse>, Status> {
            Err(Status::unimplemented(""))
        }
        async fn verify_email(
            &self,
            _: tonic::Request<tandem_proto::identity::v1::VerifyEmailRequest>,
        ) -> Result<tonic::Response<tandem_proto::identity::v1::VerifyEmailResponse>, Status> {
            Err(Status::unimplemented(""))
        }
        async fn get_current_user(
            &self,
            _: tonic::Request<tandem_proto::identity::v1::GetCurrentUserRequest>,
        ) -> Result<tonic::Response<tandem_proto::identity::v1::GetCurrentUserResponse>, Status> {
            Err(Status::unimplemented(""))
        }
    }

    /// Serves `flaky` on a free port; returns its URL.
    async fn serve(flaky: Arc<Flaky>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(AuthServiceServer::new(FlakyAuth(flaky)))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        url
    }

    async fn get_jwks(peer: &Peer) -> Result<GetJwksResponse, Status> {
        peer.call(None, GetJwksRequest {}, |channel, request| async move {
            AuthServiceClient::new(channel).get_jwks(request).await
        })
        .await
    }

    fn fast(max_attempts: u32, deadline: Duration) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
            deadline,
        }
    }

    #[tokio::test]
    async fn unavailable_is_retried_until_the_peer_answers() {
        let flaky = Arc::new(Flaky { failures: 2, ..Flaky::default() });
        let peer = Peer::connect("identity", &serve(flaky.clone()).await)
            .unwrap()
            .with_policy(fast(4, Duration::from_secs(5)));
        let response = get_jwks(&peer).await.expect("the third attempt succeeds");
        assert_eq!(response.keys[0].kid, "k1");
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 3);
        // Every attempt told the peer how long it had left.
        let timeouts = flaky.timeouts.lock().unwrap().clone();
        assert_eq!(timeouts.len(), 3);
        assert!(timeouts.iter().all(Option::is_some), "{timeouts:?}");
    }

    #[tokio::test]
    async fn attempts_are_bounded_and_the_last_status_is_returned() {
        let flaky = Arc::new(Flaky { failures: 100, ..Flaky::default() });
        let peer = Peer::connect("identity", &serve(flaky.clone()).await)
            .unwrap()
            .with_policy(fast(3, Duration::from_secs(5)));
        let status = get_jwks(&peer).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), "warming up");
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_peer_that_never_answers_is_cut_at_the_deadline_and_not_retried() {
        let flaky = Arc::new(Flaky { hang: true, ..Flaky::default() });
        let peer = Peer::connect("identity", &serve(flaky.clone()).await)
            .unwrap()
            .with_policy(fast(4, Duration::from_millis(300)));
        let started = Instant::now();
        let status = get_jwks(&peer).await.unwrap_err();
        let took = started.elapsed();
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(2), "{took:?}");
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_callers_shorter_deadline_wins() {
        let flaky = Arc::new(Flaky { hang: true, ..Flaky::default() });
        let peer = Peer::connect("identity", &serve(flaky.clone()).await)
            .unwrap()
            .with_policy(fast(4, Duration::from_secs(30)));
        let started = Instant::now();
        let caller_deadline = Instant::now() + Duration::from_millis(200);
        let status = layers::with_deadline(caller_deadline, get_jwks(&peer)).await.unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded);
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_peer_that_is_down_is_retried_then_reported_unavailable() {
        // A port nothing listens on: every attempt is refused.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let peer = Peer::connect("identity", &url).unwrap().with_policy(fast(3, Duration::from_secs(5)));
        let started = Instant::now();
        let status = get_jwks(&peer).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        // Two pauses of at least half the backoff each: 5 ms + 10 ms.
        assert!(started.elapsed() >= Duration::from_millis(15), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_service_principal_is_refused_a_team_permission_without_asking() {
        let flaky = Arc::new(Flaky::default());
        let identity = Identity::connect(&serve(flaky.clone()).await).unwrap();
        let service = Caller {
            user_id: "svc:identity".into(),
            staff_role: None,
            issued_at: 0,
            token: Some("any".into()),
            service: Some("identity".into()),
        };
        assert!(!identity.check(&service, "team_1", Permission::TeamView).await.unwrap());
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn urls_are_checked() {
        assert!(Peer::connect("identity", "not a url").is_err());
        assert!(Peer::connect("identity", "http://identity:50051").is_ok());
    }
}
