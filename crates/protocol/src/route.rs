//! What edges and routing say to each other over the bus: a client publish
//! forwarded for the write path, a history read, and routing's answer.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::channel::Channel;
use crate::{ErrorBody, ErrorCode, StreamPosition, UserId};

/// A client publish, forwarded by the edge that received it.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClientPublish {
    /// The channel to publish to.
    pub channel: Channel,
    /// The publication's JSON, as the client sent it.
    pub data: Box<RawValue>,
    /// The publishing user (`sub` of the token).
    pub user: UserId,
    /// The token's `publish` patterns; routing checks them.
    pub publish: Vec<String>,
    /// The client's idempotency key, if it gave one (scoped to the user by
    /// routing, so users cannot collide).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// A history read asked of routing by an edge (for `subscribe`, and to fill
/// gaps): publications of `channel` after `since`, at most `limit`.
#[derive(Debug, Serialize, Deserialize)]
pub struct HistoryQuery {
    /// The channel to read.
    pub channel: Channel,
    /// Read after this position; `None`: from the oldest kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<StreamPosition>,
    /// At most this many publications.
    pub limit: usize,
}

impl HistoryQuery {
    /// Only where `channel` stands (no publications).
    pub fn position_of(channel: &Channel) -> Self {
        HistoryQuery {
            channel: channel.clone(),
            since: None,
            limit: 0,
        }
    }
}

/// `<p>.ctl.disconnect`: close every connection of a user.
#[derive(Debug, Serialize, Deserialize)]
pub struct DisconnectUser {
    /// The user to disconnect.
    pub user: UserId,
}

/// Routing's answer to an edge: `{"ok":…}` or `{"error":{…}}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteReply<T> {
    /// The request succeeded.
    Ok(T),
    /// The request failed, as it would be answered to the client.
    Error(ErrorBody),
}

impl<T: Serialize + DeserializeOwned> RouteReply<T> {
    /// The reply that carries `result`.
    pub fn from_result(result: Result<T, ErrorBody>) -> Self {
        match result {
            Ok(v) => RouteReply::Ok(v),
            Err(e) => RouteReply::Error(e),
        }
    }

    /// The reply as a bus payload.
    pub fn encode(&self) -> Bytes {
        Bytes::from(crate::encode(self))
    }

    /// The result a bus payload carries; an unreadable payload is an internal
    /// error.
    pub fn decode(bytes: &[u8]) -> Result<T, ErrorBody> {
        match serde_json::from_slice::<RouteReply<T>>(bytes) {
            Ok(RouteReply::Ok(v)) => Ok(v),
            Ok(RouteReply::Error(e)) => Err(e),
            Err(e) => Err(ErrorBody::new(
                ErrorCode::Internal,
                format!("unreadable answer from routing: {e}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_reply_round_trip() {
        type R = RouteReply<StreamPosition>;
        let ok = R::Ok(StreamPosition {
            offset: 3,
            epoch: "e".into(),
        })
        .encode();
        assert_eq!(R::decode(&ok).unwrap().offset, 3);
        let err = R::Error(ErrorBody::new(ErrorCode::PermissionDenied, "no")).encode();
        assert_eq!(
            R::decode(&err).unwrap_err().code,
            ErrorCode::PermissionDenied
        );
        assert_eq!(R::decode(b"junk").unwrap_err().code, ErrorCode::Internal);
    }
}
