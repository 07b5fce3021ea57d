//! History in JetStream. One stream per configured namespace (and one for
//! all others), so each namespace's size and age limits are enforced by
//! JetStream itself (`max_msgs_per_subject`, `max_age`). Each channel is one
//! subject; every message carries its channel offset and epoch in headers.
//!
//! Offsets cannot fork: an append names the stream sequence of the channel's
//! last message (`Nats-Expected-Last-Subject-Sequence`), so of two replicas
//! appending at once one wins and the other retries with the new tip.
//! Idempotency keys become `Nats-Msg-Id`, deduplicated by the stream.

use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishErrorKind, stream};
use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{Appended, History, HistoryError, NewPublication, Recovery, Retention, recoverable};
use crate::config::NamespaceConfig;
use crate::streams::{KeptStream, START_WITHIN, StreamSettings};
use crate::subjects::{HEADER_EPOCH, HEADER_OFFSET, Subjects};
use herald_protocol::channel::Channel;
use herald_protocol::{Epoch, Publication, StreamPosition};

const EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";
const MSG_ID: &str = "Nats-Msg-Id";
/// How long an append may take unless told otherwise: waiting its turn,
/// retrying while other replicas win the race for the same channel (a
/// replica with a burst of appends wins repeatedly: it knows the tip), and
/// sending again when an acknowledgement is lost.
pub const DEFAULT_APPEND_TIMEOUT: Duration = Duration::from_secs(2);
/// The pause before a failed read is tried again.
const READ_RETRY_PAUSE: Duration = Duration::from_millis(150);
/// Channels whose last offset is remembered; beyond this the cache starts
/// over (a miss costs one request).
const MAX_CACHED_TIPS: usize = 100_000;
/// Stripes of the per-channel append lock.
const APPEND_LOCK_STRIPES: usize = 1024;
/// The stream token of channels whose namespace is not configured.
const DEFAULT_NAMESPACE_TOKEN: &str = "_";

/// What a stored message's payload holds (offset and epoch are headers).
#[derive(Serialize, Deserialize)]
struct Stored {
    data: Box<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<String>,
    ts: u64,
}

/// A channel's last stored message.
#[derive(Debug, Clone)]
struct Tip {
    offset: u64,
    epoch: Epoch,
    sequence: u64,
}

/// The [`History`](super::History) over JetStream: one stream per
/// configured namespace, one subject per channel.
pub struct JetStreamHistory {
    /// Streams and reads, with NATS' own bounds.
    js: jetstream::Context,
    /// Appends: an acknowledgement is waited for a fraction of the append
    /// timeout, so one lost (a stream leader that died with it) is sent
    /// again, with the same id, within the deadline.
    appender: jetstream::Context,
    /// Appends to one channel are serialized within this process (striped by
    /// channel hash), so optimistic retries only happen between replicas.
    append_locks: Vec<tokio::sync::Mutex<()>>,
    subjects: Subjects,
    /// Stream per namespace token (`_` for the default).
    streams: HashMap<String, KeptStream>,
    tips: Mutex<HashMap<Channel, Tip>>,
    /// How long an append may take, waiting its turn included.
    append_timeout: Duration,
    /// How long one request (a read, an acknowledgement) is waited for.
    ask_within: Duration,
    /// Recent appends' (offset, stream sequence) per channel: a resume
    /// starts reading at the first missed publication instead of the
    /// oldest kept one.
    index: Mutex<HashMap<Channel, VecDeque<(u64, u64)>>>,
}

/// Appends remembered per channel in the index.
const INDEX_PER_CHANNEL: usize = 256;

/// Where the streams keep their messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// On disk.
    File,
    /// In the NATS server's memory.
    Memory,
}

/// How long one request is waited for: a quarter of `append_timeout` (at
/// least 250 ms), so that within it one append is sent up to four times
/// and one read asked again after a stream's election.
fn ask_within(append_timeout: Duration) -> Duration {
    (append_timeout / 4).max(Duration::from_millis(250))
}

/// A JetStream context whose acknowledgements are awaited `ack_wait`.
fn appender(client: async_nats::Client, ack_wait: Duration) -> jetstream::Context {
    jetstream::context::ContextBuilder::new()
        .timeout(ack_wait)
        .build(client)
}

