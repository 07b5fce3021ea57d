//! Real `herald` processes: standalone, or each service on its own over the
//! shared NATS server ([`Cluster`]), each killed when dropped; the `herald`
//! command run to completion; and the other programs tests drive.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, OnceLock, mpsc};
use std::time::Duration;

use parking_lot::Mutex;

use crate::nats::{Prefix, nats_url};
use crate::{API_KEY, SECRET, WAIT, eventually_blocking};

/// The `herald` binary of this build.
///
/// nextest names it in `NEXTEST_BIN_EXE_herald`; under `cargo test` it is
/// beside the `deps/` folder the test runs from.
pub fn herald_bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os("NEXTEST_BIN_EXE_herald")
            .or_else(|| std::env::var_os("CARGO_BIN_EXE_herald"))
        {
            return path.to_string_lossy().into_owned();
        }
        let exe = std::env::current_exe().expect("the test's own path");
        let bin = exe
            .ancestors()
            .skip(1)
            .map(|dir| dir.join("herald"))
            .find(|bin| bin.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "no herald binary beside {}: run the tests of the herald package",
                    exe.display()
                )
            });
        bin.to_string_lossy().into_owned()
    })
}

/// The repository's root.
pub fn repo_root() -> PathBuf {
    // cargo sets it when running tests; the compile-time value is a fallback.
    let manifest =
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
    Path::new(&manifest).join("../..")
}

/// Settings shared by the processes of one test: `HERALD_*` variables (and
/// any other) on top of a clean environment.
#[derive(Clone, Debug, Default)]
pub struct Env(Vec<(String, String)>);

impl Env {
    /// The test secret and API key ([`SECRET`], [`API_KEY`]); `Env::default()`
    /// has nothing (what a first run of `herald standalone` is).
    pub fn new() -> Env {
        Env::default()
            .with("HERALD_JWT_SECRET", SECRET)
            .with("HERALD_API_KEYS", API_KEY)
    }

    /// This, and `key` set to `value`.
    pub fn with(mut self, key: &str, value: impl Into<String>) -> Env {
        self.set(key, value);
        self
    }

    /// Sets `key` to `value` (for processes started from now on).
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.0.push((key.to_owned(), value)),
        }
    }

    /// Leaves `key` unset.
    pub fn without(mut self, key: &str) -> Env {
        self.0.retain(|(k, _)| k != key);
        self
    }

    /// Puts these settings on `command`, and nothing of the developer's own
    /// `HERALD_*` environment.
    pub fn apply(&self, command: &mut Command) {
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

/// The distributed mode's environment: services as processes over the
/// shared NATS server, under a subject prefix of the test's own (its
/// streams deleted when this is dropped), with the test secret and key and
/// memory history. It derefs to its [`Env`]: `Herald::edge("e1", &cluster)`.
#[derive(Debug)]
pub struct Cluster {
    env: Env,
    prefix: Prefix,
}

impl Cluster {
    /// A cluster environment under a new prefix.
    pub fn new() -> Cluster {
        let prefix = Prefix::new();
        let env = Env::new()
            .with("HERALD_NATS_URL", nats_url())
            .with("HERALD_SUBJECT_PREFIX", prefix.as_str())
            .with("HERALD_HISTORY_STORAGE", "memory");
        Cluster { env, prefix }
    }

    /// This, and `key` set to `value`.
    pub fn with(mut self, key: &str, value: impl Into<String>) -> Cluster {
        self.env.set(key, value);
        self
    }

    /// Sets `key` to `value` for the processes started from now on.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.env.set(key, value);
    }

    /// The subject prefix (and stream names) of this cluster.
    pub fn prefix(&self) -> &Prefix {
        &self.prefix
    }
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster::new()
    }
}

impl std::ops::Deref for Cluster {
    type Target = Env;

    fn deref(&self) -> &Env {
        &self.env
    }
}

