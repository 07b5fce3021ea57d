//! The Python server-side client (`clients/python`): its pytest suite runs
//! against a `herald standalone` it starts from this build's binary — every
//! method, the errors a user meets, the 111 retry, minted tokens on a real
//! WebSocket — and `mypy --strict` on the package and the README example.

use std::process::Command;

use herald_testkit::{herald_bin, python, repo_root};

#[test]
fn the_python_client_suite_passes_against_standalone() {
    let output = Command::new(python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"])
        .current_dir(repo_root().join("clients/python"))
        .env("HERALD_BIN", herald_bin())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}); run scripts/test.sh, which sets up HERALD_TEST_PYTHON",
                python()
            )
        });
    assert!(
        output.status.success(),
        "clients/python tests failed ({}):\n{}\n{}\n(HERALD_TEST_PYTHON must have tests/python/requirements.txt installed; scripts/test.sh does this)",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
