//! Channel names and user ids: `Channel::new` never panics and accepts
//! exactly the documented names (1–255 bytes of `A-Za-z0-9_-:.@=,#`, a
//! non-empty namespace before a `:`, at most one `#` followed by a
//! non-empty comma-separated list of non-empty users); an accepted name
//! survives the NATS subject-token encoding and serde; a valid user id has a
//! personal channel whose boundary names that user and no other.
#![no_main]

use herald_protocol::channel::{Channel, MAX_CHANNEL_LEN};
use herald_protocol::user::{MAX_USER_ID_LEN, check_user_id};
use libfuzzer_sys::fuzz_target;

/// The documented rules, written out independently of the code under test.
fn documented_valid(name: &str) -> bool {
    let alphabet = |b: u8| b.is_ascii_alphanumeric() || b"_-:.@=,#".contains(&b);
    if name.is_empty() || name.len() > MAX_CHANNEL_LEN || !name.bytes().all(alphabet) {
        return false;
    }
    let (head, users) = match name.find('#') {
        Some(at) => (&name[..at], Some(&name[at + 1..])),
        None => (name, None),
    };
    if head.starts_with(':') {
        return false; // an empty namespace
    }
    match users {
        None => true,
        Some(users) => !users.contains('#') && users.split(',').all(|u| !u.is_empty()),
    }
}

fn documented_user_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_USER_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.@=:".contains(&b))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Channel::new(text) {
        Ok(channel) => {
            assert!(
                documented_valid(text),
                "accepted against the rules: {text:?}"
            );
            assert_eq!(channel.as_str(), text);
            assert!((1..=MAX_CHANNEL_LEN).contains(&text.len()));
            if let Some(ns) = channel.namespace() {
                assert!(!ns.is_empty(), "empty namespace in {text:?}");
                assert!(!ns.contains('#'));
            }
            assert_eq!(channel.has_user_boundary(), text.contains('#'));
            if let Some(users) = channel.boundary_users() {
                let users: Vec<&str> = users.collect();
                assert!(!users.is_empty());
                for user in users {
                    assert!(!user.is_empty() && !user.contains([',', '#']), "{text:?}");
                    assert!(channel.boundary_admits(user));
                }
            }
            let token = channel.subject_token();
            assert!(
                !token.contains(['.', '*', '>']) && !token.chars().any(char::is_whitespace),
                "{token:?} is not one NATS subject token"
            );
            assert_eq!(Channel::from_subject_token(&token).as_ref(), Ok(&channel));
            let json = serde_json::to_string(&channel).unwrap();
            assert_eq!(serde_json::from_str::<Channel>(&json).unwrap(), channel);
        }
        Err(_) => {
            assert!(!documented_valid(text), "refused although valid: {text:?}");
            assert!(
                serde_json::from_str::<Channel>(&serde_json::to_string(text).unwrap()).is_err()
            );
        }
    }
    // Whatever a subject token says, decoding it never panics.
    let _ = Channel::from_subject_token(text);

    match check_user_id(text) {
        Ok(()) => {
            assert!(
                documented_user_id(text),
                "user id accepted against the rules: {text:?}"
            );
            let personal = Channel::personal(text).unwrap_or_else(|e| {
                panic!("the valid user id {text:?} has no personal channel: {e}")
            });
            let users: Vec<&str> = personal.boundary_users().unwrap().collect();
            assert_eq!(users, [text], "#{text} names other users");
            assert!(personal.boundary_admits(text));
            assert_eq!(personal.namespace(), None);
        }
        Err(_) => assert!(
            !documented_user_id(text),
            "user id refused although valid: {text:?}"
        ),
    }
});
