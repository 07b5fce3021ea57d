//! Token buckets: per connection for commands, per edge for new
//! connections, and by key (user, address) in a bounded table.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// `rate` tokens per second, at most `burst` saved up.
    pub(crate) fn new(rate: u32, burst: u32) -> Self {
        TokenBucket {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            at: Instant::now(),
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
    }

    /// Takes a token if there is one.
    pub(crate) fn take(&mut self) -> bool {
        self.refill();
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until a token is available.
    pub(crate) fn wait(&mut self) -> Duration {
        self.refill();
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        }
    }
}

impl TokenBucket {
    /// Whether it is full again: its owner has been quiet long enough that
    /// forgetting it changes nothing.
    pub(crate) fn is_full(&mut self) -> bool {
        self.refill();
        self.tokens >= self.burst
    }
}

/// Shards of a [`KeyedLimiter`].
const LIMITER_SHARDS: usize = 16;

/// Token buckets by key, in a table of at most `max` keys. A full table
/// forgets the buckets that are full again (nothing is lost: a new one
/// starts full); if that frees nothing, new keys are refused until it does
/// — the table never grows past its bound.
pub(crate) struct KeyedLimiter<K = String> {
    rate: u32,
    burst: u32,
    per_shard: usize,
    shards: Box<[Mutex<HashMap<K, TokenBucket>>]>,
    hasher: std::hash::RandomState,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    pub(crate) fn new(rate: u32, burst: u32, max: usize) -> Self {
        KeyedLimiter {
            rate,
            burst,
            per_shard: max.div_ceil(LIMITER_SHARDS).max(1),
            shards: (0..LIMITER_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            hasher: std::hash::RandomState::new(),
        }
    }

    /// Takes a token for `key`: false when it has none left (or the table
    /// is full of keys that are all busy).
    pub(crate) fn take<Q>(&self, key: &Q) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        use std::hash::BuildHasher;
        let at = self.hasher.hash_one(key) as usize % self.shards.len();
        let mut shard = self.shards[at].lock();
        if let Some(bucket) = shard.get_mut(key) {
            return bucket.take();
        }
        if shard.len() >= self.per_shard {
            shard.retain(|_, bucket| !bucket.is_full());
            if shard.len() >= self.per_shard {
                return false;
            }
        }
        let mut bucket = TokenBucket::new(self.rate, self.burst);
        let taken = bucket.take();
        shard.insert(key.to_owned(), bucket);
        taken
    }

    /// Keys held now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bursts_then_refills_at_the_rate() {
        let mut bucket = TokenBucket::new(10, 5);
        for _ in 0..5 {
            assert!(bucket.take());
        }
        assert!(!bucket.take());
        assert!(bucket.wait() > Duration::ZERO);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(bucket.take());
        assert!(!bucket.take());
        tokio::time::advance(Duration::from_secs(10)).await;
        for _ in 0..5 {
            assert!(bucket.take());
        }
        assert!(!bucket.take(), "never more than the burst");
    }

    #[tokio::test(start_paused = true)]
    async fn the_keyed_table_stays_within_its_bound_and_forgets_idle_keys() {
        let limiter: KeyedLimiter = KeyedLimiter::new(1, 2, 16);
        assert!(limiter.take("a"));
        assert!(limiter.take("a"));
        assert!(!limiter.take("a"), "a's burst is spent");
        for i in 0..1000 {
            limiter.take(format!("k{i}").as_str());
        }
        assert!(limiter.len() <= 16, "bounded: {}", limiter.len());
        // once they are all idle, room is made for new keys
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(limiter.take("late"));
    }
}
