//! The connections the gRPC server accepts: how they are served, and how their bytes are
//! written.
//!
//! hyper runs each request of an HTTP/2 connection as a task of its own, handed to the
//! executor it is given. [`InlineFirst`] keeps the requests hyper hands over during one turn
//! of the connection (one poll, which reads every frame that has arrived), and at the end of
//! the turn polls each once on the connection's own task, spawning only those that have to
//! wait. A request answered at once, above all a refusal of the shed layer under overload, is
//! then answered without a task of its own: no spawn, no scheduling, and no second worker
//! woken to run a few microseconds of work; its answer leaves with the turn's others in the
//! connection's next write. Polled at the end of the turn rather than when hyper hands it
//! over, a request finds its message already read (its DATA frame follows its HEADERS), so
//! a unary call that needs nothing else is answered whole. A request that waits (for the
//! database, for another service) goes on as a task, as before, having done its first steps
//! (decoding, authentication from cache) on the connection's task. Those first steps of one
//! connection's requests thus run one after another: a client that sends everything over a
//! single connection has them on one core, the rest of each request on any.
//!
//! h2 writes a DATA frame of 256 bytes or more as a separate slice when the socket takes
//! vectored writes, and then holds every later frame until that slice is written. A unary
//! response is HEADERS, one DATA frame and the trailers, so any answer of 256 bytes or more
//! would leave in two writes (HEADERS and DATA, then the trailers): two system calls here,
//! and two wake-ups and reads in the caller, for every RPC. Told that the socket does not take
//! vectored writes, h2 copies frames of up to 1 KiB into its buffer, and the whole answer
//! leaves in one write; larger messages are still written from their own buffer, not copied.
//!
//! A spawned RPC's answer wakes the connection's task to write it. tokio's multi-threaded
//! scheduler runs a task woken by a worker's running task next, ahead of that worker's queue
//! (its LIFO slot), so the connection wrote each answer before the streams already due had
//! run: one `send`, and one wake-up and read in the caller, for nearly every answer under
//! load. The first write after a flush therefore yields once: the connection's task wakes
//! itself and goes to the back of the queue, the streams ahead of it queue their answers, and
//! the next poll writes them together. An idle server pays one more poll of the connection's
//! task a write.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::Bytes;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpListener,
    sync::watch,
    task::JoinSet,
};
use tonic::transport::server::TcpConnectInfo;
use tower::{Service, ServiceExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

type Handed = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One connection's executor: it keeps what hyper hands it until [`InlineFirst::run_handed_over`],
/// which the connection's task calls at the end of each of its turns.
#[derive(Clone, Default)]
struct InlineFirst {
    handed_over: Arc<Mutex<Vec<Handed>>>,
}

impl<F> hyper::rt::Executor<F> for InlineFirst
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, future: F) {
        self.handed_over.lock().unwrap_or_else(PoisonError::into_inner).push(Box::pin(future));
    }
}

impl InlineFirst {
    /// Polls each future handed over since the last call once, here, and spawns on the
    /// current tokio runtime those that wait.
    ///
    /// That first poll has no waker to leave behind (the task that will run the future does
    /// not exist yet), so it is given one that does nothing; the spawned task polls the future
    /// again at once, which registers the task's own waker with whatever the future waits on,
    /// as every poll that returns `Pending` must. Nothing that happens in between is lost: that
    /// second poll looks again.
    ///
    /// A future that panics in its first poll is dropped here, as tokio drops a task that
    /// panics: the panic ends that one request (its stream is reset), not the connection
    /// whose task it ran on.
    ///
    /// `running` is the caller's buffer, empty, swapped with the kept list so that neither
    /// allocates again turn after turn.
    fn run_handed_over(&self, running: &mut Vec<Handed>) {
        std::mem::swap(running, &mut *self.handed_over.lock().unwrap_or_else(PoisonError::into_inner));
        for mut future in running.drain(..) {
            let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                future.as_mut().poll(&mut Context::from_waker(Waker::noop()))
            }));
            if matches!(first, Ok(Poll::Pending)) {
                tokio::spawn(future);
            }
        }
    }
}

