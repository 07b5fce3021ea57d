//! `POST /publish`, `POST /typing` and `POST /presence`: the commands of
//! SSE and long-poll clients, which have no socket to send them on. Same
//! bearer token, same command code, same answers as the WebSocket
//! commands, and the same rate (`command_rate`, `command_burst`) — per user
//! here, as there is no connection to count them on.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use herald_core::auth::Claims;
use herald_protocol::channel::Channel;
use herald_protocol::{ErrorBody, ErrorCode};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::Edge;
use crate::commands::{presence, publish, typing};
use crate::connection::too_many_commands;
use crate::http_client::{HttpError, authenticate_header};
use crate::transport::ReplyBody;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishBody {
    channel: Channel,
    data: Box<RawValue>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChannelBody {
    channel: Channel,
}

pub(crate) async fn publish(
    State(edge): State<Arc<Edge>>,
    headers: HeaderMap,
    body: Result<Json<PublishBody>, JsonRejection>,
) -> Response {
    match authorized(&edge, &headers, body) {
        Ok((claims, body)) => respond(
            publish::publish(
                &edge,
                &claims,
                body.channel,
                body.data,
                body.idempotency_key,
            )
            .await,
        ),
        Err(e) => e.into_response(),
    }
}

pub(crate) async fn typing(
    State(edge): State<Arc<Edge>>,
    headers: HeaderMap,
    body: Result<Json<ChannelBody>, JsonRejection>,
) -> Response {
    match authorized(&edge, &headers, body) {
        Ok((claims, body)) => respond(typing::typing(&edge, &claims, body.channel).await),
        Err(e) => e.into_response(),
    }
}

pub(crate) async fn presence(
    State(edge): State<Arc<Edge>>,
    headers: HeaderMap,
    body: Result<Json<ChannelBody>, JsonRejection>,
) -> Response {
    match authorized(&edge, &headers, body) {
        Ok((claims, body)) => respond(presence::presence(&edge, &claims, body.channel).await),
        Err(e) => e.into_response(),
    }
}

/// The caller's claims (from `Authorization: Bearer`) and the parsed body,
/// within the user's command rate.
fn authorized<B>(
    edge: &Edge,
    headers: &HeaderMap,
    body: Result<Json<B>, JsonRejection>,
) -> Result<(Claims, B), HttpError> {
    let claims = authenticate_header(edge, headers)?;
    if !edge.http_commands.take(claims.sub.as_str()) {
        crate::stats::client_error(ErrorCode::TooManyRequests);
        return Err(HttpError(too_many_commands(edge.config.edge.command_rate)));
    }
    let Json(body) = body.map_err(|e| ErrorBody::new(ErrorCode::BadRequest, e.body_text()))?;
    Ok((claims, body))
}

fn respond<T: Serialize>(result: Result<T, ErrorBody>) -> Response {
    let reply = crate::connection::reply(None, result);
    match reply.body {
        ReplyBody::Ok(json) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            json,
        )
            .into_response(),
        ReplyBody::Error(e) => HttpError(e).into_response(),
        ReplyBody::Connected(_) | ReplyBody::Subscribed(..) => {
            HttpError(ErrorBody::new(ErrorCode::Internal, "unexpected reply")).into_response()
        }
    }
}
