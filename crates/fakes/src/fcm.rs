//! A fake FCM HTTP v1: the OAuth2 token endpoint (a service account's RS256
//! assertion, checked against its public key) and
//! `POST /v1/projects/<id>/messages:send` with Google's error shapes.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Router};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::tls::{HandshakeFailures, ServerIdentity};
use crate::{MAX_PAYLOAD, Reply, Shared, bind, now_secs, scheme, serve_on};

/// The OAuth2 scope an access token must be asked for.
pub(crate) const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// One message send the fake recorded.
#[derive(Debug, Clone)]
pub struct FcmRequest {
    /// The project from the path.
    pub project: String,
    /// The `message` object as sent.
    pub message: Value,
    /// The status the fake answered.
    pub status: u16,
    /// When it arrived (before any scripted delay).
    pub at: std::time::Instant,
}

struct Config {
    project: String,
    client_email: String,
    key: DecodingKey,
    token_uri: String,
}

#[derive(Clone)]
struct App {
    config: Arc<Config>,
    shared: Arc<Shared<FcmRequest>>,
    tokens: Arc<Mutex<HashSet<String>>>,
    grants: Arc<Mutex<u32>>,
}

/// A running fake FCM (and its token endpoint) on loopback.
pub struct FakeFcm {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared<FcmRequest>>,
    grants: Arc<Mutex<u32>>,
    client_email: String,
    project: String,
    scheme: &'static str,
    failures: HandshakeFailures,
}

impl FakeFcm {
    /// A fake for `project` whose service account is `client_email` with the
    /// RSA key whose public half is `public_pem`.
    pub async fn start(project: &str, client_email: &str, public_pem: &str) -> FakeFcm {
        Self::serve(project, client_email, public_pem, None).await
    }

    /// The same over TLS with `identity`.
    pub async fn start_tls(
        project: &str,
        client_email: &str,
        public_pem: &str,
        identity: &ServerIdentity,
    ) -> FakeFcm {
        Self::serve(project, client_email, public_pem, Some(identity)).await
    }

    async fn serve(
        project: &str,
        client_email: &str,
        public_pem: &str,
        identity: Option<&ServerIdentity>,
    ) -> FakeFcm {
        let shared = Shared::new();
        let grants = Arc::new(Mutex::new(0));
        // the token URI names this server: bind first, then build
        let listener = bind().await;
        let addr = listener.local_addr().expect("address");
        let scheme = scheme(identity);
        let app = App {
            config: Arc::new(Config {
                project: project.to_owned(),
                client_email: client_email.to_owned(),
                key: DecodingKey::from_rsa_pem(public_pem.as_bytes()).expect("an RSA public key"),
                token_uri: format!("{scheme}://{addr}/token"),
            }),
            shared: shared.clone(),
            tokens: Arc::default(),
            grants: grants.clone(),
        };
        let router = Router::new()
            .route("/token", post(token))
            .route("/v1/projects/{project}/{method}", post(send))
            .with_state(app);
        let failures = serve_on(listener, router, identity);
        FakeFcm {
            addr,
            shared,
            grants,
            client_email: client_email.to_owned(),
            project: project.to_owned(),
            scheme,
            failures,
        }
    }

    /// Its base URL, for `fcm_url`.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// TLS handshakes that failed (a client that refused the certificate).
    pub fn handshake_failures(&self) -> usize {
        self.failures.count()
    }

    /// The service-account JSON an app is configured with.
    pub fn service_account_json(&self, private_pem: &str) -> String {
        json!({
            "type": "service_account",
            "project_id": self.project,
            "private_key_id": "test-key",
            "private_key": private_pem,
            "client_email": self.client_email,
            "token_uri": format!("{}/token", self.url()),
        })
        .to_string()
    }

    /// Answers for one registration token, in order (the last repeats).
    pub fn script(&self, token: &str, replies: Vec<Reply>) {
        self.shared.script(token, replies);
    }

    /// Every message send it recorded, whatever it answered.
    pub fn received(&self) -> Vec<FcmRequest> {
        self.shared.received()
    }

    /// The messages it accepted (200).
    pub fn delivered(&self) -> Vec<FcmRequest> {
        self.received()
            .into_iter()
            .filter(|r| r.status == 200)
            .collect()
    }

    /// Access tokens granted so far (they are cached by a good client).
    pub fn grants(&self) -> u32 {
        *self.grants.lock()
    }
}

#[derive(Deserialize)]
struct Grant {
    grant_type: String,
    assertion: String,
}

