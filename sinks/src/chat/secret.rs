//! [`Secret`]: a config string that never prints.

use std::fmt;

/// A secret config value (token, webhook URL, key). `Debug` and `Display` print `***`
/// so it cannot leak through logs, errors or config dumps.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself; callers must not log or format the result.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Replaces every occurrence of the secret in `text` with `***` (a last line of
    /// defence for error texts that might echo a request back).
    pub fn redact(&self, text: &str) -> String {
        if self.0.len() < 4 {
            // Redacting very short strings would mangle unrelated text and they are
            // not credentials anyone uses.
            return text.to_owned();
        }
        text.replace(&self.0, "***")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing test should panic
mod tests {
    use super::*;

    #[test]
    fn never_prints() {
        let s = Secret::new("123:ABCDEF");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(s.redact("x/bot123:ABCDEF/y"), "x/bot***/y");
    }
}
