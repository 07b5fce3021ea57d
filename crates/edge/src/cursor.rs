//! Where an HTTP client stands, in one opaque string.
//!
//! - [`Cursor`]: long polling's `cursor=` (and what SDKs pass as
//!   `last_event_id`): base64url JSON of `[[channel, epoch, offset], …]`,
//!   or `{"s":session,"p":[…]}` when it also names the long-poll session
//!   that handed it out.
//! - [`StreamCursor`]: the `id:` of every SSE event. It must say where every
//!   channel of the stream stands, yet costs O(1) per event to update: the
//!   channel names are left out (the stream's URL has them; a hash of the
//!   list makes sure a reconnect asks for the same ones) and an offset is
//!   rewritten in place.

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald_protocol::channel::Channel;
use herald_protocol::{ErrorBody, ErrorCode, StreamPosition};
use serde::{Deserialize, Serialize};

/// Longest cursor accepted, bytes.
const MAX_CURSOR: usize = 64 * 1024;
/// How a [`StreamCursor`] starts.
const STREAM_CURSOR_TAG: &str = "h1.";

fn bad(why: &str) -> ErrorBody {
    ErrorBody::new(ErrorCode::BadRequest, format!("invalid cursor: {why}"))
}

/// Long polling's cursor: a position per channel, and the session that
/// handed it out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    /// The long-poll session that handed it out.
    pub session: Option<String>,
    positions: BTreeMap<Channel, StreamPosition>,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Wire {
    Positions(Vec<(String, String, u64)>),
    Session {
        s: String,
        p: Vec<(String, String, u64)>,
    },
}

impl Cursor {
    /// Where `channel` stands, if the cursor names it.
    pub fn get(&self, channel: &Channel) -> Option<&StreamPosition> {
        self.positions.get(channel)
    }

    /// Moves `channel` to `offset` in `epoch`.
    pub fn set(&mut self, channel: &Channel, offset: u64, epoch: &str) {
        match self.positions.get_mut(channel) {
            Some(p) if p.epoch == epoch => p.offset = offset,
            _ => {
                self.positions.insert(
                    channel.clone(),
                    StreamPosition {
                        offset,
                        epoch: epoch.into(),
                    },
                );
            }
        }
    }

    /// Forgets `channel`.
    pub fn remove(&mut self, channel: &Channel) {
        self.positions.remove(channel);
    }

    /// Whether both say the same of every channel in `channels`.
    pub fn agrees<'a>(
        &self,
        other: &Cursor,
        mut channels: impl Iterator<Item = &'a Channel>,
    ) -> bool {
        channels.all(|c| self.get(c) == other.get(c))
    }

    /// The cursor as clients carry it: base64url JSON.
    pub fn encode(&self) -> String {
        let p: Vec<(String, String, u64)> = self
            .positions
            .iter()
            .map(|(c, p)| (c.to_string(), p.epoch.to_string(), p.offset))
            .collect();
        let wire = match &self.session {
            Some(s) => Wire::Session { s: s.clone(), p },
            None => Wire::Positions(p),
        };
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&wire).unwrap_or_default())
    }

    /// Reads a cursor a client sent back; a bad one is a 100 with the reason.
    pub fn decode(text: &str) -> Result<Cursor, ErrorBody> {
        if text.len() > MAX_CURSOR {
            return Err(bad("too long"));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(text.trim().trim_end_matches('='))
            .map_err(|_| bad("not base64url"))?;
        let wire: Wire = serde_json::from_slice(&bytes).map_err(|_| bad("not a Herald cursor"))?;
        let (session, entries) = match wire {
            Wire::Positions(p) => (None, p),
            Wire::Session { s, p } => (Some(s), p),
        };
        let mut cursor = Cursor {
            session,
            positions: BTreeMap::new(),
        };
        for (channel, epoch, offset) in entries {
            let channel = Channel::new(&channel).map_err(|e| bad(&e.to_string()))?;
            cursor.set(&channel, offset, &epoch);
        }
        Ok(cursor)
    }

    /// Decodes whichever form `text` is: a [`StreamCursor`] for the
    /// stream of `channels`, or a [`Cursor`].
    pub fn decode_any(text: &str, channels: &[Channel]) -> Result<Cursor, ErrorBody> {
        if text.starts_with(STREAM_CURSOR_TAG) {
            StreamCursor::decode(text, channels)
        } else {
            Cursor::decode(text)
        }
    }
}

