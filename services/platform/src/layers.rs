//! The tower layers every server runs, outermost first: metrics, load shedding, tracing,
//! undecodable bodies answered INVALID_ARGUMENT, the request deadline, authentication and the
//! per-caller rate limit. Each answers a refused request itself with a proper gRPC status, so
//! no tower error ever reaches the client as UNKNOWN.

use std::{
    collections::HashMap,
    net::IpAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
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
    metrics, telemetry,
};

type BoxFuture<T, E> = Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send>>;

fn reply<B: Default>(status: Status) -> Response<B> {
    status.into_http()
}

/// What one layer does around the inner service for one request: answer it itself, or call
/// `inner` (already polled ready) and look at its response.
pub trait Around: Clone + Send + Sync + 'static {
    fn around<S, B, R>(&self, req: Request<B>, inner: S) -> BoxFuture<Response<R>, S::Error>
    where
        S: Service<Request<B>, Response = Response<R>> + Send + 'static,
        S::Future: Send,
        B: Send + 'static,
        R: Default + 'static;
}

/// A tower layer made of an [`Around`].
#[derive(Clone)]
pub struct AroundLayer<A>(pub A);

impl<A: Clone, S> Layer<S> for AroundLayer<A> {
    type Service = AroundService<A, S>;
    fn layer(&self, inner: S) -> Self::Service {
        AroundService { around: self.0.clone(), inner }
    }
}

#[derive(Clone)]
pub struct AroundService<A, S> {
    around: A,
    inner: S,
}

impl<A, S, B, R> Service<Request<B>> for AroundService<A, S>
where
    A: Around,
    S: Service<Request<B>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
    R: Default + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // Call the instance that was polled ready; keep a fresh clone for the next call.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        self.around.around(req, inner)
    }
}

// --- load shedding -----------------------------------------------------------------------

/// At most `max` requests in flight; beyond that a request is refused at once with
/// RESOURCE_EXHAUSTED instead of queueing, so an overloaded server stays fast for the
/// requests it accepts.
///
/// A refusal is counted by the metrics layer outside this one, but gets no span and no log
/// line of its own: under overload most requests are refused, and a span and a line each
/// would spend the CPU the served requests need, and flood the logs when they are most
/// read. Instead one warning a second at most (the first refusal at once) tells how many
/// were refused since the last.
#[derive(Clone)]
pub struct Shed {
    permits: Arc<Semaphore>,
    /// The refusal's headers (status, message and details, encoded), built once: under
    /// overload most requests get it, and what a refusal costs is taken from the requests
    /// being served. Shared, because the layers' services are cloned for every request.
    refusal: Arc<http::HeaderMap>,
    refusals: Arc<Refusals>,
}

/// The refusals not yet reported, and when they last were.
struct Refusals {
    limit: usize,
    report_every: Duration,
    since: Instant,
    /// Refused since the last report.
    unreported: AtomicU64,
    /// When the last report was made, in milliseconds after `since`; [`NEVER`] before the first.
    reported_at_ms: AtomicU64,
}

const NEVER: u64 = u64::MAX;

impl Refusals {
    fn count(&self) {
        self.unreported.fetch_add(1, Ordering::Relaxed);
        let now = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        let last = self.reported_at_ms.load(Ordering::Relaxed);
        let due = last == NEVER || now.saturating_sub(last) >= self.report_every.as_millis() as u64;
        // One caller wins the report; the others' refusals go into the next one.
        if due
            && self.reported_at_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            let refused = self.unreported.swap(0, Ordering::Relaxed);
            tracing::warn!(
                refused,
                in_flight_limit = self.limit,
                "at capacity: requests refused since the last report"
            );
        }
    }
}

pub fn shed(max: usize) -> AroundLayer<Shed> {
    shed_reporting_every(max, Duration::from_secs(1))
}

