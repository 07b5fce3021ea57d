//! What every HTTP server API of Herald shares: API-key authentication,
//! JSON error answers, and strict JSON bodies.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use herald_core::api_key::ApiKeys;
use herald_protocol::{ErrorBody, ErrorCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Seconds a caller told to try again (503) is asked to wait.
pub const RETRY_AFTER_SECS: u64 = 1;

/// An API error: the JSON body `{"error":{…}}` with its HTTP status — the
/// one HTTP mapping of Herald's errors, for every service. A 503 says when
/// to come back (`Retry-After`).
pub struct ApiError(pub ErrorBody);

impl From<ErrorBody> for ApiError {
    fn from(e: ErrorBody) -> Self {
        ApiError(e)
    }
}

impl From<crate::Refusal> for ApiError {
    fn from(refusal: crate::Refusal) -> Self {
        ApiError(refusal.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: ErrorBody,
        }
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let status = match (self.0.code, status) {
            // Nothing was done and trying again may work: say so.
            (ErrorCode::Internal, _) => StatusCode::SERVICE_UNAVAILABLE,
            (_, s) => s,
        };
        let mut response = (status, Json(Body { error: self.0 })).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                axum::http::HeaderValue::from(RETRY_AFTER_SECS),
            );
        }
        response
    }
}

/// A 400 (code 100) with `message`.
pub fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(ErrorBody::new(ErrorCode::BadRequest, message))
}

/// Middleware: admits requests with `Authorization: Bearer <api key>`
/// (`axum::middleware::from_fn_with_state(keys, require_api_key)`).
pub async fn require_api_key(
    State(keys): State<ApiKeys>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        None => ApiError(ErrorBody::new(
            ErrorCode::Unauthorized,
            "missing API key: send `Authorization: Bearer <key>`",
        ))
        .into_response(),
        Some(key) if !keys.accepts(key.trim()) => {
            ApiError(ErrorBody::new(ErrorCode::Unauthorized, "invalid API key")).into_response()
        }
        Some(_) => next.run(request).await,
    }
}

/// Reads a JSON body, turning every failure into a clear API error.
pub fn json_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError(ErrorBody::new(
                ErrorCode::LimitExceeded,
                "request body too large",
            ))
        } else {
            bad_request(rejection.body_text())
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| bad_request(format!("invalid request body: {e}")))
}

/// `GET /metrics` (the process's Prometheus metrics) and `GET /healthz`
/// (the process is up). Merged once into each HTTP server (in standalone,
/// once for all services).
pub fn ops_router() -> axum::Router {
    axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route(
            "/metrics",
            axum::routing::get(|| async {
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    herald_core::metrics::render(),
                )
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_answers_its_status_and_a_503_says_when_to_retry() {
        let cases = [
            (ErrorCode::BadRequest, 400),
            (ErrorCode::Unauthorized, 401),
            (ErrorCode::TokenExpired, 401),
            (ErrorCode::PermissionDenied, 403),
            (ErrorCode::UnknownChannel, 404),
            (ErrorCode::Unrecoverable, 410),
            (ErrorCode::OutcomeUnknown, 504),
            (ErrorCode::LimitExceeded, 413),
            (ErrorCode::TooManyRequests, 429),
            (ErrorCode::Internal, 503),
        ];
        for (code, status) in cases {
            let response = ApiError(ErrorBody::new(code, "x")).into_response();
            assert_eq!(response.status().as_u16(), status, "{code:?}");
            let retry = response.headers().get(header::RETRY_AFTER);
            assert_eq!(retry.is_some(), status == 503, "{code:?}");
        }
    }
}
