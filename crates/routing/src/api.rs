//! The HTTP server API (`/api/*`), authenticated with API keys.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::header;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use herald_core::history::Recovery;
use herald_proto::Refusal;
use herald_protocol::StreamPosition;
use herald_protocol::channel::Channel;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use herald_proto::http::{ApiError, bad_request, json_body, require_api_key};

use crate::routing::{
    BroadcastAnswer, BroadcastRequest, PublishAnswer, PublishRequest, Routing, SendAnswer,
    SendRequest,
};
use herald_core::api_key::ApiKeys;

/// The `/api` routes. Request bodies may exceed `max_message_bytes` a
/// little, for the envelope around `data`.
pub fn api_router(routing: Arc<Routing>, keys: ApiKeys, max_message_bytes: usize) -> Router {
    Router::new()
        .route("/api/publish", post(publish))
        .route("/api/broadcast", post(broadcast))
        .route("/api/send", post(send))
        .route("/api/history", get(history))
        .route("/api/presence", get(presence))
        .route("/api/disconnect", post(disconnect))
        .layer(DefaultBodyLimit::max(max_message_bytes + 64 * 1024))
        .layer(middleware::from_fn_with_state(keys, require_api_key))
        .layer(middleware::map_response(crate::stats::count_http_errors))
        .layer(herald_proto::trace::http_layer())
        .with_state(routing)
}

/// The server API's description: `GET /api/openapi.json` (OpenAPI 3.1, the
/// file in `docs/`) and `GET /api/docs` (a page that renders it). Open, as
/// documentation is; every operation it describes needs the key.
pub fn docs_router() -> Router {
    const SPEC: &str = include_str!("../../../docs/openapi.json");
    const PAGE: &str = include_str!("../../../web/api-docs.html");
    Router::new()
        .route(
            "/api/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], SPEC) }),
        )
        .route(
            "/api/docs",
            get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE) }),
        )
}

async fn publish(
    State(routing): State<Arc<Routing>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PublishAnswer>, ApiError> {
    let request: PublishRequest = json_body(body)?;
    Ok(Json(routing.publish(request).await?))
}

async fn broadcast(
    State(routing): State<Arc<Routing>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<BroadcastAnswer>, ApiError> {
    let request: BroadcastRequest = json_body(body)?;
    Ok(Json(routing.broadcast(request).await?))
}

async fn send(
    State(routing): State<Arc<Routing>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<SendAnswer>, ApiError> {
    let request: SendRequest = json_body(body)?;
    Ok(Json(routing.send_to_user(request).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    user: String,
}

async fn disconnect(
    State(routing): State<Arc<Routing>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let request: DisconnectBody = json_body(body)?;
    routing.disconnect(&request.user).await?;
    Ok(Json(serde_json::json!({})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PresenceParams {
    channel: String,
}

#[derive(Serialize)]
struct PresenceAnswer {
    users: Vec<String>,
}

/// `GET /api/presence?channel=`: who is subscribed to a channel now.
async fn presence(
    State(routing): State<Arc<Routing>>,
    params: Result<Query<PresenceParams>, QueryRejection>,
) -> Result<Json<PresenceAnswer>, ApiError> {
    let Query(params) = params.map_err(|e| bad_request(e.body_text()))?;
    let channel = Channel::new(&params.channel).map_err(|e| bad_request(e.to_string()))?;
    let mut users = routing.channel_users(&channel).await?;
    users.sort();
    users.dedup();
    Ok(Json(PresenceAnswer { users }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
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

pub(crate) const DEFAULT_HISTORY_LIMIT: usize = 100;

/// The stream position a history request names: `since` in `epoch`, or in
/// the current epoch when none is given.
pub(crate) async fn since_position(
    routing: &Routing,
    channel: &Channel,
    since: Option<u64>,
    epoch: Option<String>,
) -> Result<Option<StreamPosition>, Refusal> {
    let Some(offset) = since else {
        return Ok(None);
    };
    let epoch = match epoch.filter(|e| !e.is_empty()) {
        Some(e) => herald_protocol::Epoch::from(e),
        None => routing
            .history(channel, None, 0)
            .await?
            .latest()
            .epoch
            .clone(),
    };
    Ok(Some(StreamPosition { offset, epoch }))
}

/// The error for a history read from `since` that cannot be answered:
/// past the channel's latest offset (the caller's mistake, 400), else
/// publications no longer kept (110).
pub(crate) fn not_readable(since: Option<&StreamPosition>, latest: &StreamPosition) -> Refusal {
    match since {
        Some(since) if since.epoch == latest.epoch && since.offset > latest.offset => {
            Refusal::invalid(format!(
                "since {} is past the channel's latest offset {} (epoch {:?})",
                since.offset, latest.offset, latest.epoch
            ))
        }
        _ => unrecoverable(latest),
    }
}

/// The error for a position whose publications are no longer kept.
pub(crate) fn unrecoverable(latest: &StreamPosition) -> Refusal {
    Refusal::unrecoverable(format!(
        "publications after that position are no longer kept (the channel is at offset {} of epoch {:?})",
        latest.offset, latest.epoch
    ))
}

async fn history(
    State(routing): State<Arc<Routing>>,
    params: Result<Query<HistoryParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| bad_request(e.body_text()))?;
    let channel =
        Channel::new(&params.channel).map_err(|e| bad_request(format!("invalid channel: {e}")))?;
    let since = since_position(&routing, &channel, params.since, params.epoch).await?;
    let limit = params.limit.unwrap_or(DEFAULT_HISTORY_LIMIT);
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
        Recovery::Unrecoverable { latest } => Err(not_readable(since.as_ref(), &latest).into()),
    }
}
