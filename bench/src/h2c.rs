//! The load generator's HTTP/2 transport for its tonic clients: the `h2` crate on a TCP
//! connection of the event loop's own, without `Channel`'s buffer task and hyper's dispatch.
//!
//! A request's HEADERS and DATA are queued together from the caller's task, so they leave in
//! the connection's next write, together with whatever else the loop queued in the same turn.
//! Through `Channel`, hyper sends a body from a task of its own once the connection has given
//! the new stream send capacity, which it does only after the HEADERS went out: in a closed
//! loop each request left in writes of its own for HEADERS and DATA, and the server woke and
//! read for each.

use std::{
    future::{Future, poll_fn},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use h2::{RecvStream, client::SendRequest};
use http::uri::{Authority, Scheme, Uri};
use http_body::{Body, Frame};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
    sync::OnceCell,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One HTTP/2 connection to `authority`, made on first use on the runtime of that use; clones
/// share it. Unlike `Channel`, it does not connect again once the connection has failed: the
/// bench's services do not restart within a run, and the failed calls are counted by code.
#[derive(Clone)]
pub struct H2Channel {
    authority: Authority,
    connection: Arc<OnceCell<SendRequest<Bytes>>>,
}

impl H2Channel {
    /// A connection to `authority` (`host:port`), made when the first request is sent.
    pub fn lazy(authority: &str) -> Result<Self, http::Error> {
        Ok(Self { authority: authority.parse()?, connection: Arc::new(OnceCell::new()) })
    }

    /// Whether `other` sends over the same connection as this one.
    #[cfg(test)]
    pub fn shares_connection_with(&self, other: &H2Channel) -> bool {
        Arc::ptr_eq(&self.connection, &other.connection)
    }

    async fn sender(&self) -> Result<SendRequest<Bytes>, BoxError> {
        let send = self
            .connection
            .get_or_try_init(|| async {
                let tcp = TcpStream::connect(self.authority.as_str()).await.map_err(|e| {
                    tonic::Status::unavailable(format!("connecting to {}: {e}", self.authority))
                })?;
                tcp.set_nodelay(true)?;
                start(tcp).await
            })
            .await?;
        Ok(send.clone())
    }

    /// A channel over `io`, already connected.
    #[cfg(test)]
    async fn over<IO>(io: IO, authority: &str) -> Result<Self, BoxError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let connection = Arc::new(OnceCell::new_with(Some(start(io).await?)));
        Ok(Self { authority: authority.parse()?, connection })
    }

    async fn send(
        self,
        request: http::Request<tonic::body::Body>,
    ) -> Result<http::Response<ResponseBody>, BoxError> {
        let (mut parts, mut body) = request.into_parts();
        // A unary call's message is encoded when first polled: one frame, ready at once, sent
        // as it is; only a body of several frames is copied into one.
        let mut data = Bytes::new();
        while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            if let Ok(chunk) = frame?.into_data() {
                data = if data.is_empty() { chunk } else { [&data[..], &chunk[..]].concat().into() };
            }
        }
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(self.authority.clone());
        parts.uri = Uri::from_parts(uri)?;
        let send = self
            .sender()
            .await?
            .ready()
            .await?
            .send_request(http::Request::from_parts(parts, ()), data.is_empty());
        let (response, mut stream) = send?;
        if !data.is_empty() {
            // Queued behind the HEADERS without waiting for send capacity: h2 buffers it and
            // writes it in the same turn of the connection that opens the stream.
            stream.send_data(data, true)?;
        }
        Ok(response.await?.map(|recv| ResponseBody { recv, data_done: false, done: false }))
    }
}

/// HTTP/2 over `io`: the handle that sends requests; the connection's frames are read and
/// written by a task on the runtime this runs on.
async fn start<IO>(io: IO) -> Result<SendRequest<Bytes>, BoxError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, connection) = h2::client::handshake(io).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(send)
}

impl tower::Service<http::Request<tonic::body::Body>> for H2Channel {
    type Response = http::Response<ResponseBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each call waits for the connection's stream limit itself.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.clone().send(request))
    }
}

/// An answer's body: its DATA frames, their flow-control window handed back as read, then its
/// trailers.
pub struct ResponseBody {
    recv: RecvStream,
    data_done: bool,
    done: bool,
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => self.data_done = true,
            }
        }
        let trailers = ready!(self.recv.poll_trailers(cx));
        self.done = true;
        Poll::Ready(trailers.transpose().map(|t| t.map(Frame::trailers)))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };

    use super::*;

    /// A health server on a free port; its address.
    async fn health_server() -> String {
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter.set_service_status("ready", tonic_health::ServingStatus::Serving).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        addr
    }

    #[tokio::test]
    async fn unary_calls_are_answered_and_refusals_keep_their_code() {
        let channel = H2Channel::lazy(&health_server().await).unwrap();
        let mut client = HealthClient::new(channel.clone());
        let answer = client.check(HealthCheckRequest { service: "ready".into() }).await.unwrap();
        assert_eq!(answer.into_inner().status(), ServingStatus::Serving);
        // A trailers-only answer (no body) carries its status in the headers.
        let refused = client.check(HealthCheckRequest { service: "unknown".into() }).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::NotFound);
        // Many calls at once share the one connection, each getting its own answer.
        let calls = (0..200).map(|i| {
            let mut client = HealthClient::new(channel.clone());
            let service = if i % 2 == 0 { "ready" } else { "unknown" };
            async move {
                client.check(HealthCheckRequest { service: service.into() }).await.map(|r| r.into_inner())
            }
        });
        let answers = futures::future::join_all(calls).await;
        for (i, answer) in answers.into_iter().enumerate() {
            match answer {
                Ok(a) => assert!(i % 2 == 0 && a.status() == ServingStatus::Serving, "call {i}: {a:?}"),
                Err(e) => assert!(i % 2 == 1 && e.code() == tonic::Code::NotFound, "call {i}: {e:?}"),
            }
        }
    }

    /// A socket that counts the writes that sent something.
    struct CountingWrites {
        inner: TcpStream,
        writes: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl CountingWrites {
        fn counted(&self, result: &Poll<std::io::Result<usize>>) {
            if matches!(result, Poll::Ready(Ok(n)) if *n > 0) {
                self.writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    impl AsyncRead for CountingWrites {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for CountingWrites {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let result = Pin::new(&mut self.inner).poll_write(cx, buf);
            self.counted(&result);
            result
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
            self.counted(&result);
            result
        }

        fn is_write_vectored(&self) -> bool {
            self.inner.is_write_vectored()
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    #[tokio::test]
    async fn a_request_leaves_in_one_write() {
        let addr = health_server().await;
        let writes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let socket =
            CountingWrites { inner: TcpStream::connect(&addr).await.unwrap(), writes: writes.clone() };
        let mut client = HealthClient::new(H2Channel::over(socket, &addr).await.unwrap());
        let request = || HealthCheckRequest { service: "ready".into() };
        // The first call also settles the connection (its preface and settings).
        client.check(request()).await.unwrap();
        for _ in 0..3 {
            let before = writes.load(std::sync::atomic::Ordering::Relaxed);
            client.check(request()).await.unwrap();
            let during = writes.load(std::sync::atomic::Ordering::Relaxed) - before;
            assert_eq!(during, 1, "HEADERS and DATA in one write, not {during}");
        }
    }

    #[tokio::test]
    async fn a_server_that_is_not_there_is_an_unavailable_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let mut client = HealthClient::new(H2Channel::lazy(&addr).unwrap());
        let err = client.check(HealthCheckRequest { service: String::new() }).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    }
}
