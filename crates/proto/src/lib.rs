//! Herald's gRPC contract, generated from `proto/` at build time, and what
//! every service shares around it: the internal gRPC clients (`client`), the
//! services' one error type (`refusal`) with its one HTTP and one gRPC
//! mapping (`http`, `server`), request tracing
//! (`trace`), and the one service lifecycle with its hardened accept path
//! (`service`).

/// Routing's server API (`proto/herald/routing/v1`).
pub mod routing {
    /// `herald.routing.v1`, as generated.
    #[allow(missing_docs)]
    pub mod v1 {
        tonic::include_proto!("herald.routing.v1");
    }
}

/// The presence service's API (`proto/herald/presence/v1`).
pub mod presence {
    /// `herald.presence.v1`, as generated.
    #[allow(missing_docs)]
    pub mod v1 {
        tonic::include_proto!("herald.presence.v1");
    }
}

/// The notify service's API (`proto/herald/notify/v1`).
pub mod notify {
    /// `herald.notify.v1`, as generated.
    #[allow(missing_docs)]
    pub mod v1 {
        tonic::include_proto!("herald.notify.v1");
    }
}

pub mod client;
pub mod http;
pub mod refusal;
pub mod server;
pub mod service;
pub mod trace;

pub use refusal::Refusal;

/// Every service's descriptors, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("herald_descriptor");