/// The SSE event id: `h1.<hash of the channel list>.<epoch tag>:<offset>.…`,
/// one slot per channel of the stream in its order. An epoch is written as
/// a tag (a 32-bit hash, 6 characters): a resume compares it with the
/// channel's epoch now — the same, the position stands; another, what was
/// missed is not recoverable — so the id stays small.
pub struct StreamCursor {
    index: HashMap<Channel, usize>,
    slots: Vec<Slot>,
    text: String,
}

struct Slot {
    epoch: String,
    offset: u64,
    /// Where the offset's digits are in `text`, and how many.
    at: usize,
    len: usize,
}

impl StreamCursor {
    /// A cursor over `channels`, each at the start of no known epoch.
    pub fn new(channels: &[Channel]) -> Self {
        let mut cursor = StreamCursor {
            index: channels
                .iter()
                .enumerate()
                .map(|(i, c)| (c.clone(), i))
                .collect(),
            slots: channels
                .iter()
                .map(|_| Slot {
                    epoch: Default::default(),
                    offset: 0,
                    at: 0,
                    len: 0,
                })
                .collect(),
            text: String::new(),
        };
        cursor.render(&list_hash(channels));
        cursor
    }

    /// Moves `channel` to `offset` in `epoch`: in place, unless the epoch
    /// or the number of digits changed (rare), then the whole id is
    /// written again.
    pub fn set(&mut self, channel: &Channel, offset: u64, epoch: &str) {
        let Some(&i) = self.index.get(channel) else {
            return;
        };
        let slot = &mut self.slots[i];
        if slot.epoch == epoch && slot.offset == offset {
            return;
        }
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(offset);
        if slot.epoch == epoch && slot.len == digits.len() {
            slot.offset = offset;
            let range = slot.at..slot.at + slot.len;
            self.text.replace_range(range, digits);
            return;
        }
        slot.epoch = epoch.to_owned();
        slot.offset = offset;
        let hash = self.text[STREAM_CURSOR_TAG.len()..STREAM_CURSOR_TAG.len() + 16].to_owned();
        self.render(&hash);
    }

    /// The id as it goes out in `id:`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn render(&mut self, hash: &str) {
        let mut text = String::with_capacity(STREAM_CURSOR_TAG.len() + 16 + self.slots.len() * 24);
        text.push_str(STREAM_CURSOR_TAG);
        text.push_str(hash);
        for slot in &mut self.slots {
            text.push('.');
            text.push_str(&epoch_tag(&slot.epoch));
            text.push(':');
            let mut digits = itoa::Buffer::new();
            let digits = digits.format(slot.offset);
            slot.at = text.len();
            slot.len = digits.len();
            text.push_str(digits);
        }
        self.text = text;
    }

    /// The positions an id says, for the stream of `channels` (the same
    /// list, in the same order, as the stream that sent it).
    fn decode(text: &str, channels: &[Channel]) -> Result<Cursor, ErrorBody> {
        if text.len() > MAX_CURSOR {
            return Err(bad("too long"));
        }
        let rest = text
            .strip_prefix(STREAM_CURSOR_TAG)
            .ok_or_else(|| bad("not an event id"))?;
        let mut parts = rest.split('.');
        if parts.next() != Some(list_hash(channels).as_str()) {
            return Err(bad(
                "the event id is of a stream of other channels; give those channels, or no id",
            ));
        }
        let mut cursor = Cursor::default();
        for channel in channels {
            let slot = parts.next().ok_or_else(|| bad("too few positions"))?;
            let (tag, offset) = slot.split_once(':').ok_or_else(|| bad("bad position"))?;
            let offset: u64 = offset.parse().map_err(|_| bad("bad offset"))?;
            if tag.is_empty() {
                // no epoch: nothing published yet, nothing to resume
                continue;
            }
            let is_tag = tag.len() == TAG_LEN
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !is_tag {
                return Err(bad("bad epoch"));
            }
            cursor.set(channel, offset, &format!("{TAGGED}{tag}"));
        }
        if parts.next().is_some() {
            return Err(bad("too many positions"));
        }
        Ok(cursor)
    }
}

