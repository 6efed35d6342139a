//! [`Secret`]: a config string that never prints, and [`SecretFile`]: secrets read from a
//! file (a Kubernetes secret mounted as a volume), re-read on SIGHUP.
//!
//! Deserializing never echoes a value: serde's stock errors quote what they found
//! (`invalid type: string "…", expected a sequence`), which for a secret field is the
//! secret. The visitors here name only the kind of value found.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, SeqAccess, Visitor};

/// A secret config value (token, webhook URL, key, password). `Debug` and `Display`
/// print `***` so it cannot leak through logs, errors or config dumps.
#[derive(Clone, PartialEq, Eq)]
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

/// What a deserializer found instead of a string, named without its value; `field` is
/// the key when the caller knows it.
fn kind_error<E: de::Error>(field: Option<&str>, found: &str, expected: &str) -> E {
    match field {
        Some(f) => E::custom(format_args!(
            "`{f}`: expected {expected}, found {found} (value not shown: it may be a secret)"
        )),
        None => E::custom(format_args!(
            "expected {expected}, found {found} (value not shown: it may be a secret)"
        )),
    }
}

macro_rules! refuse_non_strings {
    ($expected:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Err(kind_error(self.0, "a boolean", $expected))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Err(kind_error(self.0, "an integer", $expected))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Err(kind_error(self.0, "an integer", $expected))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(kind_error(self.0, "a float", $expected))
        }
        fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(kind_error(self.0, "a table", $expected))
        }
    };
}

