//! In-process bus for standalone mode: the semantics of core NATS (subject
//! wildcards, queue groups, request/reply, at-most-once with bounded
//! subscriber queues) without a network.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{
    Bus, BusError, DEFAULT_SUBSCRIPTION_CAPACITY, Headers, Message, Subscription, subject,
};

/// The in-process [`Bus`]: cheap to clone, every clone is the same bus.
#[derive(Clone)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

struct Inner {
    table: RwLock<Table>,
    next_id: AtomicU64,
    capacity: usize,
    max_payload: usize,
}

struct Entry {
    id: u64,
    queue: Option<String>,
    tx: mpsc::Sender<Message>,
}

/// Exact subjects are looked up by hash (the edge subscribes once per
/// channel, so there can be many); wildcard subscriptions are few and
/// scanned.
#[derive(Default)]
struct Table {
    exact: HashMap<String, Vec<Entry>>,
    wildcard: Vec<(String, Entry)>,
}

impl Table {
    fn remove(&mut self, subject: &str, id: u64) {
        if subject::has_wildcard(subject) {
            self.wildcard.retain(|(_, e)| e.id != id);
        } else if let Some(entries) = self.exact.get_mut(subject) {
            entries.retain(|e| e.id != id);
            if entries.is_empty() {
                self.exact.remove(subject);
            }
        }
    }
}

/// Removes the subscription from the table when the subscriber drops it.
struct Registration {
    inner: Arc<Inner>,
    subject: String,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut table = self.inner.table.write();
        table.remove(&self.subject, self.id);
    }
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBus {
    /// A bus with the default subscription capacity
    /// ([`DEFAULT_SUBSCRIPTION_CAPACITY`]).
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_SUBSCRIPTION_CAPACITY)
    }

    /// A bus whose subscriptions each buffer at most `capacity` messages.
    pub fn with_capacity(capacity: usize) -> Self {
        MemoryBus {
            inner: Arc::new(Inner {
                table: RwLock::new(Table::default()),
                next_id: AtomicU64::new(1),
                capacity: capacity.max(1),
                // the NATS server default, so both adapters refuse the same sizes
                max_payload: 1024 * 1024,
            }),
        }
    }

    /// How many subscriptions are registered (for tests and metrics).
    pub fn subscription_count(&self) -> usize {
        let table = self.read();
        table.exact.values().map(Vec::len).sum::<usize>() + table.wildcard.len()
    }

    fn read(&self) -> parking_lot::RwLockReadGuard<'_, Table> {
        self.inner.table.read()
    }

    fn add(&self, pattern: &str, queue: Option<&str>) -> Result<Subscription, BusError> {
        subject::validate(pattern, true)?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.inner.capacity);
        let entry = Entry {
            id,
            queue: queue.map(str::to_owned),
            tx,
        };
        {
            let mut table = self.inner.table.write();
            if subject::has_wildcard(pattern) {
                table.wildcard.push((pattern.to_owned(), entry));
            } else {
                table
                    .exact
                    .entry(pattern.to_owned())
                    .or_default()
                    .push(entry);
            }
        }
        let registration = Registration {
            inner: self.inner.clone(),
            subject: pattern.to_owned(),
            id,
        };
        let stream = ReceiverStream::new(rx);
        // The registration lives as long as the stream: dropping the
        // subscription removes it from the table.
        let stream = futures::StreamExt::map(stream, move |m| {
            let _keep = &registration;
            m
        });
        Ok(Subscription::new(stream))
    }

    /// Delivers to every matching plain subscriber and to one member of each
    /// matching queue group; returns how many subscribers matched.
    fn deliver(&self, message: Message) -> usize {
        let table = self.read();
        let exact = table.exact.get(&message.subject).into_iter().flatten();
        let wild = table
            .wildcard
            .iter()
            .filter(|(p, _)| subject::matches(p, &message.subject))
            .map(|(_, e)| e);
        let mut groups: Vec<(&str, Vec<&Entry>)> = Vec::new();
        let mut matched = 0;
        for entry in exact.chain(wild) {
            if entry.tx.is_closed() {
                continue;
            }
            matched += 1;
            match &entry.queue {
                None => offer(entry, message.clone()),
                Some(q) => match groups.iter_mut().find(|(name, _)| name == q) {
                    Some((_, members)) => members.push(entry),
                    None => groups.push((q.as_str(), vec![entry])),
                },
            }
        }
        for (_, members) in groups {
            // Spread load like the NATS server: a random member each time.
            let pick = rand::random_range(0..members.len());
            offer(members[pick], message.clone());
        }
        matched
    }
}

fn offer(entry: &Entry, message: Message) {
    if let Err(mpsc::error::TrySendError::Full(m)) = entry.tx.try_send(message) {
        tracing::warn!(subject = %m.subject, "slow bus subscriber: message dropped");
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<(), BusError> {
        subject::validate(subject, false)?;
        if payload.len() > self.inner.max_payload {
            return Err(BusError::TooLarge(format!(
                "{} bytes, the limit is {}",
                payload.len(),
                self.inner.max_payload
            )));
        }
        self.deliver(Message {
            subject: subject.to_owned(),
            reply: None,
            headers,
            payload,
        });
        Ok(())
    }

    async fn subscribe(&self, subject: &str) -> Result<Subscription, BusError> {
        self.add(subject, None)
    }

    async fn queue_subscribe(&self, subject: &str, group: &str) -> Result<Subscription, BusError> {
        if group.is_empty() || group.chars().any(char::is_whitespace) {
            return Err(BusError::InvalidSubject(format!("queue group {group:?}")));
        }
        self.add(subject, Some(group))
    }

    async fn request(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Message, BusError> {
        subject::validate(subject, false)?;
        let inbox = format!("_INBOX.{:032x}", rand::random::<u128>());
        let mut answers = self.add(&inbox, None)?;
        let matched = self.deliver(Message {
            subject: subject.to_owned(),
            reply: Some(inbox),
            headers,
            payload,
        });
        if matched == 0 {
            return Err(BusError::NoResponders(subject.to_owned()));
        }
        match tokio::time::timeout(timeout, answers.next()).await {
            Ok(Some(answer)) => Ok(answer),
            Ok(None) => Err(BusError::Connection("bus closed".into())),
            Err(_) => Err(BusError::Timeout(subject.to_owned())),
        }
    }

    async fn flush(&self) -> Result<(), BusError> {
        Ok(())
    }
}
