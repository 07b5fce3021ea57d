//! The admin page (`/admin`) in Chromium against `herald standalone`: the
//! dashboard's numbers and charts, and every action it offers through the
//! server API and notify's; then the demo chat's token prompt and the
//! messages the server API publishes (`tests/browser/admin.mjs`).

use std::process::Command;

use herald_testkit::*;

/// Runs `tests/browser/<script>` with node and checks it said `ok: <done>`.
fn run_script(script: &str, args: &[&str], done: &str) {
    let output = Command::new("node")
        .arg(repo_root().join("tests/browser").join(script))
        .arg(tool("HERALD_TEST_NODE_MODULES", "browser-env.sh"))
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
fn chromium_admin_page_shows_the_cluster_and_acts_through_the_server_api() {
    let env = Env::new();
    let herald = Herald::standalone(&env);
    // the client the page sees on presence and disconnects
    let watcher = mint_token(&env, "watcher", "ops:*", "");
    // the demo chat's user, who pastes a token (no demo tokens here)
    let demo = mint_token(&env, "dana", "chat:*", "chat:*");
    run_script(
        "admin.mjs",
        &[&herald.http(), API_KEY, &watcher, &demo],
        "admin",
    );
}
