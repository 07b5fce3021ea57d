//! What operators see: Prometheus `/metrics` on every service, counting
//! what really happened, and the `/admin/events` stream that shows the
//! whole cluster from any edge.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use herald_client::{Client, Event};
use herald_protocol::Push;
use serde_json::json;

use herald_testkit::*;

fn token(env: &Env, user: &str) -> String {
    mint_token(env, user, "ops:*", "")
}

/// Scrapes `base`'s `/metrics` until `check` holds (metrics are copied
/// once a second).
async fn metrics_until(
    base: &str,
    what: &str,
    check: impl Fn(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    eventually(WAIT, what, || async {
        let metrics = metrics(base).await;
        if check(&metrics) {
            Ok(metrics)
        } else {
            Err(format!("{metrics:#?}"))
        }
    })
    .await
}

fn value(metrics: &HashMap<String, f64>, name: &str) -> f64 {
    metrics.get(name).copied().unwrap_or(0.0)
}

async fn publish(api: &Api, channel: &str, n: u64) {
    api.publish(channel, json!({"n": n})).await;
}

#[tokio::test]
async fn metrics_count_what_happened() {
    let env = Env::new().with("HERALD_ALLOWED_ORIGINS", "https://app.example");
    let herald = Herald::standalone(&env);
    let (mut client, _) = Client::connect(&herald.ws(), &token(&env, "mia"))
        .await
        .unwrap();
    client.subscribe("ops:room").await.unwrap();
    for n in 1..=3 {
        publish(&herald.api(), "ops:room", n).await;
    }
    for _ in 0..3 {
        within(WAIT, "a publication", client.next_publication())
            .await
            .expect("a publication");
    }
    // a refused browser origin, and a command the edge rejects
    let refused = http_client()
        .get(format!("{}/sse?channels=ops:room", herald.http()))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let error = client.subscribe("ops:no such channel").await;
    assert!(error.is_err());
    // an API call without a key
    let unauthorized = http_client()
        .post(format!("{}/api/publish", herald.http()))
        .json(&json!({"channel": "ops:room", "data": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);

    let metrics = metrics_until(&herald.http(), "counters after the traffic", |m| {
        // deliveries count every push: the three publications, and the
        // client's own `join` when it arrives after the subscription
        value(m, "herald_routing_publications_total") == 3.0
            && (3.0..=4.0).contains(&value(m, "herald_edge_deliveries_total"))
            && value(m, "herald_edge_connections") == 1.0
    })
    .await;
    assert_eq!(value(&metrics, "herald_edge_users"), 1.0);
    assert_eq!(
        value(
            &metrics,
            r#"herald_edge_connections_refused_total{reason="origin"}"#
        ),
        1.0
    );
    assert_eq!(
        value(&metrics, r#"herald_edge_errors_total{code="100"}"#),
        1.0
    );
    assert_eq!(
        value(
            &metrics,
            r#"herald_routing_errors_total{api="http",side="client"}"#
        ),
        1.0
    );
    assert_eq!(value(&metrics, "herald_routing_publish_seconds_count"), 3.0);
    assert!(
        value(
            &metrics,
            r#"herald_routing_publish_seconds_bucket{le="+Inf"}"#
        ) == 3.0,
        "publish latency histogram"
    );
    assert_eq!(value(&metrics, "herald_presence_users"), 1.0);
    // what the autoscalers and alerts of k8s/ read
    assert!(value(&metrics, "herald_edge_connection_budget") >= 1.0);
    assert_eq!(metrics.get("herald_notify_queue_pending"), Some(&0.0));

    // the client leaves: the gauges follow
    client.close().await;
    metrics_until(&herald.http(), "connections back to 0", |m| {
        value(m, "herald_edge_connections") == 0.0 && value(m, "herald_edge_users") == 0.0
    })
    .await;
}

/// Reads `/admin/events` until a view satisfies `check`.
async fn admin_view_until(
    url: &str,
    key: &str,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let response = http_client()
        .get(format!("{url}/admin/events"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut last = serde_json::Value::Null;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .unwrap_or_else(|_| panic!("{what}: last view {last:#}"))
            .expect("the stream goes on")
            .unwrap();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            if !event.contains("event: stats") {
                continue;
            }
            let data = event
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .expect("data");
            last = serde_json::from_str(data).unwrap();
            if check(&last) {
                return last;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_has_metrics_and_any_edge_shows_the_whole_cluster() {
    let mut env = Cluster::new().with("HERALD_PRESENCE_HEARTBEAT_SECS", "1");
    let presence = Herald::presence("presence", &env);
    env.set("HERALD_PRESENCE_URL", presence.grpc_url());
    let routing = Herald::routing("routing", &env);
    let edge1 = Herald::edge("ops-e1", &env);
    let edge2 = Herald::edge("ops-e2", &env);

    // five users: three on edge 1, two on edge 2, all following one channel
    let mut clients = Vec::new();
    for (i, edge) in [&edge1, &edge1, &edge1, &edge2, &edge2].iter().enumerate() {
        let (client, _) = Client::connect(&edge.ws(), &token(&env, &format!("u{i}")))
            .await
            .unwrap();
        client.subscribe("ops:feed").await.unwrap();
        clients.push(client);
    }
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                while let Ok(event) = client.next_event_within(Duration::from_secs(60)).await {
                    if matches!(event, Event::Push(Push::Disconnect(_))) {
                        break;
                    }
                }
            })
        })
        .collect();
    let publisher = {
        let api = routing.api();
        tokio::spawn(async move {
            for n in 0.. {
                publish(&api, "ops:feed", n).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // the dashboard stream of edge 2 sees edge 1, routing and presence too
    let view = admin_view_until(&edge2.http(), API_KEY, "the whole cluster", |v| {
        let services: Vec<&str> = v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n["service"].as_str())
            .collect();
        let t = &v["totals"];
        services.iter().filter(|s| **s == "edge").count() == 2
            && services.contains(&"routing")
            && services.contains(&"presence")
            && t["connections"] == 5
            && t["users"] == 5
            && t["published_per_s"].as_f64().unwrap_or(0.0) > 1.0
            && t["delivered_per_s"].as_f64().unwrap_or(0.0) > 5.0
            && t["transports"]["ws"] == 5
            && t["latency"]["p99_ms"].as_f64().is_some()
            && t["top_channels"][0]["channel"] == "ops:feed"
    })
    .await;
    assert_eq!(view["totals"]["nodes"], 4, "{view:#}");
    // who follows the channel, from the server API
    let present = routing.api().get("/api/presence?channel=ops:feed").await;
    assert_eq!(present.status, 200, "{}", present.body);
    assert_eq!(
        present.body["users"].as_array().map(Vec::len),
        Some(5),
        "{}",
        present.body
    );
    let edge1_view = view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "ops-e1")
        .expect("edge 1 in edge 2's view");
    assert_eq!(edge1_view["connections"], 3);
    // five subscribers, one publication: deliveries run at five times the
    // publish rate
    let t = &view["totals"];
    let ratio = t["delivered_per_s"].as_f64().unwrap() / t["published_per_s"].as_f64().unwrap();
    assert!(
        (3.0..=7.0).contains(&ratio),
        "deliveries/publications {ratio}: {view:#}"
    );

    // the stream is closed without the key
    for key in [None, Some("wrong")] {
        let mut request = http_client().get(format!("{}/admin/events", edge1.http()));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "key {key:?}");
    }

    // every service answers /metrics with its own numbers
    metrics_until(&routing.http(), "routing metrics", |m| {
        value(m, "herald_routing_publications_total") > 0.0
    })
    .await;
    metrics_until(&edge1.http(), "edge metrics", |m| {
        value(m, "herald_edge_connections") == 3.0 && value(m, "herald_edge_deliveries_total") > 0.0
    })
    .await;
    metrics_until(&presence.http(), "presence metrics", |m| {
        value(m, "herald_presence_users") == 5.0
    })
    .await;
    publisher.abort();
    for reader in readers {
        reader.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_standalone_as_one_node_with_its_services() {
    let herald = Herald::standalone(&Env::new());
    let view = admin_view_until(
        &herald.http(),
        API_KEY,
        "every service of the one node",
        |v| v["nodes"].as_array().map(Vec::len) == Some(4),
    )
    .await;
    assert_eq!(view["totals"]["nodes"], 1, "{view:#}");
    let names: std::collections::HashSet<_> = view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names.len(), 1, "{view:#}");
}

/// The metric names a monitoring file queries (`herald_…`).
fn queried(file: &str) -> std::collections::BTreeSet<String> {
    let text = std::fs::read_to_string(repo_root().join(file)).expect(file);
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("herald_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_alerts_query_exists_on_a_running_cluster() {
    let db = Database::create().await;
    let mut env = Cluster::new().with("HERALD_DATABASE_URL", db.url.as_str());
    let presence = Herald::presence("presence", &env);
    let notify = Herald::notify("notify", &env);
    env.set("HERALD_PRESENCE_URL", presence.grpc_url());
    env.set("HERALD_NOTIFY_URL", notify.grpc_url());
    let routing = Herald::routing("routing", &env);
    let edge = Herald::edge("edge", &env);
    let services = [&presence, &notify, &routing, &edge];
    // every service has published its numbers once
    let mut exported = std::collections::BTreeSet::new();
    for service in services {
        let names = metrics_until(&service.http(), "its first numbers", |m| {
            m.keys().any(|k| k.starts_with("herald_nats_connected"))
        })
        .await;
        exported.extend(
            names
                .keys()
                .map(|k| k.split('{').next().unwrap_or_default().to_owned()),
        );
    }
    for file in [
        "k8s/monitoring/grafana-dashboard.json",
        "k8s/monitoring/prometheus-rules.yaml",
        "k8s/monitoring/prometheus-adapter.yaml",
    ] {
        let missing: Vec<_> = queried(file)
            .into_iter()
            .filter(|name| !exported.contains(name))
            .collect();
        assert!(
            missing.is_empty(),
            "{file} queries {missing:?}, which no service exports; they export {exported:?}"
        );
    }
}
