//! The `WorkQueue` seam: push jobs handed from routing to notify. Adapters:
//! a JetStream work-queue stream (`HERALD_NOTIFY`, at-least-once, survives
//! restarts) and a bounded in-memory queue (standalone).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::channel::Channel;
use crate::subjects::Subjects;

/// What a user's device is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notification {
    pub title: String,
    pub body: String,
    /// Alerts with the same key replace each other on the device and are
    /// coalesced by notify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collapse_key: Option<String>,
}

/// One user to reach by push notification.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushJob {
    /// Unique; the same id twice is one job (dedup by the queue).
    pub id: String,
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<Notification>,
    /// The publication's data, for the app.
    pub data: Box<RawValue>,
    /// The channel it was published to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    pub created_ms: u64,
}

impl PushJob {
    /// A fresh random job id.
    pub fn new_id() -> String {
        format!("{:032x}", rand::random::<u128>())
    }

    /// The job id for a request with an idempotency key: the same key gives
    /// the same id, so a retried request cannot queue the job twice.
    pub fn id_for_key(scope: &str, key: &str, user: &str) -> String {
        use std::hash::{Hash, Hasher};
        // Two independent hashes make an accidental collision negligible.
        let mut a = std::collections::hash_map::DefaultHasher::new();
        (scope, key, user, 0xa5u8).hash(&mut a);
        let mut b = std::collections::hash_map::DefaultHasher::new();
        (0x5au8, user, key, scope).hash(&mut b);
        format!("{:016x}{:016x}", a.finish(), b.finish())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("work queue full ({0} jobs waiting)")]
    Full(usize),
    #[error("work queue unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait WorkQueue: Send + Sync + 'static {
    /// Queues a job. A job whose id is already queued (within the dedup
    /// window) is not queued again.
    async fn push(&self, job: &PushJob) -> Result<(), QueueError>;
}

/// Standalone: a bounded queue in memory.
pub struct MemoryWorkQueue {
    jobs: Mutex<VecDeque<PushJob>>,
    capacity: usize,
}

impl MemoryWorkQueue {
    pub fn new(capacity: usize) -> Self {
        MemoryWorkQueue {
            jobs: Mutex::new(VecDeque::new()),
            capacity,
        }
    }

    /// Takes every waiting job (the consumer side).
    pub fn drain(&self) -> Vec<PushJob> {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect()
    }
}

#[async_trait]
impl WorkQueue for MemoryWorkQueue {
    async fn push(&self, job: &PushJob) -> Result<(), QueueError> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        if jobs.iter().any(|j| j.id == job.id) {
            return Ok(());
        }
        if jobs.len() >= self.capacity {
            return Err(QueueError::Full(jobs.len()));
        }
        jobs.push_back(job.clone());
        Ok(())
    }
}

/// Distributed: the JetStream stream `<PREFIX>_NOTIFY` with work-queue
/// retention (a job is removed once notify acknowledges it).
pub struct JetStreamWorkQueue {
    js: jetstream::Context,
    subject: String,
    stream: String,
}

/// Jobs the stream holds at most; beyond that new jobs are refused.
const MAX_QUEUED_JOBS: i64 = 1_000_000;

impl JetStreamWorkQueue {
    pub async fn open(client: async_nats::Client, subjects: &Subjects) -> Result<Self, QueueError> {
        let js = jetstream::new(client);
        let stream = subjects.stream_name("NOTIFY");
        let subject = subjects.notify_jobs();
        js.create_or_update_stream(stream::Config {
            name: stream.clone(),
            subjects: vec![subject.clone()],
            retention: stream::RetentionPolicy::WorkQueue,
            max_messages: MAX_QUEUED_JOBS,
            discard: stream::DiscardPolicy::New,
            duplicate_window: Duration::from_secs(120),
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| QueueError::Unavailable(format!("stream {stream}: {e}")))?;
        Ok(JetStreamWorkQueue {
            js,
            subject,
            stream,
        })
    }

    pub fn stream_name(&self) -> &str {
        &self.stream
    }
}

#[async_trait]
impl WorkQueue for JetStreamWorkQueue {
    async fn push(&self, job: &PushJob) -> Result<(), QueueError> {
        let payload = Bytes::from(
            serde_json::to_vec(job).map_err(|e| QueueError::Unavailable(e.to_string()))?,
        );
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", job.id.as_str());
        let ack = self
            .js
            .publish_with_headers(self.subject.clone(), headers, payload)
            .await
            .map_err(|e| QueueError::Unavailable(e.to_string()))?;
        ack.await
            .map_err(|e| QueueError::Unavailable(e.to_string()))?;
        Ok(())
    }
}
