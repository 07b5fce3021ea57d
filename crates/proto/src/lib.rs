//! Herald's gRPC contract, generated from `proto/` at build time.

pub mod routing {
    pub mod v1 {
        tonic::include_proto!("herald.routing.v1");
    }
}

pub mod presence {
    pub mod v1 {
        tonic::include_proto!("herald.presence.v1");
    }
}

pub mod notify {
    pub mod v1 {
        tonic::include_proto!("herald.notify.v1");
    }
}

pub mod client;
pub mod http;
pub mod server;
pub mod service;
pub mod trace;

/// Every service's descriptors, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("herald_descriptor");
