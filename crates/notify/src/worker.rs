//! The push worker: takes jobs off the work queue (at least once, a bounded
//! number at a time), coalesces bursts, limits each user's rate, sends to
//! every device, retries with backoff that honours `Retry-After`, removes
//! dead devices with the care each service asks for, records each device's
//! status, and acknowledges a job only when every device is settled.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use herald_core::config::Config;
use herald_core::shutdown::Shutdown;
use herald_core::time::unix_millis;
use herald_core::work_queue::{Notification, PushJob, Taken, WorkQueue};
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::device::Device;
use crate::providers::{Alert, Outcome, Providers};
use crate::stats::PushResult;
use crate::store::{DeliveryState, DeviceStatus, TokenStore};

/// How often coalescing windows are checked.
const TICK: Duration = Duration::from_millis(50);
/// How often the queue's backlog is measured.
const BACKLOG_EVERY: Duration = Duration::from_secs(5);
/// Jobs of a summary whose status follows the summary's, at most.
const MAX_SUMMARIZED: usize = 1000;
/// The first retry's delay; it doubles with each attempt.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Alerts of one user and collapse key arriving within the window.
struct Window {
    due: Instant,
    count: u32,
    /// Jobs folded into the summary: acknowledged once it is queued.
    held: Vec<Taken>,
    last: PushJob,
}

/// The push worker: takes jobs, coalesces, rate-limits, sends to every
/// device, records status, retries and dead-letters.
pub struct Worker {
    config: Arc<Config>,
    store: Arc<dyn TokenStore>,
    providers: Arc<Providers>,
    queue: Arc<dyn WorkQueue>,
    windows: Mutex<HashMap<(String, String), Window>>,
    /// Push times of each user within the last hour.
    sent: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Worker {
    /// A worker over `queue` that sends with `providers` and records in
    /// `store`.
    pub fn new(
        config: Arc<Config>,
        store: Arc<dyn TokenStore>,
        providers: Arc<Providers>,
        queue: Arc<dyn WorkQueue>,
    ) -> Arc<Self> {
        Arc::new(Worker {
            config,
            store,
            providers,
            queue,
            windows: Mutex::new(HashMap::new()),
            sent: Mutex::new(HashMap::new()),
        })
    }

    /// Works the queue until `shutdown`; then finishes what it holds
    /// (open windows are summarised now).
    pub fn start(self: &Arc<Self>, shutdown: Shutdown) -> JoinHandle<()> {
        let worker = self.clone();
        tokio::spawn(async move {
            let permits = Arc::new(Semaphore::new(worker.config.notify.push_concurrency));
            let mut tick = tokio::time::interval(TICK);
            let mut measure = tokio::time::interval(BACKLOG_EVERY);
            loop {
                tokio::select! {
                    _ = shutdown.wait() => break,
                    _ = tick.tick() => worker.close_windows(false).await,
                    _ = measure.tick() => worker.measure_backlog().await,
                    permit = permits.clone().acquire_owned() => {
                        let Ok(permit) = permit else { break };
                        let taken = tokio::select! {
                            _ = shutdown.wait() => break,
                            taken = worker.queue.take(Duration::from_millis(200)) => taken,
                        };
                        match taken {
                            Ok(Some(taken)) => {
                                let worker = worker.clone();
                                tokio::spawn(async move {
                                    worker.process(taken).await;
                                    drop(permit);
                                });
                            }
                            Ok(None) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "push queue unavailable");
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        }
                    }
                }
            }
            // Wait for jobs in flight, then summarise what is open.
            let _ = permits
                .acquire_many(worker.config.notify.push_concurrency as u32)
                .await;
            worker.close_windows(true).await;
        })
    }

    /// `herald_notify_queue_pending`: what the autoscaler and the backlog
    /// alert watch.
    async fn measure_backlog(&self) {
        match tokio::time::timeout(BACKLOG_EVERY, self.queue.backlog()).await {
            Ok(Ok(n)) => metrics::gauge!("herald_notify_queue_pending").set(n as f64),
            Ok(Err(e)) => tracing::debug!(error = %e, "push queue backlog unknown"),
            Err(_) => tracing::debug!("push queue backlog: no answer"),
        }
    }

