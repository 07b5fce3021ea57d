//! The workspace's shape as `docs/ARCHITECTURE.md` draws it: the crate
//! graph there is the one in the manifests, and no service crate depends
//! on another (they talk over gRPC and the bus, through `herald-proto`).
//! And the settings reference is the one the definitions make.

use std::collections::BTreeMap;
use std::path::Path;

use herald_testkit::{Env, herald_output, repo_root};

const SERVICES: [&str; 4] = [
    "herald-edge",
    "herald-routing",
    "herald-presence",
    "herald-notify",
];

/// Each workspace crate and the workspace crates it depends on (normal
/// dependencies only), read from the manifests.
fn crate_graph(root: &Path) -> BTreeMap<String, Vec<String>> {
    let mut graph = BTreeMap::new();
    for entry in std::fs::read_dir(root.join("crates")).expect("crates/") {
        let manifest = entry.expect("entry").path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let mut name = None;
        let mut section = String::new();
        let mut deps = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line.to_owned();
                continue;
            }
            if section == "[package]"
                && let Some(v) = line.strip_prefix("name = ")
            {
                name = Some(v.trim_matches('"').to_owned());
            }
            if section == "[dependencies]" {
                let dep: String = line
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                    .collect();
                if dep.starts_with("herald") {
                    deps.push(dep);
                }
            }
        }
        deps.sort();
        graph.insert(name.expect("package name"), deps);
    }
    graph
}

fn drawn(graph: &BTreeMap<String, Vec<String>>) -> String {
    let width = graph.keys().map(String::len).max().unwrap_or(0);
    graph
        .iter()
        .map(|(name, deps)| {
            let deps = if deps.is_empty() {
                "(none)".to_owned()
            } else {
                deps.join(", ")
            };
            format!("{name:width$} → {deps}\n")
        })
        .collect()
}

#[test]
fn the_documented_crate_graph_is_the_real_one_and_services_stand_alone() {
    let root = repo_root();
    let graph = crate_graph(&root);
    assert!(graph.contains_key("herald-protocol"), "{graph:?}");
    for service in SERVICES {
        let deps = &graph[service];
        for other in SERVICES {
            assert!(
                !deps.iter().any(|d| d == other),
                "{service} depends on the service crate {other}"
            );
        }
    }
    assert_eq!(graph["herald-client"], ["herald-protocol"]);
    assert!(graph["herald-protocol"].is_empty());

    let doc = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let start = doc
        .find("```crate-graph\n")
        .expect("a ```crate-graph block in ARCHITECTURE.md")
        + "```crate-graph\n".len();
    let end = start + doc[start..].find("```").expect("the block ends");
    let expected = drawn(&graph);
    assert_eq!(
        &doc[start..end],
        expected,
        "docs/ARCHITECTURE.md draws another crate graph; the manifests say:\n{expected}"
    );
}

/// A service built alone links what it uses and nothing of the others:
/// routing no device store, push crypto or token verification; presence no
/// device store either; the client SDK only the protocol's.
#[test]
fn a_service_built_alone_links_only_what_it_uses() {
    let tree = |package: &str| {
        let out = std::process::Command::new(env!("CARGO"))
            .args([
                "tree",
                "--offline",
                "-e",
                "normal",
                "--prefix",
                "none",
                "-p",
                package,
            ])
            .current_dir(repo_root())
            .output()
            .expect("cargo tree runs");
        assert!(
            out.status.success(),
            "cargo tree -p {package}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
            .collect::<std::collections::BTreeSet<String>>()
    };
    let routing = tree("herald-routing");
    for heavy in [
        "sqlx",
        "p256",
        "rsa",
        "web-push",
        "jsonwebtoken",
        "a2",
        "herald-notify",
    ] {
        assert!(!routing.contains(heavy), "herald-routing links {heavy}");
    }
    let presence = tree("herald-presence");
    for heavy in ["sqlx", "p256", "jsonwebtoken", "herald-notify"] {
        assert!(!presence.contains(heavy), "herald-presence links {heavy}");
    }
    let edge = tree("herald-edge");
    assert!(edge.contains("jsonwebtoken"), "the edge verifies tokens");
    for heavy in ["sqlx", "herald-presence", "herald-routing", "herald-notify"] {
        assert!(!edge.contains(heavy), "herald-edge links {heavy}");
    }
    let client = tree("herald-client");
    for heavy in ["async-nats", "jsonwebtoken", "sqlx", "axum", "herald-core"] {
        assert!(!client.contains(heavy), "herald-client links {heavy}");
    }
}

/// docs/SETTINGS.md is what `herald config defaults --markdown` prints,
/// and the TOML it prints is a configuration every service accepts.
#[test]
fn the_settings_reference_is_what_the_binary_prints() {
    let printed = herald_output(&Env::new(), &["config", "defaults", "--markdown"]);
    let file = std::fs::read_to_string(repo_root().join("docs/SETTINGS.md")).expect("SETTINGS.md");
    assert!(
        printed.trim() == file.trim(),
        "docs/SETTINGS.md is stale: run `herald config defaults --markdown > docs/SETTINGS.md`"
    );
    let toml = herald_output(&Env::new(), &["config", "defaults"]);
    let dir = tempfile::tempdir().expect("a directory");
    let path = dir.path().join("herald.toml");
    std::fs::write(&path, toml).expect("write");
    let checked = herald_output(
        &Env::new(),
        &[
            "check",
            "standalone",
            "--config",
            path.to_str().expect("a path"),
        ],
    );
    assert_eq!(checked, "ok");
}
