//! The presence lookup routing needs before choosing between a live
//! delivery and a push notification. Implemented by the edge in standalone
//! (it sees every connection) and by the presence service's gRPC client in
//! the distributed mode. (What edges report to presence is in
//! `herald_protocol::presence`.)

use std::collections::HashSet;

use async_trait::async_trait;
use herald_protocol::Channel;

/// Presence could not answer: why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("presence unavailable: {0}")]
pub struct PresenceError(pub String);

/// Who is connected, as routing and the edge need to know it.
#[async_trait]
pub trait PresenceLookup: Send + Sync + 'static {
    /// Which of `users` have at least one live connection.
    async fn online(&self, users: &[String]) -> Result<HashSet<String>, PresenceError>;

    /// The users subscribed to `channel` (for the client `presence`
    /// command).
    async fn channel_users(&self, channel: &Channel) -> Result<Vec<String>, PresenceError> {
        let _ = channel;
        Err(PresenceError("channel presence is not available".into()))
    }
}

/// Used where no presence service is configured: every lookup fails, so
/// routing reports users as unknown instead of pushing blindly.
pub struct NoPresence;

#[async_trait]
impl PresenceLookup for NoPresence {
    async fn online(&self, _users: &[String]) -> Result<HashSet<String>, PresenceError> {
        Err(PresenceError("no presence service configured".into()))
    }
}
