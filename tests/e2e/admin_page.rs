//! The admin page (`/admin`) in Chromium against `herald standalone`: the
//! dashboard's numbers and charts, and every action it offers through the
//! server API and notify's; then the demo chat's token prompt and the
//! messages the server API publishes (`tests/browser/admin.mjs`).

use herald_testkit::*;

#[test]
fn chromium_admin_page_shows_the_cluster_and_acts_through_the_server_api() {
    let env = Env::new();
    let herald = Herald::standalone(&env);
    // the client the page sees on presence and disconnects
    let watcher = mint_token(&env, "watcher", "ops:*", "");
    // the demo chat's user, who pastes a token (no demo tokens here)
    let demo = mint_token(&env, "dana", "chat:*", "chat:*");
    run_browser_script(
        "admin.mjs",
        &[&herald.http(), API_KEY, &watcher, &demo],
        "admin",
    );
}