/// Deserializes one secret; the field name, when known, goes into errors.
struct SecretVisitor(Option<&'static str>);

impl<'de> Visitor<'de> for SecretVisitor {
    type Value = Secret;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Secret, E> {
        Ok(Secret::new(v))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Secret, E> {
        Ok(Secret(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Secret, A::Error> {
        Err(kind_error(self.0, "a list", "a string"))
    }

    refuse_non_strings!("a string");
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SecretVisitor(None))
    }
}

/// Deserializes a list of secrets; the field name, when known, goes into errors.
struct SecretListVisitor(Option<&'static str>);

impl<'de> Visitor<'de> for SecretListVisitor {
    type Value = Vec<Secret>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Secret>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(s) = seq.next_element_seed(SecretSeed(self.0))? {
            out.push(s);
        }
        Ok(out)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Vec<Secret>, E> {
        Err(kind_error(
            self.0,
            "a string",
            "a list of strings (write [\"…\"], or use the `_file` form)",
        ))
    }

    refuse_non_strings!("a list of strings");
}

struct SecretSeed(Option<&'static str>);

impl<'de> de::DeserializeSeed<'de> for SecretSeed {
    type Value = Secret;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Secret, D::Error> {
        d.deserialize_any(SecretVisitor(self.0))
    }
}

/// `#[serde(deserialize_with = "secret::list")]` on a `secrets` field: a list of secrets
/// whose errors name the key and never echo a value (a string where the list belongs
/// included).
pub fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Secret>, D::Error> {
    d.deserialize_any(SecretListVisitor(Some("secrets")))
}

/// `deserialize_with` functions for optional secret fields, one per field name so the
/// error names the key (`bot_token`: expected a string, found an integer …).
pub mod field {
    use super::{Secret, SecretVisitor};
    use serde::Deserializer;

    macro_rules! named {
        ($($name:ident),*) => {$(
            #[doc = concat!("The `", stringify!($name), "` field: an optional secret.")]
            pub fn $name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
                d.deserialize_any(SecretVisitor(Some(stringify!($name)))).map(Some)
            }
        )*};
    }

    named!(bot_token, webhook_url, api_key, signing_secret);
}

/// Why a secret file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// The file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error (never the contents).
        reason: String,
    },
    /// The file holds no secret (only blank lines and comments).
    #[error("{path} holds no secret (only blank lines or # comments)")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// Reads a secrets file: one secret per line; blank lines and lines starting with `#`
/// are ignored; surrounding whitespace (a trailing newline, `\r`) is trimmed.
pub fn read_lines(path: &Path) -> Result<Vec<Secret>, SecretFileError> {
    let text = std::fs::read_to_string(path).map_err(|e| SecretFileError::Read {
        path: path.to_owned(),
        reason: e.kind().to_string(),
    })?;
    let out: Vec<Secret> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(Secret::new)
        .collect();
    if out.is_empty() {
        return Err(SecretFileError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(out)
}

/// Reads a file holding one secret (a token, a webhook URL): its contents, trimmed.
pub fn read_one(path: &Path) -> Result<Secret, SecretFileError> {
    let text = std::fs::read_to_string(path).map_err(|e| SecretFileError::Read {
        path: path.to_owned(),
        reason: e.kind().to_string(),
    })?;
    let t = text.trim();
    if t.is_empty() {
        return Err(SecretFileError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(Secret::new(t))
}

/// Resolves the inline-or-file pair of one secret field: exactly one may be set.
/// `field` is the inline key's name (`bot_token`); the file key is `{field}_file`.
pub fn inline_or_file(
    field: &str,
    inline: Option<&Secret>,
    file: Option<&Path>,
) -> Result<Option<Secret>, String> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(format!("set `{field}` or `{field}_file`, not both")),
        (Some(s), None) => Ok(Some(s.clone())),
        (None, Some(p)) => read_one(p)
            .map(Some)
            .map_err(|e| format!("{field}_file: {e}")),
        (None, None) => Ok(None),
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

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)] // only deserialized
    struct Holder {
        #[serde(default, deserialize_with = "list")]
        secrets: Vec<Secret>,
        token: Option<Secret>,
    }

    #[test]
    fn errors_never_echo_the_value() {
        for (doc, kind) in [
            (r#"{"secrets": "hunter2-very-secret"}"#, "found a string"),
            (r#"{"secrets": ["ok", 987654321]}"#, "found an integer"),
            (r#"{"token": 987654321}"#, "found an integer"),
            (r#"{"token": ["hunter2-very-secret"]}"#, "found a list"),
            (r#"{"token": true}"#, "found a boolean"),
            (r#"{"token": 3.25}"#, "found a float"),
            (
                r#"{"token": {"x": "hunter2-very-secret"}}"#,
                "found a table",
            ),
        ] {
            let e = serde_json::from_str::<Holder>(doc).unwrap_err().to_string();
            assert!(
                !e.contains("hunter2") && !e.contains("987654321") && !e.contains("3.25"),
                "{doc}: {e}"
            );
            assert!(e.contains(kind), "{doc}: {e}");
        }
        let h: Holder = serde_json::from_str(r#"{"secrets": ["a", "b"], "token": "t"}"#).unwrap();
        assert_eq!(h.secrets.len(), 2);
        assert_eq!(h.token.unwrap().expose(), "t");
    }

    #[test]
    fn secret_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, "# rotated 2024-05\n\n  first  \r\nsecond\n").unwrap();
        let got: Vec<String> = read_lines(&p)
            .unwrap()
            .iter()
            .map(|s| s.expose().to_owned())
            .collect();
        assert_eq!(got, ["first", "second"]);
        std::fs::write(&p, "# nothing\n\n").unwrap();
        assert!(matches!(read_lines(&p), Err(SecretFileError::Empty { .. })));
        std::fs::write(&p, " \n\n").unwrap();
        assert!(matches!(read_one(&p), Err(SecretFileError::Empty { .. })));
        std::fs::write(&p, "tok-123456\n").unwrap();
        assert_eq!(read_one(&p).unwrap().expose(), "tok-123456");
        let missing = dir.path().join("missing");
        let e = read_lines(&missing).unwrap_err().to_string();
        assert!(e.contains("missing") && e.contains("not found"), "{e}");
        let inline = Secret::new("x");
        assert!(inline_or_file("bot_token", Some(&inline), Some(&p))
            .unwrap_err()
            .contains("`bot_token` or `bot_token_file`"));
    }
}
