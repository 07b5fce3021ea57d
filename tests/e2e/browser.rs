//! A real browser — Debian's Chromium driven by playwright-core — against
//! `herald standalone`: its own `WebSocket` and `EventSource`, and the
//! browser SDK served at `/herald.js`.

use herald_testkit::*;

/// A standalone Herald whose SSE streams end every 2 s, so browsers
/// reconnect during the tests.
fn env() -> Env {
    Env::new().with("HERALD_SSE_MAX_DURATION_SECS", "2")
}

#[test]
fn chromium_websocket_and_eventsource_with_automatic_reconnect() {
    let env = env();
    let herald = Herald::standalone(&env);
    let token = mint_token(&env, "browser", "browser:*", "");
    run_browser_script(
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
    run_browser_script("sdk.mjs", &[&herald.http(), API_KEY, &token, &other], "sdk");
}

#[test]
fn chromium_demo_chat_works_out_of_the_box() {
    // no secrets at all: what `herald standalone` is on a first run
    let herald = Herald::standalone(&Env::default());
    run_browser_script("demo.mjs", &[&herald.http()], "demo");
}
