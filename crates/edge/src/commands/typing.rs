//! `typing`: an ephemeral event to the channel's subscribers — no offset,
//! never stored, never pushed to phones.

use herald_core::auth::Claims;
use herald_core::bus::Headers;
use herald_core::channel::Channel;
use herald_core::protocol::{
    ChannelCommand, ChannelUser, EmptyOk, ErrorBody, ErrorCode, Push, encode,
};
use herald_core::subjects::HEADER_KIND;

use crate::Edge;
use crate::connection::{Connection, Done, reply};

pub(crate) fn start(conn: &mut Connection, id: u64, command: ChannelCommand) {
    let Ok(claims) = conn.claims().cloned() else {
        return;
    };
    let edge = conn.edge.clone();
    conn.start(Box::pin(async move {
        let result = typing(&edge, &claims, command.channel).await;
        Done::Reply(reply(Some(id), result))
    }));
}

/// The typing event of any transport (WebSocket command, `POST /typing`).
pub(crate) async fn typing(
    edge: &Edge,
    claims: &Claims,
    channel: Channel,
) -> Result<EmptyOk, ErrorBody> {
    if !claims.may_subscribe(&channel) {
        return Err(ErrorBody::new(
            ErrorCode::PermissionDenied,
            format!("not allowed in `{channel}`"),
        ));
    }
    if !edge.config.namespace(&channel)?.typing {
        return Err(ErrorBody::new(
            ErrorCode::PermissionDenied,
            format!("typing events are off for `{channel}`"),
        ));
    }
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
