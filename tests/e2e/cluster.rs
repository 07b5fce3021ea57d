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
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(repo_root().join("scripts/cluster.sh"));
        command
            .args(args)
            .env("HERALD_BIN", herald_bin())
            .env("HERALD_CLUSTER_DIR", self.dir.path())
            .env("HERALD_CLUSTER_BASE", self.base.to_string())
            .env("HERALD_CLUSTER_PREFIX", &self.prefix)
            .env("HERALD_CLUSTER_DATABASE_URL", database_url());
        command
    }

    fn script(&self, args: &[&str]) -> std::process::Output {
        let output = self.command(args).output().expect("scripts/cluster.sh");
        self.succeeded(args, output)
    }

    /// `output` of `cluster.sh args`, which must have succeeded.
    fn succeeded(&self, args: &[&str], output: std::process::Output) -> std::process::Output {
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

    fn edge_http(&self, n: u16) -> String {
        format!("http://127.0.0.1:{}", self.base + 80 + n)
    }

    /// Each edge's and nginx's base URL.
    fn http_urls(&self) -> Vec<String> {
        (1..=3)
            .map(|n| self.edge_http(n))
            .chain([self.var("HERALD_CLUSTER_URL").to_owned()])
            .collect()
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

    /// A [`Publisher`] to both routing replicas.
    fn publisher(&self) -> Publisher {
        let apis = [
            self.var("HERALD_CLUSTER_API").to_owned(),
            self.var("HERALD_CLUSTER_API_2").to_owned(),
        ];
        Publisher::start(apis, self.var("HERALD_CLUSTER_API_KEY").to_owned())
    }

    fn pid_of(&self, name: &str) -> u32 {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.pid")))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} runs"))
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

/// When a node (or none) started saying it leads the stream.
type LeaderChange = (std::time::Instant, Option<u16>);

/// Which NATS node says it leads a stream, asked every 100 ms: the
/// figures say how much of a pause is NATS electing and how much Herald.
struct LeaderWatch {
    /// (when, the node that says it leads) at each change
    changes: Arc<Mutex<Vec<LeaderChange>>>,
    task: tokio::task::JoinHandle<()>,
}

impl LeaderWatch {
    fn start(cluster: &Cluster, stream: &str) -> LeaderWatch {
        let monitors: Vec<(u16, String)> = (1..=3).map(|n| (n, cluster.monitor(n))).collect();
        let stream = stream.to_owned();
        let changes = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let changes = changes.clone();
            async move {
                let http = http_client();
                let mut every = tokio::time::interval(Duration::from_millis(100));
                loop {
                    every.tick().await;
                    let mut leader = None;
                    for (n, monitor) in &monitors {
                        let answer = http
                            .get(format!("{monitor}/jsz?streams=true"))
                            .timeout(Duration::from_millis(300))
                            .send()
                            .await;
                        let Ok(answer) = answer else { continue };
                        let Ok(jsz) = answer.json::<Value>().await else {
                            continue;
                        };
                        let says = jsz["account_details"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .flat_map(|a| a["stream_detail"].as_array().into_iter().flatten())
                            .find(|s| s["name"] == stream.as_str())
                            .and_then(|s| s["cluster"]["leader"].as_str().map(str::to_owned));
                        if says.as_deref() == Some(format!("n{n}").as_str()) {
                            leader = Some(*n);
                            break;
                        }
                    }
                    let mut changes = changes.lock();
                    if changes.last().is_none_or(|(_, last)| *last != leader) {
                        changes.push((std::time::Instant::now(), leader));
                    }
                }
            }
        });
        LeaderWatch { changes, task }
    }

    /// When a node other than `gone` first said it leads, after `since`.
    fn new_leader_after(
        &self,
        since: std::time::Instant,
        gone: Option<u16>,
    ) -> Option<std::time::Instant> {
        self.changes
            .lock()
            .iter()
            .find(|(at, leader)| *at >= since && leader.is_some() && *leader != gone)
            .map(|(at, _)| *at)
    }
}

