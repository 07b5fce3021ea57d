//! Every client transport resumes without loss while a publisher keeps
//! publishing: WebSocket (Python `websockets`), SSE and long polling
//! (`httpx`), against standalone and against routing + edge on NATS.

use herald_testkit::*;

/// `tests/python/resume.py`: a client of `transport` at `clients` (the
/// edge's URL) on `channel` resumes without loss while the publisher posts
/// to the server API at `api`.
pub(crate) fn resume(clients: &str, api: &str, token: &str, transport: &str, channel: &str) {
    let out = run_python(
        "resume.py",
        &[clients, api, API_KEY, token, transport, channel],
    );
    assert!(
        out.starts_with(&format!("ok: {transport} resumed")),
        "{out}"
    );
}

fn token(env: &Env) -> String {
    mint_token(env, "alice", "resume:*", "")
}

fn resume_standalone(transport: &str) {
    let env = Env::new();
    let herald = Herald::standalone(&env);
    let channel = format!("resume:{transport}");
    resume(
        &herald.http(),
        &herald.http(),
        &token(&env),
        transport,
        &channel,
    );
}

fn resume_distributed(transport: &str) {
    let env = Cluster::new();
    let routing = Herald::routing("routing", &env);
    let edge = Herald::edge("edge", &env);
    let channel = format!("resume:{transport}");
    resume(
        &edge.http(),
        &routing.http(),
        &token(&env),
        transport,
        &channel,
    );
}

#[test]
fn websocket_resumes_without_loss_standalone() {
    resume_standalone("ws");
}

#[test]
fn sse_resumes_without_loss_standalone() {
    resume_standalone("sse");
}

#[test]
fn long_polling_resumes_without_loss_standalone() {
    resume_standalone("poll");
}

#[test]
fn websocket_resumes_without_loss_over_nats() {
    resume_distributed("ws");
}

#[test]
fn sse_resumes_without_loss_over_nats() {
    resume_distributed("sse");
}

#[test]
fn long_polling_resumes_without_loss_over_nats() {
    resume_distributed("poll");
}
