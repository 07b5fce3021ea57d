//! In-memory history: one bounded ring buffer per channel. A restart loses
//! it, so every channel gets a fresh epoch per process.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use super::{History, HistoryError, NewPublication, Recovery, Retention};
use crate::channel::Channel;
use crate::protocol::{Publication, StreamPosition};
use crate::time::unix_millis as now_ms;

pub struct MemoryHistory {
    channels: Mutex<HashMap<Channel, Log>>,
    /// Epochs are this process's id plus a per-channel counter: unique
    /// across restarts, cheap to make.
    process_epoch: String,
}

struct Log {
    epoch: String,
    offset: u64,
    kept: VecDeque<Publication>,
}

impl Default for MemoryHistory {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryHistory {
    pub fn new() -> Self {
        MemoryHistory {
            channels: Mutex::new(HashMap::new()),
            process_epoch: format!("{:08x}", rand::random::<u32>()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Channel, Log>> {
        match self.channels.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

impl Log {
    fn expire(&mut self, ttl: Duration) {
        let cutoff = now_ms().saturating_sub(ttl.as_millis() as u64);
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

#[async_trait]
impl History for MemoryHistory {
    async fn append(
        &self,
        channel: &Channel,
        new: NewPublication,
        retention: Retention,
    ) -> Result<Publication, HistoryError> {
        let mut channels = self.lock();
        let fresh_epoch = || format!("{}{:04x}", self.process_epoch, rand::random::<u16>());
        let log = channels.entry(channel.clone()).or_insert_with(|| Log {
            epoch: fresh_epoch(),
            offset: 0,
            kept: VecDeque::new(),
        });
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
            if log.kept.len() >= retention.size {
                log.kept.pop_front();
            }
            log.kept.push_back(publication.clone());
        }
        log.expire(retention.ttl);
        Ok(publication)
    }

    async fn position(&self, channel: &Channel) -> Result<StreamPosition, HistoryError> {
        let mut channels = self.lock();
        let epoch = format!("{}{:04x}", self.process_epoch, rand::random::<u16>());
        let log = channels.entry(channel.clone()).or_insert_with(|| Log {
            epoch,
            offset: 0,
            kept: VecDeque::new(),
        });
        Ok(log.position())
    }

    async fn read(
        &self,
        channel: &Channel,
        since: Option<&StreamPosition>,
        limit: usize,
    ) -> Result<Recovery, HistoryError> {
        let latest = self.position(channel).await?;
        let channels = self.lock();
        let Some(log) = channels.get(channel) else {
            return Ok(Recovery::Unrecoverable { latest });
        };
        let after = match since {
            None => 0,
            Some(p) if p.epoch != log.epoch => return Ok(Recovery::Unrecoverable { latest }),
            Some(p) => p.offset,
        };
        if after > log.offset {
            return Ok(Recovery::Unrecoverable { latest });
        }
        // Everything after `after` must still be kept for a full recovery.
        let oldest_kept = log.kept.front().map_or(log.offset + 1, |p| p.offset);
        if since.is_some() && after + 1 < oldest_kept {
            return Ok(Recovery::Unrecoverable { latest });
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    fn new(i: u64) -> NewPublication {
        NewPublication {
            data: RawValue::from_string(i.to_string()).unwrap(),
            from: None,
            ts: now_ms(),
        }
    }

    const KEEP_100: Retention = Retention {
        size: 100,
        ttl: Duration::from_secs(3600),
    };

    #[tokio::test]
    async fn offsets_grow_by_one_and_recovery_follows_retention() {
        let h = MemoryHistory::new();
        let c = Channel::new("c").unwrap();
        for i in 1..=500 {
            let p = h.append(&c, new(i), KEEP_100).await.unwrap();
            assert_eq!(p.offset, i);
        }
        let epoch = h.position(&c).await.unwrap().epoch;
        let at = |offset| StreamPosition {
            offset,
            epoch: epoch.clone(),
        };
        match h.read(&c, None, 1000).await.unwrap() {
            Recovery::Recovered {
                publications,
                latest,
            } => {
                let offsets: Vec<u64> = publications.iter().map(|p| p.offset).collect();
                assert_eq!(offsets, (401..=500).collect::<Vec<_>>());
                assert_eq!(latest.offset, 500);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            h.read(&c, Some(&at(350)), 1000).await.unwrap(),
            Recovery::Unrecoverable { .. }
        ));
        match h.read(&c, Some(&at(450)), 1000).await.unwrap() {
            Recovery::Recovered { publications, .. } => {
                let offsets: Vec<u64> = publications.iter().map(|p| p.offset).collect();
                assert_eq!(offsets, (451..=500).collect::<Vec<_>>());
            }
            other => panic!("{other:?}"),
        }
        // exactly the oldest boundary: after 400 → 401..500 are all kept
        assert!(matches!(
            h.read(&c, Some(&at(400)), 1000).await.unwrap(),
            Recovery::Recovered { .. }
        ));
        let other_epoch = StreamPosition {
            offset: 450,
            epoch: "nope".into(),
        };
        assert!(matches!(
            h.read(&c, Some(&other_epoch), 1000).await.unwrap(),
            Recovery::Unrecoverable { .. }
        ));
    }

    #[tokio::test]
    async fn a_new_process_has_a_new_epoch() {
        let c = Channel::new("c").unwrap();
        let a = MemoryHistory::new().position(&c).await.unwrap();
        let b = MemoryHistory::new().position(&c).await.unwrap();
        assert_ne!(a.epoch, b.epoch);
    }
}
