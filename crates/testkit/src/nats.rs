//! The shared NATS server: where it is, a subject prefix per test (so tests
//! run in parallel), and deleting what a test left there.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use herald_core::bus::NatsBus;
use herald_core::work_queue::PushJob;

/// The NATS server tests use (`HERALD_TEST_NATS_URL`, else the local one).
pub fn nats_url() -> String {
    std::env::var("HERALD_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// A connection to the shared NATS server, named `name`.
pub async fn nats_bus(name: &str) -> NatsBus {
    nats_bus_at(&nats_url(), name).await
}

/// A connection to the NATS server at `url`, named `name`.
pub async fn nats_bus_at(url: &str, name: &str) -> NatsBus {
    NatsBus::connect(url, name, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("NATS at {url} is required for this test: {e}"))
}

/// A subject prefix no other test run uses, for NATS subjects and streams.
pub fn unique_prefix() -> String {
    format!("t{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

/// A subject prefix of the test's own; the JetStream streams made under
/// it are deleted when this is dropped.
#[derive(Debug)]
pub struct Prefix(String);

impl Prefix {
    /// A new one ([`unique_prefix`]).
    pub fn new() -> Prefix {
        Prefix(unique_prefix())
    }

    /// The prefix.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name of the stream `name` under this prefix (`<PREFIX>_<NAME>`),
    /// as Herald names its streams.
    pub fn stream(&self, name: &str) -> String {
        format!("{}{name}", stream_prefix(&self.0))
    }
}

impl Default for Prefix {
    fn default() -> Self {
        Prefix::new()
    }
}

impl std::ops::Deref for Prefix {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        delete_streams(&self.0);
    }
}

fn stream_prefix(prefix: &str) -> String {
    format!("{}_", prefix.to_ascii_uppercase().replace('-', "_"))
}

/// Deletes the JetStream streams under `prefix` (best effort, and from
/// `Drop` too).
pub fn delete_streams(prefix: &str) {
    let stream_prefix = stream_prefix(prefix);
    let url = nats_url();
    crate::block_on_own_thread(async move {
        let Ok(client) = async_nats::connect(&url).await else {
            return;
        };
        let js = async_nats::jetstream::new(client);
        let names: Vec<String> = js.stream_names().try_collect().await.unwrap_or_default();
        for name in names.into_iter().filter(|n| n.starts_with(&stream_prefix)) {
            let _ = js.delete_stream(&name).await;
        }
    });
}

/// Takes every push job waiting on the work-queue stream `stream` off it.
pub async fn take_push_jobs(client: &async_nats::Client, stream: &str) -> Vec<PushJob> {
    let js = async_nats::jetstream::new(client.clone());
    let consumer = js
        .get_stream(stream)
        .await
        .unwrap_or_else(|e| panic!("stream {stream}: {e}"))
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("test-reader".into()),
            ..Default::default()
        })
        .await
        .expect("a consumer");
    // what is stored is there at once; the wait only ends the fetch
    let mut batch = consumer
        .fetch()
        .max_messages(100)
        .expires(Duration::from_millis(500))
        .messages()
        .await
        .expect("a fetch");
    let mut jobs = Vec::new();
    while let Some(Ok(message)) = batch.next().await {
        jobs.push(serde_json::from_slice(&message.payload).expect("a push job"));
        message.double_ack().await.expect("acked");
    }
    jobs
}

/// A NATS server of the test's own (JetStream on, its store in a
/// temporary directory, on a free port), killed when dropped: for tests
/// that stop, freeze or configure their server.
pub struct PrivateNats {
    child: std::process::Child,
    /// Its client port.
    pub port: u16,
    /// Its monitoring port (`/connz`, `/varz`).
    pub monitor_port: u16,
    dir: tempfile::TempDir,
}

impl PrivateNats {
    /// A plain server.
    pub async fn start() -> PrivateNats {
        PrivateNats::with_config("").await
    }

    /// A server with `extra` added to its configuration file (`tls { … }`,
    /// `authorization { … }`).
    pub async fn with_config(extra: &str) -> PrivateNats {
        let port = crate::free_port();
        let monitor_port = crate::free_port();
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = dir.path().join("nats.conf");
        let store = dir.path().join("store");
        std::fs::write(
            &conf,
            format!(
                "listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor_port}\n\
                 jetstream {{ store_dir: {store:?} }}\n{extra}\n"
            ),
        )
        .expect("write nats.conf");
        let child = PrivateNats::spawn(&conf);
        let nats = PrivateNats {
            child,
            port,
            monitor_port,
            dir,
        };
        nats.listening().await;
        nats
    }

    fn spawn(conf: &std::path::Path) -> std::process::Child {
        std::process::Command::new("nats-server")
            .arg("-c")
            .arg(conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server on PATH")
    }

    async fn listening(&self) {
        let port = self.monitor_port;
        crate::eventually(crate::WAIT, "nats-server listening", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
    }

    /// Kills the server (its clients see the connection drop at once).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again, on the same ports and store.
    pub async fn restart(&mut self) {
        self.kill();
        self.child = PrivateNats::spawn(&self.dir.path().join("nats.conf"));
        self.listening().await;
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// A directory that lives as long as the server, for files its
    /// configuration names (certificates).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Sends `signal` (`-STOP`, `-CONT`, …) to the server. After `-STOP`
    /// it returns once every thread of the server has stopped: a thread
    /// still running when `kill` returns (a busy machine) could otherwise
    /// handle a request sent "while frozen".
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id();
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal}");
        if signal == "-STOP" {
            crate::eventually_blocking(crate::WAIT, "nats-server stopped", || {
                all_threads_stopped(pid)
            });
        }
    }
}

/// Whether every thread of `pid` is stopped (state `T` in
/// `/proc/<pid>/task/*/stat`, the field after the parenthesised name).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state == "T" || state == "t")
        })
    })
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.signal("-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
