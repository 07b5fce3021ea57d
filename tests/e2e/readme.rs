//! The README, followed literally: its "Run it" and "The distributed mode"
//! commands are read from README.md (never copied here) and run as a
//! reader would run them, each terminal a process, and a message goes end
//! to end. One substitution: `cargo run --release --` is the binary it
//! runs, which this checkout's test build stands in for (as
//! `target/release/herald`, the path the README puts on `PATH`).
//!
//! The README's fixed ports (8080, 8081, 8082, 8083, 50051–50053) are used,
//! so both walks run in this one test, one after the other.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};

use herald_testkit::*;

/// The fenced blocks (info string, lines) of the README section headed
/// `heading`, up to the next heading of any level.
fn blocks(readme: &str, heading: &str) -> Vec<(String, Vec<String>)> {
    let start = readme
        .lines()
        .position(|l| l.trim_start_matches('#').trim() == heading && l.starts_with('#'))
        .unwrap_or_else(|| panic!("README has no section `{heading}`"));
    let mut found = Vec::new();
    let mut open: Option<(String, Vec<String>)> = None;
    for line in readme.lines().skip(start + 1) {
        match &mut open {
            None if line.starts_with('#') => break,
            None => {
                if let Some(info) = line.strip_prefix("```") {
                    open = Some((info.trim().to_owned(), Vec::new()));
                }
            }
            Some((_, lines)) => {
                if line.starts_with("```") {
                    found.extend(open.take());
                } else {
                    lines.push(line.to_owned());
                }
            }
        }
    }
    found
}

/// A reader's terminals: the environment they exported, the programs
/// still running, what each printed.
struct Terminals {
    dir: tempfile::TempDir,
    env: BTreeMap<String, String>,
    running: Vec<(String, Child)>,
    typing: Option<(ChildStdin, Arc<Mutex<String>>)>,
}

impl Terminals {
    fn new() -> Terminals {
        let dir = tempfile::tempdir().expect("a directory to work in");
        // the binary `cargo run --release` builds, where the README says
        let release = dir.path().join("target/release");
        std::fs::create_dir_all(&release).expect("target/release");
        std::os::unix::fs::symlink(herald_bin(), release.join("herald")).expect("symlink");
        // a clean environment, as a new terminal has: no HERALD_* of ours;
        // `python3` is the one with the `websockets` package
        let python_dir = Path::new(&python())
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let path = format!(
            "{}:{}",
            python_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut env = BTreeMap::new();
        env.insert("PATH".to_owned(), path);
        env.insert("HOME".to_owned(), std::env::var("HOME").unwrap_or_default());
        env.insert("PWD".to_owned(), dir.path().display().to_string());
        Terminals {
            dir,
            env,
            running: Vec::new(),
            typing: None,
        }
    }

    fn bash(&self, script: &str) -> Command {
        let mut command = Command::new("bash");
        command
            .arg("-c")
            .arg(script)
            .current_dir(self.dir.path())
            .env_clear()
            .envs(&self.env);
        command
    }

    fn literal(line: &str) -> String {
        line.replace(
            "cargo run --release -q --",
            "\"$PWD/target/release/herald\"",
        )
        .replace("cargo run --release --", "\"$PWD/target/release/herald\"")
    }

    /// Runs `line` to its end in this terminal; what it exports or assigns
    /// stays. Answers its output.
    fn run(&mut self, line: &str) -> String {
        let env_file = self.dir.path().join(".env-after");
        let script = format!(
            "set -a\n{}\nstatus=$?\nenv -0 > {:?}\nexit $status",
            Terminals::literal(line),
            env_file
        );
        let output = self.bash(&script).output().expect("bash");
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "`{line}` failed: {printed}");
        let after = std::fs::read(&env_file).expect("the environment after");
        self.env = after
            .split(|b| *b == 0)
            .filter_map(|pair| {
                let pair = String::from_utf8_lossy(pair);
                let (k, v) = pair.split_once('=')?;
                (!k.is_empty() && k != "_" && k != "SHLVL" && k != "status")
                    .then(|| (k.to_owned(), v.to_owned()))
            })
            .collect();
        printed
    }

