//! The tower layers every server runs, outermost first: tracing, load shedding, the request
//! deadline and authentication. Each answers a refused request itself with a proper gRPC
//! status, so no tower error ever reaches the client as UNKNOWN.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use http::{Request, Response};
use tokio::sync::Semaphore;
use tonic::Status;
use tower::{Layer, Service};
use tracing::Instrument;

use crate::{
    ApiError,
    auth::{AuthError, Authenticator},
    telemetry,
};

type BoxFuture<T, E> = Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send>>;

fn reply<B: Default>(status: Status) -> Response<B> {
    status.into_http()
}

/// Clones the inner service for a call, keeping the one that was polled ready (the tower
/// idiom for services whose futures outlive `&mut self`).
fn take<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    std::mem::replace(inner, clone)
}

// --- load shedding -----------------------------------------------------------------------

/// At most `max` requests in flight; beyond that a request is refused at once with
/// RESOURCE_EXHAUSTED instead of queueing, so an overloaded server stays fast for the
/// requests it accepts.
#[derive(Clone)]
pub struct ShedLayer {
    permits: Arc<Semaphore>,
}

impl ShedLayer {
    pub fn new(max: usize) -> Self {
        Self { permits: Arc::new(Semaphore::new(max.max(1))) }
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Shed { inner, permits: self.permits.clone() }
    }
}

#[derive(Clone)]
pub struct Shed<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Shed<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    ReqBody: Send + 'static,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            return Box::pin(async {
                Ok(reply(
                    ApiError::ResourceExhausted("server is at capacity; retry with backoff".into()).into(),
                ))
            });
        };
        let mut inner = take(&mut self.inner);
        Box::pin(async move {
            let response = inner.call(req).await;
            drop(permit);
            response
        })
    }
}

// --- deadline ----------------------------------------------------------------------------

/// Every request gets a server-side deadline: the server's limit, or the client's
/// `grpc-timeout` when shorter. Past it the request is dropped and DEADLINE_EXCEEDED answered.
#[derive(Clone)]
pub struct DeadlineLayer {
    limit: Duration,
}

impl DeadlineLayer {
    pub fn new(limit: Duration) -> Self {
        Self { limit }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Deadline { inner, limit: self.limit }
    }
}

#[derive(Clone)]
pub struct Deadline<S> {
    inner: S,
    limit: Duration,
}

/// Parses a `grpc-timeout` header value (`100m`, `5S`, …).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Deadline<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    ReqBody: Send + 'static,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let client =
            req.headers().get("grpc-timeout").and_then(|v| v.to_str().ok()).and_then(parse_grpc_timeout);
        let limit = client.map_or(self.limit, |c| c.min(self.limit));
        let mut inner = take(&mut self.inner);
        Box::pin(async move {
            match tokio::time::timeout(limit, inner.call(req)).await {
                Ok(response) => response,
                Err(_) => Ok(reply(crate::error::status(
                    tonic::Code::DeadlineExceeded,
                    tandem_proto::common::v1::ErrorReason::DeadlineExceeded,
                    "the request ran past its deadline",
                    &[],
                ))),
            }
        })
    }
}

// --- authentication ----------------------------------------------------------------------

/// Verifies `authorization: Bearer …` and puts the [`crate::auth::Caller`] into the request's
/// extensions. A request without the header passes on anonymous (the handler decides whether
/// that is allowed); a request with a bad token is refused with UNAUTHENTICATED here.
#[derive(Clone)]
pub struct AuthLayer {
    authenticator: Arc<dyn Authenticator>,
}

impl AuthLayer {
    pub fn new(authenticator: Arc<dyn Authenticator>) -> Self {
        Self { authenticator }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Auth { inner, authenticator: self.authenticator.clone() }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    authenticator: Arc<dyn Authenticator>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Auth<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    ReqBody: Send + 'static,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let header = req.headers().get(http::header::AUTHORIZATION).map(|v| v.to_str().map(str::to_owned));
        let authenticator = self.authenticator.clone();
        let mut inner = take(&mut self.inner);
        Box::pin(async move {
            match header {
                None => {}
                Some(Ok(value)) => {
                    let token = value
                        .strip_prefix("Bearer ")
                        .or_else(|| value.strip_prefix("bearer "))
                        .map(str::trim);
                    let Some(token) = token.filter(|t| !t.is_empty()) else {
                        return Ok(reply(
                            ApiError::Unauthenticated("authorization must be `Bearer <token>`".into()).into(),
                        ));
                    };
                    match authenticator.authenticate(token).await {
                        Ok(caller) => {
                            req.extensions_mut().insert(caller);
                        }
                        Err(err) => {
                            if let AuthError::Invalid(reason) = &err {
                                tracing::debug!(%reason, "token refused");
                            }
                            return Ok(reply(ApiError::from(err).into()));
                        }
                    }
                }
                Some(Err(_)) => {
                    return Ok(reply(
                        ApiError::Unauthenticated("authorization header is not text".into()).into(),
                    ));
                }
            }
            inner.call(req).await
        })
    }
}

// --- tracing -----------------------------------------------------------------------------

/// One span per RPC, a child of the caller's W3C trace context, and one log line when it ends
/// with the method, gRPC status and latency.
#[derive(Clone, Default)]
pub struct TraceLayer;

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Trace { inner }
    }
}

#[derive(Clone)]
pub struct Trace<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Trace<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    ReqBody: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let method = req.uri().path().to_owned();
        let span = tracing::info_span!(
            "rpc",
            otel.name = %method,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        telemetry::set_parent_from_headers(&span, req.headers());
        let mut inner = take(&mut self.inner);
        let started = Instant::now();
        Box::pin(
            async move {
                let response = inner.call(req).await;
                let code = match &response {
                    Ok(r) => r
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i32>().ok())
                        .unwrap_or(0),
                    Err(_) => 2,
                };
                tracing::Span::current().record("rpc.grpc.status_code", code);
                let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
                if code == 13 || code == 2 {
                    tracing::warn!(method = %method, grpc_status = code, latency_ms, "rpc failed");
                } else {
                    tracing::info!(method = %method, grpc_status = code, latency_ms, "rpc");
                }
                response
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("10x"), None);
        assert_eq!(parse_grpc_timeout("m"), None);
        assert_eq!(parse_grpc_timeout("123456789m"), None);
    }
}