fn unavailable(e: impl std::fmt::Display) -> HistoryError {
    HistoryError::Unavailable(e.to_string())
}

/// An append that may have been stored: `msg_id` is `<channel>|<key>`, and
/// the key is what a retry names to be stored once.
fn unknown(msg_id: &str, e: impl std::fmt::Display) -> HistoryError {
    let key = msg_id.split_once('|').map_or(msg_id, |(_, key)| key);
    HistoryError::OutcomeUnknown {
        key: key.to_owned(),
        why: e.to_string(),
    }
}

impl JetStreamHistory {
    /// Ensures one stream per configured namespace and one for the rest,
    /// with each namespace's limits (see [`KeptStream`]: created when
    /// missing, then and whenever an operation finds it gone).
    pub async fn open(
        client: async_nats::Client,
        subjects: Subjects,
        namespaces: &BTreeMap<String, NamespaceConfig>,
        dedup_window: Duration,
        storage: Storage,
        settings: StreamSettings,
    ) -> Result<Self, HistoryError> {
        let js = jetstream::new(client.clone());
        let default = namespaces.get("default").cloned().unwrap_or_default();
        let mut wanted = vec![(DEFAULT_NAMESPACE_TOKEN.to_owned(), default)];
        for (name, ns) in namespaces {
            if name != "default" {
                wanted.push((name.clone(), ns.clone()));
            }
        }
        let mut streams = HashMap::new();
        for (token, ns) in wanted {
            let name = if token == DEFAULT_NAMESPACE_TOKEN {
                subjects.stream_name("HISTORY")
            } else {
                subjects.stream_name(&format!("HISTORY_{}", token.to_ascii_uppercase()))
            };
            let max_age = Duration::from_secs(ns.history_ttl_secs.max(1));
            let config = stream::Config {
                name: name.clone(),
                subjects: vec![format!("{}.hist.{token}.*", subjects.prefix())],
                // JetStream must keep a channel's last message to know its
                // offset, so at least one is kept.
                max_messages_per_subject: ns.history_size.max(1) as i64,
                max_age,
                duplicate_window: dedup_window.min(max_age),
                storage: match storage {
                    Storage::File => stream::StorageType::File,
                    Storage::Memory => stream::StorageType::Memory,
                },
                discard: stream::DiscardPolicy::Old,
                allow_direct: true,
                ..Default::default()
            };
            let kept = KeptStream::new(js.clone(), config, settings);
            kept.ensure_within(START_WITHIN)
                .await
                .map_err(unavailable)?;
            streams.insert(token, kept);
        }
        Ok(JetStreamHistory {
            js,
            appender: appender(client, ask_within(DEFAULT_APPEND_TIMEOUT)),
            ask_within: ask_within(DEFAULT_APPEND_TIMEOUT),
            append_locks: (0..APPEND_LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            subjects,
            streams,
            tips: Mutex::new(HashMap::new()),
            append_timeout: DEFAULT_APPEND_TIMEOUT,
            index: Mutex::new(HashMap::new()),
        })
    }

    /// Bounds every append to `timeout`: past it the caller is answered
    /// (nothing stored, or an outcome unknown) instead of kept waiting.
    pub fn with_append_timeout(mut self, timeout: Duration) -> Self {
        self.append_timeout = timeout;
        self.ask_within = ask_within(timeout);
        self.appender = appender(self.js.client(), self.ask_within);
        self
    }

    /// The names of the streams this history uses.
    pub fn stream_names(&self) -> Vec<String> {
        self.streams.values().map(|s| s.name().to_owned()).collect()
    }

    /// The streams this history keeps (for reports: drift, recreations).
    pub fn streams(&self) -> impl Iterator<Item = &KeptStream> {
        self.streams.values()
    }

    /// Deletes the streams (tests clean up after themselves with this).
    pub async fn delete_streams(&self) -> Result<(), HistoryError> {
        for name in self.stream_names() {
            self.js.delete_stream(&name).await.map_err(unavailable)?;
        }
        Ok(())
    }

    fn locate(&self, channel: &Channel) -> Result<(&KeptStream, String), HistoryError> {
        let token = match channel.namespace() {
            Some(ns) if self.streams.contains_key(ns) => ns,
            _ => DEFAULT_NAMESPACE_TOKEN,
        };
        let stream = self
            .streams
            .get(token)
            .ok_or_else(|| unavailable("no history stream"))?;
        let subject = format!(
            "{}.hist.{token}.{}",
            self.subjects.prefix(),
            channel.subject_token()
        );
        Ok((stream, subject))
    }

    /// After a failed operation on `kept`: ensures it again, and if it had
    /// been lost (and is now created again, empty) forgets every position
    /// it remembered of it. Whether to try the operation again.
    async fn recover(&self, kept: &KeptStream) -> bool {
        // Bounded like any request: a stream between leaders does not
        // answer for its info either.
        let Ok(rechecked) = tokio::time::timeout(self.ask_within, kept.recheck()).await else {
            return false;
        };
        match rechecked {
            Some(Ok(ensured)) => {
                if ensured.created {
                    // Offsets start again at 1 in a new epoch.
                    self.tips.lock().clear();
                    self.index.lock().clear();
                }
                ensured.created
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "history stream unavailable");
                false
            }
            None => false,
        }
    }

