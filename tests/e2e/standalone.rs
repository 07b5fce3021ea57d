//! `herald standalone`, as a user runs it.

use serde_json::json;

use herald_testkit::*;

#[test]
fn python_websockets_client_receives_an_api_publish() {
    let env = Env::new();
    let herald = Herald::standalone(&env);
    let token = mint_token(&env, "alice", "chat:*", "");
    let out = run_python(
        "ws_receive_api_publish.py",
        &[&herald.ws(), &herald.http(), &token, API_KEY, "chat:lobby"],
    );
    assert!(
        out.contains("ok: alice received offset 1 on chat:lobby"),
        "{out}"
    );
}

#[tokio::test]
async fn publishing_without_a_valid_api_key_is_refused_and_stores_nothing() {
    let env = Env::new();
    let herald = Herald::standalone(&env);
    let http = http_client();
    let body = json!({"channel": "chat:locked", "data": {"x": 1}});
    let url = format!("{}/api/publish", herald.http());

    for request in [
        http.post(&url).json(&body),
        http.post(&url).json(&body).bearer_auth("wrong-key-000"),
        http.post(&url).json(&body).header("Authorization", API_KEY),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401);
        let answer: serde_json::Value = response.json().await.unwrap();
        assert_eq!(answer["error"]["code"], 101, "{answer}");
    }

    let history = herald.api().history("chat:locked").await;
    assert_eq!(history["offset"], 0, "{history}");
    assert_eq!(history["publications"], json!([]));

    // the right key works, so the refusals above were about the key
    let ok = herald.api().post("/api/publish", body).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
}

#[test]
fn a_bad_setting_fails_start_up_with_one_line_naming_it() {
    let output = std::process::Command::new(herald_bin())
        .args(["standalone"])
        .env("HERALD_PING_INTERVAL_SECS", "soon")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("ping_interval_secs"), "{stderr}");
    assert!(lines[0].contains("HERALD_PING_INTERVAL_SECS"), "{stderr}");
}

#[test]
fn sigterm_stops_standalone_cleanly() {
    let env = Env::new();
    let mut herald = Herald::standalone(&env);
    let status = herald.terminate(WAIT).expect("exits after SIGTERM");
    assert!(status.success(), "{status}\n{}", herald.logs());
}

/// Tokens from an identity provider that publishes a JWKS: keys chosen by
/// `kid`, and a key the provider adds later is taken without a restart.
#[tokio::test]
async fn jwks_keys_rotate_without_a_restart() {
    use herald_client::{Client, ClientError};
    use herald_core::auth::{JwtAlgorithm, TokenSigner, unix_now};

    let keys = repo_root().join("crates/core/tests/keys");
    let signer = |file: &str, kid: &str| {
        TokenSigner::new(
            JwtAlgorithm::RS256,
            &std::fs::read(keys.join(file)).unwrap(),
        )
        .unwrap()
        .with_key_id(kid)
    };
    let (old, new) = (
        signer("rsa_private.pem", "2026-01"),
        signer("rsa2_private.pem", "2026-07"),
    );
    let token = |s: &TokenSigner| {
        s.sign(&json!({"sub": "ines", "exp": unix_now() + 600, "channels": ["chat:*"]}))
            .unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let publish = |signers: &[&TokenSigner]| {
        let keys: Vec<_> = signers.iter().map(|s| s.public_jwk().unwrap()).collect();
        std::fs::write(&jwks, json!({ "keys": keys }).to_string()).unwrap();
    };
    publish(&[&old]);
    let env = Env::new()
        .without("HERALD_JWT_SECRET")
        .with("HERALD_JWT_ALGORITHM", "RS256")
        .with("HERALD_JWT_JWKS_FILE", jwks.to_str().unwrap());
    let herald = Herald::standalone(&env);

    let (_, ok) = Client::connect(&herald.ws(), &token(&old)).await.unwrap();
    assert_eq!(ok.user, "ines");
    // not yet published: refused as unauthorized (101)
    match Client::connect(&herald.ws(), &token(&new)).await {
        Err(ClientError::Server(e)) => assert_eq!(e.code.as_u16(), 101, "{e:?}"),
        Err(other) => panic!("a token of an unknown key: {other:?}"),
        Ok(_) => panic!("a token of an unknown key was accepted"),
    }
    // the provider publishes the new key next to the old one
    publish(&[&old, &new]);
    let (_, ok) = Client::connect(&herald.ws(), &token(&new)).await.unwrap();
    assert_eq!(ok.user, "ines");
    assert!(Client::connect(&herald.ws(), &token(&old)).await.is_ok());
}

/// The load tool measures publish → deliver latency against a running
/// server, and every publication reaches every subscriber.
#[test]
fn bench_latency_reports_every_delivery() {
    let env = Env::new();
    let herald = Herald::standalone(&env);
    let token = mint_token(&env, "bench", "bench:*", "");
    let out = herald_output(
        &env,
        &[
            "bench",
            "latency",
            "--url",
            &herald.http(),
            "--api",
            &herald.http(),
            "--api-key",
            API_KEY,
            "--token",
            &token,
            "--subscribers",
            "5",
            "--rate",
            "50",
            "--duration",
            "1",
        ],
    );
    assert!(
        out.contains("subscribers=5 publications=50 deliveries=250 lost=0"),
        "{out}"
    );
    let delivery = out
        .lines()
        .find(|l| l.starts_with("delivery_us p50="))
        .unwrap_or_else(|| panic!("{out}"));
    let p50: u64 = delivery["delivery_us p50=".len()..]
        .split(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{delivery}"));
    assert!(p50 > 0, "{delivery}");
}

/// `herald bench idle` holds what it says on every transport: the server
/// counts exactly that many connections (long polling: sessions) while it
/// holds them.
#[tokio::test]
async fn bench_idle_holds_its_connections_on_every_transport() {
    let env = Env::new();
    let herald = Herald::standalone(&env);
    let token = mint_token(&env, "bench", "bench:*", "");
    for transport in ["ws", "sse", "poll"] {
        let mut command = std::process::Command::new(herald_bin());
        command
            .args(["bench", "idle", "--url", &herald.http(), "--token", &token])
            .args([
                "--transport",
                transport,
                "--connections",
                "20",
                "--hold-secs",
                "600",
            ])
            .stdout(std::process::Stdio::piped());
        env.apply(&mut command);
        let mut bench = command.spawn().expect("herald bench idle");
        let stdout = bench.stdout.take().expect("stdout");
        let said = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
                .map(|_| line)
        });
        let said = within(WAIT, &format!("bench idle {transport} to open"), said)
            .await
            .expect("task")
            .expect("read");
        assert_eq!(said.trim(), "open 20 failed 0", "{transport}");
        let http = http_client();
        let stats = || async {
            http.get(format!("{}/stats", herald.http()))
                .send()
                .await
                .ok()?
                .json::<serde_json::Value>()
                .await
                .ok()
        };
        eventually(
            WAIT,
            &format!("20 {transport} connections held"),
            || async {
                let stats = stats().await?;
                let counted = if transport == "poll" {
                    &stats["poll_sessions"]
                } else {
                    &stats["connections"]
                };
                (counted == 20).then_some(())
            },
        )
        .await;
        let _ = bench.kill();
        let _ = bench.wait();
        eventually(
            WAIT,
            &format!("the {transport} connections closed"),
            || async {
                let stats = stats().await?;
                (stats["connections"] == 0).then_some(())
            },
        )
        .await;
    }
}