    /// Starts `line` as a program that keeps running (a server, a client
    /// in its own terminal), and waits until it has started.
    fn start(&mut self, line: &str, stdin: bool) -> Arc<Mutex<String>> {
        let line = line.trim().trim_end_matches('&').trim();
        let log = self.dir.path().join(format!(".out-{}", self.running.len()));
        let file = std::fs::File::create(&log).expect("an output file");
        let mut command = self.bash(&Terminals::literal(line));
        // its own process group, as a terminal's job: stopped as one
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        command
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(file.try_clone().expect("dup"))
            .stderr(file);
        let mut child = command.spawn().expect("spawn");
        let printed = Arc::new(Mutex::new(String::new()));
        if stdin {
            self.typing = Some((child.stdin.take().expect("stdin"), printed.clone()));
        }
        let started = |out: &str| {
            if line.contains("herald") && !line.contains("token") {
                out.contains("\"listening\"")
            } else {
                !out.is_empty()
            }
        };
        eventually_blocking(WAIT, &format!("`{line}` started"), || {
            let out = std::fs::read_to_string(&log).unwrap_or_default();
            *printed.lock().expect("output") = out.clone();
            if let Ok(Some(status)) = child.try_wait() {
                panic!("`{line}` exited ({status}): {out}");
            }
            started(&out)
        });
        self.running.push((line.to_owned(), child));
        printed
    }

    /// Types `line` into the program started last with a keyboard.
    fn type_line(&mut self, line: &str) {
        let token = self.env.get("TOKEN").cloned().unwrap_or_default();
        let line = line.replace("<paste $TOKEN here>", &token);
        let (stdin, _) = self.typing.as_mut().expect("a program to type into");
        writeln!(stdin, "{line}").expect("type");
    }

    /// What the `n`-th started program printed so far.
    fn printed(&self, n: usize) -> String {
        let log = self.dir.path().join(format!(".out-{n}"));
        std::fs::read_to_string(log).unwrap_or_default()
    }
}

impl Drop for Terminals {
    fn drop(&mut self) {
        self.typing = None;
        let panicking = std::thread::panicking();
        for n in (0..self.running.len()).rev() {
            if panicking {
                eprintln!("--- `{}`:\n{}", self.running[n].0, self.printed(n));
            }
            let _ = terminate_group(&mut self.running[n].1, WAIT);
        }
    }
}

/// Runs a block of shell lines: `… &` and servers in the background.
fn run_block(terminals: &mut Terminals, lines: &[String]) -> Vec<String> {
    let mut answers = Vec::new();
    for line in lines {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.ends_with('&') || line.ends_with("standalone") {
            terminals.start(line, false);
        } else if line.starts_with("python3 -m websockets") {
            terminals.start(line, true);
        } else {
            answers.push(terminals.run(line));
        }
    }
    answers
}

fn readme() -> String {
    std::fs::read_to_string(repo_root().join("README.md")).expect("README.md")
}

fn run_it() {
    let readme = readme();
    let blocks = blocks(&readme, "Run it");
    let mut terminals = Terminals::new();
    let shell: Vec<_> = blocks.iter().filter(|(info, _)| info == "sh").collect();
    assert!(shell.len() >= 3, "Run it: a server, a client and a publish");
    // terminal 1: the server; terminal 2: a token and a WebSocket client
    run_block(&mut terminals, &shell[0].1);
    run_block(&mut terminals, &shell[1].1);
    let websocket = terminals.running.len() - 1;
    let typed = blocks
        .iter()
        .find(|(info, _)| info == "json")
        .expect("the frames to type");
    for line in &typed.1 {
        terminals.type_line(line);
    }
    eventually_blocking(WAIT, "subscribed", || {
        terminals.printed(websocket).contains("\"id\":2,\"ok\"")
    });
    // terminal 3: publish through the server API
    let answers = run_block(&mut terminals, &shell[2].1);
    assert!(
        answers.iter().any(|a| a.contains("\"offset\":1")),
        "{answers:?}"
    );
    eventually_blocking(WAIT, "the WebSocket client prints the publication", || {
        let out = terminals.printed(websocket);
        out.contains("\"pub\"") && out.contains("hello")
    });
}

fn distributed() {
    let readme = readme();
    let blocks = blocks(&readme, "The distributed mode");
    let mut terminals = Terminals::new();
    let (_, lines) = blocks
        .iter()
        .find(|(info, _)| info == "sh")
        .expect("the commands");
    // the SSE client must be listening before the publish: run up to it,
    // wait until the edge holds it, then the rest
    let publish = lines
        .iter()
        .position(|l| l.contains("/api/publish"))
        .expect("a publish");
    run_block(&mut terminals, &lines[..publish]);
    let sse = terminals.running.len() - 1;
    eventually_blocking(WAIT, "the SSE client subscribed", || {
        terminals.printed(sse).contains("event: subscribe")
    });
    let answers = run_block(&mut terminals, &lines[publish..]);
    assert!(
        answers.iter().any(|a| a.contains("\"offset\"")),
        "{answers:?}"
    );
    eventually_blocking(WAIT, "the SSE client prints the publication", || {
        terminals.printed(sse).contains("hello")
    });
    drop(terminals);
    // what the walk left in the shared NATS (prefix `herald`, the default)
    delete_streams("herald");
}

#[test]
fn the_readme_run_it_and_distributed_quick_start_work_as_written() {
    run_it();
    distributed();
}
