//! Long polling, for networks where neither WebSocket nor SSE gets through:
//! `GET /poll?channels=a,b&cursor=…&timeout=25` answers as soon as anything
//! is past the cursor (at once if something already is), or 204 after the
//! timeout. Without a cursor it answers at once with the current position.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use herald_core::channel::Channel;
use herald_core::presence::Transport;
use herald_core::protocol::{ErrorBody, StreamPosition};
use herald_core::route::HistoryQuery;
use herald_core::shutdown::Shutdown;
use serde::Deserialize;

use crate::Edge;
use crate::commands::subscribe::join;
use crate::cursor::Cursor;
use crate::http_client::{HttpError, authenticate, channels};
use crate::outbox::Delivery;

const DEFAULT_TIMEOUT_SECS: u64 = 25;
const MAX_TIMEOUT_SECS: u64 = 60;
/// Pushes answered by one poll at most; the rest wait for the next.
const MAX_MESSAGES: usize = 1000;

#[derive(Deserialize)]
pub(crate) struct Params {
    channels: String,
    cursor: Option<String>,
    timeout: Option<u64>,
    token: Option<String>,
}

pub(crate) async fn poll(
    State(edge): State<Arc<Edge>>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    // A held poll counts against the connection limits like any other.
    let _permit = match edge.admit(&headers) {
        Ok(p) => p,
        Err(refusal) => return refusal.into_response(),
    };
    match answer(edge, headers, params).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn answer(
    edge: Arc<Edge>,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, HttpError> {
    let claims = authenticate(&edge, &headers, params.token.as_deref())?;
    let channels = channels(&edge, &claims, &params.channels)?;
    let timeout = Duration::from_secs(
        params
            .timeout
            .unwrap_or(DEFAULT_TIMEOUT_SECS)
            .min(MAX_TIMEOUT_SECS),
    );
    let Some(cursor) = params.cursor.as_deref().filter(|c| !c.is_empty()) else {
        return current_position(&edge, &channels).await;
    };
    let mut cursor = Cursor::decode(cursor)?;

    let conn = edge.next_conn_id();
    let kicked = Shutdown::new();
    // A held poll counts as a connection of the user.
    edge.users.add(
        &claims.sub,
        conn,
        kicked.clone(),
        edge.config.max_connections_per_user,
    )?;
    edge.reporter.connect(conn, &claims.sub, Transport::Poll);
    let (outbox, mut inbox, _overflow) = edge.new_outbox();
    let mut joined = Vec::new();
    let mut messages: Vec<String> = Vec::new();
    let mut unrecoverable = Vec::new();
    let result = async {
        for channel in &channels {
            let since = cursor.get(channel).cloned();
            let ok = join(&edge, conn, &outbox, channel, since.as_ref()).await?;
            joined.push(channel.clone());
            if !crate::sse::is_personal(channel, &claims.sub) {
                edge.presence_joined(conn, channel).await;
            }
            if since.is_some() && ok.recovered == Some(false) {
                unrecoverable.push(channel.clone());
            }
            for publication in ok.publications.iter().flatten() {
                messages.push(
                    crate::hub::delivery_of_publication(publication)
                        .frame
                        .to_string(),
                );
            }
            cursor.set(channel, ok.offset, &ok.epoch);
        }
        if messages.is_empty() && unrecoverable.is_empty() {
            tokio::select! {
                first = inbox.recv() => {
                    if let Some(first) = first {
                        take(&mut cursor, &mut messages, &first);
                        while messages.len() < MAX_MESSAGES {
                            match inbox.try_recv() {
                                Some(d) => take(&mut cursor, &mut messages, &d),
                                None => break,
                            }
                        }
                    }
                }
                _ = tokio::time::sleep(timeout) => {}
                _ = kicked.wait() => {}
                _ = edge.shutdown.wait() => {}
            }
        }
        Ok::<_, ErrorBody>(())
    }
    .await;
    for channel in &joined {
        edge.hub.unsubscribe(channel, conn).await;
    }
    edge.users.remove(&claims.sub, conn);
    // A long-poll client is between polls most of the time: it stays
    // present for a grace period, so its next poll finds it still there.
    let grace = Duration::from_secs(edge.config.poll_grace_secs);
    let later = edge.clone();
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        later.presence_gone(conn).await;
    });
    result?;

    if messages.is_empty() && unrecoverable.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    edge.stats.delivered(messages.len() as u64);
    Ok(json_answer(&messages, &cursor, &unrecoverable))
}

/// Adds a delivery to the answer; publications move the cursor.
fn take(cursor: &mut Cursor, messages: &mut Vec<String>, delivery: &Delivery) {
    if let Some((offset, epoch)) = &delivery.position {
        cursor.set(&delivery.channel, *offset, epoch);
    }
    messages.push(delivery.frame.to_string());
}

/// `{"messages":[…],"cursor":"…"}`, the pushes inserted as they are.
fn json_answer(messages: &[String], cursor: &Cursor, unrecoverable: &[Channel]) -> Response {
    let mut body = String::with_capacity(messages.iter().map(|m| m.len() + 1).sum::<usize>() + 128);
    body.push_str("{\"messages\":[");
    body.push_str(&messages.join(","));
    body.push_str("],\"cursor\":");
    body.push_str(&serde_json::to_string(&cursor.encode()).unwrap_or_default());
    if !unrecoverable.is_empty() {
        // channels whose missed publications are no longer kept
        body.push_str(",\"unrecoverable\":");
        body.push_str(&serde_json::to_string(unrecoverable).unwrap_or_default());
    }
    body.push('}');
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

/// No cursor yet: where every channel stands now.
async fn current_position(edge: &Edge, channels: &[Channel]) -> Result<Response, HttpError> {
    let mut cursor = Cursor::default();
    for channel in channels {
        let query = HistoryQuery {
            channel: channel.clone(),
            since: None,
            limit: 0,
        };
        let StreamPosition { offset, epoch } = edge.routing.history(&query).await?.latest().clone();
        cursor.set(channel, offset, &epoch);
    }
    Ok(json_answer(&[], &cursor, &[]))
}
