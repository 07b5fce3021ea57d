//! `presence`: who is in a channel, across every edge (asked of the
//! presence service).

use herald_core::auth::Claims;
use herald_core::channel::Channel;
use herald_core::protocol::{ChannelCommand, ErrorBody, ErrorCode, PresenceOk};

use crate::Edge;
use crate::connection::{Connection, Done, reply};

pub(crate) fn start(conn: &mut Connection, id: u64, command: ChannelCommand) {
    let Ok(claims) = conn.claims().cloned() else {
        return;
    };
    let edge = conn.edge.clone();
    conn.start(Box::pin(async move {
        let result = presence(&edge, &claims, command.channel).await;
        Done::Reply(reply(Some(id), result))
    }));
}

/// The presence query of any transport (WebSocket command, `POST /presence`).
pub(crate) async fn presence(
    edge: &Edge,
    claims: &Claims,
    channel: Channel,
) -> Result<PresenceOk, ErrorBody> {
    if !claims.may_subscribe(&channel) {
        return Err(ErrorBody::new(
            ErrorCode::PermissionDenied,
            format!("not allowed in `{channel}`"),
        ));
    }
    if !edge.config.namespace(&channel)?.presence {
        return Err(ErrorBody::new(
            ErrorCode::PermissionDenied,
            format!("presence is off for `{channel}`"),
        ));
    }
    let Some(lookup) = edge.presence_lookup() else {
        return Err(ErrorBody::new(
            ErrorCode::Internal,
            "no presence service is configured (HERALD_PRESENCE_URL)",
        ));
    };
    let users = lookup.channel_users(&channel).await.map_err(|e| {
        tracing::warn!(error = %e, "presence query failed");
        ErrorBody::new(ErrorCode::Internal, "presence unavailable; try again")
    })?;
    Ok(PresenceOk { users })
}
