//! Every service against a NATS server that requires a password and a
//! client certificate over TLS, with the documented settings
//! (`HERALD_NATS_USER`, `HERALD_NATS_PASSWORD`, `HERALD_NATS_TLS_*`) — and
//! refused without them.

use std::path::Path;
use std::process::{Command, Stdio};

use herald_client::Client;
use herald_fakes::TestCa;
use serde_json::json;

use herald_testkit::*;

const PASSWORD: &str = "nats-password-for-herald";

/// A NATS server that speaks only TLS, verifies client certificates
/// signed by its CA and asks for a user and password; and the settings
/// that reach it.
async fn guarded_nats(prefix: &str) -> (PrivateNats, Vec<(&'static str, String)>) {
    let ca = TestCa::new("herald test NATS CA");
    let server = ca.issue(&["127.0.0.1", "localhost"]);
    let client = ca.issue_client("herald");
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, pem: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).expect("write a PEM file");
        path.display().to_string()
    };
    let ca_file = write("ca.pem", ca.cert_pem());
    let server_cert = write("server.pem", server.cert_pem());
    let server_key = write("server.key", server.key_pem());
    let client_cert = write("client.pem", client.cert_pem());
    let client_key = write("client.key", client.key_pem());
    let nats = PrivateNats::with_config(&format!(
        "tls {{ cert_file: {server_cert:?}, key_file: {server_key:?}, ca_file: {ca_file:?}, \
         verify: true, timeout: 5 }}\n\
         authorization {{ users: [ {{ user: herald, password: {PASSWORD:?}, permissions: {{ \
           publish: {{ allow: [\"{prefix}.>\", \"$JS.API.>\", \"$JS.ACK.>\", \"_INBOX.>\"] }}, \
           subscribe: {{ allow: [\"{prefix}.>\", \"_INBOX.>\"] }} }} }} ] }}\n"
    ))
    .await;
    // the certificates live as long as the server
    let kept = nats.dir().join("certs");
    std::fs::rename(dir.path(), &kept).expect("keep the certificates");
    let moved = |p: String| {
        kept.join(Path::new(&p).file_name().expect("a file name"))
            .display()
            .to_string()
    };
    let settings = vec![
        ("HERALD_NATS_URL", format!("tls://127.0.0.1:{}", nats.port)),
        ("HERALD_NATS_USER", "herald".to_owned()),
        ("HERALD_NATS_PASSWORD", PASSWORD.to_owned()),
        ("HERALD_NATS_TLS_CA_FILE", moved(ca_file)),
        ("HERALD_NATS_TLS_CERT_FILE", moved(client_cert)),
        ("HERALD_NATS_TLS_KEY_FILE", moved(client_key)),
    ];
    (nats, settings)
}

fn with_settings(env: Cluster, settings: &[(&str, String)], without: &[&str]) -> Cluster {
    settings
        .iter()
        .filter(|(key, _)| !without.contains(key))
        .fold(env, |env, (key, value)| env.with(key, value.as_str()))
}

/// Starts `herald <service>` and waits for it to exit; answers its stderr.
/// Panics if it is still running after [`WAIT`] (it would have connected).
fn refused(service: &str, env: &Env) -> String {
    let mut command = Command::new(herald_bin());
    command
        .args([service, "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    env.apply(&mut command);
    let mut child = command.spawn().expect("spawn herald");
    let Some(status) = exited(&mut child, WAIT) else {
        let _ = child.kill();
        panic!("{service} kept running with NATS refusing it");
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    assert!(!status.success(), "{service} exited well: {stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_connects_with_a_password_and_a_client_certificate_and_is_refused_without() {
    let cluster = Cluster::new();
    // the user may touch only what the documented permissions name
    let (nats, settings) = guarded_nats(cluster.prefix().as_str()).await;
    let db = Database::create().await;
    let cluster =
        with_settings(cluster, &settings, &[]).with("HERALD_DATABASE_URL", db.url.as_str());
    let presence = Herald::presence("presence", &cluster);
    let notify = Herald::notify("notify", &cluster);
    let env = cluster
        .with("HERALD_PRESENCE_URL", presence.grpc_url())
        .with("HERALD_NOTIFY_URL", notify.grpc_url());
    let routing = Herald::routing("routing", &env);
    let edge = Herald::edge("edge", &env);

    // all four hold an authenticated TLS connection to NATS
    let connz: serde_json::Value = http_client()
        .get(format!(
            "http://127.0.0.1:{}/connz?auth=true",
            nats.monitor_port
        ))
        .send()
        .await
        .expect("/connz")
        .json()
        .await
        .expect("JSON");
    let connections = connz["connections"].as_array().expect("connections");
    for name in ["presence", "notify", "routing", "edge"] {
        let found = connections
            .iter()
            .find(|c| c["name"].as_str().is_some_and(|n| n.contains(name)));
        let found = found.unwrap_or_else(|| panic!("{name} is not connected: {connz}"));
        assert_eq!(found["authorized_user"], "herald", "{found}");
        assert!(
            found["tls_version"].is_string(),
            "{name} without TLS: {found}"
        );
    }

    // and a publication goes through it
    let token = mint_token(&env, "alice", "chat:*", "");
    let (mut alice, _) = Client::connect(&edge.ws(), &token).await.expect("connect");
    alice.subscribe("chat:guarded").await.expect("subscribe");
    let answer = routing
        .api()
        .post(
            "/api/publish",
            json!({"channel": "chat:guarded", "data": 1}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let got = alice.next_publication().await.expect("the publication");
    assert_eq!(got.channel.as_str(), "chat:guarded");
    // nothing any service did was outside the permissions
    for service in [&presence, &notify, &routing, &edge] {
        let logs = service.logs().to_lowercase();
        assert!(!logs.contains("permissions violation"), "{logs}");
    }

    // without the password, or without the client certificate: refused
    // at start-up, with NATS's reason
    let without_password = with_settings(Cluster::new(), &settings, &["HERALD_NATS_PASSWORD"])
        .with("HERALD_NATS_PASSWORD", "a-wrong-password");
    let without_tls = with_settings(
        Cluster::new(),
        &settings,
        &["HERALD_NATS_TLS_CERT_FILE", "HERALD_NATS_TLS_KEY_FILE"],
    );
    let db_url = db.url.clone();
    let mut refusals = Vec::new();
    for service in ["edge", "routing", "presence", "notify"] {
        for (why, env) in [
            ("password", &without_password),
            ("certificate", &without_tls),
        ] {
            let env: Env = (**env).clone().with("HERALD_DATABASE_URL", db_url.as_str());
            refusals.push(std::thread::spawn(move || {
                (service, why, refused(service, &env))
            }));
        }
    }
    for refusal in refusals {
        let (service, why, stderr) = refusal.join().expect("a refusal");
        assert!(
            stderr.to_lowercase().contains("nats"),
            "{service} without the {why}: {stderr}"
        );
    }
}
