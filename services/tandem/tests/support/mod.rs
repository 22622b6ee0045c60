//! `tandem dev` started as a process for the security tests: all four services on one address,
//! a staff admin bootstrapped, its log (stderr, at debug) kept in a file to read afterwards;
//! and a client that calls any RPC by name with raw message bytes.
#![allow(dead_code)]

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use bytes::{Buf, BufMut};
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    transport::Channel,
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

pub const ADMIN_EMAIL: &str = "admin@vendor.example";
pub const ADMIN_PASSWORD: &str = "staff admin password for the security tests";

pub struct Dev {
    child: Child,
    pub addr: String,
    pub data: tempfile::TempDir,
    pub log: PathBuf,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dev {
    /// `tandem dev` on a fresh data directory with every log line at debug kept in a file.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// As [`Dev::start`], with these extra environment variables (`TANDEM_…` settings).
    pub fn start_with(env: &[(&str, &str)]) -> Self {
        let data = tempfile::tempdir().expect("data dir");
        let addr =
            format!("127.0.0.1:{}", TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
        let log = data.path().join("stderr.log");
        let child = Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args(["dev", "--listen", &addr, "--data-dir"])
            .arg(data.path().join("state"))
            .env("RUST_LOG", "debug")
            .env("TANDEM_ADMIN_EMAIL", ADMIN_EMAIL)
            .env("TANDEM_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env_remove("TANDEM_RATE_LIMIT_PER_SECOND")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start tandem dev");
        Self { child, addr, data, log }
    }

    /// Waits for SERVING and returns a channel.
    pub async fn channel(&self) -> Channel {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(channel) =
                Channel::from_shared(format!("http://{}", self.addr)).unwrap().connect().await
            {
                let mut health = HealthClient::new(channel.clone());
                let all = health.check(HealthCheckRequest { service: String::new() }).await;
                if all.is_ok_and(|r| r.get_ref().status() == ServingStatus::Serving) {
                    return channel;
                }
            }
            assert!(Instant::now() < deadline, "tandem dev did not report SERVING");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Everything the process logged, once it has stopped as Kubernetes stops it (SIGTERM):
    /// its last lines leave when it stops, not when they were logged. Async, so that the
    /// test's own connections answer the server's goodbye while it waits.
    pub async fn stop_and_read_log(&mut self) -> String {
        let stopped = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        assert!(stopped.is_ok_and(|s| s.success()), "SIGTERM to tandem dev");
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait().expect("tandem dev's status").is_none() {
            assert!(Instant::now() < deadline, "tandem dev did not stop on SIGTERM");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        std::fs::read_to_string(&self.log).expect("read the log")
    }
}

/// Message bytes in, message bytes out: any RPC, by its path, with any body.
#[derive(Clone, Default)]
pub struct RawCodec;

pub struct RawEncoder;
pub struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut bytes = vec![0; src.remaining()];
        src.copy_to_slice(&mut bytes);
        Ok(Some(bytes))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// Calls `/service/method` with `body` as the message, and `token` as bearer when given.
pub async fn call_raw(
    channel: &Channel,
    path: &str,
    body: Vec<u8>,
    token: Option<&str>,
) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(body);
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let path = tonic::codegen::http::uri::PathAndQuery::try_from(path.to_owned()).expect("rpc path");
    grpc.unary(request, path, RawCodec).await.map(tonic::Response::into_inner)
}

pub fn authed<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}
