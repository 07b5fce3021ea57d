//! In-memory history: one bounded ring buffer per channel. A restart loses
//! it, so every channel gets a fresh epoch per process.
//!
//! Its memory is bounded twice: each channel by its namespace (size, TTL),
//! all of them together by a byte budget — past it the oldest publications
//! of any channel go first (history is a recovery buffer: losing its oldest
//! end is what happens anyway). [`MemoryHistory::sweep`], run every second
//! by standalone, drops what expired and forgets channels quiet for longer
//! than their TTL, so the maps shrink when the traffic moves on.

use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Appended, History, HistoryError, NewPublication, Recovery, Retention, recoverable};
use crate::time::unix_millis as now_ms;
use herald_protocol::channel::Channel;
use herald_protocol::{Epoch, Publication, StreamPosition};

/// Idempotency keys remembered at most (oldest forgotten first).
const MAX_DEDUP_ENTRIES: usize = 100_000;

/// The [`History`](super::History) in this process's memory (standalone):
/// a log per channel, within a byte budget for all of them.
pub struct MemoryHistory {
    state: Mutex<State>,
    dedup_window: Duration,
    /// Bytes all kept publications may take, roughly.
    budget: usize,
    /// Epochs are this process's id plus a per-channel random part: unique
    /// across restarts, cheap to make.
    process_epoch: String,
}

#[derive(Default)]
struct State {
    channels: HashMap<Channel, Log>,
    dedup: HashMap<(Channel, String), StreamPosition>,
    dedup_order: VecDeque<(Instant, Channel, String)>,
    /// Bytes kept, by the estimate of [`cost`].
    bytes: usize,
    /// Publications kept, of every channel.
    kept: usize,
    /// Every kept publication in the order it came (with entries of ones
    /// trimmed since, compacted from time to time): the budget's queue.
    arrivals: VecDeque<Arrival>,
    next_log: u64,
}

/// A publication's place in the budget's queue.
struct Arrival {
    channel: Channel,
    /// The log it was kept in (a channel forgotten and published to again
    /// has a new one).
    log: u64,
    offset: u64,
}

struct Log {
    id: u64,
    epoch: Epoch,
    offset: u64,
    kept: VecDeque<Publication>,
    ttl: Duration,
    last_append: Instant,
}

/// The bytes a kept publication costs, roughly: its data and strings plus
/// the structure around them.
fn cost(p: &Publication) -> usize {
    p.data.get().len() + p.epoch.len() + p.from.as_ref().map_or(0, String::len) + 128
}