/// How a position decoded from an SSE id names its epoch: by tag. Epochs
/// themselves never start with it.
const TAGGED: &str = "~";
const TAG_LEN: usize = 6;

/// An epoch's tag in SSE ids (empty for no epoch).
fn epoch_tag(epoch: &str) -> String {
    if epoch.is_empty() {
        return String::new();
    }
    let mut hash: u32 = 0x811c_9dc5;
    for byte in epoch.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    URL_SAFE_NO_PAD.encode(hash.to_be_bytes())
}

/// `since` with its epoch as `latest` names it: a position decoded from an
/// SSE id carries only its epoch's tag, which stands for `latest`'s epoch
/// when the tags agree (otherwise it stays a foreign epoch: not
/// recoverable).
pub fn resolve(since: &StreamPosition, latest: &StreamPosition) -> StreamPosition {
    match since.epoch.strip_prefix(TAGGED) {
        Some(tag) if tag == epoch_tag(&latest.epoch) => StreamPosition {
            offset: since.offset,
            epoch: latest.epoch.clone(),
        },
        _ => since.clone(),
    }
}

/// FNV-1a over the names: stable across processes and versions, unlike
/// the standard hasher.
fn list_hash(channels: &[Channel]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for channel in channels {
        for byte in channel.as_str().bytes().chain(std::iter::once(b',')) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(name: &str) -> Channel {
        Channel::new(name).unwrap()
    }

    #[test]
    fn round_trip_and_garbage() {
        let mut c = Cursor::default();
        c.set(&ch("chat:a"), 17, "e1");
        c.set(&ch("#bob"), 0, "");
        let text = c.encode();
        assert!(
            text.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        );
        assert_eq!(Cursor::decode(&text).unwrap(), c);
        c.session = Some("s1".into());
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        for bad in [
            "",
            "!!!",
            "e30",
            &URL_SAFE_NO_PAD.encode(b"[[\"bad name\",\"e\",1]]"),
        ] {
            assert!(Cursor::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_stream_cursor_updates_in_place_and_decodes_for_its_channels() {
        let channels = [ch("a"), ch("b"), ch("#u")];
        let mut c = StreamCursor::new(&channels);
        c.set(&channels[0], 5, "ep1");
        c.set(&channels[1], 9, "ep2");
        let before = c.as_str().len();
        c.set(&channels[1], 8, "ep2"); // same width: in place
        assert_eq!(c.as_str().len(), before);
        c.set(&channels[1], 10, "ep2"); // one digit more
        c.set(&channels[0], 1, "ep9"); // a new epoch
        let decoded = Cursor::decode_any(c.as_str(), &channels).unwrap();
        let latest = |epoch: &str| StreamPosition {
            offset: 99,
            epoch: epoch.into(),
        };
        let at = |i: usize, epoch: &str| {
            decoded
                .get(&channels[i])
                .map(|p| resolve(p, &latest(epoch)))
        };
        let position = |offset, epoch: &str| StreamPosition {
            offset,
            epoch: epoch.into(),
        };
        assert_eq!(at(0, "ep9"), Some(position(1, "ep9")));
        assert_eq!(at(1, "ep2"), Some(position(10, "ep2")));
        // the channel's epoch changed since: the position is of another one
        assert_ne!(at(1, "ep3"), Some(position(10, "ep3")));
        assert_eq!(decoded.get(&channels[2]), None, "never positioned");
        // another channel list: refused, not misread
        assert!(Cursor::decode_any(c.as_str(), &channels[..2]).is_err());
        assert!(Cursor::decode_any("h1.zz", &channels).is_err());
    }
}
