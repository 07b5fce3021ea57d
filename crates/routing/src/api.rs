//! The HTTP server API (`/api/*`), authenticated with API keys.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use herald_core::channel::Channel;
use herald_core::history::Recovery;
use herald_core::protocol::{ErrorBody, ErrorCode, StreamPosition};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::api_key::ApiKeys;
use crate::publish::{PublishInput, Routing};

/// An API error: the JSON body `{"error":{…}}` with its HTTP status.
pub struct ApiError(pub ErrorBody);

impl From<ErrorBody> for ApiError {
    fn from(e: ErrorBody) -> Self {
        ApiError(e)
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
        (status, Json(Body { error: self.0 })).into_response()
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(ErrorBody::new(ErrorCode::BadRequest, message))
}

/// The `/api` routes. `max_message_bytes` bounds publication data; request
/// bodies may be a little larger for the envelope around it.
pub fn api_router(routing: Arc<Routing>, keys: ApiKeys, max_message_bytes: usize) -> Router {
    Router::new()
        .route("/api/publish", post(publish))
        .route("/api/history", get(history))
        .layer(DefaultBodyLimit::max(max_message_bytes + 16 * 1024))
        .layer(middleware::from_fn_with_state(keys, require_api_key))
        .with_state(routing)
}

async fn require_api_key(
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
fn json_body<T: for<'de> Deserialize<'de>>(
    body: Result<Bytes, BytesRejection>,
) -> Result<(T, Bytes), ApiError> {
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
    let value = serde_json::from_slice(&bytes)
        .map_err(|e| bad_request(format!("invalid JSON body: {e}")))?;
    Ok((value, bytes))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    channel: Channel,
    data: Box<RawValue>,
}

async fn publish(
    State(routing): State<Arc<Routing>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<StreamPosition>, ApiError> {
    let (body, _): (PublishBody, _) = json_body(body)?;
    let position = routing
        .publish(PublishInput {
            channel: body.channel,
            data: body.data,
            from: None,
        })
        .await?;
    Ok(Json(position))
}

#[derive(Deserialize)]
struct HistoryParams {
    channel: String,
    since: Option<u64>,
    epoch: Option<String>,
    limit: Option<usize>,
}

#[derive(Serialize)]
struct HistoryItem<'a> {
    offset: u64,
    data: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a str>,
    ts: u64,
}

#[derive(Serialize)]
struct HistoryAnswer<'a> {
    publications: Vec<HistoryItem<'a>>,
    offset: u64,
    epoch: &'a str,
}

const DEFAULT_HISTORY_LIMIT: usize = 100;

async fn history(
    State(routing): State<Arc<Routing>>,
    params: Result<Query<HistoryParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| bad_request(e.body_text()))?;
    let channel =
        Channel::new(&params.channel).map_err(|e| bad_request(format!("invalid channel: {e}")))?;
    let limit = params.limit.unwrap_or(DEFAULT_HISTORY_LIMIT);
    let since = match params.since {
        None => None,
        Some(offset) => {
            // Without an epoch the caller means the current one.
            let epoch = match params.epoch {
                Some(e) => e,
                None => routing
                    .history(&channel, None, 0)
                    .await?
                    .latest()
                    .epoch
                    .clone(),
            };
            Some(StreamPosition { offset, epoch })
        }
    };
    match routing.history(&channel, since.as_ref(), limit).await? {
        Recovery::Recovered {
            publications,
            latest,
        } => {
            let answer = HistoryAnswer {
                publications: publications
                    .iter()
                    .map(|p| HistoryItem {
                        offset: p.offset,
                        data: &p.data,
                        from: p.from.as_deref(),
                        ts: p.ts,
                    })
                    .collect(),
                offset: latest.offset,
                epoch: &latest.epoch,
            };
            Ok(Json(answer).into_response())
        }
        Recovery::Unrecoverable { latest } => Err(ApiError(ErrorBody::new(
            ErrorCode::Unrecoverable,
            format!(
                "publications after that position are no longer kept (channel is at offset {} of epoch {})",
                latest.offset, latest.epoch
            ),
        ))),
    }
}
