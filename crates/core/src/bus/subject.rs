//! NATS subject syntax: dot-separated tokens; in subscriptions `*` matches
//! one token and a final `>` matches one or more.

use super::BusError;

/// Checks a subject for publishing (`wildcards == false`) or subscribing.
pub fn validate(subject: &str, wildcards: bool) -> Result<(), BusError> {
    let invalid = || BusError::InvalidSubject(subject.to_owned());
    if subject.is_empty() || subject.chars().any(char::is_whitespace) {
        return Err(invalid());
    }
    let mut tokens = subject.split('.').peekable();
    while let Some(token) = tokens.next() {
        let last = tokens.peek().is_none();
        match token {
            "" => return Err(invalid()),
            "*" | ">" if !wildcards => return Err(invalid()),
            ">" if !last => return Err(invalid()),
            _ => {}
        }
    }
    Ok(())
}

/// Whether `pattern` has a wildcard token.
pub fn has_wildcard(pattern: &str) -> bool {
    pattern.split('.').any(|t| t == "*" || t == ">")
}

/// Whether the (valid) `subject` matches the (valid) `pattern`.
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for p in pattern.split('.') {
        match (p, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (p, Some(s)) if p == s => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(validate("a.b.c", false).is_ok());
        assert!(validate("a.*.c", true).is_ok());
        assert!(validate("a.>", true).is_ok());
        for bad in ["", "a..b", ".a", "a.", "a b", "a.*", "a.>"] {
            assert!(validate(bad, false).is_err(), "{bad:?}");
        }
        assert!(validate("a.>.b", true).is_err());
    }

    #[test]
    fn matching() {
        assert!(matches("a.b", "a.b"));
        assert!(!matches("a.b", "a.b.c"));
        assert!(!matches("a.b.c", "a.b"));
        assert!(matches("a.*", "a.b"));
        assert!(!matches("a.*", "a.b.c"));
        assert!(matches("a.*.c", "a.x.c"));
        assert!(matches("a.>", "a.b"));
        assert!(matches("a.>", "a.b.c.d"));
        assert!(!matches("a.>", "a"));
        assert!(matches(">", "x"));
        assert!(!matches("a.*", "b.c"));
    }
}
