//! Whether users can be reached by push at all: routing asks before it
//! queues push jobs, so `SendToUser` can answer `no_devices` instead of
//! queueing work that can only be dropped. Implemented by notify's device
//! registry in standalone and by notify's gRPC client in the distributed
//! mode.

use std::collections::HashSet;

use async_trait::async_trait;

/// The device registry could not answer: why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("device registry unavailable: {0}")]
pub struct DeviceLookupError(pub String);

/// Whether users have devices to push to.
#[async_trait]
pub trait DeviceLookup: Send + Sync + 'static {
    /// Which of `users` have at least one registered device.
    async fn with_devices(&self, users: &[String]) -> Result<HashSet<String>, DeviceLookupError>;
}

/// Used where no notify service is configured: every lookup fails, so
/// routing queues push jobs as before (the worker drops a job for a user
/// without devices) and answers `pushed`.
pub struct NoDeviceLookup;

#[async_trait]
impl DeviceLookup for NoDeviceLookup {
    async fn with_devices(&self, _users: &[String]) -> Result<HashSet<String>, DeviceLookupError> {
        Err(DeviceLookupError("no notify service configured".into()))
    }
}
