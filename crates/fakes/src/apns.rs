//! A fake APNs: HTTP/2 only, `POST /3/device/<token>`, an ES256 provider
//! token checked against the key's public half, Apple's headers and reasons.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

use crate::tls::{HandshakeFailures, ServerIdentity};
use crate::{MAX_PAYLOAD, Reply, Shared, bind, now_secs, scheme, serve_on};

/// One notification the fake accepted (or answered otherwise).
#[derive(Debug, Clone)]
pub struct ApnsRequest {
    /// The device token from the path.
    pub token: String,
    /// `apns-topic`.
    pub topic: String,
    /// `apns-push-type` (`alert`, `background`, …).
    pub push_type: String,
    /// `apns-priority`, if sent.
    pub priority: Option<String>,
    /// `apns-expiration`, if sent.
    pub expiration: Option<String>,
    /// `apns-collapse-id`, if sent.
    pub collapse_id: Option<String>,
    /// `apns-id`, if sent.
    pub apns_id: Option<String>,
    /// The JSON body.
    pub payload: Value,
    /// The status the fake answered.
    pub status: u16,
    /// When it arrived (before any scripted delay).
    pub at: std::time::Instant,
}

struct Config {
    team_id: String,
    key_id: String,
    key: DecodingKey,
    topics: Vec<String>,
}

#[derive(Clone)]
struct App {
    config: Arc<Config>,
    shared: Arc<Shared<ApnsRequest>>,
}

/// A running fake APNs on loopback; it serves as long as the runtime runs.
pub struct FakeApns {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared<ApnsRequest>>,
    scheme: &'static str,
    failures: HandshakeFailures,
}

fn reason(status: StatusCode, reason: &str) -> Response {
    (status, axum::Json(json!({ "reason": reason }))).into_response()
}

impl FakeApns {
    /// A fake that accepts provider tokens from `team_id`/`key_id` signed
    /// with the key whose public half is `public_pem`, for `topics`.
    pub async fn start(team_id: &str, key_id: &str, public_pem: &str, topics: &[&str]) -> FakeApns {
        Self::serve(team_id, key_id, public_pem, topics, None).await
    }

    /// The same over TLS with `identity` (HTTP/2 by ALPN, as Apple's).
    pub async fn start_tls(
        team_id: &str,
        key_id: &str,
        public_pem: &str,
        topics: &[&str],
        identity: &ServerIdentity,
    ) -> FakeApns {
        Self::serve(team_id, key_id, public_pem, topics, Some(identity)).await
    }

    async fn serve(
        team_id: &str,
        key_id: &str,
        public_pem: &str,
        topics: &[&str],
        identity: Option<&ServerIdentity>,
    ) -> FakeApns {
        let shared = Shared::new();
        let app = App {
            config: Arc::new(Config {
                team_id: team_id.to_owned(),
                key_id: key_id.to_owned(),
                key: DecodingKey::from_ec_pem(public_pem.as_bytes()).expect("an EC public key"),
                topics: topics.iter().map(|t| t.to_string()).collect(),
            }),
            shared: shared.clone(),
        };
        let router = Router::new()
            .route("/3/device/{token}", post(push))
            .with_state(app);
        let listener = bind().await;
        let addr = listener.local_addr().expect("local address");
        FakeApns {
            addr,
            shared,
            scheme: scheme(identity),
            failures: serve_on(listener, router, identity),
        }
    }

    /// Its base URL (`http://…` or `https://…`), for `apns_url`.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// TLS handshakes that failed (a client that refused the certificate).
    pub fn handshake_failures(&self) -> usize {
        self.failures.count()
    }

    /// Answers for one device token, in order (the last repeats).
    pub fn script(&self, token: &str, replies: Vec<Reply>) {
        self.shared.script(token, replies);
    }

    /// Every request it recorded, whatever it answered.
    pub fn received(&self) -> Vec<ApnsRequest> {
        self.shared.received()
    }

    /// How many it accepted, without copying them.
    pub fn delivered_count(&self) -> usize {
        self.shared.count(|r| r.status == 200)
    }

