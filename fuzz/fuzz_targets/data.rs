//! The JSON `data` check (`check_data`, nesting limit 64, no lone
//! surrogates): never panics, and agrees with a real JSON parser: JSON that
//! `serde_json` reads, nested at most 64 deep and with no lone-surrogate
//! escape, is accepted; deeper JSON is refused as too deep; JSON with a
//! lone surrogate is refused.
#![no_main]

use herald_protocol::{DataError, check_data};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use serde_json::value::RawValue;

const MAX_DEPTH: usize = 64;

/// Nesting depth: a scalar is 0, an array or object one more than its
/// deepest member.
fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Whether some string of `json` (valid JSON) holds a `\uD800`–`\uDFFF`
/// escape that is not half of a high-then-low pair.
fn has_lone_surrogate(json: &str) -> bool {
    let b = json.as_bytes();
    let unit = |at: usize| -> Option<u16> {
        (b.get(at) == Some(&b'\\') && b.get(at + 1) == Some(&b'u'))
            .then(|| json.get(at + 2..at + 6))
            .flatten()
            .and_then(|hex| u16::from_str_radix(hex, 16).ok())
    };
    let (mut i, mut in_string) = (0, false);
    while i < b.len() {
        match (in_string, b[i]) {
            (false, b'"') => in_string = true,
            (true, b'"') => in_string = false,
            (true, b'\\') => {
                if let Some(u) = unit(i) {
                    match u {
                        0xD800..=0xDBFF => match unit(i + 6) {
                            Some(0xDC00..=0xDFFF) => i += 6,
                            _ => return true,
                        },
                        0xDC00..=0xDFFF => return true,
                        _ => {}
                    }
                    i += 6;
                    continue;
                }
                i += 1; // the escaped character
            }
            _ => {}
        }
        i += 1;
    }
    false
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let checked = check_data(text, MAX_DEPTH);
    // What Herald checks is JSON that already parsed as a `RawValue`, which
    // (unlike `Value`) lets lone surrogates through.
    let value = serde_json::from_str::<Value>(text);
    if value.is_err() && serde_json::from_str::<Box<RawValue>>(text).is_err() {
        return;
    }
    if has_lone_surrogate(text) {
        assert!(checked.is_err(), "a lone surrogate accepted: {text:?}");
        return;
    }
    let Ok(value) = value else {
        return;
    };
    let depth = depth(&value);
    if depth > MAX_DEPTH {
        assert!(
            matches!(checked, Err(DataError::TooDeep(..))),
            "JSON nested {depth} deep got {checked:?}"
        );
    } else {
        assert_eq!(
            checked,
            Ok(()),
            "valid JSON nested {depth} deep refused: {text:?}"
        );
    }
});
