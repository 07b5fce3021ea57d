//! How a publication travels live, on `<p>.live.<channel>`: as the exact
//! bytes of the client push (`{"pub":{…}}`), so an edge never re-encodes
//! it, with offset and epoch in headers. (What edges and routing ask each
//! other is in `herald_protocol::route`.)

use bytes::Bytes;
use herald_protocol::Publication;
use serde::Serialize;

use crate::bus::Headers;
use crate::subjects::{HEADER_EPOCH, HEADER_OFFSET, HEADER_TS};

/// Encodes a publication for `herald.live.<channel>`: the push frame a
/// client receives, with offset and epoch also in headers so an edge can
/// order publications without parsing them.
pub fn live_message(publication: &Publication) -> (Headers, Bytes) {
    let headers = Headers::new()
        .with(HEADER_OFFSET, publication.offset.to_string())
        .with(HEADER_EPOCH, publication.epoch.as_str())
        .with(HEADER_TS, publication.ts.to_string());
    let frame = herald_protocol::encode(&PushRef::Pub(publication));
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
    use herald_protocol::{Channel, Push};
    use serde_json::value::RawValue;

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
        assert_eq!(bytes, herald_protocol::encode(&Push::Pub(p)).into_bytes());
    }
}
