//! A setting of slotguard.toml (or a flag or environment variable standing for one)
//! that cannot be used, told as a sentence naming the setting, e.g.
//! "detect.rescan_seconds must be above 0". Every layer that reads its own part of the
//! configuration says so with this one type, and the command line turns it into a
//! usage error (exit 2).

use std::fmt;
use std::ops::Deref;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(String);

impl ConfigError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl From<String> for ConfigError {
    fn from(message: String) -> Self {
        Self(message)
    }
}

impl From<&str> for ConfigError {
    fn from(message: &str) -> Self {
        Self(message.to_owned())
    }
}

/// The message, to read or search as text.
impl Deref for ConfigError {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}