    /// Runs `op` on the stream of `channel`; if it fails because the
    /// stream was lost, once more on the stream created again.
    async fn on_stream<'a, T, F, Fut>(&'a self, channel: &Channel, op: F) -> Result<T, HistoryError>
    where
        F: Fn(Arc<stream::Stream>, String) -> Fut,
        Fut: std::future::Future<Output = Result<T, HistoryError>> + 'a,
    {
        let (kept, subject) = self.locate(channel)?;
        let stream = kept.handle().await.map_err(unavailable)?;
        match op(stream, subject.clone()).await {
            Ok(v) => Ok(v),
            Err(e) => {
                if self.recover(kept).await {
                    let stream = kept.handle().await.map_err(unavailable)?;
                    op(stream, subject).await
                } else {
                    Err(e)
                }
            }
        }
    }

    fn remember_sequence(&self, channel: &Channel, offset: u64, sequence: u64) {
        let mut index = self.index.lock();
        if index.len() >= MAX_CACHED_TIPS && !index.contains_key(channel) {
            index.clear();
        }
        let entries = index.entry(channel.clone()).or_default();
        // Only a contiguous run is useful: a gap (another replica wrote)
        // starts it over.
        if entries.back().is_some_and(|(o, _)| *o + 1 != offset) {
            entries.clear();
        }
        if entries.len() >= INDEX_PER_CHANNEL {
            entries.pop_front();
        }
        entries.push_back((offset, sequence));
    }

    /// The stream sequence of `offset` in `channel`, if remembered.
    fn sequence_of(&self, channel: &Channel, offset: u64) -> Option<u64> {
        let index = self.index.lock();
        let entries = index.get(channel)?;
        let (first, _) = *entries.front()?;
        let at = offset.checked_sub(first)? as usize;
        entries
            .get(at)
            .filter(|(o, _)| *o == offset)
            .map(|(_, s)| *s)
    }

    fn cached_tip(&self, channel: &Channel) -> Option<Tip> {
        self.tips.lock().get(channel).cloned()
    }

    fn remember_tip(&self, channel: &Channel, tip: Option<Tip>) {
        let mut tips = self.tips.lock();
        match tip {
            Some(t) => {
                if tips.len() >= MAX_CACHED_TIPS {
                    tips.clear();
                }
                tips.insert(channel.clone(), t);
            }
            None => {
                tips.remove(channel);
            }
        }
    }
}

async fn fetch_tip(stream: &stream::Stream, subject: &str) -> Result<Option<Tip>, HistoryError> {
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(message) => Ok(Some(tip_of(&message)?)),
        Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(unavailable(e)),
    }
}

async fn first_kept(
    stream: &stream::Stream,
    subject: &str,
    from_sequence: u64,
) -> Result<Option<jetstream::message::StreamMessage>, HistoryError> {
    match stream
        .get_first_raw_message_by_subject(subject, from_sequence)
        .await
    {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(unavailable(e)),
    }
}

fn header<'a>(message: &'a jetstream::message::StreamMessage, name: &str) -> Option<&'a str> {
    message.headers.get(name).map(|v| v.as_str())
}

