//! A fake Web Push service: it hands out subscriptions (holding their
//! private keys), checks VAPID (RFC 8292) and the required headers, and
//! decrypts each payload (RFC 8291, aes128gcm) to see exactly what was sent.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use serde_json::{Value, json};

use crate::tls::{HandshakeFailures, ServerIdentity};
use crate::{MAX_PAYLOAD, Reply, Shared, bind, now_secs, serve_on};

/// One push the fake recorded.
#[derive(Debug, Clone)]
pub struct WebPushRequest {
    /// The subscription's id (the end of its endpoint).
    pub subscription: String,
    /// The `TTL` header, seconds.
    pub ttl: Option<u64>,
    /// The `Urgency` header, if sent.
    pub urgency: Option<String>,
    /// The `Topic` header, if sent.
    pub topic: Option<String>,
    /// The decrypted payload.
    pub plaintext: String,
    /// The status the fake answered.
    pub status: u16,
    /// When it arrived (before any scripted delay).
    pub at: std::time::Instant,
}

struct Keys {
    secret: p256::SecretKey,
    auth: [u8; 16],
}

#[derive(Clone)]
struct App {
    origin: Arc<str>,
    shared: Arc<Shared<WebPushRequest>>,
    subscriptions: Arc<Mutex<HashMap<String, Keys>>>,
}

/// A running fake Web Push service on loopback, TLS only.
pub struct FakeWebPush {
    /// Where it listens.
    pub addr: SocketAddr,
    app: App,
    failures: HandshakeFailures,
}

impl FakeWebPush {
    /// A push service on 127.0.0.1 over TLS (push services are `https`
    /// only): endpoints `https://127.0.0.1:<port>/push/<id>`.
    pub async fn start(identity: &ServerIdentity) -> FakeWebPush {
        Self::start_named("127.0.0.1", identity).await
    }

    /// The same, its endpoints naming it `host` (which the test makes
    /// resolve to 127.0.0.1; `identity` must be issued for it).
    pub async fn start_named(host: &str, identity: &ServerIdentity) -> FakeWebPush {
        // the origin (the VAPID audience) is this server's: bind first
        let listener = bind().await;
        let addr = listener.local_addr().expect("address");
        let app = App {
            origin: Arc::from(format!("https://{host}:{}", addr.port())),
            shared: Shared::new(),
            subscriptions: Arc::default(),
        };
        let router = Router::new()
            .route("/push/{id}", post(push))
            .with_state(app.clone());
        let failures = serve_on(listener, router, Some(identity));
        FakeWebPush {
            addr,
            app,
            failures,
        }
    }

    /// `host:port` of its endpoints (for `webpush_allowed_hosts`).
    pub fn authority(&self) -> String {
        self.app
            .origin
            .strip_prefix("https://")
            .unwrap_or_default()
            .to_owned()
    }

    /// TLS handshakes that failed (a client that refused the certificate).
    pub fn handshake_failures(&self) -> usize {
        self.failures.count()
    }

    /// A new subscription, as a browser's `PushSubscription.toJSON()`
    /// gives it: `{"endpoint", "keys": {"p256dh", "auth"}}`.
    pub fn subscribe(&self) -> Value {
        let secret = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        let auth: [u8; 16] = rand::random();
        let id = format!("{:016x}", rand::random::<u64>());
        let public = secret.public_key().to_encoded_point(false);
        let subscription = json!({
            "endpoint": format!("{}/push/{id}", self.app.origin),
            "keys": {
                "p256dh": URL_SAFE_NO_PAD.encode(public.as_bytes()),
                "auth": URL_SAFE_NO_PAD.encode(auth),
            }
        });
        self.app
            .subscriptions
            .lock()
            .insert(id, Keys { secret, auth });
        subscription
    }

    /// Answers for one subscription (by the id at the end of its endpoint).
    pub fn script(&self, endpoint: &str, replies: Vec<Reply>) {
        let id = endpoint.rsplit('/').next().unwrap_or_default();
        self.app.shared.script(id, replies);
    }

    /// Every push it recorded, whatever it answered.
    pub fn received(&self) -> Vec<WebPushRequest> {
        self.app.shared.received()
    }

    /// The pushes it accepted (201).
    pub fn delivered(&self) -> Vec<WebPushRequest> {
        self.received()
            .into_iter()
            .filter(|r| r.status == 201)
            .collect()
    }
}

/// A refusal: its status and why.
type Refusal = (StatusCode, String);

fn refuse(status: StatusCode, why: &str) -> Refusal {
    (status, why.to_owned())
}

