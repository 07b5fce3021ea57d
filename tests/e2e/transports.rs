//! Every client transport resumes without loss while a publisher keeps
//! publishing: WebSocket (Python `websockets`), SSE and long polling
//! (`httpx`), against standalone and against routing + edge on NATS.

use herald_testkit::*;

fn token(env: &Env) -> String {
    mint_token(env, "alice", "resume:*", "")
}

fn resume_standalone(transport: &str) {
    let env = Env::new();
    let herald = Herald::standalone(&env);
    let channel = format!("resume:{transport}");
    let out = run_python(
        "resume.py",
        &[
            &herald.http(),
            &herald.http(),
            API_KEY,
            &token(&env),
            transport,
            &channel,
        ],
    );
    assert!(
        out.starts_with(&format!("ok: {transport} resumed")),
        "{out}"
    );
}

fn resume_distributed(transport: &str) {
    let env = Cluster::new();
    let routing = Herald::routing("routing", &env);
    let edge = Herald::edge("edge", &env);
    let channel = format!("resume:{transport}");
    let out = run_python(
        "resume.py",
        &[
            &edge.http(),
            &routing.http(),
            API_KEY,
            &token(&env),
            transport,
            &channel,
        ],
    );
    assert!(
        out.starts_with(&format!("ok: {transport} resumed")),
        "{out}"
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