/// HTTP/2 as the gRPC server speaks it: keep-alive pings every `keepalive`, no limit on
/// concurrent streams but the shed layer's (as tonic's server had), no `date` header (a gRPC
/// client has no use for one), and `executor` for its requests.
fn http2(keepalive: Duration, executor: InlineFirst) -> http2::Builder<InlineFirst> {
    let mut builder = http2::Builder::new(executor);
    builder
        .timer(TokioTimer::new())
        .keep_alive_interval(keepalive)
        .max_concurrent_streams(None)
        .auto_date_header(false);
    builder
}

/// Serves `service` on every connection `listener` accepts, with TCP_NODELAY, until `stop`
/// resolves; then closes the listener, asks every connection to finish (GOAWAY: the RPCs in
/// flight complete, no new ones start) and returns once all have closed. Dropping the future
/// drops the connections.
///
/// TCP_NODELAY, because a response written in several frames would otherwise wait for the
/// client's delayed ACK, about 40 ms a call for a client that waits on each answer.
pub(crate) async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    keepalive: Duration,
    stop: impl Future<Output = ()>,
) where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let local_addr = listener.local_addr().ok();
    let (closing, closing_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, remote_addr)) => {
                    if let Err(err) = tcp.set_nodelay(true) {
                        tracing::debug!(error = %err, "setting TCP_NODELAY failed");
                    }
                    let info = TcpConnectInfo { local_addr, remote_addr: Some(remote_addr) };
                    let service = Rpc { inner: service.clone(), info };
                    connections.spawn(serve_connection(
                        Accepted::new(tcp),
                        service,
                        keepalive,
                        closing_rx.clone(),
                    ));
                }
                Err(err) if is_connection_error(&err) => {
                    tracing::debug!(error = %err, "a connection failed before it was accepted");
                }
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = closing.send(true);
    while connections.join_next().await.is_some() {}
}

fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// Serves one connection until it ends, or until `closing` turns true and the RPCs it has in
/// flight have finished.
async fn serve_connection<IO, S, B>(
    io: IO,
    service: S,
    keepalive: Duration,
    mut closing: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let executor = InlineFirst::default();
    let connection = http2(keepalive, executor.clone()).serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    // A closed channel (the server gone) is an end as good as any.
    let closed = closing.wait_for(|closing| *closing);
    tokio::pin!(closed);
    let mut shutting_down = false;
    let mut running = Vec::new();
    let ended = std::future::poll_fn(|cx| {
        if !shutting_down && closed.as_mut().poll(cx).is_ready() {
            shutting_down = true;
            connection.as_mut().graceful_shutdown();
        }
        let turn = connection.as_mut().poll(cx);
        // The answers these queue wake this task, whose next turn writes them.
        executor.run_handed_over(&mut running);
        turn
    })
    .await;
    if let Err(err) = ended {
        tracing::debug!(error = %err, "connection ended with an error");
    }
}

/// The gRPC service as hyper calls it on one connection: each request's body as tonic's, and
/// the connection's addresses in its extensions (the rate limit keys anonymous callers by
/// theirs).
#[derive(Clone)]
struct Rpc<S> {
    inner: S,
    info: TcpConnectInfo,
}

impl<S> hyper::service::Service<http::Request<hyper::body::Incoming>> for Rpc<S>
where
    S: Service<http::Request<tonic::body::Body>> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = tower::util::Oneshot<S, http::Request<tonic::body::Body>>;

    fn call(&self, request: http::Request<hyper::body::Incoming>) -> Self::Future {
        let mut request = request.map(tonic::body::Body::new);
        request.extensions_mut().insert(self.info.clone());
        self.inner.clone().oneshot(request)
    }
}

/// A connection that offers its writer no vectored writes and yields before the first write
/// after each flush (see the module's notes).
pub(crate) struct Accepted<T> {
    io: T,
    /// Whether the next write yields first; set again by each completed flush.
    yield_first: bool,
}

