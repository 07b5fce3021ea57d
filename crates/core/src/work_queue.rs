//! The `WorkQueue` seam: push jobs handed from routing to notify. Adapters:
//! a JetStream work-queue stream (`HERALD_NOTIFY`, at-least-once, survives
//! restarts) and a bounded in-memory queue (standalone).

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::streams::{KeptStream, START_WITHIN, StreamSettings};
use crate::subjects::Subjects;
use herald_protocol::channel::Channel;

/// What a user's device is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notification {
    /// The alert's title.
    pub title: String,
    /// The alert's text.
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
    /// The user whose devices are pushed to.
    pub user: String,
    /// What the devices show; `None` for a silent (data-only) push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<Notification>,
    /// The publication's data, for the app.
    pub data: Box<RawValue>,
    /// The channel it was published to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    /// When the job was made, Unix milliseconds.
    pub created_ms: u64,
    /// Only this device (a direct send), not all of the user's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// A coalescing summary ("47 new messages"): never coalesced again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub summary: bool,
    /// The jobs a summary stands for: their status follows its.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub summarizes: Vec<String>,
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

/// Why a job could not be queued or taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The queue is at its bound: how many jobs wait.
    #[error("work queue full ({0} jobs waiting)")]
    Full(usize),
    /// The queue cannot be reached: why.
    #[error("work queue unavailable: {0}")]
    Unavailable(String),
}

/// Push jobs from routing to notify, delivered at least once.
#[async_trait]
pub trait WorkQueue: Send + Sync + 'static {
    /// Queues a job. A job whose id is already queued (within the dedup
    /// window) is not queued again.
    async fn push(&self, job: &PushJob) -> Result<(), QueueError>;

    /// The next job, waiting at most `wait`. It stays the queue's until it
    /// is acknowledged: a consumer that dies holding it gets it delivered
    /// again (at least once).
    async fn take(&self, wait: Duration) -> Result<Option<Taken>, QueueError>;

    /// Keeps a job that was given up on, for people to look at.
    async fn dead_letter(&self, job: &PushJob, reason: &str) -> Result<(), QueueError>;

    /// Jobs waiting to be sent (JetStream: stored and not yet
    /// acknowledged, so taken ones count too): the backlog an autoscaler
    /// and an alert watch.
    async fn backlog(&self) -> Result<u64, QueueError>;
}

/// A job taken from the queue, to be settled exactly once.
pub struct Taken {
    /// The job.
    pub job: PushJob,
    /// 1 on the first delivery, 2 on the next, …
    pub attempt: u32,
    settle: Box<dyn Settle>,
}

impl std::fmt::Debug for Taken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Taken")
            .field("job", &self.job.id)
            .field("attempt", &self.attempt)
            .finish()
    }
}

impl Taken {
    /// Done with: the queue forgets it.
    pub async fn ack(self) {
        self.settle.ack().await
    }

    /// Deliver it again, no sooner than `after`.
    pub async fn retry(self, after: Duration) {
        self.settle.retry(after).await
    }

    /// Still working on it: do not redeliver yet.
    pub async fn keep(&self) {
        self.settle.keep().await
    }
}

#[async_trait]
trait Settle: Send + Sync {
    async fn ack(self: Box<Self>);
    async fn retry(self: Box<Self>, after: Duration);
    async fn keep(&self);
}

/// Standalone: a bounded queue in memory. (Its jobs die with the process,
/// like everything else of standalone's that is not in SQLite.)
pub struct MemoryWorkQueue {
    state: Arc<Mutex<MemoryState>>,
    ready: Arc<tokio::sync::Notify>,
    capacity: usize,
}

#[derive(Default)]
struct MemoryState {
    waiting: VecDeque<(PushJob, u32)>,
    dead: VecDeque<(PushJob, String)>,
}

/// Dead letters kept in memory at most.
const MEMORY_DEAD_LETTERS: usize = 1000;

impl MemoryWorkQueue {
    /// A queue of at most `capacity` waiting jobs; past it, pushes fail with
    /// [`QueueError::Full`].
    pub fn new(capacity: usize) -> Self {
        MemoryWorkQueue {
            state: Arc::default(),
            ready: Arc::new(tokio::sync::Notify::new()),
            capacity,
        }
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, MemoryState> {
        self.state.lock()
    }

    /// Takes every waiting job at once (tests).
    pub fn drain(&self) -> Vec<PushJob> {
        self.lock().waiting.drain(..).map(|(job, _)| job).collect()
    }

    /// The dead letters, oldest first.
    pub fn dead_letters(&self) -> Vec<(PushJob, String)> {
        self.lock().dead.iter().cloned().collect()
    }
}

struct MemorySettle {
    state: Arc<Mutex<MemoryState>>,
    ready: Arc<tokio::sync::Notify>,
    job: PushJob,
    attempt: u32,
}

#[async_trait]
impl Settle for MemorySettle {
    async fn ack(self: Box<Self>) {}

