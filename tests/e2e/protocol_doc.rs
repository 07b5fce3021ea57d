//! `docs/PROTOCOL.md`, the client protocol's reference, holds: every
//! example in it is sent to a running standalone by
//! `tests/python/protocol_examples.py` and the answers compared with the
//! document. The servers get the configurations the document itself
//! gives (its ```` ```toml config NAME ```` blocks).

use std::collections::BTreeMap;

use herald_testkit::*;

#[test]
fn every_example_of_the_protocol_reference_is_what_a_server_answers() {
    let doc_path = repo_root().join("docs/PROTOCOL.md");
    let doc = doc_path.to_str().expect("a UTF-8 path");
    let configs: BTreeMap<String, String> =
        serde_json::from_str(&run_python("protocol_examples.py", &["--configs", doc]))
            .expect("the document's server configurations, as JSON");
    assert!(configs.contains_key("main"), "{configs:?}");
    let files: Vec<(String, std::path::PathBuf)> = configs
        .iter()
        .map(|(name, toml)| (name.clone(), temp_file(&format!("{name}.toml"), toml)))
        .collect();
    let servers: Vec<(String, Herald)> = files
        .iter()
        .map(|(name, file)| {
            let env = Env::new().with("HERALD_CONFIG", file.to_str().expect("a UTF-8 path"));
            (name.clone(), Herald::standalone(&env))
        })
        .collect();
    let mut args = vec![doc.to_owned(), SECRET.to_owned(), API_KEY.to_owned()];
    args.extend(
        servers
            .iter()
            .map(|(name, herald)| format!("{name}={}", herald.http())),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_python("protocol_examples.py", &args);
    assert!(out.contains("ok: protocol examples"), "{out}");
    for (_, file) in &files {
        let _ = std::fs::remove_file(file);
    }
}
