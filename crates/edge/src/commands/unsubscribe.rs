//! `unsubscribe`: leave a channel. Leaving a channel one is not in is not
//! an error, so clients can retry freely.

use herald_core::protocol::{ChannelCommand, EmptyOk, ErrorBody};

use crate::session::Session;

pub(crate) async fn run(
    session: &mut Session,
    command: ChannelCommand,
) -> Result<EmptyOk, ErrorBody> {
    if session.subscriptions.remove(&command.channel) {
        let edge = &session.edge;
        edge.hub.unsubscribe(&command.channel, session.conn).await;
        edge.presence_left(session.conn, &command.channel).await;
    }
    Ok(EmptyOk {})
}