fn shed_reporting_every(max: usize, report_every: Duration) -> AroundLayer<Shed> {
    let max = max.max(1);
    let refusal: Status =
        ApiError::ResourceExhausted("server is at capacity; retry with backoff".into()).into();
    AroundLayer(Shed {
        permits: Arc::new(Semaphore::new(max)),
        refusal: Arc::new(reply::<()>(refusal).into_parts().0.headers),
        refusals: Arc::new(Refusals {
            limit: max,
            report_every,
            since: Instant::now(),
            unreported: AtomicU64::new(0),
            reported_at_ms: AtomicU64::new(NEVER),
        }),
    })
}

impl Around for Shed {
    fn around<S, B, R>(&self, req: Request<B>, mut inner: S) -> BoxFuture<Response<R>, S::Error>
    where
        S: Service<Request<B>, Response = Response<R>> + Send + 'static,
        S::Future: Send,
        B: Send + 'static,
        R: Default + 'static,
    {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            self.refusals.count();
            let headers = http::HeaderMap::clone(&self.refusal);
            return Box::pin(async move {
                let mut refusal = Response::new(R::default());
                *refusal.headers_mut() = headers;
                Ok(refusal)
            });
        };
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
/// A request's work dropped before it finished, here or by the server when the client went
/// away, is dropped as unfinished: the connections it held do not go straight to the next
/// request (see [`crate::db::drop_unfinished`]).
#[derive(Clone)]
pub struct Deadline {
    limit: Duration,
}

pub fn deadline(limit: Duration) -> AroundLayer<Deadline> {
    AroundLayer(Deadline { limit })
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

impl Around for Deadline {
    fn around<S, B, R>(&self, req: Request<B>, mut inner: S) -> BoxFuture<Response<R>, S::Error>
    where
        S: Service<Request<B>, Response = Response<R>> + Send + 'static,
        S::Future: Send,
        B: Send + 'static,
        R: Default + 'static,
    {
        let client =
            req.headers().get("grpc-timeout").and_then(|v| v.to_str().ok()).and_then(parse_grpc_timeout);
        let limit = client.map_or(self.limit, |c| c.min(self.limit));
        let until = Instant::now() + limit;
        Box::pin(async move {
            let work = Unfinished { work: Some(with_deadline(until, inner.call(req))) };
            match tokio::time::timeout(limit, work).await {
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

pin_project_lite::pin_project! {
    /// A request's work, dropped as unfinished (see [`crate::db::drop_unfinished`]) when it
    /// is dropped before it finished: past its deadline here, or when the client went away
    /// and the server dropped the whole request.
    struct Unfinished<F> {
        #[pin]
        work: Option<F>,
    }

    impl<F> PinnedDrop for Unfinished<F> {
        fn drop(this: Pin<&mut Self>) {
            let mut work = this.project().work;
            if work.is_some() {
                crate::db::while_unfinished(|| work.set(None));
            }
        }
    }
}

impl<F: std::future::Future> std::future::Future for Unfinished<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let mut work = self.project().work;
        let running = work.as_mut().as_pin_mut().expect("polled after it finished");
        let output = std::task::ready!(running.poll(cx));
        work.set(None);
        Poll::Ready(output)
    }
}

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Runs `work` with `deadline` as the request's deadline: calls to peers made inside it end
/// by then (see [`crate::peers::Peer::call`]).
pub async fn with_deadline<F: std::future::Future>(deadline: Instant, work: F) -> F::Output {
    DEADLINE.scope(deadline, work).await
}

/// The deadline of the request being served, if any.
pub fn current_deadline() -> Option<Instant> {
    DEADLINE.try_with(|d| *d).ok()
}

// --- authentication ----------------------------------------------------------------------

/// Verifies `authorization: Bearer …` and puts the [`crate::auth::Caller`] into the request's
/// extensions. A request without the header passes on anonymous (the handler decides whether
/// that is allowed); a request with a bad token is refused with UNAUTHENTICATED here.
#[derive(Clone)]
pub struct Authenticate {
    authenticator: Arc<dyn Authenticator>,
}

pub fn authenticate(authenticator: Arc<dyn Authenticator>) -> AroundLayer<Authenticate> {
    AroundLayer(Authenticate { authenticator })
}

impl Around for Authenticate {
    fn around<S, B, R>(&self, mut req: Request<B>, mut inner: S) -> BoxFuture<Response<R>, S::Error>
    where
        S: Service<Request<B>, Response = Response<R>> + Send + 'static,
        S::Future: Send,
        B: Send + 'static,
        R: Default + 'static,
    {
        let authenticator = self.authenticator.clone();
        Box::pin(async move {
            match req.headers().get(http::header::AUTHORIZATION).map(|v| v.to_str()) {
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

// --- per-caller rate limit ----------------------------------------------------------------

/// A token bucket per caller: the verified caller's user id, or the peer's IP address for
/// anonymous requests. Runs after authentication. A caller past its rate is answered
/// RESOURCE_EXHAUSTED with a `RetryInfo` saying when a request will be accepted again.
/// Health checks are not limited (probes must not starve).
#[derive(Clone)]
pub struct RateLimit {
    per_second: f64,
    burst: f64,
    buckets: Arc<std::sync::Mutex<HashMap<CallerKey, Bucket>>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum CallerKey {
    User(String),
    Peer(IpAddr),
    Unknown,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Beyond this many callers the idle buckets (refilled to the brim) are dropped.
const MAX_IDLE_BUCKETS: usize = 10_000;

/// `per_second` requests a second per caller with bursts of `burst`; `per_second == 0`
/// turns the limit off.
pub fn rate_limit(per_second: f64, burst: u32) -> AroundLayer<RateLimit> {
    AroundLayer(RateLimit {
        per_second,
        burst: f64::from(burst.max(1)),
        buckets: Arc::new(std::sync::Mutex::new(HashMap::new())),
    })
}

impl RateLimit {
    /// Takes one token of `key`'s bucket, or says how long until one is there.
    fn take(&self, key: CallerKey, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_IDLE_BUCKETS && !buckets.contains_key(&key) {
            let (rate, burst) = (self.per_second, self.burst);
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let bucket = buckets.entry(key).or_insert(Bucket { tokens: self.burst, at: now });
        let refilled = now.duration_since(bucket.at).as_secs_f64() * self.per_second;
        bucket.tokens = (bucket.tokens + refilled).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.per_second))
        }
    }
}

fn caller_key<B>(req: &Request<B>) -> CallerKey {
    if let Some(caller) = req.extensions().get::<Arc<crate::auth::Caller>>() {
        return CallerKey::User(caller.user_id.clone());
    }
    match req.extensions().get::<tonic::transport::server::TcpConnectInfo>().and_then(|c| c.remote_addr()) {
        Some(addr) => CallerKey::Peer(addr.ip()),
        None => CallerKey::Unknown,
    }
}

impl Around for RateLimit {
    fn around<S, B, R>(&self, req: Request<B>, mut inner: S) -> BoxFuture<Response<R>, S::Error>
    where
        S: Service<Request<B>, Response = Response<R>> + Send + 'static,
        S::Future: Send,
        B: Send + 'static,
        R: Default + 'static,
    {
        let limited = self.per_second > 0.0 && !req.uri().path().starts_with("/grpc.health.v1.Health/");
        if limited && let Err(retry_after) = self.take(caller_key(&req), Instant::now()) {
            return Box::pin(async move { Ok(reply(ApiError::RateLimited(retry_after).into())) });
        }
        Box::pin(inner.call(req))
    }
}

// --- undecodable bodies ------------------------------------------------------------------

/// tonic answers a body that does not decode as the RPC's message with INTERNAL ("failed to
/// decode Protobuf message"); that is the caller's fault, not the server's, so it is answered
/// INVALID_ARGUMENT here. A message over the size limit tonic answers OUT_OF_RANGE ("decoded
/// message length too large"); gRPC's status code for it is RESOURCE_EXHAUSTED, which is what
/// clients of other gRPC implementations expect, so it is answered that way. The connection
/// and the server carry on.
#[derive(Clone)]
pub struct InvalidBodies;

pub fn invalid_bodies() -> AroundLayer<InvalidBodies> {
    AroundLayer(InvalidBodies)
}

impl Around for InvalidBodies {
    fn around<S, B, R>(&self, req: Request<B>, mut inner: S) -> BoxFuture<Response<R>, S::Error>
    where
        S: Service<Request<B>, Response = Response<R>> + Send + 'static,
        S::Future: Send,
        B: Send + 'static,
        R: Default + 'static,
    {
        Box::pin(async move {
            let response = inner.call(req).await?;
            // Only INTERNAL and OUT_OF_RANGE are looked at; any other answer, a refusal under
            // overload above all, passes without its message and details being decoded.
            if !matches!(grpc_status_of(response.headers()), Some(INTERNAL | OUT_OF_RANGE)) {
                return Ok(response);
            }
            let Some(status) = Status::from_header_map(response.headers()) else { return Ok(response) };
            match status.code() {
                tonic::Code::Internal
                    if status.message().starts_with("failed to decode Protobuf message") =>
                {
                    Ok(reply(
                        ApiError::invalid("", "the request body is not a valid message of this RPC").into(),
                    ))
                }
                tonic::Code::OutOfRange
                    if status.message().starts_with("Error, decoded message length too large") =>
                {
                    Ok(reply(ApiError::MessageTooLarge(status.message().to_owned()).into()))
                }
                _ => Ok(response),
            }
        })
    }
}

// --- tracing -----------------------------------------------------------------------------

/// One span per RPC, a child of the caller's W3C trace context, and one log line when it ends
/// with the method, gRPC status and latency: a warning for INTERNAL and UNKNOWN, a debug line
/// otherwise. Every RPC is counted and timed by the metrics layer; a line for each at `info`
/// would cost a busy server more than the RPCs' own work, and fill the logs with what the
/// metrics and traces already tell (`RUST_LOG=info,tandem_platform::layers=debug` turns the
/// lines on).
#[derive(Clone)]
pub struct Trace;

pub fn trace() -> AroundLayer<Trace> {
    AroundLayer(Trace)
}

impl Around for Trace {
    fn around<S, B, R>(&self, req: Request<B>, mut inner: S) -> BoxFuture<Response<R>, S::Error>
    where
        S: Service<Request<B>, Response = Response<R>> + Send + 'static,
        S::Future: Send,
        B: Send + 'static,
        R: Default + 'static,
    {
        // The path shares the request's buffer: nothing is copied when no one listens.
        let uri = req.uri().clone();
        let method = uri.path();
        let span = tracing::info_span!(
            "rpc",
            otel.name = method,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.method = method,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        if !span.is_disabled() {
            telemetry::set_parent_from_headers(&span, req.headers());
        }
        let started = Instant::now();
        Box::pin(
            async move {
                let method = uri.path();
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
                    tracing::warn!(method, grpc_status = code, latency_ms, "rpc failed");
                } else {
                    tracing::debug!(method, grpc_status = code, latency_ms, "rpc");
                }
                response
            }
            .instrument(span),
        )
    }
}

// --- metrics -----------------------------------------------------------------------------

/// Counts and times every RPC to its final status (`rpc_server_requests_total`,
/// `rpc_server_duration_seconds`). A refusal or a failed unary call carries its status in the
/// response headers (trailers-only) and is recorded at once; otherwise the status arrives in
/// the trailers at the end of the body — a unary call's right after its message, a stream's
/// when it ends — and is recorded then. A body dropped before its trailers (the client went
/// away) counts as CANCELLED, and so does a request dropped before its response.
#[derive(Clone, Copy, Debug, Default)]
pub struct Meter;

pub fn meter() -> Meter {
    Meter
}

impl<S> Layer<S> for Meter {
    type Service = MeterService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MeterService { inner }
    }
}

#[derive(Clone, Debug)]
pub struct MeterService<S> {
    inner: S,
}

const CANCELLED: i32 = tonic::Code::Cancelled as i32;
const INTERNAL: i32 = tonic::Code::Internal as i32;
const OUT_OF_RANGE: i32 = tonic::Code::OutOfRange as i32;
const UNKNOWN: i32 = tonic::Code::Unknown as i32;

fn grpc_status_of(headers: &http::HeaderMap) -> Option<i32> {
    headers.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
}

/// One RPC being measured; recorded once, as CANCELLED if dropped unfinished.
struct RpcInFlight {
    labels: (&'static str, &'static str),
    started: Instant,
    done: bool,
}

impl RpcInFlight {
    fn finish(&mut self, code: i32) {
        if !std::mem::replace(&mut self.done, true) {
            metrics::rpc_finished(self.labels, code, self.started.elapsed());
        }
    }
}

impl Drop for RpcInFlight {
    fn drop(&mut self) {
        self.finish(CANCELLED);
    }
}

impl<S, B, R> Service<Request<B>> for MeterService<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    R: http_body::Body + Unpin,
{
    type Response = Response<MeteredBody<R>>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let mut rpc = RpcInFlight {
            labels: metrics::rpc_labels(req.uri().path()),
            started: Instant::now(),
            done: false,
        };
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = match response.await {
                Ok(response) => response,
                Err(err) => {
                    rpc.finish(UNKNOWN);
                    return Err(err);
                }
            };
            if let Some(code) = grpc_status_of(response.headers()) {
                rpc.finish(code);
            }
            Ok(response.map(|inner| MeteredBody { inner, rpc }))
        })
    }
}

/// A response body that records its RPC when the trailers with the status pass through.
pub struct MeteredBody<B> {
    inner: B,
    rpc: RpcInFlight,
}

impl<B: http_body::Body + Unpin> http_body::Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.rpc.finish(grpc_status_of(trailers).unwrap_or(UNKNOWN));
                }
            }
            // A body that fails or ends without a status leaves the client with UNKNOWN.
            Poll::Ready(Some(Err(_)) | None) => this.rpc.finish(UNKNOWN),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use tower::{ServiceExt, service_fn};

    use super::*;
    use crate::auth::Caller;

    type Svc = tower::util::BoxCloneService<Request<()>, Response<()>, std::convert::Infallible>;

    /// A service that answers OK after `delay`, with the caller's id (if any) in a header.
    fn slow(delay: Duration) -> Svc {
        tower::util::BoxCloneService::new(service_fn(move |req: Request<()>| async move {
            tokio::time::sleep(delay).await;
            let mut response = Response::new(());
            if let Some(caller) = req.extensions().get::<Arc<Caller>>() {
                response.headers_mut().insert("x-caller", caller.user_id.parse().unwrap());
            }
            Ok(response)
        }))
    }

    fn grpc_status(r: &Response<()>) -> Option<&str> {
        r.headers().get("grpc-status").and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn shedding_refuses_beyond_the_limit_with_resource_exhausted() {
        let svc = shed(1).layer(slow(Duration::from_millis(200)));
        let first = tokio::spawn(svc.clone().oneshot(Request::new(())));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = svc.clone().oneshot(Request::new(())).await.unwrap();
        assert_eq!(grpc_status(&second), Some("8"), "RESOURCE_EXHAUSTED");
        assert_eq!(second.headers()["content-type"], "application/grpc");
        let refusal = Status::from_header_map(second.headers()).expect("a status");
        assert_eq!(refusal.message(), "server is at capacity; retry with backoff");
        let info = tonic_types::StatusExt::get_details_error_info(&refusal).expect("an ErrorInfo");
        assert_eq!(info.reason, "OVERLOADED");
        assert_eq!(grpc_status(&first.await.unwrap().unwrap()), None, "the first one is served");
        let third = svc.oneshot(Request::new(())).await.unwrap();
        assert_eq!(grpc_status(&third), None, "capacity is released");
    }

    /// The refusal reports among captured log lines.
    fn refusal_reports(logs: &crate::testing::CapturedLogs) -> Vec<String> {
        logs.text().lines().filter(|l| l.contains("at capacity")).map(str::to_owned).collect()
    }

    #[tokio::test]
    async fn refusals_are_reported_at_once_then_at_most_once_an_interval() {
        let logs = crate::testing::CapturedLogs::default();
        let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(logs.clone()).finish();
        let _default = tracing::subscriber::set_default(subscriber);
        let svc = shed_reporting_every(1, Duration::from_millis(300)).layer(slow(Duration::from_secs(5)));
        let held = tokio::spawn(svc.clone().oneshot(Request::new(())));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let refuse = || async {
            let refused = svc.clone().oneshot(Request::new(())).await.unwrap();
            assert_eq!(grpc_status(&refused), Some("8"));
        };

        for _ in 0..3 {
            refuse().await;
        }
        let reports = refusal_reports(&logs);
        assert_eq!(reports.len(), 1, "the first refusal at once, the next two held back: {reports:?}");
        assert!(reports[0].contains("refused=1 in_flight_limit=1"), "{reports:?}");

        tokio::time::sleep(Duration::from_millis(350)).await;
        refuse().await;
        let reports = refusal_reports(&logs);
        assert_eq!(reports.len(), 2, "{reports:?}");
        assert!(reports[1].contains("refused=3 "), "the two held back and this one: {reports:?}");
        held.abort();
    }

    #[tokio::test]
    async fn deadlines_answer_deadline_exceeded_and_honour_shorter_client_timeouts() {
        let svc = deadline(Duration::from_millis(50)).layer(slow(Duration::from_millis(500)));
        let late = svc.clone().oneshot(Request::new(())).await.unwrap();
        assert_eq!(grpc_status(&late), Some("4"));

        // The handler sees the request's deadline, for the calls it makes to peers.
        let seen = tower::util::BoxCloneService::new(service_fn(|_: Request<()>| async {
            let mut response = Response::new(());
            if let Some(d) = current_deadline() {
                let left = d.saturating_duration_since(Instant::now()).as_millis().to_string();
                response.headers_mut().insert("x-left-ms", left.parse().unwrap());
            }
            Ok::<_, std::convert::Infallible>(response)
        }));
        let mut req = Request::new(());
        req.headers_mut().insert("grpc-timeout", "800m".parse().unwrap());
        let answered = deadline(Duration::from_secs(5)).layer(seen).oneshot(req).await.unwrap();
        let left: u64 = answered.headers()["x-left-ms"].to_str().unwrap().parse().unwrap();
        assert!((700..=800).contains(&left), "{left}");
        assert!(current_deadline().is_none(), "outside a request there is none");

        let svc = deadline(Duration::from_secs(5)).layer(slow(Duration::from_millis(300)));
        let mut req = Request::new(());
        req.headers_mut().insert("grpc-timeout", "20m".parse().unwrap());
        let started = Instant::now();
        assert_eq!(grpc_status(&svc.oneshot(req).await.unwrap()), Some("4"));
        assert!(started.elapsed() < Duration::from_millis(250));
    }

    /// Records, when dropped, whether it was dropped as unfinished work.
    struct Probe(Arc<std::sync::Mutex<Option<bool>>>);

    impl Drop for Probe {
        fn drop(&mut self) {
            *self.0.lock().unwrap() = Some(crate::db::cancelling());
        }
    }

    /// A service whose work holds a probe for `delay`, then answers OK.
    fn probed(delay: Duration) -> (Svc, Arc<std::sync::Mutex<Option<bool>>>) {
        let dropped = Arc::new(std::sync::Mutex::new(None));
        let seen = dropped.clone();
        let svc = tower::util::BoxCloneService::new(service_fn(move |_: Request<()>| {
            let probe = Probe(seen.clone());
            async move {
                tokio::time::sleep(delay).await;
                drop(probe);
                Ok(Response::new(()))
            }
        }));
        (svc, dropped)
    }

    #[tokio::test]
    async fn work_cut_off_is_dropped_as_unfinished_and_finished_work_is_not() {
        let (svc, dropped) = probed(Duration::from_millis(500));
        let late = deadline(Duration::from_millis(50)).layer(svc).oneshot(Request::new(())).await.unwrap();
        assert_eq!(grpc_status(&late), Some("4"));
        assert_eq!(*dropped.lock().unwrap(), Some(true), "past its deadline");

        // The client went away: the server drops the request with its work.
        let (svc, dropped) = probed(Duration::from_millis(500));
        let call = deadline(Duration::from_secs(5)).layer(svc).oneshot(Request::new(()));
        assert!(tokio::time::timeout(Duration::from_millis(50), call).await.is_err());
        assert_eq!(*dropped.lock().unwrap(), Some(true), "dropped by the server");

        let (svc, dropped) = probed(Duration::ZERO);
        let answered = deadline(Duration::from_secs(5)).layer(svc).oneshot(Request::new(())).await.unwrap();
        assert_eq!(grpc_status(&answered), None);
        assert_eq!(*dropped.lock().unwrap(), Some(false), "finished");
        assert!(!crate::db::cancelling(), "only while unfinished work is dropped");
    }

    struct OneToken;

    #[async_trait]
    impl Authenticator for OneToken {
        async fn authenticate(&self, token: &str) -> Result<Arc<Caller>, AuthError> {
            if token == "good" {
                Ok(Arc::new(Caller {
                    user_id: "user_1".into(),
                    staff_role: None,
                    issued_at: 0,
                    token: Some(token.into()),
                    service: None,
                }))
            } else {
                Err(AuthError::Invalid("bad".into()))
            }
        }
    }

    #[tokio::test]
    async fn authentication_puts_the_caller_in_extensions_and_refuses_bad_tokens() {
        let svc = authenticate(Arc::new(OneToken)).layer(slow(Duration::ZERO));
        let call = |value: Option<&'static str>| {
            let svc = svc.clone();
            async move {
                let mut req = Request::new(());
                if let Some(v) = value {
                    req.headers_mut().insert(http::header::AUTHORIZATION, v.parse().unwrap());
                }
                svc.oneshot(req).await.unwrap()
            }
        };
        let ok = call(Some("Bearer good")).await;
        assert_eq!(ok.headers().get("x-caller").unwrap(), "user_1");
        let anonymous = call(None).await;
        assert_eq!(grpc_status(&anonymous), None);
        assert!(anonymous.headers().get("x-caller").is_none());
        for bad in ["Bearer nope", "Basic abc", "Bearer "] {
            assert_eq!(grpc_status(&call(Some(bad)).await), Some("16"), "{bad}");
        }
    }

    fn as_user(user: &str) -> Request<()> {
        let mut req = Request::new(());
        req.extensions_mut().insert(Arc::new(Caller {
            user_id: user.into(),
            staff_role: None,
            service: None,
            issued_at: 0,
            token: None,
        }));
        req
    }

    #[tokio::test]
    async fn the_rate_limit_is_per_caller_and_answers_retry_info() {
        use tonic_types::StatusExt;
        let svc = rate_limit(10.0, 3).layer(slow(Duration::ZERO));
        for _ in 0..3 {
            assert_eq!(grpc_status(&svc.clone().oneshot(as_user("ann")).await.unwrap()), None);
        }
        let refused = svc.clone().oneshot(as_user("ann")).await.unwrap();
        assert_eq!(grpc_status(&refused), Some("8"), "RESOURCE_EXHAUSTED past the burst");
        let status = Status::from_header_map(refused.headers()).unwrap();
        let retry = status.get_details_retry_info().expect("a RetryInfo detail").retry_delay.unwrap();
        assert!(retry > Duration::ZERO && retry <= Duration::from_millis(100), "{retry:?}");
        assert_eq!(status.get_details_error_info().map(|i| i.reason).as_deref(), Some("OVERLOADED"));

        // Another caller has its own bucket; anonymous callers share one per address.
        assert_eq!(grpc_status(&svc.clone().oneshot(as_user("bob")).await.unwrap()), None);
        // Health checks are never limited.
        let health = Request::post("/grpc.health.v1.Health/Check").body(()).unwrap();
        assert_eq!(grpc_status(&svc.clone().oneshot(health).await.unwrap()), None);

        // After the delay, one more request passes.
        tokio::time::sleep(retry + Duration::from_millis(5)).await;
        assert_eq!(grpc_status(&svc.clone().oneshot(as_user("ann")).await.unwrap()), None);
        assert_eq!(grpc_status(&svc.oneshot(as_user("ann")).await.unwrap()), Some("8"));
    }

    #[test]
    fn buckets_refill_at_the_rate_up_to_the_burst_and_idle_ones_are_dropped() {
        let AroundLayer(limit) = rate_limit(2.0, 2);
        let t0 = Instant::now();
        let key = || CallerKey::User("ann".into());
        assert!(limit.take(key(), t0).is_ok());
        assert!(limit.take(key(), t0).is_ok());
        assert_eq!(limit.take(key(), t0), Err(Duration::from_millis(500)));
        // An hour later the bucket holds the burst, not 7,200 tokens.
        let later = t0 + Duration::from_secs(3600);
        assert!(limit.take(key(), later).is_ok());
        assert!(limit.take(key(), later).is_ok());
        assert!(limit.take(key(), later).is_err());

        for i in 0..MAX_IDLE_BUCKETS {
            let _ = limit.take(CallerKey::User(format!("u{i}")), t0);
        }
        let _ = limit.take(CallerKey::User("newcomer".into()), later);
        assert!(limit.buckets.lock().unwrap().len() < 10, "idle buckets were dropped");
        let off = rate_limit(0.0, 1).0;
        assert_eq!(off.per_second, 0.0);
    }

    #[tokio::test]
    async fn undecodable_bodies_are_invalid_argument_and_other_internals_stay() {
        let answer = |status: Status| {
            tower::util::BoxCloneService::new(service_fn(move |_req: Request<()>| {
                let status = status.clone();
                async move { Ok::<_, std::convert::Infallible>(status.into_http::<()>()) }
            }))
        };
        let decode = Status::internal("failed to decode Protobuf message: invalid varint");
        let svc = invalid_bodies().layer(answer(decode));
        assert_eq!(grpc_status(&svc.oneshot(Request::new(())).await.unwrap()), Some("3"));
        let svc = invalid_bodies().layer(answer(Status::internal("internal error")));
        assert_eq!(grpc_status(&svc.oneshot(Request::new(())).await.unwrap()), Some("13"));
        // Over the size limit: RESOURCE_EXHAUSTED, as gRPC has it; other OUT_OF_RANGE stays.
        let large = Status::out_of_range(
            "Error, decoded message length too large: found 5242880 bytes, the limit is: 4194304 bytes",
        );
        let svc = invalid_bodies().layer(answer(large));
        assert_eq!(grpc_status(&svc.oneshot(Request::new(())).await.unwrap()), Some("8"));
        let svc = invalid_bodies().layer(answer(Status::out_of_range("page past the end")));
        assert_eq!(grpc_status(&svc.oneshot(Request::new(())).await.unwrap()), Some("11"));
        // Other answers pass as they are, message and all.
        let svc =
            invalid_bodies().layer(answer(Status::resource_exhausted("failed to decode Protobuf message")));
        let passed = svc.oneshot(Request::new(())).await.unwrap();
        assert_eq!(grpc_status(&passed), Some("8"));
        let status = Status::from_header_map(passed.headers()).unwrap();
        assert_eq!(status.message(), "failed to decode Protobuf message");
    }

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
