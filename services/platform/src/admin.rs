//! The admin HTTP server, on a port of its own so that it is never exposed with the gRPC one:
//! `GET /metrics` (the Prometheus text format, see [`crate::metrics`]), `/livez` (200 while
//! the process serves) and `/readyz` (200 only while health reports SERVING — dependencies
//! answer and migrations are applied — and 503 before that and from the start of shutdown):
//! the HTTP twins of the gRPC health probes, for scrapers and probes that speak only HTTP/1.1.

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use http::{Method, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, sync::watch, task::JoinSet};

use crate::metrics;

/// What `/readyz` answers from: the server's health and whether shutdown began.
#[derive(Clone, Debug)]
pub struct Probes {
    serving: watch::Receiver<bool>,
    stopping: watch::Receiver<bool>,
}

impl Probes {
    /// `serving` is true while health reports SERVING; `stopping` turns true when shutdown
    /// begins.
    pub fn new(serving: watch::Receiver<bool>, stopping: watch::Receiver<bool>) -> Self {
        Self { serving, stopping }
    }

    pub fn ready(&self) -> bool {
        *self.serving.borrow() && !*self.stopping.borrow()
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<String> {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// The answer to one request.
pub fn answer(probes: &Probes, method: &Method, path: &str) -> Response<String> {
    if method != Method::GET && method != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        response.headers_mut().insert(header::ALLOW, http::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/livez" => text(StatusCode::OK, "ok\n"),
        "/readyz" if probes.ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" if *probes.stopping.borrow() => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        "/metrics" => match metrics::render_prometheus() {
            Ok(body) => {
                let mut response = text(StatusCode::OK, body);
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    http::HeaderValue::from_static(metrics::prometheus::CONTENT_TYPE),
                );
                response
            }
            Err(err) => {
                tracing::warn!(error = %err, "metrics not collected");
                text(StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n"))
            }
        },
        _ => text(StatusCode::NOT_FOUND, "not found: /metrics, /livez and /readyz are served\n"),
    }
}

/// The admin listener, bound before serving so that port 0 can be resolved.
pub struct AdminServer {
    listener: TcpListener,
    addr: SocketAddr,
}

impl AdminServer {
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        Ok(Self { listener, addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves HTTP/1.1 until the future is dropped; its connections end with it.
    pub async fn serve(self, probes: Probes) {
        tracing::info!(addr = %self.addr, "admin HTTP serving /metrics, /livez, /readyz");
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let probes = probes.clone();
                        connections.spawn(async move {
                            let service = hyper::service::service_fn(move |request: http::Request<_>| {
                                let response = answer(&probes, request.method(), request.uri().path());
                                async move { Ok::<_, Infallible>(response) }
                            });
                            let served = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                            if let Err(err) = served {
                                tracing::debug!(error = %err, "admin connection ended");
                            }
                        });
                    }
                    Err(err) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %err, "admin accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probes(serving: bool, stopping: bool) -> Probes {
        Probes::new(watch::channel(serving).1, watch::channel(stopping).1)
    }

    #[test]
    fn readiness_needs_serving_and_no_shutdown() {
        let status = |p: &Probes| answer(p, &Method::GET, "/readyz").status();
        assert_eq!(status(&probes(false, false)), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status(&probes(true, false)), StatusCode::OK);
        assert_eq!(status(&probes(true, true)), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer(&probes(false, true), &Method::GET, "/livez").status(), StatusCode::OK);
    }

    #[test]
    fn other_paths_and_methods_are_refused() {
        let p = probes(true, false);
        assert_eq!(answer(&p, &Method::GET, "/").status(), StatusCode::NOT_FOUND);
        assert_eq!(answer(&p, &Method::POST, "/livez").status(), StatusCode::METHOD_NOT_ALLOWED);
        let metrics = answer(&p, &Method::GET, "/metrics");
        assert_eq!(metrics.status(), StatusCode::OK);
        assert_eq!(metrics.headers()[header::CONTENT_TYPE], metrics::prometheus::CONTENT_TYPE);
    }
}
