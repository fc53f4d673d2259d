//! Staff passwords: argon2id hashes (the `argon2` crate's defaults, OWASP's minimum),
//! one-time passwords, and the length rule.

use std::sync::OnceLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::domain::FieldError;

/// Shortest password a person may choose.
pub const MIN_CHARS: usize = 10;
/// Longest: hashing is deliberately slow, so unbounded input would be a lever.
pub const MAX_CHARS: usize = 256;

/// Characters of generated passwords: no 0/O, 1/l/I to misread from a screen.
const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// Checks the length of a chosen password.
pub fn acceptable(field: &str, password: &str) -> Result<(), FieldError> {
    let n = password.chars().count();
    if n < MIN_CHARS {
        Err(FieldError::new(
            field,
            format!("must be at least {MIN_CHARS} characters"),
        ))
    } else if n > MAX_CHARS {
        Err(FieldError::new(
            field,
            format!("must be at most {MAX_CHARS} characters"),
        ))
    } else {
        Ok(())
    }
}

/// An argon2id hash (PHC string) with a fresh random salt.
pub fn hash(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters hashes any password")
        .to_string()
}

/// Whether `password` matches `stored`. With `stored` = `None` (no such user, or a
/// disabled one) the same work is done against a throwaway hash, so the answer takes
/// as long as for a wrong password.
pub fn verify(stored: Option<&str>, password: &str) -> bool {
    static DECOY: OnceLock<String> = OnceLock::new();
    let decoy = DECOY.get_or_init(|| hash(&one_time()));
    let matches = |phc: &str| {
        PasswordHash::new(phc).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    };
    match stored {
        Some(phc) => matches(phc),
        None => {
            let _ = matches(decoy);
            false
        }
    }
}

/// A password to hand out once: 20 characters, about 116 bits.
pub fn one_time() -> String {
    let mut bytes = [0u8; 20];
    argon2::password_hash::rand_core::RngCore::fill_bytes(&mut OsRng, &mut bytes);
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let phc = hash("correct horse battery");
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify(Some(&phc), "correct horse battery"));
        assert!(!verify(Some(&phc), "correct horse battery "));
        assert!(!verify(None, "correct horse battery"));
        assert!(!verify(Some("not a hash"), "x"));
    }

    #[test]
    fn one_time_passwords_are_long_distinct_and_acceptable() {
        let (a, b) = (one_time(), one_time());
        assert_ne!(a, b);
        assert_eq!(a.len(), 20);
        assert!(acceptable("password", &a).is_ok());
        assert!(acceptable("password", "short").is_err());
    }
}
