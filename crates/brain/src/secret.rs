//! [`ApiKey`]: a model API key that never shows itself.
//!
//! Its `Debug` and `Display` print `<redacted>`; the only way to the text is
//! [`ApiKey::expose`], which the HTTP layer calls when it sets the request header.
//! [`ApiKey::scrub`] removes the key from any text that is about to become an error
//! message (a server may echo a key back in its error body).

use std::fmt;
use std::path::Path;

/// What `Debug`/`Display` print instead of a key.
pub const REDACTED: &str = "<redacted>";

/// A model API key. See the [module docs](self).
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// A key from its text; surrounding whitespace (a trailing newline) is dropped.
    /// An empty key is refused.
    pub fn new(text: impl Into<String>) -> Result<ApiKey, String> {
        let text = text.into();
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err("the API key is empty".into());
        }
        Ok(ApiKey(trimmed.to_string()))
    }

    /// The key held in the environment variable `name`. Errors name the variable, never
    /// its value.
    pub fn from_env(name: &str) -> Result<ApiKey, String> {
        match std::env::var(name) {
            Ok(value) => {
                ApiKey::new(value).map_err(|_| format!("environment variable {name} is empty"))
            }
            Err(std::env::VarError::NotPresent) => {
                Err(format!("environment variable {name} is not set"))
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(format!("environment variable {name} is not valid UTF-8"))
            }
        }
    }

    /// The key stored in the file at `path` (its whole content, trimmed). Errors name the
    /// file, never its content.
    pub fn from_file(path: &Path) -> Result<ApiKey, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read API key file {}: {e}", path.display()))?;
        ApiKey::new(text).map_err(|_| format!("API key file {} is empty", path.display()))
    }

    /// The key itself, for the request header. Nothing else should call this.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the key replaced by `<redacted>`.
    pub fn scrub(&self, text: &str) -> String {
        text.replace(&self.0, REDACTED)
    }
}

/// `text` with `key` (if any) scrubbed out.
pub fn scrub(key: Option<&ApiKey>, text: &str) -> String {
    match key {
        Some(key) => key.scrub(text),
        None => text.to_string(),
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({REDACTED})")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-test-0123456789abcdef";

    #[test]
    fn debug_and_display_never_show_the_key() {
        let key = ApiKey::new(format!("  {KEY}\n")).unwrap();
        assert_eq!(key.expose(), KEY, "whitespace is trimmed");
        for shown in [
            format!("{key:?}"),
            format!("{key}"),
            format!("{key:#?}"),
            format!("{:?}", Some(&key)),
        ] {
            assert!(!shown.contains(KEY), "{shown}");
            assert!(shown.contains(REDACTED), "{shown}");
        }
    }

    #[test]
    fn scrub_removes_echoed_keys() {
        let key = ApiKey::new(KEY).unwrap();
        let body = format!("{{\"error\": \"Incorrect API key provided: {KEY}. Check {KEY}\"}}");
        let clean = key.scrub(&body);
        assert!(!clean.contains(KEY));
        assert_eq!(clean.matches(REDACTED).count(), 2);
        assert_eq!(scrub(None, "x"), "x");
    }

    #[test]
    fn empty_keys_and_missing_sources_are_named_without_values() {
        assert!(ApiKey::new(" \n").is_err());
        let err = ApiKey::from_env("AGENTMESH_TEST_SURELY_UNSET_VAR").unwrap_err();
        assert!(err.contains("AGENTMESH_TEST_SURELY_UNSET_VAR"), "{err}");
        let dir = std::env::temp_dir().join(format!("agentmesh-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("key");
        std::fs::write(&file, format!("{KEY}\n")).unwrap();
        assert_eq!(ApiKey::from_file(&file).unwrap().expose(), KEY);
        std::fs::write(&file, "\n").unwrap();
        let err = ApiKey::from_file(&file).unwrap_err();
        assert!(err.contains("is empty") && !err.contains(KEY), "{err}");
        let err = ApiKey::from_file(&dir.join("missing")).unwrap_err();
        assert!(err.contains("missing"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
