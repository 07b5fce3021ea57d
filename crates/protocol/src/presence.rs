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
    Ws,
    Sse,
    Poll,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Sse => "sse",
            Transport::Poll => "poll",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    Connect {
        conn: u64,
        user: UserId,
        transport: Transport,
    },
    Disconnect {
        conn: u64,
    },
    Subscribe {
        conn: u64,
        channel: Channel,
    },
    Unsubscribe {
        conn: u64,
        channel: Channel,
    },
}

/// One connection in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionState {
    pub conn: u64,
    pub user: UserId,
    pub transport: Transport,
    pub channels: Vec<Channel>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Report {
    /// Changes numbered `first_seq`, `first_seq + 1`, …
    Changes {
        edge: String,
        incarnation: u64,
        first_seq: u64,
        changes: Vec<Change>,
    },
    /// The edge's whole state in brief, every heartbeat interval.
    Heartbeat {
        edge: String,
        incarnation: u64,
        seq: u64,
        digest: u64,
        connections: u64,
    },
    /// The edge's whole state, as of change `seq`.
    Snapshot {
        edge: String,
        incarnation: u64,
        seq: u64,
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