/// A client token for `user` from `herald token`, valid for an hour:
/// `channels` it may subscribe to and `publish` it may publish to
/// (comma-separated patterns; empty for none).
pub fn mint_token(env: &Env, user: &str, channels: &str, publish: &str) -> String {
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
pub fn herald_output(env: &Env, args: &[&str]) -> String {
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

/// A running `herald` process; killed when dropped (its logs are printed
/// if the test is failing).
pub struct Herald {
    child: Child,
    /// The HTTP address.
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
    pub fn start(name: &str, env: &Env, args: &[&str]) -> Herald {
        Herald::start_with(name, env, args, None)
    }

    /// Starts `herald <args>` allowed at most `files` open descriptors
    /// (soft and hard limit, so it cannot raise them).
    pub fn start_limited(name: &str, env: &Env, args: &[&str], files: u32) -> Herald {
        Herald::start_with(name, env, args, Some(format!("ulimit -n {files}")))
    }

    /// Starts `herald <args>` with a soft open-files limit of `files` (the
    /// hard one stays: as container runtimes often leave it).
    pub fn start_soft_limited(name: &str, env: &Env, args: &[&str], files: u32) -> Herald {
        Herald::start_with(name, env, args, Some(format!("ulimit -Sn {files}")))
    }

    fn start_with(name: &str, env: &Env, args: &[&str], ulimit: Option<String>) -> Herald {
        let dir = tempfile::tempdir().expect("a working directory");
        let mut command = match ulimit {
            None => Command::new(herald_bin()),
            Some(ulimit) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("{ulimit} && exec \"$0\" \"$@\""))
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
        let (addr, grpc) = match addr_rx.recv_timeout(WAIT) {
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
    pub fn standalone(env: &Env) -> Herald {
        Herald::start("standalone", env, STANDALONE_ARGS)
    }

    /// `herald standalone` on free ports, with at most `files` descriptors.
    pub fn standalone_limited(env: &Env, files: u32) -> Herald {
        Herald::start_limited("standalone", env, STANDALONE_ARGS, files)
    }

    /// `herald standalone` on free ports, with a soft open-files limit of
    /// `files` under the hard one.
    pub fn standalone_soft_limited(env: &Env, files: u32) -> Herald {
        Herald::start_soft_limited("standalone", env, STANDALONE_ARGS, files)
    }

    /// `herald routing` on free ports.
    pub fn routing(name: &str, env: &Env) -> Herald {
        Herald::start(
            name,
            env,
            &["routing", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"],
        )
    }

    /// `herald presence` on free ports.
    pub fn presence(name: &str, env: &Env) -> Herald {
        Herald::start(
            name,
            env,
            &["presence", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"],
        )
    }

    /// `herald edge` on a free port, named `node` in the cluster.
    pub fn edge(node: &str, env: &Env) -> Herald {
        Herald::start(
            node,
            env,
            &["edge", "--http", "127.0.0.1:0", "--node-id", node],
        )
    }

    /// `herald notify` on free ports.
    pub fn notify(name: &str, env: &Env) -> Herald {
        Herald::start(
            name,
            env,
            &["notify", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"],
        )
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The HTTP base URL (`http://host:port`).
    pub fn http(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The WebSocket URL (`ws://host:port/ws`).
    pub fn ws(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// The gRPC address as a URL (`http://host:port`), as services are told
    /// where another is.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc.expect("a gRPC address"))
    }

    /// Its server API, called with the test key.
    pub fn api(&self) -> crate::Api {
        crate::Api::new(self.http())
    }

    /// Everything it logged so far (JSON lines).
    pub fn logs(&self) -> String {
        self.logs.lock().join("\n")
    }

    /// SIGKILL: the process dies without a word.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit, at most `limit`.
    pub fn terminate(&mut self, limit: Duration) -> Option<ExitStatus> {
        terminate(&mut self.child, limit)
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

/// Sends `child` SIGTERM and waits for its exit, at most `limit`.
pub fn terminate(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    signal(&child.id().to_string(), "-TERM");
    exited(child, limit)
}

/// SIGTERM to `child`'s whole process group (a child started as the leader
/// of its own, as a shell's job is), then its exit, at most `limit`;
/// SIGKILL to the group if it is still there.
pub fn terminate_group(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let group = format!("-{}", child.id());
    signal(&group, "-TERM");
    let status = exited(child, limit);
    if status.is_none() {
        signal(&group, "-KILL");
        return child.wait().ok();
    }
    status
}

fn signal(target: &str, signal: &str) {
    let _ = Command::new("kill").args([signal, "--", target]).status();
}

/// `child`'s exit status once it has exited, waiting at most `limit`.
pub fn exited(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `tests/browser/<script>` with node, the playwright-core modules
/// (`HERALD_TEST_NODE_MODULES`, else `scripts/browser-env.sh`) as its first
/// argument, then `args`; panics with its output unless it exits 0 and
/// says `ok: <done>`. Answers what it printed.
pub fn run_browser_script(script: &str, args: &[&str], done: &str) -> String {
    let mut command = Command::new("node");
    command
        .arg(repo_root().join("tests/browser").join(script))
        .arg(tool("HERALD_TEST_NODE_MODULES", "browser-env.sh"))
        .args(args);
    run_until_said(&mut command, &format!("ok: {done}"))
}

/// Runs `command` to its end; panics with its output unless it exits 0
/// and printed `said`. Answers what it printed.
pub fn run_until_said(command: &mut Command, said: &str) -> String {
    let output = command.output().expect("run it");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success() && stdout.contains(said),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{stdout}");
    stdout
}

/// Waits until something listens on 127.0.0.1:`port`.
pub fn wait_for_port(what: &str, port: u16) {
    eventually_blocking(WAIT, what, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

/// A port free on 127.0.0.1 when asked.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A tool's location: `var` when `scripts/test.sh` set it, else what
/// `scripts/<script>` (which installs the tool when missing) prints.
pub fn tool(var: &str, script: &str) -> String {
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

/// The Python with the test requirements (`scripts/test.sh` sets it up).
pub fn python() -> String {
    std::env::var("HERALD_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Runs the Python test client `tests/python/<script>`; panics with its
/// output unless it exits 0.
pub fn run_python(script: &str, args: &[&str]) -> String {
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

/// Resident memory of a process, bytes.
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
