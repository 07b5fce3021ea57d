//! Channel names: validation, namespaces, the `#` user boundary, and the
//! reversible encoding into one NATS subject token.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest channel name, in bytes.
pub const MAX_CHANNEL_LEN: usize = 255;

/// The character that separates the namespace from the rest of the name.
const NAMESPACE_SEPARATOR: char = ':';
/// The character that starts the user boundary (`dm:#alice,bob`).
const USER_BOUNDARY: char = '#';
/// The separator between users after the boundary.
const USER_SEPARATOR: char = ',';
/// `.` separates NATS subject tokens, so a channel's `.` is written as this
/// character (which is not allowed in a channel name, so the mapping is
/// reversible).
const SUBJECT_DOT: char = '%';

/// Why a text is not a channel name (or a subject token not an encoded one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The name is empty.
    #[error("channel name is empty")]
    Empty,
    /// The name is longer than [`MAX_CHANNEL_LEN`] bytes: its length.
    #[error("channel name is {0} bytes long; the limit is {MAX_CHANNEL_LEN}")]
    TooLong(usize),
    /// A character outside the allowed set, and its byte offset.
    #[error(
        "channel name has the character {0:?} at byte {1}; allowed are A-Z a-z 0-9 and _ - : . @ = , #"
    )]
    InvalidChar(char, usize),
    /// The name starts with `:`.
    #[error("channel name has an empty namespace before ':'")]
    EmptyNamespace,
    /// A `#` with nothing after it, or an empty user between commas.
    #[error("channel name has a '#' user boundary with an empty user list or an empty user")]
    EmptyUser,
    /// More than one `#`.
    #[error("channel name has more than one '#' user boundary")]
    SecondBoundary,
    /// A NATS subject token that no channel encodes to.
    #[error("subject token {0:?} is not an encoded channel")]
    BadSubjectToken(String),
}

/// A validated channel name.
///
/// Cheap to clone (the name is shared), so it can be used as a map key in
/// every hub without copying the string.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Channel(Arc<str>);

fn allowed_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '.' | '@' | '=' | ',' | '#')
}

impl Channel {
    /// Validates `name` per the protocol: 1–255 bytes of `A-Za-z0-9_-:.@=,#`,
    /// a non-empty namespace when there is a `:`, and at most one `#` followed
    /// by a non-empty, comma-separated list of users.
    pub fn new(name: &str) -> Result<Self, ChannelError> {
        if name.is_empty() {
            return Err(ChannelError::Empty);
        }
        if name.len() > MAX_CHANNEL_LEN {
            return Err(ChannelError::TooLong(name.len()));
        }
        if let Some((at, c)) = name.char_indices().find(|(_, c)| !allowed_char(*c)) {
            return Err(ChannelError::InvalidChar(c, at));
        }
        if name.starts_with(NAMESPACE_SEPARATOR) {
            return Err(ChannelError::EmptyNamespace);
        }
        if let Some((_, users)) = name.split_once(USER_BOUNDARY) {
            if users.contains(USER_BOUNDARY) {
                return Err(ChannelError::SecondBoundary);
            }
            if users.split(USER_SEPARATOR).any(str::is_empty) {
                return Err(ChannelError::EmptyUser);
            }
        }
        Ok(Channel(Arc::from(name)))
    }