impl Drop for LeaderWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // a failed run's logs, kept where HERALD_TEST_KEEP_LOGS says
        if std::thread::panicking()
            && let Some(keep) = std::env::var_os("HERALD_TEST_KEEP_LOGS")
        {
            let to = std::path::Path::new(&keep).join(self.base.to_string());
            let _ = std::fs::create_dir_all(&to);
            for entry in std::fs::read_dir(self.dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if entry.path().extension().is_some_and(|e| e == "log") {
                    let _ = std::fs::copy(entry.path(), to.join(entry.file_name()));
                }
            }
            eprintln!("cluster logs kept in {}", to.display());
        }
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
    /// when each was acknowledged
    times: Arc<Mutex<Vec<std::time::Instant>>>,
    /// what each failed try was answered, and when
    failures: Arc<Mutex<Vec<(std::time::Instant, String)>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    fn start(apis: [String; 2], key: String) -> Publisher {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let times = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (acked, times, failures, stop) =
                (acked.clone(), times.clone(), failures.clone(), stop.clone());
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
                        let failure = match answer {
                            Ok(answer) if answer.status() == 200 => {
                                if let Ok(body) = answer.json::<Value>().await {
                                    let offset = body["offset"].as_u64().expect("offset");
                                    acked.lock().push((n, offset));
                                    times.lock().push(std::time::Instant::now());
                                    return true;
                                }
                                "200 without a body".to_owned()
                            }
                            Ok(answer) => {
                                let status = answer.status();
                                let body: Value = answer.json().await.unwrap_or_default();
                                format!("{status} {}", body["error"]["message"])
                            }
                            Err(e) if e.is_timeout() => "no answer in 10 s".to_owned(),
                            Err(e) if e.is_connect() => "connection refused".to_owned(),
                            Err(_) => "connection broken".to_owned(),
                        };
                        failures.lock().push((std::time::Instant::now(), failure));
                        // a replica down, JetStream electing: the other
                        // replica, same key
                        api.fetch_xor(1, Ordering::Relaxed);
                        false
                    })
                    .await;
                }
            }
        });
        Publisher {
            acked,
            times,
            failures,
            stop,
            task,
        }
    }

    fn count(&self) -> usize {
        self.acked.lock().len()
    }

    /// When the first publication after `at` was acknowledged.
    fn first_ack_after(&self, at: std::time::Instant) -> Option<std::time::Instant> {
        self.times.lock().iter().find(|t| **t >= at).copied()
    }

    /// How long after a NATS event (`event`, at `at`) a new stream leader
    /// was elected, and publishing acknowledged again after that: NATS'
    /// share of the pause and Herald's.
    fn report_failover(
        &self,
        event: &str,
        at: std::time::Instant,
        elected: Option<std::time::Instant>,
    ) {
        let Some(elected) = elected else {
            eprintln!("{event}: no new stream leader seen");
            return;
        };
        let acked = self
            .first_ack_after(elected)
            .or_else(|| self.first_ack_after(at));
        eprintln!(
            "{event}: NATS had a new stream leader {:?} after it; the first acknowledgement came {:?} after that",
            elected - at,
            acked.map(|t| t.saturating_duration_since(elected))
        );
    }

    /// Waits until `more` publications beyond now are acknowledged, and
    /// reports the longest pause between two acknowledgements meanwhile
    /// (a figure for the record, not a claim: the machine is shared).
    async fn goes_on(&self, more: usize, after: &str) {
        let from = self.count().saturating_sub(1);
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
        let times = self.times.lock();
        let Some((start, end)) = times[from..]
            .windows(2)
            .map(|w| (w[0], w[1]))
            .max_by_key(|(start, end)| *end - *start)
        else {
            return;
        };
        // what the publisher was answered meanwhile, in order, repeats counted
        let mut answers: Vec<(String, usize)> = Vec::new();
        for (_, failure) in self
            .failures
            .lock()
            .iter()
            .filter(|(at, _)| (start..=end).contains(at))
        {
            match answers.last_mut() {
                Some((last, count)) if last == failure => *count += 1,
                _ => answers.push((failure.clone(), 1)),
            }
        }
        eprintln!(
            "publishing after {after}: longest pause between acknowledgements {:?}, answered meanwhile {answers:?}",
            end - start
        );
    }

    async fn finish(self) -> Vec<(u64, u64)> {
        let Publisher {
            acked, stop, task, ..
        } = self;
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

/// Checks that a client given `seen` (offset, n, epoch) from some offset on
/// got every acknowledged publication (n, offset) from there up to `last`
/// exactly once, in order, in one epoch.
fn check_deliveries(who: &str, seen: &[(u64, u64, String)], acked: &[(u64, u64)], last: u64) {
    assert!(!seen.is_empty(), "{who}: received nothing");
    let epochs: std::collections::HashSet<&str> = seen.iter().map(|(_, _, e)| e.as_str()).collect();
    assert_eq!(epochs.len(), 1, "{who}: one epoch, nothing lost");
    let offsets: Vec<u64> = seen.iter().map(|(o, _, _)| *o).collect();
    let first = offsets[0];
    assert_eq!(
        offsets,
        (first..=last).collect::<Vec<_>>(),
        "{who}: every offset once, in order"
    );
    // every acknowledged publication, exactly once, at its offset
    let mut wanted: Vec<(u64, u64)> = acked
        .iter()
        .map(|(n, o)| (*o, *n))
        .filter(|(o, _)| *o >= first)
        .collect();
    wanted.sort_unstable();
    let got: Vec<(u64, u64)> = seen.iter().map(|(o, n, _)| (*o, *n)).collect();
    assert_eq!(got, wanted, "{who}");
}

/// `tests/python/cluster_audit.py`: WebSocket, SSE and long-poll clients
/// that are not ours, resuming like the SDK whenever their connection ends.
struct Audit {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

#[derive(serde::Deserialize)]
struct AuditResult {
    name: String,
    seen: Vec<(u64, Option<u64>, String)>,
    sessions: u32,
    told_lost: Vec<Value>,
}

impl AuditResult {
    fn check(&self, acked: &[(u64, u64)], last: u64) {
        let who = format!("audit client {}", self.name);
        assert!(
            self.told_lost.is_empty(),
            "{who} was told of a loss: {:?}",
            self.told_lost
        );
        let seen: Vec<(u64, u64, String)> = self
            .seen
            .iter()
            .map(|(o, n, e)| {
                (
                    *o,
                    n.unwrap_or_else(|| panic!("{who}: data without n")),
                    e.clone(),
                )
            })
            .collect();
        check_deliveries(&who, &seen, acked, last);
    }
}

impl Audit {
    async fn start(token: &str, urls: &[String]) -> Audit {
        let mut child = tokio::process::Command::new(python())
            .arg(repo_root().join("tests/python/cluster_audit.py"))
            .arg(token)
            .arg("chat:audit")
            .args(urls)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect(
                "tests/python/cluster_audit.py (HERALD_TEST_PYTHON: scripts/test.sh sets it up)",
            );
        let stdin = child.stdin.take().expect("stdin");
        let stdout = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
            child.stdout.take().expect("stdout"),
        ));
        Audit {
            child,
            stdin,
            stdout,
        }
    }

    async fn say(&mut self, line: String) -> String {
        use tokio::io::AsyncWriteExt;
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write to the audit clients");
        let answer = within(
            WAIT * 2,
            &format!("the audit clients' answer to {line}"),
            self.stdout.next_line(),
        )
        .await
        .expect("read the audit clients");
        answer.unwrap_or_else(|| {
            panic!(
                "the audit clients ended at {line}: {:?}",
                self.child.try_wait()
            )
        })
    }

    /// `count` more clients on `transport`, each subscribed when this returns.
    async fn add(&mut self, transport: &str, count: usize) {
        let ready = self.say(format!("start {transport} {count}")).await;
        assert!(ready.starts_with("ready"), "{ready}");
    }

    /// What each client received, once each has `last`.
    async fn until(mut self, last: u64) -> Vec<AuditResult> {
        #[derive(serde::Deserialize)]
        struct Report {
            clients: Vec<AuditResult>,
        }
        let report = self.say(format!("until {last}")).await;
        serde_json::from_str::<Report>(&report)
            .unwrap_or_else(|e| panic!("audit report ({e}): {report}"))
            .clients
    }
}