fn tip_of(message: &jetstream::message::StreamMessage) -> Result<Tip, HistoryError> {
    let offset = header(message, HEADER_OFFSET)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| unavailable(format!("message {} has no offset", message.sequence)))?;
    let epoch = Epoch::new(header(message, HEADER_EPOCH).unwrap_or_default());
    Ok(Tip {
        offset,
        epoch,
        sequence: message.sequence,
    })
}

fn publication_of(
    channel: &Channel,
    message: &jetstream::message::StreamMessage,
) -> Result<Publication, HistoryError> {
    let tip = tip_of(message)?;
    let stored: Stored = serde_json::from_slice(&message.payload)
        .map_err(|e| unavailable(format!("message {}: {e}", message.sequence)))?;
    Ok(Publication {
        channel: channel.clone(),
        offset: tip.offset,
        epoch: tip.epoch,
        data: stored.data,
        from: stored.from,
        ts: stored.ts,
    })
}

fn stripe_of(channel: &Channel) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    channel.hash(&mut hasher);
    (hasher.finish() as usize) % APPEND_LOCK_STRIPES
}

fn new_epoch() -> String {
    format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

fn position_of(tip: &Option<Tip>) -> StreamPosition {
    match tip {
        Some(t) => StreamPosition {
            offset: t.offset,
            epoch: t.epoch.clone(),
        },
        None => StreamPosition {
            offset: 0,
            epoch: Epoch::default(),
        },
    }
}

#[async_trait]
impl History for JetStreamHistory {
    async fn append(
        &self,
        channel: &Channel,
        new: NewPublication,
        _retention: Retention,
        idempotency_key: Option<&str>,
    ) -> Result<Appended, HistoryError> {
        let (kept, subject) = self.locate(channel)?;
        let deadline = tokio::time::Instant::now() + self.append_timeout;
        let busy = || {
            unavailable(format!(
                "{channel}: no append within {:?}",
                self.append_timeout
            ))
        };
        let stored = Stored {
            data: new.data,
            from: new.from,
            ts: new.ts,
        };
        let payload = Bytes::from(serde_json::to_vec(&stored).map_err(unavailable)?);
        // Every append carries a message id, so that one sent again after
        // a lost acknowledgement is stored once.
        let msg_id = match idempotency_key {
            Some(key) => format!("{channel}|{key}"),
            None => format!("{channel}|~{:032x}", rand::random::<u128>()),
        };
        // Callers behind an append that hangs give up at their deadline.
        let _serial =
            tokio::time::timeout_at(deadline, self.append_locks[stripe_of(channel)].lock())
                .await
                .map_err(|_| busy())?;
        // Whether an append of this call may have been stored unacknowledged:
        // then a duplicate answer is this call's own publication, and a
        // failure is an outcome unknown.
        let mut sent = false;
        // Everything is bounded by the deadline: a JetStream that stops
        // answering mid-way (an election, a partition) holds no caller.
        let attempt = self.append_until(
            kept, channel, &subject, &payload, &stored, &msg_id, deadline, &mut sent,
        );
        let outcome = tokio::time::timeout_at(deadline, attempt).await;
        match outcome {
            Ok(Ok(appended)) => Ok(appended),
            Err(_) if sent => {
                self.remember_tip(channel, None);
                Err(unknown(
                    &msg_id,
                    format!("no acknowledgement within {:?}", self.append_timeout),
                ))
            }
            Ok(Err(e)) => Err(e),
            Err(_) => {
                self.remember_tip(channel, None);
                Err(busy())
            }
        }
    }

    async fn position(&self, channel: &Channel) -> Result<StreamPosition, HistoryError> {
        self.reading(channel, |stream, subject| async move {
            Ok(position_of(&self.ask(fetch_tip(&stream, &subject)).await?))
        })
        .await
    }

    async fn read(
        &self,
        channel: &Channel,
        since: Option<&StreamPosition>,
        limit: usize,
    ) -> Result<Recovery, HistoryError> {
        self.reading(channel, |stream, subject| async move {
            self.read_from(&stream, &subject, channel, since, limit)
                .await
        })
        .await
    }
}

impl JetStreamHistory {
    /// One request to JetStream, bounded: one made while a stream has no
    /// leader is never answered, and NATS' own bound (10 s) would outlast
    /// every caller's deadline — and the election it waited through.
    async fn ask<T>(
        &self,
        request: impl std::future::Future<Output = Result<T, HistoryError>>,
    ) -> Result<T, HistoryError> {
        tokio::time::timeout(self.ask_within, request)
            .await
            .map_err(|_| unavailable(format!("no answer within {:?}", self.ask_within)))?
    }

    /// Runs the read `op` (see `on_stream`), and again after a failure
    /// while the deadline an append has is not over: a read is safe to
    /// repeat, and a stream between leaders (an election after a node died
    /// or froze) answers again within moments, where a caller told "try
    /// again" would come back later. A long read is not cut short: each of
    /// its requests has NATS' own bound.
    async fn reading<'a, T, F, Fut>(&'a self, channel: &Channel, op: F) -> Result<T, HistoryError>
    where
        F: Fn(Arc<stream::Stream>, String) -> Fut,
        Fut: std::future::Future<Output = Result<T, HistoryError>> + 'a,
    {
        let deadline = tokio::time::Instant::now() + self.append_timeout;
        loop {
            match self.on_stream(channel, &op).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if left <= READ_RETRY_PAUSE {
                        return Err(e);
                    }
                    tracing::debug!(channel = %channel, error = %e, "history read failed; again");
                    tokio::time::sleep(READ_RETRY_PAUSE).await;
                }
            }
        }
    }

    /// The attempts of one append until `deadline` (see `append`).
    #[allow(clippy::too_many_arguments)]
    async fn append_until(
        &self,
        kept: &KeptStream,
        channel: &Channel,
        subject: &str,
        payload: &Bytes,
        stored: &Stored,
        msg_id: &str,
        deadline: tokio::time::Instant,
        sent: &mut bool,
    ) -> Result<Appended, HistoryError> {
        let mut stream = kept.handle().await.map_err(unavailable)?;
        let mut tip = self.cached_tip(channel);
        // Whether `tip` may be used as it is (cached), or must be read (a
        // first append here, or a retry after another replica's).
        let mut known = tip.is_some();
        let mut attempt: u32 = 0;
        while tokio::time::Instant::now() < deadline {
            attempt += 1;
            if !known {
                match self.ask(fetch_tip(&stream, subject)).await {
                    Ok(t) => tip = t,
                    Err(e) => {
                        if self.recover(kept).await {
                            stream = kept.handle().await.map_err(unavailable)?;
                        } else {
                            // Between leaders: read again until the
                            // deadline answers the caller (with "outcome
                            // unknown" if an attempt was sent).
                            tracing::debug!(channel = %channel, error = %e, "tip unread; again");
                            tokio::time::sleep(READ_RETRY_PAUSE).await;
                        }
                        continue;
                    }
                }
            }
            let (offset, epoch, expected) = match &tip {
                Some(t) => (t.offset + 1, t.epoch.clone(), t.sequence),
                None => (1, Epoch::from(new_epoch()), 0),
            };
            let mut headers = HeaderMap::new();
            headers.insert(
                EXPECTED_LAST_SUBJECT_SEQUENCE,
                expected.to_string().as_str(),
            );
            headers.insert(HEADER_OFFSET, offset.to_string().as_str());
            headers.insert(HEADER_EPOCH, epoch.as_str());
            headers.insert(MSG_ID, msg_id);
            let ack = match self
                .appender
                .publish_with_headers(subject.to_owned(), headers, payload.clone())
                .await
            {
                Ok(future) => {
                    *sent = true;
                    future.await
                }
                Err(e) => Err(e),
            };
            match ack {
                Ok(ack) if ack.duplicate => {
                    let first = self
                        .ask(async {
                            stream
                                .get_raw_message(ack.sequence)
                                .await
                                .map_err(unavailable)
                        })
                        .await?;
                    if attempt > 1 && *sent {
                        // Ours, from an attempt whose answer was lost.
                        let publication = publication_of(channel, &first)?;
                        self.remember_tip(channel, None);
                        return Ok(Appended::New(publication));
                    }
                    let t = tip_of(&first)?;
                    return Ok(Appended::Duplicate(StreamPosition {
                        offset: t.offset,
                        epoch: t.epoch,
                    }));
                }
                Ok(ack) => {
                    self.remember_sequence(channel, offset, ack.sequence);
                    self.remember_tip(
                        channel,
                        Some(Tip {
                            offset,
                            epoch: epoch.clone(),
                            sequence: ack.sequence,
                        }),
                    );
                    return Ok(Appended::New(Publication {
                        channel: channel.clone(),
                        offset,
                        epoch,
                        data: stored.data.clone(),
                        from: stored.from.clone(),
                        ts: stored.ts,
                    }));
                }
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    // Another replica appended first: read the new tip and
                    // try again, after a short random pause so racing
                    // replicas spread out.
                    self.remember_tip(channel, None);
                    known = false;
                    let pause = rand::random_range(0..=(1u64 << attempt.min(5)));
                    if pause > 0 {
                        tokio::time::sleep(Duration::from_millis(pause)).await;
                    }
                }
                Err(e) if e.kind() == PublishErrorKind::StreamNotFound => {
                    // Nothing took it: the stream is gone (ensured again
                    // here) or has no leader yet (an election: sent again
                    // after a pause, until the deadline).
                    self.remember_tip(channel, None);
                    known = false;
                    if self.recover(kept).await {
                        stream = kept.handle().await.map_err(unavailable)?;
                    } else {
                        tracing::debug!(channel = %channel, error = %e, "append not taken; again");
                        tokio::time::sleep(READ_RETRY_PAUSE).await;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe
                    ) =>
                {
                    // Sent, unanswered: try again with the same id.
                    self.remember_tip(channel, None);
                    known = false;
                }
                Err(e) => {
                    self.remember_tip(channel, None);
                    if *sent && attempt > 1 {
                        return Err(unknown(msg_id, e));
                    }
                    return Err(unavailable(e));
                }
            }
        }
        let why = format!("{channel}: no append within the deadline");
        Err(if *sent {
            unknown(msg_id, why)
        } else {
            unavailable(why)
        })
    }

    async fn read_from(
        &self,
        stream: &stream::Stream,
        subject: &str,
        channel: &Channel,
        since: Option<&StreamPosition>,
        limit: usize,
    ) -> Result<Recovery, HistoryError> {
        let tip = self.ask(fetch_tip(stream, subject)).await?;
        let latest = position_of(&tip);
        let Some(tip) = tip else {
            return Ok(match since {
                Some(s) if !recoverable(s, &latest, None) => Recovery::Unrecoverable { latest },
                _ => Recovery::Recovered {
                    publications: Vec::new(),
                    latest,
                },
            });
        };
        let after = since.map_or(0, |s| s.offset);
        if limit == 0 && since.is_none() {
            return Ok(Recovery::Recovered {
                publications: Vec::new(),
                latest,
            });
        }
        if since.is_some_and(|s| s.epoch == latest.epoch && s.offset == latest.offset) {
            return Ok(Recovery::Recovered {
                publications: Vec::new(),
                latest,
            });
        }
        // Start at the first missed publication when its place in the stream
        // is known (still stored: then everything after it is too).
        let known = since
            .filter(|s| s.epoch == latest.epoch)
            .and_then(|s| self.sequence_of(channel, s.offset + 1));
        let start = match known {
            Some(sequence) => self.ask(first_kept(stream, subject, sequence)).await?,
            None => None,
        };
        let next = match start
            .filter(|m| tip_of(m).is_ok_and(|t| Some(t.offset) == since.map(|s| s.offset + 1)))
        {
            Some(message) => Some(message),
            None => {
                let first = self.ask(first_kept(stream, subject, 1)).await?;
                let first_offset = first.as_ref().map(tip_of).transpose()?.map(|t| t.offset);
                if let Some(s) = since
                    && !recoverable(s, &latest, first_offset)
                {
                    return Ok(Recovery::Unrecoverable { latest });
                }
                first
            }
        };
        let mut publications = Vec::new();
        let mut next = next;
        while let Some(message) = next {
            if publications.len() >= limit || message.sequence > tip.sequence {
                break;
            }
            let publication = publication_of(channel, &message)?;
            if publication.offset > after {
                publications.push(publication);
            }
            next = self
                .ask(first_kept(stream, subject, message.sequence + 1))
                .await?;
        }
        Ok(Recovery::Recovered {
            publications,
            latest,
        })
    }
}
