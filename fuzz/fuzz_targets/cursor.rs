//! The long-poll / SSE cursors (`herald_edge::Cursor`, `StreamCursor`).
//!
//! Input, by its first byte:
//! - `j`: the rest is the JSON inside a long-poll cursor; it is
//!   base64url-encoded here so the fuzzer can mutate the JSON itself;
//! - `o`: the rest is a list of `set(channel, offset, epoch)` operations on
//!   a `StreamCursor` (the SSE event id), see [`ops`];
//! - anything else: the whole input is a cursor as a client sends it.
//!
//! Properties: decoding never panics; whatever decodes re-encodes to a
//! cursor that decodes to the same; a `StreamCursor` always decodes to
//! exactly the last position set for each of its channels, once its epoch
//! tag is resolved against that epoch (a position in the empty epoch is
//! "never positioned": no position).
#![no_main]

use std::collections::BTreeMap;
use std::sync::LazyLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald_protocol::channel::Channel;
use herald_protocol::StreamPosition;
use herald_edge::cursor::resolve;
use herald_edge::{Cursor, StreamCursor};
use libfuzzer_sys::fuzz_target;

/// The stream's channels, in its order.
static CHANNELS: LazyLock<Vec<Channel>> = LazyLock::new(|| {
    ["chat:lobby", "#alice", "dm:#alice,bob", "a.b.c"]
        .into_iter()
        .map(|name| Channel::new(name).unwrap())
        .collect()
});
/// A channel that is not in the stream: setting it changes nothing.
static STRANGER: LazyLock<Channel> = LazyLock::new(|| Channel::new("news:other").unwrap());

const MAX_OPS: usize = 64;

/// Epochs to pick from (besides arbitrary ones from the input).
const EPOCHS: [&str; 8] = ["", "e1", "e2", "Xk3-9_aQ", "é.:=", "a.b", "\0", "0"];

/// `decode` and `decode_any` never panic, and what decodes round-trips.
fn decode_text(text: &str) {
    if let Ok(cursor) = Cursor::decode(text) {
        round_trip(&cursor);
    }
    if let Ok(cursor) = Cursor::decode_any(text, &CHANNELS) {
        round_trip(&cursor);
    }
}

fn round_trip(cursor: &Cursor) {
    let text = cursor.encode();
    let again = Cursor::decode(&text)
        .unwrap_or_else(|e| panic!("{cursor:?} encodes to {text:?}, which does not decode: {e:?}"));
    assert_eq!(&again, cursor, "round trip through {text:?}");
    // A long-poll cursor is never taken for an SSE event id.
    assert_eq!(Cursor::decode_any(&text, &CHANNELS).as_ref(), Ok(cursor));
}

/// Each operation: a channel byte (which of [`CHANNELS`], or the stranger),
/// an epoch byte (one of [`EPOCHS`], or with the high bit set the next
/// `byte & 15` input bytes), and an offset byte: its low nibble is how many
/// little-endian offset bytes follow (0–8). At most [`MAX_OPS`] are applied,
/// each checked, so an input costs microseconds, not milliseconds.
fn ops(mut input: &[u8]) {
    let mut stream = StreamCursor::new(&CHANNELS);
    let mut expected: BTreeMap<usize, (u64, String)> = BTreeMap::new();
    check_stream(&stream, &expected, true);
    for _ in 0..MAX_OPS {
        if input.len() < 3 {
            break;
        }
        let head = take(3, &mut input);
        let which = usize::from(head[0]) % (CHANNELS.len() + 1);
        let epoch = if head[1] & 0x80 != 0 {
            String::from_utf8_lossy(take(usize::from(head[1] & 15), &mut input)).into_owned()
        } else {
            EPOCHS[usize::from(head[1]) % EPOCHS.len()].to_owned()
        };
        let mut digits = [0u8; 8];
        let bytes = take(usize::from(head[2] & 15).min(8), &mut input);
        digits[..bytes.len()].copy_from_slice(bytes);
        let offset = u64::from_le_bytes(digits);
        match CHANNELS.get(which) {
            Some(channel) => {
                stream.set(channel, offset, &epoch);
                expected.insert(which, (offset, epoch));
            }
            None => stream.set(&STRANGER, offset, &epoch),
        }
        check_stream(&stream, &expected, false);
    }
    check_stream(&stream, &expected, true);
}

/// The next `n` bytes of `input` (fewer at its end).
fn take<'a>(n: usize, input: &mut &'a [u8]) -> &'a [u8] {
    let (head, tail) = input.split_at(n.min(input.len()));
    *input = tail;
    head
}

/// Whether `stream` decodes to `expected`; `fully`: also that the decoded
/// cursor round-trips and that the id is refused for another channel list.
fn check_stream(stream: &StreamCursor, expected: &BTreeMap<usize, (u64, String)>, fully: bool) {
    let text = stream.as_str();
    let decoded = Cursor::decode_any(text, &CHANNELS)
        .unwrap_or_else(|e| panic!("the stream cursor {text:?} does not decode: {e:?}"));
    for (i, channel) in CHANNELS.iter().enumerate() {
        let want = match expected.get(&i) {
            None => None,
            Some((_, epoch)) if epoch.is_empty() => None,
            Some((offset, epoch)) => Some(StreamPosition {
                offset: *offset,
                epoch: epoch.as_str().into(),
            }),
        };
        // the id names epochs by tag: the channel's epoch now resolves it
        let got = decoded.get(channel).map(|p| match &want {
            Some(latest) => resolve(p, latest),
            None => p.clone(),
        });
        assert_eq!(got, want, "{channel} in {text:?}");
    }
    assert!(decoded.get(&STRANGER).is_none());
    assert_eq!(decoded.session, None);
    if !fully {
        return;
    }
    round_trip(&decoded);
    // The same id for a stream of other channels is refused, not misread.
    assert!(Cursor::decode_any(text, &CHANNELS[..CHANNELS.len() - 1]).is_err());
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((b'j', json)) => decode_text(&URL_SAFE_NO_PAD.encode(json)),
        Some((b'o', rest)) => ops(rest),
        _ => decode_text(&String::from_utf8_lossy(data)),
    }
});
