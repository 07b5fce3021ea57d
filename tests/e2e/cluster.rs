//! Herald in its production shape (`scripts/cluster.sh`: a 3-node NATS
//! cluster with R3 streams, 2 presence, 2 routing, notify, 3 edges behind
//! nginx) taking what a real cluster does, with a publisher at a steady
//! rate and clients on every edge and through nginx: the NATS node leading
//! the history stream SIGKILLed, a routing replica SIGKILLed, a routing
//! replica started while the first NATS seed is down. Every acknowledged
//! publication must reach every client exactly once, in order.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use herald_client::{Client, Event};
use herald_protocol::Push;
use parking_lot::Mutex;
use serde_json::{Value, json};

use herald_testkit::*;

/// Longer than the testkit's own wait: JetStream elections and restarts
/// on a busy machine. Never a measured claim.
const WAIT: Duration = Duration::from_secs(90);

struct Cluster {
    dir: tempfile::TempDir,
    base: u16,
    prefix: String,
    vars: HashMap<String, String>,
}

impl Cluster {
    fn script(&self, args: &[&str]) -> std::process::Output {
        let output = Command::new(repo_root().join("scripts/cluster.sh"))
            .args(args)
            .env("HERALD_BIN", herald_bin())
            .env("HERALD_CLUSTER_DIR", self.dir.path())
            .env("HERALD_CLUSTER_BASE", self.base.to_string())
            .env("HERALD_CLUSTER_PREFIX", &self.prefix)
            .env("HERALD_CLUSTER_DATABASE_URL", database_url())
            .output()
            .expect("scripts/cluster.sh");
        assert!(
            output.status.success(),
            "cluster.sh {args:?}: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            self.logs()
        );
        output
    }

    fn up() -> Cluster {
        let mut cluster = Cluster {
            dir: tempfile::tempdir().expect("temp dir"),
            base: free_port_block(),
            prefix: unique_prefix(),
            vars: HashMap::new(),
        };
        let up = cluster.script(&["up"]);
        cluster.vars = String::from_utf8_lossy(&up.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        cluster
    }

    fn var(&self, name: &str) -> &str {
        self.vars
            .get(name)
            .unwrap_or_else(|| panic!("cluster.sh status names {name}"))
    }

    fn edge_ws(&self, n: u16) -> String {
        format!("ws://127.0.0.1:{}/ws", self.base + 80 + n)
    }

    fn monitor(&self, n: u16) -> String {
        format!("http://127.0.0.1:{}", self.base + 20 + n)
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                out.push_str(&format!("--- {}\n", path.display()));
                for line in tail.into_iter().rev() {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }

    /// The NATS node (1–3) that leads `stream` now.
    async fn leader_of(&self, stream: &str) -> u16 {
        eventually(WAIT, &format!("a leader for {stream}"), || async {
            for n in 1..=3 {
                let url = format!("{}/jsz?streams=true", self.monitor(n));
                let Ok(answer) = http_client().get(url).send().await else {
                    continue;
                };
                let Ok(jsz) = answer.json::<Value>().await else {
                    continue;
                };
                let leader = jsz["account_details"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|a| a["stream_detail"].as_array().into_iter().flatten())
                    .find(|s| s["name"] == stream)
                    .and_then(|s| s["cluster"]["leader"].as_str().map(str::to_owned));
                if let Some(name) = leader
                    && let Some(node) = name.strip_prefix('n').and_then(|n| n.parse().ok())
                {
                    return Some(node);
                }
            }
            None
        })
        .await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("scripts/cluster.sh"))
            .arg("down")
            .env("HERALD_CLUSTER_DIR", self.dir.path())
            .env("HERALD_CLUSTER_BASE", self.base.to_string())
            .output();
    }
}

/// Publishes 1, 2, 3, … at a steady rate, each until acknowledged (the
/// same idempotency key on every try, to either routing replica), and
/// keeps what was acknowledged: n → offset.
struct Publisher {
    acked: Arc<Mutex<Vec<(u64, u64)>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    fn start(apis: [String; 2], key: String) -> Publisher {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (acked, stop) = (acked.clone(), stop.clone());
            async move {
                let http = http_client();
                let api = AtomicUsize::new(0);
                let mut n = 0;
                // a steady rate, not as fast as it can: 20 a second
                let mut pace = tokio::time::interval(Duration::from_millis(50));
                pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !stop.load(Ordering::Acquire) {
                    pace.tick().await;
                    n += 1;
                    eventually(WAIT, &format!("publication {n} acknowledged"), || async {
                        let answer = http
                            .post(format!("{}/api/publish", apis[api.load(Ordering::Relaxed)]))
                            .bearer_auth(&key)
                            .timeout(Duration::from_secs(10))
                            .json(&json!({
                                "channel": "chat:audit",
                                "data": {"n": n},
                                "idempotency_key": format!("n{n}"),
                            }))
                            .send()
                            .await;
                        if let Ok(answer) = answer
                            && answer.status() == 200
                            && let Ok(body) = answer.json::<Value>().await
                        {
                            let offset = body["offset"].as_u64().expect("offset");
                            acked.lock().push((n, offset));
                            return true;
                        }
                        // a replica down, JetStream electing: the other
                        // replica, same key
                        api.fetch_xor(1, Ordering::Relaxed);
                        false
                    })
                    .await;
                }
            }
        });
        Publisher { acked, stop, task }
    }

    fn count(&self) -> usize {
        self.acked.lock().len()
    }

    /// Waits until `more` publications beyond now are acknowledged.
    async fn goes_on(&self, more: usize, after: &str) {
        let target = self.count() + more;
        eventually(
            WAIT,
            &format!("publishing to go on after {after}"),
            || async {
                assert!(
                    !self.task.is_finished(),
                    "the publisher gave up after {after}"
                );
                self.count() >= target
            },
        )
        .await;
    }

    async fn finish(self) -> Vec<(u64, u64)> {
        let Publisher { acked, stop, task } = self;
        stop.store(true, Ordering::Release);
        task.await.expect("publisher");
        acked.lock().clone()
    }
}

