//! The opaque cursor of SSE (`id:` / `Last-Event-ID`) and long polling
//! (`cursor=`): one stream position per channel, base64url-encoded JSON.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald_core::channel::Channel;
use herald_core::protocol::{ErrorBody, ErrorCode, StreamPosition};

/// Longest cursor accepted, bytes.
const MAX_CURSOR: usize = 64 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    positions: BTreeMap<Channel, StreamPosition>,
}

impl Cursor {
    pub fn get(&self, channel: &Channel) -> Option<&StreamPosition> {
        self.positions.get(channel)
    }

    pub fn set(&mut self, channel: &Channel, offset: u64, epoch: &str) {
        self.positions.insert(
            channel.clone(),
            StreamPosition {
                offset,
                epoch: epoch.to_owned(),
            },
        );
    }

    pub fn encode(&self) -> String {
        let entries: Vec<(&str, &str, u64)> = self
            .positions
            .iter()
            .map(|(c, p)| (c.as_str(), p.epoch.as_str(), p.offset))
            .collect();
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&entries).unwrap_or_default())
    }

    pub fn decode(text: &str) -> Result<Cursor, ErrorBody> {
        let bad =
            |why: &str| ErrorBody::new(ErrorCode::BadRequest, format!("invalid cursor: {why}"));
        if text.len() > MAX_CURSOR {
            return Err(bad("too long"));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(text.trim().trim_end_matches('='))
            .map_err(|_| bad("not base64url"))?;
        let entries: Vec<(String, String, u64)> =
            serde_json::from_slice(&bytes).map_err(|_| bad("not a Herald cursor"))?;
        let mut cursor = Cursor::default();
        for (channel, epoch, offset) in entries {
            let channel = Channel::new(&channel).map_err(|e| bad(&e.to_string()))?;
            cursor.set(&channel, offset, &epoch);
        }
        Ok(cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let mut c = Cursor::default();
        c.set(&Channel::new("chat:a").unwrap(), 17, "e1");
        c.set(&Channel::new("#bob").unwrap(), 0, "");
        let text = c.encode();
        assert!(
            text.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        );
        assert_eq!(Cursor::decode(&text).unwrap(), c);
        for bad in [
            "",
            "!!!",
            "e30",
            &URL_SAFE_NO_PAD.encode(b"[[\"bad name\",\"e\",1]]"),
        ] {
            assert!(Cursor::decode(bad).is_err(), "{bad:?}");
        }
    }
}
