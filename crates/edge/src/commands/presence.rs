//! `presence`: who is in a channel, across every edge (asked of the
//! presence service).

use herald_core::auth::Claims;
use herald_protocol::channel::Channel;
use herald_protocol::{ChannelCommand, ErrorBody, ErrorCode, PresenceOk};

use crate::Edge;
use crate::connection::Connection;

pub(crate) fn start(conn: &mut Connection, id: u64, command: ChannelCommand) {
    conn.answer_later(id, move |edge, claims| async move {
        presence(&edge, &claims, command.channel).await
    });
}

/// The presence query of any transport (WebSocket command, `POST /presence`).
pub(crate) async fn presence(
    edge: &Edge,
    claims: &Claims,
    channel: Channel,
) -> Result<PresenceOk, ErrorBody> {
    super::in_channel_with(edge, claims, &channel, "presence", |ns| ns.presence)?;
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