/// Reads `client`'s publications of `chat:audit` until it has `last`.
async fn received(mut client: Client, last: u64, who: &str) -> Vec<(u64, u64, String)> {
    let mut seen = Vec::new();
    within(
        WAIT,
        &format!("{who} to receive up to offset {last}"),
        async {
            while seen.last().is_none_or(|(offset, _, _)| *offset < last) {
                match client.next_event_within(WAIT).await {
                    Ok(Event::Push(Push::Pub(p))) if p.channel.as_str() == "chat:audit" => {
                        let n: Value = serde_json::from_str(p.data.get()).expect("JSON");
                        seen.push((p.offset, n["n"].as_u64().expect("n"), p.epoch.to_string()));
                    }
                    Ok(_) => {}
                    Err(e) => panic!("{who}: {e}"),
                }
            }
        },
    )
    .await;
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_r3_cluster_loses_no_acknowledged_publication_through_node_and_replica_failures() {
    let cluster = Cluster::up();
    let env = Env::default().with("HERALD_JWT_SECRET", cluster.var("HERALD_CLUSTER_SECRET"));
    let token = mint_token(&env, "auditor", "chat:*", "");
    let mut clients = Vec::new();
    // one on each edge, and three through nginx (spread over the edges)
    let urls: Vec<String> = (1..=3)
        .map(|n| cluster.edge_ws(n))
        .chain((0..3).map(|_| cluster.var("HERALD_CLUSTER_WS").to_owned()))
        .collect();
    for (i, url) in urls.iter().enumerate() {
        let (client, _) = Client::connect(url, &token)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        client.subscribe("chat:audit").await.expect("subscribe");
        clients.push((format!("client {i} on {url}"), client));
    }
    let apis = [
        cluster.var("HERALD_CLUSTER_API").to_owned(),
        cluster.var("HERALD_CLUSTER_API_2").to_owned(),
    ];
    let publisher = Publisher::start(apis, cluster.var("HERALD_CLUSTER_API_KEY").to_owned());
    publisher.goes_on(20, "the start").await;

    // the NATS node leading the history stream dies (R3: two copies left)
    let stream = herald_core::subjects::Subjects::new(&cluster.prefix).stream_name("HISTORY");
    let leader = cluster.leader_of(&stream).await;
    cluster.script(&["kill", &format!("nats-{leader}")]);
    publisher.goes_on(40, "the stream leader died").await;
    cluster.script(&["start", &format!("nats-{leader}")]);

    // a routing replica dies; the publisher finds the other
    cluster.script(&["kill", "routing-1"]);
    publisher.goes_on(40, "a routing replica died").await;

    // it comes back while the first seed of its list is down
    cluster.script(&["kill", "nats-1"]);
    cluster.script(&["start", "routing-1"]);
    publisher
        .goes_on(20, "routing restarted with a seed down")
        .await;
    cluster.script(&["start", "nats-1"]);

    let acked = publisher.finish().await;
    let last = acked
        .iter()
        .map(|(_, offset)| *offset)
        .max()
        .expect("acked");
    let mut expected: Vec<(u64, u64)> = acked.iter().map(|(n, o)| (*o, *n)).collect();
    expected.sort_unstable();
    let mut audit_epoch = String::new();
    for (who, client) in clients {
        let seen = received(client, last, &who).await;
        audit_epoch = seen[0].2.clone();
        let epochs: std::collections::HashSet<&str> =
            seen.iter().map(|(_, _, e)| e.as_str()).collect();
        assert_eq!(epochs.len(), 1, "{who}: one epoch, nothing lost");
        let offsets: Vec<u64> = seen.iter().map(|(o, _, _)| *o).collect();
        let first = offsets[0];
        assert_eq!(
            offsets,
            (first..=last).collect::<Vec<_>>(),
            "{who}: every offset once, in order"
        );
        // every acknowledged publication, exactly once, at its offset
        let got: Vec<(u64, u64)> = seen.iter().map(|(o, n, _)| (*o, *n)).collect();
        let wanted: Vec<(u64, u64)> = expected
            .iter()
            .filter(|(o, _)| *o >= first)
            .copied()
            .collect();
        assert_eq!(got, wanted, "{who}");
    }

    // the whole NATS cluster restarts with its data gone; no Herald
    // process is restarted
    cluster.script(&["wipe-nats"]);
    let http = http_client();
    let answer = eventually(WAIT, "publishing back after NATS lost its data", || async {
        let answer = http
            .post(format!("{}/api/publish", cluster.var("HERALD_CLUSTER_API")))
            .bearer_auth(cluster.var("HERALD_CLUSTER_API_KEY"))
            .timeout(Duration::from_secs(10))
            .json(&json!({"channel": "chat:audit", "data": {"n": 0}, "idempotency_key": "after-wipe"}))
            .send()
            .await;
        match answer {
            Ok(answer) if answer.status() == 200 => answer.json::<Value>().await.ok(),
            _ => None,
        }
    })
    .await;
    assert_eq!(answer["offset"], 1, "history starts again: {answer}");
    assert_ne!(
        answer["epoch"],
        audit_epoch.as_str(),
        "in a new epoch: the loss is told"
    );

    // join/leave goes on being announced for the cluster
    let watcher_token = mint_token(&env, "watcher", "chat:*", "");
    let (watcher, _) = Client::connect(&cluster.edge_ws(1), &watcher_token)
        .await
        .expect("connect");
    watcher.subscribe("chat:lobby").await.expect("subscribe");
    let watcher = tokio::sync::Mutex::new(watcher);
    let attempt = AtomicUsize::new(0);
    eventually(
        WAIT,
        "join/leave announced after NATS lost its data",
        || async {
            // a join made while the lease is being taken again goes
            // unannounced: a new member each try, watched for a while
            let user = format!("joiner{}", attempt.fetch_add(1, Ordering::Relaxed) + 1);
            let (joiner, _) =
                Client::connect(&cluster.edge_ws(2), &mint_token(&env, &user, "chat:*", ""))
                    .await
                    .expect("connect");
            joiner.subscribe("chat:lobby").await.expect("subscribe");
            let mut watcher = watcher.lock().await;
            let announced = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    if let Ok(Event::Push(Push::Join(m))) =
                        watcher.next_event_within(Duration::from_secs(1)).await
                        && m.user.as_str() == user
                    {
                        return;
                    }
                }
            })
            .await
            .is_ok();
            if !announced {
                joiner.close().await;
            }
            announced
        },
    )
    .await;
}

/// The first port of a block of 100 that nothing listens on, below the
/// kernel's ephemeral range (32768 and up), so that no outgoing connection
/// of another test can take one of them while the cluster starts (a NATS
/// route port was seen taken that way on a busy machine).
fn free_port_block() -> u16 {
    loop {
        let base = 10_000 + 100 * (rand::random::<u16>() % 220);
        let free =
            (base..base + 100).all(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
        if free {
            return base;
        }
    }
}
