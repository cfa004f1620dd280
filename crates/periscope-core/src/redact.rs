//! Redaction: names that hold secrets are never read, printed or stored.
//!
//! A variable or field is sensitive when its name, lowercased with `_` and `-` removed, contains
//! one of [`BUILTIN`] (so `api_token` and `X-Auth-Token` match), or matches a user pattern.
//! Everything below a sensitive name is redacted with it.

/// Substrings of normalized names that mark a secret.
pub const BUILTIN: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "authorization",
    "cookie",
    "session",
    "privatekey",
    "creditcard",
    "cardnumber",
    "cvv",
    "ssn",
    "iban",
];

#[derive(Debug, Clone, Default)]
pub struct Redactor {
    extra: Vec<regex::Regex>,
}

#[derive(Debug, thiserror::Error)]
#[error("bad --redact pattern `{pattern}`: {reason}")]
pub struct RedactError {
    pub pattern: String,
    pub reason: String,
}

impl Redactor {
    /// The built-in names plus `patterns` (regular expressions matched against the raw name).
    pub fn new(patterns: &[String]) -> Result<Redactor, RedactError> {
        let extra = patterns
            .iter()
            .map(|p| {
                regex::Regex::new(p).map_err(|e| RedactError {
                    pattern: p.clone(),
                    reason: e.to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Redactor { extra })
    }

    pub fn is_sensitive(&self, name: &str) -> bool {
        let normalized: String = name
            .chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect();
        BUILTIN.iter().any(|b| normalized.contains(b))
            || self.extra.iter().any(|r| r.is_match(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalized_before_matching() {
        let r = Redactor::new(&["^pin$".into()]).unwrap();
        for n in [
            "api_token",
            "X-Auth-Token",
            "password",
            "user_passwd",
            "SessionId",
            "CVV",
            "pin",
        ] {
            assert!(r.is_sensitive(n), "{n}");
        }
        assert!(!r.is_sensitive("amount"));
        assert!(!r.is_sensitive("spin"));
        assert!(Redactor::new(&["(".into()]).is_err());
    }
}
