//! `docs/openapi.json` is a contract: `tests/python/openapi_check.py`
//! validates it, checks it names every route the sources serve, calls each
//! endpoint a fuzzer cannot (streams, long polls, the WebSocket handshake),
//! and runs schemathesis over the rest of a standalone server — every
//! answer must be one the spec documents.

use herald_testkit::*;

#[test]
fn every_answer_of_a_standalone_server_is_one_the_openapi_spec_documents() {
    let env = Env::new();
    let herald = Herald::standalone(&env);
    let token = mint_token(&env, "alice", "*", "*");
    let out = run_python("openapi_check.py", &[&herald.http(), API_KEY, &token]);
    assert!(out.contains("ok: openapi"), "{out}");
    println!("{out}");
}
