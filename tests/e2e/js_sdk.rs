//! The browser SDK (`clients/js`): its unit tests in node against a fake
//! server (`tests/js`), its types checked with `tsc` on a typed example,
//! and headless Chromium (`tests/browser`) through real network cuts, a
//! restart onto a new epoch, the way back from a fallback to WebSocket,
//! and token refreshes on every transport — against `herald standalone`,
//! with the SDK it serves at `/herald.js`.

use std::path::Path;
use std::process::Command;

use herald_testkit::*;

/// Where typescript and ws are installed.
fn js_modules() -> String {
    tool("HERALD_TEST_JS_MODULES", "js-env.sh")
}

#[test]
fn js_sdk_unit_tests_against_a_fake_server() {
    let report = run_until_said(
        Command::new("node")
            .arg("--test")
            .arg("tests/js")
            .current_dir(repo_root())
            .env("HERALD_TEST_JS_MODULES", js_modules()),
        "# fail 0",
    );
    assert!(report.contains("# cancelled 0"), "{report}");
}

#[test]
fn js_sdk_types_check_a_typed_example() {
    let tsc = || {
        let mut tsc = Command::new("node");
        tsc.arg(Path::new(&js_modules()).join("typescript/bin/tsc"))
            .arg("-p")
            .arg(repo_root().join("clients/js"));
        tsc
    };
    // the example, with the declarations its import of the package's name
    // resolves to (through package.json's `exports`)…
    run_until_said(tsc().arg("--listFilesOnly"), "clients/js/herald.d.ts");
    // …checked (strict; its `@ts-expect-error` lines must be errors)
    run_until_said(&mut tsc(), "");
}

#[test]
fn chromium_sdk_loses_nothing_through_real_network_cuts_and_a_restart() {
    // two servers: the second is the first restarted without its history
    // (a new epoch), behind the same proxy
    let env = Env::new();
    let first = Herald::standalone(&env);
    let second = Herald::standalone(&env);
    run_browser_script(
        "network.mjs",
        &[&first.http(), &second.http(), API_KEY, SECRET],
        "network",
    );
}

#[test]
fn chromium_sdk_refreshes_tokens_in_place_on_every_transport() {
    let herald = Herald::standalone(&Env::new());
    run_browser_script("refresh.mjs", &[&herald.http(), API_KEY, SECRET], "refresh");
}