impl<T> Accepted<T> {
    pub(crate) fn new(io: T) -> Self {
        Self { io, yield_first: true }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Accepted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Accepted<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if std::mem::replace(&mut self.yield_first, false) {
            // Woken at once, and polled again after the tasks already queued.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.io).poll_flush(cx);
        if flushed.is_ready() {
            self.yield_first = true;
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    // `is_write_vectored` keeps its default, false: that is the point of this type.
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use hyper_util::rt::TokioIo;
    use tandem_proto::commissions::v1::{
        ListRenewalsRequest, ListRenewalsResponse,
        renewal_service_client::RenewalServiceClient,
        renewal_service_server::{RenewalService, RenewalServiceServer},
    };
    use tokio::io::DuplexStream;
    use tonic::{
        service::Routes,
        transport::{Channel, Endpoint},
    };

    use super::*;

    /// Answers with a page token of `len` bytes: a response of about that size.
    struct Sized(usize);

    #[tonic::async_trait]
    impl RenewalService for Sized {
        async fn list_renewals(
            &self,
            _: tonic::Request<ListRenewalsRequest>,
        ) -> Result<tonic::Response<ListRenewalsResponse>, tonic::Status> {
            Ok(tonic::Response::new(ListRenewalsResponse {
                next_page_token: "t".repeat(self.0),
                ..Default::default()
            }))
        }
    }

    /// The server's end of an in-memory connection, counting its writes, and taking vectored
    /// writes as a TCP socket does.
    struct Counted(DuplexStream, Arc<AtomicUsize>);

    impl AsyncRead for Counted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Counted {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            let polled = Pin::new(&mut self.0).poll_write(cx, buf);
            if polled.is_ready() {
                self.1.fetch_add(1, Ordering::SeqCst);
            }
            polled
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            // One write of all the slices, as writev would make.
            let joined: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            self.poll_write(cx, &joined)
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }

    /// A client channel over `io`, a connection already made.
    async fn channel_over<IO>(io: IO) -> Channel
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut io = Some(io);
        Endpoint::from_static("http://connected")
            .connect_with_connector(tower::service_fn(move |_| {
                let io = io.take().expect("one connection");
                async move { Ok::<_, io::Error>(TokioIo::new(io)) }
            }))
            .await
            .expect("connect")
    }

    /// The server's writes for the second of two calls answered with `len` bytes, over a
    /// connection wrapped by `wrap`.
    async fn writes_for_one_call<IO>(len: usize, wrap: impl FnOnce(Counted) -> IO) -> usize
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        writes_for_calls(len, 1, wrap).await
    }

    /// The server's writes for `calls` calls made at once, each answered with `len` bytes, after
    /// a first call that settles the connection; over a connection wrapped by `wrap`.
    async fn writes_for_calls<IO>(len: usize, calls: usize, wrap: impl FnOnce(Counted) -> IO) -> usize
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (client_end, server_end) = tokio::io::duplex(1 << 20);
        let writes = Arc::new(AtomicUsize::new(0));
        let io = wrap(Counted(server_end, writes.clone()));
        let service = Rpc {
            inner: Routes::new(RenewalServiceServer::new(Sized(len))).prepare(),
            info: TcpConnectInfo { local_addr: None, remote_addr: None },
        };
        let (_closing, closing_rx) = watch::channel(false);
        tokio::spawn(serve_connection(io, service, Duration::from_secs(30), closing_rx));
        let client = RenewalServiceClient::new(channel_over(client_end).await);
        let call = || ListRenewalsRequest { team_id: "t".into(), ..Default::default() };
        // The first call also settles the connection (SETTINGS and their acknowledgements).
        client.clone().list_renewals(call()).await.expect("first call");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let before = writes.load(Ordering::SeqCst);
        let answers = futures::future::join_all((0..calls).map(|_| {
            let mut client = client.clone();
            async move { client.list_renewals(call()).await }
        }))
        .await;
        for answer in answers {
            assert_eq!(answer.expect("a call").into_inner().next_page_token.len(), len);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        writes.load(Ordering::SeqCst) - before
    }

    #[tokio::test]
    async fn a_unary_answer_under_a_kibibyte_leaves_in_one_write() {
        for len in [10, 300, 900] {
            assert_eq!(writes_for_one_call(len, Accepted::new).await, 1, "{len} bytes");
        }
        // What the wrapper prevents: the same answer over a socket that takes vectored writes.
        assert_eq!(writes_for_one_call(300, |io| io).await, 2);
        // A larger message is written from its own buffer, not copied, and arrives whole.
        assert!(writes_for_one_call(64 * 1024, Accepted::new).await > 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_due_together_leave_together() {
        // Each answer's stream wakes the connection's task, which the scheduler runs next: without
        // the yield, nearly every answer went out in a write of its own.
        let writes = writes_for_calls(10, 64, Accepted::new).await;
        assert!(writes <= 16, "{writes} writes for 64 answers");
    }

    #[tokio::test]
    async fn a_future_ready_at_once_runs_at_the_end_of_the_turn_where_it_was_handed_over() {
        use hyper::rt::Executor;
        // On a single-threaded runtime a spawned task cannot have run before the next await.
        let executor = InlineFirst::default();
        let ran = Arc::new(AtomicUsize::new(0));
        let counted = ran.clone();
        executor.execute(async move {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(ran.load(Ordering::SeqCst), 0, "kept until the turn ends");
        executor.run_handed_over(&mut Vec::new());
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        executor.run_handed_over(&mut Vec::new());
        assert_eq!(ran.load(Ordering::SeqCst), 1, "polled once");
    }

    #[tokio::test]
    async fn a_future_that_panics_at_once_is_dropped_without_taking_the_caller_with_it() {
        use hyper::rt::Executor;
        let dropped = Arc::new(AtomicUsize::new(0));
        struct CountsDrop(Arc<AtomicUsize>);
        impl Drop for CountsDrop {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let guard = CountsDrop(dropped.clone());
        let executor = InlineFirst::default();
        executor.execute(async move {
            let _guard = guard;
            panic!("a handler's bug");
        });
        executor.run_handed_over(&mut Vec::new());
        assert_eq!(dropped.load(Ordering::SeqCst), 1, "the future is dropped");
    }

    #[tokio::test]
    async fn a_future_that_waits_goes_on_as_a_task_and_misses_no_wake_up() {
        use hyper::rt::Executor;
        let executor = InlineFirst::default();
        let wait = |rx: tokio::sync::oneshot::Receiver<u32>| {
            let (done, finished) = tokio::sync::oneshot::channel();
            executor.execute(async move {
                let _ = done.send(rx.await.expect("a value"));
            });
            executor.run_handed_over(&mut Vec::new());
            finished
        };
        // Sent before the task's first poll: only the no-op waker of the inline poll saw the wait.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let finished = wait(rx);
        tx.send(1).unwrap();
        assert_eq!(tokio::time::timeout(Duration::from_secs(5), finished).await.unwrap().unwrap(), 1);
        // Sent once the task is waiting with its own waker.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let finished = wait(rx);
        tokio::task::yield_now().await;
        tx.send(2).unwrap();
        assert_eq!(tokio::time::timeout(Duration::from_secs(5), finished).await.unwrap().unwrap(), 2);
    }

    /// Answers after its delay, with the caller's address as the server saw it as the page token.
    struct Slow(Duration);

    #[tonic::async_trait]
    impl RenewalService for Slow {
        async fn list_renewals(
            &self,
            request: tonic::Request<ListRenewalsRequest>,
        ) -> Result<tonic::Response<ListRenewalsResponse>, tonic::Status> {
            tokio::time::sleep(self.0).await;
            let peer = request.remote_addr().map(|a| a.to_string()).unwrap_or_default();
            Ok(tonic::Response::new(ListRenewalsResponse { next_page_token: peer, ..Default::default() }))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stopping_finishes_the_calls_in_flight_and_takes_no_new_connections() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let routes = Routes::new(RenewalServiceServer::new(Slow(Duration::from_millis(300)))).prepare();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(serve(listener, routes, Duration::from_secs(30), async {
            let _ = stopped.await;
        }));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let client_addr = tcp.local_addr().unwrap();
        let channel = channel_over(tcp).await;
        let call = tokio::spawn(async move {
            RenewalServiceClient::new(channel).list_renewals(ListRenewalsRequest::default()).await
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.send(()).unwrap();
        // The call in flight is answered, with the address the connection came from.
        let answer = call.await.unwrap().expect("the call in flight is answered");
        assert_eq!(answer.into_inner().next_page_token, client_addr.to_string());
        // The server returns once its last connection has closed, and the port takes no more.
        tokio::time::timeout(Duration::from_secs(5), serving).await.expect("serve returns").unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the listener is closed");
    }
}
