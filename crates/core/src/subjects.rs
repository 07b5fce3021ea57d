//! The NATS subjects Herald's services talk on — the architecture in one
//! place. Every subject starts with the configured prefix (`herald` by
//! default) so clusters and test runs can share one NATS without crosstalk.

use std::sync::Arc;

use herald_protocol::channel::{Channel, ChannelError};

/// The queue group routing replicas share for client publishes.
pub const ROUTING_QUEUE_GROUP: &str = "routing";

/// Header carrying a live publication's offset.
pub const HEADER_OFFSET: &str = "Herald-Offset";
/// Header carrying a live publication's epoch.
pub const HEADER_EPOCH: &str = "Herald-Epoch";
/// Header carrying when routing stored a live publication (Unix ms): edges
/// measure publish → deliver time from it without parsing the frame.
pub const HEADER_TS: &str = "Herald-Ts";
/// Header naming the kind of a live push that is not a publication
/// (`typing`, `join`, `leave`).
pub const HEADER_KIND: &str = "Herald-Kind";

/// The subjects of one cluster: every name under its prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: Arc<str>,
}

impl Subjects {
    /// The subjects under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Subjects {
            prefix: Arc::from(prefix),
        }
    }

    /// The first token of every subject.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `herald.live.<channel>`: live publications and events of a channel.
    pub fn live(&self, channel: &Channel) -> String {
        format!("{}.live.{}", self.prefix, channel.subject_token())
    }

    /// The channel a `live` subject belongs to.
    pub fn channel_of_live(&self, subject: &str) -> Result<Channel, ChannelError> {
        let token = subject
            .strip_prefix(&*self.prefix)
            .and_then(|s| s.strip_prefix(".live."))
            .ok_or_else(|| ChannelError::BadSubjectToken(subject.to_owned()))?;
        Channel::from_subject_token(token)
    }

    /// `herald.stats.<node>`: a service instance's numbers, once a second.
    pub fn stats(&self, node: &str) -> String {
        format!("{}.stats.{node}", self.prefix)
    }

    /// Every node's stats.
    pub fn stats_all(&self) -> String {
        format!("{}.stats.*", self.prefix)
    }

    /// `herald.route.publish`: client publishes from edges to routing.
    pub fn route_publish(&self) -> String {
        format!("{}.route.publish", self.prefix)
    }

    /// `herald.route.history`: history reads from edges to routing.
    pub fn route_history(&self) -> String {
        format!("{}.route.history", self.prefix)
    }

    /// `herald.hist.<channel>`: the history stream's subject of a channel.
    pub fn history(&self, channel: &Channel) -> String {
        format!("{}.hist.{}", self.prefix, channel.subject_token())
    }

    /// `herald.presence.<edge>`.
    pub fn presence(&self, edge: &str) -> String {
        format!("{}.presence.{edge}", self.prefix)
    }

    /// `herald.notify.jobs`: push jobs for notify (stream `<P>_NOTIFY`).
    pub fn notify_jobs(&self) -> String {
        format!("{}.notify.jobs", self.prefix)
    }

    /// `herald.presence.*`: every edge's presence reports.
    pub fn presence_all(&self) -> String {
        format!("{}.presence.*", self.prefix)
    }

    /// `herald.ctl.presence.snapshot.<edge>`: a presence replica asks an
    /// edge for its whole state (request/reply).
    pub fn presence_snapshot(&self, edge: &str) -> String {
        format!("{}.ctl.presence.snapshot.{edge}", self.prefix)
    }

    /// `herald.ctl.presence.resync`: a presence replica that just started
    /// asks every edge for a heartbeat now.
    pub fn presence_resync(&self) -> String {
        format!("{}.ctl.presence.resync", self.prefix)
    }

    /// `herald.notify.dead`: push jobs given up on (stream `<P>_NOTIFY_DEAD`).
    pub fn notify_dead(&self) -> String {
        format!("{}.notify.dead", self.prefix)
    }

    /// `herald.lease.presence`: the lease of the presence replica that
    /// announces join/leave (a one-message JetStream stream).
    pub fn presence_lease(&self) -> String {
        format!("{}.lease.presence", self.prefix)
    }

    /// `herald.ctl.disconnect`: close a user's connections on every edge.
    pub fn ctl_disconnect(&self) -> String {
        format!("{}.ctl.disconnect", self.prefix)
    }

    /// A JetStream stream name (`HERALD_HISTORY` for the default prefix).
    pub fn stream_name(&self, what: &str) -> String {
        format!(
            "{}_{what}",
            self.prefix.to_ascii_uppercase().replace('-', "_")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let s = Subjects::new("herald");
        let c = Channel::new("chat:room.42").unwrap();
        assert_eq!(s.live(&c), "herald.live.chat:room%42");
        assert_eq!(s.channel_of_live(&s.live(&c)).unwrap(), c);
        assert!(s.channel_of_live("other.live.x").is_err());
        assert_eq!(s.route_publish(), "herald.route.publish");
        assert_eq!(s.stream_name("HISTORY"), "HERALD_HISTORY");
        assert_eq!(Subjects::new("t-1a").stream_name("NOTIFY"), "T_1A_NOTIFY");
    }
}