/// Publishes to `chat:frozen` from several callers, to both routing
/// replicas, while every NATS node is frozen, and times each answer.
struct Frozen {
    answers: Vec<FrozenAnswer>,
}

struct FrozenAnswer {
    n: u64,
    status: u16,
    retry_after: bool,
    body: Value,
    took: Duration,
}

impl Frozen {
    async fn publish_while(cluster: &Cluster, outage: Duration) -> Frozen {
        for n in 1..=3 {
            cluster.script(&["freeze", &format!("nats-{n}")]);
        }
        let until = std::time::Instant::now() + outage;
        let callers: Vec<_> = (0..4u64)
            .map(|caller| {
                let api = cluster.var(if caller % 2 == 0 { "HERALD_CLUSTER_API" } else { "HERALD_CLUSTER_API_2" }).to_owned();
                let key = cluster.var("HERALD_CLUSTER_API_KEY").to_owned();
                tokio::spawn(async move {
                    let http = http_client();
                    let mut answers = Vec::new();
                    let mut pace = tokio::time::interval(Duration::from_millis(200));
                    for i in 0.. {
                        pace.tick().await;
                        if std::time::Instant::now() >= until {
                            break;
                        }
                        let n = caller * 1000 + i;
                        let sent = std::time::Instant::now();
                        let answer = http
                            .post(format!("{api}/api/publish"))
                            .bearer_auth(&key)
                            .timeout(WAIT)
                            .json(&json!({"channel": "chat:frozen", "data": {"n": n}, "idempotency_key": format!("f{n}")}))
                            .send()
                            .await
                            .unwrap_or_else(|e| panic!("publish f{n} while frozen: {e}"));
                        let took = sent.elapsed();
                        let status = answer.status().as_u16();
                        let retry_after = answer.headers().contains_key("retry-after");
                        let body = answer.json().await.unwrap_or(Value::Null);
                        answers.push(FrozenAnswer { n, status, retry_after, body, took });
                    }
                    answers
                })
            })
            .collect();
        let mut answers = Vec::new();
        for caller in callers {
            answers.extend(caller.await.expect("caller"));
        }
        for n in 1..=3 {
            cluster.script(&["thaw", &format!("nats-{n}")]);
        }
        Frozen { answers }
    }

