//! The event bus between services. Producers never publish directly: the outbox relay does,
//! after the change committed. Consumers subscribe to a stream in a named group; each event
//! reaches one consumer of each group, is acknowledged only after the handler applied it, is
//! retried when the handler fails and goes to the dead letters when it keeps failing.
//!
//! Two implementations share this trait: [`InProcessBus`] for `tandem dev` and tests, and a
//! Redis Streams bus for production (streams, consumer groups, `XACK` after applying,
//! re-claiming stuck deliveries, a dead-letter stream). Handlers make their effect idempotent
//! with [`crate::outbox::mark_handled`], so redelivery never applies an event twice.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use tandem_proto::events::v1::Event;
use tokio::sync::{Mutex, RwLock};
use tracing::Instrument;

use crate::{db::DbError, error::ServiceError, telemetry};

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("event bus unavailable: {0}")]
    Unavailable(String),
}

/// Applies events of one stream for one consumer group.
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    /// Applies the event. An error means "not applied": the event is delivered again.
    async fn handle(&self, event: &Event) -> anyhow::Result<()>;

    /// Applies several events of the stream, in their order, all or none: for a handler whose
    /// effect is a few writes, one transaction (one commit) for the lot instead of one each.
    /// Each event's work should run in its [`event_span`]. `None` (the default) when the
    /// handler applies events one by one only. On an error nothing is applied, and the bus
    /// applies each event on its own with [`EventHandler::handle`], which retries and
    /// dead-letters them one by one.
    async fn handle_batch(&self, _events: &[Event]) -> Option<anyhow::Result<()>> {
        None
    }
}

/// The span an event is applied in: a child of the change that caused it (the trace context
/// travels in the event's headers).
pub fn event_span(event: &Event) -> tracing::Span {
    let span = tracing::info_span!("event.apply", event_id = %event.id, aggregate_id = %event.aggregate_id);
    telemetry::set_parent_from_map(&span, &event.headers);
    span
}

/// Records that a consumer applied `event` (the applied-events count and the consumer lag).
pub fn applied(stream: &str, group: &str, event: &Event) {
    if let Some(occurred) = event.occur_time.as_ref().and_then(crate::time::from_timestamp) {
        crate::metrics::event_applied(stream, group, occurred);
    }
}

#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Publishes events to a stream, in order. Returns once the bus holds them durably (for
    /// the in-process bus: once every group's handler has applied or dead-lettered them).
    async fn publish(&self, stream: &str, events: &[Event]) -> Result<(), BusError>;

    /// Starts delivering the stream's events to `handler` as a member of `group`.
    async fn subscribe(
        &self,
        stream: &str,
        group: &str,
        handler: Arc<dyn EventHandler>,
    ) -> Result<(), BusError>;
}

/// Applies one event in a span that continues the trace of the change that caused it (the
/// trace context travels in the event's headers).
pub async fn apply(
    handler: &dyn EventHandler,
    stream: &str,
    group: &str,
    event: &Event,
) -> anyhow::Result<()> {
    let span = tracing::info_span!("event.apply", stream, group, event_id = %event.id, aggregate_id = %event.aggregate_id);
    telemetry::set_parent_from_map(&span, &event.headers);
    handler.handle(event).instrument(span).await?;
    applied(stream, group, event);
    Ok(())
}

/// Whether a handler's failure is the database being unreachable: such an event is retried
/// until the database returns, never dead-lettered.
pub fn is_transient(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        matches!(cause.downcast_ref::<DbError>(), Some(DbError::Unavailable(_)))
            || matches!(cause.downcast_ref::<ServiceError>(), Some(ServiceError::Db(DbError::Unavailable(_))))
    })
}

/// An event that failed every delivery attempt, with its last error.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub stream: String,
    pub group: String,
    pub event: Event,
    pub error: String,
}

/// Delivery inside one process: `publish` hands each event to every group's handler in turn
/// and returns when all have applied it, so the outbox marks an event published only after
/// its effects are committed; a crash before that publishes it again on restart.
/// The consumer groups of one stream, each with its handler.
type Groups = Vec<(String, Arc<dyn EventHandler>)>;

pub struct InProcessBus {
    groups: RwLock<HashMap<String, Groups>>,
    dead_letters: Mutex<Vec<DeadLetter>>,
    max_attempts: u32,
    retry_delay: Duration,
}

impl Default for InProcessBus {
    fn default() -> Self {
        Self::new(5, Duration::from_millis(50))
    }
}

