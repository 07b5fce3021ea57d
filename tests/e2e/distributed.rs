//! The distributed mode: routing and two edges as separate processes joined
//! by a real NATS server.

use herald_client::Client;
use serde_json::json;

use herald_testkit::*;

/// Routing and two edges.
struct Nodes {
    routing: Herald,
    edge_a: Herald,
    edge_b: Herald,
    cluster: Cluster,
}

fn nodes() -> Nodes {
    let cluster = Cluster::new();
    Nodes {
        routing: Herald::routing("routing", &cluster),
        edge_a: Herald::edge("edge-a", &cluster),
        edge_b: Herald::edge("edge-b", &cluster),
        cluster,
    }
}

fn token(env: &Env, user: &str) -> String {
    mint_token(env, user, "chat:*", "chat:*")
}

#[tokio::test]
async fn a_client_on_one_edge_receives_what_a_client_on_another_edge_and_the_api_publish() {
    let nodes = nodes();
    let (mut alice, _) = Client::connect(&nodes.edge_a.ws(), &token(&nodes.cluster, "alice"))
        .await
        .unwrap();
    let (mut bob, _) = Client::connect(&nodes.edge_b.ws(), &token(&nodes.cluster, "bob"))
        .await
        .unwrap();
    let sub_a = alice.subscribe("chat:room:7").await.unwrap();
    let sub_b = bob.subscribe("chat:room:7").await.unwrap();
    assert_eq!(sub_a.epoch, sub_b.epoch, "one history behind both edges");

    // bob publishes on edge B; alice on edge A receives it
    let offset = bob
        .publish("chat:room:7", json!({"text": "hi from B"}))
        .await
        .unwrap();
    assert_eq!(offset, 1);
    for client in [&mut alice, &mut bob] {
        {
            let p = client.next_publication().await.unwrap();
            assert_eq!(p.offset, 1);
            assert_eq!(p.from.as_deref(), Some("bob"));
            assert_eq!(p.data.get(), r#"{"text":"hi from B"}"#);
        }
    }

    // the server API publishes through routing; both edges deliver it
    let answer = nodes
        .routing
        .api()
        .publish("chat:room:7", json!({"text": "from the API"}))
        .await;
    assert_eq!(answer["offset"], 2);
    for client in [&mut alice, &mut bob] {
        {
            let p = client.next_publication().await.unwrap();
            assert_eq!(p.offset, 2);
            assert_eq!(p.from, None);
        }
    }
}

#[test]
fn python_websockets_client_on_an_edge_receives_an_api_publish_through_routing() {
    let nodes = nodes();
    let out = run_python(
        "ws_receive_api_publish.py",
        &[
            &nodes.edge_b.ws(),
            &nodes.routing.http(),
            &token(&nodes.cluster, "carol"),
            API_KEY,
            "chat:python",
        ],
    );
    assert!(out.contains("ok: carol received offset 1"), "{out}");
}

#[test]
fn distributed_services_refuse_to_start_without_secrets() {
    for service in ["edge", "routing"] {
        let output = std::process::Command::new(herald_bin())
            .args([service, "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"])
            .env_remove("HERALD_JWT_SECRET")
            .env_remove("HERALD_API_KEYS")
            .env("HERALD_NATS_URL", nats_url())
            .output()
            .unwrap();
        assert!(
            !output.status.success(),
            "{service} started without secrets"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("jwt_secret") || stderr.contains("api_keys"),
            "{service}: {stderr}"
        );
    }
}

/// Streams NATS lost are made again while routing runs (no restart), and
/// routing's `/readyz` names them; every service starts from a seed list
/// whose first node is down.
#[tokio::test]
async fn publishing_goes_on_after_nats_loses_the_streams_and_a_seed_list_starts_every_service() {
    let seeds = format!("nats://127.0.0.1:{},{}", free_port(), nats_url());
    let env = Cluster::new().with("HERALD_NATS_URL", seeds);
    let routing = Herald::routing("routing", &env);
    let edge = Herald::edge("edge", &env);
    let api = routing.api();
    let ready = api.get("/readyz").await.body;
    assert_eq!(ready["ready"], true, "{ready}");
    let streams = ready["streams"].as_array().expect("streams").clone();
    assert!(
        streams
            .iter()
            .any(|s| s["name"].as_str().is_some_and(|n| n.ends_with("_HISTORY"))),
        "{ready}"
    );
    assert!(streams.iter().all(|s| s["drift"].is_null()), "{ready}");

    let (mut alice, _) = Client::connect(&edge.ws(), &token(&env, "alice"))
        .await
        .expect("connect");
    alice.subscribe("chat:lost").await.expect("subscribe");
    let publish = |n: u64| {
        api.post(
            "/api/publish",
            json!({"channel": "chat:lost", "data": {"n": n}}),
        )
    };
    let answer = publish(1).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let first = alice.next_publication().await.expect("first");

    // NATS loses every stream of this cluster
    let js = async_nats::jetstream::new(async_nats::connect(nats_url()).await.expect("NATS"));
    for s in &streams {
        js.delete_stream(s["name"].as_str().expect("name"))
            .await
            .expect("delete");
    }
    // publishing goes on without restarting routing: a new epoch from 1
    eventually(WAIT, "publishing back up", || async {
        let answer = publish(2).await;
        if answer.status == 200 {
            Ok(())
        } else {
            Err(answer.body)
        }
    })
    .await;
    let second = alice.next_publication().await.expect("second");
    assert_eq!(second.offset, 1);
    assert_ne!(second.epoch, first.epoch, "the loss is told by a new epoch");
    let ready = api.get("/readyz").await.body;
    let recreated: u64 = ready["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .map(|s| s["recreated"].as_u64().unwrap_or(0))
        .sum();
    assert!(recreated >= 1, "{ready}");
}

/// A client publish whose answer never came from routing (NATS frozen
/// between the edge and routing) may be stored: the client is told so
/// with the key to retry with, and the retry stores it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_publish_routing_never_answered_is_an_unknown_outcome_and_its_retry_stores_it_once()
 {
    let nats = PrivateNats::start().await;
    let env = Cluster::new()
        .with("HERALD_NATS_URL", nats.url())
        .with("HERALD_ROUTE_TIMEOUT_MS", "1000");
    let routing = Herald::routing("routing", &env);
    let edge = Herald::edge("edge", &env);
    let token = mint_token(&env, "alice", "chat:*", "chat:*");
    let (client, _) = Client::connect(&edge.ws(), &token).await.expect("connect");
    assert_eq!(
        client
            .publish("chat:unknown", json!({"n": 1}))
            .await
            .expect("first"),
        1
    );

    nats.signal("-STOP");
    let unknown = client.publish("chat:unknown", json!({"n": 2})).await;
    nats.signal("-CONT");
    let key = match unknown {
        Err(herald_client::ClientError::Server(e))
            if e.code == herald_protocol::ErrorCode::OutcomeUnknown =>
        {
            e.idempotency_key.expect("a key to retry with")
        }
        other => panic!("not an unknown outcome: {other:?}"),
    };
    // the requests that waited in the frozen server reach routing now;
    // the retry with the key gets the one publication they stored
    let offset = eventually(WAIT, "the retry answered", || async {
        client
            .publish_with_key("chat:unknown", json!({"n": 2}), Some(&key))
            .await
            .ok()
    })
    .await;
    assert_eq!(offset, 2);
    let history = routing.api().get("/api/history?channel=chat:unknown").await;
    let stored: Vec<_> = history.body["publications"]
        .as_array()
        .expect("publications")
        .iter()
        .map(|p| p["data"]["n"].clone())
        .collect();
    assert_eq!(
        stored,
        vec![json!(1), json!(2)],
        "stored once: {}",
        history.body
    );
}
