//! `publish`: forward to routing, which checks the token's `publish`
//! patterns and the namespace, stores the publication and fans it out.

use herald_core::auth::Claims;
use herald_core::channel::Channel;
use herald_core::protocol::{ErrorBody, PublishCommand, PublishOk};
use herald_core::route::ClientPublish;
use serde_json::value::RawValue;

use crate::Edge;
use crate::session::Session;

pub(crate) async fn run(
    session: &mut Session,
    command: PublishCommand,
) -> Result<PublishOk, ErrorBody> {
    let claims = session.claims()?;
    publish(&session.edge, claims, command.channel, command.data).await
}

/// The publish of any transport (WebSocket command, `POST /publish`).
pub(crate) async fn publish(
    edge: &Edge,
    claims: &Claims,
    channel: Channel,
    data: Box<RawValue>,
) -> Result<PublishOk, ErrorBody> {
    let request = ClientPublish {
        channel,
        data,
        user: claims.sub.clone(),
        publish: claims.publish.clone(),
    };
    let position = edge.routing.publish(&request).await?;
    Ok(PublishOk {
        offset: position.offset,
    })
}