    /// The personal channel of `user` (`#alice`), to which every connection of
    /// that user is subscribed automatically.
    pub fn personal(user: &str) -> Result<Self, ChannelError> {
        Channel::new(&format!("{USER_BOUNDARY}{user}"))
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The namespace: the part before the first `:`, if the name has one
    /// before any `#`. `chat:room:42` → `chat`; `lobby` and `#alice` → none.
    pub fn namespace(&self) -> Option<&str> {
        let head = self.0.split(USER_BOUNDARY).next().unwrap_or_default();
        head.split_once(NAMESPACE_SEPARATOR).map(|(ns, _)| ns)
    }

    /// The users after the `#` boundary, or `None` when the channel has none.
    pub fn boundary_users(&self) -> Option<impl Iterator<Item = &str>> {
        self.0
            .split_once(USER_BOUNDARY)
            .map(|(_, users)| users.split(USER_SEPARATOR))
    }

    /// Whether the name restricts who may join it to the listed users.
    pub fn has_user_boundary(&self) -> bool {
        self.0.contains(USER_BOUNDARY)
    }

    /// Whether `user` is listed after the `#` boundary.
    pub fn boundary_admits(&self, user: &str) -> bool {
        self.boundary_users()
            .is_some_and(|mut users| users.any(|u| u == user))
    }

    /// Encodes the name as one NATS subject token. The result never holds
    /// `.`, `*`, `>` or whitespace, and [`Channel::from_subject_token`]
    /// reverses it exactly.
    pub fn subject_token(&self) -> String {
        self.0.replace('.', SUBJECT_DOT.encode_utf8(&mut [0; 4]))
    }

    /// The channel a [`Channel::subject_token`] encodes; an error for a token
    /// that is not one.
    pub fn from_subject_token(token: &str) -> Result<Self, ChannelError> {
        if token.contains('.') {
            return Err(ChannelError::BadSubjectToken(token.to_owned()));
        }
        Channel::new(&token.replace(SUBJECT_DOT, "."))
            .map_err(|_| ChannelError::BadSubjectToken(token.to_owned()))
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Channel({:?})", &*self.0)
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Channel {
    type Err = ChannelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Channel::new(s)
    }
}

impl AsRef<str> for Channel {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for Channel {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Channel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Channel::new(&s).map_err(serde::de::Error::custom)
    }
}

/// A permission pattern from a token's `channels` or `publish` claim:
/// an exact name, or a prefix followed by `*` (`chat:*`), or `*` alone.
pub fn pattern_matches(pattern: &str, channel: &Channel) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => channel.as_str().starts_with(prefix),
        None => pattern == channel.as_str(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for ok in [
            "chat:room:42",
            "lobby",
            "dm:#alice,bob",
            "#alice",
            "a.b.c",
            "x@y=z,w-_",
        ] {
            assert!(Channel::new(ok).is_ok(), "{ok} should be valid");
        }
    }

    #[test]
    fn rejects_with_a_reason() {
        assert_eq!(Channel::new(""), Err(ChannelError::Empty));
        assert_eq!(
            Channel::new(&"a".repeat(256)),
            Err(ChannelError::TooLong(256))
        );
        assert_eq!(
            Channel::new("chat room"),
            Err(ChannelError::InvalidChar(' ', 4))
        );
        assert_eq!(
            Channel::new("chat:*"),
            Err(ChannelError::InvalidChar('*', 5))
        );
        assert_eq!(Channel::new("a>b"), Err(ChannelError::InvalidChar('>', 1)));
        assert_eq!(Channel::new("ünï"), Err(ChannelError::InvalidChar('ü', 0)));
        assert_eq!(Channel::new(":x"), Err(ChannelError::EmptyNamespace));
        assert_eq!(Channel::new("dm:#"), Err(ChannelError::EmptyUser));
        assert_eq!(Channel::new("dm:#a,,b"), Err(ChannelError::EmptyUser));
        assert_eq!(Channel::new("dm:#a#b"), Err(ChannelError::SecondBoundary));
        assert!(Channel::new(&"a".repeat(255)).is_ok());
    }

    #[test]
    fn namespace_and_boundary() {
        let c = Channel::new("chat:room:42").unwrap();
        assert_eq!(c.namespace(), Some("chat"));
        assert!(!c.has_user_boundary());
        assert_eq!(Channel::new("lobby").unwrap().namespace(), None);

        let dm = Channel::new("dm:#alice,bob").unwrap();
        assert_eq!(dm.namespace(), Some("dm"));
        assert!(dm.boundary_admits("alice"));
        assert!(dm.boundary_admits("bob"));
        assert!(!dm.boundary_admits("carol"));
        assert!(!dm.boundary_admits("ali"));

        let personal = Channel::personal("alice").unwrap();
        assert_eq!(personal.as_str(), "#alice");
        assert_eq!(personal.namespace(), None);
        assert!(personal.boundary_admits("alice"));
        // a ':' inside the user list is not a namespace separator
        assert_eq!(Channel::new("#a:b").unwrap().namespace(), None);
    }

    #[test]
    fn patterns() {
        let c = Channel::new("chat:room:42").unwrap();
        assert!(pattern_matches("chat:*", &c));
        assert!(pattern_matches("*", &c));
        assert!(pattern_matches("chat:room:42", &c));
        assert!(!pattern_matches("chat:room:4", &c));
        assert!(!pattern_matches("news:*", &c));
    }

    #[test]
    fn serde_validates() {
        let c: Channel = serde_json::from_str("\"chat:a\"").unwrap();
        assert_eq!(c.as_str(), "chat:a");
        let err = serde_json::from_str::<Channel>("\"bad name\"").unwrap_err();
        assert!(err.to_string().contains("' '"), "{err}");
    }

    fn channel_name() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_\\-:.@=,]{1,200}(#[A-Za-z0-9_.]{1,20}(,[A-Za-z0-9_.]{1,20}){0,3})?"
            .prop_filter("valid", |s| Channel::new(s).is_ok())
    }

    proptest! {
        #[test]
        fn subject_token_round_trips_and_is_a_single_token(name in channel_name()) {
            let channel = Channel::new(&name).unwrap();
            let token = channel.subject_token();
            prop_assert!(!token.contains('.'));
            prop_assert!(!token.contains('*'));
            prop_assert!(!token.contains('>'));
            prop_assert!(!token.chars().any(char::is_whitespace));
            prop_assert_eq!(Channel::from_subject_token(&token).unwrap(), channel);
        }

        #[test]
        fn arbitrary_strings_never_panic(s in ".{0,300}") {
            if let Ok(c) = Channel::new(&s) {
                prop_assert_eq!(c.as_str(), s.as_str());
                prop_assert!(s.len() <= MAX_CHANNEL_LEN);
            }
        }
    }
}