    /// Every answer came within the publish deadline + 1 s and was either
    /// "not stored" (503 + Retry-After) or "outcome unknown" (504, code 111,
    /// the key to retry with); after the thaw each unknown one, sent again
    /// with its key, is stored exactly once and no refused one is stored.
    async fn check_after_thaw(self, cluster: &Cluster) {
        let deadline = Duration::from_millis(
            herald_core::config::Config::default()
                .routing
                .publish_timeout_ms,
        );
        assert!(self.answers.len() >= 8, "publishes were tried while frozen");
        let mut unknown = Vec::new();
        for a in &self.answers {
            assert!(
                a.took <= deadline + Duration::from_secs(1),
                "publish f{} answered after {:?} ({} {}), past the {deadline:?} deadline + 1 s",
                a.n,
                a.took,
                a.status,
                a.body
            );
            match a.status {
                503 => assert!(a.retry_after, "503 without Retry-After: {}", a.body),
                504 => {
                    assert_eq!(a.body["error"]["code"], 111, "{}", a.body);
                    assert_eq!(
                        a.body["error"]["idempotency_key"],
                        format!("f{}", a.n),
                        "{}",
                        a.body
                    );
                    unknown.push(a.n);
                }
                other => panic!(
                    "publish f{} while JetStream was frozen: {other} {}",
                    a.n, a.body
                ),
            }
        }
        let api = Api::with_key(
            cluster.var("HERALD_CLUSTER_API"),
            cluster.var("HERALD_CLUSTER_API_KEY"),
        );
        for n in &unknown {
            eventually(WAIT, &format!("f{n} stored on retry"), || async {
                let answer = api
                    .post("/api/publish", json!({"channel": "chat:frozen", "data": {"n": n}, "idempotency_key": format!("f{n}")}))
                    .await;
                answer.status == 200
            })
            .await;
        }
        // as any caller would: a 503 (the cluster still settling) is asked again
        let history = eventually(WAIT, "history of chat:frozen", || async {
            let history = api.get("/api/history?channel=chat:frozen&limit=1000").await;
            match history.status {
                200 => Some(history),
                503 => None,
                other => panic!("history after the thaw: {other} {}", history.body),
            }
        })
        .await;
        let mut stored: Vec<u64> = history.body["publications"]
            .as_array()
            .expect("publications")
            .iter()
            .map(|p| p["data"]["n"].as_u64().expect("n"))
            .collect();
        stored.sort_unstable();
        unknown.sort_unstable();
        let slowest = self.answers.iter().map(|a| a.took).max();
        eprintln!(
            "while frozen: {} publishes, {} outcome unknown, {} refused, slowest answer {slowest:?}",
            self.answers.len(),
            unknown.len(),
            self.answers.len() - unknown.len()
        );
        assert_eq!(
            stored, unknown,
            "exactly the unknown ones stored, each once; nothing refused stored"
        );
    }
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
    // outside clients, on each edge and through nginx, resuming (on the
    // next URL) whenever their connection ends. A poll through nginx lands
    // on another edge each time, so it resumes (reads history) on every
    // poll: one read lost with the routing replica killed under it is
    // asked again, not waited out while the channel moves past what
    // history keeps.
    let mut audit = Audit::start(&token, &cluster.http_urls()).await;
    for transport in ["ws", "sse", "poll"] {
        audit.add(transport, 4).await;
    }
    let publisher = cluster.publisher();
    publisher.goes_on(20, "the start").await;

