//! Notify's numbers: pushes by platform and result, exported once a second
//! to Prometheus (`herald_notify_*`) and to `herald.stats.<node>`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use herald_core::bus::Bus;
use herald_core::metrics::NodeStats;
use herald_core::shutdown::Shutdown;
use herald_core::subjects::Subjects;
use tokio::task::JoinHandle;

use crate::device::Platform;

static SENT: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);

/// How one push to one device went.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PushResult {
    Sent,
    Retry,
    /// The device is gone (token removed).
    Gone,
    Failed,
}

pub(crate) fn push(platform: Platform, result: PushResult) {
    let name = match result {
        PushResult::Sent => {
            SENT.fetch_add(1, Ordering::Relaxed);
            "sent"
        }
        PushResult::Retry => "retry",
        PushResult::Gone => "gone",
        PushResult::Failed => {
            FAILED.fetch_add(1, Ordering::Relaxed);
            "failed"
        }
    };
    metrics::counter!("herald_notify_pushes_total", "platform" => platform.name(), "result" => name)
        .increment(1);
}

/// Every series notify exports, at 0 until something happens: a
/// dashboard or an alert on a series that does not exist yet shows "no
/// data" instead of 0.
fn register() {
    for platform in [Platform::Apns, Platform::Fcm, Platform::Webpush] {
        for result in ["sent", "retry", "gone", "failed"] {
            metrics::counter!("herald_notify_pushes_total", "platform" => platform.name(), "result" => result)
                .increment(0);
        }
    }
    metrics::counter!("herald_notify_dead_letters_total").increment(0);
    metrics::gauge!("herald_notify_queue_pending").increment(0.0);
}

/// Publishes notify's numbers on `herald.stats.<node>` once a second.
pub fn publish_stats(
    bus: Arc<dyn Bus>,
    subjects: &Subjects,
    node: &str,
    shutdown: Shutdown,
) -> JoinHandle<()> {
    herald_core::metrics::install();
    register();
    herald_core::metrics::publish_stats(
        bus,
        subjects,
        node,
        "notify",
        |stats: &mut NodeStats| {
            stats.notifications = SENT.load(Ordering::Relaxed);
            stats.errors = FAILED.load(Ordering::Relaxed);
        },
        shutdown,
    )
}
