//! What the edge serves to browsers besides the transports: the browser
//! SDK at `/herald.js` and the demo chat at `/`. The files live in the
//! repository (`clients/js`, `web/`) and are compiled in, so every edge
//! serves the SDK of its own version.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use herald_core::auth::TokenSigner;
use herald_protocol::{ErrorBody, ErrorCode, UserId};

use herald_proto::http::bad_request;

use crate::http_client::HttpError;

const SDK: &str = include_str!("../../../clients/js/herald.js");

/// `GET /herald.js`: the browser SDK, an ES module.
pub(crate) async fn sdk() -> Response {
    asset(SDK, "text/javascript; charset=utf-8")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // short: a new edge version reaches browsers within minutes
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            ),
        ],
        body,
    )
        .into_response()
}

/// `GET /`: the demo chat, built on the SDK.
pub(crate) async fn demo() -> Response {
    asset(DEMO, "text/html; charset=utf-8")
}

const DEMO: &str = include_str!("../../../web/index.html");

/// `GET /admin`: the dashboard page (its data needs an API key).
pub(crate) async fn admin() -> Response {
    asset(ADMIN, "text/html; charset=utf-8")
}

const ADMIN: &str = include_str!("../../../web/admin.html");

/// `GET /favicon.ico` (browsers ask for it whatever the page says): the
/// Herald mark, SVG.
pub(crate) async fn favicon() -> Response {
    asset(FAVICON, "image/svg+xml")
}

const FAVICON: &str = include_str!("../../../web/favicon.svg");

/// Longest user name the demo mints a token for.
const MAX_DEMO_USER: usize = 32;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DemoTokenRequest {
    user: String,
}

/// `POST /demo/token {"user":"alice"}` → `{"token":"…"}`: a one-hour token
/// for the `chat:` namespace. Only for a server that runs with the built-in
/// development secret — which anyone can read in Herald's source, so this
/// gives away nothing that was not already public — so that the demo works
/// with no setup.
pub fn demo_tokens(signer: TokenSigner) -> Router {
    let signer = Arc::new(signer);
    Router::new().route(
        "/demo/token",
        post(
            async move |body: Result<Json<DemoTokenRequest>, JsonRejection>| {
                let user = match body {
                    Ok(Json(body)) => body.user,
                    Err(e) => return bad_request(e.body_text()).into_response(),
                };
                // Narrower than a user id, so the demo's names are plain.
                let plain = user.len() <= MAX_DEMO_USER
                    && user
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                let user = match UserId::parse(&user) {
                    Ok(user) if plain => user,
                    _ => {
                        return bad_request(format!(
                            "a user name is 1–{MAX_DEMO_USER} letters, digits, `_` or `-`"
                        ))
                        .into_response();
                    }
                };
                let patterns = ["chat:*".to_owned()];
                match signer.mint(&user, &patterns, &patterns, DEMO_TOKEN_TTL) {
                    Ok(token) => Json(serde_json::json!({ "token": token })).into_response(),
                    Err(e) => HttpError(ErrorBody::new(ErrorCode::Internal, e.0)).into_response(),
                }
            },
        ),
    )
}

const DEMO_TOKEN_TTL: Duration = Duration::from_secs(3600);
