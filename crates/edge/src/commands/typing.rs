//! `typing`: an ephemeral event to the channel's subscribers — no offset,
//! never stored, never pushed to phones.

use herald_core::auth::Claims;
use herald_core::bus::Headers;
use herald_core::subjects::HEADER_KIND;
use herald_protocol::channel::Channel;
use herald_protocol::{ChannelCommand, ChannelUser, EmptyOk, ErrorBody, ErrorCode, Push, encode};

use crate::Edge;
use crate::connection::Connection;

pub(crate) fn start(conn: &mut Connection, id: u64, command: ChannelCommand) {
    conn.answer_later(id, move |edge, claims| async move {
        typing(&edge, &claims, command.channel).await
    });
}

/// The typing event of any transport (WebSocket command, `POST /typing`).
pub(crate) async fn typing(
    edge: &Edge,
    claims: &Claims,
    channel: Channel,
) -> Result<EmptyOk, ErrorBody> {
    super::in_channel_with(edge, claims, &channel, "typing", |ns| ns.typing)?;
    if !edge.typing_allowed(&claims.sub, &channel) {
        return Err(ErrorBody::new(
            ErrorCode::TooManyRequests,
            "too many typing events for this channel",
        ));
    }
    let event = Push::Typing(ChannelUser {
        channel: channel.clone(),
        user: claims.sub.clone(),
    });
    edge.bus
        .publish(
            &edge.subjects.live(&channel),
            Headers::new().with(HEADER_KIND, "typing"),
            encode(&event).into(),
        )
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "typing event not sent");
            ErrorBody::new(ErrorCode::Internal, "temporarily unavailable")
        })?;
    Ok(EmptyOk {})
}
