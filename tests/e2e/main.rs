//! End-to-end tests: real `herald` processes, real NATS, clients that are
//! not ours (Python) as well as the Rust client.

mod admin_page;
mod bench_peers;
mod browser;
mod cluster;
mod deploy;
mod distributed;
mod edge_limits;
mod hardening;
mod js_sdk;
mod nats_auth;
mod notify;
mod openapi;
mod operations;
mod presence;
mod protocol_doc;
mod python_client;
mod readiness;
mod readme;
mod server_api;
mod standalone;
mod telemetry;
mod transports;
mod workspace;
