//! The server API (HTTP and gRPC) exercised by Python clients generated
//! from `proto/`, against standalone and against routing + an edge on NATS;
//! and routing restarts that lose nothing.

use serde_json::json;

use crate::support::*;

const SECRET: &str = "e2e-server-api-secret-0123456789";
const API_KEY: &str = "e2e-server-api-key";

/// A config file with a strict namespace list (written per test).
fn config_file() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("herald-e2e-{}.toml", unique_prefix()));
    std::fs::write(
        &path,
        "strict_namespaces = true\nmax_message_bytes = 4096\n[namespaces.api]\nhistory_size = 50\n[namespaces.chat]\n",
    )
    .expect("write config");
    path
}

fn alice_token(env: &Env) -> String {
    herald_output(env, &["token", "--user", "alice", "--channels", "chat:*"])
}

#[test]
fn every_method_from_grpcio_and_httpx_against_standalone() {
    let config = config_file();
    let env = Env::new(&[
        ("HERALD_JWT_SECRET", SECRET),
        ("HERALD_API_KEYS", API_KEY),
        ("HERALD_CONFIG", config.to_str().unwrap()),
    ]);
    let herald = Herald::standalone(&env);
    let grpc = herald.grpc.expect("gRPC address").to_string();
    let out = run_python(
        "server_api.py",
        &[
            &herald.http(),
            &grpc,
            &herald.ws(),
            API_KEY,
            &alice_token(&env),
            "standalone",
        ],
    );
    assert!(out.contains("ok: server API (standalone)"), "{out}");
    let _ = std::fs::remove_file(config);
}

#[test]
fn every_method_from_grpcio_and_httpx_against_routing_on_nats() {
    let config = config_file();
    let prefix = unique_prefix();
    let env = Env::new(&[
        ("HERALD_JWT_SECRET", SECRET),
        ("HERALD_API_KEYS", API_KEY),
        ("HERALD_CONFIG", config.to_str().unwrap()),
        ("HERALD_NATS_URL", &nats_url()),
        ("HERALD_SUBJECT_PREFIX", &prefix),
        ("HERALD_HISTORY_STORAGE", "memory"),
    ]);
    let _cleanup = StreamCleanup(prefix.clone());
    let routing = Herald::routing("routing", &env);
    let edge = Herald::edge("edge", &env);
    let grpc = routing.grpc.expect("gRPC address").to_string();
    let out = run_python(
        "server_api.py",
        &[
            &routing.http(),
            &grpc,
            &edge.ws(),
            API_KEY,
            &alice_token(&env),
            "distributed",
        ],
    );
    assert!(out.contains("ok: server API (distributed)"), "{out}");
    let _ = std::fs::remove_file(config);
}

#[tokio::test]
async fn restarting_routing_loses_nothing_and_offsets_continue() {
    let prefix = unique_prefix();
    let env = Env::new(&[
        ("HERALD_JWT_SECRET", SECRET),
        ("HERALD_API_KEYS", API_KEY),
        ("HERALD_NATS_URL", &nats_url()),
        ("HERALD_SUBJECT_PREFIX", &prefix),
    ]);
    let _cleanup = StreamCleanup(prefix.clone());
    let http = http_client();
    let publish = |routing: &Herald, n: u64| {
        http.post(format!("{}/api/publish", routing.http()))
            .bearer_auth(API_KEY)
            .json(&json!({"channel": "orders", "data": {"n": n}}))
            .send()
    };
    let args = ["routing", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"];

    let mut first = Herald::start("routing-1", &env, &args);
    let mut epoch = String::new();
    for n in 1..=3 {
        let answer: serde_json::Value = publish(&first, n).await.unwrap().json().await.unwrap();
        assert_eq!(answer["offset"], n, "{answer}");
        epoch = answer["epoch"].as_str().unwrap().to_owned();
    }
    let status = first
        .terminate(std::time::Duration::from_secs(15))
        .expect("routing exits on SIGTERM");
    assert!(status.success(), "{status}");

    let second = Herald::start("routing-2", &env, &args);
    let answer: serde_json::Value = publish(&second, 4).await.unwrap().json().await.unwrap();
    assert_eq!(answer["offset"], 4, "{answer}");
    assert_eq!(answer["epoch"], epoch.as_str(), "same history, same epoch");
    let history: serde_json::Value = http
        .get(format!("{}/api/history?channel=orders", second.http()))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let offsets: Vec<u64> = history["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [1, 2, 3, 4]);
}