    async fn retry(self: Box<Self>, after: Duration) {
        let MemorySettle {
            state,
            ready,
            job,
            attempt,
        } = *self;
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            state.lock().waiting.push_back((job, attempt + 1));
            ready.notify_one();
        });
    }

    async fn keep(&self) {}
}

#[async_trait]
impl WorkQueue for MemoryWorkQueue {
    async fn push(&self, job: &PushJob) -> Result<(), QueueError> {
        {
            let mut state = self.lock();
            if state.waiting.iter().any(|(j, _)| j.id == job.id) {
                return Ok(());
            }
            if state.waiting.len() >= self.capacity {
                return Err(QueueError::Full(state.waiting.len()));
            }
            state.waiting.push_back((job.clone(), 1));
        }
        self.ready.notify_one();
        Ok(())
    }

    async fn take(&self, wait: Duration) -> Result<Option<Taken>, QueueError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.ready.notified();
            if let Some((job, attempt)) = self.lock().waiting.pop_front() {
                return Ok(Some(Taken {
                    job: job.clone(),
                    attempt,
                    settle: Box::new(MemorySettle {
                        state: self.state.clone(),
                        ready: self.ready.clone(),
                        job,
                        attempt,
                    }),
                }));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(None);
            }
        }
    }

    async fn backlog(&self) -> Result<u64, QueueError> {
        Ok(self.lock().waiting.len() as u64)
    }

    async fn dead_letter(&self, job: &PushJob, reason: &str) -> Result<(), QueueError> {
        let mut state = self.lock();
        if state.dead.len() >= MEMORY_DEAD_LETTERS {
            state.dead.pop_front();
        }
        state.dead.push_back((job.clone(), reason.to_owned()));
        Ok(())
    }
}

/// Distributed: the JetStream stream `<PREFIX>_NOTIFY` with work-queue
/// retention (a job is removed once notify acknowledges it).
pub struct JetStreamWorkQueue {
    js: jetstream::Context,
    subject: String,
    jobs: KeptStream,
    dead: KeptStream,
    dead_subject: String,
    /// The durable consumer's message stream, opened on first `take` (and
    /// again after it failed: the stream may have been lost).
    messages: tokio::sync::Mutex<Option<jetstream::consumer::pull::Stream>>,
    /// How long a taken job may go unacknowledged before it is delivered
    /// again (to another notify process, if this one died).
    ack_wait: Duration,
}

/// The durable consumer notify replicas share.
pub const CONSUMER: &str = "notify";

/// Jobs the stream holds at most; beyond that new jobs are refused.
const MAX_QUEUED_JOBS: i64 = 1_000_000;

