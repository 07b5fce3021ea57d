//! In-memory history: one bounded ring buffer per channel. A restart loses
//! it, so every channel gets a fresh epoch per process.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Appended, History, HistoryError, NewPublication, Recovery, Retention, recoverable};
use crate::channel::Channel;
use crate::protocol::{Publication, StreamPosition};
use crate::time::unix_millis as now_ms;

/// Idempotency keys remembered at most (oldest forgotten first).
const MAX_DEDUP_ENTRIES: usize = 100_000;

pub struct MemoryHistory {
    state: Mutex<State>,
    dedup_window: Duration,
    /// Epochs are this process's id plus a per-channel random part: unique
    /// across restarts, cheap to make.
    process_epoch: String,
}

#[derive(Default)]
struct State {
    channels: HashMap<Channel, Log>,
    dedup: HashMap<(Channel, String), StreamPosition>,
    dedup_order: VecDeque<(Instant, Channel, String)>,
}

struct Log {
    epoch: String,
    offset: u64,
    kept: VecDeque<Publication>,
    ttl: Duration,
}

impl Default for MemoryHistory {
    fn default() -> Self {
        Self::new(Duration::from_secs(120))
    }
}

impl MemoryHistory {
    /// `dedup_window`: how long an idempotency key is remembered.
    pub fn new(dedup_window: Duration) -> Self {
        MemoryHistory {
            state: Mutex::new(State::default()),
            dedup_window,
            process_epoch: format!("{:08x}", rand::random::<u32>()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    fn forget_old_keys(&mut self, window: Duration) {
        let now = Instant::now();
        while let Some((at, _, _)) = self.dedup_order.front() {
            if now.duration_since(*at) < window && self.dedup_order.len() <= MAX_DEDUP_ENTRIES {
                break;
            }
            if let Some((_, channel, key)) = self.dedup_order.pop_front() {
                self.dedup.remove(&(channel, key));
            }
        }
    }
}

impl Log {
    fn expire(&mut self) {
        let cutoff = now_ms().saturating_sub(self.ttl.as_millis() as u64);
        while self.kept.front().is_some_and(|p| p.ts < cutoff) {
            self.kept.pop_front();
        }
    }

    fn position(&self) -> StreamPosition {
        StreamPosition {
            offset: self.offset,
            epoch: self.epoch.clone(),
        }
    }
}

fn empty_position() -> StreamPosition {
    StreamPosition {
        offset: 0,
        epoch: String::new(),
    }
}

#[async_trait]
impl History for MemoryHistory {
    async fn append(
        &self,
        channel: &Channel,
        new: NewPublication,
        retention: Retention,
        idempotency_key: Option<&str>,
    ) -> Result<Appended, HistoryError> {
        let mut state = self.lock();
        state.forget_old_keys(self.dedup_window);
        if let Some(key) = idempotency_key
            && let Some(first) = state.dedup.get(&(channel.clone(), key.to_owned()))
        {
            return Ok(Appended::Duplicate(first.clone()));
        }
        let fresh_epoch = format!("{}{:04x}", self.process_epoch, rand::random::<u16>());
        let log = state
            .channels
            .entry(channel.clone())
            .or_insert_with(|| Log {
                epoch: fresh_epoch,
                offset: 0,
                kept: VecDeque::new(),
                ttl: retention.ttl,
            });
        log.ttl = retention.ttl;
        log.offset += 1;
        let publication = Publication {
            channel: channel.clone(),
            offset: log.offset,
            epoch: log.epoch.clone(),
            data: new.data,
            from: new.from,
            ts: new.ts,
        };
        if retention.size > 0 {
            while log.kept.len() >= retention.size {
                log.kept.pop_front();
            }
            log.kept.push_back(publication.clone());
        }
        log.expire();
        let position = log.position();
        if let Some(key) = idempotency_key {
            state
                .dedup
                .insert((channel.clone(), key.to_owned()), position);
            state
                .dedup_order
                .push_back((Instant::now(), channel.clone(), key.to_owned()));
        }
        Ok(Appended::New(publication))
    }

    async fn position(&self, channel: &Channel) -> Result<StreamPosition, HistoryError> {
        Ok(self
            .lock()
            .channels
            .get(channel)
            .map_or_else(empty_position, Log::position))
    }

    async fn read(
        &self,
        channel: &Channel,
        since: Option<&StreamPosition>,
        limit: usize,
    ) -> Result<Recovery, HistoryError> {
        let mut state = self.lock();
        let Some(log) = state.channels.get_mut(channel) else {
            let latest = empty_position();
            return Ok(match since {
                Some(s) if !recoverable(s, &latest, None) => Recovery::Unrecoverable { latest },
                _ => Recovery::Recovered {
                    publications: Vec::new(),
                    latest,
                },
            });
        };
        log.expire();
        let latest = log.position();
        let after = match since {
            None => 0,
            Some(s) => {
                if !recoverable(s, &latest, log.kept.front().map(|p| p.offset)) {
                    return Ok(Recovery::Unrecoverable { latest });
                }
                s.offset
            }
        };
        let publications = log
            .kept
            .iter()
            .filter(|p| p.offset > after)
            .take(limit)
            .cloned()
            .collect();
        Ok(Recovery::Recovered {
            publications,
            latest,
        })
    }
}