/// Checks `Authorization: vapid t=<JWT>, k=<public key>`.
fn check_vapid(origin: &str, headers: &HeaderMap) -> Result<(), Refusal> {
    let value = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("vapid "))
        .ok_or_else(|| refuse(StatusCode::UNAUTHORIZED, "missing VAPID authorization"))?;
    let mut t = None;
    let mut k = None;
    for part in value.split(',').map(str::trim) {
        if let Some(v) = part.strip_prefix("t=") {
            t = Some(v);
        } else if let Some(v) = part.strip_prefix("k=") {
            k = Some(v);
        }
    }
    let (Some(jwt), Some(key)) = (t, k) else {
        return Err(refuse(StatusCode::UNAUTHORIZED, "VAPID needs t= and k="));
    };
    let point = URL_SAFE_NO_PAD
        .decode(key)
        .map_err(|_| refuse(StatusCode::UNAUTHORIZED, "k= is not base64url"))?;
    if point.len() != 65 || point[0] != 4 {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "k= is not an uncompressed P-256 key",
        ));
    }
    let key = DecodingKey::from_ec_components(
        &URL_SAFE_NO_PAD.encode(&point[1..33]),
        &URL_SAFE_NO_PAD.encode(&point[33..65]),
    )
    .map_err(|_| refuse(StatusCode::UNAUTHORIZED, "bad VAPID key"))?;
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[origin]);
    validation.required_spec_claims = ["aud", "exp", "sub"].map(str::to_owned).into();
    let claims = jsonwebtoken::decode::<Value>(jwt, &key, &validation)
        .map_err(|e| refuse(StatusCode::FORBIDDEN, &format!("bad VAPID token: {e}")))?
        .claims;
    // RFC 8292: no more than 24 hours ahead; a contact to reach.
    if claims["exp"].as_i64().unwrap_or(0) > now_secs() + 24 * 3600 {
        return Err(refuse(StatusCode::FORBIDDEN, "VAPID exp too far ahead"));
    }
    let sub = claims["sub"].as_str().unwrap_or_default();
    if !(sub.starts_with("mailto:") || sub.starts_with("https://")) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "VAPID sub must be mailto: or https:",
        ));
    }
    Ok(())
}

async fn push(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refusal) = check_vapid(&app.origin, &headers) {
        return refusal.into_response();
    }
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let Some(ttl) = text("ttl").and_then(|t| t.parse::<u64>().ok()) else {
        return refuse(StatusCode::BAD_REQUEST, "TTL header required").into_response();
    };
    if text("content-encoding").as_deref() != Some("aes128gcm") {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Encoding must be aes128gcm",
        )
        .into_response();
    }
    let urgency = text("urgency");
    if urgency
        .as_deref()
        .is_some_and(|u| !["very-low", "low", "normal", "high"].contains(&u))
    {
        return refuse(StatusCode::BAD_REQUEST, "bad Urgency").into_response();
    }
    let topic = text("topic");
    if topic.as_deref().is_some_and(|t| {
        t.len() > 32
            || !t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    }) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "Topic must be at most 32 base64url characters",
        )
        .into_response();
    }
    if body.len() > MAX_PAYLOAD {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "payload too large").into_response();
    }
    let plaintext = {
        let subscriptions = app.subscriptions.lock();
        let Some(keys) = subscriptions.get(&id) else {
            return refuse(StatusCode::GONE, "no such subscription").into_response();
        };
        let auth = web_push_native::Auth::clone_from_slice(&keys.auth);
        match web_push_native::decrypt(body.to_vec(), &keys.secret, &auth) {
            Ok(p) => String::from_utf8_lossy(&p).into_owned(),
            Err(e) => {
                return refuse(StatusCode::BAD_REQUEST, &format!("cannot decrypt: {e}"))
                    .into_response();
            }
        }
    };
    let mut record = WebPushRequest {
        subscription: id.clone(),
        ttl: Some(ttl),
        urgency,
        topic,
        plaintext,
        status: 201,
        at: std::time::Instant::now(),
    };
    let status = match app.shared.next_reply(&id).settle().await {
        Reply::Accept => StatusCode::CREATED,
        Reply::NotFound => StatusCode::NOT_FOUND,
        Reply::Redirect(to) => {
            record.status = 307;
            app.shared.record(record);
            return (StatusCode::TEMPORARY_REDIRECT, [("location", to)]).into_response();
        }
        Reply::Held { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        Reply::Slow(d) => {
            tokio::time::sleep(d).await;
            StatusCode::CREATED
        }
        Reply::Unregistered { .. } | Reply::BadDeviceToken => StatusCode::GONE,
        Reply::TooManyRequests { retry_after_secs } => {
            record.status = 429;
            app.shared.record(record);
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", retry_after_secs.to_string())],
            )
                .into_response();
        }
        Reply::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
    };
    record.status = status.as_u16();
    app.shared.record(record);
    status.into_response()
}
