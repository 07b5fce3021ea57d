//! The `TokenStore` seam: devices and per-notification delivery status.
//! Adapters: PostgreSQL (distributed) and SQLite (standalone), both through
//! sqlx with the same SQL, migrated at start; one test suite for both.

mod sql;

use std::collections::HashSet;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::device::{CheckedDevice, Device, Environment};

pub use sql::{PostgresStore, SqliteStore, open};

/// Why the device store failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or failed: the caller may retry.
    #[error("device store unavailable: {0}")]
    Unavailable(String),
    /// The database refused the data: the caller's to fix.
    #[error("{0}")]
    Invalid(String),
}

/// Where one device stands for one notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Not tried yet.
    Pending,
    /// The push service took it.
    Sent,
    /// Failed for now; it will be tried again.
    Retrying,
    /// Given up on: dead, refused, or out of attempts.
    Failed,
}

impl DeliveryState {
    /// Its name in the store and the API.
    pub fn name(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Sent => "sent",
            DeliveryState::Retrying => "retrying",
            DeliveryState::Failed => "failed",
        }
    }

    /// The state a stored name stands for (`Pending` for one not known).
    pub fn parse(s: &str) -> DeliveryState {
        match s {
            "sent" => DeliveryState::Sent,
            "retrying" => DeliveryState::Retrying,
            "failed" => DeliveryState::Failed,
            _ => DeliveryState::Pending,
        }
    }

    /// Nothing more will be tried for this device.
    pub fn is_final(self) -> bool {
        matches!(self, DeliveryState::Sent | DeliveryState::Failed)
    }
}

/// One device's state for one notification, as `Status` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStatus {
    /// The device.
    pub device_id: String,
    /// Its platform's name.
    pub platform: String,
    /// Where the push stands.
    pub state: DeliveryState,
    /// Why, as the push service or the worker said.
    pub reason: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// When recorded, Unix milliseconds.
    pub updated_ms: u64,
}

/// Where devices and delivery status are kept.
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// Stores a device. A token (or Web Push endpoint) already known moves
    /// to this user — a phone changed hands — and keeps its id. Past
    /// `max_per_user` the user's least recently seen devices are dropped.
    async fn register(
        &self,
        device: CheckedDevice,
        max_per_user: usize,
    ) -> Result<Device, StoreError>;

    /// Removes a device; false if there was none with `id`.
    async fn unregister(&self, id: &str) -> Result<bool, StoreError>;

    /// The device with `id`, if any.
    async fn get(&self, id: &str) -> Result<Option<Device>, StoreError>;

    /// A user's devices, most recently seen first.
    async fn list(&self, user: &str) -> Result<Vec<Device>, StoreError>;

    /// Which of `users` have at least one device.
    async fn users_with_devices(&self, users: &[String]) -> Result<HashSet<String>, StoreError>;

    /// Removes a dead device, unless it was registered again at or after
    /// `dead_since_ms` (Unix ms): APNs reports when a token stopped being
    /// valid, and a registration after that is a new, valid token; for the
    /// services that give no time it is when the send began. Any `u64` is
    /// taken as it is meant (values past `i64::MAX` mean "whenever").
    async fn remove_dead(&self, id: &str, dead_since_ms: u64) -> Result<bool, StoreError>;

    /// Corrects a device's APNs environment (after a `BadDeviceToken` that
    /// the other environment took).
    async fn set_environment(&self, id: &str, environment: Environment) -> Result<(), StoreError>;

    /// Records where a device stands for a notification.
    async fn record(&self, notification: &str, status: &DeviceStatus) -> Result<(), StoreError>;

    /// Every device's status for a notification.
    async fn status(&self, notification: &str) -> Result<Vec<DeviceStatus>, StoreError>;

    /// Answers when the store can be reached (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
}