/// `herald token verify`: stdout and whether it accepted the token.
fn verify(env: &Env, token: &str) -> (bool, String) {
    let mut command = std::process::Command::new(herald_bin());
    command.args(["token", "verify", token]);
    env.apply(&mut command);
    let output = command.output().expect("run herald");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn token_verify_shows_the_claims_and_names_what_an_edge_would_refuse() {
    let env = Env::new();
    let good = mint_token(&env, "alice", "chat:*", "");
    let (accepted, out) = verify(&env, &good);
    assert!(accepted, "{out}");
    assert!(
        out.contains("\"sub\": \"alice\"") && out.contains("chat:*"),
        "{out}"
    );
    assert!(out.contains("expires in"), "{out}");

    // another server's secret: refused, and it says why
    let other = Env::new().with("HERALD_JWT_SECRET", "another-secret-0123456789-0123456789");
    let (accepted, out) = verify(&other, &good);
    assert!(!accepted, "{out}");
    assert!(out.contains("signature"), "{out}");

    // expired: refused, and it says since when
    let expired = token("bob", &["chat:*"], &[], -120);
    let (accepted, out) = verify(&env, &expired);
    assert!(!accepted, "{out}");
    assert!(out.contains("expired"), "{out}");

    let (accepted, out) = verify(&env, "not-a-token");
    assert!(!accepted && out.contains("not a JWT"), "{out}");
}

#[test]
fn standalone_keeps_its_files_in_the_data_dir_and_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("herald-data");
    let herald = Herald::standalone(&Env::new().with("HERALD_DATA_DIR", data.to_str().unwrap()));
    let file = data.join("herald.db");
    eventually_blocking(WAIT, "herald.db in the data dir", || file.exists());
    assert!(
        herald.logs().contains(&file.display().to_string()),
        "the log names the file: {}",
        herald.logs()
    );
}

#[tokio::test]
async fn a_browser_asking_for_the_favicon_gets_the_herald_mark() {
    let herald = Herald::standalone(&Env::new());
    let answer = http_client()
        .get(format!("{}/favicon.ico", herald.http()))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["content-type"], "image/svg+xml");
    assert!(answer.text().await.unwrap().starts_with("<svg"));
}

#[tokio::test]
async fn a_history_read_from_past_the_latest_offset_is_a_bad_request_not_a_lost_one() {
    let herald = Herald::standalone(&Env::new());
    let api = herald.api();
    api.publish("ahead:x", json!({"n": 1})).await;
    let ahead = api.get("/api/history?channel=ahead:x&since=5").await;
    assert_eq!(ahead.status, 400, "{}", ahead.body);
    assert_eq!(ahead.body["error"]["code"], 100, "{}", ahead.body);
    // an offset of another epoch is still one whose publications are gone
    let lost = api
        .get("/api/history?channel=ahead:x&since=0&epoch=another")
        .await;
    assert_eq!(lost.status, 410, "{}", lost.body);
    let fine = api.get("/api/history?channel=ahead:x&since=0").await;
    assert_eq!(fine.status, 200, "{}", fine.body);
}
