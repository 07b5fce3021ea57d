//! The deployment files: the Kubernetes overlays and the compose file agree
//! with the binary (`tests/python/deployment.py`), and the nginx config in
//! `deploy/` really carries every transport — a real nginx in front of
//! Herald, with the resume test running through it.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

const SECRET: &str = "e2e-deploy-secret-0123456789-abcdef0";
const API_KEY: &str = "e2e-deploy-key";

/// The kubectl that renders the overlays: `scripts/deploy-env.sh` installs
/// it and nginx when missing (`scripts/test.sh` runs it once, up front, and
/// sets HERALD_TEST_KUBECTL).
fn kubectl() -> String {
    tool("HERALD_TEST_KUBECTL", "deploy-env.sh")
}

#[test]
fn kubernetes_overlays_and_compose_match_the_binary() {
    let root = repo_root();
    let out = run_python(
        "deployment.py",
        &[&kubectl(), herald_bin(), root.to_str().unwrap()],
    );
    assert!(out.contains("ok: deployment"), "{out}");
}

/// nginx with `deploy/nginx.conf`, its upstream pointed at `edge`.
struct Nginx {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(edge: &str) -> Nginx {
        kubectl(); // nginx comes with it
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = std::fs::read_to_string(repo_root().join("deploy/nginx.conf")).unwrap();
        let upstream = edge.trim_start_matches("http://");
        assert!(conf.contains("server edge:8080;") && conf.contains("listen 80;"));
        let conf = conf
            .replace("server edge:8080;", &format!("server {upstream};"))
            .replace("listen 80;", &format!("listen 127.0.0.1:{port};"));
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new(nginx_bin())
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .arg("-g")
            .arg(format!(
                "daemon off; pid {};",
                dir.path().join("nginx.pid").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx {
            child,
            port,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers (SIGKILL would orphan them)
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_bin() -> &'static str {
    if Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn every_transport_resumes_through_the_nginx_config() {
    let env = Env::new(&[("HERALD_JWT_SECRET", SECRET), ("HERALD_API_KEYS", API_KEY)]);
    let herald = Herald::standalone(&env);
    let nginx = Nginx::start(&herald.http());
    let token = herald_output(&env, &["token", "--user", "nina", "--channels", "proxy:*"]);
    for transport in ["ws", "sse", "poll"] {
        let channel = format!("proxy:{transport}");
        // clients through nginx, the publisher straight to the server API
        let out = run_python(
            "resume.py",
            &[
                &nginx.url(),
                &herald.http(),
                API_KEY,
                &token,
                transport,
                &channel,
            ],
        );
        assert!(
            out.starts_with(&format!("ok: {transport} resumed")),
            "{out}"
        );
    }
}