    // the NATS node leading the history stream dies (R3: two copies left)
    let stream = herald_core::subjects::Subjects::new(&cluster.prefix).stream_name("HISTORY");
    let leader = cluster.leader_of(&stream).await;
    let leaders = LeaderWatch::start(&cluster, &stream);
    let killed = std::time::Instant::now();
    cluster.script(&["kill", &format!("nats-{leader}")]);
    publisher.goes_on(40, "the stream leader died").await;
    publisher.report_failover(
        "the stream leader's SIGKILL",
        killed,
        leaders.new_leader_after(killed, Some(leader)),
    );
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

    // JetStream unreachable for 15 s: every NATS node frozen (sockets
    // open, nothing answered) while callers keep publishing
    let frozen = Frozen::publish_while(&cluster, Duration::from_secs(15)).await;
    let thawed = std::time::Instant::now();
    publisher.goes_on(20, "JetStream came back").await;
    publisher.report_failover("the thaw", thawed, leaders.new_leader_after(thawed, None));
    drop(leaders);
    frozen.check_after_thaw(&cluster).await;

    let acked = publisher.finish().await;
    let last = acked
        .iter()
        .map(|(_, offset)| *offset)
        .max()
        .expect("acked");
    let mut audit_epoch = String::new();
    for (who, client) in clients {
        let seen = received(client, last, &who).await;
        audit_epoch = seen[0].2.clone();
        check_deliveries(&who, &seen, &acked, last);
    }
    for result in audit.until(last).await {
        result.check(&acked, last);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_scaled_up_and_down_behind_nginx_lose_nothing_and_answer_health_while_draining() {
    let cluster = Cluster::up();
    let env = Env::default().with("HERALD_JWT_SECRET", cluster.var("HERALD_CLUSTER_SECRET"));
    let token = mint_token(&env, "auditor", "chat:*", "");
    let nginx = [cluster.var("HERALD_CLUSTER_URL").to_owned()];
    let mut audit = Audit::start(&token, &nginx).await;
    for transport in ["ws", "sse", "poll"] {
        audit.add(transport, 3).await;
    }
    let publisher = cluster.publisher();
    publisher.goes_on(20, "the start").await;

    // 3 → 4: nginx sends new clients to the fourth edge too
    cluster.script(&["scale", "4"]);
    for transport in ["ws", "sse", "poll"] {
        audit.add(transport, 3).await;
    }
    eventually(WAIT, "clients on the fourth edge", || async {
        metrics(&cluster.edge_http(4))
            .await
            .get("herald_edge_connections")
            .is_some_and(|c| *c > 0.0)
    })
    .await;
    publisher.goes_on(20, "a fourth edge").await;

    // 4 → 2: edges 3 and 4 leave nginx and drain while their health is
    // probed; their clients resume on the others
    let probes: Vec<_> = [3, 4]
        .map(|n| {
            tokio::spawn(probe_while_alive(
                cluster.edge_http(n),
                cluster.pid_of(&format!("edge-{n}")),
            ))
        })
        .into();
    let mut scale = cluster.command(&["scale", "2"]);
    let scaled = tokio::task::spawn_blocking(move || scale.output())
        .await
        .expect("scale")
        .expect("scripts/cluster.sh");
    cluster.succeeded(&["scale", "2"], scaled);
    for (n, probe) in [3, 4].into_iter().zip(probes) {
        let seen = probe.await.expect("probe");
        assert!(
            seen.draining > 0,
            "edge {n} answered /healthz 200 and /readyz 503 while draining: {seen:?}"
        );
    }
    publisher.goes_on(20, "two edges drained").await;

    let acked = publisher.finish().await;
    let last = acked
        .iter()
        .map(|(_, offset)| *offset)
        .max()
        .expect("acked");
    let results = audit.until(last).await;
    for result in &results {
        result.check(&acked, last);
    }
    let resumed = results.iter().filter(|r| r.sessions > 1).count();
    assert!(
        resumed > 0,
        "some clients were on the drained edges and resumed elsewhere"
    );
}

/// What a probe saw of a draining edge.
#[derive(Debug, Default)]
struct Probes {
    /// /healthz 200 and /readyz 503 in the same round
    draining: u32,
    ready: u32,
}

/// Probes an edge's /healthz and /readyz until its process `pid` exits;
/// panics if the edge stops answering while its process is still there
/// (beyond the moment between closing its listener and exiting).
async fn probe_while_alive(base: String, pid: u32) -> Probes {
    let alive = || std::path::Path::new(&format!("/proc/{pid}")).exists();
    let http = http_client();
    let mut seen = Probes::default();
    // a probe every 100 ms, as a load balancer's health check would
    let mut every = tokio::time::interval(Duration::from_millis(100));
    while alive() {
        every.tick().await;
        let get = |path: &str| {
            http.get(format!("{base}{path}"))
                .timeout(Duration::from_secs(5))
                .send()
        };
        match (get("/healthz").await, get("/readyz").await) {
            (Ok(health), Ok(ready)) => {
                assert_eq!(health.status(), 200, "/healthz while the edge lives");
                match ready.status().as_u16() {
                    200 => seen.ready += 1,
                    503 => seen.draining += 1,
                    other => panic!("/readyz {other}"),
                }
            }
            (health, ready) => {
                // refused: only in the last moment, as the process exits
                eventually(Duration::from_secs(10), &format!("the edge at {base} to exit once it stopped answering ({health:?}, {ready:?})"), || async { !alive() }).await;
            }
        }
    }
    seen
}

/// The first port of a block of 100 that nothing listens on, below the
/// kernel's ephemeral range (32768 and up), so that no outgoing connection
/// of another test can take one of them while the cluster starts (a NATS
/// route port was seen taken that way on a busy machine).
pub(crate) fn free_port_block() -> u16 {
    loop {
        let base = 10_000 + 100 * (rand::random::<u16>() % 220);
        let free =
            (base..base + 100).all(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
        if free {
            return base;
        }
    }
}
