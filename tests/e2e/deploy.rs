//! The deployment files: the Kubernetes overlays and the compose file agree
//! with the binary (`tests/python/deployment.py`), and the nginx config in
//! `deploy/` really carries every transport — a real nginx in front of
//! Herald, with the resume test running through it.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use herald_testkit::*;

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
        wait_for_port("nginx listening", port);
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
        if terminate(&mut self.child, WAIT).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn nginx_bin() -> &'static str {
    if Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    }
}

#[test]
fn every_transport_resumes_through_the_nginx_config() {
    let env = Env::new();
    let herald = Herald::standalone(&env);
    let nginx = Nginx::start(&herald.http());
    let token = mint_token(&env, "nina", "proxy:*", "");
    for transport in ["ws", "sse", "poll"] {
        let channel = format!("proxy:{transport}");
        // clients through nginx, the publisher straight to the server API
        crate::transports::resume(&nginx.url(), &herald.http(), &token, transport, &channel);
    }
}
