//! What Herald's services share beyond the protocol (`herald-protocol`):
//! the seams between services (`Bus`, `History`, `WorkQueue`,
//! `PresenceLookup`, `DeviceLookup`) with their adapters, client tokens,
//! configuration, subjects, telemetry and the shutdown signal.

pub mod api_key;
pub mod auth;
pub mod bus;
pub mod config;
pub mod devices;
pub mod history;
#[cfg(feature = "jwt")]
mod jwks;
pub mod metrics;
pub mod presence;
pub mod route;
pub mod settings_doc;
pub mod shutdown;
pub mod streams;
pub mod subjects;
pub mod telemetry;
pub mod time;
pub mod work_queue;

pub use config::Config;
pub use shutdown::Shutdown;