/// The default budget of all kept publications.
pub const DEFAULT_BUDGET: usize = 256 * 1024 * 1024;

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
            budget: DEFAULT_BUDGET,
            process_epoch: format!("{:08x}", rand::random::<u32>()),
        }
    }

    /// All kept publications together take at most about `bytes`.
    pub fn with_budget(mut self, bytes: usize) -> Self {
        self.budget = bytes;
        self
    }

    /// Drops expired publications and forgets channels that have kept
    /// nothing for longer than their TTL; answers how many were forgotten.
    pub fn sweep(&self) -> usize {
        let mut state = self.lock();
        let now = Instant::now();
        let mut freed = (0, 0);
        let mut forget = Vec::new();
        for (channel, log) in &mut state.channels {
            let (bytes, count) = log.expire();
            freed.0 += bytes;
            freed.1 += count;
            if log.kept.is_empty() && now.duration_since(log.last_append) >= log.ttl {
                forget.push(channel.clone());
            }
        }
        state.bytes -= freed.0;
        state.kept -= freed.1;
        for channel in &forget {
            state.channels.remove(channel);
        }
        state.compact();
        // Give memory back once the traffic has moved on.
        if state.channels.capacity() > 64 && state.channels.len() < state.channels.capacity() / 4 {
            state.channels.shrink_to_fit();
        }
        metrics::gauge!("herald_history_memory_bytes").set(state.bytes as f64);
        metrics::gauge!("herald_history_channels").set(state.channels.len() as f64);
        forget.len()
    }

    /// Runs [`MemoryHistory::sweep`] every `every` until `shutdown`.
    pub fn sweep_every(
        self: &std::sync::Arc<Self>,
        every: Duration,
        shutdown: crate::shutdown::Shutdown,
    ) -> tokio::task::JoinHandle<()> {
        let history = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = shutdown.wait() => break,
                    _ = tick.tick() => { history.sweep(); }
                }
            }
        })
    }

    /// Bytes kept now (the budget's estimate) and channels known.
    pub fn usage(&self) -> (usize, usize) {
        let state = self.lock();
        (state.bytes, state.channels.len())
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, State> {
        self.state.lock()
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

impl State {
    /// Drops the oldest kept publications, of any channel, until the
    /// estimate is within `budget`.
    fn enforce(&mut self, budget: usize) {
        while self.bytes > budget {
            let Some(arrival) = self.arrivals.pop_front() else {
                break;
            };
            let Some(log) = self.channels.get_mut(&arrival.channel) else {
                continue;
            };
            if log.id != arrival.log || log.kept.front().map(|p| p.offset) != Some(arrival.offset) {
                continue; // trimmed already
            }
            if let Some(p) = log.kept.pop_front() {
                self.bytes -= cost(&p);
                self.kept -= 1;
            }
        }
    }

    /// Forgets queue entries of publications no longer kept, once they
    /// outnumber the kept ones.
    fn compact(&mut self) {
        if self.arrivals.len() <= 2 * self.kept + 1024 {
            return;
        }
        let channels = &self.channels;
        self.arrivals.retain(|a| {
            channels.get(&a.channel).is_some_and(|log| {
                log.id == a.log
                    && log.kept.front().is_some_and(|p| p.offset <= a.offset)
                    && log.kept.back().is_some_and(|p| a.offset <= p.offset)
            })
        });
        self.arrivals.shrink_to_fit();
    }
}

impl Log {
    /// Drops what outlived the TTL; answers the bytes and count dropped.
    fn expire(&mut self) -> (usize, usize) {
        let cutoff = now_ms().saturating_sub(self.ttl.as_millis() as u64);
        let mut freed = (0, 0);
        while self.kept.front().is_some_and(|p| p.ts < cutoff) {
            if let Some(p) = self.kept.pop_front() {
                freed.0 += cost(&p);
                freed.1 += 1;
            }
        }
        freed
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
        epoch: Epoch::default(),
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
        let next_log = state.next_log;
        let log = state
            .channels
            .entry(channel.clone())
            .or_insert_with(|| Log {
                id: next_log,
                epoch: Epoch::from(fresh_epoch),
                offset: 0,
                kept: VecDeque::new(),
                ttl: retention.ttl,
                last_append: Instant::now(),
            });
        let log_id = log.id;
        log.ttl = retention.ttl;
        log.offset += 1;
        log.last_append = Instant::now();
        let publication = Publication {
            channel: channel.clone(),
            offset: log.offset,
            epoch: log.epoch.clone(),
            data: new.data,
            from: new.from,
            ts: new.ts,
        };
        let (mut freed_bytes, mut freed) = log.expire();
        let mut added = 0;
        if retention.size > 0 {
            while log.kept.len() >= retention.size {
                if let Some(p) = log.kept.pop_front() {
                    freed_bytes += cost(&p);
                    freed += 1;
                }
            }
            added = cost(&publication);
            log.kept.push_back(publication.clone());
        }
        let position = log.position();
        if state.next_log == log_id {
            state.next_log += 1;
        }
        state.bytes = state.bytes + added - freed_bytes;
        state.kept = state.kept + usize::from(added > 0) - freed;
        if added > 0 {
            state.arrivals.push_back(Arrival {
                channel: channel.clone(),
                log: log_id,
                offset: position.offset,
            });
        }
        state.enforce(self.budget);
        state.compact();
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
        let (bytes, count) = log.expire();
        let latest = log.position();
        let after = match since {
            None => 0,
            Some(s) => {
                if !recoverable(s, &latest, log.kept.front().map(|p| p.offset)) {
                    state.bytes -= bytes;
                    state.kept -= count;
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
        state.bytes -= bytes;
        state.kept -= count;
        Ok(Recovery::Recovered {
            publications,
            latest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    fn publication(bytes: usize) -> NewPublication {
        NewPublication {
            data: RawValue::from_string(format!("\"{}\"", "x".repeat(bytes))).unwrap(),
            from: None,
            ts: now_ms(),
        }
    }

    fn keep(ttl: Duration) -> Retention {
        Retention { size: 100, ttl }
    }

    #[tokio::test]
    async fn all_channels_together_stay_within_the_budget_oldest_first() {
        let history = MemoryHistory::default().with_budget(100_000);
        for i in 0..1000 {
            let channel = Channel::new(&format!("c{i}")).unwrap();
            history
                .append(
                    &channel,
                    publication(1000),
                    keep(Duration::from_secs(600)),
                    None,
                )
                .await
                .unwrap();
        }
        let (bytes, _) = history.usage();
        assert!(bytes <= 100_000, "{bytes} bytes kept");
        // the oldest went, the newest stayed
        let first = history
            .read(&Channel::new("c0").unwrap(), None, 10)
            .await
            .unwrap();
        let last = history
            .read(&Channel::new("c999").unwrap(), None, 10)
            .await
            .unwrap();
        assert!(
            matches!(first, Recovery::Recovered { ref publications, .. } if publications.is_empty())
        );
        assert!(
            matches!(last, Recovery::Recovered { ref publications, .. } if publications.len() == 1)
        );
    }

    #[tokio::test]
    async fn the_sweep_forgets_expired_channels_and_their_bytes() {
        let history = MemoryHistory::default();
        for i in 0..500 {
            let channel = Channel::new(&format!("c{i}")).unwrap();
            history
                .append(&channel, publication(100), keep(Duration::ZERO), None)
                .await
                .unwrap();
        }
        // a TTL of zero: everything has expired once the clock moves on
        let appended = now_ms();
        while now_ms() <= appended {
            tokio::task::yield_now().await;
        }
        assert_eq!(history.sweep(), 500);
        assert_eq!(history.usage(), (0, 0));
        let state = history.lock();
        assert!(
            state.arrivals.len() <= 1024,
            "{} queue entries",
            state.arrivals.len()
        );
    }
}
