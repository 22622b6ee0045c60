//! What identity needs from outside, behind traits: DNS TXT lookups, outgoing email, and the
//! rewards ledger (commissions) for team deletion. Real implementations here; tests use fakes.

use std::sync::Mutex;

use async_trait::async_trait;
use tandem_platform::{
    peers::{Peer, PeerError},
    time::{MICROS_PER_SECOND, now_micros},
};
use tandem_proto::commissions::v1::{CheckTeamRewardsRequest, reward_service_client::RewardServiceClient};

use crate::domain::secrets::SigningKeyPair;

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

/// Sends through an SMTP relay (`smtp://host:port`), as a cluster's mail relay or a local
/// MTA accepts it: plain SMTP, no authentication; the relay handles delivery.
pub struct SmtpMailer {
    from: lettre::message::Mailbox,
    transport: lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
}

impl SmtpMailer {
    pub fn new(url: &str, from: &str) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("smtp://")
            .ok_or_else(|| anyhow::anyhow!("the SMTP relay URL must be smtp://host:port"))?;
        let (host, port) = match rest.trim_end_matches('/').rsplit_once(':') {
            Some((host, port)) => (host, port.parse()?),
            None => (rest.trim_end_matches('/'), 25),
        };
        let transport =
            lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous(host).port(port).build();
        Ok(Self { from: from.parse()?, transport })
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, email: Email) -> anyhow::Result<()> {
        use lettre::AsyncTransport;
        let message = lettre::Message::builder()
            .from(self.from.clone())
            .to(email.to.parse()?)
            .subject(email.subject)
            .body(email.body)?;
        self.transport.send(message).await?;
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

/// Why the rewards ledger gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// No commissions service is configured: whether a team holds rewards cannot be known.
    #[error("no rewards ledger is configured (TANDEM_COMMISSIONS_URL)")]
    Unconfigured,
    /// Commissions did not answer; asking again later may work.
    #[error("the rewards ledger did not answer: {0}")]
    Unavailable(String),
}

/// The rewards ledger, asked before a team is deleted.
#[async_trait]
pub trait RewardsLedger: Send + Sync + 'static {
    /// Whether the team holds rewards (pending, available, or a balance to settle).
    async fn team_holds_rewards(&self, team_id: &str) -> Result<bool, LedgerError>;
}

/// Identity without a commissions service to ask. It never assumes a team holds no rewards:
/// deleting a team is refused (FAILED_PRECONDITION) until `TANDEM_COMMISSIONS_URL` is set.
pub struct NoLedger;

#[async_trait]
impl RewardsLedger for NoLedger {
    async fn team_holds_rewards(&self, _team_id: &str) -> Result<bool, LedgerError> {
        Err(LedgerError::Unconfigured)
    }
}

/// The service principal identity acts as towards other services.
pub const SERVICE_NAME: &str = "identity";

/// Identity's own tokens as the service principal `svc:identity`, signed with its key, short
/// lived, and signed again a minute before they expire.
pub struct ServiceTokens {
    key: SigningKeyPair,
    current: Mutex<Option<(String, i64)>>,
}

impl ServiceTokens {
    /// How long a service token lives, in seconds.
    pub const TTL_SECS: i64 = 300;
    const RENEW_BEFORE_SECS: i64 = 60;

    pub fn new(key: SigningKeyPair) -> Self {
        Self { key, current: Mutex::new(None) }
    }

    /// A token valid for at least another minute.
    pub fn token(&self) -> anyhow::Result<String> {
        let now = now_micros() / MICROS_PER_SECOND;
        let mut current = self.current.lock().expect("service token");
        if let Some((token, exp)) = current.as_ref()
            && now + Self::RENEW_BEFORE_SECS < *exp
        {
            return Ok(token.clone());
        }
        let token = self.key.sign_service(SERVICE_NAME, now, Self::TTL_SECS)?;
        *current = Some((token.clone(), now + Self::TTL_SECS));
        Ok(token)
    }
}

/// Commissions' `RewardService/CheckTeamRewards` at `TANDEM_COMMISSIONS_URL`, asked as the
/// service principal `svc:identity` (the RPC is for staff and identity only).
pub struct CommissionsLedger {
    peer: Peer,
    tokens: ServiceTokens,
}

impl CommissionsLedger {
    /// Connects lazily: commissions may start after identity.
    pub fn connect(url: &str, key: SigningKeyPair) -> Result<Self, PeerError> {
        Ok(Self::new(Peer::connect("commissions", url)?, key))
    }

    pub fn new(peer: Peer, key: SigningKeyPair) -> Self {
        Self { peer, tokens: ServiceTokens::new(key) }
    }
}

#[async_trait]
impl RewardsLedger for CommissionsLedger {
    async fn team_holds_rewards(&self, team_id: &str) -> Result<bool, LedgerError> {
        let token =
            self.tokens.token().map_err(|e| LedgerError::Unavailable(format!("service token: {e}")))?;
        let message = CheckTeamRewardsRequest { team_id: team_id.to_owned() };
        match self
            .peer
            .call(Some(&token), message, |channel, request| async move {
                RewardServiceClient::new(channel).check_team_rewards(request).await
            })
            .await
        {
            Ok(response) => Ok(response.holds_rewards),
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "commissions did not say whether the team holds rewards");
                Err(LedgerError::Unavailable(format!("{:?}: {}", status.code(), status.message())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
        net::TcpListener,
    };

    use super::*;

    /// A minimal SMTP relay that accepts one message and returns what it received.
    async fn one_message_relay(listener: TcpListener) -> String {
        let (socket, _) = listener.accept().await.unwrap();
        let (read, mut write) = socket.into_split();
        let mut lines = BufReader::new(read).lines();
        write.write_all(b"220 relay ready\r\n").await.unwrap();
        let mut received = String::new();
        let mut in_data = false;
        while let Some(line) = lines.next_line().await.unwrap() {
            received.push_str(&line);
            received.push('\n');
            let reply: &[u8] = if in_data {
                if line != "." {
                    continue;
                }
                in_data = false;
                b"250 queued\r\n"
            } else if line.starts_with("EHLO") {
                b"250 relay\r\n"
            } else if line == "DATA" {
                in_data = true;
                b"354 go ahead\r\n"
            } else if line == "QUIT" {
                write.write_all(b"221 bye\r\n").await.unwrap();
                break;
            } else {
                b"250 ok\r\n"
            };
            write.write_all(reply).await.unwrap();
        }
        received
    }

    #[tokio::test]
    async fn smtp_mailer_hands_the_message_to_the_relay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let relay = tokio::spawn(one_message_relay(listener));
        let mailer =
            SmtpMailer::new(&format!("smtp://127.0.0.1:{port}"), "Tandem <no-reply@tandem.example>").unwrap();
        mailer
            .send(Email { to: "ann@example.com".into(), subject: "Hello".into(), body: "The body".into() })
            .await
            .unwrap();
        drop(mailer);
        let received = tokio::time::timeout(std::time::Duration::from_secs(5), relay).await.unwrap().unwrap();
        assert!(received.contains("RCPT TO:<ann@example.com>"), "{received}");
        assert!(received.contains("Subject: Hello"), "{received}");
        assert!(received.contains("The body"), "{received}");
    }

    #[test]
    fn smtp_urls_are_checked() {
        assert!(SmtpMailer::new("http://x", "a@b.co").is_err());
        assert!(SmtpMailer::new("smtp://relay:notaport", "a@b.co").is_err());
        assert!(SmtpMailer::new("smtp://relay", "a@b.co").is_ok());
    }
}
