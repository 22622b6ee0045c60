//! Tandem as it runs in production, on one machine: the four service binaries as separate
//! processes on free ports, each on its own PostgreSQL database, joined by a Redis of their
//! own (so a test may stop and start it) and by gRPC. Used by the system tests in `tests/`
//! and by the benchmark.
//!
//! Needs `TANDEM_TEST_POSTGRES_URL` (an admin connection; `TANDEM_REQUIRE_POSTGRES=1` makes
//! its absence fail) and `redis-server` on the `PATH`.

use std::{
    fs::File,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use ed25519_dalek::pkcs8::{EncodePrivateKey, spki::der::pem::LineEnding};
use tandem_platform::testing::TestDb;
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// The four services, in the order they start.
pub const SERVICES: [&str; 4] = ["identity", "commissions", "tiers", "deals"];

pub const ADMIN_EMAIL: &str = "admin@vendor.example";
pub const ADMIN_PASSWORD: &str = "system-test-admin-password";

/// Where the service binaries are, built on demand.
pub struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// Builds the service binaries with the cargo that runs this test (a no-op when they are
    /// up to date), in release mode or not.
    pub fn build(release: bool) -> anyhow::Result<Self> {
        let root = workspace_root();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(&root).args(["build", "--locked", "--bins"]);
        for service in SERVICES {
            cmd.args(["-p", &format!("tandem-{service}")]);
        }
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().context("running cargo build")?;
        if !status.success() {
            bail!("cargo build of the service binaries failed: {status}");
        }
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
        Ok(Self { dir: target.join(if release { "release" } else { "debug" }) })
    }

    pub fn path(&self, service: &str) -> PathBuf {
        self.dir.join(format!("tandem-{service}"))
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_owned()
}

/// `message` with `authorization: Bearer <token>`.
pub fn authed<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("a token"));
    request
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// A Redis server of this test, persisting to an append-only file as production's must, so
/// that a restart keeps the streams and consumer groups.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        let mut redis = Self { port: free_port(), dir: dir.join("redis"), child: None };
        std::fs::create_dir_all(&redis.dir)?;
        redis.restart()?;
        Ok(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it again on the same port and data.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let log = File::create(self.dir.join("redis.log"))?;
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting redis-server (is it on the PATH?)")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers() {
            if Instant::now() > deadline {
                bail!("redis-server did not answer on port {}", self.port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn answers(&self) -> bool {
        let Ok(mut conn) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let mut reply = [0u8; 7];
        conn.set_read_timeout(Some(Duration::from_secs(1))).is_ok()
            && conn.write_all(b"PING\r\n").is_ok()
            && conn.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    /// Shuts it down (SIGTERM: the append-only file is complete) and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, "TERM");
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn signal(child: &Child, signal: &str) {
    let _ = Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status();
}

/// One service binary, its environment and its log.
pub struct Service {
    pub name: &'static str,
    pub addr: SocketAddr,
    binary: PathBuf,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Service {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A channel to it that connects on its first request: made on a tokio runtime, its
    /// connection's tasks run there.
    pub fn channel(&self) -> Channel {
        Channel::from_shared(self.url()).expect("url").connect_lazy()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the process, its output appended to its log.
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        let log = File::options().create(true).append(true).open(&self.log)?;
        let child = Command::new(&self.binary)
            .arg("serve")
            .env_clear()
            .envs(std::env::vars().filter(|(k, _)| k == "PATH" || k == "HOSTNAME"))
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until it answers SERVING (migrated and ready).
    pub async fn wait_serving(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("{} exited with {status}; its log:\n{}", self.name, tail(&self.log, 40));
            }
            let mut health = HealthClient::new(self.channel());
            if let Ok(r) = health.check(HealthCheckRequest { service: String::new() }).await
                && r.into_inner().status == ServingStatus::Serving as i32
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} never became ready; its log:\n{}", self.name, tail(&self.log, 40));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: no drain, no goodbye, as when a node dies.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and waits for the process to drain and exit.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        signal(&child, "TERM");
        child.wait().ok()
    }

    /// Starts it again, on the same port and database, and waits until it serves.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()?;
        self.wait_serving().await
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// How to start the cluster.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Release binaries (the benchmark) or debug ones (tests).
    pub release: bool,
    /// An OTLP/gRPC collector every service sends its traces to.
    pub otlp_endpoint: Option<String>,
    /// More environment for every service.
    pub env: Vec<(String, String)>,
    /// The PostgreSQL server to create the databases on (an admin URL); by default
    /// `TANDEM_TEST_POSTGRES_URL`'s.
    pub postgres_admin_url: Option<String>,
}

/// The four services on PostgreSQL and Redis.
pub struct Cluster {
    pub identity: Service,
    pub commissions: Service,
    pub tiers: Service,
    pub deals: Service,
    pub redis: RedisServer,
    _databases: Vec<TestDb>,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Builds the binaries and starts everything; `None` when no PostgreSQL is configured
    /// (and none is required).
    pub async fn start(options: Options) -> anyhow::Result<Option<Self>> {
        let mut databases = Vec::new();
        for _ in SERVICES {
            let db = match &options.postgres_admin_url {
                Some(admin) => TestDb::postgres_at(admin, true).await,
                None => TestDb::postgres().await,
            };
            match db {
                Some(db) => databases.push(db),
                None => return Ok(None),
            }
        }
        let binaries = Binaries::build(options.release)?;
        let dir = tempfile::tempdir()?;
        let redis = RedisServer::start(dir.path())?;
        let key_file = dir.path().join("signing-key.pem");
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        std::fs::write(&key_file, key.to_pkcs8_pem(LineEnding::LF)?.as_bytes())?;

        let addrs: Vec<SocketAddr> =
            SERVICES.iter().map(|_| SocketAddr::from(([127, 0, 0, 1], free_port()))).collect();
        let url = |service: &str| {
            let i = SERVICES.iter().position(|s| *s == service).expect("a service");
            format!("http://{}", addrs[i])
        };
        let mut services = Vec::new();
        for (i, name) in SERVICES.into_iter().enumerate() {
            let mut env: Vec<(String, String)> = vec![
                ("TANDEM_LISTEN".into(), addrs[i].to_string()),
                ("DATABASE_URL".into(), databases[i].url.clone()),
                ("REDIS_URL".into(), redis.url()),
                ("TANDEM_IDENTITY_URL".into(), url("identity")),
                ("TANDEM_ADMIN_LISTEN".into(), "off".into()),
                ("TANDEM_LOG_FORMAT".into(), "json".into()),
                ("TANDEM_BUS_CLAIM_IDLE_MS".into(), "2000".into()),
                ("TANDEM_SHUTDOWN_GRACE_MS".into(), "2000".into()),
                ("HOSTNAME".into(), format!("{name}-0")),
            ];
            if name == "identity" {
                env.extend([
                    ("TANDEM_COMMISSIONS_URL".into(), url("commissions")),
                    ("TANDEM_JWT_SIGNING_KEY_FILE".into(), key_file.display().to_string()),
                    ("TANDEM_ADMIN_EMAIL".into(), ADMIN_EMAIL.into()),
                    ("TANDEM_ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into()),
                ]);
            }
            if let Some(endpoint) = &options.otlp_endpoint {
                env.push(("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint.clone()));
            }
            env.extend(options.env.iter().cloned());
            let mut service = Service {
                name,
                addr: addrs[i],
                binary: binaries.path(name),
                env,
                log: dir.path().join(format!("{name}.log")),
                child: None,
            };
            service.spawn()?;
            services.push(service);
        }
        for service in &mut services {
            service.wait_serving().await?;
        }
        let mut services = services.into_iter();
        let mut next = || services.next().expect("four services");
        Ok(Some(Self {
            identity: next(),
            commissions: next(),
            tiers: next(),
            deals: next(),
            redis,
            _databases: databases,
            dir,
        }))
    }

    /// The database of `service` (one of [`SERVICES`]), for loading data and reading it back.
    pub fn database_url(&self, service: &str) -> &str {
        let i = SERVICES.iter().position(|s| *s == service).expect("a service");
        &self._databases[i].url
    }

    /// Where the logs and Redis's data are.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last lines of every service's log, for a failing test's report.
    pub fn log_tails(&self, lines: usize) -> String {
        [&self.identity, &self.commissions, &self.tiers, &self.deals]
            .iter()
            .map(|s| format!("--- {} ---\n{}", s.name, tail(&s.log, lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A PostgreSQL server of this test (so that a test may stop it), on a free port, from the
/// machine's PostgreSQL binaries. PostgreSQL refuses to run as root: as root, it runs as the
/// `postgres` user.
pub struct PrivatePostgres {
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

impl PrivatePostgres {
    pub fn start() -> anyhow::Result<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .context("no PostgreSQL under /usr/lib/postgresql")?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .max()
            .context("no initdb under /usr/lib/postgresql/*/bin")?;
        let dir = tempfile::tempdir()?;
        if is_root() {
            let status = Command::new("chown").arg("postgres:postgres").arg(dir.path()).status()?;
            anyhow::ensure!(status.success(), "chown of the data directory failed");
        }
        let data = dir.path().join("data");
        let pg = Self { port: free_port(), bin, data, _dir: dir };
        pg.run(
            "initdb",
            &["-D", &pg.data.display().to_string(), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        )?;
        pg.start_again()?;
        Ok(pg)
    }

    fn run(&self, tool: &str, args: &[&str]) -> anyhow::Result<()> {
        let program = self.bin.join(tool);
        let mut cmd = if is_root() {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(&program);
            cmd
        } else {
            Command::new(&program)
        };
        let output = cmd.args(args).stdin(Stdio::null()).output()?;
        anyhow::ensure!(
            output.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn start_again(&self) -> anyhow::Result<()> {
        let data = self.data.display().to_string();
        let log = self.data.parent().expect("a parent").join("postgres.log").display().to_string();
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c max_connections=200",
            self.port, data
        );
        self.run("pg_ctl", &["-D", &data, "-l", &log, "-o", &options, "-w", "start"])
    }

    /// Stops the server the hard way (`immediate`: no checkpoint, clients cut off), as a crash.
    pub fn crash(&self) -> anyhow::Result<()> {
        self.run("pg_ctl", &["-D", &self.data.display().to_string(), "-m", "immediate", "-w", "stop"])
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ =
            self.run("pg_ctl", &["-D", &self.data.display().to_string(), "-m", "immediate", "-w", "stop"]);
    }
}

fn is_root() -> bool {
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOT.get_or_init(|| Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n")))
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails(30));
        }
    }
}
