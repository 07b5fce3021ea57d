//! What edges tell the presence service.
//!
//! Each edge tells every presence replica what changes among its
//! connections, on `<p>.presence.<edge>`: batches of changes with
//! contiguous sequence numbers, and a heartbeat with a digest of its whole
//! state. A replica that sees a gap, a wrong digest or a new incarnation asks
//! the edge for a snapshot (`<p>.ctl.presence.snapshot.<edge>`).

use serde::{Deserialize, Serialize};

use crate::channel::Channel;
use crate::user::UserId;
/// How a client is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// WebSocket.
    Ws,
    /// Server-Sent Events.
    Sse,
    /// Long polling.
    Poll,
}

impl Transport {
    /// Its name on the wire and in metrics (`ws`, `sse`, `poll`).
    pub fn name(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Sse => "sse",
            Transport::Poll => "poll",
        }
    }
}

/// One change among an edge's connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    /// A connection was accepted.
    Connect {
        /// The connection's id on its edge.
        conn: u64,
        /// The user it is for.
        user: UserId,
        /// How it is connected.
        transport: Transport,
    },
    /// A connection closed (its subscriptions go with it).
    Disconnect {
        /// The connection's id on its edge.
        conn: u64,
    },
    /// A connection subscribed to a channel.
    Subscribe {
        /// The connection's id on its edge.
        conn: u64,
        /// The channel.
        channel: Channel,
    },
    /// A connection left a channel.
    Unsubscribe {
        /// The connection's id on its edge.
        conn: u64,
        /// The channel.
        channel: Channel,
    },
}

/// One connection in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionState {
    /// The connection's id on its edge.
    pub conn: u64,
    /// The user it is for.
    pub user: UserId,
    /// How it is connected.
    pub transport: Transport,
    /// The channels it is subscribed to.
    pub channels: Vec<Channel>,
}

/// What an edge publishes on `<p>.presence.<edge>` (and answers a snapshot
/// request with).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Report {
    /// Changes numbered `first_seq`, `first_seq + 1`, …
    Changes {
        /// The reporting edge's node id.
        edge: String,
        /// The random id of this run of the edge: a new one means a restart.
        incarnation: u64,
        /// The number of the first change.
        first_seq: u64,
        /// The changes, in order.
        changes: Vec<Change>,
    },
    /// The edge's whole state in brief, every heartbeat interval.
    Heartbeat {
        /// The reporting edge's node id.
        edge: String,
        /// The random id of this run of the edge.
        incarnation: u64,
        /// The number of the last change reported.
        seq: u64,
        /// The digest of the whole state after that change.
        digest: u64,
        /// How many connections the edge holds.
        connections: u64,
    },
    /// The edge's whole state, as of change `seq`.
    Snapshot {
        /// The reporting edge's node id.
        edge: String,
        /// The random id of this run of the edge.
        incarnation: u64,
        /// The number of the last change the snapshot includes.
        seq: u64,
        /// Every connection the edge holds.
        connections: Vec<ConnectionState>,
    },
}

/// FNV-1a: a hash both sides compute the same way, in every process.
fn fnv(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.iter().chain(&[0xff]) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// The digest of a state is the XOR of these terms, one per connection and
/// one per subscription, so either side can keep it up to date change by
/// change.
pub fn digest_of_connection(conn: u64, user: &str, transport: Transport) -> u64 {
    fnv(&[
        &conn.to_le_bytes(),
        user.as_bytes(),
        transport.name().as_bytes(),
    ])
}

/// The digest term of one subscription (see [`digest_of_connection`]).
pub fn digest_of_subscription(conn: u64, channel: &Channel) -> u64 {
    fnv(&[b"sub", &conn.to_le_bytes(), channel.as_str().as_bytes()])
}

/// The digest of a whole snapshot.
pub fn digest_of_snapshot(connections: &[ConnectionState]) -> u64 {
    connections.iter().fold(0, |digest, c| {
        c.channels.iter().fold(
            digest ^ digest_of_connection(c.conn, &c.user, c.transport),
            |d, ch| d ^ digest_of_subscription(c.conn, ch),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_order_independent_and_reversible() {
        let a = ConnectionState {
            conn: 1,
            user: UserId::parse("alice").unwrap(),
            transport: Transport::Ws,
            channels: vec![Channel::new("x").unwrap(), Channel::new("y").unwrap()],
        };
        let b = ConnectionState {
            conn: 2,
            user: UserId::parse("bob").unwrap(),
            transport: Transport::Sse,
            channels: vec![],
        };
        let ab = digest_of_snapshot(&[a.clone(), b.clone()]);
        assert_eq!(ab, digest_of_snapshot(&[b.clone(), a.clone()]));
        // applying "bob disconnects" as a change gives the digest of the rest
        assert_eq!(
            ab ^ digest_of_connection(2, "bob", Transport::Sse),
            digest_of_snapshot(&[a])
        );
        assert_ne!(
            digest_of_connection(1, "a", Transport::Ws),
            digest_of_connection(1, "a", Transport::Sse)
        );
    }

    #[test]
    fn reports_have_a_stable_json_form() {
        let r = Report::Changes {
            edge: "e1".into(),
            incarnation: 7,
            first_seq: 1,
            changes: vec![Change::Connect {
                conn: 3,
                user: UserId::parse("alice").unwrap(),
                transport: Transport::Poll,
            }],
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(
            text,
            r#"{"kind":"changes","edge":"e1","incarnation":7,"first_seq":1,"changes":[{"op":"connect","conn":3,"user":"alice","transport":"poll"}]}"#
        );
        assert_eq!(serde_json::from_str::<Report>(&text).unwrap(), r);
    }
}
