//! `unsubscribe`: leave a channel. Leaving a channel one is not in is not
//! an error, so clients can retry freely. It takes effect in command
//! order: after a subscribe to the same channel still in flight.

use herald_protocol::channel::Channel;

use crate::connection::{Connection, Done};

pub(crate) fn start(conn: &mut Connection, id: Option<u64>, channel: Channel) {
    conn.leaving.insert(channel.clone());
    conn.start(Box::pin(std::future::ready(Done::Unsubscribe {
        id,
        channel,
    })));
}
