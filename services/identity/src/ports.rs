//! What identity needs from outside, behind traits: DNS TXT lookups, outgoing email, and the
//! rewards ledger (commissions) for team deletion. Real implementations here; tests use fakes.

use std::sync::Mutex;

use async_trait::async_trait;

/// Looks up TXT records.
#[async_trait]
pub trait TxtResolver: Send + Sync + 'static {
    /// The TXT strings at `name`; empty when there are none.
    async fn txt(&self, name: &str) -> anyhow::Result<Vec<String>>;
}

/// The system's DNS resolver.
pub struct DnsResolver {
    inner: hickory_resolver::TokioResolver,
}

impl DnsResolver {
    pub fn from_system() -> anyhow::Result<Self> {
        Ok(Self { inner: hickory_resolver::TokioResolver::builder_tokio()?.build() })
    }
}

#[async_trait]
impl TxtResolver for DnsResolver {
    async fn txt(&self, name: &str) -> anyhow::Result<Vec<String>> {
        match self.inner.txt_lookup(name).await {
            Ok(lookup) => Ok(lookup
                .iter()
                .map(|txt| {
                    txt.txt_data().iter().map(|part| String::from_utf8_lossy(part).into_owned()).collect()
                })
                .collect()),
            Err(err) if err.is_no_records_found() => Ok(Vec::new()),
            Err(err) => Err(err.into()),
        }
    }
}

/// A fixed set of TXT records, for tests and demos.
#[derive(Default)]
pub struct StaticTxt {
    records: Mutex<Vec<(String, String)>>,
}

impl StaticTxt {
    pub fn publish(&self, name: &str, value: &str) {
        self.records.lock().expect("txt records").push((name.to_owned(), value.to_owned()));
    }
}

#[async_trait]
impl TxtResolver for StaticTxt {
    async fn txt(&self, name: &str) -> anyhow::Result<Vec<String>> {
        Ok(self
            .records
            .lock()
            .expect("txt records")
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect())
    }
}

/// One outgoing email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    pub to: String,
    pub subject: String,
    pub body: String,
}

#[async_trait]
pub trait Mailer: Send + Sync + 'static {
    async fn send(&self, email: Email) -> anyhow::Result<()>;
}

/// Without an SMTP relay: logs that an email would go out, never its body (it holds tokens).
pub struct LogMailer;

#[async_trait]
impl Mailer for LogMailer {
    async fn send(&self, email: Email) -> anyhow::Result<()> {
        tracing::info!(subject = %email.subject, "email not sent: no SMTP relay configured");
        Ok(())
    }
}

/// Keeps every email, for tests and the demo.
#[derive(Default)]
pub struct RecordingMailer {
    sent: Mutex<Vec<Email>>,
}

impl RecordingMailer {
    pub fn sent(&self) -> Vec<Email> {
        self.sent.lock().expect("mailbox").clone()
    }
}

#[async_trait]
impl Mailer for RecordingMailer {
    async fn send(&self, email: Email) -> anyhow::Result<()> {
        self.sent.lock().expect("mailbox").push(email);
        Ok(())
    }
}

/// The rewards ledger, asked before a team is deleted.
#[async_trait]
pub trait RewardsLedger: Send + Sync + 'static {
    /// Whether the team holds rewards (pending, available, or a balance to settle).
    async fn team_holds_rewards(&self, team_id: &str) -> anyhow::Result<bool>;
}

/// A suite without a commissions service: no team can hold rewards.
pub struct NoRewardsLedger;

#[async_trait]
impl RewardsLedger for NoRewardsLedger {
    async fn team_holds_rewards(&self, _team_id: &str) -> anyhow::Result<bool> {
        Ok(false)
    }
}
