//! `scripts/bench-peers.sh --quick`: every system it compares starts and is
//! measured, and the report it writes has a figure for each — so the
//! benchmark anyone can run from the repo keeps running.

use std::process::Command;

use herald_testkit::*;

#[test]
fn bench_peers_measures_every_system_and_writes_the_report() {
    let out = tempfile::tempdir().expect("tempdir");
    let report = out.path().join("BENCHMARKS.md");
    let run = Command::new(repo_root().join("scripts/bench-peers.sh"))
        .args(["--quick", "--out"])
        .arg(&report)
        .env("BIN", herald_bin())
        .env("PORT_BASE", crate::cluster::free_port_block().to_string())
        .output()
        .expect("scripts/bench-peers.sh");
    let log = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "bench-peers.sh failed:\n{log}");
    let text = std::fs::read_to_string(&report).expect("the report");
    let row = |label: &str| -> Vec<String> {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("| {label}")))
            .unwrap_or_else(|| panic!("no row {label:?} in\n{text}"));
        line.split('|').map(|c| c.trim().to_owned()).collect()
    };
    // columns: "", figure, standalone, distributed, Node, NATS, ratios…
    let number = |cell: &str, what: &str| -> f64 {
        cell.parse()
            .unwrap_or_else(|_| panic!("{what}: {cell:?} is not a figure\n{text}\n{log}"))
    };
    for (label, systems) in [
        ("idle WebSocket", 2..=4),
        ("idle SSE", 2..=4),
        ("deliveries / s at saturation", 2..=5),
        ("server CPU per delivery", 2..=5),
        ("publish → deliver p99 at half load", 2..=4),
    ] {
        let cells = row(label);
        for column in systems {
            number(&cells[column], &format!("{label}, column {column}"));
        }
    }
    for label in ["lost at saturation", "lost at half load"] {
        let cells = row(label);
        for cell in &cells[2..=4] {
            assert_eq!(number(cell, label), 0.0, "{label}\n{text}\n{log}");
        }
    }
    assert!(text.contains("load average"), "{text}");
}
