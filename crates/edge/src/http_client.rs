//! What the HTTP transports (SSE, long polling, `POST /publish`,
//! `POST /typing`) share: the bearer token, the channel list, and JSON
//! error answers.

use axum::http::{HeaderMap, header};
use herald_core::auth::Claims;
use herald_core::channel::Channel;
use herald_core::protocol::{ErrorBody, ErrorCode};

use crate::Edge;
use crate::commands::subscribe::MAX_SUBSCRIPTIONS;

/// An error answer: `{"error":{…}}` with its HTTP status — the same as
/// the server APIs'.
pub(crate) use herald_proto::http::ApiError as HttpError;

/// The client's token: `Authorization: Bearer …`, else `token=`.
pub(crate) fn authenticate(
    edge: &Edge,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<Claims, HttpError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or(query_token)
        .ok_or_else(|| {
            ErrorBody::new(
                ErrorCode::Unauthorized,
                "missing token: send `Authorization: Bearer <JWT>` or `token=`",
            )
        })?;
    edge.verifier
        .verify(token.trim())
        .map_err(|e| HttpError(ErrorBody::new(e.code(), e.to_string())))
}

/// `channels=a,b`: each valid, allowed for the user and in a known
/// namespace.
pub(crate) fn channels(
    edge: &Edge,
    claims: &Claims,
    list: &str,
) -> Result<Vec<Channel>, HttpError> {
    let mut channels = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let channel = Channel::new(name).map_err(|e| {
            ErrorBody::new(
                ErrorCode::BadRequest,
                format!("invalid channel `{name}`: {e}"),
            )
        })?;
        if !claims.may_subscribe(&channel) {
            return Err(HttpError(ErrorBody::new(
                ErrorCode::PermissionDenied,
                format!("not allowed to subscribe to `{channel}`"),
            )));
        }
        edge.config
            .namespace(&channel)
            .map_err(|e| HttpError(e.into()))?;
        if !channels.contains(&channel) {
            channels.push(channel);
        }
    }
    if channels.is_empty() {
        return Err(HttpError(ErrorBody::new(
            ErrorCode::BadRequest,
            "name at least one channel: `channels=a,b`",
        )));
    }
    if channels.len() > MAX_SUBSCRIPTIONS {
        return Err(HttpError(ErrorBody::new(
            ErrorCode::LimitExceeded,
            format!("at most {MAX_SUBSCRIPTIONS} channels"),
        )));
    }
    // Like every WebSocket connection, the stream carries the user's
    // personal channel.
    if let Ok(personal) = Channel::personal(&claims.sub)
        && !channels.contains(&personal)
    {
        channels.push(personal);
    }
    Ok(channels)
}