    async fn process(&self, taken: Taken) {
        let job = &taken.job;
        tracing::debug!(job = %job.id, user = %job.user, attempt = taken.attempt, "push job taken");
        // A burst of alerts for one user and collapse key: the first goes
        // now, the rest become one summary at the end of the window.
        // (Only on first delivery: a retry is this job's own, not a new alert.)
        if let (Some(notification), false, None, 1) = (
            &job.notification,
            job.summary,
            &job.device_id,
            taken.attempt,
        ) {
            let key = (
                job.user.clone(),
                notification.collapse_key.clone().unwrap_or_default(),
            );
            let mut windows = self.windows.lock();
            if let Some(window) = windows.get_mut(&key) {
                window.count += 1;
                window.last = job.clone();
                window.held.push(taken);
                return;
            }
            windows.insert(
                key,
                Window {
                    due: Instant::now()
                        + Duration::from_millis(self.config.notify.coalesce_window_ms),
                    count: 1,
                    held: Vec::new(),
                    last: job.clone(),
                },
            );
        }
        self.deliver(taken).await;
    }

    /// Queues the summary of each window that is over (all of them when
    /// `all`), then lets go of the jobs it summarises.
    async fn close_windows(&self, all: bool) {
        let now = Instant::now();
        let closed: Vec<Window> = {
            let mut windows = self.windows.lock();
            let keys: Vec<(String, String)> = windows
                .iter()
                .filter(|(_, w)| all || w.due <= now)
                .map(|(k, _)| k.clone())
                .collect();
            keys.iter().filter_map(|k| windows.remove(k)).collect()
        };
        for window in closed {
            if window.count <= 1 {
                continue;
            }
            let last = window.last;
            let collapse_key = last
                .notification
                .as_ref()
                .and_then(|n| n.collapse_key.clone());
            let summary = PushJob {
                id: format!("{}-summary-{}", last.id, window.count),
                user: last.user.clone(),
                notification: Some(Notification {
                    title: last
                        .notification
                        .as_ref()
                        .map(|n| n.title.clone())
                        .unwrap_or_default(),
                    body: format!("{} new messages", window.count),
                    collapse_key,
                }),
                data: last.data.clone(),
                channel: last.channel.clone(),
                created_ms: unix_millis(),
                device_id: None,
                summary: true,
                summarizes: window
                    .held
                    .iter()
                    .map(|t| t.job.id.clone())
                    .take(MAX_SUMMARIZED)
                    .collect(),
            };
            match self.queue.push(&summary).await {
                Ok(()) => {
                    for taken in window.held {
                        taken.ack().await;
                    }
                }
                Err(e) => {
                    // Not acknowledged: the jobs come again and are summarised
                    // then.
                    tracing::warn!(error = %e, "summary not queued; jobs will be redelivered");
                    for taken in window.held {
                        taken.retry(BACKOFF_BASE).await;
                    }
                }
            }
        }
    }

