//! A real browser — Debian's Chromium driven by playwright-core — using its
//! own `WebSocket` and `EventSource` against `herald standalone`.

use std::process::Command;

use crate::support::*;

const SECRET: &str = "e2e-browser-secret-0123456789";
const API_KEY: &str = "e2e-browser-key";

/// Where playwright-core is installed (`scripts/browser-env.sh` prints it;
/// `scripts/test.sh` sets HERALD_TEST_NODE_MODULES).
fn node_modules() -> String {
    std::env::var("HERALD_TEST_NODE_MODULES").unwrap_or_else(|_| {
        let out = Command::new(repo_root().join("scripts/browser-env.sh"))
            .output()
            .expect("run scripts/browser-env.sh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    })
}

#[test]
fn chromium_websocket_and_eventsource_with_automatic_reconnect() {
    let env = Env::new(&[
        ("HERALD_JWT_SECRET", SECRET),
        ("HERALD_API_KEYS", API_KEY),
        // the server ends each SSE stream after 2 s; EventSource reconnects
        ("HERALD_SSE_MAX_DURATION_SECS", "2"),
    ]);
    let herald = Herald::standalone(&env);
    let token = herald_output(
        &env,
        &["token", "--user", "browser", "--channels", "browser:*"],
    );
    let output = Command::new("node")
        .arg(repo_root().join("tests/browser/transports.mjs"))
        .args([
            &node_modules(),
            &herald.http(),
            &herald.http(),
            API_KEY,
            &token,
        ])
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("ok: browser"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
