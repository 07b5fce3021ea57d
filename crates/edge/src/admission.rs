//! Admission control: how many connections this edge holds, and how fast
//! new ones are accepted. Checked before the WebSocket upgrade (or the SSE
//! stream), so a flood costs a refused HTTP request, not a connection.

use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::rate::TokenBucket;

#[derive(Debug)]
pub(crate) struct Admission {
    open: AtomicUsize,
    max: usize,
    new_connections: Mutex<TokenBucket>,
}

/// Held for the life of an admitted connection.
#[derive(Debug)]
pub(crate) struct Permit {
    admission: Arc<Admission>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.admission.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a connection was refused, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused {
    pub retry_after: Duration,
    pub reason: &'static str,
    /// A short name of the reason, for metrics.
    pub kind: &'static str,
}

impl Admission {
    pub(crate) fn new(max: usize, rate: u32) -> Arc<Self> {
        Arc::new(Admission {
            open: AtomicUsize::new(0),
            max,
            new_connections: Mutex::new(TokenBucket::new(rate, rate)),
        })
    }

    pub(crate) fn open_connections(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    pub(crate) fn admit(self: &Arc<Self>) -> Result<Permit, Refused> {
        let previous = self.open.fetch_add(1, Ordering::AcqRel);
        if previous >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused {
                // Spread retries out so they do not return together.
                retry_after: Duration::from_secs(rand::random_range(1..=5)),
                reason: "this server is at its connection limit",
                kind: "limit",
            });
        }
        let mut bucket = self.new_connections.lock();
        if !bucket.take() {
            let wait = bucket.wait();
            drop(bucket);
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused {
                // Spread too: clients told the same second come back
                // together, and are refused together again.
                retry_after: wait.max(Duration::from_secs(1))
                    + Duration::from_millis(rand::random_range(0..2000)),
                reason: "too many new connections; retry later",
                kind: "rate",
            });
        }
        Ok(Permit {
            admission: self.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn limits_open_connections_and_their_arrival_rate() {
        let admission = Admission::new(3, 100);
        let permits: Vec<Permit> = (0..3).map(|_| admission.admit().unwrap()).collect();
        assert_eq!(
            admission.admit().err().map(|r| r.reason),
            Some("this server is at its connection limit")
        );
        drop(permits);
        assert_eq!(admission.open_connections(), 0);

        let admission = Admission::new(1000, 10);
        let admitted: Vec<Permit> = (0..10).map(|_| admission.admit().unwrap()).collect();
        let refused = admission.admit().unwrap_err();
        assert!(refused.retry_after >= Duration::from_secs(1));
        assert_eq!(admission.open_connections(), 10);
        drop(admitted);
    }
}