    /// Whether `user` may get another push this hour.
    fn within_rate(&self, user: &str) -> bool {
        let mut sent = self.sent.lock();
        if sent.len() > 100_000 {
            sent.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| t.elapsed() < Duration::from_secs(3600))
            });
        }
        let times = sent.entry(user.to_owned()).or_default();
        while times
            .front()
            .is_some_and(|t| t.elapsed() >= Duration::from_secs(3600))
        {
            times.pop_front();
        }
        if times.len() >= self.config.notify.push_rate_per_hour as usize {
            return false;
        }
        times.push_back(Instant::now());
        true
    }

    /// Sends a job to its devices and settles it.
    async fn deliver(&self, taken: Taken) {
        let job = taken.job.clone();
        let attempt = taken.attempt;
        let devices = match self.devices_of(&job).await {
            Ok(d) => d,
            Err(reason) => {
                tracing::warn!(job = %job.id, reason, "devices unavailable; retrying");
                taken.retry(backoff(attempt)).await;
                return;
            }
        };
        // Where each device stands from earlier attempts (a first delivery
        // has none: its id is new).
        let earlier: HashMap<String, DeviceStatus> = if attempt == 1 {
            HashMap::new()
        } else {
            match self.store.status(&job.id).await {
                Ok(statuses) => statuses
                    .into_iter()
                    .map(|s| (s.device_id.clone(), s))
                    .collect(),
                Err(e) => {
                    tracing::warn!(job = %job.id, error = %e, "status unavailable; retrying");
                    taken.retry(backoff(attempt)).await;
                    return;
                }
            }
        };
        let pending: Vec<&Device> = devices
            .iter()
            .filter(|d| !earlier.get(&d.id).is_some_and(|s| s.state.is_final()))
            .collect();
        if pending.is_empty() {
            taken.ack().await;
            return;
        }
        if taken.attempt == 1 && !self.within_rate(&job.user) {
            for device in &pending {
                self.record(
                    &job,
                    device,
                    DeliveryState::Failed,
                    "rate limited: too many pushes this hour",
                    1,
                )
                .await;
            }
            taken.ack().await;
            return;
        }
        let alert = alert_of(&job);
        let sends = pending
            .iter()
            .map(|d| self.send_one(&job, d, &alert, taken.attempt));
        let results = futures::future::join_all(sends).await;
        let mut wait: Option<Duration> = None;
        let mut retrying = Vec::new();
        for (device, result) in pending.iter().zip(results) {
            if let Some((after, reason)) = result {
                wait = Some(wait.map_or(after, |w| w.max(after)));
                retrying.push((*device, reason));
            }
        }
        match wait {
            None => taken.ack().await,
            Some(_) if taken.attempt >= self.config.notify.push_max_attempts => {
                let mut reasons = Vec::new();
                for (device, reason) in retrying {
                    let why = format!("gave up after {} attempts: {reason}", taken.attempt);
                    self.record(&job, device, DeliveryState::Failed, &why, taken.attempt)
                        .await;
                    reasons.push(why);
                }
                metrics::counter!("herald_notify_dead_letters_total").increment(1);
                if let Err(e) = self.queue.dead_letter(&job, &reasons.join("; ")).await {
                    tracing::error!(job = %job.id, error = %e, "dead letter not kept");
                }
                taken.ack().await;
            }
            Some(after) => {
                let delay = after.max(backoff(taken.attempt));
                taken.retry(delay).await;
            }
        }
    }

    async fn devices_of(&self, job: &PushJob) -> Result<Vec<Device>, String> {
        match &job.device_id {
            Some(id) => self
                .store
                .get(id)
                .await
                .map(|d| d.into_iter().collect())
                .map_err(|e| e.to_string()),
            None => self.store.list(&job.user).await.map_err(|e| e.to_string()),
        }
    }

    /// Sends to one device and records how it went; `Some((wait, reason))`
    /// when it should be tried again.
    async fn send_one(
        &self,
        job: &PushJob,
        device: &Device,
        alert: &Alert,
        attempt: u32,
    ) -> Option<(Duration, String)> {
        // A device registered again after this moment is a new, valid
        // registration, whatever the service answers about the old one.
        let started_ms = unix_millis();
        let outcome = self.providers.send(device, alert).await;
        tracing::debug!(job = %job.id, device = %device.id, ?outcome, "push sent");
        let outcome = match outcome {
            // A BadDeviceToken may be a token of the other APNs environment:
            // try that before giving up on the device.
            Outcome::BadToken => {
                let other = device.environment.other();
                match self.providers.send_in(device, alert, other).await {
                    Outcome::Sent => {
                        if let Err(e) = self.store.set_environment(&device.id, other).await {
                            tracing::warn!(error = %e, "device environment not updated");
                        }
                        Outcome::Sent
                    }
                    Outcome::BadToken | Outcome::Gone { .. } => Outcome::Gone {
                        since_ms: None,
                        reason: "APNs: BadDeviceToken in both environments".into(),
                    },
                    other => other,
                }
            }
            other => other,
        };
        let result = match &outcome {
            Outcome::Sent => PushResult::Sent,
            Outcome::Retry { .. } => PushResult::Retry,
            Outcome::Gone { .. } => PushResult::Gone,
            Outcome::BadToken | Outcome::Failed { .. } => PushResult::Failed,
        };
        crate::stats::push(device.platform, result);
        match outcome {
            Outcome::Sent => {
                self.record(job, device, DeliveryState::Sent, "sent", attempt)
                    .await;
                None
            }
            Outcome::Retry { after, reason } => {
                let wait = after.unwrap_or_else(|| backoff(attempt));
                self.record(job, device, DeliveryState::Retrying, &reason, attempt)
                    .await;
                Some((wait, reason))
            }
            Outcome::Gone { since_ms, reason } => {
                // APNs says since when the token has been invalid; FCM and
                // Web Push say only that it is now, so what counts is
                // whether it was registered again after this send began.
                let dead_since = since_ms.unwrap_or(started_ms);
                let why = match self.store.remove_dead(&device.id, dead_since).await {
                    Ok(true) => format!("{reason}; device removed"),
                    Ok(false) => match self.store.get(&device.id).await {
                        Ok(Some(now)) => format!(
                            "{reason}; device registered again since (at {} ms, after {dead_since} ms), kept",
                            now.updated_ms
                        ),
                        Ok(None) => format!("{reason}; device already removed"),
                        Err(e) => format!("{reason}; device not removed ({e})"),
                    },
                    Err(e) => {
                        // Try again later: the next attempt finds it gone
                        // again and removes it then.
                        let why = format!("{reason}; device not removed yet ({e})");
                        self.record(job, device, DeliveryState::Retrying, &why, attempt)
                            .await;
                        return Some((backoff(attempt), why));
                    }
                };
                self.record(job, device, DeliveryState::Failed, &why, attempt)
                    .await;
                None
            }
            Outcome::BadToken => {
                self.record(
                    job,
                    device,
                    DeliveryState::Failed,
                    "bad device token",
                    attempt,
                )
                .await;
                None
            }
            Outcome::Failed { reason } => {
                self.record(job, device, DeliveryState::Failed, &reason, attempt)
                    .await;
                None
            }
        }
    }

    async fn record(
        &self,
        job: &PushJob,
        device: &Device,
        state: DeliveryState,
        reason: &str,
        attempts: u32,
    ) {
        let status = DeviceStatus {
            device_id: device.id.clone(),
            platform: device.platform.name().to_owned(),
            state,
            reason: reason.to_owned(),
            attempts,
            updated_ms: unix_millis(),
        };
        if let Err(e) = self.store.record(&job.id, &status).await {
            tracing::warn!(job = %job.id, error = %e, "status not recorded");
        }
        // The alerts folded into a summary share its fate.
        for folded in &job.summarizes {
            let status = DeviceStatus {
                reason: format!("in summary {}: {reason}", job.id),
                ..status.clone()
            };
            if let Err(e) = self.store.record(folded, &status).await {
                tracing::warn!(job = %folded, error = %e, "status not recorded");
            }
        }
    }
}

/// The exponential backoff of an attempt, with ±25 % jitter.
fn backoff(attempt: u32) -> Duration {
    let base = BACKOFF_BASE.saturating_mul(1 << attempt.saturating_sub(1).min(12));
    let capped = base.min(BACKOFF_MAX);
    capped.mul_f64(0.75 + rand::random::<f64>() * 0.5)
}

fn alert_of(job: &PushJob) -> Alert {
    let data: Value = serde_json::from_str(job.data.get()).unwrap_or(Value::Null);
    Alert {
        id: job.id.clone(),
        title: job.notification.as_ref().map(|n| n.title.clone()),
        body: job.notification.as_ref().map(|n| n.body.clone()),
        collapse_key: job
            .notification
            .as_ref()
            .and_then(|n| n.collapse_key.clone()),
        data,
        channel: job.channel.as_ref().map(|c| c.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_a_cap() {
        let first = backoff(1);
        assert!(first >= Duration::from_millis(375) && first <= Duration::from_millis(625));
        let fourth = backoff(4);
        assert!(fourth >= Duration::from_secs(3) && fourth <= Duration::from_secs(5));
        assert!(backoff(50) <= BACKOFF_MAX.mul_f64(1.25));
    }
}
