//! Where a channel's stream stands: an offset in an epoch. Offsets count a
//! channel's publications from 1; an epoch names one unbroken history of
//! the channel — a new one means what came before is gone (history reset,
//! storage lost), so positions of another epoch cannot be resumed from.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A channel's offset: its publications are numbered 1, 2, … within an
/// epoch; 0 is "before the first".
pub type Offset = u64;

/// One unbroken history of a channel. Empty before the first publication.
/// Cheap to clone (shared), so every delivery and position can carry it.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epoch(Arc<str>);

impl Epoch {
    /// The epoch of this name.
    pub fn new(name: &str) -> Self {
        Epoch(Arc::from(name))
    }

    /// The epoch's name; empty before the channel's first publication.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for Epoch {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Epoch {
    fn from(name: &str) -> Self {
        Epoch::new(name)
    }
}

impl From<String> for Epoch {
    fn from(name: String) -> Self {
        Epoch(Arc::from(name))
    }
}

impl From<Arc<str>> for Epoch {
    fn from(name: Arc<str>) -> Self {
        Epoch(name)
    }
}

impl PartialEq<str> for Epoch {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Epoch {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for Epoch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Epoch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Epoch::from)
    }
}

/// A position in a channel's stream: the last offset seen and the epoch it
/// belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPosition {
    /// The offset of the newest publication seen (0: none yet).
    pub offset: Offset,
    /// The epoch that offset counts in.
    pub epoch: Epoch,
}

impl StreamPosition {
    /// The position at `offset` in `epoch`.
    pub fn new(offset: Offset, epoch: impl Into<Epoch>) -> Self {
        StreamPosition {
            offset,
            epoch: epoch.into(),
        }
    }

    /// "From the very beginning": before the first publication of any epoch
    /// (a client that subscribed to a channel with no history yet).
    pub fn is_start(&self) -> bool {
        self.offset == 0 && self.epoch.is_empty()
    }

    /// How many publications a client at `self` missed of a channel at
    /// `latest`, when that can be said: `None` when `self` is of another
    /// epoch (the start of history counts as any) or ahead of `latest`. The
    /// one rule every resume follows.
    pub fn missed_until(&self, latest: &StreamPosition) -> Option<u64> {
        let same_epoch = self.epoch == latest.epoch || self.is_start();
        if !same_epoch || self.offset > latest.offset {
            return None;
        }
        Some(latest.offset - self.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resume_rule() {
        let at = |offset, epoch: &str| StreamPosition::new(offset, epoch);
        assert_eq!(at(3, "e").missed_until(&at(5, "e")), Some(2));
        assert_eq!(at(5, "e").missed_until(&at(5, "e")), Some(0));
        assert_eq!(
            at(0, "").missed_until(&at(5, "e")),
            Some(5),
            "from the start"
        );
        assert_eq!(
            at(3, "old").missed_until(&at(5, "e")),
            None,
            "another epoch"
        );
        assert_eq!(at(6, "e").missed_until(&at(5, "e")), None, "ahead");
        assert_eq!(
            serde_json::to_string(&at(7, "e1")).unwrap(),
            r#"{"offset":7,"epoch":"e1"}"#
        );
    }
}
