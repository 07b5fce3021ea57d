//! Fake push services for tests and benchmarks. Each checks what the real
//! service checks — signatures against the configured public keys, required
//! headers, payload shape and size — records what it accepted, and can be
//! told how to answer a given device: gone, rate-limited, failing, slow.

mod apns;
mod fcm;
mod webpush;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use apns::{ApnsRequest, FakeApns};
pub use fcm::{FakeFcm, FcmRequest};
pub use webpush::{FakeWebPush, WebPushRequest};

/// How a fake answers one device (by token or subscription id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Accept,
    /// The device is gone (APNs 410 `Unregistered` with this timestamp,
    /// FCM 404 `UNREGISTERED`, Web Push 410).
    Unregistered {
        since_ms: u64,
    },
    /// APNs 400 `BadDeviceToken` (a token of the other environment).
    BadDeviceToken,
    /// 429 with `Retry-After`.
    TooManyRequests {
        retry_after_secs: u64,
    },
    /// 500.
    ServerError,
    /// Accept after a delay.
    Slow(Duration),
}

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
        self.script
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .next(device)
    }

    pub(crate) fn record(&self, request: R) {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(request);
    }

    fn script(&self, device: &str, replies: Vec<Reply>) {
        self.script
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replies
            .insert(device.to_owned(), replies.into());
    }

    fn count(&self, accepted: impl Fn(&R) -> bool) -> usize {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|r| accepted(r))
            .count()
    }

    fn received(&self) -> Vec<R> {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

async fn listen(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a fake on loopback");
    let addr = listener.local_addr().expect("local address");
    serve_on(listener, app);
    addr
}

fn serve_on(listener: tokio::net::TcpListener, app: axum::Router) {
    tokio::spawn(async move {
        // axum speaks HTTP/1.1 and HTTP/2 with prior knowledge (h2c).
        let _ = axum::serve(listener, app).await;
    });
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
    pub const APNS_P8: &str = include_str!("../keys/apns_private.p8");
    pub const APNS_PUBLIC: &str = include_str!("../keys/apns_public.pem");
    pub const FCM_PRIVATE: &str = include_str!("../keys/fcm_private.pem");
    pub const FCM_PUBLIC: &str = include_str!("../keys/fcm_public.pem");
}
