//! Server API keys, compared in constant time.

use std::sync::Arc;

/// The server API keys a service accepts (`Authorization: Bearer <key>`).
#[derive(Clone)]
pub struct ApiKeys {
    keys: Arc<[Vec<u8>]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.keys.len())
    }
}

impl ApiKeys {
    /// Accepts exactly `keys`.
    pub fn new(keys: Vec<String>) -> Self {
        ApiKeys {
            keys: keys.into_iter().map(String::into_bytes).collect(),
        }
    }

    /// Whether `presented` is one of the keys. Every key is compared in full,
    /// so the time taken does not reveal how much of a key matched.
    pub fn accepts(&self, presented: &str) -> bool {
        let presented = presented.as_bytes();
        self.keys
            .iter()
            .fold(false, |found, key| found | constant_time_eq(key, presented))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_configured_keys() {
        let keys = ApiKeys::new(vec!["key-one-1".into(), "key-two-2".into()]);
        assert!(keys.accepts("key-one-1"));
        assert!(keys.accepts("key-two-2"));
        assert!(!keys.accepts("key-one-2"));
        assert!(!keys.accepts("key-one-1 "));
        assert!(!keys.accepts(""));
        assert!(!ApiKeys::new(vec![]).accepts(""));
    }
}
