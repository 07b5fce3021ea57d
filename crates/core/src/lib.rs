//! Herald's shared vocabulary: channel names, the client protocol, the
//! seams between services (`Bus`, `History`) with their adapters, client
//! tokens, configuration and telemetry.

pub mod api_key;
pub mod auth;
pub mod bus;
pub mod channel;
pub mod config;
pub mod devices;
pub mod history;
mod jwks;
pub mod metrics;
pub mod presence;
pub mod protocol;
pub mod route;
pub mod shutdown;
pub mod subjects;
pub mod telemetry;
pub mod time;
pub mod user;
pub mod work_queue;

pub use channel::Channel;
pub use config::Config;
pub use shutdown::Shutdown;