async fn token(State(app): State<App>, Form(grant): Form<Grant>) -> Response {
    let invalid = |why: &str| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant", "error_description": why})),
        )
            .into_response()
    };
    if grant.grant_type != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
        return invalid("unsupported grant type");
    }
    let config = &app.config;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[config.client_email.as_str()]);
    validation.set_audience(&[config.token_uri.as_str()]);
    validation.required_spec_claims = ["iss", "aud", "exp", "iat"].map(str::to_owned).into();
    let claims = match jsonwebtoken::decode::<Value>(&grant.assertion, &config.key, &validation) {
        Ok(data) => data.claims,
        Err(e) => return invalid(&format!("bad assertion: {e}")),
    };
    let lifetime = claims["exp"].as_i64().unwrap_or(0) - claims["iat"].as_i64().unwrap_or(0);
    if !(1..=3600).contains(&lifetime) || claims["iat"].as_i64().unwrap_or(0) > now_secs() + 60 {
        return invalid("assertion lifetime");
    }
    if !claims["scope"]
        .as_str()
        .is_some_and(|s| s.split(' ').any(|s| s == crate::fcm::SCOPE))
    {
        return invalid("scope");
    }
    let access = format!("ya29.fake-{:032x}", rand::random::<u128>());
    app.tokens.lock().insert(access.clone());
    *app.grants.lock() += 1;
    axum::Json(json!({"access_token": access, "expires_in": 3599, "token_type": "Bearer"}))
        .into_response()
}

fn error(status: StatusCode, code: &str, message: &str, fcm_code: Option<&str>) -> Response {
    let details = match fcm_code {
        Some(c) => {
            json!([{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": c}])
        }
        None => json!([]),
    };
    (
        status,
        axum::Json(json!({"error": {"code": status.as_u16(), "message": message, "status": code, "details": details}})),
    )
        .into_response()
}

async fn send(
    State(app): State<App>,
    Path((project, method)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if method != "messages:send" {
        return error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such method", None);
    }
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let known = bearer.is_some_and(|t| app.tokens.lock().contains(&t));
    if !known {
        return error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "invalid credentials",
            None,
        );
    }
    if project != app.config.project {
        return error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "wrong project",
            Some("SENDER_ID_MISMATCH"),
        );
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "invalid JSON",
                Some("INVALID_ARGUMENT"),
            );
        }
    };
    let message = request["message"].clone();
    let token = message["token"].as_str().unwrap_or_default().to_owned();
    let targets = ["token", "topic", "condition"]
        .iter()
        .filter(|k| message.get(**k).is_some())
        .count();
    let data_ok = match message.get("data") {
        None => true,
        Some(Value::Object(m)) => m.values().all(Value::is_string),
        Some(_) => false,
    };
    if targets != 1 || token.is_empty() || !data_ok {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "bad message",
            Some("INVALID_ARGUMENT"),
        );
    }
    if serde_json::to_vec(&message["data"]).map_or(0, |d| d.len()) > MAX_PAYLOAD
        || body.len() > MAX_PAYLOAD + 1024
    {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "message too big",
            Some("INVALID_ARGUMENT"),
        );
    }
    let mut record = FcmRequest {
        project,
        message,
        status: 200,
        at: std::time::Instant::now(),
    };
    let response = match app.shared.next_reply(&token).settle().await {
        Reply::Accept => None,
        // the shape FCM gives a token it does not know when it names no
        // error code
        Reply::NotFound => Some(error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "Requested entity was not found.",
            None,
        )),
        Reply::Redirect(to) => {
            let mut r = error(StatusCode::TEMPORARY_REDIRECT, "REDIRECT", "moved", None);
            if let Ok(v) = to.parse() {
                r.headers_mut().insert("location", v);
            }
            Some(r)
        }
        Reply::Held { .. } => Some(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "nested hold",
            None,
        )),
        Reply::Slow(d) => {
            tokio::time::sleep(d).await;
            None
        }
        Reply::Unregistered { .. } | Reply::BadDeviceToken => Some(error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "Requested entity was not found.",
            Some("UNREGISTERED"),
        )),
        Reply::TooManyRequests { retry_after_secs } => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "RESOURCE_EXHAUSTED",
                "quota",
                Some("QUOTA_EXCEEDED"),
            );
            if let Ok(v) = retry_after_secs.to_string().parse() {
                r.headers_mut().insert("retry-after", v);
            }
            Some(r)
        }
        Reply::ServerError => Some(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "internal",
            Some("INTERNAL"),
        )),
    };
    match response {
        Some(r) => {
            record.status = r.status().as_u16();
            app.shared.record(record);
            r
        }
        None => {
            let name = format!(
                "projects/{}/messages/{:016x}",
                app.config.project,
                rand::random::<u64>()
            );
            app.shared.record(record);
            axum::Json(json!({ "name": name })).into_response()
        }
    }
}
