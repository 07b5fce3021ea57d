//! What the edge serves to browsers besides the transports: the browser
//! SDK at `/herald.js`. The files live in the repository (`clients/js`) and
//! are compiled in, so every edge serves the SDK of its own version.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

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
