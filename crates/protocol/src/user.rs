//! User ids: what a token's `sub` and the server API's `user` may be. A
//! user id must be a member of a channel's `#` user boundary, so every user
//! has a personal channel (`#alice`) and no id can name a boundary of
//! several users (`alice,bob` would join `#alice,bob`, their private
//! conversation). Checked here, once, for every transport and API.

/// Longest user id, in bytes: `#` and the id make a channel name.
pub const MAX_USER_ID_LEN: usize = crate::channel::MAX_CHANNEL_LEN - 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserIdError {
    #[error("user id is empty")]
    Empty,
    #[error("user id is {0} bytes long; the limit is {MAX_USER_ID_LEN}")]
    TooLong(usize),
    #[error("user id has the character {0:?} at byte {1}; allowed are A-Z a-z 0-9 and _ - . @ = :")]
    InvalidChar(char, usize),
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
            check_user_id(id).unwrap();
            let personal = Channel::personal(id).unwrap();
            assert_eq!(personal.boundary_users().unwrap().collect::<Vec<_>>(), [id]);
        }
        for bad in ["", "alice,bob", "a#b", "a b", "ü", &"u".repeat(255), "a\n"] {
            assert!(check_user_id(bad).is_err(), "{bad:?}");
        }
    }
}
