//! Idempotency keys: the same request with the same key, within the window,
//! gets the first answer and changes nothing. Concurrent duplicates wait for
//! the first one to finish and share its answer. (Across routing replicas,
//! JetStream's message-id dedup keeps storage and push jobs single.)

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use herald_proto::Refusal;
use tokio::sync::OnceCell;

/// Keys remembered at most; the oldest are forgotten first.
const MAX_KEYS: usize = 100_000;

pub(crate) struct IdempotencyCache<T> {
    window: Duration,
    state: Mutex<State<T>>,
}

struct State<T> {
    answers: HashMap<String, Arc<OnceCell<T>>>,
    order: VecDeque<(Instant, String)>,
}

impl<T: Clone> IdempotencyCache<T> {
    pub(crate) fn new(window: Duration) -> Self {
        IdempotencyCache {
            window,
            state: Mutex::new(State {
                answers: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }

    /// Runs `work` once per key within the window; everyone with the key
    /// gets its answer. A failed attempt is not remembered, so the request
    /// can be retried with the same key.
    pub(crate) async fn run<F, Fut>(&self, key: Option<String>, work: F) -> Result<T, Refusal>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, Refusal>>,
    {
        let Some(key) = key else {
            return work().await;
        };
        let cell = {
            let mut state = self.state.lock();
            let now = Instant::now();
            while let Some((at, _)) = state.order.front() {
                if now.duration_since(*at) < self.window && state.order.len() < MAX_KEYS {
                    break;
                }
                if let Some((_, old)) = state.order.pop_front() {
                    state.answers.remove(&old);
                }
            }
            match state.answers.get(&key) {
                Some(cell) => cell.clone(),
                None => {
                    let cell = Arc::new(OnceCell::new());
                    state.answers.insert(key.clone(), cell.clone());
                    state.order.push_back((now, key));
                    cell
                }
            }
        };
        cell.get_or_try_init(work).await.cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_duplicates_run_once_and_share_the_answer() {
        let cache = Arc::new(IdempotencyCache::<u64>::new(Duration::from_secs(60)));
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..5 {
            let cache = cache.clone();
            let runs = runs.clone();
            tasks.push(tokio::spawn(async move {
                cache
                    .run(Some("k".into()), || async {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok(runs.fetch_add(1, Ordering::SeqCst) as u64 + 100)
                    })
                    .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok(100));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_not_remembered_and_keys_expire() {
        let cache = IdempotencyCache::<u64>::new(Duration::from_millis(50));
        let failed = cache
            .run(Some("k".into()), || async {
                Err(Refusal::unavailable("down"))
            })
            .await;
        assert!(failed.is_err());
        assert_eq!(cache.run(Some("k".into()), || async { Ok(1) }).await, Ok(1));
        assert_eq!(cache.run(Some("k".into()), || async { Ok(2) }).await, Ok(1));
        tokio::time::advance(Duration::from_millis(60)).await;
        assert_eq!(cache.run(Some("k".into()), || async { Ok(3) }).await, Ok(3));
    }
}
