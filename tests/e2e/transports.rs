//! Every client transport resumes without loss while a publisher keeps
//! publishing: WebSocket (Python `websockets`), SSE and long polling
//! (`httpx`), against standalone and against routing + edge on NATS.

use crate::support::*;

const SECRET: &str = "e2e-transports-secret-0123456789";
const API_KEY: &str = "e2e-transports-key";

fn token(env: &Env) -> String {
    herald_output(env, &["token", "--user", "alice", "--channels", "resume:*"])
}

fn resume_standalone(transport: &str) {
    let env = Env::new(&[("HERALD_JWT_SECRET", SECRET), ("HERALD_API_KEYS", API_KEY)]);
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
    let prefix = unique_prefix();
    let env = Env::new(&[
        ("HERALD_JWT_SECRET", SECRET),
        ("HERALD_API_KEYS", API_KEY),
        ("HERALD_NATS_URL", &nats_url()),
        ("HERALD_SUBJECT_PREFIX", &prefix),
        ("HERALD_HISTORY_STORAGE", "memory"),
    ]);
    let _cleanup = StreamCleanup(prefix);
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
