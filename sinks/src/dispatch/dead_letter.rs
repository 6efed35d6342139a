//! The dead-letter interface and an in-memory implementation for tests.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use hookgate_proto::Event;

/// Writing to the dead-letter store failed; the event must not be committed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("dead-letter write failed: {0}")]
pub struct DlqError(pub String);

/// Where deliveries that failed for good are kept for inspection and replay.
#[async_trait]
pub trait DeadLetter: Send + Sync {
    /// Durably records that `ev` could not be delivered to `sink`, with the (redacted) error.
    async fn dead_letter(&self, ev: &Event, sink: &str, error: &str) -> Result<(), DlqError>;
}

/// One dead-lettered delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLettered {
    /// The event.
    pub event: Event,
    /// The sink it failed for.
    pub sink: String,
    /// The last error.
    pub error: String,
}

/// A [`DeadLetter`] in memory; it can be told to fail, to test the not-done path.
#[derive(Debug, Default)]
pub struct MemoryDeadLetter {
    entries: Mutex<Vec<DeadLettered>>,
    failing: AtomicBool,
}

impl MemoryDeadLetter {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything dead-lettered so far.
    pub fn entries(&self) -> Vec<DeadLettered> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Makes later writes fail (true) or succeed (false).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

#[async_trait]
impl DeadLetter for MemoryDeadLetter {
    async fn dead_letter(&self, ev: &Event, sink: &str, error: &str) -> Result<(), DlqError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(DlqError("memory dead letter set to fail".into()));
        }
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(DeadLettered {
                event: ev.clone(),
                sink: sink.to_owned(),
                error: error.to_owned(),
            });
        Ok(())
    }
}
