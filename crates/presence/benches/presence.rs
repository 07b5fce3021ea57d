//! Presence at scale: the memory one tracked connection costs a replica
//! (100,000 simulated connections from 10 edges, each in two channels),
//! and `GetOnline` for 1,000 users — on the state directly, and over gRPC
//! on loopback (the latency routing sees).
//!
//! Run: `cargo bench -p herald-presence --bench presence`.

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use herald_core::api_key::ApiKeys;
use herald_core::presence::PresenceLookup;
use herald_presence::{PresenceState, grpc_service};
use herald_proto::client::PresenceClient;
use herald_protocol::UserId;
use herald_protocol::channel::Channel;
use herald_protocol::presence::{ConnectionState, Transport};

const EDGES: u64 = 10;
const PER_EDGE: u64 = 10_000;

/// This process's resident memory, bytes.
fn rss_bytes() -> u64 {
    herald_testkit::rss(std::process::id())
}

fn populated() -> Arc<PresenceState> {
    let state = PresenceState::new(Duration::ZERO);
    for edge in 0..EDGES {
        let connections: Vec<ConnectionState> = (0..PER_EDGE)
            .map(|i| {
                let n = edge * PER_EDGE + i;
                ConnectionState {
                    conn: i + 1,
                    user: UserId::parse(&format!("user-{n}")).expect("user id"),
                    transport: Transport::Ws,
                    channels: vec![
                        Channel::new(&format!("chat:room:{}", n % 1000)).expect("channel"),
                        Channel::new(&format!("team:{}", n % 50)).expect("channel"),
                    ],
                }
            })
            .collect();
        state.replace_edge(&format!("edge-{edge}"), 1, 0, &connections);
    }
    state
}

fn presence(c: &mut Criterion) {
    // Memory: RSS growth while the view of 100,000 connections is built.
    let before = rss_bytes();
    let state = populated();
    let after = rss_bytes();
    let total = EDGES * PER_EDGE;
    eprintln!(
        "presence memory: {total} connections, {} users, {} channels: {:.0} bytes per tracked connection",
        state.stats().users,
        state.stats().channels,
        (after.saturating_sub(before)) as f64 / total as f64
    );

    // Half of the asked users are online.
    let asked: Vec<String> = (0..1000)
        .map(|i| {
            if i % 2 == 0 {
                format!("user-{}", i * 97)
            } else {
                format!("stranger-{i}")
            }
        })
        .collect();

    let mut group = c.benchmark_group("get_online_1000_users");
    group.bench_function("state", |b| {
        b.iter(|| {
            let online = state.online(asked.iter().map(String::as_str));
            assert_eq!(online.len(), 500);
        })
    });

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let client = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let routes = tonic::service::Routes::new(grpc_service(
            state.clone(),
            ApiKeys::new(vec!["bench-key-1".into()]),
        ));
        tokio::spawn(herald_proto::server::serve(
            listener,
            routes,
            std::future::pending(),
        ));
        PresenceClient::new(
            &format!("http://{addr}"),
            Some("bench-key-1"),
            Duration::from_secs(5),
        )
        .expect("client")
    });
    group.bench_function("grpc_loopback", |b| {
        b.to_async(&runtime).iter(|| async {
            let online = client.online(&asked).await.expect("online");
            assert_eq!(online.len(), 500);
        })
    });
    group.finish();
}

criterion_group!(benches, presence);
criterion_main!(benches);
