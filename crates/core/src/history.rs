//! The `History` seam: per-channel publication logs with offsets and epochs.
//! Routing is its only writer. Adapters: in-memory ring buffers (standalone)
//! and JetStream (distributed).

mod jetstream;
mod memory;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use herald_protocol::channel::Channel;
use herald_protocol::{Publication, StreamPosition};

pub use jetstream::{DEFAULT_APPEND_TIMEOUT, JetStreamHistory, Storage};
pub use memory::{DEFAULT_BUDGET as DEFAULT_MEMORY_BUDGET, MemoryHistory};

/// Why a history operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// Nothing was stored (or read); trying again may work.
    #[error("history unavailable: {0}")]
    Unavailable(String),
    /// An append was sent and not acknowledged: it may be stored. Sent
    /// again with the idempotency key `key`, it is stored once.
    #[error("history did not acknowledge an append ({why}); retry with idempotency key {key}")]
    OutcomeUnknown {
        /// The idempotency key to send it again with.
        key: String,
        /// Why no acknowledgement came.
        why: String,
    },
}

/// How much of a channel's history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Publications kept per channel (0 keeps none, but offsets still grow).
    pub size: usize,
    /// How long a publication is kept.
    pub ttl: std::time::Duration,
}

/// What is appended: the publication without its offset and epoch, which
/// the history assigns.
#[derive(Debug, Clone)]
pub struct NewPublication {
    /// The published JSON.
    pub data: Box<RawValue>,
    /// The publishing user; `None` for the server API.
    pub from: Option<String>,
    /// When routing accepted it, Unix milliseconds.
    pub ts: u64,
}

/// The result of an append.
#[derive(Debug, Clone)]
pub enum Appended {
    /// Stored now, with its offset: deliver it.
    New(Publication),
    /// The idempotency key was seen within the dedup window: this is the
    /// first result again, and nothing new was stored.
    Duplicate(StreamPosition),
}

impl Appended {
    /// Where the publication is: stored now, or stored the first time.
    pub fn position(&self) -> StreamPosition {
        match self {
            Appended::New(p) => StreamPosition {
                offset: p.offset,
                epoch: p.epoch.clone(),
            },
            Appended::Duplicate(position) => position.clone(),
        }
    }
}

/// Whether a client at `since` can be brought up to date from publications
/// kept from offset `first_kept` (None: nothing kept) in a channel at
/// `latest`. A position with an empty epoch and offset 0 means "from the
/// very beginning" (a client that subscribed before the first publication).
pub(crate) fn recoverable(
    since: &StreamPosition,
    latest: &StreamPosition,
    first_kept: Option<u64>,
) -> bool {
    match since.missed_until(latest) {
        None => false,
        Some(0) => true,
        Some(_) => first_kept.is_some_and(|first| first <= since.offset + 1),
    }
}

/// The answer to "publications of C after offset N".
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recovery {
    /// Every publication after the position, oldest first (at most the
    /// limit asked for), and the channel's current position.
    Recovered {
        /// The publications, oldest first.
        publications: Vec<Publication>,
        /// The channel's current position.
        latest: StreamPosition,
    },
    /// The position is older than what is kept, or from another epoch.
    Unrecoverable {
        /// The channel's current position.
        latest: StreamPosition,
    },
}

impl Recovery {
    /// The channel's current position, either way.
    pub fn latest(&self) -> &StreamPosition {
        match self {
            Recovery::Recovered { latest, .. } | Recovery::Unrecoverable { latest } => latest,
        }
    }
}

/// Where publications are kept for recovery, per channel.
#[async_trait]
pub trait History: Send + Sync + 'static {
    /// Stores a publication; it gets the channel's next offset. With an
    /// idempotency key seen within the dedup window, nothing is stored and
    /// the first result is answered again.
    async fn append(
        &self,
        channel: &Channel,
        publication: NewPublication,
        retention: Retention,
        idempotency_key: Option<&str>,
    ) -> Result<Appended, HistoryError>;

    /// The channel's current position: offset 0 and an empty epoch before
    /// the first publication (or after all of it expired).
    async fn position(&self, channel: &Channel) -> Result<StreamPosition, HistoryError>;

    /// Publications after `since` (all kept ones when `None`), at most `limit`.
    async fn read(
        &self,
        channel: &Channel,
        since: Option<&StreamPosition>,
        limit: usize,
    ) -> Result<Recovery, HistoryError>;
}
