//! The WebSocket/HTTP command decoder (`decode_command`): never panics;
//! an error keeps the frame's `id` whenever the frame is a JSON object whose
//! `id` is a non-negative integer; an accepted frame is one object with
//! exactly one command besides `id`, and every command but `pong` has an id.
#![no_main]

use herald_protocol::{Command, decode_command};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let decoded = decode_command(text);
    // What a plain JSON parser reads; `None` when it is no JSON object.
    let object = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    };
    let json_id = object
        .as_ref()
        .and_then(|m| m.get("id"))
        .and_then(Value::as_u64);
    match decoded {
        Err(e) => {
            if let Some(id) = json_id {
                assert_eq!(
                    e.id,
                    Some(id),
                    "the error {:?} lost the id of {text:?}",
                    e.message
                );
            }
        }
        Ok(frame) => {
            if !matches!(frame.command, Command::Pong) {
                assert!(
                    frame.id.is_some(),
                    "{} accepted without an id",
                    frame.command.name()
                );
            }
            if let Some(map) = object {
                assert_eq!(frame.id, json_id, "another id than the JSON says: {text:?}");
                let commands: Vec<&String> = map.keys().filter(|k| *k != "id").collect();
                assert_eq!(
                    commands,
                    [frame.command.name()],
                    "decoded as another command than the frame names: {text:?}"
                );
            }
        }
    }
});
