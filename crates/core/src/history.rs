//! The `History` seam: per-channel publication logs with offsets and epochs.
//! Routing is its only writer. Adapters: in-memory ring buffers (standalone)
//! and JetStream (distributed).

mod memory;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::channel::Channel;
use crate::protocol::{Publication, StreamPosition};

pub use memory::MemoryHistory;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    #[error("history unavailable: {0}")]
    Unavailable(String),
}

/// How much of a channel's history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Publications kept per channel (0 keeps none, but offsets still grow).
    pub size: usize,
    pub ttl: std::time::Duration,
}

/// What is appended: the publication without its offset and epoch, which
/// the history assigns.
#[derive(Debug, Clone)]
pub struct NewPublication {
    pub data: Box<RawValue>,
    pub from: Option<String>,
    pub ts: u64,
}

/// The answer to "publications of C after offset N".
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recovery {
    /// Every publication after the position, oldest first (at most the
    /// limit asked for), and the channel's current position.
    Recovered {
        publications: Vec<Publication>,
        latest: StreamPosition,
    },
    /// The position is older than what is kept, or from another epoch.
    Unrecoverable { latest: StreamPosition },
}

impl Recovery {
    pub fn latest(&self) -> &StreamPosition {
        match self {
            Recovery::Recovered { latest, .. } | Recovery::Unrecoverable { latest } => latest,
        }
    }
}

#[async_trait]
pub trait History: Send + Sync + 'static {
    /// Stores a publication; it gets the channel's next offset.
    async fn append(
        &self,
        channel: &Channel,
        publication: NewPublication,
        retention: Retention,
    ) -> Result<Publication, HistoryError>;

    /// The channel's current position (offset 0 before the first publication).
    async fn position(&self, channel: &Channel) -> Result<StreamPosition, HistoryError>;

    /// Publications after `since` (all kept ones when `None`), at most `limit`.
    async fn read(
        &self,
        channel: &Channel,
        since: Option<&StreamPosition>,
        limit: usize,
    ) -> Result<Recovery, HistoryError>;
}
