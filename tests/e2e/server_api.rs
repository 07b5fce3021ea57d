//! The server API (HTTP and gRPC) exercised by Python clients generated
//! from `proto/`, against standalone and against routing + an edge on NATS;
//! and routing restarts that lose nothing.

use serde_json::json;

use herald_testkit::*;

/// A config file with a strict namespace list (written per test).
fn config_file() -> std::path::PathBuf {
    temp_file(
        "herald.toml",
        "strict_namespaces = true\nmax_message_bytes = 4096\n[namespaces.api]\nhistory_size = 50\n[namespaces.chat]\n",
    )
}

/// `tests/python/server_api.py` against `api` (HTTP and gRPC) and `edge`
/// (its WebSocket), in `mode`; alice's token is minted with `env`.
fn every_method(api: &Herald, edge: &Herald, env: &Env, mode: &str) {
    let grpc = api.grpc.expect("gRPC address").to_string();
    let token = mint_token(env, "alice", "chat:*", "");
    let out = run_python(
        "server_api.py",
        &[&api.http(), &grpc, &edge.ws(), API_KEY, &token, mode],
    );
    assert!(out.contains(&format!("ok: server API ({mode})")), "{out}");
}

#[test]
fn every_method_from_grpcio_and_httpx_against_standalone() {
    let config = config_file();
    let env = Env::new().with("HERALD_CONFIG", config.to_str().unwrap());
    let herald = Herald::standalone(&env);
    every_method(&herald, &herald, &env, "standalone");
    let _ = std::fs::remove_file(config);
}

#[test]
fn every_method_from_grpcio_and_httpx_against_routing_on_nats() {
    let config = config_file();
    let cluster = Cluster::new().with("HERALD_CONFIG", config.to_str().unwrap());
    let routing = Herald::routing("routing", &cluster);
    let edge = Herald::edge("edge", &cluster);
    every_method(&routing, &edge, &cluster, "distributed");
    let _ = std::fs::remove_file(config);
}

#[tokio::test]
async fn restarting_routing_loses_nothing_and_offsets_continue() {
    // history in JetStream streams, which outlive the process
    let cluster = Cluster::new().with("HERALD_HISTORY_STORAGE", "file");

    let mut first = Herald::routing("routing-1", &cluster);
    let mut epoch = String::new();
    for n in 1..=3 {
        let answer = first.api().publish("orders", json!({"n": n})).await;
        assert_eq!(answer["offset"], n, "{answer}");
        epoch = answer["epoch"].as_str().unwrap().to_owned();
    }
    let status = first.terminate(WAIT).expect("routing exits on SIGTERM");
    assert!(status.success(), "{status}");

    let second = Herald::routing("routing-2", &cluster);
    let answer = second.api().publish("orders", json!({"n": 4})).await;
    assert_eq!(answer["offset"], 4, "{answer}");
    assert_eq!(answer["epoch"], epoch.as_str(), "same history, same epoch");
    let history = second.api().history("orders").await;
    let offsets: Vec<u64> = history["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [1, 2, 3, 4]);
}
