//! The connections the gRPC server accepts, and how their bytes are written.
//!
//! h2 writes a DATA frame of 256 bytes or more as a separate slice when the socket takes
//! vectored writes, and then holds every later frame until that slice is written. A unary
//! response is HEADERS, one DATA frame and the trailers, so any answer of 256 bytes or more
//! would leave in two writes (HEADERS and DATA, then the trailers): two system calls here,
//! and two wake-ups and reads in the caller, for every RPC. Told that the socket does not take
//! vectored writes, h2 copies frames of up to 1 KiB into its buffer, and the whole answer
//! leaves in one write; larger messages are still written from their own buffer, not copied.
//!
//! Each RPC runs as a task of its own, and its answer wakes the connection's task to write it.
//! tokio's multi-threaded scheduler runs a task woken by a worker's running task next, ahead
//! of that worker's queue (its LIFO slot), so the connection wrote each answer before the
//! streams already due had run: one `send`, and one wake-up and read in the caller, for nearly
//! every answer under load. The first write after a flush therefore yields once: the
//! connection's task wakes itself and goes to the back of the queue, the streams ahead of it
//! queue their answers, and the next poll writes them together. An idle server pays one more
//! poll of the connection's task a write.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use futures::{Stream, TryStreamExt};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};

/// An accepted connection, with TCP_NODELAY set.
///
/// TCP_NODELAY on every accepted connection (tonic ignores its own setting for an incoming
/// stream): without it a response written in several frames waits for the client's delayed
/// ACK, about 40 ms a call for a client that waits on each answer.
pub(crate) fn incoming(listener: TcpListener) -> impl Stream<Item = io::Result<Accepted<TcpStream>>> {
    TcpIncoming::from(listener).with_nodelay(Some(true)).map_ok(Accepted::new)
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

impl Connected for Accepted<TcpStream> {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.io.connect_info()
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
    use tonic::transport::{Endpoint, Server};

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

    impl Connected for Counted {
        type ConnectInfo = ();
        fn connect_info(&self) {}
    }

    impl Connected for Accepted<Counted> {
        type ConnectInfo = ();
        fn connect_info(&self) {}
    }

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

    /// The server's writes for the second of two calls answered with `len` bytes, over a
    /// connection wrapped by `wrap`.
    async fn writes_for_one_call<IO>(len: usize, wrap: impl FnOnce(Counted) -> IO) -> usize
    where
        IO: Connected + AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        writes_for_calls(len, 1, wrap).await
    }

    /// The server's writes for `calls` calls made at once, each answered with `len` bytes, after
    /// a first call that settles the connection; over a connection wrapped by `wrap`.
    async fn writes_for_calls<IO>(len: usize, calls: usize, wrap: impl FnOnce(Counted) -> IO) -> usize
    where
        IO: Connected + AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (client_end, server_end) = tokio::io::duplex(1 << 20);
        let writes = Arc::new(AtomicUsize::new(0));
        let io = wrap(Counted(server_end, writes.clone()));
        tokio::spawn(
            Server::builder()
                .add_service(RenewalServiceServer::new(Sized(len)))
                .serve_with_incoming(futures::stream::iter([Ok::<_, io::Error>(io)])),
        );
        let mut client_end = Some(client_end);
        let channel = Endpoint::from_static("http://in-memory")
            .connect_with_connector(tower::service_fn(move |_| {
                let io = client_end.take().expect("one connection");
                async move { Ok::<_, io::Error>(TokioIo::new(io)) }
            }))
            .await
            .expect("connect");
        let client = RenewalServiceClient::new(channel);
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
}
