//! Running real `herald` processes for end-to-end tests.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, mpsc};

use parking_lot::Mutex;
use std::time::Duration;

pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn herald_bin() -> &'static str {
    env!("CARGO_BIN_EXE_herald")
}

pub(crate) fn repo_root() -> PathBuf {
    // cargo sets it when running tests; the compile-time value is a fallback.
    let manifest =
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
    Path::new(&manifest).join("../..")
}

pub(crate) fn nats_url() -> String {
    std::env::var("HERALD_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// A prefix no other test run uses, for NATS subjects and streams.
pub(crate) fn unique_prefix() -> String {
    format!("t{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

/// The Python with the test requirements (`scripts/test.sh` sets it up).
pub(crate) fn python() -> String {
    std::env::var("HERALD_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Settings shared by the processes of one test.
#[derive(Clone, Debug)]
pub(crate) struct Env(pub Vec<(String, String)>);

impl Env {
    pub(crate) fn new(pairs: &[(&str, &str)]) -> Self {
        Env(pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    fn apply(&self, command: &mut Command) {
        // Nothing from the developer's own environment leaks into a test.
        for (key, _) in std::env::vars() {
            if key.starts_with("HERALD_") {
                command.env_remove(&key);
            }
        }
        command
            .env("RUST_LOG", "info")
            .env("HERALD_LOG_FORMAT", "json");
        for (k, v) in &self.0 {
            command.env(k, v);
        }
    }
}

/// A tool's location: `var` when `scripts/test.sh` set it, else what
/// `scripts/<script>` (which installs the tool when missing) prints.
pub(crate) fn tool(var: &str, script: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        let out = Command::new(repo_root().join("scripts").join(script))
            .output()
            .unwrap_or_else(|e| panic!("run scripts/{script}: {e}"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    })
}

/// A client token for `user` from `herald token`, valid for an hour:
/// `channels` it may subscribe to and `publish` it may publish to
/// (comma-separated patterns; empty for none).
pub(crate) fn mint_token(env: &Env, user: &str, channels: &str, publish: &str) -> String {
    herald_output(
        env,
        &[
            "token",
            "--user",
            user,
            "--channels",
            channels,
            "--publish",
            publish,
            "--ttl",
            "1h",
        ],
    )
}

/// Runs `herald` with `args` to completion and returns its stdout.
pub(crate) fn herald_output(env: &Env, args: &[&str]) -> String {
    let mut command = Command::new(herald_bin());
    command.args(args);
    env.apply(&mut command);
    let output = command.output().expect("run herald");
    assert!(
        output.status.success(),
        "herald {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

const STANDALONE_ARGS: &[&str] = &[
    "standalone",
    "--http",
    "127.0.0.1:0",
    "--grpc",
    "127.0.0.1:0",
];

/// A running `herald` process; killed when dropped.
pub(crate) struct Herald {
    child: Child,
    pub addr: SocketAddr,
    /// The gRPC address, for services that serve gRPC.
    pub grpc: Option<SocketAddr>,
    logs: Arc<Mutex<Vec<String>>>,
    name: String,
    /// The process's working directory, its own: standalone keeps its
    /// SQLite file there, and processes of parallel tests must not share one.
    _dir: tempfile::TempDir,
}

impl Herald {
    /// Starts `herald <args>` and waits until it logs that it listens.
    pub(crate) fn start(name: &str, env: &Env, args: &[&str]) -> Herald {
        Herald::start_with(name, env, args, None)
    }

    /// Starts `herald <args>` allowed at most `files` open descriptors
    /// (soft and hard limit, so it cannot raise them).
    pub(crate) fn start_limited(name: &str, env: &Env, args: &[&str], files: u32) -> Herald {
        Herald::start_with(name, env, args, Some(files))
    }

    fn start_with(name: &str, env: &Env, args: &[&str], files: Option<u32>) -> Herald {
        let dir = tempfile::tempdir().expect("a working directory");
        let mut command = match files {
            None => Command::new(herald_bin()),
            Some(files) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit -n {files} && exec \"$0\" \"$@\""))
                    .arg(herald_bin());
                sh
            }
        };
        command
            .args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        env.apply(&mut command);
        let mut child = command.spawn().expect("spawn herald");
        let stderr = child.stderr.take().expect("stderr piped");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        {
            let logs = logs.clone();
            // Keep reading so the process never blocks on a full pipe.
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(addr) = listening_addr(&line) {
                        let _ = addr_tx.send(addr);
                    }
                    logs.lock().push(line);
                }
            });
        }
        let (addr, grpc) = match addr_rx.recv_timeout(START_TIMEOUT) {
            Ok(addrs) => addrs,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{name} did not start listening:\n{}",
                    logs.lock().join("\n")
                );
            }
        };
        Herald {
            child,
            addr,
            grpc,
            logs,
            name: name.to_owned(),
            _dir: dir,
        }
    }

    /// `herald standalone` on free ports.
    pub(crate) fn standalone(env: &Env) -> Herald {
        Herald::start("standalone", env, STANDALONE_ARGS)
    }

    /// `herald standalone` on free ports, with at most `files` descriptors.
    pub(crate) fn standalone_limited(env: &Env, files: u32) -> Herald {
        Herald::start_limited("standalone", env, STANDALONE_ARGS, files)
    }

    /// `herald routing` on free ports.
    pub(crate) fn routing(name: &str, env: &Env) -> Herald {
        Herald::start(
            name,
            env,
            &["routing", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"],
        )
    }

    /// `herald presence` on free ports.
    pub(crate) fn presence(name: &str, env: &Env) -> Herald {
        Herald::start(
            name,
            env,
            &["presence", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"],
        )
    }

    /// `herald edge` on a free port, named `node` in the cluster.
    pub(crate) fn edge(node: &str, env: &Env) -> Herald {
        Herald::start(
            node,
            env,
            &["edge", "--http", "127.0.0.1:0", "--node-id", node],
        )
    }

    /// `herald notify` on free ports.
    pub(crate) fn notify(name: &str, env: &Env) -> Herald {
        Herald::start(
            name,
            env,
            &["notify", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"],
        )
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn http(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) fn ws(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub(crate) fn logs(&self) -> String {
        self.logs.lock().join("\n")
    }

    /// SIGKILL: the process dies without a word.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit, at most `limit`.
    pub(crate) fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- logs of {} ---\n{}", self.name, self.logs());
        }
    }
}

fn listening_addr(line: &str) -> Option<(SocketAddr, Option<SocketAddr>)> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    if value["message"] != "listening" {
        return None;
    }
    let addr = value["addr"].as_str()?.parse().ok()?;
    let grpc = value["grpc"].as_str().and_then(|g| g.parse().ok());
    Some((addr, grpc))
}

/// Runs a Python test client; panics with its output unless it exits 0.
pub(crate) fn run_python(script: &str, args: &[&str]) -> String {
    let path = repo_root().join("tests/python").join(script);
    let output = Command::new(python())
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}); run scripts/test.sh, which sets up HERALD_TEST_PYTHON",
                python()
            )
        });
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{script} failed ({}):\n{stdout}\n{}\n(HERALD_TEST_PYTHON must have tests/python/requirements.txt installed; scripts/test.sh does this)",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

pub(crate) fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

/// Deletes a test's streams when dropped.
pub(crate) struct StreamCleanup(pub String);

impl Drop for StreamCleanup {
    fn drop(&mut self) {
        delete_streams(&self.0);
    }
}

/// Deletes the JetStream streams a test's prefix created (best effort; run
/// from `Drop`, so it brings its own runtime on its own thread).
pub(crate) fn delete_streams(prefix: &str) {
    let stream_prefix = format!("{}_", prefix.to_ascii_uppercase().replace('-', "_"));
    let url = nats_url();
    let _ = std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async move {
            use futures::TryStreamExt;
            let Ok(client) = async_nats::connect(&url).await else {
                return;
            };
            let js = async_nats::jetstream::new(client);
            let names: Vec<String> = js.stream_names().try_collect().await.unwrap_or_default();
            for name in names.into_iter().filter(|n| n.starts_with(&stream_prefix)) {
                let _ = js.delete_stream(&name).await;
            }
        });
    })
    .join();
}

/// Resident memory of a process, bytes.
pub(crate) fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
