//! Free text that people type (names, phone numbers, channel labels), parsed once at
//! the edge so nothing inside has to wonder whether it is empty, huge or full of
//! control characters.

use super::FieldError;

/// Trims `raw` and accepts it when it is 1..=`max_chars` characters with no control
/// characters (NUL, newlines, escapes): such text ends up in logs, CSV exports and SMS.
pub fn parse_line(field: &str, raw: &str, max_chars: usize) -> Result<String, FieldError> {
    let text = raw.trim();
    if text.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if text.chars().count() > max_chars {
        return Err(FieldError::new(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(text.to_owned())
}

/// A phone number as patients write it: digits with an optional leading `+`, and
/// spaces, dashes or parentheses for readability; 6 to 15 digits (E.164 allows 15).
pub fn parse_phone(field: &str, raw: &str) -> Result<String, FieldError> {
    let text = raw.trim();
    let digits = text.chars().filter(char::is_ascii_digit).count();
    let allowed = text.char_indices().all(|(i, c)| {
        c.is_ascii_digit() || matches!(c, ' ' | '-' | '(' | ')') || (c == '+' && i == 0)
    });
    if !allowed || !(6..=15).contains(&digits) {
        return Err(FieldError::new(
            field,
            "must be a phone number of 6 to 15 digits, optionally starting with +",
        ));
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_hostile_text_is_refused() {
        assert_eq!(parse_line("n", "  Asha  ", 10).unwrap(), "Asha");
        assert!(parse_line("n", "   ", 10).is_err());
        assert!(parse_line("n", "a\u{0}b", 10).is_err());
        assert!(parse_line("n", "a\nb", 10).is_err());
        assert!(parse_line("n", &"x".repeat(11), 10).is_err());
        assert_eq!(
            parse_line("n", "O'Brien; DROP TABLE x", 40).unwrap(),
            "O'Brien; DROP TABLE x"
        );
    }

    #[test]
    fn phone_numbers_accept_common_writing_and_refuse_the_rest() {
        assert!(parse_phone("p", "+91 98470 12345").is_ok());
        assert!(parse_phone("p", "(0484) 123-4567").is_ok());
        assert!(parse_phone("p", "12345").is_err());
        assert!(parse_phone("p", "98+4701234").is_err());
        assert!(parse_phone("p", "call me").is_err());
    }
}