    /// The notifications it accepted (200).
    pub fn delivered(&self) -> Vec<ApnsRequest> {
        self.received()
            .into_iter()
            .filter(|r| r.status == 200)
            .collect()
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

async fn push(
    State(app): State<App>,
    Path(token): Path<String>,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // APNs speaks HTTP/2 only.
    if version != Version::HTTP_2 {
        return (StatusCode::HTTP_VERSION_NOT_SUPPORTED, "HTTP/2 required").into_response();
    }
    let config = &app.config;
    let Some(jwt) = header(&headers, "authorization")
        .and_then(|a| a.strip_prefix("bearer ").map(str::to_owned))
    else {
        return reason(StatusCode::FORBIDDEN, "MissingProviderToken");
    };
    match jsonwebtoken::decode_header(&jwt) {
        Ok(h) if h.alg == Algorithm::ES256 && h.kid.as_deref() == Some(config.key_id.as_str()) => {}
        _ => return reason(StatusCode::FORBIDDEN, "InvalidProviderToken"),
    }
    let mut validation = Validation::new(Algorithm::ES256);
    validation.required_spec_claims = ["iss".to_owned(), "iat".to_owned()].into();
    validation.validate_exp = false;
    validation.set_issuer(&[config.team_id.as_str()]);
    let claims = match jsonwebtoken::decode::<Value>(&jwt, &config.key, &validation) {
        Ok(data) => data.claims,
        Err(_) => return reason(StatusCode::FORBIDDEN, "InvalidProviderToken"),
    };
    // Apple refuses provider tokens older than an hour.
    if claims["iat"]
        .as_i64()
        .is_none_or(|iat| now_secs() - iat > 3600)
    {
        return reason(StatusCode::FORBIDDEN, "ExpiredProviderToken");
    }
    let Some(topic) = header(&headers, "apns-topic") else {
        return reason(StatusCode::BAD_REQUEST, "MissingTopic");
    };
    if !config.topics.contains(&topic) {
        return reason(StatusCode::BAD_REQUEST, "TopicDisallowed");
    }
    let push_type = header(&headers, "apns-push-type").unwrap_or_default();
    if ![
        "alert",
        "background",
        "voip",
        "complication",
        "fileprovider",
        "mdm",
        "liveactivity",
    ]
    .contains(&push_type.as_str())
    {
        return reason(StatusCode::BAD_REQUEST, "InvalidPushType");
    }
    let priority = header(&headers, "apns-priority");
    if priority
        .as_deref()
        .is_some_and(|p| p != "5" && p != "10" && p != "1")
    {
        return reason(StatusCode::BAD_REQUEST, "BadPriority");
    }
    let apns_id = header(&headers, "apns-id");
    if apns_id.as_deref().is_some_and(|id| !is_uuid(id)) {
        return reason(StatusCode::BAD_REQUEST, "BadMessageId");
    }
    let collapse_id = header(&headers, "apns-collapse-id");
    if collapse_id.as_deref().is_some_and(|c| c.len() > 64) {
        return reason(StatusCode::BAD_REQUEST, "BadCollapseId");
    }
    let expiration = header(&headers, "apns-expiration");
    if expiration
        .as_deref()
        .is_some_and(|e| e.parse::<u64>().is_err())
    {
        return reason(StatusCode::BAD_REQUEST, "BadExpirationDate");
    }
    if token.len() < 64 || !token.chars().all(|c| c.is_ascii_hexdigit()) {
        return reason(StatusCode::BAD_REQUEST, "BadDeviceToken");
    }
    if body.len() > MAX_PAYLOAD {
        return reason(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge");
    }
    let payload: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) if v["aps"].is_object() => v,
        _ => return reason(StatusCode::BAD_REQUEST, "PayloadEmpty"),
    };
    let mut request = ApnsRequest {
        token: token.clone(),
        topic,
        push_type,
        priority,
        expiration,
        collapse_id,
        apns_id: apns_id.clone(),
        payload,
        status: 200,
        at: std::time::Instant::now(),
    };
    let response = match app.shared.next_reply(&token).settle().await {
        Reply::Accept => None,
        Reply::NotFound => Some(reason(StatusCode::NOT_FOUND, "BadPath")),
        Reply::Redirect(to) => Some(
            (
                StatusCode::TEMPORARY_REDIRECT,
                [("location", to)],
                axum::Json(json!({ "reason": "Redirect" })),
            )
                .into_response(),
        ),
        Reply::Held { .. } => Some(reason(StatusCode::INTERNAL_SERVER_ERROR, "NestedHold")),
        Reply::Slow(d) => {
            tokio::time::sleep(d).await;
            None
        }
        Reply::Unregistered { since_ms } => Some(
            (
                StatusCode::GONE,
                axum::Json(json!({ "reason": "Unregistered", "timestamp": since_ms })),
            )
                .into_response(),
        ),
        Reply::BadDeviceToken => Some(reason(StatusCode::BAD_REQUEST, "BadDeviceToken")),
        Reply::TooManyRequests { retry_after_secs } => Some(
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", retry_after_secs.to_string())],
                axum::Json(json!({ "reason": "TooManyRequests" })),
            )
                .into_response(),
        ),
        Reply::ServerError => Some(reason(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
        )),
    };
    match response {
        Some(response) => {
            request.status = response.status().as_u16();
            app.shared.record(request);
            response
        }
        None => {
            app.shared.record(request);
            let id = apns_id.unwrap_or_else(|| "00000000-0000-0000-0000-000000000000".into());
            (StatusCode::OK, [("apns-id", id)]).into_response()
        }
    }
}
