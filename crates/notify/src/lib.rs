//! Notify: when a user is not connected, reach their phone or browser
//! through APNs, FCM or Web Push — coalesced, rate-limited, retried, and
//! with dead tokens cleaned up.

pub mod device;
pub mod providers;
pub mod store;
