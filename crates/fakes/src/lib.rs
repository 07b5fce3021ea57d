//! Fake push services for tests and benchmarks. Each checks what the real
//! service checks — signatures against the configured public keys, required
//! headers, payload shape and size — records what it accepted, and can be
//! told how to answer a given device: gone, rate-limited, failing, slow.

mod apns;
mod fcm;
pub mod tls;
mod webpush;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

pub use apns::{ApnsRequest, FakeApns};
pub use fcm::{FakeFcm, FcmRequest};
pub use tls::{ServerIdentity, TestCa};
pub use webpush::{FakeWebPush, WebPushRequest};

/// How a fake answers one device (by token or subscription id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Take it (APNs and FCM 200, Web Push 201).
    Accept,
    /// The device is gone (APNs 410 `Unregistered` with this timestamp,
    /// FCM 404 `UNREGISTERED`, Web Push 410).
    Unregistered {
        /// Since when the token has been invalid, Unix ms (APNs' `timestamp`).
        since_ms: u64,
    },
    /// APNs 400 `BadDeviceToken` (a token of the other environment).
    BadDeviceToken,
    /// 429 with `Retry-After`.
    TooManyRequests {
        /// The `Retry-After`, seconds.
        retry_after_secs: u64,
    },
    /// 500.
    ServerError,
    /// Accept after a delay.
    Slow(Duration),
    /// A 404 as each service gives it: Web Push 404 (the subscription
    /// expired), FCM 404 `NOT_FOUND` without an error code, APNs 404
    /// `BadPath`.
    NotFound,
    /// 307 to this URL (a push service that sends the request elsewhere).
    Redirect(String),
    /// Waits at the gate until the test opens it, then answers `then`.
    Held {
        /// Where the request waits.
        gate: Gate,
        /// The answer once the gate opens.
        then: Box<Reply>,
    },
}

impl Reply {
    /// The reply to give once a held request is let through.
    pub(crate) async fn settle(self) -> Reply {
        match self {
            Reply::Held { gate, then } => {
                gate.pass().await;
                *then
            }
            other => other,
        }
    }
}

/// A gate requests wait at ([`Reply::Held`]): the test sees them arrive,
/// does what it needs to while they are in flight, and opens it.
#[derive(Clone, Default)]
pub struct Gate(Arc<GateState>);

#[derive(Default)]
struct GateState {
    arrived: std::sync::atomic::AtomicUsize,
    open: tokio::sync::watch::Sender<bool>,
}

impl Gate {
    /// A closed gate.
    pub fn new() -> Gate {
        Gate::default()
    }

    /// Requests that reached the gate so far.
    pub fn arrived(&self) -> usize {
        self.0.arrived.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Lets every waiting request (and every later one) through.
    pub fn open(&self) {
        self.0.open.send_replace(true);
    }

    async fn pass(&self) {
        let mut open = self.0.open.subscribe();
        self.0
            .arrived
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let _ = open.wait_for(|o| *o).await;
    }
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gate(arrived: {})", self.arrived())
    }
}

impl PartialEq for Gate {
    fn eq(&self, other: &Gate) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Gate {}

/// Scripted answers: per device a queue of replies (the last one repeats),
/// and `Accept` for everyone else.
#[derive(Default)]
pub(crate) struct Script {
    replies: HashMap<String, VecDeque<Reply>>,
}

impl Script {
    pub(crate) fn next(&mut self, device: &str) -> Reply {
        match self.replies.get_mut(device) {
            Some(queue) if queue.len() > 1 => queue.pop_front().unwrap_or(Reply::Accept),
            Some(queue) => queue.front().cloned().unwrap_or(Reply::Accept),
            None => Reply::Accept,
        }
    }
}

/// A started fake: its address, its script, what it received.
pub(crate) struct Shared<R> {
    pub script: Mutex<Script>,
    pub received: Mutex<Vec<R>>,
}

impl<R: Clone> Shared<R> {
    fn new() -> Arc<Self> {
        Arc::new(Shared {
            script: Mutex::new(Script::default()),
            received: Mutex::new(Vec::new()),
        })
    }

    pub(crate) fn next_reply(&self, device: &str) -> Reply {
        self.script.lock().next(device)
    }

    pub(crate) fn record(&self, request: R) {
        self.received.lock().push(request);
    }

    fn script(&self, device: &str, replies: Vec<Reply>) {
        self.script
            .lock()
            .replies
            .insert(device.to_owned(), replies.into());
    }

    fn count(&self, accepted: impl Fn(&R) -> bool) -> usize {
        self.received.lock().iter().filter(|r| accepted(r)).count()
    }

    fn received(&self) -> Vec<R> {
        self.received.lock().clone()
    }
}

/// Serves `app` on `listener`: TLS with `identity` (ALPN h2 / http/1.1),
/// or else plain HTTP/1.1 and HTTP/2 with prior knowledge (h2c). Answers
/// the count of TLS handshakes that failed.
fn serve_on(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    identity: Option<&ServerIdentity>,
) -> tls::HandshakeFailures {
    let failures = tls::HandshakeFailures::default();
    match identity {
        Some(identity) => {
            let listener = tls::TlsListener::new(listener, identity, failures.clone());
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
        }
        None => {
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
        }
    }
    failures
}

/// A loopback listener for a fake.
async fn bind() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a fake on loopback")
}

/// `http` or `https`, as the fake serves.
fn scheme(identity: Option<&ServerIdentity>) -> &'static str {
    if identity.is_some() { "https" } else { "http" }
}

pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// The largest payload the real services take, bytes.
pub const MAX_PAYLOAD: usize = 4096;

/// Test keys (never used for anything else): an ES256 key as APNs hands out
/// (`.p8`, PKCS#8) and an RSA key as a Google service account holds.
pub mod keys {
    /// The APNs signing key (`.p8`, PKCS#8 PEM).
    pub const APNS_P8: &str = include_str!("../keys/apns_private.p8");
    /// Its public half, which [`FakeApns`](crate::FakeApns) checks provider
    /// tokens with.
    pub const APNS_PUBLIC: &str = include_str!("../keys/apns_public.pem");
    /// The service account's RSA private key (PEM).
    pub const FCM_PRIVATE: &str = include_str!("../keys/fcm_private.pem");
    /// Its public half, which [`FakeFcm`](crate::FakeFcm) checks assertions
    /// with.
    pub const FCM_PUBLIC: &str = include_str!("../keys/fcm_public.pem");
}
