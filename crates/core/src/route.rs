//! What edges and routing say to each other over the bus: a client publish
//! forwarded for the write path, and routing's answer. Live publications
//! travel as the exact bytes of the client push (`{"pub":{…}}`), so an edge
//! never re-encodes them.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::bus::Headers;
use crate::channel::Channel;
use crate::protocol::{ErrorBody, ErrorCode, Publication, StreamPosition};
use crate::subjects::{HEADER_EPOCH, HEADER_OFFSET};

/// A client publish, forwarded by the edge that received it.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClientPublish {
    pub channel: Channel,
    pub data: Box<RawValue>,
    /// The publishing user (`sub` of the token).
    pub user: String,
    /// The token's `publish` patterns; routing checks them.
    pub publish: Vec<String>,
}

/// A history read asked of routing by an edge (for `subscribe`, and to fill
/// gaps): publications of `channel` after `since`, at most `limit`.
#[derive(Debug, Serialize, Deserialize)]
pub struct HistoryQuery {
    pub channel: Channel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<StreamPosition>,
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
    pub user: String,
}

/// Routing's answer to an edge: `{"ok":…}` or `{"error":{…}}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteReply<T> {
    Ok(T),
    Error(ErrorBody),
}

impl<T: Serialize + DeserializeOwned> RouteReply<T> {
    pub fn from_result(result: Result<T, ErrorBody>) -> Self {
        match result {
            Ok(v) => RouteReply::Ok(v),
            Err(e) => RouteReply::Error(e),
        }
    }

    pub fn encode(&self) -> Bytes {
        Bytes::from(crate::protocol::encode(self))
    }

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

/// Encodes a publication for `herald.live.<channel>`: the push frame a
/// client receives, with offset and epoch also in headers so an edge can
/// order publications without parsing them.
pub fn live_message(publication: &Publication) -> (Headers, Bytes) {
    let headers = Headers::new()
        .with(HEADER_OFFSET, publication.offset.to_string())
        .with(HEADER_EPOCH, publication.epoch.clone());
    let frame = crate::protocol::encode(&PushRef::Pub(publication));
    (headers, Bytes::from(frame))
}

/// Serializes like [`Push`] without cloning the publication.
#[derive(Serialize)]
enum PushRef<'a> {
    #[serde(rename = "pub")]
    Pub(&'a Publication),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Push;

    #[test]
    fn live_message_is_the_client_push() {
        let p = Publication {
            channel: Channel::new("a").unwrap(),
            offset: 7,
            epoch: "e".into(),
            data: RawValue::from_string("{\"x\":1}".into()).unwrap(),
            from: None,
            ts: 1,
        };
        let (headers, bytes) = live_message(&p);
        assert_eq!(headers.get(HEADER_OFFSET), Some("7"));
        assert_eq!(headers.get(HEADER_EPOCH), Some("e"));
        assert_eq!(bytes, crate::protocol::encode(&Push::Pub(p)).into_bytes());
    }

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
