//! `publish`: forward to routing, which checks the token's `publish`
//! patterns and the namespace, stores the publication and fans it out.

use herald_core::protocol::{ErrorBody, PublishCommand, PublishOk};
use herald_core::route::ClientPublish;

use crate::session::Session;

pub(crate) async fn run(
    session: &mut Session,
    command: PublishCommand,
) -> Result<PublishOk, ErrorBody> {
    let claims = session.claims()?;
    let request = ClientPublish {
        channel: command.channel,
        data: command.data,
        user: claims.sub.clone(),
        publish: claims.publish.clone(),
    };
    let position = session.edge.routing.publish(&request).await?;
    Ok(PublishOk {
        offset: position.offset,
    })
}