fn unavailable(e: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

impl JetStreamWorkQueue {
    /// Ensures the queue's streams (see [`KeptStream`]: created when
    /// missing, then and whenever an operation finds them gone).
    pub async fn open(
        client: async_nats::Client,
        subjects: &Subjects,
        ack_wait: Duration,
        settings: StreamSettings,
    ) -> Result<Self, QueueError> {
        let js = jetstream::new(client);
        let subject = subjects.notify_jobs();
        let jobs = KeptStream::new(
            js.clone(),
            stream::Config {
                name: subjects.stream_name("NOTIFY"),
                subjects: vec![subject.clone()],
                retention: stream::RetentionPolicy::WorkQueue,
                max_messages: MAX_QUEUED_JOBS,
                discard: stream::DiscardPolicy::New,
                duplicate_window: Duration::from_secs(120),
                storage: stream::StorageType::File,
                ..Default::default()
            },
            settings,
        );
        let dead_subject = subjects.notify_dead();
        let dead = KeptStream::new(
            js.clone(),
            stream::Config {
                name: subjects.stream_name("NOTIFY_DEAD"),
                subjects: vec![dead_subject.clone()],
                max_age: Duration::from_secs(7 * 24 * 3600),
                max_messages: MAX_QUEUED_JOBS,
                storage: stream::StorageType::File,
                ..Default::default()
            },
            settings,
        );
        jobs.ensure_within(START_WITHIN)
            .await
            .map_err(unavailable)?;
        dead.ensure_within(START_WITHIN)
            .await
            .map_err(unavailable)?;
        Ok(JetStreamWorkQueue {
            js,
            subject,
            jobs,
            dead,
            dead_subject,
            messages: tokio::sync::Mutex::new(None),
            ack_wait,
        })
    }

    /// The job stream's name (`<PREFIX>_NOTIFY`).
    pub fn stream_name(&self) -> &str {
        self.jobs.name()
    }

    /// The streams this queue keeps (for reports: drift, recreations).
    pub fn streams(&self) -> [&KeptStream; 2] {
        [&self.jobs, &self.dead]
    }

    /// Publishes to a kept stream; when nothing took it (the stream is
    /// gone), ensures the stream and publishes once more.
    async fn publish(
        &self,
        kept: &KeptStream,
        subject: &str,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<(), QueueError> {
        let send = || async {
            self.js
                .publish_with_headers(subject.to_owned(), headers.clone(), payload.clone())
                .await?
                .await
        };
        match send().await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == jetstream::context::PublishErrorKind::StreamNotFound => {
                match kept.recheck().await {
                    Some(Ok(_)) => send().await.map(|_| ()).map_err(unavailable),
                    _ => Err(unavailable(e)),
                }
            }
            Err(e) => Err(unavailable(e)),
        }
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
        self.publish(&self.jobs, &self.subject, headers, payload)
            .await
    }

    async fn take(&self, wait: Duration) -> Result<Option<Taken>, QueueError> {
        let mut messages = self.messages.lock().await;
        if messages.is_none() {
            // Ensured again each time: the stream (and its consumer) may
            // have been lost with the last failure.
            let stream = self.jobs.ensure().await.map_err(unavailable)?.stream;
            let consumer = stream
                .get_or_create_consumer(
                    CONSUMER,
                    jetstream::consumer::pull::Config {
                        durable_name: Some(CONSUMER.to_owned()),
                        ack_policy: jetstream::consumer::AckPolicy::Explicit,
                        ack_wait: self.ack_wait,
                        filter_subject: self.subject.clone(),
                        ..Default::default()
                    },
                )
                .await
                .map_err(unavailable)?;
            *messages = Some(consumer.messages().await.map_err(unavailable)?);
        }
        let Some(stream) = messages.as_mut() else {
            return Ok(None);
        };
        let message = match tokio::time::timeout(wait, futures::StreamExt::next(stream)).await {
            Err(_) => return Ok(None),
            Ok(None) => {
                *messages = None;
                return Err(QueueError::Unavailable("consumer stream ended".into()));
            }
            Ok(Some(Err(e))) => {
                *messages = None;
                return Err(QueueError::Unavailable(e.to_string()));
            }
            Ok(Some(Ok(m))) => m,
        };
        let attempt = message
            .info()
            .map(|i| i.delivered.max(1) as u32)
            .unwrap_or(1);
        match serde_json::from_slice::<PushJob>(&message.payload) {
            Ok(job) => Ok(Some(Taken {
                job,
                attempt,
                settle: Box::new(JetStreamSettle { message }),
            })),
            Err(e) => {
                // Unreadable forever: take it off the queue, keep it dead.
                tracing::error!(error = %e, "unreadable push job dropped");
                let _ = self
                    .js
                    .publish(self.dead_subject.clone(), message.payload.clone())
                    .await;
                let _ = message.ack_with(jetstream::AckKind::Term).await;
                Ok(None)
            }
        }
    }

    async fn backlog(&self) -> Result<u64, QueueError> {
        let ensured = self.jobs.ensure().await.map_err(unavailable)?;
        let info = ensured.stream.get_info().await.map_err(unavailable)?;
        Ok(info.state.messages)
    }

    async fn dead_letter(&self, job: &PushJob, reason: &str) -> Result<(), QueueError> {
        let mut headers = HeaderMap::new();
        headers.insert("Herald-Reason", reason);
        let payload = Bytes::from(
            serde_json::to_vec(job).map_err(|e| QueueError::Unavailable(e.to_string()))?,
        );
        self.publish(&self.dead, &self.dead_subject, headers, payload)
            .await
    }
}

struct JetStreamSettle {
    message: jetstream::Message,
}

#[async_trait]
impl Settle for JetStreamSettle {
    async fn ack(self: Box<Self>) {
        if let Err(e) = self.message.ack().await {
            tracing::warn!(error = %e, "ack failed; the job will come again");
        }
    }

    async fn retry(self: Box<Self>, after: Duration) {
        if let Err(e) = self
            .message
            .ack_with(jetstream::AckKind::Nak(Some(after)))
            .await
        {
            tracing::warn!(error = %e, "nak failed; the job comes again after the ack wait");
        }
    }

    async fn keep(&self) {
        let _ = self.message.ack_with(jetstream::AckKind::Progress).await;
    }
}