impl InProcessBus {
    pub fn new(max_attempts: u32, retry_delay: Duration) -> Self {
        Self {
            groups: RwLock::default(),
            dead_letters: Mutex::default(),
            max_attempts: max_attempts.max(1),
            retry_delay,
        }
    }

    pub async fn dead_letters(&self) -> Vec<DeadLetter> {
        self.dead_letters.lock().await.clone()
    }
}

#[async_trait]
impl EventBus for InProcessBus {
    async fn publish(&self, stream: &str, events: &[Event]) -> Result<(), BusError> {
        let groups = self.groups.read().await.get(stream).cloned().unwrap_or_default();
        for event in events {
            for (group, handler) in &groups {
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    match apply(handler.as_ref(), stream, group, event).await {
                        Ok(()) => break,
                        Err(err) if attempt < self.max_attempts => {
                            tracing::warn!(stream, group = %group, event_id = %event.id, attempt, error = %err, "event handler failed; retrying");
                            tokio::time::sleep(self.retry_delay * attempt).await;
                        }
                        // The database is away: the relay publishes the batch again later,
                        // and the groups that applied it already skip it then.
                        Err(err) if is_transient(&err) => return Err(BusError::Unavailable(err.to_string())),
                        Err(err) => {
                            tracing::error!(stream, group = %group, event_id = %event.id, error = %err, "event dead-lettered");
                            crate::metrics::event_dead_lettered(stream, group);
                            self.dead_letters.lock().await.push(DeadLetter {
                                stream: stream.to_owned(),
                                group: group.clone(),
                                event: event.clone(),
                                error: err.to_string(),
                            });
                            break;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        stream: &str,
        group: &str,
        handler: Arc<dyn EventHandler>,
    ) -> Result<(), BusError> {
        let mut groups = self.groups.write().await;
        let members = groups.entry(stream.to_owned()).or_default();
        // One consumer per group in one process: a second subscription of the same group
        // replaces the first rather than doubling deliveries.
        members.retain(|(g, _)| g != group);
        members.push((group.to_owned(), handler));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A database outage waits, whether a handler passes the storage error on as it is or as
    /// a service's error; other failures do not.
    #[test]
    fn database_outages_are_transient_however_wrapped() {
        let away = || DbError::Unavailable("connection refused".into());
        assert!(is_transient(&anyhow::Error::from(away())));
        assert!(is_transient(&anyhow::Error::from(ServiceError::Db(away()))));
        assert!(is_transient(&anyhow::Error::from(ServiceError::Db(away())).context("applying an event")));
        assert!(!is_transient(&anyhow::Error::from(ServiceError::Db(DbError::UniqueViolation))));
        assert!(!is_transient(&anyhow::Error::from(ServiceError::NotFound("rate"))));
    }

    struct Flaky {
        failures_left: AtomicU32,
        applied: AtomicU32,
    }

    #[async_trait]
    impl EventHandler for Flaky {
        async fn handle(&self, _: &Event) -> anyhow::Result<()> {
            if self
                .failures_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                anyhow::bail!("not yet");
            }
            self.applied.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    fn event(id: &str) -> Event {
        Event { id: id.into(), ..Default::default() }
    }

    #[tokio::test]
    async fn every_group_gets_every_event_and_failures_are_retried() {
        let bus = InProcessBus::new(3, Duration::from_millis(1));
        let a = Arc::new(Flaky { failures_left: AtomicU32::new(2), applied: AtomicU32::new(0) });
        let b = Arc::new(Flaky { failures_left: AtomicU32::new(0), applied: AtomicU32::new(0) });
        bus.subscribe("s", "a", a.clone()).await.unwrap();
        bus.subscribe("s", "b", b.clone()).await.unwrap();
        bus.publish("s", &[event("1"), event("2")]).await.unwrap();
        assert_eq!(a.applied.load(Ordering::SeqCst), 2);
        assert_eq!(b.applied.load(Ordering::SeqCst), 2);
        assert!(bus.dead_letters().await.is_empty());
    }

    #[tokio::test]
    async fn an_event_that_keeps_failing_is_dead_lettered_with_its_error() {
        let bus = InProcessBus::new(2, Duration::from_millis(1));
        let h = Arc::new(Flaky { failures_left: AtomicU32::new(100), applied: AtomicU32::new(0) });
        bus.subscribe("s", "g", h).await.unwrap();
        bus.publish("s", &[event("x")]).await.unwrap();
        let dead = bus.dead_letters().await;
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].event.id, "x");
        assert_eq!(dead[0].error, "not yet");
    }
}
