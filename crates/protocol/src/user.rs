//! User ids: what a token's `sub` and the server API's `user` may be. A
//! user id must be a member of a channel's `#` user boundary, so every user
//! has a personal channel (`#alice`) and no id can name a boundary of
//! several users (`alice,bob` would join `#alice,bob`, their private
//! conversation). Checked here, once, for every transport and API.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Longest user id, in bytes: `#` and the id make a channel name.
pub const MAX_USER_ID_LEN: usize = crate::channel::MAX_CHANNEL_LEN - 1;

/// Why a text is not a user id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserIdError {
    /// The id is empty.
    #[error("user id is empty")]
    Empty,
    /// The id is longer than [`MAX_USER_ID_LEN`] bytes: its length.
    #[error("user id is {0} bytes long; the limit is {MAX_USER_ID_LEN}")]
    TooLong(usize),
    /// A character outside the allowed set, and its byte offset.
    #[error("user id has the character {0:?} at byte {1}; allowed are A-Z a-z 0-9 and _ - . @ = :")]
    InvalidChar(char, usize),
}

/// A checked user id. Made only by [`UserId::parse`] (or deserializing,
/// which parses), so a value of this type is always a valid id; cloning
/// shares the text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(Arc<str>);

impl Serialize for UserId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl UserId {
    /// Checks `id` and makes it a user id.
    pub fn parse(id: &str) -> Result<Self, UserIdError> {
        check_user_id(id)?;
        Ok(Self(id.into()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for UserId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

// Hash and Eq are those of the text, so maps keyed by `UserId` are
// looked up by `&str`.
impl std::borrow::Borrow<str> for UserId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for UserId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for UserId {
    type Error = UserIdError;
    fn try_from(id: String) -> Result<Self, UserIdError> {
        check_user_id(&id)?;
        Ok(Self(id.into()))
    }
}

impl From<UserId> for String {
    fn from(id: UserId) -> String {
        id.0.as_ref().to_owned()
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let id = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Self::parse(&id).map_err(serde::de::Error::custom)
    }
}

impl PartialEq<str> for UserId {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for UserId {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

/// Whether `id` may be a user id.
pub fn check_user_id(id: &str) -> Result<(), UserIdError> {
    if id.is_empty() {
        return Err(UserIdError::Empty);
    }
    if id.len() > MAX_USER_ID_LEN {
        return Err(UserIdError::TooLong(id.len()));
    }
    let allowed =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@' | '=' | ':');
    if let Some((at, c)) = id.char_indices().find(|(_, c)| !allowed(*c)) {
        return Err(UserIdError::InvalidChar(c, at));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::Channel;

    #[test]
    fn every_valid_id_has_a_personal_channel_that_names_only_it() {
        for id in [
            "alice",
            "a.b@example.com",
            "user:42",
            "x=y_z-1",
            &"u".repeat(254),
        ] {
            let user = UserId::parse(id).unwrap();
            let json = serde_json::to_string(&user).unwrap();
            assert_eq!(serde_json::from_str::<UserId>(&json).unwrap(), user);
            let personal = Channel::personal(id).unwrap();
            assert_eq!(personal.boundary_users().unwrap().collect::<Vec<_>>(), [id]);
        }
        for bad in ["", "alice,bob", "a#b", "a b", "ü", &"u".repeat(255), "a\n"] {
            assert!(UserId::parse(bad).is_err(), "{bad:?}");
            let json = serde_json::to_string(bad).unwrap();
            assert!(serde_json::from_str::<UserId>(&json).is_err(), "{bad:?}");
        }
    }
}
