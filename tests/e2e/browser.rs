//! A real browser — Debian's Chromium driven by playwright-core — against
//! `herald standalone`: its own `WebSocket` and `EventSource`, and the
//! browser SDK served at `/herald.js`.

use std::process::Command;

use herald_testkit::*;

/// Where playwright-core is installed.
fn node_modules() -> String {
    tool("HERALD_TEST_NODE_MODULES", "browser-env.sh")
}

/// A standalone Herald whose SSE streams end every 2 s, so browsers
/// reconnect during the tests.
fn env() -> Env {
    Env::new().with("HERALD_SSE_MAX_DURATION_SECS", "2")
}

/// Runs `tests/browser/<script>` with node and checks it said `ok: <done>`.
fn run_script(script: &str, args: &[&str], done: &str) {
    let output = Command::new("node")
        .arg(repo_root().join("tests/browser").join(script))
        .arg(node_modules())
        .args(args)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains(&format!("ok: {done}")),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{stdout}");
}

#[test]
fn chromium_websocket_and_eventsource_with_automatic_reconnect() {
    let env = env();
    let herald = Herald::standalone(&env);
    let token = mint_token(&env, "browser", "browser:*", "");
    run_script(
        "transports.mjs",
        &[&herald.http(), &herald.http(), API_KEY, &token],
        "browser",
    );
}

#[test]
fn chromium_sdk_falls_back_resumes_without_loss_and_sends_commands() {
    let env = env();
    let herald = Herald::standalone(&env);
    let token = mint_token(&env, "sdk", "sdk:*", "sdk:*");
    let other = mint_token(&env, "sdk-other", "sdk:*", "");
    run_script("sdk.mjs", &[&herald.http(), API_KEY, &token, &other], "sdk");
}

#[test]
fn chromium_demo_chat_works_out_of_the_box() {
    // no secrets at all: what `herald standalone` is on a first run
    let herald = Herald::standalone(&Env::default());
    run_script("demo.mjs", &[&herald.http()], "demo");
}
