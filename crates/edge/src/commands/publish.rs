//! `publish`: forward to routing, which checks the token's `publish`
//! patterns and the namespace, stores the publication and fans it out.

use herald_core::auth::Claims;
use herald_protocol::channel::Channel;
use herald_protocol::route::ClientPublish;
use herald_protocol::{ErrorBody, PublishCommand, PublishOk};
use serde_json::value::RawValue;

use crate::Edge;
use crate::connection::Connection;

pub(crate) fn start(conn: &mut Connection, id: u64, command: PublishCommand) {
    conn.answer_later(id, move |edge, claims| async move {
        publish(
            &edge,
            &claims,
            command.channel,
            command.data,
            command.idempotency_key,
        )
        .await
    });
}

/// The publish of any transport (WebSocket command, `POST /publish`).
pub(crate) async fn publish(
    edge: &Edge,
    claims: &Claims,
    channel: Channel,
    data: Box<RawValue>,
    idempotency_key: Option<String>,
) -> Result<PublishOk, ErrorBody> {
    // Refused here, before a round trip to routing (which checks it too).
    herald_protocol::check_data(data.get(), edge.config.max_json_depth)
        .map_err(|e| ErrorBody::new(herald_protocol::ErrorCode::BadRequest, e.to_string()))?;
    // A key is named here when the client gave none: if routing's answer
    // does not come, the client can still be told which key to retry with.
    let idempotency_key =
        idempotency_key.or_else(|| Some(format!("~{:032x}", rand::random::<u128>())));
    let request = ClientPublish {
        channel,
        data,
        user: claims.sub.clone(),
        publish: claims.publish.clone(),
        idempotency_key,
    };
    let position = edge.routing.publish(&request).await?;
    Ok(PublishOk {
        offset: position.offset,
    })
}
