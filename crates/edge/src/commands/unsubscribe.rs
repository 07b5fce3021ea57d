//! `unsubscribe`: leave a channel. Leaving a channel one is not in is not
//! an error, so clients can retry freely.

use herald_core::protocol::{ChannelCommand, EmptyOk, ErrorBody};

use crate::session::Session;

pub(crate) async fn run(
    session: &mut Session,
    command: ChannelCommand,
) -> Result<EmptyOk, ErrorBody> {
    if session.subscriptions.remove(&command.channel) {
        session
            .edge
            .hub
            .unsubscribe(&command.channel, session.conn)
            .await;
    }
    Ok(EmptyOk {})
}
